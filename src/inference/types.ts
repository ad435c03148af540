import type { Frame, ModelRef, Verdict } from '../part.js';

/**
 * Largest image decoded (pixels): a small compressed file can expand to gigabytes (a
 * decompression bomb through /v1/predict or a replay folder); 40 MP is far above line cameras.
 */
export const MAX_INPUT_PIXELS = 40_000_000;

// ---- The model bundle manifest (models/<name>/model.json) -------------------------------------

export interface InputSpec {
  /** Name of the ONNX graph input. */
  name: string;
  width: number;
  height: number;
  /** 'gray' => 1 channel, 'rgb' | 'bgr' => 3 channels. */
  colour: 'gray' | 'rgb' | 'bgr';
  layout: 'nchw' | 'nhwc';
  dtype: 'float32' | 'uint8';
  /** Applied before mean/std: x = pixel * scale (default 1/255). */
  scale?: number;
  /** Per channel, after scale: x = (x - mean) / std. */
  mean?: number[];
  std?: number[];
  /** Region of interest in frame pixels, applied before resizing. */
  crop?: { x: number; y: number; width: number; height: number };
  /** How the frame is fitted to width x height (default 'stretch'). */
  resize?: 'stretch' | 'letterbox';
}

export interface ClassificationHead {
  type: 'classification';
  /** ONNX output holding [1, numLabels] logits or probabilities. */
  output: string;
  activation: 'softmax' | 'sigmoid' | 'none';
  labels: string[];
  /** Labels that mean "reject". The score is the sum (softmax) / max (sigmoid) of their probabilities. */
  rejectLabels: string[];
}

export interface AnomalyHead {
  type: 'anomaly';
  /** ONNX output holding the image score, shape [1] or [1,1]. */
  scoreOutput: string;
  /** Optional ONNX output holding an anomaly map [1,1,h,w] or [1,h,w]. */
  mapOutput?: string;
  /** Map cells at or above this value form defect regions (default: threshold). */
  mapThreshold?: number;
  /** Regions smaller than this (frame pixels) are ignored. */
  minArea?: number;
  /** Class name given to defect regions (default 'anomaly'). */
  defectClass?: string;
}

export interface DetectionHead {
  type: 'detection';
  /** YOLO-style output [1, 4 + numClasses, N] (v8) with cx, cy, w, h in input pixels. */
  output: string;
  format: 'yolov8';
  labels: string[];
  /** Minimum class confidence for a box. */
  confidence: number;
  /** IoU above which NMS suppresses the weaker box. */
  iou: number;
  /** Boxes smaller than this (frame pixels) are ignored. */
  minArea?: number;
  /** Labels that mean reject (default all). */
  rejectLabels?: string[];
}

export type HeadSpec = ClassificationHead | AnomalyHead | DetectionHead;

export interface Provenance {
  createdAt?: string;
  createdBy?: string;
  code?: { version?: string; commit?: string };
  dataset?: { name?: string; manifestSha256?: string; images?: number };
  parameters?: Record<string, unknown>;
  metrics?: Record<string, unknown>;
  weights?: { origin: string; license: string }[];
  [k: string]: unknown;
}

export interface ModelManifest {
  schemaVersion: 1;
  name: string;
  /** Semantic version. */
  version: string;
  /** sha256 (hex) of model.onnx. */
  sha256: string;
  description?: string;
  input: InputSpec;
  head: HeadSpec;
  /** Score at or above which the verdict is reject. */
  threshold: number;
  provenance?: Provenance;
}

// ---- The inspector (what the line sees of inference) -------------------------------------------

export type InferenceFailure = 'bad_frame' | 'model_error' | 'worker_crash' | 'overload' | 'stopping';

export class InferenceError extends Error {
  constructor(
    message: string,
    readonly reason: InferenceFailure,
  ) {
    super(message);
    this.name = 'InferenceError';
  }
}

/** A model bundle refused at load (bad manifest, hash mismatch, I/O disagreeing with the manifest). */
export class ModelLoadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ModelLoadError';
  }
}

export interface InferenceResult {
  verdict: Verdict;
  model: ModelRef;
  provider: string;
  timings: { preprocessMs: number; inferMs: number; postprocessMs: number; queueMs: number };
}

export interface InspectorInfo {
  model: ModelRef;
  manifest: ModelManifest;
  provider: string;
  workers: number;
  queued: number;
  inFlight: number;
}

export interface Inspector {
  start(): Promise<void>;
  stop(): Promise<void>;
  /**
   * Verdict for one frame. Rejects with InferenceError: bad_frame (wrong size, decode failure),
   * model_error, worker_crash, overload (queue full). Line parts go before API requests.
   */
  inspect(frame: Frame, opts?: { priority?: 'line' | 'api' }): Promise<InferenceResult>;
  info(): InspectorInfo;
}
