import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DType, DeviceName, Tensor } from '../src/index.js';
import { type Expr, call, constant, exprToString, input } from '../src/ops/expr.js';
import { type ReduceAttrs, cumsumOp, logSoftmaxOp, reduceOp, softmaxOp } from '../src/ops/reduce.js';
import { apply1 } from '../src/ops/op.js';
import { type TensorCase, broadcastShapesArb, makeTensor, propertyConfig, tensorCaseArb } from '../src/testing/index.js';
import { WITH_WEBGPU, capsVariants, expectClose, withCaps } from './helpers.js';
import { type Ref, castRef, ref, refOf } from './reference/core.js';
import { type Prog, type ProgFn, prologueRef, transcendentals } from './reference/prologue.js';
import { argmaxOf, argminOf, cumsumRef, maxOf, meanOf, minOf, prodInt32Of, prodOf, reduceRef, softmaxRef, sumOf, varOf } from './reference/reduce.js';

// Reductions, softmax, logSoftmax and cumsum with an elementwise prologue (what the JIT fuses into
// them): the op reduces prologue(inputs…) over the inputs broadcast together, each read in place
// through its own strides. The reference evaluates the same program in float64, rounding every
// node to its dtype as the eager ops would store it, then reduces.

type ReduceKind = ReduceAttrs['kind'];
interface Case {
  readonly name: string;
  /** The reduce kind, or the along-dim op. */
  readonly op: ReduceKind | 'softmax' | 'logSoftmax' | 'cumsum';
  /** The prologue's output dtype ('bool': float32 inputs compared with 0 at the end). */
  readonly dtypes: readonly DType[];
  /** Only correctly rounded functions (no tanh/sigmoid; no add/sub in float16), so GPU values equal the reference's exactly. */
  readonly exact?: boolean;
  readonly oneDim?: boolean;
  /** Input value range (default ±4). */
  readonly range?: number;
}

const CASES: Case[] = [
  { name: 'sum', op: 'sum', dtypes: ['float32', 'float16', 'int32', 'bool'] },
  { name: 'mean', op: 'mean', dtypes: ['float32', 'float16'] },
  { name: 'prod', op: 'prod', dtypes: ['float32', 'int32'], exact: true, range: 2 },
  { name: 'max', op: 'max', dtypes: ['float32', 'float16', 'int32', 'bool'], exact: true },
  { name: 'min', op: 'min', dtypes: ['float32'], exact: true },
  { name: 'argmax', op: 'argmax', dtypes: ['float32', 'int32'], exact: true, oneDim: true },
  { name: 'argmin', op: 'argmin', dtypes: ['float16'], exact: true, oneDim: true },
  { name: 'var', op: 'var', dtypes: ['float32', 'float16'] },
  { name: 'std', op: 'std', dtypes: ['float32'] },
  { name: 'softmax', op: 'softmax', dtypes: ['float32', 'float16'] },
  { name: 'logSoftmax', op: 'logSoftmax', dtypes: ['float32', 'float16'] },
  { name: 'cumsum', op: 'cumsum', dtypes: ['float32', 'int32', 'bool'] },
];
const ALONG = new Set(['softmax', 'logSoftmax', 'cumsum']);

const UNARY: ProgFn[] = ['relu', 'neg', 'abs', 'tanh', 'sigmoid'];
const BINARY: ProgFn[] = ['add', 'sub', 'mul', 'maximum'];

interface Step {
  fn: number;
  a: number;
  b: number;
  /** A scalar second operand instead of a pool value (binary functions). */
  scalar: number | null;
}
const stepArb = fc.record({ fn: fc.nat(20), a: fc.nat(20), b: fc.nat(20), scalar: fc.constantFrom(null, null, 0.5, -2) });

