import { SinterError } from '../errors.js';
import { isFloat, promoteTypes, promoteWithScalar } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';
import { type DTypeRule, type JsTypes, type TensorOrScalar, type WgslTypes, binary, defineElementwise, map } from './elementwise.js';
import { type Expr, call, cast, constant, input } from './expr.js';
import { checkInputs } from './op.js';

/** Registers an elementwise function of two arguments (its JS and WGSL forms) and returns its public form. */
function binaryOp(
  name: string,
  rule: DTypeRule,
  js: (a: string, b: string, p: readonly number[], t: JsTypes) => string,
  wgsl: (a: string, b: string, p: readonly number[], t: WgslTypes) => string,
  opts: { f16?: boolean } = {},
) {
  defineElementwise(name, { arity: 2, js: ([a, b], p, t) => js(a!, b!, p, t), wgsl: ([a, b], p, t) => wgsl(a!, b!, p, t), f16: opts.f16 });
  return (a: TensorOrScalar, b: TensorOrScalar, params: readonly number[] = []): Tensor => binary(name, a, b, rule, params);
}

/** WGSL calling `float` for float arguments and `int` for ints and bool. */
const byType = (float: string, int: string) => (a: string, b: string, _: readonly number[], t: WgslTypes) => `${isFloat(t.args[0]!) ? float : int}(${a}, ${b})`;

/** alpha·b in JS: for ints through Math.imul, exact modulo 2³² as the int32 result needs (a double product loses low bits above 2⁵³). */
const jsScaled = (alpha: number, b: string, t: JsTypes) => (isFloat(t.args[1]!) ? `${t.lit(alpha)} * ${b}` : `Math.imul(${t.lit(alpha)}, ${b})`);

// Integer results wrap modulo 2³² like C's (int8/uint8 then wrap to their width); integer division
// by zero gives 0 on every backend (PyTorch's CPU raises, its CUDA kernels give garbage), and
// div with roundingMode 'floor' rounds toward −∞ as Python's // does.
const addOp = binaryOp(
  'add', 'same',
  (a, b, [alpha], t) => (alpha === 1 ? `(${a} + ${b})` : `(${a} + ${jsScaled(alpha!, b, t)})`),
  (a, b, [alpha], t) => (alpha === 1 ? `(${a} + ${b})` : `(${a} + ${t.lit(alpha!)} * ${b})`),
  { f16: true }, // alpha ≠ 1: rounded to binary16, and its product with b rounds once more
);
const subOp = binaryOp(
  'sub', 'same',
  (a, b, [alpha], t) => (alpha === 1 ? `(${a} - ${b})` : `(${a} - ${jsScaled(alpha!, b, t)})`),
  (a, b, [alpha], t) => (alpha === 1 ? `(${a} - ${b})` : `(${a} - ${t.lit(alpha!)} * ${b})`),
  { f16: true }, // alpha ≠ 1: rounded to binary16, and its product with b rounds once more
);
const mulOp = binaryOp('mul', 'same', (a, b, _, t) => (isFloat(t.args[0]!) ? `(${a} * ${b})` : `Math.imul(${a}, ${b})`), (a, b) => `(${a} * ${b})`, { f16: true });
const divOp = binaryOp('div', 'float', (a, b) => `(${a} / ${b})`, (a, b) => `(${a} / ${b})`);
const divTruncOp = binaryOp('divTrunc', 'same', (a, b) => `Math.trunc(${a} / ${b})`, (a, b, _, t) => (isFloat(t.args[0]!) ? `trunc(${a} / ${b})` : `sn_idiv_trunc(${a}, ${b})`));
const divFloorOp = binaryOp('divFloor', 'same', (a, b) => `Math.floor(${a} / ${b})`, (a, b, _, t) => (isFloat(t.args[0]!) ? `floor(${a} / ${b})` : `sn_idiv_floor(${a}, ${b})`));
const powOp = binaryOp('pow', 'same', (a, b, _, t) => (isFloat(t.args[0]!) ? `Math.pow(${a}, ${b})` : `H.ipow(${a}, ${b})`), byType('sn_pow', 'sn_ipow'));
const maximumOp = binaryOp('maximum', 'same', (a, b) => `Math.max(${a}, ${b})`, (a, b, p, t) => byType(t.half ? 'sn_max_h' : 'sn_max', 'max')(a, b, p, t), { f16: true });
const minimumOp = binaryOp('minimum', 'same', (a, b) => `Math.min(${a}, ${b})`, (a, b, p, t) => byType(t.half ? 'sn_min_h' : 'sn_min', 'min')(a, b, p, t), { f16: true });
// NaN is unequal to everything, 0 included: written as !(a == b), since GPUs may evaluate != ordered.
const eqOp = binaryOp('eq', 'bool', (a, b) => `(${a} === ${b} ? 1 : 0)`, (a, b) => `i32(${a} == ${b})`, { f16: true });
const neOp = binaryOp('ne', 'bool', (a, b) => `(${a} !== ${b} ? 1 : 0)`, (a, b) => `i32(!(${a} == ${b}))`, { f16: true });
const ltOp = binaryOp('lt', 'bool', (a, b) => `(${a} < ${b} ? 1 : 0)`, (a, b) => `i32(${a} < ${b})`, { f16: true });
const leOp = binaryOp('le', 'bool', (a, b) => `(${a} <= ${b} ? 1 : 0)`, (a, b) => `i32(${a} <= ${b})`, { f16: true });
const gtOp = binaryOp('gt', 'bool', (a, b) => `(${a} > ${b} ? 1 : 0)`, (a, b) => `i32(${a} > ${b})`, { f16: true });
const geOp = binaryOp('ge', 'bool', (a, b) => `(${a} >= ${b} ? 1 : 0)`, (a, b) => `i32(${a} >= ${b})`, { f16: true });
const logicalAndOp = binaryOp('logicalAnd', 'bool', (a, b) => `(${a} !== 0 && ${b} !== 0 ? 1 : 0)`, (a, b) => `i32(!(${a} == 0) && !(${b} == 0))`, { f16: true });
const logicalOrOp = binaryOp('logicalOr', 'bool', (a, b) => `(${a} !== 0 || ${b} !== 0 ? 1 : 0)`, (a, b) => `i32(!(${a} == 0) || !(${b} == 0))`, { f16: true });
const logicalXorOp = binaryOp('logicalXor', 'bool', (a, b) => `((${a} !== 0) !== (${b} !== 0) ? 1 : 0)`, (a, b) => `i32((${a} == 0) != (${b} == 0))`, { f16: true });

