import { keep } from '../../tensor/memory.js';
import { Tensor } from '../../tensor/tensor.js';
import type { Graph, Node, Use, Value, View } from '../graph.js';

/**
 * Redirects every use of `from` (in nodes and graph outputs) to `to`, keeping each use's view or
 * mapping it with `view` (when `from`'s elements sit elsewhere inside `to`).
 */
export function replaceUses(g: Graph, from: Value, to: Value, view: (v: View) => View = (v) => v): void {
  const swap = (u: Use): Use => (u.value === from ? { value: to, view: view(u.view) } : u);
  for (const n of g.nodes) if (n.kind === 'op') n.inputs.forEach((u, i) => (n.inputs[i] = swap(u)));
  g.outputs.forEach((u, i) => (g.outputs[i] = swap(u)));
}

/** The tensor a use of a constant reads (a view of the constant's storage). */
export function constantTensor(u: Use): Tensor {
  const n = u.value.node;
  if (n.kind !== 'constant') throw new Error('not a constant');
  return new Tensor(n.tensor.storage, u.view.shape, u.view.strides, u.view.offset);
}

/** A new constant node holding `t` (kept alive by the graph), inserted before `before`. */
export function addConstant(g: Graph, t: Tensor, before: Node): Value {
  const held = keep(t.isContiguous() && t.offset === 0 ? t : t.contiguous());
  const node: Node = { kind: 'constant', id: g.freshId(), tensor: held, outputs: [], inputs: [] };
  const v: Value = { id: g.freshId(), shape: [...held.shape], dtype: held.dtype, node };
  node.outputs.push(v);
  g.nodes.splice(g.nodes.indexOf(before), 0, node);
  return v;
}

export function isConstant(u: Use): boolean {
  return u.value.node.kind === 'constant';
}
