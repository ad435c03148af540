import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { FakeClock } from '../../src/clock.js';
import { memoryLogger, silentLogger } from '../../src/log.js';
import type { Frame } from '../../src/part.js';
import { FrameError } from '../../src/camera/types.js';
import { ReplaySource, decodeImageFile, labelItems, shuffle, truthFromLabel } from '../../src/camera/replay.js';
import { renderFilmFrame } from '../../src/camera/synthetic.js';
import { prepareInput } from '../../src/inference/preprocess.js';
import { loadNative, resetNativeForTests } from '../../src/native/addon.js';
import { jpegStatus } from '../../src/native/jpeg.js';

let root: string;
// decodeSize full and decodeIn main: what these tests were written for (the defaults are model and worker).
const base = { dir: '', order: 'sorted' as const, loop: true, seed: 1, fps: 4, colour: 'rgb' as const, decodeSize: 'full' as 'model' | 'full', decodeIn: 'main' as 'main' | 'worker' };
const deps = () => ({ clock: new FakeClock(), log: silentLogger });

/** A solid-colour image file; the colour identifies it in the tests. */
async function solid(file: string, w: number, h: number, rgb: [number, number, number]): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const img = sharp({ create: { width: w, height: h, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } });
  await (file.endsWith('.png') ? img.png() : img.jpeg({ quality: 100 })).toFile(file);
}

before(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'linesight-replay-'));
  // Labelled layout, like ../shared/datasets/magnetic-tile.
  const lab = path.join(root, 'labelled');
  await solid(path.join(lab, 'good', 'a.png'), 8, 6, [200, 10, 10]);
  await solid(path.join(lab, 'good', 'b.png'), 8, 6, [10, 200, 10]);
  await solid(path.join(lab, 'scratch', 'c.jpg'), 12, 4, [40, 40, 200]);
  await solid(path.join(lab, 'masks', 'scratch', 'c.png'), 12, 4, [255, 255, 255]); // annotations: skipped
  await writeFile(path.join(lab, 'good', 'notes.txt'), 'not an image');
  await writeFile(path.join(lab, 'good', '.hidden.png'), 'not even a png');
  // Flat, unlabelled, with a corrupt file in the middle.
  const flat = path.join(root, 'flat');
  await solid(path.join(flat, '1.png'), 5, 5, [100, 100, 100]);
  await mkdir(flat, { recursive: true });
  await writeFile(path.join(flat, '2.jpg'), Buffer.from('this is not a jpeg'));
  const good = await sharp({ create: { width: 16, height: 16, channels: 3, background: '#808080' } }).jpeg().toBuffer();
  await writeFile(path.join(flat, '3.jpg'), good.subarray(0, Math.floor(good.length / 2))); // truncated
  await solid(path.join(flat, '4.png'), 5, 5, [150, 150, 150]);
  await mkdir(path.join(root, 'empty', 'sub'), { recursive: true });
  await writeFile(path.join(root, 'empty', 'sub', 'readme.txt'), 'no images here');
  // Many files for shuffling.
  for (let i = 0; i < 10; i++) await solid(path.join(root, 'many', `${i}.png`), 2, 2, [i * 20, 0, 0]);
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

test('start() fails clearly on an unset, missing or empty folder', async () => {
  await assert.rejects(new ReplaySource({ ...base }, deps()).start(), /camera\.replay\.dir is not set/);
  const missing = path.join(root, 'nope');
  await assert.rejects(new ReplaySource({ ...base, dir: missing }, deps()).start(), (e: Error) => {
    assert.ok(e.message.includes(missing), e.message);
    assert.match(e.message, /does not exist/);
    assert.match(e.message, /camera\.replay\.dir/);
    return true;
  });
  const empty = path.join(root, 'empty');
  await assert.rejects(new ReplaySource({ ...base, dir: empty }, deps()).start(), (e: Error) => {
    assert.ok(e.message.includes(empty), e.message);
    assert.match(e.message, /no JPEG\/PNG images/);
    return true;
  });
  const file = path.join(root, 'flat', '1.png');
  await assert.rejects(new ReplaySource({ ...base, dir: file }, deps()).start(), /is not a folder/);
});

test('constructor does nothing; grab before start rejects with a camera error', async () => {
  const d = deps();
  const src = new ReplaySource({ ...base, dir: path.join(root, 'nope') }, d);
  assert.equal(d.clock.pending(), 0);
  await assert.rejects(src.grab(), (e: unknown) => e instanceof FrameError && e.reason === 'camera');
});

