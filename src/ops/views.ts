import { getBackend } from '../backend/backend.js';
import type { DeviceName } from '../backend/backend.js';
import { resolveDevice } from '../backend/device.js';
import type { CpuStorage } from '../backend/cpu.js';
import { SinterError, fmtShape } from '../errors.js';
import { type DType, checkDType, isDType } from '../tensor/dtype.js';
import { checkShape, contiguousStrides, normDim, normDims, numel, sizeArgs } from '../tensor/shape.js';
import { Tensor, gatherView } from '../tensor/tensor.js';
import { cast, input } from './expr.js';
import { map } from './elementwise.js';
import { checkInputs } from './op.js';

// Views share their input's storage: only shape, strides and offset change.

function viewOf(x: Tensor, shape: readonly number[], strides: readonly number[], offset: number): Tensor {
  return new Tensor(x.storage, shape, strides, offset);
}

/** Resolves one -1 in a requested shape against `n` elements. */
function inferShape(op: string, x: Tensor, shape: readonly number[]): number[] {
  const n = x.numel();
  const free = shape.filter((d) => d === -1).length;
  if (free > 1 || shape.some((d) => !Number.isInteger(d) || d < -1)) {
    throw new SinterError(op, `invalid shape ${fmtShape(shape)}: dims must be non-negative integers with at most one -1`);
  }
  const known = shape.reduce((a, d) => (d === -1 ? a : a * d), 1);
  const out = shape.map((d) => (d === -1 ? (known === 0 ? 0 : n / known) : d));
  if (numel(out) !== n || out.some((d) => !Number.isInteger(d))) {
    throw new SinterError(op, `shape ${fmtShape(shape)} is invalid for input ${x.describe()} of ${n} elements`);
  }
  return out;
}

/** Strides giving `newShape` as a view of (shape, strides) without copying, or null (PyTorch's computeStride). */
function viewStrides(shape: readonly number[], strides: readonly number[], newShape: readonly number[]): number[] | null {
  if (shape.length === 0 || numel(shape) === 0) return contiguousStrides(newShape);
  const out = new Array<number>(newShape.length);
  let viewD = newShape.length - 1;
  let chunkBase = strides[strides.length - 1]!;
  let tensorNumel = 1, viewNumel = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    tensorNumel *= shape[d]!;
    if (d === 0 || (shape[d - 1] !== 1 && strides[d - 1] !== tensorNumel * chunkBase)) {
      while (viewD >= 0 && (viewNumel < tensorNumel || newShape[viewD] === 1)) {
        out[viewD] = viewNumel * chunkBase;
        viewNumel *= newShape[viewD]!;
        viewD--;
      }
      if (viewNumel !== tensorNumel) return null;
      if (d > 0) {
        chunkBase = strides[d - 1]!;
        tensorNumel = 1;
        viewNumel = 1;
      }
    }
  }
  return viewD === -1 ? out : null;
}

/** A view with a new shape; throws when the strides cannot express it (use `reshape`). */
export function view(x: Tensor, ...shape: (number | readonly number[])[]): Tensor {
  checkInputs('view', [x]);
  const s = inferShape('view', x, sizeArgs(shape));
  const strides = viewStrides(x.shape, x.strides, s);
  if (!strides) {
    throw new SinterError('view', `cannot view ${x.describe()} with strides ${fmtShape(x.strides)} as ${fmtShape(s)} without a copy; use reshape (or call contiguous() first)`);
  }
  return viewOf(x, s, strides, x.offset);
}

/** A view when the strides allow it, else a contiguous copy. */
export function reshape(x: Tensor, ...shape: (number | readonly number[])[]): Tensor {
  checkInputs('reshape', [x]);
  const s = inferShape('reshape', x, sizeArgs(shape));
  const strides = viewStrides(x.shape, x.strides, s);
  if (strides) return viewOf(x, s, strides, x.offset);
  const c = clone(x);
  const out = viewOf(c, s, contiguousStrides(s), 0);
  c.dispose();
  return out;
}

