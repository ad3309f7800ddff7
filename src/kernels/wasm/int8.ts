import { SinterError } from '../../errors.js';
import { Code, ModuleBuilder } from './emitter.js';
import { heap, instantiate, memoryImport } from './heap.js';
import { availableThreads, parallelFor } from './threads.js';
import { type CacheStats, LruCache } from '../../lru.js';
import { reportCaches } from '../../tensor/memory.js';

// The integer GEMM of the int8 layers (src/quant/gemm.ts) in WebAssembly SIMD, blocked as the float one
// (src/kernels/wasm/gemm.ts): C[i, j] = Σ_k A[i, k]·B[j, k] with A the weights (rows = output channels) and
// B the activations (columns = a conv's output pixels through an implicit im2col, or a matmul's input rows).
// Operands are centred on their zero points as int16 (values in [−255, 255]) and packed in k pairs:
//   A panels: 4 rows × each pair (k, k+1) as one i32 (two int16), broadcast with v128.load32_splat;
//   B panels: 8 columns × each pair, two v128 of four columns' pairs.
// i32x4.dot_i16x8_s multiplies the pairs and sums each pair: one instruction gives four columns' sums over two
// k, exact in int32 (wrapping as the JavaScript reference's Math.imul sums do). The 4×8 micro-kernel keeps its
// tile in eight v128 accumulators, and its epilogue works on whole vectors of one output channel's consecutive
// pixels (NCHW rows): f32(acc)·multiplier + offset (float32 steps, as the reference), then for int8/uint8
// outputs f32x4.nearest (ties to even), the zero point and the clamp (a fused ReLU/ReLU6), saturated narrowing
// to bytes and one 8-byte store. A B panel is packed once (from the input copied into the heap once, centred
// and zero-padded, so no tap needs a bounds check: padding reads 0) and serves every A panel; whole rows of
// 8 pixels at stride 1 or 2 pack with v128 loads and shuffles, other panels element by element. Panels of
// columns go to the thread pool's threads. A K that is odd pads A with a zero pair half (B's half is then read
// from a valid address and multiplied by 0). The weights are packed on every call, in wasm (eight values a step):
// O(N·K) against the GEMM's O(M·N·K), and a kernel sees a storage's values, not its identity and version, so a
// cache of packed weights could not tell an old weight from a new one in a reused heap block.
// Convs with one input channel per group (depthwise) run direct windows instead (`emitDepthwise`), and
// `toFloat`/`fromFloat` convert int8/uint8 ↔ float32 for the integer-ended elementwise kernels (int8-map.ts).

const MR = 4, NR = 8;
/** Multiply-adds below which a share of the columns is not worth a thread's wake-up (~0.05 ms of work). */
const MIN_WORK_PER_THREAD = 1 << 19;
/** Tasks per thread: threads claim them as they finish, so one that runs late or slow leaves less for the others to wait on. */
const TASKS_PER_THREAD = 4;

/** How many tasks `units` (panels, channels) of `work` multiply-adds split into: one when too small for a second thread. */
function taskCount(units: number, work: number): number {
  if (work < 2 * MIN_WORK_PER_THREAD) return 1;
  return Math.max(1, Math.min(units, Math.floor(work / (MIN_WORK_PER_THREAD / 2)), availableThreads() * TASKS_PER_THREAD));
}

/** How many GEMMs (conv2d: per group) the wasm int8 kernel has run (tests check that it ran). */
let calls = 0;
export function wasmInt8Calls(): number {
  return calls;
}

/** Raw encodings of the SIMD/memory instructions the emitter's tables do not name. */
const raw = {
  dot: (c: Code) => c.bytes.push(0xfd, 0xba, 0x01), // i32x4.dot_i16x8_s
  shuffle: (c: Code, lanes: readonly number[]) => c.bytes.push(0xfd, 0x0d, ...lanes), // i8x16.shuffle
  narrow32: (c: Code) => c.bytes.push(0xfd, 0x85, 0x01), // i16x8.narrow_i32x4_s
  narrow16: (c: Code, signed: boolean) => c.bytes.push(0xfd, signed ? 0x65 : 0x66), // i8x16.narrow_i16x8_s/u
  store64Lane0: (c: Code, offset: number) => c.bytes.push(0xfd, 0x5b, 0x03, offset, 0x00), // v128.store64_lane (offset < 128)
  load8u: (c: Code) => c.bytes.push(0x2d, 0x00, 0x00),
  load16s: (c: Code, offset = 0) => c.bytes.push(0x2e, 0x01, offset),
  store8: (c: Code) => c.bytes.push(0x3a, 0x00, 0x00),
  store16: (c: Code, offset = 0) => c.bytes.push(0x3b, 0x01, offset),
  f32FromBits: (c: Code) => c.op('f32.reinterpret_i32'),
  xor: (c: Code) => c.bytes.push(0x73), // i32.xor
  load8x8: (c: Code, signed: boolean) => c.bytes.push(0xfd, signed ? 0x01 : 0x02, 0x03, 0x00), // v128.load8x8_s/u
  i16Sub: (c: Code) => c.bytes.push(0xfd, 0x91, 0x01), // i16x8.sub
  i16Splat: (c: Code) => c.bytes.push(0xfd, 0x10), // i16x8.splat
  // int8/uint8 ↔ float32, four lanes: i16x8.extend_low_i8x16_s/u, i32x4.extend_low_i16x8_s/u; v128.store32_lane; i32.trunc_sat_f32_s.
  extend8: (c: Code, signed: boolean) => c.bytes.push(0xfd, signed ? 0x87 : 0x89, 0x01),
  extend16: (c: Code, signed: boolean) => c.bytes.push(0xfd, signed ? 0xa7 : 0xa9, 0x01),
  store32Lane0: (c: Code) => c.bytes.push(0xfd, 0x5a, 0x02, 0x00, 0x00),
  store32Lane: (c: Code, offset: number, lane: number) => c.bytes.push(0xfd, 0x5a, 0x02, offset, lane), // v128.store32_lane (offset < 128)
  truncSat: (c: Code) => c.bytes.push(0xfc, 0x00),
  load8s: (c: Code) => c.bytes.push(0x2c, 0x00, 0x00),
  load16Splat: (c: Code) => c.bytes.push(0xfd, 0x08, 0x01, 0x00), // v128.load16_splat
  extmul: (c: Code, high: boolean) => c.bytes.push(0xfd, high ? 0xbd : 0xbc, 0x01), // i32x4.extmul_low/high_i16x8_s
};

/** i16 lanes a0 b0 a1 b1 a2 b2 a3 b3 (low) / a4 b4 … a7 b7 (high) of two i16x8 vectors a, b. */
const INTERLEAVE_LO = [0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23];
const INTERLEAVE_HI = [8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31];
/** The even i16 lanes of a then b (stride-2 pixels). */
const EVENS = [0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29];

