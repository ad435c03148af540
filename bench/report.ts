// The benchmark report: the JSON shape written to bench/results/latest.json and its Markdown.
import type { AgentResult } from './agent.js';
import type { CyclesResult } from './cycles.js';
import type { LimitsResult } from './limits.js';
import type { ModelKey } from './models.js';
import type { NaiveResult } from './naive.js';

type Quiet = { quietBefore: number };

export interface ModelReport {
  model: ModelKey;
  limits?: LimitsResult & Quiet;
  agent?: { saturated: (AgentResult & Quiet)[]; best: number; halfLoad: (AgentResult & Quiet)[]; freeRun?: AgentResult & Quiet };
  naive?: NaiveResult & Quiet;
}

export interface BenchReport {
  date: string;
  quick: boolean;
  machine: Record<string, unknown>;
  /** nice value of the section processes (0 = not raised). */
  priority: number;
  settings: { soakParts: number; cycles: number };
  models: ModelReport[];
  soak?: AgentResult & Quiet;
  cycles?: CyclesResult & Quiet;
  durationS?: number;
}

export const TARGETS = {
  throughputVsBound: 0.9,
  p50VsBare: 1.15,
  p99VsBare: 1.5,
  lagP99Ms: 5,
  edgeP99Ms: 2,
  rssGrowthPct: 5,
};

const f = (x: number | undefined, d = 1): string => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(d));
const ratio = (a: number | undefined, b: number | undefined): number | undefined => (a !== undefined && b !== undefined && b > 0 ? a / b : undefined);
const mark = (ok: boolean | undefined): string => (ok === undefined ? '' : ok ? ' ✓' : ' ✗');
const row = (cells: (string | number)[]): string => `| ${cells.join(' | ')} |`;
const settingsOf = (a: AgentResult): string => `${a.params.workers}×${a.params.threads} q${a.params.queueLimit ?? 8}${a.params.decodeIn === 'worker' ? ', decode in worker' : ''}`;

