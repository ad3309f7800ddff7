import { getBackend } from '../backend/backend.js';
import { SinterError, fmtShape } from '../errors.js';
import { mapOp } from '../ops/elementwise.js';
import { type Expr, call, constant, input } from '../ops/expr.js';
import type { WebGpuCaps } from '../kernels/wgsl/kernel.js';
import { type Graph, type Node, type Use, isIdentityView, opLabel } from './graph.js';

/** Node ids, one array per fused kernel. Nodes in no group run as kernels of their own. */
export type FusionGroups = number[][];

/** A fusion strategy: reads the graph and proposes groups; the legality check accepts or rejects them. */
export interface FusionStrategy {
  readonly name: string;
  groups(graph: Graph): FusionGroups;
}

/** `'none'` (one kernel per op), `'elementwise'` (chains of elementwise ops), `'default'` (all built-in fusions), or your own. */
export type FusionOption = 'none' | 'elementwise' | 'default' | FusionStrategy | ((graph: Graph) => FusionGroups);

type OpNode = Extract<Node, { kind: 'op' }>;

const isMap = (n: Node): n is OpNode => n.kind === 'op' && n.op.name === 'map';

/**
 * Grows groups of elementwise (`map`) nodes backwards from each root: a producer joins when it is
 * elementwise, computes the same shape, is read whole and in order (an identity view), and every use
 * of it is inside the group — so the fused kernel computes each element once, in registers.
 */
function elementwiseGroups(g: Graph): FusionGroups {
  const users = g.users();
  const grouped = new Set<Node>();
  const groups: FusionGroups = [];
  for (let i = g.nodes.length - 1; i >= 0; i--) {
    const root = g.nodes[i]!;
    if (!isMap(root) || grouped.has(root)) continue;
    const members = new Set<Node>([root]);
    const frontier: Node[] = [root];
    while (frontier.length) {
      const n = frontier.pop()!;
      for (const u of n.inputs) {
        const p = u.value.node;
        if (!isMap(p) || members.has(p) || grouped.has(p) || !isIdentityView(u)) continue;
        if (!sameShape(p.outputs[0]!.shape, root.outputs[0]!.shape)) continue;
        if (!(users.get(u.value.id) ?? []).every((x) => x.node !== null && members.has(x.node))) continue;
        members.add(p);
        frontier.push(p);
      }
    }
    if (members.size < 2) continue;
    for (const m of members) grouped.add(m);
    groups.push([...members].map((m) => m.id));
  }
  return groups;
}

export const STRATEGIES: Record<'none' | 'elementwise' | 'default', FusionStrategy> = {
  none: { name: 'none', groups: () => [] },
  elementwise: { name: 'elementwise', groups: elementwiseGroups },
  default: { name: 'default', groups: elementwiseGroups },
};