/** The i32 fields of `centre`'s parameter block (addresses and strides in bytes). */
const CENTRE_FIELDS = ['src', 's0', 's1', 's2', 's3', 'n0', 'n1', 'n2', 'n3', 'flip', 'zp', 'dst', 'd0', 'd1', 'd2'] as const;
/** The i32 fields of `gemm`'s parameter block. */
const GEMM_FIELDS = [
  'aBase', 'aPanels', 'pairs', 'j0', 'j1', 'bBase', 'colOff', 'rowOff', 'outOff', 'flags', 'bPanel', 'out', 'ldi', 'rows',
  'mode', 'mult', 'offs', 'zo', 'lo', 'hi', 'scratch',
] as const;
type GemmField = (typeof GEMM_FIELDS)[number];
/** Output modes: int32 sums, float32 f32(acc)·mult + offs, requantised int8 / uint8. */
export type Int8OutputMode = 'int32' | 'float32' | 'int8' | 'uint8';
const MODES: readonly Int8OutputMode[] = ['int32', 'float32', 'int8', 'uint8'];
/** Panel flags: B's 8 columns are consecutive int16 (stride 1) / every other one (stride 2); the outputs are consecutive. */
const FLAG = { stride1: 1, stride2: 2, outContiguous: 4 } as const;

function fields<F extends string>(c: Code, names: readonly F[]): Record<F, number> {
  const f = {} as Record<F, number>;
  names.forEach((name, i) => {
    f[name] = c.local('i32');
    c.get(0).mem('i32.load', 4 * i).set(f[name]);
  });
  return f;
}

function emitCentre(m: ModuleBuilder): void {
  // centre(p): dst[i0·d0 + i1·d1 + i2·d2 + 2·i3] = int16(byte at src + Σ i·s, as int8 when flip = 128) − zp for the
  // 4-d index (n0, n1, n2, n3): activations into the heap's centred, padded copy (the caller zeroes the padding).
  m.func('centre', ['i32'], [], (c) => {
    const f = fields(c, CENTRE_FIELDS);
    const [i0, i1, i2, i3] = [c.local('i32'), c.local('i32'), c.local('i32'), c.local('i32')];
    const s = c.local('i32'), d = c.local('i32');
    const zpv = c.local('v128');
    c.get(f.zp);
    raw.i16Splat(c);
    c.set(zpv);
    c.forRange(i0, () => c.i32(0), () => c.get(f.n0), 1, () => {
      c.forRange(i1, () => c.i32(0), () => c.get(f.n1), 1, () => {
        c.forRange(i2, () => c.i32(0), () => c.get(f.n2), 1, () => {
          c.get(f.src).get(i0).get(f.s0).op('i32.mul', 'i32.add').get(i1).get(f.s1).op('i32.mul', 'i32.add').get(i2).get(f.s2).op('i32.mul', 'i32.add').set(s);
          c.get(f.dst).get(i0).get(f.d0).op('i32.mul', 'i32.add').get(i1).get(f.d1).op('i32.mul', 'i32.add').get(i2).get(f.d2).op('i32.mul', 'i32.add').set(d);
          // Rows of consecutive bytes: eight at a time (load8x8 widens them), then the row's tail.
          c.i32(0).set(i3);
          const vectorRow = (signed: boolean) => c.block((done) => {
            c.loop((top) => {
              c.get(i3).i32(8).op('i32.add').get(f.n3).op('i32.gt_s').brIf(done);
              c.get(d).get(s);
              raw.load8x8(c, signed);
              c.get(zpv);
              raw.i16Sub(c);
              c.mem('v128.store');
              c.get(s).i32(8).op('i32.add').set(s);
              c.get(d).i32(16).op('i32.add').set(d);
              c.get(i3).i32(8).op('i32.add').set(i3);
              c.br(top);
            });
          });
          c.get(f.s3).i32(1).op('i32.eq').if(() => {
            c.get(f.flip).if(() => vectorRow(true));
            c.get(f.flip).op('i32.eqz').if(() => vectorRow(false));
          });
          c.forRange(i3, () => c.get(i3), () => c.get(f.n3), 1, () => {
            c.get(d);
            c.get(s);
            raw.load8u(c);
            c.get(f.flip);
            raw.xor(c);
            c.get(f.flip).op('i32.sub').get(f.zp).op('i32.sub');
            raw.store16(c);
            c.get(s).get(f.s3).op('i32.add').set(s);
            c.get(d).i32(2).op('i32.add').set(d);
          });
        });
      });
    });
  });
}

function emitConversions(m: ModuleBuilder): void {
  // toFloat(src, dst, n, signed): dst[i] = float32(byte i of src, int8 when signed else uint8).
  m.func('toFloat', ['i32', 'i32', 'i32', 'i32'], [], (c) => {
    const [src, dst, n, signed] = [0, 1, 2, 3];
    const i = c.local('i32');
    for (const sign of [true, false]) {
      c.get(signed).i32(sign ? 0 : 1).op('i32.ne').if(() => {
        c.i32(0).set(i);
        c.block((done) => c.loop((top) => {
          c.get(i).i32(4).op('i32.add').get(n).op('i32.gt_s').brIf(done);
          c.get(dst).get(i).i32(2).op('i32.shl', 'i32.add');
          c.get(src).get(i).op('i32.add').mem('v128.load32_zero');
          raw.extend8(c, sign);
          raw.extend16(c, sign);
          c.simd('f32x4.convert_i32x4_s').mem('v128.store');
          c.get(i).i32(4).op('i32.add').set(i);
          c.br(top);
        }));
        c.forRange(i, () => c.get(i), () => c.get(n), 1, () => {
          c.get(dst).get(i).i32(2).op('i32.shl', 'i32.add');
          c.get(src).get(i).op('i32.add');
          if (sign) raw.load8s(c);
          else raw.load8u(c);
          c.op('f32.convert_i32_s').mem('f32.store');
        });
      });
    }
  });
  // fromFloat(src, dst, n, signed): byte i of dst = the float32 src[i] truncated (values already inside the range).
  m.func('fromFloat', ['i32', 'i32', 'i32', 'i32'], [], (c) => {
    const [src, dst, n, signed] = [0, 1, 2, 3];
    const i = c.local('i32'), v = c.local('v128');
    for (const sign of [true, false]) {
      c.get(signed).i32(sign ? 0 : 1).op('i32.ne').if(() => {
        c.i32(0).set(i);
        c.block((done) => c.loop((top) => {
          c.get(i).i32(4).op('i32.add').get(n).op('i32.gt_s').brIf(done);
          c.get(dst).get(i).op('i32.add');
          c.get(src).get(i).i32(2).op('i32.shl', 'i32.add').mem('v128.load').simd('i32x4.trunc_sat_f32x4_s').tee(v).get(v);
          raw.narrow32(c);
          c.get(v).get(v);
          raw.narrow32(c);
          raw.narrow16(c, sign);
          raw.store32Lane0(c);
          c.get(i).i32(4).op('i32.add').set(i);
          c.br(top);
        }));
        c.forRange(i, () => c.get(i), () => c.get(n), 1, () => {
          c.get(dst).get(i).op('i32.add');
          c.get(src).get(i).i32(2).op('i32.shl', 'i32.add').mem('f32.load');
          raw.truncSat(c);
          raw.store8(c);
        });
      });
    }
  });
}

