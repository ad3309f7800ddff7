import { check, fmtShape } from '../errors.js';
import { type DType, isFloat, promoteTypes } from '../tensor/dtype.js';
import { numel } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { epilogueArity, epilogueKernel, matmulKernel } from '../kernels/cpu/gemm.js';
import { matmulKernel as matmulKernelWgsl } from '../kernels/wgsl/gemm.js';
import type { GpuView } from '../kernels/wgsl/kernel.js';
import { type TensorMeta, apply1, checkInputs, defineOp, describeMeta } from './op.js';
import { type Expr, exprNodes, exprToString } from './expr.js';

// Matrix products. Every one runs the `matmul` op (torch.matmul's rules), or `linear`; both use the
// CPU backend's single GEMM (src/kernels/cpu/gemm.ts) and WebGPU's (src/kernels/wgsl/gemm.ts).

/** The promoted dtype of the operands; bool has no matmul in PyTorch. */
function productDType(op: string, inputs: readonly TensorMeta[]): DType {
  const bad = inputs.find((t) => t.dtype === 'bool');
  check(!bad, op, () => `bool tensors are not supported, got ${describeMeta(bad!)}; convert first, e.g. x.to('float32')`);
  return inputs.map((t) => t.dtype).reduce(promoteTypes);
}

/** torch.matmul's output shape for a @ b (ranks ≥ 1), with an error naming both shapes when they do not fit. */
function matmulShape(op: string, a: TensorMeta, b: TensorMeta): number[] {
  const ra = a.shape.length, rb = b.shape.length;
  check(ra >= 1 && rb >= 1, op, () => `both arguments need at least 1 dim, got ${describeMeta(a)} and ${describeMeta(b)}`);
  const k = a.shape[ra - 1]!, kb = b.shape[rb === 1 ? 0 : rb - 2]!;
  check(k === kb, op, () =>
    `cannot multiply ${describeMeta(a)} by ${describeMeta(b)}: the last dim of the first (${k}) must equal the ${rb === 1 ? 'size' : 'second-to-last dim'} of the second (${kb})`);
  const ba = a.shape.slice(0, -2), bb = b.shape.slice(0, -2);
  const rank = Math.max(ba.length, bb.length);
  const batch: number[] = [];
  for (let i = 0; i < rank; i++) {
    const x = ba[i - rank + ba.length] ?? 1, y = bb[i - rank + bb.length] ?? 1;
    check(x === y || x === 1 || y === 1, op, () => `batch dims ${fmtShape(ba)} of ${describeMeta(a)} and ${fmtShape(bb)} of ${describeMeta(b)} cannot be broadcast together`);
    batch.push(x === 1 ? y : x);
  }
  return [...batch, ...(ra > 1 ? [a.shape[ra - 2]!] : []), ...(rb > 1 ? [b.shape[rb - 1]!] : [])];
}

/**
 * An elementwise chain the JIT fuses into a matmul, linear or conv2d (never set by eager calls):
 * input 0 is the op's result (after its bias), inputs 1.. are extra tensors appended after the op's
 * own inputs, each broadcast to the output's shape.
 */
export interface EpilogueAttrs {
  epilogue?: Expr;
}

/** How many of `inputs` are extra tensors of the attrs' epilogue (the trailing ones). */
export function extraCount(attrs: EpilogueAttrs): number {
  return attrs.epilogue ? epilogueArity(attrs.epilogue) : 0;
}

/**
 * The output of an op computing `natural` with an epilogue reading `extras`: the same shape, the
 * epilogue's dtype. Input 0 must have the op's dtype, input k the k-th extra's; extras must
 * broadcast to the output's shape; the dtype may change between float dtypes but not otherwise
 * (the GEMMs accumulate in the output's compute type).
 */
