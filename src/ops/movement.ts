import { type DeviceName, getBackend } from '../backend/backend.js';
import { check, fmtShape } from '../errors.js';
import { type DType, castValue, isInt, promoteTypes } from '../tensor/dtype.js';
import { normDim, normDims, sameShape, sizeArgs } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { catKernel, checkedIndexTable, gatherKernel, gatherSeparable, identityTable } from '../kernels/cpu/movement.js';
import type { GpuView, WebGpuCaps } from '../kernels/wgsl/kernel.js';
import * as wgsl from '../kernels/wgsl/movement.js';
import type { KernelParams } from '../kernels/wgsl/params.js';
import { type TensorMeta, apply1, checkInputs, defineOp, describeMeta } from './op.js';
import { slice, unsqueeze } from './views.js';

/** A dim given positionally or as `{ dim }` (PyTorch accepts both). */
export type DimArg = number | { dim?: number };

function dimOf(arg: DimArg | undefined): number {
  return typeof arg === 'number' ? arg : arg?.dim ?? 0;
}

/** PyTorch's legacy cat rule: 1-D tensors of size 0 are left out (but still take part in dtype promotion). */
function skippedInCat(t: TensorMeta): boolean {
  return t.shape.length === 1 && t.shape[0] === 0;
}

function checkIndexDType(op: string, index: TensorMeta, what = 'index'): void {
  check(isInt(index.dtype), op, () => `${what} must be an integer tensor (int32, int8 or uint8), got ${describeMeta(index)}; convert it with .to('int32')`);
}

// ---- cat / stack ----------------------------------------------------------------------------

interface CatAttrs {
  dim: number;
  /** The promotion of every joined tensor's dtype (of the whole list, when a long list is joined in groups). */
  dtype: DType;
}

const catOp = defineOp<CatAttrs>({
  name: 'cat',
  infer(inputs, { dim, dtype }) {
    const kept = inputs.map((t, i) => ({ t, i })).filter(({ t }) => !skippedInCat(t));
    if (kept.length === 0) return [{ shape: [0], dtype }];
    for (const { t, i } of kept) {
      check(t.shape.length > 0, 'cat', `a 0-d tensor (${describeMeta(t)} at position ${i}) cannot be concatenated; unsqueeze it or use stack`);
    }
    const { t: first, i: i0 } = kept[0]!;
    const shape = [...first.shape];
    shape[dim] = 0;
    for (const { t, i } of kept) {
      const pair = (): string => `${describeMeta(first)} at position ${i0} and ${describeMeta(t)} at position ${i}`;
      check(t.shape.length === first.shape.length, 'cat', () => `tensors must have the same rank, but got ${pair()}`);
      t.shape.forEach((s, d) => check(d === dim || s === first.shape[d], 'cat', () => `sizes must match except in dim ${dim}, but ${pair()} differ in dim ${d}`));
      shape[dim]! += t.shape[dim]!;
    }
    return [{ shape, dtype }];
  },
  cpu(inputs, { dim }, [out]) {
    catKernel(inputs, inputs.map(skippedInCat), dim, out!);
  },
  webgpu(inputs, { dim }, [out], caps) {
    return wgsl.catKernel(inputs, inputs.map(skippedInCat), dim, out!, caps);
  },
});

/** How many inputs one kernel on `device` may read: on WebGPU each input and the output take a storage buffer binding. */
function kernelInputLimit(device: DeviceName): number {
  const caps = (getBackend(device) as { caps?: WebGpuCaps }).caps;
  return caps ? caps.limits.maxStorageBuffersPerShaderStage - 1 : Infinity;
}

/** Runs catOp on the tensors, joining them in groups first when they are more than one kernel can read. */
function catAll(tensors: readonly Tensor[], dim: number): Tensor {
  const attrs = { dim, dtype: tensors.map((t) => t.dtype).reduce(promoteTypes) };
  const max = kernelInputLimit(tensors[0]!.device);
  if (tensors.length <= max) return apply1(catOp, tensors, attrs);
  catOp.infer(tensors, attrs); // reports bad input by its position in the whole list
  // Groups are joined in the final dtype, so each value is converted once (int → float16 → float32 could round).
  const groups: Tensor[] = [];
  for (let i = 0; i < tensors.length; i += max) groups.push(apply1(catOp, tensors.slice(i, i + max), attrs));
  const out = catAll(groups, dim);
  for (const g of groups) g.dispose();
  return out;
}

