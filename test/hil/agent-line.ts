// The whole agent on the virtual line-side device: `linesight run -c FILE` (the CLI from the
// checkout's sources, bundled by bundle.mjs like dist/) in a child process, against the kernel's
// gpio-sim and vivid.
//
// The scenario plays the rest of the line:
//  - the photo-eye: gpio-sim line PHOTO_EYE, pulled up and down through the simulator's sysfs;
//  - the picture: vivid's test pattern, switched before each part between colour bars (the bundled
//    film-demo model rejects them: strong edges) and plain black (it passes them), with vivid's
//    OSD text off (text is an "anomaly" too);
//  - the central system: an embedded MQTT broker and a subscriber collecting `…/inspection`;
//  - two witnesses of the divert and ready outputs: the kernel's `gpio_value` trace event (every
//    write to the lines, by sysfs or the character device, stamped on CLOCK_MONOTONIC: nothing is
//    missed when the emulated machine stalls), and a probe reading the simulator's
//    `sim_gpioN/value` every couple of ms in a worker thread (the level a wire would show).
// It checks behaviour, not timing (TCG is no timing reference): every part published once with its
// id; the divert output pulsed for exactly the parts whose own message says `divert`, each pulse at
// or after that part's gate time and before the next part's gate, the simulator showing each
// pulse; the ready output high while running and driven low on SIGTERM before the agent exits; the
// lines free afterwards.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { after, before, describe, test } from 'node:test';
import type { MqttClient } from 'mqtt';
import type { EmbeddedBroker } from '../../src/publish/broker.js';
import { loadNative, type V4l2Device } from '../../src/native/addon.js';
import { ChardevGpio } from '../../src/gpio/chardev.js';
import { resolveSysfsLine } from '../../src/gpio/sysfs.js';
import { hilEnv, simDrive, simLevel, sleep, until, type HilEnv } from './lib.js';
import { freePort } from '../helpers/net.js';

export const PHOTO_EYE = 0;
export const DIVERT = 1;
export const READY = 2;

const MS = 1_000_000n;
const now = (): bigint => process.hrtime.bigint();
const ms = (ns: bigint): string => (Number(ns) / 1e6).toFixed(1);

export interface AgentLineOptions {
  /** Scenario name: station id and temp folder. */
  name: string;
  gpio: 'onoff' | 'chardev';
  /** The config's camera section (the scenario's source on vivid). */
  camera: (env: HilEnv) => Record<string, unknown>;
  /** Extra environment for the agent (e.g. LINESIGHT_NATIVE=off). */
  agentEnv?: Record<string, string>;
  parts?: number;
}

// Line timing: generous, because under TCG a frame + inference takes hundreds of ms.
const TRAVEL_MS = 4000;
const MARGIN_MS = 300;
const PULSE_MS = 200;
/** After switching vivid's pattern, time for frames with the old one to leave the pipeline. */
const SETTLE_MS = 1200;
const EYE_HIGH_MS = 80;
/** Clock reading slack when comparing stamps taken by different processes (trace: µs; ISO: ms). */
const SLACK = 3n * MS;

const PATTERNS = [
  { name: '75% Colorbar', expect: 'reject' },
  { name: '100% Black', expect: 'pass' },
] as const;

// ── witnesses ──────────────────────────────────────────────────────────────────────────────────

interface Edge {
  level: 0 | 1;
  tNs: bigint;
}

/** Writes to GPIO lines as the kernel saw them: the gpio_value trace event, in its own instance. */
class GpioTrace {
  private readonly dir: string;

  constructor(
    tracefs: string,
    name: string,
    private readonly gpios: Map<number, number>, // global number -> offset
  ) {
    assert.ok(existsSync(join(tracefs, 'events/gpio/gpio_value')), `the gpio_value trace event in ${tracefs} (the guest mounts tracefs)`);
    this.dir = join(tracefs, 'instances', name);
    if (existsSync(this.dir)) rmdirSync(this.dir);
    mkdirSync(this.dir);
    writeFileSync(join(this.dir, 'trace_clock'), 'mono'); // CLOCK_MONOTONIC, as process.hrtime
    writeFileSync(join(this.dir, 'buffer_size_kb'), '512');
    const ev = join(this.dir, 'events/gpio/gpio_value');
    writeFileSync(join(ev, 'filter'), [...gpios.keys()].map((g) => `gpio == ${g}`).join(' || '));
    writeFileSync(join(ev, 'enable'), '1');
  }

