import { SinterError } from '../errors.js';
import { map } from '../ops/elementwise.js';
import { checkInputs } from '../ops/op.js';
import { clamp, neg, reciprocal, round } from '../ops/unary.js';
import { div, maximum, mul, sub } from '../ops/binary.js';
import { amax, amin } from '../ops/reduce.js';
import { contiguous, reshape, to } from '../ops/views.js';
import { fromHost } from '../tensor/creation.js';
import type { Tensor } from '../tensor/tensor.js';
import { OnnxModel } from '../io/onnx/model.js';
import { type GraphQuantizeOptions, type LayerKind, type QuantTarget, type QuantizedGraph, checkOptionNames, quantizeGraph } from './graph.js';
import { tidy } from '../tensor/scope.js';
import { Module } from '../nn/module.js';
import { Linear } from '../nn/layers.js';
import { qgemm } from './gemm.js';
import { type QDType, quantizeExpr } from './qtensor.js';

// Dynamic quantisation (torch.ao.quantization.quantize_dynamic): Linear weights become int8 per output
// channel ahead of time; each call quantises its input to quint8 from the input's own min/max (computed
// on the device, so nothing is read back) and runs the integer GEMM with a float32 epilogue:
// y = f32(acc)·(sx·sw[n]) + bias[n].
// Functions of tensors and ONNX models (and modules given exampleInputs) take the same per-layer quantisation on
// their traced graph, convs included (src/quant/graph.ts, quantizeGraph).

/** A Linear layer with int8 weights, quantising its input per call (PyTorch's nn.quantized.dynamic.Linear). */
export class DynamicQuantizedLinear extends Module {
  declare weightInt: Tensor;
  declare weightScale: Tensor;
  declare weightZeroPoint: Tensor;
  declare bias: Tensor;
  readonly inFeatures: number;
  readonly outFeatures: number;

  /** From a float Linear: its weight quantised per output channel (symmetric qint8, PyTorch's observer formula). */
  constructor(linear: Linear) {
    super();
    const w = linear.weight;
    [this.outFeatures, this.inFeatures] = w.shape as [number, number];
    const [q, scale] = quantizeRowsSymmetric(w);
    this.registerBuffer('weightInt', q);
    this.registerBuffer('weightScale', scale);
    this.registerBuffer('weightZeroPoint', fromHost('quantizeDynamic', new Int32Array(this.outFeatures), [this.outFeatures], 'int32', w.device));
    this.registerBuffer('bias', linear.bias ? to(linear.bias, 'float32') : fromHost('quantizeDynamic', new Float32Array(this.outFeatures), [this.outFeatures], 'float32', w.device));
  }

  forward(x: Tensor): Tensor {
    const op = 'DynamicQuantizedLinear';
    checkInputs(op, [x]);
    if (x.ndim < 1 || x.shape[x.ndim - 1] !== this.inFeatures || (x.dtype !== 'float32' && x.dtype !== 'float16')) {
      throw new SinterError(op, `expected a float input [..., ${this.inFeatures}], got ${x.describe()}`);
    }
    const m = x.numel() / this.inFeatures;
    return tidy(() => {
      const x2 = reshape(contiguous(x), [m, this.inFeatures]);
      const [scale, zp] = dynamicQparams(x2, 'quint8');
      const xq = map('quantizeDynamic', [x2, reciprocal(scale), zp], quantizeExpr(x2.dtype, 'quint8'));
      const y = qgemm([xq, this.weightInt, zp, this.weightZeroPoint, mul(scale, this.weightScale), this.bias], { m, n: this.outFeatures, k: this.inFeatures, conv: null, output: 'float32' });
      return reshape(y, [...x.shape.slice(0, -1), this.outFeatures]);
    });
  }

  override extraRepr(): string {
    return `in_features=${this.inFeatures}, out_features=${this.outFeatures}, dtype=qint8, qscheme=perChannelSymmetric`;
  }
}

/**
 * Scale (float32 [1]) and zero point (int32 [1]) of affine quint8 quantisation of `x` from its min and max
 * widened to include 0 (the observers' formula), computed on x's device.
 */
/** Values per row of dynamicQparams' two-stage min/max. */
const ROW = 1024;

export function dynamicQparams(x: Tensor, dtype: QDType): [Tensor, Tensor] {
  const [qmin, qmax] = dtype === 'quint8' ? [0, 255] : [-128, 127];
  return tidy(() => {
    // Rows of up to ROW values (the largest divisor of n) reduced first, then their results: a reduction's kernels (the
    // CPU's wasm one builds a table of offsets per reduced element) handle two short dims far faster than one long one.
    const n = x.numel();
    let row = Math.min(ROW, n);
    while (n % row !== 0) row--;
    const grid = reshape(x, [n / row, row]);
    const lo = clamp(amin(amin(grid, 1)), null, 0), hi = clamp(amax(amax(grid, 1)), 0, null);
    const scale = reshape(clamp(div(sub(hi, lo), qmax - qmin), 2 ** -23, null), [1]);
    const zp = to(clamp(sub(qmin, round(div(lo, scale))), qmin, qmax), 'int32');
    return [scale, zp] as [Tensor, Tensor];
  });
}

