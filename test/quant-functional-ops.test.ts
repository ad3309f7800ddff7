import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { QuantizedTensor } from '../src/index.js';
import { SinterError } from '../src/errors.js';
import { propertyConfig } from '../src/testing/index.js';
import { WITH_WEBGPU } from './helpers.js';
import { ref } from './reference/core.js';
import { interpolateRef } from './reference/interpolate.js';
import { adaptiveAvgPool2dRef, avgPool2dRef, maxPool2dRef } from './reference/pool.js';
import fixtures from './fixtures/quant/functional_ops.json' with { type: 'json' };

// sn.quant.functional's pooling, resampling and activation ops against PyTorch 1.13
// (test/fixtures/quant/generate_functional_ops.py, engine onednn: the native ATen kernels x86 users get),
// and seeded properties against float64 references of the same formulas, on both devices.

const Q = sn.quant.functional;
type QD = 'qint8' | 'quint8';
const RANGE: Record<QD, [number, number]> = { qint8: [-128, 127], quint8: [0, 255] };

function qtensor(values: readonly number[], shape: readonly number[], dtype: QD, device: sn.DeviceName, scale: number, zp: number): QuantizedTensor {
  return new sn.QuantizedTensor(ints8(values, shape, dtype === 'qint8' ? 'int8' : 'uint8', device), dtype, { scales: Float64Array.of(scale), zeroPoints: Int32Array.of(zp), axis: null });
}

/** An int8/uint8 tensor of `shape` (the flat tensor it was shaped from is released). */
function ints8(values: readonly number[], shape: readonly number[], dtype: 'int8' | 'uint8', device: sn.DeviceName): sn.Tensor {
  const flat = sn.tensor([...values], { dtype, device });
  const shaped = flat.reshape([...shape]);
  if (shaped !== flat) flat.dispose();
  return shaped;
}

async function ints(q: QuantizedTensor): Promise<number[]> {
  const r = q.intRepr();
  const d = Array.from(await r.data(), Number);
  r.dispose();
  return d;
}

function roundHalfEven(v: number): number {
  const f = Math.floor(v), r = v - f;
  return r > 0.5 ? f + 1 : r < 0.5 ? f : f % 2 === 0 ? f : f + 1;
}
const saturate = (v: number, d: QD) => Math.min(Math.max(v, RANGE[d][0]), RANGE[d][1]);

type Case = (typeof fixtures.cases)[number];
type Opts = Record<string, unknown>;

/** Runs a fixture case's op with its options (PyTorch's argument names, camelCased). */
function runCase(c: Case, x: QuantizedTensor, device: sn.DeviceName): QuantizedTensor {
  const o = c.options as Opts;
  switch (c.op) {
    case 'avgPool2d': return Q.avgPool2d(x, o.kernelSize as number[], o as sn.AvgPool2dOptions);
    case 'adaptiveAvgPool2d': return Q.adaptiveAvgPool2d(x, o.outputSize as number[]);
    case 'adaptiveAvgPool3d': return Q.adaptiveAvgPool3d(x, o.outputSize as number[]);
    case 'avgPool3d': return Q.avgPool3d(x, o.kernelSize as number[], o);
    case 'maxPool1d': return Q.maxPool1d(x, o.kernelSize as number, o);
    case 'interpolate': return Q.interpolate(x, o as sn.InterpolateOptions);
    case 'upsample': return Q.upsample(x, o as sn.InterpolateOptions);
    case 'upsampleNearest': return Q.upsampleNearest(x, o);
    case 'upsampleBilinear': return Q.upsampleBilinear(x, o);
    case 'hardtanh': return Q.hardtanh(x, o);
    case 'clamp': return Q.clamp(x, o as { min: number; max: number });
    case 'threshold': return Q.threshold(x, o as { threshold: number; value: number });
    case 'hardsigmoid': return Q.hardsigmoid(x);
    case 'hardswish': return Q.hardswish(x, o as { scale: number; zeroPoint: number });
    case 'elu': return Q.elu(x, o as { scale: number; zeroPoint: number });
    case 'celu': return Q.celu(x, o as { scale: number; zeroPoint: number });
    case 'leakyRelu': return Q.leakyRelu(x, o);
    case 'conv1d': {
      const w = c.weight!;
      const qw = new sn.QuantizedTensor(ints8(w.intRepr, w.shape, 'int8', device), 'qint8', 'scales' in w
        ? { scales: Float64Array.from(w.scales as number[]), zeroPoints: Int32Array.from(w.zeroPoints as number[]), axis: 0 }
        : { scales: Float64Array.of(w.scale as number), zeroPoints: Int32Array.of(w.zeroPoint as number), axis: null });
      const b = sn.tensor(c.bias!, { device });
      try {
        return Q.conv1d(x, qw, b, o);
      } finally {
        qw.dispose();
        b.dispose();
      }
    }
  }
  throw new Error(`no runner for ${c.op}`);
}

