import { SinterError, check } from '../errors.js';
import { isFloat } from '../tensor/dtype.js';
import { numel, normDim } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { readContiguous } from '../kernels/cpu/util.js';
import { bindings, computeType, loadElement } from '../kernels/wgsl/dtype.js';
import type { GpuView, WebGpuCaps, WgslKernel, WgslProgram } from '../kernels/wgsl/kernel.js';
import { GRID_PARAMS, grid, workgroupSize } from '../kernels/wgsl/grid.js';
import { KernelParams } from '../kernels/wgsl/params.js';
import { withPrelude } from '../kernels/wgsl/prelude.js';
import { offsetOf, unravel } from '../kernels/wgsl/strided.js';
import { gather } from './movement.js';
import { apply1, checkInputs, defineOp } from './op.js';
import { contiguous, narrow, reshape, squeeze } from './views.js';

// Sorting, as PyTorch orders values: NaN is larger than every number (last ascending, first
// descending), and equal values keep their original order (every sort here is stable, so
// `stable: false` gives the same, valid, result). One op computes the permutation (`argsort`);
// values are gathered through it, so sort, topk and kthvalue share one kernel per backend.

export interface ArgsortAttrs {
  readonly dim: number;
  readonly descending: boolean;
}

/** Whether a strictly precedes b in the order (NaN largest); ties are broken by position. */
function precedes(descending: boolean): (a: number, b: number) => boolean {
  return descending
    ? (a, b) => (a !== a || b !== b ? a !== a && b === b : a > b)
    : (a, b) => (a !== a || b !== b ? a === a && b !== b : a < b);
}

/** int32 permutation along `dim` that sorts the input; a 0-d input counts as 1-D of size 1. */
export const argsortOp = defineOp<ArgsortAttrs>({
  name: 'argsort',
  infer([x]) {
    return [{ shape: [...x!.shape], dtype: 'int32' }];
  },
  cpu([x], { dim, descending }, [out]) {
    const shape = x!.shape.length === 0 ? [1] : x!.shape;
    const values = readContiguous(x!), o = out!.data;
    const size = shape[dim]!, inner = numel(shape.slice(dim + 1)), outer = numel(shape.slice(0, dim));
    const before = precedes(descending);
    const order = Array.from({ length: size }, (_, i) => i);
    for (let a = 0; a < outer; a++) {
      for (let b = 0; b < inner; b++) {
        const base = a * size * inner + b;
        for (let i = 0; i < size; i++) order[i] = i;
        // Array.prototype.sort is stable, so a comparator without position keeps ties in order.
        order.sort((i, j) => {
          const vi = values[base + i * inner]!, vj = values[base + j * inner]!;
          return before(vi, vj) ? -1 : before(vj, vi) ? 1 : 0;
        });
        for (let i = 0; i < size; i++) o[base + i * inner] = order[i]!;
      }
    }
  },
  webgpu([x], { dim, descending }, [out], caps) {
    const size = x!.shape.length === 0 ? 1 : x!.shape[dim]!;
    return size <= RANK_MAX ? rankKernel(x!, dim, descending, caps) : bitonicProgram(x!, dim, descending, caps);
  },
});

/** Rows up to this long are sorted by ranks (O(size²) per row, one dispatch); longer ones by a bitonic network. */
const RANK_MAX = 2048;

/** A 0-d view as 1-D of size 1, so every kernel sees one dim to sort along. */
function asRows(x: GpuView): GpuView {
  return x.shape.length === 0 ? { ...x, shape: [1], strides: [0] } : x;
}

/**
 * One invocation per element: its rank among its row (how many elements precede it, ties by
 * position) is where its index goes. O(size²) per row, fully parallel and stable.
 */
