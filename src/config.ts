// All configuration, parsed and validated once at the edge: command-line flags, then PYATS_EXPORTER_*
// environment variables, then an optional YAML file, then defaults. OTEL_* variables are read by
// tracingOptionsFromEnv. Everything below main receives the typed ExporterConfig.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from './errors.js';
import { resolveZone, localZoneName } from './events/index.js';
import { LOG_LEVELS, type LogLevel } from './log.js';
import { loadWebConfig, type WebConfig } from './http/index.js';
import { parseFrameFormat, type FrameFormat } from './reporter/index.js';
import { availableParallelism, hostname } from 'node:os';
import {
  GUARDED_LABELS,
  type GuardedLabel,
  type LabelLimits,
  tracingOptionsFromEnv,
  type TracingOptions,
  DEFAULT_SECTION_LOG_MAX_BYTES,
  SECTION_LOG_MODES,
  logsOptionsFromEnv,
  type LogsOptions,
  type SectionLogMode,
} from './telemetry/index.js';

export const COMMANDS = ['run', 'demo', 'replay'] as const;
export type Command = (typeof COMMANDS)[number];

export interface ListenAddress {
  host: string;
  port: number;
}

export interface ExporterConfig {
  command: Command;
  /** `--reporter-socket`: reporter.sock paths to subscribe to. */
  reporterSockets: string[];
  /** `--watch DIR` (repeatable), `--watch-max-depth`, `--watch-interval`: discover reporter sockets. */
  watch: { dirs: string[]; maxDepth: number; intervalMs: number };
  /** `replay FILE...`: results.json, archive .zip or NDJSON files; `--hold` serves /metrics until stopped. */
  replay: { files: string[]; hold: boolean };
  /** `--listen`, default 0.0.0.0:9464. */
  listen: ListenAddress;
  /** `--web.config.file`: TLS and authentication for the HTTP server (exporter-toolkit format). */
  web?: WebConfig;
  /**
   * `--frame-format`: framing of the requests sent to reporters, default `chunked` (pyATS 23.x); what a
   * reporter sends is detected per connection.
   */
  frameFormat: FrameFormat;
  /** `--max-frame-bytes`, default 64 MiB: larger frames reset the connection. */
  maxFrameBytes: number;
  /** `--timezone`: zone of the job's machine for naive times, default this host's zone. */
  timezone: string;
  /** `--orphan-hold-max`, default 10000: finished sections per job held while their parent is unseen. */
  orphanHoldMax: number;
  /** `--max-open-sections`, default 100000: sections one stream may have open; more are refused, counted. */
  maxOpenSections: number;
  /** `--decode-thread`: reporter sockets are read, decoded and normalized on threads of their own. */
  decodeThread: boolean;
  /**
   * Decode threads the reporter sockets are spread over: `--decode-threads N`, else with `--decode-thread`
   * one per core but one (at least one); 0 without either (sockets are read on the main thread).
   */
  decodeThreads: number;
  /** `--span-thread`: OTLP spans are built, encoded and exported on a thread of their own. */
  spanThread: boolean;
  /** `--max-attribute-length`, default 4096: strings are cut to this length. */
  maxAttributeLength: number;
  /** `--section-logs` and `--section-log-max-bytes`: which sections' log lines go on their span, how much. */
  sectionLogs: { mode: SectionLogMode; maxBytes: number };
  /** `--log-level`, default info. */
  logLevel: LogLevel;
  /** Reconnect backoff after a reporter connection drops. */
  reconnect: { initialMs: number; maxMs: number };
  /** How often to look for a reporter socket that does not exist yet. */
  pollIntervalMs: number;
  /** Longest a SIGTERM shutdown may take before the process exits anyway. */
  shutdownTimeoutMs: number;
  /** `--max-label-values`, `--max-label-values-for`, `--label-value-ttl-seconds`: the cardinality guard. */
  labelLimits: LabelLimits;
  /** NDJSON ingest: `--ingest-socket`, `--ingest-http` and their limits. */
  ingest: {
    socket?: string;
    socketMode?: number;
    http: boolean;
    token?: string;
    maxBodyBytes: number;
    maxLineBytes: number;
    idleTimeoutMs: number;
  };
  /** `--capture FILE`: normalized events appended as NDJSON, for `replay`. */
  capture?: string;
  /** `--pushgateway URL` and `--pushgateway-instance NAME`: push each job's series when it ends. */
  pushgateway?: { url: string; instance: string };
  tracing: TracingOptions;
  /** OTEL_LOGS_EXPORTER and friends: sections' log lines as OTLP log records (opt-in). */
  logs: LogsOptions;
  demo: { testcases: number; eventDelayMs: number; loop: boolean; seed: number };
}

