// Spawns the Python pyATS reporter stand-in (reporter_standin.py) for a test, exposes the manifest of the job it
// streams and cleans up after it; plus a hand-rolled reader of reporter streams (every framing) and CPython
// decoding to check streams with, independent of the project's own reader.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ResultValue } from '../../src/events/types.js';
import { encodeRequest } from '../../src/reporter/protocol.js';

export const STANDIN_SCRIPT = fileURLToPath(new URL('./reporter_standin.py', import.meta.url));

/** Message framing: `chunked` (pyATS 23.x, the default) or one size prefix (`4be`: pyATS 20.2). */
export type StandinFrame = 'chunked' | '4be' | '4le' | '8be' | '8le';
/** @deprecated the size prefixes only; use StandinFrame. */
export type StandinHeader = Exclude<StandinFrame, 'chunked'>;
/** `testresult`: pyats.results.result.TestResult as pyATS 23.2 (default); `object`: pyats.results.<Class>. */
export type StandinResults = 'testresult' | 'object' | 'dict' | 'string' | 'mixed';
/** `aware`: UTC datetimes as pyATS 23.2 (default); `datetime`: naive, local time of `tz`. */
export type StandinTimes = 'aware' | 'datetime' | 'datetime-tz' | 'iso' | 'epoch';
/** How messages are written: one write each, in 1–7 byte pieces with pauses, or all in one write. */
export type StandinChunking = 'whole' | 'bytewise' | 'packed';
/** What get_testsuite answers: the section tree so far (as pyATS), an exception, or None. */
export type StandinSnapshot = 'real' | 'refuse' | 'none';

/** A custom job for `jobTree`: parents without `result` get the roll-up of their non-plugin children. */
export interface StandinJobNode {
  type: string;
  id: string;
  name?: string;
  result?: ResultValue;
  reason?: string;
  /** Leaf duration; for a parent, a minimum. Default for leaves: 10–500 ms (seeded). */
  duration_s?: number;
  /** A Plugin that runs after its parent's `init_` and before its `start_` (pre-job / pre-task plugin). */
  plugin_before?: boolean;
  /** Event name suffix (`start_<event>`); default from the type: testsuite, task, plugin, step, section. */
  event?: string;
  xref?: { file: string; line: number };
  logfile?: string;
  children?: StandinJobNode[];
}

export interface StandinOptions {
  /** Socket path; default `reporter.sock` in a temp dir. With `symlinkFrom`, the real socket's path. */
  socket?: string;
  /** Make the real socket in a temp dir (or at `socket`) and symlink it at this path, as pyATS does for long paths. */
  symlinkFrom?: string;
  /** Subscribers to wait for before streaming (default 1); later ones join mid-job. */
  subscribers?: number;
  /** Message framing of replies and events (default `chunked`, as pyATS 23.x). */
  frame?: StandinFrame;
  /** @deprecated older name of `frame`. */
  header?: StandinFrame;
  /** Bytes per chunk at most (default 65,535 as pyATS; smaller splits every message into many chunks). */
  chunkSize?: number;
  /** Pickle protocol (default 4). */
  protocol?: 2 | 3 | 4 | 5;
  /** How results are pickled (default `testresult`, as pyATS 23.2). */
  results?: StandinResults;
  /** How times are pickled (default `aware`: UTC datetimes, as pyATS 23.2). */
  times?: StandinTimes;
  /** UTC offset of `datetime-tz` and `iso` times, minutes (default 120). */
  offsetMinutes?: number;
  /** `builtin` (default) or the path of a JSON job tree file. */
  job?: string;
  /** A custom job, written to a temp JSON file (overrides `job`). */
  jobTree?: StandinJobNode;
  /** TestSuite id of the builtin job (default `demo_job`). */
  jobId?: string;
  /** Seed of the builtin job and of timings (default 1). */
  seed?: number;
  /** Job start, epoch seconds (default: now). */
  startEpoch?: number;
  /** seq_num of the first section (default 1). */
  firstSeq?: number;
  /** How frames are written (default `whole`). */
  chunking?: StandinChunking;
  /** Close abruptly after sending this many events. */
  dropAfter?: number;
  /** The first N events happen before anyone subscribes (an exporter attached mid-job): not sent, but in
   * what get_testsuite / get_section return. */
  skipFirst?: number;
  /** What get_testsuite answers (default `real`). */
  snapshot?: StandinSnapshot;
  /** The runinfo directory named in log file paths (default: the socket's directory). */
  runinfo?: string;
  eventDelayMs?: number;
  /** Seconds the socket stays open after the last event (default 0.5). */
  linger?: number;
  /** Jobs run one after another on the same path (default 1). */
  repeatJobs?: number;
  /** Seconds between repeated jobs (default 0.2). */
  jobGap?: number;
  /** Seconds to wait for `subscribers` (default 30). */
  acceptTimeout?: number;
  /** TZ of the stand-in process, the zone of naive datetimes (default `UTC`). */
  tz?: string;
}