export function epilogueResult(op: string, natural: TensorMeta, extras: readonly TensorMeta[], epilogue: Expr | undefined): TensorMeta {
  if (!epilogue) return natural;
  const expr = exprToString(epilogue);
  for (const n of exprNodes(epilogue)) {
    if (n.kind !== 'input') continue;
    const want = n.index === 0 ? natural.dtype : extras[n.index - 1]?.dtype;
    check(want === n.dtype, op, () => `epilogue ${expr} reads input ${n.index} as ${n.dtype}, but it is ${want === undefined ? 'missing' : want}`);
  }
  for (const x of extras) {
    const lead = natural.shape.length - x.shape.length;
    check(lead >= 0 && x.shape.every((d, i) => d === 1 || d === natural.shape[lead + i]), op, () =>
      `epilogue input ${describeMeta(x)} does not broadcast to the output shape ${fmtShape(natural.shape)}`);
  }
  const d = epilogue.dtype;
  check(d === natural.dtype || (isFloat(d) && isFloat(natural.dtype)), op, () =>
    `epilogue ${expr} turns the ${natural.dtype} result into ${d}; only float results may change float dtype`);
  return { shape: natural.shape, dtype: d };
}

export const matmulOp = defineOp<EpilogueAttrs>({
  name: 'matmul',
  infer(inputs, attrs) {
    const [a, b] = inputs;
    check(inputs.length === 2 + extraCount(attrs), 'matmul', () => `expected 2 inputs and ${extraCount(attrs)} epilogue inputs, got ${inputs.length}`);
    const natural = { shape: matmulShape('matmul', a!, b!), dtype: productDType('matmul', [a!, b!]) };
    return [epilogueResult('matmul', natural, inputs.slice(2), attrs.epilogue)];
  },
  cpu([a, b, ...extras], { epilogue }, [out]) {
    matmulKernel(a!, b!, out!, false);
    if (epilogue) epilogueKernel(epilogue, productDType('matmul', [a!, b!]), out!, extras);
  },
  webgpu([a, b, ...extras], { epilogue }, [out], caps) {
    const fused = epilogue && { expr: epilogue, natural: productDType('matmul', [a!, b!]), extras };
    return matmulKernelWgsl('matmul', a!, b!, out!, caps, undefined, fused);
  },
});

/**
 * Matrix product with torch.matmul's rules: 1-D·1-D is a 0-d dot product; a 1-D operand gets a dim
 * prepended (left) or appended (right) that is removed from the result; leading dims are batch dims
 * and broadcast, e.g. [2, 1, 3, 4] @ [5, 4, 6] → [2, 5, 3, 6]. Mixed dtypes promote; integer products are
 * exact and wrap to the dtype, as in PyTorch; bool is rejected.
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  checkInputs('matmul', [a, b]);
  return apply1(matmulOp, [a, b], {});
}

/** The rank and size checks of the strict forms (mm, bmm, mv, dot), which PyTorch does not broadcast. */
function checkStrict(op: string, a: Tensor, b: Tensor, ra: number, rb: number, what: string): void {
  checkInputs(op, [a, b]);
  check(a.ndim === ra && b.ndim === rb, op, () => `expects ${what}, got ${a.describe()} and ${b.describe()}`);
  matmulShape(op, a, b);
}

/** [n, m] @ [m, p] → [n, p]. */
export function mm(a: Tensor, b: Tensor): Tensor {
  checkStrict('mm', a, b, 2, 2, 'two 2-D matrices');
  return apply1(matmulOp, [a, b], {});
}
/** [b, n, m] @ [b, m, p] → [b, n, p], with equal batch sizes (no broadcasting). */
export function bmm(a: Tensor, b: Tensor): Tensor {
  checkStrict('bmm', a, b, 3, 3, 'two 3-D tensors');
  check(a.shape[0] === b.shape[0], 'bmm', () => `batch sizes differ: ${a.describe()} and ${b.describe()} (bmm does not broadcast; use matmul)`);
  return apply1(matmulOp, [a, b], {});
}
/** [n, m] @ [m] → [n]. */
export function mv(a: Tensor, v: Tensor): Tensor {
  checkStrict('mv', a, v, 2, 1, 'a 2-D matrix and a 1-D vector');
  return apply1(matmulOp, [a, v], {});
}
/** Σ a·b of two 1-D tensors of one size, as a 0-d tensor. */
export function dot(a: Tensor, b: Tensor): Tensor {
  checkStrict('dot', a, b, 1, 1, 'two 1-D tensors');
  return apply1(matmulOp, [a, b], {});
}

