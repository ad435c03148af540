// The line's vocabulary. A Part is made by a trigger and carries everything that happens to it:
// its frame, its verdict, the action taken at the gate, and a monotonic timestamp per stage.

export type TriggerKind = 'freerun' | 'interval' | 'gpio' | 'command';
export type VerdictKind = 'pass' | 'reject';
export type Action = 'pass' | 'divert';
/** Why a part was diverted without a valid verdict (fail-safe). */
export type FailSafeReason =
  | 'late' // no verdict by the decision deadline
  | 'bad_frame' // frame missing, corrupt or wrongly sized
  | 'camera' // camera stalled or disconnected
  | 'model_error' // the model threw, or returned something the head cannot read
  | 'worker_crash' // the inference worker died with the part in flight
  | 'overload' // queue full / too many parts in flight
  | 'stopping' // the agent was stopping with the part in flight
  | 'paused' // inspection paused by command while parts still arrive
  | 'crash'; // the agent died with the part in flight (reported after restart)

/** Ground truth attached by the synthetic source (and by labelled replay folders). */
export interface GroundTruth {
  verdict: VerdictKind;
  /** Defect classes present, e.g. ['scratch']. */
  defects: string[];
  /** Boxes of the defects in frame pixels, [x, y, w, h]. */
  boxes?: { class: string; box: [number, number, number, number] }[];
}

/** A decoded camera frame: raw interleaved 8-bit pixels, row-major, HWC. */
export interface Frame {
  /** Sequence number within its source. */
  seq: number;
  /** Monotonic capture time (ns). */
  timeNs: bigint;
  width: number;
  height: number;
  channels: 1 | 3;
  data: Uint8Array;
  /** Source name (e.g. 'synthetic', 'replay', 'ffmpeg'). */
  source: string;
  /** File the frame came from (replay). */
  file?: string;
  /**
   * Not decoded yet (camera.replay.decodeIn: worker): `data` is empty and width/height are 0 until
   * the inference worker that runs the part decodes it and the pool puts the pixels here, before
   * the part is decided.
   */
  encoded?: EncodedFrame;
  truth?: GroundTruth;
}

/**
 * Whether the frame holds pixels that can be encoded (archive, operator page): a frame whose
 * JPEG went to an inference worker that failed before decoding it has none (0x0, no data).
 */
export function hasPixels(f: Frame | undefined): f is Frame {
  return !!f && f.width >= 1 && f.height >= 1 && (f.channels === 1 || f.channels === 3) && f.data.length === f.width * f.height * f.channels;
}

export interface EncodedFrame {
  /** The JPEG file's bytes. Owns its ArrayBuffer: transferred to the worker, so empty afterwards. */
  jpeg: Uint8Array;
  /** The model input to decode for (the replay camera's fit; undefined = every pixel). */
  fit?: { width: number; height: number; resize?: 'stretch' | 'letterbox' } | undefined;
  /** Told when the worker found the image bad, so the source counts it as it counts its own. */
  onBadFrame?: () => void;
}

/** A defect region found by a head, in frame pixel coordinates. */
export interface Defect {
  class: string;
  score: number;
  /** [x, y, w, h] in pixels of the original frame. */
  box?: [number, number, number, number];
  /** Area in pixels of the original frame. */
  area?: number;
}

export interface Verdict {
  verdict: VerdictKind;
  /** The score compared against the threshold (probability of reject class, anomaly score, max box confidence). */
  score: number;
  threshold: number;
  /** Per-label scores (classification) . */
  scores?: Record<string, number>;
  /** Top label (classification). */
  label?: string;
  defects: Defect[];
  /** Optional low-resolution anomaly map (row-major, values ~ scores), for overlays. */
  map?: { width: number; height: number; data: number[] };
}

export interface ModelRef {
  name: string;
  version: string;
  sha256: string;
}

/** Monotonic stage timestamps (ns). */
export interface StageTimes {
  triggerNs: bigint;
  frameNs?: bigint;
  inferStartNs?: bigint;
  inferEndNs?: bigint;
  decidedNs?: bigint;
  /** When the divert pulse (or the pass) takes effect at the gate. */
  gateNs?: bigint;
}

export interface Part {
  /** Unique across restarts: `<station>-<bootId>-<seq>`. */
  id: string;
  station: string;
  seq: number;
  trigger: TriggerKind;
  /** Wall-clock time of the trigger (ISO 8601), for the central system. */
  triggeredAt: string;
  t: StageTimes;
  frame?: Frame;
  verdict?: Verdict;
  action?: Action;
  failSafe: boolean;
  reason?: FailSafeReason;
  /** Human-readable detail of a fail-safe (error message). */
  detail?: string;
  model?: ModelRef;
  provider?: string;
  /** Inference stage timings reported by the worker (ms). */
  timings?: { queueMs: number; preprocessMs: number; inferMs: number; postprocessMs: number };
}
