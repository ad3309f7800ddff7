import type { DType } from '../../tensor/dtype.js';
import { numel } from '../../tensor/shape.js';
import { bindings, computeType, convert, elementsPerWord, literal, loadElement, packWord, roundTo } from './dtype.js';
import { GRID_PARAMS, grid, workgroupSize } from './grid.js';
import { type GpuView, type WebGpuCaps, type WgslKernel, checkBinding } from './kernel.js';
import { KernelParams } from './params.js';
import { withPrelude } from './prelude.js';
import { offsetOf, unravel } from './strided.js';

// Data movement on WebGPU: every kernel is output-driven. One invocation computes one 32-bit word
// of the contiguous output (one to four elements, by dtype) from `fn value(e)`, which finds the
// source of output element e by index math on the inputs' strides. Consecutive invocations write
// consecutive words (coalesced stores); the reads are gathers, as on the CPU.

/**
 * A device-side index check (see kernel.ts): the values of an index tensor must lie in [0, size).
 * `message` is the error's detail, with `{value}` (the bad index) and `{at}` (its flat position in
 * the index tensor) filled in.
 */
export interface IndexCheck {
  size: number;
  message: string;
}

/**
 * The kernel writing every word of the contiguous `out` of `inputs` from `value`: the WGSL body of
 * `fn value(e: u32) -> T` (T the compute type of out's dtype) returning output element e already
 * rounded to out's dtype; it reads element i of input k as `load${k}(i)` (in k's compute type).
 * Elements past the end of a partly filled last word are never computed, so `value` reads index
 * tensors only where they exist. With `check`, the body may call `checked_index(v, at)`, which
 * reports an index v at flat position `at` outside [0, check.size) and returns it clamped into
 * range, so reads stay in bounds. `params` is the parameter block the body reads per-call values from.
 */
export function wordKernel(label: string, inputs: readonly DType[], out: GpuView, body: readonly string[], caps: WebGpuCaps, check?: IndexCheck, params?: KernelParams): WgslKernel {
  const n = numel(out.shape), perWord = elementsPerWord(out.dtype, caps), words = Math.ceil(n / perWord);
  const t = computeType(out.dtype);
  const size = workgroupSize(256, caps);
  const g = grid(label, words, size, caps);
  const guard = n % perWord === 0 ? [] : [`if (e >= ${n}u) { return ${t}(0); }`];
  const value = `fn value(e: u32) -> ${t} {\n  ${[...guard, ...body].join('\n  ')}\n}`;
  const values = Array.from({ length: perWord }, (_, j) => (perWord === 1 ? 'value(w)' : `value(w * ${perWord}u + ${j}u)`));
  const main = `@compute @workgroup_size(${size}) fn main(${GRID_PARAMS}) {\n  let w = ${g.index};\n  if (w >= ${words}u) { return; }\n  out0[w] = ${packWord(out.dtype, values, caps)};\n}`;
  const decls = [inputs.map((d, k) => `fn load${k}(i: u32) -> ${computeType(d)} { return ${loadElement(`in${k}`, d, 'i', caps)}; }`).join('\n')];
  const block = params?.words();
  if (block) decls.push(params!.declaration());
  if (check) {
    decls.push(checkBinding(inputs.length + 1), `fn checked_index(v: i32, at: u32) -> i32 {
  if (v < 0 || v >= ${check.size}) { fail_check(1u, v, at); }
  return clamp(v, 0, ${Math.max(check.size - 1, 0)});
}`);
  }
  // The bindings come first: their `enable f16;` must precede every declaration, the prelude's helpers included.
  const source = `${bindings(inputs, [out.dtype], caps)}\n\n${withPrelude(`${decls.join('\n\n')}\n\n${value}\n\n${main}\n`)}`;
  return { source, workgroups: g.workgroups, label, ...(check ? { checks: [check.message] } : {}), ...(block ? { params: block } : {}) };
}

/** An i32 WGSL expression: the u32 index `j` shifted by `k`. */
function shifted(j: string, k: number): string {
  return k === 0 ? `i32(${j})` : k > 0 ? `(i32(${j}) + ${k})` : `(i32(${j}) - ${-k})`;
}

/**
 * Where output position `j` (a u32 name) along one dim reads from: an i32 WGSL expression, negative
 * for the fill value. A source reading an index tensor takes that view's offset from `params`.
 */
export type DimSource = (j: string, params: KernelParams) => string;

export const identitySource: DimSource = (j) => `i32(${j})`;

/** The source of padded position j along a dim of `size` padded by (l, r), as the CPU's padTable computes it. */
export function padSource(mode: 'constant' | 'reflect' | 'replicate' | 'circular', size: number, l: number, r: number): DimSource {
  switch (mode) {
    case 'constant':
      return (j) => `select(-1, ${shifted(j, -l)}, i32(${j}) >= ${l} && i32(${j}) < ${l + size})`;
    case 'reflect':
      return (j) => {
        const i = shifted(j, -l);
        return `select(select(${i}, ${2 * (size - 1)} - ${i}, ${i} >= ${size}), -${i}, ${i} < 0)`;
      };
    case 'replicate':
      return (j) => `clamp(${shifted(j, -l)}, 0, ${size - 1})`;
    case 'circular': {
      // Wraps over what remains after negative pads crop; an empty remainder means an empty output (never dispatched).
      const cropL = Math.max(-l, 0), kept = Math.max(size - cropL - Math.max(-r, 0), 1), padL = Math.max(l, 0);
      return (j) => `(${cropL} + (${shifted(j, -padL)} % ${kept} + ${kept}) % ${kept})`;
    }
  }
}

