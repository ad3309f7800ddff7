import type { CpuView } from '../../ops/op.js';
import type { Expr } from '../../ops/expr.js';
import type { BlockLayout } from '../cpu/norm.js';
import { isContiguous, numel } from '../../tensor/shape.js';
import { type Code, ModuleBuilder } from './emitter.js';
import { heap, instantiate, memoryImport } from './heap.js';
import { emitExp } from './map.js';

// Row kernels over the last dim of a contiguous float32 tensor: softmax and layerNorm, four lanes at
// a time. A row's last four-wide step masks the lanes past its end out of the max and the sums (the
// loads there read the next row or buffer padding; the stores there are rewritten by the next row).

interface RowExports extends WebAssembly.Exports {
  softmax(x: number, out: number, rows: number, n: number): void;
  layerNorm(x: number, out: number, w: number, b: number, rows: number, n: number, eps: number): void;
}

/** Emits: for each row (rows × n floats from `x`, advancing `x`/`out` after each), `pass(i, valid)` for each four-wide step. */
function eachRow(c: Code, x: number, out: number, rows: number, n: number, body: (steps: (pass: (i: number, valid: number) => void) => void) => void): void {
  const row = c.local('i32'), i = c.local('i32'), iota = c.local('v128'), valid = c.local('v128');
  c.i32(0).simd('i32x4.splat');
  for (let l = 1; l < 4; l++) c.i32(l).lane('i32x4.replace_lane', l);
  c.set(iota);
  c.forRange(row, () => c.i32(0), () => c.get(rows), 1, () => {
    body((pass) => {
      c.forRange(i, () => c.i32(0), () => c.get(n), 4, () => {
        // valid = lanes i + l < n
        c.get(iota).get(i).simd('i32x4.splat', 'i32x4.add').get(n).simd('i32x4.splat', 'i32x4.lt_s').set(valid);
        pass(i, valid);
      });
    });
    c.get(x).get(n).i32(2).op('i32.shl', 'i32.add').set(x);
    c.get(out).get(n).i32(2).op('i32.shl', 'i32.add').set(out);
  });
}

/** Pushes the lanes of v128 local `v` combined by `op`. */
function horizontal(c: Code, v: number, op: 'f32.max' | 'f32.add'): void {
  c.get(v).lane('f32x4.extract_lane', 0).get(v).lane('f32x4.extract_lane', 1).op(op);
  c.get(v).lane('f32x4.extract_lane', 2).get(v).lane('f32x4.extract_lane', 3).op(op, op);
}

const at = (c: Code, base: number, i: number): Code => c.get(base).get(i).i32(2).op('i32.shl', 'i32.add');

function rowModule(): Uint8Array<ArrayBuffer> {
  const m = new ModuleBuilder(memoryImport());
  m.func('softmax', ['i32', 'i32', 'i32', 'i32'], [], (c) => {
    const [x, out, rows, n] = [0, 1, 2, 3];
    const acc = c.local('v128'), v = c.local('v128'), mx = c.local('v128'), sum = c.local('v128'), tmp = () => c.local('v128');
    eachRow(c, x, out, rows, n, (steps) => {
      c.f32(-Infinity).simd('f32x4.splat').set(acc);
      steps((i, valid) => {
        at(c, x, i).mem('v128.load').f32(-Infinity).simd('f32x4.splat').get(valid).simd('v128.bitselect');
        c.get(acc).simd('f32x4.max').set(acc);
      });
      horizontal(c, acc, 'f32.max');
      c.simd('f32x4.splat').set(mx);
      c.f32(0).simd('f32x4.splat').set(acc);
      steps((i, valid) => {
        at(c, x, i).mem('v128.load').get(mx).simd('f32x4.sub').set(v);
        emitExp(c, v, tmp);
        c.f32(0).simd('f32x4.splat').get(valid).simd('v128.bitselect').set(v);
        at(c, out, i).get(v).mem('v128.store');
        c.get(acc).get(v).simd('f32x4.add').set(acc);
      });
      horizontal(c, acc, 'f32.add');
      c.simd('f32x4.splat').set(sum);
      steps((i) => {
        at(c, out, i);
        at(c, out, i).mem('v128.load').get(sum).simd('f32x4.div').mem('v128.store');
      });
    });
  });
  m.func('layerNorm', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'f64'], [], (c) => {
    const [x, out, w, b, rows, n, eps] = [0, 1, 2, 3, 4, 5, 6];
    const j = c.local('i32'), sum = c.local('f64'), mean = c.local('f64'), d = c.local('f64'), meanV = c.local('v128'), rstdV = c.local('v128');
    /** Σ_j f(x[j]) in double, one element at a time: `term` turns the element (f64, on the stack) into the summand. */
    const sumRow = (term: () => void): void => {
      c.f64(0).set(sum);
      c.forRange(j, () => c.i32(0), () => c.get(n), 1, () => {
        c.get(sum);
        at(c, x, j).mem('f32.load').op('f64.promote_f32');
        term();
        c.op('f64.add').set(sum);
      });
    };
    eachRow(c, x, out, rows, n, (steps) => {
      // The statistics in double, as the JS kernel computes them (float32 sums of long rows drift).
      sumRow(() => undefined);
      c.get(sum).get(n).op('f64.convert_i32_s', 'f64.div').set(mean);
      sumRow(() => void c.get(mean).op('f64.sub').tee(d).get(d).op('f64.mul'));
      c.get(mean).op('f32.demote_f64').simd('f32x4.splat').set(meanV);
      // rstd = 1 / sqrt(Σd² / n + eps)
      c.f64(1).get(sum).get(n).op('f64.convert_i32_s', 'f64.div').get(eps).op('f64.add', 'f64.sqrt', 'f64.div', 'f32.demote_f64').simd('f32x4.splat').set(rstdV);
      steps((i) => {
        at(c, out, i);
        at(c, x, i).mem('v128.load').get(meanV).simd('f32x4.sub').get(rstdV).simd('f32x4.mul');
        at(c, w, i).mem('v128.load').simd('f32x4.mul');
        at(c, b, i).mem('v128.load').simd('f32x4.add').mem('v128.store');
      });
    });
  });
  return m.build();
}

