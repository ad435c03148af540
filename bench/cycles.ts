// Section 5b, model load/release cycles (a child process): onnxruntime-node has open reports of
// memory growing when sessions are created and released, and the agent reloads models (model
// updates, worker restarts). N times: start an InferencePool on the model (a worker thread, a
// session, its warm-up), inspect a few frames, stop it; RSS after each cycle (after a full GC).
import { writeFileSync } from 'node:fs';
import { InferencePool } from '../src/inference/pool.js';
import { silentLogger } from '../src/log.js';
import type { Frame } from '../src/part.js';
import { decodeLikeReplay, ensureImages } from './images.js';
import { ensureModel, FRAME, type ModelKey } from './models.js';
import { childParams, dist, nowMs, progress, r1, r2, slope, type Dist } from './lib.js';

export interface CyclesParams {
  model: ModelKey;
  cycles: number;
  workers: number;
}

export interface CyclesResult {
  params: CyclesParams;
  rssMb: number[];
  baselineMb: number;
  firstMb: number;
  lastMb: number;
  maxMb: number;
  slopeMbPerCycle: number;
  /** Median RSS of the first 10 cycles of the second half and of the last 10. */
  medianEarlyMb: number;
  medianLateMb: number;
  /** Growth from medianEarlyMb to medianLateMb. */
  growthPct: number;
  startMs: Dist;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const gc = (globalThis as { gc?: () => void }).gc;

async function main(): Promise<void> {
  const p = childParams<CyclesParams>();
  const frame = FRAME[p.model];
  const images = await ensureImages(frame.width, frame.height);
  const m = await ensureModel(p.model, images.files);
  const gray = m.manifest.input.colour === 'gray';
  const frames: Frame[] = [];
  for (let i = 0; i < 4; i++) frames.push(await decodeLikeReplay(images.files[i]!, gray, i));
  const rss = (): number => {
    gc?.();
    return process.memoryUsage().rss / 1048576;
  };
  const baselineMb = rss();
  const rssMb: number[] = [];
  const starts: number[] = [];
  for (let c = 0; c < p.cycles; c++) {
    const pool = new InferencePool({ modelDir: m.dir, providers: ['cpu'], workers: p.workers, intraOpThreads: 1, queueLimit: 8, log: silentLogger });
    const t0 = nowMs();
    await pool.start();
    starts.push(nowMs() - t0);
    await Promise.all(frames.map((f) => pool.inspect(f)));
    await pool.stop();
    await new Promise((r) => setTimeout(r, 20));
    rssMb.push(rss());
    if ((c + 1) % 10 === 0) progress(`${p.model}: ${c + 1}/${p.cycles} load/release cycles, RSS ${rssMb[rssMb.length - 1]!.toFixed(1)} MB`);
  }
  // The first half settles: each cycle is a new worker thread, and glibc gives threads their own
  // malloc arenas (up to 8 per core), which keep some freed memory each until all exist and are
  // reused. Growth is measured over the second half: its slope, and the median of its first 10
  // cycles against the median of the last 10 (single samples jump with GC and arena timing).
  const from = Math.floor(rssMb.length / 2);
  const tail = rssMb.slice(from);
  const early = median(tail.slice(0, 10));
  const late = median(rssMb.slice(-10));
  const result: CyclesResult = {
    params: p,
    rssMb: rssMb.map(r1),
    baselineMb: r1(baselineMb),
    firstMb: r1(tail[0]!),
    lastMb: r1(tail[tail.length - 1]!),
    maxMb: r1(Math.max(...rssMb)),
    slopeMbPerCycle: r2(slope(tail.map((_, i) => i), tail)),
    medianEarlyMb: r1(early),
    medianLateMb: r1(late),
    growthPct: r2(((late - early) / early) * 100),
    startMs: dist(starts),
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
