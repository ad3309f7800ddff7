import { SinterError } from '../errors.js';
import { castValue, isFloat } from '../tensor/dtype.js';
import { normDim, numel } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { computeType, roundTo } from '../kernels/wgsl/dtype.js';
import { wordKernel } from '../kernels/wgsl/movement.js';
import { KernelParams } from '../kernels/wgsl/params.js';
import { offsetOf, unravel } from '../kernels/wgsl/strided.js';
import { add, eq, gt, ne, sub } from './binary.js';
import { log, exp } from './unary.js';
import { type Dims, type KeepDim, type ReduceOptions, amax, sum } from './reduce.js';
import { isinf, maskedFill } from './masking.js';
import { apply1, checkInputs, defineOp } from './op.js';
import { squeeze, to } from './views.js';

// Reductions built from reduce.ts's kernels (any, all, logsumexp) and the running product.

/** Frees the intermediates of a composite op once its result exists. */
function free(...ts: Tensor[]): void {
  for (const t of ts) t.dispose();
}

/** True where any element over `dim` (all dims by default) is non-zero (NaN counts as non-zero); an empty group is false. */
export function any(x: Tensor, dim?: Dims | ReduceOptions | null, keepdim?: KeepDim): Tensor {
  checkInputs('any', [x]);
  const nz = ne(x, 0), count = sum(nz, dim, keepdim), out = gt(count, 0);
  free(nz, count);
  return out;
}
/** True where every element over `dim` (all dims by default) is non-zero; an empty group is true. */
export function all(x: Tensor, dim?: Dims | ReduceOptions | null, keepdim?: KeepDim): Tensor {
  checkInputs('all', [x]);
  const z = eq(x, 0), count = sum(z, dim, keepdim), out = eq(count, 0);
  free(z, count);
  return out;
}

/**
 * log Σ exp(x) over `dim` (required, as in PyTorch), computed stably: the max is subtracted first
 * (and taken as 0 where it is infinite, so rows of −∞ give −∞ rather than NaN). Ints compute in float32.
 */
export function logsumexp(x: Tensor, dim: Dims | ReduceOptions, keepdim?: KeepDim): Tensor {
  checkInputs('logsumexp', [x]);
  if (dim === undefined || dim === null) throw new SinterError('logsumexp', `dim is required (e.g. logsumexp(x, -1) for the last dim of ${x.describe()})`);
  const opts: ReduceOptions = typeof dim === 'object' && !Array.isArray(dim) ? (dim as ReduceOptions) : { dim: dim as Dims, keepdim: typeof keepdim === 'object' ? keepdim.keepdim : keepdim };
  const xf = isFloat(x.dtype) ? x : to(x, 'float32');
  const m = amax(xf, opts.dim, true);
  const inf = isinf(m), safe = maskedFill(m, inf, 0);
  const shifted = sub(xf, safe), e = exp(shifted), s = sum(e, opts.dim, opts.keepdim ?? false), l = log(s);
  let shift = safe;
  if (!opts.keepdim) shift = squeezeDims(safe, opts.dim, x.ndim);
  const out = add(l, shift);
  free(m, inf, shifted, e, s, l);
  if (shift !== safe) shift.dispose();
  safe.dispose();
  if (xf !== x) xf.dispose();
  return out;
}

/** keepdim's size-1 dims removed again (all dims when `dim` is none). */
function squeezeDims(t: Tensor, dim: Dims | null | undefined, rank: number): Tensor {
  const list = dim === undefined || dim === null || (Array.isArray(dim) && dim.length === 0) ? Array.from({ length: rank }, (_, i) => i) : typeof dim === 'number' ? [dim] : [...dim];
  return rank === 0 ? t : squeeze(t, list.map((d) => normDim('logsumexp', d, rank)));
}

