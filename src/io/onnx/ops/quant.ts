import { add, div, mul, sub } from '../../../ops/binary.js';
import { matmul } from '../../../ops/linalg.js';
import { amax, amin } from '../../../ops/reduce.js';
import { clamp, round } from '../../../ops/unary.js';
import { contiguous, expand, reshape, slice, transpose, unsqueeze } from '../../../ops/views.js';
import { type ConvGeometry, qgemm } from '../../../quant/gemm.js';
import { wqMatmulOp } from '../../../quant/weights.js';
import { apply1 } from '../../../ops/op.js';
import { zeros } from '../../../tensor/creation.js';
import type { DType } from '../../../tensor/dtype.js';
import type { Tensor } from '../../../tensor/tensor.js';
import type { OnnxNode } from '../node.js';
import { type OpContext, type Val, register } from '../registry.js';
import { deviceDType, onnxDType, unsupportedDType } from '../tensor.js';
import { normAxis } from './util.js';

// Linear quantisation: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear and the integer matmul/conv ops, for
// the 8-bit types the engine holds. Integer products and convolutions accumulate exactly in int32 on the integer
// GEMM of src/quant/gemm.ts (2-D matmuls with a scalar A zero point; other matmuls in int32 tensor ops); the
// requantisation of QLinear* follows in tensor ops.

const RANGE: Partial<Record<DType, [number, number]>> = { uint8: [0, 255], int8: [-128, 127], int32: [-2147483648, 2147483647] };

/** A scale or zero point laid out to broadcast against x: a scalar, one value per `axis`, or one per block of `blockSize` along it. */
function broadcastParam(node: OnnxNode, p: Tensor, x: Tensor, axis: number, blockSize: number): Tensor {
  if (p.ndim === 0 || p.numel() === 1) return reshape(p, []);
  const a = normAxis(node, axis, x.ndim);
  if (blockSize > 0) {
    // Each entry covers blockSize consecutive elements along the axis: repeat it, then trim to the axis size.
    const rep = unsqueeze(p, a + 1).expand([...p.shape.slice(0, a + 1), blockSize, ...p.shape.slice(a + 1)]);
    const merged = reshape(rep, [...p.shape.slice(0, a), p.shape[a]! * blockSize, ...p.shape.slice(a + 1)]);
    return slice(merged, a, 0, x.shape[a]!);
  }
  return reshape(p, x.shape.map((n, i) => (i === a ? n : 1)));
}

/** round-half-even(v) + zero point, saturated to `dtype`'s range. */
function saturate(v: Tensor, zeroPoint: Tensor | number, dtype: DType): Tensor {
  const [lo, hi] = RANGE[dtype]!;
  return clamp(add(round(v), zeroPoint), lo, hi).to(dtype);
}

function quantizeLinear(node: OnnxNode, ctx: OpContext, [x, scale, zp]: readonly (Val | undefined)[]): Tensor {
  const t = ctx.dev(x!, 'x').to('float32');
  const axis = node.int('axis', 1), block = node.int('block_size', 0);
  const s = broadcastParam(node, ctx.dev(scale!, 'y_scale').to('float32'), t, axis, block);
  const attr = node.int('output_dtype', 0);
  const out: DType = zp ? ctx.dev(zp, 'y_zero_point').dtype : attr ? deviceDType(onnxDType(attr, 'output_dtype'), 'output_dtype') : 'uint8';
  const z = zp ? broadcastParam(node, ctx.dev(zp, 'y_zero_point').to('float32'), t, axis, block) : 0;
  return saturate(div(t, s), z, out);
}

function dequantizeLinear(node: OnnxNode, ctx: OpContext, [x, scale, zp]: readonly (Val | undefined)[]): Tensor {
  const t = ctx.dev(x!, 'x').to('float32');
  const axis = node.int('axis', 1), block = node.int('block_size', 0);
  const sc = ctx.dev(scale!, 'x_scale');
  const s = broadcastParam(node, sc.to('float32'), t, axis, block);
  const shifted = zp ? sub(t, broadcastParam(node, ctx.dev(zp, 'x_zero_point').to('float32'), t, axis, block)) : t;
  const attr = node.int('output_dtype', 0);
  const out = attr ? deviceDType(onnxDType(attr, 'output_dtype'), 'output_dtype') : sc.dtype;
  return mul(shifted, s).to(out);
}

