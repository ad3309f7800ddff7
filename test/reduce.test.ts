import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DType, Tensor } from '../src/index.js';
import { type TensorCase, makeTensor, propertyConfig, shapeArb, tensorCaseArb } from '../src/testing/index.js';
import type { ReduceAttrs } from '../src/ops/reduce.js';
import { cumsumOp, logSoftmaxOp, reduceOp, softmaxOp } from '../src/ops/reduce.js';
import { type OpDef, apply1, defineOp } from '../src/ops/op.js';
import type { WebGpuCaps } from '../src/kernels/wgsl/kernel.js';
import { WITH_WEBGPU, expectClose } from './helpers.js';
import { type Ref, castRef, ref, refOf } from './reference/core.js';
import {
  argmaxOf, argminOf, cumsumRef, dimsRef, maxOf, meanOf, minOf, prodInt32Of, prodOf, reduceRef, softmaxRef, sumOf, varOf,
} from './reference/reduce.js';

// Every result is computed in double and rounded once to its dtype, so the default per-dtype
// tolerances apply (float32 a few ulps, float16 half an ulp and a bit; ints and bool exact). The
// reference results are rounded to the output dtype too, so overflow to ±Infinity matches.

type DimArg = number | number[] | null | undefined;
type Form = 'positional' | 'options' | 'method';

/** A shape, a case of `dtype` on it, the dims as a user might write them (negative, unsorted, none) and a calling form. */
function reductionArb(dtype: DType, opts: { min?: number; max?: number; oneDim?: boolean } = {}) {
  return shapeArb({ minDim: 0, maxDim: 5 }).chain((shape) => {
    const r = shape.length;
    const all = Array.from({ length: r }, (_, i) => i);
    const dims: fc.Arbitrary<DimArg> = opts.oneDim
      ? fc.oneof(fc.constant(undefined), fc.constant(null), ...(r > 0 ? [fc.integer({ min: -r, max: r - 1 })] : []))
      : fc.tuple(fc.shuffledSubarray(all), fc.array(fc.boolean(), { minLength: r, maxLength: r }), fc.boolean()).chain(([sub, neg, bare]) => {
          const written = sub.map((d) => (neg[d] ? d - r : d));
          if (written.length === 0) return fc.constantFrom<DimArg>(undefined, null, []);
          return fc.constant<DimArg>(bare && written.length === 1 ? written[0]! : written);
        });
    const form = fc.constantFrom<Form>('positional', 'options', 'method');
    return fc.tuple(tensorCaseArb(shape, { dtype, min: opts.min, max: opts.max }), dims, fc.boolean(), form);
  });
}

/** Calls a reduction in the chosen form: f(x, dim, keepdim), f(x, { dim, keepdim }) or x.f(dim, keepdim). */
function call(name: string, x: Tensor, dim: DimArg, keepdim: boolean, form: Form): Tensor {
  const fn = (sn as unknown as Record<string, (x: Tensor, ...a: unknown[]) => Tensor>)[name]!;
  if (form === 'options') return fn(x, { dim, keepdim });
  if (form === 'method') return (x as unknown as Record<string, (...a: unknown[]) => Tensor>)[name]!(dim, keepdim);
  return fn(x, dim, keepdim);
}

function castAll(r: Ref, dtype: DType): Ref {
  return { shape: r.shape, data: r.data.map((v) => castRef(dtype, v)) };
}

/** Small whole numbers (many ties), with the occasional NaN in floats: for max/min/argmax/argmin. */
function tiesAndNaN(c: TensorCase): TensorCase {
  const float = c.dtype === 'float32' || c.dtype === 'float16';
  const f = (v: number) => (float ? (Math.round(v) === 4 ? NaN : Math.round(v)) : c.dtype === 'bool' ? v : Math.trunc(v / 5));
  return { ...c, values: c.values.map(f) };
}

