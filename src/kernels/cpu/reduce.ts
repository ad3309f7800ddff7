import type { Expr } from '../../ops/expr.js';
import type { CpuView } from '../../ops/op.js';
import { broadcastShapes, stridedOffsets } from '../../tensor/shape.js';
import { H, broadcastStrides, constantDecls, jsExprBody } from './map.js';
import { generatedKernels } from './generated.js';
import { kernelOverrides } from './overrides.js';

/**
 * A reduction's two index spaces over a strided view: `outer[i]` is the storage offset where output
 * element i's group starts (row-major over the kept dims), `inner[j]` the offset of the group's
 * j-th element relative to that start (row-major over the reduced `dims`, sorted ascending). For a
 * full reduction j is therefore the flat row-major index, and for one dim it is the index along it.
 */
export interface ReductionSpace {
  readonly outer: Int32Array;
  readonly inner: Int32Array;
}

export function reductionSpace(v: Pick<CpuView, 'shape' | 'strides' | 'offset'>, dims: readonly number[]): ReductionSpace {
  const kept = v.shape.map((_, d) => d).filter((d) => !dims.includes(d));
  return {
    outer: stridedOffsets(kept.map((d) => v.shape[d]!), kept.map((d) => v.strides[d]!), v.offset),
    inner: stridedOffsets(dims.map((d) => v.shape[d]!), dims.map((d) => v.strides[d]!), 0),
  };
}

/**
 * What a kernel folds, group by group: group i's element j is `data[at(i) + inner[j]]`. Without a
 * prologue that is input 0 read in place. With one, the reduced tensor is `prologue(inputs…)` over
 * the inputs broadcast together: `at(i)` evaluates group i's elements into a row buffer first (the
 * generated loop reads each input through its own strides), so each element is computed once and
 * no tensor-sized temporary exists.
 */
interface Groups {
  readonly count: number;
  readonly data: ArrayLike<number>;
  readonly inner: Int32Array;
  at(i: number): number;
}

type FillFn = (row: Float64Array, ins: ArrayLike<number>[], bases: number[], inners: Int32Array[], C: readonly number[]) => void;

/** The JavaScript filling a row buffer with `expr` of `nIn` inputs, input k's element j at `ins[k][bases[k] + inners[k][j]]`, and the values it reads from `C`. */
function prologueKernel(expr: Expr, nIn: number): { source: string; constants: number[] } {
  const { body, result, constants } = jsExprBody(expr, (k) => `x${k}[b${k} + i${k}[j]]`);
  const ks = Array.from({ length: nIn }, (_, k) => k);
  const setup = constantDecls(constants.length) + ks.map((k) => ` const x${k} = ins[${k}], b${k} = bases[${k}], i${k} = inners[${k}];`).join('');
  return { source: `function fill(row, ins, bases, inners, C) {\n${setup}\nfor (let j = 0; j < row.length; j++) {\n${body}\nrow[j] = ${result};\n}\n}`, constants };
}

/** The JavaScript `prologueKernel` generates (for reports). */
export function prologueSource(expr: Expr, nIn: number): string {
  return prologueKernel(expr, nIn).source;
}

/** The groups over `dims` of input 0, or of `prologue` over the inputs broadcast together. */
function groupsOf(inputs: readonly CpuView[], prologue: Expr | undefined, dims: readonly number[]): Groups {
  if (!prologue) {
    const x = inputs[0]!, { outer, inner } = reductionSpace(x, dims);
    return { count: outer.length, data: x.data, inner, at: (i) => outer[i]! };
  }
  const shape = broadcastShapes('prologue', ...inputs.map((v) => v.shape));
  const spaces = inputs.map((v) => reductionSpace({ shape, strides: broadcastStrides(v, shape), offset: v.offset }, dims));
  const { source, constants } = prologueKernel(prologue, inputs.length);
  const fill = generatedKernels.get<FillFn>(source, () => source, H);
  const ins = inputs.map((v) => v.data), inners = spaces.map((s) => s.inner);
  const n = dims.reduce((a, d) => a * shape[d]!, 1);
  const row = new Float64Array(n), iota = Int32Array.from({ length: n }, (_, j) => j), bases = inputs.map(() => 0);
  return {
    count: spaces[0]!.outer.length,
    data: row,
    inner: iota,
    at(i) {
      spaces.forEach((s, k) => (bases[k] = s.outer[i]!));
      fill(row, ins, bases, inners, constants);
      return 0;
    },
  };
}

export type ReduceKind = 'sum' | 'mean' | 'prod' | 'max' | 'min' | 'argmax' | 'argmin' | 'var' | 'std';

/** Folds one group (x[base + inner[j]] for every j) to a value; `intOut` means the result is stored as int32. */
type Fold = (x: ArrayLike<number>, base: number, inner: Int32Array, intOut: boolean, correction: number) => number;

function sum(x: ArrayLike<number>, base: number, inner: Int32Array, intOut: boolean): number {
  let s = 0;
  // Integer sums wrap at every step, so they are exact modulo 2^32 however long the group is.
  if (intOut) for (let j = 0; j < inner.length; j++) s = (s + x[base + inner[j]!]!) | 0;
  else for (let j = 0; j < inner.length; j++) s += x[base + inner[j]!]!;
  return s;
}

