// Bundles HIL scenarios (TypeScript) into one ESM file each with esbuild, so the guest runs plain
// node (no TypeScript loader under emulation). Packages stay external: they resolve from the
// checkout's node_modules, which the guest sees over 9p.
//
// It also bundles the agent's CLI for the whole-agent scenarios: OUTDIR/agent/cli.js (what
// `linesight run -c FILE` runs) and OUTDIR/agent/inference/worker.js (the inference worker thread,
// which the pool starts from next to itself, as in dist/).
//
// A bundled module of src/ sees its own source file as import.meta.url, not the bundle's: the
// sources find package.json, docs/ and native/ relative to themselves, and the "am I the main
// module?" checks (src/publish/schemas.ts) must not fire inside a bundle. The one exception is
// src/inference/pool.ts, which starts ./worker.js next to itself: it sees its place in the agent
// bundle, where that worker is bundled.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';

const [outdir, ...entryPoints] = process.argv.slice(2);
if (!outdir || entryPoints.length === 0) {
  console.error('usage: node test/hil/bundle.mjs OUTDIR scenario.ts...');
  process.exit(2);
}
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const src = join(root, 'src') + sep;
const agentDir = resolve(outdir, 'agent');
const inAgentBundle = { [join('inference', 'pool.ts')]: join(agentDir, 'inference', 'pool.js') };

/** import.meta.url of each src/ module = its source file (see above). */
const sourceImportMeta = {
  name: 'source-import-meta-url',
  setup(b) {
    b.onLoad({ filter: /\.ts$/ }, async (args) => {
      if (!args.path.startsWith(src)) return undefined;
      const text = await readFile(args.path, 'utf8');
      if (!text.includes('import.meta.url')) return undefined;
      const url = pathToFileURL(inAgentBundle[relative(src, args.path)] ?? args.path).href;
      return { contents: text.replaceAll('import.meta.url', JSON.stringify(url)), loader: 'ts' };
    });
  },
};

const common = {
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  packages: 'external',
  sourcemap: 'inline',
  logLevel: 'warning',
  plugins: [sourceImportMeta],
  banner: { js: "import { createRequire as __hilRequire } from 'node:module'; const require = __hilRequire(import.meta.url);" },
};

// Split into chunks, so that a scenario's dynamic imports stay lazy (see the agent's below).
await build({ ...common, entryPoints, outdir, splitting: true, outExtension: { '.js': '.mjs' } });
// The worker must be ./worker.js (as in dist/): mark the folder's .js files as ES modules.
await mkdir(agentDir, { recursive: true });
await writeFile(join(agentDir, 'package.json'), '{ "type": "module" }\n');
// Split into chunks: the CLI's dynamic imports stay dynamic, so `run` loads only what the agent
// needs (not the trainer's or the model tools' packages: every package costs seconds under TCG).
await build({
  ...common,
  entryPoints: { cli: join(root, 'src/cli.ts'), 'inference/worker': join(root, 'src/inference/worker.ts') },
  outdir: agentDir,
  splitting: true,
  sourcemap: 'linked',
});
