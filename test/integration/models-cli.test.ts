// `linesight models …` as a user runs it: keygen, sign, verify (with golden samples), index,
// and a registry hosted by `models serve` in its own process, listed and pulled from.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { silentLogger } from '../../src/log.js';
import { modelsCommand } from '../../src/models/cli.js';

const dirs: string[] = [];
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'ls-models-cli-'));
  dirs.push(d);
  return d;
}

async function run(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await modelsCommand(args, { out: (l) => out.push(l), err: (l) => err.push(l), log: silentLogger });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

function meanModel(tag: string): Uint8Array {
  const g = new GraphBuilder({ name: `mean-${tag}` });
  const x = g.input('image', 'float32', [1, 1, 8, 8]);
  g.node('Reshape', [g.node('ReduceMean', [x], { keepdims: 1 }), g.constant('int64', [2], [1, 1])], {}, { name: 'score' });
  g.output('score', 'float32', [1, 1]);
  return g.toBytes();
}

async function addBundle(root: string, name: string, version: string, golden: { file: string; verdict: 'pass' | 'reject'; value: number }[] = []): Promise<string> {
  const dir = join(root, name, version);
  mkdirSync(join(dir, 'golden'), { recursive: true });
  const bytes = meanModel(`${name}-${version}`);
  writeFileSync(join(dir, 'model.onnx'), bytes);
  writeFileSync(
    join(dir, 'model.json'),
    JSON.stringify({
      schemaVersion: 1, name, version, sha256: createHash('sha256').update(bytes).digest('hex'),
      input: { name: 'image', width: 8, height: 8, colour: 'gray', layout: 'nchw', dtype: 'float32' },
      head: { type: 'anomaly', scoreOutput: 'score' }, threshold: 0.5,
    }),
  );
  for (const g of golden) await sharp(Buffer.alloc(64, g.value), { raw: { width: 8, height: 8, channels: 1 } }).png().toFile(join(dir, 'golden', g.file));
  if (golden.length) writeFileSync(join(dir, 'golden.json'), JSON.stringify({ samples: golden.map(({ file, verdict }) => ({ file, verdict })) }));
  return dir;
}

/** `models serve` in its own process; resolves with its URL once it prints it. */
function serveProcess(dir: string): Promise<{ url: string; child: ChildProcess }> {
  const script = "import { modelsCommand } from './src/models/cli.ts'; process.exit(await modelsCommand(process.argv.slice(1)));";
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, 'serve', dir, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /at (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
      if (m) resolve({ url: m[1]!, child });
    });
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => reject(new Error(`serve exited ${code}: ${out}${err}`)));
  });
}

test('keygen, sign, verify: a signed bundle verifies with its key only; usage errors exit 2', async () => {
  const dir = tempDir();
  const bundle = await addBundle(dir, 'mean', '1.0.0');
  const k = await run('keygen', join(dir, 'release'));
  assert.equal(k.code, 0, k.err);
  assert.match(k.out, /private key .*release\.pem.*public key .*release\.pub\.pem/);
  assert.equal((await run('keygen', join(dir, 'other'))).code, 0);
  assert.equal((await run('keygen', join(dir, 'release'))).code, 1, 'an existing key is never overwritten');

  const unsigned = await run('verify', bundle, '--key', join(dir, 'release.pub.pem'));
  assert.equal(unsigned.code, 1);
  assert.match(unsigned.err, /is not signed/);

  const s = await run('sign', bundle, '--key', join(dir, 'release.pem'));
  assert.equal(s.code, 0, s.err);
  assert.ok(existsSync(join(bundle, 'model.json.sig')));
  const ok = await run('verify', bundle, '--key', join(dir, 'release.pub.pem'));
  assert.equal(ok.code, 0, ok.err);
  assert.match(ok.out, /mean@1\.0\.0 ok .*signature ok, key [0-9a-f]{16}/);
  const wrong = await run('verify', bundle, '--key', join(dir, 'other.pub.pem'));
  assert.equal(wrong.code, 1);
  assert.match(wrong.err, /does not verify with the configured public key/);
  const nokey = await run('verify', bundle);
  assert.equal(nokey.code, 0);
  assert.match(nokey.out, /signature not checked: no --key/);

  assert.equal((await run('sign', bundle)).code, 2);
  assert.equal((await run('frobnicate')).code, 2);
  assert.equal((await run('pull', 'mean@1.0.0')).code, 2, 'pull needs --registry');
  assert.equal((await run('pull', 'not a ref', '--registry', dir)).code, 2);
  assert.equal((await run('verify', bundle, '--nope')).code, 2);
});

