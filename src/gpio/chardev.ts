// GPIO over the kernel's character device (/dev/gpiochipN, uAPI v2) through linesight's native
// addon. Against sysfs/onoff it gives:
//  - lines named by chip label or path and offset, resolved with GPIO_GET_CHIPINFO (no global
//    numbers at all);
//  - edge events stamped by the kernel (CLOCK_MONOTONIC, the clock of process.hrtime and
//    SystemClock), delivered without polling;
//  - kernel debounce (GPIO_V2_LINE_ATTR_ID_DEBOUNCE), or the shared lock-out filter;
//  - outputs whose initial level is set together with the direction (no glitch);
//  - schedulePulse(): the divert pulse driven by a native thread at an absolute monotonic deadline,
//    so neither the event loop nor GC can make it late;
//  - lines released by the kernel when the fd closes, including when the process dies.
import type { Logger } from '../log.js';
import { silentLogger } from '../log.js';
import { msToNs } from '../clock.js';
import type { NativeAddon, NativeChipInfo, NativeError, NativeLine, NativeLineInfo, NativePulseStats } from '../native/addon.js';
import { loadNative } from '../native/addon.js';
import { checkDebounce, checkEdge, checkLevel, checkSpec, EdgeFilter, lineName } from './sim.js';
import type { Edge, EdgeEvent, GpioBinding, GpioInput, GpioOutput, LineSpec } from './types.js';
import { GpioError } from './types.js';

export interface ChardevGpioOptions {
  log?: Logger;
  /** Where gpiochipN devices are looked for (default /dev). */
  devDir?: string;
  /** The consumer name the kernel shows for our lines (gpioinfo). */
  consumer?: string;
  /**
   * 'lockout' (default, the GPIO contract's semantics, as sim and onoff): the shared EdgeFilter
   * drops edges within debounceMs of the last accepted one; an accepted edge keeps its own kernel
   * timestamp, so the part's position on the belt is exact.
   * 'kernel': GPIO_V2_LINE_ATTR_ID_DEBOUNCE: the kernel reports an edge only once the line has
   * been stable for debounceMs, so glitches shorter than that never make a part (noisy cables);
   * the price is the edge's time: it is when the kernel accepted it, i.e. (with the kernel's
   * software debounce) the last transition + debounceMs, and a pulse shorter than debounceMs is
   * not reported at all.
   */
  debounce?: 'kernel' | 'lockout';
  /**
   * SCHED_FIFO (priority 50) for the pulse threads, default true: at normal priority a busy
   * machine delays the thread's wake-up by milliseconds now and then (see bench/pulse-timing.ts).
   * Needs root, CAP_SYS_NICE or LimitRTPRIO=50 in the unit; when refused the thread runs at normal
   * priority (pulseStats().realtime says which). The thread sleeps between edges.
   */
  realtime?: boolean;
  /** The addon (tests); default: loaded on first open. */
  addon?: NativeAddon;
}

/** Bindings that drive a divert pulse natively at an absolute monotonic deadline. */
export interface PulseScheduling {
  /**
   * Pulse `output` (from this binding) high at `atNs` (CLOCK_MONOTONIC, SystemClock.nowNs()) for
   * `widthMs`. Overlapping pulses merge. Returns false when the whole pulse is already in the past.
   */
  schedulePulse(output: GpioOutput, atNs: bigint, widthMs: number): boolean;
  /** Drop pending pulses; an output held high by a pulse goes low. */
  cancelPulses(output: GpioOutput): void;
  /** Told of each edge the pulse thread drove: level, when (ns), when it was due (ns). */
  onPulseEdge(output: GpioOutput, cb: (ev: PulseEdge) => void): void;
  pulseStats(output: GpioOutput): NativePulseStats;
}

export interface PulseEdge {
  level: 0 | 1;
  atNs: bigint;
  deadlineNs: bigint;
  /** Set when the write failed (the errno's name). */
  error?: string;
}

