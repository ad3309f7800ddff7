import type { CpuStorage } from '../backend/cpu.js';
import { SinterError } from '../errors.js';
import { checkInputs } from '../ops/op.js';
import { tensor } from '../tensor/creation.js';
import { normDim } from '../tensor/shape.js';
import { type Tensor, gatherView } from '../tensor/tensor.js';
import { type QDType, type QScheme, QRANGE, checkQDType } from './qtensor.js';

// PyTorch's observers (torch/ao/quantization/observer.py, 1.13), formula for formula: statistics and
// parameters are float32 values computed with float32 rounding at each step, as PyTorch's float32
// tensors compute them, so scales and zero points match PyTorch's own (test/fixtures/quant).

const f = Math.fround;
/** torch.finfo(torch.float32).eps, PyTorch's default lower bound on a scale. */
export const FLOAT32_EPS = 2 ** -23;

export interface ObserverOptions {
  dtype?: QDType;
  qscheme?: QScheme;
  /** Halves the integer range (one bit less), as PyTorch's x86/fbgemm activations use to avoid overflow in vpmaddubsw. */
  reduceRange?: boolean;
  quantMin?: number;
  quantMax?: number;
  eps?: number;
  /** Moving-average observers: weight of each new batch's min/max (default 0.01). */
  averagingConstant?: number;
  /** Per-channel observers: the channel axis (default 0). */
  chAxis?: number;
  /** HistogramObserver: number of bins (default 2048). */
  bins?: number;
  /** HistogramObserver: upsampling when histograms of different ranges are combined (default 128). */
  upsampleRate?: number;
  /**
   * HistogramObserver: count each batch between its range's ends truncated to integers, as PyTorch 1.13 does
   * (`histc(x, min=int(min_val), max=int(max_val))`; 2.0 counts over the range itself). Default true, 1.13's
   * scales. The truncated count drops values outside the integer range and stretches the rest over
   * [minVal, maxVal], so the L2 search picks a range that misses the data (a hardswish output in [−0.4, 4.8]
   * is counted over [0, 4]); false counts over the observed range (static quantisation on the graph does).
   */
  truncateEdges?: boolean;
}

/** Round half to even (nearbyint), PyTorch's rounding for quantisation. */
export function roundHalfEven(v: number): number {
  const fl = Math.floor(v), r = v - fl;
  return r > 0.5 ? fl + 1 : r < 0.5 ? fl : fl % 2 === 0 ? fl : fl + 1;
}

/** PyTorch's calculate_qmin_qmax: the integer range after custom limits and reduceRange. */
export function quantRange(op: string, dtype: QDType, reduceRange: boolean, quantMin?: number, quantMax?: number): [number, number] {
  if (quantMin !== undefined || quantMax !== undefined) {
    if (quantMin === undefined || quantMax === undefined) throw new SinterError(op, 'quantMin and quantMax must be given together');
    if (!Number.isInteger(quantMin) || !Number.isInteger(quantMax) || !(quantMin <= 0 && 0 <= quantMax)) {
      throw new SinterError(op, `the quantisation range must be integers that include 0, got [${quantMin}, ${quantMax}]`);
    }
    if (!(quantMin < quantMax)) throw new SinterError(op, `quantMin must be less than quantMax, got [${quantMin}, ${quantMax}]`);
    const [lo, hi] = QRANGE[dtype];
    if (quantMin < lo || quantMax > hi) throw new SinterError(op, `the range [${quantMin}, ${quantMax}] does not fit ${dtype} ([${lo}, ${hi}])`);
    return reduceRange ? [Math.floor(quantMin / 2), Math.floor(quantMax / 2)] : [quantMin, quantMax];
  }
  if (dtype === 'qint8') return reduceRange ? [-64, 63] : [-128, 127];
  return reduceRange ? [0, 127] : [0, 255];
}

/** A float tensor's values and shape on the host: at once for CPU tensors, after a readback for GPU ones. */
function hostValues(op: string, x: Tensor): Float32Array | Promise<Float32Array> {
  checkInputs(op, [x]);
  if (x.dtype !== 'float32' && x.dtype !== 'float16') throw new SinterError(op, `observes float tensors, got ${x.describe()}`);
  if (x.device === 'cpu') return gatherView((x.storage as CpuStorage).data, x.shape, x.strides, x.offset, x.dtype) as Float32Array;
  return x.data() as Promise<Float32Array>;
}

