import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { FakeClock, SystemClock } from '../../src/clock.js';
import { canSchedulePulses, type PulseEdge } from '../../src/gpio/chardev.js';
import { HISTORY_KEPT, SimGpio } from '../../src/gpio/sim.js';
import { nativeStatus, tryLoadNative } from '../../src/native/addon.js';
import { GpioError, type EdgeEvent } from '../../src/gpio/types.js';
import { createGpioBinding } from '../../src/gpio/index.js';
import { silentLogger } from '../../src/log.js';
import { gpioContract } from './gpio-contract.js';
import { parseConfig } from '../../src/config/load.js';

gpioContract(
  'SimGpio',
  () => new SimGpio({ clock: new FakeClock() }),
  (sim) => ({
    chip: 'sim0',
    chipAlias: '/dev/gpiochip0',
    lineCount: 32,
    lines: [3, 4],
    debounceMs: 10,
    nowNs: () => sim.clock.nowNs(),
    drive: (line, v) => sim.drive({ chip: 'sim0', line }, v),
    level: (line) => sim.level({ chip: 'sim0', line }),
    wait: (ms) => (sim.clock as FakeClock).advance(ms),
    settle: () => {}, // the simulator delivers edges synchronously
  }),
  { pulses: false }, // a FakeClock's time is the test's: never the native thread's
);

const ADDON = tryLoadNative();
if (process.env.LINESIGHT_NATIVE_REQUIRED === '1') {
  test('the native addon loads (LINESIGHT_NATIVE_REQUIRED=1): native pulses for sim outputs are tested', () => {
    assert.ok(ADDON, `native addon required but not loaded: ${nativeStatus().reason}`);
  });
}

// On the system clock the simulator's outputs get the native pulse thread (when the addon loads):
// the demo's and the agent bench's timing engine.
gpioContract(
  `SimGpio on the system clock (${ADDON ? 'native pulses' : 'no addon: JS-timer pulses'})`,
  () => new SimGpio({ clock: new SystemClock(), realtime: false }),
  (sim) => ({
    chip: 'sim0',
    chipAlias: '/dev/gpiochip0',
    lineCount: 32,
    lines: [3, 4],
    debounceMs: 10,
    nowNs: () => sim.clock.nowNs(),
    drive: (line, v) => sim.drive({ chip: 'sim0', line }, v),
    level: (line) => sim.level({ chip: 'sim0', line }),
    wait: (ms) => sleep(ms),
    settle: () => {},
  }),
  { pulses: ADDON !== undefined },
);

const ms = 1_000_000n;

function rig(edge: 'rising' | 'falling' | 'both' = 'rising', debounceMs = 10) {
  const clock = new FakeClock(0n);
  const sim = new SimGpio({ clock });
  const spec = { chip: 'sim0', line: 7 };
  const events: EdgeEvent[] = [];
  const ready = sim.openInput(spec, { edge, debounceMs }).then((inp) => {
    inp.watch((ev) => events.push(ev));
    return inp;
  });
  const at = (tMs: number, v: 0 | 1): void => {
    clock.advance(tMs - Number(clock.nowNs() / ms));
    sim.drive(spec, v);
  };
  return { clock, sim, spec, events, ready, at };
}

