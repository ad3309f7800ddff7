import type { DType } from '../../tensor/dtype.js';
import { contiguousStrides, numel } from '../../tensor/shape.js';
import { type Expr } from '../../ops/expr.js';
import { broadcastStrides, collapseDims } from '../cpu/map.js';
import { wgslExprBody } from './map.js';
import { KernelParams } from './params.js';
import { type WgslScalar, bindings, computeType, convert, elementsPerWord, loadElement, packWord, roundTo } from './dtype.js';
import { grid, workgroupSize } from './grid.js';
import type { GpuView, WebGpuCaps, WgslForm, WgslKernel } from './kernel.js';
import { withPrelude } from './prelude.js';
import { offsetOf, unravel } from './strided.js';

// The GEMM every matrix product and convolution runs on WebGPU: C[b, i, j] = Σ_k A[b, i, k]·B[b, k, j]
// over a batch of products, with the operands read in place through their strides (conv2d reads its
// input as an implicit im2col matrix, see ./conv.ts) and an optional epilogue (bias) before the store.
// Floats accumulate in f32, integers in i32 (wrapping, then narrowed to the output dtype). Packed
// outputs (int8, uint8, float16 without shader-f16) are stored a whole word per invocation; where a
// tile's columns do not fill whole words, the sums go to scratch and a second pass packs them.
//
// Two kernel shapes:
// - `tiled`, for GPUs: 64×64 output tiles per workgroup of 16×16 invocations, each owning a 4×4
//   register tile; A and B tiles 16 deep in k are staged through workgroup memory, loaded
//   cooperatively (vec4 loads where the operand is contiguous and aligned along x or k), so each
//   loaded value serves 16 invocations and neighbouring invocations read neighbouring addresses.
// - `registers`: no workgroup memory; each invocation reads its operands straight from storage into
//   an 8×8 register tile (smaller for thin products), one k per loop step (four, with vec4 loads along
//   k, for operands that pack values into words).
//   GPUs get it for thin products (a matrix-vector product), which would leave most of a 64×64 tile
//   idle. SwiftShader gets it for everything: it is a CPU emulation where every invocation's load is
//   a gather and a barrier switches fibers, and runs `tiled` 2.7–3.8× slower (3×3 conv benchmark, 512³
//   matmul); there, with subgroups, a workgroup is one quad that shares loads (see registersKernel).

/**
 * How a GEMM kernel reads one operand: A as rows x < M by k < K, B as columns x < N by k < K. Index
 * math comes in steps so that it is hoisted out of the k loop: `base` once per invocation, `atX`
 * once per x an invocation touches, `atK` once per k; `load` combines them. Names an operand defines
 * start with the name it is given.
 */
export interface GemmOperand {
  /** The input binding it is read from (`in${binding}`). */
  readonly binding: number;
  readonly dtype: DType;
  /** Four consecutive k from a multiple of 4 are one aligned vec4 (for every x and batch). */
  readonly vecK: boolean;
  /** Four consecutive x from a multiple of 4 are one aligned vec4 (for every k and batch). */
  readonly vecX: boolean;
  /** Neighbouring k lie nearer in memory than neighbouring x: cooperative loads walk k fastest. */
  readonly kFast: boolean;
  /** Statements defining `name` from the batch dims' u32 indices. */
  base(name: string, batch: readonly string[]): string;
  /** Statements defining `name` for x (a u32 expression below the operand's extent) in the batch set up as `base`. */
  atX(name: string, base: string, x: string): string;
  /** Statements defining `name` for k (a u32 expression). */
  atK(name: string, k: string): string;
  /** The element at the x and k set up under those names, as `t`. */
  load(x: string, k: string, t: WgslScalar): string;
  /** The vec4<t> of four consecutive x (or k) from there, the binding then being an array of vec4 (operands with vecX or vecK). */
  load4?(x: string, k: string, t: WgslScalar): string;
  /**
   * For loops that visit k = 0, 1, 2, … in turn, in place of `atK`: `start` declares as variables, at
   * k = 0, what `atK` defines under `name`, and `next` advances them to the next k. Where `atK` divides
   * by sizes (conv2d's taps), this adds instead, and leaves the sizes to parameters.
   */
  readonly walk?: { start(name: string): string; next(name: string): string };
}

/** A matrix stored with strides: element (x, k) of batch (b…) at offset + Σ b·batch + x·xStride + Σ k_d·stride_d. */
export interface StridedMatrix {
  readonly dtype: DType;
  readonly offset: number;
  /** Strides of the product's batch dims (0 where broadcast). */
  readonly batch: readonly number[];
  readonly xStride: number;
  /** k's dims, outermost first (a convolution's weight has three: channel, kernel row, kernel column). */
  readonly kDims: readonly { readonly size: number; readonly stride: number }[];
}

const wide = (d: DType) => d === 'float32' || d === 'int32';
const vec4Of = (t: WgslScalar) => (t === 'f32' ? 'vec4f' : 'vec4i');

/** `e` (of `d`'s compute type) as `t`. */
function widen(d: DType, e: string, t: WgslScalar): string {
  return computeType(d) === t ? e : `${t}(${e})`;
}

/**
 * The operand for matrix `m` at `binding`. Its offset, batch strides, x stride and (for one k dim) k
 * stride are read from the parameter block, so views of any offset and matrices of any size share a
 * pipeline; which strides are 0 or 1, the k dims' layout and the vec4 choices stay in the source.
 */
