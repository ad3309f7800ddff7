import { type Expr, exprNodes } from '../../ops/expr.js';
import type { CpuView } from '../../ops/op.js';
import { broadcastStrides, collapseDims } from '../cpu/map.js';
import { type Code, ModuleBuilder } from './emitter.js';
import { heap, instantiate, memoryImport } from './heap.js';
import { availableThreads, parallelFor } from './threads.js';
import { emitRoundToHalf, exactInHalf, halfConstants } from './half.js';
import { noteRoundedHalf } from '../cpu/half.js';
import { type CacheStats, LruCache } from '../../lru.js';
import { reportCaches } from '../../tensor/memory.js';
import { isContiguous, numel } from '../../tensor/shape.js';

// Elementwise expressions (the `Expr` trees of src/ops/expr.ts: eager ops and the JIT's fused groups
// alike) rendered to WebAssembly SIMD: each node becomes a few f32x4 instructions, four elements at a
// time. This is the wasm renderer over the same kernel description the JS (src/kernels/cpu/map.ts)
// and WGSL renderers read; functions it has no rendering for leave the expression to the JS kernel.
// float32 and float16 nodes and inputs (float16 values are float32 numbers on the CPU: each float16 node's
// result is rounded to binary16, src/kernels/wasm/half.ts, as the JS form rounds it); ints need their own ops.

/**
 * A call's numeric param as the module sees it: a v128 local holding it in four lanes (a kernel argument, so one
 * module serves every value), and its value only where it is one the renderers may specialise on (0, −0, 1, NaN,
 * ±∞): the module cache's key holds those (see `moduleKey`), never other values.
 */
interface Param {
  readonly local: number;
  readonly special?: number;
}

const isSpecial = (v: number): boolean => v === 0 || v === 1 || !Number.isFinite(v);

/** How a function of float32 arguments renders: pushes its f32x4 result, given its arguments' v128 locals. */
type Render = (c: Code, args: readonly number[], params: readonly Param[], tmp: () => number) => void;

/** `v` in four lanes (hoisted to the function's entry: see Code.splatF32). */
const splat = (c: Code, v: number): Code => c.splatF32(v);

