// The reject archive: frames of diverted parts (and a sample of passed ones) kept as PNG, with
// their verdict as JSON beside, in the folder-per-class layout `linesight train` reads
// (docs/training.md), so what the line rejects today can become tomorrow's training data.
//
//   <root>/good/st1-b3-000120.png            passed part (1 in passEvery)
//   <root>/good/st1-b3-000120.json
//   <root>/scratch/st1-b3-000121.png         rejected: the defect class that made the verdict
//   <root>/reject/st1-b3-000122.png          rejected without a located defect
//   <root>/failsafe-late/st1-b3-000123.png   diverted without a valid verdict: NOT a label, review
//
// The line never waits for it: offer() only queues the part (the frame is already decoded in
// memory) and returns; encoding (libvips threads) and writing happen on a single async worker.
// When the queue is full the part is skipped and counted. Each file is written to a hidden temp
// name, then renamed: a reader sees a whole PNG or none; the JSON goes first, so a PNG always has
// its JSON. Files are not fsync'ed by default: the line's own trigger journal waits for its
// fsync, and optional data must not queue syncs on the same disk in front of it. A power cut can
// then leave an empty file under the final name (ext4 commits the rename before the delayed
// data); open() removes those, so what is left is whole or gone. Retention by count, bytes and age removes the oldest first;
// a DiskGuard stops writes at a free-space floor.
import { mkdir, open, readdir, rename, rmdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { silentLogger, type Logger } from '../log.js';
import { hasPixels, type Frame, type Part } from '../part.js';
import type { DiskGuard } from '../telemetry/disk.js';

export interface ArchiveOptions {
  /** Dataset root: `<root>/<label>/<partId>.png` and `.json`. */
  root: string;
  /** Also keep 1 in N passed parts under good/ (0: no passed parts). Default 0. */
  passEvery?: number;
  /** Keep frames of fail-safe diverts under failsafe-<reason>/ (default true). */
  failSafe?: boolean;
  /** Images kept at most (default 10000). */
  maxFiles?: number;
  /** Bytes (PNG + JSON) kept at most (default 1 GiB). */
  maxBytes?: number;
  /** Files older than this are removed (default 30 days; 0 = no age limit). */
  maxAgeMs?: number;
  /** Parts waiting to be written at most, the one being written included (default 8). */
  queueLimit?: number;
  /** Free-space floor: writes it refuses are skipped and counted. */
  guard?: DiskGuard;
  /** fsync each file before its rename (default false: see the top; empty files are removed at open). */
  fsync?: boolean;
  /** PNG zlib level 0-9 (default 6). Lower costs less CPU on the line box, more bytes. */
  compressionLevel?: number;
  log?: Logger;
  /** Wall clock (default Date.now). */
  wallMs?: () => number;
  /** A write failed (other than the disk floor). Called once per failure episode. */
  onError?: (message: string) => void;
}

/** What offer() did with a part. Only 'queued' leads to files. */
export type OfferResult = 'queued' | 'not-kept' | 'no-frame' | 'queue-full' | 'closed';

export interface ArchiveStats {
  root: string;
  files: number;
  bytes: number;
  queued: number;
  written: number;
  /** Parts that should have been kept but were not, by why. */
  skipped: { queueFull: number; noFrame: number; diskFloor: number; error: number };
  /** Files removed by retention, by which limit. */
  removed: { count: number; bytes: number; age: number };
  byLabel: Record<string, number>;
}

interface Entry {
  label: string;
  name: string;
  bytes: number;
  timeMs: number;
}

interface Job {
  label: string;
  kind: 'reject' | 'failsafe' | 'pass-sample';
  name: string;
  frame: Frame;
  meta: Record<string, unknown>;
}

const LABEL_OK = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
// Folders the training scanner treats specially, or that would mislabel a reject as good.
const RESERVED = new Set(['good', 'masks']);

/** A file/folder name from any string: letters, digits, _ . - only, no leading dot, 1-64 chars. */
export function safeName(s: string, fallback: string): string {
  const cleaned = s.replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^[.-]+/, '').slice(0, 64);
  return cleaned === '' ? fallback : cleaned;
}

