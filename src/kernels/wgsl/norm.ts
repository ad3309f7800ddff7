import { numel } from '../../tensor/shape.js';
import { collapseDims } from '../cpu/map.js';
import type { BlockLayout } from '../cpu/norm.js';
import { bindings, elementsPerWord, literal, loadElement, packWord, roundTo } from './dtype.js';
import { GRID_PARAMS, grid, workgroupSize } from './grid.js';
import type { GpuView, WebGpuCaps, WgslKernel } from './kernel.js';
import { withPrelude } from './prelude.js';
import { KernelParams } from './params.js';
import { offsetOf, unravel } from './strided.js';

// Normalisation kernels. Statistics are computed in f32 (the CPU uses doubles), two-pass as the CPU
// does: the mean, then the biased variance over (x − mean)². Both work on each row's offsets from
// its first element, x − x0, and never form the mean itself: a row of close values (whose spread
// 1/√(var + eps) magnifies up to 316×) then keeps its differences exact instead of measuring them
// from a mean rounded to the values' ulp, and a constant row normalises to exactly 0.

/** An input tensor of a kernel: its layout and the binding (`in0`, …) it is read from. */
export interface Operand {
  readonly view: GpuView;
  readonly buf: string;
}

/**
 * `fn name(e: u32) -> f32`: the element at row-major index `e` of `a`, read through its strides.
 * The view's offset is a kernel parameter (views anywhere in a buffer share the pipeline).
 */
function loader(name: string, a: Operand, caps: WebGpuCaps, params: KernelParams): string {
  const { shape, strides } = collapseDims(a.view.shape, [a.view.strides]);
  const { lines, idx } = unravel('e', shape);
  lines.push(`let p = ${offsetOf(0, strides[0]!, idx)} + ${params.u32(a.view.offset)};`);
  return `fn ${name}(e: u32) -> f32 {\n  ${lines.join('\n  ')}\n  return ${loadElement(a.buf, a.view.dtype, 'p', caps)};\n}`;
}

/**
 * The largest power of two ≤ the device's 1-D workgroup size, at most 256: tree reductions halve it,
 * and the kernels' workgroup arrays (≤ 3 KiB) stay far within the 16 KiB every device grants.
 */
export function powerOfTwoWorkgroup(caps: WebGpuCaps): number {
  return 2 ** Math.floor(Math.log2(workgroupSize(256, caps)));
}

const pow2 = (v: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, v)));

/**
 * How many invocations of a workgroup of `wg` share one of `items` sums of `length` values each
 * (a power of two): about `perInvocation` values each. SwiftShader (a CPU emulation) runs
 * invocations as 4-wide SIMD: every barrier switches between all of a workgroup's SIMD groups, which
 * costs more than summing alone, so there teams are only as large as keeps 256 invocations busy
 * (layerNorm 512×768: one invocation per row, 15 ms; a workgroup per row, 700 ms).
 */
export function teamSize(length: number, items: number, perInvocation: number, wg: number, caps: WebGpuCaps): number {
  const team = Math.min(wg, pow2(Math.ceil(length / perInvocation)));
  return caps.architecture === 'swiftshader' ? Math.min(team, pow2(Math.ceil(256 / items))) : team;
}

/** `(v − mean[c]) · weight[c]·rsqrt(var[c] + eps) + bias[c]` with per-channel statistics: batchNorm, and instanceNorm with running stats. */
export function channelNormKernel(
  op: string,
  inputs: readonly GpuView[],
  p: { x: Operand; mean: Operand; variance: Operand; weight?: Operand; bias?: Operand },
  eps: number,
  out: GpuView,
  caps: WebGpuCaps,
): WgslKernel {
  const n = numel(out.shape), C = out.shape[1]!, inner = numel(out.shape.slice(2));
  const per = elementsPerWord(out.dtype, caps), words = Math.ceil(n / per);
  const size = workgroupSize(256, caps), g = grid(op, words, size, caps);
  // eps and the views' offsets are kernel parameters: one pipeline serves every eps.
  const params = new KernelParams();
  const fns = [loader('x', p.x, caps, params), loader('mean', p.mean, caps, params), loader('variance', p.variance, caps, params)];
  if (p.weight) fns.push(loader('weight', p.weight, caps, params));
  if (p.bias) fns.push(loader('bias', p.bias, caps, params));
  const scale = `inverseSqrt(variance(c) + ${params.scalar(eps, 'f32', literal)})${p.weight ? ' * weight(c)' : ''}`;
  const body = `${params.declaration()}

${fns.join('\n\n')}

fn value(i: u32) -> f32 {
  let e = min(i, ${Math.max(n - 1, 0)}u);
  let c = (e / ${inner}u) % ${C}u;
  return ${roundTo(out.dtype, `(x(e) - mean(c)) * (${scale})${p.bias ? ' + bias(c)' : ''}`)};
}

@compute @workgroup_size(${size}) fn main(${GRID_PARAMS}) {
  let w = ${g.index};
  if (w >= ${words}u) { return; }
  out0[w] = ${packWord(out.dtype, Array.from({ length: per }, (_, j) => (per === 1 ? 'value(w)' : `value(w * ${per}u + ${j}u)`)), caps)};
}
`;
  return { source: `${bindings(inputs.map((v) => v.dtype), [out.dtype], caps)}\n\n${withPrelude(body)}`, workgroups: g.workgroups, label: op, params: params.words() };
}

