import { SinterError } from '../errors.js';
import { type DType, isFloat, promoteWithScalar } from '../tensor/dtype.js';
import { maximum as maximumOf, minimum as minimumOf } from './binary.js';
import { Tensor } from '../tensor/tensor.js';
import { type DTypeRule, type JsTypes, type WgslTypes, defineElementwise, map, unary } from './elementwise.js';
import { call, cast, input } from './expr.js';
import { checkInputs } from './op.js';

/** Registers an elementwise function of one argument (its JS and WGSL forms) and returns its public form. */
function unaryOp(name: string, rule: DTypeRule, js: (x: string, p: readonly number[], t: JsTypes) => string, wgsl: (x: string, p: readonly number[], t: WgslTypes) => string, opts: { f16?: boolean } = {}) {
  defineElementwise(name, { arity: 1, js: ([x], p, t) => js(x!, p, t), wgsl: ([x], p, t) => wgsl(x!, p, t), f16: opts.f16 });
  return (x: Tensor, params: readonly number[] = []): Tensor => unary(name, x, rule, params);
}

/** WGSL that differs for float and int arguments (ints and bool compute as i32). */
const byType = (float: (x: string) => string, int: (x: string) => string) => (x: string, _: readonly number[], t: WgslTypes) => (isFloat(t.args[0]!) ? float(x) : int(x));
const same = (x: string) => x;

const SELU_ALPHA = 1.6732632423543772, SELU_SCALE = 1.0507009873554805;

