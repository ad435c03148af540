// Synthetic surface defects painted onto good images, for self-supervised training when only
// good images are available (anomaly mode) and as extra positives in supervised mode (DRAEM /
// CutPaste / NSA idea: a classifier that separates good from "good plus a plausible flaw" learns
// what flaws look like in the backbone's feature space). The kinds mimic common surface defects
// of machined and sintered parts: pores (dark blobs), cracks (thin dark curves), chipped edges
// (material missing at the border), smooth stains/worn areas (texture flattened, shade changed),
// uneven grinding (a band of different brightness with a straight-ish boundary) and scars
// (a patch of the same image pasted elsewhere, CutPaste). Operates on raw 8-bit HWC pixels at the
// image's own resolution, before the model's resize, so the defect goes through the same
// preprocessing as a real one. Deterministic for a given rng.

export type SynthKind = 'pore' | 'crack' | 'chip' | 'stain' | 'band' | 'scar';
export const SYNTH_KINDS: SynthKind[] = ['pore', 'crack', 'chip', 'stain', 'band', 'scar'];

export interface SynthImage {
  width: number;
  height: number;
  channels: 1 | 3;
  data: Uint8Array;
}

export interface SynthResult {
  image: SynthImage;
  /** Defect mask [height * width], 0..1. */
  mask: Float32Array;
  kind: SynthKind | 'transplant';
}

const clamp255 = (v: number): number => (v < 0 ? 0 : v > 255 ? 255 : v);

/** Mean grey of the image (to scale how dark "dark" is). */
function meanGrey(img: SynthImage): number {
  let s = 0;
  const n = img.width * img.height;
  for (let i = 0; i < n; i++) s += img.data[i * img.channels]!;
  return s / n;
}

/** Separable box blur of a float field, `passes` times (≈ Gaussian). */
function blurField(f: Float32Array, w: number, h: number, r: number, passes = 2): Float32Array {
  if (r < 1) return f;
  let a = f;
  for (let p = 0; p < passes; p++) {
    const b = new Float32Array(w * h);
    for (let y = 0; y < h; y++) {
      let acc = 0;
      for (let x = -r; x <= r; x++) acc += a[y * w + Math.min(w - 1, Math.max(0, x))]!;
      for (let x = 0; x < w; x++) {
        b[y * w + x] = acc / (2 * r + 1);
        acc += a[y * w + Math.min(w - 1, x + r + 1)]! - a[y * w + Math.max(0, x - r)]!;
      }
    }
    const c = new Float32Array(w * h);
    for (let x = 0; x < w; x++) {
      let acc = 0;
      for (let y = -r; y <= r; y++) acc += b[Math.min(h - 1, Math.max(0, y)) * w + x]!;
      for (let y = 0; y < h; y++) {
        c[y * w + x] = acc / (2 * r + 1);
        acc += b[Math.min(h - 1, y + r + 1) * w + x]! - b[Math.max(0, y - r) * w + x]!;
      }
    }
    a = c;
  }
  return a;
}

/** Filled ellipse (soft edge of `soft` px) added into mask with max(). */
function ellipse(mask: Float32Array, w: number, h: number, cx: number, cy: number, rx: number, ry: number, angle: number, soft: number): void {
  const ca = Math.cos(angle);
  const sa = Math.sin(angle);
  const R = Math.max(rx, ry) + soft + 1;
  for (let y = Math.max(0, Math.floor(cy - R)); y < Math.min(h, Math.ceil(cy + R)); y++) {
    for (let x = Math.max(0, Math.floor(cx - R)); x < Math.min(w, Math.ceil(cx + R)); x++) {
      const dx = x - cx;
      const dy = y - cy;
      const u = (dx * ca + dy * sa) / rx;
      const v = (-dx * sa + dy * ca) / ry;
      const d = (Math.sqrt(u * u + v * v) - 1) * Math.min(rx, ry); // ≈ px outside the boundary
      const m = d <= 0 ? 1 : d >= soft ? 0 : 1 - d / soft;
      if (m > mask[y * w + x]!) mask[y * w + x] = m;
    }
  }
}

