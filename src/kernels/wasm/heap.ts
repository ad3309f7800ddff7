// The one WebAssembly.Memory every generated kernel module imports (shared with the worker threads
// when SharedArrayBuffer exists), and the allocator that places CPU tensor storages in it, so the
// kernels read and write them where they are: no copy in or out per call.
//
// Layout: [0, RESERVED_BYTES) holds the thread pool's control blocks; above it, blocks of the
// allocator. A block's size is its size class (powers of two from 64 bytes to 4 KiB, then eight steps
// per doubling: at most 12.5% waste). A freed block waits, idle, in its class's free list for the next
// request of that class; idle bytes are bounded (`maxIdleBytes`): past the bound, and on `emptyCache`,
// the longest-idle blocks go back to the free space (coalesced address ranges), which any class can
// carve again. Memory only grows (WebAssembly memories cannot shrink); `stats()` says how its bytes divide.
//
// memory.grow detaches a private (non-shared) memory's old ArrayBuffer: typed views must be re-made
// after any allocation. Storages re-derive theirs on access (`view`, `generation`); a shared memory's old
// buffers stay valid (they alias the same memory), so only private memories (pages that are not
// cross-origin isolated) have stale views to fear.
//
// Kernel scratch (packing buffers, copies of operands that live outside the memory) comes from an arena
// of allocator blocks: `reset` at a kernel's start, `alloc`/`mark`/`release` within it.

import type { PoolStats } from '../../backend/webgpu/pool.js';

const PAGE = 65536;
/** The most pages the memory may grow to (4 GiB, wasm32's limit); a shared memory reserves this address space up front. */
const MAX_PAGES = 65536;
/** Bytes at address 0 kept out of the allocator: the thread pool's control blocks (src/kernels/wasm/threads.ts). */
export const RESERVED_BYTES = 16384;
/** Every block is aligned to (and a multiple of) 64 bytes: a cache line, and v128 alignment. */
const ALIGN = 64;
/** Idle bytes kept for reuse by default (see `setCacheLimits`). */
export const DEFAULT_MAX_IDLE_BYTES = 256 << 20;
/** The smallest scratch chunk: most kernels' scratch fits one, kept between kernels. */
const MIN_SCRATCH = 256 << 10;

/** What the heap reports to `memory().devices.cpu.pool`: the GPU pool's fields (blocks for buffers), plus the memory's own. */
export interface HeapStats extends PoolStats {
  /** Bytes of blocks in use. */
  inUseBytes: number;
  /** Of those, bytes of the kernels' scratch arena (kept between kernels; `emptyCache` frees it). */
  scratchBytes: number;
  /** Bytes below the top that belong to no block (coalesced ranges any size class can carve). */
  freeBytes: number;
  /** The WebAssembly memory's size in bytes (it never shrinks). */
  memoryBytes: number;
  /** Whether the memory is shared (worker threads can run kernels on it). */
  shared: boolean;
}

/**
 * A shared memory where SharedArrayBuffer exists (Node; cross-origin isolated pages), so worker threads
 * can run kernels on it; else a private one. A page that is not cross-origin isolated can still create
 * a shared WebAssembly.Memory while `SharedArrayBuffer` is hidden, so the global decides, not the try.
 */
function createMemory(shared: boolean): { memory: WebAssembly.Memory; shared: boolean } {
  if (shared && typeof SharedArrayBuffer !== 'undefined') {
    try {
      return { memory: new WebAssembly.Memory({ initial: 16, maximum: MAX_PAGES, shared: true }), shared: true };
    } catch {
      // No shared memories here (or no room to reserve 4 GiB of address space): one thread, private memory.
    }
  }
  return { memory: new WebAssembly.Memory({ initial: 16, maximum: MAX_PAGES }), shared: false };
}

