import type { CpuView } from '../../ops/op.js';
import type { Expr } from '../../ops/expr.js';
import type { BlockLayout } from '../cpu/norm.js';
import { isContiguous, numel } from '../../tensor/shape.js';
import { type Code, ModuleBuilder } from './emitter.js';
import { heap, instantiate, memoryImport } from './heap.js';
import { availableThreads, parallelFor } from './threads.js';
import { emitExpNonPositive } from './map.js';

// Row kernels over the last dim of a contiguous float32 tensor: softmax and layerNorm, four lanes at
// a time, then the row's tail one element at a time (loaded into lane 0, masked out of the max and
// the sums, stored from lane 0): nothing is read or written past a row, so operands are used in place
// in the heap. Rows are split over the thread pool's threads (every argument is an i32).

interface RowExports extends WebAssembly.Exports {
  softmax(x: number, out: number, rows: number, n: number): void;
  layerNorm(x: number, out: number, w: number, b: number, rows: number, n: number, epsBits: number): void;
}

/** One step of a pass over a row: four elements, or in the tail one (lane 0, zeros after). */
interface Step {
  /** A v128 local: all-ones in lanes that hold row elements (every lane but in the tail). */
  readonly valid: number;
  /** Whether this is a one-element step of the row's tail. */
  readonly tail: boolean;
  /** Pushes the address of this step's elements in operand `stream` (an index into eachRow's streams). */
  address(stream: number): void;
  /** Pushes the four (or, in the tail, one: lane 0, zeros after) floats of `stream` at this step. */
  load(stream: number): void;
  /** Stores the v128 that `value` pushes into `stream` at this step (in the tail only lane 0). */
  store(stream: number, value: () => void): void;
}

type Pass = (step: Step) => void;

/**
 * Emits the row loop over `rows` rows of n floats. `streams` are the operands' address params: a row
 * operand (`perRow`) moves on by n floats after each row; the others (layerNorm's weight and bias) start
 * at the same address in every row. `body(steps)` emits a row's work, each `steps(pass, used)` one pass
 * over it reading or writing the streams `used`: `pass(step)` four elements at a time, then per tail
 * element. Each pass walks a pointer per used stream (no index arithmetic per access) in do-while loops
 * with their exit test at the bottom, as V8 compiles best (see Code.forRange); the test is unsigned,
 * since heap addresses may pass 2 GiB.
 */
function eachRow(c: Code, streams: readonly { param: number; perRow: boolean }[], rows: number, n: number, body: (steps: (pass: Pass, used: readonly number[]) => void) => void): void {
  const row = c.local('i32'), end = c.local('i32'), all = c.local('v128'), first = c.local('v128');
  const ptr = streams.map(() => c.local('i32'));
  c.i32(-1).simd('i32x4.splat').set(all);
  c.i32(0).simd('i32x4.splat').i32(-1).lane('i32x4.replace_lane', 0).set(first);
  const run = (pass: Pass, used: readonly number[], tail: boolean, bytes: () => void): void => {
    const width = tail ? 4 : 16, lead = used[0]!;
    c.get(streams[lead]!.param);
    bytes();
    c.op('i32.add').set(end);
    c.get(ptr[lead]!).get(end).op('i32.lt_u').if(() => {
      c.loop((top) => {
        pass({
          valid: tail ? first : all,
          tail,
          address: (k) => void c.get(ptr[k]!),
          load: (k) => void c.get(ptr[k]!).mem(tail ? 'v128.load32_zero' : 'v128.load'),
          store: (k, value) => {
            c.get(ptr[k]!);
            value();
            if (tail) c.lane('f32x4.extract_lane', 0).mem('f32.store');
            else c.mem('v128.store');
          },
        });
        for (const k of used.slice(1)) c.get(ptr[k]!).i32(width).op('i32.add').set(ptr[k]!);
        c.get(ptr[lead]!).i32(width).op('i32.add').tee(ptr[lead]!).get(end).op('i32.lt_u').brIf(top);
      });
    });
  };
  c.forRange(row, () => c.i32(0), () => c.get(rows), 1, () => {
    body((pass, used) => {
      for (const k of used) c.get(streams[k]!.param).set(ptr[k]!);
      run(pass, used, false, () => void c.get(n).i32(-4).op('i32.and').i32(2).op('i32.shl'));
      run(pass, used, true, () => void c.get(n).i32(2).op('i32.shl'));
    });
    for (const s of streams) if (s.perRow) c.get(s.param).get(n).i32(2).op('i32.shl', 'i32.add').set(s.param);
  });
}

