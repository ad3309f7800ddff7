import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { makeTensor, propertyConfig, shapeArb, tensorCaseArb } from '../src/testing/index.js';
import { WITH_WEBGPU, expectClose } from './helpers.js';
import { refOf, size } from './reference/core.js';
import { expandRef, permuteRef, reshapeRef, sliceRef } from './reference/views.js';

const caseArb = (opts: Parameters<typeof shapeArb>[0] = {}) => shapeArb(opts).chain((s) => tensorCaseArb(s));

/** A random factorisation of n into up to 4 dims (with a -1 sometimes). */
function reshapeTargetArb(n: number): fc.Arbitrary<number[]> {
  const divisors = Array.from({ length: n }, (_, i) => i + 1).filter((d) => n % d === 0);
  return fc.array(fc.constantFrom(...divisors), { maxLength: 3 }).chain((ds) => {
    const dims: number[] = [];
    let rest = n;
    for (const d of ds) if (rest % d === 0) { dims.push(d); rest /= d; }
    dims.push(rest);
    return fc.boolean().map((free) => (free ? dims.map((d, i) => (i === dims.length - 1 ? -1 : d)) : dims));
  });
}

describe.each(WITH_WEBGPU)('views on %s', (device) => {
  it('permute and transpose share storage and match the reference', async () => {
    const arb = caseArb({ minRank: 1 }).chain((c) => fc.tuple(fc.constant(c), fc.shuffledSubarray([...c.shape.keys()], { minLength: c.shape.length, maxLength: c.shape.length })));
    await fc.assert(
      fc.asyncProperty(arb, async ([c, perm]) => {
        const x = makeTensor(c, device);
        const y = x.permute(perm);
        expect(y.storage).toBe(x.storage);
        await expectClose(y, permuteRef(refOf(c), perm));
        if (c.shape.length >= 2) await expectClose(sn.transpose(x, 0, -1), permuteRef(refOf(c), [c.shape.length - 1, ...c.shape.slice(1, -1).map((_, i) => i + 1), 0]));
      }),
      propertyConfig({ numRuns: 40 }),
    );
  });

  it('slice with steps and negative bounds shares storage and matches the reference', async () => {
    const arb = caseArb({ minRank: 1, maxDim: 8 }).chain((c) =>
      fc.tuple(fc.constant(c), fc.integer({ min: 0, max: c.shape.length - 1 }), fc.integer({ min: -9, max: 9 }), fc.integer({ min: -9, max: 10 }), fc.integer({ min: 1, max: 3 })),
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([c, dim, start, end, step]) => {
        const x = makeTensor(c, device);
        const y = x.slice(dim, start, end, step);
        expect(y.storage).toBe(x.storage);
        await expectClose(y, sliceRef(refOf(c), dim, start, end, step));
      }),
      propertyConfig({ numRuns: 60 }),
    );
  });

  it('narrow is a bounds-checked slice', async () => {
    const x = sn.arange(10, { device }).reshape(2, 5);
    expect(await x.narrow(1, 1, 3).toArray()).toEqual([[1, 2, 3], [6, 7, 8]]);
    expect(await x.narrow(-1, -2, 2).toArray()).toEqual([[3, 4], [8, 9]]);
    expect(() => x.narrow(1, 3, 3)).toThrow(/narrow: start 3 and length 3 are out of range for dim 1 of size 5/);
  });

  it('reshape/view/flatten keep row-major order, viewing when strides allow and copying otherwise', async () => {
    const arb = caseArb().chain((c) => fc.tuple(fc.constant(c), reshapeTargetArb(size(c.shape))));
    await fc.assert(
      fc.asyncProperty(arb, async ([c, target]) => {
        const x = makeTensor(c, device);
        const y = x.reshape(target);
        const resolved = target.includes(-1) ? target.map((d) => (d === -1 ? size(c.shape) / size(target.filter((t) => t !== -1)) : d)) : target;
        await expectClose(y, reshapeRef(refOf(c), resolved));
        if (x.isContiguous()) {
          expect(y.storage).toBe(x.storage);
          await expectClose(x.view(target), reshapeRef(refOf(c), resolved));
        }
        await expectClose(x.flatten(), reshapeRef(refOf(c), [size(c.shape)]));
      }),
      propertyConfig({ numRuns: 60 }),
    );
  });

  it('view refuses what strides cannot express, reshape copies', async () => {
    const x = sn.arange(6, { device }).reshape(2, 3).t();
    expect(() => x.view(6)).toThrow(/view: cannot view tensor\(int32, \[3, 2\]\) with strides \[1, 3\] as \[6\] without a copy; use reshape/);
    expect(await x.reshape(6).toArray()).toEqual([0, 3, 1, 4, 2, 5]);
    expect(() => x.reshape(4, -1)).toThrow(/reshape: shape \[4, -1\] is invalid for input tensor\(int32, \[3, 2\]\) of 6 elements/);
    // A permuted view that still merges: [2,3,4] → transpose(0,1) → reshape keeps a view of the inner dim.
    const y = sn.arange(24, { device }).reshape(2, 3, 4).transpose(0, 1);
    expect(y.reshape(3, 2, 2, 2).storage).toBe(y.storage);
  });

  it('expand and broadcastTo give stride-0 views', async () => {
    const arb = shapeArb({ maxRank: 3 }).chain((out) =>
      fc.tuple(fc.constant(out), fc.integer({ min: 0, max: out.length }), fc.array(fc.boolean(), { minLength: out.length, maxLength: out.length })).chain(([o, drop, ones]) =>
        fc.tuple(fc.constant(o), tensorCaseArb(o.slice(drop).map((d, i) => (ones[i + drop] ? 1 : d)))),
      ),
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([out, c]) => {
        const x = makeTensor(c, device);
        const y = x.expand(out);
        expect(y.storage).toBe(x.storage);
        await expectClose(y, expandRef(refOf(c), out));
        await expectClose(sn.broadcastTo(x, out), expandRef(refOf(c), out));
      }),
      propertyConfig({ numRuns: 40 }),
    );
    const x = sn.tensor([[1], [2]], { device });
    expect(await x.expand(-1, 3).toArray()).toEqual([[1, 1, 1], [2, 2, 2]]);
    expect(() => x.expand(3, 3)).toThrow(/expand: cannot expand tensor\(float32, \[2, 1\]\) to \[3, 3\]: dim 0 has size 2/);
  });

  it('squeeze, unsqueeze and contiguous', async () => {
    const x = sn.zeros([1, 3, 1, 2], { device });
    expect(x.squeeze().shape).toEqual([3, 2]);
    expect(x.squeeze(0).shape).toEqual([3, 1, 2]);
    expect(x.squeeze([0, 2]).shape).toEqual([3, 2]);
    expect(x.squeeze(1).shape).toEqual([1, 3, 1, 2]);
    expect(x.unsqueeze(-1).shape).toEqual([1, 3, 1, 2, 1]);
    expect(x.unsqueeze(0).shape).toEqual([1, 1, 3, 1, 2]);
    expect(() => x.unsqueeze(6)).toThrow(/unsqueeze: dim 6 is out of range for a tensor of rank 5/);
    await fc.assert(
      fc.asyncProperty(caseArb(), async (c) => {
        const t = makeTensor(c, device);
        const u = t.contiguous();
        expect(u.isContiguous()).toBe(true);
        if (t.isContiguous()) expect(u).toBe(t);
        await expectClose(u, refOf(c));
        await expectClose(t.clone(), refOf(c));
      }),
      propertyConfig({ numRuns: 30 }),
    );
  });

  it('to(dtype) casts like PyTorch and to(device) on the same device is the identity', async () => {
    const x = sn.tensor([-1.7, 0, 2.5, 300], { device });
    expect(await x.to('int32').toArray()).toEqual([-1, 0, 2, 300]);
    expect(await x.to('int8').toArray()).toEqual([-1, 0, 2, 44]);
    expect(await x.to('bool').toArray()).toEqual([true, false, true, true]);
    expect(await x.to('float16').toArray()).toEqual([-1.7001953125, 0, 2.5, 300]);
    expect([x.float().dtype, x.half().dtype, x.int().dtype, x.bool().dtype]).toEqual(['float32', 'float16', 'int32', 'bool']);
    expect(await sn.arange(6, { device }).reshape(1, 2, 3).T.toArray()).toEqual([[[0], [3]], [[1], [4]], [[2], [5]]]);
    expect(x.to(device)).toBe(x);
    expect(x.to({ dtype: 'float32' })).toBe(x);
  });
});
