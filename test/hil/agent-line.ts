// The whole agent on the virtual line-side device: `linesight run -c FILE` (the CLI from the
// checkout's sources, bundled by bundle.mjs like dist/) in a child process, against the kernel's
// gpio-sim and vivid.
//
// The scenario plays the rest of the line:
//  - the photo-eye: gpio-sim line PHOTO_EYE, pulled up and down through the simulator's sysfs;
//  - the picture: vivid's test pattern, switched before each part between colour bars (the bundled
//    film-demo model rejects them: strong edges) and plain black (it passes them), with vivid's OSD
//    text off (text is an "anomaly" too);
//  - the central system: an embedded MQTT broker and a subscriber collecting `…/inspection`;
//  - a probe on the divert and ready outputs: a worker thread sampling the simulator's
//    `sim_gpioN/value` every couple of ms (gpio-sim has no events for outputs).
// Then it checks behaviour only (TCG is no timing reference): every part published once with its
// id; the divert output pulsed for exactly the parts whose own message says `divert`, each pulse
// at or after that part's gate time and before the next part's; the ready output high while
// running and driven low on SIGTERM while the agent still holds it; lines released on exit.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { appendFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { after, before, describe, test } from 'node:test';
import mqtt from 'mqtt';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../src/publish/broker.js';
import { loadNative, type V4l2Device } from '../../src/native/addon.js';
import { resolveSysfsLine } from '../../src/gpio/sysfs.js';
import { hilEnv, simDrive, simLevel, sleep, until, type HilEnv } from './lib.js';

export const PHOTO_EYE = 0;
export const DIVERT = 1;
export const READY = 2;

const MS = 1_000_000n;
const now = (): bigint => process.hrtime.bigint();

export interface AgentLineOptions {
  /** Scenario name: station id and temp folder. */
  name: string;
  gpio: 'onoff' | 'chardev';
  /** The config's camera section (the scenario's source on vivid). */
  camera: (env: HilEnv) => Record<string, unknown>;
  /** Extra environment for the agent (e.g. LINESIGHT_NATIVE=0). */
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

const PATTERNS = [
  { name: '75% Colorbar', expect: 'reject' },
  { name: '100% Black', expect: 'pass' },
] as const;

interface Transition {
  line: number;
  value: 0 | 1;
  /** Sample time that saw the new level (the change happened after `prev`). */
  t: bigint;
  prev: bigint;
}

/** Samples simulator output levels in a worker thread (independent of this thread's event loop). */
class Probe {
  readonly transitions: Transition[] = [];
  private readonly levels = new Map<number, 0 | 1>();
  private readonly flag = new Int32Array(new SharedArrayBuffer(4));
  private readonly worker: Worker;
  private done?: Promise<{ samples: number; maxGapMs: number }>;
  stats = { samples: 0, maxGapMs: 0 };

  constructor(env: HilEnv, readonly lines: number[], everyMs = 2) {
    const code = `
      const { workerData, parentPort } = require('node:worker_threads');
      const { readFileSync } = require('node:fs');
      const flag = new Int32Array(workerData.flag);
      const last = workerData.paths.map(() => -1);
      let prev = process.hrtime.bigint(), samples = 0, maxGap = 0n;
      while (Atomics.load(flag, 0) === 0) {
        const t = process.hrtime.bigint();
        if (samples > 0 && t - prev > maxGap) maxGap = t - prev;
        for (let i = 0; i < workerData.paths.length; i++) {
          const v = readFileSync(workerData.paths[i], 'utf8').trim() === '1' ? 1 : 0;
          if (v !== last[i]) { last[i] = v; parentPort.postMessage({ i, value: v, t, prev }); }
        }
        samples++;
        prev = t;
        Atomics.wait(flag, 0, 0, workerData.everyMs);
      }
      parentPort.postMessage({ done: true, samples, maxGapMs: Number(maxGap) / 1e6 });`;
    this.worker = new Worker(code, {
      eval: true,
      workerData: { flag: this.flag.buffer, paths: lines.map((l) => `${env.sim}/sim_gpio${l}/value`), everyMs },
    });
    this.done = new Promise((resolve, reject) => {
      this.worker.on('error', reject);
      this.worker.on('message', (m: { done?: true; i: number; value: 0 | 1; t: bigint; prev: bigint; samples: number; maxGapMs: number }) => {
        if (m.done) return resolve({ samples: m.samples, maxGapMs: m.maxGapMs });
        const line = lines[m.i]!;
        this.levels.set(line, m.value);
        this.transitions.push({ line, value: m.value, t: m.t, prev: m.prev });
      });
    });
  }

