import { add, div, eq, mul, sub, where } from '../../../ops/binary.js';
import { interpolate } from '../../../ops/interpolate.js';
import { matmul } from '../../../ops/linalg.js';
import { embedding, gather } from '../../../ops/movement.js';
import { amax, sum } from '../../../ops/reduce.js';
import { abs, clamp, floor, round } from '../../../ops/unary.js';
import { narrow, permute, reshape, unsqueeze } from '../../../ops/views.js';
import { isFloat } from '../../../tensor/dtype.js';
import type { Tensor } from '../../../tensor/tensor.js';
import { checkHostShape, hostOf } from '../host.js';
import type { OnnxNode } from '../node.js';
import { type OpContext, type Val, register } from '../registry.js';
import { normAxes } from './util.js';

// Resize (and the older Upsample). Every mode is separable, so each resized axis is a matrix product with a weight
// matrix computed on the host from the ONNX reference's formulas (nearest with its rounding modes, linear, cubic,
// antialiasing, exclude_outside, tf_crop_and_resize with its extrapolation value). Integer nearest upsampling, the
// common case in detection networks, uses sinter's interpolate directly.

interface ResizeAttrs {
  mode: 'nearest' | 'linear' | 'cubic';
  coordinate: string;
  nearest: string;
  cubicA: number;
  excludeOutside: boolean;
  extrapolation: number;
  antialias: boolean;
}

type Coeffs = (ratio: number, scale: number) => number[];

function coeffsOf(node: OnnxNode, a: ResizeAttrs): Coeffs {
  switch (a.mode) {
    case 'nearest':
      return (ratio) => {
        if (Number.isInteger(ratio)) return [0, 1];
        switch (a.nearest) {
          case 'round_prefer_floor': return [Number(ratio <= 0.5), Number(ratio > 0.5)];
          case 'round_prefer_ceil': return [Number(ratio < 0.5), Number(ratio >= 0.5)];
          case 'floor': return [1, 0];
          case 'ceil': return [0, 1];
          default: return node.fail(`nearest_mode '${a.nearest}' is not round_prefer_floor, round_prefer_ceil, floor or ceil`);
        }
      };
    case 'linear':
      if (!a.antialias) return (ratio) => [1 - ratio, ratio];
      return (ratio, s) => {
        const scale = Math.min(s, 1), start = Math.floor(-1 / scale) + 1, footprint = 2 - 2 * start;
        const c = Array.from({ length: footprint }, (_, i) => Math.min(Math.max(1 - Math.abs((start + i - ratio) * scale), 0), 1));
        const total = c.reduce((x, y) => x + y, 0);
        return c.map((v) => v / total);
      };
    case 'cubic': {
      const A = a.cubicA;
      const kernel = (x: number): number => {
        x = Math.abs(x);
        if (x <= 1) return (A + 2) * x ** 3 - (A + 3) * x ** 2 + 1;
        if (x < 2) return A * x ** 3 - 5 * A * x ** 2 + 8 * A * x - 4 * A;
        return 0;
      };
      if (!a.antialias) return (r) => [kernel(r + 1), kernel(r), kernel(1 - r), kernel(2 - r)];
      return (ratio, s) => {
        const scale = Math.min(s, 1), start = Math.floor(-2 / scale) + 1, end = 2 - start;
        const c = Array.from({ length: end - start }, (_, i) => kernel(scale * (start + i - ratio)));
        const total = c.reduce((x, y) => x + y, 0);
        return c.map((v) => v / total);
      };
    }
  }
}

