import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { QuantizedTensor, Tensor } from '../src/index.js';
import { propertyConfig } from '../src/testing/index.js';
import { WITH_WEBGPU, withCaps } from './helpers.js';
import fixtures from './fixtures/quant/functional.json' with { type: 'json' };
import edge from './fixtures/quant/edge.json' with { type: 'json' };
import { getBackend } from '../src/backend/backend.js';
import type { WebGpuCaps } from '../src/kernels/wgsl/kernel.js';
import { qgemm, qgemmOp } from '../src/quant/gemm.js';
import { cpuKernels, setCpuKernels } from '../src/backend/cpu.js';
import { wasmInt8Calls } from '../src/kernels/wasm/int8.js';

// Integer GEMM kernels (src/quant/gemm.ts, src/kernels/wasm/int8.ts): int32 accumulators equal an integer reference exactly;
// requantised outputs are within 1 of a float64 reference and of PyTorch's own quantised linear/conv2d
// (qnnpack and onednn engines, test/fixtures/quant). On WebGPU both the packed dot4I8Packed path and
// the shared register/tiled GEMM run: SwiftShader's own caps (register kernel), a GPU without the
// feature (workgroup-tiled kernel), a GPU with it (dot4I8Packed).
const Q = sn.quant.functional;
const PATHS = [
  { name: 'registers', caps: {} },
  { name: 'tiled', caps: { packedDot4: false, architecture: 'gpu', subgroups: false } },
  { name: 'dot4', caps: { packedDot4: true, architecture: 'gpu', subgroups: false } },
] as const;
const SMALL = [PATHS[0], PATHS[2]];

const ints = (n: number, lo: number, hi: number) => fc.array(fc.integer({ min: lo, max: hi }), { minLength: n, maxLength: n });
const RANGE = { int8: [-128, 127], uint8: [0, 255] } as const;

function matmulIntRef(a: number[], b: number[], m: number, k: number, n: number, za: number, zb: number[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
    let s = 0;
    for (let t = 0; t < k; t++) s += (a[i * k + t]! - za) * (b[t * n + j]! - zb[j]!);
    out.push(s);
  }
  return out;
}

function qtensor(values: number[], shape: number[], dtype: 'qint8' | 'quint8', device: sn.DeviceName, scale: number | number[], zp: number | number[]): QuantizedTensor {
  const repr = sn.tensor(values, { dtype: dtype === 'qint8' ? 'int8' : 'uint8', device }).reshape(shape);
  const scales = Float64Array.from(typeof scale === 'number' ? [scale] : scale), zps = Int32Array.from(typeof zp === 'number' ? [zp] : zp);
  return new sn.QuantizedTensor(repr, dtype, { scales, zeroPoints: zps, axis: typeof scale === 'number' ? null : 0 });
}

function roundHalfEven(v: number): number {
  const f = Math.floor(v), r = v - f;
  return r > 0.5 ? f + 1 : r < 0.5 ? f : f % 2 === 0 ? f : f + 1;
}

/** ConvInteger's int32 sums Σ (x − za)·(w − zb[o]) for x NCHW (contiguous), w [N, K]; taps in the padding read za. */
function convIntRef(X: number[], W: number[], c: { batch: number; channels: number; height: number; width: number; kernel: number[]; stride: number[]; padding: number[]; dilation: number[]; groups: number; outHeight: number; outWidth: number }, n: number, za: number, zb: number[]): number[] {
  const cg = c.channels / c.groups, og = n / c.groups, [kh, kw] = c.kernel as [number, number], k = cg * kh * kw;
  const want: number[] = [];
  for (let bi = 0; bi < c.batch; bi++) for (let o = 0; o < n; o++) for (let i = 0; i < c.outHeight; i++) for (let j = 0; j < c.outWidth; j++) {
    const g = Math.floor(o / og);
    let acc = 0;
    for (let ci = 0; ci < cg; ci++) for (let u = 0; u < kh; u++) for (let v = 0; v < kw; v++) {
      const ih = i * c.stride[0]! - c.padding[0]! + u * c.dilation[0]!, iw = j * c.stride[1]! - c.padding[1]! + v * c.dilation[1]!;
      const xv = ih >= 0 && ih < c.height && iw >= 0 && iw < c.width ? X[((bi * c.channels + g * cg + ci) * c.height + ih) * c.width + iw]! : za;
      acc += (xv - za) * (W[o * k + (ci * kh + u) * kw + v]! - zb[o]!);
    }
    want.push(acc);
  }
  return want;
}