function rankKernel(view: GpuView, dim: number, descending: boolean, caps: WebGpuCaps): WgslKernel {
  const x = asRows(view);
  const n = numel(x.shape), size = x.shape[dim]!, inner = numel(x.shape.slice(dim + 1));
  const t = computeType(x.dtype), float = isFloat(x.dtype);
  const wg = workgroupSize(128, caps), g = grid('argsort', n, wg, caps);
  const { lines, idx } = unravel('e', x.shape);
  // x's offset is a kernel parameter: views anywhere in a buffer share the pipeline.
  const params = new KernelParams();
  const offset = params.u32(x.offset);
  const at = (j: string) => `${offsetOf(0, x.strides, idx.map((v, d) => (d === dim ? j : v)))} + ${offset}`;
  const cmp = descending ? 'a > b' : 'a < b';
  const nanRule = descending ? 'na && !nb' : '!na && nb';
  const first = float
    ? `fn first(a: f32, b: f32) -> bool {
  let na = sn_isnan(a); let nb = sn_isnan(b);
  if (na || nb) { return ${nanRule}; }
  return ${cmp};
}`
    : `fn first(a: i32, b: i32) -> bool { return ${cmp}; }`;
  const source = `${bindings([x.dtype], ['int32'], caps)}

${withPrelude(`${params.declaration()}

fn load(o: u32) -> ${t} { return ${loadElement('in0', x.dtype, 'o', caps)}; }

${first}

@compute @workgroup_size(${wg}) fn main(${GRID_PARAMS}) {
  let e = ${g.index};
  if (e >= ${n}u) { return; }
  ${lines.join('\n  ')}
  let pos = ${idx[dim]};
  let v = load(${at('pos')});
  var r = 0u;
  for (var j = 0u; j < ${size}u; j++) {
    let w = load(${at('j')});
    if (first(w, v) || (j < pos && !first(v, w))) { r++; }
  }
  out0[e - pos * ${inner}u + r * ${inner}u] = i32(pos);
}
`)}`;
  return { source, workgroups: g.workgroups, params: params.words() };
}

/**
 * Long rows: every element becomes a u32 key that orders as the values do (NaN largest, −0 = 0,
 * inverted for descending), rows are padded to a power of two with keys and positions that sort
 * last, and a bitonic network sorts (key, position) pairs: positions break ties, so the result is
 * the stable order. One pass fills the scratch rows, log²-many compare-exchange passes sort them,
 * and a last pass writes the positions out.
 */
function bitonicProgram(view: GpuView, dim: number, descending: boolean, caps: WebGpuCaps): WgslProgram {
  const x = asRows(view);
  const size = x.shape[dim]!, inner = numel(x.shape.slice(dim + 1)), rows = numel(x.shape) / size;
  let P = 1;
  while (P < size) P *= 2;
  const total = rows * P, wg = workgroupSize(256, caps);
  const decls = `${bindings([x.dtype], ['int32'], caps)}
@group(0) @binding(2) var<storage, read_write> keys: array<u32>;
@group(0) @binding(3) var<storage, read_write> pos: array<u32>;`;
  // `body` may read per-pass values from `params`: x's offset, and the compare-exchange steps'
  // (k, j), so the log²(P) passes share one pipeline.
  const kernel = (body: string, params: KernelParams): WgslKernel => {
    const g = grid('argsort', total, wg, caps);
    return { label: 'argsort', params: params.words(), source: `${decls}

${withPrelude(`${params.declaration()}

@compute @workgroup_size(${wg}) fn main(${GRID_PARAMS}) {
  let i = ${g.index};
  if (i >= ${total}u) { return; }
  let row = i / ${P}u; let p = i % ${P}u;
  ${body}
}
`)}`, workgroups: g.workgroups };
  };
  // Element (row, p) of the sort is logical element (a, p, b) of x, with row = a·inner + b.
  const { lines, idx } = unravel('e', x.shape);
  const logical = `let e = (row / ${inner}u) * ${size * inner}u + p * ${inner}u + row % ${inner}u;`;
  const value = loadElement('in0', x.dtype, 'o', caps);
  const key = isFloat(x.dtype)
    ? `let f = f32(${value});
  var k = select(bitcast<u32>(f), 0u, f == 0.0);
  k = select(k | 0x80000000u, ~k, (k & 0x80000000u) != 0u);
  keys[i] = select(${descending ? '~k' : 'k'}, ${descending ? '0u' : '0xffffffffu'}, sn_isnan(f));`
    : `let k = bitcast<u32>(i32(${value})) ^ 0x80000000u;
  keys[i] = ${descending ? '~k' : 'k'};`;
  const fillParams = new KernelParams();
  const fill = kernel(`if (p >= ${size}u) { keys[i] = 0xffffffffu; pos[i] = 0xffffffffu; return; }
  ${logical}
  ${lines.join(' ')}
  let o = ${offsetOf(0, x.strides, idx)} + ${fillParams.u32(x.offset)};
  ${key}
  pos[i] = p;`, fillParams);
  const passes: WgslKernel[] = [fill];
  for (let k = 2; k <= P; k *= 2) {
    for (let j = k / 2; j >= 1; j /= 2) {
      const step = new KernelParams();
      passes.push(kernel(`let l = i ^ ${step.u32(j)};
  if (l <= i) { return; }
  let up = (p & ${step.u32(k)}) == 0u;
  let ki = keys[i]; let kl = keys[l]; let pi = pos[i]; let pl = pos[l];
  let greater = ki > kl || (ki == kl && pi > pl);
  if (greater == up) { keys[i] = kl; keys[l] = ki; pos[i] = pl; pos[l] = pi; }`, step));
    }
  }
  passes.push(kernel(`if (p >= ${size}u) { return; }
  out0[(row / ${inner}u) * ${size * inner}u + p * ${inner}u + row % ${inner}u] = i32(pos[i]);`, new KernelParams()));
  return { scratch: [{ bytes: 4 * total }, { bytes: 4 * total }], passes, label: 'argsort' };
}

