// `linesight train`: collect -> preprocess -> train -> evaluate -> build. Every stage writes its
// output into the run folder (runs/<run-id>/) together with a record of the hash of its inputs and
// of its outputs, so a resumed run skips each stage whose outputs are intact and whose inputs are
// unchanged; the seeds are fixed, so the same config gives the same model and the same metrics.
// Evaluation runs the fitted model through the agent's own inference path (InferencePool), so the
// scores and the threshold in the report are the ones the line will see.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { copyFile, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import YAML from 'yaml';
import { renderFilmFrame } from '../camera/synthetic.js';
import { InferencePool, decodeImageFile, loadBundle } from '../inference/index.js';
import { inputToFrame } from '../inference/heads.js';
import { planGeometry } from '../inference/preprocess.js';
import type { ModelManifest } from '../inference/types.js';
import { createLogger, type Logger } from '../log.js';
import { canonicalJson, folderFingerprint, mapLimit, samplesFromManifest, scanDataset, sha256Hex, splitSamples, type DatasetManifest } from './dataset.js';
import {
  calibrateThreshold,
  imageMetrics,
  PixelAccumulator,
  rocCurve,
  upsampleMap,
  type Calibration,
  type ImageMetrics,
  type PixelMetrics,
} from './metrics.js';
import { heatmapPng, histogram } from './plots.js';
import { rocForJson, writeReport, type HeatmapFigure, type ReportData, type ScoredImage } from './report.js';
import { parseTrainConfig, resolveTrainConfig, TrainConfigError, type ResolvedTrainConfig, type TrainConfig } from './config.js';
import type { FitResult, Sample, TrainMethod } from './types.js';

export type StageName = 'collect' | 'preprocess' | 'train' | 'evaluate' | 'build';
export const STAGES: readonly StageName[] = ['collect', 'preprocess', 'train', 'evaluate', 'build'];

export type ProgressFn = (done: number, total: number, what: string) => void;

// ---- Progress ---------------------------------------------------------------------------------

/**
 * Progress on a stream (stderr): a redrawn bar on a TTY; otherwise plain lines at every 10 %, so
 * logs of a CI or systemd run stay readable.
 */
export function createProgress(stream: NodeJS.WritableStream & { isTTY?: boolean; columns?: number } = process.stderr): ProgressFn {
  const last = new Map<string, number>();
  return (done, total, what) => {
    const frac = total > 0 ? Math.min(1, done / total) : 1;
    if (stream.isTTY) {
      const step = Math.floor(frac * 100);
      if (last.get(what) === step && done !== total) return;
      last.set(what, step);
      const width = Math.max(10, Math.min(40, (stream.columns ?? 80) - what.length - 30));
      const filled = Math.round(frac * width);
      stream.write(`\r${what} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} ${step}%\x1b[K`);
      if (done >= total) stream.write('\n');
    } else {
      const step = Math.floor(frac * 10);
      if (last.get(what) === step) return;
      last.set(what, step);
      stream.write(`${what}: ${done}/${total} (${step * 10}%)\n`);
    }
  };
}

// ---- Code version -----------------------------------------------------------------------------

/** package.json version and git commit of the code that trained (the commit gets '-dirty' when tracked files changed). */
export function codeVersion(): { version?: string; commit?: string } {
  // package.json is two levels above both src/train/ (tsx) and dist/train/ (compiled).
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const out: { version?: string; commit?: string } = {};
  try {
    out.version = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version?: string }).version;
  } catch {
    /* not found: leave it out */
  }
  try {
    const opts = { cwd: root, encoding: 'utf8' as const, stdio: ['ignore', 'pipe', 'ignore'] as ['ignore', 'pipe', 'ignore'] };
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], opts).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], opts).trim() !== '';
    out.commit = dirty ? `${commit}-dirty` : commit;
  } catch {
    /* not a git checkout (installed package): no commit */
  }
  return out;
}

// ---- Run folder and stages --------------------------------------------------------------------

interface StageRecord {
  stage: StageName;
  inputsHash: string;
  /** Output path (relative to the run folder) -> sha256 (files) or fingerprint (folders). */
  outputs: Record<string, string>;
  finishedAt: string;
  ms: number;
}

export interface StageReport {
  stage: StageName;
  status: 'ran' | 'skipped';
  ms: number;
}

const hashOf = (v: unknown): string => sha256Hex(canonicalJson(v));

async function fileHash(file: string): Promise<string> {
  return createHash('sha256').update(await readFile(file)).digest('hex');
}

async function outputHash(abs: string): Promise<string | undefined> {
  try {
    const st = await stat(abs);
    return st.isDirectory() ? `dir:${await folderFingerprint(abs)}` : await fileHash(abs);
  } catch {
    return undefined;
  }
}

