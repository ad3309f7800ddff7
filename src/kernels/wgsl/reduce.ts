import type { Expr } from '../../ops/expr.js';
import type { DType } from '../../tensor/dtype.js';
import { broadcastShapes, numel } from '../../tensor/shape.js';
import { broadcastStrides, collapseDims } from '../cpu/map.js';
import type { ReduceKind } from '../cpu/reduce.js';
import { bindings, computeType, elementsPerWord, literal, loadElement, packWord, roundTo } from './dtype.js';
import { GRID_PARAMS, grid, workgroupSize } from './grid.js';
import type { GpuView, WebGpuCaps, WgslForm, WgslKernel } from './kernel.js';
import { wgslExprBody } from './map.js';
import { KernelParams } from './params.js';
import { withPrelude } from './prelude.js';
import { offsetOf, unravel } from './strided.js';

// Reductions, softmax and cumsum. Each output element's group of inputs is reduced by a team of
// invocations: TY invocations of a workgroup share one group, each folding every TY-th element,
// and then a tree in workgroup memory combines the TY partial results (finished by subgroup
// built-ins when the device has subgroups; see treeFn). A workgroup holds TX teams; invocation l is
// lane l / TX of team l % TX, so where the groups' elements are far apart in memory and
// neighbouring groups' elements are neighbours (a reduction over a leading dim) the TX teams read
// neighbouring addresses together. Groups of at most TINY elements get one invocation each. When
// few workgroups would do all the work (a full reduction), each group is split into chunks that
// workgroups of their own reduce into scratch, and a second pass combines the chunks.
//
// Floats accumulate in f32 (the CPU uses doubles, rounding once), so sums differ from the CPU's by
// f32 rounding: at most about log2(n)·2⁻²⁴·Σ|x|. Integer sums and products wrap in i32, exactly as
// the CPU's. Outputs packed several to a word (float16 without shader-f16, bool, int8, uint8) are
// computed into a scratch buffer and packed by one more pass, since neighbouring outputs belong to
// different teams.
//
// With a prologue (which the JIT sets when it fuses elementwise producers into the op), the tensor
// reduced is the prologue evaluated at each element from every input, each input read through its
// own strides at the element's index: `sum(x*x)` reads x and stores nothing but the sums.

/** Groups this small are folded by one invocation each: a team would idle. */
const TINY = 16;
/** At most this many invocations share a reduced dim where neighbouring groups are neighbours in memory. */
const MAX_TX = 32;
/** Split reductions that would run on fewer workgroups than this (while each still folds ≥ 8 elements per invocation). */
const MIN_WORKGROUPS = 256;

/**
 * What a program reduces, a tensor of `shape` and `dtype`: input 0 read in place, or the prologue
 * evaluated from every input (operand k is input k, its strides broadcast to `shape`).
 */
interface Source {
  readonly inputs: readonly GpuView[];
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** Each operand's strides over `shape` (0 where broadcast) and offset. */
  readonly views: readonly { readonly strides: readonly number[]; readonly offset: number }[];
  /** The element whose operands sit at storage offsets `q[k]`, in the compute type of `dtype`. */
  load(q: readonly string[]): string;
  /** `fn prologue(x0, …)` when there is a prologue. */
  readonly decl: string;
  /**
   * The program's parameter block: the prologue's constants and the operands' offsets, read by
   * every pass (one block for all: a pass declares and binds it when its code reads it).
   */
  readonly params: KernelParams;
  /** The operand reading the most elements: the one whose layout decides how teams read. */
  readonly lead: number;
}

function sourceOf(inputs: readonly GpuView[], prologue: Expr | undefined, caps: WebGpuCaps): Source {
  if (!prologue) {
    const x = inputs[0]!;
    return { inputs, shape: x.shape, dtype: x.dtype, views: [x], load: (q) => loadElement('in0', x.dtype, q[0]!, caps), decl: '', lead: 0, params: new KernelParams() };
  }
  const shape = broadcastShapes('prologue', ...inputs.map((v) => v.shape));
  const views = inputs.map((v) => ({ strides: broadcastStrides(v, shape), offset: v.offset }));
  const p = new KernelParams();
  const { body, result } = wgslExprBody(prologue, (k) => `x${k}`, p);
  const params = inputs.map((v, k) => `x${k}: ${computeType(v.dtype)}`).join(', ');
  const reads = views.map((v) => v.strides.reduce((a, s, d) => (s === 0 ? a : a * shape[d]!), 1));
  return {
    inputs,
    shape,
    dtype: prologue.dtype,
    views,
    load: (q) => `prologue(${inputs.map((v, k) => loadElement(`in${k}`, v.dtype, q[k]!, caps)).join(', ')})`,
    decl: `fn prologue(${params}) -> ${computeType(prologue.dtype)} {\n  ${body}\n  return ${result};\n}`,
    params: p,
    lead: reads.indexOf(Math.max(...reads)),
  };
}

