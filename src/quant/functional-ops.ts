import { SinterError, fmtShape } from '../errors.js';
import { type Expr, call, cast, constant, input as arg } from '../ops/expr.js';
import { map } from '../ops/elementwise.js';
import { type MaxPool1dOptions, maxPool1d as floatMaxPool1d } from '../ops/functional.js';
import { type InterpolateMode, type InterpolateOptions, interpolate as floatInterpolate } from '../ops/interpolate.js';
import { matmul } from '../ops/linalg.js';
import { type AvgPool2dOptions, type IntPair, avgPool2d as floatAvgPool2d } from '../ops/pool.js';
import { indexSelect } from '../ops/movement.js';
import { reshape } from '../ops/views.js';
import { fromHost } from '../tensor/creation.js';
import { Tensor } from '../tensor/tensor.js';
import { conv2d } from './functional.js';
import { roundHalfEven } from './observer.js';
import { type QDType, QRANGE, QuantizedTensor, STORAGE_DTYPE, isQuantized, quantizePerTensor } from './qtensor.js';

// torch.ao.nn.quantized.functional's pooling, resampling and activation ops, with PyTorch 1.13's output
// quantisation and rounding (its CPU kernels in aten/src/ATen/native/quantized/cpu/). Ops that PyTorch
// runs on the integers (max pools, nearest resampling, clamp/hardtanh, the avg pools' integer sums)
// run on the integers here too, so they are exact; the activations dequantise, apply the float32
// formula PyTorch's kernel uses, node by node, and quantise with PyTorch's quantize_val. All of them take
// tensors quantised per tensor only, as PyTorch does. Per-call values (zero points, slopes, bounds,
// multipliers) enter the kernels as tensor inputs, not as literals, so one compiled kernel serves them all.

/** The input checks every op here shares: a quantised tensor, per tensor (PyTorch refuses per channel). */
function perTensorInput(op: string, q: unknown): QuantizedTensor {
  if (!isQuantized(q)) {
    throw new SinterError(op, `the input must be a quantised tensor (sn.quantizePerTensor), got ${q instanceof Tensor ? q.describe() : typeof q}`);
  }
  if (q.params.axis !== null) throw new SinterError(op, `expects a tensor quantised per tensor, got ${q.describe()} quantised per channel (axis ${q.params.axis})`);
  return q;
}

function checkOutputParams(op: string, scale: unknown, zeroPoint: unknown, dtype: QDType): [number, number] {
  const [lo, hi] = QRANGE[dtype];
  if (typeof scale !== 'number' || !(Math.fround(scale) > 0) || !Number.isFinite(Math.fround(scale))) {
    throw new SinterError(op, `the output scale must be a positive finite number, got ${String(scale)}`);
  }
  if (typeof zeroPoint !== 'number' || !Number.isInteger(zeroPoint) || zeroPoint < lo || zeroPoint > hi) {
    throw new SinterError(op, `the output zero point must be an integer in [${lo}, ${hi}] for ${dtype}, got ${String(zeroPoint)}`);
  }
  return [scale, zeroPoint];
}

function checkNumber(op: string, name: string, v: unknown): number {
  if (typeof v !== 'number' || Number.isNaN(v)) throw new SinterError(op, `${name} must be a number, got ${JSON.stringify(v)}`);
  return v;
}

// Expression nodes in float32, one rounding per node, as PyTorch's float kernels compute.
const F32 = 'float32';
/** A fixed constant of a formula (3, 6, 0, 1): per-call values go in as `scalar` inputs instead. */
const k32 = (v: number): Expr => constant(v, F32);
/** A per-call number as a 0-d tensor input of the kernel. */
const scalar = (op: string, v: number, device: Tensor['device'], dtype: 'float32' | 'int32' = F32): Tensor =>
  fromHost(op, dtype === F32 ? Float32Array.of(v) : Int32Array.of(v), [], dtype, device);
const bin = (fn: string, a: Expr, b: Expr): Expr => call(fn, [a, b], F32, fn === 'add' || fn === 'sub' ? [1] : []);
const select = (cond: Expr, a: Expr, b: Expr): Expr => call('where', [cond, a, b], F32);
const gt = (a: Expr, b: Expr): Expr => call('gt', [a, b], 'bool');
const input0F32 = arg(0, F32);
/** clamp(round(v), qmin, qmax) as the integers of `dtype`. */
const saturate = (v: Expr, dtype: QDType): Expr => cast(call('clamp', [call('round', [v], F32)], F32, [...QRANGE[dtype]]), STORAGE_DTYPE[dtype]);

/** The integers q − offset as float32 (exact). */
function integersAsFloat(op: string, q: QuantizedTensor, offset: number): Tensor {
  const repr = q.intRepr();
  const inputs = offset === 0 ? [repr] : [repr, scalar(op, offset, repr.device)];
  try {
    const x = cast(arg(0, repr.dtype), F32);
    return map(op, inputs, offset === 0 ? x : bin('sub', x, arg(1, F32)));
  } finally {
    for (const t of inputs) t.dispose();
  }
}

/** Wraps the result of `expr` over `inputs` (integers of `dtype`) as a quantised tensor; disposes `inputs`. */
function finishInt(op: string, inputs: Tensor[], expr: Expr, dtype: QDType, scale: number, zeroPoint: number): QuantizedTensor {
  try {
    return new QuantizedTensor(map(op, inputs, expr), dtype, { scales: Float64Array.of(scale), zeroPoints: Int32Array.of(zeroPoint), axis: null });
  } finally {
    for (const t of inputs) t.dispose();
  }
}