/** Joins tensors along an existing dim; dtypes promote, and 1-D empty tensors are skipped (as in PyTorch). */
export function cat(tensors: readonly Tensor[], dim: DimArg = 0): Tensor {
  check(Array.isArray(tensors) && tensors.length > 0, 'cat', 'expected a non-empty array of tensors');
  checkInputs('cat', tensors);
  const ref = tensors.find((t) => !skippedInCat(t));
  // With every tensor skipped, PyTorch ignores dim and returns an empty 1-D tensor; a 0-d one is reported by infer.
  const d = ref && ref.ndim > 0 ? normDim('cat', dimOf(dim), ref.ndim) : 0;
  return catAll(tensors, d);
}

/** Joins tensors of one shape along a new dim `dim` (in [-rank-1, rank]); dtypes promote as in cat. */
export function stack(tensors: readonly Tensor[], dim: DimArg = 0): Tensor {
  check(Array.isArray(tensors) && tensors.length > 0, 'stack', 'expected a non-empty array of tensors');
  checkInputs('stack', tensors);
  const first = tensors[0]!;
  tensors.forEach((t, i) =>
    check(sameShape(t.shape, first.shape), 'stack', () => `expects tensors of equal shape, but got ${first.describe()} at position 0 and ${t.describe()} at position ${i}`));
  const d = normDim('stack', dimOf(dim), first.ndim + 1);
  const views = tensors.map((t) => unsqueeze(t, d));
  const out = catAll(views, d);
  for (const v of views) v.dispose();
  return out;
}

// ---- split / chunk (views) ------------------------------------------------------------------

function splitDim(op: string, x: Tensor, dim: DimArg | undefined): number {
  checkInputs(op, [x]);
  check(x.ndim > 0, op, `expects a tensor with at least one dim, got ${x.describe()}`);
  return normDim(op, dimOf(dim), x.ndim);
}

function viewsOfSizes(x: Tensor, d: number, sizes: readonly number[]): Tensor[] {
  let start = 0;
  return sizes.map((n) => slice(x, d, start, (start += n)));
}

/**
 * Views of consecutive pieces along `dim`: a number is the piece size (the last may be smaller),
 * an array gives every piece's size and must sum to the dim's size.
 */
export function split(x: Tensor, splitSizeOrSections: number | readonly number[], dim: DimArg = 0): Tensor[] {
  const d = splitDim('split', x, dim);
  const n = x.shape[d]!;
  if (typeof splitSizeOrSections === 'number') {
    const s = splitSizeOrSections;
    check(Number.isInteger(s) && s >= 0, 'split', `split size must be a non-negative integer, got ${s}`);
    check(s > 0 || n === 0, 'split', `split size can only be 0 when dim ${d} is empty, but ${x.describe()} has size ${n} there`);
    const count = s === 0 ? 1 : Math.max(Math.ceil(n / s), 1);
    return viewsOfSizes(x, d, Array.from({ length: count }, (_, i) => Math.min(s, n - i * s)));
  }
  const sizes = [...splitSizeOrSections];
  check(sizes.every((s) => Number.isInteger(s) && s >= 0), 'split', `sections must be non-negative integers, got ${JSON.stringify(sizes)}`);
  const total = sizes.reduce((a, b) => a + b, 0);
  check(total === n, 'split', `sections ${fmtShape(sizes)} sum to ${total}, but dim ${d} of ${x.describe()} has size ${n}`);
  return viewsOfSizes(x, d, sizes);
}

/** Up to `chunks` views of size ceil(n / chunks) along `dim` (PyTorch's rule: there may be fewer). */
export function chunk(x: Tensor, chunks: number, dim: DimArg = 0): Tensor[] {
  const d = splitDim('chunk', x, dim);
  check(Number.isInteger(chunks) && chunks > 0, 'chunk', `chunks must be a positive integer, got ${chunks}`);
  const n = x.shape[d]!;
  // An empty dim still gives `chunks` (empty) pieces, as in PyTorch.
  if (n === 0) return viewsOfSizes(x, d, new Array<number>(chunks).fill(0));
  const size = Math.ceil(n / chunks);
  return viewsOfSizes(x, d, Array.from({ length: Math.ceil(n / size) }, (_, i) => Math.min(size, n - i * size)));
}

