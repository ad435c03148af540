// The agent's MQTT side: results go through the durable outbox and are published in order at
// QoS 1; a record leaves the outbox only on PUBACK. On a lost connection the unacked records are
// re-published (flagged replayed) after the reconnect, and after a crash by the next process.
// Status is retained with an offline Last Will; commands arrive on cmd/# and are answered.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type IConnackPacket, type IPublishPacket, type MqttClient } from 'mqtt';
import type { Clock } from '../clock.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { Part } from '../part.js';
import { AGENT_VERSION } from '../version.js';
import { DEFAULT_COMMANDS, parseCommand, replyRoute, type CommandTable, type ReplyRoute } from './commands.js';
import { Outbox, OutboxFullError, type OutboxLevel, type OutboxLoss, type OutboxOptions, type OutboxRecord } from './outbox.js';
import {
  alarmPayload,
  inspectionPayload,
  replyPayload,
  resolvePrefix,
  statusPayload,
  toJson,
  topics,
  type AlarmInput,
  type InspectionTimings,
  type ReplyOutcome,
  type StatusInput,
  type Topics,
} from './payload.js';
import type { StatusState } from './schemas.js';

export type { AlarmInput, StatusInput, InspectionTimings } from './payload.js';

export interface MqttPublisherOptions {
  cfg: Config['mqtt'];
  station: { line: string; id: string };
  /** The outbox lives in `<stateDir>/outbox/`. */
  stateDir: string;
  clock: Clock;
  log: Logger;
  /** Runs a validated command; its result goes into the reply, a throw into an ok:false reply. */
  onCommand?: (cmd: string, payload: unknown) => Promise<unknown>;
  /** Used in the status until publishStatus() is called (the Last Will needs it at connect). */
  identity?: { agentVersion?: string; bootId?: number | string };
  /** Outbox bounds; override cfg.outbox (config mqtt.outbox; defaults 256 MiB, 7 days, high water at 80 %). */
  outbox?: Pick<OutboxOptions, 'maxBytes' | 'maxAgeMs' | 'highWater' | 'segmentBytes'>;
  /** Command payload schemas, added to / replacing the built-in trigger, pause, resume, status. */
  commands?: CommandTable;
  /** Time between reconnect attempts (default 2000 ms). */
  reconnectPeriodMs?: number;
  /** Give up a connect attempt after this long (default 10000 ms). */
  connectTimeoutMs?: number;
  /** Records published and not yet acknowledged at most (default 16). */
  inflightWindow?: number;
  /** stop() waits this long at most for the outbox to drain (default 5000 ms). */
  stopTimeoutMs?: number;
  /** Outbox-loss alarms are raised at most this often; losses in between are summed (default 10000 ms). */
  lossAlarmIntervalMs?: number;
}

/** What became of a result handed to the publisher. */
export interface PublishResult {
  id: string;
  /** In the outbox on disk: it will reach the broker, across reconnects and restarts. */
  durable: boolean;
  /** Why it is not durable (it was then sent live if connected, without a guarantee). */
  error?: string;
}

export interface MqttStats {
  connected: boolean;
  url: string;
  clientId: string;
  prefix: string;
  /** The cmd/# subscription is acknowledged: commands are being received. */
  commandsReady: boolean;
  connects: number;
  disconnects: number;
  /** Records acknowledged by the broker (PUBACK). */
  published: number;
  /** Records sent again after a lost connection or a restart (flagged replayed). */
  replayed: number;
  inflight: number;
  outbox: {
    /** Records waiting for a PUBACK. */
    pending: number;
    bytes: number;
    maxBytes: number;
    /** Records dropped since start (bounds, or refused by the broker). */
    dropped: number;
    /** Below the high-water mark. */
    healthy: boolean;
  };
  /** Results that could not be written to the outbox (see the log). */
  notDurable: number;
  commands: number;
  commandErrors: number;
  lastError?: string;
}

