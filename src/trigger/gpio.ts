// GPIO: a photo-eye edge is a part. Edge selection and debounce are the binding's (so the kernel
// or the simulator applies them); the part's time is the edge's time as the binding reports it.
import type { Edge, GpioBinding, GpioInput, LineSpec } from '../gpio/types.js';
import type { Logger } from '../log.js';
import { BaseTrigger } from './base.js';

export interface GpioTriggerOptions {
  edge: Edge;
  debounceMs?: number;
}

export class GpioTrigger extends BaseTrigger {
  readonly kind = 'gpio' as const;
  private input: GpioInput | undefined;
  private unwatch: (() => void) | undefined;
  private starting: Promise<void> | undefined;

  constructor(
    private readonly binding: GpioBinding,
    private readonly spec: LineSpec,
    private readonly opts: GpioTriggerOptions,
    extra: { log?: Logger } = {},
  ) {
    super(extra.log);
  }

  /** Opens the input line (rejects with GpioError when it cannot) and watches it. */
  start(): Promise<void> {
    this.starting ??= (async () => {
      const input = await this.binding.openInput(this.spec, { edge: this.opts.edge, debounceMs: this.opts.debounceMs });
      this.input = input;
      this.unwatch = input.watch((ev) => this.emit({ kind: 'gpio', timeNs: ev.timeNs }));
      this.log.info('photo-eye armed', { chip: this.spec.chip, line: this.spec.line, edge: this.opts.edge, debounceMs: this.opts.debounceMs ?? 0 });
    })().catch((err: unknown) => {
      this.starting = undefined;
      throw err;
    });
    return this.starting;
  }

  async stop(): Promise<void> {
    const starting = this.starting;
    this.starting = undefined;
    if (starting) await starting.catch(() => {}); // let a start in progress finish, then undo it
    this.unwatch?.();
    this.unwatch = undefined;
    const input = this.input;
    this.input = undefined;
    await input?.close();
  }
}
