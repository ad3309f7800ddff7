import fc from 'fast-check';
import { f16round } from '@petamoriken/float16';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DeviceName, Tensor } from '../src/index.js';
import { propertyConfig } from '../src/testing/index.js';
import { float16Ref } from './reference/core.js';
import { INT_RANGE, type IntDType, divFloorRef, divTruncRef, floatToIntRef, powRef, wrapInt } from './reference/integer.js';
import { WITH_WEBGPU } from './helpers.js';

// Integer arithmetic is exact and wraps like C's fixed-width integers, identically on every backend:
// values are drawn across each dtype's whole range (its extremes weighted in), the reference is BigInt.

/** Integers of `dtype`: anywhere in its range, its extremes and their neighbours, and small ones. */
function intArb(dtype: IntDType): fc.Arbitrary<number> {
  const [lo, hi] = INT_RANGE[dtype];
  const edges = [lo, lo + 1, hi - 1, hi, 0, 1, -1, 2, -2, 46341, 65536, 123456789].filter((v) => v >= lo && v <= hi);
  return fc.oneof(fc.integer({ min: lo, max: hi }), fc.constantFrom(...edges), fc.integer({ min: Math.max(lo, -20), max: Math.min(hi, 20) }));
}

interface IntOp {
  name: string;
  dtypes: IntDType[];
  run: (a: Tensor, b: Tensor) => Tensor;
  ref: (a: bigint, b: bigint) => bigint;
  /** Draws b from this range instead of the dtype's (exponents). */
  b?: [number, number];
}

const OPS: IntOp[] = [
  { name: 'add', dtypes: ['int32', 'int8', 'uint8', 'bool'], run: sn.add, ref: (a, b) => a + b },
  { name: 'sub', dtypes: ['int32', 'int8', 'uint8'], run: sn.sub, ref: (a, b) => a - b },
  { name: 'add(alpha=-3)', dtypes: ['int32', 'int8', 'uint8'], run: (a, b) => sn.add(a, b, { alpha: -3 }), ref: (a, b) => a - 3n * b },
  { name: 'sub(alpha=123457)', dtypes: ['int32'], run: (a, b) => sn.sub(a, b, { alpha: 123457 }), ref: (a, b) => a - 123457n * b },
  { name: 'mul', dtypes: ['int32', 'int8', 'uint8', 'bool'], run: sn.mul, ref: (a, b) => a * b },
  { name: 'div(trunc)', dtypes: ['int32', 'int8', 'uint8'], run: (a, b) => sn.div(a, b, { roundingMode: 'trunc' }), ref: divTruncRef },
  { name: 'div(floor)', dtypes: ['int32', 'int8', 'uint8'], run: (a, b) => sn.div(a, b, { roundingMode: 'floor' }), ref: divFloorRef },
  { name: 'pow', dtypes: ['int32', 'int8', 'uint8'], run: sn.pow, ref: powRef, b: [-2, 40] },
  { name: 'maximum', dtypes: ['int32', 'int8', 'uint8'], run: sn.maximum, ref: (a, b) => (a > b ? a : b) },
  { name: 'lt', dtypes: ['int32', 'int8', 'uint8'], run: sn.lt, ref: (a, b) => (a < b ? 1n : 0n) },
  { name: 'neg(a)+b·0', dtypes: ['int32', 'int8'], run: (a, b) => sn.neg(a).add(b.mul(0)), ref: (a) => -a },
  { name: 'abs(a)', dtypes: ['int32', 'int8'], run: (a) => sn.abs(a), ref: (a) => (a < 0n ? -a : a) },
];

