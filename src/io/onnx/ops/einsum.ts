import { mul } from '../../../ops/binary.js';
import { sum } from '../../../ops/reduce.js';
import { permute, reshape } from '../../../ops/views.js';
import type { Tensor } from '../../../tensor/tensor.js';
import type { OnnxNode } from '../node.js';
import { register } from '../registry.js';

// Einsum as broadcast products and sums: every operand is laid out over all the equation's letters (size 1 where it
// lacks one), multiplied together, and summed over the letters the output leaves out. '...' stands for the
// broadcast dims; a letter repeated within one operand (a diagonal) is not supported.

/** The letters of one term, '...' expanded to `count` placeholder letters (digits, which equations cannot contain). */
function expand(term: string, count: number): string[] {
  const at = term.indexOf('...');
  const letters = (s: string) => [...s];
  if (at < 0) return letters(term);
  const lead = Array.from({ length: count }, (_, i) => String(i));
  return [...letters(term.slice(0, at)), ...lead, ...letters(term.slice(at + 3))];
}

function einsum(node: OnnxNode, inputs: readonly Tensor[]): Tensor {
  const eq = (node.string('equation') ?? node.fail("needs the attribute 'equation'")).replace(/\s/g, '');
  const [lhs, rhs] = eq.split('->') as [string, string | undefined];
  const terms = lhs.split(',');
  if (terms.length !== inputs.length) node.fail(`equation '${eq}' has ${terms.length} operands but the node has ${inputs.length} inputs`);
  const ellipsis = Math.max(0, ...terms.map((t, i) => (t.includes('...') ? inputs[i]!.ndim - (t.length - 3) : 0)));
  const operands = terms.map((t, i) => {
    const letters = expand(t, t.includes('...') ? inputs[i]!.ndim - (t.length - 3) : 0);
    // Broadcast dims align from the right: pad the placeholder run on the left to the longest one.
    const shift = t.includes('...') ? ellipsis - (inputs[i]!.ndim - (t.length - 3)) : 0;
    const named = letters.map((l) => (/\d/.test(l) ? String(Number(l) + shift) : l));
    if (named.length !== inputs[i]!.ndim) node.fail(`term '${t}' does not match input ${i} of rank ${inputs[i]!.ndim}`);
    if (new Set(named).size !== named.length) node.fail(`term '${t}' repeats a letter (a diagonal), which is not supported`);
    return named;
  });
  const all: string[] = [];
  for (const o of operands) for (const l of o) if (!all.includes(l)) all.push(l);
  all.sort((a, b) => Number(/\D/.test(a)) - Number(/\D/.test(b)) || (/\d/.test(a) ? Number(a) - Number(b) : 0));
  const out = rhs !== undefined
    ? expand(rhs, ellipsis)
    : [...all.filter((l) => /\d/.test(l)), ...all.filter((l) => /\D/.test(l) && operands.flat().filter((x) => x === l).length === 1).sort()];
  const laidOut = inputs.map((x, i) => {
    const named = operands[i]!;
    const order = all.filter((l) => named.includes(l)).map((l) => named.indexOf(l));
    const p = permute(x, order);
    return reshape(p, all.map((l) => (named.includes(l) ? x.shape[named.indexOf(l)]! : 1)));
  });
  let product = laidOut[0]!;
  for (const t of laidOut.slice(1)) product = mul(product, t);
  const summed = all.map((l, i) => (out.includes(l) ? -1 : i)).filter((i) => i >= 0);
  const reduced = summed.length ? sum(product, summed) : product;
  const kept = all.filter((l) => out.includes(l));
  return permute(reduced, out.map((l) => kept.indexOf(l)));
}

register({
  Einsum: { run: (node, inputs, ctx) => [einsum(node, inputs.map((v, i) => ctx.dev(v!, `input ${i}`)))], minOpset: 12 },
});
