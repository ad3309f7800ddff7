import { Code, ModuleBuilder, hasRelaxedSimd } from './emitter.js';
import { heap, instantiate, memoryImport } from './heap.js';
import { availableThreads, parallelFor } from './threads.js';

// The float32 GEMM of the wasm CPU kernels, laid out as in BLIS (as src/kernels/cpu/gemm.ts is):
// operands are packed into panels, and an MR×8 register-tiled micro-kernel keeps its accumulators
// in 2·MR v128 locals, stepping k one at a time. A packed B panel (kc × 8) stays in L1, the packed
// A block (mc × kc) in L2. B is packed through two offset tables (per column and per row of B), so
// a stored matrix and conv2d's implicit im2col (src/kernels/wasm/linalg.ts) are the same operand.
// Sums accumulate in float32, in k order within a cache block (kc), so errors grow like k·ε·Σ|a·b|.

export const WASM_GEMM = { mr: 4, nr: 8, kc: 256, mc: 96, nc: 512 } as const;
const { mr: MR, nr: NR, kc: KC, mc: MC, nc: NC } = WASM_GEMM;

/** gemm's arguments, in order (i32 each); a thread pool's workers receive them as a row of i32s. */
export const GEMM_ARGS = ['m', 'n', 'k', 'a', 'ars', 'acs', 'b', 'colOff', 'rowOff', 'flags', 'c', 'ldc', 'add', 'packedA', 'packedB', 'scratch', 'bias'] as const;

/** min(a, b) of two i32 values already emitted (leaves it on the stack). */
function minI32(c: Code, a: () => void, b: () => void): void {
  a();
  b();
  a();
  b();
  c.op('i32.lt_s', 'select');
}

function emitPackA(m: ModuleBuilder): number {
  // packA(src, rs, cs, dst, mc, kc): rows [0, mc) × columns [0, kc) of A (byte strides rs, cs) as
  // ⌈mc/MR⌉ panels of kc columns of MR values. A short last panel repeats row mc−1: its rows are
  // computed but never stored, and reading a real row keeps every load in bounds.
  return m.func('packA', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32'], [], (c) => {
    const [src, rs, cs, dst, mc, kc] = [0, 1, 2, 3, 4, 5];
    const ip = c.local('i32'), k = c.local('i32'), kk = c.local('i32');
    const rows = Array.from({ length: MR }, () => c.local('i32'));
    c.forRange(ip, () => c.i32(0), () => c.get(mc), MR, () => {
      rows.forEach((row, r) => {
        minI32(c, () => c.get(ip).i32(r).op('i32.add'), () => c.get(mc).i32(1).op('i32.sub'));
        c.get(rs).op('i32.mul').get(src).op('i32.add').set(row);
      });
      c.i32(0).set(kk);
      c.forRange(k, () => c.i32(0), () => c.get(kc), 1, () => {
        rows.forEach((row, r) => c.get(dst).get(row).get(kk).op('i32.add').mem('f32.load').mem('f32.store', 4 * r));
        c.get(dst).i32(4 * MR).op('i32.add').set(dst);
        c.get(kk).get(cs).op('i32.add').set(kk);
      });
    });
  });
}