/** Source coordinate of output index y along an axis, per coordinate_transformation_mode; null where tf_crop_and_resize extrapolates. */
function sourceCoordinate(node: OnnxNode, mode: string, y: number, scale: number, inSize: number, outSize: number, roi: [number, number]): number | null {
  const outLength = scale * inSize;
  switch (mode) {
    case 'align_corners': return outLength === 1 ? 0 : (y * (inSize - 1)) / (outLength - 1);
    case 'asymmetric': return y / scale;
    case 'pytorch_half_pixel': return outLength === 1 ? -0.5 : (y + 0.5) / scale - 0.5;
    case 'half_pixel': return (y + 0.5) / scale - 0.5;
    case 'half_pixel_symmetric': {
      const offset = (inSize / 2) * (1 - outSize / outLength);
      return offset + (y + 0.5) / scale - 0.5;
    }
    case 'tf_crop_and_resize': {
      const x = (outLength === 1 ? ((roi[1] - roi[0]) * (inSize - 1)) / 2 : (y * (roi[1] - roi[0]) * (inSize - 1)) / (outLength - 1)) + roi[0] * (inSize - 1);
      return x < 0 || x > inSize - 1 ? null : x;
    }
    default: return node.fail(`coordinate_transformation_mode '${mode}' is not supported`);
  }
}

/** The [out, in] weights of one axis and, for extrapolated outputs (tf_crop_and_resize), the constant they take instead. */
function axisWeights(
  node: OnnxNode, a: ResizeAttrs, coeffs: Coeffs, inSize: number, outSize: number, scale: number, roi: [number, number],
): { w: number[]; fill: number[] | null } {
  const w = new Array<number>(outSize * inSize).fill(0);
  let fill: number[] | null = null;
  for (let y = 0; y < outSize; y++) {
    const x = sourceCoordinate(node, a.coordinate, y, scale, inSize, outSize, roi);
    if (x === null) {
      fill ??= new Array<number>(outSize).fill(0);
      fill[y] = a.extrapolation;
      continue;
    }
    const xi = Math.floor(x);
    let c = coeffs(x === xi ? 1 : x - xi, scale);
    const n = c.length, padWidth = Math.ceil(n / 2);
    // The reference's neighbour choice: the n indices nearest x, preferring lower ones (edge-padded by ceil(n/2)).
    const xp = x + padWidth, p = Math.floor(xp), frac = xp - p;
    const offset = n % 2 === 0 ? (frac === 0 ? -(n / 2) : -(n / 2) + 1) : frac <= 0.5 ? -((n - 1) / 2) : -((n - 1) / 2) + 1;
    const first = p + offset - padWidth;
    if (a.excludeOutside) {
      c = c.map((v, j) => (first + j < 0 || first + j >= inSize ? 0 : v));
      const total = c.reduce((s, v) => s + v, 0) || 1;
      c = c.map((v) => v / total);
    }
    c.forEach((v, j) => (w[y * inSize + Math.min(Math.max(first + j, 0), inSize - 1)]! += v));
  }
  return { w, fill };
}

function attrsOf(node: OnnxNode): ResizeAttrs {
  // Before opset 11 (and in Upsample) coordinates are asymmetric and nearest rounds down.
  const legacy = node.opType === 'Upsample' || node.opset < 11;
  const mode = node.string('mode', 'nearest');
  if (mode !== 'nearest' && mode !== 'linear' && mode !== 'cubic') node.fail(`mode '${mode}' is not nearest, linear or cubic`);
  return {
    mode,
    coordinate: legacy ? 'asymmetric' : node.string('coordinate_transformation_mode', 'half_pixel'),
    nearest: legacy ? 'floor' : node.string('nearest_mode', 'round_prefer_floor'),
    cubicA: node.float('cubic_coeff_a', -0.75),
    excludeOutside: node.int('exclude_outside', 0) === 1,
    extrapolation: node.float('extrapolation_value', 0),
    antialias: node.int('antialias', 0) === 1,
  };
}

