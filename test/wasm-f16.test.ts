import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { setCpuKernels } from '../src/backend/cpu.js';
import { call, constant, input } from '../src/ops/expr.js';
import type { CpuView } from '../src/ops/op.js';
import { forgetRoundedHalf, noteRoundedHalf, roundToHalf } from '../src/kernels/cpu/half.js';
import { kernelOverrides } from '../src/kernels/cpu/overrides.js';
import { wasmRoundHalf } from '../src/kernels/wasm/half.js';
import { heap } from '../src/kernels/wasm/heap.js';
import { wasmMap } from '../src/kernels/wasm/map.js';
import { TOLERANCES, makeTensor, propertyConfig, tensorCaseArb } from '../src/testing/index.js';
import { expectClose } from './helpers.js';
import { type Ref, float16Ref, refOf } from './reference/core.js';
import { conv2dRef } from './reference/conv.js';
import { accumulationAtol, matmulRef } from './reference/linalg.js';
import { layerNormRef } from './reference/norm.js';
import { softmaxRef } from './reference/reduce.js';

// float16 on the CPU's WebAssembly kernels (issue 10 item 6 on the CPU backend of issue 9): float16 values are
// float32 numbers there, computed in f32 by the float32 kernels; the wasm rounding to binary16 (after every kernel,
// and after every float16 node of a fused elementwise expression) must equal the float64 reference exactly,
// subnormals, ±∞, NaN and ties to even included, as the JavaScript reference path (SINTER_CPU_KERNELS=js) does.

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

describe('float16 rounding on the CPU (wasm and the JS reference)', () => {
  const values = boundaryValues();

  it('the wasm rounding kernel equals the float64 reference at every binary16 boundary, in place', () => {
    const h = heap(), at = h.allocate(values.length * 4);
    try {
      const data = new Float32Array(h.memory.buffer, at, values.length);
      data.set(values);
      expect(wasmRoundHalf(data)).toBe(true);
      expectAllRounded(data, values, 'wasmRoundHalf');
      // Not in the heap: left to the JS rounding.
      const js = values.slice();
      expect(wasmRoundHalf(js)).toBe(false);
      expect(js).toEqual(values);
    } finally {
      h.deallocate(at);
    }
  });

  it.each(['wasm', 'js'] as const)('a cast to float16 and a fused float16 expression round exactly (%s kernels)', async (kind) => {
    expect(setCpuKernels(kind)).toBe(kind);
    const x = sn.tensor(values, { dtype: 'float32' });
    const h = x.to('float16');
    expectAllRounded(await h.data(), values, `cast (${kind})`);
    // x·1·1 in float16 nodes, fused by the JIT: every node rounds, and the result is each value's rounding.
    const f = sn.jit((t: sn.Tensor) => t.to('float16').mul(1).mul(1));
    expectAllRounded(await f(x).data(), values, `fused (${kind})`);
    for (const t of [x, h]) t.dispose();
  });

  it('rounds only the span of a view, not the rest of its storage (a compiled plan\'s slot)', () => {
    const h = heap(), at = h.allocate(64 * 4);
    try {
      const data = new Float32Array(h.memory.buffer, at, 64);
      data.fill(0.1);
      // shape [3, 4] with row stride 10 from offset 5: elements 5..28 are its span.
      roundToHalf(data, [3, 4], [10, 1], 5);
      expect(data[4]).toBe(Math.fround(0.1));
      expect(data[5]).toBe(float16Ref(0.1));
      expect(data[28]).toBe(float16Ref(0.1));
      expect(data[29]).toBe(Math.fround(0.1));
    } finally {
      h.deallocate(at);
    }
  });
});

describe('the backend\'s rounding pass after a kernel whose wasm elementwise step rounded its output', () => {
  it('skips exactly the span noted, once, and nothing after the note is forgotten', async () => {
    const h = heap(), at = h.allocate(16 * 4);
    try {
      const data = new Float32Array(h.memory.buffer, at, 16);
      const fresh = () => data.fill(0.1);
      fresh();
      noteRoundedHalf(data, 2, 8);
      roundToHalf(data, [8], [1], 2);
      expect(data[2], 'the noted span is left as it is').toBe(Math.fround(0.1));
      roundToHalf(data, [8], [1], 2);
      expect(data[2], 'the note is used once').toBe(float16Ref(0.1));
      for (const [offset, n] of [[2, 7], [3, 8], [2, 9]]) {
        fresh();
        noteRoundedHalf(data, 2, 8);
        roundToHalf(data, [n!], [1], offset!);
        expect(data[offset!], `span ${offset}+${n} differs from the note: rounded`).toBe(float16Ref(0.1));
      }
      fresh();
      noteRoundedHalf(data, 2, 8);
      forgetRoundedHalf();
      roundToHalf(data, [8], [1], 2);
      expect(data[2], 'forgotten').toBe(float16Ref(0.1));
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
