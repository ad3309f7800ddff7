import { SinterError } from '../errors.js';
import { type CpuView, type TensorMeta, apply1, defineOp, describeMeta } from '../ops/op.js';
import { bindings, literal, loadElement, packWord, elementsPerWord } from '../kernels/wgsl/dtype.js';
import { GRID_PARAMS, grid } from '../kernels/wgsl/grid.js';
import type { GpuView, WebGpuCaps, WgslForm, WgslKernel } from '../kernels/wgsl/kernel.js';
import { type GemmOperand, type GemmProblem, type StridedMatrix, gemmKernel, stridedOperand } from '../kernels/wgsl/gemm.js';
import { im2col } from '../kernels/wgsl/conv.js';
import { KernelParams } from '../kernels/wgsl/params.js';
import { withPrelude } from '../kernels/wgsl/prelude.js';
import type { Tensor } from '../tensor/tensor.js';
import { roundHalfEven } from './observer.js';
import { cpuKernels } from '../backend/cpu.js';
import { type Int8Epilogue, type Int8Operand, wasmInt8Conv, wasmInt8Matmul } from '../kernels/wasm/int8.js';

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
// On WebGPU the GEMM runs on the shared float GEMM's kernels (src/kernels/wgsl/gemm.ts: register
// blocking, workgroup tiles on GPUs) with operands centred on their zero points as they load, weight rows
// of whole words loaded four values a word, and the requantisation as the epilogue; sums of K ≤ 258
// products accumulate in f32, where every partial sum is an integer below 2²⁴ (exact, and faster than i32
// multiply-adds on SwiftShader), longer ones in i32. GPUs with packed_4x8_integer_dot_product run the
// dot4I8Packed kernels instead; SwiftShader emulates those, and there the register kernel is ~3× faster.
//
// Zero points lie in their operand's dtype range (as ONNX and PyTorch require; callers check), so centred values
// lie in [−255, 255]: int16 on the CPU, exact f32 sums of up to 258 products on WebGPU.
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
  output: 'int32' | 'float32' | QRequant;
}

/**
 * A requantised output: q = clamp(roundHalfEven(act(v)) + zpOut, lo, hi) for v = f32(acc)·multiplier[n]
 * + offset[n]. ReLU and ReLU6 are the clamp (lo = zpOut, hi = zpOut + round(6 / scale)); `hardswish`
 * (given the output scale) applies x·clamp(x + 3, 0, 6)/6 to the real value x = v·scale first.
 */
export interface QRequant {
  dtype: 'int8' | 'uint8';
  lo: number;
  hi: number;
  hardswish?: { scale: number };
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
    return dot4Program(inputs, a, out!, caps) ?? qgemmShared(inputs, a, out!, caps);
  },
});

/** Runs the integer GEMM (see the notes above) with the inputs its epilogue needs. */
export function qgemm(inputs: readonly Tensor[], attrs: QGemmAttrs): Tensor {
  return apply1(qgemmOp, inputs, attrs);
}

