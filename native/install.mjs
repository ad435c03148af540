#!/usr/bin/env node
// Builds linesight's native addon from source (node-gyp) as part of `npm ci` / `npm install`.
// A failed build is NOT fatal: the agent runs without the addon (onoff GPIO, ffmpeg camera,
// systemd-notify) and says so in its log. Set LINESIGHT_NATIVE_REQUIRED=1 (CI) to make it fatal.
//
//   node native/install.mjs            build unless a loadable build is already there
//   node native/install.mjs --force    rebuild
//
// Offline machines: node-gyp needs Node's headers; they are taken from the local Node install
// (<prefix>/include/node) when npm's nodedir is not set, so nothing is downloaded.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const force = process.argv.includes('--force');
const required = ['1', 'true', 'yes'].includes(String(process.env.LINESIGHT_NATIVE_REQUIRED ?? '').toLowerCase());
const say = (msg) => process.stderr.write(`linesight native: ${msg}\n`);

function give(msg) {
  if (required) {
    say(`${msg} (fatal: LINESIGHT_NATIVE_REQUIRED is set)`);
    process.exit(1);
  }
  say(`${msg}`);
  say('continuing without the addon: the agent will use onoff (GPIO), ffmpeg (camera), systemd-notify and sharp (JPEG).');
  process.exit(0);
}

if (['0', 'off', 'false'].includes(String(process.env.LINESIGHT_NATIVE ?? '').toLowerCase())) {
  say('skipped (LINESIGHT_NATIVE is off)');
  process.exit(0);
}
if (process.platform !== 'linux') {
  give(`skipped: the addon is Linux-only and this is ${process.platform}-${process.arch}`);
}

// jpeglib.h as binding.gyp looks for it (its has_jpeglib): src/jpeg.cc is built only with it.
function hasJpeglib() {
  const probe = "printf '%s\\n' '#include <stdio.h>' '#include <jpeglib.h>' | ${CXX:-c++} -E -x c++ - >/dev/null 2>&1";
  return spawnSync('sh', ['-c', probe], { stdio: 'ignore' }).status === 0;
}
const jpeglib = hasJpeglib();

// The build is reused only when it was made from exactly these sources, with jpeglib.h found or
// not as now (installing it later rebuilds), and loads in this node.
function sourcesHash() {
  const h = createHash('sha256');
  const files = ['binding.gyp', ...readdirSync(join(here, 'src')).sort().map((f) => join('src', f))];
  for (const f of files) h.update(f).update(readFileSync(join(here, f)));
  h.update(`jpeglib ${jpeglib}`);
  return h.digest('hex');
}
const stamp = join(here, 'build', 'Release', 'sources.sha256');
const hash = sourcesHash();

if (!force && existsSync(stamp) && readFileSync(stamp, 'utf8').trim() === hash) {
  try {
    const addon = require('node-gyp-build')(here);
    if (addon && addon.abi === 1 && (addon.jpeg?.available || !required)) {
      say('the build from these sources is already there (use --force to rebuild)');
      process.exit(0);
    }
  } catch {
    // built for another node: rebuild
  }
}

function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not a dependency
  }
  return candidates.find((p) => p && existsSync(p));
}

const nodeGyp = findNodeGyp();
if (!nodeGyp) give('cannot build: node-gyp not found (it ships with npm; run this through npm, or npm i -g node-gyp)');

const args = [nodeGyp, 'rebuild', '--jobs=max'];
const localHeaders = join(dirname(process.execPath), '..', 'include', 'node', 'node_api.h');
if (!process.env.npm_config_nodedir && existsSync(localHeaders)) {
  args.push(`--nodedir=${join(dirname(process.execPath), '..')}`);
}
const started = Date.now();
say(`building from source (node-gyp ${args.slice(1).join(' ')})`);
const r = spawnSync(process.execPath, args, { cwd: here, stdio: ['ignore', 'inherit', 'inherit'] });
if (r.error || r.status !== 0) {
  const why = r.error ? r.error.message : `node-gyp exited with ${r.status}`;
  give(
    `build failed (${why}). Needs a C++17 compiler, make and python3 ` +
      `(Debian/Raspberry Pi OS: sudo apt-get install build-essential python3), then: npm run build:native`,
  );
}
let addon;
try {
  addon = require('node-gyp-build')(here);
  if (!addon || addon.abi !== 1) throw new Error('unexpected exports');
} catch (err) {
  give(`built, but the result does not load: ${err.message.split('\n')[0]}`);
}
// The JPEG decoder is optional (camera.replay.decodeIn: worker falls back to sharp without it),
// except where the addon is required in full (CI).
if (addon.jpeg?.available) say(`JPEG decoder: ${addon.jpeg.version}`);
else if (required) {
  say(`JPEG decoder not built: ${addon.jpeg?.reason} (fatal: LINESIGHT_NATIVE_REQUIRED is set)`);
  process.exit(1);
} else say(`JPEG decoder not built: ${addon.jpeg?.reason}`);
writeFileSync(stamp, hash + '\n');
say(`built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
