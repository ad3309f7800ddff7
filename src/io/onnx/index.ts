import { resolveDevice } from '../../backend/device.js';
import type { DeviceOption } from '../../backend/backend.js';
import { SinterError } from '../../errors.js';
import { OnnxModel, type OnnxTensorData } from './model.js';
import { decodeModel, decodeTensorProto } from './proto.js';
import { fromTensorProto } from './tensor.js';
// Each family registers its ops.
import './ops/elementwise.js';
import './ops/shape.js';
import './ops/nn.js';
import './ops/reduce.js';
import './ops/resize.js';
import './ops/attention.js';
import './ops/quant.js';
import './ops/einsum.js';
import './ops/selection.js';
import './ops/contrib.js';
// Last: widens the opsets of the ops registered above.
import './ops/legacy.js';

export { OnnxModel, OnnxUnsupportedError } from './model.js';
export type { OnnxFeed, OnnxTensorData, OnnxUnsupported, OnnxValueInfo, OnnxRunOptions, OnnxReport } from './model.js';
export type { OnnxDType } from './tensor.js';

export interface LoadOnnxOptions {
  /** Where the model runs (default: the default device). */
  device?: DeviceOption;
}

async function bytesOf(source: Uint8Array | ArrayBuffer | string): Promise<Uint8Array> {
  if (source instanceof Uint8Array) return source;
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  if (typeof source !== 'string') {
    throw new SinterError('loadOnnx', `expected the model's bytes (Uint8Array or ArrayBuffer) or a file path, got ${source === null ? 'null' : typeof source}`);
  }
  // Imported only when a path is given, so browser bundles never reference node:fs.
  const specifier = 'node:fs/promises';
  const fs = (await import(/* @vite-ignore */ specifier)) as typeof import('node:fs/promises');
  return new Uint8Array(await fs.readFile(source));
}

/**
 * Loads an ONNX model (its bytes, or a file path in Node) to run on `device`. Every unsupported op or type is
 * reported at once, as an OnnxUnsupportedError listing each (op, domain, opset, reason).
 */
export async function loadOnnx(source: Uint8Array | ArrayBuffer | string, options: LoadOnnxOptions = {}): Promise<OnnxModel> {
  const device = resolveDevice('loadOnnx', options.device);
  return new OnnxModel(decodeModel(await bytesOf(source)), device);
}

/** Decodes a serialised TensorProto (the .pb files of ONNX test data) into its name, type, shape and values. */
export function readOnnxTensor(bytes: Uint8Array): OnnxTensorData & { readonly name: string } {
  const proto = decodeTensorProto(bytes);
  const t = fromTensorProto(proto, 'tensor');
  return { name: proto.name ?? '', dtype: t.dtype, shape: t.shape, data: t.data };
}