const F: DType[] = ['float32', 'float16'];
const intToInt32 = (d: DType): DType => (d === 'float32' || d === 'float16' ? d : 'int32');
type Reduction = {
  name: string;
  fold: (v: number[], dtype: DType) => number;
  dtypes: DType[];
  out: (d: DType) => DType;
  values?: (c: TensorCase) => TensorCase;
  oneDim?: boolean;
  range?: [number, number];
};
const REDUCTIONS: Reduction[] = [
  { name: 'sum', fold: sumOf, dtypes: [...F, 'int32', 'int8', 'uint8', 'bool'], out: intToInt32 },
  { name: 'mean', fold: meanOf, dtypes: F, out: (d) => d },
  { name: 'prod', fold: (v, d) => (d === 'float32' || d === 'float16' ? prodOf(v) : prodInt32Of(v)), dtypes: [...F, 'int32', 'bool'], out: intToInt32, range: [-2, 2] },
  { name: 'max', fold: maxOf, dtypes: [...F, 'int32', 'int8', 'uint8', 'bool'], out: (d) => d, values: tiesAndNaN },
  { name: 'min', fold: minOf, dtypes: [...F, 'int32', 'int8', 'uint8', 'bool'], out: (d) => d, values: tiesAndNaN },
  { name: 'amax', fold: maxOf, dtypes: F, out: (d) => d, values: tiesAndNaN },
  { name: 'amin', fold: minOf, dtypes: F, out: (d) => d, values: tiesAndNaN },
  { name: 'argmax', fold: argmaxOf, dtypes: [...F, 'int32', 'bool'], out: () => 'int32', values: tiesAndNaN, oneDim: true },
  { name: 'argmin', fold: argminOf, dtypes: [...F, 'int32', 'bool'], out: () => 'int32', values: tiesAndNaN, oneDim: true },
];
// Every new shape compiles new WebGPU pipelines (shapes are baked into the WGSL), so the GPU runs
// fewer random cases.
const runs = (device: string, n: number) => (device === 'webgpu' ? Math.ceil(n / 2) : n);
const NO_IDENTITY = new Set(['max', 'min', 'amax', 'amin', 'argmax', 'argmin']);

