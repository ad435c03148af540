// GraphBuilder writes ONNX models from TypeScript, with no dependency: declare the graph inputs
// with input(), weights with initializer() (or constant() for an auto-named one), add operators
// with node() — it returns the name of the value it produces, so calls chain naturally — then
// declare the graph outputs with output() and call toBytes() for the model file (IR version 8,
// default opset 17). Attributes are inferred from their JS value: an integer is INT, any other
// number FLOAT, a string STRING, an array of integers INTS, other numeric arrays FLOATS, string
// arrays STRINGS, { tensor: {dtype, dims, data} } TENSOR; write { float: 1 } / { floats: [1, 2] }
// where the operator wants floats that happen to be whole (e.g. LeakyRelu alpha). To give a value
// a fixed name (graph outputs such as 'score'), pass { name } to node(). Example:
//   const g = new GraphBuilder();
//   const x = g.input('image', 'float32', [1, 1, 'h', 'w']);
//   const y = g.node('Relu', [x], {}, { name: 'y' });
//   g.output('y', 'float32', [1, 1, 'h', 'w']);
//   await ort.InferenceSession.create(Buffer.from(g.toBytes()));
// The same calls always give the same bytes, so generated models are reproducible.
import {
  encodeModel,
  type AttributeProto,
  type DType,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from './proto.js';

export type { DType } from './proto.js';

export type TensorData = Float32Array | BigInt64Array | Int32Array | Uint8Array | number[];

export interface TensorValue {
  dtype: DType;
  dims: number[];
  data: TensorData;
}

export type AttrValue =
  | number
  | string
  | number[]
  | string[]
  | { tensor: TensorValue }
  | { float: number }
  | { floats: number[] };

export interface ModelMeta {
  producerName?: string;
  producerVersion?: string;
  docString?: string;
  metadata?: Record<string, string>;
}

const IR_VERSION = 8;
/** Opset versions for non-default domains a node may name (ai.onnx.ml, com.microsoft). */
const DOMAIN_OPSETS: Record<string, number> = { 'ai.onnx.ml': 3, 'com.microsoft': 1 };

export class GraphBuilder {
  private readonly opset: number;
  private readonly name: string;
  private readonly inputs: ValueInfoProto[] = [];
  private readonly outputs: ValueInfoProto[] = [];
  private readonly initializers: TensorProto[] = [];
  private readonly nodes: NodeProto[] = [];
  /** Every value name in the graph (inputs, initializers, node outputs). */
  private readonly values = new Set<string>();
  private readonly domains = new Set<string>();
  private counter = 0;

  constructor(opts: { opset?: number; name?: string } = {}) {
    this.opset = opts.opset ?? 17;
    this.name = opts.name ?? 'graph';
  }

  input(name: string, dtype: DType, dims: (number | string)[]): string {
    this.claim(name);
    this.inputs.push({ name, dtype, dims: checkDims(dims, name) });
    return name;
  }

  initializer(name: string, dtype: DType, dims: number[], data: TensorData): string {
    this.claim(name);
    this.initializers.push(makeTensor(dtype, dims, data, name));
    return name;
  }

  /** An initializer with a generated unique name. */
  constant(dtype: DType, dims: number[], data: TensorData): string {
    return this.initializer(this.fresh('const'), dtype, dims, data);
  }

  /**
   * Adds an operator and returns its (first) output. `opts.name` names the node and its output;
   * with opts.outputs > 1 the further outputs get generated names (see nodeMulti for all of them).
   */
  node(
    op: string,
    inputs: string[],
    attrs: Record<string, AttrValue> = {},
    opts: { outputs?: number; name?: string; domain?: string } = {},
  ): string {
    return this.addNode(op, inputs, attrs, opts.outputs ?? 1, opts.name, opts.domain)[0]!;
  }

  /** Adds an operator with several outputs (e.g. TopK, Split) and returns all output names. */
  nodeMulti(op: string, inputs: string[], attrs: Record<string, AttrValue>, outputs: number): string[] {
    // A copy: the node keeps its own list, which a caller must not be able to change.
    return [...this.addNode(op, inputs, attrs, outputs)];
  }

  /** Declares an existing value (a node output, usually named with node(..., { name })) a graph output. */
  output(name: string, dtype: DType, dims: (number | string)[]): void {
    if (!this.values.has(name)) {
      throw new Error(`output '${name}': no value of that name (give the node { name: '${name}' })`);
    }
    if (this.outputs.some((o) => o.name === name)) throw new Error(`output '${name}' declared twice`);
    this.outputs.push({ name, dtype, dims: checkDims(dims, name) });
  }

  toBytes(meta: ModelMeta = {}): Uint8Array {
    if (this.outputs.length === 0) throw new Error('graph has no outputs: call output()');
    const opsets = [{ domain: '', version: this.opset }];
    for (const d of [...this.domains].sort()) opsets.push({ domain: d, version: DOMAIN_OPSETS[d] ?? 1 });
    return encodeModel({
      irVersion: IR_VERSION,
      opsets,
      producerName: meta.producerName ?? 'linesight',
      producerVersion: meta.producerVersion,
      docString: meta.docString,
      metadata: meta.metadata,
      graph: {
        name: this.name,
        nodes: this.nodes,
        initializers: this.initializers,
        inputs: this.inputs,
        outputs: this.outputs,
      },
    });
  }

  private addNode(
    op: string,
    inputs: string[],
    attrs: Record<string, AttrValue>,
    outputCount: number,
    name?: string,
    domain?: string,
  ): string[] {
    // '' is ONNX's "optional input left out"; anything else must already exist, so typos fail here
    // rather than as an opaque onnxruntime load error.
    for (const i of inputs) {
      if (i !== '' && !this.values.has(i)) throw new Error(`${op}: unknown input '${i}'`);
    }
    if (!Number.isInteger(outputCount) || outputCount < 1) throw new Error(`${op}: outputs must be >= 1`);
    const nodeName = name ?? this.fresh(op.toLowerCase());
    const outputs: string[] = [];
    for (let k = 0; k < outputCount; k++) {
      const out = k === 0 && name !== undefined ? name : k === 0 ? nodeName : this.fresh(`${nodeName}_out`);
      this.claim(out);
      outputs.push(out);
    }
    if (domain) this.domains.add(domain);
    this.nodes.push({
      opType: op,
      inputs: [...inputs],
      outputs,
      name: nodeName,
      domain,
      attributes: Object.entries(attrs).map(([k, v]) => toAttribute(k, v, op)),
    });
    return outputs;
  }

  private claim(name: string): void {
    if (!name) throw new Error('value names must not be empty');
    if (this.values.has(name)) throw new Error(`value '${name}' already exists`);
    this.values.add(name);
  }

  /** A name not used yet: prefix_N. */
  private fresh(prefix: string): string {
    let n: string;
    do n = `${prefix}_${this.counter++}`;
    while (this.values.has(n));
    return n;
  }
}

function checkDims(dims: (number | string)[], what: string): (number | string)[] {
  for (const d of dims) {
    if (typeof d === 'number' && !(Number.isInteger(d) && d >= 0)) throw new Error(`${what}: bad dimension ${d}`);
    if (typeof d === 'string' && d === '') throw new Error(`${what}: empty symbolic dimension`);
  }
  return [...dims];
}

function toAttribute(name: string, v: AttrValue, op: string): AttributeProto {
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return { name, type: 'FLOAT', f: v };
    return Number.isInteger(v) ? { name, type: 'INT', i: v } : { name, type: 'FLOAT', f: v };
  }
  if (typeof v === 'string') return { name, type: 'STRING', s: v };
  if (Array.isArray(v)) {
    if (v.every((x): x is string => typeof x === 'string')) {
      // An empty array is ambiguous: ONNX attributes that may be empty lists are ints (pads, axes).
      if (v.length > 0) return { name, type: 'STRINGS', strings: v };
    }
    if (v.some((x) => typeof x !== 'number')) throw new Error(`${op}.${name}: mixed array attribute`);
    const nums = v as number[];
    return nums.every(Number.isInteger) ? { name, type: 'INTS', ints: nums } : { name, type: 'FLOATS', floats: nums };
  }
  if ('float' in v) return { name, type: 'FLOAT', f: v.float };
  if ('floats' in v) return { name, type: 'FLOATS', floats: v.floats };
  if ('tensor' in v) return { name, type: 'TENSOR', t: makeTensor(v.tensor.dtype, v.tensor.dims, v.tensor.data, `${op}.${name}`) };
  throw new Error(`${op}.${name}: unsupported attribute value`);
}

