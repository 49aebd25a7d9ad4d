// Runs of a pyATS job as NDJSON for the exporter's ingest endpoints, shaped as a real pyATS 23.2 reporter
// sends them (DESIGN §1: a TestSuite id unique per run, `job.2026Dec02_16:18:03.912790`, whose init name is
// that id and whose start name is the job's; `fullid` and `idlist`; `logs` as {file, begin} at start and
// {file, begin, size} at stop; start_section / stop_section for every section; no result on stop_task and
// stop_testsuite), in the JSON the bridge forwards them as (times ISO 8601 with their offset, results as
// {value, reason}). See docs/ingest.md.

export type RunResult = 'passed' | 'failed' | 'aborted' | 'blocked' | 'skipped' | 'errored' | 'passx';

export interface RunTestcase {
  id: string;
  result: RunResult;
  /** Seconds. */
  runtime: number;
  reason?: string;
}

export interface JobRun {
  /** The job's name (`job` for job.py). */
  name: string;
  /** When the run's TestSuite started. */
  start: Date;
  testcases: RunTestcase[];
  task?: string;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** Easypy's TestSuite id of a run: `<name>.<YYYYMonDD_HH:MM:SS.ffffff>` (here in UTC). */
export function easypyRunId(name: string, start: Date): string {
  const two = (n: number): string => String(n).padStart(2, '0');
  const micros = String(start.getUTCMilliseconds() * 1000 + 123).padStart(6, '0');
  return (
    `${name}.${start.getUTCFullYear()}${MONTHS[start.getUTCMonth()]}${two(start.getUTCDate())}_` +
    `${two(start.getUTCHours())}:${two(start.getUTCMinutes())}:${two(start.getUTCSeconds())}.${micros}`
  );
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace('Z', '+00:00');
}

/** The event dicts of one run, in the order the reporter sends them. */
export function jobRunEvents(run: JobRun): Record<string, unknown>[] {
  const suiteId = easypyRunId(run.name, run.start);
  const task = run.task ?? 'Task-1';
  const logfile = `/runinfo/${suiteId}/TaskLog.${task}`;
  const events: Record<string, unknown>[] = [];
  let at = run.start.getTime();
  let offset = 0;
  const suite = { type: 'TestSuite', seq_num: 1, id: suiteId, fullid: suiteId, idlist: [suiteId] };
  events.push({ ...suite, name: suiteId, event: 'init_testsuite' });
  const suiteStart = iso(at);
  events.push({ ...suite, name: run.name, starttime: suiteStart, event: 'start_testsuite' });
  const taskBase = { type: 'Task', seq_num: 2, parent_seq_num: 1, id: task, fullid: task, idlist: [task] };
  events.push({ ...taskBase, name: task, event: 'init_task' });
  at += 40;
  const taskStart = iso(at);
  events.push({
    ...taskBase,
    name: 'script',
    starttime: taskStart,
    logfile,
    logs: { file: `TaskLog.${task}`, begin: 0 },
    event: 'start_task',
  });
  const sections: { type: string; id: string; result: RunResult; runtime: number; reason?: string }[] = [
    { type: 'CommonSetup', id: 'common_setup', result: 'passed', runtime: 0.5 },
    ...run.testcases.map((tc) => ({ type: 'Testcase', ...tc })),
  ];
  let seqNum = 2;
  for (const section of sections) {
    seqNum += 1;
    const base = {
      type: section.type,
      seq_num: seqNum,
      parent_seq_num: 2,
      id: section.id,
      fullid: `${task}.${section.id}`,
      idlist: [task, section.id],
      name: section.id,
      logfile,
      xref: { file: '/lab/checks.py', line: 10 * seqNum, source_hash: 'f00d' },
    };
    const start = at + 5;
    const stop = start + section.runtime * 1000;
    const size = 80 + seqNum;
    events.push({
      ...base,
      starttime: iso(start),
      logs: { file: `TaskLog.${task}`, begin: offset },
      event: 'start_section',
    });
    events.push({
      ...base,
      starttime: iso(start),
      stoptime: iso(stop),
      runtime: section.runtime,
      result: { value: section.result, reason: section.reason ?? null },
      logs: { file: `TaskLog.${task}`, begin: offset, size },
      event: 'stop_section',
    });
    offset += size;
    at = stop;
  }
  at += 10;
  events.push({
    ...taskBase,
    name: 'script',
    starttime: taskStart,
    stoptime: iso(at),
    runtime: (at - Date.parse(taskStart)) / 1000,
    logfile,
    logs: { file: `TaskLog.${task}`, begin: 0, size: offset },
    event: 'stop_task',
  });
  at += 20;
  events.push({
    ...suite,
    name: run.name,
    starttime: suiteStart,
    stoptime: iso(at),
    runtime: (at - run.start.getTime()) / 1000,
    event: 'stop_testsuite',
  });
  return events;
}

export function toNdjson(events: readonly Record<string, unknown>[]): string {
  return events.map((e) => `${JSON.stringify(e)}\n`).join('');
}

/** POSTs one run to an exporter's `/api/v1/events` (`--ingest-http`, no token) and checks all was taken. */
export async function postRun(exporterUrl: string, run: JobRun): Promise<void> {
  const events = jobRunEvents(run);
  const response = await fetch(`${exporterUrl}/api/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-ndjson' },
    body: toNdjson(events),
  });
  const body = (await response.json()) as { accepted: number; rejected_total: number };
  if (!response.ok || body.accepted !== events.length || body.rejected_total !== 0) {
    throw new Error(`POST /api/v1/events answered ${response.status}: ${JSON.stringify(body)}`);
  }
}
