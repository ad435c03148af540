// The ffmpeg source against vivid: the fallback camera path when the native addon is absent.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SystemClock } from '../../../src/clock.js';
import { silentLogger } from '../../../src/log.js';
import { FfmpegSource } from '../../../src/camera/ffmpeg.js';
import { hilEnv } from '../lib.js';

const env = hilEnv();
type Cfg = ConstructorParameters<typeof FfmpegSource>[0];

describe('ffmpeg source on vivid', () => {
  for (const colour of ['gray', 'rgb'] as const) {
    test(`${colour} frames from /dev/video0 through ffmpeg's v4l2 input`, async () => {
      const cfg: Cfg = {
        input: env.video,
        inputArgs: ['-f', 'v4l2', '-video_size', '640x360'],
        width: 320,
        height: 180,
        colour,
        ffmpegPath: 'ffmpeg',
        // The first ffmpeg start loads ~100 libraries over 9p under emulation: tens of seconds on
        // a busy host. This checks that frames come through, not how fast.
        stallTimeoutMs: 120_000,
        restartMinMs: 500,
        restartMaxMs: 5000,
      };
      const s = new FfmpegSource(cfg, { clock: new SystemClock(), log: silentLogger });
      await s.start();
      try {
        const frames = [await s.grab(), await s.grab()];
        const ch = colour === 'gray' ? 1 : 3;
        for (const f of frames) {
          assert.equal(f.width, 320);
          assert.equal(f.height, 180);
          assert.equal(f.channels, ch);
          assert.equal(f.data.length, 320 * 180 * ch);
          assert.ok(new Set(f.data.subarray(0, 4000)).size > 8, 'a picture, not a constant');
        }
        assert.ok(frames[1]!.seq > frames[0]!.seq);
        assert.equal(s.stats().restarts, 0);
      } finally {
        await s.stop();
      }
    });
  }
});
