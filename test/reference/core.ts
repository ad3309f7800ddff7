// The float64 reference: plain, slow, obviously-correct code, independent of src/ (it never imports
// kernels or ops). Tests compare every op against it. A reference tensor is a shape and a flat,
// row-major Float64Array.
import type { DType } from '../../src/index.js';
import type { TensorCase } from '../../src/testing/index.js';

export interface Ref {
  shape: number[];
  data: Float64Array;
}

export function ref(shape: readonly number[], data: ArrayLike<number>): Ref {
  return { shape: [...shape], data: Float64Array.from(data) };
}
export function refOf(c: TensorCase): Ref {
  return ref(c.shape, c.values);
}
export function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
export function stridesOf(shape: readonly number[]): number[] {
  const s: number[] = [];
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i]!;
  }
  return s;
}
/** Flat position → multi-index. */
export function unravel(i: number, shape: readonly number[]): number[] {
  const idx: number[] = [];
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = i % shape[d]!;
    i = Math.floor(i / shape[d]!);
  }
  return idx;
}
/** Multi-index → flat position. */
export function ravel(idx: readonly number[], shape: readonly number[]): number {
  let at = 0;
  for (let d = 0; d < shape.length; d++) at = at * shape[d]! + idx[d]!;
  return at;
}
export function get(r: Ref, idx: readonly number[]): number {
  return r.data[ravel(idx, r.shape)]!;
}

export function broadcastShape(...shapes: number[][]): number[] {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  return Array.from({ length: rank }, (_, i) => Math.max(...shapes.map((s) => s[i - (rank - s.length)] ?? 1)));
}

/** Value of `r` at an index of the broadcast output shape. */
export function getBroadcast(r: Ref, outIdx: readonly number[]): number {
  const lead = outIdx.length - r.shape.length;
  return get(r, r.shape.map((d, i) => (d === 1 ? 0 : outIdx[i + lead]!)));
}

/** f applied elementwise over broadcast inputs. */
export function mapRef(inputs: Ref[], f: (...xs: number[]) => number): Ref {
  const shape = broadcastShape(...inputs.map((r) => r.shape));
  const out = new Float64Array(size(shape));
  for (let i = 0; i < out.length; i++) {
    const idx = unravel(i, shape);
    out[i] = f(...inputs.map((r) => getBroadcast(r, idx)));
  }
  return { shape, data: out };
}

/**
 * The nearest binary16 value to `v` (ties to even), with subnormals, and ±∞ from 65520 up (the
 * midpoint between the largest finite half, 65504, and 2¹⁶). Found by scaling to the value's
 * ulp, not by bit manipulation, to stay independent of the implementation's method.
 */
export function float16Ref(v: number): number {
  if (Number.isNaN(v) || v === 0 || !Number.isFinite(v)) return v;
  const sign = v < 0 ? -1 : 1;
  const a = Math.abs(v);
  if (a >= 65520) return sign * Infinity;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  // Normal halves have 10 fraction bits; below 2⁻¹⁴ the spacing stays 2⁻²⁴ (subnormals).
  const ulp = 2 ** (Math.max(e, -14) - 10);
  const q = a / ulp;
  let r = Math.floor(q);
  const frac = q - r;
  if (frac > 0.5 || (frac === 0.5 && r % 2 === 1)) r++;
  return sign * r * ulp;
}

/** What storing v as dtype gives (PyTorch's casts), computed independently of src/. */
export function castRef(dtype: DType, v: number): number {
  switch (dtype) {
    case 'float32':
      return Math.fround(v);
    case 'float16':
      return float16Ref(v);
    case 'bool':
      return v !== 0 ? 1 : 0;
    default: {
      if (!Number.isFinite(v)) return 0;
      const bits = dtype === 'int32' ? 32 : 8;
      const m = 2 ** bits;
      let w = ((Math.trunc(v) % m) + m) % m;
      if (dtype !== 'uint8' && w >= m / 2) w -= m;
      return w;
    }
  }
}

/** erf by composite Simpson integration of 2/√π·e^(−t²) (deliberately a different method from src/). */
export function erfRef(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (Math.abs(x) > 8) return Math.sign(x);
  const n = 2000;
  const h = x / n;
  let s = 1 + Math.exp(-x * x);
  for (let i = 1; i < n; i++) s += (i % 2 ? 4 : 2) * Math.exp(-((i * h) ** 2));
  return ((s * h) / 3) * (2 / Math.sqrt(Math.PI));
}
