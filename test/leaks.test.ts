import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { WITH_WEBGPU } from './helpers.js';

// Ops built from other ops (views, reshapes, several kernels) must free every intermediate: after
// disposing its inputs and what a call returns, the live tensors are what they were before it. Eager
// calls only; the JIT's own accounting is in jit-guards.

type Out = Tensor | readonly Tensor[] | { [k: string]: unknown };

function release(out: unknown): void {
  if (out instanceof sn.Tensor) out.dispose();
  else if (Array.isArray(out)) out.forEach(release);
  else if (out && typeof out === 'object') Object.values(out).forEach(release);
}

describe.each(WITH_WEBGPU)('composite ops free their intermediates on %s', (device) => {
  // Inputs are recorded, so the check counts only what the op itself leaves behind.
  const made: Tensor[] = [];
  const input = (t: Tensor): Tensor => (made.push(t), t);
  const r = (shape: number[], seed = 1) => input(sn.randn(shape, { device, seed }));
  const ints = (values: number[] | number[][]) => input(sn.tensor(values, { dtype: 'int32', device }));
  const cases: [string, () => Out | Promise<Out>][] = [
    ['conv1d (batched)', () => sn.conv1d(r([2, 4, 9]), r([6, 2, 3]), r([6]), { groups: 2, padding: 1 })],
    ['conv1d (unbatched)', () => sn.conv1d(r([4, 9]), r([6, 4, 3]))],
    ['maxPool1d', () => sn.maxPool1d(r([2, 3, 9]), 3, { stride: 2 })],
    ['avgPool1d', () => sn.avgPool1d(r([3, 9]), 2)],
    ['conv3d', () => sn.conv3d(r([1, 2, 4, 4, 4]), r([3, 2, 2, 2, 2]), r([3]))],
    ['normalize', () => sn.normalize(r([4, 5]), { dim: 1 })],
    ['cosineSimilarity', () => sn.cosineSimilarity(r([4, 5]), r([4, 5], 2))],
    ['rmsNorm', () => sn.rmsNorm(r([4, 6]), 6, r([6]))],
    ['groupNorm', () => sn.groupNorm(r([2, 4, 3, 3]), 2, r([4]), r([4]))],
    ['instanceNorm', () => sn.instanceNorm(r([2, 3, 4, 4]))],
    ['layerNorm', () => sn.layerNorm(r([3, 8]), [8])],
    ['interpolate (bilinear)', () => sn.interpolate(r([1, 2, 5, 5]), { size: [7, 9], mode: 'bilinear' })],
    ['einsum', () => sn.einsum('bij,bjk->bik', r([2, 3, 4]), r([2, 4, 5], 2))],
    ['scaledDotProductAttention', () => sn.scaledDotProductAttention(r([1, 2, 5, 8]), r([1, 2, 5, 8], 2), r([1, 2, 5, 8], 3), { isCausal: true })],
    ['std', () => sn.std(r([4, 7]), 1)],
    ['logsumexp', () => sn.logsumexp(r([4, 7]), 1)],
    ['cumprod', () => sn.cumprod(r([4, 7]), 1)],
    ['roll', () => sn.roll(r([4, 7]), [1, -2], [0, 1])],
    ['pixelShuffle', () => sn.pixelShuffle(r([1, 8, 3, 3]), 2)],
    ['topk', () => sn.topk(r([4, 9]), 3)],
    ['kthvalue', () => sn.kthvalue(r([4, 9]), 2)],
    ['embeddingBag', () => sn.embeddingBag(ints([[0, 2], [1, 3]]), r([5, 4]))],
    ['oneHot', () => sn.oneHot(ints([0, 3, 1]), 4)],
    ['maskedSelect', () => sn.maskedSelect(r([3, 4]), input(sn.gt(r([3, 4], 2), 0)))],
  ];

  it.each(cases)('%s', async (_, call) => {
    const before = sn.memory().tensors;
    const out = await call();
    release(out);
    made.splice(0).forEach((t) => t.dispose());
    expect(sn.memory().tensors, 'live tensors after disposing the inputs and the result').toBe(before);
  });
});
