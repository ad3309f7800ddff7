// sinter/testing: the property-testing kit our own tests use, for testing your kernels the same way.
export * from './arbitraries.js';
export * from './compare.js';