/** A blobby region: union of a few random ellipses around a centre. */
function blob(mask: Float32Array, w: number, h: number, cx: number, cy: number, rx: number, ry: number, r: () => number, soft: number): void {
  const k = 2 + Math.floor(r() * 3);
  for (let i = 0; i < k; i++) {
    ellipse(mask, w, h, cx + (r() - 0.5) * rx, cy + (r() - 0.5) * ry, rx * (0.5 + 0.5 * r()), ry * (0.5 + 0.5 * r()), r() * Math.PI, soft);
  }
}

/** A defect centre: anywhere inside, or (40 %) close to one of the four borders. */
function spot(w: number, h: number, r: () => number, margin: number): [number, number] {
  const x = w * (0.08 + 0.84 * r());
  const y = h * (0.08 + 0.84 * r());
  if (r() >= 0.4) return [x, y];
  const d = margin + r() * Math.min(w, h) * 0.05;
  switch (Math.floor(r() * 4)) {
    case 0:
      return [x, d];
    case 1:
      return [x, h - 1 - d];
    case 2:
      return [d, y];
    default:
      return [w - 1 - d, y];
  }
}

/** Paints one synthetic defect of `kind` (random when omitted). Returns a new image. */
export function synthesizeDefect(src: SynthImage, r: () => number, kind?: SynthKind): SynthResult {
  const k = kind ?? SYNTH_KINDS[Math.floor(r() * SYNTH_KINDS.length)]!;
  const { width: w, height: h, channels: C } = src;
  const out = new Uint8Array(src.data);
  const mask = new Float32Array(w * h);
  const mean = meanGrey(src);
  const short = Math.min(w, h);
  /** Blend every pixel towards target(x, y, value) by mask. */
  const apply = (m: Float32Array, target: (i: number, v: number) => number): void => {
    for (let i = 0; i < w * h; i++) {
      const a = m[i]!;
      if (a <= 0) continue;
      for (let c = 0; c < C; c++) {
        const v = src.data[i * C + c]!;
        out[i * C + c] = Math.round(clamp255(v + a * (target(i, v) - v)));
      }
    }
  };
  switch (k) {
    case 'pore': {
      const n = r() < 0.75 ? 1 : 2;
      for (let j = 0; j < n; j++) {
        const rad = 2 + r() * Math.max(2, short * 0.025);
        const [cx, cy] = spot(w, h, r, rad);
        ellipse(mask, w, h, cx, cy, rad * (1 + r() * 1.2), rad, r() * Math.PI, 1.5);
      }
      const dark = 0.25 + 0.35 * r();
      apply(mask, (_i, v) => v * dark);
      break;
    }
    case 'crack': {
      // Half of them start at an edge (cracks run in from the border), mostly across the part's
      // short dimension... here: along the image's vertical axis unless the image is very wide.
      const fromEdge = r() < 0.5;
      const len = short * (fromEdge ? 0.05 + 0.3 * r() : 0.15 + 0.6 * r());
      const vertical = !(w > h * 1.6);
      let x: number;
      let y: number;
      let ang = (vertical ? Math.PI / 2 : 0) + (r() - 0.5) * 0.6;
      if (fromEdge) {
        const far = r() < 0.5;
        if (vertical) {
          x = w * (0.05 + 0.9 * r());
          y = far ? h - 1 : 0;
        } else {
          x = far ? w - 1 : 0;
          y = h * (0.05 + 0.9 * r());
        }
        if (far) ang += Math.PI;
      } else {
        x = w * (0.1 + 0.8 * r());
        y = h * (0.05 + 0.7 * r());
      }
      const width = 0.6 + r() * 1.4;
      for (let s = 0; s < len; s += 0.5) {
        ang += (r() - 0.5) * 0.15;
        x += Math.cos(ang) * 0.5;
        y += Math.sin(ang) * 0.5;
        if (x < 0 || y < 0 || x >= w || y >= h) break;
        ellipse(mask, w, h, x, y, width, width, 0, 1);
      }
      const dark = 0.2 + 0.4 * r();
      apply(mask, (_i, v) => v * dark);
      break;
    }
    case 'chip': {
      // Material missing at the border: dark background, with a light rim.
      const side = Math.floor(r() * 4);
      const along = 0.05 + 0.9 * r();
      const cx = side === 0 || side === 2 ? w * along : side === 1 ? w : 0;
      const cy = side === 1 || side === 3 ? h * along : side === 2 ? h : 0;
      const rad = short * (r() < 0.5 ? 0.02 + 0.05 * r() : 0.05 + 0.12 * r());
      blob(mask, w, h, cx, cy, rad * (0.7 + r()), rad * (0.7 + r()), r, 2);
      const rim = blurField(mask, w, h, 2, 1);
      const bg = 10 + 30 * r();
      const rimMask = new Float32Array(w * h);
      for (let i = 0; i < w * h; i++) rimMask[i] = Math.max(0, rim[i]! - mask[i]!) * 2;
      apply(rimMask, (_i, v) => Math.min(255, v * 1.6 + 30));
      const after = new Uint8Array(out);
      for (let i = 0; i < w * h; i++) {
        const a = mask[i]!;
        if (a <= 0) continue;
        for (let c = 0; c < C; c++) out[i * C + c] = Math.round(after[i * C + c]! + a * (bg - after[i * C + c]!));
      }
      break;
    }
    case 'stain': {
      // A smooth worn / stained area: texture flattened, shade changed.
      const rx = w * (0.12 + 0.25 * r());
      const ry = h * (0.12 + 0.3 * r());
      blob(mask, w, h, w * (0.2 + 0.6 * r()), h * (0.2 + 0.6 * r()), rx, ry, r, Math.max(2, short * 0.02));
      const grey = new Float32Array(w * h);
      for (let i = 0; i < w * h; i++) grey[i] = src.data[i * C]!;
      const smooth = blurField(grey, w, h, Math.max(2, Math.round(short * 0.03)), 2);
      const shade = 0.6 + 0.5 * r();
      apply(mask, (i) => smooth[i]! * shade);
      break;
    }
    case 'band': {
      // Uneven grinding: a band across the part whose brightness/texture differs, straight-ish edges.
      const horizontal = h >= w ? r() < 0.8 : r() < 0.5;
      const L = horizontal ? h : w;
      const thick = L * (r() < 0.5 ? 0.05 + 0.12 * r() : 0.12 + 0.3 * r());
      const start = r() < 0.6 ? (r() < 0.5 ? 0 : L - thick) : (L - thick) * r();
      const tilt = (r() - 0.5) * 0.1;
      const partial = r() < 0.4 ? 0.4 + 0.5 * r() : 1;
      const from = r() < 0.5 ? 0 : 1 - partial;
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const p = horizontal ? y + tilt * x : x + tilt * y;
          const q = horizontal ? x / w : y / h;
          if (p >= start && p < start + thick && q >= from && q <= from + partial) mask[y * w + x] = 1;
        }
      }
      const soft = blurField(mask, w, h, 2, 1);
      const gain = r() < 0.5 ? 0.65 + 0.2 * r() : 1.2 + 0.3 * r();
      const grey = new Float32Array(w * h);
      for (let i = 0; i < w * h; i++) grey[i] = src.data[i * C]!;
      const smooth = blurField(grey, w, h, 1 + Math.floor(r() * 3), 1);
      apply(soft, (i) => smooth[i]! * gain);
      break;
    }
    case 'scar': {
      // CutPaste-scar: a thin rotated strip of the same image pasted elsewhere, shade shifted.
      const len = short * (0.1 + 0.25 * r());
      const thick = 2 + r() * Math.max(2, short * 0.02);
      const ang = r() * Math.PI;
      const sx = w * (0.2 + 0.6 * r());
      const sy = h * (0.2 + 0.6 * r());
      const dx = w * (0.2 + 0.6 * r());
      const dy = h * (0.2 + 0.6 * r());
      ellipse(mask, w, h, dx, dy, len / 2, thick / 2, ang, 1);
      const shift = (r() - 0.5) * 0.5 * mean;
      apply(mask, (i) => {
        const x = (i % w) - dx + sx;
        const y = Math.floor(i / w) - dy + sy;
        const xi = Math.min(w - 1, Math.max(0, Math.round(x)));
        const yi = Math.min(h - 1, Math.max(0, Math.round(y)));
        return src.data[(yi * w + xi) * C]! + shift;
      });
      break;
    }
  }
  return { image: { width: w, height: h, channels: C, data: out }, mask, kind: k };
}

