// A dataset in the folder-per-class layout: `good/` and one folder per defect class, each holding
// images; optional pixel masks in `masks/<class>/<name>.png` (white = defect). Scanning hashes
// every image (the dataset manifest), decodes it once so an unreadable file is found here rather
// than half-way through training, and checks the layout with messages that say what to fix.
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import type { Logger } from '../log.js';
import type { Sample } from './types.js';

export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp'];
const MASKS = 'masks';
const GOOD = 'good';

/** A layout problem that stops training; the message names the path and the fix. */
export class DatasetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DatasetError';
  }
}

export interface ManifestEntry {
  /** Path relative to the dataset root, '/'-separated. */
  file: string;
  label: string;
  sha256: string;
  bytes: number;
  width: number;
  height: number;
  mask?: string;
  maskSha256?: string;
}

export interface DatasetManifest {
  /** Absolute path of the dataset root when scanned (not part of the hash). */
  root: string;
  classes: { label: string; isGood: boolean; images: number; masks: number }[];
  entries: ManifestEntry[];
  /** Images that could not be read, with the reason. */
  skipped: { file: string; reason: string }[];
  /** sha256 of the canonical entries: same files and labels => same hash, wherever the folder is. */
  sha256: string;
}

export interface ScanOptions {
  log?: Logger;
  progress?: (done: number, total: number, what: string) => void;
  /** How many images are hashed and decoded at once. */
  concurrency?: number;
}

function isImage(name: string): boolean {
  return !name.startsWith('.') && IMAGE_EXTENSIONS.includes(path.extname(name).toLowerCase());
}

const stem = (name: string): string => name.slice(0, name.length - path.extname(name).length);

/** JSON with sorted keys, so equal values hash equally whatever order they were built in. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      return Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    }
    return v;
  });
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

async function listDir(dir: string): Promise<{ files: string[]; dirs: string[] }> {
  const entries = await readdir(dir, { withFileTypes: true });
  const files: string[] = [];
  const dirs: string[] = [];
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    if (e.isDirectory()) dirs.push(e.name);
    else if (e.isFile() || e.isSymbolicLink()) files.push(e.name);
  }
  return { files: files.sort(), dirs: dirs.sort() };
}

/** Run fn over items with at most `limit` in flight, keeping the result order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}

interface Found {
  label: string;
  name: string;
  abs: string;
  rel: string;
  mask?: { abs: string; rel: string };
}

/** The layout alone (no reading of images): classes, their images and masks, checked. */
async function findFiles(root: string): Promise<Found[]> {
  let top: { files: string[]; dirs: string[] };
  try {
    const st = await stat(root);
    if (!st.isDirectory()) throw new DatasetError(`${root}: not a folder. Fix: point dataset.dir at the dataset's root folder (good/, one folder per defect class).`);
    top = await listDir(root);
  } catch (err) {
    if (err instanceof DatasetError) throw err;
    throw new DatasetError(`${root}: cannot read the dataset folder (${(err as Error).message}). Fix: check dataset.dir (relative to the config file) or --data.`);
  }
  if (!top.dirs.includes(GOOD)) {
    throw new DatasetError(
      `${path.join(root, GOOD)}: no good images (the folder is missing). Fix: put defect-free images in ${path.join(root, GOOD)}/ -- the threshold is calibrated on them, and anomaly training learns from them alone.`,
    );
  }
  const found: Found[] = [];
  const classes = top.dirs.filter((d) => d !== MASKS);
  for (const label of classes) {
    const dir = path.join(root, label);
    const { files } = await listDir(dir);
    const images = files.filter(isImage);
    if (images.length === 0) {
      if (label === GOOD) {
        throw new DatasetError(
          `${dir}: no good images (the folder is empty). Fix: put defect-free images in it -- the threshold is calibrated on them, and anomaly training learns from them alone.`,
        );
      }
      throw new DatasetError(`${dir}: empty class folder (no ${IMAGE_EXTENSIONS.join('/')} images). Fix: add images of class '${label}' or remove the folder.`);
    }
    const seen = new Map<string, string>();
    for (const name of images) {
      const s = stem(name);
      if (seen.has(s)) {
        throw new DatasetError(`${path.join(dir, name)}: same name as ${path.join(dir, seen.get(s)!)} with another extension, so its mask would be ambiguous. Fix: rename or remove one of them.`);
      }
      seen.set(s, name);
      found.push({ label, name, abs: path.join(dir, name), rel: `${label}/${name}` });
    }
  }
  if (top.dirs.includes(MASKS)) {
    const maskRoot = path.join(root, MASKS);
    const byKey = new Map(found.map((f) => [`${f.label}/${stem(f.name)}`, f]));
    const { dirs: maskDirs, files: stray } = await listDir(maskRoot);
    if (stray.some(isImage)) {
      throw new DatasetError(`${path.join(maskRoot, stray.find(isImage)!)}: a mask outside a class folder. Fix: move it to ${maskRoot}/<class>/<image name>.png.`);
    }
    for (const label of maskDirs) {
      const { files } = await listDir(path.join(maskRoot, label));
      for (const name of files.filter(isImage)) {
        const abs = path.join(maskRoot, label, name);
        const img = byKey.get(`${label}/${stem(name)}`);
        if (!img) {
          throw new DatasetError(
            `${abs}: mask without an image (no ${path.join(root, label, stem(name))}.<png|jpg|...>). Fix: add the image to ${path.join(root, label)}/ or remove the mask.`,
          );
        }
        if (img.mask) throw new DatasetError(`${abs}: a second mask for ${img.abs} (also ${img.mask.abs}). Fix: keep one.`);
        img.mask = { abs, rel: `${MASKS}/${label}/${name}` };
      }
    }
  }
  return found;
}