function qgemmCpu(inputs: readonly CpuView[], a: QGemmAttrs, out: CpuView): void {
  // The wasm form needs sums to compute (K ≥ 1) and outputs to write; the JavaScript one takes the empty cases.
  if (cpuKernels() === 'wasm' && a.k > 0 && out.shape.every((d) => d > 0)) return qgemmWasm(inputs, a, out);
  const [x, w, zpAv, zpBv, mult, offset, zpOut] = inputs;
  const zpA = zpAv!.data[zpAv!.offset]!;
  const { m: M, n: N, k: K } = a;
  const c = a.conv;
  const groups = c ? c.groups : 1, perGroup = N / groups, hw = c ? c.outHeight * c.outWidth : 1;
  const ep = a.output;
  const zo = zpOut ? zpOut.data[zpOut.offset]! : 0;
  // The weight as int16 (a native conversion of its view's span): storages are Int8Array/Uint8Array/… by
  // dtype, and indexing them all from one loop is slow.
  const ws = int16Span(w!);
  // Centred operands are int16: values minus zero points of the same dtype's range lie in [−255, 255].
  const weights = new Int16Array(perGroup * K);
  // Results in output order, stored into the output with one native conversion at the end.
  const result = ep === 'float32' ? new Float32Array(M * N) : new Int32Array(M * N);
  /** The group's weight rows minus their zero points. */
  const groupWeights = (g: number): Int16Array => {
    const [wr, wc] = w!.strides as [number, number];
    for (let r = 0; r < perGroup; r++) {
      const n = g * perGroup + r, zb = zpBv!.data[zpBv!.offset + n * (zpBv!.strides[0] ?? 0)]!;
      for (let k = 0, at = ws.at + n * wr; k < K; k++, at += wc) weights[r * K + k] = ws.data[at]! - zb;
    }
    return weights;
  };
  /** The epilogue of group g's sums [M, perGroup] (rows ldc apart) into `result`. */
  const store = (g: number, sums: Int32Array, ldc: number): void => {
    for (let r = 0; r < perGroup; r++) {
      const n = g * perGroup + r;
      // Output (m, n) lies at NCHW (image, n, pixel) for a conv (m = image·hw + pixel), else at m·N + n.
      const place = { hw, stride: c ? 1 : N, image: c ? N * hw : N, first: c ? n * hw : n };
      if (ep === 'int32') {
        for (let m = 0; m < M; m++) result[Math.floor(m / hw) * place.image + place.first + (m % hw) * place.stride] = sums[m * ldc + r]!;
        continue;
      }
      const mv = mult!.data[mult!.offset + n * (mult!.strides[0] ?? 0)]!, ov = offset!.data[offset!.offset + n * (offset!.strides[0] ?? 0)]!;
      if (ep === 'float32') scaleColumn(sums, ldc, r, M, mv, ov, place, result as Float32Array);
      else if (ep.hardswish) {
        for (let m = 0; m < M; m++) {
          const v = hardswishUnits(Math.fround(Math.fround(Math.fround(sums[m * ldc + r]!) * mv) + ov), ep.hardswish.scale);
          result[Math.floor(m / hw) * place.image + place.first + (m % hw) * place.stride] = Math.min(ep.hi, Math.max(ep.lo, roundHalfEven(v) + zo));
        }
      } else requantizeColumn(sums, ldc, r, M, mv, ov, zo, ep.lo, ep.hi, place, result as Int32Array);
    }
  };
  const xs = int16Span(x!);
  const rows = new Int16Array(M * K);
  for (let g = 0; g < groups; g++) {
    // Rows of A minus its zero point (for conv: the im2col patches of group g; the padding contributes 0).
    if (c) im2colRows(xs.data, xs.at, x!.strides, c, g, zpA, rows, K);
    else {
      const [rs, cs] = x!.strides as [number, number];
      for (let m = 0; m < M; m++) for (let k = 0, at = xs.at + m * rs; k < K; k++, at += cs) rows[m * K + k] = xs.data[at]! - zpA;
    }
    store(g, int8Products(M, perGroup, K, rows, groupWeights(g)), perGroup);
  }
  out.data.set(result, out.offset);
}

/** A parameter vector input (one value per output channel, or broadcast) as a dense array of `n`. */
function channelValues<T extends Int32Array | Float32Array>(v: CpuView, n: number, into: T): T {
  const s = v.strides[0] ?? 0;
  for (let i = 0; i < n; i++) into[i] = v.data[v.offset + i * s]!;
  return into;
}

/**
 * The WebAssembly form (src/kernels/wasm/int8.ts): packing, the integer GEMM and the requantisation epilogue all in
 * wasm, writing the output's storage directly. hardswish's epilogue runs on the wasm kernel's float32 values.
 */