test('labelled folder: sorted, decoded to RGB HWC, truth from the parent folder, masks skipped', async () => {
  const d = { clock: new FakeClock(), log: memoryLogger() };
  const src = new ReplaySource({ ...base, dir: path.join(root, 'labelled') }, d);
  await src.start();
  const frames: Frame[] = [];
  for (let i = 0; i < 4; i++) frames.push(await src.grab());
  assert.deepEqual(
    frames.map((f) => path.relative(root, f.file!)),
    ['labelled/good/a.png', 'labelled/good/b.png', 'labelled/scratch/c.jpg', 'labelled/good/a.png'],
  );
  assert.deepEqual(frames.map((f) => f.seq), [0, 1, 2, 3]);
  const [a, b, c] = frames as [Frame, Frame, Frame];
  assert.equal(a.source, 'replay');
  assert.equal(a.timeNs, d.clock.nowNs());
  assert.deepEqual([a.width, a.height, a.channels, a.data.length], [8, 6, 3, 8 * 6 * 3]);
  assert.deepEqual([...a.data.subarray(0, 3)], [200, 10, 10]);
  assert.deepEqual([...b.data.subarray(0, 3)], [10, 200, 10]);
  assert.deepEqual([c.width, c.height, c.channels], [12, 4, 3]);
  const [r, g, bl] = c.data;
  assert.ok(Math.abs(r! - 40) < 6 && Math.abs(g! - 40) < 6 && Math.abs(bl! - 200) < 6, `jpeg colour ${[r, g, bl]}`);
  assert.deepEqual(a.truth, { verdict: 'pass', defects: [] });
  assert.deepEqual(c.truth, { verdict: 'reject', defects: ['scratch'] });
  assert.deepEqual(src.stats(), { frames: 4, errors: 0, stalls: 0, restarts: 0, fps: 0, dropped: 0 });
  const started = d.log.records.find((r) => r.msg === 'replay camera started');
  assert.equal(started?.images, 3);
  await src.stop();
  await assert.rejects(src.grab(), (e: unknown) => e instanceof FrameError && e.reason === 'camera');
});

test('gray colour gives one channel', async () => {
  const src = new ReplaySource({ ...base, dir: path.join(root, 'labelled'), colour: 'gray' }, deps());
  await src.start();
  const f = await src.grab();
  assert.deepEqual([f.width, f.height, f.channels, f.data.length], [8, 6, 1, 48]);
  // A grey level between the darkest and brightest channel of (200, 10, 10).
  assert.ok(f.data[0]! > 10 && f.data[0]! < 200, `grey ${f.data[0]}`);
  assert.ok(f.data.every((v) => v === f.data[0]), 'solid image stays solid');
});

test('a corrupt image rejects with bad_frame naming the file; the next grab goes on', async () => {
  const src = new ReplaySource({ ...base, dir: path.join(root, 'flat'), loop: false }, deps());
  await src.start();
  const f1 = await src.grab();
  assert.equal(path.basename(f1.file!), '1.png');
  assert.equal(f1.truth, undefined, 'flat folder: no labels');
  for (const name of ['2.jpg', '3.jpg']) {
    await assert.rejects(src.grab(), (e: unknown) => {
      assert.ok(e instanceof FrameError);
      assert.equal(e.reason, 'bad_frame');
      assert.ok(e.message.includes(path.join(root, 'flat', name)), e.message);
      return true;
    });
  }
  const f4 = await src.grab();
  assert.equal(path.basename(f4.file!), '4.png');
  assert.equal(f4.data[0], 150);
  // Not looping: played out.
  for (let i = 0; i < 2; i++) {
    await assert.rejects(src.grab(), (e: unknown) => {
      assert.ok(e instanceof FrameError);
      assert.equal(e.reason, 'camera');
      assert.match(e.message, /^replay finished/);
      return true;
    });
  }
  const s = src.stats();
  assert.equal(s.frames, 2);
  assert.equal(s.errors, 2);
});

test('shuffle: a deterministic permutation per seed, reshuffled per loop', async () => {
  const names = async (seed: number, n: number) => {
    const src = new ReplaySource({ ...base, dir: path.join(root, 'many'), order: 'shuffle', seed }, deps());
    await src.start();
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(path.basename((await src.grab()).file!));
    return out;
  };
  const a = await names(5, 20);
  assert.deepEqual(a, await names(5, 20), 'same seed, same order');
  assert.notDeepEqual(a, await names(6, 20), 'other seed, other order');
  const firstPass = a.slice(0, 10);
  assert.deepEqual([...firstPass].sort(), Array.from({ length: 10 }, (_, i) => `${i}.png`).sort(), 'each image once per pass');
  assert.deepEqual([...a.slice(10)].sort(), [...firstPass].sort());
  assert.notDeepEqual(a.slice(10), firstPass, 'second pass in another order');
  assert.notDeepEqual(firstPass, Array.from({ length: 10 }, (_, i) => `${i}.png`).sort(), 'actually shuffled');
  assert.deepEqual(shuffle([1, 2, 3, 4, 5], 9), shuffle([1, 2, 3, 4, 5], 9));
});

