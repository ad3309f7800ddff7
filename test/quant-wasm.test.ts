import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { propertyConfig } from '../src/testing/index.js';
import { qgemm } from '../src/quant/gemm.js';
import { cpuKernels, setCpuKernels } from '../src/backend/cpu.js';
import { wasmInt8CacheStats, wasmInt8Calls } from '../src/kernels/wasm/int8.js';
import { floatForm, wasmIntegerMapRuns } from '../src/kernels/wasm/int8-map.js';
import { wasmWeightOnlyRuns } from '../src/kernels/wasm/int8-weights.js';
import { call, cast, input } from '../src/ops/expr.js';

// The CPU's WebAssembly int8 forms (src/kernels/wasm/int8.ts, int8-map.ts) against the JavaScript reference path and
// integer references: the integer GEMM's sums exactly; its requantised (and float32) outputs equal the JavaScript
// epilogue's to the bit (both compute f32(acc)·multiplier + offset in float32 steps, then round half to even); quantise,
// dequantise and the float ops fused between int8 layers equal the JavaScript map's values exactly. Shapes are drawn
// so that the vector paths run (8-pixel rows at stride 1 and 2, whole 4×8 tiles) next to the edges and gathers.

const initial = cpuKernels();
afterEach(() => void setCpuKernels(initial));

/** `run` on the wasm kernels, then on the JavaScript ones; both results. */
async function bothPaths<T>(run: () => Promise<T>): Promise<{ wasm: T; js: T }> {
  expect(setCpuKernels('wasm')).toBe('wasm');
  const wasm = await run();
  setCpuKernels('js');
  const js = await run();
  setCpuKernels(initial);
  return { wasm, js };
}

const RANGE = { int8: [-128, 127], uint8: [0, 255] } as const;

/** Σ (x − za)·(w[o] − zb[o]) over the patch (padding contributes 0), NCHW contiguous x, w [N, K]. */
function convSums(X: ArrayLike<number>, W: ArrayLike<number>, c: { batch: number; channels: number; height: number; width: number; kernel: number[]; stride: number[]; padding: number[]; dilation: number[]; groups: number; outHeight: number; outWidth: number }, n: number, za: number, zb: number[]): number[] {
  const cg = c.channels / c.groups, og = n / c.groups, [kh, kw] = c.kernel as [number, number], k = cg * kh * kw;
  const out: number[] = [];
  for (let b = 0; b < c.batch; b++) for (let o = 0; o < n; o++) for (let i = 0; i < c.outHeight; i++) for (let j = 0; j < c.outWidth; j++) {
    const g = Math.floor(o / og);
    let acc = 0;
    for (let ci = 0; ci < cg; ci++) for (let u = 0; u < kh; u++) for (let v = 0; v < kw; v++) {
      const ih = i * c.stride[0]! - c.padding[0]! + u * c.dilation[0]!, iw = j * c.stride[1]! - c.padding[1]! + v * c.dilation[1]!;
      if (ih < 0 || ih >= c.height || iw < 0 || iw >= c.width) continue;
      acc += (X[((b * c.channels + g * cg + ci) * c.height + ih) * c.width + iw]! - za) * (W[o * k + (ci * kh + u) * kw + v]! - zb[o]!);
    }
    out.push(acc);
  }
  return out;
}

