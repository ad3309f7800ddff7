// float64 references for einsum and the 1-D and 3-D layers: loops over every index, independent of src/.
import { type Ref, ravel, ref, size, unravel } from './core.js';

/**
 * einsum by enumeration: every assignment of the equation's letters (ellipsis dims named by their
 * position from the right, broadcast where 1), summing products into the output's entry.
 */
export function einsumRef(equation: string, xs: Ref[]): Ref {
  const [lhs, rhs] = equation.split('->') as [string, string | undefined];
  const expandTerm = (t: string, rank: number) => {
    const named = t.replace('...', '').length;
    const k = rank - named;
    return t.includes('...') ? [...t.slice(0, t.indexOf('...'))].concat(Array.from({ length: k }, (_, j) => `#${k - 1 - j}`), [...t.slice(t.indexOf('...') + 3)]) : [...t];
  };
  const terms = lhs.split(',').map((t, i) => expandTerm(t, xs[i]!.shape.length));
  const ell = Math.max(0, ...terms.map((t) => t.filter((l) => l.startsWith('#')).length));
  const sizes = new Map<string, number>();
  terms.forEach((t, i) => t.forEach((l, d) => sizes.set(l, Math.max(sizes.get(l) ?? 1, xs[i]!.shape[d]!))));
  const broadcast = Array.from({ length: ell }, (_, j) => `#${ell - 1 - j}`);
  const out = rhs !== undefined
    ? rhs.includes('...') ? [...rhs.slice(0, rhs.indexOf('...'))].concat(broadcast, [...rhs.slice(rhs.indexOf('...') + 3)]) : [...rhs]
    : [...broadcast, ...[...sizes.keys()].filter((l) => !l.startsWith('#') && terms.flat().filter((m) => m === l).length === 1).sort()];
  const letters = [...sizes.keys()];
  const outShape = out.map((l) => sizes.get(l)!);
  const data = new Float64Array(size(outShape));
  const dims = letters.map((l) => sizes.get(l)!);
  for (let k = 0; k < size(dims); k++) {
    const at = unravel(k, dims);
    const val = (l: string) => at[letters.indexOf(l)]!;
    let p = 1;
    terms.forEach((t, i) => {
      const idx = t.map((l, d) => (xs[i]!.shape[d] === 1 ? 0 : val(l)));
      p *= xs[i]!.data[ravel(idx, xs[i]!.shape)]!;
    });
    data[ravel(out.map(val), outShape)] += p;
  }
  return ref(outShape, data);
}

/** conv1d over [N, C, L] with weight [O, C/g, K], zero padding. */
export function conv1dRef(x: Ref, w: Ref, bias: number[] | null, stride: number, padding: number, dilation: number, groups: number): Ref {
  const [n, c, l] = x.shape as [number, number, number];
  const [o, cg, k] = w.shape as [number, number, number];
  const lo = Math.floor((l + 2 * padding - dilation * (k - 1) - 1) / stride) + 1;
  const out = new Float64Array(n * o * lo);
  for (let b = 0; b < n; b++) for (let oc = 0; oc < o; oc++) for (let j = 0; j < lo; j++) {
    const g = Math.floor(oc / (o / groups));
    let s = bias ? bias[oc]! : 0;
    for (let ic = 0; ic < cg; ic++) for (let t = 0; t < k; t++) {
      const pos = j * stride - padding + t * dilation;
      if (pos >= 0 && pos < l) s += x.data[(b * c + g * cg + ic) * l + pos]! * w.data[(oc * cg + ic) * k + t]!;
    }
    out[(b * o + oc) * lo + j] = s;
  }
  return ref([n, o, lo], out);
}

/** max or average pooling over the last dim of [N, C, L] (no ceil mode; padding counted in averages). */
export function pool1dRef(x: Ref, kind: 'max' | 'avg', k: number, stride: number, padding: number): Ref {
  const [n, c, l] = x.shape as [number, number, number];
  const lo = Math.floor((l + 2 * padding - k) / stride) + 1;
  const out = new Float64Array(n * c * lo);
  for (let r = 0; r < n * c; r++) for (let j = 0; j < lo; j++) {
    const vals: number[] = [];
    for (let t = 0; t < k; t++) {
      const pos = j * stride - padding + t;
      if (pos >= 0 && pos < l) vals.push(x.data[r * l + pos]!);
    }
    out[r * lo + j] = kind === 'max' ? (vals.some(Number.isNaN) ? NaN : Math.max(...vals)) : vals.reduce((a, b) => a + b, 0) / k;
  }
  return ref([n, c, lo], out);
}

/** conv3d over [N, C, D, H, W] with weight [O, C/g, kD, kH, kW], zero padding, one stride/padding/dilation for every dim. */
export function conv3dRef(x: Ref, w: Ref, bias: number[] | null, s: number, p: number, dil: number, groups: number): Ref {
  const [n, c, ...dims] = x.shape as [number, number, number, number, number];
  const [o, cg, ...ks] = w.shape as [number, number, number, number, number];
  const outDims = dims.map((d, i) => Math.floor((d + 2 * p - dil * (ks[i]! - 1) - 1) / s) + 1);
  const outShape = [n, o, ...outDims];
  const out = new Float64Array(size(outShape));
  for (let at = 0; at < out.length; at++) {
    const [b, oc, ...od] = unravel(at, outShape) as [number, number, number, number, number];
    const g = Math.floor(oc / (o / groups));
    let sum = bias ? bias[oc]! : 0;
    for (let ic = 0; ic < cg; ic++) for (let k = 0; k < size(ks); k++) {
      const kk = unravel(k, ks);
      const pos = od.map((v, i) => v * s - p + kk[i]! * dil);
      if (pos.some((v, i) => v < 0 || v >= dims[i]!)) continue;
      sum += x.data[ravel([b, g * cg + ic, ...pos], x.shape)]! * w.data[ravel([oc, ic, ...kk], w.shape)]!;
    }
    out[at] = sum;
  }
  return ref(outShape, out);
}