/**
 * What every observer shares: options, the integer range, the order of recorded batches, and PyTorch's
 * `_calculate_qparams` (scale and zero point from per-channel or per-tensor min/max).
 */
export abstract class ObserverBase {
  readonly dtype: QDType;
  readonly qscheme: QScheme;
  readonly reduceRange: boolean;
  readonly quantMin: number;
  readonly quantMax: number;
  readonly eps: number;
  private readonly customRange: boolean;
  /** GPU tensors are read back asynchronously; their batches are applied in call order. */
  private pending: Promise<void> | null = null;
  private failure: unknown = null;

  constructor(
    readonly name: string,
    opts: ObserverOptions,
    defaults: { qscheme: QScheme; allowed: readonly QScheme[] },
  ) {
    this.dtype = checkQDType(name, opts.dtype ?? 'quint8');
    this.qscheme = opts.qscheme ?? defaults.qscheme;
    if (!defaults.allowed.includes(this.qscheme)) throw new SinterError(name, `qscheme must be one of ${defaults.allowed.join(', ')}, got ${JSON.stringify(this.qscheme)}`);
    this.reduceRange = opts.reduceRange ?? false;
    if (this.reduceRange && this.dtype === 'quint8' && this.qscheme.endsWith('Symmetric')) {
      throw new SinterError(name, 'cannot reduce the range for symmetric quantisation to quint8 (as PyTorch)');
    }
    this.customRange = opts.quantMin !== undefined || opts.quantMax !== undefined;
    [this.quantMin, this.quantMax] = quantRange(name, this.dtype, this.reduceRange, opts.quantMin, opts.quantMax);
    this.eps = f(opts.eps ?? FLOAT32_EPS);
  }

  /** Records the statistics of `x` and returns `x` unchanged. */
  forward(x: Tensor): Tensor {
    const values = hostValues(this.name, x);
    const shape = [...x.shape];
    if (values instanceof Float32Array && !this.pending) this.observe(values, shape);
    else {
      const prev = this.pending ?? Promise.resolve();
      const p: Promise<void> = Promise.all([prev, values])
        .then(([, v]) => this.observe(v, shape))
        .catch((e: unknown) => {
          this.failure ??= e;
        })
        .then(() => {
          if (this.pending === p) this.pending = null;
        });
      this.pending = p;
    }
    return x;
  }

  /** Resolves when the batches of GPU tensors recorded so far have been read back and applied. */
  async synchronize(): Promise<void> {
    while (this.pending) await this.pending;
  }

  /** `[scale, zeroPoint]` as float32 and int32 cpu tensors (shape [1] per tensor, [channels] per channel). */
  calculateQparams(): [Tensor, Tensor] {
    const { scales, zeroPoints } = this.qparams();
    return [tensor(scales, { dtype: 'float32' }), tensor(zeroPoints, { dtype: 'int32' })];
  }

  /** The parameters as host arrays. */
  qparams(): { scales: Float32Array; zeroPoints: Int32Array } {
    if (this.failure) throw this.failure;
    if (this.pending) throw new SinterError(`${this.name}.calculateQparams`, 'batches of GPU tensors are still being read back: `await observer.synchronize()` first');
    return this.computeQparams();
  }

  protected abstract observe(values: Float32Array, shape: readonly number[]): void;
  protected abstract computeQparams(): { scales: Float32Array; zeroPoints: Int32Array };

