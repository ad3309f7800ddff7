import { add, div, eq, ge, gt, le, logicalAnd, logicalOr, logicalXor, lt, maximum, minimum, mul, ne, pow, sub, where } from '../../../ops/binary.js';
import type { TensorOrScalar } from '../../../ops/elementwise.js';
import {
  abs, ceil, clamp, cos, elu, erf, exp, floor, gelu, hardSwish, leakyRelu, log, logicalNot, neg, reciprocal, relu, round, sigmoid, sign, sin,
  softplus, sqrt, tanh,
} from '../../../ops/unary.js';
import { full } from '../../../tensor/creation.js';
import { isFloat } from '../../../tensor/dtype.js';
import { Tensor } from '../../../tensor/tensor.js';
import { hostMap } from '../host.js';
import type { OnnxNode } from '../node.js';
import { type OpContext, type OpEntry, type Val, register, typeOf } from '../registry.js';
import { HostTensor, type OnnxDType, castTo, deviceDType, onnxDType, unsupportedDType } from '../tensor.js';
import { anchor, operand } from './util.js';

const roundHalfEven = (x: number): number => (Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : Math.round(x));

/** A unary op: its device form, and its host form (a scalar function) where shape arithmetic may use it. */
function unaryOp(device: (x: Tensor, node: OnnxNode) => Tensor, host?: (x: number) => number): OpEntry {
  return {
    run: (node, [x], ctx) => [device(ctx.dev(x!, 'input 0'), node)],
    host: host && ((node, [x]) => [hostMap(node.opType, [x!], x!.dtype, host)]),
  };
}

/**
 * atan from the engine's primitives: |x| > 1 reduces to π/2 − atan(1/|x|), then a minimax polynomial on [0, 1]
 * (absolute error below 1e-5 rad; relative 1.4e-4 near 0), with the sign restored.
 */
function atanOf(x: Tensor): Tensor {
  const z = abs(x), big = gt(z, 1);
  const r = where(big, reciprocal(z), z), r2 = mul(r, r);
  let p = add(mul(r2, 0.0208351), -0.085133);
  for (const c of [0.180141, -0.3302995, 0.999866]) p = add(mul(p, r2), c);
  p = mul(p, r);
  return mul(sign(x), where(big, sub(Math.PI / 2, p), p));
}

/** alpha·x + beta clamped to [0, 1]. */
function hardSigmoidOf(x: Tensor, alpha: number, beta: number): Tensor {
  return clamp(add(mul(x, alpha), beta), 0, 1);
}

