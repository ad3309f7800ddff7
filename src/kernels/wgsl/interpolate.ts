import { literal, roundTo } from './dtype.js';
import type { GpuView, WebGpuCaps, WgslKernel } from './kernel.js';
import { type DimSource, identitySource, separableGatherKernel, wordKernel } from './movement.js';
import { KernelParams } from './params.js';
import { offsetOf, unravel } from './strided.js';

// Interpolation on WebGPU, with the source coordinates computed in f32 exactly as the CPU kernel
// computes them with Math.fround (WGSL's f32 +, −, × and floor are correctly rounded), so both pick
// the same neighbours and weights. Scales are computed on the host (as on the CPU); they and the
// input's offset are kernel parameters, so every scale factor and view shares one pipeline per shape.
// GPU compilers may contract a product and the addition after it into one fma, which rounds once
// instead of twice. So a coordinate product s·j is formed as (s·2j)·0.5: the rounded product feeds
// only the halving, and the halving is exact, so fusing it with the next subtraction changes nothing.

/** An f32 WGSL expression reading the float32 value `v` from `params`. */
function f32(v: number, params: KernelParams): string {
  return params.scalar(v, 'f32', literal);
}

/**
 * PyTorch's legacy 'nearest' source along one dim: min(floor(j · scale), in − 1) in f32, with the
 * CPU's exact shortcuts for ×1 and ×2; `scale` is the float32 source scale.
 */
export function nearestSource(inSize: number, outSize: number, scale: number): DimSource {
  if (outSize === inSize) return identitySource;
  if (outSize === 2 * inSize) return (j) => `i32(${j} >> 1u)`;
  return (j, params) => `min(i32(floor(f32(${j}) * ${f32(scale, params)})), ${inSize - 1})`;
}

/** Nearest-neighbour resizing of [N, C, ...spatial] to out, given each spatial dim's source scale. */
export function nearestKernel(x: GpuView, out: GpuView, scales: readonly number[], caps: WebGpuCaps): WgslKernel {
  const sources = x.shape.map((s, d) => (d < 2 ? identitySource : nearestSource(s, out.shape[d]!, scales[d - 2]!)));
  return separableGatherKernel('interpolate', [x], out, sources, caps);
}

/** How one spatial dim is sampled linearly: sizes and the float32 scale (for alignCorners, (in − 1)/(out − 1) or 0). */
export interface LinearDim {
  inSize: number;
  outSize: number;
  scale: number;
}

/**
 * WGSL statements giving neighbours `${n}i0`, `${n}i1` (u32) and weights `${n}w0`, `${n}w1` (f32,
 * rounded by `round` to the dtype's precision) for output position `j`, as the CPU's linearWeights;
 * the scale is read from `params`.
 */
function linearAxis(n: string, j: string, { inSize, outSize, scale }: LinearDim, alignCorners: boolean, round: (e: string) => string, params: KernelParams): string[] {
  const lines: string[] = [];
  if (inSize === outSize) {
    lines.push(`let ${n}i0 = ${j};`, `let ${n}w1 = 0.0;`);
  } else {
    const s = f32(scale, params);
    const real = alignCorners ? `(${s} * f32(2u * ${j})) * 0.5` : `max((${s} * f32(2u * ${j} + 1u)) * 0.5 - 0.5, 0.0)`;
    lines.push(`let ${n}r = ${real};`, `let ${n}i0 = min(u32(floor(${n}r)), ${inSize - 1}u);`, `let ${n}w1 = ${round(`clamp(${n}r - f32(${n}i0), 0.0, 1.0)`)};`);
  }
  lines.push(`let ${n}i1 = select(${n}i0, ${n}i0 + 1u, ${n}i0 < ${inSize - 1}u);`, `let ${n}w0 = ${round(`1.0 - ${n}w1`)};`);
  return lines;
}

/**
 * 'linear' ([N, C, W]) and 'bilinear' ([N, C, H, W]): each output element blends its 2 or 4
 * neighbours in f32 in the CPU's order (along W within each row, then the two rows), then rounds
 * to the dtype.
 */
export function linearKernel(x: GpuView, out: GpuView, dims: readonly LinearDim[], alignCorners: boolean, caps: WebGpuCaps): WgslKernel {
  const round = (e: string) => roundTo(x.dtype, e);
  const { lines, idx } = unravel('e', out.shape);
  const k = dims.length;
  const params = new KernelParams();
  const offset = params.u32(x.offset);
  const blend = (h: string | null) => {
    const at = (w: string) => `load0(${offsetOf(0, x.strides, [idx[0]!, idx[1]!, ...(h ? [h] : []), w])} + ${offset})`;
    return `${at('xi0')} * xw0 + ${at('xi1')} * xw1`;
  };
  lines.push(...linearAxis('x', idx[k + 1]!, dims[k - 1]!, alignCorners, round, params));
  if (k === 1) {
    lines.push(`return ${round(blend(null))};`);
  } else {
    lines.push(...linearAxis('y', idx[2]!, dims[0]!, alignCorners, round, params));
    lines.push(`let top = ${blend('yi0')};`, `let bottom = ${blend('yi1')};`, `return ${round('top * yw0 + bottom * yw1')};`);
  }
  return wordKernel('interpolate', [x.dtype], out, lines, caps, undefined, params);
}