/** DynamicQuantizeLinear: uint8 quantisation with the scale and zero point from the data's range (widened to include 0). */
function dynamicQuantize(ctx: OpContext, x: Val): Tensor[] {
  const t = ctx.dev(x, 'x').to('float32');
  const hi = clamp(amax(t), 0, null), lo = clamp(amin(t), null, 0);
  const scale = div(sub(hi, lo), 255);
  const zp = saturate(sub(0, div(lo, scale)), 0, 'uint8');
  return [saturate(div(t, scale), zp.to('float32'), 'uint8'), scale, zp];
}

/** An integer operand minus its zero point, in int32 (a per-row zero point for the left operand, per-column for the right). */
function centred(ctx: OpContext, v: Val, zp: Val | undefined, what: string, perRow: boolean): Tensor {
  const t = ctx.dev(v, what).to('int32');
  if (!zp) return t;
  const z = ctx.dev(zp, `${what}'s zero point`).to('int32');
  return sub(t, z.numel() > 1 && perRow ? reshape(z, [z.numel(), 1]) : z);
}

const isInt8 = (t: Tensor) => t.dtype === 'int8' || t.dtype === 'uint8';

/** A zero point as the integer GEMM takes it: int32, one value ([1]) or one per output channel ([n], a broadcast view for a scalar). */
function gemmZeroPoint(ctx: OpContext, zp: Val | undefined, what: string, n: number | null, device: Tensor['device']): Tensor {
  if (!zp) return zeros([n ?? 1], { dtype: 'int32', device });
  const z = reshape(ctx.dev(zp, what).to('int32'), [-1]);
  if (n === null || z.numel() === n) return z;
  return expand(z, [n]);
}

/**
 * Σ(a − a_zero_point)(b − b_zero_point) exactly in int32 on the integer GEMM (src/quant/gemm.ts), for 2-D
 * int8/uint8 operands with a scalar a_zero_point; null where that does not apply (the caller falls back).
 */
function integerMatmul(ctx: OpContext, av: Val, bv: Val, az: Val | undefined, bz: Val | undefined): Tensor | null {
  const a = ctx.dev(av, 'A'), b = ctx.dev(bv, 'B');
  if (a.ndim !== 2 || b.ndim !== 2 || !isInt8(a) || !isInt8(b) || (az && ctx.dev(az, 'a_zero_point').numel() !== 1)) return null;
  const [m, k] = a.shape as [number, number], n = b.shape[1]!;
  const bt = contiguous(transpose(b, 0, 1));
  return qgemm([a, bt, gemmZeroPoint(ctx, az, 'a_zero_point', null, a.device), gemmZeroPoint(ctx, bz, 'b_zero_point', n, a.device)], { m, n, k, conv: null, output: 'int32' });
}

