import { SinterError, check } from '../errors.js';
import { numel, normDim } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { matmul } from './linalg.js';
import { checkInputs } from './op.js';
import { sum } from './reduce.js';
import { expand, permute, reshape } from './views.js';
import { tidy } from '../tensor/scope.js';

// einsum as PyTorch evaluates it: every letter (a–z, A–Z) names a dim; a letter repeated within an
// operand takes the diagonal (a strided view, no copy); '...' stands for broadcast dims aligned from
// the right; letters only one operand has and the output lacks are summed first; the operands are
// then contracted left to right, each pair as one batched matmul, and the result is laid out in the
// output's order (given after '->', else the ellipsis dims then the letters used once, sorted).

export interface DiagonalOptions {
  /** Which diagonal: 0 the main one, > 0 above it, < 0 below (default 0). */
  offset?: number;
  dim1?: number;
  dim2?: number;
}

/**
 * The diagonal of the 2-D slices over `dim1` and `dim2` (default 0 and 1) as a view: those dims are
 * removed and the diagonal is appended as the last dim, as torch.diagonal.
 */
export function diagonal(x: Tensor, opts: DiagonalOptions = {}): Tensor {
  checkInputs('diagonal', [x]);
  check(x.ndim >= 2, 'diagonal', () => `expects a tensor of at least 2 dims, got ${x.describe()}`);
  const offset = opts.offset ?? 0;
  check(Number.isInteger(offset), 'diagonal', () => `offset must be an integer, got ${JSON.stringify(offset)}`);
  const d1 = normDim('diagonal', opts.dim1 ?? 0, x.ndim), d2 = normDim('diagonal', opts.dim2 ?? 1, x.ndim);
  check(d1 !== d2, 'diagonal', () => `dim1 and dim2 must differ, both are ${d1}`);
  const n1 = x.shape[d1]!, n2 = x.shape[d2]!;
  const len = Math.max(0, offset >= 0 ? Math.min(n1, n2 - offset) : Math.min(n1 + offset, n2));
  const start = len === 0 ? 0 : offset >= 0 ? offset * x.strides[d2]! : -offset * x.strides[d1]!;
  const keep = x.shape.map((_, d) => d).filter((d) => d !== d1 && d !== d2);
  return new Tensor(x.storage, [...keep.map((d) => x.shape[d]!), len], [...keep.map((d) => x.strides[d]!), x.strides[d1]! + x.strides[d2]!], x.offset + start);
}

/** An operand laid out over named dims (after diagonals): its tensor and one label per dim. */
interface Term {
  t: Tensor;
  labels: string[];
}

function parse(op: string, equation: string, operands: readonly Tensor[]): { terms: string[][]; out: string[] } {
  const eq = equation.replace(/\s/g, '');
  const [lhs, rhs, extra] = eq.split('->');
  if (extra !== undefined || lhs === undefined) throw new SinterError(op, `equation '${equation}' has more than one '->'`);
  const raw = lhs.split(',');
  if (raw.length !== operands.length) throw new SinterError(op, `equation '${equation}' names ${raw.length} operands but ${operands.length} were given`);
  const tokens = (s: string, where: string): string[] => {
    const out: string[] = [];
    for (let i = 0; i < s.length; i++) {
      if (s.startsWith('...', i)) {
        if (out.includes('...')) throw new SinterError(op, `${where} of '${equation}' has '...' more than once`);
        out.push('...');
        i += 2;
      } else if (/[a-zA-Z]/.test(s[i]!)) out.push(s[i]!);
      else throw new SinterError(op, `${where} of '${equation}' has '${s[i]}': subscripts are letters a–z, A–Z and '...'`);
    }
    return out;
  };
  // '...' expands to the broadcast dims, named by their position from the right (digits, never letters).
  let ellipsisRank = 0;
  const terms = raw.map((s, i) => {
    const tk = tokens(s, `operand ${i}`);
    const named = tk.filter((l) => l !== '...').length;
    const x = operands[i]!;
    if (tk.includes('...') ? x.ndim < named : x.ndim !== named) {
      throw new SinterError(op, `operand ${i} ('${s}') has ${tk.includes('...') ? 'at least ' : ''}${named} subscripts but is ${x.describe()}`);
    }
    const k = x.ndim - named;
    if (tk.includes('...')) ellipsisRank = Math.max(ellipsisRank, k);
    return tk.flatMap((l) => (l === '...' ? Array.from({ length: k }, (_, j) => String(k - 1 - j)) : [l]));
  });
  const broadcast = Array.from({ length: ellipsisRank }, (_, j) => String(ellipsisRank - 1 - j));
  let out: string[];
  if (rhs !== undefined) {
    const tk = tokens(rhs, 'the output');
    const seen = new Set<string>();
    for (const l of tk) {
      if (l !== '...' && !terms.some((t) => t.includes(l))) throw new SinterError(op, `output subscript '${l}' of '${equation}' appears in no operand`);
      if (seen.has(l)) throw new SinterError(op, `output subscript '${l}' of '${equation}' appears more than once`);
      seen.add(l);
    }
    out = tk.flatMap((l) => (l === '...' ? broadcast : [l]));
  } else {
    const count = new Map<string, number>();
    for (const t of terms) for (const l of t) if (!/\d/.test(l)) count.set(l, (count.get(l) ?? 0) + 1);
    out = [...broadcast, ...[...count].filter(([, n]) => n === 1).map(([l]) => l).sort()];
  }
  return { terms, out };
}