async function readImage(file: string): Promise<{ bytes: Buffer; width: number; height: number }> {
  const bytes = await readFile(file);
  // A full decode (not just the header) so that truncated or corrupt files are caught here.
  const { info } = await sharp(bytes).raw().toBuffer({ resolveWithObject: true });
  return { bytes, width: info.width, height: info.height };
}

/**
 * Scan a dataset folder: every readable image with its sha256 and label. An unreadable image is
 * logged by name and skipped; layout problems throw DatasetError.
 */
export async function scanDataset(dir: string, opts: ScanOptions = {}): Promise<{ samples: Sample[]; manifest: DatasetManifest }> {
  const root = path.resolve(dir);
  const found = await findFiles(root);
  const skipped: { file: string; reason: string }[] = [];
  let done = 0;
  const results = await mapLimit(found, opts.concurrency ?? 4, async (f) => {
    let entry: ManifestEntry | undefined;
    try {
      const img = await readImage(f.abs);
      entry = { file: f.rel, label: f.label, sha256: sha256Hex(img.bytes), bytes: img.bytes.length, width: img.width, height: img.height };
    } catch (err) {
      const reason = (err as Error).message.split('\n')[0] ?? 'unreadable';
      skipped.push({ file: f.rel, reason });
      opts.log?.warn('dataset: unreadable image skipped', { file: f.abs, reason });
    }
    if (entry && f.mask) {
      try {
        const m = await readImage(f.mask.abs);
        entry.mask = f.mask.rel;
        entry.maskSha256 = sha256Hex(m.bytes);
      } catch (err) {
        const reason = (err as Error).message.split('\n')[0] ?? 'unreadable';
        skipped.push({ file: f.mask.rel, reason });
        opts.log?.warn('dataset: unreadable mask skipped (the image is kept without it)', { file: f.mask.abs, reason });
      }
    }
    opts.progress?.(++done, found.length, 'scan');
    return entry;
  });
  const entries = results.filter((e): e is ManifestEntry => e !== undefined).sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  skipped.sort((a, b) => (a.file < b.file ? -1 : 1));

  const labels = [...new Set(found.map((f) => f.label))].sort();
  const classes = labels.map((label) => {
    const es = entries.filter((e) => e.label === label);
    return { label, isGood: label === GOOD, images: es.length, masks: es.filter((e) => e.mask).length };
  });
  for (const c of classes) {
    if (c.images > 0) continue;
    const d = path.join(root, c.label);
    if (c.isGood) throw new DatasetError(`${d}: no good images (none of its images could be read). Fix: replace the unreadable files listed above with defect-free images.`);
    throw new DatasetError(`${d}: empty class folder (none of its images could be read). Fix: replace the unreadable files listed above or remove the folder.`);
  }
  const manifest: DatasetManifest = { root, classes, entries, skipped, sha256: manifestHash(entries) };
  return { samples: samplesFromManifest(manifest), manifest };
}

