// Section tracker: one table per stream (reporter connection, ingest stream, replay file), keyed by
// seq_num. Pairs init_/start_/stop_ events into FinishedSection records, rolls children's results up into a
// stop that carries none, holds finished sections whose parent is unseen, ends what is left open as abandoned
// when the stream ends, and releases each job's state.
import type { Logger } from '../log.js';
import { runIdFor, spanIdFor, traceIdFor } from './ids.js';
import { rollUp } from './results.js';
import {
  RESULT_VALUES,
  type CodeLocation,
  type FinishedSection,
  type JobInfo,
  type LogRange,
  type ResultValue,
  type SectionEvent,
  type SectionResult,
  type SectionSink,
  type StreamContext,
} from './types.js';

/** Testscript-level containers: what Easypy's summary and success rate count. */
const TESTCASE_TYPES: ReadonlySet<string> = new Set(['CommonSetup', 'Testcase', 'CommonCleanup']);
const SUITE_TYPE = 'TestSuite';
const TASK_TYPE = 'Task';

/** No parent: the `heldByParent` key of sections whose parent would make a cycle (no event releases them). */
const NO_PARENT = -1;
/** How far up the parent chain a cycle is looked for; pyATS nests a few levels, never hundreds. */
const MAX_ANCESTRY = 256;

export const DEFAULT_MAX_PENDING = 10_000;
export const DEFAULT_MAX_HELD_ORPHANS = 10_000;
export const DEFAULT_MAX_OPEN_SECTIONS = 100_000;

/** Why the tracker refused an event (the pipeline counts it like a normalizer rejection). */
export type TrackerRejectReason = 'too_many_open_sections';

export interface TrackerOptions {
  sink: SectionSink;
  logger: Logger;
  /** Wall clock in epoch ms, used to end abandoned sections. */
  now?: () => number;
  /**
   * Records of one job held back while the suite's start time (part of the trace id) is not yet known;
   * past this the job's identity is fixed from what was seen. Default 10,000.
   */
  maxPending?: number;
  /**
   * Finished sections of one job held while their parent has not been seen (exporter attached mid-job);
   * past this the oldest is released, linked to its parent's deterministic span id and flagged orphan.
   * Default 10,000.
   */
  maxHeldOrphans?: number;
  /**
   * Sections one stream may have open (seen, not stopped) at once; the init_/start_ of another is refused
   * (`too_many_open_sections`), so a stream that never stops its sections cannot grow without bound. pyATS
   * has a few dozen open at a time. Default 100,000.
   */
  maxOpenSections?: number;
  /**
   * Reads the CI run a job's runinfo directory names (its env.txt), for a stream whose context has a
   * `runinfoDir` but no CI run yet: asked once per job, just before its first record goes out, because
   * easypy writes env.txt only a moment before the first task starts and a poll would often come too late.
   */
  readRunContext?: (runinfoDir: string) => StreamContext | undefined;
}

export interface TrackerStats {
  streams: number;
  /** Sections seen (init/start) and not stopped yet. */
  openSections: number;
  /** Finished sections waiting for their parent to be seen. */
  heldOrphans: number;
  /** Starts and finished sections waiting for the job's identity (the suite's start time). */
  pendingRecords: number;
  /** seq_nums remembered as finished, for idempotence, over all open jobs. */
  finishedSeqNums: number;
}

interface TrackedSection {
  seqNum: number;
  parentSeqNum?: number;
  type: string;
  id?: string;
  fullid?: string;
  name?: string;
  startTime?: number;
  logfile?: string;
  logRange?: LogRange;
  logExcerpt?: string;
  xref?: CodeLocation;
  task: string;
  testcase?: string;
  /** sectionStarted was emitted for it (or is queued to be). */
  started: boolean;
  /** Roll-up of the results of its children finished so far: its result when its stop carries none. */
  childResult: ResultValue | undefined;
  /** Its span id, once a child that stopped first needed it as parent id (computed once per section). */
  spanId?: string;
}

/**
 * A seq_num to link a span to instead of its `parentSeqNum`, or null for no parent; undefined: the parent.
 * Only orphans get one.
 */
type LinkSeq = number | null | undefined;

/** A finished record waiting for something (its parent, the job's identity), with its link override. */
interface HeldEnd {
  end: FinishedSection;
  linkSeq: LinkSeq;
}

