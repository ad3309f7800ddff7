import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DType, Tensor } from '../src/index.js';
import { assertClose, broadcastShapesArb, makeTensor, propertyConfig, shapeArb, tensorCaseArb } from '../src/testing/index.js';
import { WITH_WEBGPU, expectClose } from './helpers.js';
import { castRef, erfRef, mapRef, refOf } from './reference/core.js';
import { mapKernel } from '../src/kernels/cpu/map.js';
import { call, constant, input } from '../src/ops/expr.js';

// Each unary op beside its float64 reference and the dtypes it is tested on.
type Unary = { name: string; run: (x: Tensor) => Tensor; ref: (x: number) => number; dtypes: DType[]; out?: (d: DType) => DType; range?: [number, number] };
const F: DType[] = ['float32', 'float16'];
const ALL: DType[] = ['float32', 'float16', 'int32', 'int8', 'uint8'];
const float = (d: DType): DType => (d === 'float16' ? 'float16' : 'float32');
const SELU_A = 1.6732632423543772848170429916717, SELU_S = 1.0507009873554804934193349852946;
const roundEven = (x: number) => { const f = Math.floor(x), r = x - f; return r > 0.5 ? f + 1 : r < 0.5 ? f : f % 2 === 0 ? f : f + 1; };

const UNARY: Unary[] = [
  { name: 'neg', run: sn.neg, ref: (x) => -x, dtypes: ['float32', 'float16', 'int32', 'int8'] },
  { name: 'abs', run: sn.abs, ref: Math.abs, dtypes: ALL },
  { name: 'exp', run: sn.exp, ref: Math.exp, dtypes: ALL, out: float },
  { name: 'log', run: sn.log, ref: Math.log, dtypes: ALL, out: float, range: [0.01, 10] },
  { name: 'log1p', run: sn.log1p, ref: Math.log1p, dtypes: F, range: [-0.99, 10] },
  { name: 'expm1', run: sn.expm1, ref: Math.expm1, dtypes: F },
  { name: 'sqrt', run: sn.sqrt, ref: Math.sqrt, dtypes: ALL, out: float, range: [0, 20] },
  { name: 'rsqrt', run: sn.rsqrt, ref: (x) => 1 / Math.sqrt(x), dtypes: F, range: [0.01, 20] },
  { name: 'reciprocal', run: sn.reciprocal, ref: (x) => 1 / x, dtypes: F, range: [0.05, 5] },
  { name: 'sin', run: sn.sin, ref: Math.sin, dtypes: F },
  { name: 'cos', run: sn.cos, ref: Math.cos, dtypes: F },
  { name: 'tanh', run: sn.tanh, ref: Math.tanh, dtypes: F },
  { name: 'sigmoid', run: sn.sigmoid, ref: (x) => 1 / (1 + Math.exp(-x)), dtypes: ALL, out: float },
  { name: 'relu', run: sn.relu, ref: (x) => Math.max(x, 0), dtypes: ALL },
  { name: 'relu6', run: sn.relu6, ref: (x) => Math.min(Math.max(x, 0), 6), dtypes: ALL, range: [-10, 10] },
  { name: 'leakyRelu', run: (x) => sn.leakyRelu(x), ref: (x) => (x > 0 ? x : 0.01 * x), dtypes: F },
  { name: 'leakyRelu(0.2)', run: (x) => sn.leakyRelu(x, { negativeSlope: 0.2 }), ref: (x) => (x > 0 ? x : 0.2 * x), dtypes: F },
  { name: 'elu', run: (x) => sn.elu(x), ref: (x) => (x > 0 ? x : Math.exp(x) - 1), dtypes: F },
  { name: 'elu(0.5)', run: (x) => sn.elu(x, 0.5), ref: (x) => (x > 0 ? x : 0.5 * (Math.exp(x) - 1)), dtypes: F },
  { name: 'selu', run: sn.selu, ref: (x) => SELU_S * (x > 0 ? x : SELU_A * (Math.exp(x) - 1)), dtypes: F },
  { name: 'gelu', run: (x) => sn.gelu(x), ref: (x) => 0.5 * x * (1 + erfRef(x / Math.SQRT2)), dtypes: F },
  { name: 'gelu(tanh)', run: (x) => sn.gelu(x, { approximate: 'tanh' }), ref: (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))), dtypes: F },
  { name: 'silu', run: sn.silu, ref: (x) => x / (1 + Math.exp(-x)), dtypes: F },
  { name: 'softplus', run: (x) => sn.softplus(x), ref: (x) => Math.log(1 + Math.exp(x)), dtypes: F },
  { name: 'softplus(2, 3) positionally', run: (x) => sn.softplus(x, 2, 3), ref: (x) => (2 * x > 3 ? x : Math.log(1 + Math.exp(2 * x)) / 2), dtypes: ['float32'] },
  { name: 'softplus(beta 2, threshold 3)', run: (x) => sn.softplus(x, { beta: 2, threshold: 3 }), ref: (x) => (2 * x > 3 ? x : Math.log(1 + Math.exp(2 * x)) / 2), dtypes: F },
  { name: 'hardSigmoid', run: sn.hardSigmoid, ref: (x) => Math.min(Math.max(x + 3, 0), 6) / 6, dtypes: F, range: [-5, 5] },
  { name: 'hardSwish', run: sn.hardSwish, ref: (x) => (x * Math.min(Math.max(x + 3, 0), 6)) / 6, dtypes: F, range: [-5, 5] },
  { name: 'erf', run: sn.erf, ref: erfRef, dtypes: F },
  { name: 'floor', run: sn.floor, ref: Math.floor, dtypes: ALL },
  { name: 'ceil', run: sn.ceil, ref: Math.ceil, dtypes: ALL },
  { name: 'round', run: sn.round, ref: roundEven, dtypes: ALL },
  { name: 'sign', run: sn.sign, ref: Math.sign, dtypes: ALL },
  { name: 'clamp(-1, 2)', run: (x) => sn.clamp(x, -1, 2), ref: (x) => Math.min(Math.max(x, -1), 2), dtypes: ['float32', 'float16', 'int32', 'int8'] },
  { name: 'clamp(min 0.5)', run: (x) => sn.clamp(x, 0.5), ref: (x) => Math.max(x, 0.5), dtypes: F },
  { name: 'clamp(max -0.5)', run: (x) => sn.clamp(x, null, -0.5), ref: (x) => Math.min(x, -0.5), dtypes: F },
  { name: 'clamp({ min: -2, max: 1 })', run: (x) => sn.clamp(x, { min: -2, max: 1 }), ref: (x) => Math.min(Math.max(x, -2), 1), dtypes: F },
  { name: 'clamp(tensor bounds)', run: (x) => x.clamp(sn.tensor(-1, { device: x.device }), sn.tensor(0.5, { device: x.device })), ref: (x) => Math.min(Math.max(x, -1), 0.5), dtypes: ['float32'] },
  { name: 'logicalNot', run: sn.logicalNot, ref: (x) => (x === 0 ? 1 : 0), dtypes: ['float32', 'int32', 'bool'], out: () => 'bool' },
];

