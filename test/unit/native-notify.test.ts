// sd_notify against a real unix datagram listener (python3, as systemd would listen), through the
// addon; and the systemd-notify fallback when the addon is absent.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadNative } from '../../src/native/addon.js';
import { formatNotify, notify, notifyBackend, watchdogIntervalMs } from '../../src/native/notify.js';

// Binds AF_UNIX/SOCK_DGRAM (a path, or an abstract name for '@name'), prints 'ready', then prints
// each datagram received as one JSON string per line.
const LISTENER = String.raw`
import json, socket, sys
name = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('\0' + name[1:] if name.startswith('@') else name)
print('ready', flush=True)
while True:
    data = s.recv(65536)
    print(json.dumps(data.decode()), flush=True)
`;

class Listener {
  private lines: string[] = [];
  private waiters: (() => void)[] = [];
  private constructor(private readonly proc: ChildProcess) {
    let buf = '';
    proc.stdout!.setEncoding('utf8');
    proc.stdout!.on('data', (s: string) => {
      buf += s;
      const parts = buf.split('\n');
      buf = parts.pop()!;
      this.lines.push(...parts);
      for (const w of this.waiters.splice(0)) w();
    });
  }
  static async start(dir: string, name: string): Promise<Listener> {
    const script = join(dir, 'listen.py');
    await writeFile(script, LISTENER);
    const proc = spawn('python3', [script, name], { stdio: ['ignore', 'pipe', 'inherit'] });
    const l = new Listener(proc);
    await l.next(); // 'ready'
    return l;
  }
  async next(): Promise<string> {
    while (this.lines.length === 0) {
      await new Promise<void>((r) => this.waiters.push(r));
    }
    return this.lines.shift()!;
  }
  async datagram(): Promise<string> {
    return JSON.parse(await this.next()) as string;
  }
  async stop(): Promise<void> {
    this.proc.kill();
    await once(this.proc, 'exit');
  }
}

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'linesight-notify-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('sd_notify through the addon', () => {
  test('READY=1 and STATUS reach a listener on a socket path, as one datagram', async () => {
    const path = join(dir, 'notify.sock');
    const l = await Listener.start(dir, path);
    try {
      assert.equal(notifyBackend(), 'native');
      const r = await notify({ READY: '1', STATUS: 'inspecting\nline 1' }, { socketPath: path });
      assert.deepEqual(r, { sent: true, backend: 'native' });
      assert.equal(await l.datagram(), 'READY=1\nSTATUS=inspecting line 1');
      await notify({ WATCHDOG: '1' }, { socketPath: path });
      assert.equal(await l.datagram(), 'WATCHDOG=1');
    } finally {
      await l.stop();
    }
  });

  test("an abstract socket ('@name') works, read from NOTIFY_SOCKET", async () => {
    const name = `@linesight-test-${process.pid}-${Date.now()}`;
    const l = await Listener.start(dir, name);
    const saved = process.env.NOTIFY_SOCKET;
    process.env.NOTIFY_SOCKET = name;
    try {
      assert.deepEqual(await notify({ READY: '1' }), { sent: true, backend: 'native' });
      assert.equal(await l.datagram(), 'READY=1');
    } finally {
      if (saved === undefined) delete process.env.NOTIFY_SOCKET;
      else process.env.NOTIFY_SOCKET = saved;
      await l.stop();
    }
  });

  test('without NOTIFY_SOCKET nothing is sent', async () => {
    const saved = process.env.NOTIFY_SOCKET;
    delete process.env.NOTIFY_SOCKET;
    try {
      assert.deepEqual(await notify({ READY: '1' }), { sent: false, backend: 'native' });
      assert.equal(loadNative().notify('READY=1'), false);
    } finally {
      if (saved !== undefined) process.env.NOTIFY_SOCKET = saved;
    }
  });

  test('a socket nobody listens on is an error naming it', async () => {
    const path = join(dir, 'nobody.sock');
    await assert.rejects(notify({ READY: '1' }, { socketPath: path }), (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, 'ENOENT');
      assert.ok(e.message.includes(path));
      return true;
    });
    await assert.rejects(notify({ READY: '1' }, { socketPath: 'relative.sock' }), /absolute path or '@abstract'/);
  });

  test('bad variable names are refused before anything is sent', () => {
    assert.throws(() => formatNotify({ 'ready': '1' }), /not a valid variable name/);
    assert.throws(() => formatNotify({}), /nothing to send/);
    assert.equal(formatNotify({ READY: '1', STATUS: 'a\r\nb' }), 'READY=1\nSTATUS=a b');
  });
});

describe('sd_notify without the addon: systemd-notify', () => {
  test('spawns systemd-notify with the assignments and the socket', async () => {
    const log = join(dir, 'fake-notify.log');
    const bin = join(dir, 'systemd-notify');
    await writeFile(bin, `#!/bin/sh\nprintf '%s|' "$NOTIFY_SOCKET" "$@" > '${log}'\n`);
    await chmod(bin, 0o755);
    assert.equal(notifyBackend({ addon: null }), 'systemd-notify');
    const r = await notify({ READY: '1', STATUS: 'up' }, { addon: null, systemdNotify: bin, socketPath: '/run/x.sock' });
    assert.deepEqual(r, { sent: true, backend: 'systemd-notify' });
    assert.equal(await readFile(log, 'utf8'), '/run/x.sock|READY=1|STATUS=up|');
  });

  test('a missing systemd-notify is a clear error; no socket means nothing to do', async () => {
    await assert.rejects(
      notify({ READY: '1' }, { addon: null, systemdNotify: join(dir, 'missing'), socketPath: '/run/x.sock' }),
      /native addon is not loaded and .* is not installed/,
    );
    const saved = process.env.NOTIFY_SOCKET;
    delete process.env.NOTIFY_SOCKET;
    try {
      assert.deepEqual(await notify({ READY: '1' }, { addon: null, systemdNotify: join(dir, 'missing') }), { sent: false, backend: 'systemd-notify' });
    } finally {
      if (saved !== undefined) process.env.NOTIFY_SOCKET = saved;
    }
  });
});

test('the watchdog interval comes from WATCHDOG_USEC, for this pid only', () => {
  assert.equal(watchdogIntervalMs({}), undefined);
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '20000000' }), 20_000);
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '20000000', WATCHDOG_PID: String(process.pid) }), 20_000);
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '20000000', WATCHDOG_PID: '1' }, 2), undefined);
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: 'x' }), undefined);
});
