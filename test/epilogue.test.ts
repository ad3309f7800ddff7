import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DType, DeviceName, Tensor } from '../src/index.js';
import { type Expr, call, cast, constant, input } from '../src/ops/expr.js';
import { conv2dOp } from '../src/ops/conv.js';
import { linearOp, matmulOp } from '../src/ops/linalg.js';
import { apply1 } from '../src/ops/op.js';
import { TOLERANCES, assertClose, makeTensor, propertyConfig, tensorCaseArb } from '../src/testing/index.js';
import { promoteTypes } from '../src/tensor/dtype.js';
import { WITH_WEBGPU, capsVariants, withCaps } from './helpers.js';

// The `epilogue` attr of matmul, linear and conv2d (what the JIT's epilogue fusion sets): the fused
// op must equal the eager op followed by the eager elementwise ops, for random chains of unary ops,
// scalars and extra tensors broadcast to the output (read through permuted, sliced and expanded
// views). Both sides round every step to its dtype, so they agree to the output dtype's tolerance.

/** One step of a chain: a unary op, a scalar op, or a binary op with an extra tensor of `shape` (broadcast to the output). */
type Step = { kind: 'unary'; fn: number } | { kind: 'scalar'; fn: number; s: number } | { kind: 'extra'; fn: number; keep: boolean[]; lead: number; dtype: DType };

const UNARY: [string, (x: Tensor) => Tensor][] = [['relu', sn.relu], ['sigmoid', sn.sigmoid], ['tanh', sn.tanh], ['neg', sn.neg]];
const SCALAR: [string, (x: Tensor, s: number) => Tensor][] = [['mul', (x, s) => sn.mul(x, s)], ['add', (x, s) => sn.add(x, s)]];
const BINARY: [string, (x: Tensor, y: Tensor) => Tensor][] = [['add', sn.add], ['mul', sn.mul], ['maximum', sn.maximum]];

const stepArb = (rank: number, extraDTypes: DType[]): fc.Arbitrary<Step> =>
  fc.oneof(
    fc.record({ kind: fc.constant('unary' as const), fn: fc.nat(UNARY.length - 1) }),
    fc.record({ kind: fc.constant('scalar' as const), fn: fc.nat(SCALAR.length - 1), s: fc.constantFrom(0.5, -1.5, 2) }),
    fc.record({
      kind: fc.constant('extra' as const), fn: fc.nat(BINARY.length - 1), keep: fc.array(fc.boolean(), { minLength: rank, maxLength: rank }),
      lead: fc.nat(rank), dtype: fc.constantFrom(...extraDTypes),
    }),
  );

/** add's param is its alpha (a + alpha·b). */
const paramsOf = (fn: string) => (fn === 'add' ? [1] : []);

/** The chain as an epilogue expression and as eager ops, with the extra tensors' shapes. */
function chain(steps: Step[], natural: DType, outShape: readonly number[]) {
  let e: Expr = input(0, natural);
  const extras: { shape: number[]; dtype: DType }[] = [];
  for (const s of steps) {
    if (s.kind === 'unary') e = call(UNARY[s.fn]![0], [e], e.dtype);
    else if (s.kind === 'scalar') e = call(SCALAR[s.fn]![0], [e, constant(s.s, e.dtype)], e.dtype, paramsOf(SCALAR[s.fn]![0]));
    else {
      // Size-1 dims where `keep` is false, and `lead` leading dims dropped: a broadcast operand.
      const shape = outShape.map((d, i) => (s.keep[i] ? d : 1)).slice(Math.min(s.lead, outShape.length));
      extras.push({ shape, dtype: s.dtype });
      const d = promoteTypes(e.dtype, s.dtype);
      e = call(BINARY[s.fn]![0], [cast(e, d), cast(input(extras.length, s.dtype), d)], d, paramsOf(BINARY[s.fn]![0]));
    }
  }
  const eager = (y: Tensor, xs: Tensor[]): Tensor => {
    let k = 0;
    for (const s of steps) {
      if (s.kind === 'unary') y = UNARY[s.fn]![1](y);
      else if (s.kind === 'scalar') y = SCALAR[s.fn]![1](y, s.s);
      else y = BINARY[s.fn]![1](y, xs[k++]!);
    }
    return y;
  };
  return { expr: e, extras, eager };
}

