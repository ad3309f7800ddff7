import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { type Backend, getBackend, registerBackend } from '../src/backend/backend.js';
import { openAdapter } from '../src/backend/webgpu/adapter.js';
import { WebGpuBackend } from '../src/backend/webgpu/backend.js';
import type { Expr } from '../src/ops/expr.js';
import { ELEMENTWISE } from '../src/ops/elementwise.js';
import { gatherND, scatterElements, scatterND } from '../src/ops/scatter.js';
import { type OpDef, apply1, defineOp } from '../src/jit-internals.js';
import type { WebGpuCaps } from '../src/kernels/wgsl/kernel.js';
import { wqMatmulOp } from '../src/quant/weights.js';
import { literal } from '../src/kernels/wgsl/dtype.js';
import { withPrelude } from '../src/kernels/wgsl/prelude.js';

// Every op's and fused group's WGSL at float16 on an adapter with shader-f16, compiled and validated.
// No adapter here executes f16 (SwiftShader lacks the feature), but Dawn's null backend offers
// shader-f16 and runs Tint's full validation on each shader module and pipeline: a type error in the
// native-f16 path (`f16 * f32`, an f32 helper given an f16, a literal f16 cannot hold) rejects the
// pipeline there as it would on a GPU. It computes nothing meaningful, so values are not checked
// here: test/webgpu-f16.test.ts compares them with the CPU on adapters that run f16.

/** Dawn's null adapter as the 'webgpu' backend, with what it compiles recorded. */
interface NullGpu {
  backend: WebGpuBackend;
  /** Every program the backend prepared: the op, its elementwise expressions, its WGSL. */
  prepared: { op: string; exprs: Expr[]; sources: string[] }[];
}

async function openNullAdapter(): Promise<NullGpu> {
  const { create } = await import('webgpu');
  const gpu = create(['backend=null']);
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new Error("Dawn's null backend offers no adapter");
  const backend = new WebGpuBackend(await openAdapter(gpu, adapter, "Dawn's null backend (validation only)"));
  // Its buffers hold garbage (nothing runs), so device-side checks (gather's index range…) would
  // fail at random: their status words are dropped. Compile and dispatch errors still report.
  const statusCheck = backend.statusCheck.bind(backend);
  backend.statusCheck = (label, messages) => {
    const { check, receive } = statusCheck(label, messages);
    return { check, receive: () => receive(null) };
  };
  const prepared: NullGpu['prepared'] = [];
  const prepare = backend.prepare.bind(backend);
  backend.prepare = (op, inputs, attrs, outputs) => {
    const p = prepare(op, inputs, attrs, outputs);
    const a = attrs as { expr?: Expr; prologue?: Expr; epilogue?: { expr?: Expr } };
    const exprs = [a?.expr, a?.prologue, a?.epilogue?.expr].filter((e): e is Expr => e !== undefined && e !== null && typeof e === 'object' && 'kind' in e);
    prepared.push({ op: op.name, exprs, sources: p.passes.map((q) => q.kernel.source) });
    return p;
  };
  return { backend, prepared };
}

/** The names of the elementwise functions `e` calls. */
function callsOf(e: Expr, into: Set<string>): Set<string> {
  if (e.kind === 'call') {
    into.add(e.fn);
    for (const a of e.args) callsOf(a, into);
  }
  return into;
}

let seed = 1;
/** A float16 tensor on 'webgpu' (values matter not: nothing is computed). */
function h(...shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return sn.tensor(Array.from({ length: n }, () => ((seed = (seed * 48271) % 2147483647) / 2147483647) * 4 - 2), { dtype: 'float16', device: 'webgpu' }).reshape(shape);
}
const ints = (values: number[], shape = [values.length]) => sn.tensor(values, { dtype: 'int32', device: 'webgpu' }).reshape(shape);
const mask = (...shape: number[]) => sn.gt(h(...shape), 0);

type Outputs = Tensor | Tensor[] | { values: Tensor; indices: Tensor };
type Case = [name: string, run: () => Outputs | Promise<Outputs>];

/** The public functions by name. */
const fns = sn as unknown as Record<string, (...args: unknown[]) => Tensor>;