// ---- pad ------------------------------------------------------------------------------------

export type PadMode = 'constant' | 'reflect' | 'replicate' | 'circular';
const PAD_MODES: readonly PadMode[] = ['constant', 'reflect', 'replicate', 'circular'];

export interface PadOptions {
  mode?: PadMode;
  /** Fill value for 'constant' mode (default 0). */
  value?: number;
}

interface PadAttrs {
  /** PyTorch's flat list: [left, right] of the last dim, then of the one before, … */
  pad: number[];
  mode: PadMode;
  value: number;
}

/** Input index for output position j along a dim of `size` padded by (l, r); -1 means the fill value. */
function padTable(mode: PadMode, size: number, l: number, r: number): Int32Array {
  const out = new Int32Array(size + l + r);
  // Circular wraps over what remains after negative pads crop (PyTorch copies from the cropped output).
  const cropL = Math.max(-l, 0), kept = size - cropL - Math.max(-r, 0), padL = Math.max(l, 0);
  for (let j = 0; j < out.length; j++) {
    const i = j - l;
    switch (mode) {
      case 'constant':
        out[j] = i >= 0 && i < size ? i : -1;
        break;
      case 'reflect':
        out[j] = i < 0 ? -i : i >= size ? 2 * (size - 1) - i : i;
        break;
      case 'replicate':
        out[j] = Math.min(Math.max(i, 0), size - 1);
        break;
      case 'circular':
        out[j] = cropL + ((((j - padL) % kept) + kept) % kept);
        break;
    }
  }
  return out;
}

const padOp = defineOp<PadAttrs>({
  name: 'pad',
  infer([x], { pad, mode, value }) {
    const rank = x!.shape.length;
    const what = `${mode} padding ${fmtShape(pad)} of ${describeMeta(x!)}`;
    check(pad.every((p) => Number.isInteger(p)), 'pad', `pad widths must be integers, got ${fmtShape(pad)}`);
    check(pad.length % 2 === 0, 'pad', `the pad list must have an even length ([left, right, top, bottom, …]), got ${fmtShape(pad)}`);
    check(pad.length <= 2 * rank, 'pad', `${what} pads ${pad.length / 2} dims, but the input has only ${rank}`);
    const k = pad.length / 2;
    if (mode === 'constant') {
      if (isInt(x!.dtype)) {
        const v = Math.trunc(value);
        check(Number.isFinite(value) && castValue(x!.dtype, v) === v, 'pad', `fill value ${value} cannot be converted to ${x!.dtype} without overflow`);
      }
    } else {
      check(value === 0, 'pad', `mode '${mode}' takes no fill value, got ${value}`);
      check(k >= 1 && k <= 3 && (rank === k + 1 || rank === k + 2), 'pad', () =>
        `${what}: mode '${mode}' pads the last 1, 2 or 3 dims of a tensor with 1 or 2 leading (batch, channel) dims, ` +
        `so a pad list of length ${pad.length} needs a ${k + 1}-D or ${k + 2}-D input`);
    }
    const shape = [...x!.shape];
    for (let i = 0; i < k; i++) {
      const d = rank - 1 - i, size = x!.shape[d]!, l = pad[2 * i]!, r = pad[2 * i + 1]!;
      const dimWhat = `dim ${d} of size ${size} padded by (${l}, ${r}) in ${what}`;
      shape[d] = size + l + r;
      if (mode === 'reflect') check(l < size && r < size, 'pad', `reflect pads must be less than the dim's size: ${dimWhat}`);
      if (mode === 'circular') {
        const kept = size - Math.max(-l, 0) - Math.max(-r, 0);
        check(l <= kept && r <= kept, 'pad', `circular pads must not wrap around more than once (at most ${Math.max(kept, 0)} here): ${dimWhat}`);
      }
      if (mode === 'reflect' || mode === 'replicate') check(size > 0 && shape[d]! > 0, 'pad', `${mode} padding needs a non-empty input and output: ${dimWhat}`);
      check(shape[d]! >= 0, 'pad', `negative padding gives a negative output size ${shape[d]}: ${dimWhat}`);
    }
    return [{ shape, dtype: x!.dtype }];
  },
  cpu([x], { pad, mode, value }, [out]) {
    const rank = x!.shape.length, k = pad.length / 2;
    const tables = x!.shape.map((size, d) => (d < rank - k ? identityTable(size) : padTable(mode, size, pad[2 * (rank - 1 - d)]!, pad[2 * (rank - 1 - d) + 1]!)));
    gatherSeparable(x!, tables, out!.data, castValue(x!.dtype, value));
  },
  webgpu([x], { pad, mode, value }, [out], caps) {
    const rank = x!.shape.length, k = pad.length / 2;
    const sources = x!.shape.map((size, d) => (d < rank - k ? wgsl.identitySource : wgsl.padSource(mode, size, pad[2 * (rank - 1 - d)]!, pad[2 * (rank - 1 - d) + 1]!)));
    return wgsl.separableGatherKernel('pad', [x!], out!, sources, caps, mode === 'constant' ? { fill: castValue(x!.dtype, value) } : {});
  },
});

