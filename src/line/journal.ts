// The trigger journal: a part in flight when the agent dies (SIGKILL, OOM, power loss) must still
// reach the central system after the restart, as a fail-safe divert with reason 'crash'. So every
// part is written down when it is triggered, before its inspection starts, and crossed off once
// its result is durable in the outbox. Whatever is written and not crossed off at the next start
// was in flight when the agent died.
//
//   journal-000000000007.log:  "<crc32 hex> {"k":"h","v":1,"b":"b7","at":"…","boots":{"b5":120,"b6":57,"b7":0}}\n"
//                              "<crc32 hex> {"k":"t","i":"st1-b7-000001","s":1,"st":"st1","tk":"gpio","at":"…","b":"b7"}\n"
//                              "<crc32 hex> {"k":"d","i":"st1-b7-000001"}\n"
//
// Durability, and why each write costs what it costs:
// - Records are appended with a synchronous write(2) of one short line: once it returns, the
//   record is in the kernel's page cache, which survives the process being killed (SIGKILL, a
//   crash). It also keeps the file in call order. A ~100-byte write to the page cache takes
//   microseconds, the same as the agent's own log lines to journald.
// - triggered() then needs fdatasync so the record also survives a power cut. fdatasync runs on
//   libuv's thread pool (the event loop never waits for the disk) and is shared: every record
//   written before a sync starts is covered by it (group commit), so a burst of parts costs one
//   sync, not one each. The loop awaits it before it runs inference (the deadline still runs, so a
//   disk that stalls makes the part 'late', i.e. diverted, never passed unrecorded).
// - decided() is not synced: it is written after the part's result is already fsync'ed in the
//   outbox, so the result itself can no longer be lost. Losing a decided record (power cut before
//   the page cache reaches the disk; the next triggered() sync usually carries it along) only
//   means the part is reported once more, as 'crash', after its real result: consumers keep the
//   first message per partId (docs/mqtt.md), so the real verdict wins.
//
// The file is compacted by rolling: once it holds `compactAfter` records and at most a quarter of
// them are parts still open, the open parts are copied into a new file, which is synced (with its
// directory entry) before the old one is deleted. A crash mid-roll leaves both files; reading
// takes their union. Each file starts with a header carrying the highest seq of every recent
// boot, so what was triggered stays known after the records themselves are compacted away.
// A torn last line (power lost mid-write) fails its CRC and is dropped: its triggered() never
// resolved, so that part's inspection never started.
//
// Files are preallocated with zeros (CHUNK at a time) and records overwrite them in place: an
// fdatasync that changes no metadata (no new size, no new blocks) needs no file-system journal
// commit, which on ext4 would also wait for other files' dirty data. That keeps the sync the
// inference waits for short while the rest of the box writes (outbox, archive, logs). Records are
// JSON text, which never holds a zero byte: the first zero where a record would start is the end.
import { closeSync, fdatasync, fsync, mkdirSync, openSync, readdirSync, readFileSync, unlinkSync, writeSync, close as closeCb } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { silentLogger, type Logger } from '../log.js';
import type { Part, TriggerKind } from '../part.js';

const fdatasyncP = promisify(fdatasync);
const fsyncP = promisify(fsync);
const closeP = promisify(closeCb);

export interface JournalOptions {
  /** This run's boot id: written in the header and in every triggered record. */
  bootId: string;
  log?: Logger;
  /** A write or sync failed. Called once per failure episode (again only after a success). */
  onError?: (message: string, err: Error) => void;
  /** Roll to a compacted file after this many records in the current one (default 8192). */
  compactAfter?: number;
  /** Boots remembered in the header's summary (default 64). */
  bootsKept?: number;
  /** Wall clock for the header (default Date.now). */
  wallMs?: () => number;
}

/** A part that was triggered and not (yet) decided. */
export interface JournalEntry {
  id: string;
  seq: number;
  station: string;
  trigger: TriggerKind;
  triggeredAt: string;
  /** The boot it was triggered in. */
  boot: string;
}

