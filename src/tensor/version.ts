import type { Storage } from '../backend/backend.js';

/**
 * Version counters of storages, as PyTorch's `tensor._version`: code that writes a storage's
 * values in place (loading weights into existing tensors, in-place ops) bumps it, so compiled
 * graphs holding the storage as a constant see the change and retrace (see `jit`).
 */
const versions = new WeakMap<Storage, number>();

/** The number of in-place writes `storage` has had. */
export function storageVersion(storage: Storage): number {
  return versions.get(storage) ?? 0;
}

/** Records an in-place write of `storage`'s values. */
export function bumpVersion(storage: Storage): void {
  versions.set(storage, storageVersion(storage) + 1);
}