export interface SortOptions {
  /** The dim to sort along (default −1). */
  dim?: number;
  /** Largest first (default false). NaN counts as the largest value. */
  descending?: boolean;
  /** Accepted for PyTorch compatibility: every sort here is stable. */
  stable?: boolean;
}

/** Values and their indices, readable as a pair (`const [values, indices] = sort(x)`) or by name. */
export type ValuesIndices = [Tensor, Tensor] & { readonly values: Tensor; readonly indices: Tensor };

function valuesIndices(values: Tensor, indices: Tensor): ValuesIndices {
  return Object.assign([values, indices] as [Tensor, Tensor], { values, indices });
}

function sortOptions(op: string, x: Tensor, dimOrOpts: number | SortOptions | undefined, descending: boolean | undefined): ArgsortAttrs {
  checkInputs(op, [x]);
  const o: SortOptions = typeof dimOrOpts === 'object' && dimOrOpts !== null ? dimOrOpts : { dim: dimOrOpts, descending };
  if (typeof dimOrOpts === 'object' && descending !== undefined) throw new SinterError(op, 'give descending either in the options object or as an argument, not both');
  const desc = o.descending ?? false;
  if (typeof desc !== 'boolean') throw new SinterError(op, `descending must be a boolean, got ${JSON.stringify(desc)}`);
  const dim = o.dim ?? -1;
  if (typeof dim !== 'number') throw new SinterError(op, `dim must be a number, got ${JSON.stringify(dim)}`);
  return { dim: normDim(op, dim, x.ndim), descending: desc };
}

/** Indices that sort `x` along `dim` (default −1), as int32: `argsort(x, dim?, descending?)` or `argsort(x, { dim, descending, stable })`. */
export function argsort(x: Tensor, dimOrOpts?: number | SortOptions, descending?: boolean): Tensor {
  return apply1(argsortOp, [x], sortOptions('argsort', x, dimOrOpts, descending));
}

/** Gathers x through the permutation `indices` along dim (a 0-d x is its own sort). */
function gatherAlong(x: Tensor, dim: number, indices: Tensor): Tensor {
  if (x.ndim > 0) return gather(x, dim, indices);
  const flat = reshape(x, [1]), idx = reshape(indices, [1]);
  const g = gather(flat, 0, idx);
  const out = reshape(g, []);
  for (const t of [flat, idx, g]) if (t !== out) t.dispose();
  return out;
}

/**
 * Sorted values and their int32 indices along `dim` (default −1), ascending unless `descending`.
 * Stable; NaN sorts as the largest value, as in PyTorch.
 */
export function sort(x: Tensor, dimOrOpts?: number | SortOptions, descending?: boolean): ValuesIndices {
  const attrs = sortOptions('sort', x, dimOrOpts, descending);
  const indices = apply1(argsortOp, [x], attrs);
  return valuesIndices(gatherAlong(x, attrs.dim, indices), indices);
}

export interface TopkOptions {
  dim?: number;
  /** The k largest (default) or the k smallest. */
  largest?: boolean;
  /** Results in sorted order (always true here; accepted for PyTorch compatibility). */
  sorted?: boolean;
}

