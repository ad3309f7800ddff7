import type { CpuView } from '../../ops/op.js';
import type { HostArray } from '../../tensor/dtype.js';
import { ModuleBuilder } from './emitter.js';
import { heap, instantiate, memoryImport } from './heap.js';

// Separable gathers (nearest upsampling, flip, repeat, constant pad, indexSelect, embedding: the ops of
// src/kernels/cpu/movement.ts's gatherSeparable) as one wasm loop over output rows. Each output row (all
// dims but the last) reads one source row, whose byte offset comes from a table built here; a row whose
// source row equals the previous one's (nearest upsampling's repeated rows, repeat) is a v128 copy of the
// output row just written; others gather their values through a table of column offsets, or copy them
// four at a time when the columns are consecutive. Elements are moved as 32-bit words, so this serves
// every 4-byte dtype (float32, and float16 as kernels see it: float32 values the backend widened; int32) bit for bit.

/** Row table entry of a row that is all fill (an index −1 in a dim before the last). */
const FILL_ROW = -1;

/** The column modes of gather_rows: gathered through the table, gathered with fill (entries −1), or consecutive words. */
const enum Cols {
  Gather = 0,
  GatherFill = 1,
  Consecutive = 2,
}

const ARGS = ['src', 'rowTable', 'rows', 'colTable', 'cols', 'mode', 'fill', 'dst'] as const;

function emitGatherRows(m: ModuleBuilder): void {
  // gather_rows(src, rowTable, rows, colTable, cols, mode, fill, dst): for each output row r (dst advances by
  // 4·cols bytes per row): rowTable[r] = −1 → every word is `fill`; rowTable[r] = rowTable[r − 1] → a copy of
  // the previous output row; else word j = src + rowTable[r] + colTable[j] (mode Gather; colTable[j] = −1 → fill
  // in mode GatherFill), or src + rowTable[r] + colTable[0] + 4j (mode Consecutive).
  m.func('gather_rows', ARGS.map(() => 'i32' as const), [], (c) => {
    const [src, rowTable, rows, colTable, cols, mode, fill, dst] = ARGS.map((_, i) => i) as number[];
    const r = c.local('i32'), j = c.local('i32'), row = c.local('i32'), prev = c.local('i32'), from = c.local('i32'), off = c.local('i32');
    const bytes = c.local('i32'), fillv = c.local('v128');
    c.get(cols!).i32(2).op('i32.shl').set(bytes);
    c.get(fill!).simd('i32x4.splat').set(fillv);
    c.i32(-2).set(prev);
    /** while (j + 4 ≤ cols) { body (four words at dst + 4j); j += 4 } */
    const v128Loop = (body: () => void): void => {
      c.block((done) => c.loop((top) => {
        c.get(j).i32(4).op('i32.add').get(cols!).op('i32.gt_s').brIf(done);
        body();
        c.get(j).i32(4).op('i32.add').set(j).br(top);
      }));
    };
    /** while (j < cols) { dst word j = the word `word` leaves on the stack; j += 1 } */
    const scalarLoop = (word: () => void): void => {
      c.block((done) => c.loop((top) => {
        c.get(j).get(cols!).op('i32.ge_s').brIf(done);
        c.get(dst!).get(j).i32(2).op('i32.shl', 'i32.add');
        word();
        c.mem('i32.store');
        c.get(j).i32(1).op('i32.add').set(j).br(top);
      }));
    };
    const dstAt = (): void => void c.get(dst!).get(j).i32(2).op('i32.shl', 'i32.add');
    c.forRange(r, () => c.i32(0), () => c.get(rows!), 1, () => {
      c.get(rowTable!).get(r).i32(2).op('i32.shl', 'i32.add').mem('i32.load').set(row);
      c.i32(0).set(j);
      c.block((written) => {
        c.get(row).i32(FILL_ROW).op('i32.eq').if(() => {
          v128Loop(() => { dstAt(); c.get(fillv).mem('v128.store'); });
          scalarLoop(() => c.get(fill!));
          c.br(written);
        });
        c.get(row).get(prev).op('i32.eq').if(() => {
          // The previous output row, bytes before dst.
          c.get(dst!).get(bytes).op('i32.sub').set(from);
          v128Loop(() => { dstAt(); c.get(from).get(j).i32(2).op('i32.shl', 'i32.add').mem('v128.load').mem('v128.store'); });
          scalarLoop(() => c.get(from).get(j).i32(2).op('i32.shl', 'i32.add').mem('i32.load'));
          c.br(written);
        });
        c.get(src!).get(row).op('i32.add').set(from);
        c.get(mode!).i32(Cols.Consecutive).op('i32.eq').if(() => {
          c.get(from).get(colTable!).mem('i32.load').op('i32.add').set(from);
          v128Loop(() => { dstAt(); c.get(from).get(j).i32(2).op('i32.shl', 'i32.add').mem('v128.load').mem('v128.store'); });
          scalarLoop(() => c.get(from).get(j).i32(2).op('i32.shl', 'i32.add').mem('i32.load'));
          c.br(written);
        });
        c.get(mode!).i32(Cols.GatherFill).op('i32.eq').if(() => {
          scalarLoop(() => {
            c.get(colTable!).get(j).i32(2).op('i32.shl', 'i32.add').mem('i32.load').set(off);
            // select(fill, word at from + max(off, 0), off < 0): the load stays in bounds when off is −1.
            c.get(fill!).get(from).i32(0).get(off).get(off).i32(0).op('i32.lt_s', 'select').op('i32.add').mem('i32.load');
            c.get(off).i32(0).op('i32.lt_s').op('select');
          });
          c.br(written);
        });
        scalarLoop(() => c.get(from).get(colTable!).get(j).i32(2).op('i32.shl', 'i32.add').mem('i32.load').op('i32.add').mem('i32.load'));
      });
      c.get(row).set(prev);
      c.get(dst!).get(bytes).op('i32.add').set(dst!);
    });
  });
}

