// Held-out evaluation of the training methods on the magnetic-tile dataset (or any folder-per-class
// dataset), through the agent's real inference path (bundle on disk -> InferencePool -> sharp
// decode -> preprocess per InputSpec -> onnxruntime -> head). A command, not a test.
//
//   npx tsx bench/train-magnetic-tile.ts [--data DIR] [--split grouped|plain] [--gap 400] [--seed 0]
//       [--runs patchcore:anomaly,synthetic-linear:anomaly,features-linear:supervised]
//       [--params '{"synthetic-linear":{"synthetic":2}}'] [--out /tmp/linesight-train-bench]
//
// Split: 30 % of the data held out as test, stratified by class, fixed seed, by the product's
// splitSamples. 'grouped' (default) keeps the images of one physical tile together: magnetic-tile
// names files expN_num_F, and the same tile appears under several lighting set-ups (exp1..exp6)
// with nearby frame numbers F, so a per-file split would put near-copies of test tiles into
// training. Groups: files sorted by F, a new group where consecutive F differ by more than --gap
// (400; docs/training.md says why). The methods are fitted on the other 70 %.
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { methods } from '../src/train/index-methods.js';
import { auroc } from '../src/train/metrics.js';
import { predictFiles } from '../src/inference/predict.js';
import { createLogger } from '../src/log.js';
import { splitSamples, type GroupBy } from '../src/train/dataset.js';
import type { FitContext, Sample } from '../src/train/types.js';

const argv = process.argv.slice(2);
const arg = (k: string, def: string): string => {
  const i = argv.indexOf(`--${k}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : def;
};
const dataDir = path.resolve(arg('data', path.join(import.meta.dirname, '..', '..', 'shared', 'datasets', 'magnetic-tile')));
const splitKind = arg('split', 'grouped');
const seed = Number(arg('seed', '0'));
const runs = arg('runs', 'patchcore:anomaly,synthetic-linear:anomaly,features-linear:supervised,synthetic-linear:supervised').split(',');
const extraParams = JSON.parse(arg('params', '{}')) as Record<string, Record<string, unknown>>;
const outDir = arg('out', '/tmp/linesight-train-bench');
const testShare = Number(arg('test', '0.3'));
const gap = Number(arg('gap', '400'));

function listDataset(root: string): Sample[] {
  const out: Sample[] = [];
  for (const cls of readdirSync(root, { withFileTypes: true })) {
    if (!cls.isDirectory() || cls.name === 'masks') continue;
    for (const f of readdirSync(path.join(root, cls.name)).sort()) {
      if (!/\.(png|jpe?g|bmp)$/i.test(f)) continue;
      const file = path.join(root, cls.name, f);
      const isGood = cls.name === 'good';
      const mask = isGood ? undefined : path.join(root, 'masks', cls.name, f.replace(/\.[^.]+$/, '.png'));
      out.push({ file, label: cls.name, isGood, ...(mask ? { mask } : {}), sha256: createHash('sha256').update(file).digest('hex') });
    }
  }
  return out;
}

/**
 * The product's split (src/train/dataset.ts splitSamples): grouped = split.groupBy regex
 * '_num_(\\d+)' with numericGap (default 400, as train/tile.yaml); plain = per file.
 */
function split(samples: Sample[]): { train: Sample[]; test: Sample[] } {
  const groupBy: GroupBy = splitKind === 'plain' ? { kind: 'none' } : { kind: 'regex', pattern: '_num_(\\d+)', numericGap: gap };
  const s = splitSamples(samples, { train: 1 - testShare, val: 0, test: testShare }, seed, 'supervised', groupBy);
  return { train: s.train, test: s.test };
}

const count = (ss: Sample[]): Record<string, number> => {
  const c: Record<string, number> = {};
  for (const s of ss) c[s.label] = (c[s.label] ?? 0) + 1;
  return c;
};

const all = listDataset(dataDir);
const { train, test } = split(all);
console.log(`dataset ${dataDir}: ${all.length} images; split ${splitKind} seed ${seed}: train ${JSON.stringify(count(train))}, test ${JSON.stringify(count(test))}`);
const log = createLogger({ sink: { write: () => {} }, level: 'error' });
const results: Record<string, unknown>[] = [];

for (const run of runs) {
  const [name, mode] = run.split(':') as [string, FitContext['mode']];
  const method = methods[name];
  if (!method) throw new Error(`unknown method ${name}`);
  const params = extraParams[name] ?? {};
  const workDir = path.join(outDir, `${name}-${mode}`);
  mkdirSync(workDir, { recursive: true });
  const t0 = Date.now();
  let lastPct = -1;
  const fit = await method.fit(train, {
    mode,
    seed: 1,
    params,
    log,
    workDir,
    progress: (done, total, what) => {
      const pct = Math.floor((100 * done) / total);
      if (pct % 25 === 0 && pct !== lastPct) {
        lastPct = pct;
        process.stderr.write(`  ${name}/${mode} ${what} ${done}/${total} (${((Date.now() - t0) / 1000).toFixed(0)} s)\n`);
      }
    },
  });
  const fitSeconds = (Date.now() - t0) / 1000;
  const sha256 = createHash('sha256').update(fit.onnx).digest('hex');
  writeFileSync(path.join(workDir, 'model.onnx'), fit.onnx);
  writeFileSync(
    path.join(workDir, 'model.json'),
    JSON.stringify({ schemaVersion: 1, name: `${name}-${mode}`, version: '0.0.1', sha256, input: fit.input, head: fit.head, threshold: 1e9, provenance: { parameters: fit.parameters, weights: fit.weights } }, null, 2),
  );
  const byFile = new Map(test.map((s) => [s.file, s]));
  const scores: { s: Sample; score: number }[] = [];
  const ms: number[] = [];
  for await (const r of predictFiles(test.map((s) => s.file), { modelDir: workDir, log })) {
    if (r.error || r.score === undefined) throw new Error(`${r.file}: ${r.error}`);
    scores.push({ s: byFile.get(r.file)!, score: r.score });
    ms.push(r.ms);
  }
  const goods = scores.filter((x) => x.s.isGood).map((x) => x.score);
  const defects = scores.filter((x) => !x.s.isGood);
  const perClass: Record<string, number> = {};
  for (const c of [...new Set(defects.map((x) => x.s.label))].sort()) {
    perClass[c] = +auroc(defects.filter((x) => x.s.label === c).map((x) => x.score), goods).toFixed(3);
  }
  ms.sort((a, b) => a - b);
  const res = {
    method: name,
    mode,
    split: splitKind,
    auroc: +auroc(defects.map((x) => x.score), goods).toFixed(4),
    perClass,
    fitSeconds: +fitSeconds.toFixed(1),
    msPerImageMedian: +ms[ms.length >> 1]!.toFixed(1),
    msPerImageP90: +ms[Math.floor(ms.length * 0.9)]!.toFixed(1),
    onnxMB: +(fit.onnx.length / 1e6).toFixed(2),
    parameters: fit.parameters,
  };
  results.push(res);
  console.log(JSON.stringify(res));
}
writeFileSync(path.join(outDir, `results-${splitKind}-${seed}.json`), JSON.stringify(results, null, 2));