const unaries = [
  'neg', 'abs', 'exp', 'log', 'log1p', 'expm1', 'sqrt', 'rsqrt', 'reciprocal', 'sin', 'cos', 'tanh', 'sigmoid', 'relu', 'relu6', 'selu', 'silu',
  'hardSigmoid', 'hardSwish', 'erf', 'erfinv', 'floor', 'ceil', 'round', 'sign', 'logicalNot', 'isnan', 'isinf', 'isfinite', 'nanToNum', 'elu', 'softplus',
];
const binaries = ['add', 'sub', 'mul', 'div', 'pow', 'maximum', 'minimum', 'eq', 'ne', 'lt', 'le', 'gt', 'ge', 'logicalAnd', 'logicalOr', 'logicalXor'];

const ELEMENTWISE_CASES: Case[] = [
  ...unaries.map((n): Case => [n, () => fns[n]!(h(5, 7))]),
  ...binaries.map((n): Case => [n, () => fns[n]!(h(4, 6), h(6))]),
  ...binaries.map((n): Case => [`${n} scalar`, () => fns[n]!(h(4, 6), 1.5)]),
  ['add alpha', () => sn.add(h(3, 5), h(3, 5), { alpha: 0.5 })],
  ['sub alpha', () => sn.sub(h(3, 5), h(3, 5), { alpha: 3 })],
  ['div trunc', () => sn.div(h(3, 5), h(3, 5), { roundingMode: 'trunc' })],
  ['div floor', () => sn.div(h(3, 5), 0.75, { roundingMode: 'floor' })],
  ['leakyRelu', () => sn.leakyRelu(h(3, 5), 0.2)],
  ['gelu', () => sn.gelu(h(3, 5))],
  ['gelu tanh', () => sn.gelu(h(3, 5), { approximate: 'tanh' })],
  ['clamp', () => sn.clamp(h(3, 5), -1, 1.5)],
  ['clamp one side', () => sn.clamp(h(3, 5), { min: 0.25 })],
  ['clamp tensors', () => sn.clamp(h(3, 5), h(5), h(3, 1))],
  ['nanToNum values', () => sn.nanToNum(h(3, 5), 0, 100, -100)],
  ['where', () => sn.where(mask(4, 6), h(4, 6), h(6))],
  ['where scalar', () => sn.where(mask(4, 6), h(4, 6), 0)],
  ['maskedFill', () => sn.maskedFill(h(4, 6), mask(6), -1e4)],
  ['cast to float32', () => h(3, 5).to('float32')],
  ['cast from float32', () => h(3, 5).to('float32').mul(3).to('float16')],
  ['cast to int32', () => h(3, 5).to('int32')],
  ['cast from int32', () => ints([1, -2, 3, 70000]).to('float16')],
  ['cast to int8', () => h(3, 5).to('int8')],
  ['cast from uint8', () => ints([1, 2, 255, 0]).to('uint8').to('float16')],
  ['cast to bool', () => h(3, 5).to('bool')],
  ['cast from bool', () => mask(3, 5).to('float16')],
  ['float16 + float32 promotes', () => sn.add(h(3, 5), h(3, 5).to('float32'))],
  ['float16 + int32', () => sn.mul(h(4), ints([1, 2, 3, 4]))],
  ['strided view', () => h(6, 8).transpose(0, 1).narrow(0, 1, 5).mul(2)],
  ['contiguous of a view', () => h(6, 8).transpose(0, 1).contiguous()],
  ['vectorisable', () => sn.add(h(8, 16), h(8, 16))],
  ['vectorisable with a scalar', () => sn.mul(h(8, 16), h(1))],
  ['vectorisable float16 + float32', () => sn.add(h(4, 8), h(4, 8).to('float32'))],
  ['vectorisable to float16', () => h(4, 8).to('float32').mul(3).to('float16')],
  ['odd length', () => sn.mul(h(7), 3)],
  ['constants past the parameter block (literals, ±∞ among them)', () => {
    const many = sn.jit((x: Tensor) => Array.from({ length: 40 }, (_, i) => i).reduce((y, i) => y.mul(1 + i / 64).add(i === 3 ? Infinity : i === 5 ? -Infinity : -0.5 - i), x));
    return many(h(5, 7));
  }],
  ['dropout', () => sn.dropout(h(4, 8), { p: 0.25, training: true })],
];

