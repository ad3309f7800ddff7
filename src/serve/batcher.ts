import type { DeviceName } from '../backend/backend.js';
import { SinterError, fmtShape } from '../errors.js';
import type { TensorTree } from '../jit/jit.js';
import { cat, pad, stack } from '../ops/movement.js';
import { fromHost, zeros } from '../tensor/creation.js';
import { type HostArray, allocHost } from '../tensor/dtype.js';
import { tidy } from '../tensor/scope.js';
import { Tensor } from '../tensor/tensor.js';
import { cpuBytes, cpuRow, emptyCpu } from './host.js';
import { type Percentiles, Window } from './stats.js';

/** One request's input: a tensor without the batch dim, or named tensors (an ONNX model's inputs). */
export type Sample = Tensor | Readonly<Record<string, Tensor>>;

/** Something with an asynchronous `run(feeds)` returning named outputs, such as an `OnnxModel`. */
export interface BatchModel<Out extends TensorTree = TensorTree> {
  run(feeds: Record<string, Tensor>): Promise<Out>;
  /** The model's input names; a model with one input may then be fed plain tensors. */
  readonly inputs?: readonly { readonly name: string }[];
}

/**
 * What a batch runs through: a function of the stacked batch (a jitted function; it may return a
 * promise), or a model whose `run` takes named inputs.
 */
export type BatchFn<In extends Sample, Out extends TensorTree> = ((batch: In) => Out | Promise<Out>) | BatchModel<Out>;

export interface PadOptions {
  /**
   * Dims of a sample (no batch dim; negative counts from the end) that may differ between samples of
   * one batch: samples alike in every other dim share a bucket and are padded at the end of these dims
   * to the largest in their batch. Each caller gets its output at the padded size.
   */
  dims: readonly number[];
  /** The padding value (default 0). */
  value?: number;
}

/** What `onBatch` hears after every batch (for metrics). */
export interface BatchEvent {
  /** Samples in the batch (before `batchSizes` padding). */
  size: number;
  /** The batch dim the function saw (`size` rounded up to one of `batchSizes`). */
  paddedSize: number;
  /** How long each sample waited in the queue (ms). */
  queueWaitMs: number[];
  /**
   * Assembling, running and slicing the batch (ms). A jitted function on WebGPU returns once its work
   * is submitted, so this is host time there; the device runs on while the next batch is assembled.
   */
  runMs: number;
  /** Why the batch failed, if it did (all its callers were rejected with it). */
  error?: unknown;
}

export interface DynamicBatcherOptions {
  /** Samples in one batch at most (default: the largest of `batchSizes`, else 32). */
  maxBatchSize?: number;
  /**
   * How long a sample may wait for others to join its batch while a slot is free (ms). A free slot
   * waits only while more samples are expected (see the class doc): a lone caller, or a stream slower
   * than the batches, starts at once. Default: half the median run time of the last 1024 batches, at
   * least 1 ms (5 before the first batch): waiting costs latency in proportion to what a batch costs
   * anyway, callers take longer to come back when the host is busy, and a median is not thrown by a
   * first call that compiled.
   */
  maxDelayMs?: number;
  /** Samples that may wait at once; beyond it `run` rejects at once with a `QueueFullError` (default 1024). */
  maxQueue?: number;
  /** Batches running at once (default 1; a `WorkerPool` runs two per worker). */
  concurrency?: number;
  /**
   * Among how many batches the samples expected at once are shared (default `concurrency`): a free slot
   * waits for ⌈expected ÷ shareAmong⌉ samples. The slots beyond `shareAmong` running batches only queue
   * work behind them (as a `WorkerPool`'s second batch per replica waits in the replica's queue): they
   * take full batches (`maxBatchSize` samples) only, so the executors run batches as full as the
   * clients make them and never wait between two under overload.
   */
  shareAmong?: number;
  /**
   * The batch dims the function may see: a batch is padded with zero samples up to the smallest that
   * holds it (their outputs are dropped). A jitted function compiles one plan per input shape, so this
   * bounds how many it compiles (e.g. [1, 2, 4, 8, 16, 32]). Default: the batch's own size.
   */
  batchSizes?: readonly number[];
  /** Let samples differing in these dims share batches by padding them (default: samples batch only with samples of the same shape). */
  pad?: PadOptions;
  /** Move each assembled batch to this device (default: where the samples are), e.g. stack on the CPU, upload once. */
  device?: DeviceName;
  /**
   * Move each batch's outputs here before slicing them (default: leave them where `fn` made them).
   * 'cpu' reads a WebGPU batch back once, instead of once per caller.
   */
  resultDevice?: DeviceName;
  /** Called after every batch, successful or not (for metrics); an exception it throws is ignored. */
  onBatch?: (event: BatchEvent) => void;
}

