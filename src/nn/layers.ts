import { SinterError } from '../errors.js';
import { type RandomOptions, arange, ones, rand, randn, zeros } from '../tensor/creation.js';
import { Tensor } from '../tensor/tensor.js';
import { div, eq, lt, mul, where } from '../ops/binary.js';
import { gelu, hardSwish, relu, sigmoid, silu } from '../ops/unary.js';
import { linear } from '../ops/linalg.js';
import { type Conv2dOptions, type ConvTranspose2dOptions, conv2d, convTranspose2d } from '../ops/conv.js';
import { type AvgPool2dOptions, type IntPair, type MaxPool2dOptions, adaptiveAvgPool2d, avgPool2d, maxPool2d } from '../ops/pool.js';
import { batchNorm, groupNorm, layerNorm } from '../ops/norm.js';
import { embedding } from '../ops/movement.js';
import { flatten } from '../ops/views.js';
import { tidy } from '../tensor/scope.js';
import { type AvgPool1dOptions, type Conv1dOptions, type MaxPool1dOptions, avgPool1d, conv1d, embeddingBag, maxPool1d, rmsNorm } from '../ops/functional.js';
import { type InterpolateOptions, interpolate } from '../ops/interpolate.js';
import { pixelShuffle, pixelUnshuffle } from '../ops/rearrange.js';
import { Module } from './module.js';
import { uniform } from './init.js';
import { pyBool, pyFloat, pyTuple } from './repr.js';

/** Options every layer with weights takes: where they live and how they are drawn. */
export interface InitOptions extends Pick<RandomOptions, 'device' | 'dtype' | 'generator' | 'seed'> {}

function pairOf(v: IntPair): [number, number] {
  return typeof v === 'number' ? [v, v] : [v[0]!, v[1] ?? v[0]!];
}

/** y = x·Wᵀ + b. */
export class Linear extends Module {
  declare weight: Tensor;
  declare bias: Tensor | null;
  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: InitOptions & { bias?: boolean } = {}) {
    super();
    const bound = 1 / Math.sqrt(inFeatures);
    this.registerParameter('weight', uniform([outFeatures, inFeatures], bound, opts));
    this.registerParameter('bias', opts.bias === false ? null : uniform([outFeatures], bound, opts));
  }
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
  override extraRepr(): string {
    return `in_features=${this.inFeatures}, out_features=${this.outFeatures}, bias=${pyBool(this.bias !== null)}`;
  }
}

export interface Conv2dLayerOptions extends InitOptions, Conv2dOptions {
  bias?: boolean;
}

export class Conv2d extends Module {
  declare weight: Tensor;
  declare bias: Tensor | null;
  readonly options: Conv2dOptions;
  constructor(readonly inChannels: number, readonly outChannels: number, kernelSize: IntPair, opts: Conv2dLayerOptions = {}) {
    super();
    const groups = opts.groups ?? 1;
    if (!Number.isInteger(groups) || groups < 1 || inChannels % groups || outChannels % groups) {
      throw new SinterError('Conv2d', `inChannels ${inChannels} and outChannels ${outChannels} must both be divisible by groups ${groups}`);
    }
    const [kh, kw] = pairOf(kernelSize);
    const bound = 1 / Math.sqrt((inChannels / groups) * kh * kw);
    this.registerParameter('weight', uniform([outChannels, inChannels / groups, kh, kw], bound, opts));
    this.registerParameter('bias', opts.bias === false ? null : uniform([outChannels], bound, opts));
    this.options = { stride: opts.stride, padding: opts.padding, dilation: opts.dilation, groups };
  }
  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, this.bias, this.options);
  }
  override extraRepr(): string {
    return convRepr(this.inChannels, this.outChannels, this.weight.shape.slice(2), this.options, this.bias !== null);
  }
}

export interface ConvTranspose2dLayerOptions extends InitOptions, ConvTranspose2dOptions {
  bias?: boolean;
}

