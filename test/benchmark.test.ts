import { describe, expect, it } from 'vitest';
import * as sn from '../src/index.js';
import { getBackend } from '../src/backend/backend.js';

// sn.benchmark on a fake clock: each statement advances it by a chosen cost, so every statistic has an exact value.
const { Timer, Measurement, Compare } = sn.benchmark;

/** A clock in seconds and a statement that costs `costs[i % n]` ms on it. */
function fake(costs: number[]) {
  let now = 0, calls = 0;
  return { timer: () => now, stmt: () => { now += costs[calls++ % costs.length]! / 1000; }, advance: (ms: number) => (now += ms / 1000), calls: () => calls };
}

describe('Timer', () => {
  it('timeit(n): one measurement of n runs, after a warm-up', async () => {
    const c = fake([2]);
    let setups = 0;
    const m = await new Timer({ stmt: c.stmt, setup: () => setups++, timer: c.timer, sync: [], label: 'op', subLabel: 'fake', description: 'n=1' }).timeit(10);
    expect(m.numberPerRun).toBe(10);
    expect(m.times).toHaveLength(1);
    expect(m.median).toBeCloseTo(0.002, 12);
    expect(setups).toBe(1);
    expect(c.calls()).toBe(20); // warm-up + timed
    expect(String(m)).toBe(['<sinter.benchmark.Measurement>', 'op: fake', 'n=1', '  2.00 ms', '  1 measurement, 10 runs , 1 thread'].join('\n'));
  });

  it('blockedAutorange: block size from the loop overhead, then blocks until minRunTime', async () => {
    const c = fake([1]);
    const m = await new Timer({ stmt: c.stmt, timer: c.timer, sync: [] }).blockedAutorange({ minRunTime: 0.2 });
    // A 1 ms statement on an overhead-free clock: one run per block is enough; 0.2 s takes 200 blocks.
    expect(m.numberPerRun).toBe(1);
    expect(m.times).toHaveLength(200);
    expect(m.median).toBeCloseTo(1e-3, 12);
    expect(m.mean).toBeCloseTo(1e-3, 12);
    expect(m.iqr).toBeCloseTo(0, 12);
    expect(m.significantFigures).toBe(4);
    expect(m.warnings).toEqual([]);
    expect(String(m)).toContain('  Median: 1.00 ms\n  IQR:    0.00 ms (1.00 to 1.00)\n  200 measurements, 1 runs per measurement, 1 thread');
  });

  it('grows the block until the loop overhead is negligible', async () => {
    // Synchronising costs 0.5 µs on this clock, a run 1 µs; the sync that ends a block is inside its time.
    let now = 0;
    const timer = new Timer({ stmt: () => { now += 1e-6; }, timer: () => now, sync: ['cpu'] });
    const backend = getBackend('cpu');
    const original = backend.synchronize;
    backend.synchronize = async () => { now += 0.5e-6; };
    try {
      const m = await timer.blockedAutorange({ minRunTime: 0.05 });
      // An empty block costs 0.5 µs: a block must be ≥ 1e4 × that (5 ms), i.e. 1e4 runs.
      expect(m.numberPerRun).toBe(10_000);
      // The synchronisation is inside the timed region: each run's share of it shows.
      expect(m.median).toBeCloseTo(1e-6 + 0.5e-6 / 1e4, 15);
    } finally {
      backend.synchronize = original;
    }
  });

  it('warns as PyTorch does when the IQR is large against the median', async () => {
    const noisy = new Measurement(1, [1, 2, 1, 2, 1, 2, 1, 2].map((x) => x / 1000));
    expect(noisy.iqr / noisy.median).toBeCloseTo(1 / 1.5, 9);
    expect(noisy.warnings).toEqual(['  WARNING: Interquartile range is 66.7% of the median measurement.\n           This suggests significant environmental influence.']);
    const wobbly = new Measurement(1, [1, 1.15, 1, 1.15, 1, 1.15].map((x) => x / 1000));
    expect(wobbly.warnings[0]).toContain('This could indicate system fluctuation.');
    expect(wobbly.meetsConfidence(0.2)).toBe(true);
    expect(wobbly.meetsConfidence(0.1)).toBe(false);
    expect(new Measurement(1, [1, 1.01, 0.99, 1].map((x) => x / 1000)).warnings).toEqual([]);
    // Quartiles by linear interpolation, as numpy and torch.quantile.
    const q = new Measurement(2, [2, 4, 6, 8, 10]);
    expect([q.p25, q.median, q.p75, q.iqr, q.mean]).toEqual([2, 3, 4, 2, 3]);
  });

  it('adaptiveAutorange stops once the IQR is under the threshold, or at maxRunTime', async () => {
    const steady = fake([1]);
    const m = await new Timer({ stmt: steady.stmt, timer: steady.timer, sync: [] }).adaptiveAutorange({ threshold: 0.1, minRunTime: 0.01 });
    expect(m.times).toHaveLength(10); // 10 × 1 ms reaches minRunTime, and the IQR is 0
    const noisy = fake([1, 3]);
    const n = await new Timer({ stmt: noisy.stmt, timer: noisy.timer, sync: [] }).adaptiveAutorange({ threshold: 0.1, maxRunTime: 0.05 });
    const spent = n.rawTimes.reduce((s, t) => s + t, 0);
    expect(spent).toBeGreaterThanOrEqual(0.05);
    expect(spent).toBeLessThan(0.05 + 0.003 * n.numberPerRun + 1e-9);
    expect(n.hasWarnings).toBe(true);
  });

  it('awaits an async statement inside the timed region', async () => {
    const c = fake([]);
    const m = await new Timer({ stmt: async () => { await Promise.resolve(); c.advance(3); }, timer: c.timer, sync: [] }).timeit(4);
    expect(m.median).toBeCloseTo(0.003, 12);
  });

  it('times real work on WebGPU with the device synchronised', async () => {
    const x = sn.rand([256, 256], { seed: 1, device: 'webgpu' });
    const m = await new Timer({ stmt: () => sn.matmul(x, x).dispose(), label: 'matmul', description: 'webgpu' }).blockedAutorange({ minRunTime: 0.05 });
    expect(m.median).toBeGreaterThan(0);
    expect(m.times.length).toBeGreaterThan(0);
    x.dispose();
  });

  it('rejects bad arguments, naming them', async () => {
    expect(() => new Timer({ stmt: 'x' as never })).toThrow('benchmark.Timer: stmt must be a function (sync or async), got string');
    await expect(new Timer({ stmt: () => {} }).timeit(0)).rejects.toThrow('benchmark.timeit: number must be a positive integer, got 0');
    await expect(new Timer({ stmt: () => {} }).blockedAutorange({ minRunTime: -1 })).rejects.toThrow('minRunTime must be a positive number of seconds, got -1');
    expect(() => new Measurement(0, [1])).toThrow('numberPerRun must be a positive integer');
  });
});

