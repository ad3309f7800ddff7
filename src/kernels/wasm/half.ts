import { f16round } from '@petamoriken/float16';
import type { Expr } from '../../ops/expr.js';
import type { NarrowMode } from '../cpu/half.js';
import { type Code, ModuleBuilder } from './emitter.js';
import { HeapFullError, heap, instantiate, memoryImport } from './heap.js';
import { availableThreads, parallelFor } from './threads.js';

// float16 on the CPU: storages hold binary16 bits (2 bytes a value); the backend widens float16 operands into float32
// scratch before a kernel and narrows float16 results back into binary16 after it (src/backend/cpu.ts), so the
// float32 kernels compute on them in f32 with f32 accumulation. Here: those two passes as SIMD (integer bit
// manipulation: WebAssembly has no f16 type), and the rounding to binary16 that the narrowing (and a fused
// elementwise expression after every float16 node, src/kernels/wasm/map.ts) applies, as the JavaScript reference
// path does with f16round.

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

/** Halves and floats per SIMD step of the conversion passes: one v128 of binary16 bits, two of float32. */
const HALF_STEP = 8;

type Convert = (from: number, to: number, n: number) => void;
let converters: { widen: Convert; round: Convert; roundInPlace: Convert; exact: Convert } | undefined;

/**
 * The conversion passes over n values (a multiple of HALF_STEP) from byte address `from` to `to`: widen(halves →
 * floats), and narrowing floats → halves as NarrowMode says: round, roundInPlace, exact.
 */
function conversionModule(): NonNullable<typeof converters> {
  if (!converters) {
    const m = new ModuleBuilder(memoryImport());
    const splat = (c: Code, bits: number): number => {
      const l = c.local('v128');
      c.i32(bits).simd('i32x4.splat').set(l);
      return l;
    };
    // binary16 h → float32: the exponent and fraction bits moved up by 13 make a float32 of h's value × 2⁻¹¹²
    // (normal or, for subnormal h, subnormal: exact either way), rescaled by an exact ×2¹¹²; ∞ and NaN (exponent
    // 31) take float32's all-ones exponent instead; then the sign.
    m.func('widen', ['i32', 'i32', 'i32'], [], (c) => {
      const from = 0, to = 1, n = 2, p = c.local('i32'), q = c.local('i32'), v = c.local('v128'), h = c.local('v128'), em = c.local('v128');
      const sign = splat(c, 0x8000), magnitude = splat(c, 0x7fff), scale = splat(c, 0x77800000), finite = splat(c, 0x7bff << 13), exponent = splat(c, 0x7f800000);
      c.get(to).set(q);
      c.forRange(p, () => c.get(from), () => c.get(from).get(n).i32(1).op('i32.shl').op('i32.add'), 16, () => {
        c.get(p).mem('v128.load').set(v);
        for (const [half, extend] of [[0, 'i32x4.extend_low_i16x8_u'], [16, 'i32x4.extend_high_i16x8_u']] as const) {
          c.get(v).simd(extend).set(h);
          c.get(h).get(magnitude).simd('v128.and').i32(13).simd('i32x4.shl').set(em);
          c.get(q);
          // bitselect(special, scaled, em > 0x7bff << 13), with the sign or-ed in.
          c.get(em).get(exponent).simd('v128.or');
          c.get(em).get(scale).simd('f32x4.mul');
          c.get(finite).get(em).simd('i32x4.lt_s', 'v128.bitselect');
          c.get(h).get(sign).simd('v128.and').i32(16).simd('i32x4.shl', 'v128.or');
          c.mem('v128.store', half);
        }
        c.get(q).i32(32).op('i32.add').set(q);
      });
    });
    // float32 → binary16 bits: rounded to a binary16 value (roundInPlace stores it back over the float32 value; exact
    // takes values that are binary16 values already), whose magnitude × 2⁻¹¹² is a float32 with exactly h's bits
    // moved up by 13 (exact, subnormals included); ∞ and NaN give 0x7c00 (with the quiet bit 0x200 for NaN); the sign
    // from bit 31. Two f32x4 make one i16x8.
    for (const [name, round, inPlace] of [['round', true, false], ['roundInPlace', true, true], ['exact', false, false]] as const) {
      m.func(name, ['i32', 'i32', 'i32'], [], (c) => {
        const from = 0, to = 1, n = 2, p = c.local('i32'), q = c.local('i32'), x = c.local('v128'), r = c.local('v128'), a = c.local('v128');
        const tmp = (): number => c.local('v128'), k = round ? halfConstants(c) : undefined;
        const magnitude = splat(c, 0x7fffffff), scale = splat(c, 0x07800000), largest = splat(c, 0x7f7fffff), infinity = splat(c, 0x7f800000);
        const halfInfinity = splat(c, 0x7c00), quiet = splat(c, 0x200), sign = splat(c, 0x8000);
        c.get(to).set(q);
        c.forRange(p, () => c.get(from), () => c.get(from).get(n).i32(2).op('i32.shl').op('i32.add'), 32, () => {
          c.get(q);
          for (const half of [0, 16]) {
            c.get(p).mem('v128.load', half).set(x);
            if (k) {
              emitRoundToHalf(c, x, tmp, k);
              c.set(r);
              if (inPlace) c.get(p).get(r).mem('v128.store', half);
            } else c.get(x).set(r);
            c.get(r).get(magnitude).simd('v128.and').set(a);
            // bitselect(0x7c00 | (NaN ? 0x200 : 0), (a·2⁻¹¹²) >> 13, a > largest finite), | sign.
            c.get(halfInfinity).get(infinity).get(a).simd('i32x4.lt_s').get(quiet).simd('v128.and', 'v128.or');
            c.get(a).get(scale).simd('f32x4.mul').i32(13).simd('i32x4.shr_s');
            c.get(largest).get(a).simd('i32x4.lt_s', 'v128.bitselect');
            c.get(r).i32(16).simd('i32x4.shr_s').get(sign).simd('v128.and', 'v128.or');
          }
          c.simd('i16x8.narrow_i32x4_u').mem('v128.store');
          c.get(q).i32(16).op('i32.add').set(q);
        });
      });
    }
    converters = instantiate<NonNullable<typeof converters>>(m.build());
  }
  return converters;
}

