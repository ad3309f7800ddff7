import { type Graph, type Node, attrsJson } from '../graph.js';
import { replaceUses } from './util.js';

/** A key equal for nodes computing the same thing: op, attributes, and inputs with their views. */
function nodeKey(n: Extract<Node, { kind: 'op' }>): string {
  const attrs = attrsJson(n.attrs);
  const inputs = n.inputs.map((u) => `${u.value.id}:${u.view.shape}:${u.view.strides}:${u.view.offset}`);
  return `${n.op.name}|${attrs}|${inputs.join('|')}`;
}

/** Merges nodes that compute the same op on the same inputs: later copies use the first one's outputs. */
export function eliminateCommonSubexpressions(g: Graph): void {
  const seen = new Map<string, Node>();
  for (const n of [...g.nodes]) {
    if (n.kind !== 'op') continue;
    const key = nodeKey(n);
    const first = seen.get(key);
    if (!first) {
      seen.set(key, n);
      continue;
    }
    n.outputs.forEach((v, i) => replaceUses(g, v, first.outputs[i]!));
    g.nodes.splice(g.nodes.indexOf(n), 1);
  }
}
