// The whole agent on the native drivers: the GPIO character device (kernel edge timestamps, divert
// pulses from the native thread) and native V4L2 capture from vivid.
import { agentLineScenario } from '../agent-line.js';

agentLineScenario({
  name: 'chardev-v4l2',
  gpio: 'chardev',
  camera: (env) => ({
    source: 'v4l2',
    v4l2: { device: env.video, width: 320, height: 180, format: 'auto', fps: 10, colour: 'gray', stallTimeoutMs: 20_000 },
  }),
});
