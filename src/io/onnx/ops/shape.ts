import { fmtShape } from '../../../errors.js';
import { add, eq, lt, sub, where } from '../../../ops/binary.js';
import { cat, flip, gather, indexSelect, pad, repeat } from '../../../ops/movement.js';
import { cumsum } from '../../../ops/reduce.js';
import { type ScatterReduction, gatherND, scatterElements, scatterND } from '../../../ops/scatter.js';
import { expand, permute, reshape, slice } from '../../../ops/views.js';
import { arange, full } from '../../../tensor/creation.js';
import { broadcastShapes, contiguousStrides, numel } from '../../../tensor/shape.js';
import { Tensor } from '../../../tensor/tensor.js';
import { checkHostShape, hostMap, hostOf, hostReshape, hostView, intsOf } from '../host.js';
import type { OnnxNode } from '../node.js';
import { type OpContext, type OpEntry, type Val, checkValueBytes, register, typeOf } from '../registry.js';
import { HostTensor, type OnnxDType, castTo, deviceDType, onnxDType, unsupportedDType } from '../tensor.js';
import { hostInts, normAxes, normAxis } from './util.js';

// Shape and data-movement ops. Each computes its output shape from host values (shapes, axes, starts…), so these
// subgraphs fold while tracing; on device tensors they become views where sinter has one (reshape, permute, slice).

/** A context for host evaluation, where every input already is a host tensor. */
const hostOnly: OpContext = {
  device: 'cpu',
  dev: () => {
    throw new Error('unreachable: host evaluation has no device');
  },
  host: (v) => v as HostTensor,
};

/** Reshape's target: 0 copies the input dim (unless allowzero), one -1 is inferred. */
function reshapeTarget(node: OnnxNode, inShape: readonly number[], spec: readonly number[]): number[] {
  const allowZero = node.int('allowzero', 0) === 1;
  const copy = (i: number) => inShape[i] ?? node.fail(`shape [${spec.join(', ')}] copies dim ${i} (0), which the input ${fmtShape(inShape)} lacks`);
  const out = spec.map((d, i) => (d === 0 && !allowZero ? copy(i) : d));
  const free = out.filter((d) => d === -1).length;
  if (free > 1 || out.some((d) => d < -1)) node.fail(`invalid target shape [${spec.join(', ')}]: at most one -1 and no other negative dims`);
  const known = out.reduce((a, d) => (d === -1 ? a : a * d), 1);
  const n = numel(inShape);
  const resolved = out.map((d) => (d === -1 ? (known === 0 ? 0 : n / known) : d));
  if (numel(resolved) !== n || !resolved.every(Number.isInteger)) node.fail(`cannot reshape ${fmtShape(inShape)} (${n} elements) to [${spec.join(', ')}]`);
  return resolved;
}

/** Reshapes a value on the side it lives. */
function reshapeVal(v: Val, shape: readonly number[]): Val {
  return v instanceof HostTensor ? hostReshape(v, shape) : reshape(v, shape);
}

/** The output shape of a reshape-like op, from the node, the input shape and its inputs. */
type Target = (node: OnnxNode, inShape: readonly number[], ins: readonly (Val | undefined)[], ctx: OpContext) => number[];

/** An entry whose output is input 0 reshaped to `target` (a view on the device). */
function reshapeOp(target: Target, hostInputs: readonly number[] = []): OpEntry {
  return {
    run: (node, ins, ctx) => [reshapeVal(ins[0]!, target(node, ins[0]!.shape, ins, ctx))],
    host: (node, ins) => [hostReshape(ins[0]!, target(node, ins[0]!.shape, ins, hostOnly))],
    hostInputs,
  };
}

/** Squeeze/Unsqueeze axes: an attribute before opset 13, an optional input from 13. */
function axesOf(node: OnnxNode, ins: readonly (Val | undefined)[], ctx: OpContext): number[] | undefined {
  if (node.opset < 13) return node.ints('axes');
  return ins[1] === undefined ? undefined : hostInts(ctx, ins[1], 'axes');
}

