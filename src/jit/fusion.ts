import { getBackend } from '../backend/backend.js';
import { SinterError, fmtShape } from '../errors.js';
import { mapOp } from '../ops/elementwise.js';
import { type Expr, call, constant, input } from '../ops/expr.js';
import type { WebGpuCaps } from '../kernels/wgsl/kernel.js';
import { type Graph, type Node, type Use, type Value, composeViews, fullView, isIdentityView, opLabel, useLayout, valueLayout } from './graph.js';
import { addConstant, constantTensor, replaceUses } from './passes/util.js';
import { cat } from '../ops/movement.js';
import { tidy } from '../tensor/scope.js';
import { broadcastShapes, contiguousStrides } from '../tensor/shape.js';
import { isFloat } from '../tensor/dtype.js';

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
type Users = ReturnType<Graph['users']>;

const isMap = (n: Node): n is OpNode => n.kind === 'op' && n.op.name === 'map';

/** Ops whose input an elementwise prologue can compute on the fly (their `prologue` attr): reductions, softmax, logSoftmax, cumsum. */
const PROLOGUE_TARGETS = new Set(['reduce', 'softmax', 'logSoftmax', 'cumsum']);
const isPrologueTarget = (n: Node): n is OpNode => n.kind === 'op' && PROLOGUE_TARGETS.has(n.op.name);

/** The device's caps when the graph runs on WebGPU (kernels there must fit its limits). */
function capsOf(g: Graph): WebGpuCaps | null {
  return g.device === 'webgpu' ? (getBackend('webgpu') as unknown as { caps: WebGpuCaps }).caps : null;
}

/** The shape of the tensor a prologue target reduces: its prologue's (inputs broadcast), or input 0's. */
function reducedShape(n: OpNode): readonly number[] {
  return (n.attrs as { prologue?: Expr }).prologue ? broadcastShapes(opLabel(n), ...n.inputs.map((u) => u.view.shape)) : n.inputs[0]!.view.shape;
}

/**
 * Grows `members` backwards from `root` through elementwise (`map`) producers: one joins when it
 * computes `shape`, is read whole and in order (an identity view), every use of it is inside the
 * group (so the fused kernel computes each element once, in registers), it is in no other group,
 * and the group with it still `fits` the device.
 */
function growElementwise(root: OpNode, shape: readonly number[], users: Users, taken: ReadonlySet<Node>, fits: (members: ReadonlySet<Node>) => boolean): Set<Node> {
  const members = new Set<Node>([root]);
  const frontier: Node[] = [root];
  while (frontier.length) {
    const n = frontier.pop()!;
    for (const u of n.inputs) {
      const p = u.value.node;
      if (!isMap(p) || members.has(p) || taken.has(p) || !isIdentityView(u) || !sameShape(p.outputs[0]!.shape, shape)) continue;
      if (!(users.get(u.value.id) ?? []).every((x) => x.node !== null && members.has(x.node))) continue;
      if (!fits(new Set([...members, p]))) continue;
      members.add(p);
      frontier.push(p);
    }
  }
  return members;
}

/** Members in graph order (topological). */
function inOrder(g: Graph, members: ReadonlySet<Node>): OpNode[] {
  return g.nodes.filter((n): n is OpNode => members.has(n) && n.kind === 'op');
}

/** Chains of elementwise ops grown backwards from each root (see growElementwise), leaving out nodes already `taken`. */
function elementwiseGroups(g: Graph, taken: ReadonlySet<Node> = new Set()): FusionGroups {
  const users = g.users();
  const caps = capsOf(g);
  const grouped = new Set<Node>(taken);
  const groups: FusionGroups = [];
  for (let i = g.nodes.length - 1; i >= 0; i--) {
    const root = g.nodes[i]!;
    if (!isMap(root) || grouped.has(root)) continue;
    const fits = (ms: ReadonlySet<Node>) => !caps || composeExprs(inOrder(g, ms), (m) => (m.attrs as { expr: Expr }).expr).externals.length + 1 <= caps.limits.maxStorageBuffersPerShaderStage;
    const members = growElementwise(root, root.outputs[0]!.shape, users, grouped, fits);
    if (members.size < 2) continue;
    for (const m of members) grouped.add(m);
    groups.push([...members].map((m) => m.id));
  }
  return groups;
}

