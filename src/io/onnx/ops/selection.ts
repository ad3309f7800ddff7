import { eq, where } from '../../../ops/binary.js';
import { tril, triu } from '../../../ops/masking.js';
import { gru, lstm, rnn, type RnnWeights } from '../../../ops/rnn.js';
import { topk } from '../../../ops/sort.js';
import { narrow, permute, reshape, squeeze, unsqueeze } from '../../../ops/views.js';
import { indexSelect } from '../../../ops/movement.js';
import { arange } from '../../../tensor/creation.js';
import { numel } from '../../../tensor/shape.js';
import type { Tensor } from '../../../tensor/tensor.js';
import { checkHostShape, hostOf } from '../host.js';
import type { OnnxNode } from '../node.js';
import { type OpContext, type Val, register, typeOf } from '../registry.js';
import { HostTensor } from '../tensor.js';
import { hostInts, normAxis } from './util.js';

// TopK, Trilu, OneHot, NonZero, Unique and the recurrent layers (LSTM, GRU, RNN), on the core ops (src/ops/sort.ts,
// masking.ts, rnn.ts). NonZero and Unique have data-dependent shapes: their input is read on the host (so a model
// using them on computed values runs eagerly; see OnnxModel.report) and their results are computed there.

register({
  TopK: {
    run: (node, [x, k], ctx) => {
      const t = ctx.dev(x!, 'X');
      const axis = normAxis(node, node.int('axis', -1), t.ndim);
      const count = node.opset < 10 ? (node.int('k') ?? node.fail("needs the attribute 'k'")) : ctx.host(k!, 'K').scalar('K');
      const r = topk(t, count, { dim: axis, largest: node.int('largest', 1) === 1 });
      return [r.values, r.indices];
    },
    hostInputs: [1],
    minOpset: 1,
  },
  Trilu: {
    run: (node, [x, k], ctx) => {
      const t = ctx.dev(x!, 'input');
      const diagonal = k === undefined ? 0 : ctx.host(k, 'k').scalar('k');
      return [node.int('upper', 1) === 1 ? triu(t, diagonal) : tril(t, diagonal)];
    },
    hostInputs: [1],
    minOpset: 14,
  },
  OneHot: {
    // Indices in [-depth, depth) count from the end when negative; others give a row of off values (ONNX's rule).
    run: (node, [indices, depth, values], ctx) => {
      const idx = ctx.dev(indices!, 'indices');
      const d = ctx.host(depth!, 'depth').scalar('depth');
      if (!Number.isInteger(d) || d < 1) node.fail(`depth must be a positive integer, got ${d}`);
      const [off, on] = Array.from(ctx.host(values!, 'values').data);
      const rank = idx.ndim + 1, axis = normAxis(node, node.int('axis', -1), rank);
      const wrapped = where(idx.lt(0), idx.add(d), idx);
      const classes = arange(d, { dtype: wrapped.dtype === 'float32' || wrapped.dtype === 'float16' ? wrapped.dtype : 'int32', device: ctx.device });
      const hot = eq(unsqueeze(wrapped, -1), classes);
      const dtype = typeOf(values!);
      const out = where(hot, ctx.dev(new HostTensor(dtype, [], [on!]), 'on value'), ctx.dev(new HostTensor(dtype, [], [off!]), 'off value'));
      const perm = Array.from({ length: rank }, (_, i) => i).filter((i) => i !== rank - 1);
      perm.splice(axis, 0, rank - 1);
      return [axis === rank - 1 ? out : permute(out, perm)];
    },
    hostInputs: [1, 2],
    minOpset: 9,
  },
  NonZero: {
    run: (node, [x], ctx) => [nonZero(ctx.host(x!, 'X'))],
    host: (_, [x]) => [nonZero(x!)],
    hostInputs: [0],
    minOpset: 9,
  },
  NonMaxSuppression: {
    run: (node, ins, ctx) => [nonMaxSuppression(node, ins.map((v, i) => v && ctx.host(v, ['boxes', 'scores', 'max_output_boxes_per_class', 'iou_threshold', 'score_threshold'][i]!)))],
    hostInputs: [0, 1, 2, 3, 4],
    minOpset: 10,
  },
  Compress: {
    // The slices along `axis` (of the flattened input without one) whose condition is true.
    run: (node, [x, c], ctx) => {
      let t = ctx.dev(x!, 'input');
      const cond = Array.from(ctx.host(c!, 'condition').data);
      const axisAttr = node.int('axis');
      if (axisAttr === undefined) t = reshape(t, [-1]);
      const axis = axisAttr === undefined ? 0 : normAxis(node, axisAttr, t.ndim);
      if (cond.length > t.shape[axis]!) node.fail(`condition has ${cond.length} entries, more than the ${t.shape[axis]} of axis ${axis}`);
      const picked = cond.flatMap((v, i) => (v !== 0 ? [i] : []));
      return [indexSelect(t, axis, ctx.dev(new HostTensor('int32', [picked.length], picked), 'selected indices'))];
    },
    hostInputs: [1],
    minOpset: 9,
  },
  Det: {
    // LU with partial pivoting on the host (the input is read there): one determinant per trailing M×M matrix.
    run: (node, [x], ctx) => [determinants(node, ctx.host(x!, 'X'))],
    host: (node, [x]) => [determinants(node, x!)],
    hostInputs: [0],
    minOpset: 11,
  },
  Unique: {
    run: (node, [x], ctx) => unique(node, ctx.host(x!, 'X')),
    host: (node, [x]) => unique(node, x!),
    hostInputs: [0],
    minOpset: 11,
  },
});

