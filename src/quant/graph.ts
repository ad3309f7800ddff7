import { SinterError, fmtShape } from '../errors.js';
import { type Graph, type Node, type Use, type Value } from '../jit/graph.js';
import { type JitReport, type Jitted, jit } from '../jit/jit.js';
import { eliminateCommonSubexpressions } from '../jit/passes/cse.js';
import { eliminateDeadCode } from '../jit/passes/dce.js';
import { foldBatchNorm } from '../jit/passes/fold-batchnorm.js';
import { foldConstants } from '../jit/passes/fold-constants.js';
import { constantTensor } from '../jit/passes/util.js';
import { Trace, withTrace } from '../jit/trace.js';
import { synchronize as syncDevice } from '../backend/device.js';
import { hasBackend } from '../backend/backend.js';
import { div, mul } from '../ops/binary.js';
import { map } from '../ops/elementwise.js';
import { pad } from '../ops/movement.js';
import { apply, apply1 } from '../ops/op.js';
import { reciprocal } from '../ops/unary.js';
import { contiguous, expand, reshape, slice, to, transpose } from '../ops/views.js';
import { fromHost } from '../tensor/creation.js';
import { keep } from '../tensor/memory.js';
import { tidy } from '../tensor/scope.js';
import { Tensor } from '../tensor/tensor.js';
import { Module } from '../nn/module.js';
import { OnnxModel } from '../io/onnx/model.js';
import { type ConvGeometry, type QGemmAttrs, qgemm } from './gemm.js';
import { dynamicQparams, quantizeRowsSymmetric } from './dynamic.js';
import { dequantizeBlockwise, quantizeBlockwise, wqMatmulOp } from './weights.js';
import { HistogramObserver, MinMaxObserver, type Observer } from './observer.js';
import { numel } from '../tensor/shape.js';
import { type QConfig, getDefaultQconfig } from './qconfig.js';
import { type QDType, QRANGE, STORAGE_DTYPE, dequantizeExpr, quantizeExpr, quantizePerChannel, quantizePerTensor, splitScale } from './qtensor.js';

// Static post-training quantisation on the JIT's graph (as PyTorch's FX/PT2E flows), one implementation
// for nn.Modules, functions of tensors and ONNX models: each is traced into the graph IR at the example
// inputs' signature, BatchNorm is folded into the conv/linear before it (the jit's passes), and every
// conv2d (grouped and depthwise too), linear and matmul whose weight is a constant becomes a layer.
// Calibration runs the float graph, compiled, and feeds one observer per value a layer reads. `convert`
// interprets the graph again under `jit`, each layer as one integer GEMM (src/quant/gemm.ts) whose
// epilogue requantises straight into the next layer's input (a ReLU after it fused as the lower clamp),
// or writes float32 where no layer reads the result: quantise and dequantise appear only at the borders
// of int8 regions, and ops without an int8 kernel (softmax, layerNorm, hardswish, adds…) run in float32.
// Dynamic and weight-only quantisation (`quantizeGraph`, behind quantizeDynamic/quantizeWeights with
// exampleInputs) reuse the tracing, the layer discovery and the interpreter: only the layers' quantised form
// differs (a QLayer's mode), and nothing is calibrated.

type OpNode = Extract<Node, { kind: 'op' }>;

/** What can be quantised: an nn.Module, a function of tensors, or a model from loadOnnx. */
export type QuantTarget = Module | OnnxModel | ((...inputs: Tensor[]) => unknown);

/** The graph ops that become integer GEMMs. */
export type LayerKind = 'conv2d' | 'linear' | 'matmul';

/**
 * PyTorch's QConfigMapping: a qconfig by layer name first (a module path such as 'features.3' for nn.Modules,
 * else the layer's graph name such as 'conv2d_7'), then by type ('conv2d' | 'linear' | 'matmul', or the module
 * names 'Conv2d' | 'Linear'), then `global`; `null` keeps a layer in float.
 */
export interface QConfigMapping {
  global?: QConfig | null;
  byType?: Partial<Record<LayerKind | 'Conv2d' | 'Linear', QConfig | null>>;
  byName?: Record<string, QConfig | null>;
}

export interface GraphPrepareOptions {
  /** One qconfig for every layer (default getDefaultQconfig('x86')). */
  qconfig?: QConfig;
  qconfigMapping?: QConfigMapping;
  /** Inputs of the target's signature (shapes, dtypes, device); calibration batches must share it. */
  exampleInputs: Tensor | readonly Tensor[];
}

/** A layer of a prepared graph: a conv2d/linear/matmul with a constant weight. */
export interface GraphLayer {
  readonly name: string;
  readonly kind: LayerKind;
  /** The weight as the GEMM reads it: [out, in/groups, kh, kw] for convs, [out, in] otherwise. */
  readonly weightShape: readonly number[];
  readonly outputShape: readonly number[];
  /** null: kept in float by the qconfig mapping. */
  readonly qconfig: QConfig | null;
}

interface LayerState extends GraphLayer {
  readonly node: OpNode;
  readonly input: Use;
  /** The float weight [N, …] (a transposed copy for matmul's [K, N] operand) and bias. */
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  readonly weightObserver: Observer | null;
  /** A ReLU that reads only this layer's output: fused as the epilogue's lower clamp when the output stays int8. */
  readonly relu: OpNode | null;
}

export interface GraphCalibrateOptions {
  /** Called after every `every` batches (default 1) and after the last, with batches done and the total. */
  onProgress?: (done: number, total: number) => void;
  every?: number;
}

/** A batch of inputs: one tensor or the target's input tensors in order. */
export type Batch = Tensor | readonly Tensor[];

const asList = (b: Batch): Tensor[] => (b instanceof Tensor ? [b] : [...b]);

/** The tensors of a result in order, and a template to rebuild its structure (as jit returns it). */
function flatten(op: string, tree: unknown, out: Tensor[]): unknown {
  if (tree instanceof Tensor) return out.push(tree) - 1;
  if (Array.isArray(tree)) return tree.map((t) => flatten(op, t, out));
  if (tree && typeof tree === 'object') return Object.fromEntries(Object.entries(tree).map(([k, v]) => [k, flatten(op, v, out)]));
  throw new SinterError(op, `the target must return tensors (or arrays/objects of them), got ${tree === null ? 'null' : typeof tree}`);
}
function unflatten(template: unknown, values: readonly Tensor[]): unknown {
  if (typeof template === 'number') return values[template];
  if (Array.isArray(template)) return template.map((t) => unflatten(t, values));
  return Object.fromEntries(Object.entries(template as object).map(([k, v]) => [k, unflatten(v, values)]));
}

