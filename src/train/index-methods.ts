// Training methods by name (the training config's `method`). Filled in by the methods module.
import type { TrainMethod } from './types.js';

export const methods: Record<string, TrainMethod> = {};