export interface ManifestSection {
  seq_num: number;
  parent_seq_num: number | null;
  type: string;
  id: string;
  name: string;
  /** Rolled-up result value, as sent on the section's stop event. */
  result: ResultValue;
  reason: string | null;
  /** Exact epoch microseconds. */
  start_us: number;
  stop_us: number;
  /** Epoch milliseconds, fractional for microseconds (`start_us / 1000`). */
  start_ms: number;
  stop_ms: number;
  /** Seconds, exactly as sent. */
  runtime: number;
  plugin_before: boolean;
  /** Some event of this section was sent. */
  seen: boolean;
  /** Its stop event was sent. */
  completed: boolean;
  /**
   * What get_testsuite / get_section showed of it when the first subscriber attached (after `skipFirst`
   * events); null when nothing, or when the tree cannot reach it (plugins of the TestSuite).
   */
  attach_state: 'init' | 'started' | 'stopped' | null;
}

export interface ManifestEvent {
  event: string;
  seq_num: number;
  type: string;
}

export interface JobManifest {
  run_index: number;
  job_id: string;
  job_result: ResultValue;
  /** Epoch ms of the job's first activity (its pre-job plugin when it has one). */
  start_ms: number;
  /** Events the whole job has. */
  events_total: number;
  /** Events sent to subscribers (after skip-first / drop-after). */
  events_sent: number;
  dropped: boolean;
  /** Every section of the job (sent or not), by seq_num. */
  sections: ManifestSection[];
  /** The events sent, in order. */
  events: ManifestEvent[];
}

/** A request the stand-in received: `problem` when real pyATS would refuse it (or die of it). */
export interface ManifestRequest {
  /** Connections are numbered from 1 in the order they were accepted (per job). */
  connection: number;
  name: string | null;
  problem: 'unpicklable' | 'no_name' | null;
}

/** The last job's manifest, plus every job's; top-level `events_sent` is the total over all jobs. */
export interface Manifest extends JobManifest {
  final: boolean;
  jobs: JobManifest[];
  /** The last job's requests. */
  requests?: ManifestRequest[];
}

export interface Standin {
  /** The path subscribers connect to (the symlink with `symlinkFrom`). */
  path: string;
  expectPath: string;
  /** Temp dir owned by the helper, removed by `kill()`. */
  dir: string;
  /** The zone of naive datetimes. */
  tz: string;
  proc: ChildProcess;
  /** Resolves with the events sent (over all jobs) when the stand-in exits cleanly. */
  done: Promise<number>;
  /** Resolves when the stand-in has printed READY `count` times (once per job). */
  ready(count: number): Promise<void>;
  /** The final manifest (waits for `done`). */
  manifest(): Promise<Manifest>;
  /** Stops the stand-in if still running and removes its temp files. */
  kill(): Promise<void>;
}

export class StandinError extends Error {
  readonly code = 'STANDIN_FAILED';
}

function flags(opts: StandinOptions, socket: string | undefined, expectPath: string, job: string): string[] {
  const args: string[] = [];
  const add = (flag: string, value: string | number | undefined): void => {
    if (value !== undefined) args.push(flag, String(value));
  };
  add('--socket', socket);
  add('--symlink-from', opts.symlinkFrom);
  add('--subscribers', opts.subscribers);
  add('--frame', opts.frame ?? opts.header);
  add('--chunk-size', opts.chunkSize);
  add('--protocol', opts.protocol);
  add('--results', opts.results);
  add('--times', opts.times);
  add('--offset-minutes', opts.offsetMinutes);
  add('--job', job);
  add('--job-id', opts.jobId);
  add('--seed', opts.seed);
  add('--start-epoch', opts.startEpoch);
  add('--first-seq', opts.firstSeq);
  add('--chunking', opts.chunking);
  add('--drop-after', opts.dropAfter);
  add('--skip-first', opts.skipFirst);
  add('--snapshot', opts.snapshot);
  add('--runinfo', opts.runinfo);
  add('--event-delay-ms', opts.eventDelayMs);
  add('--linger', opts.linger);
  add('--repeat-jobs', opts.repeatJobs);
  add('--job-gap', opts.jobGap);
  add('--accept-timeout', opts.acceptTimeout);
  add('--expect', expectPath);
  return args;
}

