import type { DType } from '../../tensor/dtype.js';

/*
 * Device-side checks, in short (for ops that must reject values living on the GPU, e.g. gather's
 * indices): return the kernel with `checks: ['index {value} is out of range for dim 0 of size 5
 * (expected -5 ≤ index < 5)']` and put `checkBinding(b)` in its source, b being the binding after
 * the inputs, outputs and scratch (for a single kernel: inputs + outputs). Where check k fails, call
 * `fail_check(ku, value, at)`: k is 1-based, value the offending i32, at a u32 of your choice
 * (e.g. the flat position in the index tensor); `{value}` and `{at}` in message k are replaced by
 * them. Still write something (e.g. 0) for that element, and clamp the index so no read goes out of
 * range. The dispatch's first failure is recorded; reading back its outputs, or anything computed
 * from them, throws SinterError(op, the filled-in message), and an op given an input already known
 * to be bad throws it at once. Checks add no submit or sync: a submit copies all its checked
 * dispatches' status words in one go. test/webgpu.test.ts (`pick`) has a complete example.
 */

/**
 * The contract between op definitions and the WebGPU backend.
 *
 * An op's `webgpu` form (see OpDef in src/ops/op.ts) receives the layouts of its inputs (strided,
 * possibly broadcast with stride 0) and of its freshly allocated contiguous outputs, plus the
 * device's capabilities, and returns one `WgslKernel` (a complete WGSL module with entry point
 * `main` and the workgroup counts to dispatch) or a `WgslProgram` (several kernels dispatched in
 * order, sharing scratch buffers). Bindings, all in @group(0):
 *   inputs  0..n-1              `var<storage, read>`        (declare them with `bindings()` from ./dtype.ts)
 *   outputs n..n+m-1            `var<storage, read_write>`
 *   scratch n+m..n+m+s-1        `var<storage, read_write>`  (programs only; declare them yourself, any element type)
 *   status  n+m+s               `sn_status`, only in kernels with `checks` (declare it with `checkBinding`)
 *   params  @group(1) @binding(0) `sn_params`, a uniform block, only in kernels with `params`
 * Shapes and strides are baked into the source as constants (that makes faster index math); values
 * that vary from call to call (scalars, an activation's slope, view offsets) should be parameters:
 * take them from a `KernelParams` (./params.ts), which returns the WGSL expression reading each, add
 * its `declaration()` to the module and return its `words()` as `params`. The backend caches
 * pipelines by source (an LRU), so one pipeline then serves every value.
 *
 * Storage per dtype (see ./dtype.ts): float32 and int32 one element per 32-bit word; float16
 * natively as array<f16> when `caps.f16`, else packed two per u32; int8, uint8 and bool packed
 * four per u32 (bool is a byte 0/1). A packed output word must be written by one invocation:
 * compute `elementsPerWord(dtype, caps)` elements and store them with `packWord`.
 *
 * Helpers: ./dtype.ts (bindings, loadElement, packWord, roundTo, convert, literal), ./strided.ts
 * (unravel a flat index, offsetOf a view), ./grid.ts (workgroup counts within the device's
 * limits), ./prelude.ts (`withPrelude` adds the `sn_*` functions a module calls), ./map.ts (the
 * elementwise kernel; its `wgslExprBody` turns an Expr into WGSL statements, e.g. for epilogues).
 */

/** What a kernel form sees of a tensor: its layout (in elements), never its data. */
export interface GpuView {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly strides: readonly number[];
  readonly offset: number;
}

/** The limits kernels must respect, as granted by the device. */
export interface WebGpuLimits {
  readonly maxStorageBuffersPerShaderStage: number;
  readonly maxComputeWorkgroupStorageSize: number;
  readonly maxComputeInvocationsPerWorkgroup: number;
  readonly maxComputeWorkgroupSizeX: number;
  readonly maxComputeWorkgroupSizeY: number;
  readonly maxComputeWorkgroupsPerDimension: number;
  readonly maxStorageBufferBindingSize: number;
  readonly maxBufferSize: number;
}

/** The device as kernel forms see it: optional features granted, limits, and the adapter (to pick variants by it). */
export interface WebGpuCaps {
  /** `shader-f16`: float16 storage is array<f16> (`enable f16;` is added by `bindings()`). */
  readonly f16: boolean;
  /** `subgroups`: subgroup built-ins may be used (after `enable subgroups;`). */
  readonly subgroups: boolean;
  /** WGSL's `packed_4x8_integer_dot_product` language feature: `dot4I8Packed`/`dot4U8Packed` may be called (absent: false). */
  readonly packedDot4?: boolean;
  /** The smallest subgroup size the adapter may use (4, WebGPU's minimum, when it does not say): every subgroup has at least this many invocations. */
  readonly subgroupMinSize: number;
  readonly limits: WebGpuLimits;
  /** adapter.info.vendor and .architecture, e.g. 'google' / 'swiftshader', 'nvidia' / 'hopper'. */
  readonly vendor: string;
  readonly architecture: string;
}

/** One compute dispatch of a generated WGSL module. */
export interface WgslKernel {
  /** A complete WGSL module with a `@compute` entry point named `main`. */
  readonly source: string;
  /** Workgroup counts [x, y?, z?]; use `grid()` from ./grid.ts to stay within the per-dimension limit. */
  readonly workgroups: readonly number[];
  /** The op users called (e.g. 'add' for the shared map op), for errors; defaults to the OpDef's name. */
  readonly label?: string;
  /**
   * Messages of the device-side checks this kernel makes (see the note at the top): check k
   * (1-based) fails with `checks[k - 1]`, `{value}` and `{at}` filled in. The kernel then has the
   * status binding.
   */
  readonly checks?: readonly string[];
  /** The words of its parameter block (see ./params.ts), when its source declares one. */
  readonly params?: Uint32Array<ArrayBuffer>;
}

/**
 * Kernels dispatched one after another in one op, e.g. a large reduction as partial results and
 * then their combination. Every pass binds the same inputs, outputs and scratch buffers (each pass
 * its own status binding when it has checks); a pass sees all writes of the passes before it.
 * Scratch buffers are uninitialised and live only for the op.
 */
export interface WgslProgram {
  /** Sizes of the scratch buffers, bound after the outputs. */
  readonly scratch: readonly { readonly bytes: number }[];
  readonly passes: readonly WgslKernel[];
  /** As WgslKernel's; a pass's own label wins for errors in that pass. */
  readonly label?: string;
}

/** What an op's `webgpu` form returns. */
export type WgslForm = WgslKernel | WgslProgram;

/**
 * Declaration of the status binding at `binding` and of `fail_check(check: u32, value: i32, at: u32)`,
 * which records the dispatch's first failed check (see the note at the top).
 */
export function checkBinding(binding: number): string {
  return `@group(0) @binding(${binding}) var<storage, read_write> sn_status: array<atomic<u32>, 4>;

fn fail_check(check: u32, value: i32, at: u32) {
  loop {
    // Weak: it may fail spuriously while the slot is still free, so retry until someone has it.
    let r = atomicCompareExchangeWeak(&sn_status[0], 0u, check);
    if (r.exchanged) {
      atomicStore(&sn_status[1], bitcast<u32>(value));
      atomicStore(&sn_status[2], at);
      return;
    }
    if (r.old_value != 0u) { return; }
  }
}`;
}
