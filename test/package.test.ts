import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

// The built package, imported by name as users do (`npm test` builds first). Lists the public API.
const API = [
  // tensors, devices, memory
  'Tensor', 'isTensor', 'SinterError', 'DTYPES', 'promoteTypes', 'init', 'getDefaultDevice', 'adapterInfo', 'memory', 'tidy', 'keep',
  'tensor', 'zeros', 'ones', 'full', 'empty', 'zerosLike', 'onesLike', 'fullLike', 'arange', 'linspace', 'eye',
  'rand', 'randn', 'randint', 'randLike', 'randnLike', 'manualSeed', 'Generator', 'fromNdarray', 'toNdarray',
  // views
  'view', 'reshape', 'permute', 'transpose', 't', 'slice', 'narrow', 'expand', 'expandAs', 'broadcastTo', 'squeeze', 'unsqueeze',
  'flatten', 'contiguous', 'clone', 'to', 'toDevice',
  // elementwise
  'neg', 'abs', 'exp', 'log', 'log1p', 'expm1', 'sqrt', 'rsqrt', 'reciprocal', 'sin', 'cos', 'tanh', 'sigmoid', 'relu', 'relu6',
  'leakyRelu', 'elu', 'selu', 'gelu', 'silu', 'softplus', 'hardSigmoid', 'hardSwish', 'erf', 'floor', 'ceil', 'round', 'sign', 'clamp',
  'add', 'sub', 'mul', 'div', 'pow', 'maximum', 'minimum', 'eq', 'ne', 'lt', 'le', 'gt', 'ge', 'logicalAnd', 'logicalOr', 'logicalXor', 'logicalNot', 'where',
  // reductions
  'sum', 'mean', 'max', 'min', 'amax', 'amin', 'prod', 'argmax', 'argmin', 'var', 'std', 'softmax', 'logSoftmax', 'cumsum',
  // nn
  'matmul', 'mm', 'bmm', 'mv', 'dot', 'linear', 'conv2d', 'convTranspose2d', 'maxPool2d', 'avgPool2d', 'adaptiveAvgPool2d', 'batchNorm', 'layerNorm', 'groupNorm', 'instanceNorm',
  // data movement
  'cat', 'stack', 'split', 'chunk', 'pad', 'gather', 'indexSelect', 'embedding', 'repeat', 'flip', 'interpolate',
  // modules and files
  'nn', 'saveSafetensors', 'loadSafetensors', 'loadOnnx', 'readOnnxTensor', 'OnnxModel', 'OnnxUnsupportedError',
  // the JIT
  'jit', 'Graph', 'STRATEGIES',
];

describe('the built package', () => {
  it("exposes the whole API from 'sinter' and the test kit from 'sinter/testing'", () => {
    const script = `
      const sn = await import('sinter');
      const kit = await import('sinter/testing');
      const internals = await import('sinter/jit-internals');
      const missing = ${JSON.stringify(API)}.filter((k) => sn[k] === undefined);
      const kitMissing = ['shapeArb', 'broadcastShapesArb', 'tensorCaseArb', 'makeTensor', 'assertClose', 'TOLERANCE', 'propertyConfig'].filter((k) => kit[k] === undefined)
        .concat(['checkGroups', 'planMemory', 'validateMemoryPlan', 'foldWeights', 'composeViews'].filter((k) => internals[k] === undefined));
      const y = sn.add(sn.tensor([[1, 2]]), sn.tensor([10]));
      console.log(JSON.stringify({ missing, kitMissing, y: await y.toArray() }));`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual({ missing: [], kitMissing: [], y: [[11, 12]] });
  });
});