export function stridedOperand(m: StridedMatrix, binding: number, caps: WebGpuCaps, params: KernelParams): GemmOperand {
  const offset = params.u32(m.offset);
  const kc = collapseDims(m.kDims.map((d) => d.size), [m.kDims.map((d) => d.stride)]);
  const kSizes = kc.shape, kStrides = kc.strides[0]!;
  const K = numel(kSizes);
  // float16 stored natively (shader-f16) loads as vec4<f16> too, converted to the accumulator's vec4.
  const native16 = m.dtype === 'float16' && caps.f16;
  const aligned = (wide(m.dtype) || native16) && m.offset % 4 === 0 && m.batch.every((s) => s % 4 === 0);
  const kInner = kStrides.length === 0 ? 0 : kStrides[kStrides.length - 1]!;
  const buf = `in${binding}`;
  // Each parameter gets its word once, here (the closures below run once per use).
  const batchTerms = (batch: readonly string[]) => m.batch.flatMap((s, d) => (s === 0 ? [] : [`${batch[d]} * ${batchStrides[d]}`]));
  const batchStrides = m.batch.map((s) => (s === 0 ? '' : params.u32(s)));
  const xStride = m.xStride === 0 ? '' : params.u32(m.xStride);
  const kStride = kSizes.length === 1 && kStrides[0] !== 1 ? params.u32(kStrides[0]!) : '';
  return {
    binding,
    dtype: m.dtype,
    vecK: aligned && K % 4 === 0 && kSizes.length === 1 && kInner === 1 && m.xStride % 4 === 0,
    vecX: aligned && m.xStride === 1 && kStrides.every((s) => s % 4 === 0),
    kFast: m.xStride === 0 || (kInner !== 0 && Math.abs(kInner) < Math.abs(m.xStride)),
    base: (name, batch) => `let ${name} = ${[...batchTerms(batch), offset].join(' + ')};`,
    atX: (name, base, x) => `let ${name} = ${base}${xStride ? ` + (${x}) * ${xStride}` : ''};`,
    atK(name, k) {
      if (kSizes.length <= 1) return `let ${name} = ${kSizes.length === 0 ? '0u' : kStride ? `(${k}) * ${kStride}` : `(${k})`};`;
      const { lines, idx } = unravel(`(${k})`, kSizes, `${name}_`);
      return `${lines.join(' ')} let ${name} = ${offsetOf(0, kStrides, idx)};`;
    },
    // Several k dims (a transposed convolution's weight): the walk keeps an index per inner dim and moves the
    // offset by parameters, so the dims' sizes (the kernel size) stay out of the source.
    ...(kSizes.length > 1 && { walk: stridedWalk(kSizes, kStrides, params) }),
    load: (x, k, t) => widen(m.dtype, loadElement(buf, m.dtype, `(${x} + ${k})`, caps), t),
    load4: (x, k, t) => (computeType(m.dtype) === t && !native16 ? `${buf}[(${x} + ${k}) / 4u]` : `${vec4Of(t)}(${buf}[(${x} + ${k}) / 4u])`),
  };
}

/**
 * GemmOperand.walk over k dims of `sizes` and `strides` (outermost first): `name` is the u32 offset,
 * `name_d` the index in inner dim d. Past an inner dim's end its index returns to 0 and the offset
 * moves by the next outer dim's stride less the dim's extent (u32 arithmetic wraps, so negative moves
 * are words too). Sizes and moves are parameters, read when the walk is first used.
 */
function stridedWalk(sizes: readonly number[], strides: readonly number[], params: KernelParams): NonNullable<GemmOperand['walk']> {
  const last = sizes.length - 1;
  let read: { size: string; step: string; wrap: string }[] | null = null;
  const values = () =>
    (read ??= sizes.map((size, d) => ({ size: params.u32(size), step: params.u32(strides[d]!), wrap: d === 0 ? '' : params.u32(strides[d - 1]! - size * strides[d]!) })));
  return {
    start(name) {
      values();
      return [`var ${name} = 0u;`, ...sizes.slice(1).map((_, d) => `var ${name}_${d + 1} = 0u;`)].join(' ');
    },
    next(name) {
      const v = values();
      // Dim d past its end: back to 0, and dim d - 1 moves on (dim 0 keeps no index).
      const wrap = (d: number): string =>
        `${name}_${d} = 0u; ${name} += ${v[d]!.wrap};` + (d > 1 ? ` ${name}_${d - 1} += 1u; if (${name}_${d - 1} == ${v[d - 1]!.size}) { ${wrap(d - 1)} }` : '');
      return `${name}_${last} += 1u; ${name} += ${v[last]!.step}; if (${name}_${last} == ${v[last]!.size}) { ${wrap(last)} }`;
    },
  };
}