export function manifestHash(entries: readonly ManifestEntry[]): string {
  return sha256Hex(canonicalJson(entries));
}

export function samplesFromManifest(m: DatasetManifest, root = m.root): Sample[] {
  return m.entries.map((e) => {
    const s: Sample = { file: path.join(root, ...e.file.split('/')), label: e.label, isGood: e.label === GOOD, sha256: e.sha256 };
    if (e.mask) s.mask = path.join(root, ...e.mask.split('/'));
    return s;
  });
}

/**
 * A cheap fingerprint of the folder (names, sizes, modification times) so a resumed run can tell
 * whether the dataset changed without hashing every image again.
 */
export async function folderFingerprint(dir: string): Promise<string> {
  const root = path.resolve(dir);
  const h = createHash('sha256');
  const walk = async (d: string, rel: string, depth: number): Promise<void> => {
    const { files, dirs } = await listDir(d);
    for (const f of files) {
      const st = await stat(path.join(d, f));
      h.update(`${rel}${f}\0${st.size}\0${st.mtimeMs}\n`);
    }
    if (depth < 2) for (const sub of dirs) await walk(path.join(d, sub), `${rel}${sub}/`, depth + 1);
  };
  await walk(root, '', 0);
  return h.digest('hex');
}

// ---- Split ------------------------------------------------------------------------------------

export interface SplitFractions {
  train: number;
  val: number;
  test: number;
}

export interface Split {
  train: Sample[];
  val: Sample[];
  test: Sample[];
  /** How many groups were split (grouped split only). */
  groups?: number;
}

/** mulberry32: small, fast, and the same on every platform. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function seedFor(seed: number, label: string): number {
  return parseInt(sha256Hex(`${seed}:${label}`).slice(0, 8), 16);
}

/** Counts per part by largest remainder, so they add up to n; a part with a share > 0 gets one when n allows. */
export function allocate(n: number, fractions: readonly number[]): number[] {
  const sum = fractions.reduce((a, b) => a + b, 0);
  if (n === 0 || sum <= 0) return fractions.map(() => 0);
  const exact = fractions.map((f) => (n * f) / sum);
  const counts = exact.map(Math.floor);
  let left = n - counts.reduce((a, b) => a + b, 0);
  const order = exact.map((e, i) => ({ i, r: e - Math.floor(e) })).sort((a, b) => b.r - a.r || a.i - b.i);
  for (const { i } of order) {
    if (left === 0) break;
    counts[i]!++;
    left--;
  }
  // Give an empty part with a positive share one sample from the largest part (small classes).
  for (let i = 0; i < counts.length; i++) {
    if (counts[i] !== 0 || fractions[i]! <= 0) continue;
    const donor = counts.indexOf(Math.max(...counts));
    if (counts[donor]! > 1) {
      counts[donor]!--;
      counts[i]!++;
    }
  }
  return counts;
}

/**
 * Which images belong together and must land in the same split (split.groupBy of the training
 * config): the same part photographed several times (several cameras, lightings, re-takes), so a
 * model is never tested on a part it has seen a sibling image of during training.
 *   kind 'none'   every image on its own (a per-file split);
 *   kind 'regex'  the first capture group of `pattern`, matched against the file name (or the
 *                 whole '/'-separated path with on: 'path'), is the group key: equal keys, one
 *                 group. With numericGap > 0 the keys must be numbers, and sorted keys that are at
 *                 most numericGap apart chain into one group (frame counters that run on between
 *                 the shots of one part).
 */
export interface GroupBy {
  kind: 'none' | 'regex';
  pattern?: string;
  on?: 'name' | 'path';
  numericGap?: number;
  /** A file the pattern does not match: 'error' stops with its name; 'single' makes it a group of its own. */
  unmatched?: 'error' | 'single';
}

export interface SampleGroup {
  key: string;
  samples: Sample[];
}

const byFile = (a: Sample, b: Sample): number => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0);