/**
 * Largest difference allowed from PyTorch's integers, per op, and why:
 * - 0: PyTorch computes on the integers (pools, nearest, clamp/hardtanh) or the op keeps grid values
 *   (threshold); bilinear on the CPU, whose JavaScript float32 steps are PyTorch's scalar kernel's.
 * - 1: bilinear on WebGPU (WGSL lets the compiler contract a·b + c into an fma); conv1d (the int GEMM's
 *   float32 requantisation, as conv2d); the activations, whose PyTorch kernels dequantise with
 *   fma(q, s, −z·s) in their vectorised loops and call expf (we use s·(q − z) and exp rounded to float32).
 *   All of these equal PyTorch on these fixtures on both devices here; the count of off-by-ones is checked.
 */
const TOLERANCE: Record<string, number> = {
  avgPool2d: 0, avgPool3d: 0, adaptiveAvgPool2d: 0, adaptiveAvgPool3d: 0, maxPool1d: 0, upsampleNearest: 0, hardtanh: 0, clamp: 0, threshold: 0,
  conv1d: 1, hardsigmoid: 1, hardswish: 1, elu: 1, celu: 1, leakyRelu: 1,
};
const BILINEAR = new Set(['upsampleBilinear', 'upsample']);

function tolerance(c: Case, device: sn.DeviceName): number {
  const bilinear = BILINEAR.has(c.op) || (c.op === 'interpolate' && (c.options as Opts).mode === 'bilinear');
  if (bilinear) return device === 'cpu' ? 0 : 1;
  return c.op === 'interpolate' ? 0 : TOLERANCE[c.op]!;
}

describe.each(WITH_WEBGPU)('quant functional ops on %s', (device) => {
  it('match PyTorch 1.13 fixtures: integers, output scale and zero point', async () => {
    let off = 0, total = 0;
    const live = sn.memory().tensors;
    for (const c of fixtures.cases) {
      const what = `${c.op} ${JSON.stringify(c.options)}`;
      const x = qtensor(c.input.intRepr, c.input.shape, c.input.dtype as QD, device, c.input.scale, c.input.zeroPoint);
      const y = runCase(c, x, device);
      expect(y.shape, what).toEqual(c.outShape);
      expect(Math.fround(y.qScale()), what).toBe(Math.fround(c.outScale));
      expect(y.qZeroPoint(), what).toBe(c.outZeroPoint);
      expect(y.dtype, what).toBe(c.op === 'conv1d' ? 'quint8' : c.input.dtype);
      const got = await ints(y);
      const tol = tolerance(c, device);
      got.forEach((v, i) => {
        const d = Math.abs(v - c.out[i]!);
        if (d > 0) off++;
        expect(d, `${what} [${i}]: got ${v}, PyTorch ${c.out[i]}`).toBeLessThanOrEqual(tol);
      });
      total += got.length;
      x.dispose();
      y.dispose();
    }
    // Off-by-one results would be rare ties, not a systematic shift.
    expect(off / total).toBeLessThan(0.005);
    // Every intermediate (integers as floats, sums, multipliers, scalars) was released.
    expect(sn.memory().tensors).toBe(live);
  });
});

const qdtype = fc.constantFrom<QD>('qint8', 'quint8');
/** Integers over a dtype's whole range and a zero point anywhere in it. */
const qvalues = (d: QD, n: number) => fc.record({
  q: fc.array(fc.integer({ min: RANGE[d][0], max: RANGE[d][1] }), { minLength: n, maxLength: n }),
  zp: fc.integer({ min: RANGE[d][0], max: RANGE[d][1] }),
  scale: fc.double({ min: 1e-3, max: 1, noNaN: true }),
});
const dims = fc.record({ n: fc.integer({ min: 1, max: 2 }), c: fc.integer({ min: 1, max: 3 }), h: fc.integer({ min: 1, max: 9 }), w: fc.integer({ min: 1, max: 9 }) });

