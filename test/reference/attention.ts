// float64 reference of scaled dot-product attention with PyTorch's mask semantics.
import { type Ref, broadcastShape, getBroadcast, ravel, ref, size, unravel } from './core.js';

/** softmax(q·kᵀ·scale + mask)·v; a bool mask (0/1 data) keeps keys where 1; causal keeps j ≤ i; rows with no key give NaN. */
export function sdpaRef(q: Ref, k: Ref, v: Ref, opts: { mask?: Ref; maskIsBool?: boolean; causal?: boolean; scale?: number }): Ref {
  const r = q.shape.length;
  const [L, E] = q.shape.slice(-2) as [number, number], S = k.shape[r - 2]!, Ev = v.shape[r - 1]!;
  const batch = broadcastShape(q.shape.slice(0, -2), k.shape.slice(0, -2), v.shape.slice(0, -2), ...(opts.mask && opts.mask.shape.length > 2 ? [opts.mask.shape.slice(0, -2)] : []));
  const scale = opts.scale ?? 1 / Math.sqrt(E);
  const outShape = [...batch, L, Ev];
  const out = new Float64Array(size(outShape));
  for (let b = 0; b < size(batch); b++) {
    const bi = unravel(b, batch);
    for (let i = 0; i < L; i++) {
      const s: number[] = [];
      for (let j = 0; j < S; j++) {
        let dot = 0;
        for (let e = 0; e < E; e++) dot += getBroadcast(q, [...bi, i, e]) * getBroadcast(k, [...bi, j, e]);
        let x = dot * scale;
        if (opts.causal && j > i) x = -Infinity;
        if (opts.mask) {
          const m = getBroadcast(opts.mask, [...bi, i, j]);
          if (opts.maskIsBool) x = m ? x : -Infinity;
          else x += m;
        }
        s.push(x);
      }
      const mx = Math.max(...s);
      const p = s.map((x) => Math.exp(x - mx));
      const total = p.reduce((a, c) => a + c, 0);
      for (let e = 0; e < Ev; e++) {
        let acc = 0;
        for (let j = 0; j < S; j++) if (p[j]) acc += p[j]! * getBroadcast(v, [...bi, j, e]);
        out[ravel([...bi, i, e], outShape)] = mx === -Infinity ? NaN : acc / total;
      }
    }
  }
  return ref(outShape, out);
}