/**
 * Runs `f` on the integers as float32 (the order of integers is the order of values, and `f` only picks
 * or copies them) and wraps the result with the input's scale and zero point: exact.
 */
function onIntegers(op: string, input: QuantizedTensor, f: (x: Tensor) => Tensor): QuantizedTensor {
  const x = integersAsFloat(op, input, 0);
  let y: Tensor;
  try {
    y = f(x);
  } finally {
    x.dispose();
  }
  return finishInt(op, [y], cast(input0F32, STORAGE_DTYPE[input.dtype]), input.dtype, input.params.scales[0]!, input.params.zeroPoints[0]!);
}

/**
 * Dequantises, applies `body` (a float32 expression of the value x) and quantises with `scale` and
 * `zeroPoint` (PyTorch's quantize_val: zeroPoint + round(y · (1/scale)), saturated).
 */
function elementwise(op: string, q: QuantizedTensor, scale: number, zeroPoint: number, values: readonly number[], body: (x: Expr, values: Expr[]) => Expr): QuantizedTensor {
  const x = q.dequantize();
  const inputs = [x, ...values.map((v) => scalar(op, v, x.device))];
  let y: Tensor;
  try {
    y = map(op, inputs, body(input0F32, values.map((_, i) => arg(i + 1, F32))));
  } finally {
    for (const t of inputs) t.dispose();
  }
  try {
    return quantizePerTensor(y, scale, zeroPoint, q.dtype);
  } finally {
    y.dispose();
  }
}

/** PyTorch's quantize_val on the host: zeroPoint + round(float32(v) · float32(1/scale)), saturated. */
function quantizeValue(v: number, scale: number, zeroPoint: number, dtype: QDType): number {
  const [lo, hi] = QRANGE[dtype];
  const r = zeroPoint + roundHalfEven(Math.fround(Math.fround(v) * Math.fround(1 / Math.fround(scale))));
  return Math.min(Math.max(r, lo), hi);
}

/**
 * Whether PyTorch's avg pools take their NHWC kernel for this NCHW-contiguous input: it does when the
 * tensor is channels-last contiguous as well, i.e. batched with one channel or a 1×1 (×1) image. That kernel
 * rounds differently: zeroPoint + round(sum · inv), with inv = float32(1/float32(1/multiplier)) (its
 * quantize_val of the reciprocal), instead of round(sum · multiplier + zeroPoint).
 */
function nhwcKernel(q: QuantizedTensor, spatialDims: 2 | 3 = 2): boolean {
  const [c, ...spatial] = q.shape.slice(1);
  return q.ndim === spatialDims + 2 && (c === 1 || spatial.every((n) => n === 1));
}

/** PyTorch's quantize_val(1/multiplier, …)'s inverse scale: float32(1 / float32(1 / multiplier)). */
const reciprocalTwice = (multiplier: number) => Math.fround(1 / Math.fround(1 / multiplier));

function pair(op: string, name: string, v: IntPair | null | undefined, dflt: [number, number]): [number, number] {
  if (v === undefined || v === null || (Array.isArray(v) && v.length === 0)) return dflt;
  const p = typeof v === 'number' ? [v, v] : v.length === 1 ? [v[0]!, v[0]!] : [...v];
  if (p.length !== 2 || !p.every((x) => Number.isInteger(x))) throw new SinterError(op, `${name} must be an integer or two, got ${JSON.stringify(v)}`);
  return p as [number, number];
}

/**
 * `torch.ao.nn.quantized.functional.avg_pool2d`: [N, C, H, W] or [C, H, W]; the output keeps the input's
 * scale and zero point. As PyTorch's kernel: the integer sum of (q − zeroPoint) over the window's
 * in-bounds taps, times the float32 multiplier 1/divisor (divisor as in the float op: the window's size
 * with or without padding, or `divisorOverride`), plus the zero point, rounded half to even, saturated.
 */
export function avgPool2d(input: QuantizedTensor, kernelSize: IntPair, opts: AvgPool2dOptions = {}): QuantizedTensor {
  const op = 'quant.avgPool2d';
  const q = perTensorInput(op, input);
  if (q.ndim !== 3 && q.ndim !== 4) throw new SinterError(op, `expects a [N, C, H, W] or [C, H, W] input, got ${q.describe()}`);
  const [kh, kw] = pair(op, 'kernelSize', kernelSize, [0, 0]);
  const [sh, sw] = pair(op, 'stride', opts.stride, [kh, kw]);
  const [ph, pw] = pair(op, 'padding', opts.padding, [0, 0]);
  // Window sums of |q − zeroPoint| ≤ 255 stay exact in float32 (below 2^24) up to 65793 taps.
  if (kh * kw > 65793) throw new SinterError(op, `kernels of more than 65793 taps are not supported (got ${kh}×${kw}); use adaptiveAvgPool2d for global pooling`);
  const zp = q.params.zeroPoints[0]!;
  const centred = integersAsFloat(op, q, zp);
  let sums: Tensor;
  try {
    // Sums of integers below 2^24: exact in float32, in any order.
    sums = floatAvgPool2d(centred, kernelSize, { ...opts, divisorOverride: 1 });
  } finally {
    centred.dispose();
  }
  const [height, width] = q.shape.slice(-2) as [number, number];
  const [oh, ow] = sums.shape.slice(-2) as [number, number];
  const extent = (o: number, s: number, p: number, k: number, n: number) => {
    const start = o * s - p, end = Math.min(start + k, n + p);
    return { padded: end - start, inside: Math.min(end, n) - Math.max(start, 0) };
  };
  const nhwc = nhwcKernel(q);
  const multipliers = new Float32Array(oh * ow);
  for (let i = 0; i < oh; i++) {
    const eh = extent(i, sh, ph, kh, height);
    for (let j = 0; j < ow; j++) {
      const ew = extent(j, sw, pw, kw, width);
      const divisor = opts.divisorOverride ?? ((opts.countIncludePad ?? true) ? eh.padded * ew.padded : eh.inside * ew.inside);
      multipliers[i * ow + j] = nhwc ? reciprocalTwice(Math.fround(1 / divisor)) : Math.fround(1 / divisor);
    }
  }
  const m = fromHost(op, multipliers, [oh, ow], F32, q.device);
  const scaled = bin('mul', input0F32, arg(1, F32));
  const expr = saturate(nhwc ? bin('add', call('round', [scaled], F32), arg(2, F32)) : bin('add', scaled, arg(2, F32)), q.dtype);
  return finishInt(op, [sums, m, scalar(op, zp, q.device)], expr, q.dtype, q.params.scales[0]!, zp);
}

