import { SinterError } from '../errors.js';
import { type DType, isFloat } from '../tensor/dtype.js';
import { broadcastShapes } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { type Expr, exprNodes } from './expr.js';
import { type ReduceKind, cumsumKernel, reduceKernel, softmaxKernel } from '../kernels/cpu/reduce.js';
import { cumsumProgram, reduceProgram, softmaxProgram } from '../kernels/wgsl/reduce.js';
import { maximum, minimum } from './binary.js';
import { type TensorMeta, apply1, checkInputs, defineOp, describeMeta } from './op.js';

export type { ReduceKind } from '../kernels/cpu/reduce.js';

/** One dim or several; negative dims count from the end. */
export type Dims = number | readonly number[];

export interface ReduceOptions {
  /** Dims to reduce; omitted, null or [] reduces every dim. */
  dim?: Dims | null;
  /** Keep reduced dims as size 1 (default false). */
  keepdim?: boolean;
}

export interface VarOptions extends ReduceOptions {
  /** Subtracted from the element count in the divisor (default 1: Bessel's correction). */
  correction?: number;
  /** Legacy form of correction: true is 1, false is 0. */
  unbiased?: boolean;
}

export interface ReduceAttrs {
  readonly kind: ReduceKind;
  /** Reduced dims, normalised and sorted ascending. */
  readonly dims: readonly number[];
  readonly keepdim: boolean;
  /** var/std only (0 for the others). */
  readonly correction: number;
  /** Set by the JIT only (see `reducedMeta`). */
  readonly prologue?: Expr;
}

/** Attrs of softmax, logSoftmax and cumsum: the normalised dim, and a prologue set by the JIT only (see `reducedMeta`). */
export interface AlongDimAttrs {
  readonly dim: number;
  readonly prologue?: Expr;
}

/**
 * The tensor a reduction-like op reduces: input 0, or with a `prologue` (which the JIT sets when it
 * fuses elementwise producers into the op) the prologue evaluated elementwise over all inputs
 * broadcast together, so `sum(x*x)` reads x and never stores x*x.
 */
function reducedMeta(op: string, inputs: readonly TensorMeta[], prologue: Expr | undefined): TensorMeta {
  if (!prologue) return inputs[0]!;
  for (const e of exprNodes(prologue)) {
    if (e.kind !== 'input') continue;
    const t = inputs[e.index];
    if (!t || t.dtype !== e.dtype) {
      throw new SinterError(op, `the prologue reads input ${e.index} as ${e.dtype}, but the inputs are ${inputs.map(describeMeta).join(', ') || 'none'}`);
    }
  }
  return { shape: broadcastShapes(op, ...inputs.map((t) => t.shape)), dtype: prologue.dtype };
}

/** Reductions that have no identity, so an empty group is an error. */
const NEEDS_ELEMENTS = new Set<ReduceKind>(['max', 'min', 'argmax', 'argmin']);