describe.each(WITH_WEBGPU)('integer arithmetic on %s', (device: DeviceName) => {
  for (const op of OPS) {
    for (const dtype of op.dtypes) {
      it(`${op.name} on ${dtype} over the whole range`, async () => {
        const [lo, hi] = INT_RANGE[dtype];
        const bArb = op.b ? fc.integer({ min: Math.max(lo, op.b[0]), max: Math.min(hi, op.b[1]) }) : intArb(dtype);
        await fc.assert(
          fc.asyncProperty(fc.array(fc.tuple(intArb(dtype), bArb), { minLength: 1, maxLength: 24 }), async (pairs) => {
            const a = sn.tensor(pairs.map(([x]) => x), { dtype, device }), b = sn.tensor(pairs.map(([, y]) => y), { dtype, device });
            const out = op.run(a, b);
            const outType = out.dtype as IntDType;
            const want = pairs.map(([x, y]) => wrapInt(outType, op.ref(BigInt(x), BigInt(y))));
            expect([...(await out.data())], `${op.name}(${JSON.stringify(pairs)})`).toEqual(want);
            for (const t of [a, b, out]) t.dispose();
          }),
          propertyConfig({ numRuns: device === 'cpu' ? 60 : 12 }),
        );
      });
    }
  }

  it('scalar operands wrap too: int32·123456789 and the README examples (123456789², 2147483647²)', async () => {
    const x = sn.tensor([123456789, 2147483647, -2147483648, 65536], { dtype: 'int32', device });
    expect([...(await x.mul(x).data())]).toEqual([-1757895751, 1, 0, 0]);
    expect([...(await x.mul(123456789).data())]).toEqual([123456789n, 2147483647n, -2147483648n, 65536n].map((v) => wrapInt('int32', v * 123456789n)));
    expect([...(await x.add(2147483647).data())]).toEqual([123456789n, 2147483647n, -2147483648n, 65536n].map((v) => wrapInt('int32', v + 2147483647n)));
    // int8 from 200, uint8 from -1 and 256: stored wrapped, as PyTorch's torch.tensor(..., dtype=int8) does.
    expect([...(await sn.tensor([200, -129, 127], { dtype: 'int8', device }).data())]).toEqual([-56, 127, 127]);
    expect([...(await sn.tensor([-1, 256, 255], { dtype: 'uint8', device }).data())]).toEqual([255, 0, 255]);
  });

  it('casts floats to ints by truncating and wrapping (NaN and ±∞ give 0), and anything to bool as != 0', async () => {
    const special = [NaN, Infinity, -Infinity, 2 ** 31, -(2 ** 31) - 256, 3e9, -3e9, 1e20, 200.7, -200.7, 0.99, -0.99, 255.5, 256, -1.5];
    await fc.assert(
      fc.asyncProperty(fc.array(fc.oneof(fc.constantFrom(...special), fc.double({ min: -1e12, max: 1e12, noNaN: true })), { minLength: 1, maxLength: 24 }), async (vs) => {
        const f = sn.tensor(vs, { dtype: 'float32', device });
        // (WGSL lets GPUs flush float32 subnormals to zero, and SwiftShader does: there they count as 0.)
        const stored = [...(await f.data())].map((v) => (device === 'webgpu' && Math.abs(v) < 2 ** -126 ? 0 : v));
        for (const dtype of ['int32', 'int8', 'uint8', 'bool'] as const) {
          const t = f.to(dtype);
          expect([...(await t.data())], `${JSON.stringify(vs)} to ${dtype}`).toEqual(stored.map((v) => floatToIntRef(dtype, v)));
          // Ints back to float32 are exact below 2²⁴ and rounded to nearest above.
          const back = t.to('float32');
          expect([...(await back.data())]).toEqual(stored.map((v) => Math.fround(floatToIntRef(dtype, v))));
          for (const x of [t, back]) x.dispose();
        }
        f.dispose();
      }),
      propertyConfig({ numRuns: device === 'cpu' ? 40 : 8 }),
    );
  });

  it('reductions of ints wrap too: sum, prod, cumsum (int32 results), amax, argmax', async () => {
    for (const dtype of ['int32', 'int8', 'uint8'] as const) {
      await fc.assert(
        fc.asyncProperty(fc.array(intArb(dtype), { minLength: 1, maxLength: 24 }), async (vs) => {
          const x = sn.tensor(vs, { dtype, device });
          const big = vs.map(BigInt);
          const sums = big.map((_, i) => big.slice(0, i + 1).reduce((a, v) => a + v, 0n));
          const results: [string, Tensor, number[]][] = [
            ['sum', x.sum(), [wrapInt('int32', sums[sums.length - 1]!)]],
            ['prod', x.prod(), [wrapInt('int32', big.reduce((a, v) => BigInt.asIntN(32, a * v), 1n))]],
            ['cumsum', sn.cumsum(x, 0), sums.map((v) => wrapInt('int32', v))],
            ['amax', x.amax(), [Math.max(...vs.map((v) => wrapInt(dtype, BigInt(v))))]],
            ['argmax', x.argmax(), [vs.map((v) => wrapInt(dtype, BigInt(v))).indexOf(Math.max(...vs.map((v) => wrapInt(dtype, BigInt(v)))))]],
          ];
          for (const [name, t, want] of results) {
            expect([...(await t.data())], `${name} of ${dtype} ${JSON.stringify(vs)}`).toEqual(want);
            t.dispose();
          }
          x.dispose();
        }),
        propertyConfig({ numRuns: device === 'cpu' ? 30 : 6 }),
      );
    }
  });

  it('int8 and uint8 mixed promote to int32 (as PyTorch), exactly', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(intArb('int8'), intArb('uint8')), { minLength: 1, maxLength: 16 }), async (pairs) => {
        const a = sn.tensor(pairs.map(([x]) => x), { dtype: 'int8', device }), b = sn.tensor(pairs.map(([, y]) => y), { dtype: 'uint8', device });
        const out = a.mul(b).sub(b);
        expect(out.dtype).toBe('int32');
        expect([...(await out.data())]).toEqual(pairs.map(([x, y]) => (x * y - y) | 0));
        for (const t of [a, b, out]) t.dispose();
      }),
      propertyConfig({ numRuns: device === 'cpu' ? 30 : 6 }),
    );
  });
});