/**
 * The dataset folder of a decided part: 'good' for a pass; for a reject the class of the defect
 * that made the verdict (its score is the verdict's score), else the strongest defect, else the
 * classifier's top label, else 'reject'; 'failsafe-<reason>' for a divert without a valid verdict.
 */
export function archiveLabel(part: Part): string {
  if (part.failSafe || !part.verdict) return `failsafe-${safeName(part.reason ?? 'unknown', 'unknown')}`;
  if (part.action === 'pass') return 'good';
  const v = part.verdict;
  const top = v.defects.find((d) => d.score === v.score) ?? [...v.defects].sort((a, b) => b.score - a.score)[0];
  const cls = top?.class ?? v.label;
  if (cls === undefined) return 'reject';
  const label = safeName(cls, 'reject');
  return RESERVED.has(label) ? `reject-${label}` : label;
}

export class RejectArchive {
  private readonly log: Logger;
  private readonly passEvery: number;
  private readonly maxFiles: number;
  private readonly maxBytes: number;
  private readonly maxAgeMs: number;
  private readonly queueLimit: number;
  private readonly wallMs: () => number;
  /** Oldest first. */
  private entries: Entry[] = [];
  private bytes = 0;
  private passes = 0;
  private queue: Job[] = [];
  private writing = false;
  private worker: Promise<void> | undefined;
  private ageTimer: NodeJS.Timeout | undefined;
  private failing = false;
  private closed = false;
  private opening = false;
  private opened = false;
  /** Writes and retention run one at a time: a prune must not remove a folder a write is filling. */
  private lock: Promise<void> = Promise.resolve();
  private readonly counts = {
    queued: 0,
    written: 0,
    skipped: { queueFull: 0, noFrame: 0, diskFloor: 0, error: 0 },
    removed: { count: 0, bytes: 0, age: 0 },
  };

  constructor(private readonly opts: ArchiveOptions) {
    this.log = opts.log ?? silentLogger;
    this.passEvery = Math.max(0, Math.floor(opts.passEvery ?? 0));
    this.maxFiles = Math.max(1, opts.maxFiles ?? 10_000);
    this.maxBytes = Math.max(0, opts.maxBytes ?? 1024 ** 3);
    this.maxAgeMs = Math.max(0, opts.maxAgeMs ?? 30 * 24 * 3600 * 1000);
    this.queueLimit = Math.max(1, opts.queueLimit ?? 8);
    this.wallMs = opts.wallMs ?? Date.now;
  }

  /** Index what is already archived (retention spans restarts) and clear leftovers of a crash. */
  async open(): Promise<void> {
    if (this.opening) throw new Error('RejectArchive.open() called twice');
    this.opening = true;
    const { root } = this.opts;
    await mkdir(root, { recursive: true });
    const found: Entry[] = [];
    for (const d of await readdir(root, { withFileTypes: true })) {
      if (!d.isDirectory() || !LABEL_OK.test(d.name) || d.name === 'masks') continue;
      const dir = join(root, d.name);
      const names = await readdir(dir);
      const pngs = new Set(names.filter((n) => n.endsWith('.png') && !n.startsWith('.')).map((n) => n.slice(0, -4)));
      for (const n of names) {
        // A temp file is a write a crash interrupted; a JSON without its PNG is the same, one step later.
        const orphanJson = n.endsWith('.json') && !n.startsWith('.') && !pngs.has(n.slice(0, -5));
        if ((n.startsWith('.') && n.endsWith('.tmp')) || orphanJson) await unlink(join(dir, n)).catch(() => {});
      }
      for (const name of pngs) {
        const png = await stat(join(dir, `${name}.png`)).catch(() => undefined);
        if (!png) continue;
        if (png.size === 0) {
          // Renamed before its data reached the disk, then the power went: nothing to keep.
          for (const ext of ['.png', '.json']) await unlink(join(dir, name + ext)).catch(() => {});
          continue;
        }
        const json = await stat(join(dir, `${name}.json`)).catch(() => undefined);
        found.push({ label: d.name, name, bytes: png.size + (json?.size ?? 0), timeMs: png.mtimeMs });
      }
    }
    found.sort((a, b) => a.timeMs - b.timeMs);
    this.entries = found;
    this.bytes = found.reduce((s, e) => s + e.bytes, 0);
    await this.enforce();
    if (this.maxAgeMs > 0) {
      // Age limits must hold on a quiet line too, when no write triggers retention.
      this.ageTimer = setInterval(() => void this.prune().catch(() => {}), Math.min(this.maxAgeMs / 10, 10 * 60_000));
      this.ageTimer.unref();
    }
    this.opened = true;
    this.log.info('archive open', { root, files: this.entries.length, bytes: this.bytes });
  }