/** The target as a synchronous function of tensors, and where names of layers come from. */
function targetFunction(op: string, target: QuantTarget): { fn: (...x: Tensor[]) => unknown; kind: 'module' | 'onnx' | 'function'; paramNames: Map<unknown, string> } {
  if (target instanceof Module) {
    target.eval();
    const names = new Map<unknown, string>();
    for (const [n, p] of target.namedParameters()) names.set(p.storage, n.replace(/\.weight$/, ''));
    return { fn: (...x) => (target.forward as (...a: Tensor[]) => unknown)(...x), kind: 'module', paramNames: names };
  }
  if (target instanceof OnnxModel) return { fn: target.traceable(), kind: 'onnx', paramNames: new Map() };
  if (typeof target === 'function') return { fn: target, kind: 'function', paramNames: new Map() };
  throw new SinterError(op, `expects an nn.Module, a function of tensors or a model from loadOnnx, got ${target === null ? 'null' : typeof target}`);
}

/** Traces `fn` at `inputs` and runs the jit's graph passes (dead code, CSE, constant and BatchNorm folding). */
function traceGraph(op: string, fn: (...x: Tensor[]) => unknown, inputs: readonly Tensor[], names: Map<unknown, string>): { graph: Graph; template: unknown; names: Map<unknown, string> } {
  const device = inputs[0]!.device;
  const trace = new Trace(device);
  let template: unknown;
  // Layer names by the op's attrs object, which the BatchNorm fold carries over to the folded node.
  const layerNames = new Map<unknown, string>();
  let graph: Graph;
  try {
    graph = tidy(() =>
      withTrace(trace, () => {
        const symbolic = inputs.map((t, i) => trace.input(t, i));
        const outs: Tensor[] = [];
        template = flatten(op, fn(...symbolic), outs);
        return trace.finish(outs);
      }),
    );
  } catch (e) {
    for (const t of trace.constantTensors()) t.dispose();
    throw e;
  }
  for (const n of graph.nodes) {
    if (n.kind !== 'op' || !n.inputs[1]) continue;
    const w = n.inputs[1].value.node;
    const name = w.kind === 'constant' ? names.get(w.tensor.storage) : undefined;
    if (name !== undefined) layerNames.set(n.attrs, name);
  }
  eliminateDeadCode(graph);
  eliminateCommonSubexpressions(graph);
  foldConstants(graph);
  foldBatchNorm(graph);
  eliminateDeadCode(graph);
  const random = graph.nodes.find((n) => n.kind === 'random');
  if (random) {
    freeGraph(graph);
    throw new SinterError(op, `the target draws random numbers (${random.kind === 'random' ? random.label : ''}); quantisation needs a deterministic function`);
  }
  return { graph, template, names: layerNames };
}

function freeGraph(g: Graph): void {
  for (const n of g.nodes) if (n.kind === 'constant') n.tensor.dispose();
}

const constant = (u: Use | undefined): boolean => u !== undefined && u.value.node.kind === 'constant';

/**
 * The layer kind of a node, when it is a conv2d/linear/matmul with a constant weight that quantisation can take:
 * float32 (static) or, with `float16`, also float16 ones (dynamic and weight-only layers compute in float32 and
 * cast back, so models loaded with dtype 'float16' quantise too).
 */
function layerKind(n: Node, float16: boolean): LayerKind | null {
  if (n.kind !== 'op') return null;
  const attrs = n.attrs as { epilogue?: unknown };
  const dtype = n.outputs[0]!.dtype;
  if (attrs?.epilogue !== undefined || !(dtype === 'float32' || (float16 && dtype === 'float16'))) return null;
  const [x, w, b] = n.inputs;
  if (!x || x.value.dtype !== dtype || !constant(w) || w!.value.dtype !== dtype || (b !== undefined && !constant(b))) return null;
  if (n.op.name === 'conv2d' && x.view.shape.length === 4) return 'conv2d';
  if (n.op.name === 'linear' && x.view.shape.length >= 1) return 'linear';
  if (n.op.name === 'matmul' && n.inputs.length === 2 && w!.view.shape.length === 2 && x.view.shape.length >= 2) return 'matmul';
  return null;
}

/** `name`'s qconfig; `base` is the layer's module path when one weight serves several layers (named `base`, `base_1`, …). */
function qconfigFor(name: string, base: string, kind: LayerKind, opts: GraphPrepareOptions): QConfig | null {
  const m = opts.qconfigMapping;
  if (m?.byName && name in m.byName) return m.byName[name] ?? null;
  if (m?.byName && base in m.byName) return m.byName[base] ?? null;
  const moduleType = kind === 'conv2d' ? 'Conv2d' : kind === 'linear' ? 'Linear' : null;
  if (m?.byType && kind in m.byType) return m.byType[kind] ?? null;
  if (m?.byType && moduleType && moduleType in m.byType) return m.byType[moduleType] ?? null;
  if (m && 'global' in m) return m.global ?? null;
  return opts.qconfig ?? getDefaultQconfig('x86');
}

/**
 * A target traced for static quantisation: call it like the target's function (its input tensors in order; for
 * ONNX models also `run(feeds)`) to run it in float32 and feed the observers; then `convert` it.
 */
export interface PreparedGraph {
  (...inputs: Tensor[]): unknown;
  /** The same call for ONNX-style feeds by input name (outputs by name). */
  run(feeds: Readonly<Record<string, Tensor>>): Promise<Record<string, Tensor>>;
  readonly kind: 'module' | 'onnx' | 'function';
  /** The optimised float graph (BatchNorm folded). */
  readonly graph: Graph;
  readonly layers: readonly GraphLayer[];
  /** Frees the graph's constants, the copies of the weights and the compiled plans. */
  dispose(): void;
}

export interface ConvertOptions {
  /** Layer names to keep in float (as a `null` in the qconfig mapping, without calibrating again). */
  keepFloat?: readonly string[];
}

/**
 * A quantised target, called like it (ONNX models: also `run(feeds)` → outputs by name) and run in a compiled plan:
 * the int8 form of a prepared graph (`convert`, mode 'static'), or a target quantised by `quantizeDynamic` /
 * `quantizeWeights` with exampleInputs (mode 'dynamic' / 'weights').
 */
export interface QuantizedGraph {
  (...inputs: Tensor[]): unknown;
  run(feeds: Readonly<Record<string, Tensor>>): Promise<Record<string, Tensor>>;
  readonly mode: 'static' | 'dynamic' | 'weights';
  /** The prepared graph it was converted from (null for dynamic and weight-only quantisation, which keep no float weights). */
  readonly prepared: PreparedGraph | null;
  /** Names of the quantised layers (int8 GEMMs; weight-only blocks for mode 'weights'). */
  readonly quantizedLayers: readonly string[];
  /** Bytes of the constants the int8 program reads (int8 weights, float biases, every constant the float ops read). */
  modelBytes(): number;
  /** The jit's report of the int8 plan (its kernels: `qgemm` ones are the int8 layers). */
  report(): JitReport;
  dispose(): void;
}

/** Activation quantisation parameters of one value, with the device tensors the quantise/dequantise kernels read. */
interface ActParams {
  scale: number;
  zeroPoint: number;
  dtype: QDType;
  invScale: Tensor;
  zp: Tensor;
  scaleParts: Tensor[];
}

