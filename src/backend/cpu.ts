import { type DType, type HostArray, allocHost, itemSize } from '../tensor/dtype.js';
import { noteAlloc, noteFree, reportCaches } from '../tensor/memory.js';
import type { Tensor } from '../tensor/tensor.js';
import type { CpuView, OpDef } from '../ops/op.js';
import type { Backend, Storage } from './backend.js';
import { kernelOverrides } from '../kernels/cpu/overrides.js';
import { hasSimd } from '../kernels/wasm/emitter.js';
import { wasmConv2d, wasmConvTranspose2d, wasmGemm } from '../kernels/wasm/linalg.js';
import { wasmMapWithIntegers } from '../kernels/wasm/int8-map.js';
import { wasmReduce } from '../kernels/wasm/reduce.js';
import { wasmPool2d } from '../kernels/wasm/pool.js';
import { wasmGatherSeparable } from '../kernels/wasm/gather.js';
import { poolStats, setThreads, startPool, threadInfo } from '../kernels/wasm/threads.js';
import { HeapFullError, heap, setCollect } from '../kernels/wasm/heap.js';
import { SinterError } from '../errors.js';
import { wasmLayerNorm, wasmSoftmax } from '../kernels/wasm/rows.js';
import { wasmNarrowHalf, wasmWidenHalf } from '../kernels/wasm/half.js';
import { blockNormTakingHalf, forgetRoundedHalf, narrowHalf, softmaxTakingHalf, takeRoundedHalf, widenHalf } from '../kernels/cpu/half.js';
import type { Expr } from '../ops/expr.js';

/** Whether this engine runs WebAssembly at all (storages then live in its memory; else in JS arrays). */
const hasWasm = typeof WebAssembly === 'object';

