import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeClock, msToNs } from '../../src/clock.js';
import { Bus, type Alarm } from '../../src/bus.js';
import { DivertScheduler } from '../../src/line/divert.js';
import { InspectionLoop } from '../../src/line/loop.js';
import { PartIds } from '../../src/line/part-id.js';
import { InferenceError } from '../../src/inference/types.js';
import { silentLogger } from '../../src/log.js';
import type { Part } from '../../src/part.js';
import { FakeInspector, FakeSource, FrameError, RecordingOutput, flush, frame } from '../helpers/fakes.js';

function rig(lineOverrides: Partial<{ travelMs: number; pulseMs: number; marginMs: number; maxInFlight: number }> = {}) {
  const clock = new FakeClock();
  const bus = new Bus();
  const out = new RecordingOutput(clock);
  const line = { distanceMm: 0, speedMmPerS: 1, travelMs: 500, pulseMs: 50, marginMs: 20, maxInFlight: 4, ...lineOverrides };
  const divert = new DivertScheduler({ clock, output: out, pulseMs: line.pulseMs, log: silentLogger });
  const inspector = new FakeInspector();
  const source = new FakeSource();
  const loop = new InspectionLoop({ clock, log: silentLogger, bus, source, inspector, divert, ids: new PartIds('st1', 'b1'), station: 'st1', line });
  const decided: Part[] = [];
  const alarms: Alarm[] = [];
  bus.on('decided', (p) => decided.push(p));
  bus.on('alarm', (a) => alarms.push(a));
  loop.start();
  return { clock, bus, out, divert, inspector, source, loop, decided, alarms };
}

test('a pass verdict passes the part and never pulses the diverter', async () => {
  const r = rig();
  const p = r.loop.onTrigger({ kind: 'interval', timeNs: r.clock.nowNs() });
  await flush();
  r.inspector.answer('pass');
  await flush();
  r.clock.advance(1000);
  assert.equal(p.action, 'pass');
  assert.equal(p.failSafe, false);
  assert.equal(r.decided.length, 1);
  assert.deepEqual(r.out.edges, []);
});

test('a reject pulses the diverter at trigger + travel for the pulse width', async () => {
  const r = rig();
  const t0 = r.clock.nowNs();
  const p = r.loop.onTrigger({ kind: 'gpio', timeNs: t0 });
  await flush();
  r.clock.advance(30);
  r.inspector.answer('reject');
  await flush();
  assert.equal(p.action, 'divert');
  assert.deepEqual(r.out.edges, []); // not before the gate time
  r.clock.advance(1000);
  assert.deepEqual(r.out.edges, [
    { value: 1, timeNs: t0 + msToNs(500) },
    { value: 0, timeNs: t0 + msToNs(550) },
  ]);
});

test('several parts in flight are actuated in FIFO order at their own gate times', async () => {
  const r = rig();
  const t0 = r.clock.nowNs();
  const parts = [0, 100, 200].map((ms) => {
    r.clock.advance(ms === 0 ? 0 : 100);
    return r.loop.onTrigger({ kind: 'gpio', timeNs: r.clock.nowNs() });
  });
  await flush();
  assert.equal(r.loop.undecidedCount(), 3);
  r.inspector.answer('reject');
  r.inspector.answer('pass');
  r.inspector.answer('reject');
  await flush();
  r.clock.advance(2000);
  assert.deepEqual(parts.map((p) => p.action), ['divert', 'pass', 'divert']);
  assert.deepEqual(r.out.edges.map((e) => [e.value, Number((e.timeNs - t0) / 1_000_000n)]), [
    [1, 500], [0, 550], [1, 700], [0, 750],
  ]);
  assert.equal(r.loop.inFlightCount(), 0);
});

test('overlapping pulses merge: the gate stays open for both parts', async () => {
  const r = rig({ pulseMs: 80 });
  const t0 = r.clock.nowNs();
  r.loop.onTrigger({ kind: 'gpio', timeNs: t0 });
  r.clock.advance(50);
  r.loop.onTrigger({ kind: 'gpio', timeNs: r.clock.nowNs() });
  await flush();
  r.inspector.answer('reject');
  r.inspector.answer('reject');
  await flush();
  r.clock.advance(1000);
  assert.deepEqual(r.out.edges.map((e) => [e.value, Number((e.timeNs - t0) / 1_000_000n)]), [[1, 500], [0, 630]]);
});