  /** PyTorch's `_calculate_qparams` for float32 min/max values (one per channel, or one). */
  protected qparamsFromMinMax(minVal: ArrayLike<number>, maxVal: ArrayLike<number>): { scales: Float32Array; zeroPoints: Int32Array } {
    const n = minVal.length;
    if (n === 0 || (n === 1 && minVal[0] === Infinity && maxVal[0] === -Infinity)) return { scales: Float32Array.of(1), zeroPoints: Int32Array.of(0) };
    const { quantMin: qmin, quantMax: qmax } = this;
    const scales = new Float32Array(n), zeroPoints = new Int32Array(n);
    const symmetric = this.qscheme === 'perTensorSymmetric' || this.qscheme === 'perChannelSymmetric';
    for (let c = 0; c < n; c++) {
      if (!(minVal[c]! <= maxVal[c]!)) throw new SinterError(`${this.name}.calculateQparams`, `min ${minVal[c]} should be at most max ${maxVal[c]}`);
      const minNeg = Math.min(minVal[c]!, 0), maxPos = Math.max(maxVal[c]!, 0);
      if (symmetric) {
        const m = Math.max(-minNeg, maxPos);
        scales[c] = Math.max(f(m / f((qmax - qmin) / 2)), this.eps);
        zeroPoints[c] = this.dtype === 'quint8' ? (this.customRange ? Math.floor((qmin + qmax) / 2) : 128) : 0;
      } else {
        const s = Math.max(f(f(maxPos - minNeg) / (qmax - qmin)), this.eps);
        scales[c] = s;
        zeroPoints[c] = Math.min(qmax, Math.max(qmin, qmin - roundHalfEven(f(minNeg / s))));
      }
    }
    return { scales, zeroPoints };
  }
}

function aminmax(v: Float32Array): [number, number] {
  let lo = Infinity, hi = -Infinity;
  for (const x of v) {
    if (Number.isNaN(x)) return [NaN, NaN];
    if (x < lo) lo = x;
    if (x > hi) hi = x;
  }
  return [lo, hi];
}

const PER_TENSOR: readonly QScheme[] = ['perTensorAffine', 'perTensorSymmetric'];
const PER_CHANNEL: readonly QScheme[] = ['perChannelAffine', 'perChannelSymmetric'];

/** The running min and max of everything observed (torch.ao.quantization.MinMaxObserver). */
export class MinMaxObserver extends ObserverBase {
  minVal = Infinity;
  maxVal = -Infinity;
  constructor(opts: ObserverOptions = {}, name = 'MinMaxObserver') {
    super(name, opts, { qscheme: 'perTensorAffine', allowed: PER_TENSOR });
  }
  protected observe(values: Float32Array): void {
    if (values.length === 0) return;
    const [lo, hi] = aminmax(values);
    this.update(lo, hi);
  }
  protected update(lo: number, hi: number): void {
    this.minVal = Math.min(lo, this.minVal);
    this.maxVal = Math.max(hi, this.maxVal);
  }
  protected computeQparams() {
    return this.qparamsFromMinMax([this.minVal], [this.maxVal]);
  }
  resetMinMaxVals(): void {
    this.minVal = Infinity;
    this.maxVal = -Infinity;
  }
}

/** min/max as exponential moving averages of each batch's (torch.ao.quantization.MovingAverageMinMaxObserver). */
export class MovingAverageMinMaxObserver extends MinMaxObserver {
  readonly averagingConstant: number;
  constructor(opts: ObserverOptions = {}) {
    super(opts, 'MovingAverageMinMaxObserver');
    this.averagingConstant = opts.averagingConstant ?? 0.01;
  }
  protected override update(lo: number, hi: number): void {
    if (this.minVal === Infinity && this.maxVal === -Infinity) {
      this.minVal = lo;
      this.maxVal = hi;
      return;
    }
    const c = f(this.averagingConstant);
    this.minVal = f(this.minVal + f(c * f(lo - this.minVal)));
    this.maxVal = f(this.maxVal + f(c * f(hi - this.maxVal)));
  }
}

/** Per-channel min and max along `chAxis` of each batch: [channels] arrays. */
function channelMinMax(values: Float32Array, shape: readonly number[], axis: number): [Float32Array, Float32Array] {
  const channels = shape[axis]!;
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const lo = new Float32Array(channels).fill(Infinity), hi = new Float32Array(channels).fill(-Infinity);
  for (let i = 0; i < values.length; i++) {
    const c = Math.floor(i / inner) % channels, v = values[i]!;
    if (Number.isNaN(v) || Number.isNaN(lo[c]!)) lo[c] = hi[c] = NaN;
    else {
      if (v < lo[c]!) lo[c] = v;
      if (v > hi[c]!) hi[c] = v;
    }
  }
  return [lo, hi];
}

