import { SinterError, check } from '../errors.js';
import { type HostArray, allocHost, isInt } from '../tensor/dtype.js';
import { broadcastShapes, normDim, numel } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { fromHost } from '../tensor/creation.js';
import { activeTrace } from '../jit/trace.js';
import { readContiguous } from '../kernels/cpu/util.js';
import { wordKernel } from '../kernels/wgsl/movement.js';
import { KernelParams } from '../kernels/wgsl/params.js';
import { offsetOf, unravel } from '../kernels/wgsl/strided.js';
import { apply1, checkInputs, defineOp, describeMeta } from './op.js';
import { expand } from './views.js';

// Picking elements by value: oneHot (a fixed shape, so an ordinary op), and the ops whose output
// shape depends on the values (nonzero, maskedSelect, unique). Those read the values back first, so
// they return promises (a GPU readback is async) and run eagerly only: under jit they throw at the
// call, as do their other argument checks.

/** oneHot: input int tensor of class indices → int32 [..., numClasses] of 0/1. */
export const oneHotOp = defineOp<{ numClasses: number }>({
  name: 'oneHot',
  infer([x], { numClasses }) {
    check(isInt(x!.dtype), 'oneHot', () => `expects an integer tensor of class indices, got ${describeMeta(x!)}; convert it with .to('int32')`);
    return [{ shape: [...x!.shape, numClasses], dtype: 'int32' }];
  },
  cpu([x], { numClasses }, [out]) {
    const v = readContiguous(x!), o = out!.data;
    o.fill(0);
    for (let i = 0; i < v.length; i++) {
      const c = v[i]!;
      if (c < 0 || c >= numClasses) throw new SinterError('oneHot', `class index ${c} at flat position ${i} of ${describeMeta(x!)} is out of range for numClasses ${numClasses} (valid: 0 to ${numClasses - 1})`);
      o[i * numClasses + c] = 1;
    }
  },
  webgpu([x], { numClasses }, [out], caps) {
    const { lines, idx } = unravel('at', x!.shape);
    // x's offset is a kernel parameter (views anywhere in a buffer share the pipeline); numClasses shapes the output and stays in the source.
    const params = new KernelParams();
    const message = `class index {value} at flat position {at} of ${describeMeta(x!)} is out of range for numClasses ${numClasses} (valid: 0 to ${numClasses - 1})`;
    const body = [
      `let cls = e % ${numClasses}u;`,
      `let at = e / ${numClasses}u;`,
      ...lines,
      `let c = checked_index(load0(${offsetOf(0, x!.strides, idx)} + ${params.u32(x!.offset)}), at);`,
      'return i32(u32(c) == cls);',
    ];
    return wordKernel('oneHot', [x!.dtype], out!, body, caps, { size: numClasses, message }, params);
  },
});

/**
 * int32 one-hot encoding of the class indices in `x`: shape [...x.shape, numClasses]. numClasses is
 * required (PyTorch's −1, "max + 1", would need a readback of the values); an index outside
 * [0, numClasses) is an error.
 */
export function oneHot(x: Tensor, numClasses: number | { numClasses: number }): Tensor {
  checkInputs('oneHot', [x]);
  const n = typeof numClasses === 'object' && numClasses !== null ? numClasses.numClasses : numClasses;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1) {
    throw new SinterError('oneHot', `numClasses must be a positive integer, got ${JSON.stringify(n)} (it is required: inferring it from the values would need a readback)`);
  }
  return apply1(oneHotOp, [x], { numClasses: n });
}

function eagerOnly(op: string): void {
  if (activeTrace()) {
    throw new SinterError(op, `the shape of its result depends on the values of its input, so it cannot be traced by jit; call ${op} outside the jitted function (eagerly) and pass its result in`);
  }
}

/** The int32 indices of the non-zero elements of x (NaN counts as non-zero), one row per element: shape [count, x.ndim]. */
export function nonzero(x: Tensor): Promise<Tensor> {
  checkInputs('nonzero', [x]);
  eagerOnly('nonzero');
  return x.data().then((v) => nonzeroOf(x, v));
}

function nonzeroOf(x: Tensor, v: HostArray): Tensor {
  const r = x.ndim;
  const rows: number[] = [];
  for (let i = 0; i < v.length; i++) {
    if (v[i] === 0) continue;
    let rest = i;
    const at = rows.length;
    for (let d = r - 1; d >= 0; d--) {
      rows[at + d] = rest % x.shape[d]!;
      rest = Math.floor(rest / x.shape[d]!);
    }
  }
  const count = r === 0 ? (v[0] !== 0 ? 1 : 0) : rows.length / r;
  return fromHost('nonzero', Int32Array.from(rows), [count, r], 'int32', x.device);
}

/** The elements of x where the bool mask holds (both broadcast together), as a 1-D tensor in row-major order. */
export function maskedSelect(x: Tensor, mask: Tensor): Promise<Tensor> {
  checkInputs('maskedSelect', [x, mask]);
  eagerOnly('maskedSelect');
  if (mask.dtype !== 'bool') throw new SinterError('maskedSelect', `mask must be a bool tensor, got ${mask.describe()}`);
  const shape = broadcastShapes('maskedSelect', x.shape, mask.shape);
  return selectBroadcast(x, mask, shape);
}

