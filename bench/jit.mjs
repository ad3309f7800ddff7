// JIT benchmarks (`npm run bench:jit` builds first; `node bench/jit.mjs` uses dist/ as it is): what tracing
// and fusion buy, on WebGPU and the CPU.
//  (i)   y = sigmoid(relu(x·1.5 + 0.5) − 0.25) · x on 2^20 floats: jit under each fusion strategy vs eager.
//  (ii)  a small CNN built from sinter's nn modules in eval mode, batch 1 and 8: jit vs eager.
//  (iii) kernels launched and intermediate memory per workload and strategy.
// Each mode is timed twice by sn.benchmark.Timer (median and IQR): "resident" (inputs already on the
// device; run, then synchronize) and "round trip" (upload the input from a host Float32Array, run,
// read the output back: the peer harness's definition of one run). Each jitted mode is also profiled
// (f.profile: per-kernel GPU time from timestamp queries on WebGPU, host time on the CPU). Prints
// sn.benchmark.Compare's tables, then markdown with the date, machine, load and adapter; `--write`
// also puts the markdown into bench/README.md between the JIT markers.
// Usage: node bench/jit.mjs [--budget SECONDS] [--threshold FRACTION] [--devices webgpu,cpu] [--only eltwise|cnn] [--write]
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as sn from '../dist/index.js';
// Kernel launches are counted where they happen: GPU dispatches on WebGPU, backend.run calls on the CPU.
import { getBackend } from '../dist/backend/backend.js';
import { smallCnn } from './models/small-cnn.mjs';
import {
  TIMING_ARGS, describe, fmtMs, loadAverage as load, log, machineLine, measure, medianIqr, method, startProgress, stopProgress, timingOptions,
} from './timing.mjs';

const { values } = parseArgs({
  options: { ...TIMING_ARGS, devices: { type: 'string', default: 'webgpu,cpu' }, only: { type: 'string' }, write: { type: 'boolean' } },
});
// Up to --budget seconds of timed work per mode and kind of run (default 4).
const timing = timingOptions(values, 4);
const DEVICES = values.devices.split(',');
const ONLY = values.only ?? null;
if (ONLY !== null && ONLY !== 'eltwise' && ONLY !== 'cnn') throw new Error(`--only takes eltwise or cnn, got ${ONLY}`);
const STRATEGIES = ['default', 'elementwise', 'none'];
const PROFILES = 5;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const fmtBytes = (b) => (b >= 2 ** 20 ? `${(b / 2 ** 20).toFixed(2)} MiB` : `${(b / 2 ** 10).toFixed(1)} KiB`);
/** Every Measurement taken, for sn.benchmark.Compare. */
const measurements = [];

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
 * Every mode of workload `name` on one device: eager, and jit under each strategy. `forward(x)` is the
 * eager function (it frees its intermediates); `host` the input's values. Returns one record per mode.
 */
