import type { Frame } from '../part.js';

/** Thrown by a FrameSource when it cannot deliver a usable frame. */
export class FrameError extends Error {
  constructor(
    message: string,
    readonly reason: 'bad_frame' | 'camera' = 'bad_frame',
  ) {
    super(message);
    this.name = 'FrameError';
  }
}

/**
 * Where frames come from. Constructors do nothing; start() opens the device/process/folder.
 * grab() delivers the next frame (pull: triggered inspection); onFrame() delivers every frame as
 * it is captured (push: free-run), the source pacing itself at its configured rate.
 */
export interface FrameSource {
  readonly name: string;
  /**
   * Frames come from a device or process that runs on its own (ffmpeg, V4L2): grab() waits for the
   * next one and consumes nothing, so the agent can wait for a first frame before it reports ready.
   */
  readonly live?: boolean;
  start(): Promise<void>;
  stop(): Promise<void>;
  /**
   * The smallest frame the model needs (undefined: full size): its input size and how it resizes. A
   * source that decodes images may then decode at a reduced size that still covers it (JPEG
   * shrink-on-load): less CPU and memory per part.
   */
  fitFor?(size: { width: number; height: number; resize?: 'stretch' | 'letterbox' } | undefined): void;
  /** The next frame. Rejects with FrameError (reason bad_frame or camera) when it cannot. */
  grab(): Promise<Frame>;
  /** Subscribe to every captured frame (free-run). Returns an unsubscribe function. */
  onFrame(cb: (frame: Frame) => void, onError?: (err: FrameError) => void): () => void;
  /** Stats for status/metrics. */
  stats(): { frames: number; errors: number; stalls: number; restarts: number; fps: number };
}
