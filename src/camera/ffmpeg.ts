// Any camera ffmpeg can open (V4L2/USB, RTSP, files, lavfi test patterns) as raw frames on a pipe.
// ffmpeg runs free; we keep only the newest frame. A watchdog restarts it when frames stop, because
// on a line a silently frozen camera is worse than a dead one.
import { spawn, type ChildProcess } from 'node:child_process';
import type { Clock, Timer } from '../clock.js';
import { msToNs } from '../clock.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { Frame } from '../part.js';
import { FpsMeter, FrameWaiters, Subscribers } from './kit.js';
import { FrameError, type FrameSource } from './types.js';

type FfmpegConfig = Config['camera']['ffmpeg'];

/** How long ffmpeg gets to exit after SIGTERM before SIGKILL. */
const KILL_GRACE_MS = 2000;
const STDERR_TAIL = 20;

export interface FfmpegDeps {
  clock: Clock;
  log: Logger;
  /** Raised on camera trouble: kind is 'camera_stall', 'camera_exit' or 'camera_error'. */
  onAlarm?: (kind: string, message: string) => void;
}

/** The ffmpeg command line (without the binary). */
export function ffmpegArgs(cfg: FfmpegConfig): string[] {
  return [
    '-hide_banner',
    '-loglevel',
    'error',
    '-nostdin', // ffmpeg would otherwise poll stdin for interactive keys
    ...cfg.inputArgs,
    '-i',
    cfg.input,
    '-an',
    '-f',
    'rawvideo',
    '-pix_fmt',
    cfg.colour === 'gray' ? 'gray' : 'rgb24',
    '-vf',
    `scale=${cfg.width}:${cfg.height}`,
    '-',
  ];
}

interface Child {
  proc: ChildProcess;
  spawned: boolean;
  closed: Promise<void>;
  startNs: bigint;
  firstFrameNs?: bigint;
  frames: number;
  stderr: string[];
}

export class FfmpegSource implements FrameSource {
  readonly name = 'ffmpeg';
  readonly live = true;
  private readonly width: number;
  private readonly height: number;
  private readonly channels: 1 | 3;
  private readonly frameSize: number;
  private readonly stallNs: bigint;
  private readonly log: Logger;
  private readonly meter: FpsMeter;
  private readonly subs = new Subscribers();
  private readonly waiters: FrameWaiters;
  /** Every child not yet reaped, so stop() can wait for all of them. */
  private readonly alive = new Set<Child>();

  private running = false;
  private child: Child | undefined;
  private partial: Uint8Array | undefined;
  private filled = 0;
  private latest: Frame | undefined;
  private lastProgressNs = 0n;
  private watchdog: Timer | undefined;
  private restartTimer: Timer | undefined;
  private backoffMs: number;
  private seq = 0;
  private counts = { frames: 0, errors: 0, stalls: 0, restarts: 0 };

  constructor(
    private readonly cfg: FfmpegConfig,
    private readonly deps: FfmpegDeps,
  ) {
    this.width = cfg.width;
    this.height = cfg.height;
    this.channels = cfg.colour === 'gray' ? 1 : 3;
    this.frameSize = cfg.width * cfg.height * this.channels;
    this.stallNs = msToNs(cfg.stallTimeoutMs);
    this.waiters = new FrameWaiters(deps.clock, this.stallNs, () => {
      this.counts.errors++;
      return new FrameError(`no frame from ffmpeg within ${cfg.stallTimeoutMs} ms (input ${cfg.input})`, 'camera');
    });
    this.backoffMs = cfg.restartMinMs;
    this.log = deps.log.child({ component: 'camera', source: 'ffmpeg' });
    this.meter = new FpsMeter(deps.clock);
  }

  /** The newest frame captured, if any (for previews; grab() waits for a fresh one). */
  get latestFrame(): Frame | undefined {
    return this.latest;
  }

  async start(): Promise<void> {
    if (this.running) return;
    if (!this.cfg.input) {
      throw new Error(
        "ffmpeg camera: camera.ffmpeg.input is not set; set it to '/dev/video0', an rtsp:// URL, a video file, or a lavfi graph (with inputArgs ['-f', 'lavfi'])",
      );
    }
    this.running = true;
    this.backoffMs = this.cfg.restartMinMs;
    try {
      await this.spawnChild();
    } catch (err) {
      this.running = false;
      throw new Error(this.spawnErrorMessage(err));
    }
    this.log.info('ffmpeg camera started', {
      input: this.cfg.input,
      size: `${this.width}x${this.height}`,
      colour: this.cfg.colour,
      pid: this.child?.proc.pid,
    });
  }

