// In-memory GPIO: the maintained mock every test and the demo use. It rejects the same bad input as
// the real bindings (the shared contract suite in test/unit/gpio-contract.ts holds both to it) and
// adds helpers a test needs: drive() an input as the outside world would, level() and history()
// of the pin as a probe would see it.
//
// Divert pulses: on the SystemClock with the native addon loaded (nativePulses 'auto', the
// default) the outputs' pulses come from the native pulse thread (a line-less PulseTimer), and the
// pin's level and history follow the thread's edge reports, timed by the thread: the demo and the
// agent bench then time the divert exactly as a real line would. On a FakeClock, or with 'off',
// the binding offers no PulseScheduling and the divert scheduler runs on the clock's timers.
import type { Clock } from '../clock.js';
import { msToNs } from '../clock.js';
import type { Logger } from '../log.js';
import { silentLogger } from '../log.js';
import type { NativeAddon } from '../native/addon.js';
import type { PulseScheduling } from './chardev.js';
import { choosePulseEngine, OutputPulser, pulseScheduling, type NativePulsesMode, type PulseEngineChoice } from './native-pulses.js';
import type { Edge, EdgeEvent, GpioBinding, GpioInput, GpioOutput, LineSpec } from './types.js';
import { GpioError } from './types.js';

// ── validation shared by every binding (onoff.ts imports these) so they fail alike ─────────────

export function checkLevel(value: unknown, what: string): asserts value is 0 | 1 {
  if (value !== 0 && value !== 1) {
    throw new GpioError(`${what}: level must be 0 or 1, got ${describe(value)}`);
  }
}

export function checkEdge(edge: unknown, what: string): asserts edge is Edge {
  if (edge !== 'rising' && edge !== 'falling' && edge !== 'both') {
    throw new GpioError(`${what}: edge must be 'rising', 'falling' or 'both', got ${describe(edge)}`);
  }
}

export function checkDebounce(ms: unknown, what: string): number {
  if (ms === undefined) return 0;
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
    throw new GpioError(`${what}: debounceMs must be a number >= 0, got ${describe(ms)}`);
  }
  return ms;
}

export function checkSpec(spec: LineSpec): void {
  if (!spec || typeof spec !== 'object' || typeof spec.chip !== 'string' || spec.chip === '') {
    throw new GpioError(`bad line spec ${JSON.stringify(spec)}: expected { chip, line }`);
  }
  if (!Number.isInteger(spec.line) || spec.line < 0) {
    throw new GpioError(`line ${describe(spec.line)} on chip '${spec.chip}': the offset must be an integer >= 0`);
  }
}

export function lineName(spec: LineSpec): string {
  return `${spec.chip}:${spec.line}`;
}

function describe(v: unknown): string {
  return typeof v === 'string' ? `'${v}'` : typeof v === 'bigint' ? `${v}n` : String(v);
}

/**
 * Edge filter used by every binding: the selected edges pass, and an edge within debounceMs of the
 * last accepted edge is ignored (a lock-out from the first edge, so the accepted edge keeps its
 * own time: a photo-eye's leading edge is the part's position on the belt).
 */
export class EdgeFilter {
  private lastNs: bigint | undefined;
  private readonly debounceNs: bigint;
  constructor(
    private readonly edge: Edge,
    debounceMs: number,
  ) {
    this.debounceNs = msToNs(debounceMs);
  }
  accept(value: 0 | 1, timeNs: bigint): boolean {
    const selected = this.edge === 'both' || (this.edge === 'rising') === (value === 1);
    if (!selected) return false;
    if (this.lastNs !== undefined && timeNs - this.lastNs < this.debounceNs) return false;
    this.lastNs = timeNs;
    return true;
  }
}

// ── the simulator ──────────────────────────────────────────────────────────────────────────────

export interface SimChip {
  /** Label, as a kernel chip has one (e.g. 'sim0', 'pinctrl-bcm2835'). */
  label: string;
  /** Number of lines (offsets 0..lines-1). */
  lines: number;
  /** Character-device path that names the same chip; default '/dev/gpiochipN', N its index. */
  path?: string;
}

export interface SimGpioOptions {
  clock: Clock;
  /** Default: one chip 'sim0' with 32 lines, also reachable as '/dev/gpiochip0'. */
  chips?: SimChip[];
  /**
   * 'auto' (default): outputs' pulses from the native pulse thread when the addon loads and the
   * clock is a SystemClock; 'off': the divert scheduler's JS timers.
   */
  nativePulses?: NativePulsesMode;
  /** SCHED_FIFO for the pulse threads when allowed (default true), as on a real line. */
  realtime?: boolean;
  /** The addon (tests); null: none; default: loaded when the binding is made. */
  addon?: NativeAddon | null;
  log?: Logger;
}

/** Level changes kept per line (see SimGpio.history): ~50k entries, a few MB. */
export const HISTORY_KEPT = 50_000;

export interface LevelChange {
  /** Electrical level of the pin. */
  value: 0 | 1;
  /** Monotonic time of the change (ns). */
  timeNs: bigint;
}

