// A durable on-disk outbox: nothing the line produces is lost to a broker outage, a crash or a
// power cut. Append-only segment files of JSON lines, each prefixed with its CRC-32, so a torn
// last line (power lost mid-write) is detected and dropped instead of poisoning the file.
//
//   000000000001.seg:  "<crc32 hex> {"k":"p","s":1,"i":"<id>","t":"<topic>",...,"p":<payload>}\n"
//                      "<crc32 hex> {"k":"a","s":[1]}\n"            ack (PUBACK received)
//                      "<crc32 hex> {"k":"d","s":[2],"w":"bytes"}\n" dropped (bounds), counted
//
// put() resolves once its line is fsync'ed (concurrent puts share one fsync). Acks and drops are
// not fsync'ed: losing one in a crash only re-publishes a record, which consumers dedup by id.
// A segment is deleted once it and every older segment hold no unacked record (acks of older
// records live in newer segments, so only a prefix may go). Bounded by bytes and age: above the
// high-water mark onHighWater fires; at the limit the oldest records are dropped and reported.
import { randomUUID } from 'node:crypto';
import { mkdir, open, readdir, readFile, truncate, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Clock } from '../clock.js';
import { silentLogger, type Logger } from '../log.js';

/** The bounds when none are given (the config's mqtt.outbox defaults are the same). */
export const OUTBOX_DEFAULTS = { maxBytes: 256 * 1024 * 1024, maxAgeMs: 7 * 24 * 3600 * 1000, highWater: 0.8 } as const;

export interface OutboxOptions {
  /** Bytes of unacked records kept at most (default 256 MiB); beyond it the oldest are dropped. */
  maxBytes?: number;
  /** Records older than this (wall clock) are dropped (default 7 days). */
  maxAgeMs?: number;
  /** Fraction of maxBytes at which onHighWater fires (default 0.8); re-armed below 3/4 of it. */
  highWater?: number;
  /** A new segment file is started when the current one reaches this size (default 4 MiB). */
  segmentBytes?: number;
  /** Wall clock for record ages (default Date.now). */
  clock?: Pick<Clock, 'wallMs'>;
  log?: Logger;
  onHighWater?: (level: OutboxLevel) => void;
  onDrop?: (loss: OutboxLoss) => void;
}

export interface OutboxLevel {
  bytes: number;
  maxBytes: number;
  records: number;
}

export interface OutboxLoss {
  reason: 'bytes' | 'age' | 'rejected';
  count: number;
  bytes: number;
  /** Ids of the dropped records (the first 20). */
  ids: string[];
  /** Records dropped since open, all reasons. */
  totalDropped: number;
  detail?: string;
}

export interface OutboxRecord {
  readonly seq: number;
  /** Stable id (the part id for inspections): the consumers' dedup key. */
  readonly id: string;
  readonly topic: string;
  readonly payload: unknown;
  readonly qos: 0 | 1;
  readonly retain: boolean;
  /** Size of its line on disk. */
  readonly bytes: number;
  readonly putAtMs: number;
  /** Loaded from disk at open: it may have been published before the restart. */
  readonly recovered: boolean;
  /** Times it was handed to the broker connection in this process (the publisher counts). */
  attempts: number;
}

export interface OutboxStats {
  records: number;
  bytes: number;
  maxBytes: number;
  segments: number;
  put: number;
  acked: number;
  dropped: number;
  droppedBytes: number;
  recovered: number;
  /** Torn last lines cut off at open (power lost mid-write: those puts never returned). */
  torn: number;
  /** Lines with a bad CRC before the end of a file: records lost to disk corruption. */
  corrupt: number;
  highWater: boolean;
}

/** put() with evict: false found no room. */
export class OutboxFullError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OutboxFullError';
  }
}

interface Rec extends OutboxRecord {
  segment: number;
}

interface Pending {
  line: Buffer;
  durable: boolean;
  written?: () => void;
  resolve: () => void;
  reject: (e: Error) => void;
}

const SEG = /^(\d{12})\.seg$/;
const segName = (n: number): string => `${String(n).padStart(12, '0')}.seg`;

