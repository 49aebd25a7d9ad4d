// Backfill (`pyats-exporter replay FILE...`): feeds finished jobs through the pipeline as if they ran live —
// a results.json / results.yaml, a pyATS archive .zip holding one, a runinfo directory, an exporter capture
// (`--capture`), or plain NDJSON of event dicts — one tracker stream per job, ended at the end of its file.
// An archive or runinfo directory also holds easypy's env.txt: the CI run it names becomes the stream's
// context, so the replayed job joins the CI trace as the live export did. Also the command's progress display.
import { createReadStream } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { unzipSync } from 'fflate';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { ciContext, parseEnvTxt, toEpochMs, type StreamContext, type Zone } from '../events/index.js';
import { isPyDict } from '../python/index.js';
import { CaptureError, isCaptureHeader, parseCaptureLine } from './capture.js';
import { LineSplitter, itemOf, type IngestTarget } from './ndjson.js';
import { ResultsFormatError, locateJsonError, resultsEvents } from './results-json.js';

export type ReplayKind = 'results' | 'archive' | 'capture' | 'ndjson';

export const REPLAY_SOURCE = 'replay';

export type ReplayErrorCode =
  'unreadable' | 'bad_json' | 'bad_yaml' | 'bad_results' | 'bad_archive' | 'no_results' | 'unknown_format';

/** Why one file could not be replayed; the message starts with `file[:line[:column]]: `. */
export class ReplayError extends Error {
  override readonly name = 'ReplayError';
  constructor(
    readonly code: ReplayErrorCode,
    readonly file: string,
    readonly detail: string,
    readonly line?: number,
    readonly column?: number,
  ) {
    super(
      `${file}${line === undefined ? '' : `:${line}${column === undefined ? '' : `:${column}`}`}: ${detail}`,
    );
  }
}

/** Holds the tracker's clock at a capture line's `at` while it is replayed (see capture.ts). */
export class ReplayClock {
  private held: number | undefined;

  constructor(private readonly base: () => number = Date.now) {}

  /** Give this to `new SectionTracker({ now })`. */
  readonly now = (): number => this.held ?? this.base();

  hold(ms: number): void {
    this.held = ms;
  }

  release(): void {
    this.held = undefined;
  }
}

export interface ReplayProgress {
  file: string;
  /** 0-based index of `file` among the files. */
  fileIndex: number;
  files: number;
  /** Bytes of `file` read so far, and its size. */
  bytesRead: number;
  bytesTotal: number;
  /** Events fed to the pipeline so far, over all files. */
  events: number;
  /** Files that failed so far. */
  failed: number;
}

export interface ReplayOptions {
  onProgress?: (progress: ReplayProgress) => void;
  /**
   * Awaited every `flushEvery` events and after each file (give it the span sink's forceFlush): the batch span
   * processor drops spans when its queue overflows, and a replay produces them far faster than a live job.
   */
  flush?: () => Promise<void>;
  /** Default 512 (a quarter of OTEL_BSP_MAX_QUEUE_SIZE's default 2048). */
  flushEvery?: number;
  /**
   * The tracker's clock (`new SectionTracker({ now: clock.now })`): held at capture records' `at`, so sections
   * abandoned live end at the same times when replayed, and (with `zone`) at a file's latest event time when
   * its unfinished sections are abandoned at its end.
   */
  clock?: ReplayClock;
  /** The normalizer's zone (`--timezone`), to read event times for the clock. */
  zone?: Zone;
  /** The `source` label of `pyats_exporter_events_received_total`. Default `replay`. */
  source?: string;
  /** Longest NDJSON line; longer ones are rejected. Default 1 MiB. */
  maxLineBytes?: number;
  /** Largest results.json / results.yaml read (also inside an archive). Default 512 MiB. */
  maxResultsBytes?: number;
  /** seq_num of a results.json's TestSuite when it carries none. Default 1. */
  firstSeqNum?: number;
}

export interface LineProblem {
  line: number;
  message: string;
}

