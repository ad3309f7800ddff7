import { type DeviceName, storageIsLive } from '../../backend/backend.js';
import { SinterError, fmtShape } from '../../errors.js';
import type { Graph } from '../../jit/graph.js';
import type { FusionOption } from '../../jit/fusion.js';
import { type JitReport, type Jitted, jit } from '../../jit/jit.js';
import { keep } from '../../tensor/memory.js';
import { numel } from '../../tensor/shape.js';
import { Tensor } from '../../tensor/tensor.js';
import { type Interpretation, NeedsValues, type OnnxGraph, OnnxSequence, type OnnxUnsupported, type Value, buildGraph, outerNames, runEager, runGraph, runTraced } from './graph.js';
import type { GraphProto, ModelProto, ValueInfoProto } from './proto.js';
import { rewriteQdq } from './qdq.js';
import { OPS, type OpContext, type Val, isHost } from './registry.js';
import { HostTensor, type OnnxDType, deviceDType, onnxDType, unsupportedDType, uploadHost } from './tensor.js';

/** A graph input or output: its name, ONNX element type and shape (a symbolic dim is its name, an unknown one null). */
export interface OnnxValueInfo {
  readonly name: string;
  readonly dtype: OnnxDType;
  readonly shape: readonly (number | string | null)[] | null;
}

export type { OnnxUnsupported } from './graph.js';

/** Thrown by loadOnnx when some nodes or types are unsupported; `unsupported` lists them all. */
export class OnnxUnsupportedError extends SinterError {
  constructor(readonly unsupported: readonly OnnxUnsupported[]) {
    super('loadOnnx', `the model uses ${unsupported.length} unsupported op${unsupported.length > 1 ? 's' : ''}/types:\n` +
      unsupported.map((u) => `  ${u.domain ? `${u.domain}.` : ''}${u.op} (opset ${u.opset})${u.node ? ` at ${u.node}` : ''}: ${u.reason}`).join('\n'));
    this.name = 'OnnxUnsupportedError';
  }
}

/** A model input given as plain values (ONNX test data, int64 ids…): its ONNX type, shape and row-major values. */
export interface OnnxTensorData {
  readonly dtype: OnnxDType;
  readonly shape: readonly number[];
  readonly data: ArrayLike<number>;
}

export type OnnxFeed = Tensor | OnnxTensorData;

/** How a model runs (see OnnxModel.report). */
export interface OnnxReport {
  /** 'jit': traced and compiled per input signature; 'eager': op by op on every call. */
  readonly execution: 'jit' | 'eager';
  /** Why the model runs eagerly (the node and the value it needed), or null. */
  readonly reason: string | null;
  /** The jit's report of the most recent traced signature; null when eager. */
  readonly jit: JitReport | null;
  /** QDQ Conv/MatMul nodes rewritten at load into QLinearConv/QLinearMatMul, which run on the integer GEMM (src/io/onnx/qdq.ts). */
  readonly qdqRewritten: readonly string[];
  toString(): string;
}

export interface OnnxRunOptions {
  /** Trace the model with `jit` (the default) or run every op eagerly. */
  jit?: boolean;
}

/** A graph input's or output's description, or why it cannot be one here (a sequence, map, optional…). */
function valueInfo(v: ValueInfoProto, what: string): OnnxValueInfo | string {
  const name = v.name ?? '';
  const t = v.type;
  if (!t?.tensorType) {
    const kind = t?.sequenceType ? 'a sequence' : t?.mapType ? 'a map' : t?.optionalType ? 'an optional' : t?.sparseTensorType ? 'a sparse tensor' : 'an untyped';
    return `${kind} value; only dense tensors are supported`;
  }
  const dims = t.tensorType.shape?.dim.map((d) => (d.dimValue !== undefined ? d.dimValue : (d.dimParam ?? null)));
  return { name, dtype: onnxDType(t.tensorType.elemType, `${what} '${name}'`), shape: dims ?? null };
}

function signatureOf(infos: readonly OnnxValueInfo[]): string {
  return infos.map((i) => `${i.name}: ${i.dtype}${i.shape ? `[${i.shape.map((d) => d ?? '?').join(', ')}]` : '[…]'}`).join(', ');
}

