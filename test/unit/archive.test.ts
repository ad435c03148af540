// The reject archive on the real file system with real PNGs: every file is decoded back with sharp
// and compared pixel for pixel, and the folder is read by the training pipeline's own scanner.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { RejectArchive, archiveLabel, safeName } from '../../src/archive/archive.js';
import { DiskGuard, freeBytes, type DiskLow } from '../../src/telemetry/disk.js';
import { renderFilmFrame } from '../../src/camera/synthetic.js';
import { scanDataset } from '../../src/train/dataset.js';
import type { Defect, FailSafeReason, Frame, Part } from '../../src/part.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'linesight-archive-'));

function filmFrame(index: number, defectRate = 0.5): Frame {
  const f = renderFilmFrame({ width: 96, height: 64, seed: 11, defectRate }, index);
  return { seq: index, timeNs: 0n, width: f.width, height: f.height, channels: 3, data: f.data, source: 'synthetic', truth: f.truth };
}

function grayFrame(index: number): Frame {
  const w = 40;
  const h = 30;
  const data = new Uint8Array(w * h);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + index * 13) & 0xff;
  return { seq: index, timeNs: 0n, width: w, height: h, channels: 1, data, source: 'replay', file: `/data/${index}.png` };
}

let seq = 0;
function decided(
  kind: 'pass' | 'reject' | 'failsafe',
  opts: { frame?: Frame | null; defects?: Defect[]; label?: string; reason?: FailSafeReason; score?: number } = {},
): Part {
  seq++;
  const frame = opts.frame === null ? undefined : (opts.frame ?? filmFrame(seq));
  const score = opts.score ?? (kind === 'reject' ? 0.9 : 0.1);
  return {
    id: `st1-b1-${String(seq).padStart(6, '0')}`,
    station: 'st1',
    seq,
    trigger: 'interval',
    triggeredAt: new Date(Date.UTC(2026, 0, 1, 8, 0, 0, seq)).toISOString(),
    t: { triggerNs: 1_000_000n, decidedNs: 13_500_000n, gateNs: 500_000_000n },
    frame,
    action: kind === 'pass' ? 'pass' : 'divert',
    failSafe: kind === 'failsafe',
    ...(kind === 'failsafe'
      ? { reason: opts.reason ?? 'late', detail: 'no verdict in time' }
      : {
          verdict: {
            verdict: kind === 'pass' ? ('pass' as const) : ('reject' as const),
            score,
            threshold: 0.5,
            defects: opts.defects ?? [],
            ...(opts.label !== undefined ? { label: opts.label } : {}),
          },
          model: { name: 'film-demo', version: '0.1.0', sha256: 'a'.repeat(64) },
          provider: 'cpu',
        }),
  };
}

async function pixels(file: string): Promise<{ data: Buffer; width: number; height: number; channels: number }> {
  const bytes = readFileSync(file);
  const meta = await sharp(bytes).metadata();
  // sharp decodes to sRGB unless told otherwise: a grey PNG is read back as grey.
  const img = meta.channels === 1 ? sharp(bytes).toColourspace('b-w') : sharp(bytes);
  const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
  assert.equal(data.length, info.width * info.height * meta.channels!, 'decoded with the PNG\'s own channel count');
  return { data, width: info.width, height: info.height, channels: meta.channels! };
}