const REDUCTION_CASES: Case[] = [
  ...['sum', 'mean', 'amax', 'amin', 'prod', 'var', 'std', 'argmax', 'argmin', 'any', 'all', 'logsumexp'].map((n): Case => [n, () => fns[n]!(h(9, 33), 1)]),
  ...['sum', 'mean', 'amax', 'var'].map((n): Case => [`${n} all`, () => fns[n]!(h(17, 31))]),
  ['sum dim 0', () => sn.sum(h(33, 9), 0)],
  ['sum large (several passes)', () => sn.sum(h(70000))],
  ['mean large rows', () => sn.mean(h(3, 20000), 1)],
  ['max with indices', () => sn.max(h(5, 9), 1)],
  ['cumsum', () => sn.cumsum(h(3, 40), 1)],
  ['cumsum long', () => sn.cumsum(h(2, 3000), 1)],
  ['cumprod', () => sn.cumprod(h(3, 10), 1)],
  ['softmax', () => sn.softmax(h(5, 19), -1)],
  ['softmax long rows', () => sn.softmax(h(2, 5000), -1)],
  ['softmax dim 0', () => sn.softmax(h(7, 5), 0)],
  ['logSoftmax', () => sn.logSoftmax(h(7, 5), 1)],
  ['sort', () => sn.sort(h(4, 37), 1)],
  ['topk', () => sn.topk(h(4, 37), 5, 1)],
  ['argsort', () => sn.argsort(h(4, 9), 1, true)],
  ['kthvalue', () => sn.kthvalue(h(4, 9), 3, 1)],
];

const NORM_CASES: Case[] = [
  ['layerNorm', () => sn.layerNorm(h(4, 12), [12], h(12), h(12))],
  ['layerNorm no affine', () => sn.layerNorm(h(2, 3, 12), [3, 12])],
  ['layerNorm long rows', () => sn.layerNorm(h(2, 3000), [3000], h(3000), h(3000))],
  ['rmsNorm', () => sn.rmsNorm(h(4, 12), 12, h(12))],
  ['groupNorm', () => sn.groupNorm(h(2, 6, 5, 5), 3, h(6), h(6))],
  ['instanceNorm', () => sn.instanceNorm(h(2, 3, 5, 5), { weight: h(3), bias: h(3) })],
  ['instanceNorm running stats', () => sn.instanceNorm(h(2, 3, 5, 5), { runningMean: h(3), runningVar: sn.abs(h(3)), useInputStats: false })],
  ['batchNorm', () => sn.batchNorm(h(2, 3, 5, 5), h(3), sn.abs(h(3)), h(3), h(3))],
  ['normalize', () => sn.normalize(h(4, 12), { dim: 1 })],
  ['cosineSimilarity', () => sn.cosineSimilarity(h(4, 12), h(4, 12))],
];