describe('wasm int8 GEMM on the CPU', () => {
  it('conv2d and depthwise: int32 sums exact and requantised / float32 outputs equal the JavaScript epilogue to the bit (strides 1–2, dilation, widths past 8, odd K, any zero points)', async () => {
    const arb = fc.record({
      b: fc.integer({ min: 1, max: 2 }), groups: fc.integer({ min: 1, max: 2 }), cg: fc.constantFrom(1, 1, 2, 3, 5), og: fc.integer({ min: 1, max: 9 }),
      h: fc.integer({ min: 1, max: 7 }), w: fc.integer({ min: 1, max: 37 }), kh: fc.integer({ min: 1, max: 3 }), kw: fc.integer({ min: 1, max: 3 }),
      s: fc.integer({ min: 1, max: 2 }), d: fc.integer({ min: 1, max: 2 }), pad: fc.integer({ min: 0, max: 2 }), xd: fc.constantFrom<'int8' | 'uint8'>('int8', 'uint8'), wd: fc.constantFrom<'int8' | 'uint8'>('int8', 'uint8'),
      out: fc.constantFrom('int32', 'float32', 'int8', 'uint8'), seed: fc.integer({ min: 0, max: 10_000 }),
    }).filter((p) => p.h + 2 * p.pad >= (p.kh - 1) * p.d + 1 && p.w + 2 * p.pad >= (p.kw - 1) * p.d + 1);
    const before = wasmInt8Calls();
    await fc.assert(fc.asyncProperty(arb, async (p) => {
      const c = p.cg * p.groups, n = p.og * p.groups, k = p.cg * p.kh * p.kw;
      const oh = Math.floor((p.h + 2 * p.pad - (p.kh - 1) * p.d - 1) / p.s) + 1, ow = Math.floor((p.w + 2 * p.pad - (p.kw - 1) * p.d - 1) / p.s) + 1;
      const [lo, hi] = RANGE[p.xd], [wlo, whi] = RANGE[p.wd];
      const x = sn.randint(lo, hi + 1, [p.b, c, p.h, p.w], { dtype: p.xd, seed: p.seed });
      const w = sn.randint(wlo, whi + 1, [n, k], { dtype: p.wd, seed: p.seed + 1 });
      const za = lo + (p.seed % (hi - lo + 1)), zb = Array.from({ length: n }, (_, j) => wlo + ((j * 97 + p.seed) % (whi - wlo + 1)));
      const conv = { batch: p.b, channels: c, height: p.h, width: p.w, kernel: [p.kh, p.kw] as [number, number], stride: [p.s, p.s] as [number, number], padding: [p.pad, p.pad] as [number, number], dilation: [p.d, p.d] as [number, number], groups: p.groups, outHeight: oh, outWidth: ow };
      const ins = [x, w, sn.tensor([za], { dtype: 'int32' }), sn.tensor(zb, { dtype: 'int32' })];
      if (p.out !== 'int32') {
        // Multipliers that keep requantised values mostly inside the range, offsets with halves (ties).
        ins.push(sn.tensor(Array.from({ length: n }, (_, j) => 1 / (64 + 7 * j))), sn.tensor(Array.from({ length: n }, (_, j) => (j % 3) - 0.5)));
      }
      const requant = p.out === 'int8' || p.out === 'uint8';
      if (requant) ins.push(sn.tensor([p.out === 'int8' ? 3 : 130], { dtype: 'int32' }));
      const output = requant ? { dtype: p.out as 'int8', lo: RANGE[p.out as 'int8'][0] + (p.seed % 2) * 5, hi: RANGE[p.out as 'int8'][1] } : (p.out as 'int32');
      const { wasm, js } = await bothPaths(async () => {
        const y = qgemm(ins, { m: p.b * oh * ow, n, k, conv, output });
        const v = Array.from(await y.data());
        y.dispose();
        return v;
      });
      expect(wasm).toEqual(js);
      if (p.out === 'int32') expect(wasm).toEqual(convSums(await x.data(), await w.data(), conv, n, za, zb));
      for (const t of ins) t.dispose();
    }), propertyConfig({ numRuns: 40 }));
    expect(wasmInt8Calls()).toBeGreaterThan(before);
    expect(wasmInt8CacheStats().hits + wasmInt8CacheStats().misses).toBeGreaterThan(0);
  });

  it('matmul: non-contiguous operands, odd K, M and N past the tiles; requantised outputs equal the JavaScript epilogue', async () => {
    const arb = fc.record({ m: fc.integer({ min: 1, max: 19 }), k: fc.integer({ min: 1, max: 70 }), n: fc.integer({ min: 1, max: 13 }), transposed: fc.boolean(), seed: fc.integer({ min: 0, max: 10_000 }) });
    await fc.assert(fc.asyncProperty(arb, async ({ m, k, n, transposed, seed }) => {
      const xt = sn.randint(0, 256, transposed ? [k, m] : [m, k], { dtype: 'uint8', seed });
      const x = transposed ? xt.transpose(0, 1) : xt;
      const w = sn.randint(-128, 128, [n, k], { dtype: 'int8', seed: seed + 1 });
      const ins = [x, w, sn.tensor([seed % 256], { dtype: 'int32' }), sn.tensor(Array.from({ length: n }, (_, j) => (j * 31) % 7 - 3), { dtype: 'int32' }),
        sn.tensor(Array.from({ length: n }, (_, j) => 0.01 + j * 1e-3)), sn.tensor(Array.from({ length: n }, (_, j) => j / 2 - 1)), sn.tensor([-5], { dtype: 'int32' })];
      const { wasm, js } = await bothPaths(async () => {
        const y = qgemm(ins, { m, n, k, conv: null, output: { dtype: 'int8', lo: -128, hi: 127 } });
        const v = Array.from(await y.data());
        y.dispose();
        return v;
      });
      expect(wasm).toEqual(js);
      for (const t of [xt, ...ins.slice(1)]) t.dispose();
    }), propertyConfig({ numRuns: 25 }));
  });

  it('empty products: K = 0 gives the epilogue of zero sums, M = 0 an empty output (the JavaScript form takes them)', async () => {
    for (const [m, k] of [[3, 0], [0, 4]] as const) {
      const ins = [sn.zeros([m, k], { dtype: 'uint8' }), sn.zeros([2, k], { dtype: 'int8' }), sn.tensor([7], { dtype: 'int32' }), sn.tensor([0, 0], { dtype: 'int32' }),
        sn.tensor([0.5, 0.25]), sn.tensor([2.5, -3.5]), sn.tensor([1], { dtype: 'int32' })];
      const { wasm, js } = await bothPaths(async () => Array.from(await qgemm(ins, { m, n: 2, k, conv: null, output: { dtype: 'int8', lo: -128, hi: 127 } }).data()));
      expect(wasm).toEqual(js);
      // roundHalfEven(2.5) + 1 = 3, roundHalfEven(−3.5) + 1 = −3
      expect(wasm).toEqual(m === 0 ? [] : [3, -3, 3, -3, 3, -3]);
      for (const t of ins) t.dispose();
    }
  });
});

