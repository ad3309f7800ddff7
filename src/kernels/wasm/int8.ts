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

const TILE = { rows: 2, cols: 4, lanes: 8 } as const;

/** SIMD instructions the emitter's tables do not name yet: i32x4.dot_i16x8_s (0xfd 0xba) and i32x4.extract_lane (0xfd 0x1b). */
function dotI16x8(c: Code): void {
  c.bytes.push(0xfd, 0xba, 0x01);
}
function extractLane(c: Code, lane: number): void {
  c.bytes.push(0xfd, 0x1b, lane);
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

let products: ((...args: number[]) => void) | undefined;
let calls = 0;

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
  if (!products) {
    const mb = new ModuleBuilder(memoryImport());
    emitProducts(mb);
    products = instantiate<{ products: (...args: number[]) => void }>(mb.build()).products;
  }
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
