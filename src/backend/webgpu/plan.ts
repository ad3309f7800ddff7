/// <reference types="@webgpu/types" />
import { SinterError } from '../../errors.js';
import type { WebGpuBackend, PreparedPass, PreparedProgram } from './backend.js';
import { throwFailed } from './backend.js';
import type { Check } from './check.js';
import { type ParamBinding, paramsGroup } from './batch.js';
import type { ReadyPipeline } from './pipelines.js';
import type { WebGpuStorage } from './storage.js';

/** How far a plan's pipeline compilation got: `done` of `total` distinct pipelines compiled. */
export interface CompileProgress {
  readonly done: number;
  readonly total: number;
}

/** Where a kernel's binding comes from: a storage the plan keeps (an intermediate's slot, a constant), or the call's input or output. */
export type PlanBinding = { readonly storage: WebGpuStorage } | { readonly input: number } | { readonly output: number };

/** One kernel of a plan: its program (from `backend.prepare`) and its inputs' then outputs' bindings. */
export interface PlanStep {
  readonly program: PreparedProgram;
  readonly bindings: readonly PlanBinding[];
}

type Resource = GPUBufferBinding | { readonly input: number } | { readonly output: number };

interface Dispatch {
  readonly step: number;
  readonly program: PreparedProgram;
  readonly pass: PreparedPass;
  readonly layout: GPUBindGroupLayout;
  /** Bindings in order; the call's inputs and outputs are filled in per call. */
  readonly resources: readonly Resource[];
  /** The bind group when no binding depends on the call. */
  group: GPUBindGroup | null;
  /**
   * Else the bind groups of the last calls' inputs and outputs, most recent first (at most
   * BIND_GROUP_RING): calls in flight at once each bring their own buffers, and reuse their groups.
   */
  readonly recent: { readonly buffers: GPUBuffer[]; readonly group: GPUBindGroup }[];
  /** Its status slot's index in the plan's status buffer, when it has device-side checks. */
  readonly slot: number | null;
  pipeline: ReadyPipeline | null;
  /** Its parameter block in the plan's parameter buffer, when its kernel has one. */
  readonly params: ParamBinding | null;
}

/** What one profiled call left to read: the kernels' timestamps. */
interface Timestamps {
  readonly querySet: GPUQuerySet;
  readonly resolve: GPUBuffer;
  /** Index of each step's pair of timestamps, or null for a step with no dispatch. */
  readonly pairOf: readonly (number | null)[];
}

/**
 * Bind groups kept per kernel for the call-dependent buffers: enough for a few calls in flight at once
 * (each with its own input and output buffers, which the pool hands out again in rotation).
 */
const BIND_GROUP_RING = 4;

/** What a plan holds outside tensors: released when a plan dropped without `dispose()` is collected. */
interface PlanBuffers {
  readonly pool: WebGpuBackend['pool'];
  readonly scratch: readonly GPUBuffer[];
  readonly own: readonly GPUBuffer[];
}
const collected = new FinalizationRegistry<PlanBuffers>(({ pool, scratch, own }) => {
  for (const b of scratch) pool.release(b);
  for (const b of own) b.destroy();
});

/**
 * A compiled graph's kernels on WebGPU, fixed for one input signature: the programs are generated,
 * scratch and status buffers allocated, and bind groups whose buffers do not change from call to
 * call (intermediates, constants, scratch) created once. Each call records every dispatch into one
 * command encoder (behind any eager work still queued) and submits it once; bind groups over the
 * call's inputs and outputs are kept in a small ring per kernel (reused while those buffers come
 * round again, as pooled inputs and outputs do). A call does not wait for the one before: several
 * can be in flight (`inFlight`), each with its own inputs and outputs, so the upload of one and the
 * readback of another overlap a third's kernels. They may share the intermediates' buffers because
 * the device runs one queue's submissions in order. Pipelines are created synchronously on the first
 * call unless `compile()` compiled them, in parallel, before; that call submits its work in pieces, one
 * before each new pipeline, so the device runs the kernels recorded so far while the next compiles.
 */
