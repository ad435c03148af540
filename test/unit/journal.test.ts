// The trigger journal against the real file system: crashes are simulated by opening the folder
// again without closing (and once by SIGKILLing a real child process), power cuts by cutting or
// damaging the file's bytes the way a lost write leaves them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Value } from '@sinclair/typebox/value';
import { TriggerJournal, bootOfPartId, readJournal } from '../../src/line/journal.js';
import { inspectionPayload } from '../../src/publish/payload.js';
import { InspectionMessageSchema } from '../../src/publish/schemas.js';
import type { Part, TriggerKind } from '../../src/part.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'linesight-journal-'));
const files = (dir: string): string[] => readdirSync(dir).filter((f) => f.endsWith('.log')).sort();
const text = (dir: string): string => files(dir).map((f) => readFileSync(join(dir, f), 'utf8')).join('');
/** The records of a journal file: it is preallocated with zeros, the records end at the first. */
const used = (file: string): Buffer => {
  const b = readFileSync(file);
  const z = b.indexOf(0);
  return z === -1 ? b : b.subarray(0, z);
};

function part(boot: string, seq: number, trigger: TriggerKind = 'gpio', station = 'st-1'): Part {
  return {
    id: `${station}-${boot}-${String(seq).padStart(6, '0')}`,
    station,
    seq,
    trigger,
    triggeredAt: new Date(Date.UTC(2026, 0, 1, 8, 0, seq)).toISOString(),
    t: { triggerNs: BigInt(seq) * 1_000_000n },
    failSafe: false,
  };
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = tmp();
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('a triggered part is in the file when triggered() returns; a re-open without close (a crash) reports the undecided ones as crash', async () => {
  await withDir(async (dir) => {
    const a = new TriggerJournal(dir, { bootId: 'b1' });
    await a.open();
    assert.deepEqual(a.recover(), [], 'a fresh journal has nothing to recover');
    const parts = [1, 2, 3, 4, 5].map((s) => part('b1', s, s === 3 ? 'command' : 'gpio'));
    for (const p of parts) {
      const durable = a.triggered(p);
      // Written (page cache) before the caller goes on: a SIGKILL from here on cannot lose it.
      assert.ok(text(dir).includes(`"i":"${p.id}"`), `${p.id} is in the file when triggered() returns`);
      assert.equal(await durable, true, 'synced');
    }
    a.decided(parts[0]!.id);
    a.decided(parts[3]!.id);
    // No close(): the process "dies" here. The next boot opens the same folder.
    const b = new TriggerJournal(dir, { bootId: 'b2' });
    await b.open();
    const rec = b.recover();
    assert.deepEqual(rec.map((p) => p.id), [parts[1]!.id, parts[2]!.id, parts[4]!.id], 'undecided parts, in trigger order');
    for (const p of rec) {
      const orig = parts.find((x) => x.id === p.id)!;
      assert.equal(p.action, 'divert');
      assert.equal(p.failSafe, true);
      assert.equal(p.reason, 'crash');
      assert.match(p.detail!, /boot b1/, 'the detail names the boot the part was in flight in');
      assert.equal(p.seq, orig.seq);
      assert.equal(p.station, 'st-1');
      assert.equal(p.trigger, orig.trigger);
      assert.equal(p.triggeredAt, orig.triggeredAt);
      assert.equal(p.verdict, undefined, 'no verdict is invented');
      // It goes through the normal publish path: it must make a valid inspection message.
      const msg = inspectionPayload(p, { line: 'line1' });
      assert.ok(Value.Check(InspectionMessageSchema, msg), JSON.stringify([...Value.Errors(InspectionMessageSchema, msg)].map((e) => `${e.path} ${e.message}`)));
      assert.equal(msg.action, 'divert');
      assert.equal(msg.reason, 'crash');
      assert.equal(msg.stagesMs.decided, null, 'monotonic times of another boot are not reported');
      assert.equal(msg.latencyMs.total, null);
    }
    assert.equal(b.stats().recovered, 3);
    assert.equal(b.stats().open, 3, 'recovered parts stay open until the agent has published them');
    await b.close();
    await a.close();
  });
});

test('a part whose result the outbox already holds is crossed off at recovery, not reported twice', async () => {
  await withDir(async (dir) => {
    const a = new TriggerJournal(dir, { bootId: 'b1' });
    await a.open();
    for (let s = 1; s <= 3; s++) await a.triggered(part('b1', s));
    // Killed after part 2's result reached the outbox file, before decided() ran.
    const b = new TriggerJournal(dir, { bootId: 'b2' });
    await b.open();
    const inOutbox = new Set(['st-1-b1-000002']);
    assert.deepEqual(b.recover((id) => inOutbox.has(id)).map((p) => p.seq), [1, 3]);
    assert.equal(b.stats().open, 2, 'part 2 is crossed off: its real result is replayed from the outbox');
    await b.close();
    const c = new TriggerJournal(dir, { bootId: 'b3' });
    await c.open();
    assert.deepEqual(c.recover().map((p) => p.seq), [1, 3]);
    await c.close();
    await a.close();
  });
});

test('recovered parts stay in the journal until decided: a second crash reports them again, naming their own boot', async () => {
  await withDir(async (dir) => {
    const a = new TriggerJournal(dir, { bootId: 'b1' });
    await a.open();
    await a.triggered(part('b1', 1));
    await a.triggered(part('b1', 2));
    // crash
    const b = new TriggerJournal(dir, { bootId: 'b2' });
    await b.open();
    assert.equal(b.recover().length, 2);
    await b.triggered(part('b2', 1));
    // crash again before the recovered parts were published (not decided)
    const c = new TriggerJournal(dir, { bootId: 'b3' });
    await c.open();
    const rec = c.recover();
    assert.deepEqual(rec.map((p) => p.id), ['st-1-b1-000001', 'st-1-b1-000002', 'st-1-b2-000001']);
    assert.match(rec[0]!.detail!, /boot b1/);
    assert.match(rec[2]!.detail!, /boot b2/);
    // Now they are published: crossed off, a clean restart recovers nothing.
    for (const p of rec) c.decided(p.id);
    await c.close();
    const d = new TriggerJournal(dir, { bootId: 'b4' });
    await d.open();
    assert.deepEqual(d.recover(), []);
    const summary = readJournal(dir);
    assert.deepEqual(summary.boots, [
      { boot: 'b1', maxSeq: 2 },
      { boot: 'b2', maxSeq: 1 },
      { boot: 'b3', maxSeq: 0 },
      { boot: 'b4', maxSeq: 0 },
    ]);
    assert.equal(files(dir).length, 1, 'older files are removed once the new one holds what is open');
    await d.close();
    for (const j of [a, b]) await j.close();
  });
});

test('a torn last record (power lost mid-write) is dropped; a damaged record in the middle is skipped and counted', async () => {
  await withDir(async (dir) => {
    const a = new TriggerJournal(dir, { bootId: 'b1' });
    await a.open();
    for (let s = 1; s <= 4; s++) await a.triggered(part('b1', s));
    a.decided('st-1-b1-000002');
    const file = join(dir, files(dir)[0]!);
    // Damage the record of seq 3 in place (a flipped byte): its CRC no longer matches.
    const bytes = readFileSync(file);
    const at = bytes.indexOf('"i":"st-1-b1-000003"');
    bytes[at + 10] = bytes[at + 10]! ^ 0x01;
    writeFileSync(file, bytes);
    // And a write cut short at the end of the records: half a line, no newline, zeros after it.
    const end = used(file).length;
    const torn = Buffer.from('1a2b3c4d {"k":"t","i":"st-1-b1-000005","s":5,"st":"st-1","tk":"gp');
    const damaged = readFileSync(file);
    torn.copy(damaged, end);
    writeFileSync(file, damaged);
    const b = new TriggerJournal(dir, { bootId: 'b2' });
    await b.open();
    assert.deepEqual(b.recover().map((p) => p.seq), [1, 4], 'seq 2 decided, 3 unreadable, 5 torn');
    assert.equal(b.stats().torn, 1);
    assert.equal(b.stats().corrupt, 1);
    // The new file is clean: the next start reads no torn record again.
    b.decided('st-1-b1-000001');
    await b.close();
    const c = new TriggerJournal(dir, { bootId: 'b3' });
    await c.open();
    assert.deepEqual(c.recover().map((p) => p.seq), [4]);
    assert.equal(c.stats().torn, 0);
    assert.equal(c.stats().corrupt, 0);
    await c.close();
    await a.close();
  });
});

test('a burst of triggers shares one sync (group commit), and every promise resolves durable', async () => {
  await withDir(async (dir) => {
    const j = new TriggerJournal(dir, { bootId: 'b1' });
    await j.open();
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => j.triggered(part('b1', i + 1))));
    assert.ok(results.every((r) => r === true));
    // The first record starts a sync; the other 49 are written while it runs and share the next.
    assert.ok(j.stats().syncs <= 2, `${j.stats().syncs} syncs for 50 parts`);
    assert.equal(j.stats().triggered, 50);
    await j.close();
  });
});