export interface RunOptions {
  /** Aborting it removes the sample from the queue and rejects with the signal's reason; once its batch runs it has no effect. */
  signal?: AbortSignal;
}

export interface BatcherStats {
  /** Samples waiting now. */
  queued: number;
  /** Batches running now. */
  running: number;
  /** Samples accepted by `run` since the start. */
  accepted: number;
  /** Samples answered with their result. */
  completed: number;
  /** Samples whose batch failed. */
  failed: number;
  /** Samples refused because the queue was full (or the batcher closed). */
  rejected: number;
  /** Samples cancelled by their AbortSignal while queued. */
  cancelled: number;
  /** Batches run, by size (samples, before `batchSizes` padding): size → count. */
  batchSizes: Record<number, number>;
  /** Queue wait per sample (ms) over the last 1024 samples. */
  queueWaitMs: Percentiles;
  /** Run time per batch (ms: assemble, run, slice) over the last 1024 batches. */
  runMs: Percentiles;
}

/** `run` refused a sample: the queue holds `maxQueue` samples. Servers answer 503 (retry later). */
export class QueueFullError extends SinterError {
  constructor(maxQueue: number) {
    super('DynamicBatcher.run', `the queue is full (${maxQueue} samples wait; maxQueue ${maxQueue}): try again later`);
    this.name = 'QueueFullError';
  }
}

/** `run` after `close()`. */
export class BatcherClosedError extends SinterError {
  constructor() {
    super('DynamicBatcher.run', 'the batcher is closed');
    this.name = 'BatcherClosedError';
  }
}

interface Pending<Out> {
  readonly sample: Sample;
  readonly bucket: Bucket<Out>;
  readonly enqueued: number;
  readonly resolve: (out: Out) => void;
  readonly reject: (e: unknown) => void;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: (() => void) | undefined;
}

interface Bucket<Out> {
  readonly key: string;
  readonly items: Pending<Out>[];
}

/**
 * The samples of one bucket's key in flight: in running batches, and the callers of finished batches
 * expected back (closed-loop clients send their next request once answered), each batch's count
 * until `maxDelayMs` after it ended. Arrivals consume the oldest expected first.
 */
interface Flow {
  running: number;
  readonly expected: { n: number; until: number }[];
}

const OP = 'DynamicBatcher';

/**
 * The default `maxDelayMs`: this share of the median run time of the last `window` batches, at least
 * `min` ms (`first` before any batch). A short window follows a change of load within a few dozen
 * batches (after a spell of lone callers, 32 clients need the delay of their batches, not of batch 1).
 */
const AUTO_DELAY = { share: 0.5, min: 1, first: 5, window: 32 } as const;
/**
 * Bounds on what is remembered of callers expected back (a long fixed `maxDelayMs` with many short
 * batches, or a new shape per request, would otherwise grow the lists): the oldest go first.
 */
const MAX_EXPECTED_BATCHES = 256;
const MAX_FLOWS = 1024;

/**
 * Runs `f` in the next macrotask: Node's setImmediate runs after the I/O callbacks of this turn (so
 * requests read together batch together) without a timer's minimum delay; elsewhere a zero timeout.
 */
