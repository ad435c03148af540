// Building the messages of the MQTT contract (src/publish/schemas.ts) from the line's objects.
// Pure functions: no I/O, no clock reads (times are passed in), so they are unit-tested directly.
import type { Part, ModelRef } from '../part.js';
import type { InferenceResult } from '../inference/types.js';
import {
  SCHEMA_VERSION,
  type AlarmMessage,
  type AlarmSeverity,
  type CommandReply,
  type InspectionMessage,
  type StatusMessage,
  type StatusState,
} from './schemas.js';

export type { AlarmMessage, CommandReply, InspectionMessage, StatusMessage, StatusState } from './schemas.js';

// ---- topics ----------------------------------------------------------------------------------

/** The topic prefix, always ending in '/': config mqtt.prefix, else `linesight/<line>/<station>/`. */
export function resolvePrefix(prefix: string, station: { line: string; id: string }): string {
  const p = prefix === '' ? `linesight/${station.line}/${station.id}/` : prefix.endsWith('/') ? prefix : prefix + '/';
  if (/[+#\u0000]/.test(p) || p.startsWith('/') || p.includes('//')) {
    throw new Error(
      `mqtt.prefix '${prefix}' is not a usable topic prefix: it may not contain '+', '#', NUL, a leading '/' or an empty level; use e.g. 'factory/line1/station1/'`,
    );
  }
  return p;
}

export interface Topics {
  status: string;
  inspection: string;
  alarm: string;
  /** Verdicts of a candidate model run in shadow (never acted on). */
  shadow: string;
  /** Subscription filter for commands. */
  commands: string;
  /** Topic prefix of commands: `<prefix>cmd/`. */
  commandPrefix: string;
  /** Default reply topic for a command (MQTT 3.1.1, or a v5 request without a response topic). */
  reply(command: string): string;
}

export function topics(prefix: string): Topics {
  return {
    status: `${prefix}status`,
    inspection: `${prefix}inspection`,
    alarm: `${prefix}alarm`,
    shadow: `${prefix}shadow`,
    commands: `${prefix}cmd/#`,
    commandPrefix: `${prefix}cmd/`,
    reply: (command) => `${prefix}reply/${command}`,
  };
}

// ---- inspection ------------------------------------------------------------------------------

/** Finer timings the inspector measured (InferenceResult['timings']), all in ms. */
export type InspectionTimings = Partial<InferenceResult['timings']>;

export interface InspectionExtra {
  line: string;
  timings?: InspectionTimings;
  /** Set by the publisher when it re-sends the message. */
  replayed?: boolean;
}

// µs resolution is plenty for ms fields and keeps the JSON short.
const round = (ms: number): number => Math.round(ms * 1000) / 1000;
const finite = (x: number | undefined): number | null => (x !== undefined && Number.isFinite(x) ? x : null);
const msOrNull = (x: number | undefined): number | null => {
  const v = finite(x);
  return v === null ? null : round(v);
};

export function inspectionPayload(part: Part, extra: InspectionExtra): InspectionMessage {
  const t0 = part.t.triggerNs;
  // bigint ns → ms after the trigger; the subtraction happens in bigint so no precision is lost.
  const rel = (ns: bigint | undefined): number | null => (ns === undefined ? null : round(Number(ns - t0) / 1e6));
  const span = (a: bigint | undefined, b: bigint | undefined): number | null =>
    a === undefined || b === undefined ? null : round(Number(b - a) / 1e6);
  const v = part.verdict;
  // The worker's timings travel on the part; an explicit extra.timings wins.
  const tm: InspectionTimings = { ...(part.timings ?? {}), ...(extra.timings ?? {}) };
  return {
    schemaVersion: SCHEMA_VERSION,
    partId: part.id,
    station: part.station,
    line: extra.line,
    seq: part.seq,
    trigger: part.trigger,
    triggeredAt: part.triggeredAt,
    stagesMs: {
      frame: rel(part.t.frameNs),
      inferStart: rel(part.t.inferStartNs),
      inferEnd: rel(part.t.inferEndNs),
      decided: rel(part.t.decidedNs),
      gate: rel(part.t.gateNs),
    },
    verdict: v?.verdict ?? null,
    score: finite(v?.score),
    threshold: finite(v?.threshold),
    defects: (v?.defects ?? []).map((d) => ({
      class: d.class,
      score: finite(d.score),
      ...(d.box ? { box: [d.box[0], d.box[1], d.box[2], d.box[3]] as [number, number, number, number] } : {}),
      ...(d.area !== undefined && Number.isFinite(d.area) ? { area: d.area } : {}),
    })),
    // A part reaches the publisher with its action set; if not, report what the safe gate does.
    action: part.action ?? (part.failSafe || v?.verdict !== 'pass' ? 'divert' : 'pass'),
    failSafe: part.failSafe,
    reason: part.reason ?? null,
    detail: part.detail ?? null,
    model: part.model ? modelRef(part.model) : null,
    provider: part.provider ?? null,
    latencyMs: {
      frame: span(t0, part.t.frameNs),
      queue: msOrNull(tm.queueMs),
      preprocess: msOrNull(tm.preprocessMs),
      infer: msOrNull(tm.inferMs),
      postprocess: msOrNull(tm.postprocessMs),
      total: span(t0, part.t.decidedNs),
    },
    replayed: extra.replayed ?? false,
  };
}

const modelRef = (m: ModelRef): ModelRef => ({ name: m.name, version: m.version, sha256: m.sha256 });

// ---- status ----------------------------------------------------------------------------------

/**
 * What the agent tells the publisher. Station, line and time are the publisher's own (they are
 * accepted, and ignored, so the agent can pass its whole status object).
 */
export interface StatusInput {
  state: StatusState;
  model?: ModelRef | null;
  provider?: string | null;
  agentVersion: string;
  bootId: number | string | null;
  uptimeS: number;
  station?: string;
  line?: string;
  time?: string;
}

export function statusPayload(s: StatusInput, ctx: { station: string; line: string; wallMs: number }): StatusMessage {
  return {
    schemaVersion: SCHEMA_VERSION,
    state: s.state,
    station: ctx.station,
    line: ctx.line,
    model: s.model ? modelRef(s.model) : null,
    provider: s.provider ?? null,
    agentVersion: s.agentVersion,
    bootId: s.bootId,
    uptimeS: Math.max(0, Math.round(s.uptimeS * 1000) / 1000),
    time: new Date(ctx.wallMs).toISOString(),
  };
}

// ---- alarm -----------------------------------------------------------------------------------

export interface AlarmInput {
  kind: string;
  severity: AlarmSeverity;
  message: string;
  partId?: string;
  data?: Record<string, unknown>;
  /** Defaults to a random UUID. */
  id?: string;
  /** Wall-clock ms; defaults to now. */
  timeMs?: number;
}

export function alarmPayload(
  a: AlarmInput & { id: string; timeMs: number },
  ctx: { station: string; line: string; replayed?: boolean },
): AlarmMessage {
  return {
    schemaVersion: SCHEMA_VERSION,
    id: a.id,
    kind: a.kind,
    severity: a.severity,
    message: a.message,
    time: new Date(a.timeMs).toISOString(),
    station: ctx.station,
    line: ctx.line,
    ...(a.partId !== undefined ? { partId: a.partId } : {}),
    ...(a.data !== undefined ? { data: a.data } : {}),
    replayed: ctx.replayed ?? false,
  };
}

// ---- command reply ---------------------------------------------------------------------------

export type ReplyOutcome = { ok: true; result?: unknown } | { ok: false; error: string };

export function replyPayload(
  command: string,
  outcome: ReplyOutcome,
  ctx: { station: string; line: string; wallMs: number; requestId?: string },
): CommandReply {
  const common = {
    schemaVersion: SCHEMA_VERSION,
    command,
    ...(ctx.requestId !== undefined ? { requestId: ctx.requestId } : {}),
    station: ctx.station,
    line: ctx.line,
    time: new Date(ctx.wallMs).toISOString(),
  };
  return outcome.ok
    ? { ok: true, ...common, ...(outcome.result !== undefined ? { result: outcome.result } : {}) }
    : { ok: false, ...common, error: outcome.error };
}

/** JSON.stringify that writes bigints as numbers (a command result may hold monotonic times). */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? Number(v) : v));
}
