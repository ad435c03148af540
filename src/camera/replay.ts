// Replay: a folder of still images played as a camera, for demos, soak tests and evaluating a
// model on a labelled data set (good/, scratch/, … folders give each frame its ground truth).
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { MAX_INPUT_PIXELS } from '../inference/types.js';
import { isJpeg, jpegStatus } from '../native/jpeg.js';
import { resizeStatus } from '../native/resize.js';
import type { Clock } from '../clock.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { Frame, GroundTruth } from '../part.js';
import { FpsMeter, Pacer, Subscribers } from './kit.js';
import { hashSeed, mulberry32 } from './synthetic.js';
import { FrameError, type FrameSource } from './types.js';

const IMAGE = /\.(jpe?g|png)$/i;
/** Free-run decodes at a time: two keep both libvips and the consumer busy on a small device. */
const DECODE_AHEAD = 2;
/** Folders that hold annotations, not line images (e.g. magnetic-tile's masks/, MVTec's ground_truth/). */
const NOT_IMAGES = /^(masks?|ground[-_ ]?truth|annotations?|labels?)$/i;
/** Folder names that mean "defect-free" in the usual data set layouts. */
const GOOD = /^(good|ok|pass|normal|no[-_ ]?defects?|defect[-_ ]?free)$/i;

export interface ReplayItem {
  file: string;
  /** Parent folder name when the layout is labelled. */
  label?: string;
}

/** All images under `root`, sorted by path (code-point order, so it doesn't depend on the locale). */
export async function listImages(root: string): Promise<{ files: string[]; skipped: string[] }> {
  const files: string[] = [];
  const skipped: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true });
    for (const e of entries) {
      if (e.name.startsWith('.')) continue; // .git, .DS_Store, editor droppings
      const p = path.join(dir, e.name);
      let isDir = e.isDirectory();
      let isFile = e.isFile();
      if (e.isSymbolicLink()) {
        const s = await stat(p).catch(() => undefined);
        isDir = !!s?.isDirectory();
        isFile = !!s?.isFile();
      }
      if (isDir) {
        if (NOT_IMAGES.test(e.name)) skipped.push(p);
        else await walk(p);
      } else if (isFile && IMAGE.test(e.name)) files.push(p);
    }
  };
  await walk(root);
  files.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return { files, skipped };
}

/**
 * Labels from the parent folder names, when the folder looks like a labelled data set: every image
 * sits in a sub-folder and one of those is called good/ok/normal… Otherwise no labels.
 */
export function labelItems(root: string, files: string[]): ReplayItem[] {
  const parents = files.map((f) => {
    const rel = path.relative(root, f);
    return rel.includes(path.sep) ? path.basename(path.dirname(f)) : undefined;
  });
  const labelled = parents.length > 0 && parents.every((p) => p !== undefined) && parents.some((p) => GOOD.test(p!));
  return files.map((file, i) => (labelled ? { file, label: parents[i]! } : { file }));
}

export function truthFromLabel(label: string): GroundTruth {
  return GOOD.test(label) ? { verdict: 'pass', defects: [] } : { verdict: 'reject', defects: [label] };
}

