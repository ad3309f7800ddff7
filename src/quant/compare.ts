import { SinterError } from '../errors.js';
import { synchronize } from '../backend/device.js';
import type { Storage } from '../backend/backend.js';
import { Tensor } from '../tensor/tensor.js';
import { Module } from '../nn/module.js';
import { OnnxModel } from '../io/onnx/model.js';
import { QuantizedLayer } from './static.js';
import { type LayerComparison, type PreparedGraph, type QuantizedGraph, floatGraphBytes, graphStateOf, layerSqnr } from './graph.js';

// sn.quant.compare: what quantisation cost (output error) and bought (bytes, latency), side by side.

/**
 * A model to compare: an nn.Module, a function of tensors returning a tensor or tensors (arrays or objects of
 * them, as a prepared or converted graph returns), or a model from loadOnnx (fed the batch's tensors in the order
 * of its inputs).
 */
export type Comparable = Module | OnnxModel | PreparedGraph | QuantizedGraph | ((...inputs: Tensor[]) => unknown);

export interface OutputComparison {
  maxAbsError: number;
  /** Cosine similarity of all values of this output over all batches. */
  cosine: number;
  /** Signal-to-quantisation-noise ratio, 10·log10(Σref² / Σ(ref − q)²), in dB (Infinity when equal). */
  sqnrDb: number;
  /** Fraction of rows whose argmax over the last dim agrees, when the output looks like class scores (≥ 2 dims, ≥ 2 classes). */
  top1Agreement: number | null;
}

export type { LayerComparison } from './graph.js';

export interface CompareReport {
  /** Bytes of parameters and buffers (null for plain functions). */
  referenceBytes: number | null;
  quantizedBytes: number | null;
  outputs: OutputComparison[];
  /** Mean warm latency per batch in milliseconds (each call synchronised with its device). */
  referenceMs: number;
  quantizedMs: number;
  batches: number;
  /**
   * Per-layer SQNR where layers correspond: when `quantized` came from sn.quant.convert on a traced graph, each
   * int8 layer's output against the same value of its float graph on the same batches; else null.
   */
  layers: LayerComparison[] | null;
  toString(): string;
}

/** Bytes of a module's parameters and buffers (each storage once), int8 weights of converted layers included. */
export function modelBytes(model: Module): number {
  const storages = new Set<Storage>();
  for (const t of [...model.parameters(), ...model.buffers()]) if (!t.isDisposed) storages.add(t.storage);
  for (const m of model.modules()) {
    if (m instanceof QuantizedLayer) {
      const w = m.weight.intRepr();
      storages.add(w.storage);
      w.dispose();
    }
  }
  let bytes = 0;
  for (const s of storages) bytes += s.byteLength;
  return bytes;
}

/** Bytes of what a model reads: parameters and buffers, a graph's constants; null for plain functions. */
function bytesOf(model: Comparable): number | null {
  if (model instanceof Module) return modelBytes(model);
  if (model instanceof OnnxModel) {
    const seen = new Set<Storage>();
    for (const n of model.graph.nodes) if (n.kind === 'constant') seen.add(n.tensor.storage);
    return [...seen].reduce((a, st) => a + st.byteLength, 0);
  }
  if (graphStateOf(model)) return 'modelBytes' in model ? (model as QuantizedGraph).modelBytes() : floatGraphBytes(model as PreparedGraph);
  return null;
}

/** Tensors of a result in order: a tensor, or arrays/objects of them. */
function tensorsOf(out: unknown, list: Tensor[] = []): Tensor[] | null {
  if (out instanceof Tensor) list.push(out);
  else if (Array.isArray(out)) for (const o of out) { if (!tensorsOf(o, list)) return null; }
  else if (out && typeof out === 'object') for (const o of Object.values(out)) { if (!tensorsOf(o, list)) return null; }
  else return null;
  return list;
}

async function run(model: Comparable, inputs: Tensor[]): Promise<Tensor[]> {
  let out: unknown;
  if (model instanceof Module) out = (model.forward as (...x: Tensor[]) => unknown)(...inputs);
  else if (model instanceof OnnxModel) {
    if (inputs.length !== model.inputs.length) throw new SinterError('compare', `the ONNX model takes ${model.inputs.length} inputs, but a batch holds ${inputs.length} tensors`);
    const outs = await model.run(Object.fromEntries(model.inputs.map((info, i) => [info.name, inputs[i]!])));
    out = model.outputs.map((o) => outs[o.name]);
  } else out = (model as (...x: Tensor[]) => unknown)(...inputs);
  const list = tensorsOf(out);
  if (!list || list.length === 0) throw new SinterError('compare', 'the models must return a tensor, or arrays/objects of tensors');
  return list;
}

async function timed(model: Comparable, inputs: Tensor[]): Promise<[Tensor[], number]> {
  const t0 = performance.now();
  const out = await run(model, inputs);
  await synchronize(out[0]?.device ?? inputs[0]?.device);
  return [out, performance.now() - t0];
}

