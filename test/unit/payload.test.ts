import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Value } from '@sinclair/typebox/value';
import type { Part } from '../../src/part.js';
import { alarmPayload, inspectionPayload, replyPayload, resolvePrefix, statusPayload, topics, toJson } from '../../src/publish/payload.js';
import { parseCommand, replyRoute } from '../../src/publish/commands.js';
import {
  AlarmMessageSchema,
  CommandReplySchema,
  InspectionMessageSchema,
  MESSAGE_SCHEMAS,
  StatusMessageSchema,
  schemaFiles,
  schemasDir,
  staleSchemaFiles,
} from '../../src/publish/schemas.js';
import type { TSchema } from '@sinclair/typebox';

const MODEL = { name: 'film-demo', version: '1.2.0', sha256: 'a'.repeat(64) };
const T0 = 5_000_000_000n; // trigger at 5 s monotonic

function valid(schema: TSchema, value: unknown): void {
  const errors = [...Value.Errors(schema, value)].map((e) => `${e.path} ${e.message}`);
  assert.deepEqual(errors, [], 'schema-valid');
}

function judged(): Part {
  return {
    id: 'station1-b7-42',
    station: 'station1',
    seq: 42,
    trigger: 'gpio',
    triggeredAt: '2026-03-01T10:00:00.123Z',
    t: {
      triggerNs: T0,
      frameNs: T0 + 12_345_678n,
      inferStartNs: T0 + 13_000_000n,
      inferEndNs: T0 + 31_500_000n,
      decidedNs: T0 + 32_000_001n,
      gateNs: T0 + 1_500_000_000n,
    },
    verdict: {
      verdict: 'reject',
      score: 0.91,
      threshold: 0.5,
      defects: [{ class: 'scratch', score: 0.88, box: [10, 20, 30, 40], area: 1200 }, { class: 'dent', score: 0.6 }],
      map: { width: 2, height: 1, data: [0.1, 0.9] },
    },
    action: 'divert',
    failSafe: false,
    model: { ...MODEL },
    provider: 'cpu',
    timings: { queueMs: 0.5, preprocessMs: 2.25, inferMs: 14, postprocessMs: 1.125 },
  };
}

test('inspectionPayload: bigint stage times become ms after the trigger; verdict, defects, model, latencies', () => {
  const m = inspectionPayload(judged(), { line: 'line1' });
  valid(InspectionMessageSchema, m);
  assert.equal(m.partId, 'station1-b7-42');
  assert.equal(m.station, 'station1');
  assert.equal(m.line, 'line1');
  assert.equal(m.seq, 42);
  assert.equal(m.trigger, 'gpio');
  assert.equal(m.triggeredAt, '2026-03-01T10:00:00.123Z');
  assert.deepEqual(m.stagesMs, { frame: 12.346, inferStart: 13, inferEnd: 31.5, decided: 32, gate: 1500 });
  assert.equal(m.verdict, 'reject');
  assert.equal(m.score, 0.91);
  assert.equal(m.threshold, 0.5);
  assert.deepEqual(m.defects, [
    { class: 'scratch', score: 0.88, box: [10, 20, 30, 40], area: 1200 },
    { class: 'dent', score: 0.6 },
  ]);
  assert.equal(m.action, 'divert');
  assert.equal(m.failSafe, false);
  assert.equal(m.reason, null);
  assert.equal(m.detail, null);
  assert.deepEqual(m.model, MODEL);
  assert.equal(m.provider, 'cpu');
  assert.deepEqual(m.latencyMs, { frame: 12.346, queue: 0.5, preprocess: 2.25, infer: 14, postprocess: 1.125, total: 32 });
  assert.equal(m.replayed, false);
  assert.equal(m.schemaVersion, 1);
  // The anomaly map stays on the agent: the message is for the central system, not overlays.
  assert.ok(!JSON.stringify(m).includes('"map"'));
  // Nothing in it needs a bigint-aware serialiser.
  assert.doesNotThrow(() => JSON.stringify(m));
});

test('inspectionPayload: explicit timings override the part, replayed is passed through', () => {
  const m = inspectionPayload(judged(), { line: 'L2', timings: { inferMs: 9 }, replayed: true });
  assert.equal(m.latencyMs.infer, 9);
  assert.equal(m.latencyMs.queue, 0.5, 'the rest still come from the part');
  assert.equal(m.replayed, true);
});

