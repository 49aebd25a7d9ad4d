// Property tests of the whole source path: frame reader → unpickler → normalizer → tracker, with random and
// mutated real CPython frames (from the reporter stand-in). Nothing may throw out of a source, every record a
// sink gets must be well-formed, and the tracker must hold nothing once a stream has ended. One property
// drives a real ReporterSubscriber + Pipeline over a real Unix socket; one chains the parts in memory.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalize, type NormalizeOptions } from '../../src/events/normalize.js';
import { resolveZone } from '../../src/events/timezone.js';
import { SectionTracker } from '../../src/events/tracker.js';
import {
  REJECT_REASONS,
  RESULT_VALUES,
  type FinishedSection,
  type JobSummary,
  type SectionSink,
  type StartedSection,
} from '../../src/events/types.js';
import { Pipeline } from '../../src/pipeline.js';
import {
  FRAME_FORMATS,
  FrameError,
  FrameReader,
  encodeFrame,
  type FrameFormat,
} from '../../src/reporter/framing.js';
import { pickle } from '../../src/python/pickle-writer.js';
import { ReporterSubscriber } from '../../src/reporter/subscriber.js';
import { unpickle, UnpickleError } from '../../src/python/unpickle.js';
import { collect, splitFrames, startStandin, type StandinOptions } from '../helpers/standin.js';

const MAX_STRING = 48;
const NORMALIZE: NormalizeOptions = { zone: resolveZone('UTC'), maxStringLength: MAX_STRING };
const MAX_FRAME_BYTES = 1 << 20;
const HEADERS = FRAME_FORMATS;

/** Bytes of the header in front of a (first) chunk. */
function widthOf(format: FrameFormat): number {
  return format === 'chunked' ? 3 : format.startsWith('8') ? 8 : 4;
}
const HEX16 = /^[0-9a-f]{16}$/;
const HEX32 = /^[0-9a-f]{32}$/;
const RESULTS: ReadonlySet<string> = new Set(RESULT_VALUES);

/** Real event pickles, as CPython wrote them for the stand-in's jobs (several protocols and encodings). */
let payloads: Uint8Array[] = [];

async function payloadsOf(opts: StandinOptions): Promise<Uint8Array[]> {
  const standin = await startStandin({ ...opts, frame: '8be', chunking: 'packed', linger: 0.1 });
  try {
    const bytes = await collect(standin.path);
    const { payloads: frames, rest } = splitFrames(bytes, '8be');
    expect(rest).toBe(0);
    // The first message is the reply to subscribe_client, not an event.
    return frames.slice(1).map((f) => new Uint8Array(f));
  } finally {
    await standin.kill();
  }
}

beforeAll(async () => {
  const runs = await Promise.all([
    payloadsOf({ protocol: 4, results: 'object', times: 'datetime', seed: 1 }),
    payloadsOf({ protocol: 2, results: 'mixed', times: 'datetime-tz', seed: 2, skipFirst: 5 }),
    payloadsOf({ protocol: 5, results: 'dict', times: 'iso', seed: 3 }),
  ]);
  payloads = runs.flat();
  expect(payloads.length).toBeGreaterThan(200);
}, 60_000);

function isWellFormed(text: string): boolean {
  return (text as string & { isWellFormed(): boolean }).isWellFormed();
}

/** A sink that checks every record it is given and the start/finish balance per job run. */
class CheckingSink implements SectionSink {
  readonly problems: string[] = [];
  finished = 0;
  private readonly open = new Map<string, number>();
  /** `${traceId}/${spanId}` → the parent's key, for the sections of the current stream. */
  private readonly links = new Map<string, string | undefined>();
  /** Run ids summarized in the current stream. */
  private readonly jobs = new Set<string>();

  sectionStarted(section: StartedSection): void {
    if (!HEX32.test(section.job.traceId)) this.problems.push(`start with trace id "${section.job.traceId}"`);
    const key = `${section.job.runId}\0${section.seqNum}`;
    this.open.set(key, (this.open.get(key) ?? 0) + 1);
  }

