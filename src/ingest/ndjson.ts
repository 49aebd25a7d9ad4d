// NDJSON ingest, the parts the HTTP route and the Unix socket share: splitting bytes into lines, turning a
// line into an event value (the PyValue model the normalizer takes) or a control message, and the table of
// keyed streams that lets one job's events arrive over many requests or reconnections.
import { randomUUID } from 'node:crypto';
import { ciContext, type CiContext, type StreamContext } from '../events/index.js';
import type { Logger } from '../log.js';
import type { PyDict, PyValue } from '../python/index.js';

/** Why the pipeline refused an event (normalizer or tracker), as counted in `events_rejected_total`. */
export interface IngestRefusal {
  reason: string;
  detail: string;
}

/** Where ingest sources send what they read; `Pipeline` is one. */
export interface IngestTarget {
  /** Counts, normalizes and tracks one event; returns why it was refused, if it was. */
  ingest(streamId: string, source: string, raw: unknown): IngestRefusal | undefined;
  reject(streamId: string, source: string, reason: string, detail: string): void;
  endStream(streamId: string): void;
  /** What the writer said of the stream's job beyond its events (its CI run, from a hello's `env`). */
  setStreamContext(streamId: string, context: StreamContext): void;
}

/** Why a line never became an event. Stable: used as the `reason` label of rejected events. */
export const LINE_REJECT_REASONS = ['bad_json', 'line_too_long', 'bad_control'] as const;
export type LineRejectReason = (typeof LINE_REJECT_REASONS)[number];

/**
 * Control lines: objects with a `control` key and no `event` key (an event dict always has `event`).
 * `hello` names the stream (the job key) a connection or request belongs to, and may carry the job's CI
 * variables as `env` (see `helloEnv`); `end` ends the stream now; `ping` only keeps a keyed stream from idling
 * out. Other keys of a control line are ignored, so a writer may send `env` to an exporter that predates it.
 */
export type IngestControl = HelloControl | { kind: 'end' } | { kind: 'ping' };

export interface HelloControl {
  kind: 'hello';
  stream: string;
  /** The CI run named by the hello's `env` (TRACEPARENT, Jenkins / GitHub Actions / GitLab CI variables). */
  ci?: CiContext;
  /** Why the hello's `env` was ignored (the stream key still holds): a `bad_control` rejection to count. */
  envProblem?: string;
}

export type IngestItem =
  | { kind: 'event'; value: PyValue }
  | { kind: 'control'; control: IngestControl }
  | { kind: 'invalid'; reason: LineRejectReason; detail: string };

export const MAX_STREAM_KEY_LENGTH = 256;
/** Bounds of a hello's `env`: the CI variables src/events/ci.ts reads are 17 short ones. */
export const MAX_ENV_VARIABLES = 64;
export const MAX_ENV_NAME_LENGTH = 128;
export const MAX_ENV_VALUE_LENGTH = 4096;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
// eslint-disable-next-line no-control-regex
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f]/;

/** A stream key: 1–256 characters, no control characters. */
export function isValidStreamKey(key: unknown): key is string {
  return (
    typeof key === 'string' &&
    key.length > 0 &&
    key.length <= MAX_STREAM_KEY_LENGTH &&
    !CONTROL_CHARACTERS.test(key)
  );
}

/** One line of text → an item; undefined for a blank line. */
export function parseLine(text: string): IngestItem | undefined {
  if (text.trim() === '') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text, nullPrototypeObjects);
  } catch (error) {
    return { kind: 'invalid', reason: 'bad_json', detail: clip((error as Error).message, 200) };
  }
  return toItem(value);
}

/** An already-parsed JSON value (an element of a JSON array body) → an item. */
export function toItem(value: unknown): IngestItem {
  if (isObject(value) && !('event' in value) && 'control' in value) return controlItem(value);
  return { kind: 'event', value: value as PyValue };
}

