import { type Expr, call, exprNodes, input } from '../../ops/expr.js';
import type { CpuView } from '../../ops/op.js';
import { isContiguous, numel } from '../../tensor/shape.js';
import { heap } from './heap.js';
import { wasmMap } from './map.js';
import { wasmFloatToInt8, wasmInt8ToFloat } from './int8.js';

// The elementwise kernels around int8 layers in wasm: quantise (cast(clamp(round(x·(1/scale)) + zp, lo, hi)) to
// int8/uint8), dequantise ((f32(q − zp))·scale) and whatever float ops the JIT fused between them (hardswish,
// adds…). The wasm elementwise module (src/kernels/wasm/map.ts) computes in float32 only, so an expression with
// integer ends is rewritten into a float32 one that gives the same values, run there, with the integer ends
// converted natively (typed-array conversions):
//   - an int8/uint8/int32 input read as cast(input, float32), or as cast(sub(cast(input, int32), zp), float32)
//     (dequantise's centring, exact in float32 when |zp| < 2²³: both values and their difference are integers
//     below 2²⁴), reads a float32 copy of the input instead;
//   - an int8/uint8 result cast(clamp(v, lo, hi)) with [lo, hi] inside the dtype's range is the float32 value of
//     clamp(v) stored as the integer type: truncation of an in-range value, as the JavaScript cast's ToInt32, and
//     NaN stores 0 in both.
// Anything else (other integer arithmetic) is left to the JavaScript kernel: the function returns false.

const RANGE: Partial<Record<string, readonly [number, number]>> = { int8: [-128, 127], uint8: [0, 255] };
const INTEGER_INPUTS = new Set(['int8', 'uint8', 'int32']);
/** Integer inputs subtracted in float32 must stay below this in magnitude (then every difference is exact). */
const EXACT_ZP = 2 ** 23;
/** Integer inputs read as zero points must be small (scanned on every call). */
const MAX_ZP_SPAN = 1 << 12;

interface Rewrite {
  expr: Expr;
  /** Integer inputs read through float32 copies, and those subtracted (checked for |v| < 2²³). */
  converted: Set<number>;
  subtracted: Set<number>;
}

/** The float32 form of `expr` (whose root is float32, or an int8/uint8 cast of a bounded clamp), or null. */
export function floatForm(expr: Expr): Rewrite | null {
  const converted = new Set<number>(), subtracted = new Set<number>();
  const memo = new Map<Expr, Expr | null>();
  const asFloatInput = (e: Expr): Expr | null => {
    if (e.kind !== 'input' || !INTEGER_INPUTS.has(e.dtype)) return null;
    converted.add(e.index);
    return input(e.index, 'float32');
  };
  const rewrite = (e: Expr): Expr | null => {
    if (memo.has(e)) return memo.get(e)!;
    let r: Expr | null = null;
    if (e.dtype === 'float32') {
      if (e.kind !== 'call') r = e;
      else if (e.fn === 'cast' && e.args[0]!.dtype !== 'float32') {
        const x = e.args[0]!;
        r = asFloatInput(x);
        // cast(sub(cast(q, int32), zp), float32): dequantise's centring.
        if (!r && x.kind === 'call' && x.fn === 'sub' && x.dtype === 'int32' && (x.params[0] ?? 1) === 1) {
          const [a, b] = x.args as [Expr, Expr];
          const q = a.kind === 'call' && a.fn === 'cast' && a.args[0]!.kind === 'input' && (a.args[0]!.dtype === 'int8' || a.args[0]!.dtype === 'uint8') ? asFloatInput(a.args[0]!) : null;
          const zp = b.kind === 'input' && b.dtype === 'int32' ? asFloatInput(b) : null;
          if (q && zp) {
            subtracted.add((b as { index: number }).index);
            r = call('sub', [q, zp], 'float32', x.params);
          }
        }
      } else if (e.args.every((a) => a.dtype === 'float32')) {
        const args = e.args.map(rewrite);
        if (args.every((a) => a !== null)) r = args.every((a, i) => a === e.args[i]) ? e : call(e.fn, args as Expr[], 'float32', e.params);
      }
    } else if (RANGE[e.dtype] && e.kind === 'call' && e.fn === 'cast') {
      // The root's integer cast of an in-range clamp.
      const x = e.args[0]!, [lo, hi] = RANGE[e.dtype]!;
      if (x.kind === 'call' && x.fn === 'clamp' && x.dtype === 'float32' && x.params[0]! >= lo && x.params[1]! <= hi) r = rewrite(x);
    }
    memo.set(e, r);
    return r;
  };
  // Only the root may be an integer cast.
  if (expr.dtype !== 'float32' && !(RANGE[expr.dtype] && expr.kind === 'call' && expr.fn === 'cast')) return null;
  const out = rewrite(expr);
  if (!out || exprNodes(out).some((n) => n.dtype !== 'float32')) return null;
  return { expr: out, converted, subtracted };
}