const nextTurn: (f: () => void) => void = (() => {
  const immediate = (globalThis as { setImmediate?: (f: () => void) => unknown }).setImmediate;
  return immediate ? (f: () => void) => void immediate(f) : (f: () => void) => void setTimeout(f, 0);
})();

function isModel<Out extends TensorTree>(fn: unknown): fn is BatchModel<Out> {
  return typeof fn === 'object' && fn !== null && typeof (fn as BatchModel<Out>).run === 'function';
}

function positiveInt(value: number | undefined, name: string, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min) throw new SinterError(OP, `${name} must be an integer ≥ ${min}, got ${JSON.stringify(value)}`);
  return value;
}

/**
 * Collects concurrent `run(sample)` calls into batches for `fn` (continuous batching). Samples wait in
 * buckets (one per shape, unless `pad` lets some dims differ). While fewer than `concurrency` batches
 * run, the bucket whose oldest sample came first becomes a batch as soon as one of these holds:
 * - it holds its share of the samples expected now: ⌈(its samples + those of its shape in running
 *   batches + the callers of its finished batches not yet back) ÷ `shareAmong`⌉, at most
 *   `maxBatchSize`; the batch takes that many. Callers of a batch that ended count as expected for
 *   `maxDelayMs` after it ended (each arrival is one of them): closed-loop clients, answered together,
 *   send their next requests within a few ms, and waiting for them keeps them in one batch instead of
 *   splitting them into a batch that starts with the first arrivals and one of stragglers behind it.
 *   Nothing running and nothing expected (a lone caller, a stream slower than the batches), the share
 *   is what waits: it starts in the next turn of the event loop (a macrotask, so that requests read in
 *   the same turn share a batch);
 * - the oldest has waited `maxDelayMs` while a slot was free (waiting for a slot does not count: the
 *   callers of the batch whose end frees it may still join);
 * - `close()` was called.
 * While `shareAmong` batches run, the remaining slots take only full batches (or any, once closing).
 * Samples are stacked along a new dim 0, the batch runs through `fn`, and every output is sliced along
 * dim 0: each caller gets fresh tensors of its own (the batch is freed). CPU samples are copied once
 * into the batch's storage (or into one host buffer uploaded once when `device` is another); each
 * caller's rows of a CPU output are copied out of it in place. A failing batch rejects exactly its callers.
 * Callers must keep their input alive until `run` settles.
 */
export class DynamicBatcher<In extends Sample = Tensor, Out extends TensorTree = TensorTree> {
  readonly maxBatchSize: number;
  readonly maxQueue: number;
  readonly concurrency: number;
  private readonly batchSizes: readonly number[] | null;
  private readonly padDims: readonly number[] | null;
  private readonly padValue: number;
  private readonly shareAmong: number;
  /** `maxDelayMs` as given; null: follow the batches' run time. */
  private readonly fixedDelayMs: number | null;
  /** The default `maxDelayMs` as last taken from the run times. */
  private autoDelayMs: number = AUTO_DELAY.first;
  private readonly recentRuns = new Window(AUTO_DELAY.window);
  /**
   * Since when a slot has been free (performance.now()): a sample that waited for a slot has not yet
   * waited for company, so its `maxDelayMs` counts from here (else it would start the moment a slot
   * frees, before the callers of the batch that ended could join it, and cohorts would persist).
   */
  private freeSince = -Infinity;
  private readonly buckets = new Map<string, Bucket<Out>>();
  /** Per bucket key, only while it has samples running or expected (entries expire: the map stays bounded). */
  private readonly flows = new Map<string, Flow>();
  private queued = 0;
  private running = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private timerAt = Infinity;
  /** A scheduling pass is due in the next macrotask (samples arrived while nothing ran). */
  private wakeDue = false;
  private closing: Promise<void> | null = null;
  private drained: (() => void) | null = null;
  private readonly counts = { accepted: 0, completed: 0, failed: 0, rejected: 0, cancelled: 0 };
  private readonly sizes = new Map<number, number>();
  private readonly waits = new Window(1024);
  private readonly runs = new Window(1024);

