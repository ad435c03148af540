// The film-demo detector's architecture, and the hand-designed baseline it started as.
//
// The synthetic screen-protector film is smooth (lighting gradients, soft texture) and defects are
// local departures from it, so the model subtracts a large box blur of the image (high-pass),
// takes the absolute value at two scales (single pixels for dust and scratches, a 5x5 mean for
// faint broad stains) and reports the strongest response. buildHighPassModel() is that graph with
// its free parameters given: models/film-demo (1.0.0 on) is *trained* by `npm run train:film`
// (method highpass-stats, src/train/methods/highpass-stats.ts), which learns a per-position mean and
// standard deviation of each branch from good frames. buildModel() is the original hand-designed
// 0.1.0 (fixed gain 1.5, a zeroed 4-pixel border, score in grey levels), kept as the baseline the
// trained model is compared with (docs/training.md) and as a test of the shared graph.
//
//   npx tsx src/models/build-film-demo.ts [--out DIR]   writes the hand-designed bundle (default runs/film-demo-hand)
//   npx tsx src/models/build-film-demo.ts --check       rebuilds it in memory, fails if DIR's files differ
//
// Same generator, same bytes: nothing here depends on time or on the machine's speed.
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { renderFilmFrame } from '../camera/synthetic.js';
import { GraphBuilder } from '../onnx/builder.js';
import { preprocess } from '../inference/preprocess.js';
import type { AnomalyHead, InputSpec, ModelManifest } from '../inference/types.js';

/** The hand-set design (and the trained method's defaults for the architecture). Sizes are in model-input pixels (half the demo's 320x240 frame). */
export const PARAMS = {
  inputWidth: 160,
  inputHeight: 120,
  /** Box blur estimating the film's background: wider than a stain, narrower than the lighting. */
  backgroundKernel: 15,
  /** Mean filter of the coarse branch, matched to faint stains. */
  coarseKernel: 5,
  /** Gain of the coarse branch: averaging 5x5 lowers its noise, this puts both on one scale. */
  coarseGain: 1.5,
  /** Pixels zeroed along the edges, where the blur sees one side only and lighting bends most (a multiple of mapPool). */
  border: 4,
  /** The map output is max-pooled by this factor (fewer, whole defect regions; smaller verdicts). */
  mapPool: 2,
} as const;

/** Calibration: threshold from CALIBRATION frames, figures measured on (unseen) EVALUATION frames. */
export const CALIBRATION = { seed: 101, frames: 400, width: 320, height: 240, defectRate: 0.5 };
export const TARGET_FALSE_REJECT_RATE = 0.01;
export const EVALUATION = { seed: 1, frames: 400, width: 320, height: 240, defectRate: 0.5 };

export const INPUT: InputSpec = {
  name: 'image',
  width: PARAMS.inputWidth,
  height: PARAMS.inputHeight,
  colour: 'gray',
  layout: 'nchw',
  dtype: 'float32',
  scale: 1 / 255,
  resize: 'stretch',
};

/** One branch of the detector: its response is |x - mean| * scale (per position when arrays of H x W). */
export interface HighPassBranch {
  /** Subtracted before the absolute value: a per-position [H*W] mean; none = 0. */
  mean?: Float32Array;
  /** Multiplies the absolute value: a gain, or a per-position [H*W] inverse standard deviation. */
  scale: number | Float32Array;
}

/**
 * The film detector's architecture, shared by the hand-designed bundle (buildModel) and the
 * trained one (src/train/methods/highpass-stats.ts): grey levels, detail = image minus a K x K box
 * blur, a fine branch (the detail itself) and a coarse branch (its C x C mean), each turned into a
 * response |x - mean| * scale, their maximum max-pooled by mapPool into the map, an optional border
 * of the map zeroed, and the map's maximum as the score.
 */
export interface HighPassDesign {
  inputWidth: number;
  inputHeight: number;
  backgroundKernel: number;
  coarseKernel: number;
  /** Model-input pixels zeroed along the edges (a multiple of mapPool); 0 = none. */
  border: number;
  mapPool: number;
  fine: HighPassBranch;
  coarse: HighPassBranch;
  /** Graph name and model metadata. */
  name: string;
  producerName: string;
  producerVersion?: string;
  docString: string;
}

