import { InferenceSession } from 'onnxruntime-node';
import { readFileSync } from 'node:fs';
const b = readFileSync('node_modules/.cache/linesight-bench/models/yolov8n-v1/model.onnx');
for (const lvl of ['disabled', 'basic', 'extended', 'all'] as const) {
  try { await InferenceSession.create(b, { graphOptimizationLevel: lvl }); console.log(lvl, 'ok'); } catch (e) { console.log(lvl, (e as Error).message); }
}
