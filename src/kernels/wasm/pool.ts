import type { CpuView } from '../../ops/op.js';
import type { Window2d } from '../cpu/pool.js';
import { runWindows } from './depthwise.js';
import { wasmReduce } from './reduce.js';

// 2-d pooling on the window loop of src/kernels/wasm/depthwise.ts: max pooling folds f32x4.max over the
// taps of planes padded with −∞ (taps in the padding are skipped, NaN propagates); average pooling sums
// the taps of zero-padded planes in float32 and divides each output by its window's divisor (PyTorch's,
// as the JS kernel computes it); a global average pool (output 1×1) is the mean reduction over H and W.

export type Pool2dKind = 'max' | 'avg' | 'adaptiveAvg';
export type Pool2dWindow = Window2d & { readonly dilation?: readonly [number, number]; readonly countIncludePad?: boolean; readonly divisorOverride?: number | null };

/** Pools x ([N, C, H, W] or [C, H, W], float32) into `out`; returns false to leave other cases to the JavaScript kernel. */
export function wasmPool2d(kind: Pool2dKind, x: CpuView, w: Pool2dWindow | undefined, out: CpuView): boolean {
  const r = x.shape.length;
  if (!(x.data instanceof Float32Array && out.data instanceof Float32Array) || (r !== 3 && r !== 4)) return false;
  if (kind === 'adaptiveAvg') {
    // Only the global pool; other bins overlap unevenly and stay with the JS kernel.
    if (out.shape[r - 2] !== 1 || out.shape[r - 1] !== 1) return false;
    return wasmReduce('mean', [x], undefined, [r - 2, r - 1], 0, out);
  }
  const C = x.shape[r - 3]!, H = x.shape[r - 2]!, W = x.shape[r - 1]!;
  const OH = out.shape[r - 2]!, OW = out.shape[r - 1]!;
  const [kh, kw] = w!.kernelSize, [sh, sw] = w!.stride, [ph, pw] = w!.padding;
  const win = { kernel: [kh, kw], stride: [sh, sw], dilation: w!.dilation ?? [1, 1], padTop: ph, padLeft: pw, padBottom: ph } as const;
  if (kind === 'max') {
    runWindows('max', x, C, 1, win, out, -Infinity);
    return true;
  }
  // Each output's divisor: the window clipped to the padded input (countIncludePad), its in-input part, or the override.
  const div = new Float64Array(OH * OW);
  for (let oh = 0; oh < OH; oh++) {
    for (let ow = 0; ow < OW; ow++) {
      const h0 = oh * sh - ph, w0 = ow * sw - pw, h1 = Math.min(h0 + kh, H + ph), w1 = Math.min(w0 + kw, W + pw);
      const inside = (Math.min(h1, H) - Math.max(h0, 0)) * (Math.min(w1, W) - Math.max(w0, 0));
      div[oh * OW + ow] = w!.divisorOverride ?? (w!.countIncludePad ? (h1 - h0) * (w1 - w0) : inside);
    }
  }
  runWindows('madd', x, C, 1, win, out, 0, () => 1, undefined, (res, from, od, to, oh) => {
    for (let q = 0; q < OW; q++) od[to + q] = res[from + q]! / div[oh * OW + q]!;
  });
  return true;
}
