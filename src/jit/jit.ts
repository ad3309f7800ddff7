import { type DeviceName, getBackend } from '../backend/backend.js';
import { SinterError } from '../errors.js';
import { Tensor } from '../tensor/tensor.js';
import { tidy } from '../tensor/scope.js';
import { Graph, type Node } from './graph.js';
import { storageVersion } from '../tensor/version.js';
import { type FusionOption, checkGroups, fuseGroups, resolveStrategy } from './fusion.js';
import { eliminateCommonSubexpressions } from './passes/cse.js';
import { eliminateDeadCode } from './passes/dce.js';
import { foldBatchNorm } from './passes/fold-batchnorm.js';
import { foldConstants } from './passes/fold-constants.js';
import { type KernelReport, Plan } from './plan.js';
import type { CompileProgress } from '../backend/webgpu/plan.js';
import { type TensorGuard, Trace, type ValueGuard, activeTrace, withTrace } from './trace.js';
import { INSPECT, formatReport } from './report.js';
import { profilerHooks } from '../profiler/hooks.js';
import { type AutocastDType, autocastKey, traceAutocast } from '../quant/autocast.js';

/** What a jitted function may return: a tensor, or arrays/objects of tensors. */
export type TensorTree = Tensor | readonly TensorTree[] | { readonly [key: string]: TensorTree };

export interface JitOptions {
  /** How ops are grouped into kernels (default 'default'). */
  fusion?: FusionOption;
  /**
   * How many signatures (argument shapes, dtypes, devices) keep a compiled plan (default 16); the
   * least recently used one beyond that is freed, and compiled again if it comes back.
   */
  cacheSize?: number;
  /**
   * 'float16' traces `fn` under `autocast('float16', …)` (matmuls and convolutions in float16, sensitive ops in
   * float32, as torch.autocast), whatever the caller's state; without it, calls inside and outside `sn.autocast`
   * have plans of their own.
   */
  autocast?: AutocastDType;
}

/** A running summary of call times (ms): bounded however many calls there are. */
export interface TimingSummary {
  count: number;
  meanMs: number;
  minMs: number;
  maxMs: number;
  /** Median of the most recent calls (up to 64). */
  medianMs: number;
}

/** How a jitted function's signature cache served its calls. */
export interface JitCacheStats {
  /** Signatures with a compiled plan now. */
  entries: number;
  capacity: number;
  hits: number;
  misses: number;
  /** Plans freed because the cache was full. */
  evictions: number;
  /** Plans rebuilt because a guard failed: a captured tensor was replaced, freed or written in place, or a module's `training` changed. */
  retraces: number;
}

export type { CompileProgress };

/** Keyword options of `compileWith`. */
export interface CompileOptions {
  /**
   * Hears how many of the signature's distinct pipelines are compiled: on WebGPU `{ done: 0, total }`
   * first, then one event per pipeline as its compilation finishes (`done` rising to `total`); on the
   * CPU, whose kernels need no compiling, a single `{ done: 0, total: 0 }`. A signature compiled
   * before gives a single `{ done: total, total }`.
   */
  onProgress?: (progress: CompileProgress) => void;
}

export interface ReportFormat {
  /** Also print each kernel's generated source (WGSL on WebGPU, JavaScript on the CPU). */
  source?: boolean;
}

export interface JitReport {
  device: DeviceName;
  strategy: string;
  kernels: KernelReport[];
  /** Node ids of the optimised graph (see `graph()`) fused into each multi-op kernel. */
  groups: number[][];
  /** Bytes of intermediate buffers the memory plan allocates. */
  peakBytes: number;
  /** Bytes the intermediates would take with one buffer each. */
  unplannedBytes: number;
  /**
   * Compiling this signature (ms): tracing, passes, fusion, the memory plan and, on WebGPU with
   * `compile()`, compiling the pipelines (until all of them were compiled, in parallel). A first call
   * without `compile()` creates the pipelines as it records the kernels, while the device runs the
   * kernels recorded before (see WebGpuPlan.run): that time is in `coldMs` only.
   */
  compileMs: number;
  /** The first call with this signature (ms), its compilation included unless `compile()` ran before; null until it is called. */
  coldMs: number | null;
  /**
   * Median of recent later calls (ms; null until a second call). On WebGPU from each call until the
   * host learnt that the device finished its work (sampled: one measurement in flight at a time), so
   * the GPU's time is in it, and so is the time the host's thread kept the notice waiting (time calls
   * that are awaited, e.g. with `await synchronize()` between them); on the CPU the calls' own time.
   */
  warmMs: number | null;
  /** Later calls' summary (the time `warmMs` describes); null until a second call. */
  warm: TimingSummary | null;
  /** Later calls' time on the host alone, until each call returned (on WebGPU the GPU runs on after that). */
  hostMs: TimingSummary | null;
  /**
   * Wall time of the last `profile()` call (ms), until the device had finished its work (on WebGPU
   * the kernels' `gpuMs` add up to at most this); null if this signature was never profiled.
   */
  profiledMs: number | null;
  /**
   * Calls of this signature submitted to the device whose work has not finished, now and at most so
   * far: on WebGPU a call returns before its kernels ran, so several can overlap (0 on the CPU).
   */
  inFlight: { now: number; peak: number };
  /** A short table: one row per kernel (ops fused, bytes, FLOPs, measured time) and the totals; `{ source: true }` adds the generated code. */
  toString(format?: ReportFormat): string;
}

