import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { type Ref, float16Ref, ref } from './reference/core.js';
import { conv2dRef } from './reference/conv.js';
import { type ProductRef, linearRef, matmulRef } from './reference/linalg.js';
import { WITH_WEBGPU } from './helpers.js';

/** Every layer kind: convs are opt-in for weight-only quantisation (its default follows MatMulNBits). */
const ALL_KINDS = ['conv2d', 'linear', 'matmul'] as const;

// Dynamic and weight-only quantisation on the traced graph (src/quant/graph.ts) of functions of tensors and models
// from loadOnnx. Each result is checked against a float64 emulation written here from the definitions (independent
// of src/): weights quantised ahead of time (int8 symmetric per output channel; 8/4-bit blocks along K), activations
// fake-quantised per call from their own min/max (quint8 over [min(x, 0), max(x, 0)]), the layer computed in float64
// on the dequantised values. The integer GEMM sums exactly and rounds once (one float32 multiplier, the bias); the
// weight-only matmul sums each block in float32: so a single layer agrees with its emulation to 2e-6 of Σ|x·w|.

const f32 = Math.fround;
function roundHalfEven(v: number): number {
  const f = Math.floor(v), r = v - f;
  return r > 0.5 ? f + 1 : r < 0.5 ? f : f % 2 === 0 ? f : f + 1;
}
const clampTo = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));

/** Activations fake-quantised as quantize_dynamic does per call: quint8, range widened to include 0, float32 parameters. */
function fakeQuantAct(x: Ref): Ref {
  let lo = 0, hi = 0;
  const xs = x.data.map(f32);
  for (const v of xs) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const scale = Math.max(f32(f32(hi - lo) / 255), 2 ** -23);
  const zp = clampTo(-roundHalfEven(f32(lo / scale)), 0, 255);
  const inv = f32(1 / scale);
  return ref(x.shape, xs.map((v) => (clampTo(roundHalfEven(f32(v * inv)) + zp, 0, 255) - zp) * scale));
}

/** Rows of w [N, …] quantised to int8 symmetric per row (scale max|w|/127.5) and dequantised. */
function fakeQuantRows(w: Ref): Ref {
  const n = w.shape[0]!, k = w.data.length / n;
  const out = new Float64Array(w.data.length);
  for (let r = 0; r < n; r++) {
    const row = w.data.subarray(r * k, (r + 1) * k);
    const absMax = Math.max(0, ...row.map((v) => Math.abs(v)));
    const scale = Math.max(f32(absMax / 127.5), 2 ** -23), inv = f32(1 / scale);
    row.forEach((v, j) => (out[r * k + j] = clampTo(roundHalfEven(f32(v * inv)), -128, 127) * scale));
  }
  return ref(w.shape, out);
}

/** Rows of w [N, …] (K values each, zero-padded to whole blocks) in `bits`-bit blocks of `bs` (MatMulNBits), dequantised. */
function fakeQuantBlocks(w: Ref, bits: number, bs: number, symmetric: boolean): Ref {
  const n = w.shape[0]!, k = w.data.length / n;
  const levels = (1 << bits) - 1, mid = 1 << (bits - 1);
  const out = new Float64Array(w.data.length);
  for (let r = 0; r < n; r++) {
    for (let b = 0; b * bs < k; b++) {
      const vals = Array.from(w.data.subarray(r * k + b * bs, r * k + Math.min(k, (b + 1) * bs)));
      const lo = Math.min(0, ...vals), hi = Math.max(0, ...vals);
      const scale = Math.max(symmetric ? f32(Math.max(-lo, hi) / (mid - 1)) : f32(f32(hi - lo) / levels), 2 ** -23);
      const zp = symmetric ? mid : clampTo(roundHalfEven(-f32(lo / scale)), 0, levels);
      const inv = f32(1 / scale);
      vals.forEach((v, j) => {
        const q = clampTo(clampTo(roundHalfEven(f32(v * inv)) + zp, 0, 255), 0, levels);
        out[r * k + b * bs + j] = scale * (q - zp);
      });
    }
  }
  return ref(w.shape, out);
}