export interface QAvgPool3dOptions {
  /** Default: kernelSize. */
  stride?: number | readonly number[] | null;
  /** Zero padding on both sides, at most half the kernel. Default 0. */
  padding?: number | readonly number[];
  ceilMode?: boolean;
  /** Count padding in the divisor. Default true. */
  countIncludePad?: boolean;
  divisorOverride?: number | null;
}

/**
 * `torch.ao.nn.quantized.functional.avg_pool3d` on [N, C, D, H, W] or [C, D, H, W]; the output keeps the
 * input's scale and zero point. PyTorch runs every input through its NDHWC kernel: the integer sum of
 * (q − zeroPoint) over the window's in-bounds taps, zeroPoint + round(sum · inv) with inv the reciprocal
 * twice of float32(1/divisor) (divisor as avgPool2d's), saturated.
 */
export function avgPool3d(input: QuantizedTensor, kernelSize: number | readonly number[], opts: QAvgPool3dOptions = {}): QuantizedTensor {
  const op = 'quant.avgPool3d';
  const q = perTensorInput(op, input);
  if (q.ndim !== 4 && q.ndim !== 5) throw new SinterError(op, `expects a [N, C, D, H, W] or [C, D, H, W] input, got ${q.describe()}`);
  const triple = (name: string, v: number | readonly number[] | null | undefined, dflt: number[]): number[] => {
    if (v === undefined || v === null || (Array.isArray(v) && v.length === 0)) return dflt;
    const t = typeof v === 'number' ? [v, v, v] : v.length === 1 ? [v[0]!, v[0]!, v[0]!] : [...v];
    if (t.length !== 3 || !t.every((x) => Number.isInteger(x))) throw new SinterError(op, `${name} must be an integer or three, got ${JSON.stringify(v)}`);
    return t;
  };
  const kernel = triple('kernelSize', kernelSize, []);
  if (kernel.length !== 3) throw new SinterError(op, 'kernelSize is required');
  const stride = triple('stride', opts.stride, kernel), padding = triple('padding', opts.padding, [0, 0, 0]);
  const ceilMode = opts.ceilMode ?? false, countIncludePad = opts.countIncludePad ?? true, divisorOverride = opts.divisorOverride ?? null;
  if (kernel.some((k) => k < 1) || stride.some((x) => x < 1)) throw new SinterError(op, `kernelSize and stride must be ≥ 1, got ${JSON.stringify(kernel)} and ${JSON.stringify(stride)}`);
  if (padding.some((p, d) => p < 0 || p > kernel[d]! / 2)) throw new SinterError(op, `padding must be between 0 and half the kernel size, got ${JSON.stringify(padding)} for kernel ${JSON.stringify(kernel)}`);
  if (divisorOverride !== null && (!Number.isInteger(divisorOverride) || divisorOverride === 0)) throw new SinterError(op, `divisorOverride must be a non-zero integer, got ${JSON.stringify(divisorOverride)}`);
  const spatial = q.shape.slice(-3);
  // PyTorch's pooling_output_shape; in ceil mode the last window must start inside the input or the left padding.
  const out = spatial.map((n, d) => {
    const k = kernel[d]!, s = stride[d]!, p = padding[d]!;
    let o = Math.floor((n + 2 * p - k + (ceilMode ? s - 1 : 0)) / s) + 1;
    if (ceilMode && (o - 1) * s >= n + p) o--;
    return o;
  });
  if (out.some((o) => o < 1)) throw new SinterError(op, `kernel ${JSON.stringify(kernel)} (padding ${JSON.stringify(padding)}) does not fit the input ${fmtShape(spatial)}: output size ${fmtShape(out)}`);
  const windows = spatial.map((n, d) => Array.from({ length: out[d]! }, (_, i) => {
    const start = i * stride[d]! - padding[d]!, end = Math.min(start + kernel[d]!, n + padding[d]!);
    return { padded: end - start, inside: [Math.max(start, 0), Math.min(end, n)] as const };
  }));
  const zp = q.params.zeroPoints[0]!;
  const cells = out.reduce((a, b) => a * b, 1);
  const inverses = new Float32Array(cells), offsets = new Int32Array(cells);
  for (let c = 0; c < cells; c++) {
    const [i, j, l] = [Math.floor(c / (out[1]! * out[2]!)), Math.floor(c / out[2]!) % out[1]!, c % out[2]!];
    const w = [windows[0]![i]!, windows[1]![j]!, windows[2]![l]!];
    const size = w.reduce((a, x) => a * (x.inside[1] - x.inside[0]), 1);
    const divisor = divisorOverride ?? (countIncludePad ? w.reduce((a, x) => a * x.padded, 1) : size);
    inverses[c] = reciprocalTwice(Math.fround(1 / divisor));
    offsets[c] = zp * size;
  }
  const sums = windowSums(op, q, spatial, out, windows.map((ws) => ws.map((x) => x.inside)));
  const centred = cast(call('sub', [arg(0, 'int32'), arg(2, 'int32')], 'int32', [1]), F32);
  const expr = saturate(bin('add', call('round', [bin('mul', centred, arg(1, F32))], F32), arg(3, F32)), q.dtype);
  const inputs = [sums, fromHost(op, inverses, out, F32, q.device), fromHost(op, offsets, out, 'int32', q.device), scalar(op, zp, q.device)];
  return finishInt(op, inputs, expr, q.dtype, q.params.scales[0]!, zp);
}