/**
 * Runs `run` on every kernel path of the device: on the CPU the wasm kernel (checked to run) and the
 * JavaScript reference; on WebGPU each of `paths` (the tiled kernel needs products of 32 × 32 or more:
 * tests of small shapes leave it out, as it would run the register kernel again).
 */
async function eachPath(device: string, run: () => Promise<void>, paths: readonly (typeof PATHS)[number][] = PATHS): Promise<void> {
  if (device !== 'cpu') {
    for (const p of paths) await withCaps(p.caps, run);
    return;
  }
  const initial = cpuKernels();
  try {
    for (const kind of ['wasm', 'js'] as const) {
      expect(setCpuKernels(kind)).toBe(kind);
      const before = wasmInt8Calls();
      await run();
      if (kind === 'wasm') expect(wasmInt8Calls()).toBeGreaterThan(before);
      else expect(wasmInt8Calls()).toBe(before);
    }
  } finally {
    setCpuKernels(initial);
  }
}

describe.each(WITH_WEBGPU)('integer kernels on %s', (device) => {
  it('matmulInteger: int32 accumulators equal the integer reference exactly (int8/uint8, any zero points, K up to 300)', async () => {
    const arb = fc.record({ m: fc.integer({ min: 1, max: 5 }), k4: fc.integer({ min: 1, max: 75 }), kOdd: fc.boolean(), n: fc.integer({ min: 1, max: 6 }), ad: fc.constantFrom('int8', 'uint8'), bd: fc.constantFrom('int8', 'uint8') })
      .chain((p) => {
        const k = p.k4 * 4 - (p.kOdd ? 1 : 0);
        const [alo, ahi] = RANGE[p.ad as 'int8'], [blo, bhi] = RANGE[p.bd as 'int8'];
        return fc.record({ a: ints(p.m * k, alo, ahi), b: ints(k * p.n, blo, bhi), za: fc.integer({ min: alo, max: ahi }), zb: ints(p.n, blo, bhi) }).map((v) => ({ ...p, k, ...v }));
      });
    await eachPath(device, async () => {
      await fc.assert(fc.asyncProperty(arb, async ({ m, k, n, ad, bd, a, b, za, zb }) => {
        const ta = sn.tensor(a, { dtype: ad as 'int8', device }).reshape([m, k]), tb = sn.tensor(b, { dtype: bd as 'int8', device }).reshape([k, n]);
        const y = Q.matmulInteger(ta, tb, za, zb);
        expect(y.dtype).toBe('int32');
        expect(Array.from(await y.data())).toEqual(matmulIntRef(a, b, m, k, n, za, zb));
        for (const t of [ta, tb, y]) t.dispose();
      }), propertyConfig({ numRuns: 15 }));
    }, SMALL);
  });

  it('linear: requantised output within 1 of the float64 reference, with bias and fused ReLU', async () => {
    const arb = fc.record({ m: fc.integer({ min: 1, max: 4 }), k: fc.integer({ min: 1, max: 40 }), n: fc.integer({ min: 1, max: 9 }), perChannel: fc.boolean(), relu: fc.boolean(), xd: fc.constantFrom<'qint8' | 'quint8'>('qint8', 'quint8') })
      .chain((p) => {
        const [lo, hi] = p.xd === 'qint8' ? [-128, 127] : [0, 255];
        return fc.record({
          x: ints(p.m * p.k, lo, hi), w: ints(p.n * p.k, -128, 127), zx: fc.integer({ min: lo, max: hi }), zy: fc.integer({ min: lo, max: hi }),
          sx: fc.double({ min: 1e-3, max: 0.5, noNaN: true }), sw: fc.array(fc.double({ min: 1e-3, max: 0.1, noNaN: true }), { minLength: p.n, maxLength: p.n }),
          sy: fc.double({ min: 0.01, max: 2, noNaN: true }), bias: fc.array(fc.double({ min: -5, max: 5, noNaN: true }), { minLength: p.n, maxLength: p.n }),
        }).map((v) => ({ ...p, ...v }));
      });
    await eachPath(device, async () => {
      await fc.assert(fc.asyncProperty(arb, async ({ m, k, n, perChannel, relu, xd, x, w, zx, zy, sx, sw, sy, bias }) => {
        const qx = qtensor(x, [m, k], xd, device as sn.DeviceName, sx, zx);
        const qw = qtensor(w, [n, k], 'qint8', device as sn.DeviceName, perChannel ? sw : sw[0]!, perChannel ? sw.map(() => 0) : 0);
        const b = sn.tensor(bias, { device });
        const y = Q.linear(qx, qw, b, { scale: sy, zeroPoint: zy, relu });
        expect([y.dtype, y.shape, y.qScale(), y.qZeroPoint()]).toEqual([xd, [m, n], sy, zy]);
        const got = await y.intRepr().data();
        const [lo, hi] = xd === 'qint8' ? [-128, 127] : [0, 255];
        for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
          let acc = 0;
          for (let t = 0; t < k; t++) acc += (x[i * k + t]! - zx) * w[j * k + t]!;
          const real = acc * Math.fround(sx) * Math.fround(perChannel ? sw[j]! : sw[0]!) + bias[j]!;
          const want = Math.min(hi, Math.max(relu ? Math.max(lo, zy) : lo, roundHalfEven(real / sy) + zy));
          expect(Math.abs(got[i * n + j]! - want), `[${i}, ${j}] got ${got[i * n + j]} want ${want}`).toBeLessThanOrEqual(1);
        }
        for (const t of [qx, qw, y]) t.dispose();
        b.dispose();
      }), propertyConfig({ numRuns: 15 }));
    }, SMALL);
  });

  it("linear and conv2d (strided, padded, dilated, grouped, depthwise) match PyTorch's quantised functional ops within 1", async () => {
    await eachPath(device, async () => {
      let worst = 0;
      for (const c of fixtures.cases) {
        type QJson = { shape: number[]; intRepr: number[]; scale?: number; zeroPoint?: number; scales?: number[]; zeroPoints?: number[] };
        const mk = (j: QJson, dtype: 'qint8' | 'quint8') => j.scale !== undefined
          ? qtensor(j.intRepr, j.shape, dtype, device as sn.DeviceName, j.scale, j.zeroPoint!)
          : qtensor(j.intRepr, j.shape, dtype, device as sn.DeviceName, j.scales!, j.zeroPoints!);
        const qx = mk(c.input, 'quint8'), qw = mk(c.weight, 'qint8');
        const b = c.bias ? sn.tensor(c.bias, { device }) : null;
        const y = c.op === 'linear'
          ? Q.linear(qx, qw, b, { scale: c.scale, zeroPoint: c.zeroPoint })
          : Q.conv2d(qx, qw, b, { ...(c as { options: sn.quant.QConv2dOptions }).options, scale: c.scale, zeroPoint: c.zeroPoint });
        expect(y.shape, `${c.op} ${c.engine}`).toEqual(c.outShape);
        const got = await y.intRepr().data();
        c.out.forEach((v, i) => { worst = Math.max(worst, Math.abs(got[i]! - v)); });
        for (const t of [qx, qw, y]) t.dispose();
      }
      expect(worst).toBeLessThanOrEqual(1);
    }, SMALL);
  });

  it("linear with a fused ReLU matches PyTorch's LinearReLU within 1", async () => {
    await eachPath(device, async () => {
      for (const c of edge.relu) {
        const qx = qtensor(c.input.intRepr, c.input.shape, 'quint8', device as sn.DeviceName, c.input.scale, c.input.zeroPoint);
        const qw = qtensor(c.weight.intRepr, c.weight.shape, 'qint8', device as sn.DeviceName, c.weight.scale, c.weight.zeroPoint);
        const y = Q.linear(qx, qw, sn.tensor(c.bias, { device }), { scale: c.scale, zeroPoint: c.zeroPoint, relu: true });
        const got = await y.intRepr().data();
        expect(Math.min(...got)).toBeGreaterThanOrEqual(c.zeroPoint);
        c.out.forEach((v, i) => expect(Math.abs(got[i]! - v)).toBeLessThanOrEqual(1));
      }
    });
  });

  it('maxPool2d and relu keep the grid: max of the integers, max(q, zeroPoint), same parameters', async () => {
    const x = sn.randn([1, 2, 4, 6], { seed: 8, device: device as sn.DeviceName });
    const q = sn.quantizePerTensor(x, 0.05, 60, 'quint8');
    const ints = Array.from(await q.intRepr().data());
    const p = Q.maxPool2d(q, 2);
    expect([p.shape, p.qScale(), p.qZeroPoint()]).toEqual([[1, 2, 2, 3], 0.05, 60]);
    const want: number[] = [];
    for (let c = 0; c < 2; c++) for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) {
      want.push(Math.max(...[0, 1].flatMap((di) => [0, 1].map((dj) => ints[c * 24 + (2 * i + di) * 6 + 2 * j + dj]!))));
    }
    expect(Array.from(await p.intRepr().data())).toEqual(want);
    expect(Array.from(await Q.relu(q).intRepr().data())).toEqual(ints.map((v) => Math.max(v, 60)));
  });

  it('register and tiled kernels, microkernel tails, K ≥ 256 (f32 and i32 sums): int32 exact, requantised with ReLU6/hardswish within 1', async () => {
    const ints = async (t: Tensor) => Array.from(await t.data());
    await eachPath(device, async () => {
      // M and N past one 64-wide tile with ragged edges; K on both sides of the f32-exact bound (258) and odd.
      for (const [m, n, k, seed] of [[37, 41, 300, 1], [3, 70, 259, 3], [40, 36, 27, 4]] as const) {
        const a = sn.randint(0, 256, [m, k], { dtype: 'uint8', seed, device }), b = sn.randint(-128, 128, [k, n], { dtype: 'int8', seed: seed + 10, device });
        const za = 255 - seed, zb = Array.from({ length: n }, (_, j) => ((j * 37) % 255) - 127);
        const y = Q.matmulInteger(a, b, za, zb);
        expect(await ints(y), `matmulInteger ${m}×${k}·${k}×${n}`).toEqual(matmulIntRef(await ints(a), await ints(b), m, k, n, za, zb));
        for (const t of [a, b, y]) t.dispose();
      }
      // conv2d with K = 32·3·3 = 288 (i32 sums) and K = 3·3·3 (f32), per-channel weights, both activations.
      for (const [c, o, act] of [[32, 36, 'hardswish'], [3, 40, 'relu6']] as const) {
        const [h, wd] = [9, 7];
        const xi = sn.randint(0, 256, [2, c, h, wd], { dtype: 'uint8', seed: c }), wi = sn.randint(-127, 128, [o, c, 3, 3], { dtype: 'int8', seed: o });
        const sx = 0.02, sw = Array.from({ length: o }, (_, j) => 0.001 + j * 1e-4), sy = 0.05, zx = 100, zy = 90;
        const bias = Array.from({ length: o }, (_, j) => Math.sin(j) * 0.5);
        const qx = new sn.QuantizedTensor(xi.to(device as sn.DeviceName), 'quint8', { scales: Float64Array.of(sx), zeroPoints: Int32Array.of(zx), axis: null });
        const qw = new sn.QuantizedTensor(wi.to(device as sn.DeviceName), 'qint8', { scales: Float64Array.from(sw), zeroPoints: new Int32Array(o), axis: 0 });
        const y = Q.conv2d(qx, qw, sn.tensor(bias, { device }), { padding: 1, stride: [1, 2], scale: sy, zeroPoint: zy, activation: act });
        const [oh, ow] = y.shape.slice(2) as [number, number];
        const got = await y.intRepr().data(), X = await ints(xi), W = await ints(wi);
        let worst = 0;
        for (let bi = 0; bi < 2; bi++) for (let oc = 0; oc < o; oc++) for (let i = 0; i < oh; i++) for (let j = 0; j < ow; j++) {
          let acc = 0;
          for (let ci = 0; ci < c; ci++) for (let u = 0; u < 3; u++) for (let v = 0; v < 3; v++) {
            const ih = i - 1 + u, iw = j * 2 - 1 + v;
            if (ih >= 0 && ih < h && iw >= 0 && iw < wd) acc += (X[((bi * c + ci) * h + ih) * wd + iw]! - zx) * W[((oc * c + ci) * 3 + u) * 3 + v]!;
          }
          const real = acc * sx * sw[oc]! + bias[oc]!;
          const r = act === 'hardswish' ? (real * Math.min(6, Math.max(0, real + 3))) / 6 : Math.min(6, Math.max(0, real));
          const want = Math.min(255, Math.max(0, roundHalfEven(r / sy) + zy));
          worst = Math.max(worst, Math.abs(got[((bi * o + oc) * oh + i) * ow + j]! - want));
        }
        expect(worst, `conv2d ${c}→${o} ${act}`).toBeLessThanOrEqual(1);
        for (const t of [qx, qw, y]) t.dispose();
      }
    });
  });

  it('conv2d int32 accumulators equal the integer reference exactly: odd sizes, strides (2, 1), non-square kernels, padding, dilation, groups, K tails, non-contiguous input', async () => {
    // The wasm im2col (src/kernels/wasm/int8.ts), the JavaScript one and the WebGPU implicit im2col, against a
    // direct sum; int32 outputs (ConvInteger), so any misplaced tap or missing zero point shows as an exact mismatch.
    const arb = fc.record({
      b: fc.integer({ min: 1, max: 2 }), groups: fc.integer({ min: 1, max: 3 }), cg: fc.integer({ min: 1, max: 4 }), og: fc.integer({ min: 1, max: 5 }),
      h: fc.integer({ min: 1, max: 9 }), w: fc.integer({ min: 1, max: 9 }), kh: fc.integer({ min: 1, max: 4 }), kw: fc.integer({ min: 1, max: 4 }),
      sh: fc.integer({ min: 1, max: 3 }), sw: fc.integer({ min: 1, max: 3 }), dh: fc.integer({ min: 1, max: 2 }), dw: fc.integer({ min: 1, max: 2 }),
      pt: fc.integer({ min: 0, max: 3 }), pl: fc.integer({ min: 0, max: 3 }), xd: fc.constantFrom<'int8' | 'uint8'>('int8', 'uint8'), transposed: fc.boolean(), seed: fc.integer({ min: 0, max: 1000 }),
    }).filter((p) => p.h + 2 * p.pt >= (p.kh - 1) * p.dh + 1 && p.w + 2 * p.pl >= (p.kw - 1) * p.dw + 1);
    await eachPath(device, async () => {
      await fc.assert(fc.asyncProperty(arb, async (p) => {
        const c = p.cg * p.groups, n = p.og * p.groups, k = p.cg * p.kh * p.kw;
        const oh = Math.floor((p.h + 2 * p.pt - (p.kh - 1) * p.dh - 1) / p.sh) + 1, ow = Math.floor((p.w + 2 * p.pl - (p.kw - 1) * p.dw - 1) / p.sw) + 1;
        const [lo, hi] = RANGE[p.xd];
        // A non-contiguous NCHW view: the transpose of an NCWH tensor.
        const xt = sn.randint(lo, hi + 1, p.transposed ? [p.b, c, p.w, p.h] : [p.b, c, p.h, p.w], { dtype: p.xd, seed: p.seed, device });
        const x = p.transposed ? xt.transpose(2, 3) : xt;
        const w = sn.randint(-128, 128, [n, k], { dtype: 'int8', seed: p.seed + 1, device });
        const za = lo + ((p.seed * 7) % (hi - lo + 1)), zb = Array.from({ length: n }, (_, j) => ((j * 53 + p.seed) % 256) - 128);
        const conv = { batch: p.b, channels: c, height: p.h, width: p.w, kernel: [p.kh, p.kw] as [number, number], stride: [p.sh, p.sw] as [number, number], padding: [p.pt, p.pl] as [number, number], dilation: [p.dh, p.dw] as [number, number], groups: p.groups, outHeight: oh, outWidth: ow };
        const y = qgemm([x, w, sn.tensor([za], { dtype: 'int32', device }), sn.tensor(zb, { dtype: 'int32', device })], { m: p.b * oh * ow, n, k, conv, output: 'int32' });
        expect(y.shape).toEqual([p.b, n, oh, ow]);
        expect(Array.from(await y.data())).toEqual(convIntRef(Array.from(await x.contiguous().data()), Array.from(await w.data()), conv, n, za, zb));
        for (const t of [xt, w, y]) t.dispose();
      }), propertyConfig({ numRuns: 12 }));
    }, SMALL);
  });

  it("PP-OCR rec's conv shapes (1×3 kernels over 960 channels: K = 2880; depthwise 5×5 with stride (2, 1)): int32 exact on every path", async () => {
    // The rec model's int8 layers gave lower accuracy on WebGPU than on the CPU; replaying its GEMMs on both devices
    // found them identical (the difference was calibration, see the README's quantisation section). These keep its shapes covered.
    await eachPath(device, async () => {
      const cases = [
        { x: [1, 960, 1, 7], n: 12, kernel: [1, 3], stride: [1, 1], padding: [0, 1], groups: 1 },
        { x: [1, 24, 7, 10], n: 24, kernel: [5, 5], stride: [2, 1], padding: [2, 2], groups: 24 },
      ];
      for (const [i, t] of cases.entries()) {
        const [b, ch, h, wd] = t.x as [number, number, number, number];
        const oh = Math.floor((h + 2 * t.padding[0]! - t.kernel[0]!) / t.stride[0]!) + 1, ow = Math.floor((wd + 2 * t.padding[1]! - t.kernel[1]!) / t.stride[1]!) + 1;
        const k = (ch / t.groups) * t.kernel[0]! * t.kernel[1]!;
        const x = sn.randint(0, 256, t.x, { dtype: 'uint8', seed: 40 + i, device }), w = sn.randint(-128, 128, [t.n, k], { dtype: 'int8', seed: 50 + i, device });
        const conv = { batch: b, channels: ch, height: h, width: wd, kernel: t.kernel as [number, number], stride: t.stride as [number, number], padding: t.padding as [number, number], dilation: [1, 1] as [number, number], groups: t.groups, outHeight: oh, outWidth: ow };
        const za = 255, zb = Array.from({ length: t.n }, (_, j) => (j % 2 === 0 ? 127 : -128));
        const y = qgemm([x, w, sn.tensor([za], { dtype: 'int32', device }), sn.tensor(zb, { dtype: 'int32', device })], { m: b * oh * ow, n: t.n, k, conv, output: 'int32' });
        expect(Array.from(await y.data()), `case ${i}`).toEqual(convIntRef(Array.from(await x.data()), Array.from(await w.data()), conv, t.n, za, zb));
        for (const v of [x, w, y]) v.dispose();
      }
    });
  });

  it('conv2d equals the integer reference: the float conv of the dequantised operands, requantised', async () => {
    // Exactness of the implicit im2col (padding reads the zero point) against sn.conv2d on centred integers.
    await eachPath(device, async () => {
      const x = sn.randint(0, 256, [2, 4, 5, 6], { dtype: 'uint8', seed: 3 }), w = sn.randint(-128, 128, [6, 2, 3, 3], { dtype: 'int8', seed: 4 });
      const qx = new sn.QuantizedTensor(x.to(device as sn.DeviceName), 'quint8', { scales: Float64Array.of(1), zeroPoints: Int32Array.of(77), axis: null });
      const qw = new sn.QuantizedTensor(w.to(device as sn.DeviceName), 'qint8', { scales: Float64Array.of(1), zeroPoints: Int32Array.of(0), axis: null });
      const opts = { stride: [2, 1] as [number, number], padding: [1, 2] as [number, number], dilation: [1, 2] as [number, number], groups: 2 };
      // Unit scales and an output scale of 64 keep the requantised values inside uint8's range.
      const ref = sn.conv2d(sn.sub(x.to('float32'), 77), w.to('float32'), opts);
      const y = Q.conv2d(qx, qw, null, { ...opts, scale: 64, zeroPoint: 128 });
      const want = (await ref.data()).map((v) => Math.min(255, Math.max(0, roundHalfEven(v / 64) + 128)));
      expect(Array.from(await y.intRepr().data())).toEqual(Array.from(want));
    });
  });
});

