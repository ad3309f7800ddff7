import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import type { DeviceName, Tensor } from '../src/index.js';
import { SinterError } from '../src/errors.js';
import { opLabel } from '../src/jit/graph.js';
import { TOLERANCES, type TensorCaseOptions, makeTensor, propertyConfig, tensorCaseArb } from '../src/testing/index.js';
import type { WebGpuCaps } from '../src/kernels/wgsl/kernel.js';
import { WITH_WEBGPU, expectClose, withCaps } from './helpers.js';
import { type Ref, float16Ref, mapRef, ref, refOf } from './reference/core.js';
import { accumulationAtol, linearRef, matmulRef } from './reference/linalg.js';
import { conv2dRef } from './reference/conv.js';
import { layerNormRef } from './reference/norm.js';
import { reduceRef, softmaxRef, sumOf } from './reference/reduce.js';
import { TYPE, float, info, model, node, rawFloat } from './onnx-builder.js';

// FP16 (issue 10 item 6): float16 kernels against the float64 reference, with the adapter's own float16 path and
// with shader-f16 forced off (the packed fallback every adapter can run: SwiftShader's own path, so on this machine
// both variants run it; on a GPU with shader-f16 the first runs native f16 storage); module.half(); autocast's op
// classification, eager and traced; loadOnnx's float16 conversion on a small model (PP-OCR det: quant-fp16-det).

/** WebGPU runs each case with the adapter's caps and with shader-f16 forced off; the CPU has one path. */
const F16_PATHS = (device: DeviceName): [string, Partial<WebGpuCaps>][] => (device === 'webgpu' ? [['adapter f16 path', {}], ['shader-f16 forced off', { f16: false }]] : [['cpu', {}]]);
async function onPath(device: DeviceName, caps: Partial<WebGpuCaps>, fn: () => Promise<void>): Promise<void> {
  if (device === 'webgpu') await withCaps(caps, fn);
  else await fn();
}

const dim = fc.integer({ min: 1, max: 7 });
const f16 = (shape: number[], opts: TensorCaseOptions = {}) => tensorCaseArb(shape, { dtype: 'float16', ...opts });
/** float16 tolerance of the device, widened by a product's float32 summation bound. */
const productTol = (device: DeviceName, k: number, mag: Ref) => ({ atol: TOLERANCES[device].float16.atol + accumulationAtol(k, mag) });

