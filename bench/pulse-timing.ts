// How late does a divert pulse start? The native pulse thread (timerfd at an absolute
// CLOCK_MONOTONIC deadline, the engine behind ChardevGpio.schedulePulse) against the JS scheduler
// the agent otherwise uses (SystemClock.at: setTimeout re-armed until the deadline), side by side,
// idle and under load: one busy worker thread per core (inference) plus GC pressure and
// synchronous work on the main thread.
//
//   node --import tsx bench/pulse-timing.ts [--pulses 600] [--no-idle] [--json]
//        [--chip <label|/dev/gpiochipN> --line <offset>]   (drive real output lines <offset> and
//        <offset>+1, e.g. on gpio-sim in the HIL guest)
//        [--value <path>]   (the sysfs row writes this file, e.g. /sys/class/gpio/gpio529/value of
//        an exported output; default: a file in a temp dir, on tmpfs when /dev/shm exists)
//
// Lateness = when the edge was driven (native: after the ioctl or the pwrite; JS: when the
// callback ran) minus its deadline, both on CLOCK_MONOTONIC. Without --chip the native engine
// drives no line (PulseTimer). The sysfs row is the engine of the onoff binding's outputs: a
// PulseTimer writing "1"/"0" to a sysfs `value` file from the pulse thread (SCHED_FIFO when allowed).
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { SystemClock } from '../src/clock.js';
import { ChardevGpio } from '../src/gpio/chardev.js';
import { loadNative, type NativePulseTarget } from '../src/native/addon.js';

const { values: args } = parseArgs({
  options: {
    pulses: { type: 'string', default: '600' },
    'no-idle': { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    chip: { type: 'string' },
    line: { type: 'string', default: '0' },
    value: { type: 'string' },
  },
});
const PULSES = Number(args.pulses);
const MS = 1_000_000n;
const now = (): bigint => process.hrtime.bigint();

interface Summary {
  n: number;
  p50us: number;
  p90us: number;
  p99us: number;
  maxus: number;
  missed: number;
}

function summarise(lateNs: bigint[], missed = 0): Summary {
  const us = lateNs.map((x) => Number(x) / 1000).sort((a, b) => a - b);
  const q = (p: number) => us[Math.min(us.length - 1, Math.floor(p * us.length))] ?? Number.NaN;
  const r = (x: number) => Math.round(x * 10) / 10;
  return { n: us.length, p50us: r(q(0.5)), p90us: r(q(0.9)), p99us: r(q(0.99)), maxus: r(us.at(-1) ?? Number.NaN), missed };
}

// ── load ──────────────────────────────────────────────────────────────────────────────────────

const WORKER = `
const { parentPort } = require('node:worker_threads');
// "Inference": dense float math in long synchronous runs, one thread per core.
const n = 256, a = new Float32Array(n * n).map(() => Math.random()), b = new Float32Array(n * n).map(() => Math.random());
const c = new Float32Array(n * n);
let stop = false;
parentPort.on('message', (m) => { if (m === 'stop') stop = true; });
(function loop() {
  for (let k = 0; k < 4 && !stop; k++) {
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) { let s = 0; for (let t = 0; t < n; t++) s += a[i * n + t] * b[t * n + j]; c[i * n + j] = s; }
  }
  if (stop) { parentPort.postMessage('done'); return; }
  setImmediate(loop);
})();
`;

interface Load {
  stop(): Promise<void>;
  gcPausesMs: number[];
}

function startLoad(): Load {
  const workers = Array.from({ length: availableParallelism() }, () => new Worker(WORKER, { eval: true }));
  const gcPausesMs: number[] = [];
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcPausesMs.push(e.duration);
  });
  obs.observe({ entryTypes: ['gc'] });
  // Main thread: short-lived garbage every 2 ms (scavenges), a large retained set replaced every
  // second (mark-compact), and 3-8 ms synchronous chunks every 14 ms (JSON, frame bookkeeping).
  let retained: unknown[] = [];
  let tick = 0;
  const garbage = setInterval(() => {
    const junk = Array.from({ length: 20_000 }, (_, i) => ({ i, s: `part-${i}`, v: [i, i * 2] }));
    if (junk.length < 0) console.log(junk);
    if (++tick % 500 === 0) retained = Array.from({ length: 200_000 }, (_, i) => ({ i, b: new Array(4).fill(i) }));
    if (tick % 7 === 0) {
      const until = now() + BigInt(3 + (tick % 6)) * MS;
      let x = 0;
      while (now() < until) x += JSON.stringify({ tick, x }).length;
    }
  }, 2);
  return {
    gcPausesMs,
    async stop() {
      clearInterval(garbage);
      retained = [];
      obs.disconnect();
      await Promise.all(
        workers.map(
          (w) =>
            new Promise<void>((resolve) => {
              w.once('message', () => resolve());
              w.postMessage('stop');
            }).then(() => w.terminate()),
        ),
      );
      void retained;
    },
  };
}

