// The GPIO contract: what every GpioBinding must do, as one suite run against each binding (the
// simulator here; onoff over a fake sysfs kernel in gpio-sysfs.test.ts; onoff and the
// character-device binding against the real kernel's gpio-sim inside the qemu guest).
// The driver plays the outside world: it sets input pins and probes output pins electrically.
// With { pulses: true } the binding must also drive divert pulses natively (PulseScheduling, the
// pulse thread on CLOCK_MONOTONIC); with { pulses: false } it must not offer them (JS timers).
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, test } from 'node:test';
import { canSchedulePulses, type PulseEdge, type PulseScheduling } from '../../src/gpio/chardev.js';
import { GpioError, type EdgeEvent, type GpioBinding, type GpioOutput, type LineSpec } from '../../src/gpio/types.js';

export interface GpioDriver {
  /** Chip name the binding accepts (a label). */
  chip: string;
  /** Another name for the same chip ('/dev/gpiochipN'), if the binding accepts one. */
  chipAlias?: string;
  /** Lines on that chip (offsets 0..lineCount-1). */
  lineCount: number;
  /** Two free offsets the suite may use. */
  lines: readonly [number, number];
  /** A debounce long enough that the driver's back-to-back drives all fall inside it. */
  debounceMs: number;
  /** The binding's monotonic clock (ns). */
  nowNs(): bigint;
  /** Set the electrical level of an input pin, as a photo-eye would. */
  drive(line: number, value: 0 | 1): void | Promise<void>;
  /** The electrical level of a pin, as a probe would read it. */
  level(line: number): 0 | 1 | Promise<0 | 1>;
  /** Let time pass on the binding's clock (FakeClock.advance, or a real sleep). */
  wait(ms: number): void | Promise<void>;
  /** Let edges already made reach the callbacks, without letting debounce time pass. */
  settle(): void | Promise<void>;
}

export interface ContractOptions {
  /**
   * true: the binding schedules pulses natively (its clock must be CLOCK_MONOTONIC: the driver's
   * nowNs is process.hrtime's); false: it must not offer PulseScheduling; undefined: not checked.
   */
  pulses?: boolean;
}

