// Model bundles are refused at load when the manifest is malformed, the file is not the one the
// manifest describes, or the manifest disagrees with the model's real inputs and outputs.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { checkModelIO, loadBundle, validateManifest } from '../../src/inference/manifest.js';
import { ModelLoadError, type ModelManifest } from '../../src/inference/types.js';

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** image [1,1,8,8] -> score [1,1] = max pixel. */
function maxModel(): Uint8Array {
  const g = new GraphBuilder();
  const x = g.input('image', 'float32', [1, 1, 8, 8]);
  const m = g.node('ReduceMax', [x], { keepdims: 1 });
  g.node('Reshape', [m, g.constant('int64', [2], [1, 1])], {}, { name: 'score' });
  g.output('score', 'float32', [1, 1]);
  return g.toBytes();
}

function manifestFor(bytes: Uint8Array, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    schemaVersion: 1,
    name: 'max',
    version: '1.0.0',
    sha256: sha256(bytes),
    input: { name: 'image', width: 8, height: 8, colour: 'gray', layout: 'nchw', dtype: 'float32' },
    head: { type: 'anomaly', scoreOutput: 'score' },
    threshold: 0.5,
    ...over,
  };
}

const tempDirs: string[] = [];
after(() => tempDirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
const tempDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'linesight-bundle-'));
  tempDirs.push(d);
  return d;
};

function writeBundle(bytes: Uint8Array, manifest: unknown): string {
  const dir = tempDir();
  writeFileSync(join(dir, 'model.onnx'), bytes);
  writeFileSync(join(dir, 'model.json'), typeof manifest === 'string' ? manifest : JSON.stringify(manifest, null, 2));
  return dir;
}

async function loadError(dir: string): Promise<ModelLoadError> {
  try {
    await loadBundle(dir);
  } catch (err) {
    assert.ok(err instanceof ModelLoadError, `expected ModelLoadError, got ${String(err)}`);
    return err;
  }
  assert.fail('the bundle loaded');
}

test('a valid bundle loads: manifest, file path and verified bytes', async () => {
  const bytes = maxModel();
  const dir = writeBundle(bytes, manifestFor(bytes, { sha256: sha256(bytes).toUpperCase() }));
  const b = await loadBundle(dir);
  assert.equal(b.manifest.name, 'max');
  assert.equal(b.manifest.sha256, sha256(bytes), 'sha256 normalised to lower case');
  assert.equal(b.onnxPath, join(dir, 'model.onnx'));
  assert.deepEqual(new Uint8Array(b.bytes), bytes);
});

test('a tampered model.onnx is refused: the message names the file, both hashes and the fix', async () => {
  const bytes = maxModel();
  const dir = writeBundle(bytes, manifestFor(bytes));
  const tampered = new Uint8Array(bytes);
  tampered[tampered.length - 1]! ^= 0xff;
  writeFileSync(join(dir, 'model.onnx'), tampered);
  const err = await loadError(dir);
  assert.match(err.message, /sha256 mismatch/);
  assert.ok(err.message.includes(join(dir, 'model.onnx')), err.message);
  assert.ok(err.message.includes(sha256(bytes)), 'expected hash');
  assert.ok(err.message.includes(sha256(tampered)), 'actual hash');
  assert.match(err.message, /copy the whole bundle again/);
});

test('a truncated model.onnx is refused with its size', async () => {
  const bytes = maxModel();
  const dir = writeBundle(bytes, manifestFor(bytes));
  writeFileSync(join(dir, 'model.onnx'), bytes.subarray(0, 20));
  const err = await loadError(dir);
  assert.match(err.message, /sha256 mismatch/);
  assert.match(err.message, /\(20 bytes\)/);
});

test('every problem in model.json is reported as path: message', async () => {
  const bytes = maxModel();
  const bad = manifestFor(bytes, {
    version: 'one',
    input: { name: 'image', width: -8, height: 8, colour: 'cmyk', layout: 'nchw', dtype: 'float32' },
    head: { type: 'classification', output: 'score', activation: 'softmax' },
    treshold: 0.5,
  });
  delete bad.threshold;
  const err = await loadError(writeBundle(bytes, bad));
  for (const path of ['version:', 'input.width:', 'input.colour:', 'threshold:', 'treshold', 'head.labels:', 'head.rejectLabels:']) {
    assert.ok(err.message.includes(path), `${path} missing from:\n${err.message}`);
  }
  assert.match(err.message, /model\.json: invalid manifest \(\d+ problems\)/);
});

test('rules across fields: reject labels, mean/std per channel, uint8 takes raw pixels', () => {
  const base = manifestFor(maxModel()) as unknown as ModelManifest;
  const problems = validateManifest({
    ...base,
    input: { ...base.input, colour: 'rgb', mean: [0.5, 0.5], std: [1, 0, 1] },
    head: { type: 'classification', output: 'score', activation: 'softmax', labels: ['ok', 'bad', 'ok'], rejectLabels: ['scratch'] },
  });
  assert.ok(problems.some((p) => p.startsWith('input.mean: 2 values for 3 channel(s)')), problems.join('\n'));
  assert.ok(problems.includes('input.std[1]: must not be 0'), problems.join('\n'));
  assert.ok(problems.some((p) => p.startsWith('head.labels: duplicate label(s) ok')), problems.join('\n'));
  assert.ok(problems.some((p) => p.startsWith("head.rejectLabels: 'scratch' is not one of the labels")), problems.join('\n'));

  const uint8 = validateManifest({ ...base, input: { ...base.input, dtype: 'uint8', scale: 1 } });
  assert.deepEqual(uint8, ['input.scale: not used with dtype uint8 (the model takes raw pixels); remove it']);

  assert.deepEqual(validateManifest({ ...base, head: { type: 'segmentation' } }), [
    "head.type: must be one of classification, anomaly, detection (got 'segmentation')",
  ]);
  assert.deepEqual(validateManifest(base), []);
});

