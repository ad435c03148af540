// Synchronous JPEG decode through the native addon (libjpeg-turbo, native/src/jpeg.cc), for the
// inference worker (camera.replay.decodeIn: worker): there the thread blocking on the decode is the
// point, since that core then decodes, prepares and infers each part in turn instead of waiting on
// a libuv thread. Never call it on the main thread of a running line. Frames come out as the
// replay camera's sharp decode gives them (HWC, 8-bit, 1 or 3 channels, EXIF orientation applied),
// with two differences: grey is the JPEG's own luma (BT.601, as src/inference/image.ts and the V4L2
// camera compute it; the replay camera's sharp decode uses libvips' b-w), and `fit` stops at the
// DCT scaling (the model's resize does the rest).
import { FrameError } from '../camera/types.js';
import { MAX_INPUT_PIXELS } from '../inference/types.js';
import { nativeStatus, NativeUnavailableError, tryLoadNative } from './addon.js';

export interface JpegDecodeOptions {
  colour: 'gray' | 'rgb';
  /**
   * The model input the frame is for (the replay camera's DecodeFit): decoded at the smallest of
   * 1/1, 1/2, 1/4, 1/8 scale that still covers it on both sides (fits inside it: 'letterbox').
   */
  fit?: { width: number; height: number; resize?: 'stretch' | 'letterbox' } | undefined;
}

export interface JpegFrame {
  width: number;
  height: number;
  channels: 1 | 3;
  /** Owns its ArrayBuffer: it can be transferred between threads. */
  data: Uint8Array;
}

/** The JPEG start of image: what the decoder accepts (the replay camera decodes anything else with sharp). */
export const isJpeg = (b: Uint8Array): boolean => b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;

/** Whether this build has the decoder; when not, why, with the fix. */
export function jpegStatus(): { available: true; version: string } | { available: false; reason: string } {
  const s = nativeStatus();
  if (!s.available) return { available: false, reason: s.reason! };
  const j = tryLoadNative()!.jpeg;
  if (!j) return { available: false, reason: 'the native addon was built before it had a JPEG decoder (a stale build): run npm run build:native' };
  return j.available ? { available: true, version: j.version } : { available: false, reason: j.reason };
}

/**
 * Decodes a JPEG on this thread. Throws FrameError('bad_frame') naming the problem (not a JPEG,
 * truncated, corrupt, CMYK, over MAX_INPUT_PIXELS), NativeUnavailableError when there is no decoder.
 */
export function decodeJpegSync(data: Uint8Array, opts: JpegDecodeOptions): JpegFrame {
  const j = tryLoadNative()?.jpeg;
  if (!j?.available) {
    const s = jpegStatus();
    throw new NativeUnavailableError(`native JPEG decoder unavailable: ${s.available ? 'unknown' : s.reason}`, 'jpeg');
  }
  const { fit } = opts;
  try {
    const r = j.decode(data, {
      colour: opts.colour,
      fit: fit && { width: fit.width, height: fit.height, inside: fit.resize === 'letterbox' },
      maxPixels: MAX_INPUT_PIXELS,
    });
    return { width: r.width, height: r.height, channels: r.channels, data: r.data };
  } catch (err) {
    throw new FrameError((err as Error).message, 'bad_frame');
  }
}
