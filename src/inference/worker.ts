// The inference worker thread. onnxruntime-node's session.run blocks the thread it runs on, so
// every session lives here and the main thread (GPIO timing, MQTT keepalive, HTTP) never waits
// on it. One worker = one session = one request at a time; the pool (pool.ts) does the queueing.
//
// Protocol: the worker starts from workerData (model bytes, manifest, providers), answers 'ready'
// or 'init-error', then serves 'run' requests with 'result' or 'error'. A 'run' brings the model
// input's pixels, prepared by the pool, or a JPEG (camera.replay.decodeIn: worker) that this thread
// decodes and prepares itself, synchronously (native); its pixels then go back with the result.
import { readlinkSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { env, InferenceSession, Tensor } from 'onnxruntime-node';
import { checkModelIO } from './manifest.js';
import { decodeJpegFrameSync, prepareInput, prepareInputSync, toTensor } from './preprocess.js';
import { applyHead, type Geometry, type OutputTensor } from './heads.js';
import { InferenceError, type ModelManifest } from './types.js';
import { FrameError } from '../camera/types.js';
import { resizeStatus } from '../native/resize.js';
import type { EncodedFrame, Verdict } from '../part.js';

export interface WorkerInit {
  model: Uint8Array;
  manifest: ModelManifest;
  /** Execution providers in order of preference. */
  providers: string[];
  /** 0 = onnxruntime's default. */
  intraOpThreads: number;
  /** Nice levels to add to this thread (and the threads onnxruntime starts from it); 0 = none. */
  nice?: number;
}

export type RunRequest = { type: 'run'; id: number; channels: 1 | 3 } & (
  | { pixels: Uint8Array; geometry: Geometry }
  /** Decoded here (channels says the colour); `file` names it in errors. */
  | { jpeg: Uint8Array; fit: EncodedFrame['fit']; file?: string | undefined }
);

export type ToWorker =
  | RunRequest
  | { type: 'test'; action: TestAction }
  /** Finish the request in progress, release the session, exit (see the pool's stop). */
  | { type: 'stop' };

/**
 * Test hooks, so tests need no timing: 'crash-exit' / 'crash-throw' make the worker die on its
 * next request (process.exit / uncaught exception); 'hold' keeps requests waiting in the worker
 * until 'release'.
 */
export type TestAction = 'crash-exit' | 'crash-throw' | 'hold' | 'release';

export interface ProviderFailure {
  provider: string;
  error: string;
}

export type FromWorker =
  | { type: 'ready'; provider: string; failed: ProviderFailure[]; warmupMs: number }
  | { type: 'init-error'; message: string; failed: ProviderFailure[] }
  | {
      type: 'result';
      id: number;
      verdict: Verdict;
      preMs: number;
      inferMs: number;
      postMs: number;
      /** A JPEG request: the frame's decoded pixels (transferred). */
      decoded?: { width: number; height: number; data: Uint8Array };
    }
  /** reason: the frame's fault ('bad_frame': undecodable, wrong size) or the model's. */
  | { type: 'error'; id: number; message: string; reason: 'bad_frame' | 'model_error' };

// Errors reach the pool as messages and its logger; onnxruntime's own stderr lines would break
// the one-JSON-object-per-line log stream.
env.logLevel = 'fatal';

if (!parentPort) throw new Error('inference worker: must run in a worker thread');

const port = parentPort;
const send = (msg: FromWorker): void => port.postMessage(msg);
const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;
const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

const init = workerData as WorkerInit;
const { manifest } = init;
lowerPriority(init.nice ?? 0);

/**
 * Inference below the main thread: when the cores are saturated, the kernel then runs the event loop
 * (divert timing, MQTT keepalive, HTTP) and the decode that feeds the workers as soon as they are
 * ready, instead of a timeslice later. Linux nice is per thread; onnxruntime's intra-op threads,
 * created from this one, inherit it. Best effort: elsewhere, or when refused, nothing changes.
 */
function lowerPriority(by: number): void {
  if (by <= 0 || process.platform !== 'linux') return;
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, Math.min(19, getPriority(tid) + by));
  } catch {
    // no /proc (unusual): same priority as the main thread
  }
}
let crashNext: 'crash-exit' | 'crash-throw' | undefined;
/** Requests kept back while a test holds the worker. */
let held: RunRequest[] | undefined;

