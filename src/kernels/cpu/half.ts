import { f16round } from '@petamoriken/float16';
import type { CpuView } from '../../ops/op.js';
import { kernelOverrides } from './overrides.js';

// float16 on the CPU backend: values are float32 numbers that binary16 represents exactly (src/tensor/dtype.ts), so
// every float32 kernel computes on them as they are (f32 arithmetic and accumulation), and the backend rounds each
// float16 output once after its kernel (`roundToHalf`).

/**
 * Rounds the elements of a float16 view (`data` from `offset` with `shape` and `strides`: the span it reaches, not the
 * whole storage, which may be a larger slot of a compiled plan) to binary16 values in place: round half to even,
 * subnormals, ±∞ and NaN kept. The wasm kernel where the CPU runs WebAssembly and the data is in its heap, else
 * JavaScript's f16round, the reference.
 */
export function roundToHalf(data: Float32Array, shape: readonly number[], strides: readonly number[], offset: number): void {
  let lo = offset, hi = offset;
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 0) return;
    const reach = (shape[d]! - 1) * strides[d]!;
    if (reach < 0) lo += reach;
    else hi += reach;
  }
  const span = data.subarray(lo, hi + 1), done = rounded;
  rounded = undefined;
  if (done && done.buffer === span.buffer && done.begin === span.byteOffset && done.bytes === span.byteLength) return;
  if (kernelOverrides.roundHalf?.(span)) return;
  for (let i = 0; i < span.length; i++) span[i] = f16round(span[i]!);
}

/**
 * The span that the kernel now running last wrote as binary16 values itself (the wasm elementwise kernel rounds every
 * float16 node: an elementwise op, or a GEMM's epilogue, its last step): `roundToHalf` skips an output span it matches
 * exactly, and forgets it. The backend forgets it before every kernel, so it never outlives the kernel that wrote it.
 */
let rounded: { readonly buffer: ArrayBufferLike; readonly begin: number; readonly bytes: number } | undefined;

/** Notes that `length` float16 values of `data` from `offset` hold binary16 values (see `rounded`). */
export function noteRoundedHalf(data: Float32Array, offset: number, length: number): void {
  rounded = { buffer: data.buffer, begin: data.byteOffset + offset * 4, bytes: length * 4 };
}

/** Forgets the noted span: the backend calls it as each kernel starts (and before a kernel's JavaScript retry). */
export function forgetRoundedHalf(): void {
  rounded = undefined;
}

/** A float16 view as the float32 kernels take it: the same numbers (the backend rounds float16 outputs after the kernel). */
function asFloat32(v: CpuView): CpuView;
function asFloat32(v: CpuView | undefined): CpuView | undefined;
function asFloat32(v: CpuView | undefined): CpuView | undefined {
  return v?.dtype === 'float16' ? { ...v, dtype: 'float32' } : v;
}

type Overrides = typeof kernelOverrides;

/**
 * The float32-only row kernels (softmax, layerNorm) taking float16 operands too, computed in f32 (their
 * statistics as the float32 kernel accumulates them): `setCpuKernels` installs these.
 */
export function softmaxTakingHalf(softmax: NonNullable<Overrides['softmax']>): NonNullable<Overrides['softmax']> {
  return (inputs, prologue, dims, log, out) => softmax(inputs.map((v) => asFloat32(v)), prologue, dims, log, asFloat32(out));
}
export function blockNormTakingHalf(blockNorm: NonNullable<Overrides['blockNorm']>): NonNullable<Overrides['blockNorm']> {
  return (x, weight, bias, layout, eps, out) => blockNorm(asFloat32(x), asFloat32(weight), asFloat32(bias), layout, eps, asFloat32(out));
}
