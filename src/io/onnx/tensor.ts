import { f16round, getFloat16 } from '@petamoriken/float16';
import { SinterError, fmtShape } from '../../errors.js';
import type { DeviceName } from '../../backend/backend.js';
import type { DType } from '../../tensor/dtype.js';
import { tensor } from '../../tensor/creation.js';
import { numel } from '../../tensor/shape.js';
import type { Tensor } from '../../tensor/tensor.js';
import type { TensorProto } from './proto.js';
import { unpackDevice } from '../../backend/webgpu/pack.js';

/** ONNX element types by their TensorProto.DataType code. */
const CODES = {
  1: 'float32', 2: 'uint8', 3: 'int8', 4: 'uint16', 5: 'int16', 6: 'int32', 7: 'int64', 8: 'string', 9: 'bool', 10: 'float16',
  11: 'float64', 12: 'uint32', 13: 'uint64', 14: 'complex64', 15: 'complex128', 16: 'bfloat16', 17: 'float8e4m3fn',
  18: 'float8e4m3fnuz', 19: 'float8e5m2', 20: 'float8e5m2fnuz', 21: 'uint4', 22: 'int4', 23: 'float4e2m1', 24: 'float8e8m0',
  25: 'uint2', 26: 'int2',
} as const;

/** An ONNX element type, named like sinter's dtypes (float32, int64, …). */
export type OnnxDType = (typeof CODES)[keyof typeof CODES];

export function onnxDType(code: number | undefined, what: string): OnnxDType {
  const d = CODES[(code ?? 0) as keyof typeof CODES];
  if (!d) throw new SinterError('loadOnnx', `${what} has unknown ONNX element type code ${code}`);
  return d;
}

/**
 * The sinter dtype holding each ONNX type on a device: int64 is narrowed to int32 and float64 to float32 (both
 * checked: a value that does not fit is an error), the rest have none. float64 appears in PyTorch exports mostly as
 * constants of shape arithmetic (opset 7's Reshape targets are double Constants cast to int64), evaluated exactly on
 * the host; what reaches a device computes in float32, as onnxruntime's float32 kernels would after a Cast.
 */
const ON_DEVICE: Partial<Record<OnnxDType, DType>> = {
  float32: 'float32', float16: 'float16', int32: 'int32', int8: 'int8', uint8: 'uint8', bool: 'bool', int64: 'int32', float64: 'float32',
};

/** Why a type cannot be computed with, or undefined when it can. */
export function unsupportedDType(d: OnnxDType): string | undefined {
  return ON_DEVICE[d] ? undefined : `the engine has no ${d} dtype (it has float32, float16, int32, int8, uint8, bool; int64 is narrowed to int32, float64 to float32)`;
}

export function deviceDType(d: OnnxDType, what: string): DType {
  const t = ON_DEVICE[d];
  if (!t) throw new SinterError('onnx', `${what} is ${d}, but ${unsupportedDType(d)}`);
  return t;
}

/**
 * A tensor held on the host as plain numbers: ONNX shape arithmetic (shapes, axes, indices, scales) runs on these
 * while a model is traced, so it folds to constants instead of reading device values. Also how ONNX tensors
 * (initializers, test data) arrive. int64 values are exact up to 2^53.
 */
export class HostTensor {
  constructor(
    readonly dtype: OnnxDType,
    readonly shape: readonly number[],
    readonly data: ArrayLike<number>,
  ) {
    if (data.length !== numel(shape)) throw new SinterError('onnx', `a ${dtype} tensor of shape ${fmtShape(shape)} needs ${numel(shape)} values, got ${data.length}`);
  }

  describe(): string {
    return `${this.dtype}${fmtShape(this.shape)}`;
  }

  /** The single value of a one-element tensor. */
  scalar(what: string): number {
    if (this.data.length !== 1) throw new SinterError('onnx', `${what} must hold one value, got ${this.describe()}`);
    return this.data[0]!;
  }
}

/** The value a number becomes when stored as ONNX type `d` (as a cast would make it). */
export function castTo(d: OnnxDType, v: number): number {
  switch (d) {
    case 'float32':
      return Math.fround(v);
    case 'float16':
      return f16round(v);
    case 'float64':
      return v;
    case 'bool':
      return v !== 0 ? 1 : 0;
    case 'int64':
      return Number.isFinite(v) ? Math.trunc(v) : 0;
    default: {
      const bits = INT_BITS[d];
      if (!bits) throw new SinterError('onnx', `cannot compute with ${d} values on the host`);
      if (!Number.isFinite(v)) return 0;
      const [size, signed] = bits, m = 2 ** size;
      const w = ((Math.trunc(v) % m) + m) % m;
      return signed && w >= m / 2 ? w - m : w;
    }
  }
}

/** The largest finite float32. */
const FLOAT32_MAX = 3.4028234663852886e38;

const INT_BITS: Partial<Record<OnnxDType, [number, boolean]>> = { int32: [32, true], int16: [16, true], int8: [8, true], uint32: [32, false], uint16: [16, false], uint8: [8, false] };

function bfloat16FromBits(bits: number): number {
  const u = new Uint32Array([bits << 16]);
  return new Float32Array(u.buffer)[0]!;
}

