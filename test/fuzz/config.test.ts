// Bad input, config files: whatever a line engineer (or a broken SD card) puts in config.yaml or
// the environment, the agent either gets a valid config or a ConfigError whose every line reads
// `path: message` (the CLI prints them and exits 2). Any other exception is a bug.
//
// FUZZ_SEED=<n> replays a run (the seed is printed); FUZZ_SCALE=<x> multiplies the number of inputs.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import type { TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import YAML from 'yaml';
import { ConfigError, loadConfig, parseConfig } from '../../src/config/load.js';
import { ConfigSchema } from '../../src/config/schema.js';

const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
const SCALE = Number(process.env.FUZZ_SCALE ?? 1);
const runs = (n: number): number => Math.max(1, Math.round(n * SCALE));
const tried: Record<string, number> = {};
const outcome = { valid: 0, configError: 0 };
after(() => {
  const total = Object.values(tried).reduce((a, b) => a + b, 0);
  console.log(
    `fuzz config: ${total} inputs tried (${Object.entries(tried).map(([k, v]) => `${k} ${v}`).join(', ')}); ` +
      `${outcome.valid} valid configs, ${outcome.configError} ConfigErrors; seed ${SEED}`,
  );
});

const dir = mkdtempSync(join(tmpdir(), 'linesight-fuzz-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// Strings that break naive code: prototype keys, separators, control characters, YAML specials.
const NASTY = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', '', ' ', '\u0000', '.', '..', '/', 'a.b', '~', 'null', 'NaN', '.inf', '-.inf', '0x1F', '1e400', '- a', ': b', '{', '[', '&a', '*a', '!!binary', '%YAML 1.1', '\ufeff', '\ud800', 'é', '𝕏'];
const nastyString = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.constantFrom(...NASTY));
const junk: fc.Arbitrary<unknown> = fc.oneof(
  { depthSize: 'small' },
  fc.jsonValue({ maxDepth: 2 }),
  nastyString,
  fc.constantFrom(null, undefined, NaN, Infinity, -Infinity, -0, true, false, 0, -1, 2 ** 31, 2 ** 53 + 2, 1e308),
  fc.double(),
  fc.integer(),
  fc.date({ noInvalidDate: false }),
);

/**
 * Values shaped by the schema: mostly plausible (so validation goes deep and some configs are
 * valid), sometimes wrong in type, range or spelling.
 */
function arbFor(schema: TSchema, depth = 0): fc.Arbitrary<unknown> {
  const s = schema as TSchema & { properties?: Record<string, TSchema>; anyOf?: TSchema[]; items?: TSchema; const?: unknown; minimum?: number; maximum?: number; exclusiveMinimum?: number };
  let plausible: fc.Arbitrary<unknown>;
  if (s.properties && depth < 4) {
    const props = s.properties;
    const keys = Object.keys(props);
    plausible = fc
      .tuple(
        fc.subarray(keys),
        fc.array(fc.tuple(nastyString, junk), { maxLength: 2 }),
        fc.array(fc.constantFrom(...keys), { maxLength: 1 }),
      )
      .chain(([chosen, extra, misspelt]) =>
        fc.record(Object.fromEntries(chosen.map((k) => [k, arbFor(props[k]!, depth + 1)]))).map((obj) => {
          const o: Record<string, unknown> = { ...obj };
          for (const [k, v] of extra) o[k] = v;
          // A key in the wrong case: env matching is case-insensitive, the file's is not.
          for (const k of misspelt) o[k.toUpperCase()] = 1;
          return o;
        }),
      );
  } else if (s.anyOf) {
    plausible = fc.oneof(...s.anyOf.map((x) => (x.const !== undefined ? fc.constant(x.const) : arbFor(x, depth + 1))));
  } else if (s.const !== undefined) {
    plausible = fc.constant(s.const);
  } else if (s.type === 'integer' || s.type === 'number') {
    const lo = s.minimum ?? s.exclusiveMinimum ?? -1e6;
    const hi = s.maximum ?? lo + 1e6;
    const edges = [lo, hi, lo - 1, hi + 1, lo + 0.5, 0];
    plausible = fc.oneof(
      fc.integer({ min: Math.ceil(Math.max(lo, -1e9)), max: Math.floor(Math.min(hi, 1e9)) }),
      fc.constantFrom(...edges),
      ...(s.type === 'number' ? [fc.double({ min: lo, max: hi, noNaN: true })] : []),
    );
  } else if (s.type === 'string') {
    plausible = fc.oneof(fc.stringMatching(/^[A-Za-z0-9_.-]{1,12}$/), nastyString, fc.constantFrom('mqtt://127.0.0.1:1', '/dev/video0', 'models/film-demo'));
  } else if (s.type === 'boolean') {
    plausible = fc.boolean();
  } else if (s.type === 'array' && s.items) {
    plausible = fc.array(arbFor(s.items, depth + 1), { maxLength: 4 });
  } else {
    plausible = junk;
  }
  return fc.oneof({ weight: 5, arbitrary: plausible }, { weight: 1, arbitrary: junk });
}

const configObject = arbFor(ConfigSchema);

function check(run: () => unknown): void {
  let value: unknown;
  try {
    value = run();
  } catch (err) {
    if (!(err instanceof ConfigError)) {
      assert.fail(`threw ${(err as Error)?.constructor?.name ?? typeof err} instead of ConfigError: ${(err as Error)?.message ?? String(err)}`);
    }
    outcome.configError++;
    assert.ok(err.errors.length > 0, 'a ConfigError lists at least one problem');
    for (const line of err.errors) {
      assert.equal(typeof line, 'string');
      assert.ok(!line.includes('\n'), `one line per problem: ${JSON.stringify(line)}`);
      assert.match(line, /^.+?: \S/, `reads 'path: message': ${JSON.stringify(line)}`);
    }
    return;
  }
  outcome.valid++;
  assert.ok(Value.Check(ConfigSchema, value), `accepted a config that does not match the schema: ${[...Value.Errors(ConfigSchema, value)].map((e) => `${e.path} ${e.message}`).join('; ')}`);
}

test('parsed objects (what YAML gives): a valid config or a ConfigError, nothing else', () => {
  fc.assert(
    fc.property(fc.oneof({ weight: 8, arbitrary: configObject }, { weight: 1, arbitrary: junk }, { weight: 1, arbitrary: fc.anything() }), (input) => {
      tried.objects = (tried.objects ?? 0) + 1;
      check(() => parseConfig(input));
    }),
    { seed: SEED, numRuns: runs(6000), includeErrorInReport: true },
  );
});

// LINESIGHT_<SECTION>__<KEY>: keys from the schema in any case, unknown ones, odd separators.
const sectionNames = Object.keys((ConfigSchema as unknown as { properties: Record<string, unknown> }).properties);
const envName = fc
  .array(fc.oneof(fc.constantFrom(...sectionNames, 'id', 'url', 'port', 'providers', 'input', 'line', 'chip'), nastyString), { minLength: 0, maxLength: 4 })
  .chain((parts) => fc.tuple(fc.constant(parts), fc.constantFrom('__', '___', '_', '__ ')))
  .chain(([parts, sep]) => fc.mixedCase(fc.constant(`LINESIGHT_${parts.join(sep)}`)));
const envValue = fc.oneof(nastyString, fc.constantFrom('[cuda, cpu]', '[', '{a: 1}', '&a [*a]', '0123', '-1', '65536', 'true', '~', '!!js/function x', '1e400'), fc.json({ maxDepth: 2 }));

test('environment overrides: a valid config or a ConfigError, nothing else', () => {
  fc.assert(
    fc.property(fc.dictionary(envName, envValue, { maxKeys: 4 }), fc.oneof(fc.constant({}), configObject), (env, input) => {
      tried.env = (tried.env ?? 0) + 1;
      check(() => parseConfig(input, { env }));
    }),
    { seed: SEED, numRuns: runs(3000), includeErrorInReport: true },
  );
});

// YAML text: valid documents of random objects, the shipped example mutated byte by byte, alias
// chains (a billion laughs in small), and plain garbage.
const example = readFileSync(new URL('../../config/example.yaml', import.meta.url), 'utf8');
const mutatedExample = fc
  .array(
    fc.tuple(fc.nat({ max: example.length }), fc.nat({ max: 40 }), fc.oneof(fc.constant(''), nastyString, fc.constantFrom('\n', '\t', ':', '- ', '  ', '"', "'", '#', '&x', '*x', '<<: *x'))),
    { minLength: 1, maxLength: 6 },
  )
  .map((edits) => {
    let t = example;
    for (const [at, del, ins] of edits) t = t.slice(0, at % (t.length + 1)) + ins + t.slice((at % (t.length + 1)) + del);
    return t;
  });
const aliasChain = fc.tuple(fc.integer({ min: 1, max: 7 }), fc.integer({ min: 1, max: 12 }), fc.constantFrom('station', 'camera', 'x')).map(([depth, width, key]) => {
  const lines = ['a0: &a0 [lol, lol]'];
  for (let d = 1; d <= depth; d++) lines.push(`a${d}: &a${d} [${Array.from({ length: width }, () => `*a${d - 1}`).join(', ')}]`);
  lines.push(`${key}: *a${depth}`);
  return lines.join('\n');
});
const yamlText = fc.oneof(
  configObject.map((o) => {
    try {
      // undefined (a junk value) stringifies to undefined: an empty file then.
      return (YAML.stringify(o) as string | undefined) ?? '';
    } catch {
      return '';
    }
  }),
  mutatedExample,
  aliasChain,
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.constantFrom('a: &a [*a]', '---\na: 1\n---\nb: 2', '!!binary aGVsbG8=', '? [a, b]\n: 1', 'station: !!timestamp 2001-12-14', '\ufeffstation: {id: a}', '\t- x', 'line: {travelMs: .nan}'),
);

test('YAML files: loadConfig gives a valid config or a ConfigError, nothing else', () => {
  const file = join(dir, 'config.yaml');
  fc.assert(
    fc.property(yamlText, (text) => {
      tried.yaml = (tried.yaml ?? 0) + 1;
      writeFileSync(file, text);
      check(() => loadConfig(file, {}));
    }),
    { seed: SEED, numRuns: runs(3000), includeErrorInReport: true },
  );
});
