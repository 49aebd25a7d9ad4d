import { mkdtempSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import type { IngestTarget } from '../../src/ingest/ndjson.js';
import { IngestSocketServer, type IngestSocketOptions } from '../../src/ingest/socket.js';
import { silentLogger } from '../../src/log.js';
import { createCore, until } from './inprocess.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ingest-sock-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function startServer(
  target: IngestTarget,
  options: Partial<IngestSocketOptions> = {},
): Promise<IngestSocketServer> {
  const server = new IngestSocketServer({
    path: join(tempDir(), 'ingest.sock'),
    target,
    maxLineBytes: 64 * 1024,
    idleTimeoutMs: 60_000,
    logger: silentLogger(),
    ...options,
  });
  await server.listen();
  cleanups.push(() => server.close());
  return server;
}

function connect(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path, () => resolve(socket));
    socket.once('error', reject);
  });
}

function write(socket: net.Socket, text: string): Promise<void> {
  return new Promise((resolve, reject) => socket.write(text, (err) => (err ? reject(err) : resolve())));
}

function closeSocket(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    socket.once('close', () => resolve());
    socket.end();
  });
}

/** A small complete job as NDJSON lines: suite → testcase → 2 sections, all passed but one failed. */
function jobLines(jobId: string, startSec: number): string[] {
  const iso = (s: number) => new Date((startSec + s) * 1000).toISOString();
  const sections = [
    { seq: 1, parent: undefined, type: 'TestSuite', id: jobId, start: 0, stop: 10 },
    { seq: 2, parent: 1, type: 'Testcase', id: 'tc', start: 1, stop: 9 },
    { seq: 3, parent: 2, type: 'TestSection', id: 'a', start: 2, stop: 3 },
    { seq: 4, parent: 2, type: 'TestSection', id: 'b', start: 4, stop: 8 },
  ];
  const base = (s: (typeof sections)[number]) => ({
    type: s.type,
    id: s.id,
    seq_num: s.seq,
    ...(s.parent === undefined ? {} : { parent_seq_num: s.parent }),
    starttime: iso(s.start),
  });
  const start = (i: number) => JSON.stringify({ event: `start_x`, ...base(sections[i]!) });
  const stop = (i: number, result: string) =>
    JSON.stringify({
      event: 'stop_x',
      ...base(sections[i]!),
      stoptime: iso(sections[i]!.stop),
      result: { value: result, reason: result === 'failed' ? 'boom' : undefined },
    });
  return [
    start(0),
    start(1),
    start(2),
    stop(2, 'passed'),
    start(3),
    stop(3, 'failed'),
    stop(1, 'failed'),
    stop(0, 'failed'),
  ];
}

