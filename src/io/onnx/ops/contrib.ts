import { add, lt, mul, sub, where } from '../../../ops/binary.js';
import { scaledDotProductAttention } from '../../../ops/attention.js';
import { rmsNorm } from '../../../ops/functional.js';
import { matmul } from '../../../ops/linalg.js';
import { cat, embedding } from '../../../ops/movement.js';
import { layerNorm } from '../../../ops/norm.js';
import { mean, sum } from '../../../ops/reduce.js';
import { clamp, gelu, leakyRelu, relu, rsqrt, sigmoid, tanh } from '../../../ops/unary.js';
import { narrow, permute, reshape, unsqueeze } from '../../../ops/views.js';
import { arange, full } from '../../../tensor/creation.js';
import type { Tensor } from '../../../tensor/tensor.js';
import type { OnnxNode } from '../node.js';
import { OPS, type OpContext, type OpEntry, type Val, register } from '../registry.js';

// The com.microsoft ops of transformer exports (onnxruntime's optimiser, transformers.js models), as onnxruntime's
// ContribOperators.md defines them, composed from sinter's ops: attention runs on scaledDotProductAttention with an
// additive bias built from the masks. SimplifiedLayerNormalization is also registered in the default domain, where
// onnxruntime registers it.

const MS = 'com.microsoft.';

/** The additive value onnxruntime's attention puts at masked positions (mask_filter_value, default −10000). */
function maskValue(node: OnnxNode): number {
  return node.float('mask_filter_value', -10000);
}

/** [B, S, N·H] → [B, N, S, H]. */
function heads(x: Tensor, n: number, node: OnnxNode, what: string): Tensor {
  const [b, s, hidden] = x.shape as [number, number, number];
  if (x.ndim !== 3 || hidden % n !== 0) node.fail(`${what} ${x.describe()} must be [batch, sequence, hidden] with hidden divisible by num_heads ${n}`);
  return permute(reshape(x, [b, s, n, hidden / n]), [0, 2, 1, 3]);
}

/** [B, N, S, H] → [B, S, N·H]. */
function merge(x: Tensor): Tensor {
  const [b, n, s, h] = x.shape as [number, number, number, number];
  return reshape(permute(x, [0, 2, 1, 3]), [b, s, n * h]);
}

/** An additive bias [.., S, L] that masks key j for query i when j > i + offset (a causal mask over a cache of `offset` keys). */
function causalBias(ctx: OpContext, s: number, l: number, offset: number, value: number): Tensor {
  const rows = arange(s, { device: ctx.device }).reshape([s, 1]), cols = arange(l, { device: ctx.device }).reshape([1, l]);
  return where(cols.gt(rows.add(offset)), value, 0).to('float32');
}

function addBias(a: Tensor | undefined, b: Tensor | undefined): Tensor | undefined {
  return a && b ? add(a, b) : (a ?? b);
}

/** softmax(q·kᵀ·scale + bias)·v with k and v repeated over groups of query heads when there are fewer of them. */
function attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | undefined, scale: number | undefined): Tensor {
  const n = q.shape[1]!, kvn = k.shape[1]!;
  if (kvn !== n) {
    const [b, , l] = k.shape as [number, number, number];
    const rep = (t: Tensor) => reshape(unsqueeze(t, 2).expand([b, kvn, n / kvn, l, t.shape[3]!]), [b, n, l, t.shape[3]!]);
    k = rep(k);
    v = rep(v);
  }
  return scaledDotProductAttention(q, k, v, { attnMask: bias ? bias.to(q.dtype) : null, scale: scale ?? null });
}

// ---- attention ------------------------------------------------------------------------------------

/**
 * A key padding mask as an additive bias [B, 1, 1, L]: 2-D [B, L] raw masks (1 keeps, 0 masks), 1-D [B] end
 * positions (keys from the end position on are masked) as `Attention`'s mask_index allows.
 */
