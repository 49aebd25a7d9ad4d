// The typed records that flow through the pipeline: source → normalize → tracker → sinks.
// Past the normalizer nothing is `unknown`; sinks may trust every field here.
import type { CiContext } from './ci.js';

/** The seven pyATS result values (not in roll-up order: see ROLLUP_ORDER in results.ts). */
export const RESULT_VALUES = [
  'passed',
  'failed',
  'aborted',
  'blocked',
  'skipped',
  'errored',
  'passx',
] as const;
export type ResultValue = (typeof RESULT_VALUES)[number];

export interface SectionResult {
  value: ResultValue;
  reason?: string;
}

/** `init_X`, `start_X`, `stop_X`: the only three phases pyATS's reporter uses (DESIGN §1). */
export type EventPhase = 'init' | 'start' | 'stop';

export interface CodeLocation {
  file?: string;
  line?: number;
}

/** One reporter event after validation. Times are epoch milliseconds (fractional allowed). */
export interface SectionEvent {
  phase: EventPhase;
  /** The raw event name, e.g. `start_task`. */
  event: string;
  /** The section type as pyATS names it (`TestSuite`, `Task`, `Testcase`, `TestSection`, `Step`, ...). */
  type: string;
  seqNum: number;
  parentSeqNum?: number;
  id?: string;
  /**
   * pyATS's dotted path of ids from the Task down (`ExampleTask.TcPass.test_steps.STEP 1`); a TestSuite's
   * is its id.
   */
  fullid?: string;
  name?: string;
  startTime?: number;
  stopTime?: number;
  /** Seconds, as pyATS reports it. */
  runtime?: number;
  /** Absent when the stop carried none: pyATS sends none on `stop_task` / `stop_testsuite` (see tracker). */
  result?: SectionResult;
  logfile?: string;
  /** The section's bytes in its log file (pyATS's `logs: {file, begin, size}` at stop). */
  logRange?: LogRange;
  /** The tail of the section's log lines, sent by a source that can read the file (the bridge). */
  logExcerpt?: string;
  /** Only a location in the test script: xrefs into Python's library or pyATS itself are dropped. */
  xref?: CodeLocation;
}

/** Why the normalizer refused a raw event. Stable: used as the `reason` label. */
export const REJECT_REASONS = [
  'not_a_dict',
  'missing_event',
  'unknown_event',
  'bad_seq_num',
  'bad_parent_seq_num',
  'bad_time',
  'bad_runtime',
  'bad_result',
  'bad_field_type',
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

export type NormalizeOutcome =
  { ok: true; event: SectionEvent } | { ok: false; reason: RejectReason; detail: string };

/**
 * Where a section's log lines are: bytes `begin` to `begin + size` of `file`, relative to the job's runinfo
 * directory (pyATS's `logs` at stop; `logfile` beside it is the same file's absolute path on the job's host).
 */
export interface LogRange {
  file: string;
  begin: number;
  size: number;
}

/** What a source knows of a stream beyond its events (the job's environment). */
export interface StreamContext {
  /** The CI run that started the job (TRACEPARENT and CI variables of the job's environment). */
  ci?: CiContext;
  /** The job's runinfo directory, when the source reads the job's own files (the native socket). */
  runinfoDir?: string;
}

/** Identity of one pyATS job run, fixed the first time a span needs it (see tracker). */
export interface JobInfo {
  /**
   * The TestSuite's id, or `unknown` when the exporter attached mid-job. Easypy makes it unique per run
   * (`job.2026Dec02_16:18:03.912790`), so it names one run, never a label value.
   */
  jobId: string;
  /**
   * The job's name (`job`): the TestSuite's name from its start event, else `jobId` without easypy's
   * timestamp suffix. The bounded-cardinality name the Prometheus `job` label and Pushgateway group use.
   */
  jobName: string;
  /** Unique per run: `jobId` plus the suite start time; trace and span ids derive from it. */
  runId: string;
  /** The CI run the job belongs to; with a TRACEPARENT its trace is the trace id and its span the root's parent. */
  ci?: CiContext;
  /** The runinfo directory the job's log files (`logfile`) are relative to, when the exporter can read it. */
  runinfoDir?: string;
  /** 32 lowercase hex chars. */
  traceId: string;
}

/** A section the tracker has seen start (used for in-progress gauges). */
export interface StartedSection {
  job: JobInfo;
  seqNum: number;
  type: string;
  task: string;
}

/** A section that ended, with everything a sink needs. Produced once per seq_num per job. */
export interface FinishedSection {
  job: JobInfo;
  seqNum: number;
  parentSeqNum?: number;
  /** 16 lowercase hex chars, deterministic from (runId, seqNum). */
  spanId: string;
  /** Span id of the parent section; absent for the root. */
  parentSpanId?: string;
  type: string;
  id?: string;
  fullid?: string;
  name?: string;
  /** Id of the enclosing Task (or `none` outside any task, `unknown` if its ancestry was never seen). */
  task: string;
  /** Id of the enclosing Testcase / CommonSetup / CommonCleanup, when there is one. */
  testcase?: string;
  startTime: number;
  stopTime: number;
  /** Seconds. */
  runtime: number;
  /** The stop's result, or when it carried none the roll-up of the section's finished children. */
  result: SectionResult;
  logfile?: string;
  logRange?: LogRange;
  /** The tail of the section's log lines, as the source sent it or as read from `logfile` (SectionLogSink). */
  logExcerpt?: string;
  xref?: CodeLocation;
  /** True when the job ended (disconnect, shutdown) before this section stopped. */
  incomplete: boolean;
  /** True when this section's parent_seq_num was never seen and it could not be linked to it. */
  orphan: boolean;
  /** True when `sectionStarted` was emitted for this section (so in-progress gauges must be decremented). */
  started: boolean;
}

/** One job's outcome, emitted when its TestSuite stops or the stream ends. */
export interface JobSummary {
  job: JobInfo;
  result: ResultValue;
  startTime?: number;
  stopTime: number;
  /** Seconds. */
  runtime?: number;
  /** Counts of the job's testscript-level sections (CommonSetup, Testcase, CommonCleanup) by result. */
  counts: Record<ResultValue, number>;
  incomplete: boolean;
}

/** What the tracker feeds. Every sink implements this; all callbacks are synchronous and must not throw. */
export interface SectionSink {
  sectionStarted(section: StartedSection): void;
  sectionFinished(section: FinishedSection): void;
  jobFinished(summary: JobSummary): void;
  /** Flush buffered output (spans). */
  forceFlush(): Promise<void>;
  shutdown(): Promise<void>;
}
