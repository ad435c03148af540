// Training methods end to end on a tiny generated dataset (striped grey "tiles", defects = dark
// blobs with masks, written as PNGs with sharp): fit() returns a self-contained ONNX model that
// onnxruntime-node runs on the agent's own preprocessing, with the declared input and head, and
// held-out defects score higher than held-out goods. Also: the MobileNetV2 import matches a
// reference computed by hand, fits are deterministic for a seed, and bad params fail loudly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import * as ort from 'onnxruntime-node';
import { methods } from '../../src/train/index-methods.js';
import { inputTensor } from '../../src/train/features/preprocess.js';
import { synthesizeDefect, SYNTH_KINDS } from '../../src/train/features/synth.js';
import { kCenterCoreset } from '../../src/train/methods/coreset.js';
import { rng, trainLogistic } from '../../src/train/methods/linear.js';
import { importKerasLayers } from '../../src/train/features/keras-onnx.js';
import type { TfjsLayersModel } from '../../src/train/features/tfjs-layers.js';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { addFlips, meanOverViews } from '../../src/train/features/pooled.js';
import { silentLogger } from '../../src/log.js';
import type { FitContext, FitResult, Sample } from '../../src/train/types.js';

const W = 112;
const H = 96;

/** A striped, noisy grey tile; `defect` adds a dark blob at (cx, cy) and returns its mask. */
function tile(seed: number, defect?: { cx: number; cy: number; r: number }): { px: Uint8Array; mask: Uint8Array } {
  const r = rng(seed);
  const px = new Uint8Array(W * H);
  const mask = new Uint8Array(W * H);
  const base = 110 + r() * 40;
  const phase = r() * 6;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      let v = base + 18 * Math.sin(x / 2.3 + phase) + (r() - 0.5) * 20 + (y / H) * 20;
      if (defect) {
        const d = Math.hypot(x - defect.cx, y - defect.cy);
        if (d < defect.r) {
          v *= 0.25;
          mask[y * W + x] = 255;
        }
      }
      px[y * W + x] = Math.max(0, Math.min(255, Math.round(v)));
    }
  }
  return { px, mask };
}

async function makeDataset(dir: string): Promise<{ train: Sample[]; test: Sample[] }> {
  for (const d of ['good', 'blob', 'masks/blob']) mkdirSync(join(dir, d), { recursive: true });
  const samples: Sample[] = [];
  const png = (data: Uint8Array, file: string) => sharp(Buffer.from(data), { raw: { width: W, height: H, channels: 1 } }).png().toFile(file);
  for (let i = 0; i < 22; i++) {
    const file = join(dir, 'good', `g${i}.png`);
    await png(tile(100 + i).px, file);
    samples.push({ file, label: 'good', isGood: true, sha256: `g${i}` });
  }
  for (let i = 0; i < 14; i++) {
    const r = rng(500 + i);
    const t = tile(300 + i, { cx: 15 + r() * (W - 30), cy: 15 + r() * (H - 30), r: 5 + r() * 5 });
    const file = join(dir, 'blob', `d${i}.png`);
    const mask = join(dir, 'masks', 'blob', `d${i}.png`);
    await png(t.px, file);
    await png(t.mask, mask);
    samples.push({ file, label: 'blob', isGood: false, mask, sha256: `d${i}` });
  }
  // First 14 goods and 8 defects train, the rest is held out.
  const goods = samples.filter((s) => s.isGood);
  const defects = samples.filter((s) => !s.isGood);
  return { train: [...goods.slice(0, 14), ...defects.slice(0, 8)], test: [...goods.slice(14), ...defects.slice(8)] };
}

function ctx(mode: FitContext['mode'], params: Record<string, unknown>, workDir: string, seed = 1): FitContext {
  return { mode, seed, params, log: silentLogger, progress: () => {}, workDir };
}

