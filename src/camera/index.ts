// The camera: one FrameSource picked by config. Everything else on the line sees only FrameSource.
import type { Clock } from '../clock.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { FfmpegSource } from './ffmpeg.js';
import { ReplaySource } from './replay.js';
import { SyntheticSource } from './synthetic.js';
import type { FrameSource } from './types.js';

export { FrameError, type FrameSource } from './types.js';
export {
  SyntheticSource,
  renderFilmFrame,
  FILM_DEFECT_CLASSES,
  mulberry32,
  hashSeed,
  type FilmDefectClass,
  type FilmFrame,
  type FilmOptions,
} from './synthetic.js';
export { ReplaySource, listImages, labelItems, truthFromLabel } from './replay.js';
export { FfmpegSource, ffmpegArgs, type FfmpegDeps } from './ffmpeg.js';
export { V4l2Source } from './v4l2.js';
import { V4l2Source } from './v4l2.js';

export interface FrameSourceDeps {
  clock: Clock;
  log: Logger;
  /** Camera trouble worth an operator's attention (ffmpeg stalls/exits): kind, message. */
  onAlarm?: (kind: string, message: string) => void;
}

export function createFrameSource(cfg: Config['camera'], deps: FrameSourceDeps): FrameSource {
  switch (cfg.source) {
    case 'synthetic':
      return new SyntheticSource(cfg.synthetic, { clock: deps.clock });
    case 'replay':
      return new ReplaySource(cfg.replay, { clock: deps.clock, log: deps.log });
    case 'ffmpeg':
      return new FfmpegSource(cfg.ffmpeg, deps);
    case 'v4l2':
      return new V4l2Source(cfg.v4l2, deps);
    default: {
      const never: never = cfg.source;
      throw new Error(`unknown camera.source '${String(never)}': use synthetic, replay, ffmpeg or v4l2`);
    }
  }
}