function emitPackB(m: ModuleBuilder): number {
  // packB(src, colOff, rowOff, flags, dst, kc, nc): element (k, j) of B is at src + colOff[j] + rowOff[k]
  // (i32 byte-offset tables; colOff padded to a multiple of NR by repeating its last entry). Panel p
  // holds kc rows of NR values; flags[p] ≠ 0 says its NR columns are consecutive floats, loaded as two v128.
  return m.func('packB', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32'], [], (c) => {
    const [src, colOff, rowOff, flags, dst, kc, nc] = [0, 1, 2, 3, 4, 5, 6];
    const jp = c.local('i32'), k = c.local('i32'), base = c.local('i32'), at = c.local('i32'), rp = c.local('i32');
    const cols = Array.from({ length: NR }, () => c.local('i32'));
    c.forRange(jp, () => c.i32(0), () => c.get(nc), NR, () => {
      c.block((done) => {
        c.get(flags).get(jp).i32(1).op('i32.shr_s').op('i32.add').mem('i32.load').if(() => {
          // (jp / NR) · 4 = jp / 2: the panel's flag.
          c.get(src).get(colOff).get(jp).i32(2).op('i32.shl').op('i32.add').mem('i32.load').op('i32.add').set(base);
          // do { at = base + *rp; two v128 copies; dst += 4·NR } while (++rp < rowOff + 4·kc), kc ≥ 1: the hot path (conv patches, matrices).
          c.get(rowOff).set(rp);
          c.loop((top) => {
            c.get(base).get(rp).mem('i32.load').op('i32.add').set(at);
            c.get(dst).get(at).mem('v128.load').mem('v128.store');
            c.get(dst).get(at).mem('v128.load', 16).mem('v128.store', 16);
            c.get(dst).i32(4 * NR).op('i32.add').set(dst);
            c.get(rp).i32(4).op('i32.add').tee(rp).get(rowOff).get(kc).i32(2).op('i32.shl', 'i32.add').op('i32.lt_u').brIf(top);
          });
          c.br(done);
        });
        cols.forEach((col, j) => c.get(src).get(colOff).get(jp).i32(2).op('i32.shl').op('i32.add').mem('i32.load', 4 * j).op('i32.add').set(col));
        c.forRange(k, () => c.i32(0), () => c.get(kc), 1, () => {
          c.get(rowOff).get(k).i32(2).op('i32.shl').op('i32.add').mem('i32.load').set(at);
          cols.forEach((col, j) => c.get(dst).get(at).get(col).op('i32.add').mem('f32.load').mem('f32.store', 4 * j));
          c.get(dst).i32(4 * NR).op('i32.add').set(dst);
        });
      });
    });
  });
}

function emitTile(m: ModuleBuilder, fma: boolean): number {
  // tile(ap, bp, kc, ptr, ldc, rows, cols, add, scratch, bias): the rows × cols tile of C at ptr (ldc bytes per row)
  // (+)= the MR-row panel of packed A at ap · the NR-column panel of packed B at bp, over kc ≥ 1 steps of k; bias ≠ 0:
  // the sums start from bias[r] (floats at that address, one per row) instead of 0.
  // A function of its own, called per tile, so V8 starts running its optimised code (compiled in the
  // background once the baseline code got hot) at the next tile, not at the next GEMM.
  // The k loop is one step per iteration, as a do-while on B's pointer: V8's optimising compiler
  // schedules every load of an iteration first, so an unrolled body (or more rows) keeps more
  // values live than x64's 16 vector registers and spills accumulators to the stack in the hot loop;
  // MR×NR = 4×8 is 8 accumulators + 2 B vectors + 4 broadcasts + 1 product.
  return m.func('tile', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32'], [], (c) => {
    const [ap, bp, kc, ptr, ldc, rows, cols, add, scratch, bias] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    const bEnd = c.local('i32'), r = c.local('i32'), j = c.local('i32');
    const acc = Array.from({ length: MR }, () => [c.local('v128'), c.local('v128')] as const);
    const b0 = c.local('v128'), b1 = c.local('v128'), a = c.local('v128'), v = c.local('f32');
    for (const [lo, hi] of acc) c.f32(0).simd('f32x4.splat').tee(lo).set(hi);
    c.get(bias).if(() => {
      // Row r's bias; rows past the tile's (a short panel repeats its last row) read the last row's.
      acc.forEach(([lo, hi], row) => {
        c.get(bias).i32(4 * row).get(rows).i32(1).op('i32.sub').i32(2).op('i32.shl').i32(row).get(rows).op('i32.lt_s', 'select');
        c.op('i32.add').mem('v128.load32_splat').tee(lo).set(hi);
      });
    });
    c.get(bp).get(kc).i32(4 * NR).op('i32.mul').op('i32.add').set(bEnd);
    c.loop((top) => {
      // acc[r] += A[k, r] · B[k, 0..8)
      c.get(bp).mem('v128.load').set(b0);
      c.get(bp).mem('v128.load', 16).set(b1);
      acc.forEach(([lo, hi], row) => {
        c.get(ap).mem('v128.load32_splat', row * 4).set(a);
        if (fma) {
          c.get(a).get(b0).get(lo).simd('f32x4.relaxed_madd').set(lo);
          c.get(a).get(b1).get(hi).simd('f32x4.relaxed_madd').set(hi);
        } else {
          c.get(lo).get(a).get(b0).simd('f32x4.mul', 'f32x4.add').set(lo);
          c.get(hi).get(a).get(b1).simd('f32x4.mul', 'f32x4.add').set(hi);
        }
      });
      c.get(ap).i32(MR * 4).op('i32.add').set(ap);
      c.get(bp).i32(NR * 4).op('i32.add').tee(bp).get(bEnd).op('i32.lt_u').brIf(top);
    });
    c.block((stored) => {
      c.get(rows).i32(MR).op('i32.eq').get(cols).i32(NR).op('i32.eq').op('i32.and').if(() => {
        for (const accumulate of [true, false]) {
          const body = (): void => {
            acc.forEach(([lo, hi], row) => {
              const rowPtr = (): void => void c.get(ptr).i32(row).get(ldc).op('i32.mul').op('i32.add');
              for (const [v, off] of [[lo, 0], [hi, 16]] as const) {
                rowPtr();
                if (accumulate) { rowPtr(); c.mem('v128.load', off).get(v).simd('f32x4.add'); } else c.get(v);
                c.mem('v128.store', off);
              }
            });
            c.br(stored);
          };
          if (accumulate) c.get(add).if(body);
          else body();
        }
      });
      // An edge tile: through scratch, only rows × cols of it.
      acc.forEach(([lo, hi], row) => {
        c.get(scratch).get(lo).mem('v128.store', row * NR * 4);
        c.get(scratch).get(hi).mem('v128.store', row * NR * 4 + 16);
      });
      c.forRange(r, () => c.i32(0), () => c.get(rows), 1, () => {
        c.forRange(j, () => c.i32(0), () => c.get(cols), 1, () => {
          const at = (): void => void c.get(ptr).get(r).get(ldc).op('i32.mul').op('i32.add').get(j).i32(2).op('i32.shl').op('i32.add');
          c.get(scratch).get(r).i32(NR).op('i32.mul').get(j).op('i32.add').i32(2).op('i32.shl').op('i32.add').mem('f32.load').set(v);
          // C (+)= tile value: select(v + C, v, add) reads C in bounds either way.
          at();
          at();
          c.mem('f32.load').get(v).op('f32.add').get(v).get(add).op('select').mem('f32.store');
        });
      });
    });
  });
}