/** Checks integers against a float64 reference: within `tol`, and exactly equal in all but a few ties. */
function expectNear(got: number[], want: number[], tol: number, what: string): void {
  expect(got.length, what).toBe(want.length);
  let off = 0;
  got.forEach((v, i) => {
    expect(Math.abs(v - want[i]!), `${what} [${i}]: got ${v}, reference ${want[i]}`).toBeLessThanOrEqual(tol);
    if (v !== want[i]) off++;
  });
  expect(off, `${what}: ${off} of ${got.length} off by one`).toBeLessThanOrEqual(Math.max(1, got.length / 20));
}

describe.each(WITH_WEBGPU)('quant functional ops on %s: properties against float64 references', (device) => {
  // Fewer runs on WebGPU, where every new shape compiles kernels on SwiftShader.
  const runs = (n: number) => propertyConfig({ numRuns: device === 'cpu' ? n : Math.ceil(n / 3) });
  // Pools: PyTorch averages integer sums with a float32 reciprocal of the divisor, so a mean that is
  // exactly a half may land either side of it (1 unit); maxima are exact.
  it('avgPool2d, adaptiveAvgPool2d and maxPool1d', async () => {
    const arb = fc.tuple(qdtype, dims).chain(([d, s]) => fc.record({
      d: fc.constant(d), s: fc.constant(s), v: qvalues(d, s.n * s.c * s.h * s.w),
      kh: fc.integer({ min: 1, max: s.h }), kw: fc.integer({ min: 1, max: s.w }), sh: fc.integer({ min: 1, max: 3 }), sw: fc.integer({ min: 1, max: 3 }),
      pad: fc.boolean(), ceilMode: fc.boolean(), countIncludePad: fc.boolean(), divisorOverride: fc.option(fc.integer({ min: 1, max: 9 })),
      oh: fc.integer({ min: 1, max: s.h + 2 }), ow: fc.integer({ min: 1, max: s.w + 2 }), dilation: fc.integer({ min: 1, max: 2 }),
    }));
    await fc.assert(fc.asyncProperty(arb, async ({ d, s, v, kh, kw, sh, sw, pad, ceilMode, countIncludePad, divisorOverride }) => {
      const shape = [s.n, s.c, s.h, s.w];
      const x = qtensor(v.q, shape, d, device, v.scale, v.zp);
      const padding: [number, number] = pad ? [kh >> 1, kw >> 1] : [0, 0];
      const win = { kernelSize: [kh, kw] as [number, number], stride: [sh, sw] as [number, number], padding, ceilMode, countIncludePad, divisorOverride };
      const want = avgPool2dRef(ref(shape, v.q.map((q) => q - v.zp)), win);
      const y = Q.avgPool2d(x, [kh, kw], { stride: [sh, sw], padding, ceilMode, countIncludePad, divisorOverride });
      expect(y.shape).toEqual(want.shape);
      // PyTorch rounds mean + zeroPoint (NCHW kernel), or rounds the mean and adds the zero point (the
      // NHWC kernel, which it takes when the tensor is channels-last contiguous too: one channel or 1×1).
      const nhwc = s.c === 1 || s.h * s.w === 1;
      const expected = Array.from(want.data, (m) => saturate(nhwc ? v.zp + roundHalfEven(m) : roundHalfEven(m + v.zp), d));
      expectNear(await ints(y), expected, 1, `avgPool2d ${JSON.stringify(win)}`);
      y.dispose();
      x.dispose();
    }), runs(20));
    await fc.assert(fc.asyncProperty(arb, async ({ d, s, v, oh, ow }) => {
      const shape = [s.n, s.c, s.h, s.w];
      const x = qtensor(v.q, shape, d, device, v.scale, v.zp);
      const want = adaptiveAvgPool2dRef(ref(shape, v.q), [oh, ow]);
      const y = Q.adaptiveAvgPool2d(x, [oh, ow]);
      // NCHW kernel: round(mean); NHWC kernel (as above): zeroPoint + round(mean − zeroPoint).
      const nhwc = s.c === 1 || s.h * s.w === 1;
      expectNear(await ints(y), Array.from(want.data, (m) => (nhwc ? v.zp + roundHalfEven(m - v.zp) : roundHalfEven(m))), 1, `adaptiveAvgPool2d ${oh}×${ow}`);
      expect([y.qScale(), y.qZeroPoint()]).toEqual([v.scale, v.zp]);
      y.dispose();
      x.dispose();
    }), runs(20));
    await fc.assert(fc.asyncProperty(arb, async ({ d, s, v, kw, sw, pad, ceilMode, dilation }) => {
      const len = s.h * s.w, k = Math.min(kw, Math.floor((len - 1) / dilation) + 1);
      const x = qtensor(v.q.slice(0, s.n * s.c * len), [s.n, s.c, len], d, device, v.scale, v.zp);
      const padding = pad ? k >> 1 : 0;
      const want = maxPool2dRef(ref([s.n, s.c, 1, len], v.q.slice(0, s.n * s.c * len)), { kernelSize: [1, k], stride: [1, sw], padding: [0, padding], dilation: [1, dilation], ceilMode });
      const y = Q.maxPool1d(x, k, { stride: sw, padding, dilation, ceilMode });
      expect(await ints(y)).toEqual(Array.from(want.data));
      y.dispose();
      x.dispose();
    }), runs(20));
  });

  // 3-D pools against a float64 reference written here from the definitions (windows in padded
  // coordinates; adaptive bins [⌊i·n/o⌋, ⌈(i+1)·n/o⌉)). avgPool3d always rounds as PyTorch's NDHWC kernel
  // (zeroPoint + round(mean)); adaptiveAvgPool3d as the 2-D one.
  it('avgPool3d and adaptiveAvgPool3d', async () => {
    const arb = fc.tuple(qdtype, fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 3, maxLength: 3 }), fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 2 })).chain(([d, sp, n, c]) => fc.record({
      d: fc.constant(d), shape: fc.constant([n, c, ...sp]), v: qvalues(d, n * c * sp[0]! * sp[1]! * sp[2]!),
      k: fc.tuple(...sp.map((x) => fc.integer({ min: 1, max: x }))), stride: fc.tuple(fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 2 })),
      pad: fc.boolean(), countIncludePad: fc.boolean(), divisorOverride: fc.option(fc.integer({ min: 1, max: 7 })),
      out: fc.tuple(...sp.map((x) => fc.integer({ min: 1, max: x + 1 }))),
    }));
    const at = (shape: number[], idx: number[]) => idx.reduce((a, i, dim) => a * shape[dim]! + i, 0);
    await fc.assert(fc.asyncProperty(arb, async ({ d, shape, v, k, stride, pad, countIncludePad, divisorOverride, out }) => {
      const x = qtensor(v.q, shape, d, device, v.scale, v.zp);
      const sp = shape.slice(2), padding = pad ? k.map((x) => x >> 1) : [0, 0, 0];
      const os = sp.map((n, i) => Math.floor((n + 2 * padding[i]! - k[i]!) / stride[i]!) + 1);
      const want: number[] = [];
      for (let b = 0; b < shape[0]! * shape[1]!; b++) {
        for (let i = 0; i < os[0]! * os[1]! * os[2]!; i++) {
          const o = [Math.floor(i / (os[1]! * os[2]!)), Math.floor(i / os[2]!) % os[1]!, i % os[2]!];
          let sum = 0, inside = 0, padded = 1;
          const lo = o.map((oi, dim) => oi * stride[dim]! - padding[dim]!);
          lo.forEach((l, dim) => { padded *= Math.min(l + k[dim]!, sp[dim]! + padding[dim]!) - l; });
          for (let a = lo[0]!; a < lo[0]! + k[0]!; a++) for (let bb = lo[1]!; bb < lo[1]! + k[1]!; bb++) for (let cc = lo[2]!; cc < lo[2]! + k[2]!; cc++) {
            if (a < 0 || bb < 0 || cc < 0 || a >= sp[0]! || bb >= sp[1]! || cc >= sp[2]!) continue;
            sum += v.q[b * sp[0]! * sp[1]! * sp[2]! + at(sp, [a, bb, cc])]! - v.zp;
            inside++;
          }
          want.push(saturate(v.zp + roundHalfEven(sum / (divisorOverride ?? (countIncludePad ? padded : inside))), d));
        }
      }
      const y = Q.avgPool3d(x, k, { stride, padding, countIncludePad, divisorOverride });
      expect(y.shape).toEqual([...shape.slice(0, 2), ...os]);
      expectNear(await ints(y), want, 1, `avgPool3d ${JSON.stringify({ k, stride, padding, countIncludePad, divisorOverride })}`);
      const bins = sp.map((n, dim) => Array.from({ length: out[dim]! }, (_, i) => [Math.floor((i * n) / out[dim]!), Math.ceil(((i + 1) * n) / out[dim]!)] as const));
      const nhwc = shape[1] === 1 || sp.every((n) => n === 1);
      const wantA: number[] = [];
      for (let b = 0; b < shape[0]! * shape[1]!; b++) {
        for (let i = 0; i < out[0]! * out[1]! * out[2]!; i++) {
          const o = [Math.floor(i / (out[1]! * out[2]!)), Math.floor(i / out[2]!) % out[1]!, i % out[2]!];
          const [r0, r1, r2] = o.map((oi, dim) => bins[dim]![oi]!) as [readonly [number, number], readonly [number, number], readonly [number, number]];
          let sum = 0;
          for (let a = r0[0]; a < r0[1]; a++) for (let bb = r1[0]; bb < r1[1]; bb++) for (let cc = r2[0]; cc < r2[1]; cc++) sum += v.q[b * sp[0]! * sp[1]! * sp[2]! + at(sp, [a, bb, cc])]!;
          const m = sum / ((r0[1] - r0[0]) * (r1[1] - r1[0]) * (r2[1] - r2[0]));
          wantA.push(nhwc ? v.zp + roundHalfEven(m - v.zp) : roundHalfEven(m));
        }
      }
      const ya = Q.adaptiveAvgPool3d(x, out);
      expectNear(await ints(ya), wantA, 1, `adaptiveAvgPool3d ${out}`);
      for (const t of [x, y, ya]) t.dispose();
    }), runs(15));
  });

  // Global pooling of a 300×300 image: sums reach 2e7, past float32's exact integers (2^24), and the
  // means (217.50067, 217.50027) sit just above a half: PyTorch 1.13 gives 218 for each channel.
  it('adaptiveAvgPool2d over windows of 90000 values', async () => {
    for (const c of [1, 2]) {
      const n = c * 300 * 300;
      const values = Array.from({ length: n }, (_, i) => 180 + ((i * 7919) % 76));
      const x = qtensor(values, [1, c, 300, 300], 'quint8', device, 0.02, 3);
      const y = Q.adaptiveAvgPool2d(x, 1);
      const want = Array.from({ length: c }, (_, ch) => values.slice(ch * 90000, (ch + 1) * 90000).reduce((a, b) => a + b, 0) / 90000);
      const got = await ints(y);
      got.forEach((v, ch) => expect(Math.abs(v - want[ch]!), `channel ${ch}: got ${v}, mean ${want[ch]}`).toBeLessThanOrEqual(0.5 + 1e-9));
      expect(got).toEqual(new Array(c).fill(218));
      x.dispose();
      y.dispose();
    }
  });

  // Resampling: nearest copies integers (exact); bilinear blends them in float32 (1 unit at ties).
  it('interpolate nearest and bilinear', async () => {
    const arb = fc.tuple(qdtype, dims).chain(([d, s]) => fc.record({
      d: fc.constant(d), s: fc.constant(s), v: qvalues(d, s.n * s.c * s.h * s.w),
      size: fc.tuple(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 12 })), alignCorners: fc.boolean(),
    }));
    await fc.assert(fc.asyncProperty(arb, async ({ d, s, v, size, alignCorners }) => {
      const shape = [s.n, s.c, s.h, s.w];
      const x = qtensor(v.q, shape, d, device, v.scale, v.zp);
      const near = Q.interpolate(x, { size, mode: 'nearest' });
      expect(await ints(near)).toEqual(Array.from(interpolateRef(ref(shape, v.q), size, [null, null], 'nearest', false, 'float32').data));
      const bil = Q.interpolate(x, { size, mode: 'bilinear', alignCorners });
      const want = interpolateRef(ref(shape, v.q), size, [null, null], 'bilinear', alignCorners, 'float32');
      expectNear(await ints(bil), Array.from(want.data, (b) => saturate(v.zp + roundHalfEven(b - v.zp), d)), 1, `bilinear ${size} ${alignCorners}`);
      for (const t of [x, near, bil]) t.dispose();
    }), runs(20));
  });

  // Activations: PyTorch's formula in float64 on the dequantised value, quantised with the output's
  // parameters; float32 rounding (and exp) can move a value across a half (1 unit).
  it('activations', async () => {
    type Act = { name: string; run: (x: QuantizedTensor, s: number, z: number, a: number, b: number) => QuantizedTensor; f: (x: number, a: number, b: number) => number; own?: 'input' | 'hardsigmoid' };
    const acts: Act[] = [
      { name: 'hardswish', run: (x, scale, zeroPoint) => Q.hardswish(x, { scale, zeroPoint }), f: (x) => (x * Math.min(Math.max(x + 3, 0), 6)) / 6 },
      { name: 'hardsigmoid', run: (x) => Q.hardsigmoid(x), f: (x) => Math.min(Math.max(x + 3, 0), 6) / 6, own: 'hardsigmoid' },
      { name: 'elu', run: (x, scale, zeroPoint, alpha) => Q.elu(x, { scale, zeroPoint, alpha }), f: (x, a) => (x > 0 ? x : a * Math.expm1(x)) },
      { name: 'celu', run: (x, scale, zeroPoint, alpha) => Q.celu(x, { scale, zeroPoint, alpha }), f: (x, a) => (x > 0 ? x : a * Math.expm1(x / a)) },
      { name: 'leakyRelu', run: (x, scale, zeroPoint, slope) => Q.leakyRelu(x, { negativeSlope: slope, scale, zeroPoint }), f: (x, a) => (x > 0 ? x : a * x) },
      { name: 'leakyRelu (input grid)', run: (x, _s, _z, slope) => Q.leakyRelu(x, { negativeSlope: slope }), f: (x, a) => (x > 0 ? x : a * x), own: 'input' },
      { name: 'threshold', run: (x, _s, _z, threshold, value) => Q.threshold(x, { threshold, value }), f: (x, t, v) => (x > Math.fround(t) ? x : Math.fround(v)), own: 'input' },
      { name: 'clamp', run: (x, _s, _z, a, b) => Q.clamp(x, { min: Math.min(a, b), max: Math.max(a, b) }), f: (x, a, b) => Math.min(Math.max(x, Math.min(a, b)), Math.max(a, b)), own: 'input' },
      { name: 'hardtanh', run: (x) => Q.hardtanh(x), f: (x) => Math.min(Math.max(x, -1), 1), own: 'input' },
    ];
    const arb = fc.tuple(qdtype, fc.integer({ min: 1, max: 300 })).chain(([d, n]) => fc.record({
      d: fc.constant(d), v: qvalues(d, n), act: fc.constantFrom(...acts),
      so: fc.double({ min: 1e-3, max: 0.5, noNaN: true }), zo: fc.integer({ min: RANGE[d][0], max: RANGE[d][1] }),
      a: fc.double({ min: 0.05, max: 2, noNaN: true }), b: fc.double({ min: -3, max: 3, noNaN: true }),
    }));
    await fc.assert(fc.asyncProperty(arb, async ({ d, v, act, so, zo, a, b }) => {
      const x = qtensor(v.q, [v.q.length], d, device, v.scale, v.zp);
      const y = act.run(x, so, zo, a, b);
      const [s, z] = act.own === 'input' ? [v.scale, v.zp] : act.own === 'hardsigmoid' ? [1 / 256, d === 'quint8' ? 0 : -128] : [so, zo];
      expect([y.qScale(), y.qZeroPoint(), y.dtype]).toEqual([s, z, d]);
      const want = v.q.map((q) => saturate(z + roundHalfEven(act.f(Math.fround(v.scale) * (q - v.zp), a, b) / Math.fround(s)), d));
      expectNear(await ints(y), want, 1, act.name);
      x.dispose();
      y.dispose();
    }), runs(40));
  });
});

