import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat, symlink } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { HEADER_FORMATS, encodeFrame, formatHeader, parseHeaderFormat } from '../../src/reporter/framing.js';
import {
  ReporterSubscriber,
  type ConnectionInfo,
  type DisconnectReason,
  type ReporterSubscriberOptions,
  type SubscriberHandlers,
} from '../../src/reporter/subscriber.js';

const h = parseHeaderFormat;
const REQUEST = Uint8Array.from([0x80, 0x02, 0x7d, 0x2e]); // a pickled {} stands in for the subscribe request

/** A pickle-shaped payload carrying `text` (not a real pickle: the test decoder below reads it). */
function payload(text: string): Uint8Array {
  const body = new TextEncoder().encode(text);
  const out = new Uint8Array(body.length + 3);
  out.set([0x80, 0x04]);
  out.set(body, 2);
  out[out.length - 1] = 0x2e;
  return out;
}

function decode(frame: Uint8Array): unknown {
  if (frame[0] !== 0x80 || frame[frame.length - 1] !== 0x2e) throw new Error('not a test payload');
  return new TextDecoder().decode(frame.subarray(2, frame.length - 1));
}

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

/** Stands in for a pyATS reporter server: listens on a Unix socket and records what each client sends. */
class TestReporter {
  readonly connections: { socket: net.Socket; received: () => Buffer }[] = [];

  private constructor(private readonly server: net.Server) {}