export function canSchedulePulses(b: GpioBinding): b is GpioBinding & PulseScheduling {
  return typeof (b as Partial<PulseScheduling>).schedulePulse === 'function';
}

/** A native error turned into words an operator can act on. */
function mapError(err: unknown, what: string): GpioError {
  if (err instanceof GpioError) return err;
  const e = err as NativeError;
  const msg = e?.message ?? String(err);
  switch (e?.code) {
    case 'EBUSY':
      return new GpioError(`${what} is busy: held by a kernel driver or another process/consumer (${msg})`);
    case 'EACCES':
    case 'EPERM':
      return new GpioError(`${what}: permission denied (run as root, or give the gpio group rw on /dev/gpiochip* via udev) (${msg})`);
    case 'ENOENT':
      return new GpioError(`${what}: no such GPIO chip (${msg})`);
    case 'ENOTTY':
      return new GpioError(`${what}: not a GPIO character device (${msg})`);
    case 'EINVAL':
      return new GpioError(`${what}: the kernel refused the request (${msg})`);
    default:
      return new GpioError(`${what}: ${msg}`);
  }
}

function describeChips(chips: NativeChipInfo[]): string {
  return chips.length ? chips.map((c) => `'${c.label}' (${c.path}, ${c.lines} lines)`).join(', ') : 'none';
}

export class ChardevGpio implements GpioBinding, PulseScheduling {
  readonly name = 'chardev';
  private readonly log: Logger;
  private readonly devDir: string;
  private readonly consumer: string;
  private readonly debounce: 'kernel' | 'lockout';
  private readonly realtime: boolean;
  private addon: NativeAddon | undefined;
  private readonly open = new Set<ChardevInput | ChardevOutput>();
  private closed = false;

  constructor(opts: ChardevGpioOptions = {}) {
    this.log = opts.log ?? silentLogger;
    this.devDir = opts.devDir ?? '/dev';
    this.consumer = opts.consumer ?? 'linesight';
    this.debounce = opts.debounce ?? 'lockout';
    this.realtime = opts.realtime ?? true;
    this.addon = opts.addon;
  }

  private native(): NativeAddon {
    if (!this.addon) {
      try {
        this.addon = loadNative();
      } catch (err) {
        throw new GpioError(`gpio backend 'chardev' needs the native addon: ${(err as Error).message}`);
      }
    }
    return this.addon;
  }

  /** The chips the kernel offers (GPIO_GET_CHIPINFO on each /dev/gpiochipN). */
  async listChips(): Promise<NativeChipInfo[]> {
    return [...(await this.native().gpio.listChips(this.devDir))];
  }

  /** Find a chip by path ('/dev/gpiochip0'), kernel name ('gpiochip0') or label. */
  async resolveChip(chip: string): Promise<NativeChipInfo> {
    const gpio = this.native().gpio;
    if (chip.startsWith('/')) {
      try {
        return await gpio.chipInfo(chip);
      } catch (err) {
        const e = err as NativeError;
        if (e.code === 'ENOENT') {
          let here = 'none';
          try {
            here = describeChips(await gpio.listChips(this.devDir));
          } catch {
            // the listing is only for the message
          }
          throw new GpioError(`GPIO chip '${chip}' does not exist; chips here: ${here}`);
        }
        throw mapError(err, `GPIO chip '${chip}'`);
      }
    }
    const chips = await gpio.listChips(this.devDir);
    const found = chips.filter((c) => c.label === chip || c.name === chip);
    if (found.length === 0) {
      const why = chips.length
        ? `chips here: ${describeChips(chips)}`
        : `there are no GPIO character devices in ${this.devDir} (no gpiochipN: the kernel registered no GPIO chip, or /dev is not populated)` +
          (chips.errors.length ? `; errors: ${chips.errors.join('; ')}` : '');
      throw new GpioError(`no GPIO chip labelled '${chip}'; ${why}`);
    }
    if (found.length > 1) {
      this.log.warn('gpio: several chips carry this label; using the first', { label: chip, chips: found.map((c) => c.path) });
    }
    return found[0]!;
  }

