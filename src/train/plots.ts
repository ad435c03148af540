// Small, dependency-free SVG plots for the training report (ROC curve, PRO curve, score
// histograms), and heatmap overlays as PNG (sharp). The data behind each plot is a plain object,
// so report.json carries exactly what report.html draws.
import sharp from 'sharp';

export interface Histogram {
  /** Bin edges, bins + 1 values. */
  edges: number[];
  good: number[];
  defective: number[];
  threshold: number;
}

/** Shared bins over both score sets (and the threshold, so its line is always on the plot). */
export function histogram(good: readonly number[], defective: readonly number[], threshold: number, bins = 30): Histogram {
  const all = [...good, ...defective].filter(Number.isFinite);
  if (Number.isFinite(threshold)) all.push(threshold);
  let lo = all.length ? Math.min(...all) : 0;
  let hi = all.length ? Math.max(...all) : 1;
  if (hi <= lo) {
    lo -= 0.5;
    hi += 0.5;
  }
  const width = (hi - lo) / bins;
  const edges = Array.from({ length: bins + 1 }, (_, i) => lo + i * width);
  const count = (xs: readonly number[]): number[] => {
    const c = new Array<number>(bins).fill(0);
    for (const x of xs) {
      if (!Number.isFinite(x)) continue;
      c[Math.min(bins - 1, Math.max(0, Math.floor((x - lo) / width)))]!++;
    }
    return c;
  };
  return { edges, good: count(good), defective: count(defective), threshold };
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const fmt = (v: number): string => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(2) : String(+v.toFixed(3)));
const px = (v: number): string => String(+v.toFixed(2));

interface Frame {
  w: number;
  h: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
}
const FRAME: Frame = { w: 420, h: 320, left: 52, right: 16, top: 28, bottom: 44 };

/** Axes, ticks and labels around the plot area; x and y map data to pixels. */
function axes(
  f: Frame,
  title: string,
  xLabel: string,
  yLabel: string,
  xTicks: number[],
  yTicks: number[],
  x: (v: number) => number,
  y: (v: number) => number,
): string {
  const parts: string[] = [];
  const x0 = f.left;
  const x1 = f.w - f.right;
  const y0 = f.h - f.bottom;
  const y1 = f.top;
  parts.push(`<text x="${f.w / 2}" y="18" text-anchor="middle" font-size="14" font-weight="600">${esc(title)}</text>`);
  for (const t of xTicks) {
    parts.push(`<line x1="${px(x(t))}" y1="${y0}" x2="${px(x(t))}" y2="${y1}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${px(x(t))}" y="${y0 + 16}" text-anchor="middle" font-size="11">${fmt(t)}</text>`);
  }
  for (const t of yTicks) {
    parts.push(`<line x1="${x0}" y1="${px(y(t))}" x2="${x1}" y2="${px(y(t))}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${x0 - 6}" y="${px(y(t) + 4)}" text-anchor="end" font-size="11">${fmt(t)}</text>`);
  }
  parts.push(`<rect x="${x0}" y="${y1}" width="${x1 - x0}" height="${y0 - y1}" fill="none" stroke="#333"/>`);
  parts.push(`<text x="${(x0 + x1) / 2}" y="${f.h - 8}" text-anchor="middle" font-size="12">${esc(xLabel)}</text>`);
  parts.push(`<text x="14" y="${(y0 + y1) / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 14 ${(y0 + y1) / 2})">${esc(yLabel)}</text>`);
  return parts.join('');
}

function svg(f: Frame, body: string, label: string): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${f.w} ${f.h}" width="${f.w}" height="${f.h}" role="img" aria-label="${esc(label)}" font-family="system-ui, sans-serif">${body}</svg>`;
}

const ticks = (lo: number, hi: number, n = 5): number[] => Array.from({ length: n + 1 }, (_, i) => lo + ((hi - lo) * i) / n);

/** A curve in the unit square (ROC, PRO), with an optional marked operating point. */
export function curveSvg(opts: {
  title: string;
  xLabel: string;
  yLabel: string;
  points: { x: number; y: number }[];
  xMax?: number;
  diagonal?: boolean;
  mark?: { x: number; y: number; label: string };
  legend?: string;
}): string {
  const f = FRAME;
  const xMax = opts.xMax ?? 1;
  const x = (v: number): number => f.left + (Math.min(v, xMax) / xMax) * (f.w - f.left - f.right);
  const y = (v: number): number => f.h - f.bottom - v * (f.h - f.top - f.bottom);
  let body = axes(f, opts.title, opts.xLabel, opts.yLabel, ticks(0, xMax), ticks(0, 1), x, y);
  if (opts.diagonal) body += `<line x1="${x(0)}" y1="${y(0)}" x2="${x(xMax)}" y2="${y(Math.min(1, xMax))}" stroke="#999" stroke-dasharray="4 4"/>`;
  if (opts.points.length) {
    const d = opts.points.map((p, i) => `${i ? 'L' : 'M'}${px(x(p.x))} ${px(y(p.y))}`).join('');
    body += `<path d="${d}" fill="none" stroke="#1f6feb" stroke-width="2"/>`;
  }
  if (opts.mark) {
    body += `<circle cx="${px(x(opts.mark.x))}" cy="${px(y(opts.mark.y))}" r="4.5" fill="#d1242f"/>`;
    body += `<text x="${px(x(opts.mark.x) + 8)}" y="${px(y(opts.mark.y) + 14)}" font-size="11" fill="#d1242f">${esc(opts.mark.label)}</text>`;
  }
  if (opts.legend) body += `<text x="${f.w - f.right - 6}" y="${f.h - f.bottom - 8}" text-anchor="end" font-size="12">${esc(opts.legend)}</text>`;
  return svg(f, body, opts.title);
}