function emitPackA(m: ModuleBuilder): void {
  // packA(w, rs, cs, flip, zp, rows, k, pairs, dst): panels of 4 rows; for each k pair, the 4 rows' (w[r, k] − zp[r],
  // w[r, k+1] − zp[r]) as int16 pairs; rows past `rows` and k past `k` are 0 (zp: int32 per row, at an address).
  m.func('packA', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32'], [], (c) => {
    const [w, rs, cs, flip, zp, rows, k, pairs, dst] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
    const r = c.local('i32'), kk = c.local('i32'), at = c.local('i32'), z = c.local('i32'), out = c.local('i32');
    const panels = c.local('i32'), zv = c.local('v128'), v = c.local('v128');
    c.get(rows).i32(MR - 1).op('i32.add').i32(2).op('i32.shr_s').set(panels);
    // Zeros first (padding rows and the odd k's pair half), then the values.
    c.forRange(at, () => c.get(dst), () => c.get(dst).get(panels).get(pairs).op('i32.mul').i32(16 * 1).op('i32.mul', 'i32.add'), 16, () => {
      c.get(at).i32(0).simd('i32x4.splat').mem('v128.store');
    });
    c.forRange(r, () => c.i32(0), () => c.get(rows), 1, () => {
      c.get(zp).get(r).i32(2).op('i32.shl', 'i32.add').mem('i32.load').set(z);
      c.get(w).get(r).get(rs).op('i32.mul', 'i32.add').set(at);
      // Row r's pair p lies at dst + ((r >> 2)·pairs + p)·16 + (r & 3)·4.
      c.get(dst).get(r).i32(2).op('i32.shr_s').get(pairs).op('i32.mul').i32(4).op('i32.shl', 'i32.add').get(r).i32(3).op('i32.and').i32(2).op('i32.shl', 'i32.add').set(out);
      // Rows of consecutive bytes: eight k at a time (load8x8 widens them; their four pairs go to four panel steps, 16
      // bytes apart, one 32-bit lane each), then the row's tail one at a time.
      c.i32(0).set(kk);
      c.get(z);
      raw.i16Splat(c);
      c.set(zv);
      const vectorRow = (signed: boolean) => c.block((done) => c.loop((top) => {
        c.get(kk).i32(8).op('i32.add').get(k).op('i32.gt_s').brIf(done);
        c.get(at);
        raw.load8x8(c, signed);
        c.get(zv);
        raw.i16Sub(c);
        c.set(v);
        for (let lane = 0; lane < 4; lane++) {
          c.get(out).get(kk).i32(3).op('i32.shl', 'i32.add').get(v);
          raw.store32Lane(c, 16 * lane, lane);
        }
        c.get(at).i32(8).op('i32.add').set(at);
        c.get(kk).i32(8).op('i32.add').set(kk);
        c.br(top);
      }));
      c.get(cs).i32(1).op('i32.eq').if(() => {
        c.get(flip).if(() => vectorRow(true));
        c.get(flip).op('i32.eqz').if(() => vectorRow(false));
      });
      c.forRange(kk, () => c.get(kk), () => c.get(k), 1, () => {
        c.get(out).get(kk).i32(1).op('i32.shr_s').i32(4).op('i32.shl', 'i32.add').get(kk).i32(1).op('i32.and').i32(1).op('i32.shl', 'i32.add');
        c.get(at);
        raw.load8u(c);
        c.get(flip);
        raw.xor(c);
        c.get(flip).op('i32.sub').get(z).op('i32.sub');
        raw.store16(c);
        c.get(at).get(cs).op('i32.add').set(at);
      });
    });
  });
}

function emitPackB(m: ModuleBuilder): number {
  // packB(base, colOff, rowOff, flag, pairs, dst): one panel of 8 columns, element (k, j) at base + colOff[j] + rowOff[k]
  // (rowOff has 2·pairs entries); for each pair: columns 0–3's (k, k+1) int16 pairs, then columns 4–7's.
  return m.func('packB', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32'], [], (c) => {
    const [base, colOff, rowOff, flag, pairs, dst] = [0, 1, 2, 3, 4, 5];
    const p = c.local('i32'), rp = c.local('i32'), first = c.local('i32'), v0 = c.local('v128'), v1 = c.local('v128');
    const cols = Array.from({ length: NR }, () => c.local('i32'));
    const end = c.local('i32');
    c.get(rowOff).get(pairs).i32(3).op('i32.shl', 'i32.add').set(end);
    c.block((done) => {
      for (const [bit, stride2] of [[FLAG.stride1, false], [FLAG.stride2, true]] as const) {
        c.get(flag).i32(bit).op('i32.and').if(() => {
          c.get(base).get(colOff).mem('i32.load').op('i32.add').set(first);
          c.get(rowOff).set(rp);
          c.loop((top) => {
            // v0, v1: the rows of k and k+1 under the 8 columns.
            for (const [v, off] of [[v0, 0], [v1, 4]] as const) {
              c.get(first).get(rp).mem('i32.load', off).op('i32.add');
              if (stride2) {
                c.set(p);
                c.get(p).mem('v128.load').get(p).mem('v128.load', 16);
                raw.shuffle(c, EVENS);
              } else c.mem('v128.load');
              c.set(v);
            }
            c.get(dst).get(v0).get(v1);
            raw.shuffle(c, INTERLEAVE_LO);
            c.mem('v128.store');
            c.get(dst).get(v0).get(v1);
            raw.shuffle(c, INTERLEAVE_HI);
            c.mem('v128.store', 16);
            c.get(dst).i32(32).op('i32.add').set(dst);
            c.get(rp).i32(8).op('i32.add').tee(rp).get(end).op('i32.lt_u').brIf(top);
          });
          c.br(done);
        });
      }
      // Any layout: element by element.
      cols.forEach((col, j) => c.get(base).get(colOff).mem('i32.load', 4 * j).op('i32.add').set(col));
      c.forRange(rp, () => c.get(rowOff), () => c.get(end), 8, () => {
        for (const [half, off] of [[0, 0], [1, 4]] as const) {
          c.get(rp).mem('i32.load', off).set(p);
          cols.forEach((col, j) => {
            c.get(dst);
            c.get(col).get(p).op('i32.add');
            raw.load16s(c);
            raw.store16(c, 4 * j + 2 * half);
          });
        }
        c.get(dst).i32(32).op('i32.add').set(dst);
      });
    });
  });
}

