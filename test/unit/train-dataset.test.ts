import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { memoryLogger } from '../../src/log.js';
import { allocate, DatasetError, groupSamples, scanDataset, splitSamples, type GroupBy } from '../../src/train/dataset.js';
import { loadTrainConfig, parseTrainConfig, TrainConfigError } from '../../src/train/config.js';
import type { Sample } from '../../src/train/types.js';

let root: string;

async function png(file: string, value: number, w = 8, h = 8): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await sharp(Buffer.alloc(w * h, value), { raw: { width: w, height: h, channels: 1 } }).png().toFile(file);
}

/** A dataset folder from a list of relative file names (each a small PNG). */
async function dataset(name: string, files: string[]): Promise<string> {
  const dir = path.join(root, name);
  for (const [i, f] of files.entries()) await png(path.join(dir, f), 10 + i);
  return dir;
}

before(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'linesight-dataset-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('scanDataset', () => {
  it('lists every image with label, sha256 and its mask', async () => {
    const dir = await dataset('ok', ['good/a.png', 'good/b.png', 'scratch/s1.png', 'scratch/s2.png', 'masks/scratch/s1.png']);
    await writeFile(path.join(dir, 'README.md'), 'not an image, ignored');
    const { samples, manifest } = await scanDataset(dir);
    assert.deepEqual(
      samples.map((s) => [path.relative(dir, s.file), s.label, s.isGood, s.mask && path.relative(dir, s.mask)]),
      [
        ['good/a.png', 'good', true, undefined],
        ['good/b.png', 'good', true, undefined],
        ['scratch/s1.png', 'scratch', false, 'masks/scratch/s1.png'],
        ['scratch/s2.png', 'scratch', false, undefined],
      ],
    );
    for (const s of samples) assert.equal(s.sha256, createHash('sha256').update(await readFile(s.file)).digest('hex'));
    assert.deepEqual(manifest.classes, [
      { label: 'good', isGood: true, images: 2, masks: 0 },
      { label: 'scratch', isGood: false, images: 2, masks: 1 },
    ]);
    assert.deepEqual(manifest.entries[0]!.width, 8);
    assert.match(manifest.sha256, /^[0-9a-f]{64}$/);
  });

  it('gives the same manifest hash wherever the folder is, and another when a file changes', async () => {
    const dir = await dataset('moved', ['good/a.png', 'good/b.png', 'dust/d.png']);
    const copy = path.join(root, 'elsewhere', 'moved-copy');
    await cp(dir, copy, { recursive: true });
    const a = await scanDataset(dir);
    const b = await scanDataset(copy);
    assert.equal(a.manifest.sha256, b.manifest.sha256);
    await png(path.join(copy, 'good', 'a.png'), 200);
    assert.notEqual((await scanDataset(copy)).manifest.sha256, a.manifest.sha256);
  });

  it('skips an unreadable image, reporting it by name', async () => {
    const dir = await dataset('broken', ['good/a.png', 'good/b.png', 'crack/c.png']);
    await writeFile(path.join(dir, 'good', 'broken.png'), 'this is not a PNG');
    const log = memoryLogger();
    const { samples, manifest } = await scanDataset(dir, { log });
    assert.deepEqual(
      samples.map((s) => path.relative(dir, s.file)),
      ['crack/c.png', 'good/a.png', 'good/b.png'],
    );
    assert.equal(manifest.skipped.length, 1);
    assert.equal(manifest.skipped[0]!.file, 'good/broken.png');
    const warn = log.records.find((r) => r.level === 'warn');
    assert.ok(warn, 'a warning is logged');
    assert.equal(warn.file, path.join(dir, 'good', 'broken.png'));
  });

  it('also catches a truncated image (decoded, not just its header read)', async () => {
    const dir = await dataset('truncated', ['good/a.png', 'good/b.png']);
    // Noise compresses badly, so half the file cuts the pixel data, not just the trailer.
    const noise = Buffer.from(Array.from({ length: 64 * 64 }, (_, i) => (i * 7919) % 251));
    const big = await sharp(noise, { raw: { width: 64, height: 64, channels: 1 } }).png().toBuffer();
    await writeFile(path.join(dir, 'good', 'cut.png'), big.subarray(0, Math.floor(big.length / 2)));
    const { manifest } = await scanDataset(dir);
    assert.deepEqual(
      manifest.skipped.map((s) => s.file),
      ['good/cut.png'],
    );
  });

  const rejects = async (dir: string, pattern: RegExp, mentions: string): Promise<void> => {
    await assert.rejects(scanDataset(dir), (err: Error) => {
      assert.ok(err instanceof DatasetError, `DatasetError expected, got ${err.name}`);
      assert.match(err.message, pattern);
      assert.ok(err.message.includes(mentions), `message names ${mentions}: ${err.message}`);
      assert.match(err.message, /Fix:/);
      return true;
    });
  };

  it('stops on an empty class folder, naming it', async () => {
    const dir = await dataset('empty-class', ['good/a.png']);
    await mkdir(path.join(dir, 'scratch'));
    await writeFile(path.join(dir, 'scratch', 'notes.txt'), 'no images here');
    await rejects(dir, /empty class folder/, path.join(dir, 'scratch'));
  });

  it('stops on a class whose images are all unreadable', async () => {
    const dir = await dataset('all-broken', ['good/a.png']);
    await mkdir(path.join(dir, 'dust'));
    await writeFile(path.join(dir, 'dust', 'x.png'), 'junk');
    await rejects(dir, /empty class folder/, path.join(dir, 'dust'));
  });

  it('stops on a mask without an image, naming the mask', async () => {
    const dir = await dataset('orphan-mask', ['good/a.png', 'scratch/s1.png', 'masks/scratch/s1.png', 'masks/scratch/ghost.png']);
    await rejects(dir, /mask without an image/, path.join(dir, 'masks', 'scratch', 'ghost.png'));
  });

  it('stops on a mask for a class that has no folder', async () => {
    const dir = await dataset('orphan-class-mask', ['good/a.png', 'masks/crack/c1.png']);
    await rejects(dir, /mask without an image/, path.join(dir, 'masks', 'crack', 'c1.png'));
  });

  it('stops when there are no good images (no folder, or an empty one)', async () => {
    const none = await dataset('no-good', ['scratch/s1.png']);
    await rejects(none, /no good images/, path.join(none, 'good'));
    const empty = await dataset('empty-good', ['scratch/s1.png']);
    await mkdir(path.join(empty, 'good'));
    await rejects(empty, /no good images/, path.join(empty, 'good'));
  });

  it('stops on a missing dataset folder', async () => {
    await rejects(path.join(root, 'does-not-exist'), /cannot read the dataset folder/, 'does-not-exist');
  });
});

