// Running feature graphs over training images with onnxruntime-node (CPU), and the image
// sources a method feeds them: files as the agent would see them, and good files with a
// synthetic defect painted in.
import * as ort from 'onnxruntime-node';
import { decodeImageFile } from '../../inference/image.js';
import { preprocess } from '../../inference/preprocess.js';
import type { InputSpec } from '../../inference/types.js';
import type { Frame } from '../../part.js';

export async function createSession(onnx: Uint8Array, threads = 2): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(Buffer.from(onnx.buffer, onnx.byteOffset, onnx.byteLength), {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  });
}

/** Decodes an image file the way the agent does for this input spec. */
export async function loadFrame(file: string, spec: InputSpec): Promise<Frame> {
  return decodeImageFile(file, { colour: spec.colour === 'gray' ? 'gray' : 'rgb' });
}

/** Runs a one-input graph on a frame (preprocessed per spec) and returns the named outputs. */
export async function runFrame(
  session: ort.InferenceSession,
  frame: Frame,
  spec: InputSpec,
  outputs: string[],
): Promise<Float32Array[]> {
  const t = await preprocess(frame, spec);
  const feeds: Record<string, ort.Tensor> = {
    [spec.name]: new ort.Tensor(spec.dtype === 'uint8' ? 'uint8' : 'float32', t.data, t.dims),
  };
  const res = await session.run(feeds, outputs);
  return outputs.map((o) => {
    const v = res[o];
    if (!v) throw new Error(`feature graph gave no output '${o}'`);
    return v.data as Float32Array;
  });
}
