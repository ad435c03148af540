// Preprocessing turns frames into exactly the tensor the manifest describes, refuses frames it
// cannot trust (bad_frame), and records the geometry heads use to map results back to the frame.
// Image decoding is checked here too: it produces the frames replay and predict feed in.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { fitLayout, planGeometry, prepareInput, preprocess, toTensor, validateFrame } from '../../src/inference/preprocess.js';
import { inputToFrame } from '../../src/inference/heads.js';
import { decodeBmp, decodeImage, decodeImageFile } from '../../src/inference/image.js';
import { InferenceError, type InputSpec } from '../../src/inference/types.js';
import { FrameError } from '../../src/camera/types.js';
import type { Frame } from '../../src/part.js';

const frame = (width: number, height: number, channels: 1 | 3, fill: (i: number) => number = () => 0): Frame => ({
  seq: 7,
  timeNs: 0n,
  width,
  height,
  channels,
  data: Uint8Array.from({ length: width * height * channels }, (_, i) => fill(i)),
  source: 'test',
});

const spec = (over: Partial<InputSpec> = {}): InputSpec => ({
  name: 'image',
  width: 4,
  height: 4,
  colour: 'gray',
  layout: 'nchw',
  dtype: 'float32',
  ...over,
});

function badFrame(fn: () => unknown): InferenceError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof InferenceError, String(err));
    assert.equal(err.reason, 'bad_frame');
    return err;
  }
  assert.fail('frame accepted');
}

// ---- validation -------------------------------------------------------------------------------

test('frames whose data does not match their size are bad_frame, naming sizes', async () => {
  const f = { ...frame(4, 4, 3), data: new Uint8Array(40) };
  assert.match(badFrame(() => validateFrame(f, spec())).message, /frame 7 from test: 40 bytes of pixel data for 4x4x3 \(48 expected\)/);
  await assert.rejects(prepareInput(f, spec()), (e: unknown) => e instanceof InferenceError && e.reason === 'bad_frame');
});

test('insane sizes and channel counts are bad_frame', () => {
  assert.match(badFrame(() => validateFrame({ ...frame(4, 4, 1), width: 0 }, spec())).message, /width 0 is not an integer/);
  assert.match(badFrame(() => validateFrame({ ...frame(4, 4, 1), height: 2.5 }, spec())).message, /height 2.5 is not an integer/);
  assert.match(badFrame(() => validateFrame({ ...frame(4, 4, 1), channels: 2 as 1 }, spec())).message, /2 channels \(1 or 3 expected\)/);
  const named = { ...frame(4, 4, 1), data: new Uint8Array(3), file: '/replay/a.png' };
  assert.match(badFrame(() => validateFrame(named, spec())).message, /frame 7 \(\/replay\/a.png\)/);
});

test('a crop that does not fit in the frame is bad_frame', () => {
  const s = spec({ crop: { x: 6, y: 0, width: 4, height: 4 } });
  assert.match(badFrame(() => validateFrame(frame(8, 8, 1), s)).message, /crop 4x4 at \(6,0\) does not fit in the 8x8 frame/);
  validateFrame(frame(10, 8, 1), s);
});

// ---- toTensor (the worker half) ---------------------------------------------------------------

test('toTensor: NCHW and NHWC layouts of the same RGB pixels', () => {
  // 2x1 image: pixel 0 = (10, 20, 30), pixel 1 = (40, 50, 60).
  const px = Uint8Array.from([10, 20, 30, 40, 50, 60]);
  const s = spec({ width: 2, height: 1, colour: 'rgb', scale: 1 });
  const nchw = toTensor(px, 3, { ...s, layout: 'nchw' });
  assert.deepEqual(nchw.dims, [1, 3, 1, 2]);
  assert.deepEqual([...nchw.data], [10, 40, 20, 50, 30, 60]);
  const nhwc = toTensor(px, 3, { ...s, layout: 'nhwc' });
  assert.deepEqual(nhwc.dims, [1, 1, 2, 3]);
  assert.deepEqual([...nhwc.data], [10, 20, 30, 40, 50, 60]);
});

