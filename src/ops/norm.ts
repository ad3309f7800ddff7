import { SinterError, check, fmtShape } from '../errors.js';
import { isFloat } from '../tensor/dtype.js';
import { numel, sameShape } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { type BlockLayout, blockNormKernel, channelNormKernel } from '../kernels/cpu/norm.js';
import type { GpuView } from '../kernels/wgsl/kernel.js';
import * as wgsl from '../kernels/wgsl/norm.js';
import { type TensorMeta, apply1, defineOp, describeMeta } from './op.js';

// Normalisation layers as torch.nn.functional: statistics two-pass with biased variance (in double on the CPU, f32 on
// WebGPU), output in the input's dtype.

interface AffineAttrs {
  eps: number;
  hasWeight: boolean;
  hasBias: boolean;
}
export type BatchNormAttrs = AffineAttrs;
export interface LayerNormAttrs extends AffineAttrs {
  normalizedShape: number[];
}
export interface GroupNormAttrs extends AffineAttrs {
  numGroups: number;
}
export interface InstanceNormAttrs extends AffineAttrs {
  /** true: per-(n, c) statistics of the input; false: inputs carry runningMean and runningVar after x. */
  useInputStats: boolean;
}

/** The tensors after x, one per set flag, placed at their flags' positions. */
function optionals<T>(op: string, rest: readonly T[], flags: readonly boolean[]): (T | undefined)[] {
  const want = flags.filter(Boolean).length;
  check(rest.length === want, op, () => `expected ${want + 1} tensor inputs for these attrs, got ${rest.length + 1}`);
  let k = 0;
  return flags.map((f) => (f ? rest[k++] : undefined));
}

/** A float input of rank ≥ `minRank`, and a finite non-negative eps. */
function checkInput(op: string, x: TensorMeta, minRank: number, eps: number): void {
  check(isFloat(x.dtype), op, () => `expected a float input (float32 or float16), got ${describeMeta(x)}`);
  check(x.shape.length >= minRank, op, () => `expected an input of rank ≥ ${minRank}${minRank === 2 ? ' ([N, C, ...])' : ''}, got ${describeMeta(x)}`);
  check(typeof eps === 'number' && Number.isFinite(eps) && eps >= 0, op, () => `eps must be a finite non-negative number, got ${JSON.stringify(eps)}`);
}

/** A float parameter of exactly `shape` (`why` says where that shape comes from). */
function checkParam(op: string, what: string, p: TensorMeta | undefined, shape: readonly number[], why: string): void {
  if (!p) return;
  check(isFloat(p.dtype), op, () => `${what} must be a float tensor (float32 or float16), got ${describeMeta(p)}`);
  check(sameShape(p.shape, shape), op, () => `expected ${what} of shape ${fmtShape(shape)} (${why}), got ${describeMeta(p)}`);
}

/** Per-channel parameters of an [N, C, ...] input: each must be [C]. */
function checkChannelParams(op: string, x: TensorMeta, params: Record<string, TensorMeta | undefined>): void {
  const why = `one value per channel of input ${describeMeta(x)}`;
  for (const [what, p] of Object.entries(params)) checkParam(op, what, p, [x.shape[1]!], why);
}

const spatial = (x: TensorMeta): number => numel(x.shape.slice(2));

/** The kernels' inputs, each with the binding it is read from. */
const operands = (inputs: readonly GpuView[]): wgsl.Operand[] => inputs.map((view, k) => ({ view, buf: `in${k}` }));

/** How each op's elements group into normalisation blocks (see BlockLayout). */
const layerLayout = (a: LayerNormAttrs): BlockLayout => ({ blockSize: numel(a.normalizedShape), groups: 1, groupChannels: 0, inner: 1 });
function groupLayout(x: TensorMeta, a: GroupNormAttrs): BlockLayout {
  const per = x.shape[1]! / a.numGroups, s = spatial(x);
  return { blockSize: per * s, groups: a.numGroups, groupChannels: per, inner: s };
}
const instanceLayout = (x: TensorMeta): BlockLayout => ({ blockSize: spatial(x), groups: x.shape[1]!, groupChannels: 1, inner: spatial(x) });

export const batchNormOp = defineOp<BatchNormAttrs>({
  name: 'batchNorm',
  infer([x, ...rest], a) {
    checkInput('batchNorm', x!, 2, a.eps);
    const [runningMean, runningVar, weight, bias] = optionals('batchNorm', rest, [true, true, a.hasWeight, a.hasBias]);
    checkChannelParams('batchNorm', x!, { runningMean, runningVar, weight, bias });
    return [{ shape: x!.shape, dtype: x!.dtype }];
  },
  cpu([x, ...rest], a, [out]) {
    const [mean, variance, weight, bias] = optionals('batchNorm', rest, [true, true, a.hasWeight, a.hasBias]);
    channelNormKernel(x!, mean!, variance!, weight, bias, a.eps, out!);
  },
  webgpu(inputs, a, [out], caps) {
    const [x, ...rest] = operands(inputs);
    const [mean, variance, weight, bias] = optionals('batchNorm', rest, [true, true, a.hasWeight, a.hasBias]);
    return wgsl.channelNormKernel('batchNorm', inputs, { x: x!, mean: mean!, variance: variance!, weight, bias }, a.eps, out!, caps);
  },
});