  /** Level changes per line offset (repeated writes of the same level dropped). */
  edges(): Map<number, Edge[]> {
    const out = new Map<number, Edge[]>([...this.gpios.values()].map((o) => [o, []]));
    const re = /\s(\d+)\.(\d{6}): gpio_value: (\d+) +set (\d)/;
    for (const line of readFileSync(join(this.dir, 'trace'), 'utf8').split('\n')) {
      const m = re.exec(line);
      const offset = m ? this.gpios.get(Number(m[3])) : undefined;
      if (!m || offset === undefined) continue;
      const list = out.get(offset)!;
      const level = m[4] === '1' ? 1 : 0;
      if ((list.at(-1)?.level ?? 0) === level) continue;
      list.push({ level, tNs: BigInt(m[1]!) * 1_000_000_000n + BigInt(m[2]!) * 1000n });
    }
    return out;
  }

  /** The instance's ring buffer overflowed (then edges() is incomplete). */
  overrun(): number {
    return readdirSync(join(this.dir, 'per_cpu')).reduce((n, cpu) => {
      const stats = readFileSync(join(this.dir, 'per_cpu', cpu, 'stats'), 'utf8');
      return n + Number(/overrun: (\d+)/.exec(stats)?.[1] ?? 0);
    }, 0);
  }

  close(): void {
    try {
      writeFileSync(join(this.dir, 'events/gpio/gpio_value/enable'), '0');
      rmdirSync(this.dir);
    } catch {
      /* best effort */
    }
  }
}

interface Sample {
  line: number;
  level: 0 | 1;
  /** The sample that saw the new level started at t and had read the lines by t2. */
  t: bigint;
  t2: bigint;
  /** The sample before (which still saw the old level). */
  prev: bigint;
}

/** Samples simulator levels in a worker thread: level changes, and the stalls between samples. */
class Probe {
  readonly changes: Sample[] = [];
  /** Intervals longer than GAP_MS without a sample (the emulated machine stalled). */
  readonly gaps: { from: bigint; to: bigint }[] = [];
  static readonly GAP_MS = 10;
  private readonly levels = new Map<number, 0 | 1>();
  private readonly flag = new Int32Array(new SharedArrayBuffer(4));
  private readonly worker: Worker;
  private done?: Promise<void>;
  samples = 0;

  constructor(env: HilEnv, lines: number[], everyMs = 2) {
    const code = `
      const { workerData, parentPort } = require('node:worker_threads');
      const { readFileSync } = require('node:fs');
      const flag = new Int32Array(workerData.flag);
      const last = workerData.paths.map(() => -1);
      const gapNs = BigInt(workerData.gapMs) * 1000000n;
      let prev = 0n, samples = 0;
      while (Atomics.load(flag, 0) === 0) {
        const t = process.hrtime.bigint();
        if (prev && t - prev > gapNs) parentPort.postMessage({ gap: [prev, t] });
        for (let i = 0; i < workerData.paths.length; i++) {
          const v = readFileSync(workerData.paths[i], 'utf8').trim() === '1' ? 1 : 0;
          if (v !== last[i]) { last[i] = v; parentPort.postMessage({ i, level: v, t, t2: process.hrtime.bigint(), prev }); }
        }
        samples++;
        prev = t;
        Atomics.wait(flag, 0, 0, workerData.everyMs);
      }
      parentPort.postMessage({ done: samples });`;
    this.worker = new Worker(code, {
      eval: true,
      workerData: { flag: this.flag.buffer, paths: lines.map((l) => `${env.sim}/sim_gpio${l}/value`), everyMs, gapMs: Probe.GAP_MS },
    });
    this.done = new Promise((resolve, reject) => {
      this.worker.on('error', reject);
      this.worker.on('message', (m: { done?: number; gap?: [bigint, bigint]; i: number; level: 0 | 1; t: bigint; t2: bigint; prev: bigint }) => {
        if (m.done !== undefined) {
          this.samples = m.done;
          return resolve();
        }
        if (m.gap) return void this.gaps.push({ from: m.gap[0], to: m.gap[1] });
        const line = lines[m.i]!;
        this.levels.set(line, m.level);
        this.changes.push({ line, level: m.level, t: m.t, t2: m.t2, prev: m.prev });
      });
    });
  }

