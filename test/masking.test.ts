import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DType, Tensor } from '../src/index.js';
import { type TensorCase, makeTensor, propertyConfig, shapeArb, tensorCaseArb } from '../src/testing/index.js';
import { WITH_WEBGPU, expectClose } from './helpers.js';
import { type Ref, castRef, ref, refOf } from './reference/core.js';
import { dimsRef, reduceRef } from './reference/reduce.js';
import { alongDim, cumprodRow, logsumexpOf, triangleRef } from './reference/sort.js';

// Masks, float-class tests, any/all, logsumexp, cumprod, oneHot and the data-dependent selections
// against float64 references with PyTorch's semantics, on both backends.

const runs = (device: string, n: number) => (device === 'webgpu' ? Math.ceil(n / 2) : n);
const castAll = (r: Ref, dtype: DType): Ref => ({ shape: r.shape, data: r.data.map((v) => castRef(dtype, v)) });
const ALL: DType[] = ['float32', 'float16', 'int32', 'int8', 'uint8', 'bool'];
const isF = (d: DType) => d === 'float32' || d === 'float16';

/** Floats with NaN, ±∞ and zeros mixed in. */
function specials(c: TensorCase): TensorCase {
  if (!isF(c.dtype)) return c;
  const s = [NaN, Infinity, -Infinity, 0];
  return { ...c, values: c.values.map((v) => (Math.abs(v) > 3 ? s[Math.floor(Math.abs(v) * 997) % 4]! : v)) };
}
const caseArb = (dtype: DType, minRank = 0) =>
  shapeArb({ minRank, minDim: 0, maxDim: 5 }).chain((shape) =>
    fc.tuple(tensorCaseArb(shape, { dtype }).map(specials), shape.length ? fc.integer({ min: -shape.length, max: shape.length - 1 }) : fc.constant(0)),
  );
const norm = (dim: number, rank: number) => (rank ? (dim + rank) % rank : 0);