/**
 * `torch.ao.nn.quantized.functional.adaptive_avg_pool2d`: [N, C, H, W] or [C, H, W] to `outputSize`
 * (a number, or [h, w] with null keeping that input size); the output keeps the input's scale and zero
 * point. As PyTorch's kernel: window i spans [floor(i·in/out), ceil((i+1)·in/out)) (in float32), the
 * integer sum of q over the window times float32(float32(1/kh)/kw), rounded half to even.
 */
export function adaptiveAvgPool2d(input: QuantizedTensor, outputSize: number | readonly (number | null)[]): QuantizedTensor {
  return adaptiveAvgPool('quant.adaptiveAvgPool2d', input, outputSize, 2);
}

/** `torch.ao.nn.quantized.functional.adaptive_avg_pool3d`: as adaptiveAvgPool2d over [N, C, D, H, W] or [C, D, H, W] (multiplier float32(float32(float32(1/kd)/kh)/kw)). */
export function adaptiveAvgPool3d(input: QuantizedTensor, outputSize: number | readonly (number | null)[]): QuantizedTensor {
  return adaptiveAvgPool('quant.adaptiveAvgPool3d', input, outputSize, 3);
}

function adaptiveAvgPool(op: string, input: QuantizedTensor, outputSize: number | readonly (number | null)[], k: 2 | 3): QuantizedTensor {
  const q = perTensorInput(op, input);
  const layout = k === 2 ? '[N, C, H, W] or [C, H, W]' : '[N, C, D, H, W] or [C, D, H, W]';
  if (q.ndim !== k + 1 && q.ndim !== k + 2) throw new SinterError(op, `expects a ${layout} input, got ${q.describe()}`);
  const spatial = q.shape.slice(-k);
  const sizes = typeof outputSize === 'number' ? new Array<number>(k).fill(outputSize) : [...outputSize];
  if (sizes.length !== k) throw new SinterError(op, `outputSize must be a number or ${k}, got ${JSON.stringify(outputSize)}`);
  const out = sizes.map((s, i) => s ?? spatial[i]!);
  if (!out.every((s) => Number.isInteger(s) && s >= 1)) throw new SinterError(op, `outputSize must be positive integers, got ${JSON.stringify(outputSize)}`);
  if (spatial.some((n) => n < 1)) throw new SinterError(op, `expects non-empty spatial dims, got ${q.describe()}`);
  const windows = spatial.map((n, d) => Array.from({ length: out[d]! }, (_, i) => {
    const o = out[d]!;
    return [Math.floor(Math.fround(Math.fround(i * n) / o)), Math.ceil(Math.fround(Math.fround((i + 1) * n) / o))] as const;
  }));
  // NCHW kernel: round(Σq · m) with m = float32(1/kd) then float32(m/kh), float32(m/kw); NHWC kernel (see
  // nhwcKernel): zeroPoint + round((Σq − zeroPoint·size) · inv) with inv the reciprocal twice of float32(1/size).
  const nhwc = nhwcKernel(q, k), zp = q.params.zeroPoints[0]!;
  const cells = out.reduce((a, b) => a * b, 1);
  const multipliers = new Float32Array(cells), offsets = new Int32Array(cells);
  for (let c = 0; c < cells; c++) {
    let rest = c, m = 1, size = 1;
    const extents = out.map(() => 0);
    for (let d = k - 1; d >= 0; d--) {
      const [start, end] = windows[d]![rest % out[d]!]!;
      extents[d] = end - start;
      rest = Math.floor(rest / out[d]!);
    }
    for (const e of extents) {
      m = Math.fround(m / e);
      size *= e;
    }
    multipliers[c] = nhwc ? reciprocalTwice(Math.fround(1 / size)) : m;
    offsets[c] = zp * size;
  }
  const sums = windowSums(op, q, spatial, out, windows);
  const m = fromHost(op, multipliers, out, F32, q.device);
  // The sums convert to float32 as PyTorch's do in `sum * multiplier` (rounding above 2^24); the NHWC
  // kernel centres them in int32 first.
  if (!nhwc) return finishInt(op, [sums, m], saturate(bin('mul', cast(arg(0, 'int32'), F32), arg(1, F32)), q.dtype), q.dtype, q.params.scales[0]!, zp);
  const centred = cast(call('sub', [arg(0, 'int32'), arg(2, 'int32')], 'int32', [1]), F32);
  const expr = saturate(bin('add', call('round', [bin('mul', centred, arg(1, F32))], F32), arg(3, F32)), q.dtype);
  return finishInt(op, [sums, m, fromHost(op, offsets, out, 'int32', q.device), scalar(op, zp, q.device)], expr, q.dtype, q.params.scales[0]!, zp);
}

