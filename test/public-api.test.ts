import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import * as internals from '../src/jit-internals.js';

// The top-level namespace is the public API and nothing else: every runtime name is listed here
// (a new public function is added to src/index.ts and to this list). Kernel-level hooks live in
// 'sinter/jit-internals'. And the packed package type-checks in a strict TypeScript project
// without skipLibCheck, with the user's own fast-check shared by 'sinter/testing'.

const PUBLIC = [
  // tensors, dtypes, devices, memory, random numbers
  'Tensor', 'isTensor', 'SinterError', 'DTYPES', 'promoteTypes', 'init', 'getDefaultDevice', 'adapterInfo', 'cpuInfo', 'synchronize', 'emptyCache', 'setCacheLimits',
  'memory', 'tidy', 'keep', 'tensor', 'zeros', 'ones', 'full', 'empty', 'zerosLike', 'onesLike', 'fullLike', 'arange', 'linspace', 'eye',
  'rand', 'randn', 'randint', 'randLike', 'randnLike', 'manualSeed', 'Generator', 'fromNdarray', 'toNdarray',
  // views and data movement
  'view', 'reshape', 'permute', 'transpose', 't', 'slice', 'narrow', 'expand', 'expandAs', 'broadcastTo', 'squeeze', 'unsqueeze',
  'flatten', 'contiguous', 'clone', 'to', 'toDevice', 'select', 'unbind', 'diagonal', 'diag', 'roll', 'pixelShuffle', 'pixelUnshuffle',
  'cat', 'stack', 'split', 'chunk', 'pad', 'gather', 'indexSelect', 'embedding', 'embeddingBag', 'repeat', 'flip', 'interpolate',
  // elementwise
  'neg', 'abs', 'exp', 'log', 'log1p', 'expm1', 'sqrt', 'rsqrt', 'reciprocal', 'sin', 'cos', 'tanh', 'sigmoid', 'relu', 'relu6',
  'leakyRelu', 'elu', 'selu', 'gelu', 'silu', 'softplus', 'hardSigmoid', 'hardSwish', 'erf', 'erfinv', 'floor', 'ceil', 'round', 'sign', 'clamp',
  'add', 'sub', 'mul', 'div', 'pow', 'maximum', 'minimum', 'eq', 'ne', 'lt', 'le', 'gt', 'ge', 'logicalAnd', 'logicalOr', 'logicalXor', 'logicalNot', 'where',
  'isnan', 'isinf', 'isfinite', 'nanToNum', 'maskedFill', 'triu', 'tril',
  // reductions, scans, sorting and selection
  'sum', 'mean', 'max', 'min', 'amax', 'amin', 'prod', 'argmax', 'argmin', 'var', 'std', 'softmax', 'logSoftmax', 'cumsum', 'cumprod',
  'any', 'all', 'logsumexp', 'sort', 'argsort', 'topk', 'kthvalue', 'oneHot', 'nonzero', 'maskedSelect', 'unique',
  // linear algebra and neural-network functions
  'matmul', 'mm', 'bmm', 'mv', 'dot', 'outer', 'addmm', 'baddbmm', 'einsum', 'linear', 'conv1d', 'conv2d', 'conv3d', 'convTranspose2d',
  'maxPool1d', 'avgPool1d', 'maxPool2d', 'avgPool2d', 'adaptiveAvgPool2d', 'batchNorm', 'layerNorm', 'groupNorm', 'instanceNorm', 'rmsNorm',
  'normalize', 'cosineSimilarity', 'dropout', 'scaledDotProductAttention', 'lstm', 'gru', 'rnn',
  // modules, files, models
  'nn', 'saveSafetensors', 'loadSafetensors', 'loadOnnx', 'readOnnxTensor', 'OnnxModel', 'OnnxUnsupportedError',
  // the JIT and its graphs
  'jit', 'Graph', 'opLabel', 'STRATEGIES',
  // namespaces of the other layers
  'profiler', 'benchmark', 'serve', 'quant', 'QuantizedTensor', 'quantizePerTensor', 'quantizePerChannel', 'dequantize',
  'autocast',
];

const INTERNAL = ['planMemory', 'validateMemoryPlan', 'foldWeights', 'checkGroups', 'composeViews', 'isIdentityView', 'epilogueResult', 'extraCount', 'fromHost', 'defineOp', 'apply1', 'matmulOp', 'reduceOp', 'sdpaOp', 'argsortOp'];

