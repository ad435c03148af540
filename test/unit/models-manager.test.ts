// ModelManager's switching rules with pools the test answers by hand, so every interleaving is
// chosen, not timed: a call keeps the pool it started on, the old pool stops only when its last
// call is answered, a stop during a load leaves no pool running, and a failed start is clear.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InferenceError, ModelLoadError, type InferenceResult, type Inspector, type InspectorInfo, type ModelManifest } from '../../src/inference/types.js';
import { memoryLogger, silentLogger } from '../../src/log.js';
import type { Frame } from '../../src/part.js';
import { ModelManager } from '../../src/models/manager.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A bundle whose model.onnx is just bytes: the fake pool never runs it, the manager still verifies its sha256. */
function bundle(version: string, threshold = 0.5): string {
  const dir = mkdtempSync(join(tmpdir(), 'ls-models-mgr-unit-'));
  dirs.push(dir);
  mkdirSync(dir, { recursive: true });
  const bytes = Buffer.from(`fake model ${version}`);
  writeFileSync(join(dir, 'model.onnx'), bytes);
  const manifest: ModelManifest = {
    schemaVersion: 1, name: 'fake', version, sha256: createHash('sha256').update(bytes).digest('hex'),
    input: { name: 'image', width: 4, height: 4, colour: 'gray', layout: 'nchw', dtype: 'float32' },
    head: { type: 'anomaly', scoreOutput: 'score' }, threshold,
  };
  writeFileSync(join(dir, 'model.json'), JSON.stringify(manifest));
  return dir;
}

type Call = { resolve: () => void; reject: (e: Error) => void };

class HandPool implements Inspector {
  state: 'new' | 'running' | 'stopped' = 'new';
  calls: Call[] = [];
  manifest!: ModelManifest;
  private startGate?: Promise<void>;
  constructor(
    readonly dir: string,
    opts: { startGate?: Promise<void>; failStart?: string } = {},
  ) {
    this.startGate = opts.startGate;
    this.failStart = opts.failStart;
  }
  private failStart?: string;
  async start(): Promise<void> {
    await this.startGate;
    if (this.failStart) throw new ModelLoadError(this.failStart);
    this.manifest = JSON.parse(readFileSync(join(this.dir, 'model.json'), 'utf8'));
    this.state = 'running';
  }
  async stop(): Promise<void> {
    this.state = 'stopped';
  }
  inspect(_frame: Frame): Promise<InferenceResult> {
    if (this.state !== 'running') return Promise.reject(new InferenceError('not running', 'overload'));
    return new Promise((resolve, reject) => {
      this.calls.push({
        resolve: () =>
          resolve({
            verdict: { verdict: 'pass', score: 0, threshold: this.manifest.threshold, defects: [] },
            model: { name: this.manifest.name, version: this.manifest.version, sha256: this.manifest.sha256 },
            provider: 'hand', timings: { preprocessMs: 0, inferMs: 0, postprocessMs: 0, queueMs: 0 },
          }),
        reject,
      });
    });
  }
  info(): InspectorInfo {
    const m = this.manifest;
    return { model: { name: m.name, version: m.version, sha256: m.sha256 }, manifest: m, provider: 'hand', workers: 1, queued: 0, inFlight: this.calls.length };
  }
}

const frame = (seq: number): Frame => ({ seq, timeNs: 0n, width: 4, height: 4, channels: 1, data: new Uint8Array(16), source: 'test' });
const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