// ── the two schedulers, run side by side ──────────────────────────────────────────────────────

interface Run {
  nativeFifo: Summary;
  nativeCfs: Summary;
  nativeSysfs: Summary;
  sysfsWhat: string;
  js: Summary;
  what: string;
  fifoApplied: boolean;
}

async function nativeTarget(realtime: boolean, lineOffset: number): Promise<{ target: NativePulseTarget; close: () => Promise<void>; what: string }> {
  if (args.chip) {
    const gpio = new ChardevGpio({ realtime });
    const out = await gpio.openOutput({ chip: args.chip, line: lineOffset }, { initial: 0 });
    const line = (out as unknown as { line: NativePulseTarget }).line;
    return { target: line, close: () => gpio.close(), what: `lines ${args.chip}:${args.line}+` };
  }
  const t = new (loadNative().gpio.PulseTimer)({ realtime });
  return {
    target: t,
    close: async () => {
      t.close();
    },
    what: 'PulseTimer (no line)',
  };
}

/** The onoff binding's engine: a PulseTimer driving a sysfs value file (or a stand-in file). */
function sysfsTarget(): { target: NativePulseTarget; close: () => Promise<void>; what: string } {
  let path = args.value;
  let dir: string | undefined;
  if (!path) {
    // In memory (tmpfs) when there is one, as sysfs is: an ext4 file adds the journal's mtime updates.
    dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'linesight-pulse-'));
    path = join(dir, 'value');
    writeFileSync(path, '0\n');
  }
  const t = new (loadNative().gpio.PulseTimer)({ realtime: true, path });
  return {
    target: t,
    close: async () => {
      t.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
    what: args.value ? path : `a file in a temp dir (${path})`,
  };
}

/** One pass: the same deadlines go to a SCHED_FIFO pulse thread, a normal one, and SystemClock.at. */
async function measure(): Promise<Run> {
  const fifo = await nativeTarget(true, Number(args.line));
  const cfs = await nativeTarget(false, Number(args.line) + 1);
  const sysfs = sysfsTarget();
  const late = { fifo: [] as bigint[], cfs: [] as bigint[], sysfs: [] as bigint[], js: [] as bigint[] };
  let sysfsErrors = 0;
  fifo.target.onPulseEdge((level, atNs, deadlineNs) => level === 1 && late.fifo.push(atNs - deadlineNs));
  cfs.target.onPulseEdge((level, atNs, deadlineNs) => level === 1 && late.cfs.push(atNs - deadlineNs));
  sysfs.target.onPulseEdge((level, atNs, deadlineNs, errno) => {
    if (errno) sysfsErrors++;
    else if (level === 1) late.sysfs.push(atNs - deadlineNs);
  });
  const clock = new SystemClock();
  let pending = 0;
  for (let i = 0; i < PULSES; i++) {
    // A verdict arrives; the part reaches the gate 40-49 ms later. Pulses are 5 ms wide and at
    // least 6 ms apart, so they never merge: one rising edge per pulse. (A pulse whose whole
    // window passes before its thread runs is counted as missed, not driven.)
    const at = now() + BigInt(40 + ((i * 7) % 10)) * MS;
    fifo.target.schedulePulse(at, 5n * MS);
    cfs.target.schedulePulse(at, 5n * MS);
    sysfs.target.schedulePulse(at, 5n * MS);
    pending++;
    clock.at(at, () => {
      late.js.push(now() - at);
      pending--;
    });
    await sleep(15);
  }
  const done = (t: NativePulseTarget, l: bigint[]) => l.length + t.pulseStats().missed >= PULSES;
  const give = now() + 10_000n * MS;
  while ((pending > 0 || !done(fifo.target, late.fifo) || !done(cfs.target, late.cfs) || !done(sysfs.target, late.sysfs)) && now() < give) await sleep(20);
  const fifoStats = fifo.target.pulseStats();
  const cfsStats = cfs.target.pulseStats();
  const sysfsStats = sysfs.target.pulseStats();
  await fifo.close();
  await cfs.close();
  await sysfs.close();
  if (sysfsErrors) console.error(`sysfs value file: ${sysfsErrors} failed writes`);
  return {
    nativeFifo: summarise(late.fifo, fifoStats.missed),
    nativeCfs: summarise(late.cfs, cfsStats.missed),
    nativeSysfs: summarise(late.sysfs, sysfsStats.missed),
    sysfsWhat: sysfs.what,
    js: summarise(late.js),
    what: fifo.what,
    fifoApplied: fifoStats.realtime,
  };
}

