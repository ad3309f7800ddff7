/// <reference types="@webgpu/types" />
/**
 * Eager dispatches recorded into one command encoder (one compute pass) and submitted lazily: at a
 * readback, before a queue write, or after `maxDispatches`, so a chain of ops pays one submit.
 */
export class CommandBatch {
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private dispatches = 0;
  /** Command buffers submitted so far. */
  submits = 0;

  constructor(
    private readonly device: GPUDevice,
    private readonly maxDispatches = 64,
  ) {}

  get pending(): boolean {
    return this.encoder !== null;
  }

  dispatch(pipeline: GPUComputePipeline, bindGroup: GPUBindGroup, workgroups: readonly number[]): void {
    if (!this.pass) {
      this.encoder = this.device.createCommandEncoder();
      this.pass = this.encoder.beginComputePass();
    }
    this.pass.setPipeline(pipeline);
    this.pass.setBindGroup(0, bindGroup);
    this.pass.dispatchWorkgroups(workgroups[0]!, workgroups[1] ?? 1, workgroups[2] ?? 1);
    if (++this.dispatches >= this.maxDispatches) this.flush();
  }

  /** Submits what was recorded; `after` adds commands (copies) behind the dispatches in the same submit. */
  flush(after?: (encoder: GPUCommandEncoder) => void): void {
    if (!this.encoder && !after) return;
    const encoder = this.encoder ?? this.device.createCommandEncoder();
    this.pass?.end();
    after?.(encoder);
    this.device.queue.submit([encoder.finish()]);
    this.submits++;
    this.encoder = this.pass = null;
    this.dispatches = 0;
  }
}
