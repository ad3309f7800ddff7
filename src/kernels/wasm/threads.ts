import { RESERVED_BYTES, heap } from './heap.js';

// A pool of worker threads (Node's worker_threads) that run the GEMM module on the shared heap.
// Each worker owns a control block in the heap's reserved bytes: [state, arg0, arg1, …]. The main
// thread writes a task's arguments, sets state 1 and notifies; the worker runs the task, sets state 2
// and notifies; both sleep in Atomics.wait in between (no busy-waiting). Kernels stay synchronous:
// the main thread runs one share of the work itself and then waits for the others.
// In browsers (no worker_threads; the main thread may not Atomics.wait) kernels run on one thread.

const SLOT_INTS = 32;
const MAX_WORKERS = RESERVED_BYTES / (SLOT_INTS * 4);
const IDLE = 0, POSTED = 1, DONE = 2, FAILED = 3;

interface PoolWorker {
  readonly control: Int32Array;
  terminate(): void;
}

/**
 * The worker's program (CommonJS, evaluated by worker_threads): instantiate the module, then serve tasks
 * forever. The module name is spliced in so that the browser bundle's check for Node imports
 * (scripts/bundle-browser.mjs) does not mistake this Node-only text for code the page would run.
 */
const WORKER_THREADS = 'node:worker_threads';
const WORKER_SOURCE = `
const { workerData } = require(${JSON.stringify(WORKER_THREADS)});
const { memory, bytes, slot, entry } = workerData;
const run = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } }).exports[entry];
const I = new Int32Array(memory.buffer, slot, ${SLOT_INTS});
const args = [];
Atomics.store(I, 0, ${DONE});
Atomics.notify(I, 0);
for (;;) {
  const state = Atomics.load(I, 0);
  if (state !== ${POSTED}) { Atomics.wait(I, 0, state); continue; }
  try {
    for (let i = 0; i < run.length; i++) args[i] = I[1 + i];
    run(...args);
    Atomics.store(I, 0, ${DONE});
  } catch {
    Atomics.store(I, 0, ${FAILED});
  }
  Atomics.notify(I, 0);
}`;

/** Threads wanted (the main thread included); undefined until set or until the pool learns the core count. */
let wanted: number | undefined;
const workers: PoolWorker[] = [];
let starting: Promise<void> | undefined;
let tasksOnWorkers = 0;

/** The pool: workers started (and ready), threads wanted, and how many tasks workers have run. */
export function poolStats(): { workers: number; ready: number; wanted: number | undefined; tasksOnWorkers: number } {
  return { workers: workers.length, ready: workers.filter((w) => Atomics.load(w.control, 0) !== IDLE).length, wanted, tasksOnWorkers };
}

/** Node's worker_threads and os modules, or null outside Node. Imported by a computed name so browser bundlers leave it alone. */
async function nodeModules(): Promise<{ Worker: new (src: string, o: object) => { unref(): void; terminate(): Promise<number> }; cores: number } | null> {
  const node = (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node;
  if (!node) return null;
  const [wt, os] = (await Promise.all(['node:worker_threads', 'node:os'].map((name) => import(name)))) as [
    { Worker: new (src: string, o: object) => { unref(): void; terminate(): Promise<number> } },
    { availableParallelism?: () => number; cpus(): unknown[] },
  ];
  return { Worker: wt.Worker, cores: os.availableParallelism?.() ?? os.cpus().length };
}

/** Starts workers up to `wanted` − 1 in the background; `entry` of `bytes` is what they run. */
function grow(bytes: Uint8Array<ArrayBuffer>, entry: string): void {
  if (starting || !heap().shared) return;
  starting = nodeModules()
    .then((node) => {
      if (!node) return void (wanted = 1);
      wanted ??= node.cores;
      const memory = heap().memory;
      while (workers.length < Math.min(wanted, MAX_WORKERS + 1) - 1) {
        const slot = workers.length * SLOT_INTS * 4;
        const control = new Int32Array(memory.buffer, slot, SLOT_INTS);
        Atomics.store(control, 0, IDLE);
        const w = new node.Worker(WORKER_SOURCE, { eval: true, workerData: { memory, bytes, slot, entry } });
        // Idle workers must not keep the process alive.
        w.unref();
        workers.push({ control, terminate: () => void w.terminate() });
      }
    })
    .catch(() => void (wanted = 1))
    .finally(() => void (starting = undefined));
}

/**
 * Sets how many threads CPU kernels use (the calling thread included); n = 1 stops the workers. Without
 * a call the pool takes one thread per core when a kernel first has enough work to share.
 */
export function setThreads(n: number): void {
  wanted = Math.max(1, Math.floor(n));
  while (workers.length > wanted - 1) workers.pop()!.terminate();
}

/** Threads a kernel may use now: the calling thread plus the workers that have started (the pool starts on first use). */
export function availableThreads(bytes: () => Uint8Array<ArrayBuffer>, entry: string): number {
  if ((wanted ?? 2) > workers.length + 1) grow(bytes(), entry);
  return 1 + workers.filter((w) => Atomics.load(w.control, 0) !== IDLE).length;
}

/**
 * Runs `run(...task)` for every task: the first on this thread, the others on ready workers (their
 * module's `entry`, the same function), and returns when all are done. Tasks beyond the ready workers run here.
 */
export function parallelFor(tasks: readonly (readonly number[])[], run: (...args: number[]) => void): void {
  const ready = workers.filter((w) => Atomics.load(w.control, 0) === DONE);
  const posted: PoolWorker[] = [];
  for (let t = 1; t < tasks.length && posted.length < ready.length; t++) {
    const w = ready[posted.length]!;
    w.control.set(tasks[t]!, 1);
    Atomics.store(w.control, 0, POSTED);
    Atomics.notify(w.control, 0);
    posted.push(w);
  }
  tasksOnWorkers += posted.length;
  run(...tasks[0]!);
  for (let t = 1 + posted.length; t < tasks.length; t++) run(...tasks[t]!);
  let failed = false;
  for (const w of posted) {
    while (Atomics.load(w.control, 0) === POSTED) Atomics.wait(w.control, 0, POSTED);
    failed ||= Atomics.load(w.control, 0) === FAILED;
    if (failed) Atomics.store(w.control, 0, DONE);
  }
  if (failed) throw new Error('a WebAssembly kernel failed on a worker thread');
}