describe('integer kernels: variants and errors', () => {
  it('the packed dot-product paths are chosen by capability: direct for whole word rows, packed rows first otherwise', () => {
    const caps = { ...(getBackend('webgpu') as unknown as { caps: WebGpuCaps }).caps };
    const view = (shape: number[], dtype: 'int8' | 'uint8' | 'int32' | 'float32', strides = [shape[1]!, 1]) => ({ shape, dtype, strides, offset: 0 });
    const inputs = [view([3, 8], 'uint8'), view([5, 8], 'int8'), view([1], 'int32', [1]), view([5], 'int32', [1])];
    const out = [view([3, 5], 'int32')];
    const attrs = { m: 3, n: 5, k: 8, conv: null, output: 'int32' as const };
    // A single kernel's source, or a program's passes joined.
    const source = (c: WebGpuCaps, ins = inputs, a = attrs) => {
      const form = qgemmOp.webgpu!(ins, a, out, c) as { source?: string; passes?: { source: string }[] };
      return form.source ?? `PROGRAM ${form.passes!.map((p) => p.source).join('\n')}`;
    };
    const gpu = { ...caps, architecture: 'gpu', subgroups: false };
    const direct = source({ ...gpu, packedDot4: true });
    expect(direct).toContain('dot4I8Packed');
    expect(direct).not.toContain('PROGRAM');
    expect(source({ ...gpu, packedDot4: false })).not.toContain('dot4I8Packed');
    // SwiftShader emulates dot4I8Packed: the register kernel runs there even with the feature.
    expect(source({ ...caps, architecture: 'swiftshader', packedDot4: true })).not.toContain('dot4I8Packed');
    // Strided B or K not a multiple of 4: the rows are packed into words first, then the dot4 GEMM.
    const strided = source({ ...gpu, packedDot4: true }, [inputs[0]!, view([5, 8], 'int8', [1, 5]), inputs[2]!, inputs[3]!]);
    expect(strided).toMatch(/^PROGRAM[\s\S]*dot4I8Packed/);
    const odd = source({ ...gpu, packedDot4: true }, [view([3, 7], 'uint8'), view([5, 7], 'int8'), inputs[2]!, inputs[3]!], { ...attrs, k: 7 });
    expect(odd).toMatch(/^PROGRAM[\s\S]*dot4I8Packed/);
    expect(source({ ...gpu, packedDot4: false }, [view([3, 7], 'uint8'), view([5, 7], 'int8'), inputs[2]!, inputs[3]!], { ...attrs, k: 7 })).not.toContain('dot4I8Packed');
  });

  it('reject operands that are not quantised, mismatched shapes and bad output parameters', () => {
    const qx = sn.quantizePerTensor(sn.rand([2, 3]), 0.1, 0, 'quint8');
    const qw = sn.quantizePerTensor(sn.rand([4, 3]), 0.1, 0, 'qint8');
    expect(() => Q.linear(sn.rand([2, 3]) as unknown as QuantizedTensor, qw)).toThrow(/quant.linear: the input must be a quantised tensor/);
    expect(() => Q.linear(qx, sn.quantizePerTensor(sn.rand([4, 5]), 0.1, 0, 'qint8'))).toThrow(/expected input \[..., in\] and weight \[out, in\], got \[2, 3\] and \[4, 5\]/);
    expect(() => Q.linear(qx, qw, null, { zeroPoint: 300 })).toThrow(/output zero point must be an integer in \[0, 255\]/);
    expect(() => Q.linear(qx, qw, sn.rand([3]))).toThrow(/bias must be a float32 tensor of shape \[4\]/);
    const qc = sn.quantizePerTensor(sn.rand([1, 4, 5, 5]), 0.1, 0, 'quint8');
    expect(() => Q.conv2d(qc, sn.quantizePerTensor(sn.rand([6, 3, 3, 3]), 0.1, 0, 'qint8'), null, { groups: 2 })).toThrow(/groups=2 does not fit input channels 4/);
    expect(() => Q.matmulInteger(sn.rand([2, 3]) as Tensor, sn.rand([3, 2]))).toThrow(/input must hold int8 or uint8 integers/);
    const [i8, u8] = [sn.zeros([2, 3], { dtype: 'int8' }), sn.zeros([3, 2], { dtype: 'uint8' })];
    expect(() => Q.matmulInteger(i8, u8, 128)).toThrow(/a's zero point must be an integer in a's int8 range, got 128/);
    expect(() => Q.matmulInteger(i8, u8, 0, [0, -1])).toThrow(/b's zero points must be integers in b's uint8 range, got -1/);
  });
});
