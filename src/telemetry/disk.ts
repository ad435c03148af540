// Free space on the state partition. On a line-side box the agent shares one SD card or eMMC with
// the OS: a full disk stops journald, apt and the outbox alike, so optional writers (the reject
// archive) stop well before that, at a floor, and say so once.
import { statfs } from 'node:fs/promises';
import { silentLogger, type Logger } from '../log.js';

type StatFs = (path: string) => Promise<{ bavail: number | bigint; bsize: number | bigint }>;

/** Bytes available to the agent (an unprivileged user: the root reserve is not counted). */
export async function freeBytes(path: string, fsStat: StatFs = statfs as StatFs): Promise<number> {
  const s = await fsStat(path);
  return Number(s.bavail) * Number(s.bsize);
}

export interface DiskLow {
  path: string;
  /** Free bytes when the write was refused (-1: free space could not be read). */
  freeBytes: number;
  floorBytes: number;
  /** Size of the refused write. */
  neededBytes: number;
  message: string;
  error?: string;
}

export interface DiskGuardOptions {
  /** A path on the file system to watch (the folder written to). */
  path: string;
  /** Writes that would leave less than this free are refused. */
  floorBytes: number;
  /** Free space must climb this far above the floor before a new low raises a new alarm (default max(floor/20, 16 MiB)). */
  hysteresisBytes?: number;
  /** The first refusal of a low-space episode. */
  onAlarm?: (low: DiskLow) => void;
  /** Space is back above floor + hysteresis after an alarm. */
  onClear?: (freeBytes: number) => void;
  log?: Logger;
  /** statfs, replaceable in tests. */
  statfs?: StatFs;
}

export interface DiskGuardStats {
  path: string;
  floorBytes: number;
  /** Free bytes at the last check (undefined before the first). */
  freeBytes?: number;
  /** In a low-space episode (alarm raised, not yet cleared). */
  low: boolean;
  allowed: number;
  refused: number;
  alarms: number;
}

export class DiskGuard {
  private readonly log: Logger;
  private readonly hysteresis: number;
  private low = false;
  private last: number | undefined;
  private readonly counts = { allowed: 0, refused: 0, alarms: 0 };

  constructor(private readonly opts: DiskGuardOptions) {
    if (!(opts.floorBytes >= 0)) throw new RangeError(`DiskGuard floorBytes must be >= 0 (got ${opts.floorBytes})`);
    this.log = opts.log ?? silentLogger;
    this.hysteresis = opts.hysteresisBytes ?? Math.max(opts.floorBytes / 20, 16 * 1024 * 1024);
  }

  /**
   * May `bytes` be written now? Reads the free space (one statfs) and refuses when the write would
   * leave less than the floor. When free space cannot be read, refuses: an optional writer never
   * risks filling the disk blind.
   */
  async allow(bytes: number): Promise<boolean> {
    const { path, floorBytes } = this.opts;
    let free: number;
    try {
      free = await freeBytes(path, this.opts.statfs);
    } catch (err) {
      this.refuse({ path, freeBytes: -1, floorBytes, neededBytes: bytes, message: `cannot read free space of ${path}: ${(err as Error).message}`, error: (err as Error).message });
      return false;
    }
    this.last = free;
    if (free - bytes < floorBytes) {
      this.refuse({
        path,
        freeBytes: free,
        floorBytes,
        neededBytes: bytes,
        message: `disk almost full: ${mib(free)} free on ${path}, floor ${mib(floorBytes)}: archive writes are suspended until space is freed`,
      });
      return false;
    }
    this.counts.allowed++;
    if (this.low && free - bytes >= floorBytes + this.hysteresis) {
      this.low = false;
      this.log.info('disk space back above the floor', { path, freeBytes: free, floorBytes });
      this.opts.onClear?.(free);
    }
    return true;
  }

  private refuse(low: DiskLow): void {
    this.counts.refused++;
    if (this.low) return;
    // Once per episode: a line making parts every 100 ms must not raise an alarm every 100 ms.
    this.low = true;
    this.counts.alarms++;
    this.log.error(low.message, { path: low.path, freeBytes: low.freeBytes, floorBytes: low.floorBytes });
    try {
      this.opts.onAlarm?.(low);
    } catch (err) {
      this.log.error('disk alarm callback threw', { err: (err as Error).message });
    }
  }

  stats(): DiskGuardStats {
    return { path: this.opts.path, floorBytes: this.opts.floorBytes, freeBytes: this.last, low: this.low, ...this.counts };
  }
}

function mib(n: number): string {
  return `${(n / (1024 * 1024)).toFixed(n < 10 * 1024 * 1024 ? 1 : 0)} MiB`;
}
