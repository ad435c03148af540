import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, configJsonSchema, loadConfig, parseConfig } from '../../src/config/load.js';

test('an empty config gets every default', () => {
  const c = parseConfig({});
  assert.equal(c.camera.source, 'synthetic');
  assert.equal(c.station.line, 'line1');
  assert.deepEqual(c.model.providers, ['cpu']);
  assert.equal(c.line.pulseMs, 80);
  assert.equal(c.http.host, '127.0.0.1');
});

test('every error is reported at once as path: message', () => {
  let err: unknown;
  try {
    parseConfig({ camera: { source: 'webcam', synthetic: { fps: -1 } }, model: { workers: 'two' }, bogus: 1 });
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof ConfigError);
  const lines = err.errors;
  assert.ok(lines.includes('camera.source: must be one of "synthetic", "replay", "ffmpeg", "v4l2" (got "webcam")'), lines.join('\n'));
  assert.ok(lines.some((l) => l.startsWith('camera.synthetic.fps: ')));
  assert.ok(lines.some((l) => l.startsWith('model.workers: expected integer')));
  assert.ok(lines.some((l) => l.startsWith('bogus: unknown setting')));
  assert.equal(lines.length, 4);
});

test('camera.replay.decodeIn: worker by default, main when asked (also from the environment), anything else a path: message error', () => {
  assert.equal(parseConfig({}).camera.replay.decodeIn, 'worker');
  assert.equal(parseConfig({ camera: { replay: { decodeIn: 'main' } } }).camera.replay.decodeIn, 'main');
  assert.equal(parseConfig({}, { env: { LINESIGHT_CAMERA__REPLAY__DECODEIN: 'main' } }).camera.replay.decodeIn, 'main');
  assert.throws(
    () => parseConfig({ camera: { replay: { decodeIn: 'gpu' } } }),
    (e: unknown) => e instanceof ConfigError && e.errors.join('\n') === 'camera.replay.decodeIn: must be one of "main", "worker" (got "gpu")',
  );
});

test('archive.pngLevel: 6 by default, 0-9, anything else a path: message error', () => {
  assert.equal(parseConfig({}).archive.pngLevel, 6);
  assert.equal(parseConfig({ archive: { pngLevel: 3 } }).archive.pngLevel, 3);
  assert.throws(
    () => parseConfig({ archive: { pngLevel: 12 } }),
    (e: unknown) => e instanceof ConfigError && /^archive\.pngLevel: /.test(e.errors.join('\n')),
  );
});

test('environment overrides any key, typed by the schema', () => {
  const c = parseConfig({ mqtt: { url: 'mqtt://file:1883' } }, {
    env: { LINESIGHT_MQTT__URL: 'mqtt://env:1883', LINESIGHT_MODEL__PROVIDERS: '[cuda, cpu]', LINESIGHT_LINE__PULSEMS: '50', LINESIGHT_STATION__ID: '0042', HOME: '/root' },
  });
  assert.equal(c.mqtt.url, 'mqtt://env:1883');
  assert.deepEqual(c.model.providers, ['cuda', 'cpu']);
  assert.equal(c.line.pulseMs, 50);
  assert.equal(c.station.id, '0042');
});

test('an unknown environment key is an error, not ignored', () => {
  assert.throws(() => parseConfig({}, { env: { LINESIGHT_MQTT__URLL: 'x' } }), /env LINESIGHT_MQTT__URLL: no setting 'mqtt.URLL'/);
});

test('YAML syntax errors name the line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ls-cfg-'));
  const f = join(dir, 'bad.yaml');
  writeFileSync(f, 'camera:\n  source: [synthetic\n');
  assert.throws(() => loadConfig(f, {}), (e: unknown) => e instanceof ConfigError && /line \d+/.test(e.errors[0]!));
  assert.throws(() => loadConfig(join(dir, 'missing.yaml'), {}), /cannot read/);
});

test('the printed JSON Schema describes the sections with defaults', () => {
  const s = configJsonSchema() as { properties: Record<string, { properties: Record<string, { default?: unknown }> }> };
  assert.equal(s.properties.line!.properties.pulseMs!.default, 80);
  assert.ok(s.properties.mqtt);
});
