// Frame -> model input tensor, per the manifest's InputSpec. Two halves, so neither blocks the
// main thread: prepareInput() does the geometry (crop, resize, letterbox) with sharp, whose work
// runs on libvips threads while the main thread awaits; toTensor() is a pure function (colour,
// scale/mean/std, layout) that the inference worker runs on the transferred pixel buffer.
// prepareInputSync() is the same geometry on the calling thread (native, the same pixels), for the
// inference worker that decodes its own frames (camera.replay.decodeIn: worker).
import type { OutputInfo } from 'sharp';
import { InferenceError, type InputSpec } from './types.js';
import { inputDims } from './manifest.js';
import type { Geometry } from './heads.js';
import type { EncodedFrame, Frame } from '../part.js';
import { NativeUnavailableError } from '../native/addon.js';
import { resizeSync } from '../native/resize.js';
import { decodeJpegSync } from '../native/jpeg.js';

/** Where the model input came from in the frame (heads map boxes and maps back with it). */
export type { Geometry };

/** The model input's pixels before the float conversion: HWC, 8-bit, the frame's channel count. */
export interface PreparedInput {
  /** Owns its ArrayBuffer, so it can be transferred to a worker. */
  pixels: Uint8Array;
  channels: 1 | 3;
  geometry: Geometry;
}

export type InputTensor = { data: Float32Array | Uint8Array; dims: number[] };

/** Grey of letterbox padding: 114 is the usual value for YOLO-style letterboxing. */
export const LETTERBOX_GREY = 114;
/** Frames larger than this on a side are refused rather than risk huge allocations. */
const MAX_SIDE = 32768;
/** ITU-R BT.601 luma, as OpenCV and PIL compute grey, so training and inference agree. */
const LUMA = [0.299, 0.587, 0.114] as const;

// Loaded on first use: the inference worker imports this module for toTensor() alone and should
// not load sharp's native addon.
let sharpModule: Promise<typeof import('sharp')> | undefined;
const loadSharp = async (): Promise<typeof import('sharp').default> => (await (sharpModule ??= import('sharp'))).default;

const badFrame = (msg: string): InferenceError => new InferenceError(msg, 'bad_frame');

const frameName = (frame: Frame): string => (frame.file ? `frame ${frame.seq} (${frame.file})` : `frame ${frame.seq} from ${frame.source}`);

/** Throws InferenceError('bad_frame') naming the first problem with the frame. */
export function validateFrame(frame: Frame, spec: InputSpec): void {
  const what = frameName(frame);
  const { width, height, channels, data } = frame;
  for (const [k, v] of [['width', width], ['height', height]] as const) {
    if (!Number.isInteger(v) || v < 1 || v > MAX_SIDE) throw badFrame(`${what}: ${k} ${v} is not an integer in 1..${MAX_SIDE}`);
  }
  if (channels !== 1 && channels !== 3) throw badFrame(`${what}: ${String(channels)} channels (1 or 3 expected)`);
  if (!(data instanceof Uint8Array)) throw badFrame(`${what}: pixel data is not a Uint8Array`);
  const expected = width * height * channels;
  if (data.length !== expected) {
    throw badFrame(`${what}: ${data.length} bytes of pixel data for ${width}x${height}x${channels} (${expected} expected)`);
  }
  const c = spec.crop;
  if (c && (c.x + c.width > width || c.y + c.height > height)) {
    throw badFrame(
      `${what}: the model's crop ${c.width}x${c.height} at (${c.x},${c.y}) does not fit in the ${width}x${height} frame`,
    );
  }
}

/** The crop and resize a frame of this size gets. Pure, so heads and tests can use it too. */
export function planGeometry(frameWidth: number, frameHeight: number, spec: InputSpec): Geometry {
  return {
    frameWidth,
    frameHeight,
    inputWidth: spec.width,
    inputHeight: spec.height,
    crop: spec.crop ? { ...spec.crop } : { x: 0, y: 0, width: frameWidth, height: frameHeight },
    resize: spec.resize ?? 'stretch',
  };
}

