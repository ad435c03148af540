// The native V4L2 source against vivid (the kernel's virtual camera): formats, mmap streaming,
// conversion to gray/rgb, driver timestamps, controls.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SystemClock } from '../../../src/clock.js';
import { silentLogger } from '../../../src/log.js';
import type { Frame } from '../../../src/part.js';
import { V4l2Source, type V4l2Options } from '../../../src/camera/v4l2.js';
import { loadNative, type V4l2FormatDesc } from '../../../src/native/addon.js';
import { hilEnv } from '../lib.js';

const env = hilEnv();
const clock = new SystemClock();

/**
 * vivid's default picture is 75% colour bars: white, yellow, cyan, green, magenta, red, blue, black.
 * The pixel at the centre of each bar, on a row below the text overlay.
 */
function bars(f: Frame): number[][] {
  const y = Math.round(f.height * 0.75);
  if (f.height === 1) return Array.from(f.data, (v) => [v]); // already the 8 bar centres
  return Array.from({ length: 8 }, (_, bar) => {
    const x = Math.round(((bar + 0.5) * f.width) / 8);
    const i = (y * f.width + x) * f.channels;
    return Array.from(f.data.subarray(i, i + f.channels));
  });
}
const BARS_RGB = [
  [1, 1, 1],
  [1, 1, 0],
  [0, 1, 1],
  [0, 1, 0],
  [1, 0, 1],
  [1, 0, 0],
  [0, 0, 1],
  [0, 0, 0],
].map((c) => c.map((on) => on * 191));

function assertBars(f: Frame, grayCamera: boolean): void {
  const got = bars(f);
  if (f.channels === 3 && grayCamera) {
    // A gray camera in rgb: each pixel's gray in all three channels.
    for (const px of got) assert.ok(px[0] === px[1] && px[1] === px[2], `gray pixel ${px.join('/')}`);
    assertBars({ ...f, channels: 1, data: Uint8Array.from(got.flatMap((p) => [p[0]!])), width: 8, height: 1 }, true);
    return;
  }
  if (f.channels === 3) {
    got.forEach((px, i) =>
      px.forEach((v, c) => assert.ok(Math.abs(v - BARS_RGB[i]![c]!) <= 4, `bar ${i}: ${px.join('/')} vs ${BARS_RGB[i]!.join('/')}`)),
    );
  } else {
    // Luma falls bar by bar from white to black, whatever the camera's luma weights.
    const l = got.map((p) => p[0]!);
    for (let i = 1; i < 8; i++) assert.ok(l[i]! < l[i - 1]!, `bar luma falls: ${l.join(' ')}`);
    assert.ok(l[0]! >= 180 && l[7]! <= 5, `white bar ~191 and black bar ~0 on a full-range scale: ${l.join(' ')}`);
  }
}

function stats(f: Frame): { mean: number; distinct: number } {
  let sum = 0;
  const seen = new Set<number>();
  for (let i = 0; i < f.data.length; i += 7) {
    sum += f.data[i]!;
    seen.add(f.data[i]!);
  }
  return { mean: sum / Math.ceil(f.data.length / 7), distinct: seen.size };
}

async function withSource<T>(opts: Partial<V4l2Options>, fn: (s: V4l2Source) => Promise<T>): Promise<T> {
  const s = new V4l2Source({ device: env.video, width: 640, height: 360, colour: 'gray', stallTimeoutMs: 20_000, ...opts }, { clock, log: silentLogger });
  await s.start();
  try {
    return await fn(s);
  } finally {
    await s.stop();
  }
}

