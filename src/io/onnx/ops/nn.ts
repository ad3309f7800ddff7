import { add, div, eq, maximum, mul, pow, sub } from '../../../ops/binary.js';
import { type Conv2dAttrs, conv2dOp, convTranspose2d } from '../../../ops/conv.js';
import { linear, matmul } from '../../../ops/linalg.js';
import { pad, stack } from '../../../ops/movement.js';
import { batchNorm, groupNorm, instanceNorm, layerNorm } from '../../../ops/norm.js';
import { apply1 } from '../../../ops/op.js';
import { avgPool2d, maxPool2d } from '../../../ops/pool.js';
import { amax, argmax, logSoftmax, mean, softmax, sum, var as variance } from '../../../ops/reduce.js';
import { abs, rsqrt, sqrt } from '../../../ops/unary.js';
import { narrow, reshape, slice, squeeze, t as transpose2d, unsqueeze } from '../../../ops/views.js';
import { arange, full, zerosLike } from '../../../tensor/creation.js';
import { isFloat } from '../../../tensor/dtype.js';
import { numel, sameShape } from '../../../tensor/shape.js';
import type { Tensor } from '../../../tensor/tensor.js';
import { hostOf } from '../host.js';
import type { OnnxNode } from '../node.js';
import { type OpContext, register } from '../registry.js';
import { hostInts, normAxis } from './util.js';
import { scatterElements } from '../../../ops/scatter.js';

// Matrix products, convolutions, pooling, normalisation and softmax.

// ---- MatMul, Gemm --------------------------------------------------------------------------

/** Gemm: alpha·A'·B' + beta·C, A' and B' optionally transposed; a plain x·Wᵀ + b becomes `linear` (foldable with batch norm). */
function gemm(node: OnnxNode, a: Tensor, b: Tensor, c: Tensor | undefined): Tensor {
  const alpha = node.float('alpha', 1), beta = node.float('beta', 1);
  const ta = node.int('transA', 0) === 1, tb = node.int('transB', 0) === 1;
  const a2 = ta ? transpose2d(a) : a;
  if (tb && alpha === 1 && (c === undefined || (beta === 1 && c.ndim === 1 && c.shape[0] === b.shape[0]))) return linear(a2, b, c);
  let y = matmul(a2, tb ? transpose2d(b) : b);
  if (alpha !== 1) y = mul(y, alpha);
  if (c && beta !== 0) y = add(y, beta === 1 ? c : mul(c, beta));
  return y;
}

register({
  MatMul: { run: (_, [a, b], ctx) => [matmul(ctx.dev(a!, 'A'), ctx.dev(b!, 'B'))] },
  Gemm: { run: (node, [a, b, c], ctx) => [gemm(node, ctx.dev(a!, 'A'), ctx.dev(b!, 'B'), c && ctx.dev(c, 'C'))] },
});

// ---- Conv, ConvTranspose ---------------------------------------------------------------------

interface Window {
  kernel: number[];
  strides: number[];
  dilations: number[];
  /** Padding before and after each spatial axis. */
  begin: number[];
  end: number[];
}

/** Kernel, strides, dilations and explicit begin/end padding of a conv or pool, resolving auto_pad (SAME_UPPER/LOWER, VALID). */
function windowOf(node: OnnxNode, spatial: readonly number[], kernel: readonly number[]): Window {
  const k = spatial.length;
  const strides = node.ints('strides') ?? new Array<number>(k).fill(1);
  const dilations = node.ints('dilations') ?? new Array<number>(k).fill(1);
  if (strides.length !== k || dilations.length !== k || kernel.length !== k) node.fail(`strides, dilations and kernel_shape need ${k} entries for a ${k}-D input`);
  const autoPad = node.string('auto_pad', 'NOTSET');
  let begin: number[], end: number[];
  if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
    const total = spatial.map((n, i) => Math.max(0, (Math.ceil(n / strides[i]!) - 1) * strides[i]! + (kernel[i]! - 1) * dilations[i]! + 1 - n));
    const small = total.map((t) => Math.floor(t / 2)), large = total.map((t, i) => t - small[i]!);
    [begin, end] = autoPad === 'SAME_UPPER' ? [small, large] : [large, small];
  } else if (autoPad === 'VALID') {
    begin = new Array<number>(k).fill(0);
    end = new Array<number>(k).fill(0);
  } else if (autoPad === 'NOTSET') {
    const pads = node.ints('pads') ?? new Array<number>(2 * k).fill(0);
    if (pads.length !== 2 * k) node.fail(`pads [${pads.join(', ')}] must have 2 entries per spatial axis (${k})`);
    begin = pads.slice(0, k);
    end = pads.slice(k);
  } else node.fail(`auto_pad '${autoPad}' is not NOTSET, SAME_UPPER, SAME_LOWER or VALID`);
  return { kernel: [...kernel], strides, dilations, begin, end };
}

