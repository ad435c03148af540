// Structured JSON logs, one object per line on stderr: journald keeps them as they are and
// `journalctl -o cat | jq` reads them. Secrets never reach a log: keys named like one are masked.

export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const SECRET = /pass(word)?|secret|token|private|key$/i;

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export interface LogSink {
  write(line: string): void;
}

export function redact(value: unknown, depth = 0): unknown {
  if (depth > 6 || value === null || typeof value !== 'object') return value;
  if (value instanceof Error) return { name: value.name, message: value.message };
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    out[k] = SECRET.test(k) && v !== undefined && v !== '' ? '***' : redact(v, depth + 1);
  }
  return out;
}

export function createLogger(
  opts: { level?: Level; sink?: LogSink; base?: Record<string, unknown> } = {},
): Logger {
  const min = ORDER[opts.level ?? 'info'];
  const sink = opts.sink ?? { write: (l: string) => process.stderr.write(l + '\n') };
  const base = opts.base ?? {};
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>): void => {
    if (ORDER[level] < min) return;
    const rec = { time: new Date().toISOString(), level, msg, ...base, ...(redact(fields ?? {}) as object) };
    sink.write(JSON.stringify(rec, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (f) => createLogger({ level: opts.level, sink, base: { ...base, ...f } }),
  };
}

/** A logger that keeps records in memory (tests) . */
export function memoryLogger(): Logger & { records: Record<string, unknown>[] } {
  const records: Record<string, unknown>[] = [];
  const l = createLogger({ level: 'debug', sink: { write: (line) => records.push(JSON.parse(line)) } });
  return Object.assign(l, { records });
}

export const silentLogger: Logger = createLogger({ sink: { write: () => {} }, level: 'error' });
