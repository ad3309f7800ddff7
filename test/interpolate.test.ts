import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DType, InterpolateMode, InterpolateOptions } from '../src/index.js';
import { makeTensor, propertyConfig, shapeArb, tensorCaseArb } from '../src/testing/index.js';
import { WITH_WEBGPU, expectClose } from './helpers.js';
import { ref, refOf } from './reference/core.js';
import { interpolateRef } from './reference/interpolate.js';

// Tolerances: TOLERANCES per backend and dtype. 'nearest' copies values (exact); the linear modes
// compute a convex combination of 2 or 4 inputs, on the CPU in double, rounded once, so float32 stays
// within a few ulps of the float64 reference, and float16 within half an ulp plus the reference's own
// rounding. WebGPU picks the same neighbours and weights (float32 coordinates as on the CPU) but
// blends in f32, possibly with fused multiply-adds: up to ~3 f32 ulps of the largest neighbour, which
// for values near ±4 exceeds WebGPU's float32 atol of 1e-6 where neighbours cancel, hence atol 2e-6
// there (`blendTol`). float16 results round that f32 value once, within float16's tolerance.
const blendTol = (device: string, dtype: DType, mode: InterpolateMode) => (device === 'webgpu' && dtype === 'float32' && mode !== 'nearest' ? { atol: 2e-6 } : {});

// Every new shape compiles a new WebGPU pipeline (shapes are baked into the WGSL; ~5 ms each on
// SwiftShader), so the GPU runs fewer random cases to keep this file quick.
const runs = (device: string, n: number) => (device === 'webgpu' ? Math.ceil(n / 2) : n);
/** Spatial sizes, and either an output size or scale factors per spatial dim (up- and down-sampling). */
function resizeArb(k: number, maxIn: number) {
  return shapeArb({ minRank: k, maxRank: k, maxDim: maxIn }).chain((spatial) =>
    fc.tuple(
      fc.constant(spatial),
      fc.oneof(
        fc.array(fc.integer({ min: 1, max: 9 }), { minLength: k, maxLength: k }).map((size) => ({ size })),
        // Factors with awkward binary expansions (0.7, 1.3, …) as well as exact ones (2, 0.5); the output must be non-empty.
        fc.array(fc.constantFrom(0.5, 0.7, 1, 1.3, 1.5, 1.7, 2, 2.5, 3, 1 / 3), { minLength: k, maxLength: k })
          .filter((f) => f.every((v, i) => Math.floor(spatial[i]! * v) >= 1))
          .map((scaleFactor) => ({ scaleFactor })),
      ),
    ),
  );
}

type Case = { mode: InterpolateMode; ranks: number[]; dtypes: DType[]; align: (boolean | undefined)[] };
const CASES: Case[] = [
  { mode: 'nearest', ranks: [3, 4, 5], dtypes: ['float32', 'float16', 'int32', 'int8', 'uint8', 'bool'], align: [undefined] },
  { mode: 'linear', ranks: [3], dtypes: ['float32', 'float16'], align: [undefined, false, true] },
  { mode: 'bilinear', ranks: [4], dtypes: ['float32', 'float16'], align: [undefined, false, true] },
];