export function permute(x: Tensor, ...dims: (number | readonly number[])[]): Tensor {
  checkInputs('permute', [x]);
  const d = sizeArgs(dims);
  if (d.length !== x.ndim) throw new SinterError('permute', `expected ${x.ndim} dims for ${x.describe()}, got ${JSON.stringify(d)}`);
  const p = normDims('permute', d, x.ndim);
  return viewOf(x, p.map((i) => x.shape[i]!), p.map((i) => x.strides[i]!), x.offset);
}

export function transpose(x: Tensor, dim0: number, dim1: number): Tensor {
  checkInputs('transpose', [x]);
  const a = normDim('transpose', dim0, x.ndim), b = normDim('transpose', dim1, x.ndim);
  const p = Array.from({ length: x.ndim }, (_, i) => (i === a ? b : i === b ? a : i));
  return permute(x, p);
}

/** Transpose of a tensor of rank ≤ 2, as torch.t. */
export function t(x: Tensor): Tensor {
  checkInputs('t', [x]);
  if (x.ndim > 2) throw new SinterError('t', `expects a tensor of rank ≤ 2, got ${x.describe()}; use transpose or permute`);
  return x.ndim < 2 ? viewOf(x, x.shape, x.strides, x.offset) : transpose(x, 0, 1);
}

/**
 * Elements start, start+step, … below end along `dim` (aten::slice; Python's x[start:end:step]).
 * Negative start/end count from the end; out-of-range bounds are clamped; step must be positive.
 */
export function slice(x: Tensor, dim: number, start = 0, end = Infinity, step = 1): Tensor {
  checkInputs('slice', [x]);
  const d = normDim('slice', dim, x.ndim);
  if (!Number.isInteger(step) || step <= 0) throw new SinterError('slice', `step must be a positive integer, got ${step} (use flip for reversal)`);
  const n = x.shape[d]!;
  const clampIdx = (i: number): number => Math.min(Math.max(i < 0 ? i + n : i, 0), n);
  const s = clampIdx(start), e = Math.max(clampIdx(end), s);
  if (!Number.isInteger(s) || !Number.isInteger(e)) throw new SinterError('slice', `start and end must be integers, got ${start}, ${end}`);
  const shape = [...x.shape];
  const strides = [...x.strides];
  shape[d] = Math.ceil((e - s) / step);
  strides[d] = x.strides[d]! * step;
  return viewOf(x, shape, strides, x.offset + s * x.strides[d]!);
}

/** `length` elements from `start` along `dim`; unlike slice, out-of-range is an error. */
export function narrow(x: Tensor, dim: number, start: number, length: number): Tensor {
  checkInputs('narrow', [x]);
  const d = normDim('narrow', dim, x.ndim);
  const n = x.shape[d]!;
  const s = start < 0 ? start + n : start;
  if (!Number.isInteger(s) || !Number.isInteger(length) || s < 0 || length < 0 || s + length > n) {
    throw new SinterError('narrow', `start ${start} and length ${length} are out of range for dim ${dim} of size ${n} in ${x.describe()}`);
  }
  return slice(x, d, s, s + length);
}

/** Broadcasts size-1 dims (and new leading dims) to `sizes` with stride 0; -1 keeps a dim. */
export function expand(x: Tensor, ...sizes: (number | readonly number[])[]): Tensor {
  checkInputs('expand', [x]);
  const want = sizeArgs(sizes);
  const lead = want.length - x.ndim;
  if (lead < 0) throw new SinterError('expand', `cannot expand ${x.describe()} to fewer dims ${fmtShape(want)}`);
  const shape: number[] = [], strides: number[] = [];
  want.forEach((w, i) => {
    const have = i < lead ? 1 : x.shape[i - lead]!;
    const size = w === -1 ? have : w;
    if (w === -1 && i < lead) throw new SinterError('expand', `-1 is not allowed for the new leading dim ${i} in ${fmtShape(want)}`);
    if (!Number.isInteger(size) || size < 0 || (have !== 1 && have !== size)) {
      throw new SinterError('expand', `cannot expand ${x.describe()} to ${fmtShape(want)}: dim ${i} has size ${have}, which is not 1 and not ${w}`);
    }
    shape.push(size);
    strides.push(i < lead || (have === 1 && size !== 1) ? 0 : x.strides[i - lead]!);
  });
  return viewOf(x, shape, strides, x.offset);
}