/** Placeholder identity of a record not delivered yet; `deliver` replaces it (and the empty span id). */
const UNSET_JOB: JobInfo = { jobId: '', jobName: '', runId: '', traceId: '' };

/**
 * Easypy's suffix on the TestSuite id, `.<YYYY><Mon><DD>_<HH>:<MM>:<SS>.<micro>` (`%Y%b%d_%H:%M:%S.%f`, e.g.
 * `job.2026Dec02_16:18:03.912790`): what makes the id unique per run.
 */
const EASYPY_RUN_SUFFIX = /\.\d{4}[A-Za-z]{3}\d{2}_\d{2}:\d{2}:\d{2}\.\d{6}$/;

/** A job started by a traced CI run joins the CI's trace; its span ids still derive from the run. */
function applyContext(info: JobInfo, context: StreamContext): void {
  if (context.runinfoDir !== undefined) info.runinfoDir = context.runinfoDir;
  if (context.ci === undefined) return;
  info.ci = context.ci;
  if (context.ci.parent !== undefined) info.traceId = context.ci.parent.traceId;
}

/** Plugins report results of their own (pyATS keeps them in `pluginsummary`): they do not roll up. */
function countsInRollUp(type: string): boolean {
  return type !== 'Plugin';
}

/** Above this a seq_num goes to the sparse map: a corrupt huge seq_num must not allocate a huge array. */
const MAX_DENSE_SEQ_NUM = 1 << 22;
/**
 * Ended runs a stream remembers (JobState.endedRuns). One stream carries one job in pyATS; more runs come
 * only from replayed or corrupt input (or a keyed HTTP ingest stream reused job after job), and a run
 * replayed after this many others is taken as a new one.
 */
const MAX_ENDED_RUNS = 4;
/**
 * Runs older than the newest are remembered only while all of them together hold at most this many finished
 * seq_nums (8 bytes each, or more), so a stream of huge jobs keeps about what one of them needs.
 */
const ENDED_RUNS_SEQ_BUDGET = 250_000;

/**
 * The finished seq_nums of one job with their parent_seq_num (NO_PARENT for none). pyATS numbers sections
 * 1, 2, 3, ... so a growable Float64Array indexed by seq_num (8 bytes each, 0 = not finished) holds a
 * million-section job in 8 MB where a Map takes ~10 times that; anything else goes to a Map.
 */
class FinishedSeqNums {
  private dense = new Float64Array(1024);
  private readonly sparse = new Map<number, number>();
  size = 0;

  /** The parent recorded for `seqNum` (NO_PARENT for none), or undefined when it has not finished. */
  get(seqNum: number): number | undefined {
    if (isDenseIndex(seqNum) && seqNum < this.dense.length) {
      const stored = this.dense[seqNum]!;
      if (stored !== 0) return stored - 2;
    }
    // A small seq_num with an odd parent is in the map too.
    return this.sparse.size === 0 ? undefined : this.sparse.get(seqNum);
  }

  has(seqNum: number): boolean {
    return this.get(seqNum) !== undefined;
  }

  set(seqNum: number, parent: number): void {
    // Stored as parent + 2, so that 0 means absent and NO_PARENT (-1) fits; any other parent goes to the map.
    if (isDenseIndex(seqNum) && (parent === NO_PARENT || isDenseIndex(parent))) {
      if (seqNum >= this.dense.length) this.grow(seqNum);
      if (this.dense[seqNum] === 0) this.size += 1;
      this.dense[seqNum] = parent + 2;
      return;
    }
    if (!this.sparse.has(seqNum)) this.size += 1;
    this.sparse.set(seqNum, parent);
  }

  private grow(seqNum: number): void {
    let length = this.dense.length * 2;
    while (length <= seqNum) length *= 2;
    const grown = new Float64Array(Math.min(length, MAX_DENSE_SEQ_NUM + 1));
    grown.set(this.dense);
    this.dense = grown;
  }
}

function isDenseIndex(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= MAX_DENSE_SEQ_NUM;
}

