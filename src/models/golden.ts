// Golden samples: a few images shipped with a bundle (golden/), each with the verdict the model
// must give. A candidate that loads but judges them differently (wrong weights, wrong threshold,
// preprocessing that drifted) is refused before it sees a part. The expected verdicts are listed
// in golden.json, or in the manifest under provenance.golden (then the signature covers them):
//   { "samples": [ { "file": "scratch-1.png", "verdict": "reject", "sha256": "…" } ] }
// `file` is relative to golden/; `sha256` is optional and checked when given.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeImageFile } from '../inference/image.js';
import { ModelLoadError, type Inspector, type ModelManifest } from '../inference/types.js';
import type { VerdictKind } from '../part.js';

export const GOLDEN_DIR = 'golden';
export const GOLDEN_FILE = 'golden.json';

export interface GoldenSample {
  /** Path relative to the bundle's golden/ folder. */
  file: string;
  expected: VerdictKind;
  sha256?: string;
}

export interface GoldenFailure {
  file: string;
  expected: VerdictKind;
  got?: VerdictKind;
  score?: number;
  error?: string;
}

export interface GoldenReport {
  total: number;
  passed: number;
  failures: GoldenFailure[];
}

/** A relative path that stays inside golden/ (the pull writes files under these names). */
export function isSafeRelativePath(p: string): boolean {
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.\-/]*$/.test(p)) return false;
  return p.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..');
}

/** The golden list from a parsed golden.json or provenance.golden; throws naming the bad entry. */
export function parseGoldenList(json: unknown, where: string): GoldenSample[] {
  const list = Array.isArray(json) ? json : (json as { samples?: unknown } | null)?.samples;
  if (!Array.isArray(list)) throw new ModelLoadError(`${where}: expected { "samples": [ { "file": "x.png", "verdict": "pass" } ] }`);
  return list.map((e: unknown, i) => {
    const s = e as { file?: unknown; verdict?: unknown; sha256?: unknown } | null;
    const at = `${where}: samples[${i}]`;
    if (!s || typeof s.file !== 'string' || !isSafeRelativePath(s.file)) {
      throw new ModelLoadError(`${at}.file: a relative path inside golden/ (letters, digits, _ . - /; no '..')`);
    }
    if (s.verdict !== 'pass' && s.verdict !== 'reject') throw new ModelLoadError(`${at}.verdict: must be "pass" or "reject"`);
    if (s.sha256 !== undefined && (typeof s.sha256 !== 'string' || !/^[0-9a-fA-F]{64}$/.test(s.sha256))) {
      throw new ModelLoadError(`${at}.sha256: must be 64 hex digits`);
    }
    return { file: s.file, expected: s.verdict, ...(typeof s.sha256 === 'string' ? { sha256: s.sha256.toLowerCase() } : {}) };
  });
}

/** The golden list a manifest carries (provenance.golden), if any. */
export function manifestGolden(manifest: ModelManifest): GoldenSample[] | undefined {
  const g = manifest.provenance?.golden;
  return g === undefined ? undefined : parseGoldenList(g, 'model.json provenance.golden');
}

/**
 * The bundle's golden samples (empty when it has none), their files present and, where a sha256
 * is given, intact. golden.json wins over provenance.golden when both exist.
 */
export async function loadGolden(dir: string, manifest: ModelManifest): Promise<GoldenSample[]> {
  let samples: GoldenSample[] | undefined;
  const jsonPath = join(dir, GOLDEN_FILE);
  let text: string | undefined;
  try {
    text = await readFile(jsonPath, 'utf8');
  } catch {
    text = undefined;
  }
  if (text !== undefined) {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new ModelLoadError(`${jsonPath}: not valid JSON (${(err as Error).message})`);
    }
    samples = parseGoldenList(json, jsonPath);
  } else {
    samples = manifestGolden(manifest);
  }
  for (const s of samples ?? []) {
    const path = join(dir, GOLDEN_DIR, s.file);
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch {
      throw new ModelLoadError(`model bundle ${dir}: golden sample ${GOLDEN_DIR}/${s.file} is listed but missing`);
    }
    if (s.sha256 && createHash('sha256').update(bytes).digest('hex') !== s.sha256) {
      throw new ModelLoadError(`model bundle ${dir}: golden sample ${GOLDEN_DIR}/${s.file} does not match its sha256 (corrupted or replaced)`);
    }
  }
  return samples ?? [];
}

/** Runs every golden sample through the inspector (as API requests: line parts go first). */
export async function runGolden(dir: string, samples: GoldenSample[], inspector: Inspector, manifest: ModelManifest): Promise<GoldenReport> {
  const colour = manifest.input.colour === 'gray' ? 'gray' : 'rgb';
  const failures: GoldenFailure[] = [];
  for (const s of samples) {
    try {
      const frame = await decodeImageFile(join(dir, GOLDEN_DIR, s.file), { colour, source: 'golden' });
      const { verdict } = await inspector.inspect(frame, { priority: 'api' });
      if (verdict.verdict !== s.expected) failures.push({ file: s.file, expected: s.expected, got: verdict.verdict, score: verdict.score });
    } catch (err) {
      failures.push({ file: s.file, expected: s.expected, error: (err as Error).message });
    }
  }
  return { total: samples.length, passed: samples.length - failures.length, failures };
}

/** One line naming the failed samples, for refusal messages. */
export function describeGoldenFailures(r: GoldenReport): string {
  const shown = r.failures.slice(0, 5).map((f) =>
    f.error ? `${f.file}: ${f.error}` : `${f.file}: expected ${f.expected}, got ${f.got} (score ${f.score?.toPrecision(4)})`,
  );
  const more = r.failures.length > shown.length ? `; and ${r.failures.length - shown.length} more` : '';
  return `${r.failures.length} of ${r.total} golden sample(s) judged wrongly: ${shown.join('; ')}${more}`;
}
