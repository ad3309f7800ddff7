import type { Conv2dAttrs, ConvTranspose2dAttrs } from '../../ops/conv.js';
import type { DType } from '../../tensor/dtype.js';
import { collapseDims } from '../cpu/map.js';
import { convert, loadElement } from './dtype.js';
import { KernelParams } from './params.js';
import { type FusedEpilogue, type GemmOperand, type GemmProblem, gemmKernel, stridedOperand, withEpilogue } from './gemm.js';
import type { GpuView, WebGpuCaps, WgslForm } from './kernel.js';

// 2-d convolutions as implicit GEMMs on the shared WebGPU GEMM (./gemm.ts), one product per image
// and group: out[n, g·Og + o, p] = Σ_k W[g·Og + o, k] · X[k, p] over output pixels p = (oh, ow)
// and taps k = (c, i, j). X is never materialised: the GEMM reads it through an operand that maps
// (k, p) to the input pixel under that tap (conv2d's im2col) or the input pixel that lands on p
// through that tap (convTranspose2d's gather), 0 in the padding. Index math is split so that per
// pixel and per tap parts are computed once, leaving an add and a bounds check per value. The checks
// combine with `&`, not `&&`: short-circuiting makes a branch per value, and SwiftShader's shader
// compiler never finished a conv kernel with 64 of them (its pipeline creation hung for minutes).
// Sizes, strides, paddings, dilations and kernel sizes are kernel parameters (see ./params.ts): a
// network's layers of one structure (which sides are padded, the fused epilogue) at different sizes
// share one pipeline, which is most of a model's first-call time on a device whose shader compiler is
// slow. The kernel size is a parameter where the GEMM visits the taps in order (GemmOperand.walk:
// SwiftShader's kernel); where it splits k into taps (the tiled kernel), it divides by the kernel
// size, which then stays in the source. Two common shapes skip the window math: a 1×1 conv without
// padding is a plain matrix product (`pointwise`), and a transposed conv whose stride equals its
// kernel takes one tap per output pixel (`pixelShuffle`); each is a structure of its own, in the
// source, sharing its pipeline across sizes as the others do.

/** An input's [N, C, H, W] shape and strides; an unbatched [C, H, W] input is one image. */
function images(x: GpuView): { shape: number[]; strides: number[] } {
  return x.shape.length === 4 ? { shape: [...x.shape], strides: [...x.strides] } : { shape: [1, ...x.shape], strides: [0, ...x.strides] };
}

/** Taps k = (c, i, j) of a kh×kw kernel split into channel offset `${name}`, row `${name}_i` and column `${name}_j` (u32 names); `sC` a u32 expression. */
function tap(name: string, k: string, kh: number, kw: number, sC: string): string {
  return `let ${name}_c = (${k}) / ${kh * kw}u; let ${name}_i = ((${k}) / ${kw}u) % ${kh}u; let ${name}_j = (${k}) % ${kw}u; let ${name} = i32(${name}_c * ${sC});`;
}

/** A parameter read as i32 (strides and paddings enter signed index math; steps may be negative). */
const i32Of = (params: KernelParams, v: number) => `i32(${params.u32(v)})`;

/**
 * GemmOperand.walk over the taps k = (c, i, j) of a kh×kw kernel with dilations (dh, dw), in order: it
 * keeps the tap's row `_i` and column `_j`, their offsets `_dh` = i·dh and `_dw` = j·dw (i32), and an
 * i32 element offset (named by `offset`) that moves by `steps` = [to the next column, to the next row
 * (from past the row's end), to the next channel (from past the kernel's end)]. Kernel sizes,
 * dilations and steps are parameters, read when the walk is first used: kernels of every size share a pipeline.
 */
