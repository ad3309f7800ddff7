import type { DeviceName } from '../backend/backend.js';
import { SinterError, fmtShape } from '../errors.js';
import type { TensorTree } from '../jit/jit.js';
import { cat, pad, stack } from '../ops/movement.js';
import { fromHost, zeros } from '../tensor/creation.js';
import { type HostArray, allocHost } from '../tensor/dtype.js';
import { tidy } from '../tensor/scope.js';
import { Tensor } from '../tensor/tensor.js';
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
   * How long a sample may wait for others while a batch slot is free but another batch runs (ms,
   * default 5); see the class doc for the whole rule. A runner with nothing running never waits, so
   * with `concurrency` 1 this delay never applies.
   */
  maxDelayMs?: number;
  /** Samples that may wait at once; beyond it `run` rejects at once with a `QueueFullError` (default 1024). */
  maxQueue?: number;
  /** Batches running at once (default 1; a `WorkerPool` runs one per worker). */
  concurrency?: number;
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

const OP = 'DynamicBatcher';

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
 * run, the bucket whose oldest sample came first becomes a batch (of at most `maxBatchSize` samples)
 * as soon as one of these holds:
 * - no batch is running: an idle runner never waits. Samples that arrive while it is idle start in the
 *   next turn of the event loop (a macrotask, so requests read in the same turn share a batch), even a
 *   lone sample;
 * - a batch just ended: what queued while it ran forms the next batch at once (that is the "no batch
 *   is running" case again when `concurrency` is 1);
 * - `maxBatchSize` samples of the bucket wait;
 * - the oldest has waited `maxDelayMs` (only reachable when `concurrency` > 1: a free slot while other
 *   batches run waits at most this long for its batch to fill);
 * - `close()` was called.
 * Samples are stacked along a new dim 0, the batch runs through `fn`, and every output is sliced along
 * dim 0: each caller gets fresh tensors of its own (the batch is freed). CPU samples are copied once
 * into one host buffer that becomes the batch (uploaded once when `device` is another); CPU outputs
 * are read once and each caller's rows copied out. A failing batch rejects exactly its callers.
 * Callers must keep their input alive until `run` settles.
 */
export class DynamicBatcher<In extends Sample = Tensor, Out extends TensorTree = TensorTree> {
  readonly maxBatchSize: number;
  readonly maxDelayMs: number;
  readonly maxQueue: number;
  readonly concurrency: number;
  private readonly batchSizes: readonly number[] | null;
  private readonly padDims: readonly number[] | null;
  private readonly padValue: number;
  private readonly buckets = new Map<string, Bucket<Out>>();
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
    const delay = options.maxDelayMs ?? 5;
    if (typeof delay !== 'number' || !(delay >= 0) || !Number.isFinite(delay)) throw new SinterError(OP, `maxDelayMs must be a finite number ≥ 0, got ${JSON.stringify(delay)}`);
    this.maxDelayMs = delay;
    this.maxQueue = positiveInt(options.maxQueue, 'maxQueue', 1024);
    this.concurrency = positiveInt(options.concurrency, 'concurrency', 1);
    if (options.pad !== undefined) {
      const dims = options.pad.dims;
      if (!Array.isArray(dims) || dims.some((d) => !Number.isInteger(d))) throw new SinterError(OP, `pad.dims must be an array of integer dims, got ${JSON.stringify(dims)}`);
    }
    this.padDims = options.pad ? [...options.pad.dims] : null;
    this.padValue = options.pad?.value ?? 0;
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

  /** Starts every batch that is due while fewer than `concurrency` run (see the class doc), then arms the timer for the next. */
  private schedule(): void {
    const now = performance.now();
    const idle = this.running === 0;
    while (this.running < this.concurrency) {
      let due: Bucket<Out> | null = null;
      for (const b of this.buckets.values()) {
        const head = b.items[0]!;
        const ready = idle || this.closing !== null || b.items.length >= this.maxBatchSize || now - head.enqueued >= this.maxDelayMs;
        if (ready && (!due || head.enqueued < due.items[0]!.enqueued)) due = b;
      }
      if (!due) break;
      const items = due.items.splice(0, this.maxBatchSize);
      if (due.items.length === 0) this.buckets.delete(due.key);
      this.queued -= items.length;
      void this.launch(items);
    }
    this.arm(now);
    if (this.closing && this.queued === 0 && this.running === 0) this.drained?.();
  }

  /** Wakes `schedule` when the oldest waiting sample's delay is up (only while a slot is free and another batch runs). */
  private arm(now: number): void {
    let next = Infinity;
    if (this.running < this.concurrency) for (const b of this.buckets.values()) next = Math.min(next, b.items[0]!.enqueued + this.maxDelayMs);
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
    this.sizes.set(items.length, (this.sizes.get(items.length) ?? 0) + 1);
    this.running--;
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
   * One input's batch. CPU samples of one shape (no padding needed) are copied once into one host
   * buffer, with zero rows up to `paddedSize`, which becomes the batch on `device`: one allocation,
   * one upload, no kernel launches. Other samples go through the stack/pad ops on their device.
   */
  private async assembleOne(ts: Tensor[], paddedSize: number): Promise<Tensor> {
    const head = ts[0]!;
    const padded = this.paddedDims(head);
    const target = head.shape.map((s, d) => (padded.has(d) ? Math.max(...ts.map((t) => t.shape[d]!)) : s));
    const sameShape = ts.every((t) => t.shape.every((s, d) => s === target[d]));
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
    const host = new Map<Tensor, HostArray>();
    for (const t of leaves) if (t.device === 'cpu' && !host.has(t)) host.set(t, await t.data());
    const made: Tensor[] = [];
    try {
      return Array.from({ length: n }, (_, i) => rebuild(out, (t) => {
        const values = host.get(t);
        const per = t.numel() / paddedSize;
        const s = values ? fromHost(OP, values.slice(i * per, (i + 1) * per), t.shape.slice(1), t.dtype, 'cpu') : tidy(() => t.narrow(0, i, 1).squeeze(0).clone());
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
