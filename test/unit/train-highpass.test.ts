// highpass-stats: the film-demo architecture with its per-position mean and standard deviation
// learned from good frames. On a tiny set of synthetic film frames (the demo camera's generator,
// small frames): the statistics match a hand computation, are sane (edges noisier than the
// middle), the model runs in onnxruntime-node on the agent's preprocessing and scores defects above
// good frames, the fit is deterministic, and bad params fail loudly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import * as ort from 'onnxruntime-node';
import { renderFilmFrame } from '../../src/camera/synthetic.js';
import { methods } from '../../src/train/index-methods.js';
import { boxMean, PositionStats } from '../../src/train/methods/highpass-stats.js';
import { inputTensor } from '../../src/train/features/preprocess.js';
import { buildHighPassModel, buildModel } from '../../src/models/build-film-demo.js';
import { silentLogger } from '../../src/log.js';
import type { FitContext, FitResult, Sample } from '../../src/train/types.js';

const FW = 128; // frame size; the model input is half of it, as in the demo (320x240 -> 160x120)
const FH = 96;
const PARAMS = { width: 64, height: 48 };

let dir = '';
let train: Sample[] = [];
let heldGood: string[] = [];
let heldBad: string[] = [];
let fit: FitResult;

const ctx = (params: Record<string, unknown> = PARAMS): FitContext => ({
  mode: 'anomaly',
  seed: 1,
  params,
  log: silentLogger,
  progress: () => {},
  workDir: dir,
});

async function writeFrame(file: string, index: number, defectRate: number): Promise<string[]> {
  const f = renderFilmFrame({ width: FW, height: FH, seed: 7, defectRate }, index);
  await sharp(Buffer.from(f.data), { raw: { width: FW, height: FH, channels: 3 } }).png().toFile(file);
  return f.truth.defects;
}

async function score(session: ort.InferenceSession, file: string): Promise<{ score: number; map: Float32Array; dims: readonly number[] }> {
  const t = await inputTensor(file, fit.input);
  const out = await session.run({ image: new ort.Tensor('float32', t.data, t.dims) });
  return { score: (out.score!.data as Float32Array)[0]!, map: out.map!.data as Float32Array, dims: out.map!.dims };
}

test('setup: good synthetic film frames, held-out good and defective ones', async () => {
  dir = mkdtempSync(join(tmpdir(), 'linesight-highpass-'));
  for (const d of ['good', 'held']) mkdirSync(join(dir, d), { recursive: true });
  for (let i = 0; i < 24; i++) {
    const file = join(dir, 'good', `g${String(i).padStart(2, '0')}.png`);
    await writeFrame(file, i, 0);
    train.push({ file, label: 'good', isGood: true, sha256: `g${i}` });
  }
  for (let i = 0; i < 8; i++) {
    const file = join(dir, 'held', `good${i}.png`);
    await writeFrame(file, 1000 + i, 0);
    heldGood.push(file);
  }
  // Defective frames: every frame of defectRate 1 carries at least one defect.
  for (let i = 0; heldBad.length < 8; i++) {
    const file = join(dir, 'held', `bad${i}.png`);
    const defects = await writeFrame(file, 2000 + i, 1);
    if (defects.length) heldBad.push(file);
  }
  fit = await methods['highpass-stats']!.fit(train, ctx());
  assert.ok(fit.onnx.length > 0);
});

test('PositionStats and boxMean match a hand computation', () => {
  const s = new PositionStats(3);
  s.add(Float32Array.from([1, 0, 5]));
  s.add(Float32Array.from([3, 0, 5]));
  s.add(Float32Array.from([5, 0, 5]));
  const { mean, variance } = s.moments();
  assert.deepEqual([...mean], [3, 0, 5]);
  assert.deepEqual([...variance], [4, 0, 0]); // unbiased: ((1-3)² + 0 + (5-3)²) / 2
  // 3x2 map, radius 1: each value is the mean of its clipped 3x3 window.
  const m = boxMean(Float64Array.from([0, 3, 6, 9, 12, 15]), 3, 2, 1);
  assert.deepEqual([...m], [6, 7.5, 9, 6, 7.5, 9]);
  assert.deepEqual([...boxMean(Float64Array.from([1, 2]), 2, 1, 0)], [1, 2]);
});