const size = fc.integer({ min: 1, max: 7 });
const runs = (device: DeviceName, n: number) => (device === 'webgpu' ? Math.ceil(n / 4) : n);

/** A product to fuse into: its op, inputs' shapes, attrs, and how to compute it eagerly. */
type Product = { op: 'matmul' | 'linear' | 'conv2d'; shapes: number[][]; attrs: object; eager: (ins: Tensor[]) => Tensor };

const productArb: fc.Arbitrary<Product> = fc.oneof(
  fc.record({ b: fc.integer({ min: 1, max: 3 }), m: size, n: size, k: size }).map(({ b, m, n, k }): Product => ({
    op: 'matmul', shapes: [[b, m, k], [k, n]], attrs: {}, eager: ([a, w]) => sn.matmul(a!, w!),
  })),
  fc.record({ r: size, i: size, o: size, bias: fc.boolean() }).map(({ r, i, o, bias }): Product => ({
    op: 'linear', shapes: bias ? [[r, i], [o, i], [o]] : [[r, i], [o, i]], attrs: {}, eager: ([x, w, b]) => sn.linear(x!, w!, b),
  })),
  fc.record({ n: fc.integer({ min: 1, max: 2 }), g: fc.integer({ min: 1, max: 2 }), c: fc.integer({ min: 1, max: 2 }), o: fc.integer({ min: 1, max: 3 }),
    h: fc.integer({ min: 3, max: 6 }), w: fc.integer({ min: 3, max: 6 }), s: fc.integer({ min: 1, max: 2 }), p: fc.nat(1), bias: fc.boolean() })
    .map(({ n, g, c, o, h, w, s, p, bias }): Product => {
      const attrs = { stride: [s, s], padding: [p, p, p, p], dilation: [1, 1], groups: g };
      const shapes = [[n, c * g, h, w], [o * g, c, 3, 3], ...(bias ? [[o * g]] : [])];
      return { op: 'conv2d', shapes, attrs, eager: ([x, wt, b]) => sn.conv2d(x!, wt!, b ?? null, { stride: s, padding: p, groups: g }) };
    }),
);

const OPS = { matmul: matmulOp, linear: linearOp, conv2d: conv2dOp } as const;

describe.each(WITH_WEBGPU)('matmul, linear and conv2d epilogues on %s', (device) => {
  it.each<[DType, DType[]]>([
    ['float32', ['float32']],
    ['float16', ['float16']],
    ['float16', ['float16', 'float32']],
  ])('a %s product with a random elementwise chain (extras %j) equals the eager ops', async (dtype, extraDTypes) => {
    const arb = productArb.chain((p) => {
      const inputs = fc.tuple(...p.shapes.map((s) => tensorCaseArb(s, { dtype })));
      return fc.tuple(fc.constant(p), inputs, fc.array(stepArb(4, extraDTypes), { minLength: 1, maxLength: 4 }));
    });
    await fc.assert(
      fc.asyncProperty(arb, async ([p, cases, steps]) => {
        const ins = cases.map((c) => makeTensor(c, device));
        const y = p.eager(ins);
        const { expr, extras, eager } = chain(steps, y.dtype, y.shape);
        // The extras' shapes depend on the output, so their values are drawn here (seeded: deterministic).
        const xs = extras.map((x, k) => makeTensor(fc.sample(tensorCaseArb(x.shape, { dtype: x.dtype }), { seed: k + 1, numRuns: 1 })[0]!, device));
        const want = eager(y, xs);
        const got = apply1(OPS[p.op] as typeof matmulOp, [...ins, ...xs], { ...p.attrs, epilogue: expr });
        expect(got.shape).toEqual(want.shape);
        expect(got.dtype).toBe(want.dtype);
        assertClose(await got.data(), await want.data(), { ...TOLERANCES[device][want.dtype], shape: want.shape, what: `${p.op} epilogue` });
        for (const t of [...ins, ...xs, y, want, got]) t.dispose();
      }),
      propertyConfig({ numRuns: runs(device, 40) }),
    );
  });
});