/** Runs a 2-D op on a 1-D input by giving it a height of 1, and a 2-D one as is. */
function as2d(node: OnnxNode, x: Tensor, fn: (x4: Tensor) => Tensor): Tensor {
  const spatial = x.ndim - 2;
  if (spatial === 2) return fn(x);
  if (spatial !== 1) node.fail(`${spatial}-D inputs are not supported here (1-D and 2-D are)`);
  return squeeze(fn(unsqueeze(x, 2)), 2);
}

/** A 2-D pair from per-axis values; a 1-D op's single value is the width (its height is 1, with `fill`). */
const pair2 = (v: readonly number[], fill: number): [number, number] => (v.length === 1 ? [fill, v[0]!] : [v[0]!, v[1]!]);

function conv(node: OnnxNode, x: Tensor, w: Tensor, bias: Tensor | undefined): Tensor {
  const win = windowOf(node, x.shape.slice(2), node.ints('kernel_shape') ?? w.shape.slice(2));
  const plane = (v: readonly number[]) => v.slice(-2);
  const [bh, bw] = pair2(plane(win.begin), 0), [eh, ew] = pair2(plane(win.end), 0);
  const attrs: Conv2dAttrs = {
    stride: pair2(plane(win.strides), 1), padding: [bh, eh, bw, ew], dilation: pair2(plane(win.dilations), 1), groups: node.int('group', 1),
  };
  const conv2 = (x4: Tensor, w4: Tensor, b?: Tensor) => apply1(conv2dOp, b ? [x4, w4, b] : [x4, w4], attrs);
  if (x.ndim === 5) {
    // 3-D: per output depth, the sum over kernel depths of 2-D convolutions of the (depth-padded) input's slices.
    const [sd, dd, bd, ed, kd] = [win.strides[0]!, win.dilations[0]!, win.begin[0]!, win.end[0]!, win.kernel[0]!];
    const xp = pad(x, [0, 0, 0, 0, bd, ed]);
    const outD = Math.floor((xp.shape[2]! - ((kd - 1) * dd + 1)) / sd) + 1;
    const depth = (t: Tensor, i: number) => squeeze(slice(t, 2, i, i + 1), 2);
    const planes = Array.from({ length: outD }, (_, o) => {
      let acc = conv2(depth(xp, o * sd), depth(w, 0), bias);
      for (let j = 1; j < kd; j++) acc = add(acc, conv2(depth(xp, o * sd + j * dd), depth(w, j)));
      return acc;
    });
    return stack(planes, 2);
  }
  const w4 = w.ndim === 3 ? unsqueeze(w, 2) : w;
  return as2d(node, x, (x4) => conv2(x4, w4, bias));
}

