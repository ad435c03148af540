// Image file -> model input tensor at training time, through the agent's own inference path
// (decodeImageFile -> preprocess per InputSpec), so features learned here are the ones the agent
// computes on the line.
import { decodeImageFile } from '../../inference/image.js';
import { preprocess } from '../../inference/preprocess.js';
import type { InputSpec } from '../../inference/types.js';

export interface InputTensorData {
  data: Float32Array;
  dims: number[];
  /** Size of the decoded image. */
  width: number;
  height: number;
}

/** The float32 input tensor the agent would feed the model for this image file. */
export async function inputTensor(file: string, spec: InputSpec): Promise<InputTensorData> {
  if (spec.dtype !== 'float32') throw new Error('training feature extraction expects a float32 input');
  const frame = await decodeImageFile(file, { colour: spec.colour === 'gray' ? 'gray' : 'rgb' });
  const t = await preprocess(frame, spec);
  return { data: t.data as Float32Array, dims: t.dims, width: frame.width, height: frame.height };
}
