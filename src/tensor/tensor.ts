import type { DeviceName, Storage } from '../backend/backend.js';
import { getBackend } from '../backend/backend.js';
import { SinterError, fmtShape } from '../errors.js';
import { type DType, type HostArray, allocHost, isFloat } from './dtype.js';
import { noteDisposed, noteTensor, track } from './memory.js';
import { gatherHalf } from '../kernels/cpu/half.js';
import { contiguousStrides, isContiguous, numel, normDim, stridedOffsets } from './shape.js';

/** Nested arrays as returned by `toArray()`. */
export type NestedArray = number | boolean | NestedArray[];

/**
 * A view (shape, strides in elements, offset) over a storage on a device. Views share storage:
 * permute, slice, expand and friends make a new Tensor, never a copy. Ops are attached as methods
 * by the modules that define them (src/ops), so each op lives in one place.
 */
export class Tensor {
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;
  readonly dtype: DType;
  private _storage: Storage | null;

  constructor(storage: Storage, shape: readonly number[], strides?: readonly number[], offset = 0) {
    this._storage = storage;
    this.shape = Object.freeze([...shape]);
    this.strides = Object.freeze(strides ? [...strides] : contiguousStrides(shape));
    this.offset = offset;
    this.dtype = storage.dtype;
    storage.refs++;
    noteTensor(1);
    track(this);
  }

  /** The storage, or a clear error naming `op` if this tensor was disposed. */
  storageFor(op: string): Storage {
    if (!this._storage) throw new SinterError(op, `${this.describe()} was disposed and cannot be used`);
    return this._storage;
  }
  get storage(): Storage {
    return this.storageFor('tensor');
  }
  get device(): DeviceName {
    return this.storage.device;
  }
  get isDisposed(): boolean {
    return this._storage === null;
  }
  get ndim(): number {
    return this.shape.length;
  }
  dim(): number {
    return this.shape.length;
  }
  numel(): number {
    return numel(this.shape);
  }
  /** `size()` is the shape; `size(d)` one dim (negative counts from the end), as in PyTorch. */
  size(): number[];
  size(dim: number): number;
  size(dim?: number): number[] | number {
    return dim === undefined ? [...this.shape] : this.shape[normDim('size', dim, this.ndim)]!;
  }
  stride(): number[];
  stride(dim: number): number;
  stride(dim?: number): number[] | number {
    return dim === undefined ? [...this.strides] : this.strides[normDim('stride', dim, this.ndim)]!;
  }
  isContiguous(): boolean {
    return isContiguous(this.shape, this.strides);
  }
  isFloatingPoint(): boolean {
    return isFloat(this.dtype);
  }

  /** Frees this view; the storage goes back to its device when its last view is disposed. Idempotent. */
  dispose(): void {
    const s = this._storage;
    if (!s) return;
    this._storage = null;
    noteDisposed(this);
    if (--s.refs === 0 && !s.symbolic) getBackend(s.device).release(s);
  }

  /** The values in logical (row-major) order: float16 as Float32Array, bool as Uint8Array of 0/1. */
  data(): Promise<HostArray> {
    // Checked before any await, so misuse throws at the call rather than rejecting later.
    const s = this.readableStorage('data');
    const backend = getBackend(s.device);
    // Where the values are readable in place (CPU), they are gathered now, in one copy.
    if (backend.hostView) return Promise.resolve(gatherView(backend.hostView(s), this.shape, this.strides, this.offset, this.dtype));
    return backend.read(s).then((host) => gatherView(host, this.shape, this.strides, this.offset, this.dtype));
  }

  private readableStorage(op: string): Storage {
    const s = this.storageFor(op);
    if (s.symbolic) {
      throw new SinterError(
        op,
        `cannot read the values of ${this.describe()} while jit is tracing: the traced function runs on symbolic tensors, so its ops must not depend on tensor values (data-dependent control flow cannot be traced). Read values from the jitted function's results instead`,
      );
    }
    return s;
  }

  /** The values as nested arrays (a plain number or boolean for a 0-d tensor). */
  toArray(): Promise<NestedArray> {
    this.readableStorage('toArray');
    return this.data().then((flat) => this.nest(flat));
  }

  private nest(flat: HostArray): NestedArray {
    const bool = this.dtype === 'bool';
    const build = (d: number, at: number): [NestedArray, number] => {
      if (d === this.shape.length) return [bool ? flat[at] !== 0 : flat[at]!, at + 1];
      const out: NestedArray[] = [];
      for (let i = 0; i < this.shape[d]!; i++) {
        const [v, next] = build(d + 1, at);
        out.push(v);
        at = next;
      }
      return [out, at];
    };
    return build(0, 0)[0];
  }

  /** The single value of a one-element tensor. */
  item(): Promise<number> {
    if (this.numel() !== 1) throw new SinterError('item', `expected a tensor with one element, got shape ${fmtShape(this.shape)}`);
    this.readableStorage('item');
    return this.data().then((d) => d[0]!);
  }

  describe(): string {
    return `tensor(${this.dtype}, ${fmtShape(this.shape)})`;
  }
  toString(): string {
    return `Tensor(shape=${fmtShape(this.shape)}, dtype=${this.dtype}, device=${this._storage?.device ?? 'disposed'})`;
  }
}

export function isTensor(x: unknown): x is Tensor {
  return x instanceof Tensor;
}

/** Copies a strided view out of a flat host array into a new contiguous host array. */
export function gatherView(src: HostArray | Uint16Array, shape: readonly number[], strides: readonly number[], offset: number, dtype: DType): HostArray {
  // A CPU float16 storage holds binary16 bits: widened to float32 values as they are gathered.
  if (src instanceof Uint16Array) return gatherHalf(src, shape, strides, offset);
  const n = numel(shape);
  if (isContiguous(shape, strides)) {
    // Copied as bytes: V8 copies typed arrays out of shared memory (the CPU heap's) element by element, bytes by memmove.
    const out = allocHost(dtype, n), size = out.BYTES_PER_ELEMENT;
    new Uint8Array(out.buffer).set(new Uint8Array(src.buffer, src.byteOffset + offset * size, n * size));
    return out;
  }
  const out = allocHost(dtype, n);
  const offsets = stridedOffsets(shape, strides, offset);
  for (let i = 0; i < n; i++) out[i] = src[offsets[i]!]!;
  return out;
}
