import { SinterError } from '../errors.js';
import { type CpuView, type TensorMeta, apply1, defineOp, describeMeta } from '../ops/op.js';
import { bindings, loadElement, packWord, elementsPerWord } from '../kernels/wgsl/dtype.js';
import { GRID_PARAMS, grid } from '../kernels/wgsl/grid.js';
import type { GpuView, WebGpuCaps, WgslKernel, WgslProgram } from '../kernels/wgsl/kernel.js';
import { withPrelude } from '../kernels/wgsl/prelude.js';
import type { Tensor } from '../tensor/tensor.js';

// The integer GEMM every int8 layer runs on: out[m, n] from acc = Σ_k (A[m, k] − zpA)·(B[n, k] − zpB[n]),
// accumulated exactly in int32 (wrapping as int32 does, like the GPU), then returned as int32
// (MatMulInteger/ConvInteger), as float32 f32(acc)·multiplier[n] + offset[n] (dynamic quantisation), or
// requantised in the epilogue:
//   q = clamp(roundHalfEven(f32(acc)·multiplier[n] + offset[n]) + zpOut, lo, hi)
// with multiplier = sA·sB[n]/sOut and offset = bias[n]/sOut as float32 (PyTorch's float bias), and a
// fused ReLU as lo = max(qmin, zpOut). A is a matrix (strided view) or, for conv2d, an implicit im2col
// of an NCHW input (padding reads zpA, so it contributes 0), with groups: output channel n reads the
// input channels of its group. Per-call values (zero points, multipliers) are input tensors.
//
// Inputs: A (int8/uint8), B [N, K] (int8/uint8), zpA int32 [1], zpB int32 [N],
//         then for float32 outputs multiplier f32 [N], offset f32 [N], and for requantised ones also zpOut int32 [1].

export interface ConvGeometry {
  batch: number;
  channels: number;
  height: number;
  width: number;
  kernel: [number, number];
  stride: [number, number];
  /** [top, left]; bottom/right follow from the output size. */
  padding: [number, number];
  dilation: [number, number];
  groups: number;
  outHeight: number;
  outWidth: number;
}

export interface QGemmAttrs {
  m: number;
  n: number;
  /** Reduction length (per group for conv). */
  k: number;
  /** null: A is the [M, K] matrix input 0 (any strides); else input 0 is an NCHW tensor read as im2col. */
  conv: ConvGeometry | null;
  /** What comes out: the int32 accumulators, float32 values, or requantised int8/uint8 in [lo, hi]. (Not named `epilogue`: that attr is the JIT's fused Expr.) */
  output: 'int32' | 'float32' | { dtype: 'int8' | 'uint8'; lo: number; hi: number };
}

function checkInt8(op: string, t: TensorMeta, what: string): void {
  if (t.dtype !== 'int8' && t.dtype !== 'uint8') throw new SinterError(op, `${what} must hold int8 or uint8 integers, got ${describeMeta(t)}`);
}

export const qgemmOp = defineOp<QGemmAttrs>({
  name: 'qgemm',
  infer(inputs, a) {
    const [x, w] = inputs;
    checkInt8('qgemm', x!, 'the input');
    checkInt8('qgemm', w!, 'the weight');
    const want = a.output === 'int32' ? 4 : a.output === 'float32' ? 6 : 7;
    if (inputs.length !== want) throw new SinterError('qgemm', `expected ${want} inputs, got ${inputs.length}`);
    const dtype = typeof a.output === 'string' ? a.output : a.output.dtype;
    const c = a.conv;
    return [{ shape: c ? [c.batch, a.n, c.outHeight, c.outWidth] : [a.m, a.n], dtype }];
  },
  cpu(inputs, a, [out]) {
    qgemmCpu(inputs, a, out!);
  },
  webgpu(inputs, a, [out], caps) {
    return packedDot4Program(inputs, a, out!, caps) ?? qgemmWgsl(inputs, a, out!, caps);
  },
});

/** Runs the integer GEMM (see the notes above) with the inputs its epilogue needs. */
export function qgemm(inputs: readonly Tensor[], attrs: QGemmAttrs): Tensor {
  return apply1(qgemmOp, inputs, attrs);
}

