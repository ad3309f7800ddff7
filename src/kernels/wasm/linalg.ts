import type { Matrix, OutMatrix } from '../cpu/gemm.js';
import type { Conv2dAttrs, ConvTranspose2dAttrs } from '../../ops/conv.js';
import type { CpuView } from '../../ops/op.js';
import { WASM_GEMM, columnTables, gemmInHeap, rowTable } from './gemm.js';
import { copyHeapRows, copyRow, copyRows, fillHeap, fillPadding, wasmDepthwiseConv2d } from './depthwise.js';
import { ModuleBuilder } from './emitter.js';
import { heap, instantiate, memoryImport } from './heap.js';
import { isContiguous, numel } from '../../tensor/shape.js';
import { gatherView } from '../../tensor/tensor.js';

// The CPU kernels' GEMM descriptions (strided float32 matrices; conv2d's weights × patches) run on the
// wasm GEMM. Operands whose storage lives in the heap (src/kernels/wasm/heap.ts) are read and written
// where they are; others (JS arrays) are copied in (a memcpy of each view's span) and C is copied out.

/** The element range [lo, hi] a strided rows × cols matrix at `offset` touches. */
function span(offset: number, rows: number, cols: number, rs: number, cs: number): [number, number] {
  const r = (rows - 1) * rs, c = (cols - 1) * cs;
  return [offset + Math.min(0, r) + Math.min(0, c), offset + Math.max(0, r) + Math.max(0, c)];
}

/** The heap address of a strided matrix's element (0, 0): where it is, or where its span was copied in. */
function matrixAt(x: Matrix, rows: number, cols: number): number {
  const direct = heap().addressOf(x.data as Float32Array, x.offset);
  if (direct !== undefined) return direct;
  const [lo, hi] = span(x.offset, rows, cols, x.rowStride, x.colStride);
  return heap().put((x.data as Float32Array).subarray(lo, hi + 1)) + (x.offset - lo) * 4;
}

/**
 * C = A·B (or C += A·B) on the wasm GEMM when A, B and C hold float32 values (float16 tensors too: the
 * backend widens them to float32 before the kernel and narrows the result after); returns false to leave
 * other operands to the JavaScript GEMM.
 */
export function wasmGemm(m: number, n: number, k: number, a: Matrix, b: Matrix, c: OutMatrix, accumulate: boolean): boolean {
  if (!(a.data instanceof Float32Array && b.data instanceof Float32Array && c.data instanceof Float32Array)) return false;
  const h = heap();
  h.reset();
  const cDirect = h.addressOf(c.data, c.offset);
  const aAt = matrixAt(a, m, k), bAt = matrixAt(b, k, n);
  const { colOff, flags } = columnTables(n, { sizes: [1, 1, n], strides: [0, 0, b.colStride * 4] });
  const rowOff = rowTable(k, (i) => i * b.rowStride * 4);
  const B = { base: bAt, colOff, rowOff, flags };
  if (cDirect !== undefined) {
    gemmInHeap(m, n, k, aAt, a.rowStride * 4, a.colStride * 4, B, cDirect, c.rowStride * 4, accumulate);
    return true;
  }
  const cAt = h.alloc(m * n * 4);
  const C = c.data, rows = (i: number) => c.offset + i * c.rowStride;
  if (accumulate) for (let i = 0; i < m; i++) h.f32.set(C.subarray(rows(i), rows(i) + n), (cAt >>> 2) + i * n);
  gemmInHeap(m, n, k, aAt, a.rowStride * 4, a.colStride * 4, B, cAt, n * 4, accumulate);
  const f32 = h.f32;
  if (c.rowStride === n) C.set(f32.subarray(cAt >>> 2, (cAt >>> 2) + m * n), c.offset);
  else for (let i = 0; i < m; i++) C.set(f32.subarray((cAt >>> 2) + i * n, (cAt >>> 2) + (i + 1) * n), rows(i));
  return true;
}

/**
 * conv2d: depthwise convolutions (one input channel and fewer than MR output channels per group) on
 * their direct SIMD loop (src/kernels/wasm/depthwise.ts), the others as one implicit GEMM per group over
 * the whole batch: out[Og, N·OH·OW] = weight[Og, Cg·kh·kw] · patches. A patch element is
 * x[n, c, oh·sh + i·dh, ow·sw + j·dw]: column (n, oh, ow) and row (c, i, j) offsets of B's tables, read
 * where the input is when it lives in the heap and needs no padding, else from the group's planes of every
 * image copied once into the heap with their zero padding. Eight outputs of one row at stride 1 are eight
 * consecutive floats (packed as two v128 loads). One GEMM for the batch packs the weights once and gives
 * the threads N times the columns to share; a single image's GEMM writes its output where it is.
 */
