// highpass-stats, anomaly mode: the film-demo architecture (src/models/build-film-demo.ts: grey
// levels, detail = image minus a K x K box blur, a fine branch = the detail, a coarse branch = its
// C x C mean) with its free parameters learned from good images instead of set by hand. For each
// branch and each input position the mean and standard deviation of the response over the good
// training images (a per-position Gaussian, as PaDiM does per patch, here per pixel), the variances
// pooled over a small neighbourhood to steady them; the model scores |x - mean| / std at every
// position of both branches, max-pools the larger into the map and reports the map's maximum: how
// many standard deviations the most unusual spot of the part is from good film. The hand-set
// pieces fall out of the statistics: the branches' relative gain is the ratio of their noise, and
// the edges, where the one-sided blur and the lighting make the response noisy, are damped by
// their larger standard deviation instead of a zeroed border.
import { buildHighPassFeatures, buildHighPassModel } from '../../models/build-film-demo.js';
import { createSession, loadFrame, runFrame } from '../features/runner.js';
import type { FitContext, FitResult, Sample, TrainMethod } from '../types.js';
import { MethodParamError, Params, imageInputSpec, throttledProgress } from './common.js';

/** Per-position mean and variance of `n` images' values, accumulated in float64 (order-independent up to rounding). */
export class PositionStats {
  n = 0;
  private readonly sum: Float64Array;
  private readonly sumSq: Float64Array;
  constructor(readonly size: number) {
    this.sum = new Float64Array(size);
    this.sumSq = new Float64Array(size);
  }

  add(x: Float32Array): void {
    if (x.length !== this.size) throw new Error(`PositionStats: ${x.length} values, expected ${this.size}`);
    for (let i = 0; i < x.length; i++) {
      const v = x[i]!;
      this.sum[i]! += v;
      this.sumSq[i]! += v * v;
    }
    this.n++;
  }

  /** Mean and (unbiased) variance per position. */
  moments(): { mean: Float64Array; variance: Float64Array } {
    if (this.n < 2) throw new Error('PositionStats: needs at least 2 images');
    const mean = new Float64Array(this.size);
    const variance = new Float64Array(this.size);
    for (let i = 0; i < this.size; i++) {
      const m = this.sum[i]! / this.n;
      mean[i] = m;
      variance[i] = Math.max(0, (this.sumSq[i]! - this.n * m * m) / (this.n - 1));
    }
    return { mean, variance };
  }
}

/** Mean of a W x H map over a (2r+1)² window clipped to the map (edges average fewer values, not zeros). */
export function boxMean(x: Float64Array, w: number, h: number, r: number): Float64Array {
  if (r <= 0) return Float64Array.from(x);
  const tmp = new Float64Array(w * h);
  const out = new Float64Array(w * h);
  for (let y = 0; y < h; y++) {
    for (let xx = 0; xx < w; xx++) {
      let s = 0;
      const x0 = Math.max(0, xx - r);
      const x1 = Math.min(w - 1, xx + r);
      for (let k = x0; k <= x1; k++) s += x[y * w + k]!;
      tmp[y * w + xx] = s / (x1 - x0 + 1);
    }
  }
  for (let y = 0; y < h; y++) {
    const y0 = Math.max(0, y - r);
    const y1 = Math.min(h - 1, y + r);
    for (let xx = 0; xx < w; xx++) {
      let s = 0;
      for (let k = y0; k <= y1; k++) s += tmp[k * w + xx]!;
      out[y * w + xx] = s / (y1 - y0 + 1);
    }
  }
  return out;
}

