import type { Conv2dAttrs, ConvTranspose2dAttrs } from '../../ops/conv.js';
import type { CpuView } from '../../ops/op.js';
import { GEMM_BLOCKS, type PackB, gemm } from './gemm.js';
import { kernelOverrides } from './overrides.js';
import { readContiguous } from './util.js';

// 2-d convolutions as GEMMs, per image and group. conv2d: out[Og, OH·OW] = weight[Og, Cg·kh·kw] ·
// patches[Cg·kh·kw, OH·OW], where the patch matrix (im2col) is packed straight from the strided input
// into the GEMM's panels and never materialised. convTranspose2d: cols = weightᵀ · input, then each
// column value is scattered to the output pixel it lands on (col2im).

const NR = GEMM_BLOCKS.nr;

/** An input's [N, C, H, W] shape and strides; an unbatched [C, H, W] input is one image. */
function images(x: CpuView): { shape: number[]; strides: number[] } {
  return x.shape.length === 4 ? { shape: [...x.shape], strides: [...x.strides] } : { shape: [1, ...x.shape], strides: [0, ...x.strides] };
}

/** Writes bias[c] over each of `channels` planes of `plane` values from `at` (or zeros without a bias). */
function fillChannels(out: CpuView, at: number, channels: number, plane: number, bias: CpuView | undefined, c0: number): void {
  for (let c = 0; c < channels; c++, at += plane) out.data.fill(bias ? bias.data[bias.offset + (c0 + c) * bias.strides[0]!]! : 0, at, at + plane);
}

/** Per panel column: the input row and column under the window's first tap, and that pixel's offset (reused across calls). */
const rowAt = new Int32Array(NR), colAt = new Int32Array(NR), offAt = new Int32Array(NR);

/**
 * The im2col operand of one image and group: row k = (c, i, j) of the kernel window, column p = (oh, ow)
 * of the output; its value is the input pixel under that tap, or 0 in the padding.
 */
function im2col(x: CpuView, base: number, [, , H, W]: number[], [, sC, sH, sW]: number[], kh: number, kw: number, OW: number, a: Conv2dAttrs): PackB {
  const data = x.data, [sh, sw] = a.stride, [dh, dw] = a.dilation, [pt, , pl] = a.padding;
  const spanH = dh * (kh - 1), spanW = dw * (kw - 1);
  return (dst, k0, kc, j0, nc) => {
    let q = 0;
    for (let jp = 0; jp < nc; jp += NR) {
      const w = Math.min(NR, nc - jp);
      // A panel whose windows all lie inside the input needs no bounds checks (most of them, away from the border).
      let inside = true;
      for (let c = 0; c < w; c++) {
        const p = j0 + jp + c, ih = Math.floor(p / OW) * sh - pt, iw = (p % OW) * sw - pl;
        rowAt[c] = ih;
        colAt[c] = iw;
        offAt[c] = base + ih * sH + iw * sW;
        inside &&= ih >= 0 && ih + spanH < H && iw >= 0 && iw + spanW < W;
      }
      // Walk the taps (ch, i, j) of rows k0 … k0+kc incrementally.
      let ch = Math.floor(k0 / (kh * kw)), i = Math.floor(k0 / kw) % kh, j = k0 % kw;
      for (let k = 0; k < kc; k++, q += NR) {
        const dy = i * dh, dx = j * dw, delta = ch * sC + dy * sH + dx * sW;
        if (inside) {
          for (let c = 0; c < w; c++) dst[q + c] = data[offAt[c]! + delta]!;
        } else {
          for (let c = 0; c < w; c++) {
            const ih = rowAt[c]! + dy, iw = colAt[c]! + dx;
            dst[q + c] = ih >= 0 && ih < H && iw >= 0 && iw < W ? data[offAt[c]! + delta]! : 0;
          }
        }
        if (++j === kw) {
          j = 0;
          if (++i === kh) {
            i = 0;
            ch++;
          }
        }
      }
    }
  };
}

/** One output plane of the depthwise kernel, accumulated in double (grown as needed). */
let planeAcc = new Float64Array(0);

/**
 * Depthwise convolution (one input channel per group) as a direct loop: with so few output channels
 * per group, a GEMM would spend more time packing the patches than multiplying them. Each kernel tap
 * adds weight × (shifted input row) over the output columns whose tap lands inside the input, so the
 * inner loop has no bounds checks.
 */