function qgemmWasm(inputs: readonly CpuView[], a: QGemmAttrs, out: CpuView): void {
  const [x, w, zpAv, zpBv, mult, offset, zpOut] = inputs as CpuView[];
  const { m: M, n: N, k: K } = a;
  const ep = a.output;
  const zpA = zpAv!.data[zpAv!.offset]!, zpW = channelValues(zpBv!, N, new Int32Array(N));
  const hardswish = typeof ep === 'object' && ep.hardswish ? ep : null;
  const mode = typeof ep === 'string' ? ep : hardswish ? 'float32' : ep.dtype;
  const epilogue: Int8Epilogue = { mode };
  if (mode !== 'int32') {
    epilogue.multiplier = channelValues(mult!, N, new Float32Array(N));
    epilogue.offset = channelValues(offset!, N, new Float32Array(N));
  }
  if (typeof ep === 'object') Object.assign(epilogue, { zeroPoint: zpOut!.data[zpOut!.offset]!, lo: ep.lo, hi: ep.hi });
  const target = hardswish ? new Float32Array(out.shape.reduce((p, d) => p * d, 1)) : (out.data as Int32Array | Float32Array | Int8Array | Uint8Array);
  const at = hardswish ? 0 : out.offset;
  const xo = x as unknown as Int8Operand, wo = w as unknown as Int8Operand;
  if (a.conv) wasmInt8Conv(xo, a.conv, zpA, wo, N, zpW, epilogue, target, at);
  else wasmInt8Matmul(xo, M, K, zpA, wo, N, zpW, epilogue, target, at);
  if (hardswish) {
    const zo = epilogue.zeroPoint!, scale = hardswish.hardswish!.scale;
    for (let i = 0; i < target.length; i++) out.data[out.offset + i] = Math.min(hardswish.hi, Math.max(hardswish.lo, roundHalfEven(hardswishUnits(target[i]!, scale)) + zo));
  }
}

/** Where column r of the sums goes: element m at ⌊m/hw⌋·image + first + (m mod hw)·stride. */
interface Placement {
  hw: number;
  stride: number;
  image: number;
  first: number;
}

/** The float32 epilogue of one column: f32(acc)·mv + ov (float32 steps). Monomorphic loops: the epilogue runs once per output. */
function scaleColumn(sums: Int32Array, ld: number, r: number, M: number, mv: number, ov: number, p: Placement, out: Float32Array): void {
  for (let m = 0; m < M; m++) out[Math.floor(m / p.hw) * p.image + p.first + (m % p.hw) * p.stride] = Math.fround(Math.fround(Math.fround(sums[m * ld + r]!) * mv) + ov);
}

/** The requantising epilogue of one column: clamp(roundHalfEven(f32(acc)·mv + ov) + zo, lo, hi). */
function requantizeColumn(sums: Int32Array, ld: number, r: number, M: number, mv: number, ov: number, zo: number, lo: number, hi: number, p: Placement, out: Int32Array): void {
  for (let m = 0; m < M; m++) {
    const v = Math.fround(Math.fround(Math.fround(sums[m * ld + r]!) * mv) + ov);
    // Math.round rounds ties up; an odd result of a tie goes back down (ties to even).
    let q = Math.round(v);
    if (q - v === 0.5 && (q & 1) !== 0) q -= 1;
    out[Math.floor(m / p.hw) * p.image + p.first + (m % p.hw) * p.stride] = Math.min(hi, Math.max(lo, q + zo));
  }
}

/** The span of a view's storage it reads (a subarray, not a copy), and where the view's element 0 lies in it. */
function storageSpan(v: CpuView): { data: CpuView['data']; at: number } {
  let lo = v.offset, hi = v.offset;
  v.shape.forEach((d, i) => {
    const s = v.strides[i]! * (d - 1);
    if (s < 0) lo += s;
    else hi += s;
  });
  return { data: v.data.subarray(lo, hi + 1), at: v.offset - lo };
}

/** The span of a view's storage it reads, as int16, and where the view's element 0 lies in it. */
function int16Span(v: CpuView): { data: Int16Array; at: number } {
  const span = storageSpan(v);
  const data = new Int16Array(span.data.length);
  data.set(span.data);
  return { data, at: span.at };
}

