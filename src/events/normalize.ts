// Raw event dict (from unpickling or JSON) → typed SectionEvent, or a rejection with a stable reason.
// The wire types are not documented (DESIGN §1), so each field accepts every plausible encoding; with a
// FieldDropHandler an unusable descriptive field is dropped (and reported) instead of losing the event.
import {
  PyDateTime,
  PyGlobal,
  PyObject,
  PyTimedelta,
  PyTimezone,
  isPyDict,
  type PyDict,
  type PyValue,
} from '../python/index.js';
import { resolveZone, type Zone } from './timezone.js';
import {
  RESULT_VALUES,
  type CodeLocation,
  type EventPhase,
  type NormalizeOutcome,
  type LogRange,
  type RejectReason,
  type ResultValue,
  type SectionEvent,
  type SectionResult,
} from './types.js';

export interface NormalizeOptions {
  /** Zone of the job's machine, applied to naive datetimes and offset-less ISO strings. */
  zone: Zone;
  /** Longer strings (names, reasons, paths) are cut to this many characters. */
  maxStringLength: number;
}

/**
 * Told about each descriptive field (`type`, `id`, `fullid`, `name`, `starttime`, `stoptime`, `runtime`,
 * `logfile`, `logs`, `log_excerpt`, `xref`) that was dropped because its value is unusable; the event is kept without it.
 */
export type FieldDropHandler = (reason: RejectReason, detail: string) => void;

// Sane bounds: anything outside is a corrupt or mis-typed value, not a test run.
const MIN_TIME_MS = Date.UTC(1990, 0, 1);
const MAX_TIME_MS = Date.UTC(2200, 0, 1);
const MAX_RUNTIME_S = 366 * 86_400;
/** The most of a `log_excerpt` an event keeps (its tail), whatever `--section-log-max-bytes` says. */
export const MAX_LOG_EXCERPT_CHARS = 64 * 1024;
// Epoch numbers above this are taken as milliseconds rather than seconds (year 5138 in seconds).
const EPOCH_MS_THRESHOLD = 1e11;

const EVENT_NAME = /^(init|start|stop)_([A-Za-z0-9_]+)$/;
const ISO_HAS_OFFSET = /(?:Z|[+-]\d{2}(?::?\d{2})?)$/i;
const ISO_DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?/;

// An xref into Python itself: its standard library (`.../lib/python3.10/...`, outside site-/dist-packages) or
// an installed pyats / genie package. pyATS 23.2 sends that for every Step (observed: the caller frame in
// `multiprocessing/process.py`), which is no location in the test script.
const PYTHON_STDLIB_DIR = /[\\/]lib(?:64)?[\\/]python\d+\.\d+[\\/]/;
const PACKAGES_DIR = /[\\/](?:site|dist)-packages[\\/]/;
const PYATS_PACKAGE_DIR = /[\\/](?:site|dist)-packages[\\/](?:pyats|genie)[\\/]/;

/** Section types keyed by the event-name suffix, for events that arrive without `type`. */
const TYPE_BY_SUFFIX: Record<string, string> = {
  testsuite: 'TestSuite',
  task: 'Task',
  commonsetup: 'CommonSetup',
  commoncleanup: 'CommonCleanup',
  testcase: 'Testcase',
  setupsection: 'SetupSection',
  testsection: 'TestSection',
  cleanupsection: 'CleanupSection',
  subsection: 'Subsection',
  step: 'Step',
  plugin: 'Plugin',
  section: 'Section',
};

const RESULT_SET: ReadonlySet<string> = new Set(RESULT_VALUES);

class Rejection {
  constructor(
    readonly reason: RejectReason,
    readonly detail: string,
  ) {}
}

/**
 * Validates one raw event. Without `onFieldDropped` any bad field rejects the event; with it, only the
 * fields that place the event (`event`, `seq_num`, `parent_seq_num`) and its `result` do, and other bad
 * fields are dropped and reported. Never throws.
 */
export function normalize(
  raw: unknown,
  options: NormalizeOptions,
  onFieldDropped?: FieldDropHandler,
): NormalizeOutcome {
  try {
    return { ok: true, event: toSectionEvent(raw, options, onFieldDropped) };
  } catch (error) {
    if (error instanceof Rejection) return { ok: false, reason: error.reason, detail: error.detail };
    // A bug here must cost one event, not the stream: the subscriber would drop the event uncounted.
    return { ok: false, reason: 'bad_field_type', detail: `normalizer failed: ${String(error)}` };
  }
}

