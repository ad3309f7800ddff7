// Float64 references for normalisation, from the definitions: each element is normalised by the mean
// and biased variance of the elements that share its group. Independent of src/.
import { type Ref, get, size, unravel } from './core.js';

/** x normalised by the statistics of its group (elements with the same key), then scaled and shifted. */
function normalizeGroups(x: Ref, key: (idx: number[]) => string, eps: number, affine: (idx: number[]) => [number, number]): Ref {
  const groups = new Map<string, number[]>();
  for (let i = 0; i < x.data.length; i++) {
    const k = key(unravel(i, x.shape));
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k)!.push(x.data[i]!);
  }
  const stats = new Map<string, [number, number]>();
  for (const [k, vs] of groups) {
    const mean = vs.reduce((a, v) => a + v, 0) / vs.length;
    const variance = vs.reduce((a, v) => a + (v - mean) ** 2, 0) / vs.length;
    stats.set(k, [mean, variance]);
  }
  const data = new Float64Array(size(x.shape));
  for (let i = 0; i < data.length; i++) {
    const idx = unravel(i, x.shape);
    const [mean, variance] = stats.get(key(idx))!;
    const [w, b] = affine(idx);
    data[i] = ((x.data[i]! - mean) / Math.sqrt(variance + eps)) * w + b;
  }
  return { shape: [...x.shape], data };
}

/** Weight and bias at `at` (1 and 0 when absent). */
function affineAt(weight: Ref | null, bias: Ref | null, at: number[]): [number, number] {
  return [weight ? get(weight, at) : 1, bias ? get(bias, at) : 0];
}

/** (x − mean[c]) / √(var[c] + eps) · weight[c] + bias[c], c = dim 1. */
export function batchNormRef(x: Ref, mean: Ref, variance: Ref, weight: Ref | null, bias: Ref | null, eps: number): Ref {
  const data = new Float64Array(size(x.shape));
  for (let i = 0; i < data.length; i++) {
    const c = unravel(i, x.shape)[1]!;
    const [w, b] = affineAt(weight, bias, [c]);
    data[i] = ((x.data[i]! - get(mean, [c])) / Math.sqrt(get(variance, [c]) + eps)) * w + b;
  }
  return { shape: [...x.shape], data };
}

/** Groups: the leading dims; weight and bias are indexed by the last `k` dims. */
export function layerNormRef(x: Ref, k: number, weight: Ref | null, bias: Ref | null, eps: number): Ref {
  const lead = x.shape.length - k;
  return normalizeGroups(x, (idx) => idx.slice(0, lead).join(','), eps, (idx) => affineAt(weight, bias, idx.slice(lead)));
}

/** Groups: (n, channel group) over C / numGroups consecutive channels and all spatial dims. */
export function groupNormRef(x: Ref, numGroups: number, weight: Ref | null, bias: Ref | null, eps: number): Ref {
  const per = x.shape[1]! / numGroups;
  return normalizeGroups(x, (idx) => `${idx[0]},${Math.floor(idx[1]! / per)}`, eps, (idx) => affineAt(weight, bias, [idx[1]!]));
}

/** Groups: (n, c) over the spatial dims. */
export function instanceNormRef(x: Ref, weight: Ref | null, bias: Ref | null, eps: number): Ref {
  return normalizeGroups(x, (idx) => `${idx[0]},${idx[1]}`, eps, (idx) => affineAt(weight, bias, [idx[1]!]));
}
