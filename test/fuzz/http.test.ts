// Bad input, HTTP: a running agent (real model, command trigger, no broker) gets random bytes,
// content types and multipart bodies on POST /v1/predict and /v1/commands/*. Every request gets an
// answer: 2xx, 4xx or 503, JSON, with an `error` text when it is refused; never a 5xx from a
// crash, never a dropped connection; and the agent still answers /healthz afterwards.
//
// FUZZ_SEED=<n> replays a run (the seed is printed); FUZZ_SCALE=<x> multiplies the number of inputs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import sharp from 'sharp';
import { Agent } from '../../src/agent.js';
import { parseConfig } from '../../src/config/load.js';
import { renderFilmFrame } from '../../src/camera/synthetic.js';
import { memoryLogger } from '../../src/log.js';

const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
const SCALE = Number(process.env.FUZZ_SCALE ?? 1);
const runs = (n: number): number => Math.max(1, Math.round(n * SCALE));
const MAX_BODY = 64 * 1024;
const TOKEN = 'fuzz-token';
const tried: Record<string, number> = {};
const statuses: Record<number, number> = {};
after(() => {
  const total = Object.values(tried).reduce((a, b) => a + b, 0);
  console.log(
    `fuzz http: ${total} requests sent (${Object.entries(tried).map(([k, v]) => `${k} ${v}`).join(', ')}); ` +
      `statuses ${Object.entries(statuses).map(([k, v]) => `${k}x${v}`).join(' ')}; seed ${SEED}`,
  );
});

let agent: Agent;
let port = 0;
const stateDir = mkdtempSync(join(tmpdir(), 'linesight-fuzz-http-'));
const images: Buffer[] = [];

before(async () => {
  const cfg = parseConfig({
    station: { stateDir },
    trigger: { mode: 'command' },
    http: { port: 0, token: TOKEN, maxConcurrent: 2, maxBodyBytes: MAX_BODY },
  });
  agent = new Agent(cfg, { log: memoryLogger() });
  await agent.start();
  port = Number(new URL(agent.httpUrl!).port);
  const f = renderFilmFrame({ width: 64, height: 48, seed: 9, defectRate: 0.5 }, 1);
  const img = () => sharp(Buffer.from(f.data), { raw: { width: 64, height: 48, channels: 3 } });
  images.push(await img().png().toBuffer(), await img().jpeg().toBuffer(), await img().toColourspace('b-w').png().toBuffer(), await img().webp().toBuffer());
  images.push(await sharp({ create: { width: 1, height: 1, channels: 3, background: '#fff' } }).png().toBuffer());
  images.push(await sharp({ create: { width: 2000, height: 3, channels: 4, background: '#0008' } }).png().toBuffer());
});
after(async () => {
  await agent?.stop();
  rmSync(stateDir, { recursive: true, force: true });
});

interface Req {
  path: string;
  headers: Record<string, string>;
  body: Buffer;
  /** Send without Content-Length (chunked). */
  chunked: boolean;
}
interface Res {
  status: number;
  type: string;
  body: string;
}

function send(r: Req): Promise<Res> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { ...r.headers };
    if (!r.chunked) headers['content-length'] = r.body.length;
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: r.path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    // A dropped connection (reset, hang-up) fails the property: every request deserves an answer.
    req.on('error', (err) => reject(new Error(`no answer to POST ${r.path}: ${err.message}`)));
    req.end(r.body);
  });
}

function verify(r: Req, res: Res): void {
  statuses[res.status] = (statuses[res.status] ?? 0) + 1;
  const ok = (res.status >= 200 && res.status < 300) || (res.status >= 400 && res.status < 500) || res.status === 503;
  assert.ok(ok, `POST ${r.path} (${r.headers['content-type'] ?? 'no type'}, ${r.body.length} bytes) answered ${res.status}: ${res.body.slice(0, 300)}`);
  assert.match(res.type, /^application\/json/, `JSON answer for ${r.path}`);
  const json = JSON.parse(res.body) as Record<string, unknown>;
  if (res.status >= 400) assert.ok(typeof json.error === 'string' && json.error.length > 0, `a refusal says why: ${res.body}`);
}

