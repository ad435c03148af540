// InferencePool: the Inspector the line uses. Frames are preprocessed on the main thread (sharp,
// asynchronous), queued (line parts before API requests), and run on worker threads, each with
// its own onnxruntime session, so a slow model never stalls GPIO timing, MQTT or HTTP. A frame
// still encoded (Frame.encoded, camera.replay.decodeIn: worker) goes to the worker as it is: the
// worker decodes and prepares it, and its pixels come back into the frame with the verdict. A
// worker that dies fails only the request it held ('worker_crash') and is restarted with backoff.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { loadBundle, type ModelBundle } from './manifest.js';
import { prepareInput, type Geometry } from './preprocess.js';
import {
  InferenceError,
  ModelLoadError,
  type InferenceResult,
  type Inspector,
  type InspectorInfo,
  type ModelManifest,
} from './types.js';
import type { FromWorker, ProviderFailure, RunRequest, TestAction, ToWorker, WorkerInit } from './worker.js';
import type { Frame, ModelRef } from '../part.js';
import type { Logger } from '../log.js';

export interface InferencePoolOptions {
  /** Model bundle folder (model.onnx + model.json). */
  modelDir: string;
  /** Execution providers in order of preference ('cuda', 'tensorrt', 'cpu', ...). */
  providers: string[];
  workers: number;
  /** onnxruntime intra-op threads per worker; 0 = its default. */
  intraOpThreads: number;
  /** Requests waiting for a worker before new ones are refused with 'overload'. */
  queueLimit: number;
  /** How many nice levels below the process the workers run (Linux; 0 = same priority). */
  workerNice?: number;
  log: Logger;
}

type Priority = 'line' | 'api';

interface Job {
  id: number;
  priority: Priority;
  /** The model input, prepared here ... */
  prepared?: { pixels: Uint8Array; geometry: Geometry };
  /** ... or a frame the worker decodes (Frame.encoded); its pixels are put back into it. */
  frame?: Frame;
  channels: 1 | 3;
  preMs: number;
  queuedAt: bigint;
  queueMs?: number;
  resolve(r: InferenceResult): void;
  reject(e: Error): void;
}

/** An admitted frame being preprocessed: its reserved place in the queue. */
interface Ticket {
  priority: Priority;
  /** Pushed out by a line frame while preprocessing: refused with 'overload' when that ends. */
  evicted: boolean;
}

interface Slot {
  index: number;
  worker?: Worker;
  state: 'starting' | 'idle' | 'busy' | 'dead';
  /** The execution provider its session runs on. */
  provider?: string;
  job?: Job;
  /** Consecutive failures (crash or failed start) since it last served a request: the backoff exponent. */
  failures: number;
  restartTimer?: NodeJS.Timeout;
}

const RESTART_MIN_MS = 100;
/** How long stop() waits for a worker to finish its request and exit before terminating it. */
const STOP_GRACE_MS = 5000;
const RESTART_MAX_MS = 10_000;

/** The worker entry next to this file: worker.ts under tsx (tests, dev), worker.js from dist/. */
const ownUrl = import.meta.url;
const fromSources = ownUrl.endsWith('.ts');
const workerUrl = new URL(fromSources ? './worker.ts' : './worker.js', ownUrl);

function spawnWorker(init: WorkerInit): Worker {
  if (!fromSources) return new Worker(workerUrl, { workerData: init });
  // Worker threads do not inherit the tsx loader that runs these sources: register it first.
  const tsxApi = import.meta.resolve('tsx/esm/api');
  const bootstrap = `import(${JSON.stringify(tsxApi)}).then((t) => t.register()).then(() => import(${JSON.stringify(workerUrl.href)}))`;
  return new Worker(bootstrap, { eval: true, workerData: init });
}

const msSince = (t: bigint): number => Number(process.hrtime.bigint() - t) / 1e6;
const errMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err));

export class InferencePool implements Inspector {
  private state: 'new' | 'starting' | 'running' | 'stopped' = 'new';
  /** Kept for the life of the pool: restarted workers load the model from these verified bytes. */
  private bundle?: ModelBundle;
  private model?: ModelRef;
  /** The provider the first worker found; later workers start their search from it. */
  private provider = 'none';
  private slots: Slot[] = [];
  /** FIFO per priority; line parts always go first. */
  private readonly queues: Record<Priority, Job[]> = { line: [], api: [] };
  /** Admitted frames still being preprocessed (their place in the queue is reserved). */
  private readonly preparing = new Set<Ticket>();
  private nextId = 1;

