// The ONNX writer is checked end to end: models it writes must load in onnxruntime and compute
// what the same maths computes in plain JS.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { encodeVarint, ProtoWriter } from '../../src/onnx/protobuf.js';
import { readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { applyHead, HeadError } from '../../src/inference/heads.js';
import { buildModel, INPUT } from '../../src/models/build-film-demo.js';
import { brightest, detections, nan, redness } from '../fixtures/models/index.js';

const load = (g: GraphBuilder) => ort.InferenceSession.create(Buffer.from(g.toBytes()));

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-5): void {
  assert.equal(actual.length, expected.length, 'length');
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i]! - expected[i]!) <= tol, `index ${i}: ${actual[i]} vs ${expected[i]}`);
  }
}

/** Deterministic pseudo-random values in [-1, 1). */
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

test('protobuf varints: known encodings, including negative int64', () => {
  assert.deepEqual([...encodeVarint(0)], [0]);
  assert.deepEqual([...encodeVarint(1)], [1]);
  assert.deepEqual([...encodeVarint(300)], [0xac, 0x02]);
  assert.deepEqual([...encodeVarint(2 ** 35)], [0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
  assert.deepEqual([...encodeVarint(-1)], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
  assert.deepEqual([...encodeVarint(-2n)], [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
});

test('protobuf writer: field tags, float, double, strings, packed and nested messages', () => {
  const nested = new ProtoWriter().varint(1, 150);
  const bytes = new ProtoWriter()
    .varint(1, 150)
    .string(2, 'testing')
    .float(3, 1)
    .double(4, -2)
    .packedVarints(5, [3, 270])
    .packedFloats(6, [])
    .message(7, nested)
    .finish();
  assert.deepEqual(
    [...bytes],
    [
      0x08, 0x96, 0x01, // field 1 varint 150
      0x12, 0x07, ...Buffer.from('testing'), // field 2 len 7
      0x1d, 0x00, 0x00, 0x80, 0x3f, // field 3 fixed32 1.0f
      0x21, 0, 0, 0, 0, 0, 0, 0, 0xc0, // field 4 fixed64 -2.0
      0x2a, 0x03, 0x03, 0x8e, 0x02, // field 5 packed [3, 270]
      // field 6: an empty packed list is left out
      0x3a, 0x03, 0x08, 0x96, 0x01, // field 7 nested message
    ],
  );
});

test('Conv + Relu + GlobalAveragePool + Gemm + Softmax matches a JS reference', async () => {
  const [C, H, W, K, L] = [1, 5, 6, 2, 3]; // in channels, height, width, conv filters, classes
  const wConv = values(K * C * 3 * 3, 1);
  const bConv = values(K, 2);
  const wFc = values(L * K, 3);
  const bFc = values(L, 4);
  const image = values(C * H * W, 5);

  const g = new GraphBuilder({ name: 'tiny-classifier' });
  const x = g.input('image', 'float32', ['batch', C, H, W]);
  const conv = g.node('Conv', [x, g.constant('float32', [K, C, 3, 3], wConv), g.constant('float32', [K], bConv)], {
    kernel_shape: [3, 3],
    pads: [1, 1, 1, 1],
  });
  const pooled = g.node('GlobalAveragePool', [g.node('Relu', [conv])]);
  const flat = g.node('Flatten', [pooled], { axis: 1 });
  const logits = g.node('Gemm', [flat, g.initializer('fc.w', 'float32', [L, K], wFc), g.initializer('fc.b', 'float32', [L], bFc)], {
    transB: 1,
    alpha: { float: 1 },
  });
  g.node('Softmax', [logits], { axis: -1 }, { name: 'probs' });
  g.output('probs', 'float32', ['batch', L]);

  const session = await load(g);
  const input = session.inputMetadata[0]!;
  assert.ok(input.isTensor);
  assert.deepEqual(input.shape, ['batch', C, H, W]);
  const out = await session.run({ image: new ort.Tensor('float32', image, [1, C, H, W]) });
  const probs = out.probs!;
  assert.deepEqual(probs.dims, [1, L]);

  // Reference: same-padded 3x3 conv, relu, mean per filter, fully connected, softmax.
  const feat = new Array<number>(K).fill(0);
  for (let k = 0; k < K; k++) {
    for (let y = 0; y < H; y++) {
      for (let xx = 0; xx < W; xx++) {
        let acc = bConv[k]!;
        for (let dy = -1; dy <= 1; dy++) {
          for (let dx = -1; dx <= 1; dx++) {
            const yy = y + dy;
            const xs = xx + dx;
            if (yy < 0 || yy >= H || xs < 0 || xs >= W) continue;
            acc += image[yy * W + xs]! * wConv[k * 9 + (dy + 1) * 3 + (dx + 1)]!;
          }
        }
        feat[k]! += Math.max(0, acc) / (H * W);
      }
    }
  }
  const z = Array.from({ length: L }, (_, l) => bFc[l]! + feat.reduce((s, f, k) => s + f * wFc[l * K + k]!, 0));
  const e = z.map((v) => Math.exp(v - Math.max(...z)));
  const expected = e.map((v) => v / e.reduce((a, b) => a + b, 0));
  assertClose(probs.data as Float32Array, expected);
});

test('Add broadcasts a [3] row onto [2, 3]; ReduceMax with axes attribute (opset 17)', async () => {
  const g = new GraphBuilder();
  const a = g.input('a', 'float32', [2, 3]);
  const sum = g.node('Add', [a, g.constant('float32', [3], [10, 20, 30])], {}, { name: 'sum' });
  g.node('ReduceMax', [sum], { axes: [1], keepdims: 0 }, { name: 'rowmax' });
  g.node('ReduceMax', [sum], { keepdims: 1 }, { name: 'max' });
  g.output('sum', 'float32', [2, 3]);
  g.output('rowmax', 'float32', [2]);
  g.output('max', 'float32', [1, 1]);

  const out = await (await load(g)).run({ a: new ort.Tensor('float32', Float32Array.from([1, 2, 3, -4, 5, -60]), [2, 3]) });
  assertClose(out.sum!.data as Float32Array, [11, 22, 33, 6, 25, -30]);
  assertClose(out.rowmax!.data as Float32Array, [33, 25]);
  assert.deepEqual(out.max!.dims, [1, 1]);
  assertClose(out.max!.data as Float32Array, [33]);
});

test('ReduceMax with axes as an int64 input (opset 18)', async () => {
  const g = new GraphBuilder({ opset: 18 });
  const a = g.input('a', 'float32', [2, 2]);
  g.node('ReduceMax', [a, g.constant('int64', [1], new BigInt64Array([0n]))], { keepdims: 0 }, { name: 'colmax' });
  g.output('colmax', 'float32', [2]);
  const out = await (await load(g)).run({ a: new ort.Tensor('float32', Float32Array.from([1, 7, 4, -2]), [2, 2]) });
  assertClose(out.colmax!.data as Float32Array, [4, 7]);
});

test('integer tensors: uint8 input, int32 and int64 initializers, Cast and Reshape', async () => {
  const g = new GraphBuilder();
  const px = g.input('pixels', 'uint8', [1, 4]);
  const asInt = g.node('Cast', [px], { to: 6 }); // INT32
  const shifted = g.node('Add', [asInt, g.constant('int32', [4], Int32Array.from([-1, 0, 1, -100]))], {}, { name: 'shifted' });
  const asFloat = g.node('Cast', [px], { to: 1 }); // FLOAT
  const scaled = g.node('Mul', [asFloat, g.constant('float32', [], [1 / 255])]);
  g.node('Reshape', [scaled, g.constant('int64', [2], [2, -1])], {}, { name: 'grid' });
  g.node('Add', [px, g.constant('uint8', [1], new Uint8Array([1]))], {}, { name: 'plus1' });
  g.output('shifted', 'int32', [1, 4]);
  g.output('grid', 'float32', [2, 2]);
  g.output('plus1', 'uint8', [1, 4]);

  const out = await (await load(g)).run({ pixels: new ort.Tensor('uint8', Uint8Array.from([0, 51, 255, 100]), [1, 4]) });
  assert.deepEqual([...(out.shifted!.data as Int32Array)], [-1, 51, 256, 0]);
  assert.deepEqual(out.grid!.dims, [2, 2]);
  assertClose(out.grid!.data as Float32Array, [0, 0.2, 1, 100 / 255]);
  assert.deepEqual([...(out.plus1!.data as Uint8Array)], [1, 52, 0, 101]); // uint8 wraps
});

test('attribute kinds: TENSOR, FLOATS, INTS, FLOAT, INT, STRING, STRINGS (ai.onnx.ml domain)', async () => {
  const g = new GraphBuilder();
  const x = g.input('x', 'float32', [3]);
  const t = g.node('Constant', [], { value: { tensor: { dtype: 'float32', dims: [3], data: [0.5, 1, 2] } } });
  const whole = g.node('Constant', [], { value_floats: { floats: [1, 2, 3] } }); // forced FLOATS
  const frac = g.node('Constant', [], { value_floats: [0.25, 0.5, 0.75] }); // non-integers → FLOATS
  const leaky = g.node('LeakyRelu', [x], { alpha: 0.5 }); // FLOAT
  g.node('Add', [g.node('Mul', [leaky, t]), g.node('Add', [whole, frac])], {}, { name: 'y' });
  g.output('y', 'float32', [3]);
  // STRING attribute (Pad mode) and INTS (Constant value_ints → int64 pads).
  g.node('Pad', [x, g.node('Constant', [], { value_ints: [1, 1] })], { mode: 'edge' }, { name: 'padded' });
  g.output('padded', 'float32', [5]);
  // STRINGS: int64 → string → int64 through two CategoryMappers of the ai.onnx.ml domain.
  const ids = g.input('ids', 'int64', [3]);
  const names = g.node('CategoryMapper', [ids], { cats_int64s: [1, 2], cats_strings: ['good', 'bad'], default_string: 'unknown' }, { domain: 'ai.onnx.ml' });
  g.node('CategoryMapper', [names], { cats_int64s: [10, 20], cats_strings: ['good', 'bad'], default_int64: -1 }, { name: 'codes', domain: 'ai.onnx.ml' });
  g.output('codes', 'int64', [3]);

  const out = await (await load(g)).run({
    x: new ort.Tensor('float32', Float32Array.from([-2, 1, 3]), [3]),
    ids: new ort.Tensor('int64', BigInt64Array.from([2n, 1n, 7n]), [3]),
  });
  // leaky([-2, 1, 3]) = [-1, 1, 3]; times [0.5, 1, 2] = [-0.5, 1, 6]; plus [1.25, 2.5, 3.75]
  assertClose(out.y!.data as Float32Array, [0.75, 3.5, 9.75]);
  assertClose(out.padded!.data as Float32Array, [-2, -2, 1, 3, 3]);
  assert.deepEqual([...(out.codes!.data as BigInt64Array)], [20n, 10n, -1n]);
});

test('same calls give the same bytes; metadata lands in the model', async () => {
  const build = () => {
    const g = new GraphBuilder({ name: 'm' });
    g.node('Neg', [g.input('x', 'float32', [1])], {}, { name: 'y' });
    g.output('y', 'float32', [1]);
    return g.toBytes({ producerName: 'test', producerVersion: '1', metadata: { b: '2', a: '1' } });
  };
  const bytes = build();
  assert.deepEqual(bytes, build());
  // ModelProto.metadata_props (field 14) entries, sorted by key: {1: 'a', 2: '1'} then {1: 'b', 2: '2'}.
  const entry = (k: string, v: string) => [0x72, 6, 0x0a, 1, k.charCodeAt(0), 0x12, 1, v.charCodeAt(0)];
  const hex = Buffer.from(bytes).toString('hex');
  assert.ok(hex.endsWith(Buffer.from([...entry('a', '1'), ...entry('b', '2')]).toString('hex')));
  assert.ok(hex.includes(Buffer.from('test').toString('hex')));
  const session = await ort.InferenceSession.create(Buffer.from(build()));
  assert.deepEqual(session.inputNames, ['x']);
  assert.deepEqual(session.outputNames, ['y']);
  const out = await session.run({ x: new ort.Tensor('float32', Float32Array.from([4]), [1]) });
  assertClose(out.y!.data as Float32Array, [-4]);
});

test('mistakes fail at build time with a message naming the problem', () => {
  const g = new GraphBuilder();
  const x = g.input('x', 'float32', [2]);
  assert.throws(() => g.node('Relu', ['nope']), /unknown input 'nope'/);
  assert.throws(() => g.input('x', 'float32', [2]), /'x' already exists/);
  assert.throws(() => g.initializer('w', 'float32', [2, 2], [1, 2, 3]), /3 values for dims \[2, 2\]/);
  assert.throws(() => g.constant('uint8', [1], [300]), /not an integer in \[0, 255\]/);
  assert.throws(() => g.output('missing', 'float32', [2]), /no value of that name/);
  assert.throws(() => g.input('bad', 'float32', [1.5]), /bad dimension/);
  assert.throws(() => g.toBytes(), /no outputs/);
  g.node('Relu', [x], {}, { name: 'y' });
  assert.throws(() => g.node('Relu', [x], {}, { name: 'y' }), /'y' already exists/);
});

test('nodeMulti: Split into two named outputs runs', async () => {
  const g = new GraphBuilder({ opset: 13 });
  const x = g.input('x', 'float32', [4]);
  const [lo, hi] = g.nodeMulti('Split', [x, g.constant('int64', [2], [1, 3])], { axis: 0 }, 2);
  g.node('Identity', [lo!], {}, { name: 'lo' });
  g.node('Identity', [hi!], {}, { name: 'hi' });
  g.output('lo', 'float32', [1]);
  g.output('hi', 'float32', [3]);
  const out = await (await load(g)).run({ x: new ort.Tensor('float32', Float32Array.from([1, 2, 3, 4]), [4]) });
  assertClose(out.lo!.data as Float32Array, [1]);
  assertClose(out.hi!.data as Float32Array, [2, 3, 4]);
});

// ---- models built with the writer: the test fixtures, the film-demo bundle and its hand-designed baseline

test('fixture models run and read through the heads as documented', async () => {
  const run = async (b: { onnx: Uint8Array }, dims: number[], data: Float32Array) => {
    const s = await ort.InferenceSession.create(Buffer.from(b.onnx));
    const out = await s.run({ image: new ort.Tensor('float32', data, dims) });
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, { dims: [...v.dims], data: v.data as Float32Array }]));
  };

  const a = brightest();
  const img = new Float32Array(32 * 24);
  img[5 * 32 + 7] = 200 / 255;
  const av = applyHead(a.manifest.head, 0.5, await run(a, [1, 1, 24, 32], img), { frameWidth: 32, frameHeight: 24, inputWidth: 32, inputHeight: 24 });
  assert.equal(av.verdict, 'reject');
  assert.deepEqual(av.defects.map((d) => d.box), [[7, 5, 1, 1]]);

  const c = redness();
  const red = new Float32Array(3 * 16 * 16);
  red.fill(0.8, 0, 256); // red channel 0.8 → logit 10 * 0.3 = 3
  const cv = applyHead(c.manifest.head, 0.5, await run(c, [1, 3, 16, 16], red), { frameWidth: 16, frameHeight: 16, inputWidth: 16, inputHeight: 16 });
  assert.equal(cv.label, 'bad');
  assert.ok(Math.abs(cv.score - 1 / (1 + Math.exp(-3))) < 1e-5);

  const d = detections();
  const geo = { frameWidth: 64, frameHeight: 64, inputWidth: 64, inputHeight: 64 };
  const white = await run(d, [1, 1, 64, 64], new Float32Array(64 * 64).fill(1));
  const dv = applyHead(d.manifest.head, 0.5, white, geo);
  assert.deepEqual(dv.defects.map((x) => [x.class, x.box]), [['scratch', [12, 12, 8, 8]], ['dust', [42, 37, 12, 6]]]);
  const dim = applyHead(d.manifest.head, 0.5, await run(d, [1, 1, 64, 64], new Float32Array(64 * 64).fill(0.5)), geo);
  assert.ok(Math.abs(dim.score - 0.45) < 1e-6); // the strongest box: 0.9 * 0.5
  assert.equal(dim.verdict, 'pass');

  const n = nan();
  assert.throws(() => applyHead(n.manifest.head, 0.5, {}, geo), HeadError);
  const nv = await run(n, [1, 1, 24, 32], new Float32Array(32 * 24));
  assert.throws(() => applyHead(n.manifest.head, 0.5, nv, geo), /output 'score' contains NaN/);
});

test('film-demo: the committed bundle is the trained highpass-stats model, and its manifest matches it', async () => {
  // models/film-demo is trained (npm run train:film, method highpass-stats) on the architecture of
  // build-film-demo.ts: the same input, the same outputs, per-position statistics learned from
  // good frames. (Its rebuild is checked for determinism by the training pipeline's tests.)
  const onnx = await readFile(new URL('../../models/film-demo/model.onnx', import.meta.url));
  const manifest = JSON.parse(await readFile(new URL('../../models/film-demo/model.json', import.meta.url), 'utf8'));
  assert.equal(manifest.sha256, createHash('sha256').update(onnx).digest('hex'));
  assert.deepEqual(manifest.input, INPUT);
  assert.equal(manifest.head.type, 'anomaly');
  assert.ok(manifest.threshold > 0);
  assert.equal(manifest.provenance.createdBy, 'linesight train');
  assert.equal(manifest.provenance.parameters.method, 'highpass-stats');

  const session = await ort.InferenceSession.create(onnx);
  assert.deepEqual(session.inputNames, [INPUT.name]);
  assert.deepEqual([...session.outputNames].sort(), [manifest.head.mapOutput, manifest.head.scoreOutput].sort());

  // Scores are standard deviations from good film: flat film stays under the threshold, a dark
  // 2x2 speck in the middle is far above it, at its place in the 2x2 max-pooled map.
  const [W, H] = [160, 120];
  const run = (speck?: [number, number]) => {
    const img = new Float32Array(W * H).fill(200 / 255);
    if (speck) for (const [dx, dy] of [[0, 0], [1, 0], [0, 1], [1, 1]]) img[(speck[1] + dy!) * W + speck[0] + dx!] = 140 / 255;
    return session.run({ image: new ort.Tensor('float32', img, [1, 1, H, W]) });
  };
  const flat = await run();
  assert.ok((flat.score!.data as Float32Array)[0]! < manifest.threshold, `flat film scores ${(flat.score!.data as Float32Array)[0]}`);
  const out = await run([80, 60]);
  assert.ok((out.score!.data as Float32Array)[0]! > 3 * manifest.threshold, `speck scores ${(out.score!.data as Float32Array)[0]}`);
  const map = out.map!.data as Float32Array;
  assert.deepEqual(out.map!.dims, [1, 1, 60, 80]);
  assert.equal(map.indexOf(Math.max(...map)), 30 * 80 + 40);
});

test('film-demo hand-designed baseline (buildModel): flat film scores 0; a dark speck scores its contrast (grey levels) at its place; the border is masked', async () => {
  const session = await ort.InferenceSession.create(Buffer.from(buildModel()));
  const [W, H] = [160, 120];
  const frame = (speck?: [number, number]) => {
    const img = new Float32Array(W * H).fill(200 / 255);
    if (speck) for (const [dx, dy] of [[0, 0], [1, 0], [0, 1], [1, 1]]) img[(speck[1] + dy!) * W + speck[0] + dx!] = 140 / 255;
    return session.run({ image: new ort.Tensor('float32', img, [1, 1, H, W]) });
  };

  const flat = await frame();
  assert.ok(Math.abs((flat.score!.data as Float32Array)[0]!) < 1e-3);
  assert.deepEqual(flat.map!.dims, [1, 1, 60, 80]);

  // The 15x15 background mean includes the speck: 200 - 60 * 4 / 225; the speck sits 60 below 200.
  const out = await frame([80, 60]);
  const score = (out.score!.data as Float32Array)[0]!;
  assert.ok(Math.abs(score - (60 - (60 * 4) / 225)) < 0.01, `score ${score}`);
  const map = out.map!.data as Float32Array;
  assert.equal(map.indexOf(Math.max(...map)), 30 * 80 + 40); // 2x2 max-pooled map

  // In the 4-pixel border the speck itself is masked; only the blur's faint echo inside remains.
  const edge = await frame([0, 60]);
  assert.ok((edge.score!.data as Float32Array)[0]! < 5, 'a speck on the edge is ignored');
});
