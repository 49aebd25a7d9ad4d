// A section's own log lines for its span: pyATS reports where they are (`logs: {file, begin, size}` at stop,
// the file relative to the job's runinfo directory), and this reads that slice's tail, confined to runinfo.
// The read is asynchronous and happens beside the hot path: SectionLogSink holds the section back from the
// span sink only until its excerpt is read; metrics and the rest of the stream never wait for it.
import { constants } from 'node:fs';
import { open, readlink, realpath, type FileHandle } from 'node:fs/promises';
import { isAbsolute, relative, resolve } from 'node:path';
import type { FinishedSection, JobSummary, LogRange, SectionSink, StartedSection } from '../events/index.js';
import type { Logger } from '../log.js';

export const SECTION_LOG_MODES = ['failed', 'all', 'none'] as const;
export type SectionLogMode = (typeof SECTION_LOG_MODES)[number];
export const DEFAULT_SECTION_LOG_MAX_BYTES = 4096;

/** What became of one section's excerpt; the `outcome` label of pyats_exporter_section_logs_total. */
export const SECTION_LOG_OUTCOMES = [
  /** Read from the job's log file and attached. */
  'attached',
  /** Sent with the event by the source (the bridge) and attached. */
  'forwarded',
  /** The path leaves the runinfo directory (`..`, an absolute path elsewhere, a symlink out) or is no file. */
  'refused',
  /** The file (or the runinfo directory) is gone: the job ended and easypy archived it, or it rotated. */
  'missing',
  /** The file is shorter than the slice or the slice is empty. */
  'empty',
  /** Any other read error (permissions, I/O). */
  'unreadable',
  /** Too many reads were waiting: the section went on without its excerpt. */
  'dropped',
] as const;
export type SectionLogOutcome = (typeof SECTION_LOG_OUTCOMES)[number];

export type ExcerptResult =
  { ok: true; text: string } | { ok: false; outcome: SectionLogOutcome; detail: string };

const LF = 0x0a;

/** True when `path` is `root` or below it (both absolute and normalized). */
function isWithin(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error ? String(error.code) : undefined;
}

function failure(error: unknown, what: string): ExcerptResult {
  const code = errorCode(error);
  if (code === 'ENOENT' || code === 'ENOTDIR')
    return { ok: false, outcome: 'missing', detail: `${what}: ${code}` };
  if (code === 'ELOOP') return { ok: false, outcome: 'refused', detail: `${what}: a symlink` };
  return { ok: false, outcome: 'unreadable', detail: `${what}: ${code ?? String(error)}` };
}

/**
 * The last bytes of `bytes` that fit in `maxBytes`, cut after a line break (or, for a single line longer than
 * the bound, at a character boundary), decoded as UTF-8 with invalid sequences replaced.
 */
export function tailOnLineBoundary(bytes: Uint8Array, maxBytes: number): string {
  let start = Math.max(0, bytes.length - maxBytes);
  if (start > 0) {
    const lineStart = bytes.indexOf(LF, start - 1);
    if (lineStart !== -1 && lineStart + 1 < bytes.length) start = lineStart + 1;
    // UTF-8 continuation bytes (10xxxxxx) cannot start a character.
    else while (start < bytes.length && ((bytes[start] as number) & 0xc0) === 0x80) start += 1;
  }
  return Buffer.from(bytes.buffer, bytes.byteOffset + start, bytes.length - start).toString('utf8');
}

/** tailOnLineBoundary for text that arrived as a string (the bridge's excerpt), bounded in UTF-8 bytes. */
export function tailOfText(text: string, maxBytes: number): string {
  // A UTF-16 unit is at most 3 UTF-8 bytes: text this short is within the bound without encoding it.
  if (text.length * 3 <= maxBytes) return text;
  const bytes = Buffer.from(text, 'utf8');
  return bytes.length <= maxBytes ? text : tailOnLineBoundary(bytes, maxBytes);
}

/** Runinfo directories' real paths: one realpath per job, not per section. */
const realRoots = new Map<string, string>();
const MAX_REAL_ROOTS = 256;

async function realRootOf(root: string): Promise<string> {
  const known = realRoots.get(root);
  if (known !== undefined) return known;
  const real = await realpath(root);
  if (realRoots.size >= MAX_REAL_ROOTS) realRoots.delete(realRoots.keys().next().value as string);
  realRoots.set(root, real);
  return real;
}

function openNoFollow(path: string) {
  return open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW | constants.O_NOCTTY);
}

/** A log file opened and checked (a regular file inside runinfo), or why it is not read. */
type OpenedLog = { ok: true; handle: FileHandle; name: string } | { ok: false; result: ExcerptResult };