describe.each(WITH_WEBGPU)('float16 kernels against the float64 reference on %s', (device) => {
  const runs = propertyConfig({ numRuns: device === 'webgpu' ? 2 : 12 });
  it.each(F16_PATHS(device))('matmul, linear and conv2d store float16 and accumulate in float32 (%s)', async (_, caps) => {
    await onPath(device, caps, async () => {
      const mm = fc.tuple(dim, dim, fc.integer({ min: 1, max: 40 })).chain(([m, n, k]) => fc.tuple(fc.constant(k), f16([m, k]), f16([k, n]), f16([n, k], { views: false }), f16([n])));
      await fc.assert(fc.asyncProperty(mm, async ([k, ca, cb, cw, cbias]) => {
        const [a, b, w, bias] = [ca, cb, cw, cbias].map((c) => makeTensor(c, device));
        const r = matmulRef(refOf(ca), refOf(cb));
        await expectClose(sn.matmul(a!, b!), r.out, { dtype: 'float16', tol: productTol(device, k, r.mag), what: 'matmul' });
        const l = linearRef(refOf(ca), refOf(cw), refOf(cbias));
        await expectClose(sn.linear(a!, w!, bias!), l.out, { dtype: 'float16', tol: productTol(device, k, l.mag), what: 'linear' });
      }), runs);
      const conv = fc.tuple(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 3, max: 8 }), fc.integer({ min: 1, max: 3 }))
        .chain(([c, o, h, kk]) => fc.tuple(fc.constant(c * kk * kk), f16([1, c, h, h + 1]), f16([o, c, kk, kk], { views: false }), f16([o])));
      await fc.assert(fc.asyncProperty(conv, async ([k, cx, cw, cb]) => {
        const [x, w, b] = [cx, cw, cb].map((c) => makeTensor(c, device));
        const r = conv2dRef(refOf(cx), refOf(cw), refOf(cb), { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 });
        await expectClose(sn.conv2d(x!, w!, b!, { padding: 1 }), r.out, { dtype: 'float16', tol: productTol(device, k, r.mag), what: 'conv2d' });
      }), runs);
    });
  });

  it.each(F16_PATHS(device))('elementwise, sum, softmax and layerNorm of float16 round once to float16 (%s)', async (_, caps) => {
    await onPath(device, caps, async () => {
      const arb = fc.tuple(dim, fc.integer({ min: 1, max: 33 })).chain(([m, n]) => fc.tuple(f16([m, n]), f16([n]), f16([m, n], { min: 0.05, max: 4 })));
      await fc.assert(fc.asyncProperty(arb, async ([cx, cy, cp]) => {
        const [x, y, p] = [cx, cy, cp].map((c) => makeTensor(c, device));
        const rx = refOf(cx), ry = refOf(cy), rp = refOf(cp);
        const tol = TOLERANCES[device].float16;
        await expectClose(x!.mul(y!).add(1.5), mapRef([rx, ry], (a, b) => a * b + 1.5), { dtype: 'float16', what: 'x·y + 1.5' });
        await expectClose(sn.exp(x!.mul(0.5)), mapRef([rx], (a) => Math.exp(float16Ref(a * 0.5))), { dtype: 'float16', what: 'exp' });
        await expectClose(sn.log(p!), mapRef([rp], Math.log), { dtype: 'float16', what: 'log' });
        const n = cx.shape[1]!;
        // A float16 sum is accumulated in float32 and rounded once: within the output's rounding and n float32 steps.
        const magnitude = reduceRef(mapRef([rx], Math.abs), [1], false, sumOf);
        await expectClose(sn.sum(x!, 1), reduceRef(rx, [1], false, sumOf), { dtype: 'float16', tol: { atol: tol.atol + accumulationAtol(n, magnitude) }, what: 'sum' });
        await expectClose(sn.softmax(x!, -1), softmaxRef(rx, 1, false), { dtype: 'float16', what: 'softmax' });
        await expectClose(sn.layerNorm(x!, [n]), layerNormRef(rx, 1, null, null, 1e-5), { dtype: 'float16', tol: { atol: 4 * tol.atol }, what: 'layerNorm' });
      }), runs);
    });
  });

  it.each(F16_PATHS(device))('a product, a sum and selections across float16\'s whole range round exactly, overflowing to ±∞ (%s)', async (_, caps) => {
    await onPath(device, caps, async () => {
      // A product of two float16 values is exact in float32 (22 significant bits), so every path rounds it once.
      const arb = fc.tuple(dim, dim).chain(([m, n]) => fc.tuple(f16([m, n], { min: -65504, max: 65504 }), f16([m, n], { min: -2, max: 2 })));
      await fc.assert(fc.asyncProperty(arb, async ([ca, cb]) => {
        const [a, b] = [ca, cb].map((c) => makeTensor(c, device));
        // Native f16 arithmetic (shader-f16) may flush subnormal results to zero, as WGSL allows: there
        // exact down to float16's smallest normal, 2⁻¹⁴.
        const native = device === 'webgpu' && caps.f16 !== false && sn.adapterInfo()?.features.shaderF16 === true;
        const exact = { dtype: 'float16' as const, tol: { rtol: 0, atol: native ? 2 ** -14 : 0 } };
        await expectClose(a!.mul(b!), mapRef([refOf(ca), refOf(cb)], (x, y) => float16Ref(x * y)), { ...exact, what: 'a·b' });
        // Sums too (f32 holds a sum of two float16 values closely enough never to round it differently),
        // and max/min/clamp/where/compare/relu select exact values: in f16 on shader-f16 adapters, widened elsewhere.
        await expectClose(a!.add(b!), mapRef([refOf(ca), refOf(cb)], (x, y) => float16Ref(x + y)), { ...exact, what: 'a + b' });
        await expectClose(a!.sub(b!), mapRef([refOf(ca), refOf(cb)], (x, y) => float16Ref(x - y)), { ...exact, what: 'a − b' });
        await expectClose(sn.minimum(sn.maximum(a!, b!), 1000).clamp(-1.5, null), mapRef([refOf(ca), refOf(cb)], (x, y) => Math.max(Math.min(Math.max(x, y), 1000), -1.5)), { ...exact, what: 'clamp(min(max(a, b), 1000), −1.5)' });
        await expectClose(sn.where(sn.gt(a!, b!), sn.relu(a!.neg()), b!), mapRef([refOf(ca), refOf(cb)], (x, y) => (x > y ? Math.max(-x, 0) : y)), { ...exact, what: 'where(a > b, relu(−a), b)' });
      }), runs);
    });
  });
});

