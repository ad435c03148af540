// ModelManager with real onnxruntime pools and a registry served on loopback: a hot swap under a
// steady stream of parts (nothing refused, one switch point, the old pool stopped only after its
// last call), refused candidates that leave the running model alone, shadow agreement figures on
// a known set, promote/rollback, and the automatic rollback of a model that rejects everything.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, type KeyObject } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { Bus, type Alarm } from '../../src/bus.js';
import { InferencePool } from '../../src/inference/pool.js';
import { InferenceError, type InferenceResult } from '../../src/inference/types.js';
import { GraphBuilder } from '../../src/onnx/builder.js';
import { memoryLogger, silentLogger, type Logger } from '../../src/log.js';
import type { FailSafeReason, Frame, Part } from '../../src/part.js';
import { ModelCache } from '../../src/models/cache.js';
import { ModelManager, type ChangeOutcome, type ModelManagerOptions, type ShadowVerdict } from '../../src/models/manager.js';
import { ModelStore } from '../../src/models/registry.js';
import { serveRegistry, type RegistryServer } from '../../src/models/serve.js';
import { generateKeyPair, parsePrivateKey, parsePublicKey, signBundle } from '../../src/models/sign.js';

// ---- fixtures ---------------------------------------------------------------------------------

const dirs: string[] = [];
const servers: RegistryServer[] = [];
const managers: ModelManager[] = [];
after(async () => {
  await Promise.all(managers.map((m) => m.stop()));
  await Promise.all(servers.map((s) => s.close()));
  dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'ls-models-mgr-'));
  dirs.push(d);
  return d;
}

/** Anomaly model on 8x8 grey: score = mean pixel (0..1); models differ by threshold (and bytes, via the tag). */
function meanModel(tag: string): Uint8Array {
  const g = new GraphBuilder({ name: `mean-${tag}` });
  const x = g.input('image', 'float32', [1, 1, 8, 8]);
  g.node('Reshape', [g.node('ReduceMean', [x], { keepdims: 1 }), g.constant('int64', [2], [1, 1])], {}, { name: 'score' });
  g.output('score', 'float32', [1, 1]);
  return g.toBytes();
}

interface BundleOpts {
  threshold: number;
  key?: KeyObject;
  golden?: { file: string; verdict: 'pass' | 'reject'; value: number }[];
  inputName?: string;
}

async function addBundle(root: string, name: string, version: string, o: BundleOpts): Promise<string> {
  const dir = join(root, name, version);
  mkdirSync(dir, { recursive: true });
  const bytes = meanModel(`${name}-${version}`);
  writeFileSync(join(dir, 'model.onnx'), bytes);
  const golden = o.golden?.map(({ file, verdict }) => ({ file, verdict }));
  writeFileSync(
    join(dir, 'model.json'),
    JSON.stringify({
      schemaVersion: 1, name, version, sha256: createHash('sha256').update(bytes).digest('hex'),
      input: { name: o.inputName ?? 'image', width: 8, height: 8, colour: 'gray', layout: 'nchw', dtype: 'float32' },
      head: { type: 'anomaly', scoreOutput: 'score' }, threshold: o.threshold,
      // Golden verdicts in the manifest: the signature covers them.
      ...(golden ? { provenance: { golden: { samples: golden } } } : {}),
    }),
  );
  for (const g of o.golden ?? []) {
    mkdirSync(join(dir, 'golden'), { recursive: true });
    await sharp(Buffer.alloc(64, g.value), { raw: { width: 8, height: 8, channels: 1 } }).png().toFile(join(dir, 'golden', g.file));
  }
  if (o.key) await signBundle(dir, o.key);
  return dir;
}

const keys = generateKeyPair();
const privateKey = parsePrivateKey(keys.privateKeyPem);
const publicKey = parsePublicKey(keys.publicKeyPem);

/** A pool that counts the calls it answered and notes how many were still unanswered when it was stopped. */
class TrackedPool extends InferencePool {
  stopped = false;
  answered = 0;
  inFlight = 0;
  inFlightAtStop = -1;
  constructor(
    readonly dir: string,
    private readonly gate?: Promise<void>,
  ) {
    super({ modelDir: dir, providers: ['cpu'], workers: 1, intraOpThreads: 1, queueLimit: 32, log: silentLogger });
  }
  override async stop(): Promise<void> {
    if (!this.stopped) this.inFlightAtStop = this.inFlight;
    this.stopped = true;
    return super.stop();
  }
  override async inspect(frame: Frame, opts?: { priority?: 'line' | 'api' }): Promise<InferenceResult> {
    this.inFlight++;
    try {
      if (this.gate) await this.gate;
      const r = await super.inspect(frame, opts);
      this.answered++;
      return r;
    } finally {
      this.inFlight--;
    }
  }
}

