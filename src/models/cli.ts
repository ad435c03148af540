// `linesight models …`: the model lifecycle from a shell — list a registry, pull into a cache,
// verify and sign bundles, make a signing key, serve a folder as a registry. Exit codes as the
// main CLI: 0 ok, 1 failure (a bundle refused, a registry unreachable), 2 bad usage.
import { parseArgs } from 'node:util';
import { join, resolve } from 'node:path';
import { createLogger, type Logger } from '../log.js';
import { ModelLoadError } from '../inference/types.js';
import { ModelCache, writeFileAtomic } from './cache.js';
import { describeGoldenFailures, runGolden } from './golden.js';
import { buildIndex, ModelStore, openRegistry, parseRef, type RegistryIndex } from './registry.js';
import { serveRegistry } from './serve.js';
import { readPrivateKey, readPublicKey, signBundle, verifyBundle, writeKeyPair } from './sign.js';

export const MODELS_USAGE = `Usage:
  linesight models list [--registry URL|DIR] [--cache DIR] [--json]
                                     models and versions of a registry (default: the bundled models/ folder)
  linesight models pull NAME@VERSION --registry URL|DIR [--cache DIR] [--key PUB.pem] [--max-bytes N]
                                     download, verify and cache a bundle (NAME@latest: the newest)
  linesight models verify DIR [--key PUB.pem] [--golden]
                                     check a bundle: signature (with --key), manifest, sha256, golden files;
                                     --golden also runs the golden samples through the model
  linesight models sign DIR --key PRIV.pem
                                     write DIR/model.json.sig (ed25519 over model.json)
  linesight models keygen OUT        write an ed25519 key pair: OUT.pem (private) and OUT.pub.pem
  linesight models index DIR         write DIR/index.json from the bundle folders (for static hosting)
  linesight models serve DIR [--port N] [--host 127.0.0.1]
                                     host a folder as a registry over HTTP (index.json built if missing)`;

export const DEFAULT_CACHE_DIR = 'var/models';
export const DEFAULT_CACHE_MAX_BYTES = 2 * 1024 ** 3;
export const DEFAULT_SERVE_PORT = 8090;

class UsageError extends Error {}

export interface ModelsCommandIo {
  out?: (line: string) => void;
  err?: (line: string) => void;
  log?: Logger;
  /** serve: resolves when the server should close (default: SIGINT or SIGTERM). */
  until?: (server: { url: string }) => Promise<void>;
}

