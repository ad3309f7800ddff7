import { Code, ModuleBuilder, hasSimd } from './emitter.js';
import { heap, instantiate } from './heap.js';

// The float32 GEMM of the wasm CPU kernels, laid out as in BLIS (as src/kernels/cpu/gemm.ts is):
// operands are packed into panels, and an MR×8 register-tiled micro-kernel keeps its accumulators
// in 2·MR v128 locals, stepping k UNROLL at a time. A packed B panel (kc × 8) stays in L1, the packed
// A block (mc × kc) in L2. B is packed through two offset tables (per column and per row of B), so
// a stored matrix and conv2d's implicit im2col (src/kernels/wasm/conv.ts) are the same operand.
// Sums accumulate in float32, in k order within a cache block (kc), so errors grow like k·ε·Σ|a·b|.

export const WASM_GEMM = { mr: 4, nr: 8, kc: 256, mc: 96, nc: 512, unroll: 4 } as const;
const { mr: MR, nr: NR, kc: KC, mc: MC, nc: NC, unroll: UNROLL } = WASM_GEMM;

interface GemmExports extends WebAssembly.Exports {
  packA(src: number, rs: number, cs: number, dst: number, mc: number, kc: number): void;
  packB(src: number, colOff: number, rowOff: number, flags: number, dst: number, kc: number, nc: number): void;
  kernel(mc: number, nc: number, kc: number, pa: number, pb: number, c: number, ldc: number, add: number, scratch: number): void;
}

/** min(a, b) of two i32 values already emitted (leaves it on the stack). */
function minI32(c: Code, a: () => void, b: () => void): void {
  a();
  b();
  a();
  b();
  c.op('i32.lt_s', 'select');
}

