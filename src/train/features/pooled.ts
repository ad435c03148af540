// Image-level descriptors from a pretrained backbone, as ONNX nodes: for each chosen layer, the
// global average of its feature map and/or the global max of its 3x3-averaged map (the 3x3
// average keeps one noisy activation from owning the max; the max keeps small defects from being
// averaged away).
import type { GraphBuilder } from '../../onnx/builder.js';
import { importKerasLayers } from './keras-onnx.js';
import { loadNsfwjsLayersModel, type NsfwjsModel } from './tfjs-layers.js';

export interface PooledLayer {
  /** Keras layer name. */
  layer: string;
  avg: boolean;
  max: boolean;
}

export interface PooledConfig {
  backbone: NsfwjsModel;
  layers: PooledLayer[];
}

/** Short names for MobileNetV2 layers used in method parameters. */
export const MOBILENET_LAYERS: Record<string, string> = {
  b1: 'block_1_expand_relu',
  b3: 'block_3_expand_relu',
  b6: 'block_6_expand_relu',
  b10: 'block_10_expand_relu',
  b13: 'block_13_expand_relu',
  b16: 'block_16_expand_relu',
  out: 'out_relu',
};

/**
 * Parses 'b3+b6+b13+b16:avg' (a layer alone means avg and max; ':avg' / ':max' one of them).
 * Full Keras layer names are accepted too.
 */
export function parsePooledLayers(spec: string): PooledLayer[] {
  return spec
    .split('+')
    .map((p) => p.trim())
    .filter(Boolean)
    .map((p) => {
      const [name, kind] = p.split(':') as [string, string | undefined];
      if (kind !== undefined && kind !== 'avg' && kind !== 'max') throw new Error(`layers: '${p}': use :avg or :max`);
      return { layer: MOBILENET_LAYERS[name] ?? name, avg: kind !== 'max', max: kind !== 'avg' };
    });
}

/**
 * Adds backbone + pooling to `g`; returns the [N, dims] descriptor value, one row per image of
 * the batch. `image` is [N, 1|3, H, W] float32 in 0..1.
 */
export function addPooledFeatures(
  g: GraphBuilder,
  image: string,
  imageChannels: 1 | 3,
  cfg: PooledConfig,
  crops?: CropGrid,
): { value: string; dims: number; crops?: string } {
  const model = loadNsfwjsLayersModel(cfg.backbone);
  const names = [...new Set(cfg.layers.map((l) => l.layer))];
  const maps = importKerasLayers(g, model, { input: image, inputChannels: imageChannels, outputs: names });
  const parts: string[] = [];
  const cropParts: string[] = [];
  let dims = 0;
  for (const l of cfg.layers) {
    const m = maps.get(l.layer)!;
    // Crops pool the same maps over windows: the backbone runs once, and each crop sees the
    // context beyond its borders that the whole-image pass gave it.
    const window = crops && { kernel_shape: [crops.size / m.stride, crops.size / m.stride], strides: [crops.step / m.stride, crops.step / m.stride] };
    if (l.avg) {
      parts.push(g.node('GlobalAveragePool', [m.value]));
      if (window) cropParts.push(g.node('AveragePool', [m.value], window));
      dims += m.channels;
    }
    if (l.max) {
      const local = g.node('AveragePool', [m.value], { kernel_shape: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1], count_include_pad: 0 });
      parts.push(g.node('GlobalMaxPool', [local]));
      if (window) cropParts.push(g.node('MaxPool', [local], window));
      dims += m.channels;
    }
  }
  const cat = parts.length === 1 ? parts[0]! : g.node('Concat', parts, { axis: 1 });
  const value = g.node('Reshape', [cat, g.constant('int64', [2], [-1, dims])]);
  if (!crops) return { value, dims };
  return { value, dims, crops: cropParts.length === 1 ? cropParts[0]! : g.node('Concat', cropParts, { axis: 1 }) };
}

/** Square crops of `size` input pixels every `step` pixels (both multiples of 32, the deepest stride). */
export interface CropGrid {
  size: number;
  step: number;
}

/** Crops across an input side of n pixels. */
export const cropsAlong = (n: number, c: CropGrid): number => Math.floor((n - c.size) / c.step) + 1;

/** Mirror sets: the image as is, then its mirrored copies (h: left-right, v: top-bottom, hv: both). */
export const FLIP_SETS = { none: [''], h: ['', 'h'], hv: ['', 'h', 'v', 'hv'] } as const;
export type FlipSet = keyof typeof FLIP_SETS;

/**
 * [1, C, H, W] -> [k, C, H, W]: the image and its mirrored copies, stacked as a batch (ONNX Slice
 * with step -1). Defects and good surfaces look alike mirrored, so training on the copies gives a
 * small dataset four times the views, and averaging the copies' descriptors at inference (one
 * batched run) removes the head's preference for where on the part a defect sits.
 */
export function addFlips(g: GraphBuilder, image: string, width: number, height: number, set: FlipSet): string {
  const flips = FLIP_SETS[set];
  if (flips.length === 1) return image;
  const mirror = (v: string, axis: 2 | 3, size: number): string =>
    g.node('Slice', [v, g.constant('int64', [1], [-1]), g.constant('int64', [1], [-size - 1]), g.constant('int64', [1], [axis]), g.constant('int64', [1], [-1])]);
  const views = flips.map((f) => {
    let v = image;
    if (f.includes('h')) v = mirror(v, 3, width);
    if (f.includes('v')) v = mirror(v, 2, height);
    return v;
  });
  return g.node('Concat', views, { axis: 0 });
}

/** [k, dims] -> [1, dims]: the mean descriptor over the views. */
export function meanOverViews(g: GraphBuilder, value: string): string {
  return g.node('ReduceMean', [value], { axes: [0], keepdims: 1 });
}
