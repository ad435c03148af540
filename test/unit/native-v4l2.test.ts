// V4L2 on a host without a camera: the capture thread's pixel conversion (checked against a
// reference written from the formulas), the source's format choice, MJPEG decoding with sharp,
// bad frames, device failure and reopen, and clear errors for devices that are not there.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import sharp from 'sharp';
import { FakeClock } from '../../src/clock.js';
import { FrameError } from '../../src/camera/types.js';
import { chooseFormat, findControl, V4l2Source, type V4l2Options } from '../../src/camera/v4l2.js';
import { memoryLogger, silentLogger } from '../../src/log.js';
import type { Frame } from '../../src/part.js';
import { loadNative, type NativeAddon, type V4l2Control, type V4l2Device, type V4l2FormatDesc, type V4l2NativeFrame } from '../../src/native/addon.js';

const v4l2 = loadNative().v4l2;
const clip = (v: number) => Math.max(0, Math.min(255, v));

/** Reference YUYV (BT.601 limited range) -> rgb / gray, straight from the formulas. */
function refYuyv(src: Uint8Array, w: number, h: number, stride: number, target: 'rgb' | 'gray'): Uint8Array {
  const out = new Uint8Array(w * h * (target === 'rgb' ? 3 : 1));
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const p = y * stride + Math.floor(x / 2) * 4;
      const Y = src[p + (x % 2) * 2]!;
      const U = src[p + 1]! - 128;
      const V = src[p + 3]! - 128;
      const c = 298 * (Y - 16) + 128;
      if (target === 'gray') out[y * w + x] = clip(c >> 8);
      else {
        const o = (y * w + x) * 3;
        out[o] = clip((c + 409 * V) >> 8);
        out[o + 1] = clip((c - 100 * U - 208 * V) >> 8);
        out[o + 2] = clip((c + 516 * U) >> 8);
      }
    }
  }
  return out;
}

function noise(n: number, seed = 7): Uint8Array {
  const a = new Uint8Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    a[i] = s >>> 24;
  }
  return a;
}

describe('native pixel conversion', () => {
  test('YUYV -> rgb and gray match the BT.601 reference, with row padding', () => {
    const w = 6, h = 3, stride = 16; // 12 bytes of pixels + 4 of padding per row
    const src = noise(stride * h);
    assert.deepEqual(new Uint8Array(v4l2.convert(src, 'YUYV', w, h, stride, 'rgb')), refYuyv(src, w, h, stride, 'rgb'));
    assert.deepEqual(new Uint8Array(v4l2.convert(src, 'YUYV', w, h, stride, 'gray')), refYuyv(src, w, h, stride, 'gray'));
  });

  test('known colours: 75% bars in YUYV come out as the RGB bars', () => {
    // BT.601 limited-range YCbCr of 75% white, yellow, red, black.
    const px = [
      [180, 128, 128, [191, 191, 191]],
      [162, 44, 142, [191, 191, 0]],
      [65, 100, 212, [191, 0, 0]],
      [16, 128, 128, [0, 0, 0]],
    ] as const;
    for (const [Y, U, V, rgb] of px) {
      const out = v4l2.convert(Uint8Array.from([Y, U, Y, V]), 'YUYV', 2, 1, 4, 'rgb');
      for (let c = 0; c < 3; c++) assert.ok(Math.abs(out[c]! - rgb[c]!) <= 2, `${Y},${U},${V} -> ${[...out.subarray(0, 3)]} vs ${rgb}`);
    }
  });

  test('GREY -> gray copies, GREY -> rgb replicates, RGB3 -> gray takes the luma', () => {
    const g = Uint8Array.from([0, 10, 200, 255, 99, 0, 1, 2]); // 3 pixels + 1 pad per row, 2 rows
    assert.deepEqual([...v4l2.convert(g, 'GREY', 3, 2, 4, 'gray')], [0, 10, 200, 99, 0, 1]);
    assert.deepEqual([...v4l2.convert(g, 'GREY', 3, 2, 4, 'rgb')], [0, 0, 0, 10, 10, 10, 200, 200, 200, 99, 99, 99, 0, 0, 0, 1, 1, 1]);
    const rgb = Uint8Array.from([255, 255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 255]);
    const luma = (r: number, g: number, b: number) => (77 * r + 150 * g + 29 * b + 128) >> 8;
    assert.deepEqual([...v4l2.convert(rgb, 'RGB3', 4, 1, 12, 'gray')], [luma(255, 255, 255), luma(255, 0, 0), luma(0, 255, 0), luma(0, 0, 255)]);
    assert.deepEqual([...v4l2.convert(rgb, 'RGB3', 4, 1, 12, 'rgb')], [...rgb]);
  });

  test('a truncated frame and an unsupported format are errors, not garbage', () => {
    assert.throws(() => v4l2.convert(new Uint8Array(10), 'YUYV', 4, 2, 8, 'gray'), /shorter than 2 rows of 8 bytes/);
    assert.throws(() => v4l2.convert(new Uint8Array(100), 'MJPG', 4, 2, 8, 'gray'), /unsupported MJPG -> gray/);
  });
});

