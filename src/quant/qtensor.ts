import type { DeviceName } from '../backend/backend.js';
import { SinterError, fmtShape } from '../errors.js';
import { type Expr, call, cast, input } from '../ops/expr.js';
import { map } from '../ops/elementwise.js';
import { checkInputs } from '../ops/op.js';
import { to, toDevice } from '../ops/views.js';
import { fromHost } from '../tensor/creation.js';
import type { DType } from '../tensor/dtype.js';
import { normDim } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';

/** The quantised dtypes: 8-bit integers that stand for `scale · (q − zeroPoint)`. */
export type QDType = 'qint8' | 'quint8';
export const QDTYPES: readonly QDType[] = ['qint8', 'quint8'];
/** How scale and zero point were chosen (observers) and how they are laid out (tensors: affine only, as in PyTorch). */
export type QScheme = 'perTensorAffine' | 'perTensorSymmetric' | 'perChannelAffine' | 'perChannelSymmetric';

/** The integer range of each quantised dtype. */
export const QRANGE: Readonly<Record<QDType, readonly [number, number]>> = { qint8: [-128, 127], quint8: [0, 255] };
/** The plain dtype holding a quantised dtype's integers. */
export const STORAGE_DTYPE: Readonly<Record<QDType, DType>> = { qint8: 'int8', quint8: 'uint8' };

export function isQDType(d: unknown): d is QDType {
  return d === 'qint8' || d === 'quint8';
}
export function checkQDType(op: string, d: unknown): QDType {
  if (!isQDType(d)) throw new SinterError(op, `unknown quantised dtype ${JSON.stringify(d)}; expected 'qint8' or 'quint8'`);
  return d;
}

/**
 * Scale(s), zero point(s) and, for per-channel tensors, the channel axis. Scales are kept as given
 * (doubles, as PyTorch keeps them): quantising uses them rounded to float32, dequantising per channel
 * uses the double (PyTorch's formulas).
 */
export interface QParams {
  readonly scales: Float64Array;
  readonly zeroPoints: Int32Array;
  /** null: one scale and zero point for the whole tensor. */
  readonly axis: number | null;
}

/**
 * A quantised tensor (PyTorch's `torch.qint8`/`torch.quint8` tensors): an int8/uint8 tensor of the
 * integers q plus the parameters that map them back to reals, `scale · (q − zeroPoint)`, per tensor or
 * per channel along one axis. It is not a `Tensor`: ordinary ops reject it with an error naming the op
 * and its dtype, so integers are never silently treated as values. `dequantize()` gives floats back.
 */
export class QuantizedTensor {
  readonly dtype: QDType;
  readonly shape: readonly number[];
  private repr: Tensor | null;

  /** Wraps `repr` (int8 for qint8, uint8 for quint8); the QuantizedTensor takes ownership of it. */
  constructor(
    repr: Tensor,
    dtype: QDType,
    readonly params: QParams,
  ) {
    const op = 'QuantizedTensor';
    if (repr.dtype !== STORAGE_DTYPE[dtype]) throw new SinterError(op, `a ${dtype} tensor holds ${STORAGE_DTYPE[dtype]} integers, got ${repr.describe()}`);
    const channels = params.axis === null ? 1 : repr.shape[params.axis];
    if (channels === undefined || params.scales.length !== channels || params.zeroPoints.length !== channels) {
      throw new SinterError(op, `expected ${channels ?? '?'} scales and zero points for ${repr.describe()}${params.axis === null ? '' : ` along axis ${params.axis}`}, got ${params.scales.length} and ${params.zeroPoints.length}`);
    }
    this.repr = repr;
    this.dtype = dtype;
    this.shape = repr.shape;
  }

  private live(op: string): Tensor {
    if (!this.repr) throw new SinterError(op, `${this.describe()} was disposed and cannot be used`);
    return this.repr;
  }

