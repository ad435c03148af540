// What a worker-local pipeline would reach (docs/performance.md, "Encoded frames to the workers"):
// N worker threads, each taking the bench's JPEG bytes, decoding them at the model's size as the
// replay camera does (src/camera/replay.ts decodeImageFile), preparing, converting and running the
// model on one intra-op thread, one part after the other. No loop, MQTT or outbox: a limit to compare
// the agent with, not the agent. --decoder native: the file read, then decoded and resized on the
// worker's own thread by the native addon (libjpeg-turbo, prepareInputSync), as the agent's
// inference worker does with camera.replay.decodeIn: worker (src/inference/worker.ts); sharp (the
// default) decodes and resizes on libuv threads.
//
//   npx tsx bench/worker-pipeline.ts [--model resnet18|yolov8n|film-demo] [--workers 2] [--seconds 10] [--decoder sharp|native]
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

interface Init {
  modelDir: string;
  files: string[];
  decoder: 'sharp' | 'native';
}

if (isMainThread) {
  const { values: a } = parseArgs({
    options: {
      model: { type: 'string', default: 'resnet18' },
      workers: { type: 'string', default: '2' },
      seconds: { type: 'string', default: '10' },
      decoder: { type: 'string', default: 'sharp' },
    },
  });
  const decoder = a.decoder as Init['decoder'];
  if (decoder !== 'sharp' && decoder !== 'native') throw new Error(`--decoder ${decoder}: use sharp or native`);
  if (decoder === 'native') {
    const { jpegStatus } = await import('../src/native/jpeg.js');
    const s = jpegStatus();
    if (!s.available) throw new Error(`--decoder native: ${s.reason}`);
    const r = (await import('../src/native/resize.js')).resizeStatus();
    if (!r.available) console.warn(`--decoder native: resizing with sharp (${r.reason})`);
  }
  const { ensureModel, FRAME } = await import('./models.js');
  const { ensureImages } = await import('./images.js');
  const key = a.model as 'resnet18' | 'yolov8n' | 'film-demo';
  const images = await ensureImages(FRAME[key].width, FRAME[key].height);
  const m = await ensureModel(key, images.files);
  const n = Number(a.workers);
  const seconds = Number(a.seconds);
  // Worker threads do not inherit the tsx loader: register it first (as src/inference/pool.ts does).
  const tsxApi = import.meta.resolve('tsx/esm/api');
  const boot = `import(${JSON.stringify(tsxApi)}).then((t) => t.register()).then(() => import(${JSON.stringify(import.meta.url)}))`;
  let parts = 0;
  let ready = 0;
  const workers = Array.from({ length: n }, () => new Worker(boot, { eval: true, workerData: { modelDir: m.dir, files: images.files, decoder } satisfies Init }));
  await new Promise<void>((resolve, reject) => {
    for (const w of workers) {
      w.on('error', reject);
      w.on('message', (msg: string) => {
        if (msg === 'part') parts++;
        else if (msg === 'ready' && ++ready === n) resolve();
      });
    }
  });
  for (const w of workers) w.postMessage('go');
  await new Promise((r) => setTimeout(r, 2000)); // warm-up
  const p0 = parts;
  const c0 = process.cpuUsage();
  const t0 = Date.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const s = (Date.now() - t0) / 1000;
  const cpu = process.cpuUsage(c0);
  console.log(`${key}: ${n} worker(s), ${decoder} decode+prepare+run serially in each: ${((parts - p0) / s).toFixed(1)} parts/s, ${((cpu.user + cpu.system) / 1e6 / s).toFixed(2)} cores (${s.toFixed(1)} s)`);
  for (const w of workers) w.postMessage('stop');
  await Promise.all(workers.map((w) => new Promise((r) => w.once('exit', r))));
} else {
  const init = workerData as Init;
  const ort = await import('onnxruntime-node');
  const { decodeImageFile } = await import('../src/camera/replay.js');
  const { decodeJpegSync } = await import('../src/native/jpeg.js');
  const { jpegDecodeFit, prepareInput, prepareInputSync, toTensor } = await import('../src/inference/preprocess.js');
  const { resizeStatus } = await import('../src/native/resize.js');
  const syncResize = init.decoder === 'native' && resizeStatus().available;
  const manifest = JSON.parse(readFileSync(`${init.modelDir}/model.json`, 'utf8'));
  const spec = manifest.input;
  const session = await ort.InferenceSession.create(`${init.modelDir}/model.onnx`, { intraOpNumThreads: 1, graphOptimizationLevel: 'all' });
  const fit = spec.crop ? undefined : { width: spec.width, height: spec.height, resize: spec.resize ?? 'stretch' };
  let stop = false;
  parentPort!.on('message', (msg: string) => {
    if (msg === 'stop') stop = true;
  });
  parentPort!.postMessage('ready');
  await new Promise((r) => parentPort!.once('message', r));
  // Stop between parts: ending a thread inside session.run aborts the process.
  for (let i = 0; !stop; i++) {
    const file = init.files[i % init.files.length]!;
    const colour = spec.colour === 'gray' ? 'gray' : 'rgb';
    const d = init.decoder === 'native' ? decodeJpegSync(await readFile(file), { colour, fit: jpegDecodeFit(fit) }) : await decodeImageFile(file, { colour, fit });
    const frame = { seq: i, timeNs: 0n, ...d, source: 'bench' };
    const prepared = syncResize ? prepareInputSync(frame, spec) : await prepareInput(frame, spec);
    const t = toTensor(prepared.pixels, prepared.channels, spec);
    await session.run({ [spec.name]: new ort.Tensor(spec.dtype, t.data, t.dims) });
    parentPort!.postMessage('part');
  }
  await session.release();
  parentPort!.close();
}
