// MQTT over TLS, end to end: a throwaway PKI made with openssl (a CA, a broker certificate for
// localhost/127.0.0.1, a client certificate, and a rogue CA with its own client certificate), a
// broker that requires a client certificate and a password, and linesight's publisher configured
// through the config schema (mqtt.ca / cert / key / username / password).
//
// The broker follows test/helpers/broker.ts: Mosquitto when installed (CI installs it and sets
// LINESIGHT_TEST_BROKER=mosquitto, which makes it required), else the embedded aedes broker
// behind a node TLS server, so `npm test` also runs on a bare machine. openssl is required: the
// test fails (not skips) without it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { Aedes, type AuthenticateError } from 'aedes';
import mqtt, { type MqttClient } from 'mqtt';
import { SystemClock } from '../../src/clock.js';
import { parseConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/log.js';
import type { Part } from '../../src/part.js';
import { MqttPublisher } from '../../src/publish/mqtt.js';
import { pickMosquitto, startMosquitto } from '../helpers/broker.js';

const USER = 'station-tls';
const PASSWORD = `pw-${randomBytes(9).toString('hex')}`;
const LINE = 'tls';

function findBin(name: string, extra: string[] = ['/usr/bin', '/usr/sbin', '/usr/local/bin', '/usr/local/sbin']): string | undefined {
  for (const d of [...(process.env.PATH ?? '').split(delimiter), ...extra]) {
    if (!d) continue;
    try {
      accessSync(join(d, name), constants.X_OK);
      return join(d, name);
    } catch {
      /* not here */
    }
  }
  return undefined;
}

// ---- a throwaway PKI -------------------------------------------------------------------------

interface Pki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A CA the broker does not know, and a client certificate it signed. */
  rogueCa: string;
  rogueClientCert: string;
  rogueClientKey: string;
}

