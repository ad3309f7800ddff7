import { SinterError, fmtShape } from '../errors.js';
import { add, div, maximum, mul, sub } from '../ops/binary.js';
import { map } from '../ops/elementwise.js';
import { type CpuView, type TensorMeta, apply1, checkInputs, defineOp, describeMeta } from '../ops/op.js';
import { amax, amin } from '../ops/reduce.js';
import { clamp, floor, neg, reciprocal, round } from '../ops/unary.js';
import { stack } from '../ops/movement.js';
import { contiguous, reshape, slice, to } from '../ops/views.js';
import { bindings, loadElement } from '../kernels/wgsl/dtype.js';
import { GRID_PARAMS, grid } from '../kernels/wgsl/grid.js';
import type { GpuView, WebGpuCaps, WgslKernel } from '../kernels/wgsl/kernel.js';
import { withPrelude } from '../kernels/wgsl/prelude.js';
import { fromHost } from '../tensor/creation.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import { OnnxModel } from '../io/onnx/model.js';
import { type GraphQuantizeOptions, type LayerKind, type QuantTarget, type QuantizedGraph, checkOptionNames, quantizeGraph } from './graph.js';
import { Module } from '../nn/module.js';
import { Linear } from '../nn/layers.js';
import { replaceModules } from './dynamic.js';
import { quantizeExpr } from './qtensor.js';
import { cpuKernels } from '../backend/cpu.js';
import { wasmWeightOnlyMatmul } from '../kernels/wasm/int8-weights.js';

// Weight-only quantisation (ONNX's MatMulNBits, transformers.js's q8/q4): each row of a Linear weight is
// cut into blocks of `blockSize` along the input dim, each with a float32 scale (and, asymmetric, a zero
// point); the integers are stored unsigned, 8 bits a byte or 4 bits two a byte (even k in the low
// nibble). w[n, k] = scale[n, k/bs] · (q[n, k] − zp[n, k/bs]); symmetric blocks use zp = 2^(bits−1).
// The matmul dequantises inside its loop, so the float weight never exists; compute is float32.

export interface QuantizeWeightsOptions {
  /** 8 (a byte per weight) or 4 (two per byte). Default 4. */
  bits?: 8 | 4;
  /** Weights per scale along the input dim; must divide the layer's inFeatures (and be even for 4 bits). Default 32. */
  blockSize?: number;
  /** Symmetric (zero point 2^(bits−1), no zero points stored; default) or asymmetric (a zero point per block). */
  symmetric?: boolean;
  /**
   * Quantise on the traced graph (always for functions of tensors and models from loadOnnx): the input tensors of
   * one call. An nn.Module without them has its Linear layers replaced in place.
   */
  exampleInputs?: Tensor | readonly Tensor[];
  /**
   * On the graph: the layer kinds to quantise. Default linear and matmul with a constant weight, as ONNX's MatMulNBits
   * and transformers.js's q4 (they quantise MatMul weights only): int4 blocks along a conv's input lose too much
   * (PP-OCR det's text-mask IoU fell to 0.45–0.90 with its convs in 4 bits); add 'conv2d' to opt convs in.
   */
  layers?: readonly LayerKind[];
}

/** The layer kinds quantizeWeights takes by default on the graph: matmul weights only, as MatMulNBits / q4. */
export const WEIGHT_ONLY_DEFAULT_LAYERS: readonly LayerKind[] = ['linear', 'matmul'];

interface WqAttrs {
  m: number;
  n: number;
  k: number;
  bits: 8 | 4;
  blockSize: number;
  /** Asymmetric: zero points are input 3; symmetric: the constant 2^(bits−1). */
  asymmetric: boolean;
  hasBias: boolean;
}

