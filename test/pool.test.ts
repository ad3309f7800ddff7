import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DType, Tensor } from '../src/index.js';
import { type TensorCase, makeTensor, propertyConfig, tensorCaseArb } from '../src/testing/index.js';
import { WITH_WEBGPU, expectClose, capsVariants, withCaps } from './helpers.js';
import { refOf } from './reference/core.js';
import { type PoolWindow, adaptiveAvgPool2dRef, avgPool2dRef, maxPool2dRef, pooledSize } from './reference/pool.js';

// Pooling computes in double and rounds once, so the default per-dtype TOLERANCE applies (max is exact).
// WebGPU sums windows in f32 and divides once: its float32 tolerance (TOLERANCES.webgpu) covers that.

// Every new shape compiles a new WebGPU pipeline (shapes are baked into the WGSL), so the GPU runs
// fewer random cases to keep this file quick.
const runs = (device: string, n: number) => (device === 'webgpu' ? Math.ceil(n / 3) : n);
const F: DType[] = ['float32', 'float16'];
type Pair = [number, number];

/** [N, C, H, W] or unbatched [C, H, W], with odd sizes and size-1 dims. */
const inputShapeArb = fc
  .tuple(fc.boolean(), fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 7 }), fc.integer({ min: 1, max: 7 }))
  .map(([batched, n, c, h, w]) => (batched ? [n, c, h, w] : [c, h, w]));
const pairArb = (min: number, max: number): fc.Arbitrary<Pair> => fc.tuple(fc.integer({ min, max }), fc.integer({ min, max }));

/** Kernel 1–3 (non-square), stride 1–3, dilation 1–2, padding 0–1 within half the kernel, either ceil mode. */
const windowArb: fc.Arbitrary<PoolWindow> = fc
  .record({ kernelSize: pairArb(1, 3), stride: pairArb(1, 3), dilation: pairArb(1, 2), ceilMode: fc.boolean(), pad: pairArb(0, 1) })
  .map(({ pad, ...w }) => ({ ...w, padding: [Math.min(pad[0], Math.floor(w.kernelSize[0] / 2)), Math.min(pad[1], Math.floor(w.kernelSize[1] / 2))] as Pair }));

/** A test tensor with values spread over [min, max] (default ±4) and a random layout. */
const caseArb = (shape: number[], dtype: DType): fc.Arbitrary<TensorCase> => tensorCaseArb(shape, { dtype });


/** A pair as users write it: a bare number when square and `compact`. */
const arg = (p: Pair, compact: boolean): number | Pair => (compact && p[0] === p[1] ? p[0] : p);

/** Values equal to the picked one become NaN (equal values stay equal, so expanded layouts stay consistent). */
function withNaN(c: TensorCase, pick: number | null): TensorCase {
  if (pick === null) return c;
  const v = c.values[pick % c.values.length];
  return { ...c, values: c.values.map((u) => (u === v ? NaN : u)) };
}

