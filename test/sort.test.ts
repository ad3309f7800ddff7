import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DType, Tensor } from '../src/index.js';
import { type TensorCase, makeTensor, propertyConfig, shapeArb, tensorCaseArb } from '../src/testing/index.js';
import { WITH_WEBGPU, expectClose } from './helpers.js';
import { ref, refOf } from './reference/core.js';
import { alongDim, sortOrder } from './reference/sort.js';

// sort, argsort, topk and kthvalue against a stable float64 reference with PyTorch's order (NaN
// largest), on values with many ties and NaNs so that stability and NaN placement are exercised.
// Values and indices are exact (they are input elements and positions), so the comparison is exact.

const DTYPES: DType[] = ['float32', 'float16', 'int32', 'int8', 'uint8', 'bool'];
const runs = (device: string, n: number) => (device === 'webgpu' ? Math.ceil(n / 2) : n);

/** Small whole values (many ties) with NaN and ±∞ in floats. */
function ties(c: TensorCase): TensorCase {
  const float = c.dtype === 'float32' || c.dtype === 'float16';
  const special = [NaN, Infinity, -Infinity, -0];
  return { ...c, values: c.values.map((v) => (float ? (Math.abs(v) > 3.5 ? special[Math.floor(Math.abs(v) * 1000) % 4]! : Math.round(v)) : v)) };
}

const caseArb = (dtype: DType) =>
  shapeArb({ minDim: 0, maxDim: 7 }).chain((shape) =>
    fc.tuple(tensorCaseArb(shape, { dtype, min: -4, max: 4 }).map(ties), shape.length ? fc.integer({ min: -shape.length, max: shape.length - 1 }) : fc.constant(0), fc.boolean()),
  );
const norm = (dim: number, rank: number) => (rank ? (dim + rank) % rank : 0);