async function main(): Promise<void> {
  const results: Record<string, unknown> = { pulses: PULSES, cores: availableParallelism(), node: process.version };
  // Four schedulers, the same deadlines: a pulse thread with SCHED_FIFO (ChardevGpio's default,
  // when the process may), one at normal priority, one with SCHED_FIFO writing a sysfs value file
  // (OnoffGpio's outputs), and the JS clock.
  if (!args['no-idle']) {
    const idle = await measure();
    results.idle = idle;
  }
  const load = startLoad();
  await sleep(300); // let the workers and the GC churn get going
  const loaded = await measure();
  await load.stop();
  const gc = load.gcPausesMs.sort((a, b) => a - b);
  results.load = { ...loaded, workers: availableParallelism(), gcPauses: gc.length, gcMaxMs: Math.round((gc.at(-1) ?? 0) * 10) / 10 };

  if (args.json) {
    console.log(JSON.stringify(results, (_k, v) => (typeof v === 'bigint' ? String(v) : v), 2));
    return;
  }
  const row = (name: string, s: Summary) =>
    `  ${name.padEnd(40)} p50 ${s.p50us.toFixed(0).padStart(6)} µs   p90 ${s.p90us.toFixed(0).padStart(6)} µs   p99 ${s.p99us.toFixed(0).padStart(7)} µs   max ${s.maxus.toFixed(0).padStart(7)} µs   missed ${s.missed}`;
  console.log(`pulse start lateness vs deadline, ${PULSES} pulses each, node ${process.version}, ${availableParallelism()} cores`);
  for (const k of ['idle', 'load'] as const) {
    const r = results[k] as Run | undefined;
    if (!r) continue;
    console.log(`${k === 'idle' ? 'idle' : `under load (${availableParallelism()} busy workers + main-thread GC/sync work)`}: native = ${r.what}`);
    console.log(row(`native thread, SCHED_FIFO${r.fifoApplied ? '' : ' (refused: CFS)'}`, r.nativeFifo));
    console.log(row('native thread, normal priority', r.nativeCfs));
    console.log(row(`native, sysfs value file${r.fifoApplied ? '' : ' (CFS)'}`, r.nativeSysfs));
    console.log(row('JS SystemClock.at (setTimeout)', r.js));
  }
  const l = results.load as { gcPauses: number; gcMaxMs: number };
  console.log(`  main-thread GC during the loaded run: ${l.gcPauses} pauses, longest ${l.gcMaxMs} ms`);
  console.log(`  sysfs row: PulseTimer({ path }) pwrite()s "1"/"0" to ${(results.load as Run).sysfsWhat}, SCHED_FIFO when allowed (the onoff binding's outputs)`);
}

await main();
