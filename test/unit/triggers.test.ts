import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FrameError, type FrameSource } from '../../src/camera/types.js';
import { FakeClock, type Clock, type Timer } from '../../src/clock.js';
import { SimGpio } from '../../src/gpio/sim.js';
import { GpioError } from '../../src/gpio/types.js';
import { memoryLogger, silentLogger } from '../../src/log.js';
import type { Frame } from '../../src/part.js';
import {
  CommandTrigger,
  createTrigger,
  FreeRunTrigger,
  GpioTrigger,
  IdleTrigger,
  IntervalTrigger,
  TriggerStoppedError,
  type TriggerEvent,
} from '../../src/trigger/index.js';
import type { Config } from '../../src/config/schema.js';

const ms = 1_000_000n;

/** A clock whose timers run late by the given latencies (in turn), as a busy event loop's do. */
class LateClock implements Clock {
  private i = 0;
  constructor(
    readonly inner: FakeClock,
    private readonly latenciesMs: number[],
  ) {}
  nowNs(): bigint {
    return this.inner.nowNs();
  }
  wallMs(): number {
    return this.inner.wallMs();
  }
  at(atNs: bigint, fn: () => void): Timer {
    const late = BigInt(Math.round(this.latenciesMs[this.i++ % this.latenciesMs.length]! * 1e6));
    return this.inner.at(atNs + late, fn);
  }
}

function collect(t: { onTrigger(cb: (ev: TriggerEvent) => void): () => void }): TriggerEvent[] {
  const events: TriggerEvent[] = [];
  t.onTrigger((ev) => events.push(ev));
  return events;
}

function frame(seq: number, timeNs: bigint): Frame {
  return { seq, timeNs, width: 2, height: 2, channels: 1, data: new Uint8Array(4), source: 'fake' };
}

/** A push source the test feeds by hand. */
class FakeFrameSource implements FrameSource {
  readonly name = 'fake';
  started = false;
  private subs = new Set<{ cb: (f: Frame) => void; onError?: (e: FrameError) => void }>();
  async start(): Promise<void> {
    this.started = true;
  }
  async stop(): Promise<void> {
    this.started = false;
  }
  async grab(): Promise<Frame> {
    throw new FrameError('not used');
  }
  onFrame(cb: (f: Frame) => void, onError?: (e: FrameError) => void): () => void {
    const s = { cb, onError };
    this.subs.add(s);
    return () => void this.subs.delete(s);
  }
  push(f: Frame): void {
    for (const s of [...this.subs]) s.cb(f);
  }
  fail(e: FrameError): void {
    for (const s of [...this.subs]) s.onError?.(e);
  }
  subscribers(): number {
    return this.subs.size;
  }
  stats() {
    return { frames: 0, errors: 0, stalls: 0, restarts: 0, fps: 0 };
  }
}

