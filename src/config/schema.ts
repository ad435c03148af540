// The one source of truth for configuration: this TypeBox schema is JSON Schema (printed by
// `linesight config schema`), its defaults fill a partial YAML file, and the TS types come from it.
import { Type as T, type Static } from '@sinclair/typebox';

const Name = T.String({ minLength: 1, pattern: '^[A-Za-z0-9_.-]+$', description: 'letters, digits, _ . -' });
const Ms = (def: number, description: string, min = 0) => T.Number({ minimum: min, default: def, description });

export const LineSpecSchema = T.Object(
  {
    chip: T.String({ minLength: 1, description: "chip label (e.g. 'pinctrl-bcm2835', 'gpio-sim.0-node0') or path ('/dev/gpiochip0')" }),
    line: T.Integer({ minimum: 0, description: 'offset of the line on that chip (not a global sysfs number)' }),
    activeLow: T.Boolean({ default: false }),
  },
  { additionalProperties: false },
);

export const ConfigSchema = T.Object(
  {
    station: T.Object(
      {
        line: T.String({ ...Name, default: 'line1', description: 'production line name (MQTT topic level)' }),
        id: T.String({ ...Name, default: 'station1', description: 'inspection station id (MQTT topic level, part ids)' }),
        stateDir: T.String({ default: './var', description: 'where the agent keeps its state (boot counter, outbox, archive)' }),
      },
      { additionalProperties: false, default: {} },
    ),
    camera: T.Object(
      {
        source: T.Union([T.Literal('synthetic'), T.Literal('replay'), T.Literal('ffmpeg'), T.Literal('v4l2')], {
          default: 'synthetic',
          description: 'synthetic: generated film with ground truth; replay: image folder; ffmpeg: any ffmpeg input; v4l2: native capture (needs the addon)',
        }),
        firstFrameTimeoutMs: Ms(
          15000,
          'live cameras (ffmpeg, v4l2): the agent reports ready only after the first frame; none within this long = start fails (systemd restarts it)',
          100,
        ),
        synthetic: T.Object(
          {
            width: T.Integer({ minimum: 32, maximum: 4096, default: 320 }),
            height: T.Integer({ minimum: 32, maximum: 4096, default: 240 }),
            seed: T.Integer({ default: 1 }),
            defectRate: T.Number({ minimum: 0, maximum: 1, default: 0.2, description: 'share of parts with a defect' }),
            fps: T.Number({ exclusiveMinimum: 0, maximum: 1000, default: 4, description: 'frame rate in free-run' }),
          },
          { additionalProperties: false, default: {} },
        ),
        replay: T.Object(
          {
            dir: T.String({ default: '', description: 'folder of JPEG/PNG images (searched recursively)' }),
            order: T.Union([T.Literal('sorted'), T.Literal('shuffle')], { default: 'sorted' }),
            loop: T.Boolean({ default: true }),
            seed: T.Integer({ default: 1, description: 'shuffle seed' }),
            fps: T.Number({ exclusiveMinimum: 0, maximum: 1000, default: 4, description: 'frame rate in free-run' }),
            colour: T.Union([T.Literal('gray'), T.Literal('rgb')], { default: 'rgb' }),
            decodeSize: T.Union([T.Literal('model'), T.Literal('full')], {
              default: 'model',
              description:
                "model: decode each image at the smallest size that still covers the model's input (JPEG shrink-on-load; not when the model crops), so frames, boxes and archived rejects are at that size; full: every pixel of the file",
            }),
            decodeIn: T.Union([T.Literal('main'), T.Literal('worker')], {
              default: 'worker',
              description:
                "main: sharp decodes each image before its part is queued; worker: the inference worker that runs the part decodes its JPEG on its own thread (native libjpeg-turbo decoder), so each core decodes, prepares and infers in turn (faster on every bench model: docs/performance.md). Non-JPEG files, or no native decoder, are decoded as with main (logged once). A part diverted before its inference has no pixels to archive",
            }),
          },
          { additionalProperties: false, default: {} },
        ),
        ffmpeg: T.Object(
          {
            input: T.String({ default: '', description: "ffmpeg input: '/dev/video0', 'rtsp://…', a file, or a lavfi graph" }),
            inputArgs: T.Array(T.String(), { default: [], description: "ffmpeg arguments before -i (e.g. ['-f','v4l2'])" }),
            width: T.Integer({ minimum: 16, maximum: 8192, default: 640 }),
            height: T.Integer({ minimum: 16, maximum: 8192, default: 480 }),
            colour: T.Union([T.Literal('gray'), T.Literal('rgb')], { default: 'rgb' }),
            ffmpegPath: T.String({ default: 'ffmpeg' }),
            stallTimeoutMs: Ms(2000, 'no frame for this long = stalled: ffmpeg is restarted', 50),
            restartMinMs: Ms(250, 'first restart backoff'),
            restartMaxMs: Ms(10000, 'longest restart backoff'),
          },
          { additionalProperties: false, default: {} },
        ),
        v4l2: T.Object(
          {
            device: T.String({ default: '/dev/video0' }),
            width: T.Integer({ minimum: 16, maximum: 8192, default: 640 }),
            height: T.Integer({ minimum: 16, maximum: 8192, default: 480 }),
            format: T.Union([T.Literal('auto'), T.Literal('YUYV'), T.Literal('MJPG'), T.Literal('GREY'), T.Literal('RGB3')], { default: 'auto' }),
            fps: T.Optional(T.Number({ exclusiveMinimum: 0, maximum: 1000 })),
            colour: T.Union([T.Literal('gray'), T.Literal('rgb')], { default: 'rgb' }),
            buffers: T.Integer({ minimum: 2, maximum: 32, default: 4 }),
            controls: T.Record(T.String(), T.Number(), { default: {}, description: "set at start: exposure, gain, or a driver control by name ('Brightness')" }),
            stallTimeoutMs: Ms(2000, 'no frame for this long = stalled: the device is reopened', 50),
            restartMinMs: Ms(250, 'first reopen backoff'),
            restartMaxMs: Ms(10000, 'longest reopen backoff'),
          },
          { additionalProperties: false, default: {} },
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    trigger: T.Object(
      {
        mode: T.Union([T.Literal('freerun'), T.Literal('interval'), T.Literal('gpio'), T.Literal('command')], {
          default: 'freerun',
          description: 'freerun: every frame is a part; interval: a part every intervalMs; gpio: photo-eye edge; command: MQTT/HTTP cmd/trigger only',
        }),
        intervalMs: Ms(250, 'interval mode: time between parts', 1),
        gpio: T.Object(
          {
            input: T.Optional(LineSpecSchema),
            edge: T.Union([T.Literal('rising'), T.Literal('falling')], { default: 'rising' }),
            debounceMs: Ms(5, 'edges closer than this to the previous accepted edge are ignored'),
          },
          { additionalProperties: false, default: {} },
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    model: T.Object(
      {
        path: T.String({ default: 'models/film-demo', description: 'model bundle folder (model.onnx + model.json)' }),
        providers: T.Array(T.Union([T.Literal('cuda'), T.Literal('tensorrt'), T.Literal('dml'), T.Literal('webgpu'), T.Literal('cpu')]), {
          default: ['cpu'],
          minItems: 1,
          description: 'execution providers in order of preference; the next is tried when one fails to load',
        }),
        workers: T.Integer({ minimum: 1, maximum: 64, default: 1, description: 'inference worker threads' }),
        intraOpThreads: T.Integer({ minimum: 0, maximum: 256, default: 0, description: 'threads per worker; 0 = onnxruntime default (all cores) with one worker, cores ÷ workers with several (workers × threads above the cores fight each other: docs/performance.md)' }),
        queueLimit: T.Integer({ minimum: 1, maximum: 10000, default: 8, description: 'frames waiting for a worker before overload' }),
        workerNice: T.Integer({
          minimum: 0,
          maximum: 19,
          default: 5,
          description: 'Linux: inference workers run this many nice levels below the main thread, so a saturated CPU still serves divert timing, MQTT and HTTP first (0 = same priority)',
        }),
        ref: T.Optional(T.String({ minLength: 1, description: "model to run: 'name@1.2.0', 'name@latest' or a bundle folder; overrides path" })),
        registry: T.String({ default: '', description: "model registry: http(s) URL or folder (index.json, NAME/VERSION/…); empty = device-local only" }),
        registryToken: T.Optional(T.String({ description: 'bearer token sent to a private registry' })),
        bundledDir: T.String({ default: 'models', description: 'bundles shipped with the agent (model-in-image)' }),
        cacheDir: T.String({ default: '', description: "pulled bundles; empty = '<station.stateDir>/models'" }),
        cacheMaxBytes: T.Integer({ minimum: 1, default: 2 * 1024 ** 3, description: 'size bound of the cache: least recently used bundles are evicted (never active/previous/shadow)' }),
        publicKey: T.Optional(T.String({ description: 'ed25519 public key (PEM file): when set, only bundles with a valid model.json.sig load' })),
        pullTimeoutMs: Ms(30000, 'registry: no response or no bytes for this long = unreachable (then the cache is used)', 1),
        shadow: T.Optional(
          T.Object(
            {
              ref: T.String({ minLength: 1, description: 'candidate run beside the active model; its verdicts go to <prefix>shadow only' }),
              everyN: T.Integer({ minimum: 1, default: 1, description: 'run it on every Nth part' }),
            },
            { additionalProperties: false },
          ),
        ),
        rollback: T.Object(
          {
            window: T.Integer({ minimum: 0, default: 200, description: 'parts watched after a model is activated; 0 = no automatic rollback' }),
            maxRejectRate: T.Number({ minimum: 0, maximum: 1, default: 0.5, description: 'roll back when the new model rejects more than this share of the window' }),
            maxFailSafeRate: T.Number({ minimum: 0, maximum: 1, default: 0.1, description: 'roll back when more than this share of the window is diverted fail-safe by inference' }),
          },
          { additionalProperties: false, default: {} },
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    line: T.Object(
      {
        travelMs: T.Optional(T.Number({ minimum: 0, description: 'time from trigger to the gate (overrides distance/speed)' })),
        distanceMm: T.Number({ minimum: 0, default: 600, description: 'distance from the camera to the diverter gate' }),
        speedMmPerS: T.Number({ exclusiveMinimum: 0, default: 400, description: 'conveyor speed' }),
        pulseMs: Ms(80, 'divert pulse width', 1),
        marginMs: Ms(20, 'the verdict must be in this long before the gate time (actuator latency)'),
        maxInFlight: T.Optional(
          T.Integer({
            minimum: 1,
            maximum: 10000,
            description:
              'parts waiting for a verdict; one more is diverted at once (overload) before its frame is grabbed. Default: model.workers + model.queueLimit, what the inference pool can hold',
          }),
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    gpio: T.Object(
      {
        backend: T.Union([T.Literal('sim'), T.Literal('onoff'), T.Literal('chardev'), T.Literal('auto')], {
          default: 'sim',
          description: "sim: in memory; onoff: sysfs; chardev: GPIO character device through the native addon (kernel edge times, native divert pulses); auto: chardev when the addon loads, else onoff",
        }),
        debounce: T.Union([T.Literal('lockout'), T.Literal('kernel')], { default: 'lockout', description: "chardev: 'lockout' ignores edges within debounceMs of the last one (edge time = first edge); 'kernel' uses the kernel's debounce (edge stamped once stable)" }),
        realtime: T.Boolean({ default: true, description: 'run the native pulse thread at real-time priority when allowed (LimitRTPRIO in the unit)' }),
        nativePulses: T.Union([T.Literal('auto'), T.Literal('off')], {
          default: 'auto',
          description:
            "sim and onoff: 'auto' drives divert pulses from the native pulse thread when the addon loads (onoff: through the line's sysfs value file; sim: the pin follows the thread's edges), as chardev always does; 'off': JS timers",
        }),
        sysfsRoot: T.String({ default: '/sys/class/gpio', description: 'sysfs GPIO root (configurable for tests)' }),
        divert: T.Optional(LineSpecSchema),
        ready: T.Optional(LineSpecSchema),
        readyHeartbeatMs: T.Integer({ minimum: 0, maximum: 60000, default: 0, description: 'toggle the ready output at this period while inspecting (0 = steady high); lets the PLC see a dead agent' }),
        stackLight: T.Object(
          {
            green: T.Optional(LineSpecSchema),
            amber: T.Optional(LineSpecSchema),
            red: T.Optional(LineSpecSchema),
            buzzer: T.Optional(LineSpecSchema),
            buzzerAfterRejects: T.Integer({ minimum: 1, default: 3, description: 'sound the buzzer after this many consecutive rejects' }),
          },
          { additionalProperties: false, default: {}, description: 'optional stack light: green = inspecting, amber = degraded, red = fault or stopped' },
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    mqtt: T.Object(
      {
        url: T.String({ default: '', description: "broker URL (mqtt://host:1883, mqtts://…); empty = embedded broker in demo, none in run" }),
        prefix: T.String({ default: '', description: "topic prefix; empty = 'linesight/<line>/<station>/'" }),
        clientId: T.String({ default: '' }),
        username: T.Optional(T.String()),
        password: T.Optional(T.String()),
        protocolVersion: T.Union([T.Literal(4), T.Literal(5)], { default: 4, description: '4 = MQTT 3.1.1, 5 = MQTT 5' }),
        keepalive: T.Integer({ minimum: 0, maximum: 65535, default: 30 }),
        ca: T.Optional(T.String({ description: 'CA certificate file (TLS)' })),
        cert: T.Optional(T.String({ description: 'client certificate file (TLS)' })),
        key: T.Optional(T.String({ description: 'client key file (TLS)' })),
        embeddedPort: T.Integer({ minimum: 0, maximum: 65535, default: 1883, description: 'demo: port of the embedded broker (next free if taken)' }),
        outbox: T.Optional(
          T.Object(
            {
              maxBytes: T.Integer({ minimum: 1024 * 1024, default: 256 * 1024 * 1024, description: 'bytes of results not yet acknowledged by the broker kept at most; beyond it the oldest are dropped (counted, logged, outbox_drop alarm)' }),
              maxAgeMs: T.Integer({ minimum: 60_000, default: 7 * 24 * 3600 * 1000, description: 'results older than this are dropped (counted, logged, outbox_drop alarm)' }),
              highWater: T.Number({ minimum: 0.05, maximum: 1, default: 0.8, description: 'fraction of maxBytes at which the outbox_high_water alarm is raised' }),
            },
            { additionalProperties: false, default: {}, description: 'durable outbox in <stateDir>/outbox/: bounds (results wait here while the broker is away)' },
          ),
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    http: T.Object(
      {
        enabled: T.Boolean({ default: true }),
        host: T.String({ default: '127.0.0.1' }),
        port: T.Integer({ minimum: 0, maximum: 65535, default: 8080 }),
        token: T.Optional(T.String({ description: 'bearer token for state-changing requests (required when not bound to localhost)' })),
        maxConcurrent: T.Integer({ minimum: 1, maximum: 64, default: 2, description: 'POST /v1/predict requests in inference at once; more get 503' }),
        maxBodyBytes: T.Integer({ minimum: 1024, default: 20 * 1024 * 1024, description: 'largest request body accepted' }),
        cors: T.Optional(T.String({ description: 'Access-Control-Allow-Origin value; no CORS when unset' })),
      },
      { additionalProperties: false, default: {} },
    ),
    archive: T.Object(
      {
        enabled: T.Boolean({ default: true, description: 'keep frames of diverted parts (and a sample of passed ones) as a training dataset' }),
        dir: T.String({ default: '', description: 'dataset root (<dir>/<label>/<partId>.png + .json); empty = <stateDir>/archive' }),
        passEvery: T.Integer({ minimum: 0, default: 0, description: 'also keep 1 in N passed parts under good/ (0 = none)' }),
        failSafe: T.Boolean({ default: true, description: 'keep frames of fail-safe diverts under failsafe-<reason>/ (review them before training)' }),
        maxFiles: T.Integer({ minimum: 1, default: 10000, description: 'images kept at most; the oldest are removed first' }),
        maxMb: T.Number({ minimum: 1, default: 1024, description: 'MiB kept at most (PNG + JSON)' }),
        maxAgeDays: T.Number({ minimum: 0, default: 30, description: 'files older than this are removed (0 = no age limit)' }),
        queueLimit: T.Integer({ minimum: 1, maximum: 1000, default: 8, description: 'frames waiting to be written; more are skipped and counted (the line never waits)' }),
        pngLevel: T.Integer({ minimum: 0, maximum: 9, default: 6, description: 'PNG (zlib) compression of archived frames: 3 halves the CPU of 6 for ~11 % larger files, 1 costs a third for twice the bytes (299x224 RGB: 5.0 / 2.4 / 1.6 CPU-ms)' }),
        minFreeMb: T.Number({ minimum: 0, default: 512, description: 'free-space floor on the archive disk: below it nothing is written and a disk alarm is raised once' }),
      },
      { additionalProperties: false, default: {} },
    ),
    log: T.Object(
      {
        level: T.Union([T.Literal('debug'), T.Literal('info'), T.Literal('warn'), T.Literal('error')], { default: 'info' }),
      },
      { additionalProperties: false, default: {} },
    ),
  },
  { additionalProperties: false, $id: 'https://linesight.dev/schemas/config.json', title: 'linesight configuration' },
);

export type Config = Static<typeof ConfigSchema>;
export type LineSpecConfig = Static<typeof LineSpecSchema>;
