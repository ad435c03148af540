// Helpers shared by the benchmark sections: statistics, CPU time, child processes, argument parsing.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const CORES = availableParallelism();

export interface Dist {
  n: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentile of an ascending array. */
export function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export function dist(values: number[]): Dist {
  const s = [...values].sort((a, b) => a - b);
  const mean = s.reduce((a, b) => a + b, 0) / (s.length || 1);
  return { n: s.length, mean: r3(mean), p50: r3(pct(s, 50)), p90: r3(pct(s, 90)), p99: r3(pct(s, 99)), max: r3(s[s.length - 1] ?? NaN) };
}

export const r1 = (x: number): number => Math.round(x * 10) / 10;
export const r2 = (x: number): number => Math.round(x * 100) / 100;
export const r3 = (x: number): number => Math.round(x * 1000) / 1000;

export const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;

/** CPU milliseconds (user + system, all threads of this process) since the last mark. */
export function cpuMeter(): { ms(): number; reset(): void } {
  let start = process.cpuUsage();
  return {
    ms: () => {
      const d = process.cpuUsage(start);
      return (d.user + d.system) / 1000;
    },
    reset: () => {
      start = process.cpuUsage();
    },
  };
}

/** Least-squares slope of y over x. */
export function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  if (n < 2) return 0;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

export function machine(): Record<string, unknown> {
  const c = cpus();
  return {
    cores: CORES,
    cpu: c[0]?.model ?? 'unknown',
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    loadavg: loadavg().map(r2),
  };
}

/** `--key value` / `--flag` arguments. */
export function parseArgs(argv: string[]): Record<string, string | true> {
  const out: Record<string, string | true> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) continue;
    const eq = a.indexOf('=');
    if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1);
    else if (argv[i + 1] !== undefined && !argv[i + 1]!.startsWith('--')) out[a.slice(2)] = argv[++i]!;
    else out[a.slice(2)] = true;
  }
  return out;
}

const BENCH_DIR = fileURLToPath(new URL('.', import.meta.url));

/**
 * Runs bench/<script>.ts in a fresh Node process (its own memory, thread pools and env), passing
 * `params` as JSON; resolves with the JSON object the child writes to its result file.
 */
export async function runChild<T>(
  script: string,
  params: Record<string, unknown>,
  opts: { env?: Record<string, string>; nodeArgs?: string[]; log?: (line: string) => void; timeoutMs?: number; nice?: number } = {},
): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'linesight-bench-'));
  const resultFile = join(dir, 'result.json');
  const args = [...(opts.nodeArgs ?? []), '--import', 'tsx', resolve(BENCH_DIR, `${script}.ts`), JSON.stringify({ ...params, resultFile })];
  try {
    await new Promise<void>((res, rej) => {
      // A raised priority (root only) keeps other jobs on a shared machine from time-slicing the
      // measurement. With sched_autogroup (the default on most distributions) CPU is shared
      // between sessions first and nice only ranks threads within one, so the child gets a session
      // of its own and that session's autogroup gets the nice value too. Every thread of the child
      // (and its broker) inherits it.
      const quoted = [process.execPath, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
      const [cmd, argv] = opts.nice
        ? ['setsid', ['sh', '-c', `echo ${opts.nice} > /proc/self/autogroup 2>/dev/null; exec nice -n ${opts.nice} ${quoted}`]]
        : [process.execPath, args];
      const child = spawn(cmd, argv, { stdio: ['ignore', 'inherit', 'pipe'], env: { ...process.env, ...opts.env } });
      let err = '';
      child.stderr.on('data', (d: Buffer) => {
        const s = d.toString();
        err = (err + s).slice(-8000);
        for (const line of s.split('\n')) if (line.startsWith('[bench]')) opts.log?.(line.slice(8));
      });
      const timer = opts.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : undefined;
      child.on('exit', (code, signal) => {
        if (timer) clearTimeout(timer);
        if (code === 0) res();
        else rej(new Error(`bench/${script}.ts exited with ${signal ?? code}:\n${err.split('\n').filter((l) => !l.startsWith('[bench]')).join('\n').slice(-3000)}`));
      });
    });
    return JSON.parse(readFileSync(resultFile, 'utf8')) as T;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** In a child: its parameters (argv[2] as JSON). */
export function childParams<T>(): T & { resultFile: string } {
  return JSON.parse(process.argv[2] ?? '{}') as T & { resultFile: string };
}

/** In a child: progress lines the parent relays (stderr, prefixed). */
export function progress(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- other load on the machine ------------------------------------------------------------------
// The machine may be shared (other jobs, other engineers' test runs): each section reports how
// many cores *other* processes kept busy while it ran, so a contended result is visible as such.

const CLK_TCK = 100; // Linux USER_HZ

/** Busy CPU time of the whole machine (ms), from /proc/stat. */
export function machineBusyMs(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    const busy = f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + (f[7] ?? 0);
    return (busy * 1000) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** CPU time (ms) of this process and its child processes that are still running (e.g. the broker). */
export function ownTreeCpuMs(): number {
  const own = process.cpuUsage();
  let ms = (own.user + own.system) / 1000;
  try {
    for (const d of readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      let stat: string;
      try {
        stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      } catch {
        continue;
      }
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // fields after comm: state ppid ... utime(14th overall -> index 11 here) stime(12)
      if (Number(rest[1]) !== process.pid) continue;
      ms += ((Number(rest[11]) + Number(rest[12])) * 1000) / CLK_TCK;
    }
  } catch {
    /* not Linux */
  }
  return ms;
}

/** Marks now; foreign() = cores kept busy by other processes since then. */
export function foreignLoad(): { foreign(): number } {
  const t0 = nowMs();
  const busy0 = machineBusyMs();
  const own0 = ownTreeCpuMs();
  return {
    foreign: () => {
      const el = nowMs() - t0;
      const other = machineBusyMs() - busy0 - (ownTreeCpuMs() - own0);
      return el > 0 ? r2(Math.max(0, other / el)) : NaN;
    },
  };
}

/** Waits (at most maxMs) until other processes use less than `cores` cores; returns what it saw last. */
export async function waitQuiet(maxMs: number, cores = 0.3, log?: (m: string) => void): Promise<number> {
  const until = Date.now() + maxMs;
  let told = false;
  for (;;) {
    const b0 = machineBusyMs();
    const o0 = ownTreeCpuMs();
    await sleep(500);
    const busy = (machineBusyMs() - b0 - (ownTreeCpuMs() - o0)) / 500;
    if (!(busy >= cores) || Date.now() >= until) return r2(busy);
    if (!told) log?.(`machine busy (${busy.toFixed(2)} cores used by other processes): waiting up to ${Math.round(maxMs / 1000)} s for it to calm down`);
    told = true;
  }
}
