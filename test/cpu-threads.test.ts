import { afterAll, describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { setCpuKernels, setCpuThreads } from '../src/backend/cpu.js';
import { poolStats } from '../src/kernels/wasm/threads.js';

// The CPU thread pool's waiting (src/kernels/wasm/threads.ts): a worker that finished a task spins
// briefly for the next one (the kernels of one call follow each other within microseconds, and a
// wake-up costs as much as a small kernel's share), then sleeps, so an idle pool burns no core.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the CPU thread pool waits by spinning briefly, then sleeping', () => {
  const wanted = poolStats().wanted;
  afterAll(() => setCpuThreads(wanted ?? 2));

  it('takes the next kernel of back-to-back calls without a wake-up, computes the same, and sleeps once idle', async () => {
    setCpuKernels('wasm');
    // 64·256·256 multiply-adds: shared over two threads (GEMMs split from 2·2¹⁸), about a tenth of a millisecond each.
    const a = sn.randn([64, 256], { seed: 1 }), b = sn.randn([256, 256], { seed: 2 });
    setCpuThreads(1);
    const alone = await sn.matmul(a, b).data();
    setCpuThreads(2);
    for (let i = 0; i < 200 && poolStats().ready < 1; i++) {
      sn.matmul(a, b).dispose();
      await sleep(25);
    }
    expect(poolStats().ready).toBe(1);
    const before = poolStats();
    // Kernels back to back, as one call's are: the worker should find most of them while it still spins.
    // A busy machine deschedules the threads past the watch now and then, so this asks for a few, within 10 s.
    const until = performance.now() + 10_000;
    while (poolStats().takenAwake - before.takenAwake < 5 && performance.now() < until) {
      const ys = Array.from({ length: 20 }, () => sn.matmul(a, b));
      expect(await ys[19]!.data()).toEqual(alone);
      ys.forEach((y) => y.dispose());
      await sleep(0);
    }
    const after = poolStats();
    expect(after.takenAwake - before.takenAwake).toBeGreaterThanOrEqual(5);
    // Every task a worker took was taken either awake or after a wake-up.
    expect(after.takenAwake + after.takenWoken - (before.takenAwake + before.takenWoken)).toBe(after.tasksOnWorkers - before.tasksOnWorkers);
    // Idle: the worker stops spinning within its bound (a fraction of a millisecond) and sleeps.
    let asleep = 0;
    for (let i = 0; i < 100 && (asleep = poolStats().asleep) < 1; i++) await sleep(10);
    expect(asleep).toBe(1);
    // It stays asleep while nothing runs (no busy-waiting).
    await sleep(50);
    expect(poolStats().asleep).toBe(1);
    // And wakes for the next kernel.
    const woken = poolStats().takenWoken;
    for (let i = 0; i < 50 && poolStats().takenWoken === woken; i++) {
      expect(await sn.matmul(a, b).data()).toEqual(alone);
      await sleep(5);
    }
    expect(poolStats().takenWoken).toBeGreaterThan(woken);
  });
});