// Every new shape compiles a new WebGPU pipeline (shapes are baked into the WGSL; ~5 ms each on
// SwiftShader), so the GPU runs fewer random cases per op to keep this file quick.
const runs = (device: string, n: number) => (device === 'webgpu' ? Math.ceil(n / 2) : n);

describe.each(WITH_WEBGPU)('unary ops on %s', (device) => {
  for (const op of UNARY) {
    it.each(op.dtypes)(`${op.name} matches the float64 reference (%s)`, async (dtype) => {
      const [min, max] = op.range ?? [-4, 4];
      const arb = shapeArb().chain((shape) => tensorCaseArb(shape, { dtype, min, max }));
      await fc.assert(
        fc.asyncProperty(arb, async (c) => {
          const x = makeTensor(c, device);
          const y = op.run(x);
          const outDType = op.out ? op.out(dtype) : dtype;
          await expectClose(y, mapRef([refOf(c)], (v) => castRef(outDType, op.ref(v))), { dtype: outDType });
          x.dispose();
          y.dispose();
        }),
        propertyConfig({ numRuns: runs(device, 25) }),
      );
    });
  }
});

type Binary = { name: string; run: (a: Tensor | number, b: Tensor | number) => Tensor; ref: (a: number, b: number) => number; dtypes: DType[]; bool?: boolean; float?: boolean; bRange?: [number, number] };
const BINARY: Binary[] = [
  { name: 'add', run: sn.add, ref: (a, b) => a + b, dtypes: ALL },
  { name: 'add(alpha 2)', run: (a, b) => sn.add(a, b, { alpha: 2 }), ref: (a, b) => a + 2 * b, dtypes: ['float32', 'int32'] },
  { name: 'sub', run: sn.sub, ref: (a, b) => a - b, dtypes: ['float32', 'float16', 'int32', 'int8'] },
  { name: 'sub(alpha 0.5)', run: (a, b) => sn.sub(a, b, { alpha: 0.5 }), ref: (a, b) => a - 0.5 * b, dtypes: F },
  { name: 'mul', run: sn.mul, ref: (a, b) => a * b, dtypes: ['float32', 'float16', 'int32'] },
  { name: 'div', run: sn.div, ref: (a, b) => a / b, dtypes: ['float32', 'float16', 'int32'], float: true, bRange: [1, 4] },
  { name: 'div(trunc)', run: (a, b) => sn.div(a, b, { roundingMode: 'trunc' }), ref: (a, b) => Math.trunc(a / b), dtypes: ['float32', 'int32'], bRange: [1, 4] },
  { name: 'div(floor)', run: (a, b) => sn.div(a, b, { roundingMode: 'floor' }), ref: (a, b) => Math.floor(a / b), dtypes: ['float32', 'int32'], bRange: [1, 4] },
  { name: 'pow', run: sn.pow, ref: Math.pow, dtypes: ['float32', 'float16'], bRange: [-3, 3] },
  { name: 'maximum', run: sn.maximum, ref: Math.max, dtypes: ALL },
  { name: 'minimum', run: sn.minimum, ref: Math.min, dtypes: ALL },
  { name: 'eq', run: sn.eq, ref: (a, b) => +(a === b), dtypes: ['float32', 'int32', 'bool'], bool: true },
  { name: 'ne', run: sn.ne, ref: (a, b) => +(a !== b), dtypes: ['float32', 'int32', 'bool'], bool: true },
  { name: 'lt', run: sn.lt, ref: (a, b) => +(a < b), dtypes: ['float32', 'float16', 'int32', 'uint8'], bool: true },
  { name: 'le', run: sn.le, ref: (a, b) => +(a <= b), dtypes: ['float32', 'int8'], bool: true },
  { name: 'gt', run: sn.gt, ref: (a, b) => +(a > b), dtypes: ['float32', 'int32'], bool: true },
  { name: 'ge', run: sn.ge, ref: (a, b) => +(a >= b), dtypes: ['float32', 'int32'], bool: true },
  { name: 'logicalAnd', run: sn.logicalAnd, ref: (a, b) => +(a !== 0 && b !== 0), dtypes: ['bool', 'float32', 'int32'], bool: true },
  { name: 'logicalOr', run: sn.logicalOr, ref: (a, b) => +(a !== 0 || b !== 0), dtypes: ['bool', 'int32'], bool: true },
  { name: 'logicalXor', run: sn.logicalXor, ref: (a, b) => +((a !== 0) !== (b !== 0)), dtypes: ['bool', 'int32'], bool: true },
];