const median = (xs: ArrayLike<number>): number => {
  const s = Float64Array.from(xs).sort();
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const r4 = (v: number): number => Math.round(v * 10000) / 10000;

export const highpassStats: TrainMethod = {
  name: 'highpass-stats',
  async fit(train: Sample[], ctx: FitContext): Promise<FitResult> {
    const t0 = Date.now();
    const p = new Params('highpass-stats', ctx.params);
    // Defaults: the hand-designed film-demo's (src/models/build-film-demo.ts PARAMS).
    const width = p.number('width', 160, { min: 16, max: 2048, integer: true });
    const height = p.number('height', 120, { min: 16, max: 2048, integer: true });
    const resize = p.string('resize', 'stretch', ['letterbox', 'stretch'] as const);
    const backgroundKernel = p.number('backgroundKernel', 15, { min: 3, max: 101, integer: true });
    const coarseKernel = p.number('coarseKernel', 5, { min: 1, max: 31, integer: true });
    const mapPool = p.number('mapPool', 2, { min: 1, max: 16, integer: true });
    const border = p.number('border', 0, { min: 0, max: 256, integer: true });
    /** Radius (input pixels) of the neighbourhood the per-position statistics are pooled over; 0 = per pixel. */
    const statRadius = p.number('statRadius', 2, { min: 0, max: 64, integer: true });
    /** Floor of the standard deviation (grey levels): a position that never varies does not blow up. */
    const minStd = p.number('minStd', 0.05, { min: 1e-6 });
    const parameters = p.done();
    for (const [k, v] of [['backgroundKernel', backgroundKernel], ['coarseKernel', coarseKernel]] as const) {
      if (v % 2 === 0) throw new MethodParamError(`highpass-stats: params.${k} must be odd`);
    }
    if (width % mapPool || height % mapPool || border % mapPool) {
      throw new MethodParamError('highpass-stats: width, height and border must be multiples of mapPool');
    }
    if (2 * border >= Math.min(width, height)) throw new MethodParamError('highpass-stats: border leaves no image');
    const goods = train.filter((s) => s.isGood);
    if (goods.length < 2) throw new MethodParamError('highpass-stats: needs at least 2 good training images');
    if (ctx.mode === 'supervised') ctx.log.info('highpass-stats learns from the good images only; labelled defects are not used');

    const spec = imageInputSpec(width, height, 'gray', resize);
    const arch = { inputWidth: width, inputHeight: height, backgroundKernel, coarseKernel };
    // One thread: the same sums in the same order on any machine.
    const session = await createSession(buildHighPassFeatures(arch), 1);
    const n = width * height;
    const fineStats = new PositionStats(n);
    const coarseStats = new PositionStats(n);
    const progress = throttledProgress(ctx.progress);
    try {
      for (let i = 0; i < goods.length; i++) {
        const frame = await loadFrame(goods[i]!.file, spec);
        const [fine, coarse] = await runFrame(session, frame, spec, ['fine', 'coarse']);
        fineStats.add(fine!);
        coarseStats.add(coarse!);
        progress(i + 1, goods.length, 'high-pass statistics');
      }
    } finally {
      await session.release();
    }

    const learn = (s: PositionStats) => {
      const { mean, variance } = s.moments();
      const m = boxMean(mean, width, height, statRadius);
      const v = boxMean(variance, width, height, statRadius);
      const std = v.map((x) => Math.max(minStd, Math.sqrt(x)));
      return { mean: Float32Array.from(m), scale: Float32Array.from(std, (x) => 1 / x), std };
    };
    const fine = learn(fineStats);
    const coarse = learn(coarseStats);

    // Summaries for the record: the noise of each branch inside the image and at its edges.
    const edge = Math.max(1, backgroundKernel >> 1);
    const inner: number[] = [];
    const outer: number[] = [];
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const i = y * width + x;
        (x >= edge && y >= edge && x < width - edge && y < height - edge ? inner : outer).push(i);
      }
    }
    const summary = (std: Float64Array) => ({
      stdInner: r4(median(inner.map((i) => std[i]!))),
      stdEdge: r4(median(outer.map((i) => std[i]!))),
    });
    const fineSummary = summary(fine.std);
    const coarseSummary = summary(coarse.std);

    const onnx = buildHighPassModel({
      ...arch,
      border,
      mapPool,
      fine: { mean: fine.mean, scale: fine.scale },
      coarse: { mean: coarse.mean, scale: coarse.scale },
      name: 'highpass-stats',
      producerName: 'linesight-train',
      docString: `highpass-stats: |detail - mean| / std per position, fine and ${coarseKernel}x${coarseKernel} branches, background ${backgroundKernel}x${backgroundKernel}, learned from ${goods.length} good images`,
    });
    ctx.log.info('fit done', { method: 'highpass-stats', images: goods.length, seconds: (Date.now() - t0) / 1000, onnxBytes: onnx.length, fine: fineSummary, coarse: coarseSummary });
    return {
      onnx,
      input: spec,
      // Regions under a 4x4 patch of frame pixels are not reported (as the hand-designed bundle).
      head: { type: 'anomaly', scoreOutput: 'score', mapOutput: 'map', minArea: 16, defectClass: 'defect' },
      parameters: {
        ...parameters,
        images: goods.length,
        scoreUnit: 'standard deviations of good film at that position',
        fine: fineSummary,
        coarse: coarseSummary,
        // What the hand design set as coarseGain: the coarse branch's weight relative to the fine one.
        learnedCoarseGain: r4(fineSummary.stdInner / coarseSummary.stdInner),
      },
      weights: [],
    };
  },
};