/** Integer 2-D convolution Σ(x − x_zero_point)(w − w_zero_point), exact in int32 on the integer GEMM (implicit im2col; padding reads the zero point). */
function convInteger(node: OnnxNode, ctx: OpContext, xv: Val, wv: Val, xz: Val | undefined, wz: Val | undefined): Tensor {
  const x = ctx.dev(xv, 'x'), w = ctx.dev(wv, 'w');
  const pads = node.ints('pads') ?? [0, 0, 0, 0];
  if (node.string('auto_pad', 'NOTSET') !== 'NOTSET') node.fail('auto_pad is not supported for the integer convolutions; give pads');
  if (x.ndim !== 4 || w.ndim !== 4) node.fail(`only 2-D integer convolutions are supported, got input ${x.describe()} and weight ${w.describe()}`);
  if (!isInt8(x) || !isInt8(w)) node.fail(`expects int8 or uint8 input and weight, got ${x.describe()} and ${w.describe()}`);
  const pair = (v: number[] | undefined): [number, number] => [v?.[0] ?? 1, v?.[1] ?? 1];
  const [stride, dilation, groups] = [pair(node.ints('strides')), pair(node.ints('dilations')), node.int('group', 1)];
  const [batch, channels, height, width] = x.shape as [number, number, number, number];
  const [outC, cg, kh, kw] = w.shape as [number, number, number, number];
  if (channels !== cg * groups || outC % groups !== 0) node.fail(`group ${groups} does not fit input ${x.describe()} and weight ${w.describe()}`);
  const outHeight = Math.floor((height + pads[0]! + pads[2]! - dilation[0] * (kh - 1) - 1) / stride[0]) + 1;
  const outWidth = Math.floor((width + pads[1]! + pads[3]! - dilation[1] * (kw - 1) - 1) / stride[1]) + 1;
  if (outHeight < 1 || outWidth < 1) node.fail(`the kernel does not fit the padded input ${x.describe()}`);
  const conv: ConvGeometry = { batch, channels, height, width, kernel: [kh, kw], stride, padding: [pads[0]!, pads[1]!], dilation, groups, outHeight, outWidth };
  const w2 = reshape(contiguous(w), [outC, cg * kh * kw]);
  const zx = gemmZeroPoint(ctx, xz, 'x_zero_point', null, x.device), zw = gemmZeroPoint(ctx, wz, 'w_zero_point', outC, x.device);
  return qgemm([contiguous(x), w2, zx, zw], { m: batch * outHeight * outWidth, n: outC, k: cg * kh * kw, conv, output: 'int32' });
}

/** y = saturate(round(acc · a_scale·b_scale / y_scale) + y_zero_point), in y_zero_point's type. */
function requantize(ctx: OpContext, acc: Tensor, aScale: Val, bScale: Val, yScale: Val, yZp: Val | undefined, fallback: DType): Tensor {
  const f = (v: Val, what: string) => ctx.dev(v, what).to('float32');
  const factor = div(mul(f(aScale, 'a_scale'), f(bScale, 'b_scale')), f(yScale, 'y_scale'));
  const zp = yZp ? ctx.dev(yZp, 'y_zero_point') : undefined;
  return saturate(mul(acc.to('float32'), factor), zp ? zp.to('float32') : 0, zp?.dtype ?? fallback);
}

/** Per-output-channel weight parameters ([M]) broadcast over [M, C, kH, kW]. */
function perChannel(t: Tensor, rank: number): Tensor {
  return t.numel() > 1 ? reshape(t, [t.numel(), ...new Array<number>(rank - 1).fill(1)]) : t;
}

/**
 * com.microsoft MatMulNBits: Y = A · dequant(B)ᵀ, B [N, blocks, blob] unsigned `bits`-bit integers packed along K (low
 * bits first), a float scale per block of `block_size` along K and, without zero_points, the zero point 2^(bits−1).
 * Runs on the weight-only kernel of src/quant/weights.ts, which dequantises inside the matmul (the float weight never
 * exists) and computes in float32, at least the accuracy any accuracy_level asks for.
 */
function matMulNBits(node: OnnxNode, ctx: OpContext, [av, bv, sv, , , biasv]: readonly (Val | undefined)[]): Tensor {
  const k = node.int('K', 0), n = node.int('N', 0), bits = node.int('bits', 4), blockSize = node.int('block_size', 0);
  const a = ctx.dev(av!, 'A'), b = ctx.dev(bv!, 'B'), scales = ctx.dev(sv!, 'scales');
  if (a.dtype !== 'float32' && a.dtype !== 'float16') node.fail(`A must be float, got ${a.describe()}`);
  if (a.ndim < 1 || a.shape[a.ndim - 1] !== k) node.fail(`A ${a.describe()} must end in K = ${k}`);
  const blocks = k / blockSize;
  if (b.dtype !== 'uint8' || b.numel() !== (n * k * bits) / 8) node.fail(`B must hold N·K·bits/8 = ${(n * k * bits) / 8} uint8 values, got ${b.describe()}`);
  if (scales.numel() !== n * blocks) node.fail(`scales must hold N·K/block_size = ${n * blocks} values, got ${scales.describe()}`);
  const m = a.numel() / k;
  const inputs = [reshape(a, [m, k]), reshape(b, [n, (k * bits) / 8]), reshape(scales.to('float32'), [n, blocks])];
  if (biasv) inputs.push(reshape(ctx.dev(biasv, 'bias').to('float32'), [n]));
  const y = apply1(wqMatmulOp, inputs, { m, n, k, bits: bits as 4 | 8, blockSize, asymmetric: false, hasBias: biasv !== undefined });
  return reshape(y, [...a.shape.slice(0, -1), n]);
}

