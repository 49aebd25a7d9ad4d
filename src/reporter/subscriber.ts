// Subscribes to one pyATS reporter socket: waits for the path to appear, connects, subscribes as pyATS's
// ReportClient does (`subscribe_client`, reply None), fetches what the job already ran (snapshot.ts),
// hands each event to the handlers, and reconnects with backoff whenever the socket goes away.
import { randomUUID } from 'node:crypto';
import { stat } from 'node:fs/promises';
import net from 'node:net';
import type { Logger } from '../log.js';
import { HOLD_POLL_MS, yieldAfterChunk } from '../pacing.js';
import { isPyDict, type PyValue } from '../python/index.js';
import { FrameError, FrameReader, type FrameFormat } from './framing.js';
import { describeValue, encodeRequest, replyError, type SnapshotEvent } from './protocol.js';
import { ReporterProtocolError, fetchSnapshot } from './snapshot.js';

export interface ConnectionInfo {
  /** Unique per connection (a new one after every reconnect). */
  id: string;
  path: string;
  /** Epoch milliseconds. */
  connectedAt: number;
}

export type DisconnectReason = 'eof' | 'error' | 'reset' | 'stopped';

/** Called synchronously from socket events; a handler that throws is logged and ignored. */
export interface SubscriberHandlers {
  connected(conn: ConnectionInfo): void;
  /** One decoded frame. */
  event(conn: ConnectionInfo, value: unknown): void;
  /**
   * `decode_error` (the connection is kept), `truncated_frame` (at end of stream), `attach_failed` (what
   * ran before the exporter attached could not be fetched; live events go on), `subscribe_refused` or a
   * `FrameError` code (`frame_too_large`, `undetectable_header`, `bad_chunk_header`: the connection is reset).
   */
  frameRejected(conn: ConnectionInfo, code: string, detail: string): void;
  disconnected(conn: ConnectionInfo, reason: DisconnectReason): void;
}

export interface ReporterSubscriberOptions {
  /** The reporter.sock path; may be a symlink, may not exist yet. */
  path: string;
  /**
   * Framing of the requests sent (`chunked` for pyATS 23.x); what the reporter sends is detected per
   * connection whatever this says.
   */
  frameFormat: FrameFormat;
  /** A message over this many bytes (all its chunks) is refused and the connection reset. */
  maxFrameBytes: number;
  /** Fetching what already ran when attaching: per-request timeout and the most sections fetched. */
  attach: { timeoutMs: number; maxSections: number };
  /** How often to look for the path while it does not exist. */
  pollIntervalMs: number;
  /** Delay before reconnecting after a drop or a failed connect: doubles per failure, jittered, capped. */
  backoff: { initialMs: number; maxMs: number };
  /** The unpickler; may throw (the frame is then rejected as `decode_error`). */
  decode: (frame: Uint8Array) => unknown;
  handlers: SubscriberHandlers;
  logger: Logger;
  /**
   * Read backpressure: while this returns true the socket is not read (see pacing.ts), so the reporter waits
   * instead of the exporter queueing without bound. Default: never.
   */
  holdWhile?: () => boolean;
}

/** How to talk to a reporter socket: the part of the options that is configuration, not wiring. */
export type ReporterSocketOptions = Pick<
  ReporterSubscriberOptions,
  'frameFormat' | 'maxFrameBytes' | 'attach' | 'pollIntervalMs' | 'backoff'
>;

/** `idle` until start(); `stopped` after stop(). */
export type SubscriberState = 'idle' | 'waiting' | 'connecting' | 'connected' | 'backoff' | 'stopped';

/** The first message of a connection is the reply to subscribe_client: `None`, or a short refusal. */
export const MAX_REPLY_BYTES = 64 * 1024;

/** Size of each connection's read buffer: what libuv reads at most per call, as for a stream's own Buffers. */
const READ_BUFFER_BYTES = 64 * 1024;
/**
 * Frames handed over per turn of the event loop; the rest of a read waits for the next turn (setImmediate),
 * copied once. A 64 KiB read holds ~180 events, 2-5 ms of work with spans, and scrapes waited behind it:
 * event-loop delay p99 11 → 7 ms with this (docs/performance.md). 16 KiB reads shortened the turns too but
 * cost more CPU per event (a read, a pause and a resume each); this costs ~2-6%.
 */
