// Float64 references for reductions, softmax and cumsum: plain loops over Ref, grouping elements by
// the output position they reduce into. Independent of src/ (no kernels, no ops).
import { type Ref, ravel, size, unravel } from './core.js';

/** Dims as the user wrote them (negative, unsorted, a single number, or none/[] for all) → sorted non-negative dims. */
export function dimsRef(dim: number | number[] | null | undefined, rank: number): number[] {
  const list = dim === undefined || dim === null ? [] : typeof dim === 'number' ? [dim] : dim;
  if (rank === 0) return [];
  if (list.length === 0) return Array.from({ length: rank }, (_, i) => i);
  return list.map((d) => (d < 0 ? d + rank : d)).sort((a, b) => a - b);
}

/**
 * Every output element's group of input values, in row-major order of the input (so for one
 * reduced dim a value's position in its group is its index along that dim).
 */
function groups(x: Ref, dims: readonly number[], keepdim: boolean): { shape: number[]; groups: number[][] } {
  const outShape = keepdim ? x.shape.map((d, i) => (dims.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !dims.includes(i));
  const gs: number[][] = Array.from({ length: size(outShape) }, () => []);
  for (let i = 0; i < x.data.length; i++) {
    const idx = unravel(i, x.shape);
    const outIdx = keepdim ? idx.map((v, d) => (dims.includes(d) ? 0 : v)) : idx.filter((_, d) => !dims.includes(d));
    gs[ravel(outIdx, outShape)]!.push(x.data[i]!);
  }
  return { shape: outShape, groups: gs };
}

/** Reduces each group with `fold`. */
export function reduceRef(x: Ref, dims: readonly number[], keepdim: boolean, fold: (values: number[]) => number): Ref {
  const { shape, groups: gs } = groups(x, dims, keepdim);
  return { shape, data: Float64Array.from(gs, fold) };
}

export const sumOf = (v: number[]): number => v.reduce((a, b) => a + b, 0);
export const meanOf = (v: number[]): number => sumOf(v) / v.length;
export const prodOf = (v: number[]): number => v.reduce((a, b) => a * b, 1);
/** The exact integer product, wrapped to int32 (BigInt, so no precision is lost before wrapping). */
export const prodInt32Of = (v: number[]): number => Number(BigInt.asIntN(32, v.reduce((a, b) => a * BigInt(b), 1n)));
export const maxOf = (v: number[]): number => (v.some(Number.isNaN) ? NaN : Math.max(...v));
export const minOf = (v: number[]): number => (v.some(Number.isNaN) ? NaN : Math.min(...v));
/** First index of the maximum; a NaN is the maximum (PyTorch). */
export const argmaxOf = (v: number[]): number => (v.some(Number.isNaN) ? v.findIndex(Number.isNaN) : v.indexOf(Math.max(...v)));
export const argminOf = (v: number[]): number => (v.some(Number.isNaN) ? v.findIndex(Number.isNaN) : v.indexOf(Math.min(...v)));
export function varOf(v: number[], correction: number): number {
  const m = meanOf(v);
  return sumOf(v.map((x) => (x - m) ** 2)) / Math.max(0, v.length - correction);
}

/** Applies `f` to every line of `x` along `dim` (a 0-d tensor is one line of one value). */
function alongDim(x: Ref, dim: number, f: (line: number[]) => number[]): Ref {
  const out = new Float64Array(x.data.length);
  if (x.shape.length === 0) {
    out.set(f([x.data[0]!]));
    return { shape: [], data: out };
  }
  const n = x.shape[dim]!;
  for (let i = 0; i < x.data.length; i++) {
    const idx = unravel(i, x.shape);
    if (idx[dim] !== 0) continue;
    const at = (k: number) => ravel(idx.map((v, d) => (d === dim ? k : v)), x.shape);
    const line = f(Array.from({ length: n }, (_, k) => x.data[at(k)]!));
    line.forEach((v, k) => (out[at(k)] = v));
  }
  return { shape: [...x.shape], data: out };
}

/** softmax / logSoftmax with the max shifted out (so large inputs do not overflow exp). */
export function softmaxRef(x: Ref, dim: number, log: boolean): Ref {
  return alongDim(x, dim, (line) => {
    const m = Math.max(...line);
    const lse = m + Math.log(sumOf(line.map((v) => Math.exp(v - m))));
    return line.map((v) => (log ? v - lse : Math.exp(v - lse)));
  });
}

export function cumsumRef(x: Ref, dim: number): Ref {
  return alongDim(x, dim, (line) => {
    let s = 0;
    return line.map((v) => (s += v));
  });
}
