import { type Expr, exprNodes } from '../../ops/expr.js';
import { ELEMENTWISE } from '../../ops/elementwise.js';
import { numel } from '../../tensor/shape.js';
import { castValue } from '../../tensor/dtype.js';
import { broadcastStrides, collapseDims } from '../cpu/map.js';
import { type WgslScalar, bindings, computeType, elementsPerWord, literal, loadElement, packWord, roundTo } from './dtype.js';
import { GRID_PARAMS, grid, workgroupSize } from './grid.js';
import type { GpuView, WebGpuCaps, WgslKernel } from './kernel.js';
import { withPrelude } from './prelude.js';
import { KernelParams } from './params.js';
import { offsetOfParams, unravelParams } from './strided.js';

/**
 * WGSL statements computing `expr` for one element, given how to read input k (an expression of
 * its dtype's compute type); returns the result's name. As on the CPU, every node's value is
 * rounded to the node's dtype, so fused and eager results agree. With `params`, constants and the
 * numeric params of calls are read from the kernel's parameter block rather than written into the
 * source, so the kernel serves every value of them. With `caps` of an adapter with shader-f16,
 * float16 nodes compute in f16 (`computeType(d, caps)`): functions whose WGSL is exact in f16 (their
 * `f16` flag: +, −, ×, compares, where…) take f16 arguments; the others (exp, division, the `sn_*`
 * helpers) get them widened to f32, as PyTorch computes half math in float, and their result is
 * rounded to binary16 (ties to even, like the CPU) before it becomes an f16 again.
 */
export function wgslExprBody(expr: Expr, readInput: (k: number) => string, params?: KernelParams, caps?: WebGpuCaps): { body: string; result: string } {
  const value = (x: number, t: WgslScalar): string => {
    if (t !== 'f16') return params ? params.scalar(x, t, literal) : literal(x, t);
    // Parameter words are 32 bits: an f16 is read as the f32 holding its binary16 value.
    return params ? `f16(${params.scalar(castValue('float16', x), 'f32', literal)})` : literal(x, t);
  };
  const names = new Map<Expr, string>();
  const lines: string[] = [];
  for (const n of exprNodes(expr)) {
    const t = computeType(n.dtype, caps);
    let v: string;
    if (n.kind === 'input') v = readInput(n.index);
    else if (n.kind === 'const') v = value(n.value, t);
    else {
      const fn = ELEMENTWISE.get(n.fn);
      if (!fn) throw new Error(`no elementwise function '${n.fn}'`);
      const args = n.args.map((a) => a.dtype);
      // Functions not exact in f16 compute as without shader-f16: f16 arguments widen to f32.
      const as = fn.f16 ? caps : undefined;
      const operands = n.args.map((a) => (computeType(a.dtype, as) !== computeType(a.dtype, caps) ? `f32(${names.get(a)!})` : names.get(a)!));
      const litType = computeType(args[0] ?? n.dtype, as);
      const own = computeType(n.dtype, as);
      v = roundTo(n.dtype, fn.wgsl(operands, n.params, { args, out: n.dtype, lit: (x) => value(x, litType), half: as?.f16 === true && args.includes('float16') }), own);
      if (own !== t) v = `${t}(${v})`;
    }
    const name = `t${names.size}`;
    names.set(n, name);
    lines.push(`let ${name}: ${t} = ${v};`);
  }
  return { body: lines.join('\n  '), result: names.get(expr)! };
}

/**
 * One kernel evaluating `expr` for every element of the contiguous `out`, reading strided,
 * broadcast inputs in place. Each invocation writes one 32-bit word of the output (one to four
 * elements, by dtype; one f16 where float16 is stored natively), so packed outputs need no atomics; when every input is either aligned and
 * contiguous like the output or a single broadcast value, it writes four elements with vec4 loads
 * and stores instead (2.3× the bandwidth on SwiftShader, and the access real GPUs prefer).
 * Constants, call params, the inputs' offsets, the element count and the (collapsed) sizes and
 * strides are kernel parameters: the source depends only on the expression's structure, the dtypes,
 * the collapsed rank and which strides are 0 or 1, so one pipeline serves a layer's activation at
 * every size.
 */