/**
 * The quantised form of one layer, one of:
 * - 'static': an int8 GEMM with calibrated activation parameters (int8 or float32 out);
 * - 'dynamic': an int8 GEMM whose input is quantised per call from its own min/max, float32 out;
 * - 'weights': weight-only blocks, dequantised inside the matmul (or, for convs and matmuls whose K the blocks do
 *   not divide, into a transient float weight that the layer's own op reads), float compute.
 */
type QLayer = StaticQLayer | DynamicQLayer | WeightOnlyQLayer;

/** The int8 form of one calibrated layer: its GEMM's constant inputs. */
interface StaticQLayer {
  mode: 'static';
  state: LayerState;
  weight: Tensor;
  zpW: Tensor;
  /** sIn·sW per channel (float32 output) or sIn·sW/sOut (int8 output). */
  mult: Tensor;
  offset: Tensor;
  zpIn: Tensor;
  zpOut: Tensor | null;
  inParams: ActParams;
  /** null: the GEMM writes float32 (no int8 layer reads the result). */
  outParams: ActParams | null;
  /** The value this GEMM produces: the fused ReLU's output when it runs in the epilogue. */
  produces: Value;
}

/** A layer quantised dynamically (PyTorch's quantize_dynamic; ConvInteger-style for convs). */
interface DynamicQLayer {
  mode: 'dynamic';
  state: LayerState;
  /** int8 [N, K], symmetric per output channel. */
  weight: Tensor;
  /** The weight's zero point 0, one int32 read through a broadcast view [N]. */
  zpW: Tensor;
  /** float32 [N] weight scales; the GEMM's multiplier is the input's scale times these. */
  wScale: Tensor;
  /** float32 [N] (zeros when the layer has none). */
  bias: Tensor;
  produces: Value;
}

/** A layer with weight-only blocks (ONNX's MatMulNBits layout). */
interface WeightOnlyQLayer {
  mode: 'weights';
  state: LayerState;
  /** uint8 [N, Kp·bits/8]: Kp is K rounded up to a whole number of blocks (zeros in the padding). */
  packed: Tensor;
  /** float32 [N, Kp/blockSize]. */
  scales: Tensor;
  /** uint8 [N, Kp/blockSize] when asymmetric, else null (zero point 2^(bits−1)). */
  zeroPoints: Tensor | null;
  bias: Tensor | null;
  bits: 8 | 4;
  blockSize: number;
  /** Runs on the fused weight-only matmul kernel (linear/matmul with K a multiple of blockSize). */
  fused: boolean;
  produces: Value;
}

/** The device tensors a quantised layer owns (freed with it). */
function layerTensors(l: QLayer): Tensor[] {
  if (l.mode === 'static') return [l.weight, l.zpW, l.mult, l.offset, l.zpIn, ...(l.zpOut ? [l.zpOut] : [])];
  if (l.mode === 'dynamic') return [l.weight, l.zpW, l.wScale, l.bias];
  return [l.packed, l.scales, ...(l.zeroPoints ? [l.zeroPoints] : []), ...(l.bias ? [l.bias] : [])];
}

/** Bytes a quantised layer stores: its weight as packed, its scales, zero points and bias (static: the shared input/output zero points aside). */
function layerBytes(l: QLayer): number {
  const list = l.mode === 'static' ? [l.weight, l.offset, l.zpW, l.mult] : layerTensors(l);
  return list.reduce((sum, t) => sum + t.storage.byteLength, 0);
}

/** The quantised layers of a program and the activation parameters the static ones share. */
interface QLayers {
  layers: Map<OpNode, QLayer>;
  acts: Map<number, ActParams>;
}
type LayerBuilder = (state: GraphState, enabled: ReadonlySet<LayerState>) => QLayers;

/** A traced target: its optimised float graph, the structure of its result and where its layers' names come from. */
interface TracedTarget {
  graph: Graph;
  template: unknown;
  kind: 'module' | 'onnx' | 'function';
  names: Map<unknown, string>;
  inputNames: readonly string[] | null;
  outputNames: readonly string[] | null;
}

/** Traces `target` at `exampleInputs` (checked) for `op`. */
function traceTarget(op: string, target: QuantTarget, exampleInputs: Tensor | readonly Tensor[] | undefined): TracedTarget {
  const inputs = exampleInputs instanceof Tensor ? [exampleInputs] : [...(exampleInputs ?? [])];
  if (inputs.length === 0 || !inputs.every((t) => t instanceof Tensor)) throw new SinterError(op, 'needs exampleInputs: a tensor or the target\'s input tensors, to trace it');
  if (inputs.some((t) => t.device !== inputs[0]!.device)) throw new SinterError(op, `all example inputs must be on one device, got ${inputs.map((t) => t.device).join(', ')}`);
  const { fn, kind, paramNames } = targetFunction(op, target);
  const { graph, template, names } = traceGraph(op, fn, inputs, paramNames);
  const onnx = target instanceof OnnxModel ? target : null;
  return { graph, template, kind, names, inputNames: onnx ? onnx.inputs.map((i) => i.name) : null, outputNames: onnx ? onnx.outputs.map((o) => o.name) : null };
}

/** Chooses each layer's qconfig (static quantisation; null keeps it float) from its name, its base name and kind. */
type QconfigChooser = (name: string, base: string, kind: LayerKind) => QConfig | null;

class GraphState {
  readonly layers: LayerState[] = [];
  /** One observer per value that a layer reads, by value id (static quantisation only). */
  readonly observers = new Map<number, Observer>();
  readonly users: Map<number, { node: Node | null; use: Use }[]>;
  /** The float graph compiled with the observed values as extra outputs (static quantisation only). */
  readonly observed: Jitted<Tensor[], Tensor[]> | null = null;
  private floatPlan: Jitted<Tensor[], Tensor[]> | null = null;
  readonly graph: Graph;
  readonly template: unknown;
  readonly kind: 'module' | 'onnx' | 'function';
  readonly inputNames: readonly string[] | null;
  readonly outputNames: readonly string[] | null;

