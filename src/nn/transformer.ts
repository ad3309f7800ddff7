import { SinterError, check } from '../errors.js';
import { ones, zeros } from '../tensor/creation.js';
import { tidy } from '../tensor/scope.js';
import { Tensor } from '../tensor/tensor.js';
import { add } from '../ops/binary.js';
import { scaledDotProductAttention } from '../ops/attention.js';
import { dropout } from '../ops/functional.js';
import { linear, matmul } from '../ops/linalg.js';
import { maskedFill, triu } from '../ops/masking.js';
import { mean, softmax } from '../ops/reduce.js';
import { gelu, relu } from '../ops/unary.js';
import { clone, narrow, reshape, squeeze, to, transpose, unsqueeze } from '../ops/views.js';
import { ModuleList } from './containers.js';
import { xavierUniform } from './init.js';
import { type InitOptions, LayerNorm, Linear } from './layers.js';
import { Module } from './module.js';

// Attention and transformer layers with PyTorch's parameter names and semantics, so a state dict
// saved from torch.nn.MultiheadAttention / TransformerEncoderLayer / TransformerDecoderLayer loads
// as is (e.g. from safetensors) and gives PyTorch's outputs (inference; dropout acts in training
// mode as there). Masks as in PyTorch's modules: a bool attn_mask or key_padding_mask is true where
// attention is NOT allowed; a float one is added to the scores.

/** A bool (true = blocked) or float mask as an additive float mask. */
function additive(mask: Tensor, dtype: 'float32' | 'float16'): Tensor {
  if (mask.dtype === 'bool') return tidy(() => maskedFill(zeros(mask.shape, { dtype, device: mask.device }), mask, -Infinity));
  return mask.dtype === dtype ? mask : to(mask, dtype);
}

export interface MultiheadAttentionOptions extends InitOptions {
  /** Dropout on the attention weights in training mode (default 0). */
  dropout?: number;
  /** Biases of the input and output projections (default true). */
  bias?: boolean;
  /** Size of the keys' features (default embedDim); with kdim or vdim ≠ embedDim the projections are separate weights. */
  kdim?: number;
  vdim?: number;
  /** Inputs and output are [batch, seq, feature] (default false: [seq, batch, feature]). */
  batchFirst?: boolean;
}

export interface MultiheadAttentionForwardOptions {
  /** [batch, S] (or [S] unbatched): true (or −∞) for keys to ignore, e.g. padding. */
  keyPaddingMask?: Tensor | null;
  /** Also return the attention weights (default true, as in PyTorch). */
  needWeights?: boolean;
  /** [L, S] or [batch·heads, L, S]: true (or a float added to the scores) where query i may not attend key j. */
  attnMask?: Tensor | null;
  /** Weights averaged over heads ([batch, L, S], default) or per head ([batch, heads, L, S]). */
  averageAttnWeights?: boolean;
  /** A causal mask is applied (alone, or as a hint that attnMask is causal, as in PyTorch). */
  isCausal?: boolean;
}

/** torch.nn.MultiheadAttention: parameters in_proj_weight/in_proj_bias (or q/k/v_proj_weight), out_proj. */
export class MultiheadAttention extends Module {
  declare inProjWeight: Tensor | null;
  declare qProjWeight: Tensor | null;
  declare kProjWeight: Tensor | null;
  declare vProjWeight: Tensor | null;
  declare inProjBias: Tensor | null;
  declare outProj: Linear;
  readonly headDim: number;
  readonly dropout: number;
  readonly batchFirst: boolean;
  readonly kdim: number;
  readonly vdim: number;
  constructor(readonly embedDim: number, readonly numHeads: number, opts: MultiheadAttentionOptions = {}) {
    super();
    // PyTorch options this layer does not implement: refuse them rather than ignore them.
    for (const unsupported of ['addBiasKv', 'addZeroAttn'] as const) {
      const value = (opts as Record<string, unknown>)[unsupported];
      check(value === undefined || value === false, 'MultiheadAttention', () => `${unsupported}: true is not supported`);
    }
    check(Number.isInteger(embedDim) && Number.isInteger(numHeads) && numHeads > 0 && embedDim % numHeads === 0, 'MultiheadAttention', () => `embedDim ${embedDim} must be divisible by numHeads ${numHeads}`);
    this.headDim = embedDim / numHeads;
    this.dropout = opts.dropout ?? 0;
    this.batchFirst = opts.batchFirst ?? false;
    this.kdim = opts.kdim ?? embedDim;
    this.vdim = opts.vdim ?? embedDim;
    const init = { device: opts.device, dtype: opts.dtype, generator: opts.generator, seed: opts.seed };
    const same = this.kdim === embedDim && this.vdim === embedDim;
    // Registered in PyTorch's order, so the state dict lists them as PyTorch does.
    this.registerParameter('in_proj_weight', same ? xavierUniform([3 * embedDim, embedDim], init) : null, 'inProjWeight');
    this.registerParameter('q_proj_weight', same ? null : xavierUniform([embedDim, embedDim], init), 'qProjWeight');
    this.registerParameter('k_proj_weight', same ? null : xavierUniform([embedDim, this.kdim], init), 'kProjWeight');
    this.registerParameter('v_proj_weight', same ? null : xavierUniform([embedDim, this.vdim], init), 'vProjWeight');
    const bias = opts.bias ?? true;
    this.registerParameter('in_proj_bias', bias ? zeros([3 * embedDim], init) : null, 'inProjBias');
    this.outProj = this.registerModule('out_proj', new Linear(embedDim, embedDim, { ...init, bias }), 'outProj');
    if (bias) {
      const b = this.outProj.bias!;
      this.outProj.registerParameter('bias', zeros([embedDim], init));
      b.dispose();
    }
  }