function emitKernel(m: ModuleBuilder, tile: number): number {
  // kernel(mc, nc, kc, pa, pb, c, ldc, add, scratch, bias): C[mc × nc] (+)= packed A block · packed B block (+ bias[row]
  // when bias ≠ 0), C row-major with ldc bytes per row; scratch holds one MR×NR tile for the edges.
  return m.func('kernel', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32'], [], (c) => {
    const [mc, nc, kc, pa, pb, cp, ldc, add, scratch, bias] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    const jr = c.local('i32'), ir = c.local('i32'), cols = c.local('i32');
    c.forRange(jr, () => c.i32(0), () => c.get(nc), NR, () => {
      minI32(c, () => c.i32(NR), () => c.get(nc).get(jr).op('i32.sub'));
      c.set(cols);
      c.forRange(ir, () => c.i32(0), () => c.get(mc), MR, () => {
        // tile(pa + 4·ir·kc, pb + 4·jr·kc, kc, c + ir·ldc + 4·jr, ldc, min(MR, mc − ir), cols, add, scratch, bias ? bias + 4·ir : 0)
        c.get(pa).get(ir).get(kc).op('i32.mul').i32(2).op('i32.shl').op('i32.add');
        c.get(pb).get(jr).get(kc).op('i32.mul').i32(2).op('i32.shl').op('i32.add');
        c.get(kc);
        c.get(cp).get(ir).get(ldc).op('i32.mul').op('i32.add').get(jr).i32(2).op('i32.shl').op('i32.add');
        c.get(ldc);
        minI32(c, () => c.i32(MR), () => c.get(mc).get(ir).op('i32.sub'));
        c.get(cols).get(add).get(scratch);
        c.get(bias).get(ir).i32(2).op('i32.shl', 'i32.add').i32(0).get(bias).op('select').call(tile);
      });
    });
  });
}

