// Pieces the frame sources share: an fps meter, a drift-free pacer for free-run, the fan-out to
// free-run subscribers, and (live sources: ffmpeg, V4L2) the grabs waiting for the next frame.
import type { Clock, Timer } from '../clock.js';
import { msToNs } from '../clock.js';
import type { Frame } from '../part.js';
import type { FrameError } from './types.js';


/**
 * grab() on a live source waits for the next frame the device sends, bounded by the stall timeout;
 * a frame or a failure answers every grab waiting at that moment.
 */
interface Waiter {
  resolve: (f: Frame) => void;
  reject: (e: FrameError) => void;
  timer: Timer;
}

export class FrameWaiters {
  private readonly waiting = new Set<Waiter>();

  /** `timeout` makes the error a grab gets when no frame comes within `stallNs`. */
  constructor(
    private readonly clock: Clock,
    private readonly stallNs: bigint,
    private readonly timeout: () => FrameError,
  ) {}

  /** The next frame delivered, or the timeout's error after stallNs. */
  next(): Promise<Frame> {
    return new Promise<Frame>((resolve, reject) => {
      const w: Waiter = {
        resolve,
        reject,
        timer: this.clock.at(this.clock.nowNs() + this.stallNs, () => {
          this.waiting.delete(w);
          reject(this.timeout());
        }),
      };
      this.waiting.add(w);
    });
  }

  /** A frame arrived: every grab waiting gets it. */
  deliver(frame: Frame): void {
    for (const w of this.take()) w.resolve(frame);
  }

  /** The source failed or stopped: every grab waiting gets the error. */
  fail(err: FrameError): void {
    for (const w of this.take()) w.reject(err);
  }

  private take(): Waiter[] {
    const ws = [...this.waiting];
    this.waiting.clear();
    for (const w of ws) w.timer.cancel();
    return ws;
  }
}


/** Frames per second over the recent past, on the monotonic clock. */
export class FpsMeter {
  // A fixed ring (O(1) per frame even at thousands of fps); at high rates it spans less than the window.
  private readonly times = new BigInt64Array(1024);
  private head = 0; // next write
  private count = 0;
  constructor(
    private readonly clock: Clock,
    private readonly windowMs = 2000,
  ) {}
  tick(): void {
    this.times[this.head] = this.clock.nowNs();
    this.head = (this.head + 1) % this.times.length;
    if (this.count < this.times.length) this.count++;
  }
  fps(): number {
    const cutoff = this.clock.nowNs() - msToNs(this.windowMs);
    const size = this.times.length;
    const last = this.times[(this.head - 1 + size) % size]!;
    // Oldest sample still inside the window.
    let n = this.count;
    while (n > 0 && this.times[(this.head - n + size) % size]! < cutoff) n--;
    if (n < 2) return 0;
    const first = this.times[(this.head - n + size) % size]!;
    return last > first ? ((n - 1) * 1e9) / Number(last - first) : 0;
  }
  reset(): void {
    this.head = 0;
    this.count = 0;
  }
}

/**
 * Calls `tick` at a fixed rate on the clock. The schedule is absolute (no drift); when a tick
 * overruns (slow decode) the missed slots are skipped rather than fired in a burst, and an async
 * tick never overlaps the next one.
 */
export class Pacer {
  private timer: Timer | undefined;
  private nextNs = 0n;
  private running = false;
  private readonly periodNs: bigint;

  constructor(
    private readonly clock: Clock,
    fps: number,
    private readonly tick: () => void | Promise<void>,
  ) {
    this.periodNs = BigInt(Math.max(1, Math.round(1e9 / fps)));
  }
  get active(): boolean {
    return this.running;
  }
  start(): void {
    if (this.running) return;
    this.running = true;
    this.nextNs = this.clock.nowNs() + this.periodNs;
    this.arm();
  }
  stop(): void {
    this.running = false;
    this.timer?.cancel();
    this.timer = undefined;
  }
  private arm(): void {
    if (!this.running) return;
    this.timer = this.clock.at(this.nextNs, () => this.fire());
  }
  private fire(): void {
    this.timer = undefined;
    if (!this.running) return;
    let result: void | Promise<void>;
    try {
      result = this.tick();
    } catch {
      result = undefined; // a failing tick is the caller's to report; pacing goes on
    }
    // A synchronous tick re-arms at once (so a fake clock sees the next deadline in the same advance).
    if (result instanceof Promise) void result.catch(() => {}).then(() => this.schedule());
    else this.schedule();
  }
  private schedule(): void {
    if (!this.running) return;
    const now = this.clock.nowNs();
    this.nextNs += this.periodNs;
    if (this.nextNs <= now) this.nextNs = now + this.periodNs - ((now - this.nextNs) % this.periodNs);
    this.arm();
  }
}

/** Fan-out of frames and errors to free-run subscribers; one throwing subscriber can't starve the rest. */
export class Subscribers {
  private subs = new Set<{ cb: (f: Frame) => void; onError?: (e: FrameError) => void }>();
  constructor(private readonly onChange: (count: number) => void = () => {}) {}
  get size(): number {
    return this.subs.size;
  }
  add(cb: (f: Frame) => void, onError?: (e: FrameError) => void): () => void {
    const s = { cb, onError };
    this.subs.add(s);
    this.onChange(this.subs.size);
    return () => {
      if (this.subs.delete(s)) this.onChange(this.subs.size);
    };
  }
  frame(f: Frame): void {
    for (const s of [...this.subs]) {
      try {
        s.cb(f);
      } catch {
        // A subscriber's bug must not stop the camera.
      }
    }
  }
  error(e: FrameError): void {
    for (const s of [...this.subs]) {
      try {
        s.onError?.(e);
      } catch {
        // as above
      }
    }
  }
  clear(): void {
    this.subs.clear();
  }
}
