// Integer reference: exact arithmetic in BigInt, wrapped to the dtype's width as C's fixed-width
// integers wrap (two's complement). Imports nothing from src/.

export type IntDType = 'int32' | 'int8' | 'uint8' | 'bool';

export const INT_RANGE: Record<IntDType, [number, number]> = {
  int32: [-(2 ** 31), 2 ** 31 - 1],
  int8: [-128, 127],
  uint8: [0, 255],
  bool: [0, 1],
};

/** `v` wrapped to `dtype` (bool: nonzero is 1). */
export function wrapInt(dtype: IntDType, v: bigint): number {
  switch (dtype) {
    case 'int32':
      return Number(BigInt.asIntN(32, v));
    case 'int8':
      return Number(BigInt.asIntN(8, v));
    case 'uint8':
      return Number(BigInt.asUintN(8, v));
    case 'bool':
      return v !== 0n ? 1 : 0;
  }
}

/** Truncating division; by zero gives 0 (the library's defined result on every backend). */
export function divTruncRef(a: bigint, b: bigint): bigint {
  return b === 0n ? 0n : a / b;
}

/** Division rounding toward −∞ (Python's //, PyTorch's roundingMode 'floor'); by zero gives 0. */
export function divFloorRef(a: bigint, b: bigint): bigint {
  if (b === 0n) return 0n;
  const q = a / b;
  return a % b !== 0n && a < 0n !== b < 0n ? q - 1n : q;
}

/** a to the power b modulo 2³² (as int32); a negative power truncates 1/a^|b|: ±1 for a = ±1, else 0. */
export function powRef(a: bigint, b: bigint): bigint {
  if (b < 0n) return a === 1n ? 1n : a === -1n ? (b % 2n === 0n ? 1n : -1n) : 0n;
  let r = 1n;
  for (let i = 0n; i < b; i++) r = BigInt.asIntN(32, r * a);
  return r;
}

/** A float converted to an integer dtype: truncated toward zero, wrapped modulo 2³² then to the width; NaN and ±∞ give 0. */
export function floatToIntRef(dtype: IntDType, v: number): number {
  if (dtype === 'bool') return v !== 0 ? 1 : 0;
  if (!Number.isFinite(v)) return 0;
  return wrapInt(dtype, BigInt.asIntN(32, BigInt(Math.trunc(v))));
}