function checkMatMulNBits(node: OnnxNode): string | undefined {
  const k = node.int('K', 0), n = node.int('N', 0), bits = node.int('bits', 4), bs = node.int('block_size', 0);
  if (bits !== 4 && bits !== 8) return `bits ${bits}: only 4 and 8 are supported`;
  if (!(k > 0 && n > 0 && bs >= 16 && (bs & (bs - 1)) === 0)) return `K ${k}, N ${n}, block_size ${bs}: K and N must be positive and block_size a power of 2 ≥ 16`;
  if (k % bs !== 0) return `K ${k} is not a multiple of block_size ${bs} (padded last blocks are not supported)`;
  if (node.inputs[3]) return 'zero_points are not supported (symmetric blocks, zero point 2^(bits−1), only)';
  if (node.inputs[4]) return 'g_idx is not supported';
  return undefined;
}

const checkOutput = (node: OnnxNode) => {
  const attr = node.int('output_dtype', 0);
  if (!attr) return undefined;
  const d = onnxDType(attr, 'output_dtype');
  return unsupportedDType(d) && `output_dtype ${d}: ${unsupportedDType(d)}`;
};

register({
  QuantizeLinear: { run: (node, ins, ctx) => [quantizeLinear(node, ctx, ins)], check: checkOutput, minOpset: 10 },
  DequantizeLinear: { run: (node, ins, ctx) => [dequantizeLinear(node, ctx, ins)], check: checkOutput, minOpset: 10 },
  DynamicQuantizeLinear: { run: (_, [x], ctx) => dynamicQuantize(ctx, x!), minOpset: 11 },
  MatMulInteger: {
    run: (_, [a, b, az, bz], ctx) => [integerMatmul(ctx, a!, b!, az, bz) ?? matmul(centred(ctx, a!, az, 'A', true), centred(ctx, b!, bz, 'B', false))],
    minOpset: 10,
  },
  QLinearMatMul: {
    run: (_, [a, as, az, b, bs, bz, ys, yz], ctx) => {
      const acc = integerMatmul(ctx, a!, b!, az, bz) ?? matmul(centred(ctx, a!, az, 'a', true), centred(ctx, b!, bz, 'b', false));
      return [requantize(ctx, acc, as!, bs!, ys!, yz, ctx.dev(a!, 'a').dtype)];
    },
    minOpset: 10,
  },
  ConvInteger: {
    run: (node, [x, w, xz, wz], ctx) => [convInteger(node, ctx, x!, w!, xz, wz)],
    minOpset: 10,
  },
  'com.microsoft.MatMulNBits': { run: (node, ins, ctx) => [matMulNBits(node, ctx, ins)], check: checkMatMulNBits },
  QLinearConv: {
    run: (node, [x, xs, xz, w, ws, wz, ys, yz, bias], ctx) => {
      let acc = convInteger(node, ctx, x!, w!, xz, wz);
      if (bias) acc = add(acc, reshape(ctx.dev(bias, 'B'), [acc.shape[1]!, 1, 1]));
      const wScale = perChannel(ctx.dev(ws!, 'w_scale'), 3);
      return [requantize(ctx, acc, xs!, wScale, ys!, yz, ctx.dev(x!, 'x').dtype)];
    },
    minOpset: 10,
  },
});