/** The program: steps over a pool starting with the inputs, its result the last value, with every input (a bool case compares it with 0). */
function buildProg(nIn: number, dtype: DType, steps: readonly Step[], exact: boolean): Prog {
  const t: DType = dtype === 'bool' ? 'float32' : dtype;
  let fns = [...UNARY, ...BINARY];
  if (t === 'int32') fns = fns.filter((f) => f !== 'tanh' && f !== 'sigmoid');
  // float16: add/sub of values of far-apart exponents round twice on the GPU (to f32, then binary16).
  if (exact) fns = fns.filter((f) => f !== 'tanh' && f !== 'sigmoid' && !(t === 'float16' && (f === 'add' || f === 'sub')));
  const pool: Prog[] = Array.from({ length: nIn }, (_, k) => ({ kind: 'input', k, dtype: t }));
  for (const s of steps) {
    const fn = fns[s.fn % fns.length]!;
    const a = pool[s.a % pool.length]!;
    if (UNARY.includes(fn)) pool.push({ kind: 'call', fn, args: [a], dtype: t });
    else {
      const b: Prog = s.scalar === null ? pool[s.b % pool.length]! : { kind: 'const', value: t === 'int32' ? Math.round(s.scalar * 3) : s.scalar, dtype: t };
      pool.push({ kind: 'call', fn, args: [a, b], dtype: t });
    }
  }
  // Every input is read (its strides matter): those the steps left out join the result.
  const uses = (p: Prog, k: number): boolean => (p.kind === 'input' ? p.k === k : p.kind === 'call' && p.args.some((a) => uses(a, k)));
  let last = pool[pool.length - 1]!;
  for (let k = 0; k < nIn; k++) {
    if (!uses(last, k)) last = { kind: 'call', fn: exact && t === 'float16' ? 'mul' : 'add', args: [last, pool[k]!], dtype: t };
  }
  return dtype === 'bool' ? { kind: 'call', fn: 'gt', args: [last, { kind: 'const', value: 0, dtype: t }], dtype: 'bool' } : last;
}

/** src's Expr for the program, as the elementwise ops build it (add and sub carry alpha = 1). */
function exprOf(p: Prog): Expr {
  switch (p.kind) {
    case 'input':
      return input(p.k, p.dtype);
    case 'const':
      return constant(p.value, p.dtype);
    case 'call':
      return call(p.fn, p.args.map(exprOf), p.dtype, p.fn === 'add' || p.fn === 'sub' ? [1] : []);
  }
}

/** Inputs of shapes that broadcast together (odd sizes, size-1 dims, non-contiguous layouts), a program over them, dims and keepdim. */
function caseArb(c: Case, dtype: DType, size = { maxRank: 3, maxDim: 6 }) {
  const t: DType = dtype === 'bool' ? 'float32' : dtype;
  const range = c.range ?? 4;
  return fc.integer({ min: 1, max: 3 }).chain((nIn) =>
    broadcastShapesArb(nIn, size).chain(([out, ...shapes]) => {
      const r = out!.length;
      const all = Array.from({ length: r }, (_, i) => i);
      const dims: fc.Arbitrary<number[]> = ALONG.has(c.op)
        ? r === 0 ? fc.constant([0]) : fc.integer({ min: 0, max: r - 1 }).map((d) => [d])
        : r === 0 ? fc.constant([])
        : c.oneDim ? fc.oneof(fc.constant(all), fc.integer({ min: 0, max: r - 1 }).map((d) => [d]))
        : fc.subarray(all, { minLength: 1 });
      return fc.record({
        cases: fc.tuple(...shapes.map((s) => tensorCaseArb(s, { dtype: t, min: -range, max: range }))),
        steps: fc.array(stepArb, { maxLength: 4 }),
        dims,
        keepdim: fc.boolean(),
      });
    }),
  );
}

function castAll(r: Ref, dtype: DType): Ref {
  return { shape: r.shape, data: r.data.map((v) => castRef(dtype, v)) };
}

const isFloat = (d: DType) => d === 'float32' || d === 'float16';

/** The op's result dtype for a prologue of `dtype`. */
function outDType(c: Case, dtype: DType): DType {
  if (c.op === 'argmax' || c.op === 'argmin') return 'int32';
  if (c.op === 'sum' || c.op === 'prod' || c.op === 'cumsum') return isFloat(dtype) ? dtype : 'int32';
  return dtype;
}

const CORRECTION: Partial<Record<ReduceKind, number>> = { var: 1, std: 0 };

function runOp(c: Case, inputs: Tensor[], prologue: Expr, dims: number[], keepdim: boolean): Tensor {
  if (c.op === 'softmax') return apply1(softmaxOp, inputs, { dim: dims[0]!, prologue });
  if (c.op === 'logSoftmax') return apply1(logSoftmaxOp, inputs, { dim: dims[0]!, prologue });
  if (c.op === 'cumsum') return apply1(cumsumOp, inputs, { dim: dims[0]!, prologue });
  return apply1(reduceOp, inputs, { kind: c.op, dims, keepdim, correction: CORRECTION[c.op] ?? 0, prologue });
}