const SESSION_EXPIRY_S = 7 * 24 * 3600;

export class MqttPublisher {
  private client: MqttClient | undefined;
  private outbox: Outbox | undefined;
  private finalOutbox: ReturnType<Outbox['stats']> | undefined;
  private t: Topics | undefined;
  private prefix = '';
  private clientId = '';
  private connected = false;
  private commandsReady = false;
  /** Bumped on every connect and close: callbacks from an older connection are recognised. */
  private epoch = 0;
  private readonly inflight = new Set<number>();
  /** Records with seq < cursor have been sent on this connection. */
  private cursor = 0;
  private pumping = false;
  private started = false;
  private stopping: Promise<void> | undefined;
  private status: { input: StatusInput; atNs: bigint } | undefined;
  private readonly createdNs: bigint;
  private readonly waiters = new Set<() => void>();
  private pruneTimer: NodeJS.Timeout | undefined;
  private loss: { count: number; bytes: number; reasons: Set<string>; ids: string[]; total: number } | undefined;
  private lossTimer: NodeJS.Timeout | undefined;
  private lastErrorLogged = '';
  /** An error was reported for the current connection attempt. */
  private attemptErrored = false;
  private readonly counters = { connects: 0, disconnects: 0, published: 0, replayed: 0, notDurable: 0, commands: 0, commandErrors: 0 };
  private lastError: string | undefined;

  constructor(private readonly opts: MqttPublisherOptions) {
    this.createdNs = opts.clock.nowNs();
  }

  private get log(): Logger {
    return this.opts.log;
  }

  /**
   * Open the outbox and start connecting. Resolves without waiting for the broker: when it is
   * down, results pile up in the outbox and go out once it is reachable.
   */
  async start(): Promise<void> {
    if (this.started) throw new Error('MqttPublisher.start() called twice');
    this.started = true;
    const { cfg, station, stateDir } = this.opts;
    if (!cfg.url) throw new Error("mqtt.url is empty: set mqtt.url (e.g. 'mqtt://broker:1883') to publish results");
    // MQTT.js quietly treats an unknown scheme as plain TCP: refuse it instead.
    const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(cfg.url)?.[1]?.toLowerCase();
    if (!scheme || !['mqtt', 'mqtts', 'tcp', 'ssl', 'tls', 'ws', 'wss'].includes(scheme)) {
      throw new Error(`mqtt.url '${safeUrl(cfg.url)}' is not a broker URL: use mqtt://host:1883, or mqtts://host:8883 for TLS`);
    }
    this.prefix = resolvePrefix(cfg.prefix, station);
    this.t = topics(this.prefix);
    this.clientId = cfg.clientId || `linesight-${station.line}-${station.id}`;
    const options = this.clientOptions();

    this.outbox = await Outbox.open(join(stateDir, 'outbox'), {
      ...cfg.outbox,
      ...this.opts.outbox,
      clock: this.opts.clock,
      log: this.log,
      onHighWater: (l) => this.onHighWater(l),
      onDrop: (l) => this.onLoss(l),
    });
    const ob = this.outbox.stats();
    if (ob.corrupt > 0) {
      void this.putOwnAlarm({
        kind: 'outbox_corrupt',
        severity: 'critical',
        message: `${ob.corrupt} outbox record(s) were unreadable (bad CRC) and are lost; check the storage under ${stateDir}`,
        data: { corrupt: ob.corrupt },
      });
    }
    // Age bounds must hold while the broker is away too, when no put or ack happens for a while.
    this.pruneTimer = setInterval(() => this.outbox?.prune(), 60_000);
    this.pruneTimer.unref();

    this.log.info('mqtt connecting', {
      url: safeUrl(cfg.url),
      clientId: this.clientId,
      protocolVersion: cfg.protocolVersion,
      prefix: this.prefix,
      tls: Boolean(cfg.ca || cfg.cert || cfg.key) || /^(mqtts|ssl|wss):/.test(cfg.url),
      username: cfg.username,
      outbox: { records: ob.records, bytes: ob.bytes, maxBytes: ob.maxBytes },
    });
    let client: MqttClient;
    try {
      client = this.client = mqtt.connect(cfg.url, options);
    } catch (e) {
      // e.g. an unknown URL scheme: leave nothing open behind the error.
      clearInterval(this.pruneTimer);
      await this.outbox.close();
      this.outbox = undefined;
      throw new Error(`mqtt.url '${safeUrl(cfg.url)}' cannot be used (${(e as Error).message}): use mqtt://host:1883 or mqtts://host:8883`);
    }
    client.on('connect', (p) => this.onConnect(p));
    client.on('close', () => this.onClose());
    client.on('error', (e) => this.onError(e));
    client.on('message', (topic, payload, packet) => void this.onMessage(topic, payload, packet));
    // The will is sent in CONNECT: refresh it before each attempt with the latest status.
    client.on('reconnect', () => {
      this.attemptErrored = false;
      client.options.will = this.will();
    });
  }

