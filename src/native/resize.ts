// Synchronous crop + resize + letterbox through the native addon (native/src/resize.cc), for the
// inference worker (camera.replay.decodeIn: worker): that thread decodes (src/native/jpeg.ts),
// prepares and infers each part itself instead of idling while sharp resizes on a libuv thread.
// Never call it on the main thread of a running line. The result is what prepareInput's sharp
// resize (kernel 'linear') gives: the same pixels when downscaling, within one level when enlarging.
import { nativeStatus, NativeUnavailableError, tryLoadNative, type NativeResizeOptions } from './addon.js';

export type { NativeResizeOptions };

/** Whether this build has the resize; when not, why, with the fix. */
export function resizeStatus(): { available: true } | { available: false; reason: string } {
  const s = nativeStatus();
  if (!s.available) return { available: false, reason: s.reason! };
  if (typeof tryLoadNative()!.resize !== 'function') {
    return { available: false, reason: 'the native addon was built before it had a resize (a stale build): run npm run build:native' };
  }
  return { available: true };
}

/**
 * Crops, resizes and pads on this thread; the result owns its ArrayBuffer (transferable). Throws
 * NativeUnavailableError without the native resize, a RangeError/TypeError on options that do not
 * describe the data (callers validate the frame first: see prepareInputSync).
 */
export function resizeSync(data: Uint8Array, opts: NativeResizeOptions): Uint8Array {
  const resize = tryLoadNative()?.resize;
  if (!resize) {
    const s = resizeStatus();
    throw new NativeUnavailableError(`native resize unavailable: ${s.available ? 'unknown' : s.reason}`, 'resize');
  }
  return resize(data, opts);
}
