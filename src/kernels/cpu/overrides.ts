import type { Expr } from '../../ops/expr.js';
import type { NarrowMode } from './half.js';
import type { HostArray } from '../../tensor/dtype.js';
import type { Conv2dAttrs, ConvTranspose2dAttrs } from '../../ops/conv.js';
import type { CpuView } from '../../ops/op.js';
import type { Matrix, OutMatrix } from './gemm.js';
import type { BlockLayout } from './norm.js';
import type { ReduceKind } from './reduce.js';
import type { Window2d } from './pool.js';

/**
 * Faster forms of the CPU kernels that the CPU backend installs when it runs WebAssembly (src/backend/cpu.ts,
 * src/kernels/wasm/): each returns false to leave its operands to the JavaScript kernel, the reference path.
 */
export const kernelOverrides: {
  gemm?: (m: number, n: number, k: number, a: Matrix, b: Matrix, c: OutMatrix, accumulate: boolean) => boolean;
  conv2d?: (x: CpuView, w: CpuView, bias: CpuView | undefined, a: Conv2dAttrs, out: CpuView) => boolean;
  convTranspose2d?: (x: CpuView, w: CpuView, bias: CpuView | undefined, a: ConvTranspose2dAttrs, out: CpuView) => boolean;
  map?: (expr: Expr, inputs: readonly CpuView[], out: CpuView) => boolean;
  softmax?: (inputs: readonly CpuView[], prologue: Expr | undefined, dims: readonly number[], log: boolean, out: CpuView) => boolean;
  blockNorm?: (x: CpuView, weight: CpuView | undefined, bias: CpuView | undefined, layout: BlockLayout, eps: number, out: CpuView) => boolean;
  reduce?: (kind: ReduceKind, inputs: readonly CpuView[], prologue: Expr | undefined, dims: readonly number[], correction: number, out: CpuView) => boolean;
  gatherSeparable?: (x: CpuView, tables: readonly Int32Array[], out: HostArray, fill: number) => boolean;
  pool2d?: (kind: 'max' | 'avg' | 'adaptiveAvg', x: CpuView, window: (Window2d & { readonly dilation?: readonly [number, number]; readonly countIncludePad?: boolean; readonly divisorOverride?: number | null }) | undefined, out: CpuView) => boolean;
  /** Widens binary16 bits to float32 values (float16 operands, before a kernel): returns how many from the start it converted, the rest left to JS. */
  widenHalf?: (src: Uint16Array, dst: Float32Array) => number;
  /** Narrows float32 values to binary16 bits (float16 results, after a kernel; see NarrowMode): returns how many it converted. */
  narrowHalf?: (src: Float32Array, dst: Uint16Array, mode: NarrowMode) => number;
} = {};