function alphaOf(op: string, a: TensorOrScalar, b: TensorOrScalar, opts: { alpha?: number } | undefined): number {
  const alpha = opts?.alpha ?? 1;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw new SinterError(op, `alpha must be a finite number, got ${JSON.stringify(alpha)}`);
  const integral = [a, b].every((v) => (v instanceof Tensor ? !isFloat(v.dtype) : Number.isInteger(Number(v))));
  if (integral && !Number.isInteger(alpha)) throw new SinterError(op, `for integral operands alpha must be an integer (as in PyTorch), got ${alpha}`);
  return alpha;
}

/** a + alpha·b, broadcasting; either side may be a number. */
export function add(a: TensorOrScalar, b: TensorOrScalar, opts?: { alpha?: number }): Tensor {
  return addOp(a, b, [alphaOf('add', a, b, opts)]);
}
/** a − alpha·b, broadcasting; either side may be a number. */
export function sub(a: TensorOrScalar, b: TensorOrScalar, opts?: { alpha?: number }): Tensor {
  return subOp(a, b, [alphaOf('sub', a, b, opts)]);
}
export const mul = (a: TensorOrScalar, b: TensorOrScalar): Tensor => mulOp(a, b);
/** True division (ints give float32); `roundingMode: 'trunc' | 'floor'` rounds and keeps the promoted dtype. */
export function div(a: TensorOrScalar, b: TensorOrScalar, opts: { roundingMode?: 'trunc' | 'floor' | null } = {}): Tensor {
  const mode = opts.roundingMode ?? null;
  if (mode === null) return divOp(a, b);
  if (mode === 'trunc') return divTruncOp(a, b);
  if (mode === 'floor') return divFloorOp(a, b);
  throw new SinterError('div', `roundingMode must be 'trunc', 'floor' or null, got ${JSON.stringify(mode)}`);
}
export const pow = (a: TensorOrScalar, b: TensorOrScalar): Tensor => powOp(a, b);
/** Elementwise maximum; NaN propagates. */
export const maximum = (a: TensorOrScalar, b: TensorOrScalar): Tensor => maximumOp(a, b);
/** Elementwise minimum; NaN propagates. */
export const minimum = (a: TensorOrScalar, b: TensorOrScalar): Tensor => minimumOp(a, b);
export const eq = (a: TensorOrScalar, b: TensorOrScalar): Tensor => eqOp(a, b);
export const ne = (a: TensorOrScalar, b: TensorOrScalar): Tensor => neOp(a, b);
export const lt = (a: TensorOrScalar, b: TensorOrScalar): Tensor => ltOp(a, b);
export const le = (a: TensorOrScalar, b: TensorOrScalar): Tensor => leOp(a, b);
export const gt = (a: TensorOrScalar, b: TensorOrScalar): Tensor => gtOp(a, b);
export const ge = (a: TensorOrScalar, b: TensorOrScalar): Tensor => geOp(a, b);
export const logicalAnd = (a: TensorOrScalar, b: TensorOrScalar): Tensor => logicalAndOp(a, b);
export const logicalOr = (a: TensorOrScalar, b: TensorOrScalar): Tensor => logicalOrOp(a, b);
export const logicalXor = (a: TensorOrScalar, b: TensorOrScalar): Tensor => logicalXorOp(a, b);

