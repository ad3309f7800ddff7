import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { getBackend } from '../src/backend/backend.js';
import type { WebGpuBackend } from '../src/backend/webgpu/backend.js';
import { apply1, defineOp } from '../src/ops/op.js';
import { assertClose } from '../src/testing/index.js';

// Compiled plans as the backends run them: one submit per call on WebGPU, bind groups made once for
// fixed buffers, pipelines compiled ahead by `compile()`, per-kernel times from `profile()`.
// Each test uses shapes of its own, so its kernels are new to the pipeline cache.
const device = 'webgpu';
const gpu = () => getBackend('webgpu') as WebGpuBackend;
const tol = { rtol: 1e-5, atol: 1e-6 };

type Counted = 'createBindGroup' | 'createComputePipeline' | 'createComputePipelineAsync';

/** Counts calls of a GPUDevice method while `fn` runs (an own property shadows the prototype's method). */
async function counting<T>(names: readonly Counted[], fn: (count: Record<Counted, number>) => Promise<T>): Promise<T> {
  const d = gpu().device as unknown as Record<Counted, (...args: unknown[]) => unknown>;
  const count = { createBindGroup: 0, createComputePipeline: 0, createComputePipelineAsync: 0 };
  for (const name of names) {
    const original = d[name];
    d[name] = function (this: unknown, ...args: unknown[]) {
      count[name]++;
      return original.apply(this, args);
    };
  }
  try {
    return await fn(count);
  } finally {
    for (const name of names) Reflect.deleteProperty(d, name);
  }
}

/** `n` elementwise ops, each a kernel of its own under fusion 'none', between an input read and an output write. */
const chain = (n: number) => (x: Tensor, w: Tensor) => {
  let h = sn.matmul(x, w);
  for (let i = 0; i < n; i++) h = i % 2 ? sn.tanh(h) : h.mul(0.75).add(0.125);
  return h.add(x);
};