  async stop(): Promise<void> {
    this.running = false;
    this.restartTimer?.cancel();
    this.restartTimer = undefined;
    this.watchdog?.cancel();
    this.watchdog = undefined;
    this.child = undefined;
    this.partial = undefined;
    this.filled = 0;
    this.waiters.fail(new FrameError('ffmpeg camera stopped', 'camera'));
    await Promise.all([...this.alive].map((c) => this.kill(c)));
  }

  grab(): Promise<Frame> {
    if (!this.running) return Promise.reject(new FrameError('ffmpeg camera is not started', 'camera'));
    return this.waiters.next();
  }

  onFrame(cb: (frame: Frame) => void, onError?: (err: FrameError) => void): () => void {
    return this.subs.add(cb, onError);
  }

  stats(): { frames: number; errors: number; stalls: number; restarts: number; fps: number } {
    return { ...this.counts, fps: this.meter.fps() };
  }

  // --- child process -------------------------------------------------------------------------

  private spawnChild(): Promise<void> {
    const proc = spawn(this.cfg.ffmpegPath, ffmpegArgs(this.cfg), { stdio: ['ignore', 'pipe', 'pipe'] });
    const now = this.deps.clock.nowNs();
    let onClose!: () => void;
    const c: Child = {
      proc,
      spawned: false,
      closed: new Promise<void>((r) => (onClose = r)),
      startNs: now,
      frames: 0,
      stderr: [],
    };
    this.alive.add(c);
    this.child = c;
    this.partial = undefined;
    this.filled = 0;
    this.lastProgressNs = now; // a fresh child gets a full stall timeout to produce its first frame

    proc.stdout!.on('data', (chunk: Buffer) => {
      if (this.child === c) this.onData(c, chunk);
    });
    proc.stdout!.on('error', () => {}); // reported through 'close'
    let pending = '';
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (s: string) => {
      const lines = (pending + s).split(/\r?\n|\r/);
      pending = lines.pop() ?? '';
      for (const line of lines) this.stderrLine(c, line);
    });
    proc.stderr!.on('error', () => {});
    proc.on('close', (code: number | null, signal: NodeJS.Signals | null) => {
      if (pending) this.stderrLine(c, pending);
      pending = '';
      this.alive.delete(c);
      onClose();
      if (c.spawned) this.onExit(c, code, signal);
    });

