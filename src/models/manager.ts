// ModelManager: the Inspector the line uses when models change while it runs. It owns one active
// InferencePool and, during a change, a candidate pool beside it:
//   swap     the candidate is loaded in a new pool (the pool checks the manifest against the
//            model's real I/O), its golden samples must get their expected verdicts, then one
//            assignment switches: inspect() calls already started finish on the pool they began
//            on, new calls go to the new pool, and the old pool stops once its last call is done.
//            So no part waits for a load, and none is answered by a half-switched model.
//   shadow   a candidate runs beside the active model on every Nth line part; its verdicts go to
//            onShadow only (never to the actuator, never awaited by inspect()), with agreement
//            and reject-rate figures; promote() makes it active, clearShadow() drops it.
//   rollback back to the previous model, on command or automatically when a newly activated
//            model's reject or fail-safe rate leaves its bounds within its first `window` parts
//            (the lead calls record(part) for every decided part).
// A refused candidate never touches the running model: the outcome says why.
import { stat } from 'node:fs/promises';
import type { Bus } from '../bus.js';
import { InferenceError, ModelLoadError, type InferenceResult, type Inspector, type InspectorInfo } from '../inference/types.js';
import type { Logger } from '../log.js';
import type { FailSafeReason, Frame, ModelRef, Part, Verdict } from '../part.js';
import { refKey } from './cache.js';
import { describeGoldenFailures, runGolden, type GoldenReport } from './golden.js';
import { parseRef, type BundleOrigin, type ModelStore, type ResolvedBundle } from './registry.js';
import { verifyBundle } from './sign.js';

export interface RollbackBounds {
  /** Parts watched after a model is activated. */
  window: number;
  /** Highest share of rejects (verdict reject) allowed over the window. */
  maxRejectRate?: number;
  /** Highest share of fail-safe parts caused by inference (late, model_error, worker_crash, overload, bad_frame). */
  maxFailSafeRate?: number;
}

export interface ShadowVerdict {
  /** The part, when record(part) named it (line parts); absent for frames never recorded. */
  partId?: string;
  frameSeq: number;
  active: Verdict;
  shadow: Verdict;
  activeModel: ModelRef;
  shadowModel: ModelRef;
  agree: boolean;
}

export interface ShadowStats {
  /** Frames judged by both models. */
  compared: number;
  agreed: number;
  /** agreed / compared (null before the first comparison). */
  agreement: number | null;
  activeRejects: number;
  shadowRejects: number;
  activeRejectRate: number | null;
  shadowRejectRate: number | null;
  /** shadowRejectRate - activeRejectRate. */
  rejectRateDiff: number | null;
  /** Shadow inferences that failed (counted apart, never compared). */
  shadowErrors: number;
  /** Frames the shadow judged but the active model did not (its call failed). */
  activeErrors: number;
}

export interface VersionInfo extends ModelRef {
  ref: string;
  origin: BundleOrigin;
  dir: string;
  signed: boolean;
  keyId?: string;
  loadedAt: string;
  activatedAt?: string;
  golden?: { total: number; passed: number };
}

export interface ModelVersions {
  active?: VersionInfo;
  shadow?: VersionInfo & { everyN: number; stats: ShadowStats };
  previous?: VersionInfo;
  /** The automatic-rollback watch on the active model, while it runs. */
  watch?: { parts: number; window: number; rejects: number; failSafes: number };
  /** A change (swap, shadow, promote, rollback) in progress. */
  changing?: string;
}

export type ChangeAction = 'start' | 'swap' | 'rollback' | 'auto-rollback' | 'shadow' | 'shadow-cleared' | 'promote';

export interface ChangeOutcome {
  ok: boolean;
  action: ChangeAction;
  /** One sentence: what happened, or why it was refused and what to do. */
  message: string;
  /** What was asked for (a reference or a folder). */
  request?: string;
  from?: ModelRef;
  to?: ModelRef;
  golden?: GoldenReport;
  /** Load + validation time of the candidate. */
  loadMs?: number;
  versions: ModelVersions;
}