describe.each(WITH_WEBGPU)('reductions on %s', (device) => {
  for (const op of REDUCTIONS) {
    it.each(op.dtypes)(`${op.name} over random dims matches the float64 reference (%s)`, async (dtype) => {
      const [min, max] = op.range ?? [undefined, undefined];
      await fc.assert(
        fc.asyncProperty(reductionArb(dtype, { min, max, oneDim: op.oneDim }), async ([c0, dim, keepdim, form]) => {
          const c = op.values ? op.values(c0) : c0;
          const dims = dimsRef(dim, c.shape.length);
          // Reductions without an identity reject empty groups (tested below).
          if (NO_IDENTITY.has(op.name) && dims.some((d) => c.shape[d] === 0)) return;
          const x = makeTensor(c, device);
          const y = call(op.name, x, dim, keepdim, form);
          const outDType = op.out(dtype);
          await expectClose(y, castAll(reduceRef(refOf(c), dims, keepdim, (v) => op.fold(v, dtype)), outDType), { dtype: outDType });
          x.dispose();
          y.dispose();
        }),
        propertyConfig({ numRuns: runs(device, 30) }),
      );
    });
  }

  it.each(F)('var and std match the reference with correction 0, 1, 2 and unbiased (%s)', async (dtype) => {
    const corr = fc.constantFrom<[object, number]>([{}, 1], [{ correction: 0 }, 0], [{ correction: 1 }, 1], [{ correction: 2 }, 2], [{ unbiased: false }, 0], [{ unbiased: true }, 1]);
    await fc.assert(
      fc.asyncProperty(reductionArb(dtype), corr, fc.constantFrom('var', 'std'), async ([c, dim, keepdim, form], [opts, correction], name) => {
        const x = makeTensor(c, device);
        const fn = name === 'var' ? sn.var : sn.std;
        const y = form === 'options' ? fn(x, { dim, keepdim, ...opts }) : form === 'method' ? x[name](dim, { keepdim, ...opts }) : fn(x, dim, { keepdim, ...opts });
        const f = (v: number[]) => (name === 'var' ? varOf(v, correction) : Math.sqrt(varOf(v, correction)));
        await expectClose(y, castAll(reduceRef(refOf(c), dimsRef(dim, c.shape.length), keepdim, f), dtype), { dtype });
        x.dispose();
        y.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 40) }),
    );
  });

  /** A random shape with a dim in [-rank, rank − 1] (0 for a 0-d tensor), a case on it and a calling form. */
  const alongDimArb = (dtype: DType) =>
    shapeArb({ minDim: 0, maxDim: 5 }).chain((shape) =>
      fc.tuple(tensorCaseArb(shape, { dtype }), shape.length ? fc.integer({ min: -shape.length, max: shape.length - 1 }) : fc.constant(0), fc.constantFrom<Form>('positional', 'options', 'method')),
    );
  const along = (name: 'softmax' | 'logSoftmax' | 'cumsum', x: Tensor, dim: number, form: Form): Tensor =>
    form === 'options' ? sn[name](x, { dim }) : form === 'method' ? x[name](dim) : sn[name](x, dim);

  for (const name of ['softmax', 'logSoftmax'] as const) {
    it.each(F)(`${name} matches the reference values along a random dim (%s)`, async (dtype) => {
      await fc.assert(
        fc.asyncProperty(alongDimArb(dtype), async ([c, dim, form]) => {
          const x = makeTensor(c, device);
          const y = along(name, x, dim, form);
          const d = c.shape.length ? (dim + c.shape.length) % c.shape.length : 0;
          await expectClose(y, castAll(softmaxRef(refOf(c), d, name === 'logSoftmax'), dtype), { dtype });
          x.dispose();
          y.dispose();
        }),
        propertyConfig({ numRuns: runs(device, 30) }),
      );
    });
  }

  it.each([...F, 'int32', 'bool'] as DType[])('cumsum matches the reference along a random dim (%s)', async (dtype) => {
    await fc.assert(
      fc.asyncProperty(alongDimArb(dtype), async ([c, dim, form]) => {
        const x = makeTensor(c, device);
        const y = along('cumsum', x, dim, form);
        const d = c.shape.length ? (dim + c.shape.length) % c.shape.length : 0;
        const out = intToInt32(dtype);
        await expectClose(y, castAll(cumsumRef(refOf(c), d), out), { dtype: out });
        x.dispose();
        y.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 30) }),
    );
  });

  it('softmax and logSoftmax stay finite for large inputs (the max is subtracted first)', async () => {
    const v = [1000, 1001, 1002, -1000];
    const x = sn.tensor(v, { device });
    await expectClose(sn.softmax(x, 0), castAll(softmaxRef(ref([4], v), 0, false), 'float32'));
    await expectClose(sn.logSoftmax(x, -1), castAll(softmaxRef(ref([4], v), 0, true), 'float32'));
    await expectClose(sn.logSoftmax(x, 0), ref([4], [-2.40760596444438, -1.40760596444438, -0.40760596444438, -2002.40760596444438]));
  });

  it('propagates NaN: max/min give NaN, argmax/argmin give the first NaN', async () => {
    const x = sn.tensor([1, NaN, 5, NaN, -2], { device });
    expect(await sn.max(x).item()).toBeNaN();
    expect(await x.amin(0).item()).toBeNaN();
    expect(await sn.argmax(x).item()).toBe(1);
    expect(await x.argmin().item()).toBe(1);
    expect(await sn.argmax(sn.tensor([3, 7, 7, 1], { device })).item()).toBe(1);
  });

  it('reduces over empty dims to the identity: sum 0, prod 1, mean NaN', async () => {
    const x = sn.zeros([2, 0, 3], { device });
    await expectClose(sn.sum(x, 1), ref([2, 3], [0, 0, 0, 0, 0, 0]));
    await expectClose(sn.prod(x, [1, 2], true), ref([2, 1, 1], [1, 1]));
    await expectClose(sn.mean(x), ref([], [NaN]));
    await expectClose(sn.max(x, 2), ref([2, 0], []));
  });

  it('handles 0-d tensors, where dim 0 / −1 reduce nothing', async () => {
    const s = sn.tensor(2.5, { device });
    await expectClose(sn.sum(s, 0), ref([], [2.5]));
    await expectClose(sn.mean(s, -1, true), ref([], [2.5]));
    await expectClose(sn.argmax(s, 0), ref([], [0]), { dtype: 'int32' });
    await expectClose(sn.softmax(s, 0), ref([], [1]));
    await expectClose(sn.cumsum(s, -1), ref([], [2.5]));
  });

  it('gives argmax/argmin without a dim and keepdim an all-ones shape (modern PyTorch)', async () => {
    const x = sn.tensor([[1, 9, 3], [4, 5, 9]], { device });
    await expectClose(sn.argmax(x, { keepdim: true }), ref([1, 1], [1]), { dtype: 'int32' });
    await expectClose(x.argmin(null, true), ref([1, 1], [0]), { dtype: 'int32' });
    await expectClose(x.argmax(1, { keepdim: true }), ref([2, 1], [1, 2]), { dtype: 'int32' });
  });

  it('max/min with a tensor argument are the elementwise maximum/minimum', async () => {
    const a = sn.tensor([[1, 5], [7, -2]], { device }), b = sn.tensor([3, 0], { device });
    await expectClose(sn.max(a, b), ref([2, 2], [3, 5, 7, 0]));
    await expectClose(a.min(b), ref([2, 2], [1, 0, 3, -2]));
  });

  it('keeps dtypes as documented and wraps integer sums and products modulo 2^32', async () => {
    const b = sn.tensor([true, true, false], { device });
    const i8 = sn.tensor([100, 100, 100], { dtype: 'int8', device });
    const h = sn.tensor([1.5, 2.5], { dtype: 'float16', device });
    expect([sn.sum(b).dtype, sn.sum(i8).dtype, sn.prod(b).dtype, sn.cumsum(i8, 0).dtype, sn.max(b).dtype, sn.sum(h).dtype, sn.var(h).dtype]).toEqual(['int32', 'int32', 'int32', 'int32', 'bool', 'float16', 'float16']);
    await expectClose(sn.sum(i8), ref([], [300]));
    await expectClose(sn.sum(sn.tensor([2 ** 30, 2 ** 30, 2 ** 30], { dtype: 'int32', device })), ref([], [-(2 ** 30)]));
    await expectClose(sn.prod(sn.tensor([65536, 65537, 3], { dtype: 'int32', device })), ref([], [3 * 65536]));
    await expectClose(sn.cumsum(sn.tensor([2 ** 31 - 1, 1], { dtype: 'int32', device }), 0), ref([2], [2 ** 31 - 1, -(2 ** 31)]));
  });

  it('computes var in two passes (no cancellation for a large mean)', async () => {
    // Σx²/n − mean² would lose the answer in double rounding (x² ≈ 2^60, whose ulp is 256).
    const x = sn.tensor([2 ** 30, 2 ** 30 + 128, 2 ** 30 + 256, 2 ** 30 + 384], { device });
    await expectClose(sn.var(x, { correction: 0 }), ref([], [20480]));
    await expectClose(x.std(0), ref([], [Math.sqrt(81920 / 3)]));
  });

  it('throws clear errors naming the op and the tensor', () => {
    const x = sn.zeros([2, 3], { device });
    const i = sn.zeros([2, 3], { dtype: 'int32', device });
    const e = sn.zeros([0, 3], { device });
    expect(() => sn.sum(x, 2)).toThrow(/^sum: dim 2 is out of range for tensor\(float32, \[2, 3\]\)/);
    expect(() => x.mean([0, -3])).toThrow(/^mean: dim -3 is out of range/);
    expect(() => sn.sum(x, [1, -1])).toThrow(/^sum: dim 1 appears more than once in dims \[1,-1\] for tensor\(float32, \[2, 3\]\)/);
    expect(() => sn.sum(x, 0.5)).toThrow(/^sum: dim 0.5 is out of range/);
    expect(() => sn.sum(x, 0, 'yes' as never)).toThrow(/^sum: keepdim must be a boolean/);
    expect(() => sn.sum(x, { dim: 0 }, true)).toThrow(/^sum: give keepdim either/);
    expect(() => sn.mean(i)).toThrow(/^mean: expects a float tensor, got \[2, 3\] int32/);
    expect(() => sn.var(i, 0)).toThrow(/^var: expects a float tensor, got \[2, 3\] int32/);
    expect(() => i.std()).toThrow(/^std: expects a float tensor/);
    expect(() => sn.var(x, { correction: 1, unbiased: true })).toThrow(/^var: give correction or unbiased, not both/);
    expect(() => sn.var(x, 0, { dim: 1 })).toThrow(/^var: give dim either/);
    expect(() => sn.softmax(i, 0)).toThrow(/^softmax: expects a float tensor, got \[2, 3\] int32/);
    expect(() => sn.logSoftmax(i, 0)).toThrow(/^logSoftmax: expects a float tensor/);
    expect(() => sn.softmax(x, undefined as never)).toThrow(/^softmax: dim is required/);
    expect(() => sn.cumsum(x, 2)).toThrow(/^cumsum: dim 2 is out of range for tensor\(float32, \[2, 3\]\)/);
    expect(() => sn.max(e, 0)).toThrow(/^max: cannot reduce \[0, 3\] float32 over dim 0 of size 0/);
    expect(() => e.min()).toThrow(/^min: cannot reduce \[0, 3\] float32 over dim 0 of size 0/);
    expect(() => sn.argmax(e)).toThrow(/^argmax: cannot reduce \[0, 3\] float32 over dim 0 of size 0/);
    expect(() => sn.argmax(x, [0, 1] as never)).toThrow(/^argmax: takes one dim \(a number\) or none, got dims \[0,1\] for tensor\(float32, \[2, 3\]\)/);
    expect(() => x.argmin({ dim: [0] as never })).toThrow(/^argmin: takes one dim/);
    expect(() => sn.sum(x, 'a' as never)).toThrow(/^sum: dim must be a number or an array of numbers/);
  });
});