export class ConvTranspose2d extends Module {
  declare weight: Tensor;
  declare bias: Tensor | null;
  readonly options: ConvTranspose2dOptions;
  constructor(readonly inChannels: number, readonly outChannels: number, kernelSize: IntPair, opts: ConvTranspose2dLayerOptions = {}) {
    super();
    const groups = opts.groups ?? 1;
    if (!Number.isInteger(groups) || groups < 1 || inChannels % groups || outChannels % groups) {
      throw new SinterError('ConvTranspose2d', `inChannels ${inChannels} and outChannels ${outChannels} must both be divisible by groups ${groups}`);
    }
    const [kh, kw] = pairOf(kernelSize);
    // PyTorch computes fan-in from weight.size(1) = outChannels/groups for transposed convs.
    const bound = 1 / Math.sqrt((outChannels / groups) * kh * kw);
    this.registerParameter('weight', uniform([inChannels, outChannels / groups, kh, kw], bound, opts));
    this.registerParameter('bias', opts.bias === false ? null : uniform([outChannels], bound, opts));
    this.options = { stride: opts.stride, padding: opts.padding, outputPadding: opts.outputPadding, dilation: opts.dilation, groups };
  }
  forward(x: Tensor): Tensor {
    return convTranspose2d(x, this.weight, this.bias, this.options);
  }
  override extraRepr(): string {
    return convRepr(this.inChannels, this.outChannels, this.weight.shape.slice(2), this.options, this.bias !== null);
  }
}

/** Batch norm over channel dim 1, inference form: running statistics (call `eval()` first). */
export class BatchNorm2d extends Module {
  declare weight: Tensor | null;
  declare bias: Tensor | null;
  declare runningMean: Tensor;
  declare runningVar: Tensor;
  readonly eps: number;
  /** Kept for the repr and state compatibility: training-mode statistics are not supported. */
  readonly momentum: number;
  constructor(readonly numFeatures: number, opts: Omit<InitOptions, 'generator'> & { eps?: number; momentum?: number; affine?: boolean } = {}) {
    super();
    this.eps = opts.eps ?? 1e-5;
    this.momentum = opts.momentum ?? 0.1;
    const affine = opts.affine ?? true;
    this.registerParameter('weight', affine ? ones([numFeatures], opts) : null);
    this.registerParameter('bias', affine ? zeros([numFeatures], opts) : null);
    this.registerBuffer('running_mean', zeros([numFeatures], opts), 'runningMean');
    this.registerBuffer('running_var', ones([numFeatures], opts), 'runningVar');
    this.registerBuffer('num_batches_tracked', zeros([], { dtype: 'int32', device: opts.device }), 'numBatchesTracked');
  }
  forward(x: Tensor): Tensor {
    if (this.training) {
      throw new SinterError('BatchNorm2d', 'training-mode batch norm (batch statistics and running-stat updates) is not supported: call .eval() on the model for inference');
    }
    if (x.ndim !== 4) throw new SinterError('BatchNorm2d', `expected a 4-D input [N, C, H, W], got ${x.describe()}`);
    return batchNorm(x, this.runningMean, this.runningVar, this.weight, this.bias, { eps: this.eps });
  }
  override extraRepr(): string {
    return `${this.numFeatures}, eps=${pyFloat(this.eps)}, momentum=${pyFloat(this.momentum)}, affine=${pyBool(this.weight !== null)}, track_running_stats=True`;
  }
}

export class LayerNorm extends Module {
  declare weight: Tensor | null;
  declare bias: Tensor | null;
  readonly normalizedShape: number[];
  readonly eps: number;
  constructor(normalizedShape: number | readonly number[], opts: Omit<InitOptions, 'generator'> & { eps?: number; elementwiseAffine?: boolean; bias?: boolean } = {}) {
    super();
    this.normalizedShape = typeof normalizedShape === 'number' ? [normalizedShape] : [...normalizedShape];
    this.eps = opts.eps ?? 1e-5;
    const affine = opts.elementwiseAffine ?? true;
    this.registerParameter('weight', affine ? ones(this.normalizedShape, opts) : null);
    this.registerParameter('bias', affine && opts.bias !== false ? zeros(this.normalizedShape, opts) : null);
  }
  forward(x: Tensor): Tensor {
    return layerNorm(x, this.normalizedShape, this.weight, this.bias, { eps: this.eps });
  }
  override extraRepr(): string {
    return `${pyTuple(this.normalizedShape)}, eps=${pyFloat(this.eps)}, elementwise_affine=${pyBool(this.weight !== null)}`;
  }
}