// 'same': keeps ints (neg of int32 is int32); 'float': ints and bool compute in float32.
// WGSL's min/max/tanh leave NaN and extremes to the implementation: the sn_* helpers pin them to the CPU's results.
const negOp = unaryOp('neg', 'same', (x) => `(-${x})`, (x) => `(-${x})`, { f16: true });
const absOp = unaryOp('abs', 'same', (x) => `Math.abs(${x})`, (x) => `abs(${x})`, { f16: true });
const expOp = unaryOp('exp', 'float', (x) => `Math.exp(${x})`, (x) => `exp(${x})`);
const logOp = unaryOp('log', 'float', (x) => `Math.log(${x})`, (x) => `log(${x})`);
const log1pOp = unaryOp('log1p', 'float', (x) => `Math.log1p(${x})`, (x) => `sn_log1p(${x})`);
const expm1Op = unaryOp('expm1', 'float', (x) => `Math.expm1(${x})`, (x) => `sn_expm1(${x})`);
const sqrtOp = unaryOp('sqrt', 'float', (x) => `Math.sqrt(${x})`, (x) => `sqrt(${x})`);
const rsqrtOp = unaryOp('rsqrt', 'float', (x) => `(1 / Math.sqrt(${x}))`, (x) => `(1.0 / sqrt(${x}))`);
const reciprocalOp = unaryOp('reciprocal', 'float', (x) => `(1 / ${x})`, (x) => `(1.0 / ${x})`);
const sinOp = unaryOp('sin', 'float', (x) => `Math.sin(${x})`, (x) => `sn_sin(${x})`);
const cosOp = unaryOp('cos', 'float', (x) => `Math.cos(${x})`, (x) => `sn_cos(${x})`);
const tanhOp = unaryOp('tanh', 'float', (x) => `Math.tanh(${x})`, (x) => `sn_tanh(${x})`);
const sigmoidOp = unaryOp('sigmoid', 'float', (x) => `(1 / (1 + Math.exp(-${x})))`, (x) => `(1.0 / (1.0 + exp(-${x})))`);
const reluOp = unaryOp('relu', 'same', (x) => `(${x} < 0 ? 0 : ${x})`, (x) => `select(${x}, 0, ${x} < 0)`, { f16: true });
/** WGSL clamping float `x` to [lo, hi], NaN kept (the f16 helpers where arguments are f16). */
const clampFloat = (x: string, lo: string, hi: string, t: WgslTypes) => (t.half ? `sn_min_h(sn_max_h(${x}, ${lo}), ${hi})` : `sn_min(sn_max(${x}, ${lo}), ${hi})`);
const relu6Op = unaryOp('relu6', 'same', (x) => `Math.min(Math.max(${x}, 0), 6)`, (x, _, t) => (isFloat(t.args[0]!) ? clampFloat(x, '0.0', '6.0', t) : `min(max(${x}, 0), 6)`), { f16: true });
const leakyReluOp = unaryOp('leakyRelu', 'float', (x, [s], t) => `(${x} > 0 ? ${x} : ${x} * ${t.lit(s!)})`, (x, [s], t) => `select(${x} * ${t.lit(s!)}, ${x}, ${x} > 0.0)`);
const eluOp = unaryOp('elu', 'float', (x, [a], t) => `(${x} > 0 ? ${x} : ${t.lit(a!)} * Math.expm1(${x}))`, (x, [a], t) => `select(${t.lit(a!)} * sn_expm1(${x}), ${x}, ${x} > 0.0)`);
const seluOp = unaryOp('selu', 'float', (x) => `(${SELU_SCALE} * (${x} > 0 ? ${x} : ${SELU_ALPHA} * Math.expm1(${x})))`, (x) => `(${SELU_SCALE} * select(${SELU_ALPHA} * sn_expm1(${x}), ${x}, ${x} > 0.0))`);
// On the GPU as 0.5·x·erfc(−x/√2): f32 would lose 1 + erf(x/√2) to cancellation for negative x.
const geluOp = unaryOp('gelu', 'float', (x) => `(0.5 * ${x} * (1 + H.erf(${x} * Math.SQRT1_2)))`, (x) => `(0.5 * ${x} * sn_erfc(${x} * -0.7071067811865476))`);
const geluTanhOp = unaryOp(
  'geluTanh',
  'float',
  (x) => `(0.5 * ${x} * (1 + Math.tanh(0.7978845608028654 * (${x} + 0.044715 * ${x} * ${x} * ${x}))))`,
  (x) => `(0.5 * ${x} * (1.0 + sn_tanh(0.7978845608028654 * (${x} + 0.044715 * ${x} * ${x} * ${x}))))`,
);
const siluOp = unaryOp('silu', 'float', (x) => `(${x} / (1 + Math.exp(-${x})))`, (x) => `(${x} / (1.0 + exp(-${x})))`);
const softplusOp = unaryOp(
  'softplus',
  'float',
  (x, [b, th], t) => `(${x} * ${t.lit(b!)} > ${t.lit(th!)} ? ${x} : Math.log1p(Math.exp(${x} * ${t.lit(b!)})) / ${t.lit(b!)})`,
  (x, [b, th], t) => `select(sn_log1p(exp(${x} * ${t.lit(b!)})) / ${t.lit(b!)}, ${x}, ${x} * ${t.lit(b!)} > ${t.lit(th!)})`,
);
const hardSigmoidOp = unaryOp('hardSigmoid', 'float', (x) => `Math.min(Math.max(${x} / 6 + 0.5, 0), 1)`, (x) => `sn_min(sn_max(${x} / 6.0 + 0.5, 0.0), 1.0)`);
const hardSwishOp = unaryOp('hardSwish', 'float', (x) => `(${x} * Math.min(Math.max(${x} + 3, 0), 6) / 6)`, (x) => `(${x} * sn_min(sn_max(${x} + 3.0, 0.0), 6.0) / 6.0)`);
const erfOp = unaryOp('erf', 'float', (x) => `H.erf(${x})`, (x) => `sn_erf(${x})`);
// WGSL's round() rounds half to even, like torch.round; ints are already whole.
const floorOp = unaryOp('floor', 'same', (x) => `Math.floor(${x})`, byType((x) => `floor(${x})`, same), { f16: true });
const ceilOp = unaryOp('ceil', 'same', (x) => `Math.ceil(${x})`, byType((x) => `ceil(${x})`, same), { f16: true });
const roundOp = unaryOp('round', 'same', (x) => `H.roundHalfEven(${x})`, byType((x) => `round(${x})`, same), { f16: true });
const signOp = unaryOp('sign', 'same', (x) => `((${x} > 0) - (${x} < 0))`, byType((x) => `(f32(${x} > 0.0) - f32(${x} < 0.0))`, (x) => `(i32(${x} > 0) - i32(${x} < 0))`));
const logicalNotOp = unaryOp('logicalNot', 'bool', (x) => `(${x} === 0 ? 1 : 0)`, (x) => `i32(${x} == 0)`);
defineElementwise('clamp', {
  arity: 1,
  js: ([x], [lo, hi], t) => `Math.min(Math.max(${x}, ${t.lit(lo!)}), ${t.lit(hi!)})`,
  wgsl: ([x], [lo, hi], t) => (isFloat(t.args[0]!) ? clampFloat(x, t.lit(lo!), t.lit(hi!), t) : `min(max(${x}, ${t.lit(lo!)}), ${t.lit(hi!)})`),
  f16: true,
});

