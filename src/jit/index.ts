export { jit } from './jit.js';
export type { CompileOptions, CompileProgress, JitCacheStats, JitOptions, JitReport, Jitted, ReportFormat, TensorTree, TimingSummary } from './jit.js';
export { Graph, composeViews, isIdentityView, opLabel } from './graph.js';
export type { Node, Use, Value, View } from './graph.js';
export { STRATEGIES, checkGroups } from './fusion.js';
export type { FusionGroups, FusionOption, FusionStrategy } from './fusion.js';
export { planMemory, validateMemoryPlan } from './plan.js';
export type { KernelReport, MemoryPlan } from './plan.js';
export { foldWeights } from './passes/fold-batchnorm.js';