async function measureModes(name, device, forward, host, shape) {
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
  const timeModes = async (description, run) => {
    const ms = [];
    for (const [mode, f] of modes) {
      const m = await measure({ stmt: () => run(f), sync: [device], label: `${name} on ${device}`, subLabel: mode, description, ...timing });
      measurements.push(m);
      ms.push(m);
    }
    return ms;
  };
  const resident = await timeModes('resident', async (f) => {
    const y = f(x);
    await sn.synchronize(device);
    y.dispose();
  });
  const roundTrip = await timeModes('round trip', async (f) => {
    const xi = sn.tensor(host, { shape, device });
    const y = f(xi);
    await y.data();
    y.dispose();
    xi.dispose();
  });
  const loadRange = `${load0}–${load()}`;
  const profiles = [];
  for (const [, f] of modes) profiles.push(f.profile ? await profile(f, x) : null);
  const records = modes.map(([mode, f], k) => {
    const counted = launches(device, f, x);
    const r = profiles[k]?.report;
    const graph = f.graph?.();
    log(`${device} ${shape.join('×')} ${mode}: resident ${describe(resident[k])}; round trip ${describe(roundTrip[k])}; ` +
      `${counted.count} launches, max |jit − eager| ${diffs[k].toExponential(1)}, load ${loadRange}`);
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
// Figures: per device, the eltwise workload and the CNN at two batch sizes, each mode resident and round trip.
startProgress(DEVICES.length * ((ONLY === 'cnn' ? 0 : 1) + (ONLY === 'eltwise' ? 0 : 2)) * (1 + STRATEGIES.length) * 2);
for (const device of DEVICES) {
  if (!ONLY || ONLY === 'eltwise') {
    // Eager frees its intermediates with tidy, as a user would.
    results.eltwise[device] = await measureModes('eltwise 2^20', device, (x) => sn.tidy(() => chain(x)), await hostRandn([N], 1), [N]);
  }
  if (!ONLY || ONLY === 'cnn') {
    const model = smallCnn(sn, device);
    for (const batch of [1, 8]) {
      const shape = [batch, 3, 32, 32];
      results.cnn[`${device} b${batch}`] = await measureModes(`CNN batch ${batch}`, device, (x) => model.forward(x), await hostRandn(shape, 2), shape);
    }
    model.dispose();
  }
}

// ---- tables -------------------------------------------------------------------------------------

stopProgress();
new sn.benchmark.Compare(measurements).trimSignificantFigures().print();
const header = machineLine(load0);
const byMode = (records, mode) => records.find((r) => r.mode === mode);
const row = (...cells) => `| ${cells.join(' | ')} |`;
/** A table's header row and alignment row: the first `left` columns left-aligned, the rest right-aligned. */
const head = (left, ...names) => [row(...names), row(...names.map((_, i) => (i < left ? '---' : '---:')))];
/** Speed-up of `b` over `a`, by the medians. */
const ratio = (a, b) => `${(a.median / b.median).toFixed(2)}×`;
const orDash = (v, f) => (v === null || v === undefined || Number.isNaN(v) ? '—' : f(v));

const lines = [
  header,
  '',
  `Per mode and kind of run: ${method(timing)} ` +
    '"resident": the input is already on the device, one run = call, then `sn.synchronize(device)` (no readback). ' +
    '"round trip": upload the input from a host Float32Array, call, read the output back (the peer harness\'s run). ' +
    '"launched": kernels one call ran, counted as they start: GPU dispatches on WebGPU (a kernel of several passes counts each), kernel calls on the CPU.',
];

if (Object.keys(results.eltwise).length) {
  lines.push('', '**(i) `y = sigmoid(relu(x*1.5+0.5) - 0.25) * x`, 2^20 float32.** Times are median (IQR), ms. ' +
    'GB/s (of the median) counts the 8 MiB a fused kernel must move (read x, write y).', '');
  lines.push(...head(2, 'device', 'mode', 'resident ms', 'GB/s', 'round trip ms', 'launched', 'speed-up over jit none, resident', 'load'));
  for (const [device, recs] of Object.entries(results.eltwise)) {
    const none = byMode(recs, 'jit none');
    for (const r of recs) {
      const gbps = ((8 * N) / (r.resident.median * 1e9)).toFixed(2);
      lines.push(row(device, r.mode, medianIqr(r.resident), gbps, medianIqr(r.roundTrip), r.launched, ratio(none.resident, r.resident), r.load));
    }
  }
}

if (Object.keys(results.cnn).length) {
  lines.push('', '**(ii) small CNN** (nn modules, eval mode; 3×32×32 → conv 32 → conv 64 s2 → conv 128 s2, each + BN + ReLU → ' +
    'global average pool → linear 10). Times are median (IQR), ms; speed-ups are of the medians.', '');
  lines.push(...head(2, 'device, batch', 'mode', 'resident ms', 'round trip ms', 'speed-up over eager, resident', 'speed-up over eager, round trip',
    'launched', 'BN nodes in f.graph()', 'max \\|jit − eager\\|', 'load'));
  for (const [key, recs] of Object.entries(results.cnn)) {
    const eager = byMode(recs, 'eager');
    for (const r of recs) {
      const jitOnly = (v) => (r.mode === 'eager' ? '—' : v);
      lines.push(row(key, r.mode, medianIqr(r.resident), medianIqr(r.roundTrip), ratio(eager.resident, r.resident), ratio(eager.roundTrip, r.roundTrip),
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
if (values.write) {
  const readme = new URL('./README.md', import.meta.url);
  const text = readFileSync(readme, 'utf8');
  const [start, end] = ['<!-- bench/jit.mjs results: start -->', '<!-- bench/jit.mjs results: end -->'];
  const a = text.indexOf(start), b = text.indexOf(end);
  if (a < 0 || b < a) throw new Error(`bench/README.md lacks the markers ${start} … ${end}`);
  writeFileSync(readme, `${text.slice(0, a + start.length)}\n${table}\n${text.slice(b)}`);
  console.log('\nwrote the tables into bench/README.md');
}
