// The inspection loop: the life of a Part from trigger to gate.
//
//   trigger ──► frame ──► inspect (worker) ──► decide ──► divert pulse at the gate time
//                  │             │                 ▲
//                  └── error ────┴── deadline ─────┘   (no valid verdict in time ⇒ divert)
//
// Every part is decided exactly once: by its verdict, or fail-safe (divert) when the frame is bad,
// the model fails, the queue is full, or the deadline comes first. A part is never passed
// without a verdict. Scheduling uses the monotonic clock only.
import type { Bus } from '../bus.js';
import type { Clock, Timer } from '../clock.js';
import { msToNs, nsToMs } from '../clock.js';
import type { Config } from '../config/schema.js';
import type { FrameSource } from '../camera/types.js';
import { FrameError } from '../camera/types.js';
import type { Inspector } from '../inference/types.js';
import { InferenceError } from '../inference/types.js';
import type { Logger } from '../log.js';
import type { Action, FailSafeReason, Frame, Part, TriggerKind } from '../part.js';
import type { DivertScheduler } from './divert.js';
import type { PartIds } from './part-id.js';

export interface TriggerInput {
  kind: TriggerKind;
  timeNs: bigint;
  frame?: Frame;
  frameError?: Error;
}

export interface LoopDeps {
  clock: Clock;
  log: Logger;
  bus: Bus;
  source: FrameSource;
  inspector: Inspector;
  divert: DivertScheduler;
  ids: PartIds;
  station: string;
  line: Config['line'];
  /**
   * Persists a part's trigger before its inspection starts, so a part in flight when the agent
   * dies is reported after the restart (fail-safe 'crash'). Resolves false when it could not.
   */
  journal?: { triggered(part: Part): Promise<boolean> };
  /** Per-part late/overload alarms: the first at once, then one summary per window (default 10 s). */
  alarmWindowMs?: number;
}

/**
 * One alarm kind that can fire for every part (late, overload): above capacity that would be hundreds
 * of alarms a second on MQTT and in the journal, exactly when the line is in trouble. The first goes
 * out at once; the rest of the window are counted and summed up in one alarm when it ends.
 */
class AlarmStorm {
  private timer: Timer | undefined;
  private suppressed = 0;
  private first = '';
  private last = '';
  private lastDetail = '';

  constructor(
    private readonly kind: 'late' | 'overload',
    private readonly clock: Clock,
    private readonly bus: Bus,
    private readonly windowMs: number,
  ) {}

  raise(partId: string, detail: string): void {
    if (!this.timer) {
      this.bus.emit('alarm', { kind: this.kind, severity: 'warning', message: detail, partId });
      this.timer = this.clock.at(this.clock.nowNs() + msToNs(this.windowMs), () => this.windowEnd());
      return;
    }
    if (this.suppressed++ === 0) this.first = partId;
    this.last = partId;
    this.lastDetail = detail;
  }

  /** Say what was held back (on stop too, so nothing counted goes unreported). */
  flush(): void {
    this.timer?.cancel();
    this.timer = undefined;
    if (this.suppressed === 0) return;
    const n = this.suppressed;
    this.suppressed = 0;
    this.bus.emit('alarm', {
      kind: this.kind,
      severity: 'warning',
      message: `${n} more part(s) diverted fail-safe (${this.kind}) within ${this.windowMs / 1000} s, ${this.first} … ${this.last}; the latest: ${this.lastDetail}`,
      partId: this.last,
    });
  }

  private windowEnd(): void {
    this.timer = undefined;
    const busy = this.suppressed > 0;
    this.flush();
    // Still storming: keep summing up; a quiet window lets the next one through at once.
    if (busy) this.timer = this.clock.at(this.clock.nowNs() + msToNs(this.windowMs), () => this.windowEnd());
  }
}

/** Time from trigger to the gate, from config. */
export function travelMs(line: Config['line']): number {
  return line.travelMs ?? (line.distanceMm / line.speedMmPerS) * 1000;
}

