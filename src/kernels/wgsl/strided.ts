// Index math for strided views, with shapes and strides baked in as constants.
import type { KernelParams } from './params.js';

/**
 * WGSL statements splitting the row-major flat index `e` (a u32 expression) over `shape` into
 * `${name}0`, `${name}1`, … (u32); returns the statements and the index names.
 */
export function unravel(e: string, shape: readonly number[], name = 'i'): { lines: string[]; idx: string[] } {
  const rank = shape.length;
  if (rank === 0) return { lines: [], idx: [] };
  if (rank === 1) return { lines: [`let ${name}0 = ${e};`], idx: [`${name}0`] };
  const lines = [`var ${name}_rest = ${e};`];
  for (let d = rank - 1; d >= 1; d--) lines.push(`let ${name}${d} = ${name}_rest % ${shape[d]}u; ${name}_rest = ${name}_rest / ${shape[d]}u;`);
  lines.push(`let ${name}0 = ${name}_rest;`);
  return { lines, idx: shape.map((_, d) => `${name}${d}`) };
}

/** The u32 expression `offset + Σ idx[d]·strides[d]`, leaving out stride-0 (broadcast) dims. */
export function offsetOf(offset: number, strides: readonly number[], idx: readonly string[]): string {
  const terms = strides.flatMap((s, d) => (s === 0 ? [] : [s === 1 ? idx[d]! : `${idx[d]} * ${s}u`]));
  if (offset !== 0 || terms.length === 0) terms.unshift(`${offset}u`);
  return terms.join(' + ');
}

/**
 * `unravel` with the sizes read from the kernel's parameter block (see ./params.ts): the source then
 * serves every shape of this rank, at the cost of divisions by a value the compiler does not know.
 */
export function unravelParams(e: string, shape: readonly number[], params: KernelParams, name = 'i'): { lines: string[]; idx: string[] } {
  const rank = shape.length;
  if (rank <= 1) return unravel(e, shape, name);
  const lines = [`var ${name}_rest = ${e};`];
  for (let d = rank - 1; d >= 1; d--) {
    const size = params.u32(shape[d]!);
    lines.push(`let ${name}${d} = ${name}_rest % ${size}; ${name}_rest = ${name}_rest / ${size};`);
  }
  lines.push(`let ${name}0 = ${name}_rest;`);
  return { lines, idx: shape.map((_, d) => `${name}${d}`) };
}

/** `offsetOf` with `offset` and the strides other than 0 and 1 read from the parameter block. */
export function offsetOfParams(offset: number, strides: readonly number[], idx: readonly string[], params: KernelParams): string {
  const terms = strides.flatMap((s, d) => (s === 0 ? [] : [s === 1 ? idx[d]! : `${idx[d]} * ${params.u32(s)}`]));
  return [...terms, params.u32(offset)].join(' + ');
}
