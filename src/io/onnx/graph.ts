import { SinterError } from '../../errors.js';
import { cat, flip, stack } from '../../ops/movement.js';
import { narrow, squeeze } from '../../ops/views.js';
import { full } from '../../tensor/creation.js';
import { itemSize } from '../../tensor/dtype.js';
import { tidy } from '../../tensor/scope.js';
import { Tensor } from '../../tensor/tensor.js';
import { OnnxNode } from './node.js';
import type { GraphProto, ValueInfoProto } from './proto.js';
import { OPS, type OpContext, type Val, checkValueBytes, isHost } from './registry.js';
import { HostTensor, type OnnxDType, deviceDType, fromTensorProto, onnxDType, unsupportedDType } from './tensor.js';

// An ONNX graph (the model's, or a subgraph of If/Loop/Scan) and its interpreter. The interpreter is a generator:
// wherever a value must be known on the host (a shape, axes, an If condition, a Loop's trip count) but was computed
// on the device, it yields that tensor and resumes with its values. While tracing no value can be read, so the
// trace stops (NeedsValues) and the model runs eagerly instead; an eager run awaits each read.

/** Why a model cannot run: one entry per unsupported op (or type), listed together when it loads. */
export interface OnnxUnsupported {
  readonly op: string;
  readonly domain: string;
  readonly opset: number;
  readonly node: string;
  readonly reason: string;
}

/** The oldest opset of the default domain whose ops this importer implements, unless an op says otherwise. */
const MIN_OPSET = 7;

/** A graph ready to interpret: its nodes in order, its constants (initializers, Constant nodes), inputs and outputs. */
export interface OnnxGraph {
  readonly nodes: readonly OnnxNode[];
  readonly constants: ReadonlyMap<string, HostTensor>;
  readonly inputs: readonly ValueInfoProto[];
  readonly outputs: readonly ValueInfoProto[];
}

/** Control-flow ops: run by the interpreter itself (they run subgraphs), with their graph attributes. */
const CONTROL: Record<string, { graphs: string[]; minOpset: number }> = {
  If: { graphs: ['then_branch', 'else_branch'], minOpset: 1 },
  Loop: { graphs: ['body'], minOpset: 1 },
  Scan: { graphs: ['body'], minOpset: 9 },
};

/**
 * Builds a graph from its proto, checking every node (and, recursively, every subgraph's nodes) against what the
 * importer supports; each problem is added to `problems` (the caller throws them together).
 */
export function buildGraph(proto: GraphProto, opsets: ReadonlyMap<string, number>, problems: OnnxUnsupported[], where = ''): OnnxGraph {
  const graphProblem = (what: string, reason: string) => problems.push({ op: 'graph', domain: '', opset: opsets.get('') ?? 0, node: `${where}${what}`, reason });
  const constants = new Map<string, HostTensor>();
  if (proto.sparseInitializer.length > 0) graphProblem('sparse_initializer', 'sparse initializers are not supported');
  for (const t of proto.initializer) {
    const what = `initializer '${t.name ?? ''}'`;
    const dtype = onnxDType(t.dataType, what);
    const why = unsupportedDType(dtype);
    if (why) graphProblem(what, `${dtype}: ${why}`);
    else constants.set(t.name ?? '', fromTensorProto(t, 'initializer'));
  }
  let nodes = proto.node.map((n, i) => new OnnxNode(n, opsets.get(n.domain === 'ai.onnx' ? '' : (n.domain ?? '')) ?? 1, i, where));
  for (const node of nodes) {
    const control = node.domain === '' ? CONTROL[node.opType] : undefined;
    if (control) {
      if (node.opset < control.minOpset) {
        problems.push({ op: node.opType, domain: '', opset: node.opset, node: node.describe(), reason: `opset ${node.opset} is older than the oldest supported (${control.minOpset})` });
        continue;
      }
      for (const name of control.graphs) {
        const g = node.graph(name);
        if (g) node.subgraphs.set(name, buildGraph(g, opsets, problems, `${node.describe()} ${name} → `));
        else problems.push({ op: node.opType, domain: '', opset: node.opset, node: node.describe(), reason: `needs the graph attribute '${name}'` });
      }
      continue;
    }
    if (node.domain === '' && SEQUENCE_OPS.has(node.opType)) {
      if (node.opset < 11) problems.push({ op: node.opType, domain: '', opset: node.opset, node: node.describe(), reason: `opset ${node.opset} is older than the oldest supported (11)` });
      continue;
    }
    const entry = OPS.get(node.domain === '' ? node.opType : `${node.domain}.${node.opType}`);
    const oldest = entry?.minOpset ?? MIN_OPSET;
    const reason = !entry
      ? (node.domain === '' ? 'not implemented' : `not implemented in the domain '${node.domain}'`)
      : node.domain === '' && node.opset < oldest ? `opset ${node.opset} is older than the oldest supported (${oldest})` : entry.check?.(node);
    if (reason) problems.push({ op: node.opType, domain: node.domain, opset: node.opset, node: node.describe(), reason });
  }
  if (problems.length === 0) {
    const order = topologicalOrder(nodes);
    if (typeof order === 'string') problems.push({ op: 'graph', domain: '', opset: opsets.get('') ?? 0, node: order, reason: 'the graph has a cycle: this node reads (through its inputs or subgraphs) a value that depends on its own output' });
    else nodes = order;
  }
  if (problems.length === 0) {
    // Constant nodes fold into constants now, so every run starts from them.
    nodes = nodes.filter((node) => {
      if (node.opType !== 'Constant' || node.domain !== '') return true;
      const [value] = OPS.get('Constant')!.host!(node, [])!;
      constants.set(node.outputs[0]!, value!);
      return false;
    });
  }
  return { nodes, constants, inputs: proto.input.filter((v) => !constants.has(v.name ?? '')), outputs: proto.output };
}

