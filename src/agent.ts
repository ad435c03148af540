// The one wiring module (the zigbee2mqtt controller pattern): builds every capability from the
// config, connects them through the bus, and owns start/stop order. Nothing else in src/ knows
// which concrete camera, GPIO binding, model runtime or broker is in use.
import { Bus, type AgentState } from './bus.js';
import { SystemClock, type Clock } from './clock.js';
import type { Config } from './config/schema.js';
import { createFrameSource } from './camera/index.js';
import { FrameError, type FrameSource } from './camera/types.js';
import { createGpioBinding, canSchedulePulses } from './gpio/index.js';
import type { GpioBinding, GpioOutput, LineSpec } from './gpio/types.js';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { InferencePool } from './inference/index.js';
import { ModelCache } from './models/cache.js';
import { ModelManager, type ShadowVerdict } from './models/manager.js';
import { ModelStore } from './models/registry.js';
import { readPublicKey } from './models/sign.js';
import type { Inspector } from './inference/types.js';
import { DivertScheduler, type NativePulses } from './line/divert.js';
import { InspectionLoop, travelMs, type TriggerInput } from './line/loop.js';
import { PartIds, nextBootId } from './line/part-id.js';
import { TriggerJournal } from './line/journal.js';
import { RejectArchive } from './archive/archive.js';
import { DiskGuard } from './telemetry/disk.js';
import type { Logger } from './log.js';
import type { Part } from './part.js';
import { MqttPublisher } from './publish/mqtt.js';
import { LineStats } from './telemetry/stats.js';
import { Metrics } from './telemetry/metrics.js';
import { StackLight, type StackLightOutputs } from './line/stacklight.js';
import { HttpServer } from './http/server.js';
import { notify, startWatchdog } from './native/notify.js';
import type { Frame } from './part.js';
import type { InferenceResult } from './inference/types.js';
import { createTrigger } from './trigger/index.js';
import type { Trigger } from './trigger/types.js';
import { CommandTrigger } from './trigger/command.js';

import { AGENT_VERSION } from './version.js';

export { AGENT_VERSION };

/** Lines used by the sim binding when the config names none (demo and tests). */
const SIM_DEFAULTS = {
  photoEye: { chip: 'sim0', line: 0 },
  divert: { chip: 'sim0', line: 1 },
  ready: { chip: 'sim0', line: 2 },
} satisfies Record<string, LineSpec>;

export interface AgentOptions {
  log: Logger;
  clock?: Clock;
  /** A GPIO binding to use instead of the configured one (tests pass a shared SimGpio). */
  gpio?: GpioBinding;
  /** Demo: move to the next port when the HTTP port is taken. */
  httpTryNextPorts?: boolean;
}

export interface AgentStatus {
  state: AgentState;
  station: string;
  line: string;
  bootId: string;
  agentVersion: string;
  uptimeS: number;
  model?: { name: string; version: string; sha256: string };
  models?: ReturnType<ModelManager['versions']>;
  provider?: string;
  camera: string;
  trigger: string;
  gpio: string;
  mqtt?: ReturnType<MqttPublisher['stats']>;
  inFlight: number;
  travelMs: number;
}

export class Agent {
  readonly bus = new Bus();
  readonly stats = new LineStats();
  readonly clock: Clock;
  private readonly log: Logger;
  private state: AgentState = 'stopped';
  private startedAt = 0;
  private bootId = '';
  private gpio?: GpioBinding;
  private source?: FrameSource;
  private inspector?: Inspector;
  /** The same object as inspector: swaps, shadow, rollback, versions. */
  models?: ModelManager;
  private divert?: DivertScheduler;
  private divertOut?: GpioOutput;
  private readyOut?: GpioOutput;
  private heartbeat?: NodeJS.Timeout;
  private journal?: TriggerJournal;
  private archive?: RejectArchive;
  private lastProgress = 0;
  private stopWatchdog?: () => void;
  private loop?: InspectionLoop;
  private trigger?: Trigger;
  private command?: CommandTrigger;
  private publisher?: MqttPublisher;
  private http?: HttpServer;
  private stackLight?: StackLight;
  private stackOutputs: StackLightOutputs = {};
  readonly metrics: Metrics;
  private unsub: (() => void)[] = [];
  /** The operator page's address once HTTP is listening. */
  httpUrl?: string;