export async function modelsCommand(args: string[], io: ModelsCommandIo = {}): Promise<number> {
  const out = io.out ?? ((l: string) => console.log(l));
  const err = io.err ?? ((l: string) => console.error(l));
  const log = io.log ?? createLogger({ level: 'warn' });
  const [sub, ...rest] = args;
  try {
    switch (sub) {
      case 'list':
        return await list(rest, out, log);
      case 'pull':
        return await pull(rest, out, log);
      case 'verify':
        return await verify(rest, out, err, log);
      case 'sign':
        return await sign(rest, out);
      case 'keygen':
        return await keygen(rest, out);
      case 'index':
        return await index(rest, out, err);
      case 'serve':
        return await serve(rest, out, log, io.until);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        out(MODELS_USAGE);
        return sub === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown models command '${sub}'`);
    }
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      err(`linesight models: ${(e as Error).message}\n\n${MODELS_USAGE}`);
      return 2;
    }
    err(`linesight models: ${(e as Error).message}`);
    return 1;
  }
}

async function list(args: string[], out: (l: string) => void, log: Logger): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { registry: { type: 'string' }, cache: { type: 'string' }, json: { type: 'boolean', default: false } } });
  if (positionals.length) throw new UsageError(`list takes no positional arguments (got ${positionals.join(' ')})`);
  const registry = openRegistry((values.registry) ?? 'models');
  const idx: RegistryIndex = await registry.index();
  const cache = values.cache ? new ModelCache({ dir: values.cache, maxBytes: Number.MAX_SAFE_INTEGER, log }) : undefined;
  await cache?.open();
  if (values.json) {
    out(JSON.stringify({ registry: registry.location, ...idx, ...(cache ? { cache: cache.list().map(({ dir: _d, ...e }) => e) } : {}) }, null, 2));
    return 0;
  }
  out(`registry ${registry.location}: ${idx.models.length} model(s)`);
  for (const m of idx.models) {
    for (const v of m.versions) {
      const flags = [v.version === m.latest ? 'latest' : '', v.signed ? 'signed' : 'unsigned', cache?.peek(m.name, v.version) ? 'cached' : ''].filter(Boolean);
      out(`  ${m.name}@${v.version}  sha256 ${v.sha256.slice(0, 12)}  ${v.bytes !== undefined ? `${v.bytes} B  ` : ''}${flags.join(', ')}`);
    }
  }
  if (cache) {
    out(`cache ${cache.dir}: ${cache.list().length} bundle(s), ${cache.totalBytes()} B`);
    for (const e of cache.list()) out(`  ${e.name}@${e.version}  ${e.bytes} B  last used ${e.lastUsed ? new Date(e.lastUsed).toISOString() : 'never'}`);
  }
  return 0;
}

async function pull(args: string[], out: (l: string) => void, log: Logger): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: {
    registry: { type: 'string' },
    cache: { type: 'string', default: DEFAULT_CACHE_DIR },
    key: { type: 'string' },
    'max-bytes': { type: 'string' },
  } });
  const [refText] = positionals;
  if (!refText || positionals.length > 1) throw new UsageError('pull needs one NAME@VERSION');
  const ref = parseRef(refText);
  if (!ref) throw new UsageError(`'${refText}' is not a model reference (NAME@VERSION or NAME@latest)`);
  if (!values.registry) throw new UsageError('pull needs --registry URL|DIR');
  const maxBytes = values['max-bytes'] !== undefined ? Number(values['max-bytes']) : DEFAULT_CACHE_MAX_BYTES;
  if (!Number.isFinite(maxBytes) || maxBytes <= 0) throw new UsageError(`--max-bytes must be a positive number of bytes`);
  const publicKey = values.key ? await readPublicKey(values.key) : undefined;
  const cache = new ModelCache({ dir: values.cache, maxBytes, log });
  const store = new ModelStore({ registry: values.registry, cache, publicKey, log });
  let version = ref.version;
  if (version === 'latest') {
    const m = (await store.registry!.index()).models.find((x) => x.name === ref.name);
    if (!m) throw new ModelLoadError(`the registry ${store.registry!.location} has no model '${ref.name}'`);
    version = m.latest;
  }
  const b = await store.pull(ref.name, version);
  out(`pulled ${b.ref} into ${b.dir} (sha256 ${b.manifest.sha256.slice(0, 12)}, ${b.signed ? `signature ok, key ${b.keyId}` : 'not signature-checked: no --key'}, ${b.golden.length} golden sample(s))`);
  return 0;
}

async function verify(args: string[], out: (l: string) => void, err: (l: string) => void, log: Logger): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { key: { type: 'string' }, golden: { type: 'boolean', default: false } } });
  const [dir] = positionals;
  if (!dir || positionals.length > 1) throw new UsageError('verify needs one bundle DIR');
  const publicKey = values.key ? await readPublicKey(values.key) : undefined;
  const v = await verifyBundle(dir, { publicKey });
  const ref = `${v.manifest.name}@${v.manifest.version}`;
  out(`${dir}: ${ref} ok (sha256 ${v.manifest.sha256.slice(0, 12)}; ${v.signed ? `signature ok, key ${v.keyId}` : 'signature not checked: no --key'}; ${v.golden.length} golden sample(s))`);
  if (values.golden && v.golden.length > 0) {
    const { InferencePool } = await import('../inference/pool.js');
    const pool = new InferencePool({ modelDir: dir, providers: ['cpu'], workers: 1, intraOpThreads: 0, queueLimit: 4, log });
    await pool.start();
    try {
      const r = await runGolden(dir, v.golden, pool, v.manifest);
      if (r.failures.length > 0) {
        err(`${dir}: ${describeGoldenFailures(r)}`);
        return 1;
      }
      out(`${dir}: golden samples ${r.passed}/${r.total} judged as expected`);
    } finally {
      await pool.stop();
    }
  }
  return 0;
}

async function sign(args: string[], out: (l: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { key: { type: 'string' } } });
  const [dir] = positionals;
  if (!dir || positionals.length > 1) throw new UsageError('sign needs one bundle DIR');
  if (!values.key) throw new UsageError('sign needs --key PRIV.pem (make one with `linesight models keygen OUT`)');
  const r = await signBundle(dir, await readPrivateKey(values.key));
  out(`signed ${r.manifest.name}@${r.manifest.version}: ${r.sigPath} (key ${r.keyId})`);
  return 0;
}

async function keygen(args: string[], out: (l: string) => void): Promise<number> {
  const { positionals } = parseArgs({ args, allowPositionals: true, options: {} });
  const [dest] = positionals;
  if (!dest || positionals.length > 1) throw new UsageError('keygen needs OUT (writes OUT.pem and OUT.pub.pem)');
  const r = await writeKeyPair(dest);
  out(`private key ${r.privatePath} (keep it off the devices), public key ${r.publicPath} (model.publicKey on the devices), key ${r.keyId}`);
  return 0;
}

async function index(args: string[], out: (l: string) => void, err: (l: string) => void): Promise<number> {
  const { positionals } = parseArgs({ args, allowPositionals: true, options: {} });
  const [dir] = positionals;
  if (!dir || positionals.length > 1) throw new UsageError('index needs one registry DIR');
  const problems: string[] = [];
  const idx = await buildIndex(dir, { problems });
  for (const p of problems) err(`warning: ${p}`);
  const path = join(dir, 'index.json');
  await writeFileAtomic(path, JSON.stringify(idx, null, 2) + '\n');
  out(`${path}: ${idx.models.length} model(s), ${idx.models.reduce((n, m) => n + m.versions.length, 0)} version(s)`);
  return 0;
}

async function serve(args: string[], out: (l: string) => void, log: Logger, until?: ModelsCommandIo['until']): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { port: { type: 'string', default: String(DEFAULT_SERVE_PORT) }, host: { type: 'string', default: '127.0.0.1' } } });
  const [dir] = positionals;
  if (!dir || positionals.length > 1) throw new UsageError('serve needs one registry DIR');
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port must be 0..65535`);
  const server = await serveRegistry({ dir, port, host: values.host, log });
  out(`serving ${resolve(dir)} as a model registry at ${server.url} (Ctrl-C to stop)`);
  await (until ? until(server) : signal());
  await server.close();
  return 0;
}

function signal(): Promise<void> {
  return new Promise((ok) => {
    const done = (): void => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      ok();
    };
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
}
