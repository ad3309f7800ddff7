import { apply } from '../../ops/op.js';
import type { Graph } from '../graph.js';
import { addConstant, constantTensor, isConstant, replaceUses } from './util.js';

/** Evaluates ops whose inputs are all constants once, at compile time, and uses the results as constants. */
export function foldConstants(g: Graph): void {
  for (const n of [...g.nodes]) {
    if (n.kind !== 'op' || n.inputs.length === 0 || !n.inputs.every(isConstant)) continue;
    const inputs = n.inputs.map(constantTensor);
    const outs = apply(n.op, inputs, n.attrs);
    inputs.forEach((t) => t.dispose());
    outs.forEach((t, i) => replaceUses(g, n.outputs[i]!, addConstant(g, t, n)));
    g.nodes.splice(g.nodes.indexOf(n), 1);
  }
}
