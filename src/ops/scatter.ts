import { SinterError, check } from '../errors.js';
import { readContiguous } from '../kernels/cpu/util.js';
import { computeType, roundTo } from '../kernels/wgsl/dtype.js';
import type { GpuView } from '../kernels/wgsl/kernel.js';
import { wordKernel } from '../kernels/wgsl/movement.js';
import { KernelParams } from '../kernels/wgsl/params.js';
import { offsetOf, unravel } from '../kernels/wgsl/strided.js';
import { isInt } from '../tensor/dtype.js';
import { contiguousStrides, numel } from '../tensor/shape.js';
import type { Tensor } from '../tensor/tensor.js';
import { type TensorMeta, apply1, checkInputs, defineOp, describeMeta } from './op.js';

// Scatter and N-dimensional gather, as ONNX's ScatterElements, ScatterND and GatherND define them. Indices may be
// negative (counted from the end of their dim); any other index outside its dim is an error. Updates that hit the
// same element combine in index order: the last one wins without a reduction ('none'), as onnxruntime's CPU does.
// The WebGPU kernels are output-driven (each output element scans the updates that may reach it), so they need no
// atomics and give the same order as the CPU. The views' offsets are kernel parameters (uniforms), so views anywhere
// in their buffers share one pipeline; shapes and strides stay in the source, where they let the compiler fold the
// index arithmetic.

export type ScatterReduction = 'none' | 'add' | 'mul' | 'max' | 'min';
const REDUCTIONS: readonly ScatterReduction[] = ['none', 'add', 'mul', 'max', 'min'];

function combine(r: ScatterReduction, a: number, b: number): number {
  switch (r) {
    case 'none': return b;
    case 'add': return a + b;
    case 'mul': return a * b;
    case 'max': return Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.max(a, b);
    case 'min': return Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.min(a, b);
  }
}

function combineWgsl(r: ScatterReduction, acc: string, u: string): string {
  return { none: u, add: `${acc} + ${u}`, mul: `${acc} * ${u}`, max: `max(${acc}, ${u})`, min: `min(${acc}, ${u})` }[r];
}

/** The u32 WGSL offset of element `pos` (u32 index names, one per dim) of view v, its offset read from `params`. */
function elementOffset(v: GpuView, pos: readonly string[], params: KernelParams): string {
  return `${offsetOf(0, v.strides, pos)} + ${params.u32(v.offset)}`;
}

/**
 * WGSL lines computing `name`, the u32 offset of flat row-major position `flat` (a runtime u32) in view v over its
 * first `dims` dims, plus the `extra` terms; v's offset is read from `params`.
 */
function dynamicOffset(v: GpuView, flat: string, dims: number, name: string, params: KernelParams, extra: readonly string[] = []): string[] {
  const lines = [`var ${name}_rest = ${flat};`, `var ${name} = ${[params.u32(v.offset), ...extra].join(' + ')};`];
  for (let d = dims - 1; d >= 0; d--) {
    lines.push(`${name} += (${name}_rest % ${v.shape[d]}u) * ${v.strides[d]}u; ${name}_rest = ${name}_rest / ${v.shape[d]}u;`);
  }
  return lines;
}

function checkIndices(op: string, index: TensorMeta): void {
  check(isInt(index.dtype), op, () => `indices must be an integer tensor, got ${describeMeta(index)}`);
}

function checkReduction(op: string, data: TensorMeta, reduction: ScatterReduction): void {
  check(REDUCTIONS.includes(reduction), op, () => `reduction must be one of ${REDUCTIONS.join(', ')}, got ${JSON.stringify(reduction)}`);
  check(reduction === 'none' || data.dtype !== 'bool', op, () => `reduction '${reduction}' needs numbers, got ${describeMeta(data)}`);
}

/** An index in [−size, size) made non-negative, or an error naming it. */
function normIndex(op: string, v: number, size: number, what: () => string): number {
  if (!(v >= -size && v < size)) throw new SinterError(op, `index ${v} ${what()} is out of range (valid: ${-size} to ${size - 1})`);
  return v < 0 ? v + size : v;
}

// ---- scatterElements ----------------------------------------------------------------------------------

interface ScatterElementsAttrs {
  axis: number;
  reduction: ScatterReduction;
}

