import { SinterError } from '../errors.js';
import { activeTrace } from '../jit/trace.js';
import { type DType, isFloat } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';

// Automatic mixed precision, as torch.autocast: inside `autocast('float16', fn)` each op casts its floating-point
// tensor inputs by PyTorch's lists (aten/src/ATen/autocast_mode.h, the CUDA lists; batch_norm as the MPS list has it):
//   - lower precision (float16): matmuls and convolutions, which gain most and lose little (their kernels
//     accumulate in float32 either way);
//   - float32: ops whose results float16 would spoil (exp/log/pow and friends, softmax, norms, sums and products,
//     cumulative sums, upsampling);
//   - every other op runs as called: in the widest dtype of its inputs, by the ordinary type promotion.
// The casts are ordinary ops, so under `jit` they are traced into the graph (a cast of a captured weight folds to a
// float16 constant), and `report()` shows which kernel ran in which dtype. Ops reach `autocastInputs` from their one
// entry point (`apply`, and the elementwise builders, whose expressions are typed by their inputs).

/** The dtypes autocast lowers to. */
export type AutocastDType = 'float16';

/** Ops computed in the autocast dtype (PyTorch's lower_precision_fp list), by sinter's op names. */
export const AUTOCAST_LOWER_PRECISION: ReadonlySet<string> = new Set([
  'matmul', 'linear', 'conv2d', 'convTranspose2d', 'addmm', 'baddbmm', 'scaledDotProductAttention', 'prelu',
]);

/** Ops computed in float32 under autocast (PyTorch's fp32 and fp32_set_opt_dtype lists), by sinter's op names. */
export const AUTOCAST_FLOAT32: ReadonlySet<string> = new Set([
  // elementwise
  'acos', 'asin', 'cosh', 'erfinv', 'exp', 'expm1', 'log', 'log10', 'log2', 'log1p', 'reciprocal', 'rsqrt', 'sinh', 'tan', 'pow', 'softplus',
  // norms (batch_norm and instance norm as on PyTorch's MPS list)
  'layerNorm', 'groupNorm', 'batchNorm', 'instanceNorm',
  // softmax, sums and products
  'softmax', 'logSoftmax', 'sum', 'prod', 'cumsum', 'cumprod', 'logsumexp',
  // upsampling
  'interpolate',
]);

let active: AutocastDType | null = null;
/**
 * The copies eager casts made in the innermost `autocast` region: each is read by the op it was made for and by
 * nothing else, so the region frees them when it ends (as PyTorch's autocast drops its casts when the region ends).
 * Under jit the casts are graph nodes and the trace frees its own tensors.
 */
let made: Tensor[] = [];

/** The dtype autocast lowers to now, or null outside `autocast`. */
export function autocastDType(): AutocastDType | null {
  return active;
}

export interface AutocastOptions {
  /** false runs `fn` with autocast off (torch.autocast(enabled=False)), e.g. to keep a region in float32. */
  enabled?: boolean;
}

/**
 * Runs `fn` with automatic mixed precision (torch.autocast): matmuls and convolutions in `dtype`, numerically
 * sensitive ops in float32, the rest in their inputs' dtype (see AUTOCAST_LOWER_PRECISION, AUTOCAST_FLOAT32).
 * Returns what `fn` returns. `fn` must be synchronous: autocast is off again once it returns. Nests; a jitted
 * function called inside traces and caches a plan per autocast state.
 */
export function autocast<T>(dtype: AutocastDType, fn: () => T, options: AutocastOptions = {}): T {
  if (dtype !== 'float16') throw new SinterError('autocast', `dtype must be 'float16', got ${JSON.stringify(dtype)}`);
  if (typeof fn !== 'function') throw new SinterError('autocast', `expects a function to run, got ${fn === null ? 'null' : typeof fn}`);
  const enabled = options.enabled ?? true;
  if (typeof enabled !== 'boolean') throw new SinterError('autocast', `enabled must be a boolean, got ${JSON.stringify(enabled)}`);
  const saved = active, savedMade = made;
  active = enabled ? dtype : null;
  made = [];
  let result: T;
  try {
    result = fn();
  } finally {
    for (const t of made) t.dispose();
    active = saved;
    made = savedMade;
  }
  if (result !== null && typeof (result as { then?: unknown })?.then === 'function') {
    throw new SinterError('autocast', 'fn returned a Promise; autocast applies to synchronous code only (it ended when fn returned, before the awaited part ran)');
  }
  return result;
}

/** The dtype op `name` computes in under autocast: the autocast dtype, float32, or null (as called). */
export function autocastPolicy(name: string): DType | null {
  if (active === null) return null;
  if (AUTOCAST_LOWER_PRECISION.has(name)) return active;
  if (AUTOCAST_FLOAT32.has(name)) return 'float32';
  return null;
}

/**
 * `args` with each floating-point tensor cast to the dtype op `name` computes in under autocast (other values, and
 * everything outside autocast, as given). Called by every op's entry point.
 */
export function autocastInputs<T>(name: string, args: readonly T[]): T[] {
  const to = autocastPolicy(name);
  if (to === null) return args as T[];
  return args.map((a) => {
    if (!(a instanceof Tensor) || !isFloat(a.dtype) || a.dtype === to) return a;
    const cast = a.to(to);
    if (!activeTrace()) made.push(cast);
    return cast as T;
  });
}

/** Runs a jitted function's trace of `fn`: under `dtype` when the jit was made with `{ autocast }`, else in the caller's state. */
export function traceAutocast<T>(dtype: AutocastDType | undefined, fn: () => T): T {
  return dtype !== undefined ? autocast(dtype, fn) : fn();
}

/**
 * What a jitted function adds to its signature key: the caller's autocast state, unless the jit was made with
 * `{ autocast }` (then every call traces under it), so plans traced inside and outside `sn.autocast` are kept apart.
 */
export function autocastKey(dtype: AutocastDType | undefined): string {
  return dtype === undefined && active !== null ? ` autocast:${active}` : '';
}