/**
 * Greedy non-maximum suppression per batch and class: boxes by descending score (above score_threshold), each kept
 * unless its IoU with a kept box exceeds iou_threshold, at most max_output_boxes_per_class; [kept, 3] rows of
 * (batch, class, box).
 */
function nonMaxSuppression(node: OnnxNode, [boxes, scores, maxOut, iouT, scoreT]: readonly (HostTensor | undefined)[]): HostTensor {
  const [batches, spatial] = boxes!.shape as [number, number];
  const classes = scores!.shape[1]!;
  if (boxes!.shape.length !== 3 || boxes!.shape[2] !== 4 || scores!.shape.length !== 3 || scores!.shape[0] !== batches || scores!.shape[2] !== spatial) {
    node.fail(`boxes ${boxes!.describe()} must be [batches, boxes, 4] and scores ${scores!.describe()} [batches, classes, boxes]`);
  }
  const limit = maxOut?.data.length ? maxOut.scalar('max_output_boxes_per_class') : 0;
  const iou = iouT?.data.length ? iouT.scalar('iou_threshold') : 0;
  const minScore = scoreT?.data.length ? scoreT.scalar('score_threshold') : -Infinity;
  const center = node.int('center_point_box', 0) === 1;
  const corners = (b: number, i: number): [number, number, number, number] => {
    const d = boxes!.data, o = (b * spatial + i) * 4;
    if (center) {
      const [xc, yc, w, h] = [d[o]!, d[o + 1]!, d[o + 2]!, d[o + 3]!];
      return [yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2];
    }
    return [Math.min(d[o]!, d[o + 2]!), Math.min(d[o + 1]!, d[o + 3]!), Math.max(d[o]!, d[o + 2]!), Math.max(d[o + 1]!, d[o + 3]!)];
  };
  const overlap = (a: number[], b: number[]) => {
    const h = Math.max(0, Math.min(a[2]!, b[2]!) - Math.max(a[0]!, b[0]!)), w = Math.max(0, Math.min(a[3]!, b[3]!) - Math.max(a[1]!, b[1]!));
    const inter = h * w, union = (a[2]! - a[0]!) * (a[3]! - a[1]!) + (b[2]! - b[0]!) * (b[3]! - b[1]!) - inter;
    return union > 0 ? inter / union : 0;
  };
  const out: number[] = [];
  for (let b = 0; b < batches; b++) {
    for (let c = 0; c < classes; c++) {
      const score = (i: number) => scores!.data[(b * classes + c) * spatial + i]!;
      const order = Array.from({ length: spatial }, (_, i) => i).filter((i) => score(i) > minScore).sort((i, j) => score(j) - score(i) || i - j);
      const kept: number[][] = [];
      for (const i of order) {
        if (kept.length >= limit) break;
        const box = corners(b, i);
        if (kept.some((k) => overlap(k, box) > iou)) continue;
        kept.push(box);
        out.push(b, c, i);
      }
    }
  }
  return new HostTensor('int64', [out.length / 3, 3], out);
}

