// Parsing `<prefix>cmd/<command>` requests and routing their replies. Every bad request turns
// into an error text that names the problem and the fix: the requester reads it, the agent never
// throws on input from the network.
import type { TObject } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { CommandSchemas } from './schemas.js';

export type CommandTable = Record<string, TObject>;

export const DEFAULT_COMMANDS: CommandTable = CommandSchemas;

export type ParsedCommand =
  | { ok: true; command: string; payload: Record<string, unknown>; requestId?: string }
  | { ok: false; command: string; error: string; requestId?: string };

const example = (command: string, schema: TObject | undefined): string => {
  const fields = schema ? Object.keys(schema.properties) : [];
  return fields.includes('requestId') ? `{"requestId":"r1"}` : '{}';
};

export function parseCommand(command: string, payload: Buffer | Uint8Array | string, table: CommandTable = DEFAULT_COMMANDS): ParsedCommand {
  const text = typeof payload === 'string' ? payload : Buffer.from(payload).toString('utf8');
  const schema = Object.prototype.hasOwnProperty.call(table, command) ? table[command] : undefined;
  let body: unknown = {};
  if (text.trim() !== '') {
    try {
      body = JSON.parse(text);
    } catch (e) {
      return {
        ok: false,
        command,
        error: `payload is not valid JSON (${(e as Error).message}): send a JSON object such as ${example(command, schema)}, or an empty payload`,
      };
    }
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    const got = body === null ? 'null' : Array.isArray(body) ? 'an array' : typeof body;
    return { ok: false, command, error: `payload must be a JSON object, got ${got}: send e.g. ${example(command, schema)}, or an empty payload` };
  }
  const obj = body as Record<string, unknown>;
  // Echo the requestId whenever it is usable, even when the request is refused, so it can be matched.
  const requestId = typeof obj.requestId === 'string' && obj.requestId.length > 0 ? obj.requestId : undefined;
  const withId = <R extends object>(r: R): R & { requestId?: string } => (requestId !== undefined ? { ...r, requestId } : r);

  if (!schema) {
    const known = Object.keys(table).sort();
    return withId({
      ok: false as const,
      command,
      error: `unknown command '${command}': known commands are ${known.join(', ')}; publish to <prefix>cmd/<command>`,
    });
  }
  const allowed = Object.keys(schema.properties);
  const unknownField = Object.keys(obj).find((k) => !allowed.includes(k));
  if (unknownField !== undefined) {
    return withId({
      ok: false as const,
      command,
      error: `unknown field '${unknownField}' for '${command}': it accepts ${allowed.length ? allowed.join(', ') : 'no fields'}; remove '${unknownField}'`,
    });
  }
  const first = Value.Errors(schema, obj).First();
  if (first) {
    const field = first.path.replace(/^\//, '') || '(payload)';
    const want = describe(first.schema as Parameters<typeof describe>[0]);
    return withId({ ok: false as const, command, error: `bad field '${field}' for '${command}': ${first.message}; send ${field} as ${want}` });
  }
  return withId({ ok: true as const, command, payload: obj });
}

function describe(schema: { type?: unknown; minLength?: number; maxLength?: number; minimum?: number; maximum?: number }): string {
  const type = typeof schema.type === 'string' ? schema.type : 'the documented type';
  const bounds: string[] = [];
  if (schema.minLength !== undefined) bounds.push(`at least ${schema.minLength} characters`);
  if (schema.maxLength !== undefined) bounds.push(`at most ${schema.maxLength} characters`);
  if (schema.minimum !== undefined) bounds.push(`>= ${schema.minimum}`);
  if (schema.maximum !== undefined) bounds.push(`<= ${schema.maximum}`);
  const article = /^[aeiou]/.test(type) ? 'an' : 'a';
  return `${article} ${type}${bounds.length ? ` (${bounds.join(', ')})` : ''}`;
}

export interface ReplyRoute {
  topic: string;
  /** MQTT 5 publish properties (correlation data) for the reply. */
  properties?: { correlationData: Buffer };
}

/**
 * Where the reply goes: the MQTT 5 response topic (with the correlation data echoed) when the
 * request carried one, else `<prefix>reply/<command>` (MQTT 3.1.1 has no response topic).
 */
export function replyRoute(
  defaultTopic: string,
  props: { responseTopic?: string; correlationData?: Buffer | Uint8Array } | undefined,
): ReplyRoute {
  const rt = props?.responseTopic;
  // A response topic with wildcards cannot be published to; fall back rather than fail.
  if (rt && !/[+#]/.test(rt)) {
    return props?.correlationData ? { topic: rt, properties: { correlationData: Buffer.from(props.correlationData) } } : { topic: rt };
  }
  return { topic: defaultTopic };
}
