import { f16round } from '@petamoriken/float16';
import { type DType, type HostArray, allocHost, itemSize } from '../tensor/dtype.js';
import { noteAlloc, noteFree } from '../tensor/memory.js';
import type { Tensor } from '../tensor/tensor.js';
import type { CpuView, OpDef } from '../ops/op.js';
import type { Backend, Storage } from './backend.js';

export class CpuStorage implements Storage {
  readonly device = 'cpu' as const;
  refs = 0;
  constructor(
    readonly dtype: DType,
    readonly data: HostArray,
  ) {}
  get length(): number {
    return this.data.length;
  }
  get byteLength(): number {
    return this.data.length * itemSize(this.dtype);
  }
}

/** A CPU tensor as kernels see it. */
export function cpuView(t: Tensor): CpuView {
  const s = t.storage as CpuStorage;
  return { data: s.data, shape: t.shape, strides: t.strides, offset: t.offset, dtype: t.dtype };
}

export const cpuBackend: Backend = {
  name: 'cpu',
  fromHost(dtype, data) {
    const s = new CpuStorage(dtype, data);
    noteAlloc(s);
    return s;
  },
  alloc(dtype, length) {
    return this.fromHost(dtype, allocHost(dtype, length));
  },
  async read(storage) {
    return (storage as CpuStorage).data;
  },
  async synchronize() {
    // CPU kernels run synchronously: nothing is ever queued.
  },
  release(storage) {
    noteFree(storage);
  },
  run<A>(op: OpDef<A>, inputs: readonly Tensor[], attrs: A, outputs: readonly Tensor[]) {
    const outs = outputs.map(cpuView);
    op.cpu(inputs.map(cpuView), attrs, outs);
    // Kernels compute in double; float16 outputs are rounded here once for all of them.
    for (const o of outs) if (o.dtype === 'float16') for (let i = 0; i < o.data.length; i++) o.data[i] = f16round(o.data[i]!);
  },
};
