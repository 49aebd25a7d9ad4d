// `--capture FILE`: writes every normalized event, with its stream id and receive time, as NDJSON while the
// exporter runs (buffered; flushed on shutdown), so a live run can be replayed later or attached to a bug
// report. Also the parser of that format for replay.
//
// Capture format, version 1 — one JSON object per line, UTF-8, appended in the order the tracker saw them:
//   {"v":1,"kind":"capture","at":"2024-05-01T10:00:00.000Z","exporter":"0.1.0"}   each time the file is opened
//   {"v":1,"kind":"event","at":"…","stream":"reporter:5f0c…","data":{"event":"start_task","type":"Task",…}}
//   {"v":1,"kind":"end","at":"…","stream":"reporter:5f0c…"}                       the stream ended
//   {"v":1,"kind":"context","at":"…","stream":"…","ci":{"traceparent":"00-…-…-01","pipeline_name":…}}
//                                                       the stream's job runs in CI (from env.txt, a hello)
// `at`: when the exporter received it (ISO 8601, UTC, ms). `stream`: the tracker stream id (one per reporter
// connection, ingest connection or ingest job key); events of one stream are in their original order.
// `data`: the normalized event in pyATS's own keys — event, type, seq_num, parent_seq_num, id, fullid, name,
// starttime / stoptime (epoch milliseconds, fractional), runtime (seconds), result ({value, reason}),
// logfile (or logs {file, begin, size}), log_excerpt, xref ({file, line}) — so `normalize(data)` gives back
// the identical SectionEvent, in any zone.
// Replay: for each line in order, `event` → pipeline.ingest(stream, source, data); `end` →
// pipeline.endStream(stream); `context` → pipeline.setStreamContext(stream, {ci}), at the same place among
// the stream's events, so the replayed job joins the CI trace exactly when the live one did (`ci` holds
// `traceparent`, `pipeline_name`, `run_id`, `task_run_url`, `system`, each optional);
// `capture` (the exporter restarted) → end every stream still open; at the end
// of the file end every stream. Running the tracker with now() = the line's `at` also reproduces the times
// of sections abandoned when a stream ended. Unknown `kind`s are skipped; a `v` above 1 is an error.
import { open, type FileHandle } from 'node:fs/promises';
import {
  SectionTracker,
  parseTraceParent,
  type CiContext,
  type StreamContext,
  type TrackerOptions,
  type TrackerRejectReason,
  type SectionEvent,
} from '../events/index.js';
import type { Logger } from '../log.js';
import { isPyDict, type PyDict } from '../python/index.js';
import { MAX_ENV_VALUE_LENGTH, parseJson } from './ndjson.js';

export const CAPTURE_FORMAT_VERSION = 1;

export type CaptureRecord =
  | { kind: 'capture'; at: number; exporter?: string }
  | { kind: 'event'; at: number; stream: string; data: PyDict }
  | { kind: 'end'; at: number; stream: string }
  | { kind: 'context'; at: number; stream: string; ci: CiContext };

export type CaptureErrorCode = 'capture_open_failed' | 'bad_capture_line';

