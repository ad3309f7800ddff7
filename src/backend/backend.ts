import type { DType, HostArray } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';
import type { OpDef } from '../ops/op.js';

export type DeviceName = 'cpu' | 'webgpu';
/** What users pass: a device, or `'auto'` (WebGPU when an adapter exists, else the CPU). */
export type DeviceOption = DeviceName | 'auto';

/** Memory owned by one backend; tensors are views over it. Freed when its last view is disposed. */
export interface Storage {
  readonly device: DeviceName;
  readonly dtype: DType;
  /** Elements. */
  readonly length: number;
  /** Bytes as held on the device. */
  readonly byteLength: number;
  /** Live tensors viewing this storage. */
  refs: number;
  /** Set on the stand-ins jit traces with: they hold no memory and cannot be read. */
  readonly symbolic?: boolean;
  /** The backend instance that made it, where a device can be replaced (WebGPU after a loss). */
  readonly owner?: Backend;
}

export interface Backend {
  readonly name: DeviceName;
  /**
   * Which instance of the device this is (WebGPU: 1, 2, … as devices are opened after losses;
   * absent where there is only ever one): compiled plans record it and rebuild when it changes.
   */
  readonly generation?: number;
  /** Storage holding a copy of `data` (already cast to `dtype`; float16 as float32 numbers, which the copy rounds to binary16). */
  fromHost(dtype: DType, data: HostArray): Storage;
  /** Uninitialised storage for `length` elements. */
  alloc(dtype: DType, length: number): Storage;
  /** The whole storage as a host array (float16 as float32 values). */
  read(storage: Storage): Promise<HostArray>;
  /**
   * The storage's values where they are, without a copy (CPU; float16 as binary16 bits, which gatherView
   * widens): valid only until the next allocation or release, so callers copy out of it at once (one copy
   * per readback instead of two).
   */
  hostView?(storage: Storage): HostArray | Uint16Array;
  release(storage: Storage): void;
  /** Resolves when all work queued so far has finished on the device (for timing). */
  synchronize(): Promise<void>;
  /** Runs `op` on inputs into freshly allocated, contiguous outputs. */
  run<A>(op: OpDef<A>, inputs: readonly Tensor[], attrs: A, outputs: readonly Tensor[]): void;
}

const backends = new Map<DeviceName, Backend>();

export function registerBackend(b: Backend): void {
  backends.set(b.name, b);
}

export function getBackend(device: DeviceName): Backend {
  const b = backends.get(device);
  if (!b) {
    throw new Error(
      device === 'webgpu'
        ? "device 'webgpu' is not initialised: call `await init({ device: 'webgpu' })` first"
        : `no backend for device '${device}'`,
    );
  }
  return b;
}

/** The generation of the backend now serving `device` (0 when it has none): see Backend.generation. */
export function deviceGeneration(device: DeviceName): number {
  return backends.get(device)?.generation ?? 0;
}

/**
 * Whether `s` belongs to the backend now serving its device: false for a storage made on a WebGPU
 * device that was lost and replaced (its values are gone; using it throws).
 */
export function storageIsLive(s: Storage): boolean {
  const current = backends.get(s.device);
  return (s.owner ?? current) === current;
}

export function hasBackend(device: DeviceName): boolean {
  return backends.has(device);
}