async function selectBroadcast(x: Tensor, mask: Tensor, shape: number[]): Promise<Tensor> {
  const xb = expand(x, shape), mb = expand(mask, shape);
  try {
    const [v, m] = await Promise.all([xb.data(), mb.data()]);
    const picked: number[] = [];
    for (let i = 0; i < m.length; i++) if (m[i] !== 0) picked.push(v[i]!);
    const host = allocHost(x.dtype, picked.length);
    host.set(picked);
    return fromHost('maskedSelect', host, [picked.length], x.dtype, x.device);
  } finally {
    xb.dispose();
    mb.dispose();
  }
}

export interface UniqueOptions {
  /** Accepted for PyTorch compatibility: the values always come sorted ascending (as PyTorch's CPU gives them). */
  sorted?: boolean;
  /** Also return, for each element of x, the int32 index of its value in the result (shaped like x). */
  returnInverse?: boolean;
  /** Also return how often each value occurs (int32). */
  returnCounts?: boolean;
  /** Unique slices along this dim (sorted lexicographically) instead of unique elements of the flattened tensor. */
  dim?: number | null;
}

/** The distinct values, then the inverse indices and the counts when asked for, readable by position or by name. */
export type UniqueResult = Tensor[] & { readonly values: Tensor; readonly inverse?: Tensor; readonly counts?: Tensor };

/**
 * The distinct values of x (flattened), sorted ascending, or with `dim` its distinct slices along
 * that dim, sorted lexicographically; NaNs are distinct from each other and come last. Without options it resolves to the values tensor; with `returnInverse` or `returnCounts`, to
 * [values, inverse?, counts?] (also as `.values`, `.inverse`, `.counts`), as torch.unique returns them.
 */
export function unique(x: Tensor, opts?: { sorted?: boolean; returnInverse?: false; returnCounts?: false; dim?: number | null }): Promise<Tensor>;
export function unique(x: Tensor, opts: UniqueOptions): Promise<UniqueResult>;
export function unique(x: Tensor, opts: UniqueOptions = {}): Promise<Tensor | UniqueResult> {
  checkInputs('unique', [x]);
  eagerOnly('unique');
  if (opts.dim !== undefined && opts.dim !== null) normDim('unique', opts.dim, x.ndim);
  return x.data().then((v) => uniqueOf(x, v, opts));
}

function uniqueOf(x: Tensor, v: HostArray, opts: UniqueOptions): Tensor | UniqueResult {
  // The tensor as n slices of len elements: the elements themselves (flattened), or the slices along dim.
  const dim = opts.dim === undefined || opts.dim === null ? null : normDim('unique', opts.dim, x.ndim);
  const size = dim === null ? v.length : x.shape[dim]!, inner = dim === null ? 1 : numel(x.shape.slice(dim + 1));
  const len = dim === null ? 1 : numel(x.shape) / Math.max(size, 1);
  const at = (s: number, k: number) => v[Math.floor(k / inner) * size * inner + s * inner + (k % inner)]!;
  const nan = (a: number) => a !== a;
  // Lexicographic, NaN after every number; equal slices (and NaNs) keep their order.
  const compare = (i: number, j: number): number => {
    for (let k = 0; k < len; k++) {
      const a = at(i, k), b = at(j, k);
      if (nan(a) || nan(b)) {
        if (nan(a) && nan(b)) continue;
        return nan(a) ? 1 : -1;
      }
      if (a !== b) return a < b ? -1 : 1;
    }
    return i - j;
  };
  // NaN never equals anything, so a slice holding NaN is its own entry.
  const same = (i: number, j: number): boolean => {
    for (let k = 0; k < len; k++) if (at(i, k) !== at(j, k)) return false;
    return true;
  };
  const order = Array.from({ length: size }, (_, i) => i).sort(compare);
  const firsts: number[] = [], counts: number[] = [];
  const inverse = new Int32Array(size);
  for (const i of order) {
    const last = firsts.length - 1;
    if (last >= 0 && same(firsts[last]!, i)) counts[last]!++;
    else {
      firsts.push(i);
      counts.push(1);
    }
    inverse[i] = firsts.length - 1;
  }
  const count = firsts.length;
  const outShape = dim === null ? [count] : x.shape.map((d, i) => (i === dim ? count : d));
  const host: HostArray = allocHost(x.dtype, count * len);
  firsts.forEach((s, u) => {
    for (let k = 0; k < len; k++) host[Math.floor(k / inner) * count * inner + u * inner + (k % inner)] = at(s, k);
  });
  const u = fromHost('unique', host, outShape, x.dtype, x.device);
  if (!opts.returnInverse && !opts.returnCounts) return u;
  const parts: Tensor[] = [u];
  const named: { values: Tensor; inverse?: Tensor; counts?: Tensor } = { values: u };
  if (opts.returnInverse) parts.push((named.inverse = fromHost('unique', inverse, dim === null ? x.shape : [size], 'int32', x.device)));
  if (opts.returnCounts) parts.push((named.counts = fromHost('unique', Int32Array.from(counts), [count], 'int32', x.device)));
  return Object.assign(parts, named);
}

declare module '../tensor/tensor.js' {
  interface Tensor {
    nonzero(): Promise<Tensor>;
    maskedSelect(mask: Tensor): Promise<Tensor>;
    unique(opts?: { sorted?: boolean; returnInverse?: false; returnCounts?: false; dim?: number | null }): Promise<Tensor>;
    unique(opts: UniqueOptions): Promise<UniqueResult>;
  }
}

Object.assign(Tensor.prototype, {
  nonzero(this: Tensor) { return nonzero(this); },
  maskedSelect(this: Tensor, mask: Tensor) { return maskedSelect(this, mask); },
  unique(this: Tensor, opts?: UniqueOptions) { return unique(this, opts as UniqueOptions); },
});