/** The detail (image minus its background) and its coarse mean, in grey levels: the two branches' inputs. */
function addHighPass(g: GraphBuilder, d: Pick<HighPassDesign, 'inputWidth' | 'inputHeight' | 'backgroundKernel' | 'coarseKernel'>) {
  const { inputWidth: W, inputHeight: H, backgroundKernel: K, coarseKernel: C } = d;
  // Mean over the window's pixels inside the image (no zero padding), so edges are not darkened.
  const boxBlur = (x: string, kh: number, kw: number): string =>
    g.node('AveragePool', [x], {
      kernel_shape: [kh, kw],
      pads: [kh >> 1, kw >> 1, kh >> 1, kw >> 1],
      count_include_pad: 0,
    });
  const image = g.input('image', 'float32', [1, 1, H, W]);
  const grey = g.node('Mul', [image, g.constant('float32', [], [255])]); // work in grey levels
  // A K x K box blur as two 1-D passes: 2K instead of K² operations per pixel.
  const background = boxBlur(boxBlur(grey, 1, K), K, 1);
  const detail = g.node('Sub', [grey, background]);
  return { detail, coarse: () => boxBlur(detail, C, C) };
}

/**
 * A graph with the high-pass branches' raw inputs as outputs, 'fine' (the detail) and 'coarse' (its
 * C x C mean), each [1, 1, H, W] in grey levels: what training measures on good images.
 */
export function buildHighPassFeatures(d: Pick<HighPassDesign, 'inputWidth' | 'inputHeight' | 'backgroundKernel' | 'coarseKernel'>): Uint8Array {
  const g = new GraphBuilder({ name: 'highpass-features' });
  const hp = addHighPass(g, d);
  g.node('Identity', [hp.detail], {}, { name: 'fine' });
  g.node('Identity', [hp.coarse()], {}, { name: 'coarse' });
  g.output('fine', 'float32', [1, 1, d.inputHeight, d.inputWidth]);
  g.output('coarse', 'float32', [1, 1, d.inputHeight, d.inputWidth]);
  return g.toBytes({ producerName: 'linesight-train' });
}

/** The detector: image [1,1,H,W] in 0..1 → map [1,1,H/P,W/P] and score [1,1]. */
export function buildHighPassModel(d: HighPassDesign): Uint8Array {
  const { inputWidth: W, inputHeight: H, border: B, mapPool: P } = d;
  if (B % P !== 0) throw new Error(`highpass: border ${B} must be a multiple of mapPool ${P}`);
  if (W % P !== 0 || H % P !== 0) throw new Error(`highpass: input ${W}x${H} must be a multiple of mapPool ${P}`);
  const mapW = W / P;
  const mapH = H / P;
  const g = new GraphBuilder({ name: d.name });
  const branch = (x: string, b: HighPassBranch, label: string): string => {
    for (const a of [b.mean, b.scale]) {
      if (a instanceof Float32Array && a.length !== W * H) throw new Error(`highpass: ${label} statistics have ${a.length} values, not ${W * H}`);
    }
    const centred = b.mean ? g.node('Sub', [x, g.initializer(`${label}.mean`, 'float32', [1, 1, H, W], b.mean)]) : x;
    const a = g.node('Abs', [centred]);
    if (typeof b.scale === 'number') return b.scale === 1 ? a : g.node('Mul', [a, g.constant('float32', [], [b.scale])]);
    return g.node('Mul', [a, g.initializer(`${label}.scale`, 'float32', [1, 1, H, W], b.scale)]);
  };

  const hp = addHighPass(g, d);
  const fine = branch(hp.detail, d.fine, 'fine');
  const coarse = branch(hp.coarse(), d.coarse, 'coarse');
  const response = g.node('Max', [fine, coarse]);
  if (B > 0) {
    const pooled = g.node('MaxPool', [response], { kernel_shape: [P, P], strides: [P, P] });
    // Zero the border: cut it off, then pad it back with zeros. (After the MaxPool on purpose:
    // onnxruntime fuses a Pad into a following pool, and a pad wider than the kernel fails to load.)
    const b = B / P;
    const inner = g.node('Slice', [
      pooled,
      g.constant('int64', [2], [b, b]),
      g.constant('int64', [2], [mapH - b, mapW - b]),
      g.constant('int64', [2], [2, 3]),
    ]);
    g.node('Pad', [inner, g.constant('int64', [8], [0, 0, b, b, 0, 0, b, b])], { mode: 'constant' }, { name: 'map' });
  } else {
    g.node('MaxPool', [response], { kernel_shape: [P, P], strides: [P, P] }, { name: 'map' });
  }
  g.node('ReduceMax', ['map'], { axes: [2, 3], keepdims: 0 }, { name: 'score' });
  g.output('map', 'float32', [1, 1, mapH, mapW]);
  g.output('score', 'float32', [1, 1]);
  return g.toBytes({ producerName: d.producerName, producerVersion: d.producerVersion, docString: d.docString });
}

