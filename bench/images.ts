// The benchmark's images: synthetic screen-protector film frames (src/camera/synthetic.ts, half of
// them with a defect) saved as JPEG at the camera size a model is benchmarked with, once, into the
// bench cache. Every section (limits, agent, naive baseline) reads the same files.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { decodeImageFile, type DecodeFit } from '../src/camera/replay.js';
import { renderFilmFrame } from '../src/camera/synthetic.js';
import type { Frame } from '../src/part.js';
import { defaultCacheDir } from './models.js';

export const IMAGE_COUNT = 24;
const IMAGE_VERSION = 1;

/** Folder of IMAGE_COUNT JPEG frames of width x height; built on first use. */
export async function ensureImages(width: number, height: number, cacheDir = defaultCacheDir(), log: (m: string) => void = () => {}): Promise<{ dir: string; files: string[] }> {
  const dir = join(cacheDir, 'images', `film-${width}x${height}-v${IMAGE_VERSION}`);
  const list = (): string[] => readdirSync(dir).filter((f) => f.endsWith('.jpg')).sort().map((f) => join(dir, f));
  if (existsSync(dir) && list().length === IMAGE_COUNT) return { dir, files: list() };
  log(`rendering ${IMAGE_COUNT} film frames ${width}x${height} into ${dir} ...`);
  const staging = `${dir}.tmp-${process.pid}`;
  mkdirSync(staging, { recursive: true });
  for (let i = 0; i < IMAGE_COUNT; i++) {
    const f = renderFilmFrame({ width, height, seed: 42, defectRate: 0.5 }, i);
    await sharp(f.data, { raw: { width, height, channels: 3 } })
      .jpeg({ quality: 90 })
      .toFile(join(staging, `${String(i).padStart(3, '0')}-${f.truth.verdict}.jpg`));
  }
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(cacheDir, 'images'), { recursive: true });
  renameSync(staging, dir);
  return { dir, files: list() };
}

/**
 * Decode as the replay camera does (the same function). `fit`: the model input it decodes for with
 * `camera.replay.decodeSize: model` (the default) — undefined for every pixel (`full`).
 */
export async function decodeLikeReplay(file: string, gray: boolean, seq: number, fit?: DecodeFit): Promise<Frame> {
  const d = await decodeImageFile(file, { colour: gray ? 'gray' : 'rgb', fit });
  return { seq, timeNs: process.hrtime.bigint(), ...d, source: 'replay', file };
}

