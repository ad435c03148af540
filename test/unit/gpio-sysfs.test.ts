// sysfs line resolution against fixture trees laid out like /sys (made in a temp dir per test),
// and OnoffGpio over a fake of onoff's Gpio class that behaves like the kernel's sysfs GPIO
// (raw 'high'/'low' directions, logical edges with active_low, value read at callback time, and
// each exported line's `value` file in the fixture tree, which the native pulse thread writes).
//
// Native pulses: with the addon loaded the contract's pulse section runs against the fixture value
// files; without it the JS-timer fallback is checked instead, unless LINESIGHT_NATIVE_REQUIRED=1
// (CI), where a missing addon fails.
import assert from 'node:assert/strict';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';
import { canSchedulePulses, type PulseEdge } from '../../src/gpio/chardev.js';
import { OnoffGpio, type OnoffGpioClass, type OnoffGpioLike } from '../../src/gpio/onoff.js';
import { findSysfsChip, listSysfsChips, resolveSysfsLine, sysfsValuePath } from '../../src/gpio/sysfs.js';
import { nativeStatus, tryLoadNative } from '../../src/native/addon.js';
import { createGpioBinding } from '../../src/gpio/index.js';
import { GpioError } from '../../src/gpio/types.js';
import { FakeClock } from '../../src/clock.js';
import { memoryLogger, silentLogger } from '../../src/log.js';
import { gpioContract } from './gpio-contract.js';
import { parseConfig } from '../../src/config/load.js';

// ── fixture trees ──────────────────────────────────────────────────────────────────────────────

interface FxChip {
  base: number;
  ngpio: number;
  label: string;
  /** The character device number N (/dev/gpiochipN, /sys/bus/gpio/devices/gpiochipN). */
  dev: number;
  /** Parent device under devices/platform; chips with the same parent share it (multi-bank). */
  parent: string;
  /** The chip has no parent of its own: sysfs parents it to the gpiochipN device itself. */
  noParent?: boolean;
}

const tmpRoots: string[] = [];
after(() => {
  for (const r of tmpRoots) rmSync(r, { recursive: true, force: true });
});

/** Builds <tmp>/sys/{class/gpio, bus/gpio/devices, devices/platform} with the real symlinks. */
function makeSys(chips: FxChip[], opts: { busLabels?: boolean; noExport?: boolean } = {}): string {
  const tmp = mkdtempSync(join(tmpdir(), 'linesight-sysfs-'));
  tmpRoots.push(tmp);
  const sys = join(tmp, 'sys');
  const cls = join(sys, 'class', 'gpio');
  const bus = join(sys, 'bus', 'gpio', 'devices');
  mkdirSync(cls, { recursive: true });
  mkdirSync(bus, { recursive: true });
  if (!opts.noExport) {
    writeFileSync(join(cls, 'export'), '');
    writeFileSync(join(cls, 'unexport'), '');
  }
  for (const c of chips) {
    const parentDir = join(sys, 'devices', 'platform', c.parent);
    const gdev = join(parentDir, `gpiochip${c.dev}`);
    mkdirSync(gdev, { recursive: true });
    if (opts.busLabels) writeFileSync(join(gdev, 'label'), `${c.label}\n`);
    symlinkSync(`../../../devices/platform/${c.parent}/gpiochip${c.dev}`, join(bus, `gpiochip${c.dev}`));
    // The class device lives under its parent's gpio/ directory; device -> that parent.
    const classParent = c.noParent ? gdev : parentDir;
    const classDir = join(classParent, 'gpio', `gpiochip${c.base}`);
    mkdirSync(classDir, { recursive: true });
    writeFileSync(join(classDir, 'label'), `${c.label}\n`);
    writeFileSync(join(classDir, 'base'), `${c.base}\n`);
    writeFileSync(join(classDir, 'ngpio'), `${c.ngpio}\n`);
    symlinkSync('../..', join(classDir, 'device'));
    symlinkSync(classDir, join(cls, `gpiochip${c.base}`));
  }
  return cls;
}