describe.each(WITH_WEBGPU)('interpolate on %s', (device) => {
  for (const { mode, ranks, dtypes, align } of CASES) {
    it.each(dtypes)(`${mode} matches the reference for random sizes and scale factors (%s)`, async (dtype) => {
      const arb = fc.tuple(fc.constantFrom(...ranks), fc.constantFrom(...align)).chain(([rank, alignCorners]) =>
        fc.tuple(shapeArb({ minRank: 2, maxRank: 2, maxDim: 2 }), resizeArb(rank - 2, rank === 5 ? 4 : 7)).chain(([nc, [spatial, resize]]) =>
          fc.tuple(tensorCaseArb([...nc, ...spatial], { dtype }), fc.constant(resize), fc.constant(alignCorners)),
        ),
      );
      await fc.assert(
        fc.asyncProperty(arb, async ([c, resize, alignCorners]) => {
          const x = makeTensor(c, device);
          const spatial = c.shape.slice(2);
          const opts: InterpolateOptions = { ...resize, mode, ...(alignCorners === undefined ? {} : { alignCorners }) };
          const y = sn.interpolate(x, opts);
          const scales = 'scaleFactor' in resize ? resize.scaleFactor : spatial.map(() => null);
          const out = 'size' in resize ? resize.size : spatial.map((s, i) => Math.floor(s * resize.scaleFactor[i]!));
          await expectClose(y, interpolateRef(refOf(c), out, scales, mode, alignCorners ?? false, dtype), { dtype, tol: blendTol(device, dtype, mode) });
          x.dispose();
          y.dispose();
        }),
        propertyConfig({ numRuns: runs(device, 40) }),
      );
    });
  }

  // Odd sizes that fill neither a workgroup (256 invocations) nor, for packed dtypes, a last word.
  it.each<[InterpolateMode, DType, boolean]>([
    ['bilinear', 'float32', false],
    ['bilinear', 'float16', true],
    ['linear', 'float32', true],
    ['nearest', 'uint8', false],
  ])('%s %s over outputs spanning many workgroups (alignCorners %s)', async (mode, dtype, alignCorners) => {
    const [shape, size] = mode === 'linear' ? [[2, 3, 331], [997]] : [[2, 3, 33, 47], [70, 95]];
    await fc.assert(
      fc.asyncProperty(tensorCaseArb(shape, { dtype }), async (c) => {
        const x = makeTensor(c, device);
        const y = sn.interpolate(x, size, mode === 'nearest' ? { mode } : { mode, alignCorners });
        await expectClose(y, interpolateRef(refOf(c), size, size.map(() => null), mode, alignCorners, dtype), { dtype, tol: blendTol(device, dtype, mode) });
      }),
      propertyConfig({ numRuns: 2 }),
    );
  });

  it('matches PyTorch documentation examples', async () => {
    const x = sn.tensor([[[[1, 2], [3, 4]]]], { device });
    await expectClose(sn.interpolate(x, { scaleFactor: 2 }), ref([1, 1, 4, 4], [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]));
    await expectClose(
      sn.interpolate(x, { scaleFactor: 2, mode: 'bilinear' }),
      ref([1, 1, 4, 4], [1, 1.25, 1.75, 2, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3, 3.25, 3.75, 4]),
    );
    const third = 1 / 3;
    await expectClose(
      sn.interpolate(x, 4, { mode: 'bilinear', alignCorners: true }),
      ref([1, 1, 4, 4], [1, 1 + third, 2 - third, 2, 1 + 2 * third, 2, 2 + third, 3 - third, 3 - 2 * third, 3 - third, 3, 3 + third, 3, 3 + third, 4 - third, 4]),
    );
    await expectClose(sn.interpolate(sn.tensor([[[0, 10]]], { device }), [3], { mode: 'linear', alignCorners: true }), ref([1, 1, 3], [0, 5, 10]));
  });

  it("nearest uses PyTorch's float32 scale, not exact arithmetic", async () => {
    // 26 → 22: 11 · fround(26/22) rounds (in float32) to just below 13, so output 11 reads input 12, not 13.
    const x = sn.arange(26, { device }).reshape(1, 1, 26);
    const got = await sn.interpolate(x, 22).data();
    expect(got[11]).toBe(12);
    // A given scaleFactor is used as 1/scaleFactor: 5 × 1.7 → 8 outputs, index floor(j · fround(1/1.7)).
    const y = await sn.interpolate(sn.arange(5, { device }).reshape(1, 1, 5), { scaleFactor: 1.7 }).data();
    expect(Array.from(y)).toEqual([0, 0, 1, 1, 2, 2, 3, 4]);
  });

  it('rejects bad input with clear errors', () => {
    const x = sn.zeros([1, 2, 3, 3], { device }), x3 = sn.zeros([1, 2, 3], { device });
    const fail = (fn: () => unknown, ...parts: string[]) => {
      expect(fn).toThrow(sn.SinterError);
      for (const p of parts) expect(fn).toThrow(p);
    };
    fail(() => sn.interpolate(x, {}), 'interpolate:', 'exactly one of size and scaleFactor');
    fail(() => sn.interpolate(x, { size: 4, scaleFactor: 2 }), 'exactly one');
    fail(() => sn.interpolate(x, [4, 4, 4]), 'size [4, 4, 4]', 'one entry per spatial dim', '(2)');
    fail(() => sn.interpolate(x, { scaleFactor: [2] }), 'scaleFactor [2]');
    fail(() => sn.interpolate(x, { size: 4, alignCorners: false }), 'alignCorners can only be set');
    fail(() => sn.interpolate(x, { size: 4, mode: 'linear' }), "mode 'linear' needs a 3-D", '[1, 2, 3, 3] float32');
    fail(() => sn.interpolate(x3, { size: 4, mode: 'bilinear' }), "mode 'bilinear' needs a 4-D");
    fail(() => sn.interpolate(sn.zeros([2, 3], { device }), 4), "mode 'nearest' needs a 3-D [N, C, W], 4-D [N, C, H, W], 5-D");
    fail(() => sn.interpolate(x, { size: 4, mode: 'bicubic' as InterpolateMode }), "mode must be 'nearest', 'linear' or 'bilinear'");
    fail(() => sn.interpolate(x, { scaleFactor: 0.2 }), 'must be positive', 'output size [0, 0]', 'scaleFactor [0.2, 0.2]');
    fail(() => sn.interpolate(x, { scaleFactor: -1 }), 'positive and finite');
    fail(() => sn.interpolate(x, [0, 2]), 'must be positive');
    fail(() => sn.interpolate(x, 2.5), 'must be positive');
    fail(() => sn.interpolate(sn.zeros([1, 1, 0], { device }), 2), 'must be positive', '[1, 1, 0]');
    fail(() => sn.interpolate(sn.zeros([1, 1, 3], { dtype: 'int32', device }), { size: 4, mode: 'linear' }), 'needs a float tensor', 'int32');
    fail(() => sn.interpolate(x, 4, { size: 4 }), 'size was given twice');
  });
});
