// Section 3, the naive baseline (a child process per model): what a user writes in an afternoon.
// One loop on the main thread: read the image, decode + resize it with sharp in one pipeline,
// convert it to a float tensor, `await session.run()` (synchronous inside: it blocks the thread),
// read the verdict, schedule the divert with setTimeout, publish the result at QoS 1 and wait for
// the PUBACK. Same images, same model, same broker, default session options. No outbox, no
// deadlines, no fail-safes.
//
// Measured: parts/s, latency (start of the part -> verdict and divert timer set), event-loop lag,
// and the lateness of the divert timers (setTimeout at the gate time, as the agent's gate).
import { readFile } from 'node:fs/promises';
import { writeFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import mqtt from 'mqtt';
import sharp from 'sharp';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { applyHead, type OutputTensor } from '../src/inference/heads.js';
import type { Geometry } from '../src/inference/heads.js';
import { startTestBroker } from '../test/helpers/broker.js';
import { ensureImages } from './images.js';
import { ensureModel, FRAME, type ModelKey } from './models.js';
import { childParams, cpuMeter, dist, foreignLoad, nowMs, progress, r2, type Dist } from './lib.js';

export interface NaiveParams {
  model: ModelKey;
  seconds: number;
  warmupS: number;
  travelMs?: number;
}

export interface NaiveResult {
  params: NaiveParams;
  parts: number;
  partsPerS: number;
  latencyMs: Dist;
  loopMs: Dist;
  lagMs: { p50: number; p99: number; max: number };
  timerErrorMs: Dist;
  cpuCores: number;
  foreignCores: number;
}

async function main(): Promise<void> {
  const p = childParams<NaiveParams>();
  const frame = FRAME[p.model];
  const images = await ensureImages(frame.width, frame.height);
  const m = await ensureModel(p.model, images.files);
  const { input, head, threshold } = m.manifest;
  const broker = await startTestBroker();
  const client = await mqtt.connectAsync(broker.url, { clientId: 'naive-bench' });
  // Default options: onnxruntime picks its thread count (all cores) and optimises fully.
  const session = await InferenceSession.create(`${m.dir}/model.onnx`);
  const travelMs = p.travelMs ?? 1000;
  const C = input.colour === 'gray' ? 1 : 3;
  const W = input.width;
  const H = input.height;
  const scale = input.scale ?? 1 / 255;
  const mean = input.mean ?? [0];
  const std = input.std ?? [1];
  const letterbox = input.resize === 'letterbox';

  const lat: number[] = [];
  const loops: number[] = [];
  const timerErr: number[] = [];
  let measuring = false;
  let parts = 0;
  const lag = monitorEventLoopDelay({ resolution: 1 });

  const onePart = async (file: string, seq: number): Promise<void> => {
    const t0 = nowMs();
    const bytes = await readFile(file);
    let img = sharp(bytes).removeAlpha();
    img = letterbox
      ? img.resize(W, H, { fit: 'contain', background: { r: 114, g: 114, b: 114 } })
      : img.resize(W, H, { fit: 'fill' });
    if (C === 1) img = img.grayscale();
    const { data } = await img.raw().toBuffer({ resolveWithObject: true });
    const x = new Float32Array(C * W * H);
    for (let c = 0; c < C; c++) {
      const mu = mean[c] ?? mean[0]!;
      const sd = std[c] ?? std[0]!;
      for (let i = 0; i < W * H; i++) x[c * W * H + i] = (data[i * C + c]! * scale - mu) / sd;
    }
    const out = await session.run({ [input.name]: new Tensor('float32', x, [1, C, H, W]) });
    const outputs: Record<string, OutputTensor> = {};
    for (const [k, v] of Object.entries(out)) outputs[k] = { dims: [...v.dims], data: v.data as Float32Array };
    const geo: Geometry = { frameWidth: frame.width, frameHeight: frame.height, inputWidth: W, inputHeight: H, resize: input.resize ?? 'stretch' };
    const verdict = applyHead(head, threshold, outputs, geo);
    // The diverter: a timer at the gate time (every part, so its lateness is measured for each).
    const gate = t0 + travelMs;
    const record = measuring;
    setTimeout(() => {
      if (record) timerErr.push(nowMs() - gate);
    }, gate - nowMs());
    const decided = nowMs();
    await client.publishAsync('naive/inspection', JSON.stringify({ seq, file, verdict: verdict.verdict, score: verdict.score, time: new Date().toISOString() }), { qos: 1 });
    if (record) {
      lat.push(decided - t0);
      loops.push(nowMs() - t0);
      parts++;
    }
  };

  progress(`${p.model}: naive loop`);
  let seq = 0;
  const until = Date.now() + p.warmupS * 1000;
  while (Date.now() < until) await onePart(images.files[seq % images.files.length]!, seq++);
  measuring = true;
  lag.enable();
  const cpu = cpuMeter();
  const foreign = foreignLoad();
  const w0 = nowMs();
  const end = Date.now() + p.seconds * 1000;
  while (Date.now() < end) await onePart(images.files[seq % images.files.length]!, seq++);
  const windowS = (nowMs() - w0) / 1000;
  lag.disable();
  const cpuCores = cpu.ms() / (windowS * 1000);
  const foreignCores = foreign.foreign();
  measuring = false;
  // Let the last divert timers fire.
  await new Promise((r) => setTimeout(r, travelMs + 50));
  const result: NaiveResult = {
    params: p,
    parts,
    partsPerS: r2(parts / windowS),
    latencyMs: dist(lat),
    loopMs: dist(loops),
    lagMs: { p50: lag.percentile(50) / 1e6, p99: lag.percentile(99) / 1e6, max: lag.max / 1e6 },
    timerErrorMs: dist(timerErr),
    cpuCores: r2(cpuCores),
    foreignCores,
  };
  writeFileSync(p.resultFile, JSON.stringify(result, null, 2));
  await client.endAsync();
  await session.release();
  await broker.close();
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
