import { add, mul } from '../../../ops/binary.js';
import { matmul } from '../../../ops/linalg.js';
import { cat, gather, pad } from '../../../ops/movement.js';
import { narrow, permute, reshape, squeeze, unsqueeze } from '../../../ops/views.js';
import type { Tensor } from '../../../tensor/tensor.js';
import { checkHostShape, hostOf } from '../host.js';
import type { OnnxNode } from '../node.js';
import { type OpContext, type Val, register } from '../registry.js';
import { onnxDType } from '../tensor.js';
import { normAxis } from './util.js';

// Audio front-ends: DFT as two real matrix products with cos/sin matrices made on the host (exact for the sizes such
// models use; O(N²) per signal), STFT as frames gathered from the signal, windowed, then the DFT; and the window
// generators (Hann, Hamming, Blackman).

/** [K, N] cos and sin of 2π·k·n/N for the K output bins, as device matrices (transposed: [N, K]). */
function dftMatrices(ctx: OpContext, n: number, bins: number, length: number): [Tensor, Tensor] {
  checkHostShape('DFT', [n, bins]);
  const cos = new Array<number>(n * bins), sin = new Array<number>(n * bins);
  for (let j = 0; j < n; j++) {
    for (let k = 0; k < bins; k++) {
      const angle = (2 * Math.PI * ((j * k) % length)) / length;
      cos[j * bins + k] = Math.cos(angle);
      sin[j * bins + k] = Math.sin(angle);
    }
  }
  return [ctx.dev(hostOf('float32', [n, bins], cos), 'DFT cos matrix'), ctx.dev(hostOf('float32', [n, bins], sin), 'DFT sin matrix')];
}

/**
 * The DFT of x [..., N, 1 | 2] (real, or real and imaginary parts) along `axis` (a signal dim, not the last):
 * [..., K, 2] with K = length, or length/2 + 1 when one-sided; the signal is zero-padded or cut to `length`.
 */
function dft(node: OnnxNode, ctx: OpContext, x: Tensor, axis: number, length: number | undefined, inverse: boolean, onesided: boolean): Tensor {
  const rank = x.ndim, parts = x.shape[rank - 1]!;
  if (parts !== 1 && parts !== 2) node.fail(`the last dim of ${x.describe()} must be 1 (real) or 2 (complex)`);
  if (axis === rank - 1) node.fail(`axis ${axis} is the real/imaginary dim; it must name a signal dim`);
  const n0 = x.shape[axis]!, n = length ?? n0;
  if (!Number.isInteger(n) || n < 1) node.fail(`dft_length must be a positive integer, got ${n}`);
  if (onesided && parts === 2) node.fail('onesided=1 needs a real input (last dim 1)');
  // The signal axis moves last: [..., N] per part.
  const perm = [...Array.from({ length: rank - 1 }, (_, i) => i).filter((i) => i !== axis), axis];
  const part = (p: number) => {
    let t = permute(squeeze(narrow(x, rank - 1, p, 1), rank - 1), perm);
    if (n < n0) t = narrow(t, t.ndim - 1, 0, n);
    if (n > n0) t = pad(t, [0, n - n0]);
    return t;
  };
  const re = part(0), im = parts === 2 ? part(1) : undefined;
  const bins = onesided ? Math.floor(n / 2) + 1 : n;
  const [c, s] = dftMatrices(ctx, n, bins, n);
  // Forward e^{−iθ}: (re + i·im)(cos − i·sin); inverse e^{+iθ}, divided by N.
  const rc = matmul(re, c), rs = matmul(re, s), ic = im && matmul(im, c), is = im && matmul(im, s);
  const sign = inverse ? 1 : -1;
  let outRe = is ? add(rc, mul(is, -sign)) : rc;
  let outIm = ic ? add(ic, mul(rs, sign)) : mul(rs, sign);
  if (inverse) {
    outRe = mul(outRe, 1 / n);
    outIm = mul(outIm, 1 / n);
  }
  // Back to x's layout with the bins where the signal was, real and imaginary last.
  const back = perm.map((_, i) => perm.indexOf(i));
  const restore = (t: Tensor) => unsqueeze(permute(t, back), rank - 1);
  return cat([restore(outRe), restore(outIm)], rank - 1);
}

function hostScalar(ctx: OpContext, v: Val | undefined, what: string): number | undefined {
  return v === undefined ? undefined : ctx.host(v, what).scalar(what);
}

/** Hann, Hamming and Blackman windows of `size` (periodic: as the first `size` points of a size+1 window). */
function windowOf(node: OnnxNode, ctx: OpContext, sizeV: Val, coefficients: readonly number[]): Val {
  const size = hostScalar(ctx, sizeV, 'size')!;
  if (!Number.isInteger(size) || size < 0) node.fail(`size must be a non-negative integer, got ${size}`);
  checkHostShape(node.opType, [size]);
  const periodic = node.int('periodic', 1) === 1;
  const n = periodic ? size : size - 1;
  const values = Array.from({ length: size }, (_, i) => coefficients.reduce((acc, a, k) => acc + (k % 2 === 0 ? a : -a) * Math.cos((2 * Math.PI * k * i) / n), 0));
  return hostOf(onnxDType(node.int('output_datatype', 1), `${node.describe()}'s output_datatype`), [size], values);
}

