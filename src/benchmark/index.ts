// sn.benchmark, shaped like torch.utils.benchmark: a Timer that warms up, picks how many runs make one measurement,
// waits for the GPU inside the timed region, and returns Measurements with median, IQR and PyTorch's warnings;
// Compare prints many as one table. Times are in seconds, as in PyTorch.
import { type DeviceName, getBackend, hasBackend } from '../backend/backend.js';
import { SinterError } from '../errors.js';

export interface TimerOptions {
  /** What is timed: a function, sync or async (its promise is awaited inside the timed region). */
  readonly stmt: () => unknown;
  /** Run once before timing (not timed). */
  readonly setup?: () => unknown;
  /** Group (Compare: one table per label). */
  readonly label?: string;
  /** Row (Compare: one row per sub-label). */
  readonly subLabel?: string;
  /** Column (Compare: one column per description). */
  readonly description?: string;
  /**
   * Devices to wait for at the end of each timed block (torch.cuda.synchronize), so GPU work the statement queued is
   * inside the measurement. Default: every device opened (WebGPU when it was initialised).
   */
  readonly sync?: readonly DeviceName[];
  /** The clock in seconds (default performance.now() / 1000); tests pass a fake one. */
  readonly timer?: () => number;
}

// PyTorch's thresholds (torch/utils/benchmark/utils/common.py).
const IQR_WARN_THRESHOLD = 0.1;
const IQR_GROSS_WARN_THRESHOLD = 0.25;
const MIN_CONFIDENCE_INTERVAL = 25e-9;
const MAX_SIGNIFICANT_FIGURES = 4;