export interface ModelManagerOptions {
  /** A new, not started pool for a bundle folder (the lead builds an InferencePool with the configured providers/workers). */
  createPool: (modelDir: string) => Inspector;
  log: Logger;
  bus?: Bus;
  /** Resolves references (name@version, name@latest) and verifies folders; without it only folders are accepted (unsigned check). */
  store?: ModelStore;
  /** The model to start with: a reference or a bundle folder. */
  initial: string;
  rollback?: RollbackBounds;
  onShadow?: (r: ShadowVerdict) => void;
  /** Every change, accepted or refused (publish status, reply to a command). */
  onChange?: (o: ChangeOutcome) => void;
  /** How long a finished shadow comparison waits for record(part) to name its part before it is emitted without (default 2000). */
  shadowPartWaitMs?: number;
}

interface Slot {
  pool: Inspector;
  bundle: ResolvedBundle;
  model: ModelRef;
  info: VersionInfo;
  /** The candidate's golden run (when the bundle has samples). */
  golden?: GoldenReport;
  inFlight: number;
  retiring: boolean;
  stopped?: Promise<void>;
}

interface Shadow {
  slot: Slot;
  everyN: number;
  counter: number;
  stats: ShadowStats;
}

interface Watch {
  model: ModelRef;
  bounds: RollbackBounds;
  parts: number;
  rejects: number;
  failSafes: number;
  done: boolean;
}

interface PendingShadow {
  partId?: string;
  result?: ShadowVerdict;
  timer?: NodeJS.Timeout;
  emitted: boolean;
}

/** Fail-safe reasons a model can cause; camera, pause and stop are not the model's doing. */
const MODEL_FAILSAFE = new Set<FailSafeReason>(['late', 'model_error', 'worker_crash', 'overload', 'bad_frame']);

const sameModel = (a: ModelRef | undefined, b: ModelRef | undefined): boolean =>
  !!a && !!b && a.name === b.name && a.version === b.version && a.sha256 === b.sha256;
const msSince = (t: bigint): number => Number(process.hrtime.bigint() - t) / 1e6;
const rate = (n: number, d: number): number | null => (d > 0 ? n / d : null);
const errMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err));

function emptyStats(): ShadowStats {
  return {
    compared: 0, agreed: 0, agreement: null, activeRejects: 0, shadowRejects: 0,
    activeRejectRate: null, shadowRejectRate: null, rejectRateDiff: null, shadowErrors: 0, activeErrors: 0,
  };
}

export class ModelManager implements Inspector {
  private state: 'new' | 'starting' | 'running' | 'stopped' = 'new';
  private active?: Slot;
  private shadow?: Shadow;
  private previous?: { info: VersionInfo; bundle: ResolvedBundle };
  private watch?: Watch;
  /** Pools being loaded or draining: stopped with the manager. */
  private readonly others = new Set<Slot>();
  private changing?: string;
  /** Changes run one at a time; internal ones (automatic rollback) wait their turn. */
  private chain: Promise<unknown> = Promise.resolve();
  private readonly pendingShadow = new WeakMap<Frame, PendingShadow>();
  private readonly log: Logger;

  constructor(private readonly opts: ModelManagerOptions) {
    this.log = opts.log;
  }