describe.each(WITH_WEBGPU)('sorting on %s', (device) => {
  it.each(DTYPES)('sort and argsort are stable, NaN last ascending and first descending (%s)', async (dtype) => {
    await fc.assert(
      fc.asyncProperty(caseArb(dtype), fc.constantFrom('positional', 'options', 'method'), async ([c, dim, descending], form) => {
        const x = makeTensor(c, device);
        const [values, indices] = form === 'options' ? sn.sort(x, { dim, descending, stable: true }) : form === 'method' ? x.sort(dim, descending) : sn.sort(x, dim, descending);
        const d = norm(dim, c.shape.length);
        const r = refOf(c);
        await expectClose(indices, alongDim(r, d, (row) => sortOrder(row, descending)), { dtype: 'int32' });
        await expectClose(values, alongDim(r, d, (row) => sortOrder(row, descending).map((i) => row[i]!)), { dtype, tol: { atol: 0, rtol: 0 } });
        const a = x.argsort({ dim, descending });
        await expectClose(a, alongDim(r, d, (row) => sortOrder(row, descending)), { dtype: 'int32' });
        for (const t of [x, values, indices, a]) t.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 16) }),
    );
  });

  it.each(['float32', 'int32'] as DType[])('topk gives the k largest or smallest in order, kthvalue the k-th smallest (%s)', async (dtype) => {
    const arb = caseArb(dtype).chain(([c, dim, largest]) => {
      const n = c.shape.length ? c.shape[norm(dim, c.shape.length)]! : 1;
      return fc.tuple(fc.constant(c), fc.constant(dim), fc.constant(largest), fc.integer({ min: c.shape.length ? 0 : 1, max: n }), fc.boolean());
    });
    await fc.assert(
      fc.asyncProperty(arb, async ([c, dim, largest, k, keepdim]) => {
        const x = makeTensor(c, device), d = norm(dim, c.shape.length), r = refOf(c);
        const top = sn.topk(x, k, { dim, largest });
        await expectClose(top.indices, alongDim(r, d, (row) => sortOrder(row, largest).slice(0, k), k), { dtype: 'int32' });
        await expectClose(top.values, alongDim(r, d, (row) => sortOrder(row, largest).slice(0, k).map((i) => row[i]!), k), { dtype });
        if (k >= 1) {
          const [v, i] = x.kthvalue(k, dim, keepdim);
          const kth = alongDim(r, d, (row) => [sortOrder(row, false)[k - 1]!], 1);
          const kv = alongDim(r, d, (row) => [row[sortOrder(row, false)[k - 1]!]!], 1);
          const squeeze = (s: number[]) => (keepdim || c.shape.length === 0 ? s : s.filter((_, j) => j !== d));
          await expectClose(i, ref(squeeze(kth.shape), kth.data), { dtype: 'int32' });
          await expectClose(v, ref(squeeze(kv.shape), kv.data), { dtype });
          v.dispose();
          i.dispose();
        }
        for (const t of [x, top.values, top.indices]) t.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 16) }),
    );
  });

  it('matches PyTorch on a fixed case with ties and NaN', async () => {
    const x = sn.tensor([3, NaN, 1, 3, -Infinity, 1], { device });
    const [v, i] = sn.sort(x, { descending: true });
    expect(await v.toArray()).toEqual([NaN, 3, 3, 1, 1, -Infinity]);
    expect(await i.toArray()).toEqual([1, 0, 3, 2, 5, 4]);
    const t = x.topk(2, -1, false);
    expect(await t.values.toArray()).toEqual([-Infinity, 1]);
    expect(await t.indices.toArray()).toEqual([4, 2]);
    expect(await sn.kthvalue(x, 6).values.item()).toBeNaN();
  });

  it('sorts rows longer than 2048 (a bitonic network on WebGPU) stably, along a strided dim', async () => {
    const n = 2100;
    const values = Array.from({ length: 2 * n }, (_, i) => (i % 97 === 5 ? NaN : i % 89 === 3 ? -0 : ((i * 7919) % 61) - 30));
    const base = sn.tensor(values, { device, shape: [n, 2] });
    const c = { shape: [n, 2], dtype: 'float32' as DType, values, layout: { kind: 'contiguous' as const } };
    for (const descending of [false, true]) {
      const [v, i] = sn.sort(base, { dim: 0, descending });
      await expectClose(i, alongDim(refOf(c), 0, (row) => sortOrder(row, descending)), { dtype: 'int32' });
      await expectClose(v, alongDim(refOf(c), 0, (row) => sortOrder(row, descending).map((k) => row[k]!)), { tol: { atol: 0, rtol: 0 } });
    }
    const ints = sn.tensor(values.map((x) => (Number.isNaN(x) ? 7 : x)), { device, dtype: 'int32', shape: [2, n] });
    const top = sn.topk(ints, 5, -1, false);
    const row0 = values.slice(0, n).map((x) => (Number.isNaN(x) ? 7 : x));
    expect(await top.indices.select(0, 0).toArray()).toEqual(sortOrder(row0, false).slice(0, 5));
  });

  it('rejects bad k and dims with the op named', () => {
    const x = sn.zeros([2, 3], { device });
    expect(() => sn.topk(x, 4)).toThrow(/topk: k must be an integer in \[0, 3\]/);
    expect(() => sn.kthvalue(x, 0, 0)).toThrow(/kthvalue: k must be an integer in \[1, 2\]/);
    expect(() => sn.sort(x, 2)).toThrow(/sort: dim 2 is out of range/);
  });
});

describe('sorting under jit', () => {
  it('traces sort and topk like any other op', async () => {
    const f = sn.jit((x: Tensor) => {
      const s = sn.sort(x, -1, true);
      const t = sn.topk(x, 2);
      return [s.values, t.indices];
    });
    const x = sn.tensor([[4, 1, 9], [2, 8, 2]]);
    const [v, i] = f(x) as Tensor[];
    expect(await v!.toArray()).toEqual([[9, 4, 1], [8, 2, 2]]);
    expect(await i!.toArray()).toEqual([[2, 0], [1, 0]]);
  });
});