/** Runs the fitted model on a file the way the agent does; returns the score the head reads. */
async function scoreOf(session: ort.InferenceSession, fit: FitResult, file: string): Promise<{ score: number; outputs: ort.InferenceSession.OnnxValueMapType }> {
  const t = await inputTensor(file, fit.input);
  const out = await session.run({ [fit.input.name]: new ort.Tensor('float32', t.data, t.dims) });
  const name = fit.head.type === 'anomaly' ? fit.head.scoreOutput : fit.head.type === 'classification' ? fit.head.output : '';
  const v = out[name];
  assert.ok(v, `output ${name}`);
  assert.equal(v.data.length, 1);
  return { score: Number(v.data[0]), outputs: out };
}

const meanOf = (a: number[]): number => a.reduce((x, y) => x + y, 0) / a.length;

let dir = '';
let data: { train: Sample[]; test: Sample[] };

test('setup: a tiny generated dataset', async () => {
  dir = mkdtempSync(join(tmpdir(), 'linesight-methods-'));
  data = await makeDataset(dir);
  assert.equal(data.train.length, 22);
});

const cases: { method: string; mode: FitContext['mode']; params: Record<string, unknown>; head: string }[] = [
  { method: 'patchcore', mode: 'anomaly', params: { size: 96, bankSize: 300, candidates: 3000, projDims: 32 }, head: 'anomaly' },
  { method: 'synthetic-linear', mode: 'anomaly', params: { size: 96, synthetic: 1, epochs: 40 }, head: 'anomaly' },
  { method: 'features-linear', mode: 'supervised', params: { size: 96, epochs: 60, transplant: 1 }, head: 'classification' },
  { method: 'features-linear', mode: 'supervised', params: { size: 96, epochs: 60, flips: 'hv', l2: 0.01 }, head: 'classification' },
  { method: 'features-linear', mode: 'supervised', params: { size: 96, epochs: 60, flips: 'hv', crops: 64, cropStep: 32 }, head: 'classification' },
];

for (const c of cases) {
  test(`${c.method} (${c.mode}): self-contained ONNX, defects score above goods`, async () => {
    const res = await methods[c.method]!.fit(data.train, ctx(c.mode, c.params, dir));
    assert.equal(res.head.type, c.head);
    assert.equal(res.input.width, 96);
    assert.equal(res.input.colour, 'gray');
    assert.ok(res.weights.length > 0 && /nsfwjs/.test(res.weights[0]!.origin) && /MIT/.test(res.weights[0]!.license));
    assert.ok(res.onnx.length > 100_000 && res.onnx.length < 30_000_000, `onnx size ${res.onnx.length}`);
    const session = await ort.InferenceSession.create(Buffer.from(res.onnx));
    assert.deepEqual(session.inputNames, ['image']);
    const goods: number[] = [];
    const defects: number[] = [];
    for (const s of data.test) {
      const { score, outputs } = await scoreOf(session, res, s.file);
      assert.ok(Number.isFinite(score));
      (s.isGood ? goods : defects).push(score);
      if (res.head.type === 'anomaly' && res.head.mapOutput) {
        const map = outputs[res.head.mapOutput]!;
        assert.equal(map.dims.length, 4);
        assert.equal(Math.max(...(map.data as Float32Array)), score, 'score is the max of the map');
      }
    }
    assert.ok(meanOf(defects) > meanOf(goods), `${c.method}: mean defect ${meanOf(defects)} <= mean good ${meanOf(goods)}`);
    // Most held-out defects above the median good.
    const medGood = [...goods].sort((a, b) => a - b)[goods.length >> 1]!;
    assert.ok(defects.filter((v) => v > medGood).length >= defects.length - 1, `${c.method}: ${defects} vs median good ${medGood}`);
    await session.release();
  });
}

