import type { Expr } from '../../ops/expr.js';
import type { CpuView } from '../../ops/op.js';
import { broadcastShapes, contiguousStrides, numel, stridedOffsets } from '../../tensor/shape.js';
import { kernelOverrides } from '../cpu/overrides.js';
import { type ReduceKind, reductionSpace } from '../cpu/reduce.js';
import { ModuleBuilder } from './emitter.js';
import { heap, instantiate, memoryImport } from './heap.js';

// Reductions (sum, mean, max, min, argmax, argmin) over any dims of a float32 view, in WebAssembly.
// The view's index spaces are the JS kernel's (reductionSpace): group i starts at outer[i], and its
// j-th element is inner[j] further. When a group's elements are consecutive (the reduced dims are the
// view's innermost, contiguous ones: a row, or NCHW's H·W plane of a global average pool) they are read
// eight at a time into two v128 accumulators; otherwise one at a time through the offset table.
// Sums accumulate in float32: 8 partial sums, then their total, so errors grow like (n/8)·ε·Σ|x|.
// max/min propagate NaN; argmax/argmin give the first extreme index, NaN counting as the extreme (as PyTorch).

const KINDS = ['sum', 'max', 'min', 'argmax', 'argmin'] as const;
type WasmKind = (typeof KINDS)[number];

/** reduce_<kind>(x, outer, count, inner, n, contiguous, out): out[i] = fold_j x[outer[i] + inner[j]] (byte offsets; i32 results for arg kinds). */
function emitReduce(m: ModuleBuilder, kind: WasmKind): void {
  m.func(`reduce_${kind}`, ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32'], [], (c) => {
    const [x, outer, count, inner, n, contiguous, out] = [0, 1, 2, 3, 4, 5, 6];
    const i = c.local('i32'), j = c.local('i32'), base = c.local('i32'), best = c.local('i32');
    const acc = c.local('f32'), v = c.local('f32'), a0 = c.local('v128'), a1 = c.local('v128');
    const arg = kind === 'argmax' || kind === 'argmin';
    const vop = kind === 'sum' ? 'f32x4.add' : kind === 'max' ? 'f32x4.max' : 'f32x4.min';
    const sop = kind === 'sum' ? 'f32.add' : kind === 'max' ? 'f32.max' : 'f32.min';
    /** Pushes element j's address: base + inner[j] (table) or base + 4j (contiguous). */
    const at = (table: boolean): void => {
      c.get(base);
      if (table) c.get(inner).get(j).i32(2).op('i32.shl', 'i32.add').mem('i32.load');
      else c.get(j).i32(2).op('i32.shl');
      c.op('i32.add');
    };
    /** acc = fold(acc, element at `at`), from j to n, one element at a time. */
    const scalarTail = (table: boolean): void => {
      c.block((done) => c.loop((top) => {
        c.get(j).get(n).op('i32.ge_s').brIf(done);
        at(table);
        c.mem('f32.load').set(v);
        if (arg) {
          // Replace when v is beyond acc or v is NaN, unless acc already is NaN.
          c.get(v).get(acc).op(kind === 'argmax' ? 'f32.gt' : 'f32.lt').get(v).get(v).op('f32.ne', 'i32.or');
          c.get(acc).get(acc).op('f32.eq', 'i32.and').if(() => void c.get(v).set(acc).get(j).set(best));
        } else {
          c.get(acc).get(v).op(sop).set(acc);
        }
        c.get(j).i32(1).op('i32.add').set(j).br(top);
      }));
    };
    c.forRange(i, () => c.i32(0), () => c.get(count), 1, () => {
      c.get(x).get(outer).get(i).i32(2).op('i32.shl', 'i32.add').mem('i32.load').op('i32.add').set(base);
      c.i32(0).set(best);
      if (arg) {
        // The first element seeds the running extreme.
        c.get(base).get(inner).mem('i32.load').op('i32.add').mem('f32.load').set(acc);
        c.i32(1).set(j);
        scalarTail(true);
      } else {
        if (kind === 'sum') c.f32(0).set(acc);
        else c.get(base).get(inner).mem('i32.load').op('i32.add').mem('f32.load').set(acc);
        c.i32(0).set(j);
        c.get(contiguous).if(() => {
          // Eight at a time: two accumulators seeded with the fold's identity (sum) or the first element (max/min).
          c.get(acc).simd('f32x4.splat').tee(a0).set(a1);
          c.block((done) => c.loop((top) => {
            c.get(j).i32(8).op('i32.add').get(n).op('i32.gt_s').brIf(done);
            c.get(a0);
            at(false);
            c.mem('v128.load').simd(vop).set(a0);
            c.get(a1);
            at(false);
            c.mem('v128.load', 16).simd(vop).set(a1);
            c.get(j).i32(8).op('i32.add').set(j).br(top);
          }));
          c.get(a0).get(a1).simd(vop).set(a0);
          c.get(a0).lane('f32x4.extract_lane', 0).get(a0).lane('f32x4.extract_lane', 1).op(sop);
          c.get(a0).lane('f32x4.extract_lane', 2).get(a0).lane('f32x4.extract_lane', 3).op(sop).op(sop).set(acc);
          scalarTail(false);
        });
        c.get(contiguous).op('i32.eqz').if(() => scalarTail(true));
      }
      c.get(out).get(i).i32(2).op('i32.shl', 'i32.add');
      if (arg) c.get(best).mem('i32.store');
      else c.get(acc).mem('f32.store');
    });
  });
}

