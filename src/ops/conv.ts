import { SinterError, check, fmtShape } from '../errors.js';
import { type DType, isFloat, promoteTypes } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';
import { conv2dKernel, convTranspose2dKernel } from '../kernels/cpu/conv.js';
import { epilogueKernel } from '../kernels/cpu/gemm.js';
import { conv2dKernel as conv2dKernelWgsl, convTranspose2dKernel as convTranspose2dKernelWgsl } from '../kernels/wgsl/conv.js';
import { type TensorMeta, apply1, checkInputs, defineOp, describeMeta } from './op.js';
import { type EpilogueAttrs, epilogueResult, extraCount } from './linalg.js';

// 2-d convolution and transposed convolution over [N, C, H, W] (or unbatched [C, H, W]) inputs, as
// torch.nn.functional.conv2d / conv_transpose2d. The CPU kernels run the shared GEMM; the WebGPU
// kernels are implicit GEMMs on WebGPU's (src/kernels/wgsl/conv.ts).

/** Canonical conv2d attributes: padding is [top, bottom, left, right] ('same' resolved, possibly asymmetric). */
export interface Conv2dAttrs {
  stride: [number, number];
  padding: [number, number, number, number];
  dilation: [number, number];
  groups: number;
}

export interface ConvTranspose2dAttrs {
  stride: [number, number];
  padding: [number, number];
  outputPadding: [number, number];
  dilation: [number, number];
  groups: number;
}

/** One size for both spatial dims, or [h, w]. */
type SizeArg = number | readonly number[];

export interface Conv2dOptions {
  /** Default 1. */
  stride?: SizeArg;
  /**
   * Zeros added on both sides of each spatial dim (default 0), or 'valid' (none) or 'same' (output size
   * = input size; stride must be 1; when the total is odd the extra zero goes on the bottom/right).
   */
  padding?: SizeArg | 'valid' | 'same';
  /** Spacing between kernel taps. Default 1. */
  dilation?: SizeArg;
  /** Input and output channels are split into this many groups, each convolved separately (C for depthwise). Default 1. */
  groups?: number;
}

export interface ConvTranspose2dOptions {
  /** Default 1. */
  stride?: SizeArg;
  /** dilation·(k−1)−padding zeros are implicitly added on both sides of the input. Default 0. */
  padding?: SizeArg;
  /** Extra size added to the bottom/right of the output; must be smaller than stride or dilation. Default 0. */
  outputPadding?: SizeArg;
  /** Default 1. */
  groups?: number;
  /** Default 1. */
  dilation?: SizeArg;
}

function pair(op: string, name: string, v: unknown): [number, number] {
  if (typeof v === 'number') return [v, v];
  if (Array.isArray(v) && (v.length === 1 || v.length === 2) && v.every((e) => typeof e === 'number')) return [v[0], v[v.length - 1]];
  throw new SinterError(op, `${name} must be a number or an [h, w] pair of numbers, got ${JSON.stringify(v)}`);
}

function checkInts(op: string, name: string, v: readonly number[], min: number): void {
  check(v.every((e) => Number.isInteger(e) && e >= min), op, () => `${name} must be ${v.length > 1 ? 'integers' : 'an integer'} ≥ ${min}, got ${v.length > 1 ? fmtShape(v) : v[0]}`);
}

/** Splits the optional bias from the options (conv2d(x, w, opts) and conv2d(x, w, bias, opts) both work) and rejects unknown options. */
function biasAndOptions<O extends object>(op: string, bias: Tensor | null | undefined | O, options: O | undefined, known: readonly string[]): [Tensor | undefined, O] {
  const isOpts = bias !== null && bias !== undefined && !(bias instanceof Tensor);
  const b = isOpts ? undefined : (bias ?? undefined);
  const opts = (isOpts ? bias : (options ?? {})) as O;
  check(typeof opts === 'object' && opts !== null, op, () => `options must be an object, got ${JSON.stringify(opts)}`);
  const unknown = Object.keys(opts).filter((k) => !known.includes(k));
  check(unknown.length === 0, op, () => `unknown option${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}; expected ${known.join(', ')}`);
  return [b as Tensor | undefined, opts];
}

/** Float inputs of rank 3 or 4 with non-empty C, H, W, a 4-D weight and a 1-D bias of `outChannels`; the promoted dtype. */
function checkConvInputs(op: string, inputs: readonly TensorMeta[], outChannels: (w: TensorMeta) => number): DType {
  const [x, w, bias] = inputs as [TensorMeta, TensorMeta, TensorMeta | undefined];
  const r = x.shape.length;
  check((r === 3 || r === 4) && x.shape.slice(r - 3).every((d) => d > 0), op, () =>
    `expected a 3-D [C, H, W] or 4-D [N, C, H, W] input with non-zero C, H and W, got ${describeMeta(x)}`);
  check(w.shape.length === 4 && w.shape.slice(1).every((d) => d > 0), op, () => `expected a 4-D weight with non-zero sizes after the first dim, got ${describeMeta(w)}`);
  const bad = inputs.find((t) => !isFloat(t.dtype));
  check(!bad, op, () => `expected float tensors (float32 or float16), got ${describeMeta(bad!)}; convert first, e.g. x.to('float32')`);
  if (bias) check(bias.shape.length === 1 && bias.shape[0] === outChannels(w), op, () => `bias must be 1-D of size ${outChannels(w)} (the output channels), got ${describeMeta(bias)}`);
  return inputs.map((t) => t.dtype).reduce(promoteTypes);
}