register({
  Abs: unaryOp(abs, Math.abs),
  Neg: unaryOp(neg, (x) => -x),
  Exp: unaryOp(exp, Math.exp),
  Log: unaryOp(log, Math.log),
  Sqrt: unaryOp(sqrt, Math.sqrt),
  Reciprocal: unaryOp(reciprocal, (x) => 1 / x),
  Sigmoid: unaryOp(sigmoid),
  Tanh: unaryOp(tanh),
  Erf: unaryOp(erf),
  Sin: unaryOp(sin),
  Cos: unaryOp(cos),
  Floor: unaryOp(floor, Math.floor),
  Ceil: unaryOp(ceil, Math.ceil),
  Round: unaryOp(round, roundHalfEven),
  Sign: unaryOp(sign, Math.sign),
  Relu: unaryOp(relu, (x) => Math.max(x, 0)),
  Not: { ...unaryOp(logicalNot, (x) => (x === 0 ? 1 : 0)), minOpset: 1 },
  Softplus: unaryOp((x) => softplus(x)),
  Softsign: unaryOp((x) => div(x, add(abs(x), 1))),
  Mish: unaryOp((x) => mul(x, tanh(softplus(x)))),
  HardSwish: unaryOp(hardSwish),
  Elu: unaryOp((x, node) => elu(x, node.float('alpha', 1))),
  Celu: unaryOp((x, node) => {
    const alpha = node.float('alpha', 1);
    return mul(elu(div(x, alpha), 1), alpha);
  }),
  LeakyRelu: unaryOp((x, node) => leakyRelu(x, node.float('alpha', 0.01))),
  ThresholdedRelu: unaryOp((x, node) => where(gt(x, node.float('alpha', 1)), x, 0)),
  Selu: unaryOp((x, node) => mul(elu(x, node.float('alpha', 1.67326319217681884765625)), node.float('gamma', 1.05070102214813232421875))),
  HardSigmoid: unaryOp((x, node) => hardSigmoidOf(x, node.float('alpha', 0.2), node.float('beta', 0.5))),
  Tan: unaryOp((x) => div(sin(x), cos(x)), Math.tan),
  Atan: unaryOp(atanOf, Math.atan),
  // asin x = atan(x / √(1 − x²)); acos x = 2·atan(√((1 − x) / (1 + x))), accurate near ±1.
  Asin: unaryOp((x) => atanOf(div(x, sqrt(sub(1, mul(x, x))))), Math.asin),
  Acos: unaryOp((x) => mul(atanOf(sqrt(div(sub(1, x), add(1, x)))), 2), Math.acos),
  Sinh: unaryOp((x) => mul(sub(exp(x), exp(neg(x))), 0.5), Math.sinh),
  Cosh: unaryOp((x) => mul(add(exp(x), exp(neg(x))), 0.5), Math.cosh),
  // asinh is odd: computed on |x| so large negative x does not cancel.
  Asinh: unaryOp((x) => mul(sign(x), log(add(abs(x), sqrt(add(mul(x, x), 1))))), Math.asinh),
  Acosh: unaryOp((x) => log(add(x, sqrt(sub(mul(x, x), 1)))), Math.acosh),
  Atanh: unaryOp((x) => mul(log(div(add(1, x), sub(1, x))), 0.5), Math.atanh),
  // Experimental ops of opsets 1–9 that old exports (Tiny YOLOv2 in the model zoo, Caffe2 converters) still contain.
  ImageScaler: {
    run: (node, [x], ctx) => {
      const t = ctx.dev(x!, 'input');
      const bias = node.floats('bias') ?? [];
      const scaled = mul(t, node.float('scale', 1));
      if (bias.length === 0) return [scaled];
      if (t.ndim < 2 || bias.length !== t.shape[1]) node.fail(`bias has ${bias.length} values for the ${t.shape[1]} channels of ${t.describe()}`);
      return [add(scaled, ctx.dev(new HostTensor('float32', [bias.length, ...new Array<number>(t.ndim - 2).fill(1)], Float32Array.from(bias)), 'bias').to(t.dtype))];
    },
    minOpset: 1,
  },
  Scale: { ...unaryOp((x, node) => mul(x, node.float('scale', 1))), minOpset: 1 },
  ScaledTanh: { ...unaryOp((x, node) => mul(tanh(mul(x, node.float('beta', 1))), node.float('alpha', 1))), minOpset: 1 },
  ParametricSoftplus: { ...unaryOp((x, node) => mul(softplus(mul(x, node.float('beta', 1))), node.float('alpha', 1))), minOpset: 1 },
  Affine: { ...unaryOp((x, node) => add(mul(x, node.float('alpha', 1)), node.float('beta', 0))), minOpset: 1 },
  Shrink: unaryOp((x, node) => {
    const lambd = node.float('lambd', 0.5), bias = node.float('bias', 0);
    return where(lt(x, -lambd), add(x, bias), where(gt(x, lambd), sub(x, bias), 0));
  }),
  IsNaN: { ...unaryOp((x) => ne(x, x)), minOpset: 9 },
  IsInf: {
    run: (node, [x], ctx) => {
      const t = ctx.dev(x!, 'input 0');
      const pos = node.int('detect_positive', 1) === 1, neg = node.int('detect_negative', 1) === 1;
      if (pos && neg) return [eq(abs(t), Infinity)];
      return [pos ? eq(t, Infinity) : neg ? eq(t, -Infinity) : full(t.shape, false, { device: ctx.device })];
    },
    minOpset: 10,
  },
  Gelu: {
    run: (node, [x], ctx) => [gelu(ctx.dev(x!, 'input 0'), { approximate: node.string('approximate', 'none') === 'tanh' ? 'tanh' : 'none' })],
    check: (node) => {
      const a = node.string('approximate', 'none');
      return a === 'none' || a === 'tanh' ? undefined : `approximate='${a}' is not 'none' or 'tanh'`;
    },
  },
});

