// GPIO over the kernel's sysfs interface through the `onoff` package (what most Raspberry Pi
// setups have). Lines are named by chip label (or /dev/gpiochipN) and offset and resolved to the
// global number onoff wants by sysfs.ts; the number is never configured directly.
//
// Two things differ from a plain `new Gpio(n, 'in', edge, { debounceTimeout })`:
//  - Debounce is a lock-out from the first edge (EdgeFilter, shared with the simulator), not
//    onoff's debounceTimeout: that one is lodash's trailing debounce, which reports an edge only
//    after the line has been quiet for debounceTimeout, so every trigger would be timed late by at
//    least that much (moving the divert pulse), and a line that keeps chattering never reports.
//  - Edge times are process.hrtime.bigint() taken first thing in the epoll callback: sysfs gives
//    no kernel timestamp; hrtime is CLOCK_MONOTONIC, the same clock as SystemClock.
//
// onoff always talks to /sys/class/gpio (hard-coded in the package); sysfsRoot only moves where
// lines are resolved, for tests.
//
// Divert pulses: when the native addon loads (and gpio.nativePulses is not 'off') each output gets
// the native pulse thread, driving the line's sysfs `value` file (<sysfsRoot>/gpioN/value, the file
// onoff writes too; logical levels, the kernel applies active_low) at absolute monotonic
// deadlines, and the binding offers PulseScheduling as the character-device binding does.
// Without the addon the divert scheduler runs on JS timers.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log.js';
import { silentLogger } from '../log.js';
import type { NativeAddon } from '../native/addon.js';
import type { PulseScheduling } from './chardev.js';
import { choosePulseEngine, OutputPulser, pulseScheduling, type NativePulsesMode, type PulseEngineChoice } from './native-pulses.js';
import { checkDebounce, checkEdge, checkLevel, checkSpec, EdgeFilter, lineName } from './sim.js';
import { DEFAULT_SYSFS_ROOT, resolveSysfsLine, sysfsValuePath } from './sysfs.js';
import type { Edge, EdgeEvent, GpioBinding, GpioInput, GpioOutput, LineSpec } from './types.js';
import { GpioError } from './types.js';

/** The part of onoff's Gpio instance this binding uses. */
export interface OnoffGpioLike {
  read(): Promise<0 | 1>;
  write(value: 0 | 1): Promise<void>;
  writeSync(value: 0 | 1): void;
  watch(cb: (err: Error | null | undefined, value: 0 | 1) => void): void;
  unwatchAll(): void;
  unexport(): void;
}

/** The shape of onoff's Gpio class (a seam for unit tests; default: the real one, loaded lazily). */
export interface OnoffGpioClass {
  new (
    gpio: number,
    direction: 'in' | 'out' | 'high' | 'low',
    edge?: 'none' | 'rising' | 'falling' | 'both',
    options?: { debounceTimeout?: number; activeLow?: boolean; reconfigureDirection?: boolean },
  ): OnoffGpioLike;
  readonly accessible: boolean;
}

export interface OnoffGpioOptions {
  /** Where chips are looked up (default /sys/class/gpio). */
  sysfsRoot?: string;
  /** gpio bus devices dir for /dev/gpiochipN names (default derived from sysfsRoot). */
  busRoot?: string;
  log?: Logger;
  /** onoff's Gpio class; tests pass a fake. Default: `import('onoff')` on first open. */
  gpioClass?: OnoffGpioClass;
  /** 'auto' (default): outputs' pulses from the native pulse thread when the addon loads; 'off': JS timers. */
  nativePulses?: NativePulsesMode;
  /** SCHED_FIFO for the pulse threads when allowed (default true), as gpio.realtime for chardev. */
  realtime?: boolean;
  /** The addon (tests); null: none; default: loaded when the binding is made. */
  addon?: NativeAddon | null;
}

/** Why onoff cannot be used here, in words an operator can act on. */
function unavailable(): GpioError {
  const exportPath = join(DEFAULT_SYSFS_ROOT, 'export');
  const why = existsSync(exportPath)
    ? `${exportPath} is not writable by this user (run as root, or give the gpio group access via udev)`
    : `${exportPath} does not exist (kernel built without CONFIG_GPIO_SYSFS, or /sys not mounted)`;
  return new GpioError(`sysfs GPIO is not available here: ${why}. Use the character-device backend (/dev/gpiochipN), or gpio.backend 'sim'.`);
}

/** Turn an error from onoff (fs calls on sysfs) into a GpioError naming the line. */
function mapError(err: unknown, what: string, gpio: number): GpioError {
  if (err instanceof GpioError) return err;
  const e = err as NodeJS.ErrnoException;
  const msg = e?.message ?? String(err);
  switch (e?.code) {
    case 'EBUSY':
      return new GpioError(`${what} (sysfs gpio${gpio}) is busy: claimed by a kernel driver or another process (${msg})`);
    case 'EACCES':
    case 'EPERM':
      return new GpioError(`${what} (sysfs gpio${gpio}): permission denied (run as root, or give the gpio group access via udev) (${msg})`);
    case 'EINVAL':
      return new GpioError(`${what} (sysfs gpio${gpio}): the kernel refused the request (${msg})`);
    case 'ENOENT':
      return new GpioError(`${what} (sysfs gpio${gpio}): a sysfs file is missing, e.g. no 'edge' on a line without interrupts (${msg})`);
    default:
      return new GpioError(`${what} (sysfs gpio${gpio}): ${msg}`);
  }
}