describe('IngestSocketServer', () => {
  it('takes many writers at once, each connection its own stream', async () => {
    const core = createCore();
    const server = await startServer(core.pipeline);
    const writers = 8;
    const sockets = await Promise.all(Array.from({ length: writers }, () => connect(server.path)));
    const jobs = sockets.map((_, i) => jobLines(`job_${i}`, 1_700_000_000 + i * 100).join('\n') + '\n');
    // Interleave small pieces from every writer, cutting lines anywhere.
    for (let offset = 0; jobs.some((text) => offset < text.length); offset += 37) {
      await Promise.all(
        sockets.map((socket, i) =>
          offset < jobs[i]!.length ? write(socket, jobs[i]!.slice(offset, offset + 37)) : undefined,
        ),
      );
    }
    await Promise.all(sockets.map((socket) => closeSocket(socket)));
    await until('every span', () => (core.spans.length === writers * 4 ? true : undefined));
    const spans = core.summaries();
    const traces = new Set(spans.map((s) => s.traceId));
    expect(traces.size).toBe(writers);
    expect(spans.filter((s) => s.type === 'TestSection' && s.result === 'failed')).toHaveLength(writers);
    expect(core.received.get('ndjson_socket')).toBe(writers * 8);
    expect(core.rejected.size).toBe(0);
    expect(server.connections).toBe(0);
  });

  it('stops reading while holdWhile says the sinks are behind, then takes every line', async () => {
    const core = createCore();
    let hold = true;
    const server = await startServer(core.pipeline, { holdWhile: () => hold });
    const socket = await connect(server.path);
    // ~4 MB of valid events: more than the socket buffers, so the held server leaves most of it unread.
    const lines = Array.from({ length: 20_000 }, (_, i) =>
      JSON.stringify({ event: 'init_task', type: 'Task', seq_num: i + 2, id: `t${i}`, pad: 'x'.repeat(160) }),
    );
    let written = false;
    socket.write(lines.join('\n') + '\n', () => (written = true));
    await until('the first chunk', () => ((core.received.get('ndjson_socket') ?? 0) > 0 ? true : undefined));
    await new Promise((resolve) => setTimeout(resolve, 20));
    const whileHeld = core.received.get('ndjson_socket') ?? 0;
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(core.received.get('ndjson_socket')).toBe(whileHeld);
    expect(whileHeld).toBeLessThan(lines.length);
    expect(written).toBe(false);
    hold = false;
    await until('every line', () => (core.received.get('ndjson_socket') === lines.length ? true : undefined));
    expect(written).toBe(true);
    expect(core.rejected.size).toBe(0);
    await closeSocket(socket);
  });

  it('ends the stream when the connection closes, abandoning what is still open', async () => {
    const core = createCore();
    const server = await startServer(core.pipeline);
    const socket = await connect(server.path);
    const lines = jobLines('cut_job', 1_700_000_000);
    await write(socket, lines.slice(0, 4).join('\n') + '\n');
    await closeSocket(socket);
    await until('abandoned spans', () => (core.spans.length === 3 ? true : undefined));
    const byType = new Map(core.summaries().map((s) => [s.type, s]));
    expect(byType.get('TestSection')?.result).toBe('passed');
    expect(byType.get('Testcase')?.result).toBe('aborted');
    expect(byType.get('TestSuite')?.result).toBe('aborted');
  });

  it('continues a keyed stream over a reconnect and ends it on an end line', async () => {
    const core = createCore();
    const server = await startServer(core.pipeline);
    const lines = jobLines('keyed_job', 1_700_000_000);
    const hello = JSON.stringify({ control: 'hello', stream: 'lab:keyed_job' });
    const first = await connect(server.path);
    await write(first, [hello, ...lines.slice(0, 4)].join('\n') + '\n');
    await closeSocket(first);
    await until('first connection gone', () => (server.connections === 0 ? true : undefined));
    expect(core.spans).toHaveLength(1);
    expect(server.openStreams).toBe(1);
    const second = await connect(server.path);
    await write(
      second,
      [hello, ...lines.slice(4), '{"control":"ping"}', '{"control":"end"}'].join('\n') + '\n',
    );
    await until('all spans', () => (core.spans.length === 4 ? true : undefined));
    await until('stream ended', () => (server.openStreams === 0 ? true : undefined));
    await closeSocket(second);
    const spans = core.summaries();
    expect(new Set(spans.map((s) => s.traceId)).size).toBe(1);
    expect(spans.map((s) => s.result)).toEqual(['failed', 'failed', 'passed', 'failed']);
    expect(core.rejected.size).toBe(0);
  });

  it("puts a keyed stream's job into the CI trace its hello's env names, also from a later hello", async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const spanId = '00f067aa0ba902b7';
    const env = { TRACEPARENT: `00-${traceId}-${spanId}-01`, JENKINS_URL: 'https://ci/', JOB_NAME: 'lab' };
    const core = createCore();
    const server = await startServer(core.pipeline);
    // From the first line (the plugin has its environment at once).
    const first = await connect(server.path);
    const atOnce = [
      JSON.stringify({ control: 'hello', stream: 'lab:a', env }),
      ...jobLines('job_a', 1_700_000_000),
    ];
    await write(first, atOnce.join('\n') + '\n{"control":"end"}\n');
    // From a second hello before the first section stops (the script finds env.txt a moment late); an env
    // that is not a map of strings is counted and the job keeps a trace of its own.
    const late = jobLines('job_b', 1_700_000_100);
    const second = await connect(server.path);
    await write(
      second,
      [
        JSON.stringify({ control: 'hello', stream: 'lab:b' }),
        ...late.slice(0, 3),
        JSON.stringify({ control: 'hello', stream: 'lab:b', env }),
        ...late.slice(3),
        '{"control":"end"}',
      ].join('\n') + '\n',
    );
    const third = await connect(server.path);
    await write(
      third,
      [
        JSON.stringify({ control: 'hello', stream: 'lab:c', env: ['TRACEPARENT'] }),
        ...jobLines('job_c', 1_700_000_200),
      ].join('\n') + '\n',
    );
    await closeSocket(third);
    await closeSocket(second);
    await closeSocket(first);
    await until('all spans', () => (core.spans.length === 12 ? true : undefined));
    const byJob = (job: string) =>
      core.spans
        .filter((span) => span.attributes['pyats.job.id'] === job)
        .map((span) => ({
          traceId: span.spanContext().traceId,
          parentSpanId: span.parentSpanContext?.spanId,
          type: span.attributes['pyats.section.type'],
        }));
    for (const job of ['job_a', 'job_b']) {
      const spans = byJob(job);
      expect(spans, job).toHaveLength(4);
      expect(new Set(spans.map((s) => s.traceId)), job).toEqual(new Set([traceId]));
      expect(spans.find((s) => s.type === 'TestSuite')?.parentSpanId, job).toBe(spanId);
    }
    const other = byJob('job_c');
    expect(other).toHaveLength(4);
    expect(other[0]?.traceId).not.toBe(traceId);
    expect(other.find((s) => s.type === 'TestSuite')?.parentSpanId).toBeUndefined();
    expect(core.rejected.get('bad_control')).toBe(1);
  });

  it('rejects a too-long line and bad JSON, and goes on with the connection', async () => {
    const core = createCore();
    const server = await startServer(core.pipeline, { maxLineBytes: 300 });
    const socket = await connect(server.path);
    const lines = jobLines('long_job', 1_700_000_000);
    await write(socket, [lines[0], 'x'.repeat(1000), '{bad', ...lines.slice(1)].join('\n') + '\n');
    await closeSocket(socket);
    await until('spans', () => (core.spans.length === 4 ? true : undefined));
    expect(Object.fromEntries(core.rejected)).toEqual({ line_too_long: 1, bad_json: 1 });
  });

  it('takes a last line without a newline when the writer closes', async () => {
    const core = createCore();
    const server = await startServer(core.pipeline);
    const socket = await connect(server.path);
    await write(socket, jobLines('tail_job', 1_700_000_000).join('\n'));
    await closeSocket(socket);
    await until('spans', () => (core.spans.length === 4 ? true : undefined));
    expect(core.summaries().every((s) => s.result !== 'aborted')).toBe(true);
  });

  it('refuses a socket another process listens on, and a path that is not a socket', async () => {
    const dir = tempDir();
    const path = join(dir, 'ingest.sock');
    const live = net.createServer();
    await new Promise<void>((resolve) => live.listen(path, resolve));
    cleanups.push(() => new Promise<void>((resolve) => live.close(() => resolve())));
    const options = {
      target: createCore().pipeline,
      maxLineBytes: 1024,
      idleTimeoutMs: 0,
      logger: silentLogger(),
    };
    await expect(new IngestSocketServer({ path, ...options }).listen()).rejects.toMatchObject({
      code: 'socket_in_use',
    });
    const regular = join(dir, 'file');
    writeFileSync(regular, 'not a socket');
    await expect(new IngestSocketServer({ path: regular, ...options }).listen()).rejects.toMatchObject({
      code: 'not_a_socket',
    });
  });

  it('replaces a socket file nobody listens on', async () => {
    const dir = tempDir();
    const path = join(dir, 'ingest.sock');
    // A process that bound the socket and exited leaves the file behind.
    const made = spawnSync('python3', [
      '-c',
      'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)',
      path,
    ]);
    expect(made.status).toBe(0);
    expect(statSync(path).isSocket()).toBe(true);
    const core = createCore();
    const server = new IngestSocketServer({
      path,
      target: core.pipeline,
      maxLineBytes: 1024,
      idleTimeoutMs: 0,
      logger: silentLogger(),
    });
    await server.listen();
    cleanups.push(() => server.close());
    const socket = await connect(path);
    await closeSocket(socket);
  });

  it('sets the socket mode, and on close ends unkeyed streams and removes the file', async () => {
    const core = createCore();
    const server = await startServer(core.pipeline, { mode: 0o600 });
    const path = server.path;
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const socket = await connect(path);
    socket.on('error', () => undefined);
    await write(socket, jobLines('open_job', 1_700_000_000).slice(0, 2).join('\n') + '\n');
    await until('events read', () => (core.received.get('ndjson_socket') === 2 ? true : undefined));
    await server.close();
    expect(existsSync(path)).toBe(false);
    expect(core.summaries().map((s) => s.result)).toEqual(['aborted', 'aborted']);
  });
});
