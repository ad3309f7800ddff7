import type { DeviceName } from '../backend/backend.js';
import { fmtShape } from '../errors.js';
import type { DType } from '../tensor/dtype.js';
import { contiguousStrides, numel } from '../tensor/shape.js';
import type { Tensor } from '../tensor/tensor.js';
import type { OpDef } from '../ops/op.js';
import type { GpuView } from '../kernels/wgsl/kernel.js';
import { exprToString, type Expr } from '../ops/expr.js';

/** How a use reads a value: a strided view (in elements) over the value's contiguous layout. */
export interface View {
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;
}

/** An SSA value: one contiguous output of a node. */
export interface Value {
  readonly id: number;
  readonly shape: readonly number[];
  readonly dtype: DType;
  node: Node;
}

/** An edge: a node input reading `value` through `view` (permute, slice, expand … are index math). */
export interface Use {
  readonly value: Value;
  readonly view: View;
}

export type Node =
  | { readonly kind: 'input'; readonly id: number; readonly index: number; readonly outputs: Value[]; readonly inputs: readonly Use[] }
  /** A tensor captured by the traced function (module parameters, constants): its storage, viewed flat or whole. */
  | { readonly kind: 'constant'; readonly id: number; readonly tensor: Tensor; readonly outputs: Value[]; readonly inputs: readonly Use[] }
  /**
   * Random numbers drawn afresh on every call (rand, randn, randint and what uses them, such as
   * dropout in training): `draw` makes this call's tensor from the generator the traced code used.
   */
  | { readonly kind: 'random'; readonly id: number; readonly label: string; readonly draw: () => Tensor; readonly outputs: Value[]; readonly inputs: readonly Use[] }
  | { readonly kind: 'op'; readonly id: number; readonly op: OpDef<unknown>; readonly attrs: unknown; readonly inputs: Use[]; readonly outputs: Value[] };

export function fullView(shape: readonly number[]): View {
  return { shape, strides: contiguousStrides(shape), offset: 0 };
}

/** True when the use reads the whole value in order (no permute, slice, broadcast or reshape). */
export function isIdentityView(u: Use): boolean {
  const v = u.view, s = u.value.shape;
  if (v.offset !== 0 || v.shape.length !== s.length || v.shape.some((d, i) => d !== s[i])) return false;
  const c = contiguousStrides(s);
  return v.shape.every((d, i) => d === 1 || v.strides[i] === c[i]);
}

/**
 * The view `outer` (over a contiguous value of `shape`) rewritten over the memory that value occupies
 * inside another as view `inner`: possible when each of `outer`'s strides steps along one dim of
 * `shape` (permutes, slices with steps, broadcasts — not reshapes across dims); null otherwise.
 */
export function composeViews(shape: readonly number[], inner: View, outer: View): View | null {
  const c = contiguousStrides(shape);
  // Split the offset into a start index per dim.
  const start = shape.map((d, i) => Math.floor(outer.offset / c[i]!) % d);
  if (start.reduce((a, x, i) => a + x * c[i]!, 0) !== outer.offset) return null;
  const reach = [...start];
  const strides: number[] = [];
  for (let j = 0; j < outer.shape.length; j++) {
    const s = outer.strides[j]!, n = outer.shape[j]!;
    if (n === 1 || s === 0) {
      strides.push(0);
      continue;
    }
    const d = c.findIndex((cs, i) => shape[i]! > 1 && s % cs === 0 && s / cs < shape[i]! && (i === 0 || s < c[i - 1]!));
    if (d < 0) return null;
    strides.push((s / c[d]!) * inner.strides[d]!);
    reach[d]! += (s / c[d]!) * (n - 1);
  }
  if (reach.some((r, i) => r >= shape[i]!)) return null;
  return { shape: outer.shape, strides, offset: inner.offset + start.reduce((a, x, i) => a + x * inner.strides[i]!, 0) };
}

/** The op users called: the OpDef's label (the elementwise op of a `map`, the kind of a `reduce`) or name; random draws: rand, randn, randint. */
export function opLabel(n: Node): string {
  if (n.kind === 'random') return n.label;
  if (n.kind !== 'op') return n.kind;
  return n.op.label?.(n.attrs) ?? n.op.name;
}

/** Attributes holding expressions (a map's `expr`, fused `prologue`s and `epilogue`s), printed as text. */
const EXPR_ATTRS = new Set(['expr', 'prologue', 'epilogue']);

/** An op's attributes as JSON, expressions as their text (for keys and exports). */
export function attrsJson(attrs: unknown): string {
  return JSON.stringify(attrs, (k, v) => (EXPR_ATTRS.has(k) ? exprToString(v as Expr) : v)) ?? 'null';
}

function viewSuffix(u: Use): string {
  if (isIdentityView(u)) return '';
  return `.view(${fmtShape(u.view.shape)}, strides=${fmtShape(u.view.strides)}${u.view.offset ? `, offset=${u.view.offset}` : ''})`;
}

function attrsText(n: Node): string {
  if (n.kind !== 'op') return '';
  const a = n.attrs as Record<string, unknown> | null;
  if (!a || typeof a !== 'object') return '';
  const parts = Object.entries(a).map(([k, v]) => `${k}=${EXPR_ATTRS.has(k) ? exprToString(v as Expr) : JSON.stringify(v)}`);
  return parts.length ? ` {${parts.join(', ')}}` : '';
}

