import { createRequire } from 'node:module';

// package.json sits one level above both src/ (tsx) and dist/ (compiled).
const pkg = createRequire(import.meta.url)('../package.json') as { version: string };
export const AGENT_VERSION: string = pkg.version;