  constructor(
    readonly cfg: Config,
    private readonly opts: AgentOptions,
  ) {
    this.clock = opts.clock ?? new SystemClock();
    this.log = opts.log;
    this.metrics = new Metrics({
      inFlight: () => this.loop?.inFlightCount() ?? 0,
      inferenceQueue: () => safe(() => this.inspector!.info().queued) ?? 0,
      outboxDepth: () => this.publisher?.stats().outbox?.pending,
      outboxDropped: () => this.publisher?.stats().outbox?.dropped,
      camera: () => this.source?.stats(),
      model: () => safe(() => {
        const i = this.inspector!.info();
        return { ...i.model, provider: i.provider };
      }),
      mqttConnected: () => this.publisher?.stats().connected,
    });
  }

  private setState(s: AgentState): void {
    this.state = s;
    this.bus.emit('state', s);
  }

  /** Start everything; on failure, what was started is stopped again and the error rethrown. */
  async start(): Promise<void> {
    const { cfg, clock, log } = this;
    this.setState('starting');
    this.startedAt = Date.now();
    this.bootId = nextBootId(cfg.station.stateDir);
    this.stats.attach(this.bus);
    this.metrics.attach(this.bus);
    try {
      // Outputs first, in their safe state, so nothing moves while the rest starts.
      const gpio = (this.gpio = this.opts.gpio ?? createGpioBinding(cfg.gpio, { clock, log: log.child({ mod: 'gpio' }) }));
      const sim = cfg.gpio.backend === 'sim';
      const divertSpec = cfg.gpio.divert ?? (sim ? SIM_DEFAULTS.divert : undefined);
      const readySpec = cfg.gpio.ready ?? (sim ? SIM_DEFAULTS.ready : undefined);
      if (divertSpec) this.divertOut = await gpio.openOutput(divertSpec, { initial: 0 });
      else log.warn('no divert output configured (gpio.divert): rejects are reported but nothing is diverted');
      if (readySpec) this.readyOut = await gpio.openOutput(readySpec, { initial: 0 });
      const sl = cfg.gpio.stackLight;
      for (const c of ['green', 'amber', 'red', 'buzzer'] as const) {
        const spec = sl[c];
        if (spec) this.stackOutputs[c] = await gpio.openOutput(spec, { initial: 0 });
      }
      this.stackLight = new StackLight(this.stackOutputs, { buzzerAfterRejects: sl.buzzerAfterRejects, degraded: () => this.degraded() });
      this.stackLight.start(this.bus);

      const m = cfg.model;
      const modelLog = log.child({ mod: 'models' });
      const store = new ModelStore({
        registry: m.registry || undefined,
        bundledDir: m.bundledDir,
        cache: new ModelCache({ dir: m.cacheDir || join(cfg.station.stateDir, 'models'), maxBytes: m.cacheMaxBytes, log: modelLog }),
        publicKey: m.publicKey ? await readPublicKey(m.publicKey) : undefined,
        timeoutMs: m.pullTimeoutMs,
        registryHeaders: m.registryToken ? { authorization: `Bearer ${m.registryToken}` } : undefined,
        log: modelLog,
      });
      const models = (this.models = new ModelManager({
        createPool: (modelDir) =>
          new InferencePool({ modelDir, providers: m.providers, workers: m.workers, intraOpThreads: m.intraOpThreads, queueLimit: m.queueLimit, workerNice: m.workerNice, log: log.child({ mod: 'inference' }) }),
        log: modelLog,
        bus: this.bus,
        store,
        initial: m.ref ?? m.path,
        rollback: m.rollback.window > 0 ? m.rollback : undefined,
        onShadow: (r) => this.onShadow(r),
        onChange: () => {
          this.fitSource();
          void this.publishStatus();
        },
      }));
      const inspector = (this.inspector = models);
      await inspector.start();
      // Every decided part feeds the automatic rollback and names shadow verdicts.
      this.unsub.push(this.bus.on('decided', (p) => models.record(p)));
      if (m.shadow) await models.setShadow(m.shadow.ref, { everyN: m.shadow.everyN });
      const info = inspector.info();
      log.info('model loaded', { model: info.model, provider: info.provider, workers: info.workers });

      const source = (this.source = createFrameSource(cfg.camera, {
        clock,
        log: log.child({ mod: 'camera' }),
        onAlarm: (kind: string, message: string) => this.bus.emit('alarm', { kind: 'camera', severity: 'warning', message: `${kind}: ${message}` }),
      }));
      this.fitSource();
      await source.start();
      if (source.live) await this.firstFrame(source, cfg.camera.firstFrameTimeoutMs);

      this.divert = new DivertScheduler({
        clock,
        output: this.divertOut,
        pulseMs: cfg.line.pulseMs,
        log: log.child({ mod: 'divert' }),
        onEdge: (on, t) => this.bus.emit('divert', on, t),
        onError: (err) => this.bus.emit('alarm', { kind: 'gpio', severity: 'critical', message: `divert output: ${err.message}` }),
        native: this.nativePulses(gpio, this.divertOut),
      });
      if (cfg.archive.enabled) await this.startArchive();

      // The trigger journal: parts in flight when a previous run died are reported as 'crash'.
      const journal = (this.journal = new TriggerJournal(join(cfg.station.stateDir, 'journal'), {
        bootId: this.bootId,
        log: log.child({ mod: 'journal' }),
        onError: (message) => this.bus.emit('alarm', { kind: 'journal', severity: 'critical', message: `trigger journal: ${message}` }),
      }));
      await journal.open();
      this.loop = new InspectionLoop({
        journal,
        clock, log: log.child({ mod: 'line' }), bus: this.bus, source, inspector,
        divert: this.divert, ids: new PartIds(cfg.station.id, this.bootId), station: cfg.station.id,
        // More parts waiting than the pool can hold would be refused by it anyway, after their frame
        // was grabbed and decoded: refuse them first (bench: ResNet-18 30 → 42 verdicts/s at 1.2× load).
        line: { ...cfg.line, maxInFlight: cfg.line.maxInFlight ?? m.workers + m.queueLimit },
      });
      this.loop.start();

      if (!cfg.mqtt.url) {
        // No broker: nothing downstream to recover to; a part is done once decided.
        journal.recover();
        this.unsub.push(this.bus.on('decided', (p) => journal.decided(p.id)));
      }
      if (cfg.mqtt.url) {
        this.publisher = new MqttPublisher({
          cfg: cfg.mqtt,
          station: { line: cfg.station.line, id: cfg.station.id },
          stateDir: cfg.station.stateDir,
          clock,
          log: log.child({ mod: 'mqtt' }),
          onCommand: (name: string, payload: unknown) => this.runCommand(name, payload),
        });
        // Identity first, so the Last Will of the first connection names the model and boot.
        await this.publishStatus();
        await this.publisher.start();
        // Parts that were in flight when the previous run died: diverted fail-safe 'crash' (the
        // PLC's ready line was down, so the line diverted them), reported once through the outbox.
        const delivered = this.publisher.pendingIds();
        const crashed = journal.recover((id) => delivered.has(id));
        for (const p of crashed) void this.publish(p);
        if (crashed.length > 0) {
          this.bus.emit('alarm', {
            kind: 'crash',
            severity: 'critical',
            message: `${crashed.length} part(s) were in flight when the previous run died; reported as fail-safe 'crash' (${crashed.map((p) => p.id).slice(0, 5).join(', ')}${crashed.length > 5 ? ', …' : ''})`,
          });
        }
        this.unsub.push(
          this.bus.on('decided', (p) => void this.publish(p)),
          this.bus.on('alarm', (a) => void this.publisher?.publishAlarm(a).catch((err: Error) => log.error('alarm publish failed', { err: err.message }))),
          this.bus.on('state', () => void this.publishStatus()),
        );
      }
      this.unsub.push(this.bus.on('alarm', (a) => log.warn('alarm', { ...a })));

      if (cfg.http.enabled) {
        this.http = new HttpServer({
          cfg: cfg.http,
          log: log.child({ mod: 'http' }),
          bus: this.bus,
          metrics: this.metrics,
          status: () => this.status() as unknown as Record<string, unknown>,
          model: () => safe(() => this.inspector!.info().manifest) as unknown as Record<string, unknown> | undefined,
          ready: () => this.readiness(),
          predict: (frame) => this.predict(frame),
          command: (name, payload) => this.runCommand(name, payload),
          stats: () => this.stats.snapshot(),
          stackLight: () => this.stackLight?.snapshot(),
          colour: () => (safe(() => this.inspector!.info().manifest.input.colour) === 'gray' ? 'gray' : 'rgb'),
        });
        this.httpUrl = await this.http.start({ tryNextPorts: this.opts.httpTryNextPorts });
        log.info('http listening', { url: this.httpUrl });
      }

      const t = createTrigger(cfg.trigger, {
        clock, gpio, source, log: log.child({ mod: 'trigger' }),
        photoEye: cfg.trigger.gpio.input ?? (sim ? SIM_DEFAULTS.photoEye : undefined),
      });
      this.trigger = t.trigger;
      this.command = t.command;
      // Command parts are handed to the loop by runCommand (it replies with the part id).
      t.trigger.onTrigger((ev: TriggerInput) => this.loop?.onTrigger(ev));
      await this.trigger.start();
      await this.command.start();

      this.setState('running');
      await this.setReady();
      await this.publishStatus();
      // systemd (Type=notify): ready once the model is loaded and the camera started; the
      // watchdog is fed only while the loop makes progress.
      this.unsub.push(this.bus.on('decided', () => void (this.lastProgress = Date.now())));
      this.lastProgress = Date.now();
      await notify({ READY: '1', STATUS: `inspecting with ${info.model.name}@${info.model.version} on ${info.provider}` }, { log }).catch((err: Error) =>
        log.warn('sd_notify READY failed', { err: err.message }),
      );
      this.stopWatchdog = startWatchdog(() => this.makingProgress(), { log });
      log.info('line running', {
        station: cfg.station.id, trigger: cfg.trigger.mode, camera: cfg.camera.source, gpio: this.gpio.name,
        travelMs: travelMs(cfg.line), mqtt: cfg.mqtt.url || null,
      });
    } catch (err) {
      log.error('start failed', { err: (err as Error).message });
      await this.stop().catch(() => {});
      throw err;
    }
  }