/** Values of the fixed-width little-endian `raw_data` encoding. */
function fromRaw(d: OnnxDType, raw: Uint8Array, n: number, what: string): ArrayLike<number> {
  const width: Partial<Record<OnnxDType, number>> = {
    float32: 4, uint8: 1, int8: 1, uint16: 2, int16: 2, int32: 4, int64: 8, bool: 1, float16: 2, float64: 8, uint32: 4, uint64: 8, bfloat16: 2,
  };
  const w = width[d];
  if (!w) throw new SinterError('loadOnnx', `${what}: ${unsupportedDType(d)}`);
  if (raw.length !== n * w) throw new SinterError('loadOnnx', `${what}: raw_data holds ${raw.length} bytes, but ${n} ${d} values need ${n * w}`);
  // float16 weights (a converted model's, or a float16 model's) through the 65536-entry table, not value by value.
  if (d === 'float16' && raw.byteOffset % 2 === 0) return unpackDevice('float16', raw as Uint8Array<ArrayBuffer>, n);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const read: (i: number) => number = {
    float32: (i: number) => view.getFloat32(i * 4, true),
    uint8: (i: number) => view.getUint8(i),
    int8: (i: number) => view.getInt8(i),
    bool: (i: number) => (view.getUint8(i) !== 0 ? 1 : 0),
    uint16: (i: number) => view.getUint16(i * 2, true),
    int16: (i: number) => view.getInt16(i * 2, true),
    int32: (i: number) => view.getInt32(i * 4, true),
    uint32: (i: number) => view.getUint32(i * 4, true),
    int64: (i: number) => Number(view.getBigInt64(i * 8, true)),
    uint64: (i: number) => Number(view.getBigUint64(i * 8, true)),
    float64: (i: number) => view.getFloat64(i * 8, true),
    float16: (i: number) => getFloat16(view, i * 2, true),
    bfloat16: (i: number) => bfloat16FromBits(view.getUint16(i * 2, true)),
  }[d as 'float32'];
  const out = d === 'float32' || d === 'float16' || d === 'bfloat16' ? new Float32Array(n) : new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = read(i);
  return out;
}

/** Values of the typed fields (float_data, int32_data, int64_data, double_data, uint64_data). */
function fromFields(d: OnnxDType, t: TensorProto, what: string): ArrayLike<number> {
  switch (d) {
    case 'float32':
      return Float32Array.from(t.floatData);
    case 'int64':
      return t.int64Data;
    case 'float64':
      return t.doubleData;
    case 'uint32':
    case 'uint64':
      return t.uint64Data;
    case 'float16':
      // The bit patterns, one per int32.
      return Float32Array.from(t.int32Data, (b) => getFloat16(new DataView(new Uint16Array([b]).buffer), 0, true));
    case 'bfloat16':
      return Float32Array.from(t.int32Data, bfloat16FromBits);
    case 'int32':
    case 'int16':
    case 'int8':
    case 'uint16':
    case 'uint8':
    case 'bool':
      return t.int32Data.map((v) => castTo(d, v));
    default:
      throw new SinterError('loadOnnx', `${what}: ${unsupportedDType(d)}`);
  }
}

/**
 * Decodes a TensorProto's values: `raw_data` or the typed fields (loadOnnx has pointed external data at its bytes).
 * Types the engine cannot hold (4-bit, float8, string, …) are refused.
 */
export function fromTensorProto(t: TensorProto, what: string): HostTensor {
  const name = t.name ? `${what} '${t.name}'` : what;
  if (t.dataLocation === 1 || t.externalData.length > 0) {
    // loadOnnx resolves external data before this; a TensorProto decoded on its own cannot.
    throw new SinterError('loadOnnx', `${name} keeps its data in an external file, which only loadOnnx (with the model's path, URL or externalData) can read`);
  }
  const d = onnxDType(t.dataType, name);
  const shape = t.dims;
  const n = numel(shape);
  const raw = t.rawData && t.rawData.length > 0 ? t.rawData : null;
  const data = raw ? fromRaw(d, raw, n, name) : fromFields(d, t, name);
  if (data.length !== n) throw new SinterError('loadOnnx', `${name} has shape ${fmtShape(shape)} (${n} values) but holds ${data.length} values`);
  return new HostTensor(d, shape, data);
}

/**
 * Uploads a host tensor to `device` in its device dtype; int64 values must fit int32 (the device's integer type),
 * finite float64 values float32's range.
 */
export function uploadHost(h: HostTensor, device: DeviceName, what: string): Tensor {
  const dtype = deviceDType(h.dtype, what);
  if (h.dtype === 'int64' || h.dtype === 'float64') {
    const [lo, hi, into] = h.dtype === 'int64' ? [-2147483648, 2147483647, "int32, the device's integer type"] : [-FLOAT32_MAX, FLOAT32_MAX, 'float32, the device type of float64 values'];
    for (let i = 0; i < h.data.length; i++) {
      const v = h.data[i]!;
      if (v < lo || v > hi) {
        if (h.dtype === 'float64' && !Number.isFinite(v)) continue;
        throw new SinterError('onnx', `${what} is ${h.dtype} and holds ${v} (at flat index ${i}), which does not fit ${into}`);
      }
    }
  }
  const data = h.data instanceof Float32Array || h.data instanceof Float64Array ? h.data : Float64Array.from(h.data);
  return tensor(data, { shape: h.shape, dtype, device });
}