  private clientOptions(): IClientOptions {
    const { cfg } = this.opts;
    const file = (what: 'ca' | 'cert' | 'key'): Buffer | undefined => {
      const path = cfg[what];
      if (!path) return undefined;
      try {
        return readFileSync(path);
      } catch (e) {
        const want = { ca: 'the CA certificate', cert: 'the client certificate', key: 'the client private key' }[what];
        throw new Error(`mqtt.${what}: cannot read '${path}' (${(e as Error).message}): point mqtt.${what} at ${want} (PEM)`);
      }
    };
    const o: IClientOptions = {
      clientId: this.clientId,
      protocolVersion: cfg.protocolVersion,
      // A persistent session: the broker keeps our subscription and in-flight state across drops.
      clean: false,
      keepalive: cfg.keepalive,
      reconnectPeriod: this.opts.reconnectPeriodMs ?? 2000,
      connectTimeout: this.opts.connectTimeoutMs ?? 10_000,
      // A refused CONNECT (auth, broker busy) may be fixed broker-side: keep trying, it is logged.
      reconnectOnConnackError: true,
      resubscribe: false,
      will: this.will(),
    };
    if (cfg.protocolVersion === 5) o.properties = { sessionExpiryInterval: SESSION_EXPIRY_S };
    if (cfg.username !== undefined) o.username = cfg.username;
    if (cfg.password !== undefined) o.password = cfg.password;
    const ca = file('ca');
    const cert = file('cert');
    const key = file('key');
    if (ca) o.ca = ca;
    if (cert) o.cert = cert;
    if (key) o.key = key;
    if (ca || cert || key) o.rejectUnauthorized = true;
    return o;
  }

  // ---- connection ----------------------------------------------------------------------------

  private onConnect(connack: IConnackPacket): void {
    const client = this.client!;
    this.connected = true;
    this.epoch++;
    this.counters.connects++;
    this.lastErrorLogged = '';
    this.log.info('mqtt connected', { clientId: this.clientId, sessionPresent: connack.sessionPresent, pending: this.outbox?.size ?? 0 });
    // QoS 0: a command sent while the agent is away is not queued by the broker and run hours
    // later (a stale trigger or pause); the requester times out and retries instead.
    client.subscribe(this.t!.commands, { qos: 0 }, (err, granted) => {
      if (err || granted?.some((g) => g.qos === 128)) {
        this.log.error('cannot subscribe to commands: check the broker ACL allows it', { topic: this.t!.commands, error: err?.message });
      } else if (this.connected) {
        this.commandsReady = true;
      }
    });
    void this.sendStatus();
    this.cursor = 0;
    this.pump();
    this.notify();
  }