/** `JSON.parse` with objects built without a prototype, like the unpickler's dicts. */
export function parseJson(text: string): unknown {
  return JSON.parse(text, nullPrototypeObjects);
}

function nullPrototypeObjects(_key: string, value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  return Object.assign(Object.create(null) as PyDict, value);
}

function controlItem(value: Record<string, unknown>): IngestItem {
  const control = value['control'];
  switch (control) {
    case 'hello': {
      const stream = value['stream'];
      if (!isValidStreamKey(stream)) {
        return {
          kind: 'invalid',
          reason: 'bad_control',
          detail: `hello needs "stream": 1 to ${MAX_STREAM_KEY_LENGTH} characters, no control characters`,
        };
      }
      return { kind: 'control', control: { kind: 'hello', stream, ...helloEnv(value['env']) } };
    }
    case 'end':
      return { kind: 'control', control: { kind: 'end' } };
    case 'ping':
      return { kind: 'control', control: { kind: 'ping' } };
    default:
      return {
        kind: 'invalid',
        reason: 'bad_control',
        detail: `unknown control ${clip(JSON.stringify(control) ?? 'undefined', 60)} (expected hello, end, ping)`,
      };
  }
}

/**
 * A hello's `env`: the job's environment variables that name its CI run, as the bridge reads them from the
 * job's env.txt (or easypy's own environment), `{"TRACEPARENT": "00-…", "GITHUB_RUN_ID": "42", …}`. An object
 * of at most MAX_ENV_VARIABLES string values; anything else is ignored as a whole, with the reason. Only the
 * variables `ciContext` reads are kept (as the context they make), never the rest.
 */
export function helloEnv(env: unknown): { ci?: CiContext; envProblem?: string } {
  if (env === undefined) return {};
  const problem = (detail: string): { envProblem: string } => ({
    envProblem: `hello "env" ignored: ${detail}`,
  });
  if (!isObject(env)) return problem('not an object of strings');
  const entries = Object.entries(env);
  if (entries.length > MAX_ENV_VARIABLES) {
    return problem(`${entries.length} variables, over the limit of ${MAX_ENV_VARIABLES}`);
  }
  const variables = new Map<string, string>();
  for (const [name, value] of entries) {
    if (name.length > MAX_ENV_NAME_LENGTH || !ENV_NAME.test(name)) {
      return problem(`${JSON.stringify(clip(name, 60))} is not a variable name`);
    }
    if (typeof value !== 'string') return problem(`${name} is not a string`);
    if (value.length > MAX_ENV_VALUE_LENGTH) {
      return problem(`${name} is ${value.length} characters, over the limit of ${MAX_ENV_VALUE_LENGTH}`);
    }
    variables.set(name, value);
  }
  const ci = ciContext(variables);
  return ci === undefined ? {} : { ci };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export type SplitLine = { line: number; text: string } | { line: number; tooLongBytes: number };

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

/**
 * Cuts a byte stream into lines (LF or CRLF), whatever the chunking, numbering them from 1. A line longer
 * than `maxLineBytes` is reported by number and size and skipped without being held in memory.
 */
export class LineSplitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes of the current line thrown away because it is too long. */
  private discarded = 0;
  private lineNumber = 0;
  private readonly decoder = new TextDecoder('utf-8');

  constructor(private readonly maxLineBytes: number) {}

  push(chunk: Uint8Array): SplitLine[] {
    const buffer = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const lines: SplitLine[] = [];
    let start = 0;
    for (;;) {
      const newline = buffer.indexOf(NEWLINE, start);
      if (newline < 0) break;
      lines.push(this.finishLine(buffer.subarray(start, newline)));
      start = newline + 1;
    }
    if (start < buffer.length) this.hold(buffer.subarray(start));
    return lines;
  }

  /** The last line when the stream ended without a newline. */
  end(): SplitLine[] {
    if (this.pendingBytes === 0 && this.discarded === 0) return [];
    return [this.finishLine(Buffer.alloc(0))];
  }

  private hold(part: Buffer): void {
    if (this.discarded > 0 || this.pendingBytes + part.length > this.maxLineBytes) {
      this.discarded += this.pendingBytes + part.length;
      this.pending = [];
      this.pendingBytes = 0;
      return;
    }
    // Copy: the caller may reuse the chunk's memory.
    this.pending.push(Buffer.from(part));
    this.pendingBytes += part.length;
  }

  private finishLine(tail: Buffer): SplitLine {
    this.lineNumber += 1;
    const line = this.lineNumber;
    const total = this.discarded + this.pendingBytes + tail.length;
    const wasDiscarding = this.discarded > 0;
    const parts = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    this.discarded = 0;
    let bytes = parts.length === 0 ? tail : Buffer.concat([...parts, tail]);
    if (bytes.length > 0 && bytes[bytes.length - 1] === CARRIAGE_RETURN) bytes = bytes.subarray(0, -1);
    if (wasDiscarding || bytes.length > this.maxLineBytes) return { line, tooLongBytes: total };
    return { line, text: this.decoder.decode(bytes) };
  }
}