/** Products and convolutions: each GEMM kernel shape is chosen by the adapter, so they run as several (see GEMM_CAPS). */
const GEMM_CASES: Case[] = [
  ['matmul', () => sn.matmul(h(9, 24), h(24, 13))],
  ['matmul aligned', () => sn.matmul(h(64, 64), h(64, 64))],
  ['matmul large', () => sn.matmul(h(96, 40), h(40, 72))],
  ['matmul transposed operand', () => sn.matmul(h(24, 9).transpose(0, 1), h(13, 24).transpose(0, 1))],
  ['matmul broadcast batch', () => sn.matmul(h(2, 3, 5, 8), h(8, 6))],
  ['matmul float16 x float32', () => sn.matmul(h(5, 8), h(8, 6).to('float32'))],
  ['bmm', () => sn.bmm(h(2, 5, 8), h(2, 8, 7))],
  ['mv', () => sn.mv(h(5, 8), h(8))],
  ['dot', () => sn.dot(h(33), h(33))],
  ['linear', () => sn.linear(h(3, 16), h(5, 16), h(5))],
  ['linear no bias', () => sn.linear(h(2, 3, 16), h(5, 16))],
  ['addmm', () => sn.addmm(h(5), h(4, 8), h(8, 5), { beta: 0.5, alpha: 2 })],
  ['baddbmm', () => sn.baddbmm(h(2, 4, 5), h(2, 4, 8), h(2, 8, 5))],
  ['einsum', () => sn.einsum('bij,bjk->bik', h(2, 4, 6), h(2, 6, 3))],
  ['conv2d', () => sn.conv2d(h(1, 3, 9, 9), h(4, 3, 3, 3), h(4), { padding: 1 })],
  ['conv2d strided dilated', () => sn.conv2d(h(2, 4, 11, 10), h(8, 4, 3, 3), null, { stride: 2, dilation: 2, padding: [1, 2] })],
  ['conv2d 1x1', () => sn.conv2d(h(1, 16, 6, 6), h(32, 16, 1, 1), h(32))],
  ['conv2d grouped', () => sn.conv2d(h(1, 8, 7, 7), h(8, 2, 3, 3), h(8), { groups: 4, padding: 1 })],
  ['conv2d depthwise', () => sn.conv2d(h(1, 8, 7, 7), h(8, 1, 3, 3), h(8), { groups: 8, padding: 1 })],
  ['conv2d wide', () => sn.conv2d(h(1, 32, 16, 16), h(64, 32, 3, 3), h(64), { padding: 1 })],
  ['conv1d', () => sn.conv1d(h(2, 3, 17), h(4, 3, 5), h(4), { padding: 2 })],
  ['conv3d', () => sn.conv3d(h(1, 2, 5, 5, 5), h(3, 2, 3, 3, 3), h(3))],
  ['convTranspose2d', () => sn.convTranspose2d(h(1, 4, 5, 5), h(4, 3, 3, 3), h(3), { stride: 2, padding: 1, outputPadding: 1 })],
  ['convTranspose2d grouped', () => sn.convTranspose2d(h(1, 4, 5, 5), h(4, 2, 2, 2), null, { stride: 2, groups: 2 })],
  ['scaledDotProductAttention', () => sn.scaledDotProductAttention(h(2, 3, 7, 8), h(2, 3, 9, 8), h(2, 3, 9, 8))],
  ['scaledDotProductAttention causal', () => sn.scaledDotProductAttention(h(1, 2, 6, 16), h(1, 2, 6, 16), h(1, 2, 6, 16), { isCausal: true })],
  ['scaledDotProductAttention masks', () => [
    sn.scaledDotProductAttention(h(1, 2, 6, 8), h(1, 2, 5, 8), h(1, 2, 5, 8), { attnMask: mask(6, 5) }),
    sn.scaledDotProductAttention(h(1, 2, 6, 8), h(1, 2, 5, 8), h(1, 2, 5, 8), { attnMask: h(6, 5) }),
  ]],
  ['weight-only int4 matmul of float16 activations', () => apply1(wqMatmulOp, [h(3, 64), ints(Array.from({ length: 5 * 32 }, (_, i) => i % 256), [5, 32]).to('uint8'), sn.abs(h(5, 2)).to('float32')], { m: 3, n: 5, k: 64, bits: 4, blockSize: 32, asymmetric: false, hasBias: false })],
  ['lstm', () => sn.lstm(h(3, 2, 5), [{ wIh: h(16, 5), wHh: h(16, 4), bIh: h(16), bHh: h(16) }]).output],
  ['gru', () => sn.gru(h(3, 2, 5), [{ wIh: h(12, 5), wHh: h(12, 4), bIh: h(12), bHh: h(12) }]).output],
];

const POOL_CASES: Case[] = [
  ['maxPool2d', () => sn.maxPool2d(h(1, 2, 8, 8), 2)],
  ['maxPool2d padded ceil', () => sn.maxPool2d(h(1, 2, 9, 7), 3, { stride: 2, padding: 1, ceilMode: true })],
  ['avgPool2d', () => sn.avgPool2d(h(1, 2, 8, 8), 2)],
  ['avgPool2d padded', () => sn.avgPool2d(h(1, 2, 9, 7), 3, { stride: 2, padding: 1, countIncludePad: false })],
  ['adaptiveAvgPool2d', () => sn.adaptiveAvgPool2d(h(1, 3, 9, 7), [4, 3])],
  ['adaptiveAvgPool2d global', () => sn.adaptiveAvgPool2d(h(2, 3, 9, 7), 1)],
  ['maxPool1d', () => sn.maxPool1d(h(2, 3, 10), 3)],
  ['avgPool1d', () => sn.avgPool1d(h(2, 3, 10), 2)],
];