  /** The reject archive: frames of diverted parts, in the layout the training pipeline reads. */
  private async startArchive(): Promise<void> {
    const { cfg, log } = this;
    const a = cfg.archive;
    const root = a.dir || join(cfg.station.stateDir, 'archive');
    const archive = new RejectArchive({
      root, passEvery: a.passEvery, failSafe: a.failSafe, maxFiles: a.maxFiles,
      maxBytes: a.maxMb * 1024 * 1024, maxAgeMs: a.maxAgeDays * 24 * 3600 * 1000, queueLimit: a.queueLimit, compressionLevel: a.pngLevel,
      guard: new DiskGuard({
        path: root, floorBytes: a.minFreeMb * 1024 * 1024, log: log.child({ mod: 'disk' }),
        onAlarm: (low) => this.bus.emit('alarm', { kind: 'disk', severity: 'warning', message: low.message }),
      }),
      log: log.child({ mod: 'archive' }),
      onError: (message) => this.bus.emit('alarm', { kind: 'archive', severity: 'warning', message }),
    });
    try {
      await archive.open();
      this.archive = archive;
      this.unsub.push(this.bus.on('decided', (p) => void archive.offer(p)));
    } catch (err) {
      // The archive serves training later; the line must not stop for it.
      log.error('reject archive unavailable', { root, err: (err as Error).message });
      this.bus.emit('alarm', { kind: 'archive', severity: 'warning', message: `reject archive unavailable at ${root}: ${(err as Error).message}` });
    }
  }