export class WebGpuPlan {
  private readonly dispatches: Dispatch[] = [];
  private readonly scratch: GPUBuffer[];
  private readonly status: GPUBuffer | null;
  /** The kernels' parameter blocks, written once: a plan's values are fixed when it is built. */
  private readonly params: GPUBuffer | null;
  /** Storages the plan reads on every call (constants, slots): a check on them fails the call. */
  private readonly fixed: readonly WebGpuStorage[];
  /** Every pipeline exists and passed its compile check. */
  private ready = false;
  private timestamps: Timestamps | null = null;
  private disposed = false;
  private running = 0;
  private peak = 0;

  constructor(
    private readonly backend: WebGpuBackend,
    private readonly steps: readonly PlanStep[],
  ) {
    const { device, pool, caps, storageUsage, batch } = backend;
    // Kernels run one after another, so scratch buffer i of every program can share one buffer.
    const scratchBytes: number[] = [];
    for (const { program } of steps) program.scratch.forEach((b, i) => (scratchBytes[i] = Math.max(scratchBytes[i] ?? 0, b)));
    this.scratch = scratchBytes.map((bytes) => pool.acquire(bytes, storageUsage, caps.limits.maxBufferSize).buffer);
    const checked = steps.reduce((a, s) => a + s.program.passes.filter((p) => p.kernel.checks).length, 0);
    this.status = checked > 0 ? device.createBuffer({ size: checked * batch.stride, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST, label: 'sinter plan status' }) : null;
    const blocks = steps.reduce((a, s) => a + s.program.passes.filter((p) => p.kernel.params).length, 0);
    this.params = blocks > 0 ? device.createBuffer({ size: blocks * batch.paramStride, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: 'sinter plan params' }) : null;
    const paramsBindGroup = this.params && paramsGroup(device, backend.pipelines.paramsLayout, this.params);
    const fixed = new Set<WebGpuStorage>();
    let slots = 0;
    let block = 0;
    steps.forEach(({ program, bindings }, step) => {
      const resources: Resource[] = [
        ...bindings.map((b) => {
          if (!('storage' in b)) return b;
          fixed.add(backend.owned('jit', b.storage, 'a tensor the jitted function captures (a weight or constant)'));
          return { buffer: b.storage.buffer };
        }),
        ...this.scratch.slice(0, program.scratch.length).map((buffer) => ({ buffer })),
      ];
      for (const pass of program.passes) {
        const slot = pass.kernel.checks ? slots++ : null;
        const all = slot === null ? resources : [...resources, { buffer: this.status!, offset: slot * batch.stride, size: 16 }];
        const layout = backend.layout(program, pass);
        let params: ParamBinding | null = null;
        if (pass.kernel.params) {
          params = { group: paramsBindGroup!, offset: block++ * batch.paramStride };
          device.queue.writeBuffer(this.params!, params.offset, pass.kernel.params);
        }
        const d: Dispatch = { step, program, pass, layout, resources: all, group: null, recent: [], slot, pipeline: null, params };
        if (all.every((r) => 'buffer' in r)) d.group = device.createBindGroup({ layout, entries: (all as GPUBufferBinding[]).map((resource, binding) => ({ binding, resource })) });
        this.dispatches.push(d);
      }
    });
    this.fixed = [...fixed];
    // A jitted function dropped without dispose() gives its scratch buffers back once collected.
    collected.register(this, { pool, scratch: this.scratch, own: [this.status, this.params].filter((b) => b !== null) }, this);
  }

  /**
   * One dispatch per distinct pipeline: kernels with the same source and bind group layout (the
   * pipeline cache's key; layouts are cached per binding count) share one pipeline.
   */
  private distinctPipelines(): Dispatch[] {
    const seen = new Map<GPUBindGroupLayout, Set<string>>();
    return this.dispatches.filter((d) => {
      let sources = seen.get(d.layout);
      if (!sources) seen.set(d.layout, (sources = new Set()));
      if (sources.has(d.pass.kernel.source)) return false;
      sources.add(d.pass.kernel.source);
      return true;
    });
  }

  /** How many distinct pipelines the plan's kernels use. */
  get pipelineCount(): number {
    return this.distinctPipelines().length;
  }

