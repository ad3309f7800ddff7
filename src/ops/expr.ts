import type { DType } from '../tensor/dtype.js';

/**
 * A scalar expression over the elements of broadcast inputs. Elementwise ops build one node;
 * the JIT composes nodes into one expression per fused kernel. Every node's value is cast to
 * its dtype, so a fused chain computes exactly what the eager ops compute one by one.
 */
export type Expr =
  | { readonly kind: 'input'; readonly index: number; readonly dtype: DType }
  | { readonly kind: 'const'; readonly value: number; readonly dtype: DType }
  | { readonly kind: 'call'; readonly fn: string; readonly args: readonly Expr[]; readonly params: readonly number[]; readonly dtype: DType };

export function input(index: number, dtype: DType): Expr {
  return { kind: 'input', index, dtype };
}
export function constant(value: number, dtype: DType): Expr {
  return { kind: 'const', value, dtype };
}
export function call(fn: string, args: readonly Expr[], dtype: DType, params: readonly number[] = []): Expr {
  return { kind: 'call', fn, args, params, dtype };
}
/** `e` converted to `dtype` (no node when it already has it). */
export function cast(e: Expr, dtype: DType): Expr {
  return e.dtype === dtype ? e : call('cast', [e], dtype);
}

/** A canonical string for an expression: cache key for generated kernels, and readable in graphs. */
export function exprToString(e: Expr): string {
  switch (e.kind) {
    case 'input':
      return `x${e.index}`;
    case 'const':
      return `${e.value}`;
    case 'call': {
      const params = e.params.length ? `; ${e.params.join(', ')}` : '';
      return `${e.fn}:${e.dtype}(${e.args.map(exprToString).join(', ')}${params})`;
    }
  }
}

/** The nodes of `e` in dependency order, each shared subexpression once. */
export function exprNodes(e: Expr): Expr[] {
  const seen = new Set<Expr>();
  const order: Expr[] = [];
  const visit = (n: Expr): void => {
    if (seen.has(n)) return;
    seen.add(n);
    if (n.kind === 'call') n.args.forEach(visit);
    order.push(n);
  };
  visit(e);
  return order;
}