interface LineState {
  /** Electrical level. */
  level: 0 | 1;
  owner?: SimInput | SimOutput;
  history: LevelChange[];
}

export class SimGpio implements GpioBinding, Partial<PulseScheduling> {
  readonly name = 'sim';
  readonly clock: Clock;
  /** Where divert pulses come from, and why (the agent logs it). */
  readonly pulseEngine: PulseEngineChoice;
  // Set (own properties) only with the native engine, so canSchedulePulses() tells the truth.
  schedulePulse?: PulseScheduling['schedulePulse'];
  cancelPulses?: PulseScheduling['cancelPulses'];
  onPulseEdge?: PulseScheduling['onPulseEdge'];
  pulseStats?: PulseScheduling['pulseStats'];
  private readonly realtime: boolean;
  private readonly log: Logger;
  private readonly chipList: Required<SimChip>[];
  private readonly lines = new Map<string, LineState>();
  private closed = false;

  constructor(opts: SimGpioOptions) {
    this.clock = opts.clock;
    this.realtime = opts.realtime ?? true;
    this.log = opts.log ?? silentLogger;
    this.pulseEngine = choosePulseEngine({ nativePulses: opts.nativePulses, addon: opts.addon, clock: opts.clock });
    if (this.pulseEngine.engine === 'native') Object.assign(this, pulseScheduling((o, op) => this.pulser(o, op)));
    const chips = opts.chips ?? [{ label: 'sim0', lines: 32 }];
    this.chipList = chips.map((c, i) => {
      if (!Number.isInteger(c.lines) || c.lines < 1) throw new GpioError(`sim chip '${c.label}': lines must be an integer >= 1`);
      return { label: c.label, lines: c.lines, path: c.path ?? `/dev/gpiochip${i}` };
    });
  }

  chips(): readonly Required<SimChip>[] {
    return this.chipList;
  }

  async openInput(spec: LineSpec, opts: { edge: Edge; debounceMs?: number }): Promise<GpioInput> {
    checkSpec(spec);
    const what = `input ${lineName(spec)}`;
    checkEdge(opts?.edge, what);
    const debounceMs = checkDebounce(opts.debounceMs, what);
    const [key, state] = this.claim(spec);
    const input = new SimInput(this, key, state, spec, new EdgeFilter(opts.edge, debounceMs));
    state.owner = input;
    return input;
  }

  async openOutput(spec: LineSpec, opts: { initial: 0 | 1 }): Promise<GpioOutput> {
    checkSpec(spec);
    checkLevel(opts?.initial, `output ${lineName(spec)} initial`);
    const [key, state] = this.claim(spec);
    const output = new SimOutput(this, key, state, spec);
    state.owner = output;
    output.set(opts.initial, true);
    const addon = this.pulseEngine.addon;
    if (addon) {
      const timer = new addon.gpio.PulseTimer({ realtime: this.realtime });
      timer.noteLevel(opts.initial);
      output.pulser = new OutputPulser(timer, `output ${key}`, this.log, (level, atNs) => output.pulsed(level, atNs));
    }
    return output;
  }

  private pulser(output: GpioOutput, op: string): OutputPulser {
    if (!(output instanceof SimOutput) || output.isClosed() || output.sim !== this || !output.pulser) {
      throw new GpioError(`${op}: the output was not opened by this sim binding (or is closed)`);
    }
    return output.pulser;
  }

  /** Whether the native pulse thread drives this output (false: schedule its pulses on JS timers). */
  hasNativePulses(output: GpioOutput): boolean {
    return output instanceof SimOutput && output.sim === this && !output.isClosed() && output.pulser !== undefined;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const state of this.lines.values()) await state.owner?.close();
  }

  /**
   * Set the electrical level of a line as the outside world would (a photo-eye on an input).
   * An open input sees an edge when the level changes, filtered by its edge selection and
   * debounce exactly as a real binding filters; the event is delivered synchronously, timed by
   * the clock. Works on lines nobody has opened yet (their level is read when they are opened).
   */
  drive(spec: LineSpec, value: 0 | 1): void {
    checkLevel(value, `drive ${lineName(spec)}`);
    const [, state] = this.resolve(spec);
    if (state.owner instanceof SimOutput) {
      throw new GpioError(`drive ${lineName(spec)}: the line is open as an output; drive() simulates a signal on an input`);
    }
    if (state.level === value) return;
    state.level = value;
    if (state.owner instanceof SimInput) state.owner.edge(this.clock.nowNs());
  }

  /** Electrical level of a line (what a probe on the pin reads; activeLow is not applied). */
  level(spec: LineSpec): 0 | 1 {
    return this.resolve(spec)[1].level;
  }

  /**
   * Electrical level changes of a line driven as an output, oldest first: the first entry is the
   * level set when the output was opened, then one entry per change (writing the same level
   * again is not a change). activeLow is not applied: an active-low divert pulse reads 1, 0, 1.
   * Bounded: past 2 × HISTORY_KEPT changes the oldest are dropped down to the last HISTORY_KEPT.
   */
  history(spec: LineSpec): LevelChange[] {
    return this.resolve(spec)[1].history.map((h) => ({ ...h }));
  }

  /** Resolve a spec to its state, creating it on first use; rejects unknown chips and offsets. */
  private resolve(spec: LineSpec): [string, LineState] {
    checkSpec(spec);
    const chip = this.chipList.find((c) => c.label === spec.chip || c.path === spec.chip);
    if (!chip) {
      const known = this.chipList.map((c) => `'${c.label}' (${c.path})`).join(', ');
      throw new GpioError(`unknown GPIO chip '${spec.chip}'; chips here: ${known}`);
    }
    if (spec.line >= chip.lines) {
      throw new GpioError(`line ${spec.line} is beyond chip '${chip.label}', which has ${chip.lines} lines (0..${chip.lines - 1})`);
    }
    // Keyed by label so '/dev/gpiochip0' and 'sim0' name the same line.
    const key = `${chip.label}:${spec.line}`;
    let state = this.lines.get(key);
    if (!state) {
      state = { level: 0, history: [] };
      this.lines.set(key, state);
    }
    return [key, state];
  }

  private claim(spec: LineSpec): [string, LineState] {
    if (this.closed) throw new GpioError(`cannot open ${lineName(spec)}: the GPIO binding is closed`);
    const [key, state] = this.resolve(spec);
    if (state.owner) {
      const as = state.owner instanceof SimInput ? 'an input' : 'an output';
      throw new GpioError(`line ${key} is busy: already open as ${as}`);
    }
    return [key, state];
  }

  /** @internal Called by a line handle on close. */
  release(state: LineState, owner: SimInput | SimOutput): void {
    if (state.owner === owner) state.owner = undefined;
  }
}