describe('IntervalTrigger', () => {
  test('a part every interval, on the grid start + k·interval, whatever the advance steps', async () => {
    const clock = new FakeClock(1000n * ms);
    const t = new IntervalTrigger(100, clock);
    const events = collect(t);
    await t.start();
    for (let i = 0; i < 27; i++) clock.advance(37); // 999 ms in uneven steps
    clock.advance(1);
    assert.deepEqual(
      events.map((e) => e.timeNs),
      Array.from({ length: 10 }, (_, k) => 1000n * ms + BigInt(k + 1) * 100n * ms),
    );
    assert.ok(events.every((e) => e.kind === 'interval' && e.frame === undefined));
    await t.stop();
  });

  test('drift-free: late timers do not push later parts back', async () => {
    const fake = new FakeClock(0n);
    const clock = new LateClock(fake, [7, 40, 0, 13, 25]);
    const t = new IntervalTrigger(100, clock);
    const events = collect(t);
    await t.start();
    fake.advance(1040); // the 10th deadline (1000 ms) fires by 1040 at the latest
    // "now + interval" would have slipped by the sum of the latencies (17 parts late by now).
    assert.deepEqual(
      events.map((e) => e.timeNs / ms),
      [100n, 200n, 300n, 400n, 500n, 600n, 700n, 800n, 900n, 1000n],
    );
  });

  test('a stall past several deadlines emits each missed part once, in order', async () => {
    const fake = new FakeClock(0n);
    const clock = new LateClock(fake, [250]); // every timer 250 ms late, longer than the interval
    const t = new IntervalTrigger(100, clock);
    const delivered: bigint[] = [];
    t.onTrigger(() => delivered.push(fake.nowNs() / ms));
    const events = collect(t);
    await t.start();
    fake.advance(700);
    assert.deepEqual(
      events.map((e) => e.timeNs / ms),
      [100n, 200n, 300n, 400n, 500n, 600n],
    );
    assert.deepEqual(delivered, [350n, 350n, 350n, 650n, 650n, 650n]);
  });

  test('stop cancels the timer; a subscriber may stop it; restart starts a new grid', async () => {
    const clock = new FakeClock(0n);
    const t = new IntervalTrigger(50, clock);
    const events = collect(t);
    t.onTrigger((ev) => {
      if (ev.timeNs === 150n * ms) void t.stop();
    });
    await t.start();
    await t.start(); // idempotent: one schedule
    clock.advance(500);
    assert.deepEqual(
      events.map((e) => e.timeNs / ms),
      [50n, 100n, 150n],
    );
    assert.equal(clock.pending(), 0);
    await t.start(); // at 500
    clock.advance(120);
    assert.deepEqual(
      events.slice(3).map((e) => e.timeNs / ms),
      [550n, 600n],
    );
    await t.stop();
    await t.stop();
    assert.equal(clock.pending(), 0);
  });

  test('a throwing subscriber is logged and does not stop the schedule or the others', async () => {
    const clock = new FakeClock(0n);
    const log = memoryLogger();
    const t = new IntervalTrigger(10, clock, { log });
    t.onTrigger(() => {
      throw new Error('boom');
    });
    const events = collect(t);
    await t.start();
    clock.advance(30);
    assert.equal(events.length, 3);
    assert.equal(log.records.filter((r) => r.level === 'error').length, 3);
  });

  test('unsubscribe', async () => {
    const clock = new FakeClock(0n);
    const t = new IntervalTrigger(10, clock);
    const events: TriggerEvent[] = [];
    const off = t.onTrigger((ev) => events.push(ev));
    await t.start();
    clock.advance(10);
    off();
    clock.advance(30);
    assert.equal(events.length, 1);
  });

  test('intervalMs must be a positive number', () => {
    const clock = new FakeClock();
    for (const bad of [0, -5, Number.NaN, Number.POSITIVE_INFINITY, '100' as never]) {
      assert.throws(() => new IntervalTrigger(bad, clock), RangeError);
    }
  });
});

