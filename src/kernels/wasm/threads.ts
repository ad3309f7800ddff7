import { RESERVED_BYTES, heap, kernelSource } from './heap.js';

// A pool of worker threads that run generated kernels on the shared heap: Node's worker_threads, or
// Web Workers in a cross-origin isolated page (elsewhere SharedArrayBuffer is hidden: one thread, and
// `threadInfo()` says why). Each worker owns a control block in the heap's reserved bytes:
// [state, messages taken, kernel id, …]. Kernels reach the workers as compiled modules (postMessage),
// each once per worker; a worker runs a kernel only after it took its module. A parallelFor writes its
// tasks' arguments into a table in the heap, posts the kernel to the ready workers (state POSTED,
// notify) and claims tasks itself; every thread takes the next unclaimed task from a shared counter,
// so a worker the OS has descheduled (a busy machine) leaves its share to the others instead of
// stalling the call; a worker that never started is taken back. Kernels stay synchronous: the calling
// thread runs one share itself, then waits for the others.
// Waiting spins briefly, then sleeps, as XNNPACK's pthreadpool and onnxruntime's pool do. Waking a
// sleeping thread costs tens of microseconds, more on a virtual machine whose idle core is halted: as
// much as a small kernel's share, so a model of a few small kernels (a batch-1 CNN) lost what a second
// thread gained to two wake-ups per kernel. So a worker that finished a task watches its control block
// for the next (the next kernel of a call, or of the next call made back to back, comes within
// SPIN_MS) before it sleeps, and the calling thread watches a running worker before it sleeps. Where
// the machine has more runnable threads than cores, a watch takes a core from them (the caller among
// them) and mostly ends without its event, so each watch adapts (`watcher`): its length halves after
// a watch that ended empty, down to MIN_SPIN_MS, and doubles after one that caught its event (or a
// sleep that a full-length watch would have caught), up to SPIN_MS; it also ends once its thread was
// descheduled. Past that, idle threads sleep in Atomics.wait (Node) or await Atomics.waitAsync
// (browsers, whose workers must keep their event loop free for messages; a page's main thread may not
// block, so there it polls for the few microseconds left), so an idle pool burns no core.

const SLOT_INTS = 64;
/** The last slot holds the claim counter that the threads of one parallelFor share. */
const MAX_WORKERS = RESERVED_BYTES / (SLOT_INTS * 4) - 1;
const COUNTER = MAX_WORKERS * SLOT_INTS;
/** Kernels a worker keeps instantiated; the longest unused beyond it are dropped. */
const MAX_KERNELS_PER_WORKER = 256;
const IDLE = 0, POSTED = 1, DONE = 2, FAILED = 3, RUNNING = 4;
/**
 * The longest and shortest watch for the other threads before sleeping (ms): the longest outlasts the
 * host work between the kernels of one call and between calls made back to back (tens to a couple of
 * hundred microseconds), and an idle pool stops spinning as soon.
 */
const SPIN_MS = 0.3, MIN_SPIN_MS = 0.02;
/** A gap this long (ms) between two looks of a watch means its thread was descheduled: the watch ends. */
const DESCHEDULED_MS = 0.05;

/**
 * A thread's watch for another (see the header): `spin(busy)` spins while `busy()` holds, for at most
 * the watch's length and not past a gap of `descheduledMs` between two looks, and says whether busy()
 * ended; the length halves (down to `minMs`) after a watch that ended empty and doubles (up to `maxMs`)
 * after one that did not, or after `woke(ms)` reports a sleep that a full-length watch would have
 * caught. Self-contained (no outside names): the workers run its source too.
 */
export function watcher(maxMs: number, minMs: number, descheduledMs: number): { spin(busy: () => boolean): boolean; woke(afterMs: number): void } {
  let length = maxMs;
  return {
    spin(busy) {
      let t = performance.now();
      const until = t + length;
      for (let i = 1; busy(); i++) {
        if ((i & 63) === 0) {
          const now = performance.now();
          if (now > until || now - t > descheduledMs) {
            length = Math.max(minMs, length / 2);
            return false;
          }
          t = now;
        }
      }
      length = Math.min(maxMs, length * 2);
      return true;
    },
    woke(afterMs) {
      if (afterMs <= maxMs) length = Math.min(maxMs, length * 2);
    },
  };
}

