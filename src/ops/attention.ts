import { SinterError, check, fmtShape } from '../errors.js';
import { isFloat } from '../tensor/dtype.js';
import { broadcastShapes, numel } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { ones } from '../tensor/creation.js';
import { tidy } from '../tensor/scope.js';
import { bindings, literal, loadElement } from '../kernels/wgsl/dtype.js';
import { workgroupSize } from '../kernels/wgsl/grid.js';
import type { GpuView, WebGpuCaps, WgslKernel } from '../kernels/wgsl/kernel.js';
import { KernelParams } from '../kernels/wgsl/params.js';
import { withPrelude } from '../kernels/wgsl/prelude.js';
import { add, mul } from './binary.js';
import { dropout } from './functional.js';
import { matmul } from './linalg.js';
import { maskedFill } from './masking.js';
import { type CpuView, apply1, checkInputs, defineOp, describeMeta } from './op.js';
import { logicalNot } from './unary.js';
import { softmax } from './reduce.js';
import { tril } from './masking.js';
import { expand, to, transpose } from './views.js';

// Scaled dot-product attention, softmax(q·kᵀ·scale + mask)·v, with PyTorch's semantics: a bool mask
// says which keys take part (true = attend), a float mask is added to the scores, isCausal keeps
// key j ≤ query i (top-left aligned), and batch dims broadcast. One op, one kernel per backend:
// on WebGPU a flash-style kernel (K/V tiles in workgroup memory, an online softmax per query, the
// L×S scores never stored); on the CPU the same loop in double. A row with no key left gives NaN,
// as softmax over nothing does in PyTorch.

export interface SdpaAttrs {
  readonly scale: number;
  readonly causal: boolean;
  /** How input 3 (when present) is read: 'bool' masks out keys, 'additive' adds to the scores. */
  readonly mask: 'none' | 'bool' | 'additive';
}

/** Offsets of batch element b in a view whose leading dims are the (shared) batch dims. */
function batchOffset(v: { shape: readonly number[]; strides: readonly number[]; offset: number }, batch: readonly number[], b: number): number {
  let at = v.offset, rest = b;
  for (let d = batch.length - 1; d >= 0; d--) {
    at += (rest % batch[d]!) * v.strides[d]!;
    rest = Math.floor(rest / batch[d]!);
  }
  return at;
}

function sdpaCpu(inputs: readonly CpuView[], { scale, causal, mask }: SdpaAttrs, out: CpuView): void {
  const [q, k, v, m] = inputs as [CpuView, CpuView, CpuView, CpuView | undefined];
  const r = q.shape.length, batch = q.shape.slice(0, r - 2);
  const L = q.shape[r - 2]!, E = q.shape[r - 1]!, S = k.shape[r - 2]!, Ev = v.shape[r - 1]!;
  const [qs, ks, vs] = [q.strides, k.strides, v.strides];
  const scores = new Float64Array(S), acc = new Float64Array(Ev);
  for (let b = 0; b < numel(batch); b++) {
    const qb = batchOffset(q, batch, b), kb = batchOffset(k, batch, b), vb = batchOffset(v, batch, b), mb = m ? batchOffset(m, batch, b) : 0;
    for (let i = 0; i < L; i++) {
      let max = -Infinity;
      for (let j = 0; j < S; j++) {
        let s = -Infinity;
        const masked = (causal && j > i) || (m && mask === 'bool' && m.data[mb + i * m.strides[r - 2]! + j * m.strides[r - 1]!] === 0);
        if (!masked) {
          s = 0;
          for (let e = 0; e < E; e++) s += q.data[qb + i * qs[r - 2]! + e * qs[r - 1]!]! * k.data[kb + j * ks[r - 2]! + e * ks[r - 1]!]!;
          s *= scale;
          if (m && mask === 'additive') s += m.data[mb + i * m.strides[r - 2]! + j * m.strides[r - 1]!]!;
        }
        scores[j] = s;
        if (s > max || Number.isNaN(s)) max = Number.isNaN(max) ? max : s;
      }
      let total = 0;
      acc.fill(0);
      for (let j = 0; j < S; j++) {
        const p = Math.exp(scores[j]! - max);
        total += p;
        if (p === 0) continue;
        for (let e = 0; e < Ev; e++) acc[e] += p * v.data[vb + j * vs[r - 2]! + e * vs[r - 1]!]!;
      }
      const o = (b * L + i) * Ev;
      // No key left (max −∞) gives 0/0 = NaN, as PyTorch's softmax does.
      for (let e = 0; e < Ev; e++) out.data[o + e] = max === -Infinity ? NaN : acc[e]! / total;
    }
  }
}

