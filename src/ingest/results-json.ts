// A finished job's pyATS report (`results.json`, or its twin `results.yaml`) → the raw event dicts the live
// reporter would have sent for it, in the live order, so replay goes through the same normalize → tracker path.
//
// The format, as pyATS documents it (pyATS docs, "Reporter" → "Overview", docs/reporter/overview.rst in
// CiscoTestAutomation/pyats): `{version: '2', report: <TestSuite>}`. The TestSuite has type, id, name,
// starttime, stoptime, runtime, summary, ... and `tasks`: a list of Tasks (type, id, name, times, logfile,
// summary, ... and `sections`). Every other level is a Section: type (CommonSetup, Testcase, TestSection,
// Step, ...), id, name, starttime, stoptime, runtime, xref {file, line, source_hash}, logs {file, begin,
// size}, result {value}, and child `sections` (Steps nest). Times are naive local strings
// (`2019-09-19 19:56:07.603283`). TestSuite and Task carry a summary but no result: theirs is rolled up here.
//
// Not in the report, so reconstructed: seq_num / parent_seq_num (the live reporter's numbering) are assigned
// depth-first in start order, the order in which the live reporter first sees each section (init_ or start_),
// unless every section carries its own `seq_num` (top level or in `extra`). Plugins, which the report does
// not list (unless a variant puts them among `sections`), consumed live seq_nums: a job that ran reporter-
// visible plugins replays with shifted span ids. Processors (`processors.pre/post`) are not sections and are
// skipped. Also accepted: the TestSuite at top level without the `report` wrapper, results as plain strings,
// times as ISO strings with offsets or epoch numbers (whatever the normalizer takes).
import { toEpochMs, worstResult, resolveZone, RESULT_VALUES, type ResultValue } from '../events/index.js';

/** A raw event dict, shaped like the live reporter's (DESIGN §1), for Pipeline.ingest. */
export type RawEvent = Record<string, unknown>;

export interface ResultsEventsOptions {
  /** seq_num of the TestSuite when the report carries none. Default 1, as the live reporter starts. */
  firstSeqNum?: number;
}

export interface ResultsEvents {
  /** The TestSuite's id (or name), the job id the live export uses. */
  jobId?: string;
  events: RawEvent[];
  /** Sections in the report (the TestSuite included). */
  sections: number;
}

/** The report is JSON/YAML but not shaped like a pyATS report; `where` is a path like `report.tasks[0]`. */
export class ResultsFormatError extends Error {
  override readonly name = 'ResultsFormatError';
  readonly code = 'bad_results';
  constructor(
    readonly where: string,
    message: string,
  ) {
    super(`${where}: ${message}`);
  }
}

const SUITE = 'TestSuite';
const TASK = 'Task';
const PLUGIN = 'Plugin';
/** Keys holding child sections, in the order pyATS writes them. */
const CHILD_KEYS = ['tasks', 'sections', 'plugins'] as const;
/** Deeper nesting is a corrupt or hostile file (pyATS Steps nest a handful of levels). */
const MAX_DEPTH = 256;
const RESULT_SET: ReadonlySet<string> = new Set(RESULT_VALUES);
/** Only for ordering siblings: every time in one report has the same zone, so any zone orders them alike. */
const ORDERING_ZONE = resolveZone('UTC');

interface ReportNode {
  dict: Record<string, unknown>;
  type: string;
  where: string;
  startMs?: number;
  children: ReportNode[];
  /** Children that ran before this node started (pre-job / pre-task plugins): they follow its init_. */
  before: ReportNode[];
  after: ReportNode[];
  ownSeq?: number;
  seq?: number;
  result?: ResultValue;
}