  constructor(
    private readonly fn: BatchFn<In, Out>,
    private readonly options: DynamicBatcherOptions = {},
  ) {
    if (typeof fn !== 'function' && !isModel(fn)) throw new SinterError(OP, `expected a function or a model with run(feeds), got ${fn === null ? 'null' : typeof fn}`);
    const sizes = options.batchSizes;
    if (sizes !== undefined) {
      if (!Array.isArray(sizes) || sizes.length === 0 || sizes.some((s) => !Number.isInteger(s) || s < 1)) {
        throw new SinterError(OP, `batchSizes must be a non-empty array of integers ≥ 1, got ${JSON.stringify(sizes)}`);
      }
    }
    this.batchSizes = sizes ? [...sizes].sort((a, b) => a - b) : null;
    this.maxBatchSize = positiveInt(options.maxBatchSize, 'maxBatchSize', this.batchSizes?.at(-1) ?? 32);
    if (this.batchSizes && this.batchSizes.at(-1)! < this.maxBatchSize) {
      throw new SinterError(OP, `maxBatchSize ${this.maxBatchSize} is larger than the largest of batchSizes ${JSON.stringify(this.batchSizes)}`);
    }
    const delay = options.maxDelayMs;
    if (delay !== undefined && (typeof delay !== 'number' || !(delay >= 0) || !Number.isFinite(delay))) throw new SinterError(OP, `maxDelayMs must be a finite number ≥ 0, got ${JSON.stringify(delay)}`);
    this.fixedDelayMs = delay ?? null;
    this.maxQueue = positiveInt(options.maxQueue, 'maxQueue', 1024);
    this.concurrency = positiveInt(options.concurrency, 'concurrency', 1);
    this.shareAmong = positiveInt(options.shareAmong, 'shareAmong', this.concurrency);
    if (this.shareAmong > this.concurrency) throw new SinterError(OP, `shareAmong ${this.shareAmong} is larger than concurrency ${this.concurrency}`);
    if (options.pad !== undefined) {
      const dims = options.pad.dims;
      if (!Array.isArray(dims) || dims.some((d) => !Number.isInteger(d))) throw new SinterError(OP, `pad.dims must be an array of integer dims, got ${JSON.stringify(dims)}`);
    }
    this.padDims = options.pad ? [...options.pad.dims] : null;
    this.padValue = options.pad?.value ?? 0;
  }

  /** The longest a sample waits for company now (ms): `maxDelayMs`, or its default from the batches' run time. */
  get maxDelayMs(): number {
    return this.fixedDelayMs ?? this.autoDelayMs;
  }

  /**
   * Queues one sample (no batch dim) and resolves to its own slice of the batch's outputs, in the
   * structure `fn` returns. Rejects at once with a `QueueFullError` when `maxQueue` samples wait, with a
   * `BatcherClosedError` after `close()`, with the signal's reason when aborted while queued, and with
   * the batch's error when its batch fails.
   */
  run(sample: In, options: RunOptions = {}): Promise<Out> {
    if (this.closing) {
      this.counts.rejected++;
      return Promise.reject(new BatcherClosedError());
    }
    let key: string;
    try {
      key = this.keyOf(sample);
    } catch (e) {
      return Promise.reject(e);
    }
    const { signal } = options;
    if (signal?.aborted) {
      this.counts.cancelled++;
      return Promise.reject(signal.reason);
    }
    if (this.queued >= this.maxQueue) {
      this.counts.rejected++;
      return Promise.reject(new QueueFullError(this.maxQueue));
    }
    return new Promise<Out>((resolve, reject) => {
      let bucket = this.buckets.get(key);
      if (!bucket) this.buckets.set(key, (bucket = { key, items: [] }));
      const onAbort = signal ? () => this.cancel(item) : undefined;
      const item: Pending<Out> = { sample, bucket, enqueued: performance.now(), resolve, reject, signal, onAbort };
      signal?.addEventListener('abort', onAbort!, { once: true });
      bucket.items.push(item);
      this.arrived(key, item.enqueued);
      this.queued++;
      this.counts.accepted++;
      this.wake();
    });
  }