export interface Jitted<Args extends unknown[], R> {
  (...args: Args): R;
  /**
   * Compiles the plan for these arguments' signature without running it, and resolves to its report:
   * on WebGPU every pipeline is compiled at once with createComputePipelineAsync (in parallel where the
   * implementation compiles in parallel, and off the page's thread in browsers), and a kernel the
   * compiler rejects rejects the promise. Calls with this signature then start at once; without it,
   * the first call creates its pipelines synchronously, one after another. Awaiting it before serving
   * (`await f.compile(exampleInput)`) takes compilation out of the first call's latency.
   */
  compile(...args: Args): Promise<JitReport>;
  /**
   * `compile` with keyword options: `await f.compileWith([x, w], { onProgress })` compiles the
   * signature of `f(x, w)` and reports its pipelines compiled (k of n) to `onProgress`. The
   * arguments come as one array so that options never mix with `f`'s own arguments.
   */
  compileWith(args: Args, options?: CompileOptions): Promise<JitReport>;
  /**
   * Runs the plan for these arguments once, timing every kernel, waits until the device has finished,
   * discards the results and resolves to the report, whose kernels then carry `gpuMs` (WebGPU: from
   * timestamp queries, absent on devices without 'timestamp-query') or `cpuMs` (CPU: performance.now()
   * around each kernel), and `profiledMs` the call's wall time. On WebGPU each kernel runs in a compute
   * pass of its own bracketed by timestamps; ordinary calls use one pass and take no timestamps, so
   * timing costs them nothing. Compiles the signature first if needed; counts in neither coldMs nor warmMs.
   */
  profile(...args: Args): Promise<JitReport>;
  /** The plan of the most recent signature; prints as a table (`console.log(f.report())`, `String(f.report())`). */
  report(): JitReport;
  /** Hits, misses, evictions and retraces of the signature cache. */
  stats(): JitCacheStats;
  /** The optimised graph of the most recent signature (before fusion; `report().groups` are its fused kernels). */
  graph(): Graph;
  /** Frees every compiled plan's buffers and the graphs' constants. */
  dispose(): void;
}

interface Compiled {
  graph: Graph;
  plan: Plan;
  groups: number[][];
  template: unknown;
  strategy: string;
  compileMs: number;
  /** The pipelines' asynchronous compilation while `compile()` awaits it. */
  compiling: Promise<void> | null;
  coldMs: number | null;
  warm: Timings;
  host: Timings;
  /** A warm call's measurement until the device finished, while it is in flight (WebGPU). */
  measuring: boolean;
  profile: { kernelMs: number[] | null; wallMs: number } | null;
  tensorGuards: TensorGuard[];
  valueGuards: ValueGuard[];
}

/** count/mean/min/max of every sample, and the median of the last RECENT. */
class Timings {
  private static readonly RECENT = 64;
  private count = 0;
  private sum = 0;
  private min = Infinity;
  private max = -Infinity;
  private readonly recent: number[] = [];

  add(ms: number): void {
    this.recent[this.count % Timings.RECENT] = ms;
    this.count++;
    this.sum += ms;
    this.min = Math.min(this.min, ms);
    this.max = Math.max(this.max, ms);
  }

  summary(): TimingSummary | null {
    if (this.count === 0) return null;
    const sorted = [...this.recent].sort((a, b) => a - b);
    return { count: this.count, meanMs: this.sum / this.count, minMs: this.min, maxMs: this.max, medianMs: sorted[Math.floor(sorted.length / 2)]! };
  }
}

/** True while every captured tensor is the one traced (not freed, same storage, not written in place) and every guarded value is unchanged. */
function guardsHold(c: Compiled): boolean {
  for (const g of c.tensorGuards) {
    if (g.tensor.isDisposed || g.tensor.storage !== g.storage || storageVersion(g.storage) !== g.version) return false;
  }
  return c.valueGuards.every((g) => Object.is(g.read(), g.value));
}

