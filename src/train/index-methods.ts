// Training methods by name (the training config's `method`).
//   patchcore         anomaly mode: PatchCore memory bank over MobileNetV2 patch features (good images only)
//   synthetic-linear  anomaly mode: logistic regression, good vs synthetic defects painted on good images;
//                     supervised mode adds the labelled defects
//   features-linear   supervised mode: logistic regression, good vs labelled defects
import type { TrainMethod } from './types.js';
import { patchcore } from './methods/patchcore.js';
import { featuresLinear, syntheticLinear } from './methods/pooled-linear.js';

export const methods: Record<string, TrainMethod> = {
  patchcore,
  'synthetic-linear': syntheticLinear,
  'features-linear': featuresLinear,
};
