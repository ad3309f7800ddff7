import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { makeTensor, propertyConfig, tensorCaseArb } from '../src/testing/index.js';
import { WITH_WEBGPU, expectClose } from './helpers.js';
import { type Ref, ref, refOf } from './reference/core.js';
import { conv1dRef, conv3dRef, einsumRef, pool1dRef } from './reference/einsum.js';

// einsum (diagonals, ellipsis, implicit outputs, upper-case letters) and the other PyTorch ops of
// issue 11 against float64 references, on both backends. float32 results go through f32 matmuls and
// sums: 1e-4 relative, 1e-5 absolute.

const TOL = { rtol: 1e-4, atol: 1e-5 };
const runs = (device: string, n: number) => (device === 'webgpu' ? Math.ceil(n / 2) : n);
const data = (shape: number[], seed: number, device: sn.DeviceName) => sn.randn(shape, { seed, device });
const refOfTensor = async (t: Tensor): Promise<Ref> => ref(t.shape, await t.data());

/** Equations with their operand shapes (letter sizes drawn below). */
const EQUATIONS: [string, string[]][] = [
  ['ij,jk->ik', ['ij', 'jk']],
  ['bij,bjk->bik', ['bij', 'bjk']],
  ['ii->i', ['ii']],
  ['ii', ['ii']],
  ['iij->j', ['iij']],
  ['ij,ij->', ['ij', 'ij']],
  ['i,j->ij', ['i', 'j']],
  ['ij->ji', ['ij']],
  ['...ij,...jk->...ik', ['...ij', '...jk']],
  ['b...d,bd', ['b...d', 'bd']],
  ['bhqd,bhkd->bhqk', ['bhqd', 'bhkd']],
  ['Ab,bC,Ca->A', ['Ab', 'bC', 'Ca']],
  ['iji->j', ['iji']],
];

