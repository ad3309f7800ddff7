import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { type CpuStorage, cpuKernels, setCpuKernels, setCpuThreads } from '../src/backend/cpu.js';
import { HeapFullError, WasmHeap, heap, sizeClass } from '../src/kernels/wasm/heap.js';
import { kernelOverrides } from '../src/kernels/cpu/overrides.js';
import { wasmMap } from '../src/kernels/wasm/map.js';
import { wasmLayerNorm, wasmSoftmax } from '../src/kernels/wasm/rows.js';
import { poolStats, threadInfo } from '../src/kernels/wasm/threads.js';
import type { Expr } from '../src/ops/expr.js';
import type { CpuView } from '../src/ops/op.js';
import type { HeapStats } from '../src/kernels/wasm/heap.js';
import { propertyConfig } from '../src/testing/index.js';

// The WebAssembly heap that holds CPU storages (src/kernels/wasm/heap.ts): its allocator (size
// classes, reuse, coalescing, growth), its accounting in memory()/emptyCache/setCacheLimits, and the
// kernels reading storages in place (no copies) while still taking operands that live in JS arrays.

const initial = cpuKernels();
afterEach(() => {
  setCpuKernels(initial);
  sn.setCacheLimits({ idleBytes: 256 << 20 });
});

const MIB = 1 << 20;
const pool = (): HeapStats => sn.memory().devices.cpu!.pool as HeapStats;
const storageOf = (t: sn.Tensor): CpuStorage => t.storage as CpuStorage;
const bytes = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

describe('the heap allocator', () => {
  it('rounds requests up to size classes: powers of two to 4 KiB, then eighths of a doubling', () => {
    expect([1, 64, 65, 4096, 4097, 6000, 1 << 20, (1 << 20) + 1].map(sizeClass)).toEqual([64, 64, 128, 4096, 5120, 6144, 1 << 20, (1 << 20) + (1 << 18)]);
  });

  it('reuses a freed block for the next request of its class, and carves new blocks apart', () => {
    const h = new WasmHeap({ shared: false });
    const a = h.allocate(1000), b = h.allocate(1000);
    expect(a % 64).toBe(0);
    expect(b - a).toBeGreaterThanOrEqual(1024);
    h.deallocate(a);
    expect(h.stats()).toMatchObject({ idleBytes: 1024, inUseBytes: 1024, created: 2, reused: 0 });
    expect(h.allocate(1020)).toBe(a);
    expect(h.stats()).toMatchObject({ idleBytes: 0, inUseBytes: 2048, reused: 1 });
    expect(() => h.deallocate(a + 64)).toThrow(/not an allocated block/);
  });

  it('gives idle blocks back to the free space past the idle bound, coalesced so a bigger block fits without growth', () => {
    const h = new WasmHeap({ shared: false });
    h.maxIdleBytes = 4096;
    const blocks = Array.from({ length: 8 }, () => h.allocate(4096));
    const keep = h.allocate(64); // above them all: the freed range cannot just lower the top
    const size = h.stats().memoryBytes;
    for (const b of blocks) h.deallocate(b);
    expect(h.stats()).toMatchObject({ idleBytes: 4096, destroyed: 7, freeBytes: 7 * 4096 });
    h.emptyCache();
    expect(h.stats()).toMatchObject({ idleBytes: 0, destroyed: 8, freeBytes: 8 * 4096, inUseBytes: 64 });
    // 8 × 4 KiB coalesced: a 32 KiB block fits where they were.
    expect(h.allocate(8 * 4096)).toBe(blocks[0]);
    expect(h.stats().memoryBytes).toBe(size);
    h.deallocate(keep);
  });

  it('grows the memory for big blocks; a private memory detaches old views, so views are re-made after each allocation', () => {
    const h = new WasmHeap({ shared: false });
    const a = h.allocate(1024);
    h.f32.set([1, 2, 3], a >> 2);
    const stale = h.f32, generation = h.generation;
    const big = h.allocate(8 * MIB);
    expect(h.generation).toBeGreaterThan(generation);
    expect(stale.length).toBe(0); // detached by memory.grow
    expect(Array.from(h.f32.subarray(a >> 2, (a >> 2) + 3))).toEqual([1, 2, 3]);
    expect(h.stats().memoryBytes).toBeGreaterThanOrEqual(big + 8 * MIB);
  });

  it('keeps kernel scratch in chunks: mark/release nest, and reset merges chunks into one that holds them all', () => {
    const h = new WasmHeap({ shared: false });
    h.reset();
    const a = h.alloc(100), m = h.mark(), b = h.alloc(100);
    expect(b - a).toBe(128);
    h.release(m);
    expect(h.alloc(10)).toBe(b);
    const big = h.alloc(MIB); // a second chunk
    expect(h.stats().scratchBytes).toBeGreaterThan(MIB);
    h.reset();
    const merged = h.stats().scratchBytes;
    expect(merged).toBeGreaterThanOrEqual(MIB + 256 * 1024);
    const again = h.alloc(MIB);
    h.alloc(200 * 1024);
    expect(h.stats().scratchBytes).toBe(merged); // no new chunk: the merged one holds both
    expect(again).not.toBe(big);
    h.emptyCache();
    expect(h.stats()).toMatchObject({ scratchBytes: 0, inUseBytes: 0 });
  });

  it('serves thousands of random allocations and frees without growing past its peak (no leak)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 1, max: 300_000 }), fc.boolean()), { minLength: 100, maxLength: 200 }), (ops) => {
        const h = new WasmHeap({ shared: false });
        h.maxIdleBytes = 1 * MIB;
        const run = (): void => {
          const live: number[] = [];
          for (const [bytes, free] of ops) {
            if (free && live.length) h.deallocate(live.splice(bytes % live.length, 1)[0]!);
            else live.push(h.allocate(bytes));
          }
          for (const b of live) h.deallocate(b);
        };
        run();
        const size = h.stats().memoryBytes;
        for (let i = 0; i < 3; i++) run();
        h.emptyCache();
        const s = h.stats();
        expect(s).toMatchObject({ inUseBytes: 0, idleBytes: 0, freeBytes: 0 });
        // Every byte came back (the top is down to where it started), and repeating the sequence did not
        // keep growing the memory (first fit may fragment a little: bounded by twice the first peak).
        expect(s.memoryBytes).toBeLessThanOrEqual(2 * size);
      }),
      propertyConfig({ numRuns: 10 }),
    );
  });
});

