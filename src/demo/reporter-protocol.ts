// The server side of the pyATS reporter's request protocol, as pyATS 23.2 answers it (DESIGN §1, observed on a
// real reporter, ../shared/real-pyats): the section tree of what a job reported so far, in the shapes
// `get_testsuite` / `get_section` return, and the reply to each request pyATS's own clients send. For the
// demo's reporter and the benchmarks' reporters. Pure: values in, values out; no sockets here.
import { PyObject, isPyDict, type PyDict, type PyValue } from '../python/index.js';

// Messages of the real server (pyats/reporter/server.py, 23.2), typo included.
const UNREGISTERED = 'Unkown client. Must register with server before calling other functions';
const UNPICKLABLE = 'Unable to unpickle received message. Size of sent data may exceed advertised size.';
const TRACEBACK_HEAD =
  'Traceback (most recent call last):\n' +
  '  File "src/pyats/reporter/server.py", line 1119, in pyats.reporter.server.ReportServer._client_call\n';
const GET_SECTION_FRAME =
  '  File "src/pyats/reporter/server.py", line 804, in pyats.reporter.server.ReportServer.get_section\n';
// Requests a client may send before register_client.
const OPEN_METHODS = new Set(['ping', 'register_client', 'subscribe_client']);

function dict(entries: Record<string, PyValue>): PyDict {
  return Object.assign(Object.create(null) as PyDict, entries);
}

function error(module: string, name: string, message: string): PyObject {
  return new PyObject(module, name, [message]);
}

/** `{'exception': error}`, with the traceback text pyATS adds to errors it did not expect. */
function exceptionReply(exception: PyObject, traceFrames?: string, shown?: string): PyDict {
  const reply = dict({ exception });
  if (traceFrames !== undefined) {
    const qualified =
      exception.module === 'builtins' ? exception.name : `${exception.module}.${exception.name}`;
    reply['traceback'] =
      `${TRACEBACK_HEAD}${traceFrames}${qualified}: ${shown ?? String(exception.args[0])}\n`;
  }
  return reply;
}