/**
 * MelWeightMatrix as ONNX's reference builds it: [dft_length/2 + 1, num_mel_bins] triangular filters between mel-spaced
 * edges, each edge rounded down to a DFT bin.
 */
function melWeightMatrix(node: OnnxNode, ctx: OpContext, ins: readonly (Val | undefined)[]): Val {
  const [mels, length, rate, low, high] = ['num_mel_bins', 'dft_length', 'sample_rate', 'lower_edge_hertz', 'upper_edge_hertz'].map((w, i) => hostScalar(ctx, ins[i], w)!) as [number, number, number, number, number];
  const spectrogramBins = Math.floor(length / 2) + 1;
  checkHostShape(node.opType, [spectrogramBins, mels]);
  const toMel = (hz: number) => 2595 * Math.log10(1 + hz / 700);
  // The step divides by the number of edges (mels + 2), as ONNX's reference does.
  const lowMel = toMel(low), step = (toMel(high) - lowMel) / (mels + 2);
  const edges = Array.from({ length: mels + 2 }, (_, i) => Math.floor(((length + 1) * 700 * (10 ** ((i * step + lowMel) / 2595) - 1)) / rate));
  const out = new Array<number>(spectrogramBins * mels).fill(0);
  const set = (j: number, i: number, v: number) => {
    if (j < 0 || j >= spectrogramBins) node.fail(`a filter edge falls on DFT bin ${j}, outside the ${spectrogramBins} bins`);
    out[j * mels + i] = v;
  };
  for (let i = 0; i < mels; i++) {
    const [lo, centre, hi] = [edges[i]!, edges[i + 1]!, edges[i + 2]!];
    if (centre === lo) set(centre, i, 1);
    else for (let j = lo; j <= centre; j++) set(j, i, (j - lo) / (centre - lo));
    for (let j = centre; j < hi; j++) set(j, i, (hi - j) / (hi - centre));
  }
  return hostOf(onnxDType(node.int('output_datatype', 1), `${node.describe()}'s output_datatype`), [spectrogramBins, mels], out);
}

register({
  MelWeightMatrix: { run: (node, ins, ctx) => [melWeightMatrix(node, ctx, ins)], hostInputs: [0, 1, 2, 3, 4], minOpset: 17 },
  DFT: {
    run: (node, [x, lengthV, axisV], ctx) => {
      const t = ctx.dev(x!, 'input');
      // Opset 17 takes the axis as an attribute (default 1), opset 20 as an input (default −2).
      const axisRaw = node.opset >= 20 ? (hostScalar(ctx, axisV, 'axis') ?? -2) : node.int('axis', 1);
      return [dft(node, ctx, t, normAxis(node, axisRaw, t.ndim), hostScalar(ctx, lengthV, 'dft_length'), node.int('inverse', 0) === 1, node.int('onesided', 0) === 1)];
    },
    hostInputs: [1, 2],
    minOpset: 17,
  },
  STFT: {
    // Frames of frame_length every frame_step, times the window, each transformed: [batch, frames, bins, 2].
    run: (node, [signal, stepV, windowV, lengthV], ctx) => {
      const x = ctx.dev(signal!, 'signal');
      if (x.ndim !== 3) node.fail(`signal ${x.describe()} must be [batch, length, 1 | 2]`);
      const step = hostScalar(ctx, stepV, 'frame_step')!;
      const window = windowV && ctx.dev(windowV, 'window');
      const frame = hostScalar(ctx, lengthV, 'frame_length') ?? window?.shape[0] ?? node.fail('needs a window or a frame_length');
      const [batch, length, parts] = x.shape as [number, number, number];
      if (!(step >= 1) || !(frame >= 1) || frame > length) node.fail(`frame_step ${step} and frame_length ${frame} do not fit a signal of length ${length}`);
      const frames = 1 + Math.floor((length - frame) / step);
      checkHostShape(node.opType, [frames, frame]);
      const starts = Array.from({ length: frames * frame }, (_, i) => Math.floor(i / frame) * step + (i % frame));
      const index = ctx.dev(hostOf('int32', [1, frames * frame, 1], starts), 'frame index').expand([batch, frames * frame, parts]);
      let framed = reshape(gather(x, 1, index), [batch, frames, frame, parts]);
      if (window) framed = mul(framed, reshape(window, [1, 1, frame, 1]));
      return [dft(node, ctx, framed, 2, undefined, false, node.int('onesided', 1) === 1)];
    },
    hostInputs: [1, 3],
    minOpset: 17,
  },
  HannWindow: { run: (node, [size], ctx) => [windowOf(node, ctx, size!, [0.5, 0.5])], hostInputs: [0], minOpset: 17 },
  HammingWindow: { run: (node, [size], ctx) => [windowOf(node, ctx, size!, [25 / 46, 21 / 46])], hostInputs: [0], minOpset: 17 },
  BlackmanWindow: { run: (node, [size], ctx) => [windowOf(node, ctx, size!, [0.42, 0.5, 0.08])], hostInputs: [0], minOpset: 17 },
});
