import { SinterError } from '../../errors.js';
import { Code, ModuleBuilder } from './emitter.js';
import { heap, instantiate, memoryImport } from './heap.js';

// The integer GEMM of the int8 layers (src/quant/gemm.ts) in WebAssembly SIMD: C[i, j] = Σ_k A[i, k]·W[j, k]
// over int16 rows (the int8/uint8 operands already centred on their zero points, so every value lies in
// [−255, 255]), accumulated in int32 lanes with i32x4.dot_i16x8_s: eight products a step, pairwise
// summed, exact (the sums wrap modulo 2³² as the JavaScript reference's Math.imul sums do). The
// micro-kernel owns a 2×4 tile of C: two A rows and four W rows loaded once per step serve eight dot
// products in eight v128 accumulators. Rows are copied into the heap padded to a multiple of 8 values
// (zeros add nothing), A to an even number of rows and W to a multiple of 4.
// For conv2d the A rows (im2col patches, centred on the input's zero point, 0 in the padding) are built
// in the heap by a scalar wasm loop from the input copied in once for all groups: the JavaScript im2col
// was most of an int8 conv's time.

const TILE = { rows: 2, cols: 4, lanes: 8 } as const;

/** SIMD instructions the emitter's tables do not name yet: i32x4.dot_i16x8_s (0xfd 0xba) and i32x4.extract_lane (0xfd 0x1b). */
function dotI16x8(c: Code): void {
  c.bytes.push(0xfd, 0xba, 0x01);
}
function extractLane(c: Code, lane: number): void {
  c.bytes.push(0xfd, 0x1b, lane);
}

/** i32.load16_s and i32.store16 (align 2 bytes, offset 0), which the emitter's tables do not name. */
function load16s(c: Code): void {
  c.bytes.push(0x2e, 0x01, 0x00);
}
function store16(c: Code): void {
  c.bytes.push(0x3b, 0x01, 0x00);
}

/** The i32 fields of the im2col parameter block, in order (addresses and strides in bytes). */
const IM2COL_FIELDS = ['x', 's0', 's1', 's2', 's3', 'batch', 'cg', 'height', 'width', 'kh', 'kw', 'sh', 'sw', 'pt', 'pl', 'dh', 'dw', 'outH', 'outW', 'zp', 'rows', 'ld'] as const;
type Im2colField = (typeof IM2COL_FIELDS)[number];

function emitIm2col(m: ModuleBuilder): void {
  // im2col(p): with the fields above at p, row (b·outH + oh)·outW + ow of `rows` (ld bytes apart) gets the patch
  // x[b, ci, oh·sh − pt + i·dh, ow·sw − pl + j·dw] − zp for (ci, i, j) in order, 0 for taps in the padding;
  // the row's tail past K is left as it is (zero). `x` is the group's channel 0 of image 0.
  m.func('im2col', ['i32'], [], (c) => {
    const f = {} as Record<Im2colField, number>;
    IM2COL_FIELDS.forEach((name, i) => {
      f[name] = c.local('i32');
      c.get(0).mem('i32.load', 4 * i).set(f[name]);
    });
    const [b, oh, ow, ci, i, j] = Array.from({ length: 6 }, () => c.local('i32'));
    const row = c.local('i32'), at = c.local('i32'), plane = c.local('i32'), ih0 = c.local('i32'), iw0 = c.local('i32');
    const ih = c.local('i32'), rowAt = c.local('i32'), iw = c.local('i32'), inside = c.local('i32');
    c.get(f.rows).set(row);
    c.forRange(b, () => c.i32(0), () => c.get(f.batch), 1, () => {
      c.forRange(oh, () => c.i32(0), () => c.get(f.outH), 1, () => {
        c.get(oh).get(f.sh).op('i32.mul').get(f.pt).op('i32.sub').set(ih0);
        c.forRange(ow, () => c.i32(0), () => c.get(f.outW), 1, () => {
          c.get(ow).get(f.sw).op('i32.mul').get(f.pl).op('i32.sub').set(iw0);
          c.get(row).set(at);
          c.forRange(ci, () => c.i32(0), () => c.get(f.cg), 1, () => {
            c.get(f.x).get(b).get(f.s0).op('i32.mul', 'i32.add').get(ci).get(f.s1).op('i32.mul', 'i32.add').set(plane);
            c.forRange(i, () => c.i32(0), () => c.get(f.kh), 1, () => {
              c.get(ih0).get(i).get(f.dh).op('i32.mul', 'i32.add').set(ih);
              c.get(plane).get(ih).get(f.s2).op('i32.mul', 'i32.add').set(rowAt);
              c.forRange(j, () => c.i32(0), () => c.get(f.kw), 1, () => {
                c.get(iw0).get(j).get(f.dw).op('i32.mul', 'i32.add').set(iw);
                // Inside when 0 ≤ ih < height and 0 ≤ iw < width (unsigned compares catch the negatives); outside,
                // the load reads x[0] (a valid address) and the store writes 0: no branches.
                c.get(ih).get(f.height).op('i32.lt_u').get(iw).get(f.width).op('i32.lt_u', 'i32.and').set(inside);
                c.get(at);
                c.get(rowAt).get(iw).get(f.s3).op('i32.mul', 'i32.add').get(f.x).get(inside).op('select');
                load16s(c);
                c.get(f.zp).op('i32.sub').i32(0).get(inside).op('select');
                store16(c);
                c.get(at).i32(2).op('i32.add').set(at);
              });
            });
          });
          c.get(row).get(f.ld).op('i32.add').set(row);
        });
      });
    });
  });
}