/** The events the live reporter would have sent for the job in `doc` (a parsed results.json / results.yaml). */
export function resultsEvents(doc: unknown, options: ResultsEventsOptions = {}): ResultsEvents {
  const { dict: rootDict, where } = reportRoot(doc);
  const root = buildNode(rootDict, SUITE, where, 0);
  let count = 0;
  let allNumbered = true;
  walk(root, (node) => {
    count += 1;
    if (node.ownSeq === undefined) allNumbered = false;
  });
  if (allNumbered) {
    walk(root, (node) => (node.seq = node.ownSeq));
  } else {
    let next = options.firstSeqNum ?? 1;
    // Numbered when first announced: init_ (suite, tasks, anything with plugins before it) or start_.
    const number = (node: ReportNode): void => {
      node.seq = next++;
      for (const child of node.before) number(child);
      for (const child of node.after) number(child);
    };
    number(root);
  }
  rollUp(root);
  const events: RawEvent[] = [];
  emit(root, undefined, events);
  const jobId = text(rootDict['id']) ?? text(rootDict['name']);
  return jobId === undefined ? { events, sections: count } : { jobId, events, sections: count };
}

function reportRoot(doc: unknown): { dict: Record<string, unknown>; where: string } {
  if (!isObject(doc)) throw new ResultsFormatError('top level', 'not an object');
  const report = doc['report'];
  if (isObject(report)) return { dict: report, where: 'report' };
  if (doc['type'] === SUITE || Array.isArray(doc['tasks'])) return { dict: doc, where: 'top level' };
  throw new ResultsFormatError(
    'top level',
    'not a pyATS results report (expected "report" with a TestSuite, or a TestSuite with "tasks")',
  );
}

function buildNode(
  dict: Record<string, unknown>,
  defaultType: string,
  where: string,
  depth: number,
): ReportNode {
  if (depth > MAX_DEPTH) throw new ResultsFormatError(where, `sections nested deeper than ${MAX_DEPTH}`);
  const type = typeof dict['type'] === 'string' && dict['type'] !== '' ? dict['type'] : defaultType;
  const node: ReportNode = { dict, type, where, children: [], before: [], after: [] };
  const start = dict['starttime'];
  const startMs = start === undefined || start === null ? undefined : toEpochMs(start, ORDERING_ZONE);
  if (startMs !== undefined && Number.isFinite(startMs)) node.startMs = startMs;
  const ownSeq = seqOf(dict);
  if (ownSeq !== undefined) node.ownSeq = ownSeq;
  for (const key of CHILD_KEYS) {
    const list = dict[key];
    if (list === undefined || list === null) continue;
    if (!Array.isArray(list)) throw new ResultsFormatError(`${where}.${key}`, 'not a list');
    list.forEach((item: unknown, index) => {
      const childWhere = `${where}.${key}[${index}]`;
      if (!isObject(item)) throw new ResultsFormatError(childWhere, 'not an object');
      const childType = key === 'tasks' ? TASK : key === 'plugins' ? PLUGIN : 'Section';
      node.children.push(buildNode(item, childType, childWhere, depth + 1));
    });
  }
  // The report lists children in run order; sort by start time only when every child has one.
  if (node.children.every((c) => c.startMs !== undefined)) {
    node.children.sort((a, b) => (a.startMs as number) - (b.startMs as number));
  }
  for (const child of node.children) {
    const ranBefore =
      child.startMs !== undefined && node.startMs !== undefined && child.startMs < node.startMs;
    (ranBefore ? node.before : node.after).push(child);
  }
  return node;
}

function seqOf(dict: Record<string, unknown>): number | undefined {
  const extra = dict['extra'];
  const value = dict['seq_num'] ?? (isObject(extra) ? extra['seq_num'] : undefined);
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : undefined;
}

function walk(node: ReportNode, visit: (node: ReportNode) => void): void {
  visit(node);
  for (const child of node.children) walk(child, visit);
}

/** Each node's result value: its own, else the roll-up of its children (plugins excluded), else its summary. */
function rollUp(node: ReportNode): void {
  for (const child of node.children) rollUp(child);
  const own = resultValueOf(node.dict['result']);
  if (own !== undefined) {
    node.result = own;
    return;
  }
  const counted = node.children.filter((c) => c.type !== PLUGIN && c.result !== undefined);
  const values = counted.map((c) => c.result as ResultValue);
  const fromSummary = summaryValues(node.dict['summary']);
  const worst = worstResult(values.length > 0 ? values : fromSummary);
  if (worst !== undefined) node.result = worst;
}

