// A simulated pyATS job for `pyats-exporter demo`: the event dicts a pyATS 23.2 Reporter Server sends for one
// easypy run, as Python value stand-ins ready to pickle, in the shapes real 23.2 sends (DESIGN §1; recorded in
// test/fixtures/real-pyats, and test/helpers/reporter_standin.py builds the same). Pure and deterministic for
// its options.
import { createHash } from 'node:crypto';
import { worstResult, type ResultValue } from '../events/index.js';
import { PyDateTime, PyObject, PyTimezone, type PyDict, type PyValue } from '../python/index.js';

export interface SimulatedJobOptions {
  /** Shapes the job (testcases, steps, durations, where each result lands). Default 1. */
  seed?: number;
  /**
   * Epoch ms of the job's first timed event: start_testsuite (with `plugins`, the pre-job plugin's start).
   * easypy names the run a few seconds earlier, when it starts. Default 2024-01-01T00:00:00Z.
   */
  startMs?: number;
  /**
   * The job's name (easypy: the job file's, without `.py`): start_testsuite's `name`. The TestSuite's `id` is
   * the run id easypy makes of it, `<name>.<YYYYMonDD_HH:MM:SS.ffffff>`, new for every run. Default `demo_job`.
   */
  jobName?: string;
  /** @deprecated The job's name: use `jobName` (the TestSuite id is made from it). */
  jobId?: string;
  /** Testcases in the script (at least 1). Default 4–6, from the seed. */
  testcases?: number;
  /**
   * Add plugin sections: a pre-job, a pre-task and a post-job plugin (`start_plugin` / `stop_plugin`, as the
   * test stand-in makes them). Not a shape real pyATS 23.2 was seen to send: its easypy plugins report nothing
   * to the reporter. Default false.
   */
  plugins?: boolean;
}

const DEFAULT_START_MS = Date.UTC(2024, 0, 1);

/** pyATS 23.2's result codes (pyats.results.result.TestResult.code). */
const RESULT_CODES: Record<ResultValue, number> = {
  failed: 0,
  passed: 1,
  aborted: 2,
  blocked: 3,
  skipped: 4,
  errored: 5,
  passx: 8,
};

/** The TIMS value each result carries besides its own (TestResult.tims). */
const TIMS_VALUES: Record<ResultValue, string> = {
  failed: 'failed',
  passed: 'passed',
  aborted: 'blocked',
  blocked: 'blocked',
  skipped: 'dropped',
  errored: 'blocked',
  passx: 'passx',
};

const REASONS: Partial<Record<ResultValue, string>> = {
  failed: 'BGP neighbor 10.0.0.2 is in state Idle, expected Established',
  aborted: 'Interrupted by user (SIGINT)',
  blocked: 'Blocked by a failed dependency',
  skipped: 'Not applicable on this platform',
  passx: 'Known issue CSCvx12345',
};

const TESTCASE_POOL: readonly (readonly [string, readonly string[]])[] = [
  ['verify_interfaces', ['test_admin_state', 'test_oper_state', 'test_error_counters']],
  ['verify_bgp_neighbors', ['test_neighbor_state', 'test_prefix_count']],
  ['verify_ospf', ['test_adjacency', 'test_lsdb']],
  ['verify_routing_table', ['test_default_route', 'test_static_routes', 'test_connected']],
  ['verify_platform', ['test_inventory', 'test_redundancy']],
  ['verify_ntp', ['test_sync', 'test_stratum']],
  ['verify_acl', ['test_acl_hits', 'test_acl_config']],
  ['verify_vlans', ['test_vlan_database', 'test_trunk_ports']],
];

const STEP_POOL: readonly string[] = [
  'Connect to device',
  'Collect show output',
  'Parse output',
  'Compare with baseline',
  'Check counters',
  'Verify state',
  'Learn feature',
  'Apply config',
  'Rollback config',
];

