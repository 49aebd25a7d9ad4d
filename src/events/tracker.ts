// Section tracker: one table per stream (reporter connection, ingest stream, replay file), keyed by
// seq_num. Pairs init_/start_/stop_ events into FinishedSection records, ends what is left open as
// abandoned when the stream ends, and releases each section as soon as it is finished.
import type { Logger } from '../log.js';
import { runIdFor, spanIdFor, traceIdFor } from './ids.js';
import {
  RESULT_VALUES,
  type CodeLocation,
  type FinishedSection,
  type JobInfo,
  type ResultValue,
  type SectionEvent,
  type SectionResult,
  type SectionSink,
} from './types.js';

/** Testscript-level containers: what Easypy's summary and success rate count. */
const TESTCASE_TYPES: ReadonlySet<string> = new Set(['CommonSetup', 'Testcase', 'CommonCleanup']);
const SUITE_TYPE = 'TestSuite';
const TASK_TYPE = 'Task';
/** Finished records held back while the suite's start time (part of the trace id) is not yet known. */
const MAX_PENDING = 10_000;

export interface TrackerOptions {
  sink: SectionSink;
  logger: Logger;
  /** Wall clock in epoch ms, used to end abandoned sections. */
  now?: () => number;
}

export interface TrackerStats {
  streams: number;
  openSections: number;
}

interface TrackedSection {
  seqNum: number;
  parentSeqNum?: number;
  type: string;
  id?: string;
  name?: string;
  startTime?: number;
  logfile?: string;
  xref?: CodeLocation;
  task: string;
  testcase?: string;
  /** sectionStarted was emitted for it. */
  started: boolean;
  /** Its parent had not been seen when it was first seen. */
  orphan: boolean;
}

/** What is known about a section when it ends; the tracker fills the ids in once the job is fixed. */
type SectionEnd = Omit<FinishedSection, 'job' | 'spanId' | 'parentSpanId'>;

class JobState {
  readonly sections = new Map<number, TrackedSection>();
  /** seq_nums already finished: repeated events for them are ignored (idempotence). */
  readonly finished = new Set<number>();
  readonly counts = Object.fromEntries(RESULT_VALUES.map((r) => [r, 0])) as Record<ResultValue, number>;
  suiteSeq?: number;
  suiteId?: string;
  suiteStart?: number;
  suiteStarted = false;
  suiteResult?: SectionResult;
  suiteStop?: number;
  ended = false;
  earliestTime?: number;
  info?: JobInfo;
  pending: SectionEnd[] = [];

  constructor(readonly fallbackTag: string) {}
}

export class SectionTracker {
  private readonly streams = new Map<string, JobState>();
  private readonly sink: SectionSink;
  private readonly logger: Logger;
  private readonly now: () => number;

  constructor(options: TrackerOptions) {
    this.sink = options.sink;
    this.logger = options.logger;
    this.now = options.now ?? Date.now;
  }

  stats(): TrackerStats {
    let openSections = 0;
    for (const job of this.streams.values()) openSections += job.sections.size;
    return { streams: this.streams.size, openSections };
  }

  onEvent(streamId: string, event: SectionEvent): void {
    let job = this.streams.get(streamId);
    // A new TestSuite on a stream whose previous job ended starts a new job (and a new trace).
    if (job !== undefined && event.type === SUITE_TYPE && event.phase !== 'stop' && job.ended) {
      this.endJob(job);
      job = undefined;
    }
    if (job === undefined) {
      job = new JobState(`${streamId}`);
      this.streams.set(streamId, job);
    }
    noteTime(job, event.startTime);
    noteTime(job, event.stopTime);
    if (job.finished.has(event.seqNum)) {
      this.logger.debug(
        { stream: streamId, seq_num: event.seqNum, event: event.event },
        'event for a finished section ignored',
      );
      return;
    }
    if (event.type === SUITE_TYPE && job.suiteSeq === undefined) {
      job.suiteSeq = event.seqNum;
    }
    if (event.seqNum === job.suiteSeq) {
      job.suiteId ??= event.id ?? event.name;
      if (event.startTime !== undefined) job.suiteStart ??= event.startTime;
    }
    switch (event.phase) {
      case 'init':
        this.track(job, event);
        break;
      case 'start':
        this.onStart(job, event);
        break;
      case 'stop':
        this.onStop(job, event);
        break;
    }
  }

