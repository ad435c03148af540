// Heads: hand-computed expectations for each head type, geometry (crop, stretch, letterbox),
// NMS, connected components, and malformed outputs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyHead, connectedComponents, downsampleMax, HeadError, inputToFrame, MAX_DEFECTS, type Geometry, type OutputTensor } from '../../src/inference/heads.js';
import type { AnomalyHead, ClassificationHead, DetectionHead } from '../../src/inference/types.js';

const tensor = (dims: number[], values: number[]): OutputTensor => ({ dims, data: Float32Array.from(values) });
const close = (a: number, b: number, tol = 1e-6): void => assert.ok(Math.abs(a - b) <= tol, `${a} vs ${b}`);

const same = (size: number): Geometry => ({ frameWidth: size, frameHeight: size, inputWidth: size, inputHeight: size });

// ---- classification ---------------------------------------------------------------------------

const cls = (activation: ClassificationHead['activation'], rejectLabels = ['scratch', 'dent']): ClassificationHead => ({
  type: 'classification',
  output: 'logits',
  activation,
  labels: ['good', 'scratch', 'dent'],
  rejectLabels,
});

test('classification softmax: probabilities, summed reject score, top label', () => {
  // exp of the logits is [1, 2, 3] → probabilities [1/6, 2/6, 3/6].
  const v = applyHead(cls('softmax'), 0.5, { logits: tensor([1, 3], [0, Math.log(2), Math.log(3)]) }, same(10));
  close(v.scores!.good!, 1 / 6);
  close(v.scores!.scratch!, 2 / 6);
  close(v.scores!.dent!, 3 / 6);
  close(v.score, 5 / 6);
  assert.equal(v.verdict, 'reject');
  assert.equal(v.label, 'dent');
  assert.equal(v.threshold, 0.5);
  // Only dent reaches the threshold on its own.
  assert.deepEqual(v.defects.map((d) => d.class), ['dent']);
});

test('classification softmax: the sum rejects though no single label does → strongest reject label', () => {
  const v = applyHead(cls('softmax'), 0.5, { logits: tensor([1, 3], [Math.log(0.4), Math.log(0.35), Math.log(0.25)]) }, same(10));
  close(v.score, 0.6);
  assert.equal(v.verdict, 'reject');
  assert.equal(v.label, 'good');
  assert.equal(v.defects.length, 1);
  assert.equal(v.defects[0]!.class, 'scratch');
  close(v.defects[0]!.score, 0.35);
});

test('classification sigmoid: score is the max of the reject labels', () => {
  // sigmoid(ln 3) = 0.75, sigmoid(-ln 3) = 0.25, sigmoid(0) = 0.5
  const v = applyHead(cls('sigmoid'), 0.7, { logits: tensor([1, 3], [0, Math.log(3), -Math.log(3)]) }, same(10));
  close(v.scores!.scratch!, 0.75);
  close(v.scores!.dent!, 0.25);
  close(v.score, 0.75);
  assert.equal(v.verdict, 'reject');
  assert.equal(v.label, 'scratch');
});

test('classification none: values used as they are; below threshold passes with no defects', () => {
  const v = applyHead(cls('none'), 0.5, { logits: tensor([3], [0.7, 0.2, 0.1]) }, same(10));
  close(v.score, 0.3);
  assert.equal(v.verdict, 'pass');
  assert.equal(v.label, 'good');
  assert.deepEqual(v.defects, []);
});

test('classification: score equal to the threshold rejects', () => {
  const v = applyHead(cls('none', ['scratch']), 0.25, { logits: tensor([1, 3], [0.5, 0.25, 0.25]) }, same(10));
  assert.equal(v.score, 0.25);
  assert.equal(v.verdict, 'reject');
});