describe('quant functional ops: PyTorch positional arguments', () => {
  it('give the same results as the options object', async () => {
    const values = Array.from({ length: 64 }, (_, i) => (i * 37) % 256);
    const x = qtensor(values, [64], 'quint8', 'cpu', 0.05, 120);
    const pairs: [string, QuantizedTensor, QuantizedTensor][] = [
      ['clamp', Q.clamp(x, -0.7, 1.3), Q.clamp(x, { min: -0.7, max: 1.3 })],
      ['hardtanh', Q.hardtanh(x, -0.5, 0.5), Q.hardtanh(x, { minVal: -0.5, maxVal: 0.5 })],
      ['threshold', Q.threshold(x, 0.3, -1), Q.threshold(x, { threshold: 0.3, value: -1 })],
      ['leakyRelu', Q.leakyRelu(x, 0.2), Q.leakyRelu(x, { negativeSlope: 0.2 })],
      ['hardswish', Q.hardswish(x, 0.03, 10), Q.hardswish(x, { scale: 0.03, zeroPoint: 10 })],
      ['elu', Q.elu(x, 0.04, 100, 0.7), Q.elu(x, { scale: 0.04, zeroPoint: 100, alpha: 0.7 })],
      ['celu', Q.celu(x, 0.04, 100, 0.7), Q.celu(x, { scale: 0.04, zeroPoint: 100, alpha: 0.7 })],
    ];
    for (const [name, a, b] of pairs) {
      expect([a.qScale(), a.qZeroPoint()], name).toEqual([b.qScale(), b.qZeroPoint()]);
      const got = await ints(a);
      expect(got, name).toEqual(await ints(b));
      expect(new Set(got).size, `${name} is not constant`).toBeGreaterThan(2);
      a.dispose();
      b.dispose();
    }
    x.dispose();
  });
});

