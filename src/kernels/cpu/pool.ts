import type { CpuView } from '../../ops/op.js';
import { kernelOverrides } from './overrides.js';

/** A 2-d pooling window: each field is [h, w]. */
export interface Window2d {
  readonly kernelSize: readonly [number, number];
  readonly stride: readonly [number, number];
  readonly padding: readonly [number, number];
}

/** Storage offset of every H×W plane of a [..., H, W] view, in row-major order of the leading dims. */
function planeOffsets(v: CpuView): number[] {
  let offsets = [v.offset];
  for (let d = 0; d < v.shape.length - 2; d++) {
    const next: number[] = [];
    for (const o of offsets) for (let i = 0; i < v.shape[d]!; i++) next.push(o + i * v.strides[d]!);
    offsets = next;
  }
  return offsets;
}

/** Reads [..., H, W] input planes through their strides and writes [..., OH, OW] output planes; `cell` computes one output value. */
function eachOutput(x: CpuView, out: CpuView, cell: (base: number, oh: number, ow: number) => number): void {
  const outH = out.shape[out.shape.length - 2]!, outW = out.shape[out.shape.length - 1]!;
  let at = 0;
  for (const base of planeOffsets(x)) {
    for (let oh = 0; oh < outH; oh++) for (let ow = 0; ow < outW; ow++) out.data[at++] = cell(base, oh, ow);
  }
}

/** Max over each dilated window; taps in the padding are skipped (as -inf), and NaN wins as in PyTorch. */
export function maxPool2dKernel(x: CpuView, w: Window2d & { readonly dilation: readonly [number, number] }, out: CpuView): void {
  if (kernelOverrides.pool2d?.('max', x, w, out)) return;
  const r = x.shape.length;
  const H = x.shape[r - 2]!, W = x.shape[r - 1]!, sH = x.strides[r - 2]!, sW = x.strides[r - 1]!;
  const [kh, kw] = w.kernelSize, [dh, dw] = w.stride, [ph, pw] = w.padding, [lh, lw] = w.dilation;
  eachOutput(x, out, (base, oh, ow) => {
    let m = -Infinity;
    for (let i = 0; i < kh; i++) {
      const ih = oh * dh - ph + i * lh;
      if (ih < 0 || ih >= H) continue;
      for (let j = 0; j < kw; j++) {
        const iw = ow * dw - pw + j * lw;
        if (iw < 0 || iw >= W) continue;
        const v = x.data[base + ih * sH + iw * sW]!;
        if (v > m || Number.isNaN(v)) m = v;
      }
    }
    return m;
  });
}

/**
 * Mean over each window, with PyTorch's divisor: the window clipped to the padded input when
 * countIncludePad (so ceil-mode overhang past the padding does not count), the in-input part otherwise,
 * or divisorOverride when given.
 */
export function avgPool2dKernel(x: CpuView, w: Window2d & { readonly countIncludePad: boolean; readonly divisorOverride: number | null }, out: CpuView): void {
  if (kernelOverrides.pool2d?.('avg', x, w, out)) return;
  const r = x.shape.length;
  const H = x.shape[r - 2]!, W = x.shape[r - 1]!, sH = x.strides[r - 2]!, sW = x.strides[r - 1]!;
  const [kh, kw] = w.kernelSize, [dh, dw] = w.stride, [ph, pw] = w.padding;
  eachOutput(x, out, (base, oh, ow) => {
    const h0 = oh * dh - ph, w0 = ow * dw - pw;
    const h1 = Math.min(h0 + kh, H + ph), w1 = Math.min(w0 + kw, W + pw);
    const padded = (h1 - h0) * (w1 - w0);
    const hs = Math.max(h0, 0), ws = Math.max(w0, 0), he = Math.min(h1, H), we = Math.min(w1, W);
    let sum = 0;
    for (let ih = hs; ih < he; ih++) for (let iw = ws; iw < we; iw++) sum += x.data[base + ih * sH + iw * sW]!;
    return sum / (w.divisorOverride ?? (w.countIncludePad ? padded : (he - hs) * (we - ws)));
  });
}

/** Mean over PyTorch's adaptive bins: rows floor(i·H/OH) to ceil((i+1)·H/OH), and likewise for columns. */
export function adaptiveAvgPool2dKernel(x: CpuView, out: CpuView): void {
  if (kernelOverrides.pool2d?.('adaptiveAvg', x, undefined, out)) return;
  const r = x.shape.length;
  const H = x.shape[r - 2]!, W = x.shape[r - 1]!, sH = x.strides[r - 2]!, sW = x.strides[r - 1]!;
  const OH = out.shape[r - 2]!, OW = out.shape[r - 1]!;
  eachOutput(x, out, (base, oh, ow) => {
    const hs = Math.floor((oh * H) / OH), he = Math.ceil(((oh + 1) * H) / OH);
    const ws = Math.floor((ow * W) / OW), we = Math.ceil(((ow + 1) * W) / OW);
    let sum = 0;
    for (let ih = hs; ih < he; ih++) for (let iw = ws; iw < we; iw++) sum += x.data[base + ih * sH + iw * sW]!;
    return sum / ((he - hs) * (we - ws));
  });
}