  /** Stops accepting samples, runs every queued one without waiting for `maxDelayMs`, and resolves once all batches have finished. */
  close(): Promise<void> {
    if (!this.closing) {
      this.closing = new Promise<void>((resolve) => (this.drained = resolve));
      this.schedule();
    }
    return this.closing;
  }

  stats(): BatcherStats {
    return {
      queued: this.queued,
      running: this.running,
      ...this.counts,
      batchSizes: Object.fromEntries([...this.sizes].sort((a, b) => a[0] - b[0])),
      queueWaitMs: this.waits.percentiles(),
      runMs: this.runs.percentiles(),
    };
  }

  /** The bucket a sample waits in: its tensors' names, dtypes, devices and shapes (padded dims as '*'). */
  private keyOf(sample: Sample): string {
    const entries: [string, Tensor][] = sample instanceof Tensor ? [['', sample]] : typeof sample === 'object' && sample !== null ? Object.entries(sample) : [];
    if (entries.length === 0 || entries.some(([, t]) => !(t instanceof Tensor))) {
      throw new SinterError(`${OP}.run`, 'expected a tensor or an object of named tensors as the sample');
    }
    return entries
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([name, t]) => {
        if (t.isDisposed) throw new SinterError(`${OP}.run`, `the sample${name ? ` '${name}'` : ''} was disposed`);
        const padded = new Set((this.padDims ?? []).map((d) => (d < 0 ? d + t.ndim : d)));
        return `${name}:${t.device}:${t.dtype}[${t.shape.map((s, d) => (padded.has(d) ? '*' : s)).join(',')}]`;
      })
      .join('|');
  }

  private cancel(item: Pending<Out>): void {
    const at = item.bucket.items.indexOf(item);
    if (at < 0) return; // already running
    item.bucket.items.splice(at, 1);
    if (item.bucket.items.length === 0) this.buckets.delete(item.bucket.key);
    this.queued--;
    this.counts.cancelled++;
    item.reject(item.signal!.reason);
    this.schedule();
  }

  /**
   * After a sample was queued: a full bucket or an idle runner needs a scheduling pass; it runs in the
   * next macrotask, not inside `run`, so samples arriving in this turn join the batch (and a synchronous
   * fn never runs inside its caller). Otherwise the batch end or the delay timer schedules.
   */
  private wake(): void {
    if (this.wakeDue) return;
    this.wakeDue = true;
    nextTurn(() => {
      this.wakeDue = false;
      this.schedule();
    });
  }

  /** A sample of `key` arrived: if callers of its finished batches are expected back, it is one of them. */
  private arrived(key: string, now: number): void {
    const flow = this.flows.get(key);
    if (!flow || !this.expire(key, flow, now)) return;
    const oldest = flow.expected[0];
    if (oldest && --oldest.n === 0) flow.expected.shift();
  }

  /** Drops the expected callers whose time is up; forgets the flow once nothing runs or is expected. Returns whether it is kept. */
  private expire(key: string, flow: Flow, now: number): boolean {
    while (flow.expected.length > 0 && flow.expected[0]!.until <= now) flow.expected.shift();
    if (flow.running > 0 || flow.expected.length > 0) return true;
    this.flows.delete(key);
    return false;
  }

  /** The samples a batch of this bucket waits for: its share of those queued, running and expected (see the class doc). */
  private share(b: Bucket<Out>): number {
    let expected = b.items.length;
    const flow = this.flows.get(b.key);
    if (flow) {
      expected += flow.running;
      for (const e of flow.expected) expected += e.n;
    }
    return Math.min(this.maxBatchSize, Math.ceil(expected / this.shareAmong));
  }

  /** Starts every batch that is due while fewer than `concurrency` run (see the class doc), then arms the timer for the next. */
  private schedule(): void {
    const now = performance.now();
    const delay = this.maxDelayMs;
    for (const [key, flow] of this.flows) this.expire(key, flow, now);
    while (this.running < this.concurrency) {
      // Beyond shareAmong running batches a slot only queues work behind them: it takes full batches.
      const queueing = this.running >= this.shareAmong;
      let due: Bucket<Out> | null = null;
      let take = 0;
      for (const b of this.buckets.values()) {
        const head = b.items[0]!;
        const share = queueing ? this.maxBatchSize : this.share(b);
        const ready = this.closing !== null || b.items.length >= share || (!queueing && now - Math.max(head.enqueued, this.freeSince) >= delay);
        if (ready && (!due || head.enqueued < due.items[0]!.enqueued)) {
          due = b;
          take = this.closing ? this.maxBatchSize : share;
        }
      }
      if (!due) break;
      const items = due.items.splice(0, take);
      if (due.items.length === 0) this.buckets.delete(due.key);
      this.queued -= items.length;
      void this.launch(items);
    }
    this.arm(now, delay);
    if (this.closing && this.queued === 0 && this.running === 0) this.drained?.();
  }

  /**
   * While a slot is free, wakes `schedule` when a waiting batch may become due: its oldest sample's
   * `maxDelayMs` (counted from when a slot freed) is up, or callers expected for its shape stop being expected (its share shrinks).
   */
  private arm(now: number, delay: number): void {
    let next = Infinity;
    if (this.running < this.shareAmong) {
      for (const b of this.buckets.values()) {
        next = Math.min(next, Math.max(b.items[0]!.enqueued, this.freeSince) + delay);
        const until = this.flows.get(b.key)?.expected[0]?.until;
        if (until !== undefined) next = Math.min(next, until);
      }
    }
    if (next === this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = next;
    if (next === Infinity) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerAt = Infinity;
      this.schedule();
    }, Math.max(0, next - now));
  }

  private async launch(items: Pending<Out>[]): Promise<void> {
    this.running++;
    const key = items[0]!.bucket.key;
    let flow = this.flows.get(key);
    if (!flow) {
      if (this.flows.size >= MAX_FLOWS) {
        for (const [k, f] of this.flows) {
          if (f.running > 0) continue;
          this.flows.delete(k);
          break;
        }
      }
      this.flows.set(key, (flow = { running: 0, expected: [] }));
    }
    flow.running += items.length;
    const start = performance.now();
    const waits = items.map((it) => {
      if (it.onAbort) it.signal!.removeEventListener('abort', it.onAbort);
      return start - it.enqueued;
    });
    const paddedSize = this.batchSizes?.find((s) => s >= items.length) ?? items.length;
    let error: unknown;
    try {
      // Yield first, so that a synchronous fn never runs inside an abort listener or `close()`.
      await Promise.resolve();
      const results = await this.runBatch(items.map((it) => it.sample), paddedSize);
      items.forEach((it, i) => it.resolve(results[i]!));
      this.counts.completed += items.length;
    } catch (e) {
      error = e;
      for (const it of items) it.reject(e);
      this.counts.failed += items.length;
    }
    const runMs = performance.now() - start;
    for (const w of waits) this.waits.push(w);
    this.runs.push(runMs);
    this.recentRuns.push(runMs);
    this.autoDelayMs = Math.max(AUTO_DELAY.min, AUTO_DELAY.share * this.recentRuns.percentiles().p50);
    this.sizes.set(items.length, (this.sizes.get(items.length) ?? 0) + 1);
    if (this.running === this.shareAmong) this.freeSince = performance.now();
    this.running--;
    // Its callers are expected back for maxDelayMs (a flow with samples running is never dropped).
    flow.running -= items.length;
    if (flow.expected.length >= MAX_EXPECTED_BATCHES) flow.expected.shift();
    flow.expected.push({ n: items.length, until: performance.now() + this.maxDelayMs });
    try {
      this.options.onBatch?.({ size: items.length, paddedSize, queueWaitMs: waits, runMs, ...(error === undefined ? {} : { error }) });
    } catch {
      // Metrics must not break serving.
    }
    this.schedule();
  }

  /** Stacks the samples, runs the batch and returns each sample's outputs; frees the batch and its outputs. */
  private async runBatch(samples: Sample[], paddedSize: number): Promise<Out[]> {
    const batch = await this.assemble(samples, paddedSize);
    const owned = new Set<Tensor>(batch instanceof Tensor ? [batch] : Object.values(batch));
    try {
      const fn = this.fn;
      let out: Out;
      if (isModel<Out>(fn)) {
        let feeds: Record<string, Tensor>;
        if (batch instanceof Tensor) {
          const names = fn.inputs ?? [];
          if (names.length !== 1) throw new SinterError(OP, `the model has ${names.length} inputs (${names.map((n) => n.name).join(', ')}): pass samples as objects of named tensors`);
          feeds = { [names[0]!.name]: batch };
        } else feeds = batch;
        out = await fn.run(feeds);
      } else {
        out = await (fn as (b: In) => Out | Promise<Out>)(batch as In);
      }
      const leaves: Tensor[] = [];
      try {
        collect(out, leaves);
        const target = this.options.resultDevice;
        if (target && leaves.some((t) => t.device !== target)) {
          const moved = new Map<Tensor, Tensor>();
          for (const t of leaves) {
            const m = await t.toDevice(target);
            if (m !== t) owned.add(m);
            moved.set(t, m);
          }
          out = rebuild(out, (t) => moved.get(t)!) as Out;
          return await this.slice(out, [...moved.values()], samples.length, paddedSize);
        }
        return await this.slice(out, leaves, samples.length, paddedSize);
      } finally {
        for (const t of leaves) owned.add(t);
      }
    } finally {
      for (const t of owned) t.dispose();
    }
  }

  /** The batch: samples padded (per `pad`), stacked on a new dim 0, zero samples added up to `paddedSize`, moved to `device`. */
  private async assemble(samples: Sample[], paddedSize: number): Promise<Tensor | Record<string, Tensor>> {
    const first = samples[0]!;
    if (first instanceof Tensor) return this.assembleOne(samples as Tensor[], paddedSize);
    const names = Object.keys(first);
    const made: Tensor[] = [];
    try {
      for (const name of names) made.push(await this.assembleOne(samples.map((s) => (s as Record<string, Tensor>)[name]!), paddedSize));
    } catch (e) {
      made.forEach((t) => t.dispose());
      throw e;
    }
    return Object.fromEntries(names.map((name, i) => [name, made[i]!]));
  }

  /**
   * One input's batch. CPU samples of one shape (no padding needed) are copied once, with zero rows
   * up to `paddedSize`, into the batch's CPU storage, or into one host buffer that becomes the batch
   * on `device`: one allocation, one upload, no kernel launches. Other samples go through the
   * stack/pad ops on their device.
   */
  private async assembleOne(ts: Tensor[], paddedSize: number): Promise<Tensor> {
    const head = ts[0]!;
    const padded = this.paddedDims(head);
    const target = head.shape.map((s, d) => (padded.has(d) ? Math.max(...ts.map((t) => t.shape[d]!)) : s));
    const sameShape = ts.every((t) => t.shape.every((s, d) => s === target[d]));
    if (head.device === 'cpu' && sameShape && (this.options.device ?? 'cpu') === 'cpu' && ts.every((t) => t.isContiguous())) {
      // Straight into the batch's storage: one copy per sample, no host arrays (see host.ts).
      const batch = emptyCpu(head.dtype, [paddedSize, ...head.shape]);
      const dst = cpuBytes(batch)!;
      let at = 0;
      for (const t of ts) {
        const src = cpuBytes(t)!;
        dst.set(src, at);
        at += src.byteLength;
      }
      dst.fill(0, at);
      return batch;
    }
    if (head.device === 'cpu' && sameShape) {
      const per = head.numel();
      const values = await Promise.all(ts.map((t) => t.data()));
      const host = allocHost(head.dtype, paddedSize * per);
      values.forEach((v, i) => host.set(v, i * per));
      return fromHost(OP, host, [paddedSize, ...head.shape], head.dtype, this.options.device ?? 'cpu');
    }
    return tidy(() => {
      const parts = ts.map((t) => {
        if (t.shape.every((s, d) => s === target[d])) return t;
        // pad() lists (before, after) widths from the last dim.
        const fromLast: number[] = [];
        for (let d = t.ndim - 1; d >= 0; d--) fromLast.push(0, target[d]! - t.shape[d]!);
        return pad(t, fromLast, { value: this.padValue });
      });
      let b = stack(parts, 0);
      if (paddedSize > parts.length) b = cat([b, zeros([paddedSize - parts.length, ...b.shape.slice(1)], { dtype: b.dtype, device: b.device })], 0);
      return this.options.device && this.options.device !== b.device ? b.to(this.options.device) : b;
    });
  }

  /** The dims of `pad.dims` as non-negative dims of this sample; a dim it lacks is an error. */
  private paddedDims(sample: Tensor): Set<number> {
    const ndim = sample.ndim;
    const dims = new Set((this.padDims ?? []).map((d) => (d < 0 ? d + ndim : d)));
    for (const d of dims) if (d < 0 || d >= ndim) throw new SinterError(OP, `pad.dims has dim ${d} but the samples have ${ndim} dims (shape ${fmtShape(sample.shape)})`);
    return dims;
  }

  /**
   * Each sample's slice of every output (fresh tensors), in the outputs' structure. A CPU output is
   * read once and each sample's rows copied out of it; others are sliced on their device.
   */
  private async slice(out: Out, leaves: Tensor[], n: number, paddedSize: number): Promise<Out[]> {
    for (const t of leaves) {
      if (t.ndim === 0 || t.shape[0] !== paddedSize) {
        throw new SinterError(OP, `every output must have the batch (${paddedSize}) as dim 0, got an output of shape ${fmtShape(t.shape)}`);
      }
    }
    // Strided CPU outputs are read once; contiguous ones are copied from in place (cpuRow).
    const host = new Map<Tensor, HostArray>();
    for (const t of leaves) if (t.device === 'cpu' && !t.isContiguous() && !host.has(t)) host.set(t, await t.data());
    const made: Tensor[] = [];
    try {
      return Array.from({ length: n }, (_, i) => rebuild(out, (t) => {
        const values = host.get(t);
        const per = t.numel() / paddedSize;
        const s = values
          ? fromHost(OP, values.subarray(i * per, (i + 1) * per), t.shape.slice(1), t.dtype, 'cpu')
          : (cpuRow(t, i) ?? tidy(() => t.narrow(0, i, 1).squeeze(0).clone()));
        made.push(s);
        return s;
      }) as Out);
    } catch (e) {
      made.forEach((t) => t.dispose());
      throw e;
    }
  }
}

function collect(tree: unknown, out: Tensor[]): void {
  if (tree instanceof Tensor) out.push(tree);
  else if (Array.isArray(tree)) tree.forEach((t) => collect(t, out));
  else if (tree && typeof tree === 'object') Object.values(tree).forEach((t) => collect(t, out));
  else throw new SinterError(OP, `the batch function must return tensors (or arrays/objects of them), got ${tree === null ? 'null' : typeof tree}`);
}

function rebuild(tree: unknown, leaf: (t: Tensor) => Tensor): unknown {
  if (tree instanceof Tensor) return leaf(tree);
  if (Array.isArray(tree)) return tree.map((t) => rebuild(t, leaf));
  return Object.fromEntries(Object.entries(tree as object).map(([k, v]) => [k, rebuild(v, leaf)]));
}
