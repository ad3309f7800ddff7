/// <reference types="@webgpu/types" />
import { SinterError } from '../../errors.js';

interface Entry {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  /** The compile check while it runs (null after). */
  compiled: Promise<SinterError | null> | null;
  /** Set once the compile check found an error: later uses throw it at once. */
  error: SinterError | null;
}

/**
 * Compute pipelines keyed by their WGSL source and bindings (shapes are baked in, so equal sources
 * are equal kernels). Compilation is checked asynchronously through an error scope: a new pipeline comes
 * with `compiled`, which resolves to null or to a SinterError naming the op and device with the
 * compiler's messages (from getCompilationInfo).
 */
export class PipelineCache {
  private readonly entries = new Map<string, Entry>();
  private readonly layouts = new Map<string, GPUBindGroupLayout>();

  constructor(
    private readonly device: GPUDevice,
    private readonly deviceName: string,
  ) {}

  /**
   * The pipeline for `source` with `inputs` read-only and `outputs` read-write storage bindings;
   * `compiled` is set while its compile check runs (so callers can keep it from spoiling others).
   */
  get(source: string, inputs: number, outputs: number, label: string): Readonly<Omit<Entry, 'error'>> {
    // A module need not declare every binding (a pass of a program may leave some out), so equal
    // sources can need different layouts.
    const key = `${inputs}:${outputs}\n${source}`;
    const hit = this.entries.get(key);
    if (hit) {
      if (hit.error) throw hit.error;
      return hit;
    }
    const layout = this.layout(inputs, outputs);
    this.device.pushErrorScope('validation');
    const module = this.device.createShaderModule({ code: source, label });
    const pipeline = this.device.createComputePipeline({
      label,
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: 'main' },
    });
    const entry: Entry = { pipeline, layout, compiled: null, error: null };
    this.entries.set(key, entry);
    const compiled = this.device.popErrorScope().then(async (err) => {
      entry.compiled = null;
      if (!err) return null;
      const info = await module.getCompilationInfo().catch(() => null);
      const messages = (info?.messages ?? []).filter((m) => m.type === 'error').map((m) => `line ${m.lineNum}:${m.linePos}: ${m.message}`);
      entry.error = new SinterError(label, `the WGSL kernel was rejected on ${this.deviceName}: ${messages.length ? messages.join('; ') : err.message}`);
      return entry.error;
    }, () => (entry.compiled = null)); // a lost device is reported by the backend, not as a compile error
    entry.compiled = compiled;
    return entry;
  }

  private layout(inputs: number, outputs: number): GPUBindGroupLayout {
    const key = `${inputs}:${outputs}`;
    let layout = this.layouts.get(key);
    if (!layout) {
      const entries: GPUBindGroupLayoutEntry[] = Array.from({ length: inputs + outputs }, (_, i) => ({
        binding: i,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: i < inputs ? 'read-only-storage' : 'storage' },
      }));
      layout = this.device.createBindGroupLayout({ entries, label: `sinter ${key}` });
      this.layouts.set(key, layout);
    }
    return layout;
  }
}
