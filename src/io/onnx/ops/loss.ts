import { div, mul, ne, where } from '../../../ops/binary.js';
import { embedding, gather } from '../../../ops/movement.js';
import { logSoftmax, sum } from '../../../ops/reduce.js';
import { neg } from '../../../ops/unary.js';
import { reshape, squeeze, unsqueeze } from '../../../ops/views.js';
import type { Tensor } from '../../../tensor/tensor.js';
import type { OnnxNode } from '../node.js';
import { type OpContext, type Val, register } from '../registry.js';

// NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss as ONNX defines them: per-element losses −x[n, t[n]]·w[t[n]],
// targets equal to ignore_index contributing neither loss nor weight, and 'mean' dividing by the summed weights.

function checkReduction(node: OnnxNode): string | undefined {
  const r = node.string('reduction', 'mean');
  return ['none', 'sum', 'mean'].includes(r) ? undefined : `reduction '${r}' is not none, sum or mean`;
}

/** The loss of log-probabilities x [N, C, d…] against class targets [N, d…], with optional class weights [C]. */
function nllLoss(node: OnnxNode, ctx: OpContext, x: Tensor, targetV: Val, weightV: Val | undefined): Tensor {
  const target = ctx.dev(targetV, 'target');
  if (x.ndim < 2 || target.ndim !== x.ndim - 1) node.fail(`input ${x.describe()} must be [N, C, d…] and target ${target.describe()} [N, d…]`);
  const ignore = node.int('ignore_index');
  const valid = ignore === undefined ? undefined : ne(target, ignore);
  // Ignored targets pick class 0 (then weigh nothing), so every gather stays in range.
  const safe = valid ? where(valid, target, 0) : target;
  const picked = squeeze(gather(x, 1, unsqueeze(safe, 1)), 1);
  let w: Tensor | undefined = weightV && squeeze(embedding(safe, reshape(ctx.dev(weightV, 'weight'), [-1, 1])), -1);
  if (valid) w = w ? where(valid, w, 0) : valid.to(x.dtype);
  const loss = w ? mul(neg(picked), w) : neg(picked);
  const reduction = node.string('reduction', 'mean');
  if (reduction === 'none') return loss;
  if (reduction === 'sum') return sum(loss);
  return w ? div(sum(loss), sum(w)) : div(sum(loss), loss.numel());
}

register({
  NegativeLogLikelihoodLoss: {
    run: (node, [x, t, w], ctx) => [nllLoss(node, ctx, ctx.dev(x!, 'input'), t!, w)],
    check: checkReduction,
    minOpset: 12,
  },
  SoftmaxCrossEntropyLoss: {
    run: (node, [scores, labels, w], ctx) => {
      const logProb = logSoftmax(ctx.dev(scores!, 'scores'), 1);
      return [nllLoss(node, ctx, logProb, labels!, w), logProb];
    },
    check: checkReduction,
    minOpset: 12,
  },
});
