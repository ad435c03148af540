// Loading a config: YAML file → environment overrides → schema defaults → validation. Every
// problem is reported at once as `path: message` so a line engineer fixes the file in one go.
import { readFileSync } from 'node:fs';
import { Value } from '@sinclair/typebox/value';
import type { TSchema } from '@sinclair/typebox';
import YAML from 'yaml';
import { ConfigSchema, type Config } from './schema.js';

export class ConfigError extends Error {
  readonly errors: string[];
  constructor(
    errors: string[],
    readonly file?: string,
  ) {
    // One line per problem, whatever the file's keys hold (a key may contain a newline).
    const lines = errors.map((e) => e.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`));
    super(`${file ? `${file}: ` : ''}invalid configuration:\n${lines.map((e) => `  ${e}`).join('\n')}`);
    this.name = 'ConfigError';
    this.errors = lines;
  }
}

export const ENV_PREFIX = 'LINESIGHT_';

/**
 * Environment overrides: LINESIGHT_<SECTION>__<KEY>=value, e.g. LINESIGHT_MQTT__URL=mqtt://broker:1883
 * or LINESIGHT_MODEL__PROVIDERS='[cuda, cpu]'. Values are read as YAML scalars (numbers, booleans,
 * flow lists). Key matching is case-insensitive against the schema, so camelCase keys work too.
 */
export function applyEnv(raw: Record<string, unknown>, env: NodeJS.ProcessEnv, errors: string[]): void {
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || value === undefined) continue;
    // Only SECTION__KEY names are settings: LINESIGHT_NATIVE, LINESIGHT_TEST_BROKER and the like
    // are switches of other tools and pass through untouched.
    if (!name.includes('__')) continue;
    const parts = name.slice(ENV_PREFIX.length).split('__').filter(Boolean);
    if (parts.length === 0) continue;
    let schema: TSchema | undefined = ConfigSchema;
    let node: Record<string, unknown> = raw;
    const path: string[] = [];
    for (let i = 0; i < parts.length; i++) {
      const props: Record<string, TSchema> | undefined = (schema as { properties?: Record<string, TSchema> } | undefined)?.properties;
      const key: string | undefined = props && Object.keys(props).find((k) => k.toLowerCase() === parts[i]!.toLowerCase());
      if (!props || !key) {
        errors.push(`env ${name}: no setting '${[...path, parts[i]].join('.')}' (see \`linesight config schema\`)`);
        break;
      }
      path.push(key);
      schema = props[key];
      if (i === parts.length - 1) {
        let parsed: unknown;
        try {
          parsed = YAML.parse(value);
        } catch {
          parsed = value;
        }
        // A string setting keeps the text as given (so '0123' stays a string).
        node[key] = (schema as { type?: string }).type === 'string' ? value : (parsed ?? value);
      } else {
        if (typeof node[key] !== 'object' || node[key] === null) node[key] = {};
        node = node[key] as Record<string, unknown>;
      }
    }
  }
}

/** Validate an already-parsed object: defaults filled, every error collected. */
export function parseConfig(input: unknown, opts: { env?: NodeJS.ProcessEnv; file?: string } = {}): Config {
  const errors: string[] = [];
  if (input === null || input === undefined) input = {};
  if (typeof input !== 'object' || Array.isArray(input)) {
    throw new ConfigError(['(root): expected a mapping of sections (station, camera, trigger, model, line, gpio, mqtt, http, log)'], opts.file);
  }
  const raw = structuredClone(input) as Record<string, unknown>;
  if (opts.env) applyEnv(raw, opts.env, errors);
  const value = Value.Default(ConfigSchema, raw) as unknown;
  for (const e of Value.Errors(ConfigSchema, value)) {
    const path = e.path.replace(/^\//, '').replace(/\//g, '.') || '(root)';
    // Unions report one error per branch: keep the first, it lists the allowed values below.
    const msg = describe(e.schema, e.message, e.value);
    const line = `${path}: ${msg}`;
    if (!errors.includes(line)) errors.push(line);
  }
  const cleaned = dedupeUnionErrors(errors);
  if (cleaned.length > 0) throw new ConfigError(cleaned, opts.file);
  return value as Config;
}

function describe(schema: TSchema, message: string, value: unknown): string {
  if (schema.anyOf) {
    const allowed = (schema.anyOf as TSchema[]).map((s) => JSON.stringify(s.const)).join(', ');
    return `must be one of ${allowed} (got ${JSON.stringify(value)})`;
  }
  if (message.startsWith('Unexpected property')) return 'unknown setting (check the spelling; `linesight config schema` lists them)';
  const got = value === undefined ? 'nothing' : JSON.stringify(value);
  return `${message.charAt(0).toLowerCase()}${message.slice(1)} (got ${got})`;
}

/** TypeBox reports a failed union once per branch and again at the union: keep one line per path. */
function dedupeUnionErrors(errors: string[]): string[] {
  const byPath = new Map<string, string>();
  for (const e of errors) {
    const path = e.slice(0, e.indexOf(': '));
    const prev = byPath.get(path);
    if (!prev || e.includes('must be one of')) byPath.set(path, e);
  }
  return [...byPath.values()];
}

/** Read a YAML config file (or the embedded defaults when file is undefined). */
export function loadConfig(file: string | undefined, env: NodeJS.ProcessEnv = process.env): Config {
  let doc: unknown = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError([`(file): cannot read ${file}: ${(err as Error).message}`], file);
    }
    const parsed = YAML.parseDocument(text, { prettyErrors: true });
    if (parsed.errors.length > 0) {
      throw new ConfigError(
        parsed.errors.map((e) => `(yaml) line ${e.linePos?.[0]?.line ?? '?'}: ${e.message.split('\n')[0]}`),
        file,
      );
    }
    try {
      // Aliases are resolved here: an unknown anchor (`*x`) or an alias bomb throws.
      doc = parsed.toJS();
    } catch (err) {
      throw new ConfigError([`(yaml): ${(err as Error).message.split('\n')[0]}`], file);
    }
  }
  return parseConfig(doc, { env, file });
}

/** The JSON Schema printed by `linesight config schema`. */
export function configJsonSchema(): Record<string, unknown> {
  return { $schema: 'https://json-schema.org/draft/2020-12/schema', ...JSON.parse(JSON.stringify(ConfigSchema)) };
}
