// Model load over HTTP: a folder served by `models serve` on loopback, pulled into the device
// cache and verified (sha256, ed25519 signature, golden files); the device starts from the cache
// when the registry is gone; tampered, truncated, unsigned and mislabelled bundles are refused
// and never reach the cache; the cache stays within its size bound.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, type KeyObject } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { ModelLoadError } from '../../src/inference/types.js';
import { memoryLogger, silentLogger } from '../../src/log.js';
import { ModelCache } from '../../src/models/cache.js';
import { HttpRegistry, ModelStore, RegistryUnreachableError, parseRef, type RegistryIndex } from '../../src/models/registry.js';
import { serveRegistry, type RegistryServer } from '../../src/models/serve.js';
import { generateKeyPair, parsePrivateKey, parsePublicKey, signBundle } from '../../src/models/sign.js';

// ---- fixtures ---------------------------------------------------------------------------------

const dirs: string[] = [];
const servers: RegistryServer[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
  dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'ls-models-reg-'));
  dirs.push(d);
  return d;
}
async function serve(dir: string): Promise<RegistryServer> {
  const s = await serveRegistry({ dir, port: 0, host: '127.0.0.1' });
  servers.push(s);
  return s;
}

/** Anomaly model on 8x8 grey: score = mean pixel (0..1). The tag changes the bytes, not the maths. */
function meanModel(tag: string): Uint8Array {
  const g = new GraphBuilder({ name: `mean-${tag}` });
  const x = g.input('image', 'float32', [1, 1, 8, 8]);
  g.node('Reshape', [g.node('ReduceMean', [x], { keepdims: 1 }), g.constant('int64', [2], [1, 1])], {}, { name: 'score' });
  g.output('score', 'float32', [1, 1]);
  return g.toBytes();
}

interface BundleOpts {
  threshold?: number;
  key?: KeyObject;
  /** Folder NAME/ instead of NAME/VERSION/ (the bundled models/ layout). */
  flat?: boolean;
  golden?: { file: string; verdict: 'pass' | 'reject'; value: number }[];
}

async function addBundle(root: string, name: string, version: string, o: BundleOpts = {}): Promise<string> {
  const dir = o.flat ? join(root, name) : join(root, name, version);
  mkdirSync(dir, { recursive: true });
  const bytes = meanModel(`${name}-${version}`);
  writeFileSync(join(dir, 'model.onnx'), bytes);
  writeFileSync(
    join(dir, 'model.json'),
    JSON.stringify({
      schemaVersion: 1, name, version, sha256: createHash('sha256').update(bytes).digest('hex'),
      input: { name: 'image', width: 8, height: 8, colour: 'gray', layout: 'nchw', dtype: 'float32' },
      head: { type: 'anomaly', scoreOutput: 'score' }, threshold: o.threshold ?? 0.5,
    }, null, 2),
  );
  if (o.golden) {
    mkdirSync(join(dir, 'golden'), { recursive: true });
    for (const g of o.golden) {
      mkdirSync(dirname(join(dir, 'golden', g.file)), { recursive: true });
      await sharp(Buffer.alloc(64, g.value), { raw: { width: 8, height: 8, channels: 1 } }).png().toFile(join(dir, 'golden', g.file));
    }
    writeFileSync(join(dir, 'golden.json'), JSON.stringify({ samples: o.golden.map(({ file, verdict }) => ({ file, verdict })) }));
  }
  if (o.key) await signBundle(dir, o.key);
  return dir;
}

const keys = generateKeyPair();
const privateKey = parsePrivateKey(keys.privateKeyPem);
const publicKey = parsePublicKey(keys.publicKeyPem);

function store(registry: string | undefined, cacheDir: string, over: Partial<ConstructorParameters<typeof ModelStore>[0]> = {}): ModelStore {
  return new ModelStore({
    registry,
    cache: new ModelCache({ dir: cacheDir, maxBytes: 10_000_000 }),
    bundledDir: join(cacheDir, 'no-bundled'),
    publicKey,
    log: silentLogger,
    timeoutMs: 5000,
    ...over,
  });
}

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof ModelLoadError, `expected ModelLoadError, got ${String(err)}`);
    return err.message;
  }
  assert.fail('accepted');
}