export const layerNormOp = defineOp<LayerNormAttrs>({
  name: 'layerNorm',
  infer([x, ...rest], a) {
    const op = 'layerNorm', ns = a.normalizedShape;
    checkInput(op, x!, 1, a.eps);
    check(ns.length >= 1 && ns.every((d) => Number.isInteger(d) && d >= 0), op, () =>
      `normalizedShape must be a non-empty list of non-negative integers, got ${JSON.stringify(ns)}`);
    const r = x!.shape.length;
    check(ns.length <= r && sameShape(x!.shape.slice(r - ns.length), ns), op, () =>
      `normalizedShape ${fmtShape(ns)} must equal the trailing dims of input ${describeMeta(x!)}`);
    const [weight, bias] = optionals(op, rest, [a.hasWeight, a.hasBias]);
    checkParam(op, 'weight', weight, ns, 'normalizedShape');
    checkParam(op, 'bias', bias, ns, 'normalizedShape');
    return [{ shape: x!.shape, dtype: x!.dtype }];
  },
  cpu([x, ...rest], a, [out]) {
    const [weight, bias] = optionals('layerNorm', rest, [a.hasWeight, a.hasBias]);
    blockNormKernel(x!, weight, bias, layerLayout(a), a.eps, out!);
  },
  webgpu(inputs, a, [out], caps) {
    const [x, ...rest] = operands(inputs);
    const [weight, bias] = optionals('layerNorm', rest, [a.hasWeight, a.hasBias]);
    return wgsl.blockNormKernel('layerNorm', inputs, { x: x!, weight, bias }, layerLayout(a), a.eps, out!, caps);
  },
});

export const groupNormOp = defineOp<GroupNormAttrs>({
  name: 'groupNorm',
  infer([x, ...rest], a) {
    const op = 'groupNorm', g = a.numGroups;
    checkInput(op, x!, 2, a.eps);
    check(Number.isInteger(g) && g > 0, op, () => `numGroups must be a positive integer, got ${JSON.stringify(g)}`);
    check(x!.shape[1]! % g === 0, op, () => `input ${describeMeta(x!)} has ${x!.shape[1]} channels, which is not divisible by numGroups ${g}`);
    const [weight, bias] = optionals(op, rest, [a.hasWeight, a.hasBias]);
    checkChannelParams(op, x!, { weight, bias });
    return [{ shape: x!.shape, dtype: x!.dtype }];
  },
  cpu([x, ...rest], a, [out]) {
    const [weight, bias] = optionals('groupNorm', rest, [a.hasWeight, a.hasBias]);
    blockNormKernel(x!, weight, bias, groupLayout(x!, a), a.eps, out!);
  },
  webgpu(inputs, a, [out], caps) {
    const [x, ...rest] = operands(inputs);
    const [weight, bias] = optionals('groupNorm', rest, [a.hasWeight, a.hasBias]);
    return wgsl.blockNormKernel('groupNorm', inputs, { x: x!, weight, bias }, groupLayout(x!.view, a), a.eps, out!, caps);
  },
});

export const instanceNormOp = defineOp<InstanceNormAttrs>({
  name: 'instanceNorm',
  infer([x, ...rest], a) {
    const op = 'instanceNorm';
    checkInput(op, x!, 2, a.eps);
    check(typeof a.useInputStats === 'boolean', op, () => `useInputStats must be a boolean, got ${JSON.stringify(a.useInputStats)}`);
    check(!a.useInputStats || spatial(x!) > 1, op, () =>
      `expected more than 1 spatial element per channel to normalise with input statistics, got input ${describeMeta(x!)}`);
    const stats = !a.useInputStats;
    const [runningMean, runningVar, weight, bias] = optionals(op, rest, [stats, stats, a.hasWeight, a.hasBias]);
    checkChannelParams(op, x!, { runningMean, runningVar, weight, bias });
    return [{ shape: x!.shape, dtype: x!.dtype }];
  },
  cpu([x, ...rest], a, [out]) {
    const stats = !a.useInputStats;
    const [mean, variance, weight, bias] = optionals('instanceNorm', rest, [stats, stats, a.hasWeight, a.hasBias]);
    if (stats) channelNormKernel(x!, mean!, variance!, weight, bias, a.eps, out!);
    else blockNormKernel(x!, weight, bias, instanceLayout(x!), a.eps, out!);
  },
  webgpu(inputs, a, [out], caps) {
    const stats = !a.useInputStats;
    const [x, ...rest] = operands(inputs);
    const [mean, variance, weight, bias] = optionals('instanceNorm', rest, [stats, stats, a.hasWeight, a.hasBias]);
    if (stats) return wgsl.channelNormKernel('instanceNorm', inputs, { x: x!, mean: mean!, variance: variance!, weight, bias }, a.eps, out!, caps);
    return wgsl.blockNormKernel('instanceNorm', inputs, { x: x!, weight, bias }, instanceLayout(x!.view), a.eps, out!, caps);
  },
});

