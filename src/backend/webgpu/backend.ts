/// <reference types="@webgpu/types" />
import { SinterError } from '../../errors.js';
import type { GpuView, WebGpuCaps, WgslKernel, WgslProgram } from '../../kernels/wgsl/kernel.js';
import type { OpDef } from '../../ops/op.js';
import type { DType, HostArray } from '../../tensor/dtype.js';
import { noteAlloc, noteFree, noteReserved } from '../../tensor/memory.js';
import type { Tensor } from '../../tensor/tensor.js';
import type { Backend, Storage } from '../backend.js';
import type { OpenedDevice } from './adapter.js';
import { CommandBatch, type StatusWords } from './batch.js';
import { Check } from './check.js';
import { deviceBytes, packHost, unpackDevice } from './pack.js';
import { PipelineCache, type ReadyPipeline } from './pipelines.js';
import { BufferPool } from './pool.js';
import { WebGpuStorage } from './storage.js';

/** A pass of a prepared program and the label its errors carry. */
export interface PreparedPass {
  readonly kernel: WgslKernel;
  readonly label: string;
}

/** An op's WGSL program for fixed layouts, checked against the device's limits; pipelines are made apart. */
export interface PreparedProgram {
  readonly label: string;
  /** Read-only bindings (the inputs). */
  readonly inputs: number;
  /** Read-write bindings before the status one: outputs, then scratch. */
  readonly writable: number;
  /** Bytes of each scratch buffer. */
  readonly scratch: readonly number[];
  readonly passes: readonly PreparedPass[];
}

/** Devices opened in this process so far: each backend's `generation`. */
let opened = 0;

function layoutOf(t: Tensor): GpuView {
  return { shape: t.shape, strides: t.strides, offset: t.offset, dtype: t.dtype };
}

/**
 * The WebGPU backend on one device: pooled storages, ops run as the WGSL kernels their OpDefs
 * generate, dispatches batched into few submits, readback through pooled staging buffers.
 * Failures (a kernel the compiler rejects, a device-side check that fails, a lost device) become
 * SinterErrors naming the op and the adapter: at once when known, else when a result that depends
 * on the failed kernel is read back.
 */
export class WebGpuBackend implements Backend {
  readonly name = 'webgpu' as const;
  /**
   * Which device this is among those opened in this process (1, 2, … after losses): what a compiled
   * plan records, so that it rebuilds on the device that replaced its own.
   */
  readonly generation = ++opened;
  readonly device: GPUDevice;
  /** A software adapter (SwiftShader…): `init('auto')` prefers the CPU backend to it. */
  readonly software: boolean;
  readonly caps: WebGpuCaps;
  /** The adapter, for messages: "google swiftshader (SwiftShader driver 5.0.0)". */
  readonly adapter: string;
  /** Which adapter was chosen and why, in one line. */
  readonly line: string;
  readonly pool: BufferPool;
  readonly batch: CommandBatch;
  readonly pipelines: PipelineCache;
  /** Dawn's instance: dropping it could end the device while tensors live. */
  private readonly gpu: GPU;
  readonly storageUsage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  private readonly readUsage = GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST;
  private lost: string | null = null;
  /** An error the device raised outside any check (uncaptured) that no read has reported yet: the next read throws it. */
  private failure: SinterError | null = null;

  constructor(opened: OpenedDevice) {
    this.device = opened.device;
    this.caps = opened.caps;
    this.adapter = opened.adapter;
    this.line = opened.line;
    this.gpu = opened.gpu;
    this.software = opened.software;
    // Idle buffers may be named by commands recorded but not submitted: those go first (not on a lost device: nothing runs there).
    this.pool = new BufferPool(this.device, (bytes) => noteReserved('webgpu', bytes), () => {
      if (this.lost === null) this.batch.flush();
    });
    this.pipelines = new PipelineCache(this.device, `webgpu (${this.adapter})`);
    this.batch = new CommandBatch(this.device, this.pool, () => this.pipelines.paramsLayout);
    void this.device.lost.then((info) => {
      const why = `${info.reason}${info.message ? `: ${info.message}` : ''}`;
      this.lost =
        `the WebGPU device (${this.adapter}) was lost (${why}), and everything on it with it: tensors, compiled plans, uploaded weights. ` +
        "`await init({ device: 'webgpu' })` opens a new device; then create the tensors again (from host data, or by loading the model or its weights again). " +
        'Jitted functions and ONNX models rebuild on the new device by themselves, but not the tensors they were given or captured; read values you must keep with `await t.data()` while the device works';
      // Nothing on a lost device can be used again: its pooled buffers are let go at once.
      this.pool.close();
    });
    this.device.onuncapturederror = (ev) => {
      this.failure ??= new SinterError('webgpu', `${ev.error.message} (on ${this.adapter})`);
    };
  }

  get isLost(): boolean {
    return this.lost !== null;
  }

  /** Throws a SinterError naming `op` when the device is lost. */
  usable(op: string): void {
    if (this.lost) throw new SinterError(op, this.lost);
  }

