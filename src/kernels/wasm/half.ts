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
  readonly magnitude: number;
  readonly exponent: number;
  readonly step: number;
  readonly lowest: number;
  readonly highest: number;
  readonly overflow: number;
  readonly infinity: number;
}

/** Emits the splats of `emitRoundToHalf`'s constants into fresh v128 locals (call it before the loops that round). */
export function halfConstants(c: Code): HalfConstants {
  const splat = (bits: number): number => {
    const l = c.local('v128');
    c.i32(bits).simd('i32x4.splat').set(l);
    return l;
  };
  const f32 = (v: number): number => splat(new Int32Array(new Float32Array([v]).buffer)[0]!);
  return { magnitude: splat(0x7fffffff), exponent: splat(0x7f800000), step: splat(13 << 23), lowest: f32(0.5), highest: f32(2 ** 28), overflow: f32(65520), infinity: f32(Infinity) };
}

/**
 * Rounds the f32x4 in v128 local `x` to the nearest binary16 values, ties to even, as float32 numbers (leaves the
 * result on the stack; `tmp` gives v128 locals, `k` the constants from `halfConstants`). Exact over float16's whole
 * range, without a conversion table: a value a = |x| of binade 2^e is rounded to a multiple of 2^(e−10) by adding
 * and subtracting M = 2^(e+13) (its exponent bits plus 13, clamped to [2^−1, 2^28]: below 2^−14 the step stays
 * 2^−24, the subnormals), whose sum's f32 ulp is that multiple, so the hardware's f32 addition does the
 * round-half-even. a ≥ 65520 (which binary16 rounds to ∞) gives ∞ through a max with ∞ or 0; ±∞ and NaN pass
 * through. The sign comes back as x XOR |x| (−0 stays −0). The chain from x to the result is short (no multiplies):
 * a fused kernel rounds after every float16 node, and its loop is latency-bound.
 */
export function emitRoundToHalf(c: Code, x: number, tmp: () => number, k: HalfConstants): void {
  const a = tmp(), m = tmp();
  c.get(x).get(k.magnitude).simd('v128.and').set(a);
  // M from x's exponent bits (0 for zeros and float32 subnormals; past 2^114 the sum overflows into the sign bit or ∞:
  // the clamps take both). pmin/pmax are one instruction each, and M is never NaN.
  c.get(x).get(k.exponent).simd('v128.and').get(k.step).simd('i32x4.add').get(k.lowest).simd('f32x4.pmax').get(k.highest).simd('f32x4.pmin').set(m);
  c.get(a).get(m).simd('f32x4.add').get(m).simd('f32x4.sub');
  // max(y, a ≥ 65520 ? ∞ : 0): y ≥ +0, and a NaN y stays NaN (pmax keeps its first operand unless it is less).
  c.get(a).get(k.overflow).simd('f32x4.ge').get(k.infinity).simd('v128.and', 'f32x4.pmax');
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