export type ParseOutcome =
  { kind: 'config'; config: ExporterConfig } | { kind: 'help' } | { kind: 'version' };

const FLAG_SPEC = {
  'reporter-socket': { type: 'string', multiple: true },
  watch: { type: 'string', multiple: true },
  'watch-max-depth': { type: 'string' },
  'watch-interval': { type: 'string' },
  hold: { type: 'boolean' },
  listen: { type: 'string' },
  'web.config.file': { type: 'string' },
  'frame-format': { type: 'string' },
  'max-frame-bytes': { type: 'string' },
  timezone: { type: 'string' },
  'max-attribute-length': { type: 'string' },
  'section-logs': { type: 'string' },
  'section-log-max-bytes': { type: 'string' },
  'orphan-hold-max': { type: 'string' },
  'max-open-sections': { type: 'string' },
  'decode-thread': { type: 'boolean' },
  'decode-threads': { type: 'string' },
  'span-thread': { type: 'boolean' },
  'log-level': { type: 'string' },
  'max-label-values': { type: 'string' },
  'max-label-values-for': { type: 'string', multiple: true },
  'label-value-ttl-seconds': { type: 'string' },
  pushgateway: { type: 'string' },
  'pushgateway-instance': { type: 'string' },
  'ingest-socket': { type: 'string' },
  'ingest-socket-mode': { type: 'string' },
  'ingest-http': { type: 'boolean' },
  'ingest-token-file': { type: 'string' },
  'ingest-max-body-bytes': { type: 'string' },
  'ingest-max-line-bytes': { type: 'string' },
  'ingest-idle-timeout': { type: 'string' },
  capture: { type: 'string' },
  config: { type: 'string' },
  'demo-testcases': { type: 'string' },
  'demo-event-delay-ms': { type: 'string' },
  'demo-once': { type: 'boolean' },
  'demo-seed': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
} as const;

type FlagName = Exclude<keyof typeof FLAG_SPEC, 'config' | 'help' | 'version'>;

/** Settings a YAML file may hold: the flag names, with their values as YAML scalars or lists. */
const fileSchema = z
  .object({
    'reporter-socket': z.union([z.string(), z.array(z.string())]),
    watch: z.union([z.string(), z.array(z.string())]),
    'watch-max-depth': z.union([z.string(), z.number()]),
    'watch-interval': z.union([z.string(), z.number()]),
    hold: z.boolean(),
    listen: z.union([z.string(), z.number()]),
    'web.config.file': z.string(),
    'frame-format': z.string(),
    'max-frame-bytes': z.union([z.string(), z.number()]),
    timezone: z.string(),
    'max-attribute-length': z.union([z.string(), z.number()]),
    'section-logs': z.string(),
    'section-log-max-bytes': z.union([z.string(), z.number()]),
    'orphan-hold-max': z.union([z.string(), z.number()]),
    'max-open-sections': z.union([z.string(), z.number()]),
    'decode-thread': z.boolean(),
    'decode-threads': z.union([z.string(), z.number()]),
    'span-thread': z.boolean(),
    'log-level': z.string(),
    'max-label-values': z.union([z.string(), z.number()]),
    'max-label-values-for': z.union([z.string(), z.array(z.string())]),
    'label-value-ttl-seconds': z.union([z.string(), z.number()]),
    pushgateway: z.string(),
    'pushgateway-instance': z.string(),
    'ingest-socket': z.string(),
    'ingest-socket-mode': z.union([z.string(), z.number()]),
    'ingest-http': z.boolean(),
    'ingest-token-file': z.string(),
    'ingest-max-body-bytes': z.union([z.string(), z.number()]),
    'ingest-max-line-bytes': z.union([z.string(), z.number()]),
    'ingest-idle-timeout': z.union([z.string(), z.number()]),
    capture: z.string(),
    'demo-testcases': z.union([z.string(), z.number()]),
    'demo-event-delay-ms': z.union([z.string(), z.number()]),
    'demo-once': z.boolean(),
    'demo-seed': z.union([z.string(), z.number()]),
  })
  .partial()
  .strict();

export const DEFAULT_LISTEN = '0.0.0.0:9464';

