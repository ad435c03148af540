// linesight's command line. Exit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration.
import { parseArgs } from 'node:util';
import { AGENT_VERSION } from './version.js';
import { ConfigError, configJsonSchema, loadConfig } from './config/load.js';
import type { Config } from './config/schema.js';
import { createLogger, type Level, type Logger } from './log.js';

const USAGE = `linesight ${AGENT_VERSION} — edge inspection agent for factory lines

Usage:
  linesight run -c FILE              run the inspection agent on a line (config: YAML)
  linesight demo [-c FILE]           a demo line: synthetic film, sim GPIO, embedded MQTT broker
  linesight predict IMAGE|DIR... [--model DIR] [--json]
                                     one verdict per image (JSON lines with --json)
  linesight config check FILE        validate a config file (exit 2 listing every error)
  linesight config schema            print the config's JSON Schema
  linesight train -c TRAIN.yaml      train a model bundle (collect → preprocess → train → evaluate → build)
  linesight models list|pull|verify|sign|keygen|index|serve …
                                     model bundles: registry, cache, signatures (linesight models help)
  linesight eval --model DIR --data DIR
                                     evaluate a bundle on a dataset folder
  linesight --version | --help

Environment: LINESIGHT_<SECTION>__<KEY>=value overrides any config key
(e.g. LINESIGHT_MQTT__URL=mqtt://broker:1883). See README.md.`;

class UsageError extends Error {}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'run':
        return await runCommand(rest, false);
      case 'demo':
        return await runCommand(rest, true);
      case 'predict':
        return await predictCommand(rest);
      case 'config':
        return configCommand(rest);
      case 'train': {
        const { trainCommand } = await import('./train/cli.js');
        return await trainCommand(rest);
      }
      case 'models': {
        const { modelsCommand } = await import('./models/cli.js');
        return await modelsCommand(rest);
      }
      case 'eval': {
        const { evalCommand } = await import('./train/cli.js');
        return await evalCommand(rest);
      }
      case '--version':
      case '-V':
        console.log(AGENT_VERSION);
        return 0;
      case undefined:
      case '--help':
      case '-h':
      case 'help':
        console.log(USAGE);
        return cmd === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command '${cmd}'`);
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      return 2;
    }
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`linesight: ${(err as Error).message}\n\n${USAGE}`);
      return 2;
    }
    console.error(`linesight: ${(err as Error).message}`);
    return 1;
  }
}

function configCommand(args: string[]): number {
  const [sub, file] = args;
  if (sub === 'schema') {
    console.log(JSON.stringify(configJsonSchema(), null, 2));
    return 0;
  }
  if (sub === 'check') {
    if (!file) throw new UsageError('config check needs a FILE');
    const cfg = loadConfig(file);
    console.log(`${file}: ok (camera ${cfg.camera.source}, trigger ${cfg.trigger.mode}, model ${cfg.model.path}, gpio ${cfg.gpio.backend}, mqtt ${cfg.mqtt.url || 'none'})`);
    return 0;
  }
  throw new UsageError(`config needs 'check FILE' or 'schema'`);
}

async function predictCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { model: { type: 'string', default: 'models/film-demo' }, json: { type: 'boolean', default: false }, provider: { type: 'string', multiple: true } },
  });
  if (positionals.length === 0) throw new UsageError('predict needs at least one IMAGE or folder');
  const log = createLogger({ level: 'warn' });
  const { predictFiles } = await import('./inference/predict.js');
  let failures = 0;
  for await (const r of predictFiles(positionals, { modelDir: values.model!, providers: values.provider ?? ['cpu'], log })) {
    if (r.error) failures++;
    if (values.json) {
      console.log(JSON.stringify({ file: r.file, verdict: r.verdict?.verdict ?? null, score: r.verdict?.score ?? null, threshold: r.verdict?.threshold ?? null, defects: r.verdict?.defects ?? [], model: r.model, provider: r.provider, ms: Number(r.ms.toFixed(2)), ...(r.error ? { error: r.error } : {}) }));
    } else if (r.error) {
      console.log(`${r.file}: ERROR ${r.error}`);
    } else {
      const v = r.verdict!;
      console.log(`${r.file}: ${v.verdict.toUpperCase()} score ${v.score.toFixed(4)} (threshold ${v.threshold})${v.defects.length ? `, ${v.defects.length} defect(s): ${v.defects.map((d: { class: string }) => d.class).join(', ')}` : ''}`);
    }
  }
  return failures > 0 ? 1 : 0;
}

async function runCommand(args: string[], demo: boolean): Promise<number> {
  const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' }, verbose: { type: 'boolean', short: 'v', default: false } } });
  if (!demo && !values.config) throw new UsageError('run needs -c FILE (try `linesight demo` for a demo line)');
  const cfg = loadConfig(values.config);
  // The demo's live line is on stdout; its logs stay quiet unless asked for.
  const level: Level = demo && !values.verbose ? 'warn' : cfg.log.level;
  const log = createLogger({ level, base: { station: cfg.station.id } });
  let broker: { url: string; port: number; close(): Promise<void> } | undefined;
  if (demo && !cfg.mqtt.url) {
    const { startEmbeddedBroker } = await import('./publish/broker.js');
    const b = await startEmbeddedBroker({ port: cfg.mqtt.embeddedPort, log: log.child({ mod: 'broker' }) });
    broker = b;
    cfg.mqtt.url = b.url;
  }
  const { Agent } = await import('./agent.js');
  const agent = new Agent(cfg, { log, httpTryNextPorts: demo });
  installExitHandlers(agent, log, async () => broker?.close());
  await agent.start();
  if (demo) {
    const { startDemoDisplay } = await import('./demo.js');
    startDemoDisplay(agent, cfg, { brokerUrl: cfg.mqtt.url, embedded: broker !== undefined, httpUrl: agent.httpUrl });
  }
  return 0; // keeps running (timers, sockets, workers) until a signal
}

function installExitHandlers(agent: import('./agent.js').Agent, log: Logger, after: () => Promise<unknown>): void {
  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) {
      log.warn('second signal: exiting now', { signal });
      agent.safeStateSync();
      process.exit(1);
    }
    stopping = true;
    log.info('stopping', { signal });
    const force = setTimeout(() => {
      log.error('graceful stop took too long: exiting');
      agent.safeStateSync();
      process.exit(1);
    }, 10_000);
    force.unref();
    try {
      await agent.stop();
      await after();
    } finally {
      process.exit(0);
    }
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  // A crash must not leave the diverter energised or the ready line high.
  process.on('uncaughtException', (err) => {
    log.error('uncaught exception: outputs to safe state, exiting', { err: err.message, stack: err.stack });
    agent.safeStateSync();
    process.exit(1);
  });
  process.on('unhandledRejection', (err) => {
    log.error('unhandled rejection: outputs to safe state, exiting', { err: (err as Error)?.message ?? String(err) });
    agent.safeStateSync();
    process.exit(1);
  });
}

export type { Config };

// Run when executed (bin/linesight.js imports this module). One-shot commands exit here (their
// workers would otherwise keep the process alive); run and demo keep going until a signal.
const command = process.argv[2];
const code = await main(process.argv.slice(2));
if (code !== 0 || !['run', 'demo'].includes(command ?? '')) process.exit(code);
