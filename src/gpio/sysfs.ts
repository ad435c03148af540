// Resolve a line named by chip (label or /dev/gpiochipN) and offset to the global number the
// sysfs GPIO interface (and onoff) wants, by reading the chips the kernel lists under
// /sys/class/gpio. Global numbers are never hard-coded: the kernel allocates bases dynamically
// (512+ on Raspberry Pi kernels since 6.6, 571 on a Pi 5, 1016 for gpio-sim on Debian 12's 6.1).
// The root is configurable so tests run against fixture trees.
import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { LineSpec } from './types.js';
import { GpioError } from './types.js';

export const DEFAULT_SYSFS_ROOT = '/sys/class/gpio';

export interface SysfsChip {
  /** Directory name under the sysfs root, 'gpiochip<base>'. */
  name: string;
  dir: string;
  label: string;
  base: number;
  ngpio: number;
}

export interface SysfsOptions {
  /** The sysfs GPIO class directory; default /sys/class/gpio. */
  sysfsRoot?: string;
  /**
   * The gpio bus devices directory (/sys/bus/gpio/devices), used for '/dev/gpiochipN' names.
   * Default: derived from sysfsRoot (<root>/../../bus/gpio/devices), so a fixture tree laid out
   * like /sys works with one setting.
   */
  busRoot?: string;
}

export interface ResolvedLine {
  /** Global sysfs GPIO number (base + offset). */
  gpio: number;
  chip: SysfsChip;
  offset: number;
}

function roots(opts: SysfsOptions): { root: string; bus: string } {
  const root = opts.sysfsRoot ?? DEFAULT_SYSFS_ROOT;
  return { root, bus: opts.busRoot ?? join(root, '..', '..', 'bus', 'gpio', 'devices') };
}

function readTrim(path: string): string {
  return readFileSync(path, 'utf8').trim();
}

/** The chips sysfs lists, sorted by base. Throws GpioError when sysfs GPIO is missing. */
export function listSysfsChips(opts: SysfsOptions = {}): SysfsChip[] {
  const { root } = roots(opts);
  if (!existsSync(join(root, 'export'))) {
    throw new GpioError(
      `sysfs GPIO is not available: ${join(root, 'export')} does not exist (kernel built without ` +
        `CONFIG_GPIO_SYSFS, or /sys not mounted). Use the character-device backend (/dev/gpiochipN), ` +
        `or gpio.backend 'sim' without hardware.`,
    );
  }
  const chips: SysfsChip[] = [];
  for (const name of readdirSync(root)) {
    if (!/^gpiochip\d+$/.test(name)) continue;
    const dir = join(root, name);
    try {
      const chip = {
        name,
        dir,
        label: readTrim(join(dir, 'label')),
        base: Number.parseInt(readTrim(join(dir, 'base')), 10),
        ngpio: Number.parseInt(readTrim(join(dir, 'ngpio')), 10),
      };
      if (Number.isInteger(chip.base) && Number.isInteger(chip.ngpio)) chips.push(chip);
    } catch {
      // A chip being removed while we read it (hot-unplugged expander): skip it.
    }
  }
  if (chips.length === 0) throw new GpioError(`no GPIO chips under ${root} (sysfs GPIO is enabled but no chip is registered)`);
  return chips.sort((a, b) => a.base - b.base);
}

function describeChips(chips: SysfsChip[]): string {
  return chips.map((c) => `'${c.label}' (${c.name}, ${c.ngpio} lines)`).join(', ');
}

/**
 * Find the sysfs chip for '/dev/gpiochipN'. The sysfs class device is a child of the chip's
 * parent device (the platform device, e.g. fe200000.gpio), whose directory also holds the
 * character device's gpiochipN; a chip without a parent has the gpiochipN device itself as its
 * device. So, in order:
 *  1. sysfs chips whose device/ is, or contains, gpiochipN; if exactly one, that is it.
 *  2. if several share one parent (gpio-sim with several banks, some multi-bank drivers), match
 *     the label in <bus>/gpiochipN/label where the kernel exposes one (6.1 does not).
 *  3. otherwise an error asking for the chip label instead (the label is unambiguous per bank).
 */
function chipForDevPath(n: number, chips: SysfsChip[], bus: string, path: string): SysfsChip {
  const devName = `gpiochip${n}`;
  const matches = chips.filter((c) => {
    const device = join(c.dir, 'device');
    if (existsSync(join(device, devName))) return true;
    try {
      return basename(realpathSync(device)) === devName;
    } catch {
      return false;
    }
  });
  if (matches.length === 1) return matches[0]!;
  const busLabel = join(bus, devName, 'label');
  if (existsSync(busLabel)) {
    const label = readTrim(busLabel);
    const byLabel = (matches.length > 0 ? matches : chips).filter((c) => c.label === label);
    if (byLabel.length === 1) return byLabel[0]!;
  }
  if (matches.length > 1) {
    throw new GpioError(
      `${path} cannot be told apart in sysfs: chips ${describeChips(matches)} share its parent device. ` +
        `Name the chip by its label instead.`,
    );
  }
  throw new GpioError(`no sysfs GPIO chip matches ${path}; chips here: ${describeChips(chips)}. Name the chip by its label instead.`);
}

/** Resolve a chip label or '/dev/gpiochipN' to its sysfs chip. */
export function findSysfsChip(chipName: string, opts: SysfsOptions = {}): SysfsChip {
  const { bus } = roots(opts);
  const chips = listSysfsChips(opts);
  const dev = /^\/dev\/gpiochip(\d+)$/.exec(chipName);
  if (dev) return chipForDevPath(Number(dev[1]), chips, bus, chipName);
  const byLabel = chips.filter((c) => c.label === chipName);
  if (byLabel.length === 1) return byLabel[0]!;
  if (byLabel.length > 1) {
    throw new GpioError(`chip label '${chipName}' is not unique (${byLabel.map((c) => c.name).join(', ')}); name the chip by its /dev/gpiochipN path`);
  }
  throw new GpioError(`no GPIO chip labelled '${chipName}'; labels here: ${describeChips(chips)}`);
}

/** The `value` file of an exported line: what onoff writes, and the native pulse thread with it. */
export function sysfsValuePath(gpio: number, opts: Pick<SysfsOptions, 'sysfsRoot'> = {}): string {
  return join(opts.sysfsRoot ?? DEFAULT_SYSFS_ROOT, `gpio${gpio}`, 'value');
}

/** Resolve a line (chip label or /dev/gpiochipN, and offset) to its global sysfs number. */
export function resolveSysfsLine(spec: Pick<LineSpec, 'chip' | 'line'>, opts: SysfsOptions = {}): ResolvedLine {
  if (!Number.isInteger(spec.line) || spec.line < 0) {
    throw new GpioError(`line ${String(spec.line)} on chip '${spec.chip}': the offset must be an integer >= 0`);
  }
  const chip = findSysfsChip(spec.chip, opts);
  if (spec.line >= chip.ngpio) {
    throw new GpioError(`line ${spec.line} is beyond chip '${chip.label}' (${chip.name}), which has ${chip.ngpio} lines (0..${chip.ngpio - 1})`);
  }
  return { gpio: chip.base + spec.line, chip, offset: spec.line };
}
