// The native JPEG decoder (native/src/jpeg.cc through src/native/jpeg.ts) against sharp, the
// decoder the replay camera uses on the main thread: same sizes, (nearly) the same pixels, EXIF
// orientation, the DCT-scaled `fit`, clear errors for bad input, and the same result in a worker
// thread (where camera.replay.decodeIn: worker calls it). Without the decoder (a build without
// jpeglib.h) the fallback is asserted instead; CI (LINESIGHT_NATIVE_REQUIRED=1) requires it.
//
// Tolerances, in 8-bit levels, mean absolute difference over all samples:
//   full size, rgb:   <= 0.5 (the same IDCT: bit-identical with sharp 0.35 here)
//   full size, gray:  <= 0.5 against BT.601 luma (rounded, as preprocess.ts computes it) of sharp's
//                     RGB: it is the JPEG's own luma (0-0.02 here); libvips' b-w, which the replay
//                     camera's grayscale() gives, differs on colour (13 levels on the colourful image)
//   fit (DCT scaled): <= 1 against sharp's full decode resized to the same size (0.21-0.30 here)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { diff } from '../helpers/pixels.js';
import sharp, { type JpegOptions } from 'sharp';
import { decodeImageFile } from '../../src/camera/replay.js';
import { renderFilmFrame } from '../../src/camera/synthetic.js';
import { FrameError } from '../../src/camera/types.js';
import { loadNative, NativeUnavailableError, resetNativeForTests } from '../../src/native/addon.js';
import { decodeJpegSync, isJpeg, jpegStatus } from '../../src/native/jpeg.js';

const status = jpegStatus();
const required = process.env.LINESIGHT_NATIVE_REQUIRED === '1';

/** A film frame (what a line camera sees) or a colourful one (gradients, a saturated disc). */
function pixels(kind: 'film' | 'colour', w: number, h: number): Buffer {
  if (kind === 'film') return Buffer.from(renderFilmFrame({ width: w, height: h, seed: 5, defectRate: 1 }, 1).data);
  const px = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      const disc = Math.hypot(x - w / 2, y - h / 3) < h / 4;
      px[i] = disc ? 220 : Math.floor((x * 255) / w);
      px[i + 1] = disc ? 30 : Math.floor((y * 255) / h);
      px[i + 2] = disc ? 40 : Math.floor(((x + y) * 255) / (w + h));
    }
  }
  return px;
}

/** BT.601 luma, rounded, of RGB samples: the grey preprocess.ts computes from an RGB frame. */
function luma(rgb: Uint8Array): Uint8Array {
  const out = new Uint8Array(rgb.length / 3);
  for (let i = 0; i < out.length; i++) out[i] = Math.round(0.299 * rgb[3 * i]! + 0.587 * rgb[3 * i + 1]! + 0.114 * rgb[3 * i + 2]!);
  return out;
}

const jpeg = (px: Buffer, w: number, h: number, o: JpegOptions = {}): Promise<Buffer> =>
  sharp(px, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 90, ...o }).toBuffer();

const badFrame = (pattern: RegExp) => (e: unknown): boolean => {
  assert.ok(e instanceof FrameError, String(e));
  assert.equal(e.reason, 'bad_frame');
  assert.match(e.message, pattern);
  return true;
};

test('isJpeg: the start-of-image marker, nothing else', async () => {
  assert.equal(isJpeg(await jpeg(Buffer.alloc(8 * 8 * 3, 9), 8, 8)), true);
  assert.equal(isJpeg(await sharp({ create: { width: 2, height: 2, channels: 3, background: '#000' } }).png().toBuffer()), false);
  assert.equal(isJpeg(new Uint8Array([0xff, 0xd8])), false);
  assert.equal(isJpeg(new Uint8Array(0)), false);
});

test('switched off (LINESIGHT_NATIVE=off): unavailable, with the reason; decoding throws NativeUnavailableError', () => {
  const saved = process.env.LINESIGHT_NATIVE;
  process.env.LINESIGHT_NATIVE = 'off';
  resetNativeForTests();
  try {
    const s = jpegStatus();
    assert.equal(s.available, false);
    assert.match((s as { reason: string }).reason, /LINESIGHT_NATIVE=off/);
    assert.throws(() => decodeJpegSync(new Uint8Array([0xff, 0xd8, 0xff]), { colour: 'rgb' }), (e: unknown) => {
      assert.ok(e instanceof NativeUnavailableError);
      assert.match(e.message, /native JPEG decoder unavailable: .*LINESIGHT_NATIVE=off/);
      return true;
    });
  } finally {
    if (saved === undefined) delete process.env.LINESIGHT_NATIVE;
    else process.env.LINESIGHT_NATIVE = saved;
    resetNativeForTests();
  }
});