function qgemmCpu(inputs: readonly CpuView[], a: QGemmAttrs, out: CpuView): void {
  const [x, w, zpAv, zpBv, mult, offset, zpOut] = inputs;
  const zpA = zpAv!.data[zpAv!.offset]!;
  const { m: M, n: N, k: K } = a;
  const c = a.conv;
  // The weight rows minus their zero points, once per call.
  const wc = new Int32Array(N * K);
  for (let n = 0; n < N; n++) {
    const zb = zpBv!.data[zpBv!.offset + n * (zpBv!.strides[0] ?? 0)]!;
    for (let k = 0; k < K; k++) wc[n * K + k] = w!.data[w!.offset + n * w!.strides[0]! + k * w!.strides[1]!]! - zb;
  }
  const groups = c ? c.groups : 1, perGroup = N / groups, hw = c ? c.outHeight * c.outWidth : 1;
  const col = new Int32Array(K);
  const ep = a.output;
  const zo = zpOut ? zpOut.data[zpOut.offset]! : 0;
  for (let m = 0; m < M; m++) {
    for (let g = 0; g < groups; g++) {
      // Row m of A minus its zero point (for conv: the im2col patch of group g; padding reads zpA).
      if (!c) {
        for (let k = 0; k < K; k++) col[k] = x!.data[x!.offset + m * x!.strides[0]! + k * x!.strides[1]!]! - zpA;
      } else {
        const [kh, kw] = c.kernel, taps = kh * kw, cg = c.channels / groups;
        const b = Math.floor(m / hw), oh = Math.floor((m % hw) / c.outWidth), ow = m % c.outWidth;
        const [s0, s1, s2, s3] = x!.strides as [number, number, number, number];
        for (let k = 0; k < K; k++) {
          const ch = g * cg + Math.floor(k / taps), t = k % taps;
          const ih = oh * c.stride[0] - c.padding[0] + Math.floor(t / kw) * c.dilation[0], iw = ow * c.stride[1] - c.padding[1] + (t % kw) * c.dilation[1];
          col[k] = ih < 0 || ih >= c.height || iw < 0 || iw >= c.width ? 0 : x!.data[x!.offset + b * s0 + ch * s1 + ih * s2 + iw * s3]! - zpA;
        }
      }
      for (let n = g * perGroup; n < (g + 1) * perGroup; n++) {
        let acc = 0;
        const base = n * K;
        for (let k = 0; k < K; k++) acc = (acc + Math.imul(col[k]!, wc[base + k]!)) | 0;
        const e = c ? (Math.floor(m / hw) * N + n) * hw + (m % hw) : m * N + n;
        if (ep === 'int32') {
          out.data[e] = acc;
          continue;
        }
        const mv = mult!.data[mult!.offset + n * (mult!.strides[0] ?? 0)]!, ov = offset!.data[offset!.offset + n * (offset!.strides[0] ?? 0)]!;
        const v = Math.fround(Math.fround(Math.fround(acc) * mv) + ov);
        out.data[e] = ep === 'float32' ? v : Math.min(ep.hi, Math.max(ep.lo, roundHalfEven(v) + zo));
      }
    }
  }
}

function roundHalfEven(v: number): number {
  const f = Math.floor(v), r = v - f;
  return r > 0.5 ? f + 1 : r < 0.5 ? f : f % 2 === 0 ? f : f + 1;
}

/** WGSL reading element `idx` of parameter vector input i through its view (offset and stride; stride 0 when broadcast). */
const paramReader = (inputs: readonly GpuView[]) => (i: number, idx: string) => `in${i}[${inputs[i]!.offset}u + ${idx} * ${inputs[i]!.strides[0] ?? 0}u]`;

/**
 * The packed dot-product loop over `words` words of A and B (read by `aWord(k)`, `bWord(k)`), leaving
 * `acc` = Σ(a − zpA)(b − zb) over 4·words entries. uint8 operands become signed by flipping each byte's
 * top bit (q − 128); the zero points are applied after the loop from the operand sums:
 * Σ(a−za)(b−zb) = Σab − zb·Σa − za·Σb + K·za·zb.
 */
