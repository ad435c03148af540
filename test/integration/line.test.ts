// The whole loop with real parts: the synthetic camera, the bundled ONNX model in worker threads,
// the sim GPIO binding, and a real MQTT broker (Mosquitto when installed, else in-process).
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import sharp from 'sharp';
import { Agent } from '../../src/agent.js';
import { SystemClock, nsToMs } from '../../src/clock.js';
import { parseConfig } from '../../src/config/load.js';
import { SimGpio } from '../../src/gpio/sim.js';
import { renderFilmFrame } from '../../src/camera/synthetic.js';
import { memoryLogger } from '../../src/log.js';
import type { GroundTruth, Part } from '../../src/part.js';
import { jpegStatus } from '../../src/native/jpeg.js';
import { startTestBroker } from '../helpers/broker.js';

type Broker = Awaited<ReturnType<typeof startTestBroker>>;
let broker: Broker;

before(async () => {
  broker = await startTestBroker();
});
after(async () => {
  await broker.stop();
});

interface Collected {
  messages: Map<string, Record<string, unknown>>;
  status: Record<string, unknown>[];
  client: mqtt.MqttClient;
}

async function subscribe(prefix: string): Promise<Collected> {
  const client = await mqtt.connectAsync(broker.url, { clientId: `t-${process.pid}-${Date.now()}` });
  const c: Collected = { messages: new Map(), status: [], client };
  client.on('message', (topic, payload) => {
    const msg = JSON.parse(payload.toString()) as Record<string, unknown>;
    if (topic === `${prefix}inspection`) c.messages.set(msg.partId as string, msg);
    if (topic === `${prefix}status`) c.status.push(msg);
  });
  await client.subscribeAsync(`${prefix}#`, { qos: 1 });
  return c;
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function rig(overrides: Record<string, unknown>) {
  const stateDir = mkdtempSync(join(tmpdir(), 'ls-line-'));
  const station = `st${process.pid}${Math.floor(Math.random() * 1e6)}`;
  const cfg = parseConfig({
    station: { line: 'it', id: station, stateDir },
    model: { path: 'models/film-demo' },
    line: { travelMs: 400, pulseMs: 30, marginMs: 50, maxInFlight: 32 },
    gpio: { backend: 'sim' },
    mqtt: { url: broker.url },
    http: { enabled: false },
    ...overrides,
  });
  const clock = new SystemClock();
  const gpio = new SimGpio({ clock });
  const log = memoryLogger();
  const agent = new Agent(cfg, { log, clock, gpio });
  const decided: Part[] = [];
  // The loop lets a part's frame go after 'decided': listeners take what they keep then.
  const truth = new Map<string, GroundTruth | undefined>();
  agent.bus.on('decided', (p) => {
    decided.push(p);
    truth.set(p.id, p.frame?.truth);
  });
  return { cfg, agent, gpio, decided, truth, prefix: `linesight/it/${station}/`, log };
}

const DIVERT = { chip: 'sim0', line: 1 };

/**
 * Pulses belong to the right parts: one rising edge per diverted part, in gate order, never
 * before its gate time and before the next part (of any verdict) reaches the gate. How late within
 * that window is timing, measured by `npm run bench`, not asserted here.
 */
function checkPulses(gpio: SimGpio, parts: Part[]): void {
  const rises = gpio.history(DIVERT).slice(1).filter((h) => h.value === 1).map((h) => h.timeNs);
  const byGate = [...parts].sort((a, b) => (a.t.gateNs! < b.t.gateNs! ? -1 : 1));
  const diverted = byGate.filter((p) => p.action === 'divert');
  assert.equal(rises.length, diverted.length, `${rises.length} divert pulses for ${diverted.length} diverted parts`);
  diverted.forEach((p, i) => {
    const gate = p.t.gateNs!;
    const next = byGate[byGate.indexOf(p) + 1]?.t.gateNs;
    const late = nsToMs(rises[i]! - gate);
    assert.ok(late >= -1, `pulse for ${p.id} came ${-late} ms before its gate time`);
    if (next !== undefined) assert.ok(rises[i]! < next, `pulse for ${p.id} came ${late.toFixed(1)} ms late, after the next part reached the gate`);
  });
}

test('free-run demo line: every part is published with its verdict, rejects and fail-safes pulse the diverter', async () => {
  const r = rig({ camera: { source: 'synthetic', synthetic: { fps: 8, defectRate: 0.5, seed: 7 } }, trigger: { mode: 'freerun' } });
  const sub = await subscribe(r.prefix);
  try {
    await r.agent.start();
    await until(() => r.decided.length >= 24, 30_000, '24 parts');
    await r.agent.stop();
    await until(() => r.decided.every((p) => sub.messages.has(p.id)), 10_000, 'all inspections over MQTT');

    const parts = r.decided;
    assert.ok(parts.some((p) => p.verdict?.verdict === 'reject'), 'some parts rejected');
    assert.ok(parts.some((p) => p.verdict?.verdict === 'pass'), 'some parts passed');
    for (const p of parts) {
      const m = sub.messages.get(p.id)!;
      assert.equal(m.action, p.action, `action of ${p.id}`);
      assert.equal(m.failSafe, p.failSafe);
      assert.equal(m.verdict, p.failSafe && !p.verdict ? null : p.verdict?.verdict ?? null);
      assert.equal((m.model as { name: string }).name, 'film-demo');
      assert.equal(m.provider, 'cpu');
      // A part is never passed without a verdict.
      if (p.action === 'pass') assert.equal(p.verdict?.verdict, 'pass');
      if (p.verdict?.verdict === 'reject') assert.equal(p.action, 'divert');
    }
    assert.equal(new Set(parts.map((p) => p.id)).size, parts.length, 'part ids unique');
    checkPulses(r.gpio, parts);
    const states = sub.status.map((s) => s.state);
    assert.ok(states.includes('online'), `status online seen (${states.join(',')})`);
    assert.equal(states.at(-1), 'offline');
    // Ground truth from the synthetic film: the bundled model must be useful on it.
    const judged = parts.filter((p) => p.verdict && r.truth.get(p.id));
    const correct = judged.filter((p) => p.verdict!.verdict === r.truth.get(p.id)!.verdict).length;
    assert.ok(correct / judged.length >= 0.7, `accuracy ${correct}/${judged.length}`);
    // The ready output was high while running and is low after stop.
    assert.equal(r.gpio.level({ chip: 'sim0', line: 2 }), 0);
    assert.ok(r.gpio.history({ chip: 'sim0', line: 2 }).some((h) => h.value === 1));
  } finally {
    await r.agent.stop();
    await sub.client.endAsync();
  }
});

test('replay folder with a corrupt image: that part is diverted bad_frame and the loop goes on', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ls-replay-'));
  mkdirSync(join(dir, 'good'));
  for (let i = 0; i < 4; i++) {
    const f = renderFilmFrame({ width: 320, height: 240, seed: 3, defectRate: 0 }, i);
    await sharp(Buffer.from(f.data), { raw: { width: f.width, height: f.height, channels: 3 } }).png().toFile(join(dir, 'good', `${i}.png`));
  }
  writeFileSync(join(dir, 'good', '2b-corrupt.jpg'), Buffer.from('this is not a jpeg at all'));
  const r = rig({
    camera: { source: 'replay', replay: { dir, loop: false, order: 'sorted' } },
    trigger: { mode: 'interval', intervalMs: 120 },
  });
  const sub = await subscribe(r.prefix);
  try {
    await r.agent.start();
    await until(() => r.decided.length >= 5, 20_000, '5 parts');
    await r.agent.stop();
    await until(() => r.decided.slice(0, 5).every((p) => sub.messages.has(p.id)), 10_000, 'inspections over MQTT');
    const first5 = r.decided.slice(0, 5);
    const bad = first5.filter((p) => p.reason === 'bad_frame');
    assert.equal(bad.length, 1, first5.map((p) => `${p.id}:${p.action}:${p.reason ?? p.verdict?.verdict}`).join(' '));
    assert.match(bad[0]!.detail!, /2b-corrupt\.jpg/);
    assert.equal(bad[0]!.action, 'divert');
    const msg = sub.messages.get(bad[0]!.id)!;
    assert.equal(msg.failSafe, true);
    assert.equal(msg.reason, 'bad_frame');
    // The parts after the corrupt one got real verdicts.
    assert.ok(first5.filter((p) => !p.failSafe).length === 4);
    checkPulses(r.gpio, r.decided);
  } finally {
    await r.agent.stop();
    await sub.client.endAsync();
  }
});