describe('opening devices that are not there', () => {
  test('a missing device is a camera FrameError naming it', async () => {
    const s = new V4l2Source({ device: '/dev/video-does-not-exist', width: 64, height: 48, colour: 'gray' }, { clock: new FakeClock(), log: silentLogger });
    await assert.rejects(s.start(), (e: Error) => e instanceof FrameError && e.reason === 'camera' && /\/dev\/video-does-not-exist does not exist/.test(e.message));
    await assert.rejects(s.grab(), /not started/);
  });

  test('a file that is not a V4L2 device says so', async () => {
    await assert.rejects(v4l2.open('/dev/null'), (e: NodeJS.ErrnoException) => e.code === 'ENOTTY' && /not a V4L2 device/.test(e.message));
  });
});

describe('format and control choice', () => {
  const f = (fourcc: string, sizes: V4l2FormatDesc['sizes']): V4l2FormatDesc => ({ fourcc, description: fourcc, compressed: fourcc === 'MJPG', sizes });
  const fmts = [f('MJPG', [{ width: 1280, height: 720 }, { width: 640, height: 480 }]), f('YUYV', [{ width: 640, height: 480 }])];

  test("'auto' prefers what needs the least work at the asked size", () => {
    assert.equal(chooseFormat(fmts, { width: 640, height: 480, colour: 'gray' }), 'YUYV');
    assert.equal(chooseFormat(fmts, { width: 1280, height: 720, colour: 'rgb' }), 'MJPG', 'only MJPEG offers 1280x720');
    assert.equal(chooseFormat([...fmts, f('GREY', [{ width: 640, height: 480 }])], { width: 640, height: 480, colour: 'gray' }), 'GREY');
    const stepwise = f('YUYV', [{ minWidth: 16, maxWidth: 1920, stepWidth: 16, minHeight: 16, maxHeight: 1080, stepHeight: 8 }]);
    assert.equal(chooseFormat([fmts[0]!, stepwise], { width: 800, height: 600, colour: 'rgb' }), 'YUYV');
  });

  test('an explicit format the camera lacks, or no usable format, is a clear error', () => {
    assert.throws(() => chooseFormat(fmts, { format: 'GREY', width: 640, height: 480, colour: 'gray' }), /does not offer GREY; it offers MJPG, YUYV/);
    assert.throws(() => chooseFormat([f('H264', [])], { width: 640, height: 480, colour: 'gray' }), /none of the camera's formats can be used/);
  });

  test("controls are found by alias ('exposure', 'gain'), driver name or id", () => {
    const cid = v4l2.cid;
    const c = (id: number, name: string): V4l2Control => ({ id, name, type: 'integer', min: 0, max: 100, step: 1, default: 50, value: 50, readOnly: false, inactive: false });
    const controls = [c(cid.BRIGHTNESS, 'Brightness'), c(cid.EXPOSURE_ABSOLUTE, 'Exposure Time, Absolute'), c(cid.ANALOGUE_GAIN, 'Analogue Gain')];
    assert.equal(findControl(controls, 'exposure', cid)?.id, cid.EXPOSURE_ABSOLUTE);
    assert.equal(findControl(controls, 'gain', cid)?.id, cid.ANALOGUE_GAIN);
    assert.equal(findControl(controls, 'brightness', cid)?.id, cid.BRIGHTNESS);
    assert.equal(findControl(controls, 'exposure_time_absolute', cid)?.id, cid.EXPOSURE_ABSOLUTE);
    assert.equal(findControl(controls, String(cid.BRIGHTNESS), cid)?.id, cid.BRIGHTNESS);
    assert.equal(findControl(controls, 'zoom', cid), undefined);
  });
});

/** A fake camera: the test pushes frames and failures through the callback start() was given. */
class FakeCamera {
  opens = 0;
  closed = 0;
  onFrame: ((err: Error | null, f?: V4l2NativeFrame) => void) | undefined;
  constructor(readonly fourcc: string, readonly width: number, readonly height: number) {}
  addon(): NativeAddon {
    const real = loadNative();
    const cam = this;
    const dev: V4l2Device = {
      streaming: false,
      info: () => ({ driver: 'fake', card: 'Fake Cam', busInfo: '', version: 0, capabilities: 0, capture: true, captureMplane: false, streaming: true }),
      formats: async () => [{ fourcc: cam.fourcc, description: '', compressed: cam.fourcc === 'MJPG', sizes: [{ width: cam.width, height: cam.height }] }],
      getFormat: () => ({ fourcc: cam.fourcc, width: cam.width, height: cam.height, bytesPerLine: 0, sizeImage: 0, field: 1, colorspace: 0 }),
      setFormat: async (f) => ({ ...f, bytesPerLine: 0, sizeImage: 0, field: 1, colorspace: 0 }),
      setFrameRate: async (fps) => fps,
      controls: async () => [],
      getControl: async () => 0,
      setControl: async () => {},
      start: async (_opts, cb) => {
        cam.onFrame = cb;
        return { buffers: 4, fourcc: cam.fourcc, width: cam.width, height: cam.height, bytesPerLine: 0 };
      },
      stop: () => {},
      stats: () => ({ frames: 0, dropped: 0, errors: 0 }),
      close: () => {
        cam.closed++;
        cam.onFrame = undefined;
      },
    };
    return { ...real, v4l2: { ...real.v4l2, open: async () => (cam.opens++, dev) } };
  }
  push(data: Uint8Array, over: Partial<V4l2NativeFrame> = {}): void {
    this.onFrame!(null, {
      data: Buffer.from(data),
      sequence: 0,
      timestampNs: 123_000n,
      tsSource: 'driver',
      dequeuedNs: 124_000n,
      bytesUsed: data.length,
      corrupt: false,
      dropped: 0,
      fourcc: this.fourcc,
      width: this.width,
      height: this.height,
      channels: this.fourcc === 'MJPG' ? 0 : 1,
      ...over,
    });
  }
}

const opts = (o: Partial<V4l2Options> = {}): V4l2Options => ({ device: '/dev/video7', width: 32, height: 16, colour: 'gray', stallTimeoutMs: 1000, restartMinMs: 100, ...o });

describe('V4l2Source with a fake camera', () => {
  test('converted frames carry the driver timestamp and their own sequence', async () => {
    const cam = new FakeCamera('GREY', 32, 16);
    const s = new V4l2Source(opts(), { clock: new FakeClock(), log: silentLogger, addon: cam.addon() });
    await s.start();
    const p = s.grab();
    cam.push(new Uint8Array(32 * 16).fill(9));
    const f = await p;
    assert.deepEqual({ ...f, data: f.data.length }, { seq: 0, timeNs: 123_000n, width: 32, height: 16, channels: 1, data: 512, source: 'v4l2' });
    await s.stop();
    assert.equal(cam.closed, 1);
  });

  for (const colour of ['gray', 'rgb'] as const) {
    test(`MJPEG frames are decoded with sharp to ${colour}`, async () => {
      const cam = new FakeCamera('MJPG', 32, 16);
      const s = new V4l2Source(opts({ colour }), { clock: new FakeClock(), log: silentLogger, addon: cam.addon() });
      await s.start();
      const jpeg = await sharp({ create: { width: 32, height: 16, channels: 3, background: { r: 200, g: 30, b: 30 } } }).jpeg().toBuffer();
      const p = s.grab();
      cam.push(jpeg);
      const f = await p;
      const ch = colour === 'gray' ? 1 : 3;
      assert.equal(f.channels, ch);
      assert.equal(f.data.length, 32 * 16 * ch);
      if (colour === 'rgb') assert.ok(Math.abs(f.data[0]! - 200) < 8 && f.data[1]! < 40, `red: ${[...f.data.subarray(0, 3)]}`);
      else assert.ok(Math.abs(f.data[0]! - (0.299 * 200 + 0.587 * 30 + 0.114 * 30)) < 6, `BT.601 luma, as ffmpeg and YUYV give: ${f.data[0]}`);
      await s.stop();
    });
  }

  test('a frame that does not decode, or that the driver flagged, is a bad_frame error', async () => {
    const cam = new FakeCamera('MJPG', 32, 16);
    const s = new V4l2Source(opts(), { clock: new FakeClock(), log: silentLogger, addon: cam.addon() });
    await s.start();
    let p = s.grab();
    cam.push(Uint8Array.from([1, 2, 3]));
    await assert.rejects(p, (e: Error) => e instanceof FrameError && e.reason === 'bad_frame' && /does not decode/.test(e.message));
    p = s.grab();
    cam.push(new Uint8Array(4), { corrupt: true, sequence: 41 });
    await assert.rejects(p, (e: Error) => e instanceof FrameError && e.reason === 'bad_frame' && /corrupt frame \(driver sequence 41\)/.test(e.message));
    assert.equal(s.stats().errors, 2);
    await s.stop();
  });

  test('a device failure (unplug) raises an alarm and reopens the camera after the backoff', async () => {
    const cam = new FakeCamera('GREY', 32, 16);
    const clock = new FakeClock();
    const alarms: string[] = [];
    const log = memoryLogger();
    const s = new V4l2Source(opts(), { clock, log, addon: cam.addon(), onAlarm: (k) => alarms.push(k) });
    await s.start();
    const errs: FrameError[] = [];
    s.onFrame(() => {}, (e) => errs.push(e));
    cam.onFrame!(Object.assign(new Error('ioctl(VIDIOC_DQBUF) /dev/video7: No such device (ENODEV)'), { code: 'ENODEV' }));
    assert.deepEqual(alarms, ['camera_error']);
    assert.equal(errs[0]?.reason, 'camera');
    assert.equal(cam.closed, 1);
    assert.equal(cam.opens, 1);
    clock.advance(100);
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    assert.equal(cam.opens, 2, 'reopened');
    assert.equal(s.stats().restarts, 1);
    const p = s.grab();
    cam.push(new Uint8Array(512));
    assert.equal((await p).width, 32);
    await s.stop();
  });

  test('no frame within the stall timeout: grab fails, the watchdog reopens the camera', async () => {
    const cam = new FakeCamera('GREY', 32, 16);
    const clock = new FakeClock();
    const alarms: string[] = [];
    const s = new V4l2Source(opts(), { clock, log: silentLogger, addon: cam.addon(), onAlarm: (k) => alarms.push(k) });
    await s.start();
    const p = s.grab();
    clock.advance(1000);
    await assert.rejects(p, (e: Error) => e instanceof FrameError && e.reason === 'camera');
    assert.deepEqual(alarms, ['camera_stall']);
    assert.equal(s.stats().stalls, 1);
    clock.advance(100);
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    assert.equal(cam.opens, 2);
    await s.stop();
  });
});

// Frames are plain Uint8Array views that can be copied into a worker job.
test('frame data is a Uint8Array of exactly the frame size', async () => {
  const cam = new FakeCamera('GREY', 8, 2);
  const s = new V4l2Source(opts({ width: 8, height: 2 }), { clock: new FakeClock(), log: silentLogger, addon: cam.addon() });
  await s.start();
  const got: Frame[] = [];
  s.onFrame((f) => got.push(f));
  cam.push(new Uint8Array(16).fill(3));
  assert.equal(got.length, 1);
  assert.ok(got[0]!.data instanceof Uint8Array);
  assert.equal(got[0]!.data.byteLength, 16);
  await s.stop();
});
