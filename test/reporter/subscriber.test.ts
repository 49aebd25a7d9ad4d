import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat, symlink } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { pickle, unpickle, type PyDict, type PyValue } from '../../src/python/index.js';
import { FRAME_FORMATS, FrameReader, encodeFrame, type FrameFormat } from '../../src/reporter/framing.js';
import { encodeRequest } from '../../src/reporter/protocol.js';
import {
  MAX_FRAMES_PER_TURN,
  ReporterSubscriber,
  type ConnectionInfo,
  type DisconnectReason,
  type ReporterSubscriberOptions,
  type SubscriberHandlers,
} from '../../src/reporter/subscriber.js';

/** A reporter's events stand-ins: pickled strings, decoded with the real unpickler. */
function payload(text: string): Uint8Array {
  return pickle(text);
}

function decode(frame: Uint8Array): unknown {
  return unpickle(frame);
}

// What pyATS 23.2's ReportClient.subscribe() sent on its connection, recorded through a proxy.
const REAL_SUBSCRIBE_REQUEST =
  '00003380049528000000000000007d94288c046e616d65948c107375627363726962655f636c69656e74948c0464617461947d94752e';

const NOT_A_PICKLE = Uint8Array.from([1, 2, 3]);

type Call =
  | { kind: 'connected'; conn: ConnectionInfo }
  | { kind: 'event'; conn: ConnectionInfo; value: unknown }
  | { kind: 'frameRejected'; conn: ConnectionInfo; code: string; detail: string }
  | { kind: 'disconnected'; conn: ConnectionInfo; reason: DisconnectReason };

class Recorder {
  readonly calls: Call[] = [];
  readonly handlers: SubscriberHandlers = {
    connected: (conn) => this.calls.push({ kind: 'connected', conn }),
    event: (conn, value) => this.calls.push({ kind: 'event', conn, value }),
    frameRejected: (conn, code, detail) => this.calls.push({ kind: 'frameRejected', conn, code, detail }),
    disconnected: (conn, reason) => this.calls.push({ kind: 'disconnected', conn, reason }),
  };

  of<K extends Call['kind']>(kind: K): Extract<Call, { kind: K }>[] {
    return this.calls.filter((c): c is Extract<Call, { kind: K }> => c.kind === kind);
  }

  events(): unknown[] {
    return this.of('event').map((c) => c.value);
  }

  /** The calls without connection details, e.g. `event:a`, `disconnected:eof`. */
  summary(): string[] {
    return this.calls.map((c) => {
      if (c.kind === 'event') return `event:${String(c.value)}`;
      if (c.kind === 'frameRejected') return `frameRejected:${c.code}`;
      if (c.kind === 'disconnected') return `disconnected:${c.reason}`;
      return 'connected';
    });
  }
}

interface TestReporterOptions {
  /** Runs once a connection's subscribe_client has been answered with None. */
  onSubscribe?: (socket: net.Socket) => void;
  /** What get_testsuite / get_section return (a tree snapshot); default: no TestSuite yet. */
  tree?: { suite: PyDict; sections: Record<string, PyDict> };
  /** The reply to subscribe_client; default None. */
  subscribeReply?: PyValue;
  /** Framing of what the reporter sends; default chunked, as pyATS 23.2. */
  format?: FrameFormat;
}

/**
 * Stands in for a pyATS 23.2 reporter server for these unit tests: answers the requests pyATS's clients send
 * (real pickles, chunked framing) and records every request. Happy-path bytes are checked against real pyATS
 * in test/integration and test/helpers.
 */
class TestReporter {
  readonly connections: { socket: net.Socket; received: () => Buffer; requests: PyDict[] }[] = [];

  private constructor(private readonly server: net.Server) {}