// A Raspberry Pi 4 on kernel 6.6: bases moved to 512+.
const PI4: FxChip[] = [
  { base: 512, ngpio: 58, label: 'pinctrl-bcm2711', dev: 0, parent: 'soc/fe200000.gpio' },
  { base: 570, ngpio: 8, label: 'raspberrypi-exp-gpio', dev: 1, parent: 'soc/firmware/raspberrypi-exp-gpio' },
];
// A Raspberry Pi 5: the header is on the RP1, base 571.
const PI5: FxChip[] = [
  { base: 512, ngpio: 32, label: 'gpio-brcmstb@107d508500', dev: 0, parent: 'soc/107d508500.gpio' },
  { base: 544, ngpio: 4, label: 'gpio-brcmstb@107d517c00', dev: 1, parent: 'soc/107d517c00.gpio' },
  { base: 571, ngpio: 54, label: 'pinctrl-rp1', dev: 4, parent: 'axi/1000120000.pcie/1f000d0000.gpio' },
];
// Debian 12's 6.1 with gpio-sim: base allocated from the top, 1016.
const GPIO_SIM: FxChip[] = [{ base: 1016, ngpio: 8, label: 'gpio-sim.0-node0', dev: 0, parent: 'gpio-sim.0' }];

describe('sysfs resolution', () => {
  test('label + offset -> base + offset, never a fixed number', () => {
    const pi4 = { sysfsRoot: makeSys(PI4) };
    assert.equal(resolveSysfsLine({ chip: 'pinctrl-bcm2711', line: 17 }, pi4).gpio, 529);
    assert.equal(resolveSysfsLine({ chip: 'raspberrypi-exp-gpio', line: 2 }, pi4).gpio, 572);
    const pi5 = { sysfsRoot: makeSys(PI5) };
    const r = resolveSysfsLine({ chip: 'pinctrl-rp1', line: 17 }, pi5);
    assert.equal(r.gpio, 588);
    assert.equal(r.chip.name, 'gpiochip571');
    assert.equal(r.offset, 17);
    assert.equal(resolveSysfsLine({ chip: 'gpio-sim.0-node0', line: 3 }, { sysfsRoot: makeSys(GPIO_SIM) }).gpio, 1019);
  });

  test('/dev/gpiochipN -> the sysfs chip whose parent device holds gpiochipN', () => {
    const pi5 = { sysfsRoot: makeSys(PI5) };
    assert.equal(resolveSysfsLine({ chip: '/dev/gpiochip4', line: 17 }, pi5).gpio, 588);
    assert.equal(resolveSysfsLine({ chip: '/dev/gpiochip1', line: 3 }, pi5).gpio, 547);
    assert.equal(resolveSysfsLine({ chip: '/dev/gpiochip0', line: 7 }, { sysfsRoot: makeSys(GPIO_SIM) }).gpio, 1023);
  });

  test('/dev/gpiochipN for a chip parented to its own gpiochipN device', () => {
    const root = makeSys([
      { base: 600, ngpio: 16, label: 'virt-a', dev: 2, parent: 'virt', noParent: true },
      { base: 616, ngpio: 16, label: 'virt-b', dev: 3, parent: 'virt', noParent: true },
    ]);
    assert.equal(findSysfsChip('/dev/gpiochip3', { sysfsRoot: root }).label, 'virt-b');
    assert.equal(findSysfsChip('/dev/gpiochip2', { sysfsRoot: root }).label, 'virt-a');
  });

  test('banks sharing a parent: ambiguous without a bus label, resolved with one', () => {
    const banks: FxChip[] = [
      { base: 1016, ngpio: 8, label: 'gpio-sim.0-node0', dev: 0, parent: 'gpio-sim.0' },
      { base: 1000, ngpio: 16, label: 'gpio-sim.0-node1', dev: 1, parent: 'gpio-sim.0' },
    ];
    const plain = makeSys(banks);
    assert.throws(
      () => findSysfsChip('/dev/gpiochip1', { sysfsRoot: plain }),
      (e: unknown) => e instanceof GpioError && /share its parent device/.test(e.message) && /gpio-sim\.0-node1/.test(e.message) && /by its label/.test(e.message),
    );
    // The label still works.
    assert.equal(resolveSysfsLine({ chip: 'gpio-sim.0-node1', line: 15 }, { sysfsRoot: plain }).gpio, 1015);
    const labelled = makeSys(banks, { busLabels: true });
    assert.equal(findSysfsChip('/dev/gpiochip1', { sysfsRoot: labelled }).label, 'gpio-sim.0-node1');
    assert.equal(findSysfsChip('/dev/gpiochip0', { sysfsRoot: labelled }).label, 'gpio-sim.0-node0');
  });

  test('busRoot can be given separately', () => {
    const root = makeSys(PI5);
    assert.equal(findSysfsChip('/dev/gpiochip4', { sysfsRoot: root, busRoot: join(root, '..', '..', 'bus', 'gpio', 'devices') }).label, 'pinctrl-rp1');
  });

  test('listSysfsChips: sorted by base, entries that are not chips ignored', () => {
    const root = makeSys(PI5);
    mkdirSync(join(root, 'gpio530')); // an exported line, not a chip
    const chips = listSysfsChips({ sysfsRoot: root });
    assert.deepEqual(
      chips.map((c) => [c.label, c.base, c.ngpio]),
      [
        ['gpio-brcmstb@107d508500', 512, 32],
        ['gpio-brcmstb@107d517c00', 544, 4],
        ['pinctrl-rp1', 571, 54],
      ],
    );
  });

  test('sysfs GPIO missing: says so and points at the character-device backend', () => {
    for (const sysfsRoot of [join(tmpdir(), 'linesight-no-such-dir', 'class', 'gpio'), makeSys(PI4, { noExport: true })]) {
      assert.throws(
        () => resolveSysfsLine({ chip: 'pinctrl-bcm2711', line: 1 }, { sysfsRoot }),
        (e: unknown) => e instanceof GpioError && /CONFIG_GPIO_SYSFS/.test(e.message) && /character-device/.test(e.message),
      );
    }
  });

  test('no chips registered', () => {
    assert.throws(() => listSysfsChips({ sysfsRoot: makeSys([]) }), /no GPIO chips/);
  });

  test('unknown label lists the labels that exist', () => {
    assert.throws(
      () => resolveSysfsLine({ chip: 'pinctrl-bcm2835', line: 17 }, { sysfsRoot: makeSys(PI4) }),
      (e: unknown) =>
        e instanceof GpioError &&
        /no GPIO chip labelled 'pinctrl-bcm2835'/.test(e.message) &&
        /'pinctrl-bcm2711' \(gpiochip512, 58 lines\)/.test(e.message) &&
        /'raspberrypi-exp-gpio' \(gpiochip570, 8 lines\)/.test(e.message),
    );
  });

  test('unknown /dev/gpiochipN lists the chips', () => {
    assert.throws(() => findSysfsChip('/dev/gpiochip9', { sysfsRoot: makeSys(PI4) }), /no sysfs GPIO chip matches \/dev\/gpiochip9; chips here: 'pinctrl-bcm2711'/);
  });

  test('offset >= ngpio, or not an offset at all', () => {
    const sysfsRoot = makeSys(PI4);
    assert.throws(() => resolveSysfsLine({ chip: 'raspberrypi-exp-gpio', line: 8 }, { sysfsRoot }), /line 8 is beyond chip 'raspberrypi-exp-gpio' \(gpiochip570\), which has 8 lines \(0\.\.7\)/);
    assert.equal(resolveSysfsLine({ chip: 'raspberrypi-exp-gpio', line: 7 }, { sysfsRoot }).gpio, 577);
    assert.throws(() => resolveSysfsLine({ chip: 'pinctrl-bcm2711', line: -1 }, { sysfsRoot }), GpioError);
    assert.throws(() => resolveSysfsLine({ chip: 'pinctrl-bcm2711', line: 2.5 }, { sysfsRoot }), GpioError);
  });

  test('a label shared by two chips is refused, naming both', () => {
    const root = makeSys([
      { base: 500, ngpio: 16, label: 'pca9555', dev: 2, parent: 'i2c-1/1-0020' },
      { base: 484, ngpio: 16, label: 'pca9555', dev: 3, parent: 'i2c-1/1-0021' },
    ]);
    assert.throws(() => findSysfsChip('pca9555', { sysfsRoot: root }), /'pca9555' is not unique \(gpiochip484, gpiochip500\)/);
    assert.equal(findSysfsChip('/dev/gpiochip3', { sysfsRoot: root }).base, 484);
  });
});

