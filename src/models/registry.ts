// Where bundles come from. A registry is a plain static layout, so any web server, object store or
// folder can be one:
//   index.json                  { "schemaVersion": 1, "models": [ { "name", "latest", "versions": [ { "version", "sha256", … } ] } ] }
//   NAME/VERSION/model.onnx
//   NAME/VERSION/model.json     (+ model.json.sig, golden.json, golden/…)
// A folder may also hold bundles flat, NAME/model.json (the bundled models/ folder of the image):
// the version is then the manifest's. ModelStore turns a reference (`name@1.2.0`, `name@latest`, or
// a bundle folder) into a verified bundle folder: from the cache, the bundled models/ folder, or
// pulled from the registry into the cache; when the registry is unreachable it falls back to what
// is on the device.
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, stat, copyFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { KeyObject } from 'node:crypto';
import { ModelLoadError, type ModelManifest } from '../inference/types.js';
import type { Logger } from '../log.js';
import { compareVersions, isSafeSegment, ModelCache, refKey } from './cache.js';
import { GOLDEN_DIR, GOLDEN_FILE, isSafeRelativePath, manifestGolden, parseGoldenList } from './golden.js';
import { SIG_FILE, verifyBundle, type VerifiedBundle } from './sign.js';

// ---- references ----------------------------------------------------------------------------------

export interface ModelRefSpec {
  name: string;
  /** A version, or 'latest'. */
  version: string;
}

const REF = /^([A-Za-z0-9_.-]+)(?:@([A-Za-z0-9_.+-]+))?$/;

/** `name@1.2.0`, `name@latest`, or `name` (= latest). Undefined when it is not a reference. */
export function parseRef(s: string): ModelRefSpec | undefined {
  const m = REF.exec(s);
  if (!m || !isSafeSegment(m[1]!)) return undefined;
  const version = m[2] ?? 'latest';
  if (version !== 'latest' && !isSafeSegment(version)) return undefined;
  return { name: m[1]!, version };
}

/** A path to a bundle folder rather than a reference: it has a separator, or is an existing folder. */
async function isBundleDir(s: string): Promise<boolean> {
  if (s.includes('/') || s.includes('\\') || s.startsWith('.')) return true;
  return stat(join(s, 'model.json')).then(() => true, () => false);
}

// ---- the index -----------------------------------------------------------------------------------

export interface IndexVersion {
  version: string;
  sha256: string;
  /** model.json.sig is present. */
  signed: boolean;
  /** Bytes of all the bundle's files. */
  bytes?: number;
  description?: string;
  createdAt?: string;
  files?: string[];
}

export interface IndexModel {
  name: string;
  latest: string;
  versions: IndexVersion[];
}

export interface RegistryIndex {
  schemaVersion: 1;
  generatedAt?: string;
  models: IndexModel[];
}

async function listFiles(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await listFiles(join(dir, e.name), rel)));
    else if (e.isFile()) out.push(rel);
  }
  return out.sort();
}

const hasFile = (p: string): Promise<boolean> => stat(p).then((s) => s.isFile(), () => false);

/**
 * The folder holding NAME@VERSION under a registry root: NAME/VERSION/, or NAME/ when that folder
 * holds the bundle flat and its manifest has this version. Undefined when neither.
 */
export async function bundleDirIn(root: string, name: string, version: string): Promise<string | undefined> {
  if (!isSafeSegment(name) || !isSafeSegment(version)) return undefined;
  const nested = join(root, name, version);
  if (await hasFile(join(nested, 'model.json'))) return nested;
  const flat = join(root, name);
  try {
    const m = JSON.parse(await readFile(join(flat, 'model.json'), 'utf8')) as Partial<ModelManifest>;
    if (m.version === version) return flat;
  } catch {
    /* no flat bundle */
  }
  return undefined;
}