/** Each reduction, softmax, logSoftmax or cumsum with the elementwise chain computing its input (see growElementwise). */
function prologueGroups(g: Graph): FusionGroups {
  const users = g.users();
  const caps = capsOf(g);
  const groups: FusionGroups = [];
  for (const root of g.nodes) {
    if (!isPrologueTarget(root)) continue;
    const fits = (ms: ReadonlySet<Node>) => {
      const ordered = inOrder(g, ms);
      return !caps || fusedBindings(prologueNode(ordered), ordered, caps) <= caps.limits.maxStorageBuffersPerShaderStage;
    };
    const members = growElementwise(root, reducedShape(root), users, new Set(), fits);
    if (members.size > 1) groups.push([...members].map((m) => m.id));
  }
  return groups;
}

/** Ops whose result an elementwise epilogue can compute on in registers before the store (their `epilogue` attr). */
const EPILOGUE_PRODUCERS = new Set(['matmul', 'linear', 'conv2d']);
const isEpilogueProducer = (n: Node): n is OpNode => n.kind === 'op' && EPILOGUE_PRODUCERS.has(n.op.name);

/**
 * Each matmul, linear or conv2d with the elementwise ops after it: a consumer joins when it is the
 * only node reading the chain's last value (so every earlier member's value stays inside the group
 * and no cycle through outside nodes can form), reads members whole (identity views), computes the
 * producer's output shape, is in no other group, keeps the dtype rule of the producer's epilogue
 * (see epilogueResult) and still `fits` the device. On the CPU the chain also continues through a
 * value that several elementwise ops read, when they meet again in one node (hardSwish's
 * x·clamp(x + 3, 0, 6)/6 reads x twice; see joinBranches): its epilogue is one pass over the
 * product, and one kernel handed to the thread pool, where a separate elementwise kernel was one
 * more of each. WebGPU keeps the chain rule.
 */
function epilogueGroups(g: Graph, taken: ReadonlySet<Node>): FusionGroups {
  const users = g.users();
  const caps = capsOf(g);
  const groups: FusionGroups = [];
  // A consumer joins one producer's epilogue only (add(conv(a), conv(b)) fuses into the first conv).
  const claimed = new Set<Node>();
  for (const producer of g.nodes) {
    if (!isEpilogueProducer(producer) || taken.has(producer) || claimed.has(producer) || (producer.attrs as { epilogue?: Expr }).epilogue) continue;
    const shape = producer.outputs[0]!.shape;
    const members: OpNode[] = [producer];
    const joins = (next: Node | null | undefined, within: ReadonlySet<Node>): next is OpNode =>
      !!next && isMap(next) && !taken.has(next) && !claimed.has(next) && sameShape(next.outputs[0]!.shape, shape) &&
      next.inputs.every((u) => !within.has(u.value.node) || isIdentityView(u));
    for (;;) {
      const uses = users.get(members[members.length - 1]!.outputs[0]!.id) ?? [];
      const next = uses[0]?.node;
      if (joins(next, new Set(members)) && uses.every((x) => x.node === next)) {
        const candidate = [...members, next];
        if (!epilogueDTypeOk(candidate) || (caps && fusedBindings(epilogueNode(candidate), candidate, caps) > caps.limits.maxStorageBuffersPerShaderStage)) break;
        members.push(next);
        continue;
      }
      const branches = g.device === 'cpu' && uses.length > 1 ? joinBranches(g, members, users, joins) : null;
      if (!branches) break;
      members.push(...branches);
    }
    if (members.length > 1) {
      members.forEach((m) => claimed.add(m));
      groups.push(members.map((m) => m.id));
    }
  }
  return groups;
}

/** How many elementwise ops joinBranches takes in at most before it gives up on the branches meeting. */
const MAX_BRANCH_NODES = 16;