export class GroupNorm extends Module {
  declare weight: Tensor | null;
  declare bias: Tensor | null;
  readonly eps: number;
  constructor(readonly numGroups: number, readonly numChannels: number, opts: Omit<InitOptions, 'generator'> & { eps?: number; affine?: boolean } = {}) {
    super();
    if (!Number.isInteger(numGroups) || numGroups < 1 || numChannels % numGroups) {
      throw new SinterError('GroupNorm', `numChannels ${numChannels} must be divisible by numGroups ${numGroups}`);
    }
    this.eps = opts.eps ?? 1e-5;
    const affine = opts.affine ?? true;
    this.registerParameter('weight', affine ? ones([numChannels], opts) : null);
    this.registerParameter('bias', affine ? zeros([numChannels], opts) : null);
  }
  forward(x: Tensor): Tensor {
    return groupNorm(x, this.numGroups, this.weight, this.bias, { eps: this.eps });
  }
  override extraRepr(): string {
    return `${this.numGroups}, ${this.numChannels}, eps=${pyFloat(this.eps)}, affine=${pyBool(this.weight !== null)}`;
  }
}

/** A lookup table: rows of `weight` [numEmbeddings, embeddingDim] picked by integer indices. */
export class Embedding extends Module {
  declare weight: Tensor;
  readonly paddingIdx: number | null;
  constructor(readonly numEmbeddings: number, readonly embeddingDim: number, opts: InitOptions & { paddingIdx?: number | null } = {}) {
    super();
    const p = opts.paddingIdx ?? null;
    if (p !== null && (!Number.isInteger(p) || p < -numEmbeddings || p >= numEmbeddings)) {
      throw new SinterError('Embedding', `paddingIdx ${p} must be an integer in [${-numEmbeddings}, ${numEmbeddings - 1}]`);
    }
    this.paddingIdx = p === null ? null : p < 0 ? p + numEmbeddings : p;
    // N(0, 1) as in PyTorch, with the padding row zeroed.
    const w = tidy(() => {
      const normal = randn([numEmbeddings, embeddingDim], opts);
      if (this.paddingIdx === null) return normal;
      return where(eq(arange(numEmbeddings, { device: opts.device }).reshape(numEmbeddings, 1), this.paddingIdx), 0, normal);
    });
    this.registerParameter('weight', w);
  }
  forward(indices: Tensor): Tensor {
    return embedding(indices, this.weight, { paddingIdx: this.paddingIdx });
  }
  override extraRepr(): string {
    return `${this.numEmbeddings}, ${this.embeddingDim}${this.paddingIdx === null ? '' : `, padding_idx=${this.paddingIdx}`}`;
  }
}

// ---- parameter-free layers ---------------------------------------------------------------

export class ReLU extends Module {
  forward(x: Tensor): Tensor {
    return relu(x);
  }
}
export class GELU extends Module {
  constructor(readonly approximate: 'none' | 'tanh' = 'none') {
    super();
  }
  forward(x: Tensor): Tensor {
    return gelu(x, { approximate: this.approximate });
  }
  override extraRepr(): string {
    return `approximate='${this.approximate}'`;
  }
}
export class SiLU extends Module {
  forward(x: Tensor): Tensor {
    return silu(x);
  }
}
export class Hardswish extends Module {
  forward(x: Tensor): Tensor {
    return hardSwish(x);
  }
}
export class Sigmoid extends Module {
  forward(x: Tensor): Tensor {
    return sigmoid(x);
  }
}

/** Zeroes each element with probability p and scales the rest by 1/(1−p) in training; the identity in eval. */
export class Dropout extends Module {
  constructor(readonly p = 0.5, readonly generator?: RandomOptions['generator']) {
    super();
    if (!(p >= 0 && p <= 1)) throw new SinterError('Dropout', `p must be in [0, 1], got ${p}`);
  }
  forward(x: Tensor): Tensor {
    if (!this.training || this.p === 0) return x;
    return tidy(() => div(mul(x, lt(rand(x.shape, { device: x.device, generator: this.generator }), 1 - this.p)), 1 - this.p));
  }
  override extraRepr(): string {
    return `p=${pyFloat(this.p)}, inplace=False`;
  }
}