/** Frees a compiled signature: its plan's buffers and its graphs' constants (user tensors keep their own references). */
function free(c: Compiled): void {
  c.plan.dispose();
  freeConstants([...c.graph.nodes, ...c.plan.graph.nodes]);
}

function freeConstants(nodes: readonly Node[]): void {
  for (const n of nodes) if (n.kind === 'constant') n.tensor.dispose();
}

function isPromiseLike(v: unknown): v is PromiseLike<unknown> {
  return typeof (v as { then?: unknown } | null)?.then === 'function';
}

function signature(args: readonly unknown[]): string {
  return args
    .map((a, i) => {
      if (a instanceof Tensor) return `${a.device}:${a.dtype}[${a.shape.join(',')}]`;
      // Tensors inside other arguments would be traced as constants and keyed by nothing: stale results.
      if (holdsTensor(a)) throw new SinterError('jit', `argument ${i} holds tensors inside an array or object: pass each tensor as an argument of its own`);
      return JSON.stringify(a, distinctValues) ?? String(a);
    })
    .join('|');
}

/** Keeps apart in a key what JSON would merge (NaN, ±Infinity and null; −0 and 0; undefined and null) or refuse (bigint). */
function distinctValues(_: string, v: unknown): unknown {
  if (typeof v === 'number' && (!Number.isFinite(v) || Object.is(v, -0))) return `#number:${Object.is(v, -0) ? '-0' : String(v)}`;
  if (typeof v === 'bigint') return `#bigint:${v}`;
  return v === undefined ? '#undefined' : v;
}

function holdsTensor(v: unknown, depth = 0): boolean {
  if (v instanceof Tensor) return true;
  if (depth > 8 || v === null || typeof v !== 'object' || ArrayBuffer.isView(v)) return false;
  return (Array.isArray(v) ? v : Object.values(v)).some((x) => holdsTensor(x, depth + 1));
}

/** The tensors of a result in order, and a template to rebuild its structure. */
function flatten(tree: unknown, out: Tensor[]): unknown {
  if (tree instanceof Tensor) return out.push(tree) - 1;
  if (Array.isArray(tree)) return tree.map((t) => flatten(t, out));
  if (tree && typeof tree === 'object') return Object.fromEntries(Object.entries(tree).map(([k, v]) => [k, flatten(v, out)]));
  throw new SinterError('jit', `the traced function must return tensors (or arrays/objects of them), got ${tree === null ? 'null' : typeof tree}`);
}
function unflatten(template: unknown, values: readonly Tensor[]): unknown {
  if (typeof template === 'number') return values[template];
  if (Array.isArray(template)) return template.map((t) => unflatten(t, values));
  return Object.fromEntries(Object.entries(template as object).map(([k, v]) => [k, unflatten(v, values)]));
}

/**
 * Compiles `fn` per input signature (shapes, dtypes, device of its tensor arguments; other arguments
 * are part of the signature by value). The first call with a signature runs `fn` on symbolic
 * tensors to record a graph, optimises it (dead code, common subexpressions, constant folding,
 * conv/linear + batch-norm folding), fuses kernels by the strategy, plans memory, and runs the plan;
 * later calls replay the plan (on WebGPU: every kernel recorded into one command buffer, one submit
 * per call). `fn` must be synchronous and return tensors.
 *
 * What a plan holds, and what makes it retrace:
 * - Tensors `fn` captures (module parameters and buffers) are graph constants, guarded: when one is
 *   freed (`loadStateDict` and `module.to(...)` free what they replace) or written in place (its
 *   storage version bumped), or a module's `training` flag read while tracing changes, the next call
 *   traces again. A tensor assigned to a field in place of another that stays alive is not noticed:
 *   dispose the old one, or `f.dispose()`.
 * - `rand`, `randn`, `randint` (and so dropout in training) are graph nodes that draw fresh values on
 *   every call from the generator the code used (the default one unless it passed `generator`), in
 *   the eager order: after `manualSeed(s)` a call gives what the eager function gives after it. A
 *   draw with its own `{ seed }` gives the same values on every call, as it does eagerly.
 * - JavaScript values `fn` reads from its closure (a captured number, an `if` on a flag other than
 *   `training`) are frozen into the graph when it is traced, as in every tracing JIT: pass values that
 *   change as arguments (tensors, or numbers, which then key the signature) instead.
 *
 * Results are always fresh tensors: an output that is an input, a captured tensor or a view of one
 * is returned as a contiguous copy (eager code would return the tensor or view itself).
 * Signatures are cached up to `cacheSize` (LRU, see `stats()`). `await f.compile(...args)` compiles
 * a signature ahead of its first call; `await f.profile(...args)` times its kernels.
 */