type Fn = (...args: number[]) => void;
let gatherFn: Fn | undefined;

/**
 * out[i0, …, ik] = x[tables[0][i0], …, tables[k][ik]] (−1: `fill`) in row-major order from `out`'s start,
 * as src/kernels/cpu/movement.ts's gatherSeparable, when x and out are 4-byte arrays in the heap; returns
 * false to leave other operands to the JavaScript kernel.
 */
export function wasmGatherSeparable(x: CpuView, tables: readonly Int32Array[], out: HostArray, fill: number): boolean {
  const rank = tables.length;
  if (rank === 0 || x.data.BYTES_PER_ELEMENT !== 4 || out.BYTES_PER_ELEMENT !== 4 || x.data.constructor !== out.constructor) return false;
  if (!(x.data instanceof Float32Array || x.data instanceof Int32Array)) return false;
  const h = heap();
  const xAt = h.addressOf(x.data, x.offset), outAt = h.addressOf(out, 0);
  if (xAt === undefined || outAt === undefined || x.strides.some((s) => s < 0)) return false;
  if (tables.some((t) => t.length === 0)) return true;
  const cols = tables[rank - 1]!.length, rows = tables.reduce((n, t, d) => (d < rank - 1 ? n * t.length : n), 1);
  h.reset();
  const rowTable = h.alloc(rows * 4), colTable = h.alloc(cols * 4), i32 = h.i32;
  // Row offsets (bytes from x's element 0), dim by dim: entry r of the first d dims spreads over the next dim's table.
  let filled = 1;
  i32[rowTable >>> 2] = 0;
  for (let d = 0; d < rank - 1; d++) {
    const t = tables[d]!, n = t.length, s = x.strides[d]! * 4;
    // In place, from the last entry back: entry q·n + i = entry q + t[i]·s.
    for (let q = filled - 1; q >= 0; q--) {
      const base = i32[(rowTable >>> 2) + q]!;
      for (let i = n - 1; i >= 0; i--) i32[(rowTable >>> 2) + q * n + i] = base === FILL_ROW || t[i]! < 0 ? FILL_ROW : base + t[i]! * s;
    }
    filled *= n;
  }
  const last = tables[rank - 1]!, sLast = x.strides[rank - 1]! * 4;
  let mode = Cols.Consecutive;
  for (let j = 0; j < cols; j++) {
    const i = last[j]!;
    i32[(colTable >>> 2) + j] = i < 0 ? -1 : i * sLast;
    if (i < 0) mode = Cols.GatherFill;
    else if (mode === Cols.Consecutive && (sLast !== 4 || i !== last[0]! + j)) mode = Cols.Gather;
  }
  const bits = x.data instanceof Float32Array ? new Int32Array(Float32Array.of(fill).buffer)[0]! : fill | 0;
  gatherFn ??= (() => {
    const m = new ModuleBuilder(memoryImport());
    emitGatherRows(m);
    return instantiate<{ gather_rows: Fn }>(m.build()).gather_rows;
  })();
  gatherFn(xAt, rowTable, rows, colTable, cols, mode, bits, outAt);
  return true;
}