function emitProducts(m: ModuleBuilder): void {
  // products(pairs, quads, rowBytes, a, w, c, ldc): rows 2·pairs of A and 4·quads of W, rowBytes per row
  // (a multiple of 16), C row-major with ldc bytes per row.
  m.func('products', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32'], [], (c) => {
    const [pairs, quads, rowBytes, a, w, cp, ldc] = [0, 1, 2, 3, 4, 5, 6];
    const ip = c.local('i32'), jq = c.local('i32'), kk = c.local('i32');
    const pa = [c.local('i32'), c.local('i32')], pw = Array.from({ length: TILE.cols }, () => c.local('i32'));
    const out = c.local('i32');
    const va = [c.local('v128'), c.local('v128')], vw = c.local('v128');
    const acc = pa.map(() => pw.map(() => c.local('v128')));
    c.forRange(ip, () => c.i32(0), () => c.get(pairs), 1, () => {
      // pa[r] = a + (2·ip + r)·rowBytes
      c.get(a).get(ip).get(rowBytes).op('i32.mul').i32(1).op('i32.shl', 'i32.add').set(pa[0]!);
      c.get(pa[0]!).get(rowBytes).op('i32.add').set(pa[1]!);
      c.forRange(jq, () => c.i32(0), () => c.get(quads), 1, () => {
        pw.forEach((p, j) => {
          c.get(w).get(jq).i32(2).op('i32.shl').i32(j).op('i32.add').get(rowBytes).op('i32.mul', 'i32.add').set(p);
        });
        for (const row of acc) for (const v of row) c.i32(0).simd('i32x4.splat').set(v);
        c.forRange(kk, () => c.i32(0), () => c.get(rowBytes), 16, () => {
          va.forEach((v, r) => c.get(pa[r]!).get(kk).op('i32.add').mem('v128.load').set(v));
          pw.forEach((p, j) => {
            c.get(p).get(kk).op('i32.add').mem('v128.load').set(vw);
            va.forEach((v, r) => {
              c.get(acc[r]![j]!).get(v).get(vw);
              dotI16x8(c);
              c.simd('i32x4.add').set(acc[r]![j]!);
            });
          });
        });
        // C[2·ip + r, 4·jq + j] = the lanes' sum
        acc.forEach((row, r) => {
          c.get(cp).get(ip).i32(1).op('i32.shl').i32(r).op('i32.add').get(ldc).op('i32.mul', 'i32.add').get(jq).i32(4).op('i32.shl', 'i32.add').set(out);
          row.forEach((v, j) => {
            c.get(out);
            for (let lane = 0; lane < 4; lane++) {
              c.get(v);
              extractLane(c, lane);
              if (lane > 0) c.op('i32.add');
            }
            c.mem('i32.store', 4 * j);
          });
        });
      });
    });
  });
}

interface Int8Module {
  products: (...args: number[]) => void;
  im2col: (params: number) => void;
}
let kernels: Int8Module | undefined;
let calls = 0;

function int8Module(): Int8Module {
  if (!kernels) {
    const mb = new ModuleBuilder(memoryImport());
    emitProducts(mb);
    emitIm2col(mb);
    kernels = instantiate<Int8Module & WebAssembly.Exports>(mb.build());
  }
  return kernels;
}

/** How many GEMMs the wasm int8 kernel has run (tests check that it ran). */
export function wasmInt8Calls(): number {
  return calls;
}

/** The row length the kernel reads: k rounded up to a multiple of 8 (callers lay rows out so, zero-padded). */
export function int8RowLength(k: number): number {
  return Math.ceil(k / TILE.lanes) * TILE.lanes;
}

/**
 * C[i, j] = Σ_k A[i, k]·W[j, k] (int32, wrapping) for int16 rows A [m, ld] and W [n, ld] (centred values
 * in [−255, 255], each row zero past its length; ld = int8RowLength of it), on the wasm micro-kernel; C is row-major [m, n].
 */