function reducedShape(x: TensorMeta, dims: readonly number[], keepdim: boolean): number[] {
  return keepdim ? x.shape.map((d, i) => (dims.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !dims.includes(i));
}

function requireFloat(op: string, x: TensorMeta, hint: string): void {
  if (!isFloat(x.dtype)) throw new SinterError(op, `expects a float tensor, got ${describeMeta(x)}; ${hint}`);
}

/** Every reduction to fewer elements (sum, mean, prod, max, min, argmax, argmin, var, std): one op, the kind in its attrs. */
export const reduceOp = defineOp<ReduceAttrs>({
  name: 'reduce',
  label: ({ kind }) => kind,
  infer(inputs, { kind, dims, keepdim, prologue }) {
    const x = reducedMeta(kind, inputs, prologue);
    if (kind === 'mean') requireFloat(kind, x!, `the mean of integers has no integer dtype (as in PyTorch); convert first, e.g. x.to('float32')`);
    if (kind === 'var' || kind === 'std') requireFloat(kind, x!, `${kind} only supports floating point dtypes; convert first, e.g. x.to('float32')`);
    if (NEEDS_ELEMENTS.has(kind)) {
      const empty = dims.find((d) => x!.shape[d] === 0);
      if (empty !== undefined) {
        throw new SinterError(kind, `cannot reduce ${describeMeta(x!)} over dim ${empty} of size 0: ${kind} has no identity (the dim must be non-empty)`);
      }
    }
    const dtype: DType = kind === 'argmax' || kind === 'argmin' ? 'int32' : (kind === 'sum' || kind === 'prod') && !isFloat(x!.dtype) ? 'int32' : x!.dtype;
    return [{ shape: reducedShape(x!, dims, keepdim), dtype }];
  },
  cpu(inputs, { kind, dims, correction, prologue }, [out]) {
    reduceKernel(kind, inputs, prologue, dims, correction, out!);
  },
  webgpu(inputs, { kind, dims, correction, prologue }, [out], caps) {
    return reduceProgram(kind, inputs, prologue, dims, correction, out!, caps);
  },
});

/** softmax / logSoftmax as one op each (one kernel, also on the GPU); `dim` is normalised. */
function softmaxDef(name: 'softmax' | 'logSoftmax', log: boolean) {
  return defineOp<AlongDimAttrs>({
    name,
    infer(inputs, { prologue }) {
      const x = reducedMeta(name, inputs, prologue);
      requireFloat(name, x, `convert first, e.g. x.to('float32')`);
      return [{ shape: [...x.shape], dtype: x.dtype }];
    },
    cpu(inputs, { dim, prologue }, [out]) {
      softmaxKernel(inputs, prologue, out!.shape.length === 0 ? [] : [dim], log, out!);
    },
    webgpu(inputs, { dim, prologue }, [out], caps) {
      return softmaxProgram(inputs, prologue, out!.shape.length === 0 ? null : dim, log, out!, caps);
    },
  });
}
export const softmaxOp = softmaxDef('softmax', false);
export const logSoftmaxOp = softmaxDef('logSoftmax', true);

export const cumsumOp = defineOp<AlongDimAttrs>({
  name: 'cumsum',
  infer(inputs, { prologue }) {
    const x = reducedMeta('cumsum', inputs, prologue);
    return [{ shape: [...x.shape], dtype: isFloat(x.dtype) ? x.dtype : 'int32' }];
  },
  cpu(inputs, { dim, prologue }, [out]) {
    cumsumKernel(inputs, prologue, out!.shape.length === 0 ? [] : [dim], out!);
  },
  webgpu(inputs, { dim, prologue }, [out], caps) {
    return cumsumProgram(inputs, prologue, out!.shape.length === 0 ? null : dim, out!, caps);
  },
});

function checkDim(op: string, x: Tensor, d: unknown): number {
  const r = Math.max(x.ndim, 1);
  if (typeof d !== 'number' || !Number.isInteger(d) || d < -r || d >= r) {
    throw new SinterError(op, `dim ${JSON.stringify(d)} is out of range for ${x.describe()} (expected an integer in [${-r}, ${r - 1}])`);
  }
  return d < 0 ? d + r : d;
}

/** Normalised, sorted dims; none (or []) means all. A 0-d tensor accepts dim 0 / −1, which reduce nothing. */
function reduceDims(op: string, x: Tensor, dim: Dims | null | undefined): number[] {
  if (dim === undefined || dim === null) return x.shape.map((_, i) => i);
  if (typeof dim !== 'number' && !Array.isArray(dim)) throw new SinterError(op, `dim must be a number or an array of numbers, got ${typeof dim}`);
  const list: readonly number[] = typeof dim === 'number' ? [dim] : dim;
  if (list.length === 0) return x.shape.map((_, i) => i);
  const dims = list.map((d) => checkDim(op, x, d));
  const repeated = dims.find((d, i) => dims.indexOf(d) !== i);
  if (repeated !== undefined) throw new SinterError(op, `dim ${repeated} appears more than once in dims ${JSON.stringify(list)} for ${x.describe()}`);
  return x.ndim === 0 ? [] : dims.sort((a, b) => a - b);
}

function checkKeepdim(op: string, k: unknown): boolean {
  if (typeof k !== 'boolean') throw new SinterError(op, `keepdim must be a boolean, got ${JSON.stringify(k)}`);
  return k;
}

/** keepdim as a boolean, or the keyword form `{ keepdim }`. */
export type KeepDim = boolean | { keepdim?: boolean };

/** An options object, as opposed to a dim, a list of dims or null. */
function isOptions<O extends object>(v: Dims | O | null | undefined): v is O {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Reads the PyTorch calling forms f(x), f(x, dim), f(x, dim, keepdim), f(x, dim, { keepdim }), f(x, { dim, keepdim }). */
function reduceArgs(op: string, x: Tensor, dim: Dims | ReduceOptions | null | undefined, keepdim: KeepDim | undefined): { dims: Dims | null | undefined; keepdim: boolean } {
  checkInputs(op, [x]);
  if (isOptions(dim)) {
    if (keepdim !== undefined) throw new SinterError(op, 'give keepdim either in the options object or as an argument, not both');
    return { dims: dim.dim, keepdim: checkKeepdim(op, dim.keepdim ?? false) };
  }
  return { dims: dim, keepdim: checkKeepdim(op, typeof keepdim === 'object' && keepdim !== null ? keepdim.keepdim ?? false : keepdim ?? false) };
}

function reduce(kind: ReduceKind, x: Tensor, dim: Dims | ReduceOptions | null | undefined, keepdim: KeepDim | undefined, correction = 0): Tensor {
  const a = reduceArgs(kind, x, dim, keepdim);
  return apply1(reduceOp, [x], { kind, dims: reduceDims(kind, x, a.dims), keepdim: a.keepdim, correction });
}

/** Sum over `dim` (all dims by default); ints and bool sum to int32, floats keep their dtype (accumulated in double). */
export function sum(x: Tensor, dim?: Dims | ReduceOptions | null, keepdim?: KeepDim): Tensor {
  return reduce('sum', x, dim, keepdim);
}
/** Mean over `dim` (all dims by default); float tensors only, as in PyTorch. An empty group gives NaN. */
export function mean(x: Tensor, dim?: Dims | ReduceOptions | null, keepdim?: KeepDim): Tensor {
  return reduce('mean', x, dim, keepdim);
}
/** Product over `dim` (all dims by default); ints and bool give int32 (wrapping), floats keep their dtype. */
export function prod(x: Tensor, dim?: Dims | ReduceOptions | null, keepdim?: KeepDim): Tensor {
  return reduce('prod', x, dim, keepdim);
}
/** Largest value over `dim` (all dims by default), NaN propagating; same as max with dims. */
export function amax(x: Tensor, dim?: Dims | ReduceOptions | null, keepdim?: KeepDim): Tensor {
  return reduce('max', x, dim, keepdim);
}
/** Smallest value over `dim` (all dims by default), NaN propagating; same as min with dims. */
export function amin(x: Tensor, dim?: Dims | ReduceOptions | null, keepdim?: KeepDim): Tensor {
  return reduce('min', x, dim, keepdim);
}

/**
 * `max(x)`, `max(x, dim, keepdim?)`: the largest values (NaN propagates; values only, unlike
 * PyTorch's (values, indices) pair: use argmax for the indices). `max(x, other)` with a tensor is
 * the elementwise `maximum`.
 */
export function max(x: Tensor, other: Tensor): Tensor;
export function max(x: Tensor, dim?: Dims | ReduceOptions | null, keepdim?: KeepDim): Tensor;
export function max(x: Tensor, dim?: Tensor | Dims | ReduceOptions | null, keepdim?: KeepDim): Tensor {
  return dim instanceof Tensor ? maximum(x, dim) : reduce('max', x, dim, keepdim);
}
/** `min(x)`, `min(x, dim, keepdim?)`: the smallest values (use argmin for indices); `min(x, other)` is `minimum`. */
export function min(x: Tensor, other: Tensor): Tensor;
export function min(x: Tensor, dim?: Dims | ReduceOptions | null, keepdim?: KeepDim): Tensor;
export function min(x: Tensor, dim?: Tensor | Dims | ReduceOptions | null, keepdim?: KeepDim): Tensor {
  return dim instanceof Tensor ? minimum(x, dim) : reduce('min', x, dim, keepdim);
}

export interface ArgReduceOptions {
  /** The one dim to reduce; omitted or null gives an index into the flattened tensor. */
  dim?: number | null;
  keepdim?: boolean;
}

function argReduce(kind: 'argmax' | 'argmin', x: Tensor, dim: number | ArgReduceOptions | null | undefined, keepdim: KeepDim | undefined): Tensor {
  const a = reduceArgs(kind, x, dim as Dims | ReduceOptions | null | undefined, keepdim);
  if (Array.isArray(a.dims)) throw new SinterError(kind, `takes one dim (a number) or none, got dims ${JSON.stringify(a.dims)} for ${x.describe()}`);
  return apply1(reduceOp, [x], { kind, dims: reduceDims(kind, x, a.dims), keepdim: a.keepdim, correction: 0 });
}

/**
 * int32 index of the largest value along `dim`, or into the flattened tensor when no dim is given
 * (keepdim then keeps every dim as size 1). Ties give the first index; NaN counts as the largest.
 */
export function argmax(x: Tensor, dim?: number | ArgReduceOptions | null, keepdim?: KeepDim): Tensor {
  return argReduce('argmax', x, dim, keepdim);
}
/** int32 index of the smallest value along `dim` (or flattened); ties give the first index; NaN counts as the smallest. */
export function argmin(x: Tensor, dim?: number | ArgReduceOptions | null, keepdim?: KeepDim): Tensor {
  return argReduce('argmin', x, dim, keepdim);
}

function varArgs(kind: 'var' | 'std', x: Tensor, dim: Dims | VarOptions | null | undefined, opts: VarOptions | undefined): Tensor {
  const isOpts = isOptions(dim);
  if (isOpts && opts !== undefined) throw new SinterError(kind, 'give the options either as the second or the third argument, not both');
  if (!isOpts && opts?.dim !== undefined) throw new SinterError(kind, 'give dim either as the second argument or in the options, not both');
  const o: VarOptions = (isOpts ? dim : opts) ?? {};
  if (o.correction !== undefined && o.unbiased !== undefined) throw new SinterError(kind, 'give correction or unbiased, not both');
  if (o.unbiased !== undefined && typeof o.unbiased !== 'boolean') throw new SinterError(kind, `unbiased must be a boolean, got ${JSON.stringify(o.unbiased)}`);
  const correction = o.unbiased !== undefined ? Number(o.unbiased) : o.correction ?? 1;
  if (typeof correction !== 'number' || !Number.isFinite(correction)) throw new SinterError(kind, `correction must be a finite number, got ${JSON.stringify(correction)}`);
  return reduce(kind, x, { dim: isOpts ? o.dim : dim, keepdim: o.keepdim }, undefined, correction);
}

/**
 * Variance over `dim` (all dims by default): Σ(x − mean)² / max(0, N − correction), computed in two
 * passes; correction defaults to 1 (`unbiased: false` is correction 0). Float tensors only.
 */
function variance(x: Tensor, dim?: Dims | VarOptions | null, opts?: VarOptions): Tensor {
  return varArgs('var', x, dim, opts);
}
// `var` is a reserved word, so the function has another local name; it is exported (and a method) as `var`.
export { variance as var };

/** Standard deviation: the square root of `var` with the same arguments. */
export function std(x: Tensor, dim?: Dims | VarOptions | null, opts?: VarOptions): Tensor {
  return varArgs('std', x, dim, opts);
}

function dimArg(op: string, x: Tensor, dim: number | { dim: number } | undefined): number {
  checkInputs(op, [x]);
  const d = typeof dim === 'object' && dim !== null ? dim.dim : dim;
  if (d === undefined) throw new SinterError(op, `dim is required (e.g. ${op}(x, -1) for the last dim of ${x.describe()})`);
  return checkDim(op, x, d);
}

/** exp(x) / Σexp(x) along `dim` (required), computed stably by subtracting the max first. Float tensors only. */
export function softmax(x: Tensor, dim: number | { dim: number }): Tensor {
  return apply1(softmaxOp, [x], { dim: dimArg('softmax', x, dim) });
}
/** log(softmax(x)) along `dim`, computed as x − max − log Σexp(x − max). Float tensors only. */
export function logSoftmax(x: Tensor, dim: number | { dim: number }): Tensor {
  return apply1(logSoftmaxOp, [x], { dim: dimArg('logSoftmax', x, dim) });
}
/** Running sum along `dim`; ints and bool give int32, floats keep their dtype. */
export function cumsum(x: Tensor, dim: number | { dim: number }): Tensor {
  return apply1(cumsumOp, [x], { dim: dimArg('cumsum', x, dim) });
}

type Reduction = (dim?: Dims | ReduceOptions | null, keepdim?: KeepDim) => Tensor;
type VarReduction = (dim?: Dims | VarOptions | null, opts?: VarOptions) => Tensor;
declare module '../tensor/tensor.js' {
  interface Tensor {
    sum: Reduction; mean: Reduction; prod: Reduction; amax: Reduction; amin: Reduction;
    max(other: Tensor): Tensor;
    max(dim?: Dims | ReduceOptions | null, keepdim?: KeepDim): Tensor;
    min(other: Tensor): Tensor;
    min(dim?: Dims | ReduceOptions | null, keepdim?: KeepDim): Tensor;
    argmax(dim?: number | ArgReduceOptions | null, keepdim?: KeepDim): Tensor;
    argmin(dim?: number | ArgReduceOptions | null, keepdim?: KeepDim): Tensor;
    var: VarReduction; std: VarReduction;
    softmax(dim: number | { dim: number }): Tensor;
    logSoftmax(dim: number | { dim: number }): Tensor;
    cumsum(dim: number | { dim: number }): Tensor;
  }
}

type Dim = Dims | ReduceOptions | null | undefined;
Object.assign(Tensor.prototype, {
  sum(this: Tensor, dim?: Dim, keepdim?: KeepDim) { return sum(this, dim, keepdim); },
  mean(this: Tensor, dim?: Dim, keepdim?: KeepDim) { return mean(this, dim, keepdim); },
  prod(this: Tensor, dim?: Dim, keepdim?: KeepDim) { return prod(this, dim, keepdim); },
  amax(this: Tensor, dim?: Dim, keepdim?: KeepDim) { return amax(this, dim, keepdim); },
  amin(this: Tensor, dim?: Dim, keepdim?: KeepDim) { return amin(this, dim, keepdim); },
  max(this: Tensor, dim?: Tensor | Dim, keepdim?: KeepDim) { return dim instanceof Tensor ? max(this, dim) : max(this, dim, keepdim); },
  min(this: Tensor, dim?: Tensor | Dim, keepdim?: KeepDim) { return dim instanceof Tensor ? min(this, dim) : min(this, dim, keepdim); },
  argmax(this: Tensor, dim?: number | ArgReduceOptions | null, keepdim?: KeepDim) { return argmax(this, dim, keepdim); },
  argmin(this: Tensor, dim?: number | ArgReduceOptions | null, keepdim?: KeepDim) { return argmin(this, dim, keepdim); },
  var(this: Tensor, dim?: Dims | VarOptions | null, opts?: VarOptions) { return variance(this, dim, opts); },
  std(this: Tensor, dim?: Dims | VarOptions | null, opts?: VarOptions) { return std(this, dim, opts); },
  softmax(this: Tensor, dim: number | { dim: number }) { return softmax(this, dim); },
  logSoftmax(this: Tensor, dim: number | { dim: number }) { return logSoftmax(this, dim); },
  cumsum(this: Tensor, dim: number | { dim: number }) { return cumsum(this, dim); },
});
