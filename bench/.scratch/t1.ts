import { ensureModel } from '../models.js';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { readFileSync } from 'node:fs';
for (const key of ['resnet18', 'yolov8n'] as const) {
  const m = ensureModel(key, undefined, console.log);
  for (const threads of [1, 2]) {
    const s = await InferenceSession.create(readFileSync(m.dir + '/model.onnx'), { intraOpNumThreads: threads, graphOptimizationLevel: 'all' });
    const { width, height } = m.manifest.input;
    const data = new Float32Array(3 * width * height).map(() => Math.random());
    const feeds = { [m.manifest.input.name]: new Tensor('float32', data, [1, 3, height, width]) };
    let out = await s.run(feeds);
    const n = key === 'resnet18' ? 30 : 8;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) out = await s.run(feeds);
    const o = Object.values(out)[0]!;
    const d = o.data as Float32Array;
    let nan = 0, max = -Infinity; for (const v of d) { if (!Number.isFinite(v)) nan++; if (v > max) max = v; }
    console.log(key, threads, ((performance.now() - t0) / n).toFixed(1), 'ms', o.dims, 'nan', nan, 'max', max);
    if (key === 'yolov8n') { const N = 8400; let c = 0; for (let n2 = 0; n2 < N; n2++) for (let k = 4; k < 8; k++) if (d[k * N + n2]! > 0.25) c++; console.log('cands>0.25', c, 'box sample', d[0], d[N], d[2*N], d[3*N]); }
    else console.log(Array.from(d));
    await s.release();
  }
}
