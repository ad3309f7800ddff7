import { SinterError, check, fmtShape } from '../errors.js';
import { isFloat } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';
import { adaptiveAvgPool2dKernel, avgPool2dKernel, maxPool2dKernel } from '../kernels/cpu/pool.js';
import * as wgsl from '../kernels/wgsl/pool.js';
import { type TensorMeta, apply1, checkInputs, defineOp, describeMeta } from './op.js';

// 2-d pooling over the last two dims of [N, C, H, W] or unbatched [C, H, W] inputs, as torch.nn.functional.

/** A size for both spatial dims (a number) or [h, w]. */
export type IntPair = number | readonly number[];
type Pair = [number, number];

export interface MaxPool2dOptions {
  /** Default: kernelSize. */
  stride?: IntPair | null;
  /** Implicit -inf padding on both sides; at most half the kernel size. Default 0. */
  padding?: IntPair;
  /** Spacing between window taps. Default 1. */
  dilation?: IntPair;
  /** Round the output size up (windows may overhang, but must start inside the input or left padding). Default false. */
  ceilMode?: boolean;
}

export interface AvgPool2dOptions {
  /** Default: kernelSize. */
  stride?: IntPair | null;
  /** Implicit zero padding on both sides; at most half the kernel size. Default 0. */
  padding?: IntPair;
  /** Default false. */
  ceilMode?: boolean;
  /** Count padding zeros in the divisor. Default true. */
  countIncludePad?: boolean;
  /** Divide every window's sum by this instead. */
  divisorOverride?: number | null;
}

interface WindowAttrs {
  kernelSize: Pair;
  stride: Pair;
  padding: Pair;
  ceilMode: boolean;
}
export interface MaxPool2dAttrs extends WindowAttrs {
  dilation: Pair;
}
export interface AvgPool2dAttrs extends WindowAttrs {
  countIncludePad: boolean;
  divisorOverride: number | null;
}
export interface AdaptiveAvgPool2dAttrs {
  outputSize: Pair;
}

function pair(op: string, name: string, v: unknown): Pair {
  if (typeof v === 'number') return [v, v];
  if (Array.isArray(v) && (v.length === 1 || v.length === 2) && v.every((e) => typeof e === 'number')) return [v[0], v[v.length - 1]];
  throw new SinterError(op, `${name} must be a number or an [h, w] pair of numbers, got ${JSON.stringify(v)}`);
}

/** Float, rank 3 or 4, and non-empty except for the batch dim (PyTorch's rule). */
function checkPoolInput(op: string, x: TensorMeta): void {
  check(isFloat(x.dtype), op, () => `expected a float input (float32 or float16), got ${describeMeta(x)}`);
  const r = x.shape.length;
  check((r === 3 || r === 4) && x.shape.slice(r - 3).every((d) => d > 0), op, () =>
    `expected a 3D [C, H, W] or 4D [N, C, H, W] input with non-zero C, H and W, got ${describeMeta(x)}`);
}

function checkInts(op: string, name: string, v: readonly number[], min: number): void {
  check(v.every((e) => Number.isInteger(e) && e >= min), op, () => `${name} must be integers ≥ ${min}, got ${fmtShape(v)}`);
}

function checkBool(op: string, name: string, v: unknown): void {
  check(typeof v === 'boolean', op, () => `${name} must be a boolean, got ${JSON.stringify(v)}`);
}

/** The [..., OH, OW] shape of a windowed pool, after PyTorch's checks on kernel, stride, padding and dilation. */
function pooledShape(op: string, x: TensorMeta, a: WindowAttrs, dilation: Pair): number[] {
  checkPoolInput(op, x);
  checkInts(op, 'kernelSize', a.kernelSize, 1);
  checkInts(op, 'stride', a.stride, 1);
  checkInts(op, 'padding', a.padding, 0);
  checkInts(op, 'dilation', dilation, 1);
  checkBool(op, 'ceilMode', a.ceilMode);
  check(a.padding.every((p, i) => p <= Math.floor(a.kernelSize[i]! / 2)), op, () =>
    `pad should be at most half of kernel size, but got padding ${fmtShape(a.padding)} with kernelSize ${fmtShape(a.kernelSize)}`);
  const r = x.shape.length;
  const size = [0, 1].map((i) => {
    const n = x.shape[r - 2 + i]!, k = a.kernelSize[i]!, s = a.stride[i]!, p = a.padding[i]!, d = dilation[i]!;
    let o = Math.floor((n + 2 * p - d * (k - 1) - 1 + (a.ceilMode ? s - 1 : 0)) / s) + 1;
    // In ceil mode the last window must start inside the input or the left padding.
    if (a.ceilMode && (o - 1) * s >= n + p) o--;
    return o;
  });
  check(size.every((o) => o >= 1), op, () =>
    `input ${describeMeta(x)} with kernelSize ${fmtShape(a.kernelSize)}, stride ${fmtShape(a.stride)}, padding ${fmtShape(a.padding)}, ` +
    `dilation ${fmtShape(dilation)}${a.ceilMode ? ', ceilMode' : ''} gives output size ${fmtShape(size)}: output size is too small`);
  return [...x.shape.slice(0, r - 2), ...size];
}