test('mirrored views: addFlips stacks the image and its h, v and hv mirrors; meanOverViews averages them', async () => {
  const w = 5;
  const h = 3;
  const g = new GraphBuilder({ name: 'flips' });
  const x = g.input('image', 'float32', [1, 1, h, w]);
  const views = addFlips(g, x, w, h, 'hv');
  g.node('Identity', [views], {}, { name: 'views' });
  g.node('Identity', [meanOverViews(g, views)], {}, { name: 'mean' });
  g.output('views', 'float32', [4, 1, h, w]);
  g.output('mean', 'float32', [1, 1, h, w]);
  const session = await ort.InferenceSession.create(Buffer.from(g.toBytes()));
  const img = Float32Array.from({ length: w * h }, (_, i) => i * i + 1);
  const out = await session.run({ image: new ort.Tensor('float32', img, [1, 1, h, w]) });
  const at = (fh: boolean, fv: boolean) => Array.from({ length: w * h }, (_, i) => img[(fv ? h - 1 - Math.floor(i / w) : Math.floor(i / w)) * w + (fh ? w - 1 - (i % w) : i % w)]!);
  const expected = [at(false, false), at(true, false), at(false, true), at(true, true)];
  assert.deepEqual(out.views!.dims, [4, 1, h, w]);
  assert.deepEqual(Array.from(out.views!.data as Float32Array), expected.flat());
  const mean = Array.from({ length: w * h }, (_, i) => expected.reduce((a, v) => a + v[i]!, 0) / 4);
  Array.from(out.mean!.data as Float32Array).forEach((v, i) => assert.ok(Math.abs(v - mean[i]!) < 1e-3, `mean[${i}] ${v} vs ${mean[i]}`));
  assert.equal(addFlips(g, x, w, h, 'none'), x, "'none' adds nothing");
  await session.release();
});

test('fit is deterministic for a seed', async () => {
  const params = { size: 64, synthetic: 1, epochs: 5 };
  const a = await methods['synthetic-linear']!.fit(data.train, ctx('anomaly', params, dir, 7));
  const b = await methods['synthetic-linear']!.fit(data.train, ctx('anomaly', params, dir, 7));
  assert.deepEqual(Buffer.from(a.onnx), Buffer.from(b.onnx));
  const p = { size: 64, bankSize: 50, candidates: 500, projDims: 16 };
  const c = await methods.patchcore!.fit(data.train, ctx('anomaly', p, dir, 3));
  const d = await methods.patchcore!.fit(data.train, ctx('anomaly', p, dir, 3));
  assert.deepEqual(Buffer.from(c.onnx), Buffer.from(d.onnx));
});