  /**
   * Finds the layers of `traced`. With `qconfigOf` (static quantisation) each gets its qconfig, a weight observer
   * and an observer of its input; without (dynamic and weight-only quantisation) layers carry no qconfig and
   * nothing is observed.
   */
  constructor(traced: TracedTarget, qconfigOf: QconfigChooser | null) {
    const { graph, names } = traced;
    this.graph = graph;
    this.template = traced.template;
    this.kind = traced.kind;
    this.inputNames = traced.inputNames;
    this.outputNames = traced.outputNames;
    this.users = graph.users();
    const counts = new Map<LayerKind, number>();
    // A weight that several layers read (a module called twice, q/k/v slices of one in_proj_weight) names
    // them base, base_1, base_2, … in graph order, as PyTorch's FX names repeated calls.
    const uses = new Map<string, number>();
    for (const n of graph.nodes) {
      const kind = layerKind(n, qconfigOf === null);
      if (!kind || n.kind !== 'op') continue;
      const ordinal = counts.get(kind) ?? 0;
      counts.set(kind, ordinal + 1);
      const base = names.get(n.attrs) ?? `${kind}_${ordinal}`;
      const use = uses.get(base) ?? 0;
      uses.set(base, use + 1);
      const name = use ? `${base}_${use}` : base;
      const qconfig = qconfigOf ? qconfigOf(name, base, kind) : null;
      const [x, w, b] = n.inputs as [Use, Use, Use | undefined];
      const weight = keep(tidy(() => {
        const t = constantTensor(w);
        return kind === 'matmul' ? contiguous(transpose(t, 0, 1)) : contiguous(t);
      }));
      const bias = b ? keep(tidy(() => contiguous(constantTensor(b)))) : null;
      const after = this.users.get(n.outputs[0]!.id) ?? [];
      const only = after.length === 1 ? after[0]!.node : null;
      const relu = only?.kind === 'op' && only.op.name === 'map' && (only.attrs as { name?: string }).name === 'relu' && only.inputs.length === 1 && after[0]!.use.view.shape.join() === n.outputs[0]!.shape.join() ? only : null;
      const weightObserver = qconfig ? qconfig.weight() : null;
      weightObserver?.forward(weight);
      this.layers.push({ name, kind, weightShape: weight.shape, outputShape: n.outputs[0]!.shape, qconfig, node: n, input: x, weight, bias, weightObserver, relu });
      if (qconfig && !this.observers.has(x.value.id)) this.observers.set(x.value.id, activationObserver(qconfig, x.value));
    }
    if (!qconfigOf) return;
    if (this.layers.length === 0) throw new SinterError('quant.prepare', 'found no conv2d, linear or matmul with a constant weight to quantise in the traced graph');
    const tapped = [...this.observers.keys()];
    this.observed = jit((...x: Tensor[]) => {
      const { outs, taps } = interpret(this, x, null, tapped);
      return [...outs, ...taps];
    });
  }

  /** The float graph, compiled (the reference of `sensitivity`). */
  runFloat(inputs: Tensor[]): Tensor[] {
    this.floatPlan ??= jit((...x: Tensor[]) => interpret(this, x, null, []).outs);
    return this.floatPlan(...inputs);
  }

  /** Runs the float graph and feeds every observer. */
  observe(inputs: Tensor[]): Tensor[] {
    if (!this.observed) throw new SinterError('quant', 'internal: only a graph prepared for static quantisation observes');
    const all = this.observed(...inputs);
    const nOut = all.length - this.observers.size;
    let i = nOut;
    for (const obs of this.observers.values()) {
      const t = all[i++]!;
      obs.forward(t);
      t.dispose();
    }
    return all.slice(0, nOut);
  }

  async synchronize(): Promise<void> {
    if (hasBackend('webgpu')) await syncDevice('webgpu');
    for (const o of this.observers.values()) await o.synchronize();
    for (const l of this.layers) await l.weightObserver?.synchronize();
  }

  /**
   * Frees the float weights of `quantised` layers: the copies made at discovery and the graph's constants that
   * only they read (the plan that runs them reads their quantised form; the float graph can no longer run).
   */
  releaseFloatWeights(quantised: ReadonlySet<Node>): void {
    for (const l of this.layers) {
      if (!quantised.has(l.node)) continue;
      l.weight.dispose();
      l.bias?.dispose();
    }
    for (const n of this.graph.nodes) {
      if (n.kind !== 'constant') continue;
      const users = this.users.get(n.outputs[0]!.id) ?? [];
      if (users.length > 0 && users.every(({ node, use }) => node !== null && quantised.has(node) && node.inputs[0] !== use)) n.tensor.dispose();
    }
  }

  dispose(): void {
    this.observed?.dispose();
    this.floatPlan?.dispose();
    for (const l of this.layers) {
      l.weight.dispose();
      l.bias?.dispose();
    }
    freeGraph(this.graph);
  }
}

/**
 * The qconfig's activation observer for `v`, except for HistogramObservers:
 * - one of a value with fewer elements than its bins (the squeeze-excitation vectors of mobile nets: a few dozen
 *   values a batch) becomes a MinMaxObserver of the same dtype, qscheme and range: a histogram of so few values
 *   has no shape for the L2 search to fit;
 * - the others count over the observed range (`truncateEdges: false`, as PyTorch 2.0 does), not 1.13's range
 *   truncated to integers: that count drops the values outside [trunc(min), trunc(max)] and stretches the rest
 *   over [min, max], and the L2 search then fits a histogram that is not the data's (on bench/quant-ocr.mjs's
 *   glyph pages, PP-OCR cls's median probability error 7.2e-2 → 2.8e-2 and rec's CER 0.92 → 0.79).
 */
function activationObserver(qconfig: QConfig, v: Value): Observer {
  const obs = qconfig.activation();
  if (!(obs instanceof HistogramObserver)) return obs;
  if (numel(v.shape) < obs.bins) return new MinMaxObserver({ dtype: obs.dtype, qscheme: obs.qscheme, reduceRange: obs.reduceRange, eps: obs.eps });
  return obs.truncateEdges ? new HistogramObserver({ ...obs.options, truncateEdges: false }) : obs;
}

const STATES = new WeakMap<object, GraphState>();

/** The shared state of a prepared or converted graph, or null when `x` is neither. */
export function graphStateOf(x: unknown): GraphState | null {
  return (typeof x === 'function' || typeof x === 'object') && x !== null ? (STATES.get(x) ?? null) : null;
}

/** Inputs as a list in the target's order, from a call's arguments or ONNX feeds. */
function feedList(state: GraphState, feeds: Readonly<Record<string, Tensor>>): Tensor[] {
  if (!state.inputNames) throw new SinterError('quant', 'run(feeds) is for ONNX models; call the prepared target with its input tensors');
  return state.inputNames.map((n) => {
    const t = feeds[n];
    if (!(t instanceof Tensor)) throw new SinterError('quant', `missing input '${n}' (the model's inputs are ${state.inputNames!.join(', ')})`);
    return t;
  });
}

/**
 * Prepares `target` for static quantisation on its traced graph (see the notes at the top of this file). The
 * target itself is not changed. Call the result on calibration batches (or `calibrateGraph`), then `convertGraph`.
 */
export function prepareGraph(target: QuantTarget, opts: GraphPrepareOptions): PreparedGraph {
  const traced = traceTarget('quant.prepare', target, opts.exampleInputs);
  const { graph, kind } = traced;
  let state: GraphState;
  try {
    state = new GraphState(traced, (name, base, k) => qconfigFor(name, base, k, opts));
  } catch (e) {
    freeGraph(graph);
    throw e;
  }
  const call = (...x: Tensor[]) => unflatten(state.template, state.observe(x));
  const prepared = Object.assign(call, {
    run: async (feeds: Readonly<Record<string, Tensor>>) => call(...feedList(state, feeds)) as Record<string, Tensor>,
    kind,
    graph,
    layers: state.layers.map(({ name, kind: k, weightShape, outputShape, qconfig }) => ({ name, kind: k, weightShape, outputShape, qconfig })),
    dispose: () => state.dispose(),
  }) as PreparedGraph;
  STATES.set(prepared, state);
  return prepared;
}

