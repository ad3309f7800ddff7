// The public surface of sinter.
// WebGPU's types are part of it (devices, buffers in memory statistics): kept in the emitted .d.ts
// so a user's strict TypeScript project finds them through the @webgpu/types dependency.
/// <reference types="@webgpu/types" preserve="true" />
export { Tensor, isTensor } from './tensor/tensor.js';
export type { NestedArray } from './tensor/tensor.js';
export type { DType } from './tensor/dtype.js';
export { DTYPES, promoteTypes } from './tensor/dtype.js';
export { SinterError } from './errors.js';
export type { DeviceName, DeviceOption } from './backend/backend.js';
export { init, getDefaultDevice, adapterInfo, synchronize } from './backend/device.js';
export type { InitOptions, AdapterInfo } from './backend/device.js';
export { emptyCache, setCacheLimits } from './backend/device.js';
export { cpuInfo } from './backend/cpu.js';
export type { CpuInfo } from './backend/cpu.js';
export type { CacheLimits } from './backend/device.js';
export { arange, empty, eye, full, fullLike, linspace, ones, onesLike, rand, randLike, randint, randn, randnLike, tensor, zeros, zerosLike } from './tensor/creation.js';
export type { CreateOptions, RandomOptions, TensorData, TensorOptions } from './tensor/creation.js';
export { Generator, manualSeed } from './tensor/random.js';
export { memory, keep } from './tensor/memory.js';
export type { MemoryInfo, DeviceMemory } from './tensor/memory.js';
export type { PoolStats } from './backend/webgpu/pool.js';
export type { PipelineStats } from './backend/webgpu/pipelines.js';
export { tidy } from './tensor/scope.js';
// Ops, top-level as in PyTorch (most are Tensor methods too). Their OpDefs and other kernel-level
// hooks are in 'sinter/jit-internals', not here: add a new public op's name to this list and to
// test/public-api.test.ts.
export { broadcastTo, clone, contiguous, expand, expandAs, flatten, narrow, permute, reshape, slice, squeeze, t, to, toDevice, transpose, unsqueeze, view } from './ops/views.js';
export { abs, ceil, clamp, cos, elu, erf, exp, expm1, floor, gelu, hardSigmoid, hardSwish, leakyRelu, log, log1p, logicalNot, neg, reciprocal, relu, relu6, round, rsqrt, selu, sigmoid, sign, silu, sin, softplus, sqrt, tanh } from './ops/unary.js';
export { add, div, eq, ge, gt, le, logicalAnd, logicalOr, logicalXor, lt, maximum, minimum, mul, ne, pow, sub, where } from './ops/binary.js';
export { amax, amin, argmax, argmin, cumsum, logSoftmax, max, mean, min, prod, softmax, std, sum, var } from './ops/reduce.js';
export { bmm, dot, linear, matmul, mm, mv } from './ops/linalg.js';
export { conv2d, convTranspose2d } from './ops/conv.js';
export { adaptiveAvgPool2d, avgPool2d, maxPool2d } from './ops/pool.js';
export { batchNorm, groupNorm, instanceNorm, layerNorm } from './ops/norm.js';
export { cat, chunk, embedding, flip, gather, indexSelect, pad, repeat, split, stack } from './ops/movement.js';
export { interpolate } from './ops/interpolate.js';
export { argsort, kthvalue, sort, topk } from './ops/sort.js';
export { isfinite, isinf, isnan, maskedFill, nanToNum, tril, triu } from './ops/masking.js';
export { all, any, cumprod, logsumexp } from './ops/reductions.js';
export { maskedSelect, nonzero, oneHot, unique } from './ops/selection.js';
export { gru, lstm, rnn } from './ops/rnn.js';
export { diagonal, einsum } from './ops/einsum.js';
export { diag, pixelShuffle, pixelUnshuffle, roll, select, unbind } from './ops/rearrange.js';
export { addmm, baddbmm, outer } from './ops/products.js';
export { avgPool1d, conv1d, conv3d, cosineSimilarity, dropout, embeddingBag, erfinv, maxPool1d, normalize, rmsNorm } from './ops/functional.js';
export { scaledDotProductAttention } from './ops/attention.js';
export type * from './ops/index.js';
export { fromNdarray, toNdarray } from './io/ndarray.js';
export * as nn from './nn/index.js';
export * as profiler from './profiler/index.js';
export * as benchmark from './benchmark/index.js';
export { saveSafetensors, loadSafetensors } from './io/safetensors.js';
// The JIT and the graphs it builds (memory planning, fusion checks and weight folding are in 'sinter/jit-internals').
export { jit, Graph, opLabel, STRATEGIES } from './jit/index.js';
export type * from './jit/index.js';
export * from './io/onnx/index.js';
export * as serve from './serve/index.js';
export * as quant from './quant/index.js';
export { QuantizedTensor, quantizePerTensor, quantizePerChannel, dequantize } from './quant/qtensor.js';
export type { QDType, QScheme } from './quant/qtensor.js';
export { autocast } from './quant/autocast.js';
export type { AutocastDType, AutocastOptions } from './quant/autocast.js';
