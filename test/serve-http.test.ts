// The example HTTP server (examples/serve/server.mjs) in-process on 127.0.0.1 with an ephemeral port,
// driven by concurrent clients. The example imports 'sinter' (dist/, made by `npm test`'s build step),
// so this file uses dist/ too: one sinter instance.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as Sinter from '../src/index.js';

// Typed by the sources; loaded by computed names, so type-checking does not need a build.
const built = '../dist/index.js', example = '../examples/serve/server.mjs';
const sn = (await import(built)) as typeof Sinter;
type Spec = { inputs: Record<string, { shape: (number | null)[]; dtype: string }>; fn?: unknown; batching?: Record<string, unknown>; dispose?: () => void };
type Server = {
  app: { listen(o: { port: number; host: string }): Promise<string> };
  runners: Map<string, { runner: { stats(): { accepted: number } } }>;
  close(): Promise<void>;
};
const { createApp, loadModel } = (await import(example)) as {
  createApp(o: { models: Record<string, Spec>; requestTimeoutMs?: number }): Promise<Server>;
  loadModel(name: string, o: { device?: string; batching?: Record<string, unknown> }): Promise<Spec & { fn: (x: Sinter.Tensor) => Sinter.Tensor }>;
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A model whose batches take `ms` and double their input ([2] floats per sample). */
function slowDoubler(ms: number, batching: Record<string, unknown>): Spec {
  return { inputs: { '': { shape: [2], dtype: 'float32' } }, fn: async (b: Sinter.Tensor) => (await sleep(ms), b.mul(2)), batching };
}

async function start(models: Record<string, Spec>, opts: { requestTimeoutMs?: number } = {}): Promise<{ url: string; server: Server }> {
  const server = await createApp({ models, ...opts });
  const url = await server.app.listen({ port: 0, host: '127.0.0.1' });
  return { url, server };
}

const post = (url: string, body: unknown) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

describe('example HTTP server', () => {
  let url: string, server: Server, cnn: Spec & { fn: (x: Sinter.Tensor) => Sinter.Tensor };

  beforeAll(async () => {
    cnn = await loadModel('cnn', { device: 'cpu', batching: { maxBatchSize: 8, maxDelayMs: 5 } });
    ({ url, server } = await start({ cnn, pair: { inputs: { a: { shape: [2], dtype: 'float32' }, b: { shape: [null], dtype: 'float32' } }, fn: { run: async (f: Record<string, Sinter.Tensor>) => ({ s: f.a!.sum(-1, true), t: f.b!.mul(-1) }) } } }));
  });
  afterAll(async () => {
    await server.close();
  });

  it('answers 24 concurrent JSON and binary clients each with its own prediction', async () => {
    const inputs = Array.from({ length: 24 }, (_, i) => sn.randn([3, 32, 32], { seed: i }));
    const responses = await Promise.all(inputs.map(async (x, i) => {
      const data = Array.from(await x.data());
      if (i % 2) return (await post(`${url}/v1/models/cnn/predict`, { data, shape: [3, 32, 32] })).json();
      const res = await fetch(`${url}/v1/models/cnn/predict`, {
        method: 'POST', headers: { 'content-type': 'application/octet-stream', 'x-shape': '3,32,32', accept: 'application/octet-stream' }, body: new Float32Array(data),
      });
      expect(res.headers.get('x-shape')).toBe('10');
      return { outputs: { output: { shape: [10], data: Array.from(new Float32Array(await res.arrayBuffer())) } } };
    }));
    for (const [i, x] of inputs.entries()) {
      const want = await cnn.fn(x.unsqueeze(0)).data();
      const got = (responses[i] as { outputs: { output: { shape: number[]; data: number[] } } }).outputs.output;
      expect(got.shape).toEqual([10]);
      for (let j = 0; j < 10; j++) expect(Math.abs(got.data[j]! - want[j]!)).toBeLessThan(1e-4 * Math.max(1, Math.abs(want[j]!)));
    }
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/sinter_requests_total\{model="cnn",code="200"\} 24/);
    // Requests were batched: the batch-size histogram saw fewer batches than requests.
    const batches = Number(/sinter_batch_size_count\{model="cnn"\} (\d+)/.exec(metrics)![1]);
    expect(batches).toBeLessThan(24);
    expect(metrics).toMatch(/sinter_queue_wait_seconds_bucket\{le="0.005",model="cnn"\}/);
    expect(metrics).toMatch(/sinter_batch_run_seconds_count\{model="cnn"\}/);
    expect(await (await fetch(`${url}/healthz`)).json()).toEqual({ status: 'ok', models: ['cnn', 'pair'] });
  });

  it('takes named inputs and answers named outputs', async () => {
    const res = await post(`${url}/v1/models/pair/predict`, { inputs: { a: { data: [1, 2] }, b: { data: [3, 4, 5] } } });
    expect(res.status).toBe(200);
    expect((await res.json()).outputs).toEqual({ s: { shape: [1], dtype: 'float32', data: [3] }, t: { shape: [3], dtype: 'float32', data: [-3, -4, -5] } });
  });

  it('answers malformed payloads with a 400 naming the shape or dtype problem', async () => {
    const cases: [unknown, RegExp][] = [
      [{ data: [1, 2, 3] }, /input "data": expected a sample of shape \[3, 32, 32\] \(float32, no batch dim\), got \[3\]/],
      [{ data: new Array(3072).fill(0), shape: [1, 3, 32, 32] }, /expected a sample of shape \[3, 32, 32\].*got \[1, 3, 32, 32\]/],
      [{ data: new Array(3072).fill(0), shape: [3, 32, 32], dtype: 'int32' }, /input "data": dtype "int32" is not accepted; the model takes float32/],
      [{ data: new Array(3071).fill(0), shape: [3, 32, 32] }, /input "data": 3071 values given, shape \[3, 32, 32\] needs 3072/],
      [{ data: [[1, 2], [3]] }, /ragged data: dim 1 should have 2 entries everywhere/],
      [{ data: [1, 'x'] }, /value "x" at element 1 is not a finite number/],
      [{ data: [1], shape: [-3, 32, 32] }, /shape must be a list of positive integers/],
      [{ nothing: 1 }, /input "data": missing "data"/],
    ];
    for (const [body, message] of cases) {
      const res = await post(`${url}/v1/models/cnn/predict`, body);
      expect(res.status, JSON.stringify(body).slice(0, 60)).toBe(400);
      expect((await res.json()).error).toMatch(message);
    }
    const wrongBytes = await fetch(`${url}/v1/models/cnn/predict`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: new Uint8Array(10) });
    expect(wrongBytes.status).toBe(400);
    expect((await wrongBytes.json()).error).toMatch(/the body has 10 bytes; shape \[3, 32, 32\] of float32 needs 12288/);
    const named = await post(`${url}/v1/models/pair/predict`, { inputs: { a: { data: [1, 2] } } });
    expect((await named.json()).error).toMatch(/missing \["b"\]/);
    const badJson = await fetch(`${url}/v1/models/cnn/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"data": [1,' });
    expect(badJson.status).toBe(400);
    expect((await post(`${url}/v1/models/nope/predict`, { data: [1] })).status).toBe(404);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/sinter_errors_total\{model="cnn",kind="bad_request"\} 9/);
  });
});

describe('example HTTP server under overload and shutdown', () => {
  it('refuses what exceeds maxQueue with a fast 503 and answers every accepted request correctly', async () => {
    const { url, server } = await start({ slow: slowDoubler(30, { maxBatchSize: 2, maxDelayMs: 1, maxQueue: 4 }) });
    const t0 = performance.now();
    const results = await Promise.all(Array.from({ length: 40 }, async (_, i) => {
      const sent = performance.now();
      const res = await post(`${url}/v1/models/slow/predict`, { data: [i, i + 1] });
      return { i, status: res.status, ms: performance.now() - sent, retry: res.headers.get('retry-after'), body: await res.json() };
    }));
    const ok = results.filter((r) => r.status === 200), refused = results.filter((r) => r.status === 503);
    expect(ok.length + refused.length).toBe(40);
    expect(refused.length).toBeGreaterThan(0);
    expect(ok.length).toBeGreaterThanOrEqual(4);
    for (const r of ok) expect(r.body.outputs.output.data).toEqual([2 * r.i, 2 * r.i + 2]);
    for (const r of refused) {
      expect(r.retry).toBe('1');
      expect(r.body.error).toMatch(/the queue is full/);
    }
    // Refusals come before any batch could have freed room; nothing waited for the whole backlog.
    expect(Math.min(...refused.map((r) => r.ms))).toBeLessThan(Math.max(...ok.map((r) => r.ms)));
    expect(performance.now() - t0).toBeLessThan(10_000);
    await server.close();
  });

  it('answers a request not served in time with a 504, and a batch that fails with a 500', async () => {
    const failing: Spec = { inputs: { '': { shape: [1], dtype: 'float32' } }, fn: async () => { throw new Error('model exploded'); } };
    const { url, server } = await start({ stuck: slowDoubler(1000, { maxBatchSize: 1, maxDelayMs: 0 }), failing }, { requestTimeoutMs: 200 });
    const t0 = performance.now();
    const [a, b] = await Promise.all([post(`${url}/v1/models/stuck/predict`, { data: [1, 2] }), post(`${url}/v1/models/stuck/predict`, { data: [3, 4] })]);
    expect([a.status, b.status]).toEqual([504, 504]);
    expect((await b.json()).error).toMatch(/no answer within 200 ms/);
    expect(performance.now() - t0).toBeLessThan(3000);
    const f = await post(`${url}/v1/models/failing/predict`, { data: [1] });
    expect(f.status).toBe(500);
    expect((await f.json()).error).toBe('model exploded');
    await server.close();
  });

  it('shuts down gracefully mid-load: every accepted request is answered, then the port closes', async () => {
    const { url, server } = await start({ slow: slowDoubler(20, { maxBatchSize: 4, maxDelayMs: 2, maxQueue: 1000 }) });
    const pending = Array.from({ length: 30 }, (_, i) => post(`${url}/v1/models/slow/predict`, { data: [i, i] }).then(async (r) => ({ i, status: r.status, body: await r.json() })));
    // Every request reached its batcher (accepted), and some still wait, when the shutdown starts.
    const stats = () => server.runners.get('slow')!.runner.stats();
    while (stats().accepted < 30) await sleep(2);
    const t0 = performance.now();
    const closed = server.close();
    const results = await Promise.all(pending);
    await closed;
    expect(performance.now() - t0).toBeLessThan(5000);
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(r.body.outputs.output.data).toEqual([2 * r.i, 2 * r.i]);
    }
    await expect(post(`${url}/v1/models/slow/predict`, { data: [1, 1] })).rejects.toThrow();
  });
});