/** ConvTranspose: sinter's convTranspose2d when the padding fits its form, else the full result cropped or zero-extended. */
function convTranspose(node: OnnxNode, x: Tensor, w: Tensor, bias: Tensor | undefined): Tensor {
  const spatial = x.ndim - 2;
  const inSize = x.shape.slice(2);
  const kernel = node.ints('kernel_shape') ?? w.shape.slice(2);
  const strides = node.ints('strides') ?? new Array<number>(spatial).fill(1);
  const dilations = node.ints('dilations') ?? new Array<number>(spatial).fill(1);
  const outPad = node.ints('output_padding') ?? new Array<number>(spatial).fill(0);
  const autoPad = node.string('auto_pad', 'NOTSET');
  // The output of zero padding, before any cropping: (in − 1)·stride + dilation·(k − 1) + 1 per axis.
  const full = inSize.map((n, i) => (n - 1) * strides[i]! + (kernel[i]! - 1) * dilations[i]! + 1);
  const given = node.ints('output_shape'), explicit = node.ints('pads');
  let begin: number[], size: number[];
  if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER' || (given && !explicit)) {
    size = given ?? inSize.map((n, i) => n * strides[i]!);
    const total = size.map((s, i) => full[i]! + outPad[i]! - s);
    begin = total.map((t) => (autoPad === 'SAME_UPPER' ? Math.floor(t / 2) : t - Math.floor(t / 2)));
    if (autoPad === 'NOTSET') begin = begin.map(() => 0);
  } else {
    const pads = explicit ?? new Array<number>(2 * spatial).fill(0);
    begin = pads.slice(0, spatial);
    size = given ?? full.map((f, i) => f + outPad[i]! - pads[i]! - pads[i + spatial]!);
  }
  const plane = (v: readonly number[]) => v.slice(-2);
  const [sh, sw] = pair2(plane(strides), 1), [dh, dw] = pair2(plane(dilations), 1);
  const [bh, bw] = pair2(plane(begin), 0), [oh, ow] = pair2(plane(size), 1), [fh, fw] = pair2(plane(full), 1);
  const opts = { stride: [sh, sw], dilation: [dh, dw], groups: node.int('group', 1) };
  const biasOf = (rank: number) => bias && reshape(bias, [bias.shape[0]!, ...new Array<number>(rank).fill(1)]);
  if (x.ndim === 5) {
    // 3-D: each input depth slice meets each kernel depth slice in a 2-D transposed convolution landing at depth i·stride + j·dilation.
    const [sd, dd, kd, fd] = [strides[0]!, dilations[0]!, kernel[0]!, full[0]!];
    const depth = (t: Tensor, i: number) => squeeze(slice(t, 2, i, i + 1), 2);
    const planes: (Tensor | undefined)[] = new Array(fd).fill(undefined);
    for (let i = 0; i < x.shape[2]!; i++) {
      for (let j = 0; j < kd; j++) {
        const term = convTranspose2d(depth(x, i), depth(w, j), null, opts);
        const at = i * sd + j * dd;
        planes[at] = planes[at] ? add(planes[at], term) : term;
      }
    }
    const some = planes.find((p) => p)!;
    const y = stack(planes.map((p) => p ?? zerosLike(some)), 2);
    const cropped = pad(y, [-bw, ow + bw - fw, -bh, oh + bh - fh, -begin[0]!, size[0]! + begin[0]! - fd]);
    return bias ? add(cropped, biasOf(3)!) : cropped;
  }
  const w4 = w.ndim === 3 ? unsqueeze(w, 2) : w;
  // sinter crops `padding` from both ends and then extends the end by outputPadding (less than stride or dilation).
  const [oph, opw] = [oh - fh + 2 * bh, ow - fw + 2 * bw];
  const native = bh >= 0 && bw >= 0 && oph >= 0 && opw >= 0 && oph < Math.max(sh, dh) && opw < Math.max(sw, dw);
  return as2d(node, x, (x4) => {
    if (native) return convTranspose2d(x4, w4, bias ?? null, { ...opts, padding: [bh, bw], outputPadding: [oph, opw] });
    const cropped = pad(convTranspose2d(x4, w4, null, opts), [-bw, ow + bw - fw, -bh, oh + bh - fh]);
    return bias ? add(cropped, biasOf(2)!) : cropped;
  });
}

const upTo3d = (what: string) => (node: OnnxNode) =>
  ((node.ints('kernel_shape')?.length ?? 0) > 3 ? `${what} of more than 3 spatial dims is not supported` : undefined);

register({
  Conv: {
    run: (node, [x, w, b], ctx) => [conv(node, ctx.dev(x!, 'X'), ctx.dev(w!, 'W'), b && ctx.dev(b, 'B'))],
    check: upTo3d('convolution'),
  },
  ConvTranspose: {
    run: (node, [x, w, b], ctx) => [convTranspose(node, ctx.dev(x!, 'X'), ctx.dev(w!, 'W'), b && ctx.dev(b, 'B'))],
    check: upTo3d('transposed convolution'),
  },
});

// ---- pooling -------------------------------------------------------------------------------

/** Output size per axis with ONNX's (and PyTorch's) rule: in ceil mode a window must start inside the input or the leading padding. */
function pooledSize(n: number, win: Window, i: number, ceil: boolean): number {
  const eff = (win.kernel[i]! - 1) * win.dilations[i]! + 1;
  const span = n + win.begin[i]! + win.end[i]! - eff;
  let out = (ceil ? Math.ceil(span / win.strides[i]!) : Math.floor(span / win.strides[i]!)) + 1;
  if (ceil && (out - 1) * win.strides[i]! >= n + win.begin[i]!) out--;
  return out;
}

