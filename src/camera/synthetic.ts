// Synthetic screen-protector film: a deterministic procedural camera so the whole line (and model
// calibration) can run without hardware. Every frame is a pure function of (seed, index).
import type { Clock } from '../clock.js';
import type { Config } from '../config/schema.js';
import type { Frame, GroundTruth } from '../part.js';
import { FpsMeter, Pacer, Subscribers } from './kit.js';
import { FrameError, type FrameSource } from './types.js';

// ---------------------------------------------------------------------------------------------
// Seeded randomness

/** 32-bit hash of (seed, index): neighbouring indices must give unrelated streams. */
export function hashSeed(seed: number, index: number): number {
  let h = Math.imul((seed | 0) ^ 0x5bd1e995, 0x9e3779b1) ^ Math.imul(index | 0, 0x85ebca6b);
  h ^= (index / 4294967296) | 0; // indices past 2^32 still differ
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
  return (h ^ (h >>> 16)) >>> 0;
}

/** mulberry32: tiny, fast, good enough for textures and dice. Returns floats in [0, 1). */
export function mulberry32(a: number): () => number {
  let s = a >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Unit gaussians, drawn once with a fixed seed: per-pixel Box-Muller would dominate render time.
const GAUSS = (() => {
  const n = 65536;
  const g = new Float32Array(n);
  const r = mulberry32(0x9a55);
  for (let i = 0; i < n; i += 2) {
    const u = 1 - r();
    const v = r();
    const m = Math.sqrt(-2 * Math.log(u));
    g[i] = m * Math.cos(2 * Math.PI * v);
    g[i + 1] = m * Math.sin(2 * Math.PI * v);
  }
  let mean = 0;
  for (let i = 0; i < n; i++) mean += g[i]!;
  mean /= n;
  let v2 = 0;
  for (let i = 0; i < n; i++) v2 += (g[i]! - mean) ** 2;
  const sd = Math.sqrt(v2 / n);
  for (let i = 0; i < n; i++) g[i] = (g[i]! - mean) / sd;
  return g;
})();

// ---------------------------------------------------------------------------------------------
// Rendering

export type FilmDefectClass = 'scratch' | 'dust' | 'bubble' | 'stain';
export const FILM_DEFECT_CLASSES: readonly FilmDefectClass[] = ['scratch', 'dust', 'bubble', 'stain'];

export interface FilmOptions {
  width: number;
  height: number;
  seed: number;
  defectRate: number;
}

export interface FilmFrame {
  data: Uint8Array;
  width: number;
  height: number;
  channels: 3;
  truth: GroundTruth;
}

type Box = [number, number, number, number];

const clamp = (v: number, lo: number, hi: number): number => (v < lo ? lo : v > hi ? hi : v);
const lerp = (a: number, b: number, t: number): number => a + (b - a) * t;

/** Bounding box [x0,y0,x1,y1) → clipped integer [x, y, w, h]. */
function toBox(x0: number, y0: number, x1: number, y1: number, w: number, h: number): Box {
  const ax = clamp(Math.floor(x0), 0, w);
  const ay = clamp(Math.floor(y0), 0, h);
  const bx = clamp(Math.ceil(x1), 0, w);
  const by = clamp(Math.ceil(y1), 0, h);
  return [ax, ay, Math.max(1, bx - ax), Math.max(1, by - ay)];
}

/**
 * Signed contrast in grey levels. Mostly clearly visible; about one defect in eight is faint
 * (close to the noise floor) so a model cannot trivially reach 100 %.
 */
function contrast(rnd: () => number, lo: number, hi: number, faintLo: number, faintHi: number): number {
  return rnd() < 0.12 ? lerp(faintLo, faintHi, rnd()) : lerp(lo, hi, rnd());
}

/**
 * The ground-truth box: the pixels a defect changes by at least a fifth of its peak contrast, so
 * soft tails (stains, bubble halos) are inside it and invisible fringes don't inflate it.
 */
class Extent {
  x0 = Infinity;
  y0 = Infinity;
  x1 = -Infinity;
  y1 = -Infinity;
  constructor(readonly threshold: number) {}
  add(x: number, y: number, delta: number): void {
    if (Math.abs(delta) < this.threshold) return;
    if (x < this.x0) this.x0 = x;
    if (y < this.y0) this.y0 = y;
    if (x + 1 > this.x1) this.x1 = x + 1;
    if (y + 1 > this.y1) this.y1 = y + 1;
  }
  box(w: number, h: number): Box {
    return this.x1 > this.x0 ? toBox(this.x0, this.y0, this.x1, this.y1, w, h) : [0, 0, 1, 1];
  }
}

/** Add fn(x, y) grey levels over a region (x, y are pixel centres), recording the extent. */
function paint(
  L: Float32Array,
  w: number,
  h: number,
  region: Box,
  ext: Extent,
  fn: (x: number, y: number) => number,
): void {
  const [bx, by, bw, bh] = region;
  for (let y = by; y < by + bh && y < h; y++) {
    const row = y * w;
    for (let x = bx; x < bx + bw && x < w; x++) {
      const d = fn(x + 0.5, y + 0.5);
      if (d !== 0) {
        L[row + x]! += d;
        ext.add(x, y, d);
      }
    }
  }
}

function drawScratch(L: Float32Array, w: number, h: number, rnd: () => number): Box {
  const len = lerp(0.2, 0.6, rnd()) * w;
  const ang = rnd() * Math.PI;
  const dx = Math.cos(ang) * len;
  const dy = Math.sin(ang) * len;
  // Keep the whole chord inside the frame (with a small margin).
  const m = 3;
  const x0 = lerp(m + Math.max(0, -dx), w - m - Math.max(0, dx), rnd());
  const y0 = lerp(m + Math.max(0, -dy), h - m - Math.max(0, dy), rnd());
  const x2 = x0 + dx;
  const y2 = y0 + dy;
  // Straight line or a gentle arc: control point pushed off the chord's middle.
  const bend = rnd() < 0.5 ? 0 : (rnd() - 0.5) * 0.3 * len;
  const x1 = (x0 + x2) / 2 - (dy / len) * bend;
  const y1 = (y0 + y2) / 2 + (dx / len) * bend;
  const halfW = lerp(0.5, 1.0, rnd()); // 1-2 px wide
  const c = (rnd() < 0.6 ? 1 : -1) * contrast(rnd, 25, 70, 6, 12); // scratches scatter light: mostly bright

  // Rasterise a coverage mask along the curve (max, not sum, so samples don't pile up).
  const pts: [number, number][] = [];
  const steps = Math.ceil(len * 2);
  for (let i = 0; i <= steps; i++) {
    const t = i / steps;
    const a = (1 - t) * (1 - t);
    const b = 2 * (1 - t) * t;
    const d = t * t;
    pts.push([a * x0 + b * x1 + d * x2, a * y0 + b * y1 + d * y2]);
  }
  let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
  for (const [px, py] of pts) {
    minX = Math.min(minX, px); maxX = Math.max(maxX, px);
    minY = Math.min(minY, py); maxY = Math.max(maxY, py);
  }
  const pad = halfW + 1.5;
  const [bx, by, bw, bh] = toBox(minX - pad, minY - pad, maxX + pad, maxY + pad, w, h);
  const ext = new Extent(0.2 * Math.abs(c));
  const mask = new Float32Array(bw * bh);
  const taper = new Float32Array(bw * bh);
  const r = Math.ceil(halfW + 1);
  for (let i = 0; i < pts.length; i++) {
    const [px, py] = pts[i]!;
    const t = i / (pts.length - 1);
    const fade = Math.min(1, Math.min(t, 1 - t) * 8 + 0.25); // ends fade out like a real scratch
    for (let yy = Math.floor(py) - r; yy <= Math.floor(py) + r; yy++) {
      for (let xx = Math.floor(px) - r; xx <= Math.floor(px) + r; xx++) {
        const mx = xx - bx;
        const my = yy - by;
        if (mx < 0 || my < 0 || mx >= bw || my >= bh) continue;
        const dist = Math.hypot(xx + 0.5 - px, yy + 0.5 - py);
        const cov = clamp(halfW + 0.5 - dist, 0, 1);
        const k = my * bw + mx;
        if (cov > mask[k]!) {
          mask[k] = cov;
          taper[k] = fade;
        }
      }
    }
  }
  for (let my = 0; my < bh; my++) {
    for (let mx = 0; mx < bw; mx++) {
      const k = my * bw + mx;
      if (mask[k]! > 0) {
        const d = c * mask[k]! * taper[k]!;
        L[(by + my) * w + bx + mx]! += d;
        ext.add(bx + mx, by + my, d);
      }
    }
  }
  return ext.box(w, h);
}

function drawDust(L: Float32Array, w: number, h: number, rnd: () => number): Box {
  const n = 1 + Math.floor(rnd() * rnd() * 4); // mostly a single speck, sometimes a small cluster
  const cx = lerp(8, w - 8, rnd());
  const cy = lerp(8, h - 8, rnd());
  const c = -contrast(rnd, 45, 110, 10, 18);
  const ext = new Extent(0.2 * Math.abs(c));
  for (let i = 0; i < n; i++) {
    const px = clamp(cx + (i ? (rnd() - 0.5) * 14 : 0), 3, w - 3);
    const py = clamp(cy + (i ? (rnd() - 0.5) * 14 : 0), 3, h - 3);
    const rad = lerp(2, 5, rnd()) / 2;
    const sc = c * lerp(0.7, 1, rnd());
    const box = toBox(px - rad - 1, py - rad - 1, px + rad + 1, py + rad + 1, w, h);
    paint(L, w, h, box, ext, (x, y) => sc * clamp(rad + 0.5 - Math.hypot(x - px, y - py), 0, 1));
  }
  return ext.box(w, h);
}

function drawBubble(L: Float32Array, w: number, h: number, rnd: () => number): Box {
  const R = lerp(6, 20, rnd()) / 2;
  const cx = lerp(R + 3, w - R - 3, rnd());
  const cy = lerp(R + 3, h - R - 3, rnd());
  const c = contrast(rnd, 25, 60, 7, 12);
  const sig = lerp(0.7, 1.1, rnd());
  const ext = new Extent(0.2 * c);
  // Bright rim at the edge, a thin dark band just inside it, a slightly lifted centre.
  paint(L, w, h, toBox(cx - R - 3, cy - R - 3, cx + R + 3, cy + R + 3, w, h), ext, (x, y) => {
    const r = Math.hypot(x - cx, y - cy);
    const rim = Math.exp(-(((r - R) / sig) ** 2));
    const inner = Math.exp(-(((r - (R - 1.8 * sig)) / sig) ** 2));
    const centre = r < R ? 0.12 : 0;
    return c * (rim - 0.4 * inner + centre);
  });
  return ext.box(w, h);
}

function drawStain(L: Float32Array, w: number, h: number, rnd: () => number): Box {
  const D = lerp(15, 40, rnd());
  const R = D / 2;
  const cx = lerp(R + 2, w - R - 2, rnd());
  const cy = lerp(R + 2, h - R - 2, rnd());
  const c = -contrast(rnd, 12, 30, 4, 7);
  // A few overlapping soft lobes make an irregular blob rather than a perfect disc.
  const lobes: { x: number; y: number; s: number }[] = [{ x: cx, y: cy, s: R * 0.55 }];
  const extra = 1 + Math.floor(rnd() * 3);
  for (let i = 0; i < extra; i++) {
    const a = rnd() * 2 * Math.PI;
    const d = R * lerp(0.2, 0.45, rnd());
    lobes.push({ x: cx + Math.cos(a) * d, y: cy + Math.sin(a) * d, s: R * lerp(0.3, 0.45, rnd()) });
  }
  const ext = new Extent(0.2 * Math.abs(c));
  paint(L, w, h, toBox(cx - R - 4, cy - R - 4, cx + R + 4, cy + R + 4, w, h), ext, (x, y) => {
    let v = 0;
    for (const l of lobes) v = Math.max(v, Math.exp(-((x - l.x) ** 2 + (y - l.y) ** 2) / (2 * l.s * l.s)));
    return v > 0.01 ? c * v : 0;
  });
  return ext.box(w, h);
}

const DRAW: Record<FilmDefectClass, (L: Float32Array, w: number, h: number, rnd: () => number) => Box> = {
  scratch: drawScratch,
  dust: drawDust,
  bubble: drawBubble,
  stain: drawStain,
};

/** One octave of value noise: a coarse random grid plus per-column lookup tables. */
interface Octave {
  grid: Float32Array;
  gw: number;
  cell: number;
  ix: Int32Array;
  fx: Float32Array;
  row: Float32Array;
}

function octave(w: number, h: number, cell: number, amp: number, rnd: () => number): Octave {
  const gw = Math.ceil(w / cell) + 2;
  const gh = Math.ceil(h / cell) + 2;
  const grid = new Float32Array(gw * gh);
  for (let i = 0; i < grid.length; i++) grid[i] = (rnd() * 2 - 1) * amp;
  const ix = new Int32Array(w);
  const fx = new Float32Array(w);
  for (let x = 0; x < w; x++) {
    const g = x / cell;
    ix[x] = Math.floor(g);
    const f = g - ix[x]!;
    fx[x] = f * f * (3 - 2 * f); // smoothstep hides the grid
  }
  return { grid, gw, cell, ix, fx, row: new Float32Array(gw) };
}

function octaveRow(o: Octave, y: number): void {
  const g = y / o.cell;
  const iy = Math.floor(g);
  let f = g - iy;
  f = f * f * (3 - 2 * f);
  const r0 = iy * o.gw;
  const r1 = r0 + o.gw;
  for (let i = 0; i < o.gw; i++) o.row[i] = o.grid[r0 + i]! + (o.grid[r1 + i]! - o.grid[r0 + i]!) * f;
}

/** Smooth film texture: two octaves of value noise, bilinearly upsampled, added in one pass. */
function addTexture(L: Float32Array, w: number, h: number, a: Octave, b: Octave): void {
  const { ix: ax, fx: af, row: ar } = a;
  const { ix: bx, fx: bf, row: br } = b;
  for (let y = 0; y < h; y++) {
    octaveRow(a, y);
    octaveRow(b, y);
    const o = y * w;
    for (let x = 0; x < w; x++) {
      const i = ax[x]!;
      const j = bx[x]!;
      const va = ar[i]!;
      const vb = br[j]!;
      L[o + x]! += va + (ar[i + 1]! - va) * af[x]! + vb + (br[j + 1]! - vb) * bf[x]!;
    }
  }
}

/**
 * One frame of synthetic screen-protector film, RGB HWC. Deterministic for (seed, index):
 * the same call always gives the same pixels and the same ground truth.
 */
export function renderFilmFrame(opts: FilmOptions, index: number): FilmFrame {
  const { width: w, height: h } = opts;
  if (!(Number.isInteger(w) && Number.isInteger(h) && w > 0 && h > 0)) {
    throw new RangeError(`renderFilmFrame: bad size ${w}x${h}`);
  }
  const rnd = mulberry32(hashSeed(opts.seed, index));
  // The film batch (seed) fixes the tint; each part wobbles a little around it.
  const batch = mulberry32(hashSeed(opts.seed, -1));
  const tint = [
    lerp(0.95, 1.0, batch()) + (rnd() - 0.5) * 0.01,
    lerp(0.98, 1.01, batch()) + (rnd() - 0.5) * 0.01,
    lerp(1.0, 1.04, batch()) + (rnd() - 0.5) * 0.01,
  ] as const;

  // Lighting: base level, a linear gradient and an off-centre vignette. All are separable into a
  // row term plus a column term, which keeps the per-pixel cost to two adds.
  const base = lerp(192, 222, rnd());
  const gx = (rnd() - 0.5) * 24;
  const gy = (rnd() - 0.5) * 24;
  const vig = lerp(0, 22, rnd());
  const vcx = lerp(0.35, 0.65, rnd()) * w;
  const vcy = lerp(0.35, 0.65, rnd()) * h;
  const col = new Float32Array(w);
  const rowT = new Float32Array(h);
  // Faint streaks along the film's machine direction (vertical), as film from a roll shows.
  const streakAmp = lerp(0, 1.2, rnd());
  let s = 0;
  for (let x = 0; x < w; x++) {
    s = 0.8 * s + 0.2 * (rnd() * 2 - 1);
    col[x] = gx * (x / w - 0.5) - vig * ((x - vcx) / (w / 2)) ** 2 + s * streakAmp * 3;
  }
  for (let y = 0; y < h; y++) rowT[y] = base + gy * (y / h - 0.5) - vig * ((y - vcy) / (h / 2)) ** 2;
  const L = new Float32Array(w * h);
  for (let y = 0; y < h; y++) {
    const o = y * w;
    const r = rowT[y]!;
    for (let x = 0; x < w; x++) L[o + x] = r + col[x]!;
  }
  // Fine film texture: two octaves of low-amplitude smooth noise.
  const coarse = octave(w, h, lerp(6, 12, rnd()), lerp(1.0, 2.5, rnd()), rnd);
  addTexture(L, w, h, coarse, octave(w, h, 2.5, lerp(0.4, 1.0, rnd()), rnd));

  // Drawn before the defects so that, for one (seed, index), everything but the defects is the same
  // whatever defectRate is (tests rely on it to locate the defect pixels).
  const sigma = lerp(2, 3, rnd());

  // Defects.
  const defects: string[] = [];
  const boxes: { class: string; box: Box }[] = [];
  if (rnd() < opts.defectRate) {
    const u = rnd();
    const n = u < 0.75 ? 1 : u < 0.95 ? 2 : 3;
    for (let i = 0; i < n; i++) {
      const cls = FILM_DEFECT_CLASSES[Math.floor(rnd() * FILM_DEFECT_CLASSES.length)]!;
      const box = DRAW[cls](L, w, h, rnd);
      boxes.push({ class: cls, box });
      if (!defects.includes(cls)) defects.push(cls);
    }
  }

  // Sensor noise (gaussian, sigma 2-3 grey levels), per channel; the clamped array rounds and clips.
  const out = new Uint8ClampedArray(w * h * 3);
  let ns = hashSeed(opts.seed ^ 0x2545f491, index) | 0;
  // Inlined mulberry32 (hot loop); each 32-bit draw gives two 16-bit indices into GAUSS.
  const draw = (): number => {
    ns = (ns + 0x6d2b79f5) | 0;
    let t = Math.imul(ns ^ (ns >>> 15), ns | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  const t0 = tint[0], t1 = tint[1], t2 = tint[2];
  const n = L.length;
  let spare = 0;
  for (let i = 0, j = 0; i < n; i++, j += 3) {
    const v = L[i]!;
    const a = draw();
    // Three channels need 48 bits: the third index alternates between halves of a shared draw.
    if ((i & 1) === 0) spare = draw();
    const b = (i & 1) === 0 ? spare & 0xffff : spare >>> 16;
    out[j] = v * t0 + GAUSS[a & 0xffff]! * sigma;
    out[j + 1] = v * t1 + GAUSS[a >>> 16]! * sigma;
    out[j + 2] = v * t2 + GAUSS[b]! * sigma;
  }

  const truth: GroundTruth = {
    verdict: defects.length ? 'reject' : 'pass',
    defects,
    boxes,
  };
  return { data: new Uint8Array(out.buffer), width: w, height: h, channels: 3, truth };
}

// ---------------------------------------------------------------------------------------------
// The source

export class SyntheticSource implements FrameSource {
  readonly name = 'synthetic';
  private index = 0;
  private frames = 0;
  private started = false;
  private readonly meter: FpsMeter;
  private readonly pacer: Pacer;
  private readonly subs: Subscribers;

  constructor(
    private readonly cfg: Config['camera']['synthetic'],
    private readonly deps: { clock: Clock },
  ) {
    this.meter = new FpsMeter(deps.clock);
    this.pacer = new Pacer(deps.clock, cfg.fps, () => this.subs.frame(this.next()));
    this.subs = new Subscribers((n) => this.syncPacer(n));
  }

  async start(): Promise<void> {
    this.started = true;
    this.syncPacer(this.subs.size);
  }

  async stop(): Promise<void> {
    this.started = false;
    this.pacer.stop();
  }

  async grab(): Promise<Frame> {
    if (!this.started) throw new FrameError('synthetic camera is not started', 'camera');
    return this.next();
  }

  onFrame(cb: (frame: Frame) => void, onError?: (err: FrameError) => void): () => void {
    return this.subs.add(cb, onError);
  }

  stats(): { frames: number; errors: number; stalls: number; restarts: number; fps: number } {
    return { frames: this.frames, errors: 0, stalls: 0, restarts: 0, fps: this.meter.fps() };
  }

  private syncPacer(subscribers: number): void {
    if (this.started && subscribers > 0) this.pacer.start();
    else this.pacer.stop();
  }

  private next(): Frame {
    const seq = this.index++;
    const f = renderFilmFrame(this.cfg, seq);
    this.frames++;
    this.meter.tick();
    return {
      seq,
      timeNs: this.deps.clock.nowNs(),
      width: f.width,
      height: f.height,
      channels: 3,
      data: f.data,
      source: 'synthetic',
      truth: f.truth,
    };
  }
}
