import type { Conv2dAttrs } from '../../ops/conv.js';
import type { CpuView } from '../../ops/op.js';
import { ModuleBuilder } from './emitter.js';
import type { HostArray } from '../../tensor/dtype.js';
import { heap, instantiate, memoryImport } from './heap.js';
import { availableThreads, parallelFor } from './threads.js';

// Windows slid over planes, as direct SIMD loops: depthwise convolution (one input channel per group, Og
// output channels each: with so few output channels a GEMM would spend more time packing patches than
// multiplying) and 2-d pooling (src/kernels/wasm/pool.ts). Each input plane is copied into the heap once,
// padded (zeros, or −∞ for max) and split by column phase (phase q of a row holds its columns q, q + sw,
// q + 2·sw, …), so that whatever the stride, the tap under eight consecutive outputs is eight consecutive
// floats: two v128 loads, no bounds checks. 'madd' accumulates bias, then w[i, j]·x over the taps in
// (i, j) order, in float32; 'max' folds f32x4.max over the taps (NaN propagates).

/** Outputs per step of the inner loop (two v128 accumulators); output rows are padded to a multiple of it. */
const STEP = 8;
/** Tap operations (one output · one tap) below which a share of the channels is not worth a thread's wake-up (~0.05 ms of work). */
const MIN_TAPS_PER_SHARE = 1 << 17;
/** Floats copied below which a share of the planes is not worth a thread's wake-up. */
const MIN_COPY_PER_SHARE = 1 << 16;

/** The windows' arguments, in order (i32 each: counts, and byte addresses and strides in the heap). */
const ARGS = ['first', 'end', 'og', 'inp', 'inStride', 'taps', 'ntaps', 'wts', 'bias', 'out', 'oh', 'owv', 'rowStep'] as const;

export type WindowFold = 'madd' | 'max';

function emitWindows(m: ModuleBuilder, fold: WindowFold): void {
  // windows_<fold>(first, end, og, inp, inStride, taps, ntaps, wts, bias, out, oh, owv, rowStep):
  // for output channels c in [first, end) (a thread's share), input plane inp + ⌊c/og⌋·inStride; out[c, y, x] = bias[c] ⊕_t (wts[c, t] ·) plane[y·rowStep + taps[t] + 4x]
  // (byte offsets; taps[t] is tap t's offset from the row start, rowStep the bytes between output rows' first taps).
  m.func(`windows_${fold}`, ARGS.map(() => 'i32' as const), [], (c) => {
    const [first, end, og, inp, inStride, taps, ntaps, wts, bias, out, oh, owv, rowStep] = ARGS.map((_, i) => i) as number[];
    const ch = c.local('i32'), y = c.local('i32'), x = c.local('i32');
    const plane = c.local('i32'), row = c.local('i32'), at = c.local('i32'), wp = c.local('i32'), dst = c.local('i32'), tp = c.local('i32');
    const rowX = c.local('i32'), tapsEnd = c.local('i32');
    const b = c.local('v128'), acc0 = c.local('v128'), acc1 = c.local('v128'), wv = c.local('v128');
    // dst = out + first·oh·owv floats; the weights from channel `first` on.
    c.get(out!).get(first!).get(oh!).op('i32.mul').get(owv!).op('i32.mul').i32(2).op('i32.shl', 'i32.add').set(dst);
    if (fold === 'madd') c.get(wts!).get(first!).get(ntaps!).op('i32.mul').i32(2).op('i32.shl', 'i32.add').set(wts!);
    c.get(taps!).get(ntaps!).i32(2).op('i32.shl', 'i32.add').set(tapsEnd);
    c.forRange(ch, () => c.get(first!), () => c.get(end!), 1, () => {
      c.get(inp!).get(ch).get(og!).op('i32.div_s').get(inStride!).op('i32.mul', 'i32.add').set(plane);
      c.get(bias!).get(ch).i32(2).op('i32.shl', 'i32.add').mem('v128.load32_splat').set(b);
      c.forRange(y, () => c.i32(0), () => c.get(oh!), 1, () => {
        c.get(plane).get(y).get(rowStep!).op('i32.mul', 'i32.add').set(row);
        c.forRange(x, () => c.i32(0), () => c.get(owv!), STEP, () => {
          c.get(b).tee(acc0).set(acc1);
          c.get(wts!).set(wp);
          c.get(taps!).set(tp);
          c.get(row).get(x).i32(2).op('i32.shl', 'i32.add').set(rowX);
          // The taps (ntaps ≥ 1) as a do-while on the table pointer: per tap one table load and one add find its floats.
          c.loop((next) => {
            c.get(rowX).get(tp).mem('i32.load').op('i32.add').set(at);
            if (fold === 'madd') {
              c.get(wp).mem('v128.load32_splat').set(wv);
              c.get(acc0).get(wv).get(at).mem('v128.load').simd('f32x4.mul', 'f32x4.add').set(acc0);
              c.get(acc1).get(wv).get(at).mem('v128.load', 16).simd('f32x4.mul', 'f32x4.add').set(acc1);
              c.get(wp).i32(4).op('i32.add').set(wp);
            } else {
              c.get(acc0).get(at).mem('v128.load').simd('f32x4.max').set(acc0);
              c.get(acc1).get(at).mem('v128.load', 16).simd('f32x4.max').set(acc1);
            }
            c.get(tp).i32(4).op('i32.add').tee(tp).get(tapsEnd).op('i32.lt_u').brIf(next);
          });
          c.get(dst).get(acc0).mem('v128.store');
          c.get(dst).get(acc1).mem('v128.store', 16);
          c.get(dst).i32(4 * STEP).op('i32.add').set(dst);
        });
      });
      if (fold === 'madd') c.get(wts!).get(ntaps!).i32(2).op('i32.shl', 'i32.add').set(wts!);
    });
  });
}