/** Python's repr of a list of strings, for the messages that quote one. */
function pyListRepr(items: readonly string[]): string {
  return `[${items.map((s) => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`).join(', ')}]`;
}

/** The reply to a message that does not unpickle; the connection goes on. */
export function unpicklableReply(): PyDict {
  return exceptionReply(error('pyats.reporter.exceptions', 'MessageReceiveError', UNPICKLABLE));
}

interface Node {
  seqNum: number;
  /** The section as the tree holds it: the fields of its latest event, without `event` / `parent_seq_num`. */
  fields: PyDict;
  parent: Node | undefined;
  children: Node[];
  started: boolean;
  stopped: boolean;
}

// Keys of an event that are about the event, not the section.
const EVENT_ONLY = new Set(['event', 'parent_seq_num']);
// Keys of a section view in pyATS's order (those the events give), then the tree's own.
const SECTION_ORDER = [
  'type',
  'id',
  'fullid',
  'idlist',
  'name',
  'starttime',
  'stoptime',
  'runtime',
  'xref',
  'logs',
];

/** The sections a job has reported, by seq_num, linked by parent_seq_num as events arrive. */
export class SectionTree {
  private readonly nodes = new Map<number, Node>();
  private root: Node | undefined;

  /** Takes one event (`init_*`, `start_*`, `stop_*`); anything without an integer seq_num is ignored. */
  record(event: PyDict): void {
    const seqNum = event['seq_num'];
    const name = event['event'];
    if (typeof seqNum !== 'number' || !Number.isInteger(seqNum) || typeof name !== 'string') return;
    let node = this.nodes.get(seqNum);
    if (node === undefined) {
      const parentSeq = event['parent_seq_num'];
      const parent = typeof parentSeq === 'number' ? this.nodes.get(parentSeq) : undefined;
      node = { seqNum, fields: dict({}), parent, children: [], started: false, stopped: false };
      this.nodes.set(seqNum, node);
      parent?.children.push(node);
      if (parent === undefined && event['type'] === 'TestSuite') this.root ??= node;
    }
    for (const [key, value] of Object.entries(event)) {
      if (!EVENT_ONLY.has(key)) node.fields[key] = value;
    }
    if (name.startsWith('start_')) node.started = true;
    if (name.startsWith('stop_')) node.started = node.stopped = true;
  }

  /** get_testsuite: the TestSuite once it has started, else None. */
  testsuite(): PyDict | null {
    return this.root?.started === true ? this.view(this.root) : null;
  }

  /** get_section: the section at `idList` (ids from the Task down), or the real server's error reply. */
  section(idList: readonly string[]): PyDict | null {
    if (idList.length === 0) return null;
    const root = this.root;
    if (root?.started !== true) {
      return exceptionReply(
        error('builtins', 'AttributeError', "'NoneType' object has no attribute 'id'"),
        `${GET_SECTION_FRAME}  File "src/pyats/reporter/server.py", line 322, in pyats.reporter.server.ReportServer._get_ctx\n`,
      );
    }
    let node = root;
    for (const [depth, id] of idList.entries()) {
      const next = this.listed(node).find((child) => child.fields['id'] === id);
      if (next === undefined) {
        const reached = depth === 0 ? [String(root.fields['id'])] : idList.slice(0, depth);
        const message = `Section '${id}' not found in TestSuite. Tried to find ${pyListRepr(idList)}, got as far as ${pyListRepr(reached)}`;
        return exceptionReply(
          error('builtins', 'KeyError', message),
          `${GET_SECTION_FRAME}  File "src/pyats/reporter/server.py", line 325, in pyats.reporter.server.ReportServer._get_ctx\n`,
          JSON.stringify(message),
        );
      }
      node = next;
    }
    return this.view(node);
  }

  /** Children a client can reach: the TestSuite lists its Tasks only (its plugins are not in the tree). */
  private listed(node: Node): Node[] {
    return node === this.root ? node.children.filter((c) => c.fields['type'] === 'Task') : node.children;
  }

  private idList(node: Node): string[] {
    const given = node.fields['idlist'];
    if (Array.isArray(given) && given.every((id) => typeof id === 'string')) return given as string[];
    const ids: string[] = [];
    for (
      let at: Node | undefined = node;
      at !== undefined && (at === node || at !== this.root);
      at = at.parent
    ) {
      ids.unshift(String(at.fields['id']));
    }
    return ids;
  }

  /** The section as pyATS returns it: its fields in pyATS's order, the tree's child ids, its seq_num. */
  private view(node: Node): PyDict {
    const ids = this.idList(node);
    const f = node.fields;
    const out = dict({});
    const isSuite = node === this.root;
    if (isSuite) out['job_type'] = 'easypy';
    for (const key of SECTION_ORDER) {
      if (key === 'fullid')
        out[key] =
          f[key] ??
          (f['type'] === 'TestSuite' || f['type'] === 'Task' ? ids[ids.length - 1]! : ids.join('.'));
      else if (key === 'idlist') out[key] = [...ids];
      else if (key === 'stoptime' || key === 'runtime') out[key] = node.stopped ? (f[key] ?? null) : null;
      else if (f[key] !== undefined) out[key] = f[key]!;
    }
    const level = isSuite || f['type'] === 'Task';
    if (!level) out['result'] = node.stopped ? (f['result'] ?? null) : null;
    out['details'] = [];
    out['extra'] = dict({});
    const children = this.listed(node).map((c) => String(c.fields['id']));
    out[isSuite ? 'tasks' : 'sections'] = children;
    out['health_result'] = null;
    out['seq_num'] = node.seqNum;
    if (!isSuite && f['logfile'] !== undefined) out['logfile'] = f['logfile']!;
    return out;
  }
}

/** What the server knows of one client connection. */
export interface ClientState {
  /** The pid it registered with (register_client), once it has. */
  registeredPid?: string;
}

/**
 * The server's answer to one request: `reply` to send back; `subscribe` when the connection has subscribed
 * (events go to it from now on); `refuse` instead when the real server would die of the request (a dict
 * without `name` raises KeyError in pyATS 23.2 and fails the job).
 */
export type RequestAnswer = { reply: PyValue; subscribe?: true } | { refuse: string };

/** Answers `request` as pyATS 23.2's ReportServer does. */
export function answerRequest(request: PyValue, client: ClientState, tree: SectionTree): RequestAnswer {
  if (!isPyDict(request) || typeof request['name'] !== 'string') {
    return { refuse: 'a request without a name (the pyATS 23.2 reporter dies of it: KeyError)' };
  }
  const name = request['name'];
  const data = isPyDict(request['data']) ? request['data'] : dict({});
  if (name === 'ping') return { reply: 'pong' };
  if (name === 'subscribe_client') return { reply: null, subscribe: true };
  if (name === 'register_client') {
    if (client.registeredPid !== undefined) {
      const message = `This socket already registered as client Client (pid: ${client.registeredPid}, num_ctx: 0)`;
      return {
        reply: exceptionReply(
          error('pyats.reporter.exceptions', 'ExistingClientError', message),
          '  File "src/pyats/reporter/server.py", line 352, in pyats.reporter.server.ReportServer.register_client\n',
        ),
      };
    }
    client.registeredPid = String(data['pid'] ?? '');
    return { reply: null };
  }
  if (!OPEN_METHODS.has(name) && client.registeredPid === undefined) {
    return {
      reply: exceptionReply(error('pyats.reporter.exceptions', 'UnregisteredClientError', UNREGISTERED)),
    };
  }
  if (name === 'get_testsuite') return { reply: tree.testsuite() };
  if (name === 'get_section') {
    const list = data['id_list'];
    const ids = Array.isArray(list) ? list.filter((id): id is string => typeof id === 'string') : [];
    return { reply: tree.section(ids) };
  }
  return { reply: dict({ exception: error('builtins', 'AttributeError', `Cannot find function ${name}`) }) };
}