// CRC-32 (IEEE), table-driven: zlib.crc32 only exists from Node 20.15.
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
export function crc32(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function frameLine(json: string): Buffer {
  const body = Buffer.from(json, 'utf8');
  return Buffer.concat([Buffer.from(crc32(body).toString(16).padStart(8, '0') + ' ', 'ascii'), body, Buffer.from('\n')]);
}

/** The JSON of a framed line, or undefined when its CRC or shape is wrong. */
function readLine(line: Buffer): Record<string, unknown> | undefined {
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

export class Outbox {
  private readonly maxBytes: number;
  private readonly maxAgeMs: number;
  private readonly highWaterBytes: number;
  private readonly segmentBytes: number;
  private readonly clock: Pick<Clock, 'wallMs'>;
  private readonly log: Logger;

  /** Unacked records by seq; insertion order is seq order. */
  private readonly index = new Map<number, Rec>();
  /** Unacked records per segment, in segment order. */
  private readonly live = new Map<number, number>();
  private nextSeq = 1;
  private active = 0;
  private activeSize = 0;
  private fd: FileHandle | undefined;
  private queue: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private compacting: Promise<void> = Promise.resolve();
  private closed = false;
  private bytes = 0;
  private hwActive = false;
  private counts = { put: 0, acked: 0, dropped: 0, droppedBytes: 0, recovered: 0, torn: 0, corrupt: 0 };

  private constructor(
    readonly dir: string,
    private readonly opts: OutboxOptions,
  ) {
    this.maxBytes = opts.maxBytes ?? OUTBOX_DEFAULTS.maxBytes;
    this.maxAgeMs = opts.maxAgeMs ?? OUTBOX_DEFAULTS.maxAgeMs;
    this.highWaterBytes = this.maxBytes * (opts.highWater ?? OUTBOX_DEFAULTS.highWater);
    this.segmentBytes = opts.segmentBytes ?? 4 * 1024 * 1024;
    this.clock = opts.clock ?? { wallMs: () => Date.now() };
    this.log = opts.log ?? silentLogger;
  }

  /** Open (or create) the outbox in `dir`, recovering every unacked record in order. */
  static async open(dir: string, opts: OutboxOptions = {}): Promise<Outbox> {
    const ob = new Outbox(dir, opts);
    await ob.load();
    return ob;
  }

  private async load(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const segs = (await readdir(this.dir))
      .map((f) => SEG.exec(f))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    let maxSeq = 0;
    for (const seg of segs) {
      const path = join(this.dir, segName(seg));
      const data = await readFile(path);
      this.live.set(seg, 0);
      let off = 0;
      while (off < data.length) {
        const nl = data.indexOf(0x0a, off);
        const last = nl === -1 || nl === data.length - 1;
        const rec = nl === -1 ? undefined : readLine(data.subarray(off, nl));
        if (!rec) {
          if (last) {
            // An unfinished or garbled final line is a write cut short: its put never returned.
            this.counts.torn++;
            this.log.warn('outbox: torn last record dropped', { file: path, offset: off, bytes: data.length - off });
            await truncate(path, off);
            break;
          }
          this.counts.corrupt++;
          this.log.error('outbox: corrupt record skipped (bad CRC)', { file: path, offset: off });
          off = nl + 1;
          continue;
        }
        this.apply(rec, seg, nl + 1 - off);
        if (typeof rec.s === 'number') maxSeq = Math.max(maxSeq, rec.s);
        off = nl + 1;
      }
    }
    this.nextSeq = maxSeq + 1;
    this.counts.recovered = this.index.size;
    if (this.index.size > 0) this.log.info('outbox: recovered unacked records', { records: this.index.size, bytes: this.bytes });
    // Never append to a file whose tail we just repaired: start a fresh segment.
    await this.openSegment((segs.at(-1) ?? 0) + 1);
    this.compactSoon();
  }

  private apply(r: Record<string, unknown>, seg: number, bytes: number): void {
    if (r.k === 'p' && typeof r.s === 'number' && typeof r.i === 'string' && typeof r.t === 'string') {
      if (this.index.has(r.s)) return;
      this.index.set(r.s, {
        seq: r.s,
        id: r.i,
        topic: r.t,
        payload: r.p,
        qos: r.q === 0 ? 0 : 1,
        retain: r.r === true,
        bytes,
        putAtMs: typeof r.a === 'number' ? r.a : 0,
        recovered: true,
        attempts: 0,
        segment: seg,
      });
      this.live.set(seg, (this.live.get(seg) ?? 0) + 1);
      this.bytes += bytes;
    } else if ((r.k === 'a' || r.k === 'd') && Array.isArray(r.s)) {
      for (const s of r.s) {
        const rec = typeof s === 'number' ? this.index.get(s) : undefined;
        if (rec) this.forget(rec);
      }
    }
  }

  private async openSegment(n: number): Promise<void> {
    this.fd = await open(join(this.dir, segName(n)), 'a');
    this.active = n;
    this.activeSize = 0;
    this.live.set(n, this.live.get(n) ?? 0);
    await this.syncDir();
  }

  // The new file's directory entry must be durable too, or a power cut could lose the file.
  private async syncDir(): Promise<void> {
    let d: FileHandle | undefined;
    try {
      d = await open(this.dir, 'r');
      await d.sync();
    } catch {
      // Some filesystems/platforms cannot fsync a directory; the data fsync still holds.
    } finally {
      await d?.close().catch(() => {});
    }
  }

  // ---- writing -------------------------------------------------------------------------------

  private enqueue(line: Buffer, durable: boolean, written?: () => void): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ line, durable, written, resolve, reject });
      this.kick();
    });
  }

  private kick(): void {
    if (this.flushing) return;
    this.flushing = this.flushLoop().finally(() => {
      this.flushing = undefined;
      if (this.queue.length > 0) this.kick();
    });
  }

  // Group commit: everything queued while the previous write+fsync ran goes out in one write.
  private async flushLoop(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0);
      const buf = Buffer.concat(batch.map((p) => p.line));
      try {
        if (this.activeSize > 0 && this.activeSize + buf.length > this.segmentBytes) await this.roll();
        const fd = this.fd!;
        let done = 0;
        while (done < buf.length) done += (await fd.write(buf, done, buf.length - done, null)).bytesWritten;
        if (batch.some((p) => p.durable)) await fd.datasync();
        this.activeSize += buf.length;
        for (const p of batch) p.written?.();
        for (const p of batch) p.resolve();
      } catch (e) {
        // Cut a partial write back off, so the next line does not start inside a broken one.
        await this.fd?.truncate(this.activeSize).catch(() => this.roll().catch(() => {}));
        for (const p of batch) p.reject(e as Error);
      }
    }
  }

  private async roll(): Promise<void> {
    const old = this.fd;
    this.fd = undefined;
    if (old) {
      await old.sync().catch(() => {});
      await old.close().catch(() => {});
    }
    await this.openSegment(this.active + 1);
    this.compactSoon();
  }

  // ---- the API -------------------------------------------------------------------------------

  /**
   * Append a record; resolves once it is on disk (fsync'ed). Records are published in put order.
   * `id` defaults to a random UUID. When full, the oldest records are dropped to make room, or
   * with `evict: false` the put rejects with OutboxFullError instead (the loss alarm uses that, so
   * reporting a loss never causes one). Rejects if the record alone exceeds maxBytes or the write fails.
   */
  async put(
    topic: string,
    payload: unknown,
    opts: { id?: string; qos?: 0 | 1; retain?: boolean; evict?: boolean } = {},
  ): Promise<OutboxRecord> {
    if (this.closed) throw new Error('outbox is closed');
    const seq = this.nextSeq++;
    const id = opts.id ?? randomUUID();
    const qos = opts.qos ?? 1;
    const retain = opts.retain ?? false;
    const putAtMs = this.clock.wallMs();
    const line = frameLine(JSON.stringify({ k: 'p', s: seq, i: id, t: topic, q: qos, r: retain, a: putAtMs, p: payload }));
    if (line.length > this.maxBytes) {
      throw new RangeError(`outbox record ${id} is ${line.length} bytes, more than the whole outbox (maxBytes ${this.maxBytes})`);
    }
    this.prune();
    if (opts.evict === false && this.bytes + line.length > this.maxBytes) {
      throw new OutboxFullError(`outbox full (${this.bytes} of ${this.maxBytes} bytes): record ${id} not added`);
    }
    this.makeRoom(line.length);
    const rec: Rec = { seq, id, topic, payload, qos, retain, bytes: line.length, putAtMs, recovered: false, attempts: 0, segment: 0 };
    this.bytes += line.length; // reserved now, so concurrent puts see each other against the bound
    try {
      await this.enqueue(line, true, () => {
        // Runs in write order, so the index stays in seq order.
        rec.segment = this.active;
        this.live.set(this.active, (this.live.get(this.active) ?? 0) + 1);
        this.index.set(seq, rec);
      });
    } catch (e) {
      this.bytes -= line.length;
      throw e;
    }
    this.counts.put++;
    this.checkLevel();
    return rec;
  }

  /** Unacked records in order (the publisher sends from here). */
  pending(): IterableIterator<OutboxRecord> {
    return this.index.values();
  }

  get size(): number {
    return this.index.size;
  }

  /** The broker has the record (PUBACK): forget it. Returns false if it was not pending. */
  ack(seq: number): boolean {
    const rec = this.index.get(seq);
    if (!rec || this.closed) return false;
    this.forget(rec);
    this.counts.acked++;
    this.enqueue(frameLine(JSON.stringify({ k: 'a', s: [seq] })), false).catch((e) =>
      this.log.warn('outbox: ack not written (record will be re-published after a restart)', { error: e }),
    );
    this.checkLevel();
    this.compactSoon();
    return true;
  }

  /** The broker refused the record for good (e.g. MQTT 5 not authorized): drop it, counted. */
  reject(seq: number, detail: string): boolean {
    const rec = this.index.get(seq);
    if (!rec || this.closed) return false;
    this.dropRecords([rec], 'rejected', detail);
    return true;
  }

  /** Drop records older than maxAgeMs; returns how many. Called by put() and periodically. */
  prune(): number {
    const now = this.clock.wallMs();
    const old: Rec[] = [];
    for (const rec of this.index.values()) {
      if (now - rec.putAtMs <= this.maxAgeMs) break;
      old.push(rec);
    }
    if (old.length > 0) this.dropRecords(old, 'age');
    return old.length;
  }

  private makeRoom(incoming: number): void {
    const victims: Rec[] = [];
    let bytes = this.bytes;
    for (const rec of this.index.values()) {
      if (bytes + incoming <= this.maxBytes) break;
      victims.push(rec);
      bytes -= rec.bytes;
    }
    if (victims.length > 0) this.dropRecords(victims, 'bytes');
  }

  private dropRecords(recs: Rec[], reason: OutboxLoss['reason'], detail?: string): void {
    let bytes = 0;
    for (const r of recs) {
      this.forget(r);
      bytes += r.bytes;
    }
    this.counts.dropped += recs.length;
    this.counts.droppedBytes += bytes;
    const loss: OutboxLoss = {
      reason,
      count: recs.length,
      bytes,
      ids: recs.slice(0, 20).map((r) => r.id),
      totalDropped: this.counts.dropped,
      ...(detail !== undefined ? { detail } : {}),
    };
    this.log.error('outbox: records dropped', { ...loss });
    this.enqueue(frameLine(JSON.stringify({ k: 'd', s: recs.map((r) => r.seq), w: reason })), false).catch(() => {});
    this.checkLevel();
    this.compactSoon();
    // Deferred: the callback may put() an alarm, which must not re-enter this drop.
    const cb = this.opts.onDrop;
    if (cb) queueMicrotask(() => guard(() => cb(loss), this.log));
  }

  private forget(rec: Rec): void {
    if (!this.index.delete(rec.seq)) return;
    this.bytes -= rec.bytes;
    const live = this.live.get(rec.segment);
    if (live !== undefined) this.live.set(rec.segment, live - 1);
  }

  private checkLevel(): void {
    if (!this.hwActive && this.bytes >= this.highWaterBytes) {
      this.hwActive = true;
      const level = this.level();
      this.log.warn('outbox: above high-water mark', { ...level });
      const cb = this.opts.onHighWater;
      if (cb) queueMicrotask(() => guard(() => cb(level), this.log));
    } else if (this.hwActive && this.bytes < this.highWaterBytes * 0.75) {
      this.hwActive = false;
      this.log.info('outbox: back below high-water mark', { ...this.level() });
    }
  }

  level(): OutboxLevel {
    return { bytes: this.bytes, maxBytes: this.maxBytes, records: this.index.size };
  }

  private compactSoon(): void {
    this.compacting = this.compacting.then(() => this.compact()).catch((e) => this.log.warn('outbox: compaction failed', { error: e }));
  }

  private async compact(): Promise<void> {
    for (const [seg, live] of [...this.live]) {
      if (seg >= this.active || live > 0) break;
      this.live.delete(seg);
      await unlink(join(this.dir, segName(seg))).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOENT') throw e;
      });
    }
  }

  stats(): OutboxStats {
    return { records: this.index.size, bytes: this.bytes, maxBytes: this.maxBytes, segments: this.live.size, ...this.counts, highWater: this.hwActive };
  }

  /** Wait until everything queued (acks too) is written, and old segments are deleted. */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    await this.compacting;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    this.closed = true;
    const fd = this.fd;
    this.fd = undefined;
    if (fd) {
      await fd.sync().catch(() => {});
      await fd.close();
    }
  }
}

function guard(fn: () => void, log: Logger): void {
  try {
    fn();
  } catch (e) {
    log.error('outbox: callback threw', { error: e });
  }
}