test('labels only when the layout looks labelled', () => {
  const r = '/data';
  assert.deepEqual(
    labelItems(r, ['/data/good/1.png', '/data/crack/2.png']).map((i) => i.label),
    ['good', 'crack'],
  );
  assert.deepEqual(labelItems(r, ['/data/1.png', '/data/good/2.png']).map((i) => i.label), [undefined, undefined]);
  assert.deepEqual(labelItems(r, ['/data/day1/1.png', '/data/day2/2.png']).map((i) => i.label), [undefined, undefined]);
  assert.deepEqual(labelItems(r, ['/data/test/OK/1.png', '/data/test/dent/2.png']).map((i) => i.label), ['OK', 'dent']);
  assert.deepEqual(truthFromLabel('normal'), { verdict: 'pass', defects: [] });
  assert.deepEqual(truthFromLabel('blowhole'), { verdict: 'reject', defects: ['blowhole'] });
});

/** Resolves at the next frame or error delivered to a free-run subscriber. */
function events(src: ReplaySource) {
  const queue: (Frame | FrameError)[] = [];
  let wake: (() => void) | undefined;
  const off = src.onFrame(
    (f) => {
      queue.push(f);
      wake?.();
    },
    (e) => {
      queue.push(e);
      wake?.();
    },
  );
  const next = async (): Promise<Frame | FrameError> => {
    const deadline = Date.now() + 10_000; // only to avoid a hang
    while (!queue.length) {
      if (Date.now() > deadline) throw new Error('no event');
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 50);
      });
    }
    // Let the source finish its tick (and re-arm its pacer) before the test moves the clock again.
    await new Promise((r) => setImmediate(r));
    return queue.shift()!;
  };
  return { next, off, queue };
}

test('free-run: paced at cfg.fps, bad images reported and skipped, stops when played out', async () => {
  const clock = new FakeClock();
  const src = new ReplaySource({ ...base, dir: path.join(root, 'flat'), loop: false, fps: 4 }, { clock, log: silentLogger });
  const ev = events(src);
  await src.start();
  const seen: string[] = [];
  const t0 = clock.nowNs();
  for (let i = 0; i < 5; i++) {
    clock.advance(250);
    const e = await ev.next();
    if (e instanceof FrameError) seen.push(`${e.reason}:${['2.jpg', '3.jpg'].find((n) => e.message.includes(n)) ?? ''}`);
    else {
      assert.equal(e.timeNs - t0, BigInt(250_000_000 * (i + 1)));
      seen.push(path.basename(e.file!));
    }
    if (i === 3) {
      // The last image and the end of the play-out arrive in the same tick.
      seen.push(((await ev.next()) as FrameError).reason);
      break;
    }
  }
  assert.equal(seen[0], '1.png');
  assert.equal(seen[1], 'bad_frame:2.jpg');
  assert.equal(seen[2], 'bad_frame:3.jpg');
  assert.equal(seen[3], '4.png');
  assert.equal(seen[4], 'camera');
  assert.equal(clock.pending(), 0, 'no more ticks once played out');
  clock.advance(5000);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(ev.queue.length, 0, 'no more frames');
  ev.off();
  await src.stop();
});

test('free-run with loop: keeps going round; unsubscribing or stop() ends the ticks', async () => {
  const clock = new FakeClock();
  const src = new ReplaySource({ ...base, dir: path.join(root, 'labelled'), fps: 10 }, { clock, log: silentLogger });
  await src.start();
  const ev = events(src);
  const files: string[] = [];
  for (let i = 0; i < 7; i++) {
    clock.advance(100);
    files.push(path.basename(((await ev.next()) as Frame).file!));
  }
  assert.deepEqual(files, ['a.png', 'b.png', 'c.jpg', 'a.png', 'b.png', 'c.jpg', 'a.png']);
  assert.equal(src.stats().fps, 10);
  ev.off();
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(clock.pending(), 0);
  const ev2 = events(src);
  clock.advance(100);
  assert.equal(path.basename(((await ev2.next()) as Frame).file!), 'b.png');
  await src.stop();
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(clock.pending(), 0);
});

