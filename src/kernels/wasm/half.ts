import { f16round } from '@petamoriken/float16';
import type { Expr } from '../../ops/expr.js';
import { type Code, ModuleBuilder } from './emitter.js';
import { HeapFullError, heap, instantiate, memoryImport } from './heap.js';
import { availableThreads, parallelFor } from './threads.js';

// float16 on the CPU: tensors hold float32 numbers that binary16 represents exactly (src/tensor/dtype.ts), so the
// float32 kernels read them as they are (the widening is free) and compute in f32 with f32 accumulation; what
// float16 needs on top is rounding: of every kernel's float16 output, and inside a fused elementwise expression
// after every float16 node (src/kernels/wasm/map.ts), as the JavaScript reference path does with f16round.

/** The v128 constants `emitRoundToHalf` reads: locals splat once, before a kernel's loops (engines do not hoist splats out of loops). */
export interface HalfConstants {
  readonly exponent: number;
  readonly lowest: number;
  readonly highest: number;
  readonly step: number;
  readonly up: number;
  readonly down: number;
}

/** Emits the splats of `emitRoundToHalf`'s constants into fresh v128 locals (call it before the loops that round). */
export function halfConstants(c: Code): HalfConstants {
  const splat = (bits: number): number => {
    const l = c.local('v128');
    c.i32(bits).simd('i32x4.splat').set(l);
    return l;
  };
  const f32 = (v: number): number => splat(new Int32Array(new Float32Array([v]).buffer)[0]!);
  return { exponent: splat(0x7f800000), lowest: f32(2 ** -14), highest: f32(2 ** 15), step: f32(2 ** 13), up: f32(2 ** 112), down: f32(2 ** -112) };
}

/**
 * Rounds the f32x4 in v128 local `x` to the nearest binary16 values, ties to even, as float32 numbers (leaves the
 * result on the stack; `tmp` gives v128 locals, `k` the constants from `halfConstants`). Exact over float16's whole
 * range, without a conversion table, in 11 instructions: a value of binade 2^e (e clamped to [−14, 15]) is rounded
 * to a multiple of 2^(e−10) by adding and subtracting M = 2^(e+13), whose sum's f32 ulp is that multiple, so the
 * hardware's f32 addition does the round-half-even (below 2^−14 the step stays 2^−24: the subnormals). Scaling by
 * 2^112 and back is exact for every binary16 value and overflows to ∞ from 65536 up (x ≥ 65520 rounds there, as
 * binary16 overflows); ±∞ and NaN pass through. The sign comes back as x XOR |x| (−0 stays −0).
 */
export function emitRoundToHalf(c: Code, x: number, tmp: () => number, k: HalfConstants): void {
  const a = tmp(), m = tmp();
  c.get(x).simd('f32x4.abs').set(a);
  // M = 2^(e+13) from |x|'s exponent bits (0 for zeros and float32 subnormals; ∞ for ∞ and NaN), clamped: pmin/pmax
  // are one instruction each, and the exponent is never NaN.
  c.get(a).get(k.exponent).simd('v128.and').get(k.lowest).simd('f32x4.pmax').get(k.highest).simd('f32x4.pmin');
  c.get(k.step).simd('f32x4.mul').set(m);
  c.get(a).get(m).simd('f32x4.add').get(m).simd('f32x4.sub');
  c.get(k.up).simd('f32x4.mul').get(k.down).simd('f32x4.mul');
  c.get(x).get(a).simd('v128.xor', 'v128.xor');
}

/**
 * Functions whose result is one of their arguments, a bound or an integer near one: binary16 values stay binary16
 * values. Not `cast`: a GEMM epilogue's input 0 is the product before rounding, declared float16, and a cast to
 * float16 is what rounds it (src/kernels/cpu/gemm.ts, epilogueKernel).
 */
const SELECTING = new Set(['maximum', 'minimum', 'clamp', 'relu', 'relu6', 'neg', 'abs', 'floor', 'ceil', 'round']);
const isHalf = (v: number): boolean => Number.isNaN(v) || f16round(v) === v;

/**
 * Whether a float16 node's f32 result is a binary16 value already, so that rounding it changes nothing: a selecting
 * function of float16 inputs and nodes (each rounded or exact) whose parameters (clamp's bounds) are binary16 values
 * too. Constant arguments do not count: their values are kernel arguments, not part of the code (one module serves them all).
 */
export function exactInHalf(node: Expr): boolean {
  return node.kind === 'call' && SELECTING.has(node.fn) && node.params.every(isHalf) && node.args.every((a) => a.dtype === 'float16' && a.kind !== 'const');
}

type RoundFn = (at: number, n: number) => void;
let roundFn: RoundFn | undefined;

/** round(at, n): rounds n float32 values at byte address `at` to binary16 in place, four at a time, then the tail one by one. */
function roundModule(): RoundFn {
  if (!roundFn) {
    const m = new ModuleBuilder(memoryImport());
    m.func('round', ['i32', 'i32'], [], (c) => {
      const at = 0, n = 1, end = c.local('i32'), p = c.local('i32'), v = c.local('v128');
      const tmp = (): number => c.local('v128'), k = halfConstants(c);
      c.get(at).get(n).i32(-4).op('i32.and').i32(2).op('i32.shl').op('i32.add').set(end);
      c.forRange(p, () => c.get(at), () => c.get(end), 16, () => {
        c.get(p).mem('v128.load').set(v);
        c.get(p);
        emitRoundToHalf(c, v, tmp, k);
        c.mem('v128.store');
      });
      c.forRange(p, () => c.get(end), () => c.get(at).get(n).i32(2).op('i32.shl').op('i32.add'), 4, () => {
        c.get(p).mem('v128.load32_splat').set(v);
        c.get(p);
        emitRoundToHalf(c, v, tmp, k);
        c.lane('f32x4.extract_lane', 0).mem('f32.store');
      });
    });
    roundFn = instantiate<{ round: RoundFn }>(m.build()).round;
  }
  return roundFn;
}

/** Elements per task below which sharing the rounding with the pool's threads costs more than it saves. */
const MIN_ELEMENTS_PER_TASK = 1 << 16;

/**
 * Rounds `data` (float32 numbers, in the WebAssembly heap) to binary16 values in place, on the pool's threads when
 * it is long; false, changing nothing, when `data` is not in the heap (a JS array: the caller rounds it in JS).
 */
export function wasmRoundHalf(data: Float32Array): boolean {
  const at = heap().addressOf(data, 0);
  if (at === undefined) return false;
  const n = data.length, round = roundModule();
  const parts = n >= 2 * MIN_ELEMENTS_PER_TASK ? Math.min(Math.floor(n / MIN_ELEMENTS_PER_TASK), 4 * availableThreads()) : 1;
  if (parts <= 1) {
    round(at, n);
    return true;
  }
  const per = Math.ceil(n / parts / 4) * 4, tasks: number[][] = [];
  for (let i = 0; i < n; i += per) tasks.push([at + i * 4, Math.min(per, n - i)]);
  try {
    parallelFor(tasks, round);
  } catch (e) {
    // A full heap (4 GiB) has no room for the pool's task table: this thread rounds it all, which needs none.
    if (!(e instanceof HeapFullError)) throw e;
    round(at, n);
  }
  return true;
}
