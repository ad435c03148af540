// `linesight models serve DIR`: hosts a folder as a registry over plain HTTP, read-only, with one
// command (a line PC, a laptop next to the line). index.json is built from the folders when the
// folder has none, on every request, so a bundle copied in shows up at once. Flat bundles
// (NAME/model.json, as in models/) are served under NAME/VERSION/ like nested ones.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, resolve, sep } from 'node:path';
import type { Logger } from '../log.js';
import { bundleDirIn, buildIndex } from './registry.js';

export interface ServeOptions {
  dir: string;
  /** 0 = any free port. */
  port?: number;
  host?: string;
  log?: Logger;
}

export interface RegistryServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

const TYPES: Record<string, string> = {
  '.json': 'application/json',
  '.onnx': 'application/octet-stream',
  '.sig': 'text/plain; charset=utf-8',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.bmp': 'image/bmp',
};

export async function serveRegistry(opts: ServeOptions): Promise<RegistryServer> {
  const root = resolve(opts.dir);
  const st = await stat(root).catch(() => undefined);
  if (!st?.isDirectory()) throw new Error(`${opts.dir} is not a folder`);
  const log = opts.log;

  const server = createServer((req, res) => {
    void handle(root, req, res).catch((err: Error) => {
      log?.error('registry request failed', { url: req.url, error: err.message });
      if (!res.headersSent) send(res, 500, 'internal error\n');
      else res.destroy();
    });
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', fail);
      ok();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `http://${host}:${addr.port}/`;
  log?.info('model registry serving', { dir: root, url });
  return {
    url,
    port: addr.port,
    close: () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        server.closeAllConnections();
      }),
  };
}

function send(res: ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-cache' });
  res.end(body);
}

async function handle(root: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD');
    return send(res, 405, 'read-only registry: GET or HEAD\n');
  }
  let segments: string[];
  try {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    segments = path.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    return send(res, 400, 'bad path\n');
  }
  // No way out of the folder: no dot segments, no separators or NULs hidden in a segment.
  if (segments.some((s) => s === '.' || s === '..' || s.includes('/') || s.includes('\\') || s.includes('\0') || s.startsWith('.'))) {
    return send(res, 404, 'not found\n');
  }
  if (segments.length === 0 || (segments.length === 1 && segments[0] === 'index.json')) {
    const file = join(root, 'index.json');
    if (await isFile(file)) return serveFile(req, res, file);
    const body = JSON.stringify(await buildIndex(root), null, 2) + '\n';
    return send(res, 200, req.method === 'HEAD' ? '' : body, 'application/json');
  }
  const direct = join(root, ...segments);
  if (direct.startsWith(root + sep) && (await isFile(direct))) return serveFile(req, res, direct);
  if (segments.length >= 3) {
    const dir = await bundleDirIn(root, segments[0]!, segments[1]!);
    const file = dir ? join(dir, ...segments.slice(2)) : undefined;
    if (file && file.startsWith(root + sep) && (await isFile(file))) return serveFile(req, res, file);
  }
  return send(res, 404, 'not found\n');
}

const isFile = (p: string): Promise<boolean> => stat(p).then((s) => s.isFile(), () => false);

async function serveFile(req: IncomingMessage, res: ServerResponse, file: string): Promise<void> {
  const s = await stat(file);
  res.writeHead(200, {
    'content-type': TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream',
    'content-length': s.size,
    // index.json changes as bundles are published; bundle files never change under one version.
    'cache-control': file.endsWith('index.json') ? 'no-cache' : 'max-age=60',
    'last-modified': s.mtime.toUTCString(),
  });
  if (req.method === 'HEAD') return void res.end();
  await new Promise<void>((ok, fail) => {
    createReadStream(file).on('error', fail).pipe(res).on('finish', ok).on('error', fail);
  });
}