export interface FileReplay {
  file: string;
  kind?: ReplayKind;
  /** The archive member or directory entry replayed, for archives and directories. */
  member?: string;
  events: number;
  /** TestSuites started (jobs) in this file. */
  jobs: number;
  /** NDJSON / capture lines refused; the file's other lines were replayed. */
  badLines: number;
  /** The first refused lines. */
  lineProblems: LineProblem[];
  /** Set when the file could not be replayed at all. */
  error?: ReplayError;
}

export interface ReplaySummary {
  files: FileReplay[];
  events: number;
  jobs: number;
  /** Files not replayed (each has `error`). */
  failed: number;
  badLines: number;
  durationMs: number;
}

const DEFAULT_FLUSH_EVERY = 512;
const DEFAULT_MAX_LINE_BYTES = 1024 * 1024;
const DEFAULT_MAX_RESULTS_BYTES = 512 * 1024 * 1024;
const MAX_LINE_PROBLEMS = 20;
const RESULTS_NAMES = ['results.json', 'results.yaml'];
/** Easypy's record of the job's environment, beside the report (observed on pyATS 23.2 archives). */
const ENV_NAME = 'env.txt';
/** env.txt is ~20 KB; as src/reporter/runinfo.ts, only its start is read (the variables precede the packages). */
const ENV_READ_BYTES = 1 << 20;
/** A larger env.txt in an archive is not inflated at all: the replay goes on without the CI context. */
const ENV_MAX_INFLATED_BYTES = 16 << 20;
const ZIP_MAGIC = [0x50, 0x4b, 0x03, 0x04];
const SNIFF_BYTES = 64 * 1024;

/**
 * Replays each file in order through `target` (the Pipeline). Never throws for a bad file: its error is in
 * the summary and the other files are still replayed.
 */
export async function replayFiles(
  files: readonly string[],
  target: IngestTarget,
  options: ReplayOptions = {},
): Promise<ReplaySummary> {
  const started = Date.now();
  const feeder = new Feeder(target, options, files.length);
  const results: FileReplay[] = [];
  for (const [index, file] of files.entries()) {
    const replay: FileReplay = { file, events: 0, jobs: 0, badLines: 0, lineProblems: [] };
    results.push(replay);
    feeder.beginFile(replay, index);
    try {
      await replayOne(file, replay, feeder, options);
    } catch (error) {
      replay.error = asReplayError(error, file);
    } finally {
      await feeder.endFile();
    }
  }
  return {
    files: results,
    events: results.reduce((n, f) => n + f.events, 0),
    jobs: results.reduce((n, f) => n + f.jobs, 0),
    failed: results.filter((f) => f.error !== undefined).length,
    badLines: results.reduce((n, f) => n + f.badLines, 0),
    durationMs: Date.now() - started,
  };
}

/** Counts, paces and tracks the open streams of the file being replayed. */
class Feeder {
  private replay!: FileReplay;
  private index = 0;
  private readonly open = new Set<string>();
  private sinceFlush = 0;
  private totalEvents = 0;
  private failed = 0;
  private bytesRead = 0;
  private bytesTotal = 0;
  private latestTime: number | undefined;
  private timesFromEvents = true;
  readonly source: string;

  constructor(
    private readonly target: IngestTarget,
    private readonly options: ReplayOptions,
    private readonly files: number,
  ) {
    this.source = options.source ?? REPLAY_SOURCE;
  }

  beginFile(replay: FileReplay, index: number): void {
    this.replay = replay;
    this.index = index;
    this.bytesRead = 0;
    this.bytesTotal = 0;
    this.latestTime = undefined;
    this.timesFromEvents = true;
    this.report();
  }

  /** Capture files carry their own clock (`at`); other files end their streams at their latest event time. */
  useCaptureClock(): void {
    this.timesFromEvents = false;
  }

  /** A capture record's `at`: the time the exporter received it, and so the time its stream may end. */
  captureTime(at: number): void {
    this.latestTime = at;
  }

  /** A tracker stream id of this file: one per file, or per captured stream. */
  stream(key?: string): string {
    return key === undefined ? `replay:${this.index}` : `replay:${this.index}:${key}`;
  }

