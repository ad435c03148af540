// Bundle integrity and authenticity. model.json carries the sha256 of model.onnx, so signing the
// manifest bytes (ed25519, node:crypto) vouches for the whole bundle: a changed weight file breaks
// the hash, a changed manifest breaks the signature. model.json.sig holds the 64-byte signature
// in base64 on one line, so it can be produced and read by any tool (openssl pkeyutl, signify).
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadBundle } from '../inference/manifest.js';
import { ModelLoadError, type ModelManifest } from '../inference/types.js';
import { loadGolden, type GoldenSample } from './golden.js';

export const SIG_FILE = 'model.json.sig';

export interface KeyPairPem {
  privateKeyPem: string;
  publicKeyPem: string;
}

export function generateKeyPair(): KeyPairPem {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

/** `keys/release` or `keys/release.pem` -> keys/release.pem (private) + keys/release.pub.pem (public). */
export function keyPairPaths(out: string): { privatePath: string; publicPath: string } {
  const base = out.endsWith('.pem') ? out.slice(0, -4) : out;
  return { privatePath: `${base}.pem`, publicPath: `${base}.pub.pem` };
}

/** Writes a new key pair; the private key is readable by its owner only and never overwritten. */
export async function writeKeyPair(out: string): Promise<{ privatePath: string; publicPath: string; keyId: string }> {
  const paths = keyPairPaths(out);
  const pair = generateKeyPair();
  // 'wx': overwriting a release key by accident would orphan every bundle signed with it.
  await writeFile(paths.privatePath, pair.privateKeyPem, { mode: 0o600, flag: 'wx' });
  await writeFile(paths.publicPath, pair.publicKeyPem, { mode: 0o644, flag: 'wx' });
  return { ...paths, keyId: keyId(createPublicKey(pair.publicKeyPem)) };
}

function asEd25519(key: KeyObject, what: string): KeyObject {
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new ModelLoadError(`${what}: an ed25519 key is needed, this is ${key.asymmetricKeyType ?? key.type} (make one with \`linesight models keygen OUT\`)`);
  }
  return key;
}

/** A public key from PEM text (a private key PEM is accepted too: its public half is used). */
export function parsePublicKey(pem: string | Buffer, what = 'public key'): KeyObject {
  try {
    return asEd25519(createPublicKey(pem), what);
  } catch (err) {
    if (err instanceof ModelLoadError) throw err;
    throw new ModelLoadError(`${what}: not a PEM public key (${(err as Error).message})`);
  }
}

export function parsePrivateKey(pem: string | Buffer, what = 'private key'): KeyObject {
  try {
    return asEd25519(createPrivateKey(pem), what);
  } catch (err) {
    if (err instanceof ModelLoadError) throw err;
    throw new ModelLoadError(`${what}: not a PEM private key (${(err as Error).message})`);
  }
}

export async function readPublicKey(path: string): Promise<KeyObject> {
  let pem: Buffer;
  try {
    pem = await readFile(path);
  } catch (err) {
    throw new ModelLoadError(`cannot read public key ${path}: ${(err as Error).message}`);
  }
  return parsePublicKey(pem, path);
}

export async function readPrivateKey(path: string): Promise<KeyObject> {
  let pem: Buffer;
  try {
    pem = await readFile(path);
  } catch (err) {
    throw new ModelLoadError(`cannot read private key ${path}: ${(err as Error).message}`);
  }
  return parsePrivateKey(pem, path);
}

/** Short fingerprint of a public key (sha256 of its DER, 16 hex digits), for logs and status. */
export function keyId(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return createHash('sha256').update(pub.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

/** The signature file's text for these manifest bytes. */
export function signManifest(manifestBytes: Uint8Array, privateKey: KeyObject): string {
  return sign(null, manifestBytes, privateKey).toString('base64') + '\n';
}

/** Does the signature file (base64 text, or the raw 64 bytes) sign these manifest bytes? */
export function verifyManifestSignature(manifestBytes: Uint8Array, sigFile: Uint8Array, publicKey: KeyObject): boolean {
  const sig = decodeSignature(sigFile);
  if (!sig) return false;
  try {
    return verify(null, manifestBytes, publicKey, sig);
  } catch {
    return false;
  }
}

function decodeSignature(file: Uint8Array): Buffer | undefined {
  if (file.length === 64) return Buffer.from(file);
  const text = Buffer.from(file).toString('utf8').trim();
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text)) return undefined;
  const raw = Buffer.from(text, 'base64');
  return raw.length === 64 ? raw : undefined;
}

/** Signs a bundle folder: refuses a bundle that does not verify itself (a signature vouches for it). */
export async function signBundle(dir: string, privateKey: KeyObject): Promise<{ sigPath: string; keyId: string; manifest: ModelManifest }> {
  const { manifest } = await loadBundle(dir);
  const bytes = await readFile(join(dir, 'model.json'));
  const sigPath = join(dir, SIG_FILE);
  await writeFile(sigPath, signManifest(bytes, privateKey));
  return { sigPath, keyId: keyId(privateKey), manifest };
}

export interface VerifiedBundle {
  dir: string;
  manifest: ModelManifest;
  /** A signature file was present and checked against the configured key. */
  signed: boolean;
  keyId?: string;
  golden: GoldenSample[];
}

/**
 * Everything that can be checked without running the model: the signature over model.json (when
 * a key is given: a missing or wrong signature is refused), the manifest, the sha256 of
 * model.onnx, and the golden sample files. Throws ModelLoadError saying what is wrong.
 */
export async function verifyBundle(dir: string, opts: { publicKey?: KeyObject } = {}): Promise<VerifiedBundle> {
  const manifestPath = join(dir, 'model.json');
  let manifestBytes: Buffer;
  try {
    manifestBytes = await readFile(manifestPath);
  } catch (err) {
    throw new ModelLoadError(`model bundle ${dir}: cannot read model.json (${(err as Error).message}); a bundle is a folder with model.onnx and model.json`);
  }
  let signed = false;
  let id: string | undefined;
  if (opts.publicKey) {
    id = keyId(opts.publicKey);
    let sig: Buffer;
    try {
      sig = await readFile(join(dir, SIG_FILE));
    } catch {
      throw new ModelLoadError(
        `model bundle ${dir} is not signed (no ${SIG_FILE}) but a public key is configured (key ${id}): ` +
          'only signed bundles are accepted; sign it with `linesight models sign DIR --key PRIV.pem`',
      );
    }
    if (!verifyManifestSignature(manifestBytes, sig, opts.publicKey)) {
      throw new ModelLoadError(
        `model bundle ${dir}: ${SIG_FILE} does not verify with the configured public key (key ${id}): ` +
          'model.json was changed after signing, or it was signed with another key; the bundle is refused',
      );
    }
    signed = true;
  }
  const { manifest } = await loadBundle(dir);
  const golden = await loadGolden(dir, manifest);
  return { dir, manifest, signed, ...(id ? { keyId: id } : {}), golden };
}
