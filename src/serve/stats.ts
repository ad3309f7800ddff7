/** Percentiles of the recent values of a latency (ms); zeros when there are none yet. */
export interface Percentiles {
  /** Values the percentiles cover (at most the window's size). */
  count: number;
  mean: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

/** The last `size` values of a measurement (a ring: memory stays bounded however long a server runs). */
export class Window {
  private readonly values: Float64Array;
  private next = 0;
  private filled = 0;

  constructor(size: number) {
    this.values = new Float64Array(size);
  }

  push(v: number): void {
    this.values[this.next] = v;
    this.next = (this.next + 1) % this.values.length;
    this.filled = Math.min(this.filled + 1, this.values.length);
  }

  percentiles(): Percentiles {
    const n = this.filled;
    if (n === 0) return { count: 0, mean: 0, p50: 0, p95: 0, p99: 0, max: 0 };
    const s = this.values.slice(0, n).sort();
    // Nearest rank: the smallest value with at least q of the values at or below it.
    const at = (q: number) => s[Math.min(n - 1, Math.ceil(q * n) - 1)]!;
    return { count: n, mean: s.reduce((a, b) => a + b, 0) / n, p50: at(0.5), p95: at(0.95), p99: at(0.99), max: s[n - 1]! };
  }
}
