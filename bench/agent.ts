// Sections 2, 4 and 5a, the agent (a child process per run): the real Agent class, built from a
// config as `linesight run` builds it — the replay camera on the bench images, the inference pool
// (through the model manager), the inspection loop, the divert scheduler on the sim GPIO binding,
// MQTT at QoS 1 to a real broker (Mosquitto when installed) through the durable outbox.
//
// Parts come from the sim photo-eye (trigger mode gpio), toggled at a fixed rate above capacity:
// each edge is a part whose frame is grabbed — decoded from a JPEG — when it triggers, so the
// latency below covers decode + preprocess + queue + inference + head + decision, as the bare
// stages in limits.ts do. Free-run (every replay frame a part) is measured too: the replay
// camera's pacer decodes one frame at a time, so there the camera, not the agent, is the limit.
//
// Measured, after a warm-up:
//   throughput   parts decided with a verdict per second (fail-safes counted apart, by reason)
//   latency      trigger -> verdict -> actuation scheduled: the 'decided' event (InspectionLoop
//                emits it after DivertScheduler.schedule) minus the part's trigger time
//   lag          perf_hooks.monitorEventLoopDelay over the window (main thread)
//   divert edges for every pulse window the diverted parts asked for (gate time, pulse width,
//                merged when they overlap, as DivertScheduler merges them): the time from its
//                scheduled start (end) until the sim divert output is high (low), from
//                SimGpio.history()
//   memory       RSS every `rssEvery` decided parts (the 100k-part soak)
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Agent } from '../src/agent.js';
import { SystemClock, nsToMs } from '../src/clock.js';
import { parseConfig } from '../src/config/load.js';
import { SimGpio } from '../src/gpio/sim.js';
import { createLogger } from '../src/log.js';
import type { Part } from '../src/part.js';
import { startTestBroker } from '../test/helpers/broker.js';
import { ensureImages } from './images.js';
import { ensureModel, FRAME, type ModelKey } from './models.js';
import { childParams, cpuMeter, dist, foreignLoad, nowMs, progress, r1, r2, r3, slope, sleep, type Dist } from './lib.js';

export interface AgentParams {
  model: ModelKey;
  workers: number;
  threads: number;
  /**
   * 'photo-eye': the sim photo-eye input is toggled `fps` times a second; each edge is a part that
   * grabs (decodes) its own frame, concurrently, as on a line with a photo-eye. 'freerun': the
   * replay camera paces itself at `fps` and every frame is a part; its pacer decodes one frame at
   * a time, so above ~1 / decode latency it measures the camera rather than the agent.
   */
  trigger: 'photo-eye' | 'freerun';
  fps: number;
  warmupS: number;
  /** Measurement window; or run until `parts` parts are decided. */
  seconds?: number;
  parts?: number;
  rssEvery?: number;
  /** Diagnostics: a full GC before each RSS sample (needs node --expose-gc), so the heap figure is what is retained. */
  gcBeforeSample?: boolean;
  queueLimit?: number;
  maxInFlight?: number;
  /** model.workerNice (default: the config's). */
  workerNice?: number;
  /** camera.replay.decodeIn (default: the config's, worker): 'worker' = each inference worker decodes its part's JPEG. */
  decodeIn?: 'main' | 'worker';
  travelMs?: number;
  pulseMs?: number;
  label?: string;
}

export interface EdgeStats {
  expected: number;
  matched: number;
  rise: Dist;
  fall: Dist;
}

export interface AgentResult {
  params: AgentParams;
  broker: string;
  windowS: number;
  decided: number;
  verdicts: number;
  verdictsPerS: number;
  decidedPerS: number;
  failSafe: Record<string, number>;
  rejects: number;
  latencyMs: Dist;
  /** Pool's per-part timings of verdict parts (ms, p50). */
  stagesP50: { queueMs: number; preprocessMs: number; inferMs: number; postprocessMs: number };
  lagMs: { p50: number; p99: number; max: number };
  edgesMs: EdgeStats;
  mqtt: { published: number; outboxPending: number; notDurable: number; connected: boolean };
  cpuCores: number;
  foreignCores: number;
  /** first = after the first tenth (pools and caches fill); growth = median of the last tenth vs median of the second tenth. */
  rss?: { every: number; samplesMb: number[]; firstMb: number; lastMb: number; maxMb: number; slopeMbPer10k: number; medianEarlyMb: number; medianLateMb: number; growthPct: number; heapLastMb: number };
  startMs: number;
  logLines: number;
}

const DIVERT = { chip: 'sim0', line: 1 };

/**
 * Offline replica of DivertScheduler's merging: the union of [start, start + pulse] windows.
 * Windows less than 1 ms apart count as one: the scheduler's timers have 1 ms resolution, so such
 * a dip is not an edge it can place (and no actuator could follow it).
 */
