// Subscribes to one pyATS reporter socket: waits for the path to appear, connects, sends the subscribe
// request, hands each decoded frame to the handlers, and reconnects with backoff whenever it goes away.
import { randomUUID } from 'node:crypto';
import { stat } from 'node:fs/promises';
import net from 'node:net';
import type { Logger } from '../log.js';
import { HOLD_POLL_MS, yieldAfterChunk } from '../pacing.js';
import { FrameError, FrameReader, encodeFrame, type HeaderFormat } from './framing.js';

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
   * `decode_error` (the connection is kept), `truncated_frame` (at end of stream), or a `FrameError` code
   * (`frame_too_large`, `undetectable_header`: the connection is reset).
   */
  frameRejected(conn: ConnectionInfo, code: string, detail: string): void;
  disconnected(conn: ConnectionInfo, reason: DisconnectReason): void;
}

export interface ReporterSubscriberOptions {
  /** The reporter.sock path; may be a symlink, may not exist yet. */
  path: string;
  /** Size-prefix format of incoming frames, or `'auto'` to detect it per connection. */
  header: HeaderFormat | 'auto';
  /** How to frame the outgoing subscribe request (the wire format is undocumented). */
  requestHeader: HeaderFormat;
  /** Already-pickled request, sent once right after connecting; null sends nothing. */
  subscribeRequest: Uint8Array | null;
  maxFrameBytes: number;
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
  'header' | 'requestHeader' | 'subscribeRequest' | 'maxFrameBytes' | 'pollIntervalMs' | 'backoff'
>;

/** `idle` until start(); `stopped` after stop(). */
export type SubscriberState = 'idle' | 'waiting' | 'connecting' | 'connected' | 'backoff' | 'stopped';

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
  /** At least one frame decoded: the peer really is a reporter. */
  delivered: boolean;
  /** The peer closed its side: nothing more to ask it. */
  ended: boolean;
  /** Any byte arrived from the peer. */
  received: boolean;
  requestTimer: NodeJS.Timeout | undefined;
  error: NodeJS.ErrnoException | undefined;
  closed: Promise<void>;
  /**
   * Frames read but not yet handed over (held by backpressure), and what waits for them: the peer may close
   * while they wait, and its end and close must reach the handlers after them.
   */
  undelivered: { afterwards: (() => void)[] } | undefined;
}

/** How long a new connection waits for the reporter to speak before sending the subscribe request. */
const REQUEST_QUIET_MS = 50;

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
    const { path, header, maxFrameBytes } = this.options;
    this.current = 'connecting';
    const socket = net.createConnection({ path });
    let closedResolve: () => void = () => undefined;
    const connection: Connection = {
      socket,
      info: undefined,
      reader: new FrameReader({ header, maxFrameBytes }),
      reset: false,
      stopped: false,
      delivered: false,
      ended: false,
      received: false,
      requestTimer: undefined,
      error: undefined,
      closed: new Promise((resolve) => (closedResolve = resolve)),
      undelivered: undefined,
    };
    this.connection = connection;
    socket.on('connect', () => this.onConnect(connection));
    socket.on('data', (chunk: Buffer) => this.onData(connection, chunk));
    socket.on('end', () => {
      connection.ended = true;
      this.afterDelivery(connection, () => this.onEnd(connection));
    });
    socket.on('error', (err: NodeJS.ErrnoException) => (connection.error ??= err));
    socket.on('close', () => {
      clearTimeout(connection.requestTimer);
      this.afterDelivery(connection, () => {
        this.onClose(connection);
        closedResolve();
      });
    });
  }

  private onConnect(connection: Connection): void {
    const { path, subscribeRequest, requestHeader, logger, handlers } = this.options;
    if (this.current === 'stopped') return;
    const info: ConnectionInfo = { id: randomUUID(), path, connectedAt: Date.now() };
    connection.info = info;
    this.current = 'connected';
    logger.debug({ path, connection: info.id }, 'connected to reporter socket');
    this.guard('connected', () => handlers.connected(info));
    if (!subscribeRequest) return;
    // The request goes out only if the reporter stays quiet for REQUEST_QUIET_MS: a server that needs it
    // sends nothing until asked, and one that streams unprompted does not need it. Writing to a reporter
    // that already sent everything and closed would fail with EPIPE, and Node would then destroy the
    // socket with the events still unread in the kernel buffer. The setImmediate puts a poll phase (which
    // reads what arrived) between the timer and the check.
    connection.requestTimer = setTimeout(
      () =>
        setImmediate(() => {
          if (connection.received || connection.ended || connection.socket.destroyed) return;
          connection.socket.write(encodeFrame(subscribeRequest, requestHeader));
        }),
      REQUEST_QUIET_MS,
    );
  }

  private onData(connection: Connection, chunk: Uint8Array): void {
    connection.received = true;
    const info = connection.info;
    if (!info || connection.reset || connection.socket.destroyed) return;
    let frames: Uint8Array[];
    let failure: FrameError | undefined;
    try {
      frames = connection.reader.push(chunk);
    } catch (err) {
      if (!(err instanceof FrameError)) throw err;
      failure = err;
      frames = err.frames;
    }
    this.deliver(connection, info, frames, 0, failure);
  }

  /**
   * Decodes and hands over `frames` from `from` on. Backpressure is checked between frames, not only between
   * socket chunks: one 64 KiB chunk can hold a hundred sections, more than a small span queue has room for.
   */
  private deliver(
    connection: Connection,
    info: ConnectionInfo,
    frames: Uint8Array[],
    from: number,
    failure: FrameError | undefined,
  ): void {
    const { handlers, decode, logger, holdWhile } = this.options;
    for (let i = from; i < frames.length; i++) {
      // A handler may have stopped the subscriber, or a framing error reset the connection: deliver nothing
      // more. A peer that closed meanwhile still gets what it sent.
      if (connection.stopped || connection.reset || this.current === 'stopped') {
        this.delivered(connection);
        return;
      }
      if (holdWhile?.() === true) {
        connection.undelivered ??= { afterwards: [] };
        connection.socket.pause();
        setTimeout(() => this.deliver(connection, info, frames, i, failure), HOLD_POLL_MS);
        return;
      }
      const frame = frames[i]!;
      let value: unknown;
      try {
        value = decode(frame);
      } catch (err) {
        const detail = err instanceof Error ? err.message : String(err);
        logger.debug({ connection: info.id, detail }, 'undecodable reporter frame skipped');
        this.guard('frameRejected', () => handlers.frameRejected(info, 'decode_error', detail));
        continue;
      }
      connection.delivered = true;
      this.guard('event', () => handlers.event(info, value));
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