// ---- binary and variadic ops ------------------------------------------------------------------

type Binary = (a: TensorOrScalar, b: TensorOrScalar) => Tensor;

/** Applies `fn` with one side possibly a host scalar; ONNX gives both sides one type, so no promotion happens. */
function binaryOnDevice(ctx: OpContext, a: Val, b: Val, fn: Binary): Tensor {
  const like = anchor(ctx, [a, b], 'input 0');
  return fn(operand(ctx, a, like, 'input 0'), operand(ctx, b, like, 'input 1'));
}

function isIntType(d: OnnxDType): boolean {
  return !['float32', 'float16', 'float64', 'bfloat16'].includes(d);
}

/** ONNX integer division truncates toward zero; float division is true division. */
function divide(a: TensorOrScalar, b: TensorOrScalar): Tensor {
  const t = (a instanceof Tensor ? a : b) as Tensor;
  return isFloat(t.dtype) ? div(a, b) : div(a, b, { roundingMode: 'trunc' });
}

function binaryOp(device: (node: OnnxNode) => Binary, host: (node: OnnxNode, a: number, b: number, type: OnnxDType) => number, compare = false): OpEntry {
  return {
    run: (node, [a, b], ctx) => [binaryOnDevice(ctx, a!, b!, device(node))],
    host: (node, [a, b]) => [hostMap(node.opType, [a!, b!], compare ? 'bool' : a!.dtype, (x, y) => host(node, x, y, a!.dtype))],
  };
}

const arith = (fn: Binary) => () => fn;
const hostDiv = (x: number, y: number, type: OnnxDType): number => (isIntType(type) ? (y === 0 ? 0 : Math.trunc(x / y)) : x / y);
const hostMod = (node: OnnxNode, x: number, y: number): number => {
  if (node.int('fmod', 0) === 1) return x % y;
  const r = x % y;
  return r !== 0 && r < 0 !== y < 0 ? r + y : r;
};

/** Mod: fmod=1 takes the dividend's sign (C fmod), fmod=0 the divisor's (Python %, integers only). */
function modOnDevice(node: OnnxNode): Binary {
  const mode = node.int('fmod', 0) === 1 ? 'trunc' : 'floor';
  return (a, b) => sub(a, mul(div(a, b, { roundingMode: mode }), b));
}

