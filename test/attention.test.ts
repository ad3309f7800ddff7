import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { makeTensor, propertyConfig, tensorCaseArb } from '../src/testing/index.js';
import { WITH_WEBGPU, expectClose } from './helpers.js';
import { refOf } from './reference/core.js';
import { sdpaRef } from './reference/attention.js';

// scaledDotProductAttention (fused kernel on WebGPU, double loop on the CPU) against a float64
// reference: random batch dims that broadcast, bool and additive masks that broadcast over heads,
// causal masks, custom scales, rows with every key masked (NaN, as PyTorch), sizes that span
// several K/V tiles and several workgroups of queries. float32 within 1e-4 relative, 2e-5 absolute.

const TOL = { rtol: 1e-4, atol: 2e-5 };
const runs = (device: string, n: number) => (device === 'webgpu' ? Math.ceil(n / 2) : n);

const caseArb = fc
  .record({
    batch: fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 0, maxLength: 2 }),
    L: fc.oneof(fc.integer({ min: 1, max: 9 }), fc.constant(70)),
    S: fc.oneof(fc.integer({ min: 1, max: 9 }), fc.constant(41)),
    E: fc.integer({ min: 1, max: 8 }),
    Ev: fc.integer({ min: 1, max: 6 }),
    mask: fc.constantFrom('none', 'bool', 'additive', 'causal'),
    maskRank: fc.integer({ min: 2, max: 4 }),
    bcastK: fc.boolean(),
    scale: fc.option(fc.double({ min: 0.1, max: 2, noNaN: true }), { nil: undefined }),
  })
  .chain((c) => {
    const kb = c.bcastK ? c.batch.map(() => 1) : c.batch;
    const maskShape = [...c.batch, c.L, c.S].slice(-Math.min(c.maskRank, c.batch.length + 2)).map((d, i, a) => (i < a.length - 2 && i % 2 === 0 ? 1 : d));
    return fc.tuple(
      fc.constant(c),
      tensorCaseArb([...c.batch, c.L, c.E]),
      tensorCaseArb([...kb, c.S, c.E]),
      tensorCaseArb([...kb, c.S, c.Ev]),
      c.mask === 'bool' ? tensorCaseArb(maskShape, { dtype: 'bool' }) : tensorCaseArb(maskShape, { min: -3, max: 1 }),
    );
  });

describe.each(WITH_WEBGPU)('scaledDotProductAttention on %s', (device) => {
  it('matches the float64 reference with broadcast masks, causal masks and scales', async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async ([c, qc, kc, vc, mc]) => {
        const [q, k, v] = [qc, kc, vc].map((x) => makeTensor(x, device)) as [Tensor, Tensor, Tensor];
        const m = c.mask === 'bool' || c.mask === 'additive' ? makeTensor(mc, device) : null;
        const y = sn.scaledDotProductAttention(q, k, v, { attnMask: m, isCausal: c.mask === 'causal', scale: c.scale });
        const want = sdpaRef(refOf(qc), refOf(kc), refOf(vc), { mask: m ? refOf(mc) : undefined, maskIsBool: c.mask === 'bool', causal: c.mask === 'causal', scale: c.scale });
        await expectClose(y, want, { tol: TOL });
        for (const t of [q, k, v, y, ...(m ? [m] : [])]) t.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 20) }),
    );
  });

  it('gives NaN for a query whose keys are all masked, float16 in float16 out, and checks its arguments', async () => {
    const q = sn.randn([2, 3, 4], { seed: 1, device }), k = sn.randn([2, 5, 4], { seed: 2, device }), v = sn.randn([2, 5, 2], { seed: 3, device });
    const mask = sn.tensor([[true, true, false, false, false], [false, false, false, false, false], [true, true, true, true, true]], { device });
    const y = await sn.scaledDotProductAttention(q, k, v, { attnMask: mask }).toArray() as number[][][];
    expect(y[0]![1]!.every(Number.isNaN)).toBe(true);
    expect(y[1]![0]!.some(Number.isNaN)).toBe(false);
    const h = sn.scaledDotProductAttention(q.to('float16'), k.to('float16'), v.to('float16'), { isCausal: true });
    expect(h.dtype).toBe('float16');
    expect(() => sn.scaledDotProductAttention(q, k, v, { attnMask: mask, isCausal: true })).toThrow(/give attnMask or isCausal, not both/);
    expect(() => sn.scaledDotProductAttention(q, v, v)).toThrow(/scaledDotProductAttention: expects q \[\.\.\., L, E\]/);
  });

  it('with dropoutP keeps the expected value (unfused path) and runs under jit like eager', async () => {
    const q = sn.randn([1, 4, 8], { seed: 4, device }), k = sn.randn([1, 6, 8], { seed: 5, device }), v = sn.ones([1, 6, 3], { device });
    // Every weight row sums to 1, so with v of ones the output is 1 wherever dropout kept weight, scaled by 1/(1−p).
    const d = await sn.scaledDotProductAttention(q, k, v, { dropoutP: 0.5 }).data();
    expect(d.every((x) => x >= 0 && x <= 2 + 1e-5)).toBe(true);
    const f = sn.jit((a: Tensor, b: Tensor, c: Tensor) => sn.scaledDotProductAttention(a, b, c, { isCausal: true }));
    const vr = sn.randn([1, 6, 3], { seed: 6, device });
    expect(Array.from(await (f(q, k, vr) as Tensor).data())).toEqual(Array.from(await sn.scaledDotProductAttention(q, k, vr, { isCausal: true }).data()));
  });
});
