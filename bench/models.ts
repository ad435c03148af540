// Reference models of realistic size for the benchmark, written with the project's own ONNX writer
// (src/onnx/builder.ts): random weights, real compute. Each is built once into a cache folder as a
// complete bundle (model.onnx + model.json with its sha256), so the agent's real path (loadBundle,
// checkModelIO, the worker, the head) runs them exactly as it would run a trained model.
//
//   resnet18  ResNet-18 topology (torchvision, BatchNorm folded into the convolutions), 224x224 RGB,
//             ImageNet mean/std, 5-way classification head (good + the four film defects).
//   yolov8n   YOLOv8n topology (ultralytics, width 0.25, depth 0.33: C2f, SPPF, PAN neck, decoupled
//             head with DFL), 640x640 letterboxed RGB, output [1, 4 + 4, 8400] (yolov8 format).
//
// The weights are He-uniform from a fixed seed, so the bytes (and the sha256) are reproducible.
// Random weights give no meaningful verdicts, so the thresholds are calibrated on the bench images
// at build time (as film-demo's threshold was calibrated on synthetic frames): about half of the
// parts are rejected, so the diverter has work to do; the detector's confidence is set so that a
// few dozen anchors per image reach NMS, as with a trained detector at a low confidence.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { GraphBuilder } from '../src/onnx/builder.js';
import { mulberry32 } from '../src/camera/synthetic.js';
import type { DetectionHead, ModelManifest } from '../src/inference/types.js';

export type ModelKey = 'film-demo' | 'resnet18' | 'yolov8n';
export const MODEL_KEYS: readonly ModelKey[] = ['film-demo', 'resnet18', 'yolov8n'];

/** Bumped whenever a builder changes, so stale cached bundles are rebuilt. */
const BUILD_VERSION = 3;
const DEFECTS = ['scratch', 'dust', 'bubble', 'stain'];
/** Camera frame size of the bench images per model: film-demo's own demo size, a 1.2 MP camera for the others. */
export const FRAME: Record<ModelKey, { width: number; height: number }> = {
  'film-demo': { width: 320, height: 240 },
  resnet18: { width: 1280, height: 960 },
  yolov8n: { width: 1280, height: 960 },
};

export interface BenchModel {
  key: ModelKey;
  dir: string;
  manifest: ModelManifest;
  /** Camera frame size the bench images have for this model. */
  frame: { width: number; height: number };
  bytes: number;
  params: number;
}

/** Default cache: node_modules/.cache/linesight-bench (ignored by git, survives between runs). */
export function defaultCacheDir(): string {
  return resolve(process.env.LINESIGHT_BENCH_CACHE ?? join('node_modules', '.cache', 'linesight-bench'));
}

// ---- small graph helpers ----------------------------------------------------------------------

class Net {
  readonly g = new GraphBuilder({ name: 'bench' });
  private readonly rnd: () => number;
  params = 0;
  constructor(seed: number) {
    this.rnd = mulberry32(seed);
  }

  /** He-uniform weights [cout, cin/group, k, k] and a small bias (a folded BatchNorm). */
  conv(x: string, cin: number, cout: number, k: number, stride = 1, opts: { gain?: number; bias?: number; pad?: number } = {}): string {
    const fanIn = cin * k * k;
    const a = Math.sqrt(6 / fanIn) * (opts.gain ?? 1);
    const w = new Float32Array(cout * cin * k * k);
    for (let i = 0; i < w.length; i++) w[i] = (this.rnd() * 2 - 1) * a;
    const b = new Float32Array(cout);
    for (let i = 0; i < cout; i++) b[i] = (opts.bias ?? 0) + (this.rnd() * 2 - 1) * 0.01;
    this.params += w.length + b.length;
    const p = opts.pad ?? Math.floor(k / 2);
    return this.g.node(
      'Conv',
      [x, this.g.constant('float32', [cout, cin, k, k], w), this.g.constant('float32', [cout], b)],
      { kernel_shape: [k, k], strides: [stride, stride], pads: [p, p, p, p] },
    );
  }

  relu(x: string): string {
    return this.g.node('Relu', [x]);
  }

  silu(x: string): string {
    return this.g.node('Mul', [x, this.g.node('Sigmoid', [x])]);
  }

  i64(values: number[]): string {
    return this.g.constant('int64', [values.length], values);
  }

  f32(dims: number[], values: Float32Array | number[]): string {
    return this.g.constant('float32', dims, values);
  }
}

// ---- ResNet-18 --------------------------------------------------------------------------------

