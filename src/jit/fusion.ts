import { getBackend } from '../backend/backend.js';
import { SinterError, fmtShape } from '../errors.js';
import { mapOp } from '../ops/elementwise.js';
import { type Expr, call, constant, input } from '../ops/expr.js';
import type { WebGpuCaps } from '../kernels/wgsl/kernel.js';
import { type Graph, type Node, type Use, type Value, composeViews, fullView, isIdentityView, opLabel } from './graph.js';
import { addConstant, constantTensor, replaceUses } from './passes/util.js';
import { cat } from '../ops/movement.js';
import { tidy } from '../tensor/scope.js';
import { contiguousStrides } from '../tensor/shape.js';

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

const HORIZONTAL = new Set(['conv2d', 'linear']);

/** Why sibling `m` cannot join a horizontal group led by `first`, or null when it can. */
function horizontalMismatch(m: OpNode, first: OpNode, users: ReturnType<Graph['users']>): string | null {
  if (m.op.name !== first.op.name || !HORIZONTAL.has(m.op.name)) return `node ${m.id} (${opLabel(m)}) is not a ${opLabel(first)}: horizontal fusion joins conv2d or linear ops of one kind`;
  if (useKey(m.inputs[0]!) !== useKey(first.inputs[0]!)) return `node ${m.id} reads another input than node ${first.id}; horizontal fusion joins ops on one input`;
  if (JSON.stringify(m.attrs) !== JSON.stringify(first.attrs)) return `node ${m.id} has other attributes than node ${first.id}`;
  if ((m.attrs as { groups?: number }).groups !== undefined && (m.attrs as { groups: number }).groups !== 1) return `node ${m.id} is a grouped conv; its weights cannot be concatenated`;
  if (m.inputs.length !== first.inputs.length) return `node ${m.id} and node ${first.id} must both have a bias or both have none`;
  if (!m.inputs.slice(1).every((u) => u.value.node.kind === 'constant' && u.value.dtype === first.inputs[1]!.value.dtype)) return `node ${m.id}'s weights must be constants of one dtype`;
  // Readers must see the output through a view that still works on a channel slice of the joined output.
  const probe = { shape: m.outputs[0]!.shape, strides: contiguousStrides(m.outputs[0]!.shape), offset: 0 };
  if ((users.get(m.outputs[0]!.id) ?? []).some((x) => !composeViews(m.outputs[0]!.shape, probe, x.use.view))) {
    return `node ${m.id}'s output is read through a reshaping view, which a channel slice of the joined output cannot express`;
  }
  return null;
}

/** Sibling conv2d/linear ops on one input (parallel branches), joined into one op with concatenated weights. */
function horizontalGroups(g: Graph): FusionGroups {
  const users = g.users();
  const groups: OpNode[][] = [];
  for (const n of g.nodes) {
    if (n.kind !== 'op' || !HORIZONTAL.has(n.op.name)) continue;
    const group = groups.find((gr) => horizontalMismatch(n, gr[0]!, users) === null);
    if (group) group.push(n);
    else if (horizontalMismatch(n, n, users) === null) groups.push([n]);
  }
  return groups.filter((gr) => gr.length > 1).map((gr) => gr.map((n) => n.id));
}