// ---- generators --------------------------------------------------------------------------------

const NASTY_TYPES = [
  'image/png',
  'image/jpeg',
  'IMAGE/PNG',
  'image/',
  'image/svg+xml',
  'application/octet-stream',
  'application/json',
  'text/plain',
  'multipart/form-data',
  'multipart/form-data; boundary=',
  'multipart/form-data; boundary=""',
  'multipart/form-data; boundary="a b"',
  'multipart/mixed; boundary=x',
  '',
  ';',
  'image/png; charset=\u00ff',
];
const contentType = fc.oneof(fc.constantFrom(...NASTY_TYPES), fc.string({ maxLength: 40 }).map((s) => s.replace(/[^\t\x20-\x7e]/g, '')));
const imageBody = fc.tuple(fc.nat(), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }), fc.option(fc.nat(), { nil: undefined })).map(([pick, flips, cut]) => {
  const b = Buffer.from(images[pick % images.length]!);
  for (const [at, v] of flips) b[at % b.length] = v;
  return cut === undefined ? b : b.subarray(0, cut % (b.length + 1));
});
const bytes = fc.oneof(fc.uint8Array({ maxLength: 4096 }).map((u) => Buffer.from(u)), imageBody, fc.constantFrom(Buffer.alloc(0), Buffer.alloc(MAX_BODY + 1, 0x41)));

