// Fakes for unit tests of the loop. Each rejects the same bad input as the real part:
// FakeInspector refuses a frame whose data length disagrees with its size (bad_frame), as the
// inference pool does; FakeSource fails grab() with FrameError like the real sources.
import { FrameError, type FrameSource } from '../../src/camera/types.js';
import { InferenceError, type InferenceResult, type Inspector, type InspectorInfo } from '../../src/inference/types.js';
import type { Frame, Verdict } from '../../src/part.js';
import type { GpioOutput } from '../../src/gpio/types.js';
import type { Clock } from '../../src/clock.js';

export function frame(seq = 1, timeNs = 0n, w = 4, h = 4): Frame {
  return { seq, timeNs, width: w, height: h, channels: 1, data: new Uint8Array(w * h), source: 'fake' };
}

export const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

type Pending = { frame: Frame; resolve: (r: InferenceResult) => void; reject: (e: Error) => void };

export class FakeInspector implements Inspector {
  pending: Pending[] = [];
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  inspect(f: Frame): Promise<InferenceResult> {
    if (f.data.length !== f.width * f.height * f.channels) {
      return Promise.reject(new InferenceError(`frame data is ${f.data.length} bytes, expected ${f.width}x${f.height}x${f.channels}`, 'bad_frame'));
    }
    return new Promise((resolve, reject) => this.pending.push({ frame: f, resolve, reject }));
  }
  /** Answer the oldest request. */
  answer(verdict: 'pass' | 'reject', score = verdict === 'reject' ? 0.9 : 0.1): void {
    const p = this.pending.shift();
    if (!p) throw new Error('no pending inspection');
    const v: Verdict = { verdict, score, threshold: 0.5, defects: [] };
    p.resolve({ verdict: v, model: { name: 'fake', version: '1.0.0', sha256: 'f'.repeat(64) }, provider: 'cpu', timings: { preprocessMs: 0, inferMs: 0, postprocessMs: 0, queueMs: 0 } });
  }
  fail(err: Error): void {
    const p = this.pending.shift();
    if (!p) throw new Error('no pending inspection');
    p.reject(err);
  }
  info(): InspectorInfo {
    throw new Error('not used');
  }
}

export class FakeSource implements FrameSource {
  readonly name = 'fake';
  next: (Frame | Error)[] = [];
  seq = 0;
  /** While true, grab() waits for release() (a camera slower than the deadline). */
  hold = false;
  private held: (() => void)[] = [];
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  release(): void {
    this.hold = false;
    for (const r of this.held.splice(0)) r();
  }
  async grab(): Promise<Frame> {
    if (this.hold) await new Promise<void>((r) => this.held.push(r));
    const n = this.next.shift();
    if (n instanceof Error) throw n;
    return n ?? frame(++this.seq);
  }
  onFrame(): () => void {
    return () => {};
  }
  stats() {
    return { frames: this.seq, errors: 0, stalls: 0, restarts: 0, fps: 0 };
  }
}

/** An output that records its level changes against a clock (like the sim binding). */
export class RecordingOutput implements GpioOutput {
  level: 0 | 1 = 0;
  edges: { value: 0 | 1; timeNs: bigint }[] = [];
  constructor(private readonly clock: Clock) {}
  async write(v: 0 | 1): Promise<void> {
    this.writeSync(v);
  }
  writeSync(v: 0 | 1): void {
    if (v !== 0 && v !== 1) throw new Error(`invalid level ${String(v)}: use 0 or 1`);
    this.level = v;
    this.edges.push({ value: v, timeNs: this.clock.nowNs() });
  }
  async read(): Promise<0 | 1> {
    return this.level;
  }
  async close(): Promise<void> {}
}

export { FrameError };
