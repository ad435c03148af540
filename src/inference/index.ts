// Inference: model bundles, image decoding and the worker pool the line inspects frames with.
import { InferencePool, type InferencePoolOptions } from './pool.js';

export { loadBundle, checkModelIO, validateManifest, type ModelBundle } from './manifest.js';
export { InferencePool, type InferencePoolOptions } from './pool.js';
export { decodeImage, decodeImageFile, type DecodeOptions } from './image.js';
export { preprocess, type Geometry } from './preprocess.js';
export { predictFiles, type PredictResult } from './predict.js';

export const createInspector = (opts: InferencePoolOptions): InferencePool => new InferencePool(opts);
