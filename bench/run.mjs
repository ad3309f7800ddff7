// Benchmarks (`npm run bench`, after a build): median of warm runs per workload on each device.
// Prints a markdown table with the adapter and machine. Usage: node bench/run.mjs [--runs N]
import os from 'node:os';
import * as sn from '../dist/index.js';
import { getBackend } from '../dist/backend/backend.js';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
};
const RUNS = arg('runs', 15), WARMUP = 3;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Waits until the device has finished everything queued (no readback: times the kernels alone). */
async function sync(device) {
  if (device !== 'webgpu') return;
  const b = getBackend('webgpu');
  b.batch.flush();
  await b.device.queue.onSubmittedWorkDone();
}

/** Median ms of `fn` (which returns tensors to dispose) over warm runs. */
async function time(device, fn) {
  const ms = [];
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const t0 = performance.now();
    const out = fn();
    await sync(device);
    const t = performance.now() - t0;
    out.dispose();
    if (i >= WARMUP) ms.push(t);
  }
  return median(ms);
}

const N = 2 ** 20;
const workloads = [
  {
    name: 'elementwise add, 2^20 float32',
    unit: 'GB/s',
    // Reads two arrays and writes one.
    rate: (ms) => (3 * 4 * N) / (ms * 1e6),
    setup: (device) => [sn.randn([N], { seed: 1, device }), sn.randn([N], { seed: 2, device })],
    run: ([a, b]) => sn.add(a, b),
  },
  {
    name: 'elementwise gelu, 2^20 float32',
    unit: 'GB/s',
    rate: (ms) => (2 * 4 * N) / (ms * 1e6),
    setup: (device) => [sn.randn([N], { seed: 1, device })],
    run: ([a]) => sn.gelu(a),
  },
];

await sn.init({ device: 'webgpu' });
const rows = [];
for (const w of workloads) {
  const cells = [];
  for (const device of ['webgpu', 'cpu']) {
    const inputs = w.setup(device);
    const ms = await time(device, () => w.run(inputs));
    inputs.forEach((t) => t.dispose());
    cells.push(`${ms.toFixed(2)} ms · ${w.rate(ms).toFixed(2)} ${w.unit}`);
  }
  rows.push(`| ${w.name} | ${cells.join(' | ')} |`);
}
const machine = `${os.cpus()[0]?.model ?? 'cpu'} ×${os.cpus().length}`;
console.log(`\n${new Date().toISOString().slice(0, 10)} · ${machine} · Node ${process.version} · WebGPU: ${getBackend('webgpu').adapter}`);
console.log(`median of ${RUNS} warm runs; WebGPU times are kernels alone (inputs resident, no readback)\n`);
console.log('| workload | webgpu | cpu |\n| --- | ---: | ---: |');
for (const r of rows) console.log(r);
