// Interval: a part every intervalMs on the monotonic clock (parts at a fixed pitch on the belt).
import type { Clock, Timer } from '../clock.js';
import { msToNs } from '../clock.js';
import type { Logger } from '../log.js';
import { BaseTrigger } from './base.js';

/**
 * Drift-free: deadlines are start + k·interval (next = previous deadline + interval), so a late
 * timer never pushes the following parts later, and each event's time is its deadline, not when
 * the timer happened to run. The first part comes one interval after start(). If the process
 * stalls past several deadlines, each missed part is still emitted (with its own deadline, in
 * order): each one is a part on the belt and the loop diverts it as late.
 */
export class IntervalTrigger extends BaseTrigger {
  readonly kind = 'interval' as const;
  private readonly intervalNs: bigint;
  private next = 0n;
  private running = false;
  private timer: Timer | undefined;
  /** Identifies the live schedule; a timer from an older one (or a nested synchronous fire) is ignored. */
  private token: object | undefined;

  constructor(
    intervalMs: number,
    private readonly clock: Clock,
    opts: { log?: Logger } = {},
  ) {
    super(opts.log);
    if (typeof intervalMs !== 'number' || !Number.isFinite(intervalMs) || intervalMs <= 0) {
      throw new RangeError(`interval trigger: intervalMs must be a number > 0, got ${String(intervalMs)}`);
    }
    this.intervalNs = msToNs(intervalMs);
    if (this.intervalNs <= 0n) throw new RangeError(`interval trigger: intervalMs ${intervalMs} is below 1 ns`);
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.next = this.clock.nowNs() + this.intervalNs;
    this.schedule();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.token = undefined;
    this.timer?.cancel();
    this.timer = undefined;
  }

  private schedule(): void {
    const token = {};
    this.token = token;
    // Clock.at may run the callback at once (deadline already passed): the token check keeps a
    // nested schedule from being overwritten by this one's timer.
    const timer = this.clock.at(this.next, () => {
      if (this.token === token) this.tick();
    });
    if (this.token === token) this.timer = timer;
  }

  private tick(): void {
    this.timer = undefined;
    const now = this.clock.nowNs();
    // Emit every deadline that has passed before scheduling, so events stay in order even if a
    // subscriber stops the trigger or the clock fires the next timer synchronously.
    while (this.running && this.next <= now) {
      const timeNs = this.next;
      this.next += this.intervalNs;
      this.emit({ kind: 'interval', timeNs });
    }
    if (this.running && this.token !== undefined && this.timer === undefined) this.schedule();
  }
}