test('classification: malformed outputs are HeadErrors naming the output', () => {
  const head = cls('softmax');
  assert.throws(() => applyHead(head, 0.5, { probs: tensor([1, 3], [0, 0, 0]) }, same(10)), (e: unknown) => {
    assert.ok(e instanceof HeadError);
    assert.match(e.message, /output 'logits' is missing \(model gave: probs\)/);
    return true;
  });
  assert.throws(() => applyHead(head, 0.5, { logits: tensor([1, 2], [0, 0]) }, same(10)), /output 'logits' has shape \[1, 2\], expected \[1, 3\]/);
  assert.throws(() => applyHead(head, 0.5, { logits: tensor([3, 1], [0, 0, 0]) }, same(10)), /shape \[3, 1\]/);
  assert.throws(() => applyHead(head, 0.5, { logits: tensor([1, 3], [0, NaN, 0]) }, same(10)), /output 'logits' contains NaN at index 1/);
  assert.throws(() => applyHead(head, 0.5, { logits: tensor([1, 4], [0, 0, 0]) }, same(10)), /3 values for dims \[1, 4\]/);
  assert.throws(() => applyHead(cls('softmax', ['crack']), 0.5, { logits: tensor([1, 3], [0, 0, 0]) }, same(10)), /reject label 'crack'/);
});

// ---- anomaly ----------------------------------------------------------------------------------

const anomalyHead = (extra: Partial<AnomalyHead> = {}): AnomalyHead => ({ type: 'anomaly', scoreOutput: 'score', mapOutput: 'map', ...extra });

// 4x4 map. Components at level 0.5 (4-neighbour):
//   A = (0,0),(1,0) max 0.9 · B = (3,1),(3,2) max 0.7 · C = (0,3) max 0.8 · D = (1,2) max 0.55
// D touches C only diagonally, so they stay apart.
const MAP = [
  0.9, 0.9, 0, 0,
  0, 0, 0, 0.6,
  0, 0.55, 0, 0.7,
  0.8, 0, 0, 0,
];
// Input 8x8 and frame 16x16: a map cell is 2 input pixels = 4 frame pixels, 16 frame px² in area.
const GEO16: Geometry = { frameWidth: 16, frameHeight: 16, inputWidth: 8, inputHeight: 8 };

test('anomaly: components become frame-pixel boxes, strongest first', () => {
  const v = applyHead(anomalyHead(), 0.5, { score: tensor([1], [0.9]), map: tensor([1, 1, 4, 4], MAP) }, GEO16);
  assert.equal(v.verdict, 'reject');
  assert.equal(v.score, Math.fround(0.9)); // the score is read from a float32 tensor
  assert.deepEqual(
    v.defects.map((d) => [d.class, Math.round(d.score * 100) / 100, d.box, d.area]),
    [
      ['anomaly', 0.9, [0, 0, 8, 4], 32],
      ['anomaly', 0.8, [0, 12, 4, 4], 16],
      ['anomaly', 0.7, [12, 4, 4, 8], 32],
      ['anomaly', 0.55, [4, 8, 4, 4], 16],
    ],
  );
  assert.deepEqual(v.map, { width: 4, height: 4, data: MAP }); // float32 values rounded to 4 digits
});

test('anomaly: minArea, mapThreshold and defectClass', () => {
  const big = applyHead(anomalyHead({ minArea: 20 }), 0.5, { score: tensor([1, 1], [0.9]), map: tensor([1, 4, 4], MAP) }, GEO16);
  assert.deepEqual(big.defects.map((d) => d.box), [[0, 0, 8, 4], [12, 4, 4, 8]]);

  const strong = applyHead(anomalyHead({ mapThreshold: 0.75, defectClass: 'blemish' }), 0.5, { score: tensor([1], [0.9]), map: tensor([1, 1, 4, 4], MAP) }, GEO16);
  assert.deepEqual(strong.defects.map((d) => [d.class, d.box]), [['blemish', [0, 0, 8, 4]], ['blemish', [0, 12, 4, 4]]]);
});

