// The MQTT contract with the central system, as TypeBox types. One definition gives the TS types
// the publisher builds, the runtime check the tests use, and the JSON Schema files in docs/schemas/
// (regenerate with `npx tsx src/publish/schemas.ts --write`; `--check` fails when they are stale).
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { FormatRegistry, Type as T, type Static, type TObject, type TSchema } from '@sinclair/typebox';

/** Bumped when a field changes meaning or is removed; new optional fields keep the version. */
export const SCHEMA_VERSION = 1 as const;

const BASE_ID = 'https://linesight.dev/schemas/';
const JSON_SCHEMA = 'https://json-schema.org/draft/2020-12/schema';

// TypeBox rejects unknown formats; register the one the contract uses (once, other modules may too).
if (!FormatRegistry.Has('date-time')) {
  FormatRegistry.Set('date-time', (v) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(v) && !Number.isNaN(Date.parse(v)));
}

const Nullable = <S extends TSchema>(s: S, description: string) => T.Union([s, T.Null()], { description });
const IsoTime = (description: string) => T.String({ format: 'date-time', description });
const Ms = (description: string) => Nullable(T.Number(), description);

const SchemaVersion = T.Literal(SCHEMA_VERSION, { description: 'version of this message schema' });
const Station = T.String({ minLength: 1, description: 'inspection station id (config station.id)' });
const Line = T.String({ minLength: 1, description: 'production line name (config station.line)' });

export const ModelRefSchema = T.Object(
  {
    name: T.String({ minLength: 1, description: 'model name (model.json)' }),
    version: T.String({ minLength: 1, description: 'model version (model.json)' }),
    sha256: T.String({ pattern: '^[0-9a-fA-F]{64}$', description: 'sha256 (hex) of model.onnx' }),
  },
  { additionalProperties: false, description: 'the model that produced the verdict' },
);

const Replayed = T.Boolean({
  description:
    'true when this copy may be a duplicate: it was sent before without an acknowledgement (connection lost) or recovered from the outbox after a restart. Deduplicate by the id.',
});

// ---- status ----------------------------------------------------------------------------------

export const StatusMessageSchema = T.Object(
  {
    schemaVersion: SchemaVersion,
    state: T.Union([T.Literal('online'), T.Literal('offline'), T.Literal('paused')], {
      description: "online: inspecting; paused: connected, not inspecting (cmd/pause); offline: stopped, or its connection was lost (Last Will)",
    }),
    station: Station,
    line: Line,
    model: Nullable(ModelRefSchema, 'loaded model; null before one is loaded'),
    provider: Nullable(T.String(), "execution provider in use ('cpu', 'cuda', ...); null before a model is loaded"),
    agentVersion: T.String({ minLength: 1, description: 'linesight version' }),
    bootId: T.Union([T.Integer({ minimum: 0 }), T.String({ minLength: 1 }), T.Null()], {
      description: 'boot counter of the agent (part ids embed it); null if the agent has not reported it yet',
    }),
    uptimeS: T.Number({ minimum: 0, description: 'seconds since the agent started (in the Last Will: as at connect)' }),
    time: IsoTime('wall-clock time the status was made (in the Last Will: the time of the connect that registered it)'),
  },
  {
    additionalProperties: false,
    $id: `${BASE_ID}status.json`,
    title: 'linesight status',
    description: "Topic <prefix>status, retained, QoS 1. 'offline' is also the Last Will, so a lost agent reads offline.",
  },
);
export type StatusMessage = Static<typeof StatusMessageSchema>;
export type StatusState = StatusMessage['state'];

// ---- inspection ------------------------------------------------------------------------------

const DefectSchema = T.Object(
  {
    class: T.String({ description: 'defect class' }),
    score: Nullable(T.Number(), 'confidence / anomaly score of the region (null if not finite)'),
    box: T.Optional(T.Tuple([T.Number(), T.Number(), T.Number(), T.Number()], { description: '[x, y, w, h] in frame pixels' })),
    area: T.Optional(T.Number({ minimum: 0, description: 'area in frame pixels' })),
  },
  { additionalProperties: false },
);