/** Control block index where the calling thread counts the messages it sent: a spinning worker stops to take them. */
const SENT = 7;
/** Control block indices where a worker counts the tasks it took while spinning, and after sleeping. */
const TAKEN_AWAKE = 8, TAKEN_WOKEN = 9;
/** Control block index a worker sets while it sleeps. */
const ASLEEP = 10;

interface PoolWorker {
  readonly control: Int32Array;
  /** Kernel id → how many messages the worker must have taken to hold it (least recently used first). */
  readonly kernels: Map<number, number>;
  sent: number;
  post(message: object): void;
  terminate(): void;
}

// One program for both kinds of worker; they differ only in how messages and waits work. A task is
// [state, messages taken, kernel id, task table address, tasks, arguments per task, counter address,
// messages sent]: the worker claims it (POSTED → RUNNING; the caller may have taken it back first),
// then claims tasks from the table through the shared counter until none are left, as the calling
// thread does. After a task, and after any wake-up (one that found its task taken back too: the caller
// is running kernels, the next comes soon), it watches (watchForTask) until a task is posted, a message
// waits, or the watch ends, and only then sleeps.
const SHARED_SOURCE = `
const fns = new Map();
let I, memory;
function take(m) {
  if (m.drop !== undefined) fns.delete(m.drop);
  else fns.set(m.id, new WebAssembly.Instance(m.module, { env: { memory } }).exports[m.entry]);
  Atomics.add(I, 1, 1);
}
const args = [];
const watch = (${watcher})(${SPIN_MS}, ${MIN_SPIN_MS}, ${DESCHEDULED_MS});
let slept = true, lastEnd = 0;
function runTask() {
  if (Atomics.compareExchange(I, 0, ${POSTED}, ${RUNNING}) !== ${POSTED}) return;
  if (slept) {
    I[${TAKEN_WOKEN}]++;
    watch.woke(performance.now() - lastEnd);
  } else I[${TAKEN_AWAKE}]++;
  slept = false;
  try {
    const fn = fns.get(I[2]), table = I[3] >>> 2, count = I[4], argc = I[5], counter = I[6] >>> 2;
    const M = new Int32Array(memory.buffer);
    args.length = argc;
    for (let t; (t = Atomics.add(M, counter, 1)) < count; ) {
      for (let i = 0; i < argc; i++) args[i] = M[table + t * argc + i];
      fn(...args);
    }
    Atomics.store(I, 0, ${DONE});
  } catch {
    Atomics.store(I, 0, ${FAILED});
  }
  Atomics.notify(I, 0);
}
function watchForTask() {
  lastEnd = performance.now();
  return watch.spin(() => Atomics.load(I, 0) !== ${POSTED} && Atomics.load(I, ${SENT}) === I[1]);
}
function sleep(wait) {
  slept = true;
  Atomics.store(I, ${ASLEEP}, 1);
  const r = wait();
  if (r instanceof Promise) return r.then(() => void Atomics.store(I, ${ASLEEP}, 0));
  Atomics.store(I, ${ASLEEP}, 0);
}
function start(m) {
  memory = m.memory;
  I = new Int32Array(memory.buffer, m.slot, ${SLOT_INTS});
  Atomics.store(I, 0, ${DONE});
  Atomics.notify(I, 0);
}`;

/**
 * Node's worker (CommonJS, evaluated by worker_threads): it sleeps in Atomics.wait and takes modules
 * with receiveMessageOnPort whenever it wakes. The module name is spliced in so that the browser
 * bundle's check for Node imports (scripts/bundle-browser.mjs) does not mistake this Node-only text for code the page would run.
 */
const WORKER_THREADS = 'node:worker_threads';
const NODE_SOURCE = `${SHARED_SOURCE}
const { workerData, parentPort, receiveMessageOnPort } = require(${JSON.stringify(WORKER_THREADS)});
start(workerData);
for (;;) {
  for (let m; (m = receiveMessageOnPort(parentPort)); ) take(m.message);
  if (Atomics.load(I, 0) === ${POSTED}) runTask();
  if (watchForTask()) continue;
  const state = Atomics.load(I, 0);
  if (state !== ${POSTED}) sleep(() => Atomics.wait(I, 0, state));
}`;