describe('GpioTrigger', () => {
  const eye = { chip: 'sim0', line: 0 };

  test('selected edges of the photo-eye become parts, timed by the edge', async () => {
    const clock = new FakeClock(0n);
    const sim = new SimGpio({ clock });
    const t = new GpioTrigger(sim, eye, { edge: 'rising' });
    const events = collect(t);
    await t.start();
    clock.advance(12);
    sim.drive(eye, 1);
    clock.advance(30);
    sim.drive(eye, 0); // falling: not a part
    clock.advance(58);
    sim.drive(eye, 1);
    assert.deepEqual(events, [
      { kind: 'gpio', timeNs: 12n * ms },
      { kind: 'gpio', timeNs: 100n * ms },
    ]);
  });

  test('falling edge with an active-low photo-eye', async () => {
    const clock = new FakeClock(0n);
    const sim = new SimGpio({ clock });
    sim.drive(eye, 1);
    const t = new GpioTrigger(sim, { ...eye, activeLow: true }, { edge: 'falling' });
    const events = collect(t);
    await t.start();
    sim.drive(eye, 0); // logical rising: not selected
    clock.advance(5);
    sim.drive(eye, 1); // logical falling
    assert.deepEqual(
      events.map((e) => e.timeNs / ms),
      [5n],
    );
  });

  test('debounce: a bouncing photo-eye makes one part per debounce window', async () => {
    const clock = new FakeClock(0n);
    const sim = new SimGpio({ clock });
    const t = new GpioTrigger(sim, eye, { edge: 'rising', debounceMs: 5 });
    const events = collect(t);
    await t.start();
    // Part 1 at 0 ms with contact bounce for 3 ms, part 2 at 40 ms with bounce.
    for (const [at, v] of [[0, 1], [1, 0], [2, 1], [3, 0], [3, 1], [20, 0], [40, 1], [41, 0], [44, 1], [60, 0]] as const) {
      clock.advance(at - Number(clock.nowNs() / ms));
      sim.drive(eye, v);
    }
    assert.deepEqual(
      events.map((e) => e.timeNs / ms),
      [0n, 40n],
    );
  });

  test('stop unwatches and closes the line (it can be opened again)', async () => {
    const clock = new FakeClock(0n);
    const sim = new SimGpio({ clock });
    const t = new GpioTrigger(sim, eye, { edge: 'both' });
    const events = collect(t);
    await t.start();
    await assert.rejects(sim.openInput(eye, { edge: 'rising' }), /busy/);
    await t.stop();
    sim.drive(eye, 1);
    assert.equal(events.length, 0);
    const again = await sim.openInput(eye, { edge: 'rising' });
    await again.close();
    await t.start(); // and the trigger can start again
    sim.drive(eye, 0);
    assert.equal(events.length, 1);
    await t.stop();
  });

  test('stop while start is still opening the line leaves nothing open', async () => {
    const sim = new SimGpio({ clock: new FakeClock() });
    const t = new GpioTrigger(sim, eye, { edge: 'rising' });
    const starting = t.start();
    await t.stop();
    await starting;
    await (await sim.openInput(eye, { edge: 'rising' })).close();
  });

  test('a line that cannot be opened rejects start with the GpioError; start can be retried', async () => {
    const sim = new SimGpio({ clock: new FakeClock() });
    const blocker = await sim.openOutput(eye, { initial: 0 });
    const t = new GpioTrigger(sim, eye, { edge: 'rising' });
    await assert.rejects(t.start(), (e: unknown) => e instanceof GpioError && /busy/.test(e.message));
    await blocker.close();
    await t.start();
    await t.stop();
    await assert.rejects(new GpioTrigger(sim, { chip: 'sim0', line: 99 }, { edge: 'rising' }).start(), /32 lines/);
  });
});

describe('FreeRunTrigger', () => {
  test('every frame is a part carrying the frame and its time; errors become parts too', async () => {
    const clock = new FakeClock(0n);
    const source = new FakeFrameSource();
    const errors: FrameError[] = [];
    const t = new FreeRunTrigger(source, clock, { onError: (e) => errors.push(e) });
    const events = collect(t);
    await t.start();
    await t.start(); // idempotent
    assert.equal(source.subscribers(), 1);
    assert.equal(source.started, false, 'the caller owns the source');
    const f1 = frame(1, 5n * ms);
    const f2 = frame(2, 255n * ms);
    source.push(f1);
    clock.advance(300);
    const bad = new FrameError('jpeg truncated', 'bad_frame');
    source.fail(bad);
    source.push(f2);
    assert.equal(events.length, 3);
    assert.deepEqual(events[0], { kind: 'freerun', timeNs: 5n * ms, frame: f1 });
    assert.deepEqual(events[1], { kind: 'freerun', timeNs: 300n * ms, frameError: bad });
    assert.equal(events[1]!.frame, undefined);
    assert.deepEqual(events[2], { kind: 'freerun', timeNs: 255n * ms, frame: f2 });
    assert.deepEqual(errors, [bad]);
    await t.stop();
    assert.equal(source.subscribers(), 0);
    source.push(frame(3, 400n * ms));
    assert.equal(events.length, 3);
  });

  test('without onError, a camera error still becomes a part', async () => {
    const clock = new FakeClock(7n * ms);
    const source = new FakeFrameSource();
    const t = new FreeRunTrigger(source, clock);
    const events = collect(t);
    await t.start();
    source.fail(new FrameError('no frame for 2000 ms', 'camera'));
    assert.equal(events.length, 1);
    assert.ok(events[0]!.frameError instanceof FrameError);
    assert.equal((events[0]!.frameError as FrameError).reason, 'camera');
    assert.equal(events[0]!.timeNs, 7n * ms);
  });
});

