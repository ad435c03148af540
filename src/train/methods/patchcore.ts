// PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", 2022), anomaly
// mode: locally aware patch features from mid-level MobileNetV2 layers (3x3 neighbourhood
// average, coarser layer resized to the finer grid, concatenated), a random projection to a few
// dozen/hundred dimensions, a greedy k-center coreset of the good images' patches as memory bank,
// and at inference each patch's distance to its nearest bank entry: that is the anomaly map, its
// maximum the image score. Everything, the bank included, is inside the ONNX graph:
// outputs 'score' [1] and 'map' [1, 1, h, w] (same units, so the map threshold is the score's).
import { GraphBuilder } from '../../onnx/builder.js';
import { addPatchEmbedding, WEIGHTS_ORIGIN, type EmbeddingConfig } from '../features/embedding.js';
import { MOBILENET_LAYERS } from '../features/pooled.js';
import { createSession, loadFrame, runFrame } from '../features/runner.js';
import type { FitContext, FitResult, Sample, TrainMethod } from '../types.js';
import { MethodParamError, Params, imageInputSpec, throttledProgress } from './common.js';
import { kCenterCoreset } from './coreset.js';
import { gaussian, rng, shuffleInPlace } from './linear.js';

/** Appends nearest-neighbour distances of the rows of `q` [n, D] to `bank` [K, D]; returns [n]. */
export function addNearestDistance(g: GraphBuilder, q: string, bank: Float32Array, K: number, D: number): string {
  const bankT = new Float32Array(D * K);
  const norms = new Float32Array(K);
  for (let i = 0; i < K; i++) {
    let s = 0;
    for (let j = 0; j < D; j++) {
      const v = bank[i * D + j]!;
      bankT[j * K + i] = v;
      s += v * v;
    }
    norms[i] = s;
  }
  // |q - b|^2 = |q|^2 - 2 q.b + |b|^2, minimised over b; |q|^2 does not depend on b so it is added after.
  const qb = g.node('MatMul', [q, g.initializer('bank.t', 'float32', [D, K], bankT)]);
  const partial = g.node('Add', [g.node('Mul', [qb, g.constant('float32', [], [-2])]), g.initializer('bank.norm2', 'float32', [1, K], norms)]);
  const minPartial = g.node('ReduceMin', [partial], { axes: [1], keepdims: 1 });
  const qq = g.node('ReduceSum', [g.node('Mul', [q, q]), g.constant('int64', [1], [1])], { keepdims: 1 });
  const d2 = g.node('Relu', [g.node('Add', [minPartial, qq])]);
  return g.node('Sqrt', [d2]);
}