/** Builds index.json's content from the folders (NAME/VERSION/ and flat NAME/ bundles). */
export async function buildIndex(root: string, opts: { problems?: string[] } = {}): Promise<RegistryIndex> {
  const models = new Map<string, IndexVersion[]>();
  const add = async (dir: string, folderName: string, folderVersion?: string): Promise<void> => {
    let m: Partial<ModelManifest>;
    try {
      m = JSON.parse(await readFile(join(dir, 'model.json'), 'utf8')) as Partial<ModelManifest>;
    } catch (err) {
      opts.problems?.push(`${dir}/model.json: ${(err as Error).message}`);
      return;
    }
    if (typeof m.name !== 'string' || typeof m.version !== 'string' || typeof m.sha256 !== 'string') {
      opts.problems?.push(`${dir}/model.json: name, version and sha256 are required`);
      return;
    }
    // The puller asks for NAME/VERSION and checks the manifest says the same: a mismatch here would be refused there.
    if (m.name !== folderName || (folderVersion !== undefined && m.version !== folderVersion)) {
      opts.problems?.push(`${dir}: model.json says ${m.name}@${m.version}, the folder says ${folderName}@${folderVersion ?? m.version}; skipped`);
      return;
    }
    const files = await listFiles(dir);
    let bytes = 0;
    for (const f of files) bytes += (await stat(join(dir, f))).size;
    const list = models.get(m.name) ?? [];
    list.push({
      version: m.version,
      sha256: m.sha256.toLowerCase(),
      signed: files.includes(SIG_FILE),
      bytes,
      ...(m.description ? { description: m.description } : {}),
      ...(typeof m.provenance?.createdAt === 'string' ? { createdAt: m.provenance.createdAt } : {}),
      files,
    });
    models.set(m.name, list);
  };

  for (const n of await readdir(root, { withFileTypes: true })) {
    if (!n.isDirectory() || n.name.startsWith('.') || !isSafeSegment(n.name)) continue;
    const dir = join(root, n.name);
    if (await hasFile(join(dir, 'model.json'))) await add(dir, n.name);
    for (const v of await readdir(dir, { withFileTypes: true })) {
      if (!v.isDirectory() || !isSafeSegment(v.name) || v.name === GOLDEN_DIR) continue;
      if (await hasFile(join(dir, v.name, 'model.json'))) await add(join(dir, v.name), n.name, v.name);
    }
  }
  const out: IndexModel[] = [...models.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, versions]) => {
      versions.sort((a, b) => compareVersions(a.version, b.version));
      return { name, latest: versions[versions.length - 1]!.version, versions };
    });
  return { schemaVersion: 1, generatedAt: new Date().toISOString(), models: out };
}

function parseIndex(json: unknown, where: string): RegistryIndex {
  const models = (json as { models?: unknown } | null)?.models;
  if (!Array.isArray(models)) throw new RegistryError(`${where}: not a registry index (expected { "models": [ … ] })`);
  const out: IndexModel[] = [];
  for (const m of models as Partial<IndexModel>[]) {
    if (!m || typeof m.name !== 'string' || !Array.isArray(m.versions)) continue;
    const versions = m.versions.filter((v): v is IndexVersion => !!v && typeof v.version === 'string');
    if (versions.length === 0) continue;
    const highest = [...versions].sort((a, b) => compareVersions(b.version, a.version))[0]!.version;
    out.push({ name: m.name, latest: typeof m.latest === 'string' ? m.latest : highest, versions });
  }
  return { schemaVersion: 1, models: out };
}

// ---- registries ----------------------------------------------------------------------------------

/** The registry cannot be asked at all (network down, timeout, server error): the device falls back to what it has. */
export class RegistryUnreachableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RegistryUnreachableError';
  }
}

/** The registry answered, but not with what was asked for. */
export class RegistryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RegistryError';
  }
}

export interface Registry {
  readonly location: string;
  index(): Promise<RegistryIndex>;
  /** Copies NAME/VERSION/FILE to dest; false when the registry has no such file. */
  download(name: string, version: string, file: string, dest: string): Promise<boolean>;
}

export class DirRegistry implements Registry {
  readonly location: string;
  constructor(root: string) {
    this.location = resolve(root);
  }

  async index(): Promise<RegistryIndex> {
    if (!(await stat(this.location).then((s) => s.isDirectory(), () => false))) {
      throw new RegistryUnreachableError(`registry folder ${this.location} does not exist`);
    }
    const p = join(this.location, 'index.json');
    let text: string | undefined;
    try {
      text = await readFile(p, 'utf8');
    } catch {
      return buildIndex(this.location);
    }
    try {
      return parseIndex(JSON.parse(text), p);
    } catch (err) {
      throw new RegistryError(`${p}: ${(err as Error).message}`);
    }
  }

