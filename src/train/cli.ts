// `linesight train` and `linesight eval`. Each returns the exit code: 0 done, 1 failed, 2 usage or
// configuration error (nothing was run).
import path from 'node:path';
import { Value } from '@sinclair/typebox/value';
import { loadBundle } from '../inference/index.js';
import { createLogger, type Logger } from '../log.js';
import { DatasetError, scanDataset } from './dataset.js';
import { loadTrainConfig, TrainConfigError, TrainConfigSchema } from './config.js';
import { createProgress, evaluateBundle, formatMetrics, formatSummary, loadRunConfig, resolveRunDir, runTraining, type EvaluateSettings, type ProgressFn, type TrainOptions } from './pipeline.js';

const TRAIN_USAGE = `usage: linesight train -c TRAIN.yaml [--resume RUN]
       linesight train --resume RUN

  -c, --config FILE   training config (paths in it are relative to the file)
  --resume RUN        continue run RUN (an id under the config's runDir, or a run folder):
                      stages whose inputs are unchanged and outputs intact are skipped;
                      without -c the run's own saved config is used
Writes runs/<run-id>/ (config, dataset manifest, split, model, metrics, report.html) and the bundle.`;

const EVAL_USAGE = `usage: linesight eval --model DIR --data DIR [--out DIR] [--json]

  --model DIR   model bundle (model.onnx + model.json); its threshold is used as it is
  --data DIR    dataset folder: good/, one folder per defect class, optional masks/<class>/
  --out DIR     report folder (default runs/eval-<model>-<time>)
  --json        print the metrics as JSON on stdout`;

class UsageError extends Error {}

/** Minimal flag parser: known flags with a value, known booleans; anything else is an error. */
function parseArgs(args: string[], withValue: Record<string, string>, booleans: string[]): { values: Record<string, string>; flags: Set<string> } {
  const values: Record<string, string> = {};
  const flags = new Set<string>();
  for (let i = 0; i < args.length; i++) {
    let a = args[i]!;
    let inline: string | undefined;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) {
      inline = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    if (a === '-h' || a === '--help') {
      flags.add('help');
      continue;
    }
    const key = withValue[a];
    if (key) {
      const v = inline ?? args[++i];
      if (v === undefined || (inline === undefined && v.startsWith('-'))) throw new UsageError(`${a} needs a value`);
      values[key] = v;
    } else if (booleans.includes(a)) {
      flags.add(a.replace(/^--/, ''));
    } else {
      throw new UsageError(`unknown argument '${a}'`);
    }
  }
  return { values, flags };
}

const say = (s: string): void => void process.stderr.write(s.endsWith('\n') ? s : s + '\n');

function failure(err: unknown, log: Logger): number {
  if (err instanceof TrainConfigError || err instanceof DatasetError) {
    say(`linesight: ${err.message}`);
    return 2;
  }
  const e = err as Error;
  log.error('failed', { error: e });
  say(`linesight: ${e?.message ?? String(err)}`);
  return 1;
}

export async function trainCommand(args: string[], opts: Pick<TrainOptions, 'methods' | 'progress' | 'log'> = {}): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs(args, { '-c': 'config', '--config': 'config', '--resume': 'resume' }, []);
  } catch (err) {
    say(`linesight train: ${(err as Error).message}\n${TRAIN_USAGE}`);
    return 2;
  }
  if (parsed.flags.has('help')) {
    process.stdout.write(TRAIN_USAGE + '\n');
    return 0;
  }
  const { config: file, resume } = parsed.values;
  if (!file && !resume) {
    say(`linesight train: give a config (-c FILE) or a run to resume (--resume RUN)\n${TRAIN_USAGE}`);
    return 2;
  }
  const log = opts.log ?? createLogger({ base: { component: 'train' } });
  try {
    let rc;
    if (file) rc = await loadTrainConfig(file);
    else {
      // No config: the run folder carries its own (a bare id is looked up under ./runs).
      rc = await loadRunConfig(resolveRunDir(resume!, path.resolve('runs')));
    }
    const result = await runTraining(rc, { log, resume, methods: opts.methods, progress: opts.progress });
    process.stdout.write(formatSummary(result) + '\n');
    return 0;
  } catch (err) {
    return failure(err, log);
  }
}

export async function evalCommand(args: string[], opts: { progress?: ProgressFn | false; log?: Logger } = {}): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs(args, { '--model': 'model', '--data': 'data', '--out': 'out' }, ['--json']);
  } catch (err) {
    say(`linesight eval: ${(err as Error).message}\n${EVAL_USAGE}`);
    return 2;
  }
  if (parsed.flags.has('help')) {
    process.stdout.write(EVAL_USAGE + '\n');
    return 0;
  }
  const { model, data, out } = parsed.values;
  if (!model || !data) {
    say(`linesight eval: --model and --data are required\n${EVAL_USAGE}`);
    return 2;
  }
  const log = opts.log ?? createLogger({ base: { component: 'eval' } });
  const progress = opts.progress === false ? undefined : (opts.progress ?? createProgress());
  try {
    const { manifest: dataset, samples } = await scanDataset(data, { log, progress });
    const modelDir = path.resolve(model);
    const { manifest } = await loadBundle(modelDir);
    const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
    const outDir = path.resolve(out ?? path.join('runs', `eval-${manifest.name}-${stamp}`));
    const settings = Value.Default(TrainConfigSchema.properties.evaluate, {}) as EvaluateSettings;
    const ev = await evaluateBundle({
      bundleDir: modelDir,
      test: samples,
      threshold: manifest.threshold,
      targetFrr: NaN,
      dataset,
      settings,
      outDir,
      log,
      progress,
      title: `Evaluation of ${manifest.name} ${manifest.version} on ${path.basename(dataset.root)}`,
      testSplitName: 'all',
    });
    if (parsed.flags.has('json')) {
      const json = {
        model: { dir: modelDir, name: manifest.name, version: manifest.version, sha256: manifest.sha256 },
        dataset: { root: dataset.root, sha256: dataset.sha256, images: dataset.entries.length, skipped: dataset.skipped },
        metrics: ev.metrics,
        report: ev.report.html,
      };
      process.stdout.write(JSON.stringify(json, null, 2) + '\n');
    } else {
      const lines = [
        `model       ${manifest.name} ${manifest.version} (${modelDir})`,
        `dataset     ${dataset.root}: ${dataset.entries.length} images${dataset.skipped.length ? `, ${dataset.skipped.length} unreadable skipped` : ''}`,
        ...formatMetrics(ev.metrics, 'images'),
        `report      ${ev.report.html}`,
      ];
      process.stdout.write(lines.join('\n') + '\n');
    }
    return 0;
  } catch (err) {
    return failure(err, log);
  }
}