const MOVEMENT_CASES: Case[] = [
  ['cat', () => sn.cat([h(3, 4), h(2, 4)], 0)],
  ['cat dim 1 views', () => sn.cat([h(4, 3), h(3, 4).transpose(0, 1), h(4, 1)], 1)],
  ['cat odd sizes', () => sn.cat([h(3), h(5), h(1)], 0)],
  ['stack', () => sn.stack([h(3, 4), h(3, 4)], 1)],
  ['pad constant', () => sn.pad(h(2, 3, 5), [1, 2, 0, 1], { mode: 'constant', value: 0.5 })],
  ['pad reflect', () => sn.pad(h(1, 2, 5, 5), [2, 2, 1, 1], { mode: 'reflect' })],
  ['pad replicate', () => sn.pad(h(1, 2, 5, 5), [1, 1, 1, 1], { mode: 'replicate' })],
  ['gather', () => sn.gather(h(4, 5), 1, ints([0, 4, 2, 1, 3, 3, 0, 2], [4, 2]))],
  ['indexSelect', () => sn.indexSelect(h(4, 5), 0, ints([3, 0, 1]))],
  ['embedding', () => sn.embedding(ints([1, 0, 5, 2], [2, 2]), h(6, 7))],
  ['embeddingBag', () => sn.embeddingBag(ints([1, 0, 5, 2, 4, 3], [2, 3]), h(6, 7), { mode: 'sum' })],
  ['embeddingBag max', () => sn.embeddingBag(ints([1, 0, 5, 2, 4, 3], [2, 3]), h(6, 7), { mode: 'max' })],
  ['repeat', () => sn.repeat(h(2, 3), [2, 1, 3])],
  ['flip', () => sn.flip(h(3, 4, 5), [0, 2])],
  ['roll', () => sn.roll(h(3, 7), [2, -3], [0, 1])],
  ['permute', () => h(2, 3, 4).permute([2, 0, 1]).contiguous()],
  ['expand', () => h(3, 1).expand([3, 5]).contiguous()],
  ['triu', () => sn.triu(h(5, 6), 1)],
  ['tril', () => sn.tril(h(2, 5, 6))],
  ['pixelShuffle', () => sn.pixelShuffle(h(1, 8, 3, 3), 2)],
  ['interpolate nearest', () => sn.interpolate(h(1, 2, 4, 5), { scaleFactor: 2, mode: 'nearest' })],
  ['interpolate bilinear', () => sn.interpolate(h(1, 1, 4, 5), { scaleFactor: 2, mode: 'bilinear' })],
  ['interpolate bilinear aligned', () => sn.interpolate(h(1, 1, 4, 5), { size: [7, 3], mode: 'bilinear', alignCorners: true })],
  ['interpolate linear', () => sn.interpolate(h(1, 2, 5), { size: 9, mode: 'linear' })],
  ['scatterElements', () => scatterElements(h(4, 5), ints([0, 4, 2, 1], [4, 1]), h(4, 1), { axis: 1 })],
  ['scatterElements add', () => scatterElements(h(4, 5), ints([0, 4, 2, 1], [4, 1]), h(4, 1), { axis: 1, reduction: 'add' })],
  ['scatterND', () => scatterND(h(4, 5), ints([1, 3], [2, 1]), h(2, 5))],
  ['scatterND max', () => scatterND(h(4, 5), ints([1, 3], [2, 1]), h(2, 5), { reduction: 'max' })],
  ['gatherND', () => gatherND(h(4, 5), ints([1, 2, 3, 0], [2, 2]))],
];

/** Groups the JIT fuses into one kernel; each is checked to have fused. */
const FUSED_CASES: [name: string, fn: (...xs: Tensor[]) => Tensor, inputs: () => Tensor[], fused: string[]][] = [
  ['float16 between float32 inputs and output', (x, b) => sn.maximum(x.to('float16').mul(2), b.to('float16')).clamp(-1, 1).to('float32'), () => [h(4, 9).to('float32'), h(4, 9).to('float32')], ['to', 'mul', 'to', 'maximum', 'clamp', 'to']],
  ['elementwise chain', (x, b) => sn.sigmoid(sn.relu(x.mul(1.5).add(0.5)).sub(0.25)).mul(x).add(b), () => [h(4, 9), h(9)], ['mul', 'add', 'relu', 'sub', 'sigmoid', 'mul', 'add']],
  ['reduction prologue', (x, y) => sn.sum(sn.mul(x.sub(y), x.sub(y)), 1), () => [h(5, 33), h(5, 33)], ['sub', 'mul', 'sum']],
  ['softmax prologue', (x, m) => sn.softmax(x.mul(0.125).add(m), -1), () => [h(4, 17), h(17)], ['mul', 'add', 'softmax']],
  ['matmul epilogue', (a, b, c) => sn.gelu(sn.matmul(a, b).add(c)), () => [h(9, 24), h(24, 13), h(13)], ['matmul', 'add', 'gelu']],
  ['linear epilogue', (x, w, b, r) => sn.relu(sn.linear(x, w, b)).add(r), () => [h(6, 16), h(8, 16), h(8), h(6, 8)], ['linear', 'relu', 'add']],
  ['conv epilogue', (x, w, b, r) => sn.relu(sn.conv2d(x, w, b, { padding: 1 }).add(r)), () => [h(1, 4, 8, 8), h(4, 4, 3, 3), h(4), h(1, 4, 8, 8)], ['conv2d', 'add', 'relu']],
  ['depthwise conv epilogue', (x, w) => sn.hardSwish(sn.conv2d(x, w, null, { groups: 4, padding: 1 })), () => [h(1, 4, 8, 8), h(4, 1, 3, 3)], ['conv2d', 'hardSwish']],
];