const refOf = async (t: sn.Tensor): Promise<Ref> => ref(t.shape, await t.data());
const transposed = (w: Ref): Ref => {
  const [r, c] = w.shape as [number, number];
  return ref([c, r], Array.from({ length: r * c }, (_, i) => w.data[(i % r) * c + Math.floor(i / r)]!));
};

/** Expects |got − emulation| ≤ 2e-6·Σ|x·w| + 1e-6 per element, and that quantisation shows: the float result is farther off. */
function expectEmulated(got: ArrayLike<number>, emu: ProductRef, float: ArrayLike<number>, what: string): void {
  let worst = 0, floatOff = 0;
  emu.out.data.forEach((v, i) => {
    const tol = 2e-6 * emu.mag.data[i]! + 1e-6;
    worst = Math.max(worst, Math.abs(got[i]! - v) / tol);
    floatOff = Math.max(floatOff, Math.abs(float[i]! - v) / tol);
  });
  expect(worst, what).toBeLessThanOrEqual(1);
  expect(floatOff, what).toBeGreaterThan(10);
}

const kernelNames = (q: sn.quant.QuantizedGraph) => q.report().kernels.map((k) => k.name);
/** Bytes of a storage of `bytes` on `device`: WebGPU buffers hold whole 4-byte words. */
const stored = (device: sn.DeviceName, bytes: number) => (device === 'webgpu' ? Math.ceil(bytes / 4) * 4 : bytes);

interface Layer {
  name: string;
  kind: sn.quant.LayerKind;
  x: () => sn.Tensor;
  w: () => sn.Tensor;
  b: () => sn.Tensor | null;
  fn: (w: sn.Tensor, b: sn.Tensor | null) => (x: sn.Tensor) => sn.Tensor;
  /** The float64 layer on (dequantised) operands; weights in the op's own layout. */
  emulate: (x: Ref, w: Ref, b: Ref | null) => ProductRef;
  /** The weight as rows [N, K] (matmul's [K, N] transposed), and back. */
  rows: (w: Ref) => Ref;
  unrows: (w: Ref) => Ref;
}

const LAYERS = (device: sn.DeviceName): Layer[] => [
  {
    name: 'conv2d_0', kind: 'conv2d',
    x: () => sn.randn([2, 4, 9, 7], { seed: 1, device }),
    w: () => sn.randn([6, 2, 3, 3], { seed: 2, device }).mul(0.4),
    b: () => sn.randn([6], { seed: 3, device }),
    fn: (w, b) => (x) => sn.conv2d(x, w, b, { stride: [2, 1], padding: 1, groups: 2 }),
    emulate: (x, w, b) => conv2dRef(x, w, b, { stride: [2, 1], padding: [1, 1], dilation: [1, 1], groups: 2 }),
    rows: (w) => w, unrows: (w) => w,
  },
  {
    name: 'linear_0', kind: 'linear',
    x: () => sn.randn([3, 5, 24], { seed: 4, device }).mul(3),
    w: () => sn.randn([10, 24], { seed: 5, device }),
    b: () => sn.randn([10], { seed: 6, device }),
    fn: (w, b) => (x) => sn.linear(x, w, b ?? undefined),
    emulate: (x, w, b) => linearRef(x, w, b),
    rows: (w) => w, unrows: (w) => w,
  },
  {
    name: 'matmul_0', kind: 'matmul',
    x: () => sn.relu(sn.randn([7, 32], { seed: 7, device })),
    w: () => sn.randn([32, 12], { seed: 8, device }).mul(0.1),
    b: () => null,
    fn: (w) => (x) => sn.matmul(x, w),
    emulate: (x, w) => matmulRef(x, w),
    rows: transposed, unrows: transposed,
  },
];

