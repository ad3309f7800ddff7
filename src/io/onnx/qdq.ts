import { ATTR, type AttributeProto, type GraphProto, type NodeProto, type TensorProto } from './proto.js';

// QDQ graphs (as onnxruntime's quantiser writes them) run on the integer kernels: a Conv or MatMul whose operands
// come from DequantizeLinear (the activation from any int8/uint8 tensor, the weight and an int32 bias from
// initializers) and whose only reader is a QuantizeLinear is the QLinearConv / QLinearMatMul of the same integers
// and scales, so the pattern is rewritten into that node before the graph is built: the integer GEMM of
// src/quant/gemm.ts then runs it (int32 accumulation, requantised), instead of dequantising to float and
// convolving in float. The DequantizeLinear nodes that fed only rewritten nodes go too.

/** ONNX TensorProto data types of the 8-bit integers the integer kernels take, and of int32 biases. */
const INT8_TYPES = new Set([2, 3]); // UINT8, INT8
const INT32 = 6;

const isDefault = (n: NodeProto) => n.domain === undefined || n.domain === '' || n.domain === 'ai.onnx';

function intAttr(n: NodeProto, name: string, dflt: number): number {
  const a = n.attribute.find((x) => x.name === name);
  return a?.i ?? dflt;
}

function numel(t: TensorProto): number {
  return t.dims.reduce((a, d) => a * Number(d), 1);
}

export interface QdqRewrite {
  graph: GraphProto;
  /** The Conv/MatMul nodes rewritten (their names, or their op and output when unnamed). */
  rewritten: string[];
}

/** Rewrites every QDQ Conv/MatMul of `g` into QLinearConv/QLinearMatMul (a new graph; `g` is not changed). */
export function rewriteQdq(g: GraphProto): QdqRewrite {
  const producer = new Map<string, NodeProto>();
  const readers = new Map<string, NodeProto[]>();
  for (const n of g.node) {
    for (const o of n.output) producer.set(o, n);
    for (const i of n.input) if (i) readers.set(i, [...(readers.get(i) ?? []), n]);
  }
  const outputs = new Set(g.output.map((o) => o.name ?? ''));
  const inits = new Map(g.initializer.map((t) => [t.name ?? '', t]));
  const dq = (name: string | undefined): NodeProto | null => {
    const p = name ? producer.get(name) : undefined;
    return p && isDefault(p) && p.opType === 'DequantizeLinear' && p.input.length >= 3 && p.input[2] && intAttr(p, 'block_size', 0) === 0 ? p : null;
  };
  /** A scalar initializer (a per-tensor scale or zero point). */
  const scalar = (name: string) => {
    const t = inits.get(name);
    return t !== undefined && numel(t) === 1;
  };
  const zeroPointType = (name: string) => inits.get(name)?.dataType;

  const replace = new Map<NodeProto, NodeProto | null>();
  const rewritten: string[] = [];
  for (const n of g.node) {
    if (!isDefault(n) || (n.opType !== 'Conv' && n.opType !== 'MatMul')) continue;
    const conv = n.opType === 'Conv';
    const x = dq(n.input[0]), w = dq(n.input[1]);
    const users = readers.get(n.output[0]!) ?? [];
    const q = users.length === 1 && isDefault(users[0]!) && users[0]!.opType === 'QuantizeLinear' && users[0]!.input.length >= 3 && users[0]!.input[2] ? users[0]! : null;
    if (!x || !w || !q || outputs.has(n.output[0]!)) continue;
    // Activations per tensor (scalar scale and zero point, 8-bit); the weight an 8-bit initializer, per tensor or
    // per output channel (axis 0 of a conv weight [M, C, kH, kW], axis 1 of a matmul weight [K, N]).
    const [xq, xs, xz] = x.input as [string, string, string];
    const [wq, ws, wz] = w.input as [string, string, string];
    const [, ys, yz] = q.input as [string, string, string];
    if (![xs, xz, ys, yz].every(scalar) || !INT8_TYPES.has(zeroPointType(xz) ?? 0) || !INT8_TYPES.has(zeroPointType(yz) ?? 0)) continue;
    const weight = inits.get(wq);
    if (!weight || !INT8_TYPES.has(weight.dataType ?? 0) || !inits.has(ws) || !inits.has(wz)) continue;
    const perChannel = !scalar(ws);
    if (perChannel && intAttr(w, 'axis', 1) !== (conv ? 0 : 1)) continue;
    if (!conv && weight.dims.length !== 2) continue;
    const inputs = [xq, xs, xz, wq, ws, wz, ys, yz];
    if (conv && n.input[2]) {
      // The bias: int32 integers at scale x_scale·w_scale, as QLinearConv takes them.
      const b = dq(n.input[2]);
      const bias = b && inits.get(b.input[0]!);
      if (!b || !bias || bias.dataType !== INT32) continue;
      inputs.push(b.input[0]!);
    }
    const fused: NodeProto = {
      input: inputs,
      output: [q.output[0]!],
      name: `${n.name || n.opType}/qdq`,
      opType: conv ? 'QLinearConv' : 'QLinearMatMul',
      domain: '',
      attribute: conv ? n.attribute.filter((a: AttributeProto) => a.type !== ATTR.GRAPH) : [],
    };
    replace.set(n, fused);
    replace.set(q, null);
    rewritten.push(n.name || `${n.opType} → ${n.output[0]}`);
  }
  if (rewritten.length === 0) return { graph: g, rewritten };
  let nodes = g.node.flatMap((n) => (replace.has(n) ? (replace.get(n) ? [replace.get(n)!] : []) : [n]));
  // DequantizeLinear nodes nothing reads any more (the rewritten nodes' operands) go, until none is left.
  for (;;) {
    const read = new Set(nodes.flatMap((n) => n.input));
    const kept = nodes.filter((n) => !(isDefault(n) && n.opType === 'DequantizeLinear' && !n.output.some((o) => read.has(o) || outputs.has(o))));
    if (kept.length === nodes.length) break;
    nodes = kept;
  }
  return { graph: { ...g, node: nodes }, rewritten };
}
