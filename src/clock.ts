// All scheduling on the line uses the monotonic clock (ns, bigint) so wall-clock jumps (NTP, a
// mis-set RTC on a Pi without battery) never move a divert pulse. Wall time is only for reports.

export interface Clock {
  /** Monotonic time in nanoseconds. */
  nowNs(): bigint;
  /** Wall-clock time in ms since the epoch (for reports only). */
  wallMs(): number;
  /** Run `fn` when the monotonic clock reaches `atNs` (or at once if it has passed). */
  at(atNs: bigint, fn: () => void): Timer;
}

export interface Timer {
  cancel(): void;
}

export const NS_PER_MS = 1_000_000n;
export const msToNs = (ms: number): bigint => BigInt(Math.round(ms * 1e6));
export const nsToMs = (ns: bigint): number => Number(ns) / 1e6;

/** The real clock: process.hrtime + setTimeout, re-armed until the deadline is reached. */
export class SystemClock implements Clock {
  nowNs(): bigint {
    return process.hrtime.bigint();
  }
  wallMs(): number {
    return Date.now();
  }
  at(atNs: bigint, fn: () => void): Timer {
    let handle: NodeJS.Timeout | undefined;
    let cancelled = false;
    const arm = (): void => {
      if (cancelled) return;
      const leftMs = nsToMs(atNs - this.nowNs());
      // setTimeout may fire up to 1 ms early on some platforms: re-arm until the deadline is reached.
      if (leftMs <= 0) {
        fn();
        return;
      }
      handle = setTimeout(arm, Math.max(0, Math.floor(leftMs)));
    };
    arm();
    return {
      cancel: () => {
        cancelled = true;
        if (handle) clearTimeout(handle);
      },
    };
  }
}

/** A clock for unit tests: time moves only when the test calls advance(). */
export class FakeClock implements Clock {
  private now: bigint;
  private wall: number;
  private timers: { atNs: bigint; fn: () => void; id: number; cancelled: boolean }[] = [];
  private nextId = 0;

  constructor(startNs = 1_000_000_000n, wallMs = Date.UTC(2026, 0, 1)) {
    this.now = startNs;
    this.wall = wallMs;
  }
  nowNs(): bigint {
    return this.now;
  }
  wallMs(): number {
    return this.wall + nsToMs(this.now);
  }
  at(atNs: bigint, fn: () => void): Timer {
    const t = { atNs, fn, id: this.nextId++, cancelled: false };
    this.timers.push(t);
    return { cancel: () => void (t.cancelled = true) };
  }
  /** Move time forward, firing due timers in deadline order. */
  advance(ms: number): void {
    const target = this.now + msToNs(ms);
    for (;;) {
      const due = this.timers
        .filter((t) => !t.cancelled && t.atNs <= target)
        .sort((a, b) => (a.atNs === b.atNs ? a.id - b.id : a.atNs < b.atNs ? -1 : 1))[0];
      if (!due) break;
      due.cancelled = true;
      if (due.atNs > this.now) this.now = due.atNs;
      due.fn();
    }
    this.now = target;
    this.timers = this.timers.filter((t) => !t.cancelled);
  }
  pending(): number {
    return this.timers.filter((t) => !t.cancelled).length;
  }
}
