// The command line as a user runs it (from the TypeScript sources through tsx, so no build is needed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { renderFilmFrame } from '../../src/camera/synthetic.js';

function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('config check: a broken config exits 2 listing every error as path: message', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ls-cli-'));
  const f = join(dir, 'bad.yaml');
  writeFileSync(f, 'camera:\n  source: webcam\nline:\n  pulseMs: -5\nmqtt:\n  protocolVersion: 6\nextra: 1\n');
  const r = cli(['config', 'check', f]);
  assert.equal(r.code, 2);
  for (const path of ['camera.source', 'line.pulseMs', 'mqtt.protocolVersion', 'extra']) assert.match(r.err, new RegExp(`^  ${path.replace('.', '\\.')}: `, 'm'), r.err);
});

test('config check: a good config is accepted; environment overrides are validated too', () => {
  assert.equal(cli(['config', 'check', 'config/example.yaml']).code, 0);
  const r = cli(['config', 'check', 'config/example.yaml'], { LINESIGHT_LINE__PULSEMS: 'fast' });
  assert.equal(r.code, 2);
  assert.match(r.err, /line\.pulseMs: /);
});

test('config schema prints a JSON Schema', () => {
  const r = cli(['config', 'schema']);
  assert.equal(r.code, 0);
  const s = JSON.parse(r.out);
  assert.ok(s.properties.camera && s.properties.mqtt);
});

test('predict --json prints one verdict per image, an unreadable file gets an error line', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ls-predict-'));
  const files: string[] = [];
  for (const [i, rate] of [[0, 0], [1, 1]] as const) {
    const f = renderFilmFrame({ width: 320, height: 240, seed: 11, defectRate: rate }, i);
    const p = join(dir, `film${i}.jpg`);
    await sharp(Buffer.from(f.data), { raw: { width: f.width, height: f.height, channels: 3 } }).jpeg({ quality: 95 }).toFile(p);
    files.push(p);
  }
  const broken = join(dir, 'broken.png');
  writeFileSync(broken, 'not a png');
  const r = cli(['predict', '--json', ...files, broken]);
  const lines = r.out.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, 3, r.out + r.err);
  for (const l of lines.slice(0, 2)) {
    assert.ok(['pass', 'reject'].includes(l.verdict));
    assert.equal(typeof l.score, 'number');
    assert.equal(l.verdict === 'reject', l.score >= l.threshold);
    assert.ok(Array.isArray(l.defects));
  }
  assert.equal(lines[2].file, broken);
  assert.match(lines[2].error, /broken\.png/);
  assert.equal(r.code, 1, 'a failed image makes the exit code non-zero');
});

test('unknown command: exit 2 with usage', () => {
  const r = cli(['frobnicate']);
  assert.equal(r.code, 2);
  assert.match(r.err, /unknown command 'frobnicate'/);
});