function expectedWindows(parts: { gate: number; decided: number }[], pulseMs: number): [number, number][] {
  const w = parts
    .map((p) => [Math.max(p.gate, p.decided), p.gate + pulseMs] as [number, number])
    .filter(([s, e]) => e > s)
    .sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [s, e] of w) {
    const last = out[out.length - 1];
    if (last && s <= last[1] + 1) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}

/**
 * Lateness of each expected edge: the time from the scheduled edge until the output is at that
 * level (0 when it already is: a window that merged with, or was held open by, the one before).
 * `history` is the output's level changes, oldest first.
 */
function edgeErrors(expected: number[], level: 0 | 1, history: { value: 0 | 1; t: number }[]): number[] {
  const errors: number[] = [];
  let j = 0;
  for (const e of expected) {
    // The last change at or before e (history and expected are both in time order).
    while (j + 1 < history.length && history[j + 1]!.t <= e) j++;
    if (history[j] && history[j]!.t <= e && history[j]!.value === level) {
      errors.push(0);
      continue;
    }
    let k = j;
    while (k < history.length && !(history[k]!.t > e && history[k]!.value === level)) k++;
    if (k < history.length) errors.push(history[k]!.t - e);
  }
  return errors;
}

const PHOTO_EYE = { chip: 'sim0', line: 0 };

/**
 * Toggles the sim photo-eye `rate` times a second on an absolute schedule (a late tick fires the
 * edges it missed, as parts keep arriving on a belt whatever the agent is doing).
 */
function photoEye(gpio: SimGpio, rate: number): { stop(): void } {
  const period = 1000 / rate;
  let next = nowMs() + period;
  let timer: NodeJS.Timeout | undefined;
  const tick = (): void => {
    const now = nowMs();
    for (let n = 0; next <= now && n < 1000; n++, next += period) {
      gpio.drive(PHOTO_EYE, 1);
      gpio.drive(PHOTO_EYE, 0);
    }
    timer = setTimeout(tick, Math.max(0, Math.floor(next - nowMs())));
  };
  timer = setTimeout(tick, Math.floor(period));
  return { stop: () => clearTimeout(timer) };
}