describe.each(WITH_WEBGPU)('binary ops on %s', (device) => {
  for (const op of BINARY) {
    it.each(op.dtypes)(`${op.name} broadcasts and matches the reference (%s)`, async (dtype) => {
      const outDType = op.bool ? 'bool' : op.float ? float(dtype) : dtype;
      const [bmin, bmax] = op.bRange ?? [undefined, undefined];
      const arb = broadcastShapesArb(2).chain(([, sa, sb]) =>
        fc.tuple(tensorCaseArb(sa!, { dtype, min: op.name === 'pow' ? 0.1 : undefined }), tensorCaseArb(sb!, { dtype, min: bmin, max: bmax })),
      );
      await fc.assert(
        fc.asyncProperty(arb, async ([ca, cb]) => {
          const a = makeTensor(ca, device), b = makeTensor(cb, device);
          const y = op.run(a, b);
          await expectClose(y, mapRef([refOf(ca), refOf(cb)], (u, v) => castRef(outDType, op.ref(u, v))), { dtype: outDType });
          for (const t of [a, b, y]) t.dispose();
        }),
        propertyConfig({ numRuns: runs(device, 25) }),
      );
    });
  }

  it('promotes dtypes as PyTorch does, with numbers as scalars', async () => {
    const i8 = sn.tensor([1, 2], { dtype: 'int8', device });
    const u8 = sn.tensor([1, 2], { dtype: 'uint8', device });
    const f16 = sn.tensor([1, 2], { dtype: 'float16', device });
    const i32 = sn.tensor([1, 2], { dtype: 'int32', device });
    const b = sn.tensor([true, false], { device });
    const cases: [Tensor, string][] = [
      [sn.add(i8, u8), 'int32'], [sn.add(i8, 1), 'int8'], [sn.add(i8, 1.5), 'float32'], [sn.add(f16, 1.5), 'float16'],
      [sn.add(i32, f16), 'float16'], [sn.add(b, b), 'bool'], [sn.add(b, 1), 'int32'], [sn.mul(b, i8), 'int8'],
      [sn.div(i32, i32), 'float32'], [sn.lt(i8, 1.5), 'bool'], [sn.add(2, i8), 'int8'],
    ];
    for (const [t, want] of cases) if (t.dtype !== want) throw new Error(`got ${t.dtype}, expected ${want}`);
    await expectClose(sn.add(i8, 1.5), { shape: [2], data: Float64Array.from([2.5, 3.5]) });
    await expectClose(sn.sub(10, i8), { shape: [2], data: Float64Array.from([9, 8]) });
  });

  it('where picks from broadcast operands, with scalars on either side', async () => {
    const arb = broadcastShapesArb(3).chain(([, sc, sa, sb]) =>
      fc.tuple(tensorCaseArb(sc!, { dtype: 'bool' }), tensorCaseArb(sa!), tensorCaseArb(sb!, { dtype: 'int32' }), fc.double({ min: -3, max: 3, noNaN: true })),
    );
    await fc.assert(
      fc.asyncProperty(arb, async ([cc, ca, cb, s]) => {
        const c = makeTensor(cc, device), a = makeTensor(ca, device), b = makeTensor(cb, device);
        await expectClose(sn.where(c, a, b), mapRef([refOf(cc), refOf(ca), refOf(cb)], (k, u, v) => (k ? u : v)), { dtype: 'float32' });
        const sd = Number.isInteger(s) ? 'int32' : 'float32'; // a whole number is an int scalar: int32 with int32 b
        await expectClose(sn.where(c, s, b), mapRef([refOf(cc), refOf(cb)], (k, v) => castRef(sd, k ? s : v)), { dtype: sd });
        await expectClose(a.where(c, 0), mapRef([refOf(cc), refOf(ca)], (k, u) => (k ? u : 0)), { dtype: 'float32' });
      }),
      propertyConfig({ numRuns: 30 }),
    );
  });

  it('integer arithmetic wraps like a C cast (int8 and uint8)', async () => {
    const a = sn.tensor([100, -100, 127], { dtype: 'int8', device });
    await expectClose(sn.add(a, a), { shape: [3], data: Float64Array.from([-56, 56, -2]) });
    const u = sn.tensor([200, 5], { dtype: 'uint8', device });
    await expectClose(sn.add(u, 100), { shape: [2], data: Float64Array.from([44, 105]) });
  });
});