// Stopping: the pool asks, and the worker exits by itself once no session.run is in progress.
// Terminating a worker from outside while onnxruntime is inside run (or create) aborts the whole
// process ("terminate called after throwing an instance of 'Napi::Error'").
let stopping = false;
let session: InferenceSession | undefined;
let running = 0;
/** Messages that came before the session was ready (the pool's test hooks). */
let handler: ((msg: ToWorker) => void) | undefined;
const early: ToWorker[] = [];
port.on('message', (msg: ToWorker) => {
  if (msg.type === 'stop') {
    stopping = true;
    held = undefined;
    maybeExit();
  } else if (stopping) {
    // Nothing new once stopping.
  } else if (handler) handler(msg);
  else early.push(msg);
});

/** Once stopping and idle: release the session (its memory, its threads) and let the thread end. */
function maybeExit(): void {
  if (!stopping || running > 0) return;
  const s = session;
  session = undefined;
  void (s ? s.release() : Promise.resolve()).catch(() => {}).finally(() => port.close());
}

/** Tries each provider alone, in order: the first that creates a session wins. */
async function createSession(): Promise<{ session: InferenceSession; provider: string; failed: ProviderFailure[] }> {
  const failed: ProviderFailure[] = [];
  for (const provider of init.providers) {
    try {
      const session = await InferenceSession.create(init.model, {
        executionProviders: [provider],
        graphOptimizationLevel: 'all',
        ...(init.intraOpThreads > 0 ? { intraOpNumThreads: init.intraOpThreads } : {}),
      });
      return { session, provider, failed };
    } catch (err) {
      failed.push({ provider, error: message(err).split('\n')[0]! });
    }
  }
  const tried = failed.map((f) => `${f.provider}: ${f.error}`).join('; ');
  throw Object.assign(new Error(`no execution provider could load the model (${tried})`), { failed });
}

/** One inference: tensor conversion, session.run, head. Throws with a message for the pool. */
async function infer(
  session: InferenceSession,
  pixels: Uint8Array,
  channels: 1 | 3,
  geometry: Geometry,
): Promise<{ verdict: Verdict; preMs: number; inferMs: number; postMs: number }> {
  let t = process.hrtime.bigint();
  const input = toTensor(pixels, channels, manifest.input);
  const feeds = { [manifest.input.name]: new Tensor(manifest.input.dtype, input.data, input.dims) };
  const preMs = ms(t);

  t = process.hrtime.bigint();
  let raw: InferenceSession.ReturnType;
  try {
    raw = await session.run(feeds);
  } catch (err) {
    throw new Error(`model run failed: ${message(err)}`);
  }
  const inferMs = ms(t);

  t = process.hrtime.bigint();
  const outputs: Record<string, OutputTensor> = {};
  for (const [name, value] of Object.entries(raw)) {
    const data = value.data;
    // Heads read float32; float64 outputs are narrowed, others (int labels etc.) are not for heads.
    if (data instanceof Float32Array) outputs[name] = { dims: [...value.dims], data };
    else if (data instanceof Float64Array) outputs[name] = { dims: [...value.dims], data: Float32Array.from(data) };
  }
  let verdict: Verdict;
  try {
    verdict = applyHead(manifest.head, manifest.threshold, outputs, geometry);
  } catch (err) {
    throw new Error(`head (${manifest.head.type}): ${message(err)}`);
  }
  return { verdict, preMs, inferMs, postMs: ms(t) };
}

type Result = Omit<Extract<FromWorker, { type: 'result' }>, 'type' | 'id'>;

/** Whether the crop/resize runs here too (native); an addon built before it had one leaves it to sharp. */
let syncResize: boolean | undefined;

/**
 * A JPEG request: decoded and resized synchronously on this thread (native libjpeg-turbo, then the
 * native resize), so this core decodes, prepares and infers the part in turn, with no libuv thread
 * competing beside the sessions and none to wait for; then run as pixels are.
 */
