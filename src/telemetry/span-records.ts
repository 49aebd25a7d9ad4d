// The channel from the main thread to the span thread: FinishedSections (and the end of each job run, which
// lets the span sink forget the run's Resource) as one Float64Array of fixed-size records plus a string table,
// both per batch. The buffer is transferred; only the table's distinct strings are cloned — a job's ids and
// names, which every record of the job shares, cross once per batch.
//
// Fields are listed once, in the tables below; a writer and its reader follow the same tables, so an optional
// string field of FinishedSection is carried by adding its name to SECTION_STRINGS.
import {
  RESULT_VALUES,
  type CiContext,
  type FinishedSection,
  type JobInfo,
  type ResultValue,
} from '../events/index.js';

/** Optional top-level string fields of FinishedSection, carried as-is. */
const SECTION_STRINGS = [
  'id',
  'fullid',
  'name',
  'testcase',
  'logfile',
  'logExcerpt',
] as const satisfies readonly (keyof FinishedSection)[];
/** Optional string fields of the job's CiContext. */
const CI_STRINGS = [
  'pipelineName',
  'runId',
  'taskRunUrl',
  'system',
] as const satisfies readonly (keyof CiContext)[];

const KIND_SECTION = 0;
const KIND_JOB_FINISHED = 1;
const NONE = -1;

// Slots of one record; the optional strings follow FIXED_SLOTS in table order.
const S_KIND = 0;
const S_SEQ = 1;
const S_PARENT_SEQ = 2;
const S_SPAN_ID = 3;
const S_PARENT_SPAN_ID = 4;
const S_TYPE = 5;
const S_TASK = 6;
const S_START = 7;
const S_STOP = 8;
const S_RUNTIME = 9;
const S_RESULT = 10;
const S_REASON = 11;
const S_FLAGS = 12;
const S_XREF_FILE = 13;
const S_XREF_LINE = 14;
const S_JOB_ID = 15;
const S_JOB_NAME = 16;
const S_RUN_ID = 17;
const S_TRACE_ID = 18;
const S_CI_PARENT_TRACE = 19;
const S_CI_PARENT_SPAN = 20;
const FIXED_SLOTS = 21;
const SECTION_AT = FIXED_SLOTS;
const CI_AT = SECTION_AT + SECTION_STRINGS.length;
/** Doubles per record. */
export const RECORD_SLOTS = CI_AT + CI_STRINGS.length;

const F_INCOMPLETE = 1;
const F_ORPHAN = 2;
const F_STARTED = 4;
const F_XREF = 8;
const F_CI = 16;
const F_CI_PARENT = 32;
const F_CI_PARENT_SAMPLED = 64;

const RESULT_CODE = new Map<string, number>(RESULT_VALUES.map((value, i) => [value, i]));

/** One batch as posted (`nums.buffer` is transferred). */
export interface SectionBatch {
  strings: string[];
  nums: Float64Array;
}

/** Main-thread side: collects records into the current batch. */
export class SectionBatchWriter {
  private table = new Map<string, number>();
  private strings: string[] = [];
  private nums: Float64Array;
  private length = 0;
  /**
   * The JobInfo last written in this batch and its four string slots: a job's records run in a row, and the
   * tracker no longer changes a JobInfo once the first of its sections has gone out.
   */
  private lastJob: JobInfo | undefined;
  private lastJobSlots = [0, 0, 0, 0];

  constructor(initialRecords = 256) {
    this.nums = new Float64Array(initialRecords * RECORD_SLOTS);
  }

  /** Sections in the current batch (job-finished records are not spans). */
  sections = 0;

  /** Records in the current batch. */
  get size(): number {
    return this.length / RECORD_SLOTS;
  }