  /**
   * Progress for the systemd watchdog: in free-run and interval modes parts must keep being
   * decided; with a photo-eye or commands, a quiet line is normal, so an answering loop is enough.
   */
  private makingProgress(): boolean {
    if (this.state !== 'running' && this.state !== 'paused') return false;
    if (this.state === 'paused' || this.cfg.trigger.mode === 'gpio' || this.cfg.trigger.mode === 'command') return true;
    const period = this.cfg.trigger.mode === 'interval' ? this.cfg.trigger.intervalMs : 1000 / this.cfg.camera.synthetic.fps;
    return Date.now() - this.lastProgress < Math.max(5000, 5 * period);
  }

  /** Tell a decoding source (replay) the smallest frame the active model needs; no crop = frame coordinates are free. */
  private fitSource(): void {
    const input = safe(() => this.inspector!.info().manifest.input);
    if (!this.source?.fitFor || !input) return;
    this.source.fitFor(input.crop ? undefined : { width: input.width, height: input.height, resize: input.resize ?? 'stretch' });
  }

  /**
   * A live camera's start() returns once the device or process is open, before the first frame: a
   * ready line then would time its first part late (seen in the HIL suite). Wait for frames to flow;
   * none in time fails the start (systemd's Restart= tries again) rather than report ready blind.
   */
  private async firstFrame(source: FrameSource, timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    let last: Error | undefined;
    while (Date.now() < until) {
      try {
        await source.grab();
        return;
      } catch (err) {
        last = err as Error;
        if (last instanceof FrameError && last.reason === 'bad_frame') return; // frames flow; a bad one is a part's problem
        await sleep(Math.min(200, Math.max(0, until - Date.now())));
      }
    }
    throw new Error(
      `camera ${source.name}: no frame within ${timeoutMs} ms of starting${last ? ` (${last.message})` : ''}; check the camera's cable, input and format (camera.${source.name}.*), or raise camera.firstFrameTimeoutMs`,
    );
  }