export class CaptureError extends Error {
  override readonly name = 'CaptureError';
  constructor(
    readonly code: CaptureErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** The normalized event in pyATS's key names; `normalize()` maps it back to an identical SectionEvent. */
export function toCaptureData(event: SectionEvent): Record<string, unknown> {
  const data: Record<string, unknown> = { event: event.event, type: event.type, seq_num: event.seqNum };
  if (event.parentSeqNum !== undefined) data['parent_seq_num'] = event.parentSeqNum;
  if (event.id !== undefined) data['id'] = event.id;
  if (event.fullid !== undefined) data['fullid'] = event.fullid;
  if (event.name !== undefined) data['name'] = event.name;
  // Epoch milliseconds: JSON keeps a double exactly, and the normalizer reads numbers this large as ms.
  if (event.startTime !== undefined) data['starttime'] = event.startTime;
  if (event.stopTime !== undefined) data['stoptime'] = event.stopTime;
  if (event.runtime !== undefined) data['runtime'] = event.runtime;
  if (event.result !== undefined) {
    data['result'] =
      event.result.reason === undefined
        ? { value: event.result.value }
        : { value: event.result.value, reason: event.result.reason };
  }
  if (event.logfile !== undefined) data['logfile'] = event.logfile;
  if (event.logRange !== undefined) {
    const { file, begin, size } = event.logRange;
    data['logs'] = { file, begin, size };
  }
  if (event.logExcerpt !== undefined) data['log_excerpt'] = event.logExcerpt;
  if (event.xref !== undefined) {
    const xref: Record<string, unknown> = {};
    if (event.xref.file !== undefined) xref['file'] = event.xref.file;
    if (event.xref.line !== undefined) xref['line'] = event.xref.line;
    data['xref'] = xref;
  }
  return data;
}

/** One line of a capture file; undefined for a blank line or a record kind this version does not know. */
export function parseCaptureLine(text: string): CaptureRecord | undefined {
  if (text.trim() === '') return undefined;
  let value: unknown;
  try {
    value = parseJson(text);
  } catch (error) {
    throw new CaptureError('bad_capture_line', `not JSON: ${(error as Error).message}`);
  }
  if (!isPyDict(value)) throw new CaptureError('bad_capture_line', 'not a JSON object');
  const version = value['v'];
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 1) {
    throw new CaptureError('bad_capture_line', 'no capture format version ("v")');
  }
  if (version > CAPTURE_FORMAT_VERSION) {
    throw new CaptureError(
      'bad_capture_line',
      `capture format version ${version} is newer than this exporter reads (${CAPTURE_FORMAT_VERSION})`,
    );
  }
  const atText = value['at'];
  const at = typeof atText === 'string' ? Date.parse(atText) : NaN;
  if (!Number.isFinite(at)) throw new CaptureError('bad_capture_line', 'no valid "at" time');
  const kind = value['kind'];
  if (kind === 'capture') {
    const exporter = value['exporter'];
    return typeof exporter === 'string' ? { kind, at, exporter } : { kind, at };
  }
  if (kind !== 'event' && kind !== 'end' && kind !== 'context') return undefined;
  const stream = value['stream'];
  if (typeof stream !== 'string' || stream === '') {
    throw new CaptureError('bad_capture_line', `a "${kind}" record without "stream"`);
  }
  if (kind === 'end') return { kind, at, stream };
  if (kind === 'context') return { kind, at, stream, ci: ciFromCapture(value['ci']) };
  const data = value['data'];
  if (!isPyDict(data)) throw new CaptureError('bad_capture_line', 'an "event" record without "data"');
  return { kind, at, stream, data };
}

const CI_FIELDS = [
  ['pipeline_name', 'pipelineName'],
  ['run_id', 'runId'],
  ['task_run_url', 'taskRunUrl'],
  ['system', 'system'],
] as const;

/** The `ci` of a `context` record: the traceparent and the CI fields under the capture's snake_case keys. */
export function ciToCapture(ci: CiContext): Record<string, string> {
  const out: Record<string, string> = {};
  const parent = ci.parent;
  if (parent !== undefined) {
    out['traceparent'] = `00-${parent.traceId}-${parent.spanId}-${parent.sampled ? '01' : '00'}`;
  }
  for (const [key, field] of CI_FIELDS) {
    const text = ci[field];
    if (text !== undefined) out[key] = text;
  }
  return out;
}

function ciFromCapture(value: unknown): CiContext {
  if (!isPyDict(value)) throw new CaptureError('bad_capture_line', 'a "context" record without "ci"');
  const ci: CiContext = {};
  const traceparent = value['traceparent'];
  if (traceparent !== undefined) {
    const parent = typeof traceparent === 'string' ? parseTraceParent(traceparent) : undefined;
    if (parent === undefined)
      throw new CaptureError('bad_capture_line', 'a "context" with a bad traceparent');
    ci.parent = parent;
  }
  for (const [key, field] of CI_FIELDS) {
    const text = value[key];
    if (text === undefined) continue;
    if (typeof text !== 'string' || text.length > MAX_ENV_VALUE_LENGTH) {
      throw new CaptureError(
        'bad_capture_line',
        `a "context" whose ${key} is not a string of ${MAX_ENV_VALUE_LENGTH} at most`,
      );
    }
    ci[field] = text;
  }
  return ci;
}

/** True when `firstLine` starts a capture file (as opposed to a plain NDJSON file of event dicts). */
export function isCaptureHeader(firstLine: string): boolean {
  try {
    const record = parseCaptureLine(firstLine);
    return record?.kind === 'capture';
  } catch {
    return false;
  }
}

export interface CaptureWriterOptions {
  path: string;
  /** The exporter's version, written in each `capture` record. */
  version: string;
  logger: Logger;
  /** Buffered lines are written at least this often. Default 1000. */
  flushIntervalMs?: number;
  /** Lines are written as soon as this many bytes are buffered. Default 64 KiB. */
  highWaterBytes?: number;
  /** While the disk is slower than the events, lines beyond this many buffered bytes are dropped. Default 32 MiB. */
  maxBufferBytes?: number;
  /** Wall clock, epoch ms (integer), for the `capture` record. */
  now?: () => number;
}

export interface CaptureStats {
  /** Lines written to the file. */
  written: number;
  /** Lines dropped because the buffer was full. */
  dropped: number;
  /** Writes that failed (their lines are lost). */
  failedWrites: number;
}

/** Appends capture records to a file; never throws after `open()` — failures are logged and counted. */
export class CaptureWriter {
  private handle: FileHandle | undefined;
  private buffer: string[] = [];
  private bufferedBytes = 0;
  private writing: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private dropping = false;
  private readonly counts: CaptureStats = { written: 0, dropped: 0, failedWrites: 0 };
  private readonly errorsLogged = new Set<string>();