class JobState {
  readonly sections = new Map<number, TrackedSection>();
  /**
   * seq_nums already finished, with their parent_seq_num (NO_PARENT for none): repeated events for them are
   * ignored (idempotence), and the parents let a link that would close a cycle be refused.
   */
  readonly finished = new FinishedSeqNums();
  readonly counts = Object.fromEntries(RESULT_VALUES.map((r) => [r, 0])) as Record<ResultValue, number>;
  suiteSeq?: number;
  suiteId?: string;
  /** The job's name as the suite's events give it (see noteSuiteName). */
  suiteName?: string;
  /** `suiteName` came from a start_/stop_ event, which no other event overrides. */
  suiteNamedByStart = false;
  suiteStart?: number;
  suiteStarted = false;
  /** A finished record of the job went to the sinks: its trace id is out. */
  delivered = false;
  suiteResult?: SectionResult;
  suiteStop?: number;
  ended = false;
  earliestTime?: number;
  info?: JobInfo;
  /** Finished records waiting for the job's identity. */
  pending: HeldEnd[] = [];
  /** Started sections whose sectionStarted waits for the job's identity. */
  pendingStarts: TrackedSection[] = [];
  /** Finished sections whose parent is unseen, by seq_num, with the parent they wait for; oldest first. */
  readonly held = new Map<number, { end: FinishedSection; waitsFor: number }>();
  /** seq_nums in `held`, by the parent they wait for. */
  readonly heldByParent = new Map<number, number[]>();
  warnedHeldOverflow = false;
  /**
   * The runs that ended earlier on this stream, newest first (at most MAX_ENDED_RUNS; only the stream's
   * current job holds them). A job whose suite turns out to be one of them (same seq_num, id and start time)
   * is that run replayed: it is dropped and the ended run restored, so no span of it is emitted twice.
   */
  endedRuns: JobState[] = [];

  constructor(readonly streamId: string) {}
}

export class SectionTracker {
  private readonly streams = new Map<string, JobState>();
  private readonly contexts = new Map<string, StreamContext>();
  private readonly sink: SectionSink;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly maxPending: number;
  private readonly maxHeldOrphans: number;
  private readonly maxOpenSections: number;
  private readonly readRunContext: ((runinfoDir: string) => StreamContext | undefined) | undefined;

  constructor(options: TrackerOptions) {
    this.sink = options.sink;
    this.logger = options.logger;
    this.now = options.now ?? Date.now;
    this.maxPending = options.maxPending ?? DEFAULT_MAX_PENDING;
    this.maxHeldOrphans = options.maxHeldOrphans ?? DEFAULT_MAX_HELD_ORPHANS;
    this.maxOpenSections = options.maxOpenSections ?? DEFAULT_MAX_OPEN_SECTIONS;
    this.readRunContext = options.readRunContext;
  }

  stats(): TrackerStats {
    const stats: TrackerStats = {
      streams: this.streams.size,
      openSections: 0,
      heldOrphans: 0,
      pendingRecords: 0,
      finishedSeqNums: 0,
    };
    for (const job of this.streams.values()) {
      stats.openSections += job.sections.size;
      stats.heldOrphans += job.held.size;
      stats.pendingRecords += job.pending.length + job.pendingStarts.length;
      stats.finishedSeqNums += job.finished.size;
    }
    return stats;
  }

  /** Tracks one event; returns why it was refused, if it was (nothing else is affected). */
  onEvent(streamId: string, event: SectionEvent): TrackerRejectReason | undefined {
    let job = this.streams.get(streamId);
    if (job !== undefined && event.type === SUITE_TYPE) job = this.jobForSuiteEvent(job, event);
    if (job === undefined) {
      job = new JobState(streamId);
      this.streams.set(streamId, job);
    }
    noteTime(job, event.startTime);
    noteTime(job, event.stopTime);
    if (job.finished.has(event.seqNum)) {
      this.logger.debug(
        { stream: streamId, seq_num: event.seqNum, event: event.event },
        'event for a finished section ignored',
      );
      return undefined;
    }
    if (
      event.phase !== 'stop' &&
      job.sections.size >= this.maxOpenSections &&
      !job.sections.has(event.seqNum)
    ) {
      return 'too_many_open_sections';
    }
    if (event.type === SUITE_TYPE && job.suiteSeq === undefined) job.suiteSeq = event.seqNum;
    if (event.seqNum === job.suiteSeq) {
      job.suiteId ??= event.id ?? event.name;
      if (event.name !== undefined && !job.suiteNamedByStart) noteSuiteName(job, event, event.name);
      if (event.startTime !== undefined) job.suiteStart ??= event.startTime;
      if (job.endedRuns.length > 0 && job.suiteStart !== undefined && this.restoreIfReplay(job)) {
        return undefined;
      }
    }
    const section = this.track(job, event);
    if (event.phase === 'start') this.onStart(job, section);
    else if (event.phase === 'stop') this.onStop(job, section, event);
    if (job.heldByParent.size > 0) this.releaseChildren(job, section);
    return undefined;
  }