/**
 * Pads (or, with negative widths, crops) the last dims. `widths` is PyTorch's `pad`: the
 * flat list [left, right, top, bottom, …] starting from the last dim. 'reflect' needs pads < the dim's size,
 * 'circular' pads ≤ it; the non-constant modes pad the last 1–3 dims of a tensor with 1 or 2 leading dims.
 */
export function pad(x: Tensor, widths: readonly number[], modeOrOpts: PadMode | PadOptions = {}, value?: number): Tensor {
  checkInputs('pad', [x]);
  check(Array.isArray(widths), 'pad', `expected the pad widths as an array, got ${JSON.stringify(widths)}`);
  const opts: PadOptions = typeof modeOrOpts === 'string' ? { mode: modeOrOpts, value } : modeOrOpts;
  const mode = opts.mode ?? 'constant';
  check(PAD_MODES.includes(mode), 'pad', `mode must be one of ${PAD_MODES.map((m) => `'${m}'`).join(', ')}, got ${JSON.stringify(mode)}`);
  const v = opts.value ?? 0;
  check(typeof v === 'number', 'pad', `value must be a number, got ${JSON.stringify(v)}`);
  return apply1(padOp, [x], { pad: [...widths], mode, value: v });
}

// ---- gather / indexSelect / embedding -------------------------------------------------------

const gatherOp = defineOp<{ dim: number }>({
  name: 'gather',
  infer([x, index], { dim }) {
    checkIndexDType('gather', index!);
    // PyTorch treats a 0-d tensor as 1-D of size 1 here.
    const xs = x!.shape.length === 0 ? [1] : x!.shape, is = index!.shape.length === 0 ? [1] : index!.shape;
    check(xs.length === is.length, 'gather', () => `index ${describeMeta(index!)} must have the same rank as input ${describeMeta(x!)}`);
    is.forEach((s, d) =>
      check(d === dim || s <= xs[d]!, 'gather', () => `index ${describeMeta(index!)} is larger than input ${describeMeta(x!)} in dim ${d} (only dim ${dim} may be)`));
    return [{ shape: index!.shape, dtype: x!.dtype }];
  },
  cpu([x, index], { dim }, [out]) {
    gatherKernel('gather', x!, index!, dim, out!.data);
  },
  webgpu([x, index], { dim }, [out], caps) {
    const size = x!.shape.length === 0 ? 1 : x!.shape[dim]!;
    // The GPU reports the first bad index it meets, by its flat (row-major) position in the index tensor.
    const message = `index {value} at flat position {at} of index ${describeMeta(index!)} is out of range for dim ${dim} of input ${describeMeta(x!)} (valid: 0 to ${size - 1})`;
    return wgsl.gatherKernel(x!, index!, dim, out!, caps, message);
  },
});

/** out[i][j][k] = x[index[i][j][k]][j][k] for dim 0 (and so on): index is an int tensor of x's rank. */
export function gather(x: Tensor, dim: number, index: Tensor): Tensor {
  checkInputs('gather', [x, index]);
  return apply1(gatherOp, [x, index], { dim: normDim('gather', dim, x.ndim) });
}