function makePki(openssl: string): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'linesight-tls-'));
  const p = (f: string): string => join(dir, f);
  const run = (args: string[]): void => {
    const r = spawnSync(openssl, args, { cwd: dir, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed (${r.status ?? r.signal ?? r.error?.message}):\n${r.stderr}`);
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ca = (name: string): void =>
    run(['req', '-x509', ...ec, '-keyout', p(`${name}.key`), '-out', p(`${name}.pem`), '-days', '2', '-subj', `/CN=linesight test ${name}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  const leaf = (name: string, signer: string, cn: string, ext: string): void => {
    writeFileSync(p(`${name}.ext`), ext);
    run(['req', '-new', ...ec, '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`), '-subj', `/CN=${cn}`]);
    run(['x509', '-req', '-in', p(`${name}.csr`), '-CA', p(`${signer}.pem`), '-CAkey', p(`${signer}.key`), '-CAcreateserial',
      '-out', p(`${name}.pem`), '-days', '2', '-extfile', p(`${name}.ext`)]);
  };
  ca('ca');
  ca('rogue-ca');
  leaf('server', 'ca', 'localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n');
  leaf('client', 'ca', USER, 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n');
  leaf('rogue-client', 'rogue-ca', USER, 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n');
  return {
    dir,
    ca: p('ca.pem'),
    serverCert: p('server.pem'),
    serverKey: p('server.key'),
    clientCert: p('client.pem'),
    clientKey: p('client.key'),
    rogueCa: p('rogue-ca.pem'),
    rogueClientCert: p('rogue-client.pem'),
    rogueClientKey: p('rogue-client.key'),
  };
}

// ---- a TLS broker that wants a client certificate and a password ------------------------------

interface TlsBroker {
  kind: 'mosquitto' | 'aedes';
  url: string;
  close(): Promise<void>;
}

/** Mosquitto's password file line: `$6$` salt `$` SHA-512(password ‖ salt), both base64. */
function mosquittoHash(password: string): string {
  const salt = randomBytes(12);
  const hash = createHash('sha512').update(password, 'utf8').update(salt).digest();
  return `$6$${salt.toString('base64')}$${hash.toString('base64')}`;
}

/** The shared test Mosquitto (test/helpers/broker.ts) with a TLS listener that wants a client certificate and a password. */
async function startTlsMosquitto(bin: string, pki: Pki): Promise<TlsBroker> {
  return startMosquitto(bin, {
    scheme: 'mqtts',
    listener: (port, dir) => {
      const passwd = join(dir, 'passwd');
      const tool = findBin('mosquitto_passwd');
      if (tool) {
        const r = spawnSync(tool, ['-b', '-c', passwd, USER, PASSWORD], { encoding: 'utf8' });
        if (r.status !== 0) throw new Error(`mosquitto_passwd failed (${r.status ?? r.signal}): ${r.stderr}`);
      } else {
        writeFileSync(passwd, `${USER}:${mosquittoHash(PASSWORD)}\n`, { mode: 0o600 });
      }
      return [
        `listener ${port} 127.0.0.1`,
        `cafile ${pki.ca}`,
        `certfile ${pki.serverCert}`,
        `keyfile ${pki.serverKey}`,
        'require_certificate true',
        'use_identity_as_username false',
        `password_file ${passwd}`,
        'allow_anonymous false',
      ];
    },
    // Up = a TLS handshake with our client certificate completes.
    ready: (port) =>
      new Promise<boolean>((resolve) => {
        const s: TLSSocket = tlsConnect({ host: '127.0.0.1', port, ca: readFileSync(pki.ca), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey), servername: 'localhost' });
        s.once('secureConnect', () => {
          s.destroy();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      }),
  });
}

async function startTlsAedes(pki: Pki): Promise<TlsBroker> {
  const broker = await Aedes.createBroker({
    authenticate: (_client, username, password, done) => {
      if (username === USER && password?.toString('utf8') === PASSWORD) return done(null, true);
      const e = new Error('bad username or password') as AuthenticateError;
      e.returnCode = 4;
      done(e, false);
    },
  });
  const sockets = new Set<TLSSocket>();
  const server = createTlsServer(
    { key: readFileSync(pki.serverKey), cert: readFileSync(pki.serverCert), ca: readFileSync(pki.ca), requestCert: true, rejectUnauthorized: true },
    (s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      broker.handle(s);
    },
  );
  // A refused handshake must not leave an unhandled error behind.
  server.on('tlsClientError', () => {});
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  const port = addr && typeof addr === 'object' ? addr.port : 0;
  return {
    kind: 'aedes',
    url: `mqtts://127.0.0.1:${port}`,
    close: async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      await closed;
      await new Promise<void>((r) => broker.close(() => r()));
    },
  };
}

// ---- setup -----------------------------------------------------------------------------------

let pki: Pki;
let broker: TlsBroker;
const dirs: string[] = [];

before(async () => {
  const openssl = findBin('openssl');
  if (!openssl) {
    throw new Error('openssl not found on PATH or in /usr/bin: this test makes its certificates with it; install it (Debian/Ubuntu: sudo apt-get install -y openssl)');
  }
  pki = makePki(openssl);
  const bin = pickMosquitto();
  broker = bin ? await startTlsMosquitto(bin, pki) : await startTlsAedes(pki);
});

after(async () => {
  await broker?.close();
  if (pki) rmSync(pki.dir, { recursive: true, force: true });
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

type Ctx = { after(fn: () => Promise<void> | void): void; diagnostic(msg: string): void };

let stations = 0;
const newStation = (name: string): string => `${name}-${process.pid}-${++stations}`;

/** The agent's publisher, configured the way a config file does it. */
function agentPublisher(t: Ctx, station: string, mqttCfg: Record<string, unknown>): { pub: MqttPublisher; log: ReturnType<typeof memoryLogger> } {
  const cfg = parseConfig({ station: { line: LINE, id: station }, mqtt: { url: broker.url, ...mqttCfg } }, { env: {} });
  const stateDir = mkdtempSync(join(tmpdir(), 'linesight-mqtt-tls-state-'));
  dirs.push(stateDir);
  const log = memoryLogger();
  const pub = new MqttPublisher({
    cfg: cfg.mqtt,
    station: { line: cfg.station.line, id: cfg.station.id },
    stateDir,
    clock: new SystemClock(),
    log,
    reconnectPeriodMs: 200,
    connectTimeoutMs: 3000,
    stopTimeoutMs: 2000,
  });
  t.after(() => pub.stop().catch(() => {}));
  return { pub, log };
}

const goodTls = (): Record<string, unknown> => ({ ca: pki.ca, cert: pki.clientCert, key: pki.clientKey, username: USER, password: PASSWORD });

function part(station: string, seq: number): Part {
  const t0 = 1_000_000_000n + BigInt(seq) * 100_000_000n;
  return {
    id: `${station}-b1-${seq}`,
    station,
    seq,
    trigger: 'interval',
    triggeredAt: new Date().toISOString(),
    t: { triggerNs: t0, frameNs: t0 + 2_000_000n, inferStartNs: t0 + 3_000_000n, inferEndNs: t0 + 20_000_000n, decidedNs: t0 + 21_000_000n },
    failSafe: false,
    model: { name: 'film-demo', version: '1.0.0', sha256: 'c'.repeat(64) },
    provider: 'cpu',
    timings: { queueMs: 1, preprocessMs: 2, inferMs: 12, postprocessMs: 1 },
    verdict: { verdict: 'pass', score: 0.07, threshold: 0.5, defects: [] },
    action: 'pass',
  };
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The password and the private keys' contents appear nowhere in the log or the stats. */
function assertNoSecrets(log: ReturnType<typeof memoryLogger>, pub: MqttPublisher): void {
  const text = JSON.stringify(log.records) + JSON.stringify(pub.stats());
  assert.ok(!text.includes(PASSWORD), 'the password is not in the log');
  for (const keyFile of [pki.clientKey, pki.rogueClientKey]) {
    const body = readFileSync(keyFile, 'utf8').split('\n').filter((l) => l && !l.startsWith('-----'));
    assert.ok(body.length > 0);
    for (const line of body) assert.ok(!text.includes(line), `no line of ${keyFile} is in the log`);
    assert.ok(!text.includes(body.join('')) && !text.includes(body.join('\\n')), 'the key is not in the log');
  }
  assert.ok(!/PRIVATE KEY/.test(text), 'no PEM private key in the log');
}

/** A subscriber of the central system: TLS with the same CA and a client certificate. */
async function tlsSubscriber(t: Ctx, filter: string): Promise<{ msgs: { topic: string; body: Record<string, unknown> }[]; client: MqttClient }> {
  const msgs: { topic: string; body: Record<string, unknown> }[] = [];
  const client = await mqtt.connectAsync(broker.url, {
    protocolVersion: 4,
    ca: readFileSync(pki.ca),
    cert: readFileSync(pki.clientCert),
    key: readFileSync(pki.clientKey),
    rejectUnauthorized: true,
    username: USER,
    password: PASSWORD,
    clientId: `central-${process.pid}-${++stations}`,
    reconnectPeriod: 0,
    connectTimeout: 5000,
  });
  t.after(() => client.endAsync(true).catch(() => {}));
  client.on('message', (topic, payload) => msgs.push({ topic, body: JSON.parse(payload.toString()) as Record<string, unknown> }));
  await client.subscribeAsync(filter, { qos: 1 });
  return { msgs, client };
}

/** The 'mqtt error' warnings the publisher logged. */
const mqttErrors = (log: ReturnType<typeof memoryLogger>): { error: string; hint?: string }[] =>
  log.records.filter((r) => r.msg === 'mqtt error' && r.level === 'warn') as unknown as { error: string; hint?: string }[];

// ---- tests -----------------------------------------------------------------------------------

test('TLS with a client certificate and a password: an inspection reaches a TLS subscriber; no secret in the log', async (t) => {
  t.diagnostic(`broker: ${broker.kind} at ${broker.url}`);
  const station = newStation('ok');
  const central = await tlsSubscriber(t, `linesight/${LINE}/${station}/inspection`);
  const { pub, log } = agentPublisher(t, station, goodTls());
  await pub.start();
  assert.equal(await pub.whenConnected(10_000), true, `connected over TLS (errors: ${JSON.stringify(mqttErrors(log))})`);
  const r = await pub.publishInspection(part(station, 1));
  assert.equal(r.durable, true);
  await waitFor(() => central.msgs.length === 1 && pub.stats().outbox.pending === 0, 'the inspection at the subscriber, acknowledged');
  assert.equal(central.msgs[0]!.body.partId, `${station}-b1-1`);
  assert.equal(central.msgs[0]!.body.replayed, false);
  assert.equal(pub.stats().published, 1);
  const connecting = log.records.find((l) => l.msg === 'mqtt connecting');
  assert.equal(connecting?.tls, true);
  assert.equal(connecting?.username, USER);
  await pub.stop();
  assertNoSecrets(log, pub);
});

test('an agent whose mqtt.ca is not the CA of the broker is refused with a clear error, keeps its results, does not crash', async (t) => {
  const station = newStation('wrong-ca');
  const { pub, log } = agentPublisher(t, station, { ...goodTls(), ca: pki.rogueCa });
  await pub.start();
  await waitFor(() => mqttErrors(log).length > 0, 'the TLS error in the log');
  const e = mqttErrors(log)[0]!;
  t.diagnostic(`logged: ${e.error} (hint: ${e.hint})`);
  assert.match(e.error, /self[- ]signed certificate|unable to (get local issuer|verify)/i);
  assert.match(e.hint ?? '', /broker's certificate is not trusted.*mqtt\.ca/);
  assert.equal(pub.stats().connected, false);
  assert.equal(pub.stats().lastError, e.error);
  // It keeps trying (the fix may be made on either side) and keeps results meanwhile.
  const r = await pub.publishInspection(part(station, 1));
  assert.equal(r.durable, true);
  assert.equal(pub.stats().outbox.pending, 1);
  await new Promise((res) => setTimeout(res, 600));
  assert.equal(pub.stats().connected, false);
  assert.equal(mqttErrors(log).length, 1, 'the repeated error is logged once, not at every retry');
  await pub.stop();
  assertNoSecrets(log, pub);
});

test('a client certificate from another CA (or none) is refused by the broker, with a clear error in the agent log', async (t) => {
  const station = newStation('rogue-cert');
  const { pub, log } = agentPublisher(t, station, { ...goodTls(), cert: pki.rogueClientCert, key: pki.rogueClientKey });
  await pub.start();
  assert.equal(await pub.whenConnected(3000), false, 'never connected');
  await waitFor(() => mqttErrors(log).length > 0, 'the refusal in the log');
  const e = mqttErrors(log)[0]!;
  t.diagnostic(`logged: ${e.error} (hint: ${e.hint})`);
  // Mosquitto sends a TLS alert (unknown ca); node's TLS server (the aedes fallback) just closes.
  assert.match(e.hint ?? '', /(broker refused the TLS handshake|refuses the client certificate).*mqtt\.cert \/ mqtt\.key/);
  assert.equal(pub.stats().connected, false);
  await new Promise((res) => setTimeout(res, 600));
  assert.equal(mqttErrors(log).length, 1, 'logged once, not at every retry');
  await pub.stop();
  assertNoSecrets(log, pub);

  // Without any client certificate the broker refuses too.
  const anon = mqtt.connect(broker.url, { ca: readFileSync(pki.ca), rejectUnauthorized: true, username: USER, password: PASSWORD, reconnectPeriod: 0, connectTimeout: 3000 });
  t.after(() => anon.end(true));
  const outcome = await new Promise<string>((resolve) => {
    anon.once('connect', () => resolve('connected'));
    anon.once('error', (err) => resolve(`error: ${err.message}`));
    anon.once('close', () => resolve('closed'));
  });
  t.diagnostic(`no client certificate: ${outcome}`);
  assert.notEqual(outcome, 'connected');
});

test('a wrong password is refused (CONNACK), logged with the fix and without the password', async (t) => {
  const station = newStation('wrong-pw');
  const wrong = `wrong-${randomBytes(6).toString('hex')}`;
  const { pub, log } = agentPublisher(t, station, { ...goodTls(), password: wrong });
  await pub.start();
  await waitFor(() => mqttErrors(log).length > 0, 'the refusal in the log');
  const e = mqttErrors(log)[0]!;
  t.diagnostic(`logged: ${e.error} (hint: ${e.hint})`);
  assert.match(e.error, /Connection refused: (Not authorized|Bad username or password)/);
  assert.match(e.hint ?? '', /check mqtt\.username \/ mqtt\.password/);
  assert.equal(pub.stats().connected, false);
  await new Promise((res) => setTimeout(res, 600));
  assert.equal(mqttErrors(log).length, 1, 'logged once, not at every retry');
  await pub.stop();
  const text = JSON.stringify(log.records) + JSON.stringify(pub.stats());
  assert.ok(!text.includes(wrong), 'the wrong password is not in the log either');
  assertNoSecrets(log, pub);
});
