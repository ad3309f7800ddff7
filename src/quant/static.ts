import { SinterError } from '../errors.js';
import { add, mul, sub } from '../ops/binary.js';
import { relu, rsqrt } from '../ops/unary.js';
import { reshape } from '../ops/views.js';
import { synchronize as syncDevice } from '../backend/device.js';
import { hasBackend } from '../backend/backend.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import { Module } from '../nn/module.js';
import { Identity, Sequential } from '../nn/containers.js';
import { BatchNorm2d, Conv2d, Linear, ReLU } from '../nn/layers.js';
import { replaceModules } from './dynamic.js';
import { conv2d as qconv2d, linear as qlinear } from './functional.js';
import type { Observer } from './observer.js';
import { type QConfig, getDefaultQconfig } from './qconfig.js';
import { type QDType, type QuantizedTensor, quantizePerChannel, quantizePerTensor } from './qtensor.js';
import {
  type Batch, type ConvertOptions, type GraphCalibrateOptions, type GraphLayerSensitivity, type GraphPrepareOptions, type PreparedGraph, type QuantTarget,
  type QuantizedGraph, calibrateGraph, convertGraph, graphStateOf, prepareGraph, sensitivityGraph,
} from './graph.js';

// Static post-training quantisation of nn.Module models, as PyTorch's eager mode: `prepare` folds
// BatchNorm into the Conv2d before it, fuses a following ReLU, and wraps every Conv2d/Linear with
// observers of its input, output and weight; calling the prepared model calibrates them; `convert`
// replaces each wrapper with a layer that quantises its input, runs the int8 kernel (one integer GEMM
// with the requantisation epilogue and the fused ReLU) and dequantises its output. Models are changed
// in place (PyTorch's inplace=True): build or load a second copy to compare against.

/** A qconfig for every layer, or per layer type / dotted module name (null keeps that layer in float). */
export interface PrepareOptions {
  qconfig?: QConfig;
  /** PyTorch's QConfigMapping: by module name ('features.3') first, then by type ('Linear', 'Conv2d'). */
  qconfigMapping?: { byName?: Record<string, QConfig | null>; byType?: Partial<Record<'Linear' | 'Conv2d', QConfig | null>> };
}

type FloatLayer = Linear | Conv2d;

/** A Conv2d/Linear (with its fused ReLU) calibrating observers of its input, output and weight. */
export class ObservedLayer extends Module {
  declare layer: FloatLayer;
  readonly relu: boolean;
  readonly inputObserver: Observer;
  readonly outputObserver: Observer;
  readonly weightObserver: Observer;
  constructor(layer: FloatLayer, qconfig: QConfig, fusedRelu: boolean) {
    super();
    this.registerModule('layer', layer);
    this.relu = fusedRelu;
    this.inputObserver = qconfig.activation();
    this.outputObserver = qconfig.activation();
    this.weightObserver = qconfig.weight();
    this.weightObserver.forward(layer.weight);
  }
  /** While false (during `sensitivity`), the layer runs in float without recording anything. */
  observing = true;
  forward(x: Tensor): Tensor {
    if (this.observing) this.inputObserver.forward(x);
    const y = this.layer.forward(x);
    const out = this.relu ? relu(y) : y;
    if (out !== y) y.dispose();
    return this.observing ? this.outputObserver.forward(out) : out;
  }
  override extraRepr(): string {
    return `relu=${this.relu}`;
  }
}

/** The int8 form of a calibrated layer: quantise the input, integer conv/linear, dequantise the output. */
export class QuantizedLayer extends Module {
  readonly kind: 'Linear' | 'Conv2d';
  readonly weight: QuantizedTensor;
  declare bias: Tensor | null;
  readonly inScale: number;
  readonly inZeroPoint: number;
  readonly outScale: number;
  readonly outZeroPoint: number;
  readonly activationDType: QDType;
  readonly relu: boolean;
  private readonly convOptions: { stride: [number, number]; padding: [number, number]; dilation: [number, number]; groups: number } | null;