/** Running min/max per channel (torch.ao.quantization.PerChannelMinMaxObserver), for weights. */
export class PerChannelMinMaxObserver extends ObserverBase {
  readonly chAxis: number;
  minVal: Float32Array = new Float32Array(0);
  maxVal: Float32Array = new Float32Array(0);
  constructor(opts: ObserverOptions = {}, name = 'PerChannelMinMaxObserver') {
    super(name, opts, { qscheme: 'perChannelAffine', allowed: PER_CHANNEL });
    this.chAxis = opts.chAxis ?? 0;
    if (!Number.isInteger(this.chAxis)) throw new SinterError(name, `chAxis must be an integer, got ${this.chAxis}`);
  }
  protected observe(values: Float32Array, shape: readonly number[]): void {
    if (values.length === 0) return;
    const axis = normDim(this.name, this.chAxis, shape.length);
    const [lo, hi] = channelMinMax(values, shape, axis);
    if (this.minVal.length !== 0 && this.minVal.length !== lo.length) {
      throw new SinterError(this.name, `observed ${lo.length} channels along axis ${axis}, but earlier batches had ${this.minVal.length}`);
    }
    this.update(lo, hi);
  }
  protected update(lo: Float32Array, hi: Float32Array): void {
    if (this.minVal.length === 0) [this.minVal, this.maxVal] = [lo, hi];
    else for (let c = 0; c < lo.length; c++) [this.minVal[c], this.maxVal[c]] = [Math.min(lo[c]!, this.minVal[c]!), Math.max(hi[c]!, this.maxVal[c]!)];
  }
  protected computeQparams() {
    return this.qparamsFromMinMax(this.minVal, this.maxVal);
  }
  resetMinMaxVals(): void {
    this.minVal = new Float32Array(0);
    this.maxVal = new Float32Array(0);
  }
}

/** Per-channel moving averages (torch.ao.quantization.MovingAveragePerChannelMinMaxObserver). */
export class MovingAveragePerChannelMinMaxObserver extends PerChannelMinMaxObserver {
  readonly averagingConstant: number;
  constructor(opts: ObserverOptions = {}) {
    super(opts, 'MovingAveragePerChannelMinMaxObserver');
    this.averagingConstant = opts.averagingConstant ?? 0.01;
  }
  protected override update(lo: Float32Array, hi: Float32Array): void {
    if (this.minVal.length === 0) {
      [this.minVal, this.maxVal] = [lo, hi];
      return;
    }
    const c = f(this.averagingConstant);
    for (let k = 0; k < lo.length; k++) {
      this.minVal[k] = f(this.minVal[k]! + f(c * f(lo[k]! - this.minVal[k]!)));
      this.maxVal[k] = f(this.maxVal[k]! + f(c * f(hi[k]! - this.maxVal[k]!)));
    }
  }
}

/**
 * torch.histc on float32 values (PyTorch 1.13): edges given as numbers (the observer passes them
 * truncated to integers, as 1.13 does); equal edges mean the data's own min and max.
 */
function histc(values: Float32Array, bins: number, min: number, max: number): Float32Array {
  let left = min, right = max;
  if (left === right && values.length > 0) [left, right] = aminmax(values);
  if (left === right) [left, right] = [left - 1, right + 1];
  const l = f(left), r = f(right), width = f(r - l);
  const hist = new Float32Array(bins);
  for (const v of values) {
    if (!(v >= l && v <= r)) continue;
    let pos = Math.trunc(f(f(f(v - l) * bins) / width));
    if (pos === bins) pos -= 1;
    hist[pos]! += 1;
  }
  return hist;
}

/** torch.div(a, b, rounding_mode='floor') for float32 operands (PyTorch 1.13's formula). */
function divFloor(a: number, b: number): number {
  if (b === 0) return f(a / b);
  const mod = f(a % b);
  let div = f(f(a - mod) / b);
  if (mod !== 0 && b < 0 !== mod < 0) div = f(div - 1);
  if (div === 0) return Math.sign(a / b) < 0 || Object.is(a / b, -0) ? -0 : 0;
  let fl = Math.floor(div);
  if (f(div - fl) > 0.5) fl += 1;
  return fl;
}