/** Deterministic Fisher-Yates. */
export function shuffle<T>(items: readonly T[], seed: number): T[] {
  const out = items.slice();
  const rnd = mulberry32(seed);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** The model input a frame is decoded for (see FrameSource.fitFor). */
export type DecodeFit = { width: number; height: number; resize?: 'stretch' | 'letterbox' };

/** A frame's picture: its pixels, or (decodeIn 'worker') its JPEG for the inference worker. */
type Picture = Pick<Frame, 'width' | 'height' | 'channels' | 'data' | 'encoded'>;

export class ReplaySource implements FrameSource {
  readonly name = 'replay';
  private items: ReplayItem[] = [];
  private order: ReplayItem[] = [];
  private pos = 0;
  private pass = 0;
  private seq = 0;
  private started = false;
  private finished = false;
  private frames = 0;
  private errors = 0;
  private root = '';
  private fit: DecodeFit | undefined;
  /** decodeIn 'worker' with a native decoder: JPEGs go to the inference worker undecoded. */
  private toWorker = false;
  private saidNotJpeg = false;
  /** Free-run decodes in flight, their in-order delivery, and ticks skipped because all were busy. */
  private ahead = 0;
  private delivery: Promise<void> = Promise.resolve();
  private dropped = 0;
  private readonly meter: FpsMeter;
  private readonly pacer: Pacer;
  private readonly subs: Subscribers;
  private readonly log: Logger;

  constructor(
    private readonly cfg: Config['camera']['replay'],
    private readonly deps: { clock: Clock; log: Logger },
  ) {
    this.log = deps.log.child({ component: 'camera', source: 'replay' });
    this.meter = new FpsMeter(deps.clock);
    this.pacer = new Pacer(deps.clock, cfg.fps, () => this.freeRunTick());
    this.subs = new Subscribers((n) => this.syncPacer(n));
  }

  async start(): Promise<void> {
    if (this.started) return;
    if (!this.cfg.dir) {
      throw new Error('replay camera: camera.replay.dir is not set; set it to a folder of JPEG/PNG images');
    }
    const root = path.resolve(this.cfg.dir);
    const st = await stat(root).catch(() => undefined);
    if (!st) {
      throw new Error(
        `replay camera: folder ${root} does not exist; create it or set camera.replay.dir to a folder of JPEG/PNG images`,
      );
    }
    if (!st.isDirectory()) {
      throw new Error(`replay camera: ${root} is not a folder; set camera.replay.dir to a folder of JPEG/PNG images`);
    }
    let listed: { files: string[]; skipped: string[] };
    try {
      listed = await listImages(root);
    } catch (err) {
      throw new Error(`replay camera: cannot read folder ${root}: ${(err as Error).message}; check its permissions`);
    }
    if (listed.files.length === 0) {
      throw new Error(
        `replay camera: no JPEG/PNG images under ${root} (searched recursively); put images there or point camera.replay.dir at the right folder`,
      );
    }
    this.root = root;
    this.items = labelItems(root, listed.files);
    this.pass = 0;
    this.pos = 0;
    this.finished = false;
    this.order = this.orderFor(0);
    this.started = true;
    if (this.cfg.decodeIn === 'worker') {
      const jpeg = jpegStatus();
      this.toWorker = jpeg.available;
      if (!jpeg.available) this.log.info('replay camera: no native JPEG decoder, so images are decoded on the main thread (as decodeIn main)', { reason: jpeg.reason });
      const resize = jpeg.available ? resizeStatus() : undefined;
      if (resize && !resize.available) this.log.warn('replay camera: decodeIn worker without the native resize: the workers resize with sharp (asynchronously)', { reason: resize.reason });
    }
    const labels = [...new Set(this.items.map((i) => i.label).filter((l): l is string => !!l))];
    this.log.info('replay camera started', {
      dir: root,
      images: this.items.length,
      order: this.cfg.order,
      loop: this.cfg.loop,
      labels: labels.length ? labels : undefined,
      skipped: listed.skipped.length ? listed.skipped : undefined,
    });
    this.syncPacer(this.subs.size);
  }

  async stop(): Promise<void> {
    this.started = false;
    this.pacer.stop();
  }

  async grab(): Promise<Frame> {
    if (!this.started) throw new FrameError('replay camera is not started', 'camera');
    if (this.finished) throw this.finishedError();
    // Claim the image before awaiting, so concurrent grabs get different images and a bad file is
    // skipped by the next grab rather than retried for ever.
    const item = this.order[this.pos++]!;
    if (this.pos >= this.order.length) {
      if (this.cfg.loop) {
        this.pass++;
        this.pos = 0;
        this.order = this.orderFor(this.pass);
      } else {
        this.finished = true;
      }
    }
    return this.decode(item);
  }

  fitFor(size: DecodeFit | undefined): void {
    this.fit = size && this.cfg.decodeSize === 'model' ? { ...size } : undefined;
  }

  onFrame(cb: (frame: Frame) => void, onError?: (err: FrameError) => void): () => void {
    return this.subs.add(cb, onError);
  }

  stats(): { frames: number; errors: number; stalls: number; restarts: number; fps: number; dropped: number } {
    return { frames: this.frames, errors: this.errors, stalls: 0, restarts: 0, fps: this.meter.fps(), dropped: this.dropped };
  }

  private orderFor(pass: number): ReplayItem[] {
    // Each loop is reshuffled (deterministically) so a long soak doesn't see one fixed sequence.
    return this.cfg.order === 'shuffle' ? shuffle(this.items, hashSeed(this.cfg.seed, pass)) : this.items;
  }

  private finishedError(): FrameError {
    return new FrameError(
      `replay finished: all ${this.items.length} images of ${this.root} were shown (camera.replay.loop is false)`,
      'camera',
    );
  }

  private async decode(item: ReplayItem): Promise<Frame> {
    let decoded: Picture;
    try {
      decoded = this.toWorker ? await this.encoded(item.file) : await decodeImageFile(item.file, { colour: this.cfg.colour, fit: this.fit });
    } catch (err) {
      this.errors++;
      throw err;
    }
    this.frames++;
    this.meter.tick();
    const frame: Frame = { seq: this.seq++, timeNs: this.deps.clock.nowNs(), ...decoded, source: 'replay', file: item.file };
    if (item.label !== undefined) frame.truth = truthFromLabel(item.label);
    return frame;
  }

  /**
   * decodeIn 'worker': the file's bytes, for the inference worker to decode (the pool fills in the
   * pixels). Anything but a JPEG is decoded here, from the same bytes.
   */
  private async encoded(file: string): Promise<Picture> {
    let bytes: Uint8Array;
    try {
      bytes = await readFile(file);
    } catch (err) {
      throw new FrameError(`replay camera: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 'bad_frame');
    }
    if (!isJpeg(bytes)) {
      if (!this.saidNotJpeg) this.log.info('replay camera: decodeIn worker takes JPEGs only; other images are decoded here', { file });
      this.saidNotJpeg = true;
      return decodeImageFile(file, { colour: this.cfg.colour, fit: this.fit, bytes });
    }
    // Transferred to the worker: it must own its ArrayBuffer (a small file may sit in a shared pool).
    if (bytes.byteOffset !== 0 || bytes.byteLength !== bytes.buffer.byteLength) bytes = new Uint8Array(bytes);
    return {
      width: 0,
      height: 0,
      channels: this.cfg.colour === 'gray' ? 1 : 3,
      data: new Uint8Array(0),
      encoded: { jpeg: bytes, fit: this.fit, onBadFrame: () => void this.errors++ },
    };
  }

  private syncPacer(subscribers: number): void {
    if (this.started && !this.finished && subscribers > 0) this.pacer.start();
    else this.pacer.stop();
  }

  /**
   * Free-run: each tick claims the next image and starts its decode at once; frames are delivered in
   * order, stamped with their tick time. Up to DECODE_AHEAD decodes run at a time, so the rate is
   * `fps`, not one over a decode's latency; a tick that finds them all busy is skipped (counted in
   * `dropped`), as a camera drops frames nobody can take.
   */
  private freeRunTick(): void {
    if (this.ahead >= DECODE_AHEAD) {
      this.dropped++;
      return;
    }
    const tickNs = this.deps.clock.nowNs();
    this.ahead++;
    const decoded = this.grab().then(
      (frame) => ({ frame }),
      (err: unknown) => ({ err: err instanceof FrameError ? err : new FrameError(String(err), 'bad_frame') }),
    );
    const last = this.finished; // the image just claimed was the last one (loop off)
    if (last) this.pacer.stop();
    this.delivery = this.delivery.then(async () => {
      const r = await decoded;
      this.ahead--;
      if (!this.started) return;
      if ('frame' in r) {
        r.frame.timeNs = tickNs;
        this.subs.frame(r.frame);
      } else this.report(r.err);
      // Played out: tell subscribers once, after the last image.
      if (last) this.report(this.finishedError());
    });
  }

  private report(e: FrameError): void {
    if (e.reason === 'bad_frame') this.log.warn('replay camera: bad image skipped', { error: e.message });
    else this.log.info('replay camera: ' + e.message);
    this.subs.error(e);
  }
}

/**
 * An image file as a frame's pixels, as the replay camera decodes it (the bench times this very
 * function). `fit`: decode at the smallest size covering it, aspect kept (see ReplaySource.fitFor).
 * `bytes`: the file's content when it has been read already.
 * Throws FrameError('bad_frame') naming the file and the problem.
 */
export async function decodeImageFile(
  file: string,
  opts: { colour: 'gray' | 'rgb'; fit?: DecodeFit | undefined; bytes?: Uint8Array },
): Promise<{ width: number; height: number; channels: 1 | 3; data: Uint8Array }> {
  const gray = opts.colour === 'gray';
  let decoded;
  try {
    // failOn 'warning': a truncated or damaged file is an error, not a half-grey frame.
    let img = sharp(opts.bytes ?? file, { failOn: 'warning', limitInputPixels: MAX_INPUT_PIXELS }).autoOrient().removeAlpha();
    // At least the model's input on both sides, aspect kept: libjpeg then decodes at 1/2, 1/4 or 1/8
    // scale (shrink-on-load), and the model's own resize works on a frame 4–16× smaller.
    // A letterboxing model scales the frame to fit inside its input: the frame need only cover that.
    // Bilinear, as the model's own resize (preprocess.ts): sharp's default lanczos3 sharpens, and a
    // model that looks at texture sees it (film-demo rejected 106 of 213 good replayed frames).
    if (opts.fit) {
      const fit = opts.fit.resize === 'letterbox' ? 'inside' : 'outside';
      img = img.resize({ width: opts.fit.width, height: opts.fit.height, fit, withoutEnlargement: true, kernel: 'linear' });
    }
    img = gray ? img.grayscale() : img.toColourspace('srgb');
    decoded = await img.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw new FrameError(`replay camera: cannot decode ${file}: ${(err as Error).message}`, 'bad_frame');
  }
  const { data, info } = decoded;
  const channels = gray ? 1 : 3;
  if (info.channels !== channels || data.length !== info.width * info.height * channels) {
    throw new FrameError(
      `replay camera: ${file} decoded to ${info.width}x${info.height}x${info.channels} (${data.length} bytes), expected ${channels} channel(s)`,
      'bad_frame',
    );
  }
  return { width: info.width, height: info.height, channels, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}