describe.each(WITH_WEBGPU)('module.half() on %s', (device) => {
  it('stores floating parameters and buffers as float16 (integer buffers stay), runs in float16, and .float() brings float32 back', async () => {
    sn.manualSeed(3);
    const net = new sn.nn.Sequential(new sn.nn.Conv2d(3, 4, 3, { padding: 1 }), new sn.nn.BatchNorm2d(4), new sn.nn.ReLU(), new sn.nn.Flatten(), new sn.nn.Linear(4 * 25, 5)).eval();
    if (device !== 'cpu') await net.toDevice(device);
    const before = Object.fromEntries(await Promise.all(Object.entries(net.stateDict()).map(async ([k, t]) => [k, { dtype: t.dtype, data: await t.data() }] as const)));
    const x = sn.randn([2, 3, 5, 5], { seed: 9, device });
    const want = await net.forward(x).data();
    const used = sn.memory().bytes;
    expect(net.half()).toBe(net);
    const state = net.stateDict();
    for (const [k, t] of Object.entries(state)) expect(t.dtype, k).toBe(before[k]!.dtype === 'float32' ? 'float16' : before[k]!.dtype);
    expect(state['1.num_batches_tracked']!.dtype).toBe('int32');
    // Each float parameter and buffer now takes 2 bytes a value instead of 4, as binary16 on both devices (WebGPU
    // buffers are whole 32-bit words).
    const stored = (n: number) => (device === 'webgpu' ? Math.ceil(n / 2) * 4 : n * 2);
    const saved = Object.values(before).filter((b) => b.dtype === 'float32').reduce((s, b) => s + 4 * b.data.length - stored(b.data.length), 0);
    expect(used - sn.memory().bytes).toBe(saved);
    for (const p of net.parameters()) expect(p instanceof sn.nn.Parameter).toBe(true);
    const y = net.forward(x.to('float16'));
    expect(y.dtype).toBe('float16');
    // Float16 weights and activations: within a few float16 roundings of the float32 network, relative to its scale.
    const scale = Math.max(...want.map(Math.abs));
    const got = await y.data();
    for (let i = 0; i < want.length; i++) expect(Math.abs(got[i]! - want[i]!), `output ${i}`).toBeLessThan(1e-2 * scale);
    net.float();
    for (const [k, t] of Object.entries(net.stateDict())) {
      expect(t.dtype, k).toBe(before[k]!.dtype);
      // Back to float32: each value is its float16 rounding.
      expect(Array.from(await t.data()), k).toEqual(Array.from(before[k]!.data, (v) => (before[k]!.dtype === 'float32' ? float16Ref(v) : v)));
    }
    expect(net.to('float16')).toBe(net);
    expect(net.parameters().every((p) => p.dtype === 'float16')).toBe(true);
    net.dispose();
  });
});