/** e^x for x in a v128 local: Cephes' expf (range reduction by ln 2, degree-6 polynomial), ~1 ulp; 2^n applied in two halves so results reach the subnormals and +∞. */
export function emitExp(c: Code, x: number, tmp: () => number): void {
  const n = tmp(), r = tmp(), y = tmp(), ni = tmp();
  c.get(x);
  // pmax/pmin (one instruction each; see clampTo) keep a NaN x.
  splat(c, -104).simd('f32x4.pmax');
  splat(c, 89).simd('f32x4.pmin').set(r);
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

/**
 * e^x for x ≤ 0 (softmax's x − max, the logistic's −|x|) in v128 local `x`, left on the stack: XNNPACK's rr2-p5 scheme.
 * 2^n comes from the bits of x·log2e plus a magic bias (its low mantissa bits hold n + 127), the
 * remainder r = x − n·ln2 (in two parts) goes through a degree-5 polynomial, within 2 ulp; x below
 * −87.34 (where e^x leaves float32's normal range) gives 0, NaN stays NaN. About 20 instructions
 * against the general emitExp's 32 (which must also reach +∞ and the subnormals).
 */
export function emitExpNonPositive(c: Code, x: number, tmp: () => number): void {
  const n = tmp(), s = tmp(), t = tmp(), p = tmp();
  const splat = (v: number): Code => c.splatF32(v);
  const magic = 12583039;
  c.get(x);
  splat(1.4426950216293335).simd('f32x4.mul');
  splat(magic).simd('f32x4.add').set(n);
  c.get(n).i32(23).simd('i32x4.shl').set(s);
  c.get(n);
  splat(magic).simd('f32x4.sub').set(n);
  c.get(n);
  splat(-0.693145751953125).simd('f32x4.mul').get(x).simd('f32x4.add').set(t);
  c.get(n);
  splat(-1.428606765330187e-6).simd('f32x4.mul').get(t).simd('f32x4.add').set(t);
  splat(0.008289290592074394).get(t).simd('f32x4.mul');
  for (const k of [0.04189782217144966, 0.16667652130126953, 0.4999915063381195]) {
    splat(k).simd('f32x4.add').get(t).simd('f32x4.mul');
  }
  splat(0.9999997019767761).simd('f32x4.add').set(p);
  // s + (t·s)·p, zero where x < −87.34
  c.get(t).get(s).simd('f32x4.mul').get(p).simd('f32x4.mul').get(s).simd('f32x4.add');
  c.get(x);
  splat(-87.33654022216797).simd('f32x4.lt', 'v128.andnot');
}

/**
 * 1 / (1 + e^−x), left on the stack, as e/(1 + e) with e = e^−|x| (≤ 1: the cheaper exp, no
 * overflow), mirrored to 1 − e/(1 + e) for x > 0. Below x ≈ −87.3 it gives 0 (the true value is under 1e-38).
 */
function logistic(c: Code, x: number, tmp: () => number): void {
  const z = tmp(), f = tmp();
  c.get(x).simd('f32x4.abs', 'f32x4.neg').set(z);
  emitExpNonPositive(c, z, tmp);
  c.set(z);
  c.get(z);
  splat(c, 1).get(z).simd('f32x4.add', 'f32x4.div').set(f);
  // x > 0 ? 1 − f : f
  splat(c, 1).get(f).simd('f32x4.sub').get(f).get(x);
  splat(c, 0).simd('f32x4.gt', 'v128.bitselect');
}

const binary = (op: 'f32x4.add' | 'f32x4.sub' | 'f32x4.mul' | 'f32x4.div' | 'f32x4.max' | 'f32x4.min'): Render => (c, [a, b]) => void c.get(a!).get(b!).simd(op);
const unary = (op: 'f32x4.neg' | 'f32x4.abs' | 'f32x4.sqrt' | 'f32x4.floor' | 'f32x4.ceil' | 'f32x4.nearest'): Render => (c, [x]) => void c.get(x!).simd(op);
/** a ± alpha·b (alpha 1: a ± b). */
const scaled = (op: 'f32x4.add' | 'f32x4.sub'): Render => (c, [a, b], [alpha]) => {
  c.get(a!).get(b!);
  if (alpha!.special !== 1) c.get(alpha!.local).simd('f32x4.mul');
  c.simd(op);
};
/**
 * Math.min(Math.max(v, lo), hi) of the v128 on the stack, as JS gives it. f32x4.pmax(v, lo) is `v < lo ? lo : v`
 * (one instruction; f32x4.max's NaN and signed-zero rules take V8 eight), and keeps a NaN v as JS does; it differs
 * from Math.max only at v = −0, lo = +0 (JS gives +0: adding +0 turns −0 into +0 and leaves every other value), and
 * for a NaN bound. f32x4.pmin(v, hi) likewise, except at v = +0, hi = −0 (JS gives −0) and a NaN bound: there the
 * full f32x4.min/max. A bound known only at run time (a `Param` without `special`: finite, not 0) is one of the
 * values where pmax/pmin equal max/min.
 */
const clampTo = (c: Code, lo: number | Param, hi: number | Param): void => {
  const known = (b: number | Param): number | undefined => (typeof b === 'number' ? b : b.special);
  const push = (b: number | Param, v: number | undefined): Code => (v === undefined ? c.get((b as Param).local) : splat(c, v));
  const l = known(lo), h = known(hi);
  push(lo, l).simd(l !== undefined && Number.isNaN(l) ? 'f32x4.max' : 'f32x4.pmax');
  if (l !== undefined && Object.is(l, 0)) splat(c, 0).simd('f32x4.add');
  push(hi, h).simd(h !== undefined && (Number.isNaN(h) || Object.is(h, -0)) ? 'f32x4.min' : 'f32x4.pmin');
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
  relu: (c, [x]) => void splat(c, 0).get(x!).get(x!).splatF32(0).simd('f32x4.lt', 'v128.bitselect'),
  relu6: (c, [x]) => void clampTo(c.get(x!), 0, 6),
  clamp: (c, [x], [lo, hi]) => void clampTo(c.get(x!), lo!, hi!),
  leakyRelu: (c, [x], [s]) => void c.get(x!).get(x!).get(s!.local).simd('f32x4.mul').get(x!).splatF32(0).simd('f32x4.gt', 'v128.bitselect'),
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

const isF32OrF16 = (d: string): boolean => d === 'float32' || d === 'float16';

/** Whether the expression has a wasm rendering: float32/float16 nodes and inputs, functions in RENDER. */
export function renderable(expr: Expr): boolean {
  return exprNodes(expr).every((n) => isF32OrF16(n.dtype) && (n.kind !== 'call' || (n.fn in RENDER && n.args.every((a) => isF32OrF16(a.dtype)))));
}

/**
 * The module: rows(out, in0 … in{k−1}, n, count, outStep, step0 … step{k−1}, c0 … c{m−1}) evaluates
 * `expr` for `count` rows of n elements: out and each input advance by outStep / step_i bytes per row;
 * along a row input i advances by `inner[i]` elements (1, or 0 for one value broadcast along it). Four
 * elements at a time, then the row's tail one at a time (its loads splat one value, its store writes
 * one lane): nothing is read or written past the row, so operands are read in place in the heap.
 * The expression's constants and its calls' params are arguments (float32 bits, in the order `kernelValues`
 * lists them), so one module serves every scalar value, and every argument is an i32 that a worker
 * thread receives as one slot of its control block.
 */
function mapModule(expr: Expr, inner: readonly number[]): Uint8Array<ArrayBuffer> {
  const m = new ModuleBuilder(memoryImport());
  const nodes = exprNodes(expr), values = kernelValues(nodes).length, k = inner.length;
  m.func('rows', new Array<'i32'>(k + 4 + k + values).fill('i32'), [], (c) => {
    const out = 0, ins = inner.map((_, i) => 1 + i), n = 1 + k, count = n + 1, outStep = n + 2;
    const steps = inner.map((_, i) => n + 3 + i);
    const r = c.local('i32'), i = c.local('i32'), n4 = c.local('i32'), off = c.local('i32');
    const value = new Map<Expr, number>();
    const params = new Map<Expr, Param[]>();
    const tmp = (): number => c.local('v128');
    // Node values and temporaries get their own locals: the engine's register allocator reuses them.
    for (const node of nodes) value.set(node, c.local('v128'));
    // Constants and params are splat once, before the loops.
    let slot = n + 3 + k;
    const splatArg = (local: number): void => void c.get(slot++).op('f32.reinterpret_i32').simd('f32x4.splat').set(local);
    for (const node of nodes) {
      if (node.kind === 'const') splatArg(value.get(node)!);
      else if (node.kind === 'call') {
        params.set(node, node.params.map((v) => {
          const local = c.local('v128');
          splatArg(local);
          return isSpecial(v) ? { local, special: v } : { local };
        }));
      }
    }
    const half = nodes.some((e) => e.kind === 'call' && e.dtype === 'float16') ? halfConstants(c) : undefined;
    const inputs = nodes.filter((e): e is Extract<Expr, { kind: 'input' }> => e.kind === 'input');
    /** Evaluates the expression at byte offset `off` of the row; `splat`: one element (the tail), else four. */
    const evaluate = (splat: boolean): void => {
      for (const node of inputs) {
        if (inner[node.index] === 0) continue;
        c.get(ins[node.index]!).get(off).op('i32.add').mem(splat ? 'v128.load32_splat' : 'v128.load').set(value.get(node)!);
      }
      for (const node of nodes) {
        if (node.kind !== 'call') continue;
        RENDER[node.fn]!(c, node.args.map((a) => value.get(a)!), params.get(node)!, tmp);
        c.set(value.get(node)!);
        if (node.dtype === 'float16' && !exactInHalf(node)) {
          emitRoundToHalf(c, value.get(node)!, tmp, half!);
          c.set(value.get(node)!);
        }
      }
      c.get(out).get(off).op('i32.add').get(value.get(expr)!);
      if (splat) c.lane('f32x4.extract_lane', 0).mem('f32.store');
      else c.mem('v128.store');
    };
    c.get(n).i32(-4).op('i32.and').set(n4);
    c.forRange(r, () => c.i32(0), () => c.get(count), 1, () => {
      // Broadcast inputs: one value per row, splat before the row's loops.
      for (const node of inputs) if (inner[node.index] === 0) c.get(ins[node.index]!).mem('v128.load32_splat').set(value.get(node)!);
      c.forRange(i, () => c.i32(0), () => c.get(n4), 4, () => {
        c.get(i).i32(2).op('i32.shl').set(off);
        evaluate(false);
      });
      c.forRange(i, () => c.get(n4), () => c.get(n), 1, () => {
        c.get(i).i32(2).op('i32.shl').set(off);
        evaluate(true);
      });
      c.get(out).get(outStep).op('i32.add').set(out);
      ins.forEach((p, j) => void c.get(p).get(steps[j]!).op('i32.add').set(p));
    });
  });
  return m.build();
}

type RowsFn = (...args: number[]) => void;
const modules = new LruCache<string, RowsFn>(128);

/** Statistics of the generated elementwise modules' cache (bounded; least recently used evicted). */
export function wasmMapCacheStats(): CacheStats {
  return modules.stats();
}
reportCaches('cpu', () => ({ caches: { 'wasm elementwise modules': modules.stats() } }), 'wasm elementwise modules');

const bitsView = new DataView(new ArrayBuffer(4));
/** A float32's bits as an i32 (how constants travel as arguments). */
function f32Bits(v: number): number {
  bitsView.setFloat32(0, v, true);
  return bitsView.getInt32(0, true);
}

/** Elements per thread below which splitting a map over the pool costs more than it saves. */
const MIN_ELEMENTS_PER_THREAD = 1 << 15;

/** The values a module of these nodes takes as arguments: each constant, and each call's params, in node order. */
function kernelValues(nodes: readonly Expr[]): number[] {
  return nodes.flatMap((n) => (n.kind === 'const' ? [n.value] : n.kind === 'call' ? n.params : []));
}

/**
 * The module cache's key of an expression: its nodes in order, each call's arguments by node number (so two trees
 * alike in text but not in which nodes they share differ), its params' values only where a renderer may specialise
 * on them (`isSpecial`; `-0` apart from `0`), constants by dtype alone: every other value is an argument.
 */
function moduleKey(nodes: readonly Expr[]): string {
  const id = new Map(nodes.map((n, i) => [n, i]));
  const param = (v: number): string => (Object.is(v, -0) ? '-0' : isSpecial(v) ? String(v) : 'p');
  return nodes
    .map((n) => (n.kind === 'input' ? `x${n.index}:${n.dtype}` : n.kind === 'const' ? `c:${n.dtype}` : `${n.fn}:${n.dtype}(${n.args.map((a) => id.get(a)).join(',')};${n.params.map(param).join(',')})`))
    .join(' ');
}

/** What wasmMap needs of an expression, whatever the operands: whether it renders, its code key, its constants' and params' float32 bits. */
interface ExprFacts {
  readonly renderable: boolean;
  readonly code: string;
  readonly constants: readonly number[];
}
/** Per expression object, once: a plan (or an epilogue) hands the same Expr objects to every call, which never mutate them. */
const exprFacts = new WeakMap<Expr, ExprFacts>();
function factsOf(expr: Expr): ExprFacts {
  let facts = exprFacts.get(expr);
  if (!facts) {
    const nodes = exprNodes(expr);
    exprFacts.set(expr, (facts = { renderable: renderable(expr), code: moduleKey(nodes), constants: kernelValues(nodes).map(f32Bits) }));
  }
  return facts;
}

/**
 * Evaluates `expr` for every element of `out` (contiguous float32 or float16) from strided, broadcast
 * float32/float16 inputs; returns false, computing nothing, when the expression or a layout has no wasm form (an
 * input whose innermost collapsed stride is not 0 or 1). Operands in the heap are read and written
 * where they are; others (JS arrays) are copied into scratch, and the output copied back.
 */
export function wasmMap(expr: Expr, inputs: readonly CpuView[], out: CpuView): boolean {
  if (!isF32OrF16(out.dtype) || !(out.data instanceof Float32Array) || !isContiguous(out.shape, out.strides)) return false;
  const facts = factsOf(expr);
  if (!inputs.every((v) => isF32OrF16(v.dtype) && v.data instanceof Float32Array) || !facts.renderable) return false;
  const { shape, strides } = collapseDims(out.shape, inputs.map((v) => broadcastStrides(v, out.shape)));
  const rank = shape.length, len = rank === 0 ? 1 : shape[rank - 1]!;
  const inner = strides.map((s) => (rank === 0 ? 0 : s[rank - 1]!));
  if (inner.some((s) => s !== 0 && s !== 1)) return false;
  const key = `${inner.join(',')}|${facts.code}`;
  let rows = modules.get(key);
  if (!rows) {
    rows = instantiate<{ rows: RowsFn }>(mapModule(expr, inner)).rows;
    modules.set(key, rows);
  }
  const total = numel(out.shape);
  if (total === 0) return true;
  const h = heap();
  h.reset();
  // Addresses of the operands in the heap first (before any scratch allocation may grow the memory).
  const direct = inputs.map((v) => h.addressOf(v.data, v.offset));
  const outDirect = h.addressOf(out.data, out.offset);
  const bases = inputs.map((v, k) => {
    if (direct[k] !== undefined) return direct[k];
    // A JS array: its span copied in.
    let lo = v.offset, hi = v.offset;
    for (let d = 0; d < rank; d++) {
      const reach = (shape[d]! - 1) * strides[k]![d]!;
      if (reach < 0) lo += reach;
      else hi += reach;
    }
    const at = h.alloc((hi - lo + 1) * 4);
    h.f32.set((v.data as Float32Array).subarray(lo, hi + 1), at >>> 2);
    return at + (v.offset - lo) * 4;
  });
  const o = outDirect ?? h.alloc(total * 4);
  // The last two collapsed dims run inside the module (rows × len); leading dims iterate here.
  const count = rank >= 2 ? shape[rank - 2]! : 1;
  const steps = strides.map((s) => (rank >= 2 ? s[rank - 2]! * 4 : 0));
  const outer = shape.slice(0, Math.max(0, rank - 2)), idx = new Array<number>(outer.length).fill(0), ptr = [...bases];
  const constants = facts.constants;
  const k = inputs.length;
  const call = (outAt: number, from: readonly number[], n: number, rowCount: number): number[] => [outAt, ...from, n, rowCount, len * 4, ...steps, ...constants];
  for (let r = 0, blocks = total / (len * count); r < blocks; r++) {
    const outAt = o + r * len * count * 4;
    const tasks = split(count, len, (first, rowsHere, col, cols) => call(outAt + (first * len + col) * 4, ptr.map((p, j) => p + first * steps[j]! + col * inner[j]! * 4), cols, rowsHere));
    parallelFor(tasks, rows);
    for (let d = outer.length - 1; d >= 0; d--) {
      for (let j = 0; j < k; j++) ptr[j]! += strides[j]![d]! * 4;
      if (++idx[d]! < outer[d]!) break;
      for (let j = 0; j < k; j++) ptr[j]! -= strides[j]![d]! * 4 * outer[d]!;
      idx[d] = 0;
    }
  }
  if (outDirect === undefined) (out.data as Float32Array).set(h.f32.subarray(o >>> 2, (o >>> 2) + total), out.offset);
  // Every float16 node was rounded, the result's too (a constant's value is the caller's): the backend's pass may skip it.
  if (out.dtype === 'float16' && expr.kind !== 'const') noteRoundedHalf(out.data as Float32Array, out.offset, total);
  return true;
}

/**
 * Splits `count` rows of `len` elements into tasks for the pool's threads: up to four per thread (so
 * threads that run late or slow leave less to wait for), of at least MIN_ELEMENTS_PER_THREAD elements;
 * by rows, or (one long row) by columns in multiples of four. `task(firstRow, rows, firstColumn, columns)` makes each.
 */
function split(count: number, len: number, task: (first: number, rows: number, col: number, cols: number) => number[]): number[][] {
  const want = Math.floor((count * len) / MIN_ELEMENTS_PER_THREAD);
  const threads = want > 1 ? availableThreads() : 1;
  if (threads <= 1) return [task(0, count, 0, len)];
  const parts = Math.min(want, 4 * threads), tasks = [];
  if (count === 1) {
    const per = Math.ceil(len / parts / 4) * 4;
    for (let col = 0; col < len; col += per) tasks.push(task(0, 1, col, Math.min(per, len - col)));
  } else {
    const per = Math.ceil(count / Math.min(parts, count));
    for (let first = 0; first < count; first += per) tasks.push(task(first, Math.min(per, count - first), 0, len));
  }
  return tasks;
}
