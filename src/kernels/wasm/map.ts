import { type Expr, exprNodes } from '../../ops/expr.js';
import type { CpuView } from '../../ops/op.js';
import { broadcastStrides, codeKey, collapseDims, exprConstants } from '../cpu/map.js';
import { type Code, ModuleBuilder } from './emitter.js';
import { heap, instantiate, memoryImport } from './heap.js';
import { BoundedCache } from './cache.js';
import { numel } from '../../tensor/shape.js';

// Elementwise expressions (the `Expr` trees of src/ops/expr.ts: eager ops and the JIT's fused groups
// alike) rendered to WebAssembly SIMD: each node becomes a few f32x4 instructions, four elements at a
// time. This is the wasm renderer over the same kernel description the JS (src/kernels/cpu/map.ts)
// and WGSL renderers read; functions it has no rendering for leave the expression to the JS kernel.
// float32 only: every node and input float32 (float16 needs a rounding per node, ints their own ops).

/** How a function of float32 arguments renders: pushes its f32x4 result, given its arguments' v128 locals. */
type Render = (c: Code, args: readonly number[], params: readonly number[], tmp: () => number) => void;

const splat = (c: Code, v: number): Code => c.f32(v).simd('f32x4.splat');

/** e^x for x in a v128 local: Cephes' expf (range reduction by ln 2, degree-6 polynomial), ~1 ulp; 2^n applied in two halves so results reach the subnormals and +∞. */
export function emitExp(c: Code, x: number, tmp: () => number): void {
  const n = tmp(), r = tmp(), y = tmp(), ni = tmp();
  c.get(x);
  splat(c, -104).simd('f32x4.max');
  splat(c, 89).simd('f32x4.min').set(r);
  c.get(r);
  splat(c, Math.LOG2E).simd('f32x4.mul', 'f32x4.nearest').set(n);
  c.get(r).get(n);
  splat(c, 0.693359375).simd('f32x4.mul', 'f32x4.sub').get(n);
  splat(c, -2.12194440e-4).simd('f32x4.mul', 'f32x4.sub').set(r);
  const coeffs = [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1];
  splat(c, coeffs[0]!);
  for (const k of coeffs.slice(1)) {
    c.get(r).simd('f32x4.mul');
    splat(c, k).simd('f32x4.add');
  }
  // y = p·r² + r + 1
  c.get(r).get(r).simd('f32x4.mul', 'f32x4.mul').get(r).simd('f32x4.add');
  splat(c, 1).simd('f32x4.add').set(y);
  c.get(n).simd('i32x4.trunc_sat_f32x4_s').set(ni);
  // 2^n = 2^(n>>1) · 2^(n − n>>1), each a normal float built from its exponent bits.
  const pow2 = (half: () => void): void => {
    half();
    c.i32(127).simd('i32x4.splat', 'i32x4.add').i32(23).simd('i32x4.shl');
  };
  c.get(y);
  pow2(() => c.get(ni).i32(1).simd('i32x4.shr_s'));
  c.simd('f32x4.mul');
  pow2(() => c.get(ni).get(ni).i32(1).simd('i32x4.shr_s', 'i32x4.sub'));
  c.simd('f32x4.mul');
}

/** 1 / (1 + e^−x), left on the stack. */
function logistic(c: Code, x: number, tmp: () => number): void {
  const e = tmp(), m = tmp();
  c.get(x).simd('f32x4.neg').set(m);
  emitExp(c, m, tmp);
  c.set(e);
  splat(c, 1);
  splat(c, 1).get(e).simd('f32x4.add', 'f32x4.div');
}

const binary = (op: 'f32x4.add' | 'f32x4.sub' | 'f32x4.mul' | 'f32x4.div' | 'f32x4.max' | 'f32x4.min'): Render => (c, [a, b]) => void c.get(a!).get(b!).simd(op);
const unary = (op: 'f32x4.neg' | 'f32x4.abs' | 'f32x4.sqrt' | 'f32x4.floor' | 'f32x4.ceil' | 'f32x4.nearest'): Render => (c, [x]) => void c.get(x!).simd(op);
/** a ± alpha·b (alpha 1: a ± b). */
const scaled = (op: 'f32x4.add' | 'f32x4.sub'): Render => (c, [a, b], [alpha]) => {
  c.get(a!).get(b!);
  if (alpha !== 1) splat(c, alpha!).simd('f32x4.mul');
  c.simd(op);
};
const clampTo = (c: Code, lo: number, hi: number): void => {
  splat(c, lo).simd('f32x4.max');
  splat(c, hi).simd('f32x4.min');
};

