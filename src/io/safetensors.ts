import { getFloat16, setFloat16 } from '@petamoriken/float16';
import type { DeviceOption } from '../backend/backend.js';
import { SinterError, fmtShape } from '../errors.js';
import { type DType, type HostArray, allocHost } from '../tensor/dtype.js';
import { fromHost } from '../tensor/creation.js';
import type { Tensor } from '../tensor/tensor.js';

// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?},
// then the raw little-endian tensor bytes, offsets relative to the end of the header.

const CODE: Record<DType, string> = { float32: 'F32', float16: 'F16', int32: 'I32', int8: 'I8', uint8: 'U8', bool: 'BOOL' };

/** How each stored dtype is read: bytes per element, the dtype it becomes, and a reader. */
const READ: Record<string, { size: number; dtype: DType; get: (v: DataView, at: number) => number }> = {
  F32: { size: 4, dtype: 'float32', get: (v, at) => v.getFloat32(at, true) },
  F64: { size: 8, dtype: 'float32', get: (v, at) => v.getFloat64(at, true) },
  F16: { size: 2, dtype: 'float16', get: (v, at) => getFloat16(v, at, true) },
  // bfloat16 is the top half of a float32: widening is exact.
  BF16: { size: 2, dtype: 'float32', get: (v, at) => new Float32Array(new Uint32Array([v.getUint16(at, true) << 16]).buffer)[0]! },
  I64: { size: 8, dtype: 'int32', get: (v, at) => Number(v.getBigInt64(at, true)) },
  I32: { size: 4, dtype: 'int32', get: (v, at) => v.getInt32(at, true) },
  I16: { size: 2, dtype: 'int32', get: (v, at) => v.getInt16(at, true) },
  I8: { size: 1, dtype: 'int8', get: (v, at) => v.getInt8(at) },
  U8: { size: 1, dtype: 'uint8', get: (v, at) => v.getUint8(at) },
  BOOL: { size: 1, dtype: 'bool', get: (v, at) => (v.getUint8(at) ? 1 : 0) },
};

const WRITE_SIZE: Record<DType, number> = { float32: 4, float16: 2, int32: 4, int8: 1, uint8: 1, bool: 1 };

function writeValue(v: DataView, at: number, dtype: DType, x: number): void {
  switch (dtype) {
    case 'float32': return v.setFloat32(at, x, true);
    case 'float16': return setFloat16(v, at, x, true);
    case 'int32': return v.setInt32(at, x, true);
    case 'int8': return v.setInt8(at, x);
    default: return v.setUint8(at, x);
  }
}

/** Serialises named tensors (e.g. `model.stateDict()`) to safetensors bytes. */
export async function saveSafetensors(tensors: Record<string, Tensor>, metadata?: Record<string, string>): Promise<Uint8Array> {
  const names = Object.keys(tensors).sort();
  if (names.includes('__metadata__')) throw new SinterError('saveSafetensors', "'__metadata__' is reserved and cannot name a tensor");
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let offset = 0;
  for (const name of names) {
    const t = tensors[name]!;
    const bytes = t.numel() * WRITE_SIZE[t.dtype];
    header[name] = { dtype: CODE[t.dtype], shape: [...t.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + new TextEncoder().encode(json).length) % 8)) % 8);
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const name of names) {
    const t = tensors[name]!;
    const values = await t.data();
    for (let i = 0; i < values.length; i++, at += WRITE_SIZE[t.dtype]) writeValue(view, at, t.dtype, values[i]!);
  }
  return out;
}

/**
 * Reads safetensors bytes into named tensors on `device`. F32, F16, I32, I8, U8 and BOOL load as
 * themselves; BF16 and F64 become float32, I16 and I64 become int32 (an I64 value outside the int32
 * range is an error). `__metadata__` is returned separately.
 */
