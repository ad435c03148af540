// The on-device bundle cache: <dir>/<name>/<version>/ holds bundles that were verified when they
// were pulled (and are verified again whenever they load), so the agent starts from it when the
// registry is unreachable. A bundle is downloaded into <dir>/.staging/, verified there and renamed
// into place, so a crash or a power cut never leaves a half bundle under a real name; cache.json
// (written to a temp file and renamed) remembers sizes and use order. The cache is bounded in
// bytes: the least recently used bundles go first, never one that is protected (in use).
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../log.js';

const STATE_FILE = 'cache.json';
const STAGING = '.staging';

export interface CacheEntry {
  name: string;
  version: string;
  sha256: string;
  /** Bytes on disk (all files of the bundle). */
  bytes: number;
  /** Use order: higher = used more recently (a counter, so order survives clock steps). */
  seq: number;
  /** Wall-clock time of the last use (ms since epoch), for people. */
  lastUsed: number;
  dir: string;
}

interface StateFile {
  schemaVersion: 1;
  seq: number;
  entries: Record<string, Omit<CacheEntry, 'dir' | 'name' | 'version'>>;
}

export const refKey = (name: string, version: string): string => `${name}@${version}`;

/** A name or version usable as one folder name (no separators, not '.' or '..'). */
export function isSafeSegment(s: string): boolean {
  return /^[A-Za-z0-9_.+-]+$/.test(s) && s !== '.' && s !== '..';
}

/** Semantic version order (pre-releases before their release); unparsable versions sort first. */
export function compareVersions(a: string, b: string): number {
  const parse = (v: string) => {
    const m = /^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+.*)?$/.exec(v);
    return m ? { nums: [Number(m[1]), Number(m[2]), Number(m[3])], pre: m[4] } : undefined;
  };
  const pa = parse(a);
  const pb = parse(b);
  if (!pa || !pb) return pa ? 1 : pb ? -1 : a.localeCompare(b);
  for (let i = 0; i < 3; i++) if (pa.nums[i] !== pb.nums[i]) return pa.nums[i]! - pb.nums[i]!;
  if (pa.pre === pb.pre) return 0;
  if (pa.pre === undefined) return 1;
  if (pb.pre === undefined) return -1;
  const xa = pa.pre.split('.');
  const xb = pb.pre.split('.');
  for (let i = 0; i < Math.max(xa.length, xb.length); i++) {
    const s = xa[i];
    const t = xb[i];
    if (s === undefined) return -1;
    if (t === undefined) return 1;
    const ns = /^\d+$/.test(s);
    const nt = /^\d+$/.test(t);
    if (ns && nt && Number(s) !== Number(t)) return Number(s) - Number(t);
    if (ns !== nt) return ns ? -1 : 1;
    if (s !== t) return s < t ? -1 : 1;
  }
  return 0;
}

/** Writes a file atomically: temp file in the same folder, fsync, rename over the target. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

async function duBytes(path: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(path, { withFileTypes: true })) {
    const p = join(path, e.name);
    if (e.isDirectory()) total += await duBytes(p);
    else if (e.isFile()) total += (await stat(p)).size;
  }
  return total;
}

const exists = async (p: string): Promise<boolean> => stat(p).then(() => true, () => false);

export interface ModelCacheOptions {
  dir: string;
  /** Upper bound on the bytes of all cached bundles (protected ones may exceed it: they are in use). */
  maxBytes: number;
  log?: Logger;
}

export class ModelCache {
  readonly dir: string;
  private readonly maxBytes: number;
  private readonly log?: Logger;
  private entries = new Map<string, CacheEntry>();
  private seq = 0;
  private protectedKeys = new Set<string>();
  private opened?: Promise<void>;
  /** Mutations one at a time: commit, touch and evict all rewrite cache.json. */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(opts: ModelCacheOptions) {
    this.dir = opts.dir;
    this.maxBytes = opts.maxBytes;
    this.log = opts.log;
  }

  /** Creates the folder, clears leftovers of interrupted pulls, and reconciles cache.json with the disk. */
  open(): Promise<void> {
    return (this.opened ??= this.locked(() => this.load()));
  }

  dirFor(name: string, version: string): string {
    if (!isSafeSegment(name) || !isSafeSegment(version)) throw new Error(`not a usable model name/version: ${name}@${version}`);
    return join(this.dir, name, version);
  }

  list(): CacheEntry[] {
    return [...this.entries.values()].sort((a, b) => a.name.localeCompare(b.name) || compareVersions(a.version, b.version));
  }

  totalBytes(): number {
    let t = 0;
    for (const e of this.entries.values()) t += e.bytes;
    return t;
  }

  /** The cached entry for name@version, if present. Does not count as a use (see touch). */
  peek(name: string, version: string): CacheEntry | undefined {
    return this.entries.get(refKey(name, version));
  }

  /** The highest cached version of a model. */
  latest(name: string): CacheEntry | undefined {
    return this.versionsOf(name)[0];
  }

  /** Cached versions of a model, highest first. */
  versionsOf(name: string): CacheEntry[] {
    return [...this.entries.values()].filter((e) => e.name === name).sort((a, b) => compareVersions(b.version, a.version));
  }

  /** Marks a bundle used now (it moves to the back of the eviction order). */
  async touch(name: string, version: string): Promise<void> {
    await this.open();
    await this.locked(async () => {
      const e = this.entries.get(refKey(name, version));
      if (!e) return;
      e.seq = ++this.seq;
      e.lastUsed = Date.now();
      await this.save();
    });
  }