export const conv2dOp = defineOp<Conv2dAttrs & EpilogueAttrs>({
  name: 'conv2d',
  infer(all, a) {
    const op = 'conv2d';
    const inputs = all.slice(0, all.length - extraCount(a));
    check(inputs.length === 2 || inputs.length === 3, op, () => `expected 2 or 3 inputs and ${extraCount(a)} epilogue inputs, got ${all.length}`);
    checkInts(op, 'stride', a.stride, 1);
    checkInts(op, 'padding [top, bottom, left, right]', a.padding, 0);
    checkInts(op, 'dilation', a.dilation, 1);
    checkInts(op, 'groups', [a.groups], 1);
    const dtype = checkConvInputs(op, inputs, (w) => w.shape[0]!);
    const [x, w] = inputs as [TensorMeta, TensorMeta];
    const [O, Cg, kh, kw] = w.shape as [number, number, number, number];
    const [C, H, W] = x.shape.slice(-3) as [number, number, number];
    check(O % a.groups === 0, op, () => `weight ${describeMeta(w)} has ${O} output channels, which is not divisible by groups (${a.groups})`);
    check(C === Cg * a.groups, op, () => `input ${describeMeta(x)} has ${C} channels but weight ${describeMeta(w)} expects ${Cg}×groups(${a.groups})=${Cg * a.groups}`);
    const [pt, pb, pl, pr] = a.padding;
    const eh = a.dilation[0] * (kh - 1) + 1, ew = a.dilation[1] * (kw - 1) + 1;
    check(eh <= H + pt + pb && ew <= W + pl + pr, op, () =>
      `kernel ${kh}×${kw} (${eh}×${ew} with dilation) is larger than the padded input ${H + pt + pb}×${W + pl + pr} of ${describeMeta(x)}`);
    const OH = Math.floor((H + pt + pb - eh) / a.stride[0]) + 1, OW = Math.floor((W + pl + pr - ew) / a.stride[1]) + 1;
    return [epilogueResult(op, { shape: [...x.shape.slice(0, -3), O, OH, OW], dtype }, all.slice(inputs.length), a.epilogue)];
  },
  cpu(all, attrs, [out]) {
    const inputs = all.slice(0, all.length - extraCount(attrs));
    const [x, w, bias] = inputs;
    conv2dKernel(x!, w!, bias, attrs, out!);
    if (attrs.epilogue) epilogueKernel(attrs.epilogue, inputs.map((t) => t.dtype).reduce(promoteTypes), out!, all.slice(inputs.length));
  },
  webgpu(all, attrs, [out], caps) {
    const inputs = all.slice(0, all.length - extraCount(attrs));
    const [x, w, bias] = inputs;
    const fused = attrs.epilogue && { expr: attrs.epilogue, natural: inputs.map((t) => t.dtype).reduce(promoteTypes), extras: all.slice(inputs.length) };
    return conv2dKernelWgsl(x!, w!, bias, attrs, out!, caps, fused);
  },
});

const CONV2D_OPTIONS = ['stride', 'padding', 'dilation', 'groups'] as const;

/**
 * 2-d convolution (cross-correlation, as torch.nn.functional.conv2d) of input [N, C, H, W] or [C, H, W]
 * with weight [O, C/groups, kH, kW] and an optional bias [O]. Options may come third when there is no bias.
 */
export function conv2d(input: Tensor, weight: Tensor, options?: Conv2dOptions): Tensor;
export function conv2d(input: Tensor, weight: Tensor, bias?: Tensor | null, options?: Conv2dOptions): Tensor;
export function conv2d(input: Tensor, weight: Tensor, biasOrOptions?: Tensor | null | Conv2dOptions, options?: Conv2dOptions): Tensor {
  const op = 'conv2d';
  const [bias, opts] = biasAndOptions(op, biasOrOptions, options, CONV2D_OPTIONS);
  const inputs = bias ? [input, weight, bias] : [input, weight];
  checkInputs(op, inputs);
  const stride = pair(op, 'stride', opts.stride ?? 1), dilation = pair(op, 'dilation', opts.dilation ?? 1);
  const pad = opts.padding ?? 0;
  let padding: [number, number, number, number];
  if (pad === 'valid') padding = [0, 0, 0, 0];
  else if (pad === 'same') {
    check(stride[0] === 1 && stride[1] === 1, op, () => `padding='same' is not supported for strided convolutions (stride ${fmtShape(stride)}); pad explicitly instead`);
    // Total padding dilation·(k−1) per dim, the odd one out on the bottom/right, as PyTorch does.
    const [th, tw] = [0, 1].map((d) => dilation[d]! * ((weight.shape[2 + d] ?? 1) - 1)) as [number, number];
    padding = [Math.floor(th / 2), th - Math.floor(th / 2), Math.floor(tw / 2), tw - Math.floor(tw / 2)];
  } else if (typeof pad === 'string') {
    throw new SinterError(op, `padding must be a number, an [h, w] pair, 'valid' or 'same', got ${JSON.stringify(pad)}`);
  } else {
    const [ph, pw] = pair(op, 'padding', pad);
    padding = [ph, ph, pw, pw];
  }
  return apply1(conv2dOp, inputs, { stride, padding, dilation, groups: opts.groups ?? 1 });
}

