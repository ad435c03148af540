// The stack light beside the station: green = inspecting, amber = degraded (recent fail-safes,
// broker down, outbox backing up), red = fault or stopped; the buzzer sounds after N consecutive
// rejects (a defect that repeats usually means the process upstream went wrong).
import type { AgentState, Bus } from '../bus.js';
import type { GpioOutput } from '../gpio/types.js';

export type Light = 'green' | 'amber' | 'red';

export interface StackLightOutputs {
  green?: GpioOutput;
  amber?: GpioOutput;
  red?: GpioOutput;
  buzzer?: GpioOutput;
}

export interface StackLightState {
  light: Light;
  buzzer: boolean;
  reasons: string[];
}

const RECENT_MS = 30_000;

export class StackLight {
  private state: AgentState = 'starting';
  private lastFailSafe = 0;
  private lastCritical = 0;
  private consecutiveRejects = 0;
  private current: StackLightState = { light: 'red', buzzer: false, reasons: ['starting'] };
  private timer?: NodeJS.Timeout;
  private unsub: (() => void)[] = [];

  constructor(
    private readonly outputs: StackLightOutputs,
    private readonly opts: { buzzerAfterRejects: number; degraded: () => string[]; onChange?: (s: StackLightState) => void },
  ) {}

  start(bus: Bus): void {
    this.unsub.push(
      bus.on('state', (s) => {
        this.state = s;
        this.update();
      }),
      bus.on('decided', (p) => {
        if (p.failSafe) this.lastFailSafe = Date.now();
        this.consecutiveRejects = p.verdict?.verdict === 'reject' && !p.failSafe ? this.consecutiveRejects + 1 : p.failSafe ? this.consecutiveRejects : 0;
        this.update();
      }),
      bus.on('alarm', (a) => {
        if (a.severity === 'critical') this.lastCritical = Date.now();
        this.update();
      }),
    );
    // Recent-window conditions expire without an event: re-evaluate periodically.
    this.timer = setInterval(() => this.update(), 1000);
    this.timer.unref();
    this.update();
  }

  stop(): void {
    for (const u of this.unsub) u();
    this.unsub = [];
    if (this.timer) clearInterval(this.timer);
    this.state = 'stopped';
    this.update();
  }

  snapshot(): StackLightState {
    return { ...this.current, reasons: [...this.current.reasons] };
  }

  private update(): void {
    const now = Date.now();
    const reasons: string[] = [];
    let light: Light = 'green';
    if (this.state !== 'running') {
      light = 'red';
      reasons.push(this.state);
    } else if (now - this.lastCritical < RECENT_MS) {
      light = 'red';
      reasons.push('critical alarm in the last 30 s');
    } else {
      if (now - this.lastFailSafe < RECENT_MS) reasons.push('fail-safe diverts in the last 30 s');
      reasons.push(...this.opts.degraded());
      if (reasons.length > 0) light = 'amber';
    }
    const buzzer = this.consecutiveRejects >= this.opts.buzzerAfterRejects;
    if (buzzer) reasons.push(`${this.consecutiveRejects} rejects in a row`);
    const changed = light !== this.current.light || buzzer !== this.current.buzzer || reasons.join() !== this.current.reasons.join();
    this.current = { light, buzzer, reasons };
    if (!changed) return;
    this.drive(this.outputs.green, light === 'green');
    this.drive(this.outputs.amber, light === 'amber');
    this.drive(this.outputs.red, light === 'red');
    this.drive(this.outputs.buzzer, buzzer);
    this.opts.onChange?.(this.snapshot());
  }

  private drive(out: GpioOutput | undefined, on: boolean): void {
    try {
      out?.writeSync(on ? 1 : 0);
    } catch {
      /* a stack light lamp failing must not stop the line; the divert path reports GPIO errors */
    }
  }
}