interface Rig {
  m: ModelManager;
  pools: TrackedPool[];
  changes: ChangeOutcome[];
  shadows: ShadowVerdict[];
  alarms: Alarm[];
  store: ModelStore;
  log: Logger & { records: Record<string, unknown>[] };
}

async function rig(registryRoot: string, initial: string, over: Partial<ModelManagerOptions> & { gateFor?: (dir: string) => Promise<void> | undefined } = {}): Promise<Rig> {
  const server = await serveRegistry({ dir: registryRoot, port: 0 });
  servers.push(server);
  const log = memoryLogger();
  const cacheDir = tempDir();
  const store = new ModelStore({
    registry: server.url, cache: new ModelCache({ dir: cacheDir, maxBytes: 50_000_000 }),
    bundledDir: join(cacheDir, 'none'), publicKey, log, timeoutMs: 5000,
  });
  const pools: TrackedPool[] = [];
  const changes: ChangeOutcome[] = [];
  const shadows: ShadowVerdict[] = [];
  const alarms: Alarm[] = [];
  const bus = new Bus();
  bus.on('alarm', (a) => alarms.push(a));
  const m = new ModelManager({
    createPool: (dir) => {
      const p = new TrackedPool(dir, over.gateFor?.(dir));
      pools.push(p);
      return p;
    },
    log, bus, store, initial,
    onShadow: (r) => shadows.push(r),
    onChange: (o) => changes.push(o),
    ...over,
  });
  managers.push(m);
  await m.start();
  return { m, pools, changes, shadows, alarms, store, log };
}

let seq = 0;
const frame = (value: number): Frame => ({
  seq: ++seq, timeNs: process.hrtime.bigint(), width: 8, height: 8, channels: 1, data: new Uint8Array(64).fill(value), source: 'test',
});

function partFor(f: Frame, r?: InferenceResult, reason?: FailSafeReason): Part {
  return {
    id: `st1-b1-${f.seq}`, station: 'st1', seq: f.seq, trigger: 'freerun', triggeredAt: new Date().toISOString(), t: { triggerNs: f.timeNs },
    frame: f, failSafe: reason !== undefined,
    ...(reason ? { reason, action: 'divert' as const } : {}),
    ...(r ? { verdict: r.verdict, model: r.model, action: r.verdict.verdict === 'reject' ? ('divert' as const) : ('pass' as const) } : {}),
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits (yielding to the event loop) until cond holds; the bound only guards against a hang. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 20_000 && !cond(); i++) await sleep(1);
  assert.ok(cond(), `never happened: ${what}`);
}

// Pixel values and what the models say: score = value / 255.
const V = { p10: 25, p20: 51, p40: 102, p60: 153, p80: 204 };

// ---- swap -------------------------------------------------------------------------------------

