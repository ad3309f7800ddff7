import { numel } from '../../tensor/shape.js';
import { collapseDims } from '../cpu/map.js';
import type { Window2d } from '../cpu/pool.js';
import { bindings, elementsPerWord, literal, loadElement, packWord, roundTo } from './dtype.js';
import { GRID_PARAMS, grid, workgroupSize } from './grid.js';
import type { GpuView, WebGpuCaps, WgslKernel } from './kernel.js';
import { powerOfTwoWorkgroup, rowSum, teamSize } from './norm.js';
import { KernelParams } from './params.js';
import { withPrelude } from './prelude.js';
import { offsetOf, unravel } from './strided.js';

// 2-d pooling over the last two dims of a strided [..., H, W] input, read in place through its
// strides (leading dims merged where they are contiguous). Each output word (one output, or two
// packed float16 ones) is computed by one invocation looping over its windows; neighbouring
// invocations take neighbouring output columns, so their reads are neighbours too. Means over
// large windows (global average pooling) are instead summed by a team of invocations per word.
// The input's offset and avgPool's divisorOverride are kernel parameters (one pipeline serves views
// anywhere in a buffer and every divisor); shapes, windows and strides stay in the source.

/**
 * The parts every pooling kernel shares: `at(base, ih, iw)` reads the input; `locate` (statements)
 * finds output `i`'s plane offset `base` (u32) and position `oh`, `ow` (i32), `i` past the end
 * reading as the last output (the unused half of a packed last word). x's offset goes into `params`.
 */
function planes(x: GpuView, out: GpuView, caps: WebGpuCaps, params: KernelParams): { at: string; locate: string } {
  const r = x.shape.length;
  const lead = collapseDims(x.shape.slice(0, r - 2), [x.strides.slice(0, r - 2)]);
  const [sH, sW] = x.strides.slice(r - 2) as [number, number];
  const n = numel(out.shape);
  const { lines, idx } = unravel('e', [...lead.shape, ...out.shape.slice(r - 2)]);
  const q = lead.shape.length;
  const at = `const H = ${x.shape[r - 2]}; const W = ${x.shape[r - 1]};

fn at(base: u32, ih: i32, iw: i32) -> f32 {
  let p = base + u32(ih) * ${sH}u + u32(iw) * ${sW}u;
  return ${loadElement('in0', x.dtype, 'p', caps)};
}`;
  const locate = `let e = min(i, ${Math.max(n - 1, 0)}u);
  ${lines.join('\n  ')}
  let base = ${offsetOf(0, lead.strides[0]!, idx.slice(0, q))} + ${params.u32(x.offset)};
  let oh = i32(${idx[q]});
  let ow = i32(${idx[q + 1]});`;
  return { at, locate };
}

/** Output elements per 32-bit word, and the words of the output. */
function outputWords(out: GpuView, caps: WebGpuCaps): { per: number; words: number } {
  const per = elementsPerWord(out.dtype, caps);
  return { per, words: Math.ceil(numel(out.shape) / per) };
}

/**
 * The kernel of the module: `enable` (a directive, or ''), the bindings, the parameter block, then
 * `body` with the prelude helpers it calls.
 */
function poolKernel(op: string, x: GpuView, out: GpuView, caps: WebGpuCaps, body: string, workgroups: WgslKernel['workgroups'], params: KernelParams, enable = ''): WgslKernel {
  const source = `${enable}${bindings([x.dtype], [out.dtype], caps)}\n\n${withPrelude(`${params.declaration()}\n\n${body}`)}`;
  const block = params.words();
  return { source, workgroups, label: op, ...(block ? { params: block } : {}) };
}

/** An invocation per output word, whose values `fns` compute as `fn value(i: u32) -> f32` (rounded to the output's dtype). */
function wordKernel(op: string, x: GpuView, out: GpuView, caps: WebGpuCaps, fns: string, params: KernelParams): WgslKernel {
  const { per, words } = outputWords(out, caps);
  const size = workgroupSize(256, caps), g = grid(op, words, size, caps);
  const values = Array.from({ length: per }, (_, j) => (per === 1 ? 'value(w)' : `value(w * ${per}u + ${j}u)`));
  const body = `${fns}

@compute @workgroup_size(${size}) fn main(${GRID_PARAMS}) {
  let w = ${g.index};
  if (w >= ${words}u) { return; }
  out0[w] = ${packWord(out.dtype, values, caps)};
}
`;
  return poolKernel(op, x, out, caps, body, g.workgroups, params);
}

/**
 * Max over each dilated window. Taps in the padding are skipped (-inf padding): the loops run over
 * the taps inside the input only (r0..r1, c0..c1), with no test per tap. NaN wins, tracked apart so
 * no folding of the comparison into max() can drop it.
 */
export function maxPool2dKernel(x: GpuView, w: Window2d & { readonly dilation: readonly [number, number] }, out: GpuView, caps: WebGpuCaps): WgslKernel {
  const [kh, kw] = w.kernelSize, [sh, sw] = w.stride, [ph, pw] = w.padding, [dh, dw] = w.dilation;
  const params = new KernelParams();
  const { at, locate } = planes(x, out, caps, params);
  return wordKernel('maxPool2d', x, out, caps, `${at}

fn value(i: u32) -> f32 {
  ${locate}
  let h0 = oh * ${sh} - ${ph};
  let w0 = ow * ${sw} - ${pw};
  let r0 = max(0, (${dh - 1} - h0) / ${dh});
  let r1 = min(${kh}, (H - h0 + ${dh - 1}) / ${dh});
  let c0 = max(0, (${dw - 1} - w0) / ${dw});
  let c1 = min(${kw}, (W - w0 + ${dw - 1}) / ${dw});
  var m = ${literal(-Infinity, 'f32')};
  var nan = false;
  for (var i = r0; i < r1; i++) {
    for (var j = c0; j < c1; j++) {
      let v = at(base, h0 + i * ${dh}, w0 + j * ${dw});
      nan = nan || sn_isnan(v);
      m = select(m, v, v > m);
    }
  }
  return ${roundTo(out.dtype, 'select(m, sn_nan(), nan)')};
}`, params);
}