/** Some dims of a source in row-major order, collapsed where every operand's stride steps over the next dim; strides per operand. */
interface Space {
  readonly shape: readonly number[];
  readonly strides: readonly (readonly number[])[];
}

function space(src: Source, dims: readonly number[]): Space {
  // No element is ever addressed in an empty space (and `% 0u` would not compile).
  if (dims.some((d) => src.shape[d] === 0)) return { shape: [], strides: src.views.map(() => []) };
  return collapseDims(dims.map((d) => src.shape[d]!), src.views.map((v) => dims.map((d) => v.strides[d]!)));
}

/** `${prefix}0`, `${prefix}1`, …: one name per operand. */
const names = (prefix: string, count: number) => Array.from({ length: count }, (_, k) => `${prefix}${k}`);

/** Statements computing `${name}k`, the storage offset of operand k's `e`-th element of `s` after `offsets[k]`. */
function offsetIn(s: Space, e: string, offsets: readonly (number | string)[], name: string): string {
  const { lines, idx } = unravel(e, s.shape, `${name}_`);
  offsets.forEach((offset, k) => {
    const start = typeof offset === 'string' ? `${offset} + ` : offset === 0 ? '' : `${offset}u + `;
    lines.push(`let ${name}${k} = ${start}${offsetOf(0, s.strides[k]!, idx)};`);
  });
  return lines.join(' ');
}

const pow2 = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(n, 1)));
const smallestStride = (s: Space, k: number) => Math.min(...s.strides[k]!.map(Math.abs));

/** Whether a group's elements are closer in memory (for the lead operand) than neighbouring groups' (see teamsFor). */
function rowLike(inner: Space, kept: Space, lead: number): boolean {
  return inner.shape.length === 0 || kept.shape.length === 0 || smallestStride(inner, lead) <= smallestStride(kept, lead);
}

/**
 * How a reduction combines: the WGSL type of its partial results, the value for no elements, and
 * `fn comb_<name>(a, b)` (argmax/argmin: a struct of value and index, the first index on ties).
 */
interface Monoid {
  readonly name: string;
  readonly type: string;
  readonly identity: string;
  readonly decl: string;
  /** Bytes of one partial result in a scratch buffer. */
  readonly bytes: number;
  /** `fn sub_<name>(v) -> T`: the combination over the subgroup's active invocations, returned to all (called in uniform control flow). */
  readonly subgroup: string;
}

function scalarMonoid(name: string, type: 'f32' | 'i32', identity: string, comb: string, subgroup: string): Monoid {
  return {
    name,
    type,
    identity,
    decl: `fn comb_${name}(a: ${type}, b: ${type}) -> ${type} { return ${comb}; }`,
    bytes: 4,
    subgroup: `fn sub_${name}(v: ${type}) -> ${type} { ${subgroup} }`,
  };
}

const INT_MIN = '(-2147483647i - 1i)';

/** Math.max / Math.min over a subgroup: NaN wins (what subgroupMax does with NaN is up to the device). */
function extremeOverSubgroup(fn: string, f: boolean): string {
  return f ? `let nan = subgroupAny(sn_isnan(v));\n  let m = ${fn}(v);\n  return select(m, sn_nan(), nan);` : `return ${fn}(v);`;
}