interface Tracked {
  part: Part;
  deadline?: Timer;
  decided: boolean;
}

export class InspectionLoop {
  private inFlight: Tracked[] = [];
  private paused = false;
  private stopped = true;
  private readonly travelNs: bigint;
  private readonly marginNs: bigint;
  private readonly maxInFlight: number;

  private readonly storms: Record<'late' | 'overload', AlarmStorm>;

  constructor(private readonly d: LoopDeps) {
    const windowMs = d.alarmWindowMs ?? 10_000;
    this.storms = {
      late: new AlarmStorm('late', d.clock, d.bus, windowMs),
      overload: new AlarmStorm('overload', d.clock, d.bus, windowMs),
    };
    this.travelNs = msToNs(travelMs(d.line));
    this.marginNs = msToNs(d.line.marginMs);
    // The agent fills in the default (workers + queueLimit); 32 only for a loop built by hand.
    this.maxInFlight = d.line.maxInFlight ?? 32;
  }

  start(): void {
    this.stopped = false;
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
  }

  isPaused(): boolean {
    return this.paused;
  }

  /** Parts between camera and gate (decided or not). */
  inFlightCount(): number {
    this.expire();
    return this.inFlight.length;
  }

  /** Parts still waiting for a decision. */
  undecidedCount(): number {
    return this.inFlight.filter((t) => !t.decided).length;
  }

  /** A trigger made a part: inspect it. Returns the part (its decision comes later). */
  onTrigger(ev: TriggerInput): Part {
    const { clock, ids, station } = this.d;
    const { id, seq } = ids.next();
    const gateNs = ev.timeNs + this.travelNs;
    const part: Part = {
      id,
      seq,
      station,
      trigger: ev.kind,
      triggeredAt: new Date(clock.wallMs() - nsToMs(clock.nowNs() - ev.timeNs)).toISOString(),
      t: { triggerNs: ev.timeNs, gateNs },
      failSafe: false,
    };
    const tracked: Tracked = { part, decided: false };
    this.expire();
    this.inFlight.push(tracked);
    this.d.bus.emit('triggered', part);
    // Every part, also those diverted on the spot: from here on a crash reports it.
    const journaled = this.d.journal?.triggered(part) ?? Promise.resolve(true);

    if (this.stopped) {
      this.decide(tracked, 'divert', 'stopping', 'the agent is stopping');
      return part;
    }
    if (this.paused) {
      this.decide(tracked, 'divert', 'paused', 'inspection is paused (cmd/resume to continue)');
      return part;
    }
    if (this.undecidedCount() > this.maxInFlight) {
      this.decide(tracked, 'divert', 'overload', `more than ${this.maxInFlight} parts waiting for a verdict (line.maxInFlight)`);
      return part;
    }
    const deadlineNs = gateNs - this.marginNs;
    tracked.deadline = clock.at(deadlineNs, () =>
      this.decide(tracked, 'divert', 'late', `no verdict ${nsToMs(deadlineNs - ev.timeNs).toFixed(0)} ms after the trigger (gate in ${this.d.line.marginMs} ms)`),
    );
    // Journal and camera in parallel; inference waits for both (the deadline still runs).
    void this.inspect(tracked, ev, journaled);
    return part;
  }