  static async listen(path: string, options: TestReporterOptions = {}): Promise<TestReporter> {
    const server = net.createServer();
    const reporter = new TestReporter(server);
    const format = options.format ?? 'chunked';
    server.on('connection', (socket) => {
      const chunks: Buffer[] = [];
      const requests: PyDict[] = [];
      const reader = new FrameReader({ format: 'auto', maxFrameBytes: 1 << 20 });
      const reply = (value: PyValue): boolean => socket.write(encodeFrame(pickle(value), format));
      socket.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        for (const frame of reader.push(chunk)) {
          const request = unpickle(frame) as PyDict;
          requests.push(request);
          const data = request['data'] as PyDict;
          if (request['name'] === 'subscribe_client') {
            reply(options.subscribeReply === undefined ? null : options.subscribeReply);
            options.onSubscribe?.(socket);
          } else if (request['name'] === 'ping') reply('pong');
          else if (request['name'] === 'register_client') reply(null);
          else if (request['name'] === 'get_testsuite') reply(options.tree?.suite ?? null);
          else if (request['name'] === 'get_section') {
            const key = (data['id_list'] as string[]).join('/');
            reply(options.tree?.sections[key] ?? null);
          }
        }
      });
      socket.on('error', () => {});
      reporter.connections.push({ socket, received: () => Buffer.concat(chunks), requests });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    reporters.push(reporter);
    return reporter;
  }

  /** Connections that subscribed (the others fetched a snapshot). */
  subscribed(): net.Socket[] {
    return this.connections
      .filter((c) => c.requests[0]?.['name'] === 'subscribe_client')
      .map((c) => c.socket);
  }