describe.each(WITH_WEBGPU)('dynamic and weight-only quantisation of functions on %s', (device) => {
  it('quantizeDynamic: conv2d (grouped, strided), linear (3-d input) and matmul each equal the float64 emulation; int8 GEMMs in the plan', async () => {
    for (const layer of LAYERS(device)) {
      const x = layer.x(), w = layer.w(), b = layer.b();
      const fn = layer.fn(w, b);
      const q = sn.quant.quantizeDynamic(fn, { exampleInputs: x });
      expect(q.mode).toBe('dynamic');
      expect(q.quantizedLayers).toEqual([layer.name]);
      const got = await (q(x) as sn.Tensor).data();
      const wRef = await refOf(w);
      const emu = layer.emulate(fakeQuantAct(await refOf(x)), layer.unrows(fakeQuantRows(layer.rows(wRef))), b ? await refOf(b) : null);
      expectEmulated(got, emu, await fn(x).data(), layer.name);
      expect(kernelNames(q).filter((k) => k.includes('qgemm'))).toHaveLength(1);
      // Stored: int8 weights, float32 scales and bias (zeros when the layer has none), one int32 zero point.
      const n = wRef.shape[layer.kind === 'matmul' ? 1 : 0]!, k = wRef.data.length / n;
      expect(q.modelBytes()).toBe(stored(device, n * k) + 4 * n + 4 * n + 4);
      q.dispose();
      for (const t of [x, w, b]) t?.dispose();
    }
  });

  it('quantizeWeights: 4-bit symmetric and 8-bit asymmetric blocks equal the float64 emulation; linear/matmul dequantise inside the matmul, conv2d pads K to whole blocks; bytes are the packed size', async () => {
    const configs = [{ bits: 4, blockSize: 16, symmetric: true }, { bits: 8, blockSize: 8, symmetric: false }] as const;
    for (const cfg of configs) {
      for (const layer of LAYERS(device)) {
        const x = layer.x(), w = layer.w(), b = layer.b();
        const fn = layer.fn(w, b);
        // Convs are opt-in (the default follows MatMulNBits: linear/matmul only).
        const q = sn.quant.quantizeWeights(fn, { ...cfg, exampleInputs: x, ...(layer.kind === 'conv2d' && { layers: ['conv2d'] as const }) });
        expect(q.mode).toBe('weights');
        const got = await (q(x) as sn.Tensor).data();
        const wRef = await refOf(w);
        const emu = layer.emulate(await refOf(x), layer.unrows(fakeQuantBlocks(layer.rows(wRef), cfg.bits, cfg.blockSize, cfg.symmetric)), b ? await refOf(b) : null);
        expectEmulated(got, emu, await fn(x).data(), `${layer.name} ${JSON.stringify(cfg)}`);
        // conv2d: K = 2·3·3 = 18 → 2 blocks of 16 (32 weights a row) or 3 blocks of 8 (24).
        const n = wRef.shape[layer.kind === 'matmul' ? 1 : 0]!, k = wRef.data.length / n;
        const blocks = Math.ceil(k / cfg.blockSize);
        const packed = (n * blocks * cfg.blockSize * cfg.bits) / 8;
        expect(q.modelBytes()).toBe(stored(device, packed) + 4 * n * blocks + (cfg.symmetric ? 0 : stored(device, n * blocks)) + (b ? 4 * n : 0));
        // The fused kernel where blocks tile K exactly (matmul 32 = 2·16 = 4·8; linear 24 = 3·8), else the layer's own
        // op on the weight dequantised for the call (conv2d; linear 24 in blocks of 16).
        const fused = layer.kind !== 'conv2d' && k % cfg.blockSize === 0;
        const kernels = kernelNames(q);
        expect(kernels.filter((kn) => kn.includes('weightOnlyMatmul')), kernels.join()).toHaveLength(fused ? 1 : 0);
        if (!fused) expect(kernels.some((kn) => kn.includes(layer.kind)), kernels.join()).toBe(true);
        q.dispose();
        for (const t of [x, w, b]) t?.dispose();
      }
    }
  });

  it('quantizeWeights takes linear/matmul weights by default (as MatMulNBits and q4) and convs only when asked', async () => {
    const model = new sn.nn.Sequential(new sn.nn.Conv2d(3, 8, 3, { seed: 40 }), new sn.nn.Flatten(), new sn.nn.Linear(8 * 4 * 4, 5, { seed: 41 })).to(device).eval();
    const x = sn.randn([2, 3, 6, 6], { seed: 42, device });
    const byDefault = sn.quant.quantizeWeights(model, { bits: 4, blockSize: 16, exampleInputs: x });
    expect(byDefault.quantizedLayers).toEqual(['2']);
    byDefault.dispose();
    const withConvs = sn.quant.quantizeWeights(model, { bits: 4, blockSize: 16, exampleInputs: x, layers: ['conv2d', 'linear', 'matmul'] });
    expect([...withConvs.quantizedLayers].sort()).toEqual(['0', '2']);
    withConvs.dispose();
    // A model of convs only names them and how to opt in.
    const convs = new sn.nn.Sequential(new sn.nn.Conv2d(3, 4, 3, { seed: 43 })).to(device).eval();
    expect(() => sn.quant.quantizeWeights(convs, { exampleInputs: x })).toThrow(/quantizeWeights.*found no linear, matmul .*\(it has 1 conv2d: 0\)/);
    for (const t of [model, convs]) t.dispose();
    x.dispose();
  });

  it('equals the Module path (layer swap) for the same Linear, dynamic and weight-only, to the bit', async () => {
    const x = sn.randn([4, 6, 64], { seed: 30, device });
    const make = () => new sn.nn.Linear(64, 24, { seed: 31 }).to(device).eval();
    const cases = [
      [() => sn.quant.quantizeDynamic(make()), (m: sn.nn.Module) => sn.quant.quantizeDynamic(m, { exampleInputs: x })],
      [() => sn.quant.quantizeWeights(make(), { bits: 4, blockSize: 32 }), (m: sn.nn.Module) => sn.quant.quantizeWeights(m, { bits: 4, blockSize: 32, exampleInputs: x })],
    ] as const;
    for (const [swap, graph] of cases) {
      const eager = swap();
      const want = await eager.forward(x).data();
      const linear = make();
      const q = graph(linear);
      const viaModule = await (q(x) as sn.Tensor).data();
      // The same layer written as a function of tensors.
      const w = linear.weight, b = linear.bias!;
      const qf = (graph as (m: unknown) => sn.quant.QuantizedGraph)((t: sn.Tensor) => sn.linear(t, w, b));
      const viaFunction = await (qf(x) as sn.Tensor).data();
      expect(Array.from(viaModule)).toEqual(Array.from(want));
      expect(Array.from(viaFunction)).toEqual(Array.from(want));
      for (const o of [q, qf]) o.dispose();
      linear.dispose();
      eager.dispose();
    }
    x.dispose();
  });
});

