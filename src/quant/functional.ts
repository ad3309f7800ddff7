import { SinterError, fmtShape } from '../errors.js';
import { checkInputs } from '../ops/op.js';
import { contiguous, reshape, transpose } from '../ops/views.js';
import { fromHost } from '../tensor/creation.js';
import type { DeviceName } from '../backend/backend.js';
import { Tensor } from '../tensor/tensor.js';
import { div } from '../ops/binary.js';
import { type ConvGeometry, type QGemmAttrs, type QRequant, qgemm } from './gemm.js';
import { roundHalfEven } from './observer.js';
import { type QDType, QRANGE, QuantizedTensor, STORAGE_DTYPE, isQuantized, quantizePerTensor } from './qtensor.js';
import { type MaxPool2dOptions, maxPool2d as floatMaxPool2d } from '../ops/pool.js';
import { relu as floatRelu } from '../ops/unary.js';

// Quantised layers as functions (torch.ao.nn.quantized.functional): quantised input and weight in,
// quantised output out, run as one integer GEMM with the requantisation epilogue (src/quant/gemm.ts).

export interface QOutputOptions {
  /** Output scale; default the input's (as PyTorch). */
  scale?: number;
  /** Output zero point; default the input's. */
  zeroPoint?: number;
  /** Fuses a ReLU into the epilogue (PyTorch's quantized linear_relu / conv2d_relu); the same as activation 'relu'. */
  relu?: boolean;
  /** An activation fused into the requantisation epilogue: ReLU and ReLU6 as the clamp, hardswish on the real value before rounding. */
  activation?: 'relu' | 'relu6' | 'hardswish';
}

/** As QOutputOptions, except that conv2d's output scale and zero point default to 1 and 0 (as PyTorch's). */
export interface QConv2dOptions extends QOutputOptions {
  stride?: number | [number, number];
  padding?: number | [number, number];
  dilation?: number | [number, number];
  groups?: number;
}

function checkQuantized(op: string, q: unknown, what: string): QuantizedTensor {
  if (!isQuantized(q)) {
    throw new SinterError(op, `${what} must be a quantised tensor (sn.quantizePerTensor / quantizePerChannel), got ${q instanceof Tensor ? q.describe() : typeof q}`);
  }
  return q;
}

/** Per-tensor input, weight per tensor or per output channel (axis 0): the GEMM's parameter tensors. */
function gemmParams(op: string, input: QuantizedTensor, weight: QuantizedTensor, bias: Tensor | null | undefined, opts: QOutputOptions, device: DeviceName) {
  if (input.params.axis !== null) throw new SinterError(op, `the input must be quantised per tensor, got ${input.describe()} quantised per channel`);
  if (weight.params.axis !== null && weight.params.axis !== 0) throw new SinterError(op, `the weight must be quantised per tensor or per output channel (axis 0), got axis ${weight.params.axis}`);
  const n = weight.shape[0]!;
  const sIn = Math.fround(input.params.scales[0]!);
  const sOut = opts.scale ?? input.params.scales[0]!;
  const zOut = opts.zeroPoint ?? input.params.zeroPoints[0]!;
  const qd: QDType = input.dtype;
  const [qmin, qmax] = QRANGE[qd];
  if (!(Math.fround(sOut) > 0) || !Number.isFinite(sOut)) throw new SinterError(op, `the output scale must be a positive finite number, got ${sOut}`);
  if (!Number.isInteger(zOut) || zOut < qmin || zOut > qmax) throw new SinterError(op, `the output zero point must be an integer in [${qmin}, ${qmax}] for ${qd}, got ${zOut}`);
  if (bias !== null && bias !== undefined) {
    checkInputs(op, [bias]);
    if (bias.ndim !== 1 || bias.shape[0] !== n || bias.dtype !== 'float32') throw new SinterError(op, `the bias must be a float32 tensor of shape [${n}], got ${bias.describe()}`);
    if (bias.device !== device) throw new SinterError(op, `the bias is on ${bias.device} but the input on ${device}; move it with .to(device)`);
  }
  const per = (i: number) => Math.fround(weight.params.scales[weight.params.axis === null ? 0 : i]!);
  const mult = Float32Array.from({ length: n }, (_, i) => Math.fround((sIn * per(i)) / Math.fround(sOut)));
  const zpB = Int32Array.from({ length: n }, (_, i) => weight.params.zeroPoints[weight.params.axis === null ? 0 : i]!);
  const t = (v: Float32Array | Int32Array, dtype: 'float32' | 'int32') => fromHost(op, v, [v.length], dtype, device);
  // The bias enters the epilogue in output units: offset = bias / sOut, on the bias's device.
  const offset = bias ? div(bias, Math.fround(sOut)) : t(new Float32Array(n), 'float32');
  const params = [t(Int32Array.of(input.params.zeroPoints[0]!), 'int32'), t(zpB, 'int32'), t(mult, 'float32'), offset, t(Int32Array.of(zOut), 'int32')];
  const act = opts.activation ?? (opts.relu ? 'relu' : null);
  if (act !== null && act !== 'relu' && act !== 'relu6' && act !== 'hardswish') throw new SinterError(op, `activation must be 'relu', 'relu6' or 'hardswish', got ${JSON.stringify(act)}`);
  const lo = act === 'relu' || act === 'relu6' ? Math.max(qmin, zOut) : qmin;
  const hi = act === 'relu6' ? Math.min(qmax, zOut + roundHalfEven(6 / Math.fround(sOut))) : qmax;
  const requant: QRequant = { dtype: STORAGE_DTYPE[qd] as 'int8' | 'uint8', lo, hi, ...(act === 'hardswish' ? { hardswish: { scale: Math.fround(sOut) } } : {}) };
  return { params, requant, outParams: { scales: Float64Array.of(sOut), zeroPoints: Int32Array.of(zOut), axis: null }, qd };
}