/** One batch of products for the kernel generator. */
export interface GemmProblem {
  /** The op users called, for errors. */
  readonly label: string;
  /** The batch dims: numel(batch) products, indexed row-major. */
  readonly batch: readonly number[];
  readonly m: number;
  readonly n: number;
  readonly k: number;
  /** The dtypes of the inputs in binding order: A's, B's and any the epilogue reads. */
  readonly inputs: readonly DType[];
  readonly a: GemmOperand;
  readonly b: GemmOperand;
  /** The value stored for the sum `acc` (compute type) at batch indices `batch`, row `i`, column `j` (u32 names). */
  readonly epilogue?: (acc: string, batch: readonly string[], i: string, j: string) => string;
  /** WGSL functions the epilogue calls, declared after the bindings. */
  readonly functions?: string;
  /**
   * The parameter block (see ./params.ts) the sizes, strides and offsets and the epilogue's constants
   * are read from (the operands may add theirs while the kernel is generated); declared and bound by
   * every pass that has values in it.
   */
  readonly params: KernelParams;
  /** Contiguous, its elements in [...batch, m, n] order. */
  readonly out: GpuView;
  /**
   * The sums' type when not the output's compute type (the epilogue then converts): int8 GEMMs
   * (src/quant/gemm.ts) accumulate in f32 where every partial sum is an integer below 2²⁴, exact.
   */
  readonly accumulator?: WgslScalar;
  /**
   * Where the sums go when not to element (b·m + i)·n + j of the contiguous output: that batch's
   * base plus an offset for row `i` and one for column `j` (u32 expressions of the u32 names given).
   * A transposed convolution whose stride equals its kernel writes product row (o, ki, kj) and column
   * (ih, iw) to output pixel (ih·s + ki, iw·s + kj) of channel o. Stores are then one element each.
   */
  readonly scatter?: { row(i: string): string; col(j: string): string };
  /**
   * The register kernel writes k into the source and steps its loop by 4 between literal bounds, so
   * the compiler folds each step's tap math (a depthwise convolution's few taps, each a handful of
   * multiply-adds: there a loop bound and tap walk read from parameters cost more than the
   * arithmetic). Unrolling all of k instead made a 5×5 kernel's WGSL 47 KB, seconds to compile.
   */
  readonly literalK?: boolean;
}

/** An invocation's register tile: rows `row0 + r` for r < tm, columns `col0 + c` for c < tn; `acc(r, c)` names the sums. */
interface Tile {
  readonly tm: number;
  readonly tn: number;
  acc(r: number, c: number): string;
}

const XYZW = ['x', 'y', 'z', 'w'];
const nextPow2 = (v: number) => 2 ** Math.ceil(Math.log2(Math.max(1, v)));

/** Where tiles are stored: the output (`dtype` set: rounded and packed) or f32/i32 scratch (`dtype` null), in vec4 or not. */
interface Destination {
  readonly buf: string;
  readonly dtype: DType | null;
  readonly vec4: boolean;
}

/**
 * Statements storing a tile (rows row0…, columns col0… of the batch with indices `bidx`) at flat
 * element base `obase`. Every row and column is bounds-checked, also where the tiles happen to fit
 * the product exactly: a compare per store costs nothing measurable, and products of every size then
 * share the kernel.
 */
function storeTile(p: GemmProblem, tile: Tile, caps: WebGpuCaps, dest: Destination, bidx: readonly string[]): string[] {
  const m = p.params.u32(p.m), n = p.params.u32(p.n), t = computeType(p.out.dtype);
  const per = dest.dtype ? elementsPerWord(dest.dtype, caps) : 1;
  const unit = dest.vec4 ? 4 : per;
  const lines: string[] = [];
  const { scatter } = p;
  for (let c = 0; c < tile.tn; c++) lines.push(`let j${c} = col0 + ${c}u;`, ...(scatter ? [`let jo${c} = ${scatter.col(`j${c}`)};`] : []));
  for (let r = 0; r < tile.tm; r++) {
    const body: string[] = [`let i${r} = row0 + ${r}u;`, ...(scatter ? [`let io${r} = ${scatter.row(`i${r}`)};`] : [])];
    for (let c0 = 0; c0 < tile.tn; c0 += unit) {
      const values = Array.from({ length: unit }, (_, q) => {
        const v = p.epilogue ? p.epilogue(tile.acc(r, c0 + q), bidx, `i${r}`, `j${c0 + q}`) : tile.acc(r, c0 + q);
        return dest.dtype ? roundTo(dest.dtype, v) : v;
      });
      const at = scatter ? `obase + io${r} + jo${c0}` : `obase + i${r} * ${n} + j${c0}`;
      let store: string;
      if (dest.vec4) {
        const v = `${vec4Of(t)}(${values.join(', ')})`;
        store = `${dest.buf}[(${at}) / 4u] = ${dest.dtype === 'float16' ? `vec4<f16>(${v})` : v};`; // float16 here is stored natively
      }
      else if (per === 1) store = `${dest.buf}[${at}] = ${dest.dtype ? packWord(dest.dtype, values, caps) : values[0]};`;
      else store = `${dest.buf}[(${at}) / ${per}u] = ${packWord(dest.dtype!, values, caps)};`;
      body.push(`if (j${c0} < ${n}) { ${store} }`);
    }
    lines.push(`if (row0 + ${r}u < ${m}) { ${body.join(' ')} }`);
  }
  return lines;
}

/** Where the GEMM pass writes: straight into the output, or (packed outputs whose words a tile cannot own) into f32/i32 scratch that a second pass packs. */
function destination(p: GemmProblem, tn: number, caps: WebGpuCaps): { direct: boolean; dest: Destination } {
  const per = elementsPerWord(p.out.dtype, caps);
  // Scattered stores are one element each: packed outputs go through scratch.
  const direct = per === 1 || (!p.scatter && p.n % per === 0 && tn % per === 0 && p.out.offset % per === 0);
  const vec4 = direct && !p.scatter && (wide(p.out.dtype) || (p.out.dtype === 'float16' && caps.f16)) && tn % 4 === 0 && p.n % 4 === 0 && p.out.offset % 4 === 0;
  return {
    direct,
    dest: { buf: direct ? 'out0' : 'sc0', dtype: direct ? p.out.dtype : null, vec4 },
  };
}

