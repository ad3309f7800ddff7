import { reshape } from '../../../ops/views.js';
import { hostReshape } from '../host.js';
import type { OnnxNode } from '../node.js';
import { OPS, type OpEntry, type Val } from '../registry.js';
import { HostTensor } from '../tensor.js';

// Opsets 1–6 (old PyTorch and Caffe2 exports). The ops listed here have the semantics of their current handler
// since the opset given: later versions only added attributes whose defaults give the old behaviour, widened the
// types, or (opset 1) dropped `consumed_inputs`, a hint of the old in-place memory model that changes no value.
// Versions whose semantics differ are handled where the op is (Reshape-1's shape attribute, Slice-1's starts/ends
// attributes, Clip-6's min/max, Pad-2, Split-2, Cast-1's type names, Concat-1's default axis, softmax's 2-D
// coercion) or below (the broadcast/axis attributes of binary ops before opset 7).

const SINCE: Record<string, number> = {
  Abs: 1, Neg: 1, Exp: 1, Log: 1, Sqrt: 1, Reciprocal: 1, Sigmoid: 1, Tanh: 1, Floor: 1, Ceil: 1, Relu: 1, Elu: 1, LeakyRelu: 1, Selu: 1,
  HardSigmoid: 1, Softplus: 1, Softsign: 1, PRelu: 1, Add: 1, Sub: 1, Mul: 1, Div: 1, Pow: 1, Equal: 1, Less: 1, Greater: 1, And: 1, Or: 1, Xor: 1,
  Max: 1, Min: 1, Sum: 1, Mean: 1, Clip: 1, Cast: 1, Identity: 1, Dropout: 1, MatMul: 1, Gemm: 1, Conv: 1, ConvTranspose: 1, MaxPool: 1,
  AveragePool: 1, GlobalAveragePool: 1, GlobalMaxPool: 1, BatchNormalization: 1, InstanceNormalization: 1, Softmax: 1, LogSoftmax: 1,
  Hardmax: 1, Flatten: 1, Reshape: 1, Squeeze: 1, Unsqueeze: 1, Transpose: 1, Concat: 1, Split: 2, Slice: 1, Gather: 1, Pad: 2,
  Tile: 6, DepthToSpace: 1, SpaceToDepth: 1, ArgMax: 1, ArgMin: 1, LRN: 1, Shape: 1, Size: 1, Constant: 1,
};

for (const [op, since] of Object.entries(SINCE)) {
  const entry = OPS.get(op);
  if (entry) entry.minOpset = Math.min(entry.minOpset ?? since, since);
}

/**
 * Before opset 7 a binary op broadcast only with `broadcast=1`: B (input 1) then matches A's dims from `axis` on
 * (by default its trailing dims). Reshaping B to A's rank with trailing 1s turns that into NumPy broadcasting.
 */
function legacyOperand(node: OnnxNode, a: Val, b: Val): Val {
  if (node.int('broadcast', 0) !== 1) {
    if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
      node.fail(`inputs ${a.describe()} and ${b.describe()} differ in shape, and before opset 7 that needs broadcast=1`);
    }
    return b;
  }
  const axis = node.int('axis');
  if (axis === undefined) return b;
  const rank = a.shape.length, at = axis < 0 ? axis + rank : axis;
  if (at < 0 || at + b.shape.length > rank) node.fail(`axis ${axis} does not place B [${b.shape.join(', ')}] within A [${a.shape.join(', ')}]`);
  const shape = [...b.shape, ...new Array<number>(rank - at - b.shape.length).fill(1)];
  return b instanceof HostTensor ? hostReshape(b, shape) : reshape(b, shape);
}

for (const op of ['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Equal', 'Less', 'Greater', 'And', 'Or', 'Xor']) {
  const entry = OPS.get(op)!;
  const { run, host } = entry;
  const legacy: Partial<OpEntry> = {
    run: (node, ins, ctx) => run(node, node.opset < 7 ? [ins[0], legacyOperand(node, ins[0]!, ins[1]!)] : ins, ctx),
    host: host && ((node, ins) => host(node, node.opset < 7 ? [ins[0], legacyOperand(node, ins[0]!, ins[1]!) as HostTensor] : ins)),
  };
  Object.assign(entry, legacy);
}