/** Per-axis scales and output sizes (full rank) from the scales or sizes input, the axes attribute and keep_aspect_ratio_policy. */
function plan(
  node: OnnxNode, shape: readonly number[], scalesIn: number[] | undefined, sizesIn: number[] | undefined,
): { scales: number[]; sizes: number[]; axes: number[] } {
  const r = shape.length;
  const axes = node.has('axes') ? normAxes(node, node.ints('axes')!, r) : shape.map((_, i) => i);
  if (sizesIn && sizesIn.length > 0) {
    if (sizesIn.length !== axes.length) node.fail(`sizes has ${sizesIn.length} entries for ${axes.length} axes`);
    const sizes = [...shape], scales = shape.map(() => 1);
    axes.forEach((d, i) => {
      sizes[d] = sizesIn[i]!;
      scales[d] = sizesIn[i]! / shape[d]!;
    });
    const policy = node.string('keep_aspect_ratio_policy', 'stretch');
    if (policy !== 'stretch') {
      const picked = axes.map((d) => scales[d]!);
      if (policy !== 'not_larger' && policy !== 'not_smaller') node.fail(`keep_aspect_ratio_policy '${policy}' is not stretch, not_larger or not_smaller`);
      const s = policy === 'not_larger' ? Math.min(...picked) : Math.max(...picked);
      for (const d of axes) {
        scales[d] = s;
        sizes[d] = Math.floor(s * shape[d]! + 0.5);
      }
    }
    return { scales, sizes, axes };
  }
  if (!scalesIn || scalesIn.length !== axes.length) node.fail(`needs scales or sizes for its ${axes.length} axes`);
  const scales = shape.map(() => 1);
  axes.forEach((d, i) => (scales[d] = scalesIn[i]!));
  return { scales, sizes: shape.map((n, i) => Math.trunc(n * scales[i]!)), axes };
}

function resize(node: OnnxNode, ctx: OpContext, x: Tensor, roiV: Val | undefined, scalesV: Val | undefined, sizesV: Val | undefined): Tensor {
  const a = attrsOf(node);
  const r = x.ndim;
  const hostFloats = (v: Val | undefined, what: string) => (v === undefined ? undefined : Array.from(ctx.host(v, what).data));
  const { scales, sizes, axes } = plan(node, x.shape, hostFloats(scalesV, 'scales'), hostFloats(sizesV, 'sizes')?.map(Math.trunc));
  const roiList = hostFloats(roiV, 'roi');
  const roi = (d: number): [number, number] => {
    const at = roiList?.length === 2 * r ? d : axes.indexOf(d);
    if (!roiList || roiList.length === 0 || at < 0) return [0, 1];
    const k = roiList.length / 2;
    return [roiList[at]!, roiList[at + k]!];
  };
  // Axes left as they are (scale 1, same size, whole roi) are skipped, as the reference does.
  const untouched = (d: number) => Math.abs(scales[d]! - 1) < 1e-9 && sizes[d] === x.shape[d] && (a.coordinate !== 'tf_crop_and_resize' || (roi(d)[0] === 0 && roi(d)[1] === 1));
  const resized = x.shape.map((_, d) => d).filter((d) => !untouched(d));
  // Whole-number nearest upsampling of H and W (floor rounding): sinter's interpolate gives the same picks.
  const floors = a.nearest === 'floor' || (a.nearest === 'round_prefer_floor' && resized.every((d) => scales[d] === 2));
  if (a.mode === 'nearest' && a.coordinate === 'asymmetric' && floors && r === 4 && resized.every((d) => d >= 2 && Number.isInteger(scales[d]) && sizes[d] === x.shape[d]! * scales[d]!)) {
    return interpolate(x, { size: [sizes[2]!, sizes[3]!], mode: 'nearest' });
  }
  let y = isFloat(x.dtype) ? x : x.to('float32');
  const coeffs = coeffsOf(node, a);
  for (const d of resized) {
    const { w, fill } = axisWeights(node, a, coeffs, x.shape[d]!, sizes[d]!, scales[d]!, roi(d));
    // Move axis d last, multiply by the weights' transpose [in, out], and move it back.
    const perm = [...Array.from({ length: r }, (_, i) => i).filter((i) => i !== d), d];
    const back = perm.map((_, i) => perm.indexOf(i));
    const wt = ctx.dev(hostOf('float32', [x.shape[d]!, sizes[d]!], transposed(w, sizes[d]!, x.shape[d]!)), 'resize weights');
    let moved = matmul(permute(y, perm), y.dtype === 'float16' ? wt.to('float16') : wt);
    if (fill) moved = add(moved, ctx.dev(hostOf(y.dtype === 'float16' ? 'float16' : 'float32', [sizes[d]!], fill), 'extrapolation values'));
    y = permute(moved, back);
  }
  return y.dtype === x.dtype ? y : y.to(x.dtype);
}