  /**
   * Lets a destroyed device report its loss: Dawn resolves `device.lost` from its event loop, so a
   * device destroyed a moment ago would otherwise still look usable to `init`.
   */
  async settle(): Promise<void> {
    if (this.lost) return;
    await Promise.race([this.device.lost, this.device.queue.onSubmittedWorkDone().catch(() => undefined)]);
    await new Promise((resolve) => setTimeout(resolve, 0));
  }

  /**
   * `s` itself when this backend owns it; else (it was made on a device that was lost before this
   * one was opened) a SinterError naming `op` and `what` says its values are gone and what to do.
   */
  owned(op: string, s: Storage, what = 'a tensor'): WebGpuStorage {
    const w = s as WebGpuStorage;
    if (w.owner === this) return w;
    throw new SinterError(
      op,
      `${what} lives on WebGPU device #${w.owner.generation} (${w.owner.adapter}), which was lost; device #${this.generation} has been opened since, and the values on the lost one are gone. ` +
        'Create the tensor again on the current device (from host data, or by loading the model or its weights again); to keep values across a device loss, read them with `await t.data()` before it',
    );
  }

  alloc(dtype: DType, length: number): WebGpuStorage {
    return this.allocate(dtype, length).storage;
  }

  private allocate(dtype: DType, length: number): { storage: WebGpuStorage; reused: boolean } {
    const bytes = deviceBytes(dtype, length);
    const max = this.caps.limits.maxStorageBufferBindingSize;
    if (bytes > max) throw new SinterError('alloc', `${length} ${dtype} elements need ${bytes} bytes, more than the ${max} bytes ${this.adapter} can bind`);
    const { buffer, reused } = this.pool.acquire(bytes, this.storageUsage, this.caps.limits.maxBufferSize);
    const storage = new WebGpuStorage(dtype, length, buffer, this);
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

  async synchronize(): Promise<void> {
    this.batch.flush();
    await this.device.queue.onSubmittedWorkDone();
  }

  release(storage: Storage): void {
    const s = storage as WebGpuStorage;
    // A storage of a lost device (disposed after `init` replaced it) goes back to its own backend.
    if (s.owner !== this) return s.owner.release(s);
    noteFree(s);
    this.pool.release(s.buffer);
  }

  /** Throws at once (not as a rejection) for a storage of a device lost and replaced since: that is misuse, not a failure of the work. */
  read(storage: Storage): Promise<HostArray> {
    return this.readBack(this.owned('data', storage, 'the tensor'));
  }

  private async readBack(s: WebGpuStorage): Promise<HostArray> {
    this.usable('data');
    throwFailed(s.checks);
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
    } else {
      this.batch.flush(); // the checks of queued kernels report once submitted
    }
    await Promise.all(s.checks.map((c) => c.done));
    throwFailed(s.checks);
    const failure = this.failure;
    this.failure = null;
    if (failure) throw failure;
    return unpackDevice(s.dtype, bytes, s.length);
  }

  /**
   * The WGSL program `op` generates for these layouts, checked against the device's limits
   * (storage buffers per kernel, scratch sizes); passes with no workgroups are left out.
   */
  prepare<A>(op: OpDef<A>, inputs: readonly GpuView[], attrs: A, outputs: readonly GpuView[]): PreparedProgram {
    if (!op.webgpu) throw new SinterError(op.name, `no WebGPU kernel for ${op.name} yet; run it on the CPU (\`await x.toDevice('cpu')\`)`);
    const form = op.webgpu(inputs, attrs, outputs, this.caps);
    const program: WgslProgram = 'passes' in form ? form : { scratch: [], passes: [form], label: form.label };
    const label = program.label ?? op.name;
    this.usable(label);
    const limits = this.caps.limits;
    const writable = outputs.length + program.scratch.length;
    for (const k of program.passes) {
      const n = inputs.length + writable + (k.checks ? 1 : 0);
      if (n > limits.maxStorageBuffersPerShaderStage) {
        throw new SinterError(k.label ?? label, `needs ${n} storage buffers but ${this.adapter} allows ${limits.maxStorageBuffersPerShaderStage} per kernel`);
      }
    }
    for (const { bytes } of program.scratch) {
      if (bytes > limits.maxStorageBufferBindingSize) throw new SinterError(label, `needs a scratch buffer of ${bytes} bytes, more than the ${limits.maxStorageBufferBindingSize} bytes ${this.adapter} can bind`);
    }
    const passes = program.passes.filter((k) => !k.workgroups.some((w) => w === 0)).map((kernel) => ({ kernel, label: kernel.label ?? label }));
    return { label, inputs: inputs.length, writable, scratch: program.scratch.map((s) => s.bytes), passes };
  }

  /** The pipeline of a prepared pass, created now if it does not exist (see PipelineCache.get). */
  pipeline(program: PreparedProgram, pass: PreparedPass): ReadyPipeline {
    return this.pipelines.get(pass.kernel.source, program.inputs, program.writable + (pass.kernel.checks ? 1 : 0), pass.label);
  }

