// Benchmarks (`npm run bench`, after a build): median of warm runs per workload on each device.
// Prints a markdown table with the adapter and machine; `--write` also puts it into bench/README.md.
// Usage: node bench/run.mjs [--runs N] [--budget SECONDS] [--only NAME-PREFIX] [--write]
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import * as sn from '../dist/index.js';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
};
// Up to RUNS timed runs, stopping early once BUDGET ms of timed work passed (but at least MIN_RUNS).
const RUNS = arg('runs', 15), BUDGET = arg('budget', 5) * 1000, MIN_RUNS = 3, WARMUP = 2;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Waits until the device has finished everything queued (no readback: times the kernels alone). */
const sync = (device) => sn.synchronize(device);

/** Median ms of `fn` (which returns a tensor to dispose) over warm runs, and how many were timed. */
async function time(device, fn) {
  const ms = [];
  for (let i = 0; i < WARMUP; i++) {
    fn().dispose();
    await sync(device);
  }
  const start = performance.now();
  while (ms.length < RUNS && (ms.length < MIN_RUNS || performance.now() - start < BUDGET)) {
    const t0 = performance.now();
    const out = fn();
    await sync(device);
    ms.push(performance.now() - t0);
    out.dispose();
  }
  return { ms: median(ms), n: ms.length };
}

const N = 2 ** 20;
const gflops = (flop) => (ms) => `${(flop / (ms * 1e6)).toFixed(2)} GFLOP/s`;
const gbps = (bytes) => (ms) => `${(bytes / (ms * 1e6)).toFixed(2)} GB/s`;
const randn = (shape, seed, device) => sn.randn(shape, { seed, device });

const matmul = (n) => ({
  name: `matmul ${n}×${n}×${n}`,
  rate: gflops(2 * n ** 3),
  setup: (device) => [randn([n, n], 1, device), randn([n, n], 2, device)],
  run: ([a, b]) => sn.matmul(a, b),
});
const WORKLOADS = [
  matmul(256),
  matmul(512),
  matmul(1024),
  {
    name: 'conv2d 1×64×56×56, 3×3→64, pad 1',
    rate: gflops(2 * 64 * 64 * 9 * 56 * 56),
    setup: (device) => [randn([1, 64, 56, 56], 1, device), randn([64, 64, 3, 3], 2, device)],
    run: ([x, w]) => sn.conv2d(x, w, null, { padding: 1 }),
  },
  {
    name: 'elementwise add, 2^20 float32',
    // Reads two arrays and writes one.
    rate: gbps(3 * 4 * N),
    setup: (device) => [randn([N], 1, device), randn([N], 2, device)],
    run: ([a, b]) => sn.add(a, b),
  },
  {
    name: 'elementwise gelu, 2^20 float32',
    rate: gbps(2 * 4 * N),
    setup: (device) => [randn([N], 1, device)],
    run: ([a]) => sn.gelu(a),
  },
  {
    name: 'softmax 512×1000, last dim',
    rate: gbps(2 * 4 * 512 * 1000),
    setup: (device) => [randn([512, 1000], 1, device)],
    run: ([x]) => sn.softmax(x, -1),
  },
  {
    name: 'layerNorm 512×768, with weight and bias',
    rate: gbps(2 * 4 * 512 * 768),
    setup: (device) => [randn([512, 768], 1, device), randn([768], 2, device), randn([768], 3, device)],
    run: ([x, w, b]) => sn.layerNorm(x, [768], w, b, { eps: 1e-5 }),
  },
];

// Other processes skew every number on a small machine: the header shows how busy it was.
const load0 = os.loadavg()[0];
const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : null;
await sn.init({ device: 'webgpu' });
const rows = [];
let failed = false;
for (const w of WORKLOADS.filter((w) => !only || w.name.startsWith(only))) {
  const cells = [];
  for (const device of ['webgpu', 'cpu']) {
    const inputs = w.setup(device);
    try {
      const { ms, n } = await time(device, () => w.run(inputs));
      cells.push(`${ms < 10 ? ms.toFixed(2) : ms.toFixed(1)} ms · ${w.rate(ms)}`);
      console.error(`${w.name} on ${device}: median ${ms.toFixed(2)} ms of ${n} runs`);
    } catch (e) {
      if (!/no WebGPU kernel for/.test(String(e?.message))) {
        failed = true;
        console.error(`${w.name} on ${device}: ${e?.stack ?? e}`);
      }
      cells.push(/no WebGPU kernel for/.test(String(e?.message)) ? 'n/a (no WebGPU kernel yet)' : `error: ${String(e?.message ?? e).split('\n')[0]}`);
    }
    inputs.forEach((t) => t.dispose());
  }
  rows.push(`| ${w.name} | ${cells.join(' | ')} |`);
}

const cpus = os.cpus();
const load = `load average ${load0.toFixed(1)} before, ${os.loadavg()[0].toFixed(1)} after`;
const machine = `${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${cpus.length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${load} · Node ${process.version}`;
const table = [
  `${new Date().toISOString().slice(0, 10)} · ${machine} · ${sn.adapterInfo()?.line ?? 'no WebGPU adapter'}`,
  '',
  `Median of up to ${RUNS} warm runs (at least ${MIN_RUNS}, ${BUDGET / 1000} s budget) after ${WARMUP} warm-ups; WebGPU times are the kernels alone (inputs resident, no readback).`,
  '',
  '| workload | webgpu | cpu |',
  '| --- | ---: | ---: |',
  ...rows,
].join('\n');
console.log(`\n${table}`);

if (process.argv.includes('--write')) {
  // Replaces what lies between the two markers in bench/README.md.
  const readme = new URL('./README.md', import.meta.url);
  const text = readFileSync(readme, 'utf8');
  const [start, end] = ['<!-- bench/run.mjs results: start -->', '<!-- bench/run.mjs results: end -->'];
  const a = text.indexOf(start), b = text.indexOf(end);
  if (a < 0 || b < a) throw new Error(`bench/README.md lacks the markers ${start} … ${end}`);
  writeFileSync(readme, `${text.slice(0, a + start.length)}\n${table}\n${text.slice(b)}`);
  console.log('\nwrote the table into bench/README.md');
}
process.exitCode = failed ? 1 : 0;