test('a call keeps the pool it started on; the old pool stops only when its last call is answered', async () => {
  const a = bundle('1.0.0');
  const b = bundle('2.0.0');
  const pools: HandPool[] = [];
  const m = new ModelManager({ createPool: (dir) => (pools.push(new HandPool(dir)), pools.at(-1)!), log: silentLogger, initial: a });
  await m.start();
  const [pa] = pools;
  const early = [m.inspect(frame(1)), m.inspect(frame(2))];
  await flush();
  assert.equal(pa!.calls.length, 2);

  const swap = await m.swap(b);
  assert.equal(swap.ok, true, swap.message);
  const pb = pools[1]!;
  const late = m.inspect(frame(3));
  await flush();
  assert.equal(pb.calls.length, 1, 'a call after the switch goes to the new pool');
  assert.equal(pa!.calls.length, 2, 'and not to the old one');
  assert.equal(pa!.state, 'running', 'the old pool still has two calls to answer');

  pa!.calls[0]!.resolve();
  await flush();
  assert.equal(pa!.state, 'running');
  pa!.calls[1]!.resolve();
  pb.calls[0]!.resolve();
  const versions = (await Promise.all([...early, late])).map((r) => r.model.version);
  assert.deepEqual(versions, ['1.0.0', '1.0.0', '2.0.0']);
  await flush();
  assert.equal(pa!.state, 'stopped', 'stopped once its last call was answered');
  assert.equal(pb.state, 'running');
  await m.stop();
  assert.equal(pb.state, 'stopped');
});

test('a failed call on the old pool still releases it; no swap while stopped', async () => {
  const pools: HandPool[] = [];
  const m = new ModelManager({ createPool: (dir) => (pools.push(new HandPool(dir)), pools.at(-1)!), log: silentLogger, initial: bundle('1.0.0') });
  await m.start();
  const call = m.inspect(frame(1));
  await flush();
  assert.equal((await m.swap(bundle('2.0.0'))).ok, true);
  pools[0]!.calls[0]!.reject(new InferenceError('boom', 'model_error'));
  await assert.rejects(call, /boom/);
  await flush();
  assert.equal(pools[0]!.state, 'stopped');
  await m.stop();
  const refused = await m.swap(bundle('3.0.0'));
  assert.equal(refused.ok, false);
  assert.match(refused.message, /the model manager is stopped/);
  await assert.rejects(m.inspect(frame(2)), /no model running/);
});

test('stop() while a candidate is loading: the candidate is stopped too and the swap reports it', async () => {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const pools: HandPool[] = [];
  const m = new ModelManager({
    createPool: (dir) => (pools.push(new HandPool(dir, pools.length ? { startGate: gate } : {})), pools.at(-1)!),
    log: silentLogger, initial: bundle('1.0.0'),
  });
  await m.start();
  const swap = m.swap(bundle('2.0.0'));
  // Verifying the candidate reads files: wait (bounded) until its pool exists.
  for (let i = 0; i < 1000 && pools.length < 2; i++) await new Promise((r) => setTimeout(r, 1));
  assert.equal(pools.length, 2);
  assert.equal(m.versions().changing, `swap to ${pools[1]!.dir}`);
  const stopped = m.stop();
  open();
  await stopped;
  const o = await swap;
  assert.equal(o.ok, false);
  await flush();
  assert.deepEqual(pools.map((p) => p.state), ['stopped', 'stopped']);
});

test('a candidate the pool refuses (ModelLoadError) is reported, and the pool is stopped', async () => {
  const pools: HandPool[] = [];
  const log = memoryLogger();
  const m = new ModelManager({
    createPool: (dir) => (pools.push(new HandPool(dir, pools.length ? { failStart: "manifest input 'image' is not a model input" } : {})), pools.at(-1)!),
    log, initial: bundle('1.0.0'),
  });
  await m.start();
  const o = await m.swap(bundle('2.0.0'));
  assert.equal(o.ok, false);
  assert.match(o.message, /^swap refused: manifest input 'image' is not a model input; fake@1\.0\.0 stays active$/);
  assert.equal(pools[1]!.state, 'stopped');
  assert.ok(log.records.some((r) => r.level === 'warn' && r.msg === o.message));
  await m.stop();
});

test('start: a bundle that does not verify fails start with the reason; a broken folder is named', async () => {
  const dir = bundle('1.0.0');
  writeFileSync(join(dir, 'model.onnx'), 'changed');
  const m = new ModelManager({ createPool: () => assert.fail('no pool for a bundle that does not verify'), log: silentLogger, initial: dir });
  await assert.rejects(m.start(), (e: unknown) => e instanceof ModelLoadError && /sha256 mismatch/.test(e.message));
  assert.throws(() => m.info(), /not started/);
});
