import { gzipSync } from 'node:zlib';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { normalize } from '../../src/events/normalize.js';
import { resolveZone } from '../../src/events/timezone.js';
import { listen, type ListeningServer } from '../../src/http/server.js';
import { createHttpIngest, type HttpIngest, type HttpIngestOptions } from '../../src/ingest/http.js';
import type { IngestTarget } from '../../src/ingest/ndjson.js';
import { silentLogger } from '../../src/log.js';
import { createCore, until } from './inprocess.js';

const NORMALIZE = { zone: resolveZone('UTC'), maxStringLength: 4096 };

interface Call {
  op: 'ingest' | 'reject' | 'end' | 'context';
  stream: string;
  detail?: unknown;
}

function recorder(): IngestTarget & { calls: Call[] } {
  const calls: Call[] = [];
  return {
    calls,
    // Refuses what the pipeline's normalizer refuses, as the pipeline does.
    ingest: (stream, _source, raw) => {
      calls.push({ op: 'ingest', stream, detail: raw });
      const outcome = normalize(raw, NORMALIZE);
      return outcome.ok ? undefined : outcome;
    },
    reject: (stream, _source, reason) => calls.push({ op: 'reject', stream, detail: reason }),
    endStream: (stream) => calls.push({ op: 'end', stream }),
    setStreamContext: (stream, context) => calls.push({ op: 'context', stream, detail: context }),
  };
}

const servers: { server: ListeningServer; ingest: HttpIngest }[] = [];
afterEach(async () => {
  for (const { server, ingest } of servers.splice(0)) {
    ingest.close();
    await server.close();
  }
});

async function serve(
  target: IngestTarget,
  options: Partial<HttpIngestOptions> = {},
): Promise<{ url: string; ingest: HttpIngest }> {
  const ingest = createHttpIngest({
    target,
    maxBodyBytes: 1024 * 1024,
    idleTimeoutMs: 60_000,
    logger: silentLogger(),
    ...options,
  });
  const app = express();
  app.use(ingest.router);
  app.use((_req, res) => {
    res.status(404).send('not found');
  });
  const server = await listen(app, { host: '127.0.0.1', port: 0 });
  servers.push({ server, ingest });
  return { url: `http://127.0.0.1:${server.address.port}/api/v1/events`, ingest };
}

function event(seq: number, phase: 'start' | 'stop' = 'start', extra: Record<string, unknown> = {}) {
  return {
    event: `${phase}_section`,
    type: 'TestSection',
    seq_num: seq,
    starttime: '2024-05-01T12:00:00+02:00',
    ...(phase === 'stop' ? { stoptime: '2024-05-01T12:00:01+02:00', result: { value: 'passed' } } : {}),
    ...extra,
  };
}

function ndjson(...lines: unknown[]): string {
  return lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n';
}

async function post(url: string, body: string | Buffer, headers: Record<string, string> = {}) {
  const response = await fetch(url, { method: 'POST', body, headers });
  const text = await response.text();
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, json, text };
}