/** multipart/form-data with random parts: file or plain fields, broken headers, wrong boundaries. */
const multipart = fc
  .tuple(
    fc.oneof(fc.stringMatching(/^[A-Za-z0-9'()+_,.\/:=?-]{1,40}$/), fc.constantFrom('x', '----WebKitFormBoundary7MA4YWxkTrZu0gW', '--', 'a"b')),
    fc.array(
      fc.record({
        name: fc.oneof(fc.constantFrom('image', 'file', ''), fc.string({ maxLength: 10 })),
        filename: fc.option(fc.oneof(fc.constantFrom('a.png', '', '../../etc/passwd'), fc.string({ maxLength: 10 })), { nil: undefined }),
        type: fc.option(fc.constantFrom('image/png', 'image/jpeg', 'text/plain'), { nil: undefined }),
        body: fc.oneof(imageBody, fc.uint8Array({ maxLength: 512 }).map((u) => Buffer.from(u))),
        crlf: fc.constantFrom('\r\n', '\n', ''),
      }),
      { maxLength: 3 },
    ),
    fc.boolean(),
    fc.boolean(),
    fc.boolean(),
  )
  .map(([boundary, parts, close, quote, wrongBoundary]) => {
    const chunks: Buffer[] = [];
    for (const p of parts) {
      const disp = `Content-Disposition: form-data; name="${p.name}"${p.filename !== undefined ? `; filename="${p.filename}"` : ''}`;
      chunks.push(Buffer.from(`--${boundary}\r\n${disp}\r\n${p.type ? `Content-Type: ${p.type}\r\n` : ''}${p.crlf}\r\n`), p.body, Buffer.from('\r\n'));
    }
    if (close) chunks.push(Buffer.from(`--${boundary}--\r\n`));
    const declared = wrongBoundary ? `${boundary}x` : boundary;
    return {
      type: `multipart/form-data; boundary=${quote ? `"${declared}"` : declared}`,
      body: Buffer.concat(chunks),
    };
  });

const commandPath = fc.oneof(
  fc.constantFrom('/v1/commands/trigger', '/v1/commands/pause', '/v1/commands/resume'),
  fc.constantFrom('/v1/commands/status', '/v1/commands/TRIGGER', '/v1/commands/', '/v1/commands/trigger/', '/v1/commands/%00', '/v1/commands/constructor', '/v1/commands/__proto__'),
  fc.stringMatching(/^[a-z]{0,12}$/).map((s) => `/v1/commands/${s}`),
);
const commandBody = fc.oneof(
  fc.json({ maxDepth: 3 }).map((s) => Buffer.from(s)),
  fc.uint8Array({ maxLength: 256 }).map((u) => Buffer.from(u)),
  fc.constantFrom(Buffer.alloc(0), Buffer.from('{}'), Buffer.from('{"requestId":"r1"}'), Buffer.from('{'), Buffer.from('null'), Buffer.alloc(70 * 1024, 0x20)),
);
const auth = fc.oneof(
  { weight: 4, arbitrary: fc.constant(`Bearer ${TOKEN}`) },
  { weight: 1, arbitrary: fc.constantFrom('', 'Bearer', 'Bearer ', `Bearer ${TOKEN}x`, `bearer ${TOKEN}`, 'Basic YTpi', `Bearer ${'\u00e9'.repeat(TOKEN.length)}`) },
);

const predictReq: fc.Arbitrary<Req> = fc.oneof(
  fc.tuple(fc.option(contentType, { nil: undefined }), bytes, fc.boolean()).map(([type, body, chunked]): Req => ({
    path: '/v1/predict',
    headers: type === undefined ? {} : { 'content-type': type },
    body,
    chunked,
  })),
  fc.tuple(multipart, fc.boolean()).map(([m, chunked]) => ({ path: '/v1/predict', headers: { 'content-type': m.type }, body: m.body, chunked })),
);
const commandReq: fc.Arbitrary<Req> = fc.tuple(commandPath, commandBody, auth, fc.option(contentType, { nil: undefined }), fc.boolean()).map(([path, body, a, type, chunked]) => ({
  path,
  headers: { ...(a ? { authorization: a } : {}), ...(type !== undefined ? { 'content-type': type } : {}) },
  body,
  chunked,
}));

// ---- properties --------------------------------------------------------------------------------

test('POST /v1/predict with random bytes, types and multipart bodies: always an answer, never a 5xx but 503', async () => {
  await fc.assert(
    fc.asyncProperty(predictReq, async (r) => {
      tried.predict = (tried.predict ?? 0) + 1;
      verify(r, await send(r));
    }),
    { seed: SEED, numRuns: runs(1500), includeErrorInReport: true },
  );
});

test('POST /v1/commands/* with random names, bodies and tokens: always an answer, never a 5xx', async () => {
  await fc.assert(
    fc.asyncProperty(commandReq, async (r) => {
      tried.commands = (tried.commands ?? 0) + 1;
      verify(r, await send(r));
    }),
    { seed: SEED, numRuns: runs(1500), includeErrorInReport: true },
  );
});

test('bursts of concurrent requests (more than http.maxConcurrent): busy is a 503, nothing is dropped', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.oneof(predictReq, commandReq), { minLength: 2, maxLength: 8 }), async (reqs) => {
      tried.concurrent = (tried.concurrent ?? 0) + reqs.length;
      const answers = await Promise.all(reqs.map((r) => send(r)));
      answers.forEach((res, i) => verify(reqs[i]!, res));
    }),
    { seed: SEED, numRuns: runs(200), includeErrorInReport: true },
  );
});

test('after the campaign the agent is alive: /healthz answers and a good image still gets a verdict', async () => {
  const health = await fetch(`http://127.0.0.1:${port}/healthz`);
  assert.equal(health.status, 200);
  assert.deepEqual(await health.json(), { ok: true });
  const res = await send({ path: '/v1/predict', headers: { 'content-type': 'image/png' }, body: images[0]!, chunked: false });
  assert.equal(res.status, 200, res.body);
  assert.ok(['pass', 'reject'].includes((JSON.parse(res.body) as { verdict: string }).verdict));
  const status = (await (await fetch(`http://127.0.0.1:${port}/v1/status`)).json()) as { state: string };
  assert.ok(['running', 'paused'].includes(status.state), `state ${status.state}`);
});