async function main(): Promise<void> {
  const p = childParams<AgentParams>();
  const frame = FRAME[p.model];
  const images = await ensureImages(frame.width, frame.height);
  const m = await ensureModel(p.model, images.files);
  const broker = await startTestBroker();
  const stateDir = mkdtempSync(join(tmpdir(), 'linesight-bench-agent-'));
  const pulseMs = p.pulseMs ?? 10;
  let logLines = 0;
  const log = createLogger({ level: 'warn', sink: { write: () => void logLines++ } });
  const cfg = parseConfig({
    station: { line: 'bench', id: 'st1', stateDir },
    camera: {
      source: 'replay',
      replay: { dir: images.dir, order: 'sorted', loop: true, fps: Math.min(1000, p.fps), colour: m.manifest.input.colour === 'gray' ? 'gray' : 'rgb', ...(p.decodeIn ? { decodeIn: p.decodeIn } : {}) },
    },
    trigger: p.trigger === 'freerun' ? { mode: 'freerun' } : { mode: 'gpio', gpio: { edge: 'rising', debounceMs: 0 } },
    model: { path: m.dir, providers: ['cpu'], workers: p.workers, intraOpThreads: p.threads, queueLimit: p.queueLimit ?? 8, ...(p.workerNice !== undefined ? { workerNice: p.workerNice } : {}) },
    line: { travelMs: p.travelMs ?? 1000, pulseMs, marginMs: 20, maxInFlight: p.maxInFlight ?? 32 },
    gpio: { backend: 'sim' },
    mqtt: { url: broker.url },
    http: { enabled: false },
    log: { level: 'warn' },
  });
  const clock = new SystemClock();
  const gpio = new SimGpio({ clock });
  const agent = new Agent(cfg, { log, clock, gpio });

  const base = clock.nowNs();
  const ms = (ns: bigint): number => nsToMs(ns - base);
  let measuring = false;
  let decided = 0;
  let verdicts = 0;
  let rejects = 0;
  const failSafe: Record<string, number> = {};
  const lat: number[] = [];
  const stages = { queueMs: [] as number[], preprocessMs: [] as number[], inferMs: [] as number[], postprocessMs: [] as number[] };
  const diverted: { gate: number; decided: number }[] = [];
  const rssSamples: number[] = [];
  let heapLast = 0;
  let totalDecided = 0;
  let done: () => void = () => {};
  const finished = new Promise<void>((r) => (done = r));

  agent.bus.on('decided', (part: Part) => {
    const now = clock.nowNs();
    totalDecided++;
    if (part.action === 'divert') diverted.push({ gate: ms(part.t.gateNs!), decided: ms(part.t.decidedNs!) });
    if (p.rssEvery && totalDecided % p.rssEvery === 0) {
      if (p.gcBeforeSample) (globalThis as { gc?: () => void }).gc?.();
      const mu = process.memoryUsage();
      rssSamples.push(mu.rss / 1048576);
      if (p.gcBeforeSample) progress(`${totalDecided} parts: RSS ${(mu.rss / 1048576).toFixed(1)} MB, heap ${(mu.heapUsed / 1048576).toFixed(1)} MB, external ${(mu.external / 1048576).toFixed(1)} MB, array buffers ${(mu.arrayBuffers / 1048576).toFixed(1)} MB`);
      heapLast = mu.heapUsed / 1048576;
      if (rssSamples.length % 10 === 0) progress(`${p.model}: ${totalDecided} parts, RSS ${(mu.rss / 1048576).toFixed(1)} MB`);
    }
    if (p.parts && totalDecided >= p.parts) done();
    if (!measuring) return;
    decided++;
    if (part.failSafe) {
      failSafe[part.reason ?? 'unknown'] = (failSafe[part.reason ?? 'unknown'] ?? 0) + 1;
      return;
    }
    verdicts++;
    if (part.action === 'divert') rejects++;
    if (lat.length < 200_000) {
      lat.push(nsToMs(now - part.t.triggerNs));
      const t = part.timings;
      if (t) for (const k of Object.keys(stages) as (keyof typeof stages)[]) stages[k].push(t[k]);
    }
  });

  progress(`${p.label ?? p.model}: starting the agent (${p.workers} worker(s) x ${p.threads} thread(s), ${p.trigger} ${p.fps}/s)`);
  const t0 = nowMs();
  await agent.start();
  const startMs = r1(nowMs() - t0);
  const eye = p.trigger === 'freerun' ? undefined : photoEye(gpio, p.fps);
  await sleep(p.warmupS * 1000);

  const lag = monitorEventLoopDelay({ resolution: 1 });
  const cpu = cpuMeter();
  const foreign = foreignLoad();
  measuring = true;
  const w0 = nowMs();
  lag.enable();
  if (p.parts) await finished;
  else await sleep((p.seconds ?? 10) * 1000);
  lag.disable();
  measuring = false;
  const windowS = (nowMs() - w0) / 1000;
  const cpuCores = cpu.ms() / (windowS * 1000);
  const foreignCores = foreign.foreign();
  const mq = agent.status().mqtt;

  eye?.stop();
  await agent.stop();
  const history = gpio.history(DIVERT).map((h) => ({ value: h.value, t: ms(h.timeNs) }));
  const windows = expectedWindows(diverted, pulseMs);
  const r = edgeErrors(windows.map((w) => w[0]), 1, history);
  const f = edgeErrors(windows.map((w) => w[1]), 0, history);

  const med = (xs: number[]): number => dist(xs).p50;
  const result: AgentResult = {
    params: p,
    broker: broker.kind,
    windowS: r2(windowS),
    decided,
    verdicts,
    verdictsPerS: r2(verdicts / windowS),
    decidedPerS: r2(decided / windowS),
    failSafe,
    rejects,
    latencyMs: dist(lat),
    stagesP50: { queueMs: med(stages.queueMs), preprocessMs: med(stages.preprocessMs), inferMs: med(stages.inferMs), postprocessMs: med(stages.postprocessMs) },
    lagMs: { p50: r3(lag.percentile(50) / 1e6), p99: r3(lag.percentile(99) / 1e6), max: r3(lag.max / 1e6) },
    edgesMs: { expected: windows.length, matched: Math.min(r.length, f.length), rise: dist(r), fall: dist(f) },
    mqtt: { published: mq?.published ?? 0, outboxPending: mq?.outbox.pending ?? -1, notDurable: mq?.notDurable ?? 0, connected: mq?.connected ?? false },
    cpuCores: r2(cpuCores),
    foreignCores,
    startMs,
    logLines,
  };
  if (p.rssEvery && rssSamples.length > 1) {
    const xs = rssSamples.map((_, i) => (i + 1) * p.rssEvery!);
    // The first tenth of the run is where pools, caches and the outbox fill: left out.
    const tenth = Math.max(1, Math.floor(rssSamples.length / 10));
    const settled = rssSamples.slice(tenth);
    const s = slope(xs.slice(tenth), settled) * 10_000;
    const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
    const early = median(rssSamples.slice(tenth, 2 * tenth));
    const late = median(rssSamples.slice(-tenth));
    result.rss = {
      every: p.rssEvery,
      samplesMb: rssSamples.map(r1),
      firstMb: r1(settled[0]!),
      lastMb: r1(rssSamples[rssSamples.length - 1]!),
      maxMb: r1(Math.max(...rssSamples)),
      slopeMbPer10k: r2(s),
      medianEarlyMb: r1(early),
      medianLateMb: r1(late),
      growthPct: r2(((late - early) / early) * 100),
      heapLastMb: r1(heapLast),
    };
  }
  writeFileSync(p.resultFile, JSON.stringify(result, null, 2));
  await broker.close();
  rmSync(stateDir, { recursive: true, force: true });
}


main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
