// The demo's built-in pyATS Reporter Server: a real Unix socket server that speaks pyATS 23.2's protocol
// (DESIGN §1; reporter-protocol.ts): every message a pickle in `>?H` chunks (or a legacy size prefix), requests
// answered (`ping`, `register_client`, `get_testsuite` / `get_section` from the tree of what the run reported
// so far), and a simulated job's events pushed to the connections that sent `subscribe_client`, optionally
// one run after another.
import { lstat, unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../log.js';
import { FrameError, FrameReader, encodeFrame, type FrameFormat } from '../reporter/index.js';
import { pickle, unpickle, type PyDict, type PyValue } from '../python/index.js';
import { retimeJob } from './job.js';
import { SectionTree, answerRequest, unpicklableReply, type ClientState } from './reporter-protocol.js';

export interface DemoReporterOptions {
  /** Socket path; a stale socket there is replaced. */
  path: string;
  /** The job's events, or a function giving run `n`'s events (0-based) when looping. */
  events: PyDict[] | ((run: number) => PyDict[]);
  /** Framing of every message, both ways. Default `chunked` (pyATS 23.x); `4be` as pyATS 20.2. */
  frameFormat?: FrameFormat;
  /** Pickle protocol; default 4 (what pyATS on Python 3.8+ sends). */
  protocol?: 2 | 3 | 4 | 5;
  /** Pause after each event. */
  eventDelayMs: number;
  logger: Logger;
  /** Start a new run (same path, new start time) after each one ends, until `close()`. Default false. */
  loop?: boolean;
  /** Move each run's datetimes so it starts when the run starts streaming. Default true. */
  retime?: boolean;
  /** Wait for a first subscription before streaming a run, so no event is lost. Default true. */
  waitForSubscriber?: boolean;
  /** How long a run's connections stay open after its last event. Default 200 ms. */
  lingerMs?: number;
  /** Pause between runs when looping, with the socket gone (as between two pyATS jobs). Default 1000 ms. */
  runGapMs?: number;
}

export interface DemoReporter {
  path: string;
  /** Stops streaming, disconnects every client and removes the socket. */
  close(): Promise<void>;
  /** Resolves when the last run has been streamed and its connections closed (or on `close()`). */
  finished: Promise<void>;
}

export class DemoReporterError extends Error {
  readonly code = 'demo_reporter_listen_failed';

  constructor(
    readonly path: string,
    cause: unknown,
  ) {
    super(`demo reporter cannot listen on ${path}: ${(cause as Error).message}`, { cause });
    this.name = 'DemoReporterError';
  }
}

// A client that does not close its side after we end ours is destroyed after this long.
const END_GRACE_MS = 1000;
// Requests are small; a client sending more than this in one message is not a pyATS client.
const MAX_REQUEST_BYTES = 1024 * 1024;

async function removeStaleSocket(path: string): Promise<void> {
  try {
    if ((await lstat(path)).isSocket()) await unlink(path);
  } catch {
    // Nothing there: nothing to remove.
  }
}

function endGracefully(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve();
    const timer = setTimeout(() => socket.destroy(), END_GRACE_MS);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.end();
  });
}