function reference(c: Case, dtype: DType, v: Ref, dims: number[], keepdim: boolean): Ref {
  const out = outDType(c, dtype);
  const d = v.shape.length === 0 ? 0 : dims[0]!;
  switch (c.op) {
    case 'softmax':
    case 'logSoftmax':
      return castAll(softmaxRef(v, d, c.op === 'logSoftmax'), out);
    case 'cumsum':
      return castAll(cumsumRef(v, d), out);
    default: {
      const folds: Record<ReduceKind, (x: number[]) => number> = {
        sum: sumOf, mean: meanOf, prod: isFloat(dtype) ? prodOf : prodInt32Of, max: maxOf, min: minOf, argmax: argmaxOf, argmin: argminOf,
        var: (x) => varOf(x, 1), std: (x) => Math.sqrt(varOf(x, 0)),
      };
      return castAll(reduceRef(v, dims, keepdim, folds[c.op]), out);
    }
  }
}

/**
 * Extra absolute tolerance on WebGPU, beyond the per-dtype default. The GPU accumulates in f32
 * (the CPU in double): a sum of n values of magnitude ≤ M is off by about (n + 8)·2⁻²⁴·n·M. Each
 * prologue value may also differ from the reference by `e`: tanh and sigmoid are not correctly
 * rounded in WGSL (a few f32 ulps, grown by later nodes: 2⁻¹⁷·max(1, M) per such node), and in
 * float16 a node computed in f32 then rounded to binary16 may be one binary16 ulp (2⁻¹⁰·M) off.
 * Exact cases (max, min, arg*, prod) use correctly rounded functions only and get nothing extra.
 */
function gpuAtol(c: Case, dtype: DType, prog: Prog, v: Ref, dims: number[]): number {
  if (c.exact || !isFloat(outDType(c, dtype))) return 0;
  const finite = Array.from(v.data).filter(Number.isFinite).map(Math.abs);
  const m = Math.max(0, ...finite);
  const e = dtype === 'float16' ? 2 ** -10 * m : transcendentals(prog) * 2 ** -17 * Math.max(1, m);
  const n = v.shape.length === 0 ? 1 : dims.reduce((a, d) => a * v.shape[d]!, 1);
  const sum = n * e + (n + 8) * 2 ** -24 * n * m;
  switch (c.op) {
    case 'mean':
      return sum / n;
    case 'var': {
      const k = n / Math.max(1, n - 1);
      return k * (4 * m * e + (n + 8) * 2 ** -24 * 4 * m * m * n);
    }
    case 'std':
      return Math.sqrt(4 * m * e + (n + 8) * 2 ** -24 * 4 * m * m * n);
    case 'softmax':
      return 2 * e;
    case 'logSoftmax':
      return 2 * e + 2 ** -21 + 2 ** -22 * m;
    default:
      return sum;
  }
}

// Every new shape compiles new WebGPU pipelines, so the GPU runs fewer random cases.
const runs = (device: DeviceName, n: number) => (device === 'webgpu' ? Math.ceil(n / 2) : n);

async function check(device: DeviceName, c: Case, dtype: DType, { cases, steps, dims, keepdim }: { cases: TensorCase[]; steps: Step[]; dims: number[]; keepdim: boolean }) {
  // Comparisons with 0 would flip on values a few ulps apart: bool cases use correctly rounded functions only.
  const prog = buildProg(cases.length, dtype, steps, (c.exact ?? false) || dtype === 'bool');
  const xs = cases.map((tc) => makeTensor(tc, device));
  const v = prologueRef(prog, cases.map(refOf));
  // Reductions without an identity reject empty groups (not drawn: shapes have no empty dims).
  const y = runOp(c, xs, exprOf(prog), dims, keepdim);
  const atol = device === 'webgpu' ? gpuAtol(c, dtype, prog, v, dims) : 0;
  const tol = atol > 0 ? { atol: atol + (dtype === 'float16' ? 1e-3 : 1e-6) } : {};
  await expectClose(y, reference(c, dtype, v, dims, keepdim), { dtype: outDType(c, dtype), tol, what: `${c.name} of ${exprToString(exprOf(prog))}` });
  xs.forEach((t) => t.dispose());
  y.dispose();
}