describe("the CPU's generated kernels", () => {
  const stats = () => sn.memory().devices.cpu!.pipelines!;
  /** Runs the JavaScript map kernel (the backend may prefer WebAssembly for eager ops) of `op(x, s)` over x. */
  const mapWith = (op: string, x: Float32Array, s: number, params = [1]): Float32Array => {
    const out = new Float32Array(x.length);
    const view = (data: Float32Array) => ({ data, shape: [data.length], strides: [1], offset: 0, dtype: 'float32' as const });
    mapKernel(call(op, [input(0, 'float32'), constant(s, 'float32')], 'float32', params), [view(x)], view(out));
    return out;
  };

  it('one generated function serves every scalar value (x·s, x + s, and a fused sum(x·s) under jit, for 20 values of s)', async () => {
    const x = sn.randn([5, 7], { seed: 1 });
    const values = (await x.data()) as Float32Array;
    for (const [op, ref] of [['mul', (v: number, s: number) => Math.fround(v * s)], ['add', (v: number, s: number) => Math.fround(v + s)]] as const) {
      mapWith(op, values, 0.5);
      const before = stats().misses;
      for (let i = 0; i < 20; i++) {
        const s = 1.25 * i - 7;
        expect([...mapWith(op, values, s)]).toEqual([...values].map((v) => ref(v, s)));
      }
      expect(stats().misses).toBe(before);
    }
    const f = sn.jit((t: Tensor, s: number) => sn.sum(t.mul(s), 1));
    f(x, 1).dispose();
    const before = stats().misses;
    for (let i = 2; i < 22; i++) {
      const y = f(x, i);
      assertClose(await y.data(), [0, 1, 2, 3, 4].map((r) => values.slice(7 * r, 7 * r + 7).reduce((a, v) => a + Math.fround(v * i), 0)), { rtol: 1e-5, atol: 1e-5 });
      y.dispose();
    }
    // Each s is a new jit signature (numbers key it), but the fused prologue's function is shared.
    expect(stats().misses).toBe(before);
    f.dispose();
    x.dispose();
  });

  it('is an LRU bounded by setCacheLimits({ pipelines }), counting hits, misses and evictions', async () => {
    const x = Float32Array.from([-2, -0.5, 0, 0.25, 3]);
    const ops = ['add', 'sub', 'mul', 'maximum'];
    // (alpha = 3 for add and sub, and unused by the others, makes this test's functions its own.)
    const refs = [(v: number) => v + 6, (v: number) => v - 6, (v: number) => v * 2, (v: number) => Math.max(v, 2)];
    try {
      sn.setCacheLimits({ pipelines: 2 });
      const s0 = stats();
      for (let round = 0; round < 2; round++) ops.forEach((op, i) => expect([...mapWith(op, x, 2, [3])]).toEqual([...x].map(refs[i]!)));
      const s1 = stats();
      expect(s1.capacity).toBe(2);
      expect(s1.entries).toBeLessThanOrEqual(2);
      // Cycling through four with room for two: every lookup misses, and evicts once the cache is full.
      expect(s1.misses - s0.misses).toBe(8);
      expect(s1.evictions - s0.evictions).toBeGreaterThanOrEqual(6);
      mapWith('maximum', x, 5, [3]);
      expect(stats().hits).toBe(s1.hits + 1);
    } finally {
      sn.setCacheLimits({ pipelines: 512 });
    }
    expect(stats().capacity).toBe(512);
  });
});