test('compaction: when most parts are decided the file is rewritten with the open ones only, and nothing is lost', async () => {
  await withDir(async (dir) => {
    const j = new TriggerJournal(dir, { bootId: 'b7', compactAfter: 40 });
    await j.open();
    const open: string[] = [];
    for (let s = 1; s <= 300; s++) {
      const p = part('b7', s);
      await j.triggered(p);
      // Every 50th part stays open (in flight); the rest are decided.
      if (s % 50 === 0) open.push(p.id);
      else j.decided(p.id);
    }
    await j.flush();
    assert.ok(j.stats().compactions >= 5, `${j.stats().compactions} compactions`);
    assert.equal(files(dir).length, 1, 'the replaced files are deleted');
    const records = used(join(dir, files(dir)[0]!)).toString('utf8').split('\n').filter(Boolean).length;
    assert.ok(records < 40, `the file holds ${records} records, not the 600 written`);
    assert.ok(statSync(join(dir, files(dir)[0]!)).size <= 256 * 1024, 'and one preallocated chunk');
    // A crash now: exactly the open parts come back, and the summary still knows seq 300.
    const k = new TriggerJournal(dir, { bootId: 'b8' });
    await k.open();
    assert.deepEqual(k.recover().map((p) => p.id), open);
    assert.deepEqual(readJournal(dir).boots.find((b) => b.boot === 'b7'), { boot: 'b7', maxSeq: 300 });
    await k.close();
    await j.close();
  });
});

