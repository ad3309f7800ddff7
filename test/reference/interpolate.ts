// Float64 reference for F.interpolate, independent of src/. The source coordinates follow PyTorch's
// CPU kernels, which compute them in float32 (hence Math.fround): that decides which pixel 'nearest'
// picks when dst·scale lands near an integer, so an exact-arithmetic reference would disagree with PyTorch.
import type { DType } from '../../src/index.js';
import { type Ref, castRef, get, size, unravel } from './core.js';

export type Mode = 'nearest' | 'linear' | 'bilinear';

/** compute_scales_value<float>: 1/scaleFactor when one was given, else in/out. */
function scaleOf(inSize: number, outSize: number, scale: number | null): number {
  return scale !== null ? Math.fround(1 / scale) : Math.fround(inSize / outSize);
}

/** nearest_idx (legacy 'nearest'). */
export function nearestSource(j: number, inSize: number, outSize: number, scale: number | null): number {
  if (outSize === inSize) return j;
  if (outSize === 2 * inSize) return Math.floor(j / 2);
  return Math.min(Math.floor(Math.fround(j * scaleOf(inSize, outSize, scale))), inSize - 1);
}

/** The two neighbours and weights of output position j (compute_source_index_and_lambda); weights are stored in `dtype`. */
export function linearSource(
  j: number, inSize: number, outSize: number, scale: number | null, alignCorners: boolean, dtype: DType,
): [number, number, number, number] {
  if (outSize === inSize) return [j, j, 1, 0];
  const f = Math.fround;
  let src: number;
  if (alignCorners) {
    src = outSize > 1 ? f(f((inSize - 1) / (outSize - 1)) * j) : 0;
  } else {
    src = f(f(scaleOf(inSize, outSize, scale) * (j + 0.5)) - 0.5);
    if (src < 0) src = 0;
  }
  const i0 = Math.min(Math.floor(src), inSize - 1);
  const i1 = i0 < inSize - 1 ? i0 + 1 : i0;
  const w1 = castRef(dtype, Math.min(Math.max(f(src - i0), 0), 1));
  return [i0, i1, castRef(dtype, 1 - w1), w1];
}

/** Output [N, C, ...outSize] of `mode` applied to r [N, C, ...spatial], rounded to `dtype`. */
export function interpolateRef(r: Ref, outSize: number[], scales: (number | null)[], mode: Mode, alignCorners: boolean, dtype: DType): Ref {
  const shape = [...r.shape.slice(0, 2), ...outSize];
  const data = new Float64Array(size(shape));
  for (let i = 0; i < data.length; i++) {
    const idx = unravel(i, shape);
    const spatial = idx.slice(2);
    if (mode === 'nearest') {
      data[i] = get(r, [...idx.slice(0, 2), ...spatial.map((j, d) => nearestSource(j, r.shape[d + 2]!, outSize[d]!, scales[d]!))]);
      continue;
    }
    // Sum over the 2^k corners of the cell holding the source point, each weighted by the product of its per-dim weights.
    const per = spatial.map((j, d) => linearSource(j, r.shape[d + 2]!, outSize[d]!, scales[d]!, alignCorners, dtype));
    let v = 0;
    for (let corner = 0; corner < 1 << per.length; corner++) {
      let w = 1;
      const at = per.map(([i0, i1, w0, w1], d) => {
        const upper = (corner >> d) & 1;
        w *= upper ? w1 : w0;
        return upper ? i1 : i0;
      });
      if (w !== 0) v += w * get(r, [...idx.slice(0, 2), ...at]);
    }
    data[i] = castRef(dtype, v);
  }
  return { shape, data };
}
