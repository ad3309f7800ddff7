import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DType, Tensor } from '../src/index.js';
import { GEMM_BLOCKS } from '../src/kernels/cpu/gemm.js';
import { TOLERANCES, broadcastShapesArb, makeTensor, propertyConfig, shapeArb, tensorCaseArb } from '../src/testing/index.js';
import { WITH_WEBGPU, expectClose, GEMM_KERNELS, withGemmKernel } from './helpers.js';
import { castRef, ref, refOf } from './reference/core.js';
import { type ProductRef, accumulationAtol, linearRef, matmulRef } from './reference/linalg.js';

const isInt = (d: DType) => d === 'int32' || d === 'int8' || d === 'uint8';

/**
 * Float results: the output dtype's rounding on the tensor's backend (TOLERANCES) plus the summation error bound of
 * `accumulationAtol`; integer results are exact after wrapping to the dtype, as in PyTorch.
 */
async function expectProduct(t: Tensor, r: ProductRef, k: number, dtype: DType, what?: string): Promise<void> {
  if (isInt(dtype)) return expectClose(t, ref(r.out.shape, r.out.data.map((v) => castRef(dtype, v))), { dtype, what });
  await expectClose(t, r.out, { dtype, what, tol: { atol: TOLERANCES[t.device][dtype].atol + accumulationAtol(k, r.mag) } });
}

// Every new shape compiles a new WebGPU pipeline (shapes are baked into the WGSL), so the GPU runs
// fewer random cases; the tile edges of its kernels are crossed by the fixed cases further down.
const runs = (device: string, n: number) => (device === 'webgpu' ? Math.ceil(n / 4) : n);

const size = fc.integer({ min: 1, max: 9 });
/** A 1-D operand a quarter of the time. */
const vec = fc.integer({ min: 0, max: 3 }).map((v) => v === 0);

/** Operand shapes for a @ b: M, N, K in 1..9, broadcast batch dims (up to 2, sizes 1..3), sometimes 1-D. */
const matmulShapesArb = fc
  .record({ m: size, n: size, k: size, batch: broadcastShapesArb(2, { maxRank: 2, maxDim: 3 }), aVec: vec, bVec: vec })
  .map(({ m, n, k, batch: [, ba, bb], aVec, bVec }) => ({ k, a: aVec ? [k] : [...ba!, m, k], b: bVec ? [k] : [...bb!, k, n] }));

const PAIRS: [DType, DType, DType][] = [
  ['float32', 'float32', 'float32'],
  ['float16', 'float16', 'float16'],
  ['float16', 'float32', 'float32'],
  ['int32', 'float16', 'float16'],
  ['int32', 'int32', 'int32'],
  ['int8', 'int8', 'int8'],
  ['uint8', 'uint8', 'uint8'],
];

