import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Outbox, OutboxFullError, OUTBOX_DEFAULTS, crc32, type OutboxLevel, type OutboxLoss } from '../../src/publish/outbox.js';
import { SystemClock } from '../../src/clock.js';
import { parseConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/log.js';
import { MqttPublisher } from '../../src/publish/mqtt.js';
import { freePort } from '../helpers/broker.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'linesight-outbox-'));
const segments = (dir: string): string[] => readdirSync(dir).filter((f) => f.endsWith('.seg')).sort();
const ids = (ob: Outbox): string[] => [...ob.pending()].map((r) => r.id);
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/** A wall clock the test moves. */
const wall = (start = Date.UTC(2026, 0, 1)) => {
  const c = { now: start, wallMs: () => c.now };
  return c;
};

test('put resolves once the record is in the file; a re-open without close (a crash) recovers every record in order', async () => {
  const dir = tmp();
  try {
    const a = await Outbox.open(dir);
    for (let i = 0; i < 5; i++) {
      await a.put('t/inspection', { n: i, text: 'caf\u00e9 \n "quoted"' }, { id: `part-${i}` });
      // Durable means on disk when put returns, not in a buffer.
      const onDisk = segments(dir).map((f) => readFileSync(join(dir, f), 'utf8')).join('');
      assert.ok(onDisk.includes(`"i":"part-${i}"`), `part-${i} is in a segment file when put resolves`);
    }
    // No close(): the process "dies" here.
    const b = await Outbox.open(dir);
    assert.deepEqual(ids(b), ['part-0', 'part-1', 'part-2', 'part-3', 'part-4']);
    const recs = [...b.pending()];
    assert.ok(recs.every((r) => r.recovered && r.topic === 't/inspection' && r.qos === 1 && r.retain === false));
    assert.deepEqual(recs[2]!.payload, { n: 2, text: 'caf\u00e9 \n "quoted"' });
    assert.equal(b.stats().recovered, 5);
    // New records come after the recovered ones.
    await b.put('t/inspection', { n: 5 }, { id: 'part-5' });
    assert.deepEqual(ids(b).slice(-2), ['part-4', 'part-5']);
    const seqs = [...b.pending()].map((r) => r.seq);
    assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y));
    await b.close();
    await a.close(); // the "dead" instance's file handle, so it is not closed by GC
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('concurrent puts keep their call order (one group commit) and get an id each', async () => {
  const dir = tmp();
  try {
    const ob = await Outbox.open(dir);
    const recs = await Promise.all(Array.from({ length: 50 }, (_, i) => ob.put('t', { i }, i % 2 ? { id: `p${i}` } : {})));
    assert.deepEqual([...ob.pending()].map((r) => (r.payload as { i: number }).i), Array.from({ length: 50 }, (_, i) => i));
    assert.equal(new Set(recs.map((r) => r.id)).size, 50, 'ids are unique (UUIDs when not given)');
    assert.equal(recs[3]!.id, 'p3');
    await ob.close();
    const again = await Outbox.open(dir);
    assert.deepEqual(ids(again), recs.map((r) => r.id));
    await again.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a torn last record (power lost mid-write) is detected, dropped and cut off; later appends stay readable', async () => {
  const dir = tmp();
  try {
    const a = await Outbox.open(dir);
    for (let i = 0; i < 3; i++) await a.put('t', { i }, { id: `ok-${i}` });
    await a.close();
    const [seg] = segments(dir);
    const file = join(dir, seg!);
    // Half of a line, no newline: what a cut write leaves.
    const whole = readFileSync(file, 'utf8').split('\n')[0]!;
    appendFileSync(file, whole.slice(0, Math.floor(whole.length / 2)));

    const b = await Outbox.open(dir);
    assert.deepEqual(ids(b), ['ok-0', 'ok-1', 'ok-2']);
    assert.equal(b.stats().torn, 1);
    assert.equal(b.stats().corrupt, 0);
    assert.ok(readFileSync(file, 'utf8').endsWith('\n'), 'the torn tail was truncated');
    await b.put('t', { i: 3 }, { id: 'ok-3' });
    // A complete final line with a wrong CRC (blocks written out of order) is torn too.
    const segB = segments(dir).at(-1)!;
    appendFileSync(join(dir, segB), `00000000 {"k":"p","s":99,"i":"ghost","t":"t","q":1,"r":false,"a":0,"p":{}}\n`);

    const c = await Outbox.open(dir);
    assert.deepEqual(ids(c), ['ok-0', 'ok-1', 'ok-2', 'ok-3']);
    assert.equal(c.stats().torn, 1);
    await c.close();
    await b.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a corrupt record before the end of a file is skipped and counted, the others survive', async () => {
  const dir = tmp();
  try {
    const a = await Outbox.open(dir);
    for (let i = 0; i < 3; i++) await a.put('t', { value: `v${i}` }, { id: `r${i}` });
    await a.close();
    const file = join(dir, segments(dir)[0]!);
    const lines = readFileSync(file, 'utf8').split('\n');
    lines[1] = lines[1]!.replace('"v1"', '"vX"'); // a flipped byte: the CRC no longer matches
    writeFileSync(file, lines.join('\n'));
    const b = await Outbox.open(dir);
    assert.deepEqual(ids(b), ['r0', 'r2']);
    assert.equal(b.stats().corrupt, 1);
    await b.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('lines carry a CRC-32 of their JSON (IEEE polynomial)', async () => {
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
  const dir = tmp();
  try {
    const ob = await Outbox.open(dir);
    await ob.put('t', { a: 1 }, { id: 'x' });
    await ob.close();
    const line = readFileSync(join(dir, segments(dir)[0]!), 'utf8').split('\n')[0]!;
    const [crc, ...rest] = line.split(' ');
    assert.equal(Number.parseInt(crc!, 16), crc32(Buffer.from(rest.join(' '))));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('acked records are forgotten (also after a re-open) and fully acked old segments are deleted', async () => {
  const dir = tmp();
  try {
    const ob = await Outbox.open(dir, { segmentBytes: 400 });
    const recs = [];
    for (let i = 0; i < 20; i++) recs.push(await ob.put('t', { i, pad: 'x'.repeat(40) }, { id: `p${i}` }));
    const before = segments(dir).length;
    assert.ok(before >= 4, `records spread over several segments (${before})`);

    for (const r of recs.slice(0, 10)) assert.equal(ob.ack(r.seq), true);
    assert.equal(ob.ack(recs[0]!.seq), false, 'a second ack is a no-op');
    await ob.flush();
    assert.equal(ob.size, 10);
    const mid = segments(dir).length;
    assert.ok(mid < before, `old segments deleted (${before} → ${mid})`);

    // Crash here: the acks were written, so only the unacked come back.
    const again = await Outbox.open(dir, { segmentBytes: 400 });
    assert.deepEqual(ids(again), recs.slice(10).map((r) => r.id));
    for (const r of [...again.pending()]) again.ack(r.seq);
    await again.flush();
    assert.equal(again.size, 0);
    assert.equal(segments(dir).length, 1, 'only the active segment is left');
    assert.equal(again.stats().acked, 10);
    await again.close();
    const empty = await Outbox.open(dir);
    assert.equal(empty.size, 0);
    await empty.close();
    await ob.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a segment holding an unacked record stays, and so does every newer one (their acks are needed)', async () => {
  const dir = tmp();
  try {
    const ob = await Outbox.open(dir, { segmentBytes: 300 });
    const recs = [];
    for (let i = 0; i < 12; i++) recs.push(await ob.put('t', { i, pad: 'y'.repeat(40) }, { id: `q${i}` }));
    for (const r of recs.slice(1)) ob.ack(r.seq); // q0, the oldest, is stuck
    await ob.flush();
    const again = await Outbox.open(dir, { segmentBytes: 300 });
    assert.deepEqual(ids(again), ['q0'], 'acks in newer segments still apply to older records');
    await again.close();
    await ob.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bounded by bytes: the oldest are dropped to make room, counted and reported, never silently', async () => {
  const dir = tmp();
  try {
    const losses: OutboxLoss[] = [];
    const probe = await Outbox.open(join(dir, 'probe'));
    const one = (await probe.put('t', { i: 0, pad: 'z'.repeat(100) }, { id: 'd00' })).bytes;
    await probe.close();

    const ob = await Outbox.open(join(dir, 'ob'), { maxBytes: one * 5 + 10, onDrop: (l) => losses.push(l) });
    for (let i = 0; i < 8; i++) await ob.put('t', { i, pad: 'z'.repeat(100) }, { id: `d0${i}` });
    await tick();
    assert.deepEqual(ids(ob), ['d03', 'd04', 'd05', 'd06', 'd07']);
    assert.equal(losses.reduce((n, l) => n + l.count, 0), 3);
    assert.deepEqual(losses.flatMap((l) => l.ids), ['d00', 'd01', 'd02']);
    assert.ok(losses.every((l) => l.reason === 'bytes' && l.bytes > 0));
    assert.equal(losses.at(-1)!.totalDropped, 3);
    const s = ob.stats();
    assert.equal(s.dropped, 3);
    assert.equal(s.droppedBytes, one * 3);
    assert.ok(s.bytes <= s.maxBytes);

    await assert.rejects(ob.put('t', { pad: 'w'.repeat(one * 6) }), RangeError, 'a record bigger than the whole outbox is refused');
    assert.equal(ob.size, 5);
    // evict: false (the loss alarm) never makes room by dropping: it is refused instead.
    await assert.rejects(ob.put('t', { i: 9, pad: 'z'.repeat(100) }, { id: 'alarm', evict: false }), OutboxFullError);
    assert.deepEqual(ids(ob), ['d03', 'd04', 'd05', 'd06', 'd07']);
    ob.ack([...ob.pending()][0]!.seq);
    await ob.put('t', { i: 9, pad: 'z'.repeat(100) }, { id: 'alarm', evict: false });
    assert.deepEqual(ids(ob), ['d04', 'd05', 'd06', 'd07', 'alarm']);
    assert.equal(ob.stats().dropped, 3);

    // The drops are on disk too: the dropped records do not come back after a crash.
    await ob.flush();
    const again = await Outbox.open(join(dir, 'ob'), { maxBytes: one * 5 + 10 });
    assert.deepEqual(ids(again), ['d04', 'd05', 'd06', 'd07', 'alarm']);
    await again.close();
    await ob.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bounded by age: records older than maxAgeMs are dropped with reason age', async () => {
  const dir = tmp();
  try {
    const clock = wall();
    const losses: OutboxLoss[] = [];
    const ob = await Outbox.open(dir, { maxAgeMs: 60_000, clock, onDrop: (l) => losses.push(l) });
    await ob.put('t', { i: 0 }, { id: 'old-0' });
    await ob.put('t', { i: 1 }, { id: 'old-1' });
    clock.now += 30_000;
    await ob.put('t', { i: 2 }, { id: 'young' });
    assert.equal(ob.prune(), 0);
    clock.now += 40_000; // old-* are 70 s old, young is 40 s
    assert.equal(ob.prune(), 2);
    await tick();
    assert.deepEqual(ids(ob), ['young']);
    assert.deepEqual(losses, [{ reason: 'age', count: 2, bytes: losses[0]!.bytes, ids: ['old-0', 'old-1'], totalDropped: 2 }]);
    await ob.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the high-water callback fires once per crossing and re-arms after the level falls back', async () => {
  const dir = tmp();
  try {
    const levels: OutboxLevel[] = [];
    const ob = await Outbox.open(dir, { maxBytes: 10_000, highWater: 0.5, onHighWater: (l) => levels.push(l) });
    const recs = [];
    for (let i = 0; i < 40; i++) recs.push(await ob.put('t', { i, pad: 'h'.repeat(200) }));
    await tick();
    assert.equal(levels.length, 1, 'once while above the mark');
    assert.ok(levels[0]!.bytes >= 5000 && levels[0]!.maxBytes === 10_000);
    assert.equal(ob.stats().highWater, true);
    for (const r of recs) ob.ack(r.seq);
    assert.equal(ob.stats().highWater, false);
    for (let i = 0; i < 40; i++) await ob.put('t', { i, pad: 'h'.repeat(200) });
    await tick();
    assert.equal(levels.length, 2, 'again after falling below and crossing once more');
    await ob.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('reject() drops a record the broker refused, reported as a loss', async () => {
  const dir = tmp();
  try {
    const losses: OutboxLoss[] = [];
    const ob = await Outbox.open(dir, { onDrop: (l) => losses.push(l) });
    const a = await ob.put('t', { a: 1 }, { id: 'refused' });
    await ob.put('t', { a: 2 }, { id: 'fine' });
    assert.equal(ob.reject(a.seq, 'not authorized'), true);
    await tick();
    assert.deepEqual(ids(ob), ['fine']);
    assert.equal(losses[0]!.reason, 'rejected');
    assert.equal(losses[0]!.detail, 'not authorized');
    await ob.close();
    await assert.rejects(ob.put('t', {}), /closed/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the bounds are config settings (mqtt.outbox) with SD-card defaults: 256 MiB, 7 days, alarm at 80 %', async () => {
  const cfg = parseConfig({}, { env: {} });
  assert.deepEqual(cfg.mqtt.outbox, { maxBytes: 256 * 1024 * 1024, maxAgeMs: 7 * 24 * 3600 * 1000, highWater: 0.8 });
  assert.deepEqual(cfg.mqtt.outbox, { ...OUTBOX_DEFAULTS }, 'the Outbox class defaults are the config defaults');
  const env = parseConfig({ mqtt: { outbox: { maxBytes: 2 * 1024 * 1024 } } }, { env: { LINESIGHT_MQTT__OUTBOX__MAXAGEMS: '3600000' } });
  assert.deepEqual(env.mqtt.outbox, { maxBytes: 2 * 1024 * 1024, maxAgeMs: 3_600_000, highWater: 0.8 });
  // A bound that would make the outbox useless is refused with the setting named.
  assert.throws(() => parseConfig({ mqtt: { outbox: { maxBytes: 1000 } } }, { env: {} }), /mqtt\.outbox\.maxBytes/);
  assert.throws(() => parseConfig({ mqtt: { outbox: { maxAgeMs: 0 } } }, { env: {} }), /mqtt\.outbox\.maxAgeMs/);
  assert.throws(() => parseConfig({ mqtt: { outbox: { highWater: 1.5 } } }, { env: {} }), /mqtt\.outbox\.highWater/);
  assert.throws(() => parseConfig({ mqtt: { outbox: { maxByte: 1 } } }, { env: {} }), /mqtt\.outbox\.maxByte: unknown setting/);
  const dir = tmp();
  try {
    const ob = await Outbox.open(dir);
    assert.equal(ob.stats().maxBytes, OUTBOX_DEFAULTS.maxBytes);
    await ob.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the publisher takes its outbox bounds from the config: high-water alarm, oldest dropped, counted and logged while the broker is away', async () => {
  const dir = tmp();
  const port = await freePort(); // nothing listens there: the broker is down for the whole test
  const mqttCfg = parseConfig({ mqtt: { url: `mqtt://127.0.0.1:${port}`, outbox: { maxBytes: 1024 * 1024, highWater: 0.5 } } }, { env: {} }).mqtt;
  const log = memoryLogger();
  const pub = new MqttPublisher({
    cfg: mqttCfg,
    station: { line: 'unit', id: 'bounds' },
    stateDir: dir,
    clock: new SystemClock(),
    log,
    reconnectPeriodMs: 60_000,
    connectTimeoutMs: 500,
    stopTimeoutMs: 100,
    lossAlarmIntervalMs: 50,
  });
  try {
    await pub.start();
    const pad = 'x'.repeat(40 * 1024);
    const N = 32; // ~1.3 MiB of alarms into a 1 MiB outbox: 7 dropped, and the high-water alarm (13th) is kept
    for (let i = 0; i < N; i++) {
      const r = await pub.publishAlarm({ id: `a${String(i).padStart(2, '0')}`, kind: 'test', severity: 'info', message: `filler ${i} ${pad}` });
      assert.equal(r.durable, true);
    }
    await tick();
    const s = pub.stats().outbox;
    assert.equal(s.maxBytes, 1024 * 1024, 'mqtt.outbox.maxBytes reached the outbox');
    assert.ok(s.bytes <= s.maxBytes);
    assert.ok(s.dropped > 0, `some dropped (${s.dropped})`);
    assert.equal(s.healthy, false, 'above the high-water mark');
    const warn = log.records.filter((r) => r.msg === 'outbox: above high-water mark');
    assert.equal(warn.length, 1, 'the crossing is logged once');
    assert.ok((warn[0]!.bytes as number) >= 512 * 1024, 'at 50 % (mqtt.outbox.highWater), not the default 80 %');
    const drops = log.records.filter((r) => r.msg === 'outbox: records dropped');
    assert.ok(drops.length > 0 && drops.every((r) => r.level === 'error' && r.reason === 'bytes'));
    assert.equal(drops.reduce((n, r) => n + (r.count as number), 0), s.dropped, 'every drop is logged');
    assert.deepEqual(drops[0]!.ids, ['a00'], 'the oldest goes first');
  } finally {
    await pub.stop();
  }
  try {
    // The alarms wait in the outbox for the broker: a high-water alarm, and a loss alarm whose
    // totalDropped covers every drop (the loss alarm never evicts a result to make room).
    const ob = await Outbox.open(join(dir, 'outbox'));
    const alarms = [...ob.pending()].map((r) => r.payload as { kind: string; data?: { totalDropped?: number } });
    assert.ok(alarms.some((a) => a.kind === 'outbox_high_water'), 'outbox_high_water alarm persisted');
    const total = pub.stats().outbox.dropped;
    const loss = alarms.filter((a) => a.kind === 'outbox_drop');
    assert.ok(loss.length > 0, 'outbox_drop alarm persisted');
    assert.equal(loss.at(-1)!.data!.totalDropped, total);
    // Oldest first: what is left is a contiguous run of the newest results.
    const left = alarms.filter((a) => a.kind === 'test').map((a) => (a as unknown as { id: string }).id);
    assert.deepEqual(left, Array.from({ length: left.length }, (_, i) => `a${String(32 - left.length + i).padStart(2, '0')}`));
    await ob.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