/** The pass packing scratch values (flat, in output order) into the packed output: one invocation per output word. */
function packPass(p: GemmProblem, caps: WebGpuCaps, decls: string): WgslKernel {
  const total = numel(p.out.shape), per = elementsPerWord(p.out.dtype, caps);
  const first = Math.floor(p.out.offset / per), words = Math.ceil((p.out.offset + total) / per) - first;
  const size = workgroupSize(256, caps), g = grid(p.label, words, size, caps);
  const values = Array.from({ length: per }, (_, q) => `v${q}`);
  const reads = values.map((v, q) => `let ${v} = ${roundTo(p.out.dtype, `sc0[min(e + ${q}u, ${total - 1}u)]`)};`);
  const source = `${decls}

@compute @workgroup_size(${size}) fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let w = ${g.index};
  if (w >= ${words}u) { return; }
  let e = (w + ${first}u) * ${per}u - ${p.out.offset}u;
  ${reads.join('\n  ')}
  out0[w + ${first}u] = ${packWord(p.out.dtype, values, caps)};
}
`;
  return { source: withPrelude(source), workgroups: g.workgroups, label: p.label };
}

/** The module's declarations: bindings (vec4 where chosen), then scratch for a packed output. */
function declarations(p: GemmProblem, caps: WebGpuCaps, vec: { a: boolean; b: boolean; out: boolean }, direct: boolean): string {
  const vec4 = [...p.inputs.map((_, i) => (i === p.a.binding && vec.a) || (i === p.b.binding && vec.b)), vec.out];
  const decl = bindings(p.inputs, [p.out.dtype], caps, vec4) + `\n${p.params.declaration()}` + (p.functions ? `\n\n${p.functions}` : '');
  return direct ? decl : `${decl}\n@group(0) @binding(${p.inputs.length + 1}) var<storage, read_write> sc0: array<${computeType(p.out.dtype)}>;`;
}

/** The kernel (or, for a packed output whose words straddle tiles, the GEMM pass and a packing pass). */
function finish(p: GemmProblem, caps: WebGpuCaps, main: WgslKernel, direct: boolean, decls: string): WgslForm {
  // Every pass declares the epilogue's functions (`decls`), so each binds their parameter block.
  const words = p.params.words();
  const bind = (k: WgslKernel): WgslKernel => (words ? { ...k, params: words } : k);
  if (direct) return bind(main);
  return { scratch: [{ bytes: Math.max(4, numel(p.out.shape) * 4) }], passes: [bind(main), bind(packPass(p, caps, decls))], label: p.label };
}

/**
 * The flat workgroup index `w` split into column tile, row tile and batch `bt`, and `bt` into the
 * batch dims' indices (named by `batchIndices`); the counts are parameters, so every size of a
 * product shares the kernel. Workgroups past the last tile (the grid's overhang) return.
 */
function locate(p: GemmProblem, tilesN: number, tilesM: number, total: number): string[] {
  const u = (v: number) => p.params.u32(v);
  const n = u(tilesN);
  const lines = [
    'let w = wid.x + wid.y * nwg.x;',
    `if (w >= ${u(total)}) { return; }`,
    `let tileN = w % ${n};`,
    `let tileM = (w / ${n}) % ${u(tilesM)};`,
    `let bt = w / ${u(tilesN * tilesM)};`,
  ];
  const rank = p.batch.length;
  if (rank === 1) lines.push('let bi0 = bt;');
  else if (rank > 1) {
    lines.push('var bi_rest = bt;');
    for (let d = rank - 1; d >= 1; d--) {
      const size = u(p.batch[d]!);
      lines.push(`let bi${d} = bi_rest % ${size}; bi_rest = bi_rest / ${size};`);
    }
    lines.push('let bi0 = bi_rest;');
  }
  return lines;
}

/** The names `locate` gives the batch dims' indices. */
const batchIndices = (p: GemmProblem) => p.batch.map((_, d) => `bi${d}`);

/** The last x a tile may read of an extent: the extent less one, for vec4 along x rounded down to a multiple of 4. */
const lastX = (extent: number, vec: 'x' | 'k' | null) => (vec === 'x' ? (extent - 1) & ~3 : extent - 1);

/** Register tile sizes: 8 where the dim allows, else the power of two covering it. */
function regTile(d: number): number {
  return Math.min(8, nextPow2(d));
}

/**
 * How the `registers` kernel reads one operand: `count` x values per invocation (tm rows of A or tn
 * columns of B) from `start`, vec4 along x or k or none, and whether the four invocations of a quad
 * share them, each loading a quarter (x groups lane, lane + 4, …) and taking the rest from the
 * others with quadBroadcast.
 */
interface RegisterOperand {
  readonly op: GemmOperand;
  /** Prefix of its names: 'a' or 'b'. */
  readonly pre: string;
  readonly vec: 'x' | 'k' | null;
  readonly count: number;
  readonly start: string;
  /** The last x it may read (an expression: the extent less one, rounded down to a multiple of 4 for vec4 along x). */
  readonly last: string;
  readonly shared: boolean;
}

/** x values per load: four for vec4 along x. */
const groupOf = (o: RegisterOperand) => (o.vec === 'x' ? 4 : 1);

/** The x set-ups of an operand (x clamped into range: rows and columns past the end compute values that are not stored). */
function registerSetups(o: RegisterOperand): string[] {
  const gs = groupOf(o), groups = o.count / gs;
  const slots = o.shared ? groups / 4 : groups;
  return Array.from({ length: slots }, (_, j) => {
    const x = o.shared ? `${o.start} + (${4 * j}u + lane) * ${gs}u` : `${o.start} + ${j * gs}u`;
    return o.op.atX(`${o.pre}x${j}`, `${o.pre}b`, `min(${x}, ${o.last})`);
  });
}

