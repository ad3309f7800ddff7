import type { HostArray } from '../../tensor/dtype.js';
import { isContiguous, numel } from '../../tensor/shape.js';
import { gatherView } from '../../tensor/tensor.js';
import type { CpuView } from '../../ops/op.js';

/** The view's values in row-major order: the storage itself (a subarray) when already contiguous, else a copy. */
export function readContiguous(v: CpuView): HostArray {
  if (isContiguous(v.shape, v.strides)) return v.data.subarray(v.offset, v.offset + numel(v.shape));
  return gatherView(v.data, v.shape, v.strides, v.offset, v.dtype);
}