describe('V4L2 source on vivid', () => {
  let formats: V4l2FormatDesc[];
  before(async () => {
    const dev = await loadNative().v4l2.open(env.video);
    try {
      formats = await dev.formats();
      assert.equal(dev.info().driver, 'vivid');
    } finally {
      dev.close();
    }
  });
  after(() => {});

  test('the camera lists YUYV, GREY and RGB3 with 640x360 among the sizes', () => {
    for (const fourcc of ['YUYV', 'GREY', 'RGB3']) {
      const f = formats.find((x) => x.fourcc === fourcc);
      assert.ok(f, `${fourcc} in ${formats.map((x) => x.fourcc).join(',')}`);
      assert.ok(
        f.sizes.some((s) => 'width' in s && s.width === 640 && s.height === 360),
        `${fourcc} 640x360 in ${JSON.stringify(f.sizes)}`,
      );
    }
  });

  for (const [format, colour, channels] of [
    ['YUYV', 'gray', 1],
    ['YUYV', 'rgb', 3],
    ['GREY', 'gray', 1],
    ['GREY', 'rgb', 3],
    ['RGB3', 'rgb', 3],
    ['auto', 'gray', 1],
  ] as const) {
    test(`${format} -> ${colour}: whole frames with driver timestamps, in order`, async () => {
      await withSource({ format, colour }, async (s) => {
        const t0 = clock.nowNs();
        const frames = [await s.grab(), await s.grab(), await s.grab()];
        const t1 = clock.nowNs();
        for (const f of frames) {
          assert.equal(f.source, 'v4l2');
          assert.equal(f.width, 640);
          assert.equal(f.height, 360);
          assert.equal(f.channels, channels);
          assert.equal(f.data.length, 640 * 360 * channels);
          // The driver's stamp is on CLOCK_MONOTONIC, the clock of hrtime/SystemClock (not
          // REALTIME, not zero-based). vivid stamps the ideal end of each frame's period, which
          // can lie a little after the dequeue, so only the clock is checked here, not the order.
          assert.ok(f.timeNs > t0 - 2_000_000_000n && f.timeNs < t1 + 2_000_000_000n, `${f.timeNs} near [${t0}, ${t1}]`);
          assertBars(f, format === 'GREY' || (format === 'auto' && colour === 'gray'));
        }
        assert.ok(frames[1]!.seq > frames[0]!.seq && frames[2]!.seq > frames[1]!.seq);
        assert.ok(frames[1]!.timeNs > frames[0]!.timeNs && frames[2]!.timeNs > frames[1]!.timeNs);
        if (format === 'auto') assert.equal(s.format?.fourcc, 'GREY', 'auto picks the format that needs no conversion');
        assert.equal(s.stats().errors, 0);
      });
    });
  }

  test('onFrame delivers every frame while running', async () => {
    await withSource({ format: 'YUYV' }, async (s) => {
      const got: Frame[] = [];
      const off = s.onFrame((f) => got.push(f));
      while (got.length < 5) await s.grab();
      off();
      assert.ok(got.length >= 5);
      for (let i = 1; i < got.length; i++) assert.equal(got[i]!.seq, got[i - 1]!.seq + 1);
    });
  });

  test('brightness and gain are set and read back; brightness changes the picture', async () => {
    await withSource({ format: 'YUYV', controls: { Brightness: 10 } }, async (s) => {
      const names = (await s.controls()).map((c) => c.name);
      assert.ok(names.includes('Brightness'), names.join(', '));
      const dark = await meanAfterSettling(s);
      assert.equal(await s.setControl('brightness', 245), 245);
      const bright = await meanAfterSettling(s);
      assert.ok(bright > dark + 20, `brighter picture: ${dark.toFixed(1)} -> ${bright.toFixed(1)}`);
      const gain = (await s.controls()).find((c) => c.name === 'Gain');
      assert.ok(gain, 'vivid has a Gain control');
      const v = Math.min(gain.max, gain.min + gain.step * 3);
      assert.equal(await s.setControl('gain', v), v);
      const autogain = (await s.controls()).find((c) => c.name === 'Gain, Automatic');
      if (autogain) assert.equal(autogain.value, 0, 'auto gain switched off for a manual gain');
      await assert.rejects(s.setControl('exposure', 1), /no control 'exposure'.*Brightness/);
    });
  });

  test('stop releases the camera: a second source can stream from it afterwards, not during', async () => {
    const first = new V4l2Source({ device: env.video, width: 640, height: 360, colour: 'gray', format: 'YUYV' }, { clock, log: silentLogger });
    await first.start();
    await first.grab();
    const second = new V4l2Source({ device: env.video, width: 640, height: 360, colour: 'gray', format: 'YUYV' }, { clock, log: silentLogger });
    await assert.rejects(second.start(), /busy|EBUSY/);
    await first.stop();
    await second.start();
    await second.grab();
    await second.stop();
  });

  test('a missing device is a clear camera error', async () => {
    const s = new V4l2Source({ device: '/dev/video9', width: 640, height: 360, colour: 'gray' }, { clock, log: silentLogger });
    await assert.rejects(s.start(), (e: Error) => e.name === 'FrameError' && /\/dev\/video9 does not exist/.test(e.message));
  });
});

async function meanAfterSettling(s: V4l2Source): Promise<number> {
  // Frames already queued in the driver were captured with the old setting: skip a few.
  for (let i = 0; i < 4; i++) await s.grab();
  return stats(await s.grab()).mean;
}
