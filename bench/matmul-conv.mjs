// WebGPU matmul and conv2d against a naive WGSL matmul (one invocation per output, the baseline of
// issue 3), on the adapter sinter opens. Build first (`npm run build`), then:
//   node bench/matmul-conv.mjs [--runs N]
// Kernel times: the op's dispatches, then a wait for the queue (no readback). End-to-end times, as
// the peer harness in ../shared/peers measures: upload the inputs, compute, read the output back.
import os from 'node:os';
import * as sn from '../dist/index.js';
import { getBackend } from '../dist/backend/backend.js';


const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
};
const RUNS = arg('runs', 7), WARMUP = 2;
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

await sn.init({ device: 'webgpu', quiet: true });
// The naive baseline kernel is dispatched on the raw GPUDevice, outside sinter's ops.
const backend = getBackend('webgpu');
const { device } = backend;

/** Waits until the device has run everything queued. */
const sync = () => sn.synchronize('webgpu');

/**
 * Median ms of each async fn over warm runs, the fns taking turns so that all see the same machine
 * (its speed drifts while other work shares it). A fn returns what to dispose, or nothing.
 */
async function time(...fns) {
  const ms = fns.map(() => []);
  for (let i = 0; i < WARMUP + RUNS; i++) {
    for (const [f, fn] of fns.entries()) {
      const t0 = performance.now();
      const out = await fn();
      const t = performance.now() - t0;
      out?.dispose();
      if (i >= WARMUP) ms[f].push(t);
    }
  }
  return fns.length === 1 ? median(ms[0]) : ms.map(median);
}

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

const gflops = (flop, ms) => (flop / ms / 1e6).toFixed(2);
const rows = [];
const report = (what, ms, flop) => {
  rows.push(`| ${what} | ${ms.toFixed(1)} | ${gflops(flop, ms)} |`);
  console.error(`${what}: ${ms.toFixed(1)} ms`);
};

// Matmul: kernel time for n = 256, 512 (taking turns with the naive baseline), 1024, and end-to-end at 1024.
const matmulMs = {};
let naiveMs = 0;
for (const n of [256, 512, 1024]) {
  const a = sn.randn([n, n], { seed: 1, device: 'webgpu' }), b = sn.randn([n, n], { seed: 2, device: 'webgpu' });
  const run = async () => {
    const c = sn.matmul(a, b);
    await sync();
    return c;
  };
  if (n === 512) {
    const naive = naiveMatmul(n);
    [matmulMs[n], naiveMs] = await time(run, () => naive.run());
    naive.dispose();
  } else matmulMs[n] = await time(run);
  report(`matmul ${n}³ (kernel)`, matmulMs[n], 2 * n ** 3);
  if (n === 512) report('naive WGSL matmul 512³ (one invocation per output)', naiveMs, 2 * 512 ** 3);
  a.dispose();
  b.dispose();
}

const host = (shape, seed) => sn.randn(shape, { seed }).data();
{
  const [ha, hb] = [await host([1024, 1024], 3), await host([1024, 1024], 4)];
  const ms = await time(async () => {
    const a = sn.tensor(ha, { shape: [1024, 1024], device: 'webgpu' }), b = sn.tensor(hb, { shape: [1024, 1024], device: 'webgpu' });
    const c = sn.matmul(a, b);
    await c.data();
    for (const t of [a, b, c]) t.dispose();
  });
  report('matmul 1024³ (upload, compute, read back)', ms, 2 * 1024 ** 3);
}

// conv2d 1×64×56×56, 3×3 → 64, padding 1, no bias: kernel time and end-to-end.
const convFlop = 2 * 64 * 56 * 56 * 64 * 9;
const w = sn.randn([64, 64, 3, 3], { seed: 5, device: 'webgpu' });
{
  const x = sn.randn([1, 64, 56, 56], { seed: 6, device: 'webgpu' });
  const ms = await time(async () => {
    const y = sn.conv2d(x, w, null, { padding: 1 });
    await sync();
    return y;
  });
  report('conv2d 1×64×56×56, 3×3 → 64, pad 1 (kernel)', ms, convFlop);
  x.dispose();
}
{
  const hx = await host([1, 64, 56, 56], 7);
  const ms = await time(async () => {
    const x = sn.tensor(hx, { shape: [1, 64, 56, 56], device: 'webgpu' });
    const y = sn.conv2d(x, w, null, { padding: 1 });
    await y.data();
    x.dispose();
    y.dispose();
  });
  report('conv2d 1×64×56×56, 3×3 → 64, pad 1 (upload, compute, read back)', ms, convFlop);
}
w.dispose();

console.log(`sinter matmul and conv2d on WebGPU, ${new Date().toISOString().slice(0, 10)}, median of ${RUNS} warm runs`);
console.log(`${backend.line}`);
console.log(`machine: ${os.cpus()[0]?.model}, ${os.availableParallelism()} cores, Node ${process.version}\n`);
console.log('| workload | ms | GFLOP/s |\n| --- | ---: | ---: |');
console.log(rows.join('\n'));
console.log(`\nmatmul 512³ is ${(naiveMs / matmulMs[512]).toFixed(1)}× the naive kernel's throughput.`);
