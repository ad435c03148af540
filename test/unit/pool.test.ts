// The inference pool end to end with real onnxruntime sessions on worker threads: verdicts and
// provider in every result, provider fallback, bundles refused at start, bad frames, model
// errors, queue limits and priorities, worker crashes and recovery, and a main thread that keeps
// running while a heavy model computes.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { InferencePool, predictFiles, type PredictResult } from '../../src/inference/index.js';
import { threadsPerWorker } from '../../src/inference/pool.js';
import { InferenceError, ModelLoadError, type InferenceResult } from '../../src/inference/types.js';
import { memoryLogger, silentLogger, type Logger } from '../../src/log.js';
import type { Frame } from '../../src/part.js';
import { decodeImageFile } from '../../src/camera/replay.js';
import { jpegStatus } from '../../src/native/jpeg.js';

// ---- fixtures ---------------------------------------------------------------------------------

const tempDirs: string[] = [];
const pools: InferencePool[] = [];
after(async () => {
  await Promise.all(pools.map((p) => p.stop()));
  tempDirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'linesight-pool-'));
  tempDirs.push(d);
  return d;
}

/** Anomaly model on a grey size x size image: score = max pixel (0..1), or log(max - 0.25) with `nanBelow`. */
function maxModel(size: number, opts: { nanBelow?: boolean } = {}): Uint8Array {
  const g = new GraphBuilder();
  const x = g.input('image', 'float32', [1, 1, size, size]);
  let m = g.node('ReduceMax', [x], { keepdims: 1 });
  // log of a negative number is NaN: an all-dark frame makes a model output the head cannot read.
  if (opts.nanBelow) m = g.node('Log', [g.node('Sub', [m, g.constant('float32', [], [0.25])])]);
  g.node('Reshape', [m, g.constant('int64', [2], [1, 1])], {}, { name: 'score' });
  g.output('score', 'float32', [1, 1]);
  return g.toBytes();
}

/** The same score after `layers` 512x512 matrix products: long enough to watch the main thread meanwhile. */
const HEAVY = 512;
function heavyModel(layers = 16): Uint8Array {
  const g = new GraphBuilder();
  const x = g.input('image', 'float32', [1, 1, HEAVY, HEAVY]);
  let y = g.node('Reshape', [x, g.constant('int64', [2], [HEAVY, HEAVY])]);
  // Rows of 1/n: each product replaces every value by its row mean, so the values stay in 0..1.
  const w = g.constant('float32', [HEAVY, HEAVY], new Float32Array(HEAVY * HEAVY).fill(1 / HEAVY));
  for (let i = 0; i < layers; i++) y = g.node('MatMul', [y, w]);
  const m = g.node('ReduceMax', [y], { keepdims: 1 });
  g.node('Reshape', [m, g.constant('int64', [2], [1, 1])], {}, { name: 'score' });
  g.output('score', 'float32', [1, 1]);
  return g.toBytes();
}

function writeBundle(bytes: Uint8Array, size: number, over: Record<string, unknown> = {}): string {
  const dir = tempDir();
  writeFileSync(join(dir, 'model.onnx'), bytes);
  const manifest = {
    schemaVersion: 1,
    name: 'max',
    version: '1.2.3',
    sha256: createHash('sha256').update(bytes).digest('hex'),
    input: { name: 'image', width: size, height: size, colour: 'gray', layout: 'nchw', dtype: 'float32' },
    head: { type: 'anomaly', scoreOutput: 'score' },
    threshold: 0.5,
    ...over,
  };
  writeFileSync(join(dir, 'model.json'), JSON.stringify(manifest));
  return dir;
}

function pool(modelDir: string, over: Partial<ConstructorParameters<typeof InferencePool>[0]> = {}): InferencePool {
  const p = new InferencePool({ modelDir, providers: ['cpu'], workers: 1, intraOpThreads: 1, queueLimit: 4, log: silentLogger, ...over });
  pools.push(p);
  return p;
}

let seq = 0;
const greyFrame = (size: number, value: number): Frame => ({
  seq: ++seq,
  timeNs: process.hrtime.bigint(),
  width: size,
  height: size,
  channels: 1,
  data: new Uint8Array(size * size).fill(value),
  source: 'test',
});