function checkK(op: string, x: Tensor, k: unknown, dim: number, min: number): number {
  // A 0-d tensor holds one element and keeps its (empty) shape, so k is 1.
  const size = x.ndim === 0 ? 1 : x.shape[dim]!;
  if (x.ndim === 0) min = 1;
  if (typeof k !== 'number' || !Number.isInteger(k) || k < min || k > size) {
    throw new SinterError(op, `k must be an integer in [${min}, ${size}] for dim ${dim} of ${x.describe()}, got ${JSON.stringify(k)}`);
  }
  return k;
}

/** Picks positions [start, start + length) of the permutation along dim and gathers x through them. */
function pick(x: Tensor, attrs: ArgsortAttrs, start: number, length: number): ValuesIndices {
  const all = apply1(argsortOp, [x], attrs);
  if (x.ndim === 0) return valuesIndices(gatherAlong(x, 0, all), all);
  const part = narrow(all, attrs.dim, start, length);
  const indices = contiguous(part);
  if (part !== indices) part.dispose();
  if (all !== indices) all.dispose();
  return valuesIndices(gather(x, attrs.dim, indices), indices);
}

/**
 * The k largest (or, with `largest: false`, smallest) values along `dim` (default −1) with their
 * int32 indices, sorted; ties keep their original order and NaN counts as the largest value.
 */
export function topk(x: Tensor, k: number, dimOrOpts?: number | TopkOptions, largest?: boolean): ValuesIndices {
  checkInputs('topk', [x]);
  const o: TopkOptions = typeof dimOrOpts === 'object' && dimOrOpts !== null ? dimOrOpts : { dim: dimOrOpts, largest };
  const big = o.largest ?? true;
  check(typeof big === 'boolean', 'topk', () => `largest must be a boolean, got ${JSON.stringify(big)}`);
  const attrs = sortOptions('topk', x, o.dim, big);
  return pick(x, attrs, 0, checkK('topk', x, k, attrs.dim, 0));
}

export interface KthvalueOptions {
  dim?: number;
  keepdim?: boolean;
}

/** The k-th smallest value (k counts from 1) along `dim` (default −1) and its int32 index; NaN counts as the largest value. */
export function kthvalue(x: Tensor, k: number, dimOrOpts?: number | KthvalueOptions, keepdim?: boolean): ValuesIndices {
  checkInputs('kthvalue', [x]);
  const o: KthvalueOptions = typeof dimOrOpts === 'object' && dimOrOpts !== null ? dimOrOpts : { dim: dimOrOpts, keepdim };
  const keep = o.keepdim ?? false;
  check(typeof keep === 'boolean', 'kthvalue', () => `keepdim must be a boolean, got ${JSON.stringify(keep)}`);
  const attrs = sortOptions('kthvalue', x, o.dim, false);
  const r = pick(x, attrs, checkK('kthvalue', x, k, attrs.dim, 1) - 1, 1);
  if (keep || x.ndim === 0) return r;
  const values = squeeze(r.values, attrs.dim), indices = squeeze(r.indices, attrs.dim);
  r.values.dispose();
  r.indices.dispose();
  return valuesIndices(values, indices);
}

declare module '../tensor/tensor.js' {
  interface Tensor {
    sort(dimOrOpts?: number | SortOptions, descending?: boolean): ValuesIndices;
    argsort(dimOrOpts?: number | SortOptions, descending?: boolean): Tensor;
    topk(k: number, dimOrOpts?: number | TopkOptions, largest?: boolean): ValuesIndices;
    kthvalue(k: number, dimOrOpts?: number | KthvalueOptions, keepdim?: boolean): ValuesIndices;
  }
}

Object.assign(Tensor.prototype, {
  sort(this: Tensor, dimOrOpts?: number | SortOptions, descending?: boolean) { return sort(this, dimOrOpts, descending); },
  argsort(this: Tensor, dimOrOpts?: number | SortOptions, descending?: boolean) { return argsort(this, dimOrOpts, descending); },
  topk(this: Tensor, k: number, dimOrOpts?: number | TopkOptions, largest?: boolean) { return topk(this, k, dimOrOpts, largest); },
  kthvalue(this: Tensor, k: number, dimOrOpts?: number | KthvalueOptions, keepdim?: boolean) { return kthvalue(this, k, dimOrOpts, keepdim); },
});