function refused(detail: string): OpenedLog {
  return { ok: false, result: { ok: false, outcome: 'refused', detail } };
}

function failed(error: unknown, what: string): OpenedLog {
  return { ok: false, result: failure(error, what) };
}

/**
 * Opens `file`, a path relative to (or absolute inside) `root`, for reading its slices. Refuses a path that
 * leaves `root`, also through a symlink or a directory swapped for one while it is opened, and anything but a
 * regular file (a FIFO would block; it is opened non-blocking and refused). The checks hold for the open
 * descriptor, so what is read through it later is the file checked.
 */
async function openLogFile(root: string, file: string): Promise<OpenedLog> {
  const name = JSON.stringify(file);
  if (file.includes('\0')) return refused('the path has a NUL byte');
  let realRoot: string;
  try {
    realRoot = await realRootOf(root);
  } catch (error) {
    return failed(error, 'runinfo directory');
  }
  // An absolute path may name runinfo by the path the job used (through the `<job>` symlink, say).
  const target =
    isAbsolute(file) && isWithin(resolve(root), resolve(file))
      ? resolve(realRoot, relative(resolve(root), resolve(file)))
      : resolve(realRoot, file);
  if (!isWithin(realRoot, target)) return refused(`${name} is outside the runinfo directory`);
  let handle: FileHandle;
  try {
    handle = await openNoFollow(target);
  } catch (error) {
    if (errorCode(error) !== 'ELOOP') return failed(error, name);
    // The file itself is a symlink: followed only where it stays inside runinfo.
    try {
      const real = await realpath(target);
      if (!isWithin(realRoot, real)) return refused(`${name} leads outside the runinfo directory`);
      handle = await openNoFollow(real);
    } catch (again) {
      return failed(again, name);
    }
  }
  let checked: OpenedLog;
  try {
    const stats = await handle.stat();
    // A directory on the way may be a symlink out (or swapped for one): the kernel says what was opened.
    const opened =
      (await readlink(`/proc/self/fd/${handle.fd}`).catch(() => undefined)) ??
      (await realpath(target).catch(() => target));
    if (!stats.isFile()) checked = refused(`${name} is not a regular file`);
    else if (!isWithin(realRoot, opened)) checked = refused(`${name} leads outside the runinfo directory`);
    else return { ok: true, handle, name };
  } catch (error) {
    checked = failed(error, name);
  }
  await handle.close().catch(() => undefined);
  return checked;
}

/**
 * The tail (at most `maxBytes`, cut on a line boundary) of bytes `range.begin`…`range.begin+size` of an
 * opened log file, as far as the file reaches now. Reads at most `maxBytes + 1`, whatever `size` says.
 */
