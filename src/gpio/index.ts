// The GPIO binding the agent uses, chosen by config (gpio.backend), and the GPIO API in one import.
import type { Clock } from '../clock.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { OnoffGpio } from './onoff.js';
import { ChardevGpio } from './chardev.js';
import { nativeStatus } from '../native/addon.js';
import { SimGpio } from './sim.js';
import type { GpioBinding } from './types.js';
import { GpioError } from './types.js';

export * from './types.js';
export { SimGpio, EdgeFilter } from './sim.js';
export type { SimChip, SimGpioOptions, LevelChange } from './sim.js';
export { OnoffGpio } from './onoff.js';
export { ChardevGpio, canSchedulePulses, type PulseScheduling } from './chardev.js';
export type { OnoffGpioOptions, OnoffGpioClass, OnoffGpioLike } from './onoff.js';
export { DEFAULT_SYSFS_ROOT, listSysfsChips, findSysfsChip, resolveSysfsLine, sysfsValuePath } from './sysfs.js';
export { choosePulseEngine, type NativePulsesMode, type PulseEngineChoice } from './native-pulses.js';
export type { SysfsChip, SysfsOptions, ResolvedLine } from './sysfs.js';

/**
 * 'sim': the in-memory simulator (one chip 'sim0' / '/dev/gpiochip0' with 32 lines; lines in the
 * config must name it). 'onoff': sysfs GPIO; nothing touches the hardware until a line is opened.
 */
export function createGpioBinding(cfg: Config['gpio'], deps: { clock: Clock; log: Logger }): GpioBinding {
  const log = deps.log.child({ component: 'gpio' });
  switch (cfg.backend) {
    case 'sim':
      return new SimGpio({ clock: deps.clock, nativePulses: cfg.nativePulses, realtime: cfg.realtime, log });
    case 'onoff':
      return new OnoffGpio({ sysfsRoot: cfg.sysfsRoot, log, nativePulses: cfg.nativePulses, realtime: cfg.realtime });
    case 'chardev':
      return new ChardevGpio({ log, debounce: cfg.debounce, realtime: cfg.realtime });
    case 'auto': {
      const why = nativeStatus();
      if (why.available) return new ChardevGpio({ log, debounce: cfg.debounce, realtime: cfg.realtime });
      log.warn('gpio.backend auto: native addon not available, using sysfs (onoff)', { reason: why.reason });
      return new OnoffGpio({ sysfsRoot: cfg.sysfsRoot, log, nativePulses: cfg.nativePulses, realtime: cfg.realtime });
    }
    default:
      throw new GpioError(`unknown gpio.backend '${String((cfg as { backend: unknown }).backend)}' (expected sim, onoff, chardev or auto)`);
  }
}
