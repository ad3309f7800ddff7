import type { DeviceName } from '../backend/backend.js';
import type { DType, HostArray } from '../tensor/dtype.js';
import { tensor } from '../tensor/creation.js';
import { Tensor } from '../tensor/tensor.js';

/** A tensor as it crosses a thread boundary: its dtype, shape and row-major values (the buffer is transferred, or shared). */
export interface WireTensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly data: HostArray;
}

/** A tree of tensors (a batch, or a model's outputs) with every tensor as a WireTensor. */
export type WireTree = WireTensor | readonly WireTree[] | { readonly [key: string]: WireTree };

function isWire(v: unknown): v is WireTensor {
  return typeof v === 'object' && v !== null && ArrayBuffer.isView((v as WireTensor).data) && Array.isArray((v as WireTensor).shape);
}

/** Reads every tensor of a tree back to the host; `transfer` collects the buffers to hand over. */
export async function toWire(tree: unknown, transfer: ArrayBuffer[]): Promise<WireTree> {
  if (tree instanceof Tensor) {
    // data() may share its buffer with a CPU storage: copy it, so the transfer takes nothing the sender keeps.
    const data = (await tree.data()).slice();
    transfer.push(data.buffer as ArrayBuffer);
    return { dtype: tree.dtype, shape: [...tree.shape], data };
  }
  if (Array.isArray(tree)) return Promise.all(tree.map((t) => toWire(t, transfer)));
  return Object.fromEntries(await Promise.all(Object.entries(tree as object).map(async ([k, v]) => [k, await toWire(v, transfer)] as const)));
}

/**
 * The tensors of a wire tree, made on `device` (values in a SharedArrayBuffer, as a WorkerPool sends
 * batches, are copied: the CPU copies them into its heap; other devices get a private copy first, since
 * a GPU upload may not take shared memory).
 */
export function fromWire(tree: WireTree, device: DeviceName): unknown {
  if (isWire(tree)) {
    const shared = typeof SharedArrayBuffer !== 'undefined' && tree.data.buffer instanceof SharedArrayBuffer;
    return tensor(shared && device !== 'cpu' ? tree.data.slice() : tree.data, { dtype: tree.dtype, shape: [...tree.shape], device });
  }
  if (Array.isArray(tree)) return tree.map((t) => fromWire(t, device));
  return Object.fromEntries(Object.entries(tree).map(([k, v]) => [k, fromWire(v as WireTree, device)]));
}

/** Messages to a replica ('drain': finish the batches posted and the device's work, then answer 'drained'). */
export type ToWorker = { readonly type: 'run'; readonly id: number; readonly batch: WireTree } | { readonly type: 'drain' };

/** Messages from a replica. */
export type FromWorker =
  | { readonly type: 'ready'; readonly device: DeviceName }
  | { readonly type: 'failed'; readonly message: string }
  | { readonly type: 'result'; readonly id: number; readonly outputs: WireTree }
  | { readonly type: 'error'; readonly id: number; readonly name: string; readonly message: string }
  | { readonly type: 'drained' };

/** What a replica is started with (workerData). */
export interface WorkerInit {
  readonly source: { readonly module: string } | { readonly model: Uint8Array };
  readonly device: DeviceName | 'auto';
  readonly threads: number;
}
