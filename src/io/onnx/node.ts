import { SinterError } from '../../errors.js';
import type { OnnxGraph } from './graph.js';
import { ATTR, type AttributeProto, type GraphProto, type NodeProto } from './proto.js';
import { HostTensor, type OnnxDType, fromTensorProto, onnxDType } from './tensor.js';

const text = new TextDecoder();

/** One ONNX node as handlers see it: its op, the opset of its domain, its input/output names and typed attribute access. */
export class OnnxNode {
  readonly opType: string;
  /** '' for the default domain (ai.onnx). */
  readonly domain: string;
  readonly name: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  private readonly attrs: Map<string, AttributeProto>;
  /** The built graphs of its graph attributes (If's branches, Loop's and Scan's bodies). */
  readonly subgraphs = new Map<string, OnnxGraph>();

  constructor(
    proto: NodeProto,
    readonly opset: number,
    readonly index: number,
    /** Where the node is, for messages: '' in the model's graph, "node 3 (If) then_branch → " in a subgraph. */
    readonly where = '',
  ) {
    this.opType = proto.opType ?? '';
    this.domain = proto.domain === 'ai.onnx' ? '' : (proto.domain ?? '');
    this.name = proto.name ?? '';
    this.inputs = proto.input;
    this.outputs = proto.output;
    this.attrs = new Map(proto.attribute.map((a) => [a.name ?? '', a]));
  }

  /** "node 3 'conv1' (Conv, opset 13)", for messages. */
  describe(): string {
    return `${this.where}node ${this.index}${this.name ? ` '${this.name}'` : ''} (${this.domain ? `${this.domain}.` : ''}${this.opType}, opset ${this.opset})`;
  }

  fail(detail: string): never {
    throw new SinterError(this.opType, `${this.describe()}: ${detail}`);
  }

  has(name: string): boolean {
    return this.attrs.has(name);
  }

  private get(name: string, type: number, typeName: string): AttributeProto | undefined {
    const a = this.attrs.get(name);
    if (!a) return undefined;
    if (a.refAttrName) this.fail(`attribute '${name}' refers to a function attribute ('${a.refAttrName}'), which only exists inside function bodies`);
    // Old exporters leave `type` unset; the field that is present decides then.
    if (a.type !== undefined && a.type !== 0 && a.type !== type) this.fail(`attribute '${name}' must be ${typeName}, got attribute type ${a.type}`);
    return a;
  }

  int(name: string, fallback: number): number;
  int(name: string): number | undefined;
  int(name: string, fallback?: number): number | undefined {
    return this.get(name, ATTR.INT, 'an int')?.i ?? fallback;
  }

  float(name: string, fallback: number): number;
  float(name: string): number | undefined;
  float(name: string, fallback?: number): number | undefined {
    return this.get(name, ATTR.FLOAT, 'a float')?.f ?? fallback;
  }

  string(name: string, fallback: string): string;
  string(name: string): string | undefined;
  string(name: string, fallback?: string): string | undefined {
    const s = this.get(name, ATTR.STRING, 'a string')?.s;
    return s === undefined ? fallback : text.decode(s);
  }

  ints(name: string): number[] | undefined {
    return this.get(name, ATTR.INTS, 'a list of ints')?.ints;
  }

  floats(name: string): number[] | undefined {
    return this.get(name, ATTR.FLOATS, 'a list of floats')?.floats;
  }

  strings(name: string): string[] | undefined {
    return this.get(name, ATTR.STRINGS, 'a list of strings')?.strings.map((s) => text.decode(s));
  }

  graph(name: string): GraphProto | undefined {
    return this.get(name, ATTR.GRAPH, 'a graph')?.g;
  }

  /** The element type of a tensor attribute, read without decoding its values. */
  tensorType(name: string): OnnxDType | undefined {
    const t = this.get(name, ATTR.TENSOR, 'a tensor')?.t;
    return t && onnxDType(t.dataType, `attribute '${name}' of ${this.describe()}`);
  }

  tensor(name: string): HostTensor | undefined {
    const t = this.get(name, ATTR.TENSOR, 'a tensor')?.t;
    return t && fromTensorProto(t, `attribute '${name}' of ${this.describe()}`);
  }

  /** The attribute names present (for checks of unsupported ones). */
  attributeNames(): string[] {
    return [...this.attrs.keys()];
  }
}
