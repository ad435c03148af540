// A minimal protobuf *encoder*: just the wire types onnx.proto needs. Fields are written in the
// order the caller writes them, so the same calls always give the same bytes (deterministic models).
// Reference: https://protobuf.dev/programming-guides/encoding/

const WIRE_VARINT = 0;
const WIRE_64BIT = 1;
const WIRE_LEN = 2;
const WIRE_32BIT = 5;

const textEncoder = new TextEncoder();
const UINT64_MASK = (1n << 64n) - 1n;

/** Appends the base-128 varint of an unsigned or two's-complement 64-bit integer. */
function pushVarint(out: number[], value: number | bigint): void {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new RangeError(`varint: ${value} is not a safe integer`);
    if (value >= 0 && value < 0x80000000) {
      // Fast path: small non-negative numbers (tags, lengths, dims) without BigInt.
      let v = value;
      while (v >= 0x80) {
        out.push((v & 0x7f) | 0x80);
        v >>>= 7;
      }
      out.push(v);
      return;
    }
    value = BigInt(value);
  }
  // Negative int64 values are encoded as their 64-bit two's complement (always 10 bytes).
  let v = value & UINT64_MASK;
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
}

/** Encodes one varint on its own (exported for tests). */
export function encodeVarint(value: number | bigint): Uint8Array {
  const out: number[] = [];
  pushVarint(out, value);
  return Uint8Array.from(out);
}

/** Builds one protobuf message. Nested messages are built with their own writer and passed in. */
export class ProtoWriter {
  private readonly chunks: Uint8Array[] = [];
  private pending: number[] = [];
  private length = 0;

  private tag(field: number, wire: number): void {
    pushVarint(this.pending, field * 8 + wire);
  }
  private flushPending(): void {
    if (this.pending.length === 0) return;
    this.chunks.push(Uint8Array.from(this.pending));
    this.length += this.pending.length;
    this.pending = [];
  }
  private raw(bytes: Uint8Array): void {
    this.flushPending();
    this.chunks.push(bytes);
    this.length += bytes.length;
  }

  /** int32 / int64 / uint64 / enum / bool field. */
  varint(field: number, value: number | bigint | boolean): this {
    this.tag(field, WIRE_VARINT);
    pushVarint(this.pending, typeof value === 'boolean' ? (value ? 1 : 0) : value);
    return this;
  }

  float(field: number, value: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    this.tag(field, WIRE_32BIT);
    this.raw(b);
    return this;
  }

  double(field: number, value: number): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, value, true);
    this.tag(field, WIRE_64BIT);
    this.raw(b);
    return this;
  }

  bytes(field: number, value: Uint8Array): this {
    this.tag(field, WIRE_LEN);
    pushVarint(this.pending, value.length);
    this.raw(value);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, textEncoder.encode(value));
  }

  /** An embedded message (another writer, or already-encoded bytes). */
  message(field: number, value: ProtoWriter | Uint8Array): this {
    return this.bytes(field, value instanceof ProtoWriter ? value.finish() : value);
  }

  /** Packed repeated int32/int64/uint64/enum field. Writes nothing for an empty list. */
  packedVarints(field: number, values: readonly (number | bigint)[]): this {
    if (values.length === 0) return this;
    const body: number[] = [];
    for (const v of values) pushVarint(body, v);
    return this.bytes(field, Uint8Array.from(body));
  }

  /** Packed repeated float field. Writes nothing for an empty list. */
  packedFloats(field: number, values: readonly number[]): this {
    if (values.length === 0) return this;
    const b = new Uint8Array(values.length * 4);
    const view = new DataView(b.buffer);
    values.forEach((v, i) => view.setFloat32(i * 4, v, true));
    return this.bytes(field, b);
  }

  /** Packed repeated double field. Writes nothing for an empty list. */
  packedDoubles(field: number, values: readonly number[]): this {
    if (values.length === 0) return this;
    const b = new Uint8Array(values.length * 8);
    const view = new DataView(b.buffer);
    values.forEach((v, i) => view.setFloat64(i * 8, v, true));
    return this.bytes(field, b);
  }

  finish(): Uint8Array {
    this.flushPending();
    const out = new Uint8Array(this.length);
    let offset = 0;
    for (const c of this.chunks) {
      out.set(c, offset);
      offset += c.length;
    }
    return out;
  }
}