// Inputs: x float [M, K] (any strides), packed uint8 [N, K·bits/8], scales f32 [N, K/bs], then zero points
// uint8 [N, K/bs] when asymmetric, then bias f32 [N] when present. Output float32 [M, N].
export const wqMatmulOp = defineOp<WqAttrs>({
  name: 'weightOnlyMatmul',
  infer(inputs, a) {
    const x = inputs[0]! as TensorMeta;
    if (x.dtype !== 'float32' && x.dtype !== 'float16') throw new SinterError('weightOnlyMatmul', `expects a float input, got ${describeMeta(x)}`);
    return [{ shape: [a.m, a.n], dtype: 'float32' }];
  },
  cpu(inputs, a, [out]) {
    const [x, q, s] = inputs as [CpuView, CpuView, CpuView];
    const z = a.asymmetric ? inputs[3]! : null;
    const bias = a.hasBias ? inputs[a.asymmetric ? 4 : 3]! : null;
    const nb = a.k / a.blockSize, rowBytes = (a.k * a.bits) / 8, mid = 1 << (a.bits - 1);
    // The input rows, contiguous; then per weight row its integers minus the zero points (one row at a
    // time: the float weight never exists whole), a block sum per scale, as the WGSL form computes.
    const xs = new Float64Array(a.m * a.k);
    for (let m = 0; m < a.m; m++) for (let k = 0; k < a.k; k++) xs[m * a.k + k] = x.data[x.offset + m * x.strides[0]! + k * x.strides[1]!]!;
    if (cpuKernels() === 'wasm' && a.m * a.n * a.k > 0) {
      // The same arithmetic in wasm (src/kernels/wasm/int8-weights.ts), from dense copies of the block parameters.
      const at = (v: CpuView, r: number, c: number) => v.data[v.offset + r * v.strides[0]! + c * (v.strides[1] ?? 0)]!;
      const scales = new Float32Array(a.n * nb), zps = new Int32Array(a.n * nb).fill(mid), b = new Float32Array(a.n);
      for (let n = 0; n < a.n; n++) {
        for (let j = 0; j < nb; j++) {
          scales[n * nb + j] = at(s, n, j);
          if (z) zps[n * nb + j] = at(z, n, j);
        }
        if (bias) b[n] = bias.data[bias.offset + n * bias.strides[0]!]!;
      }
      wasmWeightOnlyMatmul(xs, (q.data as Uint8Array).subarray(q.offset), a.m, a.n, a.k, a.bits, a.blockSize, scales, zps, b, (out!.data as Float32Array).subarray(out!.offset));
      return;
    }
    const row = new Float64Array(a.k);
    for (let n = 0; n < a.n; n++) {
      for (let b = 0; b < nb; b++) {
        const zp = z ? z.data[z.offset + n * z.strides[0]! + b * z.strides[1]!]! : mid;
        for (let k = b * a.blockSize; k < (b + 1) * a.blockSize; k++) {
          const byte = q.data[q.offset + n * rowBytes + (a.bits === 8 ? k : k >> 1)]!;
          row[k] = (a.bits === 8 ? byte : (byte >> ((k & 1) * 4)) & 15) - zp;
        }
      }
      const scales = Array.from({ length: nb }, (_, b) => s.data[s.offset + n * s.strides[0]! + b * s.strides[1]!]!);
      const bn = bias ? bias.data[bias.offset + n * bias.strides[0]!]! : 0;
      for (let m = 0; m < a.m; m++) {
        let acc = 0;
        for (let b = 0, k = 0; b < nb; b++) {
          let block = 0;
          for (const end = k + a.blockSize; k < end; k++) block += xs[m * a.k + k]! * row[k]!;
          acc += Math.fround(scales[b]! * Math.fround(block));
        }
        out!.data[m * a.n + n] = acc + bn;
      }
    }
  },
  webgpu(inputs, a, [out], caps) {
    return wqMatmulWgsl(inputs, a, out!, caps);
  },
});

// Each invocation computes a 4×4 tile of outputs (4 rows of x by 4 weight rows): every weight it decodes serves 4
// rows and every x value 4 columns, so decoding and loads cost a quarter per multiply-add of one output per
// invocation. Edge tiles clamp their reads and skip their writes. Blocks are summed then scaled, as on the CPU.
const WQ_TILE = 4;