describe.each(WITH_WEBGPU)('reductions with elementwise prologues on %s', (device) => {
  for (const c of CASES) {
    it.each(c.dtypes)(`${c.name} of a random prologue over broadcast, strided inputs matches the float64 reference (%s)`, async (dtype) => {
      await fc.assert(
        fc.asyncProperty(caseArb(c, dtype), (drawn) => check(device, c, dtype, drawn)),
        propertyConfig({ numRuns: runs(device, 30) }),
      );
    });
  }

  it('reads a broadcast input once per element it stands for, and reduces empty dims to the identity', async () => {
    const x = sn.tensor([[1, 2, 3], [4, 5, 6]], { device }), s = sn.tensor([10, 20, 30], { device });
    // Σ over dim 0 of x·s: [50, 140, 270].
    const mul = call('mul', [input(0, 'float32'), input(1, 'float32')], 'float32');
    await expectClose(apply1(reduceOp, [x, s], { kind: 'sum', dims: [0], keepdim: false, correction: 0, prologue: mul }), ref([3], [50, 140, 270]));
    // softmax along dim 0 of x + s·0 (a permuted view of x): s only broadcasts.
    const t = x.t();
    const add = call('add', [input(0, 'float32'), call('mul', [input(1, 'float32'), constant(0, 'float32')], 'float32')], 'float32', [1]);
    await expectClose(apply1(softmaxOp, [t, s.reshape(3, 1)], { dim: 1, prologue: add }), castAll(softmaxRef(ref([3, 2], [1, 4, 2, 5, 3, 6]), 1, false), 'float32'));
    const e = sn.zeros([2, 0], { device });
    await expectClose(apply1(reduceOp, [e, sn.ones([1], { device })], { kind: 'sum', dims: [1], keepdim: true, correction: 0, prologue: mul }), ref([2, 1], [0, 0]));
  });

  it('without a prologue, behaves as before (the attrs carry none)', async () => {
    const x = sn.tensor([[1, -2], [3, 4]], { device });
    await expectClose(apply1(reduceOp, [x], { kind: 'sum', dims: [1], keepdim: false, correction: 0 }), ref([2], [-1, 7]));
    await expectClose(sn.sum(x.mul(x), 1), ref([2], [5, 25]));
  });

  it('rejects a prologue that does not fit its inputs, naming the op and the inputs', () => {
    const x = sn.zeros([2, 3], { device }), y = sn.zeros([4], { device });
    const two = call('mul', [input(0, 'float32'), input(1, 'float32')], 'float32');
    expect(() => apply1(reduceOp, [x], { kind: 'sum', dims: [0], keepdim: false, correction: 0, prologue: two })).toThrow(
      /^sum: the prologue reads input 1 as float32, but the inputs are \[2, 3\] float32$/,
    );
    expect(() => apply1(softmaxOp, [x, sn.zeros([3], { dtype: 'int32', device })], { dim: 0, prologue: two })).toThrow(
      /^softmax: the prologue reads input 1 as float32, but the inputs are \[2, 3\] float32, \[3\] int32/,
    );
    expect(() => apply1(reduceOp, [x, y], { kind: 'max', dims: [0], keepdim: false, correction: 0, prologue: two })).toThrow(/^max: shapes \[2, 3\] and \[4\] cannot be broadcast together/);
    const gt = call('gt', [input(0, 'float32'), constant(0, 'float32')], 'bool');
    expect(() => apply1(reduceOp, [x], { kind: 'mean', dims: [0], keepdim: false, correction: 0, prologue: gt })).toThrow(/^mean: expects a float tensor, got \[2, 3\] bool/);
  });
});

// The kernels' other shapes (GPU teams in workgroup memory, with or without subgroups) read the
// prologue through the same loads; a few longer groups (more than 16 elements: teams) check them.
describe('WebGPU prologue kernels as on GPUs', () => {
  const variants = capsVariants('webgpu').slice(1);
  const long = CASES.filter((c) => ['sum', 'argmax', 'var', 'softmax', 'cumsum'].includes(c.name));
  for (const c of long) {
    it(`${c.name} (float32)`, async () => {
      for (const caps of variants) {
        await withCaps(caps, () =>
          fc.assert(
            fc.asyncProperty(caseArb(c, 'float32', { maxRank: 2, maxDim: 40 }), (drawn) => check('webgpu', c, 'float32', drawn)),
            propertyConfig({ numRuns: 4 }),
          ),
        );
      }
    });
  }
});
