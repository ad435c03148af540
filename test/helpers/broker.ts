// A real MQTT broker for integration tests: Mosquitto when installed (as in CI), else the
// embedded aedes broker, so `npm test` also runs on a bare machine. LINESIGHT_TEST_BROKER=
// mosquitto|aedes forces one. stop()/restart() keep sessions and retained messages (Mosquitto
// persists them to a temp dir on SIGTERM; aedes keeps its instance), like a real broker restart.
// startTcpProxy() sits between a client and the broker to cut or black-hole its connection.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { freePort } from './net.js';
import { tmpdir, userInfo } from 'node:os';
import { delimiter, join } from 'node:path';
import { Aedes } from 'aedes';

export interface TestBroker {
  url: string;
  port: number;
  kind: 'mosquitto' | 'aedes';
  /** Stop the broker (clients see their connection drop); sessions and retained messages are kept. */
  stop(): Promise<void>;
  /** Start it again on the same port. */
  restart(): Promise<void>;
  /** Stop for good and remove its files. */
  close(): Promise<void>;
}

const MOSQUITTO_FIX =
  'install it (Debian/Ubuntu: sudo apt-get install -y mosquitto), or unset LINESIGHT_TEST_BROKER to fall back to the embedded aedes broker';

export function findMosquitto(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin'];
  for (const d of dirs) {
    if (!d) continue;
    const p = join(d, 'mosquitto');
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

/**
 * The Mosquitto binary to use, or undefined for the embedded aedes broker, as LINESIGHT_TEST_BROKER
 * says (unset: Mosquitto when installed). Throws, naming the fix, when the choice cannot be met.
 */
export function pickMosquitto(): string | undefined {
  const want = process.env.LINESIGHT_TEST_BROKER;
  if (want !== undefined && want !== '' && want !== 'mosquitto' && want !== 'aedes') {
    throw new Error(`LINESIGHT_TEST_BROKER='${want}': use 'mosquitto' or 'aedes' (or leave it unset to pick Mosquitto when installed)`);
  }
  const bin = want === 'aedes' ? undefined : findMosquitto();
  if (want === 'mosquitto' && !bin) throw new Error(`LINESIGHT_TEST_BROKER=mosquitto but no mosquitto binary on PATH or in /usr/sbin: ${MOSQUITTO_FIX}`);
  return bin;
}

export async function startTestBroker(): Promise<TestBroker> {
  const bin = pickMosquitto();
  return bin ? startMosquitto(bin) : startAedes();
}

export { freePort };

/** Plain TCP: the listener accepts a connection. */
const tcpAccepts = (port: number): Promise<boolean> =>
  new Promise<boolean>((resolve) => {
    const s = createConnection({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });

async function waitListening(port: number, proc: ChildProcess, output: () => string, ready: (port: number) => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`mosquitto exited (${proc.exitCode ?? proc.signalCode}) before listening on ${port}:\n${output()}`);
    }
    if (await ready(port)) return;
    if (Date.now() > until) throw new Error(`mosquitto not listening on ${port} after ${timeoutMs} ms:\n${output()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export interface MosquittoOptions {
  /** Listener and auth lines instead of a plain anonymous listener (TLS, password file); `dir` is the broker's temp dir. */
  listener?: (port: number, dir: string) => string[];
  /** URL scheme clients use (default mqtt). */
  scheme?: 'mqtt' | 'mqtts';
  /** When the broker counts as up (default: a TCP connection is accepted). */
  ready?: (port: number) => Promise<boolean>;
}

/** A real Mosquitto on a free port with persistence in a temp dir (sessions survive stop()/restart()). */
export async function startMosquitto(bin: string, opts: MosquittoOptions = {}): Promise<TestBroker> {
  const dir = mkdtempSync(join(tmpdir(), 'linesight-mosquitto-'));
  const port = await freePort();
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(
    conf,
    [
      ...(opts.listener ? opts.listener(port, dir) : [`listener ${port} 127.0.0.1`, 'allow_anonymous true']),
      // Sessions and queued messages survive stop()/restart() as they do a real broker restart.
      'persistence true',
      `persistence_location ${dir}/`,
      'autosave_interval 0',
      'max_queued_messages 100000',
      // As root Mosquitto would switch to user 'mosquitto', who cannot write the temp dir.
      `user ${userInfo().username}`,
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      'log_type notice',
      '',
    ].join('\n'),
  );
  let proc: ChildProcess | undefined;
  let out = '';
  const launch = async (): Promise<void> => {
    out = '';
    const p = spawn(bin, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc = p;
    // A test process that dies without its after() hook must not leave a broker running.
    const reap = (): void => void p.kill('SIGKILL');
    process.once('exit', reap);
    p.once('exit', () => process.off('exit', reap));
    p.stdout?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
    p.stderr?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
    await waitListening(port, p, () => out, opts.ready ?? tcpAccepts);
  };
  const stop = async (): Promise<void> => {
    const p = proc;
    proc = undefined;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill('SIGTERM');
    const timer = setTimeout(() => p.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  await launch();
  return {
    url: `${opts.scheme ?? 'mqtt'}://127.0.0.1:${port}`,
    port,
    kind: 'mosquitto',
    stop,
    restart: async () => {
      await stop();
      await launch();
    },
    close: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function startAedes(): Promise<TestBroker> {
  // One aedes instance for the broker's whole life: its in-memory persistence is what keeps
  // sessions and retained messages across stop()/restart().
  const broker = await Aedes.createBroker();
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  let port = 0;
  const launch = async (): Promise<void> => {
    const srv = createServer((s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      broker.handle(s);
    });
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, '127.0.0.1', () => resolve());
    });
    const addr = srv.address();
    if (addr && typeof addr === 'object') port = addr.port;
    server = srv;
  };
  const stop = async (): Promise<void> => {
    const srv = server;
    server = undefined;
    if (!srv) return;
    const closed = new Promise<void>((r) => srv.close(() => r()));
    for (const s of sockets) s.destroy();
    await closed;
  };
  await launch();
  return {
    url: `mqtt://127.0.0.1:${port}`,
    port,
    kind: 'aedes',
    stop,
    restart: async () => {
      await stop();
      await launch();
    },
    close: async () => {
      await stop();
      await new Promise<void>((r) => broker.close(() => r()));
    },
  };
}

export interface TcpProxy {
  port: number;
  url: string;
  /** Drop bytes client → broker (the broker never sees what the client sends). */
  blockUp: boolean;
  /** Drop bytes broker → client (e.g. PUBACKs never arrive). */
  blockDown: boolean;
  /** Close new connections at once (the broker looks down). */
  refuse: boolean;
  /** Connections currently proxied. */
  readonly connections: number;
  /** Close every proxied connection on both sides (a network cut). Dropped bytes break the MQTT stream, so cut after blocking. */
  cut(): void;
  close(): Promise<void>;
}

/** A TCP proxy in front of 127.0.0.1:targetPort, to cut or black-hole one client's connection. */
export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const pairs = new Set<[Socket, Socket]>();
  const proxy = {
    port: 0,
    url: '',
    blockUp: false,
    blockDown: false,
    refuse: false,
    get connections() {
      return pairs.size;
    },
    cut() {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
    },
    close: async () => {},
  };
  const server = createServer((client) => {
    if (proxy.refuse) {
      client.destroy();
      return;
    }
    const upstream = createConnection({ port: targetPort, host: '127.0.0.1' });
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    const end = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (d) => {
      if (!proxy.blockUp) upstream.write(d);
    });
    upstream.on('data', (d) => {
      if (!proxy.blockDown) client.write(d);
    });
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  proxy.port = addr && typeof addr === 'object' ? addr.port : 0;
  proxy.url = `mqtt://127.0.0.1:${proxy.port}`;
  proxy.close = async () => {
    const closed = new Promise<void>((r) => server.close(() => r()));
    proxy.cut();
    await closed;
  };
  return proxy;
}