/** The view of `y` that tap `tap` along spatial axis `i` reads for every output position. */
function tapView(y: Tensor, win: Window, out: readonly number[], i: number, tap: number): Tensor {
  const start = tap * win.dilations[i]!;
  return slice(y, 2 + i, start, start + (out[i]! - 1) * win.strides[i]! + 1, win.strides[i]!);
}

/** The input padded by the window's padding, plus what ceil mode's last windows reach beyond it. */
function padForWindows(x: Tensor, win: Window, out: readonly number[], value: number): Tensor {
  const k = out.length, widths: number[] = [];
  for (let i = k - 1; i >= 0; i--) {
    const need = (out[i]! - 1) * win.strides[i]! + (win.kernel[i]! - 1) * win.dilations[i]! + 1;
    const extra = Math.max(0, need - (x.shape[2 + i]! + win.begin[i]! + win.end[i]!));
    widths.push(win.begin[i]!, win.end[i]! + extra);
  }
  return widths.every((w) => w === 0) ? x : pad(x, widths, { value });
}

/**
 * Any pool as sums or maxima of strided views of the padded input, one spatial axis at a time (a box max or sum is
 * separable): any rank, dilation, asymmetric padding or ceil mode, in Σk elementwise ops that fuse under the JIT.
 */
function poolByTaps(x: Tensor, win: Window, out: readonly number[], kind: 'max' | 'avg', countIncludePad: boolean, ctx: OpContext): Tensor {
  const k = out.length;
  let y = padForWindows(isFloat(x.dtype) ? x : x.to('float32'), win, out, kind === 'max' ? -Infinity : 0);
  for (let i = 0; i < k; i++) {
    let acc = tapView(y, win, out, i, 0);
    for (let tap = 1; tap < win.kernel[i]!; tap++) acc = kind === 'max' ? maximum(acc, tapView(y, win, out, i, tap)) : add(acc, tapView(y, win, out, i, tap));
    y = acc;
  }
  if (kind === 'avg') {
    // Taps of each output inside the input (or inside input and padding, when padding counts): per axis, multiplied.
    const counts = out.map((o, i) => Array.from({ length: o }, (_, j) => {
      const lo = countIncludePad ? 0 : win.begin[i]!, hi = win.begin[i]! + x.shape[2 + i]! + (countIncludePad ? win.end[i]! : 0);
      let c = 0;
      for (let tap = 0; tap < win.kernel[i]!; tap++) {
        const p = j * win.strides[i]! + tap * win.dilations[i]!;
        if (p >= lo && p < hi) c++;
      }
      return c;
    }));
    const divisor = Array.from({ length: numel(out) }, (_, e) => {
      let rest = e, d = 1;
      for (let i = k - 1; i >= 0; i--) {
        d *= counts[i]![rest % out[i]!]!;
        rest = Math.floor(rest / out[i]!);
      }
      return d;
    });
    y = div(y, ctx.dev(hostOf(y.dtype, out, divisor), 'the pool divisor'));
  } else if (numel(win.kernel) === 1) y = y.clone();
  return y.dtype === x.dtype ? y : y.to(x.dtype);
}

function pool(node: OnnxNode, x: Tensor, kind: 'max' | 'avg', ctx: OpContext): Tensor {
  const spatial = x.shape.slice(2);
  const win = windowOf(node, spatial, node.ints('kernel_shape') ?? node.fail("needs the attribute 'kernel_shape'"));
  const ceil = node.int('ceil_mode', 0) === 1;
  const countIncludePad = node.int('count_include_pad', 0) === 1;
  const out = spatial.map((n, i) => pooledSize(n, win, i, ceil));
  // sinter's 2-D pools cover symmetric padding of at most half the kernel (and averages without dilation).
  const native = spatial.length <= 2 && isFloat(x.dtype) && win.begin.every((b, i) => b === win.end[i] && b <= Math.floor(win.kernel[i]! / 2)) &&
    (kind === 'max' || win.dilations.every((d) => d === 1));
  if (!native) return poolByTaps(x, win, out, kind, countIncludePad, ctx);
  return as2d(node, x, (x4) => {
    const opts = { stride: pair2(win.strides, 1), padding: pair2(win.begin, 0), ceilMode: ceil };
    return kind === 'max'
      ? maxPool2d(x4, pair2(win.kernel, 1), { ...opts, dilation: pair2(win.dilations, 1) })
      : avgPool2d(x4, pair2(win.kernel, 1), { ...opts, countIncludePad });
  });
}