/** Pushes the lanes of v128 local `v` combined by `op`. */
function horizontal(c: Code, v: number, op: 'f32.max' | 'f32.add'): void {
  c.get(v).lane('f32x4.extract_lane', 0).get(v).lane('f32x4.extract_lane', 1).op(op);
  c.get(v).lane('f32x4.extract_lane', 2).get(v).lane('f32x4.extract_lane', 3).op(op, op);
}

function rowModule(): Uint8Array<ArrayBuffer> {
  const m = new ModuleBuilder(memoryImport());
  m.func('softmax', ['i32', 'i32', 'i32', 'i32'], [], (c) => {
    const [x, out, rows, n] = [0, 1, 2, 3], X = 0, OUT = 1;
    const acc = c.local('v128'), v = c.local('v128'), mx = c.local('v128'), scale = c.local('v128'), tmp = () => c.local('v128');
    eachRow(c, [{ param: x, perRow: true }, { param: out, perRow: true }], rows, n, (steps) => {
      c.splatF32(-Infinity).set(acc);
      // f32x4.pmax (acc < x ? x : acc) is one instruction where f32x4.max's NaN rules cost eight; a NaN it
      // passes over still makes the row NaN (its e^(x − max) is NaN, and so is the sum every element is scaled by).
      // Lanes past the row (the tail's zeros) are masked out of the max and the sum; full steps need no mask.
      steps((s) => {
        c.get(acc);
        s.load(X);
        if (s.tail) c.splatF32(-Infinity).get(s.valid).simd('v128.bitselect');
        c.simd('f32x4.pmax').set(acc);
      }, [X]);
      horizontal(c, acc, 'f32.max');
      c.simd('f32x4.splat').set(mx);
      c.splatF32(0).set(acc);
      steps((s) => {
        s.load(X);
        c.get(mx).simd('f32x4.sub').set(v);
        emitExpNonPositive(c, v, tmp);
        if (s.tail) c.splatF32(0).get(s.valid).simd('v128.bitselect');
        c.set(v);
        s.store(OUT, () => void c.get(v));
        c.get(acc).get(v).simd('f32x4.add').set(acc);
      }, [X, OUT]);
      // One division per row, then products: within an ulp of dividing each element.
      c.f32(1);
      horizontal(c, acc, 'f32.add');
      c.op('f32.div').simd('f32x4.splat').set(scale);
      steps((s) => {
        s.store(OUT, () => {
          s.load(OUT);
          c.get(scale).simd('f32x4.mul');
        });
      }, [OUT]);
    });
  });
  m.func('layerNorm', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32'], [], (c) => {
    const [x, out, w, b, rows, n, epsBits] = [0, 1, 2, 3, 4, 5, 6], X = 0, OUT = 1, W = 2, B = 3;
    const sums = [c.local('v128'), c.local('v128')], d = c.local('v128'), tail = c.local('f64'), t = c.local('f64'), mean = c.local('f64');
    const meanD = c.local('v128'), meanV = c.local('v128'), rstdV = c.local('v128');
    /**
     * Σ f(x[j]) in double (as the JS kernel computes the statistics: float32 sums of long rows drift):
     * two elements per f64x2 (floats j, j+1 and j+2, j+3 loaded as 64 bits each, into two sums: one
     * chain of dependent adds would be the loop's bound), the tail in an f64. `vector(d, sum)` /
     * `scalar(t)` add f of the f64x2 local d / f64 local t to v128 local `sum` / `tail`. Leaves the total on the stack.
     */
    const sumRow = (steps: (pass: Pass, used: readonly number[]) => void, vector: (d: number, sum: number) => void, scalar: (t: number) => void): void => {
      for (const sum of sums) c.f64(0).simd('f64x2.splat').set(sum);
      c.f64(0).set(tail);
      steps((s) => {
        if (s.tail) {
          s.address(X);
          c.mem('f32.load').op('f64.promote_f32').set(t);
          scalar(t);
          return;
        }
        sums.forEach((sum, half) => {
          s.address(X);
          c.mem('v128.load64_zero', 8 * half).simd('f64x2.promote_low_f32x4').set(d);
          vector(d, sum);
        });
      }, [X]);
      const [s0, s1] = sums as [number, number];
      c.get(s0).get(s1).simd('f64x2.add').set(s0);
      c.get(s0).lane('f64x2.extract_lane', 0).get(s0).lane('f64x2.extract_lane', 1).op('f64.add').get(tail).op('f64.add');
    };
    const streams = [{ param: x, perRow: true }, { param: out, perRow: true }, { param: w, perRow: false }, { param: b, perRow: false }];
    eachRow(c, streams, rows, n, (steps) => {
      sumRow(steps, (v, sum) => void c.get(sum).get(v).simd('f64x2.add').set(sum), (v) => void c.get(tail).get(v).op('f64.add').set(tail));
      c.get(n).op('f64.convert_i32_s', 'f64.div').set(mean);
      c.get(mean).simd('f64x2.splat').set(meanD);
      const rowSumSq = (): void => sumRow(
        steps,
        (v, sum) => {
          c.get(v).get(meanD).simd('f64x2.sub').set(v);
          c.get(sum).get(v).get(v).simd('f64x2.mul', 'f64x2.add').set(sum);
        },
        (v) => {
          c.get(v).get(mean).op('f64.sub').set(v);
          c.get(tail).get(v).get(v).op('f64.mul', 'f64.add').set(tail);
        },
      );
      c.get(mean).op('f32.demote_f64').simd('f32x4.splat').set(meanV);
      // rstd = 1 / sqrt(Σ(x − mean)² / n + eps)
      c.f64(1);
      rowSumSq();
      c.get(n).op('f64.convert_i32_s', 'f64.div').get(epsBits).op('f32.reinterpret_i32', 'f64.promote_f32', 'f64.add', 'f64.sqrt', 'f64.div', 'f32.demote_f64').simd('f32x4.splat').set(rstdV);
      steps((s) => {
        s.store(OUT, () => {
          s.load(X);
          c.get(meanV).simd('f32x4.sub').get(rstdV).simd('f32x4.mul');
          s.load(W);
          c.simd('f32x4.mul');
          s.load(B);
          c.simd('f32x4.add');
        });
      }, [X, OUT, W, B]);
    });
  });
  return m.build();
}

