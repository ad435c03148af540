// The native addon and what runs when it is absent, in one import, plus the one log line that says
// which backend each piece of hardware uses.
import type { Logger } from '../log.js';
import { nativeStatus } from './addon.js';

export * from './addon.js';
export { notify, notifyBackend, formatNotify, startWatchdog, watchdogIntervalMs } from './notify.js';
export type { NotifyBackend, NotifyOptions, NotifyResult } from './notify.js';
export { decodeJpegSync, isJpeg, jpegStatus, type JpegDecodeOptions, type JpegFrame } from './jpeg.js';

export interface NativeBackends {
  /** The addon loaded. */
  native: boolean;
  /** Why not, in words with the fix (when native is false). */
  reason?: string;
  /** GPIO: the character device through the addon, or sysfs through onoff. */
  gpio: 'chardev' | 'onoff';
  /** Camera: V4L2 through the addon, or ffmpeg. */
  camera: 'v4l2' | 'ffmpeg';
  /** systemd readiness: sd_notify from this process, or a spawned systemd-notify. */
  notify: 'native' | 'systemd-notify';
}

/** The backends `auto` settings resolve to on this machine. */
export function nativeBackends(): NativeBackends {
  const s = nativeStatus();
  return s.available
    ? { native: true, gpio: 'chardev', camera: 'v4l2', notify: 'native' }
    : { native: false, reason: s.reason, gpio: 'onoff', camera: 'ffmpeg', notify: 'systemd-notify' };
}

/** Log, once at start, which backends run and (when the addon is missing) why and how to fix it. */
export function logNativeBackends(log: Logger, chosen: Partial<Omit<NativeBackends, 'native' | 'reason'>> = {}): NativeBackends {
  const b = { ...nativeBackends(), ...chosen };
  if (b.native) log.info('native addon loaded', { gpio: b.gpio, camera: b.camera, notify: b.notify });
  else log.warn('native addon not available: using fallbacks', { gpio: b.gpio, camera: b.camera, notify: b.notify, reason: b.reason });
  return b;
}