/**
 * The nodes in an order where each comes after the nodes whose outputs it reads (directly or through its subgraphs'
 * outer-scope values). ONNX asks exporters for that order, but some tools break it: onnxconverter-common's float16
 * converter appends the Cast of each graph input at the end (as in @imgly/background-removal's fp16 model), and
 * onnxruntime sorts the graph itself. A graph already in order comes back as it is; otherwise each node is placed
 * after its producers, keeping the given order where it can (a depth-first walk, iterative so that long chains
 * cannot overflow the stack). A cycle returns the description of a node on it.
 */
function topologicalOrder(nodes: readonly OnnxNode[]): OnnxNode[] | string {
  const producer = new Map<string, number>();
  nodes.forEach((node, i) => {
    for (const name of node.outputs) if (name && !producer.has(name)) producer.set(name, i);
  });
  const reads = (node: OnnxNode): string[] => {
    const names = node.inputs.filter((name) => name !== '');
    for (const sub of node.subgraphs.values()) names.push(...outerNames(sub));
    return names;
  };
  const deps = nodes.map((node) => reads(node).map((name) => producer.get(name)).filter((j): j is number => j !== undefined));
  if (deps.every((ds, i) => ds.every((j) => j < i))) return [...nodes];
  const state = new Uint8Array(nodes.length); // 0 unvisited, 1 on the walk's stack, 2 placed
  const order: OnnxNode[] = [];
  for (let root = 0; root < nodes.length; root++) {
    if (state[root] === 2) continue;
    const stack: [number, number][] = [[root, 0]];
    state[root] = 1;
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      const [i, k] = top;
      if (k < deps[i]!.length) {
        top[1] = k + 1;
        const j = deps[i]![k]!;
        if (state[j] === 1) return nodes[j]!.describe();
        if (state[j] === 0) {
          state[j] = 1;
          stack.push([j, 0]);
        }
      } else {
        stack.pop();
        state[i] = 2;
        order.push(nodes[i]!);
      }
    }
  }
  return order;
}

/** The names a graph reads, in it or in its subgraphs, that it does not define itself (its outer-scope values). */
export function outerNames(g: OnnxGraph): Set<string> {
  const defined = new Set<string>([...g.constants.keys(), ...g.inputs.map((v) => v.name ?? '')]);
  const used = new Set<string>();
  for (const node of g.nodes) {
    for (const name of node.inputs) if (name && !defined.has(name)) used.add(name);
    for (const sub of node.subgraphs.values()) for (const name of outerNames(sub)) if (!defined.has(name)) used.add(name);
    for (const name of node.outputs) defined.add(name);
  }
  return used;
}

/** A device value whose values the interpreter needs on the host (yielded by `runGraph`). */
export interface ValueRead {
  readonly value: Tensor;
  readonly node: OnnxNode;
  readonly what: string;
}

/** Thrown while tracing when a value computed on the device is needed on the host: the model then runs eagerly. */
export class NeedsValues extends SinterError {
  constructor(readonly read: ValueRead) {
    super(read.node.opType, `${read.node.describe()}: ${read.what} is computed from tensor values (${read.value.describe()}), so it cannot be known while tracing`);
  }
}