  constructor(private readonly options: CaptureWriterOptions) {}

  /** Opens (creating or appending to) the file and writes the `capture` record. */
  async open(): Promise<void> {
    try {
      this.handle = await open(this.options.path, 'a');
    } catch (error) {
      throw new CaptureError(
        'capture_open_failed',
        `cannot open capture file ${this.options.path}: ${(error as Error).message}`,
      );
    }
    const at = (this.options.now ?? Date.now)();
    this.push({ v: CAPTURE_FORMAT_VERSION, kind: 'capture', at: iso(at), exporter: this.options.version });
    await this.flush();
  }

  stats(): CaptureStats {
    return { ...this.counts };
  }

  event(streamId: string, event: SectionEvent, at: number): void {
    this.push({
      v: CAPTURE_FORMAT_VERSION,
      kind: 'event',
      at: iso(at),
      stream: streamId,
      data: toCaptureData(event),
    });
  }

  /**
   * The stream's job runs in CI (`ci` as ciToCapture writes it): replay applies it at the same place among the
   * stream's events.
   */
  context(streamId: string, ci: Record<string, string>, at: number): void {
    this.push({ v: CAPTURE_FORMAT_VERSION, kind: 'context', at: iso(at), stream: streamId, ci });
  }

  streamEnded(streamId: string, at: number): void {
    this.push({ v: CAPTURE_FORMAT_VERSION, kind: 'end', at: iso(at), stream: streamId });
  }

  /** Writes everything buffered so far. */
  flush(): Promise<void> {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.buffer.length === 0 || this.handle === undefined) return this.writing;
    const lines = this.buffer;
    const handle = this.handle;
    this.buffer = [];
    this.bufferedBytes = 0;
    const chunk = lines.join('');
    this.writing = this.writing.then(async () => {
      try {
        await handle.writeFile(chunk, 'utf8');
        this.counts.written += lines.length;
      } catch (error) {
        this.counts.failedWrites += 1;
        const code = (error as NodeJS.ErrnoException).code ?? 'unknown';
        if (!this.errorsLogged.has(code)) {
          this.errorsLogged.add(code);
          this.options.logger.error(
            { err: error, path: this.options.path, lines: lines.length },
            'writing the capture file failed; those events are missing from it',
          );
        }
      }
    });
    return this.writing;
  }

