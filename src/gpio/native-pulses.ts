// Native divert pulses for the bindings that have no line of their own in the addon: the sysfs
// (onoff) binding, whose outputs the native pulse thread drives through the line's sysfs `value`
// file, and the simulator, whose outputs it drives through nothing (a line-less PulseTimer) and
// whose level follows the thread's edge reports. Either way the timing is the native thread's
// (timerfd at an absolute CLOCK_MONOTONIC deadline), the same engine as a character-device line.
// Without the addon, or with gpio.nativePulses 'off', the binding offers no PulseScheduling and
// the divert scheduler runs on JS timers.
import { constants as osConstants } from 'node:os';
import type { Clock } from '../clock.js';
import { msToNs, SystemClock } from '../clock.js';
import type { Logger } from '../log.js';
import type { NativeAddon, NativePulseStats, NativePulseTimer } from '../native/addon.js';
import { nativeStatus, tryLoadNative } from '../native/addon.js';
import type { PulseEdge, PulseScheduling } from './chardev.js';
import type { GpioOutput } from './types.js';
import { GpioError } from './types.js';

/** 'auto': the native pulse thread when the addon loads (and the clock is real); 'off': JS timers. */
export type NativePulsesMode = 'auto' | 'off';

export interface PulseEngineChoice {
  engine: 'native' | 'js';
  /** Why: for the log line that says which engine runs. */
  reason: string;
  addon?: NativeAddon;
}

/**
 * Which engine a sysfs or sim binding's outputs get their pulses from. `addon`: the addon to use
 * (tests), null for none, undefined to load it. `clock`: native pulses run on CLOCK_MONOTONIC, so
 * only the SystemClock allows them (a FakeClock's time is the test's, the thread's is not).
 */
export function choosePulseEngine(opts: { nativePulses?: NativePulsesMode; addon?: NativeAddon | null; clock?: Clock }): PulseEngineChoice {
  if (opts.nativePulses === 'off') return { engine: 'js', reason: "gpio.nativePulses is 'off'" };
  if (opts.clock && !(opts.clock instanceof SystemClock)) {
    return { engine: 'js', reason: 'the clock is not the system clock (a test clock): pulses follow it on JS timers' };
  }
  if (opts.addon === null) return { engine: 'js', reason: 'no native addon' };
  const addon = opts.addon ?? tryLoadNative();
  if (!addon) return { engine: 'js', reason: `native addon not loaded: ${nativeStatus().reason ?? 'unknown'}` };
  return { engine: 'native', reason: 'native pulse thread (timerfd at an absolute CLOCK_MONOTONIC deadline)', addon };
}

const errnoNames = new Map<number, string>(Object.entries(osConstants.errno).map(([name, n]) => [n, name]));

/** 28 -> 'ENOSPC (errno 28)'. */
export function errnoWords(errno: number): string {
  const name = errnoNames.get(errno);
  return name ? `${name} (errno ${errno})` : `errno ${errno}`;
}

/**
 * One output's pulse engine. `onLevel` is told of each level the thread drove (not of failed
 * writes), on the JS thread, with the thread's time: the simulator sets its pin from it.
 */
export class OutputPulser {
  private listener: ((ev: PulseEdge) => void) | undefined;
  private listening = false;
  private closed = false;

  constructor(
    readonly timer: NativePulseTimer,
    readonly what: string,
    private readonly log: Logger,
    private readonly onLevel?: (level: 0 | 1, atNs: bigint) => void,
  ) {}

  private listen(): void {
    if (this.listening) return;
    this.listening = true;
    this.timer.onPulseEdge((level, atNs, deadlineNs, errno) => {
      if (!errno) this.onLevel?.(level, atNs);
      const ev: PulseEdge = { level, atNs, deadlineNs };
      if (errno) ev.error = errnoWords(errno);
      try {
        this.listener?.(ev);
      } catch (err) {
        this.log.warn('gpio: pulse edge listener threw', { line: this.what, error: (err as Error).message });
      }
    });
  }

  schedule(atNs: bigint, widthMs: number): boolean {
    if (this.closed) throw new GpioError(`schedulePulse on ${this.what}: the line is closed`);
    if (typeof atNs !== 'bigint') throw new GpioError(`schedulePulse on ${this.what}: atNs must be a bigint (monotonic ns)`);
    if (!(typeof widthMs === 'number' && Number.isFinite(widthMs) && widthMs > 0)) {
      throw new GpioError(`schedulePulse on ${this.what}: widthMs must be a number > 0, got ${String(widthMs)}`);
    }
    this.listen();
    try {
      return this.timer.schedulePulse(atNs, msToNs(widthMs));
    } catch (err) {
      throw new GpioError(`schedulePulse on ${this.what}: ${(err as Error).message}`);
    }
  }

  cancel(): void {
    if (!this.closed) this.timer.cancelPulses();
  }

  onEdge(cb: (ev: PulseEdge) => void): void {
    if (this.closed) throw new GpioError(`onPulseEdge on ${this.what}: the line is closed`);
    this.listener = cb;
    this.listen();
  }

  stats(): NativePulseStats {
    return this.timer.pulseStats();
  }

  /** JS wrote the output itself. */
  noteLevel(level: 0 | 1): void {
    if (!this.closed) this.timer.noteLevel(level);
  }

  /**
   * Pending pulses dropped, the thread stopped, and a pulse holding the output on driven off (all
   * in the native close, in that order); true when it drove the output off.
   */
  close(): boolean {
    if (this.closed) return false;
    this.closed = true;
    return this.timer.close();
  }

  /** The level the engine last drove or was told of (also after close). */
  level(): 0 | 1 {
    return this.timer.pulseStats().level;
  }
}

/** The PulseScheduling methods of a binding whose outputs each may have an OutputPulser. */
export function pulseScheduling(find: (output: GpioOutput, op: string) => OutputPulser): PulseScheduling {
  return {
    schedulePulse: (output, atNs, widthMs) => find(output, 'schedulePulse').schedule(atNs, widthMs),
    cancelPulses: (output) => find(output, 'cancelPulses').cancel(),
    onPulseEdge: (output, cb) => find(output, 'onPulseEdge').onEdge(cb),
    pulseStats: (output) => find(output, 'pulseStats').stats(),
  };
}
