// The pyATS reporter's request protocol, as real pyATS 23.2 speaks it (DESIGN §1, observed through a
// recording proxy in front of ../shared/real-pyats): the requests pyATS's own clients send, how to read the
// replies, and how a snapshot of the section tree (what `get_testsuite` / `get_section` return) becomes
// the events a live subscriber would have received. Pure: no I/O here.
//
// Requests are a closed set on purpose: a framed request dict without `name` makes the 23.2 server raise
// KeyError and die, failing the job, so nothing here can build one.
import { PyObject, isPyDict, pickle, type PyDict, type PyValue } from '../python/index.js';
import { encodeFrame, type FrameFormat } from './framing.js';

/** Exactly the requests pyATS sends: ReportClient.connect/subscribe and pyats.reporter.explorer.Explorer. */
export type ReporterRequest =
  | { name: 'ping' }
  | { name: 'register_client'; pid: number; ppid: number }
  | { name: 'subscribe_client' }
  | { name: 'get_testsuite' }
  | { name: 'get_section'; idList: readonly string[] };

function requestDict(request: ReporterRequest): PyDict {
  const data = Object.create(null) as PyDict;
  // ReportClient keeps its pid and ppid as strings and sends them so.
  if (request.name === 'register_client') {
    data['pid'] = String(request.pid);
    data['ppid'] = String(request.ppid);
  } else if (request.name === 'get_section') {
    data['id_list'] = [...request.idList];
  }
  const dict = Object.create(null) as PyDict;
  dict['name'] = request.name;
  dict['data'] = data;
  return dict;
}

/**
 * One framed request, byte for byte what pyATS's client sends on Python 3.10 (pickle protocol 4, memoized).
 * The server unpickles whatever protocol it is given, so protocol 4 also suits servers on other Pythons.
 */
export function encodeRequest(request: ReporterRequest, format: FrameFormat): Uint8Array {
  return encodeFrame(pickle(requestDict(request), { protocol: 4, memoize: true }), format);
}

/**
 * The error a reply carries: the 23.2 server answers a request it cannot serve with
 * `{'exception': SomeError(message)}`. Undefined for any other reply.
 */
export function replyError(value: PyValue): string | undefined {
  if (!isPyDict(value) || !('exception' in value)) return undefined;
  const error = value['exception'];
  if (error instanceof PyObject) {
    const message = error.args.find((arg): arg is string => typeof arg === 'string');
    return message === undefined ? error.name : `${error.name}: ${message}`;
  }
  return describeValue(error ?? null);
}

/** A short description of a reply for a log line: `None`, `'pong'`, `dict with keys a, b`, ... */
export function describeValue(value: PyValue): string {
  if (value === null) return 'None';
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint')
    return String(value);
  if (Array.isArray(value)) return `a list of ${value.length}`;
  if (value instanceof Uint8Array) return `${value.length} bytes`;
  if (value instanceof PyObject) return `a ${value.module}.${value.name}`;
  if (isPyDict(value)) {
    const keys = Object.keys(value);
    return `a dict with keys ${keys.slice(0, 8).join(', ')}${keys.length > 8 ? ', …' : ''}`;
  }
  return `a ${value.constructor.name}`;
}

/** A node of the section tree as `get_testsuite` / `get_section` return it: the section's own dict. */
export interface SnapshotNode {
  section: PyDict;
  /** Ids of its children, in order: `tasks` of the TestSuite, `sections` of anything else. */
  children: string[];
}

/** The child ids a snapshot node lists (`tasks` for the TestSuite, `sections` below it). */
export function childIds(section: PyDict): string[] {
  const list = section['type'] === 'TestSuite' ? section['tasks'] : section['sections'];
  return Array.isArray(list) ? list.filter((id): id is string => typeof id === 'string') : [];
}

// Fields of a snapshot node that are the tree itself, not the section: live events do not carry them.
const TREE_FIELDS = new Set(['sections', 'tasks']);

/** The event-name suffix live pyATS uses for a section type (`start_testsuite`, `start_task`, `start_section`). */
function kindOf(type: PyValue | undefined): string {
  if (type === 'TestSuite') return 'testsuite';
  if (type === 'Task') return 'task';
  return 'section';
}

export interface SnapshotEvent {
  seqNum: number;
  phase: 'init' | 'start' | 'stop';
  event: PyDict;
}

/**
 * The events a subscriber would have received for a tree of sections fetched from the server: for each
 * section, a start with everything the snapshot knows (its parent's seq_num from the tree, which
 * `get_section` does not repeat), and a stop once it has a stop time; children between, in tree order. A
 * section the reporter has only heard the init_ of (no start time yet: a Task while its pre-task plugins
 * run) gives an init_, so that its live start_, which carries the start time, is not taken for a repeat.
 * Nodes without an integer seq_num are skipped (with their subtree: their children's parent is unknown).
 */
export function snapshotEvents(
  root: PyDict,
  childrenOf: (section: PyDict) => readonly PyDict[],
): SnapshotEvent[] {
  const out: SnapshotEvent[] = [];
  const visit = (section: PyDict, parentSeq: number | undefined): void => {
    const seqNum = section['seq_num'];
    if (typeof seqNum !== 'number' || !Number.isInteger(seqNum)) return;
    const kind = kindOf(section['type']);
    const start = Object.create(null) as PyDict;
    const started = section['starttime'] !== undefined && section['starttime'] !== null;
    start['event'] = `${started ? 'start' : 'init'}_${kind}`;
    for (const [key, value] of Object.entries(section)) {
      if (!TREE_FIELDS.has(key)) start[key] = value;
    }
    if (parentSeq !== undefined) start['parent_seq_num'] = parentSeq;
    const stopped = started && section['stoptime'] !== undefined && section['stoptime'] !== null;
    if (stopped) {
      // The start event of a live section carries no stop fields; the stop event carries them.
      delete start['stoptime'];
      delete start['runtime'];
      delete start['result'];
    }
    out.push({ seqNum, phase: started ? 'start' : 'init', event: start });
    for (const child of childrenOf(section)) visit(child, seqNum);
    if (stopped) {
      const stop = Object.create(null) as PyDict;
      for (const [key, value] of Object.entries(start)) stop[key] = value;
      stop['event'] = `stop_${kind}`;
      for (const key of ['stoptime', 'runtime', 'result'] as const) {
        if (section[key] !== undefined) stop[key] = section[key];
      }
      out.push({ seqNum, phase: 'stop', event: stop });
    }
  };
  visit(root, undefined);
  return out;
}