  private onClose(): void {
    const client = this.client;
    const was = this.connected;
    this.connected = false;
    this.commandsReady = false;
    this.epoch++;
    if (was && this.stopping) {
      this.log.info('mqtt disconnected (stopping)', { pending: this.outbox?.size ?? 0 });
    } else if (was) {
      this.counters.disconnects++;
      this.log.warn('mqtt connection lost; results are kept in the outbox and published after the reconnect', {
        pending: this.outbox?.size ?? 0,
        inflight: this.inflight.size,
      });
    }
    // MQTT.js would re-send its own unacked copies on reconnect; the outbox re-publishes them
    // (flagged replayed), so drop MQTT.js's copies rather than send each one twice.
    if (client) {
      for (const [id, o] of Object.entries(client.outgoing)) if (o.cmd === 'publish') client.removeOutgoingMessage(Number(id));
    }
    this.inflight.clear();
    this.cursor = 0;
    this.notify();
    // A broker that refuses a client certificate may just close the connection (no TLS alert,
    // no CONNACK, no error): say so, or the agent would retry forever without a word.
    // (Checked a turn later: an error event may come right after the close.)
    if (!was && !this.stopping) {
      setImmediate(() => {
        if (this.attemptErrored || this.connected || this.stopping) return;
        this.onError(Object.assign(new Error('the connection closed before the broker accepted it (no CONNACK)'), { code: 'ECLOSEDBEFORECONNACK' }));
      });
    }
  }

  private onError(e: Error & { code?: unknown }): void {
    const msg = e.message;
    this.lastError = msg;
    this.attemptErrored = true;
    const code = typeof e.code === 'number' ? e.code : undefined;
    let hint = '';
    if (code === 1 || code === 132) {
      hint = `the broker refuses MQTT ${this.opts.cfg.protocolVersion === 5 ? '5' : '3.1.1'}: set mqtt.protocolVersion to ${this.opts.cfg.protocolVersion === 5 ? '4 (the embedded broker speaks MQTT 3.1.1 only)' : '5'}`;
    } else if (code === 4 || code === 5 || code === 134 || code === 135) {
      hint = 'check mqtt.username / mqtt.password and the broker ACL';
    } else if (code === 2 || code === 133) {
      hint = 'the broker rejects the client id: set mqtt.clientId';
    } else if (e.code === 'ECONNREFUSED' || e.code === 'ENOTFOUND' || e.code === 'EHOSTUNREACH') {
      hint = 'broker not reachable: results are kept in the outbox until it is';
    } else if (e.code === 'ECLOSEDBEFORECONNACK') {
      hint = /^(mqtts|ssl|tls|wss):/i.test(this.opts.cfg.url)
        ? 'a TLS broker that refuses the client certificate closes the connection like this: check mqtt.cert / mqtt.key and the broker log; else check that mqtt.url names the MQTT port'
        : 'check that mqtt.url names the MQTT port, and the broker log (it may limit connections or refuse this client)';
    } else if (typeof e.code === 'string') {
      hint = tlsHint(e.code);
    }
    // Every reconnect repeats the same error: log it once until the next successful connect.
    if (msg !== this.lastErrorLogged) {
      this.lastErrorLogged = msg;
      this.log.warn('mqtt error', { error: msg, ...(hint ? { hint } : {}) });
    } else {
      this.log.debug('mqtt error', { error: msg });
    }
  }

  /** Resolves true once connected (false after timeoutMs). */
  whenConnected(timeoutMs = 10_000): Promise<boolean> {
    return this.waitFor(() => this.connected, timeoutMs);
  }

  private waitFor(cond: () => boolean, timeoutMs: number): Promise<boolean> {
    if (cond()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const check = (): void => {
        if (!cond()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        resolve(cond());
      }, timeoutMs);
      this.waiters.add(check);
    });
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  // ---- the outbox pump -----------------------------------------------------------------------