const DIR = path.join(path.dirname(new URL(import.meta.url).pathname), 'fixtures/quant');
interface Flat {
  shape: number[];
  data: number[];
}
interface CnnFixture {
  inputs: { x: Flat };
  weights: Record<'w1' | 'b1' | 'w2' | 'b2' | 'w3' | 'b3', Flat>;
  expected: { y: Flat };
}

/** float_cnn's layers in float64 on (fake-)quantised operands: conv → relu → flatten → gemm → relu → matmul + bias. */
function emulateCnn(fx: CnnFixture, act: (x: Ref) => Ref, rows: (w: Ref) => Ref): Ref {
  const r = (f: Flat) => ref(f.shape, f.data);
  const relu = (v: Ref) => ref(v.shape, v.data.map((e) => Math.max(0, e)));
  const W = fx.weights;
  const c = relu(conv2dRef(act(r(fx.inputs.x)), rows(r(W.w1)), r(W.b1), { stride: [2, 2], padding: [1, 1], dilation: [1, 1], groups: 1 }).out);
  const g = relu(linearRef(act(ref([2, 96], c.data)), rows(r(W.w2)), r(W.b2)).out);
  const m = matmulRef(act(g), transposed(rows(transposed(r(W.w3))))).out;
  return ref(m.shape, m.data.map((v, i) => v + W.b3.data[i % 16]!));
}