  /**
   * What the source knows of a stream beyond its events (its job's CI run): used by every job of the stream
   * whose identity is fixed from now on, until the stream ends.
   */
  setStreamContext(streamId: string, context: StreamContext): void {
    // Contexts add up: the runinfo directory is known at connect, the CI run once easypy writes env.txt.
    const merged = { ...this.contexts.get(streamId), ...context };
    this.contexts.set(streamId, merged);
    // pyATS starts the TestSuite before easypy writes env.txt, so the identity may be fixed already: while no
    // span of the job has gone out, it can still join the CI's trace.
    const job = this.streams.get(streamId);
    if (job?.info === undefined) return;
    if (!job.delivered) applyContext(job.info, merged);
    else if (merged.runinfoDir !== undefined) job.info.runinfoDir = merged.runinfoDir;
  }

  /** The stream ended (disconnect, end of file): everything still open is abandoned. */
  endStream(streamId: string): void {
    this.contexts.delete(streamId);
    const job = this.streams.get(streamId);
    if (job === undefined) return;
    this.streams.delete(streamId);
    this.endJob(job);
  }

  /** Ends every stream, as on shutdown. */
  endAll(): void {
    for (const streamId of [...this.streams.keys()]) this.endStream(streamId);
  }

  /**
   * The job a TestSuite event belongs to. pyATS has one TestSuite per job, so a TestSuite other than the
   * current one (another seq_num, another start time, or any new one after the current job finished)
   * starts a new job on the stream; a repeat of the finished suite's own events stays with it (ignored).
   */
  private jobForSuiteEvent(job: JobState, event: SectionEvent): JobState {
    const sameSeq = job.suiteSeq === undefined || event.seqNum === job.suiteSeq;
    const sameStart =
      event.startTime === undefined || job.suiteStart === undefined || event.startTime === job.suiteStart;
    const id = event.id ?? event.name;
    const sameId = id === undefined || job.suiteId === undefined || id === job.suiteId;
    if (job.ended) {
      // init_ carries no start time, so an init of the same seq_num is taken as a new run.
      if (sameSeq && (event.phase === 'stop' || (event.phase === 'start' && sameStart))) return job;
    } else if (sameSeq && (event.phase === 'stop' || (sameStart && sameId))) {
      return job;
    }
    this.endJob(job);
    const next = new JobState(job.streamId);
    next.endedRuns = job.endedRuns;
    job.endedRuns = [];
    if (job.info !== undefined) next.endedRuns = rememberedRuns(job, next.endedRuns);
    this.streams.set(job.streamId, next);
    return next;
  }

  /**
   * A new job whose suite turns out to have an ended run's seq_num, id and start time is that run replayed:
   * nothing of it was emitted yet (it waited for its identity), so drop it and restore the ended run.
   */
  private restoreIfReplay(job: JobState): boolean {
    if (job.info !== undefined) return false;
    const runs = job.endedRuns;
    const at = runs.findIndex(
      (run) =>
        run.suiteSeq === job.suiteSeq &&
        run.suiteStart === job.suiteStart &&
        (job.suiteId === undefined || run.suiteId === job.suiteId),
    );
    const run = runs[at];
    if (run === undefined) return false;
    runs.splice(at, 1);
    job.endedRuns = [];
    run.endedRuns = runs;
    this.logger.debug({ stream: job.streamId, job: run.suiteId }, 'replayed job ignored');
    this.streams.set(job.streamId, run);
    return true;
  }