/** Running product along `dim`; ints and bool give int32 (wrapping), floats keep their dtype (accumulated in double on the CPU, f32 on the GPU). */
export const cumprodOp = defineOp<{ dim: number }>({
  name: 'cumprod',
  infer([x]) {
    return [{ shape: [...x!.shape], dtype: isFloat(x!.dtype) ? x!.dtype : 'int32' }];
  },
  cpu([x], { dim }, [out]) {
    const shape = x!.shape.length === 0 ? [1] : x!.shape, strides = x!.shape.length === 0 ? [0] : x!.strides;
    const size = shape[dim]!, inner = numel(shape.slice(dim + 1)), outer = numel(shape.slice(0, dim));
    const o = out!.data, float = isFloat(x!.dtype);
    const other = shape.map((_, d) => d).filter((d) => d !== dim);
    for (let a = 0; a < outer * inner; a++) {
      // The offset of element 0 of this row in x, from its index in the other dims.
      let rest = a, base = x!.offset;
      for (let k = other.length - 1; k >= 0; k--) {
        const d = other[k]!;
        base += (rest % shape[d]!) * strides[d]!;
        rest = Math.floor(rest / shape[d]!);
      }
      const row = Math.floor(a / inner) * size * inner + (a % inner);
      let acc = 1;
      for (let j = 0; j < size; j++) {
        const v = x!.data[base + j * strides[dim]!]!;
        acc = float ? acc * v : Math.imul(acc, v);
        o[row + j * inner] = castValue(out!.dtype, acc);
      }
    }
  },
  webgpu([x], { dim }, [out], caps) {
    const zeroD = x!.shape.length === 0;
    const xs = zeroD ? { ...x!, shape: [1], strides: [0] } : x!, os = zeroD ? { ...out!, shape: [1], strides: [1] } : out!;
    const { lines, idx } = unravel('e', os.shape);
    const t = computeType(out!.dtype);
    // x's offset is a kernel parameter: views anywhere in a buffer share the pipeline.
    const params = new KernelParams();
    const body = [
      ...lines,
      `let base = ${params.u32(xs.offset)};`,
      `var acc = ${t}(1);`,
      `for (var j = 0u; j <= ${idx[dim]}; j++) { acc = acc * ${t}(load0(${offsetOf(0, xs.strides, idx.map((v, d) => (d === dim ? 'j' : v)))} + base)); }`,
      `return ${roundTo(out!.dtype, 'acc')};`,
    ];
    return wordKernel('cumprod', [x!.dtype], os, body, caps, undefined, params);
  },
});

/** Running product along `dim`: ints and bool give int32, floats keep their dtype. */
export function cumprod(x: Tensor, dim: number | { dim: number }): Tensor {
  checkInputs('cumprod', [x]);
  const d = typeof dim === 'object' && dim !== null ? dim.dim : dim;
  if (typeof d !== 'number') throw new SinterError('cumprod', `dim is required (e.g. cumprod(x, -1) for the last dim of ${x.describe()})`);
  return apply1(cumprodOp, [x], { dim: normDim('cumprod', d, x.ndim) });
}

type Reduction = (dim?: Dims | ReduceOptions | null, keepdim?: KeepDim) => Tensor;
declare module '../tensor/tensor.js' {
  interface Tensor {
    any: Reduction;
    all: Reduction;
    logsumexp(dim: Dims | ReduceOptions, keepdim?: KeepDim): Tensor;
    cumprod(dim: number | { dim: number }): Tensor;
  }
}

Object.assign(Tensor.prototype, {
  any(this: Tensor, dim?: Dims | ReduceOptions | null, keepdim?: KeepDim) { return any(this, dim, keepdim); },
  all(this: Tensor, dim?: Dims | ReduceOptions | null, keepdim?: KeepDim) { return all(this, dim, keepdim); },
  logsumexp(this: Tensor, dim: Dims | ReduceOptions, keepdim?: KeepDim) { return logsumexp(this, dim, keepdim); },
  cumprod(this: Tensor, dim: number | { dim: number }) { return cumprod(this, dim); },
});