/** Linear-interpolation quantile of sorted values (numpy's and torch.quantile's default). */
function quantile(sorted: readonly number[], q: number): number {
  const pos = (sorted.length - 1) * q, lo = Math.floor(pos), hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** [scale, unit] for a time in seconds, as PyTorch's select_unit. */
export function selectUnit(t: number): [number, string] {
  if (t >= 1) return [1, 's'];
  if (t >= 1e-3) return [1e-3, 'ms'];
  if (t >= 1e-6) return [1e-6, 'us'];
  return [1e-9, 'ns'];
}

/** The result of timing: per-run times of each measurement (block), and their statistics. PyTorch's Measurement. */
export class Measurement {
  /** Seconds per run of each measurement (each block's time / numberPerRun). */
  readonly times: readonly number[];
  readonly mean: number;
  readonly median: number;
  /** Interquartile range (p75 − p25), seconds. */
  readonly iqr: number;
  readonly p25: number;
  readonly p75: number;
  /** PyTorch's warnings: an IQR above 10% (fluctuation) or 25% (environmental influence) of the median. */
  readonly warnings: readonly string[];

  constructor(
    /** Runs of the statement per measurement. */
    readonly numberPerRun: number,
    /** Each measurement's total time (seconds). */
    readonly rawTimes: readonly number[],
    readonly options: Pick<TimerOptions, 'label' | 'subLabel' | 'description'> & { readonly stmt?: string } = {},
  ) {
    if (!(Number.isInteger(numberPerRun) && numberPerRun >= 1)) throw new SinterError('benchmark.Measurement', `numberPerRun must be a positive integer, got ${numberPerRun}`);
    if (rawTimes.length === 0) throw new SinterError('benchmark.Measurement', 'needs at least one measurement');
    this.times = rawTimes.map((t) => t / numberPerRun);
    const sorted = [...this.times].sort((a, b) => a - b);
    this.mean = this.times.reduce((s, t) => s + t, 0) / this.times.length;
    this.median = quantile(sorted, 0.5);
    this.p25 = quantile(sorted, 0.25);
    this.p75 = quantile(sorted, 0.75);
    this.iqr = this.p75 - this.p25;
    const warnings: string[] = [];
    const warn = (msg: string) => warnings.push(`  WARNING: Interquartile range is ${((this.iqr / this.median) * 100).toFixed(1)}% of the median measurement.\n           ${msg}`);
    if (!this.meetsConfidence(IQR_GROSS_WARN_THRESHOLD)) warn('This suggests significant environmental influence.');
    else if (!this.meetsConfidence(IQR_WARN_THRESHOLD)) warn('This could indicate system fluctuation.');
    this.warnings = warnings;
  }

  get label(): string | undefined {
    return this.options.label;
  }
  get subLabel(): string | undefined {
    return this.options.subLabel;
  }
  get description(): string | undefined {
    return this.options.description;
  }

  /** Whether iqr / median is below `threshold` (PyTorch: meets_confidence). */
  meetsConfidence(threshold = IQR_WARN_THRESHOLD): boolean {
    return this.iqr / this.median < threshold;
  }

  get hasWarnings(): boolean {
    return this.warnings.length > 0;
  }

  /** Digits of the median worth printing, from the spread of the middle half of the times (PyTorch's estimate). */
  get significantFigures(): number {
    const sorted = [...this.times].sort((a, b) => a - b);
    const n = sorted.length;
    const mid = sorted.slice(Math.floor(n / 4), Math.ceil((3 * n) / 4));
    const m = mid.reduce((s, t) => s + t, 0) / mid.length;
    const std = Math.sqrt(mid.reduce((s, t) => s + (t - m) ** 2, 0) / mid.length);
    const ci = Math.max((1.645 * std) / Math.sqrt(mid.length), MIN_CONFIDENCE_INTERVAL);
    const figures = Math.floor(Math.log10(this.median / ci));
    return Math.min(Math.max(figures, 1), MAX_SIGNIFICANT_FIGURES);
  }

  /** Prints as PyTorch's Measurement repr. */
  toString(): string {
    const [scale, unit] = selectUnit(this.median);
    const n = this.times.length;
    const f = (t: number) => (t / scale).toFixed(2);
    const title = [this.label && this.subLabel ? `${this.label}: ${this.subLabel}` : (this.label ?? this.subLabel), this.description, this.options.stmt].filter((s) => s);
    return [
      '<sinter.benchmark.Measurement>',
      ...title,
      `  ${n > 1 ? 'Median: ' : ''}${f(this.median)} ${unit}`,
      ...(n > 1 ? [`  IQR:    ${f(this.iqr)} ${unit} (${f(this.p25)} to ${f(this.p75)})`] : []),
      `  ${n} measurement${n > 1 ? 's' : ''}, ${this.numberPerRun} runs ${n > 1 ? 'per measurement,' : ','} 1 thread`,
      ...this.warnings,
    ].join('\n');
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}

/** Times a statement as torch.utils.benchmark.Timer does. */
export class Timer {
  private readonly clock: () => number;
  private setupDone = false;

  constructor(readonly options: TimerOptions) {
    if (typeof options?.stmt !== 'function') throw new SinterError('benchmark.Timer', `stmt must be a function (sync or async), got ${typeof options?.stmt}`);
    this.clock = options.timer ?? (() => performance.now() / 1000);
  }

  private async sync(): Promise<void> {
    const devices = this.options.sync ?? (['webgpu'] as DeviceName[]).filter((d) => hasBackend(d));
    for (const d of devices) await getBackend(d).synchronize();
  }

  private async setup(): Promise<void> {
    if (this.setupDone) return;
    await this.options.setup?.();
    this.setupDone = true;
  }

  /** Seconds for `number` runs of stmt, the device synchronised at the end (inside the timed region). */
  private async block(number: number): Promise<number> {
    await this.sync();
    const t0 = this.clock();
    for (let i = 0; i < number; i++) await this.options.stmt();
    await this.sync();
    return this.clock() - t0;
  }

  private measurement(number: number, raw: number[]): Measurement {
    const { label, subLabel, description, stmt } = this.options;
    const source = stmt.toString();
    return new Measurement(number, raw, { label, subLabel, description, stmt: source.length <= 80 && !source.includes('\n') ? `stmt: ${source}` : undefined });
  }

  /** One measurement of `number` runs (PyTorch: timeit(number=1000000); here 1000 by default). */
  async timeit(number = 1000): Promise<Measurement> {
    if (!(Number.isInteger(number) && number >= 1)) throw new SinterError('benchmark.timeit', `number must be a positive integer, got ${number}`);
    await this.setup();
    await this.block(Math.min(number, 100)); // warm-up, as PyTorch's timeit runs one
    return this.measurement(number, [await this.block(number)]);
  }

  /** Runs per measurement so that the loop's own overhead is negligible (PyTorch's _estimate_block_size; also the warm-up). */
  private async blockSize(minRunTime: number): Promise<number> {
    const overheads: number[] = [];
    for (let i = 0; i < 5; i++) overheads.push(await this.block(0));
    const overhead = quantile(overheads.sort((a, b) => a - b), 0.5);
    let number = 1;
    for (;;) {
      const t = await this.block(number);
      if ((overhead / t <= 1e-4 && t >= minRunTime / 1000) || t > minRunTime || number * 10 > 2147483647) return number;
      number *= 10;
    }
  }

  private static checkTime(op: string, name: string, v: number): void {
    if (!(v > 0 && Number.isFinite(v))) throw new SinterError(op, `${name} must be a positive number of seconds, got ${v}`);
  }

  /** Measurements of one block size until `minRunTime` seconds are spent (PyTorch: blocked_autorange). */
  async blockedAutorange(options: { minRunTime?: number } = {}): Promise<Measurement> {
    const { minRunTime = 0.2 } = options;
    Timer.checkTime('benchmark.blockedAutorange', 'minRunTime', minRunTime);
    await this.setup();
    const number = await this.blockSize(minRunTime);
    const raw: number[] = [];
    let total = 0;
    while (total < minRunTime || raw.length === 0) {
      const t = await this.block(number);
      raw.push(t);
      total += t;
    }
    return this.measurement(number, raw);
  }

  /**
   * Measures until the IQR is below `threshold` of the median (after at least `minRunTime` seconds) or `maxRunTime`
   * seconds are spent (PyTorch: adaptive_autorange).
   */
  async adaptiveAutorange(options: { threshold?: number; minRunTime?: number; maxRunTime?: number } = {}): Promise<Measurement> {
    const { threshold = 0.1, minRunTime = 0.01, maxRunTime = 10 } = options;
    Timer.checkTime('benchmark.adaptiveAutorange', 'minRunTime', minRunTime);
    Timer.checkTime('benchmark.adaptiveAutorange', 'maxRunTime', maxRunTime);
    if (!(threshold > 0)) throw new SinterError('benchmark.adaptiveAutorange', `threshold must be positive, got ${threshold}`);
    await this.setup();
    const number = await this.blockSize(0.05);
    const raw: number[] = [];
    let total = 0;
    while (total < maxRunTime) {
      const t = await this.block(number);
      raw.push(t);
      total += t;
      // PyTorch checks from the 4th measurement on (an IQR of fewer says little).
      if (total >= minRunTime && raw.length >= 4 && new Measurement(number, raw).meetsConfidence(threshold)) break;
    }
    return this.measurement(number, raw);
  }
}

const UNIT_NAMES: Record<string, string> = { s: 'seconds (s)', ms: 'milliseconds (ms)', us: 'microseconds (us)', ns: 'nanoseconds (ns)' };

/** Many measurements as tables: one per label, a row per sub-label, a column per description (PyTorch's Compare). */
export class Compare {
  private significant = false;
  private colorize = false;

  constructor(readonly measurements: readonly Measurement[]) {
    if (!Array.isArray(measurements) || !measurements.every((m) => m instanceof Measurement)) {
      throw new SinterError('benchmark.Compare', 'expects an array of Measurements');
    }
  }

  /** Round each cell to its measurement's significant figures (PyTorch: trim_significant_figures). */
  trimSignificantFigures(): this {
    this.significant = true;
    return this;
  }

  /** Mark the fastest in each column and slower cells (PyTorch: colorize), with ANSI colours. */
  colorizeRows(): this {
    this.colorize = true;
    return this;
  }

  toString(): string {
    const out: string[] = [];
    const labels = [...new Set(this.measurements.map((m) => m.label ?? ''))];
    for (const label of labels) {
      const group = this.measurements.filter((m) => (m.label ?? '') === label);
      const rows = [...new Set(group.map((m) => m.subLabel ?? ''))];
      const cols = [...new Set(group.map((m) => m.description ?? ''))];
      const [scale, unit] = selectUnit(Math.min(...group.map((m) => m.median)));
      const cell = (m: Measurement | undefined) => {
        if (!m) return '';
        const v = m.median / scale;
        const digits = this.significant ? Math.max(0, m.significantFigures - Math.max(0, Math.floor(Math.log10(Math.abs(v))) + 1)) : 1;
        return `${v.toFixed(digits)}${m.hasWarnings ? ' (!)' : ''}`;
      };
      const table = rows.map((r) => [r, ...cols.map((c) => cell(group.find((m) => (m.subLabel ?? '') === r && (m.description ?? '') === c)))]);
      if (this.colorize) {
        cols.forEach((c, j) => {
          const medians = rows.map((r) => group.find((m) => (m.subLabel ?? '') === r && (m.description ?? '') === c)?.median ?? Infinity);
          const best = Math.min(...medians);
          table.forEach((row, i) => {
            if (medians[i] === best) row[j + 1] = `\x1b[1m\x1b[32m${row[j + 1]}\x1b[0m`;
            else if (medians[i]! > 1.1 * best && medians[i] !== Infinity) row[j + 1] = `\x1b[2m\x1b[91m${row[j + 1]}\x1b[0m`;
          });
        });
      }
      // eslint-disable-next-line no-control-regex
      const visible = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, '').length;
      const header = ['', ...cols];
      const widths = header.map((h, j) => Math.max(h.length, ...table.map((row) => visible(row[j]!))));
      const fmt = (row: string[]) => row.map((c, j) => (j === 0 ? c + ' '.repeat(widths[j]! - visible(c)) : ' '.repeat(widths[j]! - visible(c)) + c)).join('  |  ');
      const width = visible(fmt(header));
      const title = ` ${label} `;
      const dashes = Math.max(2, width - title.length);
      out.push(`[${'-'.repeat(Math.floor(dashes / 2))}${title}${'-'.repeat(Math.ceil(dashes / 2))}]`, `  ${fmt(header)}`, ...table.map((row) => `  ${fmt(row)}`), '',
        `Times are in ${UNIT_NAMES[unit]}.`, '');
    }
    if (this.measurements.some((m) => m.hasWarnings)) out.push('(!) marks measurements whose interquartile range is over 10% of their median.');
    return out.join('\n');
  }

  print(): void {
    console.log(this.toString());
  }
}
