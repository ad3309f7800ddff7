import ndarray, { type NdArray } from 'ndarray';
import { SinterError } from '../errors.js';
import type { DType } from '../tensor/dtype.js';
import { type CreateOptions, tensor } from '../tensor/creation.js';
import type { Tensor } from '../tensor/tensor.js';

const FROM_ND: Record<string, DType> = {
  float32: 'float32', float64: 'float32', array: 'float32', generic: 'float32',
  int32: 'int32', int16: 'int32', uint16: 'int32', int8: 'int8', uint8: 'uint8', uint8_clamped: 'uint8',
};

/**
 * A tensor holding an ndarray's values (its strides and offset respected). The dtype follows the
 * ndarray's (float64 and plain arrays become float32) unless `opts.dtype` says otherwise.
 */
export function fromNdarray(nd: NdArray, opts: CreateOptions = {}): Tensor {
  if (!nd || !Array.isArray(nd.shape) || !Array.isArray(nd.stride) || typeof nd.get !== 'function') {
    throw new SinterError('fromNdarray', 'expected an ndarray (an object with data, shape, stride, offset and get)');
  }
  const inferred = FROM_ND[nd.dtype];
  if (!inferred && !opts.dtype) throw new SinterError('fromNdarray', `ndarray dtype '${nd.dtype}' has no sinter dtype; pass { dtype }`);
  const shape = nd.shape;
  const n = shape.reduce((a, b) => a * b, 1);
  const values = new Float64Array(n);
  const idx = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    let at = nd.offset;
    for (let d = 0; d < shape.length; d++) at += idx[d]! * nd.stride[d]!;
    values[i] = Number((nd.data as ArrayLike<number>)[at]);
    for (let d = shape.length - 1; d >= 0 && ++idx[d]! === shape[d]; d--) idx[d] = 0;
  }
  return tensor(values, { dtype: opts.dtype ?? inferred, device: opts.device, shape });
}

/** The tensor's values as a row-major ndarray (float16 as float32, bool as uint8). */
export async function toNdarray(t: Tensor): Promise<NdArray> {
  return ndarray(await t.data(), [...t.shape]);
}