export function broadcastTo(x: Tensor, shape: readonly number[]): Tensor {
  return expand(x, checkShape('broadcastTo', [...shape]));
}

export function expandAs(x: Tensor, other: Tensor): Tensor {
  return expand(x, other.shape);
}

/** Drops size-1 dims: all of them, or those among `dim` (a dim of another size is left alone, as in PyTorch). */
export function squeeze(x: Tensor, dim?: number | readonly number[]): Tensor {
  checkInputs('squeeze', [x]);
  const dims = new Set(normDims('squeeze', dim, x.ndim));
  const keep = x.shape.map((s, i) => !(s === 1 && dims.has(i)));
  return viewOf(x, x.shape.filter((_, i) => keep[i]), x.strides.filter((_, i) => keep[i]), x.offset);
}

/** Inserts a size-1 dim at `dim` (in [-rank-1, rank]). */
export function unsqueeze(x: Tensor, dim: number): Tensor {
  checkInputs('unsqueeze', [x]);
  const d = normDim('unsqueeze', dim, x.ndim + 1);
  const shape = [...x.shape], strides = [...x.strides];
  shape.splice(d, 0, 1);
  strides.splice(d, 0, d < x.ndim ? x.strides[d]! * x.shape[d]! : 1);
  return viewOf(x, shape, strides, x.offset);
}

/** Merges dims startDim..endDim into one (a view when possible). */
export function flatten(x: Tensor, startDim = 0, endDim = -1): Tensor {
  checkInputs('flatten', [x]);
  if (x.ndim === 0) return reshape(x, [1]);
  const s = normDim('flatten', startDim, x.ndim), e = normDim('flatten', endDim, x.ndim);
  if (s > e) throw new SinterError('flatten', `startDim ${startDim} comes after endDim ${endDim}`);
  const shape = [...x.shape.slice(0, s), numel(x.shape.slice(s, e + 1)), ...x.shape.slice(e + 1)];
  return reshape(x, shape);
}

/** A new tensor with the same values in fresh contiguous storage. */
export function clone(x: Tensor): Tensor {
  checkInputs('clone', [x]);
  return map('clone', [x], cast(input(0, x.dtype), x.dtype));
}

/** This tensor when already contiguous, else a contiguous copy. */
export function contiguous(x: Tensor): Tensor {
  checkInputs('contiguous', [x]);
  return x.isContiguous() ? x : clone(x);
}

export interface ToOptions {
  device?: DeviceName;
  dtype?: DType;
}

/** `to('float16')`, `to('cpu')`, `to({ device, dtype })`: this tensor when nothing changes, else a copy. */
export function to(x: Tensor, target: DType | DeviceName | ToOptions): Tensor {
  checkInputs('to', [x]);
  const opts: ToOptions = typeof target === 'string' ? (isDType(target) ? { dtype: target } : { device: target as DeviceName }) : target;
  const dtype = opts.dtype === undefined ? x.dtype : checkDType('to', opts.dtype);
  const device = opts.device === undefined ? x.device : resolveDevice('to', opts.device);
  let y = dtype === x.dtype ? x : map('to', [x], cast(input(0, x.dtype), dtype));
  if (device !== y.device) {
    if (y.storage.symbolic) throw new SinterError('to', `cannot move ${y.describe()} between devices while jit is tracing; move inputs before calling the jitted function`);
    if (y.device !== 'cpu') {
      throw new SinterError('to', `moving ${y.describe()} from ${y.device} to ${device} needs a GPU readback, which is asynchronous: use \`await x.toDevice('${device}')\``);
    }
    const host = gatherView((y.storage as CpuStorage).data, y.shape, y.strides, y.offset, y.dtype);
    const moved = new Tensor(getBackend(device).fromHost(y.dtype, host), y.shape);
    if (y !== x) y.dispose();
    y = moved;
  }
  return y;
}

