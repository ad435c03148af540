// The training pipeline end to end on a tiny generated dataset, with a tiny test method (an ONNX
// model scoring the mean absolute deviation from the mean good image), through the agent's real
// inference path.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { InferencePool, decodeImageFile, loadBundle } from '../../src/inference/index.js';
import { silentLogger } from '../../src/log.js';
import { parseTrainConfig, resolveTrainConfig, type ResolvedTrainConfig } from '../../src/train/config.js';
import { rejectRate } from '../../src/train/metrics.js';
import { createProgress, runTraining, type TrainResult } from '../../src/train/pipeline.js';
import { evalCommand, trainCommand } from '../../src/train/cli.js';
import type { FitResult, Sample, TrainMethod } from '../../src/train/types.js';

const SIZE = 32;
const POOL = 4;

/** Mean absolute deviation from the mean good training image; the map is its 4x4 average. */
function madMethod(calls: { n: number; samples: Sample[][] } = { n: 0, samples: [] }): TrainMethod {
  return {
    name: 'mad',
    async fit(train, ctx): Promise<FitResult> {
      calls.n++;
      calls.samples.push(train);
      const good = train.filter((s) => s.isGood);
      const mean = new Float32Array(SIZE * SIZE);
      for (const [i, s] of good.entries()) {
        const px = await sharp(s.file).greyscale().resize(SIZE, SIZE, { fit: 'fill', kernel: 'linear' }).raw().toBuffer();
        for (let j = 0; j < mean.length; j++) mean[j]! += px[j]! / 255 / good.length;
        ctx.progress(i + 1, good.length, 'mean image');
      }
      const g = new GraphBuilder({ opset: 17 });
      const x = g.input('image', 'float32', [1, 1, SIZE, SIZE]);
      const m = g.initializer('mean', 'float32', [1, 1, SIZE, SIZE], mean);
      const d = g.node('Abs', [g.node('Sub', [x, m])]);
      const map = g.node('AveragePool', [d], { kernel_shape: [POOL, POOL], strides: [POOL, POOL] }, { name: 'map' });
      g.node('ReduceMax', [map], { axes: [1, 2, 3], keepdims: 0 }, { name: 'score' });
      g.output('map', 'float32', [1, 1, SIZE / POOL, SIZE / POOL]);
      g.output('score', 'float32', [1]);
      return {
        onnx: g.toBytes(),
        input: { name: 'image', width: SIZE, height: SIZE, colour: 'gray', layout: 'nchw', dtype: 'float32', scale: 1 / 255 },
        head: { type: 'anomaly', scoreOutput: 'score', mapOutput: 'map' },
        parameters: { size: SIZE, pool: POOL, images: good.length },
        weights: [{ origin: 'none (statistics of the training images)', license: 'n/a' }],
      };
    },
  };
}

/** Deterministic noise for the generated images. */
function rand(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function writeGrey(file: string, data: Uint8Array, w: number, h: number): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await sharp(Buffer.from(data), { raw: { width: w, height: h, channels: 1 } }).png().toFile(file);
}

/** good/ (noisy grey), scratch/ (a bright line) and spot/ (a dark disk), with masks for the defects. */
async function makeDataset(dir: string): Promise<void> {
  const W = 64;
  const H = 48;
  const base = (seed: number): Uint8Array => {
    const r = rand(seed);
    return Uint8Array.from({ length: W * H }, () => 110 + Math.floor(r() * 20));
  };
  for (let i = 0; i < 30; i++) await writeGrey(path.join(dir, 'good', `g${i}.png`), base(i + 1), W, H);
  for (let i = 0; i < 8; i++) {
    const img = base(100 + i);
    const mask = new Uint8Array(W * H);
    const row = 8 + i * 4;
    for (let x = 4; x < W - 4; x++) for (const y of [row, row + 1]) (img[y * W + x] = 250), (mask[y * W + x] = 255);
    await writeGrey(path.join(dir, 'scratch', `s${i}.png`), img, W, H);
    await writeGrey(path.join(dir, 'masks', 'scratch', `s${i}.png`), mask, W, H);
  }
  for (let i = 0; i < 8; i++) {
    const img = base(200 + i);
    const mask = new Uint8Array(W * H);
    const cx = 12 + i * 5;
    const cy = 10 + i * 3;
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        if ((x - cx) ** 2 + (y - cy) ** 2 <= 36) (img[y * W + x] = 15), (mask[y * W + x] = 255);
      }
    }
    await writeGrey(path.join(dir, 'spot', `p${i}.png`), img, W, H);
    await writeGrey(path.join(dir, 'masks', 'spot', `p${i}.png`), mask, W, H);
  }
}

