// Bundle signatures: ed25519 over model.json, checked against a configured public key; a missing,
// wrong or stale signature is refused with a message that says which and what to do.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { ModelLoadError } from '../../src/inference/types.js';
import {
  SIG_FILE,
  generateKeyPair,
  keyId,
  keyPairPaths,
  parsePrivateKey,
  parsePublicKey,
  readPrivateKey,
  readPublicKey,
  signBundle,
  signManifest,
  verifyBundle,
  verifyManifestSignature,
  writeKeyPair,
} from '../../src/models/sign.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'ls-models-sign-'));
  dirs.push(d);
  return d;
}

function bundle(): string {
  const g = new GraphBuilder({ name: 'sign-test' });
  const x = g.input('image', 'float32', [1, 1, 8, 8]);
  g.node('Reshape', [g.node('ReduceMean', [x], { keepdims: 1 }), g.constant('int64', [2], [1, 1])], {}, { name: 'score' });
  g.output('score', 'float32', [1, 1]);
  const bytes = g.toBytes();
  const dir = tempDir();
  writeFileSync(join(dir, 'model.onnx'), bytes);
  writeFileSync(
    join(dir, 'model.json'),
    JSON.stringify({
      schemaVersion: 1, name: 'mean', version: '1.0.0', sha256: createHash('sha256').update(bytes).digest('hex'),
      input: { name: 'image', width: 8, height: 8, colour: 'gray', layout: 'nchw', dtype: 'float32' },
      head: { type: 'anomaly', scoreOutput: 'score' }, threshold: 0.5,
    }),
  );
  return dir;
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

test('sign then verify: the signature file is one base64 line and verifies with the public key only', async () => {
  const keys = generateKeyPair();
  const other = generateKeyPair();
  const dir = bundle();
  const r = await signBundle(dir, parsePrivateKey(keys.privateKeyPem));
  assert.equal(r.sigPath, join(dir, SIG_FILE));
  assert.match(readFileSync(r.sigPath, 'utf8'), /^[A-Za-z0-9+/]{86}==\n$/);

  const v = await verifyBundle(dir, { publicKey: parsePublicKey(keys.publicKeyPem) });
  assert.equal(v.signed, true);
  assert.equal(v.keyId, keyId(parsePublicKey(keys.publicKeyPem)));
  assert.equal(v.keyId, r.keyId, 'the signer and the verifier name the same key');
  assert.equal(v.manifest.name, 'mean');

  const wrong = await refusal(verifyBundle(dir, { publicKey: parsePublicKey(other.publicKeyPem) }));
  assert.match(wrong, /does not verify with the configured public key/);
  assert.match(wrong, /signed with another key/);
});

test('without a key the signature is not required (and not claimed)', async () => {
  const dir = bundle();
  const v = await verifyBundle(dir);
  assert.equal(v.signed, false);
  assert.equal(v.keyId, undefined);
});

test('an unsigned bundle is refused when a key is configured, naming the fix', async () => {
  const keys = generateKeyPair();
  const msg = await refusal(verifyBundle(bundle(), { publicKey: parsePublicKey(keys.publicKeyPem) }));
  assert.match(msg, /is not signed \(no model\.json\.sig\)/);
  assert.match(msg, /linesight models sign/);
});

test('a manifest changed after signing is refused (e.g. a lowered threshold)', async () => {
  const keys = generateKeyPair();
  const dir = bundle();
  await signBundle(dir, parsePrivateKey(keys.privateKeyPem));
  const m = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
  m.threshold = 0.01;
  writeFileSync(join(dir, 'model.json'), JSON.stringify(m));
  assert.match(await refusal(verifyBundle(dir, { publicKey: parsePublicKey(keys.publicKeyPem) })), /model\.json was changed after signing/);
});

test('a tampered model.onnx is refused even with a valid signature (the manifest pins its sha256)', async () => {
  const keys = generateKeyPair();
  const dir = bundle();
  await signBundle(dir, parsePrivateKey(keys.privateKeyPem));
  const onnx = readFileSync(join(dir, 'model.onnx'));
  onnx[onnx.length - 3]! ^= 0xff;
  writeFileSync(join(dir, 'model.onnx'), onnx);
  assert.match(await refusal(verifyBundle(dir, { publicKey: parsePublicKey(keys.publicKeyPem) })), /sha256 mismatch/);
});

test('a raw 64-byte signature (openssl pkeyutl -rawin) is accepted too; garbage is not', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const data = Buffer.from('{"a":1}');
  assert.equal(verifyManifestSignature(data, sign(null, data, privateKey), publicKey), true);
  assert.equal(verifyManifestSignature(data, Buffer.from(signManifest(data, privateKey)), publicKey), true);
  assert.equal(verifyManifestSignature(data, Buffer.from('not a signature'), publicKey), false);
  assert.equal(verifyManifestSignature(Buffer.from('{"a":2}'), Buffer.from(signManifest(data, privateKey)), publicKey), false);
});

test('keys: only ed25519 is accepted, with a message naming keygen', () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
  assert.throws(() => parsePublicKey(rsa.publicKey.export({ type: 'spki', format: 'pem' })), /ed25519 key is needed.*rsa.*keygen/);
  assert.throws(() => parsePublicKey('not a pem'), /not a PEM public key/);
  // A private key PEM where a public one is expected still gives the right public key.
  const keys = generateKeyPair();
  assert.equal(keyId(parsePublicKey(keys.privateKeyPem)), keyId(parsePublicKey(keys.publicKeyPem)));
});

test('keygen writes OUT.pem (owner-only) and OUT.pub.pem, and never overwrites a key', async () => {
  const dir = tempDir();
  assert.deepEqual(keyPairPaths(join(dir, 'k.pem')), { privatePath: join(dir, 'k.pem'), publicPath: join(dir, 'k.pub.pem') });
  const r = await writeKeyPair(join(dir, 'release'));
  assert.equal(r.privatePath, join(dir, 'release.pem'));
  assert.equal(r.publicPath, join(dir, 'release.pub.pem'));
  assert.equal(statSync(r.privatePath).mode & 0o777, 0o600);
  const priv = await readPrivateKey(r.privatePath);
  const pub = await readPublicKey(r.publicPath);
  assert.equal(keyId(priv), keyId(pub));
  assert.equal(r.keyId, keyId(pub));
  const before = readFileSync(r.privatePath, 'utf8');
  await assert.rejects(writeKeyPair(join(dir, 'release')), /EEXIST/);
  assert.equal(readFileSync(r.privatePath, 'utf8'), before);
  assert.ok(existsSync(r.publicPath));
});

test('signing refuses a bundle that does not verify itself', async () => {
  const keys = generateKeyPair();
  const dir = bundle();
  writeFileSync(join(dir, 'model.onnx'), 'truncated');
  assert.match(await refusal(signBundle(dir, parsePrivateKey(keys.privateKeyPem))), /sha256 mismatch/);
  assert.ok(!existsSync(join(dir, SIG_FILE)));
});