export class MaxPool2d extends Module {
  constructor(readonly kernelSize: IntPair, readonly options: MaxPool2dOptions = {}) {
    super();
  }
  forward(x: Tensor): Tensor {
    return maxPool2d(x, this.kernelSize, this.options);
  }
  override extraRepr(): string {
    const o = this.options;
    return `kernel_size=${pyTuple(this.kernelSize)}, stride=${pyTuple(o.stride ?? this.kernelSize)}, padding=${pyTuple(o.padding ?? 0)}, dilation=${pyTuple(o.dilation ?? 1)}, ceil_mode=${pyBool(!!o.ceilMode)}`;
  }
}
export class AvgPool2d extends Module {
  constructor(readonly kernelSize: IntPair, readonly options: AvgPool2dOptions = {}) {
    super();
  }
  forward(x: Tensor): Tensor {
    return avgPool2d(x, this.kernelSize, this.options);
  }
  override extraRepr(): string {
    return `kernel_size=${pyTuple(this.kernelSize)}, stride=${pyTuple(this.options.stride ?? this.kernelSize)}, padding=${pyTuple(this.options.padding ?? 0)}`;
  }
}
export class AdaptiveAvgPool2d extends Module {
  constructor(readonly outputSize: number | readonly (number | null)[]) {
    super();
  }
  forward(x: Tensor): Tensor {
    return adaptiveAvgPool2d(x, this.outputSize);
  }
  override extraRepr(): string {
    return `output_size=${pyTuple(this.outputSize)}`;
  }
}
/** Flattens dims startDim..endDim (default 1..−1, keeping the batch dim). */
export class Flatten extends Module {
  constructor(readonly startDim = 1, readonly endDim = -1) {
    super();
  }
  forward(x: Tensor): Tensor {
    return flatten(x, this.startDim, this.endDim);
  }
  override extraRepr(): string {
    return `start_dim=${this.startDim}, end_dim=${this.endDim}`;
  }
}

/** The Conv2d/ConvTranspose2d settings as PyTorch prints them (defaults left out, as there). */
function convRepr(inC: number, outC: number, kernel: readonly number[], o: Conv2dOptions & { outputPadding?: IntPair }, bias: boolean): string {
  const parts = [`${inC}, ${outC}, kernel_size=${pyTuple(kernel)}, stride=${pyTuple(o.stride ?? 1, kernel.length)}`];
  const pad = o.padding ?? 0;
  if (typeof pad === 'string') parts.push(`padding=${pad}`);
  else if ((typeof pad === 'number' ? [pad] : pad).some((v) => v !== 0)) parts.push(`padding=${pyTuple(pad, kernel.length)}`);
  if (o.outputPadding !== undefined && (typeof o.outputPadding === 'number' ? [o.outputPadding] : o.outputPadding).some((v) => v !== 0)) parts.push(`output_padding=${pyTuple(o.outputPadding, kernel.length)}`);
  if (o.dilation !== undefined && (typeof o.dilation === 'number' ? [o.dilation] : o.dilation).some((v) => v !== 1)) parts.push(`dilation=${pyTuple(o.dilation, kernel.length)}`);
  if ((o.groups ?? 1) !== 1) parts.push(`groups=${o.groups}`);
  if (!bias) parts.push('bias=False');
  return parts.join(', ');
}

// ---- more layers of transformer and sequence work -------------------------------------------------

/** x / √(mean(x²) + eps) over the last dims, times a learned weight (torch.nn.RMSNorm); eps defaults to the dtype's machine epsilon. */
export class RMSNorm extends Module {
  declare weight: Tensor | null;
  readonly normalizedShape: number[];
  readonly eps: number | null;
  constructor(normalizedShape: number | readonly number[], opts: Omit<InitOptions, 'generator' | 'seed'> & { eps?: number | null; elementwiseAffine?: boolean } = {}) {
    super();
    this.normalizedShape = typeof normalizedShape === 'number' ? [normalizedShape] : [...normalizedShape];
    this.eps = opts.eps ?? null;
    this.registerParameter('weight', opts.elementwiseAffine ?? true ? ones(this.normalizedShape, opts) : null);
  }
  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.normalizedShape, this.weight, { eps: this.eps });
  }
  override extraRepr(): string {
    return `${pyTuple(this.normalizedShape)}, eps=${this.eps === null ? 'None' : pyFloat(this.eps)}, elementwise_affine=${pyBool(this.weight !== null)}`;
  }
}

export interface Conv1dLayerOptions extends InitOptions, Conv1dOptions {
  bias?: boolean;
}