  /** The level last seen (undefined before the first sample). */
  level(line: number): 0 | 1 | undefined {
    return this.levels.get(line);
  }

  of(line: number): Sample[] {
    return this.changes.filter((x) => x.line === line);
  }

  /** Whether sampling stalled (longer than GAP_MS) at some point of [from, to]. */
  stalledDuring(from: bigint, to: bigint): boolean {
    return this.gaps.some((g) => g.from <= to && g.to >= from);
  }

  maxGapMs(): number {
    return this.gaps.reduce((m, g) => Math.max(m, Number(g.to - g.from) / 1e6), 0);
  }

  async stop(): Promise<void> {
    if (!this.done) return;
    Atomics.store(this.flag, 0, 1);
    Atomics.notify(this.flag, 0);
    const d = this.done;
    this.done = undefined;
    await d;
    await this.worker.terminate();
  }
}

/** vivid's picture, set through V4L2 controls on a second file handle (allowed while streaming). */
class Vivid {
  private readonly saved = new Map<number, number>();
  private constructor(private readonly dev: V4l2Device) {}

  static async open(path: string): Promise<Vivid> {
    return new Vivid(await loadNative().v4l2.open(path));
  }

  async set(control: string, item: string): Promise<void> {
    const c = (await this.dev.controls()).find((x) => x.name === control);
    assert.ok(c, `vivid has a '${control}' control`);
    const m = c.menu?.find((x) => x.name === item);
    assert.ok(m, `'${control}' offers '${item}': ${c.menu?.map((x) => x.name).join(', ')}`);
    if (!this.saved.has(c.id)) this.saved.set(c.id, c.value);
    await this.dev.setControl(c.id, m.index);
  }

  /** Put back what was changed (later scenarios expect vivid's default colour bars with text). */
  async restore(): Promise<void> {
    for (const [id, v] of this.saved) await this.dev.setControl(id, v).catch(() => {});
    this.saved.clear();
    this.dev.close();
  }
}

// ── the scenario ───────────────────────────────────────────────────────────────────────────────

interface Inspection {
  partId: string;
  seq: number;
  trigger: string;
  triggeredAt: string;
  verdict: 'pass' | 'reject' | null;
  action: 'pass' | 'divert';
  failSafe: boolean;
  reason: string | null;
  model: { name: string } | null;
  stagesMs: { frame: number | null; decided: number | null; gate: number | null };
}

interface LogRecord {
  time?: string;
  level?: string;
  msg?: string;
  [k: string]: unknown;
}

interface Part {
  index: number;
  pattern: (typeof PATTERNS)[number];
  /** Just before the photo-eye went up: the agent's trigger is after this, so its gate too. */
  driveNs: bigint;
  /** driveNs + travel: the earliest the part can reach the gate. */
  gateLowNs: bigint;
  /** The ready output as the simulator showed it at the trigger. */
  readyAtTrigger: 0 | 1;
  msg?: Inspection;
  /** The agent's own gate time (from the message's triggeredAt), on CLOCK_MONOTONIC. */
  gateNs?: bigint;
  /** The agent raised a `missed` alarm: the part reached the gate before its divert was scheduled. */
  missed?: boolean;
}

/**
 * One scenario: the run happens in before(), then one test per property. The agent's log is kept
 * in /tmp/hil-agent-<name> and its tail printed when a check fails.
 */