async function writeJson(file: string, value: unknown): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp`;
  await writeFile(tmp, JSON.stringify(value, null, 2) + '\n');
  await rename(tmp, file);
}

async function readJson<T>(file: string): Promise<T> {
  return JSON.parse(await readFile(file, 'utf8')) as T;
}

class Run {
  readonly stages: StageReport[] = [];
  constructor(
    readonly id: string,
    readonly dir: string,
    readonly log: Logger,
  ) {}

  p(...rel: string[]): string {
    return path.join(this.dir, ...rel);
  }

  /**
   * Runs a stage unless its record says it already ran on the same inputs and its outputs are
   * still as it left them; then `load` reads the outputs back instead.
   */
  async stage<T>(name: StageName, inputs: unknown, run: () => Promise<{ outputs: string[]; value: T }>, load: () => Promise<T>): Promise<T> {
    const inputsHash = hashOf(inputs);
    const recordFile = this.p('stages', `${name}.json`);
    let record: StageRecord | undefined;
    try {
      record = await readJson<StageRecord>(recordFile);
    } catch {
      record = undefined;
    }
    if (record && record.inputsHash === inputsHash) {
      let intact = true;
      for (const [rel, h] of Object.entries(record.outputs)) {
        if ((await outputHash(this.p(rel))) !== h) {
          intact = false;
          this.log.info(`${name}: output changed or missing, running the stage again`, { output: rel });
          break;
        }
      }
      if (intact) {
        try {
          const value = await load();
          this.log.info(`${name}: skipped (inputs unchanged, outputs intact)`);
          this.stages.push({ stage: name, status: 'skipped', ms: 0 });
          return value;
        } catch (err) {
          this.log.warn(`${name}: cannot read its outputs back, running the stage again`, { error: err });
        }
      }
    } else if (record) {
      this.log.info(`${name}: inputs changed, running the stage again`);
    }
    await rm(recordFile, { force: true });
    const t0 = performance.now();
    this.log.info(`${name}: running`);
    const { outputs, value } = await run();
    const ms = Math.round(performance.now() - t0);
    const hashes: Record<string, string> = {};
    for (const rel of outputs) {
      const h = await outputHash(this.p(rel));
      if (h === undefined) throw new Error(`stage ${name} did not write ${rel}`);
      hashes[rel] = h;
    }
    await writeJson(recordFile, { stage: name, inputsHash, outputs: hashes, finishedAt: new Date().toISOString(), ms } satisfies StageRecord);
    this.stages.push({ stage: name, status: 'ran', ms });
    return value;
  }
}

/** The saved config of a run: enough to resume it without the original file. */
interface RunConfigFile {
  id: string;
  /** The config file it came from ('' when built in code). */
  file: string;
  /** Folder its relative paths resolve against. */
  baseDir: string;
  config: TrainConfig;
}

function newRunId(name: string, now: Date): string {
  const s = now.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return `${name}-${s}`;
}

/** A run folder named by id or path: an existing folder wins, else `<runDir>/<id>`. */
export function resolveRunDir(run: string, runDir: string): string {
  if (path.isAbsolute(run) || run.includes('/') || run.includes(path.sep)) return path.resolve(run);
  const direct = path.resolve(runDir, run);
  return direct;
}

/** Reads the config a run was started with (for `--resume RUN` without `-c`). */
export async function loadRunConfig(runDir: string): Promise<ResolvedTrainConfig> {
  const file = path.join(runDir, 'config.json');
  let saved: RunConfigFile;
  try {
    saved = await readJson<RunConfigFile>(file);
  } catch (err) {
    throw new Error(`${file}: cannot read the run's config (${(err as Error).message}); is ${runDir} a run folder made by linesight train?`);
  }
  const config = parseTrainConfig(saved.config, file);
  return resolveTrainConfig(config, saved.baseDir, saved.file);
}

// ---- Collect ----------------------------------------------------------------------------------

/** Renders the synthetic film into `dir` as PNGs in the folder-per-class layout. */
export async function renderSyntheticDataset(
  dir: string,
  opts: TrainConfig['dataset']['synthetic'],
  progress?: ProgressFn,
): Promise<{ frames: number; classes: Record<string, number> }> {
  await rm(dir, { recursive: true, force: true });
  const classes: Record<string, number> = {};
  const digits = String(opts.firstIndex + opts.frames - 1).length;
  const film = { width: opts.width, height: opts.height, seed: opts.seed, defectRate: opts.defectRate };
  const indices = Array.from({ length: opts.frames }, (_, i) => opts.firstIndex + i);
  let done = 0;
  await mapLimit(indices, 4, async (i) => {
    const f = renderFilmFrame(film, i);
    // One folder per class: a frame with several defects goes under its first (it is rejected
    // either way; per-class recall counts it for that class).
    const label = f.truth.verdict === 'pass' ? 'good' : (f.truth.defects[0] ?? 'defect');
    classes[label] = (classes[label] ?? 0) + 1;
    const out = path.join(dir, label, `frame-${String(i).padStart(Math.max(5, digits), '0')}.png`);
    await mkdir(path.dirname(out), { recursive: true });
    // Fixed PNG settings so the same frames give the same bytes (and dataset hash).
    await sharp(f.data, { raw: { width: f.width, height: f.height, channels: 3 } })
      .png({ compressionLevel: 6, adaptiveFiltering: false, palette: false })
      .toFile(out);
    progress?.(++done, opts.frames, 'render');
  });
  return { frames: opts.frames, classes };
}

// ---- Evaluate ---------------------------------------------------------------------------------

export interface EvaluateSettings {
  pixelMaxSide: number;
  proFprLimit: number;
  heatmaps: number;
  workers: number;
}

