// onnx.proto messages as plain objects, and their encoders. Field numbers are those of
// https://github.com/onnx/onnx/blob/main/onnx/onnx.proto (only the fields this project writes).
import { ProtoWriter } from './protobuf.js';

export type DType = 'float32' | 'int64' | 'int32' | 'uint8';

/** TensorProto.DataType values. */
export const DATA_TYPE: Record<DType, number> = { float32: 1, uint8: 2, int32: 6, int64: 7 };

/** AttributeProto.AttributeType values. */
export const ATTR_TYPE = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, FLOATS: 6, INTS: 7, STRINGS: 8 } as const;

export interface TensorProto {
  name?: string;
  dtype: DType;
  dims: number[];
  /** Little-endian element bytes (raw_data). */
  raw: Uint8Array;
}

export type AttributeProto =
  | { name: string; type: 'FLOAT'; f: number }
  | { name: string; type: 'INT'; i: number | bigint }
  | { name: string; type: 'STRING'; s: string }
  | { name: string; type: 'TENSOR'; t: TensorProto }
  | { name: string; type: 'FLOATS'; floats: number[] }
  | { name: string; type: 'INTS'; ints: (number | bigint)[] }
  | { name: string; type: 'STRINGS'; strings: string[] };

export interface NodeProto {
  opType: string;
  inputs: string[];
  outputs: string[];
  name?: string;
  domain?: string;
  attributes: AttributeProto[];
}

export interface ValueInfoProto {
  name: string;
  dtype: DType;
  /** A number is a fixed size, a string a symbolic dimension (e.g. 'batch'). */
  dims: (number | string)[];
}

export interface GraphProto {
  name: string;
  nodes: NodeProto[];
  initializers: TensorProto[];
  inputs: ValueInfoProto[];
  outputs: ValueInfoProto[];
  docString?: string;
}

export interface ModelProto {
  irVersion: number;
  opsets: { domain: string; version: number }[];
  producerName?: string;
  producerVersion?: string;
  docString?: string;
  metadata?: Record<string, string>;
  graph: GraphProto;
}

export function encodeTensor(t: TensorProto): ProtoWriter {
  const w = new ProtoWriter();
  w.packedVarints(1, t.dims); // dims
  w.varint(2, DATA_TYPE[t.dtype]); // data_type
  if (t.name !== undefined) w.string(8, t.name); // name
  w.bytes(9, t.raw); // raw_data
  return w;
}

export function encodeAttribute(a: AttributeProto): ProtoWriter {
  const w = new ProtoWriter();
  w.string(1, a.name);
  switch (a.type) {
    case 'FLOAT':
      w.float(2, a.f);
      break;
    case 'INT':
      w.varint(3, a.i);
      break;
    case 'STRING':
      w.string(4, a.s);
      break;
    case 'TENSOR':
      w.message(5, encodeTensor(a.t));
      break;
    case 'FLOATS':
      w.packedFloats(7, a.floats);
      break;
    case 'INTS':
      w.packedVarints(8, a.ints);
      break;
    case 'STRINGS':
      for (const s of a.strings) w.string(9, s);
      break;
  }
  w.varint(20, ATTR_TYPE[a.type]); // type: required since IR version 3
  return w;
}

export function encodeNode(n: NodeProto): ProtoWriter {
  const w = new ProtoWriter();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  if (n.name !== undefined) w.string(3, n.name);
  w.string(4, n.opType);
  for (const a of n.attributes) w.message(5, encodeAttribute(a));
  if (n.domain) w.string(7, n.domain);
  return w;
}

export function encodeValueInfo(v: ValueInfoProto): ProtoWriter {
  const shape = new ProtoWriter();
  for (const d of v.dims) {
    const dim = new ProtoWriter();
    if (typeof d === 'number') dim.varint(1, d); // dim_value
    else dim.string(2, d); // dim_param
    shape.message(1, dim);
  }
  const tensorType = new ProtoWriter().varint(1, DATA_TYPE[v.dtype]).message(2, shape); // elem_type, shape
  const type = new ProtoWriter().message(1, tensorType); // TypeProto.tensor_type
  return new ProtoWriter().string(1, v.name).message(2, type);
}

export function encodeGraph(g: GraphProto): ProtoWriter {
  const w = new ProtoWriter();
  for (const n of g.nodes) w.message(1, encodeNode(n));
  w.string(2, g.name);
  for (const t of g.initializers) w.message(5, encodeTensor(t));
  if (g.docString) w.string(10, g.docString);
  for (const i of g.inputs) w.message(11, encodeValueInfo(i));
  for (const o of g.outputs) w.message(12, encodeValueInfo(o));
  return w;
}

export function encodeModel(m: ModelProto): Uint8Array {
  const w = new ProtoWriter();
  w.varint(1, m.irVersion);
  if (m.producerName !== undefined) w.string(2, m.producerName);
  if (m.producerVersion !== undefined) w.string(3, m.producerVersion);
  if (m.docString !== undefined) w.string(6, m.docString);
  w.message(7, encodeGraph(m.graph));
  for (const o of m.opsets) w.message(8, new ProtoWriter().string(1, o.domain).varint(2, o.version));
  // Sorted keys so the bytes do not depend on how the caller built the object.
  for (const key of Object.keys(m.metadata ?? {}).sort()) {
    w.message(14, new ProtoWriter().string(1, key).string(2, m.metadata![key]!));
  }
  return w.finish();
}