/** The size class of a request: powers of two up to 4 KiB, then eight steps per doubling (as the GPU pool's buckets). */
export function sizeClass(bytes: number): number {
  const b = Math.max(bytes, ALIGN);
  const p = 2 ** Math.ceil(Math.log2(b));
  if (p <= 4096) return p;
  const step = p / 8;
  return Math.ceil(b / step) * step;
}

/** Bytes of blocks carved afresh (not reused) between two calls of `collect` at least. */
const PRESSURE_BYTES = 64 << 20;
let collect: (() => void) | undefined;

/**
 * Sets what runs after every PRESSURE_BYTES of blocks carved afresh (blocks reused from the free lists do not
 * count, so a program that disposes its tensors never triggers it). The JS collector cannot see this memory,
 * so storages of tensors dropped without `dispose` never press it to run; src/backend/cpu.ts sets a full
 * collection where the engine offers one, after which the collector's callbacks give their blocks back (at
 * the next macrotask).
 */
export function setCollect(fn: (() => void) | undefined): void {
  collect = fn;
}

/** The memory cannot grow to hold a block (wasm32 stops at 4 GiB). */
export class HeapFullError extends RangeError {}

export class WasmHeap {
  readonly memory: WebAssembly.Memory;
  readonly shared: boolean;
  /** Counts the memory's growths: a view made at an older generation of a private memory is detached. */
  generation = 0;
  maxIdleBytes = DEFAULT_MAX_IDLE_BYTES;

  /** End of the carved region: addresses at or past it belong to no block and no free range. */
  private top = RESERVED_BYTES;
  /** Blocks in use: address → size. */
  private readonly used = new Map<number, number>();
  /** Idle blocks per size class, and all of them in the order they went idle (oldest first). */
  private readonly idleByClass = new Map<number, Set<number>>();
  private readonly idle = new Map<number, number>();
  /** Free address ranges below `top`, sorted by start and coalesced: [start, end) pairs. */
  private readonly free: [number, number][] = [];
  private counts = { created: 0, reused: 0, destroyed: 0, inUseBytes: 0, idleBytes: 0 };
  /** Bytes carved since `collect` last ran. */
  private carvedSinceCollect = 0;
  private views!: { f32: Float32Array; i32: Int32Array };
  /** Every buffer object the memory has handed out (a shared memory's stay valid after growth). */
  private readonly buffers = new WeakSet<ArrayBufferLike>();

  /** Scratch chunks ([start, end) blocks, newest last) and the next free scratch address. */
  private readonly chunks: [number, number][] = [];
  private cursor = 0;

  constructor(opts: { shared?: boolean } = {}) {
    ({ memory: this.memory, shared: this.shared } = createMemory(opts.shared ?? true));
    this.refresh();
  }

  /** float32 / int32 views of the whole memory, re-made after each growth (never keep one across an allocation). */
  get f32(): Float32Array {
    return this.views.f32;
  }
  get i32(): Int32Array {
    return this.views.i32;
  }

  /**
   * The byte address of element `index` of `data` when `data` is a view of this memory (a shared
   * memory's older buffers alias the same bytes), else undefined (a JS array: kernels copy it in).
   */
  addressOf(data: ArrayBufferView, index = 0): number | undefined {
    const b = data.buffer;
    if (b !== this.memory.buffer && !(this.shared && this.buffers.has(b))) return undefined;
    return data.byteOffset + index * (data as Float32Array).BYTES_PER_ELEMENT;
  }

  // ---- blocks ----------------------------------------------------------------------------

  /** A block of at least `bytes` (its size class), 64-byte aligned; returns its address. Throws a RangeError when the memory cannot grow to hold it. */
  allocate(bytes: number): number {
    const size = sizeClass(bytes);
    const idle = this.idleByClass.get(size);
    let at: number;
    if (idle?.size) {
      at = idle.values().next().value as number;
      idle.delete(at);
      this.idle.delete(at);
      this.counts.idleBytes -= size;
      this.counts.reused++;
    } else {
      at = this.carve(size);
      this.counts.created++;
      this.carvedSinceCollect += size;
      if (this.carvedSinceCollect >= PRESSURE_BYTES) {
        this.carvedSinceCollect = 0;
        collect?.();
      }
    }
    this.used.set(at, size);
    this.counts.inUseBytes += size;
    return at;
  }

