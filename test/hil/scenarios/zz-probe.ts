import { execFileSync } from 'node:child_process';
import { hilEnv } from '../lib.js';
const env = hilEnv();
const t = (name: string, args: string[]) => {
  const t0 = Date.now();
  try { execFileSync(process.execPath, args, { cwd: env.root, stdio: 'pipe' }); } catch (e) { console.log(`    ${name}: error ${(e as Error).message.slice(0, 200)}`); }
  console.log(`    ${name}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
};
t('node -e 1', ['-e', '1']);
t('cli --version', [env.agent, '--version']);
t('cli --version (again)', [env.agent, '--version']);
t('cli --version source maps', ['--enable-source-maps', env.agent, '--version']);
t('import onnxruntime-node', ['-e', "await import('onnxruntime-node')", '--input-type=module']);
t('import sharp', ['--input-type=module', '-e', "await import('sharp')"]);
t('import mqtt', ['--input-type=module', '-e', "await import('mqtt')"]);
t('import aedes', ['--input-type=module', '-e', "await import('aedes')"]);
t('import prom-client', ['--input-type=module', '-e', "await import('prom-client')"]);
t('import agent bundle modules (config check)', [env.agent, 'config', 'check', '/dev/null']);
t('predict', [env.agent, 'predict', 'models/film-demo', '--model', 'models/film-demo']);
t('tsx --version', ['--import', 'tsx', 'src/cli.ts', '--version']);
console.log('PASS probe');