describe('split', () => {
  const make = (label: string, n: number): Sample[] =>
    Array.from({ length: n }, (_, i) => ({ file: `/d/${label}/${String(i).padStart(3, '0')}.png`, label, isGood: label === 'good', sha256: `${label}${i}` }));
  const samples = [...make('good', 50), ...make('scratch', 20), ...make('dust', 7)];
  const fr = { train: 0.6, val: 0.2, test: 0.2 };
  const count = (xs: Sample[], label: string): number => xs.filter((s) => s.label === label).length;

  it('allocates by largest remainder, giving a positive share at least one', () => {
    assert.deepEqual(allocate(10, [0.6, 0.2, 0.2]), [6, 2, 2]);
    assert.deepEqual(allocate(7, [0.6, 0.2, 0.2]), [4, 2, 1]);
    assert.deepEqual(allocate(3, [0.8, 0.1, 0.1]), [1, 1, 1]);
    assert.deepEqual(allocate(5, [0, 0.5, 0.5]), [0, 3, 2]);
    assert.deepEqual(allocate(0, [0.6, 0.2, 0.2]), [0, 0, 0]);
  });

  it('is stratified: each class is split by the fractions', () => {
    const s = splitSamples(samples, fr, 1);
    assert.deepEqual([count(s.train, 'good'), count(s.val, 'good'), count(s.test, 'good')], [30, 10, 10]);
    assert.deepEqual([count(s.train, 'scratch'), count(s.val, 'scratch'), count(s.test, 'scratch')], [12, 4, 4]);
    assert.deepEqual([count(s.train, 'dust'), count(s.val, 'dust'), count(s.test, 'dust')], [4, 2, 1]);
    const all = [...s.train, ...s.val, ...s.test].map((x) => x.file).sort();
    assert.deepEqual(all, samples.map((x) => x.file).sort(), 'every sample exactly once');
  });

  it('is deterministic for a seed, whatever the input order, and changes with the seed', () => {
    const a = splitSamples(samples, fr, 7);
    const b = splitSamples([...samples].reverse(), fr, 7);
    assert.deepEqual(a, b);
    const c = splitSamples(samples, fr, 8);
    assert.notDeepEqual(
      a.test.map((x) => x.file),
      c.test.map((x) => x.file),
    );
  });

  it('in anomaly mode sends no defect to training (they go to val and test)', () => {
    const s = splitSamples(samples, fr, 1, 'anomaly');
    assert.equal(s.train.filter((x) => !x.isGood).length, 0);
    assert.equal(count(s.train, 'good'), 30);
    assert.deepEqual([count(s.val, 'scratch'), count(s.test, 'scratch')], [10, 10]);
    assert.equal(count(s.val, 'dust') + count(s.test, 'dust'), 7);
  });
});