// Tensors dropped without dispose give their heap blocks back through the collector (src/tensor/memory.ts),
// but the collector cannot see the heap, so a loop dropping large tensors would grow it to 4 GiB without one
// collection. In Node, V8's gc (exposed at run time into a fresh context: the program's globals stay as they
// were) runs after every 64 MiB of fresh blocks (heap.ts's setCollect).
// Browsers offer no such call: there, dispose or tidy.
if (hasWasm && (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node) {
  // Imported by computed names so browser bundlers leave Node's modules alone.
  void Promise.all(['node:v8', 'node:vm'].map((name) => import(name))).then(([v8, vm]) => {
    (v8 as typeof import('node:v8')).setFlagsFromString('--expose-gc');
    setCollect((vm as typeof import('node:vm')).runInNewContext('gc') as () => void);
  });
}

/**
 * Which kernels the CPU backend runs: 'wasm', WebAssembly SIMD kernels generated at run time
 * (src/kernels/wasm/) where one exists for the operands, else the JavaScript kernel; or 'js', the
 * JavaScript kernels only (the reference path). 'wasm' needs SIMD128, checked by validating a module.
 */
export type CpuKernels = 'wasm' | 'js';

let kernels: CpuKernels = 'js';

/** Chooses the CPU kernels; returns the choice in effect ('js' when 'wasm' was asked for but this engine lacks SIMD128). */
export function setCpuKernels(kind: CpuKernels): CpuKernels {
  kernels = kind === 'wasm' && hasSimd() ? 'wasm' : 'js';
  const wasm = kernels === 'wasm';
  kernelOverrides.gemm = wasm ? wasmGemm : undefined;
  kernelOverrides.conv2d = wasm ? wasmConv2d : undefined;
  kernelOverrides.convTranspose2d = wasm ? wasmConvTranspose2d : undefined;
  kernelOverrides.map = wasm ? wasmMapWithIntegers : undefined;
  kernelOverrides.softmax = wasm ? softmaxTakingHalf(wasmSoftmax) : undefined;
  kernelOverrides.blockNorm = wasm ? blockNormTakingHalf(wasmLayerNorm) : undefined;
  kernelOverrides.reduce = wasm ? wasmReduce : undefined;
  kernelOverrides.pool2d = wasm ? wasmPool2d : undefined;
  kernelOverrides.gatherSeparable = wasm ? wasmGatherSeparable : undefined;
  kernelOverrides.widenHalf = wasm ? wasmWidenHalf : undefined;
  kernelOverrides.narrowHalf = wasm ? wasmNarrowHalf : undefined;
  return kernels;
}

export function cpuKernels(): CpuKernels {
  return kernels;
}

/** Starts the CPU backend's worker threads and waits (briefly) until they are ready: `init` calls it when the CPU is the device. */
export async function startCpuThreads(): Promise<void> {
  if (kernels === 'wasm') await startPool();
}

/** How the CPU backend runs here: `cpuInfo()`. */
export interface CpuInfo {
  /** 'wasm': WebAssembly SIMD kernels generated at run time; 'js': the JavaScript reference kernels. */
  kernels: CpuKernels;
  /** Whether this engine validates WebAssembly SIMD128 (the wasm kernels need it). */
  simd: boolean;
  /** Where storages live: a shared or private WebAssembly memory, or JS arrays where there is no WebAssembly. */
  memory: 'shared wasm memory' | 'private wasm memory' | 'js arrays';
  /** Threads the kernels use now, the calling one included (workers start on the first kernel worth sharing). */
  threads: number;
  /** Threads wanted: `init({ threads })`, `setCpuThreads`, SINTER_CPU_THREADS, or the core count once the pool started. */
  wantedThreads: number | undefined;
  /** The workers: Node's worker_threads or a page's Web Workers. */
  workers: 'worker_threads' | 'web workers' | undefined;
  /** Why the kernels run on one thread, where they must (e.g. a page that is not cross-origin isolated). */
  singleThreadReason?: string;
  /** Parallel kernel calls that workers took part in so far. */
  workerTasks: number;
  /** The above in one line, for logs. */
  line: string;
}

/** How the CPU backend runs: its kernels, where storages live, and its threads (and why only one, where so). */
export function cpuInfo(): CpuInfo {
  const t = threadInfo();
  const memory = !hasWasm ? 'js arrays' : heap().shared ? 'shared wasm memory' : 'private wasm memory';
  const threads = `${t.threads} thread${t.threads === 1 ? '' : 's'}${t.workers ? ` (${t.workers})` : ''}`;
  const line = `sinter: CPU on ${kernels === 'wasm' ? 'WebAssembly SIMD' : 'JavaScript'} kernels, ${memory}, ${threads}${t.singleThreadReason ? `: ${t.singleThreadReason}` : ''}`;
  return { kernels, simd: hasSimd(), memory, threads: t.threads, wantedThreads: t.wanted, workers: t.workers, ...(t.singleThreadReason ? { singleThreadReason: t.singleThreadReason } : {}), workerTasks: poolStats().tasksOnWorkers, line };
}

/**
 * Sets how many threads the wasm kernels use, the calling one included (Node: worker_threads sharing
 * the kernels' WebAssembly memory; elsewhere one). Default: one per core, started when a kernel first
 * has enough work to share; SINTER_CPU_THREADS sets it from the environment.
 */
export function setCpuThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new SinterError('setCpuThreads', `threads must be a positive integer, got ${JSON.stringify(n)}`);
  setThreads(n);
}

// The defaults: WebAssembly unless SINTER_CPU_KERNELS=js asks for the reference path; SINTER_CPU_THREADS threads if set.
const env = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env ?? {};
setCpuKernels(env.SINTER_CPU_KERNELS === 'js' ? 'js' : 'wasm');
if (env.SINTER_CPU_THREADS) setCpuThreads(Number(env.SINTER_CPU_THREADS));

/** What a CPU storage holds: its dtype's host array, except float16's binary16 bits (2 bytes a value). */
export type StoredArray = HostArray | Uint16Array;