  /** The level last seen (undefined before the first sample arrived). */
  level(line: number): 0 | 1 | undefined {
    return this.levels.get(line);
  }

  of(line: number, from = 0n, to = 1n << 62n): Transition[] {
    return this.transitions.filter((x) => x.line === line && x.t >= from && x.t < to);
  }

  async stop(): Promise<void> {
    if (!this.done) return;
    Atomics.store(this.flag, 0, 1);
    Atomics.notify(this.flag, 0);
    const d = this.done;
    this.done = undefined;
    this.stats = await d;
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

interface Inspection {
  partId: string;
  seq: number;
  trigger: string;
  verdict: 'pass' | 'reject' | null;
  action: 'pass' | 'divert';
  failSafe: boolean;
  reason: string | null;
  score: number | null;
  model: { name: string } | null;
  stagesMs: { frame: number | null; decided: number | null; gate: number | null };
}

interface LogRecord {
  level?: string;
  msg?: string;
  [k: string]: unknown;
}

interface Part {
  index: number;
  pattern: (typeof PATTERNS)[number];
  /** Just before the photo-eye went up: the agent's trigger time is after this, so its gate too. */
  driveNs: bigint;
  gateLowNs: bigint;
  msg?: Inspection;
}

/**
 * One scenario: starts the run in before(), then one test per property. The run's artefacts (agent
 * log, config) are in /tmp/hil-agent-<name>; the log's tail is printed when a check fails.
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
  const statuses: string[] = [];
  let broker: EmbeddedBroker | undefined;
  let sub: mqtt.MqttClient | undefined;
  let probe: Probe | undefined;
  let vivid: Vivid | undefined;
  let agent: ChildProcess | undefined;
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let runningAt = 0n;
  let sigtermAt = 0n;
  let exitedAt = 0n;
  let failed = false;
  const t0 = Date.now();
  const marks: string[] = [];
  const mark = (what: string): void => void marks.push(`${what} ${((Date.now() - t0) / 1000).toFixed(1)}s`);
  /** When the agent logged its start-up steps, from its log's own timestamps. */
  const startup = (): string =>
    ['model loaded', 'ffmpeg camera started', 'v4l2 camera started', 'photo-eye armed', 'line running']
      .map((m) => {
        const r = logs.find((x) => x.msg === m && typeof x.time === 'string');
        return r ? `${m} ${((Date.parse(r.time as string) - t0) / 1000).toFixed(1)}s` : '';
      })
      .filter(Boolean)
      .join(', ');

  const describeParts = (): string =>
    parts
      .map((p) => {
        const m = p.msg;
        return `#${p.index + 1} ${p.pattern.expect === 'reject' ? 'bars' : 'black'}→${m ? `${m.failSafe ? m.reason : m.verdict}/${m.action}@${Math.round(m.stagesMs.decided ?? -1)}ms` : 'none'}`;
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
      if (agent && agent.exitCode === null && agent.signalCode === null) {
        agent.kill('SIGKILL');
        await once(agent, 'exit').catch(() => {});
      }
      await probe?.stop().catch(() => {});
      await sub?.endAsync().catch(() => {});
      await broker?.close().catch(() => {});
      await vivid?.restore().catch(() => {});
      for (const l of [PHOTO_EYE, DIVERT, READY]) simDrive(env, l, 0);
      if (opts.gpio === 'onoff') unexportLeftovers(env);
      console.log(`    ${opts.name}: ${describeParts()}; probe ${probe?.stats.samples ?? 0} samples, max gap ${probe?.stats.maxGapMs.toFixed(1) ?? '?'} ms`);
      console.log(`    ${opts.name}: ${[...marks, startup()].join(', ')}`);
      if (failed) {
        console.log(`    agent exit ${JSON.stringify(exit)}; log ${logFile}, last lines:`);
        for (const r of logs.slice(-25)) console.log(`    | ${JSON.stringify(r).slice(0, 300)}`);
      } else {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    check('the agent starts, inspects every photo-eye part and stops cleanly on SIGTERM (exit 0, no error logged)', () => {
      assert.ok(runningAt > 0n, 'the agent logged "line running"');
      assert.deepEqual(exit, { code: 0, signal: null }, 'graceful stop');
      const errors = logs.filter((r) => r.level === 'error');
      assert.deepEqual(errors, [], 'no error-level log lines');
      const running = logs.find((r) => r.msg === 'line running');
      assert.equal(running?.gpio, opts.gpio);
      assert.ok(logs.some((r) => r.msg === 'photo-eye armed' && r.chip === env.label && r.line === PHOTO_EYE), 'photo-eye armed by chip label and offset');
    });

    check('every part is published once over MQTT, with its own id, in trigger order', () => {
      const msgs = [...inspections.values()].sort((a, b) => a.seq - b.seq);
      assert.equal(msgs.length, N, `${msgs.length} inspection messages for ${N} parts: ${describeParts()}`);
      msgs.forEach((m, i) => {
        assert.equal(m.seq, i + 1);
        assert.equal(m.partId, `${station}-b1-${String(i + 1).padStart(6, '0')}`);
        assert.equal(m.trigger, 'gpio');
        assert.equal(m.stagesMs.gate, TRAVEL_MS, 'gate = trigger + line.travelMs');
        // A part diverted fail-safe before its verdict (late) names no model.
        if (m.verdict) assert.equal(m.model?.name, 'film-demo');
        // A part is passed only with a pass verdict; everything else is diverted.
        assert.equal(m.action, m.verdict === 'pass' && !m.failSafe ? 'pass' : 'divert', `action of ${m.partId}`);
        assert.equal(parts[i]!.msg, m);
      });
      assert.ok(statuses.includes('online'), `status online seen (${statuses.join(',')})`);
      assert.equal(statuses.at(-1), 'offline');
    });

    check('the divert output pulses for exactly the diverted parts, each at/after its gate time and before the next gate', () => {
      assert.equal(parts.length, N);
      const rises = probe!.of(DIVERT).filter((x) => x.value === 1);
      const firstGate = parts[0]!.gateLowNs;
      const early = rises.filter((r) => r.t < firstGate);
      assert.deepEqual(early.length, 0, `${early.length} divert pulse(s) before the first part's gate`);
      for (const [i, p] of parts.entries()) {
        const end = parts[i + 1]?.gateLowNs ?? sigtermAt;
        const inWindow = rises.filter((r) => r.t >= p.gateLowNs && r.t < end);
        const want = p.msg?.action === 'divert' ? 1 : 0;
        assert.equal(
          inWindow.length,
          want,
          `part #${i + 1} (${p.msg?.partId}, action ${p.msg?.action}): ${inWindow.length} divert pulse(s) between its gate and the next; parts: ${describeParts()}`,
        );
        if (want) {
          // The pulse also ended before the next part's gate (one pulse per part, not a held gate).
          const fall = probe!.of(DIVERT, inWindow[0]!.t, end).find((x) => x.value === 0);
          assert.ok(fall, `the divert pulse of part #${i + 1} ended before the next gate`);
        }
      }
      const diverted = parts.filter((p) => p.msg?.action === 'divert').length;
      assert.equal(rises.filter((r) => r.t < sigtermAt).length, diverted, 'no other divert pulses while running');
    });

    check("each part's verdict is its own picture's (colour bars rejected, black passed), and both occur", () => {
      // A part decided fail-safe (late: the guest is slow) has no verdict to compare; the checks
      // above still hold for it (published, diverted).
      const judged = parts.filter((p) => p.msg && !p.msg.failSafe);
      const wrong = judged.filter((p) => p.msg!.verdict !== p.pattern.expect);
      assert.equal(wrong.length, 0, `parts whose verdict is not their pattern's: ${describeParts()}`);
      for (const want of ['reject', 'pass'] as const) {
        assert.ok(
          judged.some((p) => p.msg!.verdict === want),
          `no part was ${want}ed in time, so the run shows nothing about ${want === 'pass' ? 'passed parts (no pulse)' : 'rejects'}: ${describeParts()}`,
        );
      }
    });

    check('the ready output is high while running, driven low on SIGTERM while still held, and all lines are released on exit', () => {
      const ready = probe!.of(READY);
      const firstHigh = ready.find((x) => x.value === 1 && x.t >= runningAt - 5000n * MS);
      assert.ok(firstHigh, 'ready went high');
      assert.ok(firstHigh.t <= parts[0]!.driveNs, 'ready was high before the first part');
      const whileRunning = probe!.of(READY, firstHigh.t + 1n, sigtermAt);
      assert.deepEqual(whileRunning, [], 'ready stayed high from start to SIGTERM');
      // Before SIGTERM the simulator's pull on READY was turned up: while the agent holds the line
      // the pull does not show, so a low level before the exit is the agent driving it low; the
      // level goes back up when the line is released.
      const afterTerm = probe!.of(READY, sigtermAt);
      assert.equal(afterTerm[0]?.value, 0, `ready driven low after SIGTERM (transitions ${afterTerm.map((x) => x.value).join(',')})`);
      assert.ok(afterTerm[0]!.prev < exitedAt, 'ready went low before the agent exited');
      assert.equal(afterTerm.at(-1)?.value, 1, 'the ready line was released (the pull-up shows)');
      assert.deepEqual(probe!.of(DIVERT, sigtermAt).filter((x) => x.value === 1), [], 'no divert pulse after SIGTERM');
      assert.equal(simLevel(env, DIVERT), 0);
      if (opts.gpio === 'onoff') {
        for (const l of [PHOTO_EYE, DIVERT, READY]) {
          const { gpio } = resolveSysfsLine({ chip: env.label, line: l });
          assert.ok(!existsSync(`/sys/class/gpio/gpio${gpio}`), `sysfs gpio${gpio} (offset ${l}) unexported`);
        }
      }
    });
  });

  async function run(): Promise<void> {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    for (const l of [PHOTO_EYE, DIVERT, READY]) simDrive(env, l, 0);

    // The agent first: its start-up (loading node packages over 9p under TCG) is the long part, so
    // the rest of the line comes up meanwhile. Its MQTT client connects (and retries) by itself.
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
    vivid = await Vivid.open(env.video);
    await vivid.set('OSD Text Mode', 'None');
    await vivid.set('Test Pattern', PATTERNS[0].name);
    broker = await startEmbeddedBroker({ port, tryNextPorts: false });
    sub = await mqtt.connectAsync(broker.url, { clientId: `hil-sub-${process.pid}`, protocolVersion: 4 });
    sub.on('message', (topic, payload) => {
      const m = JSON.parse(payload.toString()) as Record<string, unknown>;
      if (topic === `${prefix}inspection`) inspections.set(m.partId as string, m as unknown as Inspection);
      if (topic === `${prefix}status`) statuses.push(String(m.state));
    });
    await sub.subscribeAsync(`${prefix}#`, { qos: 1 });
    await until(() => probe!.level(DIVERT) !== undefined, 'the probe started', 20_000);
    mark('line ready');

    await until(
      () => {
        if (exit) throw new Error(`the agent exited during start (${JSON.stringify(exit)}): ${logs.filter((r) => r.level !== 'info').map((r) => r.msg).slice(-3).join(' | ')}`);
        return logs.some((r) => r.msg === 'line running');
      },
      'the agent to log "line running"',
      200_000,
      50,
    );
    runningAt = now();
    mark('running');
    await until(() => probe!.level(READY) === 1, 'the ready output high', 10_000);

    for (let i = 0; i < N; i++) {
      const pattern = PATTERNS[i % PATTERNS.length]!;
      if (i > 0) await vivid.set('Test Pattern', pattern.name);
      await sleep(SETTLE_MS);
      const driveNs = now();
      const part: Part = { index: i, pattern, driveNs, gateLowNs: driveNs + BigInt(TRAVEL_MS) * MS };
      parts.push(part);
      simDrive(env, PHOTO_EYE, 1);
      await sleep(EYE_HIGH_MS);
      simDrive(env, PHOTO_EYE, 0);
      // The next picture only once this part is decided (its frame is long taken by then).
      await until(() => inspections.size > i, `the inspection of part #${i + 1}`, TRAVEL_MS + 15_000, 20);
      part.msg = [...inspections.values()].find((m) => m.seq === i + 1);
    }
    mark('parts');
    // Let the last gate pass and its pulse end.
    const lastEnd = parts.at(-1)!.gateLowNs + BigInt(PULSE_MS + 1000) * MS;
    while (now() < lastEnd) await sleep(50);
    await until(() => probe!.level(DIVERT) === 0, 'the divert output low after the last pulse', 10_000);

    // Stop: with the pull turned up, a low ready level before the exit can only be the agent's.
    writePull(env, READY, 'pull-up');
    await sleep(50);
    sigtermAt = now();
    child.kill('SIGTERM');
    await Promise.race([exited, sleep(30_000).then(() => Promise.reject(new Error('the agent did not exit within 30 s of SIGTERM')))]);
    mark('exited');
    // The release shows on the probe (pull-up); then the pull goes back down.
    await until(() => probe!.level(READY) === 1, 'the ready line released', 5000).catch(() => {});
    await until(() => inspections.size >= N && statuses.at(-1) === 'offline', 'the last messages', 5000).catch(() => {});
    await probe.stop();
    writePull(env, READY, 'pull-down');
  }
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const addr = srv.address();
  await new Promise<void>((r) => srv.close(() => r()));
  if (!addr || typeof addr !== 'object') throw new Error('no free port');
  return addr.port;
}

function writePull(env: HilEnv, line: number, pull: 'pull-up' | 'pull-down'): void {
  writeFileSync(`${env.sim}/sim_gpio${line}/pull`, pull);
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