  /** Whether the pipeline of a prepared pass is cached already (created, or being compiled asynchronously). */
  hasPipeline(program: PreparedProgram, pass: PreparedPass): boolean {
    return this.pipelines.has(pass.kernel.source, program.inputs, program.writable + (pass.kernel.checks ? 1 : 0));
  }

  /** The bind group layout of a prepared pass's pipeline. */
  layout(program: PreparedProgram, pass: PreparedPass): GPUBindGroupLayout {
    return this.pipelines.layout(program.inputs, program.writable + (pass.kernel.checks ? 1 : 0));
  }

  /** Compiles the pipeline of a prepared pass asynchronously (see PipelineCache.compile). */
  compilePipeline(program: PreparedProgram, pass: PreparedPass): Promise<SinterError | null> {
    return this.pipelines.compile(pass.kernel.source, program.inputs, program.writable + (pass.kernel.checks ? 1 : 0), pass.label);
  }

  run<A>(op: OpDef<A>, inputs: readonly Tensor[], attrs: A, outputs: readonly Tensor[]): void {
    const program = this.prepare(op, inputs.map(layoutOf), attrs, outputs.map(layoutOf));
    const ins = inputs.map((t, i) => this.owned(program.label, t.storage, `input ${i} (${t.describe()})`));
    const outs = outputs.map((t) => t.storage as WebGpuStorage);
    // The outputs depend on the inputs' checks that have not passed yet; one that failed fails this op now.
    const deps = new Set<Check>();
    for (const s of ins) {
      throwFailed(s.checks);
      for (const c of s.checks) if (!c.settled) deps.add(c);
    }
    const passes = program.passes.map((p) => {
      const { pipeline, layout, compiled } = this.pipeline(program, p);
      return { ...p, pipeline, layout, compiled };
    });
    const checks: Check[] = [];
    if (passes.length > 0) {
      const compiling = passes.flatMap((p) => (p.compiled ? [p.compiled] : []));
      // Kernels whose compile check is still running are dispatched in a submit of their own, so
      // that if one is rejected the other queued work still runs; the outputs then carry the error.
      if (compiling.length > 0) {
        this.batch.flush();
        this.device.pushErrorScope('validation');
      }
      const limits = this.caps.limits;
      const scratch = program.scratch.map((bytes) => this.pool.acquire(bytes, this.storageUsage, limits.maxBufferSize).buffer);
      const buffers = [...ins.map((s) => s.buffer), ...outs.map((s) => s.buffer), ...scratch];
      for (const p of passes) {
        const entries: GPUBindGroupEntry[] = buffers.map((buffer, i) => ({ binding: i, resource: { buffer } }));
        if (p.kernel.checks) {
          const { check, receive } = this.statusCheck(p.label, p.kernel.checks);
          checks.push(check);
          entries.push({ binding: buffers.length, resource: this.batch.statusSlot(receive) });
        }
        const params = p.kernel.params ? this.batch.paramSlot(p.kernel.params) : undefined;
        this.batch.dispatch(p.pipeline, this.device.createBindGroup({ layout: p.layout, entries }), p.kernel.workgroups, params);
      }
      // Later work that reuses them is queued after these dispatches (uploads flush first).
      for (const b of scratch) this.pool.release(b);
      if (compiling.length > 0) {
        this.batch.flush();
        checks.push(this.verdict(program.label, compiling));
      }
    }
    for (const s of outs) s.checks = [...deps, ...checks];
  }

  /**
   * The check of work dispatched inside a validation error scope (pushed by the caller, popped
   * here) with pipelines whose compile checks were still running: the first compile error, else
   * the dispatch's validation error.
   */
  verdict(label: string, compiling: readonly Promise<SinterError | null>[]): Check {
    const dispatched = this.device.popErrorScope().catch(() => null);
    return new Check(
      Promise.all([Promise.all(compiling), dispatched]).then(
        ([compileErrors, dispatchError]) =>
          compileErrors.find((e) => e !== null) ?? (dispatchError && new SinterError(label, `the dispatch was rejected on ${this.adapter}: ${dispatchError.message}`)),
      ),
    );
  }

  /** The Check of a dispatch with device-side checks, and the receiver of its status words: it fails with the filled-in message of the check that failed. */
  statusCheck(label: string, messages: readonly string[]): { check: Check; receive: (words: StatusWords | null) => void } {
    let receive!: (words: StatusWords | null) => void;
    const words = new Promise<StatusWords | null>((resolve) => (receive = resolve));
    const check = new Check(words.then((w) => {
      if (!w || w[0] === 0) return null;
      const template = messages[w[0]! - 1] ?? `device-side check ${w[0]} failed (the kernel declares ${messages.length})`;
      return new SinterError(label, template.replaceAll('{value}', String(w[1]! | 0)).replaceAll('{at}', String(w[2])));
    }));
    return { check, receive };
  }
}

/** Throws the first failed check. */
export function throwFailed(checks: readonly Check[]): void {
  for (const c of checks) if (c.error) throw c.error;
}