describe('jit plans on webgpu', () => {
  it('records every dispatch of a call into one command buffer and submits it once, however many kernels', async () => {
    const x = sn.randn([3, 11], { seed: 1, device }), w = sn.randn([11, 11], { seed: 2, device });
    const fn = chain(45); // 1 + 45·1.5 + 1 > 64 kernels: more than one eager batch holds
    const f = sn.jit(fn, { fusion: 'none' });
    expect((await f.compile(x, w)).kernels.length).toBeGreaterThan(64);
    await sn.synchronize(device);
    const before = gpu().batch.submits;
    const ys = [f(x, w), f(x, w), f(x, w)];
    expect(gpu().batch.submits - before).toBe(3);
    const want = await fn(x, w).data();
    for (const y of ys) assertClose(await y.data(), want, tol);
    f.dispose();
  });

  it('makes bind groups over fixed buffers once; per call only for kernels reading inputs or writing outputs, reused while those buffers repeat', async () => {
    const x = sn.randn([5, 13], { seed: 3, device }), w = sn.randn([13, 13], { seed: 4, device });
    const fn = chain(6);
    const f = sn.jit(fn, { fusion: 'none' });
    const kernels = await counting(['createBindGroup'], async (count) => {
      const n = (await f.compile(x, w)).kernels.length;
      // matmul reads both inputs; the last add reads x and writes the output: the rest are fixed,
      // and one more binds the plan's parameter blocks (the scalars of its elementwise kernels).
      expect(count.createBindGroup).toBe(n - 2 + 1);
      return n;
    });
    expect(kernels).toBe(11);
    const x2 = x.mul(1);
    await counting(['createBindGroup'], async (count) => {
      f(x, w).dispose();
      expect(count.createBindGroup).toBe(2);
      // The disposed output's buffer comes back from the pool: nothing changed, nothing is made.
      for (let i = 0; i < 5; i++) f(x, w).dispose();
      expect(count.createBindGroup).toBe(2);
      // A new input buffer: new bind groups for the two kernels reading it.
      const y = f(x2, w);
      expect(count.createBindGroup).toBe(4);
      assertClose(await y.data(), await fn(x2, w).data(), tol);
    });
    f.dispose();
  });

  it('compile() compiles every pipeline with createComputePipelineAsync before the first call, which then creates none', async () => {
    const x = sn.randn([7, 17], { seed: 5, device }), b = sn.randn([17], { seed: 6, device });
    const fn = (t: Tensor, bias: Tensor) => sn.softmax(sn.relu(t.add(bias)).mul(3), -1).sum(0);
    const f = sn.jit(fn, { fusion: 'none' });
    // Kernels of one structure share a pipeline at every size: empty the cache, so that none compiled by an earlier test serves these.
    const capacity = sn.memory().devices.webgpu!.pipelines!.capacity;
    sn.setCacheLimits({ pipelines: 0 });
    sn.setCacheLimits({ pipelines: capacity });
    await counting(['createComputePipeline', 'createComputePipelineAsync'], async (count) => {
      const r = await f.compile(x, b);
      expect(r.kernels.map((k) => k.name)).toEqual(['add', 'relu', 'mul', 'softmax', 'sum']);
      expect(count.createComputePipelineAsync).toBe(r.kernels.length);
      expect(count.createComputePipeline).toBe(0);
      expect(r.compileMs).toBeGreaterThan(0);
      expect(r.coldMs).toBeNull();
      await sn.synchronize(device);
      const before = gpu().batch.submits;
      const y = f(x, b);
      expect(count.createComputePipeline).toBe(0);
      expect(gpu().batch.submits - before).toBe(1);
      assertClose(await y.data(), await fn(x, b).data(), tol);
    });
    expect(f.report().coldMs).toBeTypeOf('number');
    expect(f.report().warmMs).toBeNull();
    // A second compile() of the signature compiles nothing.
    await counting(['createComputePipelineAsync'], async (count) => {
      await f.compile(x, b);
      expect(count.createComputePipelineAsync).toBe(0);
    });
  });

  it('a kernel the compiler rejects: compile() rejects naming it; a first call without compile() fails its results, not the work queued before', async () => {
    const broken = (name: string) =>
      defineOp<Record<string, never>>({
        name,
        infer: ([x]) => [x!],
        cpu: () => {},
        webgpu: () => ({ source: `@group(0) @binding(0) var<storage, read> in0: array<f32>;\n// ${name}\nfn main( {`, workgroups: [1] }),
      });
    const ahead = broken('brokenAhead'), during = broken('brokenDuring');
    const x = sn.ones([3], { device });
    const f = sn.jit((t: Tensor) => apply1(ahead, [t.add(1)], {}).mul(2), { fusion: 'none' });
    await expect(f.compile(x)).rejects.toThrow(/^brokenAhead: the WGSL kernel was rejected on webgpu \(.+\): line 3:\d+: /);
    expect(() => f(x)).toThrow(/^brokenAhead: the WGSL kernel was rejected/);
    const g = sn.jit((t: Tensor) => apply1(during, [t.add(2)], {}).mul(2), { fusion: 'none' });
    const queued = sn.add(x, 5);
    const y = g(x);
    await expect(y.data()).rejects.toThrow(/^brokenDuring: the WGSL kernel was rejected on webgpu/);
    expect(await queued.toArray()).toEqual([6, 6, 6]);
    expect(() => g(x)).toThrow(/^brokenDuring: the WGSL kernel was rejected/);
  });

  it('device-side checks in a plan: a bad index fails that call’s results; the next call with good ones passes', async () => {
    const table = sn.randn([6, 3], { seed: 7, device });
    const fn = (t: Tensor, i: Tensor, j: Tensor) => sn.indexSelect(t, 0, i).add(sn.indexSelect(t, 0, j)).mul(2);
    const f = sn.jit(fn);
    const good = sn.tensor([5, 0, 2, 2], { dtype: 'int32', device }), bad = sn.tensor([1, 9, 0, 3], { dtype: 'int32', device });
    assertClose(await f(table, good, good).data(), await fn(table, good, good).data(), tol);
    await expect(f(table, good, bad).data()).rejects.toThrow(/^indexSelect: index 9 is out of range for dim 0 of input \[6, 3\] float32 \(valid: 0 to 5\)$/);
    const other = sn.tensor([1, 3, 0, 3], { dtype: 'int32', device });
    assertClose(await f(table, other, good).data(), await fn(table, other, good).data(), tol);
    // An input already known to be bad fails the call at once.
    const spoilt = sn.indexSelect(table, 0, bad);
    await spoilt.data().catch(() => null);
    expect(() => f(spoilt, good, good)).toThrow(/^indexSelect: index 9/);
  });

  it('runs multi-pass programs (a float16 matmul packed through scratch, a long reduction) and reuses its scratch: warm calls create no buffers', async () => {
    const a = sn.randn([5, 9], { seed: 8, device, dtype: 'float16' }), b = sn.randn([9, 7], { seed: 9, device, dtype: 'float16' });
    const v = sn.randn([70001], { seed: 10, device });
    const fn = (p: Tensor, q: Tensor, r: Tensor) => [sn.matmul(p, q).relu(), sn.sum(r.mul(r))];
    const f = sn.jit(fn);
    const want = await Promise.all(fn(a, b, v).map((t) => t.data()));
    const run = async () => {
      const ys = f(a, b, v);
      assertClose(await ys[0]!.data(), want[0]!, { rtol: 2e-3, atol: 1e-3 });
      assertClose(await ys[1]!.data(), want[1]!, { rtol: 1e-4 });
      ys.forEach((t) => t.dispose());
    };
    await run();
    expect(f.report().kernels.some((k) => (k.source ?? '').includes('// ---- next pass ----'))).toBe(true);
    const created = gpu().pool.created;
    for (let i = 0; i < 3; i++) await run();
    expect(gpu().pool.created).toBe(created);
    f.dispose();
  });

  it('profile() gives each kernel its GPU time from timestamp queries: positive, adding up to at most the call’s wall time', async () => {
    expect(gpu().device.features.has('timestamp-query')).toBe(true); // SwiftShader has it
    const x = sn.randn([2, 3, 9, 9], { seed: 11, device }), w = sn.randn([4, 3, 3, 3], { seed: 12, device });
    const fn = (t: Tensor, k: Tensor) => sn.softmax(sn.conv2d(t, k, null, { padding: 1 }).relu().flatten(1), -1);
    const f = sn.jit(fn, { fusion: 'elementwise' });
    const r = await f.profile(x, w);
    expect(r.coldMs).toBeNull(); // profiled calls are not timed as calls
    expect(r.kernels.length).toBeGreaterThanOrEqual(3);
    for (const k of r.kernels) {
      expect(k.gpuMs, k.name).toBeGreaterThan(0);
      expect(k.cpuMs).toBeUndefined();
    }
    const sum = r.kernels.reduce((a, k) => a + k.gpuMs!, 0);
    expect(r.profiledMs).toBeGreaterThanOrEqual(sum);
    // The report keeps them; ordinary calls after it run as before.
    expect(f.report().kernels.map((k) => k.gpuMs)).toEqual(r.kernels.map((k) => k.gpuMs));
    assertClose(await f(x, w).data(), await fn(x, w).data(), tol);
    f.dispose();
  });

  it('without timestamp-query, profile() gives no gpuMs but still the wall time', async () => {
    const d = gpu().device;
    // Dawn keeps `features` on the device object itself or on its prototype: restore whichever.
    const own = Object.getOwnPropertyDescriptor(d, 'features');
    const features = new Set([...d.features].filter((name) => name !== 'timestamp-query'));
    Object.defineProperty(d, 'features', { value: features, configurable: true });
    try {
      const f = sn.jit((t: Tensor) => t.exp().sum(-1));
      const r = await f.profile(sn.randn([3, 19], { seed: 13, device }));
      expect(r.kernels.every((k) => k.gpuMs === undefined && k.cpuMs === undefined)).toBe(true);
      expect(r.profiledMs).toBeGreaterThan(0);
    } finally {
      if (own) Object.defineProperty(d, 'features', own);
      else Reflect.deleteProperty(d, 'features');
    }
    expect(d.features.has('timestamp-query')).toBe(true);
  });

  it('dispose frees the plan: its slots and scratch', async () => {
    const x = sn.randn([4, 23], { seed: 14, device });
    const before = sn.memory().devices.webgpu!.bytes;
    const f = sn.jit((t: Tensor) => t.exp().t().contiguous().sin().sum(0), { fusion: 'none' });
    f(x).dispose();
    expect(f.report().peakBytes).toBeGreaterThan(0);
    expect(sn.memory().devices.webgpu!.bytes).toBeGreaterThan(before);
    f.dispose();
    // At most, not equal: during an await the garbage collector may release tensors earlier code dropped undisposed.
    expect(sn.memory().devices.webgpu!.bytes).toBeLessThanOrEqual(before);
    expect(() => f.report()).toThrow(/nothing compiled yet/);
  });
});