  constructor(observed: ObservedLayer) {
    super();
    const layer = observed.layer;
    this.kind = layer instanceof Conv2d ? 'Conv2d' : 'Linear';
    const op = `convert(${this.kind})`;
    const [is, iz] = hostQparams(observed.inputObserver);
    const [os, oz] = hostQparams(observed.outputObserver);
    [this.inScale, this.inZeroPoint, this.outScale, this.outZeroPoint] = [is[0]!, iz[0]!, os[0]!, oz[0]!];
    this.activationDType = observed.inputObserver.dtype;
    this.relu = observed.relu;
    const w = observed.weightObserver;
    const [ws, wz] = hostQparams(w);
    this.weight = w.qscheme.startsWith('perChannel')
      ? quantizePerChannel(layer.weight, ws, wz, 0, w.dtype)
      : quantizePerTensor(layer.weight, ws[0]!, wz[0]!, w.dtype);
    this.registerBuffer('bias', layer.bias);
    if (layer instanceof Conv2d) {
      const o = layer.options;
      const pair = (v: unknown, d: number): [number, number] => {
        if (v === undefined) return [d, d];
        if (typeof v === 'number') return [v, v];
        if (Array.isArray(v) && v.length === 2) return [v[0], v[1]];
        throw new SinterError(op, `padding ${JSON.stringify(v)} is not supported by the int8 conv2d yet (give numbers)`);
      };
      this.convOptions = { stride: pair(o.stride, 1), padding: pair(o.padding, 0), dilation: pair(o.dilation, 1), groups: o.groups ?? 1 };
    } else this.convOptions = null;
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      const qx = quantizePerTensor(x, this.inScale, this.inZeroPoint, this.activationDType);
      const out = { scale: this.outScale, zeroPoint: this.outZeroPoint, relu: this.relu };
      const qy = this.convOptions ? qconv2d(qx, this.weight, this.bias, { ...this.convOptions, ...out }) : qlinear(qx, this.weight, this.bias, out);
      qx.dispose();
      const y = qy.dequantize();
      qy.dispose();
      return y;
    });
  }

  override dispose(): void {
    this.weight.dispose();
    super.dispose();
  }

  /** Bytes of the int8 weight and the float bias. */
  weightBytes(): number {
    const w = this.weight.intRepr();
    const n = w.storage.byteLength + (this.bias ? this.bias.storage.byteLength : 0);
    w.dispose();
    return n;
  }

  override extraRepr(): string {
    return `${this.kind}, weight=${this.weight.dtype} ${this.weight.qscheme()}, input=(${this.inScale}, ${this.inZeroPoint}), output=(${this.outScale}, ${this.outZeroPoint}), relu=${this.relu}`;
  }
}

function hostQparams(o: Observer): [Float32Array, Int32Array] {
  const { scales, zeroPoints } = o.qparams();
  return [scales, zeroPoints];
}

/** Conv2d + BatchNorm2d (eval statistics) as one Conv2d, as PyTorch's fuse_conv_bn_eval; computed on the weights' device. */
export function fuseConvBn(conv: Conv2d, bn: BatchNorm2d): Conv2d {
  return tidy(() => {
    const invStd = rsqrt(add(bn.runningVar, bn.eps));
    const factor = bn.weight ? mul(bn.weight, invStd) : invStd;
    const w = mul(conv.weight, reshape(factor, [factor.shape[0]!, 1, 1, 1]));
    const b0 = conv.bias ?? sub(bn.runningMean, bn.runningMean);
    const b = add(mul(sub(b0, bn.runningMean), factor), bn.bias ?? 0);
    conv.registerParameter('weight', w);
    conv.registerParameter('bias', b);
    return conv;
  });
}

function qconfigFor(name: string, layer: FloatLayer, opts: PrepareOptions): QConfig | null {
  const m = opts.qconfigMapping;
  if (m?.byName && name in m.byName) return m.byName[name] ?? null;
  const type = layer instanceof Conv2d ? 'Conv2d' : 'Linear';
  if (m?.byType && type in m.byType) return m.byType[type] ?? null;
  return opts.qconfig ?? getDefaultQconfig('x86');
}

/**
 * Prepares a target for static quantisation. With `exampleInputs` (and always for functions of tensors and
 * models from loadOnnx) on its traced graph: see src/quant/graph.ts; the result is called like the target.
 * Without them, an nn.Module in eager mode (in place; returned): folds BatchNorm2d into a preceding Conv2d
 * and fuses a following ReLU inside Sequential containers, then wraps each Conv2d and Linear with
 * observers. Run calibration batches through the result, then `convert` it.
 */
