// Part ids must be unique across restarts (the central system dedups on them): station, a boot
// counter persisted in the state folder, and a sequence number within this boot.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

export function nextBootId(stateDir: string): string {
  const file = join(stateDir, 'boot-counter');
  try {
    mkdirSync(stateDir, { recursive: true });
    let n = 0;
    try {
      n = Number.parseInt(readFileSync(file, 'utf8').trim(), 10) || 0;
    } catch {
      /* first boot */
    }
    n += 1;
    // Durable before any part id uses it: after a power cut the counter must not go back, or
    // part ids of this boot would repeat. Temp file, fsync, rename, fsync the folder.
    const tmp = file + '.tmp';
    const fd = openSync(tmp, 'w');
    try {
      writeSync(fd, String(n));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
    syncDir(stateDir);
    return `b${n}`;
  } catch {
    // A read-only state folder must not stop the line: a random boot id is still unique.
    return `r${randomBytes(4).toString('hex')}`;
  }
}

function syncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some filesystems cannot fsync a directory; the file's own fsync still holds.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

export class PartIds {
  private seq = 0;
  constructor(
    readonly station: string,
    readonly bootId: string,
  ) {}
  next(): { id: string; seq: number } {
    this.seq += 1;
    return { id: `${this.station}-${this.bootId}-${String(this.seq).padStart(6, '0')}`, seq: this.seq };
  }
}