async function readSlice(
  handle: FileHandle,
  name: string,
  range: LogRange,
  maxBytes: number,
): Promise<ExcerptResult> {
  try {
    // The file grows while the job runs: its size now, not when it was opened.
    const { size } = await handle.stat();
    const end = Math.min(range.begin + range.size, size);
    if (end <= range.begin) {
      return {
        ok: false,
        outcome: 'empty',
        detail: `bytes ${range.begin}+${range.size} of a ${size}-byte file`,
      };
    }
    // One byte more than the bound, when the slice has it: it tells whether the window starts a line.
    const start = Math.max(range.begin, end - maxBytes - 1);
    const bytes = Buffer.alloc(end - start);
    let filled = 0;
    while (filled < bytes.length) {
      const { bytesRead } = await handle.read(bytes, filled, bytes.length - filled, start + filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    if (filled === 0) return { ok: false, outcome: 'empty', detail: 'nothing to read' };
    const read = bytes.subarray(0, filled);
    const text = end - range.begin > maxBytes ? tailOnLineBoundary(read, maxBytes) : read.toString('utf8');
    return { ok: true, text };
  } catch (error) {
    return failure(error, name);
  }
}

/**
 * Reads the tail (at most `maxBytes`, cut on a line boundary) of bytes `range.begin`…`range.begin+size` of
 * `range.file`, a path relative to (or absolute inside) `root`, confined to `root` as openLogFile says.
 */
export async function readLogExcerpt(
  root: string,
  range: LogRange,
  maxBytes: number,
): Promise<ExcerptResult> {
  const opened = await openLogFile(root, range.file);
  if (!opened.ok) return opened.result;
  try {
    return await readSlice(opened.handle, opened.name, range, maxBytes);
  } finally {
    await opened.handle.close().catch(() => undefined);
  }
}

interface CachedLog {
  runId: string;
  opened: Promise<OpenedLog>;
  /** Reads under way through this handle. */
  users: number;
  /** Out of the cache: closed once its last read is done. */
  evicted: boolean;
}

/** Log files kept open at most, over all runs; the oldest goes first. */
const MAX_OPEN_LOGS = 64;

/**
 * The log files of running jobs, each opened and checked once and kept open until its job ends, so that a
 * job's failed sections cost one read each, not an open, checks and a close (profiled: the opens were 7% of
 * the exporter's CPU with spans on). A file that is missing or refused stays so for its job: a TaskLog is
 * created before any of its sections stops, and one that went away (archived) does not come back.
 */
export class LogFiles {
  private readonly cache = new Map<string, CachedLog>();

  async excerpt(runId: string, root: string, range: LogRange, maxBytes: number): Promise<ExcerptResult> {
    const key = `${runId}\0${root}\0${range.file}`;
    let entry = this.cache.get(key);
    if (entry === undefined) {
      entry = { runId, opened: openLogFile(root, range.file), users: 0, evicted: false };
      this.cache.set(key, entry);
      if (this.cache.size > MAX_OPEN_LOGS) this.evict(this.cache.keys().next().value as string);
    }
    entry.users += 1;
    try {
      const opened = await entry.opened;
      return opened.ok ? await readSlice(opened.handle, opened.name, range, maxBytes) : opened.result;
    } finally {
      entry.users -= 1;
      if (entry.evicted && entry.users === 0) void closeCached(entry);
    }
  }

  /** Closes the files of a run that ended. */
  closeRun(runId: string): void {
    for (const [key, entry] of this.cache) if (entry.runId === runId) this.evict(key);
  }

  closeAll(): void {
    for (const key of [...this.cache.keys()]) this.evict(key);
  }

  /** Open files (for tests). */
  get size(): number {
    return this.cache.size;
  }

  private evict(key: string): void {
    const entry = this.cache.get(key);
    if (entry === undefined) return;
    this.cache.delete(key);
    entry.evicted = true;
    if (entry.users === 0) void closeCached(entry);
  }
}

async function closeCached(entry: CachedLog): Promise<void> {
  const opened = await entry.opened;
  if (opened.ok) await opened.handle.close().catch(() => undefined);
}

export interface SectionLogSinkOptions {
  /** The sink the sections go on to (the span sink), with their excerpt. */
  inner: SectionSink;
  mode: SectionLogMode;
  maxBytes: number;
  /** Told about each excerpt attached or lost. */
  onOutcome: (outcome: SectionLogOutcome) => void;
  logger: Logger;
  /** Reads at once; more wait in a queue. Default 4. */
  concurrency?: number;
  /** Sections waiting for their excerpt (reads under way included); beyond it a section goes on without (`dropped`). Default 1000. */
  maxQueued?: number;
  /** The reader, given the section's run id; tests swap it. Default: through the sink's LogFiles. */
  read?: (root: string, range: LogRange, maxBytes: number, runId: string) => Promise<ExcerptResult>;
}

const FAILED_RESULTS = new Set(['failed', 'errored', 'aborted']);
/** Log the first of each outcome, then one in LOG_EVERY. */
const LOG_EVERY = 1000;

/** A section waiting for its excerpt; `out` is what goes on once it is read. */
interface Entry {
  section: FinishedSection;
  out?: FinishedSection;
}

/**
 * Attaches each selected section's log excerpt (`logExcerpt`) before it reaches `inner`: the one the source
 * sent (the bridge), cut to `maxBytes`, or the tail read from the job's log file. Sections that wait for a
 * read go on in the order they came (children before parents, which the log record sink relies on); others
 * go on at once. A job's `jobFinished` waits for its sections, so `inner` still sees the job end last.
 */
export class SectionLogSink implements SectionSink {
  private readonly concurrency: number;
  private readonly maxQueued: number;
  private readonly read: NonNullable<SectionLogSinkOptions['read']>;
  private readonly files = new LogFiles();
  /** Entries not forwarded yet, in arrival order. */
  private readonly order: Entry[] = [];
  /** Entries whose read has not started. */
  private readonly queue: Entry[] = [];
  private running = 0;
  /** Sections of a run (runId) queued or being read. */
  private readonly pendingByRun = new Map<string, number>();
  /** A run's jobFinished, held until its sections' reads are done. */
  private readonly heldJobEnds = new Map<string, JobSummary>();
  private idleWaiters: (() => void)[] = [];
  private readonly logged = new Map<SectionLogOutcome, number>();

  constructor(private readonly options: SectionLogSinkOptions) {
    this.concurrency = options.concurrency ?? 4;
    this.maxQueued = options.maxQueued ?? 1000;
    this.read =
      options.read ?? ((root, range, maxBytes, runId) => this.files.excerpt(runId, root, range, maxBytes));
  }

  sectionStarted(section: StartedSection): void {
    this.options.inner.sectionStarted(section);
  }

  sectionFinished(section: FinishedSection): void {
    const { inner, mode } = this.options;
    if (!this.selected(section)) {
      inner.sectionFinished(
        section.logExcerpt === undefined ? section : { ...section, logExcerpt: undefined },
      );
      return;
    }
    if (section.logExcerpt !== undefined) {
      this.options.onOutcome('forwarded');
      inner.sectionFinished({
        ...section,
        logExcerpt: tailOfText(section.logExcerpt, this.options.maxBytes),
      });
      return;
    }
    if (mode === 'none' || section.logRange === undefined || section.job.runinfoDir === undefined) {
      inner.sectionFinished(section);
      return;
    }
    if (this.order.length >= this.maxQueued) {
      this.outcome('dropped', section, `${this.order.length} sections wait for their log excerpt`);
      inner.sectionFinished(section);
      return;
    }
    const runId = section.job.runId;
    this.pendingByRun.set(runId, (this.pendingByRun.get(runId) ?? 0) + 1);
    const entry: Entry = { section };
    this.order.push(entry);
    this.queue.push(entry);
    this.pump();
  }

  jobFinished(summary: JobSummary): void {
    if ((this.pendingByRun.get(summary.job.runId) ?? 0) > 0) this.heldJobEnds.set(summary.job.runId, summary);
    else this.endJob(summary);
  }

  /** Waits for every read under way, then flushes `inner`. */
  async forceFlush(): Promise<void> {
    await this.idle();
    await this.options.inner.forceFlush?.();
  }

  async shutdown(): Promise<void> {
    await this.idle();
    this.files.closeAll();
    await this.options.inner.shutdown?.();
  }

  /** Log files held open, of every job still running (tests). */
  get openLogFiles(): number {
    return this.files.size;
  }

  private endJob(summary: JobSummary): void {
    this.files.closeRun(summary.job.runId);
    this.options.inner.jobFinished(summary);
  }

  private selected(section: FinishedSection): boolean {
    switch (this.options.mode) {
      case 'none':
        return false;
      case 'all':
        return true;
      case 'failed':
        return FAILED_RESULTS.has(section.result.value);
    }
  }

  private pump(): void {
    while (this.running < this.concurrency && this.queue.length > 0) {
      const entry = this.queue.shift() as Entry;
      this.running += 1;
      void this.attach(entry).finally(() => {
        this.running -= 1;
        this.release();
        this.pump();
      });
    }
  }

  private async attach(entry: Entry): Promise<void> {
    const section = entry.section;
    const range = section.logRange as LogRange;
    let result: ExcerptResult;
    try {
      result = await this.read(
        section.job.runinfoDir as string,
        range,
        this.options.maxBytes,
        section.job.runId,
      );
    } catch (error) {
      result = { ok: false, outcome: 'unreadable', detail: String(error) };
    }
    if (result.ok) {
      this.options.onOutcome('attached');
      entry.out = { ...section, logExcerpt: result.text };
    } else {
      this.outcome(result.outcome, section, result.detail);
      entry.out = section;
    }
  }

  /** Forwards the read entries at the head of the order. */
  private release(): void {
    while (this.order.length > 0 && this.order[0]?.out !== undefined) {
      const out = (this.order.shift() as Entry).out as FinishedSection;
      this.forward(out);
      this.done(out.job.runId);
    }
    if (this.order.length === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const wake of waiters) wake();
    }
  }

  private forward(section: FinishedSection): void {
    try {
      this.options.inner.sectionFinished(section);
    } catch (error) {
      this.options.logger.error({ err: error, seq_num: section.seqNum }, 'span sink failed on a section');
    }
  }

  private done(runId: string): void {
    const left = (this.pendingByRun.get(runId) ?? 1) - 1;
    if (left > 0) {
      this.pendingByRun.set(runId, left);
    } else {
      this.pendingByRun.delete(runId);
      const held = this.heldJobEnds.get(runId);
      if (held !== undefined) {
        this.heldJobEnds.delete(runId);
        this.endJob(held);
      }
    }
  }

  private idle(): Promise<void> {
    if (this.order.length === 0) return Promise.resolve();
    return new Promise((wake) => this.idleWaiters.push(wake));
  }

  private outcome(outcome: SectionLogOutcome, section: FinishedSection, detail: string): void {
    this.options.onOutcome(outcome);
    const seen = (this.logged.get(outcome) ?? 0) + 1;
    this.logged.set(outcome, seen);
    if (seen === 1 || seen % LOG_EVERY === 0) {
      this.options.logger.warn(
        { outcome, job: section.job.jobName, seq_num: section.seqNum, file: section.logRange?.file, detail },
        'section log excerpt not attached',
      );
    }
  }
}