function emitGemm(m: ModuleBuilder, packA: number, packB: number, kernel: number): void {
  // gemm(…GEMM_ARGS): C[m × n] (+)= A · B over the cache blocks: for each nc columns and kc rows of B,
  // pack that B block; for each mc rows of A, pack that A block and run the micro-kernels over both.
  m.func('gemm', GEMM_ARGS.map(() => 'i32' as const), [], (c) => {
    const [mm, n, k, a, ars, acs, b, colOff, rowOff, flags, cp, ldc, add, pa, pb, scratch, bias] = GEMM_ARGS.map((_, i) => i);
    const jc = c.local('i32'), pc = c.local('i32'), ic = c.local('i32'), nc = c.local('i32'), kc = c.local('i32'), mc = c.local('i32');
    c.forRange(jc, () => c.i32(0), () => c.get(n!), NC, () => {
      minI32(c, () => c.i32(NC), () => c.get(n!).get(jc).op('i32.sub'));
      c.set(nc);
      c.forRange(pc, () => c.i32(0), () => c.get(k!), KC, () => {
        minI32(c, () => c.i32(KC), () => c.get(k!).get(pc).op('i32.sub'));
        c.set(kc);
        // packB(b, colOff + 4·jc, rowOff + 4·pc, flags + 4·jc/NR, packedB, kc, nc); 4·jc/NR = jc >> 1 for NR = 8
        c.get(b!).get(colOff!).get(jc).i32(2).op('i32.shl', 'i32.add').get(rowOff!).get(pc).i32(2).op('i32.shl', 'i32.add');
        c.get(flags!).get(jc).i32(1).op('i32.shr_s', 'i32.add').get(pb!).get(kc).get(nc).call(packB);
        c.forRange(ic, () => c.i32(0), () => c.get(mm!), MC, () => {
          minI32(c, () => c.i32(MC), () => c.get(mm!).get(ic).op('i32.sub'));
          c.set(mc);
          // packA(a + ic·ars + pc·acs, ars, acs, packedA, mc, kc)
          c.get(a!).get(ic).get(ars!).op('i32.mul', 'i32.add').get(pc).get(acs!).op('i32.mul', 'i32.add');
          c.get(ars!).get(acs!).get(pa!).get(mc).get(kc).call(packA);
          // kernel(mc, nc, kc, packedA, packedB, c + ic·ldc + 4·jc, ldc, add | pc > 0, scratch, bias && pc = 0 ? bias + 4·ic : 0)
          c.get(mc).get(nc).get(kc).get(pa!).get(pb!);
          c.get(cp!).get(ic).get(ldc!).op('i32.mul', 'i32.add').get(jc).i32(2).op('i32.shl', 'i32.add');
          c.get(ldc!).get(add!).get(pc).i32(0).op('i32.gt_s', 'i32.or').get(scratch!);
          c.get(bias!).get(ic).i32(2).op('i32.shl', 'i32.add').i32(0).get(bias!).i32(0).op('i32.ne').get(pc).op('i32.eqz', 'i32.and', 'select').call(kernel);
        });
      });
    });
  });
}

let moduleBytes: Uint8Array<ArrayBuffer> | undefined;
let gemmFn: ((...args: number[]) => void) | undefined;

/**
 * The GEMM module's bytes; `fma`: its micro-kernel multiplies and adds with relaxed SIMD's
 * f32x4.relaxed_madd (one fused instruction where the hardware has FMA) instead of f32x4.mul + add.
 */
export function buildGemmModule(fma: boolean): Uint8Array<ArrayBuffer> {
  const m = new ModuleBuilder(memoryImport());
  const packA = emitPackA(m), packB = emitPackB(m), kernel = emitKernel(m, emitTile(m, fma));
  emitGemm(m, packA, packB, kernel);
  return m.build();
}

/** The GEMM module of this engine: with relaxed_madd where the engine validates relaxed SIMD (detected, not assumed). */
export function gemmModule(): Uint8Array<ArrayBuffer> {
  return (moduleBytes ??= buildGemmModule(hasRelaxedSimd()));
}

/**
 * A B operand already in the heap: element (k, j) at `base + colOff[j] + rowOff[k]` bytes, with
 * `colOff` (n entries, padded to a multiple of NR), `rowOff` (k entries) and per-panel `flags`
 * (1 where a panel's columns are consecutive floats) as heap addresses of i32 tables.
 */
export interface HeapB {
  readonly base: number;
  readonly colOff: number;
  readonly rowOff: number;
  readonly flags: number;
}

/**
 * Columns laid out as a grid (a conv's output pixels: image, row, column): column (i0, i1, i2), numbered
 * row-major over `sizes`, is at byte offset i0·strides[0] + i1·strides[1] + i2·strides[2].
 */
export interface ColumnGrid {
  readonly sizes: readonly [number, number, number];
  readonly strides: readonly [number, number, number];
}

/**
 * Writes B's tables into the heap: column offsets (bytes, from the grid, filled by nested loops since
 * convolutions have tens of thousands of columns) and the per-panel contiguity flags.
 */