test('decodeSize model: fitFor() decodes at the smallest size covering the model input, aspect kept', async () => {
  const dir = path.join(root, 'big');
  await solid(path.join(dir, 'a.jpg'), 1280, 960, [90, 120, 150]);
  const src = new ReplaySource({ ...base, dir, decodeSize: 'model' }, deps());
  await src.start();
  const full = await src.grab();
  assert.deepEqual([full.width, full.height], [1280, 960]); // no model told yet: every pixel
  src.fitFor({ width: 224, height: 224 });
  const small = await src.grab();
  assert.deepEqual([small.width, small.height], [299, 224]); // covers 224x224, 4:3 kept
  assert.equal(small.data.length, 299 * 224 * 3);
  assert.ok(Math.abs(small.data[0]! - 90) <= 3 && Math.abs(small.data[2]! - 150) <= 3, 'same picture, smaller');
  src.fitFor({ width: 4000, height: 100 }); // never enlarged
  const capped = await src.grab();
  assert.deepEqual([capped.width, capped.height], [1280, 960]);
  src.fitFor({ width: 640, height: 640, resize: 'letterbox' }); // scaled to fit inside 640x640: 640x480 covers it
  const boxed = await src.grab();
  assert.deepEqual([boxed.width, boxed.height], [640, 480]);
  src.fitFor(undefined); // a model that crops needs frame coordinates: full size again
  assert.equal((await src.grab()).width, 1280);
  await src.stop();
});

test('decodeSize full: fitFor() is ignored', async () => {
  const src = new ReplaySource({ ...base, dir: path.join(root, 'big'), decodeSize: 'full' }, deps());
  await src.start();
  src.fitFor({ width: 224, height: 224 });
  assert.equal((await src.grab()).width, 1280);
  await src.stop();
});

test('decodeSize model hands the model the same pixels as full size would (bilinear, not a sharpening resize)', async () => {
  // A 320x240 film frame for a 160x120 model: sharp decodes every pixel (no DCT scaling at 2x), so
  // only the resize kernel could make a difference. A sharpening one (lanczos3) was 0.33 levels
  // off on average with a third more pixel-to-pixel contrast: film-demo's false rejects went 5 -> 50 %.
  const f = renderFilmFrame({ width: 320, height: 240, seed: 3, defectRate: 0 }, 2);
  const file = path.join(root, 'film.jpg');
  await sharp(Buffer.from(f.data), { raw: { width: 320, height: 240, channels: 3 } }).jpeg({ quality: 90 }).toFile(file);
  const spec = { name: 'image', width: 160, height: 120, colour: 'gray', layout: 'nchw', dtype: 'float32' } as const;
  const fitted = await decodeImageFile(file, { colour: 'gray', fit: { width: 160, height: 120 } });
  const full = await decodeImageFile(file, { colour: 'gray' });
  const a = (await prepareInput({ seq: 0, timeNs: 0n, source: 't', ...fitted }, spec)).pixels;
  const b = (await prepareInput({ seq: 0, timeNs: 0n, source: 't', ...full }, spec)).pixels;
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i]! - b[i]!);
  assert.ok(sum / a.length <= 0.05, `mean difference ${sum / a.length}`);
});

test('free-run decodes ahead: two decodes at a time, delivered in order with their tick times; a tick finding both busy is dropped', async () => {
  const clock = new FakeClock();
  const src = new ReplaySource({ ...base, dir: path.join(root, 'many'), fps: 4 }, { clock, log: silentLogger });
  await src.start();
  const ev = events(src);
  const t0 = clock.nowNs();
  clock.advance(750); // three ticks before any decode can finish (the fake clock does not move while sharp works)
  const a = (await ev.next()) as Frame;
  const b = (await ev.next()) as Frame;
  assert.deepEqual([path.basename(a.file!), path.basename(b.file!)], ['0.png', '1.png']);
  assert.deepEqual([a.timeNs - t0, b.timeNs - t0], [250_000_000n, 500_000_000n]);
  assert.equal(src.stats().dropped, 1);
  clock.advance(250); // a decode slot is free again: the next image, not a skipped one
  assert.equal(path.basename(((await ev.next()) as Frame).file!), '2.png');
  ev.off();
  await src.stop();
});

// ---- decodeIn: worker (the inference worker decodes JPEGs; see test/unit/native-jpeg.test.ts) -----

const jpegDecoder = jpegStatus();