function tapWalk(
  params: KernelParams, [kh, kw]: readonly number[], [dh, dw]: readonly number[], offset: (name: string) => string, steps: readonly [number, number, number],
): NonNullable<GemmOperand['walk']> {
  let read: string[] | null = null;
  const values = () => (read ??= [params.u32(kh), params.u32(kw), ...[dh, dw, ...steps].map((v) => i32Of(params, v))]);
  return {
    start(name) {
      values();
      return `var ${name}_i = 0u; var ${name}_j = 0u; var ${name}_dh = 0i; var ${name}_dw = 0i; var ${offset(name)} = 0i;`;
    },
    next(name) {
      const [KH, KW, DH, DW, col, row, chan] = values(), o = offset(name);
      return (
        `${name}_j += 1u; ${name}_dw += ${DW}; ${o} += ${col}; ` +
        `if (${name}_j == ${KW}) { ${name}_j = 0u; ${name}_dw = 0i; ${name}_i += 1u; ${name}_dh += ${DH}; ${o} += ${row}; ` +
        `if (${name}_i == ${KH}) { ${name}_i = 0u; ${name}_dh = 0i; ${o} += ${chan}; } }`
      );
    },
  };
}

/**
 * The im2col operand of conv2d (columns x = output pixels of one image, rows k = taps of one group's
 * channels): the input pixel at (oh·sh − pt + i·dh, ow·sw − pl + j·dw), 0 in the padding. Checks
 * are emitted only for the padded dims. With `zeroPoint` (a WGSL i32 in scope where loads are, for
 * an int8/uint8 input: src/quant/gemm.ts) values are centred on it, and the padding still reads 0.
 */
export function im2col(
  x: GpuView, [, Cg, kh, kw]: readonly number[], OW: number, a: Pick<Conv2dAttrs, 'stride' | 'padding' | 'dilation'>, caps: WebGpuCaps, params: KernelParams, zeroPoint?: string,
): GemmOperand {
  const offset = params.u32(x.offset);
  const { shape: [, , h, w], strides: [stN, stC, stH, stW] } = images(x) as { shape: number[]; strides: [number, number, number, number] };
  const [pt, pb, pl, pr] = a.padding;
  const checkH = pt > 0 || pb > 0, checkW = pl > 0 || pr > 0;
  const u = (v: number) => params.u32(v), i = (v: number) => i32Of(params, v);
  const [sN, sG, sC, sH, sW, H, W, OWu] = [u(stN), u(Cg * stC), u(stC), i(stH), i(stW), u(h), u(w), u(OW)];
  const [sh, sw, dh, dw, top, left] = [u(a.stride[0]), u(a.stride[1]), u(a.dilation[0]), u(a.dilation[1]), i(pt), i(pl)];
  return {
    binding: 0,
    dtype: x.dtype,
    vecK: false,
    vecX: false,
    kFast: false,
    base: (name, [n, g]) => `let ${name} = i32(${offset} + ${n} * ${sN} + ${g} * ${sG});`,
    // Per pixel: the input row and column under its window's first tap, and that pixel's offset (i32: may lie in the padding).
    atX: (name, base, p) =>
      `let ${name}_h = i32((${p}) / ${OWu} * ${sh}) - ${top}; let ${name}_w = i32((${p}) % ${OWu} * ${sw}) - ${left}; ` +
      `let ${name} = ${base} + ${name}_h * ${sH} + ${name}_w * ${sW};`,
    // Per tap: its row and column offsets in the window and its offset from the window's first pixel.
    atK: (name, k) =>
      `${tap(name, k, kh, kw, sC)} let ${name}_dh = i32(${name}_i * ${dh}); let ${name}_dw = i32(${name}_j * ${dw}); ` +
      `let ${name}_o = ${name} + ${name}_dh * ${sH} + ${name}_dw * ${sW};`,
    // The same in order: `_o` moves a dilated column, then a dilated row less the row's columns, then a channel less the kernel's rows.
    walk: tapWalk(params, [kh, kw], a.dilation, (name) => `${name}_o`, [
      a.dilation[1] * stW, a.dilation[0] * stH - kw * a.dilation[1] * stW, stC - kh * a.dilation[0] * stH,
    ]),
    // Float convolutions read f32 values already; integer ones (zeroPoint given) i32.
    load(p, k) {
      const raw = loadElement('in0', x.dtype, `u32(${p} + ${k}_o)`, caps);
      const v = zeroPoint === undefined ? raw : `(${raw} - ${zeroPoint})`;
      const inside = [...(checkH ? [`(u32(${p}_h + ${k}_dh) < ${H})`] : []), ...(checkW ? [`(u32(${p}_w + ${k}_dw) < ${W})`] : [])];
      return inside.length ? `select(${zeroPoint === undefined ? '0.0' : '0i'}, ${v}, ${inside.join(' & ')})` : v;
    },
  };
}

