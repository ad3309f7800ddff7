import type { DType } from '../../tensor/dtype.js';

/**
 * The contract between op definitions and the WebGPU backend.
 *
 * An op's `webgpu` form (see OpDef in src/ops/op.ts) receives the layouts of its inputs (strided,
 * possibly broadcast with stride 0) and of its freshly allocated contiguous outputs, plus the
 * device's capabilities, and returns one `WgslKernel`: a complete WGSL module with entry point
 * `main` and the workgroup counts to dispatch. Bindings, all in @group(0):
 *   inputs  0..n-1      `var<storage, read>`        (declare them with `bindings()` from ./dtype.ts)
 *   outputs n..n+m-1    `var<storage, read_write>`
 * Shapes, strides and offsets are baked into the source as constants; the backend caches
 * pipelines by source, so the same layouts reuse one pipeline.
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
}