/**
 * The flash-style kernel: workgroup (x, y) runs `wg` queries of batch element y. Each pass loads a
 * tile of K and V rows into workgroup memory (all invocations help), then every invocation folds
 * the tile into its query's running max m, normaliser l and output row acc (online softmax:
 * rescaled by exp(m_old − m_new) whenever the max grows).
 */
function sdpaWgsl(inputs: readonly GpuView[], { scale, causal, mask }: SdpaAttrs, out: GpuView, caps: WebGpuCaps): WgslKernel {
  const [q, k, v, m] = inputs as [GpuView, GpuView, GpuView, GpuView | undefined];
  const r = q.shape.length, batch = q.shape.slice(0, r - 2);
  const L = q.shape[r - 2]!, E = q.shape[r - 1]!, S = k.shape[r - 2]!, Ev = v.shape[r - 1]!;
  const wg = workgroupSize(64, caps);
  // As many K/V rows per tile as fit in about half the workgroup memory (at least one).
  const tile = Math.max(1, Math.min(32, S, Math.floor(caps.limits.maxComputeWorkgroupStorageSize / 2 / 4 / (E + Ev))));
  const batches = numel(batch);
  // The scale and the views' offsets are kernel parameters: one pipeline serves every scale.
  const params = new KernelParams();
  const base = (view: GpuView, name: string) => {
    const lines = [`var ${name} = ${params.u32(view.offset)};`, 'rest = b;'];
    for (let d = batch.length - 1; d >= 0; d--) lines.push(`${name} += (rest % ${batch[d]}u) * ${view.strides[d]}u; rest = rest / ${batch[d]}u;`);
    return lines.join(' ');
  };
  const st = (view: GpuView, d: number) => `${view.strides[r + d]}u`;
  const load = (buf: string, view: GpuView, at: string) => loadElement(buf, view.dtype, at, caps);
  const maskTerm = m
    ? `let mo = mb + i * ${st(m, -2)} + j * ${st(m, -1)};
        ${mask === 'bool' ? `if (${load('in3', m, 'mo')} == 0) { continue; }` : `s = s + f32(${load('in3', m, 'mo')});`}`
    : '';
  const main = `var<workgroup> kt: array<f32, ${tile * E}>;
var<workgroup> vt: array<f32, ${tile * Ev}>;

@compute @workgroup_size(${wg}) fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.y;
  let i = wid.x * ${wg}u + lid;
  let live = i < ${L}u;
  var rest = b;
  ${base(k, 'kb')}
  ${base(v, 'vb')}
  ${base(q, 'qb')}
  ${m ? base(m, 'mb') : ''}
  var qv: array<f32, ${E}>;
  if (live) {
    for (var e = 0u; e < ${E}u; e++) { let o = qb + i * ${st(q, -2)} + e * ${st(q, -1)}; qv[e] = f32(${load('in0', q, 'o')}) * ${params.scalar(scale, 'f32', literal)}; }
  }
  var mx = -sn_inf();
  var l = 0.0;
  var acc: array<f32, ${Ev}>;
  for (var t0 = 0u; t0 < ${S}u; t0 += ${tile}u) {
    let n = min(${tile}u, ${S}u - t0);
    for (var x = lid; x < n * ${E}u; x += ${wg}u) {
      let o = kb + (t0 + x / ${E}u) * ${st(k, -2)} + (x % ${E}u) * ${st(k, -1)};
      kt[x] = f32(${load('in1', k, 'o')});
    }
    for (var x = lid; x < n * ${Ev}u; x += ${wg}u) {
      let o = vb + (t0 + x / ${Ev}u) * ${st(v, -2)} + (x % ${Ev}u) * ${st(v, -1)};
      vt[x] = f32(${load('in2', v, 'o')});
    }
    workgroupBarrier();
    if (live) {
      for (var jj = 0u; jj < n; jj++) {
        let j = t0 + jj;
        ${causal ? 'if (j > i) { break; }' : ''}
        var s = 0.0;
        for (var e = 0u; e < ${E}u; e++) { s += qv[e] * kt[jj * ${E}u + e]; }
        ${maskTerm}
        if (s == -sn_inf()) { continue; }
        let mnew = max(mx, s);
        let corr = exp(mx - mnew);
        let p = exp(s - mnew);
        l = l * corr + p;
        for (var e = 0u; e < ${Ev}u; e++) { acc[e] = acc[e] * corr + p * vt[jj * ${Ev}u + e]; }
        mx = mnew;
      }
    }
    workgroupBarrier();
  }
  if (live) {
    let o = (b * ${L}u + i) * ${Ev}u;
    for (var e = 0u; e < ${Ev}u; e++) { out0[o + e] = select(acc[e] / l, sn_nan(), l == 0.0); }
  }
}
`;
  const source = `${bindings(inputs.map((t) => t.dtype), ['float32'], caps)}\n\n${withPrelude(`${params.declaration()}\n\n${main}`)}`;
  return { source, workgroups: [Math.ceil(L / wg), batches], params: params.words() };
}