test('toTensor: bgr swaps channels, grey frames feed all three, colour frames become BT.601 grey', () => {
  const px = Uint8Array.from([200, 100, 50]);
  const one = { width: 1, height: 1, scale: 1 };
  assert.deepEqual([...toTensor(px, 3, spec({ ...one, colour: 'bgr' })).data], [50, 100, 200]);
  assert.deepEqual([...toTensor(Uint8Array.from([77]), 1, spec({ ...one, colour: 'rgb' })).data], [77, 77, 77]);
  // 0.299*200 + 0.587*100 + 0.114*50 = 124.1 -> 124, as OpenCV/PIL compute grey.
  assert.deepEqual([...toTensor(px, 3, spec({ ...one, colour: 'gray' })).data], [124]);
});

test('toTensor: default scale is 1/255, then per-channel mean/std; uint8 keeps raw pixels', () => {
  const px = Uint8Array.from([255, 0, 51]);
  const one = { width: 1, height: 1, colour: 'rgb' as const };
  const plain = toTensor(px, 3, spec(one));
  assert.ok(plain.data instanceof Float32Array);
  assert.deepEqual([...plain.data], [1, 0, Math.fround(0.2)]);

  const norm = toTensor(px, 3, spec({ ...one, mean: [0.5, 0.5, 0.2], std: [0.5, 0.25, 0.1] }));
  const expected = [(1 - 0.5) / 0.5, (0 - 0.5) / 0.25, (0.2 - 0.2) / 0.1];
  [...norm.data].forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) < 1e-6, `channel ${i}: ${v} vs ${expected[i]}`));

  const broadcast = toTensor(px, 3, spec({ ...one, mean: [0.5], std: [0.5] }));
  assert.deepEqual([...broadcast.data].map((v) => Math.round(v * 1e6) / 1e6), [1, -1, -0.6]);

  const raw = toTensor(px, 3, spec({ ...one, dtype: 'uint8', layout: 'nhwc' }));
  assert.ok(raw.data instanceof Uint8Array);
  assert.deepEqual([...raw.data], [255, 0, 51]);
});

test('toTensor refuses pixels of the wrong size', () => {
  assert.match(badFrame(() => toTensor(new Uint8Array(5), 1, spec())).message, /5 bytes for 4x4x1/);
});

// ---- prepareInput (the sharp half) ------------------------------------------------------------

test('a frame already at the input size is copied, not shared, with whole-frame geometry', async () => {
  const f = frame(4, 4, 1, (i) => i * 10);
  const p = await prepareInput(f, spec());
  assert.deepEqual([...p.pixels], [...f.data]);
  assert.notEqual(p.pixels.buffer, f.data.buffer, 'the worker gets its own buffer to take');
  assert.equal(p.pixels.byteOffset, 0);
  assert.equal(p.pixels.byteLength, p.pixels.buffer.byteLength);
  assert.deepEqual(p.geometry, { frameWidth: 4, frameHeight: 4, inputWidth: 4, inputHeight: 4, crop: { x: 0, y: 0, width: 4, height: 4 }, resize: 'stretch' });
});

test('crop cuts the exact region out of the frame', async () => {
  // 8x6 frame where each pixel holds y*8+x: the crop's pixels are known exactly.
  const f = frame(8, 6, 1, (i) => i);
  const s = spec({ width: 3, height: 2, crop: { x: 2, y: 1, width: 3, height: 2 } });
  const p = await prepareInput(f, s);
  assert.equal(p.channels, 1);
  assert.deepEqual([...p.pixels], [10, 11, 12, 18, 19, 20]);
  assert.deepEqual(p.geometry.crop, { x: 2, y: 1, width: 3, height: 2 });
});

test('stretch resizes to the input size and keeps a flat colour flat', async () => {
  const f = frame(10, 6, 3, (i) => [200, 100, 50][i % 3]!);
  const p = await prepareInput(f, spec({ width: 4, height: 4, colour: 'rgb' }));
  assert.equal(p.channels, 3);
  assert.equal(p.pixels.length, 4 * 4 * 3);
  for (let i = 0; i < p.pixels.length; i++) assert.equal(p.pixels[i], [200, 100, 50][i % 3]);
});

