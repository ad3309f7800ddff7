import type { CacheStats } from '../lru.js';
import { type DeviceName, type Storage, getBackend } from '../backend/backend.js';
import type { Tensor } from './tensor.js';
import { SinterError } from '../errors.js';
import type { PipelineStats } from '../backend/webgpu/pipelines.js';
import type { PoolStats } from '../backend/webgpu/pool.js';
import type { HeapStats } from '../kernels/wasm/heap.js';

/** Live storages and bytes per device; the backends report here on alloc and release. */
const live = new Map<DeviceName, DeviceMemory>();
let liveTensors = 0;

function entry(device: DeviceName): DeviceMemory {
  let m = live.get(device);
  if (!m) live.set(device, (m = { storages: 0, bytes: 0, peakBytes: 0 }));
  return m;
}

export function noteAlloc(s: Storage): void {
  const m = entry(s.device);
  m.storages++;
  m.bytes += s.byteLength;
  m.peakBytes = Math.max(m.peakBytes, m.bytes);
}
export function noteFree(s: Storage): void {
  const m = entry(s.device);
  m.storages--;
  m.bytes -= s.byteLength;
}
/** A device allocator's total holding (in use plus cached for reuse). */
export function noteReserved(device: DeviceName, bytes: number): void {
  entry(device).reservedBytes = bytes;
}
export function noteTensor(delta: 1 | -1): void {
  liveTensors += delta;
}

/** What a device's caches report to `memory()`. */
export interface CacheReport {
  reservedBytes?: number;
  pool?: PoolStats | HeapStats;
  pipelines?: PipelineStats;
  caches?: Record<string, CacheStats>;
}
/** Per device, its reporters by part (the CPU's kernel cache and its heap report separately). */
const cacheReporters = new Map<DeviceName, Map<string, () => CacheReport>>();
/**
 * Makes `memory()` include what `report` returns for `device` (the latest reporter per device and
 * `part` wins: a device opened after a loss replaces the lost one).
 */
export function reportCaches(device: DeviceName, report: () => CacheReport, part = 'caches'): void {
  let parts = cacheReporters.get(device);
  if (!parts) cacheReporters.set(device, (parts = new Map()));
  parts.set(part, report);
}
function cacheReport(device: DeviceName): CacheReport {
  const out: CacheReport = {};
  for (const report of cacheReporters.get(device)?.values() ?? []) {
    const r = report();
    Object.assign(out, r, r.caches ? { caches: { ...out.caches, ...r.caches } } : {});
  }
  return out;
}

export interface DeviceMemory {
  /** Storages alive on the device. */
  storages: number;
  /** Bytes held by live storages. */
  bytes: number;
  /** Highest `bytes` seen since start. */
  peakBytes: number;
  /**
   * Bytes the device's allocator holds: in use (rounded up to its size classes) plus freed blocks kept
   * for reuse. WebGPU: its buffer pool; CPU: the WebAssembly heap (kernel scratch included).
   */
  reservedBytes?: number;
  /**
   * The allocator: idle bytes and their cap, blocks created, reused and destroyed (given back). On the
   * CPU also the heap's bytes in use, scratch, free space and memory size (src/kernels/wasm/heap.ts).
   */
  pool?: PoolStats | HeapStats;
  /** The compiled-kernel cache: entries, capacity, hits, misses, evictions (WebGPU: WGSL pipelines; CPU: generated JavaScript kernels). */
  pipelines?: PipelineStats;
  /**
   * The device's other bounded caches of compiled or precomputed kernel parts, by name (each an LRU: entries,
   * capacity, hits, misses, evictions). CPU: the WebAssembly elementwise modules and the int8 convs' tables.
   */
  caches?: Record<string, CacheStats>;
}
export interface MemoryInfo {
  /** Tensors not yet disposed (views count separately from the storage they share). */
  tensors: number;
  /** Bytes of live storages over all devices. */
  bytes: number;
  devices: Partial<Record<DeviceName, DeviceMemory>>;
}

/** Memory in use: live tensors and storage bytes, in total and per device. */
export function memory(): MemoryInfo {
  const devices: Partial<Record<DeviceName, DeviceMemory>> = {};
  let bytes = 0;
  for (const [d, m] of live) {
    devices[d] = { ...m, ...cacheReport(d) };
    bytes += m.bytes;
  }
  return { tensors: liveTensors, bytes, devices };
}

// ---- release after garbage collection ----------------------------------------------------

/**
 * Tensors dropped without `dispose()` (nor a `tidy` around them) give their storage's reference back
 * once the garbage collector has found them unreachable, so a long-running program that forgets
 * `dispose` does not grow without bound. When that happens is up to the collector, often long after
 * the last use and never for memory on the GPU's account alone: `dispose`/`tidy` stay the way to
 * release deterministically. A disposed tensor is unregistered, so nothing is released twice; the
 * held value is the storage, never the tensor, and a storage is released only when its last view
 * went, so nothing can touch it afterwards.
 */
const collected = new FinalizationRegistry<Storage>((storage) => {
  liveTensors--;
  if (--storage.refs === 0) getBackend(storage.device).release(storage);
});

/** Called by Tensor.dispose: the tensor's storage reference is returned deterministically, not by the collector. */
export function noteDisposed(t: Tensor): void {
  liveTensors--;
  collected.unregister(t);
}

// ---- scopes: tidy / keep --------------------------------------------------------------

const scopes: Set<Tensor>[] = [];

/** Called by every Tensor constructor: the innermost open scope owns it, and the collector releases it if it is dropped undisposed. */
export function track(t: Tensor): void {
  scopes[scopes.length - 1]?.add(t);
  const s = t.storage;
  if (!s.symbolic) collected.register(t, s, t);
}

/** Removes `t` from every open scope so no `tidy` disposes it. */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}

function collectTensors(value: unknown, out: Set<Tensor>, isTensor: (v: unknown) => v is Tensor, seen = new Set<unknown>()): void {
  if (value === null || typeof value !== 'object' || seen.has(value)) return;
  seen.add(value);
  if (isTensor(value)) {
    out.add(value);
    return;
  }
  if (value instanceof Map) for (const v of value.values()) collectTensors(v, out, isTensor, seen);
  else for (const v of Object.values(value as object)) collectTensors(v, out, isTensor, seen);
}

/**
 * Runs `fn`, then disposes every tensor created inside it except those reachable from its
 * return value (tensors, or arrays/objects/Maps holding them), which move to the enclosing scope.
 * `fn` must be synchronous: tensors created after an `await` could not be attributed.
 */
export function tidyWith<T>(fn: () => T, isTensor: (v: unknown) => v is Tensor): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopes.pop();
  if (result instanceof Promise) {
    for (const t of scope) t.dispose();
    throw new SinterError('tidy', 'the function returned a Promise; tidy only takes synchronous functions (await outside it, or dispose tensors yourself)');
  }
  const kept = new Set<Tensor>();
  collectTensors(result, kept, isTensor);
  const parent = scopes[scopes.length - 1];
  for (const t of scope) {
    if (kept.has(t)) parent?.add(t);
    else t.dispose();
  }
  return result;
}