describe('integer arguments', () => {
  it('a finite fill value out of an integer dtype\'s range is an error, as in PyTorch', () => {
    expect(() => sn.full([2], 200, { dtype: 'int8' })).toThrow(/^full: value 200 cannot be converted to int8 without overflow \(its range is \[-128, 127\]\)$/);
    expect(() => sn.full([2], -1, { dtype: 'uint8' })).toThrow(/full: value -1 cannot be converted to uint8/);
    expect(() => sn.full([2], 2 ** 31, { dtype: 'int32' })).toThrow(/full: value 2147483648 cannot be converted to int32/);
    const ok = sn.full([2], -128.9, { dtype: 'int8' });
    expect(ok.dtype).toBe('int8');
    ok.dispose();
  });

  it('a fractional alpha with integral operands is an error, as in PyTorch', () => {
    const a = sn.tensor([1, 2], { dtype: 'int32' });
    expect(() => sn.add(a, a, { alpha: 0.5 })).toThrow(/add: for integral operands alpha must be an integer \(as in PyTorch\), got 0.5/);
    expect(() => sn.sub(a, 3, { alpha: 1.5 })).toThrow(/sub: for integral operands alpha must be an integer/);
    a.dispose();
  });
});

describe('the reference float16 rounding (test/reference/core.ts)', () => {
  it('agrees with @petamoriken/float16 on values across the half range, subnormals and ties included', () => {
    fc.assert(
      fc.property(fc.oneof(fc.double({ min: -70000, max: 70000 }), fc.double({ min: -1e-4, max: 1e-4 }), fc.integer({ min: -2048, max: 2048 }).map((k) => (k + 0.5) * 2 ** -14)), (v) => {
        expect(Object.is(float16Ref(v), f16round(v)) || (Number.isNaN(v) && Number.isNaN(float16Ref(v)))).toBe(true);
      }),
      propertyConfig({ numRuns: 2000 }),
    );
  });
});