/**
 * A loaded ONNX model. `run` interprets its nodes in order with sinter ops, traced by `jit` into the graph IR per
 * input signature (so conv+batch-norm folding, fusion and memory planning apply), and returns the named outputs.
 */
export class OnnxModel {
  readonly inputs: readonly OnnxValueInfo[];
  readonly outputs: readonly OnnxValueInfo[];
  readonly opsets: ReadonlyMap<string, number>;
  private readonly graph_: OnnxGraph;
  private readonly qdqRewritten: readonly string[];
  private readonly constantValues = new Set<HostTensor>();
  /** Graph inputs whose values shape computations need while tracing: passed to the trace as host values. */
  private readonly hostFeeds: ReadonlySet<string>;
  /** Device copies of constants, made once and kept for the model's life. */
  private readonly uploads = new WeakMap<HostTensor, Tensor>();
  private readonly held: Tensor[] = [];
  private readonly traced: Jitted<[Record<string, OnnxTensorData>, ...Tensor[]], Record<string, Tensor>>;
  private disposed = false;
  /** Why the model runs eagerly on every call (see report()), or null while it is traced. */
  private eagerReason: string | null = null;
  /** Why the most recent call ran eagerly, or null when it ran traced. */
  private lastEager: string | null = null;

  /**
   * `fusion` is how the traced model's ops are grouped into kernels (`jit`'s option: 'none', 'elementwise',
   * 'default' or your own strategy; default 'default').
   */
  constructor(
    proto: ModelProto,
    readonly device: DeviceName,
    options: { readonly fusion?: FusionOption } = {},
  ) {
    const graph: GraphProto = proto.graph ?? fail('the model has no graph');
    this.opsets = new Map(proto.opsetImport.map((o) => [o.domain === 'ai.onnx' ? '' : (o.domain ?? ''), o.version ?? 1]));
    const problems: OnnxUnsupported[] = [];
    const graphProblem = (what: string, reason: string) => problems.push({ op: 'graph', domain: '', opset: this.opsets.get('') ?? 0, node: what, reason });
    const infos = (list: readonly ValueInfoProto[], what: string): OnnxValueInfo[] => list.flatMap((v) => {
      const info = valueInfo(v, what);
      if (typeof info === 'string') graphProblem(`${what} '${v.name ?? ''}'`, info);
      else {
        const why = unsupportedDType(info.dtype);
        if (why) graphProblem(`${what} '${info.name}'`, `${info.dtype}: ${why}`);
      }
      return typeof info === 'string' ? [] : [info];
    });
    const qdq = rewriteQdq(graph);
    this.qdqRewritten = qdq.rewritten;
    this.graph_ = buildGraph(qdq.graph, this.opsets, problems);
    // Before IR 4, initializers were listed among the inputs (as defaults); they are constants here.
    this.inputs = infos(this.graph_.inputs, 'input');
    this.outputs = infos(graph.output, 'output');
    if (problems.length > 0) throw new OnnxUnsupportedError(problems);
    for (const v of this.graph_.constants.values()) this.constantValues.add(v);
    this.hostFeeds = this.findHostFeeds();
    this.traced = jit((host: Record<string, OnnxTensorData>, ...tensors: Tensor[]) => runTraced(this.interpret(host, tensors, null)), { fusion: options.fusion });
  }

  /**
   * Which graph inputs must be host values: those reaching an input an op needs at trace time (a shape, axes…)
   * through ops that can evaluate on the host.
   */
  private findHostFeeds(): Set<string> {
    const wanted = hostWanted(this.graph_);
    return new Set(this.inputs.filter((v) => wanted.has(v.name) && shapeLike(v)).map((v) => v.name));
  }

  /** How handlers reach the device: constants upload once for the model's life, other host values once per run or trace. */
  private context(made: Set<Tensor> | null): OpContext {
    const local = new Map<HostTensor, Tensor>();
    return {
      device: this.device,
      dev: (v, what) => {
        if (v instanceof Tensor) return v;
        let t = this.uploads.get(v) ?? local.get(v);
        // Uploaded to a WebGPU device since lost: the jit retraces on the new device, and the constants upload again.
        if (t && !storageIsLive(t.storage)) {
          t.dispose();
          t = undefined;
        }
        if (!t) {
          t = uploadHost(v, this.device, what);
          if (this.constantValues.has(v)) {
            this.held.push(keep(t));
            this.uploads.set(v, t);
          } else {
            local.set(v, t);
            // Eager: uploads are reused by later nodes, so they live until the run ends.
            if (made) made.add(keep(t));
          }
        }
        return t;
      },
      host: (v, what) => {
        if (isHost(v)) return v;
        throw new SinterError('onnx', `${what} is needed while the model is traced (as a shape, axes, sizes…), but it is computed ` +
          `from tensor values (${v.describe()}); only constants, initializers and shapes can be read at that point`);
      },
    };
  }