  /** Rows [i·E, (i+1)·E) of the packed projection (q, k, v for i = 0, 1, 2). */
  private projection(i: number): [Tensor, Tensor | null] {
    const E = this.embedDim;
    const w = this.inProjWeight ? narrow(this.inProjWeight, 0, i * E, E) : [this.qProjWeight, this.kProjWeight, this.vProjWeight][i]!;
    return [w!, this.inProjBias ? narrow(this.inProjBias, 0, i * E, E) : null];
  }

  /**
   * Attention of `query` [L, N, E] over `key` [S, N, kdim] and `value` [S, N, vdim] (batch first
   * when constructed so; or unbatched [L, E]). Returns [output, weights]: weights are null unless
   * needWeights (the default).
   */
  forward(query: Tensor, key: Tensor, value: Tensor, opts: MultiheadAttentionForwardOptions = {}): [Tensor, Tensor | null] {
    const op = 'MultiheadAttention';
    const batched = query.ndim === 3;
    check(query.ndim === 2 || query.ndim === 3, op, () => `expects query [L, N, E] (or batch first, or unbatched [L, E]), got ${query.describe()}`);
    check(key.ndim === query.ndim && value.ndim === query.ndim, op, () => `query, key and value must have the same rank, got ${query.describe()}, ${key.describe()}, ${value.describe()}`);
    const needWeights = opts.needWeights ?? true;
    return tidy(() => {
      // To [N, L, E].
      const asBatch = (t: Tensor) => (!batched ? unsqueeze(t, 0) : this.batchFirst ? t : transpose(t, 0, 1));
      const [q0, k0, v0] = [asBatch(query), asBatch(key), asBatch(value)];
      const [N, L, E] = q0.shape as [number, number, number], S = k0.shape[1]!, H = this.numHeads, hd = this.headDim;
      check(E === this.embedDim && k0.shape[2] === this.kdim && v0.shape[2] === this.vdim && v0.shape[1] === S && k0.shape[0] === N && v0.shape[0] === N, op, () =>
        `expects query features ${this.embedDim}, key ${this.kdim}, value ${this.vdim}, and matching batch and key lengths; got ${query.describe()}, ${key.describe()}, ${value.describe()}`);
      const heads = (t: Tensor, n: number) => transpose(reshape(t, [N, n, H, hd]), 1, 2); // [N, H, n, hd]
      const [wq, bq] = this.projection(0), [wk, bk] = this.projection(1), [wv, bv] = this.projection(2);
      const q = heads(linear(q0, wq, bq), L), k = heads(linear(k0, wk, bk), S), v = heads(linear(v0, wv, bv), S);
      const mask = this.mask(opts, N, L, S, q.dtype === 'float16' ? 'float16' : 'float32', batched);
      let out: Tensor, weights: Tensor | null = null;
      if (needWeights) {
        const scores = matmul(q.mul(1 / Math.sqrt(hd)), transpose(k, -2, -1));
        let w = softmax(mask ? add(scores, mask) : scores, -1);
        weights = w;
        if (this.training && this.dropout > 0) w = dropout(w, { p: this.dropout });
        out = matmul(w, v);
      } else {
        out = scaledDotProductAttention(q, k, v, { attnMask: mask, dropoutP: this.training ? this.dropout : 0 });
      }
      const merged = reshape(transpose(out, 1, 2), [N, L, E]);
      const projected = this.outProj.forward(merged);
      const result = !batched ? squeeze(projected, 0) : this.batchFirst ? projected : transpose(projected, 0, 1);
      if (weights && (opts.averageAttnWeights ?? true)) weights = mean(weights, 1);
      if (weights && !batched) weights = squeeze(weights, 0);
      return [result, weights] as [Tensor, Tensor | null];
    });
  }