/** A page's Web Worker: messages arrive as events, so it waits with Atomics.waitAsync between tasks. */
const BROWSER_SOURCE = `${SHARED_SOURCE}
onmessage = (e) => {
  if (e.data.memory) { start(e.data); serve(); }
  else take(e.data);
};
async function serve() {
  for (;;) {
    if (Atomics.load(I, 0) === ${POSTED}) runTask();
    watchForTask();
    // Messages are taken while awaiting (onmessage), so a watch ended by one sleeps too.
    const state = Atomics.load(I, 0);
    if (state !== ${POSTED}) await sleep(() => Atomics.waitAsync(I, 0, state).value);
  }
}`;

/** Threads wanted (the main thread included); undefined until set or until the pool learns the core count. */
let wanted: number | undefined;
const workers: PoolWorker[] = [];
let starting: Promise<void> | undefined;
let tasksOnWorkers = 0;
/** Why the pool runs one thread (no shared memory, no workers), once known. */
let singleReason: string | undefined;
let kind: 'worker_threads' | 'web workers' | undefined;

/** The thread pool's state and counts (`poolStats()`). */
export interface PoolStats {
  /** Workers started, and those ready (their thread runs). */
  workers: number;
  ready: number;
  /** Threads wanted (the calling one included), once known. */
  wanted: number | undefined;
  /** Parallel calls that workers took part in. */
  tasksOnWorkers: number;
  /** Of the workers' tasks, those taken while the worker still spun after its last one (no wake-up paid), and those taken after it slept. */
  takenAwake: number;
  takenWoken: number;
  /** Workers asleep now (an idle pool spins only briefly, then all sleep). */
  asleep: number;
}

/** The pool: workers started (and ready), threads wanted, how many parallel calls workers took part in, and whether they were awake for them. */
export function poolStats(): PoolStats {
  let takenAwake = 0, takenWoken = 0, asleep = 0;
  for (const w of workers) {
    takenAwake += Atomics.load(w.control, TAKEN_AWAKE);
    takenWoken += Atomics.load(w.control, TAKEN_WOKEN);
    asleep += Atomics.load(w.control, ASLEEP);
  }
  return { workers: workers.length, ready: readyWorkers(), wanted, tasksOnWorkers, takenAwake, takenWoken, asleep };
}

/** How the CPU kernels use threads here: how many, by what means, and why only one when that is so. */
export interface ThreadInfo {
  /** Threads kernels use now (the calling one included). */
  threads: number;
  /** Threads wanted (`setCpuThreads`, `init({ threads })`, or the core count once the pool started). */
  wanted: number | undefined;
  /** What the workers are: Node's worker_threads or a page's Web Workers (undefined: none, yet or at all). */
  workers: 'worker_threads' | 'web workers' | undefined;
  /** Why kernels run on one thread, when they must (e.g. a page that is not cross-origin isolated). */
  singleThreadReason?: string;
}

export function threadInfo(): ThreadInfo {
  const reason = singleReason ?? whyNoWorkers();
  return { threads: 1 + readyWorkers(), wanted: reason ? 1 : wanted, workers: kind, ...(reason ? { singleThreadReason: reason } : {}) };
}

type WorkerCtor = new (src: string, o: object) => { unref(): void; terminate(): Promise<number>; postMessage(m: object): void };
type Spawner = { cores: number; spawn(slot: number): Omit<PoolWorker, 'control' | 'kernels' | 'sent'> };