  async download(name: string, version: string, file: string, dest: string): Promise<boolean> {
    const dir = await bundleDirIn(this.location, name, version);
    if (!dir || !isSafeRelativePath(file)) return false;
    await mkdir(dirname(dest), { recursive: true });
    try {
      await copyFile(join(dir, file), dest);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }
}

export class HttpRegistry implements Registry {
  readonly location: string;
  private readonly base: URL;

  /** timeoutMs: no response, or no bytes for this long, counts as unreachable. headers: e.g. Authorization for a private store. */
  constructor(
    url: string,
    private readonly timeoutMs = 30_000,
    private readonly headers: Record<string, string> = {},
  ) {
    this.base = new URL(url.endsWith('/') ? url : `${url}/`);
    this.location = this.base.href;
  }

  async index(): Promise<RegistryIndex> {
    const url = new URL('index.json', this.base);
    const res = await this.get(url);
    if (res.status === 404) throw new RegistryError(`${url}: not found (404); a registry needs an index.json (\`linesight models serve\` builds one)`);
    let json: unknown;
    try {
      json = await withTimeout(res.json(), this.timeoutMs, url);
    } catch (err) {
      if (err instanceof RegistryUnreachableError) throw err;
      throw new RegistryError(`${url}: not valid JSON (${(err as Error).message})`);
    }
    return parseIndex(json, url.href);
  }

