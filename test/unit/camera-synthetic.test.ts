import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeClock } from '../../src/clock.js';
import type { Frame } from '../../src/part.js';
import { FrameError } from '../../src/camera/types.js';
import { FILM_DEFECT_CLASSES, SyntheticSource, renderFilmFrame } from '../../src/camera/synthetic.js';
import { FpsMeter, Pacer } from '../../src/camera/kit.js';
import { parseConfig } from '../../src/config/load.js';

const W = 160;
const H = 120;
const opts = (defectRate: number, seed = 3) => ({ width: W, height: H, seed, defectRate });
const cfg = { width: W, height: H, seed: 3, defectRate: 0.5, fps: 4 };

const equalBytes = (a: Uint8Array, b: Uint8Array): boolean =>
  a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));

test('renderFilmFrame is deterministic for (seed, index) and differs across them', () => {
  const a = renderFilmFrame(opts(0.5), 11);
  const b = renderFilmFrame(opts(0.5), 11);
  assert.ok(equalBytes(a.data, b.data));
  assert.deepEqual(a.truth, b.truth);
  assert.ok(!equalBytes(a.data, renderFilmFrame(opts(0.5), 12).data), 'next index differs');
  assert.ok(!equalBytes(a.data, renderFilmFrame(opts(0.5, 4), 11).data), 'other seed differs');
});

test('frame shape: RGB HWC of the requested size, odd sizes too', () => {
  for (const [w, h] of [[320, 240], [33, 47], [640, 480]] as const) {
    const f = renderFilmFrame({ width: w, height: h, seed: 1, defectRate: 1 }, 0);
    assert.equal(f.width, w);
    assert.equal(f.height, h);
    assert.equal(f.channels, 3);
    assert.ok(f.data instanceof Uint8Array);
    assert.equal(f.data.length, w * h * 3);
    for (const { box } of f.truth.boxes ?? []) {
      const [x, y, bw, bh] = box;
      assert.ok(x >= 0 && y >= 0 && bw >= 1 && bh >= 1 && x + bw <= w && y + bh <= h, `box ${box} inside ${w}x${h}`);
    }
  }
  assert.throws(() => renderFilmFrame({ width: 0, height: 10, seed: 1, defectRate: 0 }, 0), RangeError);
});

test('looks like film: light, slightly tinted, textured, noisy but not blown out', () => {
  const f = renderFilmFrame(opts(0), 5);
  const mean = [0, 0, 0];
  for (let i = 0; i < f.data.length; i++) mean[i % 3]! += f.data[i]!;
  const n = W * H;
  const [r, g, b] = mean.map((m) => m / n) as [number, number, number];
  for (const m of [r, g, b]) assert.ok(m > 150 && m < 245, `channel mean ${m} is light`);
  assert.ok(b > r, 'bluish tint');
  // Sensor noise: neighbouring pixels differ by a few grey levels, not zero and not a lot.
  let d = 0;
  for (let y = 0; y < H; y++) for (let x = 0; x < W - 1; x++) d += Math.abs(f.data[(y * W + x) * 3 + 1]! - f.data[(y * W + x + 1) * 3 + 1]!);
  const meanNeighbourDiff = d / (H * (W - 1));
  assert.ok(meanNeighbourDiff > 1.5 && meanNeighbourDiff < 8, `neighbour diff ${meanNeighbourDiff}`);
  let sat = 0;
  for (const v of f.data) if (v === 0 || v === 255) sat++;
  assert.equal(sat, 0, 'no clipped pixels on a defect-free part');
  // Lighting varies part to part.
  const meanOf = (fr: { data: Uint8Array }) => fr.data.reduce((s, v) => s + v, 0) / fr.data.length;
  const means = Array.from({ length: 10 }, (_, i) => meanOf(renderFilmFrame(opts(0), i)));
  assert.ok(Math.max(...means) - Math.min(...means) > 5, 'brightness varies between parts');
});