/** ONNX Slice bounds for one axis, resolved to a start, a count and a step (negative steps count down). */
function sliceRange(n: number, start: number, end: number, step: number): { start: number; count: number } {
  const clampTo = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);
  let s = start < 0 ? start + n : start, e = end < 0 ? end + n : end;
  if (step > 0) {
    s = clampTo(s, 0, n);
    e = clampTo(e, 0, n);
  } else {
    s = clampTo(s, 0, n - 1);
    e = clampTo(e, -1, n - 1);
  }
  const count = Math.max(0, Math.ceil((e - s) / step));
  return { start: s, count };
}

interface SliceSpec {
  axis: number;
  start: number;
  count: number;
  step: number;
}

function sliceSpecs(node: OnnxNode, shape: readonly number[], ins: readonly (Val | undefined)[], ctx: OpContext): SliceSpec[] {
  const rank = shape.length;
  let starts: number[], ends: number[], axes: number[] | undefined, steps: number[] | undefined;
  if (node.opset < 10) {
    starts = node.ints('starts') ?? node.fail("needs the attribute 'starts'");
    ends = node.ints('ends') ?? node.fail("needs the attribute 'ends'");
    axes = node.ints('axes');
  } else {
    starts = hostInts(ctx, ins[1]!, 'starts');
    ends = hostInts(ctx, ins[2]!, 'ends');
    axes = ins[3] && hostInts(ctx, ins[3], 'axes');
    steps = ins[4] && hostInts(ctx, ins[4], 'steps');
  }
  if (ends.length !== starts.length) node.fail(`starts [${starts.join(', ')}] and ends [${ends.join(', ')}] differ in length`);
  const ax = normAxes(node, axes ?? starts.map((_, i) => i), rank);
  return ax.map((axis, i) => {
    const step = steps?.[i] ?? 1;
    if (step === 0) node.fail('steps must not be 0');
    return { axis, step, ...sliceRange(shape[axis]!, starts[i]!, ends[i]!, step) };
  });
}

function sliceDevice(t: Tensor, specs: readonly SliceSpec[]): Tensor {
  let y = t;
  for (const { axis, start, count, step } of specs) {
    if (step > 0) y = slice(y, axis, start, start + count * step, step);
    else {
      // A negative step reads a flipped axis forward: index i of the flip is n − 1 − i.
      const n = y.shape[axis]!;
      y = slice(flip(y, axis), axis, n - 1 - start, n - 1 - start + count * -step, -step);
    }
  }
  return y;
}

function sliceHost(t: HostTensor, specs: readonly SliceSpec[]): HostTensor {
  const shape = [...t.shape], strides = contiguousStrides(t.shape);
  const viewStrides = [...strides];
  let offset = 0;
  for (const { axis, start, count, step } of specs) {
    shape[axis] = count;
    viewStrides[axis] = strides[axis]! * step;
    offset += start * strides[axis]!;
  }
  return hostView(t, shape, viewStrides, offset);
}

/** Split sizes: the 'split' attribute (before 13) or input, else num_outputs (18+) or the output count. */
function splitSizes(node: OnnxNode, n: number, ins: readonly (Val | undefined)[], ctx: OpContext): number[] {
  const given = node.opset < 13 ? node.ints('split') : ins[1] && hostInts(ctx, ins[1], 'split');
  if (given && given.length > 0) {
    if (given.reduce((a, b) => a + b, 0) !== n) node.fail(`split [${given.join(', ')}] does not sum to the axis size ${n}`);
    return given;
  }
  const parts = node.opset >= 18 ? node.int('num_outputs', node.outputs.length) : node.outputs.length;
  const size = Math.ceil(n / parts);
  return Array.from({ length: parts }, (_, i) => Math.max(0, Math.min(size, n - i * size)));
}

