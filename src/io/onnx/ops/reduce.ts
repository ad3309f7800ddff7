import { add, mul, sub } from '../../../ops/binary.js';
import { flip } from '../../../ops/movement.js';
import { amax, amin, argmax, argmin, mean, prod, sum } from '../../../ops/reduce.js';
import { abs, exp, log, sqrt } from '../../../ops/unary.js';
import { full } from '../../../tensor/creation.js';
import { isFloat } from '../../../tensor/dtype.js';
import { contiguousStrides, numel } from '../../../tensor/shape.js';
import type { Tensor } from '../../../tensor/tensor.js';
import { intsOf } from '../host.js';
import type { OnnxNode } from '../node.js';
import { type OpContext, type OpEntry, type Val, register } from '../registry.js';
import { HostTensor, castTo } from '../tensor.js';
import { hostInts, normAxes, normAxis } from './util.js';

// Reductions and arg-reductions. ONNX reductions keep the input type (an int8 sum stays int8) and define the result
// of reducing an empty set (0 for sums, 1 for products, −∞/+∞ for max/min).

type Kind = 'Sum' | 'Mean' | 'Max' | 'Min' | 'Prod' | 'L1' | 'L2' | 'LogSum' | 'LogSumExp' | 'SumSquare';

/** The opset from which each reduction takes its axes as an input rather than an attribute. */
const AXES_INPUT_SINCE: Record<Kind, number> = { Sum: 13, Mean: 18, Max: 18, Min: 18, Prod: 18, L1: 18, L2: 18, LogSum: 18, LogSumExp: 18, SumSquare: 18 };

/** What reducing no elements gives. */
const EMPTY: Record<Kind, number> = {
  Sum: 0, Mean: NaN, Max: -Infinity, Min: Infinity, Prod: 1, L1: 0, L2: 0, LogSum: -Infinity, LogSumExp: -Infinity, SumSquare: 0,
};

/** The reduced axes (sorted), or null for no reduction (empty axes with noop_with_empty_axes). */
function reducedAxes(node: OnnxNode, kind: Kind, shape: readonly number[], axesInput: Val | undefined, ctx: OpContext | null): number[] | null {
  const fromInput = node.opset >= AXES_INPUT_SINCE[kind];
  let axes: number[] | undefined;
  if (!fromInput) axes = node.ints('axes');
  else if (axesInput !== undefined) axes = ctx ? hostInts(ctx, axesInput, 'axes') : intsOf(axesInput as HostTensor, 'axes');
  if (!axes || axes.length === 0) return fromInput && node.int('noop_with_empty_axes', 0) === 1 ? null : shape.map((_, i) => i);
  return normAxes(node, axes, Math.max(shape.length, 1)).sort((a, b) => a - b);
}

function reduceDevice(kind: Kind, x: Tensor, dims: number[], keep: boolean): Tensor {
  switch (kind) {
    case 'Sum': return sum(x, dims, keep);
    case 'Mean': return mean(x, dims, keep);
    case 'Max': return amax(x, dims, keep);
    case 'Min': return amin(x, dims, keep);
    case 'Prod': return prod(x, dims, keep);
    case 'L1': return sum(abs(x), dims, keep);
    case 'L2': return sqrt(sum(mul(x, x), dims, keep));
    case 'LogSum': return log(sum(x, dims, keep));
    case 'SumSquare': return sum(mul(x, x), dims, keep);
    case 'LogSumExp': {
      // Shifted by the maximum for stability (an all −∞ group keeps −∞).
      const m = amax(x, dims, true);
      const safe = m.where(m.eq(-Infinity).logicalNot(), 0);
      const s = log(sum(exp(sub(x, safe)), dims, true));
      const y = add(s, safe);
      return keep ? y : y.squeeze(dims);
    }
  }
}