/** Overlaid histograms of good and defective scores with the threshold as a vertical line. */
export function histogramSvg(h: Histogram, title = 'Scores: good vs defective'): string {
  // Extra room at the top for the legend, so it never covers a bar.
  const f: Frame = { ...FRAME, top: 46 };
  const lo = h.edges[0]!;
  const hi = h.edges[h.edges.length - 1]!;
  // Densities, so a large good set does not flatten the defective one.
  const norm = (c: number[]): number[] => {
    const n = c.reduce((a, b) => a + b, 0) || 1;
    return c.map((v) => v / n);
  };
  const g = norm(h.good);
  const d = norm(h.defective);
  const yMax = Math.max(0.01, ...g, ...d);
  const x = (v: number): number => f.left + ((v - lo) / (hi - lo)) * (f.w - f.left - f.right);
  const y = (v: number): number => f.h - f.bottom - (v / yMax) * (f.h - f.top - f.bottom);
  let body = axes(f, title, 'score', 'share of images', ticks(lo, hi), ticks(0, yMax, 4), x, y);
  const bars = (vals: number[], colour: string): string =>
    vals
      .map((v, i) => {
        if (v <= 0) return '';
        const bx = x(h.edges[i]!);
        const bw = Math.max(0.5, x(h.edges[i + 1]!) - bx);
        return `<rect x="${px(bx)}" y="${px(y(v))}" width="${px(bw)}" height="${px(y(0) - y(v))}" fill="${colour}" fill-opacity="0.55"/>`;
      })
      .join('');
  body += bars(g, '#2da44e') + bars(d, '#d1242f');
  if (Number.isFinite(h.threshold)) {
    const tx = x(h.threshold);
    // The label goes on the side of the line with more room.
    const right = tx < (f.left + f.w - f.right) / 2;
    body += `<line x1="${px(tx)}" y1="${f.top}" x2="${px(tx)}" y2="${f.h - f.bottom}" stroke="#111" stroke-width="2" stroke-dasharray="6 3"/>`;
    body += `<text x="${px(tx + (right ? 4 : -4))}" y="${f.top + 12}" text-anchor="${right ? 'start' : 'end'}" font-size="11">threshold ${fmt(h.threshold)}</text>`;
  }
  const n = (c: number[]): number => c.reduce((a, b) => a + b, 0);
  const ly = 30;
  body += `<rect x="${f.left}" y="${ly}" width="10" height="10" fill="#2da44e" fill-opacity="0.55"/><text x="${f.left + 14}" y="${ly + 9}" font-size="11">good (${n(h.good)})</text>`;
  body += `<rect x="${f.left + 110}" y="${ly}" width="10" height="10" fill="#d1242f" fill-opacity="0.55"/><text x="${f.left + 124}" y="${ly + 9}" font-size="11">defective (${n(h.defective)})</text>`;
  return svg(f, body, title);
}

// ---- Heatmaps ---------------------------------------------------------------------------------

/** A perceptually ordered colour map (dark blue -> cyan -> yellow -> red), t in [0, 1]. */
export function colourMap(t: number): [number, number, number] {
  const stops: [number, number, number, number][] = [
    [0, 20, 20, 120],
    [0.35, 0, 170, 220],
    [0.65, 250, 220, 40],
    [1, 220, 20, 20],
  ];
  const v = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0));
  for (let i = 1; i < stops.length; i++) {
    const [t1, r1, g1, b1] = stops[i]!;
    const [t0, r0, g0, b0] = stops[i - 1]!;
    if (v <= t1) {
      const k = (v - t0) / (t1 - t0);
      return [Math.round(r0 + (r1 - r0) * k), Math.round(g0 + (g1 - g0) * k), Math.round(b0 + (b1 - b0) * k)];
    }
  }
  return [220, 20, 20];
}

/**
 * The anomaly map coloured and blended over the image: scores from `lo` (transparent) to `hi`
 * (opaque red); the ground-truth mask, when given, is outlined in white.
 * `scores` is already at the image size (width x height).
 */
export async function heatmapPng(opts: {
  image: string | Uint8Array;
  scores: Float32Array;
  width: number;
  height: number;
  lo: number;
  hi: number;
  mask?: Uint8Array;
}): Promise<Buffer> {
  const { width: w, height: h } = opts;
  const base = await sharp(opts.image).removeAlpha().toColourspace('srgb').resize(w, h, { fit: 'fill' }).raw().toBuffer();
  const channels = base.length / (w * h);
  const out = Buffer.alloc(w * h * 3);
  const span = opts.hi > opts.lo ? opts.hi - opts.lo : 1;
  for (let i = 0; i < w * h; i++) {
    const t = (opts.scores[i]! - opts.lo) / span;
    const tc = Math.min(1, Math.max(0, t));
    const [r, g, b] = colourMap(tc);
    // Low scores leave the image visible; high ones cover it.
    const a = 0.65 * tc;
    const gray = channels === 1;
    const br = base[i * channels]!;
    const bg = gray ? br : base[i * channels + 1]!;
    const bb = gray ? br : base[i * channels + 2]!;
    out[i * 3] = Math.round(br * (1 - a) + r * a);
    out[i * 3 + 1] = Math.round(bg * (1 - a) + g * a);
    out[i * 3 + 2] = Math.round(bb * (1 - a) + b * a);
  }
  if (opts.mask) {
    const m = opts.mask;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = y * w + x;
        if (!m[i]) continue;
        const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 || !m[i - 1] || !m[i + 1] || !m[i - w] || !m[i + w];
        if (edge) out.fill(255, i * 3, i * 3 + 3);
      }
    }
  }
  return sharp(out, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer();
}
