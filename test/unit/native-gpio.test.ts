// The character-device binding on a host without GPIO hardware: clear errors for chips that are
// not there, error mapping from the kernel's errno, and the native pulse engine's behaviour (the
// same thread and scheduling code that drives an output line, here without a line).
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FakeClock } from '../../src/clock.js';
import { canSchedulePulses, ChardevGpio } from '../../src/gpio/chardev.js';
import { SimGpio } from '../../src/gpio/sim.js';
import { GpioError } from '../../src/gpio/types.js';
import { loadNative, type NativeAddon, type NativeChipInfo, type NativeLine } from '../../src/native/addon.js';

const MS = 1_000_000n;
const isGpioError = (re: RegExp) => (e: unknown) => {
  assert.ok(e instanceof GpioError, `expected GpioError, got ${String(e)}`);
  assert.match(e.message, re);
  return true;
};

let empty: string;
before(async () => {
  empty = await mkdtemp(join(tmpdir(), 'linesight-nochips-'));
});
after(async () => {
  await rm(empty, { recursive: true, force: true });
});

describe('ChardevGpio without hardware', () => {
  test('a chip path that does not exist is a clear error', async () => {
    const g = new ChardevGpio({ devDir: empty });
    await assert.rejects(g.openInput({ chip: '/dev/gpiochip-does-not-exist', line: 0 }, { edge: 'rising' }), isGpioError(/'\/dev\/gpiochip-does-not-exist' does not exist; chips here: none/));
    await assert.rejects(g.openOutput({ chip: '/dev/gpiochip-does-not-exist', line: 0 }, { initial: 0 }), isGpioError(/does not exist/));
  });

  test('a label with no chip says there are no GPIO character devices', async () => {
    const g = new ChardevGpio({ devDir: empty });
    await assert.rejects(g.openOutput({ chip: 'pinctrl-bcm2835', line: 17 }, { initial: 0 }), isGpioError(new RegExp(`no GPIO chip labelled 'pinctrl-bcm2835'; there are no GPIO character devices in ${empty}`)));
  });

  test('a file that is not a GPIO chip is named as such', async () => {
    const g = new ChardevGpio();
    await assert.rejects(g.openOutput({ chip: '/dev/null', line: 0 }, { initial: 0 }), isGpioError(/not a GPIO character device/));
    await assert.rejects(loadNative().gpio.requestLine({ path: '/dev/null', offset: 0, direction: 'input' }), (e: NodeJS.ErrnoException) => e.code === 'ENOTTY');
  });

  test('bad requests are refused before the kernel is asked', async () => {
    const g = new ChardevGpio({ devDir: empty });
    await assert.rejects(g.openInput({ chip: 'x', line: -1 }, { edge: 'rising' }), isGpioError(/offset/));
    await assert.rejects(g.openInput({ chip: 'x', line: 0 }, { edge: 'up' as never }), isGpioError(/edge/));
    await assert.rejects(g.openInput({ chip: 'x', line: 0 }, { edge: 'rising', debounceMs: -5 }), isGpioError(/debounce/));
    await assert.rejects(g.openOutput({ chip: 'x', line: 0 }, { initial: 2 as never }), isGpioError(/level must be 0 or 1/));
    await g.close();
    await assert.rejects(g.openOutput({ chip: 'x', line: 0 }, { initial: 0 }), isGpioError(/closed/));
  });

  test('it offers native pulse scheduling; the simulator does not', () => {
    assert.equal(canSchedulePulses(new ChardevGpio()), true);
    assert.equal(canSchedulePulses(new SimGpio({ clock: new FakeClock() })), false);
  });
});

/** A fake addon whose chip exists and whose requestLine fails with a given errno. */
function failingAddon(code: string): NativeAddon {
  const real = loadNative();
  const chip: NativeChipInfo = { path: '/dev/gpiochip7', name: 'gpiochip7', label: 'fake', lines: 4 };
  return {
    ...real,
    gpio: {
      ...real.gpio,
      listChips: async () => Object.assign([chip], { errors: [] }),
      chipInfo: async () => chip,
      requestLine: async () => {
        throw Object.assign(new Error(`ioctl(GPIO_V2_GET_LINE) /dev/gpiochip7:1: (${code})`), { code });
      },
    },
  };
}