export const HELP = `Usage: pyats-exporter [demo | replay FILE...] [options]

Subscribes to the live event stream of pyATS jobs and exports every section as an OpenTelemetry
span (OTLP) and as Prometheus metrics on /metrics.

Commands:
  (none)                        run the exporter
  demo                          run the exporter fed by a built-in simulated pyATS job
  replay FILE...                export finished jobs from results.json, a pyATS archive .zip, or an
                                NDJSON capture: same span ids as live; metrics pushed (--pushgateway)
                                or served until stopped (--hold)

Options (each also as PYATS_EXPORTER_<NAME> env var, e.g. PYATS_EXPORTER_LISTEN, or a key in --config):
  --reporter-socket PATH        a job's runinfo/reporter.sock; repeatable; waits for it and reconnects
  --watch DIR                   find reporter.sock files of jobs under DIR as they start; repeatable
  --watch-max-depth N           deepest a socket may sit below a --watch DIR (default 5)
  --watch-interval MS           how often --watch DIRs are polled (default 1000)
  --hold                        replay: keep serving /metrics after the replay until stopped
  --listen HOST:PORT            HTTP server for /metrics, /healthz, /readyz (default ${DEFAULT_LISTEN})
  --web.config.file FILE        TLS and basic auth / bearer token for the HTTP server (Prometheus
                                exporters' web config format)
  --frame-format FMT            framing of requests to the reporter: chunked (pyATS 23.x, default),
                                4be (pyATS 20.2), 4le, 8be, 8le; replies are detected per connection
  --max-frame-bytes N           refuse larger messages and reset the connection (default 67108864)
  --timezone ZONE               zone of the job machine for naive times: IANA name or +HH:MM
                                (default this host's zone)
  --max-attribute-length N      cut longer strings in spans and labels (default 4096)
  --section-logs WHICH          put the log lines of failed | all | none sections on their span, read
                                from the job's log in its runinfo directory (default failed)
  --section-log-max-bytes N     keep at most the last N bytes of those lines, whole lines (default ${DEFAULT_SECTION_LOG_MAX_BYTES})
  --orphan-hold-max N           finished sections per job held while their parent has not been seen
                                (exporter attached mid-job) (default 10000)
  --max-open-sections N         sections one stream may have open at once; the start of another is
                                refused and counted as too_many_open_sections (default 100000)
  --decode-thread               read, decode and normalize reporter sockets on threads of their own,
                                one per core but one (at least one); sockets are spread over them
  --decode-threads N            as --decode-thread, with N threads (0: on the main thread)
  --span-thread                 build, encode and export OTLP spans on a thread of their own
  --log-level LEVEL             trace | debug | info | warn | error | fatal | silent (default info)
  --max-label-values N          distinct job/task/testcase/type values per metric; later ones are
                                reported as __other__ (default 1000)
  --max-label-values-for L=N    per-label cap, e.g. testcase=5000; repeatable
  --label-value-ttl-seconds N   release label values unused this long, with their series (default 0: never)
  --pushgateway URL             push each job's series to this Pushgateway when the job ends
  --pushgateway-instance NAME   the 'instance' grouping label of pushes (default this host's name)
  --ingest-socket PATH          also accept NDJSON events (the Python bridge, scripts) on this Unix socket
  --ingest-socket-mode OCTAL    file mode of the ingest socket (default from the umask)
  --ingest-http                 also accept NDJSON events on POST /api/v1/events
  --ingest-token-file FILE      require 'Authorization: Bearer <token>' on /api/v1/events
  --ingest-max-body-bytes N     largest accepted HTTP body (default 16777216)
  --ingest-max-line-bytes N     longest accepted NDJSON line (default 1048576)
  --ingest-idle-timeout SECONDS end a keyed ingest stream idle this long (default 3600; 0 never)
  --capture FILE                append every normalized event as NDJSON, for \`pyats-exporter replay\`
  --config FILE                 YAML file with any of the options above (flag names as keys)
  --demo-testcases N            demo: testcases per simulated job (default 6)
  --demo-event-delay-ms N       demo: pause between events (default 150)
  --demo-once                   demo: run one job, then exit (default: loop forever)
  --demo-seed N                 demo: seed of the simulated job (default 1)
  -h, --help                    show this help
  -V, --version                 show the version

Traces follow the standard OpenTelemetry variables: OTEL_TRACES_EXPORTER (otlp | console | none),
OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL
(http/protobuf | http/json | grpc), OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*. OTEL_LOGS_EXPORTER=otlp also sends the log lines of --section-logs
sections as OTLP log records with their span's ids (OTEL_EXPORTER_OTLP_LOGS_*, OTEL_BLRP_*).
`;