/**
 * One operand's loads for a k step of `count` values from `k0` (a multiple of 4 with vec4 along k):
 * the statements, and `val(i, u)`, the value at its x index i and k0 + u.
 */
function registerStep(o: RegisterOperand, k0: string, count: number, t: WgslScalar, walking: boolean): { lines: string[]; val: (i: number, u: number) => string } {
  const { op, pre } = o, groups = o.count / groupOf(o), lines: string[] = [];
  // Loads per x group: one vec4 along k for the step, else one per k (a vec4 along x, or a value), named with suffix `_u`.
  const ks = o.vec === 'k' ? [{ k: `${pre}k0`, suffix: '' }] : Array.from({ length: count }, (_, u) => ({ k: `${pre}k${u}`, suffix: `_${u}` }));
  // A walking operand's k (one per step) is set up by its walk, before the loop and at the end of each step.
  if (!walking) {
    if (o.vec === 'k') lines.push(op.atK(`${pre}k0`, k0));
    else for (let u = 0; u < count; u++) lines.push(op.atK(`${pre}k${u}`, `${k0} + ${u}u`));
  }
  const load = (slot: number, k: string) => (o.vec ? op.load4!(`${pre}x${slot}`, k, t) : op.load(`${pre}x${slot}`, k, t));
  for (let g = 0; g < groups; g++) {
    for (const { k, suffix } of ks) {
      if (!o.shared) lines.push(`let ${pre}v${g}${suffix} = ${load(g, k)};`);
      else {
        // Lane L holds groups L, L + 4, …: slot j of lane g % 4 is group g.
        const j = Math.floor(g / 4);
        if (g % 4 === 0) lines.push(`let ${pre}s${j}${suffix} = ${load(j, k)};`);
        lines.push(`let ${pre}v${g}${suffix} = quadBroadcast(${pre}s${j}${suffix}, ${g % 4}u);`);
      }
    }
  }
  const val = (i: number, u: number) =>
    o.vec === 'k' ? `${pre}v${i}.${XYZW[u]}` : o.vec === 'x' ? `${pre}v${i >> 2}_${u}.${XYZW[i & 3]}` : `${pre}v${i}_${u}`;
  return { lines, val };
}

/**
 * The `registers` kernel: see the note at the top. On SwiftShader with subgroups (4 wide, its SIMD
 * width), a workgroup is one quad sharing one operand: the four invocations own neighbouring tiles
 * along the other dim, and each loads a quarter of the shared values and takes the rest with
 * quadBroadcast, a register shuffle there where a load is four gathers. That takes about 1.25× less
 * CPU time for the 512³ and 1024³ matmuls and the 3×3 conv benchmark.
 */