test('replay decodeIn worker: the same verdicts as decodeIn main; a corrupt JPEG is diverted bad_frame and counted; pixels reach the listeners', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ls-replay-'));
  mkdirSync(join(dir, 'parts'));
  for (let i = 0; i < 6; i++) {
    const f = renderFilmFrame({ width: 320, height: 240, seed: 7, defectRate: i % 2 }, i);
    await sharp(Buffer.from(f.data), { raw: { width: f.width, height: f.height, channels: 3 } }).jpeg({ quality: 92 }).toFile(join(dir, 'parts', `${i}.jpg`));
  }
  const good = await sharp(join(dir, 'parts', '0.jpg')).toBuffer();
  writeFileSync(join(dir, 'parts', '3b-truncated.jpg'), good.subarray(0, Math.floor(good.length / 2)));
  await sharp({ create: { width: 320, height: 240, channels: 3, background: '#8a8a8a' } }).png().toFile(join(dir, 'parts', '9-png.png'));
  const files = 8;

  const run = async (decodeIn: 'main' | 'worker') => {
    const r = rig({
      camera: { source: 'replay', replay: { dir, loop: false, order: 'sorted', colour: 'gray', decodeIn } },
      trigger: { mode: 'interval', intervalMs: 100 },
      // The operator page listens too: a bad part's frame (never decoded in worker mode) has no pixels.
      http: { enabled: true, host: '127.0.0.1', port: 0 },
    });
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(w.message);
    process.on('warning', onWarning);
    // The frame as the listeners (archive, operator page) get it: the loop lets it go after 'decided'.
    const seen = new Map<string, { part: Part; width: number; height: number; pixels: number }>();
    r.agent.bus.on('decided', (p) => seen.set(p.frame?.file ?? `(no frame) ${p.detail}`, { part: p, width: p.frame?.width ?? 0, height: p.frame?.height ?? 0, pixels: p.frame?.data.length ?? 0 }));
    const sub = await subscribe(r.prefix);
    try {
      await r.agent.start();
      await until(() => r.decided.length >= files, 20_000, `${files} parts`);
      const metrics = await r.agent.metrics.text();
      await r.agent.stop();
      await until(() => r.decided.slice(0, files).every((p) => sub.messages.has(p.id)), 10_000, 'inspections over MQTT');
      return { seen, sub, metrics, log: r.log, warnings };
    } finally {
      process.off('warning', onWarning);
      await r.agent.stop();
      await sub.client.endAsync();
    }
  };
  const main = await run('main');
  const worker = await run('worker');
  for (const [name, m] of [['main', main], ['worker', worker]] as const) {
    const bad = [...m.seen.values()].filter((s) => s.part.reason === 'bad_frame');
    assert.equal(bad.length, 1, `${name}: ${[...m.seen.keys()].join(' ')}`);
    assert.match(bad[0]!.part.detail!, /3b-truncated\.jpg/);
    assert.match(bad[0]!.part.detail!, /premature end of JPEG/i);
    assert.equal(bad[0]!.part.action, 'divert');
    assert.equal(m.sub.messages.get(bad[0]!.part.id)!.reason, 'bad_frame');
    assert.match(m.metrics, /linesight_failsafe_total\{reason="bad_frame"\} 1\n/);
    assert.match(m.metrics, /linesight_camera_errors 1\n/, `${name}: the camera counts the bad frame`);
    // No listener (operator page, archive) choked on the bad part's frame.
    assert.deepEqual(m.warnings.filter((w) => /bus listener/.test(w)), [], name);
    assert.ok(!m.log.records.some((l) => /encode failed|archive write failed/.test(String(l.msg))), `${name}: no failed encode`);
  }
  // Every other part has a verdict, the same either way, and its pixels for the archive and the page.
  const verdicts = (m: typeof main) => [...m.seen].filter(([, s]) => !s.part.failSafe).map(([file, s]) => `${file.split('/').pop()}:${s.part.verdict!.verdict}`).sort();
  assert.equal(verdicts(main).length, files - 1);
  assert.deepEqual(verdicts(worker), verdicts(main));
  assert.ok(verdicts(main).some((v) => v.endsWith('reject')) && verdicts(main).some((v) => v.endsWith('pass')), verdicts(main).join(' '));
  // Scores close too: the worker's decode (libjpeg's luma) and resize (native, sharp's kernel) are
  // not the main thread's sharp pipeline, but near it (here within 2.3 % of the threshold).
  const scores = (m: typeof main) => new Map([...m.seen].filter(([, s]) => !s.part.failSafe).map(([file, s]) => [file.split('/').pop()!, s.part.verdict!]));
  for (const [file, v] of scores(worker)) {
    const ref = scores(main).get(file)!;
    assert.ok(Math.abs(v.score - ref.score) <= 0.05 * Math.max(ref.score, ref.threshold), `${file}: score ${v.score} in the worker, ${ref.score} on the main thread`);
  }
  // film-demo takes 160x120 grey: the worker decodes these 320x240 JPEGs whole (jpegDecodeFit: twice
  // the input), shrinks them to the model's size as the main path decodes them, and resizes them
  // itself; the PNG is decoded on the main thread at the model's size. Same frames in both modes.
  for (const [file, s] of worker.seen) {
    if (s.part.failSafe) continue;
    assert.deepEqual([s.width, s.height, s.pixels], [160, 120, 160 * 120], file);
    const ref = main.seen.get(file)!;
    assert.deepEqual([s.width, s.height], [ref.width, ref.height], file);
  }
  if (jpegStatus().available) assert.ok(worker.log.records.some((l) => /JPEGs only/.test(String(l.msg))), 'the PNG was decoded on the main thread, said once');
});