/**
 * The elementwise ops (in graph order) that take `members`' last value, which several nodes read, to
 * one node again: the readers, then the readers of their values, until exactly one added node's value
 * is read outside, and it runs last; null when a reader may not join (`joins`), a value leaves as a
 * graph output, the dtype rule breaks, or the branches do not meet within MAX_BRANCH_NODES nodes.
 */
function joinBranches(g: Graph, members: readonly OpNode[], users: Users, joins: (n: Node | null | undefined, within: ReadonlySet<Node>) => n is OpNode): OpNode[] | null {
  const set = new Set<Node>(members), added: OpNode[] = [];
  let open: OpNode[] = [members[members.length - 1]!];
  while (added.length <= MAX_BRANCH_NODES) {
    const outside = open.flatMap((m) => (users.get(m.outputs[0]!.id) ?? []).filter((x) => x.node === null || !set.has(x.node)));
    if (outside.some((x) => x.node === null)) return null;
    const readers = [...new Set(outside.map((x) => x.node!))];
    for (const r of readers) set.add(r);
    if (!readers.every((r) => joins(r, set))) return null;
    added.push(...(readers as OpNode[]));
    const leaving = [...set].filter((m): m is OpNode => (users.get((m as OpNode).outputs[0]!.id) ?? []).some((x) => x.node === null || !set.has(x.node)));
    const ordered = inOrder(g, set);
    if (leaving.length === 1 && leaving[0] === ordered[ordered.length - 1]) return epilogueDTypeOk(ordered) ? ordered.slice(members.length) : null;
    open = leaving;
  }
  return null;
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
  elementwise: { name: 'elementwise', groups: (g) => elementwiseGroups(g) },
  default: {
    name: 'default',
    groups(g) {
      // Prologues first: a chain feeding a reduction joins it rather than becoming a kernel of its own.
      // Then epilogues: a chain after a matmul/linear/conv2d runs in its kernel, saving a write and a
      // read of the product; elementwise chains take what is left. Horizontal fusion runs on the
      // producers no epilogue joined: a joined op's siblings read it through channel slices, which
      // an epilogue cannot absorb, and the epilogue saves more (a round trip of the output per branch,
      // against one read of the shared input).
      const byId = new Map(g.nodes.map((n) => [n.id, n]));
      const nodes = (gs: FusionGroups) => gs.flat().map((id) => byId.get(id)!);
      const prologues = prologueGroups(g);
      const taken = new Set(nodes(prologues));
      const epilogues = epilogueGroups(g, taken);
      for (const n of nodes(epilogues)) taken.add(n);
      const withEpilogue = new Set(nodes(epilogues));
      const horizontal = horizontalGroups(g).filter((gr) => gr.every((id) => !withEpilogue.has(byId.get(id)!)));
      return [...prologues, ...epilogues, ...elementwiseGroups(g, taken), ...horizontal];
    },
  },
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
 * A group the code generator accepts: a chain of elementwise ops, sibling ops joined horizontally,
 * a reduction-like op (last in `members`) with the elementwise ops computing its input, or a
 * matmul/linear/conv2d (first in `members`) with the elementwise ops computing on its result.
 */
export interface CheckedGroup {
  readonly kind: 'elementwise' | 'horizontal' | 'prologue' | 'epilogue';
  readonly members: OpNode[];
}

/**
 * Rejects groups the code generator cannot turn into one kernel, saying why: unknown or repeated
 * nodes, ops it cannot fuse, more than one value leaving an elementwise group (which also excludes
 * cycles through outside nodes), reads through views or of another shape inside it, more bindings
 * than the device allows, siblings that do not share their input and attributes, a prologue
 * group with more than one reduction or a value other than the reduction's leaving it, or an
 * epilogue group whose elementwise ops do not all follow its one producer.
 */
export function checkGroups(g: Graph, groups: FusionGroups): CheckedGroup[] {
  const byId = new Map(g.nodes.map((n) => [n.id, n]));
  const users = g.users();
  const seen = new Set<number>();
  const caps = capsOf(g);
  const maxBindings = caps ? caps.limits.maxStorageBuffersPerShaderStage : Infinity;
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
      const why = `node ${id} (${opLabel(n)}) cannot be fused: the code generator fuses elementwise ops, elementwise ops into the reduction, softmax, logSoftmax or cumsum reading their result, elementwise ops after a matmul, linear or conv2d into it, and sibling conv2d/linear ops`;
      if (n.kind !== 'op') return fail(why);
      if (n.op.name !== 'map' && !HORIZONTAL.has(n.op.name) && !PROLOGUE_TARGETS.has(n.op.name) && !EPILOGUE_PRODUCERS.has(n.op.name)) return fail(why);
      return n;
    });
    const targets = members.filter(isPrologueTarget);
    if (targets.length > 0) return checkPrologue(g, members, targets, users, caps, fail);
    if (members.some(isMap) && members.some(isEpilogueProducer)) return checkEpilogue(g, members, users, caps, fail);
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