describe('quantise / dequantise and fused float ops in wasm (integer-ended maps)', () => {
  it('quantizePerTensor / quantizePerChannel / dequantize equal the JavaScript path exactly: ties, saturation, odd sizes, strided views, zero points across the range', async () => {
    const arb = fc.record({
      n: fc.integer({ min: 1, max: 67 }), c: fc.integer({ min: 1, max: 5 }), dtype: fc.constantFrom<'qint8' | 'quint8'>('qint8', 'quint8'),
      scale: fc.double({ min: 1e-3, max: 4, noNaN: true }), zpFrac: fc.double({ min: 0, max: 1, noNaN: true }), perChannel: fc.boolean(), transposed: fc.boolean(), seed: fc.integer({ min: 0, max: 10_000 }),
    });
    const before = wasmIntegerMapRuns();
    await fc.assert(fc.asyncProperty(arb, async (p) => {
      const [lo, hi] = p.dtype === 'qint8' ? [-128, 127] : [0, 255];
      const zp = Math.round(lo + p.zpFrac * (hi - lo));
      // Values on the half-step grid (ties) and far outside the range (saturation).
      const base = sn.randint(-700, 700, p.transposed ? [p.n, p.c] : [p.c, p.n], { dtype: 'int32', seed: p.seed });
      const xs = sn.mul(base.to('float32'), p.scale / 2);
      const x = p.transposed ? xs.transpose(0, 1) : xs;
      const scales = Array.from({ length: p.c }, (_, i) => p.scale * (1 + i / 7)), zps = Array.from({ length: p.c }, (_, i) => Math.min(hi, zp + i));
      const { wasm, js } = await bothPaths(async () => {
        const q = p.perChannel ? sn.quantizePerChannel(x, scales, zps, 0, p.dtype) : sn.quantizePerTensor(x, p.scale, zp, p.dtype);
        const ints = Array.from(await q.intRepr().data());
        const back = Array.from(await q.dequantize().data());
        q.dispose();
        return { ints, back };
      });
      expect(wasm.ints).toEqual(js.ints);
      expect(wasm.back).toEqual(js.back);
      for (const t of [base, xs]) t.dispose();
    }), propertyConfig({ numRuns: 30 }));
    expect(wasmIntegerMapRuns()).toBeGreaterThan(before);
  });

  it('a dequantise → hardswish → quantise chain fused by jit equals the JavaScript path; other integer arithmetic stays on the JavaScript kernel', async () => {
    const q = sn.randint(0, 256, [2, 3, 5, 11], { dtype: 'uint8', seed: 5 });
    const chain = sn.jit((t: sn.Tensor) => {
      const v = new sn.QuantizedTensor(t, 'quint8', { scales: Float64Array.of(0.037), zeroPoints: Int32Array.of(131), axis: null }).dequantize();
      const h = sn.add(sn.hardSwish(v), sn.clamp(sn.mul(v, 0.5), { min: -1, max: 1 }));
      return sn.quantizePerTensor(h, 0.021, 17, 'qint8').intRepr();
    });
    const runs = wasmIntegerMapRuns();
    const { wasm, js } = await bothPaths(async () => Array.from(await chain(q).data()));
    expect(wasm).toEqual(js);
    expect(wasmIntegerMapRuns()).toBeGreaterThan(runs);
    // Integer sums (not a centring) have no float form: the JavaScript kernel runs them, wrapping as int8 does.
    expect(floatForm(call('add', [input(0, 'int8'), input(1, 'int8')], 'int8', [1]))).toBeNull();
    expect(floatForm(cast(call('clamp', [input(0, 'float32')], 'float32', [-200, 127]), 'int8'))).toBeNull();
    const a = sn.tensor([100, -100, 127], { dtype: 'int8' }), b = sn.tensor([100, -100, 1], { dtype: 'int8' });
    const sums = await bothPaths(async () => Array.from(await sn.add(a, b).data()));
    expect(sums.wasm).toEqual([-56, 56, -128]);
    expect(sums.js).toEqual(sums.wasm);
  });
});