/** Gather's indices as non-negative positions along an axis of size n (host values checked here). */
function hostIndices(node: OnnxNode, idx: HostTensor, n: number): number[] {
  return intsOf(idx, 'indices').map((i) => {
    if (i < -n || i >= n) node.fail(`index ${i} is out of range for an axis of size ${n}`);
    return i < 0 ? i + n : i;
  });
}

function gatherHost(node: OnnxNode, data: HostTensor, idx: HostTensor, axis: number): HostTensor {
  const n = data.shape[axis]!;
  const picks = hostIndices(node, idx, n);
  const outer = numel(data.shape.slice(0, axis)), inner = numel(data.shape.slice(axis + 1));
  const out: number[] = [];
  for (let o = 0; o < outer; o++) for (const p of picks) for (let i = 0; i < inner; i++) out.push(data.data[(o * n + p) * inner + i]!);
  return new HostTensor(data.dtype, [...data.shape.slice(0, axis), ...idx.shape, ...data.shape.slice(axis + 1)], out);
}

function gatherDevice(node: OnnxNode, ctx: OpContext, x: Tensor, idx: Val, axis: number): Tensor {
  const n = x.shape[axis]!;
  const outShape = [...x.shape.slice(0, axis), ...idx.shape, ...x.shape.slice(axis + 1)];
  if (idx instanceof HostTensor) {
    const picks = hostIndices(node, idx, n);
    // One index is a slice (a view); a run of consecutive indices too.
    if (picks.length > 0 && picks.every((p, i) => p === picks[0]! + i)) return reshape(slice(x, axis, picks[0]!, picks[0]! + picks.length), outShape);
    const flat = ctx.dev(hostOf('int32', [picks.length], picks), 'indices');
    return reshape(indexSelect(x, axis, flat), outShape);
  }
  // Device indices: negatives wrap.
  const flat = reshape(idx, [numel(idx.shape)]);
  const wrapped = where(lt(flat, 0), add(flat, n), flat);
  return reshape(indexSelect(x, axis, wrapped), outShape);
}

/** ONNX pads [x1_begin, x2_begin, …, x1_end, x2_end, …] over `axes` as sinter's list [last_begin, last_end, …] for the trailing dims. */
function sinterPads(rank: number, axes: readonly number[], pads: readonly number[]): number[] {
  const k = axes.length;
  const per = new Array<[number, number]>(rank).fill([0, 0]);
  axes.forEach((a, i) => (per[a] = [pads[i]!, pads[i + k]!]));
  const first = per.findIndex(([b, e]) => b !== 0 || e !== 0);
  if (first < 0) return [];
  const out: number[] = [];
  for (let d = rank - 1; d >= first; d--) out.push(...per[d]!);
  return out;
}

const PAD_MODES = { constant: 'constant', reflect: 'reflect', edge: 'replicate', wrap: 'circular' } as const;