  private track(job: JobState, event: SectionEvent): TrackedSection {
    let section = job.sections.get(event.seqNum);
    if (section === undefined) {
      const parent = event.parentSeqNum === undefined ? undefined : job.sections.get(event.parentSeqNum);
      section = {
        seqNum: event.seqNum,
        type: event.type,
        task:
          event.type === TASK_TYPE
            ? (event.id ?? event.name ?? String(event.seqNum))
            : inheritTask(job, event, parent),
        started: false,
        childResult: undefined,
      };
      const testcase = TESTCASE_TYPES.has(event.type) ? (event.id ?? event.name) : parent?.testcase;
      if (testcase !== undefined) section.testcase = testcase;
      job.sections.set(event.seqNum, section);
      // Children that finished before it was seen (attached mid-job) are released right after this event:
      // their results count in its roll-up all the same.
      const held = job.heldByParent.size === 0 ? undefined : job.heldByParent.get(event.seqNum);
      if (held !== undefined) {
        for (const seqNum of held) {
          const child = job.held.get(seqNum);
          if (child !== undefined && countsInRollUp(child.end.type)) {
            section.childResult = rollUp(section.childResult, child.end.result.value);
          }
        }
      }
    }
    // Later events may carry what earlier ones lacked; never erase a known value.
    if (event.parentSeqNum !== undefined) section.parentSeqNum = event.parentSeqNum;
    if (event.id !== undefined) section.id = event.id;
    if (event.fullid !== undefined) section.fullid = event.fullid;
    if (event.name !== undefined) section.name = event.name;
    if (event.startTime !== undefined) section.startTime = event.startTime;
    if (event.logfile !== undefined) section.logfile = event.logfile;
    if (event.logRange !== undefined) section.logRange = event.logRange;
    if (event.logExcerpt !== undefined) section.logExcerpt = event.logExcerpt;
    if (event.xref !== undefined) section.xref = event.xref;
    return section;
  }

  private onStart(job: JobState, section: TrackedSection): void {
    if (section.seqNum === job.suiteSeq) {
      job.suiteStarted = true;
      this.flushPending(job);
    }
    // A section that starts after its job finished (a post-job plugin reported after stop_testsuite) is not
    // counted in progress: the job's in-progress series went with its summary, and would come back for good.
    if (section.started || job.ended) return;
    section.started = true;
    if (this.waiting(job) && this.pendingCount(job) < this.maxPending) {
      job.pendingStarts.push(section);
      return;
    }
    this.flushPending(job, true);
    this.sink.sectionStarted({
      job: this.jobInfo(job),
      seqNum: section.seqNum,
      type: section.type,
      task: section.task,
    });
  }

  private onStop(job: JobState, section: TrackedSection, event: SectionEvent): void {
    // A stop whose start was never seen (attached mid-job, or events out of order) is complete on its own.
    const stopTime =
      event.stopTime ??
      (section.startTime !== undefined && event.runtime !== undefined
        ? section.startTime + event.runtime * 1000
        : this.now());
    const startTime =
      section.startTime ?? (event.runtime !== undefined ? stopTime - event.runtime * 1000 : stopTime);
    // pyATS 23.2 sends stop_task and stop_testsuite without a result (observed): like pyATS's own report,
    // such a section takes the roll-up of its children's results.
    const result: SectionResult =
      event.result ??
      (section.childResult !== undefined
        ? { value: section.childResult }
        : { value: 'errored', reason: 'stop event carried no result' });
    this.settle(job, section, result);
    this.finish(
      job,
      section,
      endOf(
        section,
        startTime,
        Math.max(stopTime, startTime),
        event.runtime ?? Math.max(0, (stopTime - startTime) / 1000),
        result,
        false,
      ),
    );
    if (section.seqNum === job.suiteSeq) {
      job.suiteResult = result;
      job.suiteStop = stopTime;
      job.suiteStart ??= startTime;
      job.suiteStarted = true;
      this.flushPending(job);
      this.finishJob(job, false);
    }
  }

  /**
   * Marks `section` finished with `result`: counted, and folded into the roll-up of its parent while that is
   * open (a parent that stopped already, or is unseen, takes it from `track` or not at all).
   */
  private settle(job: JobState, section: TrackedSection, result: SectionResult): void {
    job.sections.delete(section.seqNum);
    job.finished.set(section.seqNum, section.parentSeqNum ?? NO_PARENT);
    if (TESTCASE_TYPES.has(section.type)) job.counts[result.value] += 1;
    const parent = section.parentSeqNum === undefined ? undefined : job.sections.get(section.parentSeqNum);
    if (parent !== undefined && countsInRollUp(section.type)) {
      parent.childResult = rollUp(parent.childResult, result.value);
    }
  }