describe.each(WITH_WEBGPU)('dynamic and weight-only quantisation of an ONNX model (float_cnn) on %s', (device) => {
  const load = async () => {
    const fx = JSON.parse(await readFile(path.join(DIR, 'float_cnn.json'), 'utf8')) as CnnFixture;
    const bytes = new Uint8Array(await readFile(path.join(DIR, 'float_cnn.onnx')));
    return { fx, bytes, x: sn.tensor(fx.inputs.x.data, { device }).reshape(fx.inputs.x.shape) };
  };
  // The chained layers see their inputs' ranges through float32 (the plan) or float64 (the emulation): a value on a
  // rounding boundary may land one step apart, so the whole model is held to 1e-3 of the output's largest magnitude.
  const expectModel = (got: ArrayLike<number>, emu: Ref, float: ArrayLike<number>) => {
    const tol = 1e-3 * Math.max(...emu.data.map(Math.abs));
    const err = Math.max(...emu.data.map((v, i) => Math.abs(got[i]! - v)));
    const floatErr = Math.max(...emu.data.map((v, i) => Math.abs(float[i]! - v)));
    expect(err).toBeLessThanOrEqual(tol);
    expect(floatErr).toBeGreaterThan(5 * tol);
  };

  it('quantizeDynamic: feeds → outputs by name, int8 conv/gemm/matmul, equals the float64 emulation; memory and compare report the packed bytes', async () => {
    const { fx, bytes, x } = await load();
    const before = sn.memory().bytes;
    const model = await sn.loadOnnx(bytes, { device });
    const float = (await model.run({ x })).y!;
    const floatValues = await float.data();
    fx.expected.y.data.forEach((v, i) => expect(Math.abs(floatValues[i]! - v)).toBeLessThanOrEqual(1e-4 * (1 + Math.abs(v))));
    const q = sn.quant.quantizeDynamic(model, { exampleInputs: x });
    expect(q.quantizedLayers).toHaveLength(3);
    const report = await sn.quant.compare(model, q, [x]);
    expect(report.quantizedBytes).toBe(q.modelBytes());
    // int8 weights and a float32 scale and bias per output channel (zeros for the MatMul), one int32 zero point per
    // layer; and the float Add's bias.
    const packed = (n: number, k: number) => stored(device, n * k) + 8 * n + 4;
    expect(q.modelBytes()).toBe(packed(6, 27) + packed(32, 96) + packed(16, 32) + 4 * 16);
    expect(report.referenceBytes).toBe(4 * (6 * 27 + 6 + 32 * 96 + 32 + 32 * 16 + 16));
    const out = await q.run({ x });
    expect(Object.keys(out)).toEqual(['y']);
    expectModel(await out.y!.data(), emulateCnn(fx, fakeQuantAct, fakeQuantRows), floatValues);
    expect(kernelNames(q).filter((k) => k.includes('qgemm'))).toHaveLength(3);
    // With the model gone, what stays is the quantised program's own: its packed layers (the plan's buffers aside).
    model.dispose();
    for (const t of [float, out.y!]) t.dispose();
    expect(sn.memory().bytes - before).toBeGreaterThanOrEqual(q.modelBytes());
    q.dispose();
    expect(sn.memory().bytes - before).toBe(0);
    x.dispose();
  });

  it('quantizeWeights (4-bit, blocks of 16): equals the float64 emulation; bytes are the packed size before and after the model is freed', async () => {
    const { fx, bytes, x } = await load();
    const before = sn.memory().bytes;
    const model = await sn.loadOnnx(bytes, { device });
    const float = (await model.run({ x })).y!;
    const floatValues = await float.data();
    float.dispose();
    const q = sn.quant.quantizeWeights(model, { bits: 4, blockSize: 16, exampleInputs: x, layers: ALL_KINDS });
    model.dispose();
    // Before the first call (no plan yet) the program holds exactly its packed layers: K 27 → 2 blocks, 96 → 6, 32 → 2.
    // The Conv's and Gemm's biases are theirs; the MatMul has none, and the float Add reads its own.
    const packed = (n: number, blocks: number) => n * blocks * 8 + 4 * n * blocks;
    expect(q.modelBytes()).toBe(packed(6, 2) + 4 * 6 + packed(32, 6) + 4 * 32 + packed(16, 2) + 4 * 16);
    expect(sn.memory().bytes - before).toBe(q.modelBytes());
    const out = (q(x) as Record<string, sn.Tensor>).y!;
    expectModel(await out.data(), emulateCnn(fx, (v) => v, (w) => fakeQuantBlocks(w, 4, 16, true)), floatValues);
    out.dispose();
    q.dispose();
    x.dispose();
  });
});