const stagingEmpty = (cacheDir: string): boolean => !existsSync(join(cacheDir, '.staging')) || readdirSync(join(cacheDir, '.staging')).length === 0;

// ---- serve ------------------------------------------------------------------------------------

test('serve: index.json built from the folders (nested and flat), files served, nothing outside the folder', async () => {
  const root = tempDir();
  await addBundle(root, 'mean', '1.0.0', { key: privateKey });
  await addBundle(root, 'mean', '1.2.0');
  await addBundle(root, 'flat', '0.3.0', { flat: true });
  writeFileSync(join(tempDir(), 'secret.txt'), 'x');
  const s = await serve(root);
  assert.match(s.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);

  const idx = (await (await fetch(new URL('index.json', s.url))).json()) as RegistryIndex;
  const mean = idx.models.find((m) => m.name === 'mean')!;
  assert.equal(mean.latest, '1.2.0');
  assert.deepEqual(mean.versions.map((v) => [v.version, v.signed]), [['1.0.0', true], ['1.2.0', false]]);
  assert.ok(mean.versions[0]!.files!.includes('model.json.sig'));
  assert.equal(idx.models.find((m) => m.name === 'flat')!.latest, '0.3.0');

  // A version copied in later shows up without a restart.
  await addBundle(root, 'mean', '2.0.0');
  const again = (await (await fetch(s.url)).json()) as RegistryIndex;
  assert.equal(again.models.find((m) => m.name === 'mean')!.latest, '2.0.0');

  const onnx = await fetch(new URL('mean/1.0.0/model.onnx', s.url));
  assert.equal(onnx.status, 200);
  assert.deepEqual(Buffer.from(await onnx.arrayBuffer()), readFileSync(join(root, 'mean', '1.0.0', 'model.onnx')));
  // A flat bundle is served under NAME/VERSION/ like the others.
  const flat = await fetch(new URL('flat/0.3.0/model.json', s.url));
  assert.equal(flat.status, 200);
  assert.equal(((await flat.json()) as { version: string }).version, '0.3.0');
  assert.equal((await fetch(new URL('flat/9.9.9/model.json', s.url))).status, 404);

  for (const p of ['../secret.txt', '%2e%2e/secret.txt', 'mean/%2e%2e/%2e%2e/secret.txt', 'mean/1.0.0/..%2f..%2fsecret.txt', '.staging/x']) {
    const r = await fetch(s.url + p);
    assert.equal(r.status, 404, p);
  }
  assert.equal((await fetch(s.url, { method: 'POST' })).status, 405);
  const head = await fetch(new URL('mean/1.0.0/model.onnx', s.url), { method: 'HEAD' });
  assert.equal(Number(head.headers.get('content-length')), readFileSync(join(root, 'mean', '1.0.0', 'model.onnx')).length);
});

test('serve: an index.json in the folder is served as it is', async () => {
  const root = tempDir();
  await addBundle(root, 'mean', '1.0.0');
  writeFileSync(join(root, 'index.json'), JSON.stringify({ schemaVersion: 1, models: [{ name: 'mean', latest: '1.0.0', versions: [{ version: '1.0.0', sha256: 'x', signed: false }] }] }));
  const s = await serve(root);
  const idx = await new HttpRegistry(s.url).index();
  assert.deepEqual(idx.models.map((m) => [m.name, m.latest]), [['mean', '1.0.0']]);
});

// ---- pull, cache, offline ------------------------------------------------------------------------