function summaryValues(summary: unknown): ResultValue[] {
  if (!isObject(summary)) return [];
  return RESULT_VALUES.filter((value) => {
    const count = summary[value];
    return typeof count === 'number' && count > 0;
  });
}

function resultValueOf(result: unknown): ResultValue | undefined {
  const raw = isObject(result) ? result['value'] : result;
  if (typeof raw !== 'string') return undefined;
  const lowered = raw.trim().toLowerCase();
  return RESULT_SET.has(lowered) ? (lowered as ResultValue) : undefined;
}

/** init_ (when the live reporter sends one), the children that ran before, start_, the rest, stop_. */
function emit(node: ReportNode, parent: ReportNode | undefined, out: RawEvent[]): void {
  const suffix = eventSuffix(node.type);
  if (node.type === SUITE || node.type === TASK || node.before.length > 0) {
    out.push(eventDict('init', suffix, node, parent));
  }
  for (const child of node.before) emit(child, node, out);
  out.push(eventDict('start', suffix, node, parent));
  for (const child of node.after) emit(child, node, out);
  out.push(eventDict('stop', suffix, node, parent));
}

function eventSuffix(type: string): string {
  if (type === SUITE) return 'testsuite';
  if (type === TASK) return 'task';
  if (type === PLUGIN) return 'plugin';
  if (type === 'Step') return 'step';
  return 'section';
}

function eventDict(
  phase: 'init' | 'start' | 'stop',
  suffix: string,
  node: ReportNode,
  parent: ReportNode | undefined,
): RawEvent {
  const { dict } = node;
  const event: RawEvent = { event: `${phase}_${suffix}`, type: node.type, seq_num: node.seq };
  if (parent !== undefined) event['parent_seq_num'] = parent.seq;
  copy(dict, event, 'id');
  copy(dict, event, 'name');
  if (phase === 'init') return event;
  copy(dict, event, 'starttime');
  const logs = dict['logs'];
  const logfile = dict['logfile'] ?? (isObject(logs) ? logs['file'] : undefined);
  if (logfile !== undefined && logfile !== null) event['logfile'] = logfile;
  copy(dict, event, 'xref');
  if (phase === 'start') return event;
  copy(dict, event, 'stoptime');
  // The report rounds runtime (0.0 for anything under 5 ms); the two times give the exact duration, as live.
  const runtime = exactRuntime(dict['starttime'], dict['stoptime'], dict['runtime']);
  if (runtime !== undefined) event['runtime'] = runtime;
  else if (!hasValue(dict['starttime']) || !hasValue(dict['stoptime'])) copy(dict, event, 'runtime');
  copy(dict, event, 'logs');
  const result = dict['result'];
  if (result !== undefined && result !== null && resultValueOf(result) !== undefined)
    event['result'] = result;
  else if (node.result !== undefined) event['result'] = { value: node.result };
  return event;
}

const TIME_TEXT =
  /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?(Z|[+-]\d{2}(?::?\d{2})?)?$/i;

/**
 * stoptime − starttime in seconds, exact to the microsecond from the two time strings (epoch-ms doubles would
 * blur it at ~0.1 µs). Naive times are only trusted when the report's rounded runtime agrees (a DST change
 * could lie between them); otherwise undefined, and the tracker subtracts the normalized times.
 */
function exactRuntime(start: unknown, stop: unknown, reported: unknown): number | undefined {
  const a = typeof start === 'string' ? microseconds(start.trim()) : undefined;
  const b = typeof stop === 'string' ? microseconds(stop.trim()) : undefined;
  if (a === undefined || b === undefined || a.naive !== b.naive || b.us < a.us) return undefined;
  const runtime = (b.us - a.us) / 1e6;
  if (a.naive && !(typeof reported === 'number' && Math.abs(runtime - reported) <= 0.5)) return undefined;
  return runtime;
}

