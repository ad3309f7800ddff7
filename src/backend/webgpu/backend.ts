/// <reference types="@webgpu/types" />
import { SinterError } from '../../errors.js';
import type { GpuView, WebGpuCaps } from '../../kernels/wgsl/kernel.js';
import type { OpDef } from '../../ops/op.js';
import type { DType, HostArray } from '../../tensor/dtype.js';
import { noteAlloc, noteFree, noteReserved } from '../../tensor/memory.js';
import type { Tensor } from '../../tensor/tensor.js';
import type { Backend, Storage } from '../backend.js';
import type { OpenedDevice } from './adapter.js';
import { CommandBatch } from './batch.js';
import { deviceBytes, packHost, unpackDevice } from './pack.js';
import { PipelineCache } from './pipelines.js';
import { BufferPool } from './pool.js';
import { WebGpuStorage } from './storage.js';

function layoutOf(t: Tensor): GpuView {
  return { shape: t.shape, strides: t.strides, offset: t.offset, dtype: t.dtype };
}

/**
 * The WebGPU backend on one device: pooled storages, ops run as the WGSL kernels their OpDefs
 * generate, dispatches batched into few submits, readback through pooled staging buffers.
 * Failures (a kernel the compiler rejects, a lost device) become SinterErrors naming the op and
 * the adapter: at once when known, else at the next readback.
 */
export class WebGpuBackend implements Backend {
  readonly name = 'webgpu' as const;
  readonly device: GPUDevice;
  readonly caps: WebGpuCaps;
  /** The adapter, for messages: "google swiftshader (SwiftShader driver 5.0.0)". */
  readonly adapter: string;
  /** Which adapter was chosen and why, in one line. */
  readonly line: string;
  readonly pool: BufferPool;
  readonly batch: CommandBatch;
  private readonly pipelines: PipelineCache;
  /** Dawn's instance: dropping it could end the device while tensors live. */
  private readonly gpu: GPU;
  private readonly storageUsage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  private readonly readUsage = GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST;
  private lost: string | null = null;
  /** Checks of new kernels still running; reads wait for them so failures are not missed. */
  private readonly checks = new Set<Promise<void>>();
  /** A failure no read has reported yet: the next read throws it (reading the failed op's output counts). */
  private failure: SinterError | null = null;

  constructor(opened: OpenedDevice) {
    this.device = opened.device;
    this.caps = opened.caps;
    this.adapter = opened.adapter;
    this.line = opened.line;
    this.gpu = opened.gpu;
    this.pool = new BufferPool(this.device, (bytes) => noteReserved('webgpu', bytes));
    this.batch = new CommandBatch(this.device);
    this.pipelines = new PipelineCache(this.device, `webgpu (${this.adapter})`);
    void this.device.lost.then((info) => {
      const why = `${info.reason}${info.message ? `: ${info.message}` : ''}`;
      this.lost = `the WebGPU device (${this.adapter}) was lost (${why}); call \`await init({ device: 'webgpu' })\` for a new one`;
    });
    this.device.onuncapturederror = (ev) => {
      this.failure ??= new SinterError('webgpu', `${ev.error.message} (on ${this.adapter})`);
    };
  }

  get isLost(): boolean {
    return this.lost !== null;
  }

  /** Throws a SinterError naming `op` when the device is lost. */
  private usable(op: string): void {
    if (this.lost) throw new SinterError(op, this.lost);
  }

  alloc(dtype: DType, length: number): WebGpuStorage {
    return this.allocate(dtype, length).storage;
  }

  private allocate(dtype: DType, length: number): { storage: WebGpuStorage; reused: boolean } {
    const bytes = deviceBytes(dtype, length);
    const max = this.caps.limits.maxStorageBufferBindingSize;
    if (bytes > max) throw new SinterError('alloc', `${length} ${dtype} elements need ${bytes} bytes, more than the ${max} bytes ${this.adapter} can bind`);
    const { buffer, reused } = this.pool.acquire(bytes, this.storageUsage, this.caps.limits.maxBufferSize);
    const storage = new WebGpuStorage(dtype, length, buffer);
    noteAlloc(storage);
    return { storage, reused };
  }