test('anomaly: a score below the threshold passes; no map output means no defects and no overlay', () => {
  const v = applyHead({ type: 'anomaly', scoreOutput: 'score' }, 0.5, { score: tensor([1], [0.49]) }, GEO16);
  assert.equal(v.verdict, 'pass');
  assert.deepEqual(v.defects, []);
  assert.equal(v.map, undefined);
});

test('anomaly: crop + stretch maps cells into the cropped region', () => {
  // Crop 320x240 at (100, 50) of a 640x480 frame, fed as 160x120: frame = (100, 50) + 2 * input.
  const geo: Geometry = { frameWidth: 640, frameHeight: 480, inputWidth: 160, inputHeight: 120, crop: { x: 100, y: 50, width: 320, height: 240 } };
  // 4x3 map over 160x120: a cell is 40x40 input = 80x80 frame pixels.
  const map = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
  const v = applyHead(anomalyHead(), 0.5, { score: tensor([1], [1]), map: tensor([1, 1, 3, 4], map) }, geo);
  assert.deepEqual(v.defects.map((d) => [d.box, d.area]), [[[180, 130, 80, 80], 6400]]);
});

test('anomaly: letterbox padding is removed and boxes clip to the frame', () => {
  // 200x100 frame into 64x64: scale 0.32 → 64x32 image, padded 16 rows top and bottom.
  const geo: Geometry = { frameWidth: 200, frameHeight: 100, inputWidth: 64, inputHeight: 64, resize: 'letterbox' };
  // 4x4 map: cells are 16x16 input px. Row 0 lies entirely in the top padding; row 1 holds
  // frame rows 0..50, cell (1,1) frame x 50..100.
  const map = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
  const v = applyHead(anomalyHead(), 0.5, { score: tensor([1], [1]), map: tensor([1, 1, 4, 4], map) }, geo);
  assert.deepEqual(v.defects.map((d) => d.box), [[50, 0, 50, 50]]);
});

test('anomaly: malformed outputs are HeadErrors', () => {
  const h = anomalyHead();
  const ok = { score: tensor([1], [0.1]), map: tensor([1, 1, 2, 2], [0, 0, 0, 0]) };
  assert.throws(() => applyHead(h, 0.5, { map: ok.map }, GEO16), /output 'score' is missing/);
  assert.throws(() => applyHead(h, 0.5, { score: ok.score }, GEO16), /output 'map' is missing/);
  assert.throws(() => applyHead(h, 0.5, { ...ok, score: tensor([2], [0, 1]) }, GEO16), /output 'score' has shape \[2\]/);
  assert.throws(() => applyHead(h, 0.5, { ...ok, map: tensor([1, 2, 2, 2], new Array(8).fill(0)) }, GEO16), /output 'map' has shape \[1, 2, 2, 2\]/);
  assert.throws(() => applyHead(h, 0.5, { ...ok, map: tensor([2, 2], [0, 0, 0, 0]) }, GEO16), /output 'map' has shape \[2, 2\]/);
  assert.throws(() => applyHead(h, 0.5, { ...ok, score: tensor([1], [NaN]) }, GEO16), /output 'score' contains NaN/);
  assert.throws(() => applyHead(h, 0.5, { ...ok, map: tensor([1, 1, 2, 2], [0, Infinity, 0, 0]) }, GEO16), (e: unknown) => e instanceof HeadError && /'map' contains Infinity/.test(e.message));
});

test('connectedComponents: 4-neighbour, counts, bounding boxes, max', () => {
  const cs = connectedComponents(Float32Array.from(MAP), 4, 4, 0.5);
  assert.deepEqual(
    cs.map((c) => [c.x0, c.y0, c.x1, c.y1, c.cells]),
    [[0, 0, 1, 0, 2], [3, 1, 3, 2, 2], [1, 2, 1, 2, 1], [0, 3, 0, 3, 1]],
  );
  // A U shape is one component even though the scan meets its arms separately.
  const u = Float32Array.from([1, 0, 1, 1, 0, 1, 1, 1, 1]);
  assert.deepEqual(connectedComponents(u, 3, 3, 1).map((c) => c.cells), [7]);
});

