import { SinterError, check } from '../errors.js';
import { type DType, castValue, isFloat } from '../tensor/dtype.js';
import { broadcastShapes, sameShape } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { readContiguous } from '../kernels/cpu/util.js';
import { literal } from '../kernels/wgsl/dtype.js';
import { wordKernel } from '../kernels/wgsl/movement.js';
import { KernelParams } from '../kernels/wgsl/params.js';
import { offsetOf, unravel } from '../kernels/wgsl/strided.js';
import { where } from './binary.js';
import { defineElementwise, unary } from './elementwise.js';
import { apply1, checkInputs, defineOp, describeMeta } from './op.js';
import { to } from './views.js';

// Masks: the triangles of matrices (triu/tril), filling where a mask holds, and the float-class
// tests (isnan, isinf, isfinite) with nanToNum. The tests are elementwise functions, so the JIT
// fuses them like any other.

export interface TriangleAttrs {
  /** triu keeps col − row ≥ diagonal; tril keeps col − row ≤ diagonal. */
  readonly upper: boolean;
  readonly diagonal: number;
}

// Diagonals beyond ±(2³¹ − 1) keep or drop the same elements (dims are below 2³¹), so the kernel clamps them into i32.
const I32_MAX = 2147483647;

/** triu/tril: the last two dims are the matrix; what lies outside the triangle becomes 0. */
export const triangleOp = defineOp<TriangleAttrs>({
  name: 'triangle',
  infer([x], { upper }) {
    check(x!.shape.length >= 2, upper ? 'triu' : 'tril', () => `expects a tensor of at least 2 dims (matrices in the last two), got ${describeMeta(x!)}`);
    return [{ shape: [...x!.shape], dtype: x!.dtype }];
  },
  cpu([x], { upper, diagonal }, [out]) {
    const v = readContiguous(x!), o = out!.data, r = x!.shape.length;
    const rows = x!.shape[r - 2]!, cols = x!.shape[r - 1]!;
    for (let i = 0; i < o.length; i++) {
      const col = i % cols, row = Math.floor(i / cols) % rows;
      o[i] = (upper ? col - row >= diagonal : col - row <= diagonal) ? v[i]! : 0;
    }
  },
  webgpu([x], { upper, diagonal }, [out], caps) {
    const r = x!.shape.length;
    const { lines, idx } = unravel('e', out!.shape);
    // The diagonal and x's offset are kernel parameters: every diagonal shares one pipeline.
    const params = new KernelParams();
    const keep = `i32(${idx[r - 1]}) - i32(${idx[r - 2]}) ${upper ? '>=' : '<='} ${params.scalar(Math.min(Math.max(diagonal, -I32_MAX), I32_MAX), 'i32', literal)}`;
    const zero = isFloat(x!.dtype) ? '0.0' : '0';
    const at = `${offsetOf(0, x!.strides, idx)} + ${params.u32(x!.offset)}`;
    return wordKernel(upper ? 'triu' : 'tril', [x!.dtype], out!, [...lines, `return select(${zero}, load0(${at}), ${keep});`], caps, undefined, params);
  },
});

function triangle(op: 'triu' | 'tril', x: Tensor, diagonal: number | { diagonal?: number } | undefined): Tensor {
  checkInputs(op, [x]);
  const d = typeof diagonal === 'object' && diagonal !== null ? diagonal.diagonal ?? 0 : diagonal ?? 0;
  if (typeof d !== 'number' || !Number.isInteger(d)) throw new SinterError(op, `diagonal must be an integer, got ${JSON.stringify(d)}`);
  return apply1(triangleOp, [x], { upper: op === 'triu', diagonal: d });
}

/** The upper triangle of the matrices in the last two dims (col − row ≥ diagonal, default 0); the rest is 0. */
export function triu(x: Tensor, diagonal?: number | { diagonal?: number }): Tensor {
  return triangle('triu', x, diagonal);
}
/** The lower triangle of the matrices in the last two dims (col − row ≤ diagonal, default 0); the rest is 0. */
export function tril(x: Tensor, diagonal?: number | { diagonal?: number }): Tensor {
  return triangle('tril', x, diagonal);
}

/**
 * x with `value` wherever the bool `mask` (broadcast to x's shape) holds; the result keeps x's dtype
 * (value is cast to it, as in PyTorch). `value` may be a number, a boolean or a 0-d tensor.
 */
export function maskedFill(x: Tensor, mask: Tensor, value: number | boolean | Tensor): Tensor {
  checkInputs('maskedFill', [x, mask]);
  if (mask.dtype !== 'bool') throw new SinterError('maskedFill', `mask must be a bool tensor, got ${mask.describe()}`);
  const shape = broadcastShapes('maskedFill', x.shape, mask.shape);
  if (!sameShape(shape, x.shape)) throw new SinterError('maskedFill', `mask ${mask.describe()} must broadcast to the shape of ${x.describe()}, but they broadcast to [${shape.join(', ')}]`);
  if (value instanceof Tensor) {
    checkInputs('maskedFill', [x, value]);
    if (value.ndim !== 0) throw new SinterError('maskedFill', `value must be a number or a 0-d tensor, got ${value.describe()}`);
    const v = to(value, x.dtype);
    const out = where(mask, v, x);
    if (v !== value) v.dispose();
    return out;
  }
  if (typeof value !== 'number' && typeof value !== 'boolean') throw new SinterError('maskedFill', `value must be a number, a boolean or a 0-d tensor, got ${value === null ? 'null' : typeof value}`);
  const v = castValue(x.dtype, Number(value));
  return where(mask, x.dtype === 'bool' ? v !== 0 : v, x);
}