export interface EvaluateOptions {
  bundleDir: string;
  /** Scored and reported on. */
  test: Sample[];
  /** Good images calibrate the threshold (when `threshold` is not given). */
  val?: Sample[];
  /** Use this threshold (e.g. the bundle's) instead of calibrating. */
  threshold?: number;
  targetFrr: number;
  dataset: DatasetManifest;
  settings: EvaluateSettings;
  /** Report folder (report.json, report.html, heatmaps/). */
  outDir: string;
  log: Logger;
  progress?: ProgressFn;
  title?: string;
  run?: Record<string, unknown>;
  split?: Record<string, Record<string, number>>;
  splitPolicy?: string;
  /** Test samples are labelled 'test' in the scores ('all' for eval on a whole folder). */
  testSplitName?: 'test' | 'all';
}

export interface EvalMetrics {
  threshold: number;
  thresholdSource: 'calibrated' | 'bundle';
  targetFrr?: number;
  calibration?: Calibration;
  test: ImageMetrics;
  val?: ImageMetrics;
  pixel?: Omit<PixelMetrics, 'proCurve'>;
}

/** Per-image time in the agent's inference pool on this machine (preprocess + model + head; not decode), over the scored images. Not part of the metrics: it varies run to run. */
export interface InferenceTiming {
  msMedian: number;
  msP90: number;
  images: number;
}

function timingOf(items: ScoredSample[]): InferenceTiming | undefined {
  const ms = items.map((i) => i.ms).filter((m): m is number => m !== undefined).sort((a, b) => a - b);
  if (!ms.length) return undefined;
  const q = (f: number): number => +ms[Math.min(ms.length - 1, Math.floor(f * ms.length))]!.toFixed(2);
  return { msMedian: q(0.5), msP90: q(0.9), images: ms.length };
}

export interface Evaluation {
  metrics: EvalMetrics;
  inference?: InferenceTiming;
  manifest: ModelManifest;
  report: { json: string; html: string };
  scores: ScoredImage[];
}

interface ScoredSample {
  sample: Sample;
  score: number;
  map?: { width: number; height: number; data: number[] };
  frameWidth: number;
  frameHeight: number;
  /** Preprocess + inference + head, ms (decode and queueing not included). */
  ms?: number;
}

const relTo = (root: string, file: string): string => path.relative(root, file).split(path.sep).join('/');

async function scoreAll(pool: InferencePool, samples: Sample[], colour: 'gray' | 'rgb', what: string, progress?: ProgressFn): Promise<ScoredSample[]> {
  let done = 0;
  // A few frames in flight keep decode (main thread, libvips) and inference (worker) overlapped.
  return mapLimit(samples, 4, async (sample, i) => {
    const frame = await decodeImageFile(sample.file, { colour, source: 'train-eval', seq: i });
    let res;
    try {
      res = await pool.inspect(frame);
    } catch (err) {
      throw new Error(`${sample.file}: inference failed: ${(err as Error).message}`);
    }
    progress?.(++done, samples.length, what);
    const v = res.verdict;
    const ms = res.timings.preprocessMs + res.timings.inferMs + res.timings.postprocessMs;
    return { sample, score: v.score, map: v.map, frameWidth: frame.width, frameHeight: frame.height, ms };
  });
}

/** Where the model's map lies over a frame, in the pixels of a grid of outW x outH over that frame. */
function mapPlacement(manifest: ModelManifest, frameW: number, frameH: number, outW: number, outH: number) {
  const geo = planGeometry(frameW, frameH, manifest.input);
  const t = inputToFrame(geo);
  const kx = outW / frameW;
  const ky = outH / frameH;
  const crop = geo.crop ?? { x: 0, y: 0, width: frameW, height: frameH };
  return {
    extent: { x: t.offsetX * kx, y: t.offsetY * ky, width: geo.inputWidth * t.scaleX * kx, height: geo.inputHeight * t.scaleY * ky },
    valid: { x: crop.x * kx, y: crop.y * ky, width: crop.width * kx, height: crop.height * ky },
  };
}

function capped(w: number, h: number, maxSide: number): { w: number; h: number } {
  const s = maxSide > 0 ? Math.min(1, maxSide / Math.max(w, h)) : 1;
  return { w: Math.max(1, Math.round(w * s)), h: Math.max(1, Math.round(h * s)) };
}

async function loadMask(file: string, maxSide: number): Promise<{ mask: Uint8Array; width: number; height: number }> {
  const meta = await sharp(file).metadata();
  const { w, h } = capped(meta.width ?? 1, meta.height ?? 1, maxSide);
  // Nearest neighbour keeps the mask binary; white (>= 128) is defect.
  const { data } = await sharp(file).removeAlpha().greyscale().resize(w, h, { fit: 'fill', kernel: 'nearest' }).raw().toBuffer({ resolveWithObject: true });
  const mask = new Uint8Array(w * h);
  for (let i = 0; i < mask.length; i++) mask[i] = data[i]! >= 128 ? 1 : 0;
  return { mask, width: w, height: h };
}

