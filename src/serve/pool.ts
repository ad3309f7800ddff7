import type { Worker as NodeWorker } from 'node:worker_threads';
import type { DeviceName } from '../backend/backend.js';
import { SinterError } from '../errors.js';
import type { TensorTree } from '../jit/jit.js';
import { type HostArray, allocHost } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';
import { type BatcherStats, DynamicBatcher, type DynamicBatcherOptions, type RunOptions, type Sample } from './batcher.js';
import { cpuBytes } from './host.js';
import { type FromWorker, type ToWorker, type WireTree, type WorkerInit, fromWire, toWire } from './wire.js';

export interface WorkerPoolOptions extends Omit<DynamicBatcherOptions, 'concurrency' | 'shareAmong' | 'device'> {
  /**
   * Replicas, each a worker thread with its own copy of the model (default: the cores available
   * divided by `threadsPerWorker`, at least 1; 1 on WebGPU, where replicas share one GPU).
   */
  workers?: number;
  /**
   * Threads one replica's CPU backend uses (default 1). Replicas and a replica's own threads compete for
   * the same cores: keep workers × threadsPerWorker ≤ cores, or both slow down (the default does). Each
   * replica opens sinter with `init({ threads })`; a module's factory also receives it as `threads`.
   */
  threadsPerWorker?: number;
  /** Where each replica runs the model (default 'cpu'). */
  device?: DeviceName | 'auto';
}

export interface WorkerPoolStats extends BatcherStats {
  workers: number;
  /** Batches each replica has run. */
  batchesPerWorker: number[];
}

/** A batch on its way to a replica, kept until answered so that one queued on a replica that dies can go to another. */
interface Job {
  readonly id: number;
  readonly batch: WireTree;
  readonly resolve: (o: WireTree) => void;
  readonly reject: (e: unknown) => void;
}

/** How long a closing pool waits for a replica's device to finish its work before ending the thread anyway. */
const DRAIN_TIMEOUT_MS = 60_000;

/**
 * Ends a replica's thread once it has drained (its posted batches and its device's queued work done):
 * terminating a worker whose Dawn device still runs a dispatch aborts the whole process on SwiftShader
 * (bench/quant-swiftshader-probe.mjs). A replica that does not answer within DRAIN_TIMEOUT_MS is ended anyway.
 */
async function stopReplica(r: Replica): Promise<void> {
  await new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      r.worker.off('message', onMessage);
      r.worker.off('exit', done);
      resolve();
    };
    const onMessage = (m: FromWorker) => void (m.type === 'drained' && done());
    const timer = setTimeout(done, DRAIN_TIMEOUT_MS);
    r.worker.on('message', onMessage);
    r.worker.once('exit', done);
    r.worker.postMessage({ type: 'drain' } satisfies ToWorker);
  });
  await r.worker.terminate();
}

interface Replica {
  readonly worker: NodeWorker;
  batches: number;
  /** The batches posted to it, in order: the first runs, the others wait in its message queue. */
  readonly jobs: Job[];
}

/**
 * Batches posted to one replica at once: the one it runs and the next, which waits in its message
 * queue, so that the replica starts it the moment it posts a result instead of waiting for this
 * thread to answer callers and hand over a new batch.
 */
const BATCHES_PER_REPLICA = 2;

/**
 * Spare SharedArrayBuffers kept for batches' values (see `toShared`): enough for the batches in flight
 * of a few replicas with a few inputs each; the pool never holds more (the smallest go first).
 */
const MAX_SPARE_SLOTS = 32;

/** `node:worker_threads`, imported by a computed name so that browser bundles leave it out. */
async function workerThreads(): Promise<typeof import('node:worker_threads')> {
  const name = 'node:worker_threads';
  try {
    return (await import(name)) as typeof import('node:worker_threads');
  } catch {
    throw new SinterError('WorkerPool', 'needs Node.js worker_threads, which this runtime lacks');
  }
}

async function availableCores(): Promise<number> {
  const name = 'node:os';
  const os = (await import(name)) as typeof import('node:os');
  return os.availableParallelism?.() ?? os.cpus().length;
}

