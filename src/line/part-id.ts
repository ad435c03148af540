// Part ids must be unique across restarts (the central system dedups on them): station, a boot
// counter persisted in the state folder, and a sequence number within this boot.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
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
    writeFileSync(file + '.tmp', String(n));
    renameSync(file + '.tmp', file);
    return `b${n}`;
  } catch {
    // A read-only state folder must not stop the line: a random boot id is still unique.
    return `r${randomBytes(4).toString('hex')}`;
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