/**
 * MaxPool's Indices output: the row-major flat index (over the whole input) of each window's maximum, the first on
 * ties. Like the pool, one axis at a time, last axis first: a strict comparison then keeps the row-major first.
 */
function maxPoolIndices(node: OnnxNode, x: Tensor, out: readonly number[], ctx: OpContext): Tensor {
  const spatial = x.shape.slice(2), k = spatial.length;
  const win = windowOf(node, spatial, node.ints('kernel_shape')!);
  const strides = spatial.map((_, i) => numel(spatial.slice(i + 1)));
  let best = padForWindows(x.to('float32'), win, out, -Infinity);
  let index: Tensor | null = null;
  for (let i = k - 1; i >= 0; i--) {
    // Where each output's window starts along axis i, as a flat in-plane offset (taps add tap·dilation·stride).
    const starts = Array.from({ length: out[i]! }, (_, o) => (o * win.strides[i]! - win.begin[i]!) * strides[i]!);
    const start = ctx.dev(hostOf('int32', [out[i]!, ...new Array<number>(k - 1 - i).fill(1)], starts), 'pool offsets');
    let b: Tensor | null = null, idx: Tensor | null = null;
    for (let tap = 0; tap < win.kernel[i]!; tap++) {
      const v = tapView(best, win, out, i, tap);
      const offset = tap * win.dilations[i]! * strides[i]!;
      const candidate: Tensor = index ? add(tapView(index, win, out, i, tap), add(start, offset)) : add(start, offset).expand(v.shape);
      if (!b || !idx) [b, idx] = [v, candidate];
      else {
        const better = v.gt(b);
        [b, idx] = [maximum(b, v), candidate.where(better, idx)];
      }
    }
    best = b!;
    index = idx!;
  }
  const planes = arange(x.shape[0]! * x.shape[1]!, { device: ctx.device }).reshape([x.shape[0]!, x.shape[1]!, ...out.map(() => 1)]);
  let inPlane = index!;
  if (node.int('storage_order', 0) === 1) {
    // Column-major: the in-plane coordinates weighted by the sizes of the dims before them instead of after.
    let colMajor: Tensor | null = null;
    let weight = 1;
    spatial.forEach((size, i) => {
      const coord = sub(div(inPlane, strides[i]!, { roundingMode: 'floor' }), mul(div(inPlane, strides[i]! * size, { roundingMode: 'floor' }), size));
      const term = mul(coord, weight);
      colMajor = colMajor ? add(colMajor, term) : term;
      weight *= size;
    });
    inPlane = colMajor!;
  }
  return add(inPlane, mul(planes, numel(spatial)));
}

/** LRN: x / (bias + alpha/size · Σ x² over the `size` channels around each one)^beta. */
function localResponseNorm(node: OnnxNode, x: Tensor): Tensor {
  const size = node.int('size') ?? node.fail("needs the attribute 'size'");
  const alpha = node.float('alpha', 1e-4), beta = node.float('beta', 0.75), bias = node.float('bias', 1);
  const c = x.shape[1]!;
  const before = Math.floor((size - 1) / 2), after = Math.ceil((size - 1) / 2);
  const sq = mul(x, x);
  // Channels padded with zeros on both sides; the window sum is `size` shifted slices.
  const widths = [...new Array<number>(2 * (x.ndim - 2)).fill(0), before, after];
  const padded = pad(sq, widths);
  let acc: Tensor | null = null;
  for (let k = 0; k < size; k++) {
    const part = narrow(padded, 1, k, c);
    acc = acc ? add(acc, part) : part;
  }
  return div(x, pow(add(mul(acc!, alpha / size), bias), beta));
}