describe('jit plans on cpu', () => {
  it('profile() gives each kernel its host time; compile() builds the plan without running it', async () => {
    const x = sn.randn([16, 31], { seed: 15 }), w = sn.randn([31, 8], { seed: 16 });
    const fn = (t: Tensor, k: Tensor) => sn.logSoftmax(sn.matmul(t, k).relu(), -1);
    const f = sn.jit(fn, { fusion: 'none' });
    const compiled = await f.compile(x, w);
    expect(compiled.coldMs).toBeNull();
    expect(compiled.compileMs).toBeGreaterThan(0);
    const r = await f.profile(x, w);
    expect(r.kernels.map((k) => k.name)).toEqual(['matmul', 'relu', 'logSoftmax']);
    for (const k of r.kernels) {
      expect(k.cpuMs, k.name).toBeGreaterThanOrEqual(0);
      expect(k.gpuMs).toBeUndefined();
    }
    expect(r.profiledMs).toBeGreaterThanOrEqual(r.kernels.reduce((a, k) => a + k.cpuMs!, 0));
    expect(r.kernels[0]!.cpuMs).toBeGreaterThan(0); // a 16×31×8 matmul takes measurable time
    assertClose(await f(x, w).data(), await fn(x, w).data(), { rtol: 1e-6, atol: 1e-7 });
    expect(f.report().coldMs).toBeTypeOf('number');
  });

  it('compile() and profile() refuse to run while another function is traced', async () => {
    const inner = sn.jit((t: Tensor) => t.mul(2));
    let pending: Promise<unknown> | undefined;
    const outer = sn.jit((t: Tensor) => {
      pending = inner.compile(t);
      return t.add(1);
    });
    outer(sn.ones([2]));
    await expect(pending).rejects.toThrow(/^jit: compile\(\) cannot be used while another function is traced/);
  });
});