const listing = (root: string): string[] =>
  readdirSync(root, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .flatMap((d) => readdirSync(join(root, d.name)).map((f) => `${d.name}/${f}`))
    .sort();

test('a rejected frame is kept as a lossless PNG under its defect class, with its verdict JSON beside', async () => {
  const root = tmp();
  try {
    // fsync on: the same files, synced before their rename.
    const a = new RejectArchive({ root, fsync: true });
    await a.open();
    const p = decided('reject', { defects: [{ class: 'dust', score: 0.6 }, { class: 'scratch', score: 0.9, box: [3, 4, 10, 2] }] });
    const g = decided('reject', { frame: grayFrame(1), defects: [{ class: 'bubble', score: 0.9 }] });
    assert.equal(a.offer(p), 'queued');
    assert.equal(a.offer(g), 'queued');
    await a.drain();
    // The defect that made the verdict (its score is the verdict's) names the class.
    const png = join(root, 'scratch', `${p.id}.png`);
    const px = await pixels(png);
    assert.deepEqual([px.width, px.height, px.channels], [96, 64, 3]);
    assert.ok(px.data.equals(Buffer.from(p.frame!.data)), 'the PNG holds exactly the frame the model saw');
    const gpx = await pixels(join(root, 'bubble', `${g.id}.png`));
    assert.equal(gpx.channels, 1, 'a grey frame stays grey');
    assert.ok(gpx.data.equals(Buffer.from(g.frame!.data)));
    const meta = JSON.parse(readFileSync(join(root, 'scratch', `${p.id}.json`), 'utf8'));
    assert.equal(meta.partId, p.id);
    assert.equal(meta.label, 'scratch');
    assert.equal(meta.kind, 'reject');
    assert.equal(meta.action, 'divert');
    assert.equal(meta.verdict.verdict, 'reject');
    assert.equal(meta.verdict.score, 0.9);
    assert.deepEqual(meta.verdict.defects[1].box, [3, 4, 10, 2]);
    assert.equal(meta.model.name, 'film-demo');
    assert.deepEqual(meta.frame, { width: 96, height: 64, channels: 3, source: 'synthetic', seq: p.frame!.seq });
    assert.deepEqual(meta.truth, p.frame!.truth, 'ground truth travels with the synthetic frame');
    assert.equal(meta.latencyMs, 12.5);
    assert.match(meta.archivedAt, /^\d{4}-\d\d-\d\dT/);
    assert.deepEqual(listing(root).filter((f) => f.includes('.tmp')), [], 'no temp file left behind');
    const s = a.stats();
    assert.equal(s.written, 2);
    assert.equal(s.files, 2);
    assert.deepEqual(s.byLabel, { scratch: 1, bubble: 1 });
    await a.close();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('compressionLevel (archive.pngLevel): a lower level writes larger files of the same pixels', async () => {
  const sizes: number[] = [];
  for (const level of [0, 9]) {
    const root = tmp();
    try {
      const a = new RejectArchive({ root, compressionLevel: level });
      await a.open();
      const p = decided('reject', { frame: grayFrame(5), defects: [{ class: 'dust', score: 0.9 }] });
      a.offer(p);
      await a.drain();
      const png = join(root, 'dust', `${p.id}.png`);
      assert.ok((await pixels(png)).data.equals(Buffer.from(p.frame!.data)), `level ${level}: lossless`);
      sizes.push(readFileSync(png).length);
      await a.close();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }
  assert.ok(sizes[0]! > sizes[1]!, `level 0 ${sizes[0]} bytes, level 9 ${sizes[1]}`);
});

test('labels: good for sampled passes (1 in N), reject without a defect, fail-safes by reason, unsafe names cleaned', async () => {
  const root = tmp();
  try {
    const a = new RejectArchive({ root, passEvery: 3, queueLimit: 16 });
    await a.open();
    const passes = Array.from({ length: 7 }, () => decided('pass'));
    const results = passes.map((p) => a.offer(p));
    assert.deepEqual(results, ['not-kept', 'not-kept', 'queued', 'not-kept', 'not-kept', 'queued', 'not-kept'], 'every 3rd pass');
    const plain = decided('reject');
    const classifier = decided('reject', { label: 'crack' });
    const late = decided('failsafe', { reason: 'late' });
    const model = decided('failsafe', { reason: 'model_error' });
    const camera = decided('failsafe', { reason: 'camera', frame: null });
    const weird = decided('reject', { defects: [{ class: '../../etc/pass wd', score: 0.9 }] });
    const good = decided('reject', { defects: [{ class: 'good', score: 0.9 }] });
    const masks = decided('reject', { defects: [{ class: 'masks', score: 0.9 }] });
    for (const p of [plain, classifier, late, model, weird, good, masks]) assert.equal(a.offer(p), 'queued');
    assert.equal(a.offer(camera), 'no-frame', 'a camera fail-safe has no frame to keep');
    await a.drain();
    assert.deepEqual(
      listing(root).filter((f) => f.endsWith('.png')),
      [
        `_.._etc_pass_wd/${weird.id}.png`,
        `crack/${classifier.id}.png`,
        `failsafe-late/${late.id}.png`,
        `failsafe-model_error/${model.id}.png`,
        `good/${passes[2]!.id}.png`,
        `good/${passes[5]!.id}.png`,
        `reject-good/${good.id}.png`,
        `reject-masks/${masks.id}.png`,
        `reject/${plain.id}.png`,
      ].sort(),
    );
    assert.equal(a.stats().skipped.noFrame, 1);
    const meta = JSON.parse(readFileSync(join(root, 'failsafe-late', `${late.id}.json`), 'utf8'));
    assert.equal(meta.kind, 'failsafe');
    assert.equal(meta.reason, 'late');
    assert.equal(meta.verdict, null);
    await a.close();

    const noFs = new RejectArchive({ root: tmp(), failSafe: false });
    await noFs.open();
    assert.equal(noFs.offer(decided('failsafe')), 'not-kept');
    await noFs.close();
    rmSync(noFs.stats().root, { recursive: true, force: true });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  assert.equal(safeName('', 'x'), 'x');
  assert.equal(safeName('.hidden', 'x'), 'hidden');
  assert.equal(archiveLabel(decided('reject', { defects: [{ class: 'a', score: 0.95 }, { class: 'b', score: 0.9 }], score: 0.9 })), 'b', 'the defect with the verdict score');
});

test('the archive is a dataset the training pipeline reads as it is', async () => {
  const root = tmp();
  try {
    const a = new RejectArchive({ root, passEvery: 1 });
    await a.open();
    for (let i = 0; i < 3; i++) a.offer(decided('pass'));
    for (let i = 0; i < 2; i++) a.offer(decided('reject', { defects: [{ class: 'scratch', score: 0.9 }] }));
    await a.drain();
    const { manifest } = await scanDataset(root);
    assert.deepEqual(manifest.skipped, [], 'every PNG decodes, and the JSON files are ignored');
    assert.deepEqual(
      manifest.classes.map((c) => [c.label, c.images]),
      [
        ['good', 3],
        ['scratch', 2],
      ],
    );
    await a.close();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('the line never waits: offer() returns before anything is written, and a full queue skips and counts', async () => {
  const root = tmp();
  try {
    const a = new RejectArchive({ root, queueLimit: 2 });
    await a.open();
    const parts = Array.from({ length: 6 }, () => decided('reject'));
    const results = parts.map((p) => a.offer(p));
    assert.deepEqual(listing(root), [], 'nothing is on disk when offer() returns');
    assert.deepEqual(results, ['queued', 'queued', 'queue-full', 'queue-full', 'queue-full', 'queue-full']);
    assert.equal(a.stats().skipped.queueFull, 4);
    await a.drain();
    assert.equal(a.stats().written, 2);
    assert.equal(a.offer(decided('reject')), 'queued', 'room again once written');
    await a.close();
    assert.equal(a.offer(decided('reject')), 'closed');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('retention by count and bytes removes the oldest first, empty class folders go with their last file', async () => {
  const root = tmp();
  try {
    const a = new RejectArchive({ root, maxFiles: 3 });
    await a.open();
    const parts = [
      decided('reject', { defects: [{ class: 'dust', score: 0.9 }] }),
      ...Array.from({ length: 4 }, () => decided('reject', { defects: [{ class: 'scratch', score: 0.9 }] })),
    ];
    for (const p of parts) {
      a.offer(p);
      await a.drain();
    }
    assert.deepEqual(
      listing(root).filter((f) => f.endsWith('.png')),
      parts.slice(2).map((p) => `scratch/${p.id}.png`),
    );
    assert.ok(!existsSync(join(root, 'dust')), 'the dust folder went with its only image (an empty class folder stops training)');
    assert.deepEqual(listing(root).filter((f) => f.endsWith('.json')).length, 3, 'JSON files go with their PNG');
    assert.equal(a.stats().removed.count, 2);
    const oneFile = a.stats().bytes / 3;
    await a.close();

    // Bytes: room for about two files.
    const b = new RejectArchive({ root, maxBytes: Math.floor(oneFile * 2.5) });
    await b.open();
    assert.equal(b.stats().files, 2, 'the limit applies to what earlier runs left too');
    assert.equal(b.stats().removed.bytes, 1);
    assert.deepEqual(
      listing(root).filter((f) => f.endsWith('.png')),
      parts.slice(3).map((p) => `scratch/${p.id}.png`),
    );
    await b.close();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('retention by age, on the clock and across a restart (file times)', async () => {
  const root = tmp();
  try {
    const clock = { now: Date.UTC(2026, 0, 10) };
    const day = 24 * 3600 * 1000;
    const a = new RejectArchive({ root, maxAgeMs: 7 * day, wallMs: () => clock.now });
    await a.open();
    const old = decided('reject');
    a.offer(old);
    await a.drain();
    clock.now += 5 * day;
    const recent = decided('reject');
    a.offer(recent);
    await a.drain();
    clock.now += 3 * day; // old is 8 days old, recent 3
    assert.equal(await a.prune(), 1);
    assert.deepEqual(listing(root).filter((f) => f.endsWith('.png')), [`reject/${recent.id}.png`]);
    assert.equal(a.stats().removed.age, 1);
    await a.close();

    // A new run indexes existing files by their modification time.
    const past = (Date.now() - 10 * day) / 1000;
    utimesSync(join(root, 'reject', `${recent.id}.png`), past, past);
    const b = new RejectArchive({ root, maxAgeMs: 7 * day });
    await b.open();
    assert.equal(b.stats().files, 0);
    assert.deepEqual(listing(root), []);
    await b.close();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('leftovers of a crash (temp files, a JSON without its PNG, an empty PNG) are cleaned at open; existing files are indexed', async () => {
  const root = tmp();
  try {
    mkdirSync(join(root, 'scratch'), { recursive: true });
    const png = await sharp(Buffer.alloc(8 * 8 * 3, 200), { raw: { width: 8, height: 8, channels: 3 } }).png().toBuffer();
    writeFileSync(join(root, 'scratch', 'st1-b0-000001.png'), png);
    writeFileSync(join(root, 'scratch', 'st1-b0-000001.json'), '{}');
    writeFileSync(join(root, 'scratch', '.st1-b0-000002.png.123.tmp'), png.subarray(0, 20));
    writeFileSync(join(root, 'scratch', 'st1-b0-000003.json'), '{}');
    // Renamed before its data reached the disk, then the power went: an empty PNG (and its JSON).
    writeFileSync(join(root, 'scratch', 'st1-b0-000004.png'), '');
    writeFileSync(join(root, 'scratch', 'st1-b0-000004.json'), '{}');
    writeFileSync(join(root, 'README.md'), 'not a class folder');
    const a = new RejectArchive({ root });
    await a.open();
    assert.deepEqual(listing(root), ['scratch/st1-b0-000001.json', 'scratch/st1-b0-000001.png']);
    assert.equal(a.stats().files, 1);
    assert.equal(a.stats().bytes, png.length + 2);
    await a.close();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('below the free-space floor nothing is written, each skip is counted and the alarm is raised once', async () => {
  const root = tmp();
  try {
    const free = await freeBytes(root);
    const alarms: DiskLow[] = [];
    // A floor above what is free: this disk is "full" for the archive.
    const guard = new DiskGuard({ path: root, floorBytes: free + 1024 ** 4, onAlarm: (l) => alarms.push(l) });
    const a = new RejectArchive({ root, guard });
    await a.open();
    for (let i = 0; i < 4; i++) {
      assert.equal(a.offer(decided('reject')), 'queued');
      await a.drain();
    }
    assert.deepEqual(listing(root), []);
    assert.equal(a.stats().skipped.diskFloor, 4);
    assert.equal(alarms.length, 1, 'one alarm for the episode, not one per part');
    assert.match(alarms[0]!.message, /disk almost full/);
    assert.equal(guard.stats().refused, 4);
    await a.close();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