register({
  MaxPool: {
    run: (node, [x], ctx) => {
      const t = ctx.dev(x!, 'X');
      const y = pool(node, t, 'max', ctx);
      const wantIndices = node.outputs.length > 1 && node.outputs[1] !== '';
      return [y, wantIndices ? maxPoolIndices(node, t, y.shape.slice(2), ctx) : undefined];
    },
  },
  MaxUnpool: {
    // Zeros of the unpooled shape (output_shape, or the pooling's inverse) with each value put at its flat index.
    run: (node, [x, idx, shapeV], ctx) => {
      const t = ctx.dev(x!, 'X'), i = ctx.dev(idx!, 'I');
      const kernel = node.ints('kernel_shape') ?? node.fail("needs the attribute 'kernel_shape'");
      const strides = node.ints('strides') ?? kernel.map(() => 1), pads = node.ints('pads') ?? kernel.map(() => 0).concat(kernel.map(() => 0));
      const spatial = t.shape.slice(2).map((d, k) => (d - 1) * strides[k]! - pads[k]! - pads[k + kernel.length]! + kernel[k]!);
      // The indices address the inferred shape; a larger output_shape pads it with zeros at the end of each dim.
      const inferred = [t.shape[0]!, t.shape[1]!, ...spatial];
      const zeros = full([numel(inferred)], 0, { dtype: t.dtype, device: ctx.device });
      const y = scatterElements(zeros, reshape(i, [-1]), reshape(t, [-1])).reshape(inferred);
      if (!shapeV) return [y];
      const shape = hostInts(ctx, shapeV, 'output_shape');
      if (shape.length !== inferred.length || shape.some((d, k) => d < inferred[k]! || (k < 2 && d !== inferred[k]))) {
        node.fail(`output_shape [${shape.join(', ')}] must keep N and C and be at least the unpooled shape [${inferred.join(', ')}]`);
      }
      return [pad(y, shape.slice(2).reverse().flatMap((d, k) => [0, d - inferred[inferred.length - 1 - k]!]))];
    },
    hostInputs: [2],
    minOpset: 9,
  },
  LRN: { run: (node, [x], ctx) => [localResponseNorm(node, ctx.dev(x!, 'X'))] },
  MeanVarianceNormalization: {
    // (x − E[x]) / √(E[(x − E[x])²] + 1e-9) over `axes` (default: all but the channels), as ONNX's function body computes.
    run: (node, [x], ctx) => {
      const t = ctx.dev(x!, 'X');
      const axes = (node.ints('axes') ?? [0, 2, 3]).map((a) => normAxis(node, a, t.ndim));
      const centred = sub(t, mean(t, axes, true));
      return [div(centred, sqrt(add(mean(mul(centred, centred), axes, true), 1e-9)))];
    },
    minOpset: 9,
  },
  LpNormalization: {
    run: (node, [x], ctx) => {
      const t = ctx.dev(x!, 'input');
      const axis = normAxis(node, node.int('axis', -1), t.ndim), p = node.int('p', 2);
      if (p !== 1 && p !== 2) node.fail(`p must be 1 or 2, got ${p}`);
      const norm = p === 1 ? sum(abs(t), axis, true) : sqrt(sum(mul(t, t), axis, true));
      return [div(t, norm)];
    },
    minOpset: 1,
  },
  AveragePool: { run: (node, [x], ctx) => [pool(node, ctx.dev(x!, 'X'), 'avg', ctx)] },
  GlobalAveragePool: {
    run: (_, [x], ctx) => {
      const t = ctx.dev(x!, 'X');
      return [mean(t, t.shape.slice(2).map((_d, i) => i + 2), true)];
    },
  },
  GlobalMaxPool: {
    run: (_, [x], ctx) => {
      const t = ctx.dev(x!, 'X');
      return [amax(t, t.shape.slice(2).map((_d, i) => i + 2), true)];
    },
  },
});

// ---- normalisation -----------------------------------------------------------------------------

/** LayerNormalization over the dims from `axis` on; also its optional Mean and InvStdDev outputs. */
function layerNormalization(node: OnnxNode, x: Tensor, scale: Tensor, bias: Tensor | undefined): (Tensor | undefined)[] {
  const axis = normAxis(node, node.int('axis', -1), x.ndim);
  const eps = node.float('epsilon', 1e-5);
  const normalized = x.shape.slice(axis);
  const dims = normalized.map((_, i) => axis + i);
  let y: Tensor;
  if (sameShape(scale.shape, normalized) && (!bias || sameShape(bias.shape, normalized))) y = layerNorm(x, normalized, scale, bias ?? null, eps);
  else {
    // Scale and bias that only broadcast to the normalised shape are applied after normalising.
    y = mul(layerNorm(x, normalized, null, null, eps), scale);
    if (bias) y = add(y, bias);
  }
  const wants = (i: number) => node.outputs.length > i && node.outputs[i] !== '';
  const m = wants(1) ? mean(x, dims, true) : undefined;
  const inv = wants(2) ? rsqrt(add(variance(x, { dim: dims, correction: 0, keepdim: true }), eps)) : undefined;
  return [y, m, inv];
}