describe.each(WITH_WEBGPU)('dynamic and weight-only quantisation of an ONNX model loaded as float16 on %s', (device) => {
  it('quantises its float16 layers; float32 inputs and outputs by default (keepIoTypes), float16 ones without', async () => {
    const fx = JSON.parse(await readFile(path.join(DIR, 'float_cnn.json'), 'utf8')) as CnnFixture;
    const bytes = new Uint8Array(await readFile(path.join(DIR, 'float_cnn.onnx')));
    const x = sn.tensor(fx.inputs.x.data, { device }).reshape(fx.inputs.x.shape);
    // The emulation quantises the weights as the model holds them (float16) and rounds the input to float16; the plan
    // also rounds every activation to float16 (11 bits): 4e-3 of the output's largest magnitude.
    const half16 = (v: Ref) => ref(v.shape, v.data.map(float16Ref));
    const emu = emulateCnn(fx, half16, (w) => fakeQuantBlocks(half16(w), 4, 16, true));
    const peak = Math.max(...emu.data.map(Math.abs));
    const close = (got: ArrayLike<number>) => emu.data.forEach((v, i) => expect(Math.abs(got[i]! - v)).toBeLessThanOrEqual(4e-3 * peak));
    const kept = await sn.loadOnnx(bytes, { device, dtype: 'float16' });
    // The float16 model itself is farther off: the check sees the 4-bit weights.
    const plain = await (await kept.run({ x })).y!.data();
    expect(Math.max(...emu.data.map((v, i) => Math.abs(plain[i]! - v)))).toBeGreaterThan(3 * 4e-3 * peak);
    const q = sn.quant.quantizeWeights(kept, { bits: 4, blockSize: 16, exampleInputs: x, layers: ALL_KINDS });
    expect(q.quantizedLayers).toHaveLength(3);
    const y = (await q.run({ x })).y!;
    expect(y.dtype).toBe('float32');
    close(await y.data());
    const dyn = sn.quant.quantizeDynamic(kept, { exampleInputs: x });
    const yd = (await dyn.run({ x })).y!;
    expect(yd.dtype).toBe('float32');
    const emuDyn = emulateCnn(fx, (v) => fakeQuantAct(half16(v)), (w) => fakeQuantRows(half16(w)));
    const gotDyn = await yd.data();
    emuDyn.data.forEach((v, i) => expect(Math.abs(gotDyn[i]! - v)).toBeLessThanOrEqual(4e-3 * peak));
    expect(kernelNames(dyn).filter((k) => k.includes('qgemm'))).toHaveLength(3);
    const half = await sn.loadOnnx(bytes, { device, dtype: 'float16', keepIoTypes: false });
    const x16 = x.to('float16');
    const q16 = sn.quant.quantizeWeights(half, { bits: 4, blockSize: 16, exampleInputs: x16, layers: ALL_KINDS });
    const y16 = (await q16.run({ x: x16 })).y!;
    expect(y16.dtype).toBe('float16');
    close(await y16.data());
    for (const t of [q, dyn, q16, kept, half, x, x16]) t.dispose();
  });
});