test('defectRate: 0 → all pass, 1 → all reject, 0.2 → about a fifth', () => {
  for (let i = 0; i < 100; i++) {
    const t = renderFilmFrame(opts(0), i).truth;
    assert.deepEqual(t, { verdict: 'pass', defects: [], boxes: [] });
  }
  for (let i = 0; i < 100; i++) {
    const t = renderFilmFrame(opts(1), i).truth;
    assert.equal(t.verdict, 'reject');
    assert.ok(t.defects.length >= 1 && t.boxes!.length >= t.defects.length);
    assert.equal(new Set(t.defects).size, t.defects.length, 'classes listed once');
    assert.deepEqual(new Set(t.boxes!.map((b) => b.class)), new Set(t.defects));
  }
  const N = 1000;
  let rejects = 0;
  for (let i = 0; i < N; i++) if (renderFilmFrame({ width: 48, height: 48, seed: 9, defectRate: 0.2 }, i).truth.verdict === 'reject') rejects++;
  // Binomial(1000, 0.2): sd ≈ 12.6; 5 sd either side.
  assert.ok(Math.abs(rejects - 200) < 64, `rejects ${rejects}`);
});

test('every defect class occurs, with boxes where the pixels changed; mostly visible, some faint', () => {
  const seen = new Set<string>();
  const peaks: number[] = [];
  let strayPixels = 0;
  for (let i = 0; i < 200; i++) {
    // Same (seed, index) with and without defects: only the defect pixels differ.
    const clean = renderFilmFrame(opts(0), i);
    const bad = renderFilmFrame(opts(1), i);
    const boxes = bad.truth.boxes!;
    for (const b of boxes) seen.add(b.class);
    const inBox = (x: number, y: number, pad: number) =>
      boxes.some(({ box: [bx, by, bw, bh] }) => x >= bx - pad && x < bx + bw + pad && y >= by - pad && y < by + bh + pad);
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const k = (y * W + x) * 3 + 1;
        if (Math.abs(clean.data[k]! - bad.data[k]!) > 8 && !inBox(x, y, 2)) strayPixels++;
      }
    }
    if (boxes.length === 1) {
      const [bx, by, bw, bh] = boxes[0]!.box;
      let peak = 0;
      for (let y = by; y < by + bh; y++) {
        for (let x = bx; x < bx + bw; x++) {
          const k = (y * W + x) * 3 + 1;
          peak = Math.max(peak, Math.abs(clean.data[k]! - bad.data[k]!));
        }
      }
      peaks.push(peak);
    }
  }
  assert.deepEqual([...seen].sort(), [...FILM_DEFECT_CLASSES].sort());
  assert.equal(strayPixels, 0, 'clear changes all lie inside the truth boxes');
  // The sensor noise is ~2-3 levels: 15+ levels is plainly visible, under 15 is faint.
  const visible = peaks.filter((p) => p >= 15).length / peaks.length;
  assert.ok(visible > 0.75, `visible share ${visible}`);
  assert.ok(peaks.some((p) => p < 15), 'some defects are faint');
  assert.ok(peaks.every((p) => p >= 3), 'but none is absent');
});

test('SyntheticSource: constructor does nothing; grab before start rejects', async () => {
  const clock = new FakeClock();
  const src = new SyntheticSource(cfg, { clock });
  assert.equal(clock.pending(), 0);
  assert.equal(src.name, 'synthetic');
  await assert.rejects(src.grab(), (e: unknown) => e instanceof FrameError && e.reason === 'camera');
  assert.deepEqual(src.stats(), { frames: 0, errors: 0, stalls: 0, restarts: 0, fps: 0 });
});

test('SyntheticSource: grab renders the next index, with truth, source and clock time', async () => {
  const clock = new FakeClock();
  const src = new SyntheticSource(cfg, { clock });
  await src.start();
  for (let i = 0; i < 3; i++) {
    const f = await src.grab();
    const ref = renderFilmFrame(cfg, i);
    assert.equal(f.seq, i);
    assert.equal(f.source, 'synthetic');
    assert.equal(f.timeNs, clock.nowNs());
    assert.equal(f.width, W);
    assert.equal(f.height, H);
    assert.equal(f.channels, 3);
    assert.ok(equalBytes(f.data, ref.data));
    assert.deepEqual(f.truth, ref.truth);
    clock.advance(10);
  }
  assert.equal(src.stats().frames, 3);
  await src.stop();
});