  /** The native binding's pulse thread for the divert output, when the binding has one. */
  private nativePulses(gpio: GpioBinding, out: GpioOutput | undefined): NativePulses | undefined {
    if (!out) return undefined;
    // The thread runs on CLOCK_MONOTONIC: only with the SystemClock (never a test's FakeClock), and
    // only for an output the binding really drives natively (an onoff line whose value file could
    // not be opened has none).
    const why = !canSchedulePulses(gpio)
      ? (gpio.pulseEngine?.reason ?? `the ${gpio.name} binding has no native pulse engine`)
      : !(this.clock instanceof SystemClock)
        ? 'the clock is not the system clock'
        : gpio.hasNativePulses && !gpio.hasNativePulses(out)
          ? 'this output has no native pulse engine'
          : undefined;
    if (why !== undefined || !canSchedulePulses(gpio)) {
      this.log.info('divert pulses: JS timers', { gpio: gpio.name, reason: why });
      return undefined;
    }
    this.log.info('divert pulses: native pulse thread', { gpio: gpio.name });
    return {
      schedule: (atNs, widthMs) => gpio.schedulePulse(out, atNs, widthMs),
      cancel: () => gpio.cancelPulses(out),
      onEdge: (cb) => gpio.onPulseEdge(out, (ev) => cb(ev.level === 1, ev.atNs, ev.error)),
    };
  }

  private async publish(p: Part): Promise<void> {
    try {
      const r = await this.publisher?.publishInspection(p, { line: this.cfg.station.line });
      // Crossed off the journal once the result is durable in the outbox.
      if (r?.durable) this.journal?.decided(p.id);
    } catch (err) {
      this.log.error('inspection publish failed', { partId: p.id, err: (err as Error).message });
    }
  }

  /** A shadow verdict: published for comparison, never acted on. */
  private onShadow(r: ShadowVerdict): void {
    this.log.debug('shadow verdict', { partId: r.partId, active: r.active.verdict, shadow: r.shadow.verdict, agree: r.agree });
    this.publisher?.publishShadow({
      partId: r.partId ?? null,
      agree: r.agree,
      active: { verdict: r.active.verdict, score: r.active.score, threshold: r.active.threshold },
      shadow: { verdict: r.shadow.verdict, score: r.shadow.score, threshold: r.shadow.threshold },
      activeModel: r.activeModel ?? null,
      shadowModel: r.shadowModel ?? null,
    });
  }