  /**
   * Interprets the graph on host feeds and device tensors; returns the graph outputs on the device. `made` collects
   * the tensors an eager run makes (null while tracing).
   */
  private *interpret(host: Record<string, OnnxTensorData>, tensors: readonly Tensor[], made: Set<Tensor> | null): Interpretation<Record<string, Tensor>> {
    const feeds = new Map<string, Value>();
    let k = 0;
    for (const info of this.inputs) {
      const h = host[info.name];
      feeds.set(info.name, h ? new HostTensor(h.dtype, h.shape, h.data) : tensors[k++]!);
    }
    const ctx = this.context(made);
    const values = yield* runGraph(this.graph_, feeds, { ctx, made });
    const result: Record<string, Tensor> = {};
    this.outputs.forEach((info, i) => {
      const v = values[i]!;
      if (v instanceof OnnxSequence) throw new SinterError('onnx', `graph output '${info.name}' is a sequence; only tensors can be outputs`);
      result[info.name] = ctx.dev(v, `output '${info.name}'`);
    });
    return result;
  }

  /** Runs the model op by op, reading device values where the graph needs them on the host; frees what it made. */
  private async runEagerly(host: Record<string, OnnxTensorData>, tensors: readonly Tensor[]): Promise<Record<string, Tensor>> {
    const made = new Set<Tensor>();
    let out: Record<string, Tensor> | undefined;
    try {
      out = await runEager(this.interpret(host, tensors, made));
      return out;
    } finally {
      const keepers = new Set(out ? Object.values(out) : []);
      for (const t of made) if (!keepers.has(t)) t.dispose();
    }
  }

  /** Checks one input against the model's signature; returns it as a device tensor or host data. */
  private async prepare(info: OnnxValueInfo, feed: OnnxFeed, dims: Map<string, number>): Promise<Tensor | OnnxTensorData> {
    const sig = () => `the model's inputs are ${signatureOf(this.inputs)}`;
    const isTensor = feed instanceof Tensor;
    // A tensor must have the input's device dtype; plain data its ONNX type (int32 data may feed an int64 input,
    // float32 data a float64 one).
    const want = deviceDType(info.dtype, `input '${info.name}'`);
    const narrower = (info.dtype === 'int64' && feed.dtype === 'int32') || (info.dtype === 'float64' && feed.dtype === 'float32');
    if (isTensor ? feed.dtype !== want : feed.dtype !== info.dtype && !narrower) {
      const as = isTensor && info.dtype !== want ? ` (as an ${want} tensor)` : '';
      throw new SinterError('run', `input '${info.name}' is ${feed.dtype} but the model expects ${info.dtype}${as}; ${sig()}`);
    }
    const shape = feed.shape;
    if (info.shape) {
      const bad = (detail: string) => new SinterError('run', `input '${info.name}' has shape ${fmtShape(shape)}, but ${detail}; ${sig()}`);
      if (shape.length !== info.shape.length) throw bad(`the model expects rank ${info.shape.length}`);
      info.shape.forEach((d, i) => {
        if (typeof d === 'number' && d !== shape[i]) throw bad(`the model expects ${d} in dim ${i}`);
        if (typeof d !== 'string') return;
        const seen = dims.get(d);
        if (seen === undefined) dims.set(d, shape[i]!);
        else if (seen !== shape[i]) throw bad(`dim ${i} is '${d}', which an earlier input set to ${seen}`);
      });
    }
    if (this.hostFeeds.has(info.name)) {
      const data = isTensor ? await feed.data() : feed.data;
      return { dtype: info.dtype, shape: [...shape], data: Array.from(data) };
    }
    if (isTensor) return feed.device === this.device ? feed : feed.toDevice(this.device);
    return uploadHost(new HostTensor(info.dtype, shape, feed.data), this.device, `input '${info.name}'`);
  }

