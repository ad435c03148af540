// An in-process MQTT broker (aedes) for the demo and for tests on a machine without Mosquitto.
// aedes 1.x speaks MQTT 3.1.1 (and 3.1) only: a client asking for MQTT 5 is refused with
// "unacceptable protocol version", so use mqtt.protocolVersion 4 against it.
import { createServer, type Server, type Socket } from 'node:net';
import { Aedes } from 'aedes';
import { silentLogger, type Logger } from '../log.js';

export interface EmbeddedBroker {
  port: number;
  url: string;
  close(): Promise<void>;
}

export interface EmbeddedBrokerOptions {
  /** 0 = any free port. */
  port: number;
  host?: string;
  /** When the port is taken, try the next ones (up to 20). */
  tryNextPorts?: boolean;
  log?: Logger;
}

const TRIES = 20;

export async function startEmbeddedBroker(opts: EmbeddedBrokerOptions): Promise<EmbeddedBroker> {
  const host = opts.host ?? '127.0.0.1';
  const log = opts.log ?? silentLogger;
  const broker = await Aedes.createBroker();
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    broker.handle(socket);
  });
  broker.on('clientError', (client, err) => log.debug('broker: client error', { clientId: client?.id, error: err.message }));
  broker.on('connectionError', (_client, err) => log.debug('broker: connection error', { error: err.message }));

  let port = opts.port;
  const last = opts.tryNextPorts === false || port === 0 ? port : Math.min(65535, port + TRIES - 1);
  for (;;) {
    try {
      port = await listen(server, port, host);
      break;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EADDRINUSE' || port >= last) {
        await new Promise<void>((r) => broker.close(() => r()));
        const hint = code === 'EADDRINUSE' ? `: set mqtt.embeddedPort to a free port (or 0 for any)` : '';
        throw new Error(`embedded MQTT broker cannot listen on ${host}:${port} (${(e as Error).message})${hint}`);
      }
      log.info('broker: port taken, trying the next', { port });
      port += 1;
    }
  }
  const url = `mqtt://${host}:${port}`;
  log.info('embedded MQTT broker listening (MQTT 3.1.1)', { url });
  let closing: Promise<void> | undefined;
  return {
    port,
    url,
    close: () =>
      (closing ??= (async () => {
        const closed = new Promise<void>((r) => server.close(() => r()));
        for (const s of sockets) s.destroy();
        await closed;
        await new Promise<void>((r) => broker.close(() => r()));
        log.info('embedded MQTT broker closed', { url });
      })()),
  };
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => {
      server.off('listening', onListening);
      reject(e);
    };
    const onListening = (): void => {
      server.off('error', onError);
      const addr = server.address();
      resolve(typeof addr === 'object' && addr ? addr.port : port);
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, host);
  });
}