function paddingBias(node: OnnxNode, ctx: OpContext, mask: Val, b: number, l: number): Tensor {
  const m = ctx.dev(mask, 'mask');
  const value = maskValue(node);
  if (m.ndim === 2) {
    if (m.shape[0] !== b || m.shape[1] !== l) node.fail(`the mask ${m.describe()} must be [${b}, ${l}]`);
    return reshape(where(m.eq(0), value, 0).to('float32'), [b, 1, 1, l]);
  }
  if (m.ndim === 1 && m.shape[0] === b) {
    const cols = arange(l, { device: ctx.device }).reshape([1, l]);
    return reshape(where(cols.ge(reshape(m, [b, 1])), value, 0).to('float32'), [b, 1, 1, l]);
  }
  if (m.ndim === 4 || m.ndim === 3) return m.ndim === 3 ? unsqueeze(where(m.eq(0), value, 0).to('float32'), 1) : where(m.eq(0), value, 0).to('float32');
  return node.fail(`mask ${m.describe()} is not a supported mask_index form ([batch], [batch, total_sequence] or [batch, sequence, total_sequence])`);
}

/** com.microsoft.Attention: packed QKV projection of `input`, optional past state, padding and causal masks. */
function msAttention(node: OnnxNode, ins: readonly (Val | undefined)[], ctx: OpContext): (Tensor | undefined)[] {
  const [input, weights, bias, maskIndex, past, attentionBias, pastSeqLen] = ins;
  if (pastSeqLen) node.fail('past_sequence_length (a shared past buffer) is not supported');
  const x = ctx.dev(input!, 'input'), w = ctx.dev(weights!, 'weights');
  const n = node.int('num_heads') ?? node.fail("needs the attribute 'num_heads'");
  const sizes = node.ints('qkv_hidden_sizes');
  const hidden = w.shape[1]! / 3;
  const [qs, ks, vs] = sizes ?? [hidden, hidden, hidden];
  const projected = bias ? add(matmul(x, w), ctx.dev(bias, 'bias')) : matmul(x, w);
  const q = heads(narrow(projected, 2, 0, qs!), n, node, 'Q');
  let k = heads(narrow(projected, 2, qs!, ks!), n, node, 'K');
  let v = heads(narrow(projected, 2, qs! + ks!, vs!), n, node, 'V');
  const [b, , s] = q.shape as [number, number, number];
  const pastLen = past ? past.shape[3]! : 0;
  if (past) {
    const p = ctx.dev(past, 'past');
    k = cat([narrow(p, 0, 0, 1).squeeze(0), k], 2);
    v = cat([narrow(p, 0, 1, 1).squeeze(0), v], 2);
  }
  const l = k.shape[2]!;
  let mask = maskIndex ? paddingBias(node, ctx, maskIndex, b, l) : undefined;
  if (node.int('unidirectional', 0) === 1) mask = addBias(mask, causalBias(ctx, s, l, pastLen, maskValue(node)));
  if (attentionBias) mask = addBias(mask, ctx.dev(attentionBias, 'attention_bias'));
  const y = merge(attend(q, k, v, mask, node.float('scale')));
  return [y, node.outputs[1] ? cat([unsqueeze(k, 0), unsqueeze(v, 0)], 0) : undefined];
}

