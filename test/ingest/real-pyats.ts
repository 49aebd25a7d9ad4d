// The real pyATS 23.2 recordings in test/fixtures/real-pyats (made by its record.py): the subscribe stream
// decoded as the exporter decodes it live (its chunked FrameReader and its unpickler), the chunk headers read
// independently of that reader, and a plain view of an event dict to compare live events with replayed ones.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  PyDateTime,
  PyObject,
  isPyDict,
  unpickle,
  type PyDict,
  type PyValue,
} from '../../src/python/index.js';
import { FrameReader } from '../../src/reporter/framing.js';

export const REAL_PYATS = fileURLToPath(new URL('../fixtures/real-pyats/', import.meta.url));

/** A recording: `subscribe` (job.py, with the over-64-KiB event) or `parallel` (parallel_job.py). */
export type Recording = 'subscribe' | 'parallel';

export function realFile(name: string): string {
  return `${REAL_PYATS}${name}`;
}

/** The run's results.json (3.3, as pyATS 23.2 wrote it) of a recording. */
export function realReport(recording: Recording): unknown {
  const name = recording === 'subscribe' ? 'results.json' : `${recording}.results.json`;
  return JSON.parse(readFileSync(realFile(name), 'utf8'));
}

export interface ChunkHeader {
  more: boolean;
  length: number;
}

/** Every `struct.pack('>?H', more_follows, length)` chunk header of a recorded stream, in order. */
export function chunkHeaders(bytes: Uint8Array): ChunkHeader[] {
  const headers: ChunkHeader[] = [];
  for (let at = 0; at < bytes.length;) {
    if (at + 3 > bytes.length) throw new Error(`stream ends inside a chunk header at ${at}`);
    const length = ((bytes[at + 1] as number) << 8) | (bytes[at + 2] as number);
    headers.push({ more: bytes[at] === 1, length });
    at += 3 + length;
    if (at > bytes.length) throw new Error('stream ends inside a chunk');
  }
  return headers;
}

/** The server's messages on the recorded subscribe connection, unpickled: the reply (None), then the events. */
export function liveMessages(recording: Recording): PyValue[] {
  const bytes = readFileSync(realFile(`${recording}.s2c.bin`));
  const reader = new FrameReader({ format: 'chunked', maxFrameBytes: 1 << 24 });
  const frames = reader.push(new Uint8Array(bytes));
  if (reader.bufferedBytes !== 0) throw new Error(`${recording}: ${reader.bufferedBytes} bytes left over`);
  return frames.map((frame) => unpickle(frame));
}

/** The event dicts of a recording, as live pyATS sent them. */
export function liveEvents(recording: Recording): PyDict[] {
  const [reply, ...events] = liveMessages(recording);
  if (reply !== null) throw new Error(`${recording}: the first message is not the reply None`);
  return events.map((event) => {
    if (!isPyDict(event)) throw new Error(`${recording}: an event is not a dict`);
    return event;
  });
}

/** Epoch microseconds, exact: of a pickled datetime, or of a report's time string with an offset. */
export function epochMicros(value: unknown): number | undefined {
  if (value instanceof PyDateTime) {
    const seconds =
      Date.UTC(value.year, value.month - 1, value.day, value.hour, value.minute, value.second) / 1000;
    return (seconds - (value.tz?.offsetSeconds ?? 0)) * 1e6 + value.microsecond;
  }
  if (typeof value !== 'string') return undefined;
  const m = /^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)\.(\d{6})([+-])(\d\d):(\d\d)$/.exec(value);
  if (!m) throw new Error(`not a time with an offset: ${value}`);
  const n = (i: number): number => Number(m[i]);
  const offset = (m[8] === '-' ? -1 : 1) * (n(9) * 3600 + n(10) * 60);
  return (Date.UTC(n(1), n(2) - 1, n(3), n(4), n(5), n(6)) / 1000 - offset) * 1e6 + n(7);
}

/**
 * An event dict with every key it has, in comparable form: times as epoch µs, the result (a pickled
 * `TestResult`, or a report's dict) as `{value, reason, data}`, the logfile as its file name (live events give
 * the absolute runinfo path, which a report does not record).
 */
export function plainEvent(raw: PyDict | Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (key === 'starttime' || key === 'stoptime') out[key] = epochMicros(value);
    else if (key === 'result') out[key] = plainResult(value);
    else if (key === 'logfile' && typeof value === 'string') out[key] = basename(value);
    else out[key] = plainValue(value);
  }
  return out;
}

function plainResult(value: unknown): Record<string, unknown> {
  const state = value instanceof PyObject ? value.state : value;
  if (!isPyDict(state)) throw new Error('a result that is neither a TestResult nor a dict');
  return {
    value: state['value'],
    reason: state['reason'] ?? null,
    data: state['data'] === undefined || state['data'] === null ? null : plainValue(state['data']),
  };
}

/** Unpickled dicts have a null prototype; JSON ones do not: make both plain for toEqual. */
function plainValue(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(plainValue);
  if (isPyDict(value)) {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, plainValue(item)]));
  }
  return value;
}

const PHASES = ['init', 'start', 'stop'];

/** Live order within a section: init_, start_, stop_; sections by seq_num (for streams that interleave). */
export function bySeqThenPhase(a: Record<string, unknown>, b: Record<string, unknown>): number {
  const phase = (e: Record<string, unknown>): number =>
    PHASES.indexOf(String(e['event']).split('_')[0] ?? '');
  return Number(a['seq_num']) - Number(b['seq_num']) || phase(a) - phase(b);
}