function emitCopyRows(m: ModuleBuilder): void {
  // copy_rows(src, planes, rows, width, srcPlane, srcRow, dst, dstPlane, dstRow, srcCol): for each of `planes`
  // planes and `rows` rows, `width` floats from src + p·srcPlane + r·srcRow + j·srcCol to dst + p·dstPlane +
  // r·dstRow + 4j (byte strides): four at a time when the source's are consecutive, then one at a time.
  m.func('copy_rows', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32'], [], (c) => {
    const [src, planes, rows, width, srcPlane, srcRow, dst, dstPlane, dstRow, srcCol] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    const p = c.local('i32'), r = c.local('i32'), j = c.local('i32'), from = c.local('i32'), to = c.local('i32');
    c.forRange(p, () => c.i32(0), () => c.get(planes), 1, () => {
      c.forRange(r, () => c.i32(0), () => c.get(rows), 1, () => {
        c.get(src).get(p).get(srcPlane).op('i32.mul', 'i32.add').get(r).get(srcRow).op('i32.mul', 'i32.add').set(from);
        c.get(dst).get(p).get(dstPlane).op('i32.mul', 'i32.add').get(r).get(dstRow).op('i32.mul', 'i32.add').set(to);
        c.i32(0).set(j);
        c.get(srcCol).i32(4).op('i32.eq').if(() => {
          c.block((done) => c.loop((top) => {
            c.get(j).i32(4).op('i32.add').get(width).op('i32.gt_s').brIf(done);
            c.get(to).get(j).i32(2).op('i32.shl', 'i32.add').get(from).get(j).i32(2).op('i32.shl', 'i32.add').mem('v128.load').mem('v128.store');
            c.get(j).i32(4).op('i32.add').set(j).br(top);
          }));
        });
        c.block((done) => c.loop((top) => {
          c.get(j).get(width).op('i32.ge_s').brIf(done);
          c.get(to).get(j).i32(2).op('i32.shl', 'i32.add').get(from).get(j).get(srcCol).op('i32.mul', 'i32.add').mem('f32.load').mem('f32.store');
          c.get(j).i32(1).op('i32.add').set(j).br(top);
        }));
      });
    });
  });
}