/** com.microsoft.MultiHeadAttention with separate 3-D query, key and value (and optional bias, masks and past). */
function multiHeadAttention(node: OnnxNode, ins: readonly (Val | undefined)[], ctx: OpContext): (Tensor | undefined)[] {
  const [query, key, value, bias, keyPadding, attentionBias, pastKey, pastValue] = ins;
  const n = node.int('num_heads') ?? node.fail("needs the attribute 'num_heads'");
  let q3 = ctx.dev(query!, 'query');
  if (!key || !value || q3.ndim !== 3) node.fail('only separate 3-D query with key and value is supported (not packed QKV or KV)');
  let k3 = ctx.dev(key, 'key'), v3 = ctx.dev(value, 'value');
  // 4-D key and value [B, N, L, H] are a cross-attention cache, used as they are (the bias then applies to the query).
  const cached = k3.ndim === 4 && v3.ndim === 4;
  if (!cached && (k3.ndim !== 3 || v3.ndim !== 3)) node.fail(`key ${k3.describe()} and value ${v3.describe()} must both be 3-D [batch, kv_sequence, hidden] or 4-D [batch, heads, kv_sequence, head_size]`);
  if (bias) {
    const bb = ctx.dev(bias, 'bias'), d = q3.shape[2]!;
    q3 = add(q3, narrow(bb, 0, 0, d));
    if (!cached) {
      const dk = k3.shape[2]!;
      k3 = add(k3, narrow(bb, 0, d, dk));
      v3 = add(v3, narrow(bb, 0, d + dk, v3.shape[2]!));
    }
  }
  const q = heads(q3, n, node, 'query');
  let k = cached ? k3 : heads(k3, n, node, 'key'), v = cached ? v3 : heads(v3, n, node, 'value');
  const pastLen = pastKey ? pastKey.shape[2]! : 0;
  if (pastKey) k = cat([ctx.dev(pastKey, 'past_key'), k], 2);
  if (pastValue) v = cat([ctx.dev(pastValue, 'past_value'), v], 2);
  const [b, , s] = q.shape as [number, number, number];
  const l = k.shape[2]!;
  let mask = keyPadding ? paddingBias(node, ctx, keyPadding, b, l) : undefined;
  if (node.int('unidirectional', 0) === 1) mask = addBias(mask, causalBias(ctx, s, l, pastLen, maskValue(node)));
  if (attentionBias) mask = addBias(mask, ctx.dev(attentionBias, 'attention_bias'));
  return [merge(attend(q, k, v, mask, node.float('scale'))), k, v];
}

// ---- rotary embeddings and grouped-query attention --------------------------------------------------

/**
 * Rotates the first `dim` features of each head of x [B, N, S, H] by the angles of the positions `pos` ([B, S] or
 * [S] ints): cos/sin caches are [maxPosition, dim/2]. Interleaved: pairs (2i, 2i+1); otherwise halves (i, i+dim/2).
 */
function rotate(x: Tensor, pos: Tensor, cosCache: Tensor, sinCache: Tensor, interleaved: boolean, dim: number): Tensor {
  const [b, n, s, h] = x.shape as [number, number, number, number];
  const half = dim / 2;
  // cos/sin [B or 1, 1, S, dim/2]
  const pick = (c: Tensor) => {
    const rows = embedding(reshape(pos, [-1]), narrow(c, 1, 0, half));
    return pos.ndim === 2 ? reshape(rows, [pos.shape[0]!, 1, s, half]) : reshape(rows, [1, 1, s, half]);
  };
  const cos = pick(cosCache), sin = pick(sinCache);
  const rot = narrow(x, 3, 0, dim), rest = h > dim ? narrow(x, 3, dim, h - dim) : undefined;
  let out: Tensor;
  if (interleaved) {
    const pairs = reshape(rot, [b, n, s, half, 2]);
    const x1 = narrow(pairs, 4, 0, 1).squeeze(4), x2 = narrow(pairs, 4, 1, 1).squeeze(4);
    const y1 = sub(mul(x1, cos), mul(x2, sin)), y2 = add(mul(x2, cos), mul(x1, sin));
    out = reshape(cat([unsqueeze(y1, 4), unsqueeze(y2, 4)], 4), [b, n, s, dim]);
  } else {
    const x1 = narrow(rot, 3, 0, half), x2 = narrow(rot, 3, half, half);
    out = cat([sub(mul(x1, cos), mul(x2, sin)), add(mul(x2, cos), mul(x1, sin))], 3);
  }
  return rest ? cat([out, rest], 3) : out;
}

/** Positions for RotaryEmbedding: position_ids [B, S], or a one-element start offset (positions offset + 0…S−1). */
function positions(ctx: OpContext, ids: Val, s: number): Tensor {
  const p = ctx.dev(ids, 'position_ids');
  if (p.numel() === 1 && !(p.ndim === 2 && s === 1)) return add(arange(s, { device: ctx.device }), reshape(p, [1]).to('int32'));
  return p;
}

