// One peer-harness workload on sinter's CPU peer, timed as the harness times it (its peers/sinter.mjs run(): upload,
// jitted call, readback) but many times, printing the distribution of the per-run times (a histogram, percentiles)
// and, per run, how the thread pool's workers took their tasks (poolStats: awake, or woken from sleep). The harness
// takes 15 runs after 3 warm-ups, so a bimodal distribution shows as a median that jumps between runs of it.
// Usage: node bench/peers/run-distribution.mjs [--workload mlp_b64] [--runs 300] [--warmup 3] [--threads 2]
//        [--dist path/to/dist/index.js] [--before cnn_b1,...] [--live] [--trace]
// --before: workloads run first (18 runs each), as the harness's child does; --live: print each run as it ends.
// Build first (npm run build); run under `flock /tmp/bench.lock` like any timing.
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const argv = process.argv.slice(2);
const opt = (name, dflt) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : dflt);
const workloadId = opt('--workload', 'mlp_b64');
const runs = Number(opt('--runs', 300)), warmup = Number(opt('--warmup', 3));
const dist = path.resolve(opt('--dist', path.join(root, 'dist', 'index.js')));
const before = opt('--before', '').split(',').filter(Boolean);
const live = argv.includes('--live');
process.env.SINTER_CPU_THREADS = opt('--threads', '2');
process.env.SINTER_DIST = dist;

const harness = path.resolve(root, '../shared/peers');
const { makeData, getWorkload } = await import(pathToFileURL(path.join(harness, 'lib/workloads.mjs')).href);
const { createPeer } = await import(pathToFileURL(path.join(harness, 'peers/sinter.mjs')).href);
// The same module instance the library uses (dist/index.js imports it by this path).
const { poolStats } = await import(pathToFileURL(path.join(path.dirname(dist), 'kernels/wasm/threads.js')).href);

const peer = await createPeer('cpu');
for (const id of before) {
  const wl = getWorkload(id), p = await peer.prepare(wl, makeData(wl));
  for (let i = 0; i < 18; i++) await p.run();
  p.dispose();
}
const wl = getWorkload(workloadId);
const prepared = await peer.prepare(wl, makeData(wl));
for (let i = 0; i < warmup; i++) await prepared.run();
const rows = [];
for (let i = 0; i < runs; i++) {
  const s0 = poolStats(), t0 = performance.now();
  await prepared.run();
  const ms = performance.now() - t0, s1 = poolStats();
  rows.push({ ms, awake: s1.takenAwake - s0.takenAwake, woken: s1.takenWoken - s0.takenWoken, onWorkers: s1.tasksOnWorkers - s0.tasksOnWorkers });
  // --live: each run as it ends (beside node --trace-gc's lines, say).
  if (live) console.log(`run ${i} ${ms.toFixed(2)} ms, worker tasks ${rows.at(-1).onWorkers} (awake ${rows.at(-1).awake}, woken ${rows.at(-1).woken})`);
}
prepared.dispose();

const sorted = rows.map((r) => r.ms).sort((a, b) => a - b);
const q = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
console.log(`${workloadId}, ${process.env.SINTER_CPU_THREADS} threads, ${runs} runs after ${warmup} warm-ups (${path.relative(process.cwd(), dist)})`);
console.log(`min ${q(0).toFixed(3)}  p10 ${q(0.1).toFixed(3)}  p25 ${q(0.25).toFixed(3)}  median ${q(0.5).toFixed(3)}  p75 ${q(0.75).toFixed(3)}  p90 ${q(0.9).toFixed(3)}  max ${q(1).toFixed(3)} ms`);
// Medians of the harness's 15-run windows: how much one harness run's median can move.
const windows = [];
for (let i = 0; i + 15 <= rows.length; i += 15) windows.push(rows.slice(i, i + 15).map((r) => r.ms).sort((a, b) => a - b)[7]);
console.log(`medians of 15-run windows: ${windows.map((m) => m.toFixed(2)).join(' ')}`);
const lo = q(0), hi = q(0.98), bins = 20, width = (hi - lo) / bins || 1;
const counts = new Array(bins).fill(0);
for (const ms of sorted) counts[Math.min(bins - 1, Math.floor((ms - lo) / width))]++;
const most = Math.max(...counts);
counts.forEach((n, b) => console.log(`${(lo + b * width).toFixed(2).padStart(6)} ${String(n).padStart(4)} ${'#'.repeat(Math.round((60 * n) / most))}`));
// How the workers took their tasks, for fast and slow runs apart.
const median = q(0.5);
for (const [label, part] of [['runs <= median', rows.filter((r) => r.ms <= median)], ['runs > median', rows.filter((r) => r.ms > median)]]) {
  const sum = (k) => part.reduce((a, r) => a + r[k], 0) / Math.max(1, part.length);
  console.log(`${label}: per run, worker tasks ${sum('onWorkers').toFixed(2)} (taken awake ${sum('awake').toFixed(2)}, woken ${sum('woken').toFixed(2)})`);
}
if (argv.includes('--trace')) console.log(rows.map((r) => `${r.ms.toFixed(2)}:${r.awake}/${r.woken}/${r.onWorkers}`).join(' '));
process.exit(0);