  /** attnMask, keyPaddingMask and isCausal as one additive mask broadcasting to [N, H, L, S], or null. */
  private mask(o: MultiheadAttentionForwardOptions, N: number, L: number, S: number, dtype: 'float32' | 'float16', batched: boolean): Tensor | null {
    const op = 'MultiheadAttention';
    let m: Tensor | null = null;
    if (o.attnMask) {
      const a = o.attnMask;
      if (a.ndim === 2) check(a.shape[0] === L && a.shape[1] === S, op, () => `attnMask must be [L, S] = [${L}, ${S}] or [N·heads, L, S], got ${a.describe()}`);
      else check(a.ndim === 3 && a.shape[0] === N * this.numHeads && a.shape[1] === L && a.shape[2] === S, op, () => `attnMask must be [L, S] or [N·heads, L, S] = [${N * this.numHeads}, ${L}, ${S}], got ${a.describe()}`);
      m = additive(a.ndim === 3 ? reshape(a, [N, this.numHeads, L, S]) : a, dtype);
    } else if (o.isCausal) {
      m = additive(triu(ones([L, S], { dtype: 'bool', device: this.outProj.weight.device }), 1), dtype);
    }
    if (o.keyPaddingMask) {
      const k = batched ? o.keyPaddingMask : unsqueeze(o.keyPaddingMask, 0);
      check(k.ndim === 2 && k.shape[0] === N && k.shape[1] === S, op, () => `keyPaddingMask must be [N, S] = [${N}, ${S}], got ${o.keyPaddingMask!.describe()}`);
      const km = reshape(additive(k, dtype), [N, 1, 1, S]);
      m = m ? add(m, km) : km;
    }
    return m;
  }
}

export type Activation = 'relu' | 'gelu' | ((x: Tensor) => Tensor);

function activate(a: Activation, x: Tensor): Tensor {
  return a === 'relu' ? relu(x) : a === 'gelu' ? gelu(x) : a(x);
}

export interface TransformerLayerOptions extends InitOptions {
  /** Width of the feed-forward block (default 2048). */
  dimFeedforward?: number;
  /** Dropout probability in training mode (default 0.1). */
  dropout?: number;
  /** 'relu' (default), 'gelu' or a function. */
  activation?: Activation;
  layerNormEps?: number;
  batchFirst?: boolean;
  /** Pre-norm: LayerNorm before attention and feed-forward instead of after (default false). */
  normFirst?: boolean;
  bias?: boolean;
}

/** The dropout of a transformer layer: the identity in eval mode. */
function drop(m: Module, p: number, x: Tensor): Tensor {
  return m.training && p > 0 ? dropout(x, { p }) : x;
}

export interface EncoderLayerForwardOptions {
  srcMask?: Tensor | null;
  srcKeyPaddingMask?: Tensor | null;
  /** Apply a causal mask (when srcMask is not given). */
  isCausal?: boolean;
}