describe('CommandTrigger', () => {
  test('fire makes one part now, delivered and returned; refused when not started', async () => {
    const clock = new FakeClock(0n);
    const t = new CommandTrigger(clock);
    const events = collect(t);
    assert.throws(() => t.fire(), TriggerStoppedError);
    await t.start();
    clock.advance(25);
    const ev = t.fire();
    assert.deepEqual(ev, { kind: 'command', timeNs: 25n * ms });
    assert.deepEqual(events, [ev]);
    await t.stop();
    assert.throws(() => t.fire(), /not started/);
    assert.equal(events.length, 1);
  });
});

describe('createTrigger', () => {
  const base: Config['trigger'] = { mode: 'freerun', intervalMs: 250, gpio: { edge: 'rising', debounceMs: 5 } };
  const deps = () => {
    const clock = new FakeClock(0n);
    return { clock, gpio: new SimGpio({ clock }), source: new FakeFrameSource(), log: silentLogger };
  };

  test('each mode gets its trigger, and always a separate command trigger', () => {
    const d = deps();
    const cases = [
      ['freerun', FreeRunTrigger],
      ['interval', IntervalTrigger],
      ['command', IdleTrigger],
    ] as const;
    for (const [mode, cls] of cases) {
      const { trigger, command } = createTrigger({ ...base, mode }, d);
      assert.ok(trigger instanceof cls, mode);
      assert.equal(trigger.kind, mode);
      assert.ok(command instanceof CommandTrigger);
      assert.notEqual(trigger as unknown, command as unknown);
    }
    const g = createTrigger({ ...base, mode: 'gpio', gpio: { ...base.gpio, input: { chip: 'sim0', line: 4, activeLow: false } } }, d);
    assert.ok(g.trigger instanceof GpioTrigger);
  });

  test('gpio mode: config edge and debounce reach the line; photoEye overrides the input', async () => {
    const d = deps();
    const cfg: Config['trigger'] = { ...base, mode: 'gpio', gpio: { edge: 'falling', debounceMs: 10, input: { chip: 'sim0', line: 4, activeLow: false } } };
    const { trigger } = createTrigger(cfg, { ...d, photoEye: { chip: 'sim0', line: 6 } });
    const events = collect(trigger);
    d.gpio.drive({ chip: 'sim0', line: 6 }, 1);
    await trigger.start();
    d.gpio.drive({ chip: 'sim0', line: 4 }, 1); // the configured line is not used
    d.gpio.drive({ chip: 'sim0', line: 4 }, 0);
    d.gpio.drive({ chip: 'sim0', line: 6 }, 0); // falling: a part at 0 ms
    d.clock.advance(4);
    d.gpio.drive({ chip: 'sim0', line: 6 }, 1);
    d.gpio.drive({ chip: 'sim0', line: 6 }, 0); // 4 ms later: inside the 10 ms debounce
    d.clock.advance(10);
    d.gpio.drive({ chip: 'sim0', line: 6 }, 1);
    d.gpio.drive({ chip: 'sim0', line: 6 }, 0); // 14 ms: a part
    assert.deepEqual(
      events.map((e) => [e.kind, e.timeNs / ms]),
      [
        ['gpio', 0n],
        ['gpio', 14n],
      ],
    );
    await trigger.stop();
  });

  test('gpio mode without an input line is a clear error', () => {
    assert.throws(() => createTrigger({ ...base, mode: 'gpio' }, deps()), /trigger\.gpio\.input/);
  });

  test('subscribing to both sources gives every part exactly once, in every mode', async () => {
    for (const mode of ['freerun', 'interval', 'gpio', 'command'] as const) {
      const d = deps();
      const { trigger, command } = createTrigger({ ...base, mode, intervalMs: 100, gpio: { ...base.gpio, input: { chip: 'sim0', line: 0, activeLow: false } } }, d);
      const parts: TriggerEvent[] = [];
      for (const t of [trigger, command]) t.onTrigger((ev) => parts.push(ev));
      await trigger.start();
      await command.start();
      command.fire();
      if (mode === 'freerun') d.source.push(frame(1, 3n));
      if (mode === 'gpio') d.gpio.drive({ chip: 'sim0', line: 0 }, 1);
      d.clock.advance(100);
      const expected = mode === 'command' ? ['command'] : ['command', mode];
      assert.deepEqual(
        parts.map((p) => p.kind),
        expected,
        mode,
      );
      await trigger.stop();
      await command.stop();
    }
  });
});