  sectionFinished(s: FinishedSection): void {
    this.finished += 1;
    const problem = (what: string): void => {
      this.problems.push(`${what} in ${JSON.stringify(s)}`);
    };
    if (!HEX32.test(s.job.traceId)) problem('bad trace id');
    if (!HEX16.test(s.spanId)) problem('bad span id');
    if (s.parentSpanId !== undefined && (!HEX16.test(s.parentSpanId) || s.parentSpanId === s.spanId)) {
      problem('bad parent span id');
    }
    if (!Number.isSafeInteger(s.seqNum) || s.seqNum < 0) problem('bad seq_num');
    if (!Number.isFinite(s.startTime) || !Number.isFinite(s.stopTime) || s.stopTime < s.startTime) {
      problem('bad times');
    }
    if (!Number.isFinite(s.runtime) || s.runtime < 0) problem('bad runtime');
    if (!RESULTS.has(s.result.value)) problem('bad result');
    for (const text of [
      s.type,
      s.id,
      s.name,
      s.testcase,
      s.logfile,
      s.logRange?.file,
      s.result.reason,
      s.xref?.file,
    ]) {
      if (text !== undefined && (text.length > MAX_STRING || !isWellFormed(text))) problem('bad string');
    }
    const key = `${s.job.traceId}/${s.spanId}`;
    if (this.links.has(key)) problem('a second span with the same id');
    this.links.set(key, s.parentSpanId === undefined ? undefined : `${s.job.traceId}/${s.parentSpanId}`);
    if (s.started) {
      const key = `${s.job.runId}\0${s.seqNum}`;
      const count = this.open.get(key) ?? 0;
      if (count !== 1) problem(`finished with ${count} starts`);
      this.open.delete(key);
    }
  }

  jobFinished(summary: JobSummary): void {
    if (!HEX32.test(summary.job.traceId)) this.problems.push('job summary with a bad trace id');
    if (this.jobs.has(summary.job.runId)) this.problems.push(`a second summary of ${summary.job.runId}`);
    this.jobs.add(summary.job.runId);
  }

  /** Forgets what an earlier stream left (a failing run, while fast-check shrinks, stops before its end). */
  beginStream(): void {
    this.problems.length = 0;
    this.links.clear();
    this.jobs.clear();
  }

  /** Checks the spans of the stream that just ended for parent loops; returns the stream's problems. */
  endOfStream(): string[] {
    for (const start of this.links.keys()) {
      const seen = new Set<string>();
      for (let key: string | undefined = start; key !== undefined; key = this.links.get(key)) {
        if (seen.has(key)) {
          this.problems.push(`parent loop through ${key}`);
          break;
        }
        seen.add(key);
      }
    }
    this.links.clear();
    this.jobs.clear();
    const found = this.problems.slice(0, 5);
    this.problems.length = 0;
    return found;
  }

  /** Starts never matched by a finish. */
  unbalanced(): number {
    return this.open.size;
  }

  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

/** Error-level log lines (a handler or sink that threw is logged at error level). */
function capturingLogger(lines: string[]) {
  return pino(
    { level: 'error' },
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString());
        done();
      },
    }),
  );
}

// ---- generating streams -----------------------------------------------------------------------------------

type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'set'; at: number; byte: number }
  | { kind: 'cut'; at: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'splice'; at: number; from: number; other: number };

type FramePlan =
  | { kind: 'real'; index: number; mutations: Mutation[] }
  | { kind: 'random'; bytes: Uint8Array }
  | { kind: 'size'; index: number; delta: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ maxLength: 6 }) }),
  fc.record({ kind: fc.constant('splice' as const), at: fc.nat(), from: fc.nat(), other: fc.nat() }),
);

