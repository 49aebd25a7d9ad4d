// The HTTP server really listening on 127.0.0.1:0: both exposition formats, health and readiness, errors,
// HEAD, and a close() that does not wait for keep-alive or stuck connections.
import http from 'node:http';
import { Writable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { pino } from 'pino';
import { Gauge, Registry, type RegistryContentType } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createApp,
  listen,
  negotiateFormat,
  renderMetrics,
  type ListeningServer,
  type Readiness,
} from '../../src/http/server.js';
import { silentLogger, type Logger } from '../../src/log.js';
import { ExporterHealth, registerProcessMetrics } from '../../src/telemetry/health.js';
import { MetricsSink } from '../../src/telemetry/metrics.js';
import { PROCESS_METRICS_LINT, itPromtool, PROMTOOL_SKIP_NOTE, promtoolCheck } from '../helpers/promtool.js';
import { request } from '../helpers/http.js';

const PROMETHEUS_242_ACCEPT =
  'application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,' +
  'text/plain;version=0.0.4;q=0.5,*/*;q=0.1';

/** A registry with the app's real metric sets and a few records in them. */
function populatedRegistry(): Registry {
  const registry = new Registry();
  const sink = new MetricsSink({ registry });
  const job = { jobId: 'nightly', jobName: 'nightly', runId: 'nightly@1', traceId: '0'.repeat(32) };
  sink.sectionStarted({ job, seqNum: 1, type: 'Testcase', task: 'task-1' });
  sink.sectionFinished({
    job,
    seqNum: 2,
    spanId: '0000000000000002',
    type: 'Testcase',
    id: 'tc_a',
    task: 'task-1',
    startTime: 0,
    stopTime: 1500,
    runtime: 1.5,
    result: { value: 'failed' },
    incomplete: false,
    orphan: false,
    started: false,
  });
  const health = new ExporterHealth({ registry, version: '0.1.0' });
  health.eventReceived('reporter_socket');
  return registry;
}

const servers: ListeningServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function start(
  registry: Registry,
  options: { ready?: () => Readiness; logger?: Logger; closeGraceMs?: number } = {},
): Promise<ListeningServer> {
  const app = createApp({
    registry,
    ready: options.ready ?? (() => ({ ready: true })),
    logger: options.logger ?? silentLogger(),
  });
  const server = await listen(app, { host: '127.0.0.1', port: 0, closeGraceMs: options.closeGraceMs });
  servers.push(server);
  return server;
}

/** Family names declared by `# TYPE` lines. */
function declaredFamilies(exposition: string): string[] {
  return exposition
    .split('\n')
    .filter((line) => line.startsWith('# TYPE '))
    .map((line) => line.split(' ')[2] ?? '');
}

describe('negotiateFormat', () => {
  it.each([
    [undefined, 'prometheus'],
    ['', 'prometheus'],
    [PROMETHEUS_242_ACCEPT, 'openmetrics'],
    ['application/openmetrics-text;version=1.0.0;q=0.8,text/plain;version=0.0.4;q=0.5', 'openmetrics'],
    ['application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5,*/*;q=0.1', 'openmetrics'],
    ['application/openmetrics-text', 'openmetrics'],
    ['Application/OpenMetrics-Text; Version="1.0.0"', 'openmetrics'],
    ['text/plain;version=0.0.4', 'prometheus'],
    ['text/plain, application/openmetrics-text', 'prometheus'],
    ['text/plain;q=0.5, application/openmetrics-text', 'openmetrics'],
    ['application/openmetrics-text;q=0, text/plain', 'prometheus'],
    ['application/openmetrics-text;version=2.0.0, text/plain;q=0.1', 'prometheus'],
    ['application/json', 'prometheus'],
    ['*/*', 'prometheus'],
  ] as const)('%j → %s', (accept, format) => {
    expect(negotiateFormat(accept)).toBe(format);
  });
});

