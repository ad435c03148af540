// A model bundle is a folder with model.onnx and model.json. Nothing reaches the line unless the
// manifest is well formed, the file is the one the manifest describes (sha256), and the manifest
// agrees with the model's real inputs and outputs: a wrong bundle is refused at start, with a
// message that says what is wrong and how to fix it, instead of failing every part later.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Type as T, type Static, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import type { InferenceSession } from 'onnxruntime-node';
import {
  ModelLoadError,
  type AnomalyHead,
  type ClassificationHead,
  type DetectionHead,
  type HeadSpec,
  type InputSpec,
  type ModelManifest,
} from './types.js';

// ---- Schema ------------------------------------------------------------------------------------

const Label = T.String({ minLength: 1 });
const Probability = T.Number({ minimum: 0, maximum: 1 });
const Size = T.Integer({ minimum: 1, maximum: 16384 });

export const InputSpecSchema = T.Object(
  {
    name: T.String({ minLength: 1 }),
    width: Size,
    height: Size,
    colour: T.Union([T.Literal('gray'), T.Literal('rgb'), T.Literal('bgr')]),
    layout: T.Union([T.Literal('nchw'), T.Literal('nhwc')]),
    dtype: T.Union([T.Literal('float32'), T.Literal('uint8')]),
    scale: T.Optional(T.Number()),
    mean: T.Optional(T.Array(T.Number(), { minItems: 1, maxItems: 3 })),
    std: T.Optional(T.Array(T.Number(), { minItems: 1, maxItems: 3 })),
    crop: T.Optional(
      T.Object(
        { x: T.Integer({ minimum: 0 }), y: T.Integer({ minimum: 0 }), width: Size, height: Size },
        { additionalProperties: false },
      ),
    ),
    resize: T.Optional(T.Union([T.Literal('stretch'), T.Literal('letterbox')])),
  },
  { additionalProperties: false },
);

const ClassificationHeadSchema = T.Object(
  {
    type: T.Literal('classification'),
    output: T.String({ minLength: 1 }),
    activation: T.Union([T.Literal('softmax'), T.Literal('sigmoid'), T.Literal('none')]),
    labels: T.Array(Label, { minItems: 1 }),
    rejectLabels: T.Array(Label, { minItems: 1 }),
  },
  { additionalProperties: false },
);

const AnomalyHeadSchema = T.Object(
  {
    type: T.Literal('anomaly'),
    scoreOutput: T.String({ minLength: 1 }),
    mapOutput: T.Optional(T.String({ minLength: 1 })),
    mapThreshold: T.Optional(T.Number()),
    minArea: T.Optional(T.Number({ minimum: 0 })),
    defectClass: T.Optional(Label),
  },
  { additionalProperties: false },
);

const DetectionHeadSchema = T.Object(
  {
    type: T.Literal('detection'),
    output: T.String({ minLength: 1 }),
    format: T.Literal('yolov8'),
    labels: T.Array(Label, { minItems: 1 }),
    confidence: Probability,
    iou: Probability,
    minArea: T.Optional(T.Number({ minimum: 0 })),
    rejectLabels: T.Optional(T.Array(Label)),
  },
  { additionalProperties: false },
);

const HEAD_SCHEMAS: Record<HeadSpec['type'], TSchema> = {
  classification: ClassificationHeadSchema,
  anomaly: AnomalyHeadSchema,
  detection: DetectionHeadSchema,
};

/**
 * The manifest without its head: the head is a tagged union, and TypeBox reports a union mismatch
 * as one unhelpful "Expected union value", so the head is checked against the schema its `type`
 * names (see validateManifest).
 */
const ManifestBodySchema = T.Object(
  {
    schemaVersion: T.Literal(1),
    name: T.String({ minLength: 1, pattern: '^[A-Za-z0-9_.-]+$', description: 'letters, digits, _ . -' }),
    version: T.String({ pattern: '^\\d+\\.\\d+\\.\\d+(?:[-+][0-9A-Za-z.+-]*)?$', description: 'a semantic version such as 1.2.0' }),
    sha256: T.String({ pattern: '^[0-9a-fA-F]{64}$', description: '64 hex digits (sha256sum model.onnx)' }),
    description: T.Optional(T.String()),
    input: InputSpecSchema,
    head: T.Object({ type: T.String() }),
    threshold: T.Number(),
    provenance: T.Optional(T.Object({}, { additionalProperties: true })),
  },
  { additionalProperties: false },
);

