// Free space and the floor guard: the real statfs for the numbers, a scripted statfs for the
// episodes (a test cannot fill the disk it runs on).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiskGuard, freeBytes, type DiskLow } from '../../src/telemetry/disk.js';

const MiB = 1024 * 1024;

test('freeBytes is what an unprivileged writer may use (bavail x bsize) and fails for a missing path', async () => {
  const dir = tmpdir();
  const s = await statfs(dir);
  const free = await freeBytes(dir);
  assert.ok(free > 0);
  // Only blocks available to non-root: the root reserve is not free space for the agent.
  assert.ok(free <= s.bfree * s.bsize);
  // The file system is shared with other processes: the figure may move a little between reads.
  assert.ok(Math.abs(free - s.bavail * s.bsize) < 512 * MiB, `${free} vs ${s.bavail * s.bsize}`);
  await assert.rejects(freeBytes(join(dir, 'no-such-dir-linesight', 'x')), { code: 'ENOENT' });
});

test('the guard refuses writes that would cross the floor, alarms once per episode, clears with hysteresis', async () => {
  let free = 1000 * MiB;
  const alarms: DiskLow[] = [];
  const clears: number[] = [];
  const g = new DiskGuard({
    path: '/state',
    floorBytes: 500 * MiB,
    hysteresisBytes: 50 * MiB,
    onAlarm: (l) => alarms.push(l),
    onClear: (f) => clears.push(f),
    statfs: async () => ({ bavail: free / 4096, bsize: 4096 }),
  });
  assert.equal(await g.allow(10 * MiB), true);
  assert.equal(await g.allow(501 * MiB), false, 'a write that would leave less than the floor');
  assert.equal(alarms.length, 1);
  assert.deepEqual({ ...alarms[0], message: '' }, { path: '/state', freeBytes: 1000 * MiB, floorBytes: 500 * MiB, neededBytes: 501 * MiB, message: '' });
  free = 490 * MiB;
  for (let i = 0; i < 5; i++) assert.equal(await g.allow(1 * MiB), false);
  assert.equal(alarms.length, 1, 'still the same episode: no new alarm');
  // Just above the floor: writes go again, but the episode is not over (no flapping alarms).
  free = 520 * MiB;
  assert.equal(await g.allow(1 * MiB), true);
  assert.deepEqual(clears, []);
  assert.equal(g.stats().low, true);
  free = 490 * MiB;
  assert.equal(await g.allow(1 * MiB), false);
  assert.equal(alarms.length, 1);
  // Space freed well above the floor: cleared; the next low is a new episode and alarms again.
  free = 800 * MiB;
  assert.equal(await g.allow(1 * MiB), true);
  assert.deepEqual(clears, [800 * MiB]);
  free = 100 * MiB;
  assert.equal(await g.allow(1 * MiB), false);
  assert.equal(alarms.length, 2);
  assert.deepEqual(g.stats(), { path: '/state', floorBytes: 500 * MiB, freeBytes: 100 * MiB, low: true, allowed: 3, refused: 8, alarms: 2 });
});

test('free space that cannot be read is refused (never fill a disk blind), with the reason in the alarm', async () => {
  const alarms: DiskLow[] = [];
  const g = new DiskGuard({
    path: '/gone',
    floorBytes: 0,
    onAlarm: (l) => alarms.push(l),
    statfs: async () => {
      throw Object.assign(new Error('ENOENT: no such file or directory'), { code: 'ENOENT' });
    },
  });
  assert.equal(await g.allow(1), false);
  assert.equal(await g.allow(1), false);
  assert.equal(alarms.length, 1);
  assert.equal(alarms[0]!.freeBytes, -1);
  assert.match(alarms[0]!.message, /cannot read free space of \/gone/);
  // A throwing alarm handler does not break the guard.
  const h = new DiskGuard({ path: tmpdir(), floorBytes: Number.MAX_SAFE_INTEGER, onAlarm: () => { throw new Error('boom'); } });
  assert.equal(await h.allow(1), false);
  assert.throws(() => new DiskGuard({ path: '/', floorBytes: -1 }), RangeError);
});