const indexSelectOp = defineOp<{ dim: number }>({
  name: 'indexSelect',
  infer([x, index], { dim }) {
    checkIndexDType('indexSelect', index!);
    check(index!.shape.length <= 1, 'indexSelect', () => `index must be 0-d or 1-D, got ${describeMeta(index!)}`);
    const n = index!.shape[0] ?? 1;
    if (x!.shape.length === 0) {
      check(n === 1, 'indexSelect', () => `indexing a 0-d input ${describeMeta(x!)} takes exactly one index, got ${describeMeta(index!)}`);
      return [{ shape: [], dtype: x!.dtype }];
    }
    const shape = [...x!.shape];
    shape[dim] = n;
    return [{ shape, dtype: x!.dtype }];
  },
  cpu([x, index], { dim }, [out]) {
    const size = x!.shape[dim] ?? 1;
    const picked = checkedIndexTable('indexSelect', index!, size, () => `dim ${dim} of input ${describeMeta(x!)}`);
    gatherSeparable(x!, x!.shape.map((s, d) => (d === dim ? picked : identityTable(s))), out!.data);
  },
  webgpu([x, index], { dim }, [out], caps) {
    // A 0-d input (and its 0-d output) count as 1-D of size 1, so the one index is still read and checked.
    const as1d = (v: GpuView): GpuView => (v.shape.length === 0 ? { ...v, shape: [1], strides: [0] } : v);
    const src = as1d(x!), idx = as1d(index!), size = src.shape[dim]!;
    const sources = src.shape.map((_, d) => (d === dim ? (j: string, params: KernelParams) => `checked_index(${wgsl.indexValue(1, idx, [j], params)}, ${j})` : wgsl.identitySource));
    const message = `index {value} is out of range for dim ${dim} of input ${describeMeta(x!)} (valid: 0 to ${size - 1})`;
    return wgsl.separableGatherKernel('indexSelect', [src, index!], as1d(out!), sources, caps, { check: { size, message } });
  },
});

/** The entries of x at `index` (a 0-d or 1-D int tensor) along `dim`. */
export function indexSelect(x: Tensor, dim: number, index: Tensor): Tensor {
  checkInputs('indexSelect', [x, index]);
  return apply1(indexSelectOp, [x, index], { dim: normDim('indexSelect', dim, x.ndim) });
}

const embeddingOp = defineOp<Record<string, never>>({
  name: 'embedding',
  infer([input, weight]) {
    checkIndexDType('embedding', input!, 'input');
    check(weight!.shape.length === 2, 'embedding', () => `weight must be 2-D [numEmbeddings, embeddingDim], got ${describeMeta(weight!)}`);
    return [{ shape: [...input!.shape, weight!.shape[1]!], dtype: weight!.dtype }];
  },
  cpu([input, weight], _, [out]) {
    const [rows, cols] = weight!.shape as [number, number];
    const picked = checkedIndexTable('embedding', input!, rows, () => `weight ${describeMeta(weight!)} with ${rows} rows`);
    gatherSeparable(weight!, [picked, identityTable(cols)], out!.data);
  },
  webgpu([input, weight], _, [out], caps) {
    const rows = weight!.shape[0]!;
    const message = `index {value} is out of range for weight ${describeMeta(weight!)} with ${rows} rows (valid: 0 to ${rows - 1})`;
    return wgsl.embeddingKernel(input!, weight!, out!, caps, message);
  },
});

export interface EmbeddingOptions {
  /** Marks the padding row; in PyTorch it only affects gradients, so here it is checked and otherwise ignored. */
  paddingIdx?: number | null;
}

/** Rows of `weight` [numEmbeddings, dim] picked by the int tensor `input`: shape [...input.shape, dim]. */
export function embedding(input: Tensor, weight: Tensor, paddingIdx?: number | null | EmbeddingOptions): Tensor {
  checkInputs('embedding', [input, weight]);
  const p = typeof paddingIdx === 'object' && paddingIdx !== null ? paddingIdx.paddingIdx : paddingIdx;
  if (p !== undefined && p !== null && weight.ndim === 2) {
    const n = weight.shape[0]!;
    check(Number.isInteger(p) && p >= -n && p < n, 'embedding', `paddingIdx ${p} must be an integer in [${-n}, ${n - 1}] for weight ${weight.describe()}`);
  }
  return apply1(embeddingOp, [input, weight], {});
}

// ---- repeat / flip --------------------------------------------------------------------------