/** Fills `rows` (rows `ld` apart) with conv2d's im2col patches of group g (input channels of the group × kernel taps) minus zpA; 0 in the padding. */
function im2colRows(x: Int16Array, x0: number, strides: readonly number[], c: ConvGeometry, g: number, zpA: number, rows: Int16Array, ld: number): void {
  const [kh, kw] = c.kernel, cg = c.channels / c.groups, hw = c.outHeight * c.outWidth;
  const [s0, s1, s2, s3] = strides as [number, number, number, number];
  for (let m = 0; m < c.batch * hw; m++) {
    let k = m * ld;
    const b = Math.floor(m / hw), oh = Math.floor((m % hw) / c.outWidth), ow = m % c.outWidth;
    for (let ci = 0; ci < cg; ci++) {
      const plane = x0 + b * s0 + (g * cg + ci) * s1;
      for (let i = 0; i < kh; i++) {
        const ih = oh * c.stride[0] - c.padding[0] + i * c.dilation[0];
        const rowInside = ih >= 0 && ih < c.height;
        for (let j = 0; j < kw; j++) {
          const iw = ow * c.stride[1] - c.padding[1] + j * c.dilation[1];
          rows[k++] = rowInside && iw >= 0 && iw < c.width ? x[plane + ih * s2 + iw * s3]! - zpA : 0;
        }
      }
    }
  }
}

/** The JavaScript reference of the wasm integer GEMM: C[i, j] = Σ_k A[i, k]·W[j, k], wrapping as int32. */
function int8Products(m: number, n: number, k: number, a: Int16Array, w: Int16Array): Int32Array {
  const out = new Int32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let t = 0; t < k; t++) acc = (acc + Math.imul(a[i * k + t]!, w[j * k + t]!)) | 0;
      out[i * n + j] = acc;
    }
  }
  return out;
}

/** hardswish of the real value v·scale, back in output units (float32 steps, as the WGSL epilogue). */
function hardswishUnits(v: number, scale: number): number {
  const x = Math.fround(v * Math.fround(scale));
  const y = Math.fround(Math.fround(x * Math.min(6, Math.max(0, Math.fround(x + 3)))) / 6);
  return Math.fround(y / Math.fround(scale));
}

/** WGSL reading element `idx` of parameter vector input i through its view (offset and stride, parameters; stride 0 when broadcast). */
const paramReader = (inputs: readonly GpuView[], p: KernelParams) => (i: number, idx: string) => `in${i}[${p.u32(inputs[i]!.offset)} + ${idx} * ${p.u32(inputs[i]!.strides[0] ?? 0)}]`;

/**
 * The packed dot-product loop over `words` words of A and B (read by `aWord(k)`, `bWord(k)`), leaving
 * `acc` = Σ(a − zpA)(b − zb) over 4·words entries. uint8 operands become signed by flipping each byte's
 * top bit (q − 128); the zero points are applied after the loop from the operand sums:
 * Σ(a−za)(b−zb) = Σab − zb·Σa − za·Σb + K·za·zb.
 */
function dot4Loop(x: GpuView, w: GpuView, aWord: string, bWord: string, words: number, p: KernelParams): string {
  const signed = (v: GpuView, word: string) => (v.dtype === 'uint8' ? `(${word} ^ 0x80808080u)` : word);
  const shift = (v: GpuView) => (v.dtype === 'uint8' ? ' - 128' : '');
  const n = p.u32(words);
  return `let za = zpA${shift(x)}; let zw = zb${shift(w)};
  var ab = 0i; var sa = 0i; var sw = 0i;
  for (var k = 0u; k < ${n}; k++) {
    let aw = ${signed(x, aWord)}; let ww = ${signed(w, bWord)};
    ab += dot4I8Packed(aw, ww); sa += dot4I8Packed(aw, 0x01010101u); sw += dot4I8Packed(ww, 0x01010101u);
  }
  let acc = ab - zw * sa - za * sw + i32(${n} * 4u) * za * zw;`;
}

/**
 * A GEMM module: `output(e, zpA)` computes output element e (its body: `split` names m, n and, for
 * convs, b/oh/ow/g; `loop` leaves `acc`; then the epilogue), and each invocation writes one output word
 * from its elements, unrolled. Sizes and the epilogue's constants are read from `p` (declared here, after
 * the body is generated).
 */