if (!status.available) {
  test('no native JPEG decoder in this build: the reason names the fix (replay decodeIn worker falls back to sharp)', () => {
    assert.ok(!required, `LINESIGHT_NATIVE_REQUIRED=1 but the JPEG decoder is missing: ${status.reason}`);
    assert.match(status.reason, /jpeglib\.h|libjpeg|build:native|native addon/);
    assert.throws(() => decodeJpegSync(new Uint8Array([0xff, 0xd8, 0xff]), { colour: 'rgb' }), NativeUnavailableError);
  });
} else {
  test('the decoder is built in, libjpeg-turbo', () => {
    assert.match(status.version, /libjpeg/);
  });

  test('full size: the same pixels as sharp (rgb) and as BT.601 luma (gray), several sizes and subsamplings', async () => {
    const cases: [kind: 'film' | 'colour', w: number, h: number, opts: JpegOptions][] = [
      ['film', 1280, 960, {}],
      ['colour', 1280, 960, {}],
      ['colour', 333, 251, { chromaSubsampling: '4:4:4' }], // sizes off the MCU grid
      ['film', 64, 48, { progressive: true }],
      ['colour', 17, 9, {}],
    ];
    for (const [kind, w, h, o] of cases) {
      const bytes = await jpeg(pixels(kind, w, h), w, h, o);
      const what = `${kind} ${w}x${h} ${JSON.stringify(o)}`;
      const rgb = decodeJpegSync(bytes, { colour: 'rgb' });
      const ref = await decodeImageFile('x.jpg', { colour: 'rgb', bytes });
      assert.deepEqual([rgb.width, rgb.height, rgb.channels], [ref.width, ref.height, 3], what);
      assert.equal(rgb.data.byteOffset, 0);
      assert.equal(rgb.data.buffer.byteLength, rgb.data.length, `${what}: owns its ArrayBuffer`);
      const d = diff(rgb.data, ref.data);
      assert.ok(d.mean <= 0.5, `${what} rgb: mean ${d.mean}, max ${d.max}`);

      const gray = decodeJpegSync(bytes, { colour: 'gray' });
      assert.deepEqual([gray.width, gray.height, gray.channels], [w, h, 1], what);
      const g = diff(gray.data, luma(ref.data));
      assert.ok(g.mean <= 0.5, `${what} gray: mean ${g.mean}, max ${g.max}`);
    }
    // A grey JPEG: its samples as they are, either way.
    const grey = await sharp(pixels('film', 200, 100), { raw: { width: 200, height: 100, channels: 3 } }).grayscale().jpeg().toBuffer();
    const ref = await decodeImageFile('g.jpg', { colour: 'gray', bytes: grey });
    assert.deepEqual(diff(decodeJpegSync(grey, { colour: 'gray' }).data, ref.data), { mean: 0, max: 0 });
    const rgb = decodeJpegSync(grey, { colour: 'rgb' });
    assert.equal(rgb.channels, 3);
    assert.ok(diff(rgb.data, (await decodeImageFile('g.jpg', { colour: 'rgb', bytes: grey })).data).mean <= 0.5);
  });

  test('fit: the smallest DCT scale (1/1, 1/2, 1/4, 1/8) still covering the target, pixels close to sharp resizing to that size', async () => {
    // [image w, h, target w, h, resize, expected decoded w, h]
    const cases: [number, number, number, number, 'stretch' | 'letterbox', number, number][] = [
      [1280, 960, 224, 224, 'stretch', 320, 240], // 1/4: 1/8 (160x120) would not cover 224
      [1280, 960, 160, 120, 'stretch', 160, 120], // 1/8, exactly the target
      [1279, 960, 160, 120, 'stretch', 320, 240], // one column short of 8x: 1/4
      [1000, 1000, 224, 224, 'stretch', 250, 250],
      [333, 251, 224, 224, 'stretch', 333, 251], // already under 2x: every pixel
      [1280, 960, 640, 640, 'letterbox', 640, 480], // fits inside: the wider side decides
      [1280, 960, 640, 640, 'stretch', 1280, 960], // covers: the height 960 < 2 x 640
      [100, 80, 224, 224, 'stretch', 100, 80], // smaller than the target: never enlarged
    ];
    const encoded = new Map<string, Buffer>();
    for (const [w, h, tw, th, resize, ew, eh] of cases) {
      const key = `${w}x${h}`;
      if (!encoded.has(key)) encoded.set(key, await jpeg(pixels('film', w, h), w, h));
      const bytes = encoded.get(key)!;
      for (const colour of ['rgb', 'gray'] as const) {
        const what = `${key} fit ${tw}x${th} ${resize} ${colour}`;
        const r = decodeJpegSync(bytes, { colour, fit: { width: tw, height: th, resize } });
        assert.deepEqual([r.width, r.height], [ew, eh], what);
        const ref = new Uint8Array(await sharp(bytes).resize(ew, eh, { fit: 'fill' }).toColourspace('srgb').raw().toBuffer());
        const d = diff(r.data, colour === 'gray' ? luma(ref) : ref);
        assert.ok(d.mean <= 1, `${what}: mean ${d.mean}, max ${d.max}`);
      }
    }
  });

  test('EXIF orientation 1-8 is applied as sharp autoOrient() does; fit compares after turning', async () => {
    const w = 96;
    const h = 64;
    const px = pixels('colour', w, h);
    for (let o = 1; o <= 8; o++) {
      const bytes = await sharp(px, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 95 }).withMetadata({ orientation: o }).toBuffer();
      const r = decodeJpegSync(bytes, { colour: 'rgb' });
      const ref = await decodeImageFile('o.jpg', { colour: 'rgb', bytes });
      assert.deepEqual([r.width, r.height], [ref.width, ref.height], `orientation ${o}`);
      assert.deepEqual([r.width, r.height], o >= 5 ? [h, w] : [w, h], `orientation ${o}`);
      const d = diff(r.data, ref.data);
      assert.ok(d.mean <= 0.5, `orientation ${o}: mean ${d.mean}, max ${d.max}`);
    }
    // 1280x960 stored, shown turned (960x1280): 1/4 covers 224x300 only when compared turned.
    const big = await jpeg(pixels('film', 1280, 960), 1280, 960);
    const turned = await sharp(big).withMetadata({ orientation: 6 }).toBuffer();
    const r = decodeJpegSync(turned, { colour: 'rgb', fit: { width: 224, height: 300 } });
    assert.deepEqual([r.width, r.height], [240, 320]);
  });

  test('bad input is a bad_frame error naming the problem, never a crash or a half-grey frame', async () => {
    const good = await jpeg(pixels('film', 320, 240), 320, 240);
    assert.throws(() => decodeJpegSync(good.subarray(0, Math.floor(good.length / 2)), { colour: 'rgb' }), badFrame(/^JPEG: Premature end of JPEG file/));
    const corrupt = Buffer.from(good);
    corrupt.fill(0xff, 700, 800); // inside the entropy-coded data
    assert.throws(() => decodeJpegSync(corrupt, { colour: 'gray' }), badFrame(/^JPEG: Corrupt JPEG data/));
    assert.throws(() => decodeJpegSync(good.subarray(0, 20), { colour: 'rgb' }), badFrame(/^JPEG: /));
    const png = await sharp(pixels('film', 8, 8), { raw: { width: 8, height: 8, channels: 3 } }).png().toBuffer();
    assert.throws(() => decodeJpegSync(png, { colour: 'rgb' }), badFrame(/^not a JPEG: the data starts with 89 50 4e 47/));
    assert.throws(() => decodeJpegSync(new Uint8Array(0), { colour: 'rgb' }), badFrame(/^not a JPEG: no data$/));
    const cmyk = await sharp(pixels('film', 16, 16), { raw: { width: 16, height: 16, channels: 3 } }).toColourspace('cmyk').jpeg().toBuffer();
    assert.throws(() => decodeJpegSync(cmyk, { colour: 'rgb' }), badFrame(/CMYK JPEG: not supported by the native decoder/));
    // A decompression bomb is refused from its header (the wrapper's limit is MAX_INPUT_PIXELS).
    const native = loadNative().jpeg as { decode: (d: Uint8Array, o: object) => unknown };
    assert.throws(() => native.decode(good, { maxPixels: 320 * 240 - 1 }), /image larger than the decode limit/);
    // Still decodes after all that.
    assert.equal(decodeJpegSync(good, { colour: 'rgb' }).width, 320);
  });

  test('in worker threads: the addon loads in each, decodes the same, and the pixels transfer back zero-copy', async () => {
    const bytes = await jpeg(pixels('colour', 640, 480), 640, 480);
    const here = decodeJpegSync(bytes, { colour: 'rgb', fit: { width: 200, height: 150 } });
    const tsxApi = import.meta.resolve('tsx/esm/api');
    const jpegModule = new URL('../../src/native/jpeg.ts', import.meta.url).href;
    const body = `
      const { parentPort } = await import('node:worker_threads');
      const { decodeJpegSync } = await import(${JSON.stringify(jpegModule)});
      parentPort.once('message', (bytes) => {
        const r = decodeJpegSync(bytes, { colour: 'rgb', fit: { width: 200, height: 150 } });
        parentPort.postMessage(r, [r.data.buffer]);
      });`;
    const boot = `import(${JSON.stringify(tsxApi)}).then((t) => t.register()).then(async () => { ${body} })`;
    const results = await Promise.all(
      [0, 1].map(
        () =>
          new Promise<{ width: number; height: number; data: Uint8Array }>((resolve, reject) => {
            const w = new Worker(boot, { eval: true });
            w.once('error', reject);
            w.once('message', (r) => {
              resolve(r);
              void w.terminate();
            });
            const copy = new Uint8Array(bytes);
            w.postMessage(copy, [copy.buffer]);
          }),
      ),
    );
    for (const r of results) {
      assert.deepEqual([r.width, r.height], [here.width, here.height]);
      assert.deepEqual(diff(r.data, here.data), { mean: 0, max: 0 });
    }
    // The main thread's addon instance still works after the workers' went away.
    assert.equal(decodeJpegSync(bytes, { colour: 'gray' }).channels, 1);
  });
}
