// Evaluation metrics for a fitted model. Convention everywhere: a higher score means "more
// defective", the verdict is reject when score >= threshold (as the agent decides), and the
// positive class is "defective".

/** Area under the ROC curve as the Mann-Whitney statistic: P(pos > neg) + 0.5 P(pos == neg). */
export function auroc(positives: readonly number[], negatives: readonly number[]): number {
  if (positives.length === 0 || negatives.length === 0) return NaN;
  const neg = Float64Array.from(negatives).sort();
  const pos = Float64Array.from(positives).sort();
  // One merge pass over both sorted lists: for each positive, count the negatives below it and
  // half of those equal to it.
  let below = 0;
  let wins = 0;
  let j = 0;
  for (let i = 0; i < pos.length; ) {
    const s = pos[i]!;
    while (j < neg.length && neg[j]! < s) j++;
    below = j;
    let k = j;
    while (k < neg.length && neg[k] === s) k++;
    const equal = k - j;
    let n = 0;
    while (i < pos.length && pos[i] === s) {
      i++;
      n++;
    }
    wins += n * (below + equal / 2);
  }
  return wins / (pos.length * neg.length);
}

export interface RocPoint {
  /** False positive rate (good images rejected). */
  fpr: number;
  /** True positive rate (defective images rejected). */
  tpr: number;
  /** The threshold giving this point (reject when score >= threshold); Infinity for (0, 0). */
  threshold: number;
}

/**
 * ROC curve with one point per distinct score, from (0,0) to (1,1). Tied scores move both rates
 * at once (a diagonal step), so the trapezoidal area equals auroc().
 */
export function rocCurve(positives: readonly number[], negatives: readonly number[]): RocPoint[] {
  const all = [
    ...positives.map((s) => ({ s, pos: true })),
    ...negatives.map((s) => ({ s, pos: false })),
  ].sort((a, b) => b.s - a.s);
  const P = positives.length;
  const N = negatives.length;
  const points: RocPoint[] = [{ fpr: 0, tpr: 0, threshold: Infinity }];
  let tp = 0;
  let fp = 0;
  for (let i = 0; i < all.length; ) {
    const s = all[i]!.s;
    while (i < all.length && all[i]!.s === s) {
      if (all[i]!.pos) tp++;
      else fp++;
      i++;
    }
    points.push({ fpr: N ? fp / N : 0, tpr: P ? tp / P : 0, threshold: s });
  }
  return points;
}

/** Trapezoidal area under (x, y) points sorted by x. */
export function trapezoid(points: readonly { x: number; y: number }[]): number {
  let area = 0;
  for (let i = 1; i < points.length; i++) {
    const a = points[i - 1]!;
    const b = points[i]!;
    area += ((b.x - a.x) * (a.y + b.y)) / 2;
  }
  return area;
}

/** The smallest double strictly greater than x. */
export function nextUp(x: number): number {
  if (Number.isNaN(x) || x === Infinity) return x;
  if (x === 0) return Number.MIN_VALUE;
  const buf = new DataView(new ArrayBuffer(8));
  buf.setFloat64(0, x);
  const bits = buf.getBigUint64(0);
  buf.setBigUint64(0, x > 0 ? bits + 1n : bits - 1n);
  return buf.getFloat64(0);
}

export interface Calibration {
  threshold: number;
  /** FRR of the calibration scores at that threshold (<= target). */
  frr: number;
  /** How many good images the target allows to be rejected, and how many are. */
  allowed: number;
  rejected: number;
  n: number;
}

/**
 * The smallest threshold whose false-reject rate on these good scores is <= targetFrr. With
 * reject = score >= t, at most k = floor(target * n) good scores may reach t, so t is the next
 * double above the (k+1)-th highest good score: anything lower rejects one more good image.
 */
