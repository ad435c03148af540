// The whole agent on the fallback drivers: sysfs GPIO through onoff, and vivid through ffmpeg's
// v4l2 input. The agent runs with LINESIGHT_NATIVE=off, as on a device where the native addon could
// not be built (the scenario itself uses the addon, to switch vivid's test pattern and to check
// that the lines are free at the end).
import { agentLineScenario } from '../agent-line.js';

agentLineScenario({
  name: 'onoff-ffmpeg',
  gpio: 'onoff',
  agentEnv: { LINESIGHT_NATIVE: 'off' },
  camera: (env) => ({
    source: 'ffmpeg',
    ffmpeg: {
      input: env.video,
      inputArgs: ['-f', 'v4l2', '-framerate', '10', '-video_size', '320x180'],
      width: 320,
      height: 180,
      colour: 'gray',
      // The first ffmpeg start loads ~100 libraries over 9p under emulation.
      stallTimeoutMs: 60_000,
    },
  }),
});
