// The native addon (native/: GPIO character device, V4L2 capture, sd_notify, JPEG decode, resize),
// typed, loaded once with node-gyp-build. It is optional: `npm ci` builds it from source when a C++
// toolchain is there, and when it cannot load, every user has a fallback (onoff for GPIO, ffmpeg
// for the camera, systemd-notify for readiness, sharp for JPEG and resize) and says which backend
// it runs on.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// ── the addon's shape (native/src/*.cc) ────────────────────────────────────────────────────────

/** An errno error from the addon: message names the call and the path. */
export interface NativeError extends Error {
  code?: string;
  errno?: number;
  syscall?: string;
  path?: string;
}

export interface NativeChipInfo {
  path: string;
  /** Kernel name, 'gpiochip0'. */
  name: string;
  /** Label, e.g. 'pinctrl-bcm2835', 'gpio-sim.0-node0'. */
  label: string;
  lines: number;
}

export interface NativeLineInfo {
  offset: number;
  name: string;
  consumer: string;
  used: boolean;
  direction: 'input' | 'output';
  activeLow: boolean;
  edge: 'none' | 'rising' | 'falling' | 'both';
  bias: 'as-is' | 'pull-up' | 'pull-down' | 'disabled';
  debounceUs: number;
}

export interface NativeLineRequest {
  path: string;
  offset: number;
  direction: 'input' | 'output';
  edge?: 'none' | 'rising' | 'falling' | 'both';
  activeLow?: boolean;
  bias?: 'as-is' | 'pull-up' | 'pull-down' | 'disabled';
  /** Kernel debounce period (GPIO_V2_LINE_ATTR_ID_DEBOUNCE), µs; 0 = none. */
  debounceUs?: number;
  /** Output level set together with the direction (no glitch). */
  initial?: 0 | 1;
  /** Shown as the line's consumer by gpioinfo. */
  consumer?: string;
  eventBufferSize?: number;
  /** SCHED_FIFO for the output's pulse thread (needs CAP_SYS_NICE; falls back silently). */
  realtime?: boolean;
}

/** Edge callback: (null, value, kernel CLOCK_MONOTONIC ns, seqno, lineSeqno) or (error). */
export type NativeEdgeCallback = (err: NativeError | null, value?: 0 | 1, timeNs?: bigint, seqno?: number, lineSeqno?: number) => void;
/** Pulse edge report from the native thread: level driven, when (ns), when it was due (ns), errno. */
export type NativePulseEdgeCallback = (level: 0 | 1, atNs: bigint, deadlineNs: bigint, errno: number) => void;

export interface NativePulseStats {
  scheduled: number;
  edges: number;
  pending: number;
  level: 0 | 1;
  maxLateNs: bigint;
  realtime: boolean;
  writeErrors: number;
  /** Pulses whose whole window passed before the thread could run (machine stalled): not driven. */
  missed: number;
  running: boolean;
}

export interface NativePulseTarget {
  /** Pulse [atNs, atNs + widthNs) on CLOCK_MONOTONIC; overlapping pulses merge. False when already over. */
  schedulePulse(atNs: bigint, widthNs: bigint): boolean;
  cancelPulses(): void;
  onPulseEdge(cb: NativePulseEdgeCallback): void;
  pulseStats(): NativePulseStats;
  close(): void;
}

/** The pulse engine without a line (gpio.PulseTimer). */
export interface NativePulseTimer extends NativePulseTarget {
  /** The sysfs `value` file it drives, or null when it drives nothing. */
  readonly path: string | null;
  /** The level JS wrote to the output itself, so the engine's next transition is computed from it. */
  noteLevel(level: 0 | 1): void;
  /** Stops the thread; true when a pulse held the output on and it was driven off (safe state). */
  close(): boolean;
}

export interface NativePulseTimerOptions {
  /** SCHED_FIFO for the pulse thread (needs CAP_SYS_NICE; falls back silently). */
  realtime?: boolean;
  /**
   * A sysfs GPIO `value` file (/sys/class/gpio/gpioN/value) to drive: opened O_WRONLY at
   * construction (throws the open's errno), each edge one pwrite("1"/"0") from the pulse thread.
   * Without it the timer drives nothing and only reports when it would have.
   */
  path?: string;
}

export interface NativeLine extends NativePulseTarget {
  readonly fd: number;
  readonly closed: boolean;
  getValue(): 0 | 1;
  getValueAsync(): Promise<0 | 1>;
  setValue(value: 0 | 1): void;
  setValueAsync(value: 0 | 1): Promise<void>;
  watch(cb: NativeEdgeCallback): void;
  unwatch(): void;
}

export interface NativeGpio {
  listChips(devDir?: string): Promise<NativeChipInfo[] & { errors: string[] }>;
  chipInfo(path: string): Promise<NativeChipInfo>;
  lineInfo(path: string, offset: number): Promise<NativeLineInfo>;
  requestLine(req: NativeLineRequest): Promise<NativeLine>;
  /** A pulse engine without a line (bench, tests, sim) or driving a sysfs value file (onoff). */
  PulseTimer: new (opts?: NativePulseTimerOptions) => NativePulseTimer;
  monotonicNs(): bigint;
}