register({
  Add: binaryOp(arith(add), (_, x, y) => x + y),
  Sub: binaryOp(arith(sub), (_, x, y) => x - y),
  Mul: binaryOp(arith(mul), (_, x, y) => x * y),
  Div: binaryOp(arith(divide), (_, x, y, t) => hostDiv(x, y, t)),
  Mod: binaryOp(modOnDevice, (node, x, y) => hostMod(node, x, y)),
  Pow: {
    // The result keeps the base's type: an integer base raised to a float power is cast back, as the ONNX reference does.
    run: (_, [a, b], ctx) => {
      const base = ctx.dev(a!, 'input 0');
      const e = b instanceof HostTensor && b.data.length === 1 && b.shape.length <= base.ndim ? b.data[0]! : ctx.dev(b!, 'input 1');
      const y = pow(base, e);
      return [y.dtype === base.dtype ? y : y.to(base.dtype)];
    },
    host: (node, [a, b]) => [hostMap(node.opType, [a!, b!], a!.dtype, Math.pow)],
  },
  Equal: binaryOp(arith(eq), (_, x, y) => Number(x === y), true),
  Less: binaryOp(arith(lt), (_, x, y) => Number(x < y), true),
  LessOrEqual: binaryOp(arith(le), (_, x, y) => Number(x <= y), true),
  Greater: binaryOp(arith(gt), (_, x, y) => Number(x > y), true),
  GreaterOrEqual: binaryOp(arith(ge), (_, x, y) => Number(x >= y), true),
  And: binaryOp(arith(logicalAnd), (_, x, y) => Number(x !== 0 && y !== 0)),
  Or: binaryOp(arith(logicalOr), (_, x, y) => Number(x !== 0 || y !== 0)),
  Xor: binaryOp(arith(logicalXor), (_, x, y) => Number((x !== 0) !== (y !== 0))),
  BitShift: {
    // Unsigned shifts as exact float arithmetic on the 8-bit values: (x·2^y) mod 256, or ⌊x / 2^y⌋.
    run: (node, [a, b], ctx) => {
      const x = ctx.dev(a!, 'X'), y = ctx.dev(b!, 'Y');
      if (x.dtype !== 'uint8') node.fail(`X ${x.describe()} must be uint8 (the engine's only unsigned type)`);
      const xf = x.to('float32'), scale = pow(2, y.to('float32'));
      const left = node.string('direction') === 'LEFT';
      const v = left ? mul(xf, scale) : floor(div(xf, scale));
      return [(left ? sub(v, mul(floor(div(v, 256)), 256)) : v).to('uint8')];
    },
    check: (node) => (['LEFT', 'RIGHT'].includes(node.string('direction', '')) ? undefined : "needs the attribute direction, 'LEFT' or 'RIGHT'"),
    minOpset: 11,
  },
  PRelu: {
    run: (_, [x, slope], ctx) => {
      const t = ctx.dev(x!, 'input 0');
      return [where(lt(t, 0), mul(t, operand(ctx, slope!, t, 'slope')), t)];
    },
  },
});

/** Max/Min/Sum/Mean of any number of inputs, broadcasting. */
function variadic(device: Binary, host: (x: number, y: number) => number, mean = false): OpEntry {
  return {
    run: (_, inputs, ctx) => {
      let acc = ctx.dev(inputs[0]!, 'input 0');
      inputs.slice(1).forEach((v, i) => (acc = device(acc, operand(ctx, v!, acc, `input ${i + 1}`))));
      return [mean ? divide(acc, inputs.length) : acc];
    },
    host: (node, inputs) => {
      let acc = inputs[0]!;
      for (const v of inputs.slice(1)) acc = hostMap(node.opType, [acc, v!], acc.dtype, host);
      return [mean ? hostMap(node.opType, [acc], acc.dtype, (x) => x / inputs.length) : acc];
    },
  };
}

register({
  Max: variadic(maximum, (x, y) => (Number.isNaN(x) || Number.isNaN(y) ? NaN : Math.max(x, y))),
  Min: variadic(minimum, (x, y) => (Number.isNaN(x) || Number.isNaN(y) ? NaN : Math.min(x, y))),
  Sum: variadic(add, (x, y) => x + y),
  Mean: variadic(add, (x, y) => x + y, true),
});

// ---- Where, Clip, Cast, Identity, Dropout ----------------------------------------------------