function depthwise(x: CpuView, [N, , H, W]: number[], [sN, sC, sH, sW]: number[], w: CpuView, bias: CpuView | undefined, a: Conv2dAttrs, out: CpuView): void {
  const [O, , kh, kw] = w.shape as [number, number, number, number];
  const [OH, OW] = out.shape.slice(-2) as [number, number];
  const [sh, sw] = a.stride, [dh, dw] = a.dilation, [pt, , pl] = a.padding;
  const Og = O / a.groups, data = x.data, weights = readContiguous(w), P = OH * OW;
  if (planeAcc.length < P) planeAcc = new Float64Array(P);
  const acc = planeAcc;
  for (let n = 0; n < N; n++) {
    for (let oc = 0; oc < O; oc++) {
      const plane = x.offset + n * sN + Math.floor(oc / Og) * sC;
      acc.fill(bias ? bias.data[bias.offset + oc * bias.strides[0]!]! : 0, 0, P);
      for (let i = 0; i < kh; i++) {
        for (let j = 0; j < kw; j++) {
          const wv = weights[(oc * kh + i) * kw + j]!, dx = j * dw - pl;
          // Output columns ow with 0 ≤ ow·sw + dx < W.
          const lo = Math.max(0, Math.ceil(-dx / sw)), hi = Math.min(OW, Math.floor((W - 1 - dx) / sw) + 1);
          for (let oh = 0; oh < OH; oh++) {
            const ih = oh * sh - pt + i * dh;
            if (ih < 0 || ih >= H) continue;
            for (let ow = lo, src = plane + ih * sH + (lo * sw + dx) * sW, dst = oh * OW + lo; ow < hi; ow++, src += sw * sW, dst++) acc[dst] += wv * data[src]!;
          }
        }
      }
      const at = out.offset + (n * O + oc) * P;
      for (let p = 0; p < P; p++) out.data[at + p] = acc[p]!;
    }
  }
}

export function conv2dKernel(x: CpuView, w: CpuView, bias: CpuView | undefined, a: Conv2dAttrs, out: CpuView): void {
  const { shape, strides } = images(x);
  const N = shape[0]!;
  const [O, Cg, kh, kw] = w.shape as [number, number, number, number];
  const [OH, OW] = out.shape.slice(-2) as [number, number];
  const G = a.groups, Og = O / G, K = Cg * kh * kw, P = OH * OW;
  if (kernelOverrides.conv2d?.(x, w, bias, a, out)) return;
  if (Cg === 1 && Og < GEMM_BLOCKS.mr) return depthwise(x, shape, strides, w, bias, a, out);
  const weights = readContiguous(w);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < G; g++) {
      const at = out.offset + (n * O + g * Og) * P;
      if (bias) fillChannels(out, at, Og, P, bias, g * Og);
      const patches = im2col(x, x.offset + n * strides[0]! + g * Cg * strides[1]!, shape, strides, kh, kw, OW, a);
      gemm(Og, P, K, { data: weights, offset: g * Og * K, rowStride: K, colStride: 1 }, patches, { data: out.data, offset: at, rowStride: P }, bias !== undefined);
    }
  }
}

export function convTranspose2dKernel(x: CpuView, w: CpuView, bias: CpuView | undefined, a: ConvTranspose2dAttrs, out: CpuView): void {
  if (kernelOverrides.convTranspose2d?.(x, w, bias, a, out)) return;
  const img = images(x);
  const [N, , H, W] = img.shape as [number, number, number, number];
  let strides = img.strides;
  const [Cin, Cog, kh, kw] = w.shape as [number, number, number, number];
  const [OH, OW] = out.shape.slice(-2) as [number, number];
  const [sh, sw] = a.stride, [dh, dw] = a.dilation, [ph, pw] = a.padding;
  const G = a.groups, Cig = Cin / G, Cout = Cog * G, R = Cog * kh * kw, P = H * W, OP = OH * OW;
  let data = x.data, base = x.offset;
  if (H > 1 && strides[2] !== W * strides[3]!) {
    // The GEMM reads each input channel as one row of H·W values: rows that do not line up are copied.
    data = readContiguous(x);
    base = 0;
    strides = [Cin * P, P, W, 1];
  }
  const weights = readContiguous(w);
  // float32 outputs take float32 columns (rounded once before they are added), which the wasm GEMM writes.
  const cols = out.data instanceof Float32Array ? new Float32Array(R * P) : new Float64Array(R * P);
  for (let n = 0; n < N; n++) {
    const outAt = out.offset + n * Cout * OP;
    fillChannels(out, outAt, Cout, OP, bias, 0);
    for (let g = 0; g < G; g++) {
      const xAt = base + n * strides[0]! + g * Cig * strides[1]!;
      // Weight group g is [Cig, R]; its transpose is the [R, Cig] left operand.
      gemm(R, P, Cig, { data: weights, offset: g * Cig * R, rowStride: 1, colStride: R }, { data, offset: xAt, rowStride: strides[1]!, colStride: strides[3]! }, { data: cols, offset: 0, rowStride: P }, false);
      for (let r = 0; r < R; r++) {
        const co = Math.floor(r / (kh * kw)), i = Math.floor(r / kw) % kh, j = r % kw;
        const plane = outAt + (g * Cog + co) * OP;
        for (let ih = 0; ih < H; ih++) {
          const oh = ih * sh - ph + i * dh;
          if (oh < 0 || oh >= OH) continue;
          for (let iw = 0, src = r * P + ih * W; iw < W; iw++, src++) {
            const ow = iw * sw - pw + j * dw;
            if (ow >= 0 && ow < OW) out.data[plane + oh * OW + ow] += cols[src]!;
          }
        }
      }
    }
  }
}