function emitPackA(m: ModuleBuilder): void {
  // packA(src, rs, cs, dst, mc, kc): rows [0, mc) × columns [0, kc) of A (byte strides rs, cs) as
  // ⌈mc/MR⌉ panels of kc columns of MR values. A short last panel repeats row mc−1: its rows are
  // computed but never stored, and reading a real row keeps every load in bounds.
  m.func('packA', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32'], [], (c) => {
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

function emitPackB(m: ModuleBuilder): void {
  // packB(src, colOff, rowOff, flags, dst, kc, nc): element (k, j) of B is at src + colOff[j] + rowOff[k]
  // (i32 byte-offset tables; colOff padded to a multiple of NR by repeating its last entry). Panel p
  // holds kc rows of NR values; flags[p] ≠ 0 says its NR columns are consecutive floats, loaded as two v128.
  m.func('packB', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32'], [], (c) => {
    const [src, colOff, rowOff, flags, dst, kc, nc] = [0, 1, 2, 3, 4, 5, 6];
    const jp = c.local('i32'), k = c.local('i32'), base = c.local('i32'), at = c.local('i32');
    const cols = Array.from({ length: NR }, () => c.local('i32'));
    c.forRange(jp, () => c.i32(0), () => c.get(nc), NR, () => {
      c.block((done) => {
        c.get(flags).get(jp).i32(1).op('i32.shr_s').op('i32.add').mem('i32.load').if(() => {
          // (jp / NR) · 4 = jp / 2: the panel's flag.
          c.get(src).get(colOff).get(jp).i32(2).op('i32.shl').op('i32.add').mem('i32.load').op('i32.add').set(base);
          c.forRange(k, () => c.i32(0), () => c.get(kc), 1, () => {
            c.get(base).get(rowOff).get(k).i32(2).op('i32.shl').op('i32.add').mem('i32.load').op('i32.add').set(at);
            c.get(dst).get(at).mem('v128.load').mem('v128.store');
            c.get(dst).get(at).mem('v128.load', 16).mem('v128.store', 16);
            c.get(dst).i32(4 * NR).op('i32.add').set(dst);
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

function emitKernel(m: ModuleBuilder): void {
  // kernel(mc, nc, kc, pa, pb, c, ldc, add, scratch): C[mc × nc] (+)= packed A block · packed B block,
  // C row-major with ldc bytes per row; scratch holds one MR×NR tile for the edges.
  m.func('kernel', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32'], [], (c) => {
    const [mc, nc, kc, pa, pb, cp, ldc, add, scratch] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
    const jr = c.local('i32'), ir = c.local('i32'), rows = c.local('i32'), cols = c.local('i32');
    const ap = c.local('i32'), bp = c.local('i32'), kk = c.local('i32'), ptr = c.local('i32'), r = c.local('i32'), j = c.local('i32');
    const acc = Array.from({ length: MR }, () => [c.local('v128'), c.local('v128')] as const);
    const b0 = c.local('v128'), b1 = c.local('v128'), a = c.local('v128'), v = c.local('f32');
    /** One step of k: acc[r] += A[k, r] · B[k, 0..8) for the panels at ap, bp plus `step` steps. */
    const step = (s: number): void => {
      c.get(bp).mem('v128.load', s * 4 * NR).set(b0);
      c.get(bp).mem('v128.load', s * 4 * NR + 16).set(b1);
      acc.forEach(([lo, hi], row) => {
        c.get(ap).mem('v128.load32_splat', (s * MR + row) * 4).set(a);
        c.get(lo).get(a).get(b0).simd('f32x4.mul', 'f32x4.add').set(lo);
        c.get(hi).get(a).get(b1).simd('f32x4.mul', 'f32x4.add').set(hi);
      });
    };
    /** while (kk + n ≤ kc) { n steps }. */
    const kLoop = (n: number): void => {
      c.block((done) => c.loop((top) => {
        c.get(kk).i32(n).op('i32.add').get(kc).op('i32.gt_s').brIf(done);
        for (let s = 0; s < n; s++) step(s);
        c.get(ap).i32(n * MR * 4).op('i32.add').set(ap);
        c.get(bp).i32(n * NR * 4).op('i32.add').set(bp);
        c.get(kk).i32(n).op('i32.add').set(kk);
        c.br(top);
      }));
    };
    c.forRange(jr, () => c.i32(0), () => c.get(nc), NR, () => {
      minI32(c, () => c.i32(NR), () => c.get(nc).get(jr).op('i32.sub'));
      c.set(cols);
      c.forRange(ir, () => c.i32(0), () => c.get(mc), MR, () => {
        minI32(c, () => c.i32(MR), () => c.get(mc).get(ir).op('i32.sub'));
        c.set(rows);
        c.get(pa).get(ir).get(kc).op('i32.mul').i32(2).op('i32.shl').op('i32.add').set(ap);
        c.get(pb).get(jr).get(kc).op('i32.mul').i32(2).op('i32.shl').op('i32.add').set(bp);
        for (const [lo, hi] of acc) c.f32(0).simd('f32x4.splat').tee(lo).set(hi);
        c.i32(0).set(kk);
        kLoop(UNROLL);
        kLoop(1);
        // ptr = the tile's first element in C.
        c.get(cp).get(ir).get(ldc).op('i32.mul').op('i32.add').get(jr).i32(2).op('i32.shl').op('i32.add').set(ptr);
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
    });
  });
}

let exportsCache: GemmExports | undefined;

function gemmExports(): GemmExports {
  if (!exportsCache) {
    const m = new ModuleBuilder();
    emitPackA(m);
    emitPackB(m);
    emitKernel(m);
    exportsCache = instantiate<GemmExports>(m.build());
  }
  return exportsCache;
}

/** Whether the wasm GEMM can run here (SIMD128 validated by the engine). */
export function wasmGemmAvailable(): boolean {
  return hasSimd();
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

/** Writes B's tables into the heap: column offsets (bytes) and the per-panel contiguity flags. */
export function columnTables(n: number, colOffset: (j: number) => number): { colOff: number; flags: number } {
  const h = heap();
  const padded = Math.ceil(n / NR) * NR;
  const colOff = h.alloc(padded * 4), flags = h.alloc((padded / NR) * 4);
  const i32 = h.i32;
  for (let j = 0; j < padded; j++) i32[(colOff >> 2) + j] = colOffset(Math.min(j, n - 1));
  for (let p = 0; p < padded / NR; p++) {
    const first = i32[(colOff >> 2) + p * NR]!;
    let contiguous = p * NR + NR <= n;
    for (let c = 1; c < NR && contiguous; c++) contiguous = i32[(colOff >> 2) + p * NR + c] === first + 4 * c;
    i32[(flags >> 2) + p] = contiguous ? 1 : 0;
  }
  return { colOff, flags };
}

/** Writes a table of `k` row offsets (bytes) into the heap. */
export function rowTable(k: number, rowOffset: (i: number) => number): number {
  const h = heap(), at = h.alloc(k * 4), i32 = h.i32;
  for (let i = 0; i < k; i++) i32[(at >> 2) + i] = rowOffset(i);
  return at;
}

/**
 * C = A·B, or C += A·B when `add`, all in the heap: A m×k at `a` with byte strides (ars, acs), B as
 * `b`, C row-major at `c` with `ldc` bytes per row. Allocates its packing buffers from the heap
 * (callers allocate their operands first).
 */
export function gemmInHeap(m: number, n: number, k: number, a: number, ars: number, acs: number, b: HeapB, c: number, ldc: number, add: boolean): void {
  if (m === 0 || n === 0) return;
  const h = heap(), x = gemmExports();
  if (k === 0) {
    if (!add) for (let i = 0; i < m; i++) h.f32.fill(0, (c + i * ldc) >> 2, ((c + i * ldc) >> 2) + n);
    return;
  }
  const mark = h.mark();
  const kcMax = Math.min(KC, k);
  const packedA = h.alloc(Math.ceil(Math.min(MC, m) / MR) * MR * kcMax * 4);
  const packedB = h.alloc(Math.ceil(Math.min(NC, n) / NR) * NR * kcMax * 4);
  const scratch = h.alloc(MR * NR * 4);
  for (let jc = 0; jc < n; jc += NC) {
    const nc = Math.min(NC, n - jc);
    for (let pc = 0; pc < k; pc += KC) {
      const kc = Math.min(KC, k - pc);
      x.packB(b.base, b.colOff + jc * 4, b.rowOff + pc * 4, b.flags + (jc / NR) * 4, packedB, kc, nc);
      for (let ic = 0; ic < m; ic += MC) {
        const mc = Math.min(MC, m - ic);
        x.packA(a + ic * ars + pc * acs, ars, acs, packedA, mc, kc);
        x.kernel(mc, nc, kc, packedA, packedB, c + ic * ldc + jc * 4, ldc, add || pc > 0 ? 1 : 0, scratch);
      }
    }
  }
  h.release(mark);
}