/** A descriptive field's value is unusable: rejects the event, or with a drop handler reports and omits it. */
function refuse(onDrop: FieldDropHandler | undefined, reason: RejectReason, detail: string): undefined {
  if (onDrop === undefined) throw new Rejection(reason, detail);
  onDrop(reason, detail);
  return undefined;
}

/** An own property only: a dict from JSON may carry `__proto__` / `constructor` keys, never inherited ones. */
function field(dict: PyDict, key: string): unknown {
  const value = dict[key];
  return value === undefined || Object.hasOwn(dict, key) ? value : undefined;
}

/**
 * The event's own keys in a prototype-less dict (unpickled dicts already are one), so the hot path below reads
 * fields directly and still never sees an inherited `constructor` or `toString`.
 */
function ownKeys(dict: PyDict): PyDict {
  if (Object.getPrototypeOf(dict) === null) return dict;
  const copy = Object.create(null) as PyDict;
  for (const key of Object.keys(dict)) copy[key] = dict[key] as PyValue;
  return copy;
}

function toSectionEvent(raw: unknown, options: NormalizeOptions, onDrop?: FieldDropHandler): SectionEvent {
  if (!isPyDict(raw)) throw new Rejection('not_a_dict', `event is ${describe(raw)}, not a dict`);
  const dict = ownKeys(raw);
  const eventName = dict['event'];
  if (eventName === undefined || eventName === null) throw new Rejection('missing_event', 'no "event" key');
  if (typeof eventName !== 'string') {
    throw new Rejection('bad_field_type', `"event" is ${describe(eventName)}, not a string`);
  }
  const match = EVENT_NAME.exec(eventName);
  if (!match)
    throw new Rejection('unknown_event', `event "${clip(eventName, 80)}" is not init_/start_/stop_X`);
  const phase = match[1] as EventPhase;
  const suffix = match[2] as string;

  const seqNum = integerField(dict, 'seq_num', 'bad_seq_num');
  if (seqNum === undefined) throw new Rejection('bad_seq_num', 'no "seq_num" key');

  const max = options.maxStringLength;
  const event: SectionEvent = {
    phase,
    event: clip(eventName, max),
    type:
      optionalString(dict, 'type', options, onDrop) ??
      TYPE_BY_SUFFIX[suffix.toLowerCase()] ??
      clip(capitalize(suffix), max),
    seqNum,
  };
  const parentSeqNum = integerField(dict, 'parent_seq_num', 'bad_parent_seq_num');
  if (parentSeqNum !== undefined) event.parentSeqNum = parentSeqNum;
  const id = optionalString(dict, 'id', options, onDrop);
  if (id !== undefined) event.id = id;
  const fullid = optionalString(dict, 'fullid', options, onDrop);
  if (fullid !== undefined) event.fullid = fullid;
  const name = optionalString(dict, 'name', options, onDrop);
  if (name !== undefined) event.name = name;

  const startTime = timeField(dict, 'starttime', options.zone, onDrop);
  if (startTime !== undefined) event.startTime = startTime;
  let stopTime = timeField(dict, 'stoptime', options.zone, onDrop);
  if (startTime !== undefined && stopTime !== undefined && stopTime < startTime) {
    stopTime = refuse(onDrop, 'bad_time', 'stoptime is before starttime');
  }
  if (stopTime !== undefined) event.stopTime = stopTime;
  const runtime = runtimeField(dict['runtime'], onDrop);
  if (runtime !== undefined) event.runtime = runtime;

  // `result: None` (or no key) is a stop without a result, as pyATS sends stop_task / stop_testsuite; the
  // tracker rolls one up from the children.
  const result = resultField(dict['result'], options);
  if (result !== undefined) event.result = result;

  const logs = logsField(dict['logs'], options, onDrop);
  const logfile = optionalString(dict, 'logfile', options, onDrop) ?? logs?.file;
  if (logfile !== undefined) event.logfile = logfile;
  if (logs?.range !== undefined) event.logRange = logs.range;
  const excerpt = logExcerptField(dict['log_excerpt'], onDrop);
  if (excerpt !== undefined) event.logExcerpt = excerpt;
  const xref = xrefField(dict['xref'], options, onDrop);
  if (xref !== undefined) event.xref = xref;
  return event;
}

