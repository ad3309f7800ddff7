import type { DType, HostArray } from '../../tensor/dtype.js';
import { numel } from '../../tensor/shape.js';
import type { CpuView } from '../../ops/op.js';
import { type Expr, call, exprNodes, input } from '../../ops/expr.js';
import { broadcastStrides, collapseDims, mapKernel } from './map.js';
import { kernelOverrides } from './overrides.js';

// The one GEMM the CPU backend has (matmul, linear, conv2d and convTranspose2d all call it), laid out
// as in BLIS: operands are packed into small contiguous Float64Array panels, and a 4×8 register-tiled
// micro-kernel multiplies one A panel by one B panel with 32 local accumulators. Blocking keeps a B
// panel in L1 and the packed A block in L2. Sums are accumulated in double: float32 products are
// exact in double, so results are rounded once, and int32 results are exact below 2^53 (then wrap on
// store like a C cast).

/**
 * mr × nr: the register tile (rows of A and columns of B per micro-kernel call; the micro-kernels are
 * written for 4×8); kc, mc, nc: the cache blocks (depth of one pass over K, rows of A packed at once,
 * columns of B packed at once).
 */
export const GEMM_BLOCKS = { mr: 4, nr: 8, kc: 256, mc: 64, nc: 1024 } as const;
const { mr: MR, nr: NR, kc: KC, mc: MC, nc: NC } = GEMM_BLOCKS;

type Values = HostArray | Float64Array;

/** A strided matrix: element (i, j) is data[offset + i·rowStride + j·colStride]; strides may be 0 (broadcast). */
export interface Matrix {
  readonly data: Values;
  readonly offset: number;
  readonly rowStride: number;
  readonly colStride: number;
}

/** A row-major output block: element (i, j) is data[offset + i·rowStride + j]. */
export interface OutMatrix {
  readonly data: Values;
  readonly offset: number;
  readonly rowStride: number;
}

/**
 * Packs rows [k0, k0+kc) × columns [j0, j0+nc) of a B operand into `dst` as ⌈nc/NR⌉ panels; panel p
 * holds kc rows of NR consecutive values (columns j0+p·NR …; slots past column j0+nc are never read
 * back into C, so they may hold anything). A B operand that is not a stored matrix (conv's im2col)
 * packs itself this way, so it is never materialised.
 */
export type PackB = (dst: Float64Array, k0: number, kc: number, j0: number, nc: number) => void;

/** The packer for a B operand stored as a strided matrix. */
export function packMatrix(b: Matrix): PackB {
  const { data, offset, rowStride: rs, colStride: cs } = b;
  return (dst, k0, kc, j0, nc) => {
    let q = 0;
    for (let jp = 0; jp < nc; jp += NR) {
      const w = Math.min(NR, nc - jp);
      for (let k = 0; k < kc; k++, q += NR) {
        const row = offset + (k0 + k) * rs + (j0 + jp) * cs;
        for (let c = 0; c < w; c++) dst[q + c] = data[row + c * cs]!;
      }
    }
  };
}

/** Rows [i0, i0+mc) × columns [k0, k0+kc) of A as ⌈mc/MR⌉ panels of kc columns of MR values (unspecified past row i0+mc). */
function packA(dst: Float64Array, a: Matrix, i0: number, mc: number, k0: number, kc: number): void {
  const { data, offset, rowStride: rs, colStride: cs } = a;
  let q = 0;
  for (let ip = 0; ip < mc; ip += MR) {
    const h = Math.min(MR, mc - ip);
    const base = offset + (i0 + ip) * rs + k0 * cs;
    for (let k = 0; k < kc; k++, q += MR) {
      const at = base + k * cs;
      for (let r = 0; r < h; r++) dst[q + r] = data[at + r * rs]!;
    }
  }
}