  /**
   * Compiles every pipeline the plan lacks with createComputePipelineAsync, all at once; rejects with
   * the first compile error. `onProgress` hears `{ done: 0, total }` first, then once per pipeline
   * whose compilation settled (ones already cached settle at once), in order of completion.
   */
  async compile(onProgress?: (progress: CompileProgress) => void): Promise<void> {
    const distinct = this.distinctPipelines();
    const total = distinct.length;
    let done = 0;
    onProgress?.({ done, total });
    const verdicts = await Promise.all(
      distinct.map((d) =>
        this.backend.compilePipeline(d.program, d.pass).then((verdict) => {
          onProgress?.({ done: ++done, total });
          return verdict;
        }),
      ),
    );
    const error = verdicts.find((e) => e !== null);
    if (error) throw error;
  }

  /**
   * Records every kernel for these inputs and outputs and submits them in one command buffer; the
   * outputs' checks cover the inputs', the device-side checks and, on a first call, the compile checks.
   * With `profile` (on a device with `timestamp-query`), each kernel gets a compute pass of its own
   * bracketed by timestamps, and the result resolves to each kernel's GPU time in ms once it ran.
   */
  run(inputs: readonly WebGpuStorage[], outputs: readonly WebGpuStorage[], profile = false): Promise<number[]> | null {
    const { backend } = this;
    const { batch, device } = backend;
    if (this.disposed) throw new SinterError('jit', 'this compiled plan was disposed');
    backend.usable('jit');
    inputs.forEach((s, i) => backend.owned('jit', s, `argument ${i}`));
    const deps = new Set<Check>();
    for (const s of [...inputs, ...this.fixed]) {
      throwFailed(s.checks);
      for (const c of s.checks) if (!c.settled) deps.add(c);
    }
    const timestamps = profile && device.features.has('timestamp-query') ? this.timestampQueries() : null;
    const cold = !this.ready;
    const compiling: Promise<SinterError | null>[] = [];
    if (cold) {
      // Pipelines in the cache first, so that a known compile error throws before anything is recorded; the others
      // are created as the loop below reaches them.
      for (const d of this.dispatches) d.pipeline = backend.hasPipeline(d.program, d.pass) ? backend.pipeline(d.program, d.pass) : null;
      // As for eager ops: kernels whose compile check may still run go in submits of their own (the queued eager
      // work first), so that a rejected one spoils only this call's outputs.
      batch.flush();
      device.pushErrorScope('validation');
    }
    /** Dispatches recorded since the last submit. */
    let recorded = 0;
    const checks: Check[] = [];
    const receivers: ((words: Uint32Array | null) => void)[] = [];
    let pass = timestamps ? null : batch.pass();
    let step = -1;
    for (const d of this.dispatches) {
      if (timestamps && d.step !== step) {
        const k = timestamps.pairOf[d.step]!;
        pass = batch.pass({ querySet: timestamps.querySet, beginningOfPassWriteIndex: 2 * k, endOfPassWriteIndex: 2 * k + 1 });
      }
      step = d.step;
      if (d.slot !== null) {
        const { check, receive } = backend.statusCheck(d.pass.label, d.pass.kernel.checks!);
        checks.push(check);
        receivers[d.slot] = receive;
      }
      if (cold) {
        if (!d.pipeline) {
          // A new pipeline is compiled now, on this thread: what is recorded so far is submitted first, so that the
          // device runs it meanwhile (on a first call, compilation overlaps execution instead of preceding it).
          if (recorded > 0 && !timestamps && !backend.hasPipeline(d.program, d.pass)) {
            batch.flush();
            pass = batch.pass();
            recorded = 0;
          }
          d.pipeline = backend.pipeline(d.program, d.pass);
        }
        if (d.pipeline.compiled) compiling.push(d.pipeline.compiled);
      }
      recorded++;
      pass!.setPipeline(d.pipeline!.pipeline);
      pass!.setBindGroup(0, this.bindGroup(d, inputs, outputs));
      if (d.params) pass!.setBindGroup(1, d.params.group, [d.params.offset]);
      const [x, y = 1, z = 1] = d.pass.kernel.workgroups;
      pass!.dispatchWorkgroups(x!, y, z);
    }
    const statusBytes = receivers.length * batch.stride;
    const staging = this.status ? backend.pool.acquire(statusBytes, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, device.limits.maxBufferSize).buffer : null;
    const readback = timestamps ? backend.pool.acquire(timestamps.resolve.size, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, device.limits.maxBufferSize).buffer : null;
    batch.flush((encoder) => {
      if (staging) {
        encoder.copyBufferToBuffer(this.status!, 0, staging, 0, statusBytes);
        encoder.clearBuffer(this.status!, 0, statusBytes);
      }
      if (timestamps && readback) {
        encoder.resolveQuerySet(timestamps.querySet, 0, timestamps.querySet.count, timestamps.resolve, 0);
        encoder.copyBufferToBuffer(timestamps.resolve, 0, readback, 0, timestamps.resolve.size);
      }
    });
    if (staging) batch.deliver(staging, statusBytes, receivers);
    // Nothing waits for this call: the next may be recorded, uploaded and submitted while it runs.
    this.peak = Math.max(this.peak, ++this.running);
    device.queue.onSubmittedWorkDone().then(
      () => this.running--,
      () => this.running--,
    );
    if (cold) {
      this.ready = compiling.length === 0;
      checks.push(backend.verdict('jit', compiling));
    }
    for (const s of outputs) s.checks = [...deps, ...checks];
    return timestamps && readback ? this.kernelTimes(timestamps, readback) : null;
  }