function rotaryEmbedding(node: OnnxNode, [input, ids, cosCache, sinCache]: readonly (Val | undefined)[], ctx: OpContext): Tensor[] {
  const x = ctx.dev(input!, 'input');
  const cos = ctx.dev(cosCache!, 'cos_cache'), sin = ctx.dev(sinCache!, 'sin_cache');
  const interleaved = node.int('interleaved', 0) === 1;
  const is3d = x.ndim === 3;
  let n = node.int('num_heads', 0);
  if (is3d && n === 0) n = x.shape[2]! / (2 * cos.shape[1]!);
  const x4 = is3d ? heads(x, n, node, 'input') : x;
  const dim = node.int('rotary_embedding_dim', 0) || 2 * cos.shape[1]!;
  const y = rotate(x4, positions(ctx, ids!, x4.shape[2]!), cos, sin, interleaved, dim);
  return [is3d ? merge(y) : y];
}

/**
 * com.microsoft.GroupQueryAttention with the KV cache passed in and out: query [B, S, N·H], key and value
 * [B, S, kvN·H], past_key/past_value [B, kvN, P, H] (the first total_sequence_length − S positions are the cache),
 * seqlens_k [B] (each batch's valid total length − 1); present = past ⧺ new. Causal, optionally rotary.
 */
function groupQueryAttention(node: OnnxNode, ins: readonly (Val | undefined)[], ctx: OpContext): Tensor[] {
  const [query, key, value, pastKey, pastValue, seqlensK, totalLen, cosCache, sinCache] = ins;
  const n = node.int('num_heads') ?? node.fail("needs the attribute 'num_heads'");
  const kvn = node.int('kv_num_heads') ?? node.fail("needs the attribute 'kv_num_heads'");
  if (node.int('local_window_size', -1) !== -1) node.fail('local_window_size (sliding-window attention) is not supported');
  let q3 = ctx.dev(query!, 'query'), k3: Tensor, v3: Tensor;
  if (key && value) [k3, v3] = [ctx.dev(key, 'key'), ctx.dev(value, 'value')];
  else {
    // Packed QKV: query is [B, S, (N + 2·kvN)·H].
    const h = q3.shape[2]! / (n + 2 * kvn);
    if (!Number.isInteger(h)) node.fail(`packed query ${q3.describe()} must hold (num_heads + 2·kv_num_heads)·head_size features`);
    [q3, k3, v3] = [narrow(q3, 2, 0, n * h), narrow(q3, 2, n * h, kvn * h), narrow(q3, 2, (n + kvn) * h, kvn * h)];
  }
  let q = heads(q3, n, node, 'query');
  let k = heads(k3, kvn, node, 'key');
  const v = heads(v3, kvn, node, 'value');
  const [b, , s] = q.shape as [number, number, number];
  const total = ctx.host(totalLen!, 'total_sequence_length').scalar('total_sequence_length');
  const pastLen = total - s;
  if (pastLen < 0 || (pastLen > 0 && (!pastKey || pastKey.shape[2]! < pastLen))) node.fail(`total_sequence_length ${total} needs ${pastLen} past positions, but past_key is ${pastKey ? `[${pastKey.shape.join(', ')}]` : 'absent'}`);
  if (node.int('do_rotary', 0) === 1) {
    const pos = add(arange(s, { device: ctx.device }), pastLen);
    const cos = ctx.dev(cosCache!, 'cos_cache'), sin = ctx.dev(sinCache!, 'sin_cache');
    const interleaved = node.int('rotary_interleaved', 0) === 1, dim = 2 * cos.shape[1]!;
    q = rotate(q, pos, cos, sin, interleaved, dim);
    k = rotate(k, pos, cos, sin, interleaved, dim);
  }
  const past = (p: Val | undefined, what: string) => (pastLen > 0 ? narrow(ctx.dev(p!, what), 2, 0, pastLen) : undefined);
  const pk = past(pastKey, 'past_key'), pv = past(pastValue, 'past_value');
  const presentK = pk ? cat([pk, k], 2) : k, presentV = pv ? cat([pv, v], 2) : v;
  // Causal over the cache, and keys past each batch's valid length masked.
  let mask = causalBias(ctx, s, total, pastLen, -Infinity);
  if (seqlensK) {
    const valid = add(reshape(ctx.dev(seqlensK, 'seqlens_k'), [b, 1, 1, 1]), 1);
    const cols = arange(total, { device: ctx.device }).reshape([1, 1, 1, total]);
    mask = add(mask, where(lt(cols, valid), 0, -Infinity).to('float32'));
  }
  if (node.float('softcap', 0) !== 0) node.fail('softcap is not supported');
  const y = merge(attend(q, presentK, presentV, mask, node.float('scale')));
  return [y, presentK, presentV];
}