/** The hand-designed ONNX model: image [1,1,120,160] in 0..1 → map [1,1,60,80] and score [1,1], in grey levels. */
export function buildModel(): Uint8Array {
  return buildHighPassModel({
    ...PARAMS,
    fine: { scale: 1 },
    coarse: { scale: PARAMS.coarseGain },
    name: 'film-demo',
    producerName: 'linesight',
    producerVersion: '0.1.0',
    docString: 'film-demo: hand-designed high-pass anomaly detector for the synthetic film (not trained)',
  });
}

export interface Scored {
  score: number;
  defective: boolean;
  classes: string[];
}

/** Renders frames and scores them through the agent's own preprocessing. */
export async function scoreFrames(
  session: ort.InferenceSession,
  set: { seed: number; frames: number; width: number; height: number; defectRate: number },
): Promise<Scored[]> {
  const out: Scored[] = [];
  for (let i = 0; i < set.frames; i++) {
    const f = renderFilmFrame(set, i);
    const frame = { seq: i, timeNs: 0n, width: f.width, height: f.height, channels: 3 as const, data: f.data, source: 'synthetic' };
    const input = await preprocess(frame, INPUT);
    const result = await session.run({ image: new ort.Tensor('float32', input.data as Float32Array, input.dims) });
    out.push({ score: (result.score!.data as Float32Array)[0]!, defective: f.truth.verdict === 'reject', classes: f.truth.defects });
  }
  return out;
}

/**
 * The lowest threshold (rounded up to 0.01) at which at most `rate` of the good frames score at
 * or above it. Rounding keeps the manifest readable and moves the threshold only upwards.
 */
export function thresholdFor(scores: Scored[], rate: number): number {
  const good = scores.filter((s) => !s.defective).map((s) => s.score).sort((a, b) => b - a);
  if (good.length === 0) throw new Error('no good frames to calibrate on');
  const allowed = Math.floor(good.length * rate);
  const highestKept = good[Math.min(allowed, good.length - 1)]!; // must fall below the threshold
  return Math.ceil((highestKept + 1e-4) * 100) / 100;
}

export function metrics(scores: Scored[], threshold: number): Record<string, number | Record<string, number>> {
  const pos = scores.filter((s) => s.defective);
  const neg = scores.filter((s) => !s.defective);
  const tp = pos.filter((s) => s.score >= threshold).length;
  const fp = neg.filter((s) => s.score >= threshold).length;
  // AUROC: probability that a defective frame outscores a good one (ties count half).
  let wins = 0;
  for (const p of pos) for (const n of neg) wins += p.score > n.score ? 1 : p.score === n.score ? 0.5 : 0;
  const recallByClass: Record<string, number> = {};
  for (const cls of [...new Set(pos.flatMap((p) => p.classes))].sort()) {
    const withCls = pos.filter((p) => p.classes.includes(cls));
    recallByClass[cls] = round(withCls.filter((p) => p.score >= threshold).length / withCls.length);
  }
  return {
    good: neg.length,
    defective: pos.length,
    accuracy: round((tp + neg.length - fp) / scores.length),
    recall: round(pos.length ? tp / pos.length : 0),
    falseRejectRate: round(neg.length ? fp / neg.length : 0),
    auroc: round(pos.length && neg.length ? wins / (pos.length * neg.length) : 0),
    recallByClass,
  };
}

const round = (v: number): number => Math.round(v * 10000) / 10000;

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