/** Row-major [rows, cols] values as [cols, rows]. */
function transposed(w: readonly number[], rows: number, cols: number): number[] {
  return Array.from({ length: rows * cols }, (_, e) => w[(e % rows) * cols + Math.floor(e / rows)]!);
}

register({
  Resize: {
    run: (node, [x, roi, scales, sizes], ctx) => {
      // Opset 10 has (X, scales); from 11, (X, roi, scales, sizes).
      if (node.opset < 11) return [resize(node, ctx, ctx.dev(x!, 'X'), undefined, roi, undefined)];
      return [resize(node, ctx, ctx.dev(x!, 'X'), roi, scales, sizes)];
    },
    hostInputs: [1, 2, 3],
    minOpset: 10,
  },
  Upsample: {
    run: (node, [x, scales], ctx) => {
      const s = node.opset < 9 ? hostOf('float32', [node.floats('scales')?.length ?? 0], node.floats('scales') ?? []) : scales;
      return [resize(node, ctx, ctx.dev(x!, 'X'), undefined, s, undefined)];
    },
    hostInputs: [1],
  },
});

// ---- GridSample -----------------------------------------------------------------------------------

/**
 * PyTorch's reflect_coordinates: x reflected into [low/2, high/2] (twice the bounds are given, so that the
 * half-pixel bounds of align_corners=0 stay integers), then clipped to [0, size − 1].
 */
function reflect(x: Tensor, twiceLow: number, twiceHigh: number, size: number): Tensor {
  if (twiceLow === twiceHigh) return mul(x, 0);
  const min = twiceLow / 2, span = (twiceHigh - twiceLow) / 2;
  const d = abs(sub(x, min));
  const flips = floor(div(d, span)), extra = sub(d, mul(flips, span));
  const even = eq(sub(flips, mul(floor(div(flips, 2)), 2)), 0);
  return clamp(where(even, add(extra, min), add(sub(span, extra), min)), 0, size - 1);
}

/**
 * GridSample (2-D) as PyTorch's grid_sample: X [N, C, H, W] sampled at grid [N, Ho, Wo, 2] (x, y in [−1, 1]) with
 * bilinear, nearest (half to even) or bicubic (A = −0.75) interpolation and zeros, border or reflection padding.
 * Each tap is a gather from X flattened per channel.
 */