  private pump(): void {
    const ob = this.outbox;
    if (!ob || !this.client || !this.connected || this.pumping) return;
    this.pumping = true;
    try {
      for (const rec of ob.pending()) {
        if (this.inflight.size >= (this.opts.inflightWindow ?? 16)) break;
        if (rec.seq < this.cursor) continue;
        this.send(rec);
        this.cursor = rec.seq + 1;
        if (!this.connected) break;
      }
    } finally {
      this.pumping = false;
    }
  }

  private send(rec: OutboxRecord): void {
    const replayed = rec.recovered || rec.attempts > 0;
    rec.attempts++;
    if (replayed) this.counters.replayed++;
    const body =
      rec.payload !== null && typeof rec.payload === 'object' && !Array.isArray(rec.payload)
        ? toJson({ ...(rec.payload as object), replayed })
        : toJson(rec.payload);
    const epoch = this.epoch;
    this.inflight.add(rec.seq);
    this.client!.publish(rec.topic, body, { qos: rec.qos, retain: rec.retain }, (err) => this.onSent(rec, epoch, err));
  }

  private onSent(rec: OutboxRecord, epoch: number, err: (Error & { code?: unknown }) | undefined): void {
    if (epoch === this.epoch) this.inflight.delete(rec.seq);
    if (!err) {
      // Even from an older connection a PUBACK means the broker has it.
      if (this.outbox?.ack(rec.seq)) this.counters.published++;
    } else if (typeof err.code === 'number' && err.code >= 0x80) {
      // An MQTT 5 broker refused this message for good (not authorized, too large): re-sending
      // would block the queue forever, so it is dropped and reported as a loss.
      this.log.error('broker refused a message', { id: rec.id, topic: rec.topic, error: err.message });
      this.outbox?.reject(rec.seq, `broker refused: ${err.message}`);
    }
    // Any other error is a lost connection: the record stays and goes out after the reconnect.
    this.pump();
    this.notify();
  }

  private async enqueue(topic: string, payload: object, id: string): Promise<PublishResult> {
    try {
      if (!this.outbox) throw new Error(this.started ? 'publisher is not running' : 'publisher not started: call start() first');
      await this.outbox.put(topic, payload, { id });
      this.pump();
      return { id, durable: true };
    } catch (e) {
      const error = (e as Error).message;
      this.counters.notDurable++;
      // Disk full or failing: better a live attempt without guarantee than nothing.
      const live = this.connected && this.client !== undefined;
      if (live) this.client!.publish(topic, toJson({ ...payload, replayed: false }), { qos: 1 });
      this.log.error(live ? 'result not persisted: sent live without the outbox guarantee' : 'result not persisted and not connected: it is lost', {
        id,
        topic,
        error,
      });
      return { id, durable: false, error };
    }
  }

  // ---- publishing ----------------------------------------------------------------------------

  /** One message per part on `<prefix>inspection`; resolves once it is durable in the outbox. */
  publishInspection(part: Part, extra: { line?: string; timings?: InspectionTimings } = {}): Promise<PublishResult> {
    const payload = inspectionPayload(part, { line: extra.line ?? this.opts.station.line, ...(extra.timings ? { timings: extra.timings } : {}) });
    return this.enqueue(this.t?.inspection ?? '', payload, part.id);
  }

  /** An alarm on `<prefix>alarm` (id and time are filled in when missing). */
  publishAlarm(alarm: AlarmInput): Promise<PublishResult> {
    const id = alarm.id ?? randomUUID();
    const payload = alarmPayload(
      { ...alarm, id, timeMs: alarm.timeMs ?? this.opts.clock.wallMs() },
      { station: this.opts.station.id, line: this.opts.station.line },
    );
    return this.enqueue(this.t?.alarm ?? '', payload, id);
  }

  /** Ids of the results persisted and not yet acknowledged (crash recovery checks against them). */
  pendingIds(): Set<string> {
    const ids = new Set<string>();
    if (this.outbox) for (const r of this.outbox.pending()) ids.add(r.id);
    return ids;
  }

