import { type DeviceName, type Storage, deviceGeneration } from '../backend/backend.js';
import { SinterError } from '../errors.js';
import type { DType } from '../tensor/dtype.js';
import { keep } from '../tensor/memory.js';
import { storageVersion } from '../tensor/version.js';
import { isContiguous, numel } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { type OpDef, checkOutputs } from '../ops/op.js';
import { Graph, type Node, type Use, type Value } from './graph.js';

/** Storage of a symbolic tensor: no memory, just the traced value it stands for. */
export class TraceStorage implements Storage {
  readonly symbolic = true;
  readonly byteLength = 0;
  refs = 0;
  constructor(
    readonly device: DeviceName,
    readonly dtype: DType,
    readonly length: number,
    readonly value: Value,
  ) {}
}

/** A tensor the traced function captured, as it was: a later call retraces if it was disposed, replaced or written in place. */
export interface TensorGuard {
  readonly tensor: Tensor;
  readonly storage: Storage;
  readonly version: number;
}

/** A value the traced code depended on (a module's `training` flag): a later call retraces when `read()` gives another. */
export interface ValueGuard {
  readonly what: string;
  readonly read: () => unknown;
  readonly value: unknown;
}

/** Records ops applied to symbolic tensors into a graph (see `apply` in src/ops/op.ts). */
export class Trace {
  private readonly nodes: Node[] = [];
  private readonly constants = new Map<Storage, Value>();
  /** Every tensor captured as a constant, by the tensor the traced code used (see `guards`). */
  private readonly captured = new Map<Tensor, TensorGuard>();
  readonly valueGuards: ValueGuard[] = [];
  private nextNode = 0;
  private nextValue = 0;

  constructor(readonly device: DeviceName) {
    // A plan belongs to one device instance: after a device loss `init` opens another, and the plan is rebuilt there.
    const generation = deviceGeneration(device);
    this.valueGuards.push({ what: `the ${device} device instance`, read: () => deviceGeneration(device), value: generation });
  }

  /** Adds a node with one output value and returns the value. */
  private value(shape: readonly number[], dtype: DType, node: Node): Value {
    const v: Value = { id: this.nextValue++, shape: [...shape], dtype, node };
    node.outputs.push(v);
    this.nodes.push(node);
    return v;
  }

  /** A symbolic stand-in for graph input `index`, shaped like `t`. */
  input(t: Tensor, index: number): Tensor {
    const v = this.value(t.shape, t.dtype, { kind: 'input', id: this.nextNode++, index, outputs: [], inputs: [] });
    return new Tensor(new TraceStorage(this.device, t.dtype, t.numel(), v), t.shape);
  }

  /** How a tensor enters the graph: a symbolic value through its view, or a captured constant. */
  useOf(t: Tensor, op: string): Use {
    const s = t.storageFor(op);
    const view = { shape: t.shape, strides: t.strides, offset: t.offset };
    if (s instanceof TraceStorage) return { value: s.value, view };
    if (s.device !== this.device) {
      throw new SinterError(op, `jit: a captured ${t.describe()} is on ${s.device} but the traced inputs are on ${this.device}; move it with .to('${this.device}')`);
    }
    if (!this.captured.has(t)) this.captured.set(t, { tensor: t, storage: s, version: storageVersion(s) });
    let v = this.constants.get(s);
    if (!v) {
      // Whole contiguous tensors keep their shape (readable graphs, foldable weights); other views see the storage flat.
      const whole = isContiguous(t.shape, t.strides) && t.offset === 0 && numel(t.shape) === s.length;
      const shape = whole ? t.shape : [s.length];
      const held = keep(new Tensor(s, shape));
      v = this.value(shape, s.dtype, { kind: 'constant', id: this.nextNode++, tensor: held, outputs: [], inputs: [] });
      this.constants.set(s, v);
    }
    // The value's contiguous layout is the storage's, so the tensor's own view reads it.
    return { value: v, view };
  }

  /**
   * A random draw as a graph node: `draw` makes a fresh tensor on each call (from the generator the
   * traced code named, so seeding it makes calls reproducible).
   */
  random(label: string, shape: readonly number[], dtype: DType, device: DeviceName, draw: () => Tensor): Tensor {
    if (device !== this.device) {
      throw new SinterError(label, `jit: a random tensor on ${device} cannot be used with traced inputs on ${this.device}; pass { device: '${this.device}' }`);
    }
    const v = this.value(shape, dtype, { kind: 'random', id: this.nextNode++, label, draw, outputs: [], inputs: [] });
    return new Tensor(new TraceStorage(this.device, dtype, numel(shape), v), shape);
  }

  /** Tensors of the constants captured so far (to free them when tracing or compiling fails). */
  constantTensors(): Tensor[] {
    return [...this.constants.values()].map((v) => (v.node as Extract<Node, { kind: 'constant' }>).tensor);
  }

  /**
   * Guards for the captured tensors that outlive the trace (module parameters and buffers); tensors
   * the traced function made and its scope freed are the graph's own constants, frozen like numbers.
   */
  tensorGuards(): TensorGuard[] {
    return [...this.captured.values()].filter((g) => !g.tensor.isDisposed);
  }

  record<A>(op: OpDef<A>, inputs: readonly Tensor[], attrs: A): Tensor[] {
    const uses = inputs.map((t) => this.useOf(t, op.name));
    const metas = op.infer(inputs, attrs);
    // As eagerly: an output the device cannot hold is refused now, before the plan allocates anything.
    checkOutputs(op, attrs, metas, this.device);
    const node: Node = { kind: 'op', id: this.nextNode++, op: op as OpDef<unknown>, attrs, inputs: uses, outputs: [] };
    this.nodes.push(node);
    return metas.map((m) => {
      const v: Value = { id: this.nextValue++, shape: [...m.shape], dtype: m.dtype, node };
      node.outputs.push(v);
      return new Tensor(new TraceStorage(this.device, m.dtype, numel(m.shape), v), m.shape);
    });
  }

  finish(outputs: readonly Tensor[]): Graph {
    return new Graph(this.device, this.nodes, outputs.map((t) => this.useOf(t, 'jit')));
  }
}

let active: Trace | null = null;

/**
 * Declares that the code being traced depends on `read()` (e.g. `module.training`): the jitted
 * function retraces on a later call where it gives another value. Does nothing outside a trace.
 */
export function guardValue(what: string, read: () => unknown): void {
  active?.valueGuards.push({ what, read, value: read() });
}

/** The trace being recorded, if any: `apply` records into it instead of running kernels. */
export function activeTrace(): Trace | null {
  return active;
}

/** Runs `fn` with `trace` recording every op. */
export function withTrace<T>(trace: Trace, fn: () => T): T {
  if (active) throw new SinterError('jit', 'already tracing: nested traces are not supported');
  active = trace;
  try {
    return fn();
  } finally {
    active = null;
  }
}
