import { SinterError, check } from '../errors.js';
import { castValue, isFloat } from '../tensor/dtype.js';
import { normDim } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { arange, full, rand, zeros } from '../tensor/creation.js';
import type { Generator } from '../tensor/random.js';
import { tidy } from '../tensor/scope.js';
import { erf } from '../kernels/cpu/math.js';
import { readContiguous } from '../kernels/cpu/util.js';
import { wordKernel } from '../kernels/wgsl/movement.js';
import { KernelParams } from '../kernels/wgsl/params.js';
import { offsetOf, unravel } from '../kernels/wgsl/strided.js';
import { convert } from '../kernels/wgsl/dtype.js';
import { broadcastShapes } from '../tensor/shape.js';
import { add, div, eq, ge, logicalAnd, lt, maximum, mul, ne, pow, where } from './binary.js';
import { cat, embedding, stack } from './movement.js';
import { select } from './rearrange.js';
import { type Conv2dOptions, conv2d } from './conv.js';
import { apply1, checkInputs, defineOp, describeMeta } from './op.js';
import { type AvgPool2dOptions, type MaxPool2dOptions, avgPool2d, maxPool2d } from './pool.js';
import { amax, mean, sum } from './reduce.js';
import { matmul } from './linalg.js';
import { any } from './reductions.js';
import { abs, rsqrt, sqrt } from './unary.js';
import { expand, narrow, reshape, squeeze, to, unsqueeze } from './views.js';

// torch.nn.functional's 1-D layers (as the 2-D kernels over a height of 1), normalisation by norms
// (normalize, cosineSimilarity, rmsNorm), functional dropout and erfinv.

// ---- erfinv --------------------------------------------------------------------------------

/** Giles' single-precision erfinv ("Approximating the erfinv function", 2010), the start of the Newton steps. */
function gilesErfinv(x: number): number {
  let w = -Math.log((1 - x) * (1 + x)), p: number;
  if (w < 5) {
    w -= 2.5;
    p = 2.81022636e-8;
    for (const c of [3.43273939e-7, -3.5233877e-6, -4.39150654e-6, 0.00021858087, -0.00125372503, -0.00417768164, 0.246640727, 1.50140941]) p = c + p * w;
  } else {
    w = Math.sqrt(w) - 3;
    p = -0.000200214257;
    for (const c of [0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613, 0.00943887047, 1.00167406, 2.83297682]) p = c + p * w;
  }
  return p * x;
}

/** erfinv in double: Giles' estimate refined by Newton steps on erf (±1 give ±∞; |x| > 1 and NaN give NaN). */
function erfinvOf(x: number): number {
  if (Number.isNaN(x) || Math.abs(x) > 1) return NaN;
  if (Math.abs(x) === 1) return x * Infinity;
  let y = gilesErfinv(x);
  for (let k = 0; k < 2; k++) y -= (erf(y) - x) / (1.1283791670955126 * Math.exp(-y * y));
  return y;
}

export const erfinvOp = defineOp<Record<string, never>>({
  name: 'erfinv',
  infer([x]) {
    return [{ shape: [...x!.shape], dtype: isFloat(x!.dtype) ? x!.dtype : 'float32' }];
  },
  cpu([x], _, [out]) {
    const v = readContiguous(x!), o = out!.data;
    for (let i = 0; i < o.length; i++) o[i] = castValue(out!.dtype, erfinvOf(v[i]!));
  },
  webgpu([x], _, [out], caps) {
    const { lines, idx } = unravel('e', out!.shape);
    const coeffs = (cs: number[]) => cs.map((c) => `p = ${c.toExponential()} + p * w;`).join(' ');
    // x's offset is a kernel parameter: views anywhere in a buffer share the pipeline.
    const params = new KernelParams();
    const body = [
      ...lines,
      `let x = ${convert(x!.dtype, 'float32', `load0(${offsetOf(0, x!.strides, idx)} + ${params.u32(x!.offset)})`)};`,
      'if (sn_isnan(x) || abs(x) > 1.0) { return sn_nan(); }',
      'if (abs(x) == 1.0) { return x * sn_inf(); }',
      'var w = -log((1.0 - x) * (1.0 + x));',
      'var p: f32;',
      `if (w < 5.0) { w = w - 2.5; p = 2.81022636e-8; ${coeffs([3.43273939e-7, -3.5233877e-6, -4.39150654e-6, 0.00021858087, -0.00125372503, -0.00417768164, 0.246640727, 1.50140941])} }`,
      `else { w = sqrt(w) - 3.0; p = -0.000200214257; ${coeffs([0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613, 0.00943887047, 1.00167406, 2.83297682])} }`,
      'var y = p * x;',
      // One Newton step on erf recovers the digits log((1 − x)(1 + x)) loses near ±1.
      'y = y - (sn_erf(y) - x) / (1.1283791670955126 * exp(-y * y));',
      `return ${out!.dtype === 'float16' ? 'sn_f16(y)' : 'y'};`,
    ];
    return wordKernel('erfinv', [x!.dtype], out!, body, caps, undefined, params);
  },
});

