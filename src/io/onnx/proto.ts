import protobuf from 'protobufjs/light.js';
import { SinterError } from '../../errors.js';
import { ONNX_SCHEMA } from './schema.js';

// The decoded forms of the ONNX messages this importer reads (protobufjs's toObject with camelCase names,
// int64 as numbers, empty arrays for absent repeated fields). Fields not listed are decoded and ignored.

export interface TensorProto {
  dims: number[];
  dataType?: number;
  floatData: number[];
  int32Data: number[];
  stringData: Uint8Array[];
  int64Data: number[];
  name?: string;
  rawData?: Uint8Array;
  doubleData: number[];
  uint64Data: number[];
  externalData: { key?: string; value?: string }[];
  /** 1 = EXTERNAL. */
  dataLocation?: number;
}

export interface TensorShapeProto {
  dim: { dimValue?: number; dimParam?: string }[];
}

export interface TypeProto {
  tensorType?: { elemType?: number; shape?: TensorShapeProto };
  sequenceType?: object;
  mapType?: object;
  optionalType?: object;
  sparseTensorType?: object;
}

export interface ValueInfoProto {
  name?: string;
  type?: TypeProto;
}

/** AttributeProto.AttributeType. */
export const ATTR = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, GRAPH: 5, FLOATS: 6, INTS: 7, STRINGS: 8, SPARSE_TENSOR: 11, TYPE_PROTO: 13 } as const;

export interface AttributeProto {
  name?: string;
  refAttrName?: string;
  type?: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  t?: TensorProto;
  g?: GraphProto;
  sparseTensor?: object;
  floats: number[];
  ints: number[];
  strings: Uint8Array[];
  tensors: TensorProto[];
  graphs: GraphProto[];
}

export interface NodeProto {
  input: string[];
  output: string[];
  name?: string;
  opType?: string;
  domain?: string;
  attribute: AttributeProto[];
}

export interface GraphProto {
  node: NodeProto[];
  name?: string;
  initializer: TensorProto[];
  sparseInitializer: object[];
  input: ValueInfoProto[];
  output: ValueInfoProto[];
  valueInfo: ValueInfoProto[];
}

export interface OperatorSetIdProto {
  domain?: string;
  version?: number;
}

export interface ModelProto {
  irVersion?: number;
  opsetImport: OperatorSetIdProto[];
  producerName?: string;
  producerVersion?: string;
  graph?: GraphProto;
  functions: { name?: string; domain?: string }[];
}

// The descriptor carries protobufjs-cli's extra 'protoName' keys, which its INamespace type does not list.
const root = protobuf.Root.fromJSON(ONNX_SCHEMA as protobuf.INamespace);
const modelType = root.lookupType('onnx.ModelProto');
const tensorType = root.lookupType('onnx.TensorProto');
const OPTIONS: protobuf.IConversionOptions = { longs: Number, arrays: true };

function decode<T>(type: protobuf.Type, bytes: Uint8Array, what: string): T {
  let message: protobuf.Message;
  try {
    message = type.decode(bytes);
  } catch (e) {
    throw new SinterError('loadOnnx', `the bytes are not a valid ONNX ${what} (protobuf decoding failed: ${(e as Error).message})`);
  }
  return type.toObject(message, OPTIONS) as T;
}

/** Parses a serialised onnx.ModelProto. */
export function decodeModel(bytes: Uint8Array): ModelProto {
  return decode<ModelProto>(modelType, bytes, 'model (ModelProto)');
}

/** Parses a serialised onnx.TensorProto (as in the ONNX test data's .pb files). */
export function decodeTensorProto(bytes: Uint8Array): TensorProto {
  return decode<TensorProto>(tensorType, bytes, 'tensor (TensorProto)');
}