export const sdpaOp = defineOp<SdpaAttrs>({
  name: 'scaledDotProductAttention',
  infer(inputs, { mask }) {
    const [q, k, v, m] = inputs;
    const op = 'scaledDotProductAttention';
    for (const t of [q!, k!, v!]) check(t.dtype === 'float32', op, () => `the attention kernel takes float32 tensors, got ${describeMeta(t)}`);
    const r = q!.shape.length;
    check(k!.shape.length === r && v!.shape.length === r && r >= 2, op, () => `q, k and v must have the same rank (≥ 2), got ${describeMeta(q!)}, ${describeMeta(k!)}, ${describeMeta(v!)}`);
    check(k!.shape[r - 1] === q!.shape[r - 1] && v!.shape[r - 2] === k!.shape[r - 2], op, () => `expects q [..., L, E], k [..., S, E], v [..., S, Ev], got ${describeMeta(q!)}, ${describeMeta(k!)}, ${describeMeta(v!)}`);
    if (mask !== 'none') check(m !== undefined && m.shape.length === r, op, 'the mask must be expanded to [..., L, S] before the op');
    return [{ shape: [...q!.shape.slice(0, -1), v!.shape[r - 1]!], dtype: 'float32' }];
  },
  cpu(inputs, attrs, [out]) {
    sdpaCpu(inputs, attrs, out!);
  },
  webgpu(inputs, attrs, [out], caps) {
    return sdpaWgsl(inputs, attrs, out!, caps);
  },
});

export interface SdpaOptions {
  /** A bool mask (true = take part in attention) or a float mask added to the scores; broadcasts to [..., L, S]. */
  attnMask?: Tensor | null;
  /** Dropout probability on the attention weights (default 0; > 0 runs the unfused path with random dropout). */
  dropoutP?: number;
  /** Query i attends to keys j ≤ i only; cannot be combined with attnMask. */
  isCausal?: boolean;
  /** Multiplies q·kᵀ (default 1/√E). */
  scale?: number | null;
}