export function loadSafetensors(bytes: Uint8Array | ArrayBuffer, opts: { device?: DeviceOption } = {}): { tensors: Record<string, Tensor>; metadata: Record<string, string> } {
  const op = 'loadSafetensors';
  const buf = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.length < 8) throw new SinterError(op, `not a safetensors file: ${buf.length} bytes is shorter than the 8-byte header length`);
  const n = Number(view.getBigUint64(0, true));
  if (n > buf.length - 8) throw new SinterError(op, `not a safetensors file: the header claims ${n} bytes but only ${buf.length - 8} follow`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder().decode(buf.subarray(8, 8 + n)));
  } catch (e) {
    throw new SinterError(op, `not a safetensors file: the header is not JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new SinterError(op, `not a safetensors file: the header must be a JSON object, got ${Array.isArray(header) ? 'an array' : typeof header}`);
  }
  const dataStart = 8 + n, dataLength = buf.length - dataStart;
  const metadata = checkedMetadata((header as Record<string, unknown>).__metadata__);
  // Every entry is checked, and the ranges together, before anything is allocated.
  const entries = Object.entries(header as Record<string, unknown>).filter(([name]) => name !== '__metadata__').map(([name, entry]) => checkedEntry(name, entry, dataLength));
  const byStart = [...entries].sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < byStart.length; i++) {
    const prev = byStart[i - 1]!, cur = byStart[i]!;
    if (cur.begin < prev.end) {
      throw new SinterError(op, `tensors '${prev.name}' (bytes ${prev.begin}–${prev.end}) and '${cur.name}' (bytes ${cur.begin}–${cur.end}) overlap in the data section`);
    }
  }
  const tensors: Record<string, Tensor> = {};
  for (const { name, dtype, shape, begin, count } of entries) {
    const r = READ[dtype]!;
    const host: HostArray = allocHost(r.dtype, count);
    for (let i = 0; i < count; i++) {
      const v = r.get(view, dataStart + begin + i * r.size);
      if (dtype === 'I64' && (v > 2147483647 || v < -2147483648)) {
        throw new SinterError(op, `tensor '${name}' holds the int64 value ${v} at element ${i}, which does not fit int32`);
      }
      host[i] = v;
    }
    tensors[name] = fromHost(op, host, shape, r.dtype, opts.device);
  }
  return { tensors, metadata };
}

interface Entry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
  count: number;
}

/** One header entry checked against the format and the data section's length (nothing is trusted). */
function checkedEntry(name: string, entry: unknown, dataLength: number): Entry {
  const op = 'loadSafetensors';
  const bad = (what: string): never => {
    throw new SinterError(op, `tensor '${name}' ${what}`);
  };
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return bad(`has the header entry ${JSON.stringify(entry)}, which is not an object`);
  const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
  if (typeof dtype !== 'string') return bad(`has no dtype string (got ${JSON.stringify(dtype)})`);
  const r = READ[dtype];
  if (!r) return bad(`has dtype ${dtype}, which sinter cannot load (supported: ${Object.keys(READ).join(', ')})`);
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) return bad(`has an invalid shape ${JSON.stringify(shape)}`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    return bad(`has invalid data_offsets ${JSON.stringify(offsets)} (expected [begin, end], two non-negative integers)`);
  }
  const [begin, end] = offsets as [number, number];
  const count = shape.reduce((a: number, d: number) => a * d, 1);
  if (!(begin <= end && end <= dataLength && end - begin === count * r.size)) {
    bad(`(${dtype} ${fmtShape(shape)}) has data_offsets [${begin}, ${end}], which do not hold its ${count * r.size} bytes within the ${dataLength}-byte data section`);
  }
  return { name, dtype, shape, begin, end, count };
}

function checkedMetadata(m: unknown): Record<string, string> {
  if (m === undefined) return {};
  if (typeof m !== 'object' || m === null || Array.isArray(m) || !Object.values(m).every((v) => typeof v === 'string')) {
    throw new SinterError('loadSafetensors', `__metadata__ must map strings to strings, got ${JSON.stringify(m).slice(0, 200)}`);
  }
  return m as Record<string, string>;
}