  /**
   * Consider a decided part. Synchronous and cheap: it never waits for the disk; a part that
   * should be kept but finds the queue full is skipped and counted.
   */
  offer(part: Part): OfferResult {
    if (this.closed || !this.opened) return 'closed';
    const kind: Job['kind'] = part.failSafe || !part.verdict ? 'failsafe' : part.action === 'pass' ? 'pass-sample' : 'reject';
    if (kind === 'failsafe' && (this.opts.failSafe ?? true) === false) return 'not-kept';
    if (kind === 'failsafe' && part.action !== 'divert') return 'not-kept';
    if (kind === 'pass-sample') {
      if (this.passEvery === 0) return 'not-kept';
      this.passes++;
      if (this.passes % this.passEvery !== 0) return 'not-kept';
    }
    const f = part.frame;
    if (!hasPixels(f)) {
      this.counts.skipped.noFrame++;
      return 'no-frame';
    }
    if (this.queue.length + (this.writing ? 1 : 0) >= this.queueLimit) {
      this.counts.skipped.queueFull++;
      return 'queue-full';
    }
    const label = archiveLabel(part);
    // Metadata is copied now: the part object lives on (a late verdict may still be added to it).
    this.queue.push({ label, kind, name: safeName(part.id, 'part'), frame: f, meta: sidecar(part, label, kind) });
    this.counts.queued++;
    this.kick();
    return 'queued';
  }

  private kick(): void {
    if (this.worker) return;
    this.worker = this.run().finally(() => {
      this.worker = undefined;
      if (this.queue.length > 0 && !this.closed) this.kick();
    });
  }

  private async run(): Promise<void> {
    while (this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.writing = true;
      try {
        await this.serial(() => this.write(job));
      } catch (err) {
        this.counts.skipped.error++;
        const msg = `archive write failed for ${job.label}/${job.name}: ${(err as Error).message}`;
        this.log.error(msg);
        if (!this.failing) {
          this.failing = true;
          this.opts.onError?.(msg);
        }
      } finally {
        this.writing = false;
      }
    }
  }

  private async write(job: Job): Promise<void> {
    const { frame: f } = job;
    const raw = f.width * f.height * f.channels;
    // Checked with the raw size, before spending CPU on the encoding: a PNG is rarely larger.
    if (this.opts.guard && !(await this.opts.guard.allow(raw + 4096))) {
      this.counts.skipped.diskFloor++;
      return;
    }
    let img = sharp(Buffer.from(f.data.buffer, f.data.byteOffset, f.data.byteLength), {
      raw: { width: f.width, height: f.height, channels: f.channels },
    });
    // Without this sharp writes a grey frame as RGB: three times the bytes for the same pixels.
    if (f.channels === 1) img = img.toColourspace('b-w');
    const png = await img.png({ compressionLevel: this.opts.compressionLevel ?? 6 }).toBuffer();
    const json = Buffer.from(JSON.stringify({ ...job.meta, archivedAt: new Date(this.wallMs()).toISOString() }, null, 2) + '\n');
    const dir = join(this.opts.root, job.label);
    await mkdir(dir, { recursive: true });
    await this.atomicWrite(dir, `${job.name}.json`, json);
    await this.atomicWrite(dir, `${job.name}.png`, png);
    if (this.failing) {
      this.failing = false;
      this.log.info('archive writes work again');
    }
    // The same name again (a repeated part id) replaces its file: one entry.
    const prev = this.entries.findIndex((e) => e.label === job.label && e.name === job.name);
    if (prev !== -1) this.bytes -= this.entries.splice(prev, 1)[0]!.bytes;
    this.entries.push({ label: job.label, name: job.name, bytes: png.length + json.length, timeMs: this.wallMs() });
    this.bytes += png.length + json.length;
    this.counts.written++;
    await this.enforce();
  }