/**
 * An ONNX sequence (a list of tensors, as SplitToSequence or SequenceConstruct make): it lives between nodes, in
 * loop-carried state and in subgraphs; graph inputs and outputs are tensors only.
 */
export class OnnxSequence {
  constructor(
    readonly items: readonly Val[],
    readonly elemType: OnnxDType | undefined,
  ) {}
}

/** What a name holds while a graph runs: a tensor (device or host) or a sequence. */
export type Value = Val | OnnxSequence;

/** Values by name, falling back to the enclosing graph's (a subgraph sees its outer scope). */
class Scope {
  private readonly own = new Map<string, Value>();
  constructor(private readonly parent?: Scope) {}
  get(name: string): Value | undefined {
    return this.own.get(name) ?? this.parent?.get(name);
  }
  set(name: string, v: Value): void {
    this.own.set(name, v);
  }
}

/** What a run needs besides the graph: the handlers' context, and (eager runs) the tensors made here, to free later. */
export interface RunState {
  readonly ctx: OpContext;
  /** Eager runs: every tensor a node made, freed after the run except the outputs. Null while tracing (jit's tidy frees them). */
  readonly made: Set<Tensor> | null;
}

export type Interpretation<T> = Generator<ValueRead, T, HostTensor>;

/** Runs `g` on `inputs` (by name) with `outer` as its enclosing scope; returns its outputs in order. */
export function* runGraph(g: OnnxGraph, inputs: ReadonlyMap<string, Value>, state: RunState, outer?: Scope): Interpretation<Value[]> {
  const env = new Scope(outer);
  for (const [k, v] of g.constants) env.set(k, v);
  for (const [k, v] of inputs) env.set(k, v);
  for (const node of g.nodes) {
    const ins = node.inputs.map((name) => {
      if (!name) return undefined;
      const v = env.get(name);
      if (!v) node.fail(`its input '${name}' is not produced by any earlier node, initializer or graph input`);
      return v;
    });
    let outs: (Value | undefined)[];
    try {
      const kind = node.domain === '' ? node.opType : '';
      outs = CONTROL[kind] ? yield* runControl(node, ins, state, env) : SEQUENCE_OPS.has(kind) ? yield* runSequenceOp(node, ins, state.ctx) : yield* runOp(node, tensorsOnly(node, ins), state);
    } catch (e) {
      if (e instanceof NeedsValues || (e instanceof SinterError && e.message.includes(node.describe()))) throw e;
      throw new SinterError(node.opType, `${node.describe()}: ${(e as Error).message}`);
    }
    node.outputs.forEach((name, i) => {
      if (!name) return;
      const v = outs[i];
      if (v === undefined) node.fail(`output ${i} ('${name}') is not produced by this importer`);
      const parts = v instanceof OnnxSequence ? v.items : [v];
      for (const t of parts) checkValueBytes(node, `output '${name}'`, t.shape, t instanceof Tensor ? itemSize(t.dtype) : 8);
      env.set(name, v);
    });
  }
  return g.outputs.map((info) => {
    const v = env.get(info.name ?? '');
    if (!v) throw new SinterError('onnx', `graph output '${info.name}' is not produced by any node`);
    return v;
  });
}

/** A device value as a host tensor, read by whoever drives the interpretation. */
function* readValue(v: Value, node: OnnxNode, what: string): Interpretation<HostTensor> {
  if (v instanceof OnnxSequence) node.fail(`${what} must be a tensor, got a sequence`);
  return isHost(v) ? v : yield { value: v, node, what };
}

/** The inputs of an op that takes tensors only. */
function tensorsOnly(node: OnnxNode, ins: readonly (Value | undefined)[]): (Val | undefined)[] {
  return ins.map((v, i) => {
    if (v instanceof OnnxSequence) node.fail(`input ${i} ('${node.inputs[i]}') is a sequence, but this op takes tensors`);
    return v;
  });
}

function asTensor(node: OnnxNode, v: Value | undefined, what: string): Val {
  if (v === undefined || v instanceof OnnxSequence) node.fail(`${what} must be a tensor`);
  return v;
}

// ---- sequences ------------------------------------------------------------------------------------------

const SEQUENCE_OPS = new Set(['SequenceEmpty', 'SequenceConstruct', 'SequenceAt', 'SequenceInsert', 'SequenceErase', 'SequenceLength', 'SplitToSequence', 'ConcatFromSequence']);

