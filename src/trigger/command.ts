// Command: a part on request (MQTT cmd/trigger, HTTP POST), available in every trigger mode.
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { BaseTrigger } from './base.js';
import type { TriggerEvent } from './types.js';

export class TriggerStoppedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TriggerStoppedError';
  }
}

export class CommandTrigger extends BaseTrigger {
  readonly kind = 'command' as const;
  private running = false;

  constructor(
    private readonly clock: Clock,
    opts: { log?: Logger } = {},
  ) {
    super(opts.log);
  }

  async start(): Promise<void> {
    this.running = true;
  }

  async stop(): Promise<void> {
    this.running = false;
  }

  /**
   * Make a part now: delivered to the onTrigger subscribers, and returned so the caller can
   * answer with it. Use one or the other to act on it, not both, or the part is made twice.
   * Throws TriggerStoppedError when the trigger is not started.
   */
  fire(): TriggerEvent {
    if (!this.running) throw new TriggerStoppedError('command trigger is not started: the line is not running');
    const ev: TriggerEvent = { kind: 'command', timeNs: this.clock.nowNs() };
    this.emit(ev);
    return ev;
  }
}