  section(s: FinishedSection): void {
    const at = this.reserve();
    const n = this.nums;
    n[at + S_KIND] = KIND_SECTION;
    n[at + S_SEQ] = s.seqNum;
    n[at + S_PARENT_SEQ] = s.parentSeqNum ?? Number.NaN;
    n[at + S_SPAN_ID] = this.string(s.spanId);
    n[at + S_PARENT_SPAN_ID] = this.optional(s.parentSpanId);
    n[at + S_TYPE] = this.string(s.type);
    n[at + S_TASK] = this.string(s.task);
    n[at + S_START] = s.startTime;
    n[at + S_STOP] = s.stopTime;
    n[at + S_RUNTIME] = s.runtime;
    n[at + S_RESULT] = RESULT_CODE.get(s.result.value) ?? NONE;
    n[at + S_REASON] = this.optional(s.result.reason);
    n[at + S_XREF_FILE] = this.optional(s.xref?.file);
    n[at + S_XREF_LINE] = s.xref?.line ?? Number.NaN;
    const ci = s.job.ci;
    const parent = ci?.parent;
    n[at + S_FLAGS] =
      (s.incomplete ? F_INCOMPLETE : 0) |
      (s.orphan ? F_ORPHAN : 0) |
      (s.started ? F_STARTED : 0) |
      (s.xref !== undefined ? F_XREF : 0) |
      (ci !== undefined ? F_CI : 0) |
      (parent !== undefined ? F_CI_PARENT : 0) |
      (parent?.sampled === true ? F_CI_PARENT_SAMPLED : 0);
    this.job(at, s.job);
    n[at + S_CI_PARENT_TRACE] = this.optional(parent?.traceId);
    n[at + S_CI_PARENT_SPAN] = this.optional(parent?.spanId);
    for (let i = 0; i < SECTION_STRINGS.length; i++)
      n[at + SECTION_AT + i] = this.optional(s[SECTION_STRINGS[i]!]);
    for (let i = 0; i < CI_STRINGS.length; i++) n[at + CI_AT + i] = this.optional(ci?.[CI_STRINGS[i]!]);
    this.sections += 1;
  }

  jobFinished(job: JobInfo): void {
    const at = this.reserve();
    this.nums[at + S_KIND] = KIND_JOB_FINISHED;
    this.job(at, job);
  }

  /**
   * The batch so far (its buffer is the caller's to transfer), or undefined when nothing was written. The
   * records are copied out to a buffer of their own size, so the writer keeps its grown one: allocating a
   * fresh zeroed buffer of the full initial size per batch cost more than the copy of a small batch.
   */
  take(): SectionBatch | undefined {
    if (this.length === 0) return undefined;
    const batch: SectionBatch = { strings: this.strings, nums: this.nums.slice(0, this.length) };
    this.table.clear();
    this.strings = [];
    this.length = 0;
    this.sections = 0;
    this.lastJob = undefined;
    return batch;
  }

  private job(at: number, job: JobInfo): void {
    const slots = this.lastJobSlots;
    if (job !== this.lastJob) {
      slots[0] = this.string(job.jobId);
      slots[1] = this.string(job.jobName);
      slots[2] = this.string(job.runId);
      slots[3] = this.string(job.traceId);
      this.lastJob = job;
    }
    const n = this.nums;
    n[at + S_JOB_ID] = slots[0]!;
    n[at + S_JOB_NAME] = slots[1]!;
    n[at + S_RUN_ID] = slots[2]!;
    n[at + S_TRACE_ID] = slots[3]!;
  }

  private reserve(): number {
    if (this.length + RECORD_SLOTS > this.nums.length) {
      const grown = new Float64Array(this.nums.length * 2);
      grown.set(this.nums.subarray(0, this.length));
      this.nums = grown;
    }
    const at = this.length;
    this.length += RECORD_SLOTS;
    return at;
  }

  private optional(value: string | undefined): number {
    return value === undefined ? NONE : this.string(value);
  }

  private string(value: string): number {
    let id = this.table.get(value);
    if (id === undefined) {
      id = this.strings.length;
      this.table.set(value, id);
      this.strings.push(value);
    }
    return id;
  }
}

