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
  /** First call with this signature: tracing, passes, compilation and the run (ms). */
  coldMs: number;
  /** Median of later calls (ms; null until a second call). */
  warmMs: number | null;
}

export interface Jitted<Args extends unknown[], R> {
  (...args: Args): R;
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
  coldMs: number;
  warm: number[];
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
 * later calls replay the plan. Tensors `fn` captures (module parameters) are graph constants.
 */
export function jit<Args extends unknown[], R extends TensorTree>(fn: (...args: Args) => R, options: JitOptions = {}): Jitted<Args, R> {
  const strategy = resolveStrategy(options.fusion);
  const plans = new Map<string, Compiled>();
  let last: Compiled | null = null;

  const compile = (args: Args): Compiled => {
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
    return { graph: optimised, plan, groups: groupIds, template, strategy: strategy.name, coldMs: performance.now() - t0, warm: [] };
  };

  const run = (...args: Args): R => {
    // Inside another trace, just inline.
    if (activeTrace()) return fn(...args);
    const key = signature(args);
    let c = plans.get(key);
    const t0 = performance.now();
    const fresh = !c;
    if (!c) plans.set(key, (c = compile(args)));
    const outs = c.plan.run(args.filter((a): a is Tensor => a instanceof Tensor));
    const ms = performance.now() - t0;
    if (fresh) c.coldMs = ms;
    else c.warm.push(ms);
    last = c;
    return unflatten(c.template, outs) as R;
  };

  const current = (): Compiled => {
    if (!last) throw new SinterError('jit', 'nothing compiled yet: call the jitted function first');
    return last;
  };
  return Object.assign(run, {
    report(): JitReport {
      const c = current();
      const warm = [...c.warm].sort((a, b) => a - b);
      return {
        device: c.graph.device,
        strategy: c.strategy,
        kernels: c.plan.kernelReports(),
        groups: c.groups,
        peakBytes: c.plan.memory.peakBytes,
        unplannedBytes: c.plan.memory.unplannedBytes,
        coldMs: c.coldMs,
        warmMs: warm.length ? warm[Math.floor(warm.length / 2)]! : null,
      };
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
