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
import type { WebGpuCaps, WgslForm } from '../kernels/wgsl/kernel.js';
import { type Graph, type Node, type Use, type Value, isIdentityView, opLabel } from './graph.js';

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
}

function viewElements(u: Use): number {
  // A broadcast read touches each stored element once.
  return Math.min(numel(u.view.shape), numel(u.value.shape));
}

/** Arithmetic nodes of an expression (casts are free). */
function calls(e: Expr): number {
  return e.kind === 'call' ? (e.fn === 'cast' ? 0 : 1) + e.args.reduce((a, x) => a + calls(x), 0) : 0;
}

function flopsOf(k: OpNode): number {
  const out = numel(k.outputs[0]!.shape);
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

/**
 * A compiled graph: kernels in order, intermediates in planned slots allocated once. Each call binds
 * the inputs, allocates the outputs afresh (results never alias between calls), and runs every
 * kernel; on WebGPU the dispatches share one command encoder and one submit (at readback).
 */
export class Plan {
  readonly kernels: OpNode[];
  readonly memory: MemoryPlan;
  private readonly slotTensors: Tensor[];
  private readonly outputValues: Set<Value>;

  constructor(
    readonly graph: Graph,
    readonly fusedOps: Map<number, string[]>,
  ) {
    this.kernels = graph.nodes.filter((n): n is OpNode => n.kind === 'op');
    this.outputValues = new Set(graph.outputs.map((u) => u.value).filter((v) => v.node.kind === 'op'));
    this.memory = planMemory(this.kernels, this.outputValues);
    const backend = getBackend(graph.device);
    this.slotTensors = this.memory.slots.map((s) => keep(new Tensor(backend.alloc(s.dtype, s.length), [s.length])));
  }

  run(args: readonly Tensor[]): Tensor[] {
    const backend = getBackend(this.graph.device);
    const owned = new Map<Value, Storage>();
    const temps: Tensor[] = [];
    for (const n of this.graph.nodes) {
      if (n.kind !== 'input') continue;
      let t = args[n.index]!;
      if (!t.isContiguous() || t.offset !== 0) temps.push((t = clone(t)));
      owned.set(n.outputs[0]!, t.storage);
    }
    const results = new Map<Value, Tensor>();
    for (const v of this.outputValues) {
      const t = new Tensor(backend.alloc(v.dtype, numel(v.shape)), v.shape);
      results.set(v, t);
      owned.set(v, t.storage);
    }
    const storageOf = (v: Value): Storage => {
      const n = v.node;
      if (n.kind === 'constant') return n.tensor.storage;
      return owned.get(v) ?? this.slotTensors[this.memory.slotOf.get(v.id)!]!.storage;
    };
    const viewOf = (u: Use) => new Tensor(storageOf(u.value), u.view.shape, u.view.strides, u.view.offset);
    for (const k of this.kernels) {
      const ins = k.inputs.map(viewOf);
      const outs = k.outputs.map((v) => results.get(v) ?? new Tensor(storageOf(v), v.shape));
      try {
        backend.run(k.op, ins, k.attrs, outs);
      } finally {
        ins.forEach((t) => t.dispose());
        outs.forEach((t, i) => results.has(k.outputs[i]!) || t.dispose());
      }
    }
    temps.forEach((t) => t.dispose());
    // Outputs that are views, inputs or constants are materialised as fresh tensors too.
    return this.graph.outputs.map((u) => {
      const r = results.get(u.value);
      if (r && isIdentityView(u)) return r;
      const view = viewOf(u);
      const copy = clone(view);
      view.dispose();
      return copy;
    });
  }

  /** Per-kernel description: ops, generated source, bytes moved, FLOPs. */
  kernelReports(): KernelReport[] {
    const caps = this.graph.device === 'webgpu' ? (getBackend('webgpu') as unknown as { caps: WebGpuCaps }).caps : null;
    return this.kernels.map((k) => {
      const metas = k.inputs.map((u) => ({ shape: u.view.shape, strides: u.view.strides, offset: u.view.offset, dtype: u.value.dtype }));
      const outMetas = k.outputs.map((v) => ({ shape: v.shape, strides: contiguousStrides(v.shape), offset: 0, dtype: v.dtype }));
      let source: string | null = null;
      if (caps && k.op.webgpu) {
        const form: WgslForm = k.op.webgpu(metas, k.attrs, outMetas, caps);
        source = 'passes' in form ? form.passes.map((p) => p.source).join('\n// ---- next pass ----\n') : form.source;
      } else if (k.op.name === 'map') {
        source = mapKernelSource((k.attrs as { expr: Expr }).expr, metas, k.outputs[0]!.shape);
      } else if ((k.attrs as { prologue?: Expr }).prologue) {
        source = prologueSource((k.attrs as { prologue: Expr }).prologue, metas.length);
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
    this.slotTensors.forEach((t) => t.dispose());
  }
}
