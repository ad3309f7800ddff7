import { SinterError, fmtShape } from '../../errors.js';
import { broadcastShapes, contiguousStrides, numel } from '../../tensor/shape.js';
import { HostTensor, type OnnxDType, castTo } from './tensor.js';

// Host evaluation of ONNX ops on small tensors (shape arithmetic): plain loops over numbers, every result cast to its
// ONNX type as the op would store it.

/**
 * The most elements a host value may hold. Host tensors carry shape arithmetic and small constants as plain numbers
 * (8 bytes each); anything larger belongs on the device, and a corrupt model's shape must not make the host allocate.
 */
export const MAX_HOST_ELEMENTS = 2 ** 22;

/** Checks a host result's shape (non-negative integer dims, at most MAX_HOST_ELEMENTS) before it is allocated. */
export function checkHostShape(op: string, shape: readonly number[]): number {
  if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new SinterError(op, `invalid shape ${fmtShape(shape)}: dims must be non-negative integers`);
  const n = numel(shape);
  if (n > MAX_HOST_ELEMENTS) throw new SinterError(op, `a host value of shape ${fmtShape(shape)} (${n} elements) exceeds the ${MAX_HOST_ELEMENTS}-element limit for values computed while tracing`);
  return n;
}

/**
 * `fn` applied elementwise over inputs broadcast together (NumPy rules), each result cast to `type`. `op` names the
 * op in errors.
 */
export function hostMap(op: string, inputs: readonly HostTensor[], type: OnnxDType, fn: (...v: number[]) => number): HostTensor {
  const shape = broadcastShapes(op, ...inputs.map((t) => t.shape));
  const n = checkHostShape(op, shape), rank = shape.length;
  const strides = inputs.map((t) => {
    const s = contiguousStrides(t.shape);
    // Aligned to the output's trailing dims, with stride 0 where the input broadcasts.
    return shape.map((d, i) => {
      const j = i - (rank - t.shape.length);
      return j < 0 || t.shape[j] === 1 ? 0 : s[j]!;
    });
  });
  const out = new Array<number>(n);
  const idx = new Array<number>(rank).fill(0);
  const at = new Array<number>(inputs.length).fill(0);
  const args = new Array<number>(inputs.length);
  for (let e = 0; e < n; e++) {
    for (let k = 0; k < inputs.length; k++) args[k] = inputs[k]!.data[at[k]!]!;
    out[e] = castTo(type, fn(...args));
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]!++;
      for (let k = 0; k < inputs.length; k++) at[k]! += strides[k]![d]!;
      if (idx[d]! < shape[d]!) break;
      for (let k = 0; k < inputs.length; k++) at[k]! -= strides[k]![d]! * shape[d]!;
      idx[d] = 0;
    }
  }
  return new HostTensor(type, shape, out);
}

/** The values of a host tensor as integers (axes, shapes, pads), checking they are whole numbers. */
export function intsOf(t: HostTensor, what: string): number[] {
  const out = Array.from(t.data);
  if (!out.every(Number.isInteger)) throw new SinterError('onnx', `${what} must hold integers, got ${t.describe()} [${out.join(', ')}]`);
  return out;
}

/** A host tensor of one ONNX type holding integer or float values from a plain list. */
export function hostOf(type: OnnxDType, shape: readonly number[], values: ArrayLike<number>): HostTensor {
  return new HostTensor(type, shape, Array.from(values, (v) => castTo(type, v)));
}

/** Row-major gather: out[i] = t.data[offsets[i]] for storage offsets of a view of `t`, as a new tensor of `shape`. */
export function hostView(t: HostTensor, shape: readonly number[], strides: readonly number[], offset: number): HostTensor {
  const n = checkHostShape('onnx', shape), rank = shape.length;
  const out = new Array<number>(n);
  const idx = new Array<number>(rank).fill(0);
  let at = offset;
  for (let e = 0; e < n; e++) {
    out[e] = t.data[at]!;
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]!++;
      at += strides[d]!;
      if (idx[d]! < shape[d]!) break;
      at -= strides[d]! * shape[d]!;
      idx[d] = 0;
    }
  }
  return new HostTensor(t.dtype, shape, out);
}

/** The same values with another shape (same element count). */
export function hostReshape(t: HostTensor, shape: readonly number[]): HostTensor {
  if (numel(shape) !== t.data.length) throw new SinterError('onnx', `cannot reshape ${t.describe()} to ${fmtShape(shape)}`);
  return new HostTensor(t.dtype, shape, t.data);
}