export async function buildBundle(): Promise<{ onnx: Uint8Array; manifest: ModelManifest; evaluation: ReturnType<typeof metrics> }> {
  const onnx = buildModel();
  const session = await ort.InferenceSession.create(Buffer.from(onnx), { intraOpNumThreads: 1 });
  const calibrationScores = await scoreFrames(session, CALIBRATION);
  const threshold = thresholdFor(calibrationScores, TARGET_FALSE_REJECT_RATE);
  const calibration = metrics(calibrationScores, threshold);
  const evaluation = metrics(await scoreFrames(session, EVALUATION), threshold);
  const head: AnomalyHead = {
    type: 'anomaly',
    scoreOutput: 'score',
    mapOutput: 'map',
    // Regions under a 4x4 patch of frame pixels are not reported. At 320x240 a map cell is exactly
    // that (dust specks fill one), so this only filters when a finer map or larger frame is used.
    minArea: 16,
    defectClass: 'defect',
  };
  const manifest: ModelManifest = {
    schemaVersion: 1,
    name: 'film-demo',
    version: '0.1.0',
    sha256: sha256(onnx),
    description:
      'Demo anomaly model for the synthetic screen-protector film: high-pass (image minus a 15x15 box blur), ' +
      'absolute value at two scales, strongest response in grey levels. Hand-designed, not trained.',
    input: INPUT,
    head,
    threshold,
    provenance: {
      createdBy: 'src/models/build-film-demo.ts',
      note: 'Hand-designed, not trained: the weights are fixed filters; only the threshold is calibrated, on synthetic frames.',
      parameters: { ...PARAMS },
      dataset: { name: 'synthetic film (src/camera/synthetic.ts)', images: CALIBRATION.frames },
      metrics: {
        calibration: { synthetic: CALIBRATION, targetFalseRejectRate: TARGET_FALSE_REJECT_RATE, ...calibration },
        evaluation: { synthetic: EVALUATION, ...evaluation },
      },
    },
  };
  return { onnx, manifest, evaluation };
}

async function main(): Promise<void> {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
  const outAt = process.argv.indexOf('--out');
  // Not models/film-demo: that is the trained bundle now (npm run train:film).
  const dir = outAt > 0 && process.argv[outAt + 1] ? resolve(process.argv[outAt + 1]!) : join(root, 'runs', 'film-demo-hand');
  const { onnx, manifest, evaluation } = await buildBundle();
  const json = JSON.stringify(manifest, null, 2) + '\n';

  const session = await ort.InferenceSession.create(Buffer.from(onnx), { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const feed = { image: new ort.Tensor('float32', new Float32Array(PARAMS.inputWidth * PARAMS.inputHeight).fill(0.8), [1, 1, PARAMS.inputHeight, PARAMS.inputWidth]) };
  for (let i = 0; i < 20; i++) await session.run(feed); // warm-up
  const runs = 200;
  const t0 = performance.now();
  for (let i = 0; i < runs; i++) await session.run(feed);
  const inferMs = (performance.now() - t0) / runs;

  if (process.argv.includes('--check')) {
    const same = async (file: string, want: Uint8Array | string): Promise<boolean> => {
      const have = await readFile(join(dir, file)).catch(() => undefined);
      return have !== undefined && Buffer.compare(have, Buffer.from(want)) === 0;
    };
    const ok = (await same('model.onnx', onnx)) && (await same('model.json', json));
    console.log(ok ? `${dir} is up to date` : `${dir} differs from what this script builds`);
    process.exitCode = ok ? 0 : 1;
  } else {
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'model.onnx'), onnx);
    await writeFile(join(dir, 'model.json'), json);
    console.log(`wrote ${dir} (model.onnx ${onnx.length} bytes, sha256 ${manifest.sha256.slice(0, 12)}…)`);
  }
  console.log(`threshold ${manifest.threshold} (≤ ${TARGET_FALSE_REJECT_RATE * 100} % false rejects on calibration seed ${CALIBRATION.seed})`);
  console.log(`evaluation (seed ${EVALUATION.seed}, ${EVALUATION.frames} frames): ${JSON.stringify(evaluation)}`);
  console.log(`inference ${inferMs.toFixed(2)} ms per frame (one thread)`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main();
}