  /** cmd/model (MQTT) and POST /v1/commands/model: the model lifecycle. */
  private async modelCommand(p: { action?: string; ref?: string; everyN?: number }): Promise<unknown> {
    const models = this.models;
    if (!models) throw new Error('no model manager: the agent is not running');
    switch (p.action) {
      case 'swap':
        if (!p.ref) throw new Error("model swap needs 'ref' (name@version, name@latest or a bundle folder)");
        return models.swap(p.ref);
      case 'shadow':
        return p.ref ? models.setShadow(p.ref, { everyN: p.everyN ?? 1 }) : models.clearShadow();
      case 'promote':
        return models.promote();
      case 'rollback':
        return models.rollback();
      case 'versions':
        return models.versions();
      default:
        throw new Error(`unknown model action '${String(p.action)}': use swap, shadow, promote, rollback or versions`);
    }
  }

  private async publishStatus(): Promise<void> {
    if (!this.publisher) return;
    const s = this.status();
    await this.publisher
      .publishStatus({
        state: s.state === 'running' ? 'online' : s.state === 'paused' ? 'paused' : 'offline',
        station: s.station, line: s.line, model: s.model, provider: s.provider,
        agentVersion: s.agentVersion, bootId: s.bootId, uptimeS: s.uptimeS, time: new Date().toISOString(),
      })
      .catch((err: Error) => this.log.error('status publish failed', { err: err.message }));
  }

  /**
   * The ready output tells the PLC the agent can inspect. Steady high while running; with
   * gpio.readyHeartbeatMs it toggles instead, because a sysfs output keeps its last level when
   * the process dies: a PLC that watches for the toggle sees a dead agent.
   */
  private async setReady(): Promise<void> {
    const running = this.state === 'running';
    const period = this.cfg.gpio.readyHeartbeatMs;
    if (this.heartbeat && !running) {
      clearInterval(this.heartbeat);
      this.heartbeat = undefined;
    }
    if (running && period > 0 && !this.heartbeat && this.readyOut) {
      let level: 0 | 1 = 1;
      this.heartbeat = setInterval(() => {
        level = level === 1 ? 0 : 1;
        this.writeReady(level);
      }, period);
    }
    this.writeReady(running ? 1 : 0);
  }

  private writeReady(level: 0 | 1): void {
    try {
      this.readyOut?.writeSync(level);
    } catch (err) {
      this.bus.emit('alarm', { kind: 'gpio', severity: 'critical', message: `ready output: ${(err as Error).message}` });
    }
  }

  /** Commands from MQTT (cmd/<name>) and HTTP. Throws with a clear message on bad input. */
  async runCommand(name: string, payload: unknown): Promise<unknown> {
    switch (name) {
      case 'trigger': {
        if (this.state !== 'running' && this.state !== 'paused') throw new Error(`cannot trigger: the agent is ${this.state}`);
        const ev = this.command!.fire();
        const part = this.loop!.onTrigger(ev);
        return { partId: part.id };
      }
      case 'pause':
        this.loop?.pause();
        this.setState('paused');
        await this.setReady();
        return { state: this.state };
      case 'resume':
        this.loop?.resume();
        this.setState('running');
        await this.setReady();
        return { state: this.state };
      case 'status':
        return this.status();
      case 'model':
        return this.modelCommand(payload as { action?: string; ref?: string; everyN?: number });
      default:
        throw new Error(`unknown command '${name}': use trigger, pause, resume, status or model`);
    }
    void payload;
  }

  /** Synchronous inference for the HTTP API: the same pool as the line, behind the line's parts. */
  predict(frame: Frame): Promise<InferenceResult> {
    if (!this.inspector) return Promise.reject(new Error('no model loaded yet'));
    return this.inspector.inspect(frame, { priority: 'api' });
  }

  /** Why the line is degraded (amber), empty when all is well. */
  private degraded(): string[] {
    const r: string[] = [];
    const m = this.publisher?.stats();
    if (m && !m.connected) r.push('MQTT broker not connected (results kept in the outbox)');
    if (m?.outbox && m.outbox.pending > 100) r.push(`outbox backing up: ${m.outbox.pending} results waiting`);
    const cam = this.source?.stats();
    if (cam && cam.stalls > 0 && cam.fps === 0 && this.cfg.trigger.mode === 'freerun') r.push('camera delivers no frames');
    return r;
  }