// Flags of earlier versions whose meaning is gone: say why instead of "unknown option".
const REMOVED_FLAGS: Readonly<Record<string, string>> = {
  'subscribe-request':
    "the exporter sends what pyATS's own ReportClient sends (subscribe_client); any other request can kill the job's reporter",
  'request-header': 'use --frame-format (chunked for pyATS 23.x, 4be for 20.2)',
  'frame-header': 'use --frame-format; what a reporter sends is detected per connection',
};

function refuseRemovedFlags(argv: readonly string[], env: NodeJS.ProcessEnv): void {
  for (const [name, why] of Object.entries(REMOVED_FLAGS)) {
    const envName = `PYATS_EXPORTER_${name.toUpperCase().replace(/-/g, '_')}`;
    const used = argv.some((arg) => arg === `--${name}` || arg.startsWith(`--${name}=`));
    if (used || env[envName] !== undefined) {
      throw new ConfigError('bad_flag', `${used ? `--${name}` : envName} was removed: ${why}`);
    }
  }
}

export function parseConfig(argv: readonly string[], env: NodeJS.ProcessEnv): ParseOutcome {
  refuseRemovedFlags(argv, env);
  let parsed: ReturnType<
    typeof parseArgs<{ options: typeof FLAG_SPEC; allowPositionals: true; strict: true }>
  >;
  try {
    parsed = parseArgs({ args: [...argv], options: FLAG_SPEC, allowPositionals: true, strict: true });
  } catch (error) {
    throw new ConfigError('bad_flag', (error as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) return { kind: 'help' };
  if (values.version) return { kind: 'version' };
  const command = positionals[0] ?? 'run';
  if (command !== 'replay' && positionals.length > 1) {
    throw new ConfigError('bad_command', `unexpected arguments: ${positionals.slice(1).join(' ')}`);
  }
  if (!(COMMANDS as readonly string[]).includes(command)) {
    throw new ConfigError('bad_command', `unknown command "${command}" (expected: ${COMMANDS.join(', ')})`);
  }

  const configPath = values.config ?? env['PYATS_EXPORTER_CONFIG'];
  const file = configPath === undefined ? {} : readConfigFile(configPath);

  /** The raw setting with its origin, for error messages: flag, then env, then file. */
  const setting = (name: FlagName): { value: unknown; origin: string } | undefined => {
    const flag = values[name];
    if (flag !== undefined) return { value: flag, origin: `--${name}` };
    const envName = `PYATS_EXPORTER_${name.toUpperCase().replace(/[-.]/g, '_')}`;
    const fromEnv = env[envName];
    if (fromEnv !== undefined && fromEnv !== '') return { value: fromEnv, origin: envName };
    if (file[name] !== undefined) return { value: file[name], origin: `${configPath}: ${name}` };
    return undefined;
  };
  const text = (name: FlagName, fallback: string): [string, string] => {
    const s = setting(name);
    if (s === undefined) return [fallback, 'default'];
    if (typeof s.value === 'object' && s.value !== null) {
      throw new ConfigError('bad_value', `${s.origin}: expected a single value`);
    }
    return [String(s.value), s.origin];
  };
  const integer = (name: FlagName, fallback: number, min: number, max: number): number => {
    const [raw, origin] = text(name, String(fallback));
    const n = Number(raw);
    if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new ConfigError('bad_value', `${origin}: "${raw}" is not an integer from ${min} to ${max}`);
    }
    return n;
  };

  /** A repeatable setting: a list (flags, YAML) or one comma-separated string (environment). */
  const list = (name: FlagName): string[] => {
    const s = setting(name);
    if (s === undefined) return [];
    const items = Array.isArray(s.value) ? s.value.map(String) : String(s.value).split(',');
    return items.map((item) => item.trim()).filter((item) => item !== '');
  };
  const reporterSockets = list('reporter-socket');

  const [listenRaw, listenOrigin] = text('listen', DEFAULT_LISTEN);
  const [frameFormatRaw, frameFormatOrigin] = text('frame-format', 'chunked');
  const [timezone, timezoneOrigin] = text('timezone', localZoneName());
  // Replay draws a progress bar on stderr: only warnings and errors may interleave with it.
  const [sectionLogMode, sectionLogOrigin] = text('section-logs', 'failed');
  if (!(SECTION_LOG_MODES as readonly string[]).includes(sectionLogMode)) {
    throw new ConfigError(
      'bad_value',
      `${sectionLogOrigin}: "${sectionLogMode}" is not one of ${SECTION_LOG_MODES.join(', ')}`,
    );
  }
  const [logLevel, logLevelOrigin] = text('log-level', command === 'replay' ? 'warn' : 'info');
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError(
      'bad_value',
      `${logLevelOrigin}: "${logLevel}" is not one of ${LOG_LEVELS.join(', ')}`,
    );
  }
  withOrigin(timezoneOrigin, () => resolveZone(timezone));

  const webConfig = setting('web.config.file');
  const pushgatewayUrl = setting('pushgateway');
  const ttlSeconds = integer('label-value-ttl-seconds', 0, 0, 10 * 365 * 86_400);
  const labelLimits: LabelLimits = {
    maxValues: integer('max-label-values', 1000, 1, 10_000_000),
    perLabel: parsePerLabelLimits(setting('max-label-values-for')),
    ...(ttlSeconds > 0 ? { idleTtlMs: ttlSeconds * 1000 } : {}),
  };
  const flag = (name: FlagName): boolean => {
    const s = setting(name);
    return s !== undefined && (s.value === true || s.value === 'true' || s.value === '1');
  };
  const ingestSocket = setting('ingest-socket');
  const ingestMode = setting('ingest-socket-mode');
  const tokenFile = setting('ingest-token-file');
  const captureFile = setting('capture');
  const ingest: ExporterConfig['ingest'] = {
    http: flag('ingest-http'),
    maxBodyBytes: integer('ingest-max-body-bytes', 16 * 1024 * 1024, 1024, 2 ** 30),
    maxLineBytes: integer('ingest-max-line-bytes', 1024 * 1024, 1024, 2 ** 26),
    idleTimeoutMs: integer('ingest-idle-timeout', 3600, 0, 604_800) * 1000,
    ...(ingestSocket === undefined ? {} : { socket: String(ingestSocket.value) }),
    ...(ingestMode === undefined
      ? {}
      : { socketMode: withOrigin(ingestMode.origin, () => parseMode(String(ingestMode.value))) }),
    ...(tokenFile === undefined
      ? {}
      : { token: withOrigin(tokenFile.origin, () => readToken(String(tokenFile.value))) }),
  };
  // A thread per core but one (that one is the main thread's), when `--decode-thread` leaves it open.
  const decodeThreads =
    setting('decode-threads') !== undefined
      ? integer('decode-threads', 0, 0, 64)
      : flag('decode-thread')
        ? Math.max(1, availableParallelism() - 1)
        : 0;
  const config: ExporterConfig = {
    command: command as Command,
    reporterSockets,
    watch: {
      dirs: list('watch'),
      maxDepth: integer('watch-max-depth', 5, 1, 32),
      intervalMs: integer('watch-interval', 1000, 50, 60_000),
    },
    replay: { files: positionals.slice(1), hold: flag('hold') },
    listen: withOrigin(listenOrigin, () => parseListen(listenRaw)),
    ...(webConfig === undefined
      ? {}
      : { web: withOrigin(webConfig.origin, () => loadWebConfig(String(webConfig.value))) }),
    frameFormat: withOrigin(frameFormatOrigin, () => parseFrameFormat(frameFormatRaw)),
    maxFrameBytes: integer('max-frame-bytes', 64 * 1024 * 1024, 16, 2 ** 40),
    timezone,
    maxAttributeLength: integer('max-attribute-length', 4096, 16, 1 << 20),
    sectionLogs: {
      mode: sectionLogMode as SectionLogMode,
      maxBytes: integer('section-log-max-bytes', DEFAULT_SECTION_LOG_MAX_BYTES, 64, 1 << 20),
    },
    orphanHoldMax: integer('orphan-hold-max', 10_000, 0, 1_000_000),
    maxOpenSections: integer('max-open-sections', 100_000, 1, 100_000_000),
    decodeThread: decodeThreads > 0,
    decodeThreads,
    spanThread: flag('span-thread'),
    logLevel: logLevel as LogLevel,
    reconnect: { initialMs: 250, maxMs: 10_000 },
    pollIntervalMs: 500,
    shutdownTimeoutMs: 8_000,
    labelLimits,
    ingest,
    ...(captureFile === undefined ? {} : { capture: String(captureFile.value) }),
    ...(pushgatewayUrl === undefined
      ? {}
      : {
          pushgateway: {
            url: withOrigin(pushgatewayUrl.origin, () => parseHttpUrl(String(pushgatewayUrl.value))),
            instance: text('pushgateway-instance', hostname())[0],
          },
        }),
    tracing: withOrigin('OTEL_* environment', () => tracingOptionsFromEnv(env)),
    logs: withOrigin('OTEL_* environment', () => logsOptionsFromEnv(env)),
    demo: {
      testcases: integer('demo-testcases', 6, 1, 100_000),
      eventDelayMs: integer('demo-event-delay-ms', 150, 0, 60_000),
      loop: !flag('demo-once'),
      seed: integer('demo-seed', 1, 0, 2 ** 31),
    },
  };
  const hasSource =
    config.reporterSockets.length > 0 ||
    config.watch.dirs.length > 0 ||
    ingest.socket !== undefined ||
    ingest.http;
  if (config.command === 'run' && !hasSource) {
    throw new ConfigError(
      'no_source',
      'nothing to watch: give --reporter-socket PATH, --watch DIR, --ingest-socket PATH or --ingest-http ' +
        '(or run `pyats-exporter demo` to try it without a lab)',
    );
  }
  if (config.command === 'replay' && config.replay.files.length === 0) {
    throw new ConfigError(
      'no_source',
      'replay needs at least one FILE (results.json, a .zip archive or NDJSON)',
    );
  }
  return { kind: 'config', config };
}