function dot4Loop(x: GpuView, w: GpuView, aWord: string, bWord: string, words: number): string {
  const signed = (v: GpuView, word: string) => (v.dtype === 'uint8' ? `(${word} ^ 0x80808080u)` : word);
  const shift = (v: GpuView) => (v.dtype === 'uint8' ? ' - 128' : '');
  return `let za = zpA${shift(x)}; let zw = zb${shift(w)};
  var ab = 0i; var sa = 0i; var sw = 0i;
  for (var k = 0u; k < ${words}u; k++) {
    let aw = ${signed(x, aWord)}; let ww = ${signed(w, bWord)};
    ab += dot4I8Packed(aw, ww); sa += dot4I8Packed(aw, 0x01010101u); sw += dot4I8Packed(ww, 0x01010101u);
  }
  let acc = ab - zw * sa - za * sw + ${words * 4} * za * zw;`;
}

/**
 * A GEMM module: `output(e, zpA)` computes output element e (its body: `split` names m, n and, for
 * convs, b/oh/ow/g; `loop` leaves `acc`; then the epilogue), and each invocation writes one output word
 * from its elements, unrolled.
 */
function gemmModule(head: string, a: QGemmAttrs, inputs: readonly GpuView[], out: GpuView, caps: WebGpuCaps, split: string, loop: string): { source: string; workgroups: number[] } {
  const ep = a.output;
  const at = paramReader(inputs);
  const outDType = typeof ep === 'string' ? ep : ep.dtype;
  const per = elementsPerWord(outDType, caps);
  const total = out.shape.reduce((p, q) => p * q, 1);
  const words = Math.ceil(total / per);
  const g = grid('qgemm', words, 64, caps);
  const epilogue = ep === 'int32' ? 'return acc;' : ep === 'float32' ? `return f32(acc) * ${at(4, 'n')} + ${at(5, 'n')};`
    : `let v = f32(acc) * ${at(4, 'n')} + ${at(5, 'n')};
  return i32(clamp(round(v) + f32(${at(6, '0u')}), ${ep.lo}.0, ${ep.hi}.0));`;
  const source = `${head}

fn output(e: u32, zpA: i32) -> ${ep === 'float32' ? 'f32' : 'i32'} {
  ${split}
  let zb = ${at(3, 'n')};
  ${loop}
  ${epilogue}
}

@compute @workgroup_size(64) fn main(${GRID_PARAMS}) {
  let word = ${g.index};
  if (word >= ${words}u) { return; }
  let zpA = ${at(2, '0u')};
  ${Array.from({ length: per }, (_, j) => `var r${j} = ${ep === 'float32' ? '0.0' : '0i'};`).join(' ')}
  ${Array.from({ length: per }, (_, j) => `if (word * ${per}u + ${j}u < ${total}u) { r${j} = output(word * ${per}u + ${j}u, zpA); }`).join('\n  ')}
  out0[word] = ${packWord(outDType, Array.from({ length: per }, (_, j) => `r${j}`), caps)};
}`;
  return { source: withPrelude(source), workgroups: g.workgroups };
}

/** Rows of `v` are whole, aligned words (the direct dot4 path reads them in place). */
const wordRows = (v: GpuView, k: number) => k % 4 === 0 && v.strides[1] === 1 && v.strides[0] === k && v.offset % 4 === 0;

/**
 * The direct WGSL kernel (see gemmModule): four bytes at a time with dot4I8Packed where the device has
 * packed_4x8_integer_dot_product and both operands are whole word rows, else byte by byte (convs with
 * nested loops over channel and kernel taps). Loop bounds, shapes and strides are constants; the
 * per-call values are the zero-point and multiplier inputs.
 */