  get device(): DeviceName {
    return this.live('device').device;
  }
  get ndim(): number {
    return this.shape.length;
  }
  get isDisposed(): boolean {
    return this.repr === null;
  }
  numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
  size(): number[];
  size(dim: number): number;
  size(dim?: number): number[] | number {
    return dim === undefined ? [...this.shape] : this.shape[normDim('size', dim, this.ndim)]!;
  }
  isQuantized(): true {
    return true;
  }

  /** The integers as a plain int8 (qint8) or uint8 (quint8) tensor; it shares storage with this tensor and is the caller's to dispose. */
  intRepr(): Tensor {
    const r = this.live('intRepr');
    return new Tensor(r.storage, r.shape, r.strides, r.offset);
  }
  dequantize(): Tensor {
    return dequantize(this);
  }
  qscheme(): 'perTensorAffine' | 'perChannelAffine' {
    return this.params.axis === null ? 'perTensorAffine' : 'perChannelAffine';
  }
  qScale(): number {
    return this.perTensor('qScale').scales[0]!;
  }
  qZeroPoint(): number {
    return this.perTensor('qZeroPoint').zeroPoints[0]!;
  }
  /** Per-channel scales as a float32 tensor on this tensor's device. */
  qPerChannelScales(): Tensor {
    return fromHost('qPerChannelScales', Float32Array.from(this.perChannel('qPerChannelScales').scales), [this.params.scales.length], 'float32', this.device);
  }
  qPerChannelZeroPoints(): Tensor {
    return fromHost('qPerChannelZeroPoints', this.perChannel('qPerChannelZeroPoints').zeroPoints.slice(), [this.params.zeroPoints.length], 'int32', this.device);
  }
  qPerChannelAxis(): number {
    return this.perChannel('qPerChannelAxis').axis!;
  }

  private perTensor(op: string): QParams {
    this.live(op);
    if (this.params.axis !== null) throw new SinterError(op, `${this.describe()} is quantised per channel (axis ${this.params.axis}); use qPerChannelScales/qPerChannelZeroPoints`);
    return this.params;
  }
  private perChannel(op: string): QParams {
    this.live(op);
    if (this.params.axis === null) throw new SinterError(op, `${this.describe()} is quantised per tensor; use qScale/qZeroPoint`);
    return this.params;
  }

  /** This tensor on `device` (itself when already there); leaving a GPU needs `toDevice`, as for tensors. */
  to(device: DeviceName): QuantizedTensor {
    const r = this.live('to');
    if (device === r.device) return this;
    return new QuantizedTensor(to(r, device), this.dtype, this.params);
  }
  async toDevice(device: DeviceName): Promise<QuantizedTensor> {
    const r = this.live('toDevice');
    if (device === r.device) return this;
    return new QuantizedTensor(await toDevice(r, device), this.dtype, this.params);
  }

  /** Frees the integers (the storage goes when its last view, e.g. an `intRepr()`, is disposed). Idempotent. */
  dispose(): void {
    this.repr?.dispose();
    this.repr = null;
  }

  describe(): string {
    return `tensor(${this.dtype}, ${fmtShape(this.shape)})`;
  }
  toString(): string {
    const q = this.params.axis === null ? `scale=${this.params.scales[0]}, zeroPoint=${this.params.zeroPoints[0]}` : `axis=${this.params.axis}`;
    return `QuantizedTensor(shape=${fmtShape(this.shape)}, dtype=${this.dtype}, ${q}, device=${this.repr?.device ?? 'disposed'})`;
  }
}

export function isQuantized(x: unknown): x is QuantizedTensor {
  return x instanceof QuantizedTensor;
}

/** Scales and zero points given as numbers, arrays or tensors (tensors must be readable without waiting: on the CPU). */
export type QParamValues = number | readonly number[] | Float32Array | Int32Array | Tensor;