  /** Emits a finished section, or holds it while its parent is unseen (its span would point nowhere). */
  private finish(job: JobState, section: TrackedSection, end: FinishedSection): void {
    let parent = section.parentSeqNum;
    if (
      parent === undefined ||
      section.seqNum === job.suiteSeq ||
      this.parentSeen(job, section.seqNum, parent)
    ) {
      this.emit(job, end, undefined);
      return;
    }
    // A section naming itself or a descendant as parent waits for nothing but the root.
    if (job.sections.has(parent) || job.finished.has(parent)) parent = NO_PARENT;
    if (job.ended || (parent === NO_PARENT && job.suiteSeq !== undefined)) {
      // The job is over: the parent will not come any more.
      this.emit(job, end, this.unlink(job, end));
      return;
    }
    job.held.set(end.seqNum, { end, waitsFor: parent });
    const siblings = job.heldByParent.get(parent);
    if (siblings === undefined) job.heldByParent.set(parent, [end.seqNum]);
    else siblings.push(end.seqNum);
    if (job.held.size > this.maxHeldOrphans) this.evictOldestHeld(job);
  }

  /** `parent` was seen, and linking `seqNum` to it closes no cycle (a corrupt stream can name a descendant). */
  private parentSeen(job: JobState, seqNum: number, parent: number | undefined): boolean {
    if (parent === undefined) return true;
    if (!job.sections.has(parent) && !job.finished.has(parent)) return false;
    let ancestor: number | undefined = parent;
    for (let steps = 0; ancestor !== undefined && ancestor !== NO_PARENT && steps < MAX_ANCESTRY; steps++) {
      if (ancestor === seqNum) return false;
      ancestor = job.sections.get(ancestor)?.parentSeqNum ?? job.finished.get(ancestor);
    }
    return true;
  }

  /**
   * Flags an orphan whose parent will never be seen, and returns its link: the job's root when known, else
   * none.
   */
  private unlink(job: JobState, end: FinishedSection): LinkSeq {
    end.orphan = true;
    const root = job.suiteSeq;
    return root !== undefined && root !== end.seqNum ? root : null;
  }

  /** `parent` was seen: its held children keep their deterministic link to it, and inherit its context. */
  private releaseChildren(job: JobState, parent: TrackedSection): void {
    const children = job.heldByParent.get(parent.seqNum);
    if (children === undefined) return;
    job.heldByParent.delete(parent.seqNum);
    for (const seqNum of children) {
      const end = job.held.get(seqNum)?.end;
      if (end === undefined) continue;
      job.held.delete(seqNum);
      if (end.task === 'unknown') end.task = parent.task;
      if (end.testcase === undefined && !TESTCASE_TYPES.has(end.type) && parent.testcase !== undefined) {
        end.testcase = parent.testcase;
      }
      this.emit(job, end, undefined);
    }
  }

  private evictOldestHeld(job: JobState): void {
    const oldest = job.held.values().next();
    if (oldest.done === true) return;
    const { end, waitsFor: parent } = oldest.value;
    job.held.delete(end.seqNum);
    const siblings = job.heldByParent.get(parent);
    if (siblings !== undefined) {
      siblings.splice(siblings.indexOf(end.seqNum), 1);
      if (siblings.length === 0) job.heldByParent.delete(parent);
    }
    if (!job.warnedHeldOverflow) {
      job.warnedHeldOverflow = true;
      this.logger.warn(
        { stream: job.streamId, max: this.maxHeldOrphans },
        'too many sections waiting for unseen parents; releasing the oldest as orphans',
      );
    }
    // Its parent may still come: keep the deterministic link, flagged because it was never checked.
    end.orphan = true;
    this.emit(job, end, parent === NO_PARENT ? this.unlink(job, end) : undefined);
  }

