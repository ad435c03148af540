// Locally aware patch embeddings (PatchCore style) from a pretrained backbone, as ONNX nodes:
// several intermediate feature maps, each averaged over a small neighbourhood, resized to the
// resolution of the finest one and concatenated along channels.
import type { GraphBuilder } from '../../onnx/builder.js';
import { importKerasLayers } from './keras-onnx.js';
import { loadNsfwjsLayersModel, type NsfwjsModel } from './tfjs-layers.js';

export interface EmbeddingConfig {
  backbone: NsfwjsModel;
  /** Keras layer names, finest first (e.g. ['block_6_expand_relu', 'block_13_expand_relu']). */
  layers: string[];
  /** Side of the neighbourhood average (1 = none). */
  localPool: number;
}

export interface EmbeddingValue {
  /** [1, channels, height, width] */
  value: string;
  channels: number;
  height: number;
  width: number;
  stride: number;
  /** Per-layer pooled maps before resizing (same order as config.layers). */
  perLayer: { value: string; channels: number; height: number; width: number; stride: number }[];
}

export const WEIGHTS_ORIGIN: Record<NsfwjsModel, { origin: string; license: string }> = {
  mobilenet_v2: {
    origin:
      'MobileNetV2 (alpha 1.0, 224) from the nsfwjs 4 npm package (node_modules/nsfwjs/dist/models/mobilenet_v2): ' +
      'Keras ImageNet weights fine-tuned by nsfwjs, uint8-quantized; imported layer by layer into ONNX with BatchNorm folded',
    license: 'MIT (nsfwjs); Keras MobileNetV2 ImageNet weights Apache-2.0',
  },
  inception_v3: {
    origin:
      'InceptionV3 (299) from the nsfwjs 4 npm package (node_modules/nsfwjs/dist/models/inception_v3): ' +
      'Keras ImageNet weights fine-tuned by nsfwjs, uint8-quantized; imported layer by layer into ONNX with BatchNorm folded',
    license: 'MIT (nsfwjs); Keras InceptionV3 ImageNet weights Apache-2.0',
  },
};

/**
 * Adds the backbone and the patch embedding to `g`. `image` is [1, 1|3, height, width] float32
 * in the range the backbone expects (0..1 for the nsfwjs models).
 */
export function addPatchEmbedding(
  g: GraphBuilder,
  image: string,
  imageChannels: 1 | 3,
  height: number,
  width: number,
  cfg: EmbeddingConfig,
): EmbeddingValue {
  const model = loadNsfwjsLayersModel(cfg.backbone);
  const maps = importKerasLayers(g, model, { input: image, inputChannels: imageChannels, outputs: cfg.layers });
  const perLayer = cfg.layers.map((name) => {
    const m = maps.get(name)!;
    const h = Math.ceil(height / m.stride);
    const w = Math.ceil(width / m.stride);
    let v = m.value;
    if (cfg.localPool > 1) {
      const p = cfg.localPool;
      const lo = Math.floor((p - 1) / 2);
      v = g.node('AveragePool', [v], {
        kernel_shape: [p, p],
        strides: [1, 1],
        pads: [lo, lo, p - 1 - lo, p - 1 - lo],
        count_include_pad: 0,
      });
    }
    return { value: v, channels: m.channels, height: h, width: w, stride: m.stride };
  });
  const first = perLayer[0]!;
  const parts = perLayer.map((l) => {
    if (l.height === first.height && l.width === first.width) return l.value;
    const sizes = g.constant('int64', [4], [1, l.channels, first.height, first.width]);
    return g.node('Resize', [l.value, '', '', sizes], {
      mode: 'linear',
      coordinate_transformation_mode: 'half_pixel',
    });
  });
  const value = parts.length === 1 ? parts[0]! : g.node('Concat', parts, { axis: 1 });
  return {
    value,
    channels: perLayer.reduce((a, l) => a + l.channels, 0),
    height: first.height,
    width: first.width,
    stride: first.stride,
    perLayer,
  };
}