export interface SectionBatchVisitor {
  sectionFinished(section: FinishedSection): void;
  jobFinished(job: JobInfo): void;
}

/**
 * Span-thread side: the records of a batch in order. Records of one run share one JobInfo object per batch,
 * as the tracker's records of a run share theirs.
 */
export function readSectionBatch(batch: SectionBatch, visit: SectionBatchVisitor): void {
  const { strings, nums: n } = batch;
  const str = (slot: number): string => strings[slot] ?? '';
  const jobs = new Map<number, JobInfo>();
  for (let at = 0; at + RECORD_SLOTS <= n.length; at += RECORD_SLOTS) {
    const flags = n[at + S_FLAGS]!;
    const runSlot = n[at + S_RUN_ID]!;
    const isSection = n[at + S_KIND] === KIND_SECTION;
    let job = jobs.get(runSlot);
    if (job === undefined) {
      job = {
        jobId: str(n[at + S_JOB_ID]!),
        jobName: str(n[at + S_JOB_NAME]!),
        runId: str(runSlot),
        traceId: str(n[at + S_TRACE_ID]!),
      };
      // A job-finished record carries no CI context: only a section's JobInfo is kept for the next records.
      if (isSection) {
        if ((flags & F_CI) !== 0) job.ci = readCi(n, at, flags, str);
        jobs.set(runSlot, job);
      }
    }
    if (isSection) visit.sectionFinished(readSection(n, at, flags, job, str));
    else visit.jobFinished(job);
  }
}

function readCi(n: Float64Array, at: number, flags: number, str: (slot: number) => string): CiContext {
  const ci: CiContext = {};
  if ((flags & F_CI_PARENT) !== 0) {
    ci.parent = {
      traceId: str(n[at + S_CI_PARENT_TRACE]!),
      spanId: str(n[at + S_CI_PARENT_SPAN]!),
      sampled: (flags & F_CI_PARENT_SAMPLED) !== 0,
    };
  }
  for (let i = 0; i < CI_STRINGS.length; i++) {
    const slot = n[at + CI_AT + i]!;
    if (slot !== NONE) ci[CI_STRINGS[i]!] = str(slot);
  }
  return ci;
}

function readSection(
  n: Float64Array,
  at: number,
  flags: number,
  job: JobInfo,
  str: (slot: number) => string,
): FinishedSection {
  const reason = n[at + S_REASON]!;
  const value: ResultValue = RESULT_VALUES[n[at + S_RESULT]!] ?? 'errored';
  const section: FinishedSection = {
    job,
    seqNum: n[at + S_SEQ]!,
    spanId: str(n[at + S_SPAN_ID]!),
    type: str(n[at + S_TYPE]!),
    task: str(n[at + S_TASK]!),
    startTime: n[at + S_START]!,
    stopTime: n[at + S_STOP]!,
    runtime: n[at + S_RUNTIME]!,
    result: reason === NONE ? { value } : { value, reason: str(reason) },
    incomplete: (flags & F_INCOMPLETE) !== 0,
    orphan: (flags & F_ORPHAN) !== 0,
    started: (flags & F_STARTED) !== 0,
  };
  const parentSeq = n[at + S_PARENT_SEQ]!;
  if (!Number.isNaN(parentSeq)) section.parentSeqNum = parentSeq;
  const parentSpan = n[at + S_PARENT_SPAN_ID]!;
  if (parentSpan !== NONE) section.parentSpanId = str(parentSpan);
  if ((flags & F_XREF) !== 0) {
    const file = n[at + S_XREF_FILE]!;
    const line = n[at + S_XREF_LINE]!;
    section.xref = {};
    if (file !== NONE) section.xref.file = str(file);
    if (!Number.isNaN(line)) section.xref.line = line;
  }
  for (let i = 0; i < SECTION_STRINGS.length; i++) {
    const slot = n[at + SECTION_AT + i]!;
    if (slot !== NONE) section[SECTION_STRINGS[i]!] = str(slot);
  }
  return section;
}