export const convTranspose2dOp = defineOp<ConvTranspose2dAttrs>({
  name: 'convTranspose2d',
  infer(inputs, a) {
    const op = 'convTranspose2d';
    checkInts(op, 'stride', a.stride, 1);
    checkInts(op, 'padding', a.padding, 0);
    checkInts(op, 'outputPadding', a.outputPadding, 0);
    checkInts(op, 'dilation', a.dilation, 1);
    checkInts(op, 'groups', [a.groups], 1);
    const dtype = checkConvInputs(op, inputs, (w) => w.shape[1]! * a.groups);
    const [x, w] = inputs as [TensorMeta, TensorMeta];
    const [Cin, Cog, kh, kw] = w.shape as [number, number, number, number];
    const [C, H, W] = x.shape.slice(-3) as [number, number, number];
    check(Cin % a.groups === 0, op, () => `weight ${describeMeta(w)} has ${Cin} input channels, which is not divisible by groups (${a.groups})`);
    check(C === Cin, op, () => `input ${describeMeta(x)} has ${C} channels but weight ${describeMeta(w)} expects ${Cin}`);
    check(a.outputPadding.every((p, d) => p < a.stride[d]! || p < a.dilation[d]!), op, () =>
      `outputPadding ${fmtShape(a.outputPadding)} must be smaller than either stride ${fmtShape(a.stride)} or dilation ${fmtShape(a.dilation)} in each dim`);
    const [OH, OW] = [0, 1].map((d) => ([H, W][d]! - 1) * a.stride[d]! - 2 * a.padding[d]! + a.dilation[d]! * ([kh, kw][d]! - 1) + a.outputPadding[d]! + 1) as [number, number];
    check(OH > 0 && OW > 0, op, () => `the output size ${OH}×${OW} for input ${describeMeta(x)} and weight ${describeMeta(w)} is not positive; reduce the padding`);
    return [{ shape: [...x.shape.slice(0, -3), Cog * a.groups, OH, OW], dtype }];
  },
  cpu([x, w, bias], attrs, [out]) {
    convTranspose2dKernel(x!, w!, bias, attrs, out!);
  },
  webgpu([x, w, bias], attrs, [out], caps) {
    return convTranspose2dKernelWgsl(x!, w!, bias, attrs, out!, caps);
  },
});

const CONV_TRANSPOSE2D_OPTIONS = ['stride', 'padding', 'outputPadding', 'groups', 'dilation'] as const;

/**
 * Transposed 2-d convolution (torch.nn.functional.conv_transpose2d, the gradient of conv2d) of input
 * [N, C_in, H, W] or [C_in, H, W] with weight [C_in, C_out/groups, kH, kW] and optional bias [C_out].
 * Output size per dim: (H−1)·stride − 2·padding + dilation·(kH−1) + outputPadding + 1.
 */
export function convTranspose2d(input: Tensor, weight: Tensor, options?: ConvTranspose2dOptions): Tensor;
export function convTranspose2d(input: Tensor, weight: Tensor, bias?: Tensor | null, options?: ConvTranspose2dOptions): Tensor;
export function convTranspose2d(input: Tensor, weight: Tensor, biasOrOptions?: Tensor | null | ConvTranspose2dOptions, options?: ConvTranspose2dOptions): Tensor {
  const op = 'convTranspose2d';
  const [bias, opts] = biasAndOptions(op, biasOrOptions, options, CONV_TRANSPOSE2D_OPTIONS);
  const inputs = bias ? [input, weight, bias] : [input, weight];
  checkInputs(op, inputs);
  return apply1(convTranspose2dOp, inputs, {
    stride: pair(op, 'stride', opts.stride ?? 1),
    padding: pair(op, 'padding', opts.padding ?? 0),
    outputPadding: pair(op, 'outputPadding', opts.outputPadding ?? 0),
    dilation: pair(op, 'dilation', opts.dilation ?? 1),
    groups: opts.groups ?? 1,
  });
}