/** Bilinear resampling of an 8-bit HWC image (or a mask) to w x h. */
function resample(data: Uint8Array, sw: number, sh: number, channels: number, w: number, h: number): Float32Array {
  const out = new Float32Array(w * h * channels);
  for (let y = 0; y < h; y++) {
    const fy = Math.min(sh - 1, Math.max(0, ((y + 0.5) * sh) / h - 0.5));
    const y0 = Math.floor(fy);
    const y1 = Math.min(sh - 1, y0 + 1);
    const ay = fy - y0;
    for (let x = 0; x < w; x++) {
      const fx = Math.min(sw - 1, Math.max(0, ((x + 0.5) * sw) / w - 0.5));
      const x0 = Math.floor(fx);
      const x1 = Math.min(sw - 1, x0 + 1);
      const ax = fx - x0;
      for (let c = 0; c < channels; c++) {
        const v00 = data[(y0 * sw + x0) * channels + c]!;
        const v01 = data[(y0 * sw + x1) * channels + c]!;
        const v10 = data[(y1 * sw + x0) * channels + c]!;
        const v11 = data[(y1 * sw + x1) * channels + c]!;
        out[(y * w + x) * channels + c] = (v00 * (1 - ax) + v01 * ax) * (1 - ay) + (v10 * (1 - ax) + v11 * ax) * ay;
      }
    }
  }
  return out;
}

