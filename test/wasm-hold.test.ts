import { afterAll, describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { setCpuKernels, setCpuThreads } from '../src/backend/cpu.js';
import { ModuleBuilder } from '../src/kernels/wasm/emitter.js';
import { heap, instantiate, memoryImport } from '../src/kernels/wasm/heap.js';
import { heldBackoff, heldSpin, holdWorkers, parallelFor, poolStats } from '../src/kernels/wasm/threads.js';

// A jitted call holds the CPU thread pool's workers awake between its kernels (src/kernels/wasm/threads.ts,
// holdWorkers; src/jit/plan.ts): the held watch, its back-off, and that held calls compute what one thread does.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a held watch', () => {
  it('ends when its event comes (1), when the hold ends (0), or when it runs out (-1)', () => {
    let n = 0;
    expect(heldSpin(() => ++n < 1000, () => true, 1000, 1000)).toBe(1);
    expect(n).toBe(1000);
    n = 0;
    expect(heldSpin(() => true, () => ++n < 1000, 1000, 1000)).toBe(0);
    expect(n).toBe(1000);
    const t0 = performance.now();
    expect(heldSpin(() => true, () => true, 0.2, 1000)).toBe(-1);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(0.2);
  });

  it('backs off after watches that ended empty: skips 1, 2, 4, … 64 of the next, and starts over after one that caught its event', () => {
    const b = heldBackoff();
    const skipped = (): number => {
      let k = 0;
      while (!b.due()) k++;
      return k;
    };
    expect(b.due()).toBe(true);
    const skips = [];
    for (let i = 0; i < 9; i++) {
      expect(b.caught(false)).toBe(false);
      skips.push(skipped());
    }
    expect(skips).toEqual([1, 2, 4, 8, 16, 32, 64, 64, 64]);
    expect(b.caught(true)).toBe(true);
    expect(b.due()).toBe(true);
    b.caught(false);
    expect(skipped()).toBe(1);
  });
});

describe('held workers', () => {
  const wanted = poolStats().wanted;
  afterAll(() => setCpuThreads(wanted ?? 2));

  it('run every task of held kernels once, holds nest, and the pool sleeps once released', async () => {
    setCpuKernels('wasm');
    setCpuThreads(2);
    // Each task adds `n` to its own int, one by one (tens of microseconds).
    const m = new ModuleBuilder(memoryImport());
    m.func('bump', ['i32', 'i32'], [], (c) => {
      const i = c.local('i32');
      c.forRange(i, () => c.i32(0), () => c.get(1), 1, () => c.get(0).get(0).mem('i32.load').i32(1).op('i32.add').mem('i32.store'));
    });
    const { bump } = instantiate<{ bump: (at: number, n: number) => void }>(m.build());
    const h = heap(), at = h.allocate(64), n = 20_000;
    h.i32.fill(0, at >> 2, (at >> 2) + 16);
    const tasks = [[at, n], [at + 32, n], [at + 16, n]];
    const first = poolStats().tasksOnWorkers;
    for (let i = 0; i < 200 && poolStats().tasksOnWorkers === first; i++) {
      parallelFor(tasks, bump);
      await sleep(10);
    }
    expect(poolStats().tasksOnWorkers).toBeGreaterThan(first);
    const done = h.i32[at >> 2]!;
    const release = holdWorkers(), inner = holdWorkers();
    expect(poolStats().holds).toBe(2);
    const before = poolStats();
    // Calls with host work between them (as a plan's epilogues and tables), 100 µs of it.
    const calls = 300;
    for (let i = 0; i < calls; i++) {
      parallelFor(tasks, bump);
      for (const t = performance.now(); performance.now() - t < 0.1; );
    }
    const after = poolStats();
    inner();
    inner();
    expect(poolStats().holds).toBe(1);
    release();
    expect(poolStats().holds).toBe(0);
    for (const k of [0, 32, 16]) expect(h.i32[(at + k) >> 2]! - done).toBe(calls * n);
    expect(after.takenAwake + after.takenWoken - before.takenAwake - before.takenWoken).toBe(after.tasksOnWorkers - before.tasksOnWorkers);
    // Released: the workers stop watching (after the next call's watch) and sleep, and stay asleep.
    let asleep = 0;
    for (let i = 0; i < 100 && (asleep = poolStats().asleep) < 1; i++) await sleep(10);
    expect(asleep).toBe(1);
    await sleep(50);
    expect(poolStats().asleep).toBe(1);
    h.deallocate(at);
  });

  it('a jitted MLP (three GEMMs with bias and ReLU epilogues) gives the same values at two threads as at one, and releases its hold', async () => {
    setCpuKernels('wasm');
    const x = sn.rand([64, 300], { seed: 3 });
    const w1 = sn.randn([300, 256], { seed: 4 }), b1 = sn.randn([256], { seed: 5 });
    const w2 = sn.randn([256, 256], { seed: 6 }), b2 = sn.randn([256], { seed: 7 });
    const w3 = sn.randn([256, 10], { seed: 8 }), b3 = sn.randn([10], { seed: 9 });
    const mlp = sn.jit((t: sn.Tensor) => {
      const h1 = sn.relu(sn.add(sn.matmul(t, w1), b1));
      const h2 = sn.relu(sn.add(sn.matmul(h1, w2), b2));
      return sn.add(sn.matmul(h2, w3), b3);
    });
    setCpuThreads(1);
    const alone = await mlp(x).data();
    setCpuThreads(2);
    const first = poolStats().tasksOnWorkers;
    for (let i = 0; i < 100 && poolStats().tasksOnWorkers === first; i++) {
      expect(await mlp(x).data()).toEqual(alone);
      await sleep(5);
    }
    expect(poolStats().tasksOnWorkers).toBeGreaterThan(first);
    for (let i = 0; i < 20; i++) expect(await mlp(x).data()).toEqual(alone);
    expect(poolStats().holds).toBe(0);
    // The values are the MLP's (not only the same on both thread counts): against the eager ops.
    const eager = await sn.add(sn.matmul(sn.relu(sn.add(sn.matmul(sn.relu(sn.add(sn.matmul(x, w1), b1)), w2), b2)), w3), b3).data();
    expect(alone).toEqual(eager);
  });
});