describe('grouped split (split.groupBy)', () => {
  // Parts photographed several times: part<P>_cam<C>.png, P = part id. 30 good parts x 3 views,
  // 12 scratched parts x 2 views, 5 dented parts x 4 views (one view of each dented part is in good/:
  // the dent shows in some views only), and a few with varying view counts.
  const views = (label: string, part: number, n: number, isGood = label === 'good'): Sample[] =>
    Array.from({ length: n }, (_, c) => ({ file: `/d/${label}/part${String(part).padStart(3, '0')}_cam${c}.png`, label, isGood, sha256: `${label}${part}.${c}` }));
  const samples: Sample[] = [
    ...Array.from({ length: 30 }, (_, i) => views('good', i, 2 + (i % 3))).flat(),
    ...Array.from({ length: 12 }, (_, i) => views('scratch', 100 + i, 2)).flat(),
    ...Array.from({ length: 5 }, (_, i) => [...views('dent', 200 + i, 3), { file: `/d/good/part${200 + i}_cam9.png`, label: 'good', isGood: true, sha256: `g${i}` }]).flat(),
  ];
  const fr = { train: 0.6, val: 0.2, test: 0.2 };
  const byPart: GroupBy = { kind: 'regex', pattern: '^(part\\d+)_' };
  const part = (s: Sample): string => /^(part\d+)_/.exec(path.basename(s.file))![1]!;
  const where = (sp: ReturnType<typeof splitSamples>): Map<string, Set<string>> => {
    const m = new Map<string, Set<string>>();
    for (const k of ['train', 'val', 'test'] as const) for (const s of sp[k]) m.set(part(s), (m.get(part(s)) ?? new Set()).add(k));
    return m;
  };

  it('never puts two images of one part into different splits', () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      for (const mode of ['supervised', 'anomaly'] as const) {
        const sp = splitSamples(samples, fr, seed, mode, byPart);
        const all = [...sp.train, ...sp.val, ...sp.test].map((x) => x.file).sort();
        assert.deepEqual(all, samples.map((x) => x.file).sort(), 'every sample exactly once');
        for (const [p, ks] of where(sp)) assert.equal(ks.size, 1, `seed ${seed} ${mode}: ${p} is in ${[...ks].join(' and ')}`);
        assert.equal(sp.groups, 47);
        if (mode === 'anomaly') assert.equal(sp.train.filter((x) => !x.isGood).length, 0, 'no defect trained on in anomaly mode');
      }
    }
  });

  it('keeps the fractions per class approximately and every split gets each class', () => {
    const sp = splitSamples(samples, fr, 1, 'supervised', byPart);
    for (const label of ['good', 'scratch', 'dent']) {
      const n = samples.filter((s) => s.label === label).length;
      const c = (['train', 'val', 'test'] as const).map((k) => sp[k].filter((s) => s.label === label).length);
      assert.ok(c.every((x) => x > 0), `${label}: ${c.join('/')}`);
      assert.ok(Math.abs(c[0]! / n - 0.6) <= 0.15 && Math.abs(c[1]! / n - 0.2) <= 0.12 && Math.abs(c[2]! / n - 0.2) <= 0.12, `${label}: ${c.join('/')} of ${n}`);
    }
  });

  it('is deterministic for a seed, whatever the input order, and changes with the seed', () => {
    const a = splitSamples(samples, fr, 7, 'supervised', byPart);
    const b = splitSamples([...samples].reverse(), fr, 7, 'supervised', byPart);
    assert.deepEqual(a, b);
    const c = splitSamples(samples, fr, 8, 'supervised', byPart);
    assert.notDeepEqual(a.test.map((x) => x.file), c.test.map((x) => x.file));
  });

  it("kind 'none' is the per-file split", () => {
    assert.deepEqual(splitSamples(samples, fr, 3, 'supervised', { kind: 'none' }), splitSamples(samples, fr, 3));
  });

  it('chains numeric keys within numericGap (frame counters)', () => {
    const f = (n: number, label = 'good'): Sample => ({ file: `/d/${label}/exp1_num_${n}.jpg`, label, isGood: label === 'good', sha256: `${n}` });
    const g = groupSamples([f(100), f(120), f(990), f(260, 'crack'), f(1000), f(1500), f(5)], { kind: 'regex', pattern: '_num_(\\d+)', numericGap: 150 });
    const sets = g.map((x) => x.samples.map((s) => path.basename(s.file)).sort().join(' ')).sort();
    assert.deepEqual(sets, ['exp1_num_100.jpg exp1_num_120.jpg exp1_num_260.jpg exp1_num_5.jpg', 'exp1_num_1000.jpg exp1_num_990.jpg', 'exp1_num_1500.jpg']);
    assert.throws(() => groupSamples([f(1), { ...f(2), file: '/d/good/exp1_num_x2.jpg' }], { kind: 'regex', pattern: '_num_(\\w+)', numericGap: 10 }), /numericGap needs numeric keys/);
  });

  it('groups on the path with on: path (a folder per part)', () => {
    const s = (p: string): Sample => ({ file: `/d/good/${p}`, label: 'good', isGood: true, sha256: p });
    const g = groupSamples([s('a-1.png'), s('a-2.png'), s('b-1.png')], { kind: 'regex', pattern: '/good/(\\w+)-', on: 'path' });
    assert.deepEqual(g.map((x) => x.samples.length), [2, 1]);
  });

  it('stops with a clear message when the pattern matches nothing, or misses files', () => {
    assert.throws(
      () => splitSamples(samples, fr, 1, 'supervised', { kind: 'regex', pattern: '_num_(\\d+)' }),
      (e: Error) => e instanceof DatasetError && /split\.groupBy\.pattern: \/_num_\(\\d\+\)\/ matches none of the 134 file names \(e\.g\. part/.test(e.message),
    );
    const odd: Sample = { file: '/d/good/IMG_0001.png', label: 'good', isGood: true, sha256: 'x' };
    assert.throws(() => splitSamples([...samples, odd], fr, 1, 'supervised', byPart), /does not match IMG_0001\.png.*unmatched: single/s);
    const sp = splitSamples([...samples, odd], fr, 1, 'supervised', { ...byPart, unmatched: 'single' });
    assert.equal(sp.groups, 48);
  });

  it('the config checks the pattern', () => {
    const base = { dataset: { dir: 'data' }, method: 'm', output: { name: 'x' } };
    assert.throws(() => parseTrainConfig({ ...base, split: { groupBy: { kind: 'regex' } } }), /split\.groupBy\.pattern: required/);
    assert.throws(() => parseTrainConfig({ ...base, split: { groupBy: { kind: 'regex', pattern: '(' } } }), /split\.groupBy\.pattern: not a valid regular expression/);
    const c = parseTrainConfig({ ...base, split: { groupBy: { kind: 'regex', pattern: '_num_(\\d+)', numericGap: 400 } } });
    assert.deepEqual(c.split.groupBy, { kind: 'regex', pattern: '_num_(\\d+)', on: 'name', numericGap: 400, unmatched: 'error' });
    assert.deepEqual(c.split.train, 0.6);
  });
});