/**
 * convTranspose2d's gather operand (columns x = output pixels, rows k = taps of one group's input
 * channels): the input pixel (ih, iw) with ih·sh − ph + i·dh = oh (likewise for w), 0 where the tap
 * lands between input pixels or outside the input.
 */
function gather(x: GpuView, [, , kh, kw]: readonly number[], Cig: number, OW: number, a: ConvTranspose2dAttrs, caps: WebGpuCaps, params: KernelParams): GemmOperand {
  const offset = params.u32(x.offset);
  const { shape: [, , h, w], strides: [stN, stC, stH, stW] } = images(x) as { shape: number[]; strides: [number, number, number, number] };
  const u = (v: number) => params.u32(v), i = (v: number) => i32Of(params, v);
  const [sN, sG, sC, sH, sW, H, W, OWu] = [u(stN), u(Cig * stC), u(stC), i(stH), i(stW), u(h), u(w), u(OW)];
  const [dh, dw, ph, pw] = [u(a.dilation[0]), u(a.dilation[1]), i(a.padding[0]), i(a.padding[1])];
  // Strides of 1 (no division) and other powers of two stay in the source: every value divides by them, and a
  // division by a parameter is a real divide per value, one by a literal 2 a shift (det's two transposed convs,
  // stride 2, took 611 ms of GPU time per run with literal strides and 1128 ms with parameters). Other strides are parameters.
  const [sh, sw] = a.stride.map((s) => (s === 1 ? null : (s & (s - 1)) === 0 ? `${s}i` : i(s)));
  // The input row (column) a tap reads, and whether it is a whole row inside the input; i32 `/` truncates, so the remainder rules out negatives.
  const axis = (t: string, s: string | null | undefined, size: string) =>
    !s ? { at: t, ok: `(u32(${t}) < ${size})` } : { at: `(${t}) / ${s}`, ok: `((${t}) % ${s} == 0) & (u32((${t}) / ${s}) < ${size})` };
  return {
    binding: 0,
    dtype: x.dtype,
    vecK: false,
    vecX: false,
    kFast: false,
    base: (name, [n, g]) => `let ${name} = i32(${offset} + ${n} * ${sN} + ${g} * ${sG});`,
    atX: (name, base, p) => `let ${name}_h = i32((${p}) / ${OWu}) + ${ph}; let ${name}_w = i32((${p}) % ${OWu}) + ${pw}; let ${name} = ${base};`,
    atK: (name, k) => `${tap(name, k, kh, kw, sC)} let ${name}_dh = i32(${name}_i * ${dh}); let ${name}_dw = i32(${name}_j * ${dw});`,
    // The same in order: the channel offset moves at each channel.
    walk: tapWalk(params, [kh, kw], a.dilation, (name) => name, [0, 0, stC]),
    load(p, k) {
      const h = axis(`${p}_h - ${k}_dh`, sh, H), w = axis(`${p}_w - ${k}_dw`, sw, W);
      const v = loadElement('in0', x.dtype, `u32(${p} + ${k} + (${h.at}) * ${sH} + (${w.at}) * ${sW})`, caps);
      return `select(0.0, ${v}, ${h.ok} & ${w.ok})`;
    },
  };
}

/**
 * The input of a 1×1 convolution without padding whose output pixels lie one stride apart in memory
 * (unit strides over a contiguous image, or a single row or column): a plain strided matrix, rows k =
 * the group's channels and columns x = the pixels, as a matrix product reads it (vec4 loads where
 * aligned, k in steps of 4) instead of through the im2col operand's per-pixel window math. Null for
 * other convolutions.
 */