export function columnTables(n: number, grid: ColumnGrid): { colOff: number; flags: number } {
  const h = heap();
  const padded = Math.ceil(n / NR) * NR;
  const colOff = h.alloc(padded * 4), flags = h.alloc((padded / NR) * 4);
  const i32 = h.i32;
  const [n0, n1, n2] = grid.sizes, [s0, s1, s2] = grid.strides;
  for (let i0 = 0, j = colOff >>> 2; i0 < n0; i0++) {
    for (let i1 = 0, o1 = i0 * s0; i1 < n1; i1++, o1 += s1) for (let i2 = 0, o = o1; i2 < n2; i2++, o += s2) i32[j++] = o;
  }
  i32.fill(i32[(colOff >>> 2) + n - 1]!, (colOff >>> 2) + n, (colOff >>> 2) + padded);
  for (let p = 0; p < padded / NR; p++) {
    const first = i32[(colOff >>> 2) + p * NR]!;
    let contiguous = p * NR + NR <= n;
    for (let c = 1; c < NR && contiguous; c++) contiguous = i32[(colOff >>> 2) + p * NR + c] === first + 4 * c;
    i32[(flags >>> 2) + p] = contiguous ? 1 : 0;
  }
  return { colOff, flags };
}

/** Writes a table of `k` row offsets (bytes) into the heap. */
export function rowTable(k: number, rowOffset: (i: number) => number): number {
  const h = heap(), at = h.alloc(k * 4), i32 = h.i32;
  for (let i = 0; i < k; i++) i32[(at >>> 2) + i] = rowOffset(i);
  return at;
}

/**
 * C = A·B, or C += A·B when `add`, all in the heap: A m×k at `a` with byte strides (ars, acs), B as
 * `b`, C row-major at `c` with `ldc` bytes per row. `bias` (not with `add`): the heap address of m
 * floats, row i's sums starting from bias[i] (a conv's bias, without a pass writing it to C first). Allocates its packing buffers from the heap
 * (callers allocate their operands first). Column or row blocks of C go to the thread pool's threads
 * (each element is computed in the same order whichever thread runs it, so results do not depend on it).
 */
export function gemmInHeap(m: number, n: number, k: number, a: number, ars: number, acs: number, b: HeapB, c: number, ldc: number, add: boolean, bias = 0): void {
  if (m === 0 || n === 0) return;
  const h = heap();
  if (k === 0) {
    if (!add) for (let i = 0; i < m; i++) h.f32.fill(bias ? h.f32[(bias >>> 2) + i]! : 0, (c + i * ldc) >>> 2, ((c + i * ldc) >>> 2) + n);
    return;
  }
  gemmFn ??= instantiate<{ gemm: (...args: number[]) => void }>(gemmModule()).gemm;
  const mark = h.mark();
  const kcMax = Math.min(KC, k);
  // Threads split C's columns (each then packs all of A) or, when A has more rows than B has columns, its rows
  // (each then packs all of B): the operand packed by every thread is the smaller one. Shares are multiples
  // of NR columns (so panels' flags line up) or MR rows.
  const work = parallelism(m * n * k), byRows = m > n;
  const parts = Math.min(work, byRows ? Math.ceil(m / MR) : Math.ceil(n / NR), work > 1 ? availableThreads(gemmModule, 'gemm') : 1);
  const share = byRows ? Math.ceil(m / parts / MR) * MR : Math.ceil(n / parts / NR) * NR;
  const tasks = [];
  for (let s0 = 0; s0 < (byRows ? m : n); s0 += share) {
    const rows = byRows ? Math.min(share, m - s0) : m, cols = byRows ? n : Math.min(share, n - s0);
    const packedA = h.alloc(Math.ceil(Math.min(MC, rows) / MR) * MR * kcMax * 4);
    const packedB = h.alloc(Math.ceil(Math.min(NC, cols) / NR) * NR * kcMax * 4);
    const scratch = h.alloc(MR * NR * 4);
    const [i0, j0] = byRows ? [s0, 0] : [0, s0];
    tasks.push([rows, cols, k, a + i0 * ars, ars, acs, b.base, b.colOff + j0 * 4, b.rowOff, b.flags + (j0 / NR) * 4, c + i0 * ldc + j0 * 4, ldc, add ? 1 : 0, packedA, packedB, scratch, bias && bias + i0 * 4]);
  }
  parallelFor(tasks, gemmFn);
  h.release(mark);
}

/** How many threads a GEMM of m·n·k multiply-adds is worth: one per 2¹⁸ of them (about 0.1 ms each) at most. */
function parallelism(work: number): number {
  return Math.max(1, Math.floor(work / 2 ** 18));
}