function emitTile(m: ModuleBuilder, mode: Int8OutputMode): number {
  // tile_<mode>(p, ap, bp, i0, j0, cols): the 4×8 tile at rows i0…, columns j0… (cols ≤ 8 of them valid) from
  // A panel ap and B panel bp over the pairs, through the epilogue into the output (addresses from p's tables).
  return m.func(`tile_${mode}`, ['i32', 'i32', 'i32', 'i32', 'i32', 'i32'], [], (c) => {
    const [p, ap, bp, i0, j0, cols] = [0, 1, 2, 3, 4, 5];
    const f = fields(c, GEMM_FIELDS);
    const bEnd = c.local('i32'), a = c.local('v128'), b0 = c.local('v128'), b1 = c.local('v128');
    const acc = Array.from({ length: MR }, () => [c.local('v128'), c.local('v128')] as const);
    const rows = c.local('i32'), r = c.local('i32'), t = c.local('i32'), dst = c.local('i32'), src = c.local('i32');
    const mv = c.local('v128'), ov = c.local('v128'), zo = c.local('v128'), lo = c.local('v128'), hi = c.local('v128');
    for (const [x, y] of acc) c.i32(0).simd('i32x4.splat').tee(x).set(y);
    c.get(bp).get(f.pairs).i32(5).op('i32.shl', 'i32.add').set(bEnd);
    c.loop((top) => {
      c.get(bp).mem('v128.load').set(b0);
      c.get(bp).mem('v128.load', 16).set(b1);
      acc.forEach(([x, y], row) => {
        c.get(ap).mem('v128.load32_splat', 4 * row).set(a);
        c.get(x).get(a).get(b0);
        raw.dot(c);
        c.simd('i32x4.add').set(x);
        c.get(y).get(a).get(b1);
        raw.dot(c);
        c.simd('i32x4.add').set(y);
      });
      c.get(ap).i32(16).op('i32.add').set(ap);
      c.get(bp).i32(32).op('i32.add').tee(bp).get(bEnd).op('i32.lt_u').brIf(top);
    });
    // The epilogue: each accumulator becomes its output vector (in place).
    if (mode !== 'int32') {
      if (mode !== 'float32') {
        for (const [v, field] of [[zo, f.zo], [lo, f.lo], [hi, f.hi]] as const) {
          c.get(field);
          raw.f32FromBits(c);
          c.simd('f32x4.splat').set(v);
        }
      }
      acc.forEach(([x, y], row) => {
        c.get(f.mult).get(i0).i32(2).op('i32.shl', 'i32.add').mem('v128.load32_splat', 4 * row).set(mv);
        c.get(f.offs).get(i0).i32(2).op('i32.shl', 'i32.add').mem('v128.load32_splat', 4 * row).set(ov);
        for (const v of [x, y]) {
          c.get(v).simd('f32x4.convert_i32x4_s').get(mv).simd('f32x4.mul').get(ov).simd('f32x4.add');
          if (mode !== 'float32') c.simd('f32x4.nearest').get(zo).simd('f32x4.add').get(lo).simd('f32x4.max').get(hi).simd('f32x4.min', 'i32x4.trunc_sat_f32x4_s');
          c.set(v);
        }
      });
    }
    const bytes = mode === 'int8' || mode === 'uint8';
    // Row i's output: out + i·ldi + outOff[j].
    const rowAt = (row: () => void) => {
      c.get(f.out);
      row();
      c.get(f.ldi).op('i32.mul', 'i32.add');
    };
    const narrow = (x: number, y: number) => {
      c.get(x).get(y);
      raw.narrow32(c);
      c.get(x).get(y);
      raw.narrow32(c);
      raw.narrow16(c, mode === 'int8');
    };
    minRows(c, f.rows, i0, rows);
    c.block((stored) => {
      // A whole tile whose 8 outputs per row are consecutive: vector stores.
      c.get(rows).i32(MR).op('i32.eq').get(cols).i32(NR).op('i32.eq').op('i32.and');
      c.get(f.flags).get(j0).i32(1).op('i32.shr_s', 'i32.add').mem('i32.load').i32(FLAG.outContiguous).op('i32.and', 'i32.and');
      c.if(() => {
        c.get(f.outOff).get(j0).i32(2).op('i32.shl', 'i32.add').mem('i32.load').set(src);
        acc.forEach(([x, y], row) => {
          rowAt(() => c.get(i0).i32(row).op('i32.add'));
          c.get(src).op('i32.add').set(dst);
          if (bytes) {
            c.get(dst);
            narrow(x, y);
            raw.store64Lane0(c, 0);
          } else {
            c.get(dst).get(x).mem('v128.store');
            c.get(dst).get(y).mem('v128.store', 16);
          }
        });
        c.br(stored);
      });
      // Any other tile: through scratch (8 bytes or 32 bytes a row), then value by value.
      acc.forEach(([x, y], row) => {
        if (bytes) {
          c.get(f.scratch);
          narrow(x, y);
          raw.store64Lane0(c, 8 * row);
        } else {
          c.get(f.scratch).get(x).mem('v128.store', 32 * row);
          c.get(f.scratch).get(y).mem('v128.store', 32 * row + 16);
        }
      });
      c.forRange(r, () => c.i32(0), () => c.get(rows), 1, () => {
        c.forRange(t, () => c.i32(0), () => c.get(cols), 1, () => {
          rowAt(() => c.get(i0).get(r).op('i32.add'));
          c.get(f.outOff).get(j0).get(t).op('i32.add').i32(2).op('i32.shl', 'i32.add').mem('i32.load').op('i32.add');
          if (bytes) {
            c.get(f.scratch).get(r).i32(3).op('i32.shl', 'i32.add').get(t).op('i32.add');
            raw.load8u(c);
            raw.store8(c);
          } else {
            c.get(f.scratch).get(r).i32(5).op('i32.shl', 'i32.add').get(t).i32(2).op('i32.shl', 'i32.add').mem('i32.load').mem('i32.store');
          }
        });
      });
    });
  });
}

/** rows = min(MR, total − i0). */
function minRows(c: Code, total: number, i0: number, rows: number): void {
  c.i32(MR).get(total).get(i0).op('i32.sub').i32(MR).get(total).get(i0).op('i32.sub').op('i32.lt_s', 'select').set(rows);
}

function emitGemm(m: ModuleBuilder, packB: number, tiles: readonly number[]): void {
  // gemm(p): for each B panel of columns [j0, j1) (multiples of 8 but the end): pack it, then run every A panel's
  // tile over it with the mode's epilogue.
  m.func('gemm', ['i32'], [], (c) => {
    const f = fields(c, GEMM_FIELDS);
    const j = c.local('i32'), i = c.local('i32'), cols = c.local('i32'), ap = c.local('i32'), flag = c.local('i32');
    c.forRange(j, () => c.get(f.j0), () => c.get(f.j1), NR, () => {
      c.i32(NR).get(f.j1).get(j).op('i32.sub').i32(NR).get(f.j1).get(j).op('i32.sub').op('i32.lt_s', 'select').set(cols);
      c.get(f.flags).get(j).i32(1).op('i32.shr_s', 'i32.add').mem('i32.load').set(flag);
      c.get(f.bBase).get(f.colOff).get(j).i32(2).op('i32.shl', 'i32.add').get(f.rowOff).get(flag).get(f.pairs).get(f.bPanel).call(packB);
      c.get(f.aBase).set(ap);
      c.forRange(i, () => c.i32(0), () => c.get(f.aPanels).i32(2).op('i32.shl'), MR, () => {
        tiles.forEach((tile, mode) => {
          c.get(f.mode).i32(mode).op('i32.eq').if(() => {
            c.get(0).get(ap).get(f.bPanel).get(i).get(j).get(cols).call(tile);
          });
        });
        c.get(ap).get(f.pairs).i32(4).op('i32.shl', 'i32.add').set(ap);
      });
    });
  });
}