  private async atomicWrite(dir: string, name: string, data: Buffer): Promise<void> {
    // Hidden and not an image extension: the training scanner never reads a half-written file.
    const tmp = join(dir, `.${name}.${process.pid}.tmp`);
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(data);
      if (this.opts.fsync ?? false) await fh.datasync();
    } finally {
      await fh.close();
    }
    try {
      await rename(tmp, join(dir, name));
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const r = this.lock.then(fn);
    this.lock = r.then(
      () => {},
      () => {},
    );
    return r;
  }

  /** Remove files older than maxAgeMs (also runs on a timer). Returns how many went. */
  prune(): Promise<number> {
    return this.serial(() => this.pruneNow());
  }

  private async pruneNow(): Promise<number> {
    if (this.maxAgeMs === 0) return 0;
    const cutoff = this.wallMs() - this.maxAgeMs;
    let n = 0;
    while (this.entries.length > 0 && this.entries[0]!.timeMs < cutoff) {
      await this.remove(this.entries.shift()!);
      this.counts.removed.age++;
      n++;
    }
    return n;
  }

  private async enforce(): Promise<void> {
    await this.pruneNow();
    while (this.entries.length > this.maxFiles) {
      await this.remove(this.entries.shift()!);
      this.counts.removed.count++;
    }
    while (this.entries.length > 0 && this.bytes > this.maxBytes) {
      await this.remove(this.entries.shift()!);
      this.counts.removed.bytes++;
    }
  }

  private async remove(e: Entry): Promise<void> {
    const dir = join(this.opts.root, e.label);
    this.bytes -= e.bytes;
    // PNG first: a JSON alone is cleaned up at the next open, a PNG without its JSON would stay.
    for (const ext of ['.png', '.json']) {
      await unlink(join(dir, e.name + ext)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') this.log.warn('archive: cannot remove old file', { file: join(dir, e.name + ext), err: err.message });
      });
    }
    // An empty class folder stops `linesight train`: remove the folder with its last image.
    if (!this.entries.some((x) => x.label === e.label)) await rmdir(dir).catch(() => {});
  }

  /** Wait until every queued part is written (tests, graceful stop). */
  async drain(): Promise<void> {
    while (this.worker) await this.worker;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.drain();
    this.closed = true;
    if (this.ageTimer) clearInterval(this.ageTimer);
  }

  stats(): ArchiveStats {
    const byLabel: Record<string, number> = {};
    for (const e of this.entries) byLabel[e.label] = (byLabel[e.label] ?? 0) + 1;
    return {
      root: this.opts.root,
      files: this.entries.length,
      bytes: this.bytes,
      queued: this.queue.length + (this.writing ? 1 : 0),
      written: this.counts.written,
      skipped: { ...this.counts.skipped },
      removed: { ...this.counts.removed },
      byLabel,
    };
  }
}

/** The JSON beside the PNG: the verdict and what is needed to review or relabel the part. */
function sidecar(p: Part, label: string, kind: Job['kind']): Record<string, unknown> {
  const v = p.verdict;
  const f = p.frame!;
  return {
    partId: p.id,
    station: p.station,
    seq: p.seq,
    trigger: p.trigger,
    triggeredAt: p.triggeredAt,
    label,
    kind,
    action: p.action ?? null,
    failSafe: p.failSafe,
    reason: p.reason ?? null,
    detail: p.detail ?? null,
    verdict: v
      ? {
          verdict: v.verdict,
          score: v.score,
          threshold: v.threshold,
          ...(v.label !== undefined ? { label: v.label } : {}),
          ...(v.scores !== undefined ? { scores: v.scores } : {}),
          defects: v.defects,
          ...(v.map !== undefined ? { map: v.map } : {}),
        }
      : null,
    model: p.model ?? null,
    provider: p.provider ?? null,
    frame: { width: f.width, height: f.height, channels: f.channels, source: f.source, seq: f.seq, ...(f.file !== undefined ? { file: f.file } : {}) },
    // Ground truth from the synthetic film or a labelled replay folder, when the frame had one.
    ...(f.truth !== undefined ? { truth: f.truth } : {}),
    latencyMs: p.t.decidedNs !== undefined ? Number(p.t.decidedNs - p.t.triggerNs) / 1e6 : null,
  };
}