function registersKernel(p: GemmProblem, caps: WebGpuCaps): WgslForm {
  const { m, n, k } = p, t = p.accumulator ?? computeType(p.out.dtype);
  const tm = regTile(m), tn = regTile(n);
  // vec4 along k for A reads tm vec4 per step; along x, tm/4 per k. Either way every value is used once.
  // k advances 1 per loop step where an operand walks k (convolutions: unrolled by 4, det's conv
  // kernels compiled about twice as slowly on SwiftShader, the most of a model's first call), or 4
  // where an operand reads four k as one vec4 (a matrix product's contiguous rows: rolled, rec's
  // matmuls took about a third more CPU time; int8 operands, src/quant/gemm.ts, read four values per
  // word) or k is literal (see literalK): then the loop steps by 4 and the last k mod 4 are unrolled.
  const ks = p.literalK || [p.a, p.b].some((o) => o.vecK && !wide(o.dtype)) || (!p.a.walk && !p.b.walk && (p.a.vecK || p.b.vecK)) ? 4 : 1;
  let va: 'x' | 'k' | null = p.a.vecK && ks === 4 ? 'k' : p.a.vecX && tm % 4 === 0 ? 'x' : null;
  const vb: 'x' | 'k' | null = p.b.vecX && tn % 4 === 0 ? 'x' : p.b.vecK && ks === 4 ? 'k' : null;
  // A quad shares B when only A has vec4 loads (conv2d's im2col gathers), else A; the shared operand's
  // x groups are dealt to the four lanes, so vec4 along x (groups of 4) would need 16 values: it loads scalars.
  const shareB = vb === null && va !== null;
  const quad = caps.subgroups && caps.architecture === 'swiftshader' && (shareB ? tn % 4 === 0 && Math.ceil(m / tm) >= 4 : tm % 4 === 0 && Math.ceil(n / tn) >= 4);
  if (quad && !shareB && va === 'x') va = null;
  // Invocations per workgroup along x (columns) and y (rows): 8 columns and as many rows as make 64
  // invocations, or 1 along a dim one register tile covers (64 rows for a matrix-vector product of
  // any height). Only these shapes, so that products of different sizes share the kernel;
  // invocations past the edge return at once.
  const wx = quad ? (shareB ? 1 : 4) : n > tn ? 8 : 1;
  const wy = quad ? (shareB ? 4 : 1) : m > tm || wx === 1 ? 64 / wx : 1;
  const tilesN = Math.ceil(n / (tn * wx)), tilesM = Math.ceil(m / (tm * wy)), nb = numel(p.batch);
  const total = tilesN * tilesM * nb;
  const g = grid(p.label, total, 1, caps);
  const { direct, dest } = destination(p, tn, caps);
  const u = (v: number) => p.params.u32(v);
  const A: RegisterOperand = { op: p.a, pre: 'a', vec: va, count: tm, start: 'row0', last: u(lastX(m, va)), shared: quad && !shareB };
  const B: RegisterOperand = { op: p.b, pre: 'b', vec: vb, count: tn, start: 'col0', last: u(lastX(n, vb)), shared: quad && shareB };
  // The k loop's bound is a parameter (a literal with literalK); with steps of 4, the remainder (k mod 4, unrolled) is part of the kernel's structure.
  const kMain = k - (k % ks);
  const kBound = (v: number) => (p.literalK ? `${v}u` : u(v));

  const body: string[] = locate(p, tilesN, tilesM, total);
  const bidx = batchIndices(p);
  // In a quad no invocation may return early (quadBroadcast needs all four); stores past the edge are checked either way.
  if (quad) {
    body.push('let lane = sg % 4u;');
    body.push(shareB ? `let col0 = tileN * ${tn}u;` : `let col0 = (tileN * 4u + lane) * ${tn}u;`);
    body.push(shareB ? `let row0 = (tileM * 4u + lane) * ${tm}u;` : `let row0 = tileM * ${tm}u;`);
  } else {
    body.push(`let col0 = (tileN * ${wx}u + lid.x) * ${tn}u;`, `let row0 = (tileM * ${wy}u + lid.y) * ${tm}u;`);
    body.push(`if (col0 >= ${u(n)} || row0 >= ${u(m)}) { return; }`);
  }
  body.push(p.a.base('ab', bidx), p.b.base('bb', bidx), ...registerSetups(A), ...registerSetups(B));
  for (let r = 0; r < tm; r++) for (let c = 0; c < tn; c++) body.push(`var acc${r}_${c} = ${t}(0);`);
  // With one k per step, operands that can walk k do (then there is no remainder).
  const walks = ks === 1 ? [A, B].flatMap((o) => (o.op.walk ? [{ o, walk: o.op.walk, name: `${o.pre}k0` }] : [])) : [];
  body.push(...walks.map((w) => w.walk.start(w.name)));
  const step = (k0: string, count: number): string[] => {
    const a = registerStep(A, k0, count, t, walks.some((w) => w.o === A)), b = registerStep(B, k0, count, t, walks.some((w) => w.o === B));
    const fmas: string[] = [];
    for (let u = 0; u < count; u++) for (let r = 0; r < tm; r++) for (let c = 0; c < tn; c++) fmas.push(`acc${r}_${c} += ${a.val(r, u)} * ${b.val(c, u)};`);
    return [...a.lines, ...b.lines, ...fmas, ...walks.map((w) => w.walk.next(w.name))];
  };
  if (kMain > 0) body.push(`for (var k0 = 0u; k0 < ${kBound(kMain)}; k0 += ${ks}u) {\n    ${step('k0', ks).join('\n    ')}\n  }`);
  if (k > kMain) body.push(`{\n    ${step(kBound(kMain), k - kMain).join('\n    ')}\n  }`);
  body.push(`let obase = ${u(p.out.offset)} + bt * ${u(m * n)};`);
  body.push(...storeTile(p, { tm, tn, acc: (r, c) => `acc${r}_${c}` }, caps, dest, bidx));
  // Declared last: generating the body added the sizes to the parameter block.
  const decls = declarations(p, caps, { a: va !== null, b: vb !== null, out: dest.vec4 }, direct);

  const params = quad ? '@builtin(subgroup_invocation_id) sg: u32' : '@builtin(local_invocation_id) lid: vec3u';
  const source = `${quad ? 'enable subgroups;\n' : ''}${decls}

@compute @workgroup_size(${wx}, ${wy}) fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, ${params}) {
  ${p.params.hoist(body.join('\n  '))}
}
`;
  return finish(p, caps, { source: withPrelude(source), workgroups: total === 0 ? [0] : g.workgroups, label: p.label }, direct, decls);
}

/** The `tiled` kernel's shape: output tile bm×bn per workgroup, k tiles of bk, 4×4 per invocation. */
const TILED = { bm: 64, bn: 64, bk: 16 } as const;
const TILED_THREADS = (TILED.bm / 4) * (TILED.bn / 4);

/**
 * Statements loading one operand's tile (k from `k0`, x from `origin`) into workgroup array `arr`
 * ([k][x/4] of vec4): per invocation `li`, once per k tile; x set-ups go to `pre`, hoisted out of the k loop.
 */
function stageTile(
  p: GemmProblem, op: GemmOperand, name: string, arr: string, origin: string, extent: number, tileX: number, vec: 'x' | 'k' | null, t: WgslScalar, pre: string[],
): string[] {
  const bk = TILED.bk, row = tileX / 4, s: string[] = [];
  const checkK = p.k % bk !== 0;
  const last = p.params.u32(lastX(extent, vec)), k = checkK ? p.params.u32(p.k) : '';
  const zero = vec ? `${vec4Of(t)}(0)` : `${t}(0)`;
  const perLoad = vec ? 4 : 1;
  const loads = (tileX * bk) / perLoad / TILED_THREADS;
  const base = name === 'a' ? 'ab' : 'bb';
  for (let q = 0; q < loads; q++) {
    const e = `(li + ${q * TILED_THREADS}u)`;
    // (xx, kk): the element's place in the tile; vec4 along x counts x in fours, along k counts k in fours.
    let xx: string, kk: string;
    if (vec === 'x') [xx, kk] = [`(${e} % ${row}u) * 4u`, `${e} / ${row}u`];
    else if (vec === 'k') [xx, kk] = [`${e} / ${bk / 4}u`, `(${e} % ${bk / 4}u) * 4u`];
    else if (op.kFast) [xx, kk] = [`${e} / ${bk}u`, `${e} % ${bk}u`];
    else [xx, kk] = [`${e} % ${tileX}u`, `${e} / ${tileX}u`];
    const v = `${name}${q}`;
    pre.push(`let ${v}_xx = ${xx};`, `let ${v}_kk = ${kk};`);
    pre.push(op.atX(`${v}_x`, base, `min(${origin} + ${v}_xx, ${last})`));
    s.push(op.atK(`${v}_k`, `k0 + ${v}_kk`));
    const load = vec ? op.load4!(`${v}_x`, `${v}_k`, t) : op.load(`${v}_x`, `${v}_k`, t);
    s.push(`let ${v} = ${checkK ? `select(${zero}, ${load}, k0 + ${v}_kk < ${k})` : load};`);
    if (vec === 'x') s.push(`${arr}[${v}_kk * ${row}u + ${v}_xx / 4u] = ${v};`);
    else if (vec === 'k') for (let u = 0; u < 4; u++) s.push(`${arr}[(${v}_kk + ${u}u) * ${row}u + ${v}_xx / 4u][${v}_xx % 4u] = ${v}.${XYZW[u]};`);
    else s.push(`${arr}[${v}_kk * ${row}u + ${v}_xx / 4u][${v}_xx % 4u] = ${v};`);
  }
  return s;
}