/** The i32 fields of a depthwise call's parameter block (addresses and strides in bytes). */
const DEPTHWISE_FIELDS = [
  'first', 'end', 'og', 'batch', 'base', 'image', 'plane', 'row', 'kh', 'kw', 'sh', 'dh', 'dw', 'OH', 'OW', 'wts', 'out', 'outImage',
  'mode', 'mult', 'offs', 'zo', 'lo', 'hi', 'scratch',
] as const;

function emitDepthwise(m: ModuleBuilder, mode: Int8OutputMode, stride: 1 | 2): void {
  // depthwise_<mode>_s<stride>(p): for output channels [first, end) of every image, out[b, o, oh, ow] = epilogue(Σ_t
  // x̄[b, ⌊o/og⌋, oh·sh + i·dh, ow·stride + j·dw] · w̄[o, t]) over the taps t = (i, j), from the centred zero-padded
  // input (rows `row` bytes apart) and the centred int16 weights [N, kh·kw]. Eight outputs of a row at a time, each
  // tap one v128 load (two and a shuffle at stride 2) and two i32x4.extmul_*_i16x8_s; the row's last outputs go
  // through scratch. Loads past a row's end read the padded copy's next values or its slack: computed, never stored.
  m.func(`depthwise_${mode}_s${stride}`, ['i32'], [], (c) => {
    const f = fields(c, DEPTHWISE_FIELDS);
    const b = c.local('i32'), o = c.local('i32'), oh = c.local('i32'), ow = c.local('i32'), i = c.local('i32'), j = c.local('i32');
    const plane = c.local('i32'), rowAt = c.local('i32'), at = c.local('i32'), wp = c.local('i32'), dst = c.local('i32'), n = c.local('i32'), t = c.local('i32');
    const x = c.local('v128'), w = c.local('v128'), acc0 = c.local('v128'), acc1 = c.local('v128');
    const mv = c.local('v128'), ov = c.local('v128'), zo = c.local('v128'), lo = c.local('v128'), hi = c.local('v128');
    const bytes = mode === 'int8' || mode === 'uint8', esize = bytes ? 1 : 4;
    if (bytes) {
      for (const [v, field] of [[zo, f.zo], [lo, f.lo], [hi, f.hi]] as const) {
        c.get(field);
        raw.f32FromBits(c);
        c.simd('f32x4.splat').set(v);
      }
    }
    c.forRange(b, () => c.i32(0), () => c.get(f.batch), 1, () => {
      c.forRange(o, () => c.get(f.first), () => c.get(f.end), 1, () => {
        c.get(f.base).get(b).get(f.image).op('i32.mul', 'i32.add').get(o).get(f.og).op('i32.div_s').get(f.plane).op('i32.mul', 'i32.add').set(plane);
        if (mode !== 'int32') {
          c.get(f.mult).get(o).i32(2).op('i32.shl', 'i32.add').mem('v128.load32_splat').set(mv);
          c.get(f.offs).get(o).i32(2).op('i32.shl', 'i32.add').mem('v128.load32_splat').set(ov);
        }
        // dst = out + b·outImage + o·OH·OW·esize
        c.get(f.out).get(b).get(f.outImage).op('i32.mul', 'i32.add').get(o).get(f.OH).op('i32.mul').get(f.OW).op('i32.mul').i32(esize === 4 ? 2 : 0).op('i32.shl', 'i32.add').set(dst);
        c.forRange(oh, () => c.i32(0), () => c.get(f.OH), 1, () => {
          c.forRange(ow, () => c.i32(0), () => c.get(f.OW), 8, () => {
            c.i32(0).simd('i32x4.splat').tee(acc0).set(acc1);
            // wp: the channel's taps (int16 each)
            c.get(f.wts).get(o).get(f.kh).op('i32.mul').get(f.kw).op('i32.mul').i32(1).op('i32.shl', 'i32.add').set(wp);
            c.forRange(i, () => c.i32(0), () => c.get(f.kh), 1, () => {
              // rowAt = plane + (oh·sh + i·dh)·row + ow·stride·2
              c.get(plane).get(oh).get(f.sh).op('i32.mul').get(i).get(f.dh).op('i32.mul', 'i32.add').get(f.row).op('i32.mul', 'i32.add');
              c.get(ow).i32(stride === 1 ? 1 : 2).op('i32.shl', 'i32.add').set(rowAt);
              c.forRange(j, () => c.i32(0), () => c.get(f.kw), 1, () => {
                c.get(rowAt).get(j).get(f.dw).op('i32.mul').i32(1).op('i32.shl', 'i32.add').set(at);
                if (stride === 1) c.get(at).mem('v128.load');
                else {
                  c.get(at).mem('v128.load').get(at).mem('v128.load', 16);
                  raw.shuffle(c, EVENS);
                }
                c.set(x);
                c.get(wp);
                raw.load16Splat(c);
                c.set(w);
                c.get(acc0).get(x).get(w);
                raw.extmul(c, false);
                c.simd('i32x4.add').set(acc0);
                c.get(acc1).get(x).get(w);
                raw.extmul(c, true);
                c.simd('i32x4.add').set(acc1);
                c.get(wp).i32(2).op('i32.add').set(wp);
              });
            });
            if (mode !== 'int32') {
              for (const v of [acc0, acc1]) {
                c.get(v).simd('f32x4.convert_i32x4_s').get(mv).simd('f32x4.mul').get(ov).simd('f32x4.add');
                if (bytes) c.simd('f32x4.nearest').get(zo).simd('f32x4.add').get(lo).simd('f32x4.max').get(hi).simd('f32x4.min', 'i32x4.trunc_sat_f32x4_s');
                c.set(v);
              }
            }
            // n = min(8, OW − ow) outputs to store at dst + (oh·OW + ow)·esize
            c.i32(8).get(f.OW).get(ow).op('i32.sub').i32(8).get(f.OW).get(ow).op('i32.sub').op('i32.lt_s', 'select').set(n);
            c.get(dst).get(oh).get(f.OW).op('i32.mul').get(ow).op('i32.add').i32(esize === 4 ? 2 : 0).op('i32.shl', 'i32.add').set(at);
            const narrowed = () => {
              c.get(acc0).get(acc1);
              raw.narrow32(c);
              c.get(acc0).get(acc1);
              raw.narrow32(c);
              raw.narrow16(c, mode === 'int8');
            };
            c.block((stored) => {
              c.get(n).i32(8).op('i32.eq').if(() => {
                if (bytes) {
                  c.get(at);
                  narrowed();
                  raw.store64Lane0(c, 0);
                } else {
                  c.get(at).get(acc0).mem('v128.store');
                  c.get(at).get(acc1).mem('v128.store', 16);
                }
                c.br(stored);
              });
              if (bytes) {
                c.get(f.scratch);
                narrowed();
                raw.store64Lane0(c, 0);
              } else {
                c.get(f.scratch).get(acc0).mem('v128.store');
                c.get(f.scratch).get(acc1).mem('v128.store', 16);
              }
              c.forRange(t, () => c.i32(0), () => c.get(n), 1, () => {
                if (bytes) {
                  c.get(at).get(t).op('i32.add').get(f.scratch).get(t).op('i32.add');
                  raw.load8u(c);
                  raw.store8(c);
                } else {
                  c.get(at).get(t).i32(2).op('i32.shl', 'i32.add').get(f.scratch).get(t).i32(2).op('i32.shl', 'i32.add').mem('i32.load').mem('i32.store');
                }
              });
            });
          });
        });
      });
    });
  });
}