function monoidOf(kind: ReduceKind, t: 'f32' | 'i32'): Monoid {
  const f = t === 'f32';
  switch (kind) {
    case 'prod':
      return scalarMonoid('mul', t, f ? '1.0' : '1i', 'a * b', 'return subgroupMul(v);');
    case 'max': // NaN wins, as Math.max on the CPU
      return scalarMonoid('max', t, f ? '(-sn_inf())' : INT_MIN, f ? 'sn_max(a, b)' : 'max(a, b)', extremeOverSubgroup('subgroupMax', f));
    case 'min':
      return scalarMonoid('min', t, f ? 'sn_inf()' : '2147483647i', f ? 'sn_min(a, b)' : 'min(a, b)', extremeOverSubgroup('subgroupMin', f));
    case 'argmax':
    case 'argmin': {
      const max = kind === 'argmax';
      // NaN is the extreme (the first NaN wins); equal values keep the lower index. The identity's
      // index is larger than any, so any element beats it.
      const nan = f ? '\n  let an = sn_isnan(a.v);\n  let bn = sn_isnan(b.v);\n  if (an || bn) { if (bn && (!an || b.i < a.i)) { return b; } return a; }' : '';
      const extreme = max ? 'subgroupMax' : 'subgroupMin';
      // Over a subgroup: the extreme value (NaN if any), then the lowest index holding it.
      const sub = f
        ? `let nan = sn_isnan(v.v);
  let anyNan = subgroupAny(nan);
  let m = ${extreme}(v.v);
  let i = subgroupMin(select(0xffffffffu, v.i, select(v.v == m, nan, anyNan)));
  return Arg(select(m, sn_nan(), anyNan), i);`
        : `let m = ${extreme}(v.v);
  return Arg(m, subgroupMin(select(0xffffffffu, v.i, v.v == m)));`;
      return {
        name: 'arg',
        type: 'Arg',
        identity: `Arg(${f ? (max ? '(-sn_inf())' : 'sn_inf()') : max ? INT_MIN : '2147483647i'}, 0xffffffffu)`,
        decl: `struct Arg { v: ${t}, i: u32 }

fn comb_arg(a: Arg, b: Arg) -> Arg {${nan}
  if (b.v == a.v) { if (b.i < a.i) { return b; } return a; }
  if (b.v ${max ? '>' : '<'} a.v) { return b; }
  return a;
}`,
        bytes: 8,
        subgroup: `fn sub_arg(v: Arg) -> Arg {\n  ${sub}\n}`,
      };
    }
    default: // sum, mean, var, std (integer sums wrap: WGSL's i32 addition does)
      return scalarMonoid('add', t, f ? '0.0' : '0i', 'a + b', 'return subgroupAdd(v);');
  }
}

/** The shape of the teams: TX teams of TY invocations per workgroup (TY = 1: one invocation per group). */
interface Teams {
  readonly tx: number;
  readonly ty: number;
  /** Combine with subgroup built-ins: the team's last `subgroup` partial results (or all, when the team is one subgroup). 0: no subgroups. */
  readonly subgroup: number;
}

/**
 * Invocations per workgroup: 256 on GPUs. SwiftShader (a CPU emulation) pays for every workgroup
 * barrier far more than for the memory traffic of a reduction, so there a workgroup is one
 * subgroup (4 lanes, its SIMD width), which combines without barriers. Measured there (ms, 2 shared
 * cores, noisy), 256 → 4: Σ of 2^20 floats 100–250 → 7–12, row sums of 1024×1024 540–1220 → 7–11,
 * softmax 512×1000 660–1090 → 17–25, cumsum 512×1000 520–720 → 13–16.
 */
function workgroupFor(caps: WebGpuCaps): number {
  if (caps.architecture === 'swiftshader') return caps.subgroups ? caps.subgroupMinSize : 4;
  return 2 ** Math.floor(Math.log2(workgroupSize(256, caps)));
}

/**
 * Teams for `m` groups of `n` elements. `rowLike`: a group's elements are the closest in memory,
 * so its team reads them together; else teams of neighbouring groups read together.
 */
function teamsFor(m: number, n: number, rowLike: boolean, caps: WebGpuCaps): Teams {
  const wg = workgroupFor(caps);
  let tx: number, ty: number;
  if (n <= TINY) [tx, ty] = [Math.min(wg, pow2(m)), 1];
  else if (rowLike) {
    ty = Math.min(wg, pow2(n));
    tx = Math.min(wg / ty, pow2(m));
  } else {
    tx = Math.min(MAX_TX, wg, pow2(m));
    ty = Math.min(wg / tx, pow2(n));
  }
  // Subgroups serve when one team fills the workgroup: every subgroup then lies in the team.
  const subgroup = caps.subgroups && tx === 1 && ty > 1 ? Math.min(ty, caps.subgroupMinSize) : 0;
  return { tx, ty, subgroup };
}

