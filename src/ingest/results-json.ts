// A finished job's pyATS report (`results.json`, or its twin `results.yaml`) → the raw event dicts the live
// reporter would have sent for it, so replay goes through the same normalize → tracker path and gives the
// spans (ids included) of a live export of the same job.
//
// The format. Documented (pyATS docs, "Reporter" → "Overview", docs/reporter/overview.rst in
// CiscoTestAutomation/pyats): `{version: '2', report: <TestSuite>}`; the TestSuite has type, id, name, times,
// summary, ... and `tasks`; a Task has type, id, name, times, logfile, summary, ... and `sections`; every
// other level is a Section: type (CommonSetup, Testcase, TestSection, Step, ...), id, name, times, xref
// {file, line, source_hash}, logs {file, begin, size}, result {value}, child `sections` (Steps nest); naive
// local times. Real reports (test/fixtures/real-pyats): pyATS 23.2 writes `version: '3.3'`, times with an
// offset (`2026-12-02 16:20:14.959792+00:00`), `fullid` / `idlist` on every level, logs {file, begin,
// begin_lines, size, size_lines}, results as dicts {value, reason?, data?}, and no result on Task or
// TestSuite; pyATS 25.x writes `'3.4'`, which adds the Task's and the TestSuite's own `result` (easypy rolls
// them up since 25.1). No version carries seq_nums.
//
// What live pyATS 23.2 sends for the same job (recorded): init_testsuite, start_testsuite, init_task,
// start_task, start_section / stop_section for every section type (Steps included), stop_task,
// stop_testsuite; init_ events carry identity only and name the section by its id; stop_task / stop_testsuite
// carry no result. The events made here have those names and, per phase, the keys live events have.
//
// Numbering. The reporter numbers a section when it first hears of it (its init_, else its start_), from 1,
// in the order the events reach it. Verified against real recordings (test/fixtures/real-pyats): sections
// numbered in order of their earliest start time (a section's own, or an earlier child's: a pre-task plugin
// runs after its Task's init_), a parent before its children on ties. For a sequential job that is pre-order
// in start order; for tasks run in parallel it reproduces the interleaved live numbers as long as no two
// sections of different tasks start closer together than the reporter takes to receive an event. When a
// section has no start time the report's order is used (pre-order), unless every section carries its own
// `seq_num` (top level or in `extra`). Plugins, which reports do not list (unless a variant puts them among
// `sections`), consumed live seq_nums: a job that ran reporter-visible plugins replays with shifted span ids.
// Processors (`processors.pre/post`) are not sections and are skipped.
//
// Also accepted: the TestSuite at top level without the `report` wrapper, results as plain strings, times as
// ISO strings or epoch numbers (whatever the normalizer takes).
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
/** Only for ordering: every time in one report has the same zone, so any zone orders them alike. */
const ORDERING_ZONE = resolveZone('UTC');
/** The `logs` keys of live events: `{file, begin}` at start, `{file, begin, size}` at stop (pyATS 23.2). */
const START_LOGS_KEYS = ['file', 'begin'] as const;
const STOP_LOGS_KEYS = ['file', 'begin', 'size'] as const;

interface ReportNode {
  dict: Record<string, unknown>;
  type: string;
  where: string;
  startMs?: number;
  /** The earliest start in its subtree: when the reporter had heard of it at the latest. */
  firstMs?: number;
  children: ReportNode[];
  /** Children that ran before this node started (pre-job / pre-task plugins): they follow its init_. */
  before: ReportNode[];
  after: ReportNode[];
  ownSeq?: number;
  seq?: number;
  /** Its own valid result value, if the report gives one. */
  ownResult?: ResultValue;
  /** It, or a section below it, has a result: the tracker can roll one up from its children. */
  hasResult: boolean;
}

/** The events the live reporter would have sent for the job in `doc` (a parsed results.json / results.yaml). */
export function resultsEvents(doc: unknown, options: ResultsEventsOptions = {}): ResultsEvents {
  const { dict: rootDict, where } = reportRoot(doc);
  const root = buildNode(rootDict, SUITE, where, 0);
  const nodes: ReportNode[] = [];
  preorder(root, nodes);
  if (nodes.every((node) => node.ownSeq !== undefined)) {
    for (const node of nodes) node.seq = node.ownSeq;
  } else {
    const first = options.firstSeqNum ?? 1;
    // Array.prototype.sort is stable: on equal times the pre-order (a parent before its children) decides.
    const announced = nodes.every((node) => node.firstMs !== undefined)
      ? [...nodes].sort((a, b) => (a.firstMs as number) - (b.firstMs as number))
      : nodes;
    announced.forEach((node, index) => (node.seq = first + index));
  }
  const events: RawEvent[] = [];
  emit(root, undefined, events);
  const jobId = text(rootDict['id']) ?? text(rootDict['name']);
  return jobId === undefined ? { events, sections: nodes.length } : { jobId, events, sections: nodes.length };
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
  const node: ReportNode = { dict, type, where, children: [], before: [], after: [], hasResult: false };
  const startMs = timeMs(dict['starttime']);
  if (startMs !== undefined) node.startMs = startMs;
  const ownSeq = seqOf(dict);
  if (ownSeq !== undefined) node.ownSeq = ownSeq;
  const ownResult = resultValueOf(dict['result']);
  if (ownResult !== undefined) node.ownResult = ownResult;
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
  let firstMs = node.startMs;
  for (const child of node.children) {
    const ranBefore =
      child.startMs !== undefined && node.startMs !== undefined && child.startMs < node.startMs;
    (ranBefore ? node.before : node.after).push(child);
    if (child.firstMs !== undefined && (firstMs === undefined || child.firstMs < firstMs)) {
      firstMs = child.firstMs;
    }
  }
  if (firstMs !== undefined) node.firstMs = firstMs;
  node.hasResult = ownResult !== undefined || node.children.some((c) => c.hasResult);
  return node;
}