/**
 * Where the crop lands in the input: scaled to width x height at (padX, padY). Letterbox keeps the
 * aspect ratio with one scale, rounds to whole pixels and centres, padding floor((input - scaled) / 2)
 * on the left/top: the convention heads.ts inputToFrame() maps back with.
 */
export function fitLayout(geo: Geometry): { width: number; height: number; padX: number; padY: number } {
  const crop = geo.crop ?? { x: 0, y: 0, width: geo.frameWidth, height: geo.frameHeight };
  const W = geo.inputWidth;
  const H = geo.inputHeight;
  if (geo.resize !== 'letterbox') return { width: W, height: H, padX: 0, padY: 0 };
  const s = Math.min(W / crop.width, H / crop.height);
  const width = Math.min(W, Math.max(1, Math.round(crop.width * s)));
  const height = Math.min(H, Math.max(1, Math.round(crop.height * s)));
  return { width, height, padX: Math.floor((W - width) / 2), padY: Math.floor((H - height) / 2) };
}

/**
 * What a JPEG is decoded to cover (DCT scaling, src/native/jpeg.ts) for a model input: twice the
 * input, so the last factor of two is this module's linear resize (prepareInputSync in the worker;
 * sharp's fastShrinkOnLoad: false). Scaled all the way, frames are sharper than the model saw in training: film-demo
 * (160x120) rejected 77 of 213 good 320x240 replayed film frames decoded at 1/2, 6 decoded whole;
 * still 77 with the worker's own antialiased resize (prepareInputSync), since at 1/2 there is no
 * resize left to do (docs/performance.md, "Decode in the inference worker").
 */
export function jpegDecodeFit<F extends { width: number; height: number }>(fit: F | undefined): F | undefined {
  return fit && { ...fit, width: 2 * fit.width, height: 2 * fit.height };
}

/** Validates the frame; where its crop lands in the input (prepareInput and prepareInputSync agree). */
function planInput(frame: Frame, spec: InputSpec): { geometry: Geometry; crop: NonNullable<Geometry['crop']>; fit: ReturnType<typeof fitLayout> } {
  validateFrame(frame, spec);
  const geometry = planGeometry(frame.width, frame.height, spec);
  return { geometry, crop: geometry.crop!, fit: fitLayout(geometry) };
}

/**
 * prepareInput on this thread (native/src/resize.cc): the same output size, layout, letterbox grey
 * and pixels (sharp's linear kernel: bit-exact when shrinking, within one level when enlarging).
 * Synchronous CPU work for an inference worker thread, never the main thread of a running line.
 * Throws InferenceError('bad_frame') as prepareInput does, NativeUnavailableError without the
 * native resize (an addon built before it had one).
 */
export function prepareInputSync(frame: Frame, spec: InputSpec): PreparedInput {
  const { geometry, crop, fit } = planInput(frame, spec);
  const { width, height, channels } = frame;
  let pixels: Uint8Array;
  try {
    pixels = resizeSync(frame.data, {
      width,
      height,
      channels,
      crop,
      scaledWidth: fit.width,
      scaledHeight: fit.height,
      outWidth: spec.width,
      outHeight: spec.height,
      padX: fit.padX,
      padY: fit.padY,
      fill: LETTERBOX_GREY,
    });
  } catch (err) {
    if (err instanceof NativeUnavailableError) throw err;
    throw badFrame(`${frameName(frame)}: resize failed: ${err instanceof Error ? err.message : String(err)}`);
  }
  return { pixels, channels, geometry };
}

/**
 * Main-thread half: validate, crop and resize with sharp (asynchronous; libvips threads do the
 * work). Keeps the frame's channel count; colour conversion happens in toTensor().
 */