/**
 * Independent replicas of a model in worker threads, behind a `DynamicBatcher` that keeps two batches
 * in flight per replica (one running, the next queued on it); where the replicas' threads take every
 * core it shares the samples it expects among the replicas, not the batches in flight (see
 * `makeBatcher`). `source` is the path or URL of an ES module whose default export is
 * `async (sn, { device, threads }) => fn` (fn: a batch function such as a jitted one, or a model with
 * `run(feeds)`; `sn` is the worker's sinter, so tensors stay on one instance), or an ONNX model's bytes.
 * Samples are stacked on the calling thread, each batch is copied into memory shared with a free replica, and each caller
 * gets its slice of the outputs as CPU tensors. A replica that dies fails its batch and is replaced.
 */
export class WorkerPool<In extends Sample = Tensor, Out extends TensorTree = TensorTree> {
  private batcher: DynamicBatcher<In, Out>;
  private readonly batching: Omit<DynamicBatcherOptions, 'concurrency' | 'shareAmong' | 'device'>;
  private readonly replicas: Replica[] = [];
  /** Batches waiting for a replica with room (while every replica holds BATCHES_PER_REPLICA, or one is being replaced). */
  private readonly backlog: Job[] = [];
  /** SharedArrayBuffers that carried answered batches, reused for the next (see `toShared`). */
  private readonly spare: SharedArrayBuffer[] = [];
  /** Why no replica can run batches any more (every replica died and could not be replaced). */
  private broken: unknown = null;
  private readonly started: Promise<void>;
  private nextId = 0;
  private closed = false;
  private init: WorkerInit | null = null;
  private workerCount = 0;

  constructor(source: string | URL | Uint8Array | ArrayBuffer, options: WorkerPoolOptions = {}) {
    const { workers, threadsPerWorker, device, ...batching } = options;
    for (const [name, v] of [['workers', workers], ['threadsPerWorker', threadsPerWorker]] as const) {
      if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new SinterError('WorkerPool', `${name} must be an integer ≥ 1, got ${JSON.stringify(v)}`);
    }
    let from: WorkerInit['source'];
    if (source instanceof Uint8Array || source instanceof ArrayBuffer) from = { model: new Uint8Array(source) };
    else if (source instanceof URL || typeof source === 'string') from = { module: String(source) };
    else throw new SinterError('WorkerPool', `expected a module path or URL, or an ONNX model's bytes, got ${typeof source}`);
    this.batching = batching;
    // Replaced once the worker count is known (run() waits for that, so no sample reaches this one).
    this.batcher = this.makeBatcher(workers ?? 1, 1);
    this.started = this.start(from, device ?? 'cpu', threadsPerWorker ?? 1, workers);
    this.started.catch(() => {}); // reported by ready() and run()
  }

  /** Resolves once every replica has loaded its model; rejects with the first that failed. */
  ready(): Promise<void> {
    return this.started;
  }

  /** How many replicas run (known once `ready()` resolved). */
  get workers(): number {
    return this.workerCount;
  }

  /** Queues one sample (see `DynamicBatcher.run`); resolves to its outputs as CPU tensors. */
  async run(sample: In, options: RunOptions = {}): Promise<Out> {
    await this.started;
    return this.batcher.run(sample, options);
  }

  stats(): WorkerPoolStats {
    return { ...this.batcher.stats(), workers: this.workerCount, batchesPerWorker: this.replicas.map((r) => r.batches) };
  }