function padDevice(node: OnnxNode, ctx: OpContext, x: Tensor, ins: readonly (Val | undefined)[]): Tensor {
  const rank = x.ndim;
  const mode = node.string('mode', 'constant') as keyof typeof PAD_MODES;
  const sMode = PAD_MODES[mode] ?? node.fail(`mode '${mode}' is not constant, reflect, edge or wrap`);
  let pads: number[], value: number | Tensor = 0, axes: number[];
  if (node.opset < 11) {
    pads = node.ints('pads') ?? node.ints('paddings') ?? node.fail("needs the attribute 'pads'");
    value = node.float('value', 0);
    axes = x.shape.map((_, i) => i);
  } else {
    pads = hostInts(ctx, ins[1]!, 'pads');
    const v = ins[2];
    if (v !== undefined) value = v instanceof HostTensor ? v.scalar('constant_value') : v;
    axes = ins[3] ? normAxes(node, hostInts(ctx, ins[3], 'axes'), rank) : x.shape.map((_, i) => i);
  }
  if (pads.length !== 2 * axes.length) node.fail(`pads [${pads.join(', ')}] must have 2 entries per padded axis (${axes.length} axes)`);
  const widths = sinterPads(rank, axes, pads);
  if (widths.length === 0) return x;
  if (sMode === 'constant') {
    if (typeof value === 'number') return pad(x, widths, { mode: 'constant', value });
    // A fill value computed on the device: pad with zeros, then select it where a padded mask is false.
    const inside = pad(full(x.shape, true, { dtype: 'bool', device: ctx.device }), widths);
    return where(inside, pad(x, widths), reshape(value, []).to(x.dtype));
  }
  // sinter's other modes pad the last 1–3 dims of a tensor with one or two leading dims: fold the rest into one.
  const k = widths.length / 2;
  if (k > 3) node.fail(`mode '${mode}' pads at most the last 3 dims here, got pads [${pads.join(', ')}] for rank ${rank}`);
  const lead = x.shape.slice(0, rank - k);
  const folded = reshape(x, [numel(lead), ...x.shape.slice(rank - k)]);
  const y = pad(folded, widths, sMode);
  return reshape(y, [...lead, ...y.shape.slice(1)]);
}

/** CumSum along an axis, optionally exclusive (each sum leaves out its own element) and/or reversed. */
function cumulativeSum(node: OnnxNode, x: Tensor, axis: number): Tensor {
  const reverse = node.int('reverse', 0) === 1, exclusive = node.int('exclusive', 0) === 1;
  const src = reverse ? flip(x, axis) : x;
  let y = cumsum(src, axis);
  if (exclusive) y = sub(y, src);
  return reverse ? flip(y, axis) : y;
}