describe('Compare', () => {
  it('prints one table per label: a row per sub-label, a column per description, in one unit', () => {
    const m = (label: string, subLabel: string, description: string, ms: number[]) => new Measurement(1, ms.map((x) => x / 1000), { label, subLabel, description });
    const text = new Compare([
      m('matmul', '256', 'cpu', [10, 10, 10, 10]),
      m('matmul', '256', 'webgpu', [2, 2, 2, 2]),
      m('matmul', '512', 'cpu', [80, 80, 80, 80]),
      m('matmul', '512', 'webgpu', [10, 20, 10, 20]),
      m('relu', '2^20', 'cpu', [0.5, 0.5, 0.5, 0.5]),
    ]).toString();
    const lines = text.split('\n');
    expect(lines[0]).toMatch(/^\[-+ matmul -+\]$/);
    expect(lines[1]).toMatch(/^\s+\|\s+cpu\s+\|\s+webgpu$/);
    expect(lines[2]).toMatch(/^\s+256\s+\|\s+10\.0\s+\|\s+2\.0$/);
    expect(lines[3]).toMatch(/^\s+512\s+\|\s+80\.0\s+\|\s+15\.0 \(!\)$/);
    expect(text).toContain('Times are in milliseconds (ms).');
    expect(text).toContain('Times are in microseconds (us).');
    expect(text).toMatch(/\[-+ relu -+\]\n\s+\|\s+cpu\n\s+2\^20\s+\|\s+500\.0/);
    expect(text).toContain('(!) marks measurements whose interquartile range is over 10% of their median.');
  });
});
