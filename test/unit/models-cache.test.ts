// The bundle cache: atomic commits from staging, least-recently-used eviction by size that spares
// protected (in use) bundles, and a state that survives a restart and a crash mid-pull.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelCache, compareVersions, isSafeSegment, writeFileAtomic } from '../../src/models/cache.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'ls-models-cache-'));
  dirs.push(d);
  return d;
}

/** Stages a fake bundle of `size` bytes (model.onnx) plus a small model.json and commits it. */
async function put(cache: ModelCache, name: string, version: string, size: number): Promise<string> {
  const staged = await cache.stage();
  writeFileSync(join(staged, 'model.onnx'), Buffer.alloc(size, 7));
  writeFileSync(join(staged, 'model.json'), JSON.stringify({ name, version, sha256: 'a'.repeat(64) }).padEnd(200, ' '));
  return cache.commit(staged, name, version, 'a'.repeat(64));
}
const BUNDLE = 1000 + 200;
const keys = (c: ModelCache): string[] => c.list().map((e) => `${e.name}@${e.version}`);

test('commit moves a staged bundle into NAME/VERSION and records its size', async () => {
  const root = tempDir();
  const cache = new ModelCache({ dir: root, maxBytes: 10_000 });
  const dir = await put(cache, 'film', '1.0.0', 1000);
  assert.equal(dir, join(root, 'film', '1.0.0'));
  assert.equal(readFileSync(join(dir, 'model.onnx')).length, 1000);
  assert.equal(cache.peek('film', '1.0.0')?.bytes, BUNDLE);
  assert.equal(cache.totalBytes(), BUNDLE);
  assert.deepEqual(readdirSync(join(root, '.staging')), [], 'nothing left in staging');
});

test('re-committing a version replaces the old copy whole', async () => {
  const cache = new ModelCache({ dir: tempDir(), maxBytes: 10_000 });
  await put(cache, 'film', '1.0.0', 1000);
  const dir = await put(cache, 'film', '1.0.0', 500);
  assert.equal(readFileSync(join(dir, 'model.onnx')).length, 500);
  assert.equal(cache.list().length, 1);
  assert.equal(cache.totalBytes(), 700);
});

test('LRU eviction by size: the least recently used go first; a use moves a bundle to the back', async () => {
  const cache = new ModelCache({ dir: tempDir(), maxBytes: 3 * BUNDLE });
  await put(cache, 'a', '1.0.0', 1000);
  await put(cache, 'b', '1.0.0', 1000);
  await put(cache, 'c', '1.0.0', 1000);
  assert.deepEqual(keys(cache), ['a@1.0.0', 'b@1.0.0', 'c@1.0.0']);
  await cache.touch('a', '1.0.0'); // now b is the least recently used
  await put(cache, 'd', '1.0.0', 1000);
  assert.deepEqual(keys(cache), ['a@1.0.0', 'c@1.0.0', 'd@1.0.0']);
  assert.ok(!existsSync(join(cache.dir, 'b', '1.0.0')), 'evicted from disk too');
  assert.ok(cache.totalBytes() <= 3 * BUNDLE);

  // A big bundle pushes out as many as needed, oldest first.
  await put(cache, 'e', '1.0.0', 2000);
  assert.deepEqual(keys(cache), ['d@1.0.0', 'e@1.0.0']);
});

test('protected bundles (in use) are never evicted, even over the bound; the newest commit stays', async () => {
  const cache = new ModelCache({ dir: tempDir(), maxBytes: 2 * BUNDLE });
  await put(cache, 'a', '1.0.0', 1000);
  await put(cache, 'b', '1.0.0', 1000);
  cache.protect(['a@1.0.0', 'b@1.0.0']);
  await put(cache, 'c', '1.0.0', 1000);
  assert.deepEqual(keys(cache), ['a@1.0.0', 'b@1.0.0', 'c@1.0.0'], 'over the bound: all three are in use or new');
  cache.protect(['b@1.0.0']);
  assert.deepEqual(await cache.evict(), ['a@1.0.0']);
  assert.deepEqual(keys(cache), ['b@1.0.0', 'c@1.0.0']);
});