  /** Drains the queue (every accepted sample is answered), then stops the replicas. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.started.catch(() => {});
    await this.batcher.close();
    await Promise.all(this.replicas.map((r) => stopReplica(r)));
  }

  private async start(source: WorkerInit['source'], device: DeviceName | 'auto', threads: number, workers: number | undefined): Promise<void> {
    const { Worker } = await workerThreads();
    const cores = await availableCores();
    const count = workers ?? (device === 'webgpu' ? 1 : Math.max(1, Math.floor(cores / threads)));
    this.workerCount = count;
    this.batcher = this.makeBatcher(count, cores - count * threads);
    if ('module' in source && !/^[a-z][a-z0-9+.-]*:/i.test(source.module)) {
      // A path: the worker resolves imports from its own file, so hand it an absolute file URL.
      const url = 'node:url', path = 'node:path';
      const { pathToFileURL } = (await import(url)) as typeof import('node:url');
      const { resolve } = (await import(path)) as typeof import('node:path');
      source = { module: pathToFileURL(resolve(source.module)).href };
    }
    this.init = { source, device, threads };
    const spawn = (): Promise<Replica> =>
      new Promise<Replica>((resolve, reject) => {
        const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: this.init });
        const replica: Replica = { worker, batches: 0, jobs: [] };
        let loaded = false;
        worker.on('message', (m: FromWorker) => {
          if (m.type === 'ready') {
            loaded = true;
            resolve(replica);
          } else if (m.type === 'failed') reject(new SinterError('WorkerPool', `a replica failed to load the model: ${m.message}`));
          else if (m.type !== 'drained') {
            const at = replica.jobs.findIndex((j) => j.id === m.id);
            if (at < 0) return;
            const [job] = replica.jobs.splice(at, 1);
            replica.batches++;
            if (m.type === 'result') job!.resolve(m.outputs);
            else job!.reject(Object.assign(new Error(m.message), { name: m.name }));
            this.pump();
          }
        });
        worker.on('error', (e) => (loaded ? undefined : reject(e)));
        worker.on('exit', (code) => {
          if (!loaded) return reject(new SinterError('WorkerPool', `a replica exited (code ${code}) while loading the model`));
          // The first batch was running: it fails. Those queued behind it never started: another replica takes them.
          const [running, ...queued] = replica.jobs.splice(0);
          running?.reject(new SinterError('WorkerPool', `the replica running this batch exited (code ${code})`));
          this.backlog.unshift(...queued);
          const at = this.replicas.indexOf(replica);
          this.replicas.splice(at, 1);
          if (this.closed) return this.pump();
          // Replace it, in its place, so the pool keeps its size.
          spawn().then(
            (fresh) => {
              this.replicas.splice(at, 0, fresh);
              if (this.closed) void stopReplica(fresh);
              this.pump();
            },
            (e) => {
              if (this.replicas.length === 0) this.broken = e;
              this.pump();
            },
          );
          this.pump();
        });
      });
    const started = await Promise.allSettled(Array.from({ length: count }, spawn));
    const failed = started.find((s) => s.status === 'rejected');
    for (const s of started) if (s.status === 'fulfilled') this.replicas.push(s.value);
    if (failed) {
      this.closed = true;
      await Promise.all(this.replicas.map((r) => stopReplica(r)));
      throw (failed as PromiseRejectedResult).reason;
    }
  }

  /**
   * The batcher in front: BATCHES_PER_REPLICA batches in flight per replica. With a core to spare
   * beside the replicas' threads, this thread's work (answering one batch's callers, reading their
   * next requests) overlaps a replica's run of the other batch: the samples expected are shared among
   * the batches in flight (half batches, cost per sample about the same from 8 up on the CPU). Without
   * one, that work takes cores from the replicas anyway, so overlapping gains nothing and each replica
   * runs one batch as full as the clients make it (shared among the replicas).
   */
  private makeBatcher(replicas: number, spareCores: number): DynamicBatcher<In, Out> {
    const concurrency = replicas * BATCHES_PER_REPLICA;
    return new DynamicBatcher<In, Out>((batch) => this.dispatch(batch), { ...this.batching, concurrency, shareAmong: spareCores > 0 ? concurrency : replicas });
  }

  /** Posts waiting batches to the replicas with the fewest batches on them, while any has room. */
  private pump(): void {
    while (this.backlog.length > 0) {
      if (this.broken !== null) {
        for (const job of this.backlog.splice(0)) job.reject(this.broken);
        return;
      }
      let best: Replica | null = null;
      for (const r of this.replicas) if (r.jobs.length < BATCHES_PER_REPLICA && (!best || r.jobs.length < best.jobs.length)) best = r;
      if (!best) return;
      this.post(best, this.backlog.shift()!);
    }
  }

