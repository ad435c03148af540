// The MQTT contract against a real broker (Mosquitto when installed, else embedded aedes; see
// test/helpers/broker.ts). A TCP proxy between agent and broker cuts or black-holes the agent's
// connection where a test needs a lost PUBACK or a dead link at an exact point.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { Value } from '@sinclair/typebox/value';
import type { TSchema } from '@sinclair/typebox';
import { SystemClock } from '../../src/clock.js';
import { memoryLogger } from '../../src/log.js';
import type { Part } from '../../src/part.js';
import { MqttPublisher, type MqttPublisherOptions } from '../../src/publish/mqtt.js';
import { startEmbeddedBroker } from '../../src/publish/broker.js';
import { AlarmMessageSchema, CommandReplySchema, InspectionMessageSchema, StatusMessageSchema } from '../../src/publish/schemas.js';
import { startTcpProxy, startTestBroker, type TcpProxy, type TestBroker } from '../helpers/broker.js';

let broker: TestBroker;
const dirs: string[] = [];

before(async () => {
  broker = await startTestBroker();
});
after(async () => {
  await broker?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

// ---- helpers ---------------------------------------------------------------------------------

const MODEL = { name: 'film-demo', version: '1.0.0', sha256: 'c'.repeat(64) };
let stations = 0;
const newStation = (name: string): string => `${name}-${process.pid}-${++stations}`;
const prefixOf = (station: string): string => `linesight/itest/${station}/`;
const stateDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'linesight-mqtt-'));
  dirs.push(d);
  return d;
};

