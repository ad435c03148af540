// Bad input, image bytes: whatever reaches decodeImage (a replay folder, `linesight predict`,
// POST /v1/predict) gives a Frame whose pixels match its size, or a FrameError 'bad_frame'; never
// another exception, a crash of the process or a decode that does not come back.
//
// FUZZ_SEED=<n> replays a run (the seed is printed); FUZZ_SCALE=<x> multiplies the number of inputs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import sharp from 'sharp';
import { decodeImage } from '../../src/inference/image.js';
import { FrameError } from '../../src/camera/types.js';
import { renderFilmFrame } from '../../src/camera/synthetic.js';

const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
const SCALE = Number(process.env.FUZZ_SCALE ?? 1);
const runs = (n: number): number => Math.max(1, Math.round(n * SCALE));
// A watchdog, not a speed limit: a decode that has not come back after this long is a hang.
const HANG_MS = 60_000;
const tried: Record<string, number> = {};
const outcome = { frames: 0, frameErrors: 0 };
after(() => {
  const total = Object.values(tried).reduce((a, b) => a + b, 0);
  console.log(
    `fuzz image: ${total} inputs tried (${Object.entries(tried).map(([k, v]) => `${k} ${v}`).join(', ')}); ` +
      `${outcome.frames} decoded to frames, ${outcome.frameErrors} FrameErrors; seed ${SEED}`,
  );
});

/** Valid files of every kind the agent may meet, small so that thousands decode quickly. */
const seeds: { name: string; bytes: Buffer }[] = [];

function bmp(width: number, height: number, bpp: 8 | 24 | 32, topDown = false): Buffer {
  const stride = Math.ceil((width * bpp) / 32) * 4;
  const palette = bpp === 8 ? 256 * 4 : 0;
  const offset = 54 + palette;
  const b = Buffer.alloc(offset + stride * height);
  b.write('BM', 0, 'ascii');
  b.writeUInt32LE(b.length, 2);
  b.writeUInt32LE(offset, 10);
  b.writeUInt32LE(40, 14);
  b.writeInt32LE(width, 18);
  b.writeInt32LE(topDown ? -height : height, 22);
  b.writeUInt16LE(1, 26);
  b.writeUInt16LE(bpp, 28);
  b.writeUInt32LE(0, 30);
  for (let i = 0; i < palette / 4; i++) b.writeUInt32LE(i * 0x010101, 54 + i * 4);
  for (let i = offset; i < b.length; i++) b[i] = (i * 31) & 0xff;
  return b;
}

before(async () => {
  const f = renderFilmFrame({ width: 48, height: 32, seed: 3, defectRate: 1 }, 0);
  const rgb = () => sharp(Buffer.from(f.data), { raw: { width: 48, height: 32, channels: 3 } });
  const add = async (name: string, p: Promise<Buffer>): Promise<void> => {
    seeds.push({ name, bytes: await p });
  };
  await add('png-rgb', rgb().png().toBuffer());
  await add('png-gray', rgb().toColourspace('b-w').png().toBuffer());
  await add('png-rgba', rgb().ensureAlpha(0.5).png().toBuffer());
  await add('png-palette', rgb().png({ palette: true, colours: 16 }).toBuffer());
  await add('png-16bit', rgb().toColourspace('rgb16').png().toBuffer());
  await add('png-interlaced', rgb().png({ progressive: true }).toBuffer());
  await add('png-1x1', sharp({ create: { width: 1, height: 1, channels: 3, background: '#808080' } }).png().toBuffer());
  await add('jpeg', rgb().jpeg({ quality: 80 }).toBuffer());
  await add('jpeg-progressive', rgb().jpeg({ progressive: true }).toBuffer());
  await add('jpeg-gray', rgb().toColourspace('b-w').jpeg().toBuffer());
  await add('jpeg-exif-rotated', rgb().jpeg().withMetadata({ orientation: 6 }).toBuffer());
  await add('webp', rgb().webp().toBuffer());
  await add('tiff', rgb().tiff().toBuffer());
  await add('gif', rgb().gif().toBuffer());
  seeds.push({ name: 'bmp-24', bytes: bmp(7, 5, 24) });
  seeds.push({ name: 'bmp-32-topdown', bytes: bmp(6, 4, 32, true) });
  seeds.push({ name: 'bmp-8', bytes: bmp(9, 3, 8) });
  for (const s of seeds) {
    const fr = await decodeImage(s.bytes, { colour: 'rgb' });
    assert.ok(fr.width > 0, `seed ${s.name} decodes`);
  }
});

// CRC-32 as PNG chunks use it: a header edited with its CRC fixed gets past libpng's check, so
// the decoder's handling of the values themselves (huge sizes, odd depths) is what is tested.
const CRC = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return (b: Uint8Array): number => {
    let c = 0xffffffff;
    for (const x of b) c = t[(c ^ x) & 0xff]! ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
})();

type Mutation =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; value: number }
  | { op: 'truncate'; at: number }
  | { op: 'insert'; at: number; bytes: Uint8Array }
  | { op: 'delete'; at: number; len: number }
  | { op: 'dupRange'; at: number; len: number }
  | { op: 'u32'; at: number; value: number }
  | { op: 'ihdr'; width: number; height: number; depth: number; colour: number; interlace: number };