  /** Bundles that must not be evicted (active, previous, shadow): replaces the previous set. */
  protect(keys: Iterable<string>): void {
    this.protectedKeys = new Set(keys);
  }

  /** A fresh, empty folder to download a bundle into (on the cache's filesystem, so commit is a rename). */
  async stage(): Promise<string> {
    await this.open();
    const p = join(this.dir, STAGING, `${process.pid}-${randomBytes(6).toString('hex')}`);
    await mkdir(p, { recursive: true });
    return p;
  }

  async discard(staged: string): Promise<void> {
    await rm(staged, { recursive: true, force: true });
  }

  /**
   * Moves a verified staged bundle into place as name@version (replacing an older copy), records
   * it as just used, then evicts least recently used bundles beyond maxBytes. Returns its folder.
   */
  async commit(staged: string, name: string, version: string, sha256: string): Promise<string> {
    await this.open();
    const target = this.dirFor(name, version);
    return this.locked(async () => {
      const bytes = await duBytes(staged);
      await mkdir(join(this.dir, name), { recursive: true });
      if (await exists(target)) {
        // rename() does not replace a non-empty folder: move the old copy aside first.
        const old = join(this.dir, STAGING, `old-${randomBytes(6).toString('hex')}`);
        await rename(target, old);
        await rename(staged, target);
        await rm(old, { recursive: true, force: true });
      } else {
        await rename(staged, target);
      }
      const key = refKey(name, version);
      this.entries.set(key, { name, version, sha256, bytes, seq: ++this.seq, lastUsed: Date.now(), dir: target });
      await this.evictLocked(new Set([key]));
      await this.save();
      return target;
    });
  }

  /** Removes one bundle (e.g. found corrupted on disk). */
  async remove(name: string, version: string): Promise<void> {
    await this.open();
    await this.locked(async () => {
      const key = refKey(name, version);
      const e = this.entries.get(key);
      this.entries.delete(key);
      await rm(e?.dir ?? this.dirFor(name, version), { recursive: true, force: true });
      await this.save();
    });
  }

  /** Evicts least recently used, unprotected bundles until the cache fits maxBytes. Returns their keys. */
  async evict(): Promise<string[]> {
    await this.open();
    return this.locked(async () => {
      const removed = await this.evictLocked(new Set());
      if (removed.length) await this.save();
      return removed;
    });
  }

  // ---- internals -------------------------------------------------------------------------------

  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async evictLocked(keep: Set<string>): Promise<string[]> {
    const removed: string[] = [];
    let total = this.totalBytes();
    if (total <= this.maxBytes) return removed;
    const candidates = [...this.entries.entries()]
      .filter(([k]) => !keep.has(k) && !this.protectedKeys.has(k))
      .sort(([, a], [, b]) => a.seq - b.seq);
    for (const [key, e] of candidates) {
      if (total <= this.maxBytes) break;
      await rm(e.dir, { recursive: true, force: true });
      this.entries.delete(key);
      total -= e.bytes;
      removed.push(key);
      this.log?.info('model cache: evicted least recently used bundle', { model: key, bytes: e.bytes });
    }
    if (total > this.maxBytes) {
      this.log?.warn('model cache is over its size bound: the bundles left are in use', { bytes: total, maxBytes: this.maxBytes });
    }
    return removed;
  }

  private async load(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    // Whatever is in staging belongs to a pull that never finished.
    await rm(join(this.dir, STAGING), { recursive: true, force: true });

    let state: StateFile | undefined;
    try {
      state = JSON.parse(await readFile(join(this.dir, STATE_FILE), 'utf8')) as StateFile;
    } catch {
      state = undefined; // missing or unreadable: rebuilt from the folders
    }
    this.seq = typeof state?.seq === 'number' ? state.seq : 0;
    const known = state?.entries ?? {};

    // The folders are the truth; cache.json only adds sizes and use order.
    const found = new Map<string, CacheEntry>();
    for (const n of await readdir(this.dir, { withFileTypes: true })) {
      if (!n.isDirectory() || !isSafeSegment(n.name) || n.name.startsWith('.')) continue;
      for (const v of await readdir(join(this.dir, n.name), { withFileTypes: true })) {
        if (!v.isDirectory() || !isSafeSegment(v.name)) continue;
        const dir = join(this.dir, n.name, v.name);
        if (!(await exists(join(dir, 'model.json'))) || !(await exists(join(dir, 'model.onnx')))) continue;
        const key = refKey(n.name, v.name);
        const k = known[key];
        let sha256 = k?.sha256 ?? '';
        if (!sha256) {
          try {
            sha256 = String((JSON.parse(await readFile(join(dir, 'model.json'), 'utf8')) as { sha256?: unknown }).sha256 ?? '');
          } catch {
            sha256 = '';
          }
        }
        found.set(key, {
          name: n.name,
          version: v.name,
          sha256,
          bytes: k?.bytes ?? (await duBytes(dir)),
          seq: k?.seq ?? 0,
          lastUsed: k?.lastUsed ?? 0,
          dir,
        });
      }
    }
    this.entries = found;
    for (const e of found.values()) this.seq = Math.max(this.seq, e.seq);
    await this.save();
  }

  private async save(): Promise<void> {
    const state: StateFile = { schemaVersion: 1, seq: this.seq, entries: {} };
    for (const [key, e] of this.entries) state.entries[key] = { sha256: e.sha256, bytes: e.bytes, seq: e.seq, lastUsed: e.lastUsed };
    await writeFileAtomic(join(this.dir, STATE_FILE), JSON.stringify(state, null, 2) + '\n');
  }
}