function requireState(op: string, prepared: unknown): GraphState {
  const s = graphStateOf(prepared);
  if (!s) throw new SinterError(op, 'expects a target prepared by sn.quant.prepare(target, { exampleInputs })');
  return s;
}

/** Runs calibration batches through a prepared graph, frees the outputs, reports progress, and waits for every observer. */
export async function calibrateGraph(prepared: PreparedGraph, batches: Iterable<Batch>, opts: GraphCalibrateOptions = {}): Promise<PreparedGraph> {
  const state = requireState('quant.calibrate', prepared);
  const list = [...batches];
  const every = opts.every ?? 1;
  if (!Number.isInteger(every) || every < 1) throw new SinterError('quant.calibrate', `every must be a positive integer, got ${every}`);
  for (let i = 0; i < list.length; i++) {
    for (const t of state.observe(asList(list[i]!))) t.dispose();
    if ((i + 1) % every === 0 || i + 1 === list.length) {
      await state.synchronize();
      opts.onProgress?.(i + 1, list.length);
    }
  }
  await state.synchronize();
  return prepared;
}

function actParams(op: string, obs: Observer, device: Tensor['device']): ActParams {
  const { scales, zeroPoints } = obs.qparams();
  const scale = scales[0]!, zeroPoint = zeroPoints[0]!;
  const t = (v: Float32Array | Int32Array, dtype: 'float32' | 'int32') => keep(fromHost(op, v, [], dtype, device));
  return {
    scale, zeroPoint, dtype: obs.dtype,
    invScale: t(Float32Array.of(Math.fround(1 / Math.fround(scale))), 'float32'),
    zp: t(Int32Array.of(zeroPoint), 'int32'),
    scaleParts: splitScale(scale, true).map((p) => t(Float32Array.of(p), 'float32')),
  };
}

function freeAct(p: ActParams): void {
  for (const t of [p.invScale, p.zp, ...p.scaleParts]) t.dispose();
}

/** Builds the int8 GEMM inputs of the enabled layers (on the weights' device). */
function buildQLayers(state: GraphState, enabled: ReadonlySet<LayerState>): QLayers {
  const op = 'quant.convert';
  const acts = new Map<number, ActParams>();
  const device = state.graph.device;
  const act = (valueId: number) => {
    let p = acts.get(valueId);
    if (!p) acts.set(valueId, (p = actParams(op, state.observers.get(valueId)!, device)));
    return p;
  };
  const layerNodes = new Set([...enabled].map((l) => l.node));
  // Values whose every reader is an int8 layer (reading it as its input; graph outputs are float readers).
  const onlyInt8 = (v: Value) => {
    const users = state.users.get(v.id) ?? [];
    return users.length > 0 && users.every(({ node, use }) => node !== null && node.kind === 'op' && layerNodes.has(node) && node.inputs[0] === use);
  };
  const layers = new Map<OpNode, QLayer>();
  for (const l of enabled) {
    const inParams = act(l.input.value.id);
    // The GEMM writes int8 when only int8 layers read its result (through the fused ReLU, when there is one);
    // where float ops read it too, it writes float32 and the int8 readers quantise it (float readers lose nothing).
    const raw = l.node.outputs[0]!;
    const produces = l.relu && onlyInt8(l.relu.outputs[0]!) ? l.relu.outputs[0]! : raw;
    const outParams = onlyInt8(produces) ? act(produces.id) : null;
    const w = l.weightObserver!;
    const { scales: ws, zeroPoints: wz } = w.qparams();
    const n = l.weightShape[0]!;
    const qlayer = tidy(() => {
      const qw = w.qscheme.startsWith('perChannel') ? quantizePerChannel(l.weight, ws, wz, 0, w.dtype) : quantizePerTensor(l.weight, ws[0]!, wz[0]!, w.dtype);
      const repr = qw.intRepr();
      const weight = reshape(contiguous(repr), [n, repr.numel() / n]);
      const sIn = Math.fround(inParams.scale), sOut = outParams ? Math.fround(outParams.scale) : 1;
      const per = (i: number) => Math.fround(ws[ws.length === 1 ? 0 : i]!);
      const mult = Float32Array.from({ length: n }, (_, i) => Math.fround(outParams ? (sIn * per(i)) / sOut : sIn * per(i)));
      // Symmetric and per-tensor weights share one zero point: one int32, read through a broadcast view.
      const zpB = wz.every((z) => z === wz[0]) ? Int32Array.of(wz[0]!) : Int32Array.from({ length: n }, (_, i) => wz[i]!);
      const bias = l.bias ?? fromHost(op, new Float32Array(n), [n], 'float32', device);
      return {
        weight, zpW: expand(fromHost(op, zpB, [zpB.length], 'int32', device), [n]), mult: fromHost(op, mult, [n], 'float32', device),
        offset: outParams ? div(bias, sOut) : bias.clone(),
        zpIn: fromHost(op, Int32Array.of(inParams.zeroPoint), [1], 'int32', device),
        zpOut: outParams ? fromHost(op, Int32Array.of(outParams.zeroPoint), [1], 'int32', device) : null,
      };
    });
    for (const t of [qlayer.weight, qlayer.zpW, qlayer.mult, qlayer.offset, qlayer.zpIn, qlayer.zpOut]) if (t) keep(t);
    layers.set(l.node, { mode: 'static', state: l, ...qlayer, inParams, outParams, produces });
  }
  return { layers, acts };
}

/** A view of `t` (a value's contiguous tensor) as the use reads it. */
function read(t: Tensor, u: Use): Tensor {
  return new Tensor(t.storage, u.view.shape, u.view.strides, u.view.offset);
}

/** Runs one int8 layer: its input as int8 (quantised here at a border), the GEMM, int8 or float32 out. */
function runStaticLayer(q: StaticQLayer, x: Tensor, outShape: readonly number[]): Tensor {
  const out = q.outParams;
  const requant = out ? { dtype: STORAGE_DTYPE[out.dtype] as 'int8' | 'uint8', lo: q.produces !== q.state.node.outputs[0] ? Math.max(QRANGE[out.dtype][0], out.zeroPoint) : QRANGE[out.dtype][0], hi: QRANGE[out.dtype][1] } : 'float32' as const;
  return layerGemm(q.state, x, q.weight, [q.zpIn, q.zpW, q.mult, q.offset, ...(q.zpOut ? [q.zpOut] : [])], requant, outShape);
}

/** Runs a dynamic layer: quantises its float input (as the use reads it) from its own min/max, then the int8 GEMM, float32 out. */
function runDynamicLayer(q: DynamicQLayer, x: Tensor, outShape: readonly number[]): Tensor {
  // A float16 input's range and scale in float32 (float16 would round the scale to 11 bits); the output cast back.
  const xf = x.dtype === 'float32' ? x : to(x, 'float32');
  const [scale, zp] = dynamicQparams(xf, 'quint8');
  const xq = map('quantizeDynamic', [xf, reciprocal(scale), zp], quantizeExpr('float32', 'quint8'));
  const y = layerGemm(q.state, xq, q.weight, [zp, q.zpW, mul(scale, q.wScale), q.bias], 'float32', outShape);
  return y.dtype === x.dtype ? y : to(y, x.dtype);
}