export const patchcore: TrainMethod = {
  name: 'patchcore',
  async fit(train: Sample[], ctx: FitContext): Promise<FitResult> {
    const t0 = Date.now();
    const p = new Params('patchcore', ctx.params);
    const width = p.number('width', p.number('size', 320, { min: 64, max: 1024, integer: true }), { min: 64, max: 1024, integer: true });
    const height = p.number('height', width, { min: 64, max: 1024, integer: true });
    const resize = p.string('resize', 'letterbox', ['letterbox', 'stretch'] as const);
    const colour = p.string('colour', 'gray', ['gray', 'rgb'] as const);
    const layerSpec = p.string('layers', 'b6+b13');
    const localPool = p.number('localPool', 3, { min: 1, max: 7, integer: true });
    const projDims = p.number('projDims', 128, { min: 8, max: 1024, integer: true });
    const bankSize = p.number('bankSize', 4000, { min: 16, max: 50000, integer: true });
    const candidates = p.number('candidates', 100000, { min: 100, max: 2000000, integer: true });
    const parameters = p.done();
    if (width % 32 || height % 32) throw new MethodParamError('patchcore: width and height must be multiples of 32');
    const layers = layerSpec.split('+').map((l) => MOBILENET_LAYERS[l.trim()] ?? l.trim());
    const goods = train.filter((s) => s.isGood);
    if (goods.length === 0) throw new MethodParamError('patchcore: needs good training images');
    if (ctx.mode === 'supervised') ctx.log.info('patchcore learns from the good images only; labelled defects are not used');

    const spec = imageInputSpec(width, height, colour, resize);
    const channels = colour === 'gray' ? 1 : 3;
    const cfg: EmbeddingConfig = { backbone: 'mobilenet_v2', layers, localPool };
    const r = rng(ctx.seed * 104729 + 3);

    // Embedding graph: patch features projected to projDims, [hw, D].
    const build = (g: GraphBuilder): { value: string; hw: number; h: number; w: number; C: number } => {
      const x = g.input('image', 'float32', [1, channels, height, width]);
      const e = addPatchEmbedding(g, x, channels, height, width, cfg);
      const hw = e.height * e.width;
      const rows = g.node('Transpose', [g.node('Reshape', [e.value, g.constant('int64', [2], [e.channels, hw])])], { perm: [1, 0] });
      return { value: rows, hw, h: e.height, w: e.width, C: e.channels };
    };
    // Channel count first (the projection's shape depends on it).
    const probe = new GraphBuilder();
    const shape = build(probe);
    const C = shape.C;
    const D = Math.min(projDims, C);
    const proj = gaussian(C * D, r).map((v) => v / Math.sqrt(D));

    const eg = new GraphBuilder({ name: 'patch-embedding' });
    const emb = build(eg);
    eg.node('MatMul', [emb.value, eg.initializer('proj', 'float32', [C, D], proj)], {}, { name: 'patches' });
    eg.output('patches', 'float32', [emb.hw, D]);
    const session = await createSession(eg.toBytes());

    // Candidate patches: an even share of each good image (random positions).
    const perImage = Math.max(1, Math.min(emb.hw, Math.ceil(candidates / goods.length)));
    const X = new Float32Array(goods.length * perImage * D);
    const progress = throttledProgress(ctx.progress);
    const positions = Array.from({ length: emb.hw }, (_, i) => i);
    let n = 0;
    for (let i = 0; i < goods.length; i++) {
      const frame = await loadFrame(goods[i]!.file, spec);
      const [f] = await runFrame(session, frame, spec, ['patches']);
      shuffleInPlace(positions, r);
      for (let k = 0; k < perImage; k++) {
        const pos = positions[k]!;
        X.set(f!.subarray(pos * D, (pos + 1) * D), n * D);
        n++;
      }
      progress(i + 1, goods.length, 'patch features');
    }
    await session.release();
    const tFeatures = Date.now();

    const K = Math.min(bankSize, n);
    ctx.log.info('coreset selection', { candidates: n, bank: K, dims: D });
    const sel = kCenterCoreset(X, n, D, K, ctx.seed * 31 + 7);
    const bank = new Float32Array(sel.length * D);
    sel.forEach((i, j) => bank.set(X.subarray(i * D, (i + 1) * D), j * D));
    const tCoreset = Date.now();

    const g = new GraphBuilder({ name: 'patchcore' });
    const m = build(g);
    const q = g.node('MatMul', [m.value, g.initializer('proj', 'float32', [C, D], proj)]);
    const dist = addNearestDistance(g, q, bank, sel.length, D);
    g.node('Reshape', [dist, g.constant('int64', [4], [1, 1, m.h, m.w])], {}, { name: 'map' });
    g.node('Reshape', [g.node('ReduceMax', [dist], { keepdims: 0 }), g.constant('int64', [1], [1])], {}, { name: 'score' });
    g.output('score', 'float32', [1]);
    g.output('map', 'float32', [1, 1, m.h, m.w]);
    const onnx = g.toBytes({ producerName: 'linesight-train', docString: `patchcore: MobileNetV2 ${layerSpec}, bank ${sel.length}x${D}` });
    ctx.log.info('fit done', {
      method: 'patchcore',
      featureSeconds: (tFeatures - t0) / 1000,
      coresetSeconds: (tCoreset - tFeatures) / 1000,
      onnxBytes: onnx.length,
    });
    return {
      onnx,
      input: spec,
      head: { type: 'anomaly', scoreOutput: 'score', mapOutput: 'map' },
      parameters: { ...parameters, patchDims: C, bank: sel.length, grid: [m.h, m.w] },
      weights: [WEIGHTS_ORIGIN.mobilenet_v2],
    };
  },
};