/**
 * A prologue group: one reduction-like `target`, the rest elementwise ops whose values are used
 * only inside the group (so only the target's result leaves, and no cycle through outside nodes
 * can exist), computing the target's input shape and read whole; on WebGPU the fused kernel must
 * bind no more buffers than the device allows.
 */
function checkPrologue(g: Graph, members: OpNode[], targets: OpNode[], users: Users, caps: WebGpuCaps | null, fail: (why: string) => never): CheckedGroup {
  const target = targets[0]!;
  if (targets.length > 1) fail(`nodes ${targets.map((t) => `${t.id} (${opLabel(t)})`).join(' and ')} are both reduction-like; a prologue group fuses elementwise ops into one of them`);
  const set = new Set<Node>(members);
  const shape = reducedShape(target);
  for (const m of members) {
    if (m === target) continue;
    if (m.op.name !== 'map') fail(`node ${m.id} (${opLabel(m)}) is not elementwise: only elementwise ops can be fused into node ${target.id} (${opLabel(target)})`);
    const outside = (users.get(m.outputs[0]!.id) ?? []).find((x) => x.node === null || !set.has(x.node));
    if (outside) {
      fail(`node ${m.id}'s value is used outside the group (${outside.node ? `by node ${outside.node.id}` : 'as a graph output'}); only the result of node ${target.id} (${opLabel(target)}) may leave a prologue group`);
    }
  }
  for (const m of members) {
    for (const u of m.inputs) if (set.has(u.value.node) && !isIdentityView(u)) fail(`node ${m.id} reads node ${u.value.node.id} through a view; fused values must be read whole`);
  }
  for (const m of members) {
    if (m !== target && !sameShape(m.outputs[0]!.shape, shape)) fail(`node ${m.id} computes ${fmtShape(m.outputs[0]!.shape)}, not the shape ${fmtShape(shape)} that node ${target.id} (${opLabel(target)}) reduces`);
  }
  const ordered = inOrder(g, set);
  if (caps) {
    const n = fusedBindings(prologueNode(ordered), ordered, caps);
    const max = caps.limits.maxStorageBuffersPerShaderStage;
    if (n > max) fail(`the fused kernel would bind ${n} buffers (inputs, output and scratch), more than the device's ${max} storage buffers per shader stage`);
  }
  return { kind: 'prologue', members: ordered };
}

/**
 * An epilogue group: one matmul/linear/conv2d `producer` (first in graph order) without an
 * epilogue yet, the rest elementwise ops computing its output shape and reading members whole;
 * only the last member's value may leave the group (which rules out cycles through outside nodes,
 * as for elementwise groups); the composed epilogue keeps the producer's dtype rule, and on WebGPU
 * the kernel binds no more buffers than the device allows.
 */