function wqMatmulWgsl(inputs: readonly GpuView[], a: WqAttrs, out: GpuView, caps: WebGpuCaps): WgslKernel {
  const [x, q, s] = inputs as [GpuView, GpuView, GpuView];
  const z = a.asymmetric ? inputs[3]! : null;
  const biasIn = a.hasBias ? (a.asymmetric ? 4 : 3) : -1;
  const tilesM = Math.ceil(a.m / WQ_TILE), tilesN = Math.ceil(a.n / WQ_TILE);
  const total = tilesM * tilesN;
  const g = grid('weightOnlyMatmul', total, 64, caps);
  const nb = a.k / a.blockSize, rowBytes = (a.k * a.bits) / 8;
  const cols = [0, 1, 2, 3];
  const weight = (j: number) => {
    const bi = a.bits === 8 ? `(${q.offset}u + n${j} * ${rowBytes}u + k)` : `(${q.offset}u + n${j} * ${rowBytes}u + (k >> 1u))`;
    const byte = loadElement('in1', q.dtype, bi, caps);
    return a.bits === 8 ? `f32(${byte})` : `f32((${byte} >> ((k & 1u) * 4u)) & 15)`;
  };
  const zp = (j: number) => (z ? `f32(${loadElement('in3', z.dtype, `(${z.offset}u + n${j} * ${z.strides[0]}u + b * ${z.strides[1]}u)`, caps)})` : `${1 << (a.bits - 1)}.0`);
  const xAt = (i: number) => `f32(${loadElement('in0', x.dtype, `(${x.offset}u + m${i} * ${x.strides[0]}u + k * ${x.strides[1]}u)`, caps)})`;
  const bias = biasIn >= 0 ? `vec4<f32>(${cols.map((j) => `in${biasIn}[${inputs[biasIn]!.offset}u + n${j} * ${inputs[biasIn]!.strides[0]}u]`).join(', ')})` : 'vec4<f32>(0.0)';
  const source = `${bindings(inputs.map((t) => t.dtype), ['float32'], caps)}

@compute @workgroup_size(64) fn main(${GRID_PARAMS}) {
  let e = ${g.index};
  if (e >= ${total}u) { return; }
  let mt = (e / ${tilesN}u) * ${WQ_TILE}u; let nt = (e % ${tilesN}u) * ${WQ_TILE}u;
${[0, 1, 2, 3].map((i) => `  let m${i} = min(mt + ${i}u, ${a.m - 1}u);`).join('\n')}
${cols.map((j) => `  let n${j} = min(nt + ${j}u, ${a.n - 1}u);`).join('\n')}
  var acc = array<vec4<f32>, 4>();
  for (var b = 0u; b < ${nb}u; b++) {
    let zp = vec4<f32>(${cols.map(zp).join(', ')});
    var block = array<vec4<f32>, 4>();
    for (var k = b * ${a.blockSize}u; k < (b + 1u) * ${a.blockSize}u; k++) {
      let w = vec4<f32>(${cols.map(weight).join(', ')}) - zp;
${[0, 1, 2, 3].map((i) => `      block[${i}] += ${xAt(i)} * w;`).join('\n')}
    }
    let scale = vec4<f32>(${cols.map((j) => `in2[${s.offset}u + n${j} * ${s.strides[0]}u + b * ${s.strides[1]}u]`).join(', ')});
    for (var i = 0u; i < 4u; i++) { acc[i] += scale * block[i]; }
  }
  let bias = ${bias};
  for (var i = 0u; i < 4u; i++) {
    let m = mt + i;
    if (m >= ${a.m}u) { break; }
    for (var j = 0u; j < 4u; j++) {
      if (nt + j < ${a.n}u) { out0[m * ${a.n}u + nt + j] = acc[i][j] + bias[j]; }
    }
  }
}`;
  return { workgroups: g.workgroups, source: withPrelude(source) };
}

/** Packs an integer tensor [N, K] (values 0..15, K even) two per byte along K: even k low, odd k high. */
function packNibbles(q: Tensor): Tensor {
  return tidy(() => {
    const k = q.shape[1]!;
    const lo = to(slice(q, 1, 0, k, 2), 'int32'), hi = to(slice(q, 1, 1, k, 2), 'int32');
    return to(add(lo, mul(hi, 16)), 'uint8');
  });
}

/**
 * Quantises a float weight [N, K] blockwise on its device (nothing is read back). Returns the packed
 * integers, the scales [N, K/bs] and, asymmetric, the zero points [N, K/bs] (uint8).
 */