export const MAX_FRAMES_PER_TURN = 48;
// A stale socket file (job ended) or a path removed between stat and connect: expected, not worth a warning.
const ROUTINE_CONNECT_ERRORS = new Set(['ECONNREFUSED', 'ENOENT']);
const MISSING_PATH_ERRORS = new Set(['ENOENT', 'ENOTDIR']);

interface Connection {
  socket: net.Socket;
  info: ConnectionInfo | undefined;
  reader: FrameReader;
  /** The socket was destroyed on purpose after a framing error. */
  reset: boolean;
  /** The socket was still open when stop() destroyed it. */
  stopped: boolean;
  /** The reporter accepted the subscription: the peer really is a reporter. */
  delivered: boolean;
  /**
   * `reply`: waiting for the answer to subscribe_client; `snapshot`: fetching what already ran, the socket
   * not read meanwhile (so the reporter holds the live events, in order); `live`: events go to the handlers.
   */
  phase: 'reply' | 'snapshot' | 'live';
  /** Continues the delivery parked while the snapshot is fetched. */
  resume: (() => void) | undefined;
  /** seq_nums the snapshot initialized, started and stopped: the live events repeating them are dropped. */
  snapshotInitialized: Set<number>;
  snapshotStarted: Set<number>;
  snapshotStopped: Set<number>;
  /** The peer closed its side: nothing more to ask it. */
  ended: boolean;
  error: NodeJS.ErrnoException | undefined;
  closed: Promise<void>;
  /**
   * Frames read but not yet handed over (held by backpressure), and what waits for them: the peer may close
   * while they wait, and its end and close must reach the handlers after them.
   */
  undelivered: { afterwards: (() => void)[] } | undefined;
}

export class ReporterSubscriber {
  private current: SubscriberState = 'idle';
  private connection: Connection | undefined;
  private timer: NodeJS.Timeout | undefined;
  // Consecutive connections that failed or were unhealthy; sets the next backoff delay.
  private failures = 0;
  private stopping: Promise<void> | undefined;
  private warnedWhileWaiting = false;

  constructor(private readonly options: ReporterSubscriberOptions) {}

  get state(): SubscriberState {
    return this.current;
  }

  /** Begins waiting for the socket; does nothing if already started or stopped. */
  start(): void {
    if (this.current !== 'idle') return;
    this.waitForPath();
  }

  /** Closes the connection (reporting `disconnected(..., 'stopped')`) and never reconnects. */
  stop(): Promise<void> {
    if (this.stopping) return this.stopping;
    this.current = 'stopped';
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const connection = this.connection;
    if (!connection) {
      this.stopping = Promise.resolve();
    } else {
      connection.stopped = !connection.socket.destroyed;
      connection.socket.destroy();
      this.stopping = connection.closed;
    }
    return this.stopping;
  }

  private waitForPath(): void {
    this.current = 'waiting';
    this.warnedWhileWaiting = false;
    this.checkPath();
  }

  private checkPath(): void {
    const { path, logger } = this.options;
    stat(path).then(
      (stats) => {
        if (this.current !== 'waiting') return;
        if (stats.isSocket()) return this.connect();
        this.warnOnce(() => logger.warn({ path }, 'reporter path exists but is not a socket; waiting'));
        this.later(this.options.pollIntervalMs, () => this.checkPath());
      },
      (err: NodeJS.ErrnoException) => {
        if (this.current !== 'waiting') return;
        if (!MISSING_PATH_ERRORS.has(err.code ?? '')) {
          this.warnOnce(() => logger.warn({ path, err }, 'cannot stat reporter socket; waiting'));
        }
        this.later(this.options.pollIntervalMs, () => this.checkPath());
      },
    );
  }

  // One warning per waiting period: the path is polled every pollIntervalMs.
  private warnOnce(warn: () => void): void {
    if (!this.warnedWhileWaiting) warn();
    this.warnedWhileWaiting = true;
  }

