// The native crop + resize + letterbox (native/src/resize.cc through prepareInputSync, what the
// inference worker runs with camera.replay.decodeIn: worker) against prepareInput, which does the
// same with sharp's linear kernel on the main thread: the same geometry (size, padding, letterbox
// grey, channels) and the same pixels within tolerance, on images made with sharp (gradients,
// edges, fine stripes, noise, through a JPEG round trip), grey and RGB, stretch and letterbox, a
// crop, shrinking 1.3x to 5x, one enlargement and one mixed (one axis down, the other up).
//
// Tolerance: mean absolute difference <= 1.0 level (8-bit) over all samples. Measured here (sharp
// 0.35.5, libvips 8.18.7): 0 (bit-identical) in every case but one, 0.0067 (max 1) where the width
// is enlarged and the height shrunk (libvips' bilinear rounds a little differently). A point-sampled
// resize would not pass: sharp's own 'nearest' is 9.8-14.7 levels from 'linear' on these images
// (asserted > 2, so the images can tell an antialiased resize from a point-sampled one).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { diff } from '../helpers/pixels.js';
import sharp from 'sharp';
import { fitLayout, LETTERBOX_GREY, prepareInput, prepareInputSync } from '../../src/inference/preprocess.js';
import { InferenceError, type InputSpec } from '../../src/inference/types.js';
import { resizeStatus, resizeSync } from '../../src/native/resize.js';
import type { Frame } from '../../src/part.js';

const status = resizeStatus();
const required = process.env.LINESIGHT_NATIVE_REQUIRED === '1';

/** Deterministic noise (mulberry32). */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A w x h frame: sharp renders a gradient with hard-edged shapes, a line and fine stripes, noise is
 * added, and sharp's JPEG round trip (q90) gives it a camera's artefacts; grey through libvips' b-w.
 */