export function quantizeBlockwise(w: Tensor, bits: 8 | 4, blockSize: number, symmetric: boolean): { packed: Tensor; scales: Tensor; zeroPoints: Tensor | null } {
  const [n, k] = w.shape as [number, number];
  const nb = k / blockSize, levels = (1 << bits) - 1, mid = 1 << (bits - 1);
  return tidy(() => {
    const blocks = reshape(contiguous(to(w, 'float32')), [n, nb, blockSize]);
    const lo = clamp(amin(blocks, 2, true), null, 0), hi = clamp(amax(blocks, 2, true), 0, null);
    let scale: Tensor, zp: Tensor;
    if (symmetric) {
      scale = clamp(div(maximum(neg(lo), hi), mid - 1), 2 ** -23, null);
      zp = fromHost('quantizeWeights', Int32Array.of(mid), [1, 1, 1], 'int32', w.device);
    } else {
      scale = clamp(div(sub(hi, lo), levels), 2 ** -23, null);
      zp = to(clamp(round(neg(div(lo, scale))), 0, levels), 'int32');
    }
    // Unsigned storage: quantise as quint8, then clamp into the `bits` range.
    const q8 = map('quantizeWeights', [blocks, reciprocal(scale), zp], quantizeExpr('float32', 'quint8'));
    const q = reshape(bits === 8 ? q8 : to(clamp(to(q8, 'int32'), 0, levels), 'uint8'), [n, k]);
    const packed = bits === 8 ? contiguous(q) : packNibbles(q);
    const scales = contiguous(reshape(scale, [n, nb]));
    const zeroPoints = symmetric ? null : to(reshape(zp, [n, nb]), 'uint8');
    return { packed, scales, zeroPoints };
  });
}

/**
 * The float32 weight [N, K] of blocks as quantizeBlockwise stores them: w = scale · (q − zero point), the nibbles
 * unpacked with float arithmetic (exact for 0..255), in elementwise ops the jit fuses. Used where no fused kernel
 * reads the blocks (weight-only convs): the float weight exists only for the call.
 */
export function dequantizeBlockwise(packed: Tensor, scales: Tensor, zeroPoints: Tensor | null, bits: 8 | 4, blockSize: number): Tensor {
  const [n, nb] = scales.shape as [number, number];
  return tidy(() => {
    const q = to(packed, 'float32');
    let values = q;
    if (bits === 4) {
      const hi = floor(div(q, 16));
      values = reshape(stack([sub(q, mul(hi, 16)), hi], -1), [n, nb * blockSize]);
    }
    const zp = zeroPoints ? reshape(to(zeroPoints, 'float32'), [n, nb, 1]) : 1 << (bits - 1);
    return reshape(mul(sub(reshape(values, [n, nb, blockSize]), zp), reshape(scales, [n, nb, 1])), [n, nb * blockSize]);
  });
}

/** A Linear layer whose weight is stored as 8- or 4-bit blocks with per-block scales (dequantised inside the matmul). */
export class WeightOnlyLinear extends Module {
  declare weightPacked: Tensor;
  declare weightScales: Tensor;
  declare weightZeroPoints: Tensor | null;
  declare bias: Tensor | null;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly bits: 8 | 4;
  readonly blockSize: number;

  constructor(linear: Linear, opts: { bits: 8 | 4; blockSize: number; symmetric: boolean }) {
    super();
    [this.outFeatures, this.inFeatures] = linear.weight.shape as [number, number];
    this.bits = opts.bits;
    this.blockSize = opts.blockSize;
    const { packed, scales, zeroPoints } = quantizeBlockwise(linear.weight, opts.bits, opts.blockSize, opts.symmetric);
    this.registerBuffer('weightPacked', packed);
    this.registerBuffer('weightScales', scales);
    this.registerBuffer('weightZeroPoints', zeroPoints);
    this.registerBuffer('bias', linear.bias ? to(linear.bias, 'float32') : null);
  }

  forward(x: Tensor): Tensor {
    const op = 'WeightOnlyLinear';
    checkInputs(op, [x]);
    if (x.ndim < 1 || x.shape[x.ndim - 1] !== this.inFeatures) throw new SinterError(op, `expected an input [..., ${this.inFeatures}], got ${x.describe()}`);
    const m = x.numel() / this.inFeatures;
    return tidy(() => {
      const x2 = reshape(contiguous(x), [m, this.inFeatures]);
      const inputs = [x2, this.weightPacked, this.weightScales, ...(this.weightZeroPoints ? [this.weightZeroPoints] : []), ...(this.bias ? [this.bias] : [])];
      const y = apply1(wqMatmulOp, inputs, { m, n: this.outFeatures, k: this.inFeatures, bits: this.bits, blockSize: this.blockSize, asymmetric: this.weightZeroPoints !== null, hasBias: this.bias !== null });
      return reshape(y, [...x.shape.slice(0, -1), this.outFeatures]);
    });
  }