/** tile[r·NR + c] = Σ_k A[ai + k·MR + r] · B[bi + k·NR + c] for one packed A panel and one packed B panel. */
function micro4x8(kc: number, A: Float64Array, ai: number, B: Float64Array, bi: number, tile: Float64Array): void {
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c04 = 0, c05 = 0, c06 = 0, c07 = 0;
  let c10 = 0, c11 = 0, c12 = 0, c13 = 0, c14 = 0, c15 = 0, c16 = 0, c17 = 0;
  let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c24 = 0, c25 = 0, c26 = 0, c27 = 0;
  let c30 = 0, c31 = 0, c32 = 0, c33 = 0, c34 = 0, c35 = 0, c36 = 0, c37 = 0;
  for (let k = 0; k < kc; k++, ai += MR, bi += NR) {
    const a0 = A[ai]!, a1 = A[ai + 1]!, a2 = A[ai + 2]!, a3 = A[ai + 3]!;
    const b0 = B[bi]!, b1 = B[bi + 1]!, b2 = B[bi + 2]!, b3 = B[bi + 3]!, b4 = B[bi + 4]!, b5 = B[bi + 5]!, b6 = B[bi + 6]!, b7 = B[bi + 7]!;
    c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3; c04 += a0 * b4; c05 += a0 * b5; c06 += a0 * b6; c07 += a0 * b7;
    c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3; c14 += a1 * b4; c15 += a1 * b5; c16 += a1 * b6; c17 += a1 * b7;
    c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3; c24 += a2 * b4; c25 += a2 * b5; c26 += a2 * b6; c27 += a2 * b7;
    c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3; c34 += a3 * b4; c35 += a3 * b5; c36 += a3 * b6; c37 += a3 * b7;
  }
  tile[0] = c00; tile[1] = c01; tile[2] = c02; tile[3] = c03; tile[4] = c04; tile[5] = c05; tile[6] = c06; tile[7] = c07;
  tile[8] = c10; tile[9] = c11; tile[10] = c12; tile[11] = c13; tile[12] = c14; tile[13] = c15; tile[14] = c16; tile[15] = c17;
  tile[16] = c20; tile[17] = c21; tile[18] = c22; tile[19] = c23; tile[20] = c24; tile[21] = c25; tile[22] = c26; tile[23] = c27;
  tile[24] = c30; tile[25] = c31; tile[26] = c32; tile[27] = c33; tile[28] = c34; tile[29] = c35; tile[30] = c36; tile[31] = c37;
}

/** One row of a packed A panel (ai points at the row; its values are MR apart) times a B panel, into tile[0..NR). */
function micro1x8(kc: number, A: Float64Array, ai: number, B: Float64Array, bi: number, tile: Float64Array): void {
  let c0 = 0, c1 = 0, c2 = 0, c3 = 0, c4 = 0, c5 = 0, c6 = 0, c7 = 0;
  for (let k = 0; k < kc; k++, ai += MR, bi += NR) {
    const a = A[ai]!;
    c0 += a * B[bi]!; c1 += a * B[bi + 1]!; c2 += a * B[bi + 2]!; c3 += a * B[bi + 3]!;
    c4 += a * B[bi + 4]!; c5 += a * B[bi + 5]!; c6 += a * B[bi + 6]!; c7 += a * B[bi + 7]!;
  }
  tile[0] = c0; tile[1] = c1; tile[2] = c2; tile[3] = c3; tile[4] = c4; tile[5] = c5; tile[6] = c6; tile[7] = c7;
}

/** Writes (or adds) rows × cols of the tile into C at `at`. */
function storeTile(tile: Float64Array, rows: number, cols: number, C: Values, at: number, ldc: number, add: boolean): void {
  for (let r = 0; r < rows; r++, at += ldc) {
    const t = r * NR;
    if (add) for (let c = 0; c < cols; c++) C[at + c] = C[at + c]! + tile[t + c]!;
    else for (let c = 0; c < cols; c++) C[at + c] = tile[t + c]!;
  }
}

/**
 * C[row] (+)= A[row] · B for a few rows of A and a stored B: dot products over four columns at a time,
 * with no packing, which would cost as much as the multiply itself when A has so few rows.
 */
