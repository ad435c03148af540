// The trigger the config asks for, plus the command trigger every mode has.
import type { FrameSource } from '../camera/types.js';
import type { Clock } from '../clock.js';
import type { Config } from '../config/schema.js';
import type { GpioBinding, LineSpec } from '../gpio/types.js';
import type { Logger } from '../log.js';
import type { TriggerKind } from '../part.js';
import { BaseTrigger } from './base.js';
import { CommandTrigger } from './command.js';
import { FreeRunTrigger } from './freerun.js';
import { GpioTrigger } from './gpio.js';
import { IntervalTrigger } from './interval.js';
import type { Trigger } from './types.js';

export type { Trigger, TriggerEvent } from './types.js';
export { BaseTrigger } from './base.js';
export { CommandTrigger, TriggerStoppedError } from './command.js';
export { FreeRunTrigger, type FreeRunOptions } from './freerun.js';
export { GpioTrigger, type GpioTriggerOptions } from './gpio.js';
export { IntervalTrigger } from './interval.js';

/** Makes no parts by itself: the mode's trigger in 'command' mode, where only commands make parts. */
export class IdleTrigger extends BaseTrigger {
  constructor(readonly kind: TriggerKind) {
    super();
  }
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
}

export interface TriggerDeps {
  clock: Clock;
  gpio: GpioBinding;
  source: FrameSource;
  log: Logger;
  /** The photo-eye line in gpio mode; default cfg.gpio.input. */
  photoEye?: LineSpec;
}

export interface Triggers {
  /** The mode's own source of parts (an IdleTrigger in 'command' mode). */
  trigger: Trigger;
  /** Parts on request (MQTT/HTTP), in every mode. Never the same object as `trigger`. */
  command: CommandTrigger;
}

/**
 * Returns two disjoint sources of parts: subscribe to both (and start and stop both) and every
 * part arrives exactly once. Throws when gpio mode has no input line.
 */
export function createTrigger(cfg: Config['trigger'], deps: TriggerDeps): Triggers {
  const log = deps.log;
  const command = new CommandTrigger(deps.clock, { log });
  let trigger: Trigger;
  switch (cfg.mode) {
    case 'freerun':
      trigger = new FreeRunTrigger(deps.source, deps.clock, { log });
      break;
    case 'interval':
      trigger = new IntervalTrigger(cfg.intervalMs, deps.clock, { log });
      break;
    case 'gpio': {
      const spec = deps.photoEye ?? cfg.gpio.input;
      if (!spec) throw new Error("trigger.mode is 'gpio' but no input line is set (trigger.gpio.input: { chip, line })");
      trigger = new GpioTrigger(deps.gpio, spec, { edge: cfg.gpio.edge, debounceMs: cfg.gpio.debounceMs }, { log });
      break;
    }
    case 'command':
      trigger = new IdleTrigger('command');
      break;
    default:
      throw new Error(`unknown trigger.mode '${String((cfg as { mode: unknown }).mode)}'`);
  }
  return { trigger, command };
}