test('inspectionPayload: a fail-safe part without a verdict has nulls, not made-up values', () => {
  const part: Part = {
    id: 'station1-b7-43',
    station: 'station1',
    seq: 43,
    trigger: 'freerun',
    triggeredAt: '2026-03-01T10:00:01.000Z',
    t: { triggerNs: T0, frameNs: T0 + 1_000_000n, decidedNs: T0 + 80_000_000n },
    action: 'divert',
    failSafe: true,
    reason: 'late',
    detail: 'no verdict within 80 ms',
  };
  const m = inspectionPayload(part, { line: 'line1' });
  valid(InspectionMessageSchema, m);
  assert.equal(m.verdict, null);
  assert.equal(m.score, null);
  assert.equal(m.threshold, null);
  assert.deepEqual(m.defects, []);
  assert.equal(m.action, 'divert');
  assert.equal(m.failSafe, true);
  assert.equal(m.reason, 'late');
  assert.equal(m.detail, 'no verdict within 80 ms');
  assert.equal(m.model, null);
  assert.equal(m.provider, null);
  assert.deepEqual(m.stagesMs, { frame: 1, inferStart: null, inferEnd: null, decided: 80, gate: null });
  assert.deepEqual(m.latencyMs, { frame: 1, queue: null, preprocess: null, infer: null, postprocess: null, total: 80 });
});

test('inspectionPayload: a part without an action reports what a safe gate does; NaN scores become null', () => {
  const p = judged();
  delete p.action;
  p.verdict = { verdict: 'pass', score: Number.NaN, threshold: 0.5, defects: [] };
  const m = inspectionPayload(p, { line: 'l' });
  valid(InspectionMessageSchema, m);
  assert.equal(m.action, 'pass');
  assert.equal(m.score, null);
  const f = judged();
  delete f.action;
  f.failSafe = true;
  f.reason = 'model_error';
  assert.equal(inspectionPayload(f, { line: 'l' }).action, 'divert');
});

test('status, alarm and reply payloads match their schemas', () => {
  const s = statusPayload(
    { state: 'paused', model: MODEL, provider: 'cuda', agentVersion: '0.1.0', bootId: 'b7', uptimeS: 12.3456 },
    { station: 'station1', line: 'line1', wallMs: Date.UTC(2026, 2, 1) },
  );
  valid(StatusMessageSchema, s);
  assert.equal(s.time, '2026-03-01T00:00:00.000Z');
  assert.equal(s.uptimeS, 12.346);
  const before = statusPayload({ state: 'offline', agentVersion: '0.1.0', bootId: null, uptimeS: 0 }, { station: 's', line: 'l', wallMs: 0 });
  valid(StatusMessageSchema, before);
  assert.equal(before.model, null);
  assert.equal(before.provider, null);

  const a = alarmPayload(
    { id: 'al-1', kind: 'late', severity: 'warning', message: 'part 42 late', partId: 'station1-b7-42', timeMs: 0, data: { lateMs: 12 } },
    { station: 'station1', line: 'line1' },
  );
  valid(AlarmMessageSchema, a);
  assert.deepEqual(a, {
    schemaVersion: 1,
    id: 'al-1',
    kind: 'late',
    severity: 'warning',
    message: 'part 42 late',
    time: '1970-01-01T00:00:00.000Z',
    station: 'station1',
    line: 'line1',
    partId: 'station1-b7-42',
    data: { lateMs: 12 },
    replayed: false,
  });

  const ok = replyPayload('trigger', { ok: true, result: { partId: 'p1' } }, { station: 's', line: 'l', wallMs: 0, requestId: 'r1' });
  valid(CommandReplySchema, ok);
  assert.deepEqual([ok.ok, ok.command, ok.requestId], [true, 'trigger', 'r1']);
  const bad = replyPayload('explode', { ok: false, error: 'unknown command' }, { station: 's', line: 'l', wallMs: 0 });
  valid(CommandReplySchema, bad);
  assert.ok(!('requestId' in bad));
  assert.ok(!Value.Check(CommandReplySchema, { ...bad, error: undefined }), 'ok:false needs an error');
  assert.equal(toJson({ t: 10n }), '{"t":10}');
});

