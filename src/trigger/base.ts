// Subscriber bookkeeping shared by the triggers.
import type { Logger } from '../log.js';
import { silentLogger } from '../log.js';
import type { TriggerKind } from '../part.js';
import type { Trigger, TriggerEvent } from './types.js';

export abstract class BaseTrigger implements Trigger {
  abstract readonly kind: TriggerKind;
  private readonly listeners = new Set<{ cb: (ev: TriggerEvent) => void }>();
  protected readonly log: Logger;

  constructor(log?: Logger) {
    this.log = log ?? silentLogger;
  }

  abstract start(): Promise<void>;
  abstract stop(): Promise<void>;

  onTrigger(cb: (ev: TriggerEvent) => void): () => void {
    const entry = { cb }; // an entry per call, so the same function subscribed twice gets two calls
    this.listeners.add(entry);
    return () => void this.listeners.delete(entry);
  }

  /**
   * Deliver to every subscriber. A throwing subscriber is logged, not rethrown: emit runs inside
   * timer, epoll and frame callbacks, where an exception would stop the trigger or kill the
   * process, and the other subscribers must still see the part.
   */
  protected emit(ev: TriggerEvent): void {
    for (const { cb } of [...this.listeners]) {
      try {
        cb(ev);
      } catch (err) {
        this.log.error('trigger subscriber threw', { kind: ev.kind, err });
      }
    }
  }
}
