// The training config (`linesight train -c FILE.yaml`): a TypeBox schema whose defaults fill a
// partial YAML file. Every path in it is relative to the config file, so a config and its dataset
// can move together.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Type as T, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import YAML from 'yaml';

const Name = T.String({ minLength: 1, pattern: '^[A-Za-z0-9_.-]+$', description: 'letters, digits, _ . -' });
const Fraction = (def: number, description: string) => T.Number({ minimum: 0, maximum: 1, default: def, description });

export const TrainConfigSchema = T.Object(
  {
    dataset: T.Object(
      {
        source: T.Union([T.Literal('folder'), T.Literal('synthetic')], {
          default: 'folder',
          description: 'folder: a folder per class (good/, <defect>/, masks/<defect>/); synthetic: frames rendered by the demo film generator into the run folder',
        }),
        dir: T.String({ default: '', description: 'folder source: the dataset root, relative to this config file' }),
        synthetic: T.Object(
          {
            frames: T.Integer({ minimum: 10, maximum: 100000, default: 600, description: 'how many frames to render' }),
            width: T.Integer({ minimum: 32, maximum: 4096, default: 320 }),
            height: T.Integer({ minimum: 32, maximum: 4096, default: 240 }),
            seed: T.Integer({ default: 1, description: "generator seed: the film batch (keep the demo camera's seed so the tint matches)" }),
            firstIndex: T.Integer({
              minimum: 0,
              default: 0,
              description: 'index of the first frame rendered: an offset keeps training frames apart from the ones the demo shows',
            }),
            defectRate: T.Number({ minimum: 0, maximum: 1, default: 0.3, description: 'share of frames with a defect' }),
          },
          { additionalProperties: false, default: {} },
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    method: T.String({ minLength: 1, description: 'training method (a key of src/train/index-methods.ts)' }),
    mode: T.Union([T.Literal('anomaly'), T.Literal('supervised')], {
      default: 'anomaly',
      description: 'anomaly: learn from good images alone; supervised: also learn from labelled defects',
    }),
    params: T.Record(T.String(), T.Unknown(), { default: {}, description: 'method parameters (passed as they are)' }),
    seed: T.Integer({ default: 1, description: 'seed of the split and of the method: same config + seed => same model' }),
    split: T.Object(
      {
        train: Fraction(0.6, 'share of each class used for training'),
        val: Fraction(0.2, 'share used to calibrate the threshold'),
        test: Fraction(0.2, 'share held out for the report'),
        groupBy: T.Object(
          {
            kind: T.Union([T.Literal('none'), T.Literal('regex')], {
              default: 'none',
              description:
                'none: every image on its own (per-file split); regex: images whose names give the same key form a group, and a group never crosses splits (the same part photographed several times)',
            }),
            pattern: T.String({
              default: '',
              description: "regex: its first capture group (the whole match if it has none) is the group key, e.g. '^(part\\d+)_' or '_num_(\\d+)'",
            }),
            on: T.Union([T.Literal('name'), T.Literal('path')], {
              default: 'name',
              description: "what the pattern is matched against: the file name, or the whole path ('/'-separated, so a folder per part works)",
            }),
            numericGap: T.Number({
              minimum: 0,
              default: 0,
              description: '0: equal keys form a group; > 0: keys are numbers, and sorted keys at most this far apart chain into one group (frame counters)',
            }),
            unmatched: T.Union([T.Literal('error'), T.Literal('single')], {
              default: 'error',
              description: 'a file the pattern does not match: error stops and names it; single makes it a group of its own',
            }),
          },
          { additionalProperties: false, default: {}, description: 'images that must stay in the same split' },
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    targetFrr: T.Number({
      minimum: 0,
      maximum: 1,
      default: 0.01,
      description: 'target false-reject rate: the threshold is the smallest whose FRR on the validation good images is at most this',
    }),
    evaluate: T.Object(
      {
        pixelMaxSide: T.Integer({
          minimum: 0,
          maximum: 8192,
          default: 256,
          description: 'pixel metrics are computed at the mask size, shrunk to at most this many pixels a side (0 = full size)',
        }),
        proFprLimit: T.Number({ exclusiveMinimum: 0, maximum: 1, default: 0.3, description: 'PRO is integrated up to this false-positive rate' }),
        heatmaps: T.Integer({ minimum: 0, maximum: 100, default: 8, description: 'example heatmaps in the report' }),
        workers: T.Integer({ minimum: 1, maximum: 16, default: 1, description: 'inference workers used to score images' }),
      },
      { additionalProperties: false, default: {} },
    ),
    output: T.Object(
      {
        name: Name,
        version: T.String({
          default: '1.0.0',
          pattern: '^(0|[1-9]\\d*)\\.(0|[1-9]\\d*)\\.(0|[1-9]\\d*)(-[0-9A-Za-z.-]+)?(\\+[0-9A-Za-z.-]+)?$',
          description: 'semantic version of the bundle',
        }),
        dir: T.String({ default: '', description: "bundle folder, relative to this config file (default '../models/<name>')" }),
        description: T.Optional(T.String()),
        notes: T.Optional(
          T.Record(T.String(), T.Unknown(), {
            description: "free-form facts copied as they are into the bundle's provenance.notes (e.g. figures measured outside the run, how to read the metrics)",
          }),
        ),
      },
      { additionalProperties: false },
    ),
    runDir: T.String({ default: '../runs', description: 'where run folders go (runs/<run-id>/), relative to this config file' }),
  },
  { additionalProperties: false, $id: 'https://linesight.dev/schemas/train.json', title: 'linesight training configuration' },
);

export type TrainConfig = Static<typeof TrainConfigSchema>;

/** A config with its paths made absolute. */
export interface ResolvedTrainConfig {
  config: TrainConfig;
  /** Absolute path of the config file (or '' when built in code). */
  file: string;
  /** Folder the relative paths are resolved against. */
  baseDir: string;
  datasetDir: string;
  outputDir: string;
  runDir: string;
}

export class TrainConfigError extends Error {
  constructor(
    message: string,
    readonly errors: string[] = [],
  ) {
    super(message);
    this.name = 'TrainConfigError';
  }
}

/** Fill defaults and check; errors as `path: message` (path like `split.val`). */
export function parseTrainConfig(input: unknown, source = 'config'): TrainConfig {
  if (input === null || input === undefined) input = {};
  if (typeof input !== 'object' || Array.isArray(input)) throw new TrainConfigError(`${source}: the config must be a mapping`, [`(root): must be a mapping`]);
  const value = Value.Default(TrainConfigSchema, structuredClone(input)) as unknown;
  const errors = [...Value.Errors(TrainConfigSchema, value)].map((e) => `${e.path.replace(/^\//, '').replace(/\//g, '.') || '(root)'}: ${e.message}`);
  if (errors.length) {
    throw new TrainConfigError(`${source}: invalid training config\n  ${[...new Set(errors)].join('\n  ')}`, [...new Set(errors)]);
  }
  const c = value as TrainConfig;
  const extra: string[] = [];
  const sum = c.split.train + c.split.val + c.split.test;
  if (Math.abs(sum - 1) > 1e-6) extra.push(`split: train + val + test must be 1 (is ${+sum.toFixed(6)})`);
  if (c.split.val <= 0) extra.push('split.val: must be > 0 (the threshold is calibrated on the validation split)');
  if (c.split.test <= 0) extra.push('split.test: must be > 0 (the report is made on the held-out test split)');
  if (c.mode === 'supervised' || c.dataset.source === 'folder') {
    if (c.split.train <= 0) extra.push('split.train: must be > 0');
  }
  const gb = c.split.groupBy;
  if (gb.kind === 'regex') {
    if (!gb.pattern) extra.push("split.groupBy.pattern: required when split.groupBy.kind is regex (its first capture group is the group key, e.g. '_num_(\\d+)')");
    else {
      try {
        new RegExp(gb.pattern);
      } catch (err) {
        extra.push(`split.groupBy.pattern: not a valid regular expression (${(err as Error).message})`);
      }
    }
  }
  if (c.dataset.source === 'folder' && !c.dataset.dir) extra.push('dataset.dir: required when dataset.source is folder (the dataset root, relative to the config file)');
  if (extra.length) throw new TrainConfigError(`${source}: invalid training config\n  ${extra.join('\n  ')}`, extra);
  return c;
}

export function resolveTrainConfig(config: TrainConfig, baseDir: string, file = ''): ResolvedTrainConfig {
  const base = path.resolve(baseDir);
  return {
    config,
    file,
    baseDir: base,
    datasetDir: config.dataset.source === 'folder' ? path.resolve(base, config.dataset.dir) : '',
    outputDir: path.resolve(base, config.output.dir || path.join('..', 'models', config.output.name)),
    runDir: path.resolve(base, config.runDir),
  };
}

export async function loadTrainConfig(file: string): Promise<ResolvedTrainConfig> {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (err) {
    throw new TrainConfigError(`${abs}: cannot read the config (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (err) {
    throw new TrainConfigError(`${abs}: not valid YAML: ${(err as Error).message}`);
  }
  return resolveTrainConfig(parseTrainConfig(doc, abs), path.dirname(abs), abs);
}
