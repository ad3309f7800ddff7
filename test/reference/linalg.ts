// Float64 references for matrix products, from the definitions (independent of src/).
import { type Ref, broadcastShape, size, unravel } from './core.js';

/** A product's exact value and, per element, Σ|a·b|: the scale that bounds its rounding error. */
export interface ProductRef {
  out: Ref;
  mag: Ref;
}

/**
 * torch.matmul: a 1-D left operand is a row [1, K] and a 1-D right operand a column [K, 1], the
 * added dim is dropped from the result; leading dims broadcast.
 */
export function matmulRef(a: Ref, b: Ref): ProductRef {
  const as = a.shape.length === 1 ? [1, a.shape[0]!] : a.shape;
  const bs = b.shape.length === 1 ? [b.shape[0]!, 1] : b.shape;
  const M = as[as.length - 2]!, K = as[as.length - 1]!, N = bs[bs.length - 1]!;
  if (bs[bs.length - 2] !== K) throw new Error(`matmulRef: inner dims differ (${as} and ${bs})`);
  const aBatch = as.slice(0, -2), bBatch = bs.slice(0, -2);
  const batch = broadcastShape(aBatch, bBatch);
  const out = new Float64Array(size(batch) * M * N), mag = new Float64Array(out.length);
  // Position of batch index `idx` in an operand whose batch dims are `dims` (size-1 dims repeat).
  const batchStart = (dims: number[], idx: number[]): number => {
    let at = 0;
    for (let d = 0; d < dims.length; d++) at = at * dims[d]! + (dims[d] === 1 ? 0 : idx[d + idx.length - dims.length]!);
    return at;
  };
  for (let t = 0; t < size(batch); t++) {
    const idx = unravel(t, batch);
    const a0 = batchStart(aBatch, idx) * M * K, b0 = batchStart(bBatch, idx) * K * N;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0, m = 0;
        for (let k = 0; k < K; k++) {
          const p = a.data[a0 + i * K + k]! * b.data[b0 + k * N + j]!;
          s += p;
          m += Math.abs(p);
        }
        out[(t * M + i) * N + j] = s;
        mag[(t * M + i) * N + j] = m;
      }
    }
  }
  const shape = [...batch, ...(a.shape.length > 1 ? [M] : []), ...(b.shape.length > 1 ? [N] : [])];
  return { out: { shape, data: out }, mag: { shape, data: mag } };
}

/** x @ wᵀ + bias with x [..., in], w [out, in]. */
export function linearRef(x: Ref, w: Ref, bias: Ref | null): ProductRef {
  const [O, I] = w.shape as [number, number];
  const rows = size(x.shape) / I;
  const out = new Float64Array(rows * O), mag = new Float64Array(rows * O);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < O; o++) {
      let s = bias ? bias.data[o]! : 0, m = Math.abs(s);
      for (let i = 0; i < I; i++) {
        const p = x.data[r * I + i]! * w.data[o * I + i]!;
        s += p;
        m += Math.abs(p);
      }
      out[r * O + o] = s;
      mag[r * O + o] = m;
    }
  }
  const shape = [...x.shape.slice(0, -1), O];
  return { out: { shape, data: out }, mag: { shape, data: mag } };
}

/**
 * The absolute error a product may carry from its summation: a kernel that accumulates in float32
 * (WebGPU does; the CPU GEMM accumulates in double) is within Higham's γ_K·Σ|a·b| ≈ K·2⁻²⁴·Σ|a·b| of
 * the exact value. Taken at the largest Σ|a·b| of the result, on top of the output dtype's rounding.
 */
export function accumulationAtol(k: number, mag: Ref): number {
  let max = 0;
  for (const m of mag.data) max = Math.max(max, m);
  return k * 2 ** -24 * max;
}