/** torch.nn.TransformerEncoderLayer: self_attn, linear1, linear2, norm1, norm2. */
export class TransformerEncoderLayer extends Module {
  // Declared in PyTorch's registration order: fields are registered in the order they are defined.
  selfAttn: MultiheadAttention;
  linear1: Linear;
  linear2: Linear;
  norm1: LayerNorm;
  norm2: LayerNorm;
  readonly options: Required<Pick<TransformerLayerOptions, 'dimFeedforward' | 'dropout' | 'activation' | 'layerNormEps' | 'batchFirst' | 'normFirst' | 'bias'>>;
  constructor(readonly dModel: number, readonly nhead: number, opts: TransformerLayerOptions = {}) {
    super();
    const o = layerOptions(opts);
    this.options = o;
    const init = { device: opts.device, dtype: opts.dtype, generator: opts.generator, seed: opts.seed };
    this.selfAttn = this.registerModule('self_attn', new MultiheadAttention(dModel, nhead, { ...init, dropout: o.dropout, bias: o.bias, batchFirst: o.batchFirst }), 'selfAttn');
    this.linear1 = new Linear(dModel, o.dimFeedforward, { ...init, bias: o.bias });
    this.linear2 = new Linear(o.dimFeedforward, dModel, { ...init, bias: o.bias });
    this.norm1 = new LayerNorm(dModel, { ...init, eps: o.layerNormEps, bias: o.bias });
    this.norm2 = new LayerNorm(dModel, { ...init, eps: o.layerNormEps, bias: o.bias });
  }
  forward(src: Tensor, opts: EncoderLayerForwardOptions = {}): Tensor {
    const p = this.options.dropout;
    return tidy(() => {
      const sa = (x: Tensor) => drop(this, p, this.selfAttn.forward(x, x, x, { attnMask: opts.srcMask, keyPaddingMask: opts.srcKeyPaddingMask, needWeights: false, isCausal: opts.isCausal && !opts.srcMask })[0]);
      const ff = (x: Tensor) => drop(this, p, this.linear2.forward(drop(this, p, activate(this.options.activation, this.linear1.forward(x)))));
      let x = src;
      if (this.options.normFirst) {
        x = add(x, sa(this.norm1.forward(x)));
        return add(x, ff(this.norm2.forward(x)));
      }
      x = this.norm1.forward(add(x, sa(x)));
      return this.norm2.forward(add(x, ff(x)));
    });
  }
  /** A new layer with the same settings and copies of the weights (what PyTorch's deepcopy gives TransformerEncoder). */
  copy(): TransformerEncoderLayer {
    return copyInto(this, new TransformerEncoderLayer(this.dModel, this.nhead, { ...this.options, device: this.linear1.weight.device, dtype: this.linear1.weight.dtype }));
  }
}

export interface DecoderLayerForwardOptions {
  tgtMask?: Tensor | null;
  memoryMask?: Tensor | null;
  tgtKeyPaddingMask?: Tensor | null;
  memoryKeyPaddingMask?: Tensor | null;
  tgtIsCausal?: boolean;
  memoryIsCausal?: boolean;
}

/** torch.nn.TransformerDecoderLayer: self_attn, multihead_attn, linear1, linear2, norm1–3. */
export class TransformerDecoderLayer extends Module {
  selfAttn: MultiheadAttention;
  multiheadAttn: MultiheadAttention;
  linear1: Linear;
  linear2: Linear;
  norm1: LayerNorm;
  norm2: LayerNorm;
  norm3: LayerNorm;
  readonly options: TransformerEncoderLayer['options'];
  constructor(readonly dModel: number, readonly nhead: number, opts: TransformerLayerOptions = {}) {
    super();
    const o = layerOptions(opts);
    this.options = o;
    const init = { device: opts.device, dtype: opts.dtype, generator: opts.generator, seed: opts.seed };
    const mha = () => new MultiheadAttention(dModel, nhead, { ...init, dropout: o.dropout, bias: o.bias, batchFirst: o.batchFirst });
    this.selfAttn = this.registerModule('self_attn', mha(), 'selfAttn');
    this.multiheadAttn = this.registerModule('multihead_attn', mha(), 'multiheadAttn');
    this.linear1 = new Linear(dModel, o.dimFeedforward, { ...init, bias: o.bias });
    this.linear2 = new Linear(o.dimFeedforward, dModel, { ...init, bias: o.bias });
    this.norm1 = new LayerNorm(dModel, { ...init, eps: o.layerNormEps, bias: o.bias });
    this.norm2 = new LayerNorm(dModel, { ...init, eps: o.layerNormEps, bias: o.bias });
    this.norm3 = new LayerNorm(dModel, { ...init, eps: o.layerNormEps, bias: o.bias });
  }
  forward(tgt: Tensor, memory: Tensor, opts: DecoderLayerForwardOptions = {}): Tensor {
    const p = this.options.dropout;
    return tidy(() => {
      const sa = (x: Tensor) => drop(this, p, this.selfAttn.forward(x, x, x, { attnMask: opts.tgtMask, keyPaddingMask: opts.tgtKeyPaddingMask, needWeights: false, isCausal: opts.tgtIsCausal && !opts.tgtMask })[0]);
      const ca = (x: Tensor) => drop(this, p, this.multiheadAttn.forward(x, memory, memory, { attnMask: opts.memoryMask, keyPaddingMask: opts.memoryKeyPaddingMask, needWeights: false, isCausal: opts.memoryIsCausal && !opts.memoryMask })[0]);
      const ff = (x: Tensor) => drop(this, p, this.linear2.forward(drop(this, p, activate(this.options.activation, this.linear1.forward(x)))));
      let x = tgt;
      if (this.options.normFirst) {
        x = add(x, sa(this.norm1.forward(x)));
        x = add(x, ca(this.norm2.forward(x)));
        return add(x, ff(this.norm3.forward(x)));
      }
      x = this.norm1.forward(add(x, sa(x)));
      x = this.norm2.forward(add(x, ca(x)));
      return this.norm3.forward(add(x, ff(x)));
    });
  }
  copy(): TransformerDecoderLayer {
    return copyInto(this, new TransformerDecoderLayer(this.dModel, this.nhead, { ...this.options, device: this.linear1.weight.device, dtype: this.linear1.weight.dtype }));
  }
}