register({
  BatchNormalization: {
    run: (node, [x, scale, b, m, v], ctx) => {
      const eps = node.float('epsilon', 1e-5);
      const t = ctx.dev(x!, 'X'), mean0 = ctx.dev(m!, 'input_mean'), var0 = ctx.dev(v!, 'input_var'), w = ctx.dev(scale!, 'scale'), bias = ctx.dev(b!, 'B');
      if (node.int('training_mode', 0) !== 1) return [batchNorm(t, mean0, var0, w, bias, { eps })];
      // Training mode (opset 14+): normalise with the batch's statistics (biased variance) and return the updated
      // running statistics, input·momentum + batch·(1 − momentum), as ONNX's reference does.
      const dims = [0, ...t.shape.slice(2).map((_, i) => i + 2)];
      const batchMean = mean(t, dims), batchVar = variance(t, { dim: dims, correction: 0 });
      const momentum = node.float('momentum', 0.9);
      const running = (r: Tensor, cur: Tensor) => add(mul(r, momentum), mul(cur, 1 - momentum));
      return [batchNorm(t, batchMean, batchVar, w, bias, { eps }), running(mean0, batchMean), running(var0, batchVar)];
    },
    check: (node) => (node.int('spatial', 1) === 0 ? 'spatial=0 is not supported' : undefined),
  },
  InstanceNormalization: {
    run: (node, [x, scale, b], ctx) => {
      const eps = node.float('epsilon', 1e-5);
      return [instanceNorm(ctx.dev(x!, 'input'), { weight: ctx.dev(scale!, 'scale'), bias: ctx.dev(b!, 'B'), eps })];
    },
  },
  LayerNormalization: {
    run: (node, [x, scale, b], ctx) => layerNormalization(node, ctx.dev(x!, 'X'), ctx.dev(scale!, 'Scale'), b && ctx.dev(b, 'B')),
  },
  GroupNormalization: {
    run: (node, [x, scale, b], ctx) => {
      const t = ctx.dev(x!, 'X');
      const groups = node.int('num_groups') ?? node.fail("needs the attribute 'num_groups'");
      let w = ctx.dev(scale!, 'scale'), bias = ctx.dev(b!, 'bias');
      if (node.opset < 21) {
        // Opset 18 has one scale and bias per group: each repeats over its group's channels.
        const per = t.shape[1]! / groups;
        w = reshape(w.reshape([groups, 1]).expand([groups, per]), [groups * per]);
        bias = reshape(bias.reshape([groups, 1]).expand([groups, per]), [groups * per]);
      }
      return [groupNorm(t, groups, w, bias, node.float('epsilon', 1e-5))];
    },
  },
});

// ---- softmax family ----------------------------------------------------------------------------

/**
 * Softmax-like ops: from opset 13 along `axis` (default -1); before, over the input coerced to 2-D at `axis`
 * (default 1), i.e. jointly over every dim from `axis` on.
 */
function softmaxLike(node: OnnxNode, x: Tensor, fn: (x: Tensor, dim: number) => Tensor): Tensor {
  if (node.opset >= 13) return fn(x, normAxis(node, node.int('axis', -1), x.ndim));
  const axis = normAxis(node, node.int('axis', 1), x.ndim);
  const flat = reshape(x, [numel(x.shape.slice(0, axis)), numel(x.shape.slice(axis))]);
  return reshape(fn(flat, 1), x.shape);
}

/** 1 at the first maximum along `dim`, 0 elsewhere. */
function hardmax(x: Tensor, dim: number): Tensor {
  const positions = arange(x.shape[dim]!, { device: x.device }).reshape(x.shape.map((n, i) => (i === dim ? n : 1)));
  return eq(positions, argmax(x, dim, true)).to(x.dtype);
}

register({
  Softmax: { run: (node, [x], ctx) => [softmaxLike(node, ctx.dev(x!, 'input'), softmax)] },
  LogSoftmax: { run: (node, [x], ctx) => [softmaxLike(node, ctx.dev(x!, 'input'), logSoftmax)] },
  Hardmax: { run: (node, [x], ctx) => [softmaxLike(node, ctx.dev(x!, 'input'), hardmax)] },
});
