/// <reference types="@webgpu/types" />
import { SinterError } from '../../errors.js';
import { type CacheStats, LruCache } from '../../lru.js';
import { usesParams } from '../../kernels/wgsl/params.js';

interface Entry {
  /** Null while only an asynchronous compile is under way. */
  pipeline: GPUComputePipeline | null;
  layout: GPUBindGroupLayout;
  module: GPUShaderModule;
  label: string;
  /** The compile verdict while it is unknown (null after). */
  compiled: Promise<SinterError | null> | null;
  /** Set once the compile check found an error: later uses throw it at once. */
  error: SinterError | null;
  /** The kernel reads per-call values from the uniform block in @group(1) (see ../../kernels/wgsl/params.ts). */
  params: boolean;
}

/** A pipeline ready to dispatch, and its compile check while that runs. */
export interface ReadyPipeline {
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
  readonly compiled: Promise<SinterError | null> | null;
}

/** What a pipeline cache holds and has done, for `memory()`. */
export type PipelineStats = CacheStats;

/** Pipelines a cache holds by default (see `setCacheLimits`). */
export const DEFAULT_PIPELINE_CACHE_SIZE = 512;

/**
 * Compute pipelines keyed by their WGSL source and bindings (per-call values such as scalars and view
 * offsets, and the sizes of GEMM, conv and elementwise kernels, arrive in a uniform block, so equal sources
 * are equal kernels).
 * The cache is an LRU of `capacity` entries: a dropped pipeline is only compiled again when used
 * again (a compiled plan keeps its own pipelines, so plans never recompile). `get` creates one synchronously and checks it asynchronously through an error
 * scope: a new pipeline comes with `compiled`, which resolves to null or to a SinterError naming the
 * op and device with the compiler's messages (from getCompilationInfo). `compile` creates one with
 * createComputePipelineAsync, so that many compile in parallel (in browsers, off the page's thread).
 */
export class PipelineCache {
  private readonly entries = new LruCache<string, Entry>(DEFAULT_PIPELINE_CACHE_SIZE);
  private readonly layouts = new Map<string, GPUBindGroupLayout>();
  private readonly pipelineLayouts = new Map<string, GPUPipelineLayout>();

  constructor(
    private readonly device: GPUDevice,
    private readonly deviceName: string,
  ) {}

  /**
   * The pipeline for `source` with `inputs` read-only and `outputs` read-write storage bindings;
   * `compiled` is set while its compile check runs (so callers can keep it from spoiling others).
   * One whose asynchronous compile is still under way is created synchronously now: the caller needs it.
   */
  get(source: string, inputs: number, outputs: number, label: string): ReadyPipeline {
    const key = this.key(source, inputs, outputs);
    const hit = this.entries.get(key);
    if (hit) {
      if (hit.error) throw hit.error;
      if (!hit.pipeline) this.createNow(hit);
      return hit as ReadyPipeline;
    }
    const entry = this.entry(key, source, inputs, outputs, label);
    this.createNow(entry);
    return entry as ReadyPipeline;
  }

  /**
   * Compiles the pipeline for `source` asynchronously unless it exists or is being compiled;
   * resolves when it is ready, to null or to the SinterError that rejected it.
   */
  compile(source: string, inputs: number, outputs: number, label: string): Promise<SinterError | null> {
    const key = this.key(source, inputs, outputs);
    const hit = this.entries.get(key);
    if (hit) return Promise.resolve(hit.error ?? hit.compiled ?? null);
    const entry = this.entry(key, source, inputs, outputs, label);
    // A rejected pipeline rejects the promise (it raises no validation error).
    this.track(entry, this.device.createComputePipelineAsync(this.descriptor(entry)).then(
      (pipeline) => {
        entry.pipeline ??= pipeline;
        return null;
      },
      (e: unknown) => this.rejected(entry, (e as Error).message),
    ));
    return entry.compiled!;
  }

  /** Whether the pipeline is cached (created, or being compiled asynchronously); counts nothing. */
  has(source: string, inputs: number, outputs: number): boolean {
    return this.entries.has(this.key(source, inputs, outputs));
  }