const scatterElementsOp = defineOp<ScatterElementsAttrs>({
  name: 'scatterElements',
  infer([data, index, updates], { axis, reduction }) {
    const op = 'scatterElements';
    checkIndices(op, index!);
    checkReduction(op, data!, reduction);
    check(index!.shape.length === data!.shape.length && updates!.shape.length === index!.shape.length && index!.shape.every((d, i) => d === updates!.shape[i]),
      op, () => `indices ${describeMeta(index!)} and updates ${describeMeta(updates!)} must have one shape, of the rank of data ${describeMeta(data!)}`);
    check(index!.shape.every((d, i) => i === axis || d <= data!.shape[i]!), op, () => `indices ${describeMeta(index!)} are larger than data ${describeMeta(data!)} outside axis ${axis}`);
    check(updates!.dtype === data!.dtype, op, () => `updates ${describeMeta(updates!)} must have data's dtype ${data!.dtype}`);
    return [{ shape: data!.shape, dtype: data!.dtype }];
  },
  cpu([data, index, updates], { axis, reduction }, [out]) {
    const o = out!.data;
    o.set(readContiguous(data!));
    const idx = readContiguous(index!), upd = readContiguous(updates!);
    const shape = index!.shape, strides = contiguousStrides(data!.shape), size = data!.shape[axis]!;
    const pos = new Array<number>(shape.length).fill(0);
    for (let i = 0; i < idx.length; i++) {
      let at = 0;
      for (let d = 0; d < shape.length; d++) {
        const c = d === axis ? normIndex('scatterElements', idx[i]!, size, () => `at flat position ${i} of indices ${describeMeta(index!)} (axis ${axis} of ${describeMeta(data!)})`) : pos[d]!;
        at += c * strides[d]!;
      }
      o[at] = combine(reduction, o[at]!, upd[i]!);
      for (let d = shape.length - 1; d >= 0 && ++pos[d]! === shape[d]; d--) pos[d] = 0;
    }
  },
  webgpu([data, index, updates], { axis, reduction }, [out], caps) {
    const t = computeType(out!.dtype), size = data!.shape[axis]!, k = index!.shape[axis]!;
    const { lines, idx } = unravel('e', out!.shape);
    const params = new KernelParams();
    lines.push(`var acc: ${t} = load0(${elementOffset(data!, idx, params)});`);
    const outside = index!.shape.map((d, i) => (i === axis ? '' : `${idx[i]} >= ${d}u`)).filter(Boolean);
    if (outside.length) lines.push(`if (${outside.join(' || ')}) { return acc; }`);
    const at = idx.map((v, i) => (i === axis ? 'j' : v));
    lines.push(
      `for (var j = 0u; j < ${k}u; j++) {`,
      `  let raw = load1(${elementOffset(index!, at, params)});`,
      `  let v = checked_index(raw + select(0, ${size}, raw < 0), ${offsetOf(0, contiguousStrides(index!.shape), at)});`,
      `  if (u32(v) == ${idx[axis]}) { acc = ${combineWgsl(reduction, 'acc', `load2(${elementOffset(updates!, at, params)})`)}; }`,
      '}',
      `return ${roundTo(out!.dtype, 'acc')};`,
    );
    const message = `index {value} (negative indices count from the end) at flat position {at} of indices ${describeMeta(index!)} is out of range for axis ${axis} of data ${describeMeta(data!)} (valid: ${-size} to ${size - 1})`;
    return wordKernel('scatterElements', [data!.dtype, index!.dtype, updates!.dtype], out!, lines, caps, { size, message }, params);
  },
});

/** ONNX ScatterElements (PyTorch's scatter/scatter_reduce with include_self): data with updates written at indices along axis. */
export function scatterElements(data: Tensor, indices: Tensor, updates: Tensor, opts: { axis?: number; reduction?: ScatterReduction } = {}): Tensor {
  checkInputs('scatterElements', [data, indices, updates]);
  const rank = data.ndim, a = opts.axis ?? 0;
  check(Number.isInteger(a) && a >= -rank && a < rank, 'scatterElements', () => `axis ${a} is out of range for ${data.describe()}`);
  return apply1(scatterElementsOp, [data, indices, updates], { axis: a < 0 ? a + rank : a, reduction: opts.reduction ?? 'none' });
}

// ---- scatterND --------------------------------------------------------------------------------------

