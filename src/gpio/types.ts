// Hardware behind a small interface passed in (the serialport bindings pattern): the line code
// knows GpioBinding; sim, onoff (sysfs) and the native character-device binding implement it.

export type Edge = 'rising' | 'falling' | 'both';

/** A line is named by its chip (label like 'pinctrl-bcm2835' or path '/dev/gpiochip0') and offset. */
export interface LineSpec {
  chip: string;
  line: number;
  /** Invert the electrical level (the output is active when the pin is low). */
  activeLow?: boolean;
}

export interface EdgeEvent {
  /** 1 after a rising edge, 0 after a falling edge (logical, after activeLow). */
  value: 0 | 1;
  /** Monotonic time of the edge (ns); the kernel's when the binding has it. */
  timeNs: bigint;
}

export interface GpioInput {
  read(): Promise<0 | 1>;
  /** Edge callbacks; debounce is applied by the binding. Returns an unsubscribe function. */
  watch(cb: (ev: EdgeEvent) => void): () => void;
  close(): Promise<void>;
}

export interface GpioOutput {
  write(value: 0 | 1): Promise<void>;
  /** Synchronous write, for the safe-state path on exit where no promise will be awaited. */
  writeSync(value: 0 | 1): void;
  read(): Promise<0 | 1>;
  close(): Promise<void>;
}

export interface GpioBinding {
  readonly name: string;
  openInput(spec: LineSpec, opts: { edge: Edge; debounceMs?: number }): Promise<GpioInput>;
  openOutput(spec: LineSpec, opts: { initial: 0 | 1 }): Promise<GpioOutput>;
  close(): Promise<void>;
  /** Bindings with a native pulse engine: why it is (not) in use, for the log. */
  readonly pulseEngine?: { reason: string };
  /** Bindings with a native pulse engine: whether this output is driven by it (an onoff line whose value file could not be opened is not). */
  hasNativePulses?(output: GpioOutput): boolean;
}

export class GpioError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GpioError';
  }
}