/** Picks up to n defective images, taking the classes in turn (deterministic: file order). */
function pickExamples(items: ScoredSample[], n: number): ScoredSample[] {
  const byClass = new Map<string, ScoredSample[]>();
  for (const it of [...items].sort((a, b) => (a.sample.file < b.sample.file ? -1 : 1))) {
    if (it.sample.isGood || !it.map) continue;
    byClass.set(it.sample.label, [...(byClass.get(it.sample.label) ?? []), it]);
  }
  const lists = [...byClass.keys()].sort().map((k) => byClass.get(k)!);
  const out: ScoredSample[] = [];
  for (let round = 0; out.length < n; round++) {
    let any = false;
    for (const l of lists) {
      if (round < l.length && out.length < n) {
        out.push(l[round]!);
        any = true;
      }
    }
    if (!any) break;
  }
  return out;
}

function countBy(samples: Sample[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of [...samples].sort((a, b) => (a.label < b.label ? -1 : 1))) out[s.label] = (out[s.label] ?? 0) + 1;
  return out;
}

/**
 * Scores the samples with the bundle through the agent's InferencePool, calibrates the threshold
 * on the validation good images (unless one is given), computes the metrics on the test samples,
 * and writes the report (report.json, report.html, heatmaps/) into outDir.
 */
export async function evaluateBundle(opts: EvaluateOptions): Promise<Evaluation> {
  const { log, settings } = opts;
  const { manifest } = await loadBundle(opts.bundleDir);
  const colour = manifest.input.colour === 'gray' ? 'gray' : 'rgb';
  const pool = new InferencePool({
    modelDir: opts.bundleDir,
    providers: ['cpu'],
    workers: settings.workers,
    intraOpThreads: 0,
    queueLimit: 64,
    log,
  });
  await pool.start();
  let val: ScoredSample[] = [];
  let test: ScoredSample[];
  try {
    if (opts.val?.length) val = await scoreAll(pool, opts.val, colour, 'score val', opts.progress);
    test = await scoreAll(pool, opts.test, colour, 'score test', opts.progress);
  } finally {
    await pool.stop();
  }

  let threshold: number;
  let calibration: Calibration | undefined;
  if (opts.threshold !== undefined) {
    threshold = opts.threshold;
  } else {
    const good = val.filter((v) => v.sample.isGood).map((v) => v.score);
    if (good.length === 0) throw new Error('evaluate: no good images in the validation split to calibrate the threshold on (add good images or raise split.val)');
    calibration = calibrateThreshold(good, opts.targetFrr);
    threshold = calibration.threshold;
  }

  const toScored = (xs: ScoredSample[]) => xs.map((x) => ({ label: x.sample.label, isGood: x.sample.isGood, score: x.score }));
  const testMetrics = imageMetrics(toScored(test), threshold);
  const valMetrics = val.length ? imageMetrics(toScored(val), threshold) : undefined;
  if (testMetrics.n.defective === 0) log.warn('evaluate: no defective test images: AUROC and recall are undefined');

  // Pixel level: every test image whose ground truth is known pixel by pixel (good images are
  // all-good; defective images need a mask), when the model gives a map.
  let pixel: PixelMetrics | undefined;
  const withMasks = test.filter((t) => t.sample.mask);
  if (withMasks.length > 0 && test.every((t) => t.map)) {
    const acc = new PixelAccumulator();
    let done = 0;
    const usable = test.filter((t) => t.sample.isGood || t.sample.mask);
    for (const t of usable) {
      let m: { mask: Uint8Array; width: number; height: number };
      if (t.sample.mask) m = await loadMask(t.sample.mask, settings.pixelMaxSide);
      else {
        const { w, h } = capped(t.frameWidth, t.frameHeight, settings.pixelMaxSide);
        m = { mask: new Uint8Array(w * h), width: w, height: h };
      }
      const scores = upsampleMap(t.map!, m.width, m.height, mapPlacement(manifest, t.frameWidth, t.frameHeight, m.width, m.height));
      acc.add(scores, m.mask, m.width, m.height);
      opts.progress?.(++done, usable.length, 'pixel metrics');
    }
    pixel = acc.compute(settings.proFprLimit);
  } else if (withMasks.length > 0) {
    log.info('evaluate: the model gives no anomaly map: no pixel-level metrics');
  }

  // Heatmaps over defective test images.
  await rm(path.join(opts.outDir, 'heatmaps'), { recursive: true, force: true });
  const heatmaps: HeatmapFigure[] = [];
  const examples = pickExamples(test, settings.heatmaps);
  if (examples.length) {
    await mkdir(path.join(opts.outDir, 'heatmaps'), { recursive: true });
    let lo = Infinity;
    let hi = threshold;
    for (const e of examples) for (const v of e.map!.data) (lo = Math.min(lo, v)), (hi = Math.max(hi, v));
    if (!(hi > lo)) hi = lo + 1;
    for (const [i, e] of examples.entries()) {
      const { w, h } = capped(e.frameWidth, e.frameHeight, 384);
      const scores = upsampleMap(e.map!, w, h, mapPlacement(manifest, e.frameWidth, e.frameHeight, w, h));
      const mask = e.sample.mask ? await loadMask(e.sample.mask, 0) : undefined;
      let maskAt: Uint8Array | undefined;
      if (mask) {
        const { data } = await sharp(Buffer.from(mask.mask.map((v) => v * 255)), { raw: { width: mask.width, height: mask.height, channels: 1 } })
          .resize(w, h, { fit: 'fill', kernel: 'nearest' })
          .raw()
          .toBuffer({ resolveWithObject: true });
        maskAt = Uint8Array.from(data, (v) => (v >= 128 ? 1 : 0));
      }
      const name = `heatmaps/${String(i).padStart(2, '0')}-${e.sample.label}-${path.basename(e.sample.file).replace(/\.[^.]+$/, '')}.png`;
      const png = await heatmapPng({ image: e.sample.file, scores, width: w, height: h, lo, hi, mask: maskAt });
      await writeFile(path.join(opts.outDir, name), png);
      heatmaps.push({
        png: name,
        file: relTo(opts.dataset.root, e.sample.file),
        label: e.sample.label,
        score: e.score,
        verdict: e.score >= threshold ? 'reject' : 'pass',
        hasMask: !!maskAt,
      });
    }
  }

  const testName = opts.testSplitName ?? 'test';
  const scores: ScoredImage[] = [
    ...val.map((v) => ({ file: relTo(opts.dataset.root, v.sample.file), label: v.sample.label, isGood: v.sample.isGood, split: 'val' as const, score: v.score })),
    ...test.map((v) => ({ file: relTo(opts.dataset.root, v.sample.file), label: v.sample.label, isGood: v.sample.isGood, split: testName, score: v.score })),
  ];
  const pixelSummary = pixel ? (({ proCurve: _c, ...rest }) => rest)(pixel) : undefined;
  const metrics: EvalMetrics = {
    threshold,
    thresholdSource: calibration ? 'calibrated' : 'bundle',
    ...(calibration ? { targetFrr: opts.targetFrr, calibration } : {}),
    test: testMetrics,
    ...(valMetrics ? { val: valMetrics } : {}),
    ...(pixelSummary ? { pixel: pixelSummary } : {}),
  };
  const good = test.filter((t) => t.sample.isGood).map((t) => t.score);
  const bad = test.filter((t) => !t.sample.isGood).map((t) => t.score);
  const data: ReportData = {
    title: opts.title ?? `Evaluation of ${manifest.name} ${manifest.version}`,
    createdAt: new Date().toISOString(),
    model: { name: manifest.name, version: manifest.version, sha256: manifest.sha256, dir: opts.bundleDir },
    dataset: { root: opts.dataset.root, manifestSha256: opts.dataset.sha256, classes: opts.dataset.classes, skipped: opts.dataset.skipped },
    ...(opts.split ? { split: opts.split } : {}),
    ...(opts.splitPolicy ? { splitPolicy: opts.splitPolicy } : {}),
    threshold: { value: threshold, source: metrics.thresholdSource, ...(calibration ? { targetFrr: opts.targetFrr, calibration } : {}) },
    metrics: { test: testMetrics, ...(valMetrics ? { val: valMetrics } : {}), ...(pixelSummary ? { pixel: pixelSummary } : {}) },
    figures: {
      roc: rocForJson(rocCurve(bad, good)),
      histogram: histogram(good, bad, threshold),
      ...(pixel ? { pro: pixel.proCurve } : {}),
      heatmaps,
    },
    ...(opts.run ? { run: opts.run } : {}),
    scores,
  };
  await mkdir(opts.outDir, { recursive: true });
  const report = await writeReport(opts.outDir, data);
  const inference = timingOf([...val, ...test]);
  return { metrics, manifest, report, scores, ...(inference ? { inference } : {}) };
}