test('letterbox keeps the aspect ratio and pads with grey 114, as heads map back', async () => {
  // 16x8 white frame into 8x8: content 8x4 centred, 2 rows of padding above and below.
  const f = frame(16, 8, 1, () => 255);
  const s = spec({ width: 8, height: 8, resize: 'letterbox' });
  const p = await prepareInput(f, s);
  const rows = Array.from({ length: 8 }, (_, y) => [...p.pixels.subarray(y * 8, y * 8 + 8)]);
  for (const y of [0, 1, 6, 7]) assert.deepEqual(rows[y], Array(8).fill(114), `row ${y} is padding`);
  for (const y of [2, 3, 4, 5]) assert.deepEqual(rows[y], Array(8).fill(255), `row ${y} is content`);

  assert.deepEqual(fitLayout(p.geometry), { width: 8, height: 4, padX: 0, padY: 2 });
  // The head's inverse map sends the content's corners back to the frame's corners.
  const t = inputToFrame(p.geometry);
  assert.deepEqual([t.offsetX + 0 * t.scaleX, t.offsetY + 2 * t.scaleY], [0, 0]);
  assert.deepEqual([t.offsetX + 8 * t.scaleX, t.offsetY + 6 * t.scaleY], [16, 8]);
});

test('letterbox layout agrees with heads.inputToFrame for odd sizes and crops', () => {
  const cases: [number, number, Partial<InputSpec>][] = [
    [640, 480, { width: 320, height: 320 }],
    [101, 37, { width: 64, height: 48 }],
    [300, 500, { width: 33, height: 17, crop: { x: 10, y: 20, width: 250, height: 77 } }],
  ];
  for (const [fw, fh, over] of cases) {
    const geo = planGeometry(fw, fh, spec({ ...over, resize: 'letterbox' }));
    const fit = fitLayout(geo);
    const t = inputToFrame(geo);
    const crop = geo.crop!;
    const close = (a: number, b: number): boolean => Math.abs(a - b) < 1e-9;
    assert.ok(close(t.offsetX + fit.padX * t.scaleX, crop.x) && close(t.offsetY + fit.padY * t.scaleY, crop.y), `${fw}x${fh} top-left`);
    assert.ok(
      close(t.offsetX + (fit.padX + fit.width) * t.scaleX, crop.x + crop.width) &&
        close(t.offsetY + (fit.padY + fit.height) * t.scaleY, crop.y + crop.height),
      `${fw}x${fh} bottom-right`,
    );
  }
});

test('preprocess: crop + resize + grey conversion + layout in one call', async () => {
  const f = frame(8, 8, 3, (i) => [200, 100, 50][i % 3]!);
  const s = spec({ width: 2, height: 2, colour: 'gray', layout: 'nhwc', scale: 1, crop: { x: 2, y: 2, width: 4, height: 4 } });
  const t = await preprocess(f, s);
  assert.deepEqual(t.dims, [1, 2, 2, 1]);
  assert.deepEqual([...t.data], [124, 124, 124, 124]);
  assert.equal(t.geometry.inputWidth, 2);
});

// ---- image decoding ---------------------------------------------------------------------------

