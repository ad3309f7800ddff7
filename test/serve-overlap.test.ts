// Several calls of one jitted function in flight on WebGPU at once (what a batcher with concurrency > 1
// does): each call returns before its kernels ran, with its own inputs and outputs; results must stay
// those of each call, whatever the interleaving with other calls, other functions and freed buffers.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { propertyConfig } from '../src/testing/index.js';

const N = 4099; // odd: kernels see a ragged last workgroup
const chain = (x: sn.Tensor) => sn.mul(sn.sigmoid(sn.sub(sn.relu(sn.add(sn.mul(x, 1.5), 0.5)), 0.25)), x);
const chainRef = (v: number) => (1 / (1 + Math.exp(-(Math.max(0, 1.5 * v + 0.5) - 0.25)))) * v;
/** Input k: values that differ per call, so a result read from another call's buffer shows. */
const host = (k: number) => Float32Array.from({ length: N }, (_, i) => Math.sin(i * 0.37 + k) * (k + 1));

function expectChainOf(values: ArrayLike<number>, k: number): void {
  const x = host(k);
  for (let i = 0; i < N; i += 97) expect(values[i]).toBeCloseTo(chainRef(x[i]!), 4);
}

describe('jitted calls in flight at once on WebGPU', () => {
  it('counts calls in flight, and each of 8 overlapping calls gets its own result', async () => {
    const f = sn.jit(chain);
    const inputs = Array.from({ length: 8 }, (_, k) => sn.tensor(host(k), { device: 'webgpu' }));
    const outs = inputs.map((x) => f(x)); // none awaited: all submitted before any is read
    const r = f.report();
    expect(r.inFlight.peak).toBeGreaterThanOrEqual(2);
    expect(String(r)).toMatch(/calls in flight \d+ \(at most \d+ at once\)/);
    // Read back in reverse order, so the last call's readback is queued first.
    const values = await Promise.all([...outs].reverse().map((t) => t.data()));
    values.reverse().forEach((v, k) => expectChainOf(v, k));
    await sn.synchronize();
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(f.report().inFlight.now).toBe(0);
    [...inputs, ...outs].forEach((t) => t.dispose());
    f.dispose();
  });

  it('property: interleaved calls of two jitted functions, eager ops and freed buffers never mix results', async () => {
    const f = sn.jit(chain);
    const g = sn.jit((x: sn.Tensor) => sn.add(sn.mul(x, x), 1));
    const before = sn.memory().tensors;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ action: fc.constantFrom('f', 'g', 'eager', 'free', 'read'), k: fc.integer({ min: 0, max: 5 }) }), { minLength: 1, maxLength: 24 }),
        async (steps) => {
          const inputs = Array.from({ length: 6 }, (_, k) => sn.tensor(host(k), { device: 'webgpu' }));
          const live: { t: sn.Tensor; k: number; kind: 'f' | 'g' }[] = [];
          const check = async (e: (typeof live)[number]) => {
            const v = await e.t.data();
            const x = host(e.k);
            for (let i = 0; i < N; i += 131) expect(v[i]).toBeCloseTo(e.kind === 'f' ? chainRef(x[i]!) : x[i]! * x[i]! + 1, 3);
          };
          for (const { action, k } of steps) {
            if (action === 'f' || action === 'g') live.push({ t: (action === 'f' ? f : g)(inputs[k]!), k, kind: action });
            else if (action === 'eager') live.push({ t: sn.tidy(() => chain(inputs[k]!)), k, kind: 'f' });
            else if (live.length > 0) {
              // Freeing lets the pool hand that buffer to the next call while others are in flight.
              const [e] = live.splice(k % live.length, 1);
              if (action === 'read') await check(e!);
              e!.t.dispose();
            }
          }
          for (const e of live) await check(e);
          live.forEach((e) => e.t.dispose());
          inputs.forEach((t) => t.dispose());
        },
      ),
      propertyConfig({ numRuns: 20 }),
    );
    // At most, not equal: during an await the garbage collector may release tensors earlier code dropped undisposed.
    expect(sn.memory().tensors).toBeLessThanOrEqual(before);
    f.dispose();
    g.dispose();
  });
});