export const neg = (x: Tensor): Tensor => negOp(x);
export const abs = (x: Tensor): Tensor => absOp(x);
export const exp = (x: Tensor): Tensor => expOp(x);
export const log = (x: Tensor): Tensor => logOp(x);
export const log1p = (x: Tensor): Tensor => log1pOp(x);
export const expm1 = (x: Tensor): Tensor => expm1Op(x);
export const sqrt = (x: Tensor): Tensor => sqrtOp(x);
export const rsqrt = (x: Tensor): Tensor => rsqrtOp(x);
export const reciprocal = (x: Tensor): Tensor => reciprocalOp(x);
export const sin = (x: Tensor): Tensor => sinOp(x);
export const cos = (x: Tensor): Tensor => cosOp(x);
export const tanh = (x: Tensor): Tensor => tanhOp(x);
export const sigmoid = (x: Tensor): Tensor => sigmoidOp(x);
export const relu = (x: Tensor): Tensor => reluOp(x);
export const relu6 = (x: Tensor): Tensor => relu6Op(x);
export const selu = (x: Tensor): Tensor => seluOp(x);
export const silu = (x: Tensor): Tensor => siluOp(x);
export const hardSigmoid = (x: Tensor): Tensor => hardSigmoidOp(x);
export const hardSwish = (x: Tensor): Tensor => hardSwishOp(x);
export const erf = (x: Tensor): Tensor => erfOp(x);
export const floor = (x: Tensor): Tensor => floorOp(x);
export const ceil = (x: Tensor): Tensor => ceilOp(x);
/** Rounds half to even, as torch.round. */
export const round = (x: Tensor): Tensor => roundOp(x);
export const sign = (x: Tensor): Tensor => signOp(x);
export const logicalNot = (x: Tensor): Tensor => logicalNotOp(x);

/** Reads `key` from an options object, or takes a bare number as that option (PyTorch's positional form). */
function option<K extends string>(op: string, arg: number | Partial<Record<K, number>> | undefined, key: K, fallback: number): number {
  const v = typeof arg === 'number' ? arg : arg?.[key] ?? fallback;
  if (typeof v !== 'number' || Number.isNaN(v)) throw new SinterError(op, `${key} must be a number, got ${JSON.stringify(v)}`);
  return v;
}