function integerField(dict: PyDict, key: string, reason: RejectReason): number | undefined {
  const value = dict[key];
  if (value === undefined || value === null) return undefined;
  let n: number;
  if (typeof value === 'number') n = value;
  else if (typeof value === 'bigint') n = Number(value);
  else if (typeof value === 'string' && /^\d{1,15}$/.test(value)) n = Number(value);
  else throw new Rejection(reason, `"${key}" is ${describe(value)}, not an integer`);
  if (!Number.isSafeInteger(n) || n < 0) throw new Rejection(reason, `"${key}" is ${String(value)}`);
  return n;
}

function optionalString(
  dict: PyDict,
  key: string,
  options: NormalizeOptions,
  onDrop: FieldDropHandler | undefined,
): string | undefined {
  const value = dict[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return clip(value, options.maxStringLength);
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  return refuse(onDrop, 'bad_field_type', `"${key}" is ${describe(value)}, not a string`);
}

function timeField(
  dict: PyDict,
  key: string,
  zone: Zone,
  onDrop: FieldDropHandler | undefined,
): number | undefined {
  const value = dict[key];
  if (value === undefined || value === null) return undefined;
  const ms = toEpochMs(value, zone);
  if (ms === undefined) return refuse(onDrop, 'bad_time', `"${key}" is ${describe(value)}, not a time`);
  if (!(ms >= MIN_TIME_MS && ms < MAX_TIME_MS)) {
    return refuse(onDrop, 'bad_time', `"${key}" is out of range (${String(ms)} ms since epoch)`);
  }
  return ms;
}

/** Epoch ms from a datetime, an ISO string or epoch seconds/ms; undefined when not a time at all. */
export function toEpochMs(value: unknown, zone: Zone): number | undefined {
  if (value instanceof PyDateTime) {
    const wall = value.wallClockAsUtcMs();
    const offsetMs = tzOffsetMs(value.tz, wall, zone);
    return wall - offsetMs;
  }
  if (typeof value === 'number') return Number.isFinite(value) ? epochNumberToMs(value) : undefined;
  if (typeof value === 'bigint') return epochNumberToMs(Number(value));
  if (typeof value === 'string') return parseIsoTime(value.trim(), zone);
  return undefined;
}

function epochNumberToMs(n: number): number {
  return Math.abs(n) >= EPOCH_MS_THRESHOLD ? n : n * 1000;
}

function tzOffsetMs(tz: PyTimezone | undefined, wall: number, zone: Zone): number {
  if (tz === undefined) return zone.offsetAtWallClock(wall);
  if (tz.offsetSeconds !== undefined) return tz.offsetSeconds * 1000;
  if (tz.name !== undefined) return zoneByName(tz.name, zone).offsetAtWallClock(wall);
  return zone.offsetAtWallClock(wall);
}

// zoneinfo.ZoneInfo tzinfos name an IANA zone; resolve each name once. Bounded, as the names come off the
// wire: past the bound a name is resolved every time instead of being remembered.
const MAX_NAMED_ZONES = 256;
const namedZones = new Map<string, Zone | null>();
function zoneByName(name: string, fallback: Zone): Zone {
  let zone = namedZones.get(name);
  if (zone === undefined) {
    try {
      zone = resolveZone(name);
    } catch {
      zone = null;
    }
    if (namedZones.size < MAX_NAMED_ZONES) namedZones.set(name, zone);
  }
  return zone ?? fallback;
}
function parseIsoTime(text: string, zone: Zone): number | undefined {
  const m = ISO_DATE_TIME.exec(text);
  if (!m) {
    if (/^-?\d+(\.\d+)?$/.test(text)) return epochNumberToMs(Number(text));
    return undefined;
  }
  const month = Number(m[2]);
  const day = Number(m[3]);
  const hour = Number(m[4]);
  const minute = Number(m[5]);
  const second = Number(m[6] ?? '0');
  // Date.UTC would roll month 13 or hour 99 over into a plausible-looking time.
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    return undefined;
  }
  const fraction = m[7] ?? '';
  // Keep microseconds: Date.parse would round them away.
  const subMs = fraction ? Number(`0.${fraction}`) * 1000 : 0;
  const wall = Date.UTC(Number(m[1]), month - 1, day, hour, minute, second) + subMs;
  if (!Number.isFinite(wall)) return undefined;
  const rest = text.slice(m[0].length);
  if (rest === '') return wall - zone.offsetAtWallClock(wall);
  if (!ISO_HAS_OFFSET.test(rest) || rest.length > 6) return undefined;
  if (/^z$/i.test(rest)) return wall;
  const sign = rest[0] === '-' ? -1 : 1;
  const digits = rest.slice(1).replace(':', '');
  const offsetMin = Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2, 4) || '0');
  return wall - sign * offsetMin * 60_000;
}