test('records overwrite preallocated zeros (the file size, i.e. metadata, changes once per 256 KiB), across chunk boundaries', async () => {
  await withDir(async (dir) => {
    const j = new TriggerJournal(dir, { bootId: 'b1', compactAfter: 1_000_000 });
    await j.open();
    const file = join(dir, files(dir)[0]!);
    const initial = statSync(file).size;
    assert.equal(initial, 256 * 1024);
    await j.triggered(part('b1', 1));
    assert.equal(statSync(file).size, initial, 'a record does not grow the file');
    // 2500 parts (a triggered and a decided record each): past the first chunk.
    const open: number[] = [];
    for (let s = 2; s <= 2500; s++) {
      const durable = j.triggered(part('b1', s));
      if (s % 97 === 0) open.push(s);
      else j.decided(part('b1', s).id);
      if (s % 200 === 0) await durable;
    }
    await j.flush();
    assert.equal(statSync(file).size, 2 * 256 * 1024, 'grown by one chunk');
    const k = new TriggerJournal(dir, { bootId: 'b2' });
    await k.open();
    assert.deepEqual(k.recover().map((p) => p.seq), [1, ...open], 'records on both sides of the chunk boundary are read');
    await k.close();
    await j.close();
  });
});

test('a crash in the middle of a compaction (old and new file both on disk) reads as their union', async () => {
  await withDir(async (dir) => {
    const j = new TriggerJournal(dir, { bootId: 'b1', compactAfter: 16 });
    await j.open();
    for (let s = 1; s <= 10; s++) await j.triggered(part('b1', s));
    for (let s = 1; s <= 9; s++) j.decided(part('b1', s).id);
    const before = files(dir)[0]!;
    const saved = join(dir, 'saved');
    copyFileSync(join(dir, before), saved);
    // More records: the file reaches 16 and is rolled; the old one is deleted after the sync.
    await j.triggered(part('b1', 11));
    j.decided(part('b1', 11).id);
    await j.flush();
    assert.notEqual(files(dir)[0], before, 'rolled to a new file');
    assert.ok(j.stats().compactions >= 1);
    // Put the old file back, as if its deletion had not reached the disk before the power went.
    copyFileSync(saved, join(dir, before));
    rmSync(saved);
    assert.equal(files(dir).length, 2);
    const k = new TriggerJournal(dir, { bootId: 'b2' });
    await k.open();
    assert.deepEqual(k.recover().map((p) => p.seq), [10], 'seq 11 decided in the new file, 1-9 in the old, 10 open in both');
    await k.close();
    await j.close();
  });
});

