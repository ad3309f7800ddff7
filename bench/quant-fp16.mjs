// FP16 conversion at load on PP-OCR cls, det and rec (`npm run build` first; reads dist/): for each model and device,
// `loadOnnx(bytes)` against `loadOnnx(bytes, { dtype: 'float16' })` on seeded rendered pages (bench/onnx-models.mjs
// makes them): bytes held (weights, and the plan's intermediates, after the first run), agreement with float32
// (cosine, max abs error against the largest output; det: text-mask p > 0.3 IoU; cls: top-1; rec: greedy-CTC
// frames identical), and time (first run, compilation included; warm median). Prints markdown with the date and
// machine, and writes it to --out. Timings on a shared machine are noisy; SwiftShader has no shader-f16, so
// WebGPU runs the packed float16 path (storage in float16, compute in float32) there.
// Usage: node bench/quant-fp16.mjs [--devices cpu,webgpu] [--models cls,det,rec] [--pages 3] [--runs 3] [--out FILE]
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MODELS, MODEL_DIR, pageInput } from './onnx-models.mjs';

/**
 * How float16 output `got` agrees with float32 `want`: cosine, max abs error, the largest |want|, and the IoU of the
 * masks `> threshold` (det's text mask), with how many pixels either mask holds. Shared with test/quant-fp16-det.
 */
export function maskAgreement(want, got, threshold) {
  let dot = 0, ww = 0, gg = 0, maxAbs = 0, largest = 0, inter = 0, union = 0;
  for (let i = 0; i < want.length; i++) {
    const a = want[i], b = got[i];
    dot += a * b; ww += a * a; gg += b * b;
    const d = Math.abs(a - b);
    if (d > maxAbs || Number.isNaN(d)) maxAbs = d;
    largest = Math.max(largest, Math.abs(a));
    const ma = a > threshold, mb = b > threshold;
    if (ma && mb) inter++;
    if (ma || mb) union++;
  }
  return { cosine: dot / Math.sqrt(ww * gg), maxAbs, largest, iou: union === 0 ? 1 : inter / union, textPixels: union };
}

/** Per row of the last dim: the index of the largest value (cls's class, rec's CTC frame). */
function argmaxRows(data, width) {
  const out = [];
  for (let r = 0; r < data.length / width; r++) {
    let best = 0;
    for (let j = 1; j < width; j++) if (data[r * width + j] > data[r * width + best]) best = j;
    out.push(best);
  }
  return out;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const kib = (b) => `${(b / 1024).toFixed(0)} KiB`;

async function main() {
  const sn = await import('../dist/index.js');
  const args = process.argv.slice(2);
  const opt = (name, dflt) => { const i = args.indexOf(`--${name}`); return i >= 0 ? args[i + 1] : dflt; };
  const devices = opt('devices', 'cpu,webgpu').split(',');
  const names = opt('models', 'cls,det,rec').split(',');
  const pages = Number(opt('pages', 3)), runs = Number(opt('runs', 3));
  const stamp = new Date().toISOString();
  const out = opt('out', path.join(path.dirname(fileURLToPath(import.meta.url)), 'results', `${stamp.slice(0, 16).replace(/:/g, '')}-quant-fp16.md`));
  const lines = [`# FP16 at load: PP-OCR float16 vs float32 (${stamp})`, '',
    `Machine: ${os.cpus()[0]?.model ?? 'unknown CPU'} × ${os.cpus().length}, Node ${process.version}; ${pages} seeded pages per model, warm = median of ${runs} runs.`, ''];
  for (const device of devices) {
    await sn.init({ device, quiet: true });
    const info = device === 'webgpu' ? sn.adapterInfo() : null;
    lines.push(`## ${device}${info ? ` (${info.adapter}; shader-f16: ${info.features.shaderF16})` : ''}`, '',
      '| model | dtype | weights held | plan intermediates | first run | warm | cosine (min) | max abs / largest (max) | agreement |',
      '|---|---|---|---|---|---|---|---|---|');
    for (const m of MODELS.filter((x) => names.includes(x.name))) {
      const bytes = new Uint8Array(await readFile(path.join(MODEL_DIR, m.file)));
      const results = {};
      for (const dtype of ['float32', 'float16']) {
        const model = await sn.loadOnnx(bytes, { device, dtype });
        const outputs = [];
        let cold = 0, held = 0;
        const warm = [];
        for (let p = 0; p < pages; p++) {
          const x = sn.tensor(await pageInput(sn, m, 7 + p), { shape: m.shape, device });
          const before = sn.memory().bytes;
          const t0 = performance.now();
          const y = Object.values(await model.run({ x }))[0];
          const data = await y.data();
          if (p === 0) {
            cold = performance.now() - t0;
            held = sn.memory().bytes - before - y.numel() * 4 - model.report().jit.peakBytes;
          }
          outputs.push({ data, shape: y.shape });
          y.dispose();
          if (p === 0) {
            for (let r = 0; r < runs; r++) {
              const t = performance.now();
              const z = Object.values(await model.run({ x }))[0];
              await z.data();
              warm.push(performance.now() - t);
              z.dispose();
            }
          }
          x.dispose();
        }
        results[dtype] = { outputs, cold, held, warm: median(warm), peak: model.report().jit.peakBytes };
        model.dispose();
      }
      const a = results.float32, b = results.float16;
      const agree = a.outputs.map((o, p) => maskAgreement(o.data, b.outputs[p].data, 0.3));
      const width = a.outputs[0].shape.at(-1);
      let agreement;
      if (m.name === 'det') agreement = `mask IoU min ${Math.min(...agree.map((g) => g.iou)).toFixed(5)}`;
      else {
        const same = a.outputs.map((o, p) => { const x = argmaxRows(o.data, width), y = argmaxRows(b.outputs[p].data, width); return x.filter((v, i) => v === y[i]).length / x.length; });
        agreement = m.name === 'cls' ? `top-1 ${same.filter((s) => s === 1).length}/${pages}` : `CTC frames identical ${(100 * Math.min(...same)).toFixed(1)}% (min)`;
      }
      const cos = Math.min(...agree.map((g) => g.cosine)), rel = Math.max(...agree.map((g) => g.maxAbs / g.largest));
      for (const [dtype, r] of [['float32', a], ['float16', b]]) {
        lines.push(`| ${m.name} | ${dtype} | ${kib(r.held)} | ${kib(r.peak)} | ${r.cold.toFixed(0)} ms | ${r.warm.toFixed(0)} ms | ${dtype === 'float16' ? cos.toFixed(6) : '–'} | ${dtype === 'float16' ? rel.toExponential(2) : '–'} | ${dtype === 'float16' ? agreement : '–'} |`);
      }
      console.error(lines.at(-2)); console.error(lines.at(-1));
    }
    lines.push('');
  }
  const text = lines.join('\n');
  console.log(text);
  await mkdir(path.dirname(out), { recursive: true });
  await writeFile(out, `${text}\n`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