test('downsampleMax: block max keeps small peaks; maps within the limit are unchanged', () => {
  // 130x2 map, f = ceil(130 / 64) = 3 → 44x1.
  const data = new Float32Array(260);
  data[130 + 128] = 5; // row 1, column 128 → output column 42
  const m = downsampleMax(data, 130, 2, 64);
  assert.equal(m.width, 44);
  assert.equal(m.height, 1);
  assert.equal(m.data[42], 5);
  assert.equal(m.data.filter((v) => v !== 0).length, 1);
  assert.deepEqual(downsampleMax(Float32Array.from([1, 2, 3, 4]), 2, 2, 64), { width: 2, height: 2, data: [1, 2, 3, 4] });
  assert.deepEqual(downsampleMax(Float32Array.from([0.123456, 12345.6]), 2, 1, 64).data, [0.1235, 12350]);
});

test('anomaly overlay of a large map is at most 64x64', () => {
  const w = 200;
  const h = 150;
  const map = new Array(w * h).fill(0);
  const v = applyHead(anomalyHead(), 0.5, { score: tensor([1], [0]), map: tensor([1, 1, h, w], map) }, { frameWidth: w, frameHeight: h, inputWidth: w, inputHeight: h });
  assert.deepEqual([v.map!.width, v.map!.height], [50, 38]); // f = 4
  assert.equal(v.map!.data.length, 50 * 38);
});

// ---- detection --------------------------------------------------------------------------------

const detHead = (extra: Partial<DetectionHead> = {}): DetectionHead => ({
  type: 'detection',
  output: 'boxes',
  format: 'yolov8',
  labels: ['scratch', 'dust'],
  confidence: 0.4,
  iou: 0.5,
  minArea: 10,
  ...extra,
});

/** yolov8 layout [1, 4 + C, N] from per-candidate rows [cx, cy, w, h, ...classScores]. */
function yolo(rows: number[][]): OutputTensor {
  const n = rows.length;
  const attrs = rows[0]!.length;
  const data = new Float32Array(attrs * n);
  rows.forEach((r, i) => r.forEach((v, a) => (data[a * n + i] = v)));
  return { dims: [1, attrs, n], data };
}

const CANDIDATES = [
  [20, 20, 20, 20, 0.9, 0.1], // scratch, box 10..30
  [22, 20, 20, 20, 0.8, 0.0], // scratch, IoU 360/440 = 0.82 with the first → suppressed
  [22, 20, 20, 20, 0.0, 0.7], // dust: other class, kept despite the overlap
  [70, 70, 10, 10, 0.3, 0.2], // below confidence 0.4
  [80, 20, 2, 2, 0.95, 0.0], // area 4 < minArea 10
  [50, 80, 20, 10, 0.6, 0.0], // scratch, no overlap
];

test('detection: confidence filter, per-class NMS, minArea, score = max confidence', () => {
  const v = applyHead(detHead(), 0.5, { boxes: yolo(CANDIDATES) }, same(100));
  assert.equal(v.verdict, 'reject');
  close(v.score, 0.9);
  assert.deepEqual(
    v.defects.map((d) => [d.class, Math.round(d.score * 100) / 100, d.box, d.area]),
    [
      ['scratch', 0.9, [10, 10, 20, 20], 400],
      ['dust', 0.7, [12, 10, 20, 20], 400],
      ['scratch', 0.6, [40, 75, 20, 10], 200],
    ],
  );
});

test('detection: a looser IoU keeps the overlapping box', () => {
  const v = applyHead(detHead({ iou: 0.9 }), 0.5, { boxes: yolo(CANDIDATES) }, same(100));
  assert.equal(v.defects.filter((d) => d.class === 'scratch').length, 3);
});