test('the state survives a restart; an interrupted pull (staging) is cleared; folders are the truth', async () => {
  const root = tempDir();
  const first = new ModelCache({ dir: root, maxBytes: 3 * BUNDLE });
  await put(first, 'a', '1.0.0', 1000);
  await put(first, 'b', '1.0.0', 1000);
  await first.touch('a', '1.0.0');
  // A crash mid-download leaves a staged folder behind; someone deletes a bundle by hand.
  const staged = await first.stage();
  writeFileSync(join(staged, 'model.onnx'), 'half');
  mkdirSync(join(root, 'x', '9.9.9'), { recursive: true }); // no model.json: not a bundle

  const second = new ModelCache({ dir: root, maxBytes: 3 * BUNDLE });
  await second.open();
  assert.deepEqual(keys(second), ['a@1.0.0', 'b@1.0.0']);
  assert.ok(!existsSync(staged), 'staging cleared at open');
  // Use order was kept: b is older than a, so b goes first.
  await put(second, 'c', '1.0.0', 1000);
  await put(second, 'd', '1.0.0', 1000);
  assert.deepEqual(keys(second), ['a@1.0.0', 'c@1.0.0', 'd@1.0.0']);

  rmSync(join(root, 'c'), { recursive: true });
  const third = new ModelCache({ dir: root, maxBytes: 3 * BUNDLE });
  await third.open();
  assert.deepEqual(keys(third), ['a@1.0.0', 'd@1.0.0']);
  const state = JSON.parse(readFileSync(join(root, 'cache.json'), 'utf8'));
  assert.deepEqual(Object.keys(state.entries).sort(), ['a@1.0.0', 'd@1.0.0']);
});

test('latest and versionsOf order by semantic version, not by text', async () => {
  const cache = new ModelCache({ dir: tempDir(), maxBytes: 100_000 });
  for (const v of ['1.2.0', '1.10.0', '1.9.1', '2.0.0-rc.1']) await put(cache, 'm', v, 10);
  assert.equal(cache.latest('m')?.version, '2.0.0-rc.1');
  assert.deepEqual(cache.versionsOf('m').map((e) => e.version), ['2.0.0-rc.1', '1.10.0', '1.9.1', '1.2.0']);
  assert.equal(cache.latest('other'), undefined);
});

test('compareVersions: semver precedence', () => {
  const sorted = ['1.0.0-alpha', '1.0.0-alpha.1', '1.0.0-beta', '1.0.0-beta.2', '1.0.0-beta.11', '1.0.0-rc.1', '1.0.0', '1.0.1', '1.10.0', '2.0.0'];
  const shuffled = [...sorted].reverse();
  assert.deepEqual(shuffled.sort(compareVersions), sorted);
  assert.equal(compareVersions('1.0.0+build.1', '1.0.0'), 0);
});

test('names that could leave the cache folder are refused', async () => {
  for (const bad of ['..', '.', 'a/b', '', 'a\\b']) assert.equal(isSafeSegment(bad), false, bad);
  assert.equal(isSafeSegment('film-demo_2.v1'), true);
  const cache = new ModelCache({ dir: tempDir(), maxBytes: 100 });
  assert.throws(() => cache.dirFor('..', '1.0.0'), /not a usable model name/);
});

test('writeFileAtomic replaces the whole file and leaves no temp file', async () => {
  const dir = tempDir();
  const p = join(dir, 'x.json');
  await writeFileAtomic(p, 'one');
  await writeFileAtomic(p, 'two');
  assert.equal(readFileSync(p, 'utf8'), 'two');
  assert.deepEqual(readdirSync(dir), ['x.json']);
});
