// Bad input, model manifests: a model.json damaged in any way (a hand edit, a half-copied bundle, a
// different tool's file) is answered by validateManifest with `path: message` lines, never a throw,
// and an empty answer only for a manifest the rest of the agent can rely on.
//
// FUZZ_SEED=<n> replays a run (the seed is printed); FUZZ_SCALE=<x> multiplies the number of inputs.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { validateManifest } from '../../src/inference/manifest.js';

const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
const SCALE = Number(process.env.FUZZ_SCALE ?? 1);
const runs = (n: number): number => Math.max(1, Math.round(n * SCALE));
const tried: Record<string, number> = {};
const outcome = { valid: 0, problems: 0, lines: 0 };
after(() => {
  const total = Object.values(tried).reduce((a, b) => a + b, 0);
  console.log(
    `fuzz manifest: ${total} inputs tried (${Object.entries(tried).map(([k, v]) => `${k} ${v}`).join(', ')}); ` +
      `${outcome.valid} valid, ${outcome.problems} refused with ${outcome.lines} problem lines; seed ${SEED}`,
  );
});

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
const base = JSON.parse(readFileSync(new URL('../../models/film-demo/model.json', import.meta.url), 'utf8')) as Json;
// The other head kinds, so their schemas and cross-field rules are reached too.
const heads: Json[] = [
  { type: 'classification', output: 'probs', activation: 'softmax', labels: ['good', 'scratch', 'dust'], rejectLabels: ['scratch', 'dust'] },
  { type: 'detection', output: 'output0', format: 'yolov8', labels: ['scratch', 'dust'], confidence: 0.25, iou: 0.45, minArea: 4, rejectLabels: ['scratch'] },
  { type: 'anomaly', scoreOutput: 'score', mapOutput: 'map', mapThreshold: 0.5, minArea: 16, defectClass: 'defect' },
];

const NASTY = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', 'isPrototypeOf', '', ' ', 'classification', 'anomaly', 'detection', 'softmax', 'sigmoid', 'none', 'yolov8', 'gray', 'rgb', 'bgr', 'nchw', 'nhwc', 'float32', 'uint8', 'letterbox', 'stretch', '1.0.0', 'a'.repeat(64), '\u0000', '\ud800'];
const value: fc.Arbitrary<Json> = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>,
  fc.constantFrom<Json>(...NASTY, 0, -0, -1, 1, 0.5, 16384, 16385, 2 ** 53, 1e308, -1e308, null, true, false, [], {}, [0], [0, 0, 0, 0], ['a', 'a']),
);
const key = fc.oneof(fc.constantFrom(...NASTY, 'name', 'version', 'sha256', 'input', 'head', 'threshold', 'type', 'labels', 'mean', 'std', 'scale', 'crop', 'width', 'height'), fc.string());

/** Every path into a JSON tree (the root is []). */
function paths(v: Json, at: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  out.push(at);
  if (Array.isArray(v)) v.forEach((x, i) => paths(x, [...at, i], out));
  else if (v !== null && typeof v === 'object') for (const k of Object.keys(v)) paths(v[k]!, [...at, k], out);
  return out;
}

type Edit = { pick: number; op: 'delete' | 'set' | 'addKey' | 'wrap' | 'dup'; value: Json; key: string };
const edit: fc.Arbitrary<Edit> = fc.record({ pick: fc.nat(), op: fc.constantFrom('delete', 'set', 'set', 'addKey', 'wrap', 'dup'), value, key });