export function mapKernel(expr: Expr, inputs: readonly GpuView[], out: GpuView, caps: WebGpuCaps, label: string): WgslKernel {
  const n = numel(out.shape);
  const { shape, strides } = collapseDims(out.shape, inputs.map((v) => broadcastStrides(v, out.shape)));
  const params = inputs.map((v, k) => `x${k}: ${computeType(v.dtype, caps)}`).join(', ');
  const p = new KernelParams();
  const { body, result } = wgslExprBody(expr, (k) => `x${k}`, p, caps);
  const f = `fn f(${params}) -> ${computeType(out.dtype, caps)} {\n  ${body}\n  return ${result};\n}`;
  const size = workgroupSize(256, caps);
  const scalar = strides.map((s) => s.every((d) => d === 0));
  // One element a storage slot (packed dtypes are not): float32, int32, and float16 stored natively (vec4<f16>).
  const wide = (d: string) => d === 'float32' || d === 'int32' || (d === 'float16' && caps.f16);
  const aligned = (v: GpuView, k: number) => wide(v.dtype) && v.offset % 4 === 0 && shape.length === 1 && strides[k]![0] === 1;
  const vectorize = n % 4 === 0 && wide(out.dtype) && inputs.every((v, k) => scalar[k] || aligned(v, k));
  const g = grid(label, vectorize ? n / 4 : Math.ceil(n / elementsPerWord(out.dtype, caps)), size, caps);
  let decls: string, main: string;
  if (vectorize) {
    const vec = `vec4<${computeType(out.dtype, caps)}>`;
    decls = bindings(inputs.map((v) => v.dtype), [out.dtype], caps, [...scalar.map((s) => !s), true]);
    const loads = inputs.map((v, k) => (scalar[k] ? `let a${k} = ${loadElement(`in${k}`, v.dtype, p.u32(v.offset), caps, computeType(v.dtype, caps))};` : `let a${k} = in${k}[w + ${p.u32(v.offset / 4)}];`));
    const lane = (c: string) => `f(${inputs.map((_, k) => (scalar[k] ? `a${k}` : `a${k}.${c}`)).join(', ')})`;
    main = `let w = ${g.index};\n  if (w >= ${p.u32(n / 4)}) { return; }\n  ${loads.join('\n  ')}\n  out0[w] = ${vec}(${['x', 'y', 'z', 'w'].map(lane).join(', ')});`;
  } else {
    const perWord = elementsPerWord(out.dtype, caps);
    const words = Math.ceil(n / perWord);
    const { lines, idx } = unravelParams('e', shape, p);
    const loads = inputs.map((v, k) => loadElement(`in${k}`, v.dtype, `p${k}`, caps, computeType(v.dtype, caps)));
    inputs.forEach((v, k) => lines.push(`let p${k} = ${offsetOfParams(v.offset, strides[k]!, idx, p)};`));
    const value = `fn value(e: u32) -> ${computeType(out.dtype, caps)} {\n  ${lines.join('\n  ')}\n  return f(${loads.join(', ')});\n}`;
    decls = `${bindings(inputs.map((v) => v.dtype), [out.dtype], caps)}\n\n${value}`;
    const values = Array.from({ length: perWord }, (_, j) => (perWord === 1 ? 'value(w)' : `value(w * ${perWord}u + ${j}u)`));
    main = `let w = ${g.index};\n  if (w >= ${p.u32(words)}) { return; }\n  out0[w] = ${packWord(out.dtype, values, caps)};`;
  }
  // A fused kernel may hold float16 values in f16 between float32 inputs and outputs: it enables f16 itself.
  const enable = caps.f16 && !decls.startsWith('enable f16;') && exprNodes(expr).some((e) => e.dtype === 'float16') ? 'enable f16;\n' : '';
  const source = `${enable}${decls}\n${p.declaration()}\n\n${f}\n\n@compute @workgroup_size(${size}) fn main(${GRID_PARAMS}) {\n  ${main}\n}\n`;
  return { source: withPrelude(source), workgroups: g.workgroups, label, params: p.words() };
}