export async function startStandin(opts: StandinOptions = {}): Promise<Standin> {
  const dir = await mkdtemp(join(tmpdir(), 'standin-'));
  const expectPath = join(dir, 'expect.json');
  let job = opts.job ?? 'builtin';
  if (opts.jobTree) {
    job = join(dir, 'job.json');
    await writeFile(job, JSON.stringify(opts.jobTree));
  }
  const socket = opts.socket ?? (opts.symlinkFrom ? undefined : join(dir, 'reporter.sock'));
  const tz = opts.tz ?? 'UTC';
  const proc = spawn('python3', [STANDIN_SCRIPT, ...flags(opts, socket, expectPath, job)], {
    env: { ...process.env, TZ: tz, PYTHONDONTWRITEBYTECODE: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  let stderr = '';
  proc.stderr?.setEncoding('utf8');
  proc.stderr?.on('data', (chunk: string) => {
    stderr += chunk;
  });

  const readyPaths: string[] = [];
  const readyWaiters: { count: number; resolve: () => void }[] = [];
  let doneCount: number | undefined;
  const lines = createInterface({ input: proc.stdout! });
  lines.on('line', (line) => {
    const ready = /^READY (.+)$/.exec(line);
    if (ready?.[1] !== undefined) {
      readyPaths.push(ready[1]);
      for (const waiter of readyWaiters.filter((w) => w.count <= readyPaths.length)) waiter.resolve();
    }
    const done = /^DONE (\d+)$/.exec(line);
    if (done?.[1] !== undefined) doneCount = Number(done[1]);
  });

  const exited = new Promise<number | null>((resolve) => {
    proc.on('exit', (code) => resolve(code));
  });
  const linesClosed = new Promise<void>((resolve) => lines.on('close', () => resolve()));
  const done = (async () => {
    const code = await exited;
    await linesClosed;
    if (code !== 0 || doneCount === undefined) {
      throw new StandinError(`stand-in exited with code ${String(code)}: ${stderr.trim()}`);
    }
    return doneCount;
  })();
  // Callers that never await `done` (e.g. they kill the stand-in) must not see an unhandled rejection.
  done.catch(() => undefined);

  const ready = (count: number): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      if (readyPaths.length >= count) return resolve();
      readyWaiters.push({ count, resolve });
      void exited.then(() => {
        if (readyPaths.length < count) {
          reject(new StandinError(`stand-in exited before READY #${count}: ${stderr.trim()}`));
        }
      });
    });

  let killed = false;
  const kill = async (): Promise<void> => {
    if (killed) return;
    killed = true;
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };

  try {
    await ready(1);
  } catch (err) {
    await kill();
    throw err;
  }

  return {
    path: readyPaths[0]!,
    expectPath,
    dir,
    tz,
    proc,
    done,
    ready,
    manifest: async () => {
      await done;
      return JSON.parse(await readFile(expectPath, 'utf8')) as Manifest;
    },
    kill,
  };
}

// --- reading a reporter stream by hand, independent of the project's reader -----------------------------------

/** `{'name': 'subscribe_client', 'data': {}}` as pyATS's ReportClient.subscribe() sends it. */
export function subscribeRequest(frame: StandinFrame = 'chunked'): Uint8Array {
  return encodeRequest({ name: 'subscribe_client' }, frame);
}

/**
 * Connects, sends `request` (default: a subscription, as ReportClient.subscribe() does; an empty array sends
 * nothing) and returns every byte received until the server closes: the reply, then the events.
 */
export function collect(path: string, request: Uint8Array = subscribeRequest()): Promise<Buffer> {
  return collectChunks(path, request).then((chunks) => Buffer.concat(chunks));
}

/** Like `collect`, but keeps the chunks as they arrived (to see how the stream was cut). */
export function collectChunks(path: string, request: Uint8Array = subscribeRequest()): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(path, () => {
      if (request.length > 0) socket.write(request);
    });
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => resolve(chunks));
    socket.on('error', reject);
  });
}

function readSize(buf: Buffer, offset: number, frame: StandinHeader): number {
  switch (frame) {
    case '4be':
      return buf.readUInt32BE(offset);
    case '4le':
      return buf.readUInt32LE(offset);
    case '8be':
      return Number(buf.readBigUInt64BE(offset));
    case '8le':
      return Number(buf.readBigUInt64LE(offset));
  }
}

/** A message read by hand: its payload and how many chunks carried it (1 for a size prefix). */
export interface SplitMessage {
  payload: Buffer;
  chunks: number;
}

