// Benchmarks (`npm run bench`, after a build): each workload on each device, timed by sn.benchmark.Timer (median and
// IQR). Prints a markdown table with the date, adapter and machine, and sn.benchmark.Compare's table; `--write` also
// puts the markdown into bench/README.md.
// Usage: node bench/run.mjs [--budget SECONDS] [--threshold FRACTION] [--only NAME-PREFIX] [--write]
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as sn from '../dist/index.js';
import { TIMING_ARGS, describe, loadAverage, log, machineLine, measure, medianIqr, method, startProgress, stopProgress, timingOptions } from './timing.mjs';

const { values } = parseArgs({ options: { ...TIMING_ARGS, only: { type: 'string' }, write: { type: 'boolean' } } });
// Up to --budget seconds of timed work per figure (default 5).
const timing = timingOptions(values, 5);

const N = 2 ** 20;
// Rates of the median time.
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
const load0 = loadAverage();
await sn.init({ device: 'webgpu' });
const rows = [];
const measurements = [];
let failed = false;
const workloads = WORKLOADS.filter((w) => !values.only || w.name.startsWith(values.only));
startProgress(2 * workloads.length);
for (const w of workloads) {
  const cells = [];
  for (const device of ['webgpu', 'cpu']) {
    const inputs = w.setup(device);
    try {
      // One run: the op, then a wait for the device (no readback: the kernels alone).
      const m = await measure({
        stmt: async () => {
          const out = w.run(inputs);
          await sn.synchronize(device);
          out.dispose();
        },
        sync: [device],
        label: 'sinter ops',
        subLabel: w.name,
        description: device,
        ...timing,
      });
      measurements.push(m);
      const ms = m.median * 1e3;
      cells.push(`${medianIqr(m, ' ms')} · ${w.rate(ms)}`);
      log(`${w.name} on ${device}: ${describe(m)}`);
    } catch (e) {
      if (!/no WebGPU kernel for/.test(String(e?.message))) {
        failed = true;
        log(`${w.name} on ${device}: ${e?.stack ?? e}`);
      }
      cells.push(/no WebGPU kernel for/.test(String(e?.message)) ? 'n/a (no WebGPU kernel yet)' : `error: ${String(e?.message ?? e).split('\n')[0]}`);
    }
    inputs.forEach((t) => t.dispose());
  }
  rows.push(`| ${w.name} | ${cells.join(' | ')} |`);
}
stopProgress();

if (measurements.length) new sn.benchmark.Compare(measurements).trimSignificantFigures().print();
const table = [
  machineLine(load0),
  '',
  `${method(timing)} Rates are of the median. WebGPU times are the kernels alone (inputs resident, no readback).`,
  '',
  '| workload | webgpu | cpu |',
  '| --- | ---: | ---: |',
  ...rows,
].join('\n');
console.log(`\n${table}`);

if (values.write) {
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
