import { resolveDevice } from '../../backend/device.js';
import type { DeviceOption } from '../../backend/backend.js';
import { SinterError } from '../../errors.js';
import { type FusionOption, STRATEGIES } from '../../jit/fusion.js';
import { OnnxModel, type OnnxTensorData } from './model.js';
import { decodeModel, decodeTensorProto } from './proto.js';
import { type ByteSource, type ProgressCallback, locationOf, readSource, resolveExternalData } from './source.js';
import { fromTensorProto } from './tensor.js';
import { convertModelToFloat16 } from '../../quant/fp16.js';
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
import './ops/signal.js';
import './ops/loss.js';
// Last: widens the opsets of the ops registered above.
import './ops/legacy.js';

export { OnnxModel, OnnxUnsupportedError } from './model.js';
export type { OnnxFeed, OnnxTensorData, OnnxUnsupported, OnnxValueInfo, OnnxRunOptions, OnnxReport } from './model.js';
export type { OnnxDType } from './tensor.js';

export type { ByteSource, ProgressCallback } from './source.js';

export interface LoadOnnxOptions {
  /** Where the model runs (default: the default device). */
  device?: DeviceOption;
  /**
   * The files of tensors stored outside the model (`model.onnx_data`…), by the location the model names: their
   * bytes, path or URL. Files not given are read beside the model when it was loaded from a path or URL.
   */
  externalData?: Readonly<Record<string, ByteSource>>;
  /** Called as the model and its external files download or are read (bytes loaded, and the total when known). */
  onProgress?: ProgressCallback;
  /**
   * How the traced model's ops are grouped into kernels, as `jit`'s option: 'none' (one kernel per op),
   * 'elementwise' (chains of elementwise ops), 'default' (every built-in fusion), or your own strategy.
   */
  fusion?: FusionOption;
  /**
   * 'float16' converts a float32 model at load (see src/quant/fp16.ts): BatchNormalization folded into the Conv
   * before it first (in float32: BN statistics overflow float16), then weights stored and activations computed as
   * float16, half the weight memory. Default 'float32' (the model as stored).
   */
  dtype?: 'float32' | 'float16';
  /**
   * With dtype 'float16': keep the graph's float32 inputs and outputs, cast at the border (default true, as
   * onnxruntime's float16 converter with keep_io_types=True); false declares them float16.
   */
  keepIoTypes?: boolean;
}

/** Refuses a fusion option `jit` would not accept, before the model is read. */
function checkFusion(fusion: unknown): void {
  const valid = fusion === undefined || typeof fusion === 'function' ||
    (typeof fusion === 'string' && Object.hasOwn(STRATEGIES, fusion)) ||
    (typeof fusion === 'object' && fusion !== null && typeof (fusion as { groups?: unknown }).groups === 'function');
  if (valid) return;
  const got = typeof fusion === 'string' ? JSON.stringify(fusion) : fusion === null ? 'null'
    : typeof fusion === 'object' ? 'an object without a groups function' : `a ${typeof fusion}`;
  throw new SinterError('loadOnnx', `fusion must be ${Object.keys(STRATEGIES).map((s) => `'${s}'`).join(', ')}, ` +
    `a strategy object with groups(graph) or a function returning groups; got ${got}`);
}

/**
 * Loads an ONNX model to run on `device`: its bytes, a file path or file: URL (Node), or an http(s)/blob: URL
 * (fetched, in the browser and in Node; `onProgress` follows large downloads). Tensors kept in external files are
 * read from `externalData` or from beside the model. `fusion` picks how the traced model is fused into kernels
 * (see `jit`); `model.report()` names the strategy and lists the kernels. Every unsupported op or type is
 * reported at once, as an OnnxUnsupportedError listing each (op, domain, opset, reason).
 */
export async function loadOnnx(source: ByteSource, options: LoadOnnxOptions = {}): Promise<OnnxModel> {
  const device = resolveDevice('loadOnnx', options.device);
  checkFusion(options.fusion);
  if (options.dtype !== undefined && options.dtype !== 'float32' && options.dtype !== 'float16') {
    throw new SinterError('loadOnnx', `dtype must be 'float32' or 'float16', got ${JSON.stringify(options.dtype)}`);
  }
  if (options.keepIoTypes !== undefined && options.dtype !== 'float16') throw new SinterError('loadOnnx', `keepIoTypes applies only with dtype 'float16'`);
  const proto = decodeModel(await readSource(source, 'the model', options.onProgress));
  await resolveExternalData(proto, locationOf(source), options.externalData ?? {}, options.onProgress);
  const model = options.dtype === 'float16' ? convertModelToFloat16(proto, { keepIoTypes: options.keepIoTypes }).model : proto;
  return new OnnxModel(model, device, { fusion: options.fusion });
}

/** Decodes a serialised TensorProto (the .pb files of ONNX test data) into its name, type, shape and values. */
export function readOnnxTensor(bytes: Uint8Array): OnnxTensorData & { readonly name: string } {
  const proto = decodeTensorProto(bytes);
  const t = fromTensorProto(proto, 'tensor');
  return { name: proto.name ?? '', dtype: t.dtype, shape: t.shape, data: t.data };
}