  /** The stream ended (disconnect, end of file): everything still open is abandoned. */
  endStream(streamId: string): void {
    const job = this.streams.get(streamId);
    if (job === undefined) return;
    this.streams.delete(streamId);
    this.endJob(job);
  }

  /** Ends every stream, as on shutdown. */
  endAll(): void {
    for (const streamId of [...this.streams.keys()]) this.endStream(streamId);
  }

  private track(job: JobState, event: SectionEvent): TrackedSection {
    let section = job.sections.get(event.seqNum);
    if (section === undefined) {
      const parent = event.parentSeqNum === undefined ? undefined : job.sections.get(event.parentSeqNum);
      const isRoot = event.parentSeqNum === undefined || event.seqNum === job.suiteSeq;
      section = {
        seqNum: event.seqNum,
        type: event.type,
        task:
          event.type === TASK_TYPE
            ? (event.id ?? event.name ?? String(event.seqNum))
            : inheritTask(job, event, parent),
        started: false,
        orphan: !isRoot && parent === undefined && !job.finished.has(event.parentSeqNum as number),
      };
      const testcase = TESTCASE_TYPES.has(event.type) ? (event.id ?? event.name) : parent?.testcase;
      if (testcase !== undefined) section.testcase = testcase;
      job.sections.set(event.seqNum, section);
    }
    // Later events may carry what earlier ones lacked; never erase a known value.
    if (event.parentSeqNum !== undefined) section.parentSeqNum = event.parentSeqNum;
    if (event.id !== undefined) section.id = event.id;
    if (event.name !== undefined) section.name = event.name;
    if (event.startTime !== undefined) section.startTime = event.startTime;
    if (event.logfile !== undefined) section.logfile = event.logfile;
    if (event.xref !== undefined) section.xref = event.xref;
    return section;
  }

  private onStart(job: JobState, event: SectionEvent): void {
    const section = this.track(job, event);
    if (event.seqNum === job.suiteSeq) {
      job.suiteStarted = true;
      this.flushPending(job);
    }
    if (!section.started) {
      section.started = true;
      this.sink.sectionStarted({
        job: this.jobInfoForStart(job),
        seqNum: section.seqNum,
        type: section.type,
        task: section.task,
      });
    }
  }

  private onStop(job: JobState, event: SectionEvent): void {
    // A stop whose start was never seen (attached mid-job, or events out of order) is complete on its own.
    const section = this.track(job, event);
    const stopTime =
      event.stopTime ??
      (section.startTime !== undefined && event.runtime !== undefined
        ? section.startTime + event.runtime * 1000
        : this.now());
    const startTime =
      section.startTime ?? (event.runtime !== undefined ? stopTime - event.runtime * 1000 : stopTime);
    const result: SectionResult = event.result ?? {
      value: 'errored',
      reason: 'stop event carried no result',
    };
    job.sections.delete(section.seqNum);
    job.finished.add(section.seqNum);
    if (TESTCASE_TYPES.has(section.type)) job.counts[result.value] += 1;
    this.emit(job, {
      ...describeSection(section),
      startTime,
      stopTime: Math.max(stopTime, startTime),
      runtime: event.runtime ?? Math.max(0, (stopTime - startTime) / 1000),
      result,
      incomplete: false,
    });
    if (section.seqNum === job.suiteSeq) {
      job.suiteResult = result;
      job.suiteStop = stopTime;
      job.suiteStart ??= startTime;
      job.suiteStarted = true;
      this.flushPending(job);
      this.finishJob(job, false);
    }
  }

  private endJob(job: JobState): void {
    if (job.sections.size > 0) {
      const now = this.now();
      // Children first (higher seq_nums started later), so a parent never ends before its children.
      const open = [...job.sections.values()].sort((a, b) => b.seqNum - a.seqNum);
      this.logger.warn(
        { job: job.suiteId ?? 'unknown', open: open.length },
        'stream ended with sections still open; ending them as abandoned',
      );
      for (const section of open) {
        job.sections.delete(section.seqNum);
        job.finished.add(section.seqNum);
        const startTime = section.startTime ?? now;
        const stopTime = Math.max(now, startTime);
        const result: SectionResult = { value: 'aborted', reason: 'job ended before the section stopped' };
        if (TESTCASE_TYPES.has(section.type)) job.counts.aborted += 1;
        this.emit(job, {
          ...describeSection(section),
          startTime,
          stopTime,
          runtime: (stopTime - startTime) / 1000,
          result,
          incomplete: true,
        });
      }
    }
    job.suiteStarted = true;
    this.flushPending(job);
    if (!job.ended && (job.info !== undefined || job.suiteSeq !== undefined)) this.finishJob(job, true);
  }

