import { MqttPublisher } from './src/publish/mqtt.js';
import { SystemClock } from './src/clock.js';
import { silentLogger } from './src/log.js';
const p = new MqttPublisher({ cfg: { url: 'foo://x', prefix: '', clientId: '', protocolVersion: 4, keepalive: 30, embeddedPort: 0 }, station: { line: 'l', id: 's' }, stateDir: '/tmp/xx-state', clock: new SystemClock(), log: silentLogger });
await p.start().catch((e) => console.log('ERR', e.message));