function gemvRows(m: number, n: number, k: number, a: Matrix, b: Matrix, c: OutMatrix, add: boolean): void {
  const { data: X, colStride: xs } = a, { data: B, offset: bo, rowStride: rs, colStride: cs } = b, C = c.data;
  for (let i = 0; i < m; i++) {
    const xo = a.offset + i * a.rowStride, co = c.offset + i * c.rowStride;
    let j = 0;
    for (; j + 4 <= n; j += 4) {
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let kk = 0, p = bo + j * cs, x = xo; kk < k; kk++, p += rs, x += xs) {
        const v = X[x]!;
        s0 += v * B[p]!; s1 += v * B[p + cs]!; s2 += v * B[p + 2 * cs]!; s3 += v * B[p + 3 * cs]!;
      }
      if (add) { C[co + j] = C[co + j]! + s0; C[co + j + 1] = C[co + j + 1]! + s1; C[co + j + 2] = C[co + j + 2]! + s2; C[co + j + 3] = C[co + j + 3]! + s3; }
      else { C[co + j] = s0; C[co + j + 1] = s1; C[co + j + 2] = s2; C[co + j + 3] = s3; }
    }
    for (; j < n; j++) {
      let s = 0;
      for (let kk = 0, p = bo + j * cs, x = xo; kk < k; kk++, p += rs, x += xs) s += X[x]! * B[p]!;
      C[co + j] = add ? C[co + j]! + s : s;
    }
  }
}

// Packing buffers, grown on demand and reused (kernels run one at a time).
let bufA = new Float64Array(0), bufB = new Float64Array(0);
const tile = new Float64Array(MR * NR);

/**
 * C = A·B, or C += A·B when `accumulate` (how bias is added: write it to C first), for an m×k A and
 * a k×n B. C's type decides the result's (Float32Array rounds to float32, Int32Array wraps).
 */
export function gemm(m: number, n: number, k: number, a: Matrix, b: Matrix | PackB, c: OutMatrix, accumulate: boolean): void {
  if (m === 0 || n === 0) return;
  const C = c.data, ldc = c.rowStride;
  if (k === 0) {
    if (!accumulate) for (let i = 0; i < m; i++) C.fill(0, c.offset + i * ldc, c.offset + i * ldc + n);
    return;
  }
  if (typeof b !== 'function' && kernelOverrides.gemm?.(m, n, k, a, b, c, accumulate)) return;
  if (m < MR && typeof b !== 'function') return gemvRows(m, n, k, a, b, c, accumulate);
  const pack = typeof b === 'function' ? b : packMatrix(b);
  const kcMax = Math.min(KC, k);
  const needA = Math.ceil(Math.min(MC, m) / MR) * MR * kcMax, needB = Math.ceil(Math.min(NC, n) / NR) * NR * kcMax;
  if (bufA.length < needA) bufA = new Float64Array(needA);
  if (bufB.length < needB) bufB = new Float64Array(needB);
  const A = bufA, B = bufB;
  for (let jc = 0; jc < n; jc += NC) {
    const nc = Math.min(NC, n - jc);
    for (let pc = 0; pc < k; pc += KC) {
      const kc = Math.min(KC, k - pc);
      const add = accumulate || pc > 0;
      pack(B, pc, kc, jc, nc);
      for (let ic = 0; ic < m; ic += MC) {
        const mc = Math.min(MC, m - ic);
        packA(A, a, ic, mc, pc, kc);
        for (let jr = 0; jr < nc; jr += NR) {
          const cols = Math.min(NR, nc - jr), bi = jr * kc;
          for (let ir = 0; ir < mc; ir += MR) {
            const rows = Math.min(MR, mc - ir), ai = ir * kc;
            const at = c.offset + (ic + ir) * ldc + jc + jr;
            if (rows === MR) {
              micro4x8(kc, A, ai, B, bi, tile);
              storeTile(tile, MR, cols, C, at, ldc, add);
            } else {
              // A short last panel: one row at a time, computing no rows past the end of A.
              for (let r = 0; r < rows; r++) {
                micro1x8(kc, A, ai + r, B, bi, tile);
                storeTile(tile, 1, cols, C, at + r * ldc, ldc, add);
              }
            }
          }
        }
      }
    }
  }
}

/**
 * out (+)= a @ b with torch.matmul's semantics for strided views: a 1-D a is one row, a 1-D b one
 * column, and leading dims are batch dims broadcast to out's (already validated by the op's infer).
 */