  /** End of the job: parents not seen by now will not come, so those sections are re-parented or unlinked. */
  private releaseAllHeld(job: JobState): void {
    if (job.held.size === 0) return;
    const held = [...job.held.values()].map((h) => h.end);
    job.held.clear();
    job.heldByParent.clear();
    this.logger.debug(
      { stream: job.streamId, job: job.suiteId ?? 'unknown', count: held.length },
      'sections whose parent was never seen',
    );
    for (const end of held) {
      // Its parent may have been seen by the event that ended the job (the suite's own stop).
      const linked = this.parentSeen(job, end.seqNum, end.parentSeqNum);
      this.emit(job, end, linked ? undefined : this.unlink(job, end));
    }
  }

  private endJob(job: JobState): void {
    const repeated = job.endedRuns.find((run) => isBareRepeat(job, run));
    if (repeated !== undefined) {
      this.logger.debug(
        { stream: job.streamId, job: repeated.suiteId },
        'repeated init of an ended job ignored',
      );
      return;
    }
    // From here nothing waits for the suite's start time any more.
    job.suiteStarted = true;
    if (job.sections.size > 0) {
      const now = this.now();
      // Children first (higher seq_nums started later), so a parent never ends before its children.
      const open = [...job.sections.values()].sort((a, b) => b.seqNum - a.seqNum);
      this.logger.warn(
        { stream: job.streamId, job: job.suiteId ?? 'unknown', open: open.length },
        'stream ended with sections still open; ending them as abandoned',
      );
      for (const section of open) {
        const startTime = section.startTime ?? now;
        const stopTime = Math.max(now, startTime);
        const result: SectionResult = { value: 'aborted', reason: 'job ended before the section stopped' };
        this.settle(job, section, result);
        this.finish(
          job,
          section,
          endOf(section, startTime, stopTime, (stopTime - startTime) / 1000, result, true),
        );
      }
    }
    this.releaseAllHeld(job);
    this.flushPending(job, true);
    if (!job.ended && (job.info !== undefined || job.suiteSeq !== undefined)) this.finishJob(job, true);
  }

