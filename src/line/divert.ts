// The diverter gate: a pulse on the divert output at the moment a part reaches the gate.
// Parts close together get overlapping pulses; they merge so the gate stays open for both
// instead of closing in the middle of the second part.
import type { Clock, Timer } from '../clock.js';
import { msToNs } from '../clock.js';
import type { GpioOutput } from '../gpio/types.js';
import type { Logger } from '../log.js';

interface Window {
  startNs: bigint;
  endNs: bigint;
  on?: Timer;
  off?: Timer;
  active: boolean;
}

export interface DivertOptions {
  clock: Clock;
  /** The diverter output; undefined = no actuator wired (pulses still tracked for reports). */
  output?: GpioOutput;
  pulseMs: number;
  log: Logger;
  /** Told when the output goes on/off (bus, stack light, metrics). */
  onEdge?: (on: boolean, timeNs: bigint) => void;
  /** Told when the output could not be driven. */
  onError?: (err: Error) => void;
  /**
   * A binding that drives pulses itself at an absolute monotonic deadline (the native
   * character-device binding's timer thread): used instead of JS timers when present, so a pulse
   * does not wait for the event loop or a GC pause.
   */
  native?: NativePulses;
}

export interface NativePulses {
  schedule(atNs: bigint, widthMs: number): boolean;
  cancel(): void;
  onEdge(cb: (on: boolean, timeNs: bigint, error?: string) => void): void;
}

export class DivertScheduler {
  private windows: Window[] = [];
  private level: 0 | 1 = 0;
  private pulses = 0;

  private nativeEndNs = 0n;

  constructor(private readonly opts: DivertOptions) {
    opts.native?.onEdge((on, t, error) => {
      if (error) {
        opts.log.error('divert output write failed (native pulse)', { error });
        opts.onError?.(new Error(`native pulse write failed: ${error}`));
      }
      this.level = on ? 1 : 0;
      opts.onEdge?.(on, t);
    });
  }

  /** Schedule a divert pulse starting at `atNs` (monotonic). Returns false if `atNs` already passed. */
  schedule(atNs: bigint): boolean {
    const { clock } = this.opts;
    if (this.opts.native) {
      const now = clock.nowNs();
      try {
        const ok = this.opts.native.schedule(atNs, this.opts.pulseMs);
        if (ok) this.pulses += 1;
        const end = atNs + msToNs(this.opts.pulseMs);
        if (end > this.nativeEndNs) this.nativeEndNs = end;
        return ok && atNs >= now;
      } catch (err) {
        this.opts.log.error('native divert pulse refused', { err: (err as Error).message });
        this.opts.onError?.(err as Error);
        return false;
      }
    }
    const width = msToNs(this.opts.pulseMs);
    const now = clock.nowNs();
    const startNs = atNs < now ? now : atNs;
    const endNs = atNs + width;
    if (endNs <= now) return false;
    this.pulses += 1;
    const overlap = this.windows.find((w) => startNs <= w.endNs && endNs >= w.startNs);
    if (overlap) {
      if (endNs > overlap.endNs) {
        overlap.endNs = endNs;
        overlap.off?.cancel();
        overlap.off = clock.at(endNs, () => this.close(overlap));
      }
      if (startNs < overlap.startNs && !overlap.active) {
        overlap.startNs = startNs;
        overlap.on?.cancel();
        overlap.on = clock.at(startNs, () => this.open(overlap));
      }
      return atNs >= now;
    }
    const w: Window = { startNs, endNs, active: false };
    w.on = clock.at(startNs, () => this.open(w));
    w.off = clock.at(endNs, () => this.close(w));
    this.windows.push(w);
    return atNs >= now;
  }

  private open(w: Window): void {
    w.active = true;
    this.drive(1);
  }

  private close(w: Window): void {
    w.active = false;
    this.windows = this.windows.filter((x) => x !== w);
    // Another window may still hold the gate open.
    if (!this.windows.some((x) => x.active)) this.drive(0);
  }

  private drive(value: 0 | 1): void {
    if (this.level === value) return;
    this.level = value;
    const t = this.opts.clock.nowNs();
    try {
      this.opts.output?.writeSync(value);
    } catch (err) {
      this.opts.log.error('divert output write failed', { err: (err as Error).message, value });
      this.opts.onError?.(err as Error);
    }
    this.opts.onEdge?.(value === 1, t);
  }

  /** Pulses scheduled and not yet finished. */
  pending(): number {
    if (this.opts.native) return this.nativeEndNs > this.opts.clock.nowNs() ? 1 : 0;
    return this.windows.length;
  }

  stats(): { pulses: number; level: 0 | 1; pending: number } {
    return { pulses: this.pulses, level: this.level, pending: this.pending() };
  }

  /** Cancel everything and put the output in its safe state (gate closed = output low). */
  safeState(): void {
    for (const w of this.windows) {
      w.on?.cancel();
      w.off?.cancel();
    }
    this.windows = [];
    try {
      this.opts.native?.cancel();
    } catch {
      /* the write below still takes the output low */
    }
    this.nativeEndNs = 0n;
    this.drive(0);
  }
}
