// JIT benchmarks (`npm run bench:jit` builds first; `node bench/jit.mjs` uses dist/ as it is): what tracing
// and fusion buy, on WebGPU and the CPU.
//  (i)   y = sigmoid(relu(x·1.5 + 0.5) − 0.25) · x on 2^20 floats: jit under each fusion strategy vs eager.
//  (ii)  a small CNN built from sinter's nn modules in eval mode, batch 1 and 8: jit vs eager.
//  (iii) kernels launched and intermediate memory per workload and strategy.
// Each mode is timed twice: "resident" (inputs already on the device; run, then synchronize) and
// "round trip" (upload the input from a host Float32Array, run, read the output back: the peer
// harness's definition of one run). Each jitted mode is also profiled (f.profile: per-kernel GPU
// time from timestamp queries on WebGPU, host time on the CPU). Prints markdown with the date,
// machine, load and adapter; `--write` also puts it into bench/README.md between the JIT markers.
// Usage: node bench/jit.mjs [--runs N] [--budget SECONDS] [--devices webgpu,cpu] [--only eltwise|cnn] [--write]
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import * as sn from '../dist/index.js';
// Kernel launches are counted where they happen: GPU dispatches on WebGPU, backend.run calls on the CPU.
import { getBackend } from '../dist/backend/backend.js';

const option = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? fallback : process.argv[i + 1];
};
// Modes are timed in rounds (one run of each mode per round, so drifting load hits them alike): up to
// RUNS rounds, stopping early once BUDGET ms of timed work passed per mode (but at least MIN_RUNS rounds).
const RUNS = Number(option('runs', 15)), BUDGET = Number(option('budget', 4)) * 1000, MIN_RUNS = 5, WARMUP = 3;
const DEVICES = option('devices', 'webgpu,cpu').split(',');
const ONLY = option('only', null);
const STRATEGIES = ['default', 'elementwise', 'none'];
const PROFILES = 5;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const fmtMs = (ms) => (ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0));
const fmtBytes = (b) => (b >= 2 ** 20 ? `${(b / 2 ** 20).toFixed(2)} MiB` : `${(b / 2 ** 10).toFixed(1)} KiB`);
const load = () => os.loadavg()[0].toFixed(1);

/** Median and min ms of each of `runs` (async runs that free what they made), timed round-robin after warm-ups. */
async function timeRounds(runs) {
  for (let i = 0; i < WARMUP; i++) for (const once of runs) await once();
  const ms = runs.map(() => []);
  const start = performance.now();
  while (ms[0].length < RUNS && (ms[0].length < MIN_RUNS || performance.now() - start < BUDGET * runs.length)) {
    for (const [k, once] of runs.entries()) {
      const t0 = performance.now();
      await once();
      ms[k].push(performance.now() - t0);
    }
  }
  return ms.map((m) => ({ ms: median(m), min: Math.min(...m), n: m.length }));
}

/** The object whose method `name` launches a kernel on `device`: the compute pass encoders' prototype, or the CPU backend. */
function launcher(device) {
  if (device === 'cpu') return { target: getBackend('cpu'), name: 'run' };
  const encoder = getBackend('webgpu').device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.end();
  encoder.finish();
  return { target: Object.getPrototypeOf(pass), name: 'dispatchWorkgroups' };
}

/**
 * Kernel launches and the most bytes of live storage on `device` during one call of `fn(x)` (above
 * what was live before it, sampled at each launch; a GPU dispatch is recorded once its buffers exist).
 */
function launches(device, fn, x) {
  const { target, name } = launcher(device);
  const original = Object.getOwnPropertyDescriptor(target, name);
  const live = () => sn.memory().devices[device]?.bytes ?? 0;
  const before = live();
  let count = 0, peak = before;
  target[name] = function (...args) {
    count++;
    const r = original.value.apply(this, args);
    peak = Math.max(peak, live());
    return r;
  };
  try {
    fn(x).dispose();
  } finally {
    Object.defineProperty(target, name, original);
  }
  return { count, peakBytes: peak - before };
}

/**
 * Each kernel's time, the median of PROFILES `f.profile(x)` calls (each times every kernel: GPU
 * timestamps on WebGPU, host time on the CPU); `ms` is NaN where the device gives no times.
 */