// ---- normalisation and activations ------------------------------------------------------------------

/** input + skip (+ bias), then a layer norm (or RMS norm) over the last dim; outputs as onnxruntime lists them. */
function skipNorm(simplified: boolean): OpEntry['run'] {
  return (node, ins, ctx) => {
    const [input, skip, gamma] = ins;
    const beta = simplified ? undefined : ins[3];
    const bias = simplified ? ins[3] : ins[4];
    const eps = node.float('epsilon', 1e-12);
    let sumT = add(ctx.dev(input!, 'input'), ctx.dev(skip!, 'skip'));
    if (bias) sumT = add(sumT, ctx.dev(bias, 'bias'));
    const d = sumT.shape[sumT.ndim - 1]!;
    const g = ctx.dev(gamma!, 'gamma');
    const y = simplified ? rmsNorm(sumT, [d], g, eps) : layerNorm(sumT, [d], g, beta ? ctx.dev(beta, 'beta') : null, eps);
    const wants = (i: number) => node.outputs.length > i && node.outputs[i] !== '';
    const m = wants(1) && !simplified ? mean(sumT, -1, true) : undefined;
    const centred = simplified ? sumT : sub(sumT, mean(sumT, -1, true));
    const inv = wants(2) ? rsqrt(add(mean(mul(centred, centred), -1, true), eps)) : undefined;
    return [y, m, inv, wants(3) ? sumT : undefined];
  };
}

function simplifiedLayerNorm(node: OnnxNode, [x, scale]: readonly (Val | undefined)[], ctx: OpContext): (Tensor | undefined)[] {
  const t = ctx.dev(x!, 'X');
  const axis = node.int('axis', -1);
  const from = axis < 0 ? axis + t.ndim : axis;
  const dims = t.shape.slice(from);
  const eps = node.float('epsilon', 1e-5);
  const y = rmsNorm(t, dims, ctx.dev(scale!, 'scale'), eps);
  const axes = dims.map((_, i) => from + i);
  const inv = node.outputs[1] ? rsqrt(add(mean(mul(t, t), axes, true), eps)) : undefined;
  return [y, inv];
}

function embedLayerNorm(node: OnnxNode, ins: readonly (Val | undefined)[], ctx: OpContext): (Tensor | undefined)[] {
  const [ids, segments, word, position, segment, gamma, beta, mask, positionIds] = ins;
  const i = ctx.dev(ids!, 'input_ids');
  const [b, s] = i.shape as [number, number];
  let x = embedding(i, ctx.dev(word!, 'word_embedding'));
  const pos = positionIds ? ctx.dev(positionIds, 'position_ids') : arange(s, { device: ctx.device }).reshape([1, s]);
  x = add(x, embedding(pos, ctx.dev(position!, 'position_embedding')));
  if (segments && segment) x = add(x, embedding(ctx.dev(segments, 'segment_ids'), ctx.dev(segment, 'segment_embedding')));
  const d = x.shape[2]!;
  const y = layerNorm(x, [d], ctx.dev(gamma!, 'gamma'), ctx.dev(beta!, 'beta'), node.float('epsilon', 1e-12));
  // mask_index: the number of unmasked tokens per sequence (zeros without a mask).
  const maskIndex = mask ? sum(ctx.dev(mask, 'mask').to('int32'), -1) : full([b], 0, { dtype: 'int32', device: ctx.device });
  return [y, maskIndex, node.outputs[2] ? x : undefined];
}