describe.each(WITH_WEBGPU)('matmul on %s', (device) => {
  it.each(PAIRS)('%s @ %s → %s matches the float64 reference (batch broadcast, 1-D operands, strided views)', async (da, db, out) => {
    const arb = matmulShapesArb.chain(({ k, a, b }) => fc.tuple(fc.constant(k), tensorCaseArb(a, { dtype: da }), tensorCaseArb(b, { dtype: db })));
    await fc.assert(
      fc.asyncProperty(arb, async ([k, ca, cb]) => {
        const a = makeTensor(ca, device), b = makeTensor(cb, device);
        const y = sn.matmul(a, b);
        await expectProduct(y, matmulRef(refOf(ca), refOf(cb)), k, out);
        for (const t of [a, b, y]) t.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 40) }),
    );
  });

  it('computes a known product, a 0-d dot product and 1-D promotion shapes', async () => {
    const a = sn.tensor([[1, 2], [3, 4]], { device }), b = sn.tensor([[5, 6], [7, 8]], { device });
    await expectClose(a.matmul(b), ref([2, 2], [19, 22, 43, 50]));
    const v = sn.tensor([1, -1], { device });
    await expectClose(sn.matmul(v, v), ref([], [2]));
    await expectClose(sn.matmul(v, a), ref([2], [-2, -2]));
    await expectClose(sn.matmul(a, v), ref([2], [-1, -1]));
    expect(sn.matmul(sn.zeros([2, 1, 3, 4], { device }), sn.zeros([5, 4, 6], { device })).shape).toEqual([2, 5, 3, 6]);
    expect(sn.matmul(sn.zeros([4], { device }), sn.zeros([2, 4, 6], { device })).shape).toEqual([2, 6]);
    expect(sn.matmul(sn.zeros([2, 3, 4], { device }), sn.zeros([4], { device })).shape).toEqual([2, 3]);
  });

  it('gives zeros for an empty inner dim and an empty result for an empty outer dim', async () => {
    await expectClose(sn.matmul(sn.ones([3, 0], { device }), sn.ones([0, 4], { device })), ref([3, 4], new Array(12).fill(0)));
    expect(sn.matmul(sn.ones([0, 3], { device }), sn.ones([3, 4], { device })).shape).toEqual([0, 4]);
  });

  it('crosses every cache block and register tile edge of the GEMM', async () => {
    const { mc, kc, nc } = GEMM_BLOCKS;
    const [m, k, n] = [mc + 3, kc + 3, nc + 5];
    const a = sn.randn([m, k], { seed: 1, device }), b = sn.randn([k, n], { seed: 2, device });
    const ra = ref(a.shape, await a.data()), rb = ref(b.shape, await b.data());
    const expected = matmulRef(ra, rb);
    await expectProduct(sn.matmul(a, b), expected, k, 'float32', 'contiguous');
    // The same operands stored transposed, read through transposed views.
    const at = a.t().contiguous().t(), bt = b.t().contiguous().t();
    await expectProduct(sn.matmul(at, bt), expected, k, 'float32', 'transposed views');
    // One row (the unpacked path) and a batch that folds into one GEMM.
    await expectProduct(sn.matmul(a.slice(0, 0, 1), b), matmulRef(ref([1, k], ra.data.slice(0, k)), rb), k, 'float32', 'one row');
    const a2 = sn.randn([2, 5, k], { seed: 3, device });
    await expectProduct(sn.matmul(a2, b), matmulRef(ref(a2.shape, await a2.data()), rb), k, 'float32', 'batched');
  });

  it('stacks batches of single rows whose batch stride is not their row stride', async () => {
    // [3, 1, 4] sliced from [3, 2, 4]: batch stride 8, row stride 4; b is shared by every batch.
    const a = sn.arange(24, { device }).reshape(3, 2, 4).slice(1, 1, 2), b = sn.arange(8, { device }).reshape(4, 2);
    const expected = matmulRef(ref([3, 1, 4], [4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23]), ref([4, 2], [0, 1, 2, 3, 4, 5, 6, 7]));
    await expectProduct(sn.matmul(a, b), expected, 4, 'int32');
  });

  it('mm, bmm, mv, dot and the Tensor methods agree with matmul', async () => {
    const arb = fc.tuple(size, size, size, fc.integer({ min: 1, max: 3 })).chain(([m, n, k, bs]) =>
      fc.tuple(tensorCaseArb([bs, m, k]), tensorCaseArb([bs, k, n]), tensorCaseArb([m, k]), tensorCaseArb([k, n]), tensorCaseArb([k]), tensorCaseArb([k])),
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([c3a, c3b, c2a, c2b, c1a, c1b]) => {
        const [a3, b3, a2, b2, v1, w1] = [c3a, c3b, c2a, c2b, c1a, c1b].map((c) => makeTensor(c, device)) as Tensor[];
        const k = c1a.shape[0]!;
        const cases: [Tensor, ProductRef][] = [
          [sn.mm(a2!, b2!), matmulRef(refOf(c2a), refOf(c2b))],
          [a2!.mm(b2!), matmulRef(refOf(c2a), refOf(c2b))],
          [sn.bmm(a3!, b3!), matmulRef(refOf(c3a), refOf(c3b))],
          [a3!.bmm(b3!), matmulRef(refOf(c3a), refOf(c3b))],
          [sn.mv(a2!, v1!), matmulRef(refOf(c2a), refOf(c1a))],
          [a2!.mv(v1!), matmulRef(refOf(c2a), refOf(c1a))],
          [sn.dot(v1!, w1!), matmulRef(refOf(c1a), refOf(c1b))],
          [v1!.dot(w1!), matmulRef(refOf(c1a), refOf(c1b))],
        ];
        for (const [t, r] of cases) await expectProduct(t, r, k, 'float32');
      }),
      propertyConfig({ numRuns: runs(device, 20) }),
    );
  });

  it('rejects operands that cannot be multiplied, naming both shapes', () => {
    const z = (shape: number[], dtype: DType = 'float32') => sn.zeros(shape, { dtype, device });
    expect(() => sn.matmul(z([]), z([3]))).toThrow(/^matmul: both arguments need at least 1 dim, got \[\] float32 and \[3\] float32/);
    expect(() => sn.matmul(z([2, 3]), z([4, 5]))).toThrow(/^matmul: cannot multiply \[2, 3\] float32 by \[4, 5\] float32: the last dim of the first \(3\) must equal the second-to-last dim of the second \(4\)/);
    expect(() => sn.matmul(z([2, 3]), z([4]))).toThrow(/^matmul: cannot multiply \[2, 3\] float32 by \[4\] float32: .* the size of the second \(4\)/);
    expect(() => sn.matmul(z([2, 2, 3]), z([3, 3, 4]))).toThrow(/^matmul: batch dims \[2\] of \[2, 2, 3\] float32 and \[3\] of \[3, 3, 4\] float32 cannot be broadcast together/);
    expect(() => sn.matmul(z([2, 2], 'bool'), z([2, 2]))).toThrow(/^matmul: bool tensors are not supported, got \[2, 2\] bool/);
    expect(() => sn.matmul(z([2, 2]), 3 as unknown as Tensor)).toThrow(/^matmul: argument 1 must be a Tensor, got number/);
  });

  it('rejects wrong ranks and sizes in the strict forms', () => {
    const z = (...shape: number[]) => sn.zeros(shape, { device });
    expect(() => sn.mm(z(2, 2, 2), z(2, 2))).toThrow(/^mm: expects two 2-D matrices, got tensor\(float32, \[2, 2, 2\]\) and tensor\(float32, \[2, 2\]\)/);
    expect(() => sn.mm(z(2, 3), z(2, 3))).toThrow(/^mm: cannot multiply \[2, 3\] float32 by \[2, 3\] float32/);
    expect(() => sn.bmm(z(2, 2), z(2, 2))).toThrow(/^bmm: expects two 3-D tensors/);
    expect(() => sn.bmm(z(2, 3, 4), z(1, 4, 5))).toThrow(/^bmm: batch sizes differ: tensor\(float32, \[2, 3, 4\]\) and tensor\(float32, \[1, 4, 5\]\)/);
    expect(() => sn.mv(z(2, 3), z(3, 1))).toThrow(/^mv: expects a 2-D matrix and a 1-D vector/);
    expect(() => sn.mv(z(2, 3), z(2))).toThrow(/^mv: cannot multiply/);
    expect(() => sn.dot(z(3), z(4))).toThrow(/^dot: cannot multiply \[3\] float32 by \[4\] float32/);
    expect(() => sn.dot(z(3, 1), z(3))).toThrow(/^dot: expects two 1-D tensors/);
  });
});