describe.each(WITH_WEBGPU)('autocast on %s', (device) => {
  const make = () => {
    sn.manualSeed(5);
    return {
      x: sn.randn([3, 8], { device }), w: sn.randn([5, 8], { device }), b: sn.randn([5], { device }),
      img: sn.randn([1, 2, 5, 5], { device }), k: sn.randn([3, 2, 3, 3], { device }), h: sn.randn([3, 8], { device }).to('float16'),
      b3: sn.randn([2, 3, 4], { device }), c3: sn.randn([2, 4, 3], { device }),
    };
  };
  /** Each op's output dtype, from float32 inputs (and one float16 `h`). */
  const dtypes = ({ x, w, b, img, k, h, b3, c3 }: ReturnType<typeof make>) => ({
    // lower precision
    matmul: sn.matmul(x, w.t()).dtype, linear: sn.linear(x, w, b).dtype, conv2d: sn.conv2d(img, k).dtype, bmm: sn.bmm(b3, c3).dtype,
    addmm: sn.addmm(b, x, w.t()).dtype, baddbmm: b3.matmul(c3).baddbmm(b3, c3).dtype,
    // float32
    softmax: sn.softmax(h, -1).dtype, logSoftmax: sn.logSoftmax(h, -1).dtype, layerNorm: sn.layerNorm(h, [8]).dtype, exp: sn.exp(h).dtype,
    log: sn.log(h.abs()).dtype, pow: sn.pow(h, 2).dtype, sum: sn.sum(h).dtype, cumsum: sn.cumsum(h, 1).dtype,
    groupNorm: sn.groupNorm(h.reshape([3, 4, 2]), 2).dtype,
    // as called: their inputs' dtype, the widest when mixed
    relu: sn.relu(h).dtype, mean: sn.mean(h).dtype, add: h.add(h).dtype, addMixed: h.add(x).dtype, cat: sn.cat([h, x]).dtype, amax: sn.amax(h, 1).dtype,
  });
  const UNDER_AUTOCAST = {
    matmul: 'float16', linear: 'float16', conv2d: 'float16', bmm: 'float16', addmm: 'float16', baddbmm: 'float16',
    softmax: 'float32', logSoftmax: 'float32', layerNorm: 'float32', exp: 'float32', log: 'float32', pow: 'float32', sum: 'float32', cumsum: 'float32', groupNorm: 'float32',
    relu: 'float16', mean: 'float16', add: 'float16', addMixed: 'float32', cat: 'float32', amax: 'float16',
  };

  it('runs matmul/conv/linear/bmm/addmm in float16, softmax/norms/sums/exp/log/pow in float32, the rest as called', () => {
    const t = make();
    expect(sn.autocast('float16', () => dtypes(t))).toEqual(UNDER_AUTOCAST);
    // Outside autocast nothing is cast: float32 ops stay float32, float16 ones float16.
    const plain = dtypes(t);
    expect(plain.linear).toBe('float32');
    expect(plain.softmax).toBe('float16');
    // enabled: false switches it off inside, as torch.autocast(enabled=False); nesting restores the outer state.
    expect(sn.autocast('float16', () => [sn.autocast('float16', () => sn.linear(t.x, t.w).dtype, { enabled: false }), sn.linear(t.x, t.w).dtype])).toEqual(['float32', 'float16']);
  });

  it('frees the copies its casts made when the region ends', () => {
    const { x, w, b } = make();
    const before = sn.memory().tensors;
    const y = sn.autocast('float16', () => sn.softmax(sn.linear(x, w, b), -1));
    // linear's float16 output and softmax's output remain; the float16 copies of x, w, b and the float32 copy of
    // linear's output are freed.
    expect(sn.memory().tensors - before).toBe(2);
    expect(y.dtype).toBe('float32');
  });

  it('computes the lower-precision ops on float16-rounded operands', async () => {
    const { x, w, b } = make();
    const y = sn.autocast('float16', () => sn.linear(x, w, b));
    const r16 = (t: Tensor) => t.data().then((d) => ref(t.shape, Array.from(d, float16Ref)));
    const l = linearRef(await r16(x), await r16(w), await r16(b));
    await expectClose(y, l.out, { dtype: 'float16', tol: productTol(device, 8, l.mag) });
  });

  it('is traced by jit: jit(fn, { autocast }) records the casts, and a plain jitted fn keeps a plan per autocast state', async () => {
    const { x, w, b, h } = make();
    const fn = (x: Tensor) => sn.softmax(sn.linear(x, w, b), -1);
    const f = sn.jit(fn, { autocast: 'float16' });
    const y = f(x);
    expect(y.dtype).toBe('float32');
    const byOp = new Map(f.graph().nodes.map((n) => [opLabel(n), n.outputs[0]!.dtype]));
    expect(byOp.get('linear')).toBe('float16');
    expect(byOp.get('softmax')).toBe('float32');
    await expectClose(y, ref(y.shape, await sn.autocast('float16', () => fn(x)).data()), { tol: TOLERANCES[device].float16 });
    const g = sn.jit((x: Tensor) => sn.linear(x, w, b));
    expect([g(x).dtype, sn.autocast('float16', () => g(x)).dtype, g(x).dtype, sn.autocast('float16', () => g(x)).dtype]).toEqual(['float32', 'float16', 'float32', 'float16']);
    expect(g.stats()).toMatchObject({ entries: 2, hits: 2, misses: 2, retraces: 0 });
    // Ops outside both lists run in the widest dtype of their inputs, traced as eagerly.
    expect(sn.jit((a: Tensor, c: Tensor) => a.add(c), { autocast: 'float16' })(h, x).dtype).toBe('float32');
    for (const t of [f, g]) t.dispose();
  });

  it('refuses a dtype it does not lower to and an async function', () => {
    expect(() => sn.autocast('bfloat16' as 'float16', () => 1)).toThrow(SinterError);
    expect(() => sn.autocast('float16', async () => 1)).toThrow(/synchronous/);
    expect(() => sn.jit((x: Tensor) => x, { autocast: 'float32' as 'float16' })).toThrow(/autocast must be 'float16'/);
  });
});