function hostValues(op: string, what: string, v: QParamValues): number[] {
  if (typeof v === 'number') return [v];
  if (v instanceof Tensor) {
    if (v.device !== 'cpu') throw new SinterError(op, `${what} must be numbers or a cpu tensor (they are read on the host), got ${v.describe()} on ${v.device}`);
    if (v.ndim > 1) throw new SinterError(op, `${what} must be one value per channel (a 1-D tensor), got ${v.describe()}`);
    const s = v.storage as unknown as { data: ArrayLike<number> };
    return Array.from({ length: v.numel() }, (_, i) => s.data[v.offset + i * (v.strides[0] ?? 1)]!);
  }
  return Array.from(v);
}

/** Validates scales (finite, > 0, as float32) and zero points (integers in the dtype's range). */
function checkedParams(op: string, scales: readonly number[], zeroPoints: readonly number[], dtype: QDType): { scales: Float64Array; zeroPoints: Int32Array } {
  const [lo, hi] = QRANGE[dtype];
  const s = Float64Array.from(scales);
  s.forEach((v, i) => {
    if (!(Math.fround(v) > 0) || !Number.isFinite(Math.fround(v))) throw new SinterError(op, `scale${scales.length > 1 ? ` ${i}` : ''} must be a positive finite number, got ${scales[i]}`);
  });
  zeroPoints.forEach((z, i) => {
    if (!Number.isInteger(z) || z < lo || z > hi) throw new SinterError(op, `zero point${zeroPoints.length > 1 ? ` ${i}` : ''} must be an integer in [${lo}, ${hi}] for ${dtype}, got ${z}`);
  });
  return { scales: s, zeroPoints: Int32Array.from(zeroPoints) };
}

function checkFloatInput(op: string, x: unknown): asserts x is Tensor {
  if (isQuantized(x)) throw new SinterError(op, `expects a float tensor, got ${x.describe()}, which is already quantised`);
  checkInputs(op, [x]);
  const t = x as Tensor;
  if (t.dtype !== 'float32' && t.dtype !== 'float16') throw new SinterError(op, `quantises float tensors, got ${t.describe()}`);
}

/** One value per channel along `axis`, shaped to broadcast against `shape`, as a tensor on `device`. */
function channelParam(op: string, values: Float32Array | Int32Array, dtype: 'float32' | 'int32', shape: readonly number[], axis: number | null, device: DeviceName): Tensor {
  const pshape = axis === null ? [] : shape.map((n, i) => (i === axis ? n : 1));
  return fromHost(op, values, pshape, dtype, device);
}

/**
 * q = clamp(roundHalfEven(x · (1/scale)) + zeroPoint, qmin, qmax), with 1/scale rounded to float32
 * first and the product in float32, as PyTorch computes it. One elementwise kernel (an `Expr`, so the
 * JIT can fuse it); per-channel parameters broadcast along their axis.
 */
export function quantizeExpr(xDType: DType, qdtype: QDType): Expr {
  const [lo, hi] = QRANGE[qdtype];
  const scaled = call('mul', [cast(input(0, xDType), 'float32'), input(1, 'float32')], 'float32');
  const shifted = call('add', [call('round', [scaled], 'float32'), cast(input(2, 'int32'), 'float32')], 'float32', [1]);
  return cast(call('clamp', [shifted], 'float32', [lo, hi]), STORAGE_DTYPE[qdtype]);
}

/**
 * x = scale · (q − zeroPoint) rounded once to float32, for a scale given as float32 parts hi1 + hi2 + lo
 * (inputs 2, 3, 4): hi1 and hi2 hold 12 bits each, so their products with the 9-bit integer are exact
 * in float32 and only the tiny lo term and the final sum round. Per tensor, PyTorch multiplies by the
 * scale rounded to float32 (lo = 0: exact); per channel by the double scale (lo is its remainder).
 */
export function dequantizeExpr(storage: DType): Expr {
  const k = cast(call('sub', [cast(input(0, storage), 'int32'), input(1, 'int32')], 'int32', [1]), 'float32');
  const times = (i: number) => call('mul', [k, input(i, 'float32')], 'float32');
  return call('add', [times(2), call('add', [times(3), times(4)], 'float32', [1])], 'float32', [1]);
}