test('pull over HTTP: verified (signature, sha256, golden files) into the cache; then served from the cache', async () => {
  const root = tempDir();
  await addBundle(root, 'mean', '1.0.0', {
    key: privateKey,
    golden: [{ file: 'dark.png', verdict: 'pass', value: 20 }, { file: 'sub/bright.png', verdict: 'reject', value: 240 }],
  });
  const s = await serve(root);
  const cacheDir = tempDir();
  const log = memoryLogger();
  const st = store(s.url, cacheDir, { log });

  const b = await st.pull('mean', '1.0.0');
  assert.equal(b.origin, 'registry');
  assert.equal(b.signed, true);
  assert.equal(b.dir, join(cacheDir, 'mean', '1.0.0'));
  assert.deepEqual(b.golden.map((g) => [g.file, g.expected]), [['dark.png', 'pass'], ['sub/bright.png', 'reject']]);
  for (const f of ['model.onnx', 'model.json', 'model.json.sig', 'golden.json', 'golden/dark.png', 'golden/sub/bright.png']) {
    assert.deepEqual(readFileSync(join(b.dir, f)), readFileSync(join(root, 'mean', '1.0.0', f)), f);
  }
  assert.ok(stagingEmpty(cacheDir));
  assert.ok(log.records.some((r) => r.msg === 'model pulled' && r.signed === true));

  const again = await st.resolve('mean@1.0.0');
  assert.equal(again.origin, 'cache', 'a cached version is not downloaded again');
});

test('name@latest follows the registry while it is reachable, and starts from the cache when it is not', async () => {
  const root = tempDir();
  await addBundle(root, 'mean', '1.0.0', { key: privateKey });
  await addBundle(root, 'mean', '1.1.0', { key: privateKey });
  const s = await serve(root);
  const cacheDir = tempDir();

  const online = await store(s.url, cacheDir).resolve('mean@latest');
  assert.equal(online.ref, 'mean@1.1.0');
  assert.equal(online.origin, 'registry');
  await store(s.url, cacheDir).resolve('mean@1.0.0');

  // A newer version is published, then the registry goes away before the device saw it.
  await addBundle(root, 'mean', '1.2.0', { key: privateKey });
  const url = s.url;
  await s.close();

  const log = memoryLogger();
  const offline = store(url, cacheDir, { log });
  const b = await offline.resolve('mean@latest');
  assert.equal(b.ref, 'mean@1.1.0', 'the highest version on the device');
  assert.equal(b.origin, 'cache');
  assert.equal(b.signed, true, 'verified again from the cache');
  assert.ok(log.records.some((r) => r.msg === 'model registry unreachable: starting from the device cache'));
  assert.equal((await offline.resolve('mean@1.0.0')).origin, 'cache');
  assert.equal((await offline.resolve('mean')).ref, 'mean@1.1.0', "a bare name means 'latest'");

  const missing = await refusal(offline.resolve('mean@1.2.0'));
  assert.match(missing, /ECONNREFUSED|unreachable|fetch failed/i);
  const none = await refusal(offline.resolve('other@latest'));
  assert.match(none, /no version of model 'other' on the device.*registry is unreachable/);
});

test('a cached bundle damaged on disk is refused, dropped from the cache and pulled again', async () => {
  const root = tempDir();
  await addBundle(root, 'mean', '1.0.0', { key: privateKey });
  const s = await serve(root);
  const cacheDir = tempDir();
  const st = store(s.url, cacheDir);
  const b = await st.pull('mean', '1.0.0');
  const onnx = readFileSync(join(b.dir, 'model.onnx'));
  onnx[10]! ^= 0x55;
  writeFileSync(join(b.dir, 'model.onnx'), onnx);
  const again = await st.resolve('mean@1.0.0');
  assert.equal(again.origin, 'registry', 'pulled again');
  assert.deepEqual(readFileSync(join(again.dir, 'model.onnx')), readFileSync(join(root, 'mean', '1.0.0', 'model.onnx')));
});

// ---- refusals ---------------------------------------------------------------------------------