function determinants(node: OnnxNode, x: HostTensor): HostTensor {
  const r = x.shape.length, m = x.shape[r - 1]!;
  if (r < 2 || x.shape[r - 2] !== m) node.fail(`X ${x.describe()} must be [..., M, M]`);
  const batch = x.shape.slice(0, -2), count = numel(batch), out = new Array<number>(count);
  for (let b = 0; b < count; b++) {
    const a = Array.from({ length: m * m }, (_, i) => x.data[b * m * m + i]!);
    let det = 1;
    for (let k = 0; k < m && det !== 0; k++) {
      let p = k;
      for (let i = k + 1; i < m; i++) if (Math.abs(a[i * m + k]!) > Math.abs(a[p * m + k]!)) p = i;
      if (a[p * m + k] === 0) det = 0;
      else {
        if (p !== k) {
          for (let j = 0; j < m; j++) [a[k * m + j], a[p * m + j]] = [a[p * m + j]!, a[k * m + j]!];
          det = -det;
        }
        det *= a[k * m + k]!;
        for (let i = k + 1; i < m; i++) {
          const f = a[i * m + k]! / a[k * m + k]!;
          for (let j = k; j < m; j++) a[i * m + j]! -= f * a[k * m + j]!;
        }
      }
    }
    out[b] = det;
  }
  return hostOf(x.dtype, batch, out);
}

/** The indices of the non-zero elements, one column per element: int64 [rank, count]. */
function nonZero(x: HostTensor): HostTensor {
  const rank = x.shape.length, found: number[] = [];
  for (let i = 0; i < x.data.length; i++) if (x.data[i] !== 0) found.push(i);
  checkHostShape('NonZero', [rank, found.length]);
  const out = new Array<number>(rank * found.length);
  found.forEach((flat, j) => {
    for (let d = rank - 1; d >= 0; d--) {
      out[d * found.length + j] = flat % x.shape[d]!;
      flat = Math.floor(flat / x.shape[d]!);
    }
  });
  return new HostTensor('int64', [rank, found.length], out);
}

/**
 * Unique values (or slices along `axis`), sorted (default) or in order of first appearance, with the index of each
 * one's first occurrence, the inverse indices and the counts, as ONNX defines them.
 */
function unique(node: OnnxNode, x: HostTensor): HostTensor[] {
  const sorted = node.int('sorted', 1) === 1;
  const axisAttr = node.int('axis');
  const shape = axisAttr === undefined ? [x.data.length] : x.shape;
  const axis = axisAttr === undefined ? 0 : normAxis(node, axisAttr, shape.length);
  const n = shape[axis]!, inner = numel(shape.slice(axis + 1)), outer = numel(shape.slice(0, axis));
  const slice = (i: number) => {
    const v: number[] = [];
    for (let o = 0; o < outer; o++) for (let j = 0; j < inner; j++) v.push(x.data[(o * n + i) * inner + j]!);
    return v;
  };
  const firsts = new Map<string, number>(), keys: string[] = [], slices: number[][] = [];
  for (let i = 0; i < n; i++) {
    const s = slice(i), key = s.join(',');
    keys.push(key);
    slices.push(s);
    if (!firsts.has(key)) firsts.set(key, i);
  }
  let order = [...firsts.values()];
  if (sorted) {
    order = order.sort((a, b) => {
      const p = slices[a]!, q = slices[b]!;
      for (let j = 0; j < p.length; j++) if (p[j] !== q[j]) return p[j]! - q[j]!;
      return 0;
    });
  }
  const position = new Map(order.map((i, k) => [keys[i]!, k]));
  const counts = new Array<number>(order.length).fill(0);
  const inverse = keys.map((key) => {
    const k = position.get(key)!;
    counts[k]!++;
    return k;
  });
  const outShape = [...shape];
  outShape[axis] = order.length;
  const y = new Array<number>(numel(outShape));
  for (let o = 0; o < outer; o++) {
    order.forEach((i, k) => {
      for (let j = 0; j < inner; j++) y[(o * order.length + k) * inner + j] = x.data[(o * n + i) * inner + j]!;
    });
  }
  return [new HostTensor(x.dtype, outShape, y), new HostTensor('int64', [order.length], order), new HostTensor('int64', [n], inverse), new HostTensor('int64', [order.length], counts)];
}

// ---- LSTM, GRU, RNN -------------------------------------------------------------------------------

const DEFAULT_ACTIVATIONS: Record<string, string[]> = { LSTM: ['Sigmoid', 'Tanh', 'Tanh'], GRU: ['Sigmoid', 'Tanh'], RNN: ['Tanh'] };