function gemmModule(head: string, a: QGemmAttrs, inputs: readonly GpuView[], out: GpuView, caps: WebGpuCaps, split: string, loop: string, p: KernelParams): WgslKernel {
  const ep = a.output;
  const at = paramReader(inputs, p);
  const f = (v: number) => p.scalar(v, 'f32', literal);
  const outDType = typeof ep === 'string' ? ep : ep.dtype;
  const per = elementsPerWord(outDType, caps);
  const total = out.shape.reduce((x, y) => x * y, 1);
  const words = Math.ceil(total / per);
  const g = grid('qgemm', words, 64, caps);
  const epilogue = ep === 'int32' ? 'return acc;' : ep === 'float32' ? `return f32(acc) * ${at(4, 'n')} + ${at(5, 'n')};`
    : `var v = f32(acc) * ${at(4, 'n')} + ${at(5, 'n')};${ep.hardswish ? ` let s = ${f(ep.hardswish.scale)}; let r = v * s; v = r * clamp(r + 3.0, 0.0, 6.0) / 6.0 / s;` : ''}
  return i32(clamp(round(v) + f32(${at(6, '0u')}), ${f(ep.lo)}, ${f(ep.hi)}));`;
  const body = `fn output(e: u32, zpA: i32) -> ${ep === 'float32' ? 'f32' : 'i32'} {
  ${split}
  let zb = ${at(3, 'n')};
  ${loop}
  ${epilogue}
}

@compute @workgroup_size(64) fn main(${GRID_PARAMS}) {
  let word = ${g.index};
  if (word >= ${p.u32(words)}) { return; }
  let zpA = ${at(2, '0u')};
  let total = ${p.u32(total)};
  ${Array.from({ length: per }, (_, j) => `var r${j} = ${ep === 'float32' ? '0.0' : '0i'};`).join(' ')}
  ${Array.from({ length: per }, (_, j) => `if (word * ${per}u + ${j}u < total) { r${j} = output(word * ${per}u + ${j}u, zpA); }`).join('\n  ')}
  out0[word] = ${packWord(outDType, Array.from({ length: per }, (_, j) => `r${j}`), caps)};
}`;
  return { source: withPrelude(`${head}\n${p.declaration()}\n\n${body}`), workgroups: g.workgroups, ...(p.words() && { params: p.words() }) };
}

/** Rows of `v` are whole, aligned words (the direct dot4 path reads them in place). */
const wordRows = (v: GpuView, k: number) => k % 4 === 0 && v.strides[1] === 1 && v.strides[0] === k && v.offset % 4 === 0;

/**
 * Whether f32 sums of K products are exact: centred operands lie in [−255, 255], so every partial sum
 * is an integer of magnitude ≤ K·255² < 2²⁴ for K ≤ 258, and f32 multiply-adds are faster than i32 ones
 * on SwiftShader (and full rate on GPUs). Longer products accumulate in i32.
 */
const exactF32 = (k: number) => k * 255 * 255 < 2 ** 24;

/** Four int8 (uint8) values packed in the u32 `word`, as a vec4i: shifts, no per-byte extraction. */
function unpack4(dtype: string, word: string): string {
  return dtype === 'int8' ? `((vec4i(bitcast<i32>(${word})) << vec4u(24u, 16u, 8u, 0u)) >> vec4u(24u))` : `vec4i((vec4u(${word}) >> vec4u(0u, 8u, 16u, 24u)) & vec4u(255u))`;
}

/**
 * An int8/uint8 matrix operand of the shared GEMM read centred on its zero point: `zeroPoint.at(base, x)`
 * is x's (per tensor or per row), set up once per row; `zeroPoint.base` adds statements to the operand's
 * base. Rows of whole aligned words (k contiguous, K % 4 = 0) load four k at once from the binding as
 * vec4<u32> (storage buffers are multiples of 16 bytes, see the buffer pool): one word per four values.
 */