async function profile(f, x) {
  const runs = [];
  for (let i = 0; i < PROFILES; i++) runs.push((await f.profile(x)).kernels.map((k) => k.gpuMs ?? k.cpuMs ?? NaN));
  const ms = runs[0].map((_, i) => median(runs.map((r) => r[i])));
  return { report: f.report(), ms, kernelMs: ms.reduce((a, b) => a + b, 0) };
}

/** Largest |a − b| over two equal-length arrays. */
const maxDiff = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

/**
 * Every mode of one workload on one device: eager, and jit under each strategy. `forward(x)` is the
 * eager function (it frees its intermediates); `host` the input's values. Returns one record per mode.
 */
async function measure(device, forward, host, shape) {
  const x = sn.tensor(host, { shape, device });
  const reference = forward(x);
  const eagerOut = await reference.data();
  reference.dispose();
  const modes = [['eager', forward], ...STRATEGIES.map((s) => [`jit ${s}`, sn.jit(forward, { fusion: s })])];
  const load0 = load();
  const diffs = [];
  for (const [, f] of modes) {
    const out = f(x); // the jit's cold call: trace, passes, compile, run
    diffs.push(maxDiff(await out.data(), eagerOut));
    out.dispose();
  }
  const resident = await timeRounds(modes.map(([, f]) => async () => {
    const y = f(x);
    await sn.synchronize(device);
    y.dispose();
  }));
  const roundTrip = await timeRounds(modes.map(([, f]) => async () => {
    const xi = sn.tensor(host, { shape, device });
    const y = f(xi);
    await y.data();
    y.dispose();
    xi.dispose();
  }));
  const loadRange = `${load0}–${load()}`;
  const profiles = [];
  for (const [, f] of modes) profiles.push(f.profile ? await profile(f, x) : null);
  const records = modes.map(([mode, f], k) => {
    const counted = launches(device, f, x);
    const r = profiles[k]?.report;
    const graph = f.graph?.();
    console.error(`${device} ${shape.join('×')} ${mode}: resident ${fmtMs(resident[k].ms)} ms (min ${fmtMs(resident[k].min)}, ${resident[k].n} runs), ` +
      `round trip ${fmtMs(roundTrip[k].ms)} ms (min ${fmtMs(roundTrip[k].min)}), ${counted.count} launches, ` +
      `max |jit − eager| ${diffs[k].toExponential(1)}, load ${loadRange}`);
    return {
      mode,
      resident: resident[k],
      roundTrip: roundTrip[k],
      launched: counted.count,
      kernels: r ? r.kernels.length : null,
      // Eager: what its intermediates held at once, less the output it returns.
      peakBytes: r ? r.peakBytes : counted.peakBytes - 4 * eagerOut.length,
      unplannedBytes: r ? r.unplannedBytes : null,
      coldMs: r ? r.coldMs : null,
      compileMs: r ? r.compileMs : null,
      kernelMs: profiles[k]?.kernelMs ?? null,
      batchNormLeft: graph ? graph.nodes.filter((n) => n.kind === 'op' && n.op.name === 'batchNorm').length : null,
      report: r,
      profiledMs: profiles[k]?.ms ?? null,
      diff: diffs[k],
      load: loadRange,
    };
  });
  modes.forEach(([, f]) => f.dispose?.());
  x.dispose();
  return records;
}

// ---- workloads ----------------------------------------------------------------------------------

const N = 2 ** 20;
const chain = (x) => sn.mul(sn.sigmoid(sn.sub(sn.relu(sn.add(sn.mul(x, 1.5), 0.5)), 0.25)), x);

/**
 * The small CNN: 3×32×32 → [conv3×3 32 + BN + ReLU] → [conv3×3 64 stride 2 + BN + ReLU] →
 * [conv3×3 128 stride 2 + BN + ReLU] → global average pool → linear 10, in eval mode. Convs have no
 * bias (BN follows); BN running statistics and affine parameters are random so folding has work to do.
 */