  static async listen(
    path: string,
    onConnection: (socket: net.Socket) => void = () => {},
  ): Promise<TestReporter> {
    const server = net.createServer();
    const reporter = new TestReporter(server);
    server.on('connection', (socket) => {
      const chunks: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      socket.on('error', () => {});
      reporter.connections.push({ socket, received: () => Buffer.concat(chunks) });
      onConnection(socket);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    reporters.push(reporter);
    return reporter;
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
    header: 'auto',
    requestHeader: h('4be'),
    subscribeRequest: REQUEST,
    maxFrameBytes: 1024 * 1024,
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

function frames(texts: string[], format = h('4be')): Buffer {
  return Buffer.concat(texts.map((t) => encodeFrame(payload(t), format)));
}

describe('ReporterSubscriber', () => {
  it('waits for a socket created later and sends the subscribe request frame exactly', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    const recorder = new Recorder();
    const subscriber = subscribe(path, recorder, { requestHeader: h('8le') });
    await sleep(60);
    expect(subscriber.state).toBe('waiting');
    expect(recorder.calls).toEqual([]);

    const reporter = await TestReporter.listen(path);
    await waitFor(() => recorder.of('connected').length === 1, 'connected');
    expect(subscriber.state).toBe('connected');
    const expected = Buffer.from(encodeFrame(REQUEST, h('8le')));
    await waitFor(() => (reporter.connections[0]?.received().length ?? 0) >= expected.length, 'request');
    await sleep(20);
    expect(reporter.connections[0]?.received().toString('hex')).toBe(expected.toString('hex'));
    const conn = recorder.of('connected')[0]?.conn;
    expect(conn?.path).toBe(path);
    expect(conn?.connectedAt).toBeGreaterThan(0);
  });

  it('stops reading while holdWhile says the sinks are behind, then delivers everything in order', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    // ~6 MB: far more than the socket buffers hold, so a held reader makes the reporter's writes wait.
    const texts = Array.from({ length: 3000 }, (_, i) => `${i}:${'x'.repeat(2000)}`);
    let drained = false;
    await TestReporter.listen(path, (socket) => {
      if (socket.write(frames(texts))) drained = true;
      else socket.once('drain', () => (drained = true));
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
    await TestReporter.listen(path, (socket) => socket.end(frames(texts)));
    let holdAt = 10;
    const recorder = new Recorder();
    subscribe(path, recorder, {
      holdWhile: () => recorder.events().length >= holdAt,
      subscribeRequest: null,
    });
    await waitFor(() => recorder.events().length === holdAt, 'events up to the hold');
    await sleep(100);
    expect(recorder.of('disconnected')).toEqual([]);
    holdAt = Infinity;
    await waitFor(() => recorder.of('disconnected').length === 1, 'disconnected');
    expect(recorder.summary()).toEqual(['connected', ...texts.map((t) => `event:${t}`), 'disconnected:eof']);
  });

  it('sends no request to a reporter that streams unprompted (it would not need one)', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    const reporter = await TestReporter.listen(path, (socket) => socket.write(frames(['a', 'b'])));
    const recorder = new Recorder();
    subscribe(path, recorder);
    await waitFor(() => recorder.of('event').length === 2, 'events');
    await sleep(150);
    expect(reporter.connections[0]?.received().length).toBe(0);
  });

  it('sends nothing when there is no subscribe request', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    const reporter = await TestReporter.listen(path, (socket) => socket.write(frames(['hello'])));
    const recorder = new Recorder();
    subscribe(path, recorder, { subscribeRequest: null });
    await waitFor(() => recorder.events().length === 1, 'event');
    await sleep(20);
    expect(reporter.connections[0]?.received().length).toBe(0);
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

    await TestReporter.listen(target, (socket) => socket.write(frames(['via symlink'])));
    await waitFor(() => recorder.events().length === 1, 'event');
    expect(recorder.events()).toEqual(['via symlink']);
    expect(recorder.of('connected')[0]?.conn.path).toBe(path);
  });

  it('delivers frames split byte by byte and packed many per write', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    const packed = Array.from({ length: 100 }, (_, i) => `packed ${i}`);
    await TestReporter.listen(path, (socket) => {
      void (async () => {
        const slow = frames(['first', 'second', 'third'], h('8be'));
        for (let i = 0; i < slow.length; i++) {
          socket.write(slow.subarray(i, i + 1));
          await sleep(1);
        }
        socket.write(frames(packed, h('8be')));
      })();
    });
    const recorder = new Recorder();
    subscribe(path, recorder);
    await waitFor(() => recorder.events().length === 103, '103 events');
    expect(recorder.events()).toEqual(['first', 'second', 'third', ...packed]);
    expect(recorder.of('frameRejected')).toEqual([]);
  });

  for (const format of HEADER_FORMATS) {
    it(`detects the ${formatHeader(format)} header`, async () => {
      const path = join(await tempDir(), 'reporter.sock');
      await TestReporter.listen(path, (socket) => socket.write(frames(['a', 'bb', 'x'.repeat(300)], format)));
      const recorder = new Recorder();
      subscribe(path, recorder);
      await waitFor(() => recorder.events().length === 3, 'three events');
      expect(recorder.events()).toEqual(['a', 'bb', 'x'.repeat(300)]);
    });
  }

  it('uses a forced header as given', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    await TestReporter.listen(path, (socket) => socket.write(frames(['forced'], h('4le'))));
    const recorder = new Recorder();
    subscribe(path, recorder, { header: h('4le') });
    await waitFor(() => recorder.events().length === 1, 'event');
    expect(recorder.events()).toEqual(['forced']);

    // A forced header that does not match the stream is not second-guessed: the size reads as too large.
    const other = join(await tempDir(), 'reporter.sock');
    await TestReporter.listen(other, (socket) => socket.write(frames(['big-endian'], h('4be'))));
    const mismatched = new Recorder();
    subscribe(other, mismatched, { header: h('4le') });
    await waitFor(() => mismatched.of('frameRejected').length >= 1, 'rejection');
    expect(mismatched.of('frameRejected')[0]?.code).toBe('frame_too_large');
  });

  it('rejects an oversize frame, resets the connection and reconnects', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    const reporter = await TestReporter.listen(path, (socket) => {
      socket.write(frames(['ok', 'y'.repeat(200), 'never delivered']));
    });
    const recorder = new Recorder();
    subscribe(path, recorder, { maxFrameBytes: 100 });
    await waitFor(() => recorder.of('connected').length >= 2, 'a second connection');
    expect(reporter.connections.length).toBeGreaterThanOrEqual(2);
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

  it('skips an undecodable frame and keeps the connection', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    let server: net.Socket | undefined;
    await TestReporter.listen(path, (socket) => {
      server = socket;
      socket.write(
        Buffer.concat([frames(['before']), encodeFrame(NOT_A_PICKLE, h('4be')), frames(['after'])]),
      );
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
    expect(recorder.of('frameRejected')[0]?.detail).toBe('not a test payload');
  });

  it('reports a frame cut off by the end of the stream', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    const whole = frames(['whole', 'cut off']);
    await TestReporter.listen(path, (socket) => socket.end(whole.subarray(0, whole.length - 3)));
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
    const first = await TestReporter.listen(path, (socket) => socket.write(frames(['job 1'])));
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
    await TestReporter.listen(path, (socket) => socket.write(frames(['job 2'])));
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
    await TestReporter.listen(path, (socket) => socket.write(frames(['fresh'])));
    await waitFor(() => recorder.events().length === 1, 'event');
    expect(recorder.summary()).toEqual(['connected', 'event:fresh']);
  });

  it('survives handlers that throw', async () => {
    const path = join(await tempDir(), 'reporter.sock');
    await TestReporter.listen(path, (socket) =>
      socket.write(Buffer.concat([frames(['a']), encodeFrame(NOT_A_PICKLE, h('4be')), frames(['b'])])),
    );
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
    const reporter = await TestReporter.listen(path, (socket) => socket.write(frames(['one'])));
    const recorder = new Recorder();
    const subscriber = subscribe(path, recorder);
    await waitFor(() => recorder.events().length === 1, 'event');

    const stopped = subscriber.stop();
    expect(subscriber.stop()).toBe(stopped);
    await stopped;
    expect(subscriber.state).toBe('stopped');
    expect(recorder.summary()).toEqual(['connected', 'event:one', 'disconnected:stopped']);
    await sleep(150);
    expect(reporter.connections).toHaveLength(1);
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