register({
  Shape: {
    // The shape of a device tensor is known while tracing, so this is always a host value.
    run: (node, [x]) => {
      const rank = x!.shape.length;
      const clampTo = (v: number) => Math.min(Math.max(v < 0 ? v + rank : v, 0), rank);
      const start = clampTo(node.int('start', 0)), end = clampTo(node.int('end', rank));
      const dims = x!.shape.slice(start, Math.max(start, end));
      return [hostOf('int64', [dims.length], dims)];
    },
    minOpset: 1,
  },
  Size: { run: (_, [x]) => [hostOf('int64', [], [numel(x!.shape)])], minOpset: 1 },
  Reshape: reshapeOp((node, s, ins, ctx) => reshapeTarget(node, s, node.opset < 5 ? (node.ints('shape') ?? []) : hostInts(ctx, ins[1]!, 'shape')), [1]),
  Flatten: reshapeOp((node, s) => {
    const axis = s.length === 0 ? 0 : node.int('axis', 1) === s.length ? s.length : normAxis(node, node.int('axis', 1), s.length);
    return [numel(s.slice(0, axis)), numel(s.slice(axis))];
  }),
  Squeeze: reshapeOp((node, s, ins, ctx) => {
    const axes = axesOf(node, ins, ctx);
    const drop = new Set(axes ? normAxes(node, axes, s.length) : s.flatMap((d, i) => (d === 1 ? [i] : [])));
    for (const a of drop) if (s[a] !== 1) node.fail(`cannot squeeze axis ${a} of size ${s[a]} (shape ${fmtShape(s)})`);
    return s.filter((_, i) => !drop.has(i));
  }, [1]),
  Unsqueeze: reshapeOp((node, s, ins, ctx) => {
    const axes = axesOf(node, ins, ctx) ?? node.fail('needs axes');
    const rank = s.length + axes.length;
    const at = new Set(normAxes(node, axes, rank));
    const out: number[] = [];
    let k = 0;
    for (let i = 0; i < rank; i++) out.push(at.has(i) ? 1 : s[k++]!);
    return out;
  }, [1]),
  Transpose: {
    run: (node, [x]) => [permute(x as Tensor, permOf(node, x!.shape.length))],
    host: (node, [x]) => {
      const perm = permOf(node, x!.shape.length), strides = contiguousStrides(x!.shape);
      return [hostView(x!, perm.map((p) => x!.shape[p]!), perm.map((p) => strides[p]!), 0)];
    },
  },
  Concat: {
    run: (node, ins, ctx) => {
      const rank = ins[0]!.shape.length;
      return [cat(ins.map((v, i) => ctx.dev(v!, `input ${i}`)), normAxis(node, concatAxis(node), rank))];
    },
    host: (node, ins) => {
      const parts = ins as HostTensor[];
      const rank = parts[0]!.shape.length;
      const axis = normAxis(node, concatAxis(node), rank);
      const outer = numel(parts[0]!.shape.slice(0, axis));
      const out: number[] = [];
      for (let o = 0; o < outer; o++) {
        for (const p of parts) {
          const chunk = numel(p.shape.slice(axis));
          for (let i = 0; i < chunk; i++) out.push(p.data[o * chunk + i]!);
        }
      }
      const shape = [...parts[0]!.shape];
      shape[axis] = parts.reduce((a, p) => a + p.shape[axis]!, 0);
      return [new HostTensor(parts[0]!.dtype, shape, out)];
    },
  },
  Split: {
    run: (node, ins, ctx) => {
      const x = ins[0]!;
      const axis = normAxis(node, node.int('axis', 0), x.shape.length);
      const sizes = splitSizes(node, x.shape[axis]!, ins, ctx);
      let at = 0;
      return sizes.map((n) => {
        const spec = [{ axis, start: at, count: n, step: 1 }];
        at += n;
        return x instanceof HostTensor ? sliceHost(x, spec) : sliceDevice(x, spec);
      });
    },
    hostInputs: [1],
  },
  Slice: {
    run: (node, ins, ctx) => [sliceDevice(ctx.dev(ins[0]!, 'data'), sliceSpecs(node, ins[0]!.shape, ins, ctx))],
    host: (node, ins) => [sliceHost(ins[0]!, sliceSpecs(node, ins[0]!.shape, ins, hostOnly))],
    hostInputs: [1, 2, 3, 4],
  },
  Gather: {
    run: (node, [x, idx], ctx) => {
      const axis = normAxis(node, node.int('axis', 0), x!.shape.length);
      return [gatherDevice(node, ctx, ctx.dev(x!, 'data'), idx!, axis)];
    },
    host: (node, [x, idx]) => [gatherHost(node, x!, idx!, normAxis(node, node.int('axis', 0), x!.shape.length))],
  },
  GatherND: {
    run: (node, [x, idx], ctx) => [gatherND(ctx.dev(x!, 'data'), ctx.dev(idx!, 'indices'), { batchDims: node.int('batch_dims', 0) })],
    minOpset: 11,
  },
  ScatterND: {
    run: (node, [x, idx, upd], ctx) => [scatterND(ctx.dev(x!, 'data'), ctx.dev(idx!, 'indices'), ctx.dev(upd!, 'updates'), { reduction: reductionOf(node) })],
    check: checkReduction,
    minOpset: 11,
  },
  ScatterElements: { run: scatterAlongAxis, check: checkReduction, minOpset: 11 },
  // Scatter (opsets 9–10) is ScatterElements without reductions.
  Scatter: { run: scatterAlongAxis, minOpset: 9 },
  GatherElements: {
    run: (node, [x, idx], ctx) => {
      const t = ctx.dev(x!, 'data'), axis = normAxis(node, node.int('axis', 0), t.ndim);
      const i = ctx.dev(idx!, 'indices');
      return [gather(t, axis, where(lt(i, 0), add(i, t.shape[axis]!), i))];
    },
  },
  Expand: {
    run: (node, [x, s], ctx) => {
      const t = ctx.dev(x!, 'input');
      const shape = broadcastShapes(node.opType, t.shape, hostInts(ctx, s!, 'shape'));
      return [expand(reshape(t, [...new Array<number>(shape.length - t.ndim).fill(1), ...t.shape]), shape)];
    },
    host: (node, [x, s]) => {
      const shape = broadcastShapes(node.opType, x!.shape, intsOf(s!, 'shape'));
      checkDims(node, shape);
      if (numel(shape) > HOST_CONSTANT_ELEMENTS) return null;
      return [hostMap(node.opType, [x!, new HostTensor('bool', shape, new Array<number>(numel(shape)).fill(0))], x!.dtype, (v) => v)];
    },
    hostInputs: [1],
  },
  Tile: {
    run: (_, [x, r], ctx) => [repeat(ctx.dev(x!, 'input'), hostInts(ctx, r!, 'repeats'))],
    hostInputs: [1],
  },
  Pad: {
    run: (node, ins, ctx) => [padDevice(node, ctx, ctx.dev(ins[0]!, 'data'), ins)],
    hostInputs: [1, 2, 3],
    minOpset: 2,
  },
  ConstantOfShape: {
    run: (node, [s], ctx) => {
      const shape = hostInts(ctx, s!, 'shape');
      const v = node.tensor('value');
      checkValueBytes(node, 'the output', shape, 4);
      return [full(shape, v ? v.data[0]! : 0, { dtype: deviceDType(v?.dtype ?? 'float32', 'value'), device: ctx.device })];
    },
    host: (node, [s]) => {
      const shape = intsOf(s!, 'shape');
      checkDims(node, shape);
      return numel(shape) > HOST_CONSTANT_ELEMENTS ? null : [constantOfShape(node, shape)];
    },
    check: (node) => {
      const t = node.tensorType('value');
      return t && unsupportedDType(t) && `value is ${t}: ${unsupportedDType(t)}`;
    },
    hostInputs: [0],
  },
  // Experimental (opsets 1–9, dropped from ONNX since): PyTorch exports at opsets 7–8 make an LSTM's zero initial
  // states with it, from a shape computed by shape arithmetic (input_as_shape=1).
  ConstantFill: {
    run: (node, [x], ctx) => {
      const { shape, dtype, value } = constantFill(node, x && (node.int('input_as_shape', 0) === 1 ? ctx.host(x, 'shape') : x));
      checkValueBytes(node, 'the output', shape, 4);
      return [full(shape, value, { dtype: deviceDType(dtype, 'dtype'), device: ctx.device })];
    },
    host: (node, [x]) => {
      const { shape, dtype, value } = constantFill(node, x);
      return numel(shape) > HOST_CONSTANT_ELEMENTS ? null : [new HostTensor(dtype, shape, new Array<number>(numel(shape)).fill(castTo(dtype, value)))];
    },
    check: (node) => {
      const t = onnxDType(node.int('dtype', 1), `${node.describe()}'s dtype`);
      return unsupportedDType(t) && `dtype ${t}: ${unsupportedDType(t)}`;
    },
    hostInputs: [0],
    minOpset: 1,
  },
  Range: {
    run: (node, ins, ctx) => [range(node, ins.map((v, i) => ctx.host(v!, ['start', 'limit', 'delta'][i]!)))],
    host: (node, ins) => [range(node, ins as HostTensor[])],
    hostInputs: [0, 1, 2],
  },
  Constant: {
    run: (node) => [constantValue(node)],
    host: (node) => [constantValue(node)],
    check: (node) => {
      if (node.has('value_string') || node.has('value_strings')) return 'string constants are not supported (the engine has no string dtype)';
      if (node.has('sparse_value')) return 'sparse constants are not supported';
      const t = node.tensorType('value');
      return t && unsupportedDType(t) && `value is ${t}: ${unsupportedDType(t)}`;
    },
    minOpset: 1,
  },
  CumSum: {
    run: (node, [x, a], ctx) => {
      const t = ctx.dev(x!, 'input');
      return [cumulativeSum(node, t, normAxis(node, ctx.host(a!, 'axis').scalar('axis'), t.ndim))];
    },
    hostInputs: [1],
  },
  EyeLike: {
    // Ones on diagonal k of a 2-D tensor shaped like the input, of the input's type or `dtype`.
    run: (node, [x], ctx) => {
      if (x!.shape.length !== 2) node.fail(`input ${x!.describe()} must be 2-D`);
      const [rows, cols] = x!.shape as [number, number];
      const k = node.int('k', 0), code = node.int('dtype');
      const type = code === undefined ? typeOf(x!) : onnxDType(code, `${node.describe()}'s dtype`);
      const r = arange(rows, { device: ctx.device }).reshape([rows, 1]), c = arange(cols, { device: ctx.device }).reshape([1, cols]);
      return [eq(add(r, k), c).to(deviceDType(type, 'the output'))];
    },
    check: (node) => {
      const code = node.int('dtype');
      const type = code === undefined ? undefined : onnxDType(code, 'dtype');
      return type && unsupportedDType(type) && `dtype ${type}: ${unsupportedDType(type)}`;
    },
    minOpset: 9,
  },
  ReverseSequence: {
    // Each batch entry's first sequence_lens[b] steps along time_axis reversed, the rest kept: a gather along time_axis.
    run: (node, [x, lens], ctx) => {
      const t = ctx.dev(x!, 'input');
      const timeAxis = normAxis(node, node.int('time_axis', 0), t.ndim), batchAxis = normAxis(node, node.int('batch_axis', 1), t.ndim);
      if (timeAxis === batchAxis || t.ndim < 2) node.fail(`time_axis ${timeAxis} and batch_axis ${batchAxis} must be two different axes of ${t.describe()}`);
      const steps = t.shape[timeAxis]!, batch = t.shape[batchAxis]!;
      const n = hostInts(ctx, lens!, 'sequence_lens');
      if (n.length !== batch || n.some((v) => v < 0 || v > steps)) node.fail(`sequence_lens [${n.join(', ')}] must hold ${batch} lengths in [0, ${steps}]`);
      const table = new Array<number>(steps * batch);
      for (let i = 0; i < steps; i++) for (let b = 0; b < batch; b++) table[timeAxis < batchAxis ? i * batch + b : b * steps + i] = i < n[b]! ? n[b]! - 1 - i : i;
      const shape = t.shape.map((d, a) => (a === timeAxis || a === batchAxis ? d : 1));
      const index = ctx.dev(hostOf('int32', shape, table), 'sequence index').expand(t.shape);
      return [gather(t, timeAxis, index)];
    },
    hostInputs: [1],
    minOpset: 10,
  },
  DepthToSpace: {
    run: (node, [x], ctx) => {
      const t = ctx.dev(x!, 'input');
      const [n, c, h, w] = t.shape as [number, number, number, number];
      const b = node.int('blocksize') ?? node.fail("needs the attribute 'blocksize'");
      const crd = node.string('mode', 'DCR') === 'CRD';
      const split = crd ? reshape(t, [n, c / (b * b), b, b, h, w]) : reshape(t, [n, b, b, c / (b * b), h, w]);
      const moved = crd ? permute(split, [0, 1, 4, 2, 5, 3]) : permute(split, [0, 3, 4, 1, 5, 2]);
      return [reshape(moved, [n, c / (b * b), h * b, w * b])];
    },
  },
  SpaceToDepth: {
    run: (node, [x], ctx) => {
      const t = ctx.dev(x!, 'input');
      const [n, c, h, w] = t.shape as [number, number, number, number];
      const b = node.int('blocksize') ?? node.fail("needs the attribute 'blocksize'");
      const split = reshape(t, [n, c, h / b, b, w / b, b]);
      return [reshape(permute(split, [0, 3, 5, 1, 2, 4]), [n, c * b * b, h / b, w / b])];
    },
  },
});