  setSize(bytes: number): void {
    this.bytesTotal = bytes;
  }

  async read(bytes: number): Promise<void> {
    this.bytesRead += bytes;
    this.report();
    await this.pace();
  }

  async ingest(streamId: string, raw: unknown): Promise<void> {
    this.open.add(streamId);
    if (this.timesFromEvents) this.noteTimes(raw);
    this.target.ingest(streamId, this.source, raw);
    this.replay.events += 1;
    this.totalEvents += 1;
    if (isSuiteStart(raw)) this.replay.jobs += 1;
    this.sinceFlush += 1;
    if (this.sinceFlush >= (this.options.flushEvery ?? DEFAULT_FLUSH_EVERY)) await this.pace(true);
  }

  /** The job's context (its CI run) for a stream, from a results file's env.txt, a hello or a capture. */
  setContext(streamId: string, context: StreamContext): void {
    this.open.add(streamId);
    this.target.setStreamContext(streamId, context);
  }

  badLine(streamId: string, line: number, reason: string, message: string): void {
    this.target.reject(streamId, this.source, reason, `line ${line}: ${message}`);
    this.replay.badLines += 1;
    if (this.replay.lineProblems.length < MAX_LINE_PROBLEMS) this.replay.lineProblems.push({ line, message });
  }

  /**
   * Ends a stream. Sections still open are abandoned at the tracker's clock, held at the file's latest time
   * (the last capture record's `at`, else with `zone` the latest event time), so an unfinished job's spans do
   * not stretch to the day of the replay.
   */
  endStream(streamId: string): void {
    if (!this.open.delete(streamId)) return;
    const clock = this.options.clock;
    const hold = clock !== undefined && this.latestTime !== undefined;
    if (hold) clock.hold(this.latestTime as number);
    try {
      this.target.endStream(streamId);
    } finally {
      if (hold) clock.release();
    }
  }

  /** Holds the tracker's clock at the latest time noted so far (see endStream), until releaseClock. */
  holdClock(): void {
    if (this.latestTime !== undefined) this.options.clock?.hold(this.latestTime);
  }

  releaseClock(): void {
    this.options.clock?.release();
  }

  noteTimes(raw: unknown): void {
    const zone = this.options.zone;
    if (zone === undefined || this.options.clock === undefined || !isPyDict(raw)) return;
    for (const key of ['starttime', 'stoptime']) {
      const value = raw[key];
      const ms = value === undefined || value === null ? undefined : toEpochMs(value, zone);
      if (
        ms !== undefined &&
        Number.isFinite(ms) &&
        (this.latestTime === undefined || ms > this.latestTime)
      ) {
        this.latestTime = ms;
      }
    }
  }

  endAllStreams(): void {
    for (const streamId of [...this.open]) this.endStream(streamId);
  }

  async endFile(): Promise<void> {
    this.endAllStreams();
    this.options.clock?.release();
    if (this.replay.error !== undefined) this.failed += 1;
    this.bytesRead = Math.max(this.bytesRead, this.bytesTotal);
    this.report();
    await this.pace(true);
  }

  private async pace(force = false): Promise<void> {
    if (!force && this.sinceFlush < (this.options.flushEvery ?? DEFAULT_FLUSH_EVERY)) return;
    this.sinceFlush = 0;
    if (this.options.flush) await this.options.flush();
    // Let exporters, timers and the progress display run between batches.
    await yieldToEventLoop();
  }

  private report(): void {
    this.options.onProgress?.({
      file: this.replay.file,
      fileIndex: this.index,
      files: this.files,
      bytesRead: this.bytesRead,
      bytesTotal: this.bytesTotal,
      events: this.totalEvents,
      failed: this.failed,
    });
  }
}

function isSuiteStart(raw: unknown): boolean {
  if (typeof raw !== 'object' || raw === null) return false;
  const event = (raw as Record<string, unknown>)['event'];
  return event === 'start_testsuite';
}

