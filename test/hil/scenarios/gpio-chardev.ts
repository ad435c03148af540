// The character-device backend (native addon) against the kernel's gpio-sim: the shared GPIO
// contract, then what only this backend does: kernel debounce, line info, release when the process
// dies, and divert pulses driven by the native thread at absolute monotonic deadlines.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { describe, test, afterEach } from 'node:test';
import { gpioContract } from '../../unit/gpio-contract.js';
import { ChardevGpio, type PulseEdge } from '../../../src/gpio/chardev.js';
import type { EdgeEvent } from '../../../src/gpio/types.js';
import { hilEnv, simDriver, simDrive, simLevel, sleep, until } from '../lib.js';

const env = hilEnv();
const MS = 1_000_000n;
const now = (): bigint => process.hrtime.bigint();

if (process.env.HIL_CHILD === 'hold-line') {
  // Child mode: take a line, say so, and wait to be killed.
  const b = new ChardevGpio({ consumer: 'hil-child' });
  await b.openOutput({ chip: env.label, line: 7 }, { initial: 1 });
  process.stdout.write('held\n');
  setInterval(() => {}, 1000);
} else {
  gpioContract('chardev on gpio-sim', () => new ChardevGpio(), () => simDriver(env, [4, 5]));

  describe('chardev extras on gpio-sim', () => {
    let b: ChardevGpio | undefined;
    const binding = (opts?: ConstructorParameters<typeof ChardevGpio>[0]): ChardevGpio => (b = new ChardevGpio(opts));
    afterEach(async () => {
      await b?.close();
      b = undefined;
    });

    test('chips are found by label, kernel name and path', async () => {
      const g = binding();
      const chips = await g.listChips();
      const sim = chips.find((c) => c.label === env.label);
      assert.ok(sim, `gpio-sim chip in ${JSON.stringify(chips)}`);
      assert.equal(sim.path, env.dev);
      assert.equal(sim.lines, env.lines);
      assert.deepEqual(await g.resolveChip(sim.name), sim);
      assert.deepEqual(await g.resolveChip(env.dev), sim);
    });

    test('a photo-eye edge arrives with the kernel timestamp, and the output level is read back from the simulator', async () => {
      const g = binding();
      simDrive(env, 0, 0);
      const eye = await g.openInput({ chip: env.label, line: 0 }, { edge: 'rising' });
      const divert = await g.openOutput({ chip: env.label, line: 1 }, { initial: 0 });
      const events: EdgeEvent[] = [];
      eye.watch((ev) => events.push(ev));
      const before = now();
      simDrive(env, 0, 1);
      await until(() => events.length === 1, 'the rising edge');
      assert.equal(events[0]!.value, 1);
      assert.ok(events[0]!.timeNs >= before && events[0]!.timeNs <= now());
      assert.equal(simLevel(env, 1), 0);
      divert.writeSync(1);
      assert.equal(simLevel(env, 1), 1);
      assert.equal(await divert.read(), 1);
      await divert.write(0);
      assert.equal(simLevel(env, 1), 0);
    });

    test('line info shows our consumer while open and a free line after close', async () => {
      const g = binding({ consumer: 'hil-test' });
      simDrive(env, 2, 0);
      const inp = await g.openInput({ chip: env.label, line: 2 }, { edge: 'both' });
      const info = await g.lineInfo({ chip: env.label, line: 2 });
      assert.equal(info.used, true);
      assert.equal(info.consumer, 'hil-test');
      assert.equal(info.direction, 'input');
      assert.equal(info.edge, 'both');
      await inp.close();
      assert.equal((await g.lineInfo({ chip: env.label, line: 2 })).used, false);
    });

    test('kernel debounce: a glitch shorter than the period is no edge; a held level is one, stamped after the period', async () => {
      const g = binding({ debounce: 'kernel' });
      simDrive(env, 3, 0);
      const periodMs = 300;
      const inp = await g.openInput({ chip: env.label, line: 3 }, { edge: 'rising', debounceMs: periodMs });
      assert.equal((await g.lineInfo({ chip: env.label, line: 3 })).debounceUs, periodMs * 1000);
      const events: EdgeEvent[] = [];
      inp.watch((ev) => events.push(ev));
      simDrive(env, 3, 1); // a glitch: up and straight down again
      simDrive(env, 3, 0);
      await sleep(periodMs * 3);
      assert.equal(events.length, 0, 'the glitch made no edge');
      const t = now();
      simDrive(env, 3, 1);
      await until(() => events.length === 1, 'the debounced edge');
      assert.equal(events[0]!.value, 1);
      assert.ok(events[0]!.timeNs - t >= BigInt(periodMs) * MS, 'the kernel reports the edge once the line was stable for the period');
      await inp.close();
    });

    test('a killed process releases its lines (the kernel closes the fd)', async () => {
      const g = binding();
      const child = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
        env: { ...process.env, HIL_CHILD: 'hold-line' },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const [chunk] = (await once(child.stdout!, 'data')) as [Buffer];
      assert.equal(chunk.toString().trim(), 'held');
      const held = await g.lineInfo({ chip: env.label, line: 7 });
      assert.equal(held.used, true);
      assert.equal(held.consumer, 'hil-child');
      await assert.rejects(g.openOutput({ chip: env.label, line: 7 }, { initial: 0 }), /busy/);
      child.kill('SIGKILL');
      await once(child, 'exit');
      assert.equal((await g.lineInfo({ chip: env.label, line: 7 })).used, false);
      const out = await g.openOutput({ chip: env.label, line: 7 }, { initial: 0 });
      assert.equal(simLevel(env, 7), 0);
      await out.close();
    });

    test('schedulePulse: the native thread drives the line at the deadline while the JS thread is blocked', async () => {
      const g = binding();
      const out = await g.openOutput({ chip: env.label, line: 6 }, { initial: 0 });
      const edges: PulseEdge[] = [];
      g.onPulseEdge(out, (e) => edges.push(e));
      const start = now() + 100n * MS;
      assert.equal(g.schedulePulse(out, start, 200), true);
      // Block the event loop well past the end of the pulse (a long GC or a slow callback).
      const blockEnd = start + 900n * MS;
      while (now() < blockEnd) {
        /* busy */
      }
      const unblocked = now();
      await until(() => edges.length === 2, 'both pulse edges reported');
      assert.deepEqual(
        edges.map((e) => e.level),
        [1, 0],
      );
      assert.equal(edges[0]!.deadlineNs, start);
      assert.equal(edges[1]!.deadlineNs, start + 200n * MS);
      for (const e of edges) {
        assert.ok(e.atNs >= e.deadlineNs, 'never early');
        assert.ok(e.atNs < unblocked, 'driven while JS was blocked');
        assert.equal(e.error, undefined);
      }
      assert.equal(simLevel(env, 6), 0);
      const st = g.pulseStats(out);
      assert.equal(st.scheduled, 1);
      assert.equal(st.edges, 2);
      assert.equal(st.pending, 0);
    });

    test('schedulePulse: the simulator sees the line high during the pulse and low after it', async () => {
      const g = binding();
      const out = await g.openOutput({ chip: env.label, line: 6 }, { initial: 0 });
      const edges: PulseEdge[] = [];
      g.onPulseEdge(out, (e) => edges.push(e));
      g.schedulePulse(out, now() + 50n * MS, 1500);
      await until(() => simLevel(env, 6) === 1, 'the line high');
      await until(() => simLevel(env, 6) === 0, 'the line low again');
      await until(() => edges.length === 2, 'both edges reported');
    });

    test('overlapping pulses merge: one rising edge at the first start, one falling at the last end', async () => {
      const g = binding();
      const out = await g.openOutput({ chip: env.label, line: 6 }, { initial: 0 });
      const edges: PulseEdge[] = [];
      g.onPulseEdge(out, (e) => edges.push(e));
      const t = now() + 300n * MS;
      assert.equal(g.schedulePulse(out, t, 300), true);
      assert.equal(g.schedulePulse(out, t + 150n * MS, 300), true);
      await until(() => edges.length >= 2, 'the merged pulse');
      await sleep(300);
      assert.deepEqual(
        edges.map((e) => [e.level, e.deadlineNs]),
        [
          [1, t],
          [0, t + 450n * MS],
        ],
      );
      assert.equal(simLevel(env, 6), 0);
    });

    test('a pulse already over is refused; cancelPulses ends an active pulse', async () => {
      const g = binding();
      const out = await g.openOutput({ chip: env.label, line: 6 }, { initial: 0 });
      assert.equal(g.schedulePulse(out, now() - 500n * MS, 100), false);
      g.schedulePulse(out, now(), 60_000);
      await until(() => simLevel(env, 6) === 1, 'the line high');
      g.cancelPulses(out);
      await until(() => simLevel(env, 6) === 0, 'the line low after cancel');
      assert.equal(g.pulseStats(out).pending, 0);
    });

    test('pulses are refused on outputs of another binding, and bad widths are rejected', async () => {
      const g = binding();
      const other = new ChardevGpio();
      try {
        const out = await other.openOutput({ chip: env.label, line: 6 }, { initial: 0 });
        assert.throws(() => g.schedulePulse(out, now(), 10), /not opened by this chardev binding/);
        assert.throws(() => other.schedulePulse(out, now(), 0), /widthMs/);
      } finally {
        await other.close();
      }
    });
  });
}
