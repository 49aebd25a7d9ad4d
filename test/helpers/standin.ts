// Spawns the Python pyATS reporter stand-in (reporter_standin.py) for a test, exposes the manifest of the job it
// streams and cleans up after it; plus hand-rolled frame splitting and CPython decoding to check streams with.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ResultValue } from '../../src/events/types.js';

export const STANDIN_SCRIPT = fileURLToPath(new URL('./reporter_standin.py', import.meta.url));

export type StandinHeader = '4be' | '4le' | '8be' | '8le';
export type StandinResults = 'object' | 'dict' | 'string' | 'mixed';
export type StandinTimes = 'datetime' | 'datetime-tz' | 'iso' | 'epoch';
export type StandinChunking = 'whole' | 'bytewise' | 'packed';

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
  /** Size prefix width and byte order (default `8be`). */
  header?: StandinHeader;
  /** Pickle protocol (default 4). */
  protocol?: 2 | 3 | 4 | 5;
  /** How results are pickled (default `object`: `pyats.results.<Class>` instances). */
  results?: StandinResults;
  /** How times are pickled (default `datetime`: naive, local time of `tz`). */
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
  /** Do not send the first N events (an exporter attached mid-job). */
  skipFirst?: number;
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

/** The last job's manifest, plus every job's; top-level `events_sent` is the total over all jobs. */
export interface Manifest extends JobManifest {
  final: boolean;
  jobs: JobManifest[];
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
  add('--header', opts.header);
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

/** Connects, optionally sends `request`, and returns every byte received until the server closes. */
export function collect(path: string, request?: Uint8Array): Promise<Buffer> {
  return collectChunks(path, request).then((chunks) => Buffer.concat(chunks));
}

/** Like `collect`, but keeps the chunks as they arrived (to see how the stream was cut). */
export function collectChunks(path: string, request?: Uint8Array): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(path, () => {
      if (request) socket.write(request);
    });
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => resolve(chunks));
    socket.on('error', reject);
  });
}

function readSize(buf: Buffer, offset: number, header: StandinHeader): number {
  switch (header) {
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

/** Splits a byte stream into pickle payloads by reading each size prefix by hand; `rest` counts trailing bytes. */
export function splitFrames(buf: Buffer, header: StandinHeader): { payloads: Buffer[]; rest: number } {
  const width = header.startsWith('4') ? 4 : 8;
  const payloads: Buffer[] = [];
  let offset = 0;
  while (offset + width <= buf.length) {
    const size = readSize(buf, offset, header);
    if (offset + width + size > buf.length) break;
    payloads.push(buf.subarray(offset + width, offset + width + size));
    offset += width + size;
  }
  return { payloads, rest: buf.length - offset };
}

// Loads each payload with CPython's pickle and prints JSON: datetimes as {datetime, offset}, instances as
// {class, state}. The stub pyats.results module makes any result class loadable.
const DECODER = `
import sys, types, pickle, json, struct, datetime
results = types.ModuleType('pyats.results')
_classes = {}
def _get(name):
    return _classes.setdefault(name, type(name, (), {'__module__': 'pyats.results'}))
results.__getattr__ = _get
sys.modules['pyats'] = types.ModuleType('pyats')
sys.modules['pyats.results'] = results
def plain(v):
    if isinstance(v, datetime.datetime):
        off = v.utcoffset()
        return {'datetime': v.replace(tzinfo=None).isoformat(), 'offset': None if off is None else off.total_seconds()}
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if hasattr(v, '__dict__'):
        return {'class': type(v).__module__ + '.' + type(v).__qualname__, 'state': plain(vars(v))}
    return v
data = sys.stdin.buffer.read()
out = []
while data:
    (n,) = struct.unpack('>I', data[:4])
    out.append(plain(pickle.loads(data[4:4 + n])))
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