function buildResnet18(): { bytes: Uint8Array; params: number } {
  const n = new Net(0x5e5e18);
  const { g } = n;
  const x = g.input('image', 'float32', [1, 3, 224, 224]);
  let y = n.relu(n.conv(x, 3, 64, 7, 2));
  y = g.node('MaxPool', [y], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] });
  let cin = 64;
  for (const [cout, firstStride] of [[64, 1], [128, 2], [256, 2], [512, 2]] as const) {
    for (let b = 0; b < 2; b++) {
      const stride = b === 0 ? firstStride : 1;
      const identity = stride !== 1 || cin !== cout ? n.conv(y, cin, cout, 1, stride, { pad: 0 }) : y;
      let z = n.relu(n.conv(y, cin, cout, 3, stride));
      // The second conv of a block starts small (as zero-init-residual training leaves it), so the
      // activations stay in range through eight random blocks.
      z = n.conv(z, cout, cout, 3, 1, { gain: 0.5 });
      y = n.relu(g.node('Add', [z, identity]));
      cin = cout;
    }
  }
  y = g.node('Flatten', [g.node('GlobalAveragePool', [y])], { axis: 1 });
  const classes = 1 + DEFECTS.length;
  const a = Math.sqrt(6 / 512) * 0.1;
  const rnd = mulberry32(0xfc);
  const w = new Float32Array(512 * classes).map(() => (rnd() * 2 - 1) * a);
  n.params += w.length + classes;
  // Bias towards 'good': a clean line mostly passes.
  const bias = [2, 0, 0, 0, 0];
  g.node('Gemm', [y, n.f32([512, classes], w), n.f32([classes], bias)], {}, { name: 'logits' });
  g.output('logits', 'float32', [1, classes]);
  return { bytes: g.toBytes({ producerName: 'linesight-bench', docString: 'ResNet-18 topology, random weights' }), params: n.params };
}

// ---- YOLOv8n ----------------------------------------------------------------------------------

