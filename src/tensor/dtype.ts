import { f16round } from '@petamoriken/float16';
import { SinterError } from '../errors.js';

export type DType = 'float32' | 'float16' | 'int32' | 'int8' | 'uint8' | 'bool';
export const DTYPES: readonly DType[] = ['float32', 'float16', 'int32', 'int8', 'uint8', 'bool'];

/**
 * Host arrays per dtype. float16 values live on the host as float32 numbers that are
 * exactly representable in binary16 (rounded on every write), so arithmetic stays plain.
 */
export type TypedArrayFor<D extends DType> = D extends 'float32' | 'float16'
  ? Float32Array
  : D extends 'int32'
    ? Int32Array
    : D extends 'int8'
      ? Int8Array
      : Uint8Array;
export type HostArray = Float32Array | Int32Array | Int8Array | Uint8Array;

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && (DTYPES as readonly string[]).includes(x);
}

export function isFloat(d: DType): boolean {
  return d === 'float32' || d === 'float16';
}
export function isInt(d: DType): boolean {
  return d === 'int32' || d === 'int8' || d === 'uint8';
}

/** Bytes per element as stored on a device (float16 is 2 even though the host keeps float32). */
export function itemSize(d: DType): number {
  switch (d) {
    case 'float32':
    case 'int32':
      return 4;
    case 'float16':
      return 2;
    default:
      return 1;
  }
}

export function allocHost(d: DType, n: number): HostArray {
  switch (d) {
    case 'float32':
    case 'float16':
      return new Float32Array(n);
    case 'int32':
      return new Int32Array(n);
    case 'int8':
      return new Int8Array(n);
    default:
      return new Uint8Array(n);
  }
}

/** The value a number becomes when stored as dtype `d` (wrapping for ints, like a C cast). */
export function castValue(d: DType, v: number): number {
  switch (d) {
    case 'float32':
      return Math.fround(v);
    case 'float16':
      return f16round(v);
    case 'int32':
      return Number.isFinite(v) ? Math.trunc(v) | 0 : 0;
    case 'int8':
      return Number.isFinite(v) ? (Math.trunc(v) << 24) >> 24 : 0;
    case 'uint8':
      return Number.isFinite(v) ? Math.trunc(v) & 255 : 0;
    case 'bool':
      return v !== 0 ? 1 : 0; // NaN is truthy, as in PyTorch
  }
}

/** Fills a host array from arbitrary numbers, applying the dtype's cast. */
export function toHost(d: DType, values: ArrayLike<number>): HostArray {
  const out = allocHost(d, values.length);
  if (d === 'float32') out.set(values);
  else for (let i = 0; i < values.length; i++) out[i] = castValue(d, values[i]!);
  return out;
}

const RANK: Record<DType, number> = { bool: 0, uint8: 1, int8: 1, int32: 2, float16: 3, float32: 4 };

/** PyTorch's type promotion for two tensor operands (int16/int64 are not dtypes here: they become int32). */
export function promoteTypes(a: DType, b: DType): DType {
  if (a === b) return a;
  if ((a === 'int8' && b === 'uint8') || (a === 'uint8' && b === 'int8')) return 'int32';
  return RANK[a] >= RANK[b] ? a : b;
}

/** PyTorch's promotion of a tensor with a Python-style scalar: only a category change promotes. */
export function promoteWithScalar(t: DType, scalar: number | boolean): DType {
  if (typeof scalar === 'boolean') return t;
  if (!Number.isInteger(scalar)) return isFloat(t) ? t : 'float32';
  return t === 'bool' ? 'int32' : t;
}

/** Result dtype for ops that only make sense on floats (exp, sqrt, …): ints and bool become float32. */
export function floatResult(d: DType): DType {
  return isFloat(d) ? d : 'float32';
}

export function checkDType(op: string, d: unknown): DType {
  if (!isDType(d)) throw new SinterError(op, `unknown dtype ${JSON.stringify(d)}; expected one of ${DTYPES.join(', ')}`);
  return d;
}