export function matmulKernel(a: CpuView, b: CpuView, out: CpuView, accumulate: boolean): void {
  const ra = a.shape.length, rb = b.shape.length;
  const m = ra === 1 ? 1 : a.shape[ra - 2]!, k = a.shape[ra - 1]!, n = rb === 1 ? 1 : b.shape[rb - 1]!;
  const A = { data: a.data, rowStride: ra === 1 ? 0 : a.strides[ra - 2]!, colStride: a.strides[ra - 1]! };
  const B = { data: b.data, rowStride: rb === 1 ? b.strides[0]! : b.strides[rb - 2]!, colStride: rb === 1 ? 0 : b.strides[rb - 1]! };
  const batch = out.shape.slice(0, out.shape.length - (ra > 1 ? 1 : 0) - (rb > 1 ? 1 : 0));
  const batchOf = (v: CpuView) => broadcastStrides({ shape: v.shape.slice(0, -2), strides: v.strides.slice(0, -2) }, batch);
  const aStrides = batchOf(a), bStrides = batchOf(b);
  const C = (offset: number): OutMatrix => ({ data: out.data, offset, rowStride: n });
  if (bStrides.every((s) => s === 0)) {
    // Every batch multiplies the same B: when A's batch dims stack onto its rows as one strided matrix, that is one GEMM.
    const { shape, strides } = collapseDims([...batch, m], [[...aStrides, A.rowStride]]);
    if (shape.length <= 1) {
      gemm(numel(batch) * m, n, k, { ...A, offset: a.offset, rowStride: strides[0]![0] ?? 0 }, { ...B, offset: b.offset }, C(out.offset), accumulate);
      return;
    }
  }
  const idx = new Array<number>(batch.length).fill(0);
  let ao = a.offset, bo = b.offset;
  for (let t = 0, nb = numel(batch); t < nb; t++) {
    gemm(m, n, k, { ...A, offset: ao }, { ...B, offset: bo }, C(out.offset + t * m * n), accumulate);
    for (let d = batch.length - 1; d >= 0; d--) {
      if (++idx[d]! < batch[d]!) {
        ao += aStrides[d]!;
        bo += bStrides[d]!;
        break;
      }
      idx[d] = 0;
      ao -= aStrides[d]! * (batch[d]! - 1);
      bo -= bStrides[d]! * (batch[d]! - 1);
    }
  }
}

/** How many extra tensors an epilogue reads: its inputs 1.. (input 0 is the op's result). Kept per epilogue object (asked on every call of a plan). */
const arities = new WeakMap<Expr, number>();
export function epilogueArity(expr: Expr): number {
  let arity = arities.get(expr);
  if (arity === undefined) arities.set(expr, (arity = exprNodes(expr).reduce((n, e) => (e.kind === 'input' ? Math.max(n, e.index) : n), 0)));
  return arity;
}

/**
 * Applies an epilogue in place over a GEMM op's contiguous output `out`, which holds the op's
 * result of dtype `natural` (unrounded for float16), reading `extras` broadcast to its shape. A
 * generated map right after the GEMM rather than inside its micro-kernel: the tile store is the
 * hot loop, and the output block is still in cache. Input 0 is rounded to `natural` first, so the
 * result equals the eager op followed by the eager elementwise ops.
 */
export function epilogueKernel(expr: Expr, natural: DType, out: CpuView, extras: readonly CpuView[]): void {
  const fused = roundedEpilogue(expr, natural);
  if (!kernelOverrides.map?.(fused, [out, ...extras], out)) mapKernel(fused, [out, ...extras], out);
}

/** The epilogue with input 0 rounded to `natural` first: one object per (epilogue, dtype), so the map kernels' per-expression caches hit on every call of a plan. */
const roundedEpilogues = new WeakMap<Expr, Map<DType, Expr>>();
function roundedEpilogue(expr: Expr, natural: DType): Expr {
  let byType = roundedEpilogues.get(expr);
  if (!byType) roundedEpilogues.set(expr, (byType = new Map()));
  let fused = byType.get(natural);
  if (!fused) byType.set(natural, (fused = substituteInput0(expr, call('cast', [input(0, natural)], natural))));
  return fused;
}

/** `e` with input 0 replaced by `by`, shared subtrees kept shared. */
function substituteInput0(e: Expr, by: Expr, memo = new Map<Expr, Expr>()): Expr {
  const hit = memo.get(e);
  if (hit) return hit;
  const out = e.kind === 'input' ? (e.index === 0 ? by : e) : e.kind === 'const' ? e : call(e.fn, e.args.map((a) => substituteInput0(a, by, memo)), e.dtype, e.params);
  memo.set(e, out);
  return out;
}