  async download(name: string, version: string, file: string, dest: string): Promise<boolean> {
    if (!isSafeSegment(name) || !isSafeSegment(version) || !isSafeRelativePath(file)) return false;
    const path = [name, version, ...file.split('/')].map(encodeURIComponent).join('/');
    const url = new URL(path, this.base);
    const res = await this.get(url);
    if (res.status === 404) {
      await res.body?.cancel();
      return false;
    }
    if (!res.body) throw new RegistryError(`${url}: empty response`);
    await mkdir(dirname(dest), { recursive: true });
    // A compressed body is decoded on the way: its Content-Length counts other bytes.
    const encoding = res.headers.get('content-encoding');
    const expected = !encoding || encoding === 'identity' ? Number(res.headers.get('content-length') ?? NaN) : NaN;
    let received = 0;
    let idle: NodeJS.Timeout | undefined;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        received += chunk.length;
        cb(null, chunk);
      },
    });
    const ac = new AbortController();
    const arm = (): void => {
      clearTimeout(idle);
      idle = setTimeout(() => ac.abort(), this.timeoutMs);
    };
    arm();
    counter.on('data', arm);
    try {
      await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), counter, createWriteStream(dest), { signal: ac.signal });
    } catch (err) {
      throw new RegistryUnreachableError(`${url}: download failed after ${received} bytes (${ac.signal.aborted ? `no data for ${this.timeoutMs} ms` : (err as Error).message})`);
    } finally {
      clearTimeout(idle);
    }
    if (Number.isFinite(expected) && received !== expected) {
      throw new RegistryUnreachableError(`${url}: truncated download (${received} of ${expected} bytes)`);
    }
    return true;
  }

  private async get(url: URL): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(url, { signal: AbortSignal.timeout(this.timeoutMs), redirect: 'follow', headers: this.headers });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new RegistryUnreachableError(`${url}: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
    }
    if (res.status >= 500) {
      await res.body?.cancel();
      throw new RegistryUnreachableError(`${url}: HTTP ${res.status}`);
    }
    if (!res.ok && res.status !== 404) {
      await res.body?.cancel();
      throw new RegistryError(`${url}: HTTP ${res.status}`);
    }
    return res;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, url: URL): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new RegistryUnreachableError(`${url}: no data for ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

/** An http(s) URL or a folder. */
export function openRegistry(location: string, opts: { timeoutMs?: number; headers?: Record<string, string> } = {}): Registry {
  return /^https?:\/\//i.test(location) ? new HttpRegistry(location, opts.timeoutMs, opts.headers) : new DirRegistry(location);
}

// ---- the store -----------------------------------------------------------------------------------

export type BundleOrigin = 'dir' | 'bundled' | 'cache' | 'registry';

export interface ResolvedBundle extends VerifiedBundle {
  origin: BundleOrigin;
  /** name@version. */
  ref: string;
}

export interface ModelStoreOptions {
  /** Registry URL or folder; none = device-local only. */
  registry?: string;
  /** The bundled (model-in-image) folder, default 'models'. */
  bundledDir?: string;
  /** Required to pull from a registry. */
  cache?: ModelCache;
  /** When set, every bundle must carry a model.json.sig made with the matching private key. */
  publicKey?: KeyObject;
  /** No response, or no bytes, for this long: the registry counts as unreachable (default 30 s). */
  timeoutMs?: number;
  /** Extra HTTP headers for the registry (e.g. { authorization: 'Bearer …' }); never logged. */
  registryHeaders?: Record<string, string>;
  log: Logger;
}

export class ModelStore {
  readonly registry?: Registry;
  readonly cache?: ModelCache;
  private readonly bundled: DirRegistry;
  private readonly log: Logger;

  constructor(private readonly opts: ModelStoreOptions) {
    this.registry = opts.registry ? openRegistry(opts.registry, { timeoutMs: opts.timeoutMs, headers: opts.registryHeaders }) : undefined;
    this.cache = opts.cache;
    this.bundled = new DirRegistry(opts.bundledDir ?? 'models');
    this.log = opts.log;
  }

  /**
   * A verified bundle for a reference or a folder. name@VERSION: the cache, then the bundled
   * folder, then the registry. name@latest: the registry's latest (pulled when not cached); when
   * the registry is unreachable, the highest version on the device. Throws ModelLoadError.
   */
  async resolve(refOrDir: string): Promise<ResolvedBundle> {
    if (await isBundleDir(refOrDir)) {
      const v = await this.verify(refOrDir);
      return { ...v, origin: 'dir', ref: refKey(v.manifest.name, v.manifest.version) };
    }
    const ref = parseRef(refOrDir);
    if (!ref) throw new ModelLoadError(`'${refOrDir}' is neither a bundle folder nor a model reference (name@1.2.0 or name@latest)`);
    if (ref.version !== 'latest') return this.resolveExact(ref.name, ref.version);

    let unreachable: string | undefined;
    if (this.registry) {
      try {
        const m = (await this.registry.index()).models.find((x) => x.name === ref.name);
        if (m) return await this.resolveExact(ref.name, m.latest);
        this.log.warn('the registry has no such model: looking on the device', { model: ref.name, registry: this.registry.location });
      } catch (err) {
        if (!(err instanceof RegistryUnreachableError)) throw asLoadError(err);
        unreachable = err.message;
        this.log.warn('model registry unreachable: starting from the device cache', { registry: this.registry.location, error: err.message });
      }
    }
    const local = await this.localVersions(ref.name);
    if (local.length === 0) {
      throw new ModelLoadError(
        `no version of model '${ref.name}' on the device (cache ${this.cache?.dir ?? 'none'}, bundled ${this.bundled.location})` +
          (this.registry ? (unreachable ? ` and the registry is unreachable (${unreachable})` : ' or in the registry') : ' and no registry is configured'),
      );
    }
    const errors: string[] = [];
    for (const version of local) {
      try {
        return await this.resolveLocal(ref.name, version);
      } catch (err) {
        errors.push((err as Error).message);
      }
    }
    throw new ModelLoadError(`no usable version of '${ref.name}' on the device:\n  ${errors.join('\n  ')}`);
  }

  /** Versions on the device (cache and bundled), highest first. */
  async localVersions(name: string): Promise<string[]> {
    const set = new Set<string>();
    if (this.cache) {
      await this.cache.open();
      for (const e of this.cache.versionsOf(name)) set.add(e.version);
    }
    try {
      for (const m of (await this.bundled.index()).models) if (m.name === name) for (const v of m.versions) set.add(v.version);
    } catch {
      /* no bundled folder */
    }
    return [...set].sort((a, b) => compareVersions(b, a));
  }

  /** Downloads name@version from the registry into staging, verifies it, and moves it into the cache. */
  async pull(name: string, version: string): Promise<ResolvedBundle> {
    if (!this.registry) throw new ModelLoadError(`cannot pull ${name}@${version}: no registry configured`);
    if (!this.cache) throw new ModelLoadError(`cannot pull ${name}@${version}: no cache folder configured`);
    if (!isSafeSegment(name) || !isSafeSegment(version)) throw new ModelLoadError(`not a usable model reference: ${name}@${version}`);
    const where = `${this.registry.location} (${name}@${version})`;
    const staged = await this.cache.stage();
    try {
      const get = (file: string): Promise<boolean> => this.registry!.download(name, version, file, join(staged, file));
      if (!(await get('model.json'))) throw new ModelLoadError(`${name}@${version} is not in the registry ${this.registry.location}`);
      const manifest = JSON.parse(await readFile(join(staged, 'model.json'), 'utf8')) as ModelManifest;
      if (manifest.name !== name || manifest.version !== version) {
        throw new ModelLoadError(`${where}: the registry served ${manifest.name}@${manifest.version} for ${name}@${version}; refused`);
      }
      if (!(await get('model.onnx'))) throw new ModelLoadError(`${where}: model.json is there but model.onnx is missing`);
      await get(SIG_FILE);
      const golden = (await get(GOLDEN_FILE))
        ? parseGoldenList(JSON.parse(await readFile(join(staged, GOLDEN_FILE), 'utf8')), `${where} ${GOLDEN_FILE}`)
        : safeManifestGolden(manifest);
      for (const s of golden) {
        if (!(await get(`${GOLDEN_DIR}/${s.file}`))) throw new ModelLoadError(`${where}: golden sample ${GOLDEN_DIR}/${s.file} is listed but missing`);
      }
      const v = await this.verify(staged, where);
      const dir = await this.cache.commit(staged, name, version, v.manifest.sha256);
      this.log.info('model pulled', { model: refKey(name, version), registry: this.registry.location, signed: v.signed, keyId: v.keyId, dir });
      return { ...v, dir, origin: 'registry', ref: refKey(name, version) };
    } catch (err) {
      await this.cache.discard(staged);
      if (err instanceof RegistryUnreachableError) {
        throw new ModelLoadError(`cannot pull ${name}@${version}: registry ${this.registry.location} unreachable (${err.message})`);
      }
      throw asLoadError(err);
    }
  }

  /** A bundle on the device for an exact version, or pulled. */
  private async resolveExact(name: string, version: string): Promise<ResolvedBundle> {
    const local = await this.resolveLocal(name, version).catch((err: unknown) => err as Error);
    if (!(local instanceof Error)) return local;
    if (!this.registry) throw local;
    try {
      return await this.pull(name, version);
    } catch (err) {
      if (local.message.startsWith('not on the device')) throw new ModelLoadError(`${(err as Error).message}; not on the device either`);
      throw new ModelLoadError(`${(err as Error).message}\n  (on the device: ${local.message})`);
    }
  }

  private async resolveLocal(name: string, version: string): Promise<ResolvedBundle> {
    const errors: string[] = [];
    if (this.cache) {
      await this.cache.open();
      const e = this.cache.peek(name, version);
      if (e) {
        try {
          const v = await this.verify(e.dir);
          await this.cache.touch(name, version);
          return { ...v, origin: 'cache', ref: refKey(name, version) };
        } catch (err) {
          // Damaged on disk: drop it so a pull can replace it.
          this.log.error('cached model bundle failed verification: removed from the cache', { model: refKey(name, version), error: (err as Error).message });
          await this.cache.remove(name, version).catch(() => {});
          errors.push(`cache: ${(err as Error).message}`);
        }
      }
    }
    const bundledDir = await bundleDirIn(this.bundled.location, name, version);
    if (bundledDir) {
      try {
        const v = await this.verify(bundledDir);
        if (v.manifest.name === name && v.manifest.version === version) return { ...v, origin: 'bundled', ref: refKey(name, version) };
        errors.push(`bundled ${bundledDir}: holds ${v.manifest.name}@${v.manifest.version}`);
      } catch (err) {
        errors.push(`bundled: ${(err as Error).message}`);
      }
    }
    throw new ModelLoadError(errors.length ? `${name}@${version} on the device is unusable: ${errors.join('; ')}` : `not on the device: ${name}@${version}`);
  }

  private async verify(dir: string, label?: string): Promise<VerifiedBundle> {
    try {
      return await verifyBundle(dir, { publicKey: this.opts.publicKey });
    } catch (err) {
      if (label) throw new ModelLoadError(`${label}: ${(err as Error).message}`);
      throw err;
    }
  }
}

function safeManifestGolden(m: ModelManifest): { file: string }[] {
  try {
    return manifestGolden(m) ?? [];
  } catch {
    return []; // verifyBundle reports the bad list with its full message
  }
}

function asLoadError(err: unknown): ModelLoadError {
  if (err instanceof ModelLoadError) return err;
  return new ModelLoadError((err as Error).message);
}
