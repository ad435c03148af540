// Web single: the agent serves its own model over HTTP (POST /v1/predict through the same worker
// pool as the line, the line's parts first), its status, Prometheus metrics, the OpenAPI
// document and the operator page with live updates (server-sent events).
// Binds to localhost by default; anything that changes state needs the bearer token.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import { timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import sharp from 'sharp';
import type { Bus } from '../bus.js';
import type { Config } from '../config/schema.js';
import { nsToMs } from '../clock.js';
import { decodeImage } from '../inference/image.js';
import { InferenceError, type InferenceResult } from '../inference/types.js';
import { FrameError } from '../camera/types.js';
import type { Logger } from '../log.js';
import { hasPixels, type Frame, type Part } from '../part.js';
import type { Metrics } from '../telemetry/metrics.js';
import type { LineSnapshot } from '../telemetry/stats.js';
import type { StackLightState } from '../line/stacklight.js';
import { operatorPage } from './page.js';
import { parseCommand } from '../publish/commands.js';

export interface HttpDeps {
  cfg: Config['http'];
  log: Logger;
  bus: Bus;
  metrics: Metrics;
  status: () => Record<string, unknown>;
  model: () => Record<string, unknown> | undefined;
  ready: () => { ready: boolean; checks: Record<string, { ok: boolean; detail?: string }> };
  predict: (frame: Frame) => Promise<InferenceResult>;
  command: (name: string, payload: unknown) => Promise<unknown>;
  stats: () => LineSnapshot;
  stackLight: () => StackLightState | undefined;
  colour: () => 'gray' | 'rgb';
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** What the operator page shows of a part. */
export interface PartSummary {
  id: string;
  time: string;
  trigger: string;
  action?: string;
  verdict: string | null;
  score: number | null;
  threshold: number | null;
  failSafe: boolean;
  reason?: string;
  detail?: string;
  defects: { class: string; score: number; box?: [number, number, number, number] }[];
  map?: { width: number; height: number; data: number[] };
  latencyMs: number | null;
  frame?: { width: number; height: number };
  image?: string;
}

const REJECTS_KEPT = 12;
const COMMANDS = new Set(['trigger', 'pause', 'resume', 'model']);

export function summarize(p: Part): PartSummary {
  return {
    id: p.id,
    time: p.triggeredAt,
    trigger: p.trigger,
    action: p.action,
    verdict: p.verdict?.verdict ?? null,
    score: p.verdict?.score ?? null,
    threshold: p.verdict?.threshold ?? null,
    failSafe: p.failSafe,
    reason: p.reason,
    detail: p.detail,
    defects: (p.verdict?.defects ?? []).slice(0, 20).map((d) => ({ class: d.class, score: d.score, box: d.box })),
    map: p.verdict?.map,
    latencyMs: p.t.decidedNs !== undefined ? Number(nsToMs(p.t.decidedNs - p.t.triggerNs).toFixed(2)) : null,
    frame: p.frame ? { width: p.frame.width, height: p.frame.height } : undefined,
  };
}

export class HttpServer {
  private server?: Server;
  private sse = new Set<ServerResponse>();
  private rejects: { summary: PartSummary; jpeg?: Promise<Buffer | undefined> }[] = [];
  private predicting = 0;
  private unsub: (() => void)[] = [];
  private ticker?: NodeJS.Timeout;
  private openapi?: string;

  constructor(private readonly d: HttpDeps) {}

