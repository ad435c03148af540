// Section 1, the limits (a child process per model): every stage alone, one part at a time, on the
// bench images — decode (as the replay camera decodes), preprocess (prepareInput: crop/resize with
// sharp; toTensor: colour, scale, layout), onnxruntime session.run in a tight loop on prepared
// tensors for several session settings, the head. From them:
//   bare  = decode + prepare + toTensor + run (fastest setting) + head     wall ms, one part alone
//   bound = cores / (CPU-seconds per part of those stages)                 parts/s the machine can do
// CPU time is process.cpuUsage() over a batch (all threads: libvips and onnxruntime threads count).
import { Worker } from 'node:worker_threads';
import { readFileSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { env, InferenceSession, Tensor } from 'onnxruntime-node';
import { decodeJpegFrameSync, prepareInput, prepareInputSync, toTensor, type InputTensor, type PreparedInput } from '../src/inference/preprocess.js';
import { jpegStatus } from '../src/native/jpeg.js';
import { resizeStatus } from '../src/native/resize.js';
import { applyHead, type OutputTensor } from '../src/inference/heads.js';
import type { Frame } from '../src/part.js';
import { ensureModel, FRAME, type ModelKey } from './models.js';
import { decodeLikeReplay, ensureImages } from './images.js';
import { childParams, CORES, cpuMeter, dist, nowMs, progress, r1, r2, r3, type Dist } from './lib.js';
import { writeFileSync } from 'node:fs';

env.logLevel = 'error';

export interface RunConfig {
  name: string;
  threads: number;
  opt: 'disabled' | 'basic' | 'extended' | 'all';
  mode: 'sequential' | 'parallel';
  spin: boolean;
}

export interface StageResult {
  wall: Dist;
  /** CPU ms per op, all threads. */
  cpuMs: number;
}

export interface LimitsResult {
  model: ModelKey;
  frame: { width: number; height: number };
  /** The frame as the replay camera decodes it for this model (shrink-on-load to cover the input). */
  decoded: { width: number; height: number };
  input: { width: number; height: number; colour: string };
  decode: StageResult;
  prepare: StageResult;
  /**
   * decode + prepare as the inference worker does them (camera.replay.decodeIn: worker, the
   * default): native libjpeg-turbo and resize, synchronously, from the file's bytes in memory.
   * Absent without the native addon.
   */
  native?: StageResult;
  /** Which decode + prepare the bound and bare figures use: the cheaper in CPU. */
  decodePath: 'sharp' | 'native';
  /** The bound with sharp's decode + prepare (the main thread's path, decodeIn: main). */
  boundSharpPerS: number;
  toTensor: StageResult;
  head: StageResult;
  runs: (RunConfig & StageResult & { createMs: number })[];
  /** Session creation from the optimised model saved by optimizedModelFilePath (opt level 'disabled'). */
  createFromOptimisedMs: number;
  /** Two sessions of one intra-op thread on two worker threads, back to back: runs per second. */
  parallel2x1: { runsPerS: number; cpuMsPerRun: number; wallMsPerRun: Dist };
  bestLatencyRun: string;
  bestCpuRun: string;
  /** decode + prepare + toTensor + run (best latency) + head, medians, ms. */
  bareMs: number;
  bareNoDecodeMs: number;
  /** CPU ms per part (best CPU run). */
  cpuPerPartMs: number;
  /** cores / CPU-seconds per part. */
  boundPerS: number;
  /** cores / CPU-seconds per part without decode (a live camera delivers raw frames). */
  boundNoDecodePerS: number;
  /**
   * The bound with `session.run` costed as it scales here: two 1-thread sessions side by side
   * (parallel2x1) rarely reach twice the rate of one (shared caches, memory bandwidth, vCPUs that
   * are hyperthreads of one core), so a run costs cores / parallel2x1.runsPerS CPU-seconds.
   */
  boundScaledPerS: number;
  sharpConcurrency: number;
}

interface Params {
  model: ModelKey;
  quick?: boolean;
}

/** Runs `op` sequentially for at least `minMs` and `minN` times after `warm` warm-ups. */
async function measure(op: (i: number) => unknown, opts: { warm: number; minN: number; minMs: number; maxN?: number }): Promise<StageResult> {
  for (let i = 0; i < opts.warm; i++) await op(i);
  const walls: number[] = [];
  const cpu = cpuMeter();
  const t0 = nowMs();
  for (let i = 0; walls.length < opts.minN || nowMs() - t0 < opts.minMs; i++) {
    const t = nowMs();
    await op(i);
    walls.push(nowMs() - t);
    if (opts.maxN && walls.length >= opts.maxN) break;
  }
  return { wall: dist(walls), cpuMs: r3(cpu.ms() / walls.length) };
}

function sessionOptions(c: RunConfig): InferenceSession.SessionOptions {
  return {
    executionProviders: ['cpu'],
    intraOpNumThreads: c.threads,
    interOpNumThreads: c.mode === 'parallel' ? c.threads : 1,
    graphOptimizationLevel: c.opt,
    executionMode: c.mode,
    ...(c.spin ? {} : { extra: { session: { intra_op: { allow_spinning: '0' } } } }),
  };
}

// Two sessions of one intra-op thread each, one per worker, as the pool runs them.
const PARALLEL_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const ort = require(workerData.ort);
(async () => {
  const s = await ort.InferenceSession.create(workerData.model, { intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all' });
  const feeds = { [workerData.name]: new ort.Tensor('float32', workerData.data, workerData.dims) };
  for (let i = 0; i < 3; i++) await s.run(feeds);
  parentPort.postMessage('ready');
  parentPort.once('message', async (until) => {
    const walls = [];
    while (Date.now() < until) { const t = performance.now(); await s.run(feeds); walls.push(performance.now() - t); }
    parentPort.postMessage(walls);
  });
})();
`;

async function parallel2x1(model: Uint8Array, name: string, t: InputTensor, seconds: number): Promise<LimitsResult['parallel2x1']> {
  const ortPath = import.meta.resolve('onnxruntime-node').replace('file://', '');
  const workers = [0, 1].map(() => new Worker(PARALLEL_WORKER, { eval: true, workerData: { ort: ortPath, model, name, data: t.data, dims: t.dims } }));
  await Promise.all(workers.map((w) => new Promise((r) => w.once('message', r))));
  const cpu = cpuMeter();
  const t0 = nowMs();
  const until = Date.now() + seconds * 1000;
  const results = await Promise.all(
    workers.map((w) => {
      const p = new Promise<number[]>((r) => w.once('message', r));
      w.postMessage(until);
      return p;
    }),
  );
  const elapsed = nowMs() - t0;
  const cpuMs = cpu.ms();
  await Promise.all(workers.map((w) => w.terminate()));
  const all = results.flat();
  return { runsPerS: r2((all.length / elapsed) * 1000), cpuMsPerRun: r3(cpuMs / all.length), wallMsPerRun: dist(all) };
}

async function main(): Promise<void> {
  const p = childParams<Params>();
  const quick = !!p.quick;
  const frame = FRAME[p.model];
  const images = await ensureImages(frame.width, frame.height);
  const m = await ensureModel(p.model, images.files);
  const spec = m.manifest.input;
  const gray = spec.colour === 'gray';
  const files = images.files;
  const heavy = p.model !== 'film-demo';
  const minMs = quick ? (heavy ? 600 : 300) : heavy ? 1500 : 800;

  progress(`${p.model}: decode, prepare, toTensor`);
  // As the agent's replay camera decodes for this model (decodeSize: model): no crop = shrink-on-load.
  const fit = spec.crop ? undefined : { width: spec.width, height: spec.height, resize: spec.resize ?? 'stretch' };
  const decode = await measure((i) => decodeLikeReplay(files[i % files.length]!, gray, i, fit), { warm: 4, minN: 24, minMs });
  const frames: Frame[] = [];
  for (let i = 0; i < files.length; i++) frames.push(await decodeLikeReplay(files[i]!, gray, i, fit));
  const prepare = await measure((i) => prepareInput(frames[i % frames.length]!, spec), { warm: 4, minN: 24, minMs });
  const prepared: PreparedInput[] = [];
  for (const f of frames) prepared.push(await prepareInput(f, spec));
  let native: StageResult | undefined;
  if (jpegStatus().available && resizeStatus().available) {
    progress(`${p.model}: decode + prepare, native (as the inference worker does)`);
    const bytes = files.map((file) => new Uint8Array(readFileSync(file)));
    native = await measure(
      (i) => {
        const d = decodeJpegFrameSync(bytes[i % bytes.length]!, gray ? 'gray' : 'rgb', fit, true);
        return prepareInputSync({ seq: i, timeNs: 0n, source: 'replay', ...d }, spec);
      },
      { warm: 4, minN: 24, minMs },
    );
  } else progress(`${p.model}: no native decoder or resize: the bound uses sharp's decode`);
  const tt = await measure((i) => toTensor(prepared[i % prepared.length]!.pixels, prepared[i % prepared.length]!.channels, spec), { warm: 4, minN: 24, minMs: minMs / 2 });
  const tensors = prepared.map((x) => toTensor(x.pixels, x.channels, spec));
  const feeds = tensors.map((t) => ({ [spec.name]: new Tensor(spec.dtype, t.data, t.dims) }));

  const modelBytes = readFileSync(join(m.dir, 'model.onnx'));
  const configs: RunConfig[] = [
    { name: '1 thread, opt all', threads: 1, opt: 'all', mode: 'sequential', spin: true },
    { name: '2 threads, opt all', threads: 2, opt: 'all', mode: 'sequential', spin: true },
    { name: '2 threads, opt all, no spin', threads: 2, opt: 'all', mode: 'sequential', spin: false },
    { name: '1 thread, opt basic', threads: 1, opt: 'basic', mode: 'sequential', spin: true },
    { name: '1 thread, opt disabled', threads: 1, opt: 'disabled', mode: 'sequential', spin: true },
    ...(quick ? [] : [
      { name: '2 threads, opt basic', threads: 2, opt: 'basic', mode: 'sequential', spin: true } as RunConfig,
      { name: '1 thread, opt extended', threads: 1, opt: 'extended', mode: 'sequential', spin: true } as RunConfig,
      { name: '2 threads, opt all, parallel mode', threads: 2, opt: 'all', mode: 'parallel', spin: true } as RunConfig,
    ]),
  ];
  const runs: LimitsResult['runs'] = [];
  let lastOutputs: Record<string, OutputTensor>[] = [];
  for (const c of configs) {
    progress(`${p.model}: session.run, ${c.name}`);
    const t0 = nowMs();
    const session = await InferenceSession.create(modelBytes, sessionOptions(c));
    const createMs = r1(nowMs() - t0);
    const outs: Record<string, OutputTensor>[] = [];
    const r = await measure(
      async (i) => {
        const o = await session.run(feeds[i % feeds.length]!);
        if (outs.length < feeds.length) {
          const rec: Record<string, OutputTensor> = {};
          for (const [k, v] of Object.entries(o)) rec[k] = { dims: [...v.dims], data: v.data as Float32Array };
          outs.push(rec);
        }
      },
      { warm: 3, minN: heavy ? 8 : 50, minMs },
    );
    lastOutputs = outs;
    await session.release();
    runs.push({ ...c, ...r, createMs });
  }

  // A cached optimised model: saved once, then loaded with optimisation off (faster start).
  const tmp = mkdtempSync(join(tmpdir(), 'linesight-opt-'));
  let createFromOptimisedMs = NaN;
  try {
    const optPath = join(tmp, 'model.opt.onnx');
    const s1 = await InferenceSession.create(modelBytes, { intraOpNumThreads: 1, graphOptimizationLevel: 'all', optimizedModelFilePath: optPath });
    await s1.release();
    const t0 = nowMs();
    const s2 = await InferenceSession.create(readFileSync(optPath), { intraOpNumThreads: 1, graphOptimizationLevel: 'disabled' });
    createFromOptimisedMs = r1(nowMs() - t0);
    await s2.release();
  } catch (err) {
    progress(`${p.model}: optimised model cache failed: ${(err as Error).message.split('\n')[0]}`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  progress(`${p.model}: head`);
  const head = await measure(
    (i) => applyHead(m.manifest.head, m.manifest.threshold, lastOutputs[i % lastOutputs.length]!, prepared[i % prepared.length]!.geometry),
    { warm: 10, minN: 50, minMs: minMs / 3 },
  );

  progress(`${p.model}: two 1-thread sessions in parallel`);
  const par = await parallel2x1(modelBytes, spec.name, tensors[0]!, quick ? 2 : heavy ? 4 : 2);

  const bestLatency = runs.reduce((a, b) => (b.wall.p50 < a.wall.p50 ? b : a));
  const bestCpu = runs.reduce((a, b) => (b.cpuMs < a.cpuMs ? b : a));
  const noDecodeCpu = prepare.cpuMs + tt.cpuMs + bestCpu.cpuMs + head.cpuMs;
  // The cheaper decode + prepare path sets the bound: the agent may use either (decodeIn).
  const sharpCpu = decode.cpuMs + prepare.cpuMs;
  const decodePath = native && native.cpuMs < sharpCpu ? 'native' : 'sharp';
  const rest = tt.cpuMs + bestCpu.cpuMs + head.cpuMs;
  const cpuPerPartMs = (decodePath === 'native' ? native!.cpuMs : sharpCpu) + rest;
  const bareNoDecodeMs = prepare.wall.p50 + tt.wall.p50 + bestLatency.wall.p50 + head.wall.p50;
  const bareMs = decodePath === 'native' ? native!.wall.p50 + tt.wall.p50 + bestLatency.wall.p50 + head.wall.p50 : decode.wall.p50 + bareNoDecodeMs;
  const result: LimitsResult = {
    model: p.model,
    frame,
    decoded: { width: frames[0]!.width, height: frames[0]!.height },
    input: { width: spec.width, height: spec.height, colour: spec.colour },
    decode,
    prepare,
    ...(native ? { native } : {}),
    decodePath,
    boundSharpPerS: r2((CORES * 1000) / (sharpCpu + rest)),
    toTensor: tt,
    head,
    runs,
    createFromOptimisedMs,
    parallel2x1: par,
    bestLatencyRun: bestLatency.name,
    bestCpuRun: bestCpu.name,
    bareMs: r3(bareMs),
    bareNoDecodeMs: r3(bareNoDecodeMs),
    cpuPerPartMs: r3(cpuPerPartMs),
    boundPerS: r2((CORES * 1000) / cpuPerPartMs),
    boundNoDecodePerS: r2((CORES * 1000) / noDecodeCpu),
    boundScaledPerS: r2((CORES * 1000) / (cpuPerPartMs - bestCpu.cpuMs + Math.max(bestCpu.cpuMs, (CORES * 1000) / par.runsPerS))),
    sharpConcurrency: sharp.concurrency(),
  };
  writeFileSync(p.resultFile, JSON.stringify(result, null, 2));
}


main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
