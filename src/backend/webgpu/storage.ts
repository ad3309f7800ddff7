/// <reference types="@webgpu/types" />
import type { DType } from '../../tensor/dtype.js';
import type { Storage } from '../backend.js';
import type { WebGpuBackend } from './backend.js';
import type { Check } from './check.js';
import { deviceBytes } from './pack.js';

/**
 * Elements of one dtype in a (pooled) GPU buffer; the buffer may be larger than `byteLength`. It
 * belongs to the backend (one GPUDevice) that made it: after that device is lost and `init` opens
 * another, releasing it never puts its buffer into the new device's pool, and using it is a clear error.
 */
export class WebGpuStorage implements Storage {
  readonly device = 'webgpu' as const;
  refs = 0;
  readonly byteLength: number;
  /**
   * Checks of the kernels its contents depend on that had not passed when it was written: reading
   * it waits for them and throws the first failure; an op given it as an input throws a known one.
   */
  checks: readonly Check[] = [];

  constructor(
    readonly dtype: DType,
    readonly length: number,
    readonly buffer: GPUBuffer,
    readonly owner: WebGpuBackend,
  ) {
    this.byteLength = deviceBytes(dtype, length);
  }
}