export function prepare<M extends Module>(model: M, opts?: PrepareOptions): M;
export function prepare(target: QuantTarget, opts: GraphPrepareOptions): PreparedGraph;
export function prepare(model: QuantTarget, opts: PrepareOptions | GraphPrepareOptions = {}): Module | PreparedGraph {
  const op = 'prepare';
  if ('exampleInputs' in opts && opts.exampleInputs !== undefined) return prepareGraph(model, opts);
  if (!(model instanceof Module)) {
    if (typeof model === 'function' || (typeof model === 'object' && model !== null)) {
      throw new SinterError(op, 'quantising a function or an ONNX model works on its traced graph: pass { exampleInputs } (the input tensors of one call)');
    }
    throw new SinterError(op, `expects an nn.Module, a function of tensors or a model from loadOnnx, got ${typeof model}`);
  }
  model.eval();
  const names = new Map<Module, string>([...model.namedModules()].map(([n, m]) => [m, n]));
  // Fusions first: in each Sequential, Conv2d+BatchNorm2d folds, and a ReLU after a layer joins it.
  const fusedRelu = new Set<Module>();
  for (const parent of model.modules()) {
    if (!(parent instanceof Sequential)) continue;
    const fields = Object.keys(parent).filter((f) => (parent as unknown as Record<string, unknown>)[f] instanceof Module);
    const at = (i: number) => (parent as unknown as Record<string, Module>)[fields[i]!];
    for (let i = 0; i + 1 < fields.length; i++) {
      const cur = at(i), next = at(i + 1);
      if (cur instanceof Conv2d && next instanceof BatchNorm2d) {
        fuseConvBn(cur, next);
        Reflect.set(parent, fields[i + 1]!, new Identity());
      }
    }
    for (let i = 0; i + 1 < fields.length; i++) {
      const cur = at(i);
      let j = i + 1;
      while (j < fields.length && at(j) instanceof Identity) j++;
      if ((cur instanceof Conv2d || cur instanceof Linear) && j < fields.length && at(j) instanceof ReLU) {
        fusedRelu.add(cur);
        Reflect.set(parent, fields[j]!, new Identity());
      }
    }
  }
  replaceModules(model, (m) => {
    if (!(m instanceof Conv2d || m instanceof Linear)) return null;
    const qc = qconfigFor(names.get(m) ?? '', m, opts);
    return qc ? new ObservedLayer(m, qc, fusedRelu.has(m)) : null;
  });
  return model;
}

/** Waits until every observer of a prepared model has applied its GPU batches (needed before convert on WebGPU). */
export async function synchronize(prepared: Module | PreparedGraph): Promise<void> {
  const graph = graphStateOf(prepared);
  if (graph) return graph.synchronize();
  if (!(prepared instanceof Module)) throw new SinterError('synchronize', 'expects a model from sn.quant.prepare');
  if (hasBackend('webgpu')) await syncDevice('webgpu');
  for (const m of prepared.modules()) {
    if (m instanceof ObservedLayer) {
      await m.inputObserver.synchronize();
      await m.outputObserver.synchronize();
      await m.weightObserver.synchronize();
    }
  }
}

export interface CalibrateOptions {
  /** Called after every `every` batches (default 1) and after the last, with batches done and the total. */
  onProgress?: (done: number, total: number) => void;
  every?: number;
}

/**
 * Runs calibration batches (a tensor or an array of input tensors each) through a prepared model, frees
 * the outputs, reports progress, and resolves once every observer has applied them (ready for convert).
 */
export async function calibrate<P extends Module | PreparedGraph>(prepared: P, batches: Iterable<Batch>, opts: CalibrateOptions | GraphCalibrateOptions = {}): Promise<P> {
  if (graphStateOf(prepared)) return (await calibrateGraph(prepared as PreparedGraph, batches, opts)) as P;
  if (!(prepared instanceof Module)) throw new SinterError('calibrate', 'expects a model from sn.quant.prepare');
  const list = [...batches];
  const every = opts.every ?? 1;
  if (!Number.isInteger(every) || every < 1) throw new SinterError('calibrate', `every must be a positive integer, got ${every}`);
  for (let i = 0; i < list.length; i++) {
    const b = list[i]!;
    for (const o of outputsOf(prepared, Array.isArray(b) ? [...(b as Tensor[])] : [b as Tensor])) o.dispose();
    if ((i + 1) % every === 0 || i + 1 === list.length) {
      await synchronize(prepared); // bounds the readbacks in flight, and makes progress mean "observed"
      opts.onProgress?.(i + 1, list.length);
    }
  }
  await synchronize(prepared);
  return prepared;
}

/**
 * Replaces each calibrated layer of a prepared model with its int8 form: an eager-mode module in place
 * (returned); a prepared graph into a new callable running int8 GEMMs in a compiled plan, with
 * `keepFloat` naming layers to leave in float.
 */