/** The `tiled` kernel: see the note at the top. */
function tiledKernel(p: GemmProblem, caps: WebGpuCaps): WgslForm {
  const { m, n, k } = p, t = p.accumulator ?? computeType(p.out.dtype), { bm, bn, bk } = TILED;
  const tilesN = Math.ceil(n / bn), tilesM = Math.ceil(m / bm), total = tilesN * tilesM * numel(p.batch);
  const g = grid(p.label, total, 1, caps);
  const va = p.a.vecX ? 'x' : p.a.vecK ? 'k' : null, vb = p.b.vecX ? 'x' : p.b.vecK ? 'k' : null;
  const { direct, dest } = destination(p, 4, caps);
  const u = (v: number) => p.params.u32(v);
  const bidx = batchIndices(p);
  const body = locate(p, tilesN, tilesM, total);
  const pre: string[] = [];
  const loadA = stageTile(p, p.a, 'a', 'As', `tileM * ${bm}u`, m, bm, va, t, pre);
  const loadB = stageTile(p, p.b, 'b', 'Bs', `tileN * ${bn}u`, n, bn, vb, t, pre);
  const vt = vec4Of(t);
  const fmas = [0, 1, 2, 3].map((r) => `acc${r} += ${vt}(a.${XYZW[r]}) * b;`);
  body.push(
    `let li = lid.y * ${bn / 4}u + lid.x;`,
    p.a.base('ab', bidx),
    p.b.base('bb', bidx),
    ...pre,
    ...[0, 1, 2, 3].map((r) => `var acc${r} = ${vt}(0);`),
    `for (var k0 = 0u; k0 < ${u(k)}; k0 += ${bk}u) {
    ${[...loadA, ...loadB].join('\n    ')}
    workgroupBarrier();
    for (var kk = 0u; kk < ${bk}u; kk++) {
      let a = As[kk * ${bm / 4}u + lid.y];
      let b = Bs[kk * ${bn / 4}u + lid.x];
      ${fmas.join('\n      ')}
    }
    workgroupBarrier();
  }`,
    `let col0 = tileN * ${bn}u + lid.x * 4u;`,
    `let row0 = tileM * ${bm}u + lid.y * 4u;`,
    `let obase = ${u(p.out.offset)} + bt * ${u(m * n)};`,
    ...storeTile(p, { tm: 4, tn: 4, acc: (r, c) => `acc${r}.${XYZW[c]}` }, caps, dest, bidx),
  );
  // Declared last: generating the body added the sizes to the parameter block.
  const decls = declarations(p, caps, { a: va !== null, b: vb !== null, out: dest.vec4 }, direct);
  const source = `${decls}

var<workgroup> As: array<${vt}, ${(bk * bm) / 4}>;
var<workgroup> Bs: array<${vt}, ${(bk * bn) / 4}>;

@compute @workgroup_size(${bn / 4}, ${bm / 4})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  ${p.params.hoist(body.join('\n  '))}
}
`;
  return finish(p, caps, { source: withPrelude(source), workgroups: total === 0 ? [0] : g.workgroups, label: p.label }, direct, decls);
}

/**
 * The kernel for a batch of products: `tiled` on GPUs for products at least one tile wide and tall,
 * within the device's limits; `registers` on SwiftShader and for thin products (see the note at the top).
 */
export function gemmKernel(p: GemmProblem, caps: WebGpuCaps): WgslForm {
  const { bm, bn, bk } = TILED;
  const fits = caps.limits.maxComputeInvocationsPerWorkgroup >= TILED_THREADS && caps.limits.maxComputeWorkgroupSizeX >= bn / 4
    && caps.limits.maxComputeWorkgroupSizeY >= bm / 4 && caps.limits.maxComputeWorkgroupStorageSize >= (bk * (bm + bn)) * 4;
  const tiled = caps.architecture !== 'swiftshader' && fits && p.m >= bm / 2 && p.n >= bn / 2;
  return tiled ? tiledKernel(p, caps) : registersKernel(p, caps);
}

/**
 * out = a @ b (+ bias[j]) with torch.matmul's semantics for strided views: a 1-D a is one row, a
 * 1-D b one column, leading dims are batch dims broadcast to out's (validated by the op's infer).
 * When every batch multiplies the same B and A's batch dims stack onto its rows as one strided
 * matrix, the batch is folded into M: one taller product fills tiles better.
 */
