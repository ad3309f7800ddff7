import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { type CpuStorage, setCpuKernels } from '../src/backend/cpu.js';
import { call, constant, input } from '../src/ops/expr.js';
import type { CpuView } from '../src/ops/op.js';
import { forgetRoundedHalf, narrowHalf, noteRoundedHalf, takeRoundedHalf, widenHalf } from '../src/kernels/cpu/half.js';
import { kernelOverrides } from '../src/kernels/cpu/overrides.js';
import { wasmNarrowHalf, wasmWidenHalf } from '../src/kernels/wasm/half.js';
import { heap } from '../src/kernels/wasm/heap.js';
import { wasmMap } from '../src/kernels/wasm/map.js';
import { TOLERANCES, makeTensor, propertyConfig, tensorCaseArb } from '../src/testing/index.js';
import { expectClose } from './helpers.js';
import { type Ref, float16Ref, ref, refOf } from './reference/core.js';
import { conv2dRef } from './reference/conv.js';
import { accumulationAtol, matmulRef } from './reference/linalg.js';
import { layerNormRef } from './reference/norm.js';
import { softmaxRef } from './reference/reduce.js';

// float16 on the CPU's WebAssembly kernels (issue 10 item 6 on the CPU backend of issue 9): float16 storages hold
// binary16 bits (2 bytes a value); the backend widens float16 operands to float32 before each kernel and narrows
// float16 results after it, and the float32 kernels compute in f32. The widening must give every one of the 65536
// bit patterns' values, and the narrowing (the rounding to binary16, as after every float16 node of a fused
// elementwise expression) must equal the float64 reference exactly, subnormals, ±∞, NaN and ties to even included,
// on the wasm passes as on the JavaScript reference path (SINTER_CPU_KERNELS=js).

afterEach(() => void setCpuKernels('wasm'));

/** binary16 bits → value, independently of src/. */
function halfValue(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1, e = (bits >> 10) & 31, f = bits & 1023;
  if (e === 31) return f ? NaN : sign * Infinity;
  return sign * (e === 0 ? f * 2 ** -24 : (1 + f / 1024) * 2 ** (e - 15));
}

const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
/** The float32 next to `v` (a float32) by `steps` units in the last place of its bit pattern. */
function f32Step(v: number, steps: number): number {
  f32[0] = v;
  u32[0]! += steps;
  return f32[0]!;
}

/**
 * float32 values probing every binary16 rounding boundary: each finite binary16 value, the float32 numbers
 * next to it, the midpoints to the next value up (ties) and the float32 numbers on both sides of each midpoint;
 * then float32 subnormals, values past float16's range, ±∞ and NaN; both signs of everything.
 */
function boundaryValues(): Float32Array {
  const out: number[] = [];
  for (let bits = 0; bits < 0x7c00; bits++) {
    const v = halfValue(bits), next = halfValue(bits + 1), mid = (v + next) / 2;
    out.push(v, f32Step(v, 1), mid, f32Step(mid, -1), f32Step(mid, 1));
    if (v > 0) out.push(f32Step(v, -1));
  }
  out.push(2 ** -149, 2 ** -126 - 2 ** -149, 2 ** -126, 2 ** -25, 2 ** -26, 65504, 65519.99, 65520, 65536, 1e10, 3.4028234663852886e38, Infinity, NaN);
  return new Float32Array([...out, ...out.map((v) => -v)]);
}

const same = (a: number, b: number): boolean => Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));
function expectAllRounded(got: ArrayLike<number>, from: ArrayLike<number>, what: string): void {
  let bad = 0, first = '';
  for (let i = 0; i < from.length; i++) {
    if (same(got[i]!, float16Ref(from[i]!))) continue;
    if (bad++ === 0) first = `${from[i]} → ${got[i]}, want ${float16Ref(from[i]!)}`;
  }
  expect(bad, `${what}: first mismatch ${first}`).toBe(0);
}

/** The value that binary16 bits `bits` hold: `halfValue`, with every NaN the same. */
const sameValue = (bits: number, want: number): boolean => same(halfValue(bits), want);