// Compile-time guard: the schemas must describe the shared types, so neither drifts silently.
type Assert<A extends true> = A;
export type SchemaMatchesTypes = Assert<
  Static<typeof InputSpecSchema> extends InputSpec
    ? Static<typeof ClassificationHeadSchema> extends ClassificationHead
      ? Static<typeof AnomalyHeadSchema> extends AnomalyHead
        ? Static<typeof DetectionHeadSchema> extends DetectionHead
          ? true
          : false
        : false
      : false
    : false
>;

/** 'input/mean/1' -> 'input.mean[1]' */
function displayPath(pointer: string, prefix = ''): string {
  const parts = (prefix + pointer).split('/').filter(Boolean);
  let out = '';
  for (const p of parts) out += /^\d+$/.test(p) ? `[${p}]` : out ? `.${p}` : p;
  return out || '(root)';
}

/** TypeBox errors as `path: message`, one per path, in words a person editing model.json follows. */
function schemaErrors(schema: TSchema, value: unknown, prefix = ''): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const e of Value.Errors(schema, value)) {
    const path = displayPath(e.path, prefix);
    if (seen.has(path)) continue; // "required" then "expected number" for one missing field: say it once
    seen.add(path);
    out.push(`${path}: ${friendly(e.schema, e.message)}`);
  }
  return out;
}

function friendly(schema: TSchema, message: string): string {
  if (message === 'Expected required property') return 'required';
  if (message === 'Unexpected property') return 'unknown field (misspelt?)';
  const options = (schema.anyOf as TSchema[] | undefined)?.map((s) => s.const);
  if (options?.every((o) => o !== undefined)) return `must be one of ${options.map((o) => JSON.stringify(o)).join(', ')}`;
  if (schema.pattern && typeof schema.description === 'string') return `must be ${schema.description}`;
  return message;
}

/** Every problem with a parsed model.json, as `path: message` lines (empty when valid). */
export function validateManifest(json: unknown): string[] {
  const problems = schemaErrors(ManifestBodySchema, json);
  const m = json as Partial<ModelManifest> | null;
  if (m === null || typeof m !== 'object') return problems;

  const head = m.head as { type?: unknown } | undefined;
  if (head && typeof head === 'object' && typeof head.type === 'string') {
    const schema = Object.hasOwn(HEAD_SCHEMAS, head.type) ? HEAD_SCHEMAS[head.type as HeadSpec['type']] : undefined;
    if (schema) problems.push(...schemaErrors(schema, head, '/head'));
    else problems.push(`head.type: must be one of ${Object.keys(HEAD_SCHEMAS).join(', ')} (got '${head.type}')`);
  }
  if (problems.length > 0) return problems;

  // The schema is satisfied: now the rules that relate fields to each other.
  const manifest = json as ModelManifest;
  problems.push(...inputRules(manifest.input), ...headRules(manifest.head));
  if (!Number.isFinite(manifest.threshold)) problems.push('threshold: must be a finite number');
  return problems;
}

function inputRules(input: InputSpec): string[] {
  const problems: string[] = [];
  const channels = input.colour === 'gray' ? 1 : 3;
  if (input.dtype === 'uint8') {
    // A uint8 model takes raw pixels: a scale/mean/std here would be silently ignored.
    for (const k of ['scale', 'mean', 'std'] as const) {
      if (input[k] !== undefined) problems.push(`input.${k}: not used with dtype uint8 (the model takes raw pixels); remove it`);
    }
  }
  for (const k of ['mean', 'std'] as const) {
    const v = input[k];
    if (v && v.length !== 1 && v.length !== channels) {
      problems.push(`input.${k}: ${v.length} values for ${channels} channel(s) of colour '${input.colour}' (give 1 or ${channels})`);
    }
  }
  input.std?.forEach((s, i) => {
    if (s === 0) problems.push(`input.std[${i}]: must not be 0`);
  });
  if (input.scale !== undefined && !(Number.isFinite(input.scale) && input.scale !== 0)) {
    problems.push('input.scale: must be a finite non-zero number');
  }
  return problems;
}