/** Epoch microseconds (naive times read as UTC) as an exact integer. */
function microseconds(textValue: string): { us: number; naive: boolean } | undefined {
  const m = TIME_TEXT.exec(textValue);
  if (!m) return undefined;
  const field = (i: number): number => Number(m[i] ?? '0');
  const seconds = Date.UTC(field(1), field(2) - 1, field(3), field(4), field(5), field(6)) / 1000;
  const fraction = Number((m[7] ?? '').padEnd(6, '0').slice(0, 6));
  const zone = m[8];
  let offsetSeconds = 0;
  if (zone !== undefined && zone.toUpperCase() !== 'Z') {
    const digits = zone.slice(1).replace(':', '');
    offsetSeconds =
      (zone.startsWith('-') ? -1 : 1) *
      (Number(digits.slice(0, 2)) * 3600 + Number(digits.slice(2, 4) || '0') * 60);
  }
  const us = (seconds - offsetSeconds) * 1e6 + fraction;
  return Number.isSafeInteger(us) ? { us, naive: zone === undefined } : undefined;
}

function copy(from: Record<string, unknown>, to: RawEvent, key: string): void {
  const value = from[key];
  if (hasValue(value)) to[key] = value;
}

function hasValue(value: unknown): boolean {
  return value !== undefined && value !== null;
}

function text(value: unknown): string | undefined {
  if (typeof value === 'string' && value !== '') return value;
  if (typeof value === 'number') return String(value);
  return undefined;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export interface TextPosition {
  line: number;
  column: number;
}

/**
 * Where JSON.parse gave up, as line and column (1-based): V8's messages do not always say. A small
 * recursive-descent checker that only runs after JSON.parse has failed.
 */
export function locateJsonError(text: string): TextPosition | undefined {
  const offset = firstJsonErrorOffset(text);
  if (offset === undefined) return undefined;
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 0x0a) {
      line += 1;
      lineStart = i + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}

class JsonStop {
  constructor(readonly offset: number) {}
}

function firstJsonErrorOffset(text: string): number | undefined {
  let i = 0;
  const fail = (): never => {
    throw new JsonStop(i);
  };
  const space = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text.charAt(i))) i++;
  };
  const literal = (word: string): void => {
    for (const ch of word) {
      if (text.charAt(i) !== ch) fail();
      i++;
    }
  };
  const string = (): void => {
    i++;
    for (;;) {
      if (i >= text.length) fail();
      const ch = text.charCodeAt(i);
      if (ch === 0x22) {
        i++;
        return;
      }
      if (ch < 0x20) fail();
      if (ch === 0x5c) {
        i++;
        const esc = text.charAt(i);
        if (esc === 'u') {
          for (let k = 1; k <= 4; k++) if (!/[0-9a-fA-F]/.test(text.charAt(i + k))) fail();
          i += 5;
        } else if ('"\\/bfnrt'.includes(esc) && esc !== '') i++;
        else fail();
      } else {
        i++;
      }
    }
  };
  const number = (): void => {
    const m = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (!m || m[0] === '' || m[0] === '-') fail();
    i += (m as RegExpExecArray)[0].length;
  };
  const value = (depth: number): void => {
    if (depth > 10_000) fail();
    space();
    const ch = text.charAt(i);
    if (ch === '{') {
      i++;
      space();
      if (text.charAt(i) === '}') {
        i++;
        return;
      }
      for (;;) {
        space();
        if (text.charAt(i) !== '"') fail();
        string();
        space();
        if (text.charAt(i) !== ':') fail();
        i++;
        value(depth + 1);
        space();
        const sep = text.charAt(i);
        i++;
        if (sep === '}') return;
        if (sep !== ',') {
          i--;
          fail();
        }
      }
    }
    if (ch === '[') {
      i++;
      space();
      if (text.charAt(i) === ']') {
        i++;
        return;
      }
      for (;;) {
        value(depth + 1);
        space();
        const sep = text.charAt(i);
        i++;
        if (sep === ']') return;
        if (sep !== ',') {
          i--;
          fail();
        }
      }
    }
    if (ch === '"') return string();
    if (ch === 't') return literal('true');
    if (ch === 'f') return literal('false');
    if (ch === 'n') return literal('null');
    if (ch === '-' || (ch >= '0' && ch <= '9')) return number();
    fail();
  };
  try {
    value(0);
    space();
    if (i < text.length) fail();
    return undefined;
  } catch (error) {
    if (error instanceof JsonStop) return error.offset;
    // A JSON nested past the call stack: report where it got that deep.
    return i;
  }
}
