import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DType, Tensor } from '../src/index.js';
import { type TensorCase, makeTensor, propertyConfig, shapeArb, tensorCaseArb } from '../src/testing/index.js';
import { WITH_WEBGPU, expectClose, capsVariants, withCaps } from './helpers.js';
import { type Ref, refOf } from './reference/core.js';
import { batchNormRef, groupNormRef, instanceNormRef, layerNormRef } from './reference/norm.js';
import { layerNormOp } from '../src/ops/norm.js';

// Statistics and the affine step are computed in double and rounded once to the input's dtype, so the
// default per-dtype TOLERANCE applies.
const F: DType[] = ['float32', 'float16'];

/**
 * WebGPU computes in f32: the statistics are accurate to a few ulps, but the affine step n·w + b
 * (|n·w| and |b| up to ~16 here) often cancels to a small result, whose absolute error is then a
 * few f32 ulps of the terms (2e-6 seen), not of the result: float32 gets atol 1e-5 there. float16's
 * own rounding dominates, so it keeps its tolerance.
 */
const tol = (device: string, dtype: DType) => (device === 'webgpu' && dtype === 'float32' ? { atol: 1e-5 } : {});

// Every new shape compiles a new WebGPU pipeline (shapes are baked into the WGSL), so the GPU runs
// fewer random cases to keep this file quick (a float16 normalisation kernel compiles in ~0.3 s on SwiftShader).
const runs = (device: string, n: number) => (device === 'webgpu' ? Math.ceil(n / 3) : n);

/** A test tensor with values spread over [min, max] (default ±4) and a random layout. */
const caseArb = (shape: number[], dtype: DType, [min, max]: [number, number] = [-4, 4]): fc.Arbitrary<TensorCase> => tensorCaseArb(shape, { dtype, min, max });

/** An optional parameter of `shape`, in either float dtype (whatever the input's). */
const paramArb = (shape: number[]): fc.Arbitrary<TensorCase | null> =>
  fc.option(fc.constantFrom<DType>('float32', 'float16').chain((d) => caseArb(shape, d)), { nil: null, freq: 4 });

/** Running statistics of `shape` (variances ≥ 0), in either float dtype. */
const statsArb = (shape: number[]): fc.Arbitrary<[TensorCase, TensorCase]> =>
  fc.tuple(fc.constantFrom<DType>('float32', 'float16'), fc.constantFrom<DType>('float32', 'float16')).chain(([dm, dv]) =>
    fc.tuple(caseArb(shape, dm), caseArb(shape, dv, [0, 3])),
  );

const epsArb = fc.constantFrom(1e-5, 1e-3, 0.5);

/** [N, C, ...spatial] with up to `maxSpatialRank` spatial dims. */
const channelShapeArb = (channels: fc.Arbitrary<number>, maxSpatialRank = 2): fc.Arbitrary<number[]> =>
  fc.tuple(fc.integer({ min: 1, max: 3 }), channels, shapeArb({ maxRank: maxSpatialRank, maxDim: 5 })).map(([n, c, s]) => [n, c, ...s]);

const tensorOf = (c: TensorCase | null, device: sn.DeviceName): Tensor | null => (c ? makeTensor(c, device) : null);
const refOrNull = (c: TensorCase | null): Ref | null => (c ? refOf(c) : null);


/** An [N, C, ...] input with per-channel running statistics, optional affine parameters and an eps. */
const perChannelArb = (dtype: DType) =>
  channelShapeArb(fc.integer({ min: 1, max: 4 })).chain((shape) => {
    const c = [shape[1]!];
    return fc.tuple(caseArb(shape, dtype), statsArb(c), paramArb(c), paramArb(c), epsArb);
  });