/**
 * out[i0, …, ik] = in0[src0(i0), …, srck(ik)] for the separable gathers (flip, repeat, pad,
 * indexSelect, nearest interpolation), the WebGPU form of the CPU's gatherSeparable; a negative
 * source writes `fill`. `x` is in0; further inputs (an index tensor) are read by the sources, which
 * may call `checked_index` when `check` is given (see wordKernel).
 */
export function separableGatherKernel(
  label: string, inputs: readonly GpuView[], out: GpuView, sources: readonly DimSource[], caps: WebGpuCaps, opts: { fill?: number; check?: IndexCheck } = {},
): WgslKernel {
  const { fill, check } = opts;
  const x = inputs[0]!;
  const t = computeType(out.dtype);
  const { lines, idx } = unravel('e', out.shape);
  // The fill value and x's offset are parameters: padding with any value, or slicing anywhere, shares one pipeline.
  const params = new KernelParams();
  sources.forEach((src, d) => lines.push(`let s${d}: i32 = ${src(idx[d]!, params)};`));
  if (fill !== undefined && sources.length > 0) {
    lines.push(`if (${sources.map((_, d) => `s${d} < 0`).join(' || ')}) { return ${roundTo(out.dtype, params.scalar(fill, t, literal))}; }`);
  }
  lines.push(`let p = ${offsetOf(0, x.strides, sources.map((_, d) => `u32(s${d})`))} + ${params.u32(x.offset)};`, `return load0(p);`);
  return wordKernel(label, inputs.map((v) => v.dtype), out, lines, caps, check, params);
}

/**
 * An i32 WGSL expression reading element `pos` (u32 index names, one per dim) of the int tensor
 * input k viewed as `v`; v's offset is a parameter in `params`.
 */
export function indexValue(k: number, v: GpuView, pos: readonly string[], params: KernelParams): string {
  return `load${k}(${offsetOf(0, v.strides, pos)} + ${params.u32(v.offset)})`;
}

/**
 * Concatenation along `dim`: output element e finds its input by comparing its index along dim
 * with the inputs' start positions (baked in: they follow from the shapes), then reads that input
 * in place and converts it to the output dtype. `skip[k]` marks inputs that contribute nothing
 * (PyTorch's 1-D empties). The inputs' offsets are parameters: views anywhere share the pipeline.
 */
export function catKernel(inputs: readonly GpuView[], skip: readonly boolean[], dim: number, out: GpuView, caps: WebGpuCaps): WgslKernel {
  const { lines, idx } = unravel('e', out.shape);
  const params = new KernelParams();
  const c = idx[dim]!;
  let start = 0;
  const parts: { end: number; read: string }[] = [];
  inputs.forEach((x, k) => {
    if (skip[k] || x.shape[dim] === 0) return;
    const at = idx.map((v, d) => (d !== dim || start === 0 ? v : `(${c} - ${start}u)`));
    const load = `load${k}(${offsetOf(0, x.strides, at)} + ${params.u32(x.offset)})`;
    const read = x.dtype === out.dtype ? load : roundTo(out.dtype, convert(x.dtype, out.dtype, load));
    parts.push({ end: (start += x.shape[dim]!), read });
  });
  // Every output element lies in some part; the last is the fallthrough (an empty output has none and is never dispatched).
  parts.slice(0, -1).forEach((p) => lines.push(`if (${c} < ${p.end}u) { return ${p.read}; }`));
  lines.push(`return ${parts.at(-1)?.read ?? `${computeType(out.dtype)}(0)`};`);
  return wordKernel('cat', inputs.map((v) => v.dtype), out, lines, caps, undefined, params);
}

/**
 * torch.gather: out[i] = x[i with dim replaced by index[i]] (in0 = x, in1 = index), out shaped as
 * the index. 0-d x and index count as 1-D of size 1, as on the CPU. Both views' offsets are
 * parameters (views anywhere in their buffers share the pipeline).
 */
export function gatherKernel(x: GpuView, index: GpuView, dim: number, out: GpuView, caps: WebGpuCaps, message: string): WgslKernel {
  const shape = index.shape.length === 0 ? [1] : index.shape;
  const xStrides = x.shape.length === 0 ? [0] : x.strides, size = x.shape.length === 0 ? 1 : x.shape[dim]!;
  const { lines, idx } = unravel('e', shape);
  const params = new KernelParams();
  lines.push(`let v = checked_index(${indexValue(1, index.shape.length === 0 ? { ...index, shape, strides: [0] } : index, idx, params)}, e);`);
  lines.push(`let p = ${offsetOf(0, xStrides, idx.map((v, d) => (d === dim ? 'u32(v)' : v)))} + ${params.u32(x.offset)};`, `return load0(p);`);
  return wordKernel('gather', [x.dtype, index.dtype], out, lines, caps, { size, message }, params);
}

/**
 * Rows of weight [rows, cols] (in1) picked by the int tensor input (in0): out [...input.shape, cols].
 * Both views' offsets are parameters (views anywhere in their buffers share the pipeline).
 */
export function embeddingKernel(input: GpuView, weight: GpuView, out: GpuView, caps: WebGpuCaps, message: string): WgslKernel {
  const { lines, idx } = unravel('e', out.shape);
  const r = input.shape.length, cols = weight.shape[1]!;
  const params = new KernelParams();
  lines.push(`let row = checked_index(${indexValue(0, input, idx.slice(0, r), params)}, e / ${cols}u);`);
  lines.push(`let p = ${offsetOf(0, weight.strides, ['u32(row)', idx[r]!])} + ${params.u32(weight.offset)};`, `return load1(p);`);
  return wordKernel('embedding', [input.dtype, weight.dtype], out, lines, caps, { size: weight.shape[0]!, message }, params);
}