test('verify --golden runs the golden samples through the model: a wrong expectation fails with the file named', async () => {
  const root = tempDir();
  const good = await addBundle(root, 'mean', '1.0.0', [{ file: 'clean.png', verdict: 'pass', value: 20 }, { file: 'dirty.png', verdict: 'reject', value: 230 }]);
  const r = await run('verify', good, '--golden');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /golden samples 2\/2 judged as expected/);
  const bad = await addBundle(root, 'mean', '1.1.0', [{ file: 'clean.png', verdict: 'reject', value: 20 }]);
  const b = await run('verify', bad, '--golden');
  assert.equal(b.code, 1);
  assert.match(b.err, /clean\.png: expected reject, got pass/);
});

test('models serve in its own process; list and pull from it; a tampered bundle is refused; SIGTERM stops it', async () => {
  const root = tempDir();
  await addBundle(root, 'mean', '1.0.0');
  await addBundle(root, 'mean', '1.1.0');
  const broken = await addBundle(root, 'mean', '1.2.0');
  writeFileSync(join(broken, 'model.onnx'), Buffer.concat([readFileSync(join(broken, 'model.onnx')), Buffer.from([0])]));
  const keyDir = tempDir();
  assert.equal((await run('keygen', join(keyDir, 'k'))).code, 0);
  for (const v of ['1.0.0', '1.1.0']) assert.equal((await run('sign', join(root, 'mean', v), '--key', join(keyDir, 'k.pem'))).code, 0);

  const { url, child } = await serveProcess(root);
  const list = await run('list', '--registry', url);
  assert.equal(list.code, 0, list.err);
  assert.match(list.out, /mean@1\.0\.0 .*signed/);
  assert.match(list.out, /mean@1\.2\.0 .*latest, unsigned/);
  const json = JSON.parse((await run('list', '--registry', url, '--json')).out);
  assert.deepEqual(json.models[0].versions.map((v: { version: string }) => v.version), ['1.0.0', '1.1.0', '1.2.0']);

  const cache = tempDir();
  const pulled = await run('pull', 'mean@1.1.0', '--registry', url, '--cache', cache, '--key', join(keyDir, 'k.pub.pem'));
  assert.equal(pulled.code, 0, pulled.err);
  assert.match(pulled.out, /pulled mean@1\.1\.0 into .*signature ok/);
  assert.ok(existsSync(join(cache, 'mean', '1.1.0', 'model.json.sig')));
  const refused = await run('pull', 'mean@latest', '--registry', url, '--cache', cache);
  assert.equal(refused.code, 1);
  assert.match(refused.err, /sha256 mismatch/);
  const cached = await run('list', '--registry', url, '--cache', cache);
  assert.match(cached.out, /mean@1\.1\.0 .*signed, cached/);
  assert.match(cached.out, /cache .*: 1 bundle\(s\)/);

  const exit = new Promise<number | null>((r) => child.on('exit', r));
  child.kill('SIGTERM');
  assert.equal(await exit, 0);
  assert.equal((await run('list', '--registry', url)).code, 1, 'the registry is gone');
});

test('models index writes index.json for static hosting; list reads a folder registry', async () => {
  const root = tempDir();
  await addBundle(root, 'mean', '1.0.0');
  await addBundle(root, 'mean', '0.9.0');
  mkdirSync(join(root, 'mean', '2.0.0'));
  writeFileSync(join(root, 'mean', '2.0.0', 'model.json'), JSON.stringify({ name: 'other', version: '2.0.0', sha256: 'x' }));
  const r = await run('index', root);
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /model\.json says other@2\.0\.0, the folder says mean@2\.0\.0; skipped/);
  const idx = JSON.parse(readFileSync(join(root, 'index.json'), 'utf8'));
  assert.equal(idx.models[0].latest, '1.0.0');
  assert.deepEqual(idx.models[0].versions.map((v: { version: string }) => v.version), ['0.9.0', '1.0.0']);
  const list = await run('list', '--registry', root);
  assert.match(list.out, /1 model\(s\)/);
});