/** Caps under which GEMMs and reductions pick each of their kernel shapes (see test/helpers.ts's withGemmKernel). */
const KERNEL_SHAPES: { name: string; caps: Partial<WebGpuCaps> }[] = [
  { name: 'a GPU (tiled GEMM)', caps: { architecture: 'a GPU', subgroups: false } },
  { name: 'a GPU with subgroups', caps: { architecture: 'a GPU', subgroups: true } },
  { name: 'SwiftShader (register GEMM)', caps: { architecture: 'swiftshader', subgroups: false } },
  { name: 'SwiftShader with subgroups (quad GEMM)', caps: { architecture: 'swiftshader', subgroups: true } },
];

describe("native float16 kernels validate on Dawn's null backend (shader-f16)", () => {
  let gpu: NullGpu;
  let saved: Backend;
  let caps: WebGpuCaps;
  beforeAll(async () => {
    saved = getBackend('webgpu');
    gpu = await openNullAdapter();
    caps = gpu.backend.caps;
    registerBackend(gpu.backend);
  });
  afterAll(() => registerBackend(saved));

  /** Runs the cases and returns the failures; each must compile at least one native-f16 module. */
  async function validate(cases: readonly Case[]): Promise<string[]> {
    const failures: string[] = [];
    for (const [name, run] of cases) {
      const before = gpu.prepared.length;
      try {
        const r = await run();
        const outs = r instanceof sn.Tensor ? [r] : Array.isArray(r) ? r : [r.values, r.indices];
        await Promise.all(outs.map((t) => t.data()));
        const sources = gpu.prepared.slice(before).flatMap((p) => p.sources);
        if (!sources.some((s) => s.includes('enable f16;'))) failures.push(`${name}: compiled no kernel with native f16 (${gpu.prepared.slice(before).map((p) => p.op).join(', ') || 'none'})`);
      } catch (e) {
        failures.push(`${name}: ${(e as Error).message}`);
      }
    }
    return failures;
  }

  async function withNullCaps<T>(change: Partial<WebGpuCaps>, fn: () => Promise<T>): Promise<T> {
    (gpu.backend as { caps: WebGpuCaps }).caps = { ...caps, ...change };
    try {
      return await fn();
    } finally {
      (gpu.backend as { caps: WebGpuCaps }).caps = caps;
    }
  }

  it('the null adapter has shader-f16, so float16 is stored and computed natively', () => {
    expect(gpu.backend.caps.f16).toBe(true);
    expect(gpu.backend.line).toContain('shader-f16');
  });

  it('a kernel that mixes f16 and f32 is rejected (the check can fail)', async () => {
    const broken: OpDef<Record<string, never>> = defineOp({
      name: 'broken',
      infer: ([x]) => [{ shape: x!.shape, dtype: 'float16' }],
      cpu: () => undefined,
      webgpu: (_, __, [out], c) => ({
        source: `enable f16;\n@group(0) @binding(0) var<storage, read> in0: array<f16>;\n@group(0) @binding(1) var<storage, read_write> out0: array<f16>;\n@compute @workgroup_size(1) fn main() { out0[0] = in0[0] * 2.0f; }`,
        workgroups: [c.f16 && out!.shape.length > 0 ? 1 : 0],
      }),
    });
    const failures = await validate([['broken', () => apply1(broken, [h(3)], {})]]);
    expect(failures).toHaveLength(1);
    expect(failures[0]).toMatch(/rejected.*operator \* \(f16, f32\)/s);
  });

  it('every elementwise function, compare, where and cast', async () => {
    const failures = await validate(ELEMENTWISE_CASES);
    expect(failures).toEqual([]);
    // Every registered elementwise function ran in some float16 kernel.
    const called = new Set<string>();
    for (const p of gpu.prepared) for (const e of p.exprs) callsOf(e, called);
    expect([...ELEMENTWISE.keys()].filter((f) => !called.has(f))).toEqual([]);
  });

  it('elementwise kernels compute float16 in f16; reductions, softmax, norms and GEMMs keep f32 accumulators', async () => {
    /** The WGSL of the kernels `run` prepares. */
    const sourcesOf = async (run: () => Tensor): Promise<string> => {
      const before = gpu.prepared.length;
      await run().data();
      return gpu.prepared.slice(before).flatMap((p) => p.sources).join('\n');
    };
    // Exact in f16: operands stay f16; exp is widened to f32 and its result rounded to binary16 (ties to even) first.
    const chain = await sourcesOf(() => sn.exp(h(4, 6).mul(h(6)).add(1.5)));
    expect(chain).toMatch(/let t\d+: f16 = \(t\d+ \* t\d+\);/);
    expect(chain).toMatch(/let t\d+: f16 = f16\(bitcast<f32>\(sn_params\[\d\]\.[xyzw]\)\);/);
    expect(chain).toMatch(/let t\d+: f16 = f16\(sn_f16\(exp\(f32\(t\d+\)\)\)\);/);
    // NaN-keeping max/min have f16 forms.
    const clamped = await sourcesOf(() => sn.clamp(sn.maximum(h(4, 6), h(6)), -1, 1));
    expect(clamped).toMatch(/let t\d+: f16 = sn_max_h\(t\d+, t\d+\);/);
    expect(clamped).toMatch(/let t\d+: f16 = sn_min_h\(sn_max_h\(t\d+, f16\(/);
    // Contiguous, aligned float16 moves as vec4<f16> (8 bytes), broadcast scalars as single f16 values.
    const vectorised = await sourcesOf(() => sn.add(h(8, 16), h(8, 16)).mul(h(1)));
    expect(vectorised).toContain('var<storage, read> in0: array<vec4<f16>>;');
    expect(vectorised).toMatch(/out0\[w\] = vec4<f16>\(f\(a0\.x, a1\.x\)/);
    // Past the parameter block's 64 words, constants are f16 literals (±∞ through f32 helpers).
    const many = sn.jit((x: Tensor) => Array.from({ length: 40 }, (_, i) => i).reduce((y, i) => y.mul(1 + i / 64).add(i === 3 ? Infinity : -0.5 - i), x));
    const literals = await sourcesOf(() => many(h(5, 7)));
    expect(literals).toMatch(/let t\d+: f16 = f16\(\(-39\.5f\)\);/);
    // f16 literals themselves: binary16 values (nearest even), ±∞ through f32 helpers, all valid WGSL.
    const values = [1 / 3, -0, 2 ** -24, 65504, 65519, 1e6, -Infinity, NaN];
    expect(values.map((v) => literal(v, 'f16'))).toEqual(['(0.333251953125h)', '(-0h)', '(5.960464477539063e-8h)', '(65504h)', '(65504h)', 'f16(sn_inf())', 'f16((-sn_inf()))', 'f16(sn_nan())']);
    const device = gpu.backend.device;
    const module = device.createShaderModule({ code: withPrelude(`enable f16;\n@group(0) @binding(0) var<storage, read_write> o: array<f16>;\n@compute @workgroup_size(1) fn main() {\n${values.map((v, i) => `  o[${i}] = ${literal(v, 'f16')};`).join('\n')}\n}`) });
    expect((await module.getCompilationInfo()).messages.filter((m) => m.type === 'error').map((m) => m.message)).toEqual([]);
    // No f16 variable or workgroup array: loads widen to f32, stores round from f32.
    const f16Values = /(let|var)\s+\w+\s*:\s*f16\b|var<workgroup>[^;]*f16/;
    for (const [name, run] of [
      ['sum', () => sn.sum(h(9, 33), 1)],
      ['softmax', () => sn.softmax(h(5, 19), -1)],
      ['layerNorm', () => sn.layerNorm(h(4, 12), [12], h(12), h(12))],
      ['matmul', () => sn.matmul(h(64, 64), h(64, 64))],
      ['conv2d', () => sn.conv2d(h(1, 8, 9, 9), h(8, 8, 3, 3), h(8), { padding: 1 })],
    ] as const) {
      const source = await sourcesOf(run);
      expect(source, name).toMatch(/array<(vec4<)?f16>?>/);
      expect(source, name).not.toMatch(f16Values);
      // A matrix product's contiguous operands load four float16 at once, widened to f32 for the products.
      // and its tile stores four, rounded in f32 first.
      if (name === 'matmul') {
        expect(source).toMatch(/var<storage, read> in0: array<vec4<f16>>;[^]*vec4f\(in0\[/);
        expect(source).toMatch(/ \/ 4u\] = vec4<f16>\(vec4f\(sn_f16\(acc/);
      }
    }
  });

  it('reductions, scans, softmax, sorting and norms', async () => {
    for (const { name, caps: change } of KERNEL_SHAPES.slice(0, 2)) {
      expect(await withNullCaps(change, () => validate([...REDUCTION_CASES, ...NORM_CASES])), name).toEqual([]);
    }
  });

  it('matmul, linear, bmm, convolutions and attention, with every GEMM kernel shape', async () => {
    for (const { name, caps: change } of KERNEL_SHAPES) expect(await withNullCaps(change, () => validate(GEMM_CASES)), name).toEqual([]);
  });

  it('pooling, movement, gather/scatter, concat and interpolation', async () => {
    expect(await validate([...POOL_CASES, ...MOVEMENT_CASES])).toEqual([]);
  });

  it("the JIT's fused kernels (elementwise chains, prologues, epilogues), and jit with autocast", async () => {
    for (const { name, caps: change } of [KERNEL_SHAPES[0]!, KERNEL_SHAPES[3]!]) {
      const cases = FUSED_CASES.map(([what, fn, inputs, fused]): Case => [what, () => {
        const f = sn.jit(fn);
        const y = f(...inputs());
        expect(f.report().kernels.map((k) => k.ops), `${name}: ${what}`).toContainEqual(fused);
        return y;
      }]);
      cases.push(['jit autocast float16', () => sn.jit((x: Tensor, w: Tensor) => sn.softmax(sn.matmul(x, w), -1), { autocast: 'float16' })(h(6, 8).to('float32'), h(8, 5).to('float32'))]);
      expect(await withNullCaps(change, () => validate(cases)), name).toEqual([]);
    }
  });

  it('PP-OCR det, rec and cls converted to float16 at load compile whole (compiled plans)', async () => {
    const { readFile } = await import('node:fs/promises');
    const path = await import('node:path');
    const { MODELS, MODEL_DIR } = await import('../bench/onnx-models.mjs');
    for (const m of MODELS) {
      const model = await sn.loadOnnx(new Uint8Array(await readFile(path.join(MODEL_DIR, m.file))), { device: 'webgpu', dtype: 'float16' });
      const before = gpu.prepared.length;
      const x = sn.zeros(m.shape, { device: 'webgpu' });
      const failures = await validate([[m.name, async () => Object.values(await model.run({ x }))]]);
      expect(failures, m.name).toEqual([]);
      expect(gpu.prepared.length - before, m.name).toBeGreaterThan(10);
    }
  });

  it('the cases above ran every op that has a WebGPU kernel for float data at float16', () => {
    // (Run with the file's other tests: it reads what they compiled.) oneHot and the int8 GEMM take integers
    // only; scaledDotProductAttention's kernel is float32 (float16 is cast around it, as softmax's inputs are).
    const ops = new Set(gpu.prepared.filter((p) => p.sources.some((src) => src.includes('enable f16;'))).map((p) => p.op));
    const all = [
      'map', 'reduce', 'softmax', 'logSoftmax', 'cumsum', 'cumprod', 'argsort', 'matmul', 'linear', 'conv2d', 'convTranspose2d',
      'weightOnlyMatmul', 'batchNorm', 'layerNorm', 'groupNorm', 'instanceNorm', 'maxPool2d', 'avgPool2d', 'adaptiveAvgPool2d', 'interpolate', 'erfinv',
      'triangle', 'cat', 'pad', 'gather', 'indexSelect', 'embedding', 'repeat', 'flip', 'scatterElements', 'scatterND', 'gatherND',
    ];
    expect(all.filter((op) => !ops.has(op))).toEqual([]);
  });
});