function pointwise(x: GpuView, [, Cg, kh, kw]: readonly number[], [OH, OW]: readonly number[], a: Pick<Conv2dAttrs, 'stride' | 'padding'>, caps: WebGpuCaps, params: KernelParams): GemmOperand | null {
  if (kh !== 1 || kw !== 1 || a.padding.some((p) => p !== 0)) return null;
  const [stN, stC, stH, stW] = images(x).strides as [number, number, number, number];
  const pixels = collapseDims([OH!, OW!], [[a.stride[0] * stH, a.stride[1] * stW]]);
  if (pixels.shape.length > 1) return null;
  const xStride = pixels.strides[0]![0] ?? 0;
  return stridedOperand({ dtype: x.dtype, offset: x.offset, batch: [stN, Cg! * stC], xStride, kDims: [{ size: Cg!, stride: stC }] }, 0, caps, params);
}

/** The epilogue adding bias[g·perGroup + channel(i)] (batch dims [n, g]; a row is its channel unless `channel` maps it). */
function channelBias(
  bias: GpuView | undefined, dtype: DType, perGroup: number, caps: WebGpuCaps, params: KernelParams, channel = (i: string) => i,
): GemmProblem['epilogue'] {
  if (!bias) return undefined;
  const offset = params.u32(bias.offset), groupSize = params.u32(perGroup), stride = params.u32(bias.strides[0]!);
  const at = (g: string, i: string) => `(${offset} + (${g} * ${groupSize} + ${channel(i)}) * ${stride})`;
  return (acc, [, g], i) => `${acc} + ${convert(bias.dtype, dtype, loadElement('in2', bias.dtype, at(g!, i), caps))}`;
}

/** conv2d as an implicit GEMM per image and group; `fused` (an elementwise epilogue) runs before the store, see withEpilogue. */
export function conv2dKernel(x: GpuView, w: GpuView, bias: GpuView | undefined, a: Conv2dAttrs, out: GpuView, caps: WebGpuCaps, fused?: FusedEpilogue): WgslForm {
  const N = images(x).shape[0]!;
  const [O, Cg, kh, kw] = w.shape as [number, number, number, number];
  const [s0, s1, s2, s3] = w.strides as [number, number, number, number];
  const [OH, OW] = out.shape.slice(-2) as [number, number];
  const G = a.groups, Og = O / G;
  // The operands' offsets (and a fused epilogue's constants) are parameters: see matmulKernel.
  const params = new KernelParams();
  const weight = stridedOperand(
    { dtype: w.dtype, offset: w.offset, batch: [0, Og * s0], xStride: s0, kDims: [{ size: Cg, stride: s1 }, { size: kh, stride: s2 }, { size: kw, stride: s3 }] },
    1,
    caps,
    params,
  );
  const problem: GemmProblem = {
    label: 'conv2d', batch: [N, G], m: Og, n: OH * OW, k: Cg * kh * kw, inputs: [x.dtype, w.dtype, ...(bias ? [bias.dtype] : [])],
    // A depthwise kernel's taps (one channel in, one out per group: a few multiply-adds each) are a loop between
    // literal bounds, its kernel size in the source (see GemmProblem.literalK).
    literalK: Cg === 1 && Og === 1 && G > 1 && kh * kw <= 25,
    a: weight, b: pointwise(x, w.shape, [OH, OW], a, caps, params) ?? im2col(x, w.shape, OW, a, caps, params), epilogue: channelBias(bias, fused?.natural ?? out.dtype, Og, caps, params), out, params,
  };
  return gemmKernel(withEpilogue(problem, fused, caps), caps);
}

/**
 * convTranspose2d whose stride equals its kernel (no padding, dilation or output padding: the usual
 * 2×2, stride 2 upsampling) as one plain product per image and group: each output pixel takes one tap,
 * (ih·kh + ki, iw·kw + kj) = tap (ki, kj) of input pixel (ih, iw), so rows (o, ki, kj) of the weight
 * times columns (ih, iw) of the input are the output, scattered (GemmProblem.scatter) — a quarter of
 * the gather form's multiply-adds for a 2×2 kernel, where three taps in four land between input pixels.
 * The kernel size is in the source (it splits the rows); null where this form does not apply.
 */
