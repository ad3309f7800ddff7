import { type DType, type HostArray, allocHost, itemSize } from '../../tensor/dtype.js';

// Host arrays ↔ the bytes WebGPU buffers hold (see src/kernels/wgsl/dtype.ts): float32 and int32 as
// themselves; float16 as IEEE binary16 bits, two per word (the same bytes whether the shader reads
// them as array<f16> or unpacks u32 words); int8, uint8 and bool as bytes, four per word. Buffers
// are whole 32-bit words, so the byte length rounds up to a multiple of 4.

/** Bytes a storage of `length` elements of `dtype` occupies on the device. */
export function deviceBytes(dtype: DType, length: number): number {
  return Math.ceil((length * itemSize(dtype)) / 4) * 4;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** binary16 bits of `v`, rounded to nearest even (host float16 values are already exact). */
function halfBits(v: number): number {
  f32[0] = v;
  const b = u32[0]!;
  const a = b & 0x7fffffff, s = (b >>> 16) & 0x8000;
  if (a >= 0x7f800000) return s | 0x7c00 | (a > 0x7f800000 ? 0x200 : 0);
  if (a >= 0x477ff000) return s | 0x7c00;
  if (a < 0x38800000) {
    f32[0] = v < 0 ? -v : v;
    const q = f32[0]! * 16777216;
    const r = Math.round(q);
    return s | (r - q === 0.5 && r % 2 === 1 ? r - 1 : r);
  }
  return s | (((a + 0xfff + ((a >>> 13) & 1)) >>> 13) - (0x38000000 >>> 13));
}

let halfTable: Float32Array | undefined;
/** All 65536 binary16 values as float32, indexed by their bits. */
function halves(): Float32Array {
  if (halfTable) return halfTable;
  halfTable = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const e = (h >> 10) & 31, m = h & 0x3ff;
    const mag = e === 0 ? m * 2 ** -24 : e === 31 ? (m ? NaN : Infinity) : (1 + m / 1024) * 2 ** (e - 15);
    halfTable[h] = h & 0x8000 ? -mag : mag;
  }
  return halfTable;
}

/**
 * The device bytes for host values of `dtype`: a view of `data` itself when its bytes are already the
 * device's (writeBuffer copies them at the call, so an upload makes no copy of its own), else a fresh
 * array (Dawn must not see a SharedArrayBuffer, and lengths pad to words).
 */
export function packHost(dtype: DType, data: HostArray): Uint8Array<ArrayBuffer> {
  const bytes = deviceBytes(dtype, data.length);
  if (dtype !== 'float16' && data.byteLength === bytes && data.buffer instanceof ArrayBuffer) return new Uint8Array(data.buffer, data.byteOffset, bytes);
  const out = new Uint8Array(bytes);
  if (dtype === 'float16') {
    const bits = new Uint16Array(out.buffer, 0, data.length);
    for (let i = 0; i < data.length; i++) bits[i] = halfBits(data[i]!);
  } else {
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }
  return out;
}

/**
 * Host values of `dtype` from `length` elements of device bytes (float16 widened to float32). Takes
 * `bytes` over (a readback's own copy): other dtypes are returned as a view of them, not copied again.
 */
export function unpackDevice(dtype: DType, bytes: Uint8Array<ArrayBuffer>, length: number): HostArray {
  if (dtype !== 'float16') {
    const Host = allocHost(dtype, 0).constructor as new (b: ArrayBuffer, offset: number, length: number) => HostArray;
    if (bytes.byteOffset % itemSize(dtype) === 0) return new Host(bytes.buffer, bytes.byteOffset, length);
  }
  const out = allocHost(dtype, length);
  if (dtype === 'float16') {
    const bits = new Uint16Array(bytes.buffer, bytes.byteOffset, length);
    const table = halves();
    for (let i = 0; i < length; i++) out[i] = table[bits[i]!]!;
  } else {
    new Uint8Array(out.buffer).set(bytes.subarray(0, out.byteLength));
  }
  return out;
}
