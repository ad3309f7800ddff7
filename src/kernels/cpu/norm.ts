import type { CpuView } from '../../ops/op.js';
import { readContiguous } from './util.js';
import { kernelOverrides } from './overrides.js';
import { call, input } from '../../ops/expr.js';

/**
 * How row-major input elements group into normalisation blocks and map to affine channels.
 * Block b holds `blockSize` consecutive elements; element j of it uses channel
 * (b mod groups)·groupChannels + floor(j / inner). layerNorm: groups 1, inner 1 (channel = j);
 * groupNorm: G groups of C/G channels with `inner` spatial elements each; instanceNorm: C groups of 1.
 */
export interface BlockLayout {
  readonly blockSize: number;
  readonly groups: number;
  readonly groupChannels: number;
  readonly inner: number;
}

/** Normalises each block by its own mean and biased variance (two passes, in double), then applies weight and bias. */
export function blockNormKernel(x: CpuView, weight: CpuView | undefined, bias: CpuView | undefined, layout: BlockLayout, eps: number, out: CpuView): void {
  if (kernelOverrides.blockNorm?.(x, weight, bias, layout, eps, out)) return;
  const xs = readContiguous(x);
  const w = weight && readContiguous(weight), b = bias && readContiguous(bias);
  const { blockSize: L, groups, groupChannels, inner } = layout;
  const blocks = L === 0 ? 0 : xs.length / L;
  for (let blk = 0; blk < blocks; blk++) {
    const start = blk * L;
    let sum = 0;
    for (let j = 0; j < L; j++) sum += xs[start + j]!;
    const mean = sum / L;
    let sq = 0;
    for (let j = 0; j < L; j++) {
      const d = xs[start + j]! - mean;
      sq += d * d;
    }
    const rstd = 1 / Math.sqrt(sq / L + eps);
    const c0 = (blk % groups) * groupChannels;
    for (let j = 0; j < L; j++) {
      const c = c0 + Math.floor(j / inner);
      let y = (xs[start + j]! - mean) * rstd;
      if (w) y *= w[c]!;
      if (b) y += b[c]!;
      out.data[start + j] = y;
    }
  }
}

/** (x − mean) · scale + bias, each of the last three operands one value per channel (channelNormKernel's map; add/sub take alpha = 1). */
const CHANNEL_AFFINE = call('add', [call('mul', [call('sub', [input(0, 'float32'), input(1, 'float32')], 'float32', [1]), input(2, 'float32')], 'float32'), input(3, 'float32')], 'float32', [1]);

/** (x − mean[c]) / sqrt(var[c] + eps) · weight[c] + bias[c] for x of shape [N, C, ...], with given per-channel statistics. */
export function channelNormKernel(
  x: CpuView,
  mean: CpuView,
  variance: CpuView,
  weight: CpuView | undefined,
  bias: CpuView | undefined,
  eps: number,
  out: CpuView,
): void {
  const C = x.shape[1]!;
  const m = readContiguous(mean), v = readContiguous(variance);
  const w = weight && readContiguous(weight), b = bias && readContiguous(bias);
  if (kernelOverrides.map && x.dtype === 'float32' && out.dtype === 'float32') {
    // The map kernel (WebAssembly SIMD, split over the threads) with each channel's mean, scale and bias
    // as operands broadcast along every dim but the channel's: one pass over x instead of a scalar loop.
    const params = new Float32Array(3 * C);
    for (let c = 0; c < C; c++) params.set([m[c]!, (w ? w[c]! : 1) / Math.sqrt(v[c]! + eps), b ? b[c]! : 0], 3 * c);
    const strides = x.shape.map((_, d) => (d === 1 ? 3 : 0));
    const perChannel = (k: number): CpuView => ({ shape: x.shape, dtype: 'float32', data: params, offset: k, strides });
    if (kernelOverrides.map(CHANNEL_AFFINE, [x, perChannel(0), perChannel(1), perChannel(2)], out)) return;
  }
  const xs = readContiguous(x);
  const inner = x.shape.slice(2).reduce((a, d) => a * d, 1);
  const o = out.data;
  // Plane by plane (one channel of one image), so the inner loop has the channel's constants in hand.
  for (let i = 0, c = 0; i < xs.length; i += inner, c = c + 1 === C ? 0 : c + 1) {
    const mc = m[c]!, sc = (w ? w[c]! : 1) / Math.sqrt(v[c]! + eps), bc = b ? b[c]! : 0;
    for (let j = i, end = i + inner; j < end; j++) o[j] = (xs[j]! - mc) * sc + bc;
  }
}