test('hot swap under a steady stream of parts: every call answered, none refused, one switch point, old pool stopped after its last call', async () => {
  const root = tempDir();
  await addBundle(root, 'mean', '1.0.0', { threshold: 0.5, key: privateKey });
  await addBundle(root, 'mean', '2.0.0', {
    threshold: 0.3, key: privateKey,
    golden: [{ file: 'clean.png', verdict: 'pass', value: V.p10 }, { file: 'stain.png', verdict: 'reject', value: V.p60 }],
  });
  const r = await rig(root, 'mean@1.0.0');
  assert.equal(r.m.versions().active?.ref, 'mean@1.0.0');
  assert.equal(r.m.info().model.version, '1.0.0');

  // A part every 5 ms; the swap is asked for at part 50; the stream goes on until at least 200
  // parts and 20 after the swap returned.
  const calls: Promise<InferenceResult>[] = [];
  let swap: Promise<ChangeOutcome> | undefined;
  let swapped = false;
  let after = 0;
  while (!(calls.length >= 200 && swapped && after >= 20) && calls.length < 5000) {
    calls.push(r.m.inspect(frame(V.p40), { priority: 'line' }));
    if (calls.length === 50) swap = r.m.swap('mean@2.0.0').then((o) => ((swapped = true), o));
    if (swapped) after++;
    await sleep(5);
  }
  const outcome = await swap!;
  const results = await Promise.allSettled(calls);
  const failed = results.filter((x) => x.status === 'rejected');
  assert.equal(failed.length, 0, `refused or failed calls: ${failed.map((x) => String((x as PromiseRejectedResult).reason)).join('; ')}`);
  const versions = results.map((x) => (x as PromiseFulfilledResult<InferenceResult>).value.model.version);
  const verdicts = results.map((x) => (x as PromiseFulfilledResult<InferenceResult>).value.verdict.verdict);
  const switchAt = versions.indexOf('2.0.0');
  assert.ok(switchAt >= 50, `switched at call ${switchAt}, before the swap was asked for`);
  assert.deepEqual(versions.slice(0, switchAt), Array(switchAt).fill('1.0.0'));
  assert.deepEqual(versions.slice(switchAt), Array(versions.length - switchAt).fill('2.0.0'), 'no interleaving after the switch');
  // The same frames, judged by each model's threshold.
  assert.deepEqual([...new Set(verdicts.slice(0, switchAt))], ['pass']);
  assert.deepEqual([...new Set(verdicts.slice(switchAt))], ['reject']);

  assert.equal(outcome.ok, true, outcome.message);
  assert.equal(outcome.action, 'swap');
  assert.deepEqual([outcome.from?.version, outcome.to?.version], ['1.0.0', '2.0.0']);
  assert.deepEqual([outcome.golden?.total, outcome.golden?.passed], [2, 2]);
  assert.equal(outcome.versions.active?.ref, 'mean@2.0.0');
  assert.equal(outcome.versions.active?.signed, true);
  assert.equal(outcome.versions.active?.origin, 'registry');
  assert.equal(outcome.versions.previous?.ref, 'mean@1.0.0');
  assert.equal(r.m.info().model.version, '2.0.0');

  // The old pool was stopped, and only once every call it had taken was answered.
  const [poolA, poolB] = r.pools;
  await until(() => poolA!.stopped, 'old pool stopped');
  assert.equal(poolA!.inFlightAtStop, 0, 'no call of the old pool was unanswered when it stopped');
  assert.equal(poolA!.answered, switchAt, 'the old pool answered exactly the calls before the switch');
  assert.equal(poolB!.answered, versions.length - switchAt + 2, 'the new pool: the calls after the switch and its 2 golden samples');
  assert.equal(poolB!.stopped, false);
  assert.ok(r.log.records.some((x) => x.level === 'info' && String(x.msg).startsWith('swapped to mean@2.0.0')));
});

test('refused candidates (tampered, truncated, unsigned, golden mismatch, I/O mismatch) leave the running model alone', async () => {
  const root = tempDir();
  await addBundle(root, 'mean', '1.0.0', { threshold: 0.5, key: privateKey });
  const tampered = await addBundle(root, 'mean', '2.0.0', { threshold: 0.3, key: privateKey });
  const onnx = readFileSync(join(tampered, 'model.onnx'));
  onnx[onnx.length >> 1]! ^= 0x01;
  writeFileSync(join(tampered, 'model.onnx'), onnx);
  truncateSync(join(await addBundle(root, 'mean', '2.1.0', { threshold: 0.3, key: privateKey }), 'model.onnx'), 50);
  await addBundle(root, 'mean', '2.2.0', { threshold: 0.3 }); // unsigned
  // Expects a clean frame to be rejected: this model (threshold 0.3) passes it.
  await addBundle(root, 'mean', '2.3.0', { threshold: 0.3, key: privateKey, golden: [{ file: 'clean.png', verdict: 'reject', value: V.p10 }] });
  await addBundle(root, 'mean', '2.4.0', { threshold: 0.3, key: privateKey, inputName: 'pixels' });
  const r = await rig(root, 'mean@1.0.0');

  const cases: [string, RegExp][] = [
    ['mean@2.0.0', /sha256 mismatch/],
    ['mean@2.1.0', /sha256 mismatch.*truncated/s],
    ['mean@2.2.0', /is not signed/],
    ['mean@2.3.0', /1 of 1 golden sample\(s\) judged wrongly: clean\.png: expected reject, got pass/],
    ['mean@2.4.0', /manifest input 'pixels' is not a model input/],
    ['mean@7.0.0', /not in the registry/],
  ];
  for (const [ref, why] of cases) {
    const o = await r.m.swap(ref);
    assert.equal(o.ok, false, ref);
    assert.match(o.message, why, ref);
    assert.match(o.message, /mean@1\.0\.0 stays active$/, ref);
    assert.equal(r.m.versions().active?.ref, 'mean@1.0.0');
    assert.equal(r.m.versions().previous, undefined);
    const res = await r.m.inspect(frame(V.p40));
    assert.equal(res.model.version, '1.0.0', `${ref}: the running model answers`);
  }
  const golden = r.changes.find((c) => c.request === 'mean@2.3.0')!;
  assert.deepEqual(golden.golden?.failures, [{ file: 'clean.png', expected: 'reject', got: 'pass', score: golden.golden!.failures[0]!.score }]);
  // Candidates that got as far as a pool (golden, I/O) had it stopped again; only the active one runs.
  await until(() => r.pools.slice(1).every((p) => p.stopped), 'candidate pools stopped');
  assert.equal(r.pools[0]!.stopped, false);
  assert.equal(r.store.cache!.list().map((e) => e.version).join(), '1.0.0,2.3.0,2.4.0', 'refused downloads never reach the cache');

  // A swap to the active version is a no-op; a second change while one runs is refused.
  const same = await r.m.swap('mean@1.0.0');
  assert.equal(same.ok, true);
  assert.match(same.message, /already active/);
  await addBundle(root, 'mean', '3.0.0', { threshold: 0.3, key: privateKey });
  const first = r.m.swap('mean@3.0.0');
  const second = await r.m.swap('mean@3.0.0');
  assert.equal(second.ok, false);
  assert.match(second.message, /swap to mean@3\.0\.0 is in progress/);
  assert.equal((await first).ok, true);
});