function gridSample(node: OnnxNode, x: Tensor, grid: Tensor): Tensor {
  const legacy: Record<string, string> = { bilinear: 'linear', bicubic: 'cubic' };
  const rawMode = node.string('mode', node.opset >= 20 ? 'linear' : 'bilinear');
  const mode = legacy[rawMode] ?? rawMode;
  const padding = node.string('padding_mode', 'zeros'), align = node.int('align_corners', 0) === 1;
  if (x.ndim !== 4 || grid.ndim !== 4 || grid.shape[3] !== 2 || grid.shape[0] !== x.shape[0]) {
    node.fail(`X ${x.describe()} must be [N, C, H, W] and grid ${grid.describe()} [N, Ho, Wo, 2] (only 2-D sampling is supported)`);
  }
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const [, ho, wo] = grid.shape as [number, number, number];
  const flat = reshape(x, [n, c, h * w]);
  const unnormalize = (g: Tensor, size: number) => (align ? mul(add(g, 1), (size - 1) / 2) : div(sub(mul(add(g, 1), size), 1), 2));
  const pad = (v: Tensor, size: number) => {
    if (padding === 'border') return clamp(v, 0, size - 1);
    if (padding === 'reflection') return align ? reflect(v, 0, 2 * (size - 1), size) : reflect(v, -1, 2 * size - 1, size);
    return v;
  };
  const gx = unnormalize(narrow(grid, 3, 0, 1).squeeze(3), w), gy = unnormalize(narrow(grid, 3, 1, 1).squeeze(3), h);
  /** X at integer coordinates (float tensors [N, Ho, Wo]), zero outside the image: [N, C, Ho, Wo]. */
  const tap = (xi: Tensor, yi: Tensor): Tensor => {
    const inside = xi.ge(0).logicalAnd(xi.le(w - 1)).logicalAnd(yi.ge(0)).logicalAnd(yi.le(h - 1));
    const index = add(mul(clamp(yi, 0, h - 1), w), clamp(xi, 0, w - 1)).to('int32');
    const picked = reshape(gather(flat, 2, reshape(index, [n, 1, ho * wo]).expand([n, c, ho * wo])), [n, c, ho, wo]);
    return where(unsqueeze(inside, 1), picked, 0);
  };
  if (mode === 'nearest') return tap(round(pad(gx, w)), round(pad(gy, h)));
  if (mode === 'linear') {
    const px = pad(gx, w), py = pad(gy, h);
    const x0 = floor(px), y0 = floor(py), tx = unsqueeze(sub(px, x0), 1), ty = unsqueeze(sub(py, y0), 1);
    const x1 = add(x0, 1), y1 = add(y0, 1);
    const top = add(mul(tap(x0, y0), sub(1, tx)), mul(tap(x1, y0), tx));
    const bottom = add(mul(tap(x0, y1), sub(1, tx)), mul(tap(x1, y1), tx));
    return add(mul(top, sub(1, ty)), mul(bottom, ty));
  }
  if (mode !== 'cubic') node.fail(`mode '${rawMode}' is not linear, nearest or cubic`);
  // Bicubic pads each of the 16 taps' coordinates, as PyTorch does.
  const A = -0.75;
  const weights = (t: Tensor) => {
    const near = (d: Tensor) => add(mul(mul(sub(mul(d, A + 2), A + 3), d), d), 1);
    const far = (d: Tensor) => sub(mul(sub(mul(sub(mul(d, A), 5 * A), d), -8 * A), d), 4 * A);
    return [far(add(t, 1)), near(t), near(sub(1, t)), far(sub(2, t))];
  };
  const x0 = floor(gx), y0 = floor(gy);
  const wx = weights(unsqueeze(sub(gx, x0), 1)), wy = weights(unsqueeze(sub(gy, y0), 1));
  let out: Tensor | null = null;
  for (let j = 0; j < 4; j++) {
    let row: Tensor | null = null;
    for (let i = 0; i < 4; i++) {
      const v = mul(tap(pad(add(x0, i - 1), w), pad(add(y0, j - 1), h)), wx[i]!);
      row = row ? add(row, v) : v;
    }
    const v = mul(row!, wy[j]!);
    out = out ? add(out, v) : v;
  }
  return out!;
}

register({
  GridSample: {
    run: (node, [x, grid], ctx) => [gridSample(node, ctx.dev(x!, 'X'), ctx.dev(grid!, 'grid'))],
    check: (node) => {
      const p = node.string('padding_mode', 'zeros');
      return ['zeros', 'border', 'reflection'].includes(p) ? undefined : `padding_mode '${p}' is not zeros, border or reflection`;
    },
    minOpset: 16,
  },
});

// ---- RoiAlign -------------------------------------------------------------------------------------

/**
 * RoiAlign as onnxruntime computes it: per region and output bin, a grid of sample points (sampling_ratio, or
 * adaptive), each bilinearly interpolated (points beyond one pixel outside the image count 0), then averaged or
 * maxed. The sample positions and weights depend on the regions' values, which are read on the host; the values
 * are gathered from X on the device.
 */