  private finishJob(job: JobState, incomplete: boolean): void {
    this.releaseAllHeld(job);
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

  /** The trace id includes the suite's start time: while the suite is known but not started, records wait. */
  private waiting(job: JobState): boolean {
    return (
      job.info === undefined &&
      job.suiteSeq !== undefined &&
      job.suiteStart === undefined &&
      !job.suiteStarted
    );
  }

  private pendingCount(job: JobState): number {
    return job.pending.length + job.pendingStarts.length;
  }

  /** Emits a finished section, or queues it (bounded) while the job's identity is not known yet. */
  private emit(job: JobState, end: FinishedSection, linkSeq: LinkSeq): void {
    if (this.waiting(job) && this.pendingCount(job) < this.maxPending) {
      job.pending.push({ end, linkSeq });
      return;
    }
    this.flushPending(job, true);
    this.deliver(job, end, linkSeq);
  }

  /** Starts first, so a section's start always reaches the sinks before its end. */
  private flushPending(job: JobState, force = false): void {
    if (this.pendingCount(job) === 0 || (!force && this.waiting(job))) return;
    const starts = job.pendingStarts;
    const ends = job.pending;
    job.pendingStarts = [];
    job.pending = [];
    const info = this.jobInfo(job);
    for (const section of starts) {
      this.sink.sectionStarted({ job: info, seqNum: section.seqNum, type: section.type, task: section.task });
    }
    for (const { end, linkSeq } of ends) this.deliver(job, end, linkSeq);
  }

  /** Fills in the run's identity and the span ids, then hands the record to the sinks. */
  private deliver(job: JobState, record: FinishedSection, linkSeq: LinkSeq): void {
    if (!job.delivered) this.lookForRunContext(job);
    const info = this.jobInfo(job);
    job.delivered = true;
    record.job = info;
    if (record.spanId === '') record.spanId = spanIdFor(info.runId, record.seqNum);
    const link = linkSeq === undefined ? record.parentSeqNum : linkSeq;
    if (record.seqNum === job.suiteSeq) {
      // The root: a child of the CI's span when the job runs in a traced CI run.
      record.parentSpanId = info.ci?.parent?.spanId;
    } else if (link !== undefined && link !== null) {
      // Children stop before their parent: the parent's id is computed once here and kept for its own span.
      const parent = job.sections.get(link);
      if (parent === undefined) record.parentSpanId = spanIdFor(info.runId, link);
      else record.parentSpanId = parent.spanId ??= spanIdFor(info.runId, link);
    }
    this.sink.sectionFinished(record);
  }

  /** The last chance for a job to join its CI's trace: its trace id is about to go out. */
  private lookForRunContext(job: JobState): void {
    const context = this.contexts.get(job.streamId);
    if (this.readRunContext === undefined || context?.runinfoDir === undefined || context.ci !== undefined) {
      return;
    }
    const found = this.readRunContext(context.runinfoDir);
    if (found?.ci !== undefined) this.setStreamContext(job.streamId, { ci: found.ci });
  }

  private jobInfo(job: JobState): JobInfo {
    if (job.info === undefined) {
      const jobId = job.suiteId ?? 'unknown';
      const fallback =
        job.earliestTime !== undefined ? new Date(job.earliestTime).toISOString() : job.streamId;
      const runId = runIdFor(jobId, job.suiteStart, fallback);
      const jobName = job.suiteName ?? jobNameFromId(jobId);
      job.info = { jobId, jobName, runId, traceId: traceIdFor(runId) };
      const context = this.contexts.get(job.streamId);
      if (context !== undefined) applyContext(job.info, context);
    }
    return job.info;
  }
}

/** `latest` and as many of the runs before it (newest first) as MAX_ENDED_RUNS and the budget allow. */
function rememberedRuns(latest: JobState, earlier: JobState[]): JobState[] {
  const runs = [latest];
  let seqNums = latest.finished.size;
  for (const run of earlier) {
    seqNums += run.finished.size;
    if (runs.length === MAX_ENDED_RUNS || seqNums > ENDED_RUNS_SEQ_BUDGET) break;
    runs.push(run);
  }
  return runs;
}

/** Nothing but an init_ of an ended job's own suite (same seq_num and id) was seen: a repeat, not a run. */
function isBareRepeat(job: JobState, ended: JobState): boolean {
  const suite = job.suiteSeq === undefined ? undefined : job.sections.get(job.suiteSeq);
  return (
    suite !== undefined &&
    !suite.started &&
    job.sections.size === 1 &&
    job.finished.size === 0 &&
    job.held.size === 0 &&
    job.info === undefined &&
    suite.seqNum === ended.suiteSeq &&
    (job.suiteId === undefined || job.suiteId === ended.suiteId)
  );
}

/**
 * Keeps the job's name from a suite event. pyATS 23.2 (observed): init_testsuite's name is the run id
 * (`job.2026Dec02_16:18:03.912790`), start_/stop_testsuite's the job's name (`job`); an init name is kept
 * only when it is not the id, and only until a start_ or stop_ names the job.
 */
function noteSuiteName(job: JobState, event: SectionEvent, name: string): void {
  if (event.phase !== 'init') {
    job.suiteName = name;
    job.suiteNamedByStart = true;
  } else if (name !== (event.id ?? job.suiteId)) {
    job.suiteName ??= name;
  }
}

/** The job's name from a TestSuite id: easypy's run suffix removed, else the id itself. */
function jobNameFromId(jobId: string): string {
  const name = jobId.replace(EASYPY_RUN_SUFFIX, '');
  return name === '' ? jobId : name;
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

/**
 * The record of a finished section, built once with every field present (undefined when unknown): one object
 * shape for every record keeps the sinks' property reads fast, where spreads of optional fields made
 * dictionary-mode objects. The identity and span ids are filled in by `deliver`.
 */
function endOf(
  section: TrackedSection,
  startTime: number,
  stopTime: number,
  runtime: number,
  result: SectionResult,
  incomplete: boolean,
): FinishedSection {
  return {
    job: UNSET_JOB,
    seqNum: section.seqNum,
    parentSeqNum: section.parentSeqNum,
    spanId: section.spanId ?? '',
    parentSpanId: undefined,
    type: section.type,
    id: section.id,
    fullid: section.fullid,
    name: section.name,
    task: section.task,
    testcase: section.testcase,
    startTime,
    stopTime,
    runtime,
    result,
    logfile: section.logfile,
    logRange: section.logRange,
    logExcerpt: section.logExcerpt,
    xref: section.xref,
    incomplete,
    orphan: false,
    started: section.started,
  };
}