describe('training config', () => {
  it('fills defaults', () => {
    const c = parseTrainConfig({ dataset: { dir: 'data' }, method: 'm', output: { name: 'x' } });
    assert.equal(c.mode, 'anomaly');
    assert.equal(c.targetFrr, 0.01);
    assert.equal(c.seed, 1);
    assert.deepEqual(c.split, { train: 0.6, val: 0.2, test: 0.2, groupBy: { kind: 'none', pattern: '', on: 'name', numericGap: 0, unmatched: 'error' } });
    assert.deepEqual(c.params, {});
    assert.equal(c.output.version, '1.0.0');
    assert.equal(c.dataset.source, 'folder');
    assert.equal(c.dataset.synthetic.frames, 600);
  });

  it('reports errors as path: message', () => {
    assert.throws(
      () => parseTrainConfig({ dataset: { dir: 'd' }, method: 'm', output: { name: 'bad name', version: 'v1' }, targetFrr: 2, extra: 1 }),
      (err: TrainConfigError) => {
        assert.ok(err instanceof TrainConfigError);
        assert.ok(err.errors.some((e) => e.startsWith('targetFrr: ')), err.message);
        assert.ok(err.errors.some((e) => e.startsWith('output.name: ')), err.message);
        assert.ok(err.errors.some((e) => e.startsWith('output.version: ')), err.message);
        assert.ok(err.errors.includes('extra: Unexpected property'), err.message);
        return true;
      },
    );
    assert.throws(() => parseTrainConfig({ dataset: { dir: 'd' }, output: { name: 'x' } }), /method: /);
    assert.throws(() => parseTrainConfig({ dataset: { dir: 'd' }, method: 'm', output: { name: 'x' }, split: { train: 0.5, val: 0.2, test: 0.2 } }), /split: train \+ val \+ test must be 1/);
    assert.throws(() => parseTrainConfig({ method: 'm', output: { name: 'x' } }), /dataset\.dir: required/);
  });

  it('resolves paths relative to the config file', async () => {
    const dir = path.join(root, 'cfg', 'train');
    await mkdir(dir, { recursive: true });
    const file = path.join(dir, 't.yaml');
    await writeFile(file, 'dataset:\n  dir: ../../data/tiles\nmethod: m\noutput:\n  name: tiles\n');
    const rc = await loadTrainConfig(file);
    assert.equal(rc.datasetDir, path.join(root, 'data', 'tiles'));
    assert.equal(rc.outputDir, path.join(root, 'cfg', 'models', 'tiles'));
    assert.equal(rc.runDir, path.join(root, 'cfg', 'runs'));
    await writeFile(file, 'method: [unclosed');
    await assert.rejects(loadTrainConfig(file), /not valid YAML/);
  });
});