  async close(): Promise<void> {
    for (const { socket } of this.connections) socket.destroy();
    if (this.server.listening) await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

const reporters: TestReporter[] = [];
const subscribers: ReporterSubscriber[] = [];
const dirs: string[] = [];

afterEach(async () => {
  await Promise.all(subscribers.splice(0).map((s) => s.stop()));
  await Promise.all(reporters.splice(0).map((r) => r.close()));
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pyx-sub-'));
  dirs.push(dir);
  return dir;
}

function subscribe(path: string, recorder: Recorder, options: Partial<ReporterSubscriberOptions> = {}) {
  const subscriber = new ReporterSubscriber({
    path,
    frameFormat: 'chunked',
    maxFrameBytes: 1024 * 1024,
    attach: { timeoutMs: 2000, maxSections: 1000 },
    pollIntervalMs: 10,
    backoff: { initialMs: 10, maxMs: 40 },
    decode,
    handlers: recorder.handlers,
    logger: silentLogger(),
    ...options,
  });
  subscribers.push(subscriber);
  subscriber.start();
  return subscriber;
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function frames(texts: string[], format: FrameFormat = 'chunked'): Buffer {
  return Buffer.concat(texts.map((t) => encodeFrame(payload(t), format)));
}

describe('ReporterSubscriber', () => {
  it('waits for a socket created later, then subscribes exactly as ReportClient.subscribe() does', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    const recorder = new Recorder();
    const subscriber = subscribe(path, recorder);
    await sleep(60);
    expect(subscriber.state).toBe('waiting');
    expect(recorder.calls).toEqual([]);

    const reporter = await TestReporter.listen(path);
    await waitFor(() => recorder.of('connected').length === 1, 'connected');
    expect(subscriber.state).toBe('connected');
    const expected = Buffer.from(encodeRequest({ name: 'subscribe_client' }, 'chunked'));
    await waitFor(() => (reporter.connections[0]?.received().length ?? 0) >= expected.length, 'request');
    await sleep(20);
    // Real ReportClient.subscribe() sends these bytes and nothing else on its connection (recorded from pyATS 23.2).
    expect(reporter.connections[0]?.received().toString('hex')).toBe(REAL_SUBSCRIBE_REQUEST);
    expect(expected.toString('hex')).toBe(REAL_SUBSCRIBE_REQUEST);
    const conn = recorder.of('connected')[0]?.conn;
    expect(conn?.path).toBe(path);
    expect(conn?.connectedAt).toBeGreaterThan(0);
  });

  it('then fetches what already ran as pyATS Explorer does, on a connection of its own', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    const reporter = await TestReporter.listen(path);
    const recorder = new Recorder();
    subscribe(path, recorder);
    await waitFor(
      () => reporter.connections.length === 2 && reporter.connections[1]!.requests.length === 3,
      'snapshot',
    );
    const names = reporter.connections.map((c) => c.requests.map((r) => r['name']));
    expect(names).toEqual([['subscribe_client'], ['ping', 'register_client', 'get_testsuite']]);
    const register = reporter.connections[1]!.requests[1]!['data'] as PyDict;
    expect(register).toEqual({ pid: String(process.pid), ppid: String(process.ppid) });
    await waitFor(
      () =>
        reporter.connections[1]!.socket.destroyed || reporter.connections[1]!.socket.readyState === 'closed',
      'snapshot closed',
    );
    expect(recorder.of('frameRejected')).toEqual([]);
  });

  it('stops reading while holdWhile says the sinks are behind, then delivers everything in order', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    // ~6 MB: far more than the socket buffers hold, so a held reader makes the reporter's writes wait.
    const texts = Array.from({ length: 3000 }, (_, i) => `${i}:${'x'.repeat(2000)}`);
    let drained = false;
    await TestReporter.listen(path, {
      onSubscribe: (socket) => {
        if (socket.write(frames(texts))) drained = true;
        else socket.once('drain', () => (drained = true));
      },
    });
    // Held once 100 events are in: backpressure is checked between frames, so exactly 100 get through.
    let holdAt = 100;
    const recorder = new Recorder();
    subscribe(path, recorder, { holdWhile: () => recorder.events().length >= holdAt });
    await waitFor(() => recorder.events().length === holdAt, 'events up to the hold');
    await sleep(100);
    expect(recorder.events()).toHaveLength(holdAt);
    expect(drained).toBe(false);
    holdAt = Infinity;
    await waitFor(() => recorder.events().length === texts.length, 'all events after release', 20_000);
    expect(recorder.events()).toEqual(texts);
    expect(drained).toBe(true);
  });

  it('hands over frames held back by backpressure before the close of a peer that already left', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    const texts = Array.from({ length: 300 }, (_, i) => `e${i}`);
    // Everything in one write, then the reporter closes: the frames are read before they are handed over.
    await TestReporter.listen(path, { onSubscribe: (socket) => socket.end(frames(texts)) });
    let holdAt = 10;
    const recorder = new Recorder();
    subscribe(path, recorder, { holdWhile: () => recorder.events().length >= holdAt });
    await waitFor(() => recorder.events().length === holdAt, 'events up to the hold');
    await sleep(100);
    expect(recorder.of('disconnected')).toEqual([]);
    holdAt = Infinity;
    await waitFor(() => recorder.of('disconnected').length === 1, 'disconnected');
    expect(recorder.summary()).toEqual(['connected', ...texts.map((t) => `event:${t}`), 'disconnected:eof']);
  });

  it('logs and counts a refused subscription, then reconnects', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    const refusal = Object.assign(Object.create(null) as PyDict, {
      exception: 'UnregisteredClientError: Unkown client',
    });
    const reporter = await TestReporter.listen(path, { subscribeReply: refusal });
    const recorder = new Recorder();
    subscribe(path, recorder);
    await waitFor(() => recorder.of('connected').length >= 2, 'a second attempt');
    // `connected` fires on connect; the reporter reads the connection's request a moment later.
    await waitFor(
      () => reporter.connections.length >= 2 && reporter.connections.every((c) => c.requests.length > 0),
      'the requests of both connections',
    );
    expect(recorder.summary().slice(0, 3)).toEqual([
      'connected',
      'frameRejected:subscribe_refused',
      'disconnected:reset',
    ]);
    expect(recorder.of('frameRejected')[0]?.detail).toMatch(/refused subscribe_client: .*Unkown client/);
    // No snapshot is asked of a reporter that refused the subscription.
    expect(reporter.connections.every((c) => c.requests[0]?.['name'] === 'subscribe_client')).toBe(true);
  });