const u32 = fc.oneof(fc.constantFrom(0, 1, 0x7fff, 0xffff, 0x10000, 16384, 30000, 0x7fffffff, 0x80000000, 0xffffffff), fc.nat());
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: fc.constantFrom(0, 0xff, 0x7f, 0x80, 0x01) }),
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 64 }) }),
  fc.record({ op: fc.constant('dupRange' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 256 }) }),
  fc.record({ op: fc.constant('u32' as const), at: fc.nat(), value: u32 }),
  fc.record({
    op: fc.constant('ihdr' as const),
    width: u32,
    height: u32,
    depth: fc.constantFrom(0, 1, 2, 4, 8, 16, 3, 255),
    colour: fc.constantFrom(0, 2, 3, 4, 6, 1, 7),
    interlace: fc.constantFrom(0, 1, 2),
  }),
);

function mutate(src: Buffer, muts: Mutation[]): Buffer {
  let b = Buffer.from(src);
  for (const m of muts) {
    const at = b.length === 0 ? 0 : ('at' in m ? m.at : 0) % b.length;
    switch (m.op) {
      case 'flip':
        if (b.length) b[at] = b[at]! ^ (1 << m.bit);
        break;
      case 'set':
        if (b.length) b[at] = m.value;
        break;
      case 'truncate':
        b = b.subarray(0, at);
        break;
      case 'insert':
        b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)]);
        break;
      case 'delete':
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.len)]);
        break;
      case 'dupRange':
        b = Buffer.concat([b.subarray(0, at + m.len), b.subarray(at, at + m.len), b.subarray(at + m.len)]);
        break;
      case 'u32':
        if (b.length >= 4) b.writeUInt32BE(m.value >>> 0, Math.min(at, b.length - 4));
        break;
      case 'ihdr':
        // PNG: signature (8), length (4), 'IHDR' (4), width, height, depth, colour, ..., interlace, CRC.
        if (b.length >= 33 && b.subarray(12, 16).toString('latin1') === 'IHDR') {
          b.writeUInt32BE(m.width >>> 0, 16);
          b.writeUInt32BE(m.height >>> 0, 20);
          b[24] = m.depth;
          b[25] = m.colour;
          b[28] = m.interlace;
          b.writeUInt32BE(CRC(b.subarray(12, 29)), 29);
        }
        break;
    }
  }
  return b;
}

const MAGIC = [
  [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a],
  [0xff, 0xd8, 0xff],
  [0x42, 0x4d],
  [0x47, 0x49, 0x46, 0x38, 0x39, 0x61],
  [0x52, 0x49, 0x46, 0x46, 0, 0, 0, 0, 0x57, 0x45, 0x42, 0x50],
  [0x49, 0x49, 0x2a, 0x00],
  [0x4d, 0x4d, 0x00, 0x2a],
  [0x3c, 0x3f, 0x78, 0x6d, 0x6c], // '<?xml' (SVG)
  [0x25, 0x50, 0x44, 0x46], // '%PDF'
];

async function check(bytes: Uint8Array, colour: 'gray' | 'rgb'): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`decodeImage did not come back within ${HANG_MS} ms (${bytes.length} bytes)`)), HANG_MS);
  });
  try {
    const frame = await Promise.race([decodeImage(bytes, { colour }), hang]);
    outcome.frames++;
    const channels = colour === 'gray' ? 1 : 3;
    assert.equal(frame.channels, channels);
    assert.ok(Number.isInteger(frame.width) && frame.width > 0 && Number.isInteger(frame.height) && frame.height > 0);
    assert.equal(frame.data.length, frame.width * frame.height * channels, 'pixels match the frame size');
  } catch (err) {
    if (!(err instanceof FrameError)) throw err;
    outcome.frameErrors++;
    assert.equal(err.reason, 'bad_frame');
    assert.ok(err.message.length > 0);
  } finally {
    clearTimeout(timer);
  }
}

test('mutated valid PNG, JPEG, WebP, TIFF, GIF and BMP files: a Frame or a FrameError', async () => {
  await fc.assert(
    fc.asyncProperty(fc.nat(), fc.array(mutation, { minLength: 1, maxLength: 4 }), fc.constantFrom('gray' as const, 'rgb' as const), async (pick, muts, colour) => {
      const s = seeds[pick % seeds.length]!;
      tried[s.name] = (tried[s.name] ?? 0) + 1;
      await check(mutate(s.bytes, muts), colour);
    }),
    { seed: SEED, numRuns: runs(6000), includeErrorInReport: true },
  );
});

test('random bytes, bare or behind a real file signature: a Frame or a FrameError', async () => {
  await fc.assert(
    fc.asyncProperty(fc.option(fc.constantFrom(...MAGIC), { nil: undefined }), fc.uint8Array({ maxLength: 2048 }), fc.constantFrom('gray' as const, 'rgb' as const), async (magic, rest, colour) => {
      tried.random = (tried.random ?? 0) + 1;
      await check(magic ? Buffer.concat([Buffer.from(magic), rest]) : rest, colour);
    }),
    { seed: SEED, numRuns: runs(3000), includeErrorInReport: true },
  );
});