function* runSequenceOp(node: OnnxNode, ins: readonly (Value | undefined)[], ctx: OpContext): Interpretation<(Value | undefined)[]> {
  const seqOf = (v: Value | undefined): OnnxSequence => (v instanceof OnnxSequence ? v : node.fail('input 0 must be a sequence'));
  /** A position in [−n, n) (or [−n, n] to insert) made non-negative. */
  const position = function* (v: Value | undefined, n: number, fallback: number, inserting: boolean): Interpretation<number> {
    if (v === undefined) return fallback;
    const p = (yield* readValue(v, node, 'the position')).scalar('position');
    const hi = inserting ? n : n - 1;
    if (!Number.isInteger(p) || p < -n || p > hi) node.fail(`position ${p} is out of range for a sequence of ${n}`);
    return p < 0 ? p + n : p;
  };
  switch (node.opType) {
    case 'SequenceEmpty': {
      const code = node.int('dtype');
      return [new OnnxSequence([], code === undefined ? 'float32' : onnxDType(code, `${node.describe()}'s dtype`))];
    }
    case 'SequenceConstruct': {
      const items = ins.map((v, i) => asTensor(node, v, `input ${i}`));
      return [new OnnxSequence(items, items[0] && (items[0] instanceof Tensor ? items[0].dtype : items[0].dtype))];
    }
    case 'SequenceAt': {
      const seq = seqOf(ins[0]);
      return [seq.items[yield* position(ins[1], seq.items.length, 0, false)]];
    }
    case 'SequenceInsert': {
      const seq = seqOf(ins[0]), items = [...seq.items];
      items.splice(yield* position(ins[2], items.length, items.length, true), 0, asTensor(node, ins[1], 'the tensor'));
      return [new OnnxSequence(items, seq.elemType)];
    }
    case 'SequenceErase': {
      const seq = seqOf(ins[0]), items = [...seq.items];
      if (items.length === 0) node.fail('cannot erase from an empty sequence');
      items.splice(yield* position(ins[1], items.length, items.length - 1, false), 1);
      return [new OnnxSequence(items, seq.elemType)];
    }
    case 'SequenceLength':
      return [new HostTensor('int64', [], [seqOf(ins[0]).items.length])];
    case 'SplitToSequence': {
      const t = ctx.dev(asTensor(node, ins[0], 'input'), 'input');
      const axisAttr = node.int('axis', 0), axis = axisAttr < 0 ? axisAttr + t.ndim : axisAttr;
      if (axis < 0 || axis >= t.ndim) node.fail(`axis ${axisAttr} is out of range for ${t.describe()}`);
      const size = t.shape[axis]!;
      let sizes: number[];
      if (ins[1] === undefined) sizes = new Array<number>(size).fill(1);
      else {
        const split = yield* readValue(ins[1], node, 'split');
        const given = Array.from(split.data);
        if (split.shape.length === 0) sizes = Array.from({ length: Math.ceil(size / given[0]!) }, (_, i) => Math.min(given[0]!, size - i * given[0]!));
        else sizes = given;
        if (sizes.some((n) => !Number.isInteger(n) || n < 0) || sizes.reduce((a, b) => a + b, 0) !== size) node.fail(`split [${sizes.join(', ')}] does not divide the ${size} entries of axis ${axis}`);
      }
      const squeezeDim = ins[1] === undefined && node.int('keepdims', 1) === 0;
      let at = 0;
      const items = sizes.map((n) => {
        const part = narrow(t, axis, at, n);
        at += n;
        return squeezeDim ? squeeze(part, axis) : part;
      });
      return [new OnnxSequence(items, t.dtype)];
    }
    default: {
      // ConcatFromSequence
      const seq = seqOf(ins[0]);
      if (seq.items.length === 0) node.fail('cannot concatenate an empty sequence');
      const ts = seq.items.map((v, i) => ctx.dev(v, `sequence item ${i}`));
      const newAxis = node.int('new_axis', 0) === 1, rank = ts[0]!.ndim + (newAxis ? 1 : 0);
      const axisAttr = node.int('axis') ?? node.fail("needs the attribute 'axis'");
      const axis = axisAttr < 0 ? axisAttr + rank : axisAttr;
      if (axis < 0 || axis >= rank) node.fail(`axis ${axisAttr} is out of range for rank ${rank}`);
      return [newAxis ? stack(ts, axis) : cat(ts, axis)];
    }
  }
}