function reductionOf(node: OnnxNode): ScatterReduction {
  return node.string('reduction', 'none') as ScatterReduction;
}

function checkReduction(node: OnnxNode): string | undefined {
  const r = node.string('reduction', 'none');
  return ['none', 'add', 'mul', 'max', 'min'].includes(r) ? undefined : `reduction '${r}' is not none, add, mul, max or min`;
}

function scatterAlongAxis(node: OnnxNode, [x, idx, upd]: readonly (Val | undefined)[], ctx: OpContext): Tensor[] {
  const t = ctx.dev(x!, 'data');
  return [scatterElements(t, ctx.dev(idx!, 'indices'), ctx.dev(upd!, 'updates'), { axis: normAxis(node, node.int('axis', 0), t.ndim), reduction: reductionOf(node) })];
}

/** Concat's axis: required from opset 4, 1 by default before. */
function concatAxis(node: OnnxNode): number {
  return node.int('axis') ?? (node.opset < 4 ? 1 : node.fail("needs the attribute 'axis'"));
}

function permOf(node: OnnxNode, rank: number): number[] {
  const perm = node.ints('perm') ?? Array.from({ length: rank }, (_, i) => rank - 1 - i);
  if (perm.length !== rank) node.fail(`perm [${perm.join(', ')}] must list all ${rank} axes`);
  return normAxes(node, perm, rank, 'perm');
}