/** Takes diagonals of repeated labels (a view), checking that the repeated dims agree. */
function takeDiagonals(op: string, t: Tensor, labels: string[]): Term {
  let x = t, ls = [...labels];
  for (;;) {
    const i = ls.findIndex((l, k) => ls.indexOf(l) !== k);
    if (i < 0) return { t: x, labels: ls };
    const first = ls.indexOf(ls[i]!);
    if (x.shape[first] !== x.shape[i]) throw new SinterError(op, `subscript '${ls[i]}' is repeated in one operand over dims of sizes ${x.shape[first]} and ${x.shape[i]}; a diagonal needs equal sizes`);
    x = diagonal(x, { dim1: first, dim2: i });
    ls = [...ls.filter((_, k) => k !== first && k !== i), ls[i]!];
  }
}

/** Sums `t` over the labels not in `keep`. */
function sumOut(term: Term, keep: (l: string) => boolean): Term {
  const dims = term.labels.map((l, d) => (keep(l) ? -1 : d)).filter((d) => d >= 0);
  if (dims.length === 0) return term;
  return { t: sum(term.t, dims), labels: term.labels.filter((l) => keep(l)) };
}

/** Permutes `t` to `order` (labels) and expands size-1 (broadcast) dims to `sizes`. */
function arrange(term: Term, order: readonly string[], sizes: Map<string, number>): Tensor {
  const p = permute(term.t, order.map((l) => term.labels.indexOf(l)));
  return expand(p, order.map((l) => sizes.get(l)!));
}

/** Contracts two terms as one batched matmul: shared labels that stay are batch dims, shared labels that go are summed. */
function contract(a: Term, b: Term, stays: (l: string) => boolean): Term {
  const sizes = new Map<string, number>();
  for (const s of [a, b]) s.labels.forEach((l, d) => sizes.set(l, Math.max(sizes.get(l) ?? 1, s.t.shape[d]!)));
  const batch = a.labels.filter((l) => b.labels.includes(l) && stays(l));
  const summed = a.labels.filter((l) => b.labels.includes(l) && !stays(l));
  const aOnly = a.labels.filter((l) => !b.labels.includes(l));
  const bOnly = b.labels.filter((l) => !a.labels.includes(l));
  const size = (ls: string[]) => numel(ls.map((l) => sizes.get(l)!));
  const am = reshape(arrange(a, [...batch, ...aOnly, ...summed], sizes), [size(batch), size(aOnly), size(summed)]);
  const bm = reshape(arrange(b, [...batch, ...summed, ...bOnly], sizes), [size(batch), size(summed), size(bOnly)]);
  const labels = [...batch, ...aOnly, ...bOnly];
  return { t: reshape(matmul(am, bm), labels.map((l) => sizes.get(l)!)), labels };
}

/**
 * Sums products of the operands' elements over the subscripts the output leaves out, as torch.einsum:
 * `einsum('bij,bjk->bik', a, b)`, `einsum('ii->i', m)` (a diagonal), `einsum('...ij,...jk', a, b)`.
 * Operands may also be given as one array.
 */
export function einsum(equation: string, ...operands: (Tensor | readonly Tensor[])[]): Tensor {
  const op = 'einsum';
  if (typeof equation !== 'string') throw new SinterError(op, `the equation must be a string, got ${typeof equation}`);
  const xs = (operands.length === 1 && Array.isArray(operands[0]) ? operands[0] : operands) as readonly Tensor[];
  checkInputs(op, xs);
  if (xs.length === 0) throw new SinterError(op, 'needs at least one operand');
  const { terms: labels, out } = parse(op, equation, xs);
  // Sizes must agree across operands, except 1 (broadcast).
  const sizes = new Map<string, number>();
  labels.forEach((ls, i) => ls.forEach((l, d) => {
    const n = xs[i]!.shape[d]!, prev = sizes.get(l);
    if (prev !== undefined && prev !== n && prev !== 1 && n !== 1) {
      throw new SinterError(op, `subscript '${/\d/.test(l) ? '...' : l}' has size ${prev} in one operand and ${n} in operand ${i} of '${equation}'`);
    }
    if (prev === undefined || prev === 1) sizes.set(l, n);
  }));
  return tidy(() => {
    let terms = labels.map((ls, i) => takeDiagonals(op, xs[i]!, ls));
    // Letters that one operand alone has and the output lacks are summed right away.
    terms = terms.map((t, i) => sumOut(t, (l) => out.includes(l) || terms.some((u, j) => j !== i && u.labels.includes(l))));
    let acc = terms[0]!;
    for (let i = 1; i < terms.length; i++) {
      const later = terms.slice(i + 1);
      acc = contract(acc, terms[i]!, (l) => out.includes(l) || later.some((u) => u.labels.includes(l)));
    }
    acc = sumOut(acc, (l) => out.includes(l));
    // The labels left are the output's, in another order.
    return permute(acc.t, out.map((l) => acc.labels.indexOf(l)));
  });
}