test('SyntheticSource: onFrame emits at cfg.fps while subscribed; stop clears the timers', async () => {
  const clock = new FakeClock();
  const src = new SyntheticSource(cfg, { clock });
  const got: Frame[] = [];
  const off = src.onFrame((f) => got.push(f));
  clock.advance(1000);
  assert.equal(got.length, 0, 'nothing before start()');
  await src.start();
  const t0 = clock.nowNs();
  clock.advance(1000);
  assert.equal(got.length, 4);
  assert.deepEqual(got.map((f) => f.seq), [0, 1, 2, 3]);
  assert.deepEqual(got.map((f) => f.timeNs - t0), [250_000_000n, 500_000_000n, 750_000_000n, 1_000_000_000n]);
  assert.equal(src.stats().fps, 4);
  // A throwing subscriber must not stop the others.
  const other: Frame[] = [];
  const off2 = src.onFrame(() => {
    throw new Error('subscriber bug');
  });
  const off3 = src.onFrame((f) => other.push(f));
  clock.advance(500);
  assert.equal(got.length, 6);
  assert.equal(other.length, 2);
  off();
  off2();
  off3();
  clock.advance(1000);
  assert.equal(got.length, 6, 'no frames after unsubscribing');
  assert.equal(clock.pending(), 0, 'no timer left when nobody listens');
  src.onFrame((f) => got.push(f));
  clock.advance(250);
  assert.equal(got.length, 7);
  await src.stop();
  assert.equal(clock.pending(), 0, 'stop() clears timers');
  clock.advance(2000);
  assert.equal(got.length, 7);
  // grab and free-run share one sequence; frames count both.
  assert.equal(src.stats().frames, 7);
});

test('Pacer skips missed slots instead of bursting, and never overlaps an async tick', async () => {
  const clock = new FakeClock();
  let ticks = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  let release: (() => void) | undefined;
  const p = new Pacer(clock, 10, async () => {
    ticks++;
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    await new Promise<void>((r) => (release = r));
    inFlight--;
  });
  p.start();
  clock.advance(100);
  assert.equal(ticks, 1);
  clock.advance(1000); // the tick is still running: no new tick piles up
  assert.equal(ticks, 1);
  release!();
  await new Promise((r) => setImmediate(r));
  clock.advance(100);
  assert.equal(ticks, 2, 'one tick at the next slot, not ten');
  assert.equal(maxInFlight, 1);
  p.stop();
  release!();
  await new Promise((r) => setImmediate(r));
  assert.equal(clock.pending(), 0);
});

test('FpsMeter forgets old frames', () => {
  const clock = new FakeClock();
  const m = new FpsMeter(clock, 2000);
  for (let i = 0; i < 11; i++) {
    m.tick();
    clock.advance(100);
  }
  assert.ok(Math.abs(m.fps() - 10) < 1e-9);
  clock.advance(5000);
  assert.equal(m.fps(), 0);
});

test('render time of a 320x240 frame (reported, not asserted)', () => {
  const o = { width: 320, height: 240, seed: 1, defectRate: 0.2 };
  for (let i = 0; i < 10; i++) renderFilmFrame(o, i);
  const n = 100;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) renderFilmFrame(o, i);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6 / n;
  console.log(`# renderFilmFrame 320x240: ${ms.toFixed(2)} ms/frame`);
});

test('createFrameSource picks the source named by cfg.source, constructing without side effects', async () => {
  const { createFrameSource } = await import('../../src/camera/index.js');
  const { ReplaySource } = await import('../../src/camera/replay.js');
  const { FfmpegSource } = await import('../../src/camera/ffmpeg.js');
  const { silentLogger } = await import('../../src/log.js');
  const clock = new FakeClock();
  const defaults = parseConfig({}).camera;
  const camera = {
    ...defaults,
    source: 'synthetic' as 'synthetic' | 'replay' | 'ffmpeg',
    synthetic: cfg,
    replay: { ...defaults.replay, dir: '/nonexistent', order: 'sorted' as const, loop: true, seed: 1, fps: 4, colour: 'rgb' as const },
    ffmpeg: {
      ...defaults.ffmpeg,
      input: 'x', inputArgs: [], width: 64, height: 48, colour: 'rgb' as const, ffmpegPath: '/nonexistent/ffmpeg',
      stallTimeoutMs: 2000, restartMinMs: 250, restartMaxMs: 10000,
    },
  };
  const deps = { clock, log: silentLogger };
  const syn = createFrameSource(camera, deps);
  assert.ok(syn instanceof SyntheticSource);
  await syn.start();
  assert.deepEqual((await syn.grab()).truth, renderFilmFrame(cfg, 0).truth);
  await syn.stop();
  assert.ok(createFrameSource({ ...camera, source: 'replay' }, deps) instanceof ReplaySource);
  const ff = createFrameSource({ ...camera, source: 'ffmpeg' }, deps);
  assert.ok(ff instanceof FfmpegSource);
  assert.equal(ff.name, 'ffmpeg');
  assert.equal(clock.pending(), 0, 'constructors start nothing');
});
