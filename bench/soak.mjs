// Soak test: a long-running process must not grow. Runs eager and jitted calls with per-call scalars
// and a few shapes on each device, and samples every N calls the compiled pipelines, the buffer
// pool's bytes, live tensors and storages and the jit signature cache. After warm-up (the first 10%
// of calls or 150, by which every shape and kernel has been seen) every figure must stay flat: exactly the
// warm-up value for tensors, storages, pooled bytes and pipelines.
// Usage: node bench/soak.mjs [--calls 10000] [--every 1000] [--devices cpu,webgpu]   (uses dist/: `npm run build` first)
// The test suite runs a short version (test/reliability-soak.test.ts) through the exported `soak`.
import { pathToFileURL } from 'node:url';

const SHAPES = [[7, 13], [64, 64], [1, 1000]];

/** One sample of what the process holds on `device`. */
function sample(sn, device, calls, jitted) {
  const m = sn.memory();
  const d = m.devices[device] ?? { storages: 0, bytes: 0 };
  return {
    calls,
    tensors: m.tensors,
    storages: d.storages,
    bytes: d.bytes,
    reservedBytes: d.pool?.reservedBytes ?? null,
    idleBytes: d.pool?.idleBytes ?? null,
    // Compiled kernels: the pipeline cache and the device's other kernel caches (the CPU's wasm modules, int8 tables).
    pipelines: d.pipelines ? d.pipelines.entries + Object.values(d.caches ?? {}).reduce((a, c) => a + c.entries, 0) : null,
    compiled: d.pipelines ? d.pipelines.misses + Object.values(d.caches ?? {}).reduce((a, c) => a + c.misses, 0) : null,
    jitPlans: jitted.reduce((a, f) => a + f.stats().entries, 0),
    jitRetraces: jitted.reduce((a, f) => a + f.stats().misses, 0),
  };
}

/**
 * Runs `calls` calls on `device` (one in three jitted, the others eager; the scalar changes every
 * call, the shape cycles through SHAPES) and samples every `every` calls. `sn` is the library (dist/
 * or the sources). Resolves to the samples and the figures that grew after warm-up (empty: flat).
 */
export async function soak(sn, { device, calls = 10_000, every = 1000, log = () => {} }) {
  const inputs = SHAPES.map((shape, i) => sn.keep(sn.randn(shape, { seed: i, device })));
  const weights = SHAPES.map(([, n], i) => sn.keep(sn.randn([n, 8], { seed: 10 + i, device })));
  // A scalar argument is part of the jit signature by value: each new value traces anew, and the
  // signature cache (LRU, 16 entries) bounds the plans; their fused kernels share pipelines because
  // the scalars are kernel parameters. A captured scalar would be frozen at the first trace.
  const scaled = sn.jit((x, s) => x.mul(s).add(1).relu().sum());
  const dense = sn.jit((x, w) => x.matmul(w).add(0.5).tanh());
  const jitted = [scaled, dense];
  const samples = [];
  // Warm-up: every shape and kernel seen, and the jit's signature cache full (a scaled call every 6).
  const warmup = Math.max(every, Math.floor(calls / 10), 150);
  let checksum = 0;
  for (let i = 1; i <= calls; i++) {
    const k = i % SHAPES.length, x = inputs[k], s = 1 + (i % 997) / 7;
    let out;
    if (i % 3 === 0) out = i % 2 ? scaled(x, s) : dense(x, weights[k]);
    else out = sn.tidy(() => x.mul(s).add(-s / 2).clamp(-s, s).sum());
    if (i % 50 === 0) checksum += (await out.data())[0];
    out.dispose();
    if (i % every === 0 || i === warmup) {
      await sn.synchronize(device);
      const s = sample(sn, device, i, jitted);
      samples.push(s);
      log(s);
    }
  }
  const base = samples.find((s) => s.calls === warmup);
  const last = samples[samples.length - 1];
  const grew = [];
  for (const key of ['tensors', 'storages', 'bytes', 'reservedBytes', 'pipelines', 'jitPlans']) {
    const after = samples.filter((s) => s.calls >= warmup).map((s) => s[key]);
    if (after.some((v) => v !== base[key])) grew.push(`${key}: ${after.join(' → ')}`);
  }
  for (const f of jitted) f.dispose();
  for (const t of [...inputs, ...weights]) t.dispose();
  return { samples, base, last, grew, checksum };
}

async function main() {
  const option = (name, fallback) => {
    const i = process.argv.indexOf(`--${name}`);
    return i < 0 ? fallback : process.argv[i + 1];
  };
  const calls = Number(option('calls', 10_000)), every = Number(option('every', 1000));
  const sn = await import('../dist/index.js');
  let failed = false;
  for (const device of option('devices', 'cpu,webgpu').split(',')) {
    await sn.init({ device });
    console.log(`\n${device}: ${calls} calls (1/3 jitted), scalars varying per call, shapes ${SHAPES.map((s) => `[${s}]`).join(' ')}`);
    console.log('calls\ttensors\tstorages\tbytes\treserved\tidle\tpipelines\tcompiled\tjit plans\tjit traces\tms');
    const t0 = performance.now();
    const { grew } = await soak(sn, {
      device,
      calls,
      every,
      log: (s) => console.log([s.calls, s.tensors, s.storages, s.bytes, s.reservedBytes ?? '-', s.idleBytes ?? '-', s.pipelines ?? '-', s.compiled ?? '-', s.jitPlans, s.jitRetraces, Math.round(performance.now() - t0)].join('\t')),
    });
    if (grew.length) {
      failed = true;
      console.log(`NOT FLAT after warm-up on ${device}:\n  ${grew.join('\n  ')}`);
    } else {
      console.log(`flat after warm-up on ${device}`);
    }
  }
  process.exitCode = failed ? 1 : 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