export type V4l2Fourcc = 'YUYV' | 'MJPG' | 'GREY' | 'RGB3' | (string & {});

export interface V4l2DeviceInfo {
  driver: string;
  card: string;
  busInfo: string;
  version: number;
  capabilities: number;
  capture: boolean;
  captureMplane: boolean;
  streaming: boolean;
}

export interface V4l2Format {
  fourcc: V4l2Fourcc;
  width: number;
  height: number;
  bytesPerLine: number;
  sizeImage: number;
  field: number;
  colorspace: number;
}

export type V4l2Size =
  | { width: number; height: number }
  | { minWidth: number; maxWidth: number; stepWidth: number; minHeight: number; maxHeight: number; stepHeight: number };

export interface V4l2FormatDesc {
  fourcc: V4l2Fourcc;
  description: string;
  compressed: boolean;
  sizes: V4l2Size[];
}

export interface V4l2Control {
  id: number;
  name: string;
  type: 'integer' | 'boolean' | 'menu' | 'intmenu' | 'integer64' | 'button';
  min: number;
  max: number;
  step: number;
  default: number;
  value: number;
  readOnly: boolean;
  inactive: boolean;
  menu?: { index: number; name: string }[];
}

export interface V4l2NativeFrame {
  /** Converted pixels (gray/rgb HWC) or the driver's bytes (raw), one copy out of the mmap buffer. */
  data: Buffer;
  /** Driver sequence number (gaps = frames the driver dropped). */
  sequence: number;
  timestampNs: bigint;
  /** 'driver': CLOCK_MONOTONIC stamp from the driver; 'dequeue': taken when dequeued. */
  tsSource: 'driver' | 'dequeue';
  dequeuedNs: bigint;
  bytesUsed: number;
  /** The driver flagged the buffer (V4L2_BUF_FLAG_ERROR) or it was truncated. */
  corrupt: boolean;
  /** Frames dropped since the previous delivered one because JS was behind. */
  dropped: number;
  fourcc: V4l2Fourcc;
  width: number;
  height: number;
  /** 1 gray, 3 rgb, 0 raw. */
  channels: number;
}

export interface V4l2StartOptions {
  buffers?: number;
  convert?: 'raw' | 'gray' | 'rgb';
  /** Frames waiting for JS before new ones are dropped. */
  queue?: number;
}

export interface V4l2Device {
  readonly streaming: boolean;
  info(): V4l2DeviceInfo;
  formats(): Promise<V4l2FormatDesc[]>;
  getFormat(): V4l2Format;
  setFormat(f: { fourcc: V4l2Fourcc; width: number; height: number }): Promise<V4l2Format>;
  setFrameRate(fps: number): Promise<number>;
  controls(): Promise<V4l2Control[]>;
  getControl(id: number): Promise<number>;
  setControl(id: number, value: number): Promise<void>;
  start(
    opts: V4l2StartOptions,
    onFrame: (err: NativeError | null, frame?: V4l2NativeFrame) => void,
  ): Promise<{ buffers: number; fourcc: V4l2Fourcc; width: number; height: number; bytesPerLine: number }>;
  stop(): void;
  stats(): { frames: number; dropped: number; errors: number };
  close(): void;
}

export interface NativeV4l2 {
  open(path: string): Promise<V4l2Device>;
  /** The capture thread's conversion, for tests: YUYV/GREY/RGB3 -> gray or rgb. */
  convert(src: Uint8Array, fourcc: V4l2Fourcc, width: number, height: number, bytesPerLine: number, target: 'gray' | 'rgb'): Buffer;
  cid: Record<
    'BRIGHTNESS' | 'CONTRAST' | 'GAIN' | 'AUTOGAIN' | 'EXPOSURE' | 'EXPOSURE_AUTO' | 'EXPOSURE_ABSOLUTE' | 'ANALOGUE_GAIN' | 'EXPOSURE_MANUAL',
    number
  >;
}

export interface NativeJpegOptions {
  colour?: 'gray' | 'rgb';
  /** Decode at 1/2, 1/4 or 1/8 scale while still covering width x height (one side when `inside`). */
  fit?: { width: number; height: number; inside?: boolean };
  /** Refuse larger images (header width x height). Default 40 M. */
  maxPixels?: number;
}

export interface NativeJpegImage {
  width: number;
  height: number;
  channels: 1 | 3;
  /** HWC pixels over an ArrayBuffer of their own (transferable). */
  data: Uint8Array;
  /** The DCT scaling used: decoded at 1/scale. */
  scale: 1 | 2 | 4 | 8;
  /** EXIF orientation found (1..8); the pixels are already turned accordingly. */
  orientation: number;
}

/** libjpeg-turbo, synchronous (native/src/jpeg.cc); absent from builds made without jpeglib.h. */
export type NativeJpeg =
  | { available: true; version: string; decode(data: Uint8Array, opts?: NativeJpegOptions): NativeJpegImage }
  | { available: false; reason: string };