/**
 * Runs both models on each batch (a tensor or an array of input tensors) and reports model bytes, per
 * output the max abs error, cosine similarity, SQNR and top-1 agreement, and the warm latency of each
 * (the first batch also warms up; every batch is timed).
 */
export async function compare(reference: Comparable, quantized: Comparable, batches: readonly (Tensor | readonly Tensor[])[]): Promise<CompareReport> {
  if (batches.length === 0) throw new SinterError('compare', 'needs at least one batch of inputs');
  const acc: { maxAbs: number; dot: number; rr: number; qq: number; err: number; rows: number; agree: number; classes: boolean }[] = [];
  let refMs = 0, qMs = 0;
  const list = batches.map((b) => (b instanceof Tensor ? [b] : [...b]));
  for (const model of [reference, quantized]) for (const o of await run(model, list[0]!)) o.dispose(); // warm-up
  for (const inputs of list) {
    const [r, tr] = await timed(reference, inputs);
    const [q, tq] = await timed(quantized, inputs);
    refMs += tr;
    qMs += tq;
    if (r.length !== q.length) throw new SinterError('compare', `the reference returned ${r.length} outputs and the quantised model ${q.length}`);
    for (let i = 0; i < r.length; i++) {
      if (r[i]!.shape.join() !== q[i]!.shape.join()) throw new SinterError('compare', `output ${i} has shape [${r[i]!.shape}] in the reference but [${q[i]!.shape}] quantised`);
      const [a, b] = [await r[i]!.data(), await q[i]!.data()];
      const s = (acc[i] ??= { maxAbs: 0, dot: 0, rr: 0, qq: 0, err: 0, rows: 0, agree: 0, classes: r[i]!.ndim >= 2 && r[i]!.shape[r[i]!.ndim - 1]! >= 2 });
      for (let k = 0; k < a.length; k++) {
        const d = a[k]! - b[k]!;
        s.maxAbs = Math.max(s.maxAbs, Math.abs(d));
        s.dot += a[k]! * b[k]!;
        s.rr += a[k]! * a[k]!;
        s.qq += b[k]! * b[k]!;
        s.err += d * d;
      }
      if (s.classes) {
        const c = r[i]!.shape[r[i]!.ndim - 1]!;
        for (let row = 0; row < a.length / c; row++) {
          let ia = 0, ib = 0;
          for (let k = 1; k < c; k++) {
            if (a[row * c + k]! > a[row * c + ia]!) ia = k;
            if (b[row * c + k]! > b[row * c + ib]!) ib = k;
          }
          s.rows++;
          if (ia === ib) s.agree++;
        }
      }
    }
    for (const t of [...r, ...q]) t.dispose();
  }
  const outputs = acc.map((s) => ({
    maxAbsError: s.maxAbs,
    cosine: s.rr === 0 || s.qq === 0 ? (s.rr === s.qq ? 1 : 0) : s.dot / Math.sqrt(s.rr * s.qq),
    sqnrDb: s.err === 0 ? Infinity : 10 * Math.log10(s.rr / s.err),
    top1Agreement: s.classes ? s.agree / s.rows : null,
  }));
  const report = {
    referenceBytes: bytesOf(reference),
    quantizedBytes: bytesOf(quantized),
    outputs,
    referenceMs: refMs / list.length,
    quantizedMs: qMs / list.length,
    batches: list.length,
    layers: await layerSqnr(quantized as QuantizedGraph, list),
    toString: () => formatReport(report),
  };
  return report;
}

function formatReport(r: Omit<CompareReport, 'toString'>): string {
  const bytes = (n: number | null) => (n === null ? '-' : n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(2)} MiB` : `${(n / 1024).toFixed(1)} KiB`);
  const rows = [
    ['', 'reference', 'quantized'],
    ['model bytes', bytes(r.referenceBytes), bytes(r.quantizedBytes) + (r.referenceBytes && r.quantizedBytes ? ` (${(r.quantizedBytes / r.referenceBytes).toFixed(2)}×)` : '')],
    [`latency (ms/batch, ${r.batches} batches)`, r.referenceMs.toFixed(2), r.quantizedMs.toFixed(2)],
  ];
  const width = [0, 1, 2].map((c) => Math.max(...rows.map((row) => row[c]!.length)));
  const lines = rows.map((row) => row.map((v, c) => v.padEnd(width[c]!)).join('  '));
  r.outputs.forEach((o, i) => {
    const top1 = o.top1Agreement === null ? '' : `, top-1 agreement ${(100 * o.top1Agreement).toFixed(1)}%`;
    lines.push(`output ${i}: max abs error ${o.maxAbsError.toPrecision(3)}, cosine ${o.cosine.toFixed(5)}, SQNR ${o.sqnrDb.toFixed(1)} dB${top1}`);
  });
  if (r.layers) {
    const w = Math.max(5, ...r.layers.map((l) => l.name.length));
    lines.push('', `${'layer'.padEnd(w)}  kind     SQNR (dB)`);
    for (const l of r.layers) lines.push(`${l.name.padEnd(w)}  ${l.kind.padEnd(7)}  ${l.sqnrDb.toFixed(1).padStart(9)}`);
  }
  return lines.join('\n');
}