const framePlan: fc.Arbitrary<FramePlan> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({
      kind: fc.constant('real' as const),
      index: fc.nat(),
      mutations: fc.constant<Mutation[]>([]),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('real' as const),
      index: fc.nat(),
      mutations: fc.array(mutation, { minLength: 1, maxLength: 3 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('random' as const), bytes: fc.uint8Array({ maxLength: 64 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('size' as const),
      index: fc.nat(),
      delta: fc.integer({ min: -5, max: 5 }),
    }),
  },
);

/** A stream: runs of consecutive real frames (so jobs really build up) with faults slipped in. */
const streamPlan = fc.record({
  header: fc.integer({ min: 0, max: HEADERS.length - 1 }),
  start: fc.nat(),
  plans: fc.array(framePlan, { minLength: 1, maxLength: 80, size: 'max' }),
  inOrder: fc.boolean(),
  chunks: fc.array(fc.integer({ min: 1, max: 300 }), { minLength: 1, maxLength: 12 }),
  cutTail: fc.nat({ max: 12 }),
});
type StreamPlan = typeof streamPlan extends fc.Arbitrary<infer T> ? T : never;

function mutate(data: Uint8Array, mutations: Mutation[]): Uint8Array {
  let out = Uint8Array.from(data);
  for (const m of mutations) {
    const at = out.length === 0 ? 0 : m.at % out.length;
    switch (m.kind) {
      case 'flip':
        if (out.length > 0) out[at] = (out[at] as number) ^ (1 << m.bit);
        break;
      case 'set':
        if (out.length > 0) out[at] = m.byte;
        break;
      case 'cut':
        out = out.slice(0, at);
        break;
      case 'insert':
        out = Uint8Array.from([...out.subarray(0, at), ...m.bytes, ...out.subarray(at)]);
        break;
      case 'splice': {
        const other = payloads[m.other % payloads.length] as Uint8Array;
        const from = other.length === 0 ? 0 : m.from % other.length;
        out = Uint8Array.from([...out.subarray(0, at), ...other.subarray(from)]);
        break;
      }
    }
  }
  return out;
}

/** The bytes of one stream: each frame re-encoded with the chosen header, some with a lying size. */
function streamBytes(plan: StreamPlan): Uint8Array {
  const header = HEADERS[plan.header] as FrameFormat;
  const width = widthOf(header);
  const parts: Uint8Array[] = [];
  plan.plans.forEach((p, i) => {
    const index = plan.inOrder ? plan.start + i : p.kind === 'random' ? 0 : p.index;
    const real = payloads[index % payloads.length] as Uint8Array;
    if (p.kind === 'random') {
      parts.push(encodeFrame(p.bytes, header));
    } else if (p.kind === 'real') {
      parts.push(encodeFrame(mutate(real, p.mutations), header));
    } else {
      const framed = encodeFrame(real, header);
      const size = Math.max(0, real.length + p.delta);
      const lying = encodeFrame(new Uint8Array(size), header).subarray(0, width);
      parts.push(Uint8Array.from([...lying, ...framed.subarray(width)]));
    }
  });
  const total = parts.reduce((n, part) => n + part.length, 0);
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    bytes.set(part, offset);
    offset += part.length;
  }
  return bytes.subarray(0, Math.max(0, bytes.length - plan.cutTail));
}

function chunked(bytes: Uint8Array, sizes: number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let offset = 0;
  let i = 0;
  while (offset < bytes.length) {
    const size = sizes[i++ % sizes.length] as number;
    out.push(bytes.subarray(offset, offset + size));
    offset += size;
  }
  return out;
}

// ---- the properties ---------------------------------------------------------------------------------------

const REASONS: ReadonlySet<string> = new Set(REJECT_REASONS);
function checkDropped(reason: string, detail: string): void {
  expect(REASONS.has(reason)).toBe(true);
  expect(detail).not.toBe('');
}

describe('source path fuzzing', () => {
  it('frame reader → unpickle → normalize → tracker never throws and releases every stream', () => {
    const sink = new CheckingSink();
    const errors: string[] = [];
    const tracker = new SectionTracker({ sink, logger: capturingLogger(errors), maxHeldOrphans: 50 });
    let stream = 0;
    fc.assert(
      fc.property(streamPlan, (plan) => {
        const streamId = `s${stream++}`;
        sink.beginStream();
        const reader = new FrameReader({ format: 'auto', maxFrameBytes: MAX_FRAME_BYTES });
        const consume = (frames: Uint8Array[]): void => {
          for (const frame of frames) {
            let value: unknown;
            try {
              value = unpickle(frame);
            } catch (err) {
              expect(err).toBeInstanceOf(UnpickleError);
              continue;
            }
            // Half the streams go through the lenient normalizer, which drops bad fields instead of events.
            const outcome = normalize(value, NORMALIZE, plan.header % 2 === 0 ? checkDropped : undefined);
            if (outcome.ok) tracker.onEvent(streamId, outcome.event);
            else expect(outcome.detail).not.toMatch(/^normalizer failed/);
          }
        };
        for (const chunk of chunked(streamBytes(plan), plan.chunks)) {
          try {
            consume(reader.push(chunk));
          } catch (err) {
            expect(err).toBeInstanceOf(FrameError);
            consume((err as FrameError).frames);
            break;
          }
        }
        tracker.endStream(streamId);
        // Checked per stream, so a failure names the seed and shrinks to the frames that cause it.
        expect(sink.endOfStream()).toEqual([]);
        expect(tracker.stats()).toEqual({
          streams: 0,
          openSections: 0,
          heldOrphans: 0,
          pendingRecords: 0,
          finishedSeqNums: 0,
        });
      }),
      { numRuns: 1500 },
    );
    expect(sink.unbalanced()).toBe(0);
    expect(errors).toEqual([]);
    expect(sink.finished).toBeGreaterThan(1000);
  });

  describe('over a real socket', () => {
    let dir: string;
    let server: Server;
    const cases: { format: FrameFormat; chunks: Uint8Array[]; served: () => void }[] = [];
    const waiting: Socket[] = [];

    // Answers as a pyATS 23.2 reporter: a subscription gets the reply None in the stream's own framing, then
    // the mutated stream; the attach snapshot's requests get pong / None / no TestSuite yet.
    const accept = (socket: Socket): void => {
      socket.on('error', () => undefined);
      const reader = new FrameReader({ format: 'auto', maxFrameBytes: MAX_FRAME_BYTES });
      const onRequest = (chunk: Buffer): void => {
        for (const frame of reader.push(chunk)) {
          const name = (unpickle(frame) as { name?: unknown }).name;
          if (name === 'subscribe_client') {
            socket.off('data', onRequest);
            serve(socket);
            return;
          }
          socket.write(encodeFrame(pickle(name === 'ping' ? 'pong' : null), 'chunked'));
        }
      };
      socket.on('data', onRequest);
    };

    const serve = (socket: Socket): void => {
      const next = cases.shift();
      if (next === undefined) {
        waiting.push(socket);
        return;
      }
      socket.resume();
      socket.write(encodeFrame(pickle(null), next.format));
      // One write per chunk, a tick apart, so the reader sees the stream cut where the plan says.
      const write = (i: number): void => {
        if (socket.destroyed) return next.served();
        const chunk = next.chunks[i];
        if (chunk === undefined) {
          socket.end();
          return next.served();
        }
        socket.write(chunk, () => setImmediate(() => write(i + 1)));
      };
      write(0);
    };

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'pipeline-fuzz-'));
      server = createServer(accept);
      await new Promise<void>((resolve) => server.listen(join(dir, 'reporter.sock'), resolve));
    });

    afterAll(async () => {
      for (const socket of waiting) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    });

    it('a real subscriber and pipeline survive a few hundred mutated streams and hold nothing after', async () => {
      const sink = new CheckingSink();
      const errors: string[] = [];
      const logger = capturingLogger(errors);
      const tracker = new SectionTracker({ sink, logger, maxHeldOrphans: 50 });
      const counts = { received: 0, rejected: 0 };
      const pipeline = new Pipeline({
        normalize: NORMALIZE,
        tracker,
        health: {
          eventReceived: () => counts.received++,
          eventRejected: () => counts.rejected++,
          fieldDropped: () => undefined,
        },
        logger,
      });
      let ended: (() => void) | undefined;
      const subscriber = new ReporterSubscriber({
        path: join(dir, 'reporter.sock'),
        frameFormat: 'chunked',
        maxFrameBytes: MAX_FRAME_BYTES,
        attach: { timeoutMs: 5000, maxSections: 1000 },
        pollIntervalMs: 5,
        backoff: { initialMs: 1, maxMs: 4 },
        decode: (frame) => unpickle(frame),
        logger,
        handlers: {
          connected: () => undefined,
          event: (conn, value) => pipeline.ingest(conn.id, 'reporter_socket', value),
          frameRejected: (conn, code, detail) => pipeline.reject(conn.id, 'reporter_socket', code, detail),
          disconnected: (conn) => {
            pipeline.endStream(conn.id);
            ended?.();
          },
        },
      });
      subscriber.start();
      try {
        await fc.assert(
          fc.asyncProperty(streamPlan, async (plan) => {
            sink.beginStream();
            const disconnected = new Promise<void>((resolve) => (ended = resolve));
            const served = new Promise<void>((resolve) => {
              const format = HEADERS[plan.header] as FrameFormat;
              cases.push({ format, chunks: chunked(streamBytes(plan), plan.chunks), served: resolve });
              const socket = waiting.shift();
              if (socket !== undefined) serve(socket);
            });
            await served;
            await disconnected;
            expect(sink.endOfStream()).toEqual([]);
            expect(tracker.stats()).toEqual({
              streams: 0,
              openSections: 0,
              heldOrphans: 0,
              pendingRecords: 0,
              finishedSeqNums: 0,
            });
          }),
          { numRuns: 400 },
        );
      } finally {
        await subscriber.stop();
      }
      expect(errors).toEqual([]);
      expect(sink.unbalanced()).toBe(0);
      expect(counts.received).toBeGreaterThan(1000);
      expect(counts.rejected).toBeGreaterThan(0);
      expect(sink.finished).toBeGreaterThan(500);
    }, 120_000);
  });
});