let rowExports: RowExports | undefined;
const kernels = (): RowExports => (rowExports ??= instantiate<RowExports>(rowModule()));

/** Elements per thread below which splitting rows over the pool costs more than it saves. */
const MIN_ELEMENTS_PER_THREAD = 1 << 15;

/**
 * The address of `length` floats of `v` from element `from`: where they are when `v` lives in the
 * heap, else a copy in scratch (call it for every operand before allocating other scratch: an
 * allocation may grow the memory).
 */
function operand(v: CpuView, from: number, length: number): number {
  const h = heap(), direct = h.addressOf(v.data, from);
  if (direct !== undefined) return direct;
  const p = h.alloc(length * 4);
  h.f32.set((v.data as Float32Array).subarray(from, from + length), p >>> 2);
  return p;
}

/** Runs `fn(x, out, …rest(rows))` over `rows` rows of n floats, split by rows over the pool's threads. */
function overRows(fn: (...args: number[]) => void, x: number, o: number, rows: number, n: number, rest: (rowsHere: number) => number[]): void {
  const want = Math.floor((rows * n) / MIN_ELEMENTS_PER_THREAD);
  // Up to four tasks per thread: threads that run late or slow leave less to wait for.
  const parts = want > 1 ? Math.min(want, rows, 4 * availableThreads()) : 1;
  if (parts <= 1) return parallelFor([[x, o, ...rest(rows)]], fn);
  const per = Math.ceil(rows / parts), tasks: number[][] = [];
  for (let r = 0; r < rows; r += per) tasks.push([x + r * n * 4, o + r * n * 4, ...rest(Math.min(per, rows - r))]);
  parallelFor(tasks, fn);
}