test('bad params and modes fail loudly', async () => {
  await assert.rejects(methods.patchcore!.fit(data.train, ctx('anomaly', { bankSise: 10 }, dir)), /unknown params bankSise/);
  await assert.rejects(methods.patchcore!.fit(data.train, ctx('anomaly', { size: 100 }, dir)), /multiples of 32/);
  await assert.rejects(methods['features-linear']!.fit(data.train, ctx('anomaly', {}, dir)), /supervised/);
  await assert.rejects(methods['synthetic-linear']!.fit(data.train, ctx('anomaly', { syntheticKinds: 'pore,dent' }, dir)), /unknown synthetic kind/);
  await assert.rejects(methods['features-linear']!.fit(data.train, ctx('supervised', { size: 96, crops: 48 }, dir)), /crops and cropStep must be multiples of 32/);
  await assert.rejects(methods['features-linear']!.fit(data.train, ctx('supervised', { size: 96, crops: 128 }, dir)), /at most the input's shorter side/);
  const unmasked = data.train.map(({ mask: _, ...s }) => s);
  await assert.rejects(methods['features-linear']!.fit(unmasked, ctx('supervised', { size: 96, crops: 64 }, dir)), /masks/);
});

test('crops: the exported score is the whole-image logit plus the best crop logit, each over its training spread', async () => {
  const res = await methods['features-linear']!.fit(data.train, ctx('supervised', { size: 96, epochs: 30, crops: 64, cropStep: 32 }, dir));
  const p = res.parameters as { cropGrid: number[]; cropRows: number; cropRowsDefective: number; scoreScales: { whole: number; crops: number } };
  assert.deepEqual(p.cropGrid, [2, 2]);
  // 14 goods + 8 masked defects, 4 crops each; the blobs (radius 5-10 px) touch 1-4 of the 64 px crops.
  assert.equal(p.cropRows, 22 * 4);
  assert.ok(p.cropRowsDefective >= 8 && p.cropRowsDefective <= 32, `defective crops ${p.cropRowsDefective}`);
  assert.ok(p.scoreScales.whole > 0 && p.scoreScales.crops > 0);
  const half = await methods['features-linear']!.fit(data.train, ctx('supervised', { size: 96, epochs: 30, crops: 64, cropStep: 32, cropWeight: 0 }, dir));
  const whole = await methods['features-linear']!.fit(data.train, ctx('supervised', { size: 96, epochs: 30 }, dir));
  // cropWeight 0 leaves the whole-image logit, scaled: the same ranking as the model without crops.
  const sHalf = await ort.InferenceSession.create(Buffer.from(half.onnx));
  const sWhole = await ort.InferenceSession.create(Buffer.from(whole.onnx));
  const scale = (half.parameters as typeof p).scoreScales.whole;
  for (const smp of data.test.slice(0, 4)) {
    const a = (await scoreOf(sHalf, half, smp.file)).score;
    const b = (await scoreOf(sWhole, whole, smp.file)).score;
    assert.ok(Math.abs(a - b * scale) < 1e-3 * Math.max(1, Math.abs(a)), `${smp.file}: ${a} vs ${b} x ${scale}`);
  }
  await sHalf.release();
  await sWhole.release();
});

test('synthetic defects: every kind changes pixels inside its mask, deterministically', () => {
  const { px } = tile(9);
  const img = { width: W, height: H, channels: 1 as const, data: px };
  for (const kind of SYNTH_KINDS) {
    const a = synthesizeDefect(img, rng(4), kind);
    const b = synthesizeDefect(img, rng(4), kind);
    assert.deepEqual(a.image.data, b.image.data, kind);
    let inMask = 0;
    let changed = 0;
    for (let i = 0; i < W * H; i++) {
      if (a.mask[i]! > 0.5) {
        inMask++;
        if (a.image.data[i] !== px[i]) changed++;
      }
    }
    assert.ok(inMask > 0, `${kind}: empty mask`);
    assert.ok(changed > inMask * 0.3, `${kind}: ${changed} of ${inMask} mask pixels changed`);
  }
  assert.deepEqual(img.data, px, 'source image untouched');
});

test('k-center coreset covers outliers that random sampling would miss', () => {
  // 1000 points in a tight cluster plus 3 far outliers: a 10-point coreset takes all 3.
  const r = rng(2);
  const n = 1003;
  const X = new Float32Array(n * 4);
  for (let i = 0; i < 1000; i++) for (let j = 0; j < 4; j++) X[i * 4 + j] = r() * 0.1;
  for (let k = 0; k < 3; k++) X[(1000 + k) * 4 + k] = 10;
  const sel = kCenterCoreset(X, n, 4, 10, 1, 4);
  for (const k of [1000, 1001, 1002]) assert.ok(sel.includes(k), `outlier ${k} selected`);
  assert.equal(new Set(sel).size, sel.length);
});

test('logistic regression separates a linearly separable set', () => {
  const r = rng(3);
  const n = 400;
  const d = 5;
  const X = new Float32Array(n * d);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) X[i * d + j] = r() * 2 - 1;
    y[i] = X[i * d]! + 0.5 * X[i * d + 1]! > 0 ? 1 : 0;
  }
  const { w, b } = trainLogistic(X, y, n, d, { l2: 1e-4, epochs: 50, seed: 1, lr: 0.05 });
  let correct = 0;
  for (let i = 0; i < n; i++) {
    let z = b;
    for (let j = 0; j < d; j++) z += X[i * d + j]! * w[j]!;
    if (z > 0 === (y[i] === 1)) correct++;
  }
  assert.ok(correct / n > 0.95, `accuracy ${correct / n}`);
});