/** Elements per task below which sharing a conversion with the pool's threads costs more than it saves. */
const MIN_ELEMENTS_PER_TASK = 1 << 16;

/** Runs `pass` over n values (a multiple of HALF_STEP) from `from` (`fromSize` bytes a value) to `to` (`toSize`), on the pool's threads when long. */
function convert(pass: Convert, from: number, fromSize: number, to: number, toSize: number, n: number): void {
  const parts = n >= 2 * MIN_ELEMENTS_PER_TASK ? Math.min(Math.floor(n / MIN_ELEMENTS_PER_TASK), 4 * availableThreads()) : 1;
  if (parts <= 1) return pass(from, to, n);
  const per = Math.ceil(n / parts / HALF_STEP) * HALF_STEP, tasks: number[][] = [];
  for (let i = 0; i < n; i += per) tasks.push([from + i * fromSize, to + i * toSize, Math.min(per, n - i)]);
  try {
    parallelFor(tasks, pass);
  } catch (e) {
    // A full heap (4 GiB) has no room for the pool's task table: this thread converts it all, which needs none.
    if (!(e instanceof HeapFullError)) throw e;
    pass(from, to, n);
  }
}

/**
 * Widens binary16 bits to float32 values, the whole of `dst` from as many of `src`, both in the WebAssembly heap,
 * HALF_STEP values at a time; returns how many it converted (the caller converts the rest), 0 where either array
 * is not in the heap.
 */
export function wasmWidenHalf(src: Uint16Array, dst: Float32Array): number {
  const h = heap(), from = h.addressOf(src), to = h.addressOf(dst);
  if (from === undefined || to === undefined) return 0;
  const n = dst.length - (dst.length % HALF_STEP);
  if (n > 0) convert(conversionModule().widen, from, 2, to, 4, n);
  return n;
}

/** Narrows float32 values to binary16 bits as `mode` says (src/kernels/cpu/half.ts), as `wasmWidenHalf` does the other way; returns how many it converted. */
export function wasmNarrowHalf(src: Float32Array, dst: Uint16Array, mode: NarrowMode): number {
  const h = heap(), from = h.addressOf(src), to = h.addressOf(dst);
  if (from === undefined || to === undefined) return 0;
  const n = dst.length - (dst.length % HALF_STEP), passes = conversionModule();
  if (n > 0) convert(mode === 'exact' ? passes.exact : mode === 'round in place' ? passes.roundInPlace : passes.round, from, 4, to, 2, n);
  return n;
}