function* runOp(node: OnnxNode, given: readonly (Val | undefined)[], state: RunState): Interpretation<(Value | undefined)[]> {
  const entry = OPS.get(node.domain === '' ? node.opType : `${node.domain}.${node.opType}`)!;
  const ins = [...given];
  for (const k of entry.hostInputs ?? []) {
    const v = ins[k];
    if (v instanceof Tensor) ins[k] = yield* readValue(v, node, `input ${k} ('${node.inputs[k]}')`);
  }
  const call = () => (entry.host && ins.filter((v) => v !== undefined).every(isHost) ? entry.host(node, ins as (HostTensor | undefined)[]) : null) ?? entry.run(node, ins, state.ctx);
  if (!state.made) return call();
  // Eager: this node's temporaries are freed now; what it returns lives until the run ends.
  const outs = tidy(call);
  for (const v of outs) if (v instanceof Tensor && !given.includes(v)) state.made.add(v);
  return outs;
}

// ---- If, Loop, Scan -------------------------------------------------------------------------------

function* runControl(node: OnnxNode, ins: readonly (Value | undefined)[], state: RunState, env: Scope): Interpretation<(Value | undefined)[]> {
  switch (node.opType) {
    case 'If': {
      const cond = (yield* readValue(ins[0]!, node, 'the condition')).scalar('the If condition');
      const branch = node.subgraphs.get(cond !== 0 ? 'then_branch' : 'else_branch')!;
      return yield* runGraph(branch, new Map(), state, env);
    }
    case 'Loop':
      return yield* runLoop(node, ins, state, env);
    default:
      return yield* runScan(node, ins, state, env);
  }
}

/** Stacks per-iteration values along a new axis `axis` (device tensors; host values are uploaded). */
function stackValues(ctx: OpContext, values: readonly Val[], axis: number, what: string): Tensor {
  const ts = values.map((v, i) => ctx.dev(v, `${what} (iteration ${i})`));
  return stack(ts, axis);
}

/** An empty scan output when a loop ran no iteration: its shape from the body's declared output, [0, …dims]. */
function emptyOutput(node: OnnxNode, info: ValueInfoProto, ctx: OpContext): Tensor {
  const t = info.type?.tensorType;
  const dims = t?.shape?.dim.map((d) => d.dimValue);
  if (!t || !dims || dims.some((d) => d === undefined)) node.fail(`ran no iteration, and the body's output '${info.name}' has no static shape to make its empty scan output from`);
  return full([0, ...(dims as number[])], 0, { dtype: deviceDType(onnxDType(t.elemType, `output '${info.name}'`), `output '${info.name}'`), device: ctx.device });
}

function* runLoop(node: OnnxNode, ins: readonly (Value | undefined)[], state: RunState, env: Scope): Interpretation<(Value | undefined)[]> {
  const body = node.subgraphs.get('body')!;
  const [trip, cond0, ...initial] = ins;
  const max = trip === undefined ? Infinity : (yield* readValue(trip, node, 'the trip count M')).scalar('M');
  let cond = cond0 === undefined ? true : (yield* readValue(cond0, node, 'the initial condition')).scalar('cond') !== 0;
  if (trip === undefined && cond0 === undefined) node.fail('has neither a trip count M nor a condition, so it would never end');
  const names = body.inputs.map((v) => v.name ?? '');
  if (names.length !== initial.length + 2) node.fail(`its body takes ${names.length} inputs, but the node passes ${initial.length} loop-carried values (the body needs 2 more: iteration number, condition)`);
  const nCarried = initial.length, nScan = body.outputs.length - 1 - nCarried;
  if (nScan < 0) node.fail(`its body returns ${body.outputs.length} values, fewer than the condition and ${nCarried} loop-carried values`);
  let carried = initial as Value[];
  const scans: Val[][] = Array.from({ length: nScan }, () => []);
  // Eager runs free each iteration's temporaries, and carried values once replaced, so a long loop (a while loop
  // decoding token by token) holds one iteration's state, not all of them. `owned`: what this loop made and keeps.
  const owned = new Set<Tensor>();
  for (let i = 0; i < max && cond; i++) {
    const feed = new Map<string, Value>([[names[0]!, new HostTensor('int64', [], [i])], [names[1]!, new HostTensor('bool', [], [1])]]);
    carried.forEach((v, k) => feed.set(names[k + 2]!, v));
    const made = state.made && new Set<Tensor>();
    const outs = yield* runGraph(body, feed, { ctx: state.ctx, made }, env);
    cond = (yield* readValue(outs[0]!, node, `the body's condition at iteration ${i}`)).scalar('cond') !== 0;
    carried = outs.slice(1, 1 + nCarried);
    outs.slice(1 + nCarried).forEach((v, k) => scans[k]!.push(asTensor(node, v, `scan output ${k}`)));
    if (made) {
      const live = new Set<Val>([...carried.flatMap((v) => (v instanceof OnnxSequence ? v.items : [v])), ...scans.flat()]);
      for (const t of made) (live.has(t) ? owned.add(t) : t.dispose());
      for (const t of owned) {
        if (!live.has(t)) {
          owned.delete(t);
          t.dispose();
        }
      }
    }
  }
  const stacked = scans.map((list, k) => (list.length > 0 ? stackValues(state.ctx, list, 0, `scan output ${k}`) : emptyOutput(node, body.outputs[1 + nCarried + k]!, state.ctx)));
  for (const t of [...owned, ...stacked]) state.made?.add(t);
  return [...carried, ...stacked];
}