describe.each(WITH_WEBGPU)('normalisation on %s', (device) => {
  it.each(F)('batchNorm (inference) matches the per-channel reference (%s)', async (dtype) => {
    const arb = perChannelArb(dtype);
    await fc.assert(
      fc.asyncProperty(arb, async ([cx, [cm, cv], cw, cb, eps]) => {
        const [x, m, v, w, b] = [makeTensor(cx, device), makeTensor(cm, device), makeTensor(cv, device), tensorOf(cw, device), tensorOf(cb, device)];
        const y = sn.batchNorm(x, m, v, w, b, { eps });
        await expectClose(y, batchNormRef(refOf(cx), refOf(cm), refOf(cv), refOrNull(cw), refOrNull(cb), eps), { dtype, tol: tol(device, dtype) });
        for (const t of [x, m, v, w, b, y]) t?.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 40) }),
    );
  });

  it.each(F)('layerNorm matches the trailing-dims reference (%s)', async (dtype) => {
    const arb = shapeArb({ minRank: 1, maxRank: 4, maxDim: 5 }).chain((shape) =>
      fc.integer({ min: 1, max: shape.length }).chain((k) => {
        const ns = shape.slice(shape.length - k);
        return fc.tuple(fc.constant(k), caseArb(shape, dtype), paramArb(ns), paramArb(ns), epsArb, fc.boolean());
      }),
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([k, cx, cw, cb, eps, positionalEps]) => {
        const [x, w, b] = [makeTensor(cx, device), tensorOf(cw, device), tensorOf(cb, device)];
        const ns = cx.shape.slice(cx.shape.length - k);
        const y = sn.layerNorm(x, k === 1 && positionalEps ? ns[0]! : ns, w, b, positionalEps ? eps : { eps });
        await expectClose(y, layerNormRef(refOf(cx), k, refOrNull(cw), refOrNull(cb), eps), { dtype, tol: tol(device, dtype) });
        for (const t of [x, w, b, y]) t?.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 40) }),
    );
  });

  it.each(F)('groupNorm matches the channel-group reference (%s)', async (dtype) => {
    const arb = fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 })).chain(([groups, per]) =>
      channelShapeArb(fc.constant(groups * per)).chain((shape) =>
        fc.tuple(fc.constant(groups), caseArb(shape, dtype), paramArb([shape[1]!]), paramArb([shape[1]!]), epsArb, fc.boolean()),
      ),
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([groups, cx, cw, cb, eps, positionalEps]) => {
        const [x, w, b] = [makeTensor(cx, device), tensorOf(cw, device), tensorOf(cb, device)];
        const y = sn.groupNorm(x, groups, w, b, positionalEps ? eps : { eps });
        await expectClose(y, groupNormRef(refOf(cx), groups, refOrNull(cw), refOrNull(cb), eps), { dtype, tol: tol(device, dtype) });
        for (const t of [x, w, b, y]) t?.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 40) }),
    );
  });

  it.each(F)('instanceNorm with input statistics matches the per-(n, c) reference (%s)', async (dtype) => {
    const shapes = channelShapeArb(fc.integer({ min: 1, max: 4 })).filter((s) => s.slice(2).reduce((a, d) => a * d, 1) > 1);
    const arb = shapes.chain((shape) => fc.tuple(caseArb(shape, dtype), paramArb([shape[1]!]), paramArb([shape[1]!]), epsArb));
    await fc.assert(
      fc.asyncProperty(arb, async ([cx, cw, cb, eps]) => {
        const [x, w, b] = [makeTensor(cx, device), tensorOf(cw, device), tensorOf(cb, device)];
        const y = sn.instanceNorm(x, { weight: w, bias: b, eps });
        await expectClose(y, instanceNormRef(refOf(cx), refOrNull(cw), refOrNull(cb), eps), { dtype, tol: tol(device, dtype) });
        for (const t of [x, w, b, y]) t?.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 40) }),
    );
  });

  it.each(F)('instanceNorm with running statistics matches the per-channel reference (%s)', async (dtype) => {
    const arb = perChannelArb(dtype);
    await fc.assert(
      fc.asyncProperty(arb, async ([cx, [cm, cv], cw, cb, eps]) => {
        const [x, m, v, w, b] = [makeTensor(cx, device), makeTensor(cm, device), makeTensor(cv, device), tensorOf(cw, device), tensorOf(cb, device)];
        const y = sn.instanceNorm(x, { runningMean: m, runningVar: v, weight: w, bias: b, useInputStats: false, eps });
        await expectClose(y, batchNormRef(refOf(cx), refOf(cm), refOf(cv), refOrNull(cw), refOrNull(cb), eps), { dtype, tol: tol(device, dtype) });
        for (const t of [x, m, v, w, b, y]) t?.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 25) }),
    );
  });

  // On WebGPU a team of invocations shares each row, sized by the row's length (a whole workgroup for
  // long rows, subgroups where the device has them) and by the adapter; packed float16 rows of odd
  // length put two rows in a workgroup at least.
  it.each(F)('layerNorm, groupNorm and instanceNorm over long rows and many rows match the reference, in every kernel variant (%s)', async (dtype) => {
    const shapes = fc.oneof(fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 17, max: 5000 })), fc.tuple(fc.integer({ min: 200, max: 400 }), fc.integer({ min: 1, max: 40 })));
    const arb = shapes.chain(([rows, L]) => fc.tuple(caseArb([rows, L], dtype), paramArb([L]), paramArb([L]), epsArb));
    const [gx, ix] = fc.sample(fc.tuple(caseArb([2, 4, 33, 31], dtype), caseArb([1, 3, 45, 47], dtype)), { numRuns: 1, seed: 1 })[0]!;
    for (const caps of capsVariants(device)) {
      const what = `with caps ${JSON.stringify(caps)}`;
      await withCaps(caps, async () => {
        const [x, y] = [makeTensor(gx, device), makeTensor(ix, device)];
        const [g, i] = [sn.groupNorm(x, 2), sn.instanceNorm(y)];
        await expectClose(g, groupNormRef(refOf(gx), 2, null, null, 1e-5), { dtype, tol: tol(device, dtype), what: `groupNorm ${what}` });
        await expectClose(i, instanceNormRef(refOf(ix), null, null, 1e-5), { dtype, tol: tol(device, dtype), what: `instanceNorm ${what}` });
        for (const t of [x, y, g, i]) t.dispose();
        await fc.assert(
          fc.asyncProperty(arb, async ([cx, cw, cb, eps]) => {
            const [x, w, b] = [makeTensor(cx, device), tensorOf(cw, device), tensorOf(cb, device)];
            const y = sn.layerNorm(x, cx.shape[1]!, w, b, eps);
            await expectClose(y, layerNormRef(refOf(cx), 1, refOrNull(cw), refOrNull(cb), eps), { dtype, tol: tol(device, dtype), what: `layerNorm ${what}` });
            for (const t of [x, w, b, y]) t?.dispose();
          }),
          propertyConfig({ numRuns: runs(device, 18) }),
        );
      });
    }
  });

  it('normalises known values and keeps empty batches empty', async () => {
    const x = sn.tensor([[1, 2, 3, 6]], { device });
    // mean 3, biased variance 3.5
    const s = Math.sqrt(3.5 + 1e-5);
    await expectClose(sn.layerNorm(x, 4), { shape: [1, 4], data: Float64Array.from([-2 / s, -1 / s, 0, 3 / s]) });
    // groups [1, 2] (mean 1.5, variance 0.25) and [3, 6] (mean 4.5, variance 2.25)
    const g = [-0.5 / Math.sqrt(0.25 + 1e-5), 0.5 / Math.sqrt(0.25 + 1e-5), -1.5 / Math.sqrt(2.25 + 1e-5), 1.5 / Math.sqrt(2.25 + 1e-5)];
    await expectClose(sn.groupNorm(x.reshape([1, 4, 1]), 2), { shape: [1, 4, 1], data: Float64Array.from(g) });
    expect(sn.layerNorm(sn.zeros([0, 3], { device }), [3]).shape).toEqual([0, 3]);
    expect(sn.groupNorm(sn.zeros([0, 4, 2], { device }), 2).shape).toEqual([0, 4, 2]);
    expect(sn.batchNorm(sn.zeros([0, 2], { device }), sn.zeros([2], { device }), sn.ones([2], { device }), null, null, { training: false }).shape).toEqual([0, 2]);
  });

  it('rejects bad inputs and options with errors naming the op and shapes', () => {
    const x = sn.zeros([2, 4, 3], { device });
    const c4 = sn.zeros([4], { device }), c3 = sn.zeros([3], { device });
    const int = sn.zeros([2, 4, 3], { dtype: 'int32', device });
    const cases: [() => Tensor, RegExp][] = [
      [() => sn.batchNorm(int, c4, c4), /^batchNorm: expected a float input \(float32 or float16\), got \[2, 4, 3\] int32/],
      [() => sn.batchNorm(sn.zeros([4], { device }), c4, c4), /^batchNorm: expected an input of rank ≥ 2 \(\[N, C, \.\.\.\]\), got \[4\] float32/],
      [() => sn.batchNorm(x, c3, c4), /^batchNorm: expected runningMean of shape \[4\] \(one value per channel of input \[2, 4, 3\] float32\), got \[3\] float32/],
      [() => sn.batchNorm(x, c4, sn.zeros([1, 4], { device })), /^batchNorm: expected runningVar of shape \[4\] .*got \[1, 4\] float32/],
      [() => sn.batchNorm(x, c4, c4, c3), /^batchNorm: expected weight of shape \[4\] .*got \[3\] float32/],
      [() => sn.batchNorm(x, c4, c4, null, c3), /^batchNorm: expected bias of shape \[4\] .*got \[3\] float32/],
      [() => sn.batchNorm(x, sn.zeros([4], { dtype: 'int32', device }), c4), /^batchNorm: runningMean must be a float tensor .*got \[4\] int32/],
      [() => sn.batchNorm(x, c4, c4, null, null, { training: true }), /^batchNorm: training: true is not supported; only inference \(training: false\)/],
      [() => sn.batchNorm(x, c4, c4, null, null, { eps: NaN }), /^batchNorm: eps must be a finite non-negative number/],
      [() => sn.batchNorm(x, c4, c4, 1 as unknown as Tensor), /^batchNorm: weight must be a Tensor or null, got number/],
      [() => sn.batchNorm(x, null as unknown as Tensor, c4), /^batchNorm: argument 1 must be a Tensor, got null/],
      [() => sn.layerNorm(int, 3), /^layerNorm: expected a float input .*int32/],
      [() => sn.layerNorm(x, []), /^layerNorm: normalizedShape must be a non-empty list of non-negative integers, got \[\]/],
      [() => sn.layerNorm(x, [1.5]), /^layerNorm: normalizedShape must be a non-empty list/],
      [() => sn.layerNorm(x, 'x' as unknown as number), /^layerNorm: normalizedShape must be a number or a list of numbers/],
      [() => sn.layerNorm(x, 4), /^layerNorm: normalizedShape \[4\] must equal the trailing dims of input \[2, 4, 3\] float32/],
      [() => sn.layerNorm(x, [1, 2, 4, 3]), /^layerNorm: normalizedShape \[1, 2, 4, 3\] must equal the trailing dims/],
      [() => sn.layerNorm(x, [4, 3], sn.zeros([3, 4], { device })), /^layerNorm: expected weight of shape \[4, 3\] \(normalizedShape\), got \[3, 4\] float32/],
      [() => sn.layerNorm(x, [3], null, c4), /^layerNorm: expected bias of shape \[3\] \(normalizedShape\), got \[4\] float32/],
      [() => sn.layerNorm(x, [3], null, null, -1), /^layerNorm: eps must be a finite non-negative number, got -1/],
      [() => sn.groupNorm(int, 2), /^groupNorm: expected a float input .*int32/],
      [() => sn.groupNorm(sn.zeros([4], { device }), 2), /^groupNorm: expected an input of rank ≥ 2/],
      [() => sn.groupNorm(x, 3), /^groupNorm: input \[2, 4, 3\] float32 has 4 channels, which is not divisible by numGroups 3/],
      [() => sn.groupNorm(x, 0), /^groupNorm: numGroups must be a positive integer, got 0/],
      [() => sn.groupNorm(x, 1.5), /^groupNorm: numGroups must be a positive integer, got 1.5/],
      [() => sn.groupNorm(x, 2, c3), /^groupNorm: expected weight of shape \[4\] \(one value per channel of input \[2, 4, 3\] float32\), got \[3\]/],
      [() => sn.groupNorm(x, 2, c4, c3), /^groupNorm: expected bias of shape \[4\]/],
      [() => sn.instanceNorm(int), /^instanceNorm: expected a float input .*int32/],
      [() => sn.instanceNorm(sn.zeros([4], { device })), /^instanceNorm: expected an input of rank ≥ 2/],
      [() => sn.instanceNorm(sn.zeros([2, 4, 1], { device })), /^instanceNorm: expected more than 1 spatial element .*\[2, 4, 1\] float32/],
      [() => sn.instanceNorm(x, { runningMean: c4, runningVar: c4 }), /^instanceNorm: updating runningMean\/runningVar from input statistics is training/],
      [() => sn.instanceNorm(x, { useInputStats: false, runningMean: c4 }), /^instanceNorm: useInputStats: false needs both runningMean and runningVar/],
      [() => sn.instanceNorm(x, { useInputStats: 'no' as unknown as boolean }), /^instanceNorm: useInputStats must be a boolean/],
      [() => sn.instanceNorm(x, { useInputStats: false, runningMean: c3, runningVar: c4 }), /^instanceNorm: expected runningMean of shape \[4\] .*got \[3\]/],
      [() => sn.instanceNorm(x, { useInputStats: false, runningMean: c4, runningVar: c3 }), /^instanceNorm: expected runningVar of shape \[4\]/],
      [() => sn.instanceNorm(x, { weight: c3 }), /^instanceNorm: expected weight of shape \[4\]/],
      [() => sn.instanceNorm(x, { bias: sn.zeros([4], { dtype: 'int8', device }) }), /^instanceNorm: bias must be a float tensor .*\[4\] int8/],
      [() => sn.instanceNorm(x, { eps: Infinity }), /^instanceNorm: eps must be a finite non-negative number/],
    ];
    for (const [run, message] of cases) expect(run).toThrow(message);
  });

  it('checks the input count against the attrs (for callers of the op definitions)', () => {
    const meta = { shape: [2, 4], dtype: 'float32' as DType };
    expect(() => layerNormOp.infer([meta, { shape: [4], dtype: 'float32' }], { normalizedShape: [4], eps: 1e-5, hasWeight: false, hasBias: false })).toThrow(
      /^layerNorm: expected 1 tensor inputs for these attrs, got 2/,
    );
  });
});
