// sinter.nn: modules with PyTorch's names, state dicts and constructor options.
export { Module } from './module.js';
export * from './layers.js';