  /**
   * A shadow model's verdict, for comparison by the central system. QoS 0 and not outboxed:
   * shadow results drive no actuator and are statistics, so a lost one costs nothing.
   */
  publishShadow(payload: Record<string, unknown>): void {
    if (!this.client || !this.connected || !this.t) return;
    const body = toJson({ ...payload, station: this.opts.station.id, line: this.opts.station.line, time: new Date(this.opts.clock.wallMs()).toISOString() });
    this.client.publish(this.t.shadow, body, { qos: 0 });
  }

  /**
   * The retained status. Not outboxed: only the last value matters, and it is re-published on
   * every (re)connect. Call it before start() too, so the Last Will carries the agent's identity.
   */
  async publishStatus(status: StatusInput): Promise<void> {
    this.status = { input: status, atNs: this.opts.clock.nowNs() };
    if (this.client) this.client.options.will = this.will();
    if (this.connected) await this.sendStatus();
  }

  private currentStatus(state?: StatusState): StatusInput {
    const now = this.opts.clock.nowNs();
    const s = this.status;
    const elapsedS = (from: bigint): number => Number(now - from) / 1e9;
    const base: StatusInput = s?.input ?? {
      state: 'online',
      model: null,
      provider: null,
      agentVersion: this.opts.identity?.agentVersion ?? AGENT_VERSION,
      bootId: this.opts.identity?.bootId ?? null,
      uptimeS: 0,
    };
    // The status is re-sent on reconnects: age the uptime the agent gave by the time since.
    const uptimeS = s ? s.input.uptimeS + elapsedS(s.atNs) : elapsedS(this.createdNs);
    return { ...base, state: state ?? base.state, uptimeS };
  }

  private statusBody(state?: StatusState): string {
    return toJson(statusPayload(this.currentStatus(state), { station: this.opts.station.id, line: this.opts.station.line, wallMs: this.opts.clock.wallMs() }));
  }

  private will(): NonNullable<IClientOptions['will']> {
    return { topic: topics(this.prefix).status, payload: Buffer.from(this.statusBody('offline')), qos: 1, retain: true };
  }

  private sendStatus(state?: StatusState): Promise<void> {
    const client = this.client;
    if (!client || !this.connected) return Promise.resolve();
    const body = this.statusBody(state);
    return new Promise((resolve) => {
      client.publish(this.t!.status, body, { qos: 1, retain: true }, (err) => {
        if (err) this.log.debug('status not acknowledged (it is re-sent on reconnect)', { error: err.message });
        resolve();
      });
    });
  }

  // ---- outbox alarms -------------------------------------------------------------------------

  /**
   * The outbox's own alarms never evict a result: with no room they wait (the caller retries),
   * otherwise each loss alarm would drop a record and so cause the next one.
   */
  private async putOwnAlarm(alarm: AlarmInput): Promise<boolean> {
    if (!this.outbox || !this.t) return false;
    const id = randomUUID();
    const payload = alarmPayload({ ...alarm, id, timeMs: this.opts.clock.wallMs() }, { station: this.opts.station.id, line: this.opts.station.line });
    try {
      await this.outbox.put(this.t.alarm, payload, { id, evict: false });
      this.pump();
      return true;
    } catch (e) {
      if (!(e instanceof OutboxFullError)) this.log.error('outbox alarm not persisted', { kind: alarm.kind, error: (e as Error).message });
      return false;
    }
  }

  private onHighWater(l: OutboxLevel): void {
    void this.putOwnAlarm({
      kind: 'outbox_high_water',
      severity: 'warning',
      message: `outbox at ${Math.round((100 * l.bytes) / l.maxBytes)}% (${l.records} results not yet acknowledged by the broker); at 100% the oldest are dropped`,
      data: { ...l },
    });
  }