const repeatOp = defineOp<{ sizes: number[] }>({
  name: 'repeat',
  infer([x], { sizes }) {
    const rank = x!.shape.length;
    check(sizes.length >= rank, 'repeat', () => `needs at least one repeat count per dim of ${describeMeta(x!)}, got ${fmtShape(sizes)}`);
    check(sizes.every((s) => Number.isInteger(s) && s >= 0), 'repeat', `repeat counts must be non-negative integers, got ${fmtShape(sizes)}`);
    const lead = sizes.length - rank;
    return [{ shape: sizes.map((s, i) => s * (i < lead ? 1 : x!.shape[i - lead]!)), dtype: x!.dtype }];
  },
  cpu([x], { sizes }, [out]) {
    const lead = sizes.length - x!.shape.length;
    // x seen with the new leading dims as size-1 dims (stride 0).
    const shape = [...new Array<number>(lead).fill(1), ...x!.shape];
    const view = { ...x!, shape, strides: [...new Array<number>(lead).fill(0), ...x!.strides] };
    gatherSeparable(view, out!.shape.map((n, d) => Int32Array.from({ length: n }, (_, j) => j % shape[d]!)), out!.data);
  },
  webgpu([x], { sizes }, [out], caps) {
    const lead = sizes.length - x!.shape.length;
    const shape = [...new Array<number>(lead).fill(1), ...x!.shape];
    const view = { ...x!, shape, strides: [...new Array<number>(lead).fill(0), ...x!.strides] };
    // A dim of size 0 gives an empty output, which is never dispatched.
    const sources = shape.map((n): wgsl.DimSource => (n <= 1 ? () => '0' : (j) => `i32(${j} % ${n}u)`));
    return wgsl.separableGatherKernel('repeat', [view], out!, sources, caps);
  },
});

/** Tiles x: `sizes` (at least one per dim; extra ones add leading dims) count the copies per dim. */
export function repeat(x: Tensor, ...sizes: (number | readonly number[])[]): Tensor {
  checkInputs('repeat', [x]);
  return apply1(repeatOp, [x], { sizes: sizeArgs(sizes) });
}

const flipOp = defineOp<{ dims: number[] }>({
  name: 'flip',
  infer([x]) {
    return [{ shape: x!.shape, dtype: x!.dtype }];
  },
  cpu([x], { dims }, [out]) {
    gatherSeparable(x!, x!.shape.map((n, d) => (dims.includes(d) ? Int32Array.from({ length: n }, (_, j) => n - 1 - j) : identityTable(n))), out!.data);
  },
  webgpu([x], { dims }, [out], caps) {
    const sources = x!.shape.map((n, d): wgsl.DimSource => (dims.includes(d) ? (j) => `(${n - 1} - i32(${j}))` : wgsl.identitySource));
    return wgsl.separableGatherKernel('flip', [x!], out!, sources, caps);
  },
});

/** Reverses the order of elements along `dims` (a copy, as in PyTorch). */
export function flip(x: Tensor, dims: number | readonly number[]): Tensor {
  checkInputs('flip', [x]);
  check(typeof dims === 'number' || Array.isArray(dims), 'flip', `dims must be a number or an array of numbers, got ${JSON.stringify(dims)}`);
  return apply1(flipOp, [x], { dims: normDims('flip', dims, x.ndim) });
}

declare module '../tensor/tensor.js' {
  interface Tensor {
    split(splitSizeOrSections: number | readonly number[], dim?: DimArg): Tensor[];
    chunk(chunks: number, dim?: DimArg): Tensor[];
    gather(dim: number, index: Tensor): Tensor;
    indexSelect(dim: number, index: Tensor): Tensor;
    repeat(...sizes: (number | readonly number[])[]): Tensor;
    flip(...dims: (number | readonly number[])[]): Tensor;
  }
}

Object.assign(Tensor.prototype, {
  split(this: Tensor, s: number | readonly number[], dim?: DimArg) { return split(this, s, dim); },
  chunk(this: Tensor, chunks: number, dim?: DimArg) { return chunk(this, chunks, dim); },
  gather(this: Tensor, dim: number, index: Tensor) { return gather(this, dim, index); },
  indexSelect(this: Tensor, dim: number, index: Tensor) { return indexSelect(this, dim, index); },
  repeat(this: Tensor, ...sizes: (number | readonly number[])[]) { return repeat(this, ...sizes); },
  flip(this: Tensor, ...dims: (number | readonly number[])[]) { return flip(this, sizeArgs(dims)); },
});
