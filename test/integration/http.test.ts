// The HTTP API against a running agent (real model, real images, sim GPIO, no broker).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:http';
import sharp from 'sharp';
import { Agent } from '../../src/agent.js';
import { parseConfig } from '../../src/config/load.js';
import { renderFilmFrame } from '../../src/camera/synthetic.js';
import { memoryLogger } from '../../src/log.js';

let agent: Agent;
let base: string;
const TOKEN = 'test-token-123';

async function filmJpeg(index: number, defectRate: number): Promise<Buffer> {
  const f = renderFilmFrame({ width: 320, height: 240, seed: 5, defectRate }, index);
  return sharp(Buffer.from(f.data), { raw: { width: f.width, height: f.height, channels: 3 } }).jpeg({ quality: 95 }).toBuffer();
}

before(async () => {
  const cfg = parseConfig({
    station: { stateDir: mkdtempSync(join(tmpdir(), 'ls-http-')) },
    trigger: { mode: 'command' },
    http: { port: 0, token: TOKEN, maxConcurrent: 1, maxBodyBytes: 2 * 1024 * 1024 },
  });
  agent = new Agent(cfg, { log: memoryLogger() });
  await agent.start();
  base = agent.httpUrl!.replace(/\/$/, '');
});
after(async () => {
  await agent.stop();
});

test('healthz, readyz, status and model', async () => {
  assert.deepEqual(await (await fetch(`${base}/healthz`)).json(), { ok: true });
  const ready = await fetch(`${base}/readyz`);
  assert.equal(ready.status, 200, JSON.stringify(await ready.clone().json()));
  const status = (await (await fetch(`${base}/v1/status`)).json()) as { state: string; model: { name: string }; stats: { parts: number } };
  assert.equal(status.state, 'running');
  assert.equal(status.model.name, 'film-demo');
  const model = (await (await fetch(`${base}/v1/model`)).json()) as { name: string; sha256: string; threshold: number };
  assert.equal(model.name, 'film-demo');
  assert.match(model.sha256, /^[0-9a-f]{64}$/);
});

test('POST /v1/predict with a raw image and with multipart returns the verdict', async () => {
  const img = await filmJpeg(0, 1);
  const raw = await fetch(`${base}/v1/predict`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: img });
  assert.equal(raw.status, 200);
  const v = (await raw.json()) as { verdict: string; score: number; threshold: number; provider: string; defects: unknown[] };
  assert.ok(['pass', 'reject'].includes(v.verdict));
  assert.equal(v.verdict === 'reject', v.score >= v.threshold);
  assert.equal(v.provider, 'cpu');
  const form = new FormData();
  form.append('image', new Blob([img], { type: 'image/jpeg' }), 'film.jpg');
  const multi = await fetch(`${base}/v1/predict`, { method: 'POST', body: form });
  assert.equal(multi.status, 200);
  const w = (await multi.json()) as { score: number };
  assert.equal(w.score, v.score, 'same image, same score through either encoding');
});

test('bad requests get a 4xx with a reason, and the agent keeps serving', async () => {
  const corrupt = await fetch(`${base}/v1/predict`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: 'not a png' });
  assert.equal(corrupt.status, 422);
  assert.match(((await corrupt.json()) as { error: string }).error, /decode|unsupported|image/i);
  const wrongType = await fetch(`${base}/v1/predict`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello' });
  assert.equal(wrongType.status, 415);
  const empty = await fetch(`${base}/v1/predict`, { method: 'POST', headers: { 'content-type': 'image/jpeg' } });
  assert.equal(empty.status, 400);
  const big = await fetch(`${base}/v1/predict`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: Buffer.alloc(3 * 1024 * 1024) });
  assert.equal(big.status, 413);
  assert.equal((await fetch(`${base}/v1/predict`)).status, 405);
  assert.equal((await fetch(`${base}/nope`)).status, 404);
  const ok = await fetch(`${base}/v1/predict`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: await filmJpeg(1, 0) });
  assert.equal(ok.status, 200);
});

test('over http.maxConcurrent: 503 with Retry-After', async () => {
  // Hold the one slot with a request whose body is still being sent.
  const u = new URL(`${base}/v1/predict`);
  const held = request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { 'content-type': 'image/jpeg', 'content-length': '100000' } });
  held.on('error', () => {});
  held.write(Buffer.alloc(10));
  await new Promise((r) => setTimeout(r, 200));
  const busy = await fetch(`${base}/v1/predict`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: await filmJpeg(2, 0) });
  assert.equal(busy.status, 503);
  assert.equal(busy.headers.get('retry-after'), '1');
  held.destroy();
});