// The WebGPU kernels choose their shape by adapter: on SwiftShader (where these tests run without a
// GPU) a workgroup is one 4-lane subgroup; GPUs get 256-invocation teams with trees in workgroup
// memory finished by subgroups, or without subgroups all in workgroup memory. These ops run the
// GPU shapes here by presenting the device as another adapter.
function asOnGpus<A>(op: OpDef<A>, caps: Partial<WebGpuCaps>): OpDef<A> {
  return defineOp<A>({ ...op, webgpu: (inputs, attrs, outputs, real) => op.webgpu!(inputs, attrs, outputs, { ...real, architecture: 'a gpu', ...caps }) });
}
const VARIANTS = [
  ['subgroups', {}],
  ['workgroup memory only', { subgroups: false }],
] as const;

/** A shape whose groups are mostly long enough for teams (> 16 elements), ≤ 2400 elements, and sorted dims to reduce. */
const longGroupsArb = (dtype: DType, opts: { oneDim?: boolean; values?: (c: TensorCase) => TensorCase } = {}) =>
  fc
    .array(fc.integer({ min: 1, max: 60 }), { minLength: 1, maxLength: 3 })
    .filter((s) => s.reduce((a, b) => a * b, 1) <= 2400)
    .chain((shape) => {
      const all = shape.map((_, i) => i);
      const dims = opts.oneDim ? fc.oneof(fc.constant(all), fc.integer({ min: 0, max: shape.length - 1 }).map((d) => [d])) : fc.subarray(all, { minLength: 1 });
      return fc.tuple(tensorCaseArb(shape, { dtype }).map(opts.values ?? ((c) => c)), dims, fc.boolean());
    });