const F32_MAX = 3.4028234663852886e38, F16_MAX = 65504;
const floatMax = (d: DType): number => (d === 'float16' ? F16_MAX : F32_MAX);

// ints and bool are never NaN or infinite.
defineElementwise('isnan', {
  arity: 1,
  js: ([x]) => `(${x} !== ${x} ? 1 : 0)`,
  wgsl: ([x], _, t) => (isFloat(t.args[0]!) ? `i32(sn_isnan(${x}))` : '0'),
});
defineElementwise('isinf', {
  arity: 1,
  js: ([x]) => `(Math.abs(${x}) === Infinity ? 1 : 0)`,
  wgsl: ([x], _, t) => (isFloat(t.args[0]!) ? `i32((bitcast<u32>(${x}) & 0x7fffffffu) == 0x7f800000u)` : '0'),
});
defineElementwise('isfinite', {
  arity: 1,
  js: ([x]) => `(Number.isFinite(${x}) ? 1 : 0)`,
  wgsl: ([x], _, t) => (isFloat(t.args[0]!) ? `i32((bitcast<u32>(${x}) & 0x7f800000u) != 0x7f800000u)` : '1'),
});
defineElementwise('nanToNum', {
  arity: 1,
  js: ([x], [nan, pos, neg], t) => `(${x} !== ${x} ? ${t.lit(nan!)} : ${x} === Infinity ? ${t.lit(pos!)} : ${x} === -Infinity ? ${t.lit(neg!)} : ${x})`,
  wgsl: ([x], [nan, pos, neg], t) =>
    isFloat(t.args[0]!)
      ? `select(select(select(${x}, ${t.lit(neg!)}, ${x} == -sn_inf()), ${t.lit(pos!)}, ${x} == sn_inf()), ${t.lit(nan!)}, sn_isnan(${x}))`
      : x!,
});

/** True where x is NaN (bool; always false for ints). */
export const isnan = (x: Tensor): Tensor => unary('isnan', x, 'bool');
/** True where x is +∞ or −∞. */
export const isinf = (x: Tensor): Tensor => unary('isinf', x, 'bool');
/** True where x is neither NaN nor infinite. */
export const isfinite = (x: Tensor): Tensor => unary('isfinite', x, 'bool');

export interface NanToNumOptions {
  /** Replaces NaN (default 0). */
  nan?: number;
  /** Replaces +∞ (default: the dtype's largest finite value). */
  posinf?: number;
  /** Replaces −∞ (default: the dtype's most negative finite value). */
  neginf?: number;
}

/** NaN, +∞ and −∞ replaced by finite values: `nanToNum(x, nan?, posinf?, neginf?)` or `nanToNum(x, { nan, posinf, neginf })`. */
export function nanToNum(x: Tensor, nan?: number | NanToNumOptions, posinf?: number, neginf?: number): Tensor {
  checkInputs('nanToNum', [x]);
  const o: NanToNumOptions = typeof nan === 'object' && nan !== null ? nan : { nan, posinf, neginf };
  const big = floatMax(x.dtype);
  const params = [o.nan ?? 0, o.posinf ?? big, o.neginf ?? -big];
  for (const [k, v] of [['nan', params[0]], ['posinf', params[1]], ['neginf', params[2]]] as const) {
    if (typeof v !== 'number') throw new SinterError('nanToNum', `${k} must be a number, got ${JSON.stringify(v)}`);
  }
  return unary('nanToNum', x, 'same', params.map((v) => (isFloat(x.dtype) ? castValue(x.dtype, v) : v)));
}

declare module '../tensor/tensor.js' {
  interface Tensor {
    triu(diagonal?: number | { diagonal?: number }): Tensor;
    tril(diagonal?: number | { diagonal?: number }): Tensor;
    maskedFill(mask: Tensor, value: number | boolean | Tensor): Tensor;
    isnan(): Tensor;
    isinf(): Tensor;
    isfinite(): Tensor;
    nanToNum(nan?: number | NanToNumOptions, posinf?: number, neginf?: number): Tensor;
  }
}

Object.assign(Tensor.prototype, {
  triu(this: Tensor, diagonal?: number | { diagonal?: number }) { return triu(this, diagonal); },
  tril(this: Tensor, diagonal?: number | { diagonal?: number }) { return tril(this, diagonal); },
  maskedFill(this: Tensor, mask: Tensor, value: number | boolean | Tensor) { return maskedFill(this, mask, value); },
  isnan(this: Tensor) { return isnan(this); },
  isinf(this: Tensor) { return isinf(this); },
  isfinite(this: Tensor) { return isfinite(this); },
  nanToNum(this: Tensor, nan?: number | NanToNumOptions, posinf?: number, neginf?: number) { return nanToNum(this, nan, posinf, neginf); },
});