  it('refuses a reply that is not None: the peer does not speak pyATS 23.2', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    await TestReporter.listen(path, { subscribeReply: 'hello' });
    const recorder = new Recorder();
    subscribe(path, recorder);
    await waitFor(() => recorder.of('frameRejected').length >= 1, 'rejection');
    expect(recorder.of('frameRejected')[0]).toMatchObject({ code: 'subscribe_refused' });
    expect(recorder.of('frameRejected')[0]?.detail).toMatch(
      /answered subscribe_client with "hello", not None/,
    );
    expect(recorder.events()).toEqual([]);
  });

  it('follows a symlink into another directory, waiting while it dangles', async () => {
    const [linkDir, realDir] = [await tempDir(), await tempDir()];
    const path = join(linkDir, 'reporter.sock');
    const target = join(realDir, 'r.sock');
    await symlink(target, path);
    const recorder = new Recorder();
    const subscriber = subscribe(path, recorder);
    await sleep(60);
    expect(subscriber.state).toBe('waiting');

    await TestReporter.listen(target, { onSubscribe: (socket) => socket.write(frames(['via symlink'])) });
    await waitFor(() => recorder.events().length === 1, 'event');
    expect(recorder.events()).toEqual(['via symlink']);
    expect(recorder.of('connected')[0]?.conn.path).toBe(path);
  });

  it('hands over one read of many frames a slice per turn, so other callbacks (scrapes) run between', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    // ~6 KB in one write before the end: one read holds all 500 frames.
    const texts = Array.from({ length: 500 }, (_, i) => `e${i}`);
    await TestReporter.listen(path, { onSubscribe: (socket) => socket.end(frames(texts)) });
    const recorder = new Recorder();
    // A turn counter that setImmediate moves on: events seen under one value came in one turn.
    let turn = 0;
    let ticking = false;
    const tick = (): void => {
      turn++;
      if (ticking) setImmediate(tick);
    };
    const perTurn = new Map<number, number>();
    const event = recorder.handlers.event;
    subscribe(path, recorder, {
      handlers: {
        ...recorder.handlers,
        event: (conn, value) => {
          if (!ticking) {
            ticking = true;
            setImmediate(tick);
          }
          perTurn.set(turn, (perTurn.get(turn) ?? 0) + 1);
          event(conn, value);
        },
      },
    });
    await waitFor(() => recorder.of('disconnected').length === 1, 'disconnected');
    ticking = false;
    expect(recorder.summary()).toEqual(['connected', ...texts.map((t) => `event:${t}`), 'disconnected:eof']);
    expect(Math.max(...perTurn.values())).toBe(MAX_FRAMES_PER_TURN);
    expect(perTurn.size).toBeGreaterThanOrEqual(Math.ceil(texts.length / MAX_FRAMES_PER_TURN));
  });

  it('delivers messages split byte by byte, spread over many chunks, and packed many per write', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    const packed = Array.from({ length: 100 }, (_, i) => `packed ${i}`);
    const big = 'z'.repeat(200_000); // four chunks of at most 65,535 bytes
    await TestReporter.listen(path, {
      onSubscribe: (socket) => {
        void (async () => {
          const slow = frames(['first', 'second', 'third']);
          for (let i = 0; i < slow.length; i++) {
            socket.write(slow.subarray(i, i + 1));
            await sleep(1);
          }
          socket.write(frames([big, ...packed]));
        })();
      },
    });
    const recorder = new Recorder();
    subscribe(path, recorder);
    await waitFor(() => recorder.events().length === 104, '104 events');
    expect(recorder.events()).toEqual(['first', 'second', 'third', big, ...packed]);
    expect(recorder.of('frameRejected')).toEqual([]);
  });

  for (const format of FRAME_FORMATS) {
    it(`detects what a ${format} reporter sends`, async () => {
      const path = join(await tempDir(), 'reporter.sock');
      await TestReporter.listen(path, {
        format,
        onSubscribe: (socket) => socket.write(frames(['a', 'bb', 'x'.repeat(300)], format)),
      });
      const recorder = new Recorder();
      subscribe(path, recorder);
      await waitFor(() => recorder.events().length === 3, 'three events');
      expect(recorder.events()).toEqual(['a', 'bb', 'x'.repeat(300)]);
    });
  }

  it('frames its requests as --frame-format says', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    const reporter = await TestReporter.listen(path, { format: '4be' });
    const recorder = new Recorder();
    subscribe(path, recorder, { frameFormat: '4be' });
    await waitFor(() => reporter.connections[0]?.requests.length === 1, 'request');
    expect(reporter.connections[0]?.received().toString('hex')).toBe(
      Buffer.from(encodeRequest({ name: 'subscribe_client' }, '4be')).toString('hex'),
    );
    expect(reporter.connections[0]?.received().subarray(0, 4).toString('hex')).toBe('00000033');
  });

  it('rejects an oversize message, resets the connection and reconnects', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    const reporter = await TestReporter.listen(path, {
      onSubscribe: (socket) => socket.write(frames(['ok', 'y'.repeat(200), 'never delivered'])),
    });
    const recorder = new Recorder();
    subscribe(path, recorder, { maxFrameBytes: 100 });
    await waitFor(() => recorder.of('connected').length >= 2, 'a second connection');
    // `connected` fires on connect; the reporter has the subscription a moment later.
    await waitFor(() => reporter.subscribed().length >= 2, 'a second subscription');
    expect(recorder.summary().slice(0, 5)).toEqual([
      'connected',
      'event:ok',
      'frameRejected:frame_too_large',
      'disconnected:reset',
      'connected',
    ]);
    const [first, second] = recorder.of('connected');
    expect(first?.conn.id).not.toBe(second?.conn.id);
    expect(recorder.of('frameRejected')[0]?.detail).toMatch(/100/);
  });

  it('skips an undecodable message and keeps the connection', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    let server: net.Socket | undefined;
    await TestReporter.listen(path, {
      onSubscribe: (socket) => {
        server = socket;
        socket.write(
          Buffer.concat([frames(['before']), encodeFrame(NOT_A_PICKLE, 'chunked'), frames(['after'])]),
        );
      },
    });
    const recorder = new Recorder();
    subscribe(path, recorder);
    await waitFor(() => recorder.events().length === 2, 'two events');
    server?.write(frames(['later']));
    await waitFor(() => recorder.events().length === 3, 'three events');
    expect(recorder.summary()).toEqual([
      'connected',
      'event:before',
      'frameRejected:decode_error',
      'event:after',
      'event:later',
    ]);
  });

  it('reports a message cut off by the end of the stream', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    const whole = frames(['whole', 'cut off']);
    await TestReporter.listen(path, {
      onSubscribe: (socket) => socket.end(whole.subarray(0, whole.length - 3)),
    });
    const recorder = new Recorder();
    subscribe(path, recorder);
    await waitFor(() => recorder.of('disconnected').length === 1, 'disconnect');
    expect(recorder.summary()).toEqual([
      'connected',
      'event:whole',
      'frameRejected:truncated_frame',
      'disconnected:eof',
    ]);
  });

  it('reconnects with a new connection when the reporter listens again at the same path', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    const first = await TestReporter.listen(path, {
      onSubscribe: (socket) => socket.write(frames(['job 1'])),
    });
    const recorder = new Recorder();
    const subscriber = subscribe(path, recorder);
    await waitFor(() => recorder.events().length === 1, 'first event');

    for (const { socket } of first.connections) socket.end();
    await first.close();
    await waitFor(() => recorder.of('disconnected').length === 1, 'disconnect');
    expect(recorder.of('disconnected')[0]?.reason).toBe('eof');
    await sleep(60);
    expect(['waiting', 'backoff', 'connecting']).toContain(subscriber.state);

    await rm(path, { force: true });
    await TestReporter.listen(path, { onSubscribe: (socket) => socket.write(frames(['job 2'])) });
    await waitFor(() => recorder.events().length === 2, 'second event');
    expect(recorder.summary()).toEqual([
      'connected',
      'event:job 1',
      'disconnected:eof',
      'connected',
      'event:job 2',
    ]);
    const [a, b] = recorder.of('connected');
    expect(a?.conn.id).not.toBe(b?.conn.id);
    const [e1, e2] = recorder.of('event');
    expect(e1?.conn.id).toBe(a?.conn.id);
    expect(e2?.conn.id).toBe(b?.conn.id);
  });

  it('retries a stale socket file nobody listens on', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    // A listener killed with SIGKILL leaves its socket file behind: connecting is refused.
    const child = spawn(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    await new Promise((resolve) => child.on('exit', resolve));
    expect((await stat(path)).isSocket()).toBe(true);

    const recorder = new Recorder();
    const subscriber = subscribe(path, recorder);
    await sleep(100);
    expect(recorder.calls).toEqual([]);
    expect(['waiting', 'backoff', 'connecting']).toContain(subscriber.state);

    await rm(path);
    await TestReporter.listen(path, { onSubscribe: (socket) => socket.write(frames(['fresh'])) });
    await waitFor(() => recorder.events().length === 1, 'event');
    expect(recorder.summary()).toEqual(['connected', 'event:fresh']);
  });

  it('survives handlers that throw', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    await TestReporter.listen(path, {
      onSubscribe: (socket) =>
        socket.write(Buffer.concat([frames(['a']), encodeFrame(NOT_A_PICKLE, 'chunked'), frames(['b'])])),
    });
    const seen: string[] = [];
    const throwing: SubscriberHandlers = {
      connected: () => {
        seen.push('connected');
        throw new Error('connected handler');
      },
      event: (_conn, value) => {
        seen.push(`event:${String(value)}`);
        throw new Error('event handler');
      },
      frameRejected: (_conn, code) => {
        seen.push(`frameRejected:${code}`);
        throw new Error('frameRejected handler');
      },
      disconnected: () => {
        throw new Error('disconnected handler');
      },
    };
    const subscriber = subscribe(path, new Recorder(), { handlers: throwing });
    await waitFor(() => seen.length === 4, 'all calls');
    expect(seen).toEqual(['connected', 'event:a', 'frameRejected:decode_error', 'event:b']);
    expect(subscriber.state).toBe('connected');
  });

  it('stop() closes the connection, reports it, and never reconnects', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    const reporter = await TestReporter.listen(path, {
      onSubscribe: (socket) => socket.write(frames(['one'])),
    });
    const recorder = new Recorder();
    const subscriber = subscribe(path, recorder);
    await waitFor(() => recorder.events().length === 1, 'event');

    const stopped = subscriber.stop();
    expect(subscriber.stop()).toBe(stopped);
    await stopped;
    expect(subscriber.state).toBe('stopped');
    expect(recorder.summary()).toEqual(['connected', 'event:one', 'disconnected:stopped']);
    await sleep(150);
    expect(reporter.subscribed()).toHaveLength(1);
    expect(recorder.calls).toHaveLength(3);
    subscriber.start();
    expect(subscriber.state).toBe('stopped');
  });

  it('stop() while waiting for the socket resolves and stops polling', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    const recorder = new Recorder();
    const subscriber = subscribe(path, recorder);
    await sleep(30);
    await subscriber.stop();
    expect(subscriber.state).toBe('stopped');
    await TestReporter.listen(path);
    await sleep(100);
    expect(recorder.calls).toEqual([]);
  });
});

