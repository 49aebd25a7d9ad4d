// The main thread's side of the decode thread (`--decode-thread`): starts decode-worker.ts, gives it the
// reporter sockets to follow, and replays what it sends — connections, normalized events, rejections — to
// handlers in order. Reading is held while the sinks are behind or the main thread has not caught up.
import { Worker } from 'node:worker_threads';
import type { SectionEvent } from '../events/index.js';
import type { Logger } from '../log.js';
import type { DecodeWorkerCommand, DecodeWorkerData, DecodeWorkerMessage } from './decode-worker.js';
import type { DiscoveredSubscriber, SocketActivity } from './discovery.js';
import type { ConnectionInfo, DisconnectReason } from './subscriber.js';
import { SourceBatchReader, type ControlOp } from './thread-channel.js';
import { HOLD_POLL_MS } from '../pacing.js';

/** What the decode thread's sockets produce, as the main thread sees it. */
export interface DecodedSourceHandlers {
  connected(conn: ConnectionInfo): void;
  event(conn: ConnectionInfo, event: SectionEvent): void;
  /** An event the normalizer refused. */
  rejected(conn: ConnectionInfo, reason: string, detail: string): void;
  fieldDropped(conn: ConnectionInfo, reason: string, detail: string): void;
  frameRejected(conn: ConnectionInfo, code: string, detail: string): void;
  disconnected(conn: ConnectionInfo, reason: DisconnectReason): void;
}

export interface DecodeThreadOptions {
  worker: Omit<DecodeWorkerData, 'flags'>;
  handlers: DecodedSourceHandlers;
  /** Read backpressure from the sinks (as for in-process subscribers). */
  sinksBehind: () => boolean;
  logger: Logger;
  /** The worker module; default: decode-worker.js beside this file (tests of src/ point at dist/). */
  workerUrl?: URL;
}

interface Followed {
  path: string;
  activity: SocketActivity | undefined;
  started: boolean;
  /** Resolves the pending stop when the thread says the subscriber has stopped. */
  stopped?: () => void;
  stopping?: Promise<void>;
}

export class DecodeThread {
  private worker: Worker | undefined;
  private readonly flags = new Int32Array(new SharedArrayBuffer(8));
  private readonly reader = new SourceBatchReader();
  private readonly followed = new Map<number, Followed>();
  private readonly conns = new Map<number, { info: ConnectionInfo; key: number }>();
  private nextKey = 0;
  private holdTimer: NodeJS.Timeout | undefined;
  private closing = false;

  constructor(private readonly options: DecodeThreadOptions) {}

  /** A subscriber for `path` whose socket work happens on the decode thread. */
  createSubscriber(path: string, activity?: SocketActivity): DiscoveredSubscriber {
    const key = this.nextKey++;
    const followed: Followed = { path, activity, started: false };
    this.followed.set(key, followed);
    return {
      start: () => {
        if (followed.started || this.closing) return;
        followed.started = true;
        this.send({ cmd: 'start', key, path });
      },
      stop: () => this.stop(key, followed),
    };
  }

  /** Stops every subscriber (their connections end as `stopped`), then the thread. */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.followed].map(([key, followed]) => this.stop(key, followed)));
    clearTimeout(this.holdTimer);
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
  }

  /** Stops one subscriber once; without a running thread there is nothing to stop. */
  private stop(key: number, followed: Followed): Promise<void> {
    if (!followed.started || this.worker === undefined) {
      this.followed.delete(key);
      return Promise.resolve();
    }
    followed.stopping ??= new Promise<void>((resolve) => {
      followed.stopped = resolve;
      this.send({ cmd: 'stop', key });
    });
    return followed.stopping;
  }

  private send(command: DecodeWorkerCommand): void {
    (this.worker ??= this.spawn()).postMessage(command);
  }

  private spawn(): Worker {
    const url = this.options.workerUrl ?? new URL('./decode-worker.js', import.meta.url);
    const worker = new Worker(url, { workerData: { ...this.options.worker, flags: this.flags } });
    worker.on('message', (message: DecodeWorkerMessage) => this.onMessage(message));
    worker.on('error', (err) => this.options.logger.error({ err }, 'decode thread failed'));
    worker.on('exit', (code) => this.onExit(worker, code));
    return worker;
  }

  private onMessage(message: DecodeWorkerMessage): void {
    if (message.kind === 'stopped') {
      const followed = this.followed.get(message.key);
      this.followed.delete(message.key);
      followed?.stopped?.();
      return;
    }
    this.reader.read(message.batch, {
      event: (conn, event) => {
        const known = this.conns.get(conn);
        if (known !== undefined) this.options.handlers.event(known.info, event);
      },
      control: (op) => this.onControl(op),
    });
    Atomics.add(this.flags, 1, 1);
    this.updateHold();
  }

  private onControl(op: ControlOp): void {
    const { handlers } = this.options;
    if (op.op === 'connected') {
      this.conns.set(op.conn, { info: op.info, key: op.key });
      this.followed.get(op.key)?.activity?.connected();
      handlers.connected(op.info);
      return;
    }
    const known = this.conns.get(op.conn);
    if (known === undefined) return;
    if (op.op === 'disconnected') {
      this.conns.delete(op.conn);
      this.followed.get(known.key)?.activity?.disconnected();
      handlers.disconnected(known.info, op.reason);
    } else if (op.op === 'rejected') handlers.rejected(known.info, op.reason, op.detail);
    else if (op.op === 'fieldDropped') handlers.fieldDropped(known.info, op.reason, op.detail);
    else handlers.frameRejected(known.info, op.code, op.detail);
  }

  /** Tells the thread whether to hold reading; while it holds, looks again every few ms. */
  private updateHold(): void {
    const behind = this.options.sinksBehind();
    Atomics.store(this.flags, 0, behind ? 1 : 0);
    clearTimeout(this.holdTimer);
    this.holdTimer = behind ? setTimeout(() => this.updateHold(), HOLD_POLL_MS) : undefined;
  }

  /**
   * The thread died (a bug, or out of memory): its connections are gone, so their streams end as on a
   * disconnect, and a new thread takes over every socket that was followed.
   */
  private onExit(worker: Worker, code: number): void {
    if (this.worker !== worker) return;
    this.worker = undefined;
    if (this.closing) return;
    this.options.logger.error({ code }, 'decode thread exited; restarting it');
    for (const { info, key } of this.conns.values()) {
      this.followed.get(key)?.activity?.disconnected();
      this.options.handlers.disconnected(info, 'error');
    }
    this.conns.clear();
    // Batches in flight died with the thread: counting restarts with the new one.
    Atomics.store(this.flags, 1, 0);
    for (const [key, followed] of this.followed) {
      if (followed.started) this.send({ cmd: 'start', key, path: followed.path });
    }
  }
}