describe.each(WITH_WEBGPU)('PyTorch ops on %s', (device) => {
  it('einsum matches enumeration over every letter, with diagonals, ellipsis and broadcasting', async () => {
    const arb = fc.tuple(fc.constantFrom(...EQUATIONS), fc.dictionary(fc.constantFrom(...'ijkbhqdACa'), fc.integer({ min: 1, max: 4 })), fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 2, maxLength: 2 }), fc.boolean());
    await fc.assert(
      fc.asyncProperty(arb, async ([[eq, terms], sizes, ell, bcast]) => {
        const shapes = terms.map((t) => [...t].map((l) => sizes[l] ?? 2));
        // '...' stands for `ell` dims (one of them 1 in the second operand when broadcasting).
        terms.forEach((t, i) => {
          if (!t.includes('...')) return;
          const at = t.indexOf('...');
          const before = [...t.slice(0, at)].map((l) => sizes[l] ?? 2), after = [...t.slice(at + 3)].map((l) => sizes[l] ?? 2);
          shapes[i] = [...before, ...ell.map((n, j) => (bcast && i === 1 && j === 0 ? 1 : n)), ...after];
        });
        const cases = await Promise.all(shapes.map((s) => fc.sample(tensorCaseArb(s), { numRuns: 1, seed: s.length * 7 + 1 })[0]!));
        const xs = cases.map((c) => makeTensor(c, device));
        const y = sn.einsum(eq, ...xs);
        await expectClose(y, einsumRef(eq, cases.map(refOf)), { tol: TOL });
        for (const t of [...xs, y]) t.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 24) }),
    );
  });

  it('einsum rejects bad equations naming the op', () => {
    const a = sn.zeros([2, 3], { device });
    expect(() => sn.einsum('ij,jk', a)).toThrow(/einsum: equation 'ij,jk' names 2 operands but 1 were given/);
    expect(() => sn.einsum('ijk', a)).toThrow(/einsum: operand 0 \('ijk'\) has 3 subscripts but is tensor\(float32, \[2, 3\]\)/);
    expect(() => sn.einsum('ii', a)).toThrow(/einsum: subscript 'i' has size 2 in one operand and 3 in operand 0/);
    expect(() => sn.einsum('ij->k', a)).toThrow(/einsum: output subscript 'k'/);
    expect(() => sn.einsum('i1', a)).toThrow(/subscripts are letters/);
  });

  it('select, unbind, roll, diag, diagonal, outer, addmm and baddbmm', async () => {
    const x = sn.tensor([[1, 2, 3], [4, 5, 6]], { device });
    expect(await x.select(1, -1).toArray()).toEqual([3, 6]);
    expect(await Promise.all(sn.unbind(x, 1).map((t) => t.toArray()))).toEqual([[1, 4], [2, 5], [3, 6]]);
    expect(await sn.roll(x, 1).toArray()).toEqual([[6, 1, 2], [3, 4, 5]]);
    expect(await x.roll([1, -1], [0, 1]).toArray()).toEqual([[5, 6, 4], [2, 3, 1]]);
    expect(await sn.diag(sn.tensor([1, NaN], { device }), 1).toArray()).toEqual([[0, 1, 0], [0, 0, NaN], [0, 0, 0]]);
    expect(await sn.diag(sn.tensor([1, 2], { device }), -1).toArray()).toEqual([[0, 0, 0], [1, 0, 0], [0, 2, 0]]);
    expect(await sn.diag(x, 1).toArray()).toEqual([2, 6]);
    expect(await x.diagonal({ offset: -1 }).toArray()).toEqual([4]);
    expect(await sn.outer(sn.tensor([1, 2], { device }), sn.tensor([3, 4, 5], { device })).toArray()).toEqual([[3, 4, 5], [6, 8, 10]]);
    const a = data([3, 4], 1, device), b = data([4, 2], 2, device), c = data([2], 3, device);
    const want = (await refOfTensor(sn.add(sn.mul(c, 0.5), sn.mul(sn.mm(a, b), 2))));
    await expectClose(sn.addmm(c, a, b, { beta: 0.5, alpha: 2 }), want, { tol: TOL });
    await expectClose(sn.addmm(sn.full([2], NaN, { device }), a, b, { beta: 0 }), await refOfTensor(sn.mm(a, b)), { tol: TOL });
    const ba = data([2, 3, 4], 4, device), bb = data([2, 4, 5], 5, device);
    await expectClose(c.reshape([1, 1, 2]).narrow(2, 0, 1).baddbmm(ba, bb), await refOfTensor(sn.add(sn.bmm(ba, bb), c.narrow(0, 0, 1))), { tol: TOL });
  });

  it('erfinv inverts erf across (−1, 1), with ±∞ at ±1 and NaN outside', async () => {
    const v = [-1, -0.999999, -0.9, -0.5, -1e-6, 0, 0.3, 0.7, 0.99, 0.9999, 1, 1.5, NaN];
    const y = sn.erfinv(sn.tensor(v, { device }));
    // torch.erfinv in float64 of the float32-rounded inputs (PyTorch 1.13).
    const want = [-Infinity, -3.4570747260298265, -1.163087071945772, -0.4769362762044699, -8.862269232154821e-7, 0, 0.2724627261055238, 0.7328690598827589, 1.8213866009002788, 2.751035437903344, Infinity, NaN, NaN];
    await expectClose(y, ref([v.length], want), { tol: { rtol: 2e-5, atol: 1e-6 } });
  });

  it('conv1d, maxPool1d and avgPool1d match loops over the sequence (batched and not, groups, dilation)', async () => {
    const arb = fc.record({ n: fc.integer({ min: 1, max: 2 }), g: fc.integer({ min: 1, max: 2 }), cg: fc.integer({ min: 1, max: 3 }), og: fc.integer({ min: 1, max: 2 }), l: fc.integer({ min: 4, max: 9 }), k: fc.integer({ min: 1, max: 3 }), stride: fc.integer({ min: 1, max: 2 }), dil: fc.integer({ min: 1, max: 2 }), pad: fc.integer({ min: 0, max: 1 }), bias: fc.boolean(), unbatched: fc.boolean() });
    await fc.assert(
      fc.asyncProperty(arb, async ({ n, g, cg, og, l, k, stride, dil, pad, bias, unbatched }) => {
        const c = g * cg, o = g * og;
        const x = data([n, c, l], n + l, device), w = data([o, cg, k], k + o, device), b = bias ? data([o], 9, device) : null;
        const want = conv1dRef(await refOfTensor(x), await refOfTensor(w), b ? Array.from(await b.data()) : null, stride, pad, dil, g);
        const got = unbatched ? sn.conv1d(x.select(0, 0), w, b, { stride, padding: pad, dilation: dil, groups: g }).unsqueeze(0) : sn.conv1d(x, w, b, { stride, padding: [pad], dilation: dil, groups: g });
        await expectClose(got, unbatched ? { shape: want.shape.map((d, i) => (i === 0 ? 1 : d)), data: want.data.slice(0, want.data.length / n) } : want, { tol: TOL });
        const pk = Math.min(k + 1, 3), pp = Math.min(pad, Math.floor(pk / 2));
        await expectClose(sn.maxPool1d(x, pk, { stride, padding: pp }), pool1dRef(await refOfTensor(x), 'max', pk, stride, pp), { tol: TOL });
        await expectClose(sn.avgPool1d(x, [pk], { stride: [stride], padding: pp }), pool1dRef(await refOfTensor(x), 'avg', pk, stride, pp), { tol: TOL });
      }),
      propertyConfig({ numRuns: runs(device, 10) }),
    );
  });

  it('conv3d matches loops over depth, height and width (groups, stride, padding, dilation, unbatched)', async () => {
    const cases: [number[], number[], number, number, number, number][] = [
      [[1, 2, 4, 5, 3], [3, 2, 2, 3, 1], 1, 1, 1, 1],
      [[2, 4, 5, 4, 4], [2, 2, 3, 2, 2], 2, 1, 1, 2],
      [[1, 1, 6, 3, 3], [1, 1, 2, 2, 2], 1, 2, 2, 1],
    ];
    for (const [xs, ws, s, p, d, g] of cases) {
      const x = data(xs, xs[2]!, device), w = data(ws, ws[0]!, device), b = data([ws[0]!], 7, device);
      const want = conv3dRef(await refOfTensor(x), await refOfTensor(w), Array.from(await b.data()), s, p, d, g);
      await expectClose(sn.conv3d(x, w, b, { stride: s, padding: [p, p, p], dilation: d, groups: g }), want, { tol: TOL });
    }
    const x = data([2, 3, 3, 3], 1, device), w = data([1, 2, 1, 1, 1], 2, device);
    expect(sn.conv3d(x, w).shape).toEqual([1, 3, 3, 3]);
  });

  it('embeddingBag sums, means and maxima of bags as PyTorch 1.13 does (offsets, empty bags, weights, padding)', async () => {
    const w = sn.arange(12, { device }).reshape([6, 2]).to('float32');
    const input = sn.tensor([1, 2, 4, 5, 4, 3, 2, 0], { dtype: 'int32', device }), offsets = sn.tensor([0, 3, 3, 6], { dtype: 'int32', device });
    const bag = (o: sn.EmbeddingBagOptions, x = input) => sn.embeddingBag(x, w, { offsets, ...o }).toArray();
    expect(await bag({ mode: 'sum' })).toEqual([[14, 17], [0, 0], [24, 27], [4, 6]]);
    expect(await bag({})).toEqual([[14 / 3, 17 / 3].map(Math.fround), [0, 0], [8, 9], [2, 3]]);
    expect(await bag({ mode: 'max' })).toEqual([[8, 9], [0, 0], [10, 11], [4, 5]]);
    expect(await bag({ mode: 'sum', perSampleWeights: sn.arange(8, { device }).to('float32') })).toEqual([[20, 23], [0, 0], [92, 104], [24, 37]]);
    expect(await bag({ mode: 'sum', offsets: sn.tensor([0, 3, 8], { dtype: 'int32', device }), includeLastOffset: true })).toEqual([[14, 17], [28, 33]]);
    expect(await bag({ paddingIdx: 4 })).toEqual([[3, 4], [0, 0], [8, 9], [2, 3]]);
    expect(await sn.embeddingBag(sn.tensor([[0, 2], [5, 5]], { dtype: 'int32', device }), w).toArray()).toEqual([[2, 3], [10, 11]]);
    const module = new sn.nn.EmbeddingBag(6, 2, { mode: 'max', device });
    module.loadStateDict({ weight: w });
    expect(await module.forward(input, offsets).toArray()).toEqual([[8, 9], [0, 0], [10, 11], [4, 5]]);
    expect(String(module)).toBe("EmbeddingBag(6, 2, mode='max')");
  });

  it('pixelShuffle and pixelUnshuffle move channels into r×r blocks and back', async () => {
    const x = sn.arange(2 * 8 * 2 * 3, { device }).reshape([2, 8, 2, 3]).to('float32');
    const y = sn.pixelShuffle(x, 2);
    expect(y.shape).toEqual([2, 2, 4, 6]);
    // out[n][c][h·r + i][w·r + j] = x[n][c·r² + i·r + j][h][w]
    const xv = (await x.toArray()) as number[][][][], yv = (await y.toArray()) as number[][][][];
    expect(yv[1]![1]![3]![4]).toBe(xv[1]![1 * 4 + 1 * 2 + 0]![1]![2]);
    expect(await sn.pixelUnshuffle(y, 2).toArray()).toEqual(xv);
    expect(() => sn.pixelShuffle(sn.zeros([1, 3, 2, 2], { device }), 2)).toThrow(/pixelShuffle: expects \[\.\.\., C·4, H, W\]/);
  });

  it('normalize, cosineSimilarity and rmsNorm follow their formulas; dropout scales what it keeps', async () => {
    const x = data([3, 5], 11, device), y = data([1, 5], 12, device);
    const xr = await refOfTensor(x), yr = await refOfTensor(y);
    const rows = (r: Ref) => Array.from({ length: r.shape[0]! }, (_, i) => Array.from(r.data.slice(i * 5, i * 5 + 5)));
    const norm = (v: number[], p: number) => (p === Infinity ? Math.max(...v.map(Math.abs)) : v.reduce((a, b) => a + Math.abs(b) ** p, 0) ** (1 / p));
    for (const p of [1, 2, 3, Infinity]) {
      await expectClose(sn.normalize(x, { p, dim: -1 }), ref([3, 5], rows(xr).flatMap((v) => v.map((e) => e / Math.max(norm(v, p), 1e-12)))), { tol: TOL });
    }
    const yv = rows(yr)[0]!;
    await expectClose(sn.cosineSimilarity(x, y, { dim: 1 }), ref([3], rows(xr).map((v) => v.reduce((a, e, i) => a + (e / norm(v, 2)) * (yv[i]! / norm(yv, 2)), 0))), { tol: TOL });
    expect(await sn.cosineSimilarity(sn.zeros([1, 3], { device }), sn.ones([1, 3], { device })).toArray()).toEqual([0]);
    const w = data([5], 13, device), wv = Array.from(await w.data());
    await expectClose(sn.rmsNorm(x, 5, w), ref([3, 5], rows(xr).flatMap((v) => v.map((e, i) => (e / Math.sqrt(v.reduce((a, b) => a + b * b, 0) / 5 + 1.1920928955078125e-7)) * wv[i]!))), { tol: TOL });
    await expectClose(sn.rmsNorm(x, [5], null, { eps: 0.5 }), ref([3, 5], rows(xr).flatMap((v) => v.map((e) => e / Math.sqrt(v.reduce((a, b) => a + b * b, 0) / 5 + 0.5)))), { tol: TOL });
    const d = await sn.dropout(sn.ones([4000], { device }), { p: 0.25, generator: new sn.Generator(3) }).data();
    expect(Math.abs(d.filter((v) => v === 0).length / 4000 - 0.25)).toBeLessThan(0.03);
    expect(d.every((v) => v === 0 || Math.abs(v - 4 / 3) < 1e-6)).toBe(true);
    expect(sn.dropout(x, { training: false })).toBe(x);
  });
});

describe('einsum under jit', () => {
  it('traces to the same result as eager', async () => {
    const a = sn.randn([2, 3, 4], { seed: 1 }), b = sn.randn([2, 4, 5], { seed: 2 });
    const f = sn.jit((x: Tensor, y: Tensor) => sn.einsum('bij,bjk->bik', x, y));
    expect(Array.from(await (f(a, b) as Tensor).data())).toEqual(Array.from(await sn.einsum('bij,bjk->bik', a, b).data()));
  });
});