  private later(ms: number, fn: () => void): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      fn();
    }, ms);
  }

  private connect(): void {
    const { path, maxFrameBytes } = this.options;
    this.current = 'connecting';
    // Reads land in one buffer per connection, reused for every read, instead of a fresh 64 KiB Buffer each:
    // at full speed those were most of the exporter's memory beyond its heap (malloc keeps freed ones), and
    // their allocation a share of its GC work. What outlives a read is copied (`FrameReader.detach`, and the
    // frames `deliver` holds back).
    const readBuffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
    const socket = net.createConnection({
      path,
      onread: {
        buffer: readBuffer,
        // Pausing is left to onData (socket.pause), so the callback never asks for it.
        callback: (size: number, buffer: Uint8Array): boolean => {
          this.onData(connection, buffer.subarray(0, size));
          return true;
        },
      },
    });
    let closedResolve: () => void = () => undefined;
    const connection: Connection = {
      socket,
      info: undefined,
      reader: new FrameReader({ format: 'auto', maxFrameBytes, maxFirstFrameBytes: MAX_REPLY_BYTES }),
      reset: false,
      stopped: false,
      delivered: false,
      phase: 'reply',
      resume: undefined,
      snapshotInitialized: new Set(),
      snapshotStarted: new Set(),
      snapshotStopped: new Set(),
      ended: false,
      error: undefined,
      closed: new Promise((resolve) => (closedResolve = resolve)),
      undelivered: undefined,
    };
    this.connection = connection;
    socket.on('connect', () => this.onConnect(connection));
    socket.on('end', () => {
      connection.ended = true;
      this.afterDelivery(connection, () => this.onEnd(connection));
    });
    socket.on('error', (err: NodeJS.ErrnoException) => (connection.error ??= err));
    socket.on('close', () => {
      this.afterDelivery(connection, () => {
        this.onClose(connection);
        closedResolve();
      });
    });
  }

  private onConnect(connection: Connection): void {
    const { path, frameFormat, logger, handlers } = this.options;
    if (this.current === 'stopped') return;
    const info: ConnectionInfo = { id: randomUUID(), path, connectedAt: Date.now() };
    connection.info = info;
    this.current = 'connected';
    logger.debug({ path, connection: info.id }, 'connected to reporter socket');
    this.guard('connected', () => handlers.connected(info));
    // ReportClient.subscribe(): one request on a connection of its own, nothing before it.
    connection.socket.write(encodeRequest({ name: 'subscribe_client' }, frameFormat));
  }

  /** The first message of a connection answers subscribe_client: None, or the reason it was refused. */
  private onReply(connection: Connection, info: ConnectionInfo, reply: PyValue): void {
    const { logger, handlers, path } = this.options;
    if (reply === null) {
      connection.delivered = true;
      logger.debug({ path, connection: info.id }, 'reporter accepted the subscription');
      this.attach(connection, info);
      return;
    }
    const error = replyError(reply);
    const detail =
      error !== undefined
        ? `reporter refused subscribe_client: ${error}`
        : `reporter answered subscribe_client with ${describeValue(reply)}, not None (not a pyATS reporter, or a version that speaks otherwise)`;
    logger.warn({ path, connection: info.id, detail }, 'reporter refused the subscription; reconnecting');
    this.guard('frameRejected', () => handlers.frameRejected(info, 'subscribe_refused', detail));
    connection.reset = true;
    connection.socket.destroy();
  }

  /**
   * Fetches what the job already ran, reading no live event until it is in (so a section's snapshot start
   * comes before its live stop), then hands both over with the live repeats of the snapshot dropped.
   */
  private attach(connection: Connection, info: ConnectionInfo): void {
    const { path, frameFormat, maxFrameBytes, decode, attach, logger, handlers } = this.options;
    connection.phase = 'snapshot';
    connection.undelivered ??= { afterwards: [] };
    const goLive = (): void => {
      connection.phase = 'live';
      const resume = connection.resume;
      connection.resume = undefined;
      if (resume !== undefined) resume();
      else this.delivered(connection);
    };
    fetchSnapshot({ path, format: frameFormat, maxFrameBytes, decode, ...attach }).then(
      (snapshot) => {
        if (snapshot.truncated) {
          logger.warn(
            { path, connection: info.id, max: attach.maxSections },
            'job already ran more sections than are fetched on attach; the rest come only as they stop',
          );
        }
        if (snapshot.events.length > 0) {
          logger.info(
            { path, connection: info.id, events: snapshot.events.length },
            'attached mid-job: replaying what already ran',
          );
        }
        const seen = {
          init: connection.snapshotInitialized,
          start: connection.snapshotStarted,
          stop: connection.snapshotStopped,
        };
        for (const { seqNum, phase } of snapshot.events) seen[phase].add(seqNum);
        this.handSnapshot(connection, info, snapshot.events, 0, goLive);
      },
      (err: Error) => {
        const detail = `cannot fetch what the job already ran: ${err.message}`;
        if (err instanceof ReporterProtocolError && err.code === 'closed') {
          // The reporter went away (a job that ended as the exporter attached): its live stream is all there is.
          logger.info({ path, connection: info.id, detail }, 'reporter closed before the attach snapshot');
          goLive();
          return;
        }
        logger.warn(
          { path, connection: info.id, detail },
          'attached without the job so far; following live events',
        );
        this.guard('frameRejected', () => handlers.frameRejected(info, 'attach_failed', detail));
        goLive();
      },
    );
  }

  /** Hands over the snapshot's events from `from` on, held by read backpressure like live events. */
  private handSnapshot(
    connection: Connection,
    info: ConnectionInfo,
    events: readonly SnapshotEvent[],
    from: number,
    then: () => void,
  ): void {
    const { handlers, holdWhile } = this.options;
    for (let i = from; i < events.length && !this.halted(connection); i++) {
      if (holdWhile?.() === true) {
        setTimeout(() => this.handSnapshot(connection, info, events, i, then), HOLD_POLL_MS);
        return;
      }
      const { event } = events[i]!;
      this.guard('event', () => handlers.event(info, event));
    }
    then();
  }

  private halted(connection: Connection): boolean {
    return connection.stopped || connection.reset || this.current === 'stopped';
  }

  /** A live event, unless it repeats what the snapshot already handed over. */
  private handOver(connection: Connection, info: ConnectionInfo, value: PyValue): void {
    const snapshotted = connection.snapshotInitialized.size + connection.snapshotStarted.size > 0;
    if (snapshotted && repeatsSnapshot(connection, value)) return;
    this.guard('event', () => this.options.handlers.event(info, value));
  }

  private onData(connection: Connection, chunk: Uint8Array): void {
    const info = connection.info;
    if (!info || connection.reset || connection.socket.destroyed) return;
    let frames: Uint8Array[];
    let failure: FrameError | undefined;
    try {
      frames = connection.reader.push(chunk);
      connection.reader.detach();
    } catch (err) {
      if (!(err instanceof FrameError)) throw err;
      failure = err;
      frames = err.frames;
    }
    this.deliver(connection, info, frames, 0, failure, false);
  }

  /** `frames` from `from` on, copied unless `owned`: they wait past the read whose buffer they alias. */
  private keep(frames: Uint8Array[], from: number, owned: boolean): Uint8Array[] {
    if (owned) return from === 0 ? frames : frames.slice(from);
    // One buffer for all of them, not one each: a read's rest is ~100 frames, and every ArrayBuffer costs an
    // allocation V8 tracks as external memory.
    let total = 0;
    for (let i = from; i < frames.length; i++) total += frames[i]!.length;
    const copy = new Uint8Array(total);
    const kept: Uint8Array[] = [];
    let at = 0;
    for (let i = from; i < frames.length; i++) {
      const frame = frames[i]!;
      copy.set(frame, at);
      kept.push(copy.subarray(at, at + frame.length));
      at += frame.length;
    }
    return kept;
  }

  /**
   * Decodes and hands over `frames` from `from` on, MAX_FRAMES_PER_TURN per turn. Backpressure is checked
   * between frames, not only between socket chunks: one 64 KiB chunk can hold a hundred sections, more than a
   * small span queue has room for.
   */
  private deliver(
    connection: Connection,
    info: ConnectionInfo,
    frames: Uint8Array[],
    from: number,
    failure: FrameError | undefined,
    owned: boolean,
  ): void {
    const { handlers, decode, logger, holdWhile } = this.options;
    for (let i = from; i < frames.length; i++) {
      // A handler may have stopped the subscriber, or a framing error reset the connection: deliver nothing
      // more. A peer that closed meanwhile still gets what it sent.
      if (this.halted(connection)) {
        this.delivered(connection);
        return;
      }
      if (connection.phase === 'snapshot') {
        connection.socket.pause();
        const rest = this.keep(frames, i, owned);
        connection.resume = () => this.deliver(connection, info, rest, 0, failure, true);
        return;
      }
      const behind = holdWhile?.() === true;
      if (behind || i - from >= MAX_FRAMES_PER_TURN) {
        connection.undelivered ??= { afterwards: [] };
        connection.socket.pause();
        const rest = this.keep(frames, i, owned);
        const next = (): void => this.deliver(connection, info, rest, 0, failure, true);
        if (behind) setTimeout(next, HOLD_POLL_MS);
        else setImmediate(next);
        return;
      }
      const frame = frames[i]!;
      let value: PyValue;
      try {
        value = decode(frame) as PyValue;
      } catch (err) {
        const detail = err instanceof Error ? err.message : String(err);
        logger.debug({ connection: info.id, detail }, 'undecodable reporter frame skipped');
        this.guard('frameRejected', () => handlers.frameRejected(info, 'decode_error', detail));
        continue;
      }
      if (connection.phase === 'reply') this.onReply(connection, info, value);
      else this.handOver(connection, info, value);
    }
    this.delivered(connection);
    if (connection.socket.destroyed || this.current === 'stopped') return;
    if (failure === undefined) {
      yieldAfterChunk(connection.socket, holdWhile);
      return;
    }
    const { code, message } = failure;
    logger.warn(
      { connection: info.id, code, detail: message },
      'reporter stream cannot be framed; reconnecting',
    );
    this.guard('frameRejected', () => handlers.frameRejected(info, code, message));
    connection.reset = true;
    connection.socket.destroy();
  }

  /** Runs `then` now, or once the frames held back by backpressure have been handed over. */
  private afterDelivery(connection: Connection, then: () => void): void {
    if (connection.undelivered === undefined) then();
    else connection.undelivered.afterwards.push(then);
  }

  private delivered(connection: Connection): void {
    // While the snapshot is fetched, the end of the stream waits for it (attach() calls this when done).
    if (connection.phase === 'snapshot') return;
    const waiting = connection.undelivered;
    connection.undelivered = undefined;
    for (const then of waiting?.afterwards ?? []) then();
  }

  private onEnd(connection: Connection): void {
    const info = connection.info;
    const pending = connection.reader.bufferedBytes;
    if (!info || connection.reset || pending === 0) return;
    const detail = `stream ended inside a frame (${pending} bytes buffered)`;
    this.guard('frameRejected', () => this.options.handlers.frameRejected(info, 'truncated_frame', detail));
  }

  private onClose(connection: Connection): void {
    const { path, logger, handlers, backoff } = this.options;
    if (this.connection === connection) this.connection = undefined;
    const info = connection.info;
    if (info) {
      const reason: DisconnectReason = connection.stopped
        ? 'stopped'
        : connection.reset
          ? 'reset'
          : connection.error
            ? 'error'
            : 'eof';
      logger.debug(
        { path, connection: info.id, reason, err: connection.error },
        'reporter connection closed',
      );
      this.guard('disconnected', () => handlers.disconnected(info, reason));
      const lastedLong = Date.now() - info.connectedAt >= backoff.maxMs;
      if (!connection.reset && (connection.delivered || lastedLong)) this.failures = 0;
    } else if (connection.error && this.current !== 'stopped') {
      const code = connection.error.code ?? '';
      if (ROUTINE_CONNECT_ERRORS.has(code))
        logger.debug({ path, code }, 'reporter socket not accepting; retrying');
      else logger.warn({ path, err: connection.error }, 'cannot connect to reporter socket; retrying');
    }
    if (this.current === 'stopped') return;
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    const { initialMs, maxMs } = this.options.backoff;
    const ceiling = Math.min(maxMs, initialMs * 2 ** this.failures);
    this.failures++;
    // Equal jitter: at least half the delay, so several exporters do not reconnect in lockstep.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.current = 'backoff';
    this.later(delay, () => this.waitForPath());
  }

  private guard(handler: keyof SubscriberHandlers, call: () => void): void {
    try {
      call();
    } catch (err) {
      this.options.logger.error(
        { err, handler, path: this.options.path },
        'reporter subscriber handler threw',
      );
    }
  }
}

/**
 * A live init_ of a section the snapshot initialized or started, a start_ of one it started, or a stop_ of
 * one it stopped.
 */
function repeatsSnapshot(connection: Connection, value: PyValue): boolean {
  if (!isPyDict(value)) return false;
  const seqNum = value['seq_num'];
  const event = value['event'];
  if (typeof seqNum !== 'number' || typeof event !== 'string') return false;
  if (event.startsWith('stop_')) return connection.snapshotStopped.has(seqNum);
  if (connection.snapshotStarted.has(seqNum)) return true;
  return event.startsWith('init_') && connection.snapshotInitialized.has(seqNum);
}