export function agentLineScenario(opts: AgentLineOptions): void {
  const env = hilEnv();
  const N = opts.parts ?? 6;
  const station = `hil-${opts.name}`;
  const prefix = `linesight/hil/${station}/`;
  const dir = `/tmp/hil-agent-${opts.name}`;
  const logFile = join(dir, 'agent.log');
  const parts: Part[] = [];
  const logs: LogRecord[] = [];
  const inspections = new Map<string, Inspection>();
  const alarms: { kind: string; partId?: string }[] = [];
  const statuses: string[] = [];
  let broker: EmbeddedBroker | undefined;
  let sub: MqttClient | undefined;
  let probe: Probe | undefined;
  let trace: GpioTrace | undefined;
  let edges = new Map<number, Edge[]>();
  let vivid: Vivid | undefined;
  let agent: ChildProcess | undefined;
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnedAt = 0n;
  let sigtermAt = 0n;
  let exitedAt = 0n;
  let levelsAfterExit: Record<number, 0 | 1> = {};
  let unseenPulses = 0;
  let failed = false;
  // Wall clock - CLOCK_MONOTONIC, for the messages' triggeredAt (both clocks are the guest's).
  let wallToMonoNs = wallMinusMonoAtMost();
  process.once('exit', () => console.log(`    ${opts.name}: process exit ${process.uptime().toFixed(1)}s`));
  // Times in the summary are seconds since this node process started.
  const t0 = Date.now() - process.uptime() * 1000;
  const marks: string[] = [];
  const mark = (what: string): void => void marks.push(`${what} ${((Date.now() - t0) / 1000).toFixed(1)}s`);
  const startup = (): string =>
    ['', 'model loaded', 'ffmpeg camera started', 'v4l2 camera started', 'line running']
      .map((m) => {
        const r = logs.find((x) => (m === '' || x.msg === m) && typeof x.time === 'string');
        return r ? `${m || `first log line (${r.msg})`} ${((Date.parse(r.time!) - t0) / 1000).toFixed(1)}s` : '';
      })
      .filter(Boolean)
      .join(', ');

  const describeParts = (): string =>
    parts
      .map((p) => {
        const m = p.msg;
        const what = m
          ? `${m.failSafe ? m.reason : m.verdict}/${m.action}${p.missed ? '/missed' : ''} (frame ${Math.round(m.stagesMs.frame ?? -1)}, decided ${Math.round(m.stagesMs.decided ?? -1)} ms)`
          : 'none';
        return `#${p.index + 1} ${p.pattern.expect === 'reject' ? 'bars' : 'black'}→${what}`;
      })
      .join(' ');

  const check = (name: string, fn: () => void | Promise<void>): void => {
    test(name, async () => {
      try {
        await fn();
      } catch (err) {
        failed = true;
        throw err;
      }
    });
  };

  const pulsesOf = (line: number): { rise: bigint; fall?: bigint }[] => {
    const out: { rise: bigint; fall?: bigint }[] = [];
    for (const e of edges.get(line) ?? []) {
      if (e.level === 1) out.push({ rise: e.tNs });
      else if (out.length && out.at(-1)!.fall === undefined) out.at(-1)!.fall = e.tNs;
    }
    return out;
  };

  describe(`agent on ${opts.gpio} GPIO + ${opts.name.split('-')[1]} camera (gpio-sim, vivid)`, () => {
    before(async () => {
      try {
        await run();
      } catch (err) {
        failed = true;
        throw err;
      }
    });

    after(async () => {
      mark('checked');
      if (agent && agent.exitCode === null && agent.signalCode === null) {
        agent.kill('SIGKILL');
        await once(agent, 'exit').catch(() => {});
      }
      await probe?.stop().catch(() => {});
      trace?.close();
      await sub?.endAsync().catch(() => {});
      await broker?.close().catch(() => {});
      await vivid?.restore().catch(() => {});
      for (const l of [PHOTO_EYE, DIVERT, READY]) simDrive(env, l, 0);
      if (opts.gpio === 'onoff') unexportLeftovers(env);
      mark('cleaned up');
      console.log(`    ${opts.name}: ${describeParts()}`);
      console.log(
        `    ${opts.name}: ${[...marks, startup()].join(', ')}; probe ${probe?.samples ?? 0} samples, ${probe?.gaps.length ?? 0} stalls > ${Probe.GAP_MS} ms (longest ${probe?.maxGapMs().toFixed(0) ?? '?'} ms), ${unseenPulses} pulse(s) between samples`,
      );
      if (failed) {
        console.log(`    agent exit ${JSON.stringify(exit)}; log ${logFile}, last lines:`);
        for (const r of logs.slice(-25)) console.log(`    | ${JSON.stringify(r).slice(0, 300)}`);
      } else {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    check('the agent starts, inspects every photo-eye part and stops cleanly on SIGTERM (exit 0, no error logged)', () => {
      const running = logs.find((r) => r.msg === 'line running');
      assert.ok(running, 'the agent logged "line running"');
      assert.equal(running.gpio, opts.gpio);
      assert.ok(logs.some((r) => r.msg === 'photo-eye armed' && r.chip === env.label && r.line === PHOTO_EYE), 'photo-eye armed by chip label and offset');
      assert.deepEqual(exit, { code: 0, signal: null }, 'graceful stop');
      const errors = logs.filter((r) => r.level === 'error' || r.level === 'text');
      assert.deepEqual(errors, [], 'no error-level (or non-JSON) log lines');
    });

    check('every part is published once over MQTT, with its own id, in trigger order', () => {
      const msgs = [...inspections.values()].sort((a, b) => a.seq - b.seq);
      assert.equal(msgs.length, N, `${msgs.length} inspection messages for ${N} parts: ${describeParts()}`);
      msgs.forEach((m, i) => {
        const p = parts[i]!;
        assert.equal(p.msg, m);
        assert.equal(m.seq, i + 1);
        assert.equal(m.partId, `${station}-b1-${String(i + 1).padStart(6, '0')}`);
        assert.equal(m.trigger, 'gpio');
        assert.equal(m.stagesMs.gate, TRAVEL_MS, 'gate = trigger + line.travelMs');
        // The agent's trigger time lies after the photo-eye went up.
        assert.ok(p.gateNs! >= p.gateLowNs - SLACK, `part #${i + 1} triggered ${ms(p.gateLowNs - p.gateNs!)} ms before the photo-eye went up`);
        // A part diverted fail-safe before its verdict (late) names no model.
        if (m.verdict) assert.equal(m.model?.name, 'film-demo');
        // A part is passed only with a pass verdict; everything else is diverted.
        assert.equal(m.action, m.verdict === 'pass' && !m.failSafe ? 'pass' : 'divert', `action of ${m.partId}`);
      });
      assert.ok(statuses.includes('online'), `status online seen (${statuses.join(',')})`);
      assert.equal(statuses.at(-1), 'offline');
    });

    check('the divert output pulses for exactly the diverted parts, each at/after its gate time and before the next gate', () => {
      assert.equal(parts.length, N);
      assert.equal(trace!.overrun(), 0, 'the trace buffer kept every event');
      const pulses = pulsesOf(DIVERT);
      const early = pulses.filter((x) => x.rise < parts[0]!.gateLowNs);
      assert.equal(early.length, 0, `${early.length} divert pulse(s) before the first part reached the gate`);
      for (const [i, p] of parts.entries()) {
        const end = parts[i + 1]?.gateLowNs ?? sigtermAt;
        const mine = pulses.filter((x) => x.rise >= p.gateLowNs && x.rise < end);
        const what = `part #${i + 1} (${p.msg?.partId}, ${p.msg?.failSafe ? p.msg.reason : p.msg?.verdict}, action ${p.msg?.action})`;
        if (p.msg?.action === 'divert' && p.missed) {
          // Decided after its gate (the guest stalled): the agent says so (alarm `missed`) and
          // pulses only if part of the pulse is still ahead.
          assert.ok(mine.length <= 1, `${what}: ${mine.length} pulses`);
        } else {
          assert.equal(mine.length, p.msg?.action === 'divert' ? 1 : 0, `${what}: ${mine.length} divert pulse(s) between its gate and the next; parts: ${describeParts()}`);
        }
        for (const x of mine) {
          assert.ok(x.rise >= p.gateNs! - SLACK, `${what}: pulse ${ms(p.gateNs! - x.rise)} ms before its gate`);
          assert.ok(x.fall !== undefined && x.fall < end, `${what}: the pulse ended before the next part's gate`);
        }
      }
      const diverted = parts.filter((p) => p.msg?.action === 'divert' && !p.missed).length;
      assert.ok(pulses.length >= diverted && pulses.length <= parts.filter((p) => p.msg?.action === 'divert').length, 'no other pulses');
      assert.deepEqual(
        pulses.filter((x) => x.rise >= sigtermAt),
        [],
        'no divert pulse after SIGTERM',
      );
    });

    check('the simulator shows the divert and ready levels the agent wrote, and the divert pulses', () => {
      // The levels the probe saw follow the writes the kernel traced, in order (the probe may miss
      // a short-lived level between two samples, never see one that was not written): each change
      // it saw is the next traced write of that level, stamped before the sample read it.
      const shown = new Map<number, Set<number>>();
      for (const line of [DIVERT, READY]) {
        const traced = edges.get(line)!;
        const idx = new Set<number>();
        let at = -1;
        for (const c of probe!.of(line)) {
          if (at === -1 && c.level === 0 && c.prev === 0n) continue; // the first sample: low
          const next = traced.findIndex((e, k) => k > at && e.level === c.level);
          assert.ok(next >= 0, `line ${line} read ${c.level} at ${ms(c.t)} ms without a write of ${c.level} traced after the last one it showed`);
          assert.ok(traced[next]!.tNs <= c.t2 + SLACK, `line ${line} read ${c.level} at ${ms(c.t)} ms, before that write (${ms(traced[next]!.tNs)} ms)`);
          at = next;
          idx.add(next);
        }
        shown.set(line, idx);
      }
      // Each divert pulse was seen high, unless the probe stalled during it (the emulated machine
      // was descheduled: then the pulse may have come and gone between two samples).
      const traced = edges.get(DIVERT)!;
      const pulses = traced.flatMap((e, k) => (e.level === 1 ? [{ k, rise: e.tNs, fall: traced[k + 1]?.tNs ?? sigtermAt }] : []));
      const seen = pulses.filter((x) => shown.get(DIVERT)!.has(x.k));
      const unseen = pulses.filter((x) => !seen.includes(x) && !probe!.stalledDuring(x.rise, x.fall));
      assert.deepEqual(unseen.map((x) => `${ms(x.rise)} ms`), [], 'divert pulses the simulator never showed high, with samples all along');
      assert.ok(pulses.length === 0 || seen.length > 0, 'the simulator showed the divert pulses');
      unseenPulses = pulses.length - seen.length;
      assert.deepEqual(levelsAfterExit, { [DIVERT]: 0, [READY]: 0 }, 'both outputs low after the exit');
    });

    check("each part's verdict is its own picture's (colour bars rejected, black passed), and both occur", () => {
      // A part decided fail-safe (late: the guest stalled) has no verdict to compare; the checks
      // above still hold for it (published, diverted).
      const judged = parts.filter((p) => p.msg && !p.msg.failSafe);
      const wrong = judged.filter((p) => p.msg!.verdict !== p.pattern.expect);
      assert.equal(wrong.length, 0, `parts whose verdict is not their pattern's: ${describeParts()}`);
      for (const want of ['reject', 'pass'] as const) {
        assert.ok(
          judged.some((p) => p.msg!.verdict === want),
          `no part got a '${want}' verdict in time, so the run shows nothing about ${want === 'pass' ? 'passed parts' : 'rejects'}: ${describeParts()}`,
        );
      }
    });

    check('the ready output is high while running, driven low on SIGTERM before the exit, and all lines are free after it', async () => {
      const ready = edges.get(READY)!;
      const rise = ready.find((e) => e.level === 1);
      assert.ok(rise && rise.tNs > spawnedAt, 'ready written high after the start');
      assert.ok(rise.tNs < parts[0]!.driveNs, 'ready high before the first part');
      const fall = ready.find((e) => e.tNs > rise.tNs);
      assert.ok(fall && fall.level === 0 && fall.tNs >= sigtermAt, `ready stayed high until SIGTERM${fall ? ` (went low ${ms(sigtermAt - fall.tNs)} ms before)` : ''}`);
      assert.ok(fall.tNs < exitedAt, 'ready written low before the agent exited');
      assert.equal(ready.filter((e) => e.tNs > fall.tNs).length, 0, 'no ready write after that');
      assert.deepEqual(
        parts.map((p) => p.readyAtTrigger),
        parts.map(() => 1),
        'the simulator showed ready high at every trigger',
      );
      const g = new ChardevGpio();
      try {
        for (const l of [PHOTO_EYE, DIVERT, READY]) {
          const info = await g.lineInfo({ chip: env.label, line: l });
          assert.equal(info.used, false, `line ${l} free after the exit (consumer '${info.consumer}')`);
        }
      } finally {
        await g.close();
      }
    });
  });

  async function run(): Promise<void> {
    mark('start');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    for (const l of [PHOTO_EYE, DIVERT, READY]) simDrive(env, l, 0);
    assert.ok(env.tracefs, 'HIL_TRACEFS: the guest mounts tracefs');
    const gpios = new Map([DIVERT, READY].map((l) => [resolveSysfsLine({ chip: env.label, line: l }).gpio, l]));
    trace = new GpioTrace(env.tracefs, `hil-${opts.name}`, gpios);

    // The agent first: its start (loading node packages over 9p under TCG) is the long part, so the
    // rest of the line comes up meanwhile. Its MQTT client connects (and retries) by itself.
    const port = await freePort();
    const cfg = {
      station: { line: 'hil', id: station, stateDir: join(dir, 'state') },
      camera: opts.camera(env),
      trigger: { mode: 'gpio', gpio: { input: { chip: env.label, line: PHOTO_EYE }, edge: 'rising', debounceMs: 20 } },
      model: { path: join(env.root, 'models/film-demo'), bundledDir: join(env.root, 'models'), workers: 1 },
      line: { travelMs: TRAVEL_MS, marginMs: MARGIN_MS, pulseMs: PULSE_MS, maxInFlight: 8 },
      gpio: { backend: opts.gpio, divert: { chip: env.label, line: DIVERT }, ready: { chip: env.label, line: READY } },
      mqtt: { url: `mqtt://127.0.0.1:${port}`, protocolVersion: 4 },
      http: { enabled: false },
      log: { level: 'info' },
    };
    const cfgFile = join(dir, 'config.yaml');
    writeFileSync(cfgFile, JSON.stringify(cfg, null, 2)); // JSON is YAML
    mark('spawn');
    spawnedAt = now();
    const child = (agent = spawn(process.execPath, [env.agent, 'run', '-c', cfgFile], {
      cwd: env.root,
      env: { ...process.env, ...opts.agentEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    }));
    const exited = new Promise<void>((resolve) =>
      child.once('exit', (code, signal) => {
        exit = { code, signal };
        exitedAt = now();
        resolve();
      }),
    );
    let partial = '';
    const onData = (d: Buffer): void => {
      appendFileSync(logFile, d);
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop()!;
      for (const line of lines) {
        if (!line.trim()) continue;
        try {
          logs.push(JSON.parse(line) as LogRecord);
        } catch {
          logs.push({ level: 'text', msg: line });
        }
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);

    probe = new Probe(env, [DIVERT, READY]);
    // Loaded only now, while the agent starts: each package takes seconds to load under TCG
    // (bundle.mjs splits the bundle so that these imports stay lazy).
    const [{ default: mqtt }, { startEmbeddedBroker }] = await Promise.all([import('mqtt'), import('../../src/publish/broker.js')]);
    vivid = await Vivid.open(env.video);
    await vivid.set('OSD Text Mode', 'None');
    await vivid.set('Test Pattern', PATTERNS[0].name);
    broker = await startEmbeddedBroker({ port, tryNextPorts: false });
    sub = await mqtt.connectAsync(broker.url, { clientId: `hil-sub-${process.pid}`, protocolVersion: 4 });
    sub.on('message', (topic, payload) => {
      const m = JSON.parse(payload.toString()) as Record<string, unknown>;
      if (topic === `${prefix}inspection`) inspections.set(m.partId as string, m as unknown as Inspection);
      if (topic === `${prefix}alarm`) alarms.push({ kind: String(m.kind), partId: m.partId as string | undefined });
      if (topic === `${prefix}status`) statuses.push(String(m.state));
    });
    await sub.subscribeAsync(`${prefix}#`, { qos: 1 });
    await until(() => probe!.level(DIVERT) !== undefined, 'the probe started', 20_000);
    mark('line up');

    await until(
      () => {
        if (exit) throw new Error(`the agent exited during start (${JSON.stringify(exit)}): ${logs.filter((r) => r.level !== 'info').map((r) => r.msg).slice(-3).join(' | ')}`);
        return logs.some((r) => r.msg === 'line running');
      },
      'the agent to log "line running"',
      200_000,
      50,
    );
    mark('running');
    await until(() => simLevel(env, READY) === 1, 'the ready output high', 10_000);

    for (let i = 0; i < N; i++) {
      const pattern = PATTERNS[i % PATTERNS.length]!;
      if (i > 0) await vivid.set('Test Pattern', pattern.name);
      await sleep(SETTLE_MS);
      const readyAtTrigger = simLevel(env, READY);
      const driveNs = now();
      const part: Part = { index: i, pattern, driveNs, gateLowNs: driveNs + BigInt(TRAVEL_MS) * MS, readyAtTrigger };
      parts.push(part);
      simDrive(env, PHOTO_EYE, 1);
      await sleep(EYE_HIGH_MS);
      simDrive(env, PHOTO_EYE, 0);
      // The next picture only once this part is decided (its frame is long taken by then).
      await until(() => inspections.size > i, `the inspection of part #${i + 1}`, TRAVEL_MS + 15_000, 20);
      part.msg = [...inspections.values()].find((x) => x.seq === i + 1);
    }
    // The agent's gate times, from triggeredAt (ms, rounded down) and an upper bound of the clocks'
    // offset: never later than the real gate, so "pulse at/after its gate" cannot fail falsely.
    const offset = wallMinusMonoAtMost();
    if (offset < wallToMonoNs) wallToMonoNs = offset;
    for (const p of parts) if (p.msg) p.gateNs = BigInt(Date.parse(p.msg.triggeredAt)) * MS - wallToMonoNs + BigInt(TRAVEL_MS) * MS;
    mark('parts');
    // Let the last gate pass and its pulse end.
    const lastEnd = parts.at(-1)!.gateLowNs + BigInt(PULSE_MS + 300) * MS;
    while (now() < lastEnd) await sleep(50);
    await until(() => simLevel(env, DIVERT) === 0, 'the divert output low after the last pulse', 10_000);

    sigtermAt = now();
    child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([exited, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('the agent did not exit within 30 s of SIGTERM')), 30_000)))]);
    clearTimeout(timer);
    mark('exited');
    levelsAfterExit = { [DIVERT]: simLevel(env, DIVERT), [READY]: simLevel(env, READY) };
    await until(() => inspections.size >= N && statuses.at(-1) === 'offline', 'the last messages', 5000).catch(() => {});
    for (const p of parts) p.missed = alarms.some((a) => a.kind === 'missed' && a.partId === p.msg?.partId);
    await probe.stop();
    edges = trace.edges();
  }
}

/**
 * An upper bound of (CLOCK_REALTIME - CLOCK_MONOTONIC) in ns: Date.now() (ms, rounded down) read
 * after an hrtime reading, tightest of many tries (a stall between the reads only loosens it).
 */
function wallMinusMonoAtMost(): bigint {
  let best: bigint | undefined;
  for (let i = 0; i < 200; i++) {
    const before = now();
    const bound = BigInt(Date.now()) * MS + MS - before;
    if (best === undefined || bound < best) best = bound;
  }
  return best!;
}

/** A crashed onoff agent leaves its lines exported, which would make later scenarios' lines busy. */
function unexportLeftovers(env: HilEnv): void {
  for (const l of [PHOTO_EYE, DIVERT, READY]) {
    try {
      const { gpio } = resolveSysfsLine({ chip: env.label, line: l });
      if (existsSync(`/sys/class/gpio/gpio${gpio}`)) writeFileSync('/sys/class/gpio/unexport', String(gpio));
    } catch {
      /* best effort */
    }
  }
}