function centredOperand(
  m: StridedMatrix, binding: number, caps: WebGpuCaps, params: KernelParams,
  zeroPoint: { base: (name: string, batch: readonly string[]) => string; at: (base: string, x: string) => string },
): GemmOperand {
  const op = stridedOperand(m, binding, caps, params);
  const k = m.kDims[0]!;
  const vecK = m.kDims.length === 1 && k.stride === 1 && k.size % 4 === 0 && m.offset % 4 === 0 && m.xStride % 4 === 0 && m.batch.every((s) => s % 4 === 0);
  const word = (x: string, kk: string) => `in${binding}[(${x} + ${kk}) / 16u][((${x} + ${kk}) / 4u) & 3u]`;
  return {
    ...op,
    vecK,
    vecX: false,
    base: (name, batch) => `${op.base(name, batch)} ${zeroPoint.base(name, batch)}`,
    atX: (name, base, x) => `${op.atX(name, base, x)} let ${name}_z = ${zeroPoint.at(base, x)};`,
    load: (x, kk, t) => `${t}(${op.load(x, kk, 'i32')} - ${x}_z)`,
    load4: (x, kk, t) => `vec4<${t}>(${unpack4(m.dtype, word(x, kk))} - vec4i(${x}_z))`,
  };
}

/**
 * The int8 GEMM on the shared register-blocked / workgroup-tiled kernel (src/kernels/wgsl/gemm.ts):
 * operands are read byte by byte through their views and centred on their zero points as they are
 * loaded (the input's per tensor, the weight's per output channel; conv2d's implicit im2col reads 0 in
 * the padding), products accumulate exactly in i32 registers, and the epilogue requantises (or scales
 * to float32) before the store. Sizes, strides, offsets and the clamp bounds are kernel parameters; the
 * zero points and multipliers are input tensors. A float32 output is stored through an i32 view of its
 * words (bitcast): the shared kernel accumulates in the output's compute type, and i32 is the exact one.
 */
function qgemmShared(inputs: readonly GpuView[], a: QGemmAttrs, out: GpuView, caps: WebGpuCaps): WgslForm {
  const [x, w] = inputs as [GpuView, GpuView];
  const params = new KernelParams();
  const c = a.conv, ep = a.output;
  /** Element `idx` of 1-d parameter input i through its view (offset and stride are parameters; stride 0 when broadcast). */
  const vec = (i: number, idx: string) => `in${i}[${params.u32(inputs[i]!.offset)} + (${idx}) * ${params.u32(inputs[i]!.strides[0] ?? 0)}]`;
  const groups = c ? c.groups : 1, perGroup = a.n / groups;
  const og = params.u32(perGroup);
  // The weight's rows are output channels: A's for a conv (per image and group), B's columns for a matmul.
  const channel = (g: string | undefined, row: string) => (c ? `${g} * ${og} + ${row}` : row);
  const weight = centredOperand(
    { dtype: w.dtype, offset: w.offset, batch: c ? [0, perGroup * w.strides[0]!] : [], xStride: w.strides[0]!, kDims: [{ size: a.k, stride: w.strides[1]! }] }, 1, caps, params,
    { base: (name, batch) => `let ${name}_g = ${c ? batch[1] : '0u'};`, at: (base, row) => vec(3, channel(`${base}_g`, `(${row})`)) },
  );
  let input: GemmOperand;
  if (c) {
    const [pt, pl] = c.padding, [kh, kw] = c.kernel;
    // Bottom/right padding as far as the last window reaches past the input.
    const pb = Math.max(0, (c.outHeight - 1) * c.stride[0] + c.dilation[0] * (kh - 1) - (c.height - 1) - pt);
    const pr = Math.max(0, (c.outWidth - 1) * c.stride[1] + c.dilation[1] * (kw - 1) - (c.width - 1) - pl);
    const attrs = { stride: c.stride, padding: [pt, pb, pl, pr] as [number, number, number, number], dilation: c.dilation };
    const cols = im2col(x, [a.n, c.channels / groups, kh, kw], c.outWidth, attrs, caps, params, 'zp_in');
    input = { ...cols, base: (name, batch) => `let zp_in = ${vec(2, '0u')}; ${cols.base(name, batch)}`, load: (p, k, t) => `${t}(${cols.load(p, k, t)})` };
  } else {
    input = centredOperand(
      { dtype: x.dtype, offset: x.offset, batch: [], xStride: x.strides[0]!, kDims: [{ size: a.k, stride: x.strides[1]! }] }, 0, caps, params,
      { base: (name) => `let ${name}_z = ${vec(2, '0u')};`, at: (base) => `${base}_z` },
    );
  }
  // The epilogue, per output channel ch.
  const acc = exactF32(a.k) ? 'f32' : 'i32';
  let functions: string | undefined;
  if (ep === 'int32') functions = acc === 'f32' ? 'fn qepilogue(acc: f32, ch: u32) -> i32 { return i32(acc); }' : undefined;
  else {
    const scaled = `f32(acc) * ${vec(4, 'ch')} + ${vec(5, 'ch')}`;
    if (ep === 'float32') functions = `fn qepilogue(acc: ${acc}, ch: u32) -> i32 { return bitcast<i32>(${scaled}); }`;
    else {
      const f = (v: number) => params.scalar(v, 'f32', literal);
      const hs = ep.hardswish ? `\n  let s = ${f(ep.hardswish.scale)}; let r = v * s; v = r * clamp(r + 3.0, 0.0, 6.0) / 6.0 / s;` : '';
      functions = `fn qepilogue(acc: ${acc}, ch: u32) -> i32 {
  var v = ${scaled};${hs}
  return i32(clamp(round(v) + f32(${vec(6, '0u')}), ${f(ep.lo)}, ${f(ep.hi)}));
}`;
    }
  }
  const epilogue: GemmProblem['epilogue'] = functions ? (acc, batch, i, j) => `qepilogue(${acc}, ${c ? channel(batch[1], i) : j})` : undefined;
  const outView: GpuView = ep === 'float32' ? { ...out, dtype: 'int32' } : out;
  const problem: GemmProblem = c
    ? { label: 'qgemm', batch: [c.batch, groups], m: perGroup, n: c.outHeight * c.outWidth, k: a.k, inputs: inputs.map((v) => v.dtype), a: weight, b: input, epilogue, functions, out: outView, params, accumulator: acc }
    : { label: 'qgemm', batch: [], m: a.m, n: a.n, k: a.k, inputs: inputs.map((v) => v.dtype), a: input, b: weight, epilogue, functions, out: outView, params, accumulator: acc };
  return gemmKernel(problem, caps);
}