// ── a fake of onoff's Gpio class over a model of the kernel's sysfs GPIO ──────────────────────

const errno = (code: string, msg: string): Error => Object.assign(new Error(`${code}: ${msg}`), { code });

/** The first byte of a file ('' when none): /dev/full reads as NULs forever, so never the whole file. */
function firstByte(path: string): string {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(1);
    return readSync(fd, b, 0, 1, 0) === 1 ? b.toString('latin1') : '';
  } finally {
    closeSync(fd);
  }
}

class FakeSysfsKernel {
  accessible = true;
  readonly levels = new Map<number, 0 | 1>(); // electrical
  readonly exported = new Map<number, FakeLine>();
  /** Lines held by a kernel driver: export fails with EBUSY. */
  readonly claimed = new Set<number>();
  readonly calls: { gpio: number; direction: string; edge?: string; options?: object }[] = [];

  /** root: the sysfs root where exported lines get gpioN/value (logical, like the kernel's). */
  constructor(
    private readonly chips: { base: number; ngpio: number }[],
    private readonly root?: string,
  ) {}

  valid(n: number): boolean {
    return this.chips.some((c) => n >= c.base && n < c.base + c.ngpio);
  }
  valuePath(n: number): string | undefined {
    return this.root === undefined ? undefined : sysfsValuePath(n, { sysfsRoot: this.root });
  }
  /** Electrical level. An exported output's is its value file's (whoever wrote it: onoff or the pulse thread). */
  level(n: number): 0 | 1 {
    const line = this.exported.get(n);
    const path = this.valuePath(n);
    if (line?.direction === 'out' && path !== undefined && existsSync(path)) {
      const v = firstByte(path);
      if (v === '0' || v === '1') return (Number(v) ^ (line.activeLow ? 1 : 0)) as 0 | 1;
    }
    return this.levels.get(n) ?? 0;
  }
  /** Show the line's logical level in its value file. A test may have replaced it (/dev/full): left as is. */
  syncFile(n: number): void {
    const path = this.valuePath(n);
    const line = this.exported.get(n);
    if (path === undefined || !line) return;
    try {
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, `${(this.levels.get(n) ?? 0) ^ (line.activeLow ? 1 : 0)}\n`);
    } catch {
      // a value file broken on purpose by the test
    }
  }
  unexport(n: number): void {
    this.levels.set(n, this.level(n)); // the pin keeps its level when the line is unexported
    this.exported.delete(n);
    const path = this.valuePath(n);
    if (path !== undefined) rmSync(dirname(path), { recursive: true, force: true });
  }
  /** The outside world sets an input pin (gpio-sim's pull). */
  drive(n: number, v: 0 | 1): void {
    if (this.level(n) === v) return;
    this.levels.set(n, v);
    this.syncFile(n);
    const line = this.exported.get(n);
    if (!line || line.direction !== 'in' || line.edge === 'none') return;
    const logical = (v ^ (line.activeLow ? 1 : 0)) as 0 | 1;
    const wanted = line.edge === 'both' || (line.edge === 'rising') === (logical === 1);
    // The kernel raises the interrupt; onoff's epoll callback runs later and reads the value then.
    if (wanted) setImmediate(() => line.poll());
  }

  get Gpio(): OnoffGpioClass {
    const kernel = this;
    return class implements OnoffGpioLike {
      static get accessible(): boolean {
        return kernel.accessible;
      }
      private line: FakeLine;
      constructor(gpio: number, direction: 'in' | 'out' | 'high' | 'low', edge?: 'none' | 'rising' | 'falling' | 'both', options?: { activeLow?: boolean; debounceTimeout?: number }) {
        kernel.calls.push({ gpio, direction, edge, options });
        if (!kernel.valid(gpio)) throw errno('EINVAL', 'invalid argument, write');
        if (kernel.claimed.has(gpio)) throw errno('EBUSY', 'resource busy or locked, write');
        this.line = kernel.exported.get(gpio) ?? new FakeLine(kernel, gpio);
        kernel.exported.set(gpio, this.line);
        this.line.activeLow = options?.activeLow ?? this.line.activeLow;
        if (direction === 'high') kernel.levels.set(gpio, 1); // raw, like the kernel
        else if (direction === 'low' || direction === 'out') kernel.levels.set(gpio, 0);
        this.line.direction = direction === 'in' ? 'in' : 'out';
        this.line.edge = direction === 'in' ? (edge ?? 'none') : 'none';
        kernel.syncFile(gpio);
      }
      readSync(): 0 | 1 {
        return this.line.value();
      }
      async read(): Promise<0 | 1> {
        if (!kernel.exported.has(this.line.gpio)) throw errno('EBADF', 'bad file descriptor, read');
        return this.line.value();
      }
      writeSync(v: 0 | 1): void {
        if (this.line.direction !== 'out') throw errno('EPERM', 'operation not permitted, write');
        kernel.levels.set(this.line.gpio, (v ^ (this.line.activeLow ? 1 : 0)) as 0 | 1);
        kernel.syncFile(this.line.gpio);
      }
      async write(v: 0 | 1): Promise<void> {
        this.writeSync(v);
      }
      watch(cb: (err: Error | null | undefined, value: 0 | 1) => void): void {
        this.line.listeners.push(cb);
      }
      unwatchAll(): void {
        this.line.listeners = [];
      }
      unexport(): void {
        this.line.listeners = [];
        kernel.unexport(this.line.gpio);
      }
    };
  }
}

