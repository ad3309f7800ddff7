import { afterEach, describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { getBackend } from '../src/backend/backend.js';
import type { WebGpuBackend } from '../src/backend/webgpu/backend.js';
import { DEFAULT_PIPELINE_CACHE_SIZE } from '../src/backend/webgpu/pipelines.js';
import { DEFAULT_MAX_IDLE_BYTES } from '../src/backend/webgpu/pool.js';
import { TOLERANCES, assertClose } from '../src/testing/index.js';

// Bounded resources on WebGPU: per-call values (scalars, slopes, view offsets) are kernel parameters,
// so one pipeline serves them all, eager and jitted; the pipeline cache is an LRU; the buffer pool's
// idle bytes are capped and emptyCache() frees them.

const device = 'webgpu';
const gpu = () => getBackend('webgpu') as WebGpuBackend;
const pipelines = () => sn.memory().devices.webgpu!.pipelines!;
const pool = () => sn.memory().devices.webgpu!.pool!;

/** Misses (pipelines compiled) while `fn` runs. */
async function compiledBy(fn: () => Promise<void>): Promise<number> {
  const before = pipelines().misses;
  await fn();
  return pipelines().misses - before;
}

afterEach(() => sn.setCacheLimits({ pipelines: DEFAULT_PIPELINE_CACHE_SIZE, idleBytes: DEFAULT_MAX_IDLE_BYTES }));

describe("a jitted function's first call", () => {
  it('submits the kernels recorded so far before compiling each new pipeline, so the device runs them meanwhile', async () => {
    // Reductions over a row length no other test uses: their pipelines are new (the length is in their source).
    const f = sn.jit((x: Tensor) => x.sum(-1).exp().mul(x.amax(-1)).add(x.mean(-1).neg()));
    const c = sn.randn([5, 1013], { seed: 3, device: 'cpu' });
    const x = c.to(device);
    const before = gpu().batch.submits;
    const compiled = await compiledBy(async () => {
      const y = f(x);
      const want = sn.tidy(() => c.sum(-1).exp().mul(c.amax(-1)).add(c.mean(-1).neg()));
      assertClose(Array.from(await y.data()), Array.from(await want.data()), TOLERANCES.webgpu.float32);
      y.dispose();
      want.dispose();
    });
    expect(compiled).toBeGreaterThanOrEqual(2);
    // One submit before each new pipeline but the first (nothing was recorded before it), and the last.
    expect(gpu().batch.submits - before).toBeGreaterThanOrEqual(compiled);
    // A warm call is one submit.
    const warm = gpu().batch.submits;
    f(x).dispose();
    await sn.synchronize(device);
    expect(gpu().batch.submits - warm).toBe(1);
    x.dispose();
    c.dispose();
  });
});

describe('per-call values are kernel parameters', () => {
  it('x.mul(s).add(t) for 20 different scalars compiles one pipeline per op, with every result right', async () => {
    const xs = [1.5, -2, 0, 3.25, 7, -0.5, 11];
    const x = sn.tensor(xs, { device });
    const run = async (s: number) => {
      const y = sn.tidy(() => sn.clamp(sn.leakyRelu(x.mul(s).add(s / 3), s / 10), -s, s));
      const want = xs.map((v) => {
        const a = Math.fround(Math.fround(v * s) + Math.fround(s / 3));
        const l = a > 0 ? a : Math.fround(a * Math.fround(s / 10));
        return Math.min(Math.max(l, -s), s);
      });
      expect(Array.from(await y.data())).toEqual(want.map(Math.fround));
      y.dispose();
    };
    await run(0.75); // warm-up: compiles what the chain needs
    expect(await compiledBy(async () => { for (let i = 1; i <= 20; i++) await run(i * 1.37); })).toBe(0);
  });

  it('special scalar values (NaN, ±∞, -0, int32 extremes) reach the kernel exactly as the CPU sees them', async () => {
    for (const [dtype, values, scalars] of [
      ['float32', [1, -1, 0, 2.5], [NaN, Infinity, -Infinity, -0, 3.4e38, 1.5e-38]],
      ['int32', [1, -1, 0, 2147483647], [2147483647, -2147483648, 7, -1, 0]],
    ] as const) {
      for (const s of scalars) {
        const [cpu, webgpu] = await Promise.all(['cpu', 'webgpu'].map((d) => sn.tensor([...values], { dtype, device: d as sn.DeviceName }).add(s).mul(s).data()));
        expect(Array.from(webgpu!), `${dtype} ${s}`).toEqual(Array.from(cpu!));
      }
    }
  });

  it('views at different offsets share one pipeline (offsets are parameters too), elementwise and in reductions', async () => {
    const base = sn.arange(0, 64, 1, { device, dtype: 'float32' }).reshape([8, 8]);
    const row = (i: number) => sn.tidy(() => base.narrow(0, i, 2).mul(2));
    const rowSums = (i: number) => sn.tidy(() => sn.sum(base.narrow(0, i, 2), 1));
    const softmaxRows = (i: number) => sn.tidy(() => sn.softmax(base.narrow(1, i, 3), 1));
    (await row(0).data(), await rowSums(0).data(), await softmaxRows(0).data());
    const compiled = await compiledBy(async () => {
      for (let i = 1; i < 6; i++) {
        expect(Array.from(await row(i).data())).toEqual(Array.from({ length: 16 }, (_, k) => 2 * (8 * i + k)));
        expect(Array.from(await rowSums(i).data())).toEqual([0, 1].map((r) => 8 * 8 * (i + r) + 28));
        const got = await softmaxRows(i).data();
        const want = [0, 1, 2, 3, 4, 5, 6, 7].flatMap(() => {
          const e = [0, 1, 2].map((k) => Math.exp(k - 2));
          return e.map((v) => v / (e[0]! + e[1]! + e[2]!));
        });
        want.forEach((v, k) => expect(got[k]).toBeCloseTo(v, 5));
      }
    });
    expect(compiled).toBe(0);
  });

  it('pad with any fill value, and gathers from views at any offset, share one pipeline', async () => {
    const x = sn.arange(0, 12, 1, { device, dtype: 'float32' }).reshape([3, 4]);
    const padded = (v: number, i: number) => sn.tidy(() => sn.pad(x.narrow(0, i, 2), [1, 1], { value: v }));
    (await padded(0, 0).data());
    const compiled = await compiledBy(async () => {
      for (const [v, i] of [[-1.5, 1], [7, 0], [NaN, 1], [2e9, 0]] as const) {
        const rows = [0, 1].map((r) => [v, ...[0, 1, 2, 3].map((k) => 4 * (i + r) + k), v]).flat();
        expect(Array.from(await padded(v, i).data())).toEqual(rows.map(Math.fround));
      }
    });
    expect(compiled).toBe(0);
  });

  it('matmul, linear and conv2d of views at different offsets share one pipeline', async () => {
    const a = sn.randn([6, 8, 5], { seed: 2, device }), b = sn.randn([4, 5, 3], { seed: 3, device });
    const bias = sn.randn([3, 3], { seed: 4, device });
    const x = sn.randn([3, 2, 6, 6], { seed: 5, device }), w = sn.randn([3, 4, 2, 3, 3], { seed: 6, device });
    const run = (i: number) => sn.tidy(() => [
      sn.matmul(a.narrow(0, i, 1).squeeze(0), b.narrow(0, i % 4, 1).squeeze(0)),
      sn.linear(a.narrow(0, i, 1).squeeze(0), b.narrow(0, i % 4, 1).squeeze(0).t(), bias.narrow(0, i % 3, 1).squeeze(0)),
      sn.conv2d(x.narrow(0, i % 3, 1), w.narrow(0, i % 3, 1).squeeze(0), { padding: 1 }),
    ]);
    const reference = async (i: number) => Promise.all(sn.tidy(() => [
      sn.matmul(a.narrow(0, i, 1).squeeze(0).contiguous(), b.narrow(0, i % 4, 1).squeeze(0).contiguous()),
      sn.linear(a.narrow(0, i, 1).squeeze(0).contiguous(), b.narrow(0, i % 4, 1).squeeze(0).t().contiguous(), bias.narrow(0, i % 3, 1).squeeze(0).contiguous()),
      sn.conv2d(x.narrow(0, i % 3, 1).contiguous(), w.narrow(0, i % 3, 1).squeeze(0).contiguous(), { padding: 1 }),
    ]).map((t) => t.data()));
    await Promise.all(run(0).map((t) => t.data()));
    await reference(0);
    const compiled = await compiledBy(async () => {
      for (let i = 1; i < 6; i++) {
        const got = await Promise.all(run(i).map((t) => t.data()));
        const want = await reference(i);
        got.forEach((g, k) => assertClose(g, want[k]!, TOLERANCES.webgpu.float32));
      }
    });
    expect(compiled).toBe(0);
  });

  it('jitted functions that differ only in their constants share their fused kernels', async () => {
    const x = sn.randn([5, 9], { seed: 1, device });
    const make = (a: number, b: number) => sn.jit((t: Tensor) => t.mul(a).add(b).relu().sub(a * b));
    const eager = (a: number, b: number) => sn.tidy(() => x.mul(a).add(b).relu().sub(a * b));
    const first = make(2, 3);
    (await first(x).data());
    (await eager(2, 3).data()); // the eager kernels of the reference, compiled once
    const compiled = await compiledBy(async () => {
      for (let k = 0; k < 5; k++) {
        const f = make(k + 0.5, -k);
        const want = await eager(k + 0.5, -k).data();
        // Close, not equal: a GPU may contract the fused multiply-add into one rounding.
        assertClose(await f(x).data(), want, TOLERANCES.webgpu.float32);
        f.dispose();
      }
    });
    expect(compiled).toBe(0);
    first.dispose();
  });
});

describe('the pipeline cache is a bounded LRU', () => {
  it('keeps at most `pipelines` entries, counts hits, misses and evictions, and evicted kernels still run', async () => {
    sn.setCacheLimits({ pipelines: 3 });
    const x = sn.tensor([1, 4, 9], { device });
    const ops = [sn.sqrt, sn.exp, sn.neg, sn.abs, sn.relu, sn.tanh].map((op) => (t: Tensor) => op(t));
    const before = pipelines();
    for (let round = 0; round < 2; round++) for (const op of ops) sn.tidy(() => op(x)).dispose();
    const after = pipelines();
    expect(after.entries).toBeLessThanOrEqual(3);
    expect(after.capacity).toBe(3);
    expect(after.evictions - before.evictions).toBeGreaterThanOrEqual(ops.length);
    expect(after.misses - before.misses).toBeGreaterThanOrEqual(2 * ops.length - 3);
    // A hit refreshes: the most recent kernel stays.
    const hits = pipelines().hits;
    sn.tidy(() => ops[5]!(x)).dispose();
    expect(pipelines().hits).toBe(hits + 1);
    expect(Array.from(await sn.tidy(() => ops[0]!(x)).data())).toEqual([1, 2, 3]);
    expect(() => sn.setCacheLimits({ pipelines: -1 })).toThrow(/setCacheLimits: pipelines must be a non-negative integer/);
  });
});

describe('the buffer pool is bounded', () => {
  it('emptyCache() frees every idle buffer and only those', async () => {
    const live = sn.ones([1000], { device });
    for (let i = 0; i < 5; i++) sn.ones([4096 * (i + 1)], { device }).dispose();
    expect(pool().idleBytes).toBeGreaterThan(0);
    const { reservedBytes, idleBytes, destroyed } = pool();
    sn.emptyCache();
    expect(pool().idleBytes).toBe(0);
    expect(pool().reservedBytes).toBe(reservedBytes - idleBytes);
    expect(pool().destroyed).toBeGreaterThan(destroyed);
    expect(sn.memory().devices.webgpu!.reservedBytes).toBe(reservedBytes - idleBytes);
    expect(await live.sum().item()).toBe(1000);
  });

  it('keeps at most `idleBytes` idle, destroying the longest idle first; queued work that used them still runs', async () => {
    sn.setCacheLimits({ idleBytes: 64 * 1024 });
    expect(pool().maxIdleBytes).toBe(64 * 1024);
    const results: Tensor[] = [];
    for (let i = 0; i < 20; i++) {
      const big = sn.full([50_000], i, { device });
      results.push(big.add(1).sum()); // queued, not yet submitted, when big's buffer is released
      big.dispose();
      expect(pool().idleBytes).toBeLessThanOrEqual(64 * 1024);
    }
    expect(await Promise.all(results.map((r) => r.item()))).toEqual(Array.from({ length: 20 }, (_, i) => 50_000 * (i + 1)));
    expect(pool().destroyed).toBeGreaterThan(0);
    for (const r of results) r.dispose();
  });
});