function reduction(kind: Kind): OpEntry {
  return {
    run: (node, [x, a], ctx) => {
      const t = ctx.dev(x!, 'data');
      const dims = reducedAxes(node, kind, t.shape, a, ctx);
      if (dims === null) return [t];
      const keep = node.int('keepdims', 1) === 1;
      const outShape = keep ? t.shape.map((d, i) => (dims.includes(i) ? 1 : d)) : t.shape.filter((_, i) => !dims.includes(i));
      if (dims.some((d) => t.shape[d] === 0)) return [full(outShape, EMPTY[kind], { dtype: t.dtype, device: ctx.device })];
      // bool and integer inputs reduce in a wider type where sinter needs one, then return to the input's type.
      const wide = t.dtype === 'bool' || (kind === 'Mean' && !isFloat(t.dtype)) ? t.to(kind === 'Mean' ? 'float32' : 'int32') : t;
      const y = reduceDevice(kind, wide, dims, keep);
      return [y.dtype === t.dtype ? y : y.to(t.dtype)];
    },
    host: (node, [x, a]) => {
      const dims = reducedAxes(node, kind, x!.shape, a, null);
      if (dims === null) return [x];
      return [reduceHost(kind, x!, dims, node.int('keepdims', 1) === 1)];
    },
    hostInputs: [1],
  };
}

/** Sum/Mean/Max/Min/Prod on the host (shape arithmetic); the other kinds go through the device. */
function reduceHost(kind: Kind, x: HostTensor, dims: readonly number[], keep: boolean): HostTensor {
  const shape = x.shape, strides = contiguousStrides(shape);
  const keptDims = shape.map((_, i) => i).filter((i) => !dims.includes(i));
  const outShape = keep ? shape.map((d, i) => (dims.includes(i) ? 1 : d)) : keptDims.map((i) => shape[i]!);
  const groups = new Map<number, number[]>();
  for (let e = 0; e < x.data.length; e++) {
    let key = 0;
    for (let i = 0; i < shape.length; i++) if (!dims.includes(i)) key = key * shape[i]! + (Math.floor(e / strides[i]!) % shape[i]!);
    const g = groups.get(key) ?? [];
    g.push(x.data[e]!);
    groups.set(key, g);
  }
  const fold = (g: number[]): number => {
    switch (kind) {
      case 'Sum': return g.reduce((a, b) => a + b, 0);
      case 'Mean': return g.reduce((a, b) => a + b, 0) / g.length;
      case 'Max': return g.reduce((a, b) => Math.max(a, b), -Infinity);
      case 'Min': return g.reduce((a, b) => Math.min(a, b), Infinity);
      case 'Prod': return g.reduce((a, b) => a * b, 1);
      default: return g.reduce((a, b) => a + b, 0);
    }
  };
  const out = Array.from({ length: numel(outShape) }, (_, i) => castTo(x.dtype, groups.has(i) ? fold(groups.get(i)!) : EMPTY[kind]));
  return new HostTensor(x.dtype, outShape, out);
}

/** ArgMax/ArgMin along `axis`; select_last_index picks the last of equal extremes (by searching the flipped axis). */
function argReduce(kind: 'max' | 'min'): OpEntry {
  return {
    run: (node, [x], ctx) => {
      const t = ctx.dev(x!, 'data');
      const axis = normAxis(node, node.int('axis', 0), Math.max(t.ndim, 1));
      const keep = node.int('keepdims', 1) === 1;
      const fn = kind === 'max' ? argmax : argmin;
      if (node.int('select_last_index', 0) !== 1) return [fn(t, axis, keep)];
      const n = t.shape[axis]!;
      return [sub(n - 1, fn(flip(t, axis), axis, keep))];
    },
  };
}

register({
  ReduceSum: { ...reduction('Sum'), minOpset: 1 },
  ReduceMean: { ...reduction('Mean'), minOpset: 1 },
  ReduceMax: { ...reduction('Max'), minOpset: 1 },
  ReduceMin: { ...reduction('Min'), minOpset: 1 },
  ReduceProd: { ...reduction('Prod'), minOpset: 1 },
  ReduceL1: { ...reduction('L1'), minOpset: 1 },
  ReduceL2: { ...reduction('L2'), minOpset: 1 },
  ReduceLogSum: { ...reduction('LogSum'), minOpset: 1 },
  ReduceLogSumExp: { ...reduction('LogSumExp'), minOpset: 1 },
  ReduceSumSquare: { ...reduction('SumSquare'), minOpset: 1 },
  ArgMax: argReduce('max'),
  ArgMin: argReduce('min'),
});