/** A folder with a JPEG, a PNG and a file that starts like a JPEG but is cut short. */
async function mixedDir(): Promise<string> {
  const dir = path.join(root, 'mixed');
  await solid(path.join(dir, 'a.jpg'), 640, 480, [90, 120, 150]);
  await solid(path.join(dir, 'b.png'), 64, 48, [10, 20, 30]);
  const jpg = await readFile(path.join(dir, 'a.jpg'));
  await writeFile(path.join(dir, 'c.jpg'), jpg.subarray(0, 300));
  return dir;
}

if (jpegDecoder.available) {
  test('decodeIn worker: a JPEG comes undecoded, its bytes and the fit for the worker; a PNG is decoded here, said once', async () => {
    const dir = await mixedDir();
    const log = memoryLogger();
    const src = new ReplaySource({ ...base, dir, decodeSize: 'model', decodeIn: 'worker' }, { clock: new FakeClock(), log });
    await src.start();
    src.fitFor({ width: 224, height: 224 });
    const a = await src.grab();
    assert.deepEqual([a.width, a.height, a.channels, a.data.length], [0, 0, 3, 0]);
    assert.deepEqual(Buffer.from(a.encoded!.jpeg), await readFile(path.join(dir, 'a.jpg')));
    assert.equal(a.encoded!.jpeg.buffer.byteLength, a.encoded!.jpeg.byteLength, 'owns its ArrayBuffer (transferred to the worker)');
    assert.deepEqual(a.encoded!.fit, { width: 224, height: 224 });
    assert.equal(a.file, path.join(dir, 'a.jpg'));
    const b = await src.grab();
    assert.equal(b.encoded, undefined);
    assert.deepEqual([b.width, b.height, b.data.length], [64, 48, 64 * 48 * 3]);
    // A cut-short JPEG is the worker's to find bad; the pool tells the source, which counts it.
    const c = await src.grab();
    assert.equal(c.data.length, 0);
    assert.equal(src.stats().errors, 0);
    c.encoded!.onBadFrame!();
    assert.equal(src.stats().errors, 1);
    src.fitFor(undefined); // a cropping model: the worker decodes every pixel
    assert.equal((await src.grab()).encoded!.fit, undefined);
    await src.grab(); // b.png again: not said twice
    assert.equal(log.records.filter((r) => /JPEGs only/.test(String(r.msg))).length, 1);
    assert.ok(!log.records.some((r) => /native resize/.test(String(r.msg))), 'this build resizes in the worker natively');
    await src.stop();
  });

  test('decodeIn worker with an addon built before the native resize: JPEGs still go to the worker (sharp resizes there), said at start', async () => {
    const addon = loadNative();
    const resize = addon.resize;
    delete addon.resize;
    try {
      const log = memoryLogger();
      const src = new ReplaySource({ ...base, dir: await mixedDir(), decodeSize: 'model', decodeIn: 'worker' }, { clock: new FakeClock(), log });
      await src.start();
      const warn = log.records.find((r) => /without the native resize/.test(String(r.msg)));
      assert.ok(warn, JSON.stringify(log.records));
      assert.match(String(warn.reason), /stale build.*npm run build:native/);
      assert.ok((await src.grab()).encoded);
      await src.stop();
    } finally {
      addon.resize = resize;
    }
  });
}

test('decodeIn worker without the native decoder: decoded here as with main, the reason logged at start', async () => {
  const dir = await mixedDir();
  const saved = process.env.LINESIGHT_NATIVE;
  process.env.LINESIGHT_NATIVE = 'off';
  resetNativeForTests();
  try {
    const log = memoryLogger();
    const src = new ReplaySource({ ...base, dir, decodeSize: 'model', decodeIn: 'worker' }, { clock: new FakeClock(), log });
    await src.start();
    const warn = log.records.find((r) => /no native JPEG decoder/.test(String(r.msg)));
    assert.ok(warn, JSON.stringify(log.records));
    assert.match(String(warn.reason), /LINESIGHT_NATIVE=off/);
    const a = await src.grab();
    assert.equal(a.encoded, undefined);
    assert.deepEqual([a.width, a.height], [640, 480]);
    await src.grab();
    await assert.rejects(src.grab(), (e: unknown) => e instanceof FrameError && e.reason === 'bad_frame' && /c\.jpg/.test(e.message));
    assert.equal(src.stats().errors, 1);
    await src.stop();
  } finally {
    if (saved === undefined) delete process.env.LINESIGHT_NATIVE;
    else process.env.LINESIGHT_NATIVE = saved;
    resetNativeForTests();
  }
});

if (!jpegDecoder.available) {
  test('no native JPEG decoder in this build: decodeIn worker falls back (above); not allowed where the addon is required', () => {
    assert.notEqual(process.env.LINESIGHT_NATIVE_REQUIRED, '1', jpegDecoder.reason);
  });
}