/** weight [out, in] read as its transpose [in, out]: a view, no copy. */
function transposed<V extends GpuView>(w: V): V {
  return { ...w, shape: [w.shape[1]!, w.shape[0]!], strides: [w.strides[1]!, w.strides[0]!] };
}

export const linearOp = defineOp<EpilogueAttrs>({
  name: 'linear',
  infer(all, attrs) {
    const inputs = all.slice(0, all.length - extraCount(attrs));
    check(inputs.length === 2 || inputs.length === 3, 'linear', () => `expected 2 or 3 inputs and ${extraCount(attrs)} epilogue inputs, got ${all.length}`);
    const [x, w, bias] = inputs;
    check(w!.shape.length === 2, 'linear', () => `weight must be 2-D [out_features, in_features], got ${describeMeta(w!)}`);
    check(x!.shape.length >= 1, 'linear', () => `input must have at least 1 dim, got ${describeMeta(x!)}`);
    const [outF, inF] = w!.shape as [number, number];
    check(x!.shape[x!.shape.length - 1] === inF, 'linear', () =>
      `input ${describeMeta(x!)} has ${x!.shape[x!.shape.length - 1]} features in its last dim but weight ${describeMeta(w!)} expects ${inF}`);
    if (bias) check(bias.shape.length === 1 && bias.shape[0] === outF, 'linear', () => `bias must be 1-D of size out_features (${outF}), got ${describeMeta(bias)}`);
    const natural = { shape: [...x!.shape.slice(0, -1), outF], dtype: productDType('linear', inputs) };
    return [epilogueResult('linear', natural, all.slice(inputs.length), attrs.epilogue)];
  },
  cpu(all, attrs, [out]) {
    const inputs = all.slice(0, all.length - extraCount(attrs));
    const [x, w, bias] = inputs;
    const o = out!, n = w!.shape[0]!;
    if (bias) {
      // The bias is written first and the product added to it, saving a pass over the output.
      const { data, offset, strides: [s] } = bias;
      for (let r = 0, rows = numel(o.shape) / n; r < rows; r++) for (let j = 0; j < n; j++) o.data[o.offset + r * n + j] = data[offset + j * s!]!;
    }
    matmulKernel(x!, transposed(w!), o, bias !== undefined);
    if (attrs.epilogue) epilogueKernel(attrs.epilogue, productDType('linear', inputs), o, all.slice(inputs.length));
  },
  webgpu(all, attrs, [out], caps) {
    const inputs = all.slice(0, all.length - extraCount(attrs));
    const [x, w, bias] = inputs;
    const fused = attrs.epilogue && { expr: attrs.epilogue, natural: productDType('linear', inputs), extras: all.slice(inputs.length) };
    return matmulKernelWgsl('linear', x!, transposed(w!), out!, caps, bias, fused);
  },
});

/** x @ weightᵀ + bias for x [..., in], weight [out, in], bias [out] (torch.nn.functional.linear). */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  const inputs = bias === undefined || bias === null ? [x, weight] : [x, weight, bias];
  checkInputs('linear', inputs);
  return apply1(linearOp, inputs, {});
}

declare module '../tensor/tensor.js' {
  interface Tensor {
    matmul(other: Tensor): Tensor;
    mm(other: Tensor): Tensor;
    bmm(other: Tensor): Tensor;
    mv(vec: Tensor): Tensor;
    dot(other: Tensor): Tensor;
  }
}

Object.assign(Tensor.prototype, {
  matmul(this: Tensor, other: Tensor) { return matmul(this, other); },
  mm(this: Tensor, other: Tensor) { return mm(this, other); },
  bmm(this: Tensor, other: Tensor) { return bmm(this, other); },
  mv(this: Tensor, vec: Tensor) { return mv(this, vec); },
  dot(this: Tensor, other: Tensor) { return dot(this, other); },
});
