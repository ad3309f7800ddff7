// Float64 references for data movement: plain loops over output indices, written from PyTorch's
// definitions and independent of src/.
import { type Ref, get, size, unravel } from './core.js';

function build(shape: number[], at: (idx: number[]) => number): Ref {
  const data = new Float64Array(size(shape));
  for (let i = 0; i < data.length; i++) data[i] = at(unravel(i, shape));
  return { shape, data };
}

/** torch.cat, leaving out 1-D empty tensors. */
export function catRef(refs: Ref[], dim: number): Ref {
  const kept = refs.filter((r) => !(r.shape.length === 1 && r.shape[0] === 0));
  if (kept.length === 0) return { shape: [0], data: new Float64Array(0) };
  const shape = [...kept[0]!.shape];
  shape[dim] = kept.reduce((a, r) => a + r.shape[dim]!, 0);
  return build(shape, (idx) => {
    let k = 0, i = idx[dim]!;
    while (i >= kept[k]!.shape[dim]!) i -= kept[k++]!.shape[dim]!;
    const src = [...idx];
    src[dim] = i;
    return get(kept[k]!, src);
  });
}

export function stackRef(refs: Ref[], dim: number): Ref {
  const shape = [...refs[0]!.shape];
  shape.splice(dim, 0, refs.length);
  return build(shape, (idx) => get(refs[idx[dim]!]!, idx.filter((_, d) => d !== dim)));
}

/** Elements [start, start + length) along dim. */
export function narrowRef(r: Ref, dim: number, start: number, length: number): Ref {
  const shape = [...r.shape];
  shape[dim] = length;
  return build(shape, (idx) => get(r, idx.map((v, d) => (d === dim ? v + start : v))));
}

export type PadMode = 'constant' | 'reflect' | 'replicate' | 'circular';

/** F.pad; `pad` is PyTorch's flat list from the last dim backwards. */
export function padRef(r: Ref, pad: number[], mode: PadMode, value: number): Ref {
  const rank = r.shape.length, k = pad.length / 2;
  const lo = (d: number): number => (d >= rank - k ? pad[2 * (rank - 1 - d)]! : 0);
  const hi = (d: number): number => (d >= rank - k ? pad[2 * (rank - 1 - d) + 1]! : 0);
  const shape = r.shape.map((s, d) => s + lo(d) + hi(d));
  if (mode === 'circular') return circularRef(r, shape, lo, hi);
  return build(shape, (idx) => {
    const src: number[] = [];
    for (let d = 0; d < rank; d++) {
      const n = r.shape[d]!;
      let i = idx[d]! - lo(d);
      if (mode === 'constant' && (i < 0 || i >= n)) return value;
      if (mode === 'replicate') i = Math.min(Math.max(i, 0), n - 1);
      // Mirror about the edge elements (which are not repeated).
      while (mode === 'reflect' && (i < 0 || i >= n)) i = i < 0 ? -i : 2 * (n - 1) - i;
      src.push(i);
    }
    return get(r, src);
  });
}

/** PyTorch's _pad_circular, step by step: copy the (cropped) input into the middle, then fill each pad from the output itself. */
function circularRef(r: Ref, shape: number[], lo: (d: number) => number, hi: (d: number) => number): Ref {
  const out = build(shape, () => NaN);
  const set = (idx: number[], v: number): void => {
    out.data[idx.reduce((a, i, d) => a * shape[d]! + i, 0)] = v;
  };
  for (let i = 0; i < size(r.shape); i++) {
    const idx = unravel(i, r.shape);
    const o = idx.map((v, d) => v + lo(d));
    if (o.every((v, d) => v >= Math.max(lo(d), 0) && v < shape[d]! - Math.max(hi(d), 0))) set(o, r.data[i]!);
  }
  for (let d = r.shape.length - 1; d >= 0; d--) {
    const l = lo(d), h = hi(d), n = shape[d]!;
    // out[.., 0:l, ..] = out[.., n-l-max(h,0) : n-max(h,0), ..];  out[.., n-h:n, ..] = out[.., max(l,0) : max(l,0)+h, ..]
    const copy = (to: number, from: number, len: number): void => {
      for (let i = 0; i < out.data.length; i++) {
        const idx = unravel(i, shape);
        if (idx[d]! >= to && idx[d]! < to + len) {
          const src = [...idx];
          src[d] = idx[d]! - to + from;
          set(idx, get(out, src));
        }
      }
    };
    if (l > 0) copy(0, n - l - Math.max(h, 0), l);
    if (h > 0) copy(n - h, Math.max(l, 0), h);
  }
  return out;
}

export function gatherRef(r: Ref, dim: number, index: Ref): Ref {
  return build([...index.shape], (idx) => get(r, idx.map((v, d) => (d === dim ? get(index, idx) : v))));
}

export function indexSelectRef(r: Ref, dim: number, index: number[]): Ref {
  const shape = [...r.shape];
  shape[dim] = index.length;
  return build(shape, (idx) => get(r, idx.map((v, d) => (d === dim ? index[v]! : v))));
}

export function embeddingRef(input: Ref, weight: Ref): Ref {
  const dim = weight.shape[1]!;
  return build([...input.shape, dim], (idx) => get(weight, [get(input, idx.slice(0, -1)), idx[idx.length - 1]!]));
}

/** Tensor.repeat: leading new dims, then each dim tiled. */
export function repeatRef(r: Ref, sizes: number[]): Ref {
  const lead = sizes.length - r.shape.length;
  const shape = sizes.map((s, i) => s * (i < lead ? 1 : r.shape[i - lead]!));
  return build(shape, (idx) => get(r, idx.slice(lead).map((v, d) => v % r.shape[d]!)));
}

export function flipRef(r: Ref, dims: number[]): Ref {
  return build([...r.shape], (idx) => get(r, idx.map((v, d) => (dims.includes(d) ? r.shape[d]! - 1 - v : v))));
}
