// Shared pieces of the training methods: parameter reading, the input spec, and time-sliced
// progress.
import type { InputSpec } from '../../inference/types.js';

export class MethodParamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MethodParamError';
  }
}

/** Typed reading of `ctx.params` with defaults; unknown keys are refused (typos fail loudly). */
export class Params {
  private readonly used = new Set<string>();
  readonly resolved: Record<string, unknown> = {};

  constructor(
    private readonly method: string,
    private readonly raw: Record<string, unknown>,
  ) {}

  number(key: string, def: number, opts: { min?: number; max?: number; integer?: boolean } = {}): number {
    this.used.add(key);
    const v = this.raw[key] ?? def;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new MethodParamError(`${this.method}: params.${key} must be a number`);
    if (opts.integer && !Number.isInteger(v)) throw new MethodParamError(`${this.method}: params.${key} must be an integer`);
    if (opts.min !== undefined && v < opts.min) throw new MethodParamError(`${this.method}: params.${key} must be >= ${opts.min}`);
    if (opts.max !== undefined && v > opts.max) throw new MethodParamError(`${this.method}: params.${key} must be <= ${opts.max}`);
    this.resolved[key] = v;
    return v;
  }

  string<T extends string>(key: string, def: T, allowed?: readonly T[]): T {
    this.used.add(key);
    const v = this.raw[key] ?? def;
    if (typeof v !== 'string') throw new MethodParamError(`${this.method}: params.${key} must be a string`);
    if (allowed && !allowed.includes(v as T)) throw new MethodParamError(`${this.method}: params.${key} must be one of ${allowed.join(', ')}`);
    this.resolved[key] = v;
    return v as T;
  }

  boolean(key: string, def: boolean): boolean {
    this.used.add(key);
    const v = this.raw[key] ?? def;
    if (typeof v !== 'boolean') throw new MethodParamError(`${this.method}: params.${key} must be true or false`);
    this.resolved[key] = v;
    return v;
  }

  /** Throws on parameters this method does not know. */
  done(): Record<string, unknown> {
    const unknown = Object.keys(this.raw).filter((k) => !this.used.has(k));
    if (unknown.length) throw new MethodParamError(`${this.method}: unknown params ${unknown.join(', ')} (known: ${[...this.used].sort().join(', ')})`);
    return { ...this.resolved };
  }
}

/** The model input: one image resized (letterbox by default) to width x height, 0..1 floats, NCHW. */
export function imageInputSpec(width: number, height: number, colour: 'gray' | 'rgb', resize: 'letterbox' | 'stretch'): InputSpec {
  return { name: 'image', width, height, colour, layout: 'nchw', dtype: 'float32', scale: 1 / 255, resize };
}

/** Calls progress at most every ~250 ms (plus the last call). */
export function throttledProgress(progress: (done: number, total: number, what: string) => void): (done: number, total: number, what: string) => void {
  let last = 0;
  return (done, total, what) => {
    const now = Date.now();
    if (done >= total || now - last >= 250) {
      last = now;
      progress(done, total, what);
    }
  };
}
