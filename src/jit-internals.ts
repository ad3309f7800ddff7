// sinter/jit-internals: the hooks below the public API, for research on the JIT and for writing
// kernels (import from 'sinter/jit-internals'). Not a stable API: names and shapes change with the
// engine.
export { composeViews, isIdentityView } from './jit/graph.js';
export { checkGroups } from './jit/fusion.js';
export { planMemory, validateMemoryPlan } from './jit/plan.js';
export { foldWeights } from './jit/passes/fold-batchnorm.js';
export { apply, apply1, checkInputs, defineOp, describeMeta } from './ops/op.js';
export type { CpuView, OpDef, TensorMeta } from './ops/op.js';
export { epilogueResult, extraCount, linearOp, matmulOp } from './ops/linalg.js';
export { conv2dOp, convTranspose2dOp } from './ops/conv.js';
export { adaptiveAvgPool2dOp, avgPool2dOp, maxPool2dOp } from './ops/pool.js';
export { batchNormOp, groupNormOp, instanceNormOp, layerNormOp } from './ops/norm.js';
export { cumsumOp, logSoftmaxOp, reduceOp, softmaxOp } from './ops/reduce.js';
export { argsortOp } from './ops/sort.js';
export { triangleOp } from './ops/masking.js';
export { cumprodOp } from './ops/reductions.js';
export { oneHotOp } from './ops/selection.js';
export { erfinvOp } from './ops/functional.js';
export { sdpaOp } from './ops/attention.js';
export { fromHost } from './tensor/creation.js';