const isNode = (): boolean => Boolean((globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node);

/** Why no worker can share the heap here (checked before starting any), or undefined when they can. */
function whyNoWorkers(): string | undefined {
  if (!heap().shared) {
    const g = globalThis as { crossOriginIsolated?: boolean };
    return g.crossOriginIsolated === false
      ? 'this page is not cross-origin isolated, so SharedArrayBuffer is off: serve it with the headers Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp to run on Web Workers'
      : 'this engine has no shared WebAssembly memory (SharedArrayBuffer)';
  }
  if (isNode()) return undefined;
  if (typeof (globalThis as { Worker?: unknown }).Worker !== 'function') return 'this environment has no Web Workers';
  if (typeof (Atomics as { waitAsync?: unknown }).waitAsync !== 'function') return 'this browser lacks Atomics.waitAsync, which idle Web Workers need';
  return undefined;
}

/** How to start a worker here: Node's worker_threads, or a Web Worker from a blob URL. Imported by a computed name so browser bundlers leave Node's modules alone. */
async function spawner(): Promise<Spawner> {
  const memory = heap().memory;
  if (isNode()) {
    const [wt, os] = (await Promise.all(['node:worker_threads', 'node:os'].map((name) => import(name)))) as [
      { Worker: WorkerCtor },
      { availableParallelism?: () => number; cpus(): unknown[] },
    ];
    kind = 'worker_threads';
    return {
      cores: os.availableParallelism?.() ?? os.cpus().length,
      spawn(slot) {
        // The worker's source is CommonJS: without --input-type (inherited from a parent run as
        // `node --input-type=module`, which would evaluate it as a module, where require does not exist).
        const execArgv = (globalThis as unknown as { process: { execArgv: string[] } }).process.execArgv.filter((a) => !a.startsWith('--input-type'));
        const w = new wt.Worker(NODE_SOURCE, { eval: true, execArgv, workerData: { memory, slot } });
        // Idle workers must not keep the process alive.
        w.unref();
        return { post: (m) => w.postMessage(m), terminate: () => void w.terminate() };
      },
    };
  }
  const g = globalThis as unknown as { navigator?: { hardwareConcurrency?: number }; Worker: new (url: string) => { postMessage(m: object): void; terminate(): void } };
  const url = URL.createObjectURL(new Blob([BROWSER_SOURCE], { type: 'text/javascript' }));
  kind = 'web workers';
  return {
    cores: g.navigator?.hardwareConcurrency ?? 1,
    spawn(slot) {
      const w = new g.Worker(url);
      w.postMessage({ memory, slot });
      return { post: (m) => w.postMessage(m), terminate: () => w.terminate() };
    },
  };
}

/** Starts workers up to `wanted` − 1 in the background. */
function grow(): void {
  if (starting || singleReason) return;
  const reason = whyNoWorkers();
  if (reason) {
    singleReason = reason;
    if (!isNode()) console.info(`sinter: the CPU backend runs on one thread: ${reason}`);
    return;
  }
  starting = spawner()
    .then((s) => {
      wanted ??= s.cores;
      const memory = heap().memory;
      while (workers.length < Math.min(wanted, MAX_WORKERS + 1) - 1) {
        const slot = workers.length * SLOT_INTS * 4;
        const control = new Int32Array(memory.buffer, slot, SLOT_INTS);
        control.fill(0);
        const w: PoolWorker = { control, kernels: new Map(), sent: 0, ...s.spawn(slot) };
        for (const [id, source] of recentKernels) holds(w, id, source);
        workers.push(w);
      }
    })
    .catch((e: unknown) => {
      singleReason = `worker threads could not start (${e instanceof Error ? e.message : String(e)})`;
    })
    .finally(() => void (starting = undefined));
}

/** How long `startPool` waits for workers to come up. */
const START_WAIT_MS = 2000;

/**
 * Starts the workers now (rather than on the first kernel worth sharing) and resolves once they are
 * ready, or after START_WAIT_MS: `init` calls it so that a program's first timed calls do not share
 * the cores with the workers' start-up.
 */
export async function startPool(): Promise<void> {
  if ((wanted ?? 2) > workers.length + 1) grow();
  await starting;
  const until = performance.now() + START_WAIT_MS;
  while (readyWorkers() < workers.length && performance.now() < until) await new Promise((r) => setTimeout(r, 5));
}

/**
 * Sets how many threads CPU kernels use (the calling thread included); n = 1 stops the workers. Without
 * a call the pool takes one thread per core when a kernel first has enough work to share.
 */
export function setThreads(n: number): void {
  wanted = Math.max(1, Math.floor(n));
  while (workers.length > wanted - 1) workers.pop()!.terminate();
}

/**
 * Threads a kernel may use now: the calling thread plus the workers that have started (the pool
 * starts on first use). The arguments of older callers (a module and export) are no longer needed:
 * `parallelFor` finds each kernel's module itself.
 */
export function availableThreads(..._legacy: unknown[]): number {
  if ((wanted ?? 2) > workers.length + 1) grow();
  return 1 + readyWorkers();
}

function readyWorkers(): number {
  let ready = 0;
  for (const w of workers) if (Atomics.load(w.control, 0) !== IDLE) ready++;
  return ready;
}

const kernelIds = new WeakMap<object, number>();
let nextKernelId = 0;
/** Kernels run lately (id → module), newest last: a worker that starts takes them all, so their next calls can use it. */
const recentKernels = new Map<number, { module: WebAssembly.Module; entry: string }>();

function kernelId(run: object, source: { module: WebAssembly.Module; entry: string }): number {
  let id = kernelIds.get(run);
  if (id === undefined) kernelIds.set(run, (id = nextKernelId++));
  recentKernels.delete(id);
  recentKernels.set(id, source);
  if (recentKernels.size > MAX_KERNELS_PER_WORKER) recentKernels.delete(recentKernels.keys().next().value as number);
  return id;
}

/**
 * Whether worker `w` holds the kernel's module now; if it never got it, sends it (the worker takes it
 * at its next wake-up: this call runs without it, rather than wait). Keeps at most MAX_KERNELS_PER_WORKER per worker.
 */
function holds(w: PoolWorker, id: number, source: { module: WebAssembly.Module; entry: string }): boolean {
  const seq = w.kernels.get(id);
  if (seq !== undefined) {
    w.kernels.delete(id);
    w.kernels.set(id, seq);
    if (Atomics.load(w.control, 1) >= seq) return true;
    Atomics.notify(w.control, 0);
    return false;
  }
  if (w.kernels.size >= MAX_KERNELS_PER_WORKER) {
    const oldest = w.kernels.keys().next().value as number;
    w.kernels.delete(oldest);
    w.post({ drop: oldest });
    w.sent++;
  }
  w.post({ id, module: source.module, entry: source.entry });
  w.kernels.set(id, ++w.sent);
  Atomics.store(w.control, SENT, w.sent);
  Atomics.notify(w.control, 0);
  return false;
}

/** The calling thread's watch for running workers. */
const callerWatch = watcher(SPIN_MS, MIN_SPIN_MS, DESCHEDULED_MS);

/** Whether this thread may block in Atomics.wait (not a page's main thread). */
let canBlock: boolean | undefined;
function blockingAllowed(): boolean {
  if (canBlock === undefined) {
    try {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0);
      canBlock = true;
    } catch {
      canBlock = false;
    }
  }
  return canBlock;
}