/** The order in which the live reporter hears of each node when times cannot tell: init_, before, after. */
function preorder(node: ReportNode, out: ReportNode[]): void {
  out.push(node);
  for (const child of node.before) preorder(child, out);
  for (const child of node.after) preorder(child, out);
}

function timeMs(value: unknown): number | undefined {
  if (value === undefined || value === null) return undefined;
  const ms = toEpochMs(value, ORDERING_ZONE);
  return ms !== undefined && Number.isFinite(ms) ? ms : undefined;
}

function seqOf(dict: Record<string, unknown>): number | undefined {
  const extra = dict['extra'];
  const value = dict['seq_num'] ?? (isObject(extra) ? extra['seq_num'] : undefined);
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : undefined;
}

/**
 * The `result` of a node's stop event. Its own, when the report has one: for sections always; for a Task or
 * TestSuite only in 3.4 reports, where it is easypy's roll-up of the same children, so the tracker would
 * come to the same value. Otherwise none, as live pyATS 23.2 sends none on stop_task / stop_testsuite: the
 * tracker rolls it up from the children exactly as it does live (one roll-up for both paths, and replayed
 * events equal live ones). Only when nothing below has a result either is the node's `summary` used: the
 * report then knows more than the children can tell.
 */
function stopResult(node: ReportNode): unknown {
  if (node.ownResult !== undefined) return node.dict['result'];
  if (node.hasResult) return undefined;
  const fromSummary = worstResult(summaryValues(node.dict['summary']));
  return fromSummary === undefined ? undefined : { value: fromSummary };
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

/** Live pyATS 23.2 sends `*_section` for every section type, Steps included. */
function eventSuffix(type: string): string {
  if (type === SUITE) return 'testsuite';
  if (type === TASK) return 'task';
  if (type === PLUGIN) return 'plugin';
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
  copy(dict, event, 'fullid');
  copy(dict, event, 'idlist');
  if (phase === 'init') {
    // pyATS 23.2's init_ names the section by its id (init_testsuite: the run id; start_testsuite: the job).
    const name = dict['id'] ?? dict['name'];
    if (hasValue(name)) event['name'] = name;
    return event;
  }
  copy(dict, event, 'name');
  copy(dict, event, 'starttime');
  const logs = dict['logs'];
  // Live start_section / start_task give the log's absolute path in the runinfo directory, which the report
  // does not record; its file name is what it has (and what live stop_task gives).
  const logfile = dict['logfile'] ?? (isObject(logs) ? logs['file'] : undefined);
  if (hasValue(logfile)) event['logfile'] = logfile;
  copy(dict, event, 'xref');
  if (phase === 'start') {
    copyLogs(logs, event, START_LOGS_KEYS);
    return event;
  }
  copy(dict, event, 'stoptime');
  // The report may round runtime (0.0 for anything under 5 ms); the two times give the exact duration, as live.
  const runtime = exactRuntime(dict['starttime'], dict['stoptime'], dict['runtime']);
  if (runtime !== undefined) event['runtime'] = runtime;
  else if (!hasValue(dict['starttime']) || !hasValue(dict['stoptime'])) copy(dict, event, 'runtime');
  copyLogs(logs, event, STOP_LOGS_KEYS);
  const result = stopResult(node);
  if (result !== undefined) event['result'] = result;
  return event;
}

/** The report's `logs` cut to the keys live events carry in that phase (begin_lines / size_lines are not). */
function copyLogs(logs: unknown, to: RawEvent, keys: readonly string[]): void {
  if (!hasValue(logs)) return;
  if (!isObject(logs)) {
    to['logs'] = logs;
    return;
  }
  const cut: Record<string, unknown> = {};
  for (const key of keys) if (hasValue(logs[key])) cut[key] = logs[key];
  to['logs'] = cut;
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
