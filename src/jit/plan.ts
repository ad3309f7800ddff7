import { getBackend } from '../backend/backend.js';
import type { Storage } from '../backend/backend.js';
import { itemSize, type DType } from '../tensor/dtype.js';
import { keep } from '../tensor/memory.js';
import { contiguousStrides, numel } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import type { Expr } from '../ops/expr.js';
import { clone } from '../ops/views.js';
import { mapKernelSource } from '../kernels/cpu/map.js';
import { prologueSource } from '../kernels/cpu/reduce.js';
import type { PreparedProgram, WebGpuBackend } from '../backend/webgpu/backend.js';
import { type CompileProgress, type PlanBinding, WebGpuPlan } from '../backend/webgpu/plan.js';
import type { WebGpuStorage } from '../backend/webgpu/storage.js';
import { type Graph, type Node, type Use, type Value, isIdentityView, opLabel, useLayout, valueLayout } from './graph.js';

type OpNode = Extract<Node, { kind: 'op' }>;

/** A buffer intermediates share when their lifetimes do not overlap (one dtype per slot). */
export interface Slot {
  readonly dtype: DType;
  /** Elements: the largest value assigned to it. */
  readonly length: number;
}

/** Which slot holds each intermediate value, and the kernel range over which each value is live. */
export interface MemoryPlan {
  readonly slots: Slot[];
  /** value id → slot index. */
  readonly slotOf: Map<number, number>;
  /** value id → [index of the kernel writing it, index of the last kernel reading it]. */
  readonly live: Map<number, [number, number]>;
  /** Bytes of all slots: what the plan holds. */
  readonly peakBytes: number;
  /** Bytes if every intermediate had a buffer of its own. */
  readonly unplannedBytes: number;
}

/**
 * Assigns intermediates (values neither graph inputs, constants nor outputs) to slots by liveness:
 * after the last kernel reading a value runs, its slot is free for later values of the same dtype
 * (best fit by size, growing a slot when none is large enough).
 */
export function planMemory(kernels: readonly OpNode[], outputs: ReadonlySet<Value>): MemoryPlan {
  const live = new Map<number, [number, number]>();
  const planned: Value[] = [];
  kernels.forEach((k, i) => {
    for (const v of k.outputs) {
      if (!outputs.has(v)) {
        live.set(v.id, [i, i]);
        planned.push(v);
      }
    }
    for (const u of k.inputs) {
      const l = live.get(u.value.id);
      if (l) l[1] = i;
    }
  });
  const slots: { dtype: DType; length: number }[] = [];
  const slotOf = new Map<number, number>();
  const free = new Set<number>();
  kernels.forEach((k, i) => {
    for (const v of k.outputs) {
      if (outputs.has(v)) continue;
      const n = numel(v.shape);
      const candidates = [...free].filter((s) => slots[s]!.dtype === v.dtype);
      const fits = candidates.filter((s) => slots[s]!.length >= n).sort((a, b) => slots[a]!.length - slots[b]!.length);
      const pick = fits[0] ?? candidates.sort((a, b) => slots[b]!.length - slots[a]!.length)[0];
      if (pick === undefined) {
        slots.push({ dtype: v.dtype, length: n });
        slotOf.set(v.id, slots.length - 1);
      } else {
        free.delete(pick);
        slots[pick]!.length = Math.max(slots[pick]!.length, n);
        slotOf.set(v.id, pick);
      }
    }
    for (const [id, [, end]] of live) if (end === i) free.add(slotOf.get(id)!);
  });
  const bytes = (dtype: DType, n: number) => n * itemSize(dtype);
  return {
    slots,
    slotOf,
    live,
    peakBytes: slots.reduce((a, s) => a + bytes(s.dtype, s.length), 0),
    unplannedBytes: planned.reduce((a, v) => a + bytes(v.dtype, numel(v.shape)), 0),
  };
}