export interface JournalSummary {
  /** Boots in the order first seen, with the highest seq triggered in each (0: none recorded). */
  boots: { boot: string; maxSeq: number }[];
  /** Parts triggered and never decided, in trigger order. */
  undecided: JournalEntry[];
  files: string[];
  /** Unfinished last lines (a write cut short by a power loss). */
  torn: number;
  /** Lines with a bad CRC before the end of a file (storage corruption). */
  corrupt: number;
}

export interface JournalStats {
  /** Parts triggered in this run (records written). */
  triggered: number;
  /** Parts crossed off in this run. */
  decided: number;
  /** Parts triggered and not decided now (recovered ones included until they are decided). */
  open: number;
  /** Parts found open at start (returned by recover()). */
  recovered: number;
  torn: number;
  corrupt: number;
  syncs: number;
  /** Longest fdatasync so far (ms): the time a part may wait before its inference. */
  syncMsMax: number;
  compactions: number;
  writeErrors: number;
  syncErrors: number;
  /** decided() for an id the journal does not hold open (not journaled, or decided twice). */
  unknownDecided: number;
}

const FILE = /^journal-(\d{12})\.log$/;
/** Preallocation step: about 1500 parts of records. */
const CHUNK = 256 * 1024;
const fileName = (gen: number): string => `journal-${String(gen).padStart(12, '0')}.log`;
const TRIGGER_KINDS: readonly string[] = ['freerun', 'interval', 'gpio', 'command'];