/** Why the node's attributes ask for something the core layers do not do (other activations, peepholes…). */
function checkRecurrent(node: OnnxNode): string | undefined {
  const acts = node.strings('activations');
  const defaults = DEFAULT_ACTIVATIONS[node.opType]!;
  const dirs = node.string('direction', 'forward') === 'bidirectional' ? 2 : 1;
  const ok = (a: string, i: number) => a.toLowerCase() === defaults[i % defaults.length]!.toLowerCase() || (node.opType === 'RNN' && a === 'Relu');
  if (acts && (acts.length !== defaults.length * dirs || !acts.every(ok))) return `activations [${acts.join(', ')}] are not supported (only the defaults ${defaults.join(', ')}${node.opType === 'RNN' ? ', or Relu' : ''})`;
  if (node.has('activation_alpha') || node.has('activation_beta')) return 'activation_alpha/activation_beta are not supported';
  if (node.int('input_forget', 0) !== 0) return 'input_forget=1 is not supported';
  if (node.opType === 'LSTM' && node.inputs[7]) return 'peephole weights (input P) are not supported';
  const direction = node.string('direction', 'forward');
  if (!['forward', 'reverse', 'bidirectional'].includes(direction)) return `direction '${direction}' is not forward, reverse or bidirectional`;
  return undefined;
}

function recurrent(node: OnnxNode, ins: readonly (Val | undefined)[], ctx: OpContext): (Tensor | undefined)[] {
  const gates = { LSTM: 4, GRU: 3, RNN: 1 }[node.opType]!;
  const [x, w, r, b, lens, h0, c0] = ins;
  const layout = node.int('layout', 0);
  const X = ctx.dev(x!, 'X'), W = ctx.dev(w!, 'W'), R = ctx.dev(r!, 'R'), B = b && ctx.dev(b, 'B');
  const direction = node.string('direction', 'forward'), D = direction === 'bidirectional' ? 2 : 1;
  const H = node.int('hidden_size') ?? R.shape[2] ?? node.fail("needs the attribute 'hidden_size'");
  if (W.ndim !== 3 || W.shape[0] !== D || W.shape[1] !== gates * H) node.fail(`W ${W.describe()} must be [${D}, ${gates * H}, input_size]`);
  const dir = (t: Tensor, d: number) => squeeze(narrow(t, 0, d, 1), 0);
  const weights: RnnWeights[] = Array.from({ length: D }, (_, d) => ({
    wIh: dir(W, d), wHh: dir(R, d),
    bIh: B ? narrow(dir(B, d), 0, 0, gates * H) : null, bHh: B ? narrow(dir(B, d), 0, gates * H, gates * H) : null,
  }));
  // layout 1 keeps the batch first in X, Y, Y_h and Y_c; the core layers take states [D, batch, H].
  const state = (v: Val | undefined, what: string) => v && (layout === 1 ? permute(ctx.dev(v, what), [1, 0, 2]) : ctx.dev(v, what));
  const opts = {
    batchFirst: layout === 1, reverse: direction === 'reverse', h0: state(h0, 'initial_h'), clip: node.float('clip') ?? null,
    sequenceLens: lens ? hostInts(ctx, lens, 'sequence_lens') : null,
  };
  const acts = node.strings('activations');
  const res = node.opType === 'LSTM' ? lstm(X, weights, { ...opts, c0: state(c0, 'initial_c'), gateOrder: 'iofc' })
    : node.opType === 'GRU' ? gru(X, weights, { ...opts, gateOrder: 'zrh', linearBeforeReset: node.int('linear_before_reset', 0) === 1 })
    : rnn(X, weights, { ...opts, nonlinearity: acts?.[0] === 'Relu' ? 'relu' : 'tanh' });
  // The core layers give [seq, batch, D·H] (batch first: [batch, seq, D·H]); ONNX's Y is [seq, D, batch, H] ([batch, seq, D, H]).
  const [n0, n1] = res.output.shape as [number, number];
  const split = reshape(res.output, [n0, n1, D, H]);
  const y = layout === 1 ? split : permute(split, [0, 2, 1, 3]);
  const final = (t: Tensor) => (layout === 1 ? permute(t, [1, 0, 2]) : t);
  return [y, final(res.h), 'c' in res ? final(res.c as Tensor) : undefined];
}

register({
  LSTM: { run: recurrent, check: checkRecurrent, hostInputs: [4], minOpset: 1 },
  GRU: { run: recurrent, check: checkRecurrent, hostInputs: [4], minOpset: 1 },
  RNN: { run: recurrent, check: checkRecurrent, hostInputs: [4], minOpset: 1 },
});