/** Converts data to little-endian raw bytes, checking the element count against dims. */
function makeTensor(dtype: DType, dims: number[], data: TensorData, name: string): TensorProto {
  const dimsChecked = checkDims(dims, name) as number[];
  const count = dimsChecked.reduce((a, b) => a * b, 1);
  if (data.length !== count) {
    throw new Error(`${name}: ${data.length} values for dims [${dims.join(', ')}] (${count} expected)`);
  }
  const size = dtype === 'int64' ? 8 : dtype === 'uint8' ? 1 : 4;
  const raw = new Uint8Array(count * size);
  const view = new DataView(raw.buffer);
  for (let i = 0; i < count; i++) {
    const x = data[i]!;
    switch (dtype) {
      case 'float32':
        view.setFloat32(i * 4, Number(x), true);
        break;
      case 'int32':
        view.setInt32(i * 4, toInteger(x, name, -0x80000000, 0x7fffffff), true);
        break;
      case 'uint8':
        view.setUint8(i, toInteger(x, name, 0, 255));
        break;
      case 'int64':
        view.setBigInt64(i * 8, typeof x === 'bigint' ? x : BigInt(toInteger(x, name, Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)), true);
        break;
    }
  }
  return { name, dtype, dims: dimsChecked, raw };
}

function toInteger(x: number | bigint, name: string, min: number, max: number): number {
  const n = Number(x);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name}: ${x} is not an integer in [${min}, ${max}]`);
  return n;
}