/**
 * Copy-paste augmentation with real defects: the masked region of a labelled defect image is
 * carried over to a good image at the same relative position (both are resampled to the good
 * image's size), feathered at its border and shaded to the good image's local brightness. Gives
 * the classifier the real defect on many backgrounds, so it learns the defect rather than the
 * part it was photographed on. `mask` is 8-bit (>= 128 = defect) at the source's size.
 * Returns null when the mask is empty.
 */
export function transplantDefect(target: SynthImage, source: SynthImage, mask: Uint8Array, r: () => number): SynthResult | null {
  const { width: w, height: h, channels: C } = target;
  const m0 = resample(mask, source.width, source.height, 1, w, h);
  let any = false;
  for (let i = 0; i < w * h; i++) {
    m0[i] = m0[i]! >= 128 ? 1 : 0;
    if (m0[i]) any = true;
  }
  if (!any) return null;
  // Dilate a little (masks are drawn tight) and feather.
  const grow = blurField(m0, w, h, 1, 1);
  for (let i = 0; i < w * h; i++) grow[i] = grow[i]! > 0.05 ? 1 : 0;
  const soft = blurField(grow, w, h, 1, 1);
  const src = C === source.channels ? resample(source.data, source.width, source.height, C, w, h) : null;
  if (!src) throw new Error('transplantDefect: source and target channel counts differ');
  // Local brightness of both around the region (a band around the mask), to shade the paste.
  const ring = blurField(grow, w, h, Math.max(3, Math.round(Math.min(w, h) * 0.04)), 1);
  let st = 0;
  let ss = 0;
  let n = 0;
  for (let i = 0; i < w * h; i++) {
    if (ring[i]! > 0.02 && grow[i]! === 0) {
      st += target.data[i * C]!;
      ss += src[i * C]!;
      n++;
    }
  }
  const gain = n > 0 && ss > 1 ? Math.min(2, Math.max(0.5, st / ss)) * (0.9 + 0.2 * r()) : 1;
  const out = new Uint8Array(target.data);
  for (let i = 0; i < w * h; i++) {
    const a = soft[i]!;
    if (a <= 0) continue;
    for (let c = 0; c < C; c++) {
      const v = target.data[i * C + c]!;
      out[i * C + c] = Math.round(clamp255(v + a * (src[i * C + c]! * gain - v)));
    }
  }
  return { image: { width: w, height: h, channels: C, data: out }, mask: soft, kind: 'transplant' };
}