/**
 * The dot4I8Packed path, on GPUs with packed_4x8_integer_dot_product (null elsewhere): matmuls of whole
 * word rows read them in place; other operands (every conv, matmuls with K % 4 ≠ 0 or strided views):
 * pass 1 packs the A rows (for a conv: the im2col patch of each pixel and group) and the B rows into
 * one scratch buffer, four bytes a word with K padded to a multiple of 4 by zero points (so the padding
 * adds 0); pass 2 is the dot4 GEMM over the words. Each invocation computes one output word.
 */
function dot4Program(inputs: readonly GpuView[], a: QGemmAttrs, out: GpuView, caps: WebGpuCaps): WgslForm | null {
  const [x, w] = inputs as [GpuView, GpuView];
  const c = a.conv;
  if (caps.packedDot4 !== true || caps.architecture === 'swiftshader') return null;
  const outDType = typeof a.output === 'string' ? a.output : a.output.dtype;
  if (!c && wordRows(x, a.k) && wordRows(w, a.k)) {
    // Whole word rows: the dot4 GEMM reads them in place.
    const p = new KernelParams(), u = (v: number) => p.u32(v);
    const split = `let m = e / ${u(a.n)}; let n = e % ${u(a.n)};`;
    const kw = a.k / 4;
    const loop = dot4Loop(x, w, `in0[${u(x.offset / 4)} + m * ${u(kw)} + k]`, `in1[${u(w.offset / 4)} + n * ${u(kw)} + k]`, kw, p);
    return gemmModule(bindings(inputs.map((t) => t.dtype), [outDType], caps), a, inputs, out, caps, split, loop, p);
  }
  if (inputs.length + 2 > caps.limits.maxStorageBuffersPerShaderStage) return null;
  const kw4 = Math.ceil(a.k / 4);
  const groups = c ? c.groups : 1;
  const aRows = a.m * groups, rows = aRows + a.n;
  const scratchBytes = rows * kw4 * 4;
  if (scratchBytes > caps.limits.maxStorageBufferBindingSize) return null;
  const ld = (buf: string, v: GpuView, i: string) => loadElement(buf, v.dtype, i, caps);
  const scratch = `@group(0) @binding(${inputs.length + 1}) var<storage, read_write> packed: array<u32>;`;
  const head = `${bindings(inputs.map((t) => t.dtype), [outDType], caps)}\n${scratch}`;
  // Pass 1: one invocation per scratch word. Rows [0, aRows) are A (row g·M + m), the rest B (row n).
  const p1 = new KernelParams(), u = (v: number) => p1.u32(v), i = (v: number) => `i32(${p1.u32(v)})`;
  const at = paramReader(inputs, p1);
  const aValue = c ? 'aConv(m, g, k)' : ld('in0', x, `(${u(x.offset)} + m * ${u(x.strides[0]!)} + k * ${u(x.strides[1]!)})`);
  const conv = c
    ? `fn aConv(m: u32, g: u32, k: u32) -> i32 {
  let hw = ${u(c.outHeight * c.outWidth)}; let taps = ${u(c.kernel[0] * c.kernel[1])}; let kw = ${u(c.kernel[1])};
  let b = m / hw; let pix = m % hw;
  let oh = i32(pix / ${u(c.outWidth)}); let ow = i32(pix % ${u(c.outWidth)});
  let ch = g * ${u(c.channels / c.groups)} + k / taps; let t = k % taps;
  let ih = oh * ${i(c.stride[0])} - ${i(c.padding[0])} + i32(t / kw) * ${i(c.dilation[0])};
  let iw = ow * ${i(c.stride[1])} - ${i(c.padding[1])} + i32(t % kw) * ${i(c.dilation[1])};
  if (ih < 0 || ih >= ${i(c.height)} || iw < 0 || iw >= ${i(c.width)}) { return ${at(2, '0u')}; }
  let ai = ${u(x.offset)} + b * ${u(x.strides[0]!)} + ch * ${u(x.strides[1]!)} + u32(ih) * ${u(x.strides[2]!)} + u32(iw) * ${u(x.strides[3]!)};
  return ${ld('in0', x, 'ai')};
}`
    : '';
  const g1 = grid('qgemm', rows * kw4, 64, caps);
  const packBody = `${conv}
fn byteAt(row: u32, k: u32) -> i32 {
  let K = ${u(a.k)};
  if (row < ${u(aRows)}) {
    let m = row % ${u(a.m)}; let g = row / ${u(a.m)};
    if (k >= K) { return ${at(2, '0u')}; }
    return ${aValue};
  }
  let n = row - ${u(aRows)};
  if (k >= K) { return ${at(3, 'n')}; }
  return ${ld('in1', w, `(${u(w.offset)} + n * ${u(w.strides[0]!)} + k * ${u(w.strides[1]!)})`)};
}
@compute @workgroup_size(64) fn main(${GRID_PARAMS}) {
  let word = ${g1.index};
  let kw4 = ${u(kw4)};
  if (word >= ${u(rows * kw4)}) { return; }
  let row = word / kw4; let k0 = (word % kw4) * 4u;
  var v = 0u;
  for (var j = 0u; j < 4u; j++) { v |= (bitcast<u32>(byteAt(row, k0 + j)) & 255u) << (8u * j); }
  packed[word] = v;
}`;
  const pack: WgslKernel = { source: withPrelude(`${head}\n${p1.declaration()}\n${packBody}`), workgroups: g1.workgroups, ...(p1.words() && { params: p1.words() }) };
  // Pass 2: the dot4 GEMM over the packed words.
  const p2 = new KernelParams(), v = (n: number) => p2.u32(n);
  const split = c
    ? `let hw = ${v(c.outHeight * c.outWidth)}; let pix = e % hw; let n = (e / hw) % ${v(a.n)};
  let m = (e / (hw * ${v(a.n)})) * hw + pix; let g = n / ${v(a.n / groups)};`
    : `let m = e / ${v(a.n)}; let n = e % ${v(a.n)}; let g = 0u;`;
  const loop = dot4Loop(x, w, `packed[(g * ${v(a.m)} + m) * ${v(kw4)} + k]`, `packed[(${v(aRows)} + n) * ${v(kw4)} + k]`, kw4, p2);
  return { scratch: [{ bytes: scratchBytes }], passes: [pack, gemmModule(head, a, inputs, out, caps, split, loop, p2)] };
}