type Ctx = { after(fn: () => Promise<void> | void): void };
/** Release `thing` after the test, pass or fail, so a failure cannot leave clients reconnecting. */
function cleanup<T>(t: Ctx, thing: T, close: (x: T) => Promise<unknown> | unknown): T {
  t.after(async () => {
    await Promise.resolve(close(thing)).catch(() => {});
  });
  return thing;
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function valid(schema: TSchema, value: unknown): void {
  const errors = [...Value.Errors(schema, value)].map((e) => `${e.path} ${e.message}`);
  assert.deepEqual(errors, [], `schema-valid: ${JSON.stringify(value)}`);
}

interface Msg {
  topic: string;
  body: Record<string, unknown>;
  retain: boolean;
  qos: number;
  packet: IPublishPacket;
}

/** A client of the central system: subscribes at QoS 1 and keeps every message. */
async function listen(t: Ctx, filters: string[], opts: IClientOptions = {}): Promise<{ msgs: Msg[]; client: MqttClient; close(): Promise<void> }> {
  const msgs: Msg[] = [];
  const client = await mqtt.connectAsync(broker.url, { protocolVersion: 4, reconnectPeriod: 100, connectTimeout: 5000, ...opts });
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => (closing ??= client.endAsync(true));
  cleanup(t, null, close);
  client.on('message', (topic, payload, packet) => {
    msgs.push({ topic, body: payload.length ? (JSON.parse(payload.toString()) as Record<string, unknown>) : {}, retain: packet.retain, qos: packet.qos, packet });
  });
  await client.subscribeAsync(filters, { qos: 1 });
  return { msgs, client, close };
}

async function proxyFor(t: Ctx): Promise<TcpProxy> {
  const proxy = await startTcpProxy(broker.port);
  let closing: Promise<void> | undefined;
  const close = proxy.close;
  proxy.close = () => (closing ??= close());
  return cleanup(t, proxy, (p) => p.close());
}

function publisher(t: Ctx, o: {
  url: string;
  cfg?: Partial<MqttPublisherOptions['cfg']>;
  station: string;
  dir?: string;
  protocolVersion?: 4 | 5;
  onCommand?: MqttPublisherOptions['onCommand'];
  outbox?: MqttPublisherOptions['outbox'];
}): { pub: MqttPublisher; log: ReturnType<typeof memoryLogger>; dir: string } {
  const log = memoryLogger();
  const dir = o.dir ?? stateDir();
  const pub = new MqttPublisher({
    cfg: { url: o.url, prefix: '', clientId: '', protocolVersion: o.protocolVersion ?? 4, keepalive: 30, embeddedPort: 0, ...o.cfg },
    station: { line: 'itest', id: o.station },
    stateDir: dir,
    clock: new SystemClock(),
    log,
    ...(o.onCommand ? { onCommand: o.onCommand } : {}),
    ...(o.outbox ? { outbox: o.outbox } : {}),
    lossAlarmIntervalMs: 100,
    reconnectPeriodMs: 100,
    connectTimeoutMs: 2000,
    stopTimeoutMs: 3000,
  });
  cleanup(t, pub, (p) => p.stop());
  return { pub, log, dir };
}

function part(station: string, seq: number, kind: 'pass' | 'reject' | 'late' = 'pass'): Part {
  const t0 = 1_000_000_000n + BigInt(seq) * 100_000_000n;
  const base: Part = {
    id: `${station}-b1-${seq}`,
    station,
    seq,
    trigger: 'interval',
    triggeredAt: new Date(Date.UTC(2026, 0, 1) + seq).toISOString(),
    t: { triggerNs: t0, frameNs: t0 + 2_000_000n, inferStartNs: t0 + 3_000_000n, inferEndNs: t0 + 20_000_000n, decidedNs: t0 + 21_000_000n },
    failSafe: false,
    model: MODEL,
    provider: 'cpu',
    timings: { queueMs: 1, preprocessMs: 2, inferMs: 12, postprocessMs: 1 },
  };
  if (kind === 'late') {
    return { ...base, t: { triggerNs: t0, frameNs: t0 + 2_000_000n, decidedNs: t0 + 80_000_000n }, failSafe: true, reason: 'late', detail: 'no verdict in 80 ms', action: 'divert', model: undefined, provider: undefined, timings: undefined };
  }
  const verdict = kind === 'reject'
    ? { verdict: 'reject' as const, score: 0.93, threshold: 0.5, defects: [{ class: 'scratch', score: 0.9, box: [1, 2, 3, 4] as [number, number, number, number] }] }
    : { verdict: 'pass' as const, score: 0.07, threshold: 0.5, defects: [] };
  return { ...base, verdict, action: kind === 'reject' ? 'divert' : 'pass' };
}

const inspections = (msgs: Msg[]): Msg[] => msgs.filter((m) => m.topic.endsWith('/inspection'));
const statuses = (msgs: Msg[]): Msg[] => msgs.filter((m) => m.topic.endsWith('/status'));

// ---- tests -----------------------------------------------------------------------------------

test('status is retained: online with the agent identity; offline by Last Will when the link dies, and on a clean stop', async (t) => {
  t.diagnostic(`broker: ${broker.kind}`);
  const station = newStation('status');
  const status = prefixOf(station) + 'status';
  const proxy = await proxyFor(t);
  const { pub } = publisher(t, { url: proxy.url, station });
  // Before start(), so that even the Last Will names the agent.
  await pub.publishStatus({ state: 'online', model: MODEL, provider: 'cpu', agentVersion: '9.9.9', bootId: 'b5', uptimeS: 3 });
  await pub.start();
  assert.equal(await pub.whenConnected(), true);

  const watch = await listen(t, [status]);
  await waitFor(() => statuses(watch.msgs).length >= 1, 'the retained status');
  const online = watch.msgs[0]!;
  assert.equal(online.retain, true, 'delivered as retained to a new subscriber');
  valid(StatusMessageSchema, online.body);
  assert.equal(online.body.state, 'online');
  assert.deepEqual(online.body.model, MODEL);
  assert.equal(online.body.bootId, 'b5');
  assert.equal(online.body.agentVersion, '9.9.9');
  assert.equal(online.body.station, station);
  assert.ok((online.body.uptimeS as number) >= 3);

  // The network dies under the agent: no DISCONNECT, so the broker publishes the will.
  proxy.refuse = true;
  proxy.cut();
  await waitFor(() => watch.msgs.some((m) => m.body.state === 'offline'), 'the Last Will');
  const late = await listen(t, [status]);
  await waitFor(() => late.msgs.length >= 1, 'the retained will');
  assert.equal(late.msgs[0]!.retain, true);
  assert.equal(late.msgs[0]!.body.state, 'offline');
  assert.equal(late.msgs[0]!.body.bootId, 'b5');
  valid(StatusMessageSchema, late.msgs[0]!.body);
  await late.close();

  // Back: online again.
  const seen = watch.msgs.length;
  proxy.refuse = false;
  await waitFor(() => watch.msgs.slice(seen).some((m) => m.body.state === 'online'), 'online after the reconnect');

  await pub.stop();
  await waitFor(() => watch.msgs.at(-1)?.body.state === 'offline', 'offline on stop');
  const after = await listen(t, [status]);
  await waitFor(() => after.msgs.length >= 1, 'the retained offline status');
  assert.equal(after.msgs[0]!.body.state, 'offline');
  assert.equal(after.msgs[0]!.retain, true);
  valid(StatusMessageSchema, after.msgs[0]!.body);
  await after.close();
  await watch.close();
  await proxy.close();
});

test('inspections and alarms arrive once each, in order, schema-valid, QoS 1 and not retained', async (t) => {
  const station = newStation('insp');
  const prefix = prefixOf(station);
  const central = await listen(t, [prefix + 'inspection', prefix + 'alarm']);
  const { pub } = publisher(t, { url: broker.url, station });
  await pub.start();
  const kinds = ['pass', 'reject', 'late', 'pass', 'reject', 'pass', 'pass', 'late', 'pass', 'reject'] as const;
  for (const [i, k] of kinds.entries()) {
    const r = await pub.publishInspection(part(station, i, k));
    assert.deepEqual(r, { id: `${station}-b1-${i}`, durable: true });
  }
  const alarm = await pub.publishAlarm({ kind: 'late', severity: 'warning', message: 'part 2 late', partId: `${station}-b1-2` });
  assert.equal(alarm.durable, true);

  await waitFor(() => central.msgs.length >= 11, 'ten inspections and an alarm');
  const got = inspections(central.msgs);
  assert.deepEqual(got.map((m) => m.body.partId), kinds.map((_, i) => `${station}-b1-${i}`));
  for (const m of got) {
    valid(InspectionMessageSchema, m.body);
    assert.equal(m.retain, false);
    assert.equal(m.qos, 1);
    assert.equal(m.body.replayed, false);
    assert.equal(m.body.line, 'itest');
  }
  assert.deepEqual(got.map((m) => m.body.verdict), kinds.map((k) => (k === 'late' ? null : k)));
  assert.deepEqual(got[2]!.body.reason, 'late');
  assert.deepEqual((got[1]!.body.latencyMs as Record<string, unknown>).infer, 12);
  const a = central.msgs.find((m) => m.topic.endsWith('/alarm'))!;
  valid(AlarmMessageSchema, a.body);
  assert.deepEqual([a.body.id, a.body.kind, a.body.partId, a.retain], [alarm.id, 'late', `${station}-b1-2`, false]);

  await waitFor(() => pub.stats().outbox.pending === 0, 'the outbox to drain');
  assert.equal(pub.stats().published, 11);
  await pub.stop();
  await central.close();
});

for (const version of [4, 5] as const) {
  test(`commands (MQTT ${version === 4 ? '3.1.1' : '5'}): replies for valid, malformed, unknown, bad-field and failing commands; never a crash`, async (t) => {
    if (version === 5 && broker.kind === 'aedes') {
      // aedes 1.x refuses MQTT 5: check that the agent says so and how to fix it (the MQTT 5
      // reply routing is run against Mosquitto, as in CI, and unit-tested in payload.test.ts).
      const station = newStation('cmd5-aedes');
      const { pub, log } = publisher(t, { url: broker.url, station, protocolVersion: 5 });
      await pub.start();
      await waitFor(() => log.records.some((r) => r.msg === 'mqtt error'), 'the refusal');
      const rec = log.records.find((r) => r.msg === 'mqtt error')!;
      assert.match(String(rec.hint), /set mqtt\.protocolVersion to 4/);
      assert.equal(pub.stats().connected, false);
      await pub.stop();
      t.diagnostic('aedes refuses MQTT 5: checked the hint instead');
      return;
    }
    const station = newStation(`cmd${version}`);
    const prefix = prefixOf(station);
    const calls: [string, unknown][] = [];
    const { pub } = publisher(t, {
      url: broker.url,
      station,
      protocolVersion: version,
      onCommand: async (cmd, payload) => {
        calls.push([cmd, payload]);
        if (cmd === 'resume') throw new Error('not paused: nothing to resume');
        return cmd === 'trigger' ? { partId: `${station}-b1-7` } : { state: 'paused' };
      },
    });
    await pub.start();
    await pub.whenConnected();
    const central = await listen(t, [prefix + 'reply/#', `central/${station}/resp`], { protocolVersion: version });
    // The agent subscribes to cmd/# on connect; requests before its SUBACK would go nowhere.
    await waitFor(() => pub.stats().commandsReady, 'the command subscription');

    const ask = async (command: string, body: string, opts: mqtt.IClientPublishOptions = {}): Promise<Msg> => {
      const n = central.msgs.length;
      await central.client.publishAsync(`${prefix}cmd/${command}`, body, { qos: 1, ...opts });
      await waitFor(() => central.msgs.length > n, `the reply to cmd/${command}`);
      const m = central.msgs[n]!;
      valid(CommandReplySchema, m.body);
      assert.equal(m.retain, false);
      return m;
    };

    const ok = await ask('trigger', '{"requestId":"r1"}');
    assert.equal(ok.topic, `${prefix}reply/trigger`);
    assert.deepEqual([ok.body.ok, ok.body.command, ok.body.requestId, ok.body.result], [true, 'trigger', 'r1', { partId: `${station}-b1-7` }]);
    assert.deepEqual(calls.at(-1), ['trigger', { requestId: 'r1' }]);

    const empty = await ask('pause', '');
    assert.deepEqual([empty.body.ok, empty.body.result, 'requestId' in empty.body], [true, { state: 'paused' }, false]);

    const malformed = await ask('trigger', '{"requestId": "r2"');
    assert.equal(malformed.body.ok, false);
    assert.match(String(malformed.body.error), /not valid JSON.*send a JSON object/);

    const unknown = await ask('explode', '{"requestId":"r3"}');
    assert.equal(unknown.topic, `${prefix}reply/explode`);
    assert.equal(unknown.body.ok, false);
    assert.equal(unknown.body.requestId, 'r3');
    assert.match(String(unknown.body.error), /unknown command 'explode': known commands are model, pause, resume, status, trigger/);

    const field = await ask('trigger', '{"requestId":"r4","count":3}');
    assert.match(String(field.body.error), /unknown field 'count'/);
    const typed = await ask('pause', '{"reason":42}');
    assert.match(String(typed.body.error), /bad field 'reason'.*send reason as a string/);

    const failing = await ask('resume', '{"requestId":"r5"}');
    assert.deepEqual([failing.body.ok, failing.body.requestId], [false, 'r5']);
    assert.match(String(failing.body.error), /resume failed: not paused: nothing to resume/);

    assert.deepEqual(calls.map((c) => c[0]), ['trigger', 'pause', 'resume'], 'refused requests never reach the handler');

    if (version === 5) {
      const corr = Buffer.from('corr-123');
      const routed = await ask('trigger', '{}', { properties: { responseTopic: `central/${station}/resp`, correlationData: corr } });
      assert.equal(routed.topic, `central/${station}/resp`);
      assert.deepEqual(Buffer.from(routed.packet.properties?.correlationData ?? []), corr);
      assert.equal(routed.body.ok, true);
    }
    assert.equal(pub.stats().connected, true, 'still up after all of that');
    assert.equal(pub.stats().commandErrors, 5);
    await pub.stop();
    await central.close();
  });
}

test('a retained command is not run (it would run again at every reconnect); the reply says why', async (t) => {
  const station = newStation('retained');
  const prefix = prefixOf(station);
  const central = await listen(t, [prefix + 'reply/#']);
  await central.client.publishAsync(`${prefix}cmd/pause`, '{"requestId":"old"}', { qos: 1, retain: true });
  const calls: string[] = [];
  const { pub } = publisher(t, { url: broker.url, station, onCommand: async (c) => void calls.push(c) });
  await pub.start();
  await waitFor(() => central.msgs.length >= 1, 'the reply');
  assert.equal(central.msgs[0]!.body.ok, false);
  assert.equal(central.msgs[0]!.body.requestId, 'old');
  assert.match(String(central.msgs[0]!.body.error), /retained commands are ignored.*retain=false/);
  assert.deepEqual(calls, []);
  await pub.stop();
  await central.client.publishAsync(`${prefix}cmd/pause`, '', { qos: 1, retain: true }); // clear it
  await central.close();
});

test('broker down when the agent starts: it starts anyway, results wait in the outbox and go out on connect', async (t) => {
  const station = newStation('down');
  const prefix = prefixOf(station);
  const proxy = await proxyFor(t);
  proxy.refuse = true;
  const central = await listen(t, [prefix + 'inspection']);
  const { pub } = publisher(t, { url: proxy.url, station });
  await pub.start();
  for (let i = 0; i < 5; i++) assert.equal((await pub.publishInspection(part(station, i))).durable, true);
  assert.equal(pub.stats().connected, false);
  assert.equal(pub.stats().outbox.pending, 5);
  assert.equal(inspections(central.msgs).length, 0);

  proxy.refuse = false;
  await waitFor(() => inspections(central.msgs).length >= 5 && pub.stats().outbox.pending === 0, 'the backlog');
  assert.deepEqual(inspections(central.msgs).map((m) => m.body.partId), [0, 1, 2, 3, 4].map((i) => `${station}-b1-${i}`));
  assert.ok(inspections(central.msgs).every((m) => m.body.replayed === false), 'first sends are not replays');
  await pub.stop();
  await central.close();
  await proxy.close();
});

test('outbox full while the broker is away: the oldest are dropped, and the loss is reported by alarm once it is back', async (t) => {
  const station = newStation('full');
  const prefix = prefixOf(station);
  const proxy = await proxyFor(t);
  proxy.refuse = true;
  const central = await listen(t, [prefix + 'inspection', prefix + 'alarm']);
  const { pub } = publisher(t, { url: proxy.url, station, outbox: { maxBytes: 8000 } });
  await pub.start();
  const N = 30;
  for (let i = 0; i < N; i++) assert.equal((await pub.publishInspection(part(station, i))).durable, true);
  const dropped = pub.stats().outbox.dropped;
  assert.ok(dropped > 0 && pub.stats().outbox.pending < N, `some dropped (${dropped})`);
  assert.equal(pub.stats().outbox.healthy, false, 'above the high-water mark');

  proxy.refuse = false;
  const drops = (): Msg[] => central.msgs.filter((m) => m.topic.endsWith('/alarm') && m.body.kind === 'outbox_drop');
  await waitFor(
    () => (drops().at(-1)?.body.data as { totalDropped?: number } | undefined)?.totalDropped === pub.stats().outbox.dropped && pub.stats().outbox.pending === 0,
    'an alarm accounting for every dropped record',
  );
  for (const m of drops()) {
    valid(AlarmMessageSchema, m.body);
    assert.equal(m.body.severity, 'critical');
    assert.match(String(m.body.message), /result\(s\) dropped from the outbox \(outbox full\)/);
  }
  // What survived is the newest, in order, with no gap: the oldest went first.
  const ids = inspections(central.msgs).map((m) => m.body.partId);
  const first = N - ids.length;
  assert.deepEqual(ids, Array.from({ length: ids.length }, (_, i) => `${station}-b1-${first + i}`));
  assert.ok(first > 0);
  t.diagnostic(`${N} results into an 8000-byte outbox: ${ids.length} kept, ${pub.stats().outbox.dropped} records dropped (alarms included), ${drops().length} loss alarm(s)`);
  await pub.stop();
});

test('lost PUBACKs: after the reconnect the unacked are re-published flagged replayed; dedup by id leaves each once', async (t) => {
  const station = newStation('puback');
  const prefix = prefixOf(station);
  const proxy = await proxyFor(t);
  const central = await listen(t, [prefix + 'inspection']);
  const { pub } = publisher(t, { url: proxy.url, station });
  await pub.start();
  await pub.whenConnected();
  for (let i = 0; i < 3; i++) await pub.publishInspection(part(station, i));
  await waitFor(() => inspections(central.msgs).length === 3 && pub.stats().outbox.pending === 0, 'the first three acked');

  // The broker gets the next four and forwards them, but its PUBACKs never reach the agent.
  proxy.blockDown = true;
  for (let i = 3; i < 7; i++) await pub.publishInspection(part(station, i));
  await waitFor(() => inspections(central.msgs).length === 7 && pub.stats().inflight === 4, 'four delivered, unacked');
  assert.equal(pub.stats().outbox.pending, 4);
  proxy.cut();
  proxy.blockDown = false;

  await waitFor(() => inspections(central.msgs).length === 11 && pub.stats().outbox.pending === 0, 'the replays');
  const got = inspections(central.msgs);
  const ids = got.map((m) => m.body.partId as string);
  assert.deepEqual(ids, [0, 1, 2, 3, 4, 5, 6, 3, 4, 5, 6].map((i) => `${station}-b1-${i}`));
  assert.deepEqual(got.map((m) => m.body.replayed), [false, false, false, false, false, false, false, true, true, true, true]);
  for (const m of got) valid(InspectionMessageSchema, m.body);
  assert.deepEqual([...new Set(ids)], [0, 1, 2, 3, 4, 5, 6].map((i) => `${station}-b1-${i}`));
  assert.equal(pub.stats().replayed, 4);
  assert.equal(pub.stats().disconnects, 1);
  await pub.stop();
  await central.close();
  await proxy.close();
});

test('broker stopped and restarted mid-stream: every result arrives; duplicates are flagged replayed', async (t) => {
  const station = newStation('restart');
  const prefix = prefixOf(station);
  // The central system keeps a persistent session, so the broker queues for it while it is away.
  const central = await listen(t, [prefix + 'inspection'], { clientId: `central-${station}`.slice(0, 23), clean: false });
  const { pub } = publisher(t, { url: broker.url, station });
  await pub.start();
  await pub.whenConnected();
  const N = 60;
  const sent: Promise<unknown>[] = [];
  for (let i = 0; i < 20; i++) sent.push(pub.publishInspection(part(station, i)));
  await Promise.all(sent);
  await broker.stop();
  for (let i = 20; i < 40; i++) assert.equal((await pub.publishInspection(part(station, i))).durable, true);
  await broker.restart();
  for (let i = 40; i < N; i++) await pub.publishInspection(part(station, i));

  const unique = (): Set<unknown> => new Set(inspections(central.msgs).map((m) => m.body.partId));
  await waitFor(() => unique().size === N && pub.stats().outbox.pending === 0, `all ${N} results`);
  const got = inspections(central.msgs);
  const firstSeen: string[] = [];
  const first = new Map<string, Msg>();
  for (const m of got) {
    valid(InspectionMessageSchema, m.body);
    const id = m.body.partId as string;
    const earlier = first.get(id);
    // A second copy is the agent's replay (flagged replayed), or the broker re-delivering the
    // same message to the central client after its restart (QoS 1 on that leg too: DUP set by
    // Mosquitto, not by aedes, but the copy is identical). Either way the consumer dedups by id.
    if (earlier) assert.ok(m.body.replayed === true || m.packet.dup || isDeepStrictEqual(m.body, earlier.body), `the second copy of ${id} is a replay or a re-delivery`);
    else {
      firstSeen.push(id);
      first.set(id, m);
    }
  }
  assert.deepEqual(firstSeen, Array.from({ length: N }, (_, i) => `${station}-b1-${i}`), 'first copies in order');
  assert.ok(pub.stats().disconnects >= 1);
  t.diagnostic(`${got.length} messages for ${N} results (${got.length - N} duplicates); ${got.filter((m) => m.body.replayed).length} copies flagged replayed`);
  await pub.stop();
  await central.close();
});

test('agent crash with unacked results: the next process on the same stateDir re-publishes them, flagged replayed', async (t) => {
  const station = newStation('crash');
  const prefix = prefixOf(station);
  const dir = stateDir();
  const proxy = await proxyFor(t);
  const central = await listen(t, [prefix + 'inspection', prefix + 'status']);
  const src = (f: string): string => JSON.stringify(pathToFileURL(resolve('src', f)).href);
  const childFile = join(dir, 'agent-child.mts');
  // A separate process, killed with SIGKILL: nothing of it runs after the "crash".
  writeFileSync(
    childFile,
    `import { MqttPublisher } from ${src('publish/mqtt.ts')};
import { SystemClock } from ${src('clock.ts')};
import { silentLogger } from ${src('log.ts')};
const [url, stateDir, station, n] = process.argv.slice(2);
const pub = new MqttPublisher({
  cfg: { url, prefix: '', clientId: '', protocolVersion: 4, keepalive: 30, embeddedPort: 0 },
  station: { line: 'itest', id: station }, stateDir, clock: new SystemClock(), log: silentLogger, reconnectPeriodMs: 100,
});
await pub.start();
if (!(await pub.whenConnected(10000))) process.exit(2);
console.log('connected');
process.stdin.once('data', async () => {
  for (let i = 0; i < Number(n); i++) {
    const t0 = 1000000000n;
    const r = await pub.publishInspection({ id: station + '-b1-' + i, station, seq: i, trigger: 'interval', triggeredAt: new Date().toISOString(),
      t: { triggerNs: t0, decidedNs: t0 + 5000000n }, failSafe: false, action: 'pass', verdict: { verdict: 'pass', score: 0.1, threshold: 0.5, defects: [] } });
    if (!r.durable) process.exit(3);
  }
  while (pub.stats().inflight < Number(n)) await new Promise((r) => setTimeout(r, 10));
  console.log('sent ' + pub.stats().inflight);
});
`,
  );
  const child = spawn(process.execPath, ['--import', 'tsx', childFile, proxy.url, dir, station, '6'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    await waitFor(() => out.includes('connected'), `the child to connect (output: ${out})`);
    await waitFor(() => statuses(central.msgs).some((m) => m.body.state === 'online'), 'the child online');
    // What the child sends from now on never reaches the broker: sent, never acknowledged.
    proxy.blockUp = true;
    child.stdin.write('go\n');
    await waitFor(() => out.includes('sent 6'), 'six results durable and in flight');
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
  await waitFor(() => statuses(central.msgs).at(-1)?.body.state === 'offline', 'the Last Will of the dead agent');
  assert.equal(inspections(central.msgs).length, 0, 'nothing reached the broker before the crash');

  proxy.blockUp = false;
  const { pub } = publisher(t, { url: broker.url, station, dir });
  await pub.start();
  await waitFor(() => inspections(central.msgs).length >= 6 && pub.stats().outbox.pending === 0, 'the recovered results');
  const got = inspections(central.msgs);
  assert.deepEqual(got.map((m) => m.body.partId), [0, 1, 2, 3, 4, 5].map((i) => `${station}-b1-${i}`));
  assert.ok(got.every((m) => m.body.replayed === true), 'recovered records are flagged replayed');
  for (const m of got) valid(InspectionMessageSchema, m.body);
  assert.equal(pub.stats().replayed, 6);
  await pub.stop();
  await central.close();
  await proxy.close();
});

test('credentials never reach the log or the stats; an unreadable TLS file stops start() with the fix', async (t) => {
  const station = newStation('secret');
  const url = broker.url.replace('mqtt://', 'mqtt://agent:url-s3cret@');
  const { pub, log } = publisher(t, { url, station, cfg: { username: 'agent', password: 'hunter2-pw' } });
  await pub.start();
  assert.equal(await pub.whenConnected(), true);
  await pub.publishInspection(part(station, 0));
  await pub.stop();
  const text = JSON.stringify(log.records) + JSON.stringify(pub.stats());
  assert.ok(!text.includes('hunter2-pw') && !text.includes('url-s3cret'), 'no password in logs or stats');
  assert.ok(log.records.some((r) => r.msg === 'mqtt connecting' && r.username === 'agent'));
  assert.match(pub.stats().url, /\*\*\*@/);

  const { pub: tls } = publisher(t, { url: broker.url.replace('mqtt://', 'mqtts://'), station: newStation('tls'), cfg: { ca: '/nonexistent/ca.pem' } });
  const { pub: typo } = publisher(t, { url: 'mqqt://127.0.0.1:1883', station: newStation('typo') });
  await assert.rejects(typo.start(), /mqtt\.url 'mqqt:\/\/127\.0\.0\.1:1883' is not a broker URL: use mqtt:\/\/host:1883/);
  await assert.rejects(tls.start(), /mqtt\.ca: cannot read '\/nonexistent\/ca\.pem'.*point mqtt\.ca at the CA certificate \(PEM\)/);
});

test('embedded broker: takes the next free port when the configured one is busy; speaks MQTT 3.1.1', async (t) => {
  const busy = createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
  const taken = (busy.address() as { port: number }).port;
  try {
    await assert.rejects(startEmbeddedBroker({ port: taken, tryNextPorts: false }), /cannot listen.*set mqtt\.embeddedPort/);
    const b = cleanup(t, await startEmbeddedBroker({ port: taken }), (x) => x.close());
    assert.notEqual(b.port, taken);
    assert.equal(b.url, `mqtt://127.0.0.1:${b.port}`);
    const station = newStation('embedded');
    const sub = await mqtt.connectAsync(b.url, { protocolVersion: 4 });
    let ended: Promise<void> | undefined;
    const endSub = (): Promise<void> => (ended ??= sub.endAsync(true));
    cleanup(t, sub, endSub);
    const got: string[] = [];
    sub.on('message', (_t, p) => got.push(JSON.parse(p.toString()).partId));
    await sub.subscribeAsync(prefixOf(station) + 'inspection', { qos: 1 });
    const { pub } = publisher(t, { url: b.url, station });
    await pub.start();
    await pub.publishInspection(part(station, 0, 'reject'));
    await waitFor(() => got.length === 1, 'the inspection through the embedded broker');
    assert.equal(got[0], `${station}-b1-0`);
    await pub.stop();
    await endSub();
    await b.close();
  } finally {
    await new Promise<void>((r) => busy.close(() => r()));
  }
});