function roiAlign(node: OnnxNode, ctx: OpContext, x: Tensor, rois: readonly number[], batchIdx: readonly number[]): Tensor {
  const [n, c, h, w] = x.shape as [number, number, number, number];
  if (x.ndim !== 4) node.fail(`X ${x.describe()} must be [N, C, H, W]`);
  const count = batchIdx.length;
  if (rois.length !== count * 4) node.fail(`rois must be [${count}, 4] for ${count} batch indices`);
  const oh = node.int('output_height', 1), ow = node.int('output_width', 1), ratio = node.int('sampling_ratio', 0);
  const scale = node.float('spatial_scale', 1), isMax = node.string('mode', 'avg') === 'max';
  const halfPixel = node.string('coordinate_transformation_mode', node.opset >= 16 ? 'half_pixel' : 'output_half_pixel') === 'half_pixel';
  const offset = halfPixel ? 0.5 : 0;
  const taps: { pos: number[]; weight: number[] }[] = [];
  let most = 1;
  for (let r = 0; r < count; r++) {
    const b = batchIdx[r]!;
    if (!Number.isInteger(b) || b < 0 || b >= n) node.fail(`batch index ${b} of region ${r} is out of range for ${n} images`);
    const [x1, y1, x2, y2] = rois.slice(r * 4, r * 4 + 4).map((v) => v * scale - offset) as [number, number, number, number];
    const rw = halfPixel ? x2 - x1 : Math.max(x2 - x1, 1), rh = halfPixel ? y2 - y1 : Math.max(y2 - y1, 1);
    const bh = rh / oh, bw = rw / ow;
    const gh = ratio > 0 ? ratio : Math.ceil(rh / oh), gw = ratio > 0 ? ratio : Math.ceil(rw / ow);
    const samples = Math.max(gh * gw, 1);
    for (let ph = 0; ph < oh; ph++) {
      for (let pw = 0; pw < ow; pw++) {
        const pos: number[] = [], weight: number[] = [];
        for (let iy = 0; iy < gh; iy++) {
          for (let ix = 0; ix < gw; ix++) {
            let y = y1 + ph * bh + ((iy + 0.5) * bh) / gh, xx = x1 + pw * bw + ((ix + 0.5) * bw) / gw;
            if (y < -1 || y > h || xx < -1 || xx > w) {
              pos.push(0, 0, 0, 0);
              weight.push(0, 0, 0, 0);
              continue;
            }
            y = Math.max(y, 0);
            xx = Math.max(xx, 0);
            let yl = Math.floor(y), xl = Math.floor(xx), yh: number, xh: number;
            if (yl >= h - 1) [yl, yh, y] = [h - 1, h - 1, h - 1];
            else yh = yl + 1;
            if (xl >= w - 1) [xl, xh, xx] = [w - 1, w - 1, w - 1];
            else xh = xl + 1;
            const ly = y - yl, lx = xx - xl, hy = 1 - ly, hx = 1 - lx;
            const base = b * h * w, k = isMax ? 1 : 1 / samples;
            pos.push(base + yl * w + xl, base + yl * w + xh, base + yh * w + xl, base + yh * w + xh);
            weight.push(hy * hx * k, hy * lx * k, ly * hx * k, ly * lx * k);
          }
        }
        taps.push({ pos, weight });
        most = Math.max(most, pos.length);
      }
    }
  }
  // Every bin padded to the most taps: weight 0 for a sum, excluded (−∞) for a max.
  checkHostShape(node.opType, [taps.length, most]);
  const pos = taps.flatMap((t) => [...t.pos, ...new Array<number>(most - t.pos.length).fill(0)]);
  const weight = taps.flatMap((t) => [...t.weight, ...new Array<number>(most - t.weight.length).fill(isMax ? NaN : 0)]);
  const rows = reshape(permute(x, [0, 2, 3, 1]), [n * h * w, c]);
  const picked = embedding(ctx.dev(hostOf('int32', [count, oh, ow, most], pos), 'RoiAlign positions'), rows);
  const wt = reshape(ctx.dev(hostOf('float32', [count, oh, ow, most], weight), 'RoiAlign weights'), [count, oh, ow, most, 1]);
  const weighted = mul(picked, wt);
  const pooled = isMax ? amax(where(wt.isnan(), -Infinity, weighted), 3) : sum(weighted, 3);
  return permute(pooled, [0, 3, 1, 2]);
}

register({
  RoiAlign: {
    run: (node, [x, rois, batch], ctx) => [roiAlign(node, ctx, ctx.dev(x!, 'X'), Array.from(ctx.host(rois!, 'rois').data), Array.from(ctx.host(batch!, 'batch_indices').data))],
    hostInputs: [1, 2],
    minOpset: 10,
  },
});
