// A V4L2 camera (USB/UVC, CSI through a V4L2 capture node) read directly with the native addon:
// mmap streaming, the driver's CLOCK_MONOTONIC timestamp on each frame, and one pass over the
// pixels from the driver's buffer to the Frame (YUYV/GREY/RGB24 converted to gray or rgb HWC by
// the capture thread). MJPEG is handed over as is and decoded with sharp (libvips' thread pool).
// Like FfmpegSource: grab() waits for the next frame, onFrame() gets every frame, a watchdog
// reopens the camera when frames stop, with backoff.
import type { Clock, Timer } from '../clock.js';
import { msToNs } from '../clock.js';
import type { Logger } from '../log.js';
import type { Frame } from '../part.js';
import type { NativeAddon, NativeError, V4l2Control, V4l2Device, V4l2FormatDesc, V4l2NativeFrame, V4l2Size } from '../native/addon.js';
import { loadNative } from '../native/addon.js';
import { FpsMeter, FrameWaiters, Subscribers } from './kit.js';
import { FrameError, type FrameSource } from './types.js';

export type V4l2PixelFormat = 'auto' | 'YUYV' | 'MJPG' | 'GREY' | 'RGB3';

export interface V4l2Options {
  /** The capture node, e.g. '/dev/video0'. */
  device: string;
  width: number;
  height: number;
  /** Pixel format to ask the camera for; 'auto' picks what needs the least work for `colour`. */
  format?: V4l2PixelFormat;
  /** Frame rate to ask for (the driver may round it); default: the driver's. */
  fps?: number;
  colour: 'gray' | 'rgb';
  /** Driver buffers (default 4). */
  buffers?: number;
  /**
   * Controls set at start: 'exposure' and 'gain' (auto modes are switched off first), or any
   * control by its driver name ('Brightness') or numeric id.
   */
  controls?: Record<string, number>;
  /** No frame for this long = stalled: the device is reopened (default 2000). */
  stallTimeoutMs?: number;
  restartMinMs?: number;
  restartMaxMs?: number;
}

export interface V4l2Deps {
  clock: Clock;
  log: Logger;
  onAlarm?: (kind: string, message: string) => void;
  /** The addon (tests); default: loaded at start(). */
  addon?: NativeAddon;
  /** MJPEG decoder (tests); default: sharp. */
  decodeJpeg?: (jpeg: Uint8Array, colour: 'gray' | 'rgb') => Promise<{ data: Uint8Array; width: number; height: number; channels: 1 | 3 }>;
}

/** Preference for 'auto': no conversion at all first, then a cheap native one, MJPEG last. */
const AUTO_ORDER: Record<'gray' | 'rgb', string[]> = {
  gray: ['GREY', 'YUYV', 'RGB3', 'MJPG'],
  rgb: ['RGB3', 'YUYV', 'GREY', 'MJPG'],
};

function sizeFits(s: V4l2Size, w: number, h: number): boolean {
  if ('width' in s) return s.width === w && s.height === h;
  return (
    w >= s.minWidth && w <= s.maxWidth && h >= s.minHeight && h <= s.maxHeight &&
    (w - s.minWidth) % Math.max(1, s.stepWidth) === 0 && (h - s.minHeight) % Math.max(1, s.stepHeight) === 0
  );
}

function describeSizes(f: V4l2FormatDesc): string {
  return f.sizes
    .map((s) => ('width' in s ? `${s.width}x${s.height}` : `${s.minWidth}-${s.maxWidth}x${s.minHeight}-${s.maxHeight}`))
    .join(' ');
}

