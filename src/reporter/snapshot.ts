// Attaching mid-job: what already ran, fetched from the reporter the way pyATS's own
// `pyats.reporter.explorer.Explorer` does (ping, register_client, get_testsuite, then get_section for each
// node by its id path), on a connection of its own that is closed when done. Subscribing alone gives only
// what happens from then on.
import net from 'node:net';
import { isPyDict, type PyDict, type PyValue } from '../python/index.js';
import { FrameError, FrameReader, type FrameFormat } from './framing.js';
import {
  childIds,
  describeValue,
  encodeRequest,
  replyError,
  snapshotEvents,
  type ReporterRequest,
  type SnapshotEvent,
} from './protocol.js';

export type ReporterProtocolErrorCode = 'refused' | 'unexpected_reply' | 'timeout' | 'closed';

/** The reporter answered something pyATS's client would not accept, or did not answer. */
export class ReporterProtocolError extends Error {
  constructor(
    readonly code: ReporterProtocolErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'ReporterProtocolError';
  }
}

export interface SnapshotOptions {
  path: string;
  format: FrameFormat;
  maxFrameBytes: number;
  decode: (frame: Uint8Array) => unknown;
  /** Per request; the whole snapshot may take `maxSections` of them. */
  timeoutMs: number;
  /** Sections fetched at most; the walk stops there (what is not fetched still comes live when it stops). */
  maxSections: number;
}

export interface Snapshot {
  events: SnapshotEvent[];
  /** The walk stopped at `maxSections`. */
  truncated: boolean;
}

/** One request at a time over one connection, as ReportClient does. */
class RequestConnection {
  private readonly reader: FrameReader;
  private waiting: { resolve: (v: PyValue) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;
  private readonly replies: PyValue[] = [];

  private constructor(
    private readonly socket: net.Socket,
    private readonly options: SnapshotOptions,
  ) {
    // The first reply is 'pong': small, which settles the framing at once (see maxFirstFrameBytes).
    this.reader = new FrameReader({
      format: 'auto',
      maxFrameBytes: options.maxFrameBytes,
      maxFirstFrameBytes: 64 * 1024,
    });
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.fail(new ReporterProtocolError('closed', err.message)));
    socket.on('close', () =>
      this.fail(new ReporterProtocolError('closed', 'reporter closed the connection')),
    );
  }

  static open(options: SnapshotOptions): Promise<RequestConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection({ path: options.path });
      socket.once('connect', () => {
        socket.removeListener('error', reject);
        resolve(new RequestConnection(socket, options));
      });
      socket.once('error', reject);
    });
  }

  call(request: ReporterRequest): Promise<PyValue> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          this.fail(
            new ReporterProtocolError(
              'timeout',
              `no reply to ${request.name} within ${this.options.timeoutMs} ms`,
            ),
          ),
        this.options.timeoutMs,
      );
      this.waiting = {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.socket.write(encodeRequest(request, this.options.format));
      this.answer();
    });
  }

  close(): void {
    this.failure ??= new ReporterProtocolError('closed', 'closed');
    this.socket.destroy();
  }

  private onData(chunk: Uint8Array): void {
    try {
      for (const frame of this.reader.push(chunk)) this.replies.push(this.options.decode(frame) as PyValue);
    } catch (err) {
      const detail = err instanceof FrameError ? `${err.code}: ${err.message}` : String(err);
      this.fail(new ReporterProtocolError('unexpected_reply', `undecodable reply (${detail})`));
      return;
    }
    this.answer();
  }

  private answer(): void {
    const waiting = this.waiting;
    if (waiting === undefined || this.replies.length === 0) return;
    this.waiting = undefined;
    waiting.resolve(this.replies.shift() as PyValue);
  }

  private fail(err: Error): void {
    this.failure ??= err;
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.reject(this.failure);
    this.socket.destroy();
  }
}

function expectReply(request: ReporterRequest, reply: PyValue, accept: (v: PyValue) => boolean): void {
  const error = replyError(reply);
  if (error !== undefined) throw new ReporterProtocolError('refused', `${request.name} refused: ${error}`);
  if (!accept(reply)) {
    throw new ReporterProtocolError(
      'unexpected_reply',
      `unexpected reply to ${request.name}: ${describeValue(reply)}`,
    );
  }
}

/**
 * Fetches the section tree the reporter holds and returns it as events (see snapshotEvents); no events
 * when the TestSuite has not started yet. Throws ReporterProtocolError when the reporter does not answer
 * as pyATS's own client expects.
 */
export async function fetchSnapshot(options: SnapshotOptions): Promise<Snapshot> {
  const conn = await RequestConnection.open(options).catch((err: Error) => {
    throw new ReporterProtocolError('closed', `cannot connect: ${err.message}`);
  });
  try {
    const ask = async (request: ReporterRequest, accept: (v: PyValue) => boolean): Promise<PyValue> => {
      const reply = await conn.call(request);
      expectReply(request, reply, accept);
      return reply;
    };
    await ask({ name: 'ping' }, (v) => v === 'pong');
    await ask({ name: 'register_client', pid: process.pid, ppid: process.ppid }, (v) => v === null);
    const suite = await ask({ name: 'get_testsuite' }, (v) => v === null || isPyDict(v));
    if (!isPyDict(suite)) return { events: [], truncated: false };

    const children = new Map<PyDict, PyDict[]>();
    let fetched = 1;
    let truncated = false;
    // Depth first, in the order the tree lists children: the order pyATS started them in.
    const walk = async (node: PyDict, idList: readonly string[]): Promise<void> => {
      const kids: PyDict[] = [];
      children.set(node, kids);
      for (const id of childIds(node)) {
        if (fetched >= options.maxSections) {
          truncated = true;
          return;
        }
        const path = [...idList, id];
        const child = await ask({ name: 'get_section', idList: path }, isPyDict);
        fetched++;
        kids.push(child as PyDict);
        await walk(child as PyDict, path);
      }
    };
    await walk(suite, []);
    return { events: snapshotEvents(suite, (s) => children.get(s) ?? []), truncated };
  } finally {
    conn.close();
  }
}