/** FusedMatMul: alpha·op(A)·op(B), op transposing the last two dims (transA/transB) or moving the batch (transBatchA/B unsupported). */
function fusedMatMul(node: OnnxNode, [a, b]: readonly (Val | undefined)[], ctx: OpContext): Tensor[] {
  if (node.int('transBatchA', 0) !== 0 || node.int('transBatchB', 0) !== 0) node.fail('transBatchA/transBatchB are not supported');
  const last2 = (t: Tensor) => (t.ndim < 2 ? t : t.transpose(t.ndim - 2, t.ndim - 1));
  let x = ctx.dev(a!, 'A'), y = ctx.dev(b!, 'B');
  if (node.int('transA', 0) === 1) x = last2(x);
  if (node.int('transB', 0) === 1) y = last2(y);
  const alpha = node.float('alpha', 1);
  const p = matmul(x, y);
  return [alpha === 1 ? p : mul(p, alpha)];
}

/** FusedConv: Conv (+ Z) followed by its activation, as onnxruntime's CPU fuses them. */
function fusedConv(node: OnnxNode, ins: readonly (Val | undefined)[], ctx: OpContext): Tensor[] {
  const conv = OPS.get('Conv')!;
  let y = conv.run(node, ins.slice(0, 3), ctx)[0] as Tensor;
  if (ins[3]) y = add(y, ctx.dev(ins[3], 'Z'));
  const params = node.floats('activation_params') ?? [];
  switch (node.string('activation', '')) {
    case '': return [y];
    case 'Relu': return [relu(y)];
    case 'Sigmoid': return [sigmoid(y)];
    case 'Tanh': return [tanh(y)];
    case 'LeakyRelu': return [leakyRelu(y, params[0] ?? 0.01)];
    case 'Clip': return [clamp(y, params[0] ?? -Infinity, params[1] ?? Infinity)];
    case 'HardSigmoid': return [clamp(add(mul(y, params[0] ?? 0.2), params[1] ?? 0.5), 0, 1)];
    default: return node.fail(`activation '${node.string('activation', '')}' is not supported`);
  }
}

register({
  [`${MS}FusedMatMul`]: { run: fusedMatMul },
  [`${MS}FusedConv`]: {
    run: fusedConv,
    check: (node) => OPS.get('Conv')!.check?.(node) ?? (['', 'Relu', 'Sigmoid', 'Tanh', 'LeakyRelu', 'Clip', 'HardSigmoid'].includes(node.string('activation', '')) ? undefined : `activation '${node.string('activation', '')}' is not supported`),
  },
  // onnxruntime's Trilu predates ONNX's (opset 14) and has its semantics.
  [`${MS}Trilu`]: { run: (node, ins, ctx) => OPS.get('Trilu')!.run(node, ins, ctx), hostInputs: [1] },
  [`${MS}Attention`]: { run: msAttention },
  [`${MS}MultiHeadAttention`]: { run: multiHeadAttention },
  [`${MS}RotaryEmbedding`]: { run: rotaryEmbedding },
  [`${MS}GroupQueryAttention`]: { run: groupQueryAttention, hostInputs: [6] },
  [`${MS}SkipLayerNormalization`]: { run: skipNorm(false) },
  [`${MS}SkipSimplifiedLayerNormalization`]: { run: skipNorm(true) },
  [`${MS}SimplifiedLayerNormalization`]: { run: simplifiedLayerNorm },
  SimplifiedLayerNormalization: { run: simplifiedLayerNorm, minOpset: 1 },
  [`${MS}EmbedLayerNormalization`]: { run: embedLayerNorm },
  [`${MS}Gelu`]: { run: (_, [x], ctx) => [gelu(ctx.dev(x!, 'X'))] },
  [`${MS}BiasGelu`]: { run: (_, [x, b], ctx) => [gelu(add(ctx.dev(x!, 'A'), ctx.dev(b!, 'B')))] },
  [`${MS}FastGelu`]: {
    // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), after adding the optional bias.
    run: (_, [x, b], ctx) => {
      const t = b ? add(ctx.dev(x!, 'X'), ctx.dev(b, 'bias')) : ctx.dev(x!, 'X');
      return [gelu(t, { approximate: 'tanh' })];
    },
  },
  [`${MS}QuickGelu`]: { run: (node, [x], ctx) => {
    const t = ctx.dev(x!, 'X');
    return [mul(t, sigmoid(mul(t, node.float('alpha', 1.702))))];
  } },
});