/** Where the output goes: in place when it lives in the heap, else into scratch, copied out after. */
function output(out: CpuView, total: number): { at: number; finish(): void } {
  const h = heap(), direct = h.addressOf(out.data, out.offset);
  if (direct !== undefined) return { at: direct, finish: () => undefined };
  const at = h.alloc(total * 4);
  return { at, finish: () => void (out.data as Float32Array).set(heap().f32.subarray(at >>> 2, (at >>> 2) + total), out.offset) };
}

/**
 * softmax (not logSoftmax) over the last dim of a contiguous float32 input without a prologue, as
 * softmaxKernel (src/kernels/cpu/reduce.ts) takes it; false (nothing computed) for anything else.
 */
export function wasmSoftmax(inputs: readonly CpuView[], prologue: Expr | undefined, dims: readonly number[], log: boolean, out: CpuView): boolean {
  const x = inputs[0]!, r = x.shape.length;
  if (log || prologue || x.dtype !== 'float32' || out.dtype !== 'float32' || r === 0 || dims.length !== 1 || dims[0] !== r - 1) return false;
  if (!isContiguous(x.shape, x.strides) || !isContiguous(out.shape, out.strides) || !(x.data instanceof Float32Array) || !(out.data instanceof Float32Array)) return false;
  const n = x.shape[r - 1]!, total = numel(x.shape);
  if (total === 0) return true;
  const h = heap();
  h.reset();
  const fn = kernels().softmax as (...args: number[]) => void;
  const xi = operand(x, x.offset, total), o = output(out, total);
  overRows(fn, xi, o.at, total / n, n, (rows) => [rows, n]);
  o.finish();
  return true;
}

const bitsView = new DataView(new ArrayBuffer(4));

/**
 * layerNorm's block normalisation (blockNormKernel's layout with one group and one element per
 * channel: the trailing `blockSize` elements, weight and bias of that size or absent) on a contiguous
 * float32 input; false (nothing computed) for other layouts (groupNorm, instanceNorm) and dtypes.
 */
export function wasmLayerNorm(x: CpuView, weight: CpuView | undefined, bias: CpuView | undefined, layout: BlockLayout, eps: number, out: CpuView): boolean {
  const n = layout.blockSize, params = [weight, bias].filter((p) => p !== undefined);
  if (layout.groups !== 1 || layout.inner !== 1 || n === 0) return false;
  if (x.dtype !== 'float32' || out.dtype !== 'float32' || !isContiguous(x.shape, x.strides) || !isContiguous(out.shape, out.strides)) return false;
  if (!(x.data instanceof Float32Array) || !(out.data instanceof Float32Array)) return false;
  if (!params.every((p) => p.dtype === 'float32' && p.data instanceof Float32Array && isContiguous(p.shape, p.strides))) return false;
  const total = numel(x.shape);
  if (total === 0) return true;
  const h = heap();
  h.reset();
  const xi = operand(x, x.offset, total);
  const param = (p: CpuView | undefined, fill: number): number => {
    if (p) return operand(p, p.offset, n);
    const at = h.alloc(n * 4);
    h.f32.fill(fill, at >>> 2, (at >>> 2) + n);
    return at;
  };
  const w = param(weight, 1), b = param(bias, 0), o = output(out, total);
  bitsView.setFloat32(0, eps, true);
  const epsBits = bitsView.getInt32(0, true);
  overRows(kernels().layerNorm as (...args: number[]) => void, xi, o.at, total / n, n, (rows) => [w, b, rows, n, epsBits]);
  o.finish();
  return true;
}