export function calibrateThreshold(goodScores: readonly number[], targetFrr: number): Calibration {
  const n = goodScores.length;
  if (n === 0) throw new Error('calibrateThreshold: no good scores to calibrate on');
  if (!(targetFrr >= 0 && targetFrr <= 1)) throw new Error(`calibrateThreshold: target FRR ${targetFrr} is not in [0, 1]`);
  const desc = Float64Array.from(goodScores).sort().reverse();
  // The epsilon keeps e.g. 0.07 * 100 = 7.000000000000001 from being read as 7 -- and 0.29 * 100 =
  // 28.999999999999996 from being read as 28.
  const k = Math.floor(targetFrr * n + 1e-9);
  if (k >= n) {
    // Every good image may be rejected: the smallest meaningful threshold rejects all of them.
    return { threshold: desc[n - 1]!, frr: 1, allowed: k, rejected: n, n };
  }
  const threshold = nextUp(desc[k]!);
  let rejected = 0;
  for (const s of goodScores) if (s >= threshold) rejected++;
  return { threshold, frr: rejected / n, allowed: k, rejected, n };
}

/** Share of scores at or above the threshold (recall on defects, FRR on good). */
export function rejectRate(scores: readonly number[], threshold: number): number {
  if (scores.length === 0) return NaN;
  let r = 0;
  for (const s of scores) if (s >= threshold) r++;
  return r / scores.length;
}

export interface Scored {
  label: string;
  isGood: boolean;
  score: number;
}

export interface Confusion {
  /** Binary: truth good/defective x verdict pass/reject. */
  tp: number;
  fp: number;
  tn: number;
  fn: number;
  /** Per true label: how many passed and how many were rejected ('good' first, then sorted). */
  labels: string[];
  predicted: ['pass', 'reject'];
  counts: [number, number][];
}

export function confusionMatrix(items: readonly Scored[], threshold: number): Confusion {
  const byLabel = new Map<string, [number, number]>();
  let tp = 0;
  let fp = 0;
  let tn = 0;
  let fn = 0;
  for (const it of items) {
    const reject = it.score >= threshold;
    if (it.isGood) reject ? fp++ : tn++;
    else reject ? tp++ : fn++;
    const row = byLabel.get(it.label) ?? [0, 0];
    row[reject ? 1 : 0]++;
    byLabel.set(it.label, row);
  }
  const labels = [...byLabel.keys()].sort((a, b) => (a === 'good' ? -1 : b === 'good' ? 1 : a < b ? -1 : a > b ? 1 : 0));
  return { tp, fp, tn, fn, labels, predicted: ['pass', 'reject'], counts: labels.map((l) => byLabel.get(l)!) };
}

/** Recall (share rejected) per defect class. */
export function recallPerClass(items: readonly Scored[], threshold: number): Record<string, { n: number; rejected: number; recall: number }> {
  const out: Record<string, { n: number; rejected: number; recall: number }> = {};
  for (const it of [...items].sort((a, b) => (a.label < b.label ? -1 : a.label > b.label ? 1 : 0))) {
    if (it.isGood) continue;
    const r = (out[it.label] ??= { n: 0, rejected: 0, recall: 0 });
    r.n++;
    if (it.score >= threshold) r.rejected++;
  }
  for (const r of Object.values(out)) r.recall = r.rejected / r.n;
  return out;
}

export interface ImageMetrics {
  n: { good: number; defective: number };
  auroc: number;
  threshold: number;
  recall: number;
  frr: number;
  recallPerClass: Record<string, { n: number; rejected: number; recall: number }>;
  confusion: Confusion;
}

export function imageMetrics(items: readonly Scored[], threshold: number): ImageMetrics {
  const good = items.filter((i) => i.isGood).map((i) => i.score);
  const bad = items.filter((i) => !i.isGood).map((i) => i.score);
  return {
    n: { good: good.length, defective: bad.length },
    auroc: auroc(bad, good),
    threshold,
    recall: rejectRate(bad, threshold),
    frr: rejectRate(good, threshold),
    recallPerClass: recallPerClass(items, threshold),
    confusion: confusionMatrix(items, threshold),
  };
}

// ---- Pixel level ------------------------------------------------------------------------------