  /** How the kernel sees a line now (who holds it, direction, debounce). */
  async lineInfo(spec: LineSpec): Promise<NativeLineInfo> {
    const chip = await this.resolveChip(spec.chip);
    return this.native().gpio.lineInfo(chip.path, spec.line);
  }

  private async request(spec: LineSpec, what: string, req: Omit<Parameters<NativeAddon['gpio']['requestLine']>[0], 'path' | 'offset'>) {
    if (this.closed) throw new GpioError(`cannot open ${what}: the GPIO binding is closed`);
    checkSpec(spec);
    const chip = await this.resolveChip(spec.chip);
    if (spec.line >= chip.lines) {
      throw new GpioError(`${what}: offset ${spec.line} is out of range: chip '${chip.label}' (${chip.path}) has ${chip.lines} lines (0..${chip.lines - 1})`);
    }
    try {
      const line = await this.native().gpio.requestLine({
        path: chip.path,
        offset: spec.line,
        activeLow: spec.activeLow === true,
        consumer: this.consumer,
        ...req,
      });
      return { line, chip };
    } catch (err) {
      throw mapError(err, `${what} (${chip.path} line ${spec.line})`);
    }
  }

  async openInput(spec: LineSpec, opts: { edge: Edge; debounceMs?: number }): Promise<GpioInput> {
    const what = `input ${lineName(spec)}`;
    checkEdge(opts?.edge, what);
    const debounceMs = checkDebounce(opts.debounceMs, what);
    const kernel = this.debounce === 'kernel';
    const { line, chip } = await this.request(spec, what, {
      direction: 'input',
      edge: opts.edge,
      debounceUs: kernel ? Math.round(debounceMs * 1000) : 0,
    });
    if (this.closed) {
      line.close();
      throw new GpioError(`cannot open ${what}: the GPIO binding was closed meanwhile`);
    }
    const input = new ChardevInput(line, what, new EdgeFilter(opts.edge, kernel ? 0 : debounceMs), this.log, () => this.open.delete(input));
    this.open.add(input);
    this.log.debug('gpio: input open', { line: lineName(spec), chip: chip.path, label: chip.label, edge: opts.edge, debounceMs, debounce: this.debounce });
    return input;
  }

  async openOutput(spec: LineSpec, opts: { initial: 0 | 1 }): Promise<GpioOutput> {
    const what = `output ${lineName(spec)}`;
    checkLevel(opts?.initial, `${what} initial`);
    // Values in uAPI v2 are logical: the kernel applies activeLow, also to the initial level.
    const { line, chip } = await this.request(spec, what, { direction: 'output', initial: opts.initial, realtime: this.realtime });
    if (this.closed) {
      line.close();
      throw new GpioError(`cannot open ${what}: the GPIO binding was closed meanwhile`);
    }
    const output = new ChardevOutput(line, what, () => this.open.delete(output));
    this.open.add(output);
    this.log.debug('gpio: output open', { line: lineName(spec), chip: chip.path, label: chip.label, initial: opts.initial });
    return output;
  }

  private own(output: GpioOutput, op: string): ChardevOutput {
    if (!(output instanceof ChardevOutput) || !this.open.has(output)) {
      throw new GpioError(`${op}: the output was not opened by this chardev binding (or is closed)`);
    }
    return output;
  }