let rowExports: RowExports | undefined;
const kernels = (): RowExports => (rowExports ??= instantiate<RowExports>(rowModule()));

/** Copies `values` into the heap with 16 bytes of padding after them (for a row's last four-wide step). */
function putPadded(values: Float32Array): number {
  const h = heap(), p = h.alloc(values.byteLength + 16);
  h.f32.set(values, p >> 2);
  return p;
}

/**
 * softmax (not logSoftmax) over the last dim of a contiguous float32 input without a prologue, as
 * softmaxKernel (src/kernels/cpu/reduce.ts) takes it; false (nothing computed) for anything else.
 */
export function wasmSoftmax(inputs: readonly CpuView[], prologue: Expr | undefined, dims: readonly number[], log: boolean, out: CpuView): boolean {
  const x = inputs[0]!, r = x.shape.length;
  if (log || prologue || x.dtype !== 'float32' || out.dtype !== 'float32' || r === 0 || dims.length !== 1 || dims[0] !== r - 1 || !isContiguous(x.shape, x.strides)) return false;
  const n = x.shape[r - 1]!, total = numel(x.shape);
  if (total === 0) return true;
  const h = heap();
  h.reset();
  const xi = putPadded((x.data as Float32Array).subarray(x.offset, x.offset + total)), o = h.alloc(total * 4 + 16);
  kernels().softmax(xi, o, total / n, n);
  (out.data as Float32Array).set(h.f32.subarray(o >> 2, (o >> 2) + total), out.offset);
  return true;
}

/**
 * layerNorm's block normalisation (blockNormKernel's layout with one group and one element per
 * channel: the trailing `blockSize` elements, weight and bias of that size or absent) on a contiguous
 * float32 input; false (nothing computed) for other layouts (groupNorm, instanceNorm) and dtypes.
 */
export function wasmLayerNorm(x: CpuView, weight: CpuView | undefined, bias: CpuView | undefined, layout: BlockLayout, eps: number, out: CpuView): boolean {
  const n = layout.blockSize, params = [weight, bias].filter((p) => p !== undefined);
  if (layout.groups !== 1 || layout.inner !== 1 || n === 0) return false;
  if (x.dtype !== 'float32' || out.dtype !== 'float32' || !isContiguous(x.shape, x.strides)) return false;
  if (!params.every((p) => p.dtype === 'float32' && isContiguous(p.shape, p.strides))) return false;
  const total = numel(x.shape);
  if (total === 0) return true;
  const h = heap();
  h.reset();
  const xi = putPadded((x.data as Float32Array).subarray(x.offset, x.offset + total));
  const param = (p: CpuView | undefined, fill: number) => putPadded(p ? (p.data as Float32Array).subarray(p.offset, p.offset + n) : new Float32Array(n).fill(fill));
  const w = param(weight, 1), b = param(bias, 0), o = h.alloc(total * 4 + 16);
  kernels().layerNorm(xi, o, w, b, total / n, n, eps);
  (out.data as Float32Array).set(h.f32.subarray(o >> 2, (o >> 2) + total), out.offset);
  return true;
}
