import { SinterError } from '../../errors.js';
import type { HostArray } from '../../tensor/dtype.js';
import { numel } from '../../tensor/shape.js';
import { type CpuView, describeMeta } from '../../ops/op.js';
import { kernelOverrides } from './overrides.js';
import { readContiguous } from './util.js';

/**
 * Writes out[i0, …, ik] = x[tables[0][i0], …, tables[k][ik]] in row-major order, where an entry of
 * -1 writes `fill` instead. Every op whose source index is separable per dim (flip, repeat, pad,
 * indexSelect, nearest upsampling) is one call of this.
 */
export function gatherSeparable(x: CpuView, tables: readonly Int32Array[], out: HostArray, fill = 0): void {
  const rank = tables.length;
  const src = x.data;
  if (rank === 0) {
    out[0] = src[x.offset]!;
    return;
  }
  if (tables.some((t) => t.length === 0)) return;
  if (kernelOverrides.gatherSeparable?.(x, tables, out, fill)) return;
  // Each output position's share of the source offset per dim; -Infinity marks a fill position.
  const steps = tables.map((t, d) => Float64Array.from(t, (i) => (i < 0 ? -Infinity : i * x.strides[d]!)));
  const last = rank - 1, inner = steps[last]!, m = inner.length;
  const idx = new Array<number>(rank).fill(0);
  // base[d]: the source offset fixed by dims < d.
  const base = new Array<number>(rank).fill(x.offset);
  for (let d = 1; d < rank; d++) base[d] = base[d - 1]! + steps[d - 1]![0]!;
  let o = 0;
  for (;;) {
    const b = base[last]!;
    for (let j = 0; j < m; j++) {
      const p = b + inner[j]!;
      out[o++] = p >= 0 ? src[p]! : fill;
    }
    let d = last - 1;
    while (d >= 0 && ++idx[d]! === tables[d]!.length) idx[d--] = 0;
    if (d < 0) return;
    for (let e = d; e < last; e++) base[e + 1] = base[e]! + steps[e]![idx[e]!]!;
  }
}

/** 0, 1, …, n − 1. */
export function identityTable(n: number): Int32Array {
  return Int32Array.from({ length: n }, (_, i) => i);
}

/** The index values as a table, each checked against `size` (negative indices are errors, as in PyTorch). */
export function checkedIndexTable(op: string, index: CpuView, size: number, where: () => string): Int32Array {
  const values = readContiguous(index);
  const table = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v < 0 || v >= size) throw new SinterError(op, `index ${v} is out of range for ${where()} (valid: 0 to ${size - 1})`);
    table[i] = v;
  }
  return table;
}

/** Concatenates the inputs along `dim` into `out`; `skip[k]` marks inputs left out (PyTorch's 1-D empty tensors). */
export function catKernel(inputs: readonly CpuView[], skip: readonly boolean[], dim: number, out: CpuView): void {
  const outer = numel(out.shape.slice(0, dim)), inner = numel(out.shape.slice(dim + 1));
  const outRow = out.shape[dim]! * inner;
  let at = 0;
  inputs.forEach((x, k) => {
    if (skip[k]) return;
    const values = readContiguous(x);
    const row = x.shape[dim]! * inner;
    // TypedArray.set converts between element types numerically (int8 → float32, bool → int32, …).
    for (let o = 0; o < outer; o++) out.data.set(values.subarray(o * row, (o + 1) * row), o * outRow + at);
    at += row;
  });
}

/** out[i] = x[i with dim replaced by index[i]]; 0-d x and index count as 1-D of size 1 (PyTorch's rule). */
export function gatherKernel(op: string, x: CpuView, index: CpuView, dim: number, out: HostArray): void {
  const idx = readContiguous(index);
  const xStrides = x.shape.length === 0 ? [0] : x.strides;
  const size = x.shape.length === 0 ? 1 : x.shape[dim]!;
  const shape = index.shape, rank = shape.length;
  const dimStride = xStrides[dim]!;
  const pos = new Array<number>(rank).fill(0);
  let base = x.offset;
  for (let i = 0; i < idx.length; i++) {
    const v = idx[i]!;
    if (v < 0 || v >= size) {
      throw new SinterError(op, `index ${v} at position [${pos.join(', ')}] is out of range for dim ${dim} of input ${describeMeta(x)} (valid: 0 to ${size - 1})`);
    }
    out[i] = x.data[base + v * dimStride]!;
    for (let d = rank - 1; d >= 0; d--) {
      const s = d === dim ? 0 : xStrides[d]!;
      if (++pos[d]! < shape[d]!) {
        base += s;
        break;
      }
      base -= s * (shape[d]! - 1);
      pos[d] = 0;
    }
  }
}