function* runScan(node: OnnxNode, ins: readonly (Value | undefined)[], state: RunState, env: Scope): Interpretation<(Value | undefined)[]> {
  const body = node.subgraphs.get('body')!;
  const m = node.int('num_scan_inputs') ?? node.fail("needs the attribute 'num_scan_inputs'");
  const nState = ins.length - m;
  const nOut = body.outputs.length - nState;
  if (nState < 0 || nOut < 0) node.fail(`has ${ins.length} inputs and num_scan_inputs=${m}, which its body (${body.inputs.length} inputs, ${body.outputs.length} outputs) does not match`);
  const axisOf = (list: number[] | undefined, k: number, rank: number) => {
    const a = list?.[k] ?? 0;
    if (a < -rank || a >= rank) node.fail(`scan axis ${a} is out of range for rank ${rank}`);
    return a < 0 ? a + rank : a;
  };
  const inAxes = node.ints('scan_input_axes'), inDirs = node.ints('scan_input_directions');
  const outAxes = node.ints('scan_output_axes'), outDirs = node.ints('scan_output_directions');
  const seqs = ins.slice(nState).map((v, k) => {
    const t = state.ctx.dev(asTensor(node, v, `scan input ${k}`), `scan input ${k}`);
    const axis = axisOf(inAxes, k, t.ndim);
    return { t: inDirs?.[k] === 1 ? flip(t, [axis]) : t, axis };
  });
  const length = seqs[0]?.t.shape[seqs[0].axis] ?? node.fail('has no scan inputs');
  for (const s of seqs) if (s.t.shape[s.axis] !== length) node.fail(`its scan inputs have different lengths (${seqs.map((q) => q.t.shape[q.axis]).join(', ')})`);
  const names = body.inputs.map((v) => v.name ?? '');
  let carried = ins.slice(0, nState) as Value[];
  const outs: Val[][] = Array.from({ length: nOut }, () => []);
  for (let i = 0; i < length; i++) {
    const feed = new Map<string, Value>();
    carried.forEach((v, k) => feed.set(names[k]!, v));
    seqs.forEach((s, k) => feed.set(names[nState + k]!, squeeze(narrow(s.t, s.axis, i, 1), s.axis)));
    const res = yield* runGraph(body, feed, state, env);
    carried = res.slice(0, nState);
    res.slice(nState).forEach((v, k) => outs[k]!.push(asTensor(node, v, `scan output ${k}`)));
  }
  const stacked = outs.map((list, k) => {
    if (list.length === 0) return emptyOutput(node, body.outputs[nState + k]!, state.ctx);
    const rank = list[0]!.shape.length + 1;
    const axis = axisOf(outAxes, k, rank);
    const t = stackValues(state.ctx, list, axis, `scan output ${k}`);
    return outDirs?.[k] === 1 ? flip(t, [axis]) : t;
  });
  for (const t of stacked) state.made?.add(t);
  return [...carried, ...stacked];
}

// ---- drivers ----------------------------------------------------------------------------------------

/** Runs an interpretation that must not read device values (a trace): a read throws NeedsValues. */
export function runTraced<T>(it: Interpretation<T>): T {
  const r = it.next();
  if (!r.done) throw new NeedsValues(r.value);
  return r.value;
}

/** Runs an interpretation eagerly, reading each requested device value. */
export async function runEager<T>(it: Interpretation<T>): Promise<T> {
  let r = it.next();
  while (!r.done) {
    const { value } = r.value;
    const data = await value.data();
    r = it.next(new HostTensor(value.dtype as OnnxDType, value.shape, Array.from(data)));
  }
  return r.value;
}