function checkEpilogue(g: Graph, members: OpNode[], users: Users, caps: WebGpuCaps | null, fail: (why: string) => never): CheckedGroup {
  const producers = members.filter(isEpilogueProducer);
  if (producers.length > 1) fail(`nodes ${producers.map((t) => `${t.id} (${opLabel(t)})`).join(' and ')} both produce; an epilogue group fuses elementwise ops into one matmul, linear or conv2d`);
  const producer = producers[0]!;
  const other = members.find((m) => m !== producer && m.op.name !== 'map');
  if (other) fail(`node ${other.id} (${opLabel(other)}) is not elementwise: only elementwise ops can be fused into node ${producer.id} (${opLabel(producer)})`);
  if ((producer.attrs as { epilogue?: Expr }).epilogue) fail(`node ${producer.id} (${opLabel(producer)}) already has an epilogue`);
  const set = new Set<Node>(members);
  const ordered = inOrder(g, set);
  if (ordered[0] !== producer) fail(`node ${ordered[0]!.id} (${opLabel(ordered[0]!)}) runs before node ${producer.id} (${opLabel(producer)}); an epilogue group's elementwise ops must follow its producer`);
  const shape = producer.outputs[0]!.shape;
  const last = ordered[ordered.length - 1]!;
  for (const m of ordered) {
    const outside = (users.get(m.outputs[0]!.id) ?? []).find((x) => x.node === null || !set.has(x.node));
    if (m !== last && outside) {
      fail(`node ${m.id}'s value is used outside the group (${outside.node ? `by node ${outside.node.id}` : 'as a graph output'}); only the last node's (${last.id}) value may leave an epilogue group`);
    }
    if (m === producer) continue;
    if (!sameShape(m.outputs[0]!.shape, shape)) fail(`node ${m.id} computes ${fmtShape(m.outputs[0]!.shape)}, not the shape ${fmtShape(shape)} of node ${producer.id} (${opLabel(producer)})`);
    for (const u of m.inputs) if (set.has(u.value.node) && !isIdentityView(u)) fail(`node ${m.id} reads node ${u.value.node.id} through a view; fused values must be read whole`);
  }
  if (!epilogueDTypeOk(ordered)) {
    fail(`the chain turns node ${producer.id}'s ${producer.outputs[0]!.dtype} result into ${last.outputs[0]!.dtype}; an epilogue may only change a float result's float dtype`);
  }
  if (caps) {
    const n = fusedBindings(epilogueNode(ordered), ordered, caps);
    const max = caps.limits.maxStorageBuffersPerShaderStage;
    if (n > max) fail(`the fused kernel would bind ${n} buffers (inputs, output and scratch), more than the device's ${max} storage buffers per shader stage`);
  }
  return { kind: 'epilogue', members: ordered };
}

/** The epilogue's dtype rule (see epilogueResult in src/ops/linalg.ts) for `ordered`'s last value: float to float, or the producer's own dtype. */
function epilogueDTypeOk(ordered: readonly OpNode[]): boolean {
  const from = ordered[0]!.outputs[0]!.dtype, to = ordered[ordered.length - 1]!.outputs[0]!.dtype;
  return from === to || (isFloat(from) && isFloat(to));
}

/**
 * An epilogue group's fused node (not yet in the graph): the producer (first of `ordered`) with the
 * consumers' composed expression as its epilogue (input 0 = the producer's result) and the
 * expression's other inputs appended to its own.
 */
function epilogueNode(ordered: readonly OpNode[]): OpNode {
  const [producer, ...maps] = ordered as [OpNode, ...OpNode[]];
  const { exprs, externals } = composeExprs(maps, (m) => (m.attrs as { expr: Expr }).expr);
  const at = externals.findIndex((u) => u.value.node === producer);
  const extras = externals.filter((_, k) => k !== at);
  // The producer's value becomes input 0; the other externals keep their order from input 1.
  const renumber = (k: number) => (k === at ? 0 : k < at ? k + 1 : k);
  const epilogue = substitute(exprs.get(maps[maps.length - 1]!)!, (k) => input(renumber(k), externals[k]!.value.dtype));
  const last = maps[maps.length - 1]!;
  return { kind: 'op', id: last.id, op: producer.op, attrs: { ...(producer.attrs as object), epilogue }, inputs: [...producer.inputs, ...extras], outputs: [] };
}


/** Storage buffers a fused node's kernel binds on WebGPU: its inputs, outputs and scratch buffers (every pass binds all of them). */
function fusedBindings(node: OpNode, members: readonly OpNode[], caps: WebGpuCaps): number {
  const outs = members[members.length - 1]!.outputs.map(valueLayout);
  const form = node.op.webgpu!(node.inputs.map(useLayout), node.attrs, outs, caps);
  return node.inputs.length + outs.length + ('passes' in form ? form.scratch.length : 0);
}