describe('SimGpio', () => {
  test('history: the initial level, then each change, timed by the clock', async () => {
    const clock = new FakeClock(0n);
    const sim = new SimGpio({ clock });
    const spec = { chip: 'sim0', line: 1 };
    assert.deepEqual(sim.history(spec), []);
    clock.advance(5);
    const out = await sim.openOutput(spec, { initial: 0 });
    clock.advance(10);
    await out.write(1);
    clock.advance(1);
    await out.write(1); // not a change
    clock.advance(79);
    out.writeSync(0);
    assert.deepEqual(sim.history(spec), [
      { value: 0, timeNs: 5n * ms },
      { value: 1, timeNs: 15n * ms },
      { value: 0, timeNs: 95n * ms },
    ]);
    // A copy: callers cannot rewrite the record.
    sim.history(spec).pop();
    assert.equal(sim.history(spec).length, 3);
  });

  test('history and level are electrical: an active-low pulse reads 1, 0, 1', async () => {
    const clock = new FakeClock(0n);
    const sim = new SimGpio({ clock });
    const spec = { chip: 'sim0', line: 2, activeLow: true };
    const out = await sim.openOutput(spec, { initial: 0 });
    await out.write(1);
    await out.write(0);
    assert.deepEqual(
      sim.history(spec).map((h) => h.value),
      [1, 0, 1],
    );
    assert.equal(sim.level({ chip: 'sim0', line: 2 }), 1);
  });

  test('debounce is measured from the last accepted edge; ignored bounces do not extend it', async () => {
    const { events, ready, at } = rig('rising', 10);
    await ready;
    at(0, 1); // accepted
    at(3, 0);
    at(6, 1); // 6 ms after the accepted edge: ignored
    at(8, 0);
    at(10, 1); // exactly debounceMs later: accepted (only edges *within* the window are ignored)
    at(12, 0);
    at(19, 1); // 9 ms: ignored
    at(25, 0);
    at(31, 1); // 21 ms: accepted, though only 12 ms after the ignored one at 19
    assert.deepEqual(
      events.map((e) => e.timeNs / ms),
      [0n, 10n, 31n],
    );
    assert.ok(events.every((e) => e.value === 1));
  });

  test('edges not selected do not start a debounce window', async () => {
    const { events, ready, at } = rig('rising', 10);
    await ready;
    at(0, 1); // accepted
    at(20, 0); // falling: not selected
    at(25, 1); // 25 ms after the last accepted edge: accepted, though 5 ms after the falling one
    assert.deepEqual(
      events.map((e) => e.timeNs / ms),
      [0n, 25n],
    );
  });

  test('debounce 0 passes every selected edge, even at the same instant', async () => {
    const { events, ready, sim, spec } = rig('both', 0);
    await ready;
    sim.drive(spec, 1);
    sim.drive(spec, 0);
    sim.drive(spec, 1);
    assert.deepEqual(
      events.map((e) => e.value),
      [1, 0, 1],
    );
  });

  test('driving the level a line already has is not an edge', async () => {
    const { events, ready, sim, spec } = rig('both', 0);
    await ready;
    sim.drive(spec, 0);
    sim.drive(spec, 1);
    sim.drive(spec, 1);
    assert.equal(events.length, 1);
  });

  test('a line can be driven before it is opened; opening it makes no edge', async () => {
    const clock = new FakeClock();
    const sim = new SimGpio({ clock });
    const spec = { chip: '/dev/gpiochip0', line: 9 };
    sim.drive(spec, 1);
    assert.equal(sim.level({ chip: 'sim0', line: 9 }), 1);
    const inp = await sim.openInput(spec, { edge: 'both' });
    const events: EdgeEvent[] = [];
    inp.watch((ev) => events.push(ev));
    assert.equal(await inp.read(), 1);
    assert.deepEqual(events, []);
  });

  test('drive() refuses an output line and bad levels', async () => {
    const sim = new SimGpio({ clock: new FakeClock() });
    await sim.openOutput({ chip: 'sim0', line: 1 }, { initial: 0 });
    assert.throws(() => sim.drive({ chip: 'sim0', line: 1 }, 1), (e: unknown) => e instanceof GpioError && /output/.test(e.message));
    assert.throws(() => sim.drive({ chip: 'sim0', line: 2 }, 2 as never), GpioError);
    assert.throws(() => sim.level({ chip: 'sim0', line: 32 }), /32 lines/);
  });

  test('chips from the constructor, each also reachable by /dev/gpiochipN', async () => {
    const sim = new SimGpio({
      clock: new FakeClock(),
      chips: [
        { label: 'pinctrl-bcm2711', lines: 58 },
        { label: 'expander', lines: 16, path: '/dev/gpiochip3' },
      ],
    });
    const out = await sim.openOutput({ chip: 'pinctrl-bcm2711', line: 57 }, { initial: 1 });
    assert.equal(sim.level({ chip: '/dev/gpiochip0', line: 57 }), 1);
    await out.close();
    await sim.openOutput({ chip: '/dev/gpiochip3', line: 15 }, { initial: 1 });
    assert.equal(sim.level({ chip: 'expander', line: 15 }), 1);
    await assert.rejects(sim.openOutput({ chip: 'expander', line: 16 }, { initial: 0 }), /beyond chip 'expander', which has 16 lines/);
    await assert.rejects(sim.openOutput({ chip: 'sim0', line: 0 }, { initial: 0 }), (e: unknown) => {
      assert.ok(e instanceof GpioError);
      assert.match(e.message, /unknown GPIO chip 'sim0'/);
      assert.match(e.message, /'pinctrl-bcm2711' \(\/dev\/gpiochip0\), 'expander' \(\/dev\/gpiochip3\)/);
      return true;
    });
    assert.throws(() => new SimGpio({ clock: new FakeClock(), chips: [{ label: 'x', lines: 0 }] }), GpioError);
  });

  test('busy names how the line is held', async () => {
    const sim = new SimGpio({ clock: new FakeClock() });
    await sim.openInput({ chip: 'sim0', line: 0 }, { edge: 'rising' });
    await assert.rejects(sim.openOutput({ chip: '/dev/gpiochip0', line: 0 }, { initial: 0 }), /sim0:0 is busy: already open as an input/);
  });

  test('a malformed spec is a GpioError, not a crash', async () => {
    const sim = new SimGpio({ clock: new FakeClock() });
    await assert.rejects(sim.openOutput(undefined as never, { initial: 0 }), GpioError);
    await assert.rejects(sim.openOutput({ chip: 'sim0', line: '3' as never }, { initial: 0 }), /offset/);
  });

  test('native pulses: never on a FakeClock, never when off, never without the addon', () => {
    const fake = new SimGpio({ clock: new FakeClock() });
    assert.equal(canSchedulePulses(fake), false);
    assert.match(fake.pulseEngine.reason, /not the system clock/);
    const off = new SimGpio({ clock: new SystemClock(), nativePulses: 'off' });
    assert.equal(canSchedulePulses(off), false);
    assert.match(off.pulseEngine.reason, /'off'/);
    const none = new SimGpio({ clock: new SystemClock(), addon: null });
    assert.equal(canSchedulePulses(none), false);
    assert.equal(canSchedulePulses(new SimGpio({ clock: new SystemClock() })), ADDON !== undefined);
  });

  if (ADDON) {
    test("native pulses: the pin's history is the thread's edges, timed by the thread", async () => {
      const sim = new SimGpio({ clock: new SystemClock(), realtime: false });
      const spec = { chip: 'sim0', line: 1 };
      const out = await sim.openOutput(spec, { initial: 0 });
      assert.ok(canSchedulePulses(sim));
      assert.equal(sim.hasNativePulses(out), true);
      const edges: PulseEdge[] = [];
      sim.onPulseEdge(out, (ev) => edges.push(ev));
      const t = process.hrtime.bigint() + 20n * ms;
      sim.schedulePulse(out, t, 60_000); // long: ended by cancelPulses (a short one may be missed on a loaded machine)
      while (edges.length < 1) await sleep(5);
      sim.cancelPulses(out);
      while (edges.length < 2) await sleep(5);
      const h = sim.history(spec);
      assert.deepEqual(
        h.slice(1),
        edges.map((e) => ({ value: e.level, timeNs: e.atNs })),
      );
      assert.ok(h[1]!.timeNs >= t && h[2]!.timeNs >= h[1]!.timeNs);
      await sim.close();
    });

    test('createGpioBinding: gpio.nativePulses reaches the sim binding', async () => {
      const base = { backend: 'sim' as const, sysfsRoot: '/sys/class/gpio', stackLight: { buzzerAfterRejects: 3 }, realtime: false };
      const clock = new SystemClock();
      const on = createGpioBinding({ ...base, nativePulses: 'auto' } as never, { clock, log: silentLogger });
      const off = createGpioBinding({ ...base, nativePulses: 'off' } as never, { clock, log: silentLogger });
      assert.equal(canSchedulePulses(on), true);
      assert.equal(canSchedulePulses(off), false);
    });
  }

  test('createGpioBinding: sim backend on the given clock', async () => {
    const clock = new FakeClock(42n * ms);
    const b = createGpioBinding({ ...parseConfig({}).gpio, backend: 'sim', sysfsRoot: '/sys/class/gpio', stackLight: { buzzerAfterRejects: 3 } }, { clock, log: silentLogger });
    assert.ok(b instanceof SimGpio);
    assert.equal(b.name, 'sim');
    await b.openOutput({ chip: 'sim0', line: 1 }, { initial: 1 });
    assert.deepEqual((b as SimGpio).history({ chip: 'sim0', line: 1 }), [{ value: 1, timeNs: 42n * ms }]);
  });
});

test('history is bounded: a long run keeps the most recent HISTORY_KEPT changes, in order', async () => {
  const clock = new FakeClock();
  const sim = new SimGpio({ clock });
  const spec = { chip: 'sim0', line: 5 };
  const out = await sim.openOutput(spec, { initial: 0 });
  const n = 2 * HISTORY_KEPT + 10;
  for (let i = 1; i <= n; i++) {
    clock.advance(1);
    out.writeSync((i % 2) as 0 | 1);
  }
  const h = sim.history(spec);
  assert.ok(h.length >= HISTORY_KEPT && h.length < 2 * HISTORY_KEPT, `kept ${h.length}`);
  assert.equal(h.at(-1)!.value, n % 2);
  for (let i = 1; i < h.length; i++) assert.ok(h[i]!.timeNs > h[i - 1]!.timeNs && h[i]!.value !== h[i - 1]!.value);
});
