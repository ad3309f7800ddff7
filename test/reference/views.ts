// Plain float64 references for view ops: each builds the result element by element from indices.
import { type Ref, get, size, unravel } from './core.js';

function build(shape: number[], at: (idx: number[]) => number): Ref {
  const data = new Float64Array(size(shape));
  for (let i = 0; i < data.length; i++) data[i] = at(unravel(i, shape));
  return { shape, data };
}

export function permuteRef(x: Ref, perm: number[]): Ref {
  return build(perm.map((p) => x.shape[p]!), (idx) => {
    const src: number[] = [];
    perm.forEach((p, j) => (src[p] = idx[j]!));
    return get(x, src);
  });
}

export function sliceRef(x: Ref, dim: number, start: number, end: number, step: number): Ref {
  const n = x.shape[dim]!;
  const s = Math.min(Math.max(start < 0 ? start + n : start, 0), n);
  const e = Math.max(Math.min(Math.max(end < 0 ? end + n : end, 0), n), s);
  const shape = [...x.shape];
  shape[dim] = Math.ceil((e - s) / step);
  return build(shape, (idx) => get(x, idx.map((v, d) => (d === dim ? s + v * step : v))));
}

export function expandRef(x: Ref, shape: number[]): Ref {
  const lead = shape.length - x.shape.length;
  return build(shape, (idx) => get(x, x.shape.map((d, i) => (d === 1 ? 0 : idx[i + lead]!))));
}

/** Reshape keeps row-major order: the data is unchanged. */
export function reshapeRef(x: Ref, shape: number[]): Ref {
  return { shape, data: x.data.slice() };
}