test('tampered (one byte flipped in model.onnx), truncated and unsigned bundles are refused and never cached', async () => {
  const root = tempDir();
  const tampered = await addBundle(root, 'mean', '2.0.0', { key: privateKey });
  const onnx = readFileSync(join(tampered, 'model.onnx'));
  onnx[Math.floor(onnx.length / 2)]! ^= 0x01;
  writeFileSync(join(tampered, 'model.onnx'), onnx);
  const truncated = await addBundle(root, 'mean', '2.1.0', { key: privateKey });
  truncateSync(join(truncated, 'model.onnx'), 40);
  await addBundle(root, 'mean', '2.2.0'); // not signed
  const other = generateKeyPair();
  await addBundle(root, 'mean', '2.3.0', { key: parsePrivateKey(other.privateKeyPem) });
  const s = await serve(root);
  const cacheDir = tempDir();
  const st = store(s.url, cacheDir);

  assert.match(await refusal(st.pull('mean', '2.0.0')), /sha256 mismatch/);
  assert.match(await refusal(st.pull('mean', '2.1.0')), /sha256 mismatch.*\(40 bytes\).*truncated/s);
  assert.match(await refusal(st.pull('mean', '2.2.0')), /is not signed.*public key is configured/);
  assert.match(await refusal(st.pull('mean', '2.3.0')), /does not verify with the configured public key/);
  assert.match(await refusal(st.resolve('mean@latest')), /does not verify/, 'latest (2.3.0) is refused too');
  assert.deepEqual(st.cache!.list(), []);
  assert.ok(stagingEmpty(cacheDir));

  // Without a key, an unsigned bundle is fine; a tampered one never is.
  const noKey = store(s.url, tempDir(), { publicKey: undefined });
  assert.equal((await noKey.pull('mean', '2.2.0')).signed, false);
  assert.match(await refusal(noKey.pull('mean', '2.0.0')), /sha256 mismatch/);
});

test('a registry that serves another version than asked is refused; a listed golden file missing is refused', async () => {
  const root = tempDir();
  const real = await addBundle(root, 'mean', '1.0.0', { key: privateKey });
  cpSync(real, join(root, 'mean', '3.0.0'), { recursive: true }); // says 1.0.0 inside
  const g = await addBundle(root, 'mean', '1.5.0', { golden: [{ file: 'a.png', verdict: 'pass', value: 10 }] });
  rmSync(join(g, 'golden', 'a.png'));
  await signBundle(g, privateKey);
  const s = await serve(root);
  const st = store(s.url, tempDir());
  assert.match(await refusal(st.pull('mean', '3.0.0')), /served mean@1\.0\.0 for mean@3\.0\.0/);
  assert.match(await refusal(st.pull('mean', '1.5.0')), /golden sample golden\/a\.png is listed but missing/);
  assert.match(await refusal(st.pull('mean', '9.0.0')), /mean@9\.0\.0 is not in the registry/);
});

