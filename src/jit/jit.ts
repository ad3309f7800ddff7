import type { DeviceName } from '../backend/backend.js';
import { SinterError } from '../errors.js';
import { Tensor } from '../tensor/tensor.js';
import { tidy } from '../tensor/scope.js';
import { Graph } from './graph.js';
import { type FusionOption, checkGroups, fuseGroups, resolveStrategy } from './fusion.js';
import { eliminateCommonSubexpressions } from './passes/cse.js';
import { eliminateDeadCode } from './passes/dce.js';
import { foldBatchNorm } from './passes/fold-batchnorm.js';
import { foldConstants } from './passes/fold-constants.js';
import { type KernelReport, Plan } from './plan.js';
import { Trace, activeTrace, withTrace } from './trace.js';

/** What a jitted function may return: a tensor, or arrays/objects of tensors. */
export type TensorTree = Tensor | readonly TensorTree[] | { readonly [key: string]: TensorTree };

export interface JitOptions {
  /** How ops are grouped into kernels (default 'default'). */
  fusion?: FusionOption;
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
   * Compiling this signature (ms): tracing, passes, fusion, the memory plan and, on WebGPU, creating
   * the pipelines (with `compile()`: until all of them were compiled, in parallel).
   */
  compileMs: number;
  /**
   * The first call with this signature (ms), its compilation included unless `compile()` ran before;
   * null until it is called. Calls are timed on the host: on WebGPU the GPU runs on after they return
   * (`profile()` times the device).
   */
  coldMs: number | null;
  /** Median of later calls (ms; null until a second call). */
  warmMs: number | null;
  /**
   * Wall time of the last `profile()` call (ms), until the device had finished its work (on WebGPU
   * the kernels' `gpuMs` add up to at most this); null if this signature was never profiled.
   */
  profiledMs: number | null;
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
   * Runs the plan for these arguments once, timing every kernel, waits until the device has finished,
   * discards the results and resolves to the report, whose kernels then carry `gpuMs` (WebGPU: from
   * timestamp queries, absent on devices without 'timestamp-query') or `cpuMs` (CPU: performance.now()
   * around each kernel), and `profiledMs` the call's wall time. On WebGPU each kernel runs in a compute
   * pass of its own bracketed by timestamps; ordinary calls use one pass and take no timestamps, so
   * timing costs them nothing. Compiles the signature first if needed; counts in neither coldMs nor warmMs.
   */
  profile(...args: Args): Promise<JitReport>;
  /** The plan of the most recent signature. */
  report(): JitReport;
  /** The optimised graph of the most recent signature (before fusion; `report().groups` are its fused kernels). */
  graph(): Graph;
  /** Frees every compiled plan's buffers. */
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
  warm: number[];
  profile: { kernelMs: number[] | null; wallMs: number } | null;
}

function signature(args: readonly unknown[]): string {
  return args.map((a) => (a instanceof Tensor ? `${a.device}:${a.dtype}[${a.shape.join(',')}]` : JSON.stringify(a) ?? String(a))).join('|');
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
 * per call). Tensors `fn` captures (module parameters) are graph constants. `await f.compile(...args)`
 * compiles a signature ahead of its first call; `await f.profile(...args)` times its kernels.
 */
export function jit<Args extends unknown[], R extends TensorTree>(fn: (...args: Args) => R, options: JitOptions = {}): Jitted<Args, R> {
  const strategy = resolveStrategy(options.fusion);
  const plans = new Map<string, Compiled>();
  let last: Compiled | null = null;

  /** Traces `fn` for these arguments and builds its plan (pipelines not yet made). */
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
    const graph = tidy(() =>
      withTrace(trace, () => {
        let index = 0;
        const symbolic = args.map((a) => (a instanceof Tensor ? trace.input(a, index++) : a)) as Args;
        const outs: Tensor[] = [];
        template = flatten(fn(...symbolic), outs);
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
    const plan = new Plan(graph, fusedOps);
    return { graph: optimised, plan, groups: groupIds, template, strategy: strategy.name, compileMs: performance.now() - t0, compiling: null, coldMs: null, warm: [], profile: null };
  };

  /** The compiled signature of these arguments, compiled now with its pipelines compiled asynchronously if new. */
  const compiled = async (args: Args, what: string): Promise<Compiled> => {
    if (activeTrace()) throw new SinterError('jit', `${what}() cannot be used while another function is traced`);
    const key = signature(args);
    let c = plans.get(key);
    if (!c) {
      const t0 = performance.now();
      const fresh = build(args);
      plans.set(key, (c = fresh));
      fresh.compiling = fresh.plan.compile().then(() => {
        fresh.compileMs = performance.now() - t0;
        fresh.compiling = null;
      });
    }
    await c.compiling;
    return c;
  };

  const run = (...args: Args): R => {
    // Inside another trace, just inline.
    if (activeTrace()) return fn(...args);
    const key = signature(args);
    let c = plans.get(key);
    const t0 = performance.now();
    if (!c) {
      plans.set(key, (c = build(args)));
      c.plan.createPipelines();
      c.compileMs = performance.now() - t0;
    }
    const outs = c.plan.run(args.filter((a): a is Tensor => a instanceof Tensor));
    const ms = performance.now() - t0;
    if (c.coldMs === null) c.coldMs = ms;
    else c.warm.push(ms);
    last = c;
    return unflatten(c.template, outs) as R;
  };

  const current = (): Compiled => {
    if (!last) throw new SinterError('jit', 'nothing compiled yet: call the jitted function first');
    return last;
  };
  const report = (): JitReport => {
    const c = current();
    const warm = [...c.warm].sort((a, b) => a - b);
    const measured = c.profile?.kernelMs;
    const key = c.graph.device === 'webgpu' ? 'gpuMs' : 'cpuMs';
    return {
      device: c.graph.device,
      strategy: c.strategy,
      kernels: c.plan.kernelReports().map((k, i) => (measured ? { ...k, [key]: measured[i] } : k)),
      groups: c.groups,
      peakBytes: c.plan.memory.peakBytes,
      unplannedBytes: c.plan.memory.unplannedBytes,
      compileMs: c.compileMs,
      coldMs: c.coldMs,
      warmMs: warm.length ? warm[Math.floor(warm.length / 2)]! : null,
      profiledMs: c.profile?.wallMs ?? null,
    };
  };

  return Object.assign(run, {
    report,
    async compile(...args: Args): Promise<JitReport> {
      last = await compiled(args, 'compile');
      return report();
    },
    async profile(...args: Args): Promise<JitReport> {
      const c = await compiled(args, 'profile');
      const t0 = performance.now();
      const { outputs, kernelMs } = await c.plan.profile(args.filter((a): a is Tensor => a instanceof Tensor));
      c.profile = { kernelMs, wallMs: performance.now() - t0 };
      outputs.forEach((t) => t.dispose());
      last = c;
      return report();
    },
    graph: () => current().graph,
    dispose() {
      for (const c of plans.values()) {
        c.plan.dispose();
        // The graphs hold their constants (captured and folded tensors); user tensors keep their own references.
        for (const n of [...c.graph.nodes, ...c.plan.graph.nodes]) if (n.kind === 'constant') n.tensor.dispose();
      }
      plans.clear();
      last = null;
    },
  });
}
