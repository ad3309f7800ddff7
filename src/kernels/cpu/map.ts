import { f16round } from '@petamoriken/float16';
import { type DType, castValue, isFloat } from '../../tensor/dtype.js';
import { type Expr, exprNodes } from '../../ops/expr.js';
import type { CpuView } from '../../ops/op.js';
import { ELEMENTWISE } from '../../ops/elementwise.js';
import { erf, ipow, roundHalfEven } from './math.js';
import { generatedKernels } from './generated.js';

/** Helpers that generated JavaScript may call as `H.name(...)`. */
export const H = { f16: f16round, erf, roundHalfEven, ipow };

/** JS that converts a number to what storing it as `dtype` gives (as PyTorch's casts do). */
export function jsCast(dtype: DType, v: string): string {
  switch (dtype) {
    case 'float32':
      return `Math.fround(${v})`;
    case 'float16':
      return `H.f16(${v})`;
    case 'int32':
      return `((${v})|0)`;
    case 'int8':
      return `((${v})<<24>>24)`;
    case 'uint8':
      return `((${v})&255)`;
    case 'bool':
      return `((${v})!==0?1:0)`;
  }
}

/**
 * The statements computing `expr` for one element, given how to read input k; returns the result's
 * name and the values of the expression's constants and params, which the statements read as `c0`,
 * `c1`, … (the generated function declares them from its `C` argument: see `constantDecls`), so one
 * function serves every scalar value. Generated functions are cached by their source (see `compile`),
 * which holds names, never values.
 */
export function jsExprBody(expr: Expr, readInput: (k: number) => string): { body: string; result: string; constants: number[] } {
  const names = new Map<Expr, string>();
  const lines: string[] = [];
  const constants: number[] = [];
  const lit = (v: number): string => `c${constants.push(v) - 1}`;
  for (const n of exprNodes(expr)) {
    let v: string;
    if (n.kind === 'input') v = readInput(n.index);
    // A constant enters as a value of its dtype (a float32 scalar as float32, as on WebGPU and in wasm).
    else if (n.kind === 'const') v = lit(castValue(n.dtype, n.value));
    else {
      const fn = ELEMENTWISE.get(n.fn);
      if (!fn) throw new Error(`no elementwise function '${n.fn}'`);
      // Float params in the first argument's float type, as WGSL's `lit` gives them.
      const args = n.args.map((a) => a.dtype), arg0 = args[0];
      const param = (p: number): string => lit(arg0 !== undefined && isFloat(arg0) ? castValue(arg0, p) : p);
      v = jsCast(n.dtype, fn.js(n.args.map((a) => names.get(a)!), n.params, { args, out: n.dtype, lit: param }));
    }
    const name = `t${names.size}`;
    names.set(n, name);
    lines.push(`const ${name} = ${v};`);
  }
  return { body: lines.join(' '), result: names.get(expr)!, constants };
}

/** Declarations of an expression's constants `c0`, `c1`, … from the generated function's argument `C`. */
export function constantDecls(count: number): string {
  return Array.from({ length: count }, (_, i) => `const c${i} = C[${i}];`).join(' ');
}

/** Strides of a view broadcast to `shape` (stride 0 along broadcast dims). */
export function broadcastStrides(view: { shape: readonly number[]; strides: readonly number[] }, shape: readonly number[]): number[] {
  const lead = shape.length - view.shape.length;
  return shape.map((d, i) => (i < lead || view.shape[i - lead] !== d ? 0 : view.strides[i - lead]!));
}

/**
 * Merges adjacent dims that every operand walks contiguously (and drops size-1 dims), so the
 * generated loop nest is as shallow as possible.
 */
export function collapseDims(shape: readonly number[], strides: readonly (readonly number[])[]): { shape: number[]; strides: number[][] } {
  const outShape: number[] = [];
  const outStrides: number[][] = strides.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const last = outShape.length - 1;
    if (last >= 0 && strides.every((s, k) => outStrides[k]![last] === s[d]! * shape[d]!)) {
      outShape[last]! *= shape[d]!;
      strides.forEach((s, k) => (outStrides[k]![last] = s[d]!));
    } else {
      outShape.push(shape[d]!);
      strides.forEach((s, k) => outStrides[k]!.push(s[d]!));
    }
  }
  return { shape: outShape, strides: outStrides };
}

type MapFn = (out: CpuView['data'], ins: CpuView['data'][], shape: number[], strides: number[][], offsets: number[], C: readonly number[]) => void;

/** The JavaScript of the loop nest evaluating `expr` over `rank` collapsed dims with `nIn` inputs, and the values it reads from `C`. */
function source(expr: Expr, nIn: number, rank: number): { source: string; constants: number[] } {
  // Built once per expression object and layout: plans hand the same (never mutated) Expr objects to every call.
  let forExpr = sources.get(expr);
  if (!forExpr) sources.set(expr, (forExpr = new Map()));
  const key = `${nIn}|${rank}`;
  let made = forExpr.get(key);
  if (!made) forExpr.set(key, (made = buildSource(expr, nIn, rank)));
  return made;
}
const sources = new WeakMap<Expr, Map<string, { source: string; constants: number[] }>>();

function buildSource(expr: Expr, nIn: number, rank: number): { source: string; constants: number[] } {
  const { body, result, constants } = jsExprBody(expr, (k) => `x${k}[p${k}]`);
  const ks = Array.from({ length: nIn }, (_, k) => k);
  let src = `${constantDecls(constants.length)}\n` + ks.map((k) => `const x${k} = ins[${k}];`).join(' ') + '\n';
  for (let d = 0; d < rank; d++) src += `const n${d} = shape[${d}]; ${ks.map((k) => `const s${k}_${d} = strides[${k}][${d}];`).join(' ')}\n`;
  src += 'let o = 0;\n';
  // Nested loops; p{k}_{d} is input k's offset after fixing dims < d.
  for (let d = 0; d < rank; d++) {
    src += `for (let i${d} = 0; i${d} < n${d}; i${d}++) {\n`;
    src += ks.map((k) => `const p${k}_${d + 1} = ${d === 0 ? `offsets[${k}]` : `p${k}_${d}`} + i${d} * s${k}_${d};`).join(' ') + '\n';
  }
  src += ks.map((k) => `const p${k} = ${rank === 0 ? `offsets[${k}]` : `p${k}_${rank}`};`).join(' ') + '\n';
  src += `${body}\nout[o++] = ${result};\n`;
  src += '}'.repeat(rank);
  return { source: `function map(out, ins, shape, strides, offsets, C) {\n${src}\n}`, constants };
}

function layout(inputs: readonly Pick<CpuView, 'shape' | 'strides'>[], outShape: readonly number[]) {
  return collapseDims(outShape, inputs.map((v) => broadcastStrides(v, outShape)));
}

/** Evaluates `expr` for every element of `out` (contiguous), reading strided, broadcast inputs. */
export function mapKernel(expr: Expr, inputs: readonly CpuView[], out: CpuView): void {
  const { shape, strides } = layout(inputs, out.shape);
  const { source: src, constants } = source(expr, inputs.length, shape.length);
  generatedKernels.get<MapFn>(src, () => src, H)(out.data, inputs.map((v) => v.data), shape, strides, inputs.map((v) => v.offset), constants);
}

/** The generated JavaScript `mapKernel` runs for these layouts (for reports). */
export function mapKernelSource(expr: Expr, inputs: readonly Pick<CpuView, 'shape' | 'strides'>[], outShape: readonly number[]): string {
  return source(expr, inputs.length, layout(inputs, outShape).shape.length).source;
}