describe.each(WITH_WEBGPU)('masks and selections on %s', (device) => {
  it.each(ALL)('triu and tril keep their triangle for any diagonal, over batches of matrices (%s)', async (dtype) => {
    await fc.assert(
      fc.asyncProperty(caseArb(dtype, 2), fc.integer({ min: -6, max: 6 }), fc.boolean(), async ([c], diagonal, upper) => {
        const x = makeTensor(c, device);
        const y = upper ? (diagonal === 0 ? sn.triu(x) : x.triu(diagonal)) : sn.tril(x, { diagonal });
        await expectClose(y, triangleRef(refOf(c), upper, diagonal), { dtype, tol: { atol: 0, rtol: 0 } });
        x.dispose();
        y.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 12) }),
    );
  });

  it.each(['float32', 'float16', 'int32'] as DType[])('isnan, isinf, isfinite and nanToNum classify and replace (%s)', async (dtype) => {
    await fc.assert(
      fc.asyncProperty(caseArb(dtype), async ([c]) => {
        const x = makeTensor(c, device);
        const r = refOf(c);
        const big = dtype === 'float16' ? 65504 : 3.4028234663852886e38;
        const cases: [Tensor, (v: number) => number, DType][] = [
          [sn.isnan(x), (v) => +Number.isNaN(v), 'bool'],
          [x.isinf(), (v) => +(Math.abs(v) === Infinity), 'bool'],
          [sn.isfinite(x), (v) => +Number.isFinite(v), 'bool'],
          [sn.nanToNum(x), (v) => (Number.isNaN(v) ? 0 : v === Infinity ? big : v === -Infinity ? -big : v), dtype],
          [x.nanToNum({ nan: 1.5, posinf: 7, neginf: -7 }), (v) => castRef(dtype, Number.isNaN(v) ? 1.5 : v === Infinity ? 7 : v === -Infinity ? -7 : v), dtype],
        ];
        for (const [t, f, d] of cases) {
          await expectClose(t, ref(r.shape, r.data.map(f)), { dtype: d, tol: { atol: 0, rtol: 0 } });
          t.dispose();
        }
        x.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 12) }),
    );
  });

  it.each(['float32', 'int32', 'bool'] as DType[])('maskedFill writes the value (cast to x\'s dtype) where a broadcast mask holds (%s)', async (dtype) => {
    const arb = caseArb(dtype).chain(([c]) => fc.tuple(fc.constant(c), fc.array(fc.boolean(), { minLength: c.shape.at(-1) ?? 1, maxLength: c.shape.at(-1) ?? 1 }), fc.constantFrom(-2.5, 0, 1, 9)));
    await fc.assert(
      fc.asyncProperty(arb, async ([c, m, value]) => {
        const x = makeTensor(c, device);
        const mask = sn.tensor(m, { dtype: 'bool', device, shape: c.shape.length ? [m.length] : [] });
        const y = x.maskedFill(mask, value);
        const last = c.shape.at(-1) ?? 1;
        await expectClose(y, ref(c.shape, c.values.map((v, i) => (m[i % last] ? castRef(dtype, value) : v))), { dtype, tol: { atol: 0, rtol: 0 } });
        for (const t of [x, mask, y]) t.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 12) }),
    );
  });

  it.each(['float32', 'int32', 'bool'] as DType[])('any and all over random dims (empty groups: any false, all true) (%s)', async (dtype) => {
    await fc.assert(
      fc.asyncProperty(caseArb(dtype), fc.boolean(), async ([c, dim], keepdim) => {
        const zeroed = { ...c, values: c.values.map((v) => (Math.abs(v) < 2 ? 0 : v)) };
        const x = makeTensor(zeroed, device), d = norm(dim, c.shape.length);
        const a = sn.any(x, dim, keepdim), b = x.all(dim, { keepdim });
        const dims = dimsRef(dim, c.shape.length);
        await expectClose(a, reduceRef(refOf(zeroed), c.shape.length ? [d] : dims, keepdim, (v) => +v.some((e) => e !== 0)), { dtype: 'bool' });
        await expectClose(b, reduceRef(refOf(zeroed), c.shape.length ? [d] : dims, keepdim, (v) => +v.every((e) => e !== 0)), { dtype: 'bool' });
        const all = sn.any(x);
        expect(await all.item()).toBe(+zeroed.values.some((v) => v !== 0));
        for (const t of [x, a, b, all]) t.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 12) }),
    );
  });

  it.each(['float32', 'float16'] as DType[])('logsumexp is stable for large values and −∞ rows (%s)', async (dtype) => {
    await fc.assert(
      fc.asyncProperty(caseArb(dtype), fc.boolean(), async ([c, dim], keepdim) => {
        if (c.shape.length && c.shape[norm(dim, c.shape.length)] === 0) return;
        const scaled = { ...c, values: c.values.map((v) => castRef(dtype, v * 20)) };
        const x = makeTensor(scaled, device);
        const y = sn.logsumexp(x, dim, keepdim);
        await expectClose(y, castAll(reduceRef(refOf(scaled), dimsRef(dim, c.shape.length), keepdim, logsumexpOf), dtype), { dtype, tol: { atol: dtype === 'float16' ? 2e-2 : 1e-4 } });
        x.dispose();
        y.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 12) }),
    );
  });

  it.each(['float32', 'float16', 'int32', 'bool'] as DType[])('cumprod along a random dim (ints wrap as int32) (%s)', async (dtype) => {
    await fc.assert(
      fc.asyncProperty(caseArb(dtype), async ([c, dim]) => {
        const small = { ...c, values: c.values.map((v) => (isF(dtype) ? castRef(dtype, v / 2) : v)) };
        const x = makeTensor(small, device), d = norm(dim, c.shape.length);
        const y = sn.cumprod(x, dim);
        const out = isF(dtype) ? dtype : 'int32';
        await expectClose(y, castAll(alongDim(refOf(small), d, (row) => cumprodRow(row, !isF(dtype))), out), { dtype: out, tol: isF(dtype) ? { rtol: dtype === 'float16' ? 4e-3 : 1e-5, atol: 1e-6 } : {} });
        x.dispose();
        y.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 12) }),
    );
  });

  it.each(['int32', 'uint8'] as DType[])('oneHot encodes class indices and rejects out-of-range ones (%s)', async (dtype) => {
    await fc.assert(
      fc.asyncProperty(shapeArb({ maxRank: 3, minDim: 0 }).chain((s) => fc.tuple(fc.constant(s), fc.integer({ min: 1, max: 6 }))).chain(([s, n]) => fc.tuple(tensorCaseArb(s, { dtype, min: 0, max: n - 1 }), fc.constant(n))), async ([c, n]) => {
        const x = makeTensor(c, device);
        const y = sn.oneHot(x, n);
        await expectClose(y, ref([...c.shape, n], c.values.flatMap((v) => Array.from({ length: n }, (_, k) => +(k === v)))), { dtype: 'int32' });
        x.dispose();
        y.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 15) }),
    );
    const bad = sn.tensor([0, 3, 1], { dtype, device });
    await expect(async () => sn.oneHot(bad, 3).data()).rejects.toThrow(/oneHot: class index 3 at flat position 1 .* out of range for numClasses 3/);
  });

  it('where takes scalars on either side with PyTorch\'s result dtypes', async () => {
    const c = sn.tensor([true, false, true], { device });
    const i = sn.tensor([1, 2, 3], { dtype: 'int32', device }), h = sn.tensor([0.5, 1.5, 2.5], { dtype: 'float16', device });
    const cases: [Tensor, string, number[]][] = [
      [sn.where(c, 1, 0), 'int32', [1, 0, 1]],
      [sn.where(c, 1.5, 0), 'float32', [1.5, 0, 1.5]],
      [sn.where(c, i, 2.5), 'float32', [1, 2.5, 3]],
      [sn.where(c, -1, i), 'int32', [-1, 2, -1]],
      [sn.where(c, h, 2), 'float16', [0.5, 2, 2.5]],
      [i.where(c, 7), 'int32', [1, 7, 3]],
    ];
    for (const [t, dtype, values] of cases) expect([t.dtype, await t.toArray()]).toEqual([dtype, values]);
  });

  it('nonzero, maskedSelect and unique match PyTorch', async () => {
    const x = sn.tensor([[0, 2, NaN], [3, 0, 2]], { device });
    expect(await (await sn.nonzero(x)).toArray()).toEqual([[0, 1], [0, 2], [1, 0], [1, 2]]);
    expect((await sn.nonzero(sn.zeros([2, 0], { device }))).shape).toEqual([0, 2]);
    const mask = sn.tensor([true, false, true], { device });
    expect(await (await x.maskedSelect(mask)).toArray()).toEqual([0, NaN, 3, 2]);
    const u = await sn.unique(sn.tensor([3, 1, NaN, 3, 2, 1, NaN], { device }), { returnInverse: true, returnCounts: true });
    expect(await u.values.toArray()).toEqual([1, 2, 3, NaN, NaN]);
    expect(await u.inverse!.toArray()).toEqual([2, 0, 3, 2, 1, 0, 4]);
    expect(await u[2]!.toArray()).toEqual([2, 1, 2, 1, 1]);
    // Unique slices along a dim (PyTorch 1.13's results).
    const rows = await sn.unique(sn.tensor([[1, 3], [1, 2], [1, 3], [0, 5]], { device }), { dim: 0, returnInverse: true, returnCounts: true });
    expect([await rows.values.toArray(), await rows.inverse!.toArray(), await rows.counts!.toArray()]).toEqual([[[0, 5], [1, 2], [1, 3]], [2, 1, 2, 0], [1, 1, 2]]);
    const cols = await sn.unique(sn.tensor([[1, 2, 1], [3, 4, 3]], { device }), { dim: -1, returnInverse: true, returnCounts: true });
    expect([await cols.values.toArray(), await cols.inverse!.toArray(), await cols.counts!.toArray()]).toEqual([[[1, 2], [3, 4]], [0, 1, 0], [2, 1]]);
    const plain = await sn.tensor([[2, 2], [0, 5]], { dtype: 'int32', device }).unique();
    expect(plain.dtype).toBe('int32');
    expect(await plain.toArray()).toEqual([0, 2, 5]);
  });
});

describe('data-dependent shapes under jit', () => {
  it('throw a clear error for nonzero, maskedSelect and unique', async () => {
    const f = sn.jit((x: Tensor) => {
      void sn.nonzero(x);
      return x;
    });
    expect(() => f(sn.ones([2]))).toThrow(/nonzero: the shape of its result depends on the values .* cannot be traced by jit/);
    const g = sn.jit((x: Tensor) => sn.triu(sn.maskedFill(x, sn.isnan(x), 0), 1));
    expect(await (g(sn.tensor([[1, NaN], [3, 4]])) as Tensor).toArray()).toEqual([[0, 0], [0, 0]]);
  });
});