/**
 * Symmetric qint8 quantisation of each row of a 2-d float tensor, on its device (nothing is read back):
 * scale = max(|min|, |max|) / 127.5 (at least float32 eps), zero point 0, as PerChannelMinMaxObserver.
 * Returns the int8 rows and the float32 scales [rows].
 */
export function quantizeRowsSymmetric(w: Tensor): [Tensor, Tensor] {
  return tidy(() => {
    const absMax = clamp(maximum(neg(amin(w, 1)), amax(w, 1)), 0, null);
    const scale = clamp(div(absMax, 127.5), 2 ** -23, null);
    const zeros = fromHost('quantizeDynamic', new Int32Array(w.shape[0]!), [w.shape[0]!, 1], 'int32', w.device);
    const q = map('quantizeDynamic', [w, reshape(reciprocal(scale), [w.shape[0]!, 1]), zeros], quantizeExpr(w.dtype, 'qint8'));
    return [q, scale] as [Tensor, Tensor];
  });
}

export interface QuantizeDynamicOptions {
  /** The weight dtype; only 'qint8' (as PyTorch's default). */
  dtype?: 'qint8';
  /**
   * Quantise on the traced graph (always for functions of tensors and models from loadOnnx): the input tensors of
   * one call. An nn.Module without them has its Linear layers replaced in place.
   */
  exampleInputs?: Tensor | readonly Tensor[];
  /** On the graph: the layer kinds to quantise (default conv2d, linear and matmul with a constant weight). */
  layers?: readonly LayerKind[];
}

/** Replaces the children of `model` (at any depth) for which `pick` gives a replacement; returns how many. */
export function replaceModules(model: Module, pick: (m: Module) => Module | null): number {
  let count = 0;
  for (const parent of model.modules()) {
    for (const field of Object.keys(parent)) {
      const child = (parent as unknown as Record<string, unknown>)[field];
      if (!(child instanceof Module)) continue;
      const next = pick(child);
      if (next) {
        Reflect.set(parent, field, next);
        count++;
      }
    }
  }
  return count;
}

/**
 * `torch.ao.quantization.quantize_dynamic`: weights int8 per output channel ahead of time, each call's activations
 * quantised to quint8 from their own min/max.
 * - An nn.Module without `exampleInputs`: each nn.Linear is replaced (in place; the model is returned) by a
 *   DynamicQuantizedLinear; a bare Linear is returned replaced.
 * - A function of tensors, a model from loadOnnx, or a module with `exampleInputs`: on the traced graph (see
 *   src/quant/graph.ts). Every linear and matmul with a constant weight, and every conv2d (as onnxruntime's
 *   quantize_dynamic does with ConvInteger: the activation quantised per call over the whole tensor), runs on the
 *   integer GEMM; `layers` picks the kinds. The result is called like the target and runs compiled.
 */
export function quantizeDynamic(target: QuantTarget, opts: QuantizeDynamicOptions & GraphQuantizeOptions): QuantizedGraph;
export function quantizeDynamic<M extends Module>(model: M, opts?: QuantizeDynamicOptions): M | DynamicQuantizedLinear;
export function quantizeDynamic(model: QuantTarget, opts: QuantizeDynamicOptions = {}): Module | QuantizedGraph {
  const op = 'quantizeDynamic';
  checkOptionNames(op, opts, ['dtype', 'exampleInputs', 'layers']);
  if ((opts.dtype ?? 'qint8') !== 'qint8') throw new SinterError(op, `only dtype 'qint8' is supported, got ${JSON.stringify(opts.dtype)}`);
  if (opts.exampleInputs !== undefined) return quantizeGraph(op, model, 'dynamic', { exampleInputs: opts.exampleInputs, layers: opts.layers }, null);
  if (!(model instanceof Module)) {
    if (typeof model === 'function' || model instanceof OnnxModel) throw new SinterError(op, 'quantising a function or an ONNX model works on its traced graph: pass { exampleInputs } (the input tensors of one call)');
    throw new SinterError(op, `expects an nn.Module, a function of tensors or a model from loadOnnx, got ${model === null ? 'null' : typeof model}`);
  }
  if (opts.layers !== undefined) throw new SinterError(op, 'layers applies on the traced graph: pass exampleInputs too');
  if (model instanceof Linear) return new DynamicQuantizedLinear(model);
  replaceModules(model, (m) => (m instanceof Linear ? new DynamicQuantizedLinear(m) : null));
  return model;
}
