// `linesight predict`: verdicts for image files and folders, through the same pool, preprocessing
// and heads as the line, so a bundle can be checked on sample images before it goes on a line.
import { readdir, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { InferencePool } from './pool.js';
import { decodeImageFile } from './image.js';
import type { Defect, ModelRef, Verdict } from '../part.js';
import type { Logger } from '../log.js';

export interface PredictResult {
  file: string;
  verdict?: Verdict;
  score?: number;
  defects?: Defect[];
  /** Why this file has no verdict (unreadable image, model error). */
  error?: string;
  model: ModelRef;
  provider: string;
  /** Decode + inspect time for this file. */
  ms: number;
}

export interface PredictOptions {
  modelDir: string;
  providers?: string[];
  log: Logger;
}

const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.bmp']);

/**
 * One result per image, in order: folders are searched recursively for jpg/jpeg/png/bmp (sorted),
 * named files are taken whatever their extension. A file that cannot be read or inspected gives a
 * result with `error`; the others go on. A bundle that cannot load throws ModelLoadError.
 */
export async function* predictFiles(files: string[], opts: PredictOptions): AsyncGenerator<PredictResult> {
  const pool = new InferencePool({
    modelDir: opts.modelDir,
    providers: opts.providers ?? ['cpu'],
    workers: 1,
    intraOpThreads: 0,
    queueLimit: 1,
    log: opts.log,
  });
  await pool.start();
  try {
    const { model, provider, manifest } = pool.info();
    const colour = manifest.input.colour === 'gray' ? 'gray' : 'rgb';
    for await (const entry of expand(files)) {
      const t0 = process.hrtime.bigint();
      const ms = (): number => Number(process.hrtime.bigint() - t0) / 1e6;
      if (entry.error) {
        yield { file: entry.file, error: entry.error, model, provider, ms: 0 };
        continue;
      }
      try {
        const frame = await decodeImageFile(entry.file, { colour, source: 'predict' });
        const r = await pool.inspect(frame, { priority: 'api' });
        yield { file: entry.file, verdict: r.verdict, score: r.verdict.score, defects: r.verdict.defects, model, provider: r.provider, ms: ms() };
      } catch (err) {
        yield { file: entry.file, error: err instanceof Error ? err.message : String(err), model, provider, ms: ms() };
      }
    }
  } finally {
    await pool.stop();
  }
}

/** Files named, and image files found under folders named, in order. */
async function* expand(paths: string[]): AsyncGenerator<{ file: string; error?: string }> {
  for (const path of paths) {
    let isDir: boolean;
    try {
      isDir = (await stat(path)).isDirectory();
    } catch (err) {
      yield { file: path, error: `${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or folder' : (err as Error).message}` };
      continue;
    }
    if (!isDir) {
      yield { file: path };
      continue;
    }
    const found = await walk(path);
    if (found.length === 0) yield { file: path, error: `${path}: no jpg/jpeg/png/bmp images in this folder` };
    for (const file of found) yield { file };
  }
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  const entries = await readdir(dir, { withFileTypes: true });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    // Dotfiles (macOS ._ forks, editor temp files) are not images even when named like one.
    else if (e.isFile() && !e.name.startsWith('.') && IMAGE_EXTENSIONS.has(extname(e.name).toLowerCase())) out.push(p);
  }
  return out;
}