register({
  Where: {
    run: (_, [c, a, b], ctx) => {
      const cond = ctx.dev(c!, 'condition');
      const like = anchor(ctx, [a!, b!], 'input 1');
      return [where(cond, operand(ctx, a!, like, 'input 1'), operand(ctx, b!, like, 'input 2'))];
    },
    host: (node, [c, a, b]) => [hostMap(node.opType, [c!, a!, b!], a!.dtype, (k, x, y) => (k !== 0 ? x : y))],
  },
  Clip: {
    run: (node, [x, lo, hi], ctx) => {
      const t = ctx.dev(x!, 'input 0');
      // Before opset 11 the bounds are attributes; from 11 they are optional inputs.
      const bound = (v: Val | undefined, attr: string): number | Tensor | undefined => {
        if (node.opset < 11) return node.float(attr);
        if (v === undefined) return undefined;
        return v instanceof HostTensor ? v.scalar(`Clip's ${attr}`) : v;
      };
      const min = bound(lo, 'min'), max = bound(hi, 'max');
      if (min === undefined && max === undefined) return [t.clone()];
      return [clamp(t, min, max)];
    },
    host: (node, [x, lo, hi]) => {
      const min = node.opset < 11 ? node.float('min', -Infinity) : (lo?.scalar("Clip's min") ?? -Infinity);
      const max = node.opset < 11 ? node.float('max', Infinity) : (hi?.scalar("Clip's max") ?? Infinity);
      return [hostMap(node.opType, [x!], x!.dtype, (v) => Math.min(Math.max(v, min), max))];
    },
  },
  Cast: {
    run: (node, [x], ctx) => [castOnDevice(ctx, x!, castTarget(node))],
    host: (node, [x]) => [castOnHost(x!, castTarget(node))],
    check: (node) => {
      const to = castTarget(node);
      return unsupportedDType(to) && `casts to ${to}: ${unsupportedDType(to)}`;
    },
  },
  CastLike: {
    run: (_, [x, like], ctx) => [castOnDevice(ctx, x!, typeOf(like!))],
    host: (_, [x, like]) => [castOnHost(x!, like!.dtype)],
  },
  Identity: { run: (_, [x]) => [x], minOpset: 1 },
  Dropout: {
    // Inference (or a ratio of 0): the input passes through and the mask is all true. Random dropout in training
    // mode is refused: its values could not match any other runtime's.
    run: (node, [x, ratioV, training], ctx) => {
      const trainingMode = training !== undefined && ctx.host(training, 'training_mode').scalar('training_mode') !== 0;
      const ratio = ratioV === undefined ? 0.5 : ctx.host(ratioV, 'ratio').scalar('ratio');
      if (trainingMode && ratio !== 0) node.fail(`training_mode=1 with ratio ${ratio} is not supported (inference, or ratio 0, only)`);
      const wantMask = node.outputs.length > 1 && node.outputs[1] !== '';
      return [x, wantMask ? full(x!.shape, true, { dtype: 'bool', device: ctx.device }) : undefined];
    },
    hostInputs: [1, 2],
  },
});

/** Cast-1 names its target type as a string (TensorProto.DataType's names). */
const TYPE_NAMES: Record<string, number> = {
  FLOAT: 1, UINT8: 2, INT8: 3, UINT16: 4, INT16: 5, INT32: 6, INT64: 7, STRING: 8, BOOL: 9, FLOAT16: 10, DOUBLE: 11, UINT32: 12, UINT64: 13,
};

function castTarget(node: OnnxNode): OnnxDType {
  if (node.opset < 6) {
    const name = node.string('to') ?? node.fail("needs the attribute 'to'");
    return onnxDType(TYPE_NAMES[name.toUpperCase()] ?? 0, `${node.describe()}'s 'to' ('${name}')`);
  }
  const to = node.int('to');
  if (to === undefined) node.fail("needs the attribute 'to'");
  return onnxDType(to, `${node.describe()}'s 'to'`);
}

function castOnDevice(ctx: OpContext, x: Val, to: OnnxDType): Tensor {
  const dtype = deviceDType(to, 'the cast target');
  // Host values are cast exactly first (e.g. int64 → float32 before any narrowing to int32).
  if (x instanceof HostTensor) return ctx.dev(castOnHost(x, to), 'input 0');
  return x.dtype === dtype ? x : x.to(dtype);
}

function castOnHost(x: HostTensor, to: OnnxDType): HostTensor {
  return new HostTensor(to, x.shape, Array.from(x.data, (v) => castTo(to, v)));
}