/** Throws unless every value fits its slot and no two values live at the same time share one. */
export function validateMemoryPlan(plan: MemoryPlan, values: readonly Value[]): void {
  const byId = new Map(values.map((v) => [v.id, v]));
  const bySlot = new Map<number, number[]>();
  for (const [id, s] of plan.slotOf) {
    const v = byId.get(id);
    if (v && (plan.slots[s]!.dtype !== v.dtype || plan.slots[s]!.length < numel(v.shape))) throw new Error(`memory plan: value %${id} does not fit slot ${s}`);
    bySlot.set(s, [...(bySlot.get(s) ?? []), id]);
  }
  for (const [s, ids] of bySlot) {
    for (let i = 0; i < ids.length; i++) {
      for (let j = i + 1; j < ids.length; j++) {
        const [a0, a1] = plan.live.get(ids[i]!)!, [b0, b1] = plan.live.get(ids[j]!)!;
        if (a0 <= b1 && b0 <= a1) throw new Error(`memory plan: values %${ids[i]} (live ${a0}–${a1}) and %${ids[j]} (live ${b0}–${b1}) share slot ${s}`);
      }
    }
  }
}

export interface KernelReport {
  /** The op, or the fused ops joined by '+'. */
  name: string;
  ops: string[];
  /** The generated WGSL (webgpu) or JavaScript (cpu elementwise); null for the CPU's built-in kernels. */
  source: string | null;
  bytesRead: number;
  bytesWritten: number;
  /** Floating-point operations, estimated from the shapes (2·M·N·K for a matmul). */
  flops: number;
  /** GPU time of the kernel in the last `profile()` call (ms), from timestamp queries; only on WebGPU devices with 'timestamp-query'. */
  gpuMs?: number;
  /** Host time of the kernel in the last `profile()` call (ms), from performance.now(); only on the CPU. */
  cpuMs?: number;
}

function viewElements(u: Use): number {
  // A broadcast read touches each stored element once.
  return Math.min(numel(u.view.shape), numel(u.value.shape));
}

/** The highest input index an expression reads (-1 for none): an epilogue's extra inputs are 1..that. */
function maxInput(e: Expr): number {
  if (e.kind === 'input') return e.index;
  if (e.kind === 'const') return -1;
  return Math.max(-1, ...e.args.map(maxInput));
}

/** Arithmetic nodes of an expression (casts are free). */
function calls(e: Expr): number {
  return e.kind === 'call' ? (e.fn === 'cast' ? 0 : 1) + e.args.reduce((a, x) => a + calls(x), 0) : 0;
}

function flopsOf(k: OpNode): number {
  const out = numel(k.outputs[0]!.shape);
  const epilogue = (k.attrs as { epilogue?: Expr }).epilogue;
  return opFlops(k, out) + (epilogue ? out * calls(epilogue) : 0);
}

function opFlops(k: OpNode, out: number): number {
  const [a, b] = k.inputs;
  const prologue = (k.attrs as { prologue?: Expr }).prologue;
  if (prologue) {
    // A fused reduction: the prologue on every element of the broadcast input, then one op per element.
    const elements = Math.max(...k.inputs.map((u) => numel(u.view.shape)));
    return elements * (calls(prologue) + 1);
  }
  switch (k.op.name) {
    case 'map':
      return out * calls((k.attrs as { expr: Expr }).expr);
    case 'matmul': return 2 * out * (a!.view.shape[a!.view.shape.length - 1] ?? 1);
    case 'linear': return 2 * out * b!.view.shape[1]!;
    case 'conv2d': return 2 * out * numel(b!.view.shape.slice(1));
    case 'convTranspose2d': return 2 * numel(a!.view.shape) * numel(b!.view.shape.slice(1));
    default: return numel(a?.view.shape ?? []);
  }
}

/** Where a kernel reads or writes a value: a storage the plan keeps (a slot, a constant), or the call's input or output. */
type Binding = { readonly storage: Storage } | { readonly input: number } | { readonly output: number };