describe('CPU storages in the heap', () => {
  it('live in the WebAssembly memory; reads and uploads copy exactly once, into and out of it', async () => {
    const user = new Float32Array([1, 2, 3, 4, 5]);
    const t = sn.tensor(user);
    const data = storageOf(t).data;
    expect(heap().addressOf(data)).toBe(storageOf(t).address);
    user[0] = 99; // the tensor holds its own copy
    const back = await t.data();
    expect(Array.from(back)).toEqual([1, 2, 3, 4, 5]);
    // The readback is the caller's own, unshared memory (fit for a GPU queue's writeBuffer).
    expect(back.buffer).not.toBe(data.buffer);
    expect(back.buffer instanceof SharedArrayBuffer).toBe(false);
    back[1] = -1;
    expect(Array.from(await t.data())).toEqual([1, 2, 3, 4, 5]);
    // A read taken before dispose is not affected by the block's reuse.
    const pending = t.data();
    t.dispose();
    const reuse = sn.full([5], 7);
    expect(Array.from(await pending)).toEqual([1, 2, 3, 4, 5]);
    reuse.dispose();
  });

  it('stay correct across memory growth: views are re-made, values kept', async () => {
    const a = sn.arange(0, 1000), before = heap().generation;
    // More than the memory holds now: it grows.
    const big = sn.zeros([(heap().stats().memoryBytes / 4) * 1.5]);
    expect(heap().generation).toBeGreaterThan(before);
    expect(Array.from((await a.data()).subarray(995))).toEqual([995, 996, 997, 998, 999]);
    const y = sn.add(a, 1);
    expect((await y.data())[999]).toBe(1000);
    [a, big, y].forEach((t) => t.dispose());
  });

  it('account in memory(): bytes in use and idle, a bounded idle pool, and emptyCache', () => {
    sn.emptyCache();
    const start = pool();
    const ts = Array.from({ length: 10 }, () => sn.zeros([MIB / 4]));
    expect(pool().inUseBytes - start.inUseBytes).toBe(10 * MIB);
    expect(sn.memory().devices.cpu!.reservedBytes).toBe(pool().reservedBytes);
    ts.forEach((t) => t.dispose());
    expect(pool()).toMatchObject({ idleBytes: 10 * MIB, inUseBytes: start.inUseBytes });
    // The same sizes again come from the idle pool.
    const again = Array.from({ length: 10 }, () => sn.zeros([MIB / 4]));
    expect(pool().reused - start.reused).toBe(10);
    again.forEach((t) => t.dispose());
    sn.setCacheLimits({ idleBytes: 3 * MIB });
    expect(pool().idleBytes).toBeLessThanOrEqual(3 * MIB);
    expect(pool().maxIdleBytes).toBe(3 * MIB);
    sn.emptyCache();
    expect(pool()).toMatchObject({ idleBytes: 0, scratchBytes: 0 });
    expect(pool().reservedBytes).toBe(pool().inUseBytes);
  });

  it('do not leak over many eager ops and jit calls', async () => {
    const f = sn.jit((x: sn.Tensor) => sn.softmax(sn.sigmoid(x.mul(1.5).add(0.5)), -1));
    const x = sn.randn([64, 100], { seed: 3 });
    const step = () => sn.tidy(() => { f(x); sn.layerNorm(x.relu(), [100]); sn.matmul(x, x.t()); });
    for (let i = 0; i < 20; i++) step();
    sn.emptyCache();
    const settled = { ...pool(), storages: sn.memory().devices.cpu!.storages };
    for (let i = 0; i < 200; i++) step();
    sn.emptyCache();
    expect(sn.memory().devices.cpu!.storages).toBe(settled.storages);
    expect(pool().inUseBytes).toBe(settled.inUseBytes);
    expect(pool().memoryBytes).toBe(settled.memoryBytes);
    x.dispose();
  });

  it('run a kernel on the JavaScript path when the full memory (4 GiB) has no room for its scratch', async () => {
    const x = sn.randn([3, 5], { seed: 5 });
    const map = kernelOverrides.map!, gemm = kernelOverrides.gemm!;
    let thrown = 0;
    const full = () => {
      thrown++;
      throw new HeapFullError('wasm heap: full (simulated)');
    };
    kernelOverrides.map = full;
    kernelOverrides.gemm = full;
    try {
      const y = x.mul(2).add(1), z = sn.matmul(x, x.t());
      expect(thrown).toBe(3);
      const [xs, ys, zs] = [await x.data(), await y.data(), await z.data()];
      expect([...ys]).toEqual([...xs].map((v) => Math.fround(Math.fround(v * 2) + 1)));
      for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) {
        let s = 0;
        for (let k = 0; k < 5; k++) s += xs[i * 5 + k]! * xs[j * 5 + k]!;
        expect(zs[i * 3 + j]).toBeCloseTo(s, 4);
      }
      expect(kernelOverrides.map).toBe(full);
      y.dispose();
      z.dispose();
    } finally {
      kernelOverrides.map = map;
      kernelOverrides.gemm = gemm;
      x.dispose();
    }
  });

  it('come back from tensors dropped without dispose: the heap, unseen by the collector, asks it to run (Node)', async () => {
    const x = sn.randn([1024, 1024], { seed: 4 });
    const before = pool().memoryBytes;
    // 400 dropped 4 MiB results (1.6 GiB): without a collection prompted by the heap, its memory grows to hold them all.
    for (let i = 0; i < 400; i++) {
      x.add(i);
      await new Promise((r) => setImmediate(r));
    }
    expect(pool().memoryBytes - before).toBeLessThan(512 << 20);
    x.dispose();
  });
});

