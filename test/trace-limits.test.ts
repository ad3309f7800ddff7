import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { getBackend } from '../src/backend/backend.js';
import type { WebGpuBackend } from '../src/backend/webgpu/backend.js';
import { WITH_WEBGPU } from './helpers.js';

// Sizes inside a trace are checked as eagerly: an op recorded under jit whose output the device
// cannot hold throws the eager SinterError (the op the user called, shape, bytes, limit) while
// tracing, before the plan allocates anything; and fast, since nothing is allocated.

/** The error `fn` throws and how long it took to throw (ms). */
function refusal(fn: () => unknown): { error: Error; ms: number } {
  const t0 = performance.now();
  try {
    fn();
  } catch (e) {
    return { error: e as Error, ms: performance.now() - t0 };
  }
  throw new Error('expected a refusal, but the call returned');
}

/** Elements a float32 tensor needs to exceed the device's limit: the host's typed arrays on the cpu, one buffer's binding on webgpu. */
function tooMany(device: string): number {
  if (device === 'cpu') return 2 ** 32 + 1;
  const { maxBufferSize, maxStorageBufferBindingSize } = (getBackend('webgpu') as WebGpuBackend).caps.limits;
  return Math.floor(Math.min(maxBufferSize, maxStorageBufferBindingSize) / 4) + 1;
}

const shapeText = (shape: readonly number[]) => `\\[${shape.join(', ')}\\]`;

describe.each(WITH_WEBGPU)('trace size limits on %s', (device) => {
  it('an elementwise op of a huge broadcast names the op called (add), its shape and bytes, as eagerly, within 200 ms', () => {
    const n = tooMany(device);
    const rows = Math.ceil(n / 1000);
    const shape = [rows, 1000];
    const x = sn.ones([1, 1000], { device });
    const eager = refusal(() => x.expand(shape).add(1));
    expect(eager.error).toBeInstanceOf(sn.SinterError);
    const pattern = new RegExp(`^add: a float32 tensor of shape ${shapeText(shape)} needs ${rows * 4000} bytes .*more than`);
    expect(eager.error.message).toMatch(pattern);

    const f = sn.jit((t: Tensor) => t.expand(shape).add(1));
    const before = sn.memory().devices[device]?.bytes ?? 0;
    const traced = refusal(() => f(x));
    expect(traced.error).toBeInstanceOf(sn.SinterError);
    expect(traced.error.message).toBe(eager.error.message);
    expect(traced.ms).toBeLessThan(200);
    // Nothing compiled, nothing left allocated.
    expect(f.stats().entries).toBe(0);
    expect(sn.memory().devices[device]?.bytes ?? 0).toBeLessThanOrEqual(before);
    x.dispose();
    f.dispose();
  });

  it('a matmul of large traced shapes is refused at trace time, naming matmul, within 200 ms', () => {
    const n = tooMany(device);
    const k = 3;
    const m = Math.ceil(Math.sqrt(n));
    const a = sn.ones([m, k], { device }), b = sn.ones([k, m], { device });
    const f = sn.jit((p: Tensor, q: Tensor) => sn.matmul(p, q).relu());
    const traced = refusal(() => f(a, b));
    expect(traced.error).toBeInstanceOf(sn.SinterError);
    expect(traced.error.message).toMatch(new RegExp(`^matmul: a float32 tensor of shape ${shapeText([m, m])} needs ${m * m * 4} bytes .*more than`));
    expect(traced.ms).toBeLessThan(200);
    expect(f.stats().entries).toBe(0);
    // The same refusal as eagerly.
    expect(refusal(() => sn.matmul(a, b)).error.message).toBe(traced.error.message);
    a.dispose();
    b.dispose();
    f.dispose();
  });

  it('compile() rejects the same way, and a signature within the limits still compiles and runs', async () => {
    const shape = [Math.ceil(tooMany(device) / 64), 64];
    const f = sn.jit((t: Tensor) => t.expand(shape).mul(2));
    const x = sn.ones([1, 64], { device });
    await expect(f.compile(x)).rejects.toThrow(/^mul: a float32 tensor of shape .* needs \d+ bytes/);
    const g = sn.jit((t: Tensor) => t.expand([3, 64]).mul(2));
    expect(Array.from(await g(x).data())).toEqual(Array(192).fill(2));
    x.dispose();
    f.dispose();
    g.dispose();
  });
});