function runtimeField(value: unknown, onDrop: FieldDropHandler | undefined): number | undefined {
  if (value === undefined || value === null) return undefined;
  let seconds: number;
  if (typeof value === 'number') seconds = value;
  else if (typeof value === 'bigint') seconds = Number(value);
  else if (value instanceof PyTimedelta) seconds = value.totalSeconds();
  else if (typeof value === 'string' && /^\d+(\.\d+)?$/.test(value.trim())) seconds = Number(value);
  else return refuse(onDrop, 'bad_runtime', `"runtime" is ${describe(value)}, not a number of seconds`);
  if (!Number.isFinite(seconds) || seconds < 0 || seconds > MAX_RUNTIME_S) {
    return refuse(onDrop, 'bad_runtime', `"runtime" is ${String(seconds)} s`);
  }
  return seconds;
}

/** A result from a string, a dict with `value`, a pickled result object, or a bare class reference. */
function resultField(value: unknown, options: NormalizeOptions): SectionResult | undefined {
  if (value === undefined || value === null) return undefined;
  const parsed = parseResult(value, options, 0);
  if (parsed === undefined) throw new Rejection('bad_result', `"result" is ${describe(value)}`);
  return parsed;
}

function parseResult(value: unknown, options: NormalizeOptions, depth: number): SectionResult | undefined {
  if (depth > 3) return undefined;
  if (typeof value === 'string') {
    const result = resultValue(value);
    return result === undefined ? undefined : { value: result };
  }
  if (value instanceof PyGlobal) {
    const result = resultValue(value.name);
    return result === undefined ? undefined : { value: result };
  }
  if (value instanceof PyObject) {
    const fromState = value.state !== undefined ? parseResult(value.state, options, depth + 1) : undefined;
    if (fromState) return fromState;
    const [first] = value.args;
    const fromArgs = first !== undefined ? parseResult(first, options, depth + 1) : undefined;
    if (fromArgs) return fromArgs;
    // An instance of a class named like the result (pyats.results.Passed) with no usable state.
    const byClass = resultValue(value.name);
    return byClass === undefined ? undefined : { value: byClass };
  }
  if (isPyDict(value)) {
    const inner = field(value, 'value') ?? field(value, '_value') ?? field(value, 'name');
    const parsed = inner === undefined ? undefined : parseResult(inner, options, depth + 1);
    if (parsed === undefined) return undefined;
    const reason = field(value, 'reason');
    if (typeof reason === 'string' && reason !== '') parsed.reason = clip(reason, options.maxStringLength);
    return parsed;
  }
  return undefined;
}

function resultValue(text: string): ResultValue | undefined {
  const lowered = text.trim().toLowerCase();
  return RESULT_SET.has(lowered) ? (lowered as ResultValue) : undefined;
}

// `logs` and `xref` are auxiliary: strict mode ignores a shape it does not know (as it always has); with a
// drop handler that is reported, so nothing the reporter sent disappears without a trace.
function logsField(
  value: unknown,
  options: NormalizeOptions,
  onDrop?: FieldDropHandler,
): { file: string; range?: LogRange } | undefined {
  if (value === undefined || value === null) return undefined;
  const file = isPyDict(value) ? field(value, 'file') : undefined;
  if (typeof file !== 'string' || !isPyDict(value)) {
    onDrop?.('bad_field_type', `"logs" is ${describe(value)}, not a dict with a "file" string`);
    return undefined;
  }
  const begin = field(value, 'begin');
  const size = field(value, 'size');
  const clipped = clip(file, options.maxStringLength);
  // A start carries `begin` only; a stop both. A range needs both, and the file's name uncut.
  if (isByteCount(begin) && isByteCount(size) && clipped.length === file.length) {
    return { file: clipped, range: { file, begin: Number(begin), size: Number(size) } };
  }
  if ((begin !== undefined && !isByteCount(begin)) || (size !== undefined && !isByteCount(size))) {
    onDrop?.('bad_field_type', '"logs" begin / size are not byte counts');
  }
  return { file: clipped };
}