describe.each(WITH_WEBGPU)('linear on %s', (device) => {
  it.each(['float32', 'float16'] as DType[])('matches x @ weightᵀ + bias (%s, any leading dims, strided views)', async (dtype) => {
    const arb = fc
      .record({ lead: shapeArb({ maxRank: 2, maxDim: 4 }), inF: size, outF: size })
      .chain(({ lead, inF, outF }) =>
        fc.tuple(tensorCaseArb([...lead, inF], { dtype }), tensorCaseArb([outF, inF], { dtype }), fc.option(tensorCaseArb([outF], { dtype }), { nil: null })),
      );
    await fc.assert(
      fc.asyncProperty(arb, async ([cx, cw, cb]) => {
        const x = makeTensor(cx, device), w = makeTensor(cw, device), b = cb ? makeTensor(cb, device) : null;
        const y = sn.linear(x, w, b);
        await expectProduct(y, linearRef(refOf(cx), refOf(cw), cb ? refOf(cb) : null), cw.shape[1]!, dtype);
        for (const t of [x, w, b, y]) t?.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 40) }),
    );
  });

  it('handles large shapes (one row, many rows) and an empty inner dim', async () => {
    const { kc, nc } = GEMM_BLOCKS;
    const w = sn.randn([nc + 5, kc + 3], { seed: 4, device }), b = sn.randn([nc + 5], { seed: 5, device });
    const rw = ref(w.shape, await w.data()), rb = ref(b.shape, await b.data());
    for (const rows of [1, 9]) {
      const x = sn.randn([rows, kc + 3], { seed: 6, device });
      await expectProduct(sn.linear(x, w, b), linearRef(ref(x.shape, await x.data()), rw, rb), kc + 3, 'float32', `${rows} rows`);
    }
    await expectClose(sn.linear(sn.ones([2, 0], { device }), sn.ones([3, 0], { device }), sn.tensor([1, 2, 3], { device })), ref([2, 3], [1, 2, 3, 1, 2, 3]));
  });

  it('rejects bad weights, feature counts and biases', () => {
    const z = (...shape: number[]) => sn.zeros(shape, { device });
    expect(() => sn.linear(z(2, 3), z(3))).toThrow(/^linear: weight must be 2-D \[out_features, in_features\], got \[3\] float32/);
    expect(() => sn.linear(z(2, 3), z(4, 5))).toThrow(/^linear: input \[2, 3\] float32 has 3 features in its last dim but weight \[4, 5\] float32 expects 5/);
    expect(() => sn.linear(z(2, 3), z(4, 3), z(3))).toThrow(/^linear: bias must be 1-D of size out_features \(4\), got \[3\] float32/);
    expect(() => sn.linear(sn.tensor(1, { device }), z(4, 1))).toThrow(/^linear: input must have at least 1 dim, got \[\] float32/);
    expect(() => sn.linear(z(2, 3), sn.zeros([4, 3], { dtype: 'bool', device }))).toThrow(/^linear: bool tensors are not supported/);
  });
});


