/// <reference types="@webgpu/types" />
import type { SinterError } from '../../errors.js';
import type { DType } from '../../tensor/dtype.js';
import type { Storage } from '../backend.js';
import { deviceBytes } from './pack.js';

/** Elements of one dtype in a (pooled) GPU buffer; the buffer may be larger than `byteLength`. */
export class WebGpuStorage implements Storage {
  readonly device = 'webgpu' as const;
  refs = 0;
  readonly byteLength: number;
  /** Set when the kernel that wrote this storage failed: reading it, or using it as an input, throws this. */
  error: SinterError | null = null;

  constructor(
    readonly dtype: DType,
    readonly length: number,
    readonly buffer: GPUBuffer,
  ) {
    this.byteLength = deviceBytes(dtype, length);
  }
}
