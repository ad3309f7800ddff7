/// <reference types="@webgpu/types" />

/** What a pool holds and has done, for `memory()`. */
export interface PoolStats {
  /** Bytes of all buffers the pool created and has not destroyed (in use or idle). */
  reservedBytes: number;
  /** Bytes of released buffers waiting for reuse. */
  idleBytes: number;
  /** The most idle bytes kept: beyond it the longest-idle buffers are destroyed. */
  maxIdleBytes: number;
  /** Buffers created so far: flat under steady use when buffers are reused. */
  created: number;
  /** Requests served by an idle buffer. */
  reused: number;
  /** Idle buffers destroyed (over the cap, or by `emptyCache`). */
  destroyed: number;
}

/** Idle bytes a pool keeps by default (see `setCacheLimits`). */
export const DEFAULT_MAX_IDLE_BYTES = 1 << 30;

/**
 * Size-bucketed GPU buffers: a released buffer waits in its bucket for the next request of that
 * bucket and usage instead of being destroyed. Buckets are powers of two up to 4 KiB, then four
 * per octave (at most 25% slack), so sizes that differ a little still share buffers. Idle buffers
 * are bounded: past `maxIdleBytes` the longest-idle ones are destroyed, and `clear()` destroys all
 * (torch.cuda.empty_cache). `beforeDestroy` runs first: commands recorded but not yet submitted may
 * use an idle buffer (one released right after an op used it), and a submit must not meet it destroyed.
 */
export class BufferPool {
  private readonly free = new Map<string, GPUBuffer[]>();
  /** Idle buffers, longest idle first. */
  private readonly idle = new Set<GPUBuffer>();
  reservedBytes = 0;
  idleBytes = 0;
  maxIdleBytes = DEFAULT_MAX_IDLE_BYTES;
  created = 0;
  reused = 0;
  destroyed = 0;
  /** Set once the device is lost: released buffers are destroyed at once (nothing can reuse them). */
  private closed = false;

  constructor(
    private readonly device: GPUDevice,
    private readonly onReserved: (bytes: number) => void,
    private readonly beforeDestroy: () => void = () => {},
  ) {}

  static bucket(bytes: number): number {
    const b = Math.max(bytes, 16);
    const p = 2 ** Math.ceil(Math.log2(b));
    if (p <= 4096) return p;
    const step = p / 8;
    return Math.ceil(b / step) * step;
  }

  /**
   * A buffer of at least `bytes` (its bucket's size, capped at `maxSize`; a multiple of 16 for vec4
   * access), and whether it was used before (queued commands may still refer to it).
   */
  acquire(bytes: number, usage: number, maxSize: number): { buffer: GPUBuffer; reused: boolean } {
    const size = Math.max(Math.min(BufferPool.bucket(bytes), Math.floor(maxSize / 16) * 16), bytes);
    const cached = this.free.get(`${usage}:${size}`)?.pop();
    if (cached) {
      this.idle.delete(cached);
      this.idleBytes -= cached.size;
      this.reused++;
      return { buffer: cached, reused: true };
    }
    const buffer = this.device.createBuffer({ size, usage, label: `sinter ${size}` });
    this.created++;
    this.reservedBytes += size;
    this.onReserved(this.reservedBytes);
    return { buffer, reused: false };
  }

  release(buffer: GPUBuffer): void {
    if (this.closed) {
      this.reservedBytes -= buffer.size;
      buffer.destroy();
      return;
    }
    const key = `${buffer.usage}:${buffer.size}`;
    const list = this.free.get(key);
    if (list) list.push(buffer);
    else this.free.set(key, [buffer]);
    this.idle.add(buffer);
    this.idleBytes += buffer.size;
    if (this.idleBytes > this.maxIdleBytes) this.trim(this.maxIdleBytes);
  }

  /** Destroys the longest-idle buffers until at most `keep` idle bytes remain. */
  trim(keep: number): void {
    if (this.idleBytes <= keep) return;
    this.beforeDestroy();
    for (const buffer of this.idle) {
      if (this.idleBytes <= keep) break;
      const list = this.free.get(`${buffer.usage}:${buffer.size}`)!;
      list.splice(list.indexOf(buffer), 1);
      this.idle.delete(buffer);
      this.idleBytes -= buffer.size;
      this.reservedBytes -= buffer.size;
      this.destroyed++;
      buffer.destroy();
    }
    this.onReserved(this.reservedBytes);
  }

  /** Destroys every idle buffer (buffers in use stay). */
  clear(): void {
    this.trim(0);
  }

  /** Destroys every idle buffer, and from now on every released one (the device was lost). */
  close(): void {
    this.trim(0);
    this.closed = true;
  }

  stats(): PoolStats {
    const { reservedBytes, idleBytes, maxIdleBytes, created, reused, destroyed } = this;
    return { reservedBytes, idleBytes, maxIdleBytes, created, reused, destroyed };
  }
}