/**
 * Integer sums of q over windows [start, end) of each spatial dim, as int32 products with 0/1 window
 * matrices, one dim at a time from the last: exact for any window (PyTorch sums in integers too).
 */
function windowSums(op: string, q: QuantizedTensor, spatial: readonly number[], out: readonly number[], windows: (readonly (readonly [number, number])[])[]): Tensor {
  const k = spatial.length, lead = q.shape.slice(0, q.ndim - k);
  const repr = q.intRepr();
  let t: Tensor;
  try {
    t = map(op, [repr], cast(arg(0, repr.dtype), 'int32'));
  } finally {
    repr.dispose();
  }
  for (let d = k - 1; d >= 0; d--) {
    const n = spatial[d]!, o = out[d]!;
    const ones = new Int32Array(o * n);
    windows[d]!.forEach(([s, e], i) => ones.fill(1, i * n + s, i * n + e));
    const a = fromHost(op, ones, [o, n], 'int32', q.device);
    // [..., n, R] with R the already-summed dims after d: [o, n] @ [..., n, R] gives [..., o, R].
    const after = out.slice(d + 1).reduce((x, y) => x * y, 1);
    const before = spatial.slice(0, d);
    const r = reshape(t, [...lead, ...before, n, after]);
    let next: Tensor;
    try {
      next = matmul(a, r);
    } finally {
      a.dispose();
      if (r !== t) r.dispose();
      t.dispose();
    }
    t = next;
  }
  const shaped = reshape(t, [...lead, ...out]);
  if (shaped !== t) t.dispose();
  return shaped;
}

/** `torch.ao.nn.quantized.functional.max_pool1d` on [N, C, L] or [C, L]: the output keeps the input's scale and zero point (exact). */
export function maxPool1d(input: QuantizedTensor, kernelSize: number | readonly [number], opts: MaxPool1dOptions = {}): QuantizedTensor {
  const op = 'quant.maxPool1d';
  return onIntegers(op, perTensorInput(op, input), (x) => floatMaxPool1d(x, kernelSize, opts));
}

export interface QConv1dOptions {
  stride?: number | readonly [number];
  padding?: number | readonly [number];
  dilation?: number | readonly [number];
  groups?: number;
  /** Only 'zeros', as PyTorch. */
  paddingMode?: 'zeros';
  /** Output scale (default 1) and zero point (default 0), as PyTorch's. */
  scale?: number;
  zeroPoint?: number;
  /** The output dtype: only 'quint8', as PyTorch. */
  dtype?: 'quint8';
}

function one(op: string, name: string, v: number | readonly [number] | undefined, dflt: number): number {
  const x = v === undefined ? dflt : typeof v === 'number' ? v : v.length === 1 ? v[0] : NaN;
  if (!Number.isInteger(x)) throw new SinterError(op, `${name} must be an integer, got ${JSON.stringify(v)}`);
  return x as number;
}

/** A quantised tensor's integers viewed with another shape (same parameters; per-channel axis 0 stays 0). */
function reshaped(q: QuantizedTensor, shape: number[]): QuantizedTensor {
  const r = q.intRepr();
  const v = reshape(r, shape);
  if (v !== r) r.dispose();
  return new QuantizedTensor(v, q.dtype, q.params);
}

/**
 * `torch.ao.nn.quantized.functional.conv1d`: input [N, C, L] quint8 per tensor, weight [out, in/groups, k]
 * qint8 per tensor or per output channel, float32 bias; run as conv2d over [N, C, 1, L] (the same integer
 * GEMM and requantisation epilogue).
 */
export function conv1d(input: QuantizedTensor, weight: QuantizedTensor, bias?: Tensor | null, opts: QConv1dOptions = {}): QuantizedTensor {
  const op = 'quant.conv1d';
  const q = perTensorInput(op, input);
  const w: unknown = weight;
  if (!isQuantized(w)) throw new SinterError(op, `the weight must be a quantised tensor, got ${w instanceof Tensor ? w.describe() : typeof w}`);
  if ((opts.paddingMode ?? 'zeros') !== 'zeros') throw new SinterError(op, `only paddingMode 'zeros' is supported, got ${JSON.stringify(opts.paddingMode)}`);
  if ((opts.dtype ?? 'quint8') !== 'quint8') throw new SinterError(op, `only a quint8 output is supported (dtype), got ${JSON.stringify(opts.dtype)}`);
  if (q.dtype !== 'quint8') throw new SinterError(op, `only quint8 activations are supported (as PyTorch), got ${q.describe()}`);
  if (weight.dtype !== 'qint8') throw new SinterError(op, `only qint8 weights are supported (as PyTorch), got ${weight.describe()}`);
  if (q.ndim !== 3 || weight.ndim !== 3) throw new SinterError(op, `expected input [N, C, L] and weight [out, in/groups, k], got ${fmtShape(q.shape)} and ${fmtShape(weight.shape)}`);
  const x4 = reshaped(q, [q.shape[0]!, q.shape[1]!, 1, q.shape[2]!]);
  const w4 = reshaped(weight, [weight.shape[0]!, weight.shape[1]!, 1, weight.shape[2]!]);
  let y: QuantizedTensor;
  try {
    y = conv2d(x4, w4, bias, {
      stride: [1, one(op, 'stride', opts.stride, 1)],
      padding: [0, one(op, 'padding', opts.padding, 0)],
      dilation: [1, one(op, 'dilation', opts.dilation, 1)],
      groups: opts.groups ?? 1,
      scale: opts.scale ?? 1,
      zeroPoint: opts.zeroPoint ?? 0,
    });
  } finally {
    x4.dispose();
    w4.dispose();
  }
  const out = reshaped(y, [y.shape[0]!, y.shape[1]!, y.shape[3]!]);
  y.dispose();
  return out;
}