function buildYolov8n(): { bytes: Uint8Array; params: number } {
  const n = new Net(0x7010f8);
  const { g } = n;
  const nc = DEFECTS.length;
  const size = 640;
  const cbs = (x: string, cin: number, cout: number, k: number, s = 1): string => n.silu(n.conv(x, cin, cout, k, s));
  const bottleneck = (x: string, c: number, shortcut: boolean): string => {
    const y = cbs(cbs(x, c, c, 3), c, c, 3);
    return shortcut ? g.node('Add', [x, y]) : y;
  };
  const c2f = (x: string, cin: number, cout: number, depth: number, shortcut: boolean): string => {
    const c = cout / 2;
    const both = cbs(x, cin, 2 * c, 1);
    // A copy: nodeMulti returns the node's own output list, which push() would grow.
    const parts = [...g.nodeMulti('Split', [both, n.i64([c, c])], { axis: 1 }, 2)];
    for (let i = 0; i < depth; i++) parts.push(bottleneck(parts[parts.length - 1]!, c, shortcut));
    return cbs(g.node('Concat', parts, { axis: 1 }), (2 + depth) * c, cout, 1);
  };
  const sppf = (x: string, c1: number, c2: number): string => {
    const c = c1 / 2;
    const ys = [cbs(x, c1, c, 1)];
    for (let i = 0; i < 3; i++) ys.push(g.node('MaxPool', [ys[i]!], { kernel_shape: [5, 5], strides: [1, 1], pads: [2, 2, 2, 2] }));
    return cbs(g.node('Concat', ys, { axis: 1 }), 4 * c, c2, 1);
  };
  const up = (x: string): string =>
    g.node('Resize', [x, '', n.f32([4], [1, 1, 2, 2])], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' });
  const cat = (a: string, b: string): string => g.node('Concat', [a, b], { axis: 1 });

  const x = g.input('images', 'float32', [1, 3, size, size]);
  let y = cbs(x, 3, 16, 3, 2); // P1/2
  y = cbs(y, 16, 32, 3, 2); // P2/4
  y = c2f(y, 32, 32, 1, true);
  y = cbs(y, 32, 64, 3, 2); // P3/8
  const p3 = c2f(y, 64, 64, 2, true);
  y = cbs(p3, 64, 128, 3, 2); // P4/16
  const p4 = c2f(y, 128, 128, 2, true);
  y = cbs(p4, 128, 256, 3, 2); // P5/32
  y = c2f(y, 256, 256, 1, true);
  const p5 = sppf(y, 256, 256);
  const h12 = c2f(cat(up(p5), p4), 384, 128, 1, false);
  const o3 = c2f(cat(up(h12), p3), 192, 64, 1, false); // 80x80
  const o4 = c2f(cat(cbs(o3, 64, 64, 3, 2), h12), 192, 128, 1, false); // 40x40
  const o5 = c2f(cat(cbs(o4, 128, 128, 3, 2), p5), 384, 256, 1, false); // 20x20

  const regMax = 16;
  const c2 = 64;
  const c3 = 64;
  const levels: [string, number, number][] = [[o3, 64, 8], [o4, 128, 16], [o5, 256, 32]];
  const flat: string[] = [];
  const anchors: number[][] = [[], []];
  const strides: number[] = [];
  for (const [feat, ch, stride] of levels) {
    const side = size / stride;
    const box = n.conv(cbs(cbs(feat, ch, c2, 3), c2, c2, 3), c2, 4 * regMax, 1, 1, { pad: 0 });
    // A negative bias, as a trained detector's class logits have on background anchors.
    const cls = n.conv(cbs(cbs(feat, ch, c3, 3), c3, c3, 3), c3, nc, 1, 1, { pad: 0, bias: -4.5 });
    flat.push(g.node('Reshape', [cat(box, cls), n.i64([1, 4 * regMax + nc, side * side])]));
    for (let yy = 0; yy < side; yy++) {
      for (let xx = 0; xx < side; xx++) {
        anchors[0]!.push(xx + 0.5);
        anchors[1]!.push(yy + 0.5);
        strides.push(stride);
      }
    }
  }
  const A = strides.length; // 8400
  const all = g.node('Concat', flat, { axis: 2 });
  const [boxRaw, clsRaw] = g.nodeMulti('Split', [all, n.i64([4 * regMax, nc])], { axis: 1 }, 2) as [string, string];
  // DFL: a softmax over 16 bins per side, then its expectation.
  let d = g.node('Reshape', [boxRaw, n.i64([1, 4, regMax, A])]);
  d = g.node('Softmax', [g.node('Transpose', [d], { perm: [0, 2, 1, 3] })], { axis: 1 });
  const bins = new Float32Array(regMax).map((_, i) => i);
  d = g.node('Conv', [d, n.f32([1, regMax, 1, 1], bins)], { kernel_shape: [1, 1] });
  d = g.node('Reshape', [d, n.i64([1, 4, A])]);
  const [lt, rb] = g.nodeMulti('Split', [d, n.i64([2, 2])], { axis: 1 }, 2) as [string, string];
  const anchor = n.f32([1, 2, A], Float32Array.from([...anchors[0]!, ...anchors[1]!]));
  const x1y1 = g.node('Sub', [anchor, lt]);
  const x2y2 = g.node('Add', [anchor, rb]);
  const cxy = g.node('Div', [g.node('Add', [x1y1, x2y2]), n.f32([], [2])]);
  const wh = g.node('Sub', [x2y2, x1y1]);
  const dbox = g.node('Mul', [g.node('Concat', [cxy, wh], { axis: 1 }), n.f32([1, 1, A], Float32Array.from(strides))]);
  g.node('Concat', [dbox, g.node('Sigmoid', [clsRaw])], { axis: 1 }, { name: 'output0' });
  g.output('output0', 'float32', [1, 4 + nc, A]);
  return { bytes: g.toBytes({ producerName: 'linesight-bench', docString: 'YOLOv8n topology, random weights' }), params: n.params };
}

// ---- bundles ----------------------------------------------------------------------------------

function manifestFor(key: 'resnet18' | 'yolov8n', sha256: string, params: number): ModelManifest {
  const provenance = { createdBy: 'bench/models.ts', note: 'benchmark reference model: random weights, real compute', parameters: { params, buildVersion: BUILD_VERSION } };
  if (key === 'resnet18') {
    return {
      schemaVersion: 1,
      name: 'bench-resnet18',
      version: `1.0.${BUILD_VERSION}`,
      sha256,
      description: 'ResNet-18 topology at 224x224, random weights (benchmark only)',
      input: { name: 'image', width: 224, height: 224, colour: 'rgb', layout: 'nchw', dtype: 'float32', scale: 1 / 255, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], resize: 'stretch' },
      head: { type: 'classification', output: 'logits', activation: 'softmax', labels: ['good', ...DEFECTS], rejectLabels: DEFECTS },
      threshold: 0.5,
      provenance,
    };
  }
  return {
    schemaVersion: 1,
    name: 'bench-yolov8n',
    version: `1.0.${BUILD_VERSION}`,
    sha256,
    description: 'YOLOv8n topology at 640x640, random weights (benchmark only)',
    input: { name: 'images', width: 640, height: 640, colour: 'rgb', layout: 'nchw', dtype: 'float32', scale: 1 / 255, resize: 'letterbox' },
    head: { type: 'detection', output: 'output0', format: 'yolov8', labels: DEFECTS, confidence: 0.25, iou: 0.45 },
    threshold: 0.25,
    provenance,
  };
}