test('a download cut short on the wire is refused (Content-Length not met) and leaves nothing behind', async () => {
  const root = tempDir();
  const dir = await addBundle(root, 'mean', '1.0.0', { key: privateKey });
  const files = (p: string): Buffer | undefined => {
    const f = join(dir, ...p.split('/').slice(3));
    return existsSync(f) ? readFileSync(f) : undefined;
  };
  const server = createServer((req, res) => {
    const body = files(req.url!);
    if (!body) return void res.writeHead(404).end();
    if (req.url!.endsWith('model.onnx')) {
      res.writeHead(200, { 'content-length': body.length });
      res.write(body.subarray(0, 20));
      setTimeout(() => res.destroy(), 20);
      return;
    }
    res.writeHead(200, { 'content-length': body.length }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  after(() => server.close());
  const cacheDir = tempDir();
  const st = store(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`, cacheDir);
  const msg = await refusal(st.pull('mean', '1.0.0'));
  assert.match(msg, /download failed after 20 bytes|truncated download/);
  assert.deepEqual(st.cache!.list(), []);
  assert.ok(stagingEmpty(cacheDir));
});

test('a private registry: extra headers (e.g. a bearer token) go with every request', async () => {
  const root = tempDir();
  await addBundle(root, 'mean', '1.0.0', { key: privateKey });
  const inner = await serve(root);
  // A gate in front of the registry that wants a token.
  const server = createServer(async (req, res) => {
    if (req.headers.authorization !== 'Bearer s3cret') return void res.writeHead(401).end();
    const r = await fetch(new URL(req.url!.slice(1), inner.url));
    res.writeHead(r.status, { 'content-length': r.headers.get('content-length') ?? undefined });
    res.end(Buffer.from(await r.arrayBuffer()));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  after(() => server.close());
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  assert.match(await refusal(store(url, tempDir()).resolve('mean@1.0.0')), /HTTP 401/);
  const b = await store(url, tempDir(), { registryHeaders: { authorization: 'Bearer s3cret' } }).resolve('mean@latest');
  assert.equal(b.ref, 'mean@1.0.0');
  assert.equal(b.signed, true);
});

test('an unreachable registry is told apart from a missing model', async () => {
  const reg = new HttpRegistry('http://127.0.0.1:9/', 2000);
  await assert.rejects(reg.index(), RegistryUnreachableError);
  const root = tempDir();
  const s = await serve(root);
  const st = store(s.url, tempDir());
  assert.match(await refusal(st.resolve('nothing@1.0.0')), /nothing@1\.0\.0 is not in the registry/);
});

// ---- local sources ------------------------------------------------------------------------------

test('a local folder works as a registry, and the bundled models/ folder (model-in-image) is a source', async () => {
  const root = tempDir();
  await addBundle(root, 'mean', '1.0.0', { key: privateKey });
  const cacheDir = tempDir();
  const fromDir = await store(root, cacheDir).resolve('mean@latest');
  assert.equal(fromDir.origin, 'registry');
  assert.equal(fromDir.dir, join(cacheDir, 'mean', '1.0.0'));

  const bundled = tempDir();
  await addBundle(bundled, 'flat', '0.3.0', { flat: true, key: privateKey });
  await addBundle(bundled, 'flat', '0.4.0', { key: privateKey });
  const st = store(undefined, tempDir(), { bundledDir: bundled });
  const exact = await st.resolve('flat@0.3.0');
  assert.equal(exact.origin, 'bundled');
  assert.equal(exact.dir, join(bundled, 'flat'));
  assert.equal((await st.resolve('flat@latest')).ref, 'flat@0.4.0');
  // A folder path is used as it is (and still verified).
  const byPath = await st.resolve(join(bundled, 'flat'));
  assert.equal(byPath.origin, 'dir');
  assert.equal(byPath.ref, 'flat@0.3.0');
  assert.match(await refusal(st.resolve('flat@9.9.9')), /not on the device: flat@9\.9\.9/);
  assert.match(await refusal(st.resolve('no such thing!')), /neither a bundle folder nor a model reference/);
});

test('the shipped models/film-demo bundle resolves as film-demo@<its version> from the bundled folder', async () => {
  const manifest = JSON.parse(readFileSync('models/film-demo/model.json', 'utf8'));
  const st = new ModelStore({ bundledDir: 'models', log: silentLogger });
  const b = await st.resolve(`film-demo@${manifest.version}`);
  assert.equal(b.origin, 'bundled');
  assert.equal(b.manifest.sha256, manifest.sha256);
  assert.equal((await st.resolve('film-demo@latest')).ref, `film-demo@${manifest.version}`);
});

test('pulls keep the cache within its size bound, least recently used out first', async () => {
  const root = tempDir();
  for (const v of ['1.0.0', '1.1.0', '1.2.0']) await addBundle(root, 'mean', v, { key: privateKey });
  const size = readdirSync(join(root, 'mean', '1.0.0')).reduce((n, f) => n + readFileSync(join(root, 'mean', '1.0.0', f)).length, 0);
  const s = await serve(root);
  const cacheDir = tempDir();
  const st = store(s.url, cacheDir, { cache: new ModelCache({ dir: cacheDir, maxBytes: Math.floor(size * 2.5) }) });
  await st.pull('mean', '1.0.0');
  await st.pull('mean', '1.1.0');
  await st.resolve('mean@1.0.0'); // used: 1.1.0 is now the least recently used
  await st.pull('mean', '1.2.0');
  assert.deepEqual(st.cache!.list().map((e) => e.version), ['1.0.0', '1.2.0']);
  assert.ok(!existsSync(join(cacheDir, 'mean', '1.1.0')));
});

test('parseRef', () => {
  assert.deepEqual(parseRef('film-demo@1.2.0'), { name: 'film-demo', version: '1.2.0' });
  assert.deepEqual(parseRef('film-demo@latest'), { name: 'film-demo', version: 'latest' });
  assert.deepEqual(parseRef('film-demo'), { name: 'film-demo', version: 'latest' });
  for (const bad of ['a/b@1', '..@1.0.0', 'x@..', '@1.0.0', 'x@1@2']) assert.equal(parseRef(bad), undefined, bad);
});