  private finishJob(job: JobState, incomplete: boolean): void {
    job.ended = true;
    const info = this.jobInfo(job);
    const stopTime = job.suiteStop ?? this.now();
    this.sink.jobFinished({
      job: info,
      result: incomplete && job.suiteResult === undefined ? 'aborted' : (job.suiteResult?.value ?? 'aborted'),
      ...(job.suiteStart !== undefined
        ? { startTime: job.suiteStart, runtime: Math.max(0, (stopTime - job.suiteStart) / 1000) }
        : {}),
      stopTime,
      counts: { ...job.counts },
      incomplete,
    });
  }

  /**
   * The trace id includes the suite's start time, so a finished section waits (bounded) until the suite
   * has started; a job that never shows its suite (attached mid-job) is fixed from what was seen.
   */
  private emit(job: JobState, end: SectionEnd): void {
    const waiting =
      job.info === undefined &&
      job.suiteSeq !== undefined &&
      job.suiteStart === undefined &&
      !job.suiteStarted;
    if (waiting && job.pending.length < MAX_PENDING) {
      job.pending.push(end);
      return;
    }
    this.flushPending(job, true);
    this.deliver(job, end);
  }

  private flushPending(job: JobState, force = false): void {
    if (job.pending.length === 0 || (!force && !job.suiteStarted)) return;
    const pending = job.pending;
    job.pending = [];
    for (const end of pending) this.deliver(job, end);
  }

  private deliver(job: JobState, end: SectionEnd): void {
    const info = this.jobInfo(job);
    const record: FinishedSection = { ...end, job: info, spanId: spanIdFor(info.runId, end.seqNum) };
    if (end.parentSeqNum !== undefined && end.seqNum !== job.suiteSeq) {
      record.parentSpanId = spanIdFor(info.runId, end.parentSeqNum);
    }
    this.sink.sectionFinished(record);
  }

  private jobInfoForStart(job: JobState): JobInfo {
    // In-progress gauges only need the job id; do not fix the run identity early for them.
    return job.info ?? { jobId: job.suiteId ?? 'unknown', runId: '', traceId: '' };
  }

  private jobInfo(job: JobState): JobInfo {
    if (job.info === undefined) {
      const jobId = job.suiteId ?? 'unknown';
      const fallback =
        job.earliestTime !== undefined ? new Date(job.earliestTime).toISOString() : job.fallbackTag;
      const runId = runIdFor(jobId, job.suiteStart, fallback);
      job.info = { jobId, runId, traceId: traceIdFor(runId) };
    }
    return job.info;
  }
}

function noteTime(job: JobState, time: number | undefined): void {
  if (time !== undefined && (job.earliestTime === undefined || time < job.earliestTime))
    job.earliestTime = time;
}

function inheritTask(job: JobState, event: SectionEvent, parent: TrackedSection | undefined): string {
  if (parent !== undefined) return parent.task;
  if (event.parentSeqNum === undefined || event.parentSeqNum === job.suiteSeq || event.type === SUITE_TYPE) {
    return 'none';
  }
  return 'unknown';
}

function describeSection(
  section: TrackedSection,
): Omit<SectionEnd, 'startTime' | 'stopTime' | 'runtime' | 'result' | 'incomplete'> {
  const described: ReturnType<typeof describeSection> = {
    seqNum: section.seqNum,
    type: section.type,
    task: section.task,
    orphan: section.orphan,
    started: section.started,
  };
  if (section.parentSeqNum !== undefined) described.parentSeqNum = section.parentSeqNum;
  if (section.id !== undefined) described.id = section.id;
  if (section.name !== undefined) described.name = section.name;
  if (section.testcase !== undefined) described.testcase = section.testcase;
  if (section.logfile !== undefined) described.logfile = section.logfile;
  if (section.xref !== undefined) described.xref = section.xref;
  return described;
}