describe('quant functional ops: bad input', () => {
  it('throws a SinterError naming the op', () => {
    const x = qtensor([1, 2, 3, 4], [1, 1, 2, 2], 'quint8', 'cpu', 0.1, 2);
    const perChannel = new sn.QuantizedTensor(ints8([1, 2, 3, 4], [1, 2, 1, 2], 'uint8', 'cpu'), 'quint8', { scales: Float64Array.of(0.1, 0.2), zeroPoints: Int32Array.of(0, 1), axis: 1 });
    const plain = sn.tensor([1, 2, 3, 4]).reshape([1, 1, 2, 2]) as unknown as QuantizedTensor;
    const cases: [string, () => unknown, RegExp][] = [
      ['quant.avgPool2d', () => Q.avgPool2d(plain, 2), /must be a quantised tensor/],
      ['quant.avgPool2d', () => Q.avgPool2d(x, [257, 257]), /65793 taps/],
      ['quant.adaptiveAvgPool2d', () => Q.adaptiveAvgPool2d(perChannel, 1), /per channel/],
      ['quant.hardswish', () => Q.hardswish(x, { scale: 0, zeroPoint: 0 }), /output scale/],
      ['quant.elu', () => Q.elu(x, { scale: 0.1, zeroPoint: 300 }), /zero point/],
      ['quant.interpolate', () => Q.interpolate(x, { size: [3, 3], mode: 'linear' }), /'nearest' and 'bilinear'/],
      ['quant.conv1d', () => Q.conv1d(qtensor([1, 2, 3], [1, 1, 3], 'qint8', 'cpu', 0.1, 0), qtensor([1], [1, 1, 1], 'qint8', 'cpu', 0.1, 0)), /quint8 activations/],
      ['quant.conv1d', () => Q.conv1d(qtensor([1, 2, 3], [1, 1, 3], 'quint8', 'cpu', 0.1, 0), qtensor([1], [1, 1, 1], 'quint8', 'cpu', 0.1, 0)), /qint8 weights/],
      ['quant.threshold', () => Q.threshold(x, { threshold: 0 } as never), /value must be a number/],
      ['quant.clamp', () => Q.clamp(perChannel, { min: 0, max: 1 }), /per channel/],
    ];
    for (const [op, run, message] of cases) {
      let err: unknown;
      try {
        run();
      } catch (e) {
        err = e;
      }
      expect(err, op).toBeInstanceOf(SinterError);
      expect((err as Error).message, op).toContain(op);
      expect((err as Error).message, op).toMatch(message);
    }
    x.dispose();
    perChannel.dispose();
    plain.dispose();
  });
});