  /**
   * Checks every feed against the model's signature and splits them into host values (for the trace) and device
   * tensors, with the tensors uploaded here (`temps`: the caller frees them). `op` names the call in errors.
   */
  private async feedsOf(
    op: string,
    feeds: Readonly<Record<string, OnnxFeed>>,
  ): Promise<{ host: Record<string, OnnxTensorData>; tensors: Tensor[]; temps: Tensor[] }> {
    if (this.disposed) throw new SinterError(op, 'the model was disposed');
    const names = new Set(this.inputs.map((i) => i.name));
    const unknown = Object.keys(feeds).filter((n) => !names.has(n));
    const missing = this.inputs.filter((i) => !(i.name in feeds)).map((i) => i.name);
    if (unknown.length > 0 || missing.length > 0) {
      const quoted = (list: string[]) => list.map((n) => `'${n}'`).join(', ');
      const parts = [unknown.length ? `unknown input${unknown.length > 1 ? 's' : ''} ${quoted(unknown)}` : '', missing.length ? `missing ${quoted(missing)}` : ''];
      throw new SinterError(op, `${parts.filter(Boolean).join('; ')}; the model's inputs are ${signatureOf(this.inputs)}`);
    }
    const dims = new Map<string, number>();
    const prepared: (Tensor | OnnxTensorData)[] = [];
    for (const info of this.inputs) prepared.push(await this.prepare(info, feeds[info.name]!, dims));
    const host: Record<string, OnnxTensorData> = {};
    const tensors: Tensor[] = [];
    this.inputs.forEach((info, i) => {
      const p = prepared[i]!;
      if (p instanceof Tensor) tensors.push(p);
      else host[info.name] = p;
    });
    return { host, tensors, temps: tensors.filter((t) => !Object.values(feeds).includes(t)) };
  }

