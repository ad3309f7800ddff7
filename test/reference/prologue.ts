// Float64 reference for elementwise prologues: a small program over inputs x0, x1, … evaluated
// plainly, every node's result rounded to its dtype (as storing each eager op's result would).
// Independent of src/ (no Expr, no kernels, no ops): tests build src's Expr from the same program.
import type { DType } from '../../src/index.js';
import { type Ref, castRef, mapRef } from './core.js';

export type ProgFn = 'add' | 'sub' | 'mul' | 'maximum' | 'relu' | 'neg' | 'abs' | 'tanh' | 'sigmoid' | 'gt';

export type Prog =
  | { readonly kind: 'input'; readonly k: number; readonly dtype: DType }
  | { readonly kind: 'const'; readonly value: number; readonly dtype: DType }
  | { readonly kind: 'call'; readonly fn: ProgFn; readonly args: readonly Prog[]; readonly dtype: DType };

const FNS: Record<ProgFn, (...a: number[]) => number> = {
  add: (a, b) => a! + b!,
  sub: (a, b) => a! - b!,
  mul: (a, b) => a! * b!,
  maximum: (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.max(a!, b!)),
  relu: (a) => (a! > 0 ? a! : Number.isNaN(a) ? NaN : 0),
  neg: (a) => -a!,
  abs: (a) => Math.abs(a!),
  tanh: (a) => Math.tanh(a!),
  sigmoid: (a) => 1 / (1 + Math.exp(-a!)),
  gt: (a, b) => (a! > b! ? 1 : 0),
};

/** The program's value for input values `xs`. */
export function evalProg(p: Prog, xs: readonly number[]): number {
  switch (p.kind) {
    case 'input':
      return xs[p.k]!;
    case 'const':
      return castRef(p.dtype, p.value);
    case 'call':
      return castRef(p.dtype, FNS[p.fn](...p.args.map((a) => evalProg(a, xs))));
  }
}

/** The program over the inputs broadcast together. */
export function prologueRef(p: Prog, inputs: Ref[]): Ref {
  return mapRef(inputs, (...xs) => evalProg(p, xs));
}

/** How many tanh/sigmoid nodes the program has (their GPU results are not correctly rounded). */
export function transcendentals(p: Prog): number {
  return p.kind === 'call' ? (p.fn === 'tanh' || p.fn === 'sigmoid' ? 1 : 0) + p.args.reduce((a, q) => a + transcendentals(q), 0) : 0;
}