export const maxPool2dOp = defineOp<MaxPool2dAttrs>({
  name: 'maxPool2d',
  infer([x], a) {
    return [{ shape: pooledShape('maxPool2d', x!, a, a.dilation), dtype: x!.dtype }];
  },
  cpu([x], a, [out]) {
    maxPool2dKernel(x!, a, out!);
  },
  webgpu([x], a, [out], caps) {
    return wgsl.maxPool2dKernel(x!, a, out!, caps);
  },
});

export const avgPool2dOp = defineOp<AvgPool2dAttrs>({
  name: 'avgPool2d',
  infer([x], a) {
    const shape = pooledShape('avgPool2d', x!, a, [1, 1]);
    checkBool('avgPool2d', 'countIncludePad', a.countIncludePad);
    const d = a.divisorOverride;
    check(d === null || (Number.isInteger(d) && d !== 0), 'avgPool2d', () => `divisorOverride must be a non-zero integer, got ${JSON.stringify(d)}`);
    return [{ shape, dtype: x!.dtype }];
  },
  cpu([x], a, [out]) {
    avgPool2dKernel(x!, a, out!);
  },
  webgpu([x], a, [out], caps) {
    return wgsl.avgPool2dKernel(x!, a, out!, caps);
  },
});

/** Float, rank 3 or 4, with non-empty H and W (PyTorch lets N and C be empty here). */
function checkAdaptiveInput(x: TensorMeta): void {
  check(isFloat(x.dtype), 'adaptiveAvgPool2d', () => `expected a float input (float32 or float16), got ${describeMeta(x)}`);
  const r = x.shape.length;
  check((r === 3 || r === 4) && x.shape[r - 1]! > 0 && x.shape[r - 2]! > 0, 'adaptiveAvgPool2d', () =>
    `expected a 3D [C, H, W] or 4D [N, C, H, W] input with non-zero H and W, got ${describeMeta(x)}`);
}

export const adaptiveAvgPool2dOp = defineOp<AdaptiveAvgPool2dAttrs>({
  name: 'adaptiveAvgPool2d',
  infer([x], { outputSize }) {
    checkAdaptiveInput(x!);
    checkInts('adaptiveAvgPool2d', 'outputSize', outputSize, 0);
    return [{ shape: [...x!.shape.slice(0, -2), ...outputSize], dtype: x!.dtype }];
  },
  cpu([x], _, [out]) {
    adaptiveAvgPool2dKernel(x!, out!);
  },
  webgpu([x], _, [out], caps) {
    return wgsl.adaptiveAvgPool2dKernel(x!, out!, caps);
  },
});

/** Max over each (dilated) window of the last two dims; padding is -inf, so it is never selected; NaN propagates. */
export function maxPool2d(input: Tensor, kernelSize: IntPair, opts: MaxPool2dOptions = {}): Tensor {
  const op = 'maxPool2d';
  const k = pair(op, 'kernelSize', kernelSize);
  return apply1(maxPool2dOp, [input], {
    kernelSize: k,
    stride: opts.stride === undefined || opts.stride === null ? k : pair(op, 'stride', opts.stride),
    padding: pair(op, 'padding', opts.padding ?? 0),
    dilation: pair(op, 'dilation', opts.dilation ?? 1),
    ceilMode: opts.ceilMode ?? false,
  });
}

/** Mean over each window of the last two dims, with PyTorch's divisor rules (see AvgPool2dOptions). */
export function avgPool2d(input: Tensor, kernelSize: IntPair, opts: AvgPool2dOptions = {}): Tensor {
  const op = 'avgPool2d';
  const k = pair(op, 'kernelSize', kernelSize);
  return apply1(avgPool2dOp, [input], {
    kernelSize: k,
    stride: opts.stride === undefined || opts.stride === null ? k : pair(op, 'stride', opts.stride),
    padding: pair(op, 'padding', opts.padding ?? 0),
    ceilMode: opts.ceilMode ?? false,
    countIncludePad: opts.countIncludePad ?? true,
    divisorOverride: opts.divisorOverride ?? null,
  });
}

/** Mean over PyTorch's adaptive bins, giving an [..., h, w] output; a null entry keeps that input size. */
export function adaptiveAvgPool2d(input: Tensor, outputSize: number | readonly (number | null)[]): Tensor {
  const op = 'adaptiveAvgPool2d';
  checkInputs(op, [input]);
  checkAdaptiveInput(input);
  const sizes = typeof outputSize === 'number' ? [outputSize, outputSize] : outputSize;
  if (!Array.isArray(sizes) || sizes.length !== 2 || !sizes.every((s) => s === null || typeof s === 'number')) {
    throw new SinterError(op, `outputSize must be a number or an [h, w] pair of numbers or nulls, got ${JSON.stringify(outputSize)}`);
  }
  const r = input.ndim;
  return apply1(adaptiveAvgPool2dOp, [input], { outputSize: [sizes[0] ?? input.shape[r - 2]!, sizes[1] ?? input.shape[r - 1]!] });
}