  /** Bytes of the quantised weight as stored: packed integers, scales and zero points. */
  weightBytes(): number {
    return [this.weightPacked, this.weightScales, this.weightZeroPoints].reduce((sum, t) => sum + (t ? t.storage.byteLength : 0), 0);
  }

  override extraRepr(): string {
    return `in_features=${this.inFeatures}, out_features=${this.outFeatures}, bits=${this.bits}, block_size=${this.blockSize}, symmetric=${this.weightZeroPoints === null}`;
  }
}

/**
 * Weight-only quantisation: `bits` 8 or 4, one scale (and, asymmetric, zero point) per `blockSize` weights along
 * the input dim.
 * - An nn.Module without `exampleInputs`: every nn.Linear is replaced (in place; the model is returned, or the
 *   replacement when `model` is a Linear) by a WeightOnlyLinear; blockSize must divide its input features.
 * - A function of tensors, a model from loadOnnx, or a module with `exampleInputs`: on the traced graph (see
 *   src/quant/graph.ts). By default only linear/matmul weights (as MatMulNBits and transformers.js's q4); `layers`
 *   picks the kinds (`['conv2d', 'linear', 'matmul']` opts convs in). Linear/matmul weights run on the matmul that
 *   dequantises inside its loop when blockSize divides K; conv2d weights (and matmuls whose K it does not divide) are
 *   padded with zeros to whole blocks and dequantised per call into a transient float weight that the layer's own op reads.
 */
export function quantizeWeights(target: QuantTarget, opts: QuantizeWeightsOptions & GraphQuantizeOptions): QuantizedGraph;
export function quantizeWeights<M extends Module>(model: M, opts?: QuantizeWeightsOptions): M | WeightOnlyLinear;
export function quantizeWeights(model: QuantTarget, opts: QuantizeWeightsOptions = {}): Module | QuantizedGraph {
  const op = 'quantizeWeights';
  checkOptionNames(op, opts, ['bits', 'blockSize', 'symmetric', 'exampleInputs', 'layers']);
  const o = { bits: opts.bits ?? 4, blockSize: opts.blockSize ?? 32, symmetric: opts.symmetric ?? true };
  if (o.bits !== 8 && o.bits !== 4) throw new SinterError(op, `bits must be 8 or 4, got ${JSON.stringify(o.bits)}`);
  if (!Number.isInteger(o.blockSize) || o.blockSize < 1 || (o.bits === 4 && o.blockSize % 2 !== 0)) {
    throw new SinterError(op, `blockSize must be a positive integer${o.bits === 4 ? ' and even for 4 bits' : ''}, got ${JSON.stringify(o.blockSize)}`);
  }
  if (typeof o.symmetric !== 'boolean') throw new SinterError(op, `symmetric must be a boolean, got ${JSON.stringify(o.symmetric)}`);
  if (opts.exampleInputs !== undefined) return quantizeGraph(op, model, 'weights', { exampleInputs: opts.exampleInputs, layers: opts.layers ?? WEIGHT_ONLY_DEFAULT_LAYERS }, o);
  if (!(model instanceof Module)) {
    if (typeof model === 'function' || model instanceof OnnxModel) throw new SinterError(op, 'quantising a function or an ONNX model works on its traced graph: pass { exampleInputs } (the input tensors of one call)');
    throw new SinterError(op, `expects an nn.Module, a function of tensors or a model from loadOnnx, got ${model === null ? 'null' : typeof model}`);
  }
  if (opts.layers !== undefined) throw new SinterError(op, 'layers applies on the traced graph: pass exampleInputs too');
  const make = (l: Linear) => {
    if (l.inFeatures % o.blockSize !== 0) throw new SinterError(op, `blockSize ${o.blockSize} must divide the input features of Linear ${fmtShape(l.weight.shape)}`);
    return new WeightOnlyLinear(l, o);
  };
  if (model instanceof Linear) return make(model);
  replaceModules(model, (m) => (m instanceof Linear ? make(m) : null));
  return model;
}