export function wasmConv2d(x: CpuView, w: CpuView, bias: CpuView | undefined, a: Conv2dAttrs, out: CpuView): boolean {
  if (!(x.data instanceof Float32Array && w.data instanceof Float32Array && out.data instanceof Float32Array)) return false;
  if (bias && !(bias.data instanceof Float32Array)) return false;
  const [O, Cg, kh, kw] = w.shape as [number, number, number, number];
  const batched = x.shape.length === 4;
  const [N, , H, W] = (batched ? x.shape : [1, ...x.shape]) as [number, number, number, number];
  const [sN, sC, sH, sW] = (batched ? x.strides : [0, ...x.strides]) as [number, number, number, number];
  const [OH, OW] = out.shape.slice(-2) as [number, number];
  const [sh, sw] = a.stride, [dh, dw] = a.dilation, [pt, pb, pl, pr] = a.padding;
  const G = a.groups, Og = O / G, K = Cg * kh * kw, P = OH * OW, NP = N * P;
  if (Cg === 1 && Og < WASM_GEMM.mr) return wasmDepthwiseConv2d(x, w, bias, a, out);
  const h = heap();
  h.reset();
  const padded = pt + pb + pl + pr > 0;
  const xDirect = padded ? undefined : h.addressOf(x.data, x.offset);
  const outDirect = N === 1 ? h.addressOf(out.data, out.offset) : undefined;
  const wDirect = isContiguous(w.shape, w.strides) ? h.addressOf(w.data, w.offset) : undefined;
  // B's element strides: the input's own, or those of the padded copy [N, Cg, H + pt + pb, W + pl + pr].
  const Hp = H + pt + pb, Wp = W + pl + pr, plane = Hp * Wp, image = Cg * plane;
  const [bN, bC, bH, bW] = xDirect !== undefined ? [sN, sC, sH, sW] : [image, plane, Wp, 1];
  // Weights [O, K], row-major: where they are, or copied in (one memcpy when the view is contiguous).
  const wAt = wDirect ?? putContiguous(w);
  const { colOff, flags } = columnTables(NP, { sizes: [N, OH, OW], strides: [bN * 4, sh * bH * 4, sw * bW * 4] });
  const rowOff = rowTable(K, (r) => (Math.floor(r / (kh * kw)) * bC + (Math.floor(r / kw) % kh) * dh * bH + (r % kw) * dw * bW) * 4);
  const xAt = xDirect ?? h.alloc(N * image * 4), cAt = outDirect ?? h.alloc(Og * NP * 4);
  // The bias, one float per output channel: where the GEMM's sums start.
  const biasAt = bias ? h.alloc(O * 4) : 0;
  if (bias) for (let o = 0, f32 = h.f32; o < O; o++) f32[(biasAt >>> 2) + o] = bias.data[bias.offset + o * bias.strides[0]!]!;
  for (let g = 0; g < G; g++) {
    const base = xDirect !== undefined ? xDirect + g * Cg * sC * 4 : xAt;
    if (xDirect === undefined) {
      const xd = x.data;
      // Zeros where the copy puts no input.
      fillPadding(xAt, N * Cg, Hp, Wp, pt, H, pl, W, 0);
      for (let n = 0; n < N; n++) {
        const from = x.offset + n * sN + g * Cg * sC, to = xAt + n * image * 4;
        // Row by row, in wasm from a heap storage (or by hand from a JS array).
        copyRows(xd, from, Cg, H, W, sC, sH, to + (pt * Wp + pl) * 4, plane * 4, Wp * 4, sW);
      }
    }
    // C: this group's rows of the output itself (one image in the heap), else scratch copied out after.
    const cg = outDirect !== undefined ? cAt + g * Og * P * 4 : cAt;
    gemmInHeap(Og, NP, K, wAt + g * Og * K * 4, K * 4, 4, { base, colOff, rowOff, flags }, cg, NP * 4, false, bias ? biasAt + g * Og * 4 : 0);
    if (outDirect !== undefined) continue;
    // C [Og, N·P] to out [N, O, P]: a wasm copy when the output is in the heap, else by hand.
    const res = h.f32, od = out.data, outAt = h.addressOf(od, out.offset + g * Og * P);
    if (outAt !== undefined) copyHeapRows(cAt, Og, N, P, NP * 4, P * 4, outAt, P * 4, O * P * 4);
    else if (N === 1) od.set(res.subarray(cAt >>> 2, (cAt >>> 2) + Og * P), out.offset + g * Og * P);
    else for (let o = 0; o < Og; o++) for (let n = 0; n < N; n++) copyRow(res, (cAt >>> 2) + o * NP + n * P, 1, od, out.offset + (n * O + g * Og + o) * P, P);
  }
  return true;
}

