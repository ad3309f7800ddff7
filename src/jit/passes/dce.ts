import type { Graph, Node } from '../graph.js';

/**
 * Removes nodes whose values nothing uses (graph inputs always stay: calls bind them by position;
 * random draws too, so the generator advances per call exactly as the eager function's draws do).
 * Removed constants are freed: the graph was the only holder of their tensors.
 */
export function eliminateDeadCode(g: Graph): void {
  const live = new Set<Node>(g.outputs.map((u) => u.value.node));
  for (let i = g.nodes.length - 1; i >= 0; i--) {
    const n = g.nodes[i]!;
    if (live.has(n)) for (const u of n.inputs) live.add(u.value.node);
  }
  const kept = g.nodes.filter((n) => n.kind === 'input' || n.kind === 'random' || live.has(n));
  for (const n of g.nodes) if (n.kind === 'constant' && !live.has(n)) n.tensor.dispose();
  g.nodes.splice(0, g.nodes.length, ...kept);
}