defineElementwise('where', { arity: 3, js: ([c, a, b]) => `(${c} !== 0 ? ${a} : ${b})`, wgsl: ([c, a, b]) => `select(${b}, ${a}, ${c} != 0)`, f16: true });

/** `condition ? a : b` elementwise, broadcasting all three; condition must be a bool tensor. */
export function where(condition: Tensor, a: TensorOrScalar, b: TensorOrScalar): Tensor {
  checkInputs('where', [condition]);
  if (condition.dtype !== 'bool') throw new SinterError('where', `condition must be a bool tensor, got ${condition.describe()} (compare with a value first, e.g. gt(x, 0))`);
  const ta = a instanceof Tensor, tb = b instanceof Tensor;
  for (const v of [a, b]) {
    if (!(v instanceof Tensor) && typeof v !== 'number' && typeof v !== 'boolean') throw new SinterError('where', `a and b must be Tensors or numbers, got ${v === null ? 'null' : typeof v}`);
  }
  const tensors = [condition, ...[a, b].filter((v): v is Tensor => v instanceof Tensor)];
  checkInputs('where', tensors);
  const dtype = ta && tb ? promoteTypes((a as Tensor).dtype, (b as Tensor).dtype)
    : ta ? promoteWithScalar((a as Tensor).dtype, b as number)
    : tb ? promoteWithScalar((b as Tensor).dtype, a as number)
    : [a, b].every((v) => typeof v === 'boolean') ? 'bool' : [a, b].every((v) => Number.isInteger(Number(v))) ? 'int32' : 'float32';
  let next = 1;
  const operand = (v: TensorOrScalar): Expr => (v instanceof Tensor ? cast(input(next++, v.dtype), dtype) : constant(Number(v), dtype));
  const args = [input(0, 'bool'), operand(a), operand(b)];
  return map('where', tensors, call('where', args, dtype));
}

type Bin = (b: TensorOrScalar) => Tensor;
declare module '../tensor/tensor.js' {
  interface Tensor {
    add(other: TensorOrScalar, opts?: { alpha?: number }): Tensor;
    sub(other: TensorOrScalar, opts?: { alpha?: number }): Tensor;
    mul: Bin;
    div(other: TensorOrScalar, opts?: { roundingMode?: 'trunc' | 'floor' | null }): Tensor;
    pow: Bin; maximum: Bin; minimum: Bin;
    eq: Bin; ne: Bin; lt: Bin; le: Bin; gt: Bin; ge: Bin;
    logicalAnd: Bin; logicalOr: Bin; logicalXor: Bin;
    where(condition: Tensor, other: TensorOrScalar): Tensor;
  }
}

const methods: Record<string, (a: Tensor, b: TensorOrScalar, opts?: never) => Tensor> = { add, sub, mul, div, pow, maximum, minimum, eq, ne, lt, le, gt, ge, logicalAnd, logicalOr, logicalXor };
for (const [name, fn] of Object.entries(methods)) {
  Object.defineProperty(Tensor.prototype, name, { value: function (this: Tensor, b: TensorOrScalar, opts?: never) { return fn(this, b, opts); }, writable: true, configurable: true });
}
// x.where(condition, y) is torch.where(condition, x, y).
Object.defineProperty(Tensor.prototype, 'where', { value: function (this: Tensor, c: Tensor, other: TensorOrScalar) { return where(c, this, other); }, writable: true, configurable: true });
