// Where the library tells the profiler what ran. Nothing here imports the rest of the library, so src/ops and src/jit
// can call these without import cycles; each hook is null (one check per op) unless a profile is being recorded.
import type { Tensor } from '../tensor/tensor.js';

/** A kernel of a jitted plan as `f.profile()` measured it. */
export interface ProfiledKernel {
  readonly name: string;
  readonly cpuMs?: number;
  readonly gpuMs?: number;
}

export interface ProfilerHooks {
  /** An eager op (its OpDef's name and attributes) ran on `inputs` into `outputs`, from `start` (performance.now()) until now. */
  op: ((name: string, attrs: unknown, inputs: readonly Tensor[], outputs: readonly Tensor[], start: number) => void) | null;
  /**
   * A jitted function (or an ONNX model, which runs through jit) ran from `start` until now; `kernels` are given when
   * the call was `f.profile()` (with each kernel's measured time).
   */
  jit: ((name: string, device: string, start: number, kernels: readonly ProfiledKernel[] | null) => void) | null;
}

export const profilerHooks: ProfilerHooks = { op: null, jit: null };