// ---- Bundles ----------------------------------------------------------------------------------

/** Writes model.onnx then model.json into dir, each through a temporary file and a rename. */
export async function writeBundle(dir: string, onnx: Uint8Array, manifest: ModelManifest): Promise<void> {
  await mkdir(dir, { recursive: true });
  // model.onnx first: a reader that sees the new model.json always finds the model it names.
  await writeFile(path.join(dir, 'model.onnx.tmp'), onnx);
  await rename(path.join(dir, 'model.onnx.tmp'), path.join(dir, 'model.onnx'));
  await writeJson(path.join(dir, 'model.json'), manifest);
}

// ---- The pipeline -----------------------------------------------------------------------------

export interface TrainOptions {
  log?: Logger;
  /** Training methods by name (default: src/train/index-methods.ts). */
  methods?: Record<string, TrainMethod>;
  /** Resume this run (id under the run dir, or a path) instead of starting a new one. */
  resume?: string;
  /** Progress reporter (default: bars / lines on stderr); false for none. */
  progress?: ProgressFn | false;
  /** Id of a new run (default `<name>-<UTC timestamp>`). */
  runId?: string;
}

export interface TrainResult {
  runId: string;
  runDir: string;
  /** The final bundle (the config's output dir). */
  bundleDir: string;
  manifest: ModelManifest;
  metrics: EvalMetrics;
  dataset: { sha256: string; images: number; skipped: number; classes: DatasetManifest['classes'] };
  split: Record<string, Record<string, number>>;
  stages: StageReport[];
  report: string;
}

interface SplitFile {
  seed: number;
  mode: string;
  fractions: TrainConfig['split'];
  /** The split policy in words (per file, or which files are kept together). */
  policy: string;
  /** How many units were split: groups, or files for a per-file split. */
  groups: number;
  train: string[];
  val: string[];
  test: string[];
}