interface Int8Module {
  zero: (at: number, bytes: number) => void;
  centre: (p: number) => void;
  toFloat: (src: number, dst: number, n: number, signed: number) => void;
  fromFloat: (src: number, dst: number, n: number, signed: number) => void;
  packA: (...args: number[]) => void;
  gemm: (p: number) => void;
  [depthwise: `depthwise_${string}`]: (p: number) => void;
}
let kernels: Int8Module | undefined;

function int8Module(): Int8Module {
  if (!kernels) {
    const mb = new ModuleBuilder(memoryImport());
    mb.func('zero', ['i32', 'i32'], [], (c) => {
      c.get(0).i32(0).get(1);
      c.bytes.push(0xfc, 0x0b, 0x00); // memory.fill
    });
    emitCentre(mb);
    emitConversions(mb);
    emitPackA(mb);
    const packB = emitPackB(mb);
    const tiles = MODES.map((mode) => emitTile(mb, mode));
    emitGemm(mb, packB, tiles);
    for (const mode of MODES) for (const stride of [1, 2] as const) emitDepthwise(mb, mode, stride);
    kernels = instantiate<Int8Module & WebAssembly.Exports>(mb.build());
  }
  return kernels;
}

/** An int8/uint8 operand: its storage (int8 or uint8 values) and where a view's element 0 is in it, with its strides. */
export interface Int8Operand {
  data: Int8Array | Uint8Array;
  offset: number;
  strides: readonly number[];
}

/** What the GEMM's epilogue writes: per output channel multiplier and offset (float32), and zpOut/lo/hi for int8/uint8. */
export interface Int8Epilogue {
  mode: Int8OutputMode;
  multiplier?: Float32Array;
  offset?: Float32Array;
  zeroPoint?: number;
  lo?: number;
  hi?: number;
}

/**
 * Where the operands and the output live, looked up before any scratch allocation: a private memory's growth
 * detaches the views callers hold (in the heap, addresses stay valid; JS arrays never detach).
 */
interface Placed {
  x: number | undefined;
  w: number | undefined;
  out: number | undefined;
}
function place(x: Int8Operand, w: Int8Operand, out: ArrayBufferView, outOffset: number): Placed {
  const h = heap();
  return { x: h.addressOf(x.data, x.offset), w: h.addressOf(w.data, w.offset), out: h.addressOf(out, outOffset) };
}

/** The byte address of `v`'s element 0: `direct` where it lives in the heap, else a copy of the bytes its view reads (scratch). */
function operandAddress(v: Int8Operand, shape: readonly number[], direct: number | undefined): number {
  if (direct !== undefined) return direct;
  const h = heap();
  let lo = v.offset, hi = v.offset;
  shape.forEach((d, i) => {
    const s = v.strides[i]! * (d - 1);
    if (s < 0) lo += s;
    else hi += s;
  });
  const at = h.alloc(hi - lo + 1);
  new Uint8Array(h.memory.buffer, at, hi - lo + 1).set(new Uint8Array(v.data.buffer, v.data.byteOffset + lo, hi - lo + 1));
  return at + (v.offset - lo);
}

const ELEMENT_BYTES: Record<Int8OutputMode, number> = { int32: 4, float32: 4, int8: 1, uint8: 1 };

/** Packs the weight rows [rows, k] (centred on zp per row) as A panels; returns their address. */
function packWeights(w: Int8Operand, wAt: number, rows: number, k: number, zp: Int32Array): number {
  const h = heap(), pairs = Math.ceil(k / 2), panels = Math.ceil(rows / MR);
  const zpAt = h.alloc(rows * 4);
  new Int32Array(h.memory.buffer, zpAt, rows).set(zp);
  const dst = h.alloc(panels * pairs * 16);
  int8Module().packA(wAt, w.strides[0]!, w.strides[1]!, w.data instanceof Int8Array ? 128 : 0, zpAt, rows, k, pairs, dst);
  return dst;
}

/** Writes `values` (i32 each) into scratch; returns the address. */
function putInts(values: ArrayLike<number>): number {
  const h = heap(), at = h.alloc(values.length * 4);
  new Int32Array(h.memory.buffer, at, values.length).set(values as ArrayLike<number>);
  return at;
}
function putFloats(values: Float32Array, padTo: number): number {
  const h = heap(), at = h.alloc(padTo * 4);
  const f = new Float32Array(h.memory.buffer, at, padTo);
  f.set(values);
  return at;
}

/** Bits of a float32 as an i32 (the epilogue's constants travel in the i32 parameter block). */
const bitsView = new DataView(new ArrayBuffer(4));
function f32Bits(v: number): number {
  bitsView.setFloat32(0, v, true);
  return bitsView.getInt32(0, true);
}

/**
 * Runs the GEMM over columns [0, n) of B (its tables written by the caller) against packed A, with the epilogue,
 * splitting panels of columns among the pool's threads.
 */
function runGemm(common: Omit<Record<GemmField, number>, 'j0' | 'j1' | 'bPanel' | 'scratch'>, n: number, pairs: number, work: number): void {
  const h = heap(), { gemm } = int8Module();
  calls++;
  const panels = Math.ceil(n / NR);
  const share = Math.ceil(panels / taskCount(panels, work)) * NR;
  const values = GEMM_FIELDS.map((name) => (common as Record<string, number>)[name] ?? 0);
  const [j0, j1, bPanel, scratch] = (['j0', 'j1', 'bPanel', 'scratch'] as const).map((name) => GEMM_FIELDS.indexOf(name));
  const tasks: number[][] = [];
  for (let j = 0; j < n; j += share) {
    const p = h.alloc(GEMM_FIELDS.length * 4);
    values[j0!] = j;
    values[j1!] = Math.min(n, j + share);
    values[bPanel!] = h.alloc(pairs * 32);
    values[scratch!] = h.alloc(MR * 32);
    new Int32Array(h.memory.buffer, p, GEMM_FIELDS.length).set(values);
    tasks.push([p]);
  }
  parallelFor(tasks, gemm);
}

/** The epilogue's fields of the parameter block; the per-channel vectors padded to whole A panels. */
function epilogueFields(ep: Int8Epilogue, rows: number): Pick<Record<GemmField, number>, 'mode' | 'mult' | 'offs' | 'zo' | 'lo' | 'hi'> {
  const padded = Math.ceil(rows / MR) * MR;
  const scaled = ep.mode !== 'int32';
  return {
    mode: MODES.indexOf(ep.mode),
    mult: scaled ? putFloats(ep.multiplier!, padded) : 0,
    offs: scaled ? putFloats(ep.offset!, padded) : 0,
    zo: f32Bits(ep.zeroPoint ?? 0), lo: f32Bits(ep.lo ?? 0), hi: f32Bits(ep.hi ?? 0),
  };
}