  /** Returns a block from `allocate` to its class's free list (bounded: the longest idle go back to the free space). */
  deallocate(at: number): void {
    const size = this.used.get(at);
    if (size === undefined) throw new Error(`wasm heap: ${at} is not an allocated block`);
    this.used.delete(at);
    this.counts.inUseBytes -= size;
    let set = this.idleByClass.get(size);
    if (!set) this.idleByClass.set(size, (set = new Set()));
    set.add(at);
    this.idle.set(at, size);
    this.counts.idleBytes += size;
    if (this.counts.idleBytes > this.maxIdleBytes) this.trim(this.maxIdleBytes);
  }

  /** The size of the block at `at` (in use), or undefined. */
  blockSize(at: number): number | undefined {
    return this.used.get(at);
  }

  /** Gives the longest-idle blocks back to the free space until at most `keep` idle bytes remain. */
  trim(keep: number): void {
    for (const [at, size] of this.idle) {
      if (this.counts.idleBytes <= keep) break;
      this.idle.delete(at);
      this.idleByClass.get(size)!.delete(at);
      this.counts.idleBytes -= size;
      this.counts.destroyed++;
      this.giveBack(at, size);
    }
  }

  /** Frees every idle block and the scratch arena (blocks in use stay): the memory's free space grows, its size does not. */
  emptyCache(): void {
    this.releaseScratch(0);
    this.trim(0);
  }

  stats(): HeapStats {
    const { created, reused, destroyed, inUseBytes, idleBytes } = this.counts;
    const scratchBytes = this.chunks.reduce((a, [s, e]) => a + (e - s), 0);
    const freeBytes = this.free.reduce((a, [s, e]) => a + (e - s), 0);
    return {
      reservedBytes: inUseBytes + idleBytes, idleBytes, maxIdleBytes: this.maxIdleBytes, created, reused, destroyed,
      inUseBytes, scratchBytes, freeBytes, memoryBytes: this.memory.buffer.byteLength, shared: this.shared,
    };
  }

  /** First fit from the free ranges, else from the top (growing the memory). */
  private carve(size: number): number {
    for (let i = 0; i < this.free.length; i++) {
      const r = this.free[i]!;
      if (r[1] - r[0] < size) continue;
      const at = r[0];
      if (r[1] - r[0] === size) this.free.splice(i, 1);
      else r[0] += size;
      return at;
    }
    const at = this.top;
    this.ensure(at + size);
    this.top = at + size;
    return at;
  }

