// The public surface of sinter.
export { Tensor, isTensor } from './tensor/tensor.js';
export type { NestedArray } from './tensor/tensor.js';
export type { DType } from './tensor/dtype.js';
export { DTYPES, promoteTypes } from './tensor/dtype.js';
export { SinterError } from './errors.js';
export type { DeviceName, DeviceOption } from './backend/backend.js';
export { init, getDefaultDevice, adapterInfo } from './backend/device.js';
export type { InitOptions, AdapterInfo } from './backend/device.js';
export * from './tensor/creation.js';
export { Generator, manualSeed } from './tensor/random.js';
export { memory, keep } from './tensor/memory.js';
export type { MemoryInfo, DeviceMemory } from './tensor/memory.js';
export { tidy } from './tensor/scope.js';
export * from './ops/index.js';
export { fromNdarray, toNdarray } from './io/ndarray.js';
export * as nn from './nn/index.js';
export { saveSafetensors, loadSafetensors } from './io/safetensors.js';
export * from './jit/index.js';
