import { f16round } from '@petamoriken/float16';
import type { CpuView } from '../../ops/op.js';
import { isContiguous, numel, stridedOffsets } from '../../tensor/shape.js';
import { kernelOverrides } from './overrides.js';

// float16 on the CPU backend: a storage holds binary16 bits, 2 bytes a value (a Uint16Array over the WebAssembly heap).
// Kernels compute on float32 views (f32 in wasm, double in JS): the backend widens each float16 operand into float32
// scratch before a kernel and narrows each float16 result back after it (src/backend/cpu.ts), the narrowing being
// the one rounding of the result to binary16. Kernel views of float16 tensors keep dtype 'float16' (a fused
// expression still rounds its float16 nodes) with float32 data.

let values: Float32Array | undefined;
/** The value of every binary16 bit pattern (256 KiB, built once): the JavaScript widening reads it. */
function halfValues(): Float32Array {
  if (!values) {
    values = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) {
      const e = (bits >> 10) & 31, f = bits & 1023, sign = bits & 0x8000 ? -1 : 1;
      values[bits] = e === 31 ? (f ? NaN : sign * Infinity) : sign * (e ? 1024 + f : f) * 2 ** ((e || 1) - 25);
    }
  }
  return values;
}

const bitsOf = new Float32Array(1), bitsAs = new Uint32Array(bitsOf.buffer);
/** The binary16 bits of a binary16 value (a float32 number binary16 represents exactly; NaN as the quiet 0x7e00 with its sign). */
function bitsOfHalfValue(v: number): number {
  bitsOf[0] = v;
  const b = bitsAs[0]!, sign = (b >>> 16) & 0x8000, e = (b >>> 23) & 255;
  if (e === 255) return sign | (b & 0x7fffff ? 0x7e00 : 0x7c00);
  // Normal binary16 (float32 exponent ≥ 113): exponent rebased and fraction cut to 10 bits; else a subnormal, |v|·2²⁴ exactly.
  return sign | (e >= 113 ? ((e - 112) << 10) | ((b >>> 13) & 1023) : Math.abs(bitsOf[0]!) * 2 ** 24);
}

/** Widens binary16 bits to float32 values: all of `dst` from as many of `src` (wasm where both are in its heap, else JS). */
export function widenHalf(src: Uint16Array, dst: Float32Array): void {
  const table = halfValues();
  for (let i = kernelOverrides.widenHalf?.(src, dst) ?? 0; i < dst.length; i++) dst[i] = table[src[i]!]!;
}

/**
 * How `narrowHalf` treats its float32 values: 'round' them half to even; 'round in place', leaving the rounded values
 * in the source too (float32 scratch then equals the bits it was narrowed into); 'exact': they are binary16 values
 * already (only packed, where wasm runs it).
 */
export type NarrowMode = 'round' | 'round in place' | 'exact';

/**
 * Narrows float32 values to binary16 bits, rounding half to even (subnormals, overflow to ±∞, NaN kept; in JS by
 * f16round, the reference): all of `dst` from as many of `src` (wasm where both are in its heap, else JS).
 */
export function narrowHalf(src: Float32Array, dst: Uint16Array, mode: NarrowMode = 'round'): void {
  for (let i = kernelOverrides.narrowHalf?.(src, dst, mode) ?? 0; i < dst.length; i++) {
    const r = f16round(src[i]!);
    if (mode === 'round in place') src[i] = r;
    dst[i] = bitsOfHalfValue(r);
  }
}

/** A float16 view's values as float32 numbers in row-major order, from its storage's binary16 bits, in one pass (readbacks). */
export function gatherHalf(src: Uint16Array, shape: readonly number[], strides: readonly number[], offset: number): Float32Array {
  const n = numel(shape), out = new Float32Array(n), table = halfValues();
  if (isContiguous(shape, strides)) {
    for (let i = 0; i < n; i++) out[i] = table[src[offset + i]!]!;
    return out;
  }
  const offsets = stridedOffsets(shape, strides, offset);
  for (let i = 0; i < n; i++) out[i] = table[src[offsets[i]!]!]!;
  return out;
}

/**
 * The span of float32 scratch that the kernel now running wrote as binary16 values itself (the wasm elementwise
 * kernel rounds every float16 node: an elementwise op, or a GEMM's epilogue, its last step): the backend then only
 * packs that output (`takeRoundedHalf`). The backend forgets it before every kernel, so it never outlives the kernel that wrote it.
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

/** Whether `span` is exactly the span noted as binary16 values; forgets the note either way. */
export function takeRoundedHalf(span: Float32Array): boolean {
  const done = rounded;
  rounded = undefined;
  return done !== undefined && done.buffer === span.buffer && done.begin === span.byteOffset && done.bytes === span.byteLength;
}

/** A float16 view as the float32-only kernels take it: the same float32 numbers (the backend narrows float16 outputs after the kernel). */
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