export async function startDemoReporter(opts: DemoReporterOptions): Promise<DemoReporter> {
  const { path, logger } = opts;
  const frameFormat = opts.frameFormat ?? 'chunked';
  const protocol = opts.protocol ?? 4;
  const lingerMs = opts.lingerMs ?? 200;
  const runGapMs = opts.runGapMs ?? 1000;
  // Memoized as CPython's pickler does, so replies are the bytes pyATS sends.
  const encode = (value: PyValue): Uint8Array =>
    encodeFrame(pickle(value, { protocol, memoize: true }), frameFormat);
  const clients = new Set<Socket>();
  const subscribers = new Set<Socket>();
  // What the current run has reported, for get_testsuite / get_section.
  let tree = new SectionTree();
  let server: Server | undefined;
  let stopped = false;
  // Wakers of what the run loop waits on, so close() is prompt and a subscription starts a run at once.
  const sleepers = new Set<() => void>();
  const subscriberWaiters = new Set<() => void>();

  const sleep = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      if (stopped) return resolve();
      const wake = (): void => {
        clearTimeout(timer);
        sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      sleepers.add(wake);
    });

  const firstSubscriber = (): Promise<void> =>
    new Promise((resolve) => {
      if (stopped || subscribers.size > 0) return resolve();
      const wake = (): void => {
        subscriberWaiters.delete(wake);
        resolve();
      };
      subscriberWaiters.add(wake);
    });

  /** Reads a client's requests and answers each as pyATS's ReportServer does. */
  const serveClient = (socket: Socket): void => {
    const reader = new FrameReader({ format: frameFormat, maxFrameBytes: MAX_REQUEST_BYTES });
    const client: ClientState = {};
    socket.on('data', (chunk: Buffer) => {
      let messages: Uint8Array[];
      try {
        messages = reader.push(chunk);
      } catch (err) {
        const detail = err instanceof FrameError ? `${err.code}: ${err.message}` : String(err);
        logger.warn({ detail }, 'demo reporter: unframeable request; closing the connection');
        socket.destroy();
        return;
      }
      for (const message of messages) {
        let request: PyValue;
        try {
          request = unpickle(message);
        } catch {
          socket.write(encode(unpicklableReply()));
          continue;
        }
        const answer = answerRequest(request, client, tree);
        if ('refuse' in answer) {
          // pyATS's server would die here and fail the job; the demo drops the client instead.
          logger.error({ reason: answer.refuse }, 'demo reporter: request refused; closing the connection');
          socket.destroy();
          return;
        }
        socket.write(encode(answer.reply));
        if (answer.subscribe === true) {
          subscribers.add(socket);
          logger.debug({ subscribers: subscribers.size }, 'demo reporter: subscribed');
          for (const wake of [...subscriberWaiters]) wake();
        }
      }
    });
  };

  const listen = async (): Promise<void> => {
    await removeStaleSocket(path);
    const s = createServer((socket) => {
      if (stopped) {
        socket.destroy();
        return;
      }
      clients.add(socket);
      socket.on('error', (err) => logger.debug({ err }, 'demo reporter: client error'));
      socket.on('close', () => {
        clients.delete(socket);
        subscribers.delete(socket);
      });
      serveClient(socket);
    });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(path, () => {
        s.off('error', reject);
        resolve();
      });
    }).catch((err: unknown) => {
      throw new DemoReporterError(path, err);
    });
    s.on('error', (err) => logger.warn({ err }, 'demo reporter: server error'));
    server = s;
  };

  const shutDown = async (graceful: boolean): Promise<void> => {
    const s = server;
    server = undefined;
    const closing = s ? new Promise<void>((resolve) => s.close(() => resolve())) : Promise.resolve();
    const sockets = [...clients];
    clients.clear();
    subscribers.clear();
    if (graceful) await Promise.all(sockets.map(endGracefully));
    else for (const socket of sockets) socket.destroy();
    await closing;
    if (s) await removeStaleSocket(path);
  };

  const eventsOf = (run: number): PyDict[] => {
    const events = typeof opts.events === 'function' ? opts.events(run) : opts.events;
    return opts.retime === false ? events : retimeJob(events, Date.now());
  };

  const runOnce = async (run: number): Promise<void> => {
    tree = new SectionTree();
    if (opts.waitForSubscriber !== false) await firstSubscriber();
    if (stopped) return;
    const events = eventsOf(run);
    // Pickle the whole run first: a value the writer refuses fails the run before anything is sent.
    const frames = events.map((event) => encode(event));
    logger.info({ run, events: frames.length, subscribers: subscribers.size }, 'demo reporter: run started');
    for (const [i, frame] of frames.entries()) {
      if (stopped) return;
      // Into the tree first, as pyATS records an event before it pushes it.
      tree.record(events[i]!);
      for (const socket of subscribers) socket.write(frame);
      if (opts.eventDelayMs > 0) await sleep(opts.eventDelayMs);
    }
    await sleep(lingerMs);
    logger.info({ run }, 'demo reporter: run finished');
  };

  const loop = async (): Promise<void> => {
    for (let run = 0; !stopped; run++) {
      if (run > 0) {
        await sleep(runGapMs);
        if (stopped) return;
        await listen();
        // close() may have run while listen() was under way, before there was a server to close.
        if (stopped) return shutDown(false);
      }
      await runOnce(run);
      if (stopped) return;
      await shutDown(true);
      if (!opts.loop) return;
    }
  };

  await listen();
  const finished = loop().catch(async (err: unknown) => {
    logger.error({ err }, 'demo reporter: stopped on error');
    await shutDown(false);
    throw err;
  });
  // The CLI awaits `finished` only for a single run; a looping demo must not die of an unhandled rejection.
  finished.catch(() => undefined);

  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= (async () => {
      stopped = true;
      for (const wake of [...sleepers, ...subscriberWaiters]) wake();
      await shutDown(false);
      await finished.catch(() => undefined);
    })();
    return closed;
  };

  return { path, close, finished };
}