function qgemmWgsl(inputs: readonly GpuView[], a: QGemmAttrs, out: GpuView, caps: WebGpuCaps): WgslKernel {
  const [x, w] = inputs as [GpuView, GpuView];
  const outDType = typeof a.output === 'string' ? a.output : a.output.dtype;
  const c = a.conv;
  const ld = (buf: string, v: GpuView, i: string) => loadElement(buf, v.dtype, i, caps);
  let split: string, loop: string;
  if (!c) {
    split = `let m = e / ${a.n}u; let n = e % ${a.n}u;`;
    loop = caps.packedDot4 === true && wordRows(x, a.k) && wordRows(w, a.k)
      ? dot4Loop(x, w, `in0[${x.offset / 4}u + m * ${a.k / 4}u + k]`, `in1[${w.offset / 4}u + n * ${a.k / 4}u + k]`, a.k / 4)
      : `var acc = 0i;
  for (var k = 0u; k < ${a.k}u; k++) {
    let ai = ${x.offset}u + m * ${x.strides[0]}u + k * ${x.strides[1]}u;
    let wi = ${w.offset}u + n * ${w.strides[0]}u + k * ${w.strides[1]}u;
    acc += (${ld('in0', x, 'ai')} - zpA) * (${ld('in1', w, 'wi')} - zb);
  }`;
  } else {
    // Convolution: nested loops over (channel, kernel row, kernel column), so no division per tap; a
    // padded position contributes 0 (the input's zero point minus itself).
    const [kh, kw] = c.kernel, hw = c.outHeight * c.outWidth, cg = c.channels / c.groups;
    split = `let pix = e % ${hw}u; let n = (e / ${hw}u) % ${a.n}u; let b = e / ${hw * a.n}u;
  let oh = i32(pix / ${c.outWidth}u); let ow = i32(pix % ${c.outWidth}u); let g = n / ${a.n / c.groups}u;`;
    loop = `var acc = 0i;
  for (var ci = 0u; ci < ${cg}u; ci++) {
    let xc = ${x.offset}u + b * ${x.strides[0]}u + (g * ${cg}u + ci) * ${x.strides[1]}u;
    let wc = ${w.offset}u + n * ${w.strides[0]}u + ci * ${kh * kw * w.strides[1]!}u;
    for (var i = 0u; i < ${kh}u; i++) {
      let ih = oh * ${c.stride[0]} - ${c.padding[0]} + i32(i) * ${c.dilation[0]};
      if (ih < 0 || ih >= ${c.height}) { continue; }
      for (var jj = 0u; jj < ${kw}u; jj++) {
        let iw = ow * ${c.stride[1]} - ${c.padding[1]} + i32(jj) * ${c.dilation[1]};
        if (iw < 0 || iw >= ${c.width}) { continue; }
        let ai = xc + u32(ih) * ${x.strides[2]}u + u32(iw) * ${x.strides[3]}u;
        let wi = wc + (i * ${kw}u + jj) * ${w.strides[1]}u;
        acc += (${ld('in0', x, 'ai')} - zpA) * (${ld('in1', w, 'wi')} - zb);
      }
    }
  }`;
  }
  return gemmModule(bindings(inputs.map((t) => t.dtype), [outDType], caps), a, inputs, out, caps, split, loop);
}

/**
 * The packed path for operands that are not whole word rows (every conv, matmuls with K % 4 ≠ 0 or
 * strided views), where the device has packed_4x8_integer_dot_product: pass 1 packs the A rows (for a
 * conv: the im2col patch of each pixel and group) and the B rows into one scratch buffer, four bytes a
 * word with K padded to a multiple of 4 by zero points (so the padding adds 0); pass 2 is the dot4 GEMM
 * over the words. null where it does not apply (the direct kernel runs instead).
 */
