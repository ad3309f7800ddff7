import type { DeviceName } from '../backend/backend.js';
import type { DType } from '../tensor/dtype.js';
import { fmtShape } from '../errors.js';

export interface Tolerance {
  /** Relative tolerance: |actual − expected| ≤ atol + rtol·|expected|. */
  rtol: number;
  atol: number;
}

/**
 * Default tolerances against a float64 reference, per dtype. float32: a few ulps (results are
 * computed in double and rounded once, or accumulated in float32 for matmul/conv); float16: half an
 * ulp is ~4.9e-4 relative; integers and bool: exact.
 */
export const TOLERANCE: Readonly<Record<DType, Tolerance>> = {
  float32: { rtol: 1e-5, atol: 1e-6 },
  float16: { rtol: 2e-3, atol: 1e-3 },
  int32: { rtol: 0, atol: 0 },
  int8: { rtol: 0, atol: 0 },
  uint8: { rtol: 0, atol: 0 },
  bool: { rtol: 0, atol: 0 },
};

/**
 * Tolerances per backend and dtype. WebGPU computes float math in f32 with the GPU's built-ins,
 * which WGSL does not require to be correctly rounded (exp and pow within 3 + 2·|x| ulps, so tens
 * of ulps for large arguments; division 2.5 ulps; log near 1 only to 2^-21 absolute), where the
 * CPU computes in double and rounds once. float16 keeps its tolerance: an f32 result rounded to
 * binary16 is off by at most one binary16 ulp more.
 */
export const TOLERANCES: Readonly<Record<DeviceName, Readonly<Record<DType, Tolerance>>>> = {
  cpu: TOLERANCE,
  webgpu: { ...TOLERANCE, float32: { rtol: 2e-5, atol: 1e-6 } },
};

function unravel(i: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = i % shape[d]!;
    i = Math.floor(i / shape[d]!);
  }
  return idx;
}

/**
 * Throws a descriptive error unless every element matches within tolerance. NaN matches NaN and
 * infinities must match exactly. `shape` (optional) turns flat positions into indices in the message.
 */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  opts: Partial<Tolerance> & { shape?: readonly number[]; what?: string } = {},
): void {
  const { rtol = TOLERANCE.float32.rtol, atol = TOLERANCE.float32.atol, shape, what = 'values' } = opts;
  if (actual.length !== expected.length) {
    throw new Error(`${what}: expected ${expected.length} elements${shape ? ` (shape ${fmtShape(shape)})` : ''}, got ${actual.length}`);
  }
  let bad = 0, first = -1, worst = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = Number(actual[i]), e = Number(expected[i]);
    const ok = Number.isNaN(e) ? Number.isNaN(a) : !Number.isFinite(e) ? a === e : Math.abs(a - e) <= atol + rtol * Math.abs(e);
    if (!ok) {
      bad++;
      if (first < 0) first = i;
      if (Number.isFinite(a - e)) worst = Math.max(worst, Math.abs(a - e));
    }
  }
  if (bad > 0) {
    const at = shape ? `index [${unravel(first, shape).join(', ')}]` : `position ${first}`;
    throw new Error(
      `${what}: ${bad} of ${expected.length} elements differ (rtol ${rtol}, atol ${atol}); first at ${at}: got ${actual[first]}, expected ${expected[first]}; max abs error ${worst}`,
    );
  }
}