/**
 * The functions with a wasm rendering, by the names `Expr` call nodes use. Each computes in float32
 * what the JS form computes in double and rounds once: exactly for the arithmetic and rounding
 * functions, within a few ulps where a parameter or e^x is involved.
 */
const RENDER: Record<string, Render> = {
  cast: (c, [x]) => void c.get(x!),
  add: scaled('f32x4.add'),
  sub: scaled('f32x4.sub'),
  mul: binary('f32x4.mul'),
  div: binary('f32x4.div'),
  maximum: binary('f32x4.max'),
  minimum: binary('f32x4.min'),
  neg: unary('f32x4.neg'),
  abs: unary('f32x4.abs'),
  sqrt: unary('f32x4.sqrt'),
  floor: unary('f32x4.floor'),
  ceil: unary('f32x4.ceil'),
  round: unary('f32x4.nearest'),
  reciprocal: (c, [x]) => void splat(c, 1).get(x!).simd('f32x4.div'),
  rsqrt: (c, [x]) => void splat(c, 1).get(x!).simd('f32x4.sqrt', 'f32x4.div'),
  // x < 0 ? 0 : x (NaN and −0 pass through, as in JS).
  relu: (c, [x]) => void splat(c, 0).get(x!).get(x!).f32(0).simd('f32x4.splat', 'f32x4.lt', 'v128.bitselect'),
  relu6: (c, [x]) => void clampTo(c.get(x!), 0, 6),
  clamp: (c, [x], [lo, hi]) => void clampTo(c.get(x!), lo!, hi!),
  leakyRelu: (c, [x], [s]) => void splat(c.get(x!).get(x!), s!).simd('f32x4.mul').get(x!).f32(0).simd('f32x4.splat', 'f32x4.gt', 'v128.bitselect'),
  hardSigmoid: (c, [x]) => {
    splat(c.get(x!), 6).simd('f32x4.div');
    splat(c, 0.5).simd('f32x4.add');
    clampTo(c, 0, 1);
  },
  // x · (clamp(x + 3, 0, 6) / 6): dividing first keeps x·6 from overflowing float32 near its largest values.
  hardSwish: (c, [x]) => {
    splat(c.get(x!).get(x!), 3).simd('f32x4.add');
    clampTo(c, 0, 6);
    splat(c, 6).simd('f32x4.div', 'f32x4.mul');
  },
  exp: (c, [x], _, tmp) => emitExp(c, x!, tmp),
  sigmoid: (c, [x], _, tmp) => logistic(c, x!, tmp),
  silu: (c, [x], _, tmp) => {
    logistic(c, x!, tmp);
    c.get(x!).simd('f32x4.mul');
  },
};

/** Whether the expression has a wasm rendering: float32 nodes and inputs, functions in RENDER. */
export function renderable(expr: Expr): boolean {
  return exprNodes(expr).every((n) => n.dtype === 'float32' && (n.kind !== 'call' || (n.fn in RENDER && n.args.every((a) => a.dtype === 'float32'))));
}

/**
 * The module: row(out, in0 … in{k−1}, n, c0 … c{m−1}) evaluates `expr` for n elements (rounded up to
 * a multiple of 4: buffers are padded for it) into out; input i advances by `inner[i]` elements (1,
 * or 0 for one value broadcast along the row). The expression's constants are the arguments c0 …
 * (numbered in node order, as `exprConstants` lists them), so one module serves every scalar value.
 */