  private onLoss(l: OutboxLoss): void {
    this.addLoss({ count: l.count, bytes: l.bytes, reasons: new Set([l.reason]), ids: l.ids, total: l.totalDropped });
    // One alarm per interval: at the bound every put drops, and the losses in between are summed.
    if (!this.lossTimer) this.flushLoss();
  }

  private addLoss(l: NonNullable<MqttPublisher['loss']>): void {
    const acc = (this.loss ??= { count: 0, bytes: 0, reasons: new Set(), ids: [], total: 0 });
    acc.count += l.count;
    acc.bytes += l.bytes;
    for (const r of l.reasons) acc.reasons.add(r);
    acc.total = Math.max(acc.total, l.total);
    for (const id of l.ids) if (acc.ids.length < 20) acc.ids.push(id);
  }

  private lossAlarm(acc: NonNullable<MqttPublisher['loss']>): AlarmInput {
    const reasons = [...acc.reasons];
    const why = reasons
      .map((r) => ({ bytes: 'outbox full', age: 'older than the age limit', rejected: 'refused by the broker' })[r] ?? r)
      .join(', ');
    return {
      kind: 'outbox_drop',
      severity: 'critical',
      message: `${acc.count} result(s) dropped from the outbox (${why}); ${acc.total} since start`,
      data: { count: acc.count, bytes: acc.bytes, reasons, ids: acc.ids, totalDropped: acc.total },
    };
  }

  private flushLoss(): void {
    this.lossTimer = undefined;
    const acc = this.loss;
    if (!acc || this.stopping) return;
    this.loss = undefined;
    void this.putOwnAlarm(this.lossAlarm(acc)).then((ok) => {
      // No room for the alarm yet: keep the count, the next attempt reports it all.
      if (!ok) this.addLoss(acc);
    });
    this.lossTimer = setTimeout(() => this.flushLoss(), this.opts.lossAlarmIntervalMs ?? 10_000);
    this.lossTimer.unref();
  }

  // ---- commands ------------------------------------------------------------------------------

  private async onMessage(topic: string, payload: Buffer, packet: IPublishPacket): Promise<void> {
    const t = this.t;
    if (!t || !topic.startsWith(t.commandPrefix)) return;
    const command = topic.slice(t.commandPrefix.length);
    this.counters.commands++;
    const route = replyRoute(t.reply(command), packet.properties);
    let requestId: string | undefined;
    let outcome: ReplyOutcome;
    try {
      const parsed = parseCommand(command, payload, { ...DEFAULT_COMMANDS, ...this.opts.commands });
      requestId = parsed.requestId;
      if (packet.retain) {
        outcome = { ok: false, error: `retained commands are ignored (it would run again on every reconnect): publish ${topic} with retain=false` };
      } else if (!parsed.ok) {
        outcome = { ok: false, error: parsed.error };
      } else if (this.stopping) {
        outcome = { ok: false, error: 'the agent is stopping: send the command again once it is back online' };
      } else if (!this.opts.onCommand) {
        outcome = { ok: false, error: 'this agent takes no commands over MQTT (no handler configured)' };
      } else {
        this.log.info('command', { command, requestId });
        outcome = { ok: true, result: await this.opts.onCommand(command, parsed.payload) };
      }
    } catch (e) {
      outcome = { ok: false, error: `${command} failed: ${(e as Error).message}` };
    }
    if (!outcome.ok) {
      this.counters.commandErrors++;
      this.log.warn('command refused', { command, requestId, error: outcome.error });
    }
    this.reply(route, command, outcome, requestId);
  }