/**
 * `fn tree_<m>(v, l, ty[, sid]) -> T`: the combination of `v` over the TY lanes of each team,
 * returned to every invocation of the team; called in uniform control flow. A team within one
 * subgroup combines by subgroup built-ins alone. A larger team halves its partial results in
 * workgroup memory down to k = the minimum subgroup size, then every subgroup combines those k
 * (lanes 0..k-1 taking one each: every subgroup has k lanes, however subgroups map onto
 * invocations, which WebGPU leaves open). Without subgroups it halves down to one.
 */
function treeFn(m: Monoid, t: Teams): string {
  const params = `v: ${m.type}, l: u32, ty: u32${t.subgroup ? ', sid: u32' : ''}`;
  if (t.ty === 1) return `fn tree_${m.name}(${params}) -> ${m.type} { return v; }`;
  if (t.subgroup === t.ty) return `${m.subgroup}\n\nfn tree_${m.name}(${params}) -> ${m.type} { return sub_${m.name}(v); }`;
  const red = `red_${m.name}`;
  const steps: string[] = [];
  for (let s = t.ty / 2; s >= Math.max(1, t.subgroup); s /= 2) {
    steps.push(`if (ty < ${s}u) { ${red}[l] = comb_${m.name}(${red}[l], ${red}[l + ${s * t.tx}u]); }\n  workgroupBarrier();`);
  }
  const result = t.subgroup
    ? `var own = ${m.identity};\n  if (sid < ${t.subgroup}u) { own = ${red}[sid]; }\n  let r = sub_${m.name}(own);`
    : `let r = ${red}[l % ${t.tx}u];`;
  return `${t.subgroup ? `${m.subgroup}\n\n` : ''}var<workgroup> ${red}: array<${m.type}, ${t.tx * t.ty}>;

fn tree_${m.name}(${params}) -> ${m.type} {
  ${red}[l] = v;
  workgroupBarrier();
  ${steps.join('\n  ')}
  ${result}
  workgroupBarrier();
  return r;
}`;
}

/** One fold over the group: `element(x, j)` of each element x (its index j in the group) combined by `monoid` into `r<k>`, then `after`. */
interface Fold {
  readonly monoid: Monoid;
  element(x: string, j: string): string;
  readonly after?: string;
}

/** Where a pass reads its groups: `load(q)`, operand k at storage offset `keptOffsets[k] + kept(o) + inner(j)`. */
interface Groups {
  readonly kept: Space;
  readonly keptOffsets: readonly (number | string)[];
  readonly inner: Space;
  load(q: readonly string[]): string;
}

/** The scratch buffers of a program, bound from `first` on (after the inputs and the one output). */
class Scratch {
  readonly sizes: { bytes: number }[] = [];
  private readonly decls: string[] = [];

  constructor(private readonly first: number) {}

  add(type: string, count: number, bytes: number): string {
    const name = `sc${this.sizes.length}`;
    this.decls.push(`@group(0) @binding(${this.first + this.sizes.length}) var<storage, read_write> ${name}: array<${type}>;`);
    this.sizes.push({ bytes: Math.max(4, count * bytes) });
    return name;
  }

  /** The declarations of the scratch buffers `body` uses. */
  declsFor(body: string): string {
    return this.decls.filter((_, k) => new RegExp(`\\bsc${k}\\[`).test(body)).join('\n');
  }
}

/**
 * A complete module: directives and bindings first, then the prelude's helpers, then the prologue
 * when `body` calls it, then `body`; with the parameter block (its words so far) when the code reads it.
 */
function module(src: Source, out: GpuView, caps: WebGpuCaps, scratch: Scratch, subgroups: boolean, body: string): { source: string; params?: Uint32Array<ArrayBuffer> } {
  const code = body.includes('prologue(') ? `${src.decl}\n\n${body}` : body;
  const reads = code.includes('sn_params[');
  const source = `${subgroups ? 'enable subgroups;\n' : ''}${bindings(src.inputs.map((v) => v.dtype), [out.dtype], caps)}\n${scratch.declsFor(body)}\n${reads ? src.params.declaration() : ''}\n\n${withPrelude(code)}`;
  const params = reads ? src.params.words() : undefined;
  return params ? { source, params } : { source };
}