/**
 * Runs `run(...task)` for every task (all with as many arguments) and returns when all are done: this
 * thread and the ready workers that hold `run`'s module (a function from heap.ts's `instantiate`) each
 * claim the next task until none is left. Tasks must not depend on which thread runs them.
 */
export function parallelFor(tasks: readonly (readonly number[])[], run: (...args: number[]) => void): void {
  const source = kernelSource(run);
  const id = source ? kernelId(run, source) : -1;
  const argc = tasks[0]?.length ?? 0;
  const helpers: PoolWorker[] = [];
  if (source && tasks.length > 1 && tasks.every((t) => t.length === argc)) {
    for (const w of workers) if (helpers.length < tasks.length - 1 && Atomics.load(w.control, 0) === DONE && holds(w, id, source)) helpers.push(w);
  }
  if (helpers.length === 0) {
    for (const t of tasks) run(...t);
    return;
  }
  // The table is scratch for this call only (released at its end, so loops of calls do not pile it up).
  const h = heap(), mark = h.mark(), table = h.alloc(tasks.length * argc * 4);
  const M = h.i32;
  tasks.forEach((t, k) => M.set(t, (table >>> 2) + k * argc));
  Atomics.store(M, COUNTER, 0);
  for (const w of helpers) {
    w.control.set([id, table, tasks.length, argc, COUNTER * 4], 2);
    Atomics.store(w.control, 0, POSTED);
    Atomics.notify(w.control, 0);
  }
  for (let t; (t = Atomics.add(M, COUNTER, 1)) < tasks.length; ) run(...tasks[t]!);
  let failed = false;
  const block = blockingAllowed();
  for (const w of helpers) {
    // A worker that has not woken yet is taken back: the tasks are all done.
    if (Atomics.compareExchange(w.control, 0, POSTED, DONE) === POSTED) continue;
    tasksOnWorkers++;
    callerWatch.spin(() => Atomics.load(w.control, 0) === RUNNING);
    for (let s = Atomics.load(w.control, 0); s === RUNNING; s = Atomics.load(w.control, 0)) if (block) Atomics.wait(w.control, 0, RUNNING);
    if (Atomics.load(w.control, 0) === FAILED) {
      failed = true;
      Atomics.store(w.control, 0, DONE);
    }
  }
  h.release(mark);
  if (failed) throw new Error('a WebAssembly kernel failed on a worker thread');
}