describe('POST /api/v1/events', () => {
  it('feeds NDJSON lines in order and reports rejected lines by number and reason', async () => {
    const target = recorder();
    const { url } = await serve(target);
    const body = ndjson(event(1), '{"event": nope', '', { event: 'start_section' }, event(1, 'stop'), '17');
    const { status, json } = await post(url, body, { 'content-type': 'application/x-ndjson' });
    expect(status).toBe(200);
    expect(json).toMatchObject({ accepted: 2, rejected_total: 3, stream: null, ended: true });
    expect(json?.['rejected']).toEqual([
      { line: 2, reason: 'bad_json', detail: expect.any(String) },
      { line: 4, reason: 'bad_seq_num', detail: 'no "seq_num" key' },
      { line: 6, reason: 'not_a_dict', detail: expect.any(String) },
    ]);
    // Every line reaches the pipeline exactly once: events through ingest (which counts and rejects the
    // ones the normalizer refuses), unparseable lines through reject; then the request's stream ends.
    expect(target.calls.map((c) => c.op)).toEqual(['ingest', 'reject', 'ingest', 'ingest', 'ingest', 'end']);
    expect(new Set(target.calls.map((c) => c.stream)).size).toBe(1);
    expect(target.calls[0]?.stream).toMatch(/^ndjson-http:/);
  });

  it('takes a JSON array and reports rejected elements by index', async () => {
    const target = recorder();
    const { url } = await serve(target);
    const { status, json } = await post(url, JSON.stringify([event(1), { seq_num: 2 }, event(1, 'stop')]), {
      'content-type': 'application/json',
    });
    expect(status).toBe(200);
    expect(json).toMatchObject({
      accepted: 2,
      rejected: [{ index: 1, reason: 'missing_event', detail: expect.any(String) }],
    });
    const bad = await post(url, '[{"event":', { 'content-type': 'application/json' });
    expect(bad.status).toBe(400);
    expect(bad.json).toMatchObject({ error: 'bad_json' });
  });

  it('takes one pretty-printed JSON object under application/json', async () => {
    const target = recorder();
    const { url } = await serve(target);
    const { json } = await post(url, JSON.stringify(event(3), null, 2), {
      'content-type': 'application/json',
    });
    expect(json).toMatchObject({ accepted: 1, rejected_total: 0 });
  });

  it('requires the bearer token when one is set', async () => {
    const target = recorder();
    const { url } = await serve(target, { token: 's3cret-token' });
    const none = await post(url, ndjson(event(1)));
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer/);
    const wrong = await post(url, ndjson(event(1)), { authorization: 'Bearer s3cret-tokem' });
    expect(wrong.status).toBe(401);
    const short = await post(url, ndjson(event(1)), { authorization: 'Bearer s' });
    expect(short.status).toBe(401);
    expect(target.calls).toEqual([]);
    const right = await post(url, ndjson(event(1)), { authorization: 'bearer s3cret-token' });
    expect(right.status).toBe(200);
    expect(right.json).toMatchObject({ accepted: 1 });
  });

  it('refuses bodies over the limit with 413, counting the decoded size of a gzip body', async () => {
    const target = recorder();
    const { url } = await serve(target, { maxBodyBytes: 2000 });
    const big = ndjson(...Array.from({ length: 40 }, (_, i) => event(i + 1)));
    expect(Buffer.byteLength(big)).toBeGreaterThan(2000);
    const plain = await post(url, big);
    expect(plain.status).toBe(413);
    expect(plain.json).toMatchObject({ error: 'body_too_large' });
    const zipped = gzipSync(big);
    expect(zipped.length).toBeLessThan(2000);
    const gz = await post(url, zipped, { 'content-encoding': 'gzip' });
    expect(gz.status).toBe(413);
    const small = ndjson(event(1), event(2));
    const ok = await post(url, gzipSync(small), { 'content-encoding': 'gzip' });
    expect(ok.json).toMatchObject({ accepted: 2 });
    expect(target.calls.filter((c) => c.op === 'ingest')).toHaveLength(2);
  });

  it('keeps a keyed stream open across requests until the client ends it', async () => {
    const target = recorder();
    const { url, ingest } = await serve(target);
    const first = await post(url, ndjson(event(1)), { 'x-pyats-stream': 'lab1:job-7' });
    expect(first.json).toMatchObject({ accepted: 1, stream: 'lab1:job-7', ended: false });
    const second = await post(`${url}?stream=lab1%3Ajob-7`, ndjson(event(2)));
    expect(second.json).toMatchObject({ accepted: 1, stream: 'lab1:job-7', ended: false });
    expect(ingest.openStreams()).toBe(1);
    expect(target.calls.map((c) => c.op)).toEqual(['ingest', 'ingest']);
    const last = await post(url, ndjson(event(2, 'stop')), {
      'x-pyats-stream': 'lab1:job-7',
      'x-pyats-stream-end': 'true',
    });
    expect(last.json).toMatchObject({ accepted: 1, ended: true });
    expect(target.calls.map((c) => c.op)).toEqual(['ingest', 'ingest', 'ingest', 'end']);
    expect(new Set(target.calls.map((c) => c.stream))).toEqual(new Set(['ndjson-http:key:lab1:job-7']));
    expect(ingest.openStreams()).toBe(0);
  });

  it('ends a keyed stream that has been idle for the timeout', async () => {
    const target = recorder();
    const { url } = await serve(target, { idleTimeoutMs: 150 });
    await post(url, ndjson(event(1)), { 'x-pyats-stream': 'idle-job' });
    await until('the idle stream to end', () => target.calls.find((c) => c.op === 'end'));
    expect(target.calls.at(-1)).toEqual({ op: 'end', stream: 'ndjson-http:key:idle-job' });
  });

  it('takes the stream from a hello line and ends it on an end line', async () => {
    const target = recorder();
    const { url } = await serve(target);
    const body = ndjson(
      { control: 'hello', stream: 'from-body' },
      event(1),
      { control: 'hello', stream: 'too-late' },
      { control: 'end' },
      event(1),
    );
    const { json } = await post(url, body);
    expect(json).toMatchObject({
      accepted: 2,
      stream: 'from-body',
      ended: false,
      rejected: [{ line: 3, reason: 'bad_control', detail: 'hello must come before the first event' }],
    });
    const ops = target.calls.map((c) => `${c.op} ${c.stream}`);
    expect(ops).toEqual([
      'ingest ndjson-http:key:from-body',
      'reject ndjson-http:key:from-body',
      'end ndjson-http:key:from-body',
      'ingest ndjson-http:key:from-body',
    ]);
  });

  it('starts a new one-request stream after an end line in an unkeyed body', async () => {
    const target = recorder();
    const { url } = await serve(target);
    await post(url, ndjson(event(1), { control: 'end' }, event(1)));
    const [a, end1, b, end2] = target.calls;
    expect([a?.op, end1?.op, b?.op, end2?.op]).toEqual(['ingest', 'end', 'ingest', 'end']);
    expect(end1?.stream).toBe(a?.stream);
    expect(b?.stream).not.toBe(a?.stream);
    expect(end2?.stream).toBe(b?.stream);
  });

  it('answers 400 for a bad stream key and 405 for other methods', async () => {
    const { url } = await serve(recorder());
    const bad = await post(url, ndjson(event(1)), { 'x-pyats-stream': 'x'.repeat(300) });
    expect(bad.status).toBe(400);
    expect(bad.json).toMatchObject({ error: 'bad_stream_key' });
    const get = await fetch(url);
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
  });

  it('lists at most 100 rejected lines but counts them all', async () => {
    const { url } = await serve(recorder());
    const { json } = await post(url, ndjson(...Array.from({ length: 150 }, () => '{')));
    expect(json?.['rejected_total']).toBe(150);
    expect(json?.['rejected']).toHaveLength(100);
  });

  it("reports the tracker's refusals too, by line", async () => {
    const core = createCore({ maxOpenSections: 2 });
    const { url } = await serve(core.pipeline);
    const start = (seq: number) => ({
      event: 'start_section',
      type: 'TestSection',
      seq_num: seq,
      starttime: '2024-05-01T10:00:00Z',
    });
    const { json } = await post(url, ndjson(start(1), start(2), start(3)));
    expect(json).toMatchObject({
      accepted: 2,
      rejected: [{ line: 3, reason: 'too_many_open_sections', detail: expect.stringMatching(/seq_num 3/) }],
    });
    expect(core.rejected.get('too_many_open_sections')).toBe(1);
  });

  it('feeds a job posted over several requests into one trace', async () => {
    const core = createCore();
    const { url } = await serve(core.pipeline);
    const suite = { type: 'TestSuite', id: 'http_job', seq_num: 1 };
    const times = { starttime: '2024-05-01T10:00:00Z' };
    const stop = { ...times, stoptime: '2024-05-01T10:00:05Z', result: { value: 'passed' } };
    const headers = { 'x-pyats-stream': 'http_job-run' };
    await post(url, ndjson({ event: 'start_testsuite', ...suite, ...times }), headers);
    await post(
      url,
      ndjson({
        event: 'start_testcase',
        type: 'Testcase',
        id: 'tc',
        seq_num: 2,
        parent_seq_num: 1,
        ...times,
      }),
      headers,
    );
    await post(
      url,
      ndjson(
        { event: 'stop_testcase', type: 'Testcase', id: 'tc', seq_num: 2, parent_seq_num: 1, ...stop },
        { event: 'stop_testsuite', ...suite, ...stop },
      ),
      { ...headers, 'x-pyats-stream-end': '1' },
    );
    const spans = core.summaries();
    expect(spans).toHaveLength(2);
    expect(new Set(spans.map((s) => s.traceId)).size).toBe(1);
    expect(spans[1]?.parentSpanId).toBe(spans[0]?.spanId);
    expect(core.received.get('ndjson_http')).toBe(4);
  });

  it("joins the CI trace a hello's env names, sent in a later request before the job's first stop", async () => {
    const traceId = '0af7651916cd43dd8448eb211c80319c';
    const spanId = 'b7ad6b7169203331';
    const core = createCore();
    const { url } = await serve(core.pipeline);
    const suite = { type: 'TestSuite', id: 'ci_job', seq_num: 1 };
    const times = { starttime: '2024-05-01T10:00:00Z' };
    const stop = { ...times, stoptime: '2024-05-01T10:00:05Z', result: { value: 'passed' } };
    const headers = { 'x-pyats-stream': 'ci_job-run' };
    await post(url, ndjson({ event: 'start_testsuite', ...suite, ...times }), headers);
    const env = {
      TRACEPARENT: `00-${traceId}-${spanId}-01`,
      GITHUB_ACTIONS: 'true',
      GITHUB_RUN_ID: '99',
      GITHUB_REPOSITORY: 'lab/tests',
    };
    const late = await post(
      url,
      ndjson({ control: 'hello', stream: 'ci_job-run', env }, { event: 'stop_testsuite', ...suite, ...stop }),
      { ...headers, 'x-pyats-stream-end': '1' },
    );
    expect(late.json).toMatchObject({ accepted: 1, rejected: [] });
    const [root] = core.summaries();
    expect(root).toMatchObject({ traceId, parentSpanId: spanId });
    expect(core.spans[0]?.attributes).toMatchObject({
      'cicd.pipeline.run.id': '99',
      'cicd.pipeline.task.run.url.full': 'https://github.com/lab/tests/actions/runs/99',
    });
    // An env that is not an object of strings is refused by line, and counted.
    const bad = await post(url, ndjson({ control: 'hello', stream: 'other', env: { TRACEPARENT: 1 } }));
    expect(bad.json).toMatchObject({
      rejected: [
        { line: 1, reason: 'bad_control', detail: 'hello "env" ignored: TRACEPARENT is not a string' },
      ],
    });
    expect(core.rejected.get('bad_control')).toBe(1);
  });
});