async function image(w: number, h: number, channels: 1 | 3, seed: number): Promise<Frame> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}">
    <defs>
      <linearGradient id="g" x1="0" y1="0" x2="1" y2="1"><stop offset="0" stop-color="#102040"/><stop offset="1" stop-color="#f0c080"/></linearGradient>
      <pattern id="s" width="3" height="7" patternUnits="userSpaceOnUse"><rect width="1" height="7" fill="#fff"/></pattern>
    </defs>
    <rect width="100%" height="100%" fill="url(#g)"/>
    <rect x="${w * 0.1}" y="${h * 0.15}" width="${w * 0.3}" height="${h * 0.25}" fill="#f8f8f8"/>
    <circle cx="${w * 0.7}" cy="${h * 0.6}" r="${h * 0.2}" fill="#d02020"/>
    <rect x="${w * 0.05}" y="${h * 0.55}" width="${w * 0.4}" height="${h * 0.3}" fill="url(#s)"/>
    <path d="M0 ${h * 0.9} L${w} ${h * 0.7}" stroke="#000" stroke-width="2"/>
  </svg>`;
  const base = await sharp(Buffer.from(svg)).removeAlpha().raw().toBuffer();
  const r = rng(seed);
  for (let i = 0; i < base.length; i++) base[i] = Math.max(0, Math.min(255, Math.round(base[i]! + (r() - 0.5) * 50)));
  const jpeg = await sharp(base, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
  const data = await sharp(jpeg).toColourspace(channels === 1 ? 'b-w' : 'srgb').raw().toBuffer();
  assert.equal(data.length, w * h * channels);
  return { seq: seed, timeNs: 0n, source: 'test', width: w, height: h, channels, data: new Uint8Array(data) };
}

const spec = (width: number, height: number, over: Partial<InputSpec> = {}): InputSpec =>
  ({ name: 'image', width, height, colour: 'gray', layout: 'nchw', dtype: 'float32', ...over }) as InputSpec;

/** [frame w, h, channels, model input, what]: shrink factors 1.3x..5x, a crop, one enlargement, one mixed. */
const CASES: [number, number, 1 | 3, InputSpec, string][] = [
  [640, 480, 1, spec(224, 224), 'grey stretch 2.86x2.14'],
  [640, 480, 3, spec(224, 224, { resize: 'letterbox' }), 'rgb letterbox 2.86 (224x168, padY 28)'],
  [640, 480, 3, spec(492, 369), 'rgb stretch 1.3'],
  [800, 600, 1, spec(160, 120), 'grey stretch 5'],
  [800, 600, 3, spec(256, 256, { resize: 'letterbox' }), 'rgb letterbox 3.125 (256x192, padY 32)'],
  [416, 312, 1, spec(320, 320, { resize: 'letterbox' }), 'grey letterbox 1.3 (320x240, padY 40)'],
  [333, 251, 3, spec(96, 96, { resize: 'letterbox', crop: { x: 21, y: 13, width: 280, height: 200 } }), 'rgb crop 280x200 + letterbox 2.92 (96x69, padY 13)'],
  [480, 640, 1, spec(160, 160, { resize: 'letterbox' }), 'grey portrait letterbox 4 (120x160, padX 20)'],
  [200, 150, 3, spec(320, 240), 'rgb enlarge 1.6'],
  [640, 480, 3, spec(512, 512), 'rgb stretch 1.25 across, 1.07 up'],
  [640, 480, 1, spec(704, 400), 'grey stretch 1.1 up across, 1.2 down'],
];

if (status.available) {
  test('prepareInputSync (native) = prepareInput (sharp, linear kernel): geometry exact, pixels within 1.0 level', async (t) => {
    for (const [w, h, channels, input, what] of CASES) {
      const frame = await image(w, h, channels, w + h + input.width);
      const ref = await prepareInput(frame, input);
      const got = prepareInputSync(frame, input);
      assert.deepEqual(got.geometry, ref.geometry, what);
      assert.equal(got.channels, channels, what);
      assert.equal(got.pixels.length, input.width * input.height * channels, what);
      assert.equal(got.pixels.buffer.byteLength, got.pixels.length, `${what}: owns its ArrayBuffer (transferable)`);
      const d = diff(got.pixels, ref.pixels);
      t.diagnostic(`${what}: mean ${d.mean.toFixed(4)}, max ${d.max}`);
      assert.ok(d.mean <= 1.0, `${what}: mean abs difference ${d.mean.toFixed(3)} > 1.0 (max ${d.max})`);
      const shrinks = input.width < (input.crop?.width ?? w) && input.height < (input.crop?.height ?? h);
      if (shrinks) {
        // Nothing in it is point-sampled: sharp's nearest neighbour is far from it.
        const near = await sharp(frame.data, { raw: { width: w, height: h, channels } })
          .resize(input.width, input.height, { fit: 'fill', kernel: 'nearest' })
          .toColourspace(channels === 1 ? 'b-w' : 'srgb')
          .raw()
          .toBuffer();
        if (!input.crop && input.resize !== 'letterbox') {
          const n = diff(got.pixels, new Uint8Array(near));
          t.diagnostic(`${what}: sharp's nearest is ${n.mean.toFixed(2)} from it`);
          assert.ok(n.mean > 2, `${what}: the image tells antialiased from point-sampled`);
        }
      }
      // The grey bars exactly where fitLayout puts the picture: everything outside it.
      const fit = fitLayout(got.geometry);
      let outside = 0;
      for (let y = 0; y < input.height; y++) {
        for (let x = 0; x < input.width; x++) {
          if (x >= fit.padX && x < fit.padX + fit.width && y >= fit.padY && y < fit.padY + fit.height) continue;
          outside++;
          for (let c = 0; c < channels; c++) assert.equal(got.pixels[(y * input.width + x) * channels + c], LETTERBOX_GREY, `${what}: padding at ${x},${y}`);
        }
      }
      assert.equal(outside > 0, input.resize === 'letterbox' && what.includes('pad'), `${what}: padded`);
    }
  });

  test('prepareInputSync: the frame keeps its pixels; an input the size of the frame is a copy', async () => {
    const frame = await image(64, 48, 3, 1);
    const before = Buffer.from(frame.data);
    const same = prepareInputSync(frame, spec(64, 48));
    assert.deepEqual(Buffer.from(same.pixels), before);
    assert.notEqual(same.pixels.buffer, frame.data.buffer);
    prepareInputSync(frame, spec(20, 20, { resize: 'letterbox' }));
    assert.deepEqual(Buffer.from(frame.data), before, 'the source is not written to');
  });

  test('prepareInputSync: a bad frame is bad_frame, named, as prepareInput says it', async () => {
    const frame = { ...(await image(64, 48, 1, 2)), file: '/line/p.jpg' };
    const crop = spec(16, 16, { crop: { x: 40, y: 0, width: 32, height: 32 } });
    const sync = (() => {
      try {
        prepareInputSync(frame, crop);
      } catch (err) {
        return err as InferenceError;
      }
      assert.fail('no error');
    })();
    const viaSharp = await prepareInput(frame, crop).then(
      () => assert.fail('no error'),
      (err: InferenceError) => err,
    );
    assert.ok(sync instanceof InferenceError);
    assert.equal(sync.reason, 'bad_frame');
    assert.equal(sync.message, viaSharp.message);
    assert.match(sync.message, /frame 2 \(\/line\/p\.jpg\): the model's crop 32x32 at \(40,0\) does not fit in the 64x48 frame/);
    assert.throws(() => prepareInputSync({ ...frame, data: frame.data.subarray(1) }, spec(8, 8)), (err: InferenceError) => err.reason === 'bad_frame' && /bytes of pixel data/.test(err.message));
  });

  test('the native resize refuses options that do not describe the data (it never reads past it)', () => {
    const data = new Uint8Array(10 * 8 * 3);
    const ok = { width: 10, height: 8, channels: 3 as const, crop: { x: 0, y: 0, width: 10, height: 8 }, scaledWidth: 5, scaledHeight: 4, outWidth: 5, outHeight: 4, padX: 0, padY: 0, fill: 114 };
    assert.equal(resizeSync(data, ok).length, 5 * 4 * 3);
    assert.throws(() => resizeSync(data.subarray(3), ok), RangeError);
    assert.throws(() => resizeSync(data, { ...ok, crop: { x: 2, y: 0, width: 10, height: 8 } }), /crop|width/);
    assert.throws(() => resizeSync(data, { ...ok, padX: 1 }), /padX/);
    assert.throws(() => resizeSync(data, { ...ok, scaledWidth: 0 }), /scaledWidth/);
    assert.throws(() => resizeSync(data, { ...ok, fill: 300 }), /fill/);
  });
} else {
  test('no native resize in this build: the worker resizes with sharp (logged by the replay camera); not allowed where the addon is required', () => {
    assert.notEqual(required, true, status.reason);
    assert.match(status.reason, /native|addon|build/);
  });
}