  /** Flushes and closes the file; later records are ignored. */
  async close(): Promise<void> {
    if (this.closed) return this.writing;
    this.closed = true;
    await this.flush();
    const handle = this.handle;
    this.handle = undefined;
    if (handle !== undefined) {
      await handle.close().catch((err: unknown) => {
        this.options.logger.error({ err, path: this.options.path }, 'closing the capture file failed');
      });
    }
    if (this.counts.dropped > 0) {
      this.options.logger.warn(
        { path: this.options.path, dropped: this.counts.dropped },
        'capture file is missing events dropped while the disk was too slow',
      );
    }
  }

  private push(record: Record<string, unknown>): void {
    if (this.closed) return;
    const line = `${JSON.stringify(record)}\n`;
    const bytes = Buffer.byteLength(line);
    if (this.bufferedBytes + bytes > (this.options.maxBufferBytes ?? 32 * 1024 * 1024)) {
      this.counts.dropped += 1;
      if (!this.dropping) {
        this.dropping = true;
        this.options.logger.warn({ path: this.options.path }, 'capture buffer full; dropping events');
      }
      return;
    }
    this.dropping = false;
    this.buffer.push(line);
    this.bufferedBytes += bytes;
    if (this.bufferedBytes >= (this.options.highWaterBytes ?? 64 * 1024)) {
      void this.flush();
    } else if (this.timer === undefined) {
      this.timer = setTimeout(() => void this.flush(), this.options.flushIntervalMs ?? 1000);
      // Unref: a pending flush must not keep the process alive; close() flushes at shutdown.
      this.timer.unref();
    }
  }
}

export interface CapturingTrackerOptions extends TrackerOptions {
  capture: CaptureWriter;
}

/**
 * A SectionTracker that first writes each event it is given (already normalized) and each end of a stream
 * it has seen to the capture. During each call the tracker's clock reads the `at` written, so a replay that
 * sets its clock from `at` ends abandoned sections at the same times.
 */
export class CapturingTracker extends SectionTracker {
  private readonly capture: CaptureWriter;
  private readonly clock: HeldClock;
  /** Streams with captured events and no `end` record yet. */
  private readonly openStreams = new Set<string>();
  /** The CI context last captured per stream, as written. */
  private readonly capturedCi = new Map<string, string>();

  constructor(options: CapturingTrackerOptions) {
    const clock = new HeldClock(options.now ?? Date.now);
    super({ ...options, now: () => clock.now() });
    this.clock = clock;
    this.capture = options.capture;
  }

  override onEvent(streamId: string, event: SectionEvent): TrackerRejectReason | undefined {
    const at = this.clock.hold();
    this.openStreams.add(streamId);
    try {
      return super.onEvent(streamId, event);
    } finally {
      // After the tracker: the CI context it read from env.txt just before this event's first record went
      // out (setStreamContext, below) is then written first, where replay needs it.
      this.capture.event(streamId, event, at);
      this.clock.release();
    }
  }

  override setStreamContext(streamId: string, context: StreamContext): void {
    // Only the CI run: the runinfo directory is a path on this host, for reading its files live.
    if (context.ci !== undefined) {
      const ci = ciToCapture(context.ci);
      const written = JSON.stringify(ci);
      // A bridge says it again on every reconnect: one record while it stays the same.
      if (written !== this.capturedCi.get(streamId)) {
        this.capturedCi.set(streamId, written);
        this.openStreams.add(streamId);
        this.capture.context(streamId, ci, Math.floor(this.clock.now()));
      }
    }
    super.setStreamContext(streamId, context);
  }

  override endStream(streamId: string): void {
    this.capturedCi.delete(streamId);
    if (!this.openStreams.delete(streamId)) {
      super.endStream(streamId);
      return;
    }
    const at = this.clock.hold();
    try {
      this.capture.streamEnded(streamId, at);
      super.endStream(streamId);
    } finally {
      this.clock.release();
    }
  }
}

/** A wall clock that can be held at one reading for the length of a call. */
class HeldClock {
  private held: number | undefined;

  constructor(private readonly base: () => number) {}

  now(): number {
    return this.held ?? this.base();
  }

  hold(): number {
    // ms precision: `at` is written as an ISO time with milliseconds.
    this.held = Math.floor(this.base());
    return this.held;
  }

  release(): void {
    this.held = undefined;
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