  /** Adds [at, at + size) to the free ranges, merging with neighbours; a range reaching the top lowers it. */
  private giveBack(at: number, size: number): void {
    const free = this.free;
    let lo = 0, hi = free.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (free[mid]![0] < at) lo = mid + 1;
      else hi = mid;
    }
    let start = at, end = at + size, i = lo;
    if (i > 0 && free[i - 1]![1] === start) start = free[--i]![0], free.splice(i, 1);
    if (i < free.length && free[i]![0] === end) end = free[i]![1], free.splice(i, 1);
    if (end === this.top) this.top = start;
    else free.splice(i, 0, [start, end]);
  }

  /** Grows the memory to at least `end` bytes: by an eighth of its size at least, so growths stay few. */
  private ensure(end: number): void {
    const have = this.memory.buffer.byteLength;
    if (end <= have) return;
    const pages = Math.min(Math.max(Math.ceil((end - have) / PAGE), Math.ceil(have / PAGE / 8)), MAX_PAGES - have / PAGE);
    if (have + pages * PAGE < end) throw new HeapFullError(`wasm heap: ${end} bytes exceed WebAssembly's 4 GiB memory`);
    this.memory.grow(pages);
    this.refresh();
  }

  private refresh(): void {
    const b = this.memory.buffer as ArrayBuffer;
    this.views = { f32: new Float32Array(b), i32: new Int32Array(b) };
    this.buffers.add(b);
    this.generation++;
  }

  // ---- kernel scratch ---------------------------------------------------------------------

  /**
   * Frees every scratch allocation: call at the start of each kernel (kernels run one at a time).
   * Several chunks are merged here into one that holds them all, so a kernel that needs as much
   * scratch as any before it allocates (and grows the memory) no more.
   */
  reset(): void {
    if (this.chunks.length > 1) {
      const total = this.chunks.reduce((a, [s, e]) => a + (e - s), 0);
      this.releaseScratch(0);
      const start = this.allocate(total);
      this.chunks.push([start, start + this.used.get(start)!]);
    }
    this.cursor = this.chunks[0]?.[0] ?? 0;
  }

  /** The arena's current position, to `release` back to (nested scratch, e.g. a GEMM's packing buffers). */
  mark(): number {
    return this.cursor;
  }
  release(mark: number): void {
    this.releaseScratch(mark);
  }

  /** `bytes` of scratch, 64-byte aligned; valid until the next `reset` (or a `release` below it). May grow the memory. */
  alloc(bytes: number): number {
    const size = Math.ceil(Math.max(bytes, 1) / ALIGN) * ALIGN;
    const last = this.chunks[this.chunks.length - 1];
    if (!last || this.cursor + size > last[1]) {
      const total = this.chunks.reduce((a, [s, e]) => a + (e - s), 0);
      const start = this.allocate(Math.max(size, MIN_SCRATCH, total));
      this.chunks.push([start, start + this.used.get(start)!]);
      this.cursor = start;
    }
    const at = this.cursor;
    this.cursor += size;
    return at;
  }

  /** Copies `values` into scratch; returns their address. */
  put(values: Float32Array | Int32Array): number {
    const at = this.alloc(values.byteLength);
    if (values instanceof Float32Array) this.f32.set(values, at >>> 2);
    else this.i32.set(values, at >>> 2);
    return at;
  }

  /** Drops the scratch chunks that lie wholly above `mark` (0: all of them), and moves the cursor there. */
  private releaseScratch(mark: number): void {
    for (let c = this.chunks[this.chunks.length - 1]; c && !(c[0] <= mark && mark <= c[1]); c = this.chunks[this.chunks.length - 1]) {
      this.chunks.pop();
      this.deallocate(c[0]);
    }
    this.cursor = this.chunks.length ? mark : 0;
  }
}

let shared: WasmHeap | undefined;

/** The process-wide heap (created on first use). */
export function heap(): WasmHeap {
  return (shared ??= new WasmHeap());
}

/** How generated modules declare their memory import: matching the heap's (shared memories must be declared shared, with a maximum). */
export function memoryImport(): { initialPages: number; shared: boolean; maximumPages?: number } {
  return heap().shared ? { initialPages: 1, shared: true, maximumPages: MAX_PAGES } : { initialPages: 1, shared: false };
}

/** The compiled module and export name of each function `instantiate` made: what a worker thread instantiates to run it. */
const sources = new WeakMap<object, { module: WebAssembly.Module; entry: string }>();

/** Instantiates a generated module against the heap's memory. */
export function instantiate<E extends WebAssembly.Exports>(bytes: Uint8Array<ArrayBuffer>): E {
  const module = new WebAssembly.Module(bytes);
  const exports = new WebAssembly.Instance(module, { env: { memory: heap().memory } }).exports;
  for (const [entry, fn] of Object.entries(exports)) if (typeof fn === 'function') sources.set(fn, { module, entry });
  return exports as E;
}

/** Where a function from `instantiate` came from (its module and export), or undefined. */
export function kernelSource(fn: object): { module: WebAssembly.Module; entry: string } | undefined {
  return sources.get(fn);
}