const scatterNdOp = defineOp<{ reduction: ScatterReduction }>({
  name: 'scatterND',
  infer([data, index, updates], { reduction }) {
    const op = 'scatterND';
    checkIndices(op, index!);
    checkReduction(op, data!, reduction);
    const q = index!.shape.length, k = index!.shape[q - 1];
    check(q >= 1 && k !== undefined && k <= data!.shape.length, op, () => `indices ${describeMeta(index!)} must end in a dim of at most data's rank ${data!.shape.length}`);
    const want = [...index!.shape.slice(0, -1), ...data!.shape.slice(k!)];
    check(updates!.shape.length === want.length && want.every((d, i) => d === updates!.shape[i]), op, () => `updates ${describeMeta(updates!)} must have shape [${want.join(', ')}] for indices ${describeMeta(index!)} and data ${describeMeta(data!)}`);
    check(updates!.dtype === data!.dtype, op, () => `updates ${describeMeta(updates!)} must have data's dtype ${data!.dtype}`);
    return [{ shape: data!.shape, dtype: data!.dtype }];
  },
  cpu([data, index, updates], { reduction }, [out]) {
    const o = out!.data;
    o.set(readContiguous(data!));
    const idx = readContiguous(index!), upd = readContiguous(updates!);
    const k = index!.shape[index!.shape.length - 1]!, strides = contiguousStrides(data!.shape);
    const slice = numel(data!.shape.slice(k)), tuples = numel(index!.shape.slice(0, -1));
    for (let t = 0; t < tuples; t++) {
      let base = 0;
      for (let c = 0; c < k; c++) {
        base += normIndex('scatterND', idx[t * k + c]!, data!.shape[c]!, () => `(component ${c} of index tuple ${t} of ${describeMeta(index!)}, data ${describeMeta(data!)})`) * strides[c]!;
      }
      for (let s = 0; s < slice; s++) o[base + s] = combine(reduction, o[base + s]!, upd[t * slice + s]!);
    }
  },
  webgpu([data, index, updates], { reduction }, [out], caps) {
    const t = computeType(out!.dtype), q = index!.shape.length, k = index!.shape[q - 1]!, tuples = numel(index!.shape.slice(0, -1));
    const { lines, idx } = unravel('e', out!.shape);
    const params = new KernelParams();
    lines.push(`var acc: ${t} = load0(${elementOffset(data!, idx, params)});`, `for (var t = 0u; t < ${tuples}u; t++) {`);
    lines.push(...dynamicOffset(index!, 't', q - 1, 'ip', params).map((l) => `  ${l}`), '  var hit = true;');
    for (let c = 0; c < k; c++) {
      const size = data!.shape[c]!;
      lines.push(`  let raw${c} = load1(ip + ${c * index!.strides[q - 1]!}u);`, `  let v${c} = raw${c} + select(0, ${size}, raw${c} < 0);`);
      // An index outside its dim fails the check (reported by tuple), and matches nothing.
      lines.push(`  if (checked_index(select(-1, 0, v${c} >= 0 && v${c} < ${size}), t) != 0 || u32(v${c}) != ${idx[c]}) { hit = false; }`);
    }
    const updLines = dynamicOffset({ ...updates!, shape: index!.shape.slice(0, -1), strides: updates!.strides.slice(0, q - 1) }, 't', q - 1, 'up', params,
      idx.slice(k).map((v, i) => `${v} * ${updates!.strides[q - 1 + i]}u`).filter((_, i) => updates!.strides[q - 1 + i] !== 0));
    lines.push('  if (hit) {', ...updLines.map((l) => `    ${l}`), `    acc = ${combineWgsl(reduction, 'acc', 'load2(up)')};`, '  }', '}', `return ${roundTo(out!.dtype, 'acc')};`);
    const message = `index tuple {at} of indices ${describeMeta(index!)} has a component out of range for data ${describeMeta(data!)} (negative indices count from the end)`;
    return wordKernel('scatterND', [data!.dtype, index!.dtype, updates!.dtype], out!, lines, caps, { size: 1, message }, params);
  },
});

/** ONNX ScatterND: data with slices `updates[t]` written at the index tuples `indices[t]` (the last dim of indices). */
export function scatterND(data: Tensor, indices: Tensor, updates: Tensor, opts: { reduction?: ScatterReduction } = {}): Tensor {
  checkInputs('scatterND', [data, indices, updates]);
  return apply1(scatterNdOp, [data, indices, updates], { reduction: opts.reduction ?? 'none' });
}

