// The operator page in real headless Chromium (Debian's chromium driven by playwright-core):
// it loads, updates while parts flow, and shows a reject with its overlay. Saves a screenshot.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { Agent } from '../../src/agent.js';
import { parseConfig } from '../../src/config/load.js';
import { memoryLogger } from '../../src/log.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
let agent: Agent;
let browser: Browser;

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: apt-get install chromium (or set CHROMIUM_PATH)`);
  const cfg = parseConfig({
    station: { stateDir: mkdtempSync(join(tmpdir(), 'ls-page-')), id: 'press-3', line: 'film-a' },
    camera: { synthetic: { fps: 6, defectRate: 0.6, seed: 3 } },
    line: { travelMs: 300 },
    http: { port: 0 },
  });
  agent = new Agent(cfg, { log: memoryLogger() });
  await agent.start();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  await agent?.stop();
});

test('the operator page shows live counters, the stack light and a reject with its overlay', async () => {
  const page = await browser.newPage({ viewport: { width: 800, height: 480 } }); // a small touchscreen
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(agent.httpUrl!);
  await page.getByTestId('state').filter({ hasText: 'running' }).waitFor({ timeout: 15_000 });
  const first = Number(await page.getByTestId('parts').textContent());
  await page.waitForFunction((n) => Number(document.querySelector('[data-testid=parts]')!.textContent) > n + 2, first, { timeout: 20_000 });
  assert.match((await page.getByTestId('model').textContent()) ?? '', /film-demo@/);
  // A diverted part appears with its image and an overlay canvas with something drawn on it.
  const card = page.locator('#rejects .reject-card').first();
  await card.waitFor({ timeout: 20_000 });
  await page.waitForFunction(() => {
    const img = document.querySelector('#rejects .reject-card img') as HTMLImageElement | null;
    return img !== null && img.complete && img.naturalWidth > 0;
  }, undefined, { timeout: 15_000 });
  const drawn = await page.evaluate(() => {
    const c = document.querySelector('#rejects .reject-card canvas.overlay') as HTMLCanvasElement;
    const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i]! > 0) n++;
    return { width: c.width, painted: n };
  });
  assert.ok(drawn.width > 0, 'overlay sized to the frame');
  const light = await page.evaluate(() => document.body.dataset.light);
  assert.ok(['green', 'amber'].includes(light ?? ''), `stack light ${light}`);
  mkdirSync('test-output', { recursive: true });
  await page.screenshot({ path: 'test-output/operator-page.png', fullPage: true });
  assert.deepEqual(errors, []);
  // Defects found by the model are drawn (boxes or heatmap) on at least one reject.
  const anyPainted = await page.evaluate(() =>
    [...document.querySelectorAll('#rejects canvas.overlay')].some((c) => {
      const cv = c as HTMLCanvasElement;
      const d = cv.getContext('2d')!.getImageData(0, 0, cv.width, cv.height).data;
      for (let i = 3; i < d.length; i += 4) if (d[i]! > 0) return true;
      return false;
    }),
  );
  assert.ok(anyPainted || drawn.painted > 0, 'an overlay was drawn on a reject');
});
