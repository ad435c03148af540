// Reads a TF.js "layers" model (Keras topology + weight manifest) and its weights, as shipped by the
// nsfwjs package: model.min.js / group1-shardNofM.min.js are UMD bundles whose export is the model
// JSON and a base64 string of the weight shard. Weights may be uint8/uint16-quantized
// (value = q * scale + min) or float16; they come back dequantized as Float32Array.
import { createRequire } from 'node:module';
import path from 'node:path';

export interface KerasLayer {
  name: string;
  class_name: string;
  config: Record<string, unknown>;
  /** [[[inboundLayerName, nodeIndex, tensorIndex, kwargs], ...]] */
  inbound_nodes: [string, number, number, unknown][][];
}

export interface TfjsLayersModel {
  layers: KerasLayer[];
  /** Weights by name, e.g. 'Conv1/kernel' (Keras shape order, row-major). */
  weights: Map<string, { shape: number[]; data: Float32Array }>;
}

interface WeightSpec {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { dtype: 'uint8' | 'uint16' | 'float16'; scale?: number; min?: number };
}

interface ModelJson {
  modelTopology: { model_config?: { config: { layers: KerasLayer[] } }; config?: { layers: KerasLayer[] } };
  weightsManifest: { paths: string[]; weights: WeightSpec[] }[];
}

export const NSFWJS_MODELS = ['mobilenet_v2', 'inception_v3'] as const;
export type NsfwjsModel = (typeof NSFWJS_MODELS)[number];

/** Where nsfwjs keeps its bundled models (throws a clear error when the package is missing). */
export function nsfwjsModelDir(model: NsfwjsModel): string {
  const require = createRequire(import.meta.url);
  let main: string;
  try {
    main = require.resolve('nsfwjs');
  } catch {
    throw new Error('pretrained weights need the nsfwjs package (npm install -D nsfwjs)');
  }
  // main is <pkg>/dist/cjs/index.js
  return path.join(path.dirname(main), '..', 'models', model);
}

const cache = new Map<string, TfjsLayersModel>();

/** Loads one of the nsfwjs layers models (cached per process). */
export function loadNsfwjsLayersModel(model: NsfwjsModel): TfjsLayersModel {
  const hit = cache.get(model);
  if (hit) return hit;
  const dir = nsfwjsModelDir(model);
  const require = createRequire(import.meta.url);
  const json = require(path.join(dir, 'model.min.js')) as ModelJson;
  const shards: Buffer[] = [];
  for (const group of json.weightsManifest) {
    for (const p of group.paths) {
      const b64 = require(path.join(dir, `${p}.min.js`)) as unknown;
      if (typeof b64 !== 'string') throw new Error(`${model}/${p}: unexpected weight bundle`);
      shards.push(Buffer.from(b64, 'base64'));
    }
  }
  const specs = json.weightsManifest.flatMap((g) => g.weights);
  const result = decodeLayersModel(json, Buffer.concat(shards), specs);
  cache.set(model, result);
  return result;
}

function decodeLayersModel(json: ModelJson, data: Buffer, specs: WeightSpec[]): TfjsLayersModel {
  const topo = json.modelTopology;
  const layers = (topo.model_config?.config ?? topo.config)?.layers;
  if (!layers) throw new Error('not a TF.js layers model');
  const weights = new Map<string, { shape: number[]; data: Float32Array }>();
  let offset = 0;
  for (const s of specs) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(n);
    const q = s.quantization;
    if (q?.dtype === 'uint8') {
      const scale = q.scale ?? 1;
      const min = q.min ?? 0;
      for (let i = 0; i < n; i++) out[i] = data[offset + i]! * scale + min;
      offset += n;
    } else if (q?.dtype === 'uint16') {
      const scale = q.scale ?? 1;
      const min = q.min ?? 0;
      for (let i = 0; i < n; i++) out[i] = data.readUInt16LE(offset + 2 * i) * scale + min;
      offset += 2 * n;
    } else if (q?.dtype === 'float16') {
      for (let i = 0; i < n; i++) out[i] = halfToFloat(data.readUInt16LE(offset + 2 * i));
      offset += 2 * n;
    } else if (s.dtype === 'float32') {
      for (let i = 0; i < n; i++) out[i] = data.readFloatLE(offset + 4 * i);
      offset += 4 * n;
    } else {
      throw new Error(`weight ${s.name}: unsupported dtype ${s.dtype}`);
    }
    weights.set(s.name, { shape: s.shape, data: out });
  }
  if (offset !== data.length) throw new Error(`weight data: ${data.length} bytes, manifest describes ${offset}`);
  return { layers, weights };
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}