/**
 * `torch.ao.nn.quantized.functional.interpolate` on [N, C, H, W] (modes 'nearest' and 'bilinear') or
 * [N, C, D, H, W] ('nearest'); the output keeps the input's scale and zero point. 'nearest' copies
 * integers (exact). 'bilinear' blends the integers in float32 as PyTorch's kernel, then
 * zeroPoint + round(blend − zeroPoint), saturated.
 */
export function interpolate(input: QuantizedTensor, sizeOrOpts: number | readonly number[] | InterpolateOptions, opts: InterpolateOptions = {}): QuantizedTensor {
  const op = 'quant.interpolate';
  const q = perTensorInput(op, input);
  const positional = typeof sizeOrOpts === 'number' || Array.isArray(sizeOrOpts);
  const o = positional ? opts : (sizeOrOpts as InterpolateOptions);
  const mode: InterpolateMode = o.mode ?? 'nearest';
  if (mode !== 'nearest' && mode !== 'bilinear') throw new SinterError(op, `quantised tensors support modes 'nearest' and 'bilinear' (as PyTorch), got ${JSON.stringify(mode)}`);
  if (mode === 'nearest' && q.ndim !== 4 && q.ndim !== 5) throw new SinterError(op, `mode 'nearest' needs a 4-D [N, C, H, W] or 5-D [N, C, D, H, W] input, got ${q.describe()}`);
  if (mode === 'bilinear' && q.ndim !== 4) throw new SinterError(op, `mode 'bilinear' needs a 4-D [N, C, H, W] input, got ${q.describe()}`);
  if (mode === 'nearest') return onIntegers(op, q, (x) => floatInterpolate(x, sizeOrOpts, opts));
  const spatial = q.shape.slice(2) as [number, number];
  const perDim = (what: string, v: number | readonly number[]): [number, number] => {
    const list = typeof v === 'number' ? [v, v] : [...v];
    if (list.length !== 2 || !list.every((n) => Number.isFinite(n) && n > 0)) throw new SinterError(op, `${what} must be one or two positive numbers, got ${JSON.stringify(v)}`);
    return list as [number, number];
  };
  const size = positional ? (sizeOrOpts as number | readonly number[]) : o.size;
  if ((size === undefined) === (o.scaleFactor === undefined)) throw new SinterError(op, 'give exactly one of size and scaleFactor');
  const factors = o.scaleFactor === undefined ? null : perDim('scaleFactor', o.scaleFactor);
  // PyTorch computes the size from a scale factor in double and truncates; the factor then sets the source step.
  const outSize = factors ? spatial.map((n, i) => Math.floor(n * factors[i]!)) : perDim('size', size!);
  if (!outSize.every((n) => Number.isInteger(n) && n >= 1)) throw new SinterError(op, `the output size must be positive integers, got ${JSON.stringify(outSize)}`);
  return bilinear(op, q, outSize as [number, number], factors, o.alignCorners ?? false);
}

/**
 * PyTorch's quantised bilinear kernel: the source index, its integer part and the lambdas in float32
 * (area_pixel_compute_source_index<float>), then h0·(w0·p00 + w1·p01) + h1·(w0·p10 + w1·p11) − zeroPoint on
 * the integers, one float32 rounding per operation, and zeroPoint + round(that), saturated. The four
 * neighbours are gathered from the integers; the blend is one elementwise kernel.
 */
