// Fault injection against the real agent process and a real broker: parts go through
// `linesight run` (synthetic camera, interval trigger) to a real Mosquitto with persistence, while
// the broker is restarted and the agent is killed with SIGKILL and restarted on the same state
// folder. A subscriber with a persistent session (clean: false, QoS 1) collects every inspection.
//
//   npx tsx bench/faults.ts [--parts 300] [--rate 20] [--dist] [--keep] [--out bench/faults.md]
//
// Required (exit 0 only then):
// - every part that was triggered arrives: what was triggered is read from the agent's trigger
//   journal (<stateDir>/journal: the highest seq of every boot);
// - a part in flight at a SIGKILL arrives after the restart as a fail-safe divert, reason 'crash';
// - a part id arrives more than once only as a flagged replay (`replayed: true`), or as the
//   broker's own QoS 1 redelivery of the same message (DUP flag, same bytes).
// Without the journal wired into the agent the first two cannot be established: the script says
// what is missing and checks what it can (no seq gaps before the last part seen of each boot).
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import mqtt from 'mqtt';
import { readJournal, type JournalSummary } from '../src/line/journal.js';
import { findMosquitto, startMosquitto } from '../test/helpers/broker.js';

const repo = resolve(new URL('..', import.meta.url).pathname);
const { values: args } = parseArgs({
  options: {
    parts: { type: 'string', default: '300' },
    rate: { type: 'string', default: '20' },
    dist: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    out: { type: 'string' },
  },
});
const PARTS = Number(args.parts);
const RATE = Number(args.rate);
const KILLS = 2;
const say = (m: string): void => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${m}`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const t0 = Date.now();

// ---- Mosquitto with persistence ----------------------------------------------------------------

// ---- the subscriber ----------------------------------------------------------------------------

interface Got {
  replayed: boolean;
  dup: boolean;
  raw: string;
  reason: string | null;
  failSafe: boolean;
  action: string;
  detail: string | null;
}

async function subscribe(url: string, topic: string): Promise<{ got: Map<string, Got[]>; messages: () => number; client: mqtt.MqttClient }> {
  const got = new Map<string, Got[]>();
  let n = 0;
  const client = mqtt.connect(url, { clientId: `faults-sub-${process.pid}`, clean: false, reconnectPeriod: 250, keepalive: 10 });
  client.on('message', (_t, payload, packet) => {
    n++;
    const raw = payload.toString();
    const m = JSON.parse(raw) as { partId: string; replayed: boolean; reason: string | null; failSafe: boolean; action: string; detail: string | null };
    const list = got.get(m.partId) ?? [];
    list.push({ replayed: m.replayed === true, dup: packet.dup === true, raw, reason: m.reason, failSafe: m.failSafe, action: m.action, detail: m.detail });
    got.set(m.partId, list);
  });
  client.on('error', () => {});
  await new Promise<void>((r) => client.once('connect', () => r()));
  await client.subscribeAsync(topic, { qos: 1 });
  return { got, messages: () => n, client };
}

// ---- the agent process ---------------------------------------------------------------------------

class AgentProc {
  private proc: ChildProcess | undefined;
  private lines: Record<string, unknown>[] = [];
  boots = 0;
  constructor(
    private readonly cfgPath: string,
    private readonly logDir: string,
    private readonly env: NodeJS.ProcessEnv = {},
  ) {}
  async start(label: string): Promise<void> {
    this.boots++;
    const cmd = args.dist ? [join(repo, 'bin', 'linesight.js')] : ['--import', 'tsx', join(repo, 'src', 'cli.ts')];
    // Only the overrides given here: a stray LINESIGHT_* variable (LINESIGHT_TEST_BROKER from CI)
    // would be read as a config key and refused.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('LINESIGHT_')));
    const p = spawn(process.execPath, [...cmd, 'run', '-c', this.cfgPath], { cwd: repo, stdio: ['ignore', 'ignore', 'pipe'], env: { ...env, ...this.env } });
    this.proc = p;
    const log = createWriteStream(join(this.logDir, `agent-${this.boots}-${label}.log`));
    let buf = '';
    let running = false;
    p.stderr!.on('data', (d: Buffer) => {
      log.write(d);
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          const rec = JSON.parse(line) as Record<string, unknown>;
          this.lines.push(rec);
          if (rec.msg === 'line running') running = true;
        } catch {
          /* not a log record */
        }
      }
    });
    p.once('exit', () => log.end());
    const until = Date.now() + 60_000;
    while (!running) {
      if (p.exitCode !== null) throw new Error(`agent exited (${p.exitCode}) before 'line running'; see ${this.logDir}`);
      if (Date.now() > until) throw new Error(`agent not running after 60 s; see ${this.logDir}`);
      await sleep(20);
    }
  }
  logs(): Record<string, unknown>[] {
    return this.lines;
  }
  async kill(): Promise<void> {
    const p = this.proc!;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  }
  async stop(): Promise<number | null> {
    const p = this.proc!;
    const exited = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
    p.kill('SIGTERM');
    return exited;
  }
}

// ---- the run -------------------------------------------------------------------------------------

const work = mkdtempSync(join(tmpdir(), 'linesight-faults-'));
const stateDir = join(work, 'state');
const journalDir = join(stateDir, 'journal');
const logDir = join(work, 'logs');
for (const d of [stateDir, logDir]) mkdirSync(d, { recursive: true });
const station = `fst${process.pid}`;
const prefix = `linesight/faults/${station}/`;

const bin = findMosquitto();
if (!bin) throw new Error('mosquitto not found: install it (Debian/Ubuntu: sudo apt-get install -y mosquitto)');
// The tests' Mosquitto (test/helpers/broker.ts): persistence on, so sessions and queued QoS 1
// messages survive its restarts as they do on a real broker.
const mosquitto = await startMosquitto(bin);
const broker = {
  url: mosquitto.url,
  restarts: 0,
  stop: () => mosquitto.stop(),
  start: async (): Promise<void> => {
    await mosquitto.restart();
    broker.restarts++;
  },
  restart: async (downMs: number): Promise<void> => {
    await mosquitto.stop();
    await sleep(downMs);
    await broker.start();
  },
};
const version = await new Promise<string>((r) => {
  const p = spawn(bin, ['-h'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout!.on('data', (d: Buffer) => (out += d));
  p.on('exit', () => r(/mosquitto version (\S+)/.exec(out)?.[1] ?? '?'));
});
const cfgPath = join(work, 'config.yaml');
writeFileSync(
  cfgPath,
  [
    `station: { line: faults, id: ${station}, stateDir: ${stateDir} }`,
    'camera: { source: synthetic, synthetic: { width: 320, height: 240, seed: 5, defectRate: 0.2 } }',
    `trigger: { mode: interval, intervalMs: ${Math.round(1000 / RATE)} }`,
    `model: { path: ${join(repo, 'models', 'film-demo')}, workers: 1 }`,
    'line: { travelMs: 400, marginMs: 50, pulseMs: 20, maxInFlight: 32 }',
    'gpio: { backend: sim }',
    `mqtt: { url: "${broker.url}", keepalive: 5 }`,
    'http: { enabled: false }',
    'log: { level: info }',
    '',
  ].join('\n'),
);
say(`work dir ${work}; mosquitto ${version} on ${broker.url} (persistence on)`);
const sub = await subscribe(broker.url, `${prefix}inspection`);
const agent = new AgentProc(cfgPath, logDir);

const journalWired = (): boolean => existsSync(journalDir) && readdirSync(journalDir).some((f) => f.endsWith('.log'));
/**
 * Wait (bounded) until the journal shows parts of the running boot still open, so the kill
 * catches some in flight. Returns their ids (as read just before the kill: one may still be
 * decided in the last milliseconds).
 */
async function waitInFlight(): Promise<string[]> {
  if (!journalWired()) return [];
  const until = Date.now() + 3000;
  while (Date.now() < until) {
    try {
      const open = readJournal(journalDir).undecided.filter((e) => e.boot === `b${agent.boots}`);
      if (open.length > 0) return open.map((e) => e.id);
    } catch {
      /* read while being written: try again */
    }
    await sleep(2);
  }
  return [];
}

// Three boots of about PARTS/3 parts each. Boot 1: broker restart mid-run, SIGKILL at the end.
// Boot 2: the broker goes down, the agent is SIGKILLed during the outage, the broker comes back
// after the restart. Boot 3: broker restart mid-run, then a graceful stop (SIGTERM).
const perBootMs = (PARTS / RATE / (KILLS + 1)) * 1000;
const kills: { boot: number; open: string[] }[] = [];

await agent.start('b1');
say(`boot 1 running (${RATE} parts/s)`);
await sleep(perBootMs * 0.4);
say('broker restart (1 s down)');
await broker.restart(1000);
await sleep(perBootMs * 0.6 - 1000);
let open = await waitInFlight();
await agent.kill();
kills.push({ boot: 1, open });
say(`SIGKILL agent (boot 1${open.length ? `, ${open.length} part(s) open in the journal` : ''})`);

await agent.start('b2');
say('boot 2 running');
await sleep(perBootMs * 0.5);
say('broker down');
await broker.stop();
await sleep(perBootMs * 0.3);
open = await waitInFlight();
await agent.kill();
kills.push({ boot: 2, open });
say(`SIGKILL agent during the broker outage (boot 2${open.length ? `, ${open.length} part(s) open in the journal` : ''})`);
await agent.start('b3');
say('boot 3 running; broker back up');
await broker.start();
await sleep(perBootMs * 0.5);
say('broker restart (1 s down)');
await broker.restart(1000);
await sleep(perBootMs * 0.5);
const code = await agent.stop();
say(`SIGTERM agent (graceful stop, exit code ${code})`);

// ---- what was triggered --------------------------------------------------------------------------

let journal: JournalSummary | undefined;
if (journalWired()) journal = readJournal(journalDir);
const bootCount = Number(readFileSync(join(stateDir, 'boot-counter'), 'utf8').trim());
const expected = new Set<string>();
const perBoot: { boot: string; maxSeq: number; source: string }[] = [];
const seqOf = (id: string): number => Number(id.slice(id.lastIndexOf('-') + 1));
const bootOf = (id: string): string => id.slice(station.length + 1, id.lastIndexOf('-'));
const waitAll = async (ms: number): Promise<void> => {
  const until = Date.now() + ms;
  let last = -1;
  let quietSince = Date.now();
  while (Date.now() < until) {
    if (expected.size > 0 && [...expected].every((id) => sub.got.has(id))) return;
    if (sub.messages() !== last) {
      last = sub.messages();
      quietSince = Date.now();
    } else if (expected.size === 0 && Date.now() - quietSince > 5000) return;
    await sleep(100);
  }
};
if (journal) {
  for (const b of journal.boots) if (b.maxSeq > 0 || /^b\d+$/.test(b.boot)) perBoot.push({ boot: b.boot, maxSeq: b.maxSeq, source: 'journal' });
} else {
  await waitAll(15_000);
  for (let i = 1; i <= bootCount; i++) {
    const boot = `b${i}`;
    const seqs = [...sub.got.keys()].filter((id) => bootOf(id) === boot).map(seqOf);
    perBoot.push({ boot, maxSeq: seqs.length ? Math.max(...seqs) : 0, source: 'highest seq received (the journal would say more)' });
  }
}
for (const b of perBoot) for (let s = 1; s <= b.maxSeq; s++) expected.add(`${station}-${b.boot}-${String(s).padStart(6, '0')}`);
await waitAll(30_000);

// A graceful stop leaves nothing behind; if results were still unacknowledged, one more start
// (command trigger: no new parts) publishes them, as the next start on a real line would.
let drainBoot = false;
if (![...expected].every((id) => sub.got.has(id))) {
  drainBoot = true;
  say('not everything arrived after the graceful stop: one more start (command trigger, no new parts) to let the outbox drain');
  const drain = new AgentProc(cfgPath, logDir, { LINESIGHT_TRIGGER__MODE: 'command' });
  drain.boots = agent.boots;
  await drain.start('drain');
  await waitAll(20_000);
  await drain.stop();
}
await sub.client.endAsync();
await mosquitto.close();

// ---- verdict -------------------------------------------------------------------------------------

const missing = [...expected].filter((id) => !sub.got.has(id));
let replays = 0;
let replayedFirst = 0;
let redeliveries = 0;
const unflagged: string[] = [];
const crash: string[] = [];
const reasons: Record<string, number> = {};
let messages = 0;
for (const [id, list] of sub.got) {
  messages += list.length;
  const first = list[0]!;
  // Sent before a restart or reconnect and never acknowledged: it arrives once, flagged.
  if (first.replayed) replayedFirst++;
  for (const g of list) {
    if (g.reason === 'crash') crash.push(id);
  }
  reasons[first.reason ?? (first.action === 'pass' ? 'pass (verdict)' : 'reject (verdict)')] = (reasons[first.reason ?? (first.action === 'pass' ? 'pass (verdict)' : 'reject (verdict)')] ?? 0) + 1;
  for (const g of list.slice(1)) {
    if (g.replayed) replays++;
    else if (g.dup && list.some((o) => o !== g && o.raw === g.raw)) redeliveries++;
    else unflagged.push(id);
  }
}
const crashIds = [...new Set(crash)];
const crashBad = crashIds.filter((id) => {
  const g = sub.got.get(id)!.find((x) => x.reason === 'crash')!;
  return !(g.failSafe && g.action === 'divert' && ['b1', 'b2'].includes(bootOf(id)) && g.detail?.includes(bootOf(id)));
});
const killedBoots = kills.map((k) => `b${k.boot}`);
const crashPerKill = killedBoots.map((b) => `${b}: ${crashIds.filter((id) => bootOf(id) === b).length}`).join(', ');
const triggered = perBoot.reduce((s, b) => s + b.maxSeq, 0);
const extra = [...sub.got.keys()].filter((id) => !expected.has(id));

const problems: string[] = [];
const incomplete: string[] = [];
if (!journal) {
  incomplete.push(
    `the trigger journal is not wired into the agent (no journal files in ${journalDir}): what was triggered cannot be known — ` +
      'a part in flight at a SIGKILL is simply never published and leaves no trace; only gaps below the highest seq received per boot are checked',
  );
}
if (missing.length) problems.push(`${missing.length} triggered part(s) never arrived: ${missing.slice(0, 10).join(', ')}${missing.length > 10 ? ', …' : ''}`);
if (unflagged.length) problems.push(`${unflagged.length} duplicate(s) not flagged replayed: ${[...new Set(unflagged)].slice(0, 10).join(', ')}`);
if (crashBad.length) problems.push(`crash fail-safes that are wrong (not a divert, not from a killed boot, or the detail does not name the boot): ${crashBad.join(', ')}`);
if (journal && journal.undecided.length) problems.push(`the journal still holds ${journal.undecided.length} open part(s) after the graceful stop`);
// Without the journal a boot whose parts all vanished would look clean: it ran, so it made parts.
for (const b of perBoot) if (b.maxSeq === 0 && b.source !== 'journal') problems.push(`boot ${b.boot} ran but none of its parts arrived`);
if (extra.length) problems.push(`${extra.length} part id(s) arrived that were never triggered per the journal: ${extra.slice(0, 5).join(', ')}`);
// Parts open in the journal at a kill: each arrives, as 'crash', or with its real result when
// that had reached the outbox just before the kill (then replayed from it, flagged).
const openAtKill = kills.flatMap((k) => k.open);
const openAsCrash = openAtKill.filter((id) => sub.got.get(id)?.some((g) => g.reason === 'crash'));
const openAsResult = openAtKill.filter((id) => !openAsCrash.includes(id) && sub.got.has(id));
const openUnflagged = openAsResult.filter((id) => !sub.got.get(id)![0]!.replayed);
if (openAtKill.some((id) => !sub.got.has(id))) problems.push(`part(s) open at a SIGKILL never arrived: ${openAtKill.filter((id) => !sub.got.has(id)).join(', ')}`);
const result = problems.length ? 'FAIL' : incomplete.length ? 'INCOMPLETE' : 'PASS';

const lines = [
  `faults: ${PARTS} parts planned at ${RATE} parts/s through \`linesight run\` (${args.dist ? 'dist' : 'tsx'}), synthetic camera, interval trigger`,
  `faults: mosquitto ${version}, persistence on; ${broker.restarts} broker restarts, ${KILLS} SIGKILLs (one during a broker outage), 1 graceful stop${drainBoot ? ', 1 drain start' : ''}`,
  `triggered (${journal ? 'from the journal' : 'NOT KNOWN: no journal'}): ${perBoot.map((b) => `${b.boot} seq 1-${b.maxSeq}`).join(', ')} = ${triggered} parts`,
  `received: ${sub.got.size} unique part ids in ${messages} messages; missing ${missing.length}`,
  `crash fail-safes: ${crashIds.length} (${crashPerKill}); parts open in the journal at the kills: ${openAtKill.length} ` +
    `(${openAsCrash.length} arrived as crash, ${openAsResult.length} with their real result from the outbox${openUnflagged.length ? `, ${openUnflagged.length} of them decided in the last ms before the kill` : ''})`,
  `duplicates: ${replays} flagged replayed, ${redeliveries} broker QoS 1 redeliveries (DUP, same bytes), ${unflagged.length} unflagged; ${replayedFirst} parts arrived first as a replay (outbox after a restart or reconnect)`,
  `first message per part: ${Object.entries(reasons)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${v}`)
    .join(', ')}`,
  ...incomplete.map((m) => `INCOMPLETE: ${m}`),
  ...problems.map((m) => `FAIL: ${m}`),
  `result: ${result}`,
];
console.log('');
for (const l of lines) console.log(l);
if (args.out) {
  writeFileSync(args.out, lines.join('\n') + '\n');
  console.log(`(written to ${args.out})`);
}
// A failed run keeps its evidence (agent logs, state, broker files) for a look.
if (args.keep || result === 'FAIL') console.log(`kept: ${work} (agent logs in ${logDir})`);
else rmSync(work, { recursive: true, force: true });
process.exit(result === 'PASS' ? 0 : 1);
