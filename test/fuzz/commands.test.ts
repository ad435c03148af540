// Bad input, MQTT commands: anything anyone publishes under <prefix>cmd/ (any topic tail, any
// bytes) is parsed into ok or a clear error for the requester; parseCommand never throws, and the
// reply it leads to can always be serialised.
//
// FUZZ_SEED=<n> replays a run (the seed is printed); FUZZ_SCALE=<x> multiplies the number of inputs.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Value } from '@sinclair/typebox/value';
import { DEFAULT_COMMANDS, parseCommand, replyRoute } from '../../src/publish/commands.js';
import { replyPayload, toJson } from '../../src/publish/payload.js';

const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
const SCALE = Number(process.env.FUZZ_SCALE ?? 1);
const runs = (n: number): number => Math.max(1, Math.round(n * SCALE));
const tried: Record<string, number> = {};
const outcome = { ok: 0, refused: 0 };
after(() => {
  const total = Object.values(tried).reduce((a, b) => a + b, 0);
  console.log(`fuzz commands: ${total} inputs tried (${Object.entries(tried).map(([k, v]) => `${k} ${v}`).join(', ')}); ${outcome.ok} accepted, ${outcome.refused} refused with an error; seed ${SEED}`);
});

const KNOWN = Object.keys(DEFAULT_COMMANDS);
const NASTY = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', '', ' ', '+', '#', '/', 'trigger/', 'trigger/x', 'TRIGGER', 'trigger\u0000', 'é', '\ud800'];
const command = fc.oneof(fc.constantFrom(...KNOWN), fc.constantFrom(...NASTY), fc.string(), fc.string({ unit: 'binary', maxLength: 30 }));

// Payload fields: the real ones with good and bad values, unknown and prototype-named ones.
const fieldNames = [...new Set(KNOWN.flatMap((k) => Object.keys(DEFAULT_COMMANDS[k]!.properties))), 'requestId', '__proto__', 'constructor', 'x'];
const fieldValue = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.string({ maxLength: 300 }), fc.constantFrom('', 'r1', 0, -1, 1e308, null, true));
const payloadObject = fc.dictionary(fc.oneof(fc.constantFrom(...fieldNames), fc.string()), fieldValue, { maxKeys: 4 });
const deep = fc.integer({ min: 1, max: 20_000 }).map((n) => '['.repeat(n) + ']'.repeat(n));
const payload = fc.oneof(
  // JSON text of objects (with '__proto__' as an own key, as JSON.parse makes it).
  payloadObject.map((o) => JSON.stringify(o).replace('"x":', '"__proto__":')),
  payloadObject.map((o) => Buffer.from(JSON.stringify(o))),
  fc.json({ maxDepth: 3 }),
  fc.uint8Array({ maxLength: 200 }),
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.constantFrom('', ' ', '\n', 'null', '[]', '"text"', '1', '{', '{"requestId":', '\ufeff{}', '{"requestId":"a","requestId":"b"}'),
  deep,
  deep.map((d) => `{"requestId":${d}}`),
);

test('parseCommand on any topic tail and payload: ok or a clear error, never a throw', () => {
  fc.assert(
    fc.property(command, payload, (cmd, body) => {
      tried.parse = (tried.parse ?? 0) + 1;
      const r = parseCommand(cmd, body);
      assert.equal(typeof r, 'object');
      assert.equal(r.command, cmd);
      if (r.ok) {
        outcome.ok++;
        assert.ok(Object.prototype.hasOwnProperty.call(DEFAULT_COMMANDS, cmd), `accepted unknown command ${JSON.stringify(cmd)}`);
        assert.ok(Value.Check(DEFAULT_COMMANDS[cmd]!, r.payload), 'an accepted payload matches its schema');
      } else {
        outcome.refused++;
        assert.equal(typeof r.error, 'string');
        assert.ok(r.error.length > 0, 'the error says something');
      }
      if (r.requestId !== undefined) assert.ok(typeof r.requestId === 'string' && r.requestId.length > 0);
      // The reply the requester gets is always serialisable.
      const reply = replyPayload(cmd, r.ok ? { ok: true, result: r.payload } : { ok: false, error: r.error }, {
        station: 'st1',
        line: 'l1',
        wallMs: 0,
        ...(r.requestId !== undefined ? { requestId: r.requestId } : {}),
      });
      assert.equal(typeof toJson(reply), 'string');
    }),
    { seed: SEED, numRuns: runs(12000), includeErrorInReport: true },
  );
});

test('replyRoute on any MQTT 5 response topic and correlation data: a topic to publish to, never a throw', () => {
  fc.assert(
    fc.property(
      fc.option(fc.oneof(fc.string(), fc.constantFrom('a/+/b', '#', 'reply/x', '', '\u0000')), { nil: undefined }),
      fc.option(fc.uint8Array({ maxLength: 64 }), { nil: undefined }),
      fc.boolean(),
      (responseTopic, correlationData, noProps) => {
        tried.replyRoute = (tried.replyRoute ?? 0) + 1;
        const r = replyRoute('p/reply/trigger', noProps ? undefined : { responseTopic, correlationData });
        assert.equal(typeof r.topic, 'string');
        assert.ok(r.topic.length > 0);
        assert.ok(!/[+#]/.test(r.topic), 'never a wildcard topic');
      },
    ),
    { seed: SEED, numRuns: runs(2000), includeErrorInReport: true },
  );
});