/** A scale split for `dequantizeExpr`: [hi1, hi2, lo] with hi1 + hi2 = the float32 scale (or `f32`'s), lo the double's remainder. */
export function splitScale(scale: number, perTensor: boolean): [number, number, number] {
  const h = Math.fround(scale);
  // Keep the top 12 of h's 24 significand bits in hi1.
  const e = Math.floor(Math.log2(Math.abs(h)));
  const unit = 2 ** (e - 11);
  const hi1 = Math.trunc(h / unit) * unit;
  return [hi1, h - hi1, perTensor ? 0 : Math.fround(scale - h)];
}

function quantizeWith(op: string, x: Tensor, params: QParams, dtype: QDType): QuantizedTensor {
  const inv = Float32Array.from(params.scales, (s) => Math.fround(1 / Math.fround(s)));
  const invT = channelParam(op, inv, 'float32', x.shape, params.axis, x.device);
  const zpT = channelParam(op, params.zeroPoints, 'int32', x.shape, params.axis, x.device);
  try {
    return new QuantizedTensor(map(op, [x, invT, zpT], quantizeExpr(x.dtype, dtype)), dtype, params);
  } finally {
    invT.dispose();
    zpT.dispose();
  }
}

/** `torch.quantize_per_tensor`: one scale and zero point for the whole tensor. */
export function quantizePerTensor(x: Tensor, scale: number, zeroPoint: number, dtype: QDType): QuantizedTensor {
  const op = 'quantizePerTensor';
  checkFloatInput(op, x);
  const qd = checkQDType(op, dtype);
  if (typeof scale !== 'number' || typeof zeroPoint !== 'number') throw new SinterError(op, `scale and zeroPoint must be numbers, got ${typeof scale} and ${typeof zeroPoint}`);
  const p = checkedParams(op, [scale], [zeroPoint], qd);
  return quantizeWith(op, x, { ...p, axis: null }, qd);
}

/** `torch.quantize_per_channel`: one scale and zero point per index along `axis`. */
export function quantizePerChannel(x: Tensor, scales: QParamValues, zeroPoints: QParamValues, axis: number, dtype: QDType): QuantizedTensor {
  const op = 'quantizePerChannel';
  checkFloatInput(op, x);
  const qd = checkQDType(op, dtype);
  if (x.ndim === 0) throw new SinterError(op, `needs a tensor with at least one dim to quantise per channel, got ${x.describe()}`);
  const a = normDim(op, axis, x.ndim);
  const s = hostValues(op, 'scales', scales), z = hostValues(op, 'zeroPoints', zeroPoints);
  if (s.length !== x.shape[a] || z.length !== x.shape[a]) {
    throw new SinterError(op, `expected ${x.shape[a]} scales and zero points (the size of axis ${a} of ${x.describe()}), got ${s.length} and ${z.length}`);
  }
  return quantizeWith(op, x, { ...checkedParams(op, s, z, qd), axis: a }, qd);
}

/** `torch.dequantize`: float32 values `scale · (q − zeroPoint)`. */
export function dequantize(q: QuantizedTensor): Tensor {
  const op = 'dequantize';
  if (!isQuantized(q)) {
    const what: unknown = q;
    throw new SinterError(op, `expects a quantised tensor, got ${what instanceof Tensor ? what.describe() : typeof what}`);
  }
  const repr = q.intRepr();
  const { scales, zeroPoints, axis } = q.params;
  const zpT = channelParam(op, zeroPoints, 'int32', q.shape, axis, repr.device);
  const parts = [0, 1, 2].map((j) => Float32Array.from(scales, (s) => splitScale(s, axis === null)[j]!));
  const sT = parts.map((p) => channelParam(op, p, 'float32', q.shape, axis, repr.device));
  try {
    return map(op, [repr, zpT, ...sT], dequantizeExpr(repr.dtype));
  } finally {
    for (const t of [repr, zpT, ...sT]) t.dispose();
  }
}