const SCRIPT = '/opt/tests/health_checks.py';
/** easypy's task id for the first `run()` of a job; start_task names the Task after its script. */
const TASK_ID = 'Task-1';
const TASK_NAME = 'health_checks';
/** easypy's runinfo root (`$HOME/.pyats/runinfo`): each run's log files are in `<root>/<run id>/`. */
const RUNINFO_ROOT = '/home/pyats/.pyats/runinfo';
/**
 * A quirk of 23.2 (observed): a Step's xref is not its line in the script but the frame that runs the task,
 * `self.run()` in multiprocessing's process.py (plus a `git` dict when that Python is a git checkout).
 */
const STEP_XREF_FILE = '/usr/local/lib/python3.10/multiprocessing/process.py';
const STEP_XREF_LINE = 314;
/** easypy's run id suffix: `strftime('%Y%b%d_%H:%M:%S.%f')` of when the run started. */
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const RUN_ID = /^(.+)\.(\d{4})([A-Z][a-z]{2})(\d{2})_(\d{2}):(\d{2}):(\d{2})\.(\d{6})$/;

/** Types of the job's levels: no result, logs or (outside a git repository) xref of their own on the wire. */
const LEVEL_TYPES = new Set(['TestSuite', 'Task']);

interface Section {
  type: string;
  id: string;
  name: string;
  eventSuffix: string;
  /** Runs after its parent's `init_` and before its `start_` (pre-job / pre-task plugin). */
  pluginBefore: boolean;
  durationUs?: number;
  ownResult?: ResultValue;
  xref?: PyDict;
  children: Section[];
  parent?: Section;
  seqNum: number;
  result: ResultValue;
  reason: string | null;
  data: PyDict | null;
  logfile: string;
  startUs: number;
  stopUs: number;
  logBegin: number;
  logSize: number;
}

/** mulberry32: tiny, seedable, good enough to shape a fake job. */
class Random {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)]!;
  }

  sample<T>(items: readonly T[], count: number): T[] {
    const copy = [...items];
    for (let i = 0; i < count; i++) {
      const j = this.int(i, copy.length - 1);
      [copy[i], copy[j]] = [copy[j]!, copy[i]!];
    }
    return copy.slice(0, count);
  }
}

function section(
  type: string,
  id: string,
  extra: Partial<Pick<Section, 'name' | 'pluginBefore' | 'durationUs' | 'xref'>> = {},
): Section {
  const suffixes: Record<string, string> = { TestSuite: 'testsuite', Task: 'task', Plugin: 'plugin' };
  return {
    type,
    id,
    name: extra.name ?? id,
    // Real 23.2 sends start_section / stop_section for every section type, Steps included.
    eventSuffix: suffixes[type] ?? 'section',
    pluginBefore: extra.pluginBefore ?? false,
    durationUs: extra.durationUs,
    xref: extra.xref,
    children: [],
    seqNum: 0,
    result: 'passed',
    reason: null,
    data: null,
    logfile: '',
    startUs: 0,
    stopUs: 0,
    logBegin: 0,
    logSize: 0,
  };
}

function add(parent: Section, ...children: Section[]): Section {
  for (const child of children) {
    child.parent = parent;
    parent.children.push(child);
  }
  return parent;
}

/** A stand-in for the hash pyATS takes of a section's source: stable for its place in the script. */
function sourceHash(file: string, line: number): string {
  return createHash('sha256').update(`${file}:${line}`).digest('hex');
}