export function renderMarkdown(r: BenchReport): string {
  const out: string[] = [];
  const m = r.machine as { cores: number; cpu: string; node: string; loadavg: number[] };
  out.push(`# linesight benchmark${r.quick ? ' (--quick)' : ''}`);
  out.push('');
  out.push(
    `${r.date} · ${m.cores} cores (${m.cpu}) · Node ${m.node} · onnxruntime-node CPU provider` +
      (r.priority ? ` · sections at nice ${r.priority}` : '') +
      (r.durationS ? ` · ${Math.round(r.durationS / 60)} min` : ''),
  );
  out.push('');
  out.push(
    'Settings: `workers×intra-op threads qN` (N = model.queueLimit; line.maxInFlight = workers + N, so a part the pool would refuse is refused before its frame is decoded). ' +
      '*Bound* = cores ÷ CPU-seconds per part, each stage alone (decode + preprocess + run + head; decode + preprocess by the cheaper of sharp on libvips threads and the native path the inference worker uses with decodeIn: worker, the default); *scaled*: the same with `session.run` costed as two 1-thread sessions side by side actually run here (cores ÷ their combined runs/s), since two sessions in parallel do not reach twice the rate of one. *Bare* = the same stages alone, one part at a time, wall ms. ' +
      'The agent\'s latency runs from the photo-eye edge (trigger) to the verdict with the divert scheduled, and includes the decode: each part grabs its JPEG when it triggers. ' +
      '*Other load* = cores other processes kept busy during the run (the machine may be shared): above ~0.3 a result is contended.',
  );
  out.push('');

  // ---- summary ---------------------------------------------------------------------------------
  out.push('## Summary');
  out.push('');
  out.push(row(['model', 'bound parts/s (scaled)', 'agent parts/s (settings)', 'agent / bound (/ scaled)', 'bare ms', 'agent p50 / bare', 'agent p99 / bare', 'half load p50 / bare (settings)', 'half load p99 / bare', 'naive / agent (parts/s)', 'lag p99 ms', 'divert on-edge error p99 ms', 'other load']));
  out.push(row(Array(13).fill('---')));
  for (const mr of r.models) {
    const l = mr.limits;
    const a = mr.agent ? mr.agent.saturated[mr.agent.best] : undefined;
    const h = mr.agent?.halfLoad.reduce((x, y) => (y.latencyMs.p50 < x.latencyMs.p50 ? y : x));
    const bare = l?.bareMs;
    const tb = ratio(a?.verdictsPerS, l?.boundPerS);
    const p50 = ratio(a?.latencyMs.p50, bare);
    const p99 = ratio(a?.latencyMs.p99, bare);
    const h50 = ratio(h?.latencyMs.p50, bare);
    const h99 = ratio(h?.latencyMs.p99, bare);
    const lag = a?.lagMs.p99;
    const edge = a?.edgesMs.rise.p99;
    out.push(
      row([
        mr.model,
        `${f(l?.boundPerS)} (${f(l?.boundScaledPerS)})`,
        a ? `${f(a.verdictsPerS)} (${settingsOf(a)})` : '–',
        f(tb, 2) + mark(tb === undefined ? undefined : tb >= TARGETS.throughputVsBound) + ` (${f(ratio(a?.verdictsPerS, l?.boundScaledPerS), 2)})`,
        f(bare, 2),
        f(p50, 2) + mark(p50 === undefined ? undefined : p50 <= TARGETS.p50VsBare),
        f(p99, 2) + mark(p99 === undefined ? undefined : p99 <= TARGETS.p99VsBare),
        f(h50, 2) + mark(h50 === undefined ? undefined : h50 <= TARGETS.p50VsBare) + (h ? ` (${settingsOf(h)})` : ''),
        f(h99, 2) + mark(h99 === undefined ? undefined : h99 <= TARGETS.p99VsBare),
        f(ratio(mr.naive?.partsPerS, a?.verdictsPerS), 2),
        f(lag, 2) + mark(lag === undefined ? undefined : lag < TARGETS.lagP99Ms),
        f(edge, 2) + mark(edge === undefined || !Number.isFinite(edge) ? undefined : edge < TARGETS.edgeP99Ms),
        a ? f(a.foreignCores, 2) : '–',
      ]),
    );
  }
  out.push('');
  out.push(
    `Targets: agent/bound ≥ ${TARGETS.throughputVsBound}; p50/bare ≤ ${TARGETS.p50VsBare}; p99/bare ≤ ${TARGETS.p99VsBare}; event-loop lag p99 < ${TARGETS.lagP99Ms} ms and divert edge error p99 < ${TARGETS.edgeP99Ms} ms at full load; RSS growth < ${TARGETS.rssGrowthPct} % over the soak. ` +
      'Agent, lag and edge columns: the best settings at full load; half load: the settings with the lower p50. Divert on-edge error = how late the output went high after a pulse\'s scheduled start (the gate time); off-edges are in section 2.',
  );
  out.push('');

  // ---- limits ----------------------------------------------------------------------------------
  if (r.models.some((x) => x.limits)) {
    out.push('## 1. Limits: each stage alone');
    out.push('');
    out.push(row(['model', 'frame → input', 'decode ms (cpu)', 'prepare ms (cpu)', 'native decode + prepare ms (cpu)', 'toTensor ms (cpu)', 'run ms (cpu), fastest', 'head ms', 'bare ms (+decode)', 'bound parts/s (no decode; sharp decode)', '2 sessions × 1 thread runs/s', 'other load']));
    out.push(row(Array(12).fill('---')));
    for (const mr of r.models) {
      const l = mr.limits;
      if (!l) continue;
      const best = l.runs.find((x) => x.name === l.bestLatencyRun)!;
      out.push(
        row([
          mr.model,
          `${l.frame.width}×${l.frame.height}${l.decoded && l.decoded.width !== l.frame.width ? ` (decoded ${l.decoded.width}×${l.decoded.height})` : ''} → ${l.input.width}×${l.input.height} ${l.input.colour}`,
          `${f(l.decode.wall.p50, 2)} (${f(l.decode.cpuMs, 2)})`,
          `${f(l.prepare.wall.p50, 2)} (${f(l.prepare.cpuMs, 2)})`,
          l.native ? `${f(l.native.wall.p50, 2)} (${f(l.native.cpuMs, 2)})` : 'n/a',
          `${f(l.toTensor.wall.p50, 2)} (${f(l.toTensor.cpuMs, 2)})`,
          `${f(best.wall.p50, 2)} (${f(best.cpuMs, 2)}), ${best.name}`,
          f(l.head.wall.p50, 3),
          `${f(l.bareNoDecodeMs, 2)} (${f(l.bareMs, 2)})`,
          `${f(l.boundPerS)} (${f(l.boundNoDecodePerS)}; ${f(l.boundSharpPerS)})`,
          f(l.parallel2x1.runsPerS),
          f(l.quietBefore, 2),
        ]),
      );
    }
    out.push('');
    out.push('`session.run` on prepared tensors, tight loop, p50 wall ms / CPU ms per run (session creation ms):');
    out.push('');
    const names = [...new Set(r.models.flatMap((x) => x.limits?.runs.map((y) => y.name) ?? []))];
    out.push(row(['setting', ...r.models.filter((x) => x.limits).map((x) => x.model)]));
    out.push(row(Array(1 + r.models.filter((x) => x.limits).length).fill('---')));
    for (const n of names) {
      out.push(
        row([
          n,
          ...r.models
            .filter((x) => x.limits)
            .map((x) => {
              const run = x.limits!.runs.find((y) => y.name === n);
              return run ? `${f(run.wall.p50, 2)} / ${f(run.cpuMs, 2)} (${f(run.createMs, 0)})` : '–';
            }),
        ]),
      );
    }
    out.push(row(['create from cached optimised model (ms)', ...r.models.filter((x) => x.limits).map((x) => f(x.limits!.createFromOptimisedMs, 0))]));
    out.push('');
  }

  // ---- agent -----------------------------------------------------------------------------------
  if (r.models.some((x) => x.agent)) {
    out.push('## 2. The agent: above capacity, MQTT + outbox on, real broker');
    out.push('');
    out.push(
      'The Agent class from a config: replay camera on the bench images, sim GPIO, MQTT at QoS 1 through the durable outbox to Mosquitto, travel 1 s, pulse 10 ms. ' +
        'Parts: the sim photo-eye toggled at 1.1 × the bound (each edge grabs and decodes its frame); then the best settings at half load; then free-run, where the replay camera paces itself ' +
        '(its pacer decodes one frame at a time, so free-run measures the camera: its latency starts after the decode and is compared with bare minus decode). ' +
        'Latency = trigger → verdict → divert scheduled (the `decided` event). Throughput counts parts decided with a verdict; parts beyond capacity are diverted fail-safe (`overload`, `late`) and counted apart. ' +
        'Stage p50s are the pool\'s own timings (queue; preprocess = resize on the main thread + toTensor in the worker; infer).',
    );
    out.push('');
    out.push(row(['model', 'settings', 'parts offered /s', 'verdicts/s', 'fail-safe/s', 'p50 ms', 'p99 ms', 'p50 / bare', 'queue / pre / infer p50 ms', 'lag p99 (max) ms', 'edge p99 rise / fall ms', 'MQTT acked (outbox left)', 'CPU cores', 'other load']));
    out.push(row(Array(14).fill('---')));
    for (const mr of r.models) {
      if (!mr.agent) continue;
      const all = [
        ...mr.agent.saturated.map((a, i) => ({ a, tag: i === mr.agent!.best ? ' **best**' : '' })),
        ...mr.agent.halfLoad.map((a) => ({ a, tag: ', half load' })),
        ...(mr.agent.freeRun ? [{ a: mr.agent.freeRun, tag: ', free-run' }] : []),
      ];
      for (const { a, tag } of all) {
        const bare = a.params.trigger === 'freerun' ? mr.limits?.bareNoDecodeMs : mr.limits?.bareMs;
        const fs = Object.values(a.failSafe).reduce((x, y) => x + y, 0);
        out.push(
          row([
            mr.model,
            settingsOf(a) + tag,
            a.params.fps,
            f(a.verdictsPerS),
            `${f(fs / a.windowS)}${fs ? ` (${Object.entries(a.failSafe).map(([k, v]) => `${k} ${v}`).join(', ')})` : ''}`,
            f(a.latencyMs.p50, 1),
            f(a.latencyMs.p99, 1),
            f(ratio(a.latencyMs.p50, bare), 2),
            `${f(a.stagesP50.queueMs, 1)} / ${f(a.stagesP50.preprocessMs, 1)} / ${f(a.stagesP50.inferMs, 1)}`,
            `${f(a.lagMs.p99, 2)} (${f(a.lagMs.max, 0)})`,
            `${f(a.edgesMs.rise.p99, 2)} / ${f(a.edgesMs.fall.p99, 2)} (${a.edgesMs.matched}/${a.edgesMs.expected})`,
            `${a.mqtt.published} (${a.mqtt.outboxPending})`,
            f(a.cpuCores, 2),
            f(a.foreignCores, 2),
          ]),
        );
      }
    }
    out.push('');
  }

  // ---- naive -----------------------------------------------------------------------------------
  if (r.models.some((x) => x.naive)) {
    out.push('## 3. The naive baseline');
    out.push('');
    out.push(
      'One loop on the main thread: read file → sharp decode+resize → float tensor → `session.run` (default options) → head → divert `setTimeout` → `publishAsync` QoS 1. ' +
        'Latency = start of the part (file read) → verdict and divert timer set; timer error = lateness of the divert timers (every part gets one).',
    );
    out.push('');
    out.push(row(['model', 'parts/s', 'naive / agent', 'p50 ms', 'p99 ms', 'lag p99 (max) ms', 'divert timer error p99 ms', 'CPU cores', 'other load']));
    out.push(row(Array(9).fill('---')));
    for (const mr of r.models) {
      const n = mr.naive;
      if (!n) continue;
      const a = mr.agent ? mr.agent.saturated[mr.agent.best] : undefined;
      out.push(row([mr.model, f(n.partsPerS), f(ratio(n.partsPerS, a?.verdictsPerS), 2), f(n.latencyMs.p50, 1), f(n.latencyMs.p99, 1), `${f(n.lagMs.p99, 1)} (${f(n.lagMs.max, 0)})`, f(n.timerErrorMs.p99, 1), f(n.cpuCores, 2), f(n.foreignCores, 2)]));
    }
    out.push('');
  }

  // ---- memory ----------------------------------------------------------------------------------
  if (r.soak || r.cycles) {
    out.push('## 5. Memory');
    out.push('');
    out.push(row(['run', 'count', 'RSS first MB', 'last MB', 'max MB', 'median early → late MB', 'slope', 'growth', 'notes']));
    out.push(row(Array(9).fill('---')));
    const s = r.soak;
    if (s?.rss) {
      const fs = Object.values(s.failSafe).reduce((x, y) => x + y, 0);
      out.push(
        row([
          `agent soak, film-demo ${settingsOf(s)}, photo-eye ${s.params.fps}/s`,
          `${s.params.parts ?? s.decided} parts (RSS every ${s.rss.every})`,
          f(s.rss.firstMb),
          f(s.rss.lastMb),
          f(s.rss.maxMb),
          `${f(s.rss.medianEarlyMb)} → ${f(s.rss.medianLateMb)}`,
          `${f(s.rss.slopeMbPer10k, 2)} MB / 10k parts`,
          `${f(s.rss.growthPct, 2)} %${mark(s.rss.growthPct < TARGETS.rssGrowthPct)}`,
          `${f(s.decidedPerS)} parts/s (${f(s.verdictsPerS)} with a verdict, ${fs} fail-safe); MQTT acked ${s.mqtt.published}; JS heap ${f(s.rss.heapLastMb)} MB at the end; first = after the first tenth; growth = median of the last tenth vs the second tenth`,
        ]),
      );
    }
    const c = r.cycles;
    if (c) {
      out.push(
        row([
          `InferencePool load/release, ${c.params.model}`,
          `${c.params.cycles} cycles`,
          f(c.firstMb),
          f(c.lastMb),
          f(c.maxMb),
          `${f(c.medianEarlyMb)} → ${f(c.medianLateMb)}`,
          `${f(c.slopeMbPerCycle, 2)} MB / cycle`,
          `${f(c.growthPct, 2)} %${mark(c.growthPct < TARGETS.rssGrowthPct)}`,
          `start p50 ${f(c.startMs.p50, 0)} ms; baseline before the first load ${f(c.baselineMb)} MB; RSS after a full GC; first, slope and growth over the second half (the first settles: a new worker thread per cycle, new malloc arenas); growth = median of the last 10 vs the first 10 of the second half`,
        ]),
      );
    }
    out.push('');
    if (s?.rss) out.push(`Soak RSS samples (MB, every ${s.rss.every} parts): ${s.rss.samplesMb.map((x) => x.toFixed(0)).join(' ')}`);
    if (c) out.push(`${s?.rss ? '\n' : ''}Cycle RSS (MB): ${c.rssMb.map((x) => x.toFixed(0)).join(' ')}`);
    out.push('');
  }
  return out.join('\n');
}