  /** Listen; with `tryNextPorts` (demo) a taken port moves to the next one. Returns the base URL. */
  async start(opts: { tryNextPorts?: boolean } = {}): Promise<string> {
    const { cfg } = this.d;
    if (!isLoopback(cfg.host) && !cfg.token) {
      throw new Error(`http.host is ${cfg.host} (not localhost) but http.token is not set: set a token (LINESIGHT_HTTP__TOKEN) so commands cannot be sent by anyone on the network`);
    }
    this.unsub.push(this.d.bus.on('decided', (p) => this.onDecided(p)));
    this.unsub.push(this.d.bus.on('alarm', (a) => this.broadcast('alarm', { ...a, time: new Date().toISOString() })));
    this.ticker = setInterval(() => this.broadcast('stats', this.live()), 1000);
    this.ticker.unref();
    let port = cfg.port;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.listen(port);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE' && opts.tryNextPorts && attempt < 20 && port !== 0) {
          port += 1;
          continue;
        }
        throw new Error(`cannot listen on ${cfg.host}:${port}: ${(err as Error).message} (set http.port, or http.enabled: false)`);
      }
    }
    return this.url();
  }

  private listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const server = createServer((req, res) => void this.handle(req, res));
      server.requestTimeout = 30_000;
      server.headersTimeout = 10_000;
      server.once('error', reject);
      server.listen(port, this.d.cfg.host, () => {
        server.off('error', reject);
        this.server = server;
        resolve();
      });
    });
  }

  url(): string {
    const a = this.server?.address() as AddressInfo | null;
    const host = this.d.cfg.host.includes(':') ? `[${this.d.cfg.host}]` : this.d.cfg.host;
    return a ? `http://${host}:${a.port}/` : '';
  }

  async stop(): Promise<void> {
    for (const u of this.unsub) u();
    this.unsub = [];
    if (this.ticker) clearInterval(this.ticker);
    for (const res of this.sse) res.end();
    this.sse.clear();
    await new Promise<void>((resolve) => {
      if (!this.server) return resolve();
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private live(): Record<string, unknown> {
    const status = this.d.status();
    return { stats: this.d.stats(), stackLight: this.d.stackLight(), state: status.state, model: status.model, provider: status.provider, station: status.station, line: status.line, time: new Date().toISOString() };
  }

  private onDecided(p: Part): void {
    const summary = summarize(p);
    const f = p.frame;
    // A fail-safe part whose JPEG went to a worker that never decoded it has no pixels to show.
    const keep = p.action === 'divert' && hasPixels(f);
    if (keep) summary.image = `/v1/parts/${encodeURIComponent(p.id)}/image.jpg`;
    this.broadcast('part', summary);
    if (p.action !== 'divert') return;
    const entry: { summary: PartSummary; jpeg?: Promise<Buffer | undefined> } = { summary };
    this.rejects.unshift(entry);
    this.rejects.length = Math.min(this.rejects.length, REJECTS_KEPT);
    if (keep && f) {
      // Encoded off the main thread by libvips; the page asks for it when it shows the reject.
      entry.jpeg = sharp(Buffer.from(f.data.buffer, f.data.byteOffset, f.data.byteLength), { raw: { width: f.width, height: f.height, channels: f.channels } })
        .jpeg({ quality: 80 })
        .toBuffer()
        .catch((err: Error) => {
          this.d.log.warn('reject image encode failed', { partId: p.id, err: err.message });
          return undefined;
        });
    }
  }

  private broadcast(event: string, data: unknown): void {
    if (this.sse.size === 0) return;
    const msg = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    for (const res of this.sse) res.write(msg);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = Date.now();
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (this.d.cfg.cors) res.setHeader('Access-Control-Allow-Origin', this.d.cfg.cors);
      res.setHeader('X-Content-Type-Options', 'nosniff');
      await this.route(req, res, url);
    } catch (err) {
      const status = err instanceof HttpError ? err.status : 500;
      if (status >= 500) this.d.log.error('http request failed', { method: req.method, url: req.url, err: (err as Error).message });
      if (!res.headersSent) {
        for (const [k, v] of Object.entries(err instanceof HttpError ? err.headers : {})) res.setHeader(k, v);
        send(res, status, { error: (err as Error).message });
      } else res.end();
      // Drain what the client is still sending so the socket can be reused or closed cleanly.
      req.resume();
    } finally {
      this.d.log.debug('http', { method: req.method, url: req.url, status: res.statusCode, ms: Date.now() - started });
    }
  }

  private async route(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const only = (m: string): void => {
      if (method !== m) throw new HttpError(405, `${path} accepts ${m} only`, { Allow: m });
    };
    if (path === '/' || path === '/index.html') {
      only('GET');
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store', 'Content-Security-Policy': "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; img-src 'self' data:" });
      res.end(operatorPage());
      return;
    }
    if (path === '/healthz') {
      only('GET');
      return send(res, 200, { ok: true });
    }
    if (path === '/readyz') {
      only('GET');
      const r = this.d.ready();
      return send(res, r.ready ? 200 : 503, r);
    }
    if (path === '/metrics') {
      only('GET');
      res.writeHead(200, { 'Content-Type': this.d.metrics.contentType });
      res.end(await this.d.metrics.text());
      return;
    }
    if (path === '/openapi.json' || path === '/v1/openapi.json') {
      only('GET');
      this.openapi ??= readFileSync(new URL('../../docs/openapi.json', import.meta.url), 'utf8');
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(this.openapi);
      return;
    }
    if (path === '/events') {
      only('GET');
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store', Connection: 'keep-alive' });
      res.write(`retry: 2000\n\nevent: stats\ndata: ${JSON.stringify(this.live())}\n\n`);
      res.write(`event: rejects\ndata: ${JSON.stringify(this.rejects.map((r) => r.summary))}\n\n`);
      this.sse.add(res);
      req.on('close', () => this.sse.delete(res));
      return;
    }
    if (path === '/v1/status') {
      only('GET');
      return send(res, 200, { ...this.d.status(), stats: this.d.stats(), stackLight: this.d.stackLight() });
    }
    if (path === '/v1/model') {
      only('GET');
      const m = this.d.model();
      if (!m) throw new HttpError(503, 'no model loaded yet');
      return send(res, 200, m);
    }
    if (path === '/v1/rejects') {
      only('GET');
      return send(res, 200, this.rejects.map((r) => r.summary));
    }
    const img = /^\/v1\/parts\/([^/]+)\/image\.jpg$/.exec(path);
    if (img) {
      only('GET');
      const id = decodeURIComponent(img[1]!);
      const jpeg = await this.rejects.find((r) => r.summary.id === id)?.jpeg;
      if (!jpeg) throw new HttpError(404, `no image kept for part ${id} (the last ${REJECTS_KEPT} diverted parts are kept)`);
      res.writeHead(200, { 'Content-Type': 'image/jpeg', 'Cache-Control': 'max-age=3600' });
      res.end(jpeg);
      return;
    }
    if (path === '/v1/predict') {
      only('POST');
      return this.predict(req, res);
    }
    const cmd = /^\/v1\/commands\/([a-z]+)$/.exec(path);
    if (cmd) {
      only('POST');
      this.authorize(req);
      const name = cmd[1]!;
      if (!COMMANDS.has(name)) throw new HttpError(404, `unknown command '${name}': use ${[...COMMANDS].join(', ')}`);
      const body = await readBody(req, 64 * 1024);
      // The same schemas as MQTT commands: one contract, one set of error messages.
      const parsed = parseCommand(name, body);
      if (!parsed.ok) throw new HttpError(400, parsed.error);
      try {
        return send(res, 200, { ok: true, command: name, result: await this.d.command(name, parsed.payload) });
      } catch (err) {
        throw new HttpError(409, (err as Error).message);
      }
    }
    throw new HttpError(404, `no such endpoint ${method} ${path} (see /openapi.json)`);
  }

  private authorize(req: IncomingMessage): void {
    const token = this.d.cfg.token;
    if (!token) return; // only possible on localhost (checked at start)
    const got = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '';
    const a = Buffer.from(got);
    const b = Buffer.from(token);
    if (a.length !== b.length || !timingSafeEqual(a, b)) {
      throw new HttpError(401, 'missing or wrong bearer token (Authorization: Bearer <http.token>)', { 'WWW-Authenticate': 'Bearer' });
    }
  }

  private async predict(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const max = this.d.cfg.maxConcurrent;
    if (this.predicting >= max) {
      throw new HttpError(503, `busy: ${max} predictions in progress (http.maxConcurrent); the line's parts go first`, { 'Retry-After': '1' });
    }
    this.predicting++;
    try {
      const declared = Number(req.headers['content-length'] ?? 0);
      if (declared > this.d.cfg.maxBodyBytes) throw new HttpError(413, `image is ${declared} bytes; the limit is ${this.d.cfg.maxBodyBytes} (http.maxBodyBytes)`);
      const body = await readBody(req, this.d.cfg.maxBodyBytes);
      const type = (req.headers['content-type'] ?? 'application/octet-stream').toLowerCase();
      let image: Buffer;
      if (type.startsWith('multipart/form-data')) image = firstFilePart(body, type);
      else if (type.startsWith('image/') || type.startsWith('application/octet-stream')) image = body;
      else throw new HttpError(415, `content-type ${type} is not an image: send image/jpeg, image/png, application/octet-stream or multipart/form-data`);
      if (image.length === 0) throw new HttpError(400, 'empty body: send the image bytes');
      let frame: Frame;
      try {
        frame = await decodeImage(image, { colour: this.d.colour(), source: 'http' });
      } catch (err) {
        throw new HttpError(422, err instanceof FrameError ? err.message : `cannot decode the image: ${(err as Error).message}`);
      }
      try {
        const r = await this.d.predict(frame);
        send(res, 200, { verdict: r.verdict.verdict, score: r.verdict.score, threshold: r.verdict.threshold, label: r.verdict.label, scores: r.verdict.scores, defects: r.verdict.defects, model: r.model, provider: r.provider, timings: r.timings, width: frame.width, height: frame.height });
      } catch (err) {
        if (err instanceof InferenceError && err.reason === 'overload') throw new HttpError(503, err.message, { 'Retry-After': '1' });
        if (err instanceof InferenceError && err.reason === 'bad_frame') throw new HttpError(422, err.message);
        throw new HttpError(500, (err as Error).message);
      }
    } finally {
      this.predicting--;
    }
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(text);
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(new HttpError(413, `body larger than ${limit} bytes (http.maxBodyBytes)`));
        req.pause();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** The first part of a multipart/form-data body that carries a file (or the first part at all). */
export function firstFilePart(body: Buffer, contentType: string): Buffer {
  const m = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(contentType);
  const boundary = m?.[1] ?? m?.[2];
  if (!boundary) throw new HttpError(400, 'multipart/form-data without a boundary');
  const delim = Buffer.from(`--${boundary}`);
  const parts: Buffer[] = [];
  let pos = body.indexOf(delim);
  while (pos !== -1) {
    const start = pos + delim.length;
    if (body.subarray(start, start + 2).toString() === '--') break;
    const next = body.indexOf(delim, start);
    if (next === -1) break;
    parts.push(body.subarray(start + 2, next - 2)); // skip CRLF after the delimiter and before the next
    pos = next;
  }
  let fallback: Buffer | undefined;
  for (const p of parts) {
    const sep = p.indexOf('\r\n\r\n');
    if (sep === -1) continue;
    const headers = p.subarray(0, sep).toString('utf8');
    const content = p.subarray(sep + 4);
    if (/filename=/i.test(headers)) return content;
    fallback ??= content;
  }
  if (fallback) return fallback;
  throw new HttpError(400, 'multipart body has no part with an image (send the file as a form field)');
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}