function emitFill(m: ModuleBuilder): void {
  // fill(dst, outer, outerStep, inner, innerStep, len, bits): for o < outer, i < inner, `len` floats from byte address
  // dst + o·outerStep + i·innerStep set to the float32 with these bits, four at a time then one at a time.
  // (TypedArray.prototype.fill on a shared memory, as the heap is with threads, stores element by element: ~6× slower.)
  m.func('fill', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32'], [], (c) => {
    const [dst, outer, outerStep, inner, innerStep, len, bits] = [0, 1, 2, 3, 4, 5, 6];
    const o = c.local('i32'), r = c.local('i32'), i = c.local('i32'), n4 = c.local('i32'), at = c.local('i32'), v = c.local('v128');
    c.get(bits).op('f32.reinterpret_i32').simd('f32x4.splat').set(v);
    c.get(len).i32(-4).op('i32.and').set(n4);
    c.forRange(o, () => c.i32(0), () => c.get(outer), 1, () => {
      c.forRange(r, () => c.i32(0), () => c.get(inner), 1, () => {
        c.get(dst).get(o).get(outerStep).op('i32.mul', 'i32.add').get(r).get(innerStep).op('i32.mul', 'i32.add').set(at);
        c.forRange(i, () => c.i32(0), () => c.get(n4), 4, () => c.get(at).get(i).i32(2).op('i32.shl', 'i32.add').get(v).mem('v128.store'));
        c.forRange(i, () => c.get(n4), () => c.get(len), 1, () => c.get(at).get(i).i32(2).op('i32.shl', 'i32.add').get(bits).op('f32.reinterpret_i32').mem('f32.store'));
      });
    });
  });
}

const fillBits = new Float32Array(1), fillInts = new Int32Array(fillBits.buffer);

/** Sets `count` floats of the heap from byte address `at` to `value` (rounded to float32), in wasm. */
export function fillHeap(at: number, count: number, value: number): void {
  fillGrid(at, 1, 0, 1, 0, count, value);
}

/** Sets `len` floats at each heap byte address at + o·outerStep + i·innerStep (o < outer, i < inner) to `value`, in wasm. */
export function fillGrid(at: number, outer: number, outerStep: number, inner: number, innerStep: number, len: number, value: number): void {
  fillBits[0] = value;
  if (outer > 0 && inner > 0 && len > 0) windowFns().fill(at, outer, outerStep, inner, innerStep, len, fillInts[0]!);
}

/**
 * Sets to `value` the padding of `planes` consecutive planes of Hp × Wp floats at heap address `at` whose rows
 * pt … pt + H − 1 hold H × W values from column pl on (written by a copy after): before the first such row,
 * between rows, between planes and after the last, leaving the rows themselves alone.
 */
export function fillPadding(at: number, planes: number, Hp: number, Wp: number, pt: number, H: number, pl: number, W: number, value: number): void {
  const plane = Hp * Wp, first = pt * Wp + pl, end = (pt + H - 1) * Wp + pl + W;
  if (H === 0) return fillHeap(at, planes * plane, value);
  fillHeap(at, first, value);
  fillGrid(at + (first + W) * 4, planes, plane * 4, H - 1, Wp * 4, Wp - W, value);
  fillGrid(at + end * 4, 1, 0, planes - 1, plane * 4, plane - end + first, value);
  fillHeap(at + ((planes - 1) * plane + end) * 4, plane - end, value);
}

/** copy_rows between two heap addresses (byte strides): `planes` × `rows` rows of `width` consecutive floats. */
export function copyHeapRows(src: number, planes: number, rows: number, width: number, srcPlane: number, srcRow: number, dst: number, dstPlane: number, dstRow: number): void {
  windowFns().copyRows(src, planes, rows, width, srcPlane, srcRow, dst, dstPlane, dstRow, 4);
}

/**
 * Copies `planes` × `rows` rows of `width` values from `src` (element index `from`, element strides
 * `srcPlane`, `srcRow`, `srcCol`) to consecutive floats at heap address `dst` (byte strides): in wasm when
 * `src` lives in the heap, else by hand. The caller has zeroed or filled the destination's padding.
 */
