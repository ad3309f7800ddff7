import protobuf from 'protobufjs/light.js';
import type { Tensor } from '../src/index.js';
import { ONNX_SCHEMA } from '../src/io/onnx/schema.js';

// ONNX models for tests, built with protobufjs and ONNX's schema the way an exporter writes them.


const root = protobuf.Root.fromJSON(ONNX_SCHEMA as protobuf.INamespace);
const ModelProto = root.lookupType('onnx.ModelProto');
export const TYPE = { float32: 1, uint8: 2, int8: 3, int32: 6, int64: 7, bool: 9, float16: 10, float64: 11, uint64: 13 } as const;

export type Attr = { name: string; type: number; i?: number; f?: number; s?: Uint8Array; ints?: number[]; floats?: number[]; t?: object; g?: object };
export const ints = (name: string, v: number[]): Attr => ({ name, type: 7, ints: v });
export const int = (name: string, v: number): Attr => ({ name, type: 2, i: v });
export const float = (name: string, v: number): Attr => ({ name, type: 1, f: v });
export const str = (name: string, v: string): Attr => ({ name, type: 3, s: new TextEncoder().encode(v) });

export function info(name: string, type: keyof typeof TYPE, shape: (number | string)[]) {
  return { name, type: { tensorType: { elemType: TYPE[type], shape: { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } } };
}
export function node(opType: string, input: string[], output: string[], attribute: Attr[] = [], domain = '') {
  return { opType, input, output, attribute, domain, name: `${opType.toLowerCase()}_${output[0]}` };
}
/** A float32 initializer stored as raw little-endian bytes. */
export function rawFloat(name: string, dims: number[], values: number[]) {
  return { name, dims, dataType: TYPE.float32, rawData: new Uint8Array(new Float32Array(values).buffer) };
}
export interface GraphSpec {
  nodes: object[];
  inputs: object[];
  outputs: object[];
  initializers?: object[];
}

/** A GraphProto object for a graph attribute (If branches, Loop and Scan bodies). */
export function graph(g: GraphSpec, name = 'body'): object {
  return { name, node: g.nodes, input: g.inputs, output: g.outputs, initializer: g.initializers ?? [] };
}

/** A graph attribute. */
export const graphAttr = (name: string, g: object): Attr => ({ name, type: 5, g });

export function model(g: GraphSpec, opsets: Record<string, number> = { '': 17 }): Uint8Array {
  return ModelProto.encode(ModelProto.fromObject({
    irVersion: 8,
    opsetImport: Object.entries(opsets).map(([domain, version]) => ({ domain, version })),
    graph: { name: 'test', node: g.nodes, input: g.inputs, output: g.outputs, initializer: g.initializers ?? [] },
  })).finish();
}

export async function values(t: Tensor): Promise<number[]> {
  return Array.from(await t.data());
}