/** `n` values in the heap (from element `skew`, so v128 accesses are misaligned too), or a JS array; freed by `free`. */
function inHeap<T extends Float32Array | Uint16Array>(Type: { new (b: ArrayBufferLike, at: number, n: number): T; BYTES_PER_ELEMENT: number }, n: number, skew = 0): { array: () => T; free: () => void } {
  const h = heap(), at = h.allocate((n + skew) * Type.BYTES_PER_ELEMENT);
  return { array: () => new Type(h.memory.buffer, at + skew * Type.BYTES_PER_ELEMENT, n), free: () => h.deallocate(at) };
}

describe('binary16 storage on the CPU: widening and narrowing (wasm and the JS reference)', () => {
  const values = boundaryValues();
  const allBits = Uint16Array.from({ length: 65536 }, (_, i) => i);

  it.each([0, 1, 3])('widens all 65536 bit patterns exactly, in the heap (skewed by %i) and in JS arrays', (skew) => {
    for (const where of ['heap', 'js'] as const) {
      const src = inHeap(Uint16Array, allBits.length, skew), dst = inHeap(Float32Array, allBits.length, skew);
      try {
        const bits = where === 'heap' ? src.array() : allBits.slice(), out = where === 'heap' ? dst.array() : new Float32Array(allBits.length);
        bits.set(allBits);
        if (where === 'heap') expect(wasmWidenHalf(bits, out), 'the wasm pass takes all but the tail').toBe(65536);
        else expect(wasmWidenHalf(bits, out), 'not in the heap: left to JS').toBe(0);
        widenHalf(bits, out);
        let bad = 0;
        for (let b = 0; b < 65536; b++) if (!same(out[b]!, halfValue(b)) && bad++ === 0) expect.fail(`${where}: ${b.toString(16)} → ${out[b]}, want ${halfValue(b)}`);
      } finally {
        src.free();
        dst.free();
      }
    }
  });

  it.each(['wasm', 'js'] as const)('narrows every binary16 boundary, float32 subnormals, overflow, ±∞ and NaN to the float64 reference\'s bits (%s)', (kind) => {
    expect(setCpuKernels(kind)).toBe(kind);
    // Lengths with tails (not multiples of the SIMD step), from a skewed start.
    for (const [n, skew] of [[values.length, 0], [values.length - 5, 3], [13, 1], [1, 0]] as const) {
      const src = inHeap(Float32Array, n, skew), dst = inHeap(Uint16Array, n, skew);
      try {
        const from = src.array(), bits = dst.array();
        const given = values.subarray(values.length - n);
        from.set(given);
        narrowHalf(from, bits);
        for (let i = 0; i < n; i++) if (!same(from[i]!, given[i]!)) expect.fail(`${kind}: 'round' changed its source at ${i}: ${given[i]} → ${from[i]}`);
        for (let i = 0; i < n; i++) {
          const want = float16Ref(from[i]!);
          if (!sameValue(bits[i]!, want)) expect.fail(`${kind}: ${from[i]} → ${bits[i]!.toString(16)} (${halfValue(bits[i]!)}), want ${want}`);
          // NaN stays NaN (exponent 31 and a fraction), −0 keeps its sign.
          if (Number.isNaN(want)) expect(bits[i]! & 0x7c00).toBe(0x7c00);
        }
        // 'round in place': the same bits, and the source holds the rounded values.
        const before = bits.slice();
        bits.fill(0);
        narrowHalf(from, bits, 'round in place');
        for (let i = 0; i < n; i++) if (bits[i] !== before[i]) expect.fail(`${kind} in place: bits ${bits[i]} at ${i}, 'round' gave ${before[i]}`);
        for (let i = 0; i < n; i++) if (!same(from[i]!, float16Ref(given[i]!))) expect.fail(`${kind} in place: ${given[i]} left ${from[i]}, want ${float16Ref(given[i]!)}`);
      } finally {
        src.free();
        dst.free();
      }
    }
  });

  it('narrows random float32 values as the float64 reference does, on the wasm pass and in JS', () => {
    const float = fc.integer({ min: 0, max: 0xffffffff }).map((u) => new Float32Array(new Uint32Array([u]).buffer)[0]!);
    fc.assert(fc.property(fc.array(float, { minLength: 1, maxLength: 300 }), (xs) => {
      const src = inHeap(Float32Array, xs.length, 1), dst = inHeap(Uint16Array, xs.length, 1);
      try {
        src.array().set(xs);
        expect(wasmNarrowHalf(src.array(), dst.array(), 'round')).toBe(xs.length - (xs.length % 8));
        const js = new Uint16Array(xs.length);
        narrowHalf(Float32Array.from(xs), js);
        const got = dst.array();
        for (let i = 0; i < xs.length - (xs.length % 8); i++) {
          const want = float16Ref(xs[i]!);
          if (!sameValue(got[i]!, want) || !sameValue(js[i]!, want)) expect.fail(`${xs[i]}: wasm ${halfValue(got[i]!)}, js ${halfValue(js[i]!)}, want ${want}`);
        }
      } finally {
        src.free();
        dst.free();
      }
    }), propertyConfig({ numRuns: 200 }));
  });

  it('packs binary16 values without rounding (exact) to the same bits, and widen∘narrow is the identity on bit patterns', () => {
    const n = 65536, wide = inHeap(Float32Array, n), bits = inHeap(Uint16Array, n), again = inHeap(Uint16Array, n);
    try {
      bits.array().set(allBits);
      widenHalf(bits.array(), wide.array());
      narrowHalf(wide.array(), again.array(), 'exact');
      const packed = again.array().slice();
      narrowHalf(wide.array(), again.array());
      for (let b = 0; b < n; b++) {
        if ((b & 0x7c00) === 0x7c00 && b & 1023) continue; // NaNs: any NaN pattern (checked by value above)
        if (packed[b] !== b || again.array()[b] !== b) expect.fail(`${b.toString(16)}: packed ${packed[b]!.toString(16)}, narrowed ${again.array()[b]!.toString(16)}`);
      }
    } finally {
      [wide, bits, again].forEach((a) => a.free());
    }
  });

  it.each(['wasm', 'js'] as const)('a cast to float16 and a fused float16 expression round exactly (%s kernels)', async (kind) => {
    expect(setCpuKernels(kind)).toBe(kind);
    const x = sn.tensor(values, { dtype: 'float32' });
    const h = x.to('float16');
    expectAllRounded(await h.data(), values, `cast (${kind})`);
    // Uploaded as float16 directly: rounded on the way in (the caller's array left as it was).
    const given = values.slice(), u = sn.tensor(values, { dtype: 'float16' });
    expect(values.every((v, i) => same(v, given[i]!)), "the caller's array is left as it was").toBe(true);
    expectAllRounded(await u.data(), values, `upload (${kind})`);
    // x·1·1 in float16 nodes, fused by the JIT: every node rounds, and the result is each value's rounding.
    const f = sn.jit((t: sn.Tensor) => t.to('float16').mul(1).mul(1));
    expectAllRounded(await f(x).data(), values, `fused (${kind})`);
    for (const t of [x, h, u]) t.dispose();
  });

  it.each(['wasm', 'js'] as const)('stores 2 bytes a value, and views of float16 storages (offsets, strides, broadcasts) read, compute and move as float32 ones do (%s kernels)', async (kind) => {
    expect(setCpuKernels(kind)).toBe(kind);
    const x32 = sn.randn([5, 7], { seed: 3 }).mul(30), x = x32.to('float16');
    const storage = x.storage as CpuStorage;
    expect(storage.byteLength).toBe(35 * 2);
    expect(storage.data).toBeInstanceOf(Uint16Array);
    const want = (await x32.data()).map(float16Ref);
    expect(Array.from(await x.data())).toEqual(Array.from(want));
    // Views: a transpose, a slice from an offset, a broadcast, each read back and fed to kernels (elementwise, matmul, sum).
    const xt = x.t(), part = x.narrow(0, 2, 3).narrow(1, 1, 4), row = x.narrow(0, 4, 1).expand([3, 7]);
    const rows = (v: Float32Array, cols: number): number[][] => Array.from({ length: v.length / cols }, (_, r) => Array.from(v.subarray(r * cols, (r + 1) * cols)));
    const at: Record<string, (r: number, c: number) => number> = { transpose: (r, c) => c * 7 + r, slice: (r, c) => (2 + r) * 7 + 1 + c, broadcast: (_, c) => 4 * 7 + c };
    for (const [name, v] of [['transpose', xt], ['slice', part], ['broadcast', row]] as const) {
      const got = (await v.data()) as Float32Array, cols = v.shape[1]!;
      expect(Array.from(got), `${name} reads the storage where the view points`).toEqual(rows(got, cols).flatMap((r, i) => r.map((_, c) => want[at[name]!(i, c)]!)));
      const y = v.mul(0.5).add(1);
      expect(y.dtype).toBe('float16');
      expect(Array.from(await y.data()), `${name} elementwise`).toEqual(Array.from(got).map((a) => float16Ref(float16Ref(a * 0.5) + 1)));
      const s = v.sum(1);
      await expectClose(s, ref([got.length / cols], rows(got, cols).map((r) => r.reduce((a, b) => a + b, 0))), { dtype: 'float16', tol: { atol: TOLERANCES.cpu.float16.atol + accumulationAtol(cols, ref([got.length / cols], rows(got, cols).map((r) => r.reduce((a, b) => a + Math.abs(b), 0)))) }, what: `${name} sum` });
      if (name === 'transpose') {
        // [7, 5] from a transpose (its strides [1, 7]) times [5, 7]: the GEMM reads the widened view as it is.
        const m = sn.matmul(v, x), mm = matmulRef(ref(v.shape, Array.from(got)), ref(x.shape, Array.from(want)));
        await expectClose(m, mm.out, { dtype: 'float16', tol: { atol: TOLERANCES.cpu.float16.atol + accumulationAtol(5, mm.mag) }, what: `${name} matmul` });
        m.dispose();
      }
      for (const t of [y, s]) t.dispose();
    }
    for (const t of [x32, x, xt, part, row]) t.dispose();
  });
});

