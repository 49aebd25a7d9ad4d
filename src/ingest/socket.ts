// `--ingest-socket PATH`: a Unix socket server taking NDJSON event streams from many writers at once (the
// bridge, scripts). Each connection is one tracker stream, ended when the connection closes — unless its
// first line names a job key (`{"control":"hello","stream":KEY}`), which lets the writer reconnect mid-job.
// A hello's `env` (the job's CI variables) becomes the keyed stream's context, so the job joins the CI trace.
import { chmod, lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import type { CiContext } from '../events/index.js';
import type { Logger } from '../log.js';
import { yieldAfterChunk } from '../pacing.js';
import {
  KeyedStreams,
  LineSplitter,
  anonymousStreamId,
  clip,
  itemOf,
  type IngestItem,
  type IngestTarget,
  type SplitLine,
} from './ndjson.js';

export const SOCKET_SOURCE = 'ndjson_socket';
export const DEFAULT_MAX_LINE_BYTES = 1024 * 1024;

export interface IngestSocketOptions {
  path: string;
  target: IngestTarget;
  /** Longer lines are rejected (`line_too_long`) and skipped; the connection is kept. */
  maxLineBytes: number;
  /** A keyed stream with no traffic for this long is ended; 0 never ends one for idleness. */
  idleTimeoutMs: number;
  /** File mode of the socket (e.g. 0o660 to let a group of job users write to it); default from the umask. */
  mode?: number;
  logger: Logger;
  /** Read backpressure: while this returns true no connection is read (see pacing.ts). Default: never. */
  holdWhile?: () => boolean;
}

export type IngestSocketErrorCode = 'socket_in_use' | 'not_a_socket' | 'listen_failed';

/** Start-up failure of the ingest socket; the CLI reports it as a configuration error. */
export class IngestSocketError extends Error {
  override readonly name = 'IngestSocketError';
  constructor(
    readonly code: IngestSocketErrorCode,
    message: string,
  ) {
    super(message);
  }
}

interface Writer {
  socket: net.Socket;
  splitter: LineSplitter;
  /** The job key from a hello line, when there was one. */
  key: string | undefined;
  /** The CI run the hello's `env` named: the context of the keyed stream each time it opens. */
  ci: CiContext | undefined;
  /** The keyed stream has had traffic since its last `end`. */
  keyedOpen: boolean;
  /** Stream of an unkeyed connection (created at the first line). */
  anonymous: string | undefined;
  lines: number;
}

export class IngestSocketServer {
  private server: net.Server | undefined;
  private readonly writers = new Set<Writer>();
  private readonly streams: KeyedStreams;
  private closing: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly options: IngestSocketOptions) {
    this.streams = new KeyedStreams({
      prefix: 'ndjson-socket:key:',
      idleTimeoutMs: options.idleTimeoutMs,
      target: options.target,
      logger: options.logger,
    });
  }

  get path(): string {
    return this.options.path;
  }

  /** Connections open now. */
  get connections(): number {
    return this.writers.size;
  }

  /** Keyed streams open now. */
  get openStreams(): number {
    return this.streams.size;
  }

  /**
   * Binds the socket. A stale socket file (nothing listening) is replaced; a live one, or a path that is not
   * a socket, is an error.
   */
  async listen(): Promise<void> {
    const { path } = this.options;
    await this.clearStale(path);
    const server = net.createServer((socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(new IngestSocketError('listen_failed', `cannot listen on ${path}: ${err.message}`));
      };
      server.once('error', onError);
      server.listen(path, () => {
        server.off('error', onError);
        resolve();
      });
    });
    server.on('error', (err) => this.options.logger.error({ err, path }, 'ingest socket error'));
    this.server = server;
    if (this.options.mode !== undefined) await chmod(path, this.options.mode);
    this.options.logger.info({ path }, 'ingest socket listening');
  }

  /**
   * Stops accepting, reads what the open connections already sent, ends the streams of unkeyed ones,
   * closes them and removes the socket file. Keyed streams stay open for `tracker.endAll()`.
   */
  close(): Promise<void> {
    this.stopped = true;
    this.closing ??= (async () => {
      this.streams.close();
      const server = this.server;
      this.server = undefined;
      const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : undefined;
      for (const writer of [...this.writers]) {
        writer.socket.destroy();
        this.finish(writer);
      }
      await closed;
      if (server) await unlink(this.options.path).catch(() => undefined);
    })();
    return this.closing;
  }

  private async clearStale(path: string): Promise<void> {
    let stats;
    try {
      stats = await lstat(path);
    } catch {
      return;
    }
    if (!stats.isSocket()) {
      throw new IngestSocketError('not_a_socket', `${path} exists and is not a socket; not replacing it`);
    }
    const live = await new Promise<boolean>((resolve) => {
      const probe = net.connect(path);
      probe.once('connect', () => {
        probe.destroy();
        resolve(true);
      });
      probe.once('error', () => resolve(false));
    });
    if (live) {
      throw new IngestSocketError('socket_in_use', `another process is listening on ${path}`);
    }
    await unlink(path).catch(() => undefined);
  }

  private accept(socket: net.Socket): void {
    const writer: Writer = {
      socket,
      splitter: new LineSplitter(this.options.maxLineBytes),
      key: undefined,
      ci: undefined,
      keyedOpen: false,
      anonymous: undefined,
      lines: 0,
    };
    this.writers.add(writer);
    socket.on('data', (chunk: Buffer) => {
      this.handleLines(writer, writer.splitter.push(chunk));
      yieldAfterChunk(socket, this.options.holdWhile);
    });
    socket.on('end', () => socket.end());
    socket.on('error', (err) => this.options.logger.debug({ err }, 'ingest connection error'));
    socket.on('close', () => this.finish(writer));
  }

  /** The connection is gone: its last unterminated line, then the end of an unkeyed stream. */
  private finish(writer: Writer): void {
    if (!this.writers.delete(writer)) return;
    this.handleLines(writer, writer.splitter.end());
    if (writer.key !== undefined) {
      if (this.stopped || !writer.keyedOpen) return;
      // The writer may reconnect and go on with the same job: only the idle timer ends it now.
      this.streams.touch(writer.key);
    } else if (writer.anonymous !== undefined) {
      this.options.target.endStream(writer.anonymous);
    }
  }

  private streamOf(writer: Writer): string {
    if (writer.key !== undefined) {
      const streamId = this.streams.touch(writer.key);
      // Given at the stream's first traffic, not at the hello: a stream that never opens holds no context.
      if (!writer.keyedOpen && writer.ci !== undefined) {
        this.options.target.setStreamContext(streamId, { ci: writer.ci });
      }
      writer.keyedOpen = true;
      return streamId;
    }
    return (writer.anonymous ??= anonymousStreamId('ndjson-socket:'));
  }

  private handleLines(writer: Writer, lines: SplitLine[]): void {
    const { target, maxLineBytes } = this.options;
    for (const split of lines) {
      const item = itemOf(split, maxLineBytes);
      if (item === undefined) continue;
      writer.lines += 1;
      this.handleItem(writer, item, target);
    }
  }

  private handleItem(writer: Writer, item: IngestItem, target: IngestTarget): void {
    switch (item.kind) {
      case 'event':
        target.ingest(this.streamOf(writer), SOCKET_SOURCE, item.value);
        return;
      case 'invalid':
        target.reject(this.streamOf(writer), SOCKET_SOURCE, item.reason, item.detail);
        return;
      case 'control':
        break;
    }
    const control = item.control;
    if (control.kind === 'hello') {
      if (writer.lines !== 1 && writer.key !== control.stream) {
        target.reject(
          this.streamOf(writer),
          SOCKET_SOURCE,
          'bad_control',
          `hello "${clip(control.stream, 60)}" must be the first line of a connection`,
        );
        return;
      }
      writer.key = control.stream;
      // A later hello of the same stream may bring the `env` the writer has only now found (the bridge
      // script reads env.txt, which easypy writes a moment after the job starts).
      if (control.envProblem !== undefined) {
        target.reject(this.streamOf(writer), SOCKET_SOURCE, 'bad_control', control.envProblem);
      } else if (control.ci !== undefined) {
        writer.ci = control.ci;
        this.options.logger.info(
          {
            stream: this.streams.streamIdOf(control.stream),
            ci: control.ci.system,
            trace_id: control.ci.parent?.traceId,
          },
          'job runs in CI',
        );
        if (writer.keyedOpen) target.setStreamContext(this.streamOf(writer), { ci: control.ci });
      }
    } else if (control.kind === 'end') {
      if (writer.key !== undefined && writer.keyedOpen) this.streams.end(writer.key);
      else if (writer.anonymous !== undefined) target.endStream(writer.anonymous);
      writer.keyedOpen = false;
      // Later events on this connection belong to a new job.
      writer.anonymous = undefined;
    } else if (writer.key !== undefined) {
      this.streamOf(writer);
    }
  }
}