/** `parseLine` for a split line: a too-long line becomes an invalid item. */
export function itemOf(split: SplitLine, maxLineBytes: number): IngestItem | undefined {
  if ('tooLongBytes' in split) {
    return {
      kind: 'invalid',
      reason: 'line_too_long',
      detail: `line of ${split.tooLongBytes} bytes is over the limit of ${maxLineBytes}`,
    };
  }
  return parseLine(split.text);
}

export interface KeyedStreamsOptions {
  /** Prefix of the tracker stream ids, e.g. `ndjson-http:key:`. */
  prefix: string;
  /** A keyed stream with no traffic for this long is ended; 0 never ends one for idleness. */
  idleTimeoutMs: number;
  target: IngestTarget;
  logger: Logger;
}

/**
 * Streams named by the client (the bridge's job key) rather than by a connection: they outlive any one
 * request or connection and end on an `end` control, after `idleTimeoutMs` of silence, or at shutdown (the
 * daemon's `tracker.endAll()`).
 */
export class KeyedStreams {
  private readonly timers = new Map<string, NodeJS.Timeout | undefined>();

  constructor(private readonly options: KeyedStreamsOptions) {}

  get size(): number {
    return this.timers.size;
  }

  streamIdOf(key: string): string {
    return `${this.options.prefix}${key}`;
  }

  /** Marks traffic on `key` and returns its stream id. */
  touch(key: string): string {
    const streamId = this.streamIdOf(key);
    const old = this.timers.get(key);
    if (old !== undefined) clearTimeout(old);
    let timer: NodeJS.Timeout | undefined;
    if (this.options.idleTimeoutMs > 0) {
      timer = setTimeout(() => {
        this.timers.delete(key);
        this.options.logger.info({ stream: streamId }, 'ingest stream idle; ending it');
        this.options.target.endStream(streamId);
      }, this.options.idleTimeoutMs);
      // Unref: an idle timer alone must not keep the process alive.
      timer.unref();
    }
    this.timers.set(key, timer);
    return streamId;
  }

  /** Ends `key`'s stream now. */
  end(key: string): void {
    const timer = this.timers.get(key);
    if (timer !== undefined) clearTimeout(timer);
    this.timers.delete(key);
    this.options.target.endStream(this.streamIdOf(key));
  }

  /** Forgets every timer without ending a stream (the tracker ends them all at shutdown). */
  close(): void {
    for (const timer of this.timers.values()) if (timer !== undefined) clearTimeout(timer);
    this.timers.clear();
  }
}

/** A stream id for a connection or request that named no key. */
export function anonymousStreamId(prefix: string): string {
  return `${prefix}${randomUUID()}`;
}

export function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}