/**
 * Means over windows: `bounds` (WGSL statements after `locate`) sets the window's rows `hs..he` and
 * columns `ws..we` in the input (i32) and its divisor `div` (f32), reading per-call values from
 * `params`; `area` is the largest window.
 * Windows of up to 16 values are summed by one invocation per output word; larger ones by a team
 * of invocations per word (see `teamSize`), each walking every team-th value of the window.
 */
function windowMean(op: string, x: GpuView, out: GpuView, caps: WebGpuCaps, bounds: string, area: number, params: KernelParams): WgslKernel {
  const { per, words } = outputWords(out, caps);
  const { at, locate } = planes(x, out, caps, params);
  const wg = powerOfTwoWorkgroup(caps);
  const team = teamSize(area, words, 16, wg, caps);
  const window = `struct Window { base: u32, hs: i32, he: i32, ws: i32, we: i32, div: f32 }

fn window(i: u32) -> Window {
  ${locate}
  ${bounds}
  return Window(base, hs, he, ws, we, div);
}`;
  if (team === 1) {
    return wordKernel(op, x, out, caps, `${at}

${window}

fn value(i: u32) -> f32 {
  let b = window(i);
  var s = 0.0;
  for (var ih = b.hs; ih < b.he; ih++) {
    for (var iw = b.ws; iw < b.we; iw++) { s += at(b.base, ih, iw); }
  }
  return ${roundTo(out.dtype, 's / b.div')};
}`, params);
  }
  const rows = wg / team, wgCount = Math.ceil(words / rows);
  const g = grid(op, wgCount * wg, wg, caps);
  const sum = rowSum(team, wg, caps);
  const means = Array.from({ length: per }, (_, q) => `let b${q} = window(w * ${per}u + ${q}u);
  let bw${q} = b${q}.we - b${q}.ws;
  let taps${q} = select(0, (b${q}.he - b${q}.hs) * bw${q}, valid);
  var s${q} = 0.0;
  for (var t = i32(lane); t < taps${q}; t += ${team}) { s${q} += at(b${q}.base, b${q}.hs + t / bw${q}, b${q}.ws + t % bw${q}); }
  let v${q} = ${roundTo(out.dtype, `rowSum(s${q}, lid, lane, ${q}u) / b${q}.div`)};`);
  const body = `${at}

${window}

${sum.code}

@compute @workgroup_size(${wg}) fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= ${wgCount}u) { return; }
  let lane = lid % ${team}u;
  let w = g * ${rows}u + lid / ${team}u;
  let valid = w < ${words}u;
  ${means.join('\n  ')}
  if (valid && lane == 0u) { out0[w] = ${packWord(out.dtype, Array.from({ length: per }, (_, q) => `v${q}`), caps)}; }
}
`;
  return poolKernel(op, x, out, caps, body, g.workgroups, params, sum.enable);
}

/**
 * Mean over each window with PyTorch's divisor: the window clipped to the padded input when
 * countIncludePad, its in-input part otherwise, or divisorOverride (as the CPU kernel).
 */
export function avgPool2dKernel(
  x: GpuView,
  w: Window2d & { readonly countIncludePad: boolean; readonly divisorOverride: number | null },
  out: GpuView,
  caps: WebGpuCaps,
): WgslKernel {
  const [kh, kw] = w.kernelSize, [sh, sw] = w.stride, [ph, pw] = w.padding;
  const params = new KernelParams();
  const div = w.divisorOverride !== null ? params.scalar(w.divisorOverride, 'f32', literal) : w.countIncludePad ? 'f32((h1 - h0) * (w1 - w0))' : 'f32((he - hs) * (we - ws))';
  const bounds = `let h0 = oh * ${sh} - ${ph};
  let w0 = ow * ${sw} - ${pw};
  let h1 = min(h0 + ${kh}, H + ${ph});
  let w1 = min(w0 + ${kw}, W + ${pw});
  let hs = max(h0, 0);
  let ws = max(w0, 0);
  let he = min(h1, H);
  let we = min(w1, W);
  let div = ${div};`;
  return windowMean('avgPool2d', x, out, caps, bounds, kh * kw, params);
}

/** Mean over PyTorch's adaptive bins: rows floor(i·H/OH) to ceil((i+1)·H/OH), and likewise for columns. */
export function adaptiveAvgPool2dKernel(x: GpuView, out: GpuView, caps: WebGpuCaps): WgslKernel {
  const r = out.shape.length;
  // An empty output dispatches nothing; max(…, 1) keeps its source valid all the same.
  const [OH, OW] = out.shape.slice(r - 2).map((d) => Math.max(d, 1)) as [number, number];
  const [H, W] = x.shape.slice(r - 2) as [number, number];
  const bounds = `let hs = (oh * H) / ${OH};
  let he = ((oh + 1) * H + ${OH - 1}) / ${OH};
  let ws = (ow * W) / ${OW};
  let we = ((ow + 1) * W + ${OW - 1}) / ${OW};
  let div = f32((he - hs) * (we - ws));`;
  // A bin spans at most ⌈H/OH⌉ + 1 rows (and likewise columns).
  const area = Math.min(H, Math.ceil(H / OH) + 1) * Math.min(W, Math.ceil(W / OW) + 1);
  return windowMean('adaptiveAvgPool2d', x, out, caps, bounds, area, new KernelParams());
}