/** A view's values copied into heap scratch in row-major order (one memcpy when it is contiguous); returns their address. */
function putContiguous(v: CpuView): number {
  const n = numel(v.shape);
  if (isContiguous(v.shape, v.strides)) return heap().put((v.data as Float32Array).subarray(v.offset, v.offset + n));
  return heap().put(gatherView(v.data, v.shape, v.strides, v.offset, v.dtype) as Float32Array);
}

/** One kernel tap's input range along a dim: inputs [lo, hi) land inside the output, at input·stride + base. */
function tapRange(tap: number, dilation: number, pad: number, stride: number, inSize: number, outSize: number): [number, number, number] {
  const base = tap * dilation - pad;
  const lo = Math.max(0, Math.ceil(-base / stride)), hi = Math.min(inSize, Math.floor((outSize - 1 - base) / stride) + 1);
  return [lo, Math.max(lo, hi), base];
}

function emitCol2im(m: ModuleBuilder): void {
  // col2im(cols, channels, kh, kw, P, W, rowTaps, colTaps, out, OP, OW, sh, sw): out[c, ih·sh + bi, iw·sw + bj] +=
  // cols[(c·kh + i)·kw + j, ih·W + iw] for each tap (i, j), ih in [loI, hiI), iw in [loJ, hiJ) (rowTaps/colTaps: i32
  // triples lo, hi, base per tap), in the order of c, i, j, ih, iw; four at a time where sw = 1.
  const args = ['cols', 'channels', 'kh', 'kw', 'P', 'W', 'rowTaps', 'colTaps', 'out', 'OP', 'OW', 'sh', 'sw'] as const;
  m.func('col2im', args.map(() => 'i32' as const), [], (c) => {
    const [cols, channels, kh, kw, P, W, rowTaps, colTaps, out, OP, OW, sh, sw] = args.map((_, i) => i) as number[];
    const ch = c.local('i32'), i = c.local('i32'), j = c.local('i32'), ih = c.local('i32'), iw = c.local('i32');
    const src = c.local('i32'), dst = c.local('i32'), plane = c.local('i32'), row = c.local('i32'), ri = c.local('i32'), cj = c.local('i32'), hiJ = c.local('i32');
    const step = c.local('i32');
    c.get(sw!).i32(2).op('i32.shl').set(step);
    // row = the cols row of (ch, i, j), in bytes; it advances by P floats per tap.
    c.get(cols!).set(row);
    c.forRange(ch, () => c.i32(0), () => c.get(channels!), 1, () => {
      c.get(out!).get(ch).get(OP!).op('i32.mul').i32(2).op('i32.shl', 'i32.add').set(plane);
      c.forRange(i, () => c.i32(0), () => c.get(kh!), 1, () => {
        c.get(rowTaps!).get(i).i32(12).op('i32.mul', 'i32.add').set(ri);
        c.forRange(j, () => c.i32(0), () => c.get(kw!), 1, () => {
          c.get(colTaps!).get(j).i32(12).op('i32.mul', 'i32.add').set(cj);
          c.get(cj).mem('i32.load', 4).set(hiJ);
          c.forRange(ih, () => c.get(ri).mem('i32.load'), () => c.get(ri).mem('i32.load', 4), 1, () => {
            // dst = plane + ((ih·sh + baseI)·OW + loJ·sw + baseJ)·4, src = row + (ih·W + loJ)·4
            c.get(plane).get(ih).get(sh!).op('i32.mul').get(ri).mem('i32.load', 8).op('i32.add').get(OW!).op('i32.mul');
            c.get(cj).mem('i32.load').tee(iw).get(sw!).op('i32.mul', 'i32.add').get(cj).mem('i32.load', 8).op('i32.add').i32(2).op('i32.shl', 'i32.add').set(dst);
            c.get(row).get(ih).get(W!).op('i32.mul').get(iw).op('i32.add').i32(2).op('i32.shl', 'i32.add').set(src);
            c.get(sw!).i32(1).op('i32.eq').if(() => {
              c.block((done) => c.loop((top) => {
                c.get(iw).i32(4).op('i32.add').get(hiJ).op('i32.gt_s').brIf(done);
                c.get(dst).get(dst).mem('v128.load').get(src).mem('v128.load').simd('f32x4.add').mem('v128.store');
                c.get(dst).i32(16).op('i32.add').set(dst);
                c.get(src).i32(16).op('i32.add').set(src);
                c.get(iw).i32(4).op('i32.add').set(iw).br(top);
              }));
            });
            c.block((done) => c.loop((top) => {
              c.get(iw).get(hiJ).op('i32.ge_s').brIf(done);
              c.get(dst).get(dst).mem('f32.load').get(src).mem('f32.load').op('f32.add').mem('f32.store');
              c.get(dst).get(step).op('i32.add').set(dst);
              c.get(src).i32(4).op('i32.add').set(src);
              c.get(iw).i32(1).op('i32.add').set(iw).br(top);
            }));
          });
          c.get(row).get(P!).i32(2).op('i32.shl', 'i32.add').set(row);
        });
      });
    });
  });
}