export async function prepareInput(frame: Frame, spec: InputSpec): Promise<PreparedInput> {
  const { geometry, crop, fit } = planInput(frame, spec);
  const channels = frame.channels;
  const { width: scaledW, height: scaledH } = fit;
  const wholeFrame = crop.x === 0 && crop.y === 0 && crop.width === frame.width && crop.height === frame.height;

  if (wholeFrame && scaledW === crop.width && scaledH === crop.height && fit.padX === 0 && fit.padY === 0) {
    // Already the input size: a copy (the caller keeps its frame; the copy gets transferred).
    return { pixels: new Uint8Array(frame.data), channels, geometry };
  }

  const sharp = await loadSharp();
  let img = sharp(frame.data, { raw: { width: frame.width, height: frame.height, channels } });
  if (!wholeFrame) img = img.extract({ left: crop.x, top: crop.y, width: crop.width, height: crop.height });
  if (scaledW !== crop.width || scaledH !== crop.height) {
    // Bilinear (with libvips' anti-aliasing when shrinking) is close to what training pipelines
    // use; the default lanczos3 rings on sharp edges.
    img = img.resize(scaledW, scaledH, { fit: 'fill', kernel: 'linear' });
  }
  const padRight = spec.width - scaledW - fit.padX;
  const padBottom = spec.height - scaledH - fit.padY;
  if (fit.padX || fit.padY || padRight || padBottom) {
    const grey = LETTERBOX_GREY;
    img = img.extend({ left: fit.padX, top: fit.padY, right: padRight, bottom: padBottom, background: { r: grey, g: grey, b: grey } });
  }
  // Without this, sharp writes a 1-channel input out as 3-channel sRGB.
  img = img.toColourspace(channels === 1 ? 'b-w' : 'srgb');

  let out: { data: Buffer; info: OutputInfo };
  try {
    out = await img.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw badFrame(`frame ${frame.seq}: resize failed: ${err instanceof Error ? err.message : String(err)}`);
  }
  const expected = spec.width * spec.height * channels;
  if (out.data.length !== expected || out.info.channels !== channels) {
    // Would be a bug here, not a bad frame: say exactly what came out.
    throw new InferenceError(
      `preprocess produced ${out.info.width}x${out.info.height}x${out.info.channels} for a ${spec.width}x${spec.height}x${channels} input`,
      'model_error',
    );
  }
  // sharp's Buffer may be external or pooled memory: copy into an ArrayBuffer we can transfer.
  return { pixels: new Uint8Array(out.data), channels, geometry };
}

/**
 * Worker half (pure): HWC 8-bit pixels of the input size -> the model's tensor. Converts colour
 * (grey <-> rgb, rgb -> bgr), applies x = (pixel * scale - mean) / std for float32 inputs, and
 * lays the result out as NCHW or NHWC.
 */
export function toTensor(pixels: Uint8Array, channels: 1 | 3, spec: InputSpec): InputTensor {
  const W = spec.width;
  const H = spec.height;
  const n = W * H;
  if (pixels.length !== n * channels) {
    throw new InferenceError(`toTensor: ${pixels.length} bytes for ${W}x${H}x${channels}`, 'bad_frame');
  }
  const outC = spec.colour === 'gray' ? 1 : 3;
  const dims = inputDims(spec);
  // Which source channel feeds each output channel (-1 = BT.601 grey of the three).
  const from: number[] =
    channels === 1 ? Array(outC).fill(0) : spec.colour === 'gray' ? [-1] : spec.colour === 'bgr' ? [2, 1, 0] : [0, 1, 2];
  // Output index of pixel p, channel c: NCHW = c*n + p, NHWC = p*outC + c.
  const pixelStride = spec.layout === 'nchw' ? 1 : outC;
  const channelStride = spec.layout === 'nchw' ? n : 1;

  if (spec.dtype === 'uint8') {
    const out = new Uint8Array(n * outC);
    for (let c = 0; c < outC; c++) {
      const src = from[c]!;
      if (src < 0) for (let p = 0, i = 0, o = c * channelStride; p < n; p++, i += 3, o += pixelStride) out[o] = grey(pixels, i);
      else for (let p = 0, i = src, o = c * channelStride; p < n; p++, i += channels, o += pixelStride) out[o] = pixels[i]!;
    }
    return { data: out, dims };
  }

  // x = (v * scale - mean) / std  ==  v * a + b, per channel.
  const scale = spec.scale ?? 1 / 255;
  const a: number[] = [];
  const b: number[] = [];
  for (let c = 0; c < outC; c++) {
    const mean = perChannel(spec.mean, c, 0);
    const std = perChannel(spec.std, c, 1);
    a.push(scale / std);
    b.push(-mean / std);
  }
  const out = new Float32Array(n * outC);
  // An 8-bit input has 256 values: a per-channel table of v * a + b (the same float32 values the
  // arithmetic gives) turns the hot loop into a load and a store.
  const lut = new Float32Array(256);
  for (let c = 0; c < outC; c++) {
    const src = from[c]!;
    const ac = a[c]!;
    const bc = b[c]!;
    for (let v = 0; v < 256; v++) lut[v] = v * ac + bc;
    if (src < 0) for (let p = 0, i = 0, o = c * channelStride; p < n; p++, i += 3, o += pixelStride) out[o] = lut[grey(pixels, i)]!;
    else for (let p = 0, i = src, o = c * channelStride; p < n; p++, i += channels, o += pixelStride) out[o] = lut[pixels[i]!]!;
  }
  return { data: out, dims };
}