/** Splits a byte stream into messages; `rest` counts trailing bytes of an incomplete one. */
export function splitMessages(buf: Buffer, frame: StandinFrame): { messages: SplitMessage[]; rest: number } {
  const messages: SplitMessage[] = [];
  let offset = 0;
  if (frame === 'chunked') {
    let parts: Buffer[] = [];
    let at = 0;
    while (at + 3 <= buf.length) {
      const more = buf[at]!;
      const size = buf.readUInt16BE(at + 1);
      if (more > 1) throw new Error(`chunk header at ${at}: more_follows byte ${more}`);
      if (at + 3 + size > buf.length) break;
      parts.push(buf.subarray(at + 3, at + 3 + size));
      at += 3 + size;
      if (more === 0) {
        messages.push({ payload: Buffer.concat(parts), chunks: parts.length });
        parts = [];
        offset = at;
      }
    }
    return { messages, rest: buf.length - offset };
  }
  const width = frame.startsWith('4') ? 4 : 8;
  while (offset + width <= buf.length) {
    const size = readSize(buf, offset, frame);
    if (offset + width + size > buf.length) break;
    messages.push({ payload: buf.subarray(offset + width, offset + width + size), chunks: 1 });
    offset += width + size;
  }
  return { messages, rest: buf.length - offset };
}

/** The payloads of a byte stream's messages (see splitMessages). */
export function splitFrames(buf: Buffer, frame: StandinFrame): { payloads: Buffer[]; rest: number } {
  const { messages, rest } = splitMessages(buf, frame);
  return { payloads: messages.map((m) => m.payload), rest };
}

/** A subscription's stream: the reply to subscribe_client (None on success), then the events. */
export function splitSubscription(
  buf: Buffer,
  frame: StandinFrame,
): { reply: Buffer | undefined; events: Buffer[]; rest: number } {
  const { payloads, rest } = splitFrames(buf, frame);
  const [reply, ...events] = payloads;
  return { reply, events, rest };
}

/** The pickle of None (the reply to subscribe_client and register_client) at protocol 2 and above. */
export function isPickledNone(payload: Uint8Array | undefined): boolean {
  return payload?.length === 4 && payload[0] === 0x80 && payload[2] === 0x4e && payload[3] === 0x2e;
}

// Loads each payload with CPython's pickle and prints JSON: datetimes as {datetime, offset}, instances as
// {class, state} (and `args` when created with arguments). Any class outside the standard library (pyATS's
// results, result counters, exceptions) loads as a stub that keeps what it was given.
const DECODER = `
import sys, pickle, json, struct, datetime, io
class Stub:
    def __new__(cls, *args):
        stub = object.__new__(cls)
        stub.__dict__['args'] = list(args)
        return stub
    def __init__(self, *args):
        pass
    def __setstate__(self, state):
        self.__dict__['state'] = state
_classes = {}
class Loader(pickle.Unpickler):
    def find_class(self, module, name):
        if module.split('.')[0] in ('datetime', 'builtins', 'copyreg', 'collections', 'zoneinfo', '_codecs'):
            found = super().find_class(module, name)
            if not (isinstance(found, type) and issubclass(found, BaseException)):
                return found
        key = module + '.' + name
        return _classes.setdefault(key, type(name, (Stub,), {'__module__': module, '__qualname__': name}))
def plain(v):
    if isinstance(v, datetime.datetime):
        off = v.utcoffset()
        return {'datetime': v.replace(tzinfo=None).isoformat(), 'offset': None if off is None else off.total_seconds()}
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, Stub):
        out = {'class': type(v).__module__ + '.' + type(v).__qualname__}
        if v.__dict__['args']:
            out['args'] = plain(v.__dict__['args'])
        out['state'] = plain(v.__dict__.get('state', {}))
        return out
    if isinstance(v, bytes):
        return v.decode('latin-1')
    return v
data = sys.stdin.buffer.read()
out = []
while data:
    (n,) = struct.unpack('>I', data[:4])
    out.append(plain(Loader(io.BytesIO(data[4:4 + n])).load()))
    data = data[4 + n:]
print(json.dumps(out))
`;
export type DecodedEvent = Record<string, unknown>;

/** Unpickles payloads with CPython and returns them as JSON-friendly values (see DECODER). */
export function decodeWithPython(payloads: Uint8Array[]): Promise<DecodedEvent[]> {
  return new Promise((resolve, reject) => {
    const py = spawn('python3', ['-c', DECODER], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    py.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    py.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
    py.on('error', reject);
    py.on('exit', (code) => {
      if (code === 0) resolve(JSON.parse(out) as DecodedEvent[]);
      else reject(new StandinError(`python3 decode failed (${String(code)}): ${err}`));
    });
    for (const p of payloads) {
      const size = Buffer.alloc(4);
      size.writeUInt32BE(p.length);
      py.stdin.write(size);
      py.stdin.write(p);
    }
    py.stdin.end();
  });
}