/** Runs a weight-only layer on its float input: the fused dequantising matmul, or the layer's op on the dequantised weight. */
function runWeightOnlyLayer(q: WeightOnlyQLayer, x: Tensor, outShape: readonly number[]): Tensor {
  const l = q.state, n = l.weightShape[0]!, k = numel(l.weightShape) / n;
  const blocks = [q.packed, q.scales, ...(q.zeroPoints ? [q.zeroPoints] : [])];
  if (q.fused) {
    const m = x.numel() / k;
    // The kernel reads float16 inputs as they are and writes float32: cast back to the layer's dtype.
    const y = apply1(wqMatmulOp, [reshape(x, [m, k]), ...blocks, ...(q.bias ? [q.bias] : [])], { m, n, k, bits: q.bits, blockSize: q.blockSize, asymmetric: q.zeroPoints !== null, hasBias: q.bias !== null });
    return reshape(y.dtype === x.dtype ? y : to(y, x.dtype), outShape);
  }
  const w = slice(dequantizeBlockwise(q.packed, q.scales, q.zeroPoints, q.bits, q.blockSize), 1, 0, k);
  // The op's own weight layout: [out, in/groups, kh, kw] for conv2d, [N, K] for linear, [K, N] for matmul; its dtype.
  const weight = to(l.kind === 'matmul' ? transpose(w, 0, 1) : reshape(w, l.weightShape), x.dtype);
  const bias = q.bias && q.bias.dtype !== x.dtype ? to(q.bias, x.dtype) : q.bias;
  return apply(l.node.op, [x, weight, ...(bias ? [bias] : [])], l.node.attrs)[0]!;
}

/** One integer GEMM for a layer: a conv2d (implicit im2col) or a matmul over the input's rows. */
function layerGemm(l: LayerState, x: Tensor, weight: Tensor, params: Tensor[], output: QGemmAttrs['output'], outShape: readonly number[]): Tensor {
  const u = l.input;
  const n = l.weightShape[0]!;
  if (l.kind === 'conv2d') {
    const a = l.node.attrs as { stride: [number, number]; padding: [number, number, number, number]; dilation: [number, number]; groups: number };
    const [batch, channels, height, width] = u.view.shape as [number, number, number, number];
    const [, , kh, kw] = l.weightShape as [number, number, number, number];
    const conv: ConvGeometry = {
      batch, channels, height, width, kernel: [kh, kw], stride: a.stride, padding: [a.padding[0], a.padding[2]], dilation: a.dilation, groups: a.groups,
      outHeight: outShape[2]!, outWidth: outShape[3]!,
    };
    return qgemm([x, weight, ...params], { m: batch * conv.outHeight * conv.outWidth, n, k: weight.shape[1]!, conv, output });
  }
  const k = u.view.shape[u.view.shape.length - 1]!;
  const m = x.numel() / k;
  const a2 = reshape(x, [m, k]);
  const y = qgemm([a2, weight, ...params], { m, n, k, conv: null, output });
  return reshape(y, outShape);
}

/**
 * Interprets the graph on `args`: every op as recorded, except the int8 layers of `q` (with quantise/dequantise
 * at the borders of int8 regions). Returns the outputs, and the float values of `taps` (value ids).
 */
function interpret(state: GraphState, args: readonly Tensor[], q: QLayers | null, taps: readonly number[]): { outs: Tensor[]; taps: Tensor[] } {
  const g = state.graph;
  return tidy(() => {
    const floats = new Map<number, Tensor>();
    const ints = new Map<number, { t: Tensor; p: ActParams }>();
    const skip = new Set<Node>();
    if (q) for (const ql of q.layers.values()) if (ql.produces !== ql.state.node.outputs[0]) skip.add(ql.state.relu!);
    const floatOf = (v: Value): Tensor => {
      let t = floats.get(v.id);
      if (!t) {
        const i = ints.get(v.id);
        if (!i) throw new SinterError('quant', `internal: value %${v.id} was not computed`);
        t = map('dequantize', [i.t, i.p.zp, ...i.p.scaleParts], dequantizeExpr(i.t.dtype));
        floats.set(v.id, t);
      }
      return t;
    };
    const intOf = (v: Value, p: ActParams): Tensor => {
      let i = ints.get(v.id);
      if (!i) {
        i = { t: map('quantize', [floatOf(v), p.invScale, p.zp], quantizeExpr('float32', p.dtype)), p };
        ints.set(v.id, i);
      }
      return i.t;
    };
    for (const n of g.nodes) {
      if (skip.has(n)) continue;
      if (n.kind === 'input') {
        const a = args[n.index];
        if (!a) throw new SinterError('quant', `expected ${g.inputs.length} input tensors, got ${args.length}`);
        const v = n.outputs[0]!;
        if (a.shape.join() !== v.shape.join() || a.dtype !== v.dtype) {
          throw new SinterError('quant', `input ${n.index} is ${a.describe()} but the target was prepared for ${v.dtype}${fmtShape(v.shape)}; prepare it with exampleInputs of this signature`);
        }
        floats.set(v.id, a.isContiguous() && a.offset === 0 ? a : contiguous(a));
        continue;
      }
      if (n.kind === 'constant') {
        // Released after dynamic/weight-only quantisation when only quantised layers read it (as their weight).
        if (!n.tensor.isDisposed) floats.set(n.outputs[0]!.id, n.tensor);
        continue;
      }
      if (n.kind !== 'op') throw new SinterError('quant', 'internal: random nodes are refused at prepare');
      const ql = q?.layers.get(n);
      if (ql?.mode === 'static') {
        const x = read(intOf(ql.state.input.value, ql.inParams), ql.state.input);
        const y = runStaticLayer(ql, x, n.outputs[0]!.shape);
        if (ql.outParams) ints.set(ql.produces.id, { t: y, p: ql.outParams });
        else floats.set(ql.produces.id, y);
        continue;
      }
      if (ql) {
        const x = read(floatOf(ql.state.input.value), ql.state.input);
        floats.set(ql.produces.id, ql.mode === 'dynamic' ? runDynamicLayer(ql, x, n.outputs[0]!.shape) : runWeightOnlyLayer(ql, x, n.outputs[0]!.shape));
        continue;
      }
      const outs = apply(n.op, n.inputs.map((u) => read(floatOf(u.value), u)), n.attrs);
      n.outputs.forEach((v, i) => floats.set(v.id, outs[i]!));
    }
    const valueById = new Map(g.nodes.flatMap((n) => n.outputs.map((v) => [v.id, v] as const)));
    return {
      outs: g.outputs.map((u) => contiguous(read(floatOf(u.value), u))),
      taps: taps.map((id) => floatOf(valueById.get(id)!)),
    };
  });
}

