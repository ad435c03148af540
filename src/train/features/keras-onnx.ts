// Imports (part of) a Keras / TF.js layers model into an ONNX graph being built with GraphBuilder:
// channels-last Keras layers become NCHW ONNX operators, BatchNormalization is folded into the
// convolution before it, ZeroPadding2D is folded into the convolution after it, and a 1-channel
// (greyscale) input feeding a 3-channel first convolution is handled by summing that kernel over
// its input channels (the same as replicating grey into R=G=B, at a third of the cost).
// Only the layers needed for the requested outputs are emitted.
import type { GraphBuilder } from '../../onnx/builder.js';
import type { KerasLayer, TfjsLayersModel } from './tfjs-layers.js';

export interface ImportOptions {
  /** Graph value holding the image, NCHW float32, already normalised as the network expects. */
  input: string;
  /** Channels of `input` (1 for greyscale, 3 for RGB). */
  inputChannels: 1 | 3;
  /** Keras layer names whose outputs are wanted. */
  outputs: string[];
  /** Prefix for initializer names (keeps two imports in one graph apart). */
  prefix?: string;
}

export interface ImportedValue {
  value: string;
  channels: number;
  /** Total stride relative to the input. */
  stride: number;
}

type Tensor = { shape: number[]; data: Float32Array };

interface Val extends ImportedValue {
  /** ZeroPadding2D not yet applied: [top, left, bottom, right]. */
  pendingPads?: [number, number, number, number];
  /** The un-padded value, when pendingPads is set. */
  raw?: string;
}