describe('ChardevGpio error mapping', () => {
  for (const [code, re] of [
    ['EBUSY', /is busy: held by a kernel driver or another process/],
    ['EACCES', /permission denied .*udev/],
    ['EPERM', /permission denied/],
    ['EINVAL', /the kernel refused the request/],
  ] as const) {
    test(`${code} becomes a GpioError an operator can act on`, async () => {
      const g = new ChardevGpio({ addon: failingAddon(code) });
      await assert.rejects(g.openOutput({ chip: 'fake', line: 1 }, { initial: 0 }), isGpioError(re));
    });
  }

  test('an offset past the chip names the line count', async () => {
    const g = new ChardevGpio({ addon: failingAddon('EBUSY') });
    await assert.rejects(g.openOutput({ chip: 'fake', line: 4 }, { initial: 0 }), isGpioError(/chip 'fake' \(\/dev\/gpiochip7\) has 4 lines/));
  });

  test('an output of another binding is refused by schedulePulse', async () => {
    const lines: NativeLine[] = [];
    const real = loadNative();
    const chip: NativeChipInfo = { path: '/dev/gpiochip7', name: 'gpiochip7', label: 'fake', lines: 4 };
    const fakeLine = (): NativeLine => {
      const timer = new real.gpio.PulseTimer();
      const l = Object.assign(timer, {
        fd: 99,
        closed: false,
        getValue: () => 0 as const,
        getValueAsync: async () => 0 as const,
        setValue: () => {},
        setValueAsync: async () => {},
        watch: () => {},
        unwatch: () => {},
      }) as unknown as NativeLine;
      lines.push(l);
      return l;
    };
    const addon: NativeAddon = {
      ...real,
      gpio: { ...real.gpio, listChips: async () => Object.assign([chip], { errors: [] }), chipInfo: async () => chip, requestLine: async () => fakeLine() },
    };
    const a = new ChardevGpio({ addon });
    const b = new ChardevGpio({ addon });
    const out = await a.openOutput({ chip: 'fake', line: 0 }, { initial: 0 });
    assert.throws(() => b.schedulePulse(out, 0n, 10), isGpioError(/not opened by this chardev binding/));
    assert.throws(() => a.schedulePulse(out, 0n, 0), isGpioError(/widthMs must be a number > 0/));
    assert.throws(() => a.schedulePulse(out, 5 as never, 10), isGpioError(/atNs must be a bigint/));
    assert.equal(a.schedulePulse(out, process.hrtime.bigint() + 5n * MS, 5), true);
    await a.close();
    assert.throws(() => a.schedulePulse(out, 0n, 10), isGpioError(/not opened by this chardev binding \(or is closed\)/));
    for (const l of lines) l.close();
  });
});

describe('native pulse engine (no line)', () => {
  type Edge = { level: number; atNs: bigint; deadlineNs: bigint; errno: number };
  const collect = () => {
    const timer = new (loadNative().gpio.PulseTimer)();
    const edges: Edge[] = [];
    timer.onPulseEdge((level, atNs, deadlineNs, errno) => edges.push({ level, atNs, deadlineNs, errno }));
    const wait = async (n: number) => {
      while (edges.length < n) {
        // A pulse whose whole window passed before the thread ran is missed, never driven: fail, not hang.
        const missed = timer.pulseStats().missed;
        assert.equal(missed, 0, `${missed} pulse(s) missed: the pulse thread did not run during a whole pulse window (machine stalled)`);
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    return { timer, edges, wait };
  };

  test('a pulse is driven on at its start and off at its end, never early', async () => {
    const { timer, edges, wait } = collect();
    const t = process.hrtime.bigint() + 100n * MS;
    assert.equal(timer.schedulePulse(t, 100n * MS), true);
    await wait(2);
    assert.deepEqual(
      edges.map((e) => [e.level, e.deadlineNs, e.errno]),
      [
        [1, t, 0],
        [0, t + 100n * MS, 0],
      ],
    );
    for (const e of edges) assert.ok(e.atNs >= e.deadlineNs);
    const st = timer.pulseStats();
    assert.equal(st.scheduled, 1);
    assert.equal(st.edges, 2);
    assert.equal(st.pending, 0);
    assert.equal(st.missed, 0);
    assert.equal(st.level, 0);
    assert.ok(st.maxLateNs >= 0n);
    timer.close();
  });

  test('overlapping pulses merge; separate pulses stay separate; order by deadline, not by call', async () => {
    const { timer, edges, wait } = collect();
    const t = process.hrtime.bigint() + 100n * MS;
    timer.schedulePulse(t + 400n * MS, 100n * MS); // separate, scheduled first
    timer.schedulePulse(t, 200n * MS);
    timer.schedulePulse(t + 100n * MS, 200n * MS); // overlaps the previous one
    await wait(4);
    assert.deepEqual(
      edges.map((e) => [e.level, e.deadlineNs]),
      [
        [1, t],
        [0, t + 300n * MS],
        [1, t + 400n * MS],
        [0, t + 500n * MS],
      ],
    );
    timer.close();
  });

  test('a pulse whose end has passed is refused; a late start is driven at once', async () => {
    const { timer, edges, wait } = collect();
    const now = process.hrtime.bigint();
    assert.equal(timer.schedulePulse(now - 50n * MS, 10n * MS), false);
    assert.equal(timer.schedulePulse(now - 5n * MS, 200n * MS), true);
    await wait(2);
    assert.equal(edges[0]!.level, 1);
    assert.equal(edges[0]!.deadlineNs, now - 5n * MS);
    assert.equal(edges[1]!.deadlineNs, now + 195n * MS);
    timer.close();
  });

  test('cancelPulses ends an active pulse and drops pending ones', async () => {
    const { timer, edges, wait } = collect();
    const t = process.hrtime.bigint();
    timer.schedulePulse(t, 60_000n * MS);
    timer.schedulePulse(t + 30_000n * MS, 10n * MS);
    await wait(1);
    timer.cancelPulses();
    await wait(2);
    assert.deepEqual(
      edges.map((e) => e.level),
      [1, 0],
    );
    assert.equal(timer.pulseStats().pending, 0);
    timer.close();
    assert.throws(() => timer.schedulePulse(t, 1n), /closed/);
  });

  test('bad widths are refused', () => {
    const timer = new (loadNative().gpio.PulseTimer)();
    assert.throws(() => timer.schedulePulse(0n, 0n), RangeError);
    assert.throws(() => timer.schedulePulse('x' as never, 1n), TypeError);
    timer.close();
  });
});