async function replayOne(
  file: string,
  replay: FileReplay,
  feeder: Feeder,
  options: ReplayOptions,
): Promise<void> {
  let info;
  try {
    info = await stat(file);
  } catch (error) {
    throw new ReplayError('unreadable', file, (error as Error).message);
  }
  if (info.isDirectory()) {
    const member = await findResultsInDirectory(file);
    replay.kind = 'results';
    replay.member = basename(member);
    feeder.setSize((await stat(member)).size);
    const context = contextOf(await readEnvInDirectory(file));
    await replayResultsText(
      await readText(member, file, options),
      formatOf(member),
      file,
      feeder,
      options,
      context,
    );
    return;
  }
  feeder.setSize(info.size);
  const head = await readHead(file);
  const kind = sniff(file, head);
  replay.kind = kind;
  if (kind === 'archive') {
    const { name, text, envText } = await resultsFromArchive(file, options);
    replay.member = name;
    await replayResultsText(text, formatOf(name), file, feeder, options, contextOf(envText));
  } else if (kind === 'results') {
    await replayResultsText(await readText(file, file, options), formatOf(file), file, feeder, options);
  } else {
    await replayLines(file, kind, feeder, options);
  }
}

async function readHead(file: string): Promise<Buffer> {
  let handle;
  try {
    handle = await open(file, 'r');
    const buffer = Buffer.alloc(SNIFF_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, SNIFF_BYTES, 0);
    return buffer.subarray(0, bytesRead);
  } catch (error) {
    throw new ReplayError('unreadable', file, (error as Error).message);
  } finally {
    await handle?.close();
  }
}

/**
 * Zip by its magic bytes; YAML by its extension; otherwise by the first line: a capture header, an event
 * dict or control line (NDJSON), or else a whole JSON document (a results.json, pretty-printed or not).
 */
function sniff(file: string, head: Buffer): ReplayKind {
  if (ZIP_MAGIC.every((byte, i) => head[i] === byte)) return 'archive';
  if (/\.ya?ml$/i.test(file)) return 'results';
  const lineFile = /\.(ndjson|jsonl)$/i.test(file);
  const text = head.toString('utf8').replace(/^\uFEFF/, '');
  const firstLine = text.split('\n').find((line) => line.trim() !== '');
  if (firstLine === undefined) {
    if (lineFile) return 'ndjson';
    throw new ReplayError('unknown_format', file, 'empty file');
  }
  if (isCaptureHeader(firstLine)) return 'capture';
  if (lineFile) return 'ndjson';
  let value: unknown;
  try {
    value = JSON.parse(firstLine);
  } catch {
    return 'results';
  }
  const isEvent = typeof value === 'object' && value !== null && ('event' in value || 'control' in value);
  return isEvent ? 'ndjson' : 'results';
}

function formatOf(name: string): 'json' | 'yaml' {
  return /\.ya?ml$/i.test(name) ? 'yaml' : 'json';
}

async function readText(path: string, file: string, options: ReplayOptions): Promise<string> {
  const limit = options.maxResultsBytes ?? DEFAULT_MAX_RESULTS_BYTES;
  try {
    const size = (await stat(path)).size;
    if (size > limit) throw new ReplayError('bad_results', file, `report of ${size} bytes is over ${limit}`);
    return (await readFile(path, 'utf8')).replace(/^\uFEFF/, '');
  } catch (error) {
    if (error instanceof ReplayError) throw error;
    throw new ReplayError('unreadable', file, (error as Error).message);
  }
}

async function findResultsInDirectory(dir: string): Promise<string> {
  for (const name of RESULTS_NAMES) {
    const path = join(dir, name);
    try {
      if ((await stat(path)).isFile()) return path;
    } catch {
      // Try the next name.
    }
  }
  throw new ReplayError('no_results', dir, `a directory without ${RESULTS_NAMES.join(' or ')}`);
}

