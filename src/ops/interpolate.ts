import { f16round } from '@petamoriken/float16';
import { check, fmtShape } from '../errors.js';
import { isFloat } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';
import { gatherSeparable, identityTable } from '../kernels/cpu/movement.js';
import { linearKernel as linearKernelWgsl, nearestKernel as nearestKernelWgsl } from '../kernels/wgsl/interpolate.js';
import { type CpuView, type TensorMeta, apply1, checkInputs, defineOp, describeMeta } from './op.js';

export type InterpolateMode = 'nearest' | 'linear' | 'bilinear';

export interface InterpolateOptions {
  /** Output spatial size: one number for every spatial dim, or one per dim. */
  size?: number | readonly number[];
  /** Multiplier of the spatial size (output = floor(input · scale)); exactly one of size and scaleFactor. */
  scaleFactor?: number | readonly number[];
  mode?: InterpolateMode;
  /** Linear modes only: align the corner pixels' centres (default false). */
  alignCorners?: boolean;
}

interface InterpolateAttrs {
  mode: InterpolateMode;
  /** Output spatial size. */
  size: number[];
  /** The user's scale factors (used for the source index, as PyTorch does), or null when `size` was given. */
  scales: (number | null)[];
  alignCorners: boolean;
}

/** Input ranks per mode: [N, C, W] for linear, [N, C, H, W] for bilinear, 3-D to 5-D for nearest. */
const RANKS: Record<InterpolateMode, readonly number[]> = { nearest: [3, 4, 5], linear: [3], bilinear: [4] };

const LAYOUTS: Record<number, string> = { 3: '[N, C, W]', 4: '[N, C, H, W]', 5: '[N, C, D, H, W]' };

function checkRank(mode: InterpolateMode, x: TensorMeta): void {
  const ranks = RANKS[mode];
  check(ranks.includes(x.shape.length), 'interpolate', () =>
    `mode '${mode}' needs a ${ranks.map((r) => `${r}-D ${LAYOUTS[r]}`).join(', ')} input, got ${describeMeta(x)}`);
}

/**
 * PyTorch's scale for a source index: 1/scaleFactor when the user gave one, else in/out, rounded to
 * float32 because PyTorch computes it in float (this decides which pixel `nearest` picks at the edges).
 */
function sourceScale(inSize: number, outSize: number, scale: number | null): number {
  return scale !== null && scale > 0 ? Math.fround(1 / scale) : Math.fround(inSize / outSize);
}

/** PyTorch's legacy 'nearest': src = min(floor(dst · scale), in − 1), with exact shortcuts for ×1 and ×2. */
function nearestTable(inSize: number, outSize: number, scale: number | null): Int32Array {
  if (outSize === inSize) return identityTable(outSize);
  if (outSize === 2 * inSize) return Int32Array.from({ length: outSize }, (_, j) => j >> 1);
  const s = sourceScale(inSize, outSize, scale);
  return Int32Array.from({ length: outSize }, (_, j) => Math.min(Math.floor(Math.fround(j * s)), inSize - 1));
}

/** The float32 scale of the linear modes' source coordinate: (in − 1)/(out − 1) with alignCorners (0 for one output), else sourceScale. */
function linearScale(inSize: number, outSize: number, scale: number | null, alignCorners: boolean): number {
  if (!alignCorners) return sourceScale(inSize, outSize, scale);
  return outSize > 1 ? Math.fround((inSize - 1) / (outSize - 1)) : 0;
}

interface LinearWeights {
  /** Source offsets (index · stride) of the two neighbours, and their weights. */
  i0: Float64Array;
  i1: Float64Array;
  w0: Float64Array;
  w1: Float64Array;
}

/**
 * Neighbours and weights per output position, computed as PyTorch's CPU kernel does: the source
 * coordinate in float32 (area_pixel_compute_source_index), weights stored in the input's dtype.
 */
function linearWeights(inSize: number, outSize: number, scale: number | null, alignCorners: boolean, stride: number, round: (v: number) => number): LinearWeights {
  const w: LinearWeights = { i0: new Float64Array(outSize), i1: new Float64Array(outSize), w0: new Float64Array(outSize), w1: new Float64Array(outSize) };
  const f = Math.fround;
  const s = linearScale(inSize, outSize, scale, alignCorners);
  for (let j = 0; j < outSize; j++) {
    let i = j, lambda = 0;
    if (inSize !== outSize) {
      const real = alignCorners ? f(s * j) : Math.max(f(f(s * (j + 0.5)) - 0.5), 0);
      i = Math.min(Math.floor(real), inSize - 1);
      lambda = Math.min(Math.max(f(real - i), 0), 1);
    }
    w.i0[j] = i * stride;
    w.i1[j] = (i < inSize - 1 ? i + 1 : i) * stride;
    w.w1[j] = round(lambda);
    w.w0[j] = round(1 - w.w1[j]!);
  }
  return w;
}

