import { add, div, le, lt, mul, sub, where } from '../../../ops/binary.js';
import { matmul } from '../../../ops/linalg.js';
import { cat, pad } from '../../../ops/movement.js';
import { amax, softmax } from '../../../ops/reduce.js';
import { tanh } from '../../../ops/unary.js';
import { permute, reshape, transpose, unsqueeze } from '../../../ops/views.js';
import { arange } from '../../../tensor/creation.js';
import type { Tensor } from '../../../tensor/tensor.js';
import type { OnnxNode } from '../node.js';
import { type OpContext, type Val, register } from '../registry.js';
import { onnxDType } from '../tensor.js';

// Attention (opsets 23, 24) as the ONNX reference computes it: matmuls, an additive bias built from the mask, the
// causal frontier and the key padding, a softmax, and a guard that zeroes rows with every key masked.

/** [B, S, heads·size] → [B, heads, S, size]. */
function splitHeads(x: Tensor, heads: number): Tensor {
  const [b, s, hidden] = x.shape as [number, number, number];
  return permute(reshape(x, [b, s, heads, hidden / heads]), [0, 2, 1, 3]);
}

/** [B, kvHeads, S, size] with each head repeated `times` in place (h0, h0, h1, h1, …), for grouped-query attention. */
function repeatHeads(x: Tensor, times: number): Tensor {
  if (times === 1) return x;
  const [b, h, s, d] = x.shape as [number, number, number, number];
  return reshape(unsqueeze(x, 2).expand([b, h, times, s, d]), [b, h * times, s, d]);
}

/** The additive bias (0 where a key may be attended, −∞ where not), or undefined when nothing is masked. */
function attentionBias(
  node: OnnxNode, ctx: OpContext, q: Tensor, mask: Tensor | undefined, pastLen: number | undefined, nonpad: Tensor | undefined, skv: number,
): Tensor | undefined {
  const sq = q.shape[2]!, dtype = q.dtype;
  const additive = (m: Tensor): Tensor => (m.dtype === 'bool' ? where(m, 0, -Infinity).to(dtype) : m.to(dtype));
  let bias: Tensor | undefined;
  if (mask) {
    // A mask shorter than the keys is extended as masked (−∞, or false).
    const short = skv - mask.shape[mask.ndim - 1]!;
    bias = additive(short > 0 ? pad(mask, [0, short], { value: mask.dtype === 'bool' ? 0 : -Infinity }) : mask);
  }
  const rows = arange(sq, { device: ctx.device }).reshape([sq, 1]), cols = arange(skv, { device: ctx.device }).reshape([1, skv]);
  if (node.int('is_causal', 0) === 1) {
    // Query i attends key j iff j ≤ i + offset: the keys before this block (the cache), or per batch nonpad − Sq.
    const offset: Tensor | number = pastLen === undefined && nonpad ? reshape(sub(nonpad, sq), [nonpad.shape[0]!, 1, 1, 1]) : (pastLen ?? 0);
    const causal = where(le(cols, add(rows, offset)), 0, -Infinity).to(dtype);
    bias = bias ? add(bias, causal) : causal;
  }
  if (nonpad) {
    const padding = where(lt(cols, reshape(nonpad, [nonpad.shape[0]!, 1, 1, 1])), 0, -Infinity).to(dtype);
    bias = bias ? add(bias, padding) : padding;
  }
  return bias;
}

function attention(node: OnnxNode, ins: readonly (Val | undefined)[], ctx: OpContext): (Tensor | undefined)[] {
  const names = ['Q', 'K', 'V', 'attn_mask', 'past_key', 'past_value', 'nonpad_kv_seqlen'];
  const [q0, k0, v0, maskV, pastK, pastV, nonpadV] = ins.map((v, i) => v && ctx.dev(v, names[i]!));
  const is3d = q0!.ndim === 3;
  const qHeads = node.int('q_num_heads'), kvHeads = node.int('kv_num_heads');
  if (is3d && (qHeads === undefined || kvHeads === undefined)) node.fail('3-D inputs need the attributes q_num_heads and kv_num_heads');
  const q = is3d ? splitHeads(q0!, qHeads!) : q0!;
  let k = is3d ? splitHeads(k0!, kvHeads!) : k0!;
  let v = is3d ? splitHeads(v0!, kvHeads!) : v0!;
  const presentK = pastK ? cat([pastK, k], 2) : k, presentV = pastV ? cat([pastV, v], 2) : v;
  k = presentK;
  v = presentV;
  const skv = k.shape[2]!;
  const bias = attentionBias(node, ctx, q, maskV, pastK?.shape[2], nonpadV, skv);
  const heads = q.shape[1]!, kHeads = k.shape[1]!;
  if (heads !== kHeads) {
    if (heads % kHeads !== 0) node.fail(`${heads} query heads cannot be grouped over ${kHeads} key/value heads`);
    k = repeatHeads(k, heads / kHeads);
    v = repeatHeads(v, heads / kHeads);
  }
  // Q and K are each scaled by √scale (scale defaults to 1/√head_size), as the reference does.
  const scale = node.float('scale') ?? 1 / Math.sqrt(q.shape[3]!);
  const s = Math.sqrt(scale);
  let qk = matmul(mul(q, s), transpose(mul(k, s), 2, 3));
  const softcap = node.float('softcap', 0);
  if (softcap > 0) qk = mul(tanh(div(qk, softcap)), softcap);
  const withBias = bias ? add(qk, bias) : qk;
  const precision = node.int('softmax_precision');
  const inPrecision = precision === undefined ? withBias : withBias.to(precision === 10 ? 'float16' : 'float32');
  let probs = softmax(inPrecision, -1);
  if (bias) {
    // Rows whose every key is masked attend nothing: their probabilities are 0 (not the NaN of softmax over −∞).
    const dead = amax(bias, -1, true).eq(-Infinity);
    probs = where(dead, 0, probs);
  }
  probs = probs.to(q.dtype);
  const mode = node.int('qk_matmul_output_mode', 0);
  const qkOut = mode === 3 ? probs : mode === 2 ? withBias : qk;
  let y = matmul(probs, v);
  if (is3d) {
    const [b, h, sq, d] = y.shape as [number, number, number, number];
    y = reshape(permute(y, [0, 2, 1, 3]), [b, sq, h * d]);
  }
  return [y, presentK, presentV, qkOut.to(q.dtype)];
}

register({
  Attention: {
    run: attention,
    check: (node) => {
      const p = node.int('softmax_precision');
      if (p === undefined || p === 1 || p === 10) return undefined;
      return `softmax_precision ${onnxDType(p, 'softmax_precision')} is not supported (float32 and float16 are)`;
    },
    minOpset: 23,
  },
});