/** The start of a runinfo directory's env.txt; undefined when there is none or it cannot be read. */
async function readEnvInDirectory(dir: string): Promise<string | undefined> {
  let handle;
  try {
    handle = await open(join(dir, ENV_NAME), 'r');
    if (!(await handle.stat()).isFile()) return undefined;
    const buffer = Buffer.alloc(ENV_READ_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, ENV_READ_BYTES, 0);
    return buffer.toString('utf8', 0, bytesRead);
  } catch {
    return undefined;
  } finally {
    await handle?.close();
  }
}

/** The CI run an env.txt names, as the stream context the native socket would have set; else undefined. */
function contextOf(envText: string | undefined): StreamContext | undefined {
  if (envText === undefined) return undefined;
  const ci = ciContext(parseEnvTxt(envText));
  return ci === undefined ? undefined : { ci };
}

/**
 * The report inside a pyATS archive: the shallowest `results.json` (else `results.yaml`), whether at the top
 * or under the job's runinfo folder, and the env.txt beside it. Only those members are inflated.
 */
async function resultsFromArchive(
  file: string,
  options: ReplayOptions,
): Promise<{ name: string; text: string; envText?: string }> {
  const limit = options.maxResultsBytes ?? DEFAULT_MAX_RESULTS_BYTES;
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (error) {
    throw new ReplayError('unreadable', file, (error as Error).message);
  }
  const members: { name: string; size: number }[] = [];
  const envMembers: { name: string; size: number }[] = [];
  let entries: Record<string, Uint8Array>;
  let envName: string | undefined;
  try {
    unzipSync(bytes, {
      filter: (entry) => {
        if (RESULTS_NAMES.includes(basename(entry.name))) {
          members.push({ name: entry.name, size: entry.originalSize });
        } else if (basename(entry.name) === ENV_NAME) {
          envMembers.push({ name: entry.name, size: entry.originalSize });
        }
        return false;
      },
    });
    const chosen = pickResultsMember(members);
    if (chosen === undefined) {
      throw new ReplayError('no_results', file, `an archive without ${RESULTS_NAMES.join(' or ')}`);
    }
    if (chosen.size > limit) {
      throw new ReplayError('bad_results', file, `${chosen.name} of ${chosen.size} bytes is over ${limit}`);
    }
    envName = envMembers.find(
      (env) => dirname(env.name) === dirname(chosen.name) && env.size <= ENV_MAX_INFLATED_BYTES,
    )?.name;
    entries = unzipSync(bytes, { filter: (entry) => entry.name === chosen.name || entry.name === envName });
  } catch (error) {
    if (error instanceof ReplayError) throw error;
    throw new ReplayError('bad_archive', file, `not a readable zip archive (${(error as Error).message})`);
  }
  const name = Object.keys(entries).find((member) => member !== envName);
  const data = name === undefined ? undefined : entries[name];
  if (name === undefined || data === undefined) throw new ReplayError('bad_archive', file, 'member vanished');
  const env = envName === undefined ? undefined : entries[envName];
  const text = new TextDecoder('utf-8').decode(data).replace(/^\uFEFF/, '');
  if (env === undefined) return { name, text };
  return { name, text, envText: Buffer.from(env.subarray(0, ENV_READ_BYTES)).toString('utf8') };
}

function pickResultsMember(
  members: { name: string; size: number }[],
): { name: string; size: number } | undefined {
  const depth = (name: string): number => name.split('/').filter((part) => part !== '').length;
  const rank = (name: string): number => RESULTS_NAMES.indexOf(basename(name));
  return [...members].sort(
    (a, b) => rank(a.name) - rank(b.name) || depth(a.name) - depth(b.name) || a.name.localeCompare(b.name),
  )[0];
}

