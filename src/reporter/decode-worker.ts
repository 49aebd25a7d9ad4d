// The decode thread: runs the reporter subscribers (socket, framing, unpickling) and the normalizer off the
// main thread, and sends what they produce through thread-channel.ts. The main thread keeps the tracker and
// every sink; see decode-thread.ts for its side.
import { parentPort, workerData } from 'node:worker_threads';
import { normalize, resolveZone } from '../events/index.js';
import { createLogger, type LogLevel } from '../log.js';
import { ReporterSubscriber, type ReporterSocketOptions } from './subscriber.js';
import { SourceBatchWriter } from './thread-channel.js';
import { unpickle } from '../python/index.js';

/** What the main thread passes as `workerData`. */
export interface DecodeWorkerData extends ReporterSocketOptions {
  timezone: string;
  maxStringLength: number;
  logLevel: LogLevel;
  /** [0]: 1 while the main thread's sinks are behind; [1]: batches the main thread has handled. */
  flags: Int32Array;
}

export type DecodeWorkerCommand = { cmd: 'start'; key: number; path: string } | { cmd: 'stop'; key: number };

export type DecodeWorkerMessage =
  { kind: 'batch'; batch: import('./thread-channel.js').SourceBatch } | { kind: 'stopped'; key: number };

/** Batches posted and not yet handled by the main thread before reading stops. */
const MAX_IN_FLIGHT = 4;
/** Events per batch before it is posted without waiting for the end of the socket chunk. */
const MAX_BATCH_EVENTS = 1024;

const port = parentPort;
if (port === null) throw new Error('decode-worker.ts runs as a worker thread only');
const data = workerData as DecodeWorkerData;
const { timezone, maxStringLength, logLevel, flags, ...socketOptions } = data;
const logger = createLogger(logLevel).child({ thread: 'decode' });
const normalizeOptions = { zone: resolveZone(timezone), maxStringLength };
const writer = new SourceBatchWriter();
const subscribers = new Map<number, ReporterSubscriber>();
let posted = 0;
let flushScheduled = false;
let nextConn = 0;

function flush(): void {
  flushScheduled = false;
  const batch = writer.take();
  if (batch === undefined) return;
  posted += 1;
  port!.postMessage({ kind: 'batch', batch } satisfies DecodeWorkerMessage, [
    batch.nums.buffer as ArrayBuffer,
  ]);
}

function scheduleFlush(): void {
  if (writer.size >= MAX_BATCH_EVENTS) flush();
  else if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush);
  }
}

/** Hold reading while the main thread's sinks are behind, or while it has not caught up with our batches. */
function holdWhile(): boolean {
  return Atomics.load(flags, 0) === 1 || posted - Atomics.load(flags, 1) >= MAX_IN_FLIGHT;
}

function start(key: number, path: string): void {
  const connOf = new Map<string, number>();
  const subscriber = new ReporterSubscriber({
    path,
    ...socketOptions,
    decode: (frame) => unpickle(frame),
    holdWhile,
    logger: logger.child({ socket: path }),
    handlers: {
      connected: (info) => {
        const conn = nextConn++;
        connOf.set(info.id, conn);
        writer.control({ op: 'connected', key, conn, info });
        scheduleFlush();
      },
      event: (info, value) => {
        const conn = connOf.get(info.id) ?? -1;
        const outcome = normalize(value, normalizeOptions, (reason, detail) =>
          writer.control({ op: 'fieldDropped', conn, reason, detail }),
        );
        if (outcome.ok) writer.event(conn, outcome.event);
        else writer.control({ op: 'rejected', conn, reason: outcome.reason, detail: outcome.detail });
        scheduleFlush();
      },
      frameRejected: (info, code, detail) => {
        writer.control({ op: 'frameRejected', conn: connOf.get(info.id) ?? -1, code, detail });
        scheduleFlush();
      },
      disconnected: (info, reason) => {
        writer.control({ op: 'disconnected', conn: connOf.get(info.id) ?? -1, reason });
        connOf.delete(info.id);
        scheduleFlush();
      },
    },
  });
  subscribers.set(key, subscriber);
  subscriber.start();
}

async function stop(key: number): Promise<void> {
  const subscriber = subscribers.get(key);
  subscribers.delete(key);
  await subscriber?.stop();
  // Whatever the stop produced (the disconnect) goes before the answer, on the same ordered port.
  flush();
  port!.postMessage({ kind: 'stopped', key } satisfies DecodeWorkerMessage);
}

port.on('message', (command: DecodeWorkerCommand) => {
  if (command.cmd === 'start') start(command.key, command.path);
  else void stop(command.key);
});