    return new Promise<void>((resolve, reject) => {
      proc.once('spawn', () => {
        c.spawned = true;
        this.armWatchdog(c);
        resolve();
      });
      proc.on('error', (err) => {
        if (!c.spawned) {
          if (this.child === c) this.child = undefined;
          reject(err);
        } else {
          this.log.warn('ffmpeg process error', { error: err.message, pid: proc.pid });
        }
      });
    });
  }

  private stderrLine(c: Child, raw: string): void {
    const line = raw.trim().slice(0, 500);
    if (!line) return;
    c.stderr.push(line);
    if (c.stderr.length > STDERR_TAIL) c.stderr.shift();
    this.log.debug('ffmpeg: ' + line, { pid: c.proc.pid });
  }

  /**
   * Cut the byte stream into frames. Each frame gets its own exactly-sized buffer (so a consumer
   * may transfer it to a worker); every byte is copied once, from the pipe chunk straight into its
   * frame, whatever the chunk boundaries.
   */
  private onData(c: Child, chunk: Buffer): void {
    const size = this.frameSize;
    let off = 0;
    while (off < chunk.length) {
      if (!this.partial) this.partial = new Uint8Array(size);
      const take = Math.min(size - this.filled, chunk.length - off);
      this.partial.set(chunk.subarray(off, off + take), this.filled);
      this.filled += take;
      off += take;
      if (this.filled === size) {
        const data = this.partial;
        this.partial = undefined;
        this.filled = 0;
        this.onFrameData(c, data);
      }
    }
  }

  private onFrameData(c: Child, data: Uint8Array): void {
    const now = this.deps.clock.nowNs();
    this.lastProgressNs = now;
    c.frames++;
    if (c.firstFrameNs === undefined) {
      c.firstFrameNs = now;
      if (this.counts.restarts > 0) this.log.info('ffmpeg camera delivering frames again', { pid: c.proc.pid });
    }
    // Frames have flowed for a full stall period: the camera is healthy again, forget the backoff.
    if (this.backoffMs !== this.cfg.restartMinMs && now - c.firstFrameNs >= this.stallNs) {
      this.backoffMs = this.cfg.restartMinMs;
    }
    const frame: Frame = {
      seq: this.seq++,
      timeNs: now,
      width: this.width,
      height: this.height,
      channels: this.channels,
      data,
      source: 'ffmpeg',
    };
    this.latest = frame;
    this.counts.frames++;
    this.meter.tick();
    this.waiters.deliver(frame);
    this.subs.frame(frame);
  }

  // --- watchdog and restarts -----------------------------------------------------------------

  /** One timer at the stall deadline; when it fires after progress it just re-arms (cheap per frame). */
  private armWatchdog(c: Child): void {
    this.watchdog?.cancel();
    if (!this.running) return;
    this.watchdog = this.deps.clock.at(this.lastProgressNs + this.stallNs, () => {
      this.watchdog = undefined;
      if (!this.running || this.child !== c) return;
      if (this.deps.clock.nowNs() - this.lastProgressNs < this.stallNs) {
        this.armWatchdog(c);
        return;
      }
      this.counts.stalls++;
      const msg = `camera stalled: no frame from ffmpeg for ${this.cfg.stallTimeoutMs} ms (input ${this.cfg.input}); restarting ffmpeg`;
      this.log.warn(msg, { pid: c.proc.pid, framesFromThisProcess: c.frames, stderr: c.stderr.slice(-5) });
      this.alarm('camera_stall', msg);
      this.subs.error(new FrameError(msg, 'camera'));
      // Retire the stuck process now rather than waiting for it to die: a wedged device may take
      // a while, and the replacement's own failures go through the same backoff.
      this.child = undefined;
      void this.kill(c);
      this.scheduleRestart();
    });
  }

  private onExit(c: Child, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== c || !this.running) return; // retired by us or stopping: expected
    this.child = undefined;
    this.watchdog?.cancel();
    this.watchdog = undefined;
    this.counts.errors++;
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    const last = c.stderr.at(-1);
    const msg = `ffmpeg ${how} (input ${this.cfg.input})${last ? `: ${last}` : ''}`;
    this.log.warn(msg, { pid: c.proc.pid, framesFromThisProcess: c.frames, stderr: c.stderr.slice(-5) });
    this.alarm('camera_exit', msg);
    this.subs.error(new FrameError(msg, 'camera'));
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    if (!this.running || this.restartTimer) return;
    const delay = this.backoffMs;
    // Exponential backoff; the floor keeps restartMinMs = 0 from becoming a tight spawn loop.
    this.backoffMs = Math.min(this.cfg.restartMaxMs, Math.max(delay * 2, 100));
    this.log.info('restarting ffmpeg', { inMs: delay });
    this.restartTimer = this.deps.clock.at(this.deps.clock.nowNs() + msToNs(delay), () => {
      this.restartTimer = undefined;
      void this.restart();
    });
  }

  private async restart(): Promise<void> {
    if (!this.running) return;
    this.counts.restarts++;
    try {
      await this.spawnChild();
      // stop() may have run while spawning: the new child must not outlive it.
      if (!this.running && this.child) void this.kill(this.child);
    } catch (err) {
      this.counts.errors++;
      const msg = this.spawnErrorMessage(err);
      this.log.error(msg);
      this.alarm('camera_error', msg);
      this.scheduleRestart();
    }
  }

  private kill(c: Child): Promise<void> {
    const p = c.proc;
    if (p.pid !== undefined && p.exitCode === null && p.signalCode === null) {
      p.kill('SIGTERM');
      // Real time, not the line clock: this is process hygiene, and must happen even under a fake clock.
      const t = setTimeout(() => {
        if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
      }, KILL_GRACE_MS);
      t.unref();
      void c.closed.then(() => clearTimeout(t));
    }
    return c.closed;
  }

  private alarm(kind: string, message: string): void {
    try {
      this.deps.onAlarm?.(kind, message);
    } catch (err) {
      this.log.warn('alarm handler failed', { error: (err as Error).message });
    }
  }

  private spawnErrorMessage(err: unknown): string {
    const e = err as NodeJS.ErrnoException;
    const p = this.cfg.ffmpegPath;
    if (e?.code === 'ENOENT') {
      return `ffmpeg not found: cannot run "${p}". Install it (Debian/Ubuntu/Raspberry Pi OS: sudo apt-get install ffmpeg) or set camera.ffmpeg.ffmpegPath to the ffmpeg binary`;
    }
    if (e?.code === 'EACCES') {
      return `cannot run "${p}": permission denied. Make it executable or set camera.ffmpeg.ffmpegPath to the ffmpeg binary (sudo apt-get install ffmpeg)`;
    }
    return `cannot start ffmpeg "${p}": ${e?.message ?? String(err)}`;
  }
}