  /**
   * Runs the model: `feeds` maps every input name to a tensor (of the input's device dtype: int64 inputs as int32)
   * or to plain data. Returns every graph output by name (int64 outputs as int32 tensors).
   */
  async run(feeds: Readonly<Record<string, OnnxFeed>>, options: OnnxRunOptions = {}): Promise<Record<string, Tensor>> {
    const { host, tensors, temps } = await this.feedsOf('run', feeds);
    try {
      // jit needs a tensor argument; a model fed only host values (or none) runs eagerly, as does one whose graph
      // needs device values on the host (a data-dependent If, Loop or shape).
      if (options.jit !== false && tensors.length > 0 && this.eagerReason === null) {
        try {
          const out = this.traced(host, ...tensors);
          this.lastEager = null;
          return out;
        } catch (e) {
          if (!(e instanceof NeedsValues)) throw e;
          this.eagerReason = e.message;
        }
      }
      this.lastEager = this.eagerReason ?? (options.jit === false ? 'run was called with { jit: false }' : 'no input is a device tensor (every input is read on the host), so there is nothing to trace');
      const out = await this.runEagerly(host, tensors);
      // Outputs that are model constants or inputs uploaded here are returned as copies (those are freed or kept elsewhere).
      return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, this.held.includes(t) || temps.includes(t) ? t.clone() : t]));
    } finally {
      temps.forEach((t) => t.dispose());
    }
  }

  /**
   * Runs the traced model once on `feeds`, timing every kernel, and resolves to the jit's report, whose kernels then
   * carry their times (see `jit(...).profile`); the outputs are discarded.
   */
  async profile(feeds: Readonly<Record<string, OnnxFeed>>): Promise<JitReport> {
    const { host, tensors, temps } = await this.feedsOf('profile', feeds);
    try {
      if (tensors.length === 0) {
        throw new SinterError('profile', `only a traced model can be profiled, and tracing needs a tensor input; the model's inputs are ${signatureOf(this.inputs)}`);
      }
      return await this.traced.profile(host, ...tensors);
    } finally {
      temps.forEach((t) => t.dispose());
    }
  }

  /**
   * The model as a synchronous function of its inputs' tensors, in the order of `inputs`, returning the outputs by
   * name: for tracing it into another graph (sn.quant.prepare traces models this way). Inputs are not checked
   * against the signature here; a model that reads an input's values on the host cannot be a function of tensors.
   */
  traceable(): (...tensors: Tensor[]) => Record<string, Tensor> {
    if (this.disposed) throw new SinterError('traceable', 'the model was disposed');
    if (this.hostFeeds.size > 0) {
      throw new SinterError('traceable', `inputs ${[...this.hostFeeds].map((n) => `'${n}'`).join(', ')} are read on the host while the model is traced, so it is not a function of tensors; the model's inputs are ${signatureOf(this.inputs)}`);
    }
    return (...tensors: Tensor[]) => {
      if (tensors.length !== this.inputs.length) throw new SinterError('traceable', `expected ${this.inputs.length} input tensors, got ${tensors.length}; the model's inputs are ${signatureOf(this.inputs)}`);
      return runTraced(this.interpret({}, tensors, null));
    };
  }

  /** The graph IR of the most recent traced signature (after run). */
  get graph(): Graph {
    return this.traced.graph();
  }

  /**
   * How the model runs, and the jit's report for its most recent traced signature (kernels, fusion groups, memory,
   * timings). A model whose graph needs device values on the host while it runs (an If on a computed condition, a
   * Loop that ends on a computed condition, a shape computed from tensor values) cannot be traced: it runs op by op
   * on every call, reading those values after each is computed; `execution` is then 'eager' and `reason` says why.
   */
  report(): OnnxReport {
    const reason = this.eagerReason ?? this.lastEager;
    const execution = reason === null ? 'jit' : 'eager';
    const jitReport = execution === 'jit' ? this.traced.report() : null;
    return {
      execution, reason, jit: jitReport, qdqRewritten: this.qdqRewritten,
      toString: () => {
        const qdq = this.qdqRewritten.length ? `QDQ: ${this.qdqRewritten.length} Conv/MatMul node(s) rewritten into integer kernels (${this.qdqRewritten.join(', ')})\n` : '';
        return qdq + (jitReport ? String(jitReport) : `eager: every call runs op by op, because ${reason}`);
      },
    };
  }

  /** Frees the model's uploaded constants and compiled plans. */
  dispose(): void {
    this.traced.dispose();
    this.held.forEach((t) => t.dispose());
    this.held.length = 0;
    this.disposed = true;
  }
}

/**
 * Whether an input may be fed on the host (its values then key the jit's cache, so each new value retraces): small
 * static tensors (≤ 64 elements) and integer vectors, the shapes, sizes and flags that shape arithmetic reads. Other
 * inputs stay on the device; if the graph needs their values on the host, the model runs eagerly instead.
 */
function shapeLike(v: OnnxValueInfo): boolean {
  const dims = v.shape;
  if (dims && dims.every((d): d is number => typeof d === 'number') && numel(dims) <= 64) return true;
  return !['float32', 'float16', 'float64', 'bfloat16'].includes(v.dtype) && dims !== null && dims.length <= 1;
}

/**
 * The names whose values `g` reads on the host: inputs an op needs at trace time, If conditions, Loop trip counts
 * and conditions, what host-evaluable ops computing those read, and what subgraphs want from their outer scope.
 */
function hostWanted(g: OnnxGraph): Set<string> {
  const wanted = new Set<string>();
  for (let i = g.nodes.length - 1; i >= 0; i--) {
    const node = g.nodes[i]!;
    const control = node.domain !== '' ? undefined : node.opType === 'If' ? [0] : node.opType === 'Loop' ? [0, 1] : node.opType === 'Scan' ? [] : undefined;
    const entry = node.domain === '' ? OPS.get(node.opType) : OPS.get(`${node.domain}.${node.opType}`);
    for (const k of control ?? entry?.hostInputs ?? []) if (node.inputs[k]) wanted.add(node.inputs[k]);
    for (const sub of node.subgraphs.values()) {
      const outer = outerNames(sub);
      for (const name of hostWanted(sub)) if (outer.has(name)) wanted.add(name);
    }
    if (entry?.host && node.outputs.some((o) => wanted.has(o))) for (const name of node.inputs) if (name) wanted.add(name);
  }
  return wanted;
}

function fail(detail: string): never {
  throw new SinterError('loadOnnx', detail);
}