/** BT.601 luma of the RGB pixel at byte i, rounded, as an 8-bit grey image would hold it (and as decodeImage's grey does). */
function grey(pixels: Uint8Array, i: number): number {
  return Math.round(LUMA[0] * pixels[i]! + LUMA[1] * pixels[i + 1]! + LUMA[2] * pixels[i + 2]!);
}

/** mean/std may give one value for all channels or one per channel. */
function perChannel(values: number[] | undefined, c: number, fallback: number): number {
  if (!values || values.length === 0) return fallback;
  return values.length === 1 ? values[0]! : values[c]!;
}

/** Both halves in one call (training, tests, tools that do not need a worker). */
export async function preprocess(frame: Frame, spec: InputSpec): Promise<InputTensor & { geometry: Geometry }> {
  const prepared = await prepareInput(frame, spec);
  return { ...toTensor(prepared.pixels, prepared.channels, spec), geometry: prepared.geometry };
}

/**
 * A JPEG as the inference worker decodes it (camera.replay.decodeIn: worker), synchronously:
 * libjpeg-turbo at twice the model's fit (jpegDecodeFit), then shrunk (native resize, sharp's
 * linear kernel) to the size the main path decodes to (decodeImageFile's fit), so frames, boxes,
 * maps and archived images are the same in both modes, and the frame sent back, which the archive
 * and the operator page encode on libvips threads, is no larger than there (at twice the size,
 * PNG-archiving the rejects cost ~0.4 cores at 40 parts/s). `shrink` false (no native resize):
 * the decoded size. Throws FrameError('bad_frame') on a bad JPEG (decodeJpegSync).
 */
export function decodeJpegFrameSync(
  jpeg: Uint8Array,
  colour: 'gray' | 'rgb',
  fit: EncodedFrame['fit'],
  shrink: boolean,
): { width: number; height: number; channels: 1 | 3; data: Uint8Array } {
  const d = decodeJpegSync(jpeg, { colour, fit: jpegDecodeFit(fit) });
  const img = { width: d.width, height: d.height, channels: d.channels, data: d.data };
  return shrink && fit ? { ...img, ...shrinkToFit(img, fit) } : img;
}

/**
 * sharp's resize({ fit: 'outside' | 'inside', withoutEnlargement }) to `fit` (inside for a
 * letterboxing model), synchronously; unchanged when already no larger.
 */
function shrinkToFit(
  img: { width: number; height: number; channels: 1 | 3; data: Uint8Array },
  fit: NonNullable<EncodedFrame['fit']>,
): { width: number; height: number; data: Uint8Array } {
  const { width, height, channels } = img;
  const sx = fit.width / width;
  const sy = fit.height / height;
  const s = fit.resize === 'letterbox' ? Math.min(sx, sy) : Math.max(sx, sy);
  if (s >= 1) return img;
  const w = Math.max(1, Math.round(width * s));
  const h = Math.max(1, Math.round(height * s));
  const data = resizeSync(img.data, {
    width,
    height,
    channels,
    crop: { x: 0, y: 0, width, height },
    scaledWidth: w,
    scaledHeight: h,
    outWidth: w,
    outHeight: h,
    padX: 0,
    padY: 0,
    fill: 0,
  });
  return { width: w, height: h, data };
}

