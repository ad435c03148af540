// The contract between the training pipeline (stages, dataset, evaluation, report) and the
// training methods (feature extractors, memory banks, classifiers) that produce an ONNX model.
import type { Logger } from '../log.js';
import type { HeadSpec, InputSpec } from '../inference/types.js';

/** One image of a dataset in the folder-per-class layout (`good/`, `<defect>/`, `masks/<defect>/`). */
export interface Sample {
  /** Absolute path of the image. */
  file: string;
  /** Folder name: 'good' or the defect class. */
  label: string;
  isGood: boolean;
  /** Absolute path of the pixel mask (white = defect), when the dataset has one. */
  mask?: string;
  /** sha256 (hex) of the image bytes. */
  sha256: string;
}

export interface FitContext {
  /** anomaly: learn from good samples alone; supervised: also use labelled defects. */
  mode: 'anomaly' | 'supervised';
  seed: number;
  /** Method parameters from the training config. */
  params: Record<string, unknown>;
  log: Logger;
  progress: (done: number, total: number, what: string) => void;
  /** A scratch folder inside the run folder. */
  workDir: string;
}

export interface FitResult {
  /** A standard ONNX model the agent runs like any other. */
  onnx: Uint8Array;
  input: InputSpec;
  head: HeadSpec;
  /** Parameters actually used (recorded in the manifest's provenance). */
  parameters: Record<string, unknown>;
  /** Origin and license of pretrained weights, when any were used. */
  weights: { origin: string; license: string }[];
}

export interface TrainMethod {
  readonly name: string;
  fit(train: Sample[], ctx: FitContext): Promise<FitResult>;
}
