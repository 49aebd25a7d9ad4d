// Raw event dict (from unpickling or JSON) → typed SectionEvent, or a rejection with a stable reason.
// The wire types are not documented (DESIGN §1), so each field accepts every plausible encoding.
import {
  PyDateTime,
  PyGlobal,
  PyObject,
  PyTimedelta,
  PyTimezone,
  isPyDict,
  type PyDict,
} from '../reporter/pyvalues.js';
import { resolveZone, type Zone } from './timezone.js';
import {
  RESULT_VALUES,
  type CodeLocation,
  type EventPhase,
  type NormalizeOutcome,
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

// Sane bounds: anything outside is a corrupt or mis-typed value, not a test run.
const MIN_TIME_MS = Date.UTC(1990, 0, 1);
const MAX_TIME_MS = Date.UTC(2200, 0, 1);
const MAX_RUNTIME_S = 366 * 86_400;
// Epoch numbers above this are taken as milliseconds rather than seconds (year 5138 in seconds).
const EPOCH_MS_THRESHOLD = 1e11;

const EVENT_NAME = /^(init|start|stop)_([A-Za-z0-9_]+)$/;
const ISO_HAS_OFFSET = /(?:Z|[+-]\d{2}(?::?\d{2})?)$/i;
const ISO_DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?/;

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

export function normalize(raw: unknown, options: NormalizeOptions): NormalizeOutcome {
  try {
    return { ok: true, event: toSectionEvent(raw, options) };
  } catch (error) {
    if (error instanceof Rejection) return { ok: false, reason: error.reason, detail: error.detail };
    throw error;
  }
}

function toSectionEvent(raw: unknown, options: NormalizeOptions): SectionEvent {
  if (!isPyDict(raw)) throw new Rejection('not_a_dict', `event is ${describe(raw)}, not a dict`);
  const dict = raw;
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

  const event: SectionEvent = {
    phase,
    event: eventName,
    type: optionalString(dict, 'type', options) ?? TYPE_BY_SUFFIX[suffix.toLowerCase()] ?? capitalize(suffix),
    seqNum,
  };
  const parentSeqNum = integerField(dict, 'parent_seq_num', 'bad_parent_seq_num');
  if (parentSeqNum !== undefined) event.parentSeqNum = parentSeqNum;
  const id = optionalString(dict, 'id', options);
  if (id !== undefined) event.id = id;
  const name = optionalString(dict, 'name', options);
  if (name !== undefined) event.name = name;

  const startTime = timeField(dict, 'starttime', options.zone);
  if (startTime !== undefined) event.startTime = startTime;
  const stopTime = timeField(dict, 'stoptime', options.zone);
  if (stopTime !== undefined) event.stopTime = stopTime;
  const runtime = runtimeField(dict['runtime']);
  if (runtime !== undefined) event.runtime = runtime;
  if (startTime !== undefined && stopTime !== undefined && stopTime < startTime) {
    throw new Rejection('bad_time', 'stoptime is before starttime');
  }

  const result = resultField(dict['result'], options);
  if (result !== undefined) event.result = result;

  const logfile = optionalString(dict, 'logfile', options) ?? logsFile(dict['logs'], options);
  if (logfile !== undefined) event.logfile = logfile;
  const xref = xrefField(dict['xref'], options);
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

function optionalString(dict: PyDict, key: string, options: NormalizeOptions): string | undefined {
  const value = dict[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return clip(value, options.maxStringLength);
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  throw new Rejection('bad_field_type', `"${key}" is ${describe(value)}, not a string`);
}

function timeField(dict: PyDict, key: string, zone: Zone): number | undefined {
  const value = dict[key];
  if (value === undefined || value === null) return undefined;
  const ms = toEpochMs(value, zone);
  if (ms === undefined) throw new Rejection('bad_time', `"${key}" is ${describe(value)}, not a time`);
  if (!(ms >= MIN_TIME_MS && ms < MAX_TIME_MS)) {
    throw new Rejection('bad_time', `"${key}" is out of range (${String(ms)} ms since epoch)`);
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

// zoneinfo.ZoneInfo tzinfos name an IANA zone; resolve each name once.
const namedZones = new Map<string, Zone | null>();
function zoneByName(name: string, fallback: Zone): Zone {
  let zone = namedZones.get(name);
  if (zone === undefined) {
    try {
      zone = resolveZone(name);
    } catch {
      zone = null;
    }
    namedZones.set(name, zone);
  }
  return zone ?? fallback;
}
function parseIsoTime(text: string, zone: Zone): number | undefined {
  const m = ISO_DATE_TIME.exec(text);
  if (!m) {
    if (/^-?\d+(\.\d+)?$/.test(text)) return epochNumberToMs(Number(text));
    return undefined;
  }
  const fraction = m[7] ?? '';
  // Keep microseconds: Date.parse would round them away.
  const subMs = fraction ? Number(`0.${fraction}`) * 1000 : 0;
  const wall =
    Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6] ?? '0')) +
    subMs;
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

function runtimeField(value: unknown): number | undefined {
  if (value === undefined || value === null) return undefined;
  let seconds: number;
  if (typeof value === 'number') seconds = value;
  else if (typeof value === 'bigint') seconds = Number(value);
  else if (value instanceof PyTimedelta) seconds = value.totalSeconds();
  else if (typeof value === 'string' && /^\d+(\.\d+)?$/.test(value.trim())) seconds = Number(value);
  else throw new Rejection('bad_runtime', `"runtime" is ${describe(value)}, not a number of seconds`);
  if (!Number.isFinite(seconds) || seconds < 0 || seconds > MAX_RUNTIME_S) {
    throw new Rejection('bad_runtime', `"runtime" is ${String(seconds)} s`);
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
    const inner = value['value'] ?? value['_value'] ?? value['name'];
    const parsed = inner === undefined ? undefined : parseResult(inner, options, depth + 1);
    if (parsed === undefined) return undefined;
    const reason = value['reason'];
    if (typeof reason === 'string' && reason !== '') parsed.reason = clip(reason, options.maxStringLength);
    return parsed;
  }
  return undefined;
}

function resultValue(text: string): ResultValue | undefined {
  const lowered = text.trim().toLowerCase();
  return RESULT_SET.has(lowered) ? (lowered as ResultValue) : undefined;
}

function logsFile(value: unknown, options: NormalizeOptions): string | undefined {
  if (!isPyDict(value)) return undefined;
  const file = value['file'];
  return typeof file === 'string' ? clip(file, options.maxStringLength) : undefined;
}

function xrefField(value: unknown, options: NormalizeOptions): CodeLocation | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') {
    const m = /^(.*):(\d+)$/.exec(value);
    return m ? { file: clip(m[1] as string, options.maxStringLength), line: Number(m[2]) } : undefined;
  }
  if (!isPyDict(value)) return undefined;
  const location: CodeLocation = {};
  const file = value['file'];
  if (typeof file === 'string') location.file = clip(file, options.maxStringLength);
  const line = value['line'];
  if (typeof line === 'number' && Number.isSafeInteger(line) && line >= 0) location.line = line;
  else if (typeof line === 'bigint') location.line = Number(line);
  return location.file === undefined && location.line === undefined ? undefined : location;
}

function clip(text: string, max: number): string {
  return text.length > max ? text.slice(0, max) : text;
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
