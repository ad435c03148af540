// Training methods by name (the training config's `method`).
//   patchcore         anomaly mode: PatchCore memory bank over MobileNetV2 patch features (good images only)
//   synthetic-linear  anomaly mode: logistic regression, good vs synthetic defects painted on good images;
//                     supervised mode adds the labelled defects
//   features-linear   supervised mode: logistic regression, good vs labelled defects
//   highpass-stats    anomaly mode: the film-demo high-pass detector with per-position mean and std of
//                     its response learned from good images (score: standard deviations from good)
import type { TrainMethod } from './types.js';
import { highpassStats } from './methods/highpass-stats.js';
import { patchcore } from './methods/patchcore.js';
import { featuresLinear, syntheticLinear } from './methods/pooled-linear.js';

export const methods: Record<string, TrainMethod> = {
  patchcore,
  'synthetic-linear': syntheticLinear,
  'features-linear': featuresLinear,
  'highpass-stats': highpassStats,
};
