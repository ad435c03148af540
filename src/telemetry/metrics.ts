// Prometheus metrics (GET /metrics): one series for everything that can go wrong on the line.
// Counters follow the bus; gauges are read from the capabilities when scraped.
import client from 'prom-client';
import type { Bus } from '../bus.js';
import { nsToMs } from '../clock.js';
import type { Part } from '../part.js';

export interface GaugeSources {
  inFlight: () => number;
  inferenceQueue: () => number;
  outboxDepth: () => number | undefined;
  /** Results the outbox dropped (oldest first) to stay within its bounds, since start. */
  outboxDropped?: () => number | undefined;
  camera: () => { fps: number; frames: number; stalls: number; restarts: number; errors: number } | undefined;
  model: () => { name: string; version: string; sha256: string; provider: string } | undefined;
  mqttConnected: () => boolean | undefined;
}

const STAGE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5];

export class Metrics {
  readonly registry = new client.Registry();
  private unsub: (() => void)[] = [];
  private readonly parts = new client.Counter({ name: 'linesight_parts_total', help: 'Parts decided, by verdict and action', labelNames: ['verdict', 'action'], registers: [this.registry] });
  private readonly failSafes = new client.Counter({ name: 'linesight_failsafe_total', help: 'Parts diverted without a valid verdict, by reason', labelNames: ['reason'], registers: [this.registry] });
  private readonly alarms = new client.Counter({ name: 'linesight_alarms_total', help: 'Alarms raised, by kind', labelNames: ['kind'], registers: [this.registry] });
  private readonly lateVerdicts = new client.Counter({ name: 'linesight_late_verdicts_total', help: 'Verdicts that came after their part was decided', registers: [this.registry] });
  private readonly pulses = new client.Counter({ name: 'linesight_divert_pulses_total', help: 'Divert output activations', registers: [this.registry] });
  private readonly stage = new client.Histogram({ name: 'linesight_stage_seconds', help: 'Time spent per stage of a part', labelNames: ['stage'], buckets: STAGE_BUCKETS, registers: [this.registry] });

  constructor(src: GaugeSources) {
    const reg = [this.registry];
    new client.Gauge({ name: 'linesight_parts_in_flight', help: 'Parts between camera and gate', registers: reg, collect() { this.set(src.inFlight()); } });
    new client.Gauge({ name: 'linesight_inference_queue', help: 'Frames waiting for an inference worker', registers: reg, collect() { this.set(src.inferenceQueue()); } });
    new client.Gauge({ name: 'linesight_outbox_depth', help: 'Results persisted and not yet acknowledged by the broker', registers: reg, collect() { this.set(src.outboxDepth() ?? 0); } });
    // The outbox drops inside the publisher, off the bus: its own count, caught up at each scrape.
    let droppedSeen = 0;
    new client.Counter({
      name: 'linesight_outbox_dropped_total',
      help: 'Results dropped by the outbox (oldest first) to stay within mqtt.outbox bounds: each one lost to the central system',
      registers: reg,
      collect() {
        const n = src.outboxDropped?.() ?? 0;
        if (n > droppedSeen) this.inc(n - droppedSeen);
        droppedSeen = Math.max(droppedSeen, n);
      },
    });
    new client.Gauge({ name: 'linesight_mqtt_connected', help: '1 while connected to the broker', registers: reg, collect() { this.set(src.mqttConnected() ? 1 : 0); } });
    new client.Gauge({ name: 'linesight_camera_fps', help: 'Frames per second delivered by the camera', registers: reg, collect() { this.set(src.camera()?.fps ?? 0); } });
    new client.Gauge({ name: 'linesight_camera_stalls', help: 'Camera stalls since start', registers: reg, collect() { this.set(src.camera()?.stalls ?? 0); } });
    new client.Gauge({ name: 'linesight_camera_restarts', help: 'Camera restarts since start', registers: reg, collect() { this.set(src.camera()?.restarts ?? 0); } });
    new client.Gauge({ name: 'linesight_camera_errors', help: 'Bad frames since start', registers: reg, collect() { this.set(src.camera()?.errors ?? 0); } });
    new client.Gauge({
      name: 'linesight_model_info', help: 'The active model and execution provider', labelNames: ['name', 'version', 'sha256', 'provider'], registers: reg,
      collect() {
        this.reset();
        const m = src.model();
        if (m) this.set({ name: m.name, version: m.version, sha256: m.sha256, provider: m.provider }, 1);
      },
    });
    // Event-loop lag, memory, GC: the signals that GPIO timing is at risk.
    client.collectDefaultMetrics({ register: this.registry, prefix: 'linesight_', eventLoopMonitoringPrecision: 10 });
  }

  attach(bus: Bus): void {
    this.unsub.push(
      bus.on('decided', (p) => this.onDecided(p)),
      bus.on('alarm', (a) => this.alarms.inc({ kind: a.kind })),
      bus.on('lateVerdict', () => this.lateVerdicts.inc()),
      bus.on('divert', (on) => void (on && this.pulses.inc())),
    );
  }

  detach(): void {
    for (const u of this.unsub) u();
    this.unsub = [];
  }

  private onDecided(p: Part): void {
    this.parts.inc({ verdict: p.verdict?.verdict ?? 'none', action: p.action ?? 'none' });
    if (p.failSafe && p.reason) this.failSafes.inc({ reason: p.reason });
    const t = p.t;
    const s = (a?: bigint, b?: bigint): number | undefined => (a !== undefined && b !== undefined && b >= a ? nsToMs(b - a) / 1000 : undefined);
    const obs = (stage: string, v: number | undefined): void => void (v !== undefined && this.stage.observe({ stage }, v));
    obs('frame', s(t.triggerNs, t.frameNs));
    obs('inference', s(t.inferStartNs, t.inferEndNs));
    obs('total', s(t.triggerNs, t.decidedNs));
    if (p.timings) {
      obs('queue', p.timings.queueMs / 1000);
      obs('preprocess', p.timings.preprocessMs / 1000);
      obs('run', p.timings.inferMs / 1000);
      obs('postprocess', p.timings.postprocessMs / 1000);
    }
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