function linearKernel(x: CpuView, { size, scales, alignCorners }: InterpolateAttrs, out: CpuView): void {
  const [n, c] = x.shape as [number, number];
  const k = size.length;
  const round = x.dtype === 'float16' ? f16round : Math.fround;
  const ww = linearWeights(x.shape[k + 1]!, size[k - 1]!, scales[k - 1] ?? null, alignCorners, x.strides[k + 1]!, round);
  // 1-D is one row: its "height" is a single row of weight 1 (and the second term is skipped, so Inf·0 never appears).
  const wh = k === 2 ? linearWeights(x.shape[2]!, size[0]!, scales[0] ?? null, alignCorners, x.strides[2]!, round) : null;
  const outH = k === 2 ? size[0]! : 1, outW = size[k - 1]!;
  const src = x.data, dst = out.data;
  let o = 0;
  for (let b = 0; b < n; b++) {
    for (let ch = 0; ch < c; ch++) {
      const base = x.offset + b * x.strides[0]! + ch * x.strides[1]!;
      for (let h = 0; h < outH; h++) {
        const r0 = base + (wh ? wh.i0[h]! : 0), r1 = base + (wh ? wh.i1[h]! : 0);
        const a0 = wh ? wh.w0[h]! : 1, a1 = wh ? wh.w1[h]! : 0;
        for (let j = 0; j < outW; j++) {
          const p0 = ww.i0[j]!, p1 = ww.i1[j]!, b0 = ww.w0[j]!, b1 = ww.w1[j]!;
          const top = src[r0 + p0]! * b0 + src[r0 + p1]! * b1;
          dst[o++] = wh ? top * a0 + (src[r1 + p0]! * b0 + src[r1 + p1]! * b1) * a1 : top;
        }
      }
    }
  }
}

const interpolateOp = defineOp<InterpolateAttrs>({
  name: 'interpolate',
  infer([x], { mode, size, scales, alignCorners }) {
    checkRank(mode, x!);
    const spatial = x!.shape.slice(2);
    check(size.length === spatial.length && scales.length === spatial.length, 'interpolate', () =>
      `expected ${spatial.length} output sizes for ${describeMeta(x!)}, got ${fmtShape(size)}`);
    check(mode !== 'nearest' || !alignCorners, 'interpolate', "alignCorners can only be set with the linear modes ('linear', 'bilinear')");
    check(mode === 'nearest' || isFloat(x!.dtype), 'interpolate', () => `mode '${mode}' needs a float tensor, got ${describeMeta(x!)}; convert it with .to('float32')`);
    const from = scales[0] === null ? '' : ` (from scaleFactor ${fmtShape(scales as number[])})`;
    check(spatial.every((s) => s > 0) && size.every((s) => Number.isInteger(s) && s > 0), 'interpolate', () =>
      `input and output spatial sizes must be positive integers, but got input ${describeMeta(x!)} and output size ${fmtShape(size)}${from}`);
    return [{ shape: [...x!.shape.slice(0, 2), ...size], dtype: x!.dtype }];
  },
  cpu([x], attrs, [out]) {
    if (attrs.mode !== 'nearest') return linearKernel(x!, attrs, out!);
    const tables = x!.shape.map((s, d) => (d < 2 ? identityTable(s) : nearestTable(s, attrs.size[d - 2]!, attrs.scales[d - 2] ?? null)));
    gatherSeparable(x!, tables, out!.data);
  },
  webgpu([x], { mode, size, scales, alignCorners }, [out], caps) {
    const spatial = x!.shape.slice(2);
    if (mode === 'nearest') return nearestKernelWgsl(x!, out!, spatial.map((s, i) => sourceScale(s, size[i]!, scales[i] ?? null)), caps);
    const dims = spatial.map((s, i) => ({ inSize: s, outSize: size[i]!, scale: linearScale(s, size[i]!, scales[i] ?? null, alignCorners) }));
    return linearKernelWgsl(x!, out!, dims, alignCorners, caps);
  },
});

/** One value per spatial dim from a number or an array (checked to have the right length). */
function perDim(what: string, v: number | readonly number[], x: Tensor, k: number): number[] {
  const list = typeof v === 'number' ? new Array<number>(k).fill(v) : [...v];
  check(list.length === k, 'interpolate', () => `${what} ${fmtShape(list)} must have one entry per spatial dim of ${x.describe()} (${k})`);
  return list;
}

/**
 * Resizes the spatial dims of [N, C, W] ('nearest', 'linear'), [N, C, H, W] ('nearest', 'bilinear') or
 * [N, C, D, H, W] ('nearest') input, as torch.nn.functional.interpolate: give `size` or `scaleFactor`.
 * `interpolate(x, size, opts)` takes the size positionally, as PyTorch does.
 */
export function interpolate(x: Tensor, sizeOrOpts: number | readonly number[] | InterpolateOptions, opts: InterpolateOptions = {}): Tensor {
  checkInputs('interpolate', [x]);
  const positional = typeof sizeOrOpts === 'number' || Array.isArray(sizeOrOpts);
  check(!positional || opts.size === undefined, 'interpolate', 'size was given twice (positionally and in the options)');
  const o: InterpolateOptions = positional ? { ...opts, size: sizeOrOpts as number | readonly number[] } : (sizeOrOpts as InterpolateOptions);
  const mode = o.mode ?? 'nearest';
  check(mode in RANKS, 'interpolate', `mode must be 'nearest', 'linear' or 'bilinear', got ${JSON.stringify(mode)}`);
  check(o.alignCorners === undefined || mode !== 'nearest', 'interpolate', "alignCorners can only be set with the linear modes ('linear', 'bilinear')");
  checkRank(mode, x);
  check((o.size === undefined) !== (o.scaleFactor === undefined), 'interpolate', 'give exactly one of size and scaleFactor');
  const k = x.ndim - 2;
  let size: number[], scales: (number | null)[];
  if (o.size !== undefined) {
    size = perDim('size', o.size, x, k);
    scales = new Array<null>(k).fill(null);
  } else {
    const factors = perDim('scaleFactor', o.scaleFactor!, x, k);
    check(factors.every((f) => Number.isFinite(f) && f > 0), 'interpolate', `scaleFactor must be positive and finite, got ${fmtShape(factors)}`);
    // PyTorch computes the output size in double and truncates.
    size = factors.map((f, i) => Math.floor(x.shape[i + 2]! * f));
    scales = factors;
  }
  return apply1(interpolateOp, [x], { mode, size, scales, alignCorners: o.alignCorners ?? false });
}