/**
 * A compiled graph: kernels in order, intermediates in planned slots allocated once. Each call binds
 * the inputs, allocates the outputs afresh (results never alias between calls), and runs every
 * kernel. On WebGPU the kernels' programs, scratch buffers and fixed bind groups are made when the
 * plan is built (see WebGpuPlan), and each call records every dispatch into one command buffer and
 * submits it once.
 */
export class Plan {
  readonly kernels: OpNode[];
  readonly memory: MemoryPlan;
  private readonly slotTensors: Tensor[];
  /** The graph's inputs in the order calls pass their storages. */
  private readonly inputNodes: Extract<Node, { kind: 'input' }>[];
  /** Random draws, made afresh on each call and bound after the inputs. */
  private readonly randomNodes: Extract<Node, { kind: 'random' }>[];
  /** Values computed by kernels that the graph returns: each call allocates them afresh. */
  private readonly outputValues: Value[];
  /** Per kernel: its inputs' then its outputs' bindings. */
  private readonly bindings: Binding[][];
  /** Where each of the graph's outputs is read from. */
  private readonly outputBindings: Binding[];
  /**
   * CPU only, per kernel: its inputs' then its outputs' tensors where the binding is a storage the plan
   * keeps (a slot, a constant), made once with the plan; null where a call binds its own. A tensor made
   * and disposed per kernel per call cost more host time than many kernels (registering it with the
   * collector, and unregistering it), and the thread pool's workers went to sleep meanwhile.
   */
  private readonly fixedViews: (Tensor | null)[][] = [];
  private readonly gpu: { plan: WebGpuPlan; programs: PreparedProgram[] } | null = null;

  constructor(
    readonly graph: Graph,
    readonly fusedOps: Map<number, string[]>,
  ) {
    this.kernels = graph.nodes.filter((n): n is OpNode => n.kind === 'op');
    this.inputNodes = graph.nodes.filter((n): n is Extract<Node, { kind: 'input' }> => n.kind === 'input');
    this.randomNodes = graph.nodes.filter((n): n is Extract<Node, { kind: 'random' }> => n.kind === 'random');
    this.outputValues = [...new Set(graph.outputs.map((u) => u.value).filter((v) => v.node.kind === 'op'))];
    this.memory = planMemory(this.kernels, new Set(this.outputValues));
    const backend = getBackend(graph.device);
    this.slotTensors = this.memory.slots.map((s) => keep(new Tensor(backend.alloc(s.dtype, s.length), [s.length])));
    const inputAt = new Map<Node, number>([...this.inputNodes, ...this.randomNodes].map((n, i) => [n, i]));
    const outputAt = new Map(this.outputValues.map((v, i) => [v, i]));
    const bindingOf = (v: Value): Binding => {
      const n = v.node;
      if (n.kind === 'constant') return { storage: n.tensor.storage };
      if (n.kind === 'input' || n.kind === 'random') return { input: inputAt.get(n)! };
      const out = outputAt.get(v);
      return out === undefined ? { storage: this.slotTensors[this.memory.slotOf.get(v.id)!]!.storage } : { output: out };
    };
    this.bindings = this.kernels.map((k) => [...k.inputs.map((u) => bindingOf(u.value)), ...k.outputs.map(bindingOf)]);
    this.outputBindings = graph.outputs.map((u) => bindingOf(u.value));
    if (graph.device === 'cpu') {
      this.fixedViews = this.kernels.map((k, i) => {
        const shapes = [...k.inputs.map((u) => u.view), ...k.outputs.map((v) => ({ shape: v.shape, strides: undefined, offset: 0 }))];
        return this.bindings[i]!.map((b, j) => ('storage' in b ? keep(new Tensor(b.storage, shapes[j]!.shape, shapes[j]!.strides, shapes[j]!.offset)) : null));
      });
    }
    if (graph.device === 'webgpu') {
      try {
        this.gpu = this.gpuPlan(backend as WebGpuBackend);
      } catch (e) {
        this.dispose();
        throw e;
      }
    }
  }