/** The typed array a storage of `dtype` holds its values in. */
function storedType(dtype: DType): new (...args: [number] | [ArrayBufferLike, number, number]) => StoredArray {
  return dtype === 'float16' ? Uint16Array : (allocHost(dtype, 0).constructor as new (...args: [number] | [ArrayBufferLike, number, number]) => HostArray);
}

/**
 * A CPU tensor's memory: a block of the WebAssembly heap (src/kernels/wasm/heap.ts), where the wasm
 * kernels read and write it without copying, or a JS typed array where there is no WebAssembly or
 * the heap cannot grow to hold it (wasm32 stops at 4 GiB). `data` is a typed view of the values
 * (float16: their binary16 bits, a Uint16Array; kernels see them widened, see `runKernel`), re-made
 * after the memory grew (a private memory's old views are detached): read it again after anything
 * that may allocate rather than keeping it.
 */
export class CpuStorage implements Storage {
  readonly device = 'cpu' as const;
  refs = 0;
  private view: StoredArray | undefined;
  private generation = -1;

  /** `address`: the block's byte address in the heap, or −1 with `host` holding the values. */
  constructor(
    readonly dtype: DType,
    readonly length: number,
    readonly address: number,
    private readonly host?: StoredArray,
  ) {}

  get data(): StoredArray {
    if (this.host) return this.host;
    const h = heap();
    if (this.generation !== h.generation) {
      this.view = new (storedType(this.dtype))(h.memory.buffer, this.address, this.length);
      this.generation = h.generation;
    }
    return this.view!;
  }
  /** Bytes this storage holds: itemSize's (float16 takes 2). */
  get byteLength(): number {
    return this.length * itemSize(this.dtype);
  }
  /** Whether the values live in the WebAssembly heap (else in a JS array). */
  get inHeap(): boolean {
    return this.address >= 0;
  }
}

/** Storage for `length` elements, uninitialised: a heap block, or a JS array when the heap cannot hold it. */
function allocStorage(dtype: DType, length: number): CpuStorage {
  const bytes = length * itemSize(dtype);
  if (hasWasm) {
    try {
      return new CpuStorage(dtype, length, heap().allocate(bytes));
    } catch (e) {
      // Past wasm32's 4 GiB (or the engine's own limit): this storage lives in a JS array, copied into scratch by the wasm kernels.
      if (!(e instanceof RangeError)) throw e;
    }
  }
  return new CpuStorage(dtype, length, -1, new (storedType(dtype))(length));
}

/** Values below which a float16 upload narrows in JavaScript rather than staging them in the heap for the wasm pass. */
const STAGED_UPLOAD = 4096;

/**
 * Stores float32 numbers from the host as a float16 storage's binary16 bits: long arrays are copied into a heap block
 * first (a memcpy), so the wasm narrowing converts them rather than JavaScript, one value at a time (a model's weights
 * at load).
 */
function uploadHalf(values: Float32Array, s: CpuStorage): void {
  if (!s.inHeap || values.length < STAGED_UPLOAD) return narrowHalf(values, s.data as Uint16Array);
  let at: number;
  try {
    at = heap().allocate(values.length * 4);
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    return narrowHalf(values, s.data as Uint16Array);
  }
  try {
    // Views made after the allocation (which may grow, and on a private memory detach, the heap).
    const staged = new Float32Array(heap().memory.buffer, at, values.length);
    staged.set(values);
    narrowHalf(staged, s.data as Uint16Array);
  } finally {
    heap().deallocate(at);
  }
}

/** Bytes of freed CPU storages kept for reuse (`setCacheLimits({ idleBytes })`): the longest idle go back to the heap's free space first. */
export function setCpuIdleBytes(bytes: number): void {
  if (!hasWasm) return;
  const h = heap();
  h.maxIdleBytes = bytes;
  h.trim(bytes);
}