/**
 * A pass in which the teams fold groups `o` of `groups` (m of them, n elements each), through
 * `folds` in turn, then run `finish` (with `o`, `valid`, `ty`, `r0`, … in scope). `chunks` > 1
 * splits each group into that many chunks of `chunk` elements, chunk `wid.z` by each workgroup.
 */
function foldPass(
  p: { label: string; src: Source; out: GpuView; caps: WebGpuCaps; scratch: Scratch },
  groups: Groups,
  m: number,
  n: number,
  teams: Teams,
  folds: readonly Fold[],
  finish: string,
  setup = '',
  chunks = 1,
  chunk = n,
): WgslKernel {
  const { tx, ty } = teams;
  const g = grid(p.label, Math.ceil(m / tx), 1, p.caps);
  const [j0, j1] = chunks > 1 ? [`wid.z * ${chunk}u`, `min(wid.z * ${chunk}u + ${chunk}u, ${n}u)`] : ['0u', `${n}u`];
  const monoids = [...new Map(folds.map((f) => [f.monoid.name, f.monoid])).values()];
  const sid = teams.subgroup ? ', sid' : '';
  const bases = names('base', groups.keptOffsets.length);
  const loops = folds.map((f, k) => {
    const m = f.monoid.name;
    return `var acc${k} = ${f.monoid.identity};
  if (valid) {
    for (var j = ${j0} + ty; j < ${j1}; j += ${ty}u) {
      ${offsetIn(groups.inner, 'j', bases, 'q')}
      acc${k} = comb_${m}(acc${k}, ${f.element(groups.load(names('q', bases.length)), 'j')});
    }
  }
  let r${k} = tree_${m}(acc${k}, l, ty${sid});${f.after ? `\n  ${f.after}` : ''}`;
  });
  const sq = loops.some((text) => text.includes('sq(')) ? '\n\nfn sq(v: f32) -> f32 { return v * v; }' : '';
  const body = `${monoids.map((mo) => `${mo.decl}\n\n${treeFn(mo, teams)}`).join('\n\n')}${sq}

@compute @workgroup_size(${tx * ty}) fn main(@builtin(local_invocation_index) l: u32, @builtin(workgroup_id) wid: vec3u${teams.subgroup ? ', @builtin(subgroup_invocation_id) sid: u32' : ''}) {
  let ty = l / ${tx}u;
  let o = (wid.x + wid.y * ${g.workgroups[0]}u) * ${tx}u + l % ${tx}u;
  let valid = o < ${m}u;
  ${bases.map((b) => `var ${b} = 0u;`).join(' ')}
  if (valid) { ${offsetIn(groups.kept, 'o', groups.keptOffsets, 'b')} ${bases.map((b, k) => `${b} = b${k};`).join(' ')} }
  ${setup}
  ${loops.join('\n  ')}
  ${finish}
}
`;
  const workgroups = chunks > 1 ? [g.workgroups[0]!, g.workgroups[1] ?? 1, chunks] : g.workgroups;
  return { ...module(p.src, p.out, p.caps, p.scratch, teams.subgroup > 0, body), workgroups, label: p.label };
}

/** The pass packing `n` values of `src` (rounded to `out`'s dtype already) into `out`'s words. */
function packPass(label: string, src: Source, out: GpuView, caps: WebGpuCaps, scratch: Scratch, buf: string): WgslKernel {
  const n = numel(out.shape), per = elementsPerWord(out.dtype, caps), words = Math.ceil(n / per);
  const size = workgroupSize(256, caps), g = grid(label, words, size, caps);
  const values = Array.from({ length: per }, (_, k) => `${buf}[min(w * ${per}u + ${k}u, ${Math.max(n - 1, 0)}u)]`);
  const body = `@compute @workgroup_size(${size}) fn main(${GRID_PARAMS}) {
  let w = ${g.index};
  if (w >= ${words}u) { return; }
  out0[w] = ${packWord(out.dtype, values, caps)};
}
`;
  return { ...module(src, out, caps, scratch, false, body), workgroups: g.workgroups, label };
}