describe('the public API', () => {
  it('is exactly the listed names; internals are only in sinter/jit-internals', () => {
    expect(Object.keys(sn).sort()).toEqual([...PUBLIC].sort());
    for (const name of INTERNAL) {
      expect(name in sn, `${name} is internal`).toBe(false);
      expect((internals as Record<string, unknown>)[name], `jit-internals exports ${name}`).toBeDefined();
    }
  });

  it('nn holds the PyTorch layer names', () => {
    for (const name of ['Module', 'Parameter', 'Sequential', 'ModuleList', 'ModuleDict', 'Identity', 'Linear', 'Conv1d', 'Conv2d', 'LayerNorm', 'RMSNorm', 'MultiheadAttention',
      'TransformerEncoderLayer', 'TransformerEncoder', 'TransformerDecoderLayer', 'TransformerDecoder', 'LSTM', 'GRU', 'RNN', 'Upsample', 'PixelShuffle', 'Embedding', 'Dropout']) {
      expect((sn.nn as Record<string, unknown>)[name], `nn.${name}`).toBeDefined();
    }
    expect('uniform' in sn.nn || 'xavierUniform' in sn.nn).toBe(false);
  });
});

describe('the packed package', () => {
  it('type-checks in a strict TypeScript project without skipLibCheck, sharing the user\'s fast-check', () => {
    const root = join(dirname(fileURLToPath(import.meta.url)), '..');
    if (!existsSync(join(root, 'dist/index.d.ts'))) throw new Error('dist/ is missing: run `npm run build` first (npm test does)');
    const work = mkdtempSync(join(tmpdir(), 'sinter-strict-'));
    try {
      const tgz = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', work], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }))[0].filename as string;
      const modules = join(work, 'node_modules');
      mkdirSync(join(modules, 'sinter'), { recursive: true });
      execFileSync('tar', ['-xzf', join(work, tgz), '-C', join(modules, 'sinter'), '--strip-components=1']);
      // The project gets exactly what installing the package brings (its dependencies and peers),
      // linked from this repository's node_modules: a type the .d.ts files need from a devDependency would be missing.
      const pkg = JSON.parse(readFileSync(join(modules, 'sinter/package.json'), 'utf8')) as { dependencies: Record<string, string>; peerDependencies: Record<string, string> };
      for (const dep of [...Object.keys(pkg.dependencies), 'fast-check']) {
        mkdirSync(dirname(join(modules, dep)), { recursive: true });
        symlinkSync(join(root, 'node_modules', dep), join(modules, dep));
      }
      writeFileSync(join(work, 'package.json'), JSON.stringify({ name: 'strict-user', type: 'module', private: true }));
      writeFileSync(join(work, 'tsconfig.json'), JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, skipLibCheck: false, noEmit: true, types: [] }, include: ['main.ts'] }));
      writeFileSync(join(work, 'main.ts'), `
import fc from 'fast-check';
import * as sn from 'sinter';
import { makeTensor, propertyConfig, shapeArb, tensorCaseArb } from 'sinter/testing';
import { planMemory } from 'sinter/jit-internals';

class Net extends sn.nn.Module {
  fc1 = new sn.nn.Linear(4, 8);
  blocks = new sn.nn.ModuleList([new sn.nn.Linear(8, 8)]);
  forward(x: sn.Tensor): sn.Tensor {
    return sn.relu(this.fc1.forward(x));
  }
}
// The user's fast-check and sinter's testing kit share one Arbitrary type.
const shapes: fc.Arbitrary<number[]> = shapeArb({ maxRank: 3 });
fc.assert(fc.property(shapes, tensorCaseArb([2]), (s, c) => s.length <= 3 && makeTensor(c).shape.length === 1), propertyConfig());
const y: sn.Tensor = new Net().eval().forward(sn.randn([2, 4]));
const [values, indices] = sn.sort(y, { dim: -1, descending: true });
const [attn, weights] = new sn.nn.MultiheadAttention(8, 2).forward(y.unsqueeze(0), y.unsqueeze(0), y.unsqueeze(0));
// Types from dependencies are real types, not any.
type IsAny<T> = 0 extends 1 & T ? true : false;
const ndarrayTyped: IsAny<Awaited<ReturnType<typeof sn.toNdarray>>> = false;
const gpuTyped: IsAny<GPUDevice> = false;
console.log(values, indices, attn, weights, ndarrayTyped, gpuTyped, typeof planMemory);
`);
      let out = '';
      try {
        execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', work], { encoding: 'utf8', stdio: 'pipe' });
      } catch (e) {
        out = String((e as { stdout?: string }).stdout ?? e);
      }
      expect(out).toBe('');
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});