export function jit<Args extends unknown[], R extends TensorTree>(fn: (...args: Args) => R, options: JitOptions = {}): Jitted<Args, R> {
  const strategy = resolveStrategy(options.fusion);
  const capacity = options.cacheSize ?? 16;
  if (!Number.isInteger(capacity) || capacity < 1) throw new SinterError('jit', `cacheSize must be a positive integer, got ${JSON.stringify(options.cacheSize)}`);
  if (options.autocast !== undefined && options.autocast !== 'float16') throw new SinterError('jit', `autocast must be 'float16', got ${JSON.stringify(options.autocast)}`);
  const plans = new Map<string, Compiled>();
  const counts = { hits: 0, misses: 0, evictions: 0, retraces: 0 };
  let last: Compiled | null = null;

  /** Traces `fn` for these arguments and builds its plan (pipelines not yet made); frees what it made if anything fails. */
  const build = (args: Args): Compiled => {
    const t0 = performance.now();
    const tensors = args.filter((a): a is Tensor => a instanceof Tensor);
    const device = tensors[0]?.device;
    if (!device) throw new SinterError('jit', 'the jitted function needs at least one tensor argument');
    for (const t of tensors) {
      if (t.device !== device) throw new SinterError('jit', `all tensor arguments must be on one device, got ${tensors.map((x) => x.device).join(', ')}`);
    }
    const trace = new Trace(device);
    let template: unknown;
    let graph: Graph | null = null;
    let plan: Plan | null = null;
    try {
      graph = tidy(() =>
        withTrace(trace, () => {
          let index = 0;
          const symbolic = args.map((a) => (a instanceof Tensor ? trace.input(a, index++) : a)) as Args;
          const result: unknown = traceAutocast(options.autocast, () => fn(...symbolic));
          if (isPromiseLike(result)) {
            // The rest of the async function runs after tracing ended and fails there: that rejection is expected.
            Promise.resolve(result).catch(() => {});
            throw new SinterError('jit', 'fn returned a Promise; traced functions must be synchronous');
          }
          const outs: Tensor[] = [];
          template = flatten(result, outs);
          return trace.finish(outs);
        }),
      );
      eliminateDeadCode(graph);
      eliminateCommonSubexpressions(graph);
      foldConstants(graph);
      foldBatchNorm(graph);
      eliminateDeadCode(graph);
      const optimised = new Graph(graph.device, [...graph.nodes], [...graph.outputs]);
      const groups = checkGroups(graph, strategy.groups(optimised));
      const position = new Map(graph.nodes.map((n, i) => [n.id, i]));
      const groupIds = groups.map((g) => g.members.map((n) => n.id).sort((a, b) => position.get(a)! - position.get(b)!));
      const fusedOps = fuseGroups(graph, groups);
      plan = new Plan(graph, fusedOps);
      return {
        graph: optimised, plan, groups: groupIds, template, strategy: strategy.name, compileMs: performance.now() - t0, compiling: null,
        coldMs: null, warm: new Timings(), host: new Timings(), measuring: false, profile: null,
        tensorGuards: trace.tensorGuards(), valueGuards: trace.valueGuards,
      };
    } catch (e) {
      plan?.dispose();
      for (const t of trace.constantTensors()) t.dispose();
      if (graph) freeConstants(graph.nodes);
      throw e;
    }
  };

  /** The cached plan for `key` (as most recently used), or null when there is none or its guards fail (then it is freed). */
  const lookup = (key: string): Compiled | null => {
    const c = plans.get(key);
    if (!c) return null;
    plans.delete(key);
    if (c.compiling === null && !guardsHold(c)) {
      counts.retraces++;
      if (last === c) last = null;
      free(c);
      return null;
    }
    plans.set(key, c);
    counts.hits++;
    return c;
  };
  const insert = (key: string, c: Compiled): void => {
    counts.misses++;
    plans.set(key, c);
    for (const [k, old] of plans) {
      if (plans.size <= capacity) break;
      plans.delete(k);
      counts.evictions++;
      if (last === old) last = null;
      free(old);
    }
  };
  const forget = (key: string, c: Compiled): void => {
    if (plans.get(key) === c) plans.delete(key);
    if (last === c) last = null;
    free(c);
  };

  /** The compiled signature of these arguments, compiled now with its pipelines compiled asynchronously if new. */
  const compiled = async (args: Args, what: string, onProgress?: CompileOptions['onProgress']): Promise<Compiled> => {
    if (activeTrace()) throw new SinterError('jit', `${what}() cannot be used while another function is traced`);
    const key = signature(args) + autocastKey(options.autocast);
    let c = lookup(key);
    if (c) {
      await c.compiling;
      const total = c.plan.pipelineCount;
      onProgress?.({ done: total, total });
    } else {
      const t0 = performance.now();
      const fresh = build(args);
      insert(key, (c = fresh));
      fresh.compiling = fresh.plan.compile(onProgress).then(
        () => {
          fresh.compileMs = performance.now() - t0;
          fresh.compiling = null;
        },
        (e: unknown) => {
          forget(key, fresh);
          throw e;
        },
      );
      await fresh.compiling;
    }
    return c;
  };

  const run = (...args: Args): R => {
    // Inside another trace, just inline.
    if (activeTrace()) return traceAutocast(options.autocast, () => fn(...args));
    const key = signature(args) + autocastKey(options.autocast);
    let c = lookup(key);
    const t0 = performance.now();
    let outs: Tensor[];
    if (!c) {
      insert(key, (c = build(args)));
      try {
        c.compileMs = performance.now() - t0;
        outs = c.plan.run(args.filter((a): a is Tensor => a instanceof Tensor));
      } catch (e) {
        // A plan whose first run fails (a kernel the device rejects) is not kept.
        forget(key, c);
        throw e;
      }
    } else {
      outs = c.plan.run(args.filter((a): a is Tensor => a instanceof Tensor));
    }
    const ms = performance.now() - t0;
    if (c.coldMs === null) c.coldMs = ms;
    else {
      c.host.add(ms);
      if (c.graph.device !== 'webgpu') c.warm.add(ms);
      else if (!c.measuring) {
        const timed = c;
        timed.measuring = true;
        getBackend('webgpu').synchronize().then(
          () => timed.warm.add(performance.now() - t0),
          () => {},
        ).finally(() => (timed.measuring = false));
      }
    }
    last = c;
    profilerHooks.jit?.(`jit(${fn.name || 'fn'})`, c.graph.device, t0, null);
    return unflatten(c.template, outs) as R;
  };

  const current = (): Compiled => {
    if (!last) throw new SinterError('jit', 'nothing compiled yet: call the jitted function first');
    return last;
  };
  const report = (): JitReport => {
    const c = current();
    const measured = c.profile?.kernelMs;
    const key = c.graph.device === 'webgpu' ? 'gpuMs' : 'cpuMs';
    const warm = c.warm.summary();
    const r: JitReport = {
      device: c.graph.device,
      strategy: c.strategy,
      kernels: c.plan.kernelReports().map((k, i) => (measured ? { ...k, [key]: measured[i] } : k)),
      groups: c.groups,
      peakBytes: c.plan.memory.peakBytes,
      unplannedBytes: c.plan.memory.unplannedBytes,
      compileMs: c.compileMs,
      coldMs: c.coldMs,
      warmMs: warm?.medianMs ?? null,
      warm,
      hostMs: c.host.summary(),
      profiledMs: c.profile?.wallMs ?? null,
      inFlight: c.plan.inFlight(),
      toString: (format?: ReportFormat) => formatReport(r, format),
    };
    // Printed as the table by console.log and util.inspect in Node.
    Object.defineProperty(r, 'toString', { enumerable: false });
    Object.defineProperty(r, INSPECT, { value: () => formatReport(r), enumerable: false });
    return r;
  };

  return Object.assign(run, {
    report,
    stats: (): JitCacheStats => ({ entries: plans.size, capacity, ...counts }),
    async compile(...args: Args): Promise<JitReport> {
      last = await compiled(args, 'compile');
      return report();
    },
    async compileWith(args: Args, options: CompileOptions = {}): Promise<JitReport> {
      if (!Array.isArray(args)) throw new SinterError('jit', `compileWith(args, options) takes the arguments as an array, got ${typeof args}`);
      last = await compiled(args, 'compileWith', options.onProgress);
      return report();
    },
    async profile(...args: Args): Promise<JitReport> {
      const c = await compiled(args, 'profile');
      const t0 = performance.now();
      const { outputs, kernelMs } = await c.plan.profile(args.filter((a): a is Tensor => a instanceof Tensor));
      c.profile = { kernelMs, wallMs: performance.now() - t0 };
      outputs.forEach((t) => t.dispose());
      last = c;
      profilerHooks.jit?.(`jit(${fn.name || 'fn'}).profile`, c.graph.device, t0, report().kernels);
      return report();
    },
    graph: () => current().graph,
    dispose() {
      for (const c of plans.values()) free(c);
      plans.clear();
      last = null;
    },
  });
}