test('topic prefix: default from line and station, config override, refused when unusable', () => {
  assert.equal(resolvePrefix('', { line: 'line1', id: 'st2' }), 'linesight/line1/st2/');
  assert.equal(resolvePrefix('plant/a', { line: 'x', id: 'y' }), 'plant/a/');
  assert.equal(resolvePrefix('plant/a/', { line: 'x', id: 'y' }), 'plant/a/');
  assert.throws(() => resolvePrefix('plant/+/a', { line: 'x', id: 'y' }), /not a usable topic prefix.*use e\.g\./);
  assert.throws(() => resolvePrefix('/abs', { line: 'x', id: 'y' }), /leading/);
  const t = topics('p/');
  assert.deepEqual([t.status, t.inspection, t.alarm, t.commands, t.reply('pause')], ['p/status', 'p/inspection', 'p/alarm', 'p/cmd/#', 'p/reply/pause']);
});

test('parseCommand: valid and empty payloads pass, requestId is echoed', () => {
  assert.deepEqual(parseCommand('trigger', Buffer.from('{"requestId":"r1"}')), { ok: true, command: 'trigger', payload: { requestId: 'r1' }, requestId: 'r1' });
  assert.deepEqual(parseCommand('pause', Buffer.alloc(0)), { ok: true, command: 'pause', payload: {} });
  assert.deepEqual(parseCommand('pause', '  '), { ok: true, command: 'pause', payload: {} });
  assert.deepEqual(parseCommand('pause', '{"reason":"shift change"}'), { ok: true, command: 'pause', payload: { reason: 'shift change' } });
});

test('parseCommand: each bad request gets an error naming the problem and the fix', () => {
  const bad = (command: string, body: string) => {
    const r = parseCommand(command, body);
    assert.equal(r.ok, false);
    return r as { ok: false; error: string; requestId?: string };
  };
  const json = bad('trigger', '{requestId: r1');
  assert.match(json.error, /not valid JSON/);
  assert.match(json.error, /send a JSON object such as \{"requestId":"r1"\}/);
  assert.match(bad('trigger', '[1,2]').error, /must be a JSON object, got an array/);
  assert.match(bad('trigger', '"go"').error, /got string/);

  const unknown = bad('explode', '{"requestId":"r2"}');
  assert.match(unknown.error, /unknown command 'explode': known commands are model, pause, resume, status, trigger/);
  assert.equal(unknown.requestId, 'r2', 'echoed even when refused');

  const field = bad('trigger', '{"requestId":"r3","count":2}');
  assert.match(field.error, /unknown field 'count' for 'trigger': it accepts requestId; remove 'count'/);
  assert.equal(field.requestId, 'r3');

  const type = bad('pause', '{"requestId":5}');
  assert.match(type.error, /bad field 'requestId' for 'pause': Expected string; send requestId as a string/);
  assert.equal(type.requestId, undefined, 'a non-string requestId is not echoed');
  assert.match(bad('pause', `{"reason":"${'x'.repeat(600)}"}`).error, /bad field 'reason'.*at most 500 characters/);
});

test('replyRoute: the MQTT 5 response topic and correlation data when given, else reply/<command>', () => {
  const corr = Buffer.from([1, 2, 3]);
  assert.deepEqual(replyRoute('p/reply/trigger', { responseTopic: 'central/resp/9', correlationData: corr }), {
    topic: 'central/resp/9',
    properties: { correlationData: corr },
  });
  assert.deepEqual(replyRoute('p/reply/trigger', { responseTopic: 'central/resp/9' }), { topic: 'central/resp/9' });
  assert.deepEqual(replyRoute('p/reply/trigger', undefined), { topic: 'p/reply/trigger' });
  assert.deepEqual(replyRoute('p/reply/trigger', { responseTopic: 'central/+/x' }), { topic: 'p/reply/trigger' }, 'wildcards cannot be published to');
});

test('docs/schemas/ are exactly what src/publish/schemas.ts generates (npx tsx src/publish/schemas.ts --write)', () => {
  assert.deepEqual(staleSchemaFiles(), []);
  const files = schemaFiles();
  assert.deepEqual(Object.keys(files).sort(), Object.keys(MESSAGE_SCHEMAS).sort());
  for (const file of Object.keys(files)) {
    const doc = JSON.parse(readFileSync(schemasDir() + file, 'utf8')) as Record<string, unknown>;
    assert.equal(doc.$schema, 'https://json-schema.org/draft/2020-12/schema');
    assert.match(String(doc.$id), /^https:\/\/linesight\.dev\/schemas\/\w+\.json$/);
    assert.equal(typeof doc.description, 'string');
  }
});