/** Compiles the graph with `enabled` layers quantised by `build` (a jitted interpreter); the caller frees what it returns. */
function compileQuantized(state: GraphState, enabled: ReadonlySet<LayerState>, build: LayerBuilder, taps: readonly number[] = []) {
  const q = build(state, enabled);
  const fn = jit((...x: Tensor[]) => {
    const r = interpret(state, x, q, taps);
    return [...r.outs, ...r.taps];
  });
  const free = () => {
    fn.dispose();
    for (const l of q.layers.values()) for (const t of layerTensors(l)) t.dispose();
    for (const p of q.acts.values()) freeAct(p);
  };
  return { fn, q, free };
}

/** Replaces each calibrated layer by its int8 GEMM (the prepared graph stays usable). */
export function convertGraph(prepared: PreparedGraph, opts: ConvertOptions = {}): QuantizedGraph {
  const state = requireState('quant.convert', prepared);
  const names = new Set(state.layers.map((l) => l.name));
  for (const n of opts.keepFloat ?? []) if (!names.has(n)) throw new SinterError('quant.convert', `keepFloat names '${n}', which is no layer; the layers are ${[...names].join(', ')}`);
  const keepFloat = new Set(opts.keepFloat ?? []);
  const enabled = new Set(state.layers.filter((l) => l.qconfig && !keepFloat.has(l.name)));
  const compiled = compileQuantized(state, enabled, buildQLayers);
  const quantized = quantizedGraph(state, enabled, compiled, 'static', prepared, compiled.free);
  QUANTIZED.set(quantized, { q: compiled.q, state, enabled, build: buildQLayers });
  return quantized;
}

/** The callable result of convert/quantizeGraph: `compiled` called like the target, with its report, bytes and dispose. */
function quantizedGraph(state: GraphState, enabled: ReadonlySet<LayerState>, compiled: ReturnType<typeof compileQuantized>, mode: QuantizedGraph['mode'], prepared: PreparedGraph | null, dispose: () => void): QuantizedGraph {
  const { fn, q } = compiled;
  const nOut = state.graph.outputs.length;
  const call = (...x: Tensor[]) => unflatten(state.template, fn(...x).slice(0, nOut));
  const quantized = Object.assign(call, {
    run: async (feeds: Readonly<Record<string, Tensor>>) => call(...feedList(state, feeds)) as Record<string, Tensor>,
    mode,
    prepared,
    quantizedLayers: [...enabled].map((l) => l.name),
    modelBytes: () => quantizedBytes(state, q.layers),
    report: () => fn.report(),
    dispose,
  }) as QuantizedGraph;
  STATES.set(quantized, state);
  return quantized;
}

/** A converted graph's layers, and how to build them again (for layerSqnr's probe plan); only while its float graph lives. */
const QUANTIZED = new WeakMap<object, { q: QLayers; state: GraphState; enabled: ReadonlySet<LayerState>; build: LayerBuilder }>();

/** Options of dynamic and weight-only quantisation on the traced graph. */
export interface GraphQuantizeOptions {
  /** Inputs of the target's signature (shapes, dtypes, device), to trace it; the result takes inputs of this signature. */
  exampleInputs: Tensor | readonly Tensor[];
  /** The layer kinds to quantise (default all: conv2d, linear, matmul with a constant weight). */
  layers?: readonly LayerKind[];
}

/** Throws when `opts` names an option `op` does not take (a misspelt option would otherwise be ignored). */
export function checkOptionNames(op: string, opts: object, known: readonly string[]): void {
  const unknown = Object.keys(opts).filter((k) => !known.includes(k));
  if (unknown.length) throw new SinterError(op, `unknown option${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `'${k}'`).join(', ')}; the options are ${known.join(', ')}`);
}

/** Weight-only block parameters (checked by the caller). */
export interface WeightOnlySpec {
  bits: 8 | 4;
  blockSize: number;
  symmetric: boolean;
}

/** Dynamic layers: int8 weights symmetric per output channel, the same quantisation as DynamicQuantizedLinear. */
function buildDynamicLayers(state: GraphState, enabled: ReadonlySet<LayerState>): QLayers {
  const device = state.graph.device;
  const layers = new Map<OpNode, QLayer>();
  for (const l of enabled) {
    const n = l.weightShape[0]!;
    const built = tidy(() => {
      // float16 weights are widened first, so that their scales are float32 as for float32 weights.
      const [weight, wScale] = quantizeRowsSymmetric(to(reshape(l.weight, [n, numel(l.weightShape) / n]), 'float32'));
      return { weight, wScale, zpW: expand(fromHost('quantizeDynamic', Int32Array.of(0), [1], 'int32', device), [n]), bias: floatBias(l, n) };
    });
    for (const t of Object.values(built)) keep(t);
    layers.set(l.node, { mode: 'dynamic', state: l, ...built, produces: l.node.outputs[0]! });
  }
  return { layers, acts: new Map() };
}

/** A float32 copy of a layer's bias (zeros when it has none), owned by its quantised form. */
function floatBias(l: LayerState, n: number): Tensor {
  if (!l.bias) return fromHost('quant', new Float32Array(n), [n], 'float32', l.weight.device);
  return l.bias.dtype === 'float32' ? contiguous(l.bias).clone() : to(l.bias, 'float32');
}

/** Weight-only layers: each weight row [N, K] in blocks along K (padded with zeros to whole blocks). */
function weightOnlyBuilder(spec: WeightOnlySpec): LayerBuilder {
  return (_state, enabled) => {
    const layers = new Map<OpNode, QLayer>();
    for (const l of enabled) {
      const n = l.weightShape[0]!, k = numel(l.weightShape) / n;
      const padded = Math.ceil(k / spec.blockSize) * spec.blockSize;
      const built = tidy(() => {
        const w = reshape(l.weight, [n, k]);
        const blocks = quantizeBlockwise(padded === k ? w : pad(w, [0, padded - k]), spec.bits, spec.blockSize, spec.symmetric);
        return { ...blocks, bias: l.bias ? floatBias(l, n) : null };
      });
      for (const t of Object.values(built)) if (t) keep(t);
      layers.set(l.node, { mode: 'weights', state: l, ...built, bits: spec.bits, blockSize: spec.blockSize, fused: l.kind !== 'conv2d' && padded === k, produces: l.node.outputs[0]! });
    }
    return { layers, acts: new Map() };
  };
}

/**
 * Dynamic (mode 'dynamic') or weight-only (mode 'weights') quantisation of `target` on its traced graph: every
 * conv2d/linear/matmul with a constant weight of the chosen kinds is quantised ahead of time, and the result runs
 * the graph in a compiled plan with those layers on the integer GEMM (dynamic) or on weight-only blocks. The float
 * weights that only quantised layers read are freed (the target's own tensors stay the target's).
 */