class SimInput implements GpioInput {
  private readonly watchers = new Set<(ev: EdgeEvent) => void>();
  private closed = false;
  private last: 0 | 1;

  constructor(
    private readonly sim: SimGpio,
    private readonly key: string,
    private readonly state: LineState,
    private readonly spec: LineSpec,
    private readonly filter: EdgeFilter,
  ) {
    this.last = this.logical();
  }

  private logical(): 0 | 1 {
    return (this.state.level ^ (this.spec.activeLow ? 1 : 0)) as 0 | 1;
  }

  private check(op: string): void {
    if (this.closed) throw new GpioError(`${op} on input ${this.key}: the line is closed`);
  }

  /** The level changed (the simulator calls this): deliver it if the filter accepts the edge. */
  edge(timeNs: bigint): void {
    const value = this.logical();
    if (value === this.last) return;
    this.last = value;
    if (!this.filter.accept(value, timeNs)) return;
    for (const cb of [...this.watchers]) cb({ value, timeNs });
  }

  async read(): Promise<0 | 1> {
    this.check('read');
    return this.logical();
  }

  watch(cb: (ev: EdgeEvent) => void): () => void {
    this.check('watch');
    this.watchers.add(cb);
    return () => void this.watchers.delete(cb);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watchers.clear();
    this.sim.release(this.state, this);
  }
}

class SimOutput implements GpioOutput {
  private closed = false;
  /** The native pulse thread (line-less) whose edges set this pin, when there is one. */
  pulser: OutputPulser | undefined;

  constructor(
    readonly sim: SimGpio,
    private readonly key: string,
    private readonly state: LineState,
    private readonly spec: LineSpec,
  ) {}

  private check(op: string): void {
    if (this.closed) throw new GpioError(`${op} on output ${this.key}: the line is closed`);
  }

  isClosed(): boolean {
    return this.closed;
  }

  /** Set the logical level; records the electrical change (at timeNs, default now). */
  set(value: 0 | 1, opening = false, timeNs?: bigint): void {
    const level = (value ^ (this.spec.activeLow ? 1 : 0)) as 0 | 1;
    if (!opening && level === this.state.level) return;
    this.state.level = level;
    const h = this.state.history;
    h.push({ value: level, timeNs: timeNs ?? this.sim.clock.nowNs() });
    // A demo left running for weeks must not grow: keep the most recent HISTORY_KEPT (amortised O(1)).
    if (h.length >= 2 * HISTORY_KEPT) h.splice(0, h.length - HISTORY_KEPT);
  }

  /** The pulse thread drove the (logical) level at atNs. */
  pulsed(level: 0 | 1, atNs: bigint): void {
    if (!this.closed) this.set(level, false, atNs);
  }

  async write(value: 0 | 1): Promise<void> {
    this.writeSync(value);
  }

  writeSync(value: 0 | 1): void {
    this.check('write');
    checkLevel(value, `write ${this.key}`);
    this.set(value);
    this.pulser?.noteLevel(value);
  }

  async read(): Promise<0 | 1> {
    this.check('read');
    return (this.state.level ^ (this.spec.activeLow ? 1 : 0)) as 0 | 1;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // Pulses first: pending ones dropped, the thread stopped, a pulse holding the pin on ended.
    // Edge reports still on their way to JS are dropped: the pin takes the engine's last level.
    if (this.pulser) {
      this.pulser.close();
      this.set(this.pulser.level());
    }
    this.closed = true;
    this.sim.release(this.state, this);
  }
}
