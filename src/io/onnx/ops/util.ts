import { Tensor } from '../../../tensor/tensor.js';
import { intsOf } from '../host.js';
import type { OnnxNode } from '../node.js';
import { type OpContext, type Val, isHost } from '../registry.js';
import { deviceDType } from '../tensor.js';

/** A possibly negative axis in [-rank, rank) made non-negative, with an error naming the node. */
export function normAxis(node: OnnxNode, axis: number, rank: number, what = 'axis'): number {
  if (!Number.isInteger(axis) || axis < -rank || axis >= rank) node.fail(`${what} ${axis} is out of range for rank ${rank} (expected [${-rank}, ${rank - 1}])`);
  return axis < 0 ? axis + rank : axis;
}

export function normAxes(node: OnnxNode, axes: readonly number[], rank: number, what = 'axes'): number[] {
  const out = axes.map((a) => normAxis(node, a, rank, what));
  if (new Set(out).size !== out.length) node.fail(`${what} [${axes.join(', ')}] repeat an axis`);
  return out;
}

/** The integer values of an input needed at trace time (a shape, axes, pads…). */
export function hostInts(ctx: OpContext, v: Val, what: string): number[] {
  return intsOf(ctx.host(v, what), what);
}

/**
 * An operand for a sinter binary op next to device tensor `like`: a one-element host value of the same device dtype
 * becomes a plain scalar (a constant inside fused kernels), anything else a device tensor.
 */
export function operand(ctx: OpContext, v: Val, like: Tensor, what: string): Tensor | number | boolean {
  if (v instanceof Tensor) return v;
  if (isHost(v) && v.data.length === 1 && v.shape.length <= like.ndim && deviceDType(v.dtype, what) === like.dtype) {
    return like.dtype === 'bool' ? v.data[0] !== 0 : v.data[0]!;
  }
  return ctx.dev(v, what);
}

/** The first device tensor among the values, or (when all are on the host) the first value uploaded. */
export function anchor(ctx: OpContext, values: readonly Val[], what: string): Tensor {
  const t = values.find((v): v is Tensor => v instanceof Tensor);
  return t ?? ctx.dev(values[0]!, what);
}