function isByteCount(value: unknown): boolean {
  if (typeof value === 'bigint') return value >= 0n && value <= BigInt(Number.MAX_SAFE_INTEGER);
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/**
 * `log_excerpt`: the tail of the section's log lines as the bridge read them on the job's machine. Kept as
 * the last MAX_LOG_EXCERPT_CHARS characters here; the span sink cuts it to `--section-log-max-bytes`.
 */
function logExcerptField(value: unknown, onDrop?: FieldDropHandler): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') {
    onDrop?.('bad_field_type', `"log_excerpt" is ${describe(value)}, not a string`);
    return undefined;
  }
  const tail = value.length > MAX_LOG_EXCERPT_CHARS ? value.slice(-MAX_LOG_EXCERPT_CHARS) : value;
  return (tail as string & WellFormedString).toWellFormed();
}

function xrefField(
  value: unknown,
  options: NormalizeOptions,
  onDrop?: FieldDropHandler,
): CodeLocation | undefined {
  if (value === undefined || value === null) return undefined;
  const location: CodeLocation = {};
  if (typeof value === 'string') {
    // Bounded before the regex: a huge string would otherwise be scanned for its last colon in full.
    const m = /^(.*):(\d{1,9})$/.exec(value.length > 4 * options.maxStringLength ? '' : value);
    if (m) {
      if (isPythonLibraryFile(m[1] as string)) return undefined;
      location.file = clip(m[1] as string, options.maxStringLength);
      location.line = Number(m[2]);
    }
  } else if (isPyDict(value)) {
    // pyATS 23.2 gives the TestSuite and a Task an xref of only `git` ({branch, commit, file}) when the
    // job runs from a git checkout: no location, and nothing wrong with the event.
    if (
      field(value, 'file') === undefined &&
      field(value, 'line') === undefined &&
      field(value, 'git') !== undefined
    ) {
      return undefined;
    }
    const file = field(value, 'file');
    if (typeof file === 'string') {
      if (isPythonLibraryFile(file)) return undefined;
      location.file = clip(file, options.maxStringLength);
    }
    const line = field(value, 'line');
    if (typeof line === 'number' && Number.isSafeInteger(line) && line >= 0) location.line = line;
    else if (typeof line === 'bigint' && line >= 0n && line <= BigInt(Number.MAX_SAFE_INTEGER)) {
      location.line = Number(line);
    }
  }
  if (location.file === undefined && location.line === undefined) {
    onDrop?.('bad_field_type', `"xref" is ${describe(value)}, not a file and line`);
    return undefined;
  }
  return location;
}

/**
 * The xref points into Python's library or pyATS, not at the test script: the event keeps no code location
 * (and no line, which belongs to that file). Decided here rather than in the span sink so that every consumer
 * of a SectionEvent (spans, captures, any later sink) agrees on what a section's location is. Not reported
 * as a dropped field: the value is well-formed, just not about the script.
 */
function isPythonLibraryFile(file: string): boolean {
  if (PYATS_PACKAGE_DIR.test(file)) return true;
  const stdlib = PYTHON_STDLIB_DIR.exec(file);
  return stdlib !== null && !PACKAGES_DIR.test(file.slice(stdlib.index));
}

/** Cut to `max` UTF-16 units, and well-formed: a lone surrogate (JSON `\ud800`, or a pair cut in two) becomes
 * U+FFFD, since OTLP and the Prometheus text format need valid UTF-8 and one bad string fails a whole batch. */
function clip(text: string, max: number): string {
  const cut = text.length > max ? text.slice(0, max) : text;
  return (cut as string & WellFormedString).isWellFormed()
    ? cut
    : (cut as string & WellFormedString).toWellFormed();
}

/** ES2024 string methods (Node >= 20); the project's lib is ES2023. */
interface WellFormedString {
  isWellFormed(): boolean;
  toWellFormed(): string;
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function describe(value: unknown): string {
  if (value === null) return 'None';
  if (Array.isArray(value)) return 'a list';
  if (value instanceof Uint8Array) return 'bytes';
  if (value instanceof PyObject) return `a ${value.module}.${value.name} object`;
  if (value instanceof PyGlobal) return `the global ${value.module}.${value.name}`;
  if (value instanceof PyDateTime) return 'a datetime';
  if (typeof value === 'string') return `the string "${clip(value, 40)}"`;
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') {
    return `${typeof value} ${String(value)}`;
  }
  return typeof value === 'object' ? 'an object' : typeof value;
}