function layerOptions(opts: TransformerLayerOptions): TransformerEncoderLayer['options'] {
  const o = {
    dimFeedforward: opts.dimFeedforward ?? 2048,
    dropout: opts.dropout ?? 0.1,
    activation: opts.activation ?? 'relu',
    layerNormEps: opts.layerNormEps ?? 1e-5,
    batchFirst: opts.batchFirst ?? false,
    normFirst: opts.normFirst ?? false,
    bias: opts.bias ?? true,
  };
  if (!(o.dropout >= 0 && o.dropout <= 1)) throw new SinterError('Transformer', `dropout must be in [0, 1], got ${o.dropout}`);
  if (typeof o.activation !== 'function' && o.activation !== 'relu' && o.activation !== 'gelu') throw new SinterError('Transformer', `activation must be 'relu', 'gelu' or a function, got ${JSON.stringify(o.activation)}`);
  return o;
}

/** `target` with copies of `source`'s state (same training mode). */
function copyInto<M extends Module>(source: M, target: M): M {
  const state = Object.fromEntries(Object.entries(source.stateDict()).map(([k, t]) => [k, clone(t)]));
  target.loadStateDict(state);
  return target.train(source.training);
}

/** torch.nn.TransformerEncoder: `numLayers` copies of `encoderLayer` (as layers.0, layers.1, …) and an optional final norm. */
export class TransformerEncoder extends Module {
  layers: ModuleList;
  norm: Module | null;
  constructor(encoderLayer: TransformerEncoderLayer, readonly numLayers: number, opts: { norm?: Module | null } = {}) {
    super();
    check(Number.isInteger(numLayers) && numLayers >= 1, 'TransformerEncoder', () => `numLayers must be a positive integer, got ${numLayers}`);
    this.layers = new ModuleList(Array.from({ length: numLayers }, () => encoderLayer.copy()));
    this.norm = opts.norm ?? null;
  }
  forward(src: Tensor, opts: { mask?: Tensor | null; srcKeyPaddingMask?: Tensor | null; isCausal?: boolean } = {}): Tensor {
    return tidy(() => {
      let x = src;
      for (const layer of this.layers) x = (layer as TransformerEncoderLayer).forward(x, { srcMask: opts.mask, srcKeyPaddingMask: opts.srcKeyPaddingMask, isCausal: opts.isCausal });
      return this.norm ? (this.norm.forward as (x: Tensor) => Tensor)(x) : x;
    });
  }
}

/** torch.nn.TransformerDecoder: `numLayers` copies of `decoderLayer` and an optional final norm. */
export class TransformerDecoder extends Module {
  layers: ModuleList;
  norm: Module | null;
  constructor(decoderLayer: TransformerDecoderLayer, readonly numLayers: number, opts: { norm?: Module | null } = {}) {
    super();
    check(Number.isInteger(numLayers) && numLayers >= 1, 'TransformerDecoder', () => `numLayers must be a positive integer, got ${numLayers}`);
    this.layers = new ModuleList(Array.from({ length: numLayers }, () => decoderLayer.copy()));
    this.norm = opts.norm ?? null;
  }
  forward(tgt: Tensor, memory: Tensor, opts: DecoderLayerForwardOptions = {}): Tensor {
    return tidy(() => {
      let x = tgt;
      for (const layer of this.layers) x = (layer as TransformerDecoderLayer).forward(x, memory, opts);
      return this.norm ? (this.norm.forward as (x: Tensor) => Tensor)(x) : x;
    });
  }
}