function useKey(u: Use): string {
  return `${u.value.id}:${u.view.shape}:${u.view.strides}:${u.view.offset}`;
}

/**
 * The members' expressions composed (in `ordered`, topological, order): each member's own
 * expression (`own`) with inputs read from members replaced by their composed expressions, and the
 * rest read as external inputs, deduplicated by value and view.
 */
function composeExprs(ordered: readonly OpNode[], own: (m: OpNode) => Expr): { exprs: Map<Node, Expr>; externals: Use[] } {
  const set = new Set<Node>(ordered);
  const externals: Use[] = [];
  const index = new Map<string, number>();
  const exprs = new Map<Node, Expr>();
  for (const m of ordered) {
    exprs.set(
      m,
      substitute(own(m), (k) => {
        const u = m.inputs[k]!;
        if (set.has(u.value.node)) return exprs.get(u.value.node)!;
        const key = useKey(u);
        if (!index.has(key)) {
          index.set(key, externals.length);
          externals.push(u);
        }
        return input(index.get(key)!, u.value.dtype);
      }),
    );
  }
  return { exprs, externals };
}

/** A prologue group's fused node (not yet in the graph): the target (last of `ordered`) with the producers' composed expression as its prologue. */
function prologueNode(ordered: readonly OpNode[]): OpNode {
  const target = ordered[ordered.length - 1]!;
  const own = (m: OpNode): Expr => (m === target ? (m.attrs as { prologue?: Expr }).prologue ?? input(0, m.inputs[0]!.value.dtype) : (m.attrs as { expr: Expr }).expr);
  const { exprs, externals } = composeExprs(ordered, own);
  return { kind: 'op', id: target.id, op: target.op, attrs: { ...(target.attrs as object), prologue: exprs.get(target)! }, inputs: externals, outputs: [] };
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
 * the members' expressions; a prologue (epilogue) group by its reduction (producer) computing the
 * composed expression on its input (result); sibling convs/linears by one op on concatenated weights, whose output
 * each former sibling's readers see through a channel slice. Returns the ops each new node
 * computes (by node id), in execution order.
 */
export function fuseGroups(g: Graph, groups: readonly CheckedGroup[]): Map<number, string[]> {
  const fused = new Map<number, string[]>();
  for (const { kind, members } of groups) {
    const set = new Set<Node>(members);
    const ordered = g.nodes.filter((n): n is OpNode => set.has(n));
    const node = kind === 'elementwise' ? fuseElementwise(g, ordered)
      : kind === 'prologue' ? replaceMembers(g, ordered, prologueNode(ordered))
      : kind === 'epilogue' ? replaceMembers(g, ordered, epilogueNode(ordered))
      : fuseHorizontal(g, ordered);
    fused.set(node.id, ordered.map(opLabel));
  }
  return fused;
}

/** Puts `node` in place of `ordered`'s last member (whose values it takes over) and removes the other members. */
function replaceMembers(g: Graph, ordered: readonly OpNode[], node: OpNode): OpNode {
  const root = ordered[ordered.length - 1]!;
  for (const v of root.outputs) {
    v.node = node;
    node.outputs.push(v);
  }
  g.nodes.splice(g.nodes.indexOf(root), 1, node);
  for (const m of ordered.slice(0, -1)) g.nodes.splice(g.nodes.indexOf(m), 1);
  return node;
}

function fuseElementwise(g: Graph, ordered: OpNode[]): OpNode {
  const { exprs, externals } = composeExprs(ordered, (m) => (m.attrs as { expr: Expr }).expr);
  const root = ordered[ordered.length - 1]!;
  const attrs = { expr: exprs.get(root)!, name: ordered.map(opLabel).join('+') };
  return replaceMembers(g, ordered, { kind: 'op', id: root.id, op: mapOp as OpNode['op'], attrs, inputs: externals, outputs: [] });
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