async function replayResultsText(
  text: string,
  format: 'json' | 'yaml',
  file: string,
  feeder: Feeder,
  options: ReplayOptions,
  context?: StreamContext,
): Promise<void> {
  let doc: unknown;
  if (format === 'yaml') {
    try {
      doc = parseYaml(text);
    } catch (error) {
      const pos = error instanceof YAMLParseError ? error.linePos?.[0] : undefined;
      const message = (error as Error).message.split('\n')[0] ?? 'invalid YAML';
      throw new ReplayError('bad_yaml', file, message, pos?.line, pos?.col);
    }
  } else {
    try {
      doc = JSON.parse(text);
    } catch (error) {
      const pos = locateJsonError(text);
      throw new ReplayError(
        'bad_json',
        file,
        `not valid JSON (${(error as Error).message})`,
        pos?.line,
        pos?.column,
      );
    }
  }
  let events: unknown[];
  if (Array.isArray(doc)) {
    // A JSON array of event dicts, as POST /api/v1/events also takes.
    events = doc;
  } else {
    try {
      ({ events } = resultsEvents(
        doc,
        options.firstSeqNum === undefined ? {} : { firstSeqNum: options.firstSeqNum },
      ));
    } catch (error) {
      if (error instanceof ResultsFormatError) throw new ReplayError('bad_results', file, error.message);
      throw error;
    }
  }
  // A report is read whole: a section it lists without stoptime (a crashed job) ends at the report's last time.
  for (const event of events) feeder.noteTimes(event);
  const stream = feeder.stream();
  if (context !== undefined) feeder.setContext(stream, context);
  feeder.holdClock();
  try {
    for (const event of events) await feeder.ingest(stream, event);
  } finally {
    feeder.releaseClock();
  }
  await feeder.read(Buffer.byteLength(text));
}

/** A capture (`--capture`) or plain NDJSON of event dicts, streamed line by line. */
async function replayLines(
  file: string,
  kind: ReplayKind,
  feeder: Feeder,
  options: ReplayOptions,
): Promise<void> {
  if (kind === 'capture') feeder.useCaptureClock();
  const maxLineBytes = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  const splitter = new LineSplitter(maxLineBytes);
  const fileStream = feeder.stream();
  let current = fileStream;
  const handle = async (split: ReturnType<LineSplitter['push']>[number]): Promise<void> => {
    if (kind === 'capture') {
      await captureLine(split, feeder, fileStream, maxLineBytes, options);
      return;
    }
    const item = itemOf(split, maxLineBytes);
    if (item === undefined) return;
    if (item.kind === 'invalid') feeder.badLine(current, split.line, item.reason, item.detail);
    else if (item.kind === 'event') await feeder.ingest(current, item.value);
    else if (item.control.kind === 'hello') {
      const hello = item.control;
      current = feeder.stream(`key:${hello.stream}`);
      if (hello.envProblem !== undefined)
        feeder.badLine(current, split.line, 'bad_control', hello.envProblem);
      else if (hello.ci !== undefined) feeder.setContext(current, { ci: hello.ci });
    } else if (item.control.kind === 'end') feeder.endStream(current);
  };
  const input = createReadStream(file);
  try {
    for await (const chunk of input as AsyncIterable<Buffer>) {
      for (const split of splitter.push(chunk)) await handle(split);
      await feeder.read(chunk.length);
    }
  } catch (error) {
    throw new ReplayError('unreadable', file, (error as Error).message);
  } finally {
    input.destroy();
  }
  for (const split of splitter.end()) await handle(split);
}

async function captureLine(
  split: ReturnType<LineSplitter['push']>[number],
  feeder: Feeder,
  fileStream: string,
  maxLineBytes: number,
  options: ReplayOptions,
): Promise<void> {
  if ('tooLongBytes' in split) {
    feeder.badLine(
      fileStream,
      split.line,
      'line_too_long',
      `line of ${split.tooLongBytes} bytes is over ${maxLineBytes}`,
    );
    return;
  }
  let record;
  try {
    record = parseCaptureLine(split.text);
  } catch (error) {
    if (!(error instanceof CaptureError)) throw error;
    feeder.badLine(fileStream, split.line, 'bad_json', error.message);
    return;
  }
  if (record === undefined) return;
  feeder.captureTime(record.at);
  options.clock?.hold(record.at);
  try {
    if (record.kind === 'capture') feeder.endAllStreams();
    else if (record.kind === 'end') feeder.endStream(feeder.stream(record.stream));
    else if (record.kind === 'context') feeder.setContext(feeder.stream(record.stream), { ci: record.ci });
    else await feeder.ingest(feeder.stream(record.stream), record.data);
  } finally {
    options.clock?.release();
  }
}