test('no verdict by the deadline: diverted fail-safe (late), later verdict only reported', async () => {
  const r = rig();
  const t0 = r.clock.nowNs();
  const p = r.loop.onTrigger({ kind: 'gpio', timeNs: t0 });
  await flush();
  r.clock.advance(479);
  assert.equal(p.action, undefined);
  r.clock.advance(1); // deadline = 500 - 20 ms
  assert.equal(p.action, 'divert');
  assert.equal(p.failSafe, true);
  assert.equal(p.reason, 'late');
  assert.ok(r.alarms.some((a) => a.kind === 'late' && a.partId === p.id));
  const late: Part[] = [];
  r.bus.on('lateVerdict', (x) => late.push(x));
  r.inspector.answer('pass');
  await flush();
  assert.equal(p.action, 'divert', 'a late pass must not undo the divert');
  assert.equal(late.length, 1);
  assert.equal(r.decided.length, 1, 'decided exactly once');
  r.clock.advance(100);
  assert.deepEqual(r.out.edges.map((e) => Number((e.timeNs - t0) / 1_000_000n)), [500, 550]);
});

test('a corrupt frame diverts that part with bad_frame and the loop goes on', async () => {
  const r = rig();
  r.source.next.push(new FrameError('corrupt.jpg: unsupported image format', 'bad_frame'));
  const bad = r.loop.onTrigger({ kind: 'interval', timeNs: r.clock.nowNs() });
  const good = r.loop.onTrigger({ kind: 'interval', timeNs: r.clock.nowNs() });
  await flush();
  assert.equal(bad.reason, 'bad_frame');
  assert.match(bad.detail!, /corrupt\.jpg/);
  r.inspector.answer('pass');
  await flush();
  assert.equal(good.action, 'pass');
});

test('a frame whose data disagrees with its size is diverted bad_frame', async () => {
  const r = rig();
  const f = frame(1, r.clock.nowNs());
  f.width = 10; // data is 16 bytes, 10x4 expects 40
  const p = r.loop.onTrigger({ kind: 'freerun', timeNs: r.clock.nowNs(), frame: f });
  await flush();
  assert.equal(p.reason, 'bad_frame');
});

test('camera failure, model error and worker crash are fail-safe with their reasons', async () => {
  const r = rig();
  r.source.next.push(new FrameError('no frame for 2000 ms', 'camera'));
  const cam = r.loop.onTrigger({ kind: 'gpio', timeNs: r.clock.nowNs() });
  const model = r.loop.onTrigger({ kind: 'gpio', timeNs: r.clock.nowNs() });
  const crash = r.loop.onTrigger({ kind: 'gpio', timeNs: r.clock.nowNs() });
  await flush();
  r.inspector.fail(new InferenceError('output score is NaN', 'model_error'));
  r.inspector.fail(new InferenceError('worker exited with code 1', 'worker_crash'));
  await flush();
  assert.deepEqual([cam.reason, model.reason, crash.reason], ['camera', 'model_error', 'worker_crash']);
  assert.ok([cam, model, crash].every((p) => p.action === 'divert' && p.failSafe));
  assert.ok(r.alarms.some((a) => a.kind === 'worker_crash'));
});

test('overload: parts beyond maxInFlight waiting for a verdict are diverted at once', async () => {
  const r = rig({ maxInFlight: 2 });
  const parts = [1, 2, 3].map(() => r.loop.onTrigger({ kind: 'gpio', timeNs: r.clock.nowNs() }));
  await flush();
  assert.equal(parts[2]!.reason, 'overload');
  assert.equal(parts[2]!.action, 'divert');
  assert.equal(r.inspector.pending.length, 2);
});

test('paused: parts still arriving are diverted, never passed', async () => {
  const r = rig();
  r.loop.pause();
  const p = r.loop.onTrigger({ kind: 'gpio', timeNs: r.clock.nowNs() });
  assert.equal(p.action, 'divert');
  assert.equal(p.reason, 'paused');
  r.loop.resume();
  const q = r.loop.onTrigger({ kind: 'gpio', timeNs: r.clock.nowNs() });
  await flush();
  r.inspector.answer('pass');
  await flush();
  assert.equal(q.action, 'pass');
});

test('a decision after the gate time raises a missed alarm', async () => {
  const r = rig({ travelMs: 0, marginMs: 0 });
  // travel 0: the gate is at the trigger; the deadline timer fires on the next advance.
  const p = r.loop.onTrigger({ kind: 'gpio', timeNs: r.clock.nowNs() - msToNs(10) });
  r.clock.advance(0);
  assert.equal(p.reason, 'late');
  assert.ok(r.alarms.some((a) => a.kind === 'missed' && a.partId === p.id));
});

test('stop diverts every part in flight', async () => {
  const r = rig();
  const p = r.loop.onTrigger({ kind: 'gpio', timeNs: r.clock.nowNs() });
  await flush();
  r.loop.stop();
  assert.equal(p.reason, 'stopping');
  const q = r.loop.onTrigger({ kind: 'gpio', timeNs: r.clock.nowNs() });
  assert.equal(q.reason, 'stopping');
});

