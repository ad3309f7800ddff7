import { add, mul, sub } from '../../ops/binary.js';
import { rsqrt } from '../../ops/unary.js';
import type { BatchNormAttrs } from '../../ops/norm.js';
import { tidy } from '../../tensor/scope.js';
import type { Tensor } from '../../tensor/tensor.js';
import { type Graph, type Node, type Use, isIdentityView } from '../graph.js';
import { addConstant, constantTensor, isConstant, replaceUses } from './util.js';

type OpNode = Extract<Node, { kind: 'op' }>;

/**
 * Folds an inference batch norm into the conv2d or linear that feeds it (PyTorch's
 * fuse_conv_bn_eval): scale = γ/√(var+ε), W' = W·scale (per output channel), b' = (b−mean)·scale+β.
 * Applies when the conv/linear output feeds only the batch norm and every weight and statistic is a
 * constant (module parameters captured by the traced function).
 */
export function foldBatchNorm(g: Graph): void {
  const users = g.users();
  for (const bn of [...g.nodes]) {
    if (bn.kind !== 'op' || bn.op.name !== 'batchNorm') continue;
    const [x, mean, variance, ...affine] = bn.inputs as [Use, Use, Use, ...Use[]];
    const producer = x.value.node;
    if (producer.kind !== 'op' || (producer.op.name !== 'conv2d' && producer.op.name !== 'linear')) continue;
    if (!isIdentityView(x) || users.get(x.value.id)?.length !== 1) continue;
    // A linear's features must be batch norm's channel dim 1: a 2-D [N, F] output.
    if (producer.op.name === 'linear' && x.value.shape.length !== 2) continue;
    const [, w, b] = producer.inputs as [Use, Use, Use | undefined];
    if (![w, b, mean, variance, ...affine].every((u) => u === undefined || isConstant(u))) continue;
    const { eps, hasWeight, hasBias } = bn.attrs as BatchNormAttrs;
    const [gamma, beta] = [hasWeight ? affine[0] : undefined, hasBias ? affine[hasWeight ? 1 : 0] : undefined];
    const [w2, b2] = tidy(() => foldWeights(constantTensor(w), b && constantTensor(b), constantTensor(mean), constantTensor(variance), gamma && constantTensor(gamma), beta && constantTensor(beta), eps));
    const folded: OpNode = {
      kind: 'op',
      id: bn.id,
      op: producer.op,
      attrs: producer.attrs,
      inputs: [producer.inputs[0]!, { value: addConstant(g, w2, producer), view: fullViewOf(w2) }, { value: addConstant(g, b2, producer), view: fullViewOf(b2) }],
      outputs: [],
    };
    const v = { ...bn.outputs[0]!, node: folded };
    folded.outputs.push(v);
    g.nodes.splice(g.nodes.indexOf(producer), 1, folded);
    replaceUses(g, bn.outputs[0]!, v);
    g.nodes.splice(g.nodes.indexOf(bn), 1);
  }
}

function fullViewOf(t: Tensor) {
  return { shape: t.shape, strides: t.strides, offset: t.offset };
}

/** The exact folding formula, in the weights' dtype. */
export function foldWeights(w: Tensor, b: Tensor | undefined, mean: Tensor, variance: Tensor, gamma: Tensor | undefined, beta: Tensor | undefined, eps: number): [Tensor, Tensor] {
  let scale = rsqrt(add(variance, eps));
  if (gamma) scale = mul(scale, gamma);
  const perChannel = [w.shape[0]!, ...w.shape.slice(1).map(() => 1)];
  const w2 = mul(w, scale.reshape(perChannel)).to(w.dtype);
  let b2 = mul(b ? sub(b, mean) : mean.neg(), scale);
  if (beta) b2 = add(b2, beta);
  return [w2, b2.to(w.dtype)];
}
