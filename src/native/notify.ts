// systemd readiness and watchdog (sd_notify): READY=1, STATUS=…, WATCHDOG=1, STOPPING=1.
// With the native addon the datagram is sent from this process (systemd sees the agent's own pid,
// so NotifyAccess=main works). Without it, `systemd-notify` is spawned; systemd then sees the
// child's pid, so the unit needs NotifyAccess=all for that fallback.
import { spawn } from 'node:child_process';
import type { Logger } from '../log.js';
import { silentLogger } from '../log.js';
import type { NativeAddon } from './addon.js';
import { tryLoadNative } from './addon.js';

export type NotifyBackend = 'native' | 'systemd-notify';

export interface NotifyOptions {
  /** The socket; default $NOTIFY_SOCKET ('/path' or '@abstract'). */
  socketPath?: string;
  /** The addon; default: loaded on first use. null forces the systemd-notify fallback. */
  addon?: NativeAddon | null;
  /** The systemd-notify binary for the fallback. */
  systemdNotify?: string;
  log?: Logger;
}

export interface NotifyResult {
  /** false when there is no socket (not run by systemd with Type=notify): nothing to do. */
  sent: boolean;
  backend: NotifyBackend;
}

const KEY = /^[A-Z][A-Z0-9_]*$/;

/** 'KEY=value' lines; throws on a key systemd would not read. Newlines in values become spaces. */
export function formatNotify(state: Record<string, string>): string {
  const lines: string[] = [];
  for (const [k, v] of Object.entries(state)) {
    if (!KEY.test(k)) throw new Error(`sd_notify: '${k}' is not a valid variable name (A-Z, 0-9, _)`);
    lines.push(`${k}=${String(v).replace(/[\r\n]+/g, ' ')}`);
  }
  if (lines.length === 0) throw new Error('sd_notify: nothing to send');
  return lines.join('\n');
}

/** Which backend notify() will use with these options. */
export function notifyBackend(opts: NotifyOptions = {}): NotifyBackend {
  const addon = opts.addon === undefined ? tryLoadNative() : opts.addon;
  return addon ? 'native' : 'systemd-notify';
}

/**
 * Tell systemd about the service state, e.g. notify({ READY: '1', STATUS: 'inspecting' }).
 * Resolves { sent: false } when NOTIFY_SOCKET is not set. Rejects when the send fails.
 */
export async function notify(state: Record<string, string>, opts: NotifyOptions = {}): Promise<NotifyResult> {
  const text = formatNotify(state);
  const socketPath = opts.socketPath ?? process.env.NOTIFY_SOCKET ?? '';
  const addon = opts.addon === undefined ? tryLoadNative() : opts.addon;
  if (addon) {
    if (!socketPath) return { sent: false, backend: 'native' };
    return { sent: addon.notify(text, socketPath), backend: 'native' };
  }
  if (!socketPath) return { sent: false, backend: 'systemd-notify' };
  await spawnSystemdNotify(opts.systemdNotify ?? 'systemd-notify', Object.entries(state), socketPath, opts.log ?? silentLogger);
  return { sent: true, backend: 'systemd-notify' };
}

function spawnSystemdNotify(bin: string, entries: [string, string][], socketPath: string, log: Logger): Promise<void> {
  const args = entries.map(([k, v]) => `${k}=${String(v).replace(/[\r\n]+/g, ' ')}`);
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, NOTIFY_SOCKET: socketPath },
    });
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => (stderr = (stderr + s).slice(-500)));
    child.on('error', (err: NodeJS.ErrnoException) => {
      reject(
        new Error(
          err.code === 'ENOENT'
            ? `sd_notify: the native addon is not loaded and '${bin}' is not installed (it ships with systemd)`
            : `sd_notify: cannot run '${bin}': ${err.message}`,
        ),
      );
    });
    child.on('close', (code) => {
      if (code === 0) resolve();
      else {
        log.warn('systemd-notify failed', { code, stderr: stderr.trim() });
        reject(new Error(`sd_notify: '${bin}' exited with ${code}: ${stderr.trim()}`));
      }
    });
  });
}

/**
 * The watchdog interval systemd expects pings within (WatchdogSec=), or undefined when none is
 * asked for this process. Ping at half of it.
 */
export function watchdogIntervalMs(env: NodeJS.ProcessEnv = process.env, pid = process.pid): number | undefined {
  const usec = Number.parseInt(env.WATCHDOG_USEC ?? '', 10);
  if (!Number.isFinite(usec) || usec <= 0) return undefined;
  const forPid = env.WATCHDOG_PID ? Number.parseInt(env.WATCHDOG_PID, 10) : undefined;
  if (forPid !== undefined && forPid !== pid) return undefined;
  return usec / 1000;
}

/**
 * Pings WATCHDOG=1 at half the interval while `healthy()` says so (a wedged event loop pings
 * nothing, so systemd restarts it). Returns a stop function; a no-op when no watchdog is set.
 */
export function startWatchdog(healthy: () => boolean, opts: NotifyOptions & { env?: NodeJS.ProcessEnv } = {}): () => void {
  const interval = watchdogIntervalMs(opts.env ?? process.env);
  if (interval === undefined) return () => {};
  const log = opts.log ?? silentLogger;
  const timer = setInterval(() => {
    if (!healthy()) return;
    notify({ WATCHDOG: '1' }, opts).catch((err: Error) => log.warn('watchdog ping failed', { error: err.message }));
  }, Math.max(50, interval / 2));
  timer.unref();
  return () => clearInterval(timer);
}