test('commands need the token; trigger makes a part', async () => {
  const no = await fetch(`${base}/v1/commands/trigger`, { method: 'POST' });
  assert.equal(no.status, 401);
  const wrong = await fetch(`${base}/v1/commands/trigger`, { method: 'POST', headers: { authorization: 'Bearer nope' } });
  assert.equal(wrong.status, 401);
  const auth = { authorization: `Bearer ${TOKEN}` };
  const bad = await fetch(`${base}/v1/commands/trigger`, { method: 'POST', headers: auth, body: '{not json' });
  assert.equal(bad.status, 400);
  const unknown = await fetch(`${base}/v1/commands/explode`, { method: 'POST', headers: auth });
  assert.equal(unknown.status, 404);
  const before = agent.stats.snapshot().parts;
  const r = await fetch(`${base}/v1/commands/trigger`, { method: 'POST', headers: auth });
  assert.equal(r.status, 200);
  const body = (await r.json()) as { ok: boolean; result: { partId: string } };
  assert.equal(body.ok, true);
  assert.match(body.result.partId, /-\d{6}$/);
  const end = Date.now() + 10_000;
  while (agent.stats.snapshot().parts === before && Date.now() < end) await new Promise((x) => setTimeout(x, 20));
  assert.equal(agent.stats.snapshot().parts, before + 1);
  const paused = await fetch(`${base}/v1/commands/pause`, { method: 'POST', headers: auth });
  assert.equal(((await paused.json()) as { result: { state: string } }).result.state, 'paused');
  assert.equal((await fetch(`${base}/readyz`)).status, 503, 'not ready while paused');
  await fetch(`${base}/v1/commands/resume`, { method: 'POST', headers: auth });
  assert.equal((await fetch(`${base}/readyz`)).status, 200);
});

test('/metrics exposes the line in Prometheus format', async () => {
  const text = await (await fetch(`${base}/metrics`)).text();
  for (const name of ['linesight_parts_total', 'linesight_stage_seconds_bucket', 'linesight_model_info', 'linesight_parts_in_flight', 'linesight_nodejs_eventloop_lag_p99_seconds', 'linesight_process_resident_memory_bytes', 'linesight_outbox_dropped_total']) {
    assert.ok(text.includes(name), `metric ${name} missing`);
  }
  assert.match(text, /linesight_model_info\{name="film-demo",version="[^"]+",sha256="[0-9a-f]{64}",provider="cpu"\} 1/);
});

test('the operator page and the OpenAPI document are served', async () => {
  const page = await fetch(`${base}/`);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /linesight — operator/);
  const api = (await (await fetch(`${base}/openapi.json`)).json()) as { openapi: string; paths: Record<string, unknown> };
  assert.equal(api.openapi, '3.1.0');
  assert.ok(api.paths['/v1/predict']);
});

test('a non-localhost bind without a token is refused at start', async () => {
  const cfg = parseConfig({ station: { stateDir: mkdtempSync(join(tmpdir(), 'ls-http2-')) }, trigger: { mode: 'command' }, http: { host: '0.0.0.0', port: 0 } });
  const a = new Agent(cfg, { log: memoryLogger() });
  await assert.rejects(a.start(), /http\.token/);
});

test('ready heartbeat: the ready output toggles while running and stays low after stop', async () => {
  const { SimGpio } = await import('../../src/gpio/sim.js');
  const { SystemClock } = await import('../../src/clock.js');
  const clock = new SystemClock();
  const gpio = new SimGpio({ clock });
  const cfg = parseConfig({ station: { stateDir: mkdtempSync(join(tmpdir(), 'ls-hb-')) }, trigger: { mode: 'command' }, http: { enabled: false }, gpio: { readyHeartbeatMs: 20 } });
  const a = new Agent(cfg, { log: memoryLogger(), clock, gpio });
  await a.start();
  await new Promise((r) => setTimeout(r, 300));
  const toggles = gpio.history({ chip: 'sim0', line: 2 }).length;
  await a.stop();
  assert.ok(toggles >= 4, `ready toggled ${toggles} times`);
  const after = gpio.history({ chip: 'sim0', line: 2 }).length;
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(gpio.history({ chip: 'sim0', line: 2 }).length, after, 'no toggling after stop');
  assert.equal(gpio.level({ chip: 'sim0', line: 2 }), 0);
});