/** Pick the format to ask for. Exported for tests. */
export function chooseFormat(formats: V4l2FormatDesc[], opts: Pick<V4l2Options, 'format' | 'width' | 'height' | 'colour'>): string {
  const want = opts.format ?? 'auto';
  const usable = formats.filter((f) => AUTO_ORDER.gray.includes(f.fourcc));
  if (want !== 'auto') {
    const f = formats.find((x) => x.fourcc === want);
    if (!f) {
      throw new FrameError(`V4L2: the camera does not offer ${want}; it offers ${formats.map((x) => x.fourcc).join(', ') || 'nothing'}`, 'camera');
    }
    return want;
  }
  const fitting = usable.filter((f) => f.sizes.length === 0 || f.sizes.some((s) => sizeFits(s, opts.width, opts.height)));
  const pool = fitting.length ? fitting : usable;
  for (const fourcc of AUTO_ORDER[opts.colour]) if (pool.some((f) => f.fourcc === fourcc)) return fourcc;
  throw new FrameError(
    `V4L2: none of the camera's formats can be used (${formats.map((f) => `${f.fourcc}: ${describeSizes(f)}`).join('; ') || 'none'}); supported: YUYV, GREY, RGB3, MJPG`,
    'camera',
  );
}

/** Find a control by alias ('exposure', 'gain'), driver name (case-insensitive) or numeric id. */
export function findControl(controls: V4l2Control[], key: string, cid: NativeAddon['v4l2']['cid']): V4l2Control | undefined {
  const byId = (id: number) => controls.find((c) => c.id === id);
  const k = key.trim().toLowerCase();
  if (k === 'exposure') return byId(cid.EXPOSURE_ABSOLUTE) ?? byId(cid.EXPOSURE);
  if (k === 'gain') return byId(cid.GAIN) ?? byId(cid.ANALOGUE_GAIN);
  if (/^(0x[0-9a-f]+|\d+)$/.test(k)) return byId(Number(k));
  const norm = (s: string) => s.toLowerCase().replace(/[^a-z0-9]+/g, ' ').trim();
  return controls.find((c) => norm(c.name) === norm(key));
}

/** BT.601 luma weights: the Y a JPEG stores, and what ffmpeg's gray and the YUYV path give. */
const LUMA: [number, number, number] = [0.299, 0.587, 0.114];

async function sharpDecode(jpeg: Uint8Array, colour: 'gray' | 'rgb') {
  const sharp = (await import('sharp')).default;
  let img = sharp(jpeg, { failOn: 'error' }).removeAlpha().toColourspace('srgb');
  // Gray as BT.601 luma (not libvips' b-w), so the same camera gives the same gray whether it
  // sends MJPEG or YUYV, and whether it is read here or through ffmpeg.
  if (colour === 'gray') img = img.recomb([LUMA, LUMA, LUMA]).extractChannel(0);
  const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
  if (colour === 'gray' && info.channels !== 1) throw new Error(`decoded ${info.channels} channels, wanted 1`);
  if (colour === 'rgb' && info.channels !== 3) throw new Error(`decoded ${info.channels} channels, wanted 3`);
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, channels: info.channels as 1 | 3 };
}

export class V4l2Source implements FrameSource {
  readonly name = 'v4l2';
  readonly live = true;
  private readonly log: Logger;
  private readonly meter: FpsMeter;
  private readonly subs = new Subscribers();
  private readonly waiters: FrameWaiters;
  private readonly stallNs: bigint;
  private readonly restartMinMs: number;
  private readonly restartMaxMs: number;
  private backoffMs: number;
  private running = false;
  private dev: V4l2Device | undefined;
  /** Bumped on every open, so callbacks of a retired device are ignored. */
  private generation = 0;
  private lastProgressNs = 0n;
  private firstFrameNs: bigint | undefined;
  private watchdog: Timer | undefined;
  private restartTimer: Timer | undefined;
  private decoding = false;
  private pendingJpeg: V4l2NativeFrame | undefined;
  private seq = 0;
  private counts = { frames: 0, errors: 0, stalls: 0, restarts: 0, dropped: 0 };
  private active: { fourcc: string; width: number; height: number; fps?: number } | undefined;

  constructor(
    private readonly opts: V4l2Options,
    private readonly deps: V4l2Deps,
  ) {
    this.log = deps.log.child({ component: 'camera', source: 'v4l2' });
    this.meter = new FpsMeter(deps.clock);
    this.stallNs = msToNs(opts.stallTimeoutMs ?? 2000);
    this.waiters = new FrameWaiters(deps.clock, this.stallNs, () => {
      this.counts.errors++;
      return new FrameError(`no frame from ${opts.device} within ${opts.stallTimeoutMs ?? 2000} ms`, 'camera');
    });
    this.restartMinMs = opts.restartMinMs ?? 250;
    this.restartMaxMs = opts.restartMaxMs ?? 10_000;
    this.backoffMs = this.restartMinMs;
  }