export const STRATEGIES: Record<'none' | 'elementwise' | 'default', FusionStrategy> = {
  none: { name: 'none', groups: () => [] },
  elementwise: { name: 'elementwise', groups: elementwiseGroups },
  default: { name: 'default', groups: (g) => [...elementwiseGroups(g), ...horizontalGroups(g)] },
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

/** A group the code generator accepts: a chain of elementwise ops, or sibling ops joined horizontally. */
export interface CheckedGroup {
  readonly kind: 'elementwise' | 'horizontal';
  readonly members: OpNode[];
}

/**
 * Rejects groups the code generator cannot turn into one kernel, saying why: unknown or repeated
 * nodes, ops it cannot fuse, more than one value leaving an elementwise group (which also excludes
 * cycles through outside nodes), reads through views or of another shape inside it, more bindings
 * than the device allows, or siblings that do not share their input and attributes.
 */
export function checkGroups(g: Graph, groups: FusionGroups): CheckedGroup[] {
  const byId = new Map(g.nodes.map((n) => [n.id, n]));
  const users = g.users();
  const seen = new Set<number>();
  const maxBindings = g.device === 'webgpu' ? (getBackend('webgpu') as unknown as { caps: WebGpuCaps }).caps.limits.maxStorageBuffersPerShaderStage : Infinity;
  return groups.map((ids, gi): CheckedGroup => {
    const fail = (why: string): never => {
      throw new SinterError('jit', `fusion group ${gi} [${Array.isArray(ids) ? ids.join(', ') : ids}] is illegal: ${why}`);
    };
    if (!Array.isArray(ids) || ids.length === 0) fail('a group must be a non-empty array of node ids');
    const members = ids.map((id) => {
      const n = byId.get(id);
      if (!n) return fail(`node ${id} is not in the graph`);
      if (seen.has(id)) return fail(`node ${id} is in more than one group`);
      seen.add(id);
      const why = `node ${id} (${opLabel(n)}) cannot be fused: the code generator fuses elementwise ops, and sibling conv2d/linear ops`;
      if (n.kind !== 'op') return fail(why);
      if (n.op.name !== 'map' && !HORIZONTAL.has(n.op.name)) return fail(why);
      return n;
    });
    if (!isMap(members[0]!)) {
      for (const m of members) {
        const why = horizontalMismatch(m, members[0]!, users);
        if (why) fail(why);
      }
      return { kind: 'horizontal', members };
    }
    const set = new Set<Node>(members);
    for (const m of members) if (m.op.name !== 'map') fail(`node ${m.id} (${opLabel(m)}) is not elementwise, unlike node ${members[0]!.id}`);
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
    return { kind: 'elementwise', members };
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
 * Replaces each group by one node: an elementwise group by a `map` node whose expression composes
 * the members' expressions; sibling convs/linears by one op on concatenated weights, whose output
 * each former sibling's readers see through a channel slice. Returns the ops each new node
 * computes (by node id), in execution order.
 */
export function fuseGroups(g: Graph, groups: readonly CheckedGroup[]): Map<number, string[]> {
  const fused = new Map<number, string[]>();
  for (const { kind, members } of groups) {
    const set = new Set<Node>(members);
    const ordered = g.nodes.filter((n): n is OpNode => set.has(n));
    const node = kind === 'elementwise' ? fuseElementwise(g, ordered) : fuseHorizontal(g, ordered);
    fused.set(node.id, ordered.map(opLabel));
  }
  return fused;
}

function fuseElementwise(g: Graph, ordered: OpNode[]): OpNode {
  const set = new Set<Node>(ordered);
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
  return node;
}

function fuseHorizontal(g: Graph, ordered: OpNode[]): OpNode {
  const first = ordered[0]!;
  const outShapes = ordered.map((m) => m.outputs[0]!.shape);
  // conv2d outputs are [N, O, H, W] (channels in dim 1); linear outputs [..., O] (last dim).
  const dim = first.op.name === 'conv2d' ? 1 : outShapes[0]!.length - 1;
  const joined = (i: number) => tidy(() => cat(ordered.map((m) => constantTensor(m.inputs[i]!)), 0));
  const inputs: Use[] = [first.inputs[0]!];
  for (let i = 1; i < first.inputs.length; i++) {
    const t = joined(i);
    inputs.push({ value: addConstant(g, t, first), view: fullView(t.shape) });
  }
  const shape = [...outShapes[0]!];
  shape[dim] = outShapes.reduce((a, s) => a + s[dim]!, 0);
  const node: OpNode = { kind: 'op', id: first.id, op: first.op, attrs: first.attrs, inputs, outputs: [] };
  const out: Value = { id: g.freshId(), shape, dtype: first.outputs[0]!.dtype, node };
  node.outputs.push(out);
  g.nodes.splice(g.nodes.indexOf(first), 1, node);
  const strides = contiguousStrides(shape);
  let start = 0;
  for (const m of ordered) {
    const own = m.outputs[0]!;
    const slice = { shape: own.shape, strides, offset: start * strides[dim]! };
    replaceUses(g, own, out, (v) => composeViews(own.shape, slice, v)!);
    start += own.shape[dim]!;
    if (m !== first) g.nodes.splice(g.nodes.indexOf(m), 1);
  }
  return node;
}