function runGemm(op: string, a: Tensor, w: Tensor, attrs: QGemmAttrs, params: Tensor[]): Tensor {
  try {
    return qgemm([a, w, ...params], attrs);
  } finally {
    for (const p of params) p.dispose();
  }
}

/**
 * `torch.ao.nn.quantized.functional.linear`: y = x·Wᵀ + b on integers, x [..., in] quantised per
 * tensor, W [out, in] qint8/quint8 per tensor or per output channel, b float32; the output is
 * quantised with `scale`/`zeroPoint` (default: the input's).
 */
export function linear(input: QuantizedTensor, weight: QuantizedTensor, bias?: Tensor | null, opts: QOutputOptions = {}): QuantizedTensor {
  const op = 'quant.linear';
  checkQuantized(op, input, 'the input');
  checkQuantized(op, weight, 'the weight');
  if (weight.ndim !== 2 || input.ndim < 1 || input.shape[input.ndim - 1] !== weight.shape[1]) {
    throw new SinterError(op, `expected input [..., in] and weight [out, in], got ${fmtShape(input.shape)} and ${fmtShape(weight.shape)}`);
  }
  if (input.device !== weight.device) throw new SinterError(op, `the input is on ${input.device} and the weight on ${weight.device}; move one with .to(device)`);
  const [outF, inF] = weight.shape as [number, number];
  const m = input.numel() / inF;
  const g = gemmParams(op, input, weight, bias, opts, input.device);
  const xr = input.intRepr(), wr = weight.intRepr();
  const a = reshape(contiguous(xr), [m, inF]);
  try {
    const y = runGemm(op, a, wr, { m, n: outF, k: inF, conv: null, output: g.requant }, g.params);
    const shaped = reshape(y, [...input.shape.slice(0, -1), outF]);
    if (shaped !== y) y.dispose();
    return new QuantizedTensor(shaped, g.qd, g.outParams);
  } finally {
    for (const t of new Set([xr, wr, a])) t.dispose();
  }
}

function pair(op: string, name: string, v: number | [number, number] | undefined, dflt: number): [number, number] {
  const p: [number, number] = v === undefined ? [dflt, dflt] : typeof v === 'number' ? [v, v] : v;
  if (!p.every((x) => Number.isInteger(x))) throw new SinterError(op, `${name} must be integers, got ${JSON.stringify(v)}`);
  return p;
}

/**
 * `torch.ao.nn.quantized.functional.conv2d`: NCHW input quantised per tensor, weight
 * [out, in/groups, kh, kw] per tensor or per output channel, float32 bias; zero padding (in real
 * values: the input's zero point).
 */
export function conv2d(input: QuantizedTensor, weight: QuantizedTensor, bias?: Tensor | null, opts: QConv2dOptions = {}): QuantizedTensor {
  const op = 'quant.conv2d';
  checkQuantized(op, input, 'the input');
  checkQuantized(op, weight, 'the weight');
  if (input.ndim !== 4 || weight.ndim !== 4) throw new SinterError(op, `expected a 4-d input [N, C, H, W] and weight [out, in/groups, kh, kw], got ${fmtShape(input.shape)} and ${fmtShape(weight.shape)}`);
  if (input.device !== weight.device) throw new SinterError(op, `the input is on ${input.device} and the weight on ${weight.device}; move one with .to(device)`);
  const [batch, channels, height, width] = input.shape as [number, number, number, number];
  const [outC, cg, kh, kw] = weight.shape as [number, number, number, number];
  const groups = opts.groups ?? 1;
  const stride = pair(op, 'stride', opts.stride, 1), padding = pair(op, 'padding', opts.padding, 0), dilation = pair(op, 'dilation', opts.dilation, 1);
  if (!Number.isInteger(groups) || groups < 1 || channels % groups !== 0 || outC % groups !== 0 || cg !== channels / groups) {
    throw new SinterError(op, `groups=${groups} does not fit input channels ${channels} and weight ${fmtShape(weight.shape)} (expected in/groups = ${channels / groups})`);
  }
  if (stride.some((s) => s < 1) || dilation.some((d) => d < 1) || padding.some((p) => p < 0)) throw new SinterError(op, `stride and dilation must be ≥ 1 and padding ≥ 0, got ${stride}, ${dilation}, ${padding}`);
  const outHeight = Math.floor((height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) / stride[0]) + 1;
  const outWidth = Math.floor((width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) / stride[1]) + 1;
  if (outHeight < 1 || outWidth < 1) throw new SinterError(op, `the kernel ${kh}×${kw} (dilation ${dilation}) does not fit the padded input ${height}×${width} (padding ${padding})`);
  const g = gemmParams(op, input, weight, bias, { ...opts, scale: opts.scale ?? 1, zeroPoint: opts.zeroPoint ?? 0 }, input.device);
  const geometry: ConvGeometry = { batch, channels, height, width, kernel: [kh, kw], stride, padding, dilation, groups, outHeight, outWidth };
  const xr = input.intRepr(), wr = weight.intRepr();
  const w2 = reshape(contiguous(wr), [outC, cg * kh * kw]);
  try {
    const y = runGemm(op, xr, w2, { m: batch * outHeight * outWidth, n: outC, k: cg * kh * kw, conv: geometry, output: g.requant }, g.params);
    return new QuantizedTensor(y, g.qd, g.outParams);
  } finally {
    for (const t of new Set([xr, wr, w2])) t.dispose();
  }
}