/** Where final results go: `out0` directly, or a scratch buffer and a packing pass when outputs share words. */
function sink(label: string, src: Source, out: GpuView, caps: WebGpuCaps, scratch: Scratch) {
  const packed = elementsPerWord(out.dtype, caps) > 1;
  const buf = packed ? scratch.add(computeType(out.dtype), numel(out.shape), 4) : 'out0';
  return {
    /** The statement storing `v` (of out's compute type) as output element `i`. */
    store: (i: string, v: string) => `${buf}[${i}] = ${packed ? roundTo(out.dtype, v) : packWord(out.dtype, [roundTo(out.dtype, v)], caps)};`,
    /** The passes after the computing ones. */
    passes: (): WgslKernel[] => (packed ? [packPass(label, src, out, caps, scratch, buf)] : []),
  };
}

/** The program form: the passes alone when there is one and no scratch. */
function program(label: string, passes: WgslKernel[], scratch: Scratch): WgslForm {
  return passes.length === 1 && scratch.sizes.length === 0 ? passes[0]! : { scratch: scratch.sizes, passes, label };
}

/** How many chunks to split each of `m` groups of `n` into, for `teams` (1: no split). */
function chunksFor(m: number, n: number, teams: Teams): number {
  if (teams.ty === 1) return 1;
  const workgroups = Math.ceil(m / teams.tx);
  return Math.max(1, Math.min(Math.ceil(MIN_WORKGROUPS / workgroups), Math.floor(n / (8 * teams.ty)), 256));
}

/** Reduces input 0 (or `prologue` over the inputs) over `dims` (sorted) into the contiguous `out`, as the CPU's reduceKernel. */
export function reduceProgram(kind0: ReduceKind, inputs: readonly GpuView[], prologue: Expr | undefined, dims: readonly number[], correction: number, out: GpuView, caps: WebGpuCaps): WgslForm {
  const label = kind0;
  const src = sourceOf(inputs, prologue, caps);
  const n = dims.reduce((a, d) => a * src.shape[d]!, 1), m = numel(out.shape);
  // The variance of no elements is 0/0, NaN, as their mean is.
  const kind: ReduceKind = (kind0 === 'var' || kind0 === 'std') && n === 0 ? 'mean' : kind0;
  const keptDims = src.shape.map((_, d) => d).filter((d) => !dims.includes(d));
  const input: Groups = { kept: space(src, keptDims), keptOffsets: src.views.map((v) => src.params.u32(v.offset)), inner: space(src, dims), load: src.load };
  const teams = teamsFor(m, n, rowLike(input.inner, input.kept, src.lead), caps);
  const scratch = new Scratch(inputs.length + 1);
  const ctx = { label, src, out, caps, scratch };
  const f32 = kind === 'mean' || kind === 'var' || kind === 'std' || computeType(out.dtype) === 'f32' || computeType(src.dtype) === 'f32';
  const monoid = monoidOf(kind, f32 ? 'f32' : 'i32');
  const variance = kind === 'var' || kind === 'std';
  const divisor = Math.max(0, n - correction);
  const final = (r: string): string => {
    switch (kind) {
      case 'mean':
        return n === 0 ? 'sn_nan()' : `${r} / ${literal(n, 'f32')}`;
      case 'argmax':
      case 'argmin':
        return `i32(${r}.i)`;
      case 'var':
      case 'std': {
        // Σ(x − mean)² / 0 is ∞, or NaN for 0/0, as on the CPU.
        const v = divisor === 0 ? `select(sn_inf(), sn_nan(), !(${r} > 0.0))` : `${r} / ${literal(divisor, 'f32')}`;
        return kind === 'std' ? `sqrt(${v})` : v;
      }
      default:
        return r;
    }
  };
  const element = kind === 'argmax' || kind === 'argmin' ? (v: string, j: string) => `Arg(${v}, ${j})` : (v: string) => v;
  const out0 = sink(label, src, out, caps, scratch);
  const chunks = chunksFor(m, n, teams);
  const store = (r: string) => `if (ty == 0u && valid) { ${out0.store('o', final(r))} }`;
  // var and std: the mean of the offsets from the group's first element c, then Σ((x − c) − mean)²
  // (two passes over the data, as on the CPU; the offsets keep f32 digits when |mean| ≫ spread).
  const firstElement = `var c = 0.0;\n  if (valid) { c = ${input.load(names('base', inputs.length))}; }`;
  if (chunks === 1) {
    const folds: Fold[] = variance
      ? [
          { monoid, element: (v) => `(${v} - c)`, after: `let d = r0 / ${literal(n, 'f32')};` },
          { monoid, element: (v) => `sq((${v} - c) - d)` },
        ]
      : [{ monoid, element }];
    const pass = foldPass(ctx, input, m, n, teams, folds, store(`r${folds.length - 1}`), variance ? firstElement : '');
    return program(label, [pass, ...out0.passes()], scratch);
  }
  // Split: chunk partial results into scratch (chunk-major), then a pass combining each group's chunks.
  const chunk = Math.ceil(n / chunks / teams.ty) * teams.ty;
  const parts = Math.ceil(n / chunk);
  const partial = scratch.add(monoid.type, parts * m, monoid.bytes);
  const partials: Groups = { kept: { shape: [m], strides: [[1]] }, keptOffsets: [0], inner: { shape: [parts], strides: [[m]] }, load: (q) => `${partial}[${q[0]}]` };
  const combineTeams = teamsFor(m, parts, m === 1, caps);
  const split = (e: (v: string, j: string) => string, setup: string) =>
    foldPass(ctx, input, m, n, teams, [{ monoid, element: e }], `if (ty == 0u && valid) { ${partial}[wid.z * ${m}u + o] = r0; }`, setup, parts, chunk);
  const combine = (finish: (r: string) => string) => foldPass(ctx, partials, m, parts, combineTeams, [{ monoid, element: (v) => v }], finish('r0'));
  if (!variance) return program(label, [split(element, ''), combine(store), ...out0.passes()], scratch);
  const means = scratch.add('f32', m, 4);
  return program(
    label,
    [
      split((v) => `(${v} - c)`, firstElement),
      combine((r) => `if (ty == 0u && valid) { ${means}[o] = ${r} / ${literal(n, 'f32')}; }`),
      split((v) => `sq((${v} - c) - d)`, `${firstElement}\n  var d = 0.0;\n  if (valid) { d = ${means}[o]; }`),
      combine(store),
      ...out0.passes(),
    ],
    scratch,
  );
}