function bilinear(op: string, q: QuantizedTensor, outSize: [number, number], factors: [number, number] | null, alignCorners: boolean): QuantizedTensor {
  const f = Math.fround;
  const axis = (d: 0 | 1) => {
    const inSize = q.shape[2 + d]!, out = outSize[d];
    const scale = alignCorners ? (out > 1 ? f(f(inSize - 1) / (out - 1)) : 0) : factors ? f(1 / factors[d]!) : f(f(inSize) / out);
    const lo = new Int32Array(out), hi = new Int32Array(out), lambda = new Float32Array(out);
    for (let j = 0; j < out; j++) {
      let src = alignCorners ? f(scale * j) : f(f(scale * (j + 0.5)) - 0.5);
      if (src < 0) src = 0;
      const i = Math.trunc(src);
      lo[j] = i;
      hi[j] = i < inSize - 1 ? i + 1 : i;
      lambda[j] = f(src - i);
    }
    return { lo, hi, lambda };
  };
  const h = axis(0), w = axis(1);
  const [oh, ow] = outSize;
  const dev = q.device;
  const index = (v: Int32Array) => fromHost(op, v, [v.length], 'int32', dev);
  const repr = q.intRepr();
  const owned: Tensor[] = [repr];
  const keep = <T extends Tensor>(t: T): T => (owned.push(t), t);
  let corners: Tensor[];
  try {
    const rows = [h.lo, h.hi].map((ix) => keep(indexSelect(repr, 2, keep(index(ix)))));
    const [wlo, whi] = [keep(index(w.lo)), keep(index(w.hi))];
    corners = rows.flatMap((r) => [indexSelect(r, 3, wlo), indexSelect(r, 3, whi)]);
  } finally {
    for (const t of owned) t.dispose();
  }
  const p = (i: number) => cast(arg(i, STORAGE_DTYPE[q.dtype]), F32);
  const h1 = arg(4, F32), w1 = arg(5, F32), zp = arg(6, F32);
  const h0 = bin('sub', k32(1), h1), w0 = bin('sub', k32(1), w1);
  const blend = (a: Expr, b: Expr) => bin('add', bin('mul', w0, a), bin('mul', w1, b));
  const result = bin('sub', bin('add', bin('mul', h0, blend(p(0), p(1))), bin('mul', h1, blend(p(2), p(3)))), zp);
  const z = q.params.zeroPoints[0]!;
  const inputs = [...corners, fromHost(op, h.lambda, [oh, 1], F32, dev), fromHost(op, w.lambda, [ow], F32, dev), scalar(op, z, dev)];
  return finishInt(op, inputs, saturate(bin('add', call('round', [result], F32), zp), q.dtype), q.dtype, q.params.scales[0]!, z);
}

export interface QUpsampleOptions {
  size?: number | readonly number[];
  scaleFactor?: number | readonly number[];
}

/** `torch.ao.nn.quantized.functional.upsample` (deprecated there): interpolate. */
export function upsample(input: QuantizedTensor, opts: InterpolateOptions): QuantizedTensor {
  return interpolate(input, opts);
}
/** `torch.ao.nn.quantized.functional.upsample_nearest`: interpolate with mode 'nearest'. */
export function upsampleNearest(input: QuantizedTensor, opts: QUpsampleOptions): QuantizedTensor {
  return interpolate(input, { size: opts.size, scaleFactor: opts.scaleFactor, mode: 'nearest' });
}
/** `torch.ao.nn.quantized.functional.upsample_bilinear`: interpolate with mode 'bilinear' and alignCorners true. */
export function upsampleBilinear(input: QuantizedTensor, opts: QUpsampleOptions): QuantizedTensor {
  return interpolate(input, { size: opts.size, scaleFactor: opts.scaleFactor, mode: 'bilinear', alignCorners: true });
}

/** PyTorch's arguments given positionally (as in PyTorch) or as one options object (camelCase names). */
function named<T extends object>(names: readonly (keyof T & string)[], args: readonly unknown[]): Partial<T> {
  const [first] = args;
  if (first !== null && typeof first === 'object') return first as Partial<T>;
  const out: Partial<Record<keyof T, unknown>> = {};
  names.forEach((n, i) => {
    if (args[i] !== undefined) out[n] = args[i];
  });
  return out as Partial<T>;
}

export interface QClampOptions {
  min: number;
  max: number;
}
export interface QHardtanhOptions {
  minVal?: number;
  maxVal?: number;
}
export interface QThresholdOptions {
  threshold: number;
  value: number;
}
export interface QLeakyReluOptions {
  negativeSlope?: number;
  /** The output's scale and zero point (both, or neither: then the input's). */
  scale?: number;
  zeroPoint?: number;
}
/** The output's scale and zero point, which PyTorch's hardswish, elu and celu require. */
export interface QOutputParams {
  scale: number;
  zeroPoint: number;
}
export interface QEluOptions extends QOutputParams {
  alpha?: number;
}

/**
 * `torch.ao.nn.quantized.functional.clamp`: clamps the integers to [quantize(min), quantize(max)] (as
 * PyTorch's kernel: exact); the output keeps the input's scale and zero point.
 */
export function clamp(input: QuantizedTensor, min: number | QClampOptions, max?: number): QuantizedTensor {
  const o = named<QClampOptions>(['min', 'max'], [min, max]);
  return clampInts('quant.clamp', input, o.min, o.max);
}

/** `torch.ao.nn.quantized.functional.hardtanh` (minVal −1, maxVal 1 by default): clamp. */
export function hardtanh(input: QuantizedTensor, minVal?: number | QHardtanhOptions, maxVal?: number): QuantizedTensor {
  const o = named<QHardtanhOptions>(['minVal', 'maxVal'], [minVal, maxVal]);
  return clampInts('quant.hardtanh', input, o.minVal ?? -1, o.maxVal ?? 1);
}

function clampInts(op: string, input: QuantizedTensor, min: unknown, max: unknown): QuantizedTensor {
  const q = perTensorInput(op, input);
  const scale = q.params.scales[0]!, zp = q.params.zeroPoints[0]!;
  const lo = quantizeValue(checkNumber(op, 'min', min), scale, zp, q.dtype), hi = quantizeValue(checkNumber(op, 'max', max), scale, zp, q.dtype);
  const storage = STORAGE_DTYPE[q.dtype];
  const int = (e: Expr) => cast(e, 'int32');
  const expr = call('minimum', [call('maximum', [int(arg(0, storage)), arg(1, 'int32')], 'int32'), arg(2, 'int32')], 'int32');
  return finishInt(op, [q.intRepr(), scalar(op, lo, q.device, 'int32'), scalar(op, hi, q.device, 'int32')], cast(expr, storage), q.dtype, scale, zp);
}