test('swap to a bundle folder, then rollback on request; versions() and info() report the models', async () => {
  const root = tempDir();
  await addBundle(root, 'mean', '1.0.0', { threshold: 0.5, key: privateKey });
  const local = await addBundle(tempDir(), 'mean', '1.5.0', { threshold: 0.3, key: privateKey });
  const r = await rig(root, 'mean@1.0.0');
  assert.equal((await r.m.rollback()).ok, false, 'nothing to roll back to yet');

  const o = await r.m.swap(local);
  assert.equal(o.ok, true, o.message);
  const v = r.m.versions();
  assert.equal(v.active?.ref, 'mean@1.5.0');
  assert.equal(v.active?.origin, 'dir');
  assert.equal(v.active?.dir, local);
  assert.equal(v.previous?.ref, 'mean@1.0.0');
  assert.equal(v.previous?.origin, 'registry');
  assert.equal((await r.m.inspect(frame(V.p40))).verdict.verdict, 'reject');

  const back = await r.m.rollback();
  assert.equal(back.ok, true, back.message);
  assert.equal(back.action, 'rollback');
  assert.equal(r.m.versions().active?.ref, 'mean@1.0.0');
  assert.equal(r.m.versions().active?.origin, 'registry', 'the rolled-back model keeps its provenance');
  assert.equal(r.m.versions().previous?.ref, 'mean@1.5.0');
  const res = await r.m.inspect(frame(V.p40));
  assert.deepEqual([res.model.version, res.verdict.verdict], ['1.0.0', 'pass']);
  assert.equal(r.m.info().model.version, '1.0.0');
  // The cache keeps what the manager may need again.
  assert.ok(r.store.cache!.peek('mean', '1.0.0'));
});

// ---- shadow -----------------------------------------------------------------------------------

