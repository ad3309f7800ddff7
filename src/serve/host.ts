// Copies between CPU tensors and host memory without the allocations of Tensor.data(), for the serving
// paths that move every request's values: each data() call returns a fresh array, and at a batch of 32
// small-CNN samples per cycle those arrays (the samples read to be stacked, the batch read to be handed
// to a replica, twice) were ~2 MB per batch of garbage outside V8's heap, which made V8 run a full
// mark-compact every few batches on the serving thread ("external memory pressure").
import { getBackend } from '../backend/backend.js';
import { Tensor } from '../tensor/tensor.js';

/**
 * The bytes of a contiguous CPU tensor's stored values, in place (no copy; float16 as its binary16
 * bits), or null for another device or a strided view. The view may sit in the WebAssembly heap: take
 * it after anything that may allocate CPU storage (growing a private memory detaches older views), and
 * use it before the next such allocation.
 */
export function cpuBytes(t: Tensor): Uint8Array | null {
  if (t.device !== 'cpu' || !t.isContiguous()) return null;
  const backend = getBackend('cpu');
  if (!backend.hostView) return null;
  const stored = backend.hostView(t.storage);
  const size = stored.BYTES_PER_ELEMENT;
  return new Uint8Array(stored.buffer, stored.byteOffset + t.offset * size, t.numel() * size);
}

/** A new CPU tensor of this shape and dtype, uninitialised (its storage from the CPU heap's reuse pool). */
export function emptyCpu(dtype: Tensor['dtype'], shape: readonly number[]): Tensor {
  return new Tensor(getBackend('cpu').alloc(dtype, shape.reduce((a, b) => a * b, 1)), shape);
}

/**
 * Row `i` of `t` along dim 0 as a new CPU tensor (one byte copy), or null where `t` is not a
 * contiguous CPU tensor of at least one dim.
 */
export function cpuRow(t: Tensor, i: number): Tensor | null {
  if (t.device !== 'cpu' || !t.isContiguous() || t.ndim === 0) return null;
  const out = emptyCpu(t.dtype, t.shape.slice(1));
  // Both views after the allocation (see cpuBytes).
  const src = cpuBytes(t)!, dst = cpuBytes(out)!;
  dst.set(src.subarray(i * dst.byteLength, (i + 1) * dst.byteLength));
  return out;
}