describe('dynamic and weight-only quantisation: bad targets and options', () => {
  it('names the op and the problem', async () => {
    const x = sn.randn([2, 8], { seed: 1 });
    const w = sn.randn([8, 4], { seed: 2 });
    const noLayers = (t: sn.Tensor) => sn.softmax(sn.mul(t, w.sum()), -1);
    expect(() => sn.quant.quantizeDynamic(noLayers, { exampleInputs: x })).toThrow(/quantizeDynamic.*found no conv2d, linear, matmul with a constant float weight/);
    expect(() => sn.quant.quantizeWeights(noLayers, { exampleInputs: x })).toThrow(/quantizeWeights.*found no/);
    // A matmul of two inputs has no constant weight; one kind left out names what is there.
    expect(() => sn.quant.quantizeDynamic((a: sn.Tensor) => sn.matmul(a, w), { exampleInputs: x, layers: ['conv2d'] })).toThrow(/found no conv2d .*\(it has 1 matmul: matmul_0\)/);
    const fn = (t: sn.Tensor) => sn.matmul(t, w);
    const untyped = fn as unknown as sn.nn.Module;
    expect(() => sn.quant.quantizeDynamic(untyped)).toThrow(/quantizeDynamic.*exampleInputs/);
    expect(() => sn.quant.quantizeWeights(untyped)).toThrow(/quantizeWeights.*exampleInputs/);
    expect(() => sn.quant.quantizeDynamic(fn, { exampleInputs: x, dtype: 'quint8' as 'qint8' })).toThrow(/quantizeDynamic.*only dtype 'qint8'/);
    expect(() => sn.quant.quantizeDynamic(fn, { exampleInputs: x, layers: ['softmax' as 'linear'] })).toThrow(/quantizeDynamic.*layers may name.*"softmax"/);
    expect(() => sn.quant.quantizeWeights(fn, { exampleInputs: x, bits: 3 as 4 })).toThrow(/quantizeWeights.*bits must be 8 or 4, got 3/);
    expect(() => sn.quant.quantizeWeights(fn, { exampleInputs: x, blocksize: 16 } as unknown as sn.quant.GraphQuantizeOptions)).toThrow(/quantizeWeights.*unknown option 'blocksize'; the options are bits, blockSize/);
    expect(() => sn.quant.quantizeDynamic(fn, { exampleInput: x } as unknown as sn.quant.GraphQuantizeOptions)).toThrow(/quantizeDynamic.*unknown option 'exampleInput'/);
    expect(() => sn.quant.quantizeWeights(fn, { exampleInputs: x, blockSize: 0 })).toThrow(/quantizeWeights.*blockSize must be a positive integer/);
    expect(() => sn.quant.quantizeWeights(fn, { exampleInputs: x, bits: 4, blockSize: 5 })).toThrow(/quantizeWeights.*even for 4 bits, got 5/);
    expect(() => sn.quant.quantizeDynamic(42 as unknown as sn.nn.Module)).toThrow(/quantizeDynamic.*expects an nn.Module, a function of tensors or a model from loadOnnx, got number/);
    const q = sn.quant.quantizeDynamic(fn, { exampleInputs: x });
    const other = sn.randn([3, 8], { seed: 3 });
    expect(() => q(other)).toThrow(/input 0 is .*\[3, 8\].* prepared for float32\[2, 8\]/);
    await expect(q.run({ x })).rejects.toThrow(/run\(feeds\) is for ONNX models/);
    q.dispose();
    for (const t of [x, w, other]) t.dispose();
  });
});
