// Load test of the example HTTP server (examples/serve/server.mjs) with autocannon, on 127.0.0.1 only:
// QPS and p50/p95/p99 latency for the small CNN (bench/jit.mjs's) and PP-OCR's cls model, at several
// concurrencies, batching off (maxBatchSize 1) vs on, on the CPU and WebGPU. Beside it, in the same run,
// the model's own per-sample time called directly at batch 1 and batch 32 (input on the device, output
// read back): their ratio is the most batching can gain on that device. Each server runs in a child
// process (so autocannon does not share its event loop); each load run is bounded in time and requests.
// On the CPU the server runs the model in one WorkerPool replica (--cpu-workers) with every core's thread
// (--cpu-threads; the direct calls use as many), keeping its event loop free; --cpu-threads 1,2 runs the
// CPU section once per thread count (direct calls and servers alike), so both show in one run. A cell lasts --duration
// seconds, or longer for a slow model: 6 batch-32 times (measured directly; at most --max-duration), so
// that every cell sees several whole batches. Prints markdown tables.
// Usage (after npm run build): node bench/serve.mjs [--duration S] [--amount N] [--concurrency 1,8,32,128]
//        [--models cnn,cls] [--devices cpu,webgpu] [--max-queue 64] [--max-delay MS] [--cpu-workers 1] [--cpu-threads N]
//        [--max-duration 15] [--rounds 2]
// The batching-off and batching-on servers run side by side and each cell's --rounds runs alternate between
// them (off, on, off, on), so that a change in the machine's load reaches both alike; a cell pools its runs.
// Fair to both: the same server, replica, threads, queue bound and binary bodies; off is maxBatchSize 1
// (each request its own batch-1 call, two in flight per replica as with batching on, so the replica never
// waits for the event loop either way); on differs only in batching up to 32 (padded to BATCH_SIZES).
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import * as sn from '../dist/index.js';
import { clsModelBytes, loadModel } from '../examples/serve/server.mjs';

const { values: o } = parseArgs({
  options: {
    duration: { type: 'string', default: '3' }, amount: { type: 'string', default: '4000' },
    concurrency: { type: 'string', default: '1,8,32,128' }, models: { type: 'string', default: 'cnn,cls' },
    devices: { type: 'string', default: 'cpu,webgpu' }, 'max-queue': { type: 'string', default: '64' },
    'max-delay': { type: 'string' }, 'cpu-workers': { type: 'string', default: '1' }, 'cpu-threads': { type: 'string' },
    'max-duration': { type: 'string', default: '15' }, rounds: { type: 'string', default: '2' },
  },
});
const here = path.dirname(fileURLToPath(import.meta.url));
const SERVER = path.join(here, '../examples/serve/server.mjs');
const CONCURRENCY = o.concurrency.split(',').map(Number);
const SAMPLE = { cnn: [3, 32, 32], cls: [3, 48, 192] };
// Batches are padded up to the next of these (each compiled once, before serving): steps of at most a third,
// so padding wastes little compute (with powers of two a batch of 17 would run as 32).
const BATCH_SIZES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32];
const CORES = os.availableParallelism?.() ?? os.cpus().length;
// Replicas × threads per replica = cores: no more threads than cores, and the replica runs its model as the direct calls do.
const CPU_THREADS = (o['cpu-threads'] ?? String(Math.max(1, Math.floor(CORES / Number(o['cpu-workers']))))).split(',').map(Number);

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (sorted, q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] : NaN);
const fmt = (ms) => (Number.isNaN(ms) ? '–' : ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0));

/** The direct calls' runs: calls of one batch size in a row, the first RUN_UNTIMED of them untimed. */
const RUN_UNTIMED = 2, RUN_TIMED = 3;

/**
 * The model's own per-sample ms at batch 1 and batch 32, called directly (input on the device, output
 * read back). Each size is timed in short runs of consecutive calls, the first of each run untimed, and
 * the runs alternate: so each is timed in its steady state, as a server calling it back to back runs it
 * (a batch-1 call right after a batch-32 one also times refilling the caches the bigger call evicted, and
 * the CPU thread pool's watches adapting back to batch 1's short kernels: on the CPU that made batch 1
 * look 1.2-1.7× slower), and a change in the machine's load reaches both alike.
 */
async function direct(model, device) {
  const spec = await loadModel(model, { device });
  const inputs = { 1: sn.rand([1, ...SAMPLE[model]], { seed: 0, device }), 32: sn.rand([32, ...SAMPLE[model]], { seed: 0, device }) };
  const once = async (batch) => {
    const t0 = performance.now();
    const x = inputs[batch];
    const out = typeof spec.fn === 'function' ? spec.fn(x) : await spec.fn.run({ x });
    const outs = out instanceof sn.Tensor ? [out] : Object.values(out);
    for (const t of outs) await t.data();
    outs.forEach((t) => t.dispose());
    return performance.now() - t0;
  };
  for (const batch of [1, 32, 1, 32]) await once(batch);
  const ms = { 1: [], 32: [] };
  const start = performance.now();
  while (ms[32].length < 5 || (ms[32].length < 30 && performance.now() - start < 4000)) {
    for (const batch of [1, 32]) {
      for (let i = 0; i < RUN_UNTIMED; i++) await once(batch);
      for (let i = 0; i < RUN_TIMED; i++) ms[batch].push(await once(batch));
    }
  }
  Object.values(inputs).forEach((t) => t.dispose());
  spec.dispose();
  return { 1: median(ms[1]), 32: median(ms[32]) / 32 };
}