/** `torch.ao.nn.quantized.functional.threshold`: y = x > threshold ? x : value, quantised with the input's scale and zero point. */
export function threshold(input: QuantizedTensor, threshold: number | QThresholdOptions, value?: number): QuantizedTensor {
  const op = 'quant.threshold';
  const q = perTensorInput(op, input);
  const o = named<QThresholdOptions>(['threshold', 'value'], [threshold, value]);
  const t = checkNumber(op, 'threshold', o.threshold), v = checkNumber(op, 'value', o.value);
  return elementwise(op, q, q.params.scales[0]!, q.params.zeroPoints[0]!, [t, v], (x, [tv, vv]) => select(gt(x, tv!), x, vv!));
}

/**
 * `torch.ao.nn.quantized.functional.leaky_relu`: x > 0 ? x : x · negativeSlope (default 0.01), quantised
 * with `scale` and `zeroPoint` when both are given, else with the input's.
 */
export function leakyRelu(input: QuantizedTensor, negativeSlope?: number | QLeakyReluOptions): QuantizedTensor {
  const op = 'quant.leakyRelu';
  const q = perTensorInput(op, input);
  const opts = named<QLeakyReluOptions>(['negativeSlope'], [negativeSlope]);
  const slope = checkNumber(op, 'negativeSlope', opts.negativeSlope ?? 0.01);
  const own = opts.scale === undefined || opts.zeroPoint === undefined;
  const [s, z] = own ? [q.params.scales[0]!, q.params.zeroPoints[0]!] : checkOutputParams(op, opts.scale, opts.zeroPoint, q.dtype);
  return elementwise(op, q, s, z, [slope], (x, [sl]) => select(gt(x, k32(0)), x, bin('mul', x, sl!)));
}

/** (x + 3) clamped to [0, 6], in float32. */
const relu6Shift = (x: Expr): Expr => bin('minimum', bin('maximum', bin('add', x, k32(3)), k32(0)), k32(6));

/** `torch.ao.nn.quantized.functional.hardswish`: x · min(max(x + 3, 0), 6) / 6, quantised with `scale` and `zeroPoint`. */
export function hardswish(input: QuantizedTensor, scale: number | QOutputParams, zeroPoint?: number): QuantizedTensor {
  const op = 'quant.hardswish';
  const q = perTensorInput(op, input);
  const o = named<QOutputParams>(['scale', 'zeroPoint'], [scale, zeroPoint]);
  const [s, z] = checkOutputParams(op, o.scale, o.zeroPoint, q.dtype);
  return elementwise(op, q, s, z, [], (x) => bin('div', bin('mul', x, relu6Shift(x)), k32(6)));
}

/**
 * `torch.ao.nn.quantized.functional.hardsigmoid`: min(max(x + 3, 0), 6) / 6 on PyTorch's fixed output
 * grid: scale 1/256 and zero point 0 (quint8) or −128 (qint8), which spans [0, 1).
 */
export function hardsigmoid(input: QuantizedTensor): QuantizedTensor {
  const op = 'quant.hardsigmoid';
  const q = perTensorInput(op, input);
  return elementwise(op, q, 1 / 256, q.dtype === 'quint8' ? 0 : -128, [], (x) => bin('div', relu6Shift(x), k32(6)));
}

/** ELU as PyTorch's quantised kernel: x > 0 ? x : (exp(x · inputScale) − 1) · alpha; values [alpha, inputScale]. */
function eluExpr(x: Expr, [alpha, inputScale]: Expr[]): Expr {
  return select(gt(x, k32(0)), x, bin('mul', bin('sub', call('exp', [bin('mul', x, inputScale!)], F32), k32(1)), alpha!));
}

/** `torch.ao.nn.quantized.functional.elu`: x > 0 ? x : alpha · (eˣ − 1) (alpha 1 by default), quantised with `scale` and `zeroPoint`. */
export function elu(input: QuantizedTensor, scale: number | QEluOptions, zeroPoint?: number, alpha?: number): QuantizedTensor {
  const op = 'quant.elu';
  const q = perTensorInput(op, input);
  const o = named<QEluOptions>(['scale', 'zeroPoint', 'alpha'], [scale, zeroPoint, alpha]);
  const [s, z] = checkOutputParams(op, o.scale, o.zeroPoint, q.dtype);
  return elementwise(op, q, s, z, [checkNumber(op, 'alpha', o.alpha ?? 1), 1], eluExpr);
}

/** `torch.ao.nn.quantized.functional.celu`: x > 0 ? x : alpha · (e^(x/alpha) − 1) (alpha 1 by default), quantised with `scale` and `zeroPoint`. */
export function celu(input: QuantizedTensor, scale: number | QEluOptions, zeroPoint?: number, alpha?: number): QuantizedTensor {
  const op = 'quant.celu';
  const q = perTensorInput(op, input);
  const o = named<QEluOptions>(['scale', 'zeroPoint', 'alpha'], [scale, zeroPoint, alpha]);
  const [s, z] = checkOutputParams(op, o.scale, o.zeroPoint, q.dtype);
  const a = checkNumber(op, 'alpha', o.alpha ?? 1);
  if (a === 0) throw new SinterError(op, 'alpha must not be 0 (celu divides by it)');
  // PyTorch's celu is its elu kernel with input scale float32(1/alpha).
  return elementwise(op, q, s, z, [a, 1 / a], eluExpr);
}