describe('the backend\'s narrowing after a kernel whose wasm elementwise step rounded its output', () => {
  it('packs only the span noted, once, and nothing after the note is forgotten', async () => {
    const h = heap(), at = h.allocate(16 * 4);
    try {
      const data = new Float32Array(h.memory.buffer, at, 16);
      noteRoundedHalf(data, 2, 8);
      expect(takeRoundedHalf(data.subarray(2, 10)), 'the noted span').toBe(true);
      expect(takeRoundedHalf(data.subarray(2, 10)), 'the note is used once').toBe(false);
      for (const [offset, n] of [[2, 7], [3, 8], [2, 9]]) {
        noteRoundedHalf(data, 2, 8);
        expect(takeRoundedHalf(data.subarray(offset!, offset! + n!)), `span ${offset}+${n} differs from the note`).toBe(false);
      }
      noteRoundedHalf(data, 2, 8);
      forgetRoundedHalf();
      expect(takeRoundedHalf(data.subarray(2, 10)), 'forgotten').toBe(false);
    } finally {
      h.deallocate(at);
    }
    // Through the backend: a float16 map notes its output; the conv after it rounds its own, and a conv with an
    // epilogue fused by the JIT (which rounds the product before the epilogue reads it) equals the eager ops bit for bit.
    const x = sn.randn([1, 2, 5, 5], { seed: 1 }).to('float16'), w = sn.randn([3, 2, 3, 3], { seed: 2 }).to('float16');
    const conv = (t: sn.Tensor) => sn.conv2d(t.mul(0.5), w, null, { padding: 1 });
    const tail = (t: sn.Tensor) => sn.relu(t).mul(1.7).add(0.3);
    const eager = await tail(conv(x)).data();
    for (const y of [conv(x), sn.jit((t: sn.Tensor) => sn.relu(conv(t)))(x)]) {
      for (const v of await y.data()) expect(v).toBe(float16Ref(v));
      y.dispose();
    }
    expect(Array.from(await sn.jit((t: sn.Tensor) => tail(conv(t)))(x).data())).toEqual(Array.from(eager));
  });
});

