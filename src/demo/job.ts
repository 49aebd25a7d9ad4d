// A simulated pyATS job for `pyats-exporter demo`: the event dicts a Reporter Server would send, as Python value
// stand-ins ready to pickle. Pure and deterministic for its options.
import { worstResult, type ResultValue } from '../events/index.js';
import { PyDateTime, PyObject, PyTimezone, type PyDict, type PyValue } from '../python/index.js';

export interface SimulatedJobOptions {
  /** Shapes the job (testcases, steps, durations, where each result lands). Default 1. */
  seed?: number;
  /** Epoch ms of the job's first activity (its pre-job plugin). Default 2024-01-01T00:00:00Z. */
  startMs?: number;
  /** The TestSuite id. Default `demo_job`. */
  jobId?: string;
  /** Testcases in the script (at least 1). Default 4–6, from the seed. */
  testcases?: number;
}

const DEFAULT_START_MS = Date.UTC(2024, 0, 1);

/** pyATS result codes as its result objects carry them in `code`. */
const RESULT_CODES: Record<ResultValue, number> = {
  failed: 0,
  passed: 1,
  aborted: 3,
  blocked: 4,
  skipped: 5,
  errored: 6,
  passx: 7,
};

const REASONS: Partial<Record<ResultValue, string>> = {
  failed: 'BGP neighbor 10.0.0.2 is in state Idle, expected Established',
  errored: "KeyError: 'Ethernet1/7'",
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

interface Section {
  type: string;
  id: string;
  name: string;
  eventSuffix: string;
  /** Runs after its parent's `init_` and before its `start_` (pre-job / pre-task plugin). */
  pluginBefore: boolean;
  durationUs?: number;
  ownResult?: ResultValue;
  xref?: { file: string; line: number };
  children: Section[];
  parent?: Section;
  seqNum: number;
  result: ResultValue;
  reason: string | null;
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
  const suffixes: Record<string, string> = {
    TestSuite: 'testsuite',
    Task: 'task',
    Plugin: 'plugin',
    Step: 'step',
  };
  return {
    type,
    id,
    name: extra.name ?? id,
    eventSuffix: suffixes[type] ?? 'section',
    pluginBefore: extra.pluginBefore ?? false,
    durationUs: extra.durationUs,
    xref: extra.xref,
    children: [],
    seqNum: 0,
    result: 'passed',
    reason: null,
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

function buildTree(rng: Random, jobId: string, testcaseCount: number): Section {
  let line = 20;
  const xref = (): { file: string; line: number } => {
    line += rng.int(8, 40);
    return { file: SCRIPT, line };
  };
  const ms = (lo: number, hi: number): number => rng.int(lo * 1000, hi * 1000);

  const suite = section('TestSuite', jobId);
  add(suite, section('Plugin', 'KleenexPlugin', { durationUs: ms(200, 900), pluginBefore: true }));
  const task = section('Task', 'Task-1', { name: 'health_checks' });
  add(suite, task);
  add(task, section('Plugin', 'GenieTelemetryPlugin', { durationUs: ms(50, 400), pluginBefore: true }));
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
          const step = section('Step', String(k), {
            name: `STEP ${k}: ${rng.pick(STEP_POOL)}`,
            xref: xref(),
          });
          if (k === 1) {
            const subCount = rng.int(1, 2);
            for (let m = 1; m <= subCount; m++) {
              const sub = section('Step', `${k}.${m}`, {
                name: `STEP ${k}.${m}: ${rng.pick(STEP_POOL)}`,
                durationUs: ms(10, 400),
                xref: xref(),
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
  add(suite, section('Plugin', 'XunitPlugin', { durationUs: ms(20, 200) }));

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

function assignLogfiles(node: Section, inherited: string): void {
  node.logfile = node.type === 'Task' ? `TaskLog.${node.id}` : inherited;
  for (const child of node.children) assignLogfiles(child, node.logfile);
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
    if (phase === 'start') {
      node.logBegin = cursors.get(node.logfile) ?? 0;
      cursors.set(node.logfile, node.logBegin + rng.int(80, 400));
    } else if (phase === 'stop') {
      const end = (cursors.get(node.logfile) ?? 0) + rng.int(40, 200);
      cursors.set(node.logfile, end);
      node.logSize = end - node.logBegin;
    }
    out.push([phase, node]);
  };
  const walk = (node: Section): void => {
    const pre = node.children.filter((c) => c.pluginBefore);
    if (node.type === 'TestSuite' || node.type === 'Task' || pre.length > 0) emit('init', node);
    pre.forEach(walk);
    emit('start', node);
    node.children.filter((c) => !c.pluginBefore).forEach(walk);
    emit('stop', node);
  };
  walk(root);
  return out;
}

const UTC = new PyTimezone(0, undefined);

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

function pyResult(value: ResultValue, reason: string | null): PyObject {
  const state: PyDict = { value, code: RESULT_CODES[value], reason, data: null };
  return new PyObject('pyats.results', value[0]!.toUpperCase() + value.slice(1), [], state);
}

function eventDict(phase: Phase, node: Section): PyDict {
  const d: PyDict = { event: `${phase}_${node.eventSuffix}`, type: node.type, seq_num: node.seqNum };
  if (node.parent) d['parent_seq_num'] = node.parent.seqNum;
  d['id'] = node.id;
  d['name'] = node.name;
  if (phase === 'init') return d;
  d['starttime'] = pyTime(node.startUs);
  d['logfile'] = node.logfile;
  if (node.xref) d['xref'] = { ...node.xref } satisfies PyDict;
  if (phase === 'stop') {
    d['stoptime'] = pyTime(node.stopUs);
    d['runtime'] = (node.stopUs - node.startUs) / 1e6;
    d['result'] = pyResult(node.result, node.reason);
    d['logs'] = { file: node.logfile, begin: node.logBegin, size: node.logSize } satisfies Record<
      string,
      PyValue
    >;
  }
  return d;
}

/**
 * The events of one realistic job, in the order a pyATS Reporter Server sends them: a TestSuite with a pre-job
 * plugin, Task-1 with a pre-task plugin (init_task → plugin → start_task), CommonSetup, Testcases with nested
 * Steps, CommonCleanup and a post-job plugin; every result value appears, parents carry the roll-up.
 */
export function simulatedJob(opts: SimulatedJobOptions = {}): PyDict[] {
  const rng = new Random(opts.seed ?? 1);
  const testcases = Math.max(1, Math.floor(opts.testcases ?? rng.int(4, 6)));
  const root = buildTree(rng, opts.jobId ?? 'demo_job', testcases);
  resolveResults(root);
  assignLogfiles(root, `JobLog.${root.id}`);
  layout(root, rng, Math.round((opts.startMs ?? DEFAULT_START_MS) * 1000));
  return order(root, rng).map(([phase, node]) => eventDict(phase, node));
}

/**
 * The same events moved in time so that the earliest top-level datetime is `startMs` (whole ms): how the demo
 * reporter makes each looped run look like a new run. Naive datetimes are read as UTC; other values are kept.
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
  return events.map((event) => {
    const moved: PyDict = {};
    for (const [key, value] of Object.entries(event)) {
      moved[key] =
        value instanceof PyDateTime ? dateTimeFromWallUs(wallUs(value) + deltaUs, value.tz) : value;
    }
    return moved;
  });
}