  private bindGroup(d: Dispatch, inputs: readonly WebGpuStorage[], outputs: readonly WebGpuStorage[]): GPUBindGroup {
    if (d.group) return d.group;
    const buffers = d.resources.flatMap((r) => ('input' in r ? [inputs[r.input]!.buffer] : 'output' in r ? [outputs[r.output]!.buffer] : []));
    const at = d.recent.findIndex((e) => e.buffers.every((b, i) => b === buffers[i]));
    if (at >= 0) {
      const hit = d.recent[at]!;
      if (at > 0) d.recent.splice(0, 0, ...d.recent.splice(at, 1));
      return hit.group;
    }
    let next = 0;
    const entries = d.resources.map((r, binding) => ({ binding, resource: 'buffer' in r ? r : { buffer: buffers[next++]! } }));
    const group = this.backend.device.createBindGroup({ layout: d.layout, entries });
    d.recent.unshift({ buffers, group });
    if (d.recent.length > BIND_GROUP_RING) d.recent.pop();
    return group;
  }

  /** Calls submitted whose device work has not finished yet. */
  get inFlight(): number {
    return this.running;
  }

  /** The most calls that were in flight at once. */
  get peakInFlight(): number {
    return this.peak;
  }

  private timestampQueries(): Timestamps {
    if (this.timestamps) return this.timestamps;
    const pairOf: (number | null)[] = this.steps.map(() => null);
    let pairs = 0;
    for (const d of this.dispatches) pairOf[d.step] ??= pairs++;
    // WebGPU allows 4096 queries per set: two per kernel.
    if (pairs > 2048) throw new SinterError('profile', `the plan has ${pairs} kernels; timing them needs ${2 * pairs} timestamp queries, more than one query set holds (4096)`);
    const { device } = this.backend;
    const count = Math.max(2, 2 * pairs);
    const querySet = device.createQuerySet({ type: 'timestamp', count, label: 'sinter plan timestamps' });
    const resolve = device.createBuffer({ size: count * 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC, label: 'sinter plan timestamps' });
    return (this.timestamps = { querySet, resolve, pairOf });
  }

  private async kernelTimes(timestamps: Timestamps, readback: GPUBuffer): Promise<number[]> {
    const bytes = timestamps.resolve.size;
    try {
      await readback.mapAsync(GPUMapMode.READ, 0, bytes);
    } catch (e) {
      this.backend.usable('profile');
      throw new SinterError('profile', `reading the kernels' timestamps back failed: ${(e as Error).message}`);
    }
    const ticks = new BigUint64Array(readback.getMappedRange(0, bytes).slice(0));
    readback.unmap();
    this.backend.pool.release(readback);
    // Timestamps are in nanoseconds (an end before its beginning, which some drivers give, counts as 0); a kernel with no dispatch took no time.
    return timestamps.pairOf.map((k) => (k === null ? 0 : Math.max(0, Number(ticks[2 * k + 1]! - ticks[2 * k]!) / 1e6)));
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    collected.unregister(this);
    for (const b of this.scratch) this.backend.pool.release(b);
    this.status?.destroy();
    this.params?.destroy();
    this.timestamps?.querySet.destroy();
    this.timestamps?.resolve.destroy();
  }
}