export function parseListen(value: string): ListenAddress {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]*)):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new ConfigError('bad_listen', `"${value}" is not HOST:PORT (e.g. 0.0.0.0:9464, [::]:9464, :9464)`);
  }
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? '0.0.0.0' : host, port };
}

/** `LABEL=N` entries (a list, or one comma-separated string from the environment). */
function parsePerLabelLimits(
  s: { value: unknown; origin: string } | undefined,
): Partial<Record<GuardedLabel, number>> {
  if (s === undefined) return {};
  const entries = (Array.isArray(s.value) ? s.value.map(String) : String(s.value).split(','))
    .map((e) => e.trim())
    .filter((e) => e !== '');
  const limits: Partial<Record<GuardedLabel, number>> = {};
  for (const entry of entries) {
    const m = /^([a-z]+)=(\d+)$/.exec(entry);
    const label = m?.[1] as GuardedLabel | undefined;
    const n = Number(m?.[2]);
    if (
      !m ||
      !label ||
      !(GUARDED_LABELS as readonly string[]).includes(label) ||
      !Number.isSafeInteger(n) ||
      n < 1
    ) {
      throw new ConfigError(
        'bad_value',
        `${s.origin}: "${entry}" is not LABEL=N with LABEL one of ${GUARDED_LABELS.join(', ')} and N >= 1`,
      );
    }
    limits[label] = n;
  }
  return limits;
}