describe('the wasm kernels on heap storages', () => {
  const view = (data: Float32Array, shape: number[], offset = 0): CpuView => {
    const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
    return { data, shape, strides, offset, dtype: 'float32' };
  };
  const input = (index: number): Expr => ({ kind: 'input', index, dtype: 'float32' });
  const call = (fn: string, params: number[], ...args: Expr[]): Expr => ({ kind: 'call', fn, args, params, dtype: 'float32' } as Expr);

  it('read operands that live in JS arrays (copied in) and write outputs there (copied out)', () => {
    setCpuKernels('wasm');
    const n = 37, a = Float32Array.from({ length: n + 3 }, (_, i) => i - 20), b = Float32Array.from({ length: n }, (_, i) => 0.5 * i);
    const out = new Float32Array(n + 2).fill(NaN);
    expect(wasmMap(call('mul', [], call('add', [1], input(0), input(1)), input(1)), [view(a, [n], 3), view(b, [n])], view(out, [n], 1))).toBe(true);
    expect(out[0]).toBeNaN();
    expect(out[n + 1]).toBeNaN();
    for (let i = 0; i < n; i++) expect(out[1 + i]).toBe(Math.fround(Math.fround(a[3 + i]! + b[i]!) * b[i]!));
    const rows = Float32Array.from({ length: 3 * 7 }, (_, i) => Math.sin(i)), sm = new Float32Array(21), ln = new Float32Array(21);
    expect(wasmSoftmax([view(rows, [3, 7])], undefined, [1], false, view(sm, [3, 7]))).toBe(true);
    expect(wasmLayerNorm(view(rows, [3, 7]), undefined, undefined, { blockSize: 7, groups: 1, groupChannels: 7, inner: 1 }, 1e-5, view(ln, [3, 7]))).toBe(true);
    for (let r = 0; r < 3; r++) {
      const row = Array.from(rows.subarray(r * 7, r * 7 + 7)), mx = Math.max(...row), e = row.map((v) => Math.exp(v - mx)), s = e.reduce((p, q) => p + q);
      const mean = row.reduce((p, q) => p + q) / 7, variance = row.reduce((p, q) => p + (q - mean) ** 2, 0) / 7;
      for (let j = 0; j < 7; j++) {
        expect(sm[r * 7 + j]).toBeCloseTo(e[j]! / s, 6);
        expect(ln[r * 7 + j]).toBeCloseTo((row[j]! - mean) / Math.sqrt(variance + 1e-5), 5);
      }
    }
  });

  it('never write past a row: the blocks around an odd-sized output keep their values', async () => {
    setCpuKernels('wasm');
    for (const n of [1, 3, 5, 6, 7, 13]) {
      const guardA = sn.full([16], 5), x = sn.randn([3, n], { seed: n }), guardB = sn.full([16], 6);
      const outs = [sn.sigmoid(x), sn.softmax(x, -1), sn.layerNorm(x, [n])];
      for (const g of [guardA, guardB]) expect(new Set(await g.data()).size).toBe(1);
      expect((await outs[1]!.data()).every(Number.isFinite)).toBe(true);
      [guardA, x, guardB, ...outs].forEach((t) => t.dispose());
    }
  });

  it('split big elementwise and row work over the worker threads, with the same results as one thread', async () => {
    setCpuKernels('wasm');
    const x = sn.randn([256, 1031], { seed: 5 });
    const f = (t: sn.Tensor) => [sn.sigmoid(t.mul(1.5).add(0.5)).mul(t), sn.softmax(t, -1), sn.layerNorm(t, [1031])];
    setCpuThreads(1);
    const alone = await Promise.all(f(x).map((t) => t.data()));
    setCpuThreads(2);
    for (let i = 0; i < 200 && poolStats().ready < 1; i++) {
      f(x).forEach((t) => t.dispose());
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(threadInfo()).toMatchObject({ threads: 2, workers: 'worker_threads' });
    // Bit-identical whichever thread ran which rows (compared as bytes: a deep equality over 264k elements is slow).
    const same = async (ys: sn.Tensor[]) => {
      for (let i = 0; i < ys.length; i++) expect(Buffer.compare(bytes(await ys[i]!.data()), bytes(alone[i]!))).toBe(0);
      ys.forEach((t) => t.dispose());
    };
    // Workers claim tasks as they wake: on a busy machine the calling thread may take them all, so a few tries.
    const before = poolStats().tasksOnWorkers;
    for (let i = 0; i < 50 && poolStats().tasksOnWorkers - before < 3; i++) await same(f(x));
    expect(poolStats().tasksOnWorkers - before).toBeGreaterThanOrEqual(3);
    // A long single row is split by columns.
    const long = sn.randn([1 << 17], { seed: 6 });
    const before2 = poolStats().tasksOnWorkers, ld = await long.data();
    for (let i = 0; i < 50 && poolStats().tasksOnWorkers === before2; i++) {
      const z = long.mul(2).add(1), zd = await z.data();
      for (const j of [0, 1, 65535, 65536, (1 << 17) - 1]) expect(zd[j]).toBe(Math.fround(Math.fround(ld[j]! * 2) + 1));
      z.dispose();
    }
    expect(poolStats().tasksOnWorkers).toBeGreaterThan(before2);
    [x, long].forEach((t) => t.dispose());
  });
});
