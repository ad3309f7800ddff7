// The one WebAssembly.Memory every generated kernel module imports (shared with the worker threads
// when SharedArrayBuffer exists), and a scratch arena in it.
// Kernels copy their operands in (a memcpy of each view's span), run, and copy results out: CPU
// storages stay JS typed arrays for now, so nothing else has to know about wasm memory.
// memory.grow detaches the old ArrayBuffer, so typed views are re-made after every grow.

const PAGE = 65536;
/** The most pages the memory may grow to (4 GiB, wasm32's limit); a shared memory reserves this address space up front. */
const MAX_PAGES = 65536;
/** Bytes at address 0 kept out of the arena: the thread pool's control blocks (src/kernels/wasm/threads.ts). */
export const RESERVED_BYTES = 16384;

/**
 * A shared memory where SharedArrayBuffer exists (Node; cross-origin isolated pages), so worker threads
 * can run kernels on it; else a private one. A page that is not cross-origin isolated can still create
 * a shared WebAssembly.Memory while `SharedArrayBuffer` is hidden, so the global decides, not the try.
 */
function createMemory(): { memory: WebAssembly.Memory; shared: boolean } {
  if (typeof SharedArrayBuffer !== 'undefined') {
    try {
      return { memory: new WebAssembly.Memory({ initial: 16, maximum: MAX_PAGES, shared: true }), shared: true };
    } catch {
      // No shared memories here (or no room to reserve 4 GiB of address space): one thread, private memory.
    }
  }
  return { memory: new WebAssembly.Memory({ initial: 16 }), shared: false };
}

export class WasmHeap {
  private readonly created = createMemory();
  readonly memory = this.created.memory;
  readonly shared = this.created.shared;
  private top = RESERVED_BYTES;
  private views!: { f32: Float32Array; i32: Int32Array };

  constructor() {
    this.refresh();
  }

  get f32(): Float32Array {
    return this.views.f32;
  }
  get i32(): Int32Array {
    return this.views.i32;
  }

  /** Frees every scratch allocation: call at the start of each kernel (kernels run one at a time). */
  reset(): void {
    this.top = RESERVED_BYTES;
  }

  /** The arena's current top, to `release` back to (nested scratch, e.g. a GEMM's packing buffers). */
  mark(): number {
    return this.top;
  }
  release(mark: number): void {
    this.top = mark;
  }

  /** `bytes` of scratch, 64-byte aligned (a cache line, and v128 alignment); grows the memory as needed. */
  alloc(bytes: number): number {
    const at = this.top;
    this.top = at + Math.ceil(bytes / 64) * 64;
    if (this.top > this.memory.buffer.byteLength) {
      this.memory.grow(Math.ceil((this.top - this.memory.buffer.byteLength) / PAGE));
      this.refresh();
    }
    return at;
  }

  /** Copies `values` in; returns their address. */
  put(values: Float32Array | Int32Array): number {
    const at = this.alloc(values.byteLength);
    if (values instanceof Float32Array) this.f32.set(values, at >> 2);
    else this.i32.set(values, at >> 2);
    return at;
  }

  private refresh(): void {
    const b = this.memory.buffer as ArrayBuffer;
    this.views = { f32: new Float32Array(b), i32: new Int32Array(b) };
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

/** Instantiates a generated module against the heap's memory. */
export function instantiate<E extends WebAssembly.Exports>(bytes: Uint8Array<ArrayBuffer>): E {
  return new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory: heap().memory } }).exports as E;
}