describe.each(VARIANTS)('WebGPU reduction kernels as on GPUs (%s)', (_name, caps) => {
  const reduce = asOnGpus(reduceOp, caps);
  const run = (kind: ReduceAttrs['kind'], x: Tensor, dims: number[], keepdim: boolean, correction = 0) => apply1(reduce, [x], { kind, dims, keepdim, correction });
  const cases: { kind: ReduceAttrs['kind']; dtype: DType; fold: (v: number[]) => number; out: DType; oneDim?: boolean; values?: (c: TensorCase) => TensorCase }[] = [
    { kind: 'sum', dtype: 'float32', fold: sumOf, out: 'float32' },
    { kind: 'sum', dtype: 'int8', fold: sumOf, out: 'int32' },
    { kind: 'mean', dtype: 'float16', fold: meanOf, out: 'float16' },
    { kind: 'prod', dtype: 'int32', fold: prodInt32Of, out: 'int32' },
    { kind: 'max', dtype: 'float32', fold: maxOf, out: 'float32', values: tiesAndNaN },
    { kind: 'min', dtype: 'uint8', fold: minOf, out: 'uint8', values: tiesAndNaN },
    { kind: 'argmax', dtype: 'float32', fold: argmaxOf, out: 'int32', oneDim: true, values: tiesAndNaN },
    { kind: 'argmin', dtype: 'float16', fold: argminOf, out: 'int32', oneDim: true, values: tiesAndNaN },
    { kind: 'argmax', dtype: 'int32', fold: argmaxOf, out: 'int32', oneDim: true, values: tiesAndNaN },
    { kind: 'var', dtype: 'float32', fold: (v) => varOf(v, 1), out: 'float32' },
  ];
  for (const k of cases) {
    it(`${k.kind} (${k.dtype}) matches the float64 reference`, async () => {
      await fc.assert(
        fc.asyncProperty(longGroupsArb(k.dtype, k), async ([c, dims, keepdim]) => {
          const x = makeTensor(c, 'webgpu');
          const y = run(k.kind, x, dims, keepdim, k.kind === 'var' ? 1 : 0);
          await expectClose(y, castAll(reduceRef(refOf(c), dims, keepdim, k.fold), k.out), { dtype: k.out });
          x.dispose();
          y.dispose();
        }),
        propertyConfig({ numRuns: 6 }),
      );
    });
  }

  const rowsArb = (dtype: DType) => longGroupsArb(dtype).chain(([c]) => fc.tuple(fc.constant(c), fc.integer({ min: 0, max: c.shape.length - 1 })));
  for (const [name, op] of [['softmax', softmaxOp], ['logSoftmax', logSoftmaxOp]] as const) {
    it(`${name} matches the reference (float32, float16)`, async () => {
      const gpuOp = asOnGpus(op, caps);
      await fc.assert(
        fc.asyncProperty(fc.constantFrom<DType>('float32', 'float16').chain(rowsArb), async ([c, dim]) => {
          const x = makeTensor(c, 'webgpu');
          const y = apply1(gpuOp, [x], { dim });
          await expectClose(y, castAll(softmaxRef(refOf(c), dim, name === 'logSoftmax'), c.dtype), { dtype: c.dtype });
          x.dispose();
          y.dispose();
        }),
        propertyConfig({ numRuns: 8 }),
      );
    });
  }

  it('cumsum matches the reference (float32, float16, int32)', async () => {
    const gpuOp = asOnGpus(cumsumOp, caps);
    await fc.assert(
      fc.asyncProperty(fc.constantFrom<DType>('float32', 'float16', 'int32').chain(rowsArb), async ([c, dim]) => {
        const x = makeTensor(c, 'webgpu');
        const y = apply1(gpuOp, [x], { dim });
        // Running sums of up to 2400 floats in f32 (the CPU's are doubles): off by up to about n·2⁻²⁴·Σ|x|.
        const atol = c.dtype === 'float32' ? c.shape[dim]! * 2 ** -24 * c.values.reduce((a, v) => a + Math.abs(v), 0) : 0;
        await expectClose(y, castAll(cumsumRef(refOf(c), dim), c.dtype), { dtype: c.dtype, tol: c.dtype === 'float32' ? { atol } : {} });
        x.dispose();
        y.dispose();
      }),
      propertyConfig({ numRuns: 8 }),
    );
  });
});

