// Heads turn raw model outputs into a Verdict. They are pure functions of (head spec, threshold,
// output tensors, geometry), so they run the same in a worker, in tests and in offline tools.
// Anything a head cannot read (missing output, wrong shape, NaN) is a HeadError, which the
// inspector reports as a 'model_error' fail-safe: a broken model must divert parts, never pass them.
import type { Defect, Verdict } from '../part.js';
import type { AnomalyHead, ClassificationHead, DetectionHead, HeadSpec } from './types.js';

export interface OutputTensor {
  dims: number[];
  data: Float32Array;
}

/** How the model input was cut from the frame: needed to map boxes back to frame pixels. */
export interface Geometry {
  frameWidth: number;
  frameHeight: number;
  inputWidth: number;
  inputHeight: number;
  /** Region of the frame fed to the model (default: the whole frame). */
  crop?: { x: number; y: number; width: number; height: number };
  /** Default 'stretch'. Letterbox: see inputToFrame. */
  resize?: 'stretch' | 'letterbox';
}

export class HeadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HeadError';
  }
}

/** Longest side of the overlay map in Verdict.map. */
export const MAX_OVERLAY_SIDE = 64;
/** Most defects reported per verdict (the strongest): keeps a noisy map from flooding MQTT. */
export const MAX_DEFECTS = 100;

export function applyHead(head: HeadSpec, threshold: number, outputs: Record<string, OutputTensor>, geo: Geometry): Verdict {
  switch (head.type) {
    case 'classification':
      return classify(head, threshold, outputs);
    case 'anomaly':
      return anomaly(head, threshold, outputs, geo);
    case 'detection':
      return detect(head, threshold, outputs, geo);
    default:
      throw new HeadError(`unknown head type '${(head as { type: unknown }).type}'`);
  }
}

// ---- geometry ---------------------------------------------------------------------------------

/**
 * The linear map from model-input pixels to frame pixels: frame = offset + input * scale.
 * Letterbox means: the region is scaled by min(inputW / w, inputH / h), rounded to whole pixels,
 * and centred, the padding being floor((input - scaled) / 2) on the left/top (as sharp's
 * fit 'contain' and most YOLO pre-processing do). Preprocessing must use the same convention.
 */
export function inputToFrame(geo: Geometry): { scaleX: number; scaleY: number; offsetX: number; offsetY: number } {
  const r = region(geo);
  if (geo.resize === 'letterbox') {
    const s = Math.min(geo.inputWidth / r.width, geo.inputHeight / r.height);
    const scaledW = Math.min(geo.inputWidth, Math.max(1, Math.round(r.width * s)));
    const scaledH = Math.min(geo.inputHeight, Math.max(1, Math.round(r.height * s)));
    const padX = Math.floor((geo.inputWidth - scaledW) / 2);
    const padY = Math.floor((geo.inputHeight - scaledH) / 2);
    const scaleX = r.width / scaledW;
    const scaleY = r.height / scaledH;
    return { scaleX, scaleY, offsetX: r.x - padX * scaleX, offsetY: r.y - padY * scaleY };
  }
  return { scaleX: r.width / geo.inputWidth, scaleY: r.height / geo.inputHeight, offsetX: r.x, offsetY: r.y };
}

function region(geo: Geometry): { x: number; y: number; width: number; height: number } {
  return geo.crop ?? { x: 0, y: 0, width: geo.frameWidth, height: geo.frameHeight };
}

/**
 * Maps a box given by corners in input pixels to an integer [x, y, w, h] box in frame pixels,
 * clipped to the region the model saw (letterbox padding maps outside it). Null when nothing
 * is left after clipping. `area` is the clipped, unrounded area.
 */