type ReduceFn = (x: number, outer: number, count: number, inner: number, n: number, contiguous: number, out: number) => void;
let fns: Record<WasmKind, ReduceFn> | undefined;

function reduceFns(): Record<WasmKind, ReduceFn> {
  if (!fns) {
    const m = new ModuleBuilder(memoryImport());
    for (const k of KINDS) emitReduce(m, k);
    const e = instantiate<Record<string, ReduceFn>>(m.build());
    fns = Object.fromEntries(KINDS.map((k) => [k, e[`reduce_${k}`]!])) as Record<WasmKind, ReduceFn>;
  }
  return fns;
}

/** Whether `dims` (sorted) are x's innermost dims and their elements consecutive (size-1 dims aside): each group is one run of floats. */
function consecutive(x: CpuView, dims: readonly number[]): boolean {
  const r = x.shape.length;
  if (!dims.every((d, i) => d === r - dims.length + i)) return false;
  let step = 1;
  for (let d = r - 1; d >= r - dims.length; d--) {
    if (x.shape[d] === 1) continue;
    if (x.strides[d] !== step) return false;
    step *= x.shape[d]!;
  }
  return true;
}

/** A float32 view over fresh values of `shape` (the prologue's result, evaluated by the wasm elementwise kernel). */
function evaluated(prologue: Expr, inputs: readonly CpuView[]): CpuView | undefined {
  const shape = broadcastShapes('prologue', ...inputs.map((v) => v.shape));
  const v: CpuView = { data: new Float32Array(numel(shape)), shape, strides: contiguousStrides(shape), offset: 0, dtype: 'float32' };
  return kernelOverrides.map?.(prologue, inputs, v) ? v : undefined;
}

/**
 * Reduces input 0 (or `prologue` over the inputs, evaluated first by the wasm elementwise kernel) over
 * `dims` into the contiguous `out`, as reduceKernel does; returns false to leave what it has no form for
 * (prod, var, std, non-float32 values, empty groups) to the JavaScript kernel.
 */
export function wasmReduce(kind: ReduceKind, inputs: readonly CpuView[], prologue: Expr | undefined, dims: readonly number[], _correction: number, out: CpuView): boolean {
  const wk: WasmKind | undefined = kind === 'mean' ? 'sum' : (KINDS as readonly string[]).includes(kind) ? (kind as WasmKind) : undefined;
  if (!wk || !inputs.every((v) => v.data instanceof Float32Array)) return false;
  const arg = wk === 'argmax' || wk === 'argmin';
  if (arg ? !(out.data instanceof Int32Array) : !(out.data instanceof Float32Array)) return false;
  let x = inputs[0]!;
  if (prologue) {
    const v = evaluated(prologue, inputs);
    if (!v) return false;
    x = v;
  }
  // Groups of consecutive elements (sum, max, min over the innermost dims, contiguous: a row, or a global
  // average pool's H·W plane) read no table of their elements' offsets: it would be n entries built per call.
  const flat = !arg && consecutive(x, dims);
  const kept = x.shape.length - dims.length;
  const { outer, inner } = flat ? { outer: stridedOffsets(x.shape.slice(0, kept), x.strides.slice(0, kept), x.offset), inner: undefined } : reductionSpace(x, dims);
  const count = outer.length, n = flat ? numel(x.shape.slice(kept)) : inner!.length;
  if (count === 0) return true;
  if (n === 0) return false;
  let contiguous = 1;
  if (inner) for (let j = 0; j < n && contiguous; j++) if (inner[j] !== j) contiguous = 0;
  const innerOf = (j: number): number => (inner ? inner[j]! : j);
  const h = heap();
  h.reset();
  // x where it is (its storage in the heap), else the span its groups touch copied in (one memcpy).
  let xAt = h.addressOf(x.data, 0), start = 0;
  if (xAt === undefined) {
    let lo = Infinity, hi = -Infinity, ilo = Infinity, ihi = -Infinity;
    for (let i = 0; i < count; i++) lo = Math.min(lo, outer[i]!), hi = Math.max(hi, outer[i]!);
    for (let j = 0; j < n; j++) ilo = Math.min(ilo, innerOf(j)), ihi = Math.max(ihi, innerOf(j));
    start = lo + ilo;
    xAt = h.alloc((hi + ihi + 1 - start) * 4);
    h.f32.set((x.data as Float32Array).subarray(start, hi + ihi + 1), xAt >>> 2);
  }
  // Results straight into the output when it is in the heap (means are divided after).
  const outAt = h.addressOf(out.data, out.offset) ?? h.alloc(count * 4);
  // A consecutive group's table is its first entry (0), which max and min read to seed their fold.
  const outerAt = h.alloc(count * 4), innerAt = h.alloc((inner ? n : 1) * 4), i32 = h.i32;
  for (let i = 0; i < count; i++) i32[(outerAt >>> 2) + i] = (outer[i]! - start) * 4;
  for (let j = 0; j < (inner ? n : 1); j++) i32[(innerAt >>> 2) + j] = innerOf(j) * 4;
  reduceFns()[wk](xAt, outerAt, count, innerAt, n, contiguous, outAt);
  const res = arg ? h.i32 : h.f32, od = out.data as Float32Array | Int32Array, from = outAt >>> 2;
  if (kind === 'mean') for (let i = 0; i < count; i++) od[out.offset + i] = res[from + i]! / n;
  else if (h.addressOf(out.data, out.offset) === undefined) od.set(res.subarray(from, from + count), out.offset);
  return true;
}