/** x if x > 0 else x·negativeSlope (default 0.01). */
export function leakyRelu(x: Tensor, negativeSlope?: number | { negativeSlope?: number }): Tensor {
  return leakyReluOp(x, [option('leakyRelu', negativeSlope, 'negativeSlope', 0.01)]);
}
/** x if x > 0 else α·(eˣ − 1) (α defaults to 1). */
export function elu(x: Tensor, alpha?: number | { alpha?: number }): Tensor {
  return eluOp(x, [option('elu', alpha, 'alpha', 1)]);
}
/** GELU; `approximate: 'tanh'` uses the tanh form, `'none'` (default) the exact erf form. */
export function gelu(x: Tensor, opts: { approximate?: 'none' | 'tanh' } = {}): Tensor {
  const a = opts.approximate ?? 'none';
  if (a !== 'none' && a !== 'tanh') throw new SinterError('gelu', `approximate must be 'none' or 'tanh', got ${JSON.stringify(a)}`);
  return a === 'tanh' ? geluTanhOp(x) : geluOp(x);
}
/** log(1 + e^(βx))/β, linear where βx > threshold (β = 1, threshold = 20 by default). */
export function softplus(x: Tensor, beta?: number | { beta?: number; threshold?: number }, threshold?: number): Tensor {
  const opts = typeof beta === 'number' ? { beta, threshold } : (beta ?? {});
  return softplusOp(x, [option('softplus', opts, 'beta', 1), option('softplus', opts, 'threshold', 20)]);
}

export type ClampBound = number | Tensor | null | undefined;

/**
 * Limits values to [min, max]: `clamp(x, min, max)` or `clamp(x, { min, max })`. Either bound may be
 * omitted, and either may be a tensor (broadcast).
 */
export function clamp(x: Tensor, min?: ClampBound | { min?: ClampBound; max?: ClampBound }, max?: ClampBound): Tensor {
  checkInputs('clamp', [x]);
  if (min !== null && typeof min === 'object' && !(min instanceof Tensor)) ({ min, max } = min);
  if ((min === undefined || min === null) && (max === undefined || max === null)) throw new SinterError('clamp', 'at least one of min and max must be given');
  if (min instanceof Tensor || max instanceof Tensor) {
    let y = min === undefined || min === null ? x : maximumOf(x, min);
    if (max !== undefined && max !== null) {
      const z = minimumOf(y, max);
      if (y !== x) y.dispose();
      y = z;
    }
    return y;
  }
  let dtype: DType = x.dtype;
  for (const b of [min, max]) if (typeof b === 'number') dtype = promoteWithScalar(dtype, b);
  const lo = typeof min === 'number' ? min : -Infinity, hi = typeof max === 'number' ? max : Infinity;
  return map('clamp', [x], call('clamp', [cast(input(0, x.dtype), dtype)], dtype, [lo, hi]));
}


declare module '../tensor/tensor.js' {
  interface Tensor {
    neg(): Tensor; abs(): Tensor; exp(): Tensor; log(): Tensor; log1p(): Tensor; expm1(): Tensor;
    sqrt(): Tensor; rsqrt(): Tensor; reciprocal(): Tensor; sin(): Tensor; cos(): Tensor; tanh(): Tensor;
    sigmoid(): Tensor; relu(): Tensor; erf(): Tensor; floor(): Tensor; ceil(): Tensor; round(): Tensor;
    sign(): Tensor; logicalNot(): Tensor;
    clamp(min?: ClampBound | { min?: ClampBound; max?: ClampBound }, max?: ClampBound): Tensor;
  }
}

const methods: Record<string, (x: Tensor) => Tensor> = { neg, abs, exp, log, log1p, expm1, sqrt, rsqrt, reciprocal, sin, cos, tanh, sigmoid, relu, erf, floor, ceil, round, sign, logicalNot };
for (const [name, fn] of Object.entries(methods)) {
  Object.defineProperty(Tensor.prototype, name, { value: function (this: Tensor) { return fn(this); }, writable: true, configurable: true });
}
Object.defineProperty(Tensor.prototype, 'clamp', {
  value: function (this: Tensor, min?: ClampBound | { min?: ClampBound; max?: ClampBound }, max?: ClampBound) { return clamp(this, min, max); },
  writable: true,
  configurable: true,
});
