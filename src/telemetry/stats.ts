// Line statistics kept in memory for the terminal, status and (later) the operator page:
// counters since start, latency percentiles over a sliding window, true accuracy when frames
// carry ground truth (the synthetic source does).
import type { Bus, Alarm } from '../bus.js';
import { nsToMs } from '../clock.js';
import type { FailSafeReason, Part } from '../part.js';

export interface LineSnapshot {
  parts: number;
  pass: number;
  reject: number;
  diverted: number;
  failSafe: number;
  failSafeByReason: Partial<Record<FailSafeReason, number>>;
  /** Parts with ground truth and a valid verdict, and how many of those were right. */
  truth: { judged: number; correct: number; accuracy: number | null; missedDefects: number; falseRejects: number };
  latencyMs: { p50: number | null; p99: number | null; max: number | null; window: number };
  partsPerS: number;
  lateVerdicts: number;
  alarms: number;
  lastAlarm?: Alarm & { time: string };
}

const WINDOW = 1000;

export function percentile(sorted: number[], q: number): number | null {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}

export class LineStats {
  private s: LineSnapshot = LineStats.empty();
  private latencies: number[] = [];
  private decidedAt: number[] = [];
  private unsub: (() => void)[] = [];

  static empty(): LineSnapshot {
    return {
      parts: 0, pass: 0, reject: 0, diverted: 0, failSafe: 0, failSafeByReason: {},
      truth: { judged: 0, correct: 0, accuracy: null, missedDefects: 0, falseRejects: 0 },
      latencyMs: { p50: null, p99: null, max: null, window: 0 }, partsPerS: 0, lateVerdicts: 0, alarms: 0,
    };
  }

  attach(bus: Bus): void {
    this.unsub.push(
      bus.on('decided', (p) => this.onDecided(p)),
      bus.on('lateVerdict', () => void this.s.lateVerdicts++),
      bus.on('alarm', (a) => {
        this.s.alarms++;
        this.s.lastAlarm = { ...a, time: new Date().toISOString() };
      }),
    );
  }

  detach(): void {
    for (const u of this.unsub) u();
    this.unsub = [];
  }

  private onDecided(p: Part): void {
    const s = this.s;
    s.parts++;
    if (p.action === 'divert') s.diverted++;
    if (p.failSafe) {
      s.failSafe++;
      if (p.reason) s.failSafeByReason[p.reason] = (s.failSafeByReason[p.reason] ?? 0) + 1;
    } else if (p.verdict?.verdict === 'reject') s.reject++;
    else s.pass++;
    const truth = p.frame?.truth;
    if (truth && p.verdict && !p.failSafe) {
      s.truth.judged++;
      if (truth.verdict === p.verdict.verdict) s.truth.correct++;
      else if (truth.verdict === 'reject') s.truth.missedDefects++;
      else s.truth.falseRejects++;
      s.truth.accuracy = s.truth.correct / s.truth.judged;
    }
    if (p.t.decidedNs !== undefined) {
      this.latencies.push(nsToMs(p.t.decidedNs - p.t.triggerNs));
      if (this.latencies.length > WINDOW) this.latencies.shift();
    }
    const now = Date.now();
    this.decidedAt.push(now);
    while (this.decidedAt.length > 0 && this.decidedAt[0]! < now - 10_000) this.decidedAt.shift();
  }

  snapshot(): LineSnapshot {
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const span = this.decidedAt.length > 1 ? (this.decidedAt.at(-1)! - this.decidedAt[0]!) / 1000 : 0;
    return {
      ...this.s,
      failSafeByReason: { ...this.s.failSafeByReason },
      truth: { ...this.s.truth },
      latencyMs: { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted.at(-1) ?? null, window: sorted.length },
      partsPerS: span > 0 ? (this.decidedAt.length - 1) / span : 0,
    };
  }
}