function boxToFrame(
  x0: number,
  y0: number,
  x1: number,
  y1: number,
  geo: Geometry,
): { box: [number, number, number, number]; area: number } | null {
  const t = inputToFrame(geo);
  const r = region(geo);
  const fx0 = clamp(t.offsetX + x0 * t.scaleX, r.x, r.x + r.width);
  const fx1 = clamp(t.offsetX + x1 * t.scaleX, r.x, r.x + r.width);
  const fy0 = clamp(t.offsetY + y0 * t.scaleY, r.y, r.y + r.height);
  const fy1 = clamp(t.offsetY + y1 * t.scaleY, r.y, r.y + r.height);
  if (fx1 <= fx0 || fy1 <= fy0) return null;
  // Round outwards so the box covers the region; the epsilon absorbs float noise (10.0000001).
  const bx0 = Math.floor(fx0 + 1e-6);
  const by0 = Math.floor(fy0 + 1e-6);
  const bx1 = Math.ceil(fx1 - 1e-6);
  const by1 = Math.ceil(fy1 - 1e-6);
  return { box: [bx0, by0, bx1 - bx0, by1 - by0], area: (fx1 - fx0) * (fy1 - fy0) };
}

const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));

// ---- reading outputs --------------------------------------------------------------------------

function getOutput(outputs: Record<string, OutputTensor>, name: string): OutputTensor {
  const t = outputs[name];
  if (!t) throw new HeadError(`output '${name}' is missing (model gave: ${Object.keys(outputs).join(', ') || 'nothing'})`);
  const count = t.dims.reduce((a, b) => a * b, 1);
  if (t.data.length !== count) {
    throw new HeadError(`output '${name}' has ${t.data.length} values for dims [${t.dims.join(', ')}]`);
  }
  for (let i = 0; i < t.data.length; i++) {
    if (!Number.isFinite(t.data[i]!)) throw new HeadError(`output '${name}' contains ${t.data[i]} at index ${i}`);
  }
  return t;
}

const shapeError = (name: string, dims: number[], expected: string): HeadError =>
  new HeadError(`output '${name}' has shape [${dims.join(', ')}], expected ${expected}`);

/** Strips leading 1s (batch, channel) down to `rank` dims; null when the shape cannot be read so. */
function squeezeLeading(dims: number[], rank: number): number[] | null {
  let d = dims;
  while (d.length > rank && d[0] === 1) d = d.slice(1);
  return d.length === rank ? d : null;
}

function verdictOf(score: number, threshold: number): 'pass' | 'reject' {
  return score >= threshold ? 'reject' : 'pass';
}

// ---- classification ---------------------------------------------------------------------------

function classify(head: ClassificationHead, threshold: number, outputs: Record<string, OutputTensor>): Verdict {
  const out = getOutput(outputs, head.output);
  const n = head.labels.length;
  const dims = squeezeLeading(out.dims, 1);
  if (!dims || dims[0] !== n) throw shapeError(head.output, out.dims, `[1, ${n}] (one value per label)`);
  for (const l of head.rejectLabels) {
    if (!head.labels.includes(l)) throw new HeadError(`reject label '${l}' is not one of the labels`);
  }

  const raw = [...out.data];
  let probs: number[];
  if (head.activation === 'softmax') {
    const max = Math.max(...raw);
    const e = raw.map((v) => Math.exp(v - max));
    const sum = e.reduce((a, b) => a + b, 0);
    probs = e.map((v) => v / sum);
  } else if (head.activation === 'sigmoid') {
    probs = raw.map((v) => 1 / (1 + Math.exp(-v)));
  } else {
    probs = raw;
  }

  const scores: Record<string, number> = {};
  head.labels.forEach((l, i) => (scores[l] = probs[i]!));
  const top = probs.indexOf(Math.max(...probs));
  const rejectProbs = head.rejectLabels.map((l) => scores[l]!);
  // Labels of one softmax are exclusive, so their probabilities add up; sigmoid labels are not.
  const score =
    rejectProbs.length === 0 ? 0 : head.activation === 'sigmoid' ? Math.max(...rejectProbs) : rejectProbs.reduce((a, b) => a + b, 0);
  const verdict = verdictOf(score, threshold);

  const defects: Defect[] = [];
  if (verdict === 'reject') {
    // Each reject label that alone reaches the threshold; else (a softmax sum did) the strongest one.
    const ranked = head.rejectLabels.map((l) => ({ class: l, score: scores[l]! })).sort((a, b) => b.score - a.score);
    const strong = ranked.filter((d) => d.score >= threshold);
    defects.push(...(strong.length > 0 ? strong : ranked.slice(0, 1)));
  }
  return { verdict, score, threshold, scores, label: head.labels[top]!, defects };
}