export function copyRows(src: HostArray, from: number, planes: number, rows: number, width: number, srcPlane: number, srcRow: number, dst: number, dstPlane: number, dstRow: number, srcCol = 1): void {
  const at = heap().addressOf(src, from);
  if (at !== undefined) {
    // Planes in shares for the thread pool when there is enough to copy (a conv's padded input is on its critical path).
    const shares = Math.min(planes, Math.floor((planes * rows * width) / MIN_COPY_PER_SHARE) > 1 ? availableThreads() : 1);
    const per = Math.ceil(planes / shares), tasks: number[][] = [];
    for (let p = 0; p < planes; p += per) tasks.push([at + p * srcPlane * 4, Math.min(per, planes - p), rows, width, srcPlane * 4, srcRow * 4, dst + p * dstPlane, dstPlane, dstRow, srcCol * 4]);
    return parallelFor(tasks, windowFns().copyRows);
  }
  const f = heap().f32;
  for (let p = 0; p < planes; p++) for (let r = 0; r < rows; r++) copyRow(src, from + p * srcPlane + r * srcRow, srcCol, f, (dst + p * dstPlane + r * dstRow) >>> 2, width);
}

/** A sliding window over the last two dims: size, stride, dilation, and the padding before (top, left) and after (bottom). */
export interface PlaneWindow {
  readonly kernel: readonly [number, number];
  readonly stride: readonly [number, number];
  readonly dilation: readonly [number, number];
  readonly padTop: number;
  readonly padLeft: number;
  readonly padBottom: number;
}

/**
 * Runs `fold` over the planes of x ([N, C, H, W] or [C, H, W], any strides) into `O` output planes of
 * OH × OW (output channel o reads input channel ⌊o/og⌋), written to `out` ([N, O, OH, OW] contiguous from
 * out.offset) through `store(row values, dst, o, oh)` when given (e.g. a divisor), else copied as they are.
 * `weights(o, t)` and `bias(o)` for 'madd'; the padding holds `fill`.
 */
export function runWindows(
  fold: WindowFold, x: CpuView, O: number, og: number, win: PlaneWindow, out: CpuView, fill: number,
  weights?: (o: number, tap: number) => number, bias?: (o: number) => number,
  store?: (res: Float32Array, from: number, od: HostArray, to: number, oh: number, OW: number) => void,
): void {
  const batched = x.shape.length === 4;
  const [N, C, H, W] = (batched ? x.shape : [1, ...x.shape]) as [number, number, number, number];
  const [sN, sC, sH, sW] = (batched ? x.strides : [0, ...x.strides]) as [number, number, number, number];
  const [OH, OW] = out.shape.slice(-2) as [number, number];
  const [kh, kw] = win.kernel, [sh, sw] = win.stride, [dh, dw] = win.dilation, pt = win.padTop, pl = win.padLeft;
  const ntaps = kh * kw;
  if (N * O * OH * OW === 0) return;
  // Phase rows: Wq floats each, wide enough for the last step's reads past the last tap (padding).
  const OWv = Math.ceil(OW / STEP) * STEP, reach = Math.floor(((kw - 1) * dw) / sw);
  const Wq = Math.max(Math.ceil((W + pl) / sw), OWv + reach);
  const Hp = Math.max(H + pt + win.padBottom, (OH - 1) * sh + (kh - 1) * dh + 1);
  const plane = Hp * sw * Wq;
  const h = heap();
  h.reset();
  const taps = h.alloc(ntaps * 4), wts = h.alloc(Math.max(1, fold === 'madd' ? O * ntaps : 1) * 4), biasAt = h.alloc(O * 4);
  const xAt = h.alloc(C * plane * 4), outAt = h.alloc(O * OH * OWv * 4);
  {
    const i32 = h.i32, f = h.f32;
    for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) i32[(taps >>> 2) + i * kw + j] = ((i * dh * sw + ((j * dw) % sw)) * Wq + Math.floor((j * dw) / sw)) * 4;
    if (weights) for (let o = 0; o < O; o++) for (let t = 0; t < ntaps; t++) f[(wts >>> 2) + o * ntaps + t] = weights(o, t);
    for (let o = 0; o < O; o++) f[(biasAt >>> 2) + o] = bias ? bias(o) : fold === 'max' ? -Infinity : 0;
  }
  const run = windowFns()[fold];
  for (let n = 0; n < N; n++) {
    const xd = x.data;
    // At stride 1 the planes are plain padded rows (one phase): fill only the padding; else all of them.
    if (sw === 1) fillPadding(xAt, C, Hp, Wq, pt, H, pl, W, fill);
    else fillHeap(xAt, C * plane, fill);
    // Phase φ of padded row r + pt holds input columns q ≡ φ − pl (mod sw), from the first such q0, at column (q0 + pl − φ)/sw on.
    for (let phase = 0; phase < sw; phase++) {
      const q0 = (((phase - pl) % sw) + sw) % sw, count = q0 < W ? Math.ceil((W - q0) / sw) : 0;
      if (count > 0) copyRows(xd, x.offset + n * sN + q0 * sW, C, H, count, sC, sH, xAt + ((pt * sw + phase) * Wq + (q0 + pl - phase) / sw) * 4, plane * 4, sw * Wq * 4, sw * sW);
    }
    // Output channels in shares for the thread pool (one share when the work is small).
    const shares = Math.min(O, availableThreads() > 1 ? Math.floor((O * OH * OWv * ntaps) / MIN_TAPS_PER_SHARE) : 1);
    const tasks: number[][] = [];
    for (let k = 0, per = Math.ceil(O / Math.max(1, shares)); k < O; k += per) tasks.push([k, Math.min(O, k + per), og, xAt, plane * 4, taps, ntaps, wts, biasAt, outAt, OH, OWv, sh * sw * Wq * 4]);
    parallelFor(tasks, run);
    const res = h.f32, od = out.data, base = out.offset + n * O * OH * OW, direct = store ? undefined : h.addressOf(od, base);
    // Rows of OWv padded outputs to rows of OW: a wasm copy into an output in the heap, else by hand.
    if (direct !== undefined) copyHeapRows(outAt, O * OH, 1, OW, OWv * 4, 0, direct, OW * 4, 0);
    else {
      for (let r = 0; r < O * OH; r++) {
        if (store) store(res, (outAt >>> 2) + r * OWv, od, base + r * OW, r % OH, OW);
        else copyRow(res, (outAt >>> 2) + r * OWv, 1, od, base + r * OW, OW);
      }
    }
  }
}

