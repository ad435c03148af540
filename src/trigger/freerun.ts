// Free-run: every frame the source captures is a part.
import type { FrameSource } from '../camera/types.js';
import { FrameError } from '../camera/types.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { BaseTrigger } from './base.js';

export interface FreeRunOptions {
  log?: Logger;
  /** Also told about each frame error (alarms); the error still becomes a part. */
  onError?: (err: FrameError) => void;
}

/**
 * Subscribes to source.onFrame; the caller starts and stops the source itself (the same source
 * serves grab() in the other modes). A frame error becomes a part too (event.frameError, time
 * from the clock), so the loop diverts it fail-safe instead of the part slipping through unseen.
 */
export class FreeRunTrigger extends BaseTrigger {
  readonly kind = 'freerun' as const;
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly source: FrameSource,
    private readonly clock: Clock,
    private readonly opts: FreeRunOptions = {},
  ) {
    super(opts.log);
  }

  async start(): Promise<void> {
    if (this.unsubscribe) return;
    this.unsubscribe = this.source.onFrame(
      (frame) => this.emit({ kind: 'freerun', timeNs: frame.timeNs, frame }),
      (err) => {
        this.log.warn('free-run frame error', { err });
        try {
          this.opts.onError?.(err);
        } catch (e) {
          this.log.error('free-run onError threw', { err: e });
        }
        const frameError = err instanceof Error ? err : new FrameError(String(err));
        this.emit({ kind: 'freerun', timeNs: this.clock.nowNs(), frameError });
      },
    );
  }

  async stop(): Promise<void> {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }
}