/** An optional tensor argument: absent (undefined or null) or a Tensor. */
function optionalTensor(op: string, what: string, v: unknown): Tensor[] {
  if (v === undefined || v === null) return [];
  if (!(v instanceof Tensor)) throw new SinterError(op, `${what} must be a Tensor or null, got ${typeof v}`);
  return [v];
}

/** eps from PyTorch's positional form (a number) or an options object. */
function epsOf(arg: number | { eps?: number } | undefined): number {
  return typeof arg === 'number' ? arg : (arg?.eps ?? 1e-5);
}

export interface BatchNormOptions {
  /** Only false (inference, the default) is supported: batch statistics and running-stat updates are training. */
  training?: boolean;
  eps?: number;
}

/** Inference batch norm over dim 1 of [N, C, ...]: (x − runningMean) / √(runningVar + eps) · weight + bias. */
export function batchNorm(
  input: Tensor,
  runningMean: Tensor,
  runningVar: Tensor,
  weight?: Tensor | null,
  bias?: Tensor | null,
  opts: BatchNormOptions = {},
): Tensor {
  const op = 'batchNorm';
  if (opts.training !== undefined && opts.training !== false) {
    throw new SinterError(op, `training: ${JSON.stringify(opts.training)} is not supported; only inference (training: false) is, using runningMean and runningVar`);
  }
  const w = optionalTensor(op, 'weight', weight), b = optionalTensor(op, 'bias', bias);
  return apply1(batchNormOp, [input, runningMean, runningVar, ...w, ...b], { eps: opts.eps ?? 1e-5, hasWeight: w.length > 0, hasBias: b.length > 0 });
}

/** Normalises over the trailing dims `normalizedShape` (biased variance), then applies elementwise weight and bias of that shape. */
export function layerNorm(
  input: Tensor,
  normalizedShape: number | readonly number[],
  weight?: Tensor | null,
  bias?: Tensor | null,
  eps?: number | { eps?: number },
): Tensor {
  const op = 'layerNorm';
  const ns = typeof normalizedShape === 'number' ? [normalizedShape] : normalizedShape;
  if (!Array.isArray(ns)) throw new SinterError(op, `normalizedShape must be a number or a list of numbers, got ${JSON.stringify(normalizedShape)}`);
  const w = optionalTensor(op, 'weight', weight), b = optionalTensor(op, 'bias', bias);
  return apply1(layerNormOp, [input, ...w, ...b], { normalizedShape: [...ns], eps: epsOf(eps), hasWeight: w.length > 0, hasBias: b.length > 0 });
}

/** Normalises each of `numGroups` channel groups of [N, C, ...] over its channels and spatial dims, then applies per-channel weight and bias. */
export function groupNorm(input: Tensor, numGroups: number, weight?: Tensor | null, bias?: Tensor | null, eps?: number | { eps?: number }): Tensor {
  const op = 'groupNorm';
  const w = optionalTensor(op, 'weight', weight), b = optionalTensor(op, 'bias', bias);
  return apply1(groupNormOp, [input, ...w, ...b], { numGroups, eps: epsOf(eps), hasWeight: w.length > 0, hasBias: b.length > 0 });
}

export interface InstanceNormOptions {
  /** Used (with runningVar) only when useInputStats is false. */
  runningMean?: Tensor | null;
  runningVar?: Tensor | null;
  weight?: Tensor | null;
  bias?: Tensor | null;
  /** true (default): statistics of each (n, c) over the spatial dims; false: runningMean and runningVar. */
  useInputStats?: boolean;
  eps?: number;
}

/** Normalises each (n, c) of [N, C, ...] over its spatial dims (or with running statistics), then applies per-channel weight and bias. */
export function instanceNorm(input: Tensor, opts: InstanceNormOptions = {}): Tensor {
  const op = 'instanceNorm';
  const useInputStats = opts.useInputStats ?? true;
  check(typeof useInputStats === 'boolean', op, () => `useInputStats must be a boolean, got ${JSON.stringify(useInputStats)}`);
  const mean = optionalTensor(op, 'runningMean', opts.runningMean), variance = optionalTensor(op, 'runningVar', opts.runningVar);
  if (useInputStats && (mean.length > 0 || variance.length > 0)) {
    throw new SinterError(op, 'updating runningMean/runningVar from input statistics is training, which is not supported; ' +
      'pass useInputStats: false to normalise with them, or omit them');
  }
  if (!useInputStats && (mean.length === 0 || variance.length === 0)) {
    throw new SinterError(op, 'useInputStats: false needs both runningMean and runningVar');
  }
  const w = optionalTensor(op, 'weight', opts.weight), b = optionalTensor(op, 'bias', opts.bias);
  return apply1(instanceNormOp, [input, ...mean, ...variance, ...w, ...b], { useInputStats, eps: opts.eps ?? 1e-5, hasWeight: w.length > 0, hasBias: b.length > 0 });
}