  constructor(private readonly opts: InferencePoolOptions) {}

  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error(`inference pool cannot start: it is ${this.state}`);
    this.state = 'starting';
    const { log } = this.opts;
    try {
      const bundle = (this.bundle = await loadBundle(this.opts.modelDir));
      const { manifest } = bundle;
      this.model = { name: manifest.name, version: manifest.version, sha256: manifest.sha256 };

      // The first worker finds the provider; the others start from it instead of retrying (and
      // re-logging) providers that already failed.
      const first = this.newSlot();
      const ready = await this.startSlot(first, this.opts.providers);
      this.provider = ready.provider;
      const rest = Array.from({ length: Math.max(1, this.opts.workers) - 1 }, () => this.newSlot());
      await Promise.all(rest.map((slot) => this.startSlot(slot, this.providersFromActive())));
      if (this.state !== 'starting') throw new Error('inference pool stopped while starting');

      this.state = 'running';
      log.info('inference pool started', {
        model: this.model,
        provider: this.provider,
        workers: this.slots.length,
        warmupMs: Number(ready.warmupMs.toFixed(1)),
      });
    } catch (err) {
      await this.terminateAll();
      this.state = 'stopped';
      throw err instanceof ModelLoadError ? err : new ModelLoadError(errMessage(err));
    }
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.state = 'stopped';
    const stopped = (): InferenceError => new InferenceError('inference pool stopped', 'stopping');
    for (const job of this.queues.line.splice(0)) job.reject(stopped());
    for (const job of this.queues.api.splice(0)) job.reject(stopped());
    for (const slot of this.slots) {
      slot.job?.reject(stopped());
      slot.job = undefined;
    }
    await this.terminateAll();
  }

  async inspect(frame: Frame, opts: { priority?: Priority } = {}): Promise<InferenceResult> {
    if (this.state !== 'running') throw new InferenceError(`inference pool is not running (${this.state})`, 'overload');
    const manifest = this.manifest();
    const priority = opts.priority ?? 'line';

    // Admission comes before the resize: above capacity (a free-run camera faster than the model)
    // a frame that is going to be refused must not cost preprocessing CPU the admitted ones need.
    const ticket = this.admit(priority);
    if (frame.encoded && frame.data.length === 0) {
      this.preparing.delete(ticket);
      // Its JPEG went to a worker already, for an inspection that failed (a shadow comes after it).
      if (frame.encoded.jpeg.byteLength === 0) throw new InferenceError(`frame ${frame.seq}: not decoded, and its JPEG was used up by a failed inspection`, 'bad_frame');
      return this.enqueue({ priority, frame, channels: frame.channels, preMs: 0 });
    }
    let prepared: Awaited<ReturnType<typeof prepareInput>>;
    const t0 = process.hrtime.bigint();
    try {
      prepared = await prepareInput(frame, manifest.input);
    } finally {
      this.preparing.delete(ticket);
    }
    const preMs = msSince(t0);
    if (this.state !== 'running') throw new InferenceError('inference pool stopped', 'stopping');
    if (ticket.evicted) throw new InferenceError('inference queue full: API request made way for a line part', 'overload');

    const { pixels, geometry, channels } = prepared;
    return this.enqueue({ priority, prepared: { pixels, geometry }, channels, preMs });
  }

  info(): InspectorInfo {
    if (!this.model || !this.bundle) throw new Error('inference pool not started');
    return {
      model: this.model,
      manifest: this.bundle.manifest,
      provider: this.activeProvider(),
      workers: this.slots.filter((s) => s.state === 'idle' || s.state === 'busy').length,
      queued: this.queues.line.length + this.queues.api.length,
      inFlight: this.slots.filter((s) => s.state === 'busy').length,
    };
  }

  /** For tests only: sent to every live worker (see TestAction in worker.ts). */
  testHook(action: TestAction): void {
    for (const slot of this.slots) slot.worker?.postMessage({ type: 'test', action } satisfies ToWorker);
  }

  // ---- internals -------------------------------------------------------------------------------

  private manifest(): ModelManifest {
    return this.bundle!.manifest;
  }

  /** Normally one provider; after a restart fell back further, each one in use ('cuda,cpu'). */
  private activeProvider(): string {
    const live = new Set(this.slots.filter((s) => s.state === 'idle' || s.state === 'busy').map((s) => s.provider!));
    return live.size > 0 ? [...live].join(',') : this.provider;
  }

  /** Providers from the active one on: a restarted worker can still fall back further. */
  private providersFromActive(): string[] {
    const i = this.opts.providers.indexOf(this.provider);
    return i >= 0 ? this.opts.providers.slice(i) : this.opts.providers;
  }

  /**
   * Reserves a place for a frame about to be preprocessed, or throws 'overload'. Frames being
   * preprocessed count as waiting, except as many as there are idle workers to take them. A line
   * frame may push out the newest waiting (or preprocessing) API request.
   */
  private admit(priority: Priority): Ticket {
    const idle = this.slots.filter((s) => s.state === 'idle').length;
    const waiting = this.queues.line.length + this.queues.api.length + this.preparing.size;
    if (waiting >= this.opts.queueLimit + idle && !this.makeRoom(priority)) {
      throw new InferenceError(`inference queue full (${waiting - idle} waiting, limit ${this.opts.queueLimit})`, 'overload');
    }
    const ticket: Ticket = { priority, evicted: false };
    this.preparing.add(ticket);
    return ticket;
  }

  /** Makes room for a line frame by pushing out the newest API request, queued or preprocessing. */
  private makeRoom(priority: Priority): boolean {
    if (priority !== 'line') return false;
    const evicted = this.queues.api.pop();
    if (evicted) {
      evicted.reject(new InferenceError('inference queue full: API request made way for a line part', 'overload'));
      return true;
    }
    const api = [...this.preparing].reverse().find((t) => t.priority === 'api' && !t.evicted);
    if (!api) return false;
    // Refused when its preprocessing ends (see inspect); it stops counting now.
    api.evicted = true;
    this.preparing.delete(api);
    return true;
  }

  /** To an idle worker, or in the queue (its place was reserved at admission). */
  private enqueue(fields: Pick<Job, 'priority' | 'prepared' | 'frame' | 'channels' | 'preMs'>): Promise<InferenceResult> {
    return new Promise<InferenceResult>((resolve, reject) => {
      const job: Job = { id: this.nextId++, ...fields, queuedAt: process.hrtime.bigint(), resolve, reject };
      const idle = this.slots.find((s) => s.state === 'idle');
      if (idle) return this.dispatch(idle, job);
      this.queues[job.priority].push(job);
    });
  }

  private newSlot(): Slot {
    const slot: Slot = { index: this.slots.length, state: 'dead', failures: 0 };
    this.slots.push(slot);
    return slot;
  }

  /** Spawns the slot's worker and resolves when its session is loaded, checked and warmed up. */
  private startSlot(slot: Slot, providers: string[]): Promise<{ provider: string; failed: ProviderFailure[]; warmupMs: number }> {
    const bundle = this.bundle!;
    const worker = spawnWorker({
      model: bundle.bytes,
      manifest: bundle.manifest,
      providers,
      intraOpThreads: threadsPerWorker(this.opts.intraOpThreads, this.opts.workers),
      nice: this.opts.workerNice ?? 0,
    });
    slot.worker = worker;
    slot.state = 'starting';

    return new Promise((resolve, reject) => {
      let settled = false;
      let exitError: string | undefined;
      worker.on('message', (msg: FromWorker) => {
        switch (msg.type) {
          case 'ready':
            settled = true;
            for (const f of msg.failed) {
              this.opts.log.warn('execution provider unavailable, trying the next one', { worker: slot.index, provider: f.provider, error: f.error });
            }
            slot.state = 'idle';
            slot.provider = msg.provider;
            resolve(msg);
            this.pump();
            break;
          case 'init-error':
            // The model itself is refused: its exit (below) counts as a failure for the backoff.
            settled = true;
            slot.state = 'dead';
            reject(new ModelLoadError(msg.message));
            void worker.terminate();
            break;
          case 'result':
          case 'error':
            this.finish(slot, msg);
            break;
        }
      });
      worker.on('error', (err) => {
        exitError = errMessage(err);
      });
      worker.on('exit', (code) => {
        const why = exitError ?? `exited with code ${code}`;
        if (!settled) {
          settled = true;
          reject(new ModelLoadError(`inference worker stopped while loading the model: ${why}`));
        }
        // Terminated on purpose (stop, or replaced): nothing more to do.
        if (slot.worker !== worker) return;
        slot.worker = undefined;
        slot.state = 'dead';
        this.onWorkerDeath(slot, why);
      });
    });
  }

  private dispatch(slot: Slot, job: Job): void {
    slot.state = 'busy';
    slot.job = job;
    job.queueMs = msSince(job.queuedAt);
    const { id, channels, frame } = job;
    const msg: RunRequest = job.prepared
      ? { type: 'run', id, channels, ...job.prepared }
      : { type: 'run', id, channels, jpeg: frame!.encoded!.jpeg, fit: frame!.encoded!.fit, file: frame!.file };
    // Transfer, not copy: the pixels (or the JPEG) move to the worker.
    const moved = 'pixels' in msg ? msg.pixels.buffer : msg.jpeg.buffer;
    slot.worker!.postMessage(msg satisfies ToWorker, [moved as ArrayBuffer]);
  }

  /** Hands waiting jobs to idle workers, line parts first. */
  private pump(): void {
    for (const slot of this.slots) {
      if (slot.state !== 'idle') continue;
      const job = this.queues.line.shift() ?? this.queues.api.shift();
      if (!job) return;
      this.dispatch(slot, job);
    }
  }

  private finish(slot: Slot, msg: Extract<FromWorker, { type: 'result' | 'error' }>): void {
    const job = slot.job;
    slot.job = undefined;
    if (slot.state === 'busy') slot.state = 'idle';
    if (job && job.id === msg.id) {
      if (msg.type === 'result') {
        slot.failures = 0;
        // The worker decoded the frame: its pixels, for the archive, the operator page and the shadow.
        if (job.frame && msg.decoded) Object.assign(job.frame, msg.decoded);
        job.resolve({
          verdict: msg.verdict,
          model: this.model!,
          provider: slot.provider!,
          timings: { preprocessMs: job.preMs + msg.preMs, inferMs: msg.inferMs, postprocessMs: msg.postMs, queueMs: job.queueMs ?? 0 },
        });
      } else {
        if (msg.reason === 'bad_frame') job.frame?.encoded?.onBadFrame?.();
        job.reject(new InferenceError(msg.message, msg.reason));
      }
    }
    this.pump();
  }

  private onWorkerDeath(slot: Slot, why: string): void {
    const job = slot.job;
    slot.job = undefined;
    if (this.state === 'stopped') return;
    job?.reject(new InferenceError(`inference worker ${slot.index} died: ${why}`, 'worker_crash'));
    if (this.state !== 'running') return;

    const delay = Math.min(RESTART_MAX_MS, RESTART_MIN_MS * 2 ** slot.failures);
    slot.failures++;
    this.opts.log.error('inference worker died; restarting', { worker: slot.index, error: why, inFlight: job !== undefined, restartInMs: delay });
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = undefined;
      if (this.state !== 'running') return;
      this.startSlot(slot, this.providersFromActive()).then(
        () => this.opts.log.info('inference worker restarted', { worker: slot.index }),
        (err: unknown) => {
          // A worker that fails to load (init-error) is terminated, and its exit retries with more backoff.
          this.opts.log.error('inference worker restart failed', { worker: slot.index, error: errMessage(err) });
        },
      );
    }, delay);
  }

  private async terminateAll(): Promise<void> {
    const workers: Worker[] = [];
    for (const slot of this.slots) {
      if (slot.restartTimer) clearTimeout(slot.restartTimer);
      slot.restartTimer = undefined;
      if (slot.worker) workers.push(slot.worker);
      slot.worker = undefined;
      slot.state = 'dead';
    }
    await Promise.all(workers.map((w) => stopWorker(w)));
  }
}

/**
 * Asks a worker to stop and waits for it to exit: it finishes the session.run in progress and
 * releases its session first. worker.terminate() while onnxruntime is inside run or create aborts
 * the whole process, so it is only the fallback for a worker that does not exit in time.
 */
function stopWorker(worker: Worker): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => void worker.terminate().then(() => resolve(), () => resolve()), STOP_GRACE_MS);
    worker.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    try {
      worker.postMessage({ type: 'stop' } satisfies ToWorker);
    } catch {
      // Already gone: its exit has been (or is about to be) reported.
    }
  });
}

/**
 * 0 lets onnxruntime take every core, right for one worker; several workers doing that oversubscribe
 * the CPU (2 workers × 2 threads on 2 cores was slower than either 2×1 or 1×2), so they share the cores.
 */
export function threadsPerWorker(configured: number, workers: number): number {
  if (configured > 0 || workers <= 1) return configured;
  return Math.max(1, Math.floor(availableParallelism() / workers));
}