// A Conv → BatchNormalization → Relu → Conv model whose BN variance (1e6) overflows float16: converted without
// folding, it would normalise by √∞ and output zeros.
function convBnModel(): Uint8Array {
  const c = 3, o = 4;
  const ramp = (n: number, a: number, s: number) => Array.from({ length: n }, (_, i) => a + s * ((i * 37) % 11) / 11);
  return model({
    nodes: [
      node('Conv', ['x', 'w1', 'b1'], ['c1'], [{ name: 'pads', type: 7, ints: [1, 1, 1, 1] }]),
      node('BatchNormalization', ['c1', 'gamma', 'beta', 'mean', 'var'], ['bn'], [float('epsilon', 1e-5)]),
      node('Relu', ['bn'], ['r']),
      node('Conv', ['r', 'w2'], ['y']),
    ],
    inputs: [info('x', 'float32', [1, c, 6, 6])],
    outputs: [info('y', 'float32', [1, 2, 6, 6])],
    initializers: [
      rawFloat('w1', [o, c, 3, 3], ramp(o * c * 9, -30, 60)), rawFloat('b1', [o], [1, -2, 3, -4]),
      rawFloat('gamma', [o], [1, 0.5, 2, 1.5]), rawFloat('beta', [o], [0.1, 0.2, -0.3, 0.4]),
      rawFloat('mean', [o], [5, -3, 2, 0]), rawFloat('var', [o], [1e6, 2e5, 7e5, 9e4]),
      rawFloat('w2', [2, o, 1, 1], [0.5, -1, 2, 1, -0.25, 0.75, 1, -1]),
    ],
  });
}

describe.each(WITH_WEBGPU)("loadOnnx(…, { dtype: 'float16' }) on %s", (device) => {
  it('folds BN before converting, keeps float32 inputs and outputs, and holds half the weight bytes', async () => {
    const bytes = convBnModel();
    const x = sn.randn([1, 3, 6, 6], { seed: 4, device });
    // What a model's first run leaves allocated: its uploaded weights, its plan's buffers and the output.
    const held = async (m: sn.OnnxModel) => {
      const before = sn.memory().bytes;
      const out = await m.run({ x });
      return { out, bytes: sn.memory().bytes - before };
    };
    const m32 = await sn.loadOnnx(bytes, { device });
    const r32 = await held(m32);
    const want = await r32.out.y!.data();
    const m16 = await sn.loadOnnx(bytes, { device, dtype: 'float16' });
    const { out, bytes: bytes16 } = await held(m16);
    expect(out.y!.dtype).toBe('float32');
    const got = await out.y!.data();
    const scale = Math.max(...want.map(Math.abs));
    expect(scale).toBeGreaterThan(0.1);
    for (let i = 0; i < want.length; i++) expect(Math.abs(got[i]! - want[i]!), `y[${i}]`).toBeLessThan(4e-3 * scale);
    // Weights and intermediates in float16 (binary16 on both devices): half the float32 model's bytes (the float32
    // output aside), and no more than its folded weights (conv1's weight and bias, conv2's weight) and activations take as float16.
    const output = 4 * got.length;
    console.info(`quant-fp16: ${device} float32 model holds ${r32.bytes - output} B after a run, float16 ${bytes16 - output} B`);
    expect(bytes16 - output).toBeLessThanOrEqual((r32.bytes - output) / 2 + 16);
    // sn.quant.compare reports the model bytes as stored: the float16 weights take half.
    const cmp = await sn.quant.compare(m32, m16, [x]);
    console.info(`quant-fp16: ${device} compare() model bytes float32 ${cmp.referenceBytes}, float16 ${cmp.quantizedBytes}`);
    expect(cmp.quantizedBytes).toBeLessThanOrEqual(cmp.referenceBytes! / 2 + 16);
    expect(cmp.quantizedBytes).toBeGreaterThan(0);
    const report = String(m16.report());
    expect(report).not.toMatch(/batchNorm/);
    // keepIoTypes: false declares the graph's inputs and outputs float16, as the converter's default does.
    const h = await sn.loadOnnx(bytes, { device, dtype: 'float16', keepIoTypes: false });
    expect(h.inputs[0]!.dtype).toBe('float16');
    await expect(h.run({ x })).rejects.toThrow(/expects float16/);
    const yh = (await h.run({ x: x.to('float16') })).y!;
    expect(yh.dtype).toBe('float16');
    for (const mdl of [m32, m16, h]) mdl.dispose();
  });

  it('refuses an unknown dtype and keepIoTypes without float16', async () => {
    const bytes = convBnModel();
    await expect(sn.loadOnnx(bytes, { device, dtype: 'bfloat16' as 'float16' })).rejects.toThrow(/dtype must be 'float32' or 'float16'/);
    await expect(sn.loadOnnx(bytes, { device, keepIoTypes: false })).rejects.toThrow(/keepIoTypes applies only/);
  });
});

