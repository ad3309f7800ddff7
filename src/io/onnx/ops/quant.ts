import { add, div, mul, sub } from '../../../ops/binary.js';
import { type Conv2dAttrs, conv2dOp } from '../../../ops/conv.js';
import { matmul } from '../../../ops/linalg.js';
import { apply1 } from '../../../ops/op.js';
import { amax, amin } from '../../../ops/reduce.js';
import { clamp, round } from '../../../ops/unary.js';
import { reshape, slice, unsqueeze } from '../../../ops/views.js';
import type { DType } from '../../../tensor/dtype.js';
import type { Tensor } from '../../../tensor/tensor.js';
import type { OnnxNode } from '../node.js';
import { type OpContext, type Val, register } from '../registry.js';
import { deviceDType, onnxDType, unsupportedDType } from '../tensor.js';
import { normAxis } from './util.js';

// Linear quantisation: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear and the integer matmul/conv ops, for
// the 8-bit types the engine holds. Integer products run exactly in int32 (matmul); convolutions run in float32,
// exact while the sums stay below 2^24.

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

/** Integer 2-D convolution, computed in float32 (exact while the sums stay below 2^24) and returned as int32. */
function convInteger(node: OnnxNode, x: Tensor, w: Tensor): Tensor {
  const pads = node.ints('pads') ?? [0, 0, 0, 0];
  if (node.string('auto_pad', 'NOTSET') !== 'NOTSET') node.fail('auto_pad is not supported for the integer convolutions; give pads');
  const pair = (v: number[] | undefined): [number, number] => [v?.[0] ?? 1, v?.[1] ?? 1];
  const attrs: Conv2dAttrs = {
    stride: pair(node.ints('strides')), padding: [pads[0]!, pads[2]!, pads[1]!, pads[3]!], dilation: pair(node.ints('dilations')), groups: node.int('group', 1),
  };
  if (x.ndim !== 4) node.fail(`only 2-D integer convolutions are supported, got input ${x.describe()}`);
  return round(apply1(conv2dOp, [x.to('float32'), w.to('float32')], attrs)).to('int32');
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
    run: (_, [a, b, az, bz], ctx) => [matmul(centred(ctx, a!, az, 'A', true), centred(ctx, b!, bz, 'B', false))],
    minOpset: 10,
  },
  QLinearMatMul: {
    run: (_, [a, as, az, b, bs, bz, ys, yz], ctx) => {
      const acc = matmul(centred(ctx, a!, az, 'a', true), centred(ctx, b!, bz, 'b', false));
      return [requantize(ctx, acc, as!, bs!, ys!, yz, ctx.dev(a!, 'a').dtype)];
    },
    minOpset: 10,
  },
  ConvInteger: {
    run: (node, [x, w, xz, wz], ctx) => {
      const xt = ctx.dev(x!, 'x').to('int32'), wt = ctx.dev(w!, 'w').to('int32');
      const xc = xz ? sub(xt, ctx.dev(xz, 'x_zero_point').to('int32')) : xt;
      const wc = wz ? sub(wt, perChannel(ctx.dev(wz, 'w_zero_point').to('int32'), wt.ndim)) : wt;
      return [convInteger(node, xc, wc)];
    },
    minOpset: 10,
  },
  QLinearConv: {
    run: (node, [x, xs, xz, w, ws, wz, ys, yz, bias], ctx) => {
      const xt = ctx.dev(x!, 'x').to('int32'), wt = ctx.dev(w!, 'w').to('int32');
      const xc = sub(xt, ctx.dev(xz!, 'x_zero_point').to('int32'));
      const wc = sub(wt, perChannel(ctx.dev(wz!, 'w_zero_point').to('int32'), wt.ndim));
      let acc = convInteger(node, xc, wc);
      if (bias) acc = add(acc, reshape(ctx.dev(bias, 'B'), [acc.shape[1]!, 1, 1]));
      const wScale = perChannel(ctx.dev(ws!, 'w_scale'), 3);
      return [requantize(ctx, acc, xs!, wScale, ys!, yz, ctx.dev(x!, 'x').dtype)];
    },
    minOpset: 10,
  },
});