export function convert<M extends Module>(prepared: M): M;
export function convert(prepared: PreparedGraph, opts?: ConvertOptions): QuantizedGraph;
export function convert(prepared: Module | PreparedGraph, opts: ConvertOptions = {}): Module | QuantizedGraph {
  if (graphStateOf(prepared)) return convertGraph(prepared as PreparedGraph, opts);
  if (!(prepared instanceof Module)) throw new SinterError('convert', `expects a model from sn.quant.prepare, got ${typeof prepared}`);
  let found = 0;
  replaceModules(prepared, (m) => {
    if (!(m instanceof ObservedLayer)) return null;
    found++;
    return new QuantizedLayer(m);
  });
  if (found === 0) throw new SinterError('convert', 'the model has no observed layers: call sn.quant.prepare(model) and calibrate it first');
  return prepared;
}

export interface LayerSensitivity {
  /** The layer's dotted module name. */
  name: string;
  /** SQNR (dB) of the model's outputs with only this layer quantised, against the float model: lower is worse. */
  sqnrDb: number;
  maxAbsError: number;
}

function outputsOf(model: Module, inputs: Tensor[]): Tensor[] {
  const out = (model.forward as (...x: Tensor[]) => unknown)(...inputs);
  return Array.isArray(out) ? (out as Tensor[]) : [out as Tensor];
}

/**
 * Ranks the calibrated layers of a prepared model by the output error that quantising each alone adds
 * (PyTorch's numeric-suite idea): worst first. Keep the worst few in float with a qconfig mapping
 * (`byName: { [name]: null }`) to trade size and speed for accuracy. Observers record nothing meanwhile.
 */
export async function sensitivity(prepared: Module, batches: readonly Batch[]): Promise<LayerSensitivity[]>;
export async function sensitivity(prepared: PreparedGraph, batches: readonly Batch[], opts?: { onProgress?: (done: number, total: number) => void }): Promise<GraphLayerSensitivity[]>;
export async function sensitivity(prepared: Module | PreparedGraph, batches: readonly Batch[], opts: { onProgress?: (done: number, total: number) => void } = {}): Promise<LayerSensitivity[] | GraphLayerSensitivity[]> {
  if (graphStateOf(prepared)) return sensitivityGraph(prepared as PreparedGraph, batches, opts);
  if (!(prepared instanceof Module)) throw new SinterError('sensitivity', 'expects a model from sn.quant.prepare');
  await synchronize(prepared);
  const layers: [string, ObservedLayer, Module, string][] = [];
  for (const [path, parent] of prepared.namedModules()) {
    for (const field of Object.keys(parent)) {
      const child = (parent as unknown as Record<string, unknown>)[field];
      if (child instanceof ObservedLayer) {
        const name = [...parent.namedChildren()].find(([, m]) => m === child)?.[0] ?? field;
        layers.push([path ? `${path}.${name}` : name, child, parent, field]);
      }
    }
  }
  if (layers.length === 0) throw new SinterError('sensitivity', 'the model has no observed layers: call sn.quant.prepare(model) and calibrate it first');
  const list = batches.map((b) => (Array.isArray(b) ? [...(b as Tensor[])] : [b as Tensor]));
  for (const [, l] of layers) l.observing = false;
  try {
    const reference: Float32Array[][] = [];
    for (const inputs of list) {
      const outs = outputsOf(prepared, inputs);
      reference.push((await Promise.all(outs.map((o) => o.data()))) as Float32Array[]);
      for (const o of outs) o.dispose();
    }
    const result: LayerSensitivity[] = [];
    for (const [name, layer, parent, field] of layers) {
      const quantized = new QuantizedLayer(layer);
      Reflect.set(parent, field, quantized);
      let signal = 0, noise = 0, maxAbs = 0;
      try {
        for (let b = 0; b < list.length; b++) {
          const outs = outputsOf(prepared, list[b]!);
          const values = await Promise.all(outs.map((o) => o.data()));
          values.forEach((v, i) => v.forEach((q, k) => {
            const r = reference[b]![i]![k]!;
            signal += r * r;
            noise += (r - q) * (r - q);
            maxAbs = Math.max(maxAbs, Math.abs(r - q));
          }));
          for (const o of outs) o.dispose();
        }
      } finally {
        Reflect.set(parent, field, layer);
        quantized.weight.dispose();
      }
      result.push({ name, sqnrDb: noise === 0 ? Infinity : 10 * Math.log10(signal / noise), maxAbsError: maxAbs });
    }
    return result.sort((a, b) => a.sqnrDb - b.sqnrDb);
  } finally {
    for (const [, l] of layers) l.observing = true;
  }
}
