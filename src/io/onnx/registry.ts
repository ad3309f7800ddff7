import type { DeviceName } from '../../backend/backend.js';
import { Tensor } from '../../tensor/tensor.js';
import type { OnnxNode } from './node.js';
import { fmtShape } from '../../errors.js';
import { numel } from '../../tensor/shape.js';
import { HostTensor, type OnnxDType } from './tensor.js';

/** A value while a model runs: a device tensor, or a host tensor (shape arithmetic, constants). */
export type Val = Tensor | HostTensor;
/** A node's inputs in order; undefined where an optional input is left out (empty name). */
export type Inputs = readonly (Val | undefined)[];

export interface OpContext {
  readonly device: DeviceName;
  /** The value as a device tensor: host values are uploaded (int64 narrowed to int32, checked). `what` names it in errors. */
  dev(v: Val, what: string): Tensor;
  /** The value on the host; a device value is an error (its values cannot be read while the model is traced). */
  host(v: Val, what: string): HostTensor;
}

/** Maps one node onto sinter ops: values in, values out (one per node output; undefined for an output not produced). */
export type Handler = (node: OnnxNode, inputs: Inputs, ctx: OpContext) => (Val | undefined)[];
/**
 * The same op evaluated on the host, used when every input is a host tensor; null when the result is too large to
 * be a host value (then `run` makes it on the device).
 */
export type HostHandler = (node: OnnxNode, inputs: readonly (HostTensor | undefined)[]) => (HostTensor | undefined)[] | null;

export interface OpEntry {
  run: Handler;
  host?: HostHandler;
  /** Input positions whose values the op needs at trace time (shapes, axes, pads, scales…). */
  hostInputs?: readonly number[];
  /** Why this node cannot run (an unsupported attribute value or type), checked when the model loads. */
  check?: (node: OnnxNode) => string | undefined;
  /** The lowest opset of its domain this entry implements (default 7; lower where the op has not changed since). */
  minOpset?: number;
}

/** Every supported op of the default domain, by op type. Each file under ops/ registers its family. */
export const OPS = new Map<string, OpEntry>();

export function register(entries: Record<string, OpEntry>): void {
  for (const [name, entry] of Object.entries(entries)) {
    if (OPS.has(name)) throw new Error(`ONNX op '${name}' registered twice`);
    OPS.set(name, entry);
  }
}

export function isHost(v: Val | undefined): v is HostTensor {
  return v instanceof HostTensor;
}

/** The ONNX element type of a value (device int32 also stands for narrowed int64). */
export function typeOf(v: Val): OnnxDType {
  return v instanceof Tensor ? v.dtype : v.dtype;
}

/**
 * The most bytes one value may take. Under jit a node's output exists only as a shape until the plan allocates it,
 * so a shape that a corrupt or hostile model inflates (pads of 10^12, a Reshape to [1e6, 1e6]) is refused here,
 * naming the node, before any allocation.
 */
export const MAX_VALUE_BYTES = 2 ** 31;

export function checkValueBytes(node: OnnxNode, what: string, shape: readonly number[], bytesPerElement: number): void {
  if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0)) node.fail(`${what} has the invalid shape ${fmtShape(shape)}`);
  const bytes = numel(shape) * bytesPerElement;
  if (bytes > MAX_VALUE_BYTES) {
    node.fail(`${what} would have shape ${fmtShape(shape)}, ${bytes.toExponential(3)} bytes, more than the ${MAX_VALUE_BYTES}-byte limit for one value`);
  }
}