export class OnoffGpio implements GpioBinding, Partial<PulseScheduling> {
  readonly name = 'onoff';
  /** Where divert pulses come from, and why (the agent logs it). */
  readonly pulseEngine: PulseEngineChoice;
  // Set (own properties) only with the native engine, so canSchedulePulses() tells the truth.
  schedulePulse?: PulseScheduling['schedulePulse'];
  cancelPulses?: PulseScheduling['cancelPulses'];
  onPulseEdge?: PulseScheduling['onPulseEdge'];
  pulseStats?: PulseScheduling['pulseStats'];
  private readonly realtime: boolean;
  private readonly sysfsRoot: string;
  private readonly busRoot: string | undefined;
  private readonly log: Logger;
  private gpioClass: OnoffGpioClass | undefined;
  /** Open lines by global number: sysfs itself lets one process export a line twice. */
  private readonly open = new Map<number, OnoffInput | OnoffOutput>();
  private closed = false;

  constructor(opts: OnoffGpioOptions = {}) {
    this.sysfsRoot = opts.sysfsRoot ?? DEFAULT_SYSFS_ROOT;
    this.busRoot = opts.busRoot;
    this.log = opts.log ?? silentLogger;
    this.gpioClass = opts.gpioClass;
    this.realtime = opts.realtime ?? true;
    this.pulseEngine = choosePulseEngine({ nativePulses: opts.nativePulses, addon: opts.addon });
    if (this.pulseEngine.engine === 'native') Object.assign(this, pulseScheduling((o, op) => this.pulser(o, op)));
    if (!opts.gpioClass && this.sysfsRoot !== DEFAULT_SYSFS_ROOT) {
      this.log.warn('gpio: sysfsRoot differs from /sys/class/gpio, but onoff always uses /sys/class/gpio', { sysfsRoot: this.sysfsRoot });
    }
  }

  private pulser(output: GpioOutput, op: string): OutputPulser {
    if (!(output instanceof OnoffOutput) || this.open.get(output.gpio) !== output) {
      throw new GpioError(`${op}: the output was not opened by this onoff binding (or is closed)`);
    }
    if (!output.pulser) {
      throw new GpioError(`${op} on ${output.what}: this output has no native pulse engine (its value file could not be opened); use JS timers`);
    }
    return output.pulser;
  }

  /** Whether the native pulse thread drives this output (false: schedule its pulses on JS timers). */
  hasNativePulses(output: GpioOutput): boolean {
    return output instanceof OnoffOutput && output.pulser !== undefined && this.open.get(output.gpio) === output;
  }

  private async load(): Promise<OnoffGpioClass> {
    // Lazy: the sim backend never loads onoff's native epoll addon.
    this.gpioClass ??= (await import('onoff')).Gpio as unknown as OnoffGpioClass;
    return this.gpioClass;
  }

  /** Check the request, resolve the line and reserve it. Synchronous after load(), so no race. */
  private async prepare(spec: LineSpec, what: string): Promise<{ Gpio: OnoffGpioClass; gpio: number }> {
    if (this.closed) throw new GpioError(`cannot open ${what}: the GPIO binding is closed`);
    const Gpio = await this.load();
    if (!Gpio.accessible) throw unavailable();
    const { gpio, chip } = resolveSysfsLine(spec, { sysfsRoot: this.sysfsRoot, busRoot: this.busRoot });
    const other = this.open.get(gpio);
    if (other) {
      throw new GpioError(`line ${what} is busy: already open as ${other instanceof OnoffInput ? 'an input' : 'an output'} (sysfs gpio${gpio})`);
    }
    if (existsSync(join(this.sysfsRoot, `gpio${gpio}`))) {
      // Left exported by a crashed run or another tool: onoff reuses the export, we take it over.
      this.log.warn('gpio: line was already exported; taking it over', { line: what, gpio, chip: chip.label });
    }
    return { Gpio, gpio };
  }

  async openInput(spec: LineSpec, opts: { edge: Edge; debounceMs?: number }): Promise<GpioInput> {
    checkSpec(spec);
    const what = `input ${lineName(spec)}`;
    checkEdge(opts?.edge, what);
    const debounceMs = checkDebounce(opts.debounceMs, what);
    const { Gpio, gpio } = await this.prepare(spec, lineName(spec));
    let g: OnoffGpioLike;
    try {
      g = new Gpio(gpio, 'in', opts.edge, { activeLow: spec.activeLow === true });
    } catch (err) {
      throw mapError(err, what, gpio);
    }
    const input = new OnoffInput(g, gpio, what, new EdgeFilter(opts.edge, debounceMs), this.log, () => this.open.delete(gpio));
    this.open.set(gpio, input);
    this.log.debug('gpio: input open', { line: lineName(spec), gpio, edge: opts.edge, debounceMs });
    return input;
  }

