// Filled in by the op family's author; see src/ops/op.ts for the pattern.
export {};