function buildTree(rng: Random, jobName: string, testcaseCount: number, plugins: boolean): Section {
  let line = 20;
  // Outside a git repository a section's xref is its file, line and source hash.
  const xref = (): PyDict => {
    line += rng.int(8, 40);
    return { file: SCRIPT, line, source_hash: sourceHash(SCRIPT, line) };
  };
  const stepXref = (): PyDict => ({ file: STEP_XREF_FILE, line: STEP_XREF_LINE });
  const ms = (lo: number, hi: number): number => rng.int(lo * 1000, hi * 1000);

  // The id becomes the run id once the job is laid out in time.
  const suite = section('TestSuite', jobName);
  if (plugins)
    add(suite, section('Plugin', 'KleenexPlugin', { durationUs: ms(200, 900), pluginBefore: true }));
  const task = section('Task', TASK_ID, { name: TASK_NAME });
  add(suite, task);
  if (plugins) {
    add(task, section('Plugin', 'GenieTelemetryPlugin', { durationUs: ms(50, 400), pluginBefore: true }));
  }
  add(
    task,
    add(
      section('CommonSetup', 'common_setup', { xref: xref() }),
      section('Subsection', 'connect', { durationUs: ms(500, 3000), xref: xref() }),
      section('Subsection', 'configure_interfaces', { durationUs: ms(200, 1500), xref: xref() }),
    ),
  );

  const picked = rng.sample(TESTCASE_POOL, Math.min(testcaseCount, TESTCASE_POOL.length));
  while (picked.length < testcaseCount) {
    const [name, tests] = TESTCASE_POOL[picked.length % TESTCASE_POOL.length]!;
    picked.push([`${name}_${picked.length + 1}`, tests]);
  }
  const allTests = picked.flatMap(([, tests], i) => tests.map((_, j) => `${i}/${j}`));
  const withSteps = new Set(rng.sample(allTests, Math.min(3, allTests.length)));

  const leaves: Section[] = [];
  const stepLeaves: Section[] = [];
  picked.forEach(([tcName, tests], i) => {
    const testcase = section('Testcase', tcName, { xref: xref() });
    const setup = section('SetupSection', 'setup', { durationUs: ms(20, 500), xref: xref() });
    add(testcase, setup);
    leaves.push(setup);
    tests.forEach((testName, j) => {
      const test = section('TestSection', testName, { xref: xref() });
      if (withSteps.has(`${i}/${j}`)) {
        const count = rng.int(2, 3);
        for (let k = 1; k <= count; k++) {
          // steps.start('Connect to device') makes step `STEP 1` named after its description.
          const step = section('Step', `STEP ${k}`, { name: rng.pick(STEP_POOL), xref: stepXref() });
          if (k === 1) {
            const subCount = rng.int(1, 2);
            for (let m = 1; m <= subCount; m++) {
              const sub = section('Step', `STEP ${k}.${m}`, {
                name: rng.pick(STEP_POOL),
                durationUs: ms(10, 400),
                xref: stepXref(),
              });
              add(step, sub);
              stepLeaves.push(sub);
            }
          } else {
            step.durationUs = ms(10, 600);
            stepLeaves.push(step);
          }
          add(test, step);
        }
      } else {
        test.durationUs = ms(50, 2500);
        leaves.push(test);
      }
      add(testcase, test);
    });
    const cleanup = section('CleanupSection', 'cleanup', { durationUs: ms(20, 300), xref: xref() });
    add(testcase, cleanup);
    leaves.push(cleanup);
    add(task, testcase);
  });

  add(
    task,
    add(
      section('CommonCleanup', 'common_cleanup', { xref: xref() }),
      section('Subsection', 'disconnect', { durationUs: ms(100, 800), xref: xref() }),
      section('Subsection', 'archive_logs', { durationUs: ms(50, 400), xref: xref() }),
    ),
  );
  if (plugins) add(suite, section('Plugin', 'XunitPlugin', { durationUs: ms(20, 200) }));

  // Steps carry aborted and passx; the other non-passed values land on sections or steps at random.
  const [aborted, passx] = rng.sample(stepLeaves, 2);
  aborted!.ownResult = 'aborted';
  passx!.ownResult = 'passx';
  const free = [...leaves, ...stepLeaves].filter((s) => s.ownResult === undefined);
  const others: ResultValue[] = ['failed', 'errored', 'blocked', 'skipped'];
  rng.sample(free, others.length).forEach((s, i) => (s.ownResult = others[i]));
  return suite;
}

