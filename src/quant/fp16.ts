import { packHost } from '../backend/webgpu/pack.js';
import { SinterError } from '../errors.js';
import { ATTR, type AttributeProto, type GraphProto, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from '../io/onnx/proto.js';
import { OPS } from '../io/onnx/registry.js';
import { fromTensorProto } from '../io/onnx/tensor.js';

// Float16 conversion of an ONNX model at load (`loadOnnx(bytes, { dtype: 'float16' })`), as onnxruntime's
// converter (onnxconverter_common.float16.convert_float_to_float16) does it, on the decoded ModelProto:
//   1. every BatchNormalization that follows a Conv is folded into the Conv's weights and bias, in float64 from
//      the float32 values. This must come first: BN statistics do not fit float16 (PP-OCR det's first BN has
//      a running variance above 65504, float16's largest value), while the folded weights do. Other BNs (after a
//      ConvTranspose, an Add…) get their statistics folded into their own scale and bias (mean 0, variance 1);
//   2. float32 initializers and Constant/ConstantOfShape values become float16, and Cast-to-float32 nodes cast to
//      float16, so activations flow in float16 from op to op. Values an op reads on the host while the model is
//      traced (shapes, Resize scales, Clip bounds, pads…) keep their type: they are parameters, not data;
//   3. with `keepIoTypes` (the default, as the converter's keep_io_types=True) the graph's float32 inputs and
//      outputs stay float32: a Cast to float16 follows each input, a Cast to float32 precedes each output, so
//      callers feed and read float32 exactly as for the original model. Without it they are declared float16.
// Subgraphs (If/Loop/Scan bodies) are left as they are: their float32 constants then promote what flows in to
// float32, which is correct, only not smaller.

const FLOAT = 1;
const FLOAT16 = 10;

export interface Float16Options {
  /** Keep float32 graph inputs and outputs, casting at the border (default true, onnxruntime's keep_io_types=True). */
  keepIoTypes?: boolean;
}

/** What `convertModelToFloat16` did, for reports and tests. */
export interface Float16Conversion {
  /** BatchNormalization nodes folded into the Conv before them. */
  readonly foldedBatchNorms: number;
  /** Other BatchNormalization nodes, whose statistics were folded into their scale and bias (mean 0, variance 1, ε 0). */
  readonly normalizedBatchNorms: number;
  /** Initializers and constants now stored as float16. */
  readonly converted: number;
  /** Float32 values kept because an op reads them on the host (shapes, scales…). */
  readonly keptFloat32: readonly string[];
}

/** The default domain's name as nodes spell it. */
const domainOf = (n: NodeProto) => (n.domain === 'ai.onnx' ? '' : (n.domain ?? ''));
const isOp = (n: NodeProto, op: string) => domainOf(n) === '' && n.opType === op;

function tensorProto(name: string, dims: readonly number[], dataType: number, rawData: Uint8Array): TensorProto {
  return { name, dims: [...dims], dataType, rawData, floatData: [], int32Data: [], stringData: [], int64Data: [], doubleData: [], uint64Data: [], externalData: [] };
}

/** The raw_data bytes of `values` as float32, or as binary16 rounded to nearest even (the bytes WebGPU buffers hold). */
function rawOf(values: ArrayLike<number>, dataType: typeof FLOAT | typeof FLOAT16): Uint8Array {
  const f32 = Float32Array.from(values);
  return dataType === FLOAT ? new Uint8Array(f32.buffer) : packHost('float16', f32).subarray(0, 2 * f32.length);
}

function attr(n: NodeProto, name: string): AttributeProto | undefined {
  return n.attribute.find((a) => a.name === name);
}

/** How many times each value name is read: by nodes (subgraphs included, as outer references) and as a graph output. */
function readCounts(g: GraphProto): Map<string, number> {
  const counts = new Map<string, number>();
  const add = (name: string) => name && counts.set(name, (counts.get(name) ?? 0) + 1);
  const walk = (graph: GraphProto) => {
    for (const n of graph.node) {
      n.input.forEach(add);
      for (const a of n.attribute) for (const sub of [...(a.g ? [a.g] : []), ...a.graphs]) walk(sub);
    }
  };
  walk(g);
  g.output.forEach((o) => add(o.name ?? ''));
  return counts;
}

/** A name not yet used in the graph, from `base`. */
function freshName(base: string, taken: Set<string>): string {
  let name = base;
  for (let k = 1; taken.has(name); k++) name = `${base}_${k}`;
  taken.add(name);
  return name;
}

function namesOf(g: GraphProto): Set<string> {
  const names = new Set<string>();
  for (const t of g.initializer) names.add(t.name ?? '');
  for (const v of [...g.input, ...g.output]) names.add(v.name ?? '');
  for (const n of g.node) for (const x of [...n.input, ...n.output]) names.add(x);
  return names;
}

/** The graph's constant tensors by value name: initializers, and Constant nodes' values (as PaddlePaddle's exporter writes weights). */
function constantTensors(g: GraphProto): Map<string, TensorProto> {
  const tensors = new Map(g.initializer.map((t) => [t.name ?? '', t]));
  for (const n of g.node) {
    const t = isOp(n, 'Constant') ? attr(n, 'value')?.t : undefined;
    if (t && n.output[0]) tensors.set(n.output[0], t);
  }
  return tensors;
}

/** Removes the initializers and Constant nodes nothing reads any more (the weights and statistics folding replaced). */
function dropUnread(g: GraphProto): void {
  const reads = readCounts(g);
  g.node = g.node.filter((n) => !isOp(n, 'Constant') || n.output.some((o) => reads.has(o)));
  g.initializer = g.initializer.filter((t) => reads.has(t.name ?? '') || g.input.some((i) => i.name === t.name));
}

/**
 * Folds each BatchNormalization (inference form) whose input is a Conv's only use into that Conv, as PyTorch's
 * fuse_conv_bn_eval: with s = γ / √(var + ε), W'[m] = W[m]·s[m] and b'[m] = (b[m] − mean[m])·s[m] + β[m],
 * computed in float64 from the float32 initializers. Returns how many were folded; `g` is changed in place.
 */
export function foldBatchNorms(g: GraphProto): number {
  const inits = constantTensors(g);
  const floatInit = (name: string | undefined) => {
    const t = name ? inits.get(name) : undefined;
    return t && t.dataType === FLOAT ? fromTensorProto(t, `'${name}'`) : undefined;
  };
  const producer = new Map<string, NodeProto>();
  for (const n of g.node) for (const o of n.output) if (o) producer.set(o, n);
  const reads = readCounts(g);
  const taken = namesOf(g);
  const removed = new Set<NodeProto>();
  let folded = 0;
  for (const bn of g.node) {
    if (!isOp(bn, 'BatchNormalization') || (attr(bn, 'training_mode')?.i ?? 0) !== 0 || bn.output.filter(Boolean).length !== 1) continue;
    const conv = producer.get(bn.input[0] ?? '');
    if (!conv || !isOp(conv, 'Conv') || reads.get(conv.output[0]!) !== 1) continue;
    const w = floatInit(conv.input[1]);
    const [gamma, beta, mean, variance] = [1, 2, 3, 4].map((k) => floatInit(bn.input[k]));
    const m = w?.shape[0] ?? 0;
    if (!w || !gamma || !beta || !mean || !variance || [gamma, beta, mean, variance].some((t) => t.data.length !== m)) continue;
    const bias = conv.input[2] ? floatInit(conv.input[2]) : undefined;
    if (conv.input[2] && (!bias || bias.data.length !== m)) continue;
    const eps = attr(bn, 'epsilon')?.f ?? 1e-5;
    const per = w.data.length / m;
    const w2 = new Float64Array(w.data.length), b2 = new Float64Array(m);
    for (let c = 0; c < m; c++) {
      const s = gamma.data[c]! / Math.sqrt(variance.data[c]! + eps);
      for (let i = c * per; i < (c + 1) * per; i++) w2[i] = w.data[i]! * s;
      b2[c] = ((bias?.data[c] ?? 0) - mean.data[c]!) * s + beta.data[c]!;
    }
    const wName = freshName(`${conv.input[1]}_bn_folded`, taken), bName = freshName(`${bn.output[0]}_bias_bn_folded`, taken);
    g.initializer.push(tensorProto(wName, w.shape, FLOAT, rawOf(w2, FLOAT)), tensorProto(bName, [m], FLOAT, rawOf(b2, FLOAT)));
    conv.input = [conv.input[0]!, wName, bName];
    conv.output = [bn.output[0]!];
    removed.add(bn);
    folded++;
  }
  if (folded === 0) return 0;
  g.node = g.node.filter((n) => !removed.has(n));
  dropUnread(g);
  return folded;
}

/**
 * Rewrites each remaining BatchNormalization (inference form, float32 parameters) to the same function with its
 * statistics folded in: scale s = γ / √(var + ε), bias β − mean·s, mean 0, variance 1, ε 0, computed in float64. The
 * statistics themselves may not fit float16 (a variance above 65504); s and the bias are what the output is made
 * of, so they do. Returns how many were rewritten; `g` is changed in place.
 */
export function normalizeBatchNorms(g: GraphProto): number {
  const inits = constantTensors(g);
  const taken = namesOf(g);
  let count = 0;
  for (const bn of g.node) {
    if (!isOp(bn, 'BatchNormalization') || (attr(bn, 'training_mode')?.i ?? 0) !== 0 || bn.output.filter(Boolean).length !== 1) continue;
    const params = [1, 2, 3, 4].map((k) => inits.get(bn.input[k] ?? ''));
    if (params.some((t) => !t || t.dataType !== FLOAT)) continue;
    const [gamma, beta, mean, variance] = params.map((t) => fromTensorProto(t!, `'${t!.name}'`).data);
    const c = gamma!.length;
    if ([beta, mean, variance].some((d) => d!.length !== c)) continue;
    const eps = attr(bn, 'epsilon')?.f ?? 1e-5;
    const s = new Float64Array(c), b = new Float64Array(c);
    for (let i = 0; i < c; i++) {
      s[i] = gamma![i]! / Math.sqrt(variance![i]! + eps);
      b[i] = beta![i]! - mean![i]! * s[i]!;
    }
    const name = (what: string) => freshName(`${bn.output[0]}_${what}`, taken);
    const made = [['scale', s], ['bias', b], ['mean', new Float64Array(c)], ['var', new Float64Array(c).fill(1)]] as const;
    const names = made.map(([what, values]) => {
      const n = name(what);
      g.initializer.push(tensorProto(n, [c], FLOAT, rawOf(values, FLOAT)));
      return n;
    });
    bn.input = [bn.input[0]!, ...names];
    bn.attribute = [...bn.attribute.filter((a) => a.name !== 'epsilon'), { name: 'epsilon', type: ATTR.FLOAT, f: 0, floats: [], ints: [], strings: [], tensors: [], graphs: [] }];
    count++;
  }
  if (count > 0) dropUnread(g);
  return count;
}

/**
 * The names `g`'s ops read on the host while the model is traced: inputs at an op's host positions (shapes, axes,
 * scales…), If conditions and Loop counts, and what host-evaluable ops computing those read.
 */
function hostRead(g: GraphProto): Set<string> {
  const wanted = new Set<string>();
  for (let i = g.node.length - 1; i >= 0; i--) {
    const n = g.node[i]!;
    const domain = domainOf(n);
    const entry = domain === '' ? OPS.get(n.opType ?? '') : OPS.get(`${domain}.${n.opType}`);
    const control = domain !== '' ? undefined : n.opType === 'If' ? [0] : n.opType === 'Loop' ? [0, 1] : undefined;
    for (const k of control ?? entry?.hostInputs ?? []) if (n.input[k]) wanted.add(n.input[k]!);
    if (entry?.host && n.output.some((o) => wanted.has(o))) for (const x of n.input) if (x) wanted.add(x);
  }
  return wanted;
}

/** A float32 tensor as float16: same name and shape, binary16 bytes. */
function toFloat16(t: TensorProto): TensorProto {
  const h = fromTensorProto(t, 'initializer');
  return tensorProto(t.name ?? '', t.dims, FLOAT16, rawOf(h.data, FLOAT16));
}

/** Converts a node's float32 constant attributes (Constant's value*, ConstantOfShape's value) to float16; true if changed. */
function convertConstantNode(n: NodeProto): boolean {
  let changed = false;
  n.attribute = n.attribute.map((a) => {
    if ((a.name === 'value' || a.name === 'value_float' || a.name === 'value_floats') && !(isOp(n, 'Constant') || isOp(n, 'ConstantOfShape'))) return a;
    if (a.name === 'value' && a.t?.dataType === FLOAT) {
      changed = true;
      return { ...a, t: toFloat16(a.t) };
    }
    if (isOp(n, 'Constant') && (a.name === 'value_float' || a.name === 'value_floats')) {
      changed = true;
      const values = a.name === 'value_float' ? [a.f ?? 0] : a.floats;
      const dims = a.name === 'value_float' ? [] : [values.length];
      return { name: 'value', type: ATTR.TENSOR, t: tensorProto('', dims, FLOAT16, rawOf(values, FLOAT16)), floats: [], ints: [], strings: [], tensors: [], graphs: [] };
    }
    return a;
  });
  return changed;
}

const elemType = (v: ValueInfoProto) => v.type?.tensorType?.elemType;
function withElemType(v: ValueInfoProto, type: number): ValueInfoProto {
  return { ...v, type: { ...v.type, tensorType: { ...v.type!.tensorType, elemType: type } } };
}

/** Renames every read of `from` to `to` in the graph's nodes and the subgraphs under them. */
function renameReads(g: GraphProto, from: string, to: string): void {
  for (const n of g.node) {
    n.input = n.input.map((x) => (x === from ? to : x));
    for (const a of n.attribute) for (const sub of [...(a.g ? [a.g] : []), ...a.graphs]) renameReads(sub, from, to);
  }
}

function castNode(input: string, output: string, to: number): NodeProto {
  return { input: [input], output: [output], name: `${output}_cast`, opType: 'Cast', domain: '', attribute: [{ name: 'to', type: ATTR.INT, i: to, floats: [], ints: [], strings: [], tensors: [], graphs: [] }] };
}

/**
 * Converts an ONNX model's float32 weights and computation to float16 (see the top of this file), returning the
 * converted model (the given one is not changed) and what was done.
 */
export function convertModelToFloat16(proto: ModelProto, options: Float16Options = {}): { model: ModelProto; conversion: Float16Conversion } {
  const keepIoTypes = options.keepIoTypes ?? true;
  if (typeof keepIoTypes !== 'boolean') throw new SinterError('loadOnnx', `keepIoTypes must be a boolean, got ${JSON.stringify(keepIoTypes)}`);
  if (!proto.graph) throw new SinterError('loadOnnx', 'the model has no graph');
  // A copy deep enough that the edits below (node lists, inputs, attributes, initializers) leave `proto` alone.
  const g: GraphProto = {
    ...proto.graph,
    node: proto.graph.node.map((n) => ({ ...n, input: [...n.input], output: [...n.output], attribute: [...n.attribute] })),
    initializer: [...proto.graph.initializer],
    input: [...proto.graph.input],
    output: [...proto.graph.output],
  };
  const foldedBatchNorms = foldBatchNorms(g);
  const normalizedBatchNorms = normalizeBatchNorms(g);
  const host = hostRead(g);
  const keptFloat32: string[] = [];
  let converted = 0;
  g.initializer = g.initializer.map((t) => {
    if (t.dataType !== FLOAT) return t;
    if (host.has(t.name ?? '')) {
      keptFloat32.push(t.name ?? '');
      return t;
    }
    converted++;
    return toFloat16(t);
  });
  for (const n of g.node) {
    if (n.output.some((o) => host.has(o))) continue;
    if (convertConstantNode(n)) converted++;
    if (isOp(n, 'Cast') && attr(n, 'to')?.i === FLOAT) n.attribute = n.attribute.map((a) => (a.name === 'to' ? { ...a, i: FLOAT16 } : a));
  }
  const taken = namesOf(g);
  const initNames = new Set(g.initializer.map((t) => t.name ?? ''));
  const head: NodeProto[] = [], tail: NodeProto[] = [];
  g.input = g.input.map((v) => {
    const name = v.name ?? '';
    if (elemType(v) !== FLOAT || host.has(name) || initNames.has(name)) return v;
    if (!keepIoTypes) return withElemType(v, FLOAT16);
    const inner = freshName(`${name}_float16`, taken);
    renameReads(g, name, inner);
    head.push(castNode(name, inner, FLOAT16));
    return v;
  });
  const producer = new Map<string, NodeProto>();
  for (const n of g.node) for (const o of n.output) if (o) producer.set(o, n);
  g.output = g.output.map((v) => {
    const name = v.name ?? '';
    const from = producer.get(name);
    if (elemType(v) !== FLOAT || !from) return v;
    if (!keepIoTypes) return withElemType(v, FLOAT16);
    const inner = freshName(`${name}_float16`, taken);
    from.output = from.output.map((o) => (o === name ? inner : o));
    renameReads(g, name, inner);
    tail.push(castNode(inner, name, FLOAT));
    return v;
  });
  g.node = [...head, ...g.node, ...tail];
  return { model: { ...proto, graph: g }, conversion: { foldedBatchNorms, normalizedBatchNorms, converted, keptFloat32 } };
}