/** Elements a thread keeps in registers between the passes over its row; longer rows are read again. */
const CACHED = 16;

/**
 * WGSL `fn rowSum(v: f32, lid: u32, lane: u32, k: u32) -> f32`: the sum of `v` over the `team`
 * invocations that share a row (`lane` is the index within it), returned to all of them; called in
 * uniform control flow, `k` (0 or 1) numbering the calls. `enable` is the directive it needs.
 * A whole-workgroup team uses subgroups when the device has them: each subgroup adds its values, its
 * first invocation stores the sum at its own index and sets that index's bit in a mask, and every
 * invocation adds the stored sums in index order. WebGPU does not say how subgroups map onto
 * invocation indices, so none is assumed, and the order (hence the result) is still fixed.
 * Otherwise a tree in workgroup memory: log2(team) halving steps.
 */
export function rowSum(team: number, wg: number, caps: WebGpuCaps): { code: string; enable: string } {
  if (team === 1) return { code: 'fn rowSum(v: f32, lid: u32, lane: u32, k: u32) -> f32 { return v; }', enable: '' };
  if (caps.subgroups && team === wg) {
    const words = Math.ceil(wg / 32);
    const code = `var<workgroup> sg_sums: array<f32, ${2 * wg}>;
var<workgroup> sg_leaders: array<atomic<u32>, ${2 * words}>;

fn rowSum(v: f32, lid: u32, lane: u32, k: u32) -> f32 {
  let s = subgroupAdd(v);
  if (subgroupElect()) {
    sg_sums[k * ${wg}u + lid] = s;
    atomicOr(&sg_leaders[k * ${words}u + lid / 32u], 1u << (lid % 32u));
  }
  workgroupBarrier();
  var total = 0.0;
  for (var w = 0u; w < ${words}u; w++) {
    var bits = atomicLoad(&sg_leaders[k * ${words}u + w]);
    while (bits != 0u) {
      total += sg_sums[k * ${wg}u + w * 32u + firstTrailingBit(bits)];
      bits &= bits - 1u;
    }
  }
  return total;
}`;
    return { code, enable: 'enable subgroups;\n' };
  }
  const steps: string[] = [];
  for (let s = team / 2; s >= 1; s /= 2) steps.push(`if (lane < ${s}u) { red[lid] += red[lid + ${s}u]; }\n  workgroupBarrier();`);
  const code = `var<workgroup> red: array<f32, ${wg}>;

fn rowSum(v: f32, lid: u32, lane: u32, k: u32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  ${steps.join('\n  ')}
  let total = red[lid - lane];
  workgroupBarrier();
  return total;
}`;
  return { code, enable: '' };
}

/**
 * Normalises blocks of `layout.blockSize` consecutive (row-major) elements by their own mean and
 * biased variance, then applies weight and bias at the channel `layout` gives each element:
 * layerNorm, groupNorm, instanceNorm. One kernel: a team of invocations per block reduces the mean
 * and then the variance (see `rowSum`) and writes the block. The team is the whole workgroup for
 * long blocks; short blocks get smaller teams, several blocks to a workgroup, down to one
 * invocation per block of ≤ 4 elements. A packed float16 output word can straddle two blocks of odd
 * size, so then a workgroup holds at least two blocks (an even count starts every workgroup on a word
 * boundary) and its invocations write its words from the statistics in workgroup memory.
 */