  private gpuPlan(backend: WebGpuBackend): { plan: WebGpuPlan; programs: PreparedProgram[] } {
    const programs = this.kernels.map((k) =>
      backend.prepare(k.op, k.inputs.map(useLayout), k.attrs, k.outputs.map(valueLayout)),
    );
    const steps = programs.map((program, i) => ({ program, bindings: this.bindings[i] as PlanBinding[] }));
    return { plan: new WebGpuPlan(backend, steps), programs };
  }

  /**
   * On WebGPU, compiles every pipeline of the plan in parallel (createComputePipelineAsync); rejects
   * with the first compile error. `onProgress` hears `{ done, total }` distinct pipelines compiled
   * (see WebGpuPlan.compile); on the CPU, whose kernels are built with the plan, a single `{ done: 0, total: 0 }`.
   */
  async compile(onProgress?: (progress: CompileProgress) => void): Promise<void> {
    if (this.gpu) return this.gpu.plan.compile(onProgress);
    onProgress?.({ done: 0, total: 0 });
  }

  /** Distinct pipelines the plan's kernels use (0 on the CPU). */
  get pipelineCount(): number {
    return this.gpu?.plan.pipelineCount ?? 0;
  }

  run(args: readonly Tensor[]): Tensor[] {
    return this.execute(args, false).outputs;
  }

  /**
   * Runs once timing every kernel (GPU timestamps on WebGPU where the device has 'timestamp-query',
   * else none; performance.now() on the CPU) and waits until the device has finished.
   */
  async profile(args: readonly Tensor[]): Promise<{ outputs: Tensor[]; kernelMs: number[] | null }> {
    const { outputs, times } = this.execute(args, true);
    try {
      const kernelMs = await times;
      await getBackend(this.graph.device).synchronize();
      return { outputs, kernelMs };
    } catch (e) {
      outputs.forEach((t) => t.dispose());
      throw e;
    }
  }

  private execute(args: readonly Tensor[], profile: boolean): { outputs: Tensor[]; times: Promise<number[]> | number[] | null } {
    const backend = getBackend(this.graph.device);
    // Non-contiguous inputs are copied to the contiguous layout the graph's input values have; the
    // copies live until the outputs that read them (returned inputs and views of inputs) are made.
    const temps: Tensor[] = [];
    const results: Tensor[] = [];
    const outputs: Tensor[] = [];
    try {
      const inputs = this.inputNodes.map((n) => {
        const t = args[n.index]!;
        if (t.isContiguous() && t.offset === 0) return t;
        const copy = clone(t);
        temps.push(copy);
        return copy;
      });
      for (const n of this.randomNodes) {
        const t = n.draw();
        temps.push(t);
        inputs.push(t);
      }
      for (const v of this.outputValues) results.push(new Tensor(backend.alloc(v.dtype, numel(v.shape)), v.shape));
      const times = this.gpu
        ? this.gpu.plan.run(inputs.map((t) => t.storage as WebGpuStorage), results.map((t) => t.storage as WebGpuStorage), profile)
        : this.runCpu(inputs, results, profile);
      // Outputs that are views, inputs or constants are materialised as fresh tensors too.
      const returned = new Set<Tensor>();
      this.graph.outputs.forEach((u, i) => {
        const b = this.outputBindings[i]!;
        if ('output' in b && isIdentityView(u)) {
          returned.add(results[b.output]!);
          outputs.push(results[b.output]!);
          return;
        }
        const storage = 'storage' in b ? b.storage : 'input' in b ? inputs[b.input]!.storage : results[b.output]!.storage;
        const view = new Tensor(storage, u.view.shape, u.view.strides, u.view.offset);
        try {
          outputs.push(clone(view));
        } finally {
          view.dispose();
        }
      });
      for (const r of results) if (!returned.has(r)) r.dispose();
      return { outputs, times };
    } catch (e) {
      for (const t of [...results, ...outputs]) if (!t.isDisposed) t.dispose();
      throw e;
    } finally {
      temps.forEach((t) => t.dispose());
    }
  }