function smallCnn(device) {
  // Drawn on the CPU, so both devices get the same weights.
  const g = new sn.Generator(0);
  const opts = { generator: g, device: 'cpu' };
  const layers = [];
  const state = {};
  [[3, 32, 1], [32, 64, 2], [64, 128, 2]].forEach(([cin, cout, stride], i) => {
    layers.push(new sn.nn.Conv2d(cin, cout, 3, { stride, padding: 1, bias: false, ...opts }), new sn.nn.BatchNorm2d(cout, { device: 'cpu' }), new sn.nn.ReLU());
    const bn = 3 * i + 1;
    state[`${bn}.weight`] = sn.tidy(() => sn.rand([cout], opts).add(0.5));
    state[`${bn}.bias`] = sn.tidy(() => sn.randn([cout], opts).mul(0.1));
    state[`${bn}.running_mean`] = sn.tidy(() => sn.randn([cout], opts).mul(0.1));
    state[`${bn}.running_var`] = sn.tidy(() => sn.rand([cout], opts).add(0.5));
  });
  const model = new sn.nn.Sequential(...layers, new sn.nn.AdaptiveAvgPool2d(1), new sn.nn.Flatten(), new sn.nn.Linear(128, 10, opts));
  model.loadStateDict(state, { strict: false });
  return model.to(device).eval();
}

const hostRandn = async (shape, seed) => {
  const t = sn.randn(shape, { seed, device: 'cpu' });
  const data = await t.data();
  t.dispose();
  return data;
};

// ---- run ----------------------------------------------------------------------------------------

const load0 = load();
await sn.init({ device: 'webgpu' });
const results = { eltwise: {}, cnn: {} };
for (const device of DEVICES) {
  if (!ONLY || ONLY === 'eltwise') {
    // Eager frees its intermediates with tidy, as a user would.
    results.eltwise[device] = await measure(device, (x) => sn.tidy(() => chain(x)), await hostRandn([N], 1), [N]);
  }
  if (!ONLY || ONLY === 'cnn') {
    const model = smallCnn(device);
    for (const batch of [1, 8]) {
      results.cnn[`${device} b${batch}`] = await measure(device, (x) => model.forward(x), await hostRandn([batch, 3, 32, 32], 2), [batch, 3, 32, 32]);
    }
    model.dispose();
  }
}

// ---- tables -------------------------------------------------------------------------------------

const cpus = os.cpus();
const header = `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC · ${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${cpus.length} cores, ` +
  `${(os.totalmem() / 2 ** 30).toFixed(0)} GiB · load average ${load0} before, ${load()} after · Node ${process.version} · ` +
  `${sn.adapterInfo()?.line ?? 'no WebGPU adapter'}`;
const byMode = (records, mode) => records.find((r) => r.mode === mode);
const row = (...cells) => `| ${cells.join(' | ')} |`;
/** A table's header row and alignment row: the first `left` columns left-aligned, the rest right-aligned. */
const head = (left, ...names) => [row(...names), row(...names.map((_, i) => (i < left ? '---' : '---:')))];
const both = (t) => `${fmtMs(t.ms)} / ${fmtMs(t.min)}`;
const ratio = (a, b) => `${(a.ms / b.ms).toFixed(2)}× / ${(a.min / b.min).toFixed(2)}×`;
const orDash = (v, f) => (v === null || v === undefined || Number.isNaN(v) ? '—' : f(v));

const lines = [
  header,
  '',
  `Per mode: median and min of up to ${RUNS} warm runs (at least ${MIN_RUNS}; ${BUDGET / 1000} s budget per mode) after ${WARMUP} warm-ups, ` +
    'the modes of a workload timed in turn, one run each per round. ' +
    '"resident": the input is already on the device, one run = call, then `sn.synchronize(device)` (no readback). ' +
    '"round trip": upload the input from a host Float32Array, call, read the output back (the peer harness\'s run). ' +
    '"launched": kernels one call ran, counted as they start: GPU dispatches on WebGPU (a kernel of several passes counts each), kernel calls on the CPU.',
];

if (Object.keys(results.eltwise).length) {
  lines.push('', '**(i) `y = sigmoid(relu(x*1.5+0.5) - 0.25) * x`, 2^20 float32.** Times are median / min. ' +
    'GB/s (of the median) counts the 8 MiB a fused kernel must move (read x, write y).', '');
  lines.push(...head(2, 'device', 'mode', 'resident ms', 'GB/s', 'round trip ms', 'launched', 'speed-up over jit none, resident', 'load'));
  for (const [device, recs] of Object.entries(results.eltwise)) {
    const none = byMode(recs, 'jit none');
    for (const r of recs) {
      const gbps = ((8 * N) / (r.resident.ms * 1e6)).toFixed(2);
      lines.push(row(device, r.mode, both(r.resident), gbps, both(r.roundTrip), r.launched, ratio(none.resident, r.resident), r.load));
    }
  }
}

