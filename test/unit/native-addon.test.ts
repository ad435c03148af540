// The native addon loads on this host (Linux with the build from `npm ci`), and when it cannot,
// the error names the platform and the fix.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadNative, nativeDir, nativeStatus, NativeUnavailableError, resetNativeForTests, tryLoadNative } from '../../src/native/addon.js';
import { logNativeBackends, nativeBackends } from '../../src/native/index.js';
import { memoryLogger } from '../../src/log.js';

test('the addon loads, with the GPIO, V4L2 and sd_notify entry points', () => {
  resetNativeForTests();
  const addon = loadNative();
  assert.equal(addon.abi, 1);
  assert.equal(typeof addon.gpio.requestLine, 'function');
  assert.equal(typeof addon.gpio.listChips, 'function');
  assert.equal(typeof addon.v4l2.open, 'function');
  assert.equal(typeof addon.notify, 'function');
  assert.deepEqual(nativeStatus(), { available: true, dir: nativeDir() });
  assert.equal(tryLoadNative(), addon, 'loaded once');
  assert.deepEqual(nativeBackends(), { native: true, gpio: 'chardev', camera: 'v4l2', notify: 'native' });
  const log = memoryLogger();
  logNativeBackends(log);
  assert.equal(log.records[0]!.msg, 'native addon loaded');
});

test("the addon's monotonic clock is process.hrtime's (CLOCK_MONOTONIC)", () => {
  const a = process.hrtime.bigint();
  const n = loadNative().gpio.monotonicNs();
  const b = process.hrtime.bigint();
  assert.ok(n >= a && n <= b, `${a} <= ${n} <= ${b}`);
});

test('switched off, it reports why and which fallbacks run, without loading', () => {
  const saved = process.env.LINESIGHT_NATIVE;
  process.env.LINESIGHT_NATIVE = 'off';
  resetNativeForTests();
  try {
    assert.equal(tryLoadNative(), undefined);
    assert.throws(loadNative, (e: Error) => e instanceof NativeUnavailableError && /LINESIGHT_NATIVE=off/.test(e.message) && /onoff/.test(e.message));
    assert.equal(nativeStatus().available, false);
    const log = memoryLogger();
    const b = logNativeBackends(log);
    assert.deepEqual({ ...b, reason: undefined }, { native: false, reason: undefined, gpio: 'onoff', camera: 'ffmpeg', notify: 'systemd-notify' });
    assert.equal(log.records[0]!.level, 'warn');
    assert.match(String(log.records[0]!.reason), /LINESIGHT_NATIVE=off/);
  } finally {
    if (saved === undefined) delete process.env.LINESIGHT_NATIVE;
    else process.env.LINESIGHT_NATIVE = saved;
    resetNativeForTests();
  }
});

test('a missing build is one clear error naming the platform, the folder and the fix', () => {
  const saved = process.env.LINESIGHT_NATIVE_DIR;
  process.env.LINESIGHT_NATIVE_DIR = '/nonexistent/linesight-native';
  resetNativeForTests();
  try {
    assert.throws(loadNative, (e: Error) => {
      assert.ok(e instanceof NativeUnavailableError);
      assert.equal(e.reason, 'load');
      assert.match(e.message, new RegExp(`${process.platform}-${process.arch}`));
      assert.match(e.message, /node \d+\.\d+\.\d+/);
      assert.match(e.message, /\/nonexistent\/linesight-native/);
      assert.match(e.message, /build-essential/);
      assert.match(e.message, /npm run build:native/);
      return true;
    });
  } finally {
    if (saved === undefined) delete process.env.LINESIGHT_NATIVE_DIR;
    else process.env.LINESIGHT_NATIVE_DIR = saved;
    resetNativeForTests();
  }
});