  private reply(route: ReplyRoute, command: string, outcome: ReplyOutcome, requestId: string | undefined): void {
    const ctx = { station: this.opts.station.id, line: this.opts.station.line, wallMs: this.opts.clock.wallMs(), ...(requestId !== undefined ? { requestId } : {}) };
    let body: string;
    try {
      body = toJson(replyPayload(command, outcome, ctx));
    } catch (e) {
      body = toJson(replyPayload(command, { ok: false, error: `the result could not be serialised to JSON: ${(e as Error).message}` }, ctx));
    }
    if (!this.client || !this.connected) {
      this.log.warn('command reply dropped: not connected', { command, requestId });
      return;
    }
    const props = this.opts.cfg.protocolVersion === 5 && route.properties ? { properties: route.properties } : {};
    this.client.publish(route.topic, body, { qos: 1, ...props }, (err) => {
      if (err) this.log.warn('command reply not delivered', { command, requestId, error: err.message });
    });
  }

  // ---- stop & stats --------------------------------------------------------------------------

  /**
   * Let the outbox drain (bounded), publish the offline status, disconnect cleanly. What is not
   * acknowledged by then stays in the outbox for the next start.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      clearInterval(this.pruneTimer);
      clearTimeout(this.lossTimer);
      // A loss still waiting for its alarm goes out with the drain (if there is room).
      const loss = this.loss;
      this.loss = undefined;
      if (loss) await this.putOwnAlarm(this.lossAlarm(loss));
      const client = this.client;
      const limit = this.opts.stopTimeoutMs ?? 5000;
      if (client) {
        if (this.connected) await this.waitFor(() => !this.connected || ((this.outbox?.size ?? 0) === 0 && this.inflight.size === 0), limit);
        if (this.connected) await withTimeout(this.sendStatus('offline'), Math.min(limit, 2000));
        const graceful = this.connected;
        await withTimeout(new Promise<void>((r) => client.end(!graceful, {}, () => r())), 2000);
        if (!client.disconnected) client.end(true);
      }
      const left = this.outbox?.size ?? 0;
      await this.outbox?.close();
      this.finalOutbox = this.outbox?.stats();
      this.outbox = undefined;
      this.notify();
      this.log.info('mqtt publisher stopped', { unacked: left, ...(left ? { note: 'kept in the outbox for the next start' } : {}) });
    })();
    return this.stopping;
  }

  stats(): MqttStats {
    const ob = this.outbox?.stats() ?? this.finalOutbox;
    return {
      connected: this.connected,
      url: safeUrl(this.opts.cfg.url),
      clientId: this.clientId,
      prefix: this.prefix,
      commandsReady: this.commandsReady,
      connects: this.counters.connects,
      disconnects: this.counters.disconnects,
      published: this.counters.published,
      replayed: this.counters.replayed,
      inflight: this.inflight.size,
      outbox: {
        pending: ob?.records ?? 0,
        bytes: ob?.bytes ?? 0,
        maxBytes: ob?.maxBytes ?? 0,
        dropped: ob?.dropped ?? 0,
        healthy: !(ob?.highWater ?? false),
      },
      notDurable: this.counters.notDurable,
      commands: this.counters.commands,
      commandErrors: this.counters.commandErrors,
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
    };
  }
}

const UNTRUSTED = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
]);

/** What to do about a TLS error code (node's, or OpenSSL's as ERR_SSL_*), or '' when it is not one. */
function tlsHint(code: string): string {
  if (UNTRUSTED.has(code)) return "the broker's certificate is not trusted: mqtt.ca must be the CA certificate (PEM) that signed it";
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') return "the broker's certificate is expired or not yet valid: renew it, or check the device clock";
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return "the broker's certificate is not issued for the host in mqtt.url: use a name from its subjectAltName";
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER') return 'the broker does not speak TLS on this port: use mqtt:// here, or the TLS port (usually 8883) with mqtts://';
  if (code.startsWith('ERR_SSL_') && code.includes('ALERT')) {
    return 'the broker refused the TLS handshake: mqtt.cert / mqtt.key must be a client certificate and its key, signed by a CA the broker trusts (set them when the broker requires one)';
  }
  return '';
}

/** The URL without a password, for logs and stats. */
export function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString().replace(/\/$/, '');
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//***@');
  }
}

function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    void p.finally(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