export function resolveStrategy(option: FusionOption | undefined): FusionStrategy {
  if (option === undefined) return STRATEGIES.default;
  if (typeof option === 'string') {
    const s = STRATEGIES[option as keyof typeof STRATEGIES];
    if (!s) throw new SinterError('jit', `unknown fusion strategy ${JSON.stringify(option)}; expected 'none', 'elementwise', 'default', a strategy object or a function`);
    return s;
  }
  if (typeof option === 'function') return { name: option.name || 'custom', groups: option };
  if (typeof option === 'object' && typeof option.groups === 'function') return option;
  throw new SinterError('jit', 'fusion must be a strategy name, an object with groups(graph), or a function returning groups');
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Rejects groups the code generator cannot turn into one kernel, saying why: unknown or repeated
 * nodes, ops it cannot fuse, more than one value leaving the group (which also excludes cycles through
 * outside nodes), reads through views or of another shape inside it, or more bindings than the device allows.
 */
export function checkGroups(g: Graph, groups: FusionGroups): OpNode[][] {
  const byId = new Map(g.nodes.map((n) => [n.id, n]));
  const users = g.users();
  const seen = new Set<number>();
  const maxBindings = g.device === 'webgpu' ? (getBackend('webgpu') as unknown as { caps: WebGpuCaps }).caps.limits.maxStorageBuffersPerShaderStage : Infinity;
  return groups.map((ids, gi) => {
    const fail = (why: string): never => {
      throw new SinterError('jit', `fusion group ${gi} [${ids.join(', ')}] is illegal: ${why}`);
    };
    if (!Array.isArray(ids) || ids.length === 0) fail('a group must be a non-empty array of node ids');
    const members = ids.map((id) => {
      const n = byId.get(id);
      if (!n) return fail(`node ${id} is not in the graph`);
      if (seen.has(id)) return fail(`node ${id} is in more than one group`);
      seen.add(id);
      if (!isMap(n)) return fail(`node ${id} (${opLabel(n)}) cannot be fused: the code generator fuses elementwise ops only`);
      return n;
    });
    const set = new Set<Node>(members);
    const leaving = members.filter((m) => (users.get(m.outputs[0]!.id) ?? []).some((x) => x.node === null || !set.has(x.node)));
    // One leaving value also rules out cycles through outside nodes: such a path would leave the
    // group from a second node (every member's value is used, after dead-code elimination).
    if (leaving.length !== 1) {
      fail(`exactly one node's value may be used outside the group (one output per kernel; several could also form a cycle through outside nodes), but ${leaving.length} are (${leaving.map((m) => m.id).join(', ') || 'none'})`);
    }
    const shape = leaving[0]!.outputs[0]!.shape;
    for (const m of members) {
      if (!sameShape(m.outputs[0]!.shape, shape)) fail(`node ${m.id} computes ${fmtShape(m.outputs[0]!.shape)}, not the group's iteration space ${fmtShape(shape)}`);
      for (const u of m.inputs) if (set.has(u.value.node) && !isIdentityView(u)) fail(`node ${m.id} reads node ${u.value.node.id} through a view; fused values must be read whole`);
    }
    const external = new Set(members.flatMap((m) => m.inputs.filter((u) => !set.has(u.value.node)).map(useKey)));
    if (external.size + 1 > maxBindings) fail(`the fused kernel would bind ${external.size + 1} buffers, more than the device's ${maxBindings} storage buffers per shader stage`);
    return members;
  });
}

function useKey(u: Use): string {
  return `${u.value.id}:${u.view.shape}:${u.view.strides}:${u.view.offset}`;
}

/** An expression with each input k replaced by `replace(k)`, shared subtrees kept shared. */
function substitute(e: Expr, replace: (k: number) => Expr, memo = new Map<Expr, Expr>()): Expr {
  const hit = memo.get(e);
  if (hit) return hit;
  const out = e.kind === 'input' ? replace(e.index) : e.kind === 'const' ? constant(e.value, e.dtype) : call(e.fn, e.args.map((a) => substitute(a, replace, memo)), e.dtype, e.params);
  memo.set(e, out);
  return out;
}

/**
 * Replaces each group by one `map` node whose expression composes the members' expressions.
 * Returns the ops each fused node computes (by node id), in execution order.
 */
export function fuseGroups(g: Graph, groups: OpNode[][]): Map<number, string[]> {
  const fused = new Map<number, string[]>();
  for (const members of groups) {
    const set = new Set<Node>(members);
    const ordered = g.nodes.filter((n): n is OpNode => set.has(n));
    const externals: Use[] = [];
    const index = new Map<string, number>();
    const exprOf = new Map<Node, Expr>();
    for (const m of ordered) {
      const { expr } = m.attrs as { expr: Expr };
      exprOf.set(
        m,
        substitute(expr, (k) => {
          const u = m.inputs[k]!;
          if (set.has(u.value.node)) return exprOf.get(u.value.node)!;
          const key = useKey(u);
          if (!index.has(key)) {
            index.set(key, externals.length);
            externals.push(u);
          }
          return input(index.get(key)!, u.value.dtype);
        }),
      );
    }
    const root = ordered[ordered.length - 1]!;
    fused.set(root.id, ordered.map(opLabel));
    const node: OpNode = {
      kind: 'op',
      id: root.id,
      op: mapOp as OpNode['op'],
      attrs: { expr: exprOf.get(root)!, name: ordered.map(opLabel).join('+') },
      inputs: externals,
      outputs: [],
    };
    const out = root.outputs[0]!;
    out.node = node;
    node.outputs.push(out);
    g.nodes.splice(g.nodes.indexOf(root), 1, node);
    for (const m of ordered.slice(0, -1)) g.nodes.splice(g.nodes.indexOf(m), 1);
  }
  return fused;
}
