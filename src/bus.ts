// A typed event bus (the zigbee2mqtt pattern): the loop announces what happened to parts, the
// capabilities around it (MQTT, metrics, operator page, terminal) listen. Nobody calls back into
// the loop through the bus, so a slow listener cannot change a verdict.
import { EventEmitter } from 'node:events';
import type { Part } from './part.js';

export type AlarmKind =
  | 'late' // a part got no verdict by its deadline
  | 'missed' // a part reached the gate before its action could be taken
  | 'late_verdict' // a verdict arrived after the part was already decided
  | 'camera' // camera stalled, restarted or lost
  | 'model_error'
  | 'worker_crash'
  | 'overload'
  | 'gpio'
  | 'outbox'
  | 'mqtt'
  | 'crash' // parts were in flight when the previous run died
  | 'journal' // the trigger journal cannot write
  | 'model' // model lifecycle: swap refused, automatic rollback
  | 'archive' // the reject archive cannot keep up or write
  | 'disk'; // free space below the floor

export interface Alarm {
  kind: AlarmKind;
  severity: 'warning' | 'critical';
  message: string;
  partId?: string;
}

export type AgentState = 'starting' | 'running' | 'paused' | 'stopping' | 'stopped';

export interface BusEvents {
  /** A part was triggered (before its frame and verdict). */
  triggered: [part: Part];
  /** A part was decided: its action is final; published once. */
  decided: [part: Part];
  /** A verdict came back for a part that was already decided (late). */
  lateVerdict: [part: Part];
  /** A divert pulse went on (true) or off (false) at the gate. */
  divert: [on: boolean, timeNs: bigint];
  alarm: [alarm: Alarm];
  state: [state: AgentState];
}

export class Bus {
  private readonly ee = new EventEmitter();
  constructor() {
    // Many capabilities listen; none of them is a leak.
    this.ee.setMaxListeners(50);
  }
  on<K extends keyof BusEvents>(event: K, fn: (...args: BusEvents[K]) => void): () => void {
    this.ee.on(event, fn as (...a: unknown[]) => void);
    return () => this.ee.off(event, fn as (...a: unknown[]) => void);
  }
  emit<K extends keyof BusEvents>(event: K, ...args: BusEvents[K]): void {
    // A throwing listener must not break the loop that emitted.
    for (const fn of this.ee.listeners(event)) {
      try {
        (fn as (...a: unknown[]) => void)(...args);
      } catch (err) {
        process.emitWarning(`linesight bus listener for '${event}' threw: ${(err as Error).message}`);
      }
    }
  }
}
