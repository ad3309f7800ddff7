import { type DType, castValue } from '../../tensor/dtype.js';
import type { WebGpuCaps } from './kernel.js';

// How each dtype is stored in WebGPU buffers and computed in WGSL. Kernels compute floats in f32
// (float16 too: loads widen, stores round to binary16 with `sn_f16`, as the CPU rounds its doubles)
// and ints and bool in i32 (bool as 0/1); narrow ints wrap on store. On adapters with shader-f16 a
// kernel may compute float16 in f16 instead (elementwise kernels do, see ./map.ts): it asks
// `computeType(d, caps)`, and loads, literals and rounding then take that type.

/** The WGSL type elements of a dtype are computed in. */
export type WgslScalar = 'f32' | 'f16' | 'i32';

/**
 * The type a kernel computes elements of `d` in: f32 for floats, i32 for ints and bool; with `caps`
 * of an adapter with shader-f16, float16 in f16 (kernels that accumulate, as reductions and GEMMs
 * do, leave `caps` out and stay in f32).
 */
export function computeType(d: DType, caps?: WebGpuCaps): WgslScalar {
  if (d === 'float16') return caps?.f16 ? 'f16' : 'f32';
  return d === 'float32' ? 'f32' : 'i32';
}

/** How many elements one 32-bit word of an output holds: the elements one invocation must write together. */
export function elementsPerWord(d: DType, caps: WebGpuCaps): number {
  switch (d) {
    case 'float32':
    case 'int32':
      return 1;
    case 'float16':
      return caps.f16 ? 1 : 2;
    default:
      return 4;
  }
}

function arrayType(d: DType, caps: WebGpuCaps): string {
  switch (d) {
    case 'float32':
      return 'f32';
    case 'int32':
      return 'i32';
    case 'float16':
      return caps.f16 ? 'f16' : 'u32';
    default:
      return 'u32';
  }
}

/**
 * Declarations of the contract's bindings: inputs `in0`, `in1`, … (read-only) at bindings 0..n-1,
 * then outputs `out0`, … (read-write), with `enable f16;` first when float16 is stored natively.
 * `vec4[i]` declares binding i (inputs then outputs) as an array of vec4 of a float32 or int32
 * dtype (16-byte loads and stores), or of float16 stored natively (8 bytes).
 */
export function bindings(inputs: readonly DType[], outputs: readonly DType[], caps: WebGpuCaps, vec4: readonly boolean[] = []): string {
  const lines: string[] = [];
  if (caps.f16 && [...inputs, ...outputs].includes('float16')) lines.push('enable f16;');
  const type = (d: DType, i: number) => (vec4[i] ? `vec4<${arrayType(d, caps)}>` : arrayType(d, caps));
  inputs.forEach((d, k) => lines.push(`@group(0) @binding(${k}) var<storage, read> in${k}: array<${type(d, k)}>;`));
  outputs.forEach((d, k) => lines.push(`@group(0) @binding(${inputs.length + k}) var<storage, read_write> out${k}: array<${type(d, inputs.length + k)}>;`));
  return lines.join('\n');
}

/**
 * A WGSL expression for element `i` (a u32 name; it is repeated) of buffer `buf` of dtype `d`, as
 * `type` (default `computeType(d)`; f16 only where float16 is stored natively).
 */
export function loadElement(buf: string, d: DType, i: string, caps: WebGpuCaps, type: WgslScalar = computeType(d)): string {
  switch (d) {
    case 'float32':
    case 'int32':
      return `${buf}[${i}]`;
    case 'float16':
      if (!caps.f16) return `sn_h2f(extractBits(${buf}[${i} >> 1u], (${i} & 1u) * 16u, 16u))`;
      return type === 'f16' ? `${buf}[${i}]` : `f32(${buf}[${i}])`;
    case 'int8':
      return `extractBits(bitcast<i32>(${buf}[${i} >> 2u]), (${i} & 3u) * 8u, 8u)`;
    default:
      return `i32(extractBits(${buf}[${i} >> 2u], (${i} & 3u) * 8u, 8u))`;
  }
}

/**
 * The word to store at one index of an output of dtype `d`, from `elementsPerWord(d)` values
 * already rounded to `d` (see `roundTo`), lowest element first; a float16 value may be an f16.
 */
export function packWord(d: DType, values: readonly string[], caps: WebGpuCaps): string {
  switch (d) {
    case 'float32':
    case 'int32':
      return values[0]!;
    case 'float16':
      return caps.f16 ? `f16(${values[0]})` : `(sn_f2h(${values[0]}) | (sn_f2h(${values[1]}) << 16u))`;
    default:
      return `(${values.map((v, j) => `((bitcast<u32>(${v}) & 255u) << ${8 * j}u)`).join(' | ')})`;
  }
}

/**
 * `e` (of `type`, default `computeType(d)`) rounded to what storing it as `d` keeps: binary16 rounding,
 * int8/uint8 wrapping, bool as 0/1. An f16 is already binary16.
 */
export function roundTo(d: DType, e: string, type: WgslScalar = computeType(d)): string {
  switch (d) {
    case 'float16':
      return type === 'f16' ? e : `sn_f16(${e})`;
    case 'int8':
      return `extractBits(i32(${e}), 0u, 8u)`;
    case 'uint8':
      return `(i32(${e}) & 255)`;
    case 'bool':
      return `i32(${e} != 0)`;
    default:
      return e;
  }
}

/**
 * `e` of dtype `from` converted to dtype `to` as a cast does on the CPU: floats to ints truncate and
 * wrap modulo 2³² (NaN and ±∞ give 0), anything to bool is `!= 0`. Narrowing is left to `roundTo`.
 */
export function convert(from: DType, to: DType, e: string): string {
  if (to === 'bool') return `i32(!(${e} == 0))`; // not `!= 0`: NaN is true, and GPUs may compare it ordered
  const a = computeType(from), b = computeType(to);
  if (a === b) return e;
  return b === 'f32' ? `f32(${e})` : `sn_f2i(${e})`;
}

/**
 * A literal of WGSL type `t`: floats rounded to f32 (f16: to binary16, nearest even; NaN and ±∞ from
 * prelude helpers); ints wrap like an int32 cast, ±∞ saturates.
 */
export function literal(v: number, t: WgslScalar): string {
  if (t === 'f16') {
    const h = castValue('float16', v);
    return Number.isFinite(h) ? `(${Object.is(h, -0) ? '-0' : String(h)}h)` : `f16(${literal(h, 'f32')})`;
  }
  if (t === 'f32') {
    const f = Math.fround(v);
    if (Number.isNaN(f)) return 'sn_nan()';
    if (!Number.isFinite(f)) return f > 0 ? 'sn_inf()' : '(-sn_inf())';
    return `(${Object.is(f, -0) ? '-0' : String(f)}f)`;
  }
  const i = v === Infinity ? 2147483647 : v === -Infinity ? -2147483648 : castValue('int32', v);
  return i === -2147483648 ? '(-2147483647i - 1i)' : `(${i}i)`;
}
