// Golden sample lists: where they come from (golden.json over provenance.golden), paths that cannot
// leave golden/, files present and matching their sha256 when one is given.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ModelManifest } from '../../src/inference/types.js';
import { describeGoldenFailures, isSafeRelativePath, loadGolden, parseGoldenList } from '../../src/models/golden.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'ls-models-golden-'));
  dirs.push(d);
  return d;
}

const manifest = (golden?: unknown): ModelManifest => ({
  schemaVersion: 1, name: 'm', version: '1.0.0', sha256: 'a'.repeat(64),
  input: { name: 'image', width: 8, height: 8, colour: 'gray', layout: 'nchw', dtype: 'float32' },
  head: { type: 'anomaly', scoreOutput: 'score' }, threshold: 0.5,
  ...(golden !== undefined ? { provenance: { golden } } : {}),
});

test('paths must stay inside golden/', () => {
  for (const ok of ['a.png', 'sub/b.jpg', 'x_1-2.bmp']) assert.equal(isSafeRelativePath(ok), true, ok);
  for (const bad of ['../a.png', '/etc/passwd', 'a/../../b', './a.png', 'a//b', '', '.hidden', 'a\\b', 'a b.png']) assert.equal(isSafeRelativePath(bad), false, bad);
});

test('parseGoldenList names the bad entry', () => {
  assert.deepEqual(parseGoldenList({ samples: [{ file: 'a.png', verdict: 'pass' }] }, 'g'), [{ file: 'a.png', expected: 'pass' }]);
  assert.deepEqual(parseGoldenList([{ file: 'a.png', verdict: 'reject', sha256: 'AB'.repeat(32) }], 'g'), [{ file: 'a.png', expected: 'reject', sha256: 'ab'.repeat(32) }]);
  assert.throws(() => parseGoldenList({ samples: [{ file: '../x.png', verdict: 'pass' }] }, 'g'), /g: samples\[0\]\.file: a relative path inside golden\//);
  assert.throws(() => parseGoldenList({ samples: [{ file: 'a.png', verdict: 'ok' }] }, 'g'), /samples\[0\]\.verdict: must be "pass" or "reject"/);
  assert.throws(() => parseGoldenList({ samples: [{ file: 'a.png', verdict: 'pass', sha256: 'xyz' }] }, 'g'), /sha256: must be 64 hex digits/);
  assert.throws(() => parseGoldenList({ nope: 1 }, 'g'), /expected \{ "samples"/);
});

test('loadGolden: golden.json wins over the manifest; files must exist and match their sha256', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'golden'));
  writeFileSync(join(dir, 'golden', 'a.png'), 'A');
  writeFileSync(join(dir, 'golden', 'b.png'), 'B');
  const shaA = createHash('sha256').update('A').digest('hex');

  assert.deepEqual(await loadGolden(dir, manifest()), [], 'none listed: no samples');
  assert.deepEqual(await loadGolden(dir, manifest({ samples: [{ file: 'a.png', verdict: 'pass', sha256: shaA }] })), [{ file: 'a.png', expected: 'pass', sha256: shaA }]);
  await assert.rejects(loadGolden(dir, manifest({ samples: [{ file: 'b.png', verdict: 'pass', sha256: shaA }] })), /golden\/b\.png does not match its sha256/);
  await assert.rejects(loadGolden(dir, manifest({ samples: [{ file: 'c.png', verdict: 'pass' }] })), /golden\/c\.png is listed but missing/);

  writeFileSync(join(dir, 'golden.json'), JSON.stringify({ samples: [{ file: 'b.png', verdict: 'reject' }] }));
  assert.deepEqual(await loadGolden(dir, manifest({ samples: [{ file: 'a.png', verdict: 'pass' }] })), [{ file: 'b.png', expected: 'reject' }]);
  writeFileSync(join(dir, 'golden.json'), '{');
  await assert.rejects(loadGolden(dir, manifest()), /golden\.json: not valid JSON/);
});

test('describeGoldenFailures: one line, the first five named', () => {
  const failures = Array.from({ length: 7 }, (_, i) => ({ file: `f${i}.png`, expected: 'pass' as const, got: 'reject' as const, score: 0.75 }));
  const line = describeGoldenFailures({ total: 9, passed: 2, failures });
  assert.match(line, /^7 of 9 golden sample\(s\) judged wrongly: f0\.png: expected pass, got reject \(score 0\.7500\);/);
  assert.match(line, /f4\.png.*; and 2 more$/);
  assert.doesNotMatch(line, /f5\.png/);
});