test('shadow: verdicts go to onShadow only, with agreement and reject-rate figures on a known set; promote', async () => {
  const root = tempDir();
  await addBundle(root, 'mean', '1.0.0', { threshold: 0.5, key: privateKey });
  await addBundle(root, 'mean', '2.0.0', { threshold: 0.3, key: privateKey });
  const r = await rig(root, 'mean@1.0.0');
  const o = await r.m.setShadow('mean@2.0.0');
  assert.equal(o.ok, true, o.message);
  assert.equal(r.m.versions().shadow?.ref, 'mean@2.0.0');

  // 20 frames: A (0.5) rejects 0.6 and 0.8, B (0.3) also 0.4: they disagree on the 0.4 frames only.
  const values = [V.p10, V.p20, V.p40, V.p60, V.p80];
  const frames: Frame[] = [];
  for (let i = 0; i < 20; i++) {
    const f = frame(values[i % 5]!);
    frames.push(f);
    const res = await r.m.inspect(f, { priority: 'line' });
    assert.equal(res.model.version, '1.0.0', 'inspect() answers with the active model only');
    r.m.record(partFor(f, res));
  }
  // API requests are not parts: no shadow run for them.
  await r.m.inspect(frame(V.p40), { priority: 'api' });
  await until(() => r.shadows.length === 20, '20 shadow verdicts');
  const st = r.m.shadowStats()!;
  assert.deepEqual(
    { compared: st.compared, agreed: st.agreed, activeRejects: st.activeRejects, shadowRejects: st.shadowRejects, shadowErrors: st.shadowErrors },
    { compared: 20, agreed: 16, activeRejects: 8, shadowRejects: 12, shadowErrors: 0 },
  );
  assert.equal(st.agreement, 0.8);
  assert.equal(st.activeRejectRate, 0.4);
  assert.equal(st.shadowRejectRate, 0.6);
  assert.ok(Math.abs(st.rejectRateDiff! - 0.2) < 1e-12);
  // Each shadow verdict names its part; the disagreements are exactly the 0.4 frames.
  assert.deepEqual(r.shadows.map((s) => s.partId).sort(), frames.map((f) => `st1-b1-${f.seq}`).sort());
  const disagree = r.shadows.filter((s) => !s.agree).map((s) => s.frameSeq).sort((a, b) => a - b);
  assert.deepEqual(disagree, frames.filter((f) => f.data[0] === V.p40).map((f) => f.seq));
  for (const s of r.shadows) {
    assert.equal(s.activeModel.version, '1.0.0');
    assert.equal(s.shadowModel.version, '2.0.0');
    assert.equal(s.agree, s.active.verdict === s.shadow.verdict);
  }
  assert.deepEqual(r.m.versions().shadow?.stats.compared, 20);

  // Every 2nd part: a new shadow starts with fresh figures.
  const again = await r.m.setShadow('mean@2.0.0', { everyN: 2 });
  assert.equal(again.ok, true);
  r.shadows.length = 0;
  const sampled: number[] = [];
  for (let i = 0; i < 10; i++) {
    const f = frame(values[i % 5]!);
    if (i % 2 === 1) sampled.push(f.seq);
    r.m.record(partFor(f, await r.m.inspect(f)));
  }
  await until(() => r.shadows.length === 5, '5 shadow verdicts');
  assert.deepEqual(r.shadows.map((s) => s.frameSeq).sort((a, b) => a - b), sampled);
  assert.equal(r.m.shadowStats()!.compared, 5);

  const p = await r.m.promote();
  assert.equal(p.ok, true, p.message);
  assert.equal(p.action, 'promote');
  const v = r.m.versions();
  assert.equal(v.active?.ref, 'mean@2.0.0');
  assert.equal(v.previous?.ref, 'mean@1.0.0');
  assert.equal(v.shadow, undefined);
  assert.equal((await r.m.inspect(frame(V.p40))).model.version, '2.0.0');
  assert.equal((await r.m.promote()).ok, false, 'no shadow left to promote');
});

test('shadow: inspect() never waits for the shadow model', async () => {
  const root = tempDir();
  await addBundle(root, 'mean', '1.0.0', { threshold: 0.5, key: privateKey });
  await addBundle(root, 'mean', '2.0.0', { threshold: 0.3, key: privateKey });
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  let shadowPoolStarted = false;
  const r = await rig(root, 'mean@1.0.0', {
    // The shadow's pool holds every request until the gate opens (its start and load are not held).
    gateFor: (dir) => (dir.endsWith(join('mean', '2.0.0')) ? ((shadowPoolStarted = true), gate) : undefined),
  });
  assert.equal((await r.m.setShadow('mean@2.0.0')).ok, true);
  assert.ok(shadowPoolStarted);
  const results: InferenceResult[] = [];
  for (let i = 0; i < 5; i++) {
    const f = frame(V.p40);
    const res = await r.m.inspect(f);
    results.push(res);
    r.m.record(partFor(f, res));
  }
  assert.equal(results.length, 5, 'all five answered while the shadow holds every frame');
  assert.deepEqual(results.map((x) => x.verdict.verdict), Array(5).fill('pass'));
  assert.equal(r.shadows.length, 0);
  open();
  await until(() => r.shadows.length === 5, 'shadow verdicts after the gate opened');
  assert.equal(r.m.shadowStats()!.agreement, 0);
  const cleared = await r.m.clearShadow();
  assert.equal(cleared.ok, true);
  assert.equal(r.m.versions().shadow, undefined);
});