/** The inverse of erf on (−1, 1); ±1 give ±∞, anything else NaN. Ints compute in float32. */
export function erfinv(x: Tensor): Tensor {
  checkInputs('erfinv', [x]);
  return apply1(erfinvOp, [x], {});
}

// ---- 1-D convolution and pooling -------------------------------------------------------------

type Size1 = number | readonly [number];
const one = (op: string, name: string, v: unknown): number => {
  const n = Array.isArray(v) && v.length === 1 ? v[0] : v;
  if (typeof n !== 'number') throw new SinterError(op, `${name} must be a number (or [n]), got ${JSON.stringify(v)}`);
  return n;
};

/** [N, C, L] (or unbatched [C, L]) as [N, C, 1, L] for the 2-D kernels; `finish` undoes it. */
/** The 2-d form of a 1-d op's input ([N, C, 1, L]) and the way back; call `x4` inside the op's `tidy`, so its views are freed. */
function as2d(op: string, x: Tensor): { x4: () => Tensor; finish: (y: Tensor) => Tensor } {
  checkInputs(op, [x]);
  check(x.ndim === 2 || x.ndim === 3, op, () => `expects [N, C, L] or [C, L], got ${x.describe()}`);
  return {
    x4: () => unsqueeze(x.ndim === 3 ? x : unsqueeze(x, 0), 2),
    finish: (y) => (x.ndim === 3 ? squeeze(y, 2) : squeeze(squeeze(y, 2), 0)),
  };
}

export interface Conv1dOptions {
  stride?: Size1;
  padding?: Size1 | 'valid' | 'same';
  dilation?: Size1;
  groups?: number;
}

/** 1-D convolution: input [N, C, L] (or [C, L]), weight [O, C/groups, K], as torch.nn.functional.conv1d. */
export function conv1d(input: Tensor, weight: Tensor, bias?: Tensor | null, opts: Conv1dOptions = {}): Tensor {
  const op = 'conv1d';
  checkInputs(op, bias ? [input, weight, bias] : [input, weight]);
  check(weight.ndim === 3, op, () => `weight must be [outChannels, inChannels/groups, kernelSize], got ${weight.describe()}`);
  const { x4, finish } = as2d(op, input);
  const padding = opts.padding ?? 0;
  const o: Conv2dOptions = {
    stride: [1, one(op, 'stride', opts.stride ?? 1)],
    padding: typeof padding === 'string' ? padding : [0, one(op, 'padding', padding)],
    dilation: [1, one(op, 'dilation', opts.dilation ?? 1)],
    groups: opts.groups ?? 1,
  };
  return tidy(() => finish(conv2d(x4(), unsqueeze(weight, 2), bias ?? null, o)));
}

export interface MaxPool1dOptions {
  stride?: Size1 | null;
  padding?: Size1;
  dilation?: Size1;
  ceilMode?: boolean;
}

/** 1-D max pooling over [N, C, L] (or [C, L]); NaN propagates as in the 2-D kernel. */
export function maxPool1d(input: Tensor, kernelSize: Size1, opts: MaxPool1dOptions = {}): Tensor {
  const op = 'maxPool1d';
  const { x4, finish } = as2d(op, input);
  const k = one(op, 'kernelSize', kernelSize);
  const o: MaxPool2dOptions = {
    stride: [1, opts.stride === undefined || opts.stride === null ? k : one(op, 'stride', opts.stride)],
    padding: [0, one(op, 'padding', opts.padding ?? 0)],
    dilation: [1, one(op, 'dilation', opts.dilation ?? 1)],
    ceilMode: opts.ceilMode ?? false,
  };
  return tidy(() => finish(maxPool2d(x4(), [1, k], o)));
}

export interface AvgPool1dOptions {
  stride?: Size1 | null;
  padding?: Size1;
  ceilMode?: boolean;
  countIncludePad?: boolean;
}