describe('ReporterSubscriber attaching mid-job', () => {
  // A job as get_testsuite / get_section show it after its first testcase: the suite and task running, a
  // testcase finished, the next one running (shapes as pyATS 23.2 returns them, trimmed).
  const dict = (fields: Record<string, PyValue>): PyDict =>
    Object.assign(Object.create(null) as PyDict, fields);
  const tree = {
    suite: dict({
      type: 'TestSuite',
      id: 'job.1',
      name: 'job',
      seq_num: 1,
      tasks: ['T'],
      starttime: 't1',
      stoptime: null,
    }),
    sections: {
      T: dict({
        type: 'Task',
        id: 'T',
        seq_num: 2,
        sections: ['tc1', 'tc2'],
        starttime: 't2',
        stoptime: null,
        result: null,
      }),
      'T/tc1': dict({
        type: 'Testcase',
        id: 'tc1',
        seq_num: 3,
        sections: [],
        starttime: 't3',
        stoptime: 'done',
        result: 'passed',
        runtime: 1,
      }),
      'T/tc2': dict({
        type: 'Testcase',
        id: 'tc2',
        seq_num: 4,
        sections: [],
        starttime: 't4',
        stoptime: null,
        result: null,
      }),
    },
  };
  const live = (event: string, seq: number, parent: number): PyDict =>
    dict({ event, type: 'Testcase', seq_num: seq, parent_seq_num: parent });

  it('hands over the snapshot first, then live events without the ones it repeats', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    await TestReporter.listen(path, {
      tree,
      // Pushed while the snapshot is fetched: tc2 started (already in the snapshot) and stops; tc3 starts.
      onSubscribe: (socket) =>
        socket.write(
          Buffer.concat(
            [
              live('start_section', 4, 2),
              live('stop_section', 3, 2),
              live('stop_section', 4, 2),
              live('start_section', 5, 2),
            ].map((e) => encodeFrame(pickle(e), 'chunked')),
          ),
        ),
    });
    const recorder = new Recorder();
    subscribe(path, recorder);
    await waitFor(() => recorder.events().length >= 7, 'snapshot and live events');
    await sleep(50);
    const seen = (recorder.events() as PyDict[]).map(
      (e) => `${String(e['event'])}:${String(e['seq_num'])}:${String(e['parent_seq_num'])}`,
    );
    expect(seen).toEqual([
      'start_testsuite:1:undefined',
      'start_task:2:1',
      'start_section:3:2',
      'stop_section:3:2',
      'start_section:4:2',
      // Live: the start of 4 and the stop of 3 were in the snapshot, and are dropped.
      'stop_section:4:2',
      'start_section:5:2',
    ]);
    // A snapshot start of a finished section carries no stop fields; its stop carries them.
    const [, , start3, stop3] = recorder.events() as PyDict[];
    expect(start3?.['stoptime']).toBeUndefined();
    expect(stop3).toMatchObject({ stoptime: 'done', result: 'passed', runtime: 1 });
  });

  it('keeps the live start of a Task the snapshot has only initialized, dropping the repeated init', async () => {
    // Between a Task's init_ and its start_ its pre-task plugins run: the reporter lists it without a start time.
    const initialized = {
      suite: tree.suite,
      sections: {
        T: dict({ type: 'Task', id: 'T', seq_num: 2, sections: [], starttime: null, stoptime: null }),
      },
    };
    const task = (event: string, fields: Record<string, PyValue> = {}): PyDict =>
      dict({ event, type: 'Task', id: 'T', seq_num: 2, parent_seq_num: 1, ...fields });
    const path = join(await tempDir(), 'reporter.sock');
    await TestReporter.listen(path, {
      tree: initialized,
      onSubscribe: (socket) =>
        socket.write(
          Buffer.concat(
            [task('init_task'), task('start_task', { starttime: 't2' }), task('stop_task')].map((e) =>
              encodeFrame(pickle(e), 'chunked'),
            ),
          ),
        ),
    });
    const recorder = new Recorder();
    subscribe(path, recorder);
    await waitFor(() => recorder.events().length >= 4, 'snapshot and live events');
    await sleep(50);
    const seen = (recorder.events() as PyDict[]).map(
      (e) => `${String(e['event'])}:${String(e['seq_num'])}:${String(e['starttime'])}`,
    );
    expect(seen).toEqual([
      'start_testsuite:1:t1',
      'init_task:2:null',
      'start_task:2:t2',
      'stop_task:2:undefined',
    ]);
  });
});
