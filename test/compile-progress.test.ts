import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { CompileProgress, Tensor } from '../src/index.js';
import { getBackend } from '../src/backend/backend.js';
import type { WebGpuBackend } from '../src/backend/webgpu/backend.js';
import { assertClose } from '../src/testing/index.js';
import { WITH_WEBGPU } from './helpers.js';

// `f.compileWith(args, { onProgress })`: pipelines compiled, k of n, while a signature compiles ahead.
const gpu = () => getBackend('webgpu') as WebGpuBackend;

/** Under fusion 'none' each op is a kernel; the repeated `mul`s share one pipeline (their scalar is a uniform). */
const fn = (x: Tensor, b: Tensor) => x.mul(2).mul(3).add(b).relu().mul(5).sum(0);

/** Runs `compile` with the WebGPU pipeline cache emptied first and counts createComputePipelineAsync calls meanwhile. */
async function coldCompile<T>(compile: () => Promise<T>): Promise<{ result: T; created: number }> {
  const { pipelines, device } = gpu();
  const capacity = pipelines.stats().capacity;
  pipelines.resize(0);
  pipelines.resize(capacity);
  const d = device as unknown as { createComputePipelineAsync: (...args: unknown[]) => unknown };
  const original = d.createComputePipelineAsync;
  let created = 0;
  d.createComputePipelineAsync = function (this: unknown, ...args: unknown[]) {
    created++;
    return original.apply(this, args);
  };
  try {
    return { result: await compile(), created };
  } finally {
    Reflect.deleteProperty(d, 'createComputePipelineAsync');
  }
}

function expectMonotone(events: readonly CompileProgress[]): void {
  expect(events.length).toBeGreaterThan(0);
  for (let i = 1; i < events.length; i++) {
    expect(events[i]!.total).toBe(events[0]!.total);
    expect(events[i]!.done).toBeGreaterThanOrEqual(events[i - 1]!.done);
  }
  const lastEvent = events.at(-1)!;
  expect(lastEvent.done).toBe(lastEvent.total);
}

describe('compile progress', () => {
  it('webgpu: { done: 0, total } then one event per distinct pipeline, ending at total; total = pipelines created', async () => {
    const x = sn.randn([11, 23], { seed: 1, device: 'webgpu' }), b = sn.randn([23], { seed: 2, device: 'webgpu' });
    const f = sn.jit(fn, { fusion: 'none' });
    const events: CompileProgress[] = [];
    const { result: r, created } = await coldCompile(() => f.compileWith([x, b], { onProgress: (p) => events.push({ ...p }) }));
    const distinctSources = new Set(r.kernels.map((k) => k.source)).size;
    expect(r.kernels.length).toBe(6);
    // mul ×3 share one pipeline: fewer pipelines than kernels.
    expect(distinctSources).toBeLessThan(r.kernels.length);
    expect(events[0]).toEqual({ done: 0, total: distinctSources });
    expect(events.map((e) => e.done)).toEqual(Array.from({ length: distinctSources + 1 }, (_, i) => i));
    expectMonotone(events);
    // With an empty cache every distinct pipeline is compiled asynchronously exactly once.
    expect(created).toBe(distinctSources);
    // The compiled plan runs and agrees with eager.
    assertClose(await f(x, b).data(), await fn(x, b).data(), { rtol: 1e-5, atol: 1e-5 });
    // A signature compiled before reports a single finished event.
    const again: CompileProgress[] = [];
    await f.compileWith([x, b], { onProgress: (p) => again.push({ ...p }) });
    expect(again).toEqual([{ done: distinctSources, total: distinctSources }]);
    f.dispose();
  });

  it('cpu: a single { done: 0, total: 0 } event (the kernels need no compiling)', async () => {
    const x = sn.randn([5, 7], { seed: 3 }), b = sn.randn([7], { seed: 4 });
    const f = sn.jit(fn, { fusion: 'none' });
    const events: CompileProgress[] = [];
    const r = await f.compileWith([x, b], { onProgress: (p) => events.push({ ...p }) });
    expect(r.device).toBe('cpu');
    expect(events).toEqual([{ done: 0, total: 0 }]);
    assertClose(await f(x, b).data(), await fn(x, b).data(), { rtol: 1e-12, atol: 1e-12 });
    f.dispose();
  });

  it.each(WITH_WEBGPU)('%s: compileWith without options equals compile(); args must be an array', async (device) => {
    const x = sn.randn([3, 4], { seed: 5, device }), b = sn.randn([4], { seed: 6, device });
    const f = sn.jit(fn);
    const r = await f.compileWith([x, b]);
    expect(r.coldMs).toBeNull();
    expect((await f.compile(x, b)).kernels.length).toBe(r.kernels.length);
    expect(f.stats().misses).toBe(1);
    await expect(f.compileWith(x as unknown as [Tensor, Tensor])).rejects.toThrow(/^jit: compileWith\(args, options\) takes the arguments as an array/);
    f.dispose();
  });
});