  /** Sets the capacity, dropping least recently used pipelines beyond it. */
  resize(capacity: number): void {
    this.entries.resize(capacity);
  }

  stats(): PipelineStats {
    return this.entries.stats();
  }

  private key(source: string, inputs: number, outputs: number): string {
    // A module need not declare every binding (a pass of a program may leave some out), so equal
    // sources can need different layouts.
    return `${inputs}:${outputs}\n${source}`;
  }

  private entry(key: string, source: string, inputs: number, outputs: number, label: string): Entry {
    const layout = this.layout(inputs, outputs);
    this.device.pushErrorScope('validation');
    const module = this.device.createShaderModule({ code: source, label });
    // A module with errors raises a validation error here too; the pipeline's creation reports them with the compiler's messages.
    void this.device.popErrorScope().catch(() => null);
    const entry: Entry = { pipeline: null, layout, module, label, compiled: null, error: null, params: usesParams(source) };
    this.entries.set(key, entry);
    return entry;
  }

  private descriptor(entry: Entry): GPUComputePipelineDescriptor {
    return {
      label: entry.label,
      layout: this.pipelineLayout(entry),
      compute: { module: entry.module, entryPoint: 'main' },
    };
  }

  /** Creates the entry's pipeline synchronously; its verdict (joined with a running asynchronous one's) becomes `compiled`. */
  private createNow(entry: Entry): void {
    this.device.pushErrorScope('validation');
    entry.pipeline = this.device.createComputePipeline(this.descriptor(entry));
    const own = this.device.popErrorScope().then(
      (err) => (err ? this.rejected(entry, err.message) : null),
      () => null, // a lost device is reported by the backend, not as a compile error
    );
    const before = entry.compiled;
    this.track(entry, before ? Promise.all([own, before]).then(([a, b]) => a ?? b) : own);
  }

  /** Makes `verdict` the entry's running compile check until it settles. */
  private track(entry: Entry, verdict: Promise<SinterError | null>): void {
    const compiled: Promise<SinterError | null> = verdict.then((v) => {
      if (entry.compiled === compiled) entry.compiled = null;
      return v;
    });
    entry.compiled = compiled;
  }

  /** Records why the entry's pipeline was rejected, with the compiler's messages where it gives them. */
  private async rejected(entry: Entry, why: string): Promise<SinterError> {
    if (entry.error) return entry.error;
    const info = await entry.module.getCompilationInfo().catch(() => null);
    const messages = (info?.messages ?? []).filter((m) => m.type === 'error').map((m) => `line ${m.lineNum}:${m.linePos}: ${m.message}`);
    entry.error ??= new SinterError(entry.label, `the WGSL kernel was rejected on ${this.deviceName}: ${messages.length ? messages.join('; ') : why}`);
    return entry.error;
  }

  /** The entry's pipeline layout: its storage bindings, then the uniform block when the kernel has one. */
  private pipelineLayout(entry: Entry): GPUPipelineLayout {
    const key = `${entry.layout.label}${entry.params ? '+params' : ''}`;
    let layout = this.pipelineLayouts.get(key);
    if (!layout) {
      layout = this.device.createPipelineLayout({ bindGroupLayouts: entry.params ? [entry.layout, this.paramsLayout] : [entry.layout] });
      this.pipelineLayouts.set(key, layout);
    }
    return layout;
  }

  private paramsGroupLayout: GPUBindGroupLayout | null = null;
  /** The layout of @group(1): one uniform buffer bound at a dynamic offset (each dispatch's block). */
  get paramsLayout(): GPUBindGroupLayout {
    return (this.paramsGroupLayout ??= this.device.createBindGroupLayout({
      label: 'sinter params',
      entries: [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform', hasDynamicOffset: true } }],
    }));
  }

  /** The bind group layout of `inputs` read-only then `outputs` read-write storage buffers. */
  layout(inputs: number, outputs: number): GPUBindGroupLayout {
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