export function gpioContract<B extends GpioBinding>(
  name: string,
  makeBinding: () => B | Promise<B>,
  driver: (binding: B) => GpioDriver,
  opts: ContractOptions = {},
): void {
  describe(`GPIO contract: ${name}`, () => {
    let current: B | undefined;

    const setup = async (): Promise<{ b: B; d: GpioDriver; L0: LineSpec; L1: LineSpec }> => {
      const b = await makeBinding();
      current = b;
      const d = driver(b);
      return { b, d, L0: { chip: d.chip, line: d.lines[0] }, L1: { chip: d.chip, line: d.lines[1] } };
    };

    afterEach(async () => {
      await current?.close();
      current = undefined;
    });

    const isGpioError = (re?: RegExp) => (err: unknown) => {
      assert.ok(err instanceof GpioError, `expected GpioError, got ${String(err)}`);
      if (re) assert.match(err.message, re);
      return true;
    };

    describe('outputs', () => {
      test('open at the initial level, then follow write and writeSync', async () => {
        const { b, d, L0, L1 } = await setup();
        const hi = await b.openOutput(L0, { initial: 1 });
        const lo = await b.openOutput(L1, { initial: 0 });
        assert.equal(await d.level(L0.line), 1);
        assert.equal(await d.level(L1.line), 0);
        assert.equal(await hi.read(), 1);
        await hi.write(0);
        assert.equal(await d.level(L0.line), 0);
        assert.equal(await hi.read(), 0);
        hi.writeSync(1);
        assert.equal(await d.level(L0.line), 1);
        assert.equal(await lo.read(), 0);
      });

      test('activeLow inverts the electrical level, not the logical one', async () => {
        const { b, d, L0 } = await setup();
        const out = await b.openOutput({ ...L0, activeLow: true }, { initial: 1 });
        assert.equal(await d.level(L0.line), 0);
        assert.equal(await out.read(), 1);
        await out.write(0);
        assert.equal(await d.level(L0.line), 1);
        out.writeSync(1);
        assert.equal(await d.level(L0.line), 0);
      });

      test('levels other than 0 and 1 are rejected and change nothing', async () => {
        const { b, d, L0, L1 } = await setup();
        const out = await b.openOutput(L0, { initial: 1 });
        await assert.rejects(out.write(2 as never), isGpioError(/0 or 1/));
        await assert.rejects(out.write('0' as never), isGpioError(/0 or 1/));
        assert.throws(() => out.writeSync(-1 as never), isGpioError(/0 or 1/));
        assert.throws(() => out.writeSync(true as never), isGpioError(/0 or 1/));
        assert.equal(await d.level(L0.line), 1);
        await assert.rejects(b.openOutput(L1, { initial: 5 as never }), isGpioError(/0 or 1/));
        // The failed open did not take the line.
        await b.openOutput(L1, { initial: 0 });
      });
    });

    describe('inputs', () => {
      test('read returns the driven level', async () => {
        const { b, d, L0 } = await setup();
        await d.drive(L0.line, 0);
        const inp = await b.openInput(L0, { edge: 'both' });
        assert.equal(await inp.read(), 0);
        await d.drive(L0.line, 1);
        await d.settle();
        assert.equal(await inp.read(), 1);
      });

      for (const [edge, expected] of [
        ['rising', [1, 1]],
        ['falling', [0, 0]],
        ['both', [1, 0, 1, 0]],
      ] as const) {
        test(`edge '${edge}' delivers only the selected edges, in order`, async () => {
          const { b, d, L0 } = await setup();
          await d.drive(L0.line, 0);
          const inp = await b.openInput(L0, { edge });
          const events: EdgeEvent[] = [];
          inp.watch((ev) => events.push(ev));
          for (const v of [1, 0, 1, 0] as const) {
            await d.drive(L0.line, v);
            await d.settle();
          }
          assert.deepEqual(
            events.map((e) => e.value),
            expected,
          );
          for (let i = 1; i < events.length; i++) assert.ok(events[i]!.timeNs >= events[i - 1]!.timeNs, 'edge times go forward');
        });
      }

      test("an edge's time lies between the drive and its delivery on the binding's clock", async () => {
        const { b, d, L0 } = await setup();
        await d.drive(L0.line, 0);
        const inp = await b.openInput(L0, { edge: 'rising' });
        const events: EdgeEvent[] = [];
        inp.watch((ev) => events.push(ev));
        await d.wait(5);
        const before = d.nowNs();
        await d.drive(L0.line, 1);
        await d.settle();
        const after = d.nowNs();
        assert.equal(events.length, 1);
        assert.equal(events[0]!.value, 1);
        assert.ok(events[0]!.timeNs >= before && events[0]!.timeNs <= after, `${events[0]!.timeNs} in [${before}, ${after}]`);
      });

      test('no edge is reported for the level a line already has when opened', async () => {
        const { b, d, L0 } = await setup();
        await d.drive(L0.line, 1);
        const inp = await b.openInput(L0, { edge: 'both' });
        const events: EdgeEvent[] = [];
        inp.watch((ev) => events.push(ev));
        await d.settle();
        assert.deepEqual(events, []);
        assert.equal(await inp.read(), 1);
      });

      test('debounce: edges within debounceMs of the last accepted edge are ignored', async () => {
        const { b, d, L0 } = await setup();
        await d.drive(L0.line, 0);
        const inp = await b.openInput(L0, { edge: 'rising', debounceMs: d.debounceMs });
        const events: EdgeEvent[] = [];
        inp.watch((ev) => events.push(ev));
        // A bouncing contact: three rising edges back to back.
        for (const v of [1, 0, 1, 0, 1] as const) await d.drive(L0.line, v);
        await d.settle();
        assert.equal(events.length, 1, 'bounces inside the window are ignored');
        await d.wait(d.debounceMs + 1);
        await d.drive(L0.line, 0);
        await d.drive(L0.line, 1);
        await d.settle();
        assert.equal(events.length, 2, 'the next edge after the window is accepted');
        assert.ok(events[1]!.timeNs - events[0]!.timeNs >= BigInt(d.debounceMs) * 1_000_000n);
      });

      test('activeLow input: read and edges are logical', async () => {
        const { b, d, L0 } = await setup();
        await d.drive(L0.line, 1); // electrically high = logically inactive
        const inp = await b.openInput({ ...L0, activeLow: true }, { edge: 'rising' });
        const events: EdgeEvent[] = [];
        inp.watch((ev) => events.push(ev));
        assert.equal(await inp.read(), 0);
        await d.drive(L0.line, 0); // pulled low: the photo-eye is active
        await d.settle();
        assert.deepEqual(
          events.map((e) => e.value),
          [1],
        );
        assert.equal(await inp.read(), 1);
      });

      test('unsubscribing stops delivery to that callback only', async () => {
        const { b, d, L0 } = await setup();
        await d.drive(L0.line, 0);
        const inp = await b.openInput(L0, { edge: 'both' });
        const a: EdgeEvent[] = [];
        const c: EdgeEvent[] = [];
        const offA = inp.watch((ev) => a.push(ev));
        inp.watch((ev) => c.push(ev));
        await d.drive(L0.line, 1);
        await d.settle();
        offA();
        offA(); // idempotent
        await d.drive(L0.line, 0);
        await d.settle();
        assert.equal(a.length, 1);
        assert.equal(c.length, 2);
      });

      test('bad edge or debounce is rejected', async () => {
        const { b, L0 } = await setup();
        await assert.rejects(b.openInput(L0, { edge: 'up' as never }), isGpioError(/edge/));
        await assert.rejects(b.openInput(L0, { edge: 'rising', debounceMs: -1 }), isGpioError(/debounce/));
        await assert.rejects(b.openInput(L0, { edge: 'rising', debounceMs: Number.NaN }), isGpioError(/debounce/));
        await b.openInput(L0, { edge: 'rising' }); // nothing was left claimed
      });
    });

    if (opts.pulses === false) {
      test('no native pulse scheduling: the divert scheduler runs on JS timers', async () => {
        const { b } = await setup();
        assert.equal(canSchedulePulses(b), false);
      });
    }

    if (opts.pulses === true) {
      describe('native pulses', () => {
        const MS = 1_000_000n;
        /**
         * Edges the pulse thread reports; wait(n) until n have come (no wall-clock bound). Pulses
         * here are long (or ended by cancelPulses): a pulse whose whole window passes before the
         * thread gets the CPU is counted as missed and never driven, and on a loaded machine a
         * thread at normal priority can wait well over 100 ms. wait() stops at a miss, so the
         * test fails saying so instead of hanging.
         */
        const edgesOf = (binding: GpioBinding, out: GpioOutput) => {
          assert.ok(canSchedulePulses(binding), 'the binding offers PulseScheduling');
          const b: GpioBinding & PulseScheduling = binding;
          const edges: PulseEdge[] = [];
          b.onPulseEdge(out, (ev) => edges.push(ev));
          const wait = async (n: number): Promise<void> => {
            while (edges.length < n) {
              const missed: number = b.pulseStats(out).missed;
              assert.equal(missed, 0, `${missed} pulse(s) missed: the pulse thread did not run during a whole pulse window (machine stalled)`);
              await sleep(5);
            }
          };
          return { edges, wait, b };
        };

        test('a pulse drives the output on at its deadline (never before) and off at its end', async () => {
          const { b, d, L0 } = await setup();
          const out = await b.openOutput(L0, { initial: 0 });
          const { edges, wait, b: p } = edgesOf(b, out);
          const t = d.nowNs() + 50n * MS;
          assert.equal(p.schedulePulse(out, t, 1000), true);
          await wait(2);
          assert.deepEqual(
            edges.map((e) => [e.level, e.deadlineNs, e.error]),
            [
              [1, t, undefined],
              [0, t + 1000n * MS, undefined],
            ],
          );
          for (const e of edges) assert.ok(e.atNs >= e.deadlineNs, `edge ${e.level} at ${e.atNs} before its deadline ${e.deadlineNs}`);
          assert.equal(await d.level(L0.line), 0);
          assert.equal(await out.read(), 0);
          const st = p.pulseStats(out);
          assert.equal(st.edges, 2);
          assert.equal(st.pending, 0);
          assert.equal(st.writeErrors, 0);
        });

        test('the pin is on while a pulse holds it and read() says so; cancelPulses ends it', async () => {
          const { b, d, L0 } = await setup();
          const out = await b.openOutput(L0, { initial: 0 });
          const { edges, wait, b: p } = edgesOf(b, out);
          p.schedulePulse(out, d.nowNs(), 60_000);
          p.schedulePulse(out, d.nowNs() + 30_000n * MS, 10); // pending, dropped by the cancel
          await wait(1);
          assert.equal(await d.level(L0.line), 1);
          assert.equal(await out.read(), 1);
          p.cancelPulses(out);
          await wait(2);
          assert.deepEqual(
            edges.map((e) => e.level),
            [1, 0],
          );
          assert.equal(await d.level(L0.line), 0);
          assert.equal(await out.read(), 0);
          assert.equal(p.pulseStats(out).pending, 0);
        });

        test('activeLow: the pulse is logical, the pin goes low while it is on', async () => {
          const { b, d, L0 } = await setup();
          const out = await b.openOutput({ ...L0, activeLow: true }, { initial: 0 });
          assert.equal(await d.level(L0.line), 1);
          const { wait, b: p } = edgesOf(b, out);
          p.schedulePulse(out, d.nowNs(), 60_000);
          await wait(1);
          assert.equal(await d.level(L0.line), 0);
          assert.equal(await out.read(), 1);
          p.cancelPulses(out);
          await wait(2);
          assert.equal(await d.level(L0.line), 1);
          assert.equal(await out.read(), 0);
        });

        test('writes between pulses and pulses agree on the level', async () => {
          const { b, d, L0 } = await setup();
          const out = await b.openOutput(L0, { initial: 0 });
          const { edges, wait, b: p } = edgesOf(b, out);
          p.schedulePulse(out, d.nowNs(), 60_000);
          await wait(1);
          p.cancelPulses(out);
          await wait(2);
          out.writeSync(1); // JS holds the gate open itself
          assert.equal(await d.level(L0.line), 1);
          out.writeSync(0);
          p.schedulePulse(out, d.nowNs(), 60_000);
          await wait(3);
          assert.equal(await d.level(L0.line), 1, 'driven on again: the engine knows JS set it low');
          p.cancelPulses(out);
          await wait(4);
          assert.deepEqual(
            edges.map((e) => e.level),
            [1, 0, 1, 0],
          );
          assert.equal(await d.level(L0.line), 0);
          assert.equal(await out.read(), 0);
        });

        test('closing the output mid-pulse leaves it off; a closed output is refused', async () => {
          const { b, d, L0 } = await setup();
          const out = await b.openOutput(L0, { initial: 0 });
          const { wait, b: p } = edgesOf(b, out);
          p.schedulePulse(out, d.nowNs(), 60_000);
          await wait(1);
          assert.equal(await d.level(L0.line), 1);
          await out.close();
          assert.equal(await d.level(L0.line), 0, 'the safe state: off');
          assert.throws(() => p.schedulePulse(out, d.nowNs(), 10), isGpioError(/closed/));
        });

        test('a pulse already over is refused; bad arguments are GpioErrors', async () => {
          const { b, d, L0 } = await setup();
          const out = await b.openOutput(L0, { initial: 0 });
          const { b: p } = edgesOf(b, out);
          assert.equal(p.schedulePulse(out, d.nowNs() - 1000n * MS, 10), false);
          assert.throws(() => p.schedulePulse(out, d.nowNs(), 0), isGpioError(/widthMs must be a number > 0/));
          assert.throws(() => p.schedulePulse(out, 5 as never, 10), isGpioError(/atNs must be a bigint/));
          assert.equal(await d.level(L0.line), 0);
        });
      });
    }

    describe('lines', () => {
      test('a line open once is busy until closed, whatever the direction', async () => {
        const { b, d, L0 } = await setup();
        const out = await b.openOutput(L0, { initial: 0 });
        await assert.rejects(b.openOutput(L0, { initial: 0 }), isGpioError(/busy/));
        await assert.rejects(b.openInput(L0, { edge: 'rising' }), isGpioError(/busy/));
        if (d.chipAlias) {
          await assert.rejects(b.openOutput({ chip: d.chipAlias, line: L0.line }, { initial: 0 }), isGpioError(/busy/));
        }
        await out.close();
        const inp = await b.openInput(L0, { edge: 'rising' });
        await inp.close();
      });

      test('the chip alias names the same lines', async () => {
        const { b, d, L0 } = await setup();
        const chip = d.chipAlias ?? d.chip; // without an alias this repeats the label case
        const out = await b.openOutput({ chip, line: L0.line }, { initial: 1 });
        assert.equal(await d.level(L0.line), 1);
        await out.write(0);
        assert.equal(await d.level(L0.line), 0);
      });

      test('offsets outside the chip are rejected with the line count', async () => {
        const { b, d } = await setup();
        await assert.rejects(b.openOutput({ chip: d.chip, line: d.lineCount }, { initial: 0 }), isGpioError(new RegExp(`${d.lineCount} lines`)));
        await assert.rejects(b.openInput({ chip: d.chip, line: d.lineCount + 100 }, { edge: 'rising' }), isGpioError(/lines/));
        await assert.rejects(b.openOutput({ chip: d.chip, line: -1 }, { initial: 0 }), isGpioError(/offset/));
        await assert.rejects(b.openOutput({ chip: d.chip, line: 1.5 }, { initial: 0 }), isGpioError(/offset/));
        // The last line is fine.
        const last = await b.openOutput({ chip: d.chip, line: d.lineCount - 1 }, { initial: 0 });
        await last.close();
      });

      test('an unknown chip is rejected, naming the chips that exist', async () => {
        const { b, d } = await setup();
        await assert.rejects(
          b.openOutput({ chip: 'no-such-chip', line: 0 }, { initial: 0 }),
          isGpioError(new RegExp(`no-such-chip[\\s\\S]*${d.chip.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`)),
        );
      });

      test('a closed line rejects every use; closing twice is harmless', async () => {
        const { b, d, L0, L1 } = await setup();
        const out = await b.openOutput(L0, { initial: 1 });
        await d.drive(L1.line, 0);
        const inp = await b.openInput(L1, { edge: 'both' });
        await out.close();
        await inp.close();
        await out.close();
        await inp.close();
        await assert.rejects(out.write(0), isGpioError(/closed/));
        assert.throws(() => out.writeSync(0), isGpioError(/closed/));
        await assert.rejects(out.read(), isGpioError(/closed/));
        await assert.rejects(inp.read(), isGpioError(/closed/));
        assert.throws(() => inp.watch(() => {}), isGpioError(/closed/));
      });

      test('closing the binding closes its lines and refuses new ones', async () => {
        const { b, d, L0, L1 } = await setup();
        const out = await b.openOutput(L0, { initial: 1 });
        await d.drive(L1.line, 0);
        const inp = await b.openInput(L1, { edge: 'both' });
        const events: EdgeEvent[] = [];
        inp.watch((ev) => events.push(ev));
        await b.close();
        await assert.rejects(out.write(0), isGpioError(/closed/));
        await assert.rejects(inp.read(), isGpioError(/closed/));
        await d.drive(L1.line, 1);
        await d.settle();
        assert.deepEqual(events, [], 'no edges after close');
        await assert.rejects(b.openOutput(L0, { initial: 0 }), isGpioError(/closed/));
      });

      test('lines released by close can be opened by a new binding', async () => {
        const { b, L0 } = await setup();
        await b.openOutput(L0, { initial: 1 });
        await b.close();
        const again = await makeBinding();
        current = again;
        const out = await again.openOutput(L0, { initial: 0 });
        assert.equal(await out.read(), 0);
      });
    });
  });
}