  /** /readyz: model loaded, camera delivering, broker connected or outbox healthy. */
  readiness(): { ready: boolean; checks: Record<string, { ok: boolean; detail?: string }> } {
    const info = safe(() => this.inspector!.info());
    const cam = this.source?.stats();
    const m = this.publisher?.stats();
    const checks: Record<string, { ok: boolean; detail?: string }> = {
      state: { ok: this.state === 'running', detail: this.state },
      model: { ok: info !== undefined, detail: info ? `${info.model.name}@${info.model.version} on ${info.provider}` : 'not loaded' },
      camera: { ok: cam !== undefined && (cam.frames > 0 || this.cfg.trigger.mode !== 'freerun'), detail: cam ? `${cam.frames} frames, ${cam.fps.toFixed(1)} fps, ${cam.stalls} stalls` : 'not started' },
      mqtt: m ? { ok: m.connected || (m.outbox?.healthy ?? true), detail: m.connected ? 'connected' : 'disconnected, results kept in the outbox' } : { ok: true, detail: 'no broker configured' },
    };
    return { ready: Object.values(checks).every((c) => c.ok), checks };
  }

  status(): AgentStatus {
    const info = this.inspector && this.state !== 'stopped' ? safe(() => this.inspector!.info()) : undefined;
    return {
      state: this.state,
      station: this.cfg.station.id,
      line: this.cfg.station.line,
      bootId: this.bootId,
      agentVersion: AGENT_VERSION,
      uptimeS: this.startedAt ? Math.round((Date.now() - this.startedAt) / 1000) : 0,
      model: info?.model,
      models: this.models?.versions(),
      provider: info?.provider,
      camera: this.cfg.camera.source,
      trigger: this.cfg.trigger.mode,
      gpio: this.gpio?.name ?? this.cfg.gpio.backend,
      mqtt: this.publisher?.stats(),
      inFlight: this.loop?.inFlightCount() ?? 0,
      travelMs: travelMs(this.cfg.line),
    };
  }

  /** The safe state, synchronously: for exit and crash paths where nothing can be awaited. */
  safeStateSync(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    try {
      this.divert?.safeState();
    } catch {
      /* best effort */
    }
    for (const o of [this.readyOut, ...Object.values(this.stackOutputs)]) {
      try {
        o?.writeSync(0);
      } catch {
        /* best effort */
      }
    }
  }

  /**
   * Graceful stop: stop triggers, let parts in flight get their verdict (bounded), divert the
   * rest, put outputs in their safe state, publish offline, flush the outbox.
   */
  async stop(timeoutMs = 5000): Promise<void> {
    if (this.state === 'stopped' || this.state === 'stopping') return;
    this.setState('stopping');
    this.stopWatchdog?.();
    void notify({ STOPPING: '1', STATUS: 'stopping: finishing parts in flight' }).catch(() => {});
    await this.setReady();
    await this.trigger?.stop().catch(() => {});
    await this.command?.stop().catch(() => {});
    await this.loop?.drain(Math.min(timeoutMs, 2000));
    this.loop?.stop();
    // Let pulses already scheduled for decided parts finish before the gate closes for good.
    const until = Date.now() + Math.min(timeoutMs, 3000);
    while ((this.divert?.pending() ?? 0) > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    this.safeStateSync();
    await this.source?.stop().catch(() => {});
    await this.inspector?.stop().catch(() => {});
    for (const u of this.unsub) u();
    this.unsub = [];
    await this.publisher?.stop().catch((err: Error) => this.log.error('mqtt stop failed', { err: err.message }));
    await this.http?.stop().catch(() => {});
    this.stackLight?.stop();
    for (const o of Object.values(this.stackOutputs)) await o.close().catch(() => {});
    this.metrics.detach();
    await this.journal?.close().catch(() => {});
    await this.archive?.close().catch(() => {});
    await this.divertOut?.close().catch(() => {});
    await this.readyOut?.close().catch(() => {});
    if (!this.opts.gpio) await this.gpio?.close().catch(() => {});
    this.stats.detach();
    this.setState('stopped');
    this.log.info('stopped', { parts: this.stats.snapshot().parts });
  }
}

function safe<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch {
    return undefined;
  }
}