test('detection: only reject labels make the score', () => {
  const head = detHead({ rejectLabels: ['dust'] });
  const v = applyHead(head, 0.5, { boxes: yolo(CANDIDATES) }, same(100));
  close(v.score, 0.7);
  assert.equal(v.verdict, 'reject');
  const strict = applyHead(head, 0.8, { boxes: yolo(CANDIDATES) }, same(100));
  assert.equal(strict.verdict, 'pass');
  assert.equal(strict.defects.length, 3); // still reported for the overlay
});

test('detection: nothing found scores 0 and passes', () => {
  const v = applyHead(detHead(), 0.5, { boxes: yolo([[10, 10, 5, 5, 0.1, 0.2]]) }, same(100));
  assert.equal(v.score, 0);
  assert.equal(v.verdict, 'pass');
  assert.deepEqual(v.defects, []);
});

test('detection: letterbox mapping back to frame pixels', () => {
  // 200x100 frame into 64x64: frame x = 3.125 * x, frame y = 3.125 * (y - 16).
  const geo: Geometry = { frameWidth: 200, frameHeight: 100, inputWidth: 64, inputHeight: 64, resize: 'letterbox' };
  const v = applyHead(detHead(), 0.5, {
    boxes: yolo([
      [24, 32, 16, 16, 0.9, 0], // input 16..32 x 24..40 → frame [50, 25, 50, 50]
      [40, 5, 8, 6, 0, 0.8], // entirely in the top padding → dropped
    ]),
  }, geo);
  assert.deepEqual(v.defects.map((d) => [d.class, d.box, d.area]), [['scratch', [50, 25, 50, 50], 2500]]);
});

test('inputToFrame: stretch, crop and letterbox transforms', () => {
  assert.deepEqual(inputToFrame({ frameWidth: 320, frameHeight: 240, inputWidth: 160, inputHeight: 120 }), { scaleX: 2, scaleY: 2, offsetX: 0, offsetY: 0 });
  // A tall crop into a square input pads left and right: 100x200 → 32x64, padX = 16.
  const t = inputToFrame({ frameWidth: 640, frameHeight: 480, inputWidth: 64, inputHeight: 64, resize: 'letterbox', crop: { x: 10, y: 20, width: 100, height: 200 } });
  assert.deepEqual(t, { scaleX: 3.125, scaleY: 3.125, offsetX: 10 - 16 * 3.125, offsetY: 20 });
});

test('detection: malformed outputs are HeadErrors', () => {
  const h = detHead();
  assert.throws(() => applyHead(h, 0.5, {}, same(100)), /output 'boxes' is missing \(model gave: nothing\)/);
  assert.throws(() => applyHead(h, 0.5, { boxes: yolo([[1, 1, 1, 1, 1]]) }, same(100)), /output 'boxes' has shape \[1, 5, 1\], expected \[1, 6, N\]/);
  const bad = yolo([[1, 1, 1, 1, 1, 0]]);
  bad.data[2] = NaN;
  assert.throws(() => applyHead(h, 0.5, { boxes: bad }, same(100)), /output 'boxes' contains NaN at index 2/);
});

test('anomaly: a map full of specks reports the strongest MAX_DEFECTS regions only', () => {
  // 30x30 checkerboard: 450 isolated cells (4-neighbour), values rising with the index.
  const map = Array.from({ length: 900 }, (_, i) => ((Math.floor(i / 30) + (i % 30)) % 2 === 0 ? 1 + i / 1000 : 0));
  const v = applyHead(anomalyHead(), 0.5, { score: tensor([1], [1]), map: tensor([1, 1, 30, 30], map) }, same(30));
  assert.equal(v.defects.length, MAX_DEFECTS);
  close(v.defects[0]!.score, 1 + 899 / 1000, 1e-6); // the last cell, (29, 29), is on the board
});