/** Groups per `groupBy`, each sorted by file, in a fixed order (by key); throws DatasetError when the pattern does not fit the files. */
export function groupSamples(samples: readonly Sample[], groupBy: GroupBy | undefined): SampleGroup[] {
  const sorted = [...samples].sort(byFile);
  if (!groupBy || groupBy.kind === 'none') return sorted.map((s) => ({ key: s.file, samples: [s] }));
  const where = 'split.groupBy.pattern';
  if (!groupBy.pattern) throw new DatasetError(`${where}: required when split.groupBy.kind is regex (e.g. '_num_(\\d+)')`);
  let re: RegExp;
  try {
    re = new RegExp(groupBy.pattern);
  } catch (err) {
    throw new DatasetError(`${where}: '${groupBy.pattern}' is not a valid regular expression (${(err as Error).message})`);
  }
  const on = groupBy.on ?? 'name';
  const gap = groupBy.numericGap ?? 0;
  const keyed: { s: Sample; key: string }[] = [];
  const unmatched: Sample[] = [];
  for (const s of sorted) {
    const subject = on === 'name' ? path.basename(s.file) : s.file.split(path.sep).join('/');
    const m = re.exec(subject);
    const key = m ? (m[1] ?? m[0]) : undefined;
    if (key === undefined || key === '') unmatched.push(s);
    else keyed.push({ s, key });
  }
  const show = (xs: Sample[]): string => xs.slice(0, 3).map((s) => (on === 'name' ? path.basename(s.file) : s.file)).join(', ') + (xs.length > 3 ? `, ... (${xs.length} in all)` : '');
  if (samples.length > 0 && keyed.length === 0) {
    throw new DatasetError(
      `${where}: /${groupBy.pattern}/ matches none of the ${samples.length} file ${on === 'name' ? 'names' : 'paths'} (e.g. ${show(unmatched)}). Fix: make its first capture group pick the part id out of names like these, or set split.groupBy.kind: none.`,
    );
  }
  if (unmatched.length && (groupBy.unmatched ?? 'error') === 'error') {
    throw new DatasetError(
      `${where}: /${groupBy.pattern}/ does not match ${show(unmatched)}. Fix: rename those files, widen the pattern, or set split.groupBy.unmatched: single (each such file a group of its own).`,
    );
  }
  const groups: SampleGroup[] = [];
  if (gap > 0) {
    const num = keyed.map(({ s, key }) => ({ s, key, n: Number(key) }));
    const bad = num.filter((x) => !Number.isFinite(x.n));
    if (bad.length) {
      throw new DatasetError(`${where}: numericGap needs numeric keys, but /${groupBy.pattern}/ gives '${bad[0]!.key}' for ${path.basename(bad[0]!.s.file)}. Fix: capture digits only, or set numericGap: 0.`);
    }
    num.sort((a, b) => a.n - b.n || byFile(a.s, b.s));
    let cur: typeof num = [];
    const flush = (): void => {
      if (cur.length) groups.push({ key: cur[0]!.key, samples: cur.map((x) => x.s).sort(byFile) });
      cur = [];
    };
    for (const x of num) {
      if (cur.length && x.n - cur[cur.length - 1]!.n > gap) flush();
      cur.push(x);
    }
    flush();
  } else {
    const map = new Map<string, Sample[]>();
    for (const { s, key } of keyed) map.set(key, [...(map.get(key) ?? []), s]);
    for (const [key, ss] of map) groups.push({ key, samples: ss });
  }
  for (const s of unmatched) groups.push({ key: s.file, samples: [s] });
  return groups.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : byFile(a.samples[0]!, b.samples[0]!)));
}

/** A group's stratum: its most frequent defect class (ties: alphabetical), or 'good' when it holds only good images. */
function stratumOf(g: SampleGroup): { label: string; isGood: boolean } {
  const c = new Map<string, number>();
  for (const s of g.samples) if (!s.isGood) c.set(s.label, (c.get(s.label) ?? 0) + 1);
  if (c.size === 0) return { label: g.samples[0]!.label, isGood: true };
  return { label: [...c].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0]![0], isGood: false };
}

/**
 * Groups of one stratum into parts: shuffled (seeded), then each part with a positive share gets
 * one group while there are groups enough (largest share first), then every further group goes to
 * the part furthest below its share of the stratum's images.
 */
