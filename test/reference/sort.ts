// float64 references for sorting, masks and selections (PyTorch's semantics): plain loops over
// row-major data, independent of src/.
import { type Ref, ravel, ref, size, unravel } from './core.js';

/**
 * Applies `f` to every 1-D row of `x` along `dim` (a 0-d x is one row of one element); `f` returns
 * the row's outputs, whose count is the output's size along dim (`outSize`, needed when there are no rows).
 */
export function alongDim(x: Ref, dim: number, f: (row: number[]) => number[], outSize?: number): Ref {
  const shape = x.shape.length === 0 ? [1] : x.shape;
  const n = shape[dim]!;
  const outer = shape.filter((_, d) => d !== dim);
  let outShape: number[] | undefined;
  const rows: { idx: number[]; out: number[] }[] = [];
  for (let k = 0; k < size(outer); k++) {
    const o = unravel(k, outer);
    const row = Array.from({ length: n }, (_, j) => x.data[ravel([...o.slice(0, dim), j, ...o.slice(dim)], shape)]!);
    rows.push({ idx: o, out: f(row) });
  }
  const m = outSize ?? rows[0]?.out.length ?? n;
  outShape = [...shape];
  outShape[dim] = m;
  const data = new Float64Array(size(outShape));
  for (const { idx, out } of rows) out.forEach((v, j) => (data[ravel([...idx.slice(0, dim), j, ...idx.slice(dim)], outShape!)] = v));
  return ref(x.shape.length === 0 ? [] : outShape, data);
}

/** Stable order of a row: NaN largest (last ascending, first descending), ties by position. */
export function sortOrder(row: readonly number[], descending: boolean): number[] {
  const key = (v: number) => (Number.isNaN(v) ? Infinity : v);
  const isNan = (v: number) => Number.isNaN(v);
  return row
    .map((_, i) => i)
    .sort((i, j) => {
      const a = row[i]!, b = row[j]!;
      let c: number;
      if (isNan(a) || isNan(b)) c = isNan(a) === isNan(b) ? 0 : isNan(a) ? 1 : -1;
      else c = key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0;
      return (descending ? -c : c) || i - j;
    });
}

export function triangleRef(x: Ref, upper: boolean, diagonal: number): Ref {
  const r = x.shape.length, cols = x.shape[r - 1]!, rows = x.shape[r - 2]!;
  return ref(x.shape, Array.from(x.data, (v, i) => {
    const c = i % cols, w = Math.floor(i / cols) % rows;
    return (upper ? c - w >= diagonal : c - w <= diagonal) ? v : 0;
  }));
}

export function logsumexpOf(v: number[]): number {
  let m = -Infinity;
  for (const x of v) m = Number.isNaN(x) || x > m ? x : m;
  if (Number.isNaN(m)) return NaN;
  const s = Number.isFinite(m) ? m : 0;
  return Math.log(v.reduce((acc, x) => acc + Math.exp(x - s), 0)) + s;
}

/** Running product in double, or in wrapping int32 arithmetic for integer inputs. */
export function cumprodRow(row: number[], int: boolean): number[] {
  let acc = 1;
  return row.map((v) => (acc = int ? Math.imul(acc, v) : acc * v));
}
