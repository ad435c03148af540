import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SystemClock } from '../../src/clock.js';
import { memoryLogger } from '../../src/log.js';
import type { Frame } from '../../src/part.js';
import { FrameError } from '../../src/camera/types.js';
import { FfmpegSource, ffmpegArgs } from '../../src/camera/ffmpeg.js';
import { createFrameSource } from '../../src/camera/index.js';
import { Agent } from '../../src/agent.js';
import { parseConfig } from '../../src/config/load.js';
import { SimGpio } from '../../src/gpio/sim.js';

type Cfg = ConstructorParameters<typeof FfmpegSource>[0];
const base: Cfg = {
  input: '',
  inputArgs: [],
  width: 160,
  height: 120,
  colour: 'rgb',
  ffmpegPath: 'ffmpeg',
  stallTimeoutMs: 2000,
  restartMinMs: 50,
  restartMaxMs: 400,
};
const lavfi = (extra = ''): Partial<Cfg> => ({ inputArgs: ['-f', 'lavfi'], input: `testsrc2=size=160x120:rate=30${extra}` });

let dir: string;
let fake: string;

/**
 * A stand-in for ffmpeg: writes frames of the size its -vf/-pix_fmt ask for, split into awkward
 * chunks, then behaves as its plan says for this spawn ('sleep' = hang, 'exit' = die with an error,
 * 'flow' = keep streaming for a while then die, 'stubborn' = hang and ignore SIGTERM, 'mute' = hang
 * without a frame; -delayMs = wait that long before anything).
 * Frame n of spawn s has byte k = (s * 50 + n * 7 + k) & 255, so the test can check alignment.
 */