/** 1-D average pooling over [N, C, L] (or [C, L]). */
export function avgPool1d(input: Tensor, kernelSize: Size1, opts: AvgPool1dOptions = {}): Tensor {
  const op = 'avgPool1d';
  const { x4, finish } = as2d(op, input);
  const k = one(op, 'kernelSize', kernelSize);
  const o: AvgPool2dOptions = {
    stride: [1, opts.stride === undefined || opts.stride === null ? k : one(op, 'stride', opts.stride)],
    padding: [0, one(op, 'padding', opts.padding ?? 0)],
    ceilMode: opts.ceilMode ?? false,
    countIncludePad: opts.countIncludePad ?? true,
  };
  return tidy(() => finish(avgPool2d(x4(), [1, k], o)));
}

export interface Conv3dOptions {
  stride?: number | readonly [number, number, number];
  padding?: number | readonly [number, number, number];
  dilation?: number | readonly [number, number, number];
  groups?: number;
}

/**
 * 3-D convolution: input [N, C, D, H, W] (or [C, D, H, W]), weight [O, C/groups, kD, kH, kW], as
 * torch.nn.functional.conv3d, computed as a sum over depth taps of 2-D convolutions (zero padding).
 */
export function conv3d(input: Tensor, weight: Tensor, bias?: Tensor | null, opts: Conv3dOptions = {}): Tensor {
  const op = 'conv3d';
  checkInputs(op, bias ? [input, weight, bias] : [input, weight]);
  check(input.ndim === 4 || input.ndim === 5, op, () => `expects [N, C, D, H, W] or [C, D, H, W], got ${input.describe()}`);
  check(weight.ndim === 5, op, () => `weight must be [outChannels, inChannels/groups, kD, kH, kW], got ${weight.describe()}`);
  const triple = (name: string, v: number | readonly number[] | undefined, fallback: number): [number, number, number] => {
    const t = v === undefined ? [fallback, fallback, fallback] : typeof v === 'number' ? [v, v, v] : [...v];
    if (t.length !== 3 || t.some((n) => !Number.isInteger(n) || n < 0)) throw new SinterError(op, `${name} must be a non-negative integer or three of them, got ${JSON.stringify(v)}`);
    return t as [number, number, number];
  };
  const [sd, sh, sw] = triple('stride', opts.stride, 1), [pd, ph, pw] = triple('padding', opts.padding, 0), [dd, dh, dw] = triple('dilation', opts.dilation, 1);
  check(sd > 0 && sh > 0 && sw > 0 && dd > 0 && dh > 0 && dw > 0, op, 'stride and dilation must be positive');
  const groups = opts.groups ?? 1;
  return tidy(() => {
    const x = input.ndim === 5 ? input : unsqueeze(input, 0);
    const D = x.shape[2]!, kD = weight.shape[2]!;
    const Do = Math.floor((D + 2 * pd - dd * (kD - 1) - 1) / sd) + 1;
    check(Do > 0, op, () => `the input depth ${D} (padded by ${pd}) is smaller than the kernel's reach ${dd * (kD - 1) + 1}`);
    const slices: Tensor[] = [];
    for (let o = 0; o < Do; o++) {
      let acc: Tensor | null = null;
      for (let k = 0; k < kD; k++) {
        const z = o * sd - pd + k * dd;
        if (z < 0 || z >= D) continue; // a zero-padded plane adds nothing
        const y = conv2d(select(x, 2, z), select(weight, 2, k), null, { stride: [sh, sw], padding: [ph, pw], dilation: [dh, dw], groups });
        acc = acc ? add(acc, y) : y;
      }
      if (acc === null) {
        // Every tap of this output plane fell in the padding: the plane is the bias alone.
        const shape = conv2d(select(x, 2, 0), select(weight, 2, 0), null, { stride: [sh, sw], padding: [ph, pw], dilation: [dh, dw], groups }).shape;
        acc = zeros(shape, { dtype: x.dtype, device: x.device });
      }
      slices.push(bias ? add(acc, reshape(bias, [1, bias.numel(), 1, 1])) : acc);
    }
    const out = stack(slices, 2);
    return input.ndim === 5 ? out : squeeze(out, 0);
  });
}

export interface EmbeddingBagOptions {
  /** With a 1-D input: where each bag starts (ints, ascending, the first 0); with a 2-D input, omitted (each row is a bag). */
  offsets?: Tensor | null;
  /** How a bag's rows combine (default 'mean'). */
  mode?: 'sum' | 'mean' | 'max';
  /** Weights of each index (input's shape), 'sum' mode only. */
  perSampleWeights?: Tensor | null;
  /** The last offset ends the input instead of starting a bag (default false). */
  includeLastOffset?: boolean;
  /** Rows of this index are left out of their bag. */
  paddingIdx?: number | null;
}