function parseMode(value: string): number {
  if (!/^[0-7]{3,4}$/.test(value.trim()))
    throw new ConfigError('bad_value', `"${value}" is not an octal file mode like 660`);
  return parseInt(value.trim(), 8);
}

function readToken(path: string): string {
  let token: string;
  try {
    token = readFileSync(path, 'utf8').trim();
  } catch (error) {
    throw new ConfigError('bad_value', `cannot read token file ${path}: ${(error as Error).message}`);
  }
  if (token === '') throw new ConfigError('bad_value', `token file ${path} is empty`);
  return token;
}

function parseHttpUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError('bad_value', `"${value}" is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError('bad_value', `"${value}" is not an http(s) URL`);
  }
  if (url.search !== '') throw new ConfigError('bad_value', `"${value}" must not have a query string`);
  return value;
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError('bad_config_file', `cannot read config file ${path}: ${(error as Error).message}`);
  }
  let data: unknown;
  try {
    data = parseYaml(text);
  } catch (error) {
    throw new ConfigError('bad_config_file', `${path}: not valid YAML: ${(error as Error).message}`);
  }
  if (data === null || data === undefined) return {};
  const checked = fileSchema.safeParse(data);
  if (!checked.success) {
    const issue = checked.error.issues[0];
    const where = issue && issue.path.length > 0 ? issue.path.join('.') : 'top level';
    throw new ConfigError('bad_config_file', `${path}: ${where}: ${issue?.message ?? 'invalid'}`);
  }
  return checked.data;
}

function withOrigin<T>(origin: string, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof ConfigError) throw new ConfigError(error.code, `${origin}: ${error.message}`);
    const code = (error as { code?: unknown }).code;
    throw new ConfigError(
      typeof code === 'string' ? code : 'bad_value',
      `${origin}: ${(error as Error).message}`,
    );
  }
}