export const InspectionMessageSchema = T.Object(
  {
    schemaVersion: SchemaVersion,
    partId: T.String({ minLength: 1, description: 'unique part id `<station>-<bootId>-<seq>`: the deduplication key' }),
    station: Station,
    line: Line,
    seq: T.Integer({ minimum: 0, description: 'part sequence number within the boot' }),
    trigger: T.Union([T.Literal('freerun'), T.Literal('interval'), T.Literal('gpio'), T.Literal('command')], {
      description: 'what made the part',
    }),
    triggeredAt: IsoTime('wall-clock time of the trigger'),
    stagesMs: T.Object(
      {
        frame: Ms('frame captured'),
        inferStart: Ms('inference started'),
        inferEnd: Ms('inference ended'),
        decided: Ms('verdict or fail-safe decided'),
        gate: Ms('the part reached the gate (divert pulse or pass)'),
      },
      {
        additionalProperties: false,
        description: 'monotonic time of each stage in ms after the trigger (null: the stage did not happen)',
      },
    ),
    verdict: T.Union([T.Literal('pass'), T.Literal('reject'), T.Null()], { description: "the model's verdict; null when there is no valid verdict" }),
    score: Nullable(T.Number(), 'the score compared with the threshold; null without a verdict'),
    threshold: Nullable(T.Number(), 'score at or above which the verdict is reject; null without a verdict'),
    defects: T.Array(DefectSchema, { description: 'defect regions found (empty when none or no verdict)' }),
    action: T.Union([T.Literal('pass'), T.Literal('divert')], { description: 'what the gate did with the part' }),
    failSafe: T.Boolean({ description: 'true when the part was diverted without a valid verdict in time' }),
    reason: T.Union(
      [
        T.Literal('late'),
        T.Literal('bad_frame'),
        T.Literal('camera'),
        T.Literal('model_error'),
        T.Literal('worker_crash'),
        T.Literal('overload'),
        T.Literal('stopping'),
        T.Literal('paused'),
        T.Literal('crash'),
        T.Null(),
      ],
      { description: 'why the part was failed safe; null when failSafe is false' },
    ),
    detail: Nullable(T.String(), 'human-readable detail of a fail-safe (error message)'),
    model: Nullable(ModelRefSchema, 'the model that judged the part; null when none did'),
    provider: Nullable(T.String(), 'execution provider that ran the model'),
    latencyMs: T.Object(
      {
        frame: Ms('trigger to frame captured'),
        queue: Ms('waiting for an inference worker'),
        preprocess: Ms('frame to tensor'),
        infer: Ms('model run'),
        postprocess: Ms('outputs to verdict'),
        total: Ms('trigger to decision'),
      },
      { additionalProperties: false, description: 'latencies in ms (null: not measured for this part)' },
    ),
    replayed: Replayed,
  },
  {
    additionalProperties: false,
    $id: `${BASE_ID}inspection.json`,
    title: 'linesight inspection',
    description: 'Topic <prefix>inspection, QoS 1, not retained: one message per part. At least once: deduplicate by partId.',
  },
);
export type InspectionMessage = Static<typeof InspectionMessageSchema>;

// ---- alarm -----------------------------------------------------------------------------------

export const ALARM_KINDS = [
  'late',
  'missed',
  'late_verdict',
  'camera',
  'camera_stall',
  'model_error',
  'worker_crash',
  'overload',
  'gpio',
  'mqtt',
  'outbox_high_water',
  'outbox_drop',
  'outbox_corrupt',
  'outbox',
  'crash',
  'journal',
  'model',
  'archive',
  'disk',
] as const;

export const AlarmMessageSchema = T.Object(
  {
    schemaVersion: SchemaVersion,
    id: T.String({ minLength: 1, description: 'unique alarm id: the deduplication key' }),
    kind: T.String({
      pattern: '^[a-z][a-z0-9_]*$',
      description: `what happened; known kinds: ${ALARM_KINDS.join(', ')} (more may be added)`,
    }),
    severity: T.Union([T.Literal('info'), T.Literal('warning'), T.Literal('critical')], {
      description: 'critical: results lost or the line cannot inspect; warning: degraded; info: notable',
    }),
    message: T.String({ minLength: 1, description: 'human-readable text' }),
    time: IsoTime('wall-clock time the alarm was raised'),
    station: Station,
    line: Line,
    partId: T.Optional(T.String({ minLength: 1, description: 'the part concerned, if any' })),
    data: T.Optional(T.Record(T.String(), T.Unknown(), { description: 'machine-readable details (counts, limits)' })),
    replayed: Replayed,
  },
  {
    additionalProperties: false,
    $id: `${BASE_ID}alarm.json`,
    title: 'linesight alarm',
    description: 'Topic <prefix>alarm, QoS 1, not retained. At least once: deduplicate by id.',
  },
);
export type AlarmMessage = Static<typeof AlarmMessageSchema>;
export type AlarmSeverity = AlarmMessage['severity'];

// ---- commands --------------------------------------------------------------------------------

const RequestId = T.String({ minLength: 1, maxLength: 200, description: 'echoed in the reply to match it to the request' });