  /** The format, size and rate the camera runs at (after start). */
  get format(): { fourcc: string; width: number; height: number; fps?: number } | undefined {
    return this.active;
  }

  /** The camera's controls with their current values (after start). */
  async controls(): Promise<V4l2Control[]> {
    if (!this.dev) throw new FrameError('V4L2 camera is not started', 'camera');
    return this.dev.controls();
  }

  /** Set a control now ('exposure', 'gain', a driver name or id); returns the value read back. */
  async setControl(key: string, value: number): Promise<number> {
    if (!this.dev) throw new FrameError('V4L2 camera is not started', 'camera');
    return this.applyControl(this.dev, await this.dev.controls(), key, value);
  }

  async start(): Promise<void> {
    if (this.running) return;
    if (!this.opts.device) throw new Error("v4l2 camera: the device is not set (e.g. '/dev/video0')");
    this.running = true;
    this.backoffMs = this.restartMinMs;
    try {
      await this.openDevice();
    } catch (err) {
      this.running = false;
      throw err;
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    this.generation++;
    this.restartTimer?.cancel();
    this.restartTimer = undefined;
    this.watchdog?.cancel();
    this.watchdog = undefined;
    this.closeDevice();
    this.pendingJpeg = undefined;
    this.waiters.fail(new FrameError('V4L2 camera stopped', 'camera'));
  }

  grab(): Promise<Frame> {
    if (!this.running) return Promise.reject(new FrameError('V4L2 camera is not started', 'camera'));
    return this.waiters.next();
  }

  onFrame(cb: (frame: Frame) => void, onError?: (err: FrameError) => void): () => void {
    return this.subs.add(cb, onError);
  }

  stats(): { frames: number; errors: number; stalls: number; restarts: number; fps: number; dropped: number } {
    return { ...this.counts, fps: this.meter.fps() };
  }

  // ── device ───────────────────────────────────────────────────────────────────────────────────

  private addon(): NativeAddon {
    if (!this.deps.addon) {
      try {
        this.deps.addon = loadNative();
      } catch (err) {
        throw new FrameError(`camera source 'v4l2' needs the native addon: ${(err as Error).message} (or use camera.source 'ffmpeg')`, 'camera');
      }
    }
    return this.deps.addon;
  }

  private async openDevice(): Promise<void> {
    const addon = this.addon();
    const gen = ++this.generation;
    let dev: V4l2Device;
    try {
      dev = await addon.v4l2.open(this.opts.device);
    } catch (err) {
      throw this.openError(err);
    }
    if (gen !== this.generation || !this.running) {
      dev.close();
      return;
    }
    this.dev = dev;
    try {
      const formats = await dev.formats();
      const fourcc = chooseFormat(formats, this.opts);
      const fmt = await dev.setFormat({ fourcc, width: this.opts.width, height: this.opts.height });
      if (fmt.fourcc !== fourcc) throw new FrameError(`V4L2 ${this.opts.device}: asked for ${fourcc}, the driver chose ${fmt.fourcc}`, 'camera');
      if (fmt.width !== this.opts.width || fmt.height !== this.opts.height) {
        this.log.warn('camera size adjusted by the driver', { asked: `${this.opts.width}x${this.opts.height}`, got: `${fmt.width}x${fmt.height}` });
      }
      let fps: number | undefined;
      if (this.opts.fps) {
        try {
          fps = await dev.setFrameRate(this.opts.fps);
        } catch (err) {
          this.log.warn('camera frame rate not set', { fps: this.opts.fps, error: (err as Error).message });
        }
      }
      if (this.opts.controls && Object.keys(this.opts.controls).length) {
        const controls = await dev.controls();
        for (const [k, v] of Object.entries(this.opts.controls)) await this.applyControl(dev, controls, k, v);
      }
      const convert = fourcc === 'MJPG' ? 'raw' : this.opts.colour;
      const started = await dev.start({ buffers: this.opts.buffers ?? 4, convert, queue: 2 }, (err, frame) => {
        if (gen !== this.generation) return;
        if (err) this.onDeviceError(err);
        else if (frame) this.onNativeFrame(frame);
      });
      if (gen !== this.generation || !this.running) {
        dev.close();
        return;
      }
      this.active = { fourcc, width: started.width, height: started.height, fps };
      this.lastProgressNs = this.deps.clock.nowNs();
      this.firstFrameNs = undefined;
      this.armWatchdog(gen);
      this.log.info('v4l2 camera started', {
        device: this.opts.device,
        card: dev.info().card,
        format: fourcc,
        size: `${started.width}x${started.height}`,
        colour: this.opts.colour,
        buffers: started.buffers,
        fps,
      });
    } catch (err) {
      if (this.dev === dev) this.dev = undefined;
      dev.close();
      throw err instanceof FrameError ? err : new FrameError(`V4L2 ${this.opts.device}: ${(err as Error).message}`, 'camera');
    }
  }

  private async applyControl(dev: V4l2Device, controls: V4l2Control[], key: string, value: number): Promise<number> {
    const cid = this.addon().v4l2.cid;
    const c = findControl(controls, key, cid);
    if (!c) {
      throw new FrameError(`V4L2 ${this.opts.device}: no control '${key}'; controls: ${controls.map((x) => x.name).join(', ')}`, 'camera');
    }
    const k = key.trim().toLowerCase();
    // Manual exposure/gain needs the auto mode off first (UVC: exposure_auto = manual).
    if (k === 'exposure') {
      const auto = controls.find((x) => x.id === cid.EXPOSURE_AUTO);
      if (auto && auto.value !== cid.EXPOSURE_MANUAL) await dev.setControl(auto.id, cid.EXPOSURE_MANUAL);
    }
    if (k === 'gain') {
      const auto = controls.find((x) => x.id === cid.AUTOGAIN);
      if (auto && auto.value !== 0) await dev.setControl(auto.id, 0);
    }
    if (value < c.min || value > c.max) {
      throw new FrameError(`V4L2 ${this.opts.device}: control '${c.name}' must be in ${c.min}..${c.max}, got ${value}`, 'camera');
    }
    try {
      await dev.setControl(c.id, value);
    } catch (err) {
      throw new FrameError(`V4L2 ${this.opts.device}: cannot set '${c.name}' to ${value}: ${(err as Error).message}`, 'camera');
    }
    const back = await dev.getControl(c.id);
    this.log.info('camera control set', { control: c.name, value, readBack: back });
    return back;
  }

  private closeDevice(): void {
    const dev = this.dev;
    this.dev = undefined;
    if (!dev) return;
    try {
      dev.close(); // stops the capture thread, unmaps, closes
    } catch (err) {
      this.log.warn('v4l2 close failed', { error: (err as Error).message });
    }
  }

  private openError(err: unknown): FrameError {
    if (err instanceof FrameError) return err;
    const e = err as NativeError;
    const d = this.opts.device;
    switch (e.code) {
      case 'ENOENT':
        return new FrameError(`camera ${d} does not exist (is it plugged in? 'ls /dev/video*'; for a USB camera check dmesg)`, 'camera');
      case 'EACCES':
      case 'EPERM':
        return new FrameError(`camera ${d}: permission denied (add the user to the 'video' group)`, 'camera');
      case 'EBUSY':
        return new FrameError(`camera ${d} is busy: another process is streaming from it`, 'camera');
      default:
        return new FrameError(`camera ${d}: ${e.message}`, 'camera');
    }
  }

  // ── frames ───────────────────────────────────────────────────────────────────────────────────

  private onNativeFrame(nf: V4l2NativeFrame): void {
    this.lastProgressNs = this.deps.clock.nowNs();
    if (nf.dropped) this.counts.dropped += nf.dropped;
    if (nf.corrupt || nf.data.length === 0) {
      this.counts.errors++;
      this.fail(new FrameError(`V4L2 ${this.opts.device}: corrupt frame (driver sequence ${nf.sequence})`, 'bad_frame'));
      return;
    }
    if (nf.channels === 0) {
      // MJPEG: one decode at a time; while one runs, keep only the newest.
      if (this.decoding) {
        if (this.pendingJpeg) this.counts.dropped++;
        this.pendingJpeg = nf;
        return;
      }
      void this.decode(nf);
      return;
    }
    this.deliver(nf, nf.data, nf.width, nf.height, nf.channels as 1 | 3);
  }

  private async decode(nf: V4l2NativeFrame): Promise<void> {
    const gen = this.generation;
    this.decoding = true;
    try {
      const dec = await (this.deps.decodeJpeg ?? sharpDecode)(nf.data, this.opts.colour);
      if (gen === this.generation) this.deliver(nf, dec.data, dec.width, dec.height, dec.channels);
    } catch (err) {
      if (gen === this.generation) {
        this.counts.errors++;
        this.fail(new FrameError(`V4L2 ${this.opts.device}: MJPEG frame ${nf.sequence} does not decode: ${(err as Error).message}`, 'bad_frame'));
      }
    } finally {
      this.decoding = false;
      const next = this.pendingJpeg;
      this.pendingJpeg = undefined;
      if (next && gen === this.generation) void this.decode(next);
    }
  }

  private deliver(nf: V4l2NativeFrame, data: Uint8Array, width: number, height: number, channels: 1 | 3): void {
    const now = this.deps.clock.nowNs();
    this.firstFrameNs ??= now;
    if (this.backoffMs !== this.restartMinMs && now - this.firstFrameNs >= this.stallNs) this.backoffMs = this.restartMinMs;
    const frame: Frame = {
      seq: this.seq++,
      // The driver's CLOCK_MONOTONIC stamp is the clock of SystemClock (hrtime).
      timeNs: nf.tsSource === 'driver' ? nf.timestampNs : now,
      width,
      height,
      channels,
      data,
      source: 'v4l2',
    };
    this.counts.frames++;
    this.meter.tick();
    this.waiters.deliver(frame);
    this.subs.frame(frame);
  }

  private fail(e: FrameError): void {
    this.waiters.fail(e);
    this.subs.error(e);
  }

  // ── watchdog and restarts ───────────────────────────────────────────────────────────────────

  private onDeviceError(err: NativeError): void {
    this.counts.errors++;
    const msg = `camera ${this.opts.device} failed: ${err.message}; reopening`;
    this.log.warn(msg);
    this.alarm('camera_error', msg);
    this.fail(new FrameError(msg, 'camera'));
    this.retire();
  }

  private armWatchdog(gen: number): void {
    this.watchdog?.cancel();
    if (!this.running) return;
    this.watchdog = this.deps.clock.at(this.lastProgressNs + this.stallNs, () => {
      this.watchdog = undefined;
      if (!this.running || gen !== this.generation) return;
      if (this.deps.clock.nowNs() - this.lastProgressNs < this.stallNs) {
        this.armWatchdog(gen);
        return;
      }
      this.counts.stalls++;
      const msg = `camera stalled: no frame from ${this.opts.device} for ${this.opts.stallTimeoutMs ?? 2000} ms; reopening it`;
      this.log.warn(msg);
      this.alarm('camera_stall', msg);
      this.fail(new FrameError(msg, 'camera'));
      this.retire();
    });
  }

  private retire(): void {
    this.generation++;
    this.watchdog?.cancel();
    this.watchdog = undefined;
    this.closeDevice();
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    if (!this.running || this.restartTimer) return;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.restartMaxMs, Math.max(delay * 2, 100));
    this.restartTimer = this.deps.clock.at(this.deps.clock.nowNs() + msToNs(delay), () => {
      this.restartTimer = undefined;
      void this.restart();
    });
  }

  private async restart(): Promise<void> {
    if (!this.running) return;
    this.counts.restarts++;
    try {
      await this.openDevice();
    } catch (err) {
      this.counts.errors++;
      const msg = (err as Error).message;
      this.log.error('v4l2 camera reopen failed', { error: msg });
      this.alarm('camera_error', msg);
      this.scheduleRestart();
    }
  }

  private alarm(kind: string, message: string): void {
    try {
      this.deps.onAlarm?.(kind, message);
    } catch (err) {
      this.log.warn('alarm handler failed', { error: (err as Error).message });
    }
  }
}