/** Starts the server in a child process; resolves to its URL and a stop function (SIGTERM: graceful). */
function startServer(model, device, batching, threads) {
  const args = [SERVER, '--port', '0', '--models', model, '--device', device, '--max-queue', o['max-queue'], ...(o['max-delay'] ? ['--max-delay', o['max-delay']] : []),
    '--max-batch', batching ? '32' : '1', '--batch-sizes', batching ? BATCH_SIZES.join(',') : '1',
    // On the CPU the model runs in a WorkerPool replica: run in the server's own thread, each batch would
    // block its event loop, so requests would not even be read (nor refused) while a batch runs.
    ...(device === 'cpu' ? ['--workers', o['cpu-workers'], '--threads', String(threads)] : [])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => (child.kill('SIGKILL'), reject(new Error(`the server did not start within 180 s:\n${log}`))), 180_000);
    const onData = (d) => {
      log += d;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve({
          url: m[1],
          stop: () => new Promise((done) => (child.once('exit', done), child.kill('SIGTERM'))),
        });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => (clearTimeout(timer), reject(new Error(`the server exited (code ${code}):\n${log}`))));
  });
}

/** The server's batches so far (from /metrics): how many, and how many samples they held. */
async function batches(url, model) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const grab = (name) => Number(new RegExp(`^${name}\\{model="${model}"\\} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { count: grab('sinter_batch_size_count'), samples: grab('sinter_batch_size_sum') };
}

/**
 * One bounded autocannon run, added to `into` (runs of one cell pool there): latencies of the 200s and
 * of the 503s, other errors, seconds, and the batches the server ran meanwhile.
 */
async function load(url, model, connections, seconds, amount, into = newCell()) {
  const n = SAMPLE[model].reduce((a, b) => a * b, 1);
  const body = Buffer.from(new Float32Array(Array.from({ length: n }, (_, i) => Math.sin(i))).buffer);
  const { latencies, refusals } = into;
  const counted = latencies.length + refusals.length + into.other;
  let other = 0;
  const before = await batches(url, model);
  const instance = autocannon({
    // autocannon's own `amount` would override `duration`: the request bound is enforced below instead.
    url: `${url}/v1/models/${model}/predict`, method: 'POST', connections, duration: seconds, timeout: 20,
    headers: { 'content-type': 'application/octet-stream', 'x-shape': SAMPLE[model].join(',') }, body,
  });
  instance.on('response', (_client, status, _bytes, ms) => {
    if (status === 200) latencies.push(ms);
    else if (status === 503) refusals.push(ms);
    else other++;
    if (latencies.length + refusals.length + into.other + other - counted === amount) instance.stop();
  });
  const result = await new Promise((resolve, reject) => instance.once('done', resolve).once('error', reject));
  const after = await batches(url, model);
  into.other += other + result.errors + result.timeouts;
  into.seconds += result.duration; // as autocannon measured
  into.batches += after.count - before.count;
  into.samples += after.samples - before.samples;
  return into;
}

function newCell() {
  return { latencies: [], refusals: [], other: 0, seconds: 0, batches: 0, samples: 0 };
}

/** A cell's QPS of 200s, latency percentiles of the 200s, how many got 503 and how fast (p99), and the mean batch. */
function summary(cell) {
  const latencies = [...cell.latencies].sort((a, b) => a - b);
  const refusals = [...cell.refusals].sort((a, b) => a - b);
  return {
    qps: latencies.length / cell.seconds, p50: pct(latencies, 0.5), p95: pct(latencies, 0.95), p99: pct(latencies, 0.99), ok: latencies.length,
    refused: refusals.length, refusedP99: pct(refusals, 0.99), other: cell.other, meanBatch: cell.samples / cell.batches,
  };
}

/**
 * Waits until the server has worked off what earlier runs left queued or running (requests autocannon
 * gave up on still run): one request, queued behind all of it, is answered.
 */
async function drain(url, model) {
  const n = SAMPLE[model].reduce((a, b) => a * b, 1);
  const res = await fetch(`${url}/v1/models/${model}/predict`, {
    method: 'POST', headers: { 'content-type': 'application/octet-stream', 'x-shape': SAMPLE[model].join(',') },
    body: new Float32Array(n), signal: AbortSignal.timeout(120_000),
  });
  await res.arrayBuffer();
}

const rows = [];
const directRows = [];
const t0 = performance.now();
const progress = (what) => process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(0)} s] ${what}\n`);
for (const device of o.devices.split(',')) {
  // On the CPU, once per thread count (the direct calls in this process and the servers' replicas alike).
  for (const threads of device === 'cpu' ? CPU_THREADS : [null]) {
    await sn.init({ device, quiet: true, ...(threads ? { threads } : {}) });
    const on = threads ? ` on ${threads} thread(s)` : '';
    for (const model of o.models.split(',')) {
      progress(`${model} on ${device}${on}: direct calls at batch 1 and 32`);
      const own = await direct(model, device);
      directRows.push({ model, device, threads, b1: own[1], b32: own[32], gain: own[1] / own[32] });
      // Long enough for several whole batches of 32 however slow the model, within --max-duration.
      const seconds = Math.min(Number(o['max-duration']), Math.max(Number(o.duration), Math.ceil((6 * 32 * own[32]) / 1000)));
      // Both servers run side by side (the idle one costs nothing), and their runs alternate: off, on, off, on…
      const servers = [];
      try {
        for (const batching of [false, true]) {
          progress(`${model} on ${device}${on}: starting the server with batching ${batching ? 'on' : 'off'}`);
          servers.push({ batching, ...(await startServer(model, device, batching, threads)) });
        }
        for (const { url } of servers) await load(url, model, 8, 1, 500); // warm the sockets and the allocator
        for (const c of CONCURRENCY) {
          const cells = servers.map(() => newCell());
          for (let round = 0; round < Number(o.rounds); round++) {
            for (const [i, { url, batching }] of servers.entries()) {
              await drain(url, model);
              progress(`  concurrency ${c}, batching ${batching ? 'on' : 'off'}, round ${round + 1}`);
              await load(url, model, c, seconds, Number(o.amount), cells[i]);
            }
          }
          servers.forEach(({ batching }, i) => rows.push({ model, device, threads, batching, c, seconds: seconds * Number(o.rounds), ...summary(cells[i]) }));
        }
      } finally {
        progress('  stopping');
        await Promise.all(servers.map((server) => server.stop()));
      }
    }
  }
}

const cpus = os.cpus();
const adapter = (() => {
  try {
    return sn.adapterInfo?.()?.description ?? '';
  } catch {
    return '';
  }
})();
console.log(`\n**Serving** (\`node bench/serve.mjs\`, ${new Date().toISOString().slice(0, 10)}; ${cpus.length}× ${cpus[0]?.model ?? 'CPU'}, load ${os.loadavg()[0].toFixed(1)}` +
  `${adapter ? `; WebGPU adapter: ${adapter}` : ''}; autocannon on 127.0.0.1, binary bodies, ${o.rounds} alternating runs of ${o.duration} s (or 6 batch-32 times, at most ${o['max-duration']} s) or ${o.amount} requests per cell; ` +
  `CPU: ${o['cpu-workers']} WorkerPool replica(s) × ${CPU_THREADS.join(' or ')} thread(s); ` +
  `batching on = maxBatchSize 32, maxDelayMs ${o['max-delay'] ?? 'default (half the batches\' run time)'}, batch sizes ${BATCH_SIZES.join('/')}; maxQueue ${o['max-queue']}; latency of answered requests; ` +
  `${((performance.now() - t0) / 1000).toFixed(0)} s in all)\n`);
// A device column names the thread count only where the run had several.
const label = (r) => (r.threads && CPU_THREADS.length > 1 ? `${r.device}, ${r.threads} thread${r.threads > 1 ? 's' : ''}` : r.device);
console.log('| model | device | batching | concurrency | s | QPS | p50 ms | p95 ms | p99 ms | mean batch | 503s | 503 p99 ms | other errors |');
console.log('| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const r of rows) {
  console.log(`| ${r.model} | ${label(r)} | ${r.batching ? 'on' : 'off'} | ${r.c} | ${r.seconds} | ${r.qps.toFixed(1)} | ${fmt(r.p50)} | ${fmt(r.p95)} | ${fmt(r.p99)} | ${Number.isNaN(r.meanBatch) ? '–' : r.meanBatch.toFixed(1)} | ${r.refused} | ${fmt(r.refusedP99)} | ${r.other} |`);
}
console.log('\nThe models called directly in the same run (per-sample ms; input on the device, output read back), and what batching reached at concurrency 32 ' +
  '(issue 14\'s bar: serving gain ≥ 80% of the model gain, with p99 on ≤ p99 off):\n');
console.log('| model | device | batch 1 ms/sample | batch 32 ms/sample | model gain (b1/b32) | serving gain at c=32 (QPS on/off) | serving gain / model gain | p99 at c=32, on / off ms |');
console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const d of directRows) {
  const cell = (batching) => rows.find((r) => r.model === d.model && r.device === d.device && r.threads === d.threads && r.batching === batching && r.c === 32);
  const on = cell(true), off = cell(false);
  const gain = on && off ? on.qps / off.qps : NaN;
  const share = gain / d.gain;
  const p99 = on && off ? `${fmt(on.p99)} / ${fmt(off.p99)}` : '–';
  console.log(`| ${d.model} | ${label(d)} | ${fmt(d.b1)} | ${fmt(d.b32)} | ${d.gain.toFixed(2)}× | ${Number.isNaN(gain) ? '–' : `${gain.toFixed(2)}×`} | ${Number.isNaN(share) ? '–' : `${(100 * share).toFixed(0)}%`} | ${p99} |`);
}
process.exit(0);