function resolveResults(node: Section): void {
  node.children.forEach(resolveResults);
  if (node.ownResult === 'errored') {
    // What aetest reports for an exception in a section: the traceback goes in the result's data.
    // A Step runs inside its test section's function: the traceback names that function.
    let owner = node;
    while (owner.type === 'Step' && owner.parent) owner = owner.parent;
    const at = typeof owner.xref?.['line'] === 'number' ? owner.xref['line'] + 3 : 1;
    node.result = 'errored';
    node.reason = `Caught an exception while executing section ${node.id}`;
    node.data = {
      traceback:
        'Traceback (most recent call last):\n' +
        `  File "${SCRIPT}", line ${at}, in ${owner.id}\n` +
        "    counters = parsed['interface']['Ethernet1/7']['counters']\n" +
        "KeyError: 'Ethernet1/7'\n",
    };
    return;
  }
  if (node.ownResult !== undefined) {
    node.result = node.ownResult;
    node.reason = REASONS[node.ownResult] ?? null;
    return;
  }
  // Plugins do not count towards their owner's result.
  const counted = node.children.filter((c) => c.type !== 'Plugin').map((c) => c.result);
  node.result = worstResult(counted) ?? 'passed';
  node.reason = null;
}

/** A Task logs to `TaskLog.<task id>` in the run's runinfo directory; the rest of the job to `JobLog.<job>`. */
function assignLogfiles(node: Section, inherited: string, runinfo: string): void {
  node.logfile = node.type === 'Task' ? `${runinfo}/TaskLog.${node.id}` : inherited;
  for (const child of node.children) assignLogfiles(child, node.logfile, runinfo);
}

/** Places `node` from `t` (its first activity, pre-plugins included); returns its stop time. */
function layout(node: Section, rng: Random, t: number): number {
  for (const child of node.children.filter((c) => c.pluginBefore))
    t = layout(child, rng, t) + rng.int(200, 5000);
  node.startUs = t;
  const main = node.children.filter((c) => !c.pluginBefore);
  if (main.length > 0) {
    t += rng.int(500, 20000);
    for (const child of main) t = layout(child, rng, t) + rng.int(200, 5000);
    node.stopUs = Math.max(t, node.startUs + (node.durationUs ?? 0));
  } else {
    node.stopUs = t + (node.durationUs ?? rng.int(10000, 500000));
  }
  return node.stopUs;
}

type Phase = 'init' | 'start' | 'stop';

function order(root: Section, rng: Random): [Phase, Section][] {
  const out: [Phase, Section][] = [];
  let nextSeq = 1;
  const cursors = new Map<string, number>();
  const emit = (phase: Phase, node: Section): void => {
    if (node.seqNum === 0) node.seqNum = nextSeq++;
    // A section's lines in its log file: its banner at start, its own and its children's lines by its stop.
    // The TestSuite and Tasks have no `logs`: a Task log's first section begins at 0.
    if (!LEVEL_TYPES.has(node.type)) {
      if (phase === 'start') {
        node.logBegin = cursors.get(node.logfile) ?? 0;
        cursors.set(node.logfile, node.logBegin + rng.int(490, 530));
      } else if (phase === 'stop') {
        const end = (cursors.get(node.logfile) ?? 0) + rng.int(180, 450);
        cursors.set(node.logfile, end);
        node.logSize = end - node.logBegin;
      }
    }
    out.push([phase, node]);
  };
  const walk = (node: Section): void => {
    const pre = node.children.filter((c) => c.pluginBefore);
    if (LEVEL_TYPES.has(node.type) || pre.length > 0) emit('init', node);
    pre.forEach(walk);
    emit('start', node);
    node.children.filter((c) => !c.pluginBefore).forEach(walk);
    emit('stop', node);
  };
  walk(root);
  return out;
}

/** Real 23.2 sends every datetime with `timezone(timedelta(0), 'UTC')`. */
const UTC = new PyTimezone(0, 'UTC');