function mapModule(expr: Expr, inner: readonly number[]): Uint8Array<ArrayBuffer> {
  const m = new ModuleBuilder(memoryImport());
  const nodes = exprNodes(expr), constants = nodes.filter((e) => e.kind === 'const');
  m.func('row', ['i32', ...inner.map(() => 'i32' as const), 'i32', ...constants.map(() => 'f32' as const)], [], (c) => {
    const out = 0, ins = inner.map((_, i) => 1 + i), n = 1 + inner.length;
    const i = c.local('i32');
    const broadcast = inner.map((s) => (s === 0 ? c.local('v128') : -1));
    broadcast.forEach((v, k) => void (v >= 0 && c.get(ins[k]!).mem('v128.load32_splat').set(v)));
    const value = new Map<Expr, number>();
    const tmp = (): number => c.local('v128');
    // Node values and temporaries get their own locals: the engine's register allocator reuses them.
    for (const node of nodes) value.set(node, node.kind === 'input' && broadcast[node.index]! >= 0 ? broadcast[node.index]! : c.local('v128'));
    // Constants and broadcast inputs are splat once, before the loop.
    constants.forEach((k, j) => void c.get(n + 1 + j).simd('f32x4.splat').set(value.get(k)!));
    c.forRange(i, () => c.i32(0), () => c.get(n), 4, () => {
      for (const node of nodes) {
        const at = value.get(node)!;
        if (node.kind === 'input') {
          if (broadcast[node.index]! >= 0) continue;
          c.get(ins[node.index]!).get(i).i32(2).op('i32.shl', 'i32.add').mem('v128.load').set(at);
        } else if (node.kind === 'call') {
          RENDER[node.fn]!(c, node.args.map((a) => value.get(a)!), node.params, tmp);
          c.set(at);
        }
      }
      c.get(out).get(i).i32(2).op('i32.shl', 'i32.add').get(value.get(expr)!).mem('v128.store');
    });
  });
  return m.build();
}

type RowFn = (out: number, ...args: number[]) => void;
const modules = new BoundedCache<string, RowFn>(128);

/** Statistics of the generated elementwise modules' cache (bounded; least recently used evicted). */
export function wasmMapCacheStats(): { size: number; hits: number; misses: number; evictions: number } {
  return modules.stats();
}

/**
 * Evaluates `expr` for every element of `out` (contiguous float32) from strided, broadcast float32
 * inputs; returns false, computing nothing, when the expression or a layout has no wasm form (an
 * input whose innermost collapsed stride is not 0 or 1).
 */
export function wasmMap(expr: Expr, inputs: readonly CpuView[], out: CpuView): boolean {
  if (out.dtype !== 'float32' || !inputs.every((v) => v.dtype === 'float32' && v.data instanceof Float32Array) || !renderable(expr)) return false;
  const { shape, strides } = collapseDims(out.shape, inputs.map((v) => broadcastStrides(v, out.shape)));
  const rank = shape.length, len = rank === 0 ? 1 : shape[rank - 1]!;
  const inner = strides.map((s) => (rank === 0 ? 0 : s[rank - 1]!));
  if (inner.some((s) => s !== 0 && s !== 1)) return false;
  const key = `${inner.join(',')}|${codeKey(expr)}`;
  let row = modules.get(key);
  if (!row) {
    row = instantiate<{ row: RowFn }>(mapModule(expr, inner)).row;
    modules.set(key, row);
  }
  const total = numel(out.shape);
  if (total === 0) return true;
  const h = heap();
  h.reset();
  // Each input's span in, 16 bytes of padding after it for the last four-wide step.
  const bases = inputs.map((v, k) => {
    let lo = v.offset, hi = v.offset;
    for (let d = 0; d < rank; d++) {
      const reach = (shape[d]! - 1) * strides[k]![d]!;
      if (reach < 0) lo += reach;
      else hi += reach;
    }
    const at = h.alloc((hi - lo + 1) * 4 + 16);
    h.f32.set((v.data as Float32Array).subarray(lo, hi + 1), at >> 2);
    return at + (v.offset - lo) * 4;
  });
  const o = h.alloc(total * 4 + 16);
  // Rows in order: a row's padded last step spills into the next row's start, which that row then rewrites.
  const outer = shape.slice(0, -1), idx = new Array<number>(outer.length).fill(0), ptr = [...bases];
  const constants = exprConstants(expr), args = new Array<number>(inputs.length + 2).concat(constants);
  for (let r = 0, rows = total / len; r < rows; r++) {
    args[0] = o + r * len * 4;
    for (let k = 0; k < inputs.length; k++) args[k + 1] = ptr[k]!;
    args[inputs.length + 1] = len;
    (row as (...a: number[]) => void)(...args);
    for (let d = outer.length - 1; d >= 0; d--) {
      for (let k = 0; k < inputs.length; k++) ptr[k]! += strides[k]![d]! * 4;
      if (++idx[d]! < outer[d]!) break;
      for (let k = 0; k < inputs.length; k++) ptr[k]! -= strides[k]![d]! * 4 * outer[d]!;
      idx[d] = 0;
    }
  }
  (out.data as Float32Array).set(h.f32.subarray(o >> 2, (o >> 2) + total), out.offset);
  return true;
}