/** Panel flags from the column tables: B's stride (1 or 2 int16, whole panels only) and whether the outputs are consecutive. */
function panelFlags(colOff: Int32Array, outOff: Int32Array, n: number, esize: number): Int32Array {
  const panels = Math.ceil(n / NR), flags = new Int32Array(panels);
  for (let p = 0; p < panels; p++) {
    const j = p * NR;
    if (j + NR > n) continue;
    let s1 = true, s2 = true, o = true;
    for (let t = 1; t < NR; t++) {
      const d = colOff[j + t]! - colOff[j]!;
      s1 &&= d === 2 * t;
      s2 &&= d === 4 * t;
      o &&= outOff[j + t]! - outOff[j]! === esize * t;
    }
    flags[p] = (s1 ? FLAG.stride1 : s2 ? FLAG.stride2 : 0) | (o ? FLAG.outContiguous : 0);
  }
  return flags;
}

/** Where the GEMM writes: the output's own storage when it lives in the heap, else scratch copied out after. */
function outputTarget(out: ArrayBufferView & { length: number }, offset: number, count: number, esize: number, direct: number | undefined): { at: number; done: () => void } {
  const h = heap();
  if (direct !== undefined) return { at: direct, done: () => {} };
  const at = h.alloc(count * esize);
  const Ctor = out.constructor as unknown as { new (b: ArrayBufferLike, at: number, n: number): ArrayLike<number> };
  return { at, done: () => (out as unknown as Int32Array).set(new Ctor(h.memory.buffer, at, count) as Int32Array, offset) };
}

/** A conv2d's geometry (src/quant/gemm.ts's ConvGeometry). */
export interface Int8ConvGeometry {
  batch: number;
  channels: number;
  height: number;
  width: number;
  kernel: readonly [number, number];
  stride: readonly [number, number];
  padding: readonly [number, number];
  dilation: readonly [number, number];
  groups: number;
  outHeight: number;
  outWidth: number;
}

interface ConvTables {
  colOff: Int32Array;
  outOff: Int32Array;
  rowOff: Int32Array;
  flags: Int32Array;
}
/** A conv's column and row tables by geometry: plans call the same layers again and again (bounded; see wasmInt8CacheStats). */
const tableCache = new LruCache<string, ConvTables>(128);

/** Statistics of the conv tables' cache. */
export function wasmInt8CacheStats(): CacheStats {
  return tableCache.stats();
}
reportCaches('cpu', () => ({ caches: { 'int8 conv tables': tableCache.stats() } }), 'int8 conv tables');

/**
 * The GEMM's tables for a conv over the padded input (rows Wp int16 apart, planes `plane`): per output pixel (b, oh, ow),
 * B's byte offset and the output's (NCHW with n channels of esize bytes); per k = (ci, i, j), the tap's offset; panel flags.
 */
function convTables(geo: Int8ConvGeometry, n: number, esize: number, Wp: number, plane: number): ConvTables {
  const key = `${JSON.stringify(geo)}|${n}|${esize}|${Wp}|${plane}`;
  const hit = tableCache.get(key);
  if (hit) return hit;
  const [kh, kw] = geo.kernel, [sh, sw] = geo.stride, [dh, dw] = geo.dilation;
  const { batch: B, channels: C, groups: G, outHeight: OH, outWidth: OW } = geo;
  const K = (C / G) * kh * kw, pairs = Math.ceil(K / 2), P = OH * OW, image = C * plane, cols = B * P;
  const colOff = new Int32Array(Math.ceil(cols / NR) * NR), outOff = new Int32Array(colOff.length);
  for (let b = 0, j = 0; b < B; b++) {
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++, j++) {
        colOff[j] = (b * image + oh * sh * Wp + ow * sw) * 2;
        outOff[j] = (b * n * P + oh * OW + ow) * esize;
      }
    }
  }
  colOff.fill(colOff[cols - 1]!, cols);
  outOff.fill(outOff[cols - 1]!, cols);
  const rowOff = new Int32Array(pairs * 2);
  for (let r = 0; r < K; r++) rowOff[r] = (Math.floor(r / (kh * kw)) * plane + (Math.floor(r / kw) % kh) * dh * Wp + (r % kw) * dw) * 2;
  if (K % 2) rowOff[K] = rowOff[K - 1]!;
  const tables = { colOff, outOff, rowOff, flags: panelFlags(colOff, outOff, cols, esize) };
  tableCache.set(key, tables);
  return tables;
}

/**
 * An int8 conv2d: out[b, n, oh, ow] = epilogue(Σ (x − zpA)·(w[n] − zpW[n]) over the group's patch), x NCHW, w [N, K]
 * (K = C/groups·kh·kw), out NCHW (int32, float32, int8 or uint8 storage, written at `outOffset`).
 */
export function wasmInt8Conv(
  x: Int8Operand, geo: Int8ConvGeometry, zpA: number, w: Int8Operand, n: number, zpW: Int32Array, ep: Int8Epilogue,
  out: Int32Array | Float32Array | Int8Array | Uint8Array, outOffset: number,
): void {
  const h = heap();
  const placed = place(x, w, out, outOffset);
  h.reset();
  const { centre } = int8Module();
  const [kh, kw] = geo.kernel, [sh, sw] = geo.stride, [pt, pl] = geo.padding, [dh, dw] = geo.dilation;
  const { batch: B, channels: C, height: H, width: W, groups: G, outHeight: OH, outWidth: OW } = geo;
  const cg = C / G, og = n / G, K = cg * kh * kw, pairs = Math.ceil(K / 2), P = OH * OW;
  // The centred input, zero-padded as far as the windows reach (bottom/right from the output size).
  const Hp = Math.max(H + pt, (OH - 1) * sh + (kh - 1) * dh + 1), Wp = Math.max(W + pl, (OW - 1) * sw + (kw - 1) * dw + 1);
  const plane = Hp * Wp, image = C * plane;
  const xAt = operandAddress(x, [B, C, H, W], placed.x);
  const wAt = operandAddress(w, [n, K], placed.w);
  // Slack: a stride-2 panel reads 32 bytes from its first pixel, a depthwise row's last vector up to 64 past its end.
  const bytes = B * image * 2 + 128;
  const base = h.alloc(bytes);
  // (memory.fill: a typed array's fill over a shared memory runs element by element.)
  if (Hp * Wp !== H * W) int8Module().zero(base, bytes);
  else int8Module().zero(base + B * image * 2, 128);
  const centreArgs = { src: xAt, s0: x.strides[0]!, s1: x.strides[1]!, s2: x.strides[2]!, s3: x.strides[3]!, n0: B, n1: C, n2: H, n3: W, flip: x.data instanceof Int8Array ? 128 : 0, zp: zpA, dst: base + (pt * Wp + pl) * 2, d0: image * 2, d1: plane * 2, d2: Wp * 2 };
  const cp = putInts(CENTRE_FIELDS.map((f) => centreArgs[f]));
  centre(cp);
  const esize = ELEMENT_BYTES[ep.mode];
  if (cg === 1 && (sw === 1 || sw === 2)) {
    depthwise(base, geo, Wp, plane, w, wAt, n, zpW, ep, out, outOffset, placed.out);
    return;
  }
  const cols = B * P;
  const t = convTables(geo, n, esize, Wp, plane);
  const tables = { colOff: putInts(t.colOff), outOff: putInts(t.outOff), rowOff: putInts(t.rowOff), flags: putInts(t.flags) };
  const target = outputTarget(out, outOffset, B * n * P, esize, placed.out);
  for (let g = 0; g < G; g++) {
    const mark = h.mark();
    const rows = og;
    const aBase = packWeights(w, wAt + g * og * w.strides[0]!, rows, K, zpW.subarray(g * og, g * og + og));
    const epg: Int8Epilogue = { ...ep, multiplier: ep.multiplier?.subarray(g * og, g * og + og), offset: ep.offset?.subarray(g * og, g * og + og) };
    runGemm({
      aBase, aPanels: Math.ceil(rows / MR), pairs, bBase: base + g * cg * plane * 2, ...tables, out: target.at + g * og * P * esize, ldi: P * esize, rows,
      ...epilogueFields(epg, rows),
    }, cols, pairs, cols * rows * K);
    h.release(mark);
  }
  target.done();
}