/** A datetime whose wall clock, read as UTC, is `wallUs` microseconds after the epoch (integer). */
function dateTimeFromWallUs(wallUs: number, tz: PyTimezone | undefined): PyDateTime {
  const d = new Date(Math.floor(wallUs / 1000));
  const microsecond = wallUs - Math.floor(wallUs / 1e6) * 1e6;
  return new PyDateTime(
    d.getUTCFullYear(),
    d.getUTCMonth() + 1,
    d.getUTCDate(),
    d.getUTCHours(),
    d.getUTCMinutes(),
    d.getUTCSeconds(),
    microsecond,
    tz,
  );
}

function wallUs(dt: PyDateTime): number {
  return Date.UTC(dt.year, dt.month - 1, dt.day, dt.hour, dt.minute, dt.second) * 1000 + dt.microsecond;
}

function pyTime(epochUs: number): PyDateTime {
  return dateTimeFromWallUs(epochUs, UTC);
}

const pad = (n: number, width = 2): string => String(n).padStart(width, '0');

/** easypy's run id of job `name` started at `epochUs`: `<name>.<YYYYMonDD_HH:MM:SS.ffffff>` (here in UTC). */
function runId(name: string, epochUs: number): string {
  const d = dateTimeFromWallUs(epochUs, undefined);
  const stamp =
    `${d.year}${MONTHS[d.month - 1]!}${pad(d.day)}_` +
    `${pad(d.hour)}:${pad(d.minute)}:${pad(d.second)}.${pad(d.microsecond, 6)}`;
  return `${name}.${stamp}`;
}

/** The job name and start (epoch µs) of an easypy run id, if `id` is one. */
function parseRunId(id: string): { name: string; epochUs: number } | undefined {
  const m = RUN_ID.exec(id);
  const month = m ? MONTHS.indexOf(m[3]!) : -1;
  if (!m || month < 0) return undefined;
  const [year, day, hour, minute, second, micro] = [2, 4, 5, 6, 7, 8].map((i) => Number(m[i]));
  const ms = Date.UTC(year!, month, day, hour, minute, second);
  return { name: m[1]!, epochUs: ms * 1000 + micro! };
}

function pyResult(value: ResultValue, reason: string | null, data: PyDict | null): PyObject {
  const code = RESULT_CODES[value];
  // pyats.results.result.TestResult pickles as TestResult.__new__(cls, code, reason, data) + its __dict__.
  const state: PyDict = { code, value, tims: TIMS_VALUES[value], reason, data };
  return new PyObject('pyats.results.result', 'TestResult', [code, reason, data && { ...data }], state);
}

/** Ids from the Task down (the TestSuite's own for the TestSuite), as `idlist` gives them. */
function idList(node: Section): string[] {
  const ids: string[] = [];
  for (let at: Section | undefined = node; at !== undefined; at = at.parent) {
    if (at.type === 'TestSuite' && at !== node) break;
    ids.unshift(at.id);
  }
  return ids;
}

const basename = (path: string): string => path.slice(path.lastIndexOf('/') + 1);

/** One event, with the keys real 23.2 sends for it, in its order. */
function eventDict(phase: Phase, node: Section): PyDict {
  const level = LEVEL_TYPES.has(node.type);
  const ids = idList(node);
  const d: PyDict = {
    type: node.type,
    seq_num: node.seqNum,
    id: node.id,
    fullid: level ? node.id : ids.join('.'),
    idlist: ids,
    // init_ names a section by its id: init_testsuite by the run id, init_task by the task id.
    name: phase === 'init' ? node.id : node.name,
  };
  if (phase !== 'init') d['starttime'] = pyTime(node.startUs);
  if (phase === 'stop') {
    d['stoptime'] = pyTime(node.stopUs);
    d['runtime'] = (node.stopUs - node.startUs) / 1e6;
    // stop_task and stop_testsuite carry no result: the roll-up is the subscriber's to make.
    if (!level) d['result'] = pyResult(node.result, node.reason, node.data);
  }
  if (phase !== 'init' && node.type !== 'TestSuite') {
    // A quirk of 23.2: stop_task names the Task's log file without its directory.
    d['logfile'] = phase === 'stop' && level ? basename(node.logfile) : node.logfile;
  }
  if (phase !== 'init' && node.xref) d['xref'] = { ...node.xref };
  d['event'] = `${phase}_${node.eventSuffix}`;
  if (node.parent) d['parent_seq_num'] = node.parent.seqNum;
  if (phase !== 'init' && !level) {
    const logs: PyDict = { file: basename(node.logfile), begin: node.logBegin };
    if (phase === 'stop') logs['size'] = node.logSize;
    d['logs'] = logs;
  }
  return d;
}