function asReplayError(error: unknown, file: string): ReplayError {
  if (error instanceof ReplayError) return error;
  return new ReplayError('unreadable', file, error instanceof Error ? error.message : String(error));
}

// --- progress display ----------------------------------------------------------------------------------------

/** Where progress goes: process.stderr, or anything with `write` (and `isTTY` / `columns` for a terminal). */
export interface ProgressOutput {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressReporter {
  onProgress(progress: ReplayProgress): void;
  /** Clears the bar and writes one line per failed file, then the summary line. */
  finish(summary: ReplaySummary): void;
}

/** A bar redrawn at most every `intervalMs` on a terminal; nothing but the final lines otherwise. */
export function createProgressReporter(
  output: ProgressOutput,
  options: { intervalMs?: number; now?: () => number } = {},
): ProgressReporter {
  const now = options.now ?? Date.now;
  const interval = options.intervalMs ?? 100;
  let lastDraw = -Infinity;
  let drawn = false;
  return {
    onProgress(progress) {
      if (output.isTTY !== true) return;
      const t = now();
      const lastOfFile = progress.bytesTotal > 0 && progress.bytesRead >= progress.bytesTotal;
      if (t - lastDraw < interval && !lastOfFile) return;
      lastDraw = t;
      output.write(`\r\x1b[K${progressLine(progress, output.columns ?? 80)}`);
      drawn = true;
    },
    finish(summary) {
      if (drawn) output.write('\r\x1b[K');
      for (const line of failureLines(summary)) output.write(`${line}\n`);
      output.write(`${summaryLine(summary)}\n`);
    },
  };
}

/** `[#######-------------]  3/10 files  1,234 events  name.zip`, cut to `columns`. */
export function progressLine(progress: ReplayProgress, columns: number): string {
  const width = 20;
  const within = progress.bytesTotal > 0 ? Math.min(1, progress.bytesRead / progress.bytesTotal) : 0;
  const fraction = progress.files > 0 ? (progress.fileIndex + within) / progress.files : 1;
  const filled = Math.round(fraction * width);
  const bar = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`;
  const failed = progress.failed > 0 ? `  ${progress.failed} failed` : '';
  const line =
    `${bar} ${progress.fileIndex + 1}/${progress.files} files  ${formatCount(progress.events)} events` +
    `${failed}  ${basename(progress.file)}`;
  return line.length > columns - 1 ? line.slice(0, Math.max(0, columns - 1)) : line;
}

/** One line per file that failed or had refused lines. */
export function failureLines(summary: ReplaySummary): string[] {
  const lines: string[] = [];
  for (const file of summary.files) {
    if (file.error !== undefined) lines.push(`replay: ${file.error.message}`);
    for (const problem of file.lineProblems) {
      lines.push(`replay: ${file.file}:${problem.line}: line skipped: ${problem.message}`);
    }
    const unlisted = file.badLines - file.lineProblems.length;
    if (unlisted > 0) lines.push(`replay: ${file.file}: ${unlisted} more lines skipped`);
  }
  return lines;
}

/** `replay: 3 files (1 failed), 2 jobs, 1,234 events, 2 lines skipped, 0.4 s` */
export function summaryLine(summary: ReplaySummary): string {
  const files = summary.files.length;
  const parts = [
    `${files} file${files === 1 ? '' : 's'}${summary.failed > 0 ? ` (${summary.failed} failed)` : ''}`,
    `${formatCount(summary.jobs)} job${summary.jobs === 1 ? '' : 's'}`,
    `${formatCount(summary.events)} events`,
  ];
  if (summary.badLines > 0) parts.push(`${formatCount(summary.badLines)} lines skipped`);
  parts.push(`${(summary.durationMs / 1000).toFixed(1)} s`);
  return `replay: ${parts.join(', ')}`;
}

function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}
