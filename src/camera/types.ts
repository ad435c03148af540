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
  start(): Promise<void>;
  stop(): Promise<void>;
  /** The next frame. Rejects with FrameError (reason bad_frame or camera) when it cannot. */
  grab(): Promise<Frame>;
  /** Subscribe to every captured frame (free-run). Returns an unsubscribe function. */
  onFrame(cb: (frame: Frame) => void, onError?: (err: FrameError) => void): () => void;
  /** Stats for status/metrics. */
  stats(): { frames: number; errors: number; stalls: number; restarts: number; fps: number };
}