async function decodeAndInfer(session: InferenceSession, msg: Extract<RunRequest, { jpeg: Uint8Array }>): Promise<Result> {
  const t = process.hrtime.bigint();
  syncResize ??= resizeStatus().available;
  let decoded;
  try {
    decoded = decodeJpegFrameSync(msg.jpeg, msg.channels === 1 ? 'gray' : 'rgb', msg.fit, syncResize);
  } catch (err) {
    // The replay camera's own words for a file it cannot decode.
    throw err instanceof FrameError ? new FrameError(`replay camera: cannot decode ${msg.file ?? 'image'}: ${err.message}`, 'bad_frame') : err;
  }
  const frame = { seq: 0, timeNs: 0n, source: 'replay', file: msg.file, ...decoded };
  const prepared = syncResize ? prepareInputSync(frame, manifest.input) : await prepareInput(frame, manifest.input);
  const prepMs = ms(t);
  const r = await infer(session, prepared.pixels, prepared.channels, prepared.geometry);
  return { ...r, preMs: r.preMs + prepMs, decoded: { width: decoded.width, height: decoded.height, data: decoded.data } };
}

/** The frame's fault, not the model's. */
const badFrame = (err: unknown): boolean => err instanceof FrameError || (err instanceof InferenceError && err.reason === 'bad_frame');

async function main(): Promise<void> {
  let provider: string;
  let failed: ProviderFailure[] = [];
  let s: InferenceSession;
  try {
    ({ session: s, provider, failed } = await createSession());
    session = s;
    // onnxruntime holds its own copy now; let this one (possibly hundreds of MB) be collected.
    (init as { model: Uint8Array | null }).model = null;
    checkModelIO(manifest, s);
  } catch (err) {
    send({ type: 'init-error', message: message(err), failed: (err as { failed?: ProviderFailure[] }).failed ?? failed });
    return;
  }

  // Warm-up: the first run allocates and optimises; do it now, not on the first part. A mid-grey
  // input through the head also proves the head can read this model's outputs.
  const t0 = process.hrtime.bigint();
  const { width, height } = manifest.input;
  const grey = new Uint8Array(width * height).fill(128);
  const geometry: Geometry = { frameWidth: width, frameHeight: height, inputWidth: width, inputHeight: height, resize: manifest.input.resize ?? 'stretch' };
  running++;
  try {
    if (stopping) return;
    await infer(s, grey, 1, geometry);
  } catch (err) {
    send({ type: 'init-error', message: `warm-up failed: ${message(err)}`, failed });
    return;
  } finally {
    running--;
    maybeExit();
  }
  if (stopping) return;
  send({ type: 'ready', provider, failed, warmupMs: ms(t0) });

  const serve = (msg: RunRequest): void => {
    if (crashNext === 'crash-exit') process.exit(3);
    if (crashNext === 'crash-throw') throw new Error('inference worker: crash requested by test hook');
    running++;
    const run = 'jpeg' in msg ? decodeAndInfer(s, msg) : infer(s, msg.pixels, msg.channels, msg.geometry);
    run
      .then(
        (r: Result) => port.postMessage({ type: 'result', id: msg.id, ...r } satisfies FromWorker, r.decoded ? [r.decoded.data.buffer as ArrayBuffer] : []),
        (err: unknown) => send({ type: 'error', id: msg.id, message: message(err), reason: badFrame(err) ? 'bad_frame' : 'model_error' }),
      )
      .finally(() => {
        running--;
        maybeExit();
      });
  };
  handler = (msg: ToWorker) => {
    if (msg.type === 'stop') return;
    if (msg.type === 'run') {
      if (held) held.push(msg);
      else serve(msg);
    } else if (msg.action === 'hold') {
      held ??= [];
    } else if (msg.action === 'release') {
      const waiting = held ?? [];
      held = undefined;
      waiting.forEach(serve);
    } else {
      crashNext = msg.action;
    }
  };
  early.splice(0).forEach(handler);
}

void main();
