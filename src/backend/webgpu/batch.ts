/// <reference types="@webgpu/types" />
import { PARAM_BLOCK_BYTES } from '../../kernels/wgsl/params.js';
import type { BufferPool } from './pool.js';

/** The words a kernel's status binding holds (kernel.ts `checkBinding`): failed check (1-based, 0 none), value, position. */
export type StatusWords = Uint32Array;

/**
 * Eager dispatches recorded into one command encoder (one compute pass) and submitted lazily: at a
 * readback, before a queue write, or after `maxDispatches`, so a chain of ops pays one submit.
 * Dispatches with device-side checks each get a slot of one status buffer; a submit copies the
 * used slots out (and clears them) behind its dispatches and reports them once mapped. Kernels'
 * parameter blocks likewise share one uniform buffer, one block per dispatch at a dynamic offset,
 * written once per submit just before it (queue order keeps earlier submits on their own values).
 */

/** A dispatch's parameter block: the bind group of @group(1) and the block's dynamic offset. */
export interface ParamBinding {
  readonly group: GPUBindGroup;
  readonly offset: number;
}
export class CommandBatch {
  private encoder: GPUCommandEncoder | null = null;
  private computePass: GPUComputePassEncoder | null = null;
  /** Whether the open pass writes timestamps (then nothing else joins it). */
  private timed = false;
  private dispatches = 0;
  /** Command buffers submitted so far. */
  submits = 0;
  private status: GPUBuffer | null = null;
  /** Receivers of the slots used in this batch, slot k at byte k·stride. */
  private slots: ((words: StatusWords | null) => void)[] = [];
  /** Bytes between slots: storage bindings must start at the device's offset alignment. */
  readonly stride: number;
  /** Bytes between parameter blocks (a block, rounded up to the uniform offset alignment). */
  readonly paramStride: number;
  private params: { buffer: GPUBuffer; group: GPUBindGroup; host: Uint32Array<ArrayBuffer> } | null = null;
  /** Parameter blocks used in this batch. */
  private paramBlocks = 0;

  constructor(
    private readonly device: GPUDevice,
    private readonly pool: BufferPool,
    private readonly paramsLayout: () => GPUBindGroupLayout,
    private readonly maxDispatches = 64,
  ) {
    this.stride = Math.max(16, device.limits.minStorageBufferOffsetAlignment);
    this.paramStride = Math.max(PARAM_BLOCK_BYTES, device.limits.minUniformBufferOffsetAlignment);
  }

  /** The parameter block holding `words` for the next dispatch (at most `maxDispatches` per batch, as status slots). */
  paramSlot(words: Uint32Array): ParamBinding {
    if (!this.params) {
      const buffer = this.device.createBuffer({ size: this.maxDispatches * this.paramStride, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: 'sinter params' });
      const group = paramsGroup(this.device, this.paramsLayout(), buffer);
      this.params = { buffer, group, host: new Uint32Array((this.maxDispatches * this.paramStride) / 4) };
    }
    const offset = this.paramBlocks++ * this.paramStride;
    this.params.host.set(words, offset / 4);
    return { group: this.params.group, offset };
  }

  get pending(): boolean {
    return this.encoder !== null;
  }

  /**
   * A status slot (16 zeroed bytes) for the next dispatch; `receive` gets its words once the
   * submit that holds the dispatch has run (null if they could not be read: the device was lost).
   * A batch holds at most `maxDispatches` dispatches, so as many slots suffice.
   */
  statusSlot(receive: (words: StatusWords | null) => void): GPUBufferBinding {
    this.status ??= this.device.createBuffer({
      size: this.maxDispatches * this.stride,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      label: 'sinter status',
    });
    const offset = this.slots.length * this.stride;
    this.slots.push(receive);
    return { buffer: this.status, offset, size: 16 };
  }

  /**
   * The open compute pass, begun now if there is none. A pass with `timestampWrites` is always a new
   * one (the current pass ends), so that its timestamps bracket only what is recorded into it.
   * Dispatches recorded here directly (a compiled plan's) count toward no limit.
   */
  pass(timestampWrites?: GPUComputePassTimestampWrites): GPUComputePassEncoder {
    if (this.computePass && !timestampWrites && !this.timed) return this.computePass;
    this.computePass?.end();
    this.encoder ??= this.device.createCommandEncoder();
    this.timed = timestampWrites !== undefined;
    return (this.computePass = this.encoder.beginComputePass(timestampWrites ? { timestampWrites } : {}));
  }

  dispatch(pipeline: GPUComputePipeline, bindGroup: GPUBindGroup, workgroups: readonly number[], params?: ParamBinding): void {
    const pass = this.pass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    if (params) pass.setBindGroup(1, params.group, [params.offset]);
    pass.dispatchWorkgroups(workgroups[0]!, workgroups[1] ?? 1, workgroups[2] ?? 1);
    if (++this.dispatches >= this.maxDispatches) this.flush();
  }

  /** Submits what was recorded; `after` adds commands (copies) behind the dispatches in the same submit. */
  flush(after?: (encoder: GPUCommandEncoder) => void): void {
    if (!this.encoder && !after) return;
    const encoder = this.encoder ?? this.device.createCommandEncoder();
    this.computePass?.end();
    const slots = this.slots, bytes = slots.length * this.stride;
    let staging: GPUBuffer | null = null;
    if (slots.length > 0) {
      staging = this.pool.acquire(bytes, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, this.device.limits.maxBufferSize).buffer;
      encoder.copyBufferToBuffer(this.status!, 0, staging, 0, bytes);
      encoder.clearBuffer(this.status!, 0, bytes);
      this.slots = [];
    }
    after?.(encoder);
    if (this.paramBlocks > 0) {
      this.device.queue.writeBuffer(this.params!.buffer, 0, this.params!.host, 0, (this.paramBlocks * this.paramStride) / 4);
      this.paramBlocks = 0;
    }
    this.device.queue.submit([encoder.finish()]);
    this.submits++;
    this.encoder = this.computePass = null;
    this.dispatches = 0;
    if (staging) this.deliver(staging, bytes, slots);
  }

  /**
   * Once `staging` (a submitted copy of status slots, `stride` bytes apart) is mapped, gives slot k's
   * words to `slots[k]` (null to all if it cannot be read) and returns the staging buffer to the pool.
   */
  deliver(staging: GPUBuffer, bytes: number, slots: readonly ((words: StatusWords | null) => void)[]): void {
    staging.mapAsync(GPUMapMode.READ, 0, bytes).then(
      () => {
        const words = new Uint32Array(staging.getMappedRange(0, bytes).slice(0));
        staging.unmap();
        this.pool.release(staging);
        const w = this.stride / 4;
        slots.forEach((receive, k) => receive(words.subarray(k * w, k * w + 4)));
      },
      () => slots.forEach((receive) => receive(null)),
    );
  }
}

/** The bind group of @group(1) over `buffer`: one parameter block, placed by a dynamic offset. */
export function paramsGroup(device: GPUDevice, layout: GPUBindGroupLayout, buffer: GPUBuffer): GPUBindGroup {
  return device.createBindGroup({ layout, label: 'sinter params', entries: [{ binding: 0, resource: { buffer, offset: 0, size: PARAM_BLOCK_BYTES } }] });
}
