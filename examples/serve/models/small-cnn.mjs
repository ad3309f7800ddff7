// The small CNN of the benchmarks (bench/models/small-cnn.mjs: seeded weights, eval mode) as a serving module:
// `load(sn, { device })` returns its jitted forward, the batch function a DynamicBatcher or a WorkerPool replica
// runs. Every process builds identical weights.
import { smallCnn } from '../../../bench/models/small-cnn.mjs';

export { INPUT_SHAPE, smallCnn } from '../../../bench/models/small-cnn.mjs';

export default async function load(sn, { device }) {
  const model = smallCnn(sn, device);
  return sn.jit((x) => model.forward(x));
}