  // ---- Inspector -------------------------------------------------------------------------------

  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error(`model manager cannot start: it is ${this.state}`);
    this.state = 'starting';
    const t0 = process.hrtime.bigint();
    let slot: Slot;
    try {
      slot = await this.load(this.opts.initial, true);
    } catch (err) {
      const fallback = this.state === 'starting' ? await this.startFallback(err) : undefined;
      if (!fallback) {
        this.state = 'stopped';
        throw err instanceof ModelLoadError ? err : new ModelLoadError(errMessage(err));
      }
      slot = fallback;
    }
    if (this.state !== 'starting') {
      await this.stopSlot(slot);
      throw new ModelLoadError('model manager stopped while starting');
    }
    slot.info.activatedAt = new Date().toISOString();
    this.active = slot;
    this.state = 'running';
    this.protectCache();
    this.report({
      ok: true, action: 'start', request: this.opts.initial, to: slot.model, loadMs: msSince(t0),
      message: `started with ${slot.info.ref} (${slot.info.origin}${slot.info.signed ? ', signed' : ''})`,
    });
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.state = 'stopped';
    const slots = [this.active, this.shadow?.slot, ...this.others].filter((s): s is Slot => !!s);
    this.active = undefined;
    this.shadow = undefined;
    this.others.clear();
    await Promise.all(slots.map((s) => this.stopSlot(s)));
  }

  inspect(frame: Frame, opts: { priority?: 'line' | 'api' } = {}): Promise<InferenceResult> {
    const slot = this.active;
    if (!slot || this.state !== 'running') {
      const reason = this.state === 'stopped' ? 'stopping' : 'overload';
      return Promise.reject(new InferenceError(`no model running (model manager is ${this.state})`, reason));
    }
    // The slot is taken now, synchronously: a swap after this line does not move this call.
    slot.inFlight++;
    let result: Promise<InferenceResult>;
    try {
      result = slot.pool.inspect(frame, opts);
    } catch (err) {
      result = Promise.reject(err);
    }
    const done = result.finally(() => this.release(slot));
    const sh = this.shadow;
    if (sh && (opts.priority ?? 'line') === 'line' && ++sh.counter % sh.everyN === 0) this.runShadow(sh, frame, done);
    return done;
  }

  info(): InspectorInfo {
    if (!this.active) throw new Error('model manager not started');
    return this.active.pool.info();
  }

  // ---- provenance ------------------------------------------------------------------------------

  versions(): ModelVersions {
    const sh = this.shadow;
    const w = this.watch;
    return {
      ...(this.active ? { active: { ...this.active.info } } : {}),
      ...(sh ? { shadow: { ...sh.slot.info, everyN: sh.everyN, stats: { ...sh.stats } } } : {}),
      ...(this.previous ? { previous: { ...this.previous.info } } : {}),
      ...(w && !w.done ? { watch: { parts: w.parts, window: w.bounds.window, rejects: w.rejects, failSafes: w.failSafes } } : {}),
      ...(this.changing ? { changing: this.changing } : {}),
    };
  }

  shadowStats(): ShadowStats | undefined {
    return this.shadow ? { ...this.shadow.stats } : undefined;
  }

  // ---- changes ---------------------------------------------------------------------------------

  /** Loads, validates and activates a candidate (reference or folder). Never throws for a bad candidate. */
  swap(refOrDir: string): Promise<ChangeOutcome> {
    return this.exclusive(`swap to ${refOrDir}`, false, () => this.doSwap('swap', refOrDir));
  }

  /** Back to the previous model (the one the last swap or promote replaced). */
  rollback(): Promise<ChangeOutcome> {
    return this.exclusive('rollback', false, () => this.doRollback('rollback', 'rollback on request'));
  }

  /** Runs a candidate beside the active model on every Nth line part (default every part). */
  setShadow(refOrDir: string, opts: { everyN?: number } = {}): Promise<ChangeOutcome> {
    const everyN = Math.max(1, Math.floor(opts.everyN ?? 1));
    return this.exclusive(`shadow ${refOrDir}`, false, () => this.doShadow(refOrDir, everyN));
  }

  clearShadow(): Promise<ChangeOutcome> {
    return this.exclusive('clear shadow', false, async () => {
      const sh = this.shadow;
      if (!sh) return this.report({ ok: true, action: 'shadow-cleared', message: 'no shadow model was running' });
      this.shadow = undefined;
      this.retire(sh.slot);
      this.protectCache();
      return this.report({ ok: true, action: 'shadow-cleared', from: sh.slot.model, message: `shadow ${sh.slot.info.ref} stopped` });
    });
  }

  /** Makes the shadow model active (its golden samples must pass); the active one becomes previous. */
  promote(): Promise<ChangeOutcome> {
    return this.exclusive('promote', false, async () => {
      const sh = this.shadow;
      if (!sh) return this.report({ ok: false, action: 'promote', message: 'no shadow model to promote: set one first (setShadow)' });
      // The shadow ran its golden samples when it loaded; a model that misjudged them never goes active.
      const report = sh.slot.golden;
      if (report && report.failures.length > 0) {
        return this.report({
          ok: false, action: 'promote', request: sh.slot.info.ref, to: sh.slot.model, golden: report,
          message: `promote refused: ${describeGoldenFailures(report)}; ${this.active!.info.ref} stays active`,
        });
      }
      this.shadow = undefined;
      const from = this.activate(sh.slot, true);
      return this.report({
        ok: true, action: 'promote', request: sh.slot.info.ref, from, to: sh.slot.model,
        message: `shadow ${sh.slot.info.ref} promoted to active (was ${from ? refKey(from.name, from.version) : 'none'}); agreement ${fmtRate(sh.stats.agreement)} over ${sh.stats.compared} parts`,
      });
    });
  }

  /**
   * Tells the manager how a part was decided (call it for every decided part): names shadow
   * comparisons, and feeds the automatic rollback of a newly activated model.
   */
  record(part: Part): void {
    if (part.frame) {
      const p = this.pendingShadow.get(part.frame);
      if (p) {
        p.partId = part.id;
        if (p.result) this.emitShadow(p);
      }
    }
    const w = this.watch;
    if (!w || w.done || this.state !== 'running') return;
    // A verdict names its model; a fail-safe part without one is charged to the model active now.
    const mine = part.model ? sameModel(part.model, w.model) : part.failSafe && sameModel(this.active?.model, w.model);
    if (!mine) return;
    w.parts++;
    if (part.failSafe) {
      if (part.reason && MODEL_FAILSAFE.has(part.reason)) w.failSafes++;
    } else if (part.verdict?.verdict === 'reject') {
      w.rejects++;
    }
    const { window, maxRejectRate, maxFailSafeRate } = w.bounds;
    // Over the bound as soon as the count passes rate x window: certain before the window ends.
    let why: string | undefined;
    if (maxRejectRate !== undefined && w.rejects > maxRejectRate * window) {
      why = `reject rate above ${maxRejectRate}: ${w.rejects} rejects in its first ${w.parts} parts (window ${window})`;
    } else if (maxFailSafeRate !== undefined && w.failSafes > maxFailSafeRate * window) {
      why = `fail-safe rate above ${maxFailSafeRate}: ${w.failSafes} fail-safe parts in its first ${w.parts} parts (window ${window})`;
    }
    if (why) {
      w.done = true;
      const bad = refKey(w.model.name, w.model.version);
      this.log.error('model outside its bounds: rolling back', { model: w.model, reason: why });
      this.opts.bus?.emit('alarm', { kind: 'model_error', severity: 'critical', message: `model ${bad} rolled back automatically: ${why}`, partId: part.id });
      void this.exclusive('automatic rollback', true, () => this.doRollback('auto-rollback', `${bad}: ${why}`)).catch((err: unknown) =>
        this.log.error('automatic rollback failed', { error: errMessage(err) }),
      );
    } else if (w.parts >= window) {
      w.done = true;
      this.log.info('model confirmed: within its bounds over its first parts', { model: w.model, parts: w.parts, rejects: w.rejects, failSafes: w.failSafes });
    }
  }

  // ---- internals: changes ----------------------------------------------------------------------

  private async exclusive(label: string, wait: boolean, fn: () => Promise<ChangeOutcome>): Promise<ChangeOutcome> {
    if (this.state !== 'running') {
      return this.report({ ok: false, action: actionOf(label), message: `cannot ${label}: the model manager is ${this.state}` });
    }
    // Set now, not when the change runs: a second request in the same tick is refused too.
    if (this.changing && !wait) {
      return this.report({ ok: false, action: actionOf(label), message: `cannot ${label}: ${this.changing} is in progress; try again when it is done` });
    }
    const run = this.chain.then(async () => {
      if (this.state !== 'running') return this.report({ ok: false, action: actionOf(label), message: `cannot ${label}: the model manager is ${this.state}` });
      this.changing = label;
      try {
        return await fn();
      } finally {
        this.changing = undefined;
      }
    });
    this.changing ??= label;
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async doSwap(action: 'swap' | 'rollback' | 'auto-rollback', request: string, bundle?: ResolvedBundle): Promise<ChangeOutcome> {
    const active = this.active!;
    const t0 = process.hrtime.bigint();
    if (!bundle) {
      const ref = parseRef(request);
      if (ref && ref.version !== 'latest' && ref.name === active.model.name && ref.version === active.model.version && !(await isDir(request))) {
        return this.report({ ok: true, action, request, from: active.model, to: active.model, message: `${active.info.ref} is already active` });
      }
    }
    let slot: Slot;
    try {
      const candidate = bundle ?? (await this.resolve(request));
      const m = candidate.manifest;
      // The same bundle again (a repeated command, name@latest with nothing newer): nothing to load.
      if (sameModel({ name: m.name, version: m.version, sha256: m.sha256 }, active.model)) {
        return this.report({ ok: true, action, request, from: active.model, to: active.model, message: `${active.info.ref} is already active` });
      }
      slot = await this.load(candidate, true);
    } catch (err) {
      return this.report({
        ok: false, action, request, from: active.model, golden: (err as { golden?: GoldenReport }).golden,
        message: `${action} refused: ${errMessage(err)}; ${active.info.ref} stays active`,
      });
    }
    if (this.state !== 'running') {
      await this.stopSlot(slot);
      return this.report({ ok: false, action, request, message: `${action} abandoned: the model manager stopped` });
    }
    const from = this.activate(slot, action === 'swap');
    return this.report({
      ok: true, action, request, from, to: slot.model, loadMs: msSince(t0),
      golden: slot.golden,
      message: `${action === 'swap' ? 'swapped' : 'rolled back'} to ${slot.info.ref} (${slot.info.origin}${slot.info.signed ? ', signed' : ''}) from ${from ? refKey(from.name, from.version) : 'none'}`,
    });
  }

  private async doRollback(action: 'rollback' | 'auto-rollback', why: string): Promise<ChangeOutcome> {
    const prev = this.previous;
    if (!prev) return this.report({ ok: false, action, message: `${action} impossible: no previous model (${why})` });
    let bundle: ResolvedBundle;
    try {
      // Verified again: the folder may have changed since it was active.
      bundle = { ...(await this.resolve(prev.info.dir)), origin: prev.bundle.origin, ref: prev.bundle.ref };
    } catch (err) {
      return this.report({ ok: false, action, request: prev.info.ref, message: `${action} refused: ${errMessage(err)}; ${this.active!.info.ref} stays active (${why})` });
    }
    const outcome = await this.doSwap(action, prev.info.ref, bundle);
    if (outcome.ok) outcome.message = `${outcome.message}: ${why}`;
    return outcome;
  }

  private async doShadow(request: string, everyN: number): Promise<ChangeOutcome> {
    const t0 = process.hrtime.bigint();
    let slot: Slot;
    try {
      // Golden samples are run and reported, not required: a shadow only watches; promote() requires them.
      slot = await this.load(request, false);
    } catch (err) {
      return this.report({ ok: false, action: 'shadow', request, message: `shadow refused: ${errMessage(err)}` });
    }
    if (this.state !== 'running') {
      await this.stopSlot(slot);
      return this.report({ ok: false, action: 'shadow', request, message: 'shadow abandoned: the model manager stopped' });
    }
    this.others.delete(slot);
    const old = this.shadow;
    this.shadow = { slot, everyN, counter: 0, stats: emptyStats() };
    if (old) this.retire(old.slot);
    this.protectCache();
    const g = slot.info.golden;
    return this.report({
      ok: true, action: 'shadow', request, to: slot.model, loadMs: msSince(t0),
      message: `shadow ${slot.info.ref} running on every ${everyN === 1 ? '' : `${everyN}th `}part${old ? ` (replaces ${old.slot.info.ref})` : ''}` +
        (g && g.total > 0 ? `; golden samples ${g.passed}/${g.total}` : ''),
    });
  }

  /** Switches to a loaded slot in one assignment; the old active drains and stops. Returns the old model. */
  private activate(slot: Slot, watch: boolean): ModelRef | undefined {
    const old = this.active;
    slot.info.activatedAt = new Date().toISOString();
    this.others.delete(slot);
    this.active = slot; // the switch: every inspect() from here on goes to the new pool
    if (old) {
      this.previous = { info: { ...old.info }, bundle: old.bundle };
      this.retire(old);
    }
    const b = this.opts.rollback;
    this.watch = watch && b && b.window > 0 ? { model: slot.model, bounds: b, parts: 0, rejects: 0, failSafes: 0, done: false } : undefined;
    this.protectCache();
    return old?.model;
  }

  /**
   * Resolves, verifies, starts and checks a candidate in its own pool. Throws ModelLoadError (with
   * .golden when golden samples failed and requireGolden is set).
   */
  private async load(request: string | ResolvedBundle, requireGolden: boolean): Promise<Slot> {
    const bundle = typeof request === 'string' ? await this.resolve(request) : request;
    const pool = this.opts.createPool(bundle.dir);
    const slot: Slot = {
      pool, bundle, model: { name: bundle.manifest.name, version: bundle.manifest.version, sha256: bundle.manifest.sha256 },
      info: {
        name: bundle.manifest.name, version: bundle.manifest.version, sha256: bundle.manifest.sha256, ref: bundle.ref,
        origin: bundle.origin, dir: bundle.dir, signed: bundle.signed, ...(bundle.keyId ? { keyId: bundle.keyId } : {}),
        loadedAt: new Date().toISOString(),
      },
      inFlight: 0, retiring: false,
    };
    this.others.add(slot);
    try {
      await pool.start();
      // The pool read the folder again: it must have loaded the bundle that was verified.
      const loaded = pool.info().model;
      if (!sameModel(loaded, slot.model)) {
        throw new ModelLoadError(`${bundle.dir} changed while it was loaded (verified ${bundle.ref} ${slot.model.sha256}, loaded ${refKey(loaded.name, loaded.version)} ${loaded.sha256})`);
      }
      if (bundle.golden.length > 0) {
        const report = await runGolden(bundle.dir, bundle.golden, pool, bundle.manifest);
        slot.golden = report;
        slot.info.golden = { total: report.total, passed: report.passed };
        if (report.failures.length > 0) {
          if (requireGolden) throw Object.assign(new ModelLoadError(`${bundle.ref}: ${describeGoldenFailures(report)}`), { golden: report });
          this.log.warn('shadow model misjudges golden samples', { model: bundle.ref, failures: report.failures });
        }
      }
      if (this.state === 'stopped') throw new ModelLoadError('model manager stopped while the candidate was loading');
      return slot;
    } catch (err) {
      this.others.delete(slot);
      await pool.stop().catch(() => {});
      throw err instanceof ModelLoadError ? err : new ModelLoadError(errMessage(err));
    }
  }

  private async resolve(refOrDir: string): Promise<ResolvedBundle> {
    if (this.opts.store) return this.opts.store.resolve(refOrDir);
    if (!(await isDir(refOrDir))) throw new ModelLoadError(`'${refOrDir}' is not a bundle folder (model references need a model store: registry, cache)`);
    const v = await verifyBundle(refOrDir);
    return { ...v, origin: 'dir', ref: refKey(v.manifest.name, v.manifest.version) };
  }

  /** At start only: when the configured model cannot load, the newest other version on the device. */
  private async startFallback(err: unknown): Promise<Slot | undefined> {
    const ref = parseRef(this.opts.initial);
    const store = this.opts.store;
    if (!ref || !store || (await isDir(this.opts.initial))) return undefined;
    this.log.error('configured model cannot load: trying the other versions on the device', { model: this.opts.initial, error: errMessage(err) });
    for (const version of await store.localVersions(ref.name)) {
      if (version === ref.version) continue;
      try {
        const slot = await this.load(`${ref.name}@${version}`, true);
        this.log.warn('started with a fallback model', { requested: this.opts.initial, model: slot.info.ref, origin: slot.info.origin });
        return slot;
      } catch (e) {
        this.log.error('fallback model cannot load either', { model: `${ref.name}@${version}`, error: errMessage(e) });
      }
    }
    return undefined;
  }

  // ---- internals: pools ------------------------------------------------------------------------

  private release(slot: Slot): void {
    slot.inFlight--;
    if (slot.retiring && slot.inFlight === 0) void this.stopSlot(slot);
  }

  /** Stops a pool that no new call reaches, once its calls in flight are answered. */
  private retire(slot: Slot): void {
    slot.retiring = true;
    this.others.add(slot);
    if (slot.inFlight === 0) void this.stopSlot(slot);
  }

  private stopSlot(slot: Slot): Promise<void> {
    slot.stopped ??= slot.pool
      .stop()
      .catch((err: unknown) => this.log.warn('model pool stop failed', { model: slot.info.ref, error: errMessage(err) }))
      .finally(() => this.others.delete(slot));
    return slot.stopped;
  }

  private protectCache(): void {
    const cache = this.opts.store?.cache;
    if (!cache) return;
    const keys = [this.active?.info, this.shadow?.slot.info, this.previous?.info]
      .filter((i): i is VersionInfo => !!i && (i.origin === 'cache' || i.origin === 'registry'))
      .map((i) => i.ref);
    cache.protect(keys);
  }

  // ---- internals: shadow -----------------------------------------------------------------------

  private runShadow(sh: Shadow, frame: Frame, active: Promise<InferenceResult>): void {
    const slot = sh.slot;
    slot.inFlight++;
    // The shadow starts once the active verdict is in: it never competes with the part it shadows
    // for CPU (preprocessing, workers), only with idle time before the next part.
    const shadowCall = active.then(
      () => slot.pool.inspect(frame, { priority: 'line' }),
      () => slot.pool.inspect(frame, { priority: 'line' }),
    );
    const pending: PendingShadow = { emitted: false };
    this.pendingShadow.set(frame, pending);
    void Promise.allSettled([active, shadowCall]).then(([a, s]) => {
      this.release(slot);
      if (s.status === 'rejected') {
        sh.stats.shadowErrors++;
        return;
      }
      if (a.status === 'rejected') {
        sh.stats.activeErrors++;
        return;
      }
      const st = sh.stats;
      const agree = a.value.verdict.verdict === s.value.verdict.verdict;
      st.compared++;
      if (agree) st.agreed++;
      if (a.value.verdict.verdict === 'reject') st.activeRejects++;
      if (s.value.verdict.verdict === 'reject') st.shadowRejects++;
      st.agreement = rate(st.agreed, st.compared);
      st.activeRejectRate = rate(st.activeRejects, st.compared);
      st.shadowRejectRate = rate(st.shadowRejects, st.compared);
      st.rejectRateDiff = st.shadowRejectRate! - st.activeRejectRate!;
      pending.result = {
        frameSeq: frame.seq, active: a.value.verdict, shadow: s.value.verdict,
        activeModel: a.value.model, shadowModel: s.value.model, agree,
      };
      if (pending.partId !== undefined) return this.emitShadow(pending);
      // record(part) usually comes first (it follows the active verdict); give it a moment to name the part.
      pending.timer = setTimeout(() => this.emitShadow(pending), this.opts.shadowPartWaitMs ?? 2000);
      pending.timer.unref();
    });
  }

  private emitShadow(p: PendingShadow): void {
    if (p.emitted || !p.result) return;
    p.emitted = true;
    clearTimeout(p.timer);
    const out: ShadowVerdict = { ...(p.partId !== undefined ? { partId: p.partId } : {}), ...p.result };
    try {
      this.opts.onShadow?.(out);
    } catch (err) {
      this.log.warn('onShadow listener threw', { error: errMessage(err) });
    }
  }

  private report(o: Omit<ChangeOutcome, 'versions'>): ChangeOutcome {
    const outcome: ChangeOutcome = { ...o, versions: this.versions() };
    const fields = { action: o.action, request: o.request, from: o.from, to: o.to, loadMs: o.loadMs && Number(o.loadMs.toFixed(1)), golden: o.golden };
    if (o.ok) this.log.info(o.message, fields);
    else this.log.warn(o.message, fields);
    try {
      this.opts.onChange?.(outcome);
    } catch (err) {
      this.log.warn('onChange listener threw', { error: errMessage(err) });
    }
    return outcome;
  }
}

function actionOf(label: string): ChangeAction {
  if (label.startsWith('swap')) return 'swap';
  if (label.startsWith('shadow')) return 'shadow';
  if (label.startsWith('clear')) return 'shadow-cleared';
  if (label === 'promote') return 'promote';
  if (label === 'automatic rollback') return 'auto-rollback';
  return 'rollback';
}

function fmtRate(r: number | null): string {
  return r === null ? 'n/a' : `${(r * 100).toFixed(1)} %`;
}

/** A folder rather than a reference: it has a separator, or exists as a folder. */
async function isDir(p: string): Promise<boolean> {
  if (p.includes('/') || p.includes('\\') || p.startsWith('.')) return true;
  return stat(p).then((s) => s.isDirectory(), () => false);
}