  fromHost(dtype: DType, data: HostArray): WebGpuStorage {
    this.usable('webgpu');
    const { storage, reused } = this.allocate(dtype, data.length);
    if (storage.byteLength === 0) return storage;
    // Queued kernels may still read a reused buffer: they must run before the write lands.
    if (reused && this.batch.pending) this.batch.flush();
    this.device.queue.writeBuffer(storage.buffer, 0, packHost(dtype, data));
    return storage;
  }

  release(storage: Storage): void {
    noteFree(storage);
    this.pool.release((storage as WebGpuStorage).buffer);
  }

  async read(storage: Storage): Promise<HostArray> {
    const s = storage as WebGpuStorage;
    this.usable('data');
    if (s.error) throw s.error;
    let bytes = new Uint8Array(0);
    if (s.byteLength > 0) {
      const staging = this.pool.acquire(s.byteLength, this.readUsage, this.caps.limits.maxBufferSize).buffer;
      this.batch.flush((encoder) => encoder.copyBufferToBuffer(s.buffer, 0, staging, 0, s.byteLength));
      try {
        await staging.mapAsync(GPUMapMode.READ, 0, s.byteLength);
      } catch (e) {
        this.usable('data');
        throw new SinterError('data', `reading a tensor back from ${this.adapter} failed: ${(e as Error).message}`);
      }
      bytes = new Uint8Array(staging.getMappedRange(0, s.byteLength).slice(0));
      staging.unmap();
      this.pool.release(staging);
    }
    await Promise.all(this.checks);
    const failure = this.failure;
    this.failure = null;
    if (s.error) throw s.error;
    if (failure) throw failure;
    return unpackDevice(s.dtype, bytes, s.length);
  }

  run<A>(op: OpDef<A>, inputs: readonly Tensor[], attrs: A, outputs: readonly Tensor[]): void {
    if (!op.webgpu) throw new SinterError(op.name, `no WebGPU kernel for ${op.name} yet; run it on the CPU (\`await x.toDevice('cpu')\`)`);
    const kernel = op.webgpu(inputs.map(layoutOf), attrs, outputs.map(layoutOf), this.caps);
    const label = kernel.label ?? op.name;
    this.usable(label);
    const ins = inputs.map((t) => t.storage as WebGpuStorage);
    const outs = outputs.map((t) => t.storage as WebGpuStorage);
    for (const s of ins) if (s.error) throw s.error;
    const max = this.caps.limits.maxStorageBuffersPerShaderStage;
    if (ins.length + outs.length > max) throw new SinterError(label, `needs ${ins.length + outs.length} storage buffers but ${this.adapter} allows ${max} per kernel`);
    if (kernel.workgroups.some((w) => w === 0)) return;
    const { pipeline, layout, compiled } = this.pipelines.get(kernel.source, ins.length, outs.length, label);
    const bindGroup = this.device.createBindGroup({ layout, entries: [...ins, ...outs].map((s, i) => ({ binding: i, resource: { buffer: s.buffer } })) });
    if (!compiled) {
      this.batch.dispatch(pipeline, bindGroup, kernel.workgroups);
      return;
    }
    // A kernel whose compile check is still running is dispatched in a submit of its own, so that
    // if it is rejected the other queued work still runs; its outputs then carry the error.
    this.batch.flush();
    this.device.pushErrorScope('validation');
    this.batch.dispatch(pipeline, bindGroup, kernel.workgroups);
    this.batch.flush();
    const dispatched = this.device.popErrorScope().catch(() => null);
    const check = Promise.all([compiled, dispatched]).then(([compileError, dispatchError]) => {
      const error = compileError ?? (dispatchError && new SinterError(label, `the dispatch was rejected on ${this.adapter}: ${dispatchError.message}`));
      if (!error) return;
      for (const s of outs) s.error = error;
      this.failure ??= error;
    });
    this.checks.add(check);
    void check.finally(() => this.checks.delete(check));
  }
}
