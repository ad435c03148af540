// Helpers for HIL scenarios (run inside the qemu guest by test/hil/run.sh). The guest exports the
// virtual line-side device in HIL_* variables; these helpers play the outside world on it:
// a photo-eye is a gpio-sim line pulled up or down, a probe reads an output's simulated level.
import { readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { GpioDriver } from '../unit/gpio-contract.js';

export { sleep };

export interface HilEnv {
  /** gpio-sim chip label ('linesight-hil'). */
  label: string;
  /** Its character device ('/dev/gpiochip0'). */
  dev: string;
  /** The simulator's sysfs dir (…/gpio-sim.0/gpiochip0) holding sim_gpioN/{pull,value}. */
  sim: string;
  lines: number;
  /** vivid's capture node. */
  video: string;
  /** The checkout (read-only in the guest). */
  root: string;
  /** The agent's CLI bundled by bundle.mjs (`node <agent> run -c FILE`). */
  agent: string;
  /** tracefs, when the guest could mount it (the gpio_value event records every line write). */
  tracefs?: string;
}

export function hilEnv(): HilEnv {
  const need = (k: string): string => {
    const v = process.env[k];
    if (!v) throw new Error(`${k} is not set: HIL scenarios run inside the guest (test/hil/run.sh)`);
    return v;
  };
  return {
    label: need('HIL_GPIO_LABEL'),
    dev: need('HIL_GPIO_DEV'),
    sim: need('HIL_GPIO_SIM'),
    lines: Number(need('HIL_GPIO_LINES')),
    video: need('HIL_VIDEO'),
    root: need('HIL_ROOT'),
    agent: need('HIL_AGENT'),
    tracefs: process.env.HIL_TRACEFS || undefined,
  };
}

/** Pull a simulated line up (1) or down (0), as a photo-eye's output would drive it. */
export function simDrive(env: HilEnv, line: number, value: 0 | 1): void {
  writeFileSync(`${env.sim}/sim_gpio${line}/pull`, value ? 'pull-up' : 'pull-down');
}

/** The simulated line's electrical level, as a probe on the pin would see it. */
export function simLevel(env: HilEnv, line: number): 0 | 1 {
  return readFileSync(`${env.sim}/sim_gpio${line}/value`, 'utf8').trim() === '1' ? 1 : 0;
}

/** Wait until `cond` holds, checking every `everyMs`; throws with `what` after `timeoutMs`. */
export async function until(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000, everyMs = 5): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/**
 * The GPIO contract's driver on gpio-sim. Under emulation everything is slow, so the debounce
 * window is wide (the back-to-back drives of a "bounce" take a few ms) and settle() is a real
 * pause long enough for the kernel's edge to reach JS.
 */
export function simDriver(env: HilEnv, lines: readonly [number, number]): GpioDriver {
  return {
    chip: env.label,
    chipAlias: env.dev,
    lineCount: env.lines,
    lines,
    debounceMs: 400,
    nowNs: () => process.hrtime.bigint(),
    drive: (line, v) => simDrive(env, line, v),
    level: (line) => simLevel(env, line),
    wait: (ms) => sleep(ms),
    settle: () => sleep(120),
  };
}