/** Payload of each command (`<prefix>cmd/<command>`); an empty payload means {}. */
export const CommandSchemas = {
  trigger: T.Object({ requestId: T.Optional(RequestId) }, { additionalProperties: false, description: 'inspect one part now' }),
  pause: T.Object(
    { requestId: T.Optional(RequestId), reason: T.Optional(T.String({ maxLength: 500, description: 'why (logged)' })) },
    { additionalProperties: false, description: 'stop inspecting (status becomes paused)' },
  ),
  resume: T.Object({ requestId: T.Optional(RequestId) }, { additionalProperties: false, description: 'inspect again after a pause' }),
  status: T.Object({ requestId: T.Optional(RequestId) }, { additionalProperties: false, description: "reply with the agent's status" }),
  model: T.Object(
    {
      requestId: T.Optional(RequestId),
      action: T.Union([T.Literal('swap'), T.Literal('shadow'), T.Literal('promote'), T.Literal('rollback'), T.Literal('versions')], {
        description: 'swap: activate ref; shadow: run ref in shadow (no ref = stop the shadow); promote: make the shadow active; rollback: back to the previous model; versions: list them',
      }),
      ref: T.Optional(T.String({ minLength: 1, maxLength: 500, description: "name@version, name@latest or a bundle folder on the device" })),
      everyN: T.Optional(T.Integer({ minimum: 1, maximum: 1000, description: 'shadow: run on every Nth part' })),
    },
    { additionalProperties: false, description: 'model lifecycle: hot swap, shadow, promote, rollback' },
  ),
} satisfies Record<string, TObject>;

const ReplyCommon = {
  schemaVersion: SchemaVersion,
  command: T.String({ minLength: 1, description: "the command replied to (topic level after 'cmd/')" }),
  requestId: T.Optional(T.String({ description: 'the requestId of the request, when it had one' })),
  station: Station,
  line: Line,
  time: IsoTime('wall-clock time of the reply'),
};

export const CommandReplySchema = T.Union(
  [
    T.Object(
      { ok: T.Literal(true), ...ReplyCommon, result: T.Optional(T.Unknown({ description: 'what the command returned' })) },
      { additionalProperties: false },
    ),
    T.Object(
      { ok: T.Literal(false), ...ReplyCommon, error: T.String({ minLength: 1, description: 'what was wrong and how to fix it' }) },
      { additionalProperties: false },
    ),
  ],
  {
    $id: `${BASE_ID}reply.json`,
    title: 'linesight command reply',
    description:
      'Reply to <prefix>cmd/<command>: to the MQTT 5 response topic with the correlation data when the request had them, else to <prefix>reply/<command>. QoS 1, not retained.',
  },
);
export type CommandReply = Static<typeof CommandReplySchema>;

// ---- docs/schemas/ ---------------------------------------------------------------------------

export const MESSAGE_SCHEMAS = {
  'status.schema.json': StatusMessageSchema,
  'inspection.schema.json': InspectionMessageSchema,
  'alarm.schema.json': AlarmMessageSchema,
  'reply.schema.json': CommandReplySchema,
} as const;

/** The docs/schemas/ files as they should be: file name → text. */
export function schemaFiles(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [file, schema] of Object.entries(MESSAGE_SCHEMAS)) {
    // $schema first so editors pick the draft; JSON.stringify drops TypeBox's symbol keys.
    const { $id, title, description, ...rest } = JSON.parse(JSON.stringify(schema)) as Record<string, unknown>;
    out[file] = JSON.stringify({ $schema: JSON_SCHEMA, $id, title, description, ...rest }, null, 2) + '\n';
  }
  return out;
}

export const schemasDir = (): string => fileURLToPath(new URL('../../docs/schemas/', import.meta.url));

/** Files in docs/schemas/ that differ from the generated text. */
export function staleSchemaFiles(dir = schemasDir()): string[] {
  return Object.entries(schemaFiles())
    .filter(([file, text]) => {
      try {
        return readFileSync(dir + file, 'utf8') !== text;
      } catch {
        return true;
      }
    })
    .map(([file]) => file);
}

export function writeSchemaFiles(dir = schemasDir()): string[] {
  mkdirSync(dir, { recursive: true });
  const files = schemaFiles();
  for (const [file, text] of Object.entries(files)) writeFileSync(dir + file, text);
  return Object.keys(files);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (process.argv.includes('--write')) {
    for (const f of writeSchemaFiles()) console.log(`wrote docs/schemas/${f}`);
  } else if (process.argv.includes('--check')) {
    const stale = staleSchemaFiles();
    if (stale.length) {
      console.error(`stale: ${stale.join(', ')}; run: npx tsx src/publish/schemas.ts --write`);
      process.exit(1);
    }
    console.log('docs/schemas/ up to date');
  } else {
    console.log('usage: npx tsx src/publish/schemas.ts --write | --check');
  }
}