/** Connected regions of a binary mask (8-connectivity, as the MVTec AD PRO evaluation). */
export function labelRegions(mask: Uint8Array, width: number, height: number): { labels: Int32Array; count: number; sizes: number[] } {
  const labels = new Int32Array(width * height).fill(-1);
  const sizes: number[] = [];
  const stack: number[] = [];
  for (let start = 0; start < mask.length; start++) {
    if (!mask[start] || labels[start] !== -1) continue;
    const id = sizes.length;
    let size = 0;
    labels[start] = id;
    stack.push(start);
    while (stack.length) {
      const p = stack.pop()!;
      size++;
      const x = p % width;
      const y = (p - x) / width;
      for (let dy = -1; dy <= 1; dy++) {
        const yy = y + dy;
        if (yy < 0 || yy >= height) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const xx = x + dx;
          if (xx < 0 || xx >= width) continue;
          const q = yy * width + xx;
          if (mask[q] && labels[q] === -1) {
            labels[q] = id;
            stack.push(q);
          }
        }
      }
    }
    sizes.push(size);
  }
  return { labels, count: sizes.length, sizes };
}

const PAYLOAD_BITS = 2 ** 21;
const MAX_REGIONS = PAYLOAD_BITS - 2;

/** Order-preserving map of a float32 value to an unsigned 32-bit integer. */
function float32Key(v: number, view: DataView): number {
  view.setFloat32(0, v);
  const bits = view.getUint32(0);
  return bits & 0x80000000 ? ~bits >>> 0 : (bits | 0x80000000) >>> 0;
}

export interface PixelMetrics {
  pixels: number;
  defectPixels: number;
  regions: number;
  /** Pixel-level AUROC (ties as 0.5). NaN without both defect and good pixels. */
  auroc: number;
  /** Normalised area under the per-region-overlap curve up to `proFprLimit`. NaN without regions. */
  pro: number;
  proFprLimit: number;
  /** The PRO curve up to the limit, for plots. */
  proCurve: { fpr: number; pro: number }[];
}

/**
 * Accumulates (score map, mask) pairs and computes pixel AUROC and PRO exactly. Scores are kept
 * at float32 precision (anomaly maps are float32 tensors) so that each pixel packs into one double:
 * a 32-bit order key of the score times 2^21 plus 21 bits naming its region (0 = good pixel).
 * A native Float64Array sort then orders millions of pixels without a comparator.
 */
export class PixelAccumulator {
  private chunks: Float64Array[] = [];
  private regionSizes: number[] = [];
  private nPixels = 0;
  private nDefect = 0;
  private readonly view = new DataView(new ArrayBuffer(4));

  /** scores and mask are row-major width x height; mask != 0 marks defect pixels. */
  add(scores: ArrayLike<number>, mask: Uint8Array, width: number, height: number): void {
    if (scores.length !== width * height || mask.length !== width * height) {
      throw new Error(`PixelAccumulator.add: expected ${width * height} scores and mask pixels, got ${scores.length} and ${mask.length}`);
    }
    const { labels, sizes } = labelRegions(mask, width, height);
    const base = this.regionSizes.length;
    if (base + sizes.length > MAX_REGIONS) throw new Error('PixelAccumulator: too many defect regions');
    this.regionSizes.push(...sizes);
    const packed = new Float64Array(width * height);
    for (let i = 0; i < packed.length; i++) {
      const region = labels[i]! >= 0 ? base + labels[i]! + 1 : 0;
      if (region) this.nDefect++;
      packed[i] = float32Key(scores[i]!, this.view) * PAYLOAD_BITS + region;
    }
    this.nPixels += packed.length;
    this.chunks.push(packed);
  }

