// Bundles HIL scenarios (TypeScript) into one ESM file each with esbuild, so the guest runs plain
// node (no TypeScript loader under emulation). Packages stay external: they resolve from the
// checkout's node_modules, which the guest sees over 9p.
import { build } from 'esbuild';

const [outdir, ...entryPoints] = process.argv.slice(2);
if (!outdir || entryPoints.length === 0) {
  console.error('usage: node test/hil/bundle.mjs OUTDIR scenario.ts...');
  process.exit(2);
}
await build({
  entryPoints,
  outdir,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  packages: 'external',
  sourcemap: 'inline',
  outExtension: { '.js': '.mjs' },
  logLevel: 'warning',
  banner: { js: "import { createRequire as __hilRequire } from 'node:module'; const require = __hilRequire(import.meta.url);" },
});