export function importKerasLayers(g: GraphBuilder, model: TfjsLayersModel, opts: ImportOptions): Map<string, ImportedValue> {
  const byName = new Map(model.layers.map((l) => [l.name, l]));
  const inbound = (l: KerasLayer): string[] => (l.inbound_nodes[0] ?? []).map((n) => n[0]);
  // Consumers, to know when a BN can be folded into its convolution.
  const consumers = new Map<string, string[]>();
  for (const l of model.layers) for (const i of inbound(l)) consumers.set(i, [...(consumers.get(i) ?? []), l.name]);
  // Layers needed for the requested outputs.
  const needed = new Set<string>();
  const stack = [...opts.outputs];
  while (stack.length) {
    const n = stack.pop()!;
    if (needed.has(n)) continue;
    const l = byName.get(n);
    if (!l) throw new Error(`keras import: no layer '${n}'`);
    needed.add(n);
    stack.push(...inbound(l));
  }
  const prefix = opts.prefix ?? '';
  const W = (name: string): Tensor => {
    const w = model.weights.get(name);
    if (!w) throw new Error(`keras import: missing weight '${name}'`);
    return w;
  };
  const vals = new Map<string, Val>();
  const folded = new Set<string>();
  const get = (name: string): Val => {
    const v = vals.get(name);
    if (!v) throw new Error(`keras import: layer '${name}' used before it was built`);
    return v;
  };
  /** A value with any pending ZeroPadding2D applied (for consumers that cannot fold it). */
  const materialise = (v: Val): string => {
    if (!v.pendingPads) return v.value;
    if (v.value !== v.raw) return v.value;
    const [t, l, b, r] = v.pendingPads;
    const pads = g.constant('int64', [8], [0, 0, t, l, 0, 0, b, r]);
    v.value = g.node('Pad', [v.raw!, pads], { mode: 'constant' });
    return v.value;
  };

  for (const layer of model.layers) {
    if (!needed.has(layer.name) || folded.has(layer.name)) continue;
    const c = layer.config;
    const ins = inbound(layer);
    switch (layer.class_name) {
      case 'InputLayer':
        vals.set(layer.name, { value: opts.input, channels: opts.inputChannels, stride: 1 });
        break;
      case 'ZeroPadding2D': {
        const src = get(ins[0]!);
        const p = c.padding as number[][] | number[] | number;
        let pads: [number, number, number, number];
        if (typeof p === 'number') pads = [p, p, p, p];
        else if (typeof p[0] === 'number') pads = [p[0] as number, p[1] as number, p[0] as number, p[1] as number];
        else {
          const q = p as number[][];
          pads = [q[0]![0]!, q[1]![0]!, q[0]![1]!, q[1]![1]!];
        }
        const raw = materialise(src);
        vals.set(layer.name, { value: raw, raw, channels: src.channels, stride: src.stride, pendingPads: pads });
        break;
      }
      case 'Conv2D':
      case 'DepthwiseConv2D': {
        const src = get(ins[0]!);
        const depthwise = layer.class_name === 'DepthwiseConv2D';
        const k = W(`${layer.name}/${depthwise ? 'depthwise_kernel' : 'kernel'}`);
        const [kh, kw, cin, cout0] = k.shape as [number, number, number, number];
        const strides = (c.strides as number[]) ?? [1, 1];
        const dil = (c.dilation_rate as number[]) ?? [1, 1];
        if (dil[0] !== 1 || dil[1] !== 1) throw new Error(`${layer.name}: dilation not supported`);
        const cout = depthwise ? cin * cout0 : cout0;
        // ONNX weight [cout, cin/group, kh, kw]
        let inC = depthwise ? 1 : cin;
        let w = new Float32Array(cout * inC * kh * kw);
        for (let y = 0; y < kh; y++)
          for (let x = 0; x < kw; x++)
            for (let i = 0; i < cin; i++)
              for (let o = 0; o < cout0; o++) {
                const val = k.data[((y * kw + x) * cin + i) * cout0 + o]!;
                if (depthwise) w[((i * cout0 + o) * 1 + 0) * kh * kw + y * kw + x] = val;
                else w[((o * cin + i) * kh + y) * kw + x] = val;
              }
        if (!depthwise && src.channels !== cin) {
          if (!(src.channels === 1 && cin === 3)) throw new Error(`${layer.name}: ${src.channels} channels in, kernel wants ${cin}`);
          const w1 = new Float32Array(cout * kh * kw);
          for (let o = 0; o < cout; o++)
            for (let i = 0; i < 3; i++)
              for (let j = 0; j < kh * kw; j++) w1[o * kh * kw + j]! += w[(o * 3 + i) * kh * kw + j]!;
          w = w1;
          inC = 1;
        }
        const b = new Float32Array(cout);
        if (c.use_bias !== false && model.weights.has(`${layer.name}/bias`)) b.set(W(`${layer.name}/bias`).data);
        // Fold a BatchNormalization that is this layer's only consumer.
        let outName = layer.name;
        const cons = consumers.get(layer.name) ?? [];
        const act = (c.activation as string | undefined) ?? 'linear';
        if (act === 'linear' && cons.length === 1 && byName.get(cons[0]!)?.class_name === 'BatchNormalization') {
          const bn = byName.get(cons[0]!)!;
          const { scale, shift } = bnAffine(bn, model, cout);
          for (let o = 0; o < cout; o++) {
            const per = w.length / cout;
            for (let j = 0; j < per; j++) w[o * per + j]! *= scale[o]!;
            b[o] = b[o]! * scale[o]! + shift[o]!;
          }
          folded.add(bn.name);
          outName = bn.name;
        }
        const wName = g.initializer(`${prefix}${layer.name}.w`, 'float32', [cout, inC, kh, kw], w);
        const bName = g.initializer(`${prefix}${layer.name}.b`, 'float32', [cout], b);
        const attrs: Record<string, number | number[] | string> = {
          kernel_shape: [kh, kw],
          strides: [strides[0]!, strides[1]!],
          group: depthwise ? cin : 1,
        };
        let input = src.value;
        if (c.padding === 'same') {
          if (src.pendingPads) input = materialise(src);
          if (strides[0] === 1 && strides[1] === 1 && kh % 2 === 1 && kw % 2 === 1) {
            attrs.pads = [(kh - 1) / 2, (kw - 1) / 2, (kh - 1) / 2, (kw - 1) / 2];
          } else attrs.auto_pad = 'SAME_UPPER';
        } else {
          if (src.pendingPads) {
            input = src.raw!;
            attrs.pads = [...src.pendingPads];
          } else attrs.pads = [0, 0, 0, 0];
        }
        let out = g.node('Conv', [input, wName, bName], attrs);
        if (act === 'relu') out = g.node('Relu', [out]);
        else if (act !== 'linear') throw new Error(`${layer.name}: activation ${act} not supported`);
        const v: Val = { value: out, channels: cout, stride: src.stride * strides[0]! };
        vals.set(layer.name, v);
        if (outName !== layer.name) vals.set(outName, v);
        break;
      }
      case 'BatchNormalization': {
        const src = get(ins[0]!);
        const { scale, shift } = bnAffine(layer, model, src.channels);
        const s = g.initializer(`${prefix}${layer.name}.scale`, 'float32', [1, src.channels, 1, 1], scale);
        const t = g.initializer(`${prefix}${layer.name}.shift`, 'float32', [1, src.channels, 1, 1], shift);
        const out = g.node('Add', [g.node('Mul', [materialise(src), s]), t]);
        vals.set(layer.name, { value: out, channels: src.channels, stride: src.stride });
        break;
      }
      case 'ReLU': {
        const src = get(ins[0]!);
        const max = c.max_value as number | null | undefined;
        if ((c.negative_slope as number | undefined) || (c.threshold as number | undefined)) {
          throw new Error(`${layer.name}: leaky/thresholded ReLU not supported`);
        }
        const out =
          max === null || max === undefined
            ? g.node('Relu', [materialise(src)])
            : g.node('Clip', [materialise(src), g.constant('float32', [], [0]), g.constant('float32', [], [max])]);
        vals.set(layer.name, { value: out, channels: src.channels, stride: src.stride });
        break;
      }
      case 'Activation': {
        const src = get(ins[0]!);
        const a = c.activation as string;
        const out =
          a === 'relu' ? g.node('Relu', [materialise(src)]) : a === 'linear' ? materialise(src) : unsupported(layer, a);
        vals.set(layer.name, { value: out, channels: src.channels, stride: src.stride });
        break;
      }
      case 'Add': {
        const srcs = ins.map(get);
        let out = materialise(srcs[0]!);
        for (const s of srcs.slice(1)) out = g.node('Add', [out, materialise(s)]);
        vals.set(layer.name, { value: out, channels: srcs[0]!.channels, stride: srcs[0]!.stride });
        break;
      }
      case 'Concatenate': {
        const srcs = ins.map(get);
        const out = g.node('Concat', srcs.map(materialise), { axis: 1 });
        vals.set(layer.name, { value: out, channels: srcs.reduce((a, s) => a + s.channels, 0), stride: srcs[0]!.stride });
        break;
      }
      case 'MaxPooling2D':
      case 'AveragePooling2D': {
        const src = get(ins[0]!);
        const pool = (c.pool_size as number[]) ?? [2, 2];
        const strides = (c.strides as number[] | null) ?? pool;
        const attrs: Record<string, number | number[] | string> = { kernel_shape: pool, strides };
        if (c.padding === 'same') attrs.auto_pad = 'SAME_UPPER';
        if (layer.class_name === 'AveragePooling2D') attrs.count_include_pad = 0;
        const out = g.node(layer.class_name === 'MaxPooling2D' ? 'MaxPool' : 'AveragePool', [materialise(src)], attrs);
        vals.set(layer.name, { value: out, channels: src.channels, stride: src.stride * strides[0]! });
        break;
      }
      default:
        unsupported(layer, layer.class_name);
    }
  }
  const result = new Map<string, ImportedValue>();
  for (const o of opts.outputs) {
    const v = get(o);
    result.set(o, { value: materialise(v), channels: v.channels, stride: v.stride });
  }
  return result;
}

function unsupported(layer: KerasLayer, what: string): never {
  throw new Error(`keras import: layer ${layer.name}: ${what} not supported`);
}

function bnAffine(bn: KerasLayer, model: TfjsLayersModel, channels: number): { scale: Float32Array; shift: Float32Array } {
  const get = (n: string): Float32Array | undefined => model.weights.get(`${bn.name}/${n}`)?.data;
  const eps = (bn.config.epsilon as number | undefined) ?? 1e-3;
  const gamma = bn.config.scale === false ? undefined : get('gamma');
  const beta = bn.config.center === false ? undefined : get('beta');
  const mean = get('moving_mean');
  const variance = get('moving_variance');
  if (!mean || !variance) throw new Error(`${bn.name}: missing moving statistics`);
  const scale = new Float32Array(channels);
  const shift = new Float32Array(channels);
  for (let i = 0; i < channels; i++) {
    scale[i] = (gamma ? gamma[i]! : 1) / Math.sqrt(variance[i]! + eps);
    shift[i] = (beta ? beta[i]! : 0) - mean[i]! * scale[i]!;
  }
  return { scale, shift };
}