  /** Runs the kernels on the CPU, timing each when `profile` is set. */
  private runCpu(inputs: readonly Tensor[], results: readonly Tensor[], profile: boolean): number[] | null {
    const backend = getBackend('cpu');
    const times: number[] = [];
    const storageOf = (b: Binding): Storage => ('storage' in b ? b.storage : 'input' in b ? inputs[b.input]!.storage : results[b.output]!.storage);
    this.kernels.forEach((k, i) => {
      const bindings = this.bindings[i]!, fixed = this.fixedViews[i]!;
      const made: Tensor[] = [];
      const view = (j: number, shape: readonly number[], strides?: readonly number[], offset?: number): Tensor => {
        const t = fixed[j] ?? new Tensor(storageOf(bindings[j]!), shape, strides, offset);
        if (!fixed[j]) made.push(t);
        return t;
      };
      const ins = k.inputs.map((u, j) => view(j, u.view.shape, u.view.strides, u.view.offset));
      const outs = k.outputs.map((v, j) => view(k.inputs.length + j, v.shape));
      try {
        const t0 = profile ? performance.now() : 0;
        backend.run(k.op, ins, k.attrs, outs);
        if (profile) times.push(performance.now() - t0);
      } finally {
        made.forEach((t) => t.dispose());
      }
    });
    return profile ? times : null;
  }

  /** Calls whose device work has not finished (WebGPU; a CPU call finishes before it returns), and the most at once so far. */
  inFlight(): { now: number; peak: number } {
    return { now: this.gpu?.plan.inFlight ?? 0, peak: this.gpu?.plan.peakInFlight ?? 0 };
  }

  /** Per-kernel description: ops, generated source, bytes moved, FLOPs. */
  kernelReports(): KernelReport[] {
    return this.kernels.map((k, i) => {
      const metas = k.inputs.map(useLayout);
      let source: string | null = null;
      if (this.gpu) {
        const passes = this.gpu.programs[i]!.passes;
        source = passes.length ? passes.map((p) => p.kernel.source).join('\n// ---- next pass ----\n') : null;
      } else if (k.op.name === 'map') {
        source = mapKernelSource((k.attrs as { expr: Expr }).expr, metas, k.outputs[0]!.shape);
      } else if ((k.attrs as { prologue?: Expr }).prologue) {
        source = prologueSource((k.attrs as { prologue: Expr }).prologue, metas.length);
      } else if ((k.attrs as { epilogue?: Expr }).epilogue) {
        // The CPU runs the op's built-in kernel, then this generated map over its output in place.
        const { epilogue } = k.attrs as { epilogue: Expr };
        const out = k.outputs[0]!.shape;
        const extras = metas.slice(metas.length - Math.max(0, maxInput(epilogue)));
        source = mapKernelSource(epilogue, [{ shape: out, strides: contiguousStrides(out) }, ...extras], out);
      }
      return {
        name: opLabel(k),
        ops: this.fusedOps.get(k.id) ?? [opLabel(k)],
        source,
        bytesRead: k.inputs.reduce((a, u) => a + viewElements(u) * itemSize(u.value.dtype), 0),
        bytesWritten: k.outputs.reduce((a, v) => a + numel(v.shape) * itemSize(v.dtype), 0),
        flops: flopsOf(k),
      };
    });
  }

  dispose(): void {
    this.gpu?.plan.dispose();
    for (const views of this.fixedViews) for (const t of views) t?.dispose();
    this.slotTensors.forEach((t) => t.dispose());
  }
}

