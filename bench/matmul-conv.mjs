// WebGPU matmul and conv2d against a naive WGSL matmul (one invocation per output, the baseline of
// issue 3), on the adapter sinter opens, timed by sn.benchmark.Timer (median and IQR). Build first
// (`npm run build`), then:
//   node bench/matmul-conv.mjs [--budget SECONDS] [--threshold FRACTION]
// Kernel times: the op's dispatches, then a wait for the queue (no readback). End-to-end times, as
// the peer harness in ../shared/peers measures: upload the inputs, compute, read the output back.
import { parseArgs } from 'node:util';
import * as sn from '../dist/index.js';
import { getBackend } from '../dist/backend/backend.js';
import { TIMING_ARGS, describe, loadAverage, log, machineLine, measure, medianIqr, method, startProgress, stopProgress, timingOptions } from './timing.mjs';

const { values } = parseArgs({ options: TIMING_ARGS });
// Up to --budget seconds of timed work per figure (default 10: matmul 1024³ takes seconds a run on SwiftShader, and a
// median and IQR want several measurements).
const timing = timingOptions(values, 10);
const load0 = loadAverage();

await sn.init({ device: 'webgpu', quiet: true });
// The naive baseline kernel is dispatched on the raw GPUDevice, outside sinter's ops.
const { device } = getBackend('webgpu');

/** Waits until the device has run everything queued. */
const sync = () => sn.synchronize('webgpu');

/** The baseline: C = A·B for n×n float32 matrices, one invocation per output looping over k. */
function naiveMatmul(n) {
  const code = `@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@compute @workgroup_size(8, 8) fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x >= ${n}u || g.y >= ${n}u) { return; }
  var s = 0.0;
  for (var k = 0u; k < ${n}u; k++) { s += a[g.y * ${n}u + k] * b[k * ${n}u + g.x]; }
  c[g.y * ${n}u + g.x] = s;
}`;
  const buffer = (seed) => {
    const data = new Float32Array(n * n);
    for (let i = 0, s = seed; i < data.length; i++) data[i] = ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
    const buf = device.createBuffer({ size: data.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(buf, 0, data);
    return buf;
  };
  const buffers = [buffer(1), buffer(2), device.createBuffer({ size: n * n * 4, usage: GPUBufferUsage.STORAGE })];
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code }), entryPoint: 'main' } });
  const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })) });
  return {
    async run() {
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(Math.ceil(n / 8), Math.ceil(n / 8));
      pass.end();
      device.queue.submit([encoder.finish()]);
      await device.queue.onSubmittedWorkDone();
    },
    dispose: () => buffers.forEach((b) => b.destroy()),
  };
}

const rows = [];
const measurements = [];
/**
 * Times `stmt` (async; it frees what it makes) as the figure `what` ("workload (how)": Compare's row and column),
 * adds its table row, and returns its Measurement.
 */
async function report(what, flop, stmt) {
  const [, workload, how] = /^(.*) \((.*)\)$/.exec(what);
  const m = await measure({ stmt, sync: ['webgpu'], label: 'WebGPU matmul and conv2d', subLabel: workload, description: how, ...timing });
  measurements.push(m);
  rows.push(`| ${what} | ${medianIqr(m)} | ${(flop / m.median / 1e9).toFixed(2)} |`);
  log(`${what}: ${describe(m)}`);
  return m;
}

// Matmul: kernel time for n = 256, 512 (and the naive baseline), 1024, and end-to-end at 1024; conv2d: kernel and
// end-to-end.
startProgress(7);
const matmul = {};
let naive512;
for (const n of [256, 512, 1024]) {
  const a = sn.randn([n, n], { seed: 1, device: 'webgpu' }), b = sn.randn([n, n], { seed: 2, device: 'webgpu' });
  matmul[n] = await report(`matmul ${n}³ (kernel)`, 2 * n ** 3, async () => {
    const c = sn.matmul(a, b);
    await sync();
    c.dispose();
  });
  if (n === 512) {
    const naive = naiveMatmul(n);
    naive512 = await report('naive WGSL matmul 512³, one invocation per output (kernel)', 2 * 512 ** 3, () => naive.run());
    naive.dispose();
  }
  a.dispose();
  b.dispose();
}

const host = (shape, seed) => sn.randn(shape, { seed }).data();
{
  const [ha, hb] = [await host([1024, 1024], 3), await host([1024, 1024], 4)];
  await report('matmul 1024³ (upload, compute, read back)', 2 * 1024 ** 3, async () => {
    const a = sn.tensor(ha, { shape: [1024, 1024], device: 'webgpu' }), b = sn.tensor(hb, { shape: [1024, 1024], device: 'webgpu' });
    const c = sn.matmul(a, b);
    await c.data();
    for (const t of [a, b, c]) t.dispose();
  });
}

// conv2d 1×64×56×56, 3×3 → 64, padding 1, no bias: kernel time and end-to-end.
const convFlop = 2 * 64 * 56 * 56 * 64 * 9;
const w = sn.randn([64, 64, 3, 3], { seed: 5, device: 'webgpu' });
{
  const x = sn.randn([1, 64, 56, 56], { seed: 6, device: 'webgpu' });
  await report('conv2d 1×64×56×56, 3×3 → 64, pad 1 (kernel)', convFlop, async () => {
    const y = sn.conv2d(x, w, null, { padding: 1 });
    await sync();
    y.dispose();
  });
  x.dispose();
}
{
  const hx = await host([1, 64, 56, 56], 7);
  await report('conv2d 1×64×56×56, 3×3 → 64, pad 1 (upload, compute, read back)', convFlop, async () => {
    const x = sn.tensor(hx, { shape: [1, 64, 56, 56], device: 'webgpu' });
    const y = sn.conv2d(x, w, null, { padding: 1 });
    await y.data();
    x.dispose();
    y.dispose();
  });
}
w.dispose();

stopProgress();
new sn.benchmark.Compare(measurements).trimSignificantFigures().print();
console.log(`sinter matmul and conv2d on WebGPU · ${machineLine(load0)}\n`);
console.log(`${method(timing)} GFLOP/s are of the median.\n`);
console.log('| workload | ms | GFLOP/s |\n| --- | ---: | ---: |');
console.log(rows.join('\n'));
console.log(`\nmatmul 512³ is ${(naive512.median / matmul[512].median).toFixed(1)}× the naive kernel's throughput (by the medians).`);
