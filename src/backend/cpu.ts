import { f16round } from '@petamoriken/float16';
import { type DType, type HostArray, allocHost, itemSize } from '../tensor/dtype.js';
import { noteAlloc, noteFree } from '../tensor/memory.js';
import type { Tensor } from '../tensor/tensor.js';
import type { CpuView, OpDef } from '../ops/op.js';
import type { Backend, Storage } from './backend.js';
import { kernelOverrides } from '../kernels/cpu/overrides.js';
import { hasSimd } from '../kernels/wasm/emitter.js';
import { wasmConv2d, wasmGemm } from '../kernels/wasm/linalg.js';
import { wasmMap } from '../kernels/wasm/map.js';
import { setThreads } from '../kernels/wasm/threads.js';
import { SinterError } from '../errors.js';
import { wasmLayerNorm, wasmSoftmax } from '../kernels/wasm/rows.js';
import type { Expr } from '../ops/expr.js';

/**
 * Which kernels the CPU backend runs: 'wasm', WebAssembly SIMD kernels generated at run time
 * (src/kernels/wasm/) where one exists for the operands, else the JavaScript kernel; or 'js', the
 * JavaScript kernels only (the reference path). 'wasm' needs SIMD128, checked by validating a module.
 */
export type CpuKernels = 'wasm' | 'js';

let kernels: CpuKernels = 'js';

/** Chooses the CPU kernels; returns the choice in effect ('js' when 'wasm' was asked for but this engine lacks SIMD128). */
export function setCpuKernels(kind: CpuKernels): CpuKernels {
  kernels = kind === 'wasm' && hasSimd() ? 'wasm' : 'js';
  const wasm = kernels === 'wasm';
  kernelOverrides.gemm = wasm ? wasmGemm : undefined;
  kernelOverrides.conv2d = wasm ? wasmConv2d : undefined;
  kernelOverrides.map = wasm ? wasmMap : undefined;
  kernelOverrides.softmax = wasm ? wasmSoftmax : undefined;
  kernelOverrides.blockNorm = wasm ? wasmLayerNorm : undefined;
  return kernels;
}

export function cpuKernels(): CpuKernels {
  return kernels;
}

/**
 * Sets how many threads the wasm kernels use, the calling one included (Node: worker_threads sharing
 * the kernels' WebAssembly memory; elsewhere one). Default: one per core, started when a kernel first
 * has enough work to share; SINTER_CPU_THREADS sets it from the environment.
 */
export function setCpuThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new SinterError('setCpuThreads', `threads must be a positive integer, got ${JSON.stringify(n)}`);
  setThreads(n);
}

// The defaults: WebAssembly unless SINTER_CPU_KERNELS=js asks for the reference path; SINTER_CPU_THREADS threads if set.
const env = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env ?? {};
setCpuKernels(env.SINTER_CPU_KERNELS === 'js' ? 'js' : 'wasm');
if (env.SINTER_CPU_THREADS) setCpuThreads(Number(env.SINTER_CPU_THREADS));

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
    const outs = outputs.map(cpuView), ins = inputs.map(cpuView);
    // The elementwise op's kernel description is its expression: rendered to wasm when it can be.
    if (!(op.name === 'map' && kernelOverrides.map?.((attrs as { expr: Expr }).expr, ins, outs[0]!))) op.cpu(ins, attrs, outs);
    // Kernels compute in double; float16 outputs are rounded here once for all of them.
    for (const o of outs) if (o.dtype === 'float16') for (let i = 0; i < o.data.length; i++) o.data[i] = f16round(o.data[i]!);
  },
};