function packedDot4Program(inputs: readonly GpuView[], a: QGemmAttrs, out: GpuView, caps: WebGpuCaps): WgslProgram | null {
  const [x, w] = inputs as [GpuView, GpuView];
  const c = a.conv;
  if (caps.packedDot4 !== true || (!c && wordRows(x, a.k) && wordRows(w, a.k))) return null;
  if (inputs.length + 2 > caps.limits.maxStorageBuffersPerShaderStage) return null;
  const kw4 = Math.ceil(a.k / 4);
  const groups = c ? c.groups : 1;
  const aRows = a.m * groups, rows = aRows + a.n;
  const scratchBytes = rows * kw4 * 4;
  if (scratchBytes > caps.limits.maxStorageBufferBindingSize) return null;
  const ld = (buf: string, v: GpuView, i: string) => loadElement(buf, v.dtype, i, caps);
  const at = paramReader(inputs);
  const outDType = typeof a.output === 'string' ? a.output : a.output.dtype;
  const scratch = `@group(0) @binding(${inputs.length + 1}) var<storage, read_write> packed: array<u32>;`;
  const head = `${bindings(inputs.map((t) => t.dtype), [outDType], caps)}\n${scratch}`;
  // Pass 1: one invocation per scratch word. Rows [0, aRows) are A (row g·M + m), the rest B (row n).
  const aValue = c ? 'aConv(m, g, k)' : ld('in0', x, `(${x.offset}u + m * ${x.strides[0]}u + k * ${x.strides[1]}u)`);
  const conv = c
    ? `fn aConv(m: u32, g: u32, k: u32) -> i32 {
  let b = m / ${c.outHeight * c.outWidth}u; let pix = m % ${c.outHeight * c.outWidth}u;
  let oh = i32(pix / ${c.outWidth}u); let ow = i32(pix % ${c.outWidth}u);
  let ch = g * ${c.channels / c.groups}u + k / ${c.kernel[0] * c.kernel[1]}u; let t = k % ${c.kernel[0] * c.kernel[1]}u;
  let ih = oh * ${c.stride[0]} - ${c.padding[0]} + i32(t / ${c.kernel[1]}u) * ${c.dilation[0]};
  let iw = ow * ${c.stride[1]} - ${c.padding[1]} + i32(t % ${c.kernel[1]}u) * ${c.dilation[1]};
  if (ih < 0 || ih >= ${c.height} || iw < 0 || iw >= ${c.width}) { return ${at(2, '0u')}; }
  let ai = ${x.offset}u + b * ${x.strides[0]}u + ch * ${x.strides[1]}u + u32(ih) * ${x.strides[2]}u + u32(iw) * ${x.strides[3]}u;
  return ${ld('in0', x, 'ai')};
}`
    : '';
  const g1 = grid('qgemm', rows * kw4, 64, caps);
  const pack = `${head}
${conv}
fn byteAt(row: u32, k: u32) -> i32 {
  if (row < ${aRows}u) {
    let m = row % ${a.m}u; let g = row / ${a.m}u;
    if (k >= ${a.k}u) { return ${at(2, '0u')}; }
    return ${aValue};
  }
  let n = row - ${aRows}u;
  if (k >= ${a.k}u) { return ${at(3, 'n')}; }
  return ${ld('in1', w, `(${w.offset}u + n * ${w.strides[0]}u + k * ${w.strides[1]}u)`)};
}
@compute @workgroup_size(64) fn main(${GRID_PARAMS}) {
  let word = ${g1.index};
  if (word >= ${rows * kw4}u) { return; }
  let row = word / ${kw4}u; let k0 = (word % ${kw4}u) * 4u;
  var v = 0u;
  for (var j = 0u; j < 4u; j++) { v |= (bitcast<u32>(byteAt(row, k0 + j)) & 255u) << (8u * j); }
  packed[word] = v;
}`;
  // Pass 2: the dot4 GEMM over the packed words.
  const split = c
    ? `let pix = e % ${c.outHeight * c.outWidth}u; let n = (e / ${c.outHeight * c.outWidth}u) % ${a.n}u;
  let m = (e / ${c.outHeight * c.outWidth * a.n}u) * ${c.outHeight * c.outWidth}u + pix; let g = n / ${a.n / groups}u;`
    : `let m = e / ${a.n}u; let n = e % ${a.n}u; let g = 0u;`;
  const gemm = gemmModule(head, a, inputs, out, caps, split, dot4Loop(x, w, `packed[(g * ${a.m}u + m) * ${kw4}u + k]`, `packed[(${aRows}u + n) * ${kw4}u + k]`, kw4));
  return {
    scratch: [{ bytes: scratchBytes }],
    passes: [
      { source: withPrelude(pack), workgroups: g1.workgroups },
      gemm,
    ],
  };
}