describe.each([['as on SwiftShader', {}], ...VARIANTS] as const)('WebGPU reductions of many elements: chunks, then a pass combining them (%s)', (name, caps) => {
  const swiftShader = name === 'as on SwiftShader';
  const reduce = swiftShader ? reduceOp : asOnGpus(reduceOp, caps);
  const n = 20_011;
  const values = Array.from({ length: n }, (_, i) => ((i * 7919) % 1000) / 125 - 4); // on a grid in [-4, 4): sums have no rounding to hide
  const x = sn.tensor(values, { device: 'webgpu' });
  const full = (kind: ReduceAttrs['kind'], t: Tensor, correction = 0) => apply1(reduce, [t], { kind, dims: t.shape.map((_, i) => i), keepdim: false, correction });
  const one = (v: number) => ref([], [v]);
  // f32 partial sums (the CPU adds in double): off by at most about log2(n)·2⁻²⁴·Σ|x|.
  const sumTol = { atol: Math.log2(n) * 2 ** -24 * values.reduce((a, v) => a + Math.abs(v), 0) };

  it('sum, mean, var and std over 20011 float32', async () => {
    await expectClose(full('sum', x), one(sumOf(values)), { tol: sumTol });
    await expectClose(full('mean', x), one(meanOf(values)), { tol: { atol: sumTol.atol / n } });
    await expectClose(full('var', x, 1), one(varOf(values, 1)));
    await expectClose(full('std', x.reshape(1, n).t(), 0), one(Math.sqrt(varOf(values, 0))));
  });

  it('max, argmax and argmin with ties and a late NaN: NaN wins, ties give the first index', async () => {
    const ties = values.map((v) => Math.round(v));
    const t = sn.tensor(ties, { device: 'webgpu' });
    await expectClose(full('max', t), one(Math.max(...ties)));
    await expectClose(full('argmax', t), one(ties.indexOf(Math.max(...ties))), { dtype: 'int32' });
    await expectClose(full('argmin', t), one(ties.indexOf(Math.min(...ties))), { dtype: 'int32' });
    const nan = sn.tensor(ties.map((v, i) => (i === 15_000 || i === 17_000 ? NaN : v)), { device: 'webgpu' });
    await expectClose(full('max', nan), one(NaN));
    await expectClose(full('argmax', nan), one(15_000), { dtype: 'int32' });
    await expectClose(full('argmin', nan), one(15_000), { dtype: 'int32' });
  });

  it('int32 sums wrap and float16 results are rounded once (packed outputs)', async () => {
    const big = sn.full([n], 2 ** 20, { dtype: 'int32', device: 'webgpu' });
    await expectClose(full('sum', big), one(castRef('int32', n * 2 ** 20)), { dtype: 'int32' });
    const h = x.to('float16');
    const hv = Array.from(await h.data());
    await expectClose(full('mean', h), one(castRef('float16', meanOf(hv))), { dtype: 'float16' });
    await expectClose(full('sum', h.reshape(1, n)), one(castRef('float16', sumOf(hv))), { dtype: 'float16' });
  });
});
