import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import * as sn from '../src/index.js';
import { propertyConfig } from '../src/testing/index.js';
import { WITH_WEBGPU } from './helpers.js';

const { DynamicBatcher, QueueFullError, BatcherClosedError } = sn.serve;

/** A promise with its resolver, to hold a batch function until the test lets it go. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}

/** The first value of each sample of a batch (tests tag each sample by its first value). */
async function tags(batch: sn.Tensor): Promise<number[]> {
  const data = await batch.data();
  const per = batch.numel() / batch.shape[0]!;
  return Array.from({ length: batch.shape[0]! }, (_, i) => data[i * per]!);
}

/** Live tensors now; the tests check it returns to where it was. */
const live = () => sn.memory().tensors;

describe('DynamicBatcher', () => {
  for (const device of WITH_WEBGPU) {
    it(`gives each of 48 concurrent callers its own result from a jitted function (${device})`, async () => {
      const before = live();
      const f = sn.jit((x: sn.Tensor) => sn.relu(x.mul(2).add(1)));
      const batcher = new DynamicBatcher(f, { maxBatchSize: 8, maxDelayMs: 2 });
      const inputs = Array.from({ length: 48 }, (_, i) => sn.tensor([i, -i, i / 2], { device }));
      const outs = await Promise.all(inputs.map((x) => batcher.run(x)));
      for (const [i, y] of outs.entries()) {
        expect(y.shape).toEqual([3]);
        expect(y.device).toBe(device);
        expect(Array.from(await y.data())).toEqual([2 * i + 1, Math.max(0, -2 * i + 1), i + 1]);
      }
      const stats = batcher.stats();
      expect(stats.completed).toBe(48);
      // Callers arriving together were batched: fewer batches than samples, none above maxBatchSize.
      const sizes = Object.keys(stats.batchSizes).map(Number);
      expect(Math.max(...sizes)).toBe(8);
      expect(Object.entries(stats.batchSizes).reduce((a, [s, n]) => a + Number(s) * n, 0)).toBe(48);
      expect(stats.queueWaitMs.count).toBe(48);
      expect(stats.runMs.p99).toBeGreaterThanOrEqual(stats.runMs.p50);
      await batcher.close();
      outs.forEach((t) => t.dispose());
      inputs.forEach((t) => t.dispose());
      f.dispose();
      // At most, not equal: during an await the garbage collector may release tensors earlier code dropped undisposed.
      expect(live()).toBeLessThanOrEqual(before);
    });
  }

  it('stacks CPU samples, runs the batch on WebGPU and reads it back once (device, resultDevice)', async () => {
    const before = live();
    const f = sn.jit((x: sn.Tensor) => ({ y: x.mul(3), s: x.sum(-1) }));
    const devices: string[] = [];
    const batcher = new DynamicBatcher((b: sn.Tensor) => (devices.push(b.device), f(b)), { maxBatchSize: 4, maxDelayMs: 2, device: 'webgpu', resultDevice: 'cpu' });
    const inputs = Array.from({ length: 10 }, (_, i) => sn.tensor([i, 1], { device: 'cpu' }));
    const outs = (await Promise.all(inputs.map((x) => batcher.run(x)))) as { y: sn.Tensor; s: sn.Tensor }[];
    expect(new Set(devices)).toEqual(new Set(['webgpu']));
    for (const [i, o] of outs.entries()) {
      expect([o.y.device, o.s.device]).toEqual(['cpu', 'cpu']);
      expect(await o.y.toArray()).toEqual([3 * i, 3]);
      expect(await o.s.item()).toBe(i + 1);
    }
    outs.forEach((o) => (o.y.dispose(), o.s.dispose()));
    inputs.forEach((t) => t.dispose());
    f.dispose();
    expect(live()).toBeLessThanOrEqual(before);
  });

  it('batches samples of one shape only, or pads the dims the caller allows', async () => {
    const seen: number[][] = [];
    const fn = (b: sn.Tensor) => {
      seen.push([...b.shape]);
      return b.sum(-1, true);
    };
    const batcher = new DynamicBatcher(fn, { maxBatchSize: 16, maxDelayMs: 5 });
    const lengths = [2, 3, 2, 5, 3, 2];
    const outs = await Promise.all(lengths.map((n, i) => batcher.run(sn.full([n], i + 1))));
    for (const [i, y] of outs.entries()) expect(await y.item()).toBe((i + 1) * lengths[i]!);
    expect(seen.map((s) => s.join('x')).sort()).toEqual(['1x5', '2x3', '3x2']);

    seen.length = 0;
    const padded = new DynamicBatcher(fn, { maxBatchSize: 16, maxDelayMs: 5, pad: { dims: [-1], value: 100 } });
    const outs2 = await Promise.all(lengths.map((n, i) => padded.run(sn.full([n], i + 1))));
    expect(seen).toEqual([[6, 5]]);
    // Outputs come at the padded size: each sample's sum includes its padding.
    for (const [i, y] of outs2.entries()) expect(await y.item()).toBe((i + 1) * lengths[i]! + 100 * (5 - lengths[i]!));
  });

  it('pads the batch dim up to one of batchSizes and drops the filler samples', async () => {
    const seen: number[] = [];
    const batcher = new DynamicBatcher((b: sn.Tensor) => (seen.push(b.shape[0]!), b.add(1)), { batchSizes: [1, 4, 8], maxDelayMs: 5 });
    expect(batcher.maxBatchSize).toBe(8);
    const outs = await Promise.all([1, 2, 3].map((v) => batcher.run(sn.tensor([v, v]))));
    expect(seen).toEqual([4]);
    expect(await Promise.all(outs.map((t) => t.toArray()))).toEqual([[2, 2], [3, 3], [4, 4]]);
    expect(batcher.stats().batchSizes).toEqual({ 3: 1 });
  });

  it('stacks CPU samples of every dtype into one buffer with zero filler rows, and slices outputs on the host', async () => {
    const before = live();
    for (const [dtype, values] of [['float32', [1.5, -2]], ['float16', [0.5, -3]], ['int32', [2 ** 30, -7]], ['int8', [127, -128]], ['uint8', [255, 1]], ['bool', [1, 0]]] as const) {
      const seen: number[][] = [];
      const batcher = new DynamicBatcher(async (b: sn.Tensor) => {
        expect([b.dtype, b.device, b.shape]).toEqual([dtype, 'cpu', [4, 2]]);
        seen.push(Array.from(await b.data()));
        return { same: b.clone(), flipped: b.flip(-1) };
      }, { batchSizes: [4], maxDelayMs: 0 });
      const inputs = [0, 1, 2].map((i) => sn.tensor(i === 1 ? [values[1], values[0]] : [...values], { dtype }));
      const outs = (await Promise.all(inputs.map((x) => batcher.run(x)))) as { same: sn.Tensor; flipped: sn.Tensor }[];
      expect(seen).toEqual([[...values, values[1], values[0], ...values, 0, 0]]);
      for (const [i, o] of outs.entries()) {
        const want = i === 1 ? [values[1], values[0]] : [...values];
        expect([o.flipped.dtype, o.flipped.device, o.flipped.shape]).toEqual([dtype, 'cpu', [2]]);
        expect(Array.from(await o.flipped.data())).toEqual([...want].reverse());
        expect(Array.from(await o.same.data())).toEqual(want);
        o.same.dispose();
        o.flipped.dispose();
      }
      inputs.forEach((t) => t.dispose());
    }
    expect(live()).toBeLessThanOrEqual(before);
  });

  it('zeroes the filler rows of a CPU batch whose storage held an earlier batch, and stacks strided samples too', async () => {
    const seen: number[][] = [];
    const batcher = new DynamicBatcher(async (b: sn.Tensor) => (seen.push(Array.from(await b.data())), b.mul(2)), { batchSizes: [4], maxDelayMs: 0 });
    // A full batch of 9s, freed; the next batch of the same size takes a storage from the heap's reuse pool.
    const nines = Array.from({ length: 4 }, () => sn.full([2, 2], 9));
    await Promise.all(nines.map((x) => batcher.run(x)));
    // Contiguous samples: the batch is filled in place, its filler rows zeroed over the 9s.
    const plain = sn.tensor([[5, 6], [7, 8]]);
    const [a] = await Promise.all([batcher.run(plain)]);
    expect(seen[1]).toEqual([5, 6, 7, 8, ...Array(12).fill(0)]);
    // A transposed (strided) sample goes through the stack op: [[1, 2], [3, 4]]ᵀ = [[1, 3], [2, 4]].
    const strided = sn.tensor([[1, 2], [3, 4]]).t();
    expect(strided.isContiguous()).toBe(false);
    await Promise.all(nines.map((x) => batcher.run(x)));
    const [b, c] = await Promise.all([batcher.run(plain), batcher.run(strided)]);
    expect(seen[3]).toEqual([5, 6, 7, 8, 1, 3, 2, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
    expect(await a!.toArray()).toEqual([[10, 12], [14, 16]]);
    expect(await b!.toArray()).toEqual([[10, 12], [14, 16]]);
    expect(await c!.toArray()).toEqual([[2, 6], [4, 8]]);
    await batcher.close();
  });

  it('feeds named inputs to a model with run(feeds), and a plain tensor to its only input', async () => {
    const model = {
      inputs: [{ name: 'a' }, { name: 'b' }],
      run: async (feeds: Record<string, sn.Tensor>) => ({ sum: feeds.a!.add(feeds.b!), a: feeds.a!.mul(1) }),
    };
    const batcher = new DynamicBatcher<Record<string, sn.Tensor>>(model, { maxDelayMs: 2 });
    const outs = await Promise.all([0, 1, 2].map((i) => batcher.run({ a: sn.tensor([i]), b: sn.tensor([10 * i]) })));
    for (const [i, o] of outs.entries()) {
      expect(await (o as Record<string, sn.Tensor>).sum!.toArray()).toEqual([11 * i]);
      expect(await (o as Record<string, sn.Tensor>).a!.toArray()).toEqual([i]);
    }
    const single = new DynamicBatcher({ inputs: [{ name: 'x' }], run: async (f: Record<string, sn.Tensor>) => ({ y: f.x!.neg() }) });
    expect(await ((await single.run(sn.tensor([3]))) as Record<string, sn.Tensor>).y!.toArray()).toEqual([-3]);
    await expect(new DynamicBatcher(model).run(sn.tensor([1]))).rejects.toThrow(/the model has 2 inputs \(a, b\)/);
  });

  it('an idle runner starts a lone sample at once, whatever maxDelayMs says', async () => {
    const batcher = new DynamicBatcher((b: sn.Tensor) => b.add(1), { maxBatchSize: 32, maxDelayMs: 60_000 });
    const x = sn.tensor([41]);
    const t0 = performance.now();
    const y = await batcher.run(x);
    // Waiting for company (60 s) would time the test out.
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect(await y.item()).toBe(42);
    expect(batcher.stats()).toMatchObject({ batchSizes: { 1: 1 }, completed: 1 });
    // Samples queued in the same turn of the event loop share the batch that starts at the end of it.
    const outs = await Promise.all([1, 2, 3].map((v) => batcher.run(sn.tensor([v]))));
    expect(await Promise.all(outs.map((t) => t.item()))).toEqual([2, 3, 4]);
    expect(batcher.stats().batchSizes).toEqual({ 1: 1, 3: 1 });
    await batcher.close();
  });

  it('a queue that builds while a batch runs forms the next batch when it ends, with that batch\'s caller back', async () => {
    const g = gate();
    const batches: number[][] = [];
    const batcher = new DynamicBatcher(async (b: sn.Tensor) => {
      batches.push(await tags(b));
      await g.wait;
      return b.mul(2);
    }, { maxBatchSize: 8, maxDelayMs: 60_000 });
    const first = batcher.run(sn.tensor([0]));
    while (batcher.stats().running === 0) await new Promise((r) => setTimeout(r, 1));
    const later = [1, 2, 3, 4, 5].map((v) => batcher.run(sn.tensor([v])));
    await new Promise((r) => setTimeout(r, 20));
    expect(batcher.stats()).toMatchObject({ running: 1, queued: 5 });
    g.open();
    expect(await (await first).item()).toBe(0);
    // The first batch's caller is expected back (a closed-loop client): the five wait for it, not for maxDelayMs.
    const again = batcher.run(sn.tensor([6]));
    const outs = await Promise.all([...later, again]);
    expect(await Promise.all(outs.map((t) => t.item()))).toEqual([2, 4, 6, 8, 10, 12]);
    expect(batches).toEqual([[0], [1, 2, 3, 4, 5, 6]]);
  });

  describe('waiting for the callers of finished batches (fake clock)', () => {
    // The batcher's delays run on the fake clock; its next-turn wake-ups (setImmediate) stay real.
    const turn = () => new Promise<void>((r) => setImmediate(r));
    /** Lets every pending turn and microtask run. */
    const settle = async () => {
      for (let i = 0; i < 5; i++) await turn();
    };
    const withFakeClock = (body: () => Promise<void>) => async () => {
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
      try {
        await body();
      } finally {
        vi.useRealTimers();
      }
    };
    /** A batcher that records each batch's tags and answers each sample with its tag + 100. */
    const recording = (options: sn.serve.DynamicBatcherOptions) => {
      const batches: number[][] = [];
      const batcher = new DynamicBatcher(async (b: sn.Tensor) => (batches.push(await tags(b)), b.add(100)), options);
      return { batches, batcher };
    };
    const run = (batcher: sn.serve.DynamicBatcher<sn.Tensor, sn.Tensor>, v: number) => batcher.run(sn.tensor([v]));

    it('closed-loop callers answered together come back into one batch, not a batch of the first and one of stragglers', withFakeClock(async () => {
      const { batches, batcher } = recording({ maxBatchSize: 8, maxDelayMs: 20 });
      await Promise.all([1, 2, 3, 4].map((v) => run(batcher, v))); // one batch of 4, then its 4 callers are expected
      const next = [];
      for (const v of [5, 6, 7]) {
        next.push(run(batcher, v));
        await settle();
        vi.advanceTimersByTime(1); // 1 ms between returns: under maxDelayMs
      }
      await settle();
      expect(batcher.stats()).toMatchObject({ running: 0, queued: 3 }); // three of the four expected: they wait
      next.push(run(batcher, 8));
      const outs = await Promise.all(next);
      expect(await Promise.all(outs.map((t) => t.item()))).toEqual([105, 106, 107, 108]);
      expect(batches).toEqual([[1, 2, 3, 4], [5, 6, 7, 8]]);
      await batcher.close();
    }));

    it('callers that do not come back stop being expected maxDelayMs after their batch ended', withFakeClock(async () => {
      const { batches, batcher } = recording({ maxBatchSize: 8, maxDelayMs: 20 });
      await Promise.all([1, 2, 3, 4].map((v) => run(batcher, v)));
      vi.advanceTimersByTime(15);
      const next = [run(batcher, 5), run(batcher, 6)]; // two of four come back, 15 ms after the batch ended
      await settle();
      vi.advanceTimersByTime(4);
      await settle();
      expect(batcher.stats().queued).toBe(2);
      vi.advanceTimersByTime(1); // 20 ms after the batch ended: the other two are no longer expected
      await Promise.all(next);
      expect(batches).toEqual([[1, 2, 3, 4], [5, 6]]);
      await batcher.close();
    }));

    it('time spent waiting for a slot does not count: the callers of the batch that frees it still join', withFakeClock(async () => {
      const g = gate();
      const batches: number[][] = [];
      const batcher = new DynamicBatcher(async (b: sn.Tensor) => (batches.push(await tags(b)), await g.wait, b.add(100)), { maxBatchSize: 8, maxDelayMs: 20 });
      const first = run(batcher, 1);
      await settle();
      expect(batcher.stats().running).toBe(1);
      const queued = [run(batcher, 2), run(batcher, 3)];
      await settle();
      vi.advanceTimersByTime(30); // longer than maxDelayMs, but no slot was free
      g.open();
      await first; // the slot frees; its caller is expected back
      await settle();
      expect(batcher.stats()).toMatchObject({ running: 0, queued: 2 });
      vi.advanceTimersByTime(5);
      queued.push(run(batcher, 4)); // the first caller's next request joins them
      await Promise.all(queued);
      expect(batches).toEqual([[1], [2, 3, 4]]);
      await batcher.close();
    }));

    it('slots beyond shareAmong running batches take full batches only', withFakeClock(async () => {
      const g = gate();
      const batches: number[][] = [];
      const batcher = new DynamicBatcher(async (b: sn.Tensor) => (batches.push(await tags(b)), await g.wait, b.add(100)), { maxBatchSize: 3, maxDelayMs: 20, concurrency: 2, shareAmong: 1 });
      const runs = [run(batcher, 0)]; // nothing running or expected: starts at once (held by the gate)
      await settle();
      runs.push(run(batcher, 1), run(batcher, 2));
      await settle();
      vi.advanceTimersByTime(100); // far past maxDelayMs: the second slot still does not take two of three
      await settle();
      expect(batcher.stats()).toMatchObject({ running: 1, queued: 2 });
      runs.push(run(batcher, 3)); // a full batch: the second slot takes it
      await settle();
      expect(batcher.stats()).toMatchObject({ running: 2, queued: 0 });
      runs.push(run(batcher, 4)); // no slot free
      await settle();
      g.open();
      await Promise.all(runs.slice(0, 4));
      await settle();
      // Four callers are expected back: [4] waits for its share (maxBatchSize 3) while they come.
      expect(batcher.stats()).toMatchObject({ running: 0, queued: 1 });
      runs.push(run(batcher, 5), run(batcher, 6));
      const outs = await Promise.all(runs);
      expect(await Promise.all(outs.map((t) => t.item()))).toEqual([100, 101, 102, 103, 104, 105, 106]);
      expect(batches).toEqual([[0], [1, 2, 3], [4, 5, 6]]);
      await batcher.close();
    }));

    it('a lone closed-loop caller never waits: the one caller expected is the one that came back', withFakeClock(async () => {
      const { batches, batcher } = recording({ maxBatchSize: 32, maxDelayMs: 1_000 });
      // The clock never moves: a wait of any length would hang here.
      for (let v = 1; v <= 5; v++) expect(await (await run(batcher, v)).item()).toBe(100 + v);
      expect(batches).toEqual([[1], [2], [3], [4], [5]]);
      // A newcomer while nothing is expected starts at once too.
      vi.advanceTimersByTime(5_000);
      expect(await (await run(batcher, 6)).item()).toBe(106);
      await batcher.close();
    }));

    it('shares the samples expected among shareAmong batches (default: concurrency)', withFakeClock(async () => {
      const g = gate();
      const batches: number[][] = [];
      const make = (shareAmong?: number) =>
        new DynamicBatcher(async (b: sn.Tensor) => (batches.push(await tags(b)), await g.wait, b.add(100)), { maxBatchSize: 8, maxDelayMs: 20, concurrency: 2, ...(shareAmong ? { shareAmong } : {}) });
      const halves = make();
      const outs = [1, 2, 3, 4, 5, 6].map((v) => run(halves, v)); // six in one turn: two batches of three run at once
      await settle();
      expect(halves.stats()).toMatchObject({ running: 2, queued: 0 });
      expect(batches).toEqual([[1, 2, 3], [4, 5, 6]]);
      const whole = make(1);
      outs.push(...[7, 8, 9, 10, 11, 12].map((v) => run(whole, v))); // shared among one: one batch of six
      await settle();
      expect(whole.stats()).toMatchObject({ running: 1, queued: 0 });
      expect(batches.slice(2)).toEqual([[7, 8, 9, 10, 11, 12]]);
      g.open();
      expect(await Promise.all((await Promise.all(outs)).map((t) => t.item()))).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((v) => v + 100));
      expect(() => new DynamicBatcher((b: sn.Tensor) => b, { concurrency: 2, shareAmong: 3 })).toThrow(/shareAmong 3 is larger than concurrency 2/);
    }));

    it('maxDelayMs defaults to half the batches\' median run time, at least 1 ms', withFakeClock(async () => {
      let runMs = 40;
      const batcher = new DynamicBatcher(async (b: sn.Tensor) => {
        await new Promise((r) => setTimeout(r, runMs));
        return b.add(1);
      });
      expect(batcher.maxDelayMs).toBe(5); // before the first batch
      const once = async () => {
        const out = run(batcher, 0);
        await settle();
        await vi.advanceTimersByTimeAsync(runMs);
        (await out).dispose();
      };
      await once();
      expect(batcher.maxDelayMs).toBe(20); // the first batch's 40 ms, halved
      runMs = 1_000; // one slow batch (a first call that compiled, say) does not move the median far
      await once();
      runMs = 10;
      await once();
      expect(batcher.maxDelayMs).toBe(20); // median of 40, 1000, 10
      await once();
      await once();
      expect(batcher.maxDelayMs).toBe(5); // median of 40, 1000, 10, 10, 10
      runMs = 0.5;
      for (let i = 0; i < 6; i++) await once();
      expect(batcher.maxDelayMs).toBe(1); // 0.25 ms, raised to the floor
      expect(new DynamicBatcher((b: sn.Tensor) => b, { maxDelayMs: 7 }).maxDelayMs).toBe(7);
      await batcher.close();
    }));
  });

  it('refuses samples beyond maxQueue at once, and answers every accepted one', async () => {
    const g = gate();
    const batcher = new DynamicBatcher(async (b: sn.Tensor) => (await g.wait, b.mul(3)), { maxBatchSize: 1, maxDelayMs: 0, maxQueue: 4 });
    const first = batcher.run(sn.tensor([0]));
    while (batcher.stats().running === 0) await new Promise((r) => setTimeout(r, 1)); // the first batch runs (held): the queue is empty
    const queued = [1, 2, 3, 4].map((v) => batcher.run(sn.tensor([v])));
    const t0 = performance.now();
    await expect(batcher.run(sn.tensor([5]))).rejects.toBeInstanceOf(QueueFullError);
    await expect(batcher.run(sn.tensor([5]))).rejects.toThrow(/DynamicBatcher.run: the queue is full \(4 samples wait; maxQueue 4\)/);
    expect(performance.now() - t0).toBeLessThan(1000);
    g.open();
    const all = await Promise.all([first, ...queued]);
    expect(await Promise.all(all.map((t) => t.item()))).toEqual([0, 3, 6, 9, 12]);
    expect(batcher.stats()).toMatchObject({ rejected: 2, completed: 5, queued: 0, running: 0 });
  });

  it('cancels queued samples by AbortSignal and answers the rest', async () => {
    const before = live();
    const g = gate();
    const batches: number[][] = [];
    const batcher = new DynamicBatcher(async (b: sn.Tensor) => {
      await g.wait;
      batches.push(await tags(b));
      return b.add(0);
    }, { maxBatchSize: 4, maxDelayMs: 1 });
    const controllers = Array.from({ length: 10 }, () => new AbortController());
    const inputs = Array.from({ length: 10 }, (_, i) => sn.tensor([i]));
    const pending = inputs.map((x, i) => batcher.run(x, { signal: controllers[i]!.signal }));
    const already = new AbortController();
    already.abort(new Error('gone before queueing'));
    const late = sn.tensor([99]);
    await expect(batcher.run(late, { signal: already.signal })).rejects.toThrow('gone before queueing');
    late.dispose();
    // Until the first batch (0..3) is running, held by the gate; the rest wait.
    while (batcher.stats().running === 0) await new Promise((r) => setTimeout(r, 1));
    for (const i of [5, 7, 8]) controllers[i]!.abort();
    controllers[1]!.abort(); // its batch runs already: no effect
    g.open();
    const settled = await Promise.allSettled(pending);
    settled.forEach((s, i) => {
      if ([5, 7, 8].includes(i)) expect(s.status === 'rejected' && (s.reason as Error).name).toBe('AbortError');
      else expect(s.status).toBe('fulfilled');
    });
    for (const [i, s] of settled.entries()) if (s.status === 'fulfilled') expect(await s.value.item()).toBe(i);
    expect(batches.flat().sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 6, 9]);
    expect(batcher.stats()).toMatchObject({ cancelled: 4, completed: 7 });
    settled.forEach((s) => s.status === 'fulfilled' && s.value.dispose());
    inputs.forEach((t) => t.dispose());
    expect(live()).toBeLessThanOrEqual(before);
  });

  it('rejects exactly the callers of a failing batch, and frees its tensors', async () => {
    const before = live();
    const batches: number[][] = [];
    let calls = 0;
    const batcher = new DynamicBatcher(async (b: sn.Tensor) => {
      batches.push(await tags(b));
      if (++calls === 2) throw new Error('kernel exploded');
      return b.mul(-1);
    }, { maxBatchSize: 3, maxDelayMs: 1 });
    const inputs = Array.from({ length: 9 }, (_, i) => sn.tensor([i, i]));
    const settled = await Promise.allSettled(inputs.map((x) => batcher.run(x)));
    expect(batches.length).toBe(3);
    const failed = new Set(batches[1]);
    for (const [i, s] of settled.entries()) {
      if (failed.has(i)) expect(s.status === 'rejected' && (s.reason as Error).message).toBe('kernel exploded');
      else expect(s.status === 'fulfilled' && (await s.value.toArray())).toEqual([-i, -i]);
    }
    expect(batcher.stats()).toMatchObject({ failed: 3, completed: 6 });
    // An output without the batch as dim 0 fails its batch with a clear error.
    const bad = new DynamicBatcher((b: sn.Tensor) => b.sum());
    const x = sn.tensor([1, 2]);
    await expect(bad.run(x)).rejects.toThrow(/every output must have the batch \(1\) as dim 0, got an output of shape \[\]/);
    x.dispose();
    settled.forEach((s) => s.status === 'fulfilled' && s.value.dispose());
    inputs.forEach((t) => t.dispose());
    expect(live()).toBeLessThanOrEqual(before);
  });

  it('close() mid-load drains every accepted sample, then refuses new ones', async () => {
    const batcher = new DynamicBatcher(async (b: sn.Tensor) => {
      await new Promise((r) => setTimeout(r, 2));
      return b.add(1);
    }, { maxBatchSize: 4, maxDelayMs: 50, concurrency: 2 });
    const accepted = Array.from({ length: 30 }, (_, i) => batcher.run(sn.tensor([i])));
    const closed = batcher.close();
    await expect(batcher.run(sn.tensor([0]))).rejects.toBeInstanceOf(BatcherClosedError);
    const t0 = performance.now();
    await closed;
    // Queued samples ran at once, not after maxDelayMs.
    expect(performance.now() - t0).toBeLessThan(1000);
    const outs = await Promise.all(accepted);
    expect(await Promise.all(outs.map((t) => t.item()))).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(batcher.stats()).toMatchObject({ queued: 0, running: 0, completed: 30, rejected: 1 });
    await batcher.close(); // idempotent
  });

  it('rejects bad options and samples with clear errors', async () => {
    expect(() => new DynamicBatcher((b: sn.Tensor) => b, { maxBatchSize: 0 })).toThrow('DynamicBatcher: maxBatchSize must be an integer ≥ 1, got 0');
    expect(() => new DynamicBatcher((b: sn.Tensor) => b, { maxDelayMs: -1 })).toThrow(/maxDelayMs must be a finite number ≥ 0/);
    expect(() => new DynamicBatcher((b: sn.Tensor) => b, { batchSizes: [2, 4], maxBatchSize: 8 })).toThrow(/maxBatchSize 8 is larger than the largest of batchSizes \[2,4\]/);
    const batcher = new DynamicBatcher((b: sn.Tensor) => b);
    await expect(batcher.run(42 as unknown as sn.Tensor)).rejects.toThrow(/expected a tensor or an object of named tensors/);
    const gone = sn.tensor([1]);
    gone.dispose();
    await expect(batcher.run(gone)).rejects.toThrow(/the sample was disposed/);
  });

  it('property: under random arrivals, shapes, aborts and failures, every caller settles with its own result', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          maxBatchSize: fc.integer({ min: 1, max: 5 }),
          maxDelayMs: fc.option(fc.integer({ min: 0, max: 3 })), // null: the default, from the run time
          concurrency: fc.integer({ min: 1, max: 3 }),
          shareAmong: fc.integer({ min: 1, max: 3 }),
          maxQueue: fc.integer({ min: 1, max: 20 }),
        }),
        fc.array(fc.record({ len: fc.integer({ min: 1, max: 3 }), gapMs: fc.integer({ min: 0, max: 2 }), abortAfterMs: fc.option(fc.integer({ min: 0, max: 4 })), poison: fc.boolean() }), { minLength: 1, maxLength: 25 }),
        async ({ maxDelayMs, shareAmong, ...rest }, requests) => {
          const options = { ...rest, shareAmong: Math.min(shareAmong, rest.concurrency), ...(maxDelayMs === null ? {} : { maxDelayMs }) };
          const before = live();
          const inPoisonedBatch = new Set<number>();
          const batcher = new DynamicBatcher(async (b: sn.Tensor) => {
            await new Promise((r) => setTimeout(r, 1));
            // A sample tagged negative poisons its batch.
            const t = await tags(b);
            if (t.some((x) => x < 0)) {
              t.forEach((x) => inPoisonedBatch.add(Math.abs(x)));
              throw new Error('poisoned');
            }
            return b.mul(10);
          }, options);
          const inputs: sn.Tensor[] = [];
          const runs: Promise<sn.Tensor>[] = [];
          for (const [i, r] of requests.entries()) {
            const tag = r.poison ? -(i + 1) : i + 1;
            const x = sn.full([r.len], tag);
            inputs.push(x);
            const ctl = new AbortController();
            if (r.abortAfterMs !== null) setTimeout(() => ctl.abort(), r.abortAfterMs);
            const run = batcher.run(x, { signal: ctl.signal });
            run.catch(() => {}); // settled below; rejections before then are expected
            runs.push(run);
            if (r.gapMs) await new Promise((res) => setTimeout(res, r.gapMs));
          }
          const settled = await Promise.allSettled(runs);
          await batcher.close();
          for (const [i, s] of settled.entries()) {
            const r = requests[i]!;
            if (s.status === 'fulfilled') {
              expect(await s.value.toArray()).toEqual(Array(r.len).fill(10 * (i + 1)));
              expect(r.poison).toBe(false);
              s.value.dispose();
            } else {
              const e = s.reason as Error;
              if (e.name === 'AbortError') expect(r.abortAfterMs).not.toBeNull();
              else if (e.message === 'poisoned') expect(inPoisonedBatch.has(i + 1)).toBe(true);
              else expect(e).toBeInstanceOf(QueueFullError);
            }
          }
          const st = batcher.stats();
          expect(st.completed + st.failed + st.cancelled + st.rejected).toBe(requests.length);
          inputs.forEach((t) => t.dispose());
          expect(live()).toBeLessThanOrEqual(before);
        },
      ),
      propertyConfig({ numRuns: 25 }),
    );
  });
});