test('a reused boot id (boot counter not durable) is reported; closed journals refuse quietly', async () => {
  await withDir(async (dir) => {
    const a = new TriggerJournal(dir, { bootId: 'b3' });
    await a.open();
    await a.triggered(part('b3', 1));
    a.decided(part('b3', 1).id);
    await a.close();
    assert.equal(await a.triggered(part('b3', 2)), false, 'after close: not recorded, not thrown');
    a.decided('whatever');
    const errors: string[] = [];
    const b = new TriggerJournal(dir, { bootId: 'b3', onError: (m) => errors.push(m) });
    await b.open();
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /boot id b3 was already used/);
    await b.close();
  });
});

test('bootOfPartId reads the boot from ids whose station contains dashes', () => {
  assert.equal(bootOfPartId('line-a-st-1-b12-000034'), 'b12');
  assert.equal(bootOfPartId('st1-r0a1b2c3d-000001'), 'r0a1b2c3d');
  assert.equal(bootOfPartId('nodash'), '?');
});

test('SIGKILL of a real process: parts it triggered and did not decide are recovered', async () => {
  await withDir(async (dir) => {
    // The child journals 20 parts, decides the even ones, says so, then waits to be killed.
    const script = `
      import { TriggerJournal } from ${JSON.stringify(new URL('../../src/line/journal.ts', import.meta.url).href)};
      const j = new TriggerJournal(${JSON.stringify(dir)}, { bootId: 'b1' });
      await j.open();
      for (let s = 1; s <= 20; s++) {
        const id = 'st1-b1-' + String(s).padStart(6, '0');
        const p = j.triggered({ id, station: 'st1', seq: s, trigger: 'interval', triggeredAt: new Date().toISOString(), t: { triggerNs: 0n }, failSafe: false });
        // Odd parts are still waiting for their sync when the kill comes: write() alone must do.
        if (s % 2 === 0) { await p; j.decided(id); }
      }
      process.stdout.write('ready\\n');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      child.once('exit', (code) => reject(new Error(`child exited ${code} before it was ready`)));
    });
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    const j = new TriggerJournal(dir, { bootId: 'b2' });
    await j.open();
    assert.deepEqual(j.recover().map((p) => p.seq), [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]);
    await j.close();
  });
});
