// The CPU backend's WebAssembly SIMD kernels (src/kernels/wasm/) against its JavaScript reference
// kernels, on the workloads of the peer harness. Build first (`npm run build`), then:
//   node bench/cpu-kernels.mjs [--runs N]
// Each time is one op on the CPU, output read back (the data is already on the host): the wasm kernels
// on all cores, on one thread, and the JavaScript reference kernels. The three take turns on each run
// so all see the same machine; on a shared machine the spread (min–max) is large.
import os from 'node:os';
import * as sn from '../dist/index.js';
import { setCpuKernels, setCpuThreads } from '../dist/backend/cpu.js';

const i = process.argv.indexOf('--runs');
const RUNS = i < 0 ? 7 : Number(process.argv[i + 1]), WARMUP = 2;
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

await sn.init({ device: 'cpu' });

const workloads = {
  'matmul 1024³': () => {
    const a = sn.randn([1024, 1024], { seed: 1 }), b = sn.randn([1024, 1024], { seed: 2 });
    return () => sn.matmul(a, b);
  },
  'conv2d 1×64×56×56, 3×3→64': () => {
    const x = sn.randn([1, 64, 56, 56], { seed: 3 }), w = sn.randn([64, 64, 3, 3], { seed: 4 });
    return () => sn.conv2d(x, w, { padding: 1 });
  },
  'linear 64×784 → 512': () => {
    const x = sn.randn([64, 784], { seed: 5 }), w = sn.randn([512, 784], { seed: 6 }), b = sn.randn([512], { seed: 7 });
    return () => sn.linear(x, w, b);
  },
  'depthwise conv2d 1×96×80×80, 3×3': () => {
    const x = sn.randn([1, 96, 80, 80], { seed: 10 }), w = sn.randn([96, 1, 3, 3], { seed: 11 });
    return () => sn.conv2d(x, w, { padding: 1, groups: 96 });
  },
  'depthwise conv2d 1×192×40×40, 5×5 stride 2': () => {
    const x = sn.randn([1, 192, 40, 40], { seed: 12 }), w = sn.randn([192, 1, 5, 5], { seed: 13 });
    return () => sn.conv2d(x, w, { padding: 2, stride: 2, groups: 192 });
  },
  // PP-OCR det's neck and head: its 3×3 conv with few output channels, nearest ×2…×8 upsampling, the 2×2/2 transposed conv.
  'conv2d 1×96×80×80, 3×3→24': () => {
    const x = sn.randn([1, 96, 80, 80], { seed: 17 }), w = sn.randn([24, 96, 3, 3], { seed: 18 }), b = sn.randn([24], { seed: 19 });
    return () => sn.conv2d(x, w, b, { padding: 1 });
  },
  'interpolate nearest ×4, 1×24×40×40': () => {
    const x = sn.randn([1, 24, 40, 40], { seed: 20 });
    return () => sn.interpolate(x, { scaleFactor: 4, mode: 'nearest' });
  },
  'convTranspose2d 2×2/2, 1×24×80×80→24': () => {
    const x = sn.randn([1, 24, 80, 80], { seed: 21 }), w = sn.randn([24, 24, 2, 2], { seed: 22 });
    return () => sn.convTranspose2d(x, w, { stride: 2 });
  },
  'maxPool2d 3×3/2, 1×64×112×112': () => {
    const x = sn.randn([1, 64, 112, 112], { seed: 14 });
    return () => sn.maxPool2d(x, 3, { stride: 2, padding: 1 });
  },
  'mean over H·W, 8×128×16×16': () => {
    const x = sn.randn([8, 128, 16, 16], { seed: 15 });
    return () => sn.mean(x, [2, 3]);
  },
  'sum over dim 0, 512×1000': () => {
    const x = sn.randn([512, 1000], { seed: 16 });
    return () => sn.sum(x, 0);
  },
  'eltwise chain 2^20': () => {
    const x = sn.randn([1 << 20], { seed: 8 });
    return () => sn.relu(x.mul(2).add(1)).sub(0.5);
  },
  'softmax 512×1000': () => {
    const x = sn.randn([512, 1000], { seed: 9 });
    return () => sn.softmax(x, -1);
  },
};

console.log(`cpu kernels, ${os.cpus()[0]?.model ?? 'cpu'} ×${os.cpus().length}, node ${process.version}, ${new Date().toISOString()}; ${RUNS} runs after ${WARMUP} warm-up`);
const THREADS = os.availableParallelism?.() ?? os.cpus().length;
const PATHS = { [`wasm ×${THREADS}`]: ['wasm', THREADS], 'wasm ×1': ['wasm', 1], js: ['js', 1] };
console.log(`| workload | ${Object.keys(PATHS).map((p) => `${p} ms (median, min–max)`).join(' | ')} |`);
console.log(`| --- | ${Object.keys(PATHS).map(() => '---:').join(' | ')} |`);
for (const [name, make] of Object.entries(workloads)) {
  const run = make();
  const ms = Object.fromEntries(Object.keys(PATHS).map((p) => [p, []]));
  for (let r = 0; r < WARMUP + RUNS; r++) {
    for (const [path, [kind, threads]] of Object.entries(PATHS)) {
      setCpuKernels(kind);
      setCpuThreads(threads);
      // Let a starting thread pool come up (it starts in the background on first use).
      await new Promise((resolve) => setTimeout(resolve, r === 0 ? 200 : 1));
      const t0 = performance.now();
      const y = run();
      await y.data();
      const t = performance.now() - t0;
      y.dispose();
      if (r >= WARMUP) ms[path].push(t);
    }
  }
  const fmt = (xs) => `${median(xs).toFixed(1)} (${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)})`;
  console.log(`| ${name} | ${Object.values(ms).map(fmt).join(' | ')} |`);
}