/** Frees the CPU storages kept for reuse and the kernels' scratch (`emptyCache`); live storages stay. */
export function emptyCpuCache(): void {
  if (!hasWasm) return;
  forgetLastOutputs();
  heap().emptyCache();
}

if (hasWasm) {
  reportCaches('cpu', () => {
    const pool = heap().stats();
    return { reservedBytes: pool.reservedBytes, pool };
  }, 'heap');
}

export const cpuBackend: Backend = {
  name: 'cpu',
  fromHost(dtype, data) {
    const s = allocStorage(dtype, data.length);
    // float16 arrives as float32 numbers (rounded or not: the narrowing rounds), and is stored as binary16 bits.
    if (dtype === 'float16') uploadHalf(data as Float32Array, s);
    else (s.data as HostArray).set(data);
    noteAlloc(s);
    return s;
  },
  alloc(dtype, length) {
    const s = allocStorage(dtype, length);
    noteAlloc(s);
    return s;
  },
  async read(storage) {
    // A copy (not shared, so it may go to a GPU queue), taken now: the block is reused once the storage is released.
    const s = storage as CpuStorage;
    if (s.dtype !== 'float16') return (s.data as HostArray).slice();
    const values = new Float32Array(s.length);
    widenHalf(s.data as Uint16Array, values);
    return values;
  },
  hostView(storage) {
    // float16 as its binary16 bits: gatherView widens the view's values as it copies them out.
    return (storage as CpuStorage).data;
  },
  async synchronize() {
    // CPU kernels run synchronously: nothing is ever queued.
  },
  release(storage) {
    noteFree(storage);
    const s = storage as CpuStorage;
    if (s.inHeap) heap().deallocate(s.address);
  },
  run<A>(op: OpDef<A>, inputs: readonly Tensor[], attrs: A, outputs: readonly Tensor[]) {
    if (!hasWasm || heap().shared) return runKernel(op, inputs, attrs, outputs);
    // A private memory detaches its old buffer when it grows, and kernels hold views of their operands:
    // the scratch arena is sized before the views are made (to hold what the last kernel used), and a
    // kernel during which the memory still grew runs again on fresh views (its outputs are written whole
    // by it); each try leaves the arena holding more of what the kernel needs.
    const h = heap();
    for (let attempt = 0; ; attempt++) {
      h.reset();
      const generation = h.generation;
      try {
        runKernel(op, inputs, attrs, outputs);
        if (h.generation === generation) return;
      } catch (e) {
        if (h.generation === generation) throw e;
      }
      const inPlace = outputs.some((o) => inputs.some((i) => i.storage === o.storage));
      if (inPlace || attempt === MAX_TRIES - 1) {
        throw new SinterError(op.name, `the WebAssembly memory grew while the kernel ran${inPlace ? ' in place (an output shares storage with an input)' : ` ${MAX_TRIES} times`}, so its views went stale; the result is not reliable`);
      }
    }
  },
};

/** Tries of a kernel on a private memory that grew while it ran (each grows the scratch arena to what it used). */
const MAX_TRIES = 8;

/** A CPU tensor as kernels see it (not float16, whose kernel views are widened copies: see `runKernel`). */
function cpuView(t: Tensor): CpuView {
  const s = t.storage as CpuStorage;
  return { data: s.data as HostArray, shape: t.shape, strides: t.strides, offset: t.offset, dtype: t.dtype };
}

/** The elements [lo, hi] of its storage that a view reaches (hi < lo when it has none). */
function reach(t: Tensor): { lo: number; hi: number } {
  let lo = t.offset, hi = t.offset;
  for (let d = 0; d < t.shape.length; d++) {
    if (t.shape[d] === 0) return { lo: 0, hi: -1 };
    const r = (t.shape[d]! - 1) * t.strides[d]!;
    if (r < 0) lo += r;
    else hi += r;
  }
  return { lo, hi };
}