/** The storage span a view reads: [lo, hi] element indices. */
function span(v: CpuView): [number, number] {
  let lo = v.offset, hi = v.offset;
  v.shape.forEach((d, i) => {
    const s = v.strides[i]! * (d - 1);
    if (s < 0) lo += s;
    else hi += s;
  });
  return [lo, hi];
}

let runs = 0;
/** How many integer-ended maps ran in wasm (tests check that the path ran). */
export function wasmIntegerMapRuns(): number {
  return runs;
}

/**
 * `expr` over `inputs` into `out` through the float32 wasm elementwise kernel (see above); false, computing nothing,
 * where the expression, a zero point or a layout has no such form.
 */
export function wasmIntegerMap(expr: Expr, inputs: readonly CpuView[], out: CpuView): boolean {
  const integerOut = RANGE[out.dtype] !== undefined;
  if (!integerOut && out.dtype !== 'float32') return false;
  if (!isContiguous(out.shape, out.strides) || numel(out.shape) === 0) return false;
  const form = floatForm(expr);
  if (!form || (form.converted.size === 0 && !integerOut)) return false;
  for (const i of form.subtracted) {
    const v = inputs[i]!, [lo, hi] = span(v);
    if (hi - lo >= MAX_ZP_SPAN) return false;
    for (let k = lo; k <= hi; k++) if (Math.abs(v.data[k]!) >= EXACT_ZP) return false;
  }
  const h = heap();
  // Where the operands live, before any allocation (a private memory's growth detaches the views we were given).
  const addresses = inputs.map((v) => h.addressOf(v.data, 0)), outAt = h.addressOf(out.data, 0);
  /** `v` through a view of the memory as it is now (its storage's address, same offset and strides). */
  const fresh = (v: CpuView, at: number | undefined): CpuView => {
    if (at === undefined) return v;
    const Host = v.data.constructor as new (b: ArrayBufferLike, at: number, n: number) => CpuView['data'];
    return { ...v, data: new Host(h.memory.buffer, at, v.data.length) };
  };
  const blocks: number[] = [];
  try {
    // Blocks (not scratch: the float kernel resets the scratch arena) for the float32 copies and the result.
    const spans = new Map<number, [number, number, number]>();
    for (const i of form.converted) {
      const [lo, hi] = span(inputs[i]!);
      const at = h.allocate((hi - lo + 1) * 4);
      blocks.push(at);
      spans.set(i, [lo, hi, at]);
    }
    const total = numel(out.shape);
    const result = integerOut ? h.allocate(total * 4) : -1;
    if (integerOut) blocks.push(result);
    // Views after every allocation (a private memory's growth detaches older ones).
    const floats = inputs.map((v, i): CpuView => {
      const s = spans.get(i);
      if (!s) return fresh(v, addresses[i]);
      const [lo, hi, at] = s;
      const copy = new Float32Array(h.memory.buffer, at, hi - lo + 1);
      const from = addresses[i];
      if (from !== undefined && v.dtype !== 'int32') wasmInt8ToFloat(from + lo, at, hi - lo + 1, v.dtype === 'int8');
      else copy.set(fresh(v, from).data.subarray(lo, hi + 1) as Int32Array);
      return { data: copy, shape: v.shape, strides: v.strides, offset: v.offset - lo, dtype: 'float32' };
    });
    const target: CpuView = integerOut ? { data: new Float32Array(h.memory.buffer, result, total), shape: out.shape, strides: out.strides, offset: 0, dtype: 'float32' } : fresh(out, outAt);
    if (!wasmMap(form.expr, floats, target)) return false;
    if (integerOut) {
      if (outAt !== undefined) wasmFloatToInt8(result, outAt + out.offset, total, out.dtype === 'int8');
      else (out.data as Int8Array).set(new Float32Array(h.memory.buffer, result, total), out.offset);
    }
    runs++;
    return true;
  } finally {
    for (const at of blocks) h.deallocate(at);
  }
}

/** The CPU backend's elementwise override: the float32 wasm kernel, else its integer-ended form. */
export function wasmMapWithIntegers(expr: Expr, inputs: readonly CpuView[], out: CpuView): boolean {
  return wasmMap(expr, inputs, out) || wasmIntegerMap(expr, inputs, out);
}