  compute(fprLimit = 0.3): PixelMetrics {
    const all = new Float64Array(this.nPixels);
    let o = 0;
    for (const c of this.chunks) {
      all.set(c, o);
      o += c.length;
    }
    all.sort();
    const P = this.nDefect;
    const N = this.nPixels - P;
    const R = this.regionSizes.length;
    // Walk from the highest score down; at each distinct score emit (fpr, tpr, pro).
    let tp = 0;
    let fp = 0;
    let proSum = 0; // sum over regions of overlap share
    let prevFpr = 0;
    let prevTpr = 0;
    let prevPro = 0;
    let area = 0;
    let proArea = 0;
    const curve: { fpr: number; pro: number }[] = [{ fpr: 0, pro: 0 }];
    let proDone = false;
    for (let i = all.length - 1; i >= 0; ) {
      const key = Math.floor(all[i]! / PAYLOAD_BITS);
      while (i >= 0 && Math.floor(all[i]! / PAYLOAD_BITS) === key) {
        const region = all[i]! - key * PAYLOAD_BITS;
        if (region === 0) fp++;
        else {
          tp++;
          proSum += 1 / this.regionSizes[region - 1]!;
        }
        i--;
      }
      const fpr = N ? fp / N : 0;
      const tpr = P ? tp / P : 0;
      const pro = R ? proSum / R : 0;
      area += ((fpr - prevFpr) * (tpr + prevTpr)) / 2;
      if (!proDone) {
        if (fpr <= fprLimit) {
          proArea += ((fpr - prevFpr) * (pro + prevPro)) / 2;
          curve.push({ fpr, pro });
        } else {
          // Interpolate the segment that crosses the limit so the area ends exactly there.
          const t = (fprLimit - prevFpr) / (fpr - prevFpr);
          const proAt = prevPro + t * (pro - prevPro);
          proArea += ((fprLimit - prevFpr) * (proAt + prevPro)) / 2;
          curve.push({ fpr: fprLimit, pro: proAt });
          proDone = true;
        }
      }
      prevFpr = fpr;
      prevTpr = tpr;
      prevPro = pro;
    }
    return {
      pixels: this.nPixels,
      defectPixels: P,
      regions: R,
      auroc: P && N ? area : NaN,
      pro: R && N ? proArea / fprLimit : NaN,
      proFprLimit: fprLimit,
      proCurve: thin(curve, 200),
    };
  }
}

/** Keep at most ~n points of a curve (for plots), always keeping both ends. */
function thin<T>(points: T[], n: number): T[] {
  if (points.length <= n) return points;
  const step = points.length / n;
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(points[Math.floor(i * step)]!);
  out.push(points[points.length - 1]!);
  return out;
}

/** Convenience for tests and small inputs: pixel metrics of one set of (scores, mask) pairs. */
export function pixelMetrics(
  items: readonly { scores: ArrayLike<number>; mask: Uint8Array; width: number; height: number }[],
  fprLimit = 0.3,
): PixelMetrics {
  const acc = new PixelAccumulator();
  for (const it of items) acc.add(it.scores, it.mask, it.width, it.height);
  return acc.compute(fprLimit);
}

export interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}

/**
 * Resample a low-resolution anomaly map to an outW x outH grid by bilinear interpolation between
 * cell centres (as align_corners=false), values rounded to float32. By default the map covers the
 * whole grid; `place.extent` says where it lies instead (in grid pixels: a crop, letterbox
 * padding), and grid pixels outside `place.valid` (what the model never saw) get `place.fill`.
 */
export function upsampleMap(
  map: { width: number; height: number; data: ArrayLike<number> },
  outW: number,
  outH: number,
  place: { extent?: Rect; valid?: Rect; fill?: number } = {},
): Float32Array {
  const out = new Float32Array(outW * outH);
  const { width: w, height: h, data } = map;
  const e = place.extent ?? { x: 0, y: 0, width: outW, height: outH };
  const v = place.valid;
  let fill = place.fill;
  if (fill === undefined && v) {
    fill = Infinity;
    for (let i = 0; i < w * h; i++) fill = Math.min(fill, data[i]!);
  }
  for (let y = 0; y < outH; y++) {
    const fy = Math.min(Math.max(((y + 0.5 - e.y) / e.height) * h - 0.5, 0), h - 1);
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, h - 1);
    const wy = fy - y0;
    const rowOut = !!v && (y + 0.5 < v.y || y + 0.5 > v.y + v.height);
    for (let x = 0; x < outW; x++) {
      if (rowOut || (v && (x + 0.5 < v.x || x + 0.5 > v.x + v.width))) {
        out[y * outW + x] = fill!;
        continue;
      }
      const fx = Math.min(Math.max(((x + 0.5 - e.x) / e.width) * w - 0.5, 0), w - 1);
      const x0 = Math.floor(fx);
      const x1 = Math.min(x0 + 1, w - 1);
      const wx = fx - x0;
      const top = data[y0 * w + x0]! * (1 - wx) + data[y0 * w + x1]! * wx;
      const bottom = data[y1 * w + x0]! * (1 - wx) + data[y1 * w + x1]! * wx;
      out[y * outW + x] = top * (1 - wy) + bottom * wy;
    }
  }
  return out;
}
