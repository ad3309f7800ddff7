// Float64 references for 2-d pooling, written from the definitions: windows in padded coordinates,
// PyTorch's divisor rules and adaptive bins. Independent of src/.
import { type Ref, get, size, unravel } from './core.js';

export interface PoolWindow {
  kernelSize: [number, number];
  stride: [number, number];
  padding: [number, number];
  dilation: [number, number];
  ceilMode: boolean;
}

/**
 * How many windows fit along a dim of size n padded by p on both sides. Window i starts at i·s (padded
 * coordinates) and spans d·(k−1)+1. Floor mode: windows that fit. Ceil mode also keeps a window that
 * overhangs the end when the one before it did not reach the end, provided it starts inside the input
 * or the left padding (before n + p).
 */
export function windowCount(n: number, k: number, s: number, p: number, d: number, ceilMode: boolean): number {
  const padded = n + 2 * p, span = d * (k - 1) + 1;
  let count = 0;
  for (let i = 0; ; i++) {
    const start = i * s;
    const fits = start + span <= padded;
    const overhangs = ceilMode && start - s + span < padded && start < n + p;
    if (!fits && !overhangs) return count;
    count++;
  }
}

/** [OH, OW] for this input and window, as PyTorch computes it (may be < 1: then PyTorch raises). */
export function pooledSize(x: Ref, w: PoolWindow): [number, number] {
  const r = x.shape.length;
  const dim = (i: 0 | 1): number => windowCount(x.shape[r - 2 + i]!, w.kernelSize[i], w.stride[i], w.padding[i], w.dilation[i], w.ceilMode);
  return [dim(0), dim(1)];
}

/** Calls f(lead, oh, ow) for every output position of an [..., OH, OW] result and stores its value. */
function eachOutput(x: Ref, oh: number, ow: number, f: (lead: number[], i: number, j: number) => number): Ref {
  const shape = [...x.shape.slice(0, -2), oh, ow];
  const data = new Float64Array(size(shape));
  for (let at = 0; at < data.length; at++) {
    const idx = unravel(at, shape);
    data[at] = f(idx.slice(0, -2), idx[idx.length - 2]!, idx[idx.length - 1]!);
  }
  return { shape, data };
}

/** The padded-coordinate positions of window `o` along one dim: o·s + t·d for each tap t. */
function taps(o: number, k: number, s: number, d: number): number[] {
  return Array.from({ length: k }, (_, t) => o * s + t * d);
}

/** Max of the window's taps that land in the input (padding is never picked); NaN if any is NaN. */
export function maxPool2dRef(x: Ref, w: PoolWindow): Ref {
  const [H, W] = x.shape.slice(-2) as [number, number];
  const [OH, OW] = pooledSize(x, w);
  return eachOutput(x, OH, OW, (lead, oh, ow) => {
    const values: number[] = [];
    for (const ph of taps(oh, w.kernelSize[0], w.stride[0], w.dilation[0])) {
      for (const pw of taps(ow, w.kernelSize[1], w.stride[1], w.dilation[1])) {
        const ih = ph - w.padding[0], iw = pw - w.padding[1];
        if (ih >= 0 && ih < H && iw >= 0 && iw < W) values.push(get(x, [...lead, ih, iw]));
      }
    }
    return Math.max(-Infinity, ...values);
  });
}

export interface AvgWindow extends Omit<PoolWindow, 'dilation'> {
  countIncludePad: boolean;
  divisorOverride: number | null;
}

/**
 * Sum over the window's input positions divided by: divisorOverride if given; else the number of window
 * positions inside the padded input (countIncludePad); else the number inside the input itself.
 */
export function avgPool2dRef(x: Ref, w: AvgWindow): Ref {
  const [H, W] = x.shape.slice(-2) as [number, number];
  const [ph, pw] = w.padding;
  const [OH, OW] = pooledSize(x, { ...w, dilation: [1, 1] });
  return eachOutput(x, OH, OW, (lead, oh, ow) => {
    const rows = taps(oh, w.kernelSize[0], w.stride[0], 1).filter((r) => r < H + 2 * ph);
    const cols = taps(ow, w.kernelSize[1], w.stride[1], 1).filter((c) => c < W + 2 * pw);
    let sum = 0, inside = 0;
    for (const r of rows) {
      for (const c of cols) {
        if (r < ph || r >= ph + H || c < pw || c >= pw + W) continue;
        sum += get(x, [...lead, r - ph, c - pw]);
        inside++;
      }
    }
    return sum / (w.divisorOverride ?? (w.countIncludePad ? rows.length * cols.length : inside));
  });
}

/** Bin i of n output cells over `len` inputs: from the largest a with a·n ≤ i·len to the smallest b with b·n ≥ (i+1)·len. */
function bin(i: number, n: number, len: number): [number, number] {
  let a = 0;
  while ((a + 1) * n <= i * len) a++;
  let b = a;
  while (b * n < (i + 1) * len) b++;
  return [a, b];
}

/** Mean over each adaptive bin; `out` is the resolved [OH, OW]. */
export function adaptiveAvgPool2dRef(x: Ref, out: [number, number]): Ref {
  const [H, W] = x.shape.slice(-2) as [number, number];
  return eachOutput(x, out[0], out[1], (lead, oh, ow) => {
    const [r0, r1] = bin(oh, out[0], H), [c0, c1] = bin(ow, out[1], W);
    let sum = 0;
    for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) sum += get(x, [...lead, r, c]);
    return sum / ((r1 - r0) * (c1 - c0));
  });
}
