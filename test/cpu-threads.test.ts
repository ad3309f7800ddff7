import { afterAll, describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { setCpuKernels, setCpuThreads, startCpuThreads } from '../src/backend/cpu.js';
import { ModuleBuilder } from '../src/kernels/wasm/emitter.js';
import { heap, instantiate, memoryImport } from '../src/kernels/wasm/heap.js';
import { parallelFor, poolStats, watcher } from '../src/kernels/wasm/threads.js';

// The CPU thread pool's waiting (src/kernels/wasm/threads.ts): a thread waiting for another spins
// briefly (a watch whose length adapts to whether watches catch their event), then sleeps, so the
// kernels of one call do not pay a wake-up each and an idle pool burns no core.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a watch', () => {
  it('spins until its event, halving its length after a watch that ended empty and doubling it after one that caught it', () => {
    const w = watcher(0.4, 0.05, 1000);
    const lasts = (): number => {
      const t0 = performance.now();
      w.spin(() => true);
      return performance.now() - t0;
    };
    // An event that comes: caught, at once.
    let n = 0;
    expect(w.spin(() => ++n < 100)).toBe(true);
    expect(n).toBe(100);
    // Events that never come: each watch gives up after its length, which halves down to the minimum.
    expect(lasts()).toBeGreaterThanOrEqual(0.4);
    expect(w.spin(() => true)).toBe(false); // 0.2
    w.spin(() => true); // 0.1
    w.spin(() => true); // 0.05
    w.spin(() => true); // still 0.05
    const short = lasts();
    expect(short).toBeGreaterThanOrEqual(0.05);
    // A sleep that a full watch would have caught doubles it; one it would not have, does not.
    w.woke(5);
    w.woke(0.3); // 0.1
    expect(w.spin(() => false)).toBe(true); // 0.2
    expect(lasts()).toBeGreaterThanOrEqual(0.2);
    expect(w.spin(() => true)).toBe(false); // the last one ended empty: 0.1 → 0.05 after this
    expect(w.spin(() => true)).toBe(false);
    expect(lasts()).toBeGreaterThanOrEqual(0.05);
  });
});

describe('the CPU thread pool waits by spinning briefly, then sleeping', () => {
  const wanted = poolStats().wanted;
  afterAll(() => setCpuThreads(wanted ?? 2));

  it('runs every task of kernels posted back to back exactly once, counts how workers took them, and sleeps once idle', async () => {
    setCpuKernels('wasm');
    setCpuThreads(2);
    await startCpuThreads(); // whichever kernels the run started with (SINTER_CPU_KERNELS=js starts none)
    // A kernel whose task adds `n` to the int at `at`, one by one (n = 20000: some tens of microseconds,
    // so that the worker has time to claim the second task): two tasks per call, each its own int.
    const m = new ModuleBuilder(memoryImport());
    m.func('bump', ['i32', 'i32'], [], (c) => {
      const i = c.local('i32');
      c.forRange(i, () => c.i32(0), () => c.get(1), 1, () => c.get(0).get(0).mem('i32.load').i32(1).op('i32.add').mem('i32.store'));
    });
    const { bump } = instantiate<{ bump: (at: number, n: number) => void }>(m.build());
    const h = heap(), at = h.allocate(64), n = 20_000;
    h.i32.fill(0, at >> 2, (at >> 2) + 16);
    const tasks = [[at, n], [at + 32, n]];
    // Until the worker has started and taken the kernel's module (it does so when it next wakes).
    const first = poolStats().tasksOnWorkers;
    for (let i = 0; i < 200 && poolStats().tasksOnWorkers === first; i++) {
      parallelFor(tasks, bump);
      await sleep(10);
    }
    expect(poolStats().tasksOnWorkers).toBeGreaterThan(first);
    const before = poolStats(), done = h.i32[at >> 2]!;
    // Calls a microsecond apart, the worker racing the calling thread for their tasks (how often it takes
    // one awake depends on the machine's load: on a busy one the watches shrink and it mostly sleeps).
    const calls = 500;
    for (let i = 0; i < calls; i++) parallelFor(tasks, bump);
    const after = poolStats();
    expect(h.i32[at >> 2]! - done).toBe(calls * n);
    expect(h.i32[(at + 32) >> 2]! - done).toBe(calls * n);
    const awake = after.takenAwake - before.takenAwake, woken = after.takenWoken - before.takenWoken;
    // Every task a worker took was taken either awake or after a wake-up.
    expect(awake + woken).toBe(after.tasksOnWorkers - before.tasksOnWorkers);
    // Idle: it stops spinning within its watch (a fraction of a millisecond) and sleeps, and stays asleep.
    let asleep = 0;
    for (let i = 0; i < 100 && (asleep = poolStats().asleep) < 1; i++) await sleep(10);
    expect(asleep).toBe(1);
    await sleep(50);
    expect(poolStats().asleep).toBe(1);
    h.deallocate(at);
  });

  it('gives the same GEMM results on two threads as on one, and wakes a sleeping worker for the next kernel', async () => {
    setCpuKernels('wasm');
    // 64·256·256 multiply-adds: shared over two threads (GEMMs split from 2·2¹⁸).
    const a = sn.randn([64, 256], { seed: 1 }), b = sn.randn([256, 256], { seed: 2 });
    setCpuThreads(1);
    const alone = await sn.matmul(a, b).data();
    setCpuThreads(2);
    for (let i = 0; i < 200 && poolStats().ready < 1; i++) {
      sn.matmul(a, b).dispose();
      await sleep(25);
    }
    const woken = poolStats().takenWoken;
    for (let i = 0; i < 50 && poolStats().takenWoken === woken; i++) {
      expect(await sn.matmul(a, b).data()).toEqual(alone);
      await sleep(5);
    }
    expect(poolStats().takenWoken).toBeGreaterThan(woken);
  });
});