/** Waits (yielding to the event loop) until cond holds; the bound only guards against a hang. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 20_000 && !cond(); i++) await new Promise((r) => setTimeout(r, 1));
  assert.ok(cond(), `never happened: ${what}`);
}

async function rejection(p: Promise<unknown>): Promise<InferenceError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof InferenceError, `expected InferenceError, got ${String(err)}`);
    return err;
  }
  assert.fail('resolved');
}

async function startError(p: InferencePool): Promise<ModelLoadError> {
  try {
    await p.start();
  } catch (err) {
    assert.ok(err instanceof ModelLoadError, `expected ModelLoadError, got ${String(err)}`);
    return err;
  }
  assert.fail('the pool started');
}

const small = writeBundle(maxModel(8), 8);
const heavy = writeBundle(heavyModel(), HEAVY);

// ---- results ----------------------------------------------------------------------------------

test('results carry the model verdict, the model, provider cpu and timings', async () => {
  const p = pool(small);
  await p.start();
  const dark = greyFrame(8, 51);
  dark.data[9] = 204; // max 0.8 >= threshold 0.5
  const r = await p.inspect(dark);
  assert.equal(r.verdict.verdict, 'reject');
  assert.ok(Math.abs(r.verdict.score - 0.8) < 1e-6, String(r.verdict.score));
  assert.equal(r.verdict.threshold, 0.5);
  assert.equal(r.provider, 'cpu');
  assert.deepEqual(r.model, { name: 'max', version: '1.2.3', sha256: createHash('sha256').update(maxModel(8)).digest('hex') });
  for (const [k, v] of Object.entries(r.timings)) assert.ok(Number.isFinite(v) && v >= 0, `${k} = ${v}`);

  const ok = await p.inspect(greyFrame(8, 51), { priority: 'api' });
  assert.equal(ok.verdict.verdict, 'pass');
  assert.equal(ok.provider, 'cpu');
  const info = p.info();
  assert.equal(info.provider, 'cpu');
  assert.equal(info.workers, 1);
  assert.equal(info.manifest.name, 'max');
  await p.stop();
});

test('frames of another size are resized to the model input before inference', async () => {
  const p = pool(small);
  await p.start();
  const r = await p.inspect(greyFrame(32, 255));
  assert.equal(r.verdict.score, 1);
  await p.stop();
});

// ---- providers and bundles refused at start ---------------------------------------------------

test("providers ['cuda', 'cpu']: cuda does not load here, so cpu serves and a warning names cuda", async () => {
  // The installed onnxruntime-node has no CUDA provider library, so creating a cuda session fails.
  const log = memoryLogger();
  const p = pool(small, { providers: ['cuda', 'cpu'], log });
  await p.start();
  assert.equal(p.info().provider, 'cpu');
  assert.equal((await p.inspect(greyFrame(8, 0))).provider, 'cpu');
  const warning = log.records.find((r) => r.level === 'warn' && r.provider === 'cuda');
  assert.ok(warning, JSON.stringify(log.records));
  assert.match(String(warning.error), /cuda/i);
  await p.stop();
});

test('no provider that loads: start refuses, naming each provider tried', async () => {
  const err = await startError(pool(small, { providers: ['cuda', 'tensorrt'] }));
  assert.match(err.message, /no execution provider could load the model \(cuda: .*; tensorrt: .*\)/);
});

test('a tampered bundle is refused at start', async () => {
  const dir = writeBundle(maxModel(8), 8);
  const bytes = maxModel(8);
  bytes[bytes.length - 3]! ^= 1;
  writeFileSync(join(dir, 'model.onnx'), bytes);
  assert.match((await startError(pool(dir))).message, /sha256 mismatch/);
});

test('a manifest that disagrees with the model is refused at start, naming the mismatch', async () => {
  const dir = writeBundle(maxModel(8), 16);
  const err = await startError(pool(dir));
  assert.match(err.message, /manifest input 'image' is 1x1x16x16 \(nchw gray\) but the model expects 1x1x8x8/);
});

// ---- failures per frame -----------------------------------------------------------------------

test('wrongly sized frame data is bad_frame, and the pool goes on serving', async () => {
  const p = pool(small);
  await p.start();
  const broken = { ...greyFrame(8, 0), data: new Uint8Array(60) };
  const err = await rejection(p.inspect(broken));
  assert.equal(err.reason, 'bad_frame');
  assert.match(err.message, /60 bytes of pixel data for 8x8x1 \(64 expected\)/);
  assert.equal((await p.inspect(greyFrame(8, 0))).verdict.verdict, 'pass');
  await p.stop();
});

test('an output the head cannot read is model_error, and the pool goes on serving', async () => {
  const p = pool(writeBundle(maxModel(8, { nanBelow: true }), 8));
  await p.start(); // the mid-grey warm-up gives log(0.25) : readable
  const err = await rejection(p.inspect(greyFrame(8, 0)));
  assert.equal(err.reason, 'model_error');
  assert.match(err.message, /head \(anomaly\): output 'score' contains NaN/);
  const r = await p.inspect(greyFrame(8, 255));
  assert.ok(Math.abs(r.verdict.score - Math.log(0.75)) < 1e-6);
  await p.stop();
});

// ---- queueing (workers held by the test hook, so nothing depends on how long a model runs) ------

test('a full queue refuses with overload; what was admitted completes', async () => {
  const p = pool(small, { queueLimit: 1 });
  await p.start();
  p.testHook('hold');
  const running = p.inspect(greyFrame(8, 10));
  await until(() => p.info().inFlight === 1, 'first frame in flight');
  const waiting = p.inspect(greyFrame(8, 20));
  await until(() => p.info().queued === 1, 'second frame queued');

  const err = await rejection(p.inspect(greyFrame(8, 30)));
  assert.equal(err.reason, 'overload');
  assert.match(err.message, /inference queue full \(1 waiting, limit 1\)/);
  p.testHook('release');
  const [a, b] = await Promise.all([running, waiting]);
  assert.ok(Math.abs(a.verdict.score - 10 / 255) < 1e-6);
  assert.ok(Math.abs(b.verdict.score - 20 / 255) < 1e-6);
  assert.ok(b.timings.queueMs > 0);
  await p.stop();
});

test('line parts go before API requests, and push them out of a full queue', async () => {
  const p = pool(small, { queueLimit: 2 });
  await p.start();
  const done: string[] = [];
  const track = (name: string, r: Promise<InferenceResult>): Promise<unknown> =>
    r.then(
      () => done.push(name),
      (e: InferenceError) => done.push(`${name}:${e.reason}`),
    );

  p.testHook('hold');
  const api0 = track('api0', p.inspect(greyFrame(8, 1), { priority: 'api' }));
  await until(() => p.info().inFlight === 1, 'api0 in flight');
  const api1 = track('api1', p.inspect(greyFrame(8, 2), { priority: 'api' }));
  const api2 = track('api2', p.inspect(greyFrame(8, 3), { priority: 'api' }));
  await until(() => p.info().queued === 2, 'two API requests queued');
  // Queue full: the line part takes the place of the newest API request, and goes first.
  const line = track('line', p.inspect(greyFrame(8, 4), { priority: 'line' }));
  await until(() => done.length === 1, 'api2 pushed out');
  p.testHook('release');
  await Promise.all([api0, api1, api2, line]);
  assert.deepEqual(done, ['api2:overload', 'api0', 'line', 'api1']);
  await p.stop();
});

test('stop() rejects queued and in-flight requests; inspect after stop is refused', async () => {
  const p = pool(small);
  await p.start();
  p.testHook('hold');
  const a = rejection(p.inspect(greyFrame(8, 1)));
  await until(() => p.info().inFlight === 1, 'in flight');
  const b = rejection(p.inspect(greyFrame(8, 2)));
  await until(() => p.info().queued === 1, 'queued');
  await p.stop();
  for (const err of await Promise.all([a, b])) assert.match(err.message, /inference pool stopped/);
  assert.match((await rejection(p.inspect(greyFrame(8, 3)))).message, /not running/);
});

test('two workers take two frames at once', async () => {
  const p = pool(small, { workers: 2 });
  await p.start();
  assert.equal(p.info().workers, 2);
  p.testHook('hold');
  const both = Promise.all([p.inspect(greyFrame(8, 1)), p.inspect(greyFrame(8, 2))]);
  await until(() => p.info().inFlight === 2, 'both in flight');
  assert.equal(p.info().queued, 0);
  p.testHook('release');
  assert.equal((await both).length, 2);
  await p.stop();
});

// ---- worker crashes ---------------------------------------------------------------------------

for (const how of ['exit', 'throw'] as const) {
  test(`a worker that dies (${how}) fails its frame with worker_crash; the pool restarts it and serves the next`, async () => {
    const log = memoryLogger();
    const p = pool(small, { log });
    await p.start();
    p.testHook(`crash-${how}`);
    const err = await rejection(p.inspect(greyFrame(8, 100)));
    assert.equal(err.reason, 'worker_crash');
    assert.match(err.message, how === 'exit' ? /exited with code 3/ : /crash requested by test hook/);

    const next = await p.inspect(greyFrame(8, 255));
    assert.equal(next.verdict.score, 1);
    assert.equal(next.provider, 'cpu');
    assert.ok(log.records.some((r) => r.level === 'error' && r.msg === 'inference worker died; restarting'));
    assert.ok(log.records.some((r) => r.msg === 'inference worker restarted'));
    await p.stop();
  });
}

// ---- the main thread stays free -----------------------------------------------------------------

test('the main event loop keeps ticking while a heavy model runs', async () => {
  const p = pool(heavy);
  await p.start();
  let pending = true;
  let ticksDuringInference = 0;
  const timer = setInterval(() => {
    if (pending && p.info().inFlight === 1) ticksDuringInference++;
  }, 1);
  const r = await p.inspect(greyFrame(HEAVY, 128));
  pending = false;
  clearInterval(timer);
  // Were session.run on this thread, no timer could fire while it ran.
  assert.ok(ticksDuringInference > 0, `timer ticks while the worker computed: ${ticksDuringInference} (inferMs ${r.timings.inferMs})`);
  await p.stop();
});

// ---- predictFiles -------------------------------------------------------------------------------

test('predictFiles: one result per image (folders searched recursively); an unreadable one is named, the rest go on', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'sub'));
  const png = (v: number) => sharp(Buffer.alloc(8 * 8, v), { raw: { width: 8, height: 8, channels: 1 } }).png().toBuffer();
  writeFileSync(join(dir, 'a.png'), await png(255));
  writeFileSync(join(dir, 'b.jpg'), 'not a jpeg');
  writeFileSync(join(dir, 'notes.txt'), 'ignored');
  writeFileSync(join(dir, 'sub', 'c.png'), await png(0));
  const missing = join(dir, 'missing.png');

  const results: PredictResult[] = [];
  for await (const r of predictFiles([dir, missing], { modelDir: small, log: silentLogger as Logger })) results.push(r);
  assert.deepEqual(
    results.map((r) => [r.file, r.verdict?.verdict ?? 'error']),
    [
      [join(dir, 'a.png'), 'reject'],
      [join(dir, 'b.jpg'), 'error'],
      [join(dir, 'sub', 'c.png'), 'pass'],
      [missing, 'error'],
    ],
  );
  assert.match(results[1]!.error!, /b\.jpg: cannot decode image/);
  assert.match(results[3]!.error!, /missing\.png: no such file or folder/);
  assert.equal(results[0]!.score, 1);
  assert.deepEqual(results[0]!.defects, []);
  for (const r of results) {
    assert.equal(r.provider, 'cpu');
    assert.equal(r.model.name, 'max');
  }
});

test('workers run workerNice levels below the main thread (Linux: nice is per thread), the main thread untouched', async () => {
  const niceOf = (): Map<string, number> => {
    const out = new Map<string, number>();
    for (const tid of readdirSync('/proc/self/task')) {
      // comm may hold spaces: the fields after its closing parenthesis; nice is field 19 of stat.
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      out.set(tid, Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]));
    }
    return out;
  };
  const base = niceOf().get(String(process.pid))!;
  const before = new Set(niceOf().keys());
  const p = pool(small, { workers: 2, workerNice: 3 });
  await p.start();
  try {
    const lowered = [...niceOf()].filter(([tid, n]) => !before.has(tid) && n === Math.min(19, base + 3));
    assert.ok(lowered.length >= 2, `two worker threads at nice ${base + 3} (threads: ${JSON.stringify([...niceOf()])})`);
    assert.equal(niceOf().get(String(process.pid)), base, 'the main thread keeps its priority');
    await p.inspect(greyFrame(8, 51)); // and they still serve
  } finally {
    await p.stop();
  }
});

test('threadsPerWorker: configured threads win; 0 = onnxruntime default for one worker, the cores shared among several', () => {
  const cores = availableParallelism();
  assert.equal(threadsPerWorker(3, 2), 3);
  assert.equal(threadsPerWorker(0, 1), 0);
  assert.equal(threadsPerWorker(0, 2), Math.max(1, Math.floor(cores / 2)));
  assert.equal(threadsPerWorker(0, cores * 4), 1);
});

// ---- encoded frames (camera.replay.decodeIn: worker) --------------------------------------------

/** A grey 128x96 JPEG: background `bg`, a 32x32 block of `spot` (score = the brightest pixel). */
async function greyJpeg(bg: number, spot: number, at = 32): Promise<Buffer> {
  const px = Buffer.alloc(128 * 96, bg);
  for (let y = at; y < at + 32; y++) px.fill(spot, y * 128 + at, y * 128 + at + 32);
  return sharp(px, { raw: { width: 128, height: 96, channels: 1 } }).jpeg({ quality: 95 }).toBuffer();
}