// ---- gatherND ---------------------------------------------------------------------------------------

const gatherNdOp = defineOp<{ batchDims: number }>({
  name: 'gatherND',
  infer([data, index], { batchDims: b }) {
    const op = 'gatherND';
    checkIndices(op, index!);
    const q = index!.shape.length, r = data!.shape.length, k = index!.shape[q - 1];
    check(q >= 1 && r >= 1 && Number.isInteger(b) && b >= 0 && b < Math.min(q, r), op, () => `batch_dims ${b} must be below the ranks of data ${describeMeta(data!)} and indices ${describeMeta(index!)}`);
    check(k !== undefined && k >= 1 && b + k <= r, op, () => `the last dim of indices ${describeMeta(index!)} must be in [1, ${r - b}] (data's rank minus batch_dims)`);
    check(index!.shape.slice(0, b).every((d, i) => d === data!.shape[i]), op, () => `the first ${b} dims of data ${describeMeta(data!)} and indices ${describeMeta(index!)} must match`);
    return [{ shape: [...index!.shape.slice(0, q - 1), ...data!.shape.slice(b + k!)], dtype: data!.dtype }];
  },
  cpu([data, index], { batchDims: b }, [out]) {
    const d = readContiguous(data!), idx = readContiguous(index!), o = out!.data;
    const q = index!.shape.length, k = index!.shape[q - 1]!, strides = contiguousStrides(data!.shape);
    const batch = numel(data!.shape.slice(0, b)), perBatch = numel(index!.shape.slice(b, q - 1));
    const slice = numel(data!.shape.slice(b + k)), batchStride = numel(data!.shape.slice(b));
    for (let n = 0; n < batch; n++) {
      for (let t = 0; t < perBatch; t++) {
        const tuple = n * perBatch + t;
        let base = n * batchStride;
        for (let c = 0; c < k; c++) {
          base += normIndex('gatherND', idx[tuple * k + c]!, data!.shape[b + c]!, () => `(component ${c} of index tuple ${tuple} of ${describeMeta(index!)}, data ${describeMeta(data!)})`) * strides[b + c]!;
        }
        o.set(d.subarray(base, base + slice), tuple * slice);
      }
    }
  },
  webgpu([data, index], { batchDims: b }, [out], caps) {
    const q = index!.shape.length, k = index!.shape[q - 1]!;
    const { lines, idx } = unravel('e', out!.shape);
    const params = new KernelParams();
    // Output dims: index dims before the last (batch first), then data's dims after b + k.
    const tupleDims = idx.slice(0, q - 1), rest = idx.slice(q - 1);
    const dataIdx = [...tupleDims.slice(0, b)];
    const tupleFlat = offsetOf(0, contiguousStrides(index!.shape.slice(0, q - 1)), tupleDims);
    for (let c = 0; c < k; c++) {
      const size = data!.shape[b + c]!;
      lines.push(`let raw${c} = load1(${elementOffset(index!, [...tupleDims, `${c}u`], params)});`, `let v${c} = raw${c} + select(0, ${size}, raw${c} < 0);`);
      lines.push(`let ok${c} = checked_index(select(-1, 0, v${c} >= 0 && v${c} < ${size}), ${tupleFlat});`, `let c${c} = u32(clamp(v${c}, 0, ${size - 1}));`);
      dataIdx.push(`c${c}`);
    }
    lines.push(`return load0(${elementOffset(data!, [...dataIdx, ...rest], params)});`);
    const message = `index tuple {at} of indices ${describeMeta(index!)} has a component out of range for data ${describeMeta(data!)} (negative indices count from the end)`;
    return wordKernel('gatherND', [data!.dtype, index!.dtype], out!, lines, caps, { size: 1, message }, params);
  },
});

/** ONNX GatherND: the slices of data at the index tuples in the last dim of indices, after `batchDims` shared leading dims. */
export function gatherND(data: Tensor, indices: Tensor, opts: { batchDims?: number } = {}): Tensor {
  checkInputs('gatherND', [data, indices]);
  return apply1(gatherNdOp, [data, indices], { batchDims: opts.batchDims ?? 0 });
}