/**
 * softmax(q·kᵀ·scale + mask)·v as torch.nn.functional.scaled_dot_product_attention: q [..., L, E],
 * k [..., S, E], v [..., S, Ev] → [..., L, Ev], batch dims broadcast. float16 computes in float32.
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, opts: SdpaOptions = {}): Tensor {
  const op = 'scaledDotProductAttention';
  const mask = opts.attnMask ?? null;
  checkInputs(op, mask ? [q, k, v, mask] : [q, k, v]);
  for (const t of [q, k, v]) check(isFloat(t.dtype), op, () => `expects float tensors, got ${t.describe()}`);
  check(q.ndim >= 2 && k.ndim >= 2 && v.ndim >= 2, op, () => `expects q [..., L, E], k [..., S, E], v [..., S, Ev], got ${q.describe()}, ${k.describe()}, ${v.describe()}`);
  const [L, E] = q.shape.slice(-2) as [number, number], [S, Ek] = k.shape.slice(-2) as [number, number], Sv = v.shape[v.ndim - 2]!;
  check(Ek === E && Sv === S, op, () => `expects q [..., L, E], k [..., S, E], v [..., S, Ev]: got q ${fmtShape(q.shape)}, k ${fmtShape(k.shape)}, v ${fmtShape(v.shape)}`);
  const causal = opts.isCausal ?? false;
  check(!(causal && mask), op, 'give attnMask or isCausal, not both (as in PyTorch)');
  const scale = opts.scale ?? 1 / Math.sqrt(E);
  check(typeof scale === 'number' && Number.isFinite(scale), op, () => `scale must be a finite number, got ${JSON.stringify(scale)}`);
  const p = opts.dropoutP ?? 0;
  check(typeof p === 'number' && p >= 0 && p <= 1, op, () => `dropoutP must be in [0, 1], got ${JSON.stringify(p)}`);
  if (mask) check(mask.dtype === 'bool' || isFloat(mask.dtype), op, () => `attnMask must be bool or float, got ${mask.describe()}`);
  const batch = broadcastShapes(op, q.shape.slice(0, -2), k.shape.slice(0, -2), v.shape.slice(0, -2), ...(mask && mask.ndim > 2 ? [mask.shape.slice(0, -2)] : []));
  if (mask) broadcastShapes(op, mask.shape.slice(-2), [L, S]);
  return tidy(() => {
    const f32 = (t: Tensor) => (t.dtype === 'float32' ? t : to(t, 'float32'));
    const [qf, kf, vf] = [f32(q), f32(k), f32(v)];
    const out = p > 0 ? unfused(qf, kf, vf, mask, causal, scale, p) : fused(qf, kf, vf, mask, causal, scale, batch);
    return q.dtype === 'float32' ? out : to(out, q.dtype);
  });
}

function fused(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | null, causal: boolean, scale: number, batch: number[]): Tensor {
  const [L] = q.shape.slice(-2) as [number], S = k.shape[k.ndim - 2]!;
  const full = (t: Tensor) => expand(t, [...batch, ...t.shape.slice(-2)]);
  const inputs = [full(q), full(k), full(v)];
  if (mask) inputs.push(expand(mask.dtype === 'bool' || mask.dtype === 'float32' ? mask : to(mask, 'float32'), [...batch, L, S]));
  return apply1(sdpaOp, inputs, { scale, causal, mask: mask ? (mask.dtype === 'bool' ? 'bool' : 'additive') : 'none' });
}

/** The composed form (scores stored), for attention-weight dropout. */
function unfused(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | null, causal: boolean, scale: number, p: number): Tensor {
  let scores = mul(matmul(q, transpose(k, -2, -1)), scale);
  const [L] = q.shape.slice(-2) as [number], S = k.shape[k.ndim - 2]!;
  const keep = causal ? tril(ones([L, S], { dtype: 'bool', device: q.device })) : mask?.dtype === 'bool' ? mask : null;
  if (keep) scores = maskedFill(scores, logicalNot(keep), -Infinity);
  else if (mask) scores = add(scores, mask);
  return matmul(dropout(softmax(scores, -1), { p }), v);
}