interface FitFile {
  modelSha256: string;
  input: FitResult['input'];
  head: FitResult['head'];
  parameters: FitResult['parameters'];
  weights: FitResult['weights'];
}

/** The split policy in words, for split.json, the report and the bundle's provenance. */
export function splitPolicy(g: TrainConfig['split']['groupBy']): string {
  if (g.kind === 'none') return 'per-file: every image assigned on its own, stratified by class';
  const gap = g.numericGap > 0 ? `, numeric keys at most ${g.numericGap} apart chained into one group` : '';
  const un = g.unmatched === 'single' ? '; unmatched files: a group each' : '';
  return `grouped: key = first capture group of /${g.pattern}/ on the file ${g.on === 'name' ? 'name' : 'path'}${gap}${un}; a group never crosses splits; groups stratified by their most frequent defect class (or good)`;
}

async function defaultMethods(): Promise<Record<string, TrainMethod>> {
  const mod = (await import('./index-methods.js')) as { methods: Record<string, TrainMethod> };
  return mod.methods;
}

export async function runTraining(rc: ResolvedTrainConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  const log = opts.log ?? createLogger();
  const progress: ProgressFn | undefined = opts.progress === false ? undefined : (opts.progress ?? createProgress());
  const cfg = rc.config;

  // A misspelt method fails now, not after the dataset scan.
  const methods = opts.methods ?? (await defaultMethods());
  const method = methods[cfg.method];
  if (!method) {
    throw new TrainConfigError(`method: unknown training method '${cfg.method}' (known: ${Object.keys(methods).sort().join(', ') || 'none'})`);
  }

  // The run folder.
  let runDir: string;
  let runId: string;
  if (opts.resume) {
    runDir = resolveRunDir(opts.resume, rc.runDir);
    if (!existsSync(path.join(runDir, 'config.json'))) {
      throw new Error(`${runDir}: not a run folder (no config.json). Fix: give --resume a run id under ${rc.runDir} or the path of a run folder.`);
    }
    runId = path.basename(runDir);
  } else {
    const base = opts.runId ?? newRunId(cfg.output.name, new Date());
    runId = base;
    for (let n = 2; existsSync(path.join(rc.runDir, runId)); n++) runId = `${base}-${n}`;
    runDir = path.join(rc.runDir, runId);
  }
  await mkdir(runDir, { recursive: true });
  const run = new Run(runId, runDir, log.child({ run: runId }));
  await writeJson(run.p('config.json'), { id: runId, file: rc.file, baseDir: rc.baseDir, config: cfg } satisfies RunConfigFile);
  await writeFile(run.p('config.yaml'), `# linesight training config of run ${runId} (defaults filled in)\n# from: ${rc.file || '(in code)'}\n${YAML.stringify(cfg)}`);

  // Collect: the dataset manifest (every file, its label and sha256).
  const manifestFile = run.p('dataset.json');
  const loadManifest = async (): Promise<DatasetManifest> => readJson<DatasetManifest>(manifestFile);
  const collectInputs =
    cfg.dataset.source === 'folder'
      ? { source: 'folder', dir: rc.datasetDir, fingerprint: await folderFingerprint(rc.datasetDir).catch(() => 'missing') }
      : {
          source: 'synthetic',
          synthetic: cfg.dataset.synthetic,
          // One frame rendered now: a changed generator changes this hash and so re-renders the set.
          probe: sha256Hex(renderFilmFrame({ ...cfg.dataset.synthetic }, cfg.dataset.synthetic.firstIndex).data),
        };
  const dataset = await run.stage(
    'collect',
    collectInputs,
    async () => {
      let root = rc.datasetDir;
      const outputs = ['dataset.json'];
      if (cfg.dataset.source === 'synthetic') {
        root = run.p('data');
        await renderSyntheticDataset(root, cfg.dataset.synthetic, progress);
        outputs.push('data');
      }
      const { manifest } = await scanDataset(root, { log: run.log, progress });
      await writeJson(manifestFile, manifest);
      return { outputs, value: manifest };
    },
    loadManifest,
  );
  const samples = samplesFromManifest(dataset);
  const byRel = new Map(samples.map((s) => [relTo(dataset.root, s.file), s]));

  // Preprocess: the stratified, seeded split.
  const splitFile = run.p('split.json');
  const split = await run.stage(
    'preprocess',
    { dataset: dataset.sha256, split: cfg.split, seed: cfg.seed, mode: cfg.mode },
    async () => {
      const s = splitSamples(samples, cfg.split, cfg.seed, cfg.mode, cfg.split.groupBy);
      const rel = (xs: Sample[]) => xs.map((x) => relTo(dataset.root, x.file));
      await writeJson(splitFile, {
        seed: cfg.seed,
        mode: cfg.mode,
        fractions: cfg.split,
        policy: splitPolicy(cfg.split.groupBy),
        groups: s.groups ?? samples.length,
        train: rel(s.train),
        val: rel(s.val),
        test: rel(s.test),
      } satisfies SplitFile);
      return { outputs: ['split.json'], value: s };
    },
    async () => {
      const f = await readJson<SplitFile>(splitFile);
      const get = (rel: string): Sample => {
        const s = byRel.get(rel);
        if (!s) throw new Error(`split.json names ${rel}, which is not in the dataset manifest`);
        return s;
      };
      return { train: f.train.map(get), val: f.val.map(get), test: f.test.map(get), groups: f.groups };
    },
  );
  const splitCounts = { train: countBy(split.train), val: countBy(split.val), test: countBy(split.test) };
  if (!split.val.some((s) => s.isGood)) {
    throw new Error(`split: no good image in the validation split, so no threshold can be calibrated. Fix: add good images to ${path.join(dataset.root, 'good')} or raise split.val.`);
  }
  const trainSet = cfg.mode === 'anomaly' ? split.train.filter((s) => s.isGood) : split.train;
  if (trainSet.length === 0) throw new Error('split: no training images. Fix: raise split.train or add images.');

  // Train.
  const fitDir = run.p('fit');
  const fitJson = run.p('fit', 'fit.json');
  const fit = await run.stage(
    'train',
    {
      dataset: dataset.sha256,
      train: hashOf(trainSet.map((s) => [relTo(dataset.root, s.file), s.sha256, s.label])),
      method: cfg.method,
      mode: cfg.mode,
      params: cfg.params,
      seed: cfg.seed,
    },
    async () => {
      await rm(fitDir, { recursive: true, force: true });
      await mkdir(path.join(fitDir, 'work'), { recursive: true });
      const res = await method.fit(trainSet, {
        mode: cfg.mode,
        seed: cfg.seed,
        params: cfg.params,
        log: run.log.child({ method: cfg.method }),
        progress: (d, t, what) => progress?.(d, t, `train: ${what}`),
        workDir: path.join(fitDir, 'work'),
      });
      await writeFile(path.join(fitDir, 'model.onnx'), res.onnx);
      const f: FitFile = { modelSha256: sha256Hex(res.onnx), input: res.input, head: res.head, parameters: res.parameters, weights: res.weights };
      await writeJson(fitJson, f);
      return { outputs: ['fit/model.onnx', 'fit/fit.json'], value: f };
    },
    async () => readJson<FitFile>(fitJson),
  );
  const onnx = await readFile(path.join(fitDir, 'model.onnx'));

  const code = codeVersion();
  const baseManifest = (threshold: number, provenance?: ModelManifest['provenance']): ModelManifest => ({
    schemaVersion: 1,
    name: cfg.output.name,
    version: cfg.output.version,
    sha256: fit.modelSha256,
    ...(cfg.output.description ? { description: cfg.output.description } : {}),
    input: fit.input,
    head: fit.head,
    threshold,
    ...(provenance ? { provenance } : {}),
  });

  // Evaluate through the agent's inference path, from a temporary bundle in the run folder.
  const metricsFile = run.p('metrics.json');
  const metrics = await run.stage(
    'evaluate',
    { model: fit.modelSha256, fit: hashOf(fit), dataset: dataset.sha256, split: hashOf([split.val.map((s) => s.sha256), split.test.map((s) => s.sha256)]), targetFrr: cfg.targetFrr, evaluate: cfg.evaluate },
    async () => {
      const evalBundle = run.p('eval', 'bundle');
      await rm(run.p('eval'), { recursive: true, force: true });
      // The score does not depend on the threshold; a huge one keeps the head from tracing regions.
      await writeBundle(evalBundle, onnx, baseManifest(1e30));
      const ev = await evaluateBundle({
        bundleDir: evalBundle,
        val: split.val,
        test: split.test,
        targetFrr: cfg.targetFrr,
        dataset,
        settings: cfg.evaluate,
        outDir: runDir,
        log: run.log,
        progress,
        title: `Training report: ${cfg.output.name} ${cfg.output.version}`,
        split: splitCounts,
        splitPolicy: `${splitPolicy(cfg.split.groupBy)} (${split.groups ?? samples.length} ${cfg.split.groupBy.kind === 'none' ? 'files' : 'groups'})`,
        run: { id: runId, method: cfg.method, mode: cfg.mode, seed: cfg.seed, params: cfg.params, fitParameters: fit.parameters, weights: fit.weights, code },
      });
      await writeJson(metricsFile, ev.metrics);
      await writeJson(run.p('inference.json'), ev.inference ?? {});
      return { outputs: ['metrics.json', 'report.json', 'report.html', 'inference.json'], value: ev.metrics };
    },
    async () => readJson<EvalMetrics>(metricsFile),
  );
  const timing = await readJson<Partial<InferenceTiming>>(run.p('inference.json')).catch(() => ({}) as Partial<InferenceTiming>);

  // Build: the final bundle with its provenance, in the run folder and in the output dir.
  const bundle = await run.stage(
    'build',
    { model: fit.modelSha256, fit: hashOf(fit), metrics: hashOf(metrics), output: cfg.output, dataset: dataset.sha256 },
    async () => {
      const t = metrics.test;
      const manifest = baseManifest(metrics.threshold, {
        createdAt: new Date().toISOString(),
        createdBy: 'linesight train',
        code,
        dataset: {
          name: cfg.dataset.source === 'synthetic' ? 'synthetic-film' : path.basename(rc.datasetDir),
          manifestSha256: dataset.sha256,
          images: dataset.entries.length,
        },
        parameters: { method: cfg.method, mode: cfg.mode, seed: cfg.seed, split: cfg.split, targetFrr: cfg.targetFrr, params: cfg.params, fit: fit.parameters },
        metrics: {
          split: 'test',
          images: t.n,
          auroc: t.auroc,
          recall: t.recall,
          frr: t.frr,
          recallPerClass: Object.fromEntries(Object.entries(t.recallPerClass).map(([k, v]) => [k, v.recall])),
          ...(metrics.calibration ? { valFrr: metrics.calibration.frr, targetFrr: cfg.targetFrr } : {}),
          ...(metrics.pixel ? { pixelAuroc: metrics.pixel.auroc, pro: metrics.pixel.pro, proFprLimit: metrics.pixel.proFprLimit } : {}),
          ...(timing.msMedian !== undefined ? { inferenceMs: { ...timing, where: `${os.cpus()[0]?.model ?? 'cpu'}, ${os.cpus().length} cores, training machine (load varies)` } } : {}),
        },
        weights: fit.weights,
        ...(cfg.output.notes ? { notes: cfg.output.notes } : {}),
        split: { policy: splitPolicy(cfg.split.groupBy), groupBy: cfg.split.groupBy, groups: split.groups ?? samples.length, images: splitCounts },
        run: runId,
      });
      await rm(run.p('bundle'), { recursive: true, force: true });
      await writeBundle(run.p('bundle'), onnx, JSON.parse(JSON.stringify(manifest)) as ModelManifest);
      return { outputs: ['bundle/model.onnx', 'bundle/model.json'], value: manifest };
    },
    async () => readJson<ModelManifest>(run.p('bundle', 'model.json')),
  );
  // The output dir gets the run's bundle (again, if it was changed or replaced since).
  const outOnnx = path.join(rc.outputDir, 'model.onnx');
  const outJson = path.join(rc.outputDir, 'model.json');
  if ((await outputHash(outOnnx)) !== (await fileHash(run.p('bundle', 'model.onnx'))) || (await outputHash(outJson)) !== (await fileHash(run.p('bundle', 'model.json')))) {
    await mkdir(rc.outputDir, { recursive: true });
    await copyFile(run.p('bundle', 'model.onnx'), `${outOnnx}.tmp`);
    await rename(`${outOnnx}.tmp`, outOnnx);
    await copyFile(run.p('bundle', 'model.json'), `${outJson}.tmp`);
    await rename(`${outJson}.tmp`, outJson);
  }
  // The bundle must load as the agent loads it (manifest schema, sha256).
  await loadBundle(rc.outputDir);

  return {
    runId,
    runDir,
    bundleDir: rc.outputDir,
    manifest: bundle,
    metrics,
    dataset: { sha256: dataset.sha256, images: dataset.entries.length, skipped: dataset.skipped.length, classes: dataset.classes },
    split: splitCounts,
    stages: run.stages,
    report: run.p('report.html'),
  };
}

