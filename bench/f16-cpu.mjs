// PP-OCR det on the CPU at float32 and at float16 (loadOnnx(…, { dtype: 'float16' })), model runs (the default jit execution) alternating
// in one process, so both see the same load: per-call wall time and process CPU time (process.cpuUsage: every thread
// of the process, the kernel pool's workers included), medians. The CPU-time ratio is the figure that resists a
// loaded machine. Usage (after npm run build): node bench/f16-cpu.mjs [--runs N] [--threads N] (SINTER_CPU_KERNELS=js: the JS
// kernels; SINTER_MODULE=path: another build of sinter, e.g. an esbuild bundle of src/index.ts; SINTER_MODULE=a.js,b.js:
// several builds in one process, their runs alternating too, to compare builds side by side (A/B) under the same load)
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { MODELS, MODEL_DIR, pageInput } from './onnx-models.mjs';

const opt = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const modules = (process.env.SINTER_MODULE ?? '../dist/index.js').split(',');
const runs = Number(opt('runs', '5'));
const det = MODELS.find((m) => m.name === 'det');
const bytes = new Uint8Array(await readFile(path.join(MODEL_DIR, det.file)));
const builds = [];
for (const [i, module] of modules.entries()) {
  const sn = await import(module.startsWith('.') || module.startsWith('/') ? new URL(module, import.meta.url).href : module);
  await sn.init({ device: 'cpu', ...(opt('threads') ? { threads: Number(opt('threads')) } : {}) });
  const models = { float32: await sn.loadOnnx(bytes, { device: 'cpu' }), float16: await sn.loadOnnx(bytes, { device: 'cpu', dtype: 'float16' }) };
  const x = sn.tensor(await pageInput(sn, det, 7), { shape: det.shape });
  const name = modules.length > 1 ? `${String.fromCharCode(65 + i)} (${module})` : '';
  builds.push({ name, sn, models, x, times: { float32: { wall: [], cpu: [] }, float16: { wall: [], cpu: [] } } });
}
const once = async (b, dtype) => {
  const c0 = process.cpuUsage(), t0 = performance.now();
  const out = await b.models[dtype].run({ x: b.x });
  for (const t of Object.values(out)) { await t.data(); t.dispose(); }
  const c = process.cpuUsage(c0);
  return { wall: performance.now() - t0, cpu: (c.user + c.system) / 1000 };
};
for (const b of builds) for (const dtype of ['float32', 'float16']) await once(b, dtype); // warm-up: weights uploaded, kernels compiled
for (let r = 0; r < runs; r++) {
  const order = builds.flatMap((b) => (r % 2 ? ['float16', 'float32'] : ['float32', 'float16']).map((dtype) => [b, dtype]));
  for (const [b, dtype] of r % 2 ? order.reverse() : order) {
    const t = await once(b, dtype);
    b.times[dtype].wall.push(t.wall);
    b.times[dtype].cpu.push(t.cpu);
  }
}
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
console.log(`${new Date().toISOString()} det 1×3×320×320 on the CPU (${builds[0].sn.cpuInfo().line}), ${runs} runs each, medians:`);
for (const b of builds) {
  if (b.name) console.log(`build ${b.name}:`);
  for (const dtype of ['float32', 'float16']) console.log(`  ${dtype}: wall ${median(b.times[dtype].wall).toFixed(0)} ms, cpu ${median(b.times[dtype].cpu).toFixed(0)} ms`);
  console.log(`  float16 / float32: wall ${(median(b.times.float16.wall) / median(b.times.float32.wall)).toFixed(2)}×, cpu ${(median(b.times.float16.cpu) / median(b.times.float32.cpu)).toFixed(2)}×`);
}
for (const b of builds.slice(1)) {
  const f16 = (k) => (median(b.times.float16[k]) / median(builds[0].times.float16[k])).toFixed(2);
  console.log(`float16 ${b.name.split(' ')[0]} / A: wall ${f16('wall')}×, cpu ${f16('cpu')}×`);
}
process.exit(0);