  schedulePulse(output: GpioOutput, atNs: bigint, widthMs: number): boolean {
    const o = this.own(output, 'schedulePulse');
    if (typeof atNs !== 'bigint') throw new GpioError(`schedulePulse on ${o.what}: atNs must be a bigint (monotonic ns)`);
    if (!(typeof widthMs === 'number' && Number.isFinite(widthMs) && widthMs > 0)) {
      throw new GpioError(`schedulePulse on ${o.what}: widthMs must be a number > 0, got ${String(widthMs)}`);
    }
    try {
      return o.line.schedulePulse(atNs, msToNs(widthMs));
    } catch (err) {
      throw mapError(err, `schedulePulse on ${o.what}`);
    }
  }

  cancelPulses(output: GpioOutput): void {
    this.own(output, 'cancelPulses').line.cancelPulses();
  }

  onPulseEdge(output: GpioOutput, cb: (ev: PulseEdge) => void): void {
    const o = this.own(output, 'onPulseEdge');
    o.line.onPulseEdge((level, atNs, deadlineNs, errno) => {
      const ev: PulseEdge = { level, atNs, deadlineNs };
      if (errno) ev.error = `errno ${errno}`;
      try {
        cb(ev);
      } catch (err) {
        this.log.warn('gpio: pulse edge listener threw', { line: o.what, error: (err as Error).message });
      }
    });
  }

  pulseStats(output: GpioOutput): NativePulseStats {
    return this.own(output, 'pulseStats').line.pulseStats();
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const line of [...this.open]) await line.close();
  }
}

class ChardevInput implements GpioInput {
  private readonly watchers = new Map<(ev: EdgeEvent) => void, bigint>();
  private watching = false;
  private closed = false;

  constructor(
    readonly line: NativeLine,
    readonly what: string,
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
      return await this.line.getValueAsync();
    } catch (err) {
      throw mapError(err, `read ${this.what}`);
    }
  }

  watch(cb: (ev: EdgeEvent) => void): () => void {
    this.check('watch');
    // Edges the kernel queued before this subscription (while nobody read the fd) are not its.
    this.watchers.set(cb, process.hrtime.bigint());
    if (!this.watching) {
      this.watching = true;
      this.line.watch((err, value, timeNs) => {
        if (err) {
          this.log.warn('gpio: edge read failed', { line: this.what, error: err.message });
          return;
        }
        if (this.closed || value === undefined || timeNs === undefined) return;
        if (!this.filter.accept(value, timeNs)) return;
        for (const [w, since] of [...this.watchers]) {
          if (timeNs < since) continue;
          try {
            w({ value, timeNs });
          } catch (e) {
            this.log.warn('gpio: edge watcher threw', { line: this.what, error: (e as Error).message });
          }
        }
      });
    }
    return () => {
      this.watchers.delete(cb);
      if (this.watchers.size === 0 && this.watching && !this.closed) {
        // Let the process exit when nobody listens; the kernel keeps queueing (bounded) meanwhile.
        this.watching = false;
        this.line.unwatch();
      }
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watchers.clear();
    this.release();
    this.line.close();
  }
}

class ChardevOutput implements GpioOutput {
  private closed = false;

  constructor(
    readonly line: NativeLine,
    readonly what: string,
    private readonly release: () => void,
  ) {}

  private check(op: string): void {
    if (this.closed) throw new GpioError(`${op} on ${this.what}: the line is closed`);
  }

  async write(value: 0 | 1): Promise<void> {
    this.check('write');
    checkLevel(value, `write ${this.what}`);
    try {
      await this.line.setValueAsync(value);
    } catch (err) {
      throw mapError(err, `write ${this.what}`);
    }
  }

  writeSync(value: 0 | 1): void {
    this.check('write');
    checkLevel(value, `write ${this.what}`);
    try {
      this.line.setValue(value);
    } catch (err) {
      throw mapError(err, `write ${this.what}`);
    }
  }

  async read(): Promise<0 | 1> {
    this.check('read');
    try {
      return await this.line.getValueAsync();
    } catch (err) {
      throw mapError(err, `read ${this.what}`);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.release();
    this.line.close(); // pending pulses are dropped; the kernel releases the line
  }
}