// CRC-32 (IEEE): zlib.crc32 only exists from Node 20.15, and engines allow any Node 20.
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crc32(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function frameLine(rec: object): Buffer {
  const body = Buffer.from(JSON.stringify(rec), 'utf8');
  return Buffer.concat([Buffer.from(crc32(body).toString(16).padStart(8, '0') + ' ', 'ascii'), body, Buffer.from('\n')]);
}

function parseLine(line: Buffer): Record<string, unknown> | undefined {
  if (line.length < 10 || line[8] !== 0x20) return undefined;
  const crc = Number.parseInt(line.subarray(0, 8).toString('ascii'), 16);
  const body = line.subarray(9);
  if (!Number.isFinite(crc) || crc32(body) !== crc) return undefined;
  try {
    const v: unknown = JSON.parse(body.toString('utf8'));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** The boot id inside a part id `<station>-<boot>-<seq>` (station names may contain '-'). */
export function bootOfPartId(id: string): string {
  const parts = id.split('-');
  return parts.length >= 3 ? parts[parts.length - 2]! : '?';
}

function entryOf(r: Record<string, unknown>): JournalEntry | undefined {
  if (typeof r.i !== 'string' || r.i === '' || typeof r.s !== 'number' || !Number.isInteger(r.s)) return undefined;
  return {
    id: r.i,
    seq: r.s,
    station: typeof r.st === 'string' ? r.st : '',
    trigger: (typeof r.tk === 'string' && TRIGGER_KINDS.includes(r.tk) ? r.tk : 'freerun') as TriggerKind,
    triggeredAt: typeof r.at === 'string' ? r.at : new Date(0).toISOString(),
    boot: typeof r.b === 'string' && r.b !== '' ? r.b : bootOfPartId(r.i),
  };
}

const entryRecord = (e: JournalEntry): object => ({ k: 't', i: e.id, s: e.seq, st: e.station, tk: e.trigger, at: e.triggeredAt, b: e.boot });

interface Loaded extends JournalSummary {
  open: Map<string, JournalEntry>;
  bootMax: Map<string, number>;
  gens: number[];
}

function load(dir: string): Loaded {
  const gens = readdirSync(dir)
    .map((f) => FILE.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
  const open = new Map<string, JournalEntry>();
  const bootMax = new Map<string, number>();
  const bump = (boot: string, seq: number): void => {
    bootMax.set(boot, Math.max(bootMax.get(boot) ?? 0, seq));
  };
  let torn = 0;
  let corrupt = 0;
  for (const gen of gens) {
    const data = readFileSync(join(dir, fileName(gen)));
    // Records end where the preallocated zeros begin.
    const zero = data.indexOf(0);
    const used = zero === -1 ? data.length : zero;
    let off = 0;
    while (off < used) {
      const nl = data.indexOf(0x0a, off);
      const end = nl === -1 || nl >= used ? used : nl;
      const rec = end === used ? undefined : parseLine(data.subarray(off, end));
      if (!rec) {
        // The last line of a file cut short is a write the power took; one before it is damage.
        if (end === used || end === used - 1) torn++;
        else corrupt++;
        off = end + 1;
        continue;
      }
      if (rec.k === 'h' && rec.boots !== null && typeof rec.boots === 'object' && !Array.isArray(rec.boots)) {
        for (const [b, s] of Object.entries(rec.boots as Record<string, unknown>)) if (typeof s === 'number' && Number.isFinite(s)) bump(b, s);
      } else if (rec.k === 't') {
        const e = entryOf(rec);
        if (e) {
          // The same part twice (a compaction copy next to its original) is one part.
          if (!open.has(e.id)) open.set(e.id, e);
          bump(e.boot, e.seq);
        }
      } else if (rec.k === 'd' && typeof rec.i === 'string') {
        open.delete(rec.i);
      }
      off = end + 1;
    }
  }
  return {
    open,
    bootMax,
    gens,
    boots: [...bootMax].map(([boot, maxSeq]) => ({ boot, maxSeq })),
    undecided: [...open.values()],
    files: gens.map(fileName),
    torn,
    corrupt,
  };
}

/** Read a journal folder without changing it (diagnostics, the fault script). */
export function readJournal(dir: string): JournalSummary {
  const { boots, undecided, files, torn, corrupt } = load(dir);
  return { boots, undecided, files, torn, corrupt };
}

/** A part found open at start, as the fail-safe result the central system receives for it. */
export function crashPart(e: JournalEntry): Part {
  return {
    id: e.id,
    station: e.station,
    seq: e.seq,
    trigger: e.trigger,
    triggeredAt: e.triggeredAt,
    // Monotonic times from another boot mean nothing here: only the trigger anchor, so every
    // stage and latency in the message is null.
    t: { triggerNs: 0n },
    action: 'divert',
    failSafe: true,
    reason: 'crash',
    detail:
      `the agent stopped (killed, crashed or lost power) during boot ${e.boot} with this part in flight; ` +
      'no result was recorded for it and it may have passed the gate without a verdict: re-inspect it',
  };
}

interface Waiter {
  gen: number;
  resolve: (durable: boolean) => void;
}

export class TriggerJournal {
  private readonly log: Logger;
  private readonly compactAfter: number;
  private readonly bootsKept: number;
  private readonly wallMs: () => number;
  private fd: number | undefined;
  /** Next write offset in the current file, and its preallocated size. */
  private pos = 0;
  private size = 0;
  private gen = 0;
  private recordsInFile = 0;
  private readonly live = new Map<string, JournalEntry>();
  private readonly bootMax = new Map<string, number>();
  private recovered: JournalEntry[] = [];
  /** Bumped on every write; a sync started after write N covers it. */
  private writtenGen = 0;
  private syncedGen = 0;
  private waiters: Waiter[] = [];
  private syncing: Promise<void> | undefined;
  /** Old files, deleted once the file that replaced them is synced with its directory entry. */
  private retired: { fd: number; path: string; gen: number }[] = [];
  private dirSyncGen = 0;
  private failing = false;
  private closed = false;
  private opened = false;
  private readonly counts = { triggered: 0, decided: 0, torn: 0, corrupt: 0, syncs: 0, syncMsMax: 0, compactions: 0, writeErrors: 0, syncErrors: 0, unknownDecided: 0 };

  constructor(
    readonly dir: string,
    private readonly opts: JournalOptions,
  ) {
    this.log = opts.log ?? silentLogger;
    this.compactAfter = Math.max(16, opts.compactAfter ?? 8192);
    this.bootsKept = Math.max(1, opts.bootsKept ?? 64);
    this.wallMs = opts.wallMs ?? Date.now;
  }

  /**
   * Read what earlier runs left, then start this run's file holding the parts still open (synced
   * before the old files go). Throws when the folder cannot be read or written: the agent then
   * runs without a journal and says so.
   */
  async open(): Promise<void> {
    if (this.opened) throw new Error('TriggerJournal.open() called twice');
    this.opened = true;
    mkdirSync(this.dir, { recursive: true });
    const loaded = load(this.dir);
    this.counts.torn = loaded.torn;
    this.counts.corrupt = loaded.corrupt;
    for (const [b, s] of loaded.bootMax) this.bootMax.set(b, s);
    const { bootId } = this.opts;
    if ((this.bootMax.get(bootId) ?? 0) > 0) {
      // The boot counter went back (it was not on disk when the power went): part ids repeat.
      const msg = `boot id ${bootId} was already used by an earlier run (up to seq ${this.bootMax.get(bootId)}): part ids of this run repeat earlier ones; the boot counter in the state folder was not durable`;
      this.log.error(msg);
      this.opts.onError?.(msg, new Error(msg));
    }
    if (!this.bootMax.has(bootId)) this.bootMax.set(bootId, 0);
    for (const e of loaded.open.values()) this.live.set(e.id, e);
    this.recovered = [...loaded.open.values()];
    if (loaded.torn || loaded.corrupt) this.log.warn('journal: unreadable records skipped', { torn: loaded.torn, corrupt: loaded.corrupt });
    if (this.recovered.length > 0) {
      this.log.warn('journal: parts were in flight when the agent last stopped; they are reported as crash', {
        parts: this.recovered.length,
        boots: [...new Set(this.recovered.map((e) => e.boot))],
      });
    }
    this.gen = (loaded.gens.at(-1) ?? 0) + 1;
    const path = join(this.dir, fileName(this.gen));
    const fd = openSync(path, 'wx');
    try {
      const first = Buffer.concat([this.header(), ...this.recovered.map((e) => frameLine(entryRecord(e)))]);
      this.size = this.startFile(fd, first);
      this.pos = first.length;
      await fdatasyncP(fd);
      await this.syncDir();
    } catch (err) {
      closeSync(fd);
      unlinkSync(path);
      throw err;
    }
    this.fd = fd;
    this.recordsInFile = 1 + this.recovered.length;
    // The new file holds everything still open: the old ones can go.
    for (const gen of loaded.gens) {
      try {
        unlinkSync(join(this.dir, fileName(gen)));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn('journal: old file not removed', { file: fileName(gen), err: (err as Error).message });
      }
    }
  }

  /**
   * Parts triggered in an earlier run and never decided, as 'crash' fail-safe diverts.
   * `delivered(id)` says whether the outbox already holds a part's result: a kill between the
   * outbox's write and its fsync leaves the record in the page cache (so it is replayed) while
   * decided() never ran. Such parts are crossed off here, not reported twice.
   */
  recover(delivered?: (partId: string) => boolean): Part[] {
    const out: Part[] = [];
    for (const e of this.recovered) {
      if (!this.live.has(e.id)) continue;
      if (delivered?.(e.id)) this.decided(e.id);
      else out.push(crashPart(e));
    }
    return out;
  }

  /**
   * Record a triggered part. The record survives a kill once this returns (page cache) and a power
   * cut once the promise resolves true (fdatasync). Resolves false when it could not be written or
   * synced (reported through onError): the line goes on without the guarantee rather than stop.
   */
  triggered(part: Part): Promise<boolean> {
    if (this.fd === undefined || this.closed) return Promise.resolve(false);
    const e: JournalEntry = {
      id: part.id,
      seq: part.seq,
      station: part.station,
      trigger: part.trigger,
      triggeredAt: part.triggeredAt,
      boot: this.opts.bootId,
    };
    if (!this.append(frameLine(entryRecord(e)))) return Promise.resolve(false);
    this.counts.triggered++;
    this.live.set(e.id, e);
    this.bootMax.set(e.boot, Math.max(this.bootMax.get(e.boot) ?? 0, e.seq));
    const gen = this.writtenGen;
    if (this.syncedGen >= gen) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      this.waiters.push({ gen, resolve });
      this.kickSync();
    });
  }

  /** Cross a part off: call once its result is durable in the outbox (not synced, see the top). */
  decided(partId: string): void {
    if (!this.live.has(partId)) {
      this.counts.unknownDecided++;
      return;
    }
    this.live.delete(partId);
    if (this.fd === undefined || this.closed) return;
    if (!this.append(frameLine({ k: 'd', i: partId }))) return;
    this.counts.decided++;
    if (this.recordsInFile >= this.compactAfter && this.live.size * 4 <= this.recordsInFile) this.roll();
  }

  /** Parts triggered and not decided now. */
  openParts(): JournalEntry[] {
    return [...this.live.values()];
  }

  stats(): JournalStats {
    return { ...this.counts, open: this.live.size, recovered: this.recovered.length };
  }

  /** Wait until every record written so far is synced and old files are gone. */
  async flush(): Promise<void> {
    if (this.fd === undefined) return;
    if (this.syncedGen < this.writtenGen || this.retired.length > 0) {
      await new Promise<boolean>((resolve) => {
        this.waiters.push({ gen: this.writtenGen, resolve });
        this.kickSync();
      });
    }
    while (this.syncing) await this.syncing;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush().catch(() => {});
    this.closed = true;
    const fd = this.fd;
    this.fd = undefined;
    if (fd !== undefined) await closeP(fd).catch(() => {});
  }

  // ---- writing ---------------------------------------------------------------------------------

  private header(): Buffer {
    // Newest boots last; keep the most recent ones (the current boot always among them).
    const boots = [...this.bootMax].slice(-this.bootsKept);
    return frameLine({ k: 'h', v: 1, b: this.opts.bootId, at: new Date(this.wallMs()).toISOString(), boots: Object.fromEntries(boots) });
  }

  private writeAll(fd: number, buf: Buffer, at: number): void {
    let done = 0;
    while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done, at + done);
  }

  /** A new file: its first records, then zeros up to a whole number of chunks. Returns its size. */
  private startFile(fd: number, first: Buffer): number {
    const size = Math.ceil((first.length + 1) / CHUNK) * CHUNK;
    this.writeAll(fd, Buffer.concat([first, Buffer.alloc(size - first.length)]), 0);
    return size;
  }

  private append(line: Buffer): boolean {
    try {
      // Out of preallocated room: one more chunk (one sync per chunk changes the file size).
      if (this.pos + line.length >= this.size) {
        const grow = Math.ceil((this.pos + line.length + 1 - this.size) / CHUNK) * CHUNK;
        this.writeAll(this.fd!, Buffer.alloc(grow), this.size);
        this.size += grow;
      }
      this.writeAll(this.fd!, line, this.pos);
      this.pos += line.length;
    } catch (err) {
      this.counts.writeErrors++;
      this.fail('journal write failed: parts in flight if the agent dies now are not reported after the restart', err as Error);
      return false;
    }
    this.recordsInFile++;
    this.writtenGen++;
    this.clearFailure();
    return true;
  }

  private fail(message: string, err: Error): void {
    if (this.failing) return;
    this.failing = true;
    this.log.error(message, { err: err.message, dir: this.dir });
    this.opts.onError?.(`${message} (${err.message})`, err);
  }

  private clearFailure(): void {
    if (!this.failing) return;
    this.failing = false;
    this.log.info('journal writes work again', { dir: this.dir });
  }

  /** Compaction: this run's file is replaced by one holding only the parts still open. */
  private roll(): void {
    const old = { fd: this.fd!, path: join(this.dir, fileName(this.gen)) };
    const gen = this.gen + 1;
    const path = join(this.dir, fileName(gen));
    let fd: number | undefined;
    let first: Buffer;
    let size: number;
    try {
      fd = openSync(path, 'wx');
      first = Buffer.concat([this.header(), ...[...this.live.values()].map((e) => frameLine(entryRecord(e)))]);
      size = this.startFile(fd, first);
    } catch (err) {
      // Keep appending to the old file; the next decided() tries again.
      if (fd !== undefined) {
        closeSync(fd);
        try {
          unlinkSync(path);
        } catch {
          /* nothing to remove */
        }
      }
      this.log.warn('journal: compaction failed, the file keeps growing', { err: (err as Error).message });
      return;
    }
    this.fd = fd;
    this.pos = first.length;
    this.size = size;
    this.gen = gen;
    this.recordsInFile = 1 + this.live.size;
    this.writtenGen++;
    this.retired.push({ ...old, gen: this.writtenGen });
    this.dirSyncGen = this.writtenGen;
    this.counts.compactions++;
    this.kickSync();
  }

  // ---- syncing (group commit, off the event loop) -------------------------------------------

  private kickSync(): void {
    if (this.syncing) return;
    this.syncing = this.syncLoop().finally(() => {
      this.syncing = undefined;
      // Only waiters restart it: a disk whose syncs keep failing must not spin on retired files.
      if (this.fd !== undefined && this.waiters.length > 0) this.kickSync();
    });
  }

  private async syncLoop(): Promise<void> {
    // Any waiter keeps it going, even one an earlier sync already covers (it joined late): one
    // more sync is cheaper than a waiter that is never woken.
    while (this.fd !== undefined && (this.waiters.length > 0 || this.retired.length > 0)) {
      // Everything written up to now is in this fd's file (a roll copies the open parts over).
      const target = this.writtenGen;
      const fd = this.fd;
      const started = process.hrtime.bigint();
      try {
        await fdatasyncP(fd);
        this.counts.syncs++;
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        this.counts.syncMsMax = Math.max(this.counts.syncMsMax, ms);
        if (ms > 100) this.log.warn('journal: slow disk sync: parts wait for it before their inference', { ms: Math.round(ms), dir: this.dir });
        if (this.dirSyncGen > 0 && this.dirSyncGen <= target) {
          await this.syncDir();
          this.dirSyncGen = 0;
        }
      } catch (err) {
        this.counts.syncErrors++;
        this.fail('journal sync failed: triggered parts may not survive a power cut', err as Error);
        const failed = this.waiters.filter((w) => w.gen <= target);
        this.waiters = this.waiters.filter((w) => w.gen > target);
        for (const w of failed) w.resolve(false);
        return;
      }
      this.syncedGen = Math.max(this.syncedGen, target);
      const done = this.waiters.filter((w) => w.gen <= target);
      this.waiters = this.waiters.filter((w) => w.gen > target);
      for (const w of done) w.resolve(true);
      if (this.dirSyncGen === 0) {
        for (const r of this.retired.filter((x) => x.gen <= target)) {
          await closeP(r.fd).catch(() => {});
          try {
            unlinkSync(r.path);
          } catch {
            /* already gone */
          }
        }
        this.retired = this.retired.filter((x) => x.gen > target);
      }
    }
  }

  // A new file's directory entry must be durable too, or a power cut could lose the whole file.
  private async syncDir(): Promise<void> {
    let d: number | undefined;
    try {
      d = openSync(this.dir, 'r');
      await fsyncP(d);
    } catch {
      // Some filesystems cannot fsync a directory; the file data sync still holds.
    } finally {
      if (d !== undefined) closeSync(d);
    }
  }
}
