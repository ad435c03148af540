// Image files -> Frames (replay folders, `linesight predict`, the HTTP API). sharp decodes on
// libvips threads, so the main thread only awaits. Grey is BT.601 luma (as OpenCV and PIL compute
// it, and as preprocess.ts converts frames), so a grey model sees the same pixels either way.
import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import { FrameError } from '../camera/types.js';
import type { Frame } from '../part.js';
import { MAX_INPUT_PIXELS } from './types.js';

export { MAX_INPUT_PIXELS };

export interface DecodeOptions {
  colour: 'gray' | 'rgb';
  /** Frame.source (default 'file'). */
  source?: string;
  /** File name, for Frame.file and error messages. */
  file?: string;
  /** Frame.seq (default 0). */
  seq?: number;
}

const BT601: [number, number, number] = [0.299, 0.587, 0.114];

/** Decodes JPEG/PNG/BMP/WebP/TIFF bytes to a raw 8-bit HWC frame. Throws FrameError('bad_frame'). */
export async function decodeImage(bytes: Buffer | Uint8Array, opts: DecodeOptions): Promise<Frame> {
  const what = opts.file ?? 'image';
  try {
    // sharp's libvips has no BMP loader; industrial cameras often save BMP, so it is decoded here.
    const bmp = isBmp(bytes) ? decodeBmp(bytes) : undefined;
    // autoOrient: a replayed photo is seen the way its viewer (and the labeller) saw it.
    const img = bmp
      ? sharp(bmp.data, { raw: { width: bmp.width, height: bmp.height, channels: 3 } })
      : // failOn 'error' refuses truncated files (half a part must not be judged) but not benign warnings.
        sharp(bytes, { failOn: 'error', limitInputPixels: MAX_INPUT_PIXELS }).autoOrient();
    const meta = await img.metadata();
    // A grey file (with or without alpha) keeps its values exactly; colour is converted with BT.601.
    const isGrey = meta.channels - (meta.hasAlpha ? 1 : 0) === 1;
    let pipeline = img.removeAlpha();
    if (opts.colour === 'gray') {
      pipeline = isGrey ? pipeline.toColourspace('b-w') : pipeline.toColourspace('srgb').recomb([BT601, BT601, BT601]).extractChannel(0);
    } else {
      pipeline = pipeline.toColourspace('srgb');
    }
    const { data, info } = await pipeline.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    const channels = opts.colour === 'gray' ? 1 : 3;
    if (info.channels !== channels || data.length !== info.width * info.height * channels) {
      throw new Error(`decoded to ${info.width}x${info.height}x${info.channels}, expected ${channels} channel(s)`);
    }
    return {
      seq: opts.seq ?? 0,
      timeNs: process.hrtime.bigint(),
      width: info.width,
      height: info.height,
      channels,
      data: new Uint8Array(data.buffer, data.byteOffset, data.length),
      source: opts.source ?? 'file',
      ...(opts.file !== undefined ? { file: opts.file } : {}),
    };
  } catch (err) {
    if (err instanceof FrameError) throw err;
    const msg = err instanceof Error ? err.message.split('\n')[0] : String(err);
    if (/pixel limit/i.test(msg)) {
      throw new FrameError(`${what}: image larger than ${MAX_INPUT_PIXELS / 1e6} megapixels: send it resized to the camera's resolution`, 'bad_frame');
    }
    throw new FrameError(`${what}: cannot decode image (${msg})`, 'bad_frame');
  }
}

/** Reads and decodes an image file. Throws FrameError('bad_frame') naming the file. */
export async function decodeImageFile(path: string, opts: Omit<DecodeOptions, 'file'>): Promise<Frame> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new FrameError(`${path}: cannot read image (${code ?? (err as Error).message})`, 'bad_frame');
  }
  if (bytes.length === 0) throw new FrameError(`${path}: empty file`, 'bad_frame');
  return decodeImage(bytes, { ...opts, file: path });
}

// ---- BMP -----------------------------------------------------------------------------------------

const isBmp = (b: Uint8Array): boolean => b.length >= 2 && b[0] === 0x42 && b[1] === 0x4d; // 'BM'

/**
 * Uncompressed Windows BMP (8-bit palette, 24-bit, 32-bit; bottom-up or top-down) to RGB.
 * Compressed variants (RLE, JPEG/PNG inside BMP) are refused with a message saying so.
 */
export function decodeBmp(bytes: Uint8Array): { width: number; height: number; data: Uint8Array } {
  if (bytes.length < 54) throw new Error('BMP: file too short for its header');
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dataOffset = v.getUint32(10, true);
  const headerSize = v.getUint32(14, true);
  if (headerSize < 40) throw new Error(`BMP: unsupported header (${headerSize} bytes; OS/2 bitmaps are not supported)`);
  const width = v.getInt32(18, true);
  const rawHeight = v.getInt32(22, true);
  const bpp = v.getUint16(28, true);
  const compression = v.getUint32(30, true);
  const topDown = rawHeight < 0;
  const height = Math.abs(rawHeight);
  if (width < 1 || height < 1 || width > 32768 || height > 32768) throw new Error(`BMP: bad size ${width}x${rawHeight}`);
  // 0 = BI_RGB; 3 = BI_BITFIELDS, accepted for 32-bit with the usual BGRA masks.
  if (!(compression === 0 || (compression === 3 && bpp === 32))) throw new Error(`BMP: compression ${compression} is not supported (save as uncompressed BMP)`);
  if (bpp !== 8 && bpp !== 24 && bpp !== 32) throw new Error(`BMP: ${bpp}-bit pixels are not supported (8, 24 or 32)`);

  const stride = Math.ceil((width * bpp) / 32) * 4;
  if (dataOffset + stride * height > bytes.length) throw new Error('BMP: pixel data truncated');
  let palette: Uint8Array | undefined;
  if (bpp === 8) {
    const colours = v.getUint32(46, true) || 256;
    const start = 14 + headerSize;
    if (start + colours * 4 > dataOffset) throw new Error('BMP: palette overlaps the pixel data');
    palette = bytes.subarray(start, start + colours * 4);
  }
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const row = dataOffset + (topDown ? y : height - 1 - y) * stride;
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      let b: number, g: number, r: number;
      if (palette) {
        const i = bytes[row + x]! * 4;
        if (i + 2 >= palette.length) throw new Error('BMP: pixel refers past the palette');
        [b, g, r] = [palette[i]!, palette[i + 1]!, palette[i + 2]!];
      } else {
        const i = row + x * (bpp / 8);
        [b, g, r] = [bytes[i]!, bytes[i + 1]!, bytes[i + 2]!];
      }
      out[o] = r;
      out[o + 1] = g;
      out[o + 2] = b;
    }
  }
  return { width, height, data: out };
}