describe('convertModelToFloat16', () => {
  it('folds the statistics of a BN no Conv precedes into its own scale and bias (its variance overflows float16)', async () => {
    const { convertModelToFloat16 } = await import('../src/quant/fp16.js');
    const { decodeModel } = await import('../src/io/onnx/proto.js');
    const bytes = model({
      nodes: [node('Add', ['x', 'k'], ['a']), node('BatchNormalization', ['a', 'gamma', 'beta', 'mean', 'var'], ['y'], [float('epsilon', 1e-3)])],
      inputs: [info('x', 'float32', [2, 3, 2])],
      outputs: [info('y', 'float32', [2, 3, 2])],
      initializers: [rawFloat('k', [1], [100]), rawFloat('gamma', [3], [2, 1, 0.5]), rawFloat('beta', [3], [0.5, -1, 0]), rawFloat('mean', [3], [90, 110, 100]), rawFloat('var', [3], [1e6, 4e4, 7e5])],
    });
    expect(convertModelToFloat16(decodeModel(bytes)).conversion).toMatchObject({ foldedBatchNorms: 0, normalizedBatchNorms: 1 });
    const x = sn.randn([2, 3, 2], { seed: 2 }).mul(50);
    const want = await (await (await sn.loadOnnx(bytes)).run({ x })).y!.data();
    const got = await (await (await sn.loadOnnx(bytes, { dtype: 'float16' })).run({ x })).y!.data();
    const scale = Math.max(...want.map(Math.abs));
    for (let i = 0; i < want.length; i++) expect(Math.abs(got[i]! - want[i]!), `y[${i}]`).toBeLessThan(4e-3 * scale);
  });

  it('keeps values ops read on the host (Resize scales) in float32 and casts Cast-to-float32 to float16', async () => {
    const { convertModelToFloat16 } = await import('../src/quant/fp16.js');
    const { decodeModel } = await import('../src/io/onnx/proto.js');
    const bytes = model({
      nodes: [
        node('Resize', ['x', '', 'scales'], ['r'], [{ name: 'mode', type: 3, s: new TextEncoder().encode('nearest') }]),
        node('Cast', ['r'], ['c'], [{ name: 'to', type: 2, i: TYPE.float32 }]),
        node('Mul', ['c', 'k'], ['y']),
      ],
      inputs: [info('x', 'float32', [1, 1, 2, 2])],
      outputs: [info('y', 'float32', [1, 1, 4, 4])],
      initializers: [rawFloat('scales', [4], [1, 1, 2, 2]), rawFloat('k', [1], [3])],
    });
    const { model: m, conversion } = convertModelToFloat16(decodeModel(bytes));
    expect(conversion).toEqual({ foldedBatchNorms: 0, normalizedBatchNorms: 0, converted: 1, keptFloat32: ['scales'] });
    const types = Object.fromEntries(m.graph!.initializer.map((t) => [t.name, t.dataType]));
    expect(types).toEqual({ scales: TYPE.float32, k: TYPE.float16 });
    expect(m.graph!.node.map((n) => `${n.opType}:${n.attribute.find((a) => a.name === 'to')?.i ?? ''}`)).toEqual(['Cast:10', 'Resize:', 'Cast:10', 'Mul:', 'Cast:1']);
    const y = (await (await sn.loadOnnx(bytes, { dtype: 'float16' })).run({ x: sn.tensor([1, 2, 3, 4], { shape: [1, 1, 2, 2] }) })).y!;
    expect(y.dtype).toBe('float32');
    expect(Array.from(await y.data())).toEqual([3, 3, 6, 6, 3, 3, 6, 6, 9, 9, 12, 12, 9, 9, 12, 12]);
  });
});
