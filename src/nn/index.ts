// sinter.nn: modules with PyTorch's names, state dicts and constructor options.
export { Module, Parameter } from './module.js';
export type { IncompatibleKeys } from './module.js';
export * from './containers.js';
export * from './layers.js';
export * from './transformer.js';
export * from './recurrent.js';
