// Image file -> model input tensor at training time, through the agent's own inference path
// (decodeImageFile -> preprocess per InputSpec), so features learned here are the ones the agent
// computes on the line.
import { decodeImageFile } from '../../inference/image.js';
import sharp from 'sharp';
import { fitLayout, planGeometry, preprocess } from '../../inference/preprocess.js';
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

/**
 * A defect mask placed exactly where its image lands in the model input (same crop, scale and
 * letterbox offsets; padding counts as not defective), then averaged over cells of `stride`
 * input pixels: the fraction of each cell that is defect, [gridH * gridW] row-major.
 */
export async function maskGrid(maskFile: string, spec: InputSpec, stride: number): Promise<{ data: Float32Array; width: number; height: number }> {
  const frame = await decodeImageFile(maskFile, { colour: 'gray' });
  const geo = planGeometry(frame.width, frame.height, spec);
  const fit = fitLayout(geo);
  const crop = geo.crop!;
  let img = sharp(frame.data, { raw: { width: frame.width, height: frame.height, channels: 1 } });
  if (crop.x !== 0 || crop.y !== 0 || crop.width !== frame.width || crop.height !== frame.height) {
    img = img.extract({ left: crop.x, top: crop.y, width: crop.width, height: crop.height });
  }
  const px = await img.resize(fit.width, fit.height, { fit: 'fill', kernel: 'linear' }).toColourspace('b-w').raw().toBuffer();
  const gw = Math.ceil(spec.width / stride);
  const gh = Math.ceil(spec.height / stride);
  const sum = new Float32Array(gw * gh);
  for (let y = 0; y < fit.height; y++) {
    const gy = Math.floor((y + fit.padY) / stride);
    for (let x = 0; x < fit.width; x++) {
      if (px[y * fit.width + x]! >= 128) sum[gy * gw + Math.floor((x + fit.padX) / stride)]! += 1;
    }
  }
  for (let i = 0; i < sum.length; i++) sum[i]! /= stride * stride;
  return { data: sum, width: gw, height: gh };
}