/**
 * torch.nn.functional.embedding_bag: sums, means or maxima of bags of `weight` rows. Bags are the
 * rows of a 2-D input, or runs of a 1-D input starting at `offsets`. Computed on the device (bag
 * membership as a mask, no readback), so it also traces under jit; an empty bag gives zeros.
 */
export function embeddingBag(input: Tensor, weight: Tensor, opts: EmbeddingBagOptions = {}): Tensor {
  const op = 'embeddingBag';
  const mode = opts.mode ?? 'mean';
  check(mode === 'sum' || mode === 'mean' || mode === 'max', op, () => `mode must be 'sum', 'mean' or 'max', got ${JSON.stringify(mode)}`);
  const extra = [opts.offsets, opts.perSampleWeights].filter((t): t is Tensor => !!t);
  checkInputs(op, [input, weight, ...extra]);
  check(weight.ndim === 2, op, () => `weight must be [numEmbeddings, dim], got ${weight.describe()}`);
  check(!opts.perSampleWeights || mode === 'sum', op, "perSampleWeights need mode 'sum' (as in PyTorch)");
  return tidy(() => {
    let member: Tensor; // [bags, n] bool: which input positions belong to which bag
    let flat: Tensor;
    if (input.ndim === 2) {
      check(!opts.offsets, op, 'offsets are only for a 1-D input (a 2-D input is one bag per row)');
      const [b, k] = input.shape as [number, number];
      flat = reshape(input, [b * k]);
      const bagOf = div(arange(b * k, { device: input.device, dtype: 'int32' }), k, { roundingMode: 'floor' });
      member = eq(unsqueeze(bagOf, 0), unsqueeze(arange(b, { device: input.device, dtype: 'int32' }), 1));
    } else {
      check(input.ndim === 1 && !!opts.offsets && opts.offsets.ndim === 1, op, () => `expects a 2-D input, or a 1-D input with 1-D offsets; got ${input.describe()}${opts.offsets ? ` and offsets ${opts.offsets.describe()}` : ' without offsets'}`);
      flat = input;
      const offsets = opts.offsets!, n = input.shape[0]!;
      const starts = opts.includeLastOffset ? narrow(offsets, 0, 0, Math.max(offsets.shape[0]! - 1, 0)) : offsets;
      const bags = starts.shape[0]!;
      if (bags === 0) return zeros([0, weight.shape[1]!], { dtype: weight.dtype, device: weight.device });
      // Position i is in bag j when starts[j] ≤ i < starts[j + 1] (the last bag runs to the end).
      const pos = unsqueeze(arange(n, { device: input.device, dtype: 'int32' }), 0);
      const lo = unsqueeze(starts, 1);
      const hi = unsqueeze(cat([narrow(starts, 0, 1, bags - 1), full([1], n, { device: input.device, dtype: 'int32' })], 0), 1);
      member = logicalAnd(ge(pos, lo), lt(pos, hi));
    }
    if (opts.paddingIdx !== undefined && opts.paddingIdx !== null) member = logicalAnd(member, unsqueeze(ne(flat, opts.paddingIdx), 0));
    const rows = embedding(flat, weight); // [n, dim]
    if (mode === 'max') {
      const picked = where(unsqueeze(member, 2), unsqueeze(rows, 0), -Infinity); // [bags, n, dim]
      // An empty bag gives zeros, as in PyTorch.
      return where(unsqueeze(any(member, 1), 1), amax(picked, 1), 0);
    }
    let m = to(member, weight.dtype);
    if (opts.perSampleWeights) m = mul(m, unsqueeze(reshape(opts.perSampleWeights, [flat.shape[0]!]), 0));
    const summed = matmul(m, rows);
    return mode === 'sum' ? summed : div(summed, maximum(sum(m, 1, true), 1));
  });
}

// ---- norms -----------------------------------------------------------------------------------

/** The p-norm over `dim`, kept as size 1. */
function pNorm(x: Tensor, p: number, dim: number): Tensor {
  if (p === Infinity) return amax(abs(x), dim, true);
  if (p === 1) return sum(abs(x), dim, true);
  if (p === 2) return sqrt(sum(mul(x, x), dim, true));
  return pow(sum(pow(abs(x), p), dim, true), 1 / p);
}

export interface NormalizeOptions {
  /** The norm's exponent (default 2; Infinity for the max norm). */
  p?: number;
  /** Default 1. */
  dim?: number;
  /** Smallest divisor (default 1e-12). */
  eps?: number;
}