/** float32 values of the span [lo, lo + length) of a float16 storage: a heap block at `address`, or (heap full) a JS array. */
interface HalfSpan {
  readonly storage: CpuStorage;
  readonly lo: number;
  readonly length: number;
  readonly address: number;
  readonly host?: Float32Array;
}

/**
 * The float32 values of the float16 outputs of the kernel that ran last, kept until the next kernel ends: one that
 * reads the same span of the same storage (most kernels of a model read what the one before wrote) takes them
 * instead of widening the bits they were narrowed into. Nothing writes a storage between two kernels (outputs are
 * written only by kernels; creation makes new storages), so they equal its bits; one kernel later they are freed.
 */
let lastOutputs: HalfSpan[] = [];

function freeSpans(spans: readonly HalfSpan[]): void {
  for (const s of spans) if (s.address >= 0) heap().deallocate(s.address);
}

/** Frees the kept outputs (before any kernel runs, and on `emptyCache`). */
function forgetLastOutputs(): void {
  if (lastOutputs.length === 0) return;
  const kept = lastOutputs;
  lastOutputs = [];
  freeSpans(kept);
}

/**
 * float32 scratch for the float16 tensors of one kernel: each the span of its storage that the view reaches, a heap
 * block (or, where the heap is full, a JS array) freed when the kernel is done (the heap keeps freed blocks idle for
 * the next kernel, within its idle bound), except its outputs', kept one kernel longer (`lastOutputs`).
 */
class HalfScratch {
  private readonly spans: HalfSpan[] = [];
  /** Spans whose values are there already (taken from `lastOutputs`): not widened. */
  private readonly ready = new Set<number>();

  /** Scratch for `t`'s span (shared by the kernel's operands that view the same span); its index. */
  add(t: Tensor, input: boolean): number {
    const storage = t.storage as CpuStorage, { lo, hi } = reach(t), length = Math.max(0, hi - lo + 1);
    const same = (s: HalfSpan): boolean => s.storage === storage && s.lo === lo && s.length === length;
    const i = this.spans.findIndex(same);
    if (i >= 0) return i;
    const kept = input ? lastOutputs.findIndex(same) : -1;
    if (kept >= 0) {
      this.ready.add(this.spans.length);
      return this.spans.push(lastOutputs.splice(kept, 1)[0]!) - 1;
    }
    let address = -1, host: Float32Array | undefined;
    try {
      address = hasWasm ? heap().allocate(length * 4) : -1;
    } catch (e) {
      // Past wasm32's 4 GiB: this operand's float32 copy lives in a JS array (the kernels then take the JavaScript path).
      if (!(e instanceof RangeError)) throw e;
    }
    if (address < 0) host = new Float32Array(length);
    return this.spans.push({ storage, lo, length, address, host }) - 1;
  }

  /** Fills span `i` from its storage's bits, unless its values are there already. */
  widen(i: number): void {
    if (!this.ready.has(i)) widenHalf(this.bits(i), this.values(i));
  }
  /** The float32 values of span `i` (a fresh view: make it after the last allocation). */
  values(i: number): Float32Array {
    const s = this.spans[i]!;
    return s.host ?? new Float32Array(heap().memory.buffer, s.address, s.length);
  }
  /** Span `i`'s binary16 bits in its storage. */
  bits(i: number): Uint16Array {
    const s = this.spans[i]!;
    return (s.storage.data as Uint16Array).subarray(s.lo, s.lo + s.length);
  }
  /** `t` as the kernel sees it: dtype float16, float32 data from span `i`. */
  view(t: Tensor, i: number): CpuView {
    return { data: this.values(i), shape: t.shape, strides: t.strides, offset: t.offset - this.spans[i]!.lo, dtype: t.dtype };
  }