/** 1-D convolution over [N, C, L] (or [C, L]): weight [outChannels, inChannels/groups, kernelSize], as torch.nn.Conv1d. */
export class Conv1d extends Module {
  declare weight: Tensor;
  declare bias: Tensor | null;
  readonly options: Conv1dOptions;
  constructor(readonly inChannels: number, readonly outChannels: number, kernelSize: number, opts: Conv1dLayerOptions = {}) {
    super();
    const groups = opts.groups ?? 1;
    if (!Number.isInteger(groups) || groups < 1 || inChannels % groups || outChannels % groups) {
      throw new SinterError('Conv1d', `inChannels ${inChannels} and outChannels ${outChannels} must both be divisible by groups ${groups}`);
    }
    const bound = 1 / Math.sqrt((inChannels / groups) * kernelSize);
    this.registerParameter('weight', uniform([outChannels, inChannels / groups, kernelSize], bound, opts));
    this.registerParameter('bias', opts.bias === false ? null : uniform([outChannels], bound, opts));
    this.options = { stride: opts.stride, padding: opts.padding, dilation: opts.dilation, groups };
  }
  forward(x: Tensor): Tensor {
    return conv1d(x, this.weight, this.bias, this.options);
  }
  override extraRepr(): string {
    return convRepr(this.inChannels, this.outChannels, this.weight.shape.slice(2), this.options, this.bias !== null);
  }
}

/** torch.nn.Upsample: interpolate with a fixed size or scale factor ('nearest' by default). */
export class Upsample extends Module {
  constructor(readonly options: InterpolateOptions) {
    super();
    if ((options.size === undefined) === (options.scaleFactor === undefined)) throw new SinterError('Upsample', 'give exactly one of size and scaleFactor');
  }
  forward(x: Tensor): Tensor {
    return interpolate(x, this.options);
  }
  override extraRepr(): string {
    const o = this.options;
    const size = o.size === undefined ? '' : `size=${pyTuple(o.size)}, `;
    const scale = o.scaleFactor === undefined ? '' : `scale_factor=${typeof o.scaleFactor === 'number' ? pyFloat(o.scaleFactor) : `(${o.scaleFactor.map(pyFloat).join(', ')})`}, `;
    return `${size}${scale}mode='${o.mode ?? 'nearest'}'`;
  }
}

export class PixelShuffle extends Module {
  constructor(readonly upscaleFactor: number) {
    super();
  }
  forward(x: Tensor): Tensor {
    return pixelShuffle(x, this.upscaleFactor);
  }
  override extraRepr(): string {
    return `upscale_factor=${this.upscaleFactor}`;
  }
}
export class PixelUnshuffle extends Module {
  constructor(readonly downscaleFactor: number) {
    super();
  }
  forward(x: Tensor): Tensor {
    return pixelUnshuffle(x, this.downscaleFactor);
  }
  override extraRepr(): string {
    return `downscale_factor=${this.downscaleFactor}`;
  }
}

export class MaxPool1d extends Module {
  constructor(readonly kernelSize: number, readonly options: MaxPool1dOptions = {}) {
    super();
  }
  forward(x: Tensor): Tensor {
    return maxPool1d(x, this.kernelSize, this.options);
  }
}
export class AvgPool1d extends Module {
  constructor(readonly kernelSize: number, readonly options: AvgPool1dOptions = {}) {
    super();
  }
  forward(x: Tensor): Tensor {
    return avgPool1d(x, this.kernelSize, this.options);
  }
}

/** torch.nn.EmbeddingBag: sums, means or maxima of bags of embedding rows (weight N(0, 1), as there). */
export class EmbeddingBag extends Module {
  declare weight: Tensor;
  readonly mode: 'sum' | 'mean' | 'max';
  readonly includeLastOffset: boolean;
  readonly paddingIdx: number | null;
  constructor(readonly numEmbeddings: number, readonly embeddingDim: number, opts: InitOptions & { mode?: 'sum' | 'mean' | 'max'; includeLastOffset?: boolean; paddingIdx?: number | null } = {}) {
    super();
    this.mode = opts.mode ?? 'mean';
    this.includeLastOffset = opts.includeLastOffset ?? false;
    this.paddingIdx = opts.paddingIdx ?? null;
    this.registerParameter('weight', randn([numEmbeddings, embeddingDim], opts));
  }
  forward(input: Tensor, offsets?: Tensor | null, perSampleWeights?: Tensor | null): Tensor {
    return embeddingBag(input, this.weight, { offsets, perSampleWeights, mode: this.mode, includeLastOffset: this.includeLastOffset, paddingIdx: this.paddingIdx });
  }
  override extraRepr(): string {
    return `${this.numEmbeddings}, ${this.embeddingDim}, mode='${this.mode}'${this.paddingIdx === null ? '' : `, padding_idx=${this.paddingIdx}`}`;
  }
}