describe('HTTP server', () => {
  it('serves Prometheus text format 0.0.4 by default', async () => {
    const server = await start(populatedRegistry());
    const reply = await request(server.address.port, '/metrics');
    expect(reply.status).toBe(200);
    expect(reply.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(reply.headers.vary).toBe('Accept, Accept-Encoding');
    expect(reply.headers['content-encoding']).toBeUndefined();
    expect(reply.body).toContain('# TYPE pyats_section_results_total counter\n');
    expect(reply.body).toContain(
      'pyats_section_results_total{job="nightly",task="task-1",type="Testcase",result="failed"} 1\n',
    );
    expect(reply.body).toContain('pyats_sections_in_progress{job="nightly",type="Testcase"} 1\n');
    expect(reply.body).not.toContain('# EOF');
  });

  it('serves OpenMetrics 1.0.0 when the scraper asks for it', async () => {
    const server = await start(populatedRegistry());
    const reply = await request(server.address.port, '/metrics', {
      headers: { accept: PROMETHEUS_242_ACCEPT },
    });
    expect(reply.status).toBe(200);
    expect(reply.headers['content-type']).toBe('application/openmetrics-text; version=1.0.0; charset=utf-8');
    expect(reply.body.endsWith('\n# EOF\n')).toBe(true);
    expect(reply.body).toContain('# TYPE pyats_section_results counter\n');
    expect(reply.body).toContain(
      'pyats_section_results_total{job="nightly",task="task-1",type="Testcase",result="failed"} 1\n',
    );
    // OpenMetrics forbids two families of one name; the health gauge is named so it cannot clash.
    const families = declaredFamilies(reply.body);
    expect(new Set(families).size).toBe(families.length);
  });

  it('keeps counter names intact in Prometheus text after OpenMetrics scrapes', async () => {
    const registry = populatedRegistry();
    const server = await start(registry);
    await request(server.address.port, '/metrics', { headers: { accept: 'application/openmetrics-text' } });
    const reply = await request(server.address.port, '/metrics');
    expect(reply.body).toContain('# TYPE pyats_section_results_total counter\n');
    expect(reply.body).toBe(await registry.metrics());
  });

  it('answers concurrent scrapes of mixed formats each in its own format', async () => {
    const registry = populatedRegistry();
    // A slow collect interleaves the scrapes, as a real event-loop-lag or GC metric would.
    new Gauge({
      name: 'test_slow_gauge',
      help: 'Takes a moment to collect.',
      registers: [registry],
      async collect() {
        await new Promise((resolve) => setTimeout(resolve, 5));
        this.set(1);
      },
    });
    const server = await start(registry);
    const formats = Array.from({ length: 24 }, (_, i) => (i % 2 === 0 ? 'openmetrics' : 'prometheus'));
    const replies = await Promise.all(
      formats.map((format) =>
        request(server.address.port, '/metrics', {
          headers: { accept: format === 'openmetrics' ? PROMETHEUS_242_ACCEPT : 'text/plain;version=0.0.4' },
        }),
      ),
    );
    replies.forEach((reply, i) => {
      if (formats[i] === 'openmetrics') {
        expect(reply.headers['content-type']).toMatch(/^application\/openmetrics-text; version=1\.0\.0/);
        expect(reply.body.endsWith('\n# EOF\n')).toBe(true);
        expect(reply.body).toContain('# TYPE pyats_section_results counter\n');
      } else {
        expect(reply.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
        expect(reply.body).not.toContain('# EOF');
        expect(reply.body).toContain('# TYPE pyats_section_results_total counter\n');
      }
    });
  });

  it('answers 500 and logs when collecting metrics fails', async () => {
    const registry = new Registry();
    new Gauge({
      name: 'test_broken_gauge',
      help: 'Its collect throws.',
      registers: [registry],
      collect() {
        throw new Error('sensor on fire');
      },
    });
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const server = await start(registry, { logger: pino({ level: 'error' }, sink) });
    const reply = await request(server.address.port, '/metrics');
    expect(reply.status).toBe(500);
    expect(reply.body).toBe('error collecting metrics\n');
    expect(reply.body).not.toContain('sensor on fire');
    const logged = lines.join('');
    expect(logged).toContain('collecting metrics failed');
    expect(logged).toContain('sensor on fire');
    // The server is still serving.
    expect((await request(server.address.port, '/healthz')).status).toBe(200);
  });

  it('answers /healthz while running and /readyz by the readiness callback', async () => {
    let state: Readiness = { ready: false, detail: 'waiting for /run/pyats/reporter.sock' };
    const server = await start(new Registry(), { ready: () => state });
    const port = server.address.port;

    const health = await request(port, '/healthz');
    expect(health.status).toBe(200);
    expect(health.body).toBe('ok');

    const notReady = await request(port, '/readyz');
    expect(notReady.status).toBe(503);
    expect(notReady.body).toBe('not ready: waiting for /run/pyats/reporter.sock');

    state = { ready: true };
    const ready = await request(port, '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body).toBe('ready');
  });

  it('treats a throwing readiness callback as not ready', async () => {
    const server = await start(new Registry(), {
      ready: () => {
        throw new Error('boom');
      },
    });
    const reply = await request(server.address.port, '/readyz');
    expect(reply.status).toBe(503);
    expect(reply.body).toBe('not ready: readiness check failed');
  });

  it('serves a small index page linking /metrics', async () => {
    const server = await start(new Registry());
    const reply = await request(server.address.port, '/');
    expect(reply.status).toBe(200);
    expect(reply.headers['content-type']).toMatch(/^text\/html/);
    expect(reply.body).toContain('<a href="metrics">');
  });

  it('answers 404 for unknown paths and 405 for other methods on known ones', async () => {
    const server = await start(new Registry());
    const port = server.address.port;
    const missing = await request(port, '/nope');
    expect(missing.status).toBe(404);
    expect(missing.headers['content-type']).toMatch(/^text\/plain/);
    expect(missing.body).toBe('not found\n');

    const post = await request(port, '/metrics', { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe('GET, HEAD');
  });

  it('gzips /metrics for a scraper that accepts it, as Prometheus does, in both formats', async () => {
    const server = await start(populatedRegistry());
    const port = server.address.port;
    for (const accept of ['text/plain', PROMETHEUS_242_ACCEPT]) {
      const plain = await request(port, '/metrics', { headers: { accept } });
      expect(plain.bytes.length).toBeGreaterThan(1024);
      for (const acceptEncoding of ['gzip', 'gzip, deflate, br, zstd', '*', 'br;q=1, gzip;q=0.5']) {
        const reply = await request(port, '/metrics', {
          headers: { accept, 'accept-encoding': acceptEncoding },
        });
        expect(reply.headers['content-encoding']).toBe('gzip');
        expect(reply.headers['content-type']).toBe(plain.headers['content-type']);
        expect(reply.headers['content-length']).toBe(String(reply.bytes.length));
        expect(reply.headers.vary).toBe('Accept, Accept-Encoding');
        expect(reply.bytes.length).toBeLessThan(plain.bytes.length / 3);
        expect(gunzipSync(reply.bytes).toString('utf8')).toBe(plain.body);
      }
    }
  });

  it('gives every gzip scrape the current text while the series change between scrapes', async () => {
    const registry = new Registry();
    const sink = new MetricsSink({ registry });
    const health = new ExporterHealth({ registry, version: '0.1.0' });
    const server = await start(registry);
    const port = server.address.port;
    const job = { jobId: 'nightly', jobName: 'nightly', runId: 'nightly@1', traceId: '0'.repeat(32) };
    let seqNum = 1;
    const finish = (id: string, value: 'passed' | 'failed'): void =>
      sink.sectionFinished({
        job,
        seqNum: seqNum++,
        spanId: seqNum.toString(16).padStart(16, '0'),
        type: 'Testcase',
        id,
        task: 'task-1',
        startTime: 0,
        stopTime: 1500,
        runtime: 1.5,
        result: { value },
        incomplete: false,
        orphan: false,
        started: false,
      });
    for (let i = 0; i < 600; i++) finish(`tc_${i}`, 'passed');
    for (let round = 0; round < 4; round++) {
      for (const accept of ['text/plain', PROMETHEUS_242_ACCEPT]) {
        const gzipped = await request(port, '/metrics', { headers: { accept, 'accept-encoding': 'gzip' } });
        const plain = await request(port, '/metrics', { headers: { accept } });
        expect(gzipped.headers['content-encoding']).toBe('gzip');
        expect(gunzipSync(gzipped.bytes).toString('utf8')).toBe(plain.body);
        if (round > 0)
          expect(plain.body).toMatch(new RegExp(`testcase="tc_${round}"[^\n]*result="failed"} 1\n`));
      }
      // One testcase of an early block fails, a new one appears at the end, prom-client's counters move.
      finish(`tc_${round + 1}`, 'failed');
      finish(`tc_new_${round}`, 'passed');
      health.eventReceived('reporter_socket');
    }
  });

  it('sends /metrics uncompressed when gzip is not accepted, the body is small, or for HEAD', async () => {
    const server = await start(populatedRegistry());
    const port = server.address.port;
    const plain = await request(port, '/metrics');
    for (const acceptEncoding of ['identity', 'br', 'deflate', 'gzip;q=0, identity']) {
      const reply = await request(port, '/metrics', { headers: { 'accept-encoding': acceptEncoding } });
      expect(reply.headers['content-encoding']).toBeUndefined();
      expect(reply.body).toBe(plain.body);
    }
    const head = await request(port, '/metrics', { method: 'HEAD', headers: { 'accept-encoding': 'gzip' } });
    expect(head.headers['content-encoding']).toBeUndefined();
    expect(head.headers['content-length']).toBe(String(plain.bytes.length));

    const small = new Registry();
    new Gauge({ name: 'one_gauge', help: 'A single series.', registers: [small] }).set(1);
    const smallServer = await start(small);
    const reply = await request(smallServer.address.port, '/metrics', {
      headers: { 'accept-encoding': 'gzip' },
    });
    expect(reply.headers['content-encoding']).toBeUndefined();
    expect(reply.body).toBe('# HELP one_gauge A single series.\n# TYPE one_gauge gauge\none_gauge 1\n');
  });

  it('answers HEAD like GET without a body', async () => {
    const server = await start(populatedRegistry());
    const port = server.address.port;
    const get = await request(port, '/metrics');
    const head = await request(port, '/metrics', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers['content-type']).toBe(get.headers['content-type']);
    expect(head.headers['content-length']).toBe(String(Buffer.byteLength(get.body)));
    expect(head.body).toBe('');

    const headOm = await request(port, '/metrics', {
      method: 'HEAD',
      headers: { accept: PROMETHEUS_242_ACCEPT },
    });
    expect(headOm.headers['content-type']).toMatch(/^application\/openmetrics-text/);
    for (const path of ['/healthz', '/readyz', '/']) {
      const reply = await request(port, path, { method: 'HEAD' });
      expect(reply.status).toBe(200);
      expect(reply.body).toBe('');
    }
    expect((await request(port, '/nope', { method: 'HEAD' })).status).toBe(404);
  });

  it('renders Prometheus text exactly as the registry itself does', async () => {
    const registry = populatedRegistry();
    expect(await renderMetrics(registry, 'prometheus')).toBe(await registry.metrics());
  });

  it('renders OpenMetrics exactly as the registry itself does in OpenMetrics mode, one # EOF last', async () => {
    const registry = populatedRegistry();
    const body = await renderMetrics(registry, 'openmetrics');
    expect(body.match(/^# EOF$/gm)).toHaveLength(1);
    expect(body.endsWith('\n# EOF\n')).toBe(true);
    expect(body).toMatch(
      /^pyats_section_duration_seconds_bucket\{le="2\.5",.* 1 # \{trace_id="0{32}",span_id="0{15}2"\} 1\.5 /m,
    );
    // Last: prom-client's own metrics() renames the registry's counters in place for OpenMetrics.
    (registry as unknown as Registry<RegistryContentType>).setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
    expect(body).toBe(await registry.metrics());
  });

  it('serves OpenMetrics with process metrics without family clashes', async () => {
    const registry = populatedRegistry();
    registerProcessMetrics(registry);
    const body = await renderMetrics(registry, 'openmetrics');
    const families = declaredFamilies(body);
    expect(families).toContain('process_cpu_seconds');
    expect(new Set(families).size).toBe(families.length);
  });

  itPromtool(`serves /metrics that promtool accepts${PROMTOOL_SKIP_NOTE}`, async () => {
    const registry = populatedRegistry();
    registerProcessMetrics(registry);
    const server = await start(registry);
    const reply = await request(server.address.port, '/metrics');
    const { code, output } = await promtoolCheck(reply.body);
    // prom-client names three gauges `nodejs_active_*_total`; promtool's lint flags exactly those (exit 3).
    // They come from prom-client's default metrics, which we do not rename; nothing else may be reported.
    const findings = output.split('\n').filter(Boolean);
    expect(findings.sort()).toEqual(PROCESS_METRICS_LINT);
    expect(code).toBe(3);
  });
});

describe('listen', () => {
  it('binds port 0 and reports the bound address', async () => {
    const server = await start(new Registry());
    expect(server.address.host).toBe('127.0.0.1');
    expect(server.address.port).toBeGreaterThan(0);
  });

  it('rejects with EADDRINUSE when the port is taken', async () => {
    const first = await start(new Registry());
    const app = createApp({
      registry: new Registry(),
      ready: () => ({ ready: true }),
      logger: silentLogger(),
    });
    await expect(listen(app, { host: '127.0.0.1', port: first.address.port })).rejects.toMatchObject({
      code: 'EADDRINUSE',
    });
  });

  it('rejects when the host cannot be resolved or the port is out of range', async () => {
    const app = createApp({
      registry: new Registry(),
      ready: () => ({ ready: true }),
      logger: silentLogger(),
    });
    const badHost = await listen(app, { host: 'no-such-host.invalid', port: 0 }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(badHost).toBeInstanceOf(Error);
    expect((badHost as NodeJS.ErrnoException).code).toMatch(/^(ENOTFOUND|EAI_AGAIN|EAI_NONAME)$/);
    await expect(listen(app, { host: '127.0.0.1', port: 70000 })).rejects.toMatchObject({
      code: 'ERR_SOCKET_BAD_PORT',
    });
  });

  it('closes despite an idle keep-alive connection', async () => {
    const server = await start(new Registry());
    const agent = new http.Agent({ keepAlive: true });
    try {
      const reply = await request(server.address.port, '/healthz', { agent });
      expect(reply.headers.connection).toBe('keep-alive');
      const pooled = Object.values(agent.freeSockets).flat();
      expect(pooled).toHaveLength(1);
      const clientClosed = new Promise<void>((resolve) => pooled[0]?.once('close', () => resolve()));
      await server.close();
      await clientClosed;
    } finally {
      agent.destroy();
    }
  });

  it('closes despite a request that never finishes, after the grace period', async () => {
    const registry = new Registry();
    let held: () => void = () => undefined;
    const requestHeld = new Promise<void>((resolve) => (held = resolve));
    new Gauge({
      name: 'test_stuck_gauge',
      help: 'Its collect never settles.',
      registers: [registry],
      collect: () => {
        held();
        return new Promise<void>(() => undefined);
      },
    });
    const server = await start(registry, { closeGraceMs: 50 });
    const stuck = request(server.address.port, '/metrics').then(
      () => 'answered',
      (err: NodeJS.ErrnoException) => err.code,
    );
    await requestHeld;
    await server.close();
    expect(await stuck).toBe('ECONNRESET');
  });

  it('close() can be called twice', async () => {
    const server = await start(new Registry());
    await server.close();
    await expect(server.close()).resolves.toBeUndefined();
  });
});