/**
 * A conv with one input channel per group (depthwise, og output channels each) over the centred padded input at `base`:
 * direct windows (src/kernels/wasm/int8.ts's depthwise functions), channels split among the pool's threads.
 */
function depthwise(
  base: number, geo: Int8ConvGeometry, Wp: number, plane: number, w: Int8Operand, wAt: number, n: number, zpW: Int32Array, ep: Int8Epilogue,
  out: Int32Array | Float32Array | Int8Array | Uint8Array, outOffset: number, outDirect: number | undefined,
): void {
  const h = heap(), mod = int8Module();
  calls++;
  const [kh, kw] = geo.kernel, T = kh * kw, P = geo.outHeight * geo.outWidth, esize = ELEMENT_BYTES[ep.mode];
  // Centred weights, int16 [n, T]: few (n·T), so JavaScript.
  const wts = h.alloc(n * T * 2);
  const w16 = new Int16Array(h.memory.buffer, wts, n * T);
  const [rs, cs] = w.strides as [number, number];
  // The weight's bytes through a view made now (after the allocations): rows rs, taps cs apart from wAt.
  const lo = wAt + Math.min(0, (n - 1) * rs) + Math.min(0, (T - 1) * cs), span = Math.abs((n - 1) * rs) + Math.abs((T - 1) * cs) + 1;
  const bytes = w.data instanceof Int8Array ? new Int8Array(h.memory.buffer, lo, span) : new Uint8Array(h.memory.buffer, lo, span);
  for (let o = 0; o < n; o++) for (let t = 0; t < T; t++) w16[o * T + t] = bytes[wAt - lo + o * rs + t * cs]! - zpW[o]!;
  const target = outputTarget(out, outOffset, geo.batch * n * P, esize, outDirect);
  const epi = epilogueFields(ep, n);
  const values: Record<(typeof DEPTHWISE_FIELDS)[number], number> = {
    first: 0, end: 0, og: n / geo.channels, batch: geo.batch, base, image: geo.channels * plane * 2, plane: plane * 2, row: Wp * 2, kh, kw,
    sh: geo.stride[0], dh: geo.dilation[0], dw: geo.dilation[1], OH: geo.outHeight, OW: geo.outWidth, wts, out: target.at, outImage: n * P * esize, ...epi, scratch: 0,
  };
  const work = geo.batch * n * P * T;
  const share = Math.ceil(n / taskCount(n, work));
  const tasks: number[][] = [];
  for (let first = 0; first < n; first += share) {
    const p = h.alloc(DEPTHWISE_FIELDS.length * 4);
    Object.assign(values, { first, end: Math.min(n, first + share), scratch: h.alloc(32) });
    new Int32Array(h.memory.buffer, p, DEPTHWISE_FIELDS.length).set(DEPTHWISE_FIELDS.map((name) => values[name]));
    tasks.push([p]);
  }
  parallelFor(tasks, mod[`depthwise_${ep.mode}_s${geo.stride[1]}`]!);
  target.done();
}

/**
 * An int8 matmul: out[m, n] = epilogue(Σ_k (x[m, k] − zpA)·(w[n, k] − zpW[n])) for x [M, K] and w [N, K] (any strides),
 * out row-major [M, N] at `outOffset`.
 */
export function wasmInt8Matmul(
  x: Int8Operand, M: number, K: number, zpA: number, w: Int8Operand, N: number, zpW: Int32Array, ep: Int8Epilogue,
  out: Int32Array | Float32Array | Int8Array | Uint8Array, outOffset: number,
): void {
  if (K === 0 || M === 0 || N === 0) throw new SinterError('qgemm', `the wasm int8 kernel needs a non-empty product, got M ${M}, K ${K}, N ${N}`);
  const h = heap();
  const placed = place(x, w, out, outOffset);
  h.reset();
  const pairs = Math.ceil(K / 2), ld = pairs * 2;
  // x centred into rows of ld int16 (a zero pair half when K is odd), B's columns.
  const base = h.alloc(M * ld * 2 + 64);
  int8Module().zero(base, M * ld * 2 + 64);
  const centreArgs = { src: operandAddress(x, [M, K], placed.x), s0: 0, s1: 0, s2: x.strides[0]!, s3: x.strides[1]!, n0: 1, n1: 1, n2: M, n3: K, flip: x.data instanceof Int8Array ? 128 : 0, zp: zpA, dst: base, d0: 0, d1: 0, d2: ld * 2 };
  int8Module().centre(putInts(CENTRE_FIELDS.map((f) => centreArgs[f])));
  const esize = ELEMENT_BYTES[ep.mode];
  const colOff = new Int32Array(Math.ceil(M / NR) * NR), outOff = new Int32Array(colOff.length);
  for (let j = 0; j < M; j++) {
    colOff[j] = j * ld * 2;
    outOff[j] = j * N * esize;
  }
  colOff.fill(colOff[M - 1]!, M);
  outOff.fill(outOff[M - 1]!, M);
  const rowOff = Int32Array.from({ length: ld }, (_, k) => 2 * k);
  const target = outputTarget(out, outOffset, M * N, esize, placed.out);
  const aBase = packWeights(w, operandAddress(w, [N, K], placed.w), N, K, zpW);
  runGemm({
    aBase, aPanels: Math.ceil(N / MR), pairs, bBase: base, colOff: putInts(colOff), rowOff: putInts(rowOff), outOff: putInts(outOff),
    flags: putInts(panelFlags(colOff, outOff, M, esize)), out: target.at, ldi: esize, rows: N, ...epilogueFields(ep, N),
  }, M, pairs, M * N * K);
  target.done();
}

/** float32 copies of n int8 (signed) or uint8 values: heap byte addresses src → dst. */
export function wasmInt8ToFloat(src: number, dst: number, n: number, signed: boolean): void {
  int8Module().toFloat(src, dst, n, signed ? 1 : 0);
}

/** n float32 values (already integers inside the int8/uint8 range) stored as bytes: heap addresses src → dst. */
export function wasmFloatToInt8(src: number, dst: number, n: number, signed: boolean): void {
  int8Module().fromFloat(src, dst, n, signed ? 1 : 0);
}