if (Object.keys(results.cnn).length) {
  lines.push('', '**(ii) small CNN** (nn modules, eval mode; 3×32×32 → conv 32 → conv 64 s2 → conv 128 s2, each + BN + ReLU → ' +
    'global average pool → linear 10). Times and speed-ups are median / min.', '');
  lines.push(...head(2, 'device, batch', 'mode', 'resident ms', 'round trip ms', 'speed-up over eager, resident', 'speed-up over eager, round trip',
    'launched', 'BN nodes in f.graph()', 'max \\|jit − eager\\|', 'load'));
  for (const [key, recs] of Object.entries(results.cnn)) {
    const eager = byMode(recs, 'eager');
    for (const r of recs) {
      const jitOnly = (v) => (r.mode === 'eager' ? '—' : v);
      lines.push(row(key, r.mode, both(r.resident), both(r.roundTrip), ratio(eager.resident, r.resident), ratio(eager.roundTrip, r.roundTrip),
        r.launched, jitOnly(r.batchNormLeft), jitOnly(r.diff.toExponential(1)), r.load));
    }
  }
}

lines.push('', '**(iii) kernels and intermediate memory.** "kernels": `f.report().kernels.length`; "planned": `report().peakBytes` ' +
  '(intermediates in liveness-shared buffers); "one buffer each": `report().unplannedBytes`; eager: the most bytes its intermediates held ' +
  `at once (measured). "Σ kernel ms": the kernels' times by \`f.profile()\`, each the median of ${PROFILES} calls (GPU timestamps on WebGPU, ` +
  'each kernel in a pass of its own; host time per kernel on the CPU); "compile ms": tracing, passes, fusion, memory plan and pipelines ' +
  '(`report().compileMs`); "cold ms": the first call, compilation included.', '');
lines.push(...head(3, 'workload', 'device', 'mode', 'kernels', 'launched', 'planned peak', 'one buffer each', 'Σ kernel ms', 'compile ms', 'cold ms'));
const workloads = [
  ...Object.entries(results.eltwise).map(([device, recs]) => ['eltwise 2^20', device, recs]),
  ...Object.entries(results.cnn).map(([key, recs]) => {
    const [device, batch] = key.split(' ');
    return [`CNN batch ${batch.slice(1)}`, device, recs];
  }),
];
for (const [name, device, recs] of workloads) {
  for (const r of recs) {
    lines.push(row(name, device, r.mode, r.kernels ?? '—', r.launched, fmtBytes(r.peakBytes), orDash(r.unplannedBytes, fmtBytes),
      orDash(r.kernelMs, fmtMs), orDash(r.compileMs, fmtMs), orDash(r.coldMs, fmtMs)));
  }
}

// Where the time goes: each kernel of the default plan with its ops, bytes, FLOPs and profiled time.
lines.push('', `**Kernels of \`jit default\`**, ms: median of ${PROFILES} \`f.profile()\` calls (GPU timestamps on WebGPU, host time on the CPU):`, '');
lines.push(...head(4, 'workload', 'device', 'kernel', 'ops', 'bytes read', 'bytes written', 'MFLOP', 'ms', 'GFLOP/s'));
for (const [name, device, recs] of workloads) {
  const jd = byMode(recs, 'jit default');
  for (const [i, k] of jd.report.kernels.entries()) {
    const ms = jd.profiledMs[i];
    lines.push(row(name, device, k.name, k.ops.join(', '), fmtBytes(k.bytesRead), fmtBytes(k.bytesWritten), (k.flops / 1e6).toFixed(2),
      orDash(ms, (v) => v.toFixed(3)), orDash(ms, (v) => (k.flops / (v * 1e6)).toFixed(2))));
  }
}

const table = lines.join('\n');
console.log(`\n${table}`);
if (process.argv.includes('--write')) {
  const readme = new URL('./README.md', import.meta.url);
  const text = readFileSync(readme, 'utf8');
  const [start, end] = ['<!-- bench/jit.mjs results: start -->', '<!-- bench/jit.mjs results: end -->'];
  const a = text.indexOf(start), b = text.indexOf(end);
  if (a < 0 || b < a) throw new Error(`bench/README.md lacks the markers ${start} … ${end}`);
  writeFileSync(readme, `${text.slice(0, a + start.length)}\n${table}\n${text.slice(b)}`);
  console.log('\nwrote the tables into bench/README.md');
}