describe('a kernel reading what the kernel before it wrote (its float32 values, kept instead of widened again)', () => {
  it.each(['wasm', 'js'] as const)('sees the rounded values its storage holds, after a GEMM, a conv and an elementwise kernel (%s kernels)', async (kind) => {
    expect(setCpuKernels(kind)).toBe(kind);
    const a = sn.randn([7, 9], { seed: 5 }).to('float16'), b = sn.randn([9, 11], { seed: 6 }).to('float16');
    const x = sn.randn([1, 2, 6, 5], { seed: 7 }).to('float16'), w = sn.randn([3, 2, 3, 3], { seed: 8 }).to('float16');
    // y·3 right after y's kernel, against y·3 from a copy of y's stored bits: equal bit for bit only if the kept
    // values were rounded as the bits were (×3 is not exact in binary16, so an unrounded y rounds differently).
    for (const [name, produce] of [['matmul', () => sn.matmul(a, b)], ['conv2d', () => sn.conv2d(x, w, null, { padding: 1 })], ['elementwise', () => a.mul(1.1)]] as const) {
      // Read first through a transposed view (the same span of y's storage), then again after another kernel ran (widened).
      const y = produce(), zt = y.transpose(-1, -2).mul(3), z = y.mul(3);
      const copy = sn.tensor(await y.data(), { dtype: 'float16', shape: y.shape }), want = copy.mul(3), wantT = copy.transpose(-1, -2).mul(3);
      expect(Array.from(await zt.data()), `${name} transposed, next kernel (${kind})`).toEqual(Array.from(await wantT.data()));
      expect(Array.from(await z.data()), `${name} (${kind})`).toEqual(Array.from(await want.data()));
      for (const t of [y, z, zt, copy, want, wantT]) t.dispose();
    }
    for (const t of [a, b, x, w]) t.dispose();
  });

  it('frees its float32 scratch: after a float16 model\'s kernels only the last one\'s outputs stay, and emptyCache frees them', async () => {
    sn.emptyCache();
    const base = heap().stats().inUseBytes;
    const [x, w] = sn.tidy(() => [sn.randn([1, 4, 32, 32], { seed: 9 }).to('float16'), sn.randn([8, 4, 3, 3], { seed: 10 }).to('float16')]);
    const f = sn.jit((t: sn.Tensor) => sn.relu(sn.conv2d(t, w, null, { padding: 1 })).mul(0.5).sum([2, 3]));
    for (let i = 0; i < 3; i++) {
      for (const y of sn.tidy(() => [f(x!), sn.softmax(sn.conv2d(x!, w!).flatten(1), -1)])) {
        await y.data();
        y.dispose();
      }
    }
    const live = [x!, w!].reduce((sum, t) => sum + heap().blockSize((t.storage as CpuStorage).address)!, 0);
    // Held now beyond the inputs: the kernels' scratch arena and the last kernel's float32 outputs (a softmax of 8·30·30).
    expect(heap().stats().inUseBytes - base - live).toBeLessThanOrEqual((1 << 20) + 8 * 30 * 30 * 4 + 64);
    x!.dispose();
    w!.dispose();
    f.dispose();
    sn.emptyCache();
    expect(heap().stats().inUseBytes).toBe(base);
  });
});