  private post(replica: Replica, job: Job): void {
    replica.jobs.push(job);
    // Not transferred (shared or copied): the pool keeps the batch until it is answered, in case this replica dies first.
    replica.worker.postMessage({ type: 'run', id: job.id, batch: job.batch } satisfies ToWorker);
  }

  /**
   * Runs each of these batches (batch dim first, as the replicas' function takes them) once on every
   * replica, discarding the outputs. A jitted function compiles a plan per batch size: warming the
   * sizes the batcher will form (see `batchSizes`) keeps compiling out of the first requests. Call it
   * after `ready()` and before serving.
   */
  async warmUp(batches: readonly In[]): Promise<void> {
    await this.started;
    for (const batch of batches) {
      const wire = await toWire(batch, []);
      if (this.backlog.length > 0 || this.replicas.some((r) => r.jobs.length > 0)) throw new SinterError('WorkerPool.warmUp', 'replicas are busy: warm up before serving');
      await Promise.all(this.replicas.map((r) => new Promise<WireTree>((resolve, reject) => this.post(r, { id: this.nextId++, batch: wire, resolve, reject }))));
    }
  }

  /**
   * Runs one batch on a replica with room: copies it into shared slots (see `toShared`), the replica
   * copies it into its own heap, and its outputs come back as CPU tensors. The slots are reused once
   * the batch is answered (or failed): a batch queued on a replica that dies is still intact for another.
   */
  private async dispatch(batch: In): Promise<Out> {
    const slots: SharedArrayBuffer[] = [];
    try {
      const wire = await this.toShared(batch, slots);
      const outputs = await new Promise<WireTree>((resolve, reject) => {
        this.backlog.push({ id: this.nextId++, batch: wire, resolve, reject });
        this.pump();
      });
      return fromWire(outputs, 'cpu') as Out;
    } finally {
      this.release(slots);
    }
  }

  /**
   * A batch's tensors as wire tensors whose values sit in SharedArrayBuffers taken from `spare` (added
   * to `slots`): one copy out of the CPU heap, and postMessage shares them instead of copying them
   * again, with no new buffers per batch (a batch of 32 small-CNN samples is 384 KiB: allocating and
   * copying it twice per batch cost this thread time and V8 full collections). Tensors that are not
   * contiguous CPU tensors, and float16 ones (their storage holds binary16 bits; the wire carries
   * float32 values), go as copies the pool keeps.
   */
  private async toShared(tree: unknown, slots: SharedArrayBuffer[]): Promise<WireTree> {
    if (tree instanceof Tensor) {
      const bytes = tree.dtype === 'float16' ? null : cpuBytes(tree);
      if (!bytes) return toWire(tree, []);
      const slot = this.slot(bytes.byteLength);
      slots.push(slot);
      new Uint8Array(slot, 0, bytes.byteLength).set(bytes);
      const Host = allocHost(tree.dtype, 0).constructor as new (b: ArrayBufferLike, at: number, n: number) => HostArray;
      return { dtype: tree.dtype, shape: [...tree.shape], data: new Host(slot, 0, tree.numel()) };
    }
    if (Array.isArray(tree)) return Promise.all(tree.map((t) => this.toShared(t, slots)));
    return Object.fromEntries(await Promise.all(Object.entries(tree as object).map(async ([k, v]) => [k, await this.toShared(v, slots)] as const)));
  }

  /** The smallest spare slot of at least `bytes`, else a new one. */
  private slot(bytes: number): SharedArrayBuffer {
    let best = -1;
    this.spare.forEach((b, i) => {
      if (b.byteLength >= bytes && (best < 0 || b.byteLength < this.spare[best]!.byteLength)) best = i;
    });
    return best >= 0 ? this.spare.splice(best, 1)[0]! : new SharedArrayBuffer(bytes);
  }

  /** Slots of an answered batch become spare; beyond MAX_SPARE_SLOTS the smallest are dropped. */
  private release(slots: SharedArrayBuffer[]): void {
    this.spare.push(...slots);
    if (this.spare.length > MAX_SPARE_SLOTS) {
      this.spare.sort((a, b) => b.byteLength - a.byteLength);
      this.spare.length = MAX_SPARE_SLOTS;
    }
  }
}
