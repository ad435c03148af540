// Small network helpers shared by the tests, the bench and the HIL scenarios (no package imports:
// the HIL guest loads every package slowly under emulation).
import { createServer } from 'node:net';

/** A TCP port free on 127.0.0.1 right now. */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const addr = srv.address();
  await new Promise<void>((r) => srv.close(() => r()));
  if (!addr || typeof addr !== 'object') throw new Error('no free port');
  return addr.port;
}
