/// <reference types="@webgpu/types" />
/**
 * Size-bucketed GPU buffers: a released buffer waits in its bucket for the next request of that
 * bucket and usage instead of being destroyed. Buckets are powers of two up to 4 KiB, then four
 * per octave (at most 25% slack), so sizes that differ a little still share buffers.
 */
export class BufferPool {
  private readonly free = new Map<string, GPUBuffer[]>();
  /** Bytes of all buffers this pool created and has not destroyed (in use or waiting). */
  reservedBytes = 0;
  /** Buffers created so far: flat under steady use when buffers are reused. */
  created = 0;

  constructor(
    private readonly device: GPUDevice,
    private readonly onReserved: (bytes: number) => void,
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
    if (cached) return { buffer: cached, reused: true };
    const buffer = this.device.createBuffer({ size, usage, label: `sinter ${size}` });
    this.created++;
    this.reservedBytes += size;
    this.onReserved(this.reservedBytes);
    return { buffer, reused: false };
  }

  release(buffer: GPUBuffer): void {
    const key = `${buffer.usage}:${buffer.size}`;
    const list = this.free.get(key);
    if (list) list.push(buffer);
    else this.free.set(key, [buffer]);
  }
}