/**
 * native/src/resize.cc: the crop, resized to scaledWidth x scaledHeight as sharp's linear kernel
 * does it, placed at (padX, padY) on an outWidth x outHeight background of `fill`.
 */
export interface NativeResizeOptions {
  width: number;
  height: number;
  channels: 1 | 3;
  crop: { x: number; y: number; width: number; height: number };
  scaledWidth: number;
  scaledHeight: number;
  outWidth: number;
  outHeight: number;
  padX: number;
  padY: number;
  fill: number;
}

export interface NativeAddon {
  abi: number;
  napiVersion: number;
  gpio: NativeGpio;
  v4l2: NativeV4l2;
  /** sd_notify: true when sent, false when there is no NOTIFY_SOCKET. Throws on a send error. */
  notify(state: string, socketPath?: string): boolean;
  /** Undefined in builds older than the decoder. */
  jpeg?: NativeJpeg;
  /** Synchronous crop + resize + letterbox (HWC uint8, into a fresh ArrayBuffer); undefined in older builds. */
  resize?(data: Uint8Array, opts: NativeResizeOptions): Uint8Array;
}

// ── loading ────────────────────────────────────────────────────────────────────────────────────

/** The addon's ABI this TypeScript expects (native/src/addon.cc exports `abi`). */
export const NATIVE_ABI = 1;

export class NativeUnavailableError extends Error {
  constructor(
    message: string,
    readonly reason: string,
  ) {
    super(message);
    this.name = 'NativeUnavailableError';
  }
}

/**
 * The native/ folder: found by walking up from this module (src/native in the sources, dist/native
 * when built, or a bundle anywhere under the package), or LINESIGHT_NATIVE_DIR.
 */
export function nativeDir(): string {
  const env = process.env.LINESIGHT_NATIVE_DIR;
  if (env) return resolve(env);
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'native', 'binding.gyp'))) return join(dir, 'native');
    const up = dirname(dir);
    if (up === dir) return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'native');
    dir = up;
  }
}

function platformWords(): string {
  return `${process.platform}-${process.arch}, node ${process.versions.node} (ABI ${process.versions.modules})`;
}

let cached: { addon?: NativeAddon; error?: NativeUnavailableError } | undefined;

/** Load the addon (once). Throws NativeUnavailableError naming the platform and the fix. */
export function loadNative(): NativeAddon {
  cached ??= tryLoad();
  if (cached.addon) return cached.addon;
  throw cached.error!;
}

/** The addon, or undefined when it cannot load (nativeStatus() says why). */
export function tryLoadNative(): NativeAddon | undefined {
  cached ??= tryLoad();
  return cached.addon;
}

export function nativeStatus(): { available: boolean; reason?: string; dir: string } {
  cached ??= tryLoad();
  return cached.addon ? { available: true, dir: nativeDir() } : { available: false, reason: cached.error!.message, dir: nativeDir() };
}

/** Forget the cached result (tests). */
export function resetNativeForTests(): void {
  cached = undefined;
}

function tryLoad(): { addon?: NativeAddon; error?: NativeUnavailableError } {
  const where = platformWords();
  const dir = nativeDir();
  const off = process.env.LINESIGHT_NATIVE;
  if (off === '0' || off === 'off' || off === 'false') {
    return {
      error: new NativeUnavailableError(
        `linesight native addon disabled by LINESIGHT_NATIVE=${off}; using the fallbacks (onoff GPIO, ffmpeg camera, systemd-notify)`,
        'disabled',
      ),
    };
  }
  if (process.platform !== 'linux') {
    return {
      error: new NativeUnavailableError(
        `linesight native addon is Linux-only (GPIO character device, V4L2) and this is ${where}; ` +
          `use gpio.backend 'sim' or 'onoff' and camera.source 'ffmpeg'/'replay'/'synthetic'`,
        'platform',
      ),
    };
  }
  try {
    const require = createRequire(import.meta.url);
    const load = require('node-gyp-build') as (dir: string) => unknown;
    const addon = load(dir) as NativeAddon & { unsupported?: string };
    if (addon.unsupported) throw new Error(addon.unsupported);
    if (addon.abi !== NATIVE_ABI) {
      throw new Error(`the built addon has ABI ${String(addon.abi)}, this code expects ${NATIVE_ABI} (a stale build)`);
    }
    return { addon };
  } catch (err) {
    const msg = (err as Error).message.split('\n')[0];
    return {
      error: new NativeUnavailableError(
        `linesight native addon cannot be loaded on ${where} from ${dir}: ${msg}. ` +
          `Fix: install a C++ toolchain (Debian/Raspberry Pi OS: sudo apt-get install build-essential python3) and ` +
          `run 'npm run build:native' (or 'npm rebuild'); until then the agent uses the fallbacks ` +
          `(onoff GPIO, ffmpeg camera, systemd-notify)`,
        'load',
      ),
    };
  }
}