test('missing model.json, or one that is not JSON, is refused with the reason', async () => {
  const empty = tempDir();
  assert.match((await loadError(empty)).message, /cannot read model.json .*ENOENT/);
  const bytes = maxModel();
  assert.match((await loadError(writeBundle(bytes, '{ "schemaVersion": 1, '))).message, /model.json: not valid JSON/);
});

// ---- checkModelIO against real onnxruntime sessions ---------------------------------------------

function classifierModel(inputDims: (number | string)[], classes: number, dtype: 'float32' | 'uint8' = 'float32'): Uint8Array {
  const g = new GraphBuilder();
  let x = g.input('image', dtype, inputDims);
  if (dtype === 'uint8') x = g.node('Cast', [x], { to: 1 });
  const pooled = g.node('GlobalAveragePool', [x]);
  const flat = g.node('Flatten', [pooled]);
  // [1, C] -> [1, classes] through a fixed matrix.
  const channels = typeof inputDims[1] === 'number' ? inputDims[1] : 1;
  const w = g.constant('float32', [channels, classes], Array(channels * classes).fill(1));
  g.node('MatMul', [flat, w], {}, { name: 'logits' });
  g.output('logits', 'float32', [1, classes]);
  return g.toBytes();
}

const classification = (labels: string[]) => ({ type: 'classification', output: 'logits', activation: 'softmax', labels, rejectLabels: [labels[1]] });

async function ioError(bytes: Uint8Array, manifest: Record<string, unknown>): Promise<string> {
  const session = await ort.InferenceSession.create(bytes);
  try {
    checkModelIO(manifest as unknown as ModelManifest, session);
  } catch (err) {
    assert.ok(err instanceof ModelLoadError);
    return err.message;
  } finally {
    await session.release();
  }
  assert.fail('checkModelIO accepted a mismatch');
}

test('checkModelIO accepts a manifest that matches the model, symbolic dims included', async () => {
  const exact = await ort.InferenceSession.create(classifierModel([1, 3, 32, 48], 2));
  const manifest = manifestFor(new Uint8Array(), {
    input: { name: 'image', width: 48, height: 32, colour: 'rgb', layout: 'nchw', dtype: 'float32' },
    head: classification(['good', 'bad']),
  }) as unknown as ModelManifest;
  checkModelIO(manifest, exact);
  const dynamic = await ort.InferenceSession.create(classifierModel(['batch', 3, 'h', 'w'], 2));
  checkModelIO(manifest, dynamic);
});

test('checkModelIO names an input shape mismatch with both shapes', async () => {
  const msg = await ioError(
    classifierModel([1, 1, 120, 160], 2),
    manifestFor(new Uint8Array(), {
      input: { name: 'image', width: 224, height: 224, colour: 'rgb', layout: 'nchw', dtype: 'float32' },
      head: classification(['good', 'bad']),
    }),
  );
  assert.match(msg, /manifest input 'image' is 1x3x224x224 \(nchw rgb\) but the model expects 1x1x120x160/);
});

test('checkModelIO: wrong layout, element type, input name and head output are each named', async () => {
  const nhwc = await ioError(
    classifierModel([1, 3, 8, 8], 2),
    manifestFor(new Uint8Array(), {
      input: { name: 'image', width: 8, height: 8, colour: 'rgb', layout: 'nhwc', dtype: 'float32' },
      head: classification(['good', 'bad']),
    }),
  );
  assert.match(nhwc, /is 1x8x8x3 \(nhwc rgb\) but the model expects 1x3x8x8/);

  const dtype = await ioError(
    classifierModel([1, 1, 8, 8], 2, 'uint8'),
    manifestFor(new Uint8Array(), { head: classification(['good', 'bad']) }),
  );
  assert.match(dtype, /manifest input 'image' is float32 but the model expects uint8/);

  const names = await ioError(
    classifierModel([1, 1, 8, 8], 2),
    manifestFor(new Uint8Array(), {
      input: { name: 'pixels', width: 8, height: 8, colour: 'gray', layout: 'nchw', dtype: 'float32' },
      head: { ...classification(['good', 'bad']), output: 'probs' },
    }),
  );
  assert.match(names, /manifest input 'pixels' is not a model input \(the model's inputs: image\)/);
  assert.match(names, /head output 'probs' is not a model output \(the model's outputs: logits\)/);
});

test('checkModelIO: a classifier with a different number of classes than labels is refused', async () => {
  const msg = await ioError(classifierModel([1, 1, 8, 8], 3), manifestFor(new Uint8Array(), { head: classification(['good', 'bad']) }));
  assert.match(msg, /head output 'logits' has 3 classes \(1x3\) but the manifest lists 2 labels \(good, bad\)/);
});

test('checkModelIO: an anomaly score output with more than one value is refused', async () => {
  const msg = await ioError(classifierModel([1, 1, 8, 8], 2), manifestFor(new Uint8Array(), { head: { type: 'anomaly', scoreOutput: 'logits' } }));
  assert.match(msg, /head scoreOutput 'logits' is 1x2; an image score is one value/);
});