describe.each(WITH_WEBGPU)('pooling on %s', (device) => {
  it.each(F)('maxPool2d matches the windowed-max reference, NaN included (%s)', async (dtype) => {
    const arb = fc.tuple(inputShapeArb.chain((s) => caseArb(s, dtype)), windowArb, fc.boolean(), fc.option(fc.nat(), { nil: null, freq: 3 }));
    await fc.assert(
      fc.asyncProperty(arb, async ([c0, w, compact, pick]) => {
        const c = withNaN(c0, pick);
        const x = makeTensor(c, device);
        const sameStride = w.stride[0] === w.kernelSize[0] && w.stride[1] === w.kernelSize[1];
        const opts = {
          stride: compact && sameStride ? undefined : arg(w.stride, compact),
          padding: arg(w.padding, compact),
          dilation: arg(w.dilation, compact),
          ceilMode: w.ceilMode,
        };
        const run = () => sn.maxPool2d(x, arg(w.kernelSize, compact), opts);
        if (pooledSize(refOf(c), w).some((o) => o < 1)) {
          expect(run).toThrow(/^maxPool2d: .*output size is too small/);
        } else {
          const y = run();
          await expectClose(y, maxPool2dRef(refOf(c), w), { dtype });
          y.dispose();
        }
        x.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 150) }),
    );
  });

  it.each(F)('avgPool2d matches the reference divisor rules (%s)', async (dtype) => {
    const divisorArb = fc.oneof({ weight: 3, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.constantFrom(1, 2, 3, 7, -2) });
    const arb = fc.tuple(inputShapeArb.chain((s) => caseArb(s, dtype)), windowArb, fc.boolean(), divisorArb, fc.boolean());
    await fc.assert(
      fc.asyncProperty(arb, async ([c, win, countIncludePad, divisorOverride, compact]) => {
        const w = { ...win, dilation: [1, 1] as Pair, countIncludePad, divisorOverride };
        const x = makeTensor(c, device);
        const opts = {
          stride: arg(w.stride, compact),
          padding: arg(w.padding, compact),
          ceilMode: w.ceilMode,
          countIncludePad,
          divisorOverride: divisorOverride ?? undefined,
        };
        const run = () => sn.avgPool2d(x, arg(w.kernelSize, compact), opts);
        if (pooledSize(refOf(c), w).some((o) => o < 1)) {
          expect(run).toThrow(/^avgPool2d: .*output size is too small/);
        } else {
          const y = run();
          await expectClose(y, avgPool2dRef(refOf(c), w), { dtype });
          y.dispose();
        }
        x.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 150) }),
    );
  });

  it.each(F)('adaptiveAvgPool2d matches the adaptive-bin reference (%s)', async (dtype) => {
    const entry = fc.oneof(
      { weight: 4, arbitrary: fc.integer({ min: 1, max: 5 }) },
      { weight: 1, arbitrary: fc.constant(null) },
      { weight: 1, arbitrary: fc.constant(0) },
    );
    const sizeArb = fc.oneof(fc.integer({ min: 1, max: 5 }), fc.tuple(entry, entry));
    const arb = fc.tuple(inputShapeArb.chain((s) => caseArb(s, dtype)), sizeArb);
    await fc.assert(
      fc.asyncProperty(arb, async ([c, outputSize]) => {
        const x = makeTensor(c, device);
        const y = sn.adaptiveAvgPool2d(x, outputSize);
        const [h, w] = c.shape.slice(-2) as Pair;
        const out: Pair = typeof outputSize === 'number' ? [outputSize, outputSize] : [outputSize[0] ?? h, outputSize[1] ?? w];
        await expectClose(y, adaptiveAvgPool2dRef(refOf(c), out), { dtype });
        x.dispose();
        y.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 40) }),
    );
  });

  // Windows of more than 16 values are summed by a team of invocations per output on WebGPU.
  it.each(F)('avgPool2d and adaptiveAvgPool2d over large windows match the reference (%s)', async (dtype) => {
    const shape = fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 8, max: 40 }), fc.integer({ min: 8, max: 40 }));
    const arb = fc.tuple(
      shape.chain(([c, h, w]) => caseArb([c, h, w], dtype)),
      fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 2 })),
      fc.tuple(fc.integer({ min: 5, max: 8 }), fc.integer({ min: 4, max: 8 }), fc.integer({ min: 0, max: 2 }), fc.boolean()),
    );
    // Global average pooling of a 56×56 plane: a whole workgroup per output on GPUs.
    const plane = fc.sample(caseArb([2, 3, 56, 56], dtype), { numRuns: 1, seed: 1 })[0]!;
    for (const caps of capsVariants(device)) {
      await withCaps(caps, async () => {
        const x = makeTensor(plane, device), y = sn.adaptiveAvgPool2d(x, 1);
        await expectClose(y, adaptiveAvgPool2dRef(refOf(plane), [1, 1]), { dtype, what: `global average pooling with caps ${JSON.stringify(caps)}` });
        x.dispose();
        y.dispose();
        await fc.assert(
          fc.asyncProperty(arb, async ([c, out, [kh, kw, pad, ceilMode]]) => {
            const x = makeTensor(c, device);
            const y = sn.adaptiveAvgPool2d(x, out);
            await expectClose(y, adaptiveAvgPool2dRef(refOf(c), out), { dtype, what: `adaptiveAvgPool2d with caps ${JSON.stringify(caps)}` });
            const w = { kernelSize: [kh, kw] as Pair, stride: [2, 3] as Pair, padding: [pad, pad] as Pair, dilation: [1, 1] as Pair, ceilMode, countIncludePad: false, divisorOverride: null };
            const z = sn.avgPool2d(x, w.kernelSize, { stride: w.stride, padding: pad, ceilMode, countIncludePad: false });
            await expectClose(z, avgPool2dRef(refOf(c), w), { dtype, what: `avgPool2d with caps ${JSON.stringify(caps)}` });
            for (const t of [x, y, z]) t.dispose();
          }),
          propertyConfig({ numRuns: runs(device, 12) }),
        );
      });
    }
  });

  it('clips ceil-mode windows to the padded input, as PyTorch does', async () => {
    const values = [1, 2, 3, 4, 5, 6];
    // Each case runs along W ([1, 1, 1, 6], kernel [1, k]) and along H ([1, 1, 6, 1], kernel [k, 1]).
    type Case = { kernel: number; stride: number; padding?: number; countIncludePad?: boolean; max?: boolean; expected: number[] };
    const check = async ({ kernel, stride, padding = 0, countIncludePad, max, expected }: Case): Promise<void> => {
      for (const alongW of [true, false]) {
        const p = (v: number): Pair => (alongW ? [1, v] : [v, 1]);
        const shape = alongW ? [1, 1, 1, values.length] : [1, 1, values.length, 1];
        const x = sn.tensor(values, { shape, device });
        const opts = { stride: p(stride), padding: alongW ? [0, padding] : [padding, 0], ceilMode: true };
        const y = max ? sn.maxPool2d(x, p(kernel), opts) : sn.avgPool2d(x, p(kernel), { ...opts, countIncludePad });
        await expectClose(y, { shape: alongW ? [1, 1, 1, expected.length] : [1, 1, expected.length, 1], data: Float64Array.from(expected) });
      }
    };
    // Windows start at -1, 1, 3, 5 (input coordinates); the last overhangs the padding by one.
    await check({ kernel: 3, stride: 2, padding: 1, expected: [1, 3, 5, 3] });
    await check({ kernel: 3, stride: 2, padding: 1, countIncludePad: false, expected: [1.5, 3, 5, 6] });
    await check({ kernel: 4, stride: 4, expected: [2.5, 5.5] });
    await check({ kernel: 4, stride: 4, max: true, expected: [4, 6] });
    // A window that would start in the right padding is dropped: ceil((6 + 2 − 2) / 4) + 1 = 3 windows, but the third starts at 7.
    await check({ kernel: 2, stride: 4, padding: 1, max: true, expected: [1, 5] });
  });

  it('pools a batch of size 0 to an empty batch', () => {
    const x = sn.zeros([0, 2, 4, 4], { device });
    expect(sn.maxPool2d(x, 2).shape).toEqual([0, 2, 2, 2]);
    expect(sn.avgPool2d(x, 3, { stride: 1, padding: 1 }).shape).toEqual([0, 2, 4, 4]);
    expect(sn.adaptiveAvgPool2d(x, [3, null]).shape).toEqual([0, 2, 3, 4]);
  });

  it('rejects bad inputs and options with errors naming the op and shapes', () => {
    const x = sn.zeros([1, 2, 5, 5], { device });
    const cases: [() => Tensor, RegExp][] = [
      [() => sn.maxPool2d(sn.zeros([1, 2, 5, 5], { dtype: 'int32', device }), 2), /^maxPool2d: expected a float input .*\[1, 2, 5, 5\] int32/],
      [() => sn.avgPool2d(sn.zeros([5, 5], { device }), 2), /^avgPool2d: expected a 3D \[C, H, W\] or 4D .*got \[5, 5\] float32/],
      [() => sn.maxPool2d(sn.zeros([1, 1, 1, 5, 5], { device }), 2), /^maxPool2d: expected a 3D .*\[1, 1, 1, 5, 5\]/],
      [() => sn.maxPool2d(sn.zeros([1, 0, 5, 5], { device }), 2), /^maxPool2d: .*non-zero C, H and W.*\[1, 0, 5, 5\]/],
      [() => sn.avgPool2d(sn.zeros([2, 5, 0], { device }), 2), /^avgPool2d: .*non-zero C, H and W.*\[2, 5, 0\]/],
      [() => sn.maxPool2d(x, 0), /^maxPool2d: kernelSize must be integers ≥ 1, got \[0, 0\]/],
      [() => sn.maxPool2d(x, [2, 1.5]), /^maxPool2d: kernelSize must be integers ≥ 1, got \[2, 1.5\]/],
      [() => sn.maxPool2d(x, [1, 2, 3]), /^maxPool2d: kernelSize must be a number or an \[h, w\] pair of numbers, got \[1,2,3\]/],
      [() => sn.avgPool2d(x, 2, { stride: [1, 0] }), /^avgPool2d: stride must be integers ≥ 1, got \[1, 0\]/],
      [() => sn.maxPool2d(x, 2, { dilation: 0 }), /^maxPool2d: dilation must be integers ≥ 1/],
      [() => sn.maxPool2d(x, 3, { padding: -1 }), /^maxPool2d: padding must be integers ≥ 0, got \[-1, -1\]/],
      [() => sn.maxPool2d(x, 3, { padding: [1, 2] }), /^maxPool2d: pad should be at most half of kernel size, but got padding \[1, 2\] with kernelSize \[3, 3\]/],
      // The rule is on the kernel size even when dilation widens the window (PyTorch's pool2d_shape_check).
      [() => sn.maxPool2d(x, 3, { padding: 2, dilation: 2 }), /^maxPool2d: pad should be at most half of kernel size/],
      [() => sn.avgPool2d(x, [2, 1], { padding: [1, 1] }), /^avgPool2d: pad should be at most half of kernel size, but got padding \[1, 1\] with kernelSize \[2, 1\]$/],
      [
        () => sn.maxPool2d(x, 3, { dilation: 3 }),
        /^maxPool2d: input \[1, 2, 5, 5\] float32 with kernelSize \[3, 3\], stride \[3, 3\], padding \[0, 0\], dilation \[3, 3\] gives output size \[0, 0\]: output size is too small$/,
      ],
      [() => sn.avgPool2d(sn.zeros([1, 2, 5], { device }), [3, 6]), /^avgPool2d: input \[1, 2, 5\] float32 .*gives output size \[0, 0\]: output size is too small/],
      [() => sn.maxPool2d(x, 2, { ceilMode: 'yes' as unknown as boolean }), /^maxPool2d: ceilMode must be a boolean/],
      [() => sn.avgPool2d(x, 2, { countIncludePad: 1 as unknown as boolean }), /^avgPool2d: countIncludePad must be a boolean/],
      [() => sn.avgPool2d(x, 2, { divisorOverride: 0 }), /^avgPool2d: divisorOverride must be a non-zero integer, got 0/],
      [() => sn.avgPool2d(x, 2, { divisorOverride: 1.5 }), /^avgPool2d: divisorOverride must be a non-zero integer, got 1.5/],
      [() => sn.adaptiveAvgPool2d(sn.zeros([1, 2, 5, 5], { dtype: 'uint8', device }), 2), /^adaptiveAvgPool2d: expected a float input .*uint8/],
      [() => sn.adaptiveAvgPool2d(sn.zeros([5, 5], { device }), 2), /^adaptiveAvgPool2d: expected a 3D .*got \[5, 5\] float32/],
      [() => sn.adaptiveAvgPool2d(sn.zeros([1, 2, 0, 5], { device }), 2), /^adaptiveAvgPool2d: .*non-zero H and W, got \[1, 2, 0, 5\]/],
      [() => sn.adaptiveAvgPool2d(x, [1, 2, 3]), /^adaptiveAvgPool2d: outputSize must be a number or an \[h, w\] pair/],
      [() => sn.adaptiveAvgPool2d(x, [2, -1]), /^adaptiveAvgPool2d: outputSize must be integers ≥ 0, got \[2, -1\]/],
      [() => sn.adaptiveAvgPool2d(x, 1.5), /^adaptiveAvgPool2d: outputSize must be integers ≥ 0, got \[1.5, 1.5\]/],
    ];
    for (const [run, message] of cases) expect(run).toThrow(message);
    expect(() => sn.maxPool2d(x, 2)).not.toThrow();
    expect(() => sn.maxPool2d(x, [1], { padding: [0], stride: [2] })).not.toThrow();
  });
});