/** Scores of the model on the bench images, through the agent's own preprocessing. */
async function calibrate(key: 'resnet18' | 'yolov8n', onnx: Uint8Array, manifest: ModelManifest, images: string[]): Promise<Partial<ModelManifest>> {
  const { InferenceSession, Tensor } = await import('onnxruntime-node');
  const { decodeImageFile } = await import('../src/inference/image.js');
  const { preprocess } = await import('../src/inference/preprocess.js');
  const session = await InferenceSession.create(onnx, { intraOpNumThreads: 1 });
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const perImage: Float32Array[] = [];
  try {
    for (const file of images) {
      const frame = await decodeImageFile(file, { colour: 'rgb' });
      const t = await preprocess(frame, manifest.input);
      const out = await session.run({ [manifest.input.name]: new Tensor('float32', t.data as Float32Array, t.dims) });
      perImage.push(Float32Array.from(Object.values(out)[0]!.data as Float32Array));
    }
  } finally {
    await session.release();
  }
  if (key === 'resnet18') {
    const scores = perImage.map((logits) => {
      const e = [...logits].map((v) => Math.exp(v - Math.max(...logits)));
      const sum = e.reduce((a, b) => a + b, 0);
      return (sum - e[0]!) / sum; // every label but 'good' is a reject label
    });
    // Just above the median: about half the parts are rejected.
    return { threshold: median(scores) };
  }
  const N = 8400;
  const C = DEFECTS.length;
  const ranked = perImage.map((d) => {
    const best: number[] = [];
    for (let n = 0; n < N; n++) {
      let m = 0;
      for (let c = 0; c < C; c++) m = Math.max(m, d[(4 + c) * N + n]!);
      best.push(m);
    }
    return best.sort((a, b) => b - a);
  });
  const confidence = median(ranked.map((r) => r[40]!));
  const threshold = median(ranked.map((r) => r[0]!));
  return { threshold, head: { ...(manifest.head as DetectionHead), confidence } };
}

/** The bundle folder for `key`, building (and calibrating on `images`) when it is missing or stale. */
export async function ensureModel(key: ModelKey, images: string[], cacheDir = defaultCacheDir(), log: (m: string) => void = () => {}): Promise<BenchModel> {
  if (key === 'film-demo') {
    const dir = resolve('models/film-demo');
    const manifest = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8')) as ModelManifest;
    const bytes = readFileSync(join(dir, 'model.onnx')).length;
    return { key, dir, manifest, frame: FRAME[key], bytes, params: 0 };
  }
  const dir = join(cacheDir, 'models', `${key}-v${BUILD_VERSION}`);
  const frame = FRAME[key];
  const jsonPath = join(dir, 'model.json');
  if (existsSync(jsonPath) && existsSync(join(dir, 'model.onnx'))) {
    const manifest = JSON.parse(readFileSync(jsonPath, 'utf8')) as ModelManifest;
    const onnx = readFileSync(join(dir, 'model.onnx'));
    if (createHash('sha256').update(onnx).digest('hex') === manifest.sha256) {
      return { key, dir, manifest, frame, bytes: onnx.length, params: Number((manifest.provenance?.parameters as { params?: number })?.params ?? 0) };
    }
  }
  log(`building ${key} into ${dir} ...`);
  const t0 = Date.now();
  const { bytes, params } = key === 'resnet18' ? buildResnet18() : buildYolov8n();
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  let manifest = manifestFor(key, sha256, params);
  manifest = { ...manifest, ...(await calibrate(key, bytes, manifest, images)) };
  const staging = `${dir}.tmp-${process.pid}`;
  mkdirSync(staging, { recursive: true });
  writeFileSync(join(staging, 'model.onnx'), bytes);
  writeFileSync(join(staging, 'model.json'), JSON.stringify(manifest, null, 2) + '\n');
  mkdirSync(join(cacheDir, 'models'), { recursive: true });
  rmSync(dir, { recursive: true, force: true });
  renameSync(staging, dir);
  log(`built ${key}: ${(bytes.length / 1e6).toFixed(1)} MB, ${(params / 1e6).toFixed(2)} M parameters, ${Date.now() - t0} ms (with calibration)`);
  return { key, dir, manifest, frame, bytes: bytes.length, params };
}
