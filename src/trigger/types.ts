// A trigger makes parts: each TriggerEvent becomes one Part in the inspection loop.
import type { Frame, TriggerKind } from '../part.js';

export interface TriggerEvent {
  kind: TriggerKind;
  /** Monotonic time the part was at the camera (ns): frame time, deadline, or edge time. */
  timeNs: bigint;
  /** The frame that made the part (free-run); other kinds leave the loop to grab one. */
  frame?: Frame;
  /** Free-run: the source failed to deliver this frame; the part is diverted fail-safe. */
  frameError?: Error;
}

export interface Trigger {
  readonly kind: TriggerKind;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Subscribe to parts. Returns an unsubscribe function. */
  onTrigger(cb: (ev: TriggerEvent) => void): () => void;
}
