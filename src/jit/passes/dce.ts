import type { Graph, Node } from '../graph.js';

/** Removes nodes whose values nothing uses (graph inputs always stay: calls bind them by position). */
export function eliminateDeadCode(g: Graph): void {
  const live = new Set<Node>(g.outputs.map((u) => u.value.node));
  for (let i = g.nodes.length - 1; i >= 0; i--) {
    const n = g.nodes[i]!;
    if (live.has(n)) for (const u of n.inputs) live.add(u.value.node);
  }
  const kept = g.nodes.filter((n) => n.kind === 'input' || live.has(n));
  g.nodes.splice(0, g.nodes.length, ...kept);
}