  /** Frees the scratch, keeping the spans `keep` (in the heap) as `lastOutputs` in place of any left there. */
  free(keep: ReadonlySet<number> = new Set()): void {
    forgetLastOutputs();
    lastOutputs = this.spans.filter((s, i) => keep.has(i) && s.address >= 0);
    freeSpans(this.spans.filter((s) => !lastOutputs.includes(s)));
    this.spans.length = 0;
  }
}

/**
 * Runs the kernel on the tensors' views. float16 storages hold binary16 bits, and the kernels take float32 values:
 * each float16 input is widened into float32 scratch first, and each float16 output is computed into scratch and
 * narrowed into its storage after (the one rounding of the result to binary16), so no kernel needs to know.
 */
const isHalf = (t: Tensor): boolean => t.dtype === 'float16';

function runKernel<A>(op: OpDef<A>, inputs: readonly Tensor[], attrs: A, outputs: readonly Tensor[]): void {
  if (!inputs.some(isHalf) && !outputs.some(isHalf)) {
    forgetLastOutputs();
    return runOnViews(op, inputs.map(cpuView), attrs, outputs.map(cpuView));
  }
  const scratch = new HalfScratch();
  let narrowed: Set<number> | undefined;
  try {
    // All scratch first: an allocation may grow (and on a private memory detach) the heap, so views come after.
    const inSpans = inputs.map((t) => (isHalf(t) ? scratch.add(t, true) : -1));
    forgetLastOutputs();
    const outSpans = outputs.map((t) => (isHalf(t) ? scratch.add(t, false) : -1));
    for (const i of new Set(inSpans)) if (i >= 0) scratch.widen(i);
    // An output that does not fill its span (a strided view; kernels write whole contiguous outputs) keeps what lies between.
    outputs.forEach((t, j) => {
      const { lo, hi } = reach(t);
      if (outSpans[j]! >= 0 && !inSpans.includes(outSpans[j]!) && t.numel() < hi - lo + 1) scratch.widen(outSpans[j]!);
    });
    const generation = hasWasm ? heap().generation : 0;
    const view = (t: Tensor, i: number): CpuView => (i >= 0 ? scratch.view(t, i) : cpuView(t));
    runOnViews(op, inputs.map((t, j) => view(t, inSpans[j]!)), attrs, outputs.map((t, j) => view(t, outSpans[j]!)));
    // A private memory that grew while the kernel ran detached its views: the backend runs it again (see cpuBackend.run).
    if (hasWasm && !heap().shared && heap().generation !== generation) return;
    narrowed = new Set(outSpans.filter((i) => i >= 0));
    for (const i of narrowed) {
      const values = scratch.values(i);
      // Rounded in place: the scratch, kept for the next kernel, then holds what the bits do.
      narrowHalf(values, scratch.bits(i), takeRoundedHalf(values) ? 'exact' : 'round in place');
    }
  } finally {
    scratch.free(narrowed);
  }
}

function runOnViews<A>(op: OpDef<A>, ins: CpuView[], attrs: A, outs: CpuView[]): void {
  forgetRoundedHalf();
  try {
    // The elementwise op's kernel description is its expression: rendered to wasm when it can be.
    if (!(op.name === 'map' && kernelOverrides.map?.((attrs as { expr: Expr }).expr, ins, outs[0]!))) op.cpu(ins, attrs, outs);
  } catch (e) {
    if (!(e instanceof HeapFullError)) throw e;
    // The memory is full (4 GiB): storages beyond it live in JS arrays (allocStorage), and a wasm kernel's
    // scratch no longer fits, so this kernel runs on the JavaScript path, which needs none (outputs are written whole).
    const wasm = { ...kernelOverrides };
    for (const k of Object.keys(wasm) as (keyof typeof kernelOverrides)[]) kernelOverrides[k] = undefined;
    forgetRoundedHalf();
    try {
      op.cpu(ins, attrs, outs);
    } finally {
      Object.assign(kernelOverrides, wasm);
    }
  }
}