function apply(doc: Json, edit: Edit): Json {
  // A copy: constantFrom hands out the same [] / {} every time, and a mutated constant would
  // leak into later inputs (or make a cycle when an edit puts it inside itself).
  const e = { ...edit, value: structuredClone(edit.value) };
  const all = paths(doc);
  const path = all[e.pick % all.length]!;
  if (path.length === 0) return e.op === 'set' ? e.value : e.op === 'wrap' ? [doc] : doc;
  const parent = path.slice(0, -1).reduce<Json>((n, k) => (n as Record<string, Json>)[k as string]!, doc) as Record<string, Json> | Json[];
  const last = path.at(-1)!;
  const cur = (parent as Record<string, Json>)[last as string]!;
  switch (e.op) {
    case 'delete':
      if (Array.isArray(parent)) parent.splice(last as number, 1);
      else delete parent[last as string];
      break;
    case 'set':
      (parent as Record<string, Json>)[last as string] = e.value;
      break;
    case 'addKey':
      if (cur !== null && typeof cur === 'object' && !Array.isArray(cur)) {
        // defineProperty: a '__proto__' key must become an own key, as JSON.parse makes it.
        Object.defineProperty(cur, e.key, { value: e.value, enumerable: true, writable: true, configurable: true });
      } else (parent as Record<string, Json>)[last as string] = e.value;
      break;
    case 'wrap':
      (parent as Record<string, Json>)[last as string] = [cur];
      break;
    case 'dup':
      if (Array.isArray(cur)) cur.push(...structuredClone(cur));
      else if (typeof cur === 'string') (parent as Record<string, Json>)[last as string] = cur + cur;
      break;
  }
  return doc;
}

const mutated = fc
  .tuple(fc.nat({ max: heads.length }), fc.array(edit, { minLength: 1, maxLength: 5 }))
  .map(([h, edits]) => {
    let doc = structuredClone(base);
    if (h < heads.length) (doc as Record<string, Json>).head = structuredClone(heads[h]!);
    for (const e of edits) doc = apply(doc, e);
    return doc;
  });

function check(input: unknown): void {
  const r = validateManifest(input);
  assert.ok(Array.isArray(r), 'an array');
  if (r.length === 0) {
    outcome.valid++;
    // Nothing wrong reported: then the fields the agent reads blindly are really there.
    const m = input as { schemaVersion: unknown; threshold: unknown; input: { width: unknown; height: unknown }; head: { type: unknown } };
    assert.equal(m.schemaVersion, 1);
    assert.ok(Number.isFinite(m.threshold));
    assert.ok(Number.isInteger(m.input.width) && Number.isInteger(m.input.height));
    assert.ok(['classification', 'anomaly', 'detection'].includes(m.head.type as string));
    return;
  }
  outcome.problems++;
  outcome.lines += r.length;
  for (const line of r) {
    assert.equal(typeof line, 'string');
    assert.match(line, /^.+?: \S/s, `reads 'path: message': ${JSON.stringify(line)}`);
  }
}

test('the shipped manifests are valid (the campaign starts from real files)', () => {
  assert.deepEqual(validateManifest(base), []);
  for (const head of heads) assert.deepEqual(validateManifest({ ...(base as object), head }), [], JSON.stringify(head));
});

test('mutated model.json: path: message lines, never a throw', () => {
  fc.assert(
    fc.property(mutated, (doc) => {
      tried.mutated = (tried.mutated ?? 0) + 1;
      check(doc);
    }),
    { seed: SEED, numRuns: runs(8000), includeErrorInReport: true },
  );
});

// The tag fields pick a schema or a code path by name: any string there, prototype names included.
const TAGS: [string, string][] = [
  ['head', 'type'],
  ['head', 'activation'],
  ['head', 'format'],
  ['input', 'colour'],
  ['input', 'layout'],
  ['input', 'dtype'],
  ['input', 'resize'],
];
test('tag fields (head.type, input.colour, ...) set to any string: path: message lines, never a throw', () => {
  fc.assert(
    fc.property(fc.nat({ max: heads.length - 1 }), fc.constantFrom(...TAGS), fc.oneof(fc.constantFrom(...NASTY), fc.string()), (h, [obj, field], v) => {
      tried.tags = (tried.tags ?? 0) + 1;
      const doc = structuredClone(base) as Record<string, Record<string, Json>>;
      doc.head = structuredClone(heads[h]!) as Record<string, Json>;
      doc[obj]![field] = v;
      check(doc);
    }),
    { seed: SEED, numRuns: runs(2000), includeErrorInReport: true },
  );
});

test('any JSON value as model.json: path: message lines, never a throw', () => {
  fc.assert(
    fc.property(fc.oneof(value, fc.jsonValue(), fc.dictionary(key, value)), (doc) => {
      tried.random = (tried.random ?? 0) + 1;
      check(doc);
    }),
    { seed: SEED, numRuns: runs(2000), includeErrorInReport: true },
  );
});