test('shadow: a candidate that misjudges its golden samples may watch, but is never promoted', async () => {
  const root = tempDir();
  await addBundle(root, 'mean', '1.0.0', { threshold: 0.5, key: privateKey });
  await addBundle(root, 'mean', '2.0.0', {
    threshold: 0.3, key: privateKey,
    golden: [{ file: 'ok.png', verdict: 'reject', value: V.p40 }, { file: 'wrong.png', verdict: 'pass', value: V.p40 }],
  });
  const r = await rig(root, 'mean@1.0.0');
  const o = await r.m.setShadow('mean@2.0.0');
  assert.equal(o.ok, true, o.message);
  assert.match(o.message, /golden samples 1\/2/);
  assert.deepEqual(r.m.versions().shadow?.golden, { total: 2, passed: 1 });
  const p = await r.m.promote();
  assert.equal(p.ok, false);
  assert.match(p.message, /promote refused: 1 of 2 golden sample\(s\) judged wrongly: wrong\.png: expected pass, got reject.*mean@1\.0\.0 stays active/);
  assert.equal(r.m.versions().active?.ref, 'mean@1.0.0');
  assert.equal(r.m.versions().shadow?.ref, 'mean@2.0.0', 'the shadow keeps watching');
});

// ---- automatic rollback -------------------------------------------------------------------------

test('automatic rollback: a swapped-in model that rejects everything is rolled back within its window', async () => {
  const root = tempDir();
  await addBundle(root, 'mean', '1.0.0', { threshold: 0.5, key: privateKey });
  await addBundle(root, 'mean', '9.0.0', { threshold: 0, key: privateKey }); // score >= 0 always: rejects every part
  const r = await rig(root, 'mean@1.0.0', { rollback: { window: 20, maxRejectRate: 0.5, maxFailSafeRate: 0.1 } });
  assert.equal((await r.m.swap('mean@9.0.0')).ok, true);
  assert.deepEqual(r.m.versions().watch, { parts: 0, window: 20, rejects: 0, failSafes: 0 });

  // Parts keep coming, as on a line, until the rollback is done (the bound only guards against a hang).
  const seen: string[] = [];
  for (let i = 0; i < 20_000 && !r.changes.some((c) => c.action === 'auto-rollback'); i++) {
    const f = frame(V.p20);
    const res = await r.m.inspect(f);
    seen.push(`${res.model.version}:${res.verdict.verdict}`);
    r.m.record(partFor(f, res));
    await sleep(2);
  }
  const auto = r.changes.find((c) => c.action === 'auto-rollback');
  assert.ok(auto, 'rolled back');
  assert.equal(auto.ok, true, auto.message);
  assert.match(auto.message, /rolled back to mean@1\.0\.0.*mean@9\.0\.0: reject rate above 0\.5: 11 rejects in its first 11 parts \(window 20\)/);
  // The bound is certain to be broken at the 11th reject of 20: that part triggered it; the bad
  // model kept answering (rejects, the safe side) only while the previous one was loading again.
  assert.ok(seen.filter((s) => s === '9.0.0:reject').length >= 11);
  assert.deepEqual([...new Set(seen)], ['9.0.0:reject'], 'the bad model answered until the switch back');
  assert.equal(r.alarms.length, 1);
  assert.equal(r.alarms[0]!.kind, 'model_error');
  assert.equal(r.alarms[0]!.severity, 'critical');
  assert.match(r.alarms[0]!.message, /mean@9\.0\.0 rolled back automatically/);
  const v = r.m.versions();
  assert.equal(v.active?.ref, 'mean@1.0.0');
  assert.equal(v.previous?.ref, 'mean@9.0.0');
  assert.equal(v.watch, undefined, 'the restored model is not on probation');
  const res = await r.m.inspect(frame(V.p20));
  assert.deepEqual([res.model.version, res.verdict.verdict], ['1.0.0', 'pass']);
});