/** A binary16 value from its bits: the whole range, subnormals, ±0, ±∞ and NaN. */
const half = fc.integer({ min: 0, max: 0xffff }).map(halfValue);

describe('fused float16 expressions on the wasm elementwise kernel', () => {
  const runs = propertyConfig({ numRuns: 40 });
  // Each node rounds to binary16 (the reference rounds its exact float64 result): +, −, ×, ÷ and √ of binary16
  // values are exact in f32 or rounded there innocuously (24 ≥ 2·11 + 2 bits), so wasm and the JS path are exact.
  const ops = {
    'relu((a·b + c) / d)': { f: (a: sn.Tensor, b: sn.Tensor, c: sn.Tensor, d: sn.Tensor) => sn.relu(a.mul(b).add(c).div(d)), ref: (a: number, b: number, c: number, d: number) => { const r = float16Ref(float16Ref(float16Ref(a * b) + c) / d); return r < 0 ? 0 : r; } },
    'sqrt(|a − b|)·c − d': { f: (a: sn.Tensor, b: sn.Tensor, c: sn.Tensor, d: sn.Tensor) => sn.sqrt(sn.abs(a.sub(b))).mul(c).sub(d), ref: (a: number, b: number, c: number, d: number) => float16Ref(float16Ref(float16Ref(Math.sqrt(Math.abs(float16Ref(a - b)))) * c) - d) },
    // clamp selects: exact on binary16 bounds (no rounding emitted), rounded where a bound is not a binary16 value.
    'clamp(a·b, −0.1, 1000.3) − clamp(c, −2, 0.5)·d': { f: (a: sn.Tensor, b: sn.Tensor, c: sn.Tensor, d: sn.Tensor) => a.mul(b).clamp(-0.1, 1000.3).sub(c.clamp(-2, 0.5).mul(d)), ref: (a: number, b: number, c: number, d: number) => float16Ref(float16Ref(Math.min(Math.max(float16Ref(a * b), -0.1), 1000.3)) - float16Ref(Math.min(Math.max(c, -2), 0.5) * d)) },
    'max(a, b)·2⁻¹⁴ + min(c, d)': { f: (a: sn.Tensor, b: sn.Tensor, c: sn.Tensor, d: sn.Tensor) => sn.maximum(a, b).mul(2 ** -14).add(sn.minimum(c, d)), ref: (a: number, b: number, c: number, d: number) => float16Ref(float16Ref(float16Ref(Math.max(a, b)) * 2 ** -14) + Math.min(c, d)) },
  };
  it.each(['wasm', 'js'] as const)('equal a per-node float16 rounding of float64 across the whole range (%s kernels)', async (kind) => {
    expect(setCpuKernels(kind)).toBe(kind);
    const arb = fc.integer({ min: 1, max: 37 }).chain((n) => fc.array(fc.tuple(half, half, half, half), { minLength: n, maxLength: n }));
    for (const [name, { f, ref }] of Object.entries(ops)) {
      const g = sn.jit(f);
      await fc.assert(fc.asyncProperty(arb, async (rows) => {
        const ts = [0, 1, 2, 3].map((k) => sn.tensor(rows.map((r) => r[k]!), { dtype: 'float16' }));
        const want = rows.map((r) => ref(r[0]!, r[1]!, r[2]!, r[3]!));
        for (const [how, y] of [['eager', f(ts[0]!, ts[1]!, ts[2]!, ts[3]!)], ['jit', g(ts[0]!, ts[1]!, ts[2]!, ts[3]!)]] as const) {
          expect(y.dtype).toBe('float16');
          const got = await y.data();
          for (let i = 0; i < want.length; i++) expect(same(got[i]!, want[i]!), `${name} ${how} (${kind}) at ${rows[i]}: ${got[i]} vs ${want[i]}`).toBe(true);
          y.dispose();
        }
        ts.forEach((t) => t.dispose());
      }), runs);
    }
  });

  it('the wasm kernels take float16 operands (map, softmax, layerNorm) rather than leaving them to JavaScript', () => {
    const n = 13, data = new Float32Array(Array.from({ length: 2 * n }, (_, i) => float16Ref(Math.sin(i) * 3)));
    const view = (d: Float32Array): CpuView => ({ data: d, shape: [2, n], strides: [n, 1], offset: 0, dtype: 'float16' });
    const out = view(new Float32Array(2 * n));
    // (x·0.3 + 1) as float16 nodes: rounded per node by the wasm kernel itself (no backend pass here).
    const c = float16Ref(0.3), e = call('add', [call('mul', [input(0, 'float16'), constant(c, 'float16')], 'float16'), constant(1, 'float16')], 'float16', [1]);
    expect(wasmMap(e, [view(data)], out)).toBe(true);
    for (let i = 0; i < 2 * n; i++) expect(out.data[i]).toBe(float16Ref(float16Ref(data[i]! * c) + 1));
    expect(kernelOverrides.softmax!([view(data)], undefined, [1], false, view(new Float32Array(2 * n)))).toBe(true);
    expect(kernelOverrides.blockNorm!(view(data), undefined, undefined, { groups: 1, groupChannels: 1, inner: 1, blockSize: n }, 1e-5, view(new Float32Array(2 * n)))).toBe(true);
  });
});