export function matmulKernel(label: string, a: GpuView, b: GpuView, out: GpuView, caps: WebGpuCaps, bias?: GpuView, fused?: FusedEpilogue): WgslForm {
  const ra = a.shape.length, rb = b.shape.length;
  let m = ra === 1 ? 1 : a.shape[ra - 2]!;
  const k = a.shape[ra - 1]!, n = rb === 1 ? 1 : b.shape[rb - 1]!;
  let aRow = ra === 1 ? 0 : a.strides[ra - 2]!;
  const aCol = a.strides[ra - 1]!;
  const bRow = rb === 1 ? b.strides[0]! : b.strides[rb - 2]!, bCol = rb === 1 ? 0 : b.strides[rb - 1]!;
  let batch = out.shape.slice(0, out.shape.length - (ra > 1 ? 1 : 0) - (rb > 1 ? 1 : 0));
  const batchOf = (v: GpuView) => broadcastStrides({ shape: v.shape.slice(0, -2), strides: v.strides.slice(0, -2) }, batch);
  let aBatch = batchOf(a), bBatch = batchOf(b);
  if (bBatch.every((s) => s === 0)) {
    const folded = collapseDims([...batch, m], [[...aBatch, aRow]]);
    if (folded.shape.length <= 1) {
      m *= numel(batch);
      aRow = folded.strides[0]![0] ?? 0;
      batch = aBatch = bBatch = [];
    }
  }
  // Offsets (and a fused epilogue's constants) are parameters: products of views at any offset share a pipeline.
  const params = new KernelParams();
  const A = stridedOperand({ dtype: a.dtype, offset: a.offset, batch: aBatch, xStride: aRow, kDims: [{ size: k, stride: aCol }] }, 0, caps, params);
  const B = stridedOperand({ dtype: b.dtype, offset: b.offset, batch: bBatch, xStride: bCol, kDims: [{ size: k, stride: bRow }] }, 1, caps, params);
  let epilogue: GemmProblem['epilogue'];
  if (bias) {
    const biasOffset = params.u32(bias.offset);
    const biasStride = params.u32(bias.strides[0]!);
    const at = (j: string) => `(${biasOffset} + ${j} * ${biasStride})`;
    epilogue = (acc, _b, _i, j) => `${acc} + ${convert(bias.dtype, fused?.natural ?? out.dtype, loadElement('in2', bias.dtype, at(j), caps))}`;
  }
  const inputs = [a.dtype, b.dtype, ...(bias ? [bias.dtype] : [])];
  return gemmKernel(withEpilogue({ label, batch, m, n, k, inputs, a: A, b: B, epilogue, out, params }, fused, caps), caps);
}

/** An elementwise epilogue fused into a GEMM op: input 0 is the op's result (of dtype `natural`), inputs 1.. are `extras`. */
export interface FusedEpilogue {
  readonly expr: Expr;
  readonly natural: DType;
  readonly extras: readonly GpuView[];
}

/**
 * `p` with `fused` evaluated in registers after its own epilogue (the bias) and before the store.
 * The extras are bound after p's inputs and read at the output element's index: the output is
 * contiguous in [...batch, m, n] order, so element (b, i, j) is flat (b·m + i)·n + j, unravelled
 * over the output's shape and mapped through each extra's broadcast strides. Accumulators keep
 * their compute type: the op's infer only lets an epilogue stay float or keep an integer dtype.
 */
export function withEpilogue(p: GemmProblem, fused: FusedEpilogue | undefined, caps: WebGpuCaps): GemmProblem {
  if (!fused) return p;
  const { expr, natural, extras } = fused, out = p.out, t = computeType(out.dtype);
  const params = p.params;
  const first = p.inputs.length;
  // An extra laid out like the output (a residual) is read at e; others through the output's shape and their broadcast strides.
  const contiguous = contiguousStrides(out.shape);
  const strided = extras.map((v) => broadcastStrides(v, out.shape)).map((s) => (s.every((x, d) => x === contiguous[d] || out.shape[d] === 1) ? null : s));
  const { lines, idx } = strided.some((s) => s) ? unravel('e', out.shape, 'o') : { lines: [], idx: [] };
  const loads = extras.map((v, k) => {
    const s = strided[k];
    lines.push(`let q${k} = ${s ? offsetOf(0, s, idx) : 'e'} + ${params.u32(v.offset)};`);
    return loadElement(`in${first + k}`, v.dtype, `q${k}`, caps);
  });
  const { body, result } = wgslExprBody(expr, (k) => (k === 0 ? roundTo(natural, 'acc') : loads[k - 1]!), params);
  const functions = `fn epilogue(acc: ${t}, b: u32, i: u32, j: u32) -> ${t} {
  let e = (b * ${params.u32(p.m)} + i) * ${params.u32(p.n)} + j;
  ${lines.join('\n  ')}
  ${body}
  return ${result};
}`;
  // The batch dims' indices as one row-major index.
  const batchSizes = p.batch.map((b) => params.u32(b));
  const flat = (names: readonly string[]) => names.reduce((acc, b, d) => (d === 0 ? b : `(${acc}) * ${batchSizes[d]} + ${b}`), '0u');
  const own = p.epilogue;
  return {
    ...p,
    inputs: [...p.inputs, ...extras.map((v) => v.dtype)],
    functions,
    params,
    epilogue: (acc, batch, i, j) => `epilogue(${own ? own(acc, batch, i, j) : acc}, ${flat(batch)}, ${i}, ${j})`,
  };
}