function headRules(head: HeadSpec): string[] {
  const problems: string[] = [];
  const checkLabels = (labels: string[], reject: string[] | undefined): void => {
    const dup = labels.filter((l, i) => labels.indexOf(l) !== i);
    if (dup.length) problems.push(`head.labels: duplicate label(s) ${[...new Set(dup)].join(', ')}`);
    for (const r of reject ?? []) {
      if (!labels.includes(r)) problems.push(`head.rejectLabels: '${r}' is not one of the labels (${labels.join(', ')})`);
    }
  };
  if (head.type === 'classification') {
    checkLabels(head.labels, head.rejectLabels);
    if (head.activation === 'softmax' && head.labels.length < 2) {
      problems.push('head.labels: softmax needs at least 2 labels (use sigmoid for a single score)');
    }
  } else if (head.type === 'detection') {
    checkLabels(head.labels, head.rejectLabels);
  }
  return problems;
}

// ---- Bundle ------------------------------------------------------------------------------------

export interface ModelBundle {
  manifest: ModelManifest;
  onnxPath: string;
  /** The model file, already verified against manifest.sha256. */
  bytes: Buffer;
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Reads, validates and verifies a model bundle folder. Throws ModelLoadError. */
export async function loadBundle(dir: string): Promise<ModelBundle> {
  const jsonPath = join(dir, 'model.json');
  const onnxPath = join(dir, 'model.onnx');

  let text: string;
  try {
    text = await readFile(jsonPath, 'utf8');
  } catch (err) {
    throw new ModelLoadError(`model bundle ${dir}: cannot read model.json (${errMessage(err)}); a bundle is a folder with model.onnx and model.json`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ModelLoadError(`${jsonPath}: not valid JSON (${errMessage(err)})`);
  }
  const problems = validateManifest(json);
  if (problems.length > 0) {
    throw new ModelLoadError(`${jsonPath}: invalid manifest (${problems.length} problem${problems.length > 1 ? 's' : ''}):\n  ${problems.join('\n  ')}`);
  }
  const manifest = json as ModelManifest;

  let bytes: Buffer;
  try {
    bytes = await readFile(onnxPath);
  } catch (err) {
    throw new ModelLoadError(`model bundle ${dir}: cannot read model.onnx (${errMessage(err)})`);
  }
  const expected = manifest.sha256.toLowerCase();
  const actual = sha256Hex(bytes);
  if (actual !== expected) {
    throw new ModelLoadError(
      `${onnxPath}: sha256 mismatch: model.json expects ${expected} but the file (${bytes.length} bytes) hashes to ${actual}. ` +
        'The file is truncated, corrupted or not the model this manifest describes: copy the whole bundle again ' +
        `(or, if model.onnx was replaced on purpose, set "sha256": "${actual}" in model.json).`,
    );
  }
  return { manifest: { ...manifest, sha256: expected }, onnxPath, bytes };
}

// ---- The manifest against the model's real I/O -------------------------------------------------

/** What checkModelIO needs of a session (an InferenceSession has all of it). */
export type ModelIO = Pick<InferenceSession, 'inputNames' | 'outputNames' | 'inputMetadata' | 'outputMetadata'>;

/** Element types a head can read (the worker converts float64 to float32). */
const HEAD_READABLE = new Set(['float32', 'float64']);

/** The input tensor shape the manifest describes: [1, C, H, W] or [1, H, W, C]. */
export function inputDims(input: InputSpec): number[] {
  const c = input.colour === 'gray' ? 1 : 3;
  return input.layout === 'nchw' ? [1, c, input.height, input.width] : [1, input.height, input.width, c];
}

const showDims = (dims: readonly (number | string)[]): string => (dims.length ? dims.join('x') : 'a scalar');

/**
 * Throws ModelLoadError naming every way the manifest disagrees with the model's inputs/outputs.
 * Symbolic (dynamic) dimensions in the model accept any manifest value.
 */
export function checkModelIO(manifest: ModelManifest, session: ModelIO): void {
  const problems: string[] = [];
  const { input, head } = manifest;
  const meta = (list: readonly InferenceSession.ValueMetadata[], name: string) => list.find((m) => m.name === name);

  const inMeta = meta(session.inputMetadata, input.name);
  if (!inMeta) {
    problems.push(`manifest input '${input.name}' is not a model input (the model's inputs: ${session.inputNames.join(', ') || 'none'})`);
  } else if (!inMeta.isTensor) {
    problems.push(`model input '${input.name}' is not a tensor`);
  } else {
    if (inMeta.type !== input.dtype) {
      problems.push(`manifest input '${input.name}' is ${input.dtype} but the model expects ${inMeta.type}`);
    }
    const want = inputDims(input);
    const got = inMeta.shape;
    const agrees = got.length === want.length && got.every((d, i) => typeof d === 'string' || d === want[i]);
    if (!agrees) {
      problems.push(
        `manifest input '${input.name}' is ${showDims(want)} (${input.layout} ${input.colour}) but the model expects ${showDims(got)}`,
      );
    }
  }
  const others = session.inputNames.filter((n) => n !== input.name);
  if (inMeta && others.length > 0) {
    problems.push(`the model has further inputs (${others.join(', ')}); linesight feeds only '${input.name}'`);
  }

  for (const [name, role] of headOutputs(head)) {
    const m = meta(session.outputMetadata, name);
    if (!m) {
      problems.push(`head ${role} '${name}' is not a model output (the model's outputs: ${session.outputNames.join(', ') || 'none'})`);
      continue;
    }
    if (!m.isTensor || !HEAD_READABLE.has(m.type)) {
      problems.push(`head ${role} '${name}' is ${m.isTensor ? m.type : 'not a tensor'}; heads read float32 or float64 outputs`);
      continue;
    }
    const shapeProblem = outputShapeProblem(head, name, m.shape);
    if (shapeProblem) problems.push(shapeProblem);
  }

  if (problems.length > 0) {
    throw new ModelLoadError(`model '${manifest.name}' ${manifest.version} does not match its manifest:\n  ${problems.join('\n  ')}`);
  }
}

function headOutputs(head: HeadSpec): [name: string, role: string][] {
  switch (head.type) {
    case 'classification':
      return [[head.output, 'output']];
    case 'detection':
      return [[head.output, 'output']];
    case 'anomaly':
      return head.mapOutput ? [[head.scoreOutput, 'scoreOutput'], [head.mapOutput, 'mapOutput']] : [[head.scoreOutput, 'scoreOutput']];
  }
}

/** Static output dimensions that contradict the head (dynamic ones are checked at run time by the head). */
function outputShapeProblem(head: HeadSpec, name: string, shape: readonly (number | string)[]): string | undefined {
  const last = shape[shape.length - 1];
  if (head.type === 'classification' && typeof last === 'number' && last !== head.labels.length) {
    return `head output '${name}' has ${last} classes (${showDims(shape)}) but the manifest lists ${head.labels.length} labels (${head.labels.join(', ')})`;
  }
  if (head.type === 'detection') {
    const rows = shape[1];
    if (shape.length !== 3) return `head output '${name}' is ${showDims(shape)}; yolov8 output is 1x(4+classes)xN`;
    if (typeof rows === 'number' && rows !== 4 + head.labels.length) {
      return `head output '${name}' is ${showDims(shape)}: ${rows - 4} classes but the manifest lists ${head.labels.length} labels (${head.labels.join(', ')})`;
    }
  }
  if (head.type === 'anomaly' && name === head.scoreOutput && shape.every((d) => typeof d === 'number')) {
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    if (count !== 1) return `head scoreOutput '${name}' is ${showDims(shape)}; an image score is one value ([1] or [1,1])`;
  }
  return undefined;
}

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