export function blockNormKernel(
  op: string,
  inputs: readonly GpuView[],
  p: { x: Operand; weight?: Operand; bias?: Operand },
  layout: BlockLayout,
  eps: number,
  out: GpuView,
  caps: WebGpuCaps,
): WgslKernel {
  const n = numel(out.shape), L = layout.blockSize, blocks = L === 0 ? 0 : n / L;
  const wg = powerOfTwoWorkgroup(caps), per = elementsPerWord(out.dtype, caps);
  let team = teamSize(L, blocks, 4, wg, caps);
  if (per > 1 && L % 2 === 1) team = Math.min(team, wg / 2);
  const rows = wg / team, wgCount = Math.ceil(blocks / rows), k = Math.max(1, Math.ceil(L / team));
  const cached = k <= CACHED;
  const sum = rowSum(team, wg, caps);
  const g = grid(op, wgCount * wg, wg, caps);

  // eps and the views' offsets are kernel parameters: one pipeline serves every eps.
  const params = new KernelParams();
  const fns = [loader('x', p.x, caps, params)];
  if (p.weight) fns.push(loader('weight', p.weight, caps, params));
  if (p.bias) fns.push(loader('bias', p.bias, caps, params));
  const { groups: G, groupChannels, inner } = layout;
  const j = inner === 1 ? 'j' : `j / ${inner}u`;
  const c = G === 1 ? j : `(blk % ${G}u) * ${groupChannels}u + ${j}`;
  // v is x − x0 and mean the mean of those offsets.
  const affine = `fn affine(v: f32, blk: u32, j: u32, mean: f32, rstd: f32) -> f32 {
  let c = ${c};
  return ${roundTo(out.dtype, `(v - mean) * rstd${p.weight ? ' * weight(c)' : ''}${p.bias ? ' + bias(c)' : ''}`)};
}`;
  const elem = (i: string) => (cached ? `xs[${i}]` : `(x(base + lane + ${i} * ${team}u) - x0)`);
  const each = (stmt: string) => `for (var i = 0u; i < count; i++) {\n    ${stmt}\n  }`;
  let write: string, stats = '';
  if (per === 1) {
    write = each(`out0[base + lane + i * ${team}u] = ${packWord(out.dtype, [`affine(${elem('i')}, blk, lane + i * ${team}u, mean, rstd)`], caps)};`);
  } else {
    // Words by all invocations of the workgroup, each element with its own block's statistics.
    stats = `var<workgroup> stats: array<vec3f, ${rows}>;

fn packed(i: u32, first: u32) -> f32 {
  let e = min(i, ${Math.max(n - 1, 0)}u);
  let blk = e / ${L}u;
  let s = stats[blk - first];
  return affine(x(e) - s.x, blk, e - blk * ${L}u, s.y, s.z);
}`;
    const values = Array.from({ length: per }, (_, q) => `packed(w * ${per}u + ${q}u, first)`);
    write = `if (lane == 0u) { stats[lid / ${team}u] = vec3f(x0, mean, rstd); }
  workgroupBarrier();
  let first = g * ${rows}u;
  let end = (min((first + ${rows}u) * ${L}u, ${n}u) + ${per - 1}u) / ${per}u;
  for (var w = first * ${L}u / ${per}u + lid; w < end; w += ${wg}u) {
    out0[w] = ${packWord(out.dtype, values, caps)};
  }`;
  }
  const eps32 = params.scalar(eps, 'f32', literal);
  const body = `${params.declaration()}

${fns.join('\n\n')}

${sum.code}

${affine}
${stats}

@compute @workgroup_size(${wg}) fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= ${wgCount}u) { return; }
  let lane = lid % ${team}u;
  let blk = g * ${rows}u + lid / ${team}u;
  let valid = blk < ${blocks}u;
  let base = blk * ${L}u;
  // This invocation's elements of the row (none in a workgroup's unused rows, which exit the loops at once).
  let count = select(0u, (${L + team - 1}u - lane) / ${team}u, valid);
  var x0 = 0.0;
  if (valid) { x0 = x(base); }
  ${cached ? `var xs: array<f32, ${k}>;` : ''}
  var s = 0.0;
  ${each(cached ? `xs[i] = x(base + lane + i * ${team}u) - x0; s += xs[i];` : `s += ${elem('i')};`)}
  let mean = rowSum(s, lid, lane, 0u) / ${L}.0;
  var q = 0.0;
  ${each(`let d = ${elem('i')} - mean; q += d * d;`)}
  let rstd = inverseSqrt(rowSum(q, lid, lane, 1u) / ${L}.0 + ${eps32});
  ${write}
}
`;
  const decls = `${sum.enable}${bindings(inputs.map((v) => v.dtype), [out.dtype], caps)}`;
  return { source: `${decls}\n\n${withPrelude(body)}`, workgroups: g.workgroups, label: op, params: params.words() };
}