/**
 * ONNX MatMulInteger on 2-d operands: int32 Σ (a − aZeroPoint)(b − bZeroPoint), exact (int32 wrap-around
 * beyond). a [M, K], b [K, N] int8/uint8; bZeroPoint per tensor or per column.
 */
export function matmulInteger(a: Tensor, b: Tensor, aZeroPoint = 0, bZeroPoint: number | readonly number[] = 0): Tensor {
  const op = 'quant.matmulInteger';
  checkInputs(op, [a, b]);
  if (a.ndim !== 2 || b.ndim !== 2 || a.shape[1] !== b.shape[0]) throw new SinterError(op, `expected [M, K] and [K, N] operands, got ${a.describe()} and ${b.describe()}`);
  const [m, k] = a.shape as [number, number], n = b.shape[1]!;
  const zb = typeof bZeroPoint === 'number' ? new Array<number>(n).fill(bZeroPoint) : bZeroPoint;
  if (zb.length !== n) throw new SinterError(op, `expected 1 or ${n} zero points for b, got ${zb.length}`);
  // As ONNX's MatMulInteger: a zero point has its operand's type (the kernels rely on centred values in [−255, 255]).
  const inRange = (z: number, t: Tensor) => Number.isInteger(z) && z >= (t.dtype === 'int8' ? -128 : 0) && z <= (t.dtype === 'int8' ? 127 : 255);
  if (!inRange(aZeroPoint, a)) throw new SinterError(op, `a's zero point must be an integer in a's ${a.dtype} range, got ${aZeroPoint}`);
  const badB = zb.find((z) => !inRange(z, b));
  if (badB !== undefined) throw new SinterError(op, `b's zero points must be integers in b's ${b.dtype} range, got ${badB}`);
  const params = [fromHost(op, Int32Array.of(aZeroPoint), [1], 'int32', a.device), fromHost(op, Int32Array.from(zb), [n], 'int32', a.device)];
  // B as [N, K] rows (a copy): whole word rows let the packed dot-product path read it.
  const bt = contiguous(transpose(b, 0, 1));
  try {
    return runGemm(op, a, bt, { m, n, k, conv: null, output: 'int32' }, params);
  } finally {
    bt.dispose();
  }
}

/** Runs a float op that maps the quantisation grid onto itself (max, ReLU) on the values and quantises back with the same parameters: exact. */
function sameGrid(op: string, input: QuantizedTensor, f: (x: Tensor) => Tensor): QuantizedTensor {
  checkQuantized(op, input, 'the input');
  if (input.params.axis !== null) throw new SinterError(op, `expects a tensor quantised per tensor, got ${input.describe()} quantised per channel`);
  const x = input.dequantize();
  const y = f(x);
  x.dispose();
  try {
    return quantizePerTensor(y, input.params.scales[0]!, input.params.zeroPoints[0]!, input.dtype);
  } finally {
    y.dispose();
  }
}

/** `torch.ao.nn.quantized.functional.max_pool2d`: the output keeps the input's scale and zero point. */
export function maxPool2d(input: QuantizedTensor, kernelSize: number | [number, number], opts: MaxPool2dOptions = {}): QuantizedTensor {
  return sameGrid('quant.maxPool2d', input, (x) => floatMaxPool2d(x, kernelSize, opts));
}

/** ReLU on a quantised tensor (torch.relu on quantised input): q → max(q, zeroPoint), same parameters. */
export function relu(input: QuantizedTensor): QuantizedTensor {
  return sameGrid('quant.relu', input, floatRelu);
}
export * from './functional-ops.js';