test('Keras import: conv + folded BN + ReLU6 + grey input match a hand computation', async () => {
  // A 2-layer toy model: Conv2D 3x3 (3 -> 2 channels, same) + BatchNormalization + ReLU(6).
  const k = new Float32Array(3 * 3 * 3 * 2).map((_, i) => ((i * 37) % 11) / 10 - 0.5);
  const model: TfjsLayersModel = {
    layers: [
      { name: 'in', class_name: 'InputLayer', config: {}, inbound_nodes: [] },
      { name: 'c', class_name: 'Conv2D', config: { strides: [1, 1], padding: 'same', use_bias: false, activation: 'linear' }, inbound_nodes: [[['in', 0, 0, {}]]] },
      { name: 'bn', class_name: 'BatchNormalization', config: { epsilon: 0.001 }, inbound_nodes: [[['c', 0, 0, {}]]] },
      { name: 'r', class_name: 'ReLU', config: { max_value: 6 }, inbound_nodes: [[['bn', 0, 0, {}]]] },
    ],
    weights: new Map([
      ['c/kernel', { shape: [3, 3, 3, 2], data: k }],
      ['bn/gamma', { shape: [2], data: Float32Array.from([2, 0.5]) }],
      ['bn/beta', { shape: [2], data: Float32Array.from([0.1, -0.2]) }],
      ['bn/moving_mean', { shape: [2], data: Float32Array.from([0.3, -0.1]) }],
      ['bn/moving_variance', { shape: [2], data: Float32Array.from([4, 0.25]) }],
    ]),
  };
  const g = new GraphBuilder();
  const x = g.input('x', 'float32', [1, 1, 5, 5]);
  const out = importKerasLayers(g, model, { input: x, inputChannels: 1, outputs: ['r'] }).get('r')!;
  g.node('Identity', [out.value], {}, { name: 'y' });
  g.output('y', 'float32', [1, 2, 5, 5]);
  const s = await ort.InferenceSession.create(Buffer.from(g.toBytes()));
  const img = Float32Array.from({ length: 25 }, (_, i) => (i % 7) / 3);
  const y = (await s.run({ x: new ort.Tensor('float32', img, [1, 1, 5, 5]) })).y!.data as Float32Array;
  const gamma = [2, 0.5];
  const beta = [0.1, -0.2];
  const mean = [0.3, -0.1];
  const vr = [4, 0.25];
  for (let o = 0; o < 2; o++) {
    for (let py = 0; py < 5; py++) {
      for (let px = 0; px < 5; px++) {
        let acc = 0;
        for (let ky = 0; ky < 3; ky++)
          for (let kx = 0; kx < 3; kx++) {
            const iy = py + ky - 1;
            const ix = px + kx - 1;
            if (iy < 0 || ix < 0 || iy > 4 || ix > 4) continue;
            // Grey replicated into the 3 input channels.
            for (let c = 0; c < 3; c++) acc += img[iy * 5 + ix]! * k[((ky * 3 + kx) * 3 + c) * 2 + o]!;
          }
        const bn = ((acc - mean[o]!) / Math.sqrt(vr[o]! + 0.001)) * gamma[o]! + beta[o]!;
        const want = Math.min(6, Math.max(0, bn));
        assert.ok(Math.abs(y[(o * 5 + py) * 5 + px]! - want) < 1e-4, `(${o},${py},${px}) ${y[(o * 5 + py) * 5 + px]} vs ${want}`);
      }
    }
  }
});

test('cleanup', () => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});