export function wasmInt8Products(m: number, n: number, ld: number, a: Int16Array, w: Int16Array): Int32Array {
  const { products } = int8Module();
  calls++;
  if (ld % TILE.lanes !== 0) throw new SinterError('qgemm', `the wasm int8 kernel reads rows of whole ${TILE.lanes}-value steps, got rows of ${ld}`);
  const kp = ld, mp = Math.ceil(m / TILE.rows) * TILE.rows, np = Math.ceil(n / TILE.cols) * TILE.cols;
  const h = heap();
  h.reset();
  const aAt = h.alloc(mp * kp * 2), wAt = h.alloc(np * kp * 2), cAt = h.alloc(mp * np * 4);
  // Views after every allocation (a growth detaches the old buffer); padding must read zero.
  const mem16 = new Int16Array(h.memory.buffer);
  const copyRows = (src: Int16Array, rows: number, paddedRows: number, at: number) => {
    const base = at >>> 1;
    mem16.set(src.subarray(0, rows * kp), base);
    mem16.fill(0, base + rows * kp, base + paddedRows * kp);
  };
  copyRows(a, m, mp, aAt);
  copyRows(w, n, np, wAt);
  products(mp / TILE.rows, np / TILE.cols, kp * 2, aAt, wAt, cAt, np * 4);
  const c32 = new Int32Array(h.memory.buffer, cAt, mp * np);
  const out = new Int32Array(m * n);
  for (let i = 0; i < m; i++) out.set(c32.subarray(i * np, i * np + n), i * n);
  return out;
}

/** A conv2d's geometry as the wasm im2col reads it (src/quant/gemm.ts's ConvGeometry). */
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

/**
 * The integer GEMMs of an int8 conv2d, group by group: for group g, C[m, r] = Σ_k A[m, k]·W[r, k] where A is the
 * im2col of the group's input channels minus zpA (0 in the padding; m = (b·outH + oh)·outW + ow) and W the
 * `perGroup` rows `weightsOf(g)` returns (int16, centred, `ld` = int8RowLength(K) apart, zero past K). The input
 * `x` (int8/uint8 values, or int16) is read at `at` + Σ index·strides and copied into the heap once;
 * `each(g, C, ldc)` receives each group's C [M, perGroup] in the heap, rows ldc apart (valid until the next group).
 */
export function wasmInt8Conv(
  x: Int8Array | Uint8Array | Int16Array, at: number, strides: readonly number[], geo: Int8ConvGeometry, zpA: number,
  perGroup: number, ld: number, weightsOf: (g: number) => Int16Array, each: (g: number, sums: Int32Array, ldc: number) => void,
): void {
  const { products, im2col } = int8Module();
  if (ld % TILE.lanes !== 0) throw new SinterError('qgemm', `the wasm int8 kernel reads rows of whole ${TILE.lanes}-value steps, got rows of ${ld}`);
  const M = geo.batch * geo.outHeight * geo.outWidth, cg = geo.channels / geo.groups;
  const mp = Math.ceil(M / TILE.rows) * TILE.rows, np = Math.ceil(perGroup / TILE.cols) * TILE.cols;
  const h = heap();
  h.reset();
  const xAt = h.alloc(x.length * 2), aAt = h.alloc(mp * ld * 2), wAt = h.alloc(np * ld * 2), cAt = h.alloc(mp * np * 4);
  const pAt = h.alloc(IM2COL_FIELDS.length * 4);
  // Views after every allocation (a growth detaches the old buffer).
  const mem16 = new Int16Array(h.memory.buffer), mem32 = new Int32Array(h.memory.buffer);
  mem16.set(x, xAt >>> 1);
  const [s0, s1, s2, s3] = strides.map((s) => s * 2) as [number, number, number, number];
  const fields: Record<Im2colField, number> = {
    x: 0, s0, s1, s2, s3, batch: geo.batch, cg, height: geo.height, width: geo.width, kh: geo.kernel[0], kw: geo.kernel[1],
    sh: geo.stride[0], sw: geo.stride[1], pt: geo.padding[0], pl: geo.padding[1], dh: geo.dilation[0], dw: geo.dilation[1],
    outH: geo.outHeight, outW: geo.outWidth, zp: zpA, rows: aAt, ld: ld * 2,
  };
  const c32 = new Int32Array(h.memory.buffer, cAt, mp * np);
  // Row tails past K and the padding rows past M stay zero: im2col writes the first K values of rows below M.
  mem16.fill(0, aAt >>> 1, (aAt >>> 1) + mp * ld);
  for (let g = 0; g < geo.groups; g++) {
    calls++;
    fields.x = xAt + (at + g * cg * strides[1]!) * 2; // the group's first channel
    IM2COL_FIELDS.forEach((name, i) => { mem32[(pAt >>> 2) + i] = fields[name]; });
    im2col(pAt);
    const w = weightsOf(g);
    mem16.set(w.subarray(0, perGroup * ld), wAt >>> 1);
    mem16.fill(0, (wAt >>> 1) + perGroup * ld, (wAt >>> 1) + np * ld);
    products(mp / TILE.rows, np / TILE.cols, ld * 2, aAt, wAt, cAt, np * 4);
    each(g, c32, np);
  }
}