test('cmd/trigger over MQTT makes a part and replies with its id', async () => {
  const r = rig({ trigger: { mode: 'command' } });
  const sub = await subscribe(r.prefix);
  try {
    await r.agent.start();
    // Commands are accepted once the broker granted the subscription.
    await until(() => r.agent.status().mqtt?.commandsReady === true, 10_000, 'command subscription');
    const replies: Record<string, unknown>[] = [];
    sub.client.on('message', (topic, payload) => {
      if (topic.startsWith(`${r.prefix}reply/`)) replies.push(JSON.parse(payload.toString()));
    });
    await sub.client.publishAsync(`${r.prefix}cmd/trigger`, JSON.stringify({ requestId: 'r1' }), { qos: 1 });
    await until(() => replies.length > 0 && r.decided.length > 0, 10_000, 'reply and part');
    assert.equal(replies[0]!.ok, true);
    const partId = (replies[0]!.result as { partId: string }).partId;
    assert.equal(partId, r.decided[0]!.id);
    assert.equal(r.decided[0]!.trigger, 'command');
    await until(() => sub.messages.has(partId), 10_000, 'inspection of the commanded part');
  } finally {
    await r.agent.stop();
    await sub.client.endAsync();
  }
});

test('a model whose inputs disagree with its manifest is refused at start with a message naming it', async () => {
  const { readFileSync, copyFileSync } = await import('node:fs');
  const dir = mkdtempSync(join(tmpdir(), 'ls-badmodel-'));
  copyFileSync('models/film-demo/model.onnx', join(dir, 'model.onnx'));
  const manifest = JSON.parse(readFileSync('models/film-demo/model.json', 'utf8'));
  manifest.input.width = manifest.input.width * 2;
  writeFileSync(join(dir, 'model.json'), JSON.stringify(manifest));
  const r = rig({ model: { path: dir } });
  await assert.rejects(r.agent.start(), (err: Error) => /width|expects|mismatch/i.test(err.message) && err.message.includes(String(manifest.input.width)));
});

