import type { HostArray } from '../../tensor/dtype.js';
import type { CpuView } from '../../ops/op.js';
import { stridedOffsets } from '../../tensor/shape.js';

/**
 * A reduction's two index spaces over a strided view: `outer[i]` is the storage offset where output
 * element i's group starts (row-major over the kept dims), `inner[j]` the offset of the group's
 * j-th element relative to that start (row-major over the reduced `dims`, sorted ascending). For a
 * full reduction j is therefore the flat row-major index, and for one dim it is the index along it.
 */
export interface ReductionSpace {
  readonly outer: Int32Array;
  readonly inner: Int32Array;
}

export function reductionSpace(v: Pick<CpuView, 'shape' | 'strides' | 'offset'>, dims: readonly number[]): ReductionSpace {
  const kept = v.shape.map((_, d) => d).filter((d) => !dims.includes(d));
  return {
    outer: stridedOffsets(kept.map((d) => v.shape[d]!), kept.map((d) => v.strides[d]!), v.offset),
    inner: stridedOffsets(dims.map((d) => v.shape[d]!), dims.map((d) => v.strides[d]!), 0),
  };
}

export type ReduceKind = 'sum' | 'mean' | 'prod' | 'max' | 'min' | 'argmax' | 'argmin' | 'var' | 'std';

/** Folds one group (x[base + inner[j]] for every j) to a value; `intOut` means the result is stored as int32. */
type Fold = (x: HostArray, base: number, inner: Int32Array, intOut: boolean, correction: number) => number;

function sum(x: HostArray, base: number, inner: Int32Array, intOut: boolean): number {
  let s = 0;
  // Integer sums wrap at every step, so they are exact modulo 2^32 however long the group is.
  if (intOut) for (let j = 0; j < inner.length; j++) s = (s + x[base + inner[j]!]!) | 0;
  else for (let j = 0; j < inner.length; j++) s += x[base + inner[j]!]!;
  return s;
}

function variance(x: HostArray, base: number, inner: Int32Array, _intOut: boolean, correction: number): number {
  // Two passes (mean, then squared deviations) avoid the cancellation of Σx² − (Σx)²/n.
  const n = inner.length;
  const mean = sum(x, base, inner, false) / n;
  let ss = 0;
  for (let j = 0; j < n; j++) {
    const d = x[base + inner[j]!]! - mean;
    ss += d * d;
  }
  return ss / Math.max(0, n - correction);
}

/** Index of the first largest (sign 1) or smallest (sign −1) element; NaN counts as the extreme, as in PyTorch. */
function argExtreme(sign: 1 | -1): Fold {
  return (x, base, inner) => {
    let best = 0, m = x[base + inner[0]!]!;
    for (let j = 1; j < inner.length && m === m; j++) {
      const v = x[base + inner[j]!]!;
      if (sign * v > sign * m || v !== v) {
        m = v;
        best = j;
      }
    }
    return best;
  };
}

/** The largest (sign 1) or smallest (sign −1) element; NaN propagates. */
function extreme(sign: 1 | -1): Fold {
  const arg = argExtreme(sign);
  return (x, base, inner, intOut, c) => x[base + inner[arg(x, base, inner, intOut, c)]!]!;
}

const FOLDS: Record<ReduceKind, Fold> = {
  sum,
  mean: (x, base, inner) => sum(x, base, inner, false) / inner.length,
  prod(x, base, inner, intOut) {
    let p = 1;
    // Math.imul keeps integer products exact modulo 2^32 (a double product would lose low bits first).
    if (intOut) for (let j = 0; j < inner.length; j++) p = Math.imul(p, x[base + inner[j]!]!);
    else for (let j = 0; j < inner.length; j++) p *= x[base + inner[j]!]!;
    return p;
  },
  max: extreme(1),
  min: extreme(-1),
  argmax: argExtreme(1),
  argmin: argExtreme(-1),
  var: variance,
  std: (x, base, inner, intOut, c) => Math.sqrt(variance(x, base, inner, intOut, c)),
};

/** Reduces `x` over `dims` (sorted) into the contiguous `out`, one element per kept-dims position. */
export function reduceKernel(kind: ReduceKind, x: CpuView, dims: readonly number[], correction: number, out: CpuView): void {
  const { outer, inner } = reductionSpace(x, dims);
  const fold = FOLDS[kind];
  const intOut = out.dtype !== 'float32' && out.dtype !== 'float16';
  for (let i = 0; i < outer.length; i++) out.data[i] = fold(x.data, outer[i]!, inner, intOut, correction);
}

/** softmax or logSoftmax along `dims` (one dim, or none for a 0-d tensor), subtracting the group's max first. */
export function softmaxKernel(x: CpuView, dims: readonly number[], log: boolean, out: CpuView): void {
  const xs = reductionSpace(x, dims), os = reductionSpace(out, dims);
  const n = xs.inner.length;
  const e = new Float64Array(n);
  for (let i = 0; i < xs.outer.length; i++) {
    const xb = xs.outer[i]!, ob = os.outer[i]!;
    let m = -Infinity;
    for (let j = 0; j < n; j++) m = Math.max(m, x.data[xb + xs.inner[j]!]!);
    let s = 0;
    for (let j = 0; j < n; j++) s += e[j] = Math.exp(x.data[xb + xs.inner[j]!]! - m);
    if (log) {
      const shift = m + Math.log(s);
      for (let j = 0; j < n; j++) out.data[ob + os.inner[j]!] = x.data[xb + xs.inner[j]!]! - shift;
    } else {
      for (let j = 0; j < n; j++) out.data[ob + os.inner[j]!] = e[j]! / s;
    }
  }
}

/** Running sums along `dims` (one dim, or none for a 0-d tensor); int32 outputs wrap at every step. */
export function cumsumKernel(x: CpuView, dims: readonly number[], out: CpuView): void {
  const xs = reductionSpace(x, dims), os = reductionSpace(out, dims);
  const intOut = out.dtype === 'int32';
  for (let i = 0; i < xs.outer.length; i++) {
    const xb = xs.outer[i]!, ob = os.outer[i]!;
    let s = 0;
    for (let j = 0; j < xs.inner.length; j++) {
      s = intOut ? (s + x.data[xb + xs.inner[j]!]!) | 0 : s + x.data[xb + xs.inner[j]!]!;
      out.data[ob + os.inner[j]!] = s;
    }
  }
}