/** x / max(‖x‖ₚ, eps) along `dim`, as torch.nn.functional.normalize. */
export function normalize(x: Tensor, opts: NormalizeOptions = {}): Tensor {
  checkInputs('normalize', [x]);
  check(isFloat(x.dtype), 'normalize', () => `expects a float tensor, got ${x.describe()}`);
  const p = opts.p ?? 2, eps = opts.eps ?? 1e-12;
  check(typeof p === 'number' && p > 0, 'normalize', () => `p must be a positive number, got ${JSON.stringify(p)}`);
  const dim = normDim('normalize', opts.dim ?? 1, x.ndim);
  return tidy(() => div(x, maximum(pNorm(x, p, dim), eps)));
}

export interface CosineSimilarityOptions {
  /** Default 1. */
  dim?: number;
  /** Smallest norm each input is divided by (default 1e-8). */
  eps?: number;
}

/** Σ (a/max(‖a‖, eps))·(b/max(‖b‖, eps)) along `dim` of a and b broadcast together, as torch.nn.functional.cosine_similarity. */
export function cosineSimilarity(a: Tensor, b: Tensor, opts: CosineSimilarityOptions = {}): Tensor {
  checkInputs('cosineSimilarity', [a, b]);
  check(isFloat(a.dtype) && isFloat(b.dtype), 'cosineSimilarity', () => `expects float tensors, got ${a.describe()} and ${b.describe()}`);
  const shape = broadcastShapes('cosineSimilarity', a.shape, b.shape);
  const dim = normDim('cosineSimilarity', opts.dim ?? 1, shape.length), eps = opts.eps ?? 1e-8;
  return tidy(() => {
    const [x, y] = [expand(a, shape), expand(b, shape)];
    const unit = (t: Tensor) => div(t, maximum(pNorm(t, 2, dim), eps));
    return sum(mul(unit(x), unit(y)), dim);
  });
}

const MACHINE_EPS: Record<string, number> = { float32: 1.1920928955078125e-7, float16: 0.0009765625 };

/**
 * x / √(mean(x²) + eps) over the last dims given by `normalizedShape`, times `weight` when given,
 * as torch.nn.functional.rms_norm; eps defaults to the dtype's machine epsilon, as there.
 */
export function rmsNorm(x: Tensor, normalizedShape: number | readonly number[], weight?: Tensor | null, eps?: number | { eps?: number | null } | null): Tensor {
  const op = 'rmsNorm';
  checkInputs(op, weight ? [x, weight] : [x]);
  check(isFloat(x.dtype), op, () => `expects a float tensor, got ${x.describe()}`);
  const ns = typeof normalizedShape === 'number' ? [normalizedShape] : [...normalizedShape];
  const tail = x.shape.slice(x.ndim - ns.length);
  if (ns.length > x.ndim || ns.some((n, i) => n !== tail[i])) throw new SinterError(op, `normalizedShape [${ns.join(', ')}] must match the last dims of ${x.describe()}`);
  if (weight) check(weight.ndim === ns.length && weight.shape.every((n, i) => n === ns[i]), op, () => `weight must have shape [${ns.join(', ')}], got ${describeMeta(weight)}`);
  const e = (typeof eps === 'object' && eps !== null ? eps.eps : eps) ?? MACHINE_EPS[x.dtype]!;
  const dims = ns.map((_, i) => x.ndim - ns.length + i);
  return tidy(() => {
    const scaled = mul(x, rsqrt(mean(mul(x, x), dims, true).add(e)));
    return weight ? mul(scaled, weight) : scaled;
  });
}

// ---- dropout -------------------------------------------------------------------------------

export interface DropoutOptions {
  /** Probability of zeroing an element (default 0.5). */
  p?: number;
  /** Default true, as torch.nn.functional.dropout; false returns the input. */
  training?: boolean;
  generator?: Generator;
}

/** Zeroes each element with probability p and scales the rest by 1/(1−p) when training; the input itself otherwise. */
export function dropout(x: Tensor, opts: DropoutOptions = {}): Tensor {
  checkInputs('dropout', [x]);
  const p = opts.p ?? 0.5;
  if (!(typeof p === 'number' && p >= 0 && p <= 1)) throw new SinterError('dropout', `p must be in [0, 1], got ${JSON.stringify(p)}`);
  if (opts.training === false || p === 0) return x;
  return tidy(() => {
    const xf = isFloat(x.dtype) ? x : to(x, 'float32');
    if (p === 1) return mul(xf, 0);
    const keep = lt(rand(x.shape, { device: x.device, generator: opts.generator }), 1 - p);
    return div(mul(xf, keep), 1 - p);
  });
}

declare module '../tensor/tensor.js' {
  interface Tensor {
    erfinv(): Tensor;
  }
}
Object.assign(Tensor.prototype, {
  erfinv(this: Tensor) { return erfinv(this); },
});