class FakeLine {
  direction: 'in' | 'out' = 'in';
  edge: 'none' | 'rising' | 'falling' | 'both' = 'none';
  activeLow = false;
  listeners: ((err: Error | null | undefined, value: 0 | 1) => void)[] = [];
  constructor(
    private readonly kernel: FakeSysfsKernel,
    readonly gpio: number,
  ) {}
  value(): 0 | 1 {
    return (this.kernel.level(this.gpio) ^ (this.activeLow ? 1 : 0)) as 0 | 1;
  }
  /** onoff's pollerEventHandler: read the value, pass it on if that edge is enabled. */
  poll(): void {
    const value = this.value();
    const rising = this.edge === 'rising' || this.edge === 'both';
    const falling = this.edge === 'falling' || this.edge === 'both';
    if ((value === 1 && rising) || (value === 0 && falling)) for (const cb of this.listeners.slice()) cb(null, value);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

const ADDON = tryLoadNative();
if (process.env.LINESIGHT_NATIVE_REQUIRED === '1') {
  test('the native addon loads (LINESIGHT_NATIVE_REQUIRED=1): native pulses for sysfs outputs are tested', () => {
    assert.ok(ADDON, `native addon required but not loaded: ${nativeStatus().reason}`);
  });
}

// The contract, run against OnoffGpio: one fake kernel for the suite, like the real gpio-sim.
// With the addon, outputs' pulses come from the native thread writing the fixture value files.
{
  const sysfsRoot = makeSys(GPIO_SIM);
  const kernel = new FakeSysfsKernel(GPIO_SIM, sysfsRoot);
  gpioContract(
    `OnoffGpio over a fake sysfs kernel (${ADDON ? 'native pulses' : 'no addon: JS-timer pulses'})`,
    () => new OnoffGpio({ sysfsRoot, gpioClass: kernel.Gpio, realtime: false }),
    () => ({
      chip: 'gpio-sim.0-node0',
      chipAlias: '/dev/gpiochip0',
      lineCount: 8,
      lines: [0, 1],
      debounceMs: 100,
      nowNs: () => process.hrtime.bigint(),
      drive: (line, v) => kernel.drive(1016 + line, v),
      level: (line) => kernel.level(1016 + line),
      wait: (ms) => sleep(ms),
      settle: async () => {
        await turn();
        await turn();
      },
    }),
    { pulses: ADDON !== undefined },
  );
}

describe('OnoffGpio', () => {
  const rig = (chips: FxChip[] = PI4) => {
    const sysfsRoot = makeSys(chips);
    const kernel = new FakeSysfsKernel(chips, sysfsRoot);
    const log = memoryLogger();
    const gpio = new OnoffGpio({ sysfsRoot, gpioClass: kernel.Gpio, log });
    return { kernel, sysfsRoot, log, gpio };
  };

  test('opens inputs by resolved number with edge and activeLow, and debounces itself', async () => {
    const { kernel, gpio } = rig();
    await gpio.openInput({ chip: 'pinctrl-bcm2711', line: 17, activeLow: true }, { edge: 'falling', debounceMs: 5 });
    // No debounceTimeout: onoff's trailing debounce would time every edge late (see onoff.ts).
    assert.deepEqual(kernel.calls, [{ gpio: 529, direction: 'in', edge: 'falling', options: { activeLow: true } }]);
    await gpio.close();
  });

  test('outputs: direction high/low is the electrical initial level, activeLow applied', async () => {
    const { kernel, gpio } = rig();
    await gpio.openOutput({ chip: 'pinctrl-bcm2711', line: 1 }, { initial: 1 });
    await gpio.openOutput({ chip: 'pinctrl-bcm2711', line: 2, activeLow: true }, { initial: 1 });
    await gpio.openOutput({ chip: '/dev/gpiochip1', line: 3, activeLow: true }, { initial: 0 });
    assert.deepEqual(
      kernel.calls.map((c) => [c.gpio, c.direction, c.options]),
      [
        [513, 'high', { activeLow: false }],
        [514, 'low', { activeLow: true }],
        [573, 'high', { activeLow: true }],
      ],
    );
    assert.deepEqual([kernel.level(513), kernel.level(514), kernel.level(573)], [1, 0, 1]);
  });

  test('close unexports every line', async () => {
    const { kernel, gpio } = rig();
    await gpio.openOutput({ chip: 'pinctrl-bcm2711', line: 1 }, { initial: 0 });
    await gpio.openInput({ chip: 'pinctrl-bcm2711', line: 4 }, { edge: 'rising' });
    assert.deepEqual([...kernel.exported.keys()].sort(), [513, 516]);
    await gpio.close();
    assert.equal(kernel.exported.size, 0);
  });

  test('sysfs GPIO not accessible: a clear GpioError, nothing exported', async () => {
    const { kernel, gpio } = rig();
    kernel.accessible = false;
    await assert.rejects(gpio.openOutput({ chip: 'pinctrl-bcm2711', line: 1 }, { initial: 0 }), (e: unknown) => {
      assert.ok(e instanceof GpioError);
      assert.match(e.message, /sysfs GPIO is not available here/);
      assert.match(e.message, /character-device backend/);
      return true;
    });
    assert.equal(kernel.calls.length, 0);
  });

  test('a line held by a kernel driver (EBUSY) is reported busy, and not left reserved', async () => {
    const { kernel, gpio } = rig();
    kernel.claimed.add(529);
    await assert.rejects(gpio.openInput({ chip: 'pinctrl-bcm2711', line: 17 }, { edge: 'rising' }), /input pinctrl-bcm2711:17 \(sysfs gpio529\) is busy: claimed by a kernel driver/);
    kernel.claimed.delete(529);
    await gpio.openInput({ chip: 'pinctrl-bcm2711', line: 17 }, { edge: 'rising' });
  });

  test('resolution errors reach the caller as they are', async () => {
    const { gpio } = rig();
    await assert.rejects(gpio.openOutput({ chip: 'pinctrl-bcm2835', line: 17 }, { initial: 0 }), /labels here: 'pinctrl-bcm2711'/);
    await assert.rejects(gpio.openOutput({ chip: 'raspberrypi-exp-gpio', line: 8 }, { initial: 0 }), /8 lines/);
  });

  test('a line already exported (crashed run, other tool) is taken over with a warning', async () => {
    const { sysfsRoot, gpio, log } = rig();
    mkdirSync(join(sysfsRoot, 'gpio529'));
    await gpio.openInput({ chip: 'pinctrl-bcm2711', line: 17 }, { edge: 'rising' });
    assert.ok(log.records.some((r) => r.level === 'warn' && /already exported/.test(String(r.msg)) && r.gpio === 529));
  });

  test('edge times are hrtime taken in the callback', async () => {
    const { kernel, gpio } = rig();
    const inp = await gpio.openInput({ chip: 'pinctrl-bcm2711', line: 17 }, { edge: 'rising' });
    const times: bigint[] = [];
    inp.watch((ev) => times.push(ev.timeNs));
    const before = process.hrtime.bigint();
    kernel.drive(529, 1);
    const queued = process.hrtime.bigint();
    await turn();
    const after = process.hrtime.bigint();
    assert.equal(times.length, 1);
    assert.ok(times[0]! >= queued && times[0]! <= after && before <= queued);
  });

  test('the real onoff module loads through ESM (named export Gpio)', async () => {
    const m = await import('onoff');
    assert.equal(typeof m.Gpio, 'function');
    assert.equal(typeof m.Gpio.accessible, 'boolean');
  });

  test('createGpioBinding: onoff backend with the configured sysfsRoot', async () => {
    const b = createGpioBinding({ ...parseConfig({}).gpio, backend: 'onoff', sysfsRoot: '/sys/class/gpio', stackLight: { buzzerAfterRejects: 3 } }, { clock: new FakeClock(), log: silentLogger });
    assert.ok(b instanceof OnoffGpio);
    assert.equal(b.name, 'onoff');
    await b.close();
  });
});

// ── native pulses through the sysfs value file ────────────────────────────────────────────────

describe('OnoffGpio divert pulses', () => {
  const MS = 1_000_000n;
  const LINE = { chip: 'pinctrl-bcm2711', line: 17 }; // gpio529 on the PI4 fixture
  const rig = (opts: { valueFiles?: boolean; nativePulses?: 'auto' | 'off' } = {}) => {
    const sysfsRoot = makeSys(PI4);
    const kernel = new FakeSysfsKernel(PI4, opts.valueFiles === false ? undefined : sysfsRoot);
    const log = memoryLogger();
    const gpio = new OnoffGpio({ sysfsRoot, gpioClass: kernel.Gpio, log, nativePulses: opts.nativePulses, realtime: false });
    return { kernel, sysfsRoot, log, gpio, value: sysfsValuePath(529, { sysfsRoot }) };
  };
  const collect = (gpio: OnoffGpio, out: Parameters<NonNullable<OnoffGpio['onPulseEdge']>>[0]) => {
    assert.ok(canSchedulePulses(gpio));
    const edges: PulseEdge[] = [];
    gpio.onPulseEdge(out, (ev) => edges.push(ev));
    const wait = async (n: number): Promise<void> => {
      while (edges.length < n) await sleep(5);
    };
    return { edges, wait, p: gpio };
  };

  test('without the addon (or with nativePulses off) there is no PulseScheduling: JS timers', async () => {
    for (const g of [
      new OnoffGpio({ sysfsRoot: makeSys(PI4), gpioClass: new FakeSysfsKernel(PI4).Gpio, addon: null }),
      new OnoffGpio({ sysfsRoot: makeSys(PI4), gpioClass: new FakeSysfsKernel(PI4).Gpio, nativePulses: 'off' }),
    ]) {
      assert.equal(canSchedulePulses(g), false);
      assert.equal(g.pulseEngine.engine, 'js');
      assert.match(g.pulseEngine.reason, /no native addon|'off'/);
      const out = await g.openOutput(LINE, { initial: 0 });
      assert.equal(g.hasNativePulses(out), false);
      await g.close();
    }
  });

  if (!ADDON) {
    test('the addon is not loaded here: the default binding falls back to JS timers and says why', () => {
      const g = new OnoffGpio({ sysfsRoot: makeSys(PI4), gpioClass: new FakeSysfsKernel(PI4).Gpio });
      assert.equal(canSchedulePulses(g), false);
      assert.match(g.pulseEngine.reason, /native addon not loaded/);
    });
    return;
  }

  test('the value file gets "1" at the deadline and "0" at the end; the line reads back right', async () => {
    const { gpio, value, kernel } = rig();
    const out = await gpio.openOutput(LINE, { initial: 0 });
    assert.equal(gpio.hasNativePulses(out), true);
    assert.equal(firstByte(value), '0');
    const { edges, wait, p } = collect(gpio, out);
    const t = process.hrtime.bigint() + 30n * MS;
    p.schedulePulse(out, t, 60_000);
    await wait(1);
    assert.ok(edges[0]!.atNs >= t, 'not before the deadline');
    assert.equal(firstByte(value), '1');
    assert.equal(kernel.level(529), 1);
    assert.equal(await out.read(), 1);
    p.cancelPulses(out);
    await wait(2);
    assert.equal(firstByte(value), '0');
    assert.equal(await out.read(), 0);
    assert.deepEqual(
      edges.map((e) => [e.level, e.error]),
      [
        [1, undefined],
        [0, undefined],
      ],
    );
    await gpio.close();
  });

  test('a write the kernel refuses is reported as that edge\'s error', async () => {
    const { gpio, value } = rig();
    // The line's value file refuses every write (ENOSPC), as a line on a failed expander would (EIO).
    mkdirSync(dirname(value), { recursive: true });
    symlinkSync('/dev/full', value);
    const out = await gpio.openOutput(LINE, { initial: 0 });
    assert.equal(gpio.hasNativePulses(out), true);
    const { edges, wait, p } = collect(gpio, out);
    p.schedulePulse(out, process.hrtime.bigint(), 60_000);
    await wait(1);
    assert.equal(edges[0]!.level, 1);
    assert.match(edges[0]!.error ?? '', /ENOSPC/);
    assert.ok(p.pulseStats(out).writeErrors >= 1);
    await gpio.close();
  });

  test('an output whose value file cannot be opened works, warns, and has no native pulses', async () => {
    const { gpio, log } = rig({ valueFiles: false });
    assert.equal(canSchedulePulses(gpio), true);
    const out = await gpio.openOutput(LINE, { initial: 1 });
    assert.equal(gpio.hasNativePulses(out), false);
    assert.ok(log.records.some((r) => r.level === 'warn' && /native pulses unavailable/.test(String(r.msg))));
    assert.throws(() => gpio.schedulePulse!(out, process.hrtime.bigint(), 10), (e: unknown) => e instanceof GpioError && /no native pulse engine/.test(e.message));
    await out.write(0);
    assert.equal(await out.read(), 0);
    await gpio.close();
  });

  test('close drops pending pulses before the line is unexported: nothing is driven after', async () => {
    const { gpio, kernel } = rig();
    const out = await gpio.openOutput(LINE, { initial: 0 });
    const { edges, p } = collect(gpio, out);
    p.schedulePulse(out, process.hrtime.bigint() + 30n * MS, 10);
    await gpio.close();
    await sleep(80);
    assert.deepEqual(edges, []);
    assert.equal(kernel.exported.size, 0);
    assert.equal(kernel.level(529), 0);
    assert.throws(() => p.schedulePulse(out, process.hrtime.bigint(), 10), (e: unknown) => e instanceof GpioError && /not opened by this onoff binding/.test(e.message));
  });

  test("createGpioBinding passes gpio.nativePulses through", async () => {
    const base = { backend: 'onoff' as const, sysfsRoot: '/sys/class/gpio', stackLight: { buzzerAfterRejects: 3 }, realtime: false };
    const on = createGpioBinding({ ...base, nativePulses: 'auto' } as never, { clock: new FakeClock(), log: silentLogger }) as OnoffGpio;
    const off = createGpioBinding({ ...base, nativePulses: 'off' } as never, { clock: new FakeClock(), log: silentLogger }) as OnoffGpio;
    assert.equal(canSchedulePulses(on), true);
    assert.equal(canSchedulePulses(off), false);
    await on.close();
    await off.close();
  });
});