export function quantizeGraph(op: string, target: QuantTarget, mode: 'dynamic' | 'weights', opts: GraphQuantizeOptions, spec: WeightOnlySpec | null): QuantizedGraph {
  const kinds = new Set<LayerKind>(opts.layers ?? ['conv2d', 'linear', 'matmul']);
  for (const k of kinds) if (k !== 'conv2d' && k !== 'linear' && k !== 'matmul') throw new SinterError(op, `layers may name 'conv2d', 'linear' and 'matmul', got ${JSON.stringify(k)}`);
  const traced = traceTarget(op, target, opts.exampleInputs);
  let state: GraphState;
  try {
    state = new GraphState(traced, null);
  } catch (e) {
    freeGraph(traced.graph);
    throw e;
  }
  const enabled = new Set(state.layers.filter((l) => kinds.has(l.kind)));
  if (enabled.size === 0) {
    const counts = new Map<LayerKind, string[]>();
    for (const l of state.layers) counts.set(l.kind, [...(counts.get(l.kind) ?? []), l.name]);
    const found = counts.size ? ` (it has ${[...counts].map(([k, names]) => `${names.length} ${k}: ${names.slice(0, 3).join(', ')}${names.length > 3 ? ', …' : ''}`).join('; ')})` : '';
    state.dispose();
    throw new SinterError(op, `found no ${[...kinds].join(', ')} with a constant float weight to quantise in the traced graph${found}`);
  }
  const build = mode === 'dynamic' ? buildDynamicLayers : weightOnlyBuilder(spec!);
  let compiled: ReturnType<typeof compileQuantized>;
  try {
    compiled = compileQuantized(state, enabled, build);
  } catch (e) {
    state.dispose();
    throw e;
  }
  state.releaseFloatWeights(new Set(compiled.q.layers.keys()));
  return quantizedGraph(state, enabled, compiled, mode, null, () => {
    compiled.free();
    state.dispose();
  });
}

/** Bytes of the float graph's constants (each storage once). */
export function floatGraphBytes(prepared: PreparedGraph): number {
  const state = requireState('quant.modelBytes', prepared);
  return constantBytes(state.graph.nodes.filter((n) => n.kind === 'constant'));
}

function constantBytes(nodes: readonly Node[]): number {
  const seen = new Set<unknown>();
  let bytes = 0;
  for (const n of nodes) {
    if (n.kind !== 'constant' || seen.has(n.tensor.storage)) continue;
    seen.add(n.tensor.storage);
    bytes += n.tensor.storage.byteLength;
  }
  return bytes;
}

function quantizedBytes(state: GraphState, layers: Map<OpNode, QLayer>): number {
  // Constants read by some op that still runs in float; the int8 layers' weights and biases are their own.
  const floatReaders = new Set<number>();
  for (const n of state.graph.nodes) {
    if (n.kind !== 'op' || layers.has(n)) continue;
    for (const u of n.inputs) floatReaders.add(u.value.id);
  }
  for (const u of state.graph.outputs) floatReaders.add(u.value.id);
  const kept = state.graph.nodes.filter((n) => n.kind === 'constant' && floatReaders.has(n.outputs[0]!.id));
  let bytes = constantBytes(kept);
  for (const l of layers.values()) bytes += layerBytes(l);
  return bytes;
}

/** Output SQNR accumulators: Σref² and Σ(ref − q)², and the largest |ref − q|. */
export interface ErrorSums {
  signal: number;
  noise: number;
  maxAbs: number;
}

export function accumulate(s: ErrorSums, ref: ArrayLike<number>, q: ArrayLike<number>): void {
  for (let k = 0; k < ref.length; k++) {
    const r = ref[k]!, d = r - q[k]!;
    s.signal += r * r;
    s.noise += d * d;
    s.maxAbs = Math.max(s.maxAbs, Math.abs(d));
  }
}

export const sqnrDb = (s: ErrorSums): number => (s.noise === 0 ? Infinity : 10 * Math.log10(s.signal / s.noise));

export interface GraphLayerSensitivity {
  name: string;
  kind: LayerKind;
  /** SQNR (dB) of the outputs with only this layer int8, against float: lower is worse. */
  sqnrDb: number;
  maxAbsError: number;
}

/**
 * Ranks the calibrated layers by the output error that running each alone as int8 adds (worst first): keep the
 * worst few in float (`convert(prepared, { keepFloat })` or a `null` in the qconfig mapping) to trade size and
 * speed for accuracy. `onProgress` hears each layer measured.
 */
export async function sensitivityGraph(prepared: PreparedGraph, batches: readonly Batch[], opts: { onProgress?: (done: number, total: number) => void } = {}): Promise<GraphLayerSensitivity[]> {
  const state = requireState('quant.sensitivity', prepared);
  if (batches.length === 0) throw new SinterError('quant.sensitivity', 'needs at least one batch of inputs');
  await state.synchronize();
  const list = batches.map(asList);
  const reference: Float32Array[][] = [];
  for (const inputs of list) {
    const outs = state.runFloat(inputs);
    reference.push((await Promise.all(outs.map((o) => o.data()))) as Float32Array[]);
    for (const o of outs) o.dispose();
  }
  const candidates = state.layers.filter((l) => l.qconfig);
  const result: GraphLayerSensitivity[] = [];
  for (const l of candidates) {
    const { fn, free } = compileQuantized(state, new Set([l]), buildQLayers);
    const sums: ErrorSums = { signal: 0, noise: 0, maxAbs: 0 };
    try {
      for (let b = 0; b < list.length; b++) {
        const outs = fn(...list[b]!);
        const values = await Promise.all(outs.map((o) => o.data()));
        values.forEach((v, i) => accumulate(sums, reference[b]![i]!, v));
        for (const o of outs) o.dispose();
      }
    } finally {
      free();
    }
    result.push({ name: l.name, kind: l.kind, sqnrDb: sqnrDb(sums), maxAbsError: sums.maxAbs });
    opts.onProgress?.(result.length, candidates.length);
  }
  return result.sort((a, b) => a.sqnrDb - b.sqnrDb);
}

export interface LayerComparison {
  name: string;
  kind: LayerKind;
  /** SQNR (dB) of the layer's output in the int8 program against the same value in the float graph. */
  sqnrDb: number;
}

/**
 * Per-layer SQNR of a converted graph against its float graph, on `batches`: each int8 layer's output (the value
 * its GEMM writes, dequantised) beside the same value of the float graph run on the same inputs.
 */
export async function layerSqnr(quantized: QuantizedGraph, batches: readonly Batch[]): Promise<LayerComparison[] | null> {
  const entry = QUANTIZED.get(quantized);
  if (!entry) return null;
  const { state, q } = entry;
  const layers = [...q.layers.values()];
  const ids = layers.map((l) => l.produces.id);
  const probe = compileQuantized(state, entry.enabled, entry.build, ids);
  const floatTaps = jit((...x: Tensor[]) => interpret(state, x, null, ids).taps);
  const sums = layers.map((): ErrorSums => ({ signal: 0, noise: 0, maxAbs: 0 }));
  const nOut = state.graph.outputs.length;
  try {
    for (const b of batches.map(asList)) {
      const ref = floatTaps(...b);
      const got = probe.fn(...b);
      for (let i = 0; i < layers.length; i++) accumulate(sums[i]!, await ref[i]!.data(), await got[nOut + i]!.data());
      for (const t of [...ref, ...got]) t.dispose();
    }
  } finally {
    probe.free();
    floatTaps.dispose();
  }
  return layers.map((l, i) => ({ name: l.state.name, kind: l.state.kind, sqnrDb: sqnrDb(sums[i]!) }));
}
