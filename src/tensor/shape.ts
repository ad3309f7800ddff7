import { SinterError, fmtShape } from '../errors.js';

export type Shape = readonly number[];

export function numel(shape: Shape): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

export function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return strides;
}

/** True when a view with these strides walks memory in row-major order (size-1 dims ignored). */
export function isContiguous(shape: Shape, strides: readonly number[]): boolean {
  let expected = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] === 1) continue;
    if (strides[i] !== expected) return false;
    expected *= shape[i]!;
  }
  return true;
}

/** Normalises a possibly negative dim against `rank`, throwing a clear error when out of range. */
export function normDim(op: string, dim: number, rank: number): number {
  const r = Math.max(rank, 1);
  if (!Number.isInteger(dim) || dim < -r || dim >= r) {
    throw new SinterError(op, `dim ${dim} is out of range for a tensor of rank ${rank} (expected an integer in [${-r}, ${r - 1}])`);
  }
  return dim < 0 ? dim + r : dim;
}

/** Normalises a list of dims (or all dims when undefined), rejecting repeats. */
export function normDims(op: string, dims: number | readonly number[] | undefined, rank: number): number[] {
  if (dims === undefined) return Array.from({ length: rank }, (_, i) => i);
  const list = typeof dims === 'number' ? [dims] : [...dims];
  const out = list.map((d) => normDim(op, d, rank));
  if (new Set(out).size !== out.length) throw new SinterError(op, `dims ${JSON.stringify(list)} repeat a dim`);
  return out;
}

/** NumPy/PyTorch broadcasting of several shapes. */
export function broadcastShapes(op: string, ...shapes: Shape[]): number[] {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out = new Array<number>(rank).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const o = rank - s.length + i;
      const d = s[i]!;
      if (d === out[o] || d === 1) continue;
      if (out[o] === 1) out[o] = d;
      else throw new SinterError(op, `shapes ${shapes.map(fmtShape).join(' and ')} cannot be broadcast together (dim ${o - rank}: ${out[o]} vs ${d})`);
    }
  }
  return out;
}

export function checkShape(op: string, shape: unknown): number[] {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new SinterError(op, `expected a shape (an array of non-negative integers), got ${JSON.stringify(shape)}`);
  }
  return shape as number[];
}

/** Accepts `f(2, 3)` and `f([2, 3])` alike, as PyTorch does for size arguments. */
export function sizeArgs(args: readonly (number | readonly number[])[]): number[] {
  if (args.length === 1 && Array.isArray(args[0])) return [...(args[0] as number[])];
  return args as number[];
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Storage offsets of every element of a strided view, in row-major order. */
export function stridedOffsets(shape: Shape, strides: readonly number[], start: number): Int32Array {
  const out = new Int32Array(numel(shape));
  if (out.length === 0) return out;
  const rank = shape.length;
  const idx = new Array<number>(rank).fill(0);
  let at = start;
  for (let i = 0; i < out.length; i++) {
    out[i] = at;
    for (let d = rank - 1; d >= 0; d--) {
      if (++idx[d]! < shape[d]!) {
        at += strides[d]!;
        break;
      }
      idx[d] = 0;
      at -= strides[d]! * (shape[d]! - 1);
    }
  }
  return out;
}