// ---- Summary ----------------------------------------------------------------------------------

const pct = (v: number): string => (Number.isFinite(v) ? `${(v * 100).toFixed(1)}%` : 'n/a');
const num = (v: number): string => (Number.isFinite(v) ? String(+v.toPrecision(4)) : 'n/a');

/** The metrics as aligned text lines; `set` names the images they were computed on. */
export function formatMetrics(m: EvalMetrics, set = 'test'): string[] {
  const t = m.test;
  const lines = [
    `threshold   ${m.threshold}${m.calibration ? ` (val FRR ${pct(m.calibration.frr)} <= target ${pct(m.targetFrr ?? NaN)}, ${m.calibration.n} good val images)` : ' (from the bundle)'}`,
    `${set.padEnd(12)}${t.n.good} good, ${t.n.defective} defective`,
    `AUROC       ${num(t.auroc)}`,
    `recall      ${pct(t.recall)}   FRR ${pct(t.frr)}   (TP ${t.confusion.tp}  FN ${t.confusion.fn}  FP ${t.confusion.fp}  TN ${t.confusion.tn})`,
  ];
  for (const [k, v] of Object.entries(t.recallPerClass)) lines.push(`  ${k.padEnd(12)} recall ${pct(v.recall)} (${v.rejected}/${v.n})`);
  if (m.pixel) lines.push(`pixel       AUROC ${num(m.pixel.auroc)}   PRO@${m.pixel.proFprLimit} ${num(m.pixel.pro)}`);
  return lines;
}

export function formatSummary(r: TrainResult): string {
  const lines = [
    `run         ${r.runId}  (${r.runDir})`,
    `stages      ${r.stages.map((s) => `${s.stage} ${s.status === 'skipped' ? 'skipped' : `${(s.ms / 1000).toFixed(1)}s`}`).join(', ')}`,
    `dataset     ${r.dataset.images} images (${r.dataset.classes.map((c) => `${c.label} ${c.images}`).join(', ')})${r.dataset.skipped ? `, ${r.dataset.skipped} unreadable skipped` : ''}`,
    `split       ${(['train', 'val', 'test'] as const).map((k) => `${k} ${Object.values(r.split[k] ?? {}).reduce((a, b) => a + b, 0)}`).join(', ')}`,
    ...formatMetrics(r.metrics),
    `bundle      ${r.bundleDir}  ${r.manifest.name} ${r.manifest.version} sha256 ${r.manifest.sha256.slice(0, 12)}`,
    `report      ${r.report}`,
  ];
  return lines.join('\n');
}