describe.each(GEMM_KERNELS)('the WebGPU GEMM kernel %s', (kind) => {
  const device = 'webgpu';
  const host = async (t: Tensor) => ref(t.shape, await t.data());

  // Shapes overhanging every tile (64×64 outputs, k tiles of 16, 8×8 register tiles, vec4 groups), through each load path.
  it('matches the float64 reference at tile edges, on every load path', () =>
    withGemmKernel(kind, async () => {
      const r = (shape: number[], seed: number, dtype: DType = 'float32') => sn.randn(shape, { seed, device, dtype });
      const ri = (shape: number[], seed: number, dtype: DType) => sn.randint(-5, 5, shape, { seed, device, dtype });
      const cases: [string, Tensor, Tensor, DType][] = [
        ['unaligned rows (scalar loads)', r([33, 17], 1), r([17, 70], 2), 'float32'],
        ['aligned rows (vec4 along k of A and along n of B)', r([64, 68], 3), r([68, 100], 4), 'float32'],
        ['transposed views (vec4 along m of A and along k of B)', r([68, 72], 5).t(), r([100, 68], 6).t(), 'float32'],
        ['a broadcast batch', r([2, 1, 40, 36], 7), r([3, 36, 44], 8), 'float32'],
        ['float16 with an odd column count (packed by a second pass)', r([40, 20], 9, 'float16'), r([20, 33], 10, 'float16'), 'float16'],
        ['int8 with k ≥ 256 (wrapping)', ri([40, 300], 11, 'int8'), ri([300, 36], 12, 'int8'), 'int8'],
        ['uint8 with an odd column count', ri([33, 20], 13, 'uint8'), ri([20, 35], 14, 'uint8'), 'uint8'],
        ['int32 transposed', ri([20, 48], 15, 'int32').t(), ri([20, 40], 16, 'int32'), 'int32'],
        ['a matrix-vector product', r([70, 40], 17), r([40], 18), 'float32'],
      ];
      for (const [what, a, b, dtype] of cases) {
        const y = sn.matmul(a, b);
        await expectProduct(y, matmulRef(await host(a), await host(b)), a.shape[a.ndim - 1]!, dtype, what);
        for (const t of [a, b, y]) t.dispose();
      }
      for (const [dtype, rows, outF] of [['float32', 50, 45], ['float16', 37, 33]] as const) {
        const x = r([rows, 36], 20, dtype), w = r([outF, 36], 21, dtype), bias = r([outF], 22, dtype), y = sn.linear(x, w, bias);
        await expectProduct(y, linearRef(await host(x), await host(w), await host(bias)), 36, dtype, `linear ${dtype}`);
        for (const t of [x, w, bias, y]) t.dispose();
      }
    }));
});