/**
 * The events of one realistic easypy run, in the order and shapes a pyATS 23.2 Reporter Server sends them:
 * init_testsuite / start_testsuite (id: the run id), init_task / start_task for Task-1, then start_section /
 * stop_section for CommonSetup, Testcases with nested Steps and CommonCleanup, stop_task, stop_testsuite. Every
 * result value appears; parents carry the roll-up, except the Task and TestSuite, whose stops carry no result.
 */
export function simulatedJob(opts: SimulatedJobOptions = {}): PyDict[] {
  const rng = new Random(opts.seed ?? 1);
  const testcases = Math.max(1, Math.floor(opts.testcases ?? rng.int(4, 6)));
  const jobName = opts.jobName ?? opts.jobId ?? 'demo_job';
  const root = buildTree(rng, jobName, testcases, opts.plugins === true);
  resolveResults(root);
  const firstUs = Math.round((opts.startMs ?? DEFAULT_START_MS) * 1000);
  layout(root, rng, firstUs);
  // easypy names the run (and its runinfo directory) as it starts, seconds before the TestSuite starts.
  root.id = runId(jobName, firstUs - rng.int(1_500_000, 4_000_000));
  assignLogfiles(root, `${RUNINFO_ROOT}/${root.id}/JobLog.${jobName}`, `${RUNINFO_ROOT}/${root.id}`);
  return order(root, rng).map(([phase, node]) => eventDict(phase, node));
}

/**
 * The same events moved in time so that the earliest top-level datetime is `startMs` (whole ms): how the demo
 * reporter makes each looped run look like a new run. An easypy run id (`<job>.<YYYYMonDD_HH:MM:SS.ffffff>`,
 * the TestSuite's id) moves by as much, wherever it appears (ids, idlists, log file paths). Naive datetimes are
 * read as UTC; other values are kept.
 */
export function retimeJob(events: readonly PyDict[], startMs: number): PyDict[] {
  const absoluteUs = (dt: PyDateTime): number => wallUs(dt) - (dt.tz?.offsetSeconds ?? 0) * 1e6;
  let earliest: number | undefined;
  for (const event of events) {
    for (const value of Object.values(event)) {
      if (value instanceof PyDateTime && (earliest === undefined || absoluteUs(value) < earliest)) {
        earliest = absoluteUs(value);
      }
    }
  }
  if (earliest === undefined) return events.map((e) => ({ ...e }));
  const deltaUs = Math.round(startMs) * 1000 - earliest;
  const suiteId = events.find((e) => e['type'] === 'TestSuite')?.['id'];
  const parsed = typeof suiteId === 'string' ? parseRunId(suiteId) : undefined;
  const run = parsed && { id: suiteId as string, movedId: runId(parsed.name, parsed.epochUs + deltaUs) };
  const rename = (value: PyValue): PyValue => {
    if (run === undefined) return value;
    if (typeof value === 'string') return value.split(run.id).join(run.movedId);
    return Array.isArray(value) ? value.map(rename) : value;
  };
  return events.map((event) => {
    const moved: PyDict = {};
    for (const [key, value] of Object.entries(event)) {
      moved[key] =
        value instanceof PyDateTime ? dateTimeFromWallUs(wallUs(value) + deltaUs, value.tz) : rename(value);
    }
    return moved;
  });
}