function pixelShuffle(x: GpuView, w: GpuView, bias: GpuView | undefined, a: ConvTranspose2dAttrs, out: GpuView, caps: WebGpuCaps): WgslForm | null {
  const [Cin, Cog, kh, kw] = w.shape as [number, number, number, number];
  const { shape: [N, , IH, IW], strides: [stN, stC, stH, stW] } = images(x) as { shape: [number, number, number, number]; strides: [number, number, number, number] };
  const [OH, OW] = out.shape.slice(-2) as [number, number];
  if (a.stride[0] !== kh || a.stride[1] !== kw || OH !== IH * kh || OW !== IW * kw || [...a.padding, ...a.outputPadding].some((p) => p !== 0)) return null;
  const [s0, s1, s2, s3] = w.strides as [number, number, number, number];
  const rows = collapseDims([Cog, kh, kw], [[s1, s2, s3]]), pixels = collapseDims([IH, IW], [[stH, stW]]);
  if (rows.shape.length > 1 || pixels.shape.length > 1) return null;
  const G = a.groups, Cig = Cin / G, taps = kh * kw;
  const params = new KernelParams();
  const weight = stridedOperand({ dtype: w.dtype, offset: w.offset, batch: [0, Cig * s0], xStride: rows.strides[0]![0] ?? 0, kDims: [{ size: Cig, stride: s0 }] }, 1, caps, params);
  const input = stridedOperand({ dtype: x.dtype, offset: x.offset, batch: [stN, Cig * stC], xStride: pixels.strides[0]![0] ?? 0, kDims: [{ size: Cig, stride: stC }] }, 0, caps, params);
  const plane = params.u32(OH * OW), OWu = params.u32(OW), IWu = params.u32(IW), rowStep = params.u32(kh * OW);
  const scatter = {
    row: (i: string) => `(${i}) / ${taps}u * ${plane} + (${i}) / ${kw}u % ${kh}u * ${OWu} + (${i}) % ${kw}u`,
    col: (j: string) => `(${j}) / ${IWu} * ${rowStep} + (${j}) % ${IWu} * ${kw}u`,
  };
  return gemmKernel(
    {
      label: 'convTranspose2d', batch: [N, G], m: Cog * taps, n: IH * IW, k: Cig, inputs: [x.dtype, w.dtype, ...(bias ? [bias.dtype] : [])],
      a: weight, b: input, epilogue: channelBias(bias, out.dtype, Cog, caps, params, (i) => `(${i}) / ${taps}u`), out, params, scatter,
    },
    caps,
  );
}

export function convTranspose2dKernel(x: GpuView, w: GpuView, bias: GpuView | undefined, a: ConvTranspose2dAttrs, out: GpuView, caps: WebGpuCaps): WgslForm {
  const shuffled = pixelShuffle(x, w, bias, a, out, caps);
  if (shuffled) return shuffled;
  const N = images(x).shape[0]!;
  const [Cin, Cog, kh, kw] = w.shape as [number, number, number, number];
  const [s0, s1, s2, s3] = w.strides as [number, number, number, number];
  const [OH, OW] = out.shape.slice(-2) as [number, number];
  const G = a.groups, Cig = Cin / G;
  const params = new KernelParams();
  // Weight group g is [Cig, Cog, kh, kw]; the GEMM's A is its [Cog, (Cig, kh, kw)] view.
  const weight = stridedOperand(
    { dtype: w.dtype, offset: w.offset, batch: [0, Cig * s0], xStride: s1, kDims: [{ size: Cig, stride: s0 }, { size: kh, stride: s2 }, { size: kw, stride: s3 }] },
    1,
    caps,
    params,
  );
  return gemmKernel(
    {
      label: 'convTranspose2d', batch: [N, G], m: Cog, n: OH * OW, k: Cig * kh * kw, inputs: [x.dtype, w.dtype, ...(bias ? [bias.dtype] : [])],
      a: weight, b: gather(x, w.shape, Cig, OW, a, caps, params), epilogue: channelBias(bias, out.dtype, Cog, caps, params), out, params,
    },
    caps,
  );
}