/** The rows along `dim` of `src` and of the contiguous `out` (same shape): kept dims collapsed for every operand and out. */
function rows(src: Source, out: GpuView, dim: number | null) {
  const dims = dim === null ? [] : [dim];
  const keptDims = src.shape.map((_, d) => d).filter((d) => d !== dim);
  const c = collapseDims(keptDims.map((d) => src.shape[d]!), [...src.views.map((v) => keptDims.map((d) => v.strides[d]!)), keptDims.map((d) => out.strides[d]!)]);
  const n = dim === null ? 1 : src.shape[dim]!;
  const input: Groups = { kept: { shape: c.shape, strides: c.strides.slice(0, -1) }, keptOffsets: src.views.map((v) => src.params.u32(v.offset)), inner: space(src, dims), load: src.load };
  return {
    m: numel(c.shape),
    n,
    input,
    rowLike: rowLike(input.inner, input.kept, src.lead),
    outKept: { shape: c.shape, strides: c.strides.slice(-1) },
    /** The stride of `dim` in out (0 when the rows have one element). */
    outStride: dim === null || n === 1 ? 0 : out.strides[dim]!,
  };
}

/**
 * softmax or logSoftmax along `dim` (null for a 0-d tensor) in one kernel: each team folds its row's
 * max, then Σexp(x − max), then writes exp(x − max) / Σ (or (x − max) − log Σ).
 */
export function softmaxProgram(inputs: readonly GpuView[], prologue: Expr | undefined, dim: number | null, log: boolean, out: GpuView, caps: WebGpuCaps): WgslForm {
  const label = log ? 'logSoftmax' : 'softmax';
  const src = sourceOf(inputs, prologue, caps);
  const r = rows(src, out, dim);
  const teams = teamsFor(r.m, r.n, r.rowLike, caps);
  const scratch = new Scratch(inputs.length + 1);
  const out0 = sink(label, src, out, caps, scratch);
  // (x − max) − log Σ, not x − (max + log Σ): f32 would round the sum's digits away when |max| ≫ log Σ.
  const value = log ? '(v - r0) - logSum' : 'exp(v - r0) / r1';
  const finish = `${log ? 'let logSum = log(r1);\n  ' : ''}if (valid) {
    ${offsetIn(r.outKept, 'o', [0], 'ob')}
    for (var j = ty; j < ${r.n}u; j += ${teams.ty}u) {
      ${offsetIn(r.input.inner, 'j', names('base', inputs.length), 'q')}
      let v = ${r.input.load(names('q', inputs.length))};
      ${out0.store(`ob0 + j * ${r.outStride}u`, value)}
    }
  }`;
  const folds: Fold[] = [
    { monoid: monoidOf('max', 'f32'), element: (v) => v },
    { monoid: monoidOf('sum', 'f32'), element: (v) => `exp(${v} - r0)` },
  ];
  const pass = foldPass({ label, src, out, caps, scratch }, r.input, r.m, r.n, teams, folds, finish);
  return program(label, [pass, ...out0.passes()], scratch);
}