describe('weight-only matmul (MatMulNBits blocks) in wasm', () => {
  it('equals the JavaScript form within float64 reassociation: 4 and 8 bits, symmetric and asymmetric, odd blocks, strided inputs', async () => {
    const arb = fc.record({
      bits: fc.constantFrom<4 | 8>(4, 8), symmetric: fc.boolean(), bs: fc.constantFrom(1, 2, 3, 4, 8, 32), blocks: fc.integer({ min: 1, max: 5 }),
      n: fc.integer({ min: 1, max: 11 }), m: fc.integer({ min: 1, max: 6 }), bias: fc.boolean(), transposed: fc.boolean(), seed: fc.integer({ min: 0, max: 10_000 }),
    }).filter((p) => p.bits === 8 || p.bs % 2 === 0);
    const before = wasmWeightOnlyRuns();
    await fc.assert(fc.asyncProperty(arb, async (p) => {
      const k = p.bs * p.blocks;
      const q = sn.quant.quantizeWeights(new sn.nn.Linear(k, p.n, { bias: p.bias, seed: p.seed }), { bits: p.bits, blockSize: p.bs, symmetric: p.symmetric }) as sn.quant.WeightOnlyLinear;
      const xt = sn.randn(p.transposed ? [k, p.m] : [p.m, k], { seed: p.seed + 1 });
      const x = p.transposed ? xt.transpose(0, 1) : xt;
      const { wasm, js } = await bothPaths(async () => Array.from(await q.forward(x).data()));
      // Products of a float32 and a small integer are exact in float64: only the order of the block sums' additions differs.
      wasm.forEach((v, i) => expect(Math.abs(v - js[i]!), `${i}`).toBeLessThanOrEqual(4e-7 * Math.abs(js[i]!) + 1e-12));
      xt.dispose();
    }), propertyConfig({ numRuns: 30 }));
    expect(wasmWeightOnlyRuns()).toBeGreaterThan(before);
  });
});