function allocateGroups(groups: SampleGroup[], fractions: readonly number[]): SampleGroup[][] {
  const parts: SampleGroup[][] = fractions.map(() => []);
  const have = fractions.map(() => 0);
  const sum = fractions.reduce((a, b) => a + b, 0);
  const total = groups.reduce((a, g) => a + g.samples.length, 0);
  const positive = fractions.map((f, i) => ({ f, i })).filter((x) => x.f > 0).sort((a, b) => b.f - a.f || a.i - b.i);
  let next = 0;
  if (groups.length >= positive.length) {
    for (const { i } of positive) {
      parts[i]!.push(groups[next]!);
      have[i]! += groups[next++]!.samples.length;
    }
  }
  for (; next < groups.length; next++) {
    const g = groups[next]!;
    let best = -1;
    let bestDeficit = -Infinity;
    for (let i = 0; i < fractions.length; i++) {
      if (fractions[i]! <= 0) continue;
      const deficit = (total * fractions[i]!) / sum - have[i]!;
      if (deficit > bestDeficit + 1e-9) {
        best = i;
        bestDeficit = deficit;
      }
    }
    parts[best]!.push(g);
    have[best]! += g.samples.length;
  }
  return parts;
}

/**
 * Stratified, deterministic split: per class, samples sorted by file path then shuffled with a
 * seed derived from (seed, class), so adding a class does not reshuffle the others. In anomaly
 * mode no defective image is ever trained on, so defects go to val and test only (in the ratio of
 * their fractions) rather than wasting the train share.
 *
 * With `groupBy` (kind regex) whole groups are split instead of files (see GroupBy): every image
 * of a group lands in the same split. Groups are stratified by their stratum (the group's most
 * frequent defect class, or good) and shuffled with a seed derived from (seed, stratum); the
 * fractions then hold for the images of each stratum as far as the group sizes allow.
 */
export function splitSamples(
  samples: readonly Sample[],
  fractions: SplitFractions,
  seed: number,
  mode: 'anomaly' | 'supervised' = 'supervised',
  groupBy?: GroupBy,
): Split {
  const out: Split = { train: [], val: [], test: [] };
  if (groupBy && groupBy.kind !== 'none') {
    const groups = groupSamples(samples, groupBy);
    const strata = new Map<string, { isGood: boolean; groups: SampleGroup[] }>();
    for (const g of groups) {
      const st = stratumOf(g);
      const e = strata.get(st.label) ?? { isGood: st.isGood, groups: [] };
      e.groups.push(g);
      strata.set(st.label, e);
    }
    for (const label of [...strata.keys()].sort()) {
      const { isGood, groups: gs } = strata.get(label)!;
      const r = rng(seedFor(seed, `group:${label}`));
      for (let i = gs.length - 1; i > 0; i--) {
        const j = Math.floor(r() * (i + 1));
        [gs[i], gs[j]] = [gs[j]!, gs[i]!];
      }
      const f = mode === 'anomaly' && !isGood ? [0, fractions.val, fractions.test] : [fractions.train, fractions.val, fractions.test];
      const [tr, va, te] = allocateGroups(gs, f) as [SampleGroup[], SampleGroup[], SampleGroup[]];
      for (const g of tr) out.train.push(...g.samples);
      for (const g of va) out.val.push(...g.samples);
      for (const g of te) out.test.push(...g.samples);
    }
    out.groups = groups.length;
    return out;
  }
  const labels = [...new Set(samples.map((s) => s.label))].sort();
  for (const label of labels) {
    const group = samples.filter((s) => s.label === label).sort(byFile);
    const r = rng(seedFor(seed, label));
    for (let i = group.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [group[i], group[j]] = [group[j]!, group[i]!];
    }
    const isGood = group[0]!.isGood;
    const f = mode === 'anomaly' && !isGood ? [0, fractions.val, fractions.test] : [fractions.train, fractions.val, fractions.test];
    const [nTrain, nVal] = allocate(group.length, f) as [number, number, number];
    out.train.push(...group.slice(0, nTrain));
    out.val.push(...group.slice(nTrain, nTrain + nVal));
    out.test.push(...group.slice(nTrain + nVal));
  }
  return out;
}