/** Moves a tensor to `device`, awaiting the readback when it leaves a GPU. */
export async function toDevice(x: Tensor, device: DeviceName): Promise<Tensor> {
  checkInputs('toDevice', [x]);
  const dev = resolveDevice('toDevice', device);
  if (dev === x.device) return x;
  return new Tensor(getBackend(dev).fromHost(x.dtype, await x.data()), x.shape);
}

declare module '../tensor/tensor.js' {
  interface Tensor {
    view(...shape: (number | readonly number[])[]): Tensor;
    reshape(...shape: (number | readonly number[])[]): Tensor;
    permute(...dims: (number | readonly number[])[]): Tensor;
    transpose(dim0: number, dim1: number): Tensor;
    t(): Tensor;
    slice(dim: number, start?: number, end?: number, step?: number): Tensor;
    narrow(dim: number, start: number, length: number): Tensor;
    expand(...sizes: (number | readonly number[])[]): Tensor;
    expandAs(other: Tensor): Tensor;
    broadcastTo(shape: readonly number[]): Tensor;
    squeeze(dim?: number | readonly number[]): Tensor;
    unsqueeze(dim: number): Tensor;
    flatten(startDim?: number, endDim?: number): Tensor;
    clone(): Tensor;
    contiguous(): Tensor;
    to(target: DType | DeviceName | ToOptions): Tensor;
    toDevice(device: DeviceName): Promise<Tensor>;
    /** to('float32'), to('float16'), to('int32'), to('bool'), as torch's x.float() / half() / int() / bool(). */
    float(): Tensor;
    half(): Tensor;
    int(): Tensor;
    bool(): Tensor;
    /** All dims reversed, as torch's x.T. */
    readonly T: Tensor;
  }
}

Object.assign(Tensor.prototype, {
  view(this: Tensor, ...s: (number | readonly number[])[]) { return view(this, ...s); },
  reshape(this: Tensor, ...s: (number | readonly number[])[]) { return reshape(this, ...s); },
  permute(this: Tensor, ...d: (number | readonly number[])[]) { return permute(this, ...d); },
  transpose(this: Tensor, a: number, b: number) { return transpose(this, a, b); },
  t(this: Tensor) { return t(this); },
  slice(this: Tensor, dim: number, start?: number, end?: number, step?: number) { return slice(this, dim, start, end, step); },
  narrow(this: Tensor, dim: number, start: number, length: number) { return narrow(this, dim, start, length); },
  expand(this: Tensor, ...s: (number | readonly number[])[]) { return expand(this, ...s); },
  expandAs(this: Tensor, o: Tensor) { return expandAs(this, o); },
  broadcastTo(this: Tensor, s: readonly number[]) { return broadcastTo(this, s); },
  squeeze(this: Tensor, dim?: number | readonly number[]) { return squeeze(this, dim); },
  unsqueeze(this: Tensor, dim: number) { return unsqueeze(this, dim); },
  flatten(this: Tensor, s?: number, e?: number) { return flatten(this, s, e); },
  clone(this: Tensor) { return clone(this); },
  contiguous(this: Tensor) { return contiguous(this); },
  to(this: Tensor, target: DType | DeviceName | ToOptions) { return to(this, target); },
  toDevice(this: Tensor, device: DeviceName) { return toDevice(this, device); },
  float(this: Tensor) { return to(this, 'float32'); },
  half(this: Tensor) { return to(this, 'float16'); },
  int(this: Tensor) { return to(this, 'int32'); },
  bool(this: Tensor) { return to(this, 'bool'); },
});
Object.defineProperty(Tensor.prototype, 'T', {
  get(this: Tensor) { return permute(this, this.shape.map((_, i) => this.ndim - 1 - i)); },
  configurable: true,
});