/** density · (end³ − begin³) / 3, the L2 error of values spread uniformly over [begin, end] (float32). */
function l2Norm(begin: number, end: number, density: number): number {
  const e3 = f(f(end * end) * end), b3 = f(f(begin * begin) * begin);
  return f(density * f(f(e3 - b3) / 3));
}

/**
 * A histogram of everything observed; the range is chosen by PyTorch's search that approximately
 * minimises the L2 error of quantising the histogram (torch.ao.quantization.HistogramObserver).
 */
export class HistogramObserver extends ObserverBase {
  readonly bins: number;
  readonly upsampleRate: number;
  readonly truncateEdges: boolean;
  /** The options it was made with (to make one alike). */
  readonly options: Readonly<ObserverOptions>;
  readonly dstNbins = 256;
  histogram: Float32Array;
  minVal = Infinity;
  maxVal = -Infinity;
  constructor(opts: ObserverOptions = {}) {
    super('HistogramObserver', opts, { qscheme: 'perTensorAffine', allowed: PER_TENSOR });
    this.bins = opts.bins ?? 2048;
    this.upsampleRate = opts.upsampleRate ?? 128;
    this.truncateEdges = opts.truncateEdges ?? true;
    this.options = { ...opts };
    for (const [k, v] of [['bins', this.bins], ['upsampleRate', this.upsampleRate]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new SinterError(this.name, `${k} must be a positive integer, got ${v}`);
    }
    this.histogram = new Float32Array(this.bins);
  }

  protected observe(x: Float32Array): void {
    if (x.length === 0) return;
    const uninitialised = this.minVal === Infinity && this.maxVal === -Infinity;
    if (uninitialised || this.minVal === this.maxVal) {
      [this.minVal, this.maxVal] = aminmax(x);
      this.histogram = histc(x, this.bins, this.edge(this.minVal), this.edge(this.maxVal));
      return;
    }
    const [newMin, newMax] = aminmax(x);
    let combinedMin = Math.min(newMin, this.minVal), combinedMax = Math.max(newMax, this.maxVal);
    // _adjust_min_max: widen the combined range to a whole number of the old histogram's (upsampled) bins.
    const histBinWidth = f(f(this.maxVal - this.minVal) / (this.bins * this.upsampleRate));
    const span = f(this.bins * histBinWidth);
    const downsampleRate = Math.ceil(f(f(combinedMax - combinedMin) / span));
    const e = f(f(downsampleRate * span) - f(combinedMax - combinedMin));
    combinedMax = f(combinedMax + e);
    const startIdx = roundHalfEven(f(f(this.minVal - combinedMin) / histBinWidth));
    let combined = histc(x, this.bins, this.edge(combinedMin), this.edge(combinedMax));
    if (combinedMin === this.minVal && combinedMax === this.maxVal) {
      for (let i = 0; i < this.bins; i++) combined[i] = f(combined[i]! + this.histogram[i]!);
    } else {
      combined = this.combineHistograms(combined, downsampleRate, startIdx);
    }
    this.histogram = combined;
    this.minVal = combinedMin;
    this.maxVal = combinedMax;
  }

  /** An end of the range histc counts over (see truncateEdges). */
  private edge(v: number): number {
    return this.truncateEdges ? Math.trunc(v) : v;
  }

  /** _combine_histograms: the old histogram upsampled, placed at startIdx, integrated and downsampled onto the new bins. */
  private combineHistograms(orig: Float32Array, downsampleRate: number, startIdx: number): Float32Array {
    const { bins, upsampleRate } = this;
    const wide = new Float32Array(bins * downsampleRate);
    const end = Math.min(wide.length, startIdx + bins * upsampleRate);
    for (let i = Math.max(0, startIdx); i < end; i++) wide[i] = this.histogram[Math.floor((i - startIdx) / upsampleRate)]!;
    const integral = new Float64Array(bins);
    let acc = 0;
    for (let i = 0, k = 0; i < wide.length; i++) {
      acc += wide[i]!;
      if ((i + 1) % downsampleRate === 0) integral[k++] = acc;
    }
    const out = new Float32Array(bins);
    for (let k = 0; k < bins; k++) {
      const shifted = k === 0 ? 0 : f(integral[k - 1]!);
      out[k] = f(orig[k]! + f((integral[k]! - shifted) / upsampleRate));
    }
    return out;
  }

  /** _compute_quantization_error: L2 error of quantising the histogram's bins [startBin, endBin] to dstNbins levels. */
  private quantizationError(startBin: number, endBin: number): number {
    const binWidth = (this.maxVal - this.minVal) / this.bins;
    const dstBinWidth = (binWidth * (endBin - startBin + 1)) / this.dstNbins;
    if (dstBinWidth === 0) return 0;
    const bw = f(binWidth), dbw = f(dstBinWidth), half = f(dstBinWidth / 2), negHalf = f(-dstBinWidth / 2);
    const last = this.dstNbins - 1;
    let sum = 0;
    for (let b = 0; b < this.bins; b++) {
      const begin = f((b - startBin) * bw), end = f(begin + bw);
      const dstBegin = Math.min(last, Math.max(0, divFloor(begin, dbw)));
      const dstEnd = Math.min(last, Math.max(0, divFloor(end, dbw)));
      const beginCentre = f(f(dstBegin + 0.5) * dbw);
      const density = f(this.histogram[b]! / bw);
      let norm = l2Norm(f(begin - beginCentre), half, density);
      norm = f(norm + f(f(f(dstEnd - dstBegin) - 1) * l2Norm(negHalf, half, density)));
      const endCentre = f(f(dstEnd * dbw) + half);
      norm = f(norm + l2Norm(negHalf, f(end - endCentre), density));
      sum += norm;
    }
    return f(sum);
  }

  /** _non_linear_param_search: shrink [min, max] from the side with less mass while the L2 error falls. */
  private nonLinearParamSearch(): [number, number] {
    const hist = this.histogram, bins = this.bins;
    const binWidth = f(f(this.maxVal - this.minVal) / bins);
    let total = 0;
    for (const v of hist) total += v;
    total = f(total);
    const cSum = new Float32Array(bins);
    let acc = 0;
    for (let i = 0; i < bins; i++) cSum[i] = acc += hist[i]!;
    const stepsize = 1e-5;
    let alpha = 0, beta = 1, startBin = 0, endBin = bins - 1, normMin = Infinity;
    while (alpha < beta) {
      const nextAlpha = alpha + stepsize, nextBeta = beta - stepsize;
      let l = startBin, r = endBin;
      const lo = f(nextAlpha * total), hi = f(nextBeta * total);
      while (l < endBin && cSum[l]! < lo) l++;
      while (r > startBin && cSum[r]! > hi) r--;
      let nextStart = startBin, nextEnd = endBin;
      if (l - startBin > endBin - r) {
        nextStart = l;
        alpha = nextAlpha;
      } else {
        nextEnd = r;
        beta = nextBeta;
      }
      if (nextStart === startBin && nextEnd === endBin) continue;
      const norm = this.quantizationError(nextStart, nextEnd);
      if (norm > normMin) break;
      normMin = norm;
      startBin = nextStart;
      endBin = nextEnd;
    }
    return [f(this.minVal + f(binWidth * startBin)), f(this.minVal + f(binWidth * (endBin + 1)))];
  }

  protected computeQparams() {
    if (this.minVal === Infinity && this.maxVal === -Infinity) return { scales: Float32Array.of(1), zeroPoints: Int32Array.of(0) };
    const [lo, hi] = this.nonLinearParamSearch();
    return this.qparamsFromMinMax([lo], [hi]);
  }
}

export type Observer = ObserverBase;
/** Makes a fresh observer: what a qconfig holds for activations and weights. */
export type ObserverFactory = () => Observer;

/** A factory for observers of class `C` with these options (PyTorch's `Observer.with_args`). */
export function withArgs(C: new (opts?: ObserverOptions) => Observer, opts: ObserverOptions = {}): ObserverFactory {
  return () => new C(opts);
}