test('a part in flight when the agent dies is reported after the restart as fail-safe crash', async () => {
  const { TriggerJournal } = await import('../../src/line/journal.js');
  const r = rig({ trigger: { mode: 'command' } });
  // A previous run (boot b0) journaled a trigger and died before deciding it.
  const prev = new TriggerJournal(join(r.cfg.station.stateDir, 'journal'), { bootId: 'b0' });
  await prev.open();
  await prev.triggered({ id: `${r.cfg.station.id}-b0-000042`, seq: 42, station: r.cfg.station.id, trigger: 'gpio', triggeredAt: new Date().toISOString(), t: { triggerNs: 0n }, failSafe: false });
  // No close(): the process "died".
  const sub = await subscribe(r.prefix);
  try {
    await r.agent.start();
    const id = `${r.cfg.station.id}-b0-000042`;
    await until(() => sub.messages.has(id), 10_000, 'the crashed part');
    const m = sub.messages.get(id)!;
    assert.equal(m.action, 'divert');
    assert.equal(m.failSafe, true);
    assert.equal(m.reason, 'crash');
    assert.equal(m.verdict, null);
  } finally {
    await r.agent.stop();
    await sub.client.endAsync();
  }
  // Reported once: a second start of the same station finds nothing left to recover.
  const again = new Agent(r.cfg, { log: memoryLogger(), gpio: new SimGpio({ clock: new SystemClock() }) });
  const sub2 = await subscribe(r.prefix);
  try {
    await again.start();
    await new Promise((res) => setTimeout(res, 500));
    assert.equal([...sub2.messages.values()].filter((m) => m.reason === 'crash').length, 0);
  } finally {
    await again.stop();
    await sub2.client.endAsync();
  }
});
