// `npm run bench` (tsx bench/run.ts): the performance benchmark. Each section runs in its own Node
// process, one at a time; results go to bench/results/latest.{md,json}. See bench/README.md.
//
//   npm run bench                      full run (~12 min on 2 cores, half of it the 100k-part soak)
//   npm run bench -- --quick           shorter windows, 10k-part soak, 10 load cycles (~5 min)
//   npm run bench -- --models resnet18 --sections limits,agent
//   npm run bench -- --models resnet18 --sections agent --decode-in main --out bench/results/decode-main
//
// Options: --quick, --models a,b (film-demo, resnet18, yolov8n), --sections limits,agent,naive,
// soak,cycles, --soak-parts N, --cycles N, --out DIR, --no-priority (do not raise the children's
// priority when running as root), --no-wait (do not wait for other load on the machine to settle),
// --decode-in main|worker (camera.replay.decodeIn of the agent and soak runs; default worker, as the agent's).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { AgentParams, AgentResult } from './agent.js';
import type { CyclesParams, CyclesResult } from './cycles.js';
import { ensureImages } from './images.js';
import type { LimitsResult } from './limits.js';
import { CORES, machine, parseArgs, r2, runChild, waitQuiet } from './lib.js';
import { ensureModel, FRAME, MODEL_KEYS, type ModelKey } from './models.js';
import type { NaiveParams, NaiveResult } from './naive.js';
import { renderMarkdown, type BenchReport, type ModelReport } from './report.js';

const args = parseArgs(process.argv.slice(2));
const quick = args.quick === true;
const models = String(args.models ?? MODEL_KEYS.join(',')).split(',').filter(Boolean) as ModelKey[];
const sections = new Set(String(args.sections ?? 'limits,agent,naive,soak,cycles').split(','));
const outDir = resolve(String(args.out ?? 'bench/results'));
const nice = args['no-priority'] !== true && process.getuid?.() === 0 ? -10 : undefined;
const waitMs = args['no-wait'] === true ? 0 : quick ? 2_000 : 3_000;
const soakParts = Number(args['soak-parts'] ?? (quick ? 10_000 : 100_000));
const cycles = Number(args.cycles ?? (quick ? 10 : 50));
const decodeIn = String(args['decode-in'] ?? 'worker') as 'main' | 'worker';

for (const m of models) if (!MODEL_KEYS.includes(m)) throw new Error(`unknown model '${m}': use ${MODEL_KEYS.join(', ')}`);
if (decodeIn !== 'main' && decodeIn !== 'worker') throw new Error(`--decode-in ${String(decodeIn)}: use main or worker`);

const t0 = Date.now();
const log = (msg: string): void => {
  const s = ((Date.now() - t0) / 1000).toFixed(0).padStart(4);
  process.stdout.write(`[${s}s] ${msg}\n`);
};

/** Runs a section child after waiting for the machine to be quiet; notes the foreign load before. */
async function section<T>(script: string, params: Record<string, unknown>, nodeArgs: string[] = [], env: Record<string, string> = {}): Promise<T & { quietBefore: number }> {
  const quietBefore = waitMs > 0 ? await waitQuiet(waitMs, 0.3, log) : NaN;
  const r = await runChild<T>(script, params, { log: (l) => log(`  ${l}`), nice, nodeArgs, env, timeoutMs: 15 * 60_000 });
  return { ...r, quietBefore };
}

/**
 * Agent runs for one model: settings swept with the photo-eye above capacity, then the best
 * settings at half load, then free-run (replay camera pacing itself) above capacity.
 */
async function agentRuns(m: ModelKey, lim: LimitsResult | undefined): Promise<ModelReport['agent']> {
  const heavy = m !== 'film-demo';
  const bound = lim?.boundPerS ?? (heavy ? 50 : 500);
  // Above capacity (the bound is an upper limit of it), not far above: parts beyond capacity are
  // refused fail-safe, and refusing them (an inspection message and an alarm each) is work too.
  const rate = Math.ceil(bound * 1.1);
  const base = { model: m, warmupS: 2, seconds: quick ? 4 : 5, trigger: 'photo-eye' as const, fps: rate, decodeIn };
  const settings: { workers: number; threads: number; queueLimit: number }[] = heavy
    ? [
        { workers: 2, threads: 1, queueLimit: 8 },
        { workers: 1, threads: 2, queueLimit: 8 },
        { workers: 2, threads: 1, queueLimit: 1 },
      ]
    : [
        { workers: 1, threads: 1, queueLimit: 8 },
        { workers: 2, threads: 1, queueLimit: 8 },
      ];
  const run = async (p: AgentParams): Promise<AgentResult & { quietBefore: number }> => {
    const r = await section<AgentResult>('agent', p as unknown as Record<string, unknown>);
    log(`${p.label}: ${r.verdictsPerS} verdicts/s, p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms, lag p99 ${r.lagMs.p99} ms, edge p99 ${r.edgesMs.rise.p99}/${r.edgesMs.fall.p99} ms, other load ${r.foreignCores} cores`);
    return r;
  };
  const saturated: (AgentResult & { quietBefore: number })[] = [];
  for (const s of settings) {
    // Parts the pool would refuse are refused before their frame is grabbed (decoded).
    const p: AgentParams = { ...base, ...s, maxInFlight: s.workers + s.queueLimit };
    p.label = `${m} ${s.workers}x${s.threads} q${s.queueLimit}, photo-eye ${rate}/s`;
    saturated.push(await run(p));
  }
  const best = saturated.reduce((a, b) => (b.verdictsPerS > a.verdictsPerS ? b : a));
  const strip = (p: AgentParams): AgentParams => {
    const { resultFile: _drop, ...rest } = p as AgentParams & { resultFile?: string };
    return rest;
  };
  // Half load: the best settings, and (heavy models) one worker with both cores for one part.
  const halfRate = Math.max(1, Math.round(best.verdictsPerS / 2));
  const halfLoad = [await run({ ...strip(best.params), fps: halfRate, label: `${m} half load, photo-eye ${halfRate}/s` })];
  if (heavy && !(best.params.workers === 1 && best.params.threads === 2)) {
    const p: AgentParams = { ...strip(best.params), workers: 1, threads: 2, queueLimit: 8, maxInFlight: 9, fps: halfRate };
    halfLoad.push(await run({ ...p, label: `${m} 1x2 q8, half load, photo-eye ${halfRate}/s` }));
  }
  const freeRun = await run({ ...strip(best.params), trigger: 'freerun', fps: Math.min(1000, rate), label: `${m} free-run ${Math.min(1000, rate)} fps` });
  return { saturated, best: saturated.indexOf(best), halfLoad, freeRun };
}