const FAKE = String.raw`
const fs = require('node:fs');
const args = process.argv.slice(2);
const opt = (name) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const [w, h] = opt('-vf').replace('scale=', '').split(':').map(Number);
const size = w * h * (opt('-pix_fmt') === 'gray' ? 1 : 3);
const state = opt('-state');
const spawnNo = (fs.existsSync(state) ? fs.readFileSync(state, 'utf8').trim().split('\n').length : 0);
fs.appendFileSync(state, process.pid + '\n');
const plan = opt('-plan').split(',');
const mode = plan[Math.min(spawnNo, plan.length - 1)];
if (mode === 'stubborn') process.on('SIGTERM', () => {});
const frame = (n) => { const b = Buffer.alloc(size); for (let k = 0; k < size; k++) b[k] = (spawnNo * 50 + n * 7 + k) & 255; return b; };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const write = (b) => new Promise((r) => process.stdout.write(b, r));
(async () => {
  await sleep(Number(opt('-delayMs') ?? 0)); // a camera that takes its time to deliver
  if (mode === 'mute') { setInterval(() => {}, 1000); return; } // opened, never a frame
  fs.appendFileSync(state + '.first', process.hrtime.bigint() + '\n'); // CLOCK_MONOTONIC, as the agent's clock
  // Two frames in awkward pieces: 1 byte, most of a frame, the rest plus the whole next frame.
  const two = Buffer.concat([frame(0), frame(1)]);
  const cuts = [0, 1, size - 3, two.length];
  for (let i = 0; i + 1 < cuts.length; i++) { await write(two.subarray(cuts[i], cuts[i + 1])); await sleep(5); }
  if (mode === 'exit') { process.stderr.write('fake: opening the device\nfake: device gone\n'); process.exit(1); }
  if (mode === 'flow') {
    const until = Date.now() + Number(opt('-flowMs') ?? 600);
    for (let n = 2; Date.now() < until; n++) { await write(frame(n)); await sleep(10); }
    process.stderr.write('fake: end of stream\n');
    process.exit(0);
  }
  setInterval(() => {}, 1000); // sleep / stubborn: hang with the pipe open
})();
`;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'linesight-ffmpeg-'));
  fake = path.join(dir, 'fake-ffmpeg');
  await writeFile(fake, `#!${process.execPath}\n${FAKE}`);
  await chmod(fake, 0o755);
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function waitFor(what: string, cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs; // generous: only there so a bug can't hang the suite
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

let fakeRun = 0;
function fakeCfg(plan: string, over: Partial<Cfg> = {}, flowMs = 600, delayMs = 0): { cfg: Cfg; pids: () => Promise<number[]> } {
  const state = path.join(dir, `state-${++fakeRun}`);
  return {
    cfg: { ...base, ffmpegPath: fake, input: 'fake', inputArgs: ['-plan', plan, '-state', state, '-flowMs', String(flowMs), '-delayMs', String(delayMs)], ...over },
    pids: async () =>
      existsSync(state) ? (await readFile(state, 'utf8')).trim().split('\n').map(Number) : [],
  };
}

const expectFrame = (f: Frame, spawnNo: number, n: number): void => {
  for (const k of [0, 1, 2, f.data.length - 1]) assert.equal(f.data[k], (spawnNo * 50 + n * 7 + k) & 255, `spawn ${spawnNo} frame ${n} byte ${k}`);
};

test('ffmpegArgs: the documented command line', () => {
  assert.deepEqual(ffmpegArgs({ ...base, ...lavfi(), colour: 'gray', width: 80, height: 60 }), [
    '-hide_banner', '-loglevel', 'error', '-nostdin', '-f', 'lavfi', '-i', 'testsrc2=size=160x120:rate=30',
    '-an', '-f', 'rawvideo', '-pix_fmt', 'gray', '-vf', 'scale=80:60', '-',
  ]);
});

test('real ffmpeg, lavfi testsrc2: RGB frames of the right size and plausible content; grab gives a fresh frame', async () => {
  const clock = new SystemClock();
  const log = memoryLogger();
  const src = new FfmpegSource({ ...base, ...lavfi(), inputArgs: ['-re', '-f', 'lavfi'] }, { clock, log });
  const got: Frame[] = [];
  src.onFrame((f) => got.push(f));
  await src.start();
  try {
    const before = clock.nowNs();
    const f = await src.grab();
    assert.ok(f.timeNs >= before, 'captured after the call');
    assert.deepEqual([f.width, f.height, f.channels, f.data.length, f.source], [160, 120, 3, 160 * 120 * 3, 'ffmpeg']);
    assert.equal(f.data.byteOffset, 0);
    assert.equal(f.data.buffer.byteLength, f.data.length, 'each frame owns its buffer (transferable)');
    // testsrc2 is a colourful pattern: many distinct colours, neither black nor white overall.
    const colours = new Set<number>();
    let sum = 0;
    for (let i = 0; i < f.data.length; i += 3) {
      colours.add((f.data[i]! << 16) | (f.data[i + 1]! << 8) | f.data[i + 2]!);
      sum += f.data[i]! + f.data[i + 1]! + f.data[i + 2]!;
    }
    const mean = sum / f.data.length;
    assert.ok(colours.size > 20, `${colours.size} colours`);
    assert.ok(mean > 30 && mean < 225, `mean ${mean}`);
    const g = await src.grab();
    assert.ok(g.seq > f.seq && g.timeNs > f.timeNs, 'the next grab is a newer frame');
    assert.ok(src.latestFrame && src.latestFrame.seq >= g.seq, 'keeps the latest frame');
    await waitFor('30 frames', () => got.length >= 30);
    const seqs = got.map((x) => x.seq);
    assert.deepEqual(seqs, seqs.map((_, i) => seqs[0]! + i), 'onFrame sees every frame');
    const s = src.stats();
    assert.ok(s.frames >= 30 && s.fps > 0);
    assert.deepEqual([s.stalls, s.restarts, s.errors], [0, 0, 0]);
    console.log(`# ffmpeg -re lavfi 160x120 rgb: ${s.fps.toFixed(1)} fps`);
  } finally {
    await src.stop();
  }
});

test('real ffmpeg, free-running as fast as it can, gray and rescaled (frame rate reported)', async () => {
  const clock = new SystemClock();
  const src = createFrameSource(
    { ...parseConfig({}).camera, source: 'ffmpeg', ffmpeg: { ...base, ...lavfi(), colour: 'gray', width: 80, height: 60 } },
    { clock, log: memoryLogger() },
  );
  assert.ok(src instanceof FfmpegSource);
  let n = 0;
  let bad = 0;
  src.onFrame((f) => {
    n++;
    if (f.channels !== 1 || f.data.length !== 80 * 60 || f.width !== 80 || f.height !== 60) bad++;
  });
  await src.start();
  try {
    await waitFor('frames', () => n >= 200);
    const t0 = Date.now();
    const n0 = n;
    await new Promise((r) => setTimeout(r, 1000));
    console.log(`# ffmpeg lavfi 80x60 gray unthrottled: ${(((n - n0) * 1000) / (Date.now() - t0)).toFixed(0)} fps (stats ${src.stats().fps.toFixed(0)})`);
    assert.equal(bad, 0);
  } finally {
    await src.stop();
  }
});

test('ffmpeg binary missing: start() fails naming apt-get install ffmpeg and ffmpegPath', async () => {
  const src = new FfmpegSource({ ...base, ...lavfi(), ffmpegPath: path.join(dir, 'no-such-ffmpeg') }, { clock: new SystemClock(), log: memoryLogger() });
  await assert.rejects(src.start(), (e: Error) => {
    assert.match(e.message, /apt-get install ffmpeg/);
    assert.match(e.message, /camera\.ffmpeg\.ffmpegPath/);
    assert.ok(e.message.includes('no-such-ffmpeg'));
    return true;
  });
  await assert.rejects(src.grab(), (e: unknown) => e instanceof FrameError && e.reason === 'camera');
  await src.stop();
});

test('input unset: start() says what to set', async () => {
  await assert.rejects(new FfmpegSource(base, { clock: new SystemClock(), log: memoryLogger() }).start(), /camera\.ffmpeg\.input/);
});

test('real ffmpeg, bad input: it exits, its stderr is logged, an alarm is raised, restarts back off', async () => {
  const log = memoryLogger();
  const alarms: [string, string][] = [];
  const missing = path.join(dir, 'no-such-video.mp4');
  const src = new FfmpegSource({ ...base, input: missing, restartMinMs: 20 }, { clock: new SystemClock(), log, onAlarm: (k, m) => alarms.push([k, m]) });
  const errors: FrameError[] = [];
  src.onFrame(() => {}, (e) => errors.push(e));
  await src.start();
  try {
    const restartLogs = () => log.records.filter((r) => r.msg === 'restarting ffmpeg');
    await waitFor('three exits', () => restartLogs().length >= 3);
    assert.equal(alarms[0]![0], 'camera_exit');
    assert.match(alarms[0]![1], /No such file or directory/);
    const exit = log.records.find((r) => String(r.msg).startsWith('ffmpeg exited with code'));
    assert.ok(exit, 'exit logged');
    assert.ok((exit.stderr as string[]).some((l) => l.includes(missing)), 'with its last stderr lines');
    assert.ok(errors.length >= 1 && errors.every((e) => e.reason === 'camera'));
    assert.deepEqual(restartLogs().slice(0, 3).map((r) => r.inMs), [20, 100, 200]);
    assert.equal(src.stats().frames, 0);
  } finally {
    await src.stop();
  }
});

test('real ffmpeg, input that ends: restarted, frames again', async () => {
  const log = memoryLogger();
  const src = new FfmpegSource({ ...base, ...lavfi(':duration=0.2') }, { clock: new SystemClock(), log });
  let n = 0;
  src.onFrame(() => n++);
  await src.start();
  try {
    await waitFor('a restart', () => src.stats().restarts >= 1);
    const before = n;
    await waitFor('frames after the restart', () => n > before);
    assert.ok(log.records.some((r) => r.msg === 'ffmpeg exited with code 0 (input testsrc2=size=160x120:rate=30:duration=0.2)'));
  } finally {
    await src.stop();
  }
});

test('fake ffmpeg that hangs: stall detected, alarm, old process killed, restarted, frames again', async () => {
  // Stall timeouts here leave room for node itself to start on a busy machine.
  const { cfg, pids } = fakeCfg('sleep', { stallTimeoutMs: 1500, width: 33, height: 7 });
  const log = memoryLogger();
  const alarms: [string, string][] = [];
  const src = new FfmpegSource(cfg, { clock: new SystemClock(), log, onAlarm: (k, m) => alarms.push([k, m]) });
  const frames: Frame[] = [];
  const errors: FrameError[] = [];
  src.onFrame((f) => frames.push(f), (e) => errors.push(e));
  await src.start();
  try {
    await waitFor('two frames', () => frames.length >= 2);
    // Chunk boundaries (1 byte, size-3, 3 + a whole frame) are reassembled exactly.
    expectFrame(frames[0]!, 0, 0);
    expectFrame(frames[1]!, 0, 1);
    assert.equal(frames[0]!.data.length, 33 * 7 * 3);
    await waitFor('frames from the second process', () => frames.length >= 4);
    expectFrame(frames[2]!, 1, 0);
    expectFrame(frames[3]!, 1, 1);
    const s = src.stats();
    assert.ok(s.stalls >= 1 && s.restarts >= 1);
    assert.equal(alarms[0]![0], 'camera_stall');
    assert.match(alarms[0]![1], /no frame from ffmpeg for 1500 ms/);
    assert.equal(errors[0]!.reason, 'camera');
    const [first] = await pids();
    await waitFor('the stalled process to die', () => !alive(first!));
  } finally {
    await src.stop();
  }
  const all = await pids();
  for (const pid of all) assert.ok(!alive(pid), `pid ${pid} killed`);
  const count = all.length;
  await new Promise((r) => setTimeout(r, 600)); // > restartMaxMs
  assert.equal((await pids()).length, count, 'never restarted after stop()');
});

test('fake ffmpeg that dies: restarted with exponential backoff, reset once frames flow again', async () => {
  const { cfg, pids } = fakeCfg(
    'exit,exit,exit,flow,exit',
    { stallTimeoutMs: 1500, restartMinMs: 40, restartMaxMs: 120, colour: 'gray', width: 16, height: 16 },
    2000,
  );
  const log = memoryLogger();
  const alarms: string[] = [];
  const src = new FfmpegSource(cfg, { clock: new SystemClock(), log, onAlarm: (k) => alarms.push(k) });
  const frames: Frame[] = [];
  src.onFrame((f) => frames.push(f));
  await src.start();
  try {
    await waitFor('six processes', async_(pids, (p) => p.length >= 6));
  } finally {
    await src.stop();
  }
  const delays = log.records.filter((r) => r.msg === 'restarting ffmpeg').map((r) => r.inMs as number);
  // exit, exit, exit: 40, 100 (floor), 120 (max); flow ran > stallTimeoutMs so back to 40.
  assert.deepEqual(delays.slice(0, 5), [40, 100, 120, 40, 100]);
  assert.ok(alarms.every((a) => a === 'camera_exit'));
  const exitLog = log.records.find((r) => String(r.msg).startsWith('ffmpeg exited with code 1'));
  assert.match(String(exitLog?.msg), /fake: device gone$/);
  assert.deepEqual(exitLog?.stderr, ['fake: opening the device', 'fake: device gone']);
  assert.ok(frames.every((f) => f.channels === 1 && f.data.length === 256));
  const fromFlow = frames.slice(6).filter((f) => f.data[0] === ((3 * 50 + (f.seq - 6) * 7) & 255));
  assert.ok(fromFlow.length > 10, 'the flowing process streamed frames in order');
  assert.ok(frames.length >= 2 + 2 + 2 + fromFlow.length + 2, `${frames.length} frames`);
  expectFrame(frames[6]!, 3, 0);
});

test('grab() with no frame coming rejects after stallTimeoutMs; stop() during a restart backoff', async () => {
  const { cfg, pids } = fakeCfg('sleep', { stallTimeoutMs: 1500, restartMinMs: 60_000, width: 16, height: 16 });
  const log = memoryLogger();
  const src = new FfmpegSource(cfg, { clock: new SystemClock(), log });
  let n = 0;
  src.onFrame(() => n++);
  await src.start();
  await waitFor('two frames', () => n >= 2);
  await assert.rejects(src.grab(), (e: unknown) => e instanceof FrameError && e.reason === 'camera' && /within 1500 ms/.test(e.message));
  await waitFor('the stall', () => src.stats().stalls === 1);
  assert.equal(src.stats().errors, 1, 'the failed grab');
  await src.stop(); // the restart is 60 s away: stop() must cancel it and return at once
  assert.equal((await pids()).length, 1);
  assert.equal(src.stats().restarts, 0);
});

test('stop() escalates to SIGKILL for an ffmpeg that ignores SIGTERM', async () => {
  const { cfg, pids } = fakeCfg('stubborn', { width: 16, height: 16 });
  const src = new FfmpegSource(cfg, { clock: new SystemClock(), log: memoryLogger() });
  await src.start();
  await src.grab();
  const [pid] = await pids();
  assert.ok(alive(pid!));
  const pending = assert.rejects(src.grab(), (e: unknown) => e instanceof FrameError && /stopped/.test(e.message));
  await src.stop();
  assert.ok(!alive(pid!), 'killed');
  await pending;
  assert.equal((await pids()).length, 1);
});

/** Turns an async probe into a sync condition for waitFor (last result wins). */
function async_<T>(probe: () => Promise<T>, ok: (v: T) => boolean): () => boolean {
  let last = false;
  let busy = false;
  return () => {
    if (!busy) {
      busy = true;
      void probe().then((v) => {
        last = ok(v);
        busy = false;
      });
    }
    return last;
  };
}

/** The whole agent on a (fake) ffmpeg camera, no broker, parts only by command. */
function agentOn(ffmpeg: Cfg, firstFrameTimeoutMs: number) {
  const clock = new SystemClock();
  const gpio = new SimGpio({ clock });
  const cfg = parseConfig({
    station: { stateDir: path.join(dir, `agent-${++fakeRun}`) },
    model: { path: 'models/film-demo' },
    camera: { source: 'ffmpeg', ffmpeg, firstFrameTimeoutMs },
    trigger: { mode: 'command' },
    gpio: { backend: 'sim' },
    mqtt: { url: '' },
    http: { enabled: false },
  });
  return { agent: new Agent(cfg, { log: memoryLogger(), clock, gpio }), gpio, clock };
}
const READY = { chip: 'sim0', line: 2 };

test('agent on a live camera: ready only once frames flow, not when ffmpeg has merely started', async () => {
  const { cfg } = fakeCfg('flow', { stallTimeoutMs: 2000 }, 5000, 800);
  const { agent, gpio } = agentOn(cfg, 10_000);
  await agent.start();
  try {
    const rise = gpio.history(READY).find((h) => h.value === 1);
    assert.ok(rise, 'ready went high');
    // The fake camera waits 800 ms, notes the time and sends its first frame: ready comes after.
    const state = cfg.inputArgs[cfg.inputArgs.indexOf('-state') + 1]!;
    const first = BigInt((await readFile(state + '.first', 'utf8')).trim().split('\n')[0]!);
    assert.ok(rise.timeNs >= first, `ready rose ${Number(first - rise.timeNs) / 1e6} ms before the camera's first frame`);
  } finally {
    await agent.stop();
  }
});

test('agent on a live camera that never delivers: start fails naming the camera and the knob; ready never rises', async () => {
  const { cfg, pids } = fakeCfg('mute', { stallTimeoutMs: 300 });
  const { agent, gpio } = agentOn(cfg, 1200);
  await assert.rejects(agent.start(), /camera ffmpeg: no frame within 1200 ms of starting .*camera\.firstFrameTimeoutMs/);
  assert.ok(!gpio.history(READY).some((h) => h.value === 1), 'ready stayed low');
  for (const pid of await pids()) await waitFor(`fake ffmpeg ${pid} to be stopped`, () => !alive(pid));
});