describe('epilogues in the WebGPU kernel variants other adapters get', () => {
  // SwiftShader runs the register-tiled GEMM; GPUs get the workgroup-tiled one for products at least
  // half a 64×64 tile on each side: its store runs the epilogue too.
  it.each<DType>(['float32', 'float16'])('matmul and conv2d with relu(y + bias + residual) as epilogue, %s', async (dtype) => {
    for (const caps of capsVariants('webgpu')) {
      await withCaps(caps, async () => {
        const opts = { dtype, device: 'webgpu' as const };
        const a = sn.randn([2, 40, 24], { seed: 1, ...opts }), b = sn.randn([24, 70], { seed: 2, ...opts });
        const x = sn.randn([1, 24, 9, 9], { seed: 3, ...opts }), w = sn.randn([36, 24, 3, 3], { seed: 4, ...opts });
        for (const [op, ins, attrs, y] of [
          [matmulOp, [a, b], {}, sn.matmul(a, b)],
          [conv2dOp, [x, w], { stride: [1, 1], padding: [1, 1, 1, 1], dilation: [1, 1], groups: 1 }, sn.conv2d(x, w, { padding: 1 })],
        ] as const) {
          const bias = sn.randn([y.shape[y.ndim - 1]!], { seed: 5, ...opts }), res = sn.randn(y.shape, { seed: 6, ...opts }).transpose(-1, -2).contiguous().transpose(-1, -2);
          const expr = call('relu', [call('add', [call('add', [input(0, dtype), input(1, dtype)], dtype, [1]), input(2, dtype)], dtype, [1])], dtype);
          const got = apply1(op as typeof matmulOp, [...ins, bias, res], { ...attrs, epilogue: expr });
          const want = sn.relu(y.add(bias).add(res));
          assertClose(await got.data(), await want.data(), { ...TOLERANCES.webgpu[dtype], shape: want.shape, what: `${op.name} ${JSON.stringify(caps)}` });
        }
      });
    }
  });
});

describe('epilogue attr errors', () => {
  const a = sn.randn([2, 3]), b = sn.randn([3, 4]);
  const matmulWith = (epilogue: Expr, extras: Tensor[] = []) => () => apply1(matmulOp, [a, b, ...extras], { epilogue });
  it('rejects extras that do not broadcast to the output, wrong input dtypes, and int results of float products', () => {
    const add = call('add', [input(0, 'float32'), input(1, 'float32')], 'float32', [1]);
    expect(matmulWith(add, [sn.randn([3, 4])])).toThrow(/matmul: epilogue input \[3, 4\] float32 does not broadcast to the output shape \[2, 4\]/);
    expect(matmulWith(add, [sn.randn([2, 1, 4])])).toThrow(/does not broadcast to the output shape \[2, 4\]/);
    expect(matmulWith(call('add', [input(0, 'float32'), input(1, 'float16')], 'float32', [1]), [sn.randn([4])])).toThrow(
      /matmul: epilogue .* reads input 1 as float16, but it is float32/,
    );
    expect(matmulWith(call('cast', [input(0, 'float32')], 'int32'))).toThrow(/matmul: epilogue .* turns the float32 result into int32; only float results may change float dtype/);
    expect(() => apply1(linearOp, [a, sn.randn([5, 3]), sn.randn([5]), sn.randn([5])], { epilogue: add })).not.toThrow();
    expect(() => apply1(conv2dOp, [sn.randn([1, 2, 4, 4])], { stride: [1, 1], padding: [0, 0, 0, 0], dilation: [1, 1], groups: 1, epilogue: add })).toThrow(
      /conv2d: expected 2 or 3 inputs and 1 epilogue inputs, got 1/,
    );
  });
});
