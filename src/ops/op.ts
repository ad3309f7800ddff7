import { type DeviceName, getBackend } from '../backend/backend.js';
import { checkAllocation } from '../backend/device.js';
import { SinterError, fmtShape } from '../errors.js';
import type { DType, HostArray } from '../tensor/dtype.js';
import type { GpuView, WebGpuCaps, WgslForm } from '../kernels/wgsl/kernel.js';
import { Tensor } from '../tensor/tensor.js';
import { activeTrace } from '../jit/trace.js';
import { profilerHooks } from '../profiler/hooks.js';
import { autocastDType, autocastInputs } from '../quant/autocast.js';

/** What shape rules see of a tensor. */
export interface TensorMeta {
  readonly shape: readonly number[];
  readonly dtype: DType;
}

/** A strided view of host memory, as CPU kernels receive their inputs and outputs. */
export interface CpuView extends TensorMeta {
  readonly data: HostArray;
  readonly strides: readonly number[];
  readonly offset: number;
}

/**
 * One op, defined once: its shape/dtype rule with argument checks (`infer`) and its kernel forms.
 * Backends run the kernel form they own; the JIT records `name`, `attrs` and `infer`'s result.
 */
export interface OpDef<A> {
  readonly name: string;
  /**
   * The op users called, when one OpDef runs many (`map` runs add, mul, relu...): errors such as an
   * output too large to allocate name it instead of `name`.
   */
  label?(attrs: A): string;
  /** Output shapes and dtypes for these inputs; throws a SinterError naming the op on bad input. */
  infer(inputs: readonly TensorMeta[], attrs: A): TensorMeta[];
  /** The CPU kernel: reads strided inputs, writes contiguous outputs. */
  cpu(inputs: readonly CpuView[], attrs: A, outputs: readonly CpuView[]): void;
  /**
   * The WebGPU kernel, when the op has one: from the layouts of the inputs (strided, stride 0 for
   * broadcast: read them in place) and of the contiguous outputs, a WGSL module to dispatch once
   * (or a WgslProgram: several passes sharing scratch buffers; kernels may also declare device-side
   * checks). Bindings, storage per dtype and helpers: src/kernels/wgsl/kernel.ts. Without this form the op
   * throws "no WebGPU kernel for <op> yet" on 'webgpu'. Example (y = 2x for float32 x):
   *
   *   webgpu([x], _attrs, [y], caps) {
   *     const n = numel(y.shape), g = grid('double', n, 64, caps);
   *     const { lines, idx } = unravel('e', x.shape);
   *     return { workgroups: g.workgroups, source: `${bindings(['float32'], ['float32'], caps)}
   *       @compute @workgroup_size(64) fn main(${GRID_PARAMS}) {
   *         let e = ${g.index}; if (e >= ${n}u) { return; }
   *         ${lines.join(' ')} out0[e] = 2.0 * in0[${offsetOf(x.offset, x.strides, idx)}];
   *       }` };
   *   }
   */
  webgpu?(inputs: readonly GpuView[], attrs: A, outputs: readonly GpuView[], caps: WebGpuCaps): WgslForm;
}

export function defineOp<A>(def: OpDef<A>): OpDef<A> {
  return def;
}

/** Validates that every input is a live tensor and that all share one device. */
export function checkInputs(op: string, inputs: readonly unknown[]): asserts inputs is readonly Tensor[] {
  let device: string | undefined;
  inputs.forEach((t, i) => {
    if (!(t instanceof Tensor)) {
      const q = (t as { dtype?: unknown } | null)?.dtype;
      if (q === 'qint8' || q === 'quint8') {
        throw new SinterError(op, `argument ${i} is a quantised tensor (${q}), which ${op} does not accept: dequantize() it first, or use the sn.quant ops`);
      }
      throw new SinterError(op, `argument ${i} must be a Tensor, got ${t === null ? 'null' : typeof t === 'object' ? (t as object).constructor?.name ?? 'object' : typeof t}`);
    }
    const s = t.storageFor(op);
    if (device === undefined) device = s.device;
    else if (s.device !== device) {
      throw new SinterError(op, `expected all tensors on one device, but ${inputs.map((x) => `${(x as Tensor).describe()} is on ${(x as Tensor).device}`).join(', ')}; move them with .to(device)`);
    }
  });
}

/** Runs `op` eagerly on the inputs' device and returns its outputs. */
export function apply<A>(op: OpDef<A>, inputs: readonly Tensor[], attrs: A): Tensor[] {
  checkInputs(op.name, inputs);
  if (inputs.length === 0) throw new SinterError(op.name, 'needs at least one input tensor');
  // Under sn.autocast, inputs are cast by the op's precision list (map ops were cast where their expression was typed).
  if (autocastDType() !== null && op.name !== 'map') inputs = autocastInputs(op.label?.(attrs) ?? op.name, inputs);
  // Under jit, ops are recorded into the graph instead of run.
  const trace = activeTrace();
  if (trace) return trace.record(op, inputs, attrs);
  const outs = op.infer(inputs, attrs);
  const backend = getBackend(inputs[0]!.device);
  checkOutputs(op, attrs, outs, backend.name);
  const tensors = outs.map((o) => {
    let n = 1;
    for (const d of o.shape) n *= d;
    return new Tensor(backend.alloc(o.dtype, n), o.shape);
  });
  // While sn.profiler records, each eager op reports its host time, inputs and outputs.
  const hook = profilerHooks.op;
  const start = hook ? performance.now() : 0;
  try {
    backend.run(op, inputs, attrs, tensors);
  } catch (e) {
    for (const t of tensors) t.dispose();
    throw e;
  }
  hook?.(op.name, attrs, inputs, tensors, start);
  return tensors;
}

/**
 * Refuses outputs that cannot be allocated on `device` (see checkAllocation), naming the op the user
 * called: eagerly before any output exists, and under jit when the op is recorded, before any plan.
 */
export function checkOutputs<A>(op: OpDef<A>, attrs: A, outs: readonly TensorMeta[], device: DeviceName): void {
  const label = op.label?.(attrs) ?? op.name;
  for (const o of outs) checkAllocation(label, o.shape, o.dtype, device);
}

export function apply1<A>(op: OpDef<A>, inputs: readonly Tensor[], attrs: A): Tensor {
  return apply(op, inputs, attrs)[0]!;
}

/** "[2, 3] float32" for error messages. */
export function describeMeta(m: TensorMeta): string {
  return `${fmtShape(m.shape)} ${m.dtype}`;
}