// ---- anomaly ----------------------------------------------------------------------------------

function anomaly(head: AnomalyHead, threshold: number, outputs: Record<string, OutputTensor>, geo: Geometry): Verdict {
  const scoreOut = getOutput(outputs, head.scoreOutput);
  if (scoreOut.data.length !== 1) throw shapeError(head.scoreOutput, scoreOut.dims, '[1] or [1, 1] (one score)');
  const score = scoreOut.data[0]!;
  const verdict: Verdict = { verdict: verdictOf(score, threshold), score, threshold, defects: [] };
  if (!head.mapOutput) return verdict;

  const mapOut = getOutput(outputs, head.mapOutput);
  const hw = squeezeLeading(mapOut.dims, 2);
  if (!hw || mapOut.dims.length < 3 || hw[0]! < 1 || hw[1]! < 1) {
    throw shapeError(head.mapOutput, mapOut.dims, '[1, 1, h, w] or [1, h, w]');
  }
  const [h, w] = hw as [number, number];
  const cellW = geo.inputWidth / w;
  const cellH = geo.inputHeight / h;
  const components = connectedComponents(mapOut.data, w, h, head.mapThreshold ?? threshold);
  const t = inputToFrame(geo);
  const cellArea = cellW * t.scaleX * cellH * t.scaleY; // frame pixels per map cell

  const defects: Defect[] = [];
  for (const c of components) {
    const mapped = boxToFrame(c.x0 * cellW, c.y0 * cellH, (c.x1 + 1) * cellW, (c.y1 + 1) * cellH, geo);
    if (!mapped) continue; // entirely in letterbox padding
    const area = c.cells * cellArea;
    if (area < (head.minArea ?? 0)) continue;
    defects.push({ class: head.defectClass ?? 'anomaly', score: c.max, box: mapped.box, area: Math.round(area) });
  }
  defects.sort((a, b) => b.score - a.score);
  verdict.defects = defects.slice(0, MAX_DEFECTS);
  verdict.map = downsampleMax(mapOut.data, w, h, MAX_OVERLAY_SIDE);
  return verdict;
}

export interface Component {
  /** Bounding box in map cells (inclusive). */
  x0: number;
  y0: number;
  x1: number;
  y1: number;
  cells: number;
  max: number;
}

/** 4-neighbour connected components of the cells >= level, found with an explicit stack. */
export function connectedComponents(data: Float32Array, w: number, h: number, level: number): Component[] {
  const seen = new Uint8Array(w * h);
  const stack: number[] = [];
  const found: Component[] = [];
  for (let start = 0; start < w * h; start++) {
    if (seen[start] || data[start]! < level) continue;
    const c: Component = { x0: w, y0: h, x1: -1, y1: -1, cells: 0, max: -Infinity };
    seen[start] = 1;
    stack.push(start);
    while (stack.length > 0) {
      const i = stack.pop()!;
      const x = i % w;
      const y = (i - x) / w;
      c.cells++;
      c.max = Math.max(c.max, data[i]!);
      c.x0 = Math.min(c.x0, x);
      c.x1 = Math.max(c.x1, x);
      c.y0 = Math.min(c.y0, y);
      c.y1 = Math.max(c.y1, y);
      const visit = (j: number): void => {
        if (!seen[j] && data[j]! >= level) {
          seen[j] = 1;
          stack.push(j);
        }
      };
      if (x > 0) visit(i - 1);
      if (x < w - 1) visit(i + 1);
      if (y > 0) visit(i - w);
      if (y < h - 1) visit(i + w);
    }
    found.push(c);
  }
  return found;
}