/** The float32 operands this kernel takes (float16 tensors too: the backend widens them before the kernel and narrows the result after). */
const f32 = (v: CpuView | undefined): boolean => v === undefined || v.data instanceof Float32Array;

/**
 * conv2d with one input channel per group (x [N, C, H, W] or [C, H, W], w [C·Og, 1, kh, kw]) on the
 * window loop; returns false to leave other operands to the JavaScript kernel.
 */
export function wasmDepthwiseConv2d(x: CpuView, w: CpuView, bias: CpuView | undefined, a: Conv2dAttrs, out: CpuView): boolean {
  if (!(f32(x) && f32(w) && f32(bias) && f32(out))) return false;
  const [O, , kh, kw] = w.shape as [number, number, number, number];
  const [w0, , w2, w3] = w.strides as [number, number, number, number], wd = w.data;
  const win = { kernel: [kh, kw], stride: a.stride, dilation: a.dilation, padTop: a.padding[0], padLeft: a.padding[2], padBottom: a.padding[1] } as const;
  runWindows('madd', x, O, O / a.groups, win, out, 0,
    (o, t) => wd[w.offset + o * w0 + Math.floor(t / kw) * w2 + (t % kw) * w3]!,
    bias ? (o) => bias.data[bias.offset + o * bias.strides[0]!]! : undefined);
  return true;
}

/** Copies `n` values from `src` (stride `stride`) to consecutive `dst` slots: by hand when short (a subarray per call costs more), else one memcpy. */
export function copyRow(src: HostArray, from: number, stride: number, dst: HostArray, to: number, n: number): void {
  if (stride === 1 && n >= 64) dst.set(src.subarray(from, from + n), to);
  else for (let q = 0; q < n; q++) dst[to + q] = src[from + q * stride]!;
}

type Fn = (...args: number[]) => void;
let fns: Record<WindowFold | 'copyRows' | 'fill', Fn> | undefined;

function windowFns(): Record<WindowFold | 'copyRows' | 'fill', Fn> {
  if (!fns) {
    const m = new ModuleBuilder(memoryImport());
    emitWindows(m, 'madd');
    emitWindows(m, 'max');
    emitCopyRows(m);
    emitFill(m);
    const e = instantiate<Record<string, Fn>>(m.build());
    fns = { madd: e.windows_madd!, max: e.windows_max!, copyRows: e.copy_rows!, fill: e.fill! };
  }
  return fns;
}