  private async inspect(tracked: Tracked, ev: TriggerInput, journaled: Promise<boolean>): Promise<void> {
    const { part } = tracked;
    const { clock, inspector } = this.d;
    let frame: Frame;
    try {
      if (ev.frameError) throw ev.frameError;
      frame = ev.frame ?? (await this.d.source.grab());
    } catch (err) {
      const reason: FailSafeReason = err instanceof FrameError && err.reason === 'camera' ? 'camera' : 'bad_frame';
      this.decide(tracked, 'divert', reason, (err as Error).message);
      return;
    }
    part.t.frameNs = frame.timeNs > part.t.triggerNs ? frame.timeNs : clock.nowNs();
    if (tracked.decided) return; // the deadline came first; the frame is not kept
    part.frame = frame;
    await journaled; // false = journal failing: reported by the journal, the line goes on
    if (tracked.decided) return; // the deadline came first; nothing more to do
    part.t.inferStartNs = clock.nowNs();
    try {
      const result = await inspector.inspect(frame, { priority: 'line' });
      part.t.inferEndNs = clock.nowNs();
      part.model = result.model;
      part.provider = result.provider;
      part.timings = result.timings;
      if (tracked.decided) {
        part.verdict = result.verdict;
        this.d.bus.emit('lateVerdict', part);
        this.d.bus.emit('alarm', {
          kind: 'late_verdict',
          severity: 'warning',
          message: `verdict for ${part.id} came ${nsToMs(part.t.inferEndNs - (part.t.decidedNs ?? part.t.inferEndNs)).toFixed(0)} ms after it was diverted fail-safe`,
          partId: part.id,
        });
        return;
      }
      part.verdict = result.verdict;
      this.decide(tracked, result.verdict.verdict === 'reject' ? 'divert' : 'pass');
    } catch (err) {
      part.t.inferEndNs = clock.nowNs();
      const reason: FailSafeReason = err instanceof InferenceError ? err.reason : 'model_error';
      this.decide(tracked, 'divert', reason, (err as Error).message);
      if (reason === 'model_error' || reason === 'worker_crash') {
        this.d.bus.emit('alarm', { kind: reason, severity: 'critical', message: (err as Error).message, partId: part.id });
      }
    }
  }

  /** The one place a part's action is set. Idempotent: the first decision wins. */
  private decide(tracked: Tracked, action: Action, reason?: FailSafeReason, detail?: string): void {
    if (tracked.decided) return;
    tracked.decided = true;
    tracked.deadline?.cancel();
    const { part } = tracked;
    const { clock } = this.d;
    part.action = action;
    part.t.decidedNs = clock.nowNs();
    if (reason) {
      part.failSafe = true;
      part.reason = reason;
      part.detail = detail;
      if (reason === 'late' || reason === 'overload') {
        // Can come for every part while the line runs above capacity: coalesced (each part is still
        // reported by its own inspection message, with its reason).
        this.d.log.debug('part diverted fail-safe', { partId: part.id, reason, detail });
        this.storms[reason].raise(part.id, detail ?? reason);
      } else {
        this.d.log.warn('part diverted fail-safe', { partId: part.id, reason, detail });
      }
    }
    if (action === 'divert') {
      const inTime = this.d.divert.schedule(part.t.gateNs!);
      if (!inTime) {
        this.d.bus.emit('alarm', {
          kind: 'missed',
          severity: 'critical',
          message: `part ${part.id} reached the gate ${nsToMs(clock.nowNs() - part.t.gateNs!).toFixed(0)} ms before its divert could be scheduled`,
          partId: part.id,
        });
      }
    }
    // Listeners (MQTT, archive, operator page) get the part with its frame and take what they keep
    // now; then the pixels are let go, so a part waiting for its gate does not hold megabytes of frame
    // (at 50 parts/s and 1 s of travel that was 50 frames, up to 185 MB, alive for nothing).
    this.d.bus.emit('decided', part);
    part.frame = undefined;
  }

  /** Drop parts that have passed the gate. */
  private expire(): void {
    const now = this.d.clock.nowNs();
    while (this.inFlight.length > 0 && this.inFlight[0]!.decided && this.inFlight[0]!.part.t.gateNs! <= now) {
      this.inFlight.shift();
    }
  }

  /** Stop making decisions from new triggers; parts in flight are diverted. */
  stop(): void {
    this.stopped = true;
    for (const t of this.inFlight) this.decide(t, 'divert', 'stopping', 'the agent stopped with the part in flight');
    this.inFlight = [];
    for (const s of Object.values(this.storms)) s.flush();
  }

  /** Wait (bounded) until every part in flight has a decision. */
  async drain(timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (this.undecidedCount() > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
  }
}