/** Max-pools the map down so its longest side is at most `maxSide` (max keeps small defects visible), values to 4 significant digits. */
export function downsampleMax(data: Float32Array, w: number, h: number, maxSide: number): { width: number; height: number; data: number[] } {
  const f = Math.max(1, Math.ceil(Math.max(w, h) / maxSide));
  const ow = Math.ceil(w / f);
  const oh = Math.ceil(h / f);
  const out = new Array<number>(ow * oh).fill(-Infinity);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const o = Math.floor(y / f) * ow + Math.floor(x / f);
      out[o] = Math.max(out[o]!, data[y * w + x]!);
    }
  }
  // Four significant digits are plenty for an overlay and keep the verdict's JSON small.
  return { width: ow, height: oh, data: out.map((v) => Number(v.toPrecision(4))) };
}

// ---- detection --------------------------------------------------------------------------------

export interface DetectionBox {
  /** Class index. */
  cls: number;
  conf: number;
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

function detect(head: DetectionHead, threshold: number, outputs: Record<string, OutputTensor>, geo: Geometry): Verdict {
  const out = getOutput(outputs, head.output);
  const C = head.labels.length;
  const dims = squeezeLeading(out.dims, 2);
  if (!dims || out.dims.length !== 3 || dims[0] !== 4 + C) {
    throw shapeError(head.output, out.dims, `[1, ${4 + C}, N] (yolov8: cx, cy, w, h + ${C} class scores)`);
  }
  const N = dims[1]!;
  const d = out.data;

  // yolov8 layout: row r holds attribute r of every candidate, so candidate n's attribute r is d[r*N + n].
  const candidates: DetectionBox[] = [];
  for (let n = 0; n < N; n++) {
    let cls = 0;
    for (let c = 1; c < C; c++) if (d[(4 + c) * N + n]! > d[(4 + cls) * N + n]!) cls = c;
    const conf = d[(4 + cls) * N + n]!;
    if (conf < head.confidence) continue;
    const [cx, cy, bw, bh] = [d[n]!, d[N + n]!, d[2 * N + n]!, d[3 * N + n]!];
    candidates.push({ cls, conf, x0: cx - bw / 2, y0: cy - bh / 2, x1: cx + bw / 2, y1: cy + bh / 2 });
  }

  const rejectLabels = new Set(head.rejectLabels ?? head.labels);
  const defects: Defect[] = [];
  let score = 0;
  for (const b of nms(candidates, head.iou)) {
    const mapped = boxToFrame(b.x0, b.y0, b.x1, b.y1, geo);
    if (!mapped || mapped.area < (head.minArea ?? 0)) continue;
    const label = head.labels[b.cls]!;
    defects.push({ class: label, score: b.conf, box: mapped.box, area: Math.round(mapped.area) });
    // Boxes of labels that are not reject labels are reported but do not make the score.
    if (rejectLabels.has(label)) score = Math.max(score, b.conf);
  }
  defects.sort((a, b) => b.score - a.score);
  return { verdict: verdictOf(score, threshold), score, threshold, defects: defects.slice(0, MAX_DEFECTS) };
}

/** Greedy per-class non-maximum suppression: a box goes when it overlaps a stronger one of its class by more than `iou`. */
export function nms<T extends DetectionBox>(boxes: T[], iou: number): T[] {
  const sorted = [...boxes].sort((a, b) => b.conf - a.conf);
  const kept: T[] = [];
  for (const b of sorted) {
    if (kept.every((k) => k.cls !== b.cls || iouOf(k, b) <= iou)) kept.push(b);
  }
  return kept;
}

function iouOf(a: DetectionBox, b: DetectionBox): number {
  const iw = Math.max(0, Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0));
  const ih = Math.max(0, Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0));
  const inter = iw * ih;
  const union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter;
  return union > 0 ? inter / union : 0;
}