const tempDirs: string[] = [];
after(() => tempDirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const rgbPng = (): Promise<Buffer> =>
  sharp(Buffer.from([200, 100, 50, 0, 0, 255]), { raw: { width: 2, height: 1, channels: 3 } }).png().toBuffer();

test('decodeImage: PNG to an RGB frame and to a BT.601 grey frame', async () => {
  const png = await rgbPng();
  const rgb = await decodeImage(png, { colour: 'rgb', file: 'a.png', source: 'replay' });
  assert.deepEqual([rgb.width, rgb.height, rgb.channels], [2, 1, 3]);
  assert.deepEqual([...rgb.data], [200, 100, 50, 0, 0, 255]);
  assert.equal(rgb.file, 'a.png');
  assert.equal(rgb.source, 'replay');
  const grey = await decodeImage(png, { colour: 'gray' });
  assert.equal(grey.channels, 1);
  assert.deepEqual([...grey.data], [124, 29]); // round(0.114 * 255) = 29
});

test('decodeImage: a grey PNG keeps its values; RGBA loses alpha', async () => {
  const values = [0, 1, 127, 128, 254, 255];
  const greyPng = await sharp(Buffer.from(values), { raw: { width: 6, height: 1, channels: 1 } }).toColourspace('b-w').png().toBuffer();
  assert.deepEqual([...(await decodeImage(greyPng, { colour: 'gray' })).data], values);
  const rgba = await sharp(Buffer.from([10, 20, 30, 40]), { raw: { width: 1, height: 1, channels: 4 } }).png().toBuffer();
  const f = await decodeImage(rgba, { colour: 'rgb' });
  assert.equal(f.channels, 3);
  assert.deepEqual([...f.data], [10, 20, 30]);
});

test('decodeImage: corrupt, truncated or unsupported bytes are bad_frame naming the file', async () => {
  const noise = Buffer.from(Array.from({ length: 64 * 64 * 3 }, (_, i) => (i * 7919) % 251));
  const jpeg = await sharp(noise, { raw: { width: 64, height: 64, channels: 3 } }).jpeg().toBuffer();
  for (const [bytes, why] of [
    [Buffer.from('not an image at all'), /unsupported image format/],
    [jpeg.subarray(0, jpeg.length / 2), /premature end of JPEG/],
  ] as const) {
    await assert.rejects(decodeImage(bytes, { colour: 'rgb', file: 'cam/0001.jpg' }), (err: unknown) => {
      assert.ok(err instanceof FrameError);
      assert.equal(err.reason, 'bad_frame');
      assert.match(err.message, /^cam\/0001\.jpg: cannot decode image/);
      assert.match(err.message, why);
      return true;
    });
  }
});

test('decodeImageFile: missing and empty files are bad_frame naming the path', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'linesight-img-'));
  tempDirs.push(dir);
  await assert.rejects(decodeImageFile(join(dir, 'nope.png'), { colour: 'rgb' }), /nope\.png: cannot read image \(ENOENT\)/);
  writeFileSync(join(dir, 'empty.png'), '');
  await assert.rejects(decodeImageFile(join(dir, 'empty.png'), { colour: 'rgb' }), /empty\.png: empty file/);
  writeFileSync(join(dir, 'ok.png'), await rgbPng());
  const f = await decodeImageFile(join(dir, 'ok.png'), { colour: 'rgb' });
  assert.equal(f.file, join(dir, 'ok.png'));
});

/** A BMP file: 24-bit bottom-up, or 8-bit with a palette. Rows are padded to 4 bytes. */
function bmp(width: number, height: number, rgbTopDown: number[][], bits: 24 | 8): Buffer {
  const stride = Math.ceil((width * bits) / 32) * 4;
  const palette = bits === 8 ? 256 * 4 : 0;
  const offset = 54 + palette;
  const b = Buffer.alloc(offset + stride * height);
  b.write('BM', 0);
  b.writeUInt32LE(b.length, 2);
  b.writeUInt32LE(offset, 10);
  b.writeUInt32LE(40, 14);
  b.writeInt32LE(width, 18);
  b.writeInt32LE(height, 22); // positive: bottom-up
  b.writeUInt16LE(1, 26);
  b.writeUInt16LE(bits, 28);
  if (bits === 8) for (let i = 0; i < 256; i++) b.writeUInt32LE((i << 16) | (i << 8) | i, 54 + i * 4); // grey ramp
  for (let y = 0; y < height; y++) {
    const row = offset + (height - 1 - y) * stride;
    for (let x = 0; x < width; x++) {
      const [r, g, bl] = rgbTopDown[y * width + x]!;
      if (bits === 8) b[row + x] = r!;
      else b.set([bl!, g!, r!], row + x * 3);
    }
  }
  return b;
}

test('decodeImage reads uncompressed BMP (24-bit and 8-bit palette), which libvips cannot', async () => {
  const px = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 8, 7], [1, 2, 3], [4, 5, 6]];
  const f = await decodeImage(bmp(3, 2, px, 24), { colour: 'rgb' });
  assert.deepEqual([f.width, f.height], [3, 2]);
  assert.deepEqual([...f.data], px.flat());
  const grey = [[0], [50], [100], [150], [200], [250]].map(([v]) => [v!, v!, v!]);
  const g = await decodeImage(bmp(3, 2, grey, 8), { colour: 'gray' });
  assert.deepEqual([...g.data], [0, 50, 100, 150, 200, 250]);
  assert.throws(() => decodeBmp(bmp(3, 2, px, 24).subarray(0, 60)), /pixel data truncated/);
});