/**
 * Running sums along `dim` (null for a 0-d tensor). Each invocation of a row's team takes a block
 * of K = ⌈n / TY⌉ consecutive elements: it sums its block, the team scans those sums in workgroup
 * memory (Hillis–Steele, log2(TY) steps) to learn the sum before its block, then walks the block
 * again writing running sums. Subgroup scans are not used: a scan's order is the lanes' order, and
 * WebGPU does not say how lanes map onto invocations.
 */
export function cumsumProgram(inputs: readonly GpuView[], prologue: Expr | undefined, dim: number | null, out: GpuView, caps: WebGpuCaps): WgslForm {
  const label = 'cumsum';
  const src = sourceOf(inputs, prologue, caps);
  const r = rows(src, out, dim);
  // Blocks of at least 4 elements: the serial walks are cheap, the scan's barriers are not.
  const { tx, ty } = teamsFor(r.m, Math.ceil(r.n / 4), r.rowLike, caps);
  const k = Math.ceil(r.n / ty);
  const t = computeType(out.dtype);
  const scratch = new Scratch(inputs.length + 1);
  const out0 = sink(label, src, out, caps, scratch);
  const g = grid(label, Math.ceil(r.m / tx), 1, caps);
  const zero = t === 'f32' ? '0.0' : '0i';
  const steps: string[] = [];
  for (let d = 1; d < ty; d *= 2) {
    steps.push(`var t${d} = ${zero};
  if (ty >= ${d}u) { t${d} = scan[l - ${d * tx}u]; }
  workgroupBarrier();
  if (ty >= ${d}u) { total += t${d}; scan[l] = total; }
  workgroupBarrier();`);
  }
  const bases = names('base', inputs.length);
  const load = r.input.load(names('q', inputs.length));
  const walk = (stmt: string) => `if (valid) {
    for (var j = ty * ${k}u; j < min(ty * ${k}u + ${k}u, ${r.n}u); j++) {
      ${offsetIn(r.input.inner, 'j', bases, 'q')}
      ${stmt}
    }
  }`;
  const scan = ty > 1 ? `scan[l] = total;\n  workgroupBarrier();\n  ${steps.join('\n  ')}` : '';
  const body = `${ty > 1 ? `var<workgroup> scan: array<${t}, ${tx * ty}>;\n\n` : ''}@compute @workgroup_size(${tx * ty}) fn main(@builtin(local_invocation_index) l: u32, @builtin(workgroup_id) wid: vec3u) {
  let ty = l / ${tx}u;
  let o = (wid.x + wid.y * ${g.workgroups[0]}u) * ${tx}u + l % ${tx}u;
  let valid = o < ${r.m}u;
  ${bases.map((b) => `var ${b} = 0u;`).join(' ')}
  var ob = 0u;
  if (valid) {
    ${offsetIn(r.input.kept, 'o', r.input.keptOffsets, 'b')} ${bases.map((b, i) => `${b} = b${i};`).join(' ')}
    ${offsetIn(r.outKept, 'o', [0], 'c')} ob = c0;
  }
  var own = ${zero};
  ${walk(`own += ${load};`)}
  var total = own;
  ${scan}
  var run = ${zero};
  ${ty > 1 ? `if (ty > 0u) { run = scan[l - ${tx}u]; }` : ''}
  ${walk(`run += ${load};\n      ${out0.store(`ob + j * ${r.outStride}u`, 'run')}`)}
}
`;
  const pass: WgslKernel = { ...module(src, out, caps, scratch, false, body), workgroups: g.workgroups, label };
  return program(label, [pass, ...out0.passes()], scratch);
}
