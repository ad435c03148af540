#!/usr/bin/env node
// Thin launcher: the CLI is compiled to dist/ by `npm ci` (the prepare script runs tsc).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
if (!existsSync(cli)) {
  console.error('linesight: dist/cli.js is missing. Run `npm ci` (or `npm run build`) in the checkout first.');
  process.exit(1);
}
await import(cli);