test('part ids are unique and carry station and boot id', () => {
  const ids = new PartIds('st1', 'b7');
  assert.equal(ids.next().id, 'st1-b7-000001');
  assert.equal(ids.next().id, 'st1-b7-000002');
});

test('with a native pulse thread, the divert pulse is handed to it at the gate time', async () => {
  const clock = new FakeClock();
  const calls: { atNs: bigint; widthMs: number }[] = [];
  let cancelled = 0;
  let edge: ((on: boolean, t: bigint, error?: string) => void) | undefined;
  const edges: boolean[] = [];
  const errors: Error[] = [];
  const divert = new DivertScheduler({
    clock, pulseMs: 40, log: silentLogger, onEdge: (on) => edges.push(on), onError: (e) => errors.push(e),
    native: { schedule: (atNs, widthMs) => (calls.push({ atNs, widthMs }), true), cancel: () => void cancelled++, onEdge: (cb) => void (edge = cb) },
  });
  const at = clock.nowNs() + msToNs(300);
  assert.equal(divert.schedule(at), true);
  assert.deepEqual(calls, [{ atNs: at, widthMs: 40 }]);
  assert.equal(divert.pending(), 1);
  edge!(true, at);
  edge!(false, at + msToNs(40), 'EIO');
  assert.deepEqual(edges, [true, false]);
  assert.equal(errors.length, 1, 'a failed native write is reported');
  clock.advance(400);
  assert.equal(divert.pending(), 0);
  divert.safeState();
  assert.equal(cancelled, 1);
});

test('the frame is handed to decided listeners, then let go while the part travels to the gate', async () => {
  const r = rig();
  let seen: unknown;
  r.bus.on('decided', (p) => (seen = p.frame));
  const p = r.loop.onTrigger({ kind: 'gpio', timeNs: r.clock.nowNs() });
  await flush();
  assert.ok(p.frame, 'the part holds its frame while it is inspected');
  r.inspector.answer('reject');
  await flush();
  assert.equal(p.action, 'divert');
  assert.ok(seen, 'listeners (archive, operator page) got the frame');
  assert.equal(p.frame, undefined, 'no pixels kept until the gate');
  assert.equal(r.loop.inFlightCount(), 1); // the part itself still travels to the gate
});

test('a frame that arrives after the deadline diverted the part is not kept', async () => {
  const r = rig({ travelMs: 100, marginMs: 20 });
  r.source.hold = true;
  const p = r.loop.onTrigger({ kind: 'gpio', timeNs: r.clock.nowNs() });
  r.clock.advance(90);
  assert.equal(p.reason, 'late');
  r.source.release();
  await flush();
  assert.equal(p.frame, undefined);
  assert.equal(r.inspector.pending.length, 0, 'no inference for a part already diverted');
});

test('an overload storm gives one alarm at once and one summary per 10 s window, each part still decided', async () => {
  const r = rig({ maxInFlight: 1 });
  const first = r.loop.onTrigger({ kind: 'gpio', timeNs: r.clock.nowNs() }); // takes the one slot
  const shed = Array.from({ length: 50 }, () => r.loop.onTrigger({ kind: 'gpio', timeNs: r.clock.nowNs() }));
  assert.ok(shed.every((p) => p.action === 'divert' && p.reason === 'overload'), 'every part diverted');
  let overload = r.alarms.filter((a) => a.kind === 'overload');
  assert.equal(overload.length, 1, 'one alarm, not fifty');
  assert.equal(overload[0]!.partId, shed[0]!.id);
  r.clock.advance(10_000);
  overload = r.alarms.filter((a) => a.kind === 'overload');
  assert.equal(overload.length, 2);
  assert.match(overload[1]!.message, new RegExp(`^49 more part\\(s\\) diverted fail-safe \\(overload\\) within 10 s, ${shed[1]!.id} … ${shed[49]!.id}`));
  r.clock.advance(10_000); // a quiet window: nothing to sum up; the next storm alarms at once again
  assert.equal(r.alarms.filter((a) => a.kind === 'overload').length, 2);
  assert.equal(first.reason, 'late'); // its deadline passed meanwhile: the slot is free
  const holder = r.loop.onTrigger({ kind: 'gpio', timeNs: r.clock.nowNs() });
  const again = r.loop.onTrigger({ kind: 'gpio', timeNs: r.clock.nowNs() });
  assert.equal(again.reason, 'overload');
  assert.equal(r.alarms.filter((a) => a.kind === 'overload').length, 3);
  r.loop.onTrigger({ kind: 'gpio', timeNs: r.clock.nowNs() }); // held back ...
  r.loop.stop(); // ... and reported on stop rather than lost
  const last = r.alarms.filter((a) => a.kind === 'overload').at(-1)!;
  assert.match(last.message, /^1 more part\(s\)/);
  assert.equal(holder.reason, 'stopping');
});