  async openOutput(spec: LineSpec, opts: { initial: 0 | 1 }): Promise<GpioOutput> {
    checkSpec(spec);
    const what = `output ${lineName(spec)}`;
    checkLevel(opts?.initial, `${what} initial`);
    const { Gpio, gpio } = await this.prepare(spec, lineName(spec));
    // sysfs 'high'/'low' set the direction and the level in one step (no glitch), but they are
    // raw electrical levels (gpiod_direction_output_raw): apply activeLow ourselves.
    const electrical = opts.initial ^ (spec.activeLow ? 1 : 0);
    let g: OnoffGpioLike;
    try {
      g = new Gpio(gpio, electrical ? 'high' : 'low', 'none', { activeLow: spec.activeLow === true });
    } catch (err) {
      throw mapError(err, what, gpio);
    }
    let pulser: OutputPulser | undefined;
    const addon = this.pulseEngine.addon;
    if (addon) {
      const path = sysfsValuePath(gpio, { sysfsRoot: this.sysfsRoot });
      try {
        const timer = new addon.gpio.PulseTimer({ realtime: this.realtime, path });
        timer.noteLevel(opts.initial);
        pulser = new OutputPulser(timer, what, this.log);
      } catch (err) {
        this.log.warn('gpio: native pulses unavailable for this output (its value file cannot be opened); its pulses run on JS timers', {
          line: lineName(spec),
          path,
          error: (err as Error).message,
        });
      }
    }
    const output = new OnoffOutput(g, gpio, what, this.log, () => this.open.delete(gpio), pulser);
    this.open.set(gpio, output);
    this.log.debug('gpio: output open', { line: lineName(spec), gpio, initial: opts.initial });
    return output;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const line of [...this.open.values()]) await line.close();
  }
}

class OnoffInput implements GpioInput {
  private readonly watchers = new Set<(ev: EdgeEvent) => void>();
  private watching = false;
  private closed = false;

  constructor(
    private readonly g: OnoffGpioLike,
    private readonly gpio: number,
    private readonly what: string,
    private readonly filter: EdgeFilter,
    private readonly log: Logger,
    private readonly release: () => void,
  ) {}

  private check(op: string): void {
    if (this.closed) throw new GpioError(`${op} on ${this.what}: the line is closed`);
  }

  async read(): Promise<0 | 1> {
    this.check('read');
    try {
      return await this.g.read();
    } catch (err) {
      throw mapError(err, `read ${this.what}`, this.gpio);
    }
  }

  watch(cb: (ev: EdgeEvent) => void): () => void {
    this.check('watch');
    this.watchers.add(cb);
    if (!this.watching) {
      this.watching = true;
      this.g.watch((err, value) => {
        const timeNs = process.hrtime.bigint(); // first: the closest we get to the edge
        if (err) {
          this.log.warn('gpio: edge callback error', { line: this.what, err });
          return;
        }
        if (this.closed || !this.filter.accept(value, timeNs)) return;
        for (const w of [...this.watchers]) w({ value, timeNs });
      });
    }
    return () => void this.watchers.delete(cb);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watchers.clear();
    this.release();
    try {
      this.g.unexport(); // also unwatches
    } catch (err) {
      this.log.warn('gpio: unexport failed', { line: this.what, err });
    }
  }
}

class OnoffOutput implements GpioOutput {
  private closed = false;

  constructor(
    private readonly g: OnoffGpioLike,
    readonly gpio: number,
    readonly what: string,
    private readonly log: Logger,
    private readonly release: () => void,
    /** The native pulse thread driving this line's value file, when there is one. */
    readonly pulser?: OutputPulser,
  ) {}

  private check(op: string): void {
    if (this.closed) throw new GpioError(`${op} on ${this.what}: the line is closed`);
  }

  async write(value: 0 | 1): Promise<void> {
    this.check('write');
    checkLevel(value, `write ${this.what}`);
    try {
      await this.g.write(value);
    } catch (err) {
      throw mapError(err, `write ${this.what}`, this.gpio);
    }
    this.pulser?.noteLevel(value);
  }

  writeSync(value: 0 | 1): void {
    this.check('write');
    checkLevel(value, `write ${this.what}`);
    try {
      this.g.writeSync(value);
    } catch (err) {
      throw mapError(err, `write ${this.what}`, this.gpio);
    }
    this.pulser?.noteLevel(value);
  }

  async read(): Promise<0 | 1> {
    this.check('read');
    try {
      return await this.g.read();
    } catch (err) {
      throw mapError(err, `read ${this.what}`, this.gpio);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.release();
    // Pulses first: pending ones dropped, the thread stopped, a pulse holding the line on driven
    // off (through the value file, before the line is unexported).
    try {
      this.pulser?.close();
    } catch (err) {
      this.log.warn('gpio: stopping the pulse thread failed', { line: this.what, err });
    }
    try {
      this.g.unexport();
    } catch (err) {
      this.log.warn('gpio: unexport failed', { line: this.what, err });
    }
  }
}