async function main(): Promise<void> {
  log(`linesight bench${quick ? ' --quick' : ''}: models ${models.join(', ')}; sections ${[...sections].join(', ')}; ${CORES} cores${nice ? `; children at nice ${nice}` : ''}; decode in ${decodeIn}`);
  // Images and models first (cached after the first run).
  for (const m of models) {
    const imgs = await ensureImages(FRAME[m].width, FRAME[m].height, undefined, log);
    await ensureModel(m, imgs.files, undefined, log);
  }
  const report: BenchReport = { date: new Date().toISOString(), quick, machine: machine(), priority: nice ?? 0, models: [], settings: { soakParts, cycles } };
  for (const m of models) {
    const mr: ModelReport = { model: m };
    if (sections.has('limits')) {
      log(`${m}: limits`);
      mr.limits = await section<LimitsResult>('limits', { model: m, quick });
      const l = mr.limits;
      log(`${m}: bare ${l.bareMs} ms (${l.bareNoDecodeMs} without decode), bound ${l.boundPerS} parts/s (${l.boundNoDecodePerS} without decode, ${l.boundScaledPerS} with run scaling as measured); run ${l.runs.map((r) => `${r.name} ${r.wall.p50} ms`).join(', ')}`);
    }
    if (sections.has('agent')) mr.agent = await agentRuns(m, mr.limits);
    if (sections.has('naive')) {
      log(`${m}: naive baseline`);
      const p: NaiveParams = { model: m, seconds: quick ? 4 : 6, warmupS: 2 };
      mr.naive = await section<NaiveResult>('naive', p as unknown as Record<string, unknown>);
      log(`${m}: naive ${mr.naive.partsPerS} parts/s, p50 ${mr.naive.latencyMs.p50} ms, lag p99 ${r2(mr.naive.lagMs.p99)} ms, timer error p99 ${mr.naive.timerErrorMs.p99} ms`);
    }
    report.models.push(mr);
    write(report);
  }
  if (sections.has('soak')) {
    // The tiny model, so the parts go by fast; the camera above capacity, as in the agent runs.
    const film = report.models.find((x) => x.model === 'film-demo');
    const bestFilm = film?.agent ? film.agent.saturated[film.agent.best]! : undefined;
    const p: AgentParams = {
      model: 'film-demo',
      trigger: 'photo-eye',
      workers: bestFilm?.params.workers ?? 2,
      threads: bestFilm?.params.threads ?? 1,
      queueLimit: bestFilm?.params.queueLimit ?? 8,
      maxInFlight: bestFilm?.params.maxInFlight ?? 10,
      // Just above what the agent sustains, so the soak is as short as it can be.
      fps: Math.ceil((bestFilm?.verdictsPerS ?? 250) * 1.1),
      warmupS: 2,
      parts: soakParts,
      rssEvery: 1000,
      decodeIn,
      label: `soak ${soakParts} parts`,
    };
    log(`soak: film-demo, ${soakParts} parts at ${p.fps}/s, RSS every 1000`);
    report.soak = await section<AgentResult>('agent', p as unknown as Record<string, unknown>);
    const s = report.soak.rss;
    if (s) log(`soak: RSS ${s.firstMb} -> ${s.lastMb} MB (max ${s.maxMb}; medians ${s.medianEarlyMb} -> ${s.medianLateMb}), ${s.slopeMbPer10k} MB per 10k parts, growth ${s.growthPct} %`);
    write(report);
  }
  if (sections.has('cycles')) {
    const m: ModelKey = quick || !models.includes('resnet18') ? 'film-demo' : 'resnet18';
    const p: CyclesParams = { model: m, cycles, workers: 1 };
    log(`cycles: ${cycles} InferencePool load/release cycles of ${m}`);
    report.cycles = await section<CyclesResult>('cycles', p as unknown as Record<string, unknown>, ['--expose-gc']);
    const c = report.cycles;
    log(`cycles: RSS ${c.firstMb} -> ${c.lastMb} MB (max ${c.maxMb}; medians ${c.medianEarlyMb} -> ${c.medianLateMb}), ${c.slopeMbPerCycle} MB per cycle, growth ${c.growthPct} %`);
  }
  report.durationS = Math.round((Date.now() - t0) / 1000);
  write(report);
  process.stdout.write('\n' + renderMarkdown(report) + '\n');
  log(`wrote ${join(outDir, 'latest.md')} and latest.json`);
}

function write(report: BenchReport): void {
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
  writeFileSync(join(outDir, 'latest.md'), renderMarkdown(report) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