/**
 * A traced program: nodes in topological order (typed SSA: each node's outputs are values with a
 * shape and dtype), graph inputs, and the uses that are its outputs.
 */
export class Graph {
  private nextId: number;

  constructor(
    readonly device: DeviceName,
    readonly nodes: Node[],
    readonly outputs: Use[],
  ) {
    this.nextId = 1 + Math.max(-1, ...nodes.flatMap((n) => [n.id, ...n.outputs.map((v) => v.id)]));
  }

  /** An id no node or value of this graph has (for nodes and values that passes add). */
  freshId(): number {
    return this.nextId++;
  }

  get inputs(): Node[] {
    return this.nodes.filter((n) => n.kind === 'input');
  }

  /** Every use of each value, by value id. */
  users(): Map<number, { node: Node | null; use: Use }[]> {
    const m = new Map<number, { node: Node | null; use: Use }[]>();
    const add = (node: Node | null, use: Use) => {
      const list = m.get(use.value.id) ?? [];
      list.push({ node, use });
      m.set(use.value.id, list);
    };
    for (const n of this.nodes) for (const u of n.inputs) add(n, u);
    for (const u of this.outputs) add(null, u);
    return m;
  }

  /** One line per node, like torch.fx: `%3: float32[1, 8, 8, 8] = conv2d(%0, %1, %2) {stride=[1,1], …}`. */
  toString(): string {
    const lines = this.nodes.map((n) => {
      const outs = n.outputs.map((v) => `%${v.id}: ${v.dtype}${fmtShape(v.shape)}`).join(', ');
      if (n.kind === 'input') return `${outs} = input(${n.index})`;
      if (n.kind === 'constant') return `${outs} = constant`;
      if (n.kind === 'random') return `${outs} = ${n.label}()`;
      return `${outs} = ${opLabel(n)}(${n.inputs.map((u) => `%${u.value.id}${viewSuffix(u)}`).join(', ')})${attrsText(n)}`;
    });
    lines.push(`return ${this.outputs.map((u) => `%${u.value.id}${viewSuffix(u)}`).join(', ')}`);
    return lines.join('\n');
  }

  /** Graphviz DOT; `groups` (node ids per fused kernel) are drawn as clusters. */
  toDot(groups: readonly (readonly number[])[] = []): string {
    const label = (n: Node) => `${opLabel(n)}\\n${n.outputs.map((v) => `${v.dtype}${fmtShape(v.shape)}`).join(' ')}`;
    const grouped = new Set(groups.flat());
    const lines = ['digraph sinter {', '  node [shape=box, fontname="monospace"];'];
    groups.forEach((g, i) => {
      lines.push(`  subgraph cluster_${i} {`, `    label="kernel ${i}"; style=rounded; color=blue;`);
      for (const id of g) {
        const n = this.nodes.find((x) => x.id === id);
        if (n) lines.push(`    n${n.id} [label="${label(n)}"];`);
      }
      lines.push('  }');
    });
    for (const n of this.nodes) {
      if (!grouped.has(n.id)) lines.push(`  n${n.id} [label="${label(n)}"${n.kind === 'constant' ? ', style=dashed' : ''}];`);
    }
    for (const n of this.nodes) for (const u of n.inputs) lines.push(`  n${u.value.node.id} -> n${n.id};`);
    this.outputs.forEach((u, i) => lines.push(`  out${i} [label="output ${i}", shape=ellipse];`, `  n${u.value.node.id} -> out${i};`));
    lines.push('}');
    return lines.join('\n');
  }

  /** A JSON-friendly description (ops, attrs, shapes, edges with views). */
  toJSON(): object {
    const use = (u: Use) => ({ value: u.value.id, view: isIdentityView(u) ? undefined : { shape: u.view.shape, strides: u.view.strides, offset: u.view.offset } });
    return {
      device: this.device,
      nodes: this.nodes.map((n) => ({
        id: n.id,
        kind: n.kind,
        op: n.kind === 'op' || n.kind === 'random' ? opLabel(n) : undefined,
        attrs: n.kind === 'op' ? JSON.parse(attrsJson(n.attrs)) : undefined,
        inputs: n.inputs.map(use),
        outputs: n.outputs.map((v) => ({ id: v.id, shape: v.shape, dtype: v.dtype })),
      })),
      outputs: this.outputs.map(use),
    };
  }
}

/** Bytes of a value as stored on the device. */
export function valueBytes(v: Value, itemSize: (d: DType) => number): number {
  return numel(v.shape) * itemSize(v.dtype);
}

/** The layout a kernel form sees for a use: the view over its value's storage. */
export function useLayout(u: Use): GpuView {
  return { shape: u.view.shape, strides: u.view.strides, offset: u.view.offset, dtype: u.value.dtype };
}

/** The layout of a value written whole: contiguous from offset 0. */
export function valueLayout(v: Value): GpuView {
  return { shape: v.shape, strides: contiguousStrides(v.shape), offset: 0, dtype: v.dtype };
}