/** Constants above this many elements are made on the device: a host copy would only be uploaded. */
const HOST_CONSTANT_ELEMENTS = 1 << 16;

function checkDims(node: OnnxNode, shape: readonly number[]): void {
  if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0)) node.fail(`shape [${shape.join(', ')}] must hold non-negative integers`);
}

function constantOfShape(node: OnnxNode, shape: readonly number[]): HostTensor {
  const v = node.tensor('value');
  const type: OnnxDType = v?.dtype ?? 'float32';
  return new HostTensor(type, shape, new Array<number>(numel(shape)).fill(v ? v.data[0]! : 0));
}

/** ConstantFill's output: the input's values as the shape (input_as_shape=1), the input's shape, or the `shape` attribute; then extra_shape. */
function constantFill(node: OnnxNode, x: Val | undefined): { shape: number[]; dtype: OnnxDType; value: number } {
  const base = x === undefined ? (node.ints('shape') ?? []) : node.int('input_as_shape', 0) === 1 ? intsOf(x as HostTensor, 'shape') : [...x.shape];
  const shape = [...base, ...(node.ints('extra_shape') ?? [])];
  checkDims(node, shape);
  return { shape, dtype: onnxDType(node.int('dtype', 1), `${node.describe()}'s dtype`), value: node.float('value', 0) };
}

function range(node: OnnxNode, [start, limit, delta]: readonly HostTensor[]): HostTensor {
  const s = start!.scalar('start'), l = limit!.scalar('limit'), d = delta!.scalar('delta');
  if (d === 0) node.fail('delta must not be 0');
  const n = Math.max(Math.ceil((l - s) / d), 0);
  checkHostShape(node.opType, [n]);
  return hostOf(start!.dtype, [n], Array.from({ length: n }, (_, i) => s + i * d));
}

function constantValue(node: OnnxNode): HostTensor {
  const t = node.tensor('value');
  if (t) return t;
  const f = node.float('value_float'), fs = node.floats('value_floats'), i = node.int('value_int'), is = node.ints('value_ints');
  if (f !== undefined) return hostOf('float32', [], [f]);
  if (fs) return hostOf('float32', [fs.length], fs);
  if (i !== undefined) return hostOf('int64', [], [i]);
  if (is) return hostOf('int64', [is.length], is);
  return node.fail('has no value attribute this importer reads (value, value_float(s), value_int(s))');
}