describe('float16 GEMM, conv and row kernels on both CPU paths', () => {
  const runs = propertyConfig({ numRuns: 10 });
  const dim = fc.integer({ min: 1, max: 9 });
  const f16 = (shape: number[], views = true) => tensorCaseArb(shape, { dtype: 'float16', views });
  /** float16's tolerance on the CPU widened by a product's float32 summation bound (the wasm GEMM accumulates in f32). */
  const productTol = (k: number, mag: Ref) => ({ atol: TOLERANCES.cpu.float16.atol + accumulationAtol(k, mag) });
  it.each(['wasm', 'js'] as const)('matmul, conv2d (dense and depthwise), softmax and layerNorm match the float64 reference (%s kernels)', async (kind) => {
    expect(setCpuKernels(kind)).toBe(kind);
    const arb = fc.tuple(dim, dim, fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 3, max: 8 }))
      .chain(([m, n, k, c, h]) => fc.tuple(fc.constant(k), f16([m, k]), f16([k, n]), f16([1, c, h, h + 1]), f16([2, c, 3, 3], false), f16([c, 1, 3, 3], false), f16([m, n])));
    await fc.assert(fc.asyncProperty(arb, async ([k, ca, cb, cx, cw, cd, cr]) => {
      const [a, b, x, w, d, r] = [ca, cb, cx, cw, cd, cr].map((t) => makeTensor(t, 'cpu'));
      const mm = matmulRef(refOf(ca), refOf(cb));
      await expectClose(sn.matmul(a!, b!), mm.out, { dtype: 'float16', tol: productTol(k, mm.mag), what: `matmul (${kind})` });
      const c = cx.shape[1]!, opts = { stride: [1, 1] as [number, number], padding: [1, 1] as [number, number], dilation: [1, 1] as [number, number] };
      const dense = conv2dRef(refOf(cx), refOf(cw), null, { ...opts, groups: 1 });
      await expectClose(sn.conv2d(x!, w!, null, { padding: 1 }), dense.out, { dtype: 'float16', tol: productTol(9 * c, dense.mag), what: `conv2d (${kind})` });
      const depthwise = conv2dRef(refOf(cx), refOf(cd), null, { ...opts, groups: c });
      await expectClose(sn.conv2d(x!, d!, null, { padding: 1, groups: c }), depthwise.out, { dtype: 'float16', tol: productTol(9, depthwise.mag), what: `depthwise conv2d (${kind})` });
      await expectClose(sn.softmax(r!, -1), softmaxRef(refOf(cr), 1, false), { dtype: 'float16', what: `softmax (${kind})` });
      const n = cr.shape[1]!;
      await expectClose(sn.layerNorm(r!, [n]), layerNormRef(refOf(cr), 1, null, null, 1e-5), { dtype: 'float16', tol: { atol: 4 * TOLERANCES.cpu.float16.atol }, what: `layerNorm (${kind})` });
      [a, b, x, w, d, r].forEach((t) => t!.dispose());
    }), runs);
  });
});
