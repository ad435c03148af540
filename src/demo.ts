// The demo's live terminal line: what a line engineer looks at first. On a TTY one line is
// redrawn in place; otherwise (CI logs, journald) a line is printed every few seconds.
import type { Agent } from './agent.js';
import type { Config } from './config/schema.js';

const fmt = (n: number | null, d = 1): string => (n === null ? '  -  ' : n.toFixed(d));

export function startDemoDisplay(agent: Agent, cfg: Config, opts: { brokerUrl: string; embedded: boolean; httpUrl?: string }): () => void {
  const out = process.stdout;
  const url = new URL(opts.brokerUrl);
  const prefix = cfg.mqtt.prefix || `linesight/${cfg.station.line}/${cfg.station.id}/`;
  const st = agent.status();
  out.write(
    [
      `linesight demo line — station ${cfg.station.id} on ${cfg.station.line}`,
      `  camera   ${cfg.camera.source} (${cfg.camera.synthetic.width}x${cfg.camera.synthetic.height} film, ${cfg.camera.synthetic.fps} parts/s, ${Math.round(cfg.camera.synthetic.defectRate * 100)} % defective)`,
      `  model    ${st.model ? `${st.model.name}@${st.model.version}` : '?'} on ${st.provider ?? '?'}`,
      `  gate     ${st.travelMs.toFixed(0)} ms after the camera, divert pulse ${cfg.line.pulseMs} ms (sim GPIO)`,
      `  mqtt     ${opts.brokerUrl}${opts.embedded ? ' (embedded broker)' : ''} — watch it: mosquitto_sub -h ${url.hostname} -p ${url.port || 1883} -t '${prefix}#' -v`,
      ...(opts.httpUrl ? [`  operator ${opts.httpUrl}`] : []),
      `  Ctrl-C stops the line (parts in flight are finished, outputs go to their safe state).`,
      '',
    ].join('\n') + '\n',
  );
  let lastPrint = 0;
  const tick = (): void => {
    const s = agent.stats.snapshot();
    const acc = s.truth.accuracy === null ? '  -  ' : `${(s.truth.accuracy * 100).toFixed(1)}%`;
    const line =
      `parts ${s.parts}  ${fmt(s.partsPerS)}/s  pass ${s.pass}  reject ${s.reject}  fail-safe ${s.failSafe}  ` +
      `diverted ${s.diverted}  accuracy ${acc}  latency p50 ${fmt(s.latencyMs.p50)} ms p99 ${fmt(s.latencyMs.p99)} ms`;
    if (out.isTTY) {
      out.write(`\r\x1b[2K${line}`);
    } else if (Date.now() - lastPrint >= 5000) {
      lastPrint = Date.now();
      out.write(line + '\n');
    }
  };
  const timer = setInterval(tick, 500);
  timer.unref();
  return () => clearInterval(timer);
}