function variance(x: ArrayLike<number>, base: number, inner: Int32Array, _intOut: boolean, correction: number): number {
  // Two passes (mean, then squared deviations) avoid the cancellation of Σx² − (Σx)²/n.
  const n = inner.length;
  const mean = sum(x, base, inner, false) / n;
  let ss = 0;
  for (let j = 0; j < n; j++) {
    const d = x[base + inner[j]!]! - mean;
    ss += d * d;
  }
  return ss / Math.max(0, n - correction);
}

/** Index of the first largest (sign 1) or smallest (sign −1) element; NaN counts as the extreme, as in PyTorch. */
function argExtreme(sign: 1 | -1): Fold {
  return (x, base, inner) => {
    let best = 0, m = x[base + inner[0]!]!;
    for (let j = 1; j < inner.length && m === m; j++) {
      const v = x[base + inner[j]!]!;
      if (sign * v > sign * m || v !== v) {
        m = v;
        best = j;
      }
    }
    return best;
  };
}

/** The largest (sign 1) or smallest (sign −1) element; NaN propagates. */
function extreme(sign: 1 | -1): Fold {
  const arg = argExtreme(sign);
  return (x, base, inner, intOut, c) => x[base + inner[arg(x, base, inner, intOut, c)]!]!;
}

const FOLDS: Record<ReduceKind, Fold> = {
  sum,
  mean: (x, base, inner) => sum(x, base, inner, false) / inner.length,
  prod(x, base, inner, intOut) {
    let p = 1;
    // Math.imul keeps integer products exact modulo 2^32 (a double product would lose low bits first).
    if (intOut) for (let j = 0; j < inner.length; j++) p = Math.imul(p, x[base + inner[j]!]!);
    else for (let j = 0; j < inner.length; j++) p *= x[base + inner[j]!]!;
    return p;
  },
  max: extreme(1),
  min: extreme(-1),
  argmax: argExtreme(1),
  argmin: argExtreme(-1),
  var: variance,
  std: (x, base, inner, intOut, c) => Math.sqrt(variance(x, base, inner, intOut, c)),
};

/** Reduces input 0 (or `prologue` over the inputs) over `dims` (sorted) into the contiguous `out`, one element per kept-dims position. */
export function reduceKernel(kind: ReduceKind, inputs: readonly CpuView[], prologue: Expr | undefined, dims: readonly number[], correction: number, out: CpuView): void {
  if (kernelOverrides.reduce?.(kind, inputs, prologue, dims, correction, out)) return;
  const g = groupsOf(inputs, prologue, dims);
  const fold = FOLDS[kind];
  const intOut = out.dtype !== 'float32' && out.dtype !== 'float16';
  for (let i = 0; i < g.count; i++) out.data[i] = fold(g.data, g.at(i), g.inner, intOut, correction);
}

/** softmax or logSoftmax along `dims` (one dim, or none for a 0-d tensor) of input 0 or its prologue, subtracting the group's max first. */
export function softmaxKernel(inputs: readonly CpuView[], prologue: Expr | undefined, dims: readonly number[], log: boolean, out: CpuView): void {
  if (kernelOverrides.softmax?.(inputs, prologue, dims, log, out)) return;
  const g = groupsOf(inputs, prologue, dims), os = reductionSpace(out, dims);
  const { data: x, inner } = g, n = inner.length;
  const e = new Float64Array(n);
  for (let i = 0; i < g.count; i++) {
    const xb = g.at(i), ob = os.outer[i]!;
    let m = -Infinity;
    for (let j = 0; j < n; j++) m = Math.max(m, x[xb + inner[j]!]!);
    let s = 0;
    for (let j = 0; j < n; j++) s += e[j] = Math.exp(x[xb + inner[j]!]! - m);
    if (log) {
      const shift = m + Math.log(s);
      for (let j = 0; j < n; j++) out.data[ob + os.inner[j]!] = x[xb + inner[j]!]! - shift;
    } else {
      for (let j = 0; j < n; j++) out.data[ob + os.inner[j]!] = e[j]! / s;
    }
  }
}

/** Running sums along `dims` (one dim, or none for a 0-d tensor) of input 0 or its prologue; int32 outputs wrap at every step. */
export function cumsumKernel(inputs: readonly CpuView[], prologue: Expr | undefined, dims: readonly number[], out: CpuView): void {
  const g = groupsOf(inputs, prologue, dims), os = reductionSpace(out, dims);
  const { data: x, inner } = g;
  const intOut = out.dtype === 'int32';
  for (let i = 0; i < g.count; i++) {
    const xb = g.at(i), ob = os.outer[i]!;
    let s = 0;
    for (let j = 0; j < inner.length; j++) {
      s = intOut ? (s + x[xb + inner[j]!]!) | 0 : s + x[xb + inner[j]!]!;
      out.data[ob + os.inner[j]!] = s;
    }
  }
}