let tmp: string;
let dataDir: string;

function config(over: Record<string, unknown> = {}, name = 'tiny'): ResolvedTrainConfig {
  const c = parseTrainConfig({
    dataset: { dir: 'data' },
    method: 'mad',
    seed: 3,
    targetFrr: 0.2,
    evaluate: { heatmaps: 3 },
    output: { name, dir: `models/${name}` },
    runDir: 'runs',
    ...over,
  });
  return resolveTrainConfig(c, tmp, path.join(tmp, 'train.yaml'));
}

const quiet = { log: silentLogger, progress: false as const };

before(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'linesight-train-'));
  dataDir = path.join(tmp, 'data');
  await makeDataset(dataDir);
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('training pipeline', () => {
  let first: TrainResult;
  const calls = { n: 0, samples: [] as Sample[][] };

  it('runs collect -> preprocess -> train -> evaluate -> build into a run folder', async () => {
    first = await runTraining(config(), { ...quiet, methods: { mad: madMethod(calls) }, runId: 'first' });
    assert.deepEqual(
      first.stages.map((s) => [s.stage, s.status]),
      [
        ['collect', 'ran'],
        ['preprocess', 'ran'],
        ['train', 'ran'],
        ['evaluate', 'ran'],
        ['build', 'ran'],
      ],
    );
    const run = path.join(tmp, 'runs', 'first');
    assert.equal(first.runDir, run);
    for (const f of ['config.yaml', 'config.json', 'dataset.json', 'split.json', 'metrics.json', 'report.json', 'report.html', 'fit/model.onnx', 'bundle/model.onnx', 'bundle/model.json']) {
      assert.ok(existsSync(path.join(run, f)), `${f} exists`);
    }
    // The dataset manifest: every file with its sha256 and label.
    const ds = JSON.parse(await readFile(path.join(run, 'dataset.json'), 'utf8'));
    assert.equal(ds.entries.length, 46);
    assert.ok(ds.entries.every((e: { sha256: string; label: string }) => /^[0-9a-f]{64}$/.test(e.sha256) && ['good', 'scratch', 'spot'].includes(e.label)));
    // Anomaly mode: the method saw good training images only.
    assert.equal(calls.n, 1);
    assert.ok(calls.samples[0]!.length > 0 && calls.samples[0]!.every((s) => s.isGood));
  });

  it('builds a bundle the agent loads, with provenance', async () => {
    const bundle = await loadBundle(path.join(tmp, 'models', 'tiny'));
    const m = bundle.manifest;
    assert.equal(m.name, 'tiny');
    assert.equal(m.version, '1.0.0');
    assert.equal(m.sha256, first.manifest.sha256);
    assert.equal(m.threshold, first.metrics.threshold);
    const ds = JSON.parse(await readFile(path.join(first.runDir, 'dataset.json'), 'utf8'));
    const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8'));
    const p = m.provenance!;
    assert.equal(p.dataset?.manifestSha256, ds.sha256);
    assert.equal(p.dataset?.images, 46);
    assert.equal(p.code?.version, pkg.version);
    assert.deepEqual((p.parameters as Record<string, unknown>).fit, { size: SIZE, pool: POOL, images: 18 });
    assert.equal((p.metrics as Record<string, unknown>).auroc, first.metrics.test.auroc);
    assert.deepEqual(p.weights, [{ origin: 'none (statistics of the training images)', license: 'n/a' }]);
    // The split policy (per file here) and the measured inference time.
    const sp = p.split as { policy: string; groupBy: { kind: string }; groups: number; images: Record<string, Record<string, number>> };
    assert.match(sp.policy, /^per-file/);
    assert.equal(sp.groupBy.kind, 'none');
    assert.equal(sp.groups, 46);
    assert.deepEqual(sp.images, first.split);
    const splitFile = JSON.parse(await readFile(path.join(first.runDir, 'split.json'), 'utf8'));
    assert.equal(splitFile.policy, sp.policy);
    const inf = (p.metrics as { inferenceMs?: { msMedian: number; images: number } }).inferenceMs;
    assert.ok(inf && inf.msMedian > 0 && inf.images > 0, JSON.stringify(inf));
  });

  it('calibrates on validation good images and reports on the test split', async () => {
    const m = first.metrics;
    const scores = JSON.parse(await readFile(path.join(first.runDir, 'report.json'), 'utf8')).scores as { split: string; isGood: boolean; score: number; label: string }[];
    const valGood = scores.filter((s) => s.split === 'val' && s.isGood).map((s) => s.score);
    const testGood = scores.filter((s) => s.split === 'test' && s.isGood).map((s) => s.score);
    const testBad = scores.filter((s) => s.split === 'test' && !s.isGood).map((s) => s.score);
    assert.equal(valGood.length, 6);
    assert.deepEqual(m.test.n, { good: testGood.length, defective: testBad.length });
    // The threshold holds the target on val, and one score lower would not.
    assert.ok(rejectRate(valGood, m.threshold) <= 0.2);
    const below = valGood.filter((s) => s < m.threshold).sort((a, b) => b - a)[0]!;
    assert.ok(rejectRate(valGood, below) > 0.2);
    // The reported rates are those of the listed scores.
    assert.equal(m.test.recall, rejectRate(testBad, m.threshold));
    assert.equal(m.test.frr, rejectRate(testGood, m.threshold));
    // Obvious defects: the model separates them.
    assert.ok(m.test.auroc > 0.9, `AUROC ${m.test.auroc}`);
    assert.deepEqual(Object.keys(m.test.recallPerClass), ['scratch', 'spot']);
    assert.equal(m.test.confusion.tp + m.test.confusion.fn, testBad.length);
    // Masks exist: pixel metrics too.
    assert.ok(m.pixel, 'pixel metrics');
    assert.ok(m.pixel.auroc > 0.5 && m.pixel.auroc <= 1, `pixel AUROC ${m.pixel.auroc}`);
    assert.ok(m.pixel.pro >= 0 && m.pixel.pro <= 1, `PRO ${m.pixel.pro}`);
    assert.ok(m.pixel.regions >= testBad.length);
  });

  it('scores exactly as the agent does with the final bundle', async () => {
    const report = JSON.parse(await readFile(path.join(first.runDir, 'report.json'), 'utf8'));
    const pool = new InferencePool({ modelDir: first.bundleDir, providers: ['cpu'], workers: 1, intraOpThreads: 0, queueLimit: 8, log: silentLogger });
    await pool.start();
    try {
      for (const s of report.scores.filter((x: { split: string }) => x.split === 'test').slice(0, 6)) {
        const frame = await decodeImageFile(path.join(dataDir, s.file), { colour: 'gray' });
        const r = await pool.inspect(frame);
        assert.equal(r.verdict.score, s.score, s.file);
        assert.equal(r.verdict.verdict, s.score >= first.metrics.threshold ? 'reject' : 'pass');
      }
    } finally {
      await pool.stop();
    }
  });

  it('writes a self-contained HTML report with SVG plots, heatmaps and report.json figures', async () => {
    const html = await readFile(path.join(first.runDir, 'report.html'), 'utf8');
    assert.match(html, /^<!doctype html>/);
    assert.ok((html.match(/<svg /g) ?? []).length >= 3, 'ROC, histogram and PRO plots');
    assert.match(html, /data:image\/png;base64,/);
    assert.doesNotMatch(html, /<script|<link|src="http/);
    const report = JSON.parse(await readFile(path.join(first.runDir, 'report.json'), 'utf8'));
    assert.ok(report.figures.roc.length >= 2);
    assert.equal(report.figures.histogram.threshold, first.metrics.threshold);
    assert.equal(report.figures.heatmaps.length, 3);
    const heatmaps = await readdir(path.join(first.runDir, 'heatmaps'));
    assert.equal(heatmaps.length, 3);
    for (const h of report.figures.heatmaps) {
      const meta = await sharp(path.join(first.runDir, h.png)).metadata();
      assert.equal(meta.format, 'png');
      assert.deepEqual([meta.width, meta.height], [64, 48]);
      assert.notEqual(h.label, 'good');
    }
  });

  it('resumes: unchanged stages are skipped, changed inputs rerun only what depends on them', async () => {
    const again = await runTraining(config(), { ...quiet, methods: { mad: madMethod(calls) }, resume: 'first' });
    assert.deepEqual(
      again.stages.map((s) => s.status),
      ['skipped', 'skipped', 'skipped', 'skipped', 'skipped'],
    );
    assert.equal(calls.n, 1, 'not trained again');
    assert.deepEqual(again.metrics, first.metrics);

    // A new target FRR: only evaluate and build run.
    const retuned = await runTraining(config({ targetFrr: 0.01 }), { ...quiet, methods: { mad: madMethod(calls) }, resume: 'first' });
    assert.deepEqual(
      retuned.stages.map((s) => [s.stage, s.status]),
      [
        ['collect', 'skipped'],
        ['preprocess', 'skipped'],
        ['train', 'skipped'],
        ['evaluate', 'ran'],
        ['build', 'ran'],
      ],
    );
    assert.ok(retuned.metrics.threshold >= first.metrics.threshold);
    assert.equal(calls.n, 1);

    // A damaged output is noticed and remade.
    await writeFile(path.join(first.runDir, 'fit', 'model.onnx'), 'garbage');
    const repaired = await runTraining(config({ targetFrr: 0.01 }), { ...quiet, methods: { mad: madMethod(calls) }, resume: 'first' });
    assert.deepEqual(
      repaired.stages.map((s) => s.status),
      ['skipped', 'skipped', 'ran', 'skipped', 'skipped'],
    );
    assert.equal(calls.n, 2);
    assert.equal(repaired.manifest.sha256, retuned.manifest.sha256);
  });

  it('rebuilds deterministically: same config and seed => same model sha256 and same metrics', async () => {
    const second = await runTraining(config(), { ...quiet, methods: { mad: madMethod() }, runId: 'second' });
    assert.equal(second.manifest.sha256, first.manifest.sha256);
    assert.deepEqual(second.metrics, first.metrics);
    const a = await readFile(path.join(first.runDir, 'split.json'), 'utf8');
    const b = await readFile(path.join(second.runDir, 'split.json'), 'utf8');
    assert.equal(a, b);
  });

  it('renders the synthetic film into the run folder and trains on it', async () => {
    const cfg = config({ dataset: { source: 'synthetic', synthetic: { frames: 40, width: 96, height: 64, seed: 5, defectRate: 0.5 } }, targetFrr: 0.1 }, 'film');
    const r = await runTraining(cfg, { ...quiet, methods: { mad: madMethod() }, runId: 'film' });
    const data = path.join(r.runDir, 'data');
    const classes = (await readdir(data)).sort();
    assert.ok(classes.includes('good'));
    assert.ok(classes.length >= 2, `defect classes rendered: ${classes}`);
    assert.equal(r.dataset.images, 40);
    const frames = await readdir(path.join(data, 'good'));
    assert.ok(frames.every((f) => /^frame-\d{5}\.png$/.test(f)));
    const meta = await sharp(path.join(data, 'good', frames[0]!)).metadata();
    assert.deepEqual([meta.width, meta.height, meta.channels], [96, 64, 3]);
    assert.ok(existsSync(path.join(tmp, 'models', 'film', 'model.json')));
    // The same film renders the same dataset.
    const r2 = await runTraining(cfg, { ...quiet, methods: { mad: madMethod() }, runId: 'film-again' });
    assert.equal(r2.dataset.sha256, r.dataset.sha256);
  });
});

describe('train and eval commands', () => {
  const capture = async (fn: () => Promise<number>): Promise<{ code: number; out: string; err: string }> => {
    const out: string[] = [];
    const err: string[] = [];
    const o = process.stdout.write.bind(process.stdout);
    const e = process.stderr.write.bind(process.stderr);
    // Only strings: the test runner's own (binary) reports on stdout must still get through.
    process.stdout.write = ((s: string | Uint8Array, ...rest: never[]) =>
      typeof s === 'string' ? (out.push(s), true) : o(s, ...rest)) as typeof process.stdout.write;
    process.stderr.write = ((s: string | Uint8Array, ...rest: never[]) =>
      typeof s === 'string' ? (err.push(s), true) : e(s, ...rest)) as typeof process.stderr.write;
    try {
      return { code: await fn(), out: out.join(''), err: err.join('') };
    } finally {
      process.stdout.write = o;
      process.stderr.write = e;
    }
  };

  it('train -c FILE trains and prints a summary; a bad config exits 2 with path: message', async () => {
    const file = path.join(tmp, 'cmd.yaml');
    await writeFile(file, 'dataset:\n  dir: data\nmethod: mad\nseed: 3\ntargetFrr: 0.2\noutput:\n  name: cmd\n  dir: models/cmd\nrunDir: runs\n');
    const ok = await capture(() => trainCommand(['-c', file], { ...quiet, methods: { mad: madMethod() } }));
    assert.equal(ok.code, 0, ok.err);
    assert.match(ok.out, /AUROC/);
    assert.match(ok.out, /bundle\s+.*models\/cmd/);

    await writeFile(file, 'dataset:\n  dir: data\nmethod: mad\ntargetFrr: 3\noutput:\n  name: cmd\n');
    const bad = await capture(() => trainCommand(['-c', file], quiet));
    assert.equal(bad.code, 2);
    assert.match(bad.err, /targetFrr: /);

    await writeFile(file, 'dataset:\n  dir: data\nmethod: nonesuch\noutput:\n  name: cmd\nrunDir: runs\n');
    const unknown = await capture(() => trainCommand(['-c', file], { ...quiet, methods: { mad: madMethod() } }));
    assert.equal(unknown.code, 2);
    assert.match(unknown.err, /method: unknown training method 'nonesuch' \(known: mad\)/);

    const usage = await capture(() => trainCommand(['--bogus'], quiet));
    assert.equal(usage.code, 2);
    assert.match(usage.err, /usage: linesight train/);
  });

  it('splits by group with split.groupBy: no group crosses splits, recorded in split.json and the bundle', async () => {
    // Key: the last digit of the file's number (g3, g13, g23, s3 and p3 are one "part").
    const groupBy = { kind: 'regex', pattern: '(\\d)\\.png$' };
    const r = await runTraining(config({ split: { train: 0.6, val: 0.2, test: 0.2, groupBy } }, 'grouped'), { ...quiet, methods: { mad: madMethod() }, runId: 'grouped' });
    const sf = JSON.parse(await readFile(path.join(r.runDir, 'split.json'), 'utf8')) as { policy: string; groups: number; train: string[]; val: string[]; test: string[] };
    assert.equal(sf.groups, 10);
    const where = new Map<string, string>();
    for (const k of ['train', 'val', 'test'] as const) {
      for (const f of sf[k]) {
        const key = /(\d)\.png$/.exec(f)![1]!;
        assert.equal(where.get(key) ?? k, k, `${f}: its group is in ${where.get(key)} too`);
        where.set(key, k);
      }
    }
    assert.equal(sf.train.length + sf.val.length + sf.test.length, 46);
    const sp = r.manifest.provenance!.split as { policy: string; groups: number };
    assert.match(sp.policy, /^grouped: key = first capture group of/);
    assert.equal(sp.policy, sf.policy);
    assert.equal(sp.groups, 10);
    // A pattern that matches no file stops the run before training, naming the pattern.
    await assert.rejects(
      runTraining(config({ split: { train: 0.6, val: 0.2, test: 0.2, groupBy: { kind: 'regex', pattern: '_num_(\\d+)' } } }, 'nomatch'), { ...quiet, methods: { mad: madMethod() }, runId: 'nomatch' }),
      /split\.groupBy\.pattern: \/_num_\(\\d\+\)\/ matches none of the 46 file names/,
    );
  });

  it('a dataset without good images stops the run with a message naming the fix', async () => {
    const dir = path.join(tmp, 'no-good');
    await mkdir(path.join(dir, 'scratch'), { recursive: true });
    await sharp({ create: { width: 8, height: 8, channels: 3, background: '#888' } }).png().toFile(path.join(dir, 'scratch', 'a.png'));
    const file = path.join(tmp, 'no-good.yaml');
    await writeFile(file, 'dataset:\n  dir: no-good\nmethod: mad\noutput:\n  name: nogood\nrunDir: runs\n');
    const r = await capture(() => trainCommand(['-c', file], { ...quiet, methods: { mad: madMethod() } }));
    assert.equal(r.code, 2);
    assert.match(r.err, /no good images/);
    assert.ok(r.err.includes(path.join(dir, 'good')));
  });

  it('eval evaluates a bundle on a dataset folder with the bundle threshold', async () => {
    const out = path.join(tmp, 'eval-out');
    const r = await capture(() => evalCommand(['--model', path.join(tmp, 'models', 'tiny'), '--data', dataDir, '--out', out, '--json'], quiet));
    assert.equal(r.code, 0, r.err);
    const json = JSON.parse(r.out);
    const manifest = JSON.parse(await readFile(path.join(tmp, 'models', 'tiny', 'model.json'), 'utf8'));
    assert.equal(json.metrics.threshold, manifest.threshold);
    assert.equal(json.metrics.thresholdSource, 'bundle');
    assert.deepEqual(json.metrics.test.n, { good: 30, defective: 16 });
    assert.ok(existsSync(path.join(out, 'report.html')));
    assert.ok(existsSync(path.join(out, 'report.json')));

    const missing = await capture(() => evalCommand(['--model', path.join(tmp, 'models', 'tiny')], quiet));
    assert.equal(missing.code, 2);
  });
});

describe('progress', () => {
  const stream = (isTTY: boolean) => {
    const chunks: string[] = [];
    return { isTTY, columns: 80, chunks, write: (s: string) => (chunks.push(s), true) } as unknown as NodeJS.WriteStream & { chunks: string[] };
  };

  it('draws a bar on a TTY, redrawn in place and ended by a newline', () => {
    const s = stream(true);
    const p = createProgress(s);
    for (let i = 1; i <= 200; i++) p(i, 200, 'score test');
    assert.ok(s.chunks.every((c) => c === '\n' || c.startsWith('\r')));
    assert.ok(s.chunks.length <= 102, `redrawn only when the percentage changes (${s.chunks.length})`);
    assert.match(s.chunks.at(-2)!, /score test \[#+\] 200\/200 100%/);
    assert.equal(s.chunks.at(-1), '\n');
  });

  it('writes plain lines at every 10 % otherwise', () => {
    const s = stream(false);
    const p = createProgress(s);
    for (let i = 1; i <= 50; i++) p(i, 50, 'scan');
    // The first call announces the stage, then one line per 10 %.
    const expected = ['scan: 1/50 (0%)\n', ...[5, 10, 15, 20, 25, 30, 35, 40, 45, 50].map((n) => `scan: ${n}/50 (${n * 2}%)\n`)];
    assert.deepEqual(s.chunks, expected);
  });
});