let col2imFn: ((...args: number[]) => void) | undefined;

/**
 * convTranspose2d as src/kernels/cpu/conv.ts's JavaScript kernel computes it (per image and group, cols =
 * weightᵀ · input on the wasm GEMM, then each column value added to the output pixel it lands on, in the
 * same order), with the columns in heap scratch and the scatter (col2im) in wasm; the output must live in
 * the heap. Returns false to leave other operands to the JavaScript kernel.
 */
export function wasmConvTranspose2d(x: CpuView, w: CpuView, bias: CpuView | undefined, a: ConvTranspose2dAttrs, out: CpuView): boolean {
  if (!(x.data instanceof Float32Array && w.data instanceof Float32Array && out.data instanceof Float32Array)) return false;
  if (bias && !(bias.data instanceof Float32Array)) return false;
  const h = heap();
  h.reset();
  const outAt = h.addressOf(out.data, out.offset);
  if (outAt === undefined) return false;
  const batched = x.shape.length === 4;
  const [N, , H, W] = (batched ? x.shape : [1, ...x.shape]) as [number, number, number, number];
  const [sN, sC, sH, sW] = (batched ? x.strides : [0, ...x.strides]) as [number, number, number, number];
  const [Cin, Cog, kh, kw] = w.shape as [number, number, number, number];
  const [OH, OW] = out.shape.slice(-2) as [number, number];
  const G = a.groups, Cig = Cin / G, Cout = Cog * G, R = Cog * kh * kw, P = H * W, OP = OH * OW;
  // The input where it is, or copied in row-major (then its strides are those of [N, Cin, H, W]).
  const xDirect = h.addressOf(x.data, x.offset);
  const xAt = xDirect ?? putContiguous(x);
  const [bN, bC, bH, bW] = xDirect !== undefined ? [sN, sC, sH, sW] : [Cin * P, P, W, 1];
  const wAt = (isContiguous(w.shape, w.strides) ? h.addressOf(w.data, w.offset) : undefined) ?? putContiguous(w);
  const { colOff, flags } = columnTables(P, { sizes: [1, H, W], strides: [0, bH * 4, bW * 4] });
  const rowOff = rowTable(Cig, (ci) => ci * bC * 4);
  const taps = h.alloc((kh + kw) * 12), cols = h.alloc(R * P * 4);
  {
    const i32 = h.i32;
    for (let i = 0; i < kh; i++) i32.set(tapRange(i, a.dilation[0], a.padding[0], a.stride[0], H, OH), (taps >>> 2) + 3 * i);
    for (let j = 0; j < kw; j++) i32.set(tapRange(j, a.dilation[1], a.padding[1], a.stride[1], W, OW), (taps >>> 2) + 3 * (kh + j));
  }
  col2imFn ??= (() => {
    const m = new ModuleBuilder(memoryImport());
    emitCol2im(m);
    return instantiate<{ col2im: (...args: number[]) => void }>(m.build()).col2im;
  })();
  for (let n = 0; n < N; n++) {
    const image = outAt + n * Cout * OP * 4;
    for (let co = 0; co < Cout; co++) fillHeap(image + co * OP * 4, OP, bias ? bias.data[bias.offset + co * bias.strides[0]!]! : 0);
    for (let g = 0; g < G; g++) {
      // Weight group g is [Cig, R]; its transpose is the [R, Cig] left operand.
      gemmInHeap(R, P, Cig, wAt + g * Cig * R * 4, 4, R * 4, { base: xAt + (n * bN + g * Cig * bC) * 4, colOff, rowOff, flags }, cols, P * 4, false);
      col2imFn(cols, Cog, kh, kw, P, W, taps, taps + kh * 12, image + g * Cog * OP * 4, OP, OW, a.stride[0], a.stride[1]);
    }
  }
  return true;
}