test('automatic rollback: fail-safe rate counts inference failures only; a model within bounds is confirmed', async () => {
  const root = tempDir();
  await addBundle(root, 'mean', '1.0.0', { threshold: 0.5, key: privateKey });
  await addBundle(root, 'mean', '2.0.0', { threshold: 0.3, key: privateKey });
  const r = await rig(root, 'mean@1.0.0', { rollback: { window: 20, maxRejectRate: 0.5, maxFailSafeRate: 0.1 } });

  assert.equal((await r.m.swap('mean@2.0.0')).ok, true);
  // Camera trouble and a pause are not the model's doing.
  for (const reason of ['camera', 'camera', 'paused', 'stopping'] as const) r.m.record(partFor(frame(V.p20), undefined, reason));
  assert.equal(r.m.versions().watch?.failSafes, 0);
  assert.equal(r.m.versions().watch?.parts, 4);
  r.m.record(partFor(frame(V.p20), undefined, 'model_error'));
  r.m.record(partFor(frame(V.p20), undefined, 'late'));
  assert.equal(r.changes.some((c) => c.action === 'auto-rollback'), false, '2 of 20 is within 0.1');
  r.m.record(partFor(frame(V.p20), undefined, 'worker_crash'));
  await until(() => r.changes.some((c) => c.action === 'auto-rollback'), 'auto rollback');
  const auto = r.changes.find((c) => c.action === 'auto-rollback')!;
  assert.match(auto.message, /fail-safe rate above 0\.1: 3 fail-safe parts/);
  assert.equal(r.m.versions().active?.ref, 'mean@1.0.0');

  // Swapped in again, it judges 20 good parts and is confirmed: the watch ends, nothing rolls back.
  r.changes.length = 0;
  assert.equal((await r.m.swap('mean@2.0.0')).ok, true);
  for (let i = 0; i < 20; i++) {
    const f = frame(V.p20);
    r.m.record(partFor(f, await r.m.inspect(f)));
  }
  // Parts judged by another model are not charged to the watched one.
  r.m.record(partFor(frame(V.p80), { ...(await r.m.inspect(frame(V.p80))), model: { name: 'mean', version: '1.0.0', sha256: 'x' } }));
  assert.equal(r.m.versions().watch, undefined);
  assert.equal(r.changes.some((c) => c.action === 'auto-rollback'), false);
  assert.ok(r.log.records.some((x) => x.msg === 'model confirmed: within its bounds over its first parts' && x.parts === 20));
});

// ---- start ------------------------------------------------------------------------------------

test('start: a configured model that cannot load falls back to another version on the device; none at all throws', async () => {
  const root = tempDir();
  await addBundle(root, 'mean', '1.0.0', { threshold: 0.5, key: privateKey });
  const first = await rig(root, 'mean@1.0.0');
  await first.m.stop();
  assert.equal(first.pools[0]!.stopped, true);
  await assert.rejects(first.m.inspect(frame(V.p20)), (e: unknown) => e instanceof InferenceError && e.reason === 'stopping');

  // The same cache, and a registry whose 2.0.0 is tampered.
  const bad = await addBundle(root, 'mean', '2.0.0', { threshold: 0.3, key: privateKey });
  truncateSync(join(bad, 'model.onnx'), 10);
  const log = memoryLogger();
  const server = await serveRegistry({ dir: root, port: 0 });
  servers.push(server);
  const m = new ModelManager({
    createPool: (dir) => new InferencePool({ modelDir: dir, providers: ['cpu'], workers: 1, intraOpThreads: 1, queueLimit: 4, log: silentLogger }),
    log, initial: 'mean@2.0.0',
    store: new ModelStore({ registry: server.url, cache: first.store.cache, bundledDir: join(root, 'none'), publicKey, log }),
  });
  managers.push(m);
  await m.start();
  assert.equal(m.versions().active?.ref, 'mean@1.0.0');
  assert.equal(m.versions().active?.origin, 'cache');
  assert.ok(log.records.some((x) => x.msg === 'started with a fallback model'));

  const none = new ModelManager({
    createPool: () => assert.fail('no pool for a bundle that does not verify'),
    log: silentLogger, initial: 'other@1.0.0',
    store: new ModelStore({ registry: server.url, cache: first.store.cache, bundledDir: join(root, 'none'), publicKey, log: silentLogger }),
  });
  await assert.rejects(none.start(), /other@1\.0\.0 is not in the registry/);
  const noStore = new ModelManager({ createPool: () => assert.fail('unused'), log: silentLogger, initial: 'mean@1.0.0' });
  await assert.rejects(noStore.start(), /not a bundle folder \(model references need a model store/);
});