const encodedFrame = (jpeg: Buffer, onBadFrame?: () => void): Frame => ({
  seq: ++seq,
  timeNs: process.hrtime.bigint(),
  width: 0,
  height: 0,
  channels: 1,
  data: new Uint8Array(0),
  encoded: { jpeg: new Uint8Array(jpeg), fit: { width: 8, height: 8 }, ...(onBadFrame ? { onBadFrame } : {}) },
  source: 'replay',
  file: '/line/part.jpg',
});

if (jpegStatus().available) {
  test('encoded frames: the worker decodes them, same verdicts as frames decoded here, and the pixels come back into the frame', async () => {
    const p = pool(small, { workers: 2 });
    await p.start();
    const images = [await greyJpeg(40, 40), await greyJpeg(40, 230), await greyJpeg(90, 200, 0), await greyJpeg(60, 100), await greyJpeg(20, 250, 64)];
    // As the replay camera decodes on the main thread (decodeIn: main), for an 8x8 model.
    const decodedHere = await Promise.all(images.map((bytes) => decodeImageFile('x.jpg', { colour: 'gray', fit: { width: 8, height: 8 }, bytes })));
    const here = await Promise.all(decodedHere.map((d, i) => p.inspect({ ...encodedFrame(images[i]!), encoded: undefined, ...d })));
    const frames = images.map((bytes) => encodedFrame(bytes));
    const there = await Promise.all(frames.map((f) => p.inspect(f)));
    assert.deepEqual(there.map((r) => r.verdict.verdict), here.map((r) => r.verdict.verdict));
    assert.deepEqual(here.map((r) => r.verdict.verdict), ['pass', 'reject', 'reject', 'pass', 'reject']);
    there.forEach((r, i) => assert.ok(Math.abs(r.verdict.score - here[i]!.verdict.score) < 0.05, `image ${i}: ${r.verdict.score} vs ${here[i]!.verdict.score}`));
    frames.forEach((f, i) => {
      // Decoded at 1/4 (32x24), then shrunk to cover the 8x8 input as the main path decodes
      // (11x8): the frame now holds those pixels, the size the main path gives; its JPEG went to
      // the worker.
      const d = decodedHere[i]!;
      assert.deepEqual([f.width, f.height, f.channels, f.data.length], [d.width, d.height, 1, d.width * d.height]);
      assert.deepEqual([f.width, f.height], [11, 8]);
      assert.equal(f.encoded!.jpeg.byteLength, 0, 'transferred, not copied');
    });
    assert.ok(there.every((r) => r.timings.preprocessMs > 0 && r.timings.inferMs > 0));
    await p.stop();
  });

  /** score = a weighted mean of every input value (weights fixed, uneven): any pixel that differs moves it. */
  function checksumModel(w: number, h: number, c: 1 | 3): Uint8Array {
    const g = new GraphBuilder();
    const x = g.input('image', 'float32', [1, c, h, w]);
    const n = c * w * h;
    const weights = Float32Array.from({ length: n }, (_, i) => ((i * 7919) % 1000) / 1000 + 0.1);
    const sum = weights.reduce((a, b) => a + b, 0);
    const s1 = g.node('ReduceSum', [g.node('Mul', [x, g.constant('float32', [1, c, h, w], weights.map((v) => v / sum))])], { keepdims: 1 });
    g.node('Reshape', [s1, g.constant('int64', [2], [1, 1])], {}, { name: 'score' });
    g.output('score', 'float32', [1, 1]);
    return g.toBytes();
  }

  test('encoded frames: the worker prepares them as prepareInput does (native resize: the same input, the same score)', async () => {
    // A 320x240 film-like JPEG (gradient, edges, noise) for stretch and letterbox models, grey and rgb.
    const W = 320;
    const H = 240;
    const px = Buffer.alloc(W * H * 3);
    for (let i = 0, r = 12345; i < px.length; i++) {
      r = (r * 1103515245 + 12345) >>> 0;
      const p = Math.floor(i / 3);
      const x = p % W;
      const y = Math.floor(p / W);
      px[i] = Math.min(255, ((x + 2 * y) >> 1) % 200 + (((x >> 4) + (y >> 4)) % 2 ? 40 : 0) + (r >>> 28));
    }
    const jpeg = await sharp(px, { raw: { width: W, height: H, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
    for (const [colour, resize, w, h] of [['gray', 'stretch', 56, 40], ['rgb', 'letterbox', 48, 48], ['rgb', 'stretch', 100, 30], ['gray', 'letterbox', 30, 64]] as const) {
      const c = colour === 'gray' ? 1 : 3;
      const dir = writeBundle(checksumModel(w, h, c), w, { input: { name: 'image', width: w, height: h, colour, layout: 'nchw', dtype: 'float32', resize } });
      const p = pool(dir);
      await p.start();
      const f: Frame = { ...encodedFrame(jpeg), channels: c, encoded: { jpeg: new Uint8Array(jpeg), fit: { width: w, height: h, resize } } };
      const there = await p.inspect(f);
      assert.ok(f.width > 0 && f.data.length === f.width * f.height * c, 'decoded pixels came back');
      // The same decoded pixels through the main thread's prepareInput (sharp).
      const here = await p.inspect({ ...f, encoded: undefined, data: new Uint8Array(f.data) });
      assert.equal(there.verdict.score, here.verdict.score, `${colour} ${resize} ${w}x${h} from ${f.width}x${f.height}: the worker's input is prepareInput's`);
      await p.stop();
    }
  });

  test('a corrupt encoded frame is bad_frame, named, counted by its source; the worker goes on serving', async () => {
    const p = pool(small);
    await p.start();
    const good = await greyJpeg(40, 230);
    let bad = 0;
    const f = encodedFrame(good.subarray(0, Math.floor(good.length / 2)), () => bad++);
    const err = await rejection(p.inspect(f));
    assert.equal(err.reason, 'bad_frame');
    assert.match(err.message, /^replay camera: cannot decode \/line\/part\.jpg: JPEG: Premature end of JPEG file/);
    assert.equal(bad, 1);
    assert.equal(f.data.length, 0, 'no pixels for a frame that did not decode');
    // Inspected again (a shadow model after the active one): its JPEG is gone, said so.
    assert.match((await rejection(p.inspect(f))).message, /not decoded, and its JPEG was used up/);
    const notJpeg = await rejection(p.inspect(encodedFrame(Buffer.from('GIF89a...'))));
    assert.equal(notJpeg.reason, 'bad_frame');
    assert.match(notJpeg.message, /not a JPEG/);
    assert.equal((await p.inspect(encodedFrame(good))).verdict.verdict, 'reject');
    assert.equal(p.info().workers, 1);
    await p.stop();
  });
} else {
  test('no native JPEG decoder: an encoded frame (never sent by the replay camera then) fails as model_error naming why', async () => {
    const p = pool(small);
    await p.start();
    const err = await rejection(p.inspect(encodedFrame(await greyJpeg(40, 40))));
    assert.equal(err.reason, 'model_error');
    assert.match(err.message, /native JPEG decoder unavailable/);
    await p.stop();
  });
}