test('learned statistics are sane: positive noise, edges noisier than the middle, a coarse gain above 1', () => {
  const p = fit.parameters as { images: number; fine: { stdInner: number; stdEdge: number }; coarse: { stdInner: number; stdEdge: number }; learnedCoarseGain: number };
  assert.equal(p.images, 24);
  for (const b of [p.fine, p.coarse]) {
    assert.ok(b.stdInner > 0.05 && b.stdInner < 20, `std inside ${b.stdInner}`);
    assert.ok(b.stdEdge > b.stdInner, `edge std ${b.stdEdge} <= inner ${b.stdInner}`);
  }
  // Averaging lowers the coarse branch's noise, so it gets the larger weight (the hand design: 1.5).
  assert.ok(p.learnedCoarseGain > 1 && p.learnedCoarseGain < 10, `gain ${p.learnedCoarseGain}`);
  assert.deepEqual(fit.input, { name: 'image', width: 64, height: 48, colour: 'gray', layout: 'nchw', dtype: 'float32', scale: 1 / 255, resize: 'stretch' });
  assert.equal(fit.head.type, 'anomaly');
  assert.deepEqual(fit.weights, []);
});

test('the fitted model scores defective frames above good ones, and marks the defect in the map', async () => {
  const session = await ort.InferenceSession.create(Buffer.from(fit.onnx));
  const good = await Promise.all(heldGood.map((f) => score(session, f)));
  const bad = await Promise.all(heldBad.map((f) => score(session, f)));
  assert.deepEqual(good[0]!.dims, [1, 1, 24, 32]);
  const maxGood = Math.max(...good.map((g) => g.score));
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  assert.ok(mean(bad.map((b) => b.score)) > 1.5 * mean(good.map((g) => g.score)), `bad ${bad.map((b) => b.score)} good ${good.map((g) => g.score)}`);
  assert.ok(bad.filter((b) => b.score > maxGood).length >= 6, `only ${bad.filter((b) => b.score > maxGood).length}/8 defects above every good frame`);
  // Standardised: good film stays within a few standard deviations of its mean.
  assert.ok(maxGood > 1 && maxGood < 12, `max good score ${maxGood}`);

  // A dark 2x2 speck painted into a held-out good frame (input pixels) scores far above the frame
  // and peaks at its place in the 2x-pooled map.
  const t = await inputTensor(heldGood[0]!, fit.input);
  const img = Float32Array.from(t.data);
  for (const [dx, dy] of [[0, 0], [1, 0], [0, 1], [1, 1]]) img[(24 + dy!) * 64 + 30 + dx!]! -= 40 / 255;
  const out = await session.run({ image: new ort.Tensor('float32', img, t.dims) });
  const s = (out.score!.data as Float32Array)[0]!;
  assert.ok(s > 2 * maxGood, `speck ${s} vs good ${maxGood}`);
  const map = out.map!.data as Float32Array;
  assert.equal(map.indexOf(Math.max(...map)), 12 * 32 + 15);
});

test('fit is deterministic: same images, same model bytes', async () => {
  const again = await methods['highpass-stats']!.fit(train, ctx());
  assert.ok(Buffer.compare(Buffer.from(again.onnx), Buffer.from(fit.onnx)) === 0);
  assert.deepEqual(again.parameters, fit.parameters);
});

test('the hand-designed film-demo graph is the same builder with fixed gains', async () => {
  // buildModel = buildHighPassModel(hand parameters): a speck's score is its contrast in grey levels.
  const s = await ort.InferenceSession.create(Buffer.from(buildModel()));
  const img = new Float32Array(160 * 120).fill(200 / 255);
  img[60 * 160 + 80] = 140 / 255;
  const out = await s.run({ image: new ort.Tensor('float32', img, [1, 1, 120, 160]) });
  assert.ok(Math.abs((out.score!.data as Float32Array)[0]! - (60 - 60 / 225)) < 0.01);
  assert.throws(
    () => buildHighPassModel({ inputWidth: 64, inputHeight: 48, backgroundKernel: 15, coarseKernel: 5, border: 3, mapPool: 2, fine: { scale: 1 }, coarse: { scale: 1 }, name: 'x', producerName: 'x', docString: '' }),
    /multiple of mapPool/,
  );
});

test('bad params fail loudly', async () => {
  const fitWith = (params: Record<string, unknown>) => methods['highpass-stats']!.fit(train, ctx({ ...PARAMS, ...params }));
  await assert.rejects(fitWith({ backgroundKernel: 14 }), /backgroundKernel must be odd/);
  await assert.rejects(fitWith({ border: 3 }), /multiples of mapPool/);
  await assert.rejects(fitWith({ kernel: 15 }), /unknown params kernel/);
  await assert.rejects(methods['highpass-stats']!.fit(train.slice(0, 1), ctx()), /at least 2 good/);
});

test('cleanup', () => {
  rmSync(dir, { recursive: true, force: true });
});
