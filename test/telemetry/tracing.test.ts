import { spawn } from 'node:child_process';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { diag, DiagLogLevel, type DiagLogger } from '@opentelemetry/api';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import type { FinishedSection } from '../../src/events/types.js';
import { silentLogger } from '../../src/log.js';
import { spanIdFor, traceIdFor } from '../../src/events/ids.js';
import { sectionToSpan } from '../../src/telemetry/spans.js';
import {
  baseResource,
  createSpanPipeline,
  TracingConfigError,
  tracingOptionsFromEnv,
  type SpanDropReason,
  type SpanPipeline,
  type TracingOptions,
} from '../../src/telemetry/tracing.js';
import { startOtlpGrpcReceiver, startOtlpReceiver, type OtlpReceiver } from '../helpers/otlp-receiver.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

describe('tracingOptionsFromEnv', () => {
  it('applies the spec defaults when nothing is set', () => {
    expect(tracingOptionsFromEnv({})).toEqual({
      exporter: 'otlp',
      protocol: 'http/protobuf',
      endpoint: 'http://localhost:4318/v1/traces',
      headers: {},
      timeoutMs: 10_000,
      compression: 'none',
      batch: {
        maxQueueSize: 2048,
        maxExportBatchSize: 512,
        scheduledDelayMillis: 5000,
        exportTimeoutMillis: 30_000,
      },
      serviceName: 'pyats-exporter',
      resourceAttributes: { 'service.name': 'pyats-exporter' },
    });
  });

  it('treats blank values as unset', () => {
    expect(tracingOptionsFromEnv({ OTEL_TRACES_EXPORTER: ' ', OTEL_BSP_MAX_QUEUE_SIZE: '' })).toEqual(
      tracingOptionsFromEnv({}),
    );
  });

  it('reads every supported variable', () => {
    const options = tracingOptionsFromEnv({
      OTEL_TRACES_EXPORTER: 'console',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
      OTEL_EXPORTER_OTLP_HEADERS: 'Authorization=Bearer%20abc,x-tenant=lab%2C1',
      OTEL_EXPORTER_OTLP_TIMEOUT: '2500',
      OTEL_EXPORTER_OTLP_COMPRESSION: 'GZIP',
      OTEL_SERVICE_NAME: 'lab-exporter',
      OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=lab%20one,team=net',
      OTEL_BSP_MAX_QUEUE_SIZE: '100',
      OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '10',
      OTEL_BSP_SCHEDULE_DELAY: '0',
      OTEL_BSP_EXPORT_TIMEOUT: '1000',
    });
    expect(options).toEqual({
      exporter: 'console',
      protocol: 'http/json',
      endpoint: 'http://collector:4318/v1/traces',
      headers: { Authorization: 'Bearer abc', 'x-tenant': 'lab,1' },
      timeoutMs: 2500,
      compression: 'gzip',
      batch: {
        maxQueueSize: 100,
        maxExportBatchSize: 10,
        scheduledDelayMillis: 0,
        exportTimeoutMillis: 1000,
      },
      serviceName: 'lab-exporter',
      resourceAttributes: {
        'deployment.environment.name': 'lab one',
        team: 'net',
        'service.name': 'lab-exporter',
      },
    });
  });

  it('prefers the TRACES_ variables and merges headers', () => {
    const options = tracingOptionsFromEnv({
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'grpc',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://ignored:4317',
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://traces:4317',
      OTEL_EXPORTER_OTLP_HEADERS: 'a=1,b=2',
      OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'b=3',
      OTEL_EXPORTER_OTLP_TIMEOUT: '1',
      OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: '2',
      OTEL_EXPORTER_OTLP_COMPRESSION: 'gzip',
      OTEL_EXPORTER_OTLP_TRACES_COMPRESSION: 'none',
    });
    expect(options).toMatchObject({
      protocol: 'grpc',
      endpoint: 'http://traces:4317',
      headers: { a: '1', b: '3' },
      timeoutMs: 2,
      compression: 'none',
    });
  });

  it('builds the endpoint as the spec says', () => {
    const endpoint = (env: NodeJS.ProcessEnv): string | undefined => tracingOptionsFromEnv(env).endpoint;
    expect(endpoint({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318/' })).toBe('http://c:4318/v1/traces');
    expect(endpoint({ OTEL_EXPORTER_OTLP_ENDPOINT: 'https://c/otlp' })).toBe('https://c/otlp/v1/traces');
    // The signal-specific endpoint is used as-is, even without a path.
    expect(endpoint({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://c:4318' })).toBe('http://c:4318');
    expect(endpoint({ OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' })).toBe('http://localhost:4317');
    expect(
      endpoint({ OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4317' }),
    ).toBe('http://c:4317');
  });

  it('uses the first exporter of the list', () => {
    expect(tracingOptionsFromEnv({ OTEL_TRACES_EXPORTER: 'console,otlp' }).exporter).toBe('console');
    expect(tracingOptionsFromEnv({ OTEL_TRACES_EXPORTER: ' NONE ' }).exporter).toBe('none');
  });

  it('takes service.name from OTEL_RESOURCE_ATTRIBUTES unless OTEL_SERVICE_NAME is set', () => {
    const attrs = 'service.name=from-attrs,host.name=lab1';
    expect(tracingOptionsFromEnv({ OTEL_RESOURCE_ATTRIBUTES: attrs }).serviceName).toBe('from-attrs');
    const both = tracingOptionsFromEnv({ OTEL_RESOURCE_ATTRIBUTES: attrs, OTEL_SERVICE_NAME: 'wins' });
    expect(both.serviceName).toBe('wins');
    expect(both.resourceAttributes).toEqual({ 'service.name': 'wins', 'host.name': 'lab1' });
  });

  it('clamps the batch size to the queue size, as the SDK does', () => {
    const options = tracingOptionsFromEnv({ OTEL_BSP_MAX_QUEUE_SIZE: '8' });
    expect(options.batch).toMatchObject({ maxQueueSize: 8, maxExportBatchSize: 8 });
  });

  it.each([
    ['OTEL_TRACES_EXPORTER', 'zipkin'],
    ['OTEL_TRACES_EXPORTER', 'otlp,jaeger'],
    ['OTEL_EXPORTER_OTLP_PROTOCOL', 'http'],
    ['OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', 'grpc/json'],
    ['OTEL_EXPORTER_OTLP_COMPRESSION', 'brotli'],
    ['OTEL_EXPORTER_OTLP_ENDPOINT', 'not a url'],
    ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'ftp://collector'],
    ['OTEL_EXPORTER_OTLP_HEADERS', 'novalue'],
    ['OTEL_EXPORTER_OTLP_TRACES_HEADERS', '=x'],
    ['OTEL_RESOURCE_ATTRIBUTES', 'team=%zz'],
    ['OTEL_EXPORTER_OTLP_TIMEOUT', 'soon'],
    ['OTEL_BSP_MAX_QUEUE_SIZE', 'lots'],
    ['OTEL_BSP_MAX_QUEUE_SIZE', '0'],
    ['OTEL_BSP_MAX_EXPORT_BATCH_SIZE', '1.5'],
    ['OTEL_BSP_SCHEDULE_DELAY', '-1'],
    ['OTEL_BSP_EXPORT_TIMEOUT', '1e3'],
  ])('rejects %s=%s with a bad_env error naming both', (variable, value) => {
    let caught: unknown;
    try {
      tracingOptionsFromEnv({ [variable]: value });
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(TracingConfigError);
    expect(caught).toBeInstanceOf(ConfigError);
    const error = caught as TracingConfigError;
    expect(error.code).toBe('bad_env');
    expect(error.variable).toBe(variable);
    expect(error.value).toBe(value);
    expect(error.message).toContain(variable);
    expect(error.message).toContain(JSON.stringify(value));
  });
});

describe('baseResource', () => {
  it('carries telemetry.sdk.*, service.version, the resource attributes and service.name', () => {
    const resource = baseResource(tracingOptionsFromEnv({ OTEL_RESOURCE_ATTRIBUTES: 'team=net' }), '1.2.3');
    expect(resource.attributes).toMatchObject({
      'telemetry.sdk.name': 'opentelemetry',
      'telemetry.sdk.language': 'nodejs',
      'service.name': 'pyats-exporter',
      'service.version': '1.2.3',
      team: 'net',
    });
    expect(resource.attributes['telemetry.sdk.version']).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('lets OTEL_RESOURCE_ATTRIBUTES override service.version', () => {
    const options = tracingOptionsFromEnv({ OTEL_RESOURCE_ATTRIBUTES: 'service.version=lab-build' });
    expect(baseResource(options, '1.2.3').attributes['service.version']).toBe('lab-build');
  });
});

// ---- the pipeline against real receivers ---------------------------------------------------------------

const RUN_ID = 'pipeline_job@2024-05-01T12:00:00.000Z';
const TRACE_ID = traceIdFor(RUN_ID);
const RESOURCE = resourceFromAttributes({ 'service.name': 'pipeline-test' });
const SCOPE = { name: 'pyats-exporter', version: 'test' };

function section(seqNum: number): FinishedSection {
  return {
    job: { jobId: 'pipeline_job', jobName: 'pipeline_job', runId: RUN_ID, traceId: TRACE_ID },
    seqNum,
    spanId: spanIdFor(RUN_ID, seqNum),
    type: 'Testcase',
    id: `tc_${seqNum}`,
    task: 'Task-1',
    startTime: Date.UTC(2024, 4, 1, 12, 0, seqNum),
    stopTime: Date.UTC(2024, 4, 1, 12, 0, seqNum + 1),
    runtime: 1,
    result: { value: 'passed' },
    incomplete: false,
    orphan: false,
    started: true,
  };
}

function span(seqNum: number) {
  return sectionToSpan(section(seqNum), RESOURCE, SCOPE, 1000);
}

function recorder() {
  const exported: number[] = [];
  const dropped: Record<SpanDropReason, number> = { export_failed: 0, queue_full: 0, shutdown: 0 };
  return {
    exported,
    dropped,
    total: () => exported.reduce((a, b) => a + b, 0),
    hooks: {
      spansExported: (n: number) => exported.push(n),
      spansDropped: (n: number, reason: SpanDropReason) => (dropped[reason] += n),
    },
  };
}

function optionsFor(receiver: { url: string }, overrides: Partial<TracingOptions> = {}): TracingOptions {
  return {
    ...tracingOptionsFromEnv({}),
    endpoint: `${receiver.url}/v1/traces`,
    batch: {
      maxQueueSize: 100,
      maxExportBatchSize: 50,
      scheduledDelayMillis: 60_000,
      exportTimeoutMillis: 10_000,
    },
    ...overrides,
  };
}

describe('createSpanPipeline', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function receiver(opts?: Parameters<typeof startOtlpReceiver>[0]): Promise<OtlpReceiver> {
    const started = await startOtlpReceiver(opts);
    cleanups.push(() => started.close());
    return started;
  }

  /** Keeps each request's headers and raw body, and answers 200 with `response`. */
  async function rawReceiver(response = Buffer.alloc(0)) {
    const requests: Array<{ headers: IncomingHttpHeaders; body: Buffer }> = [];
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        requests.push({ headers: req.headers, body: Buffer.concat(chunks) });
        res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end(response);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    );
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
  }

  function pipeline(options: TracingOptions, hooks: ReturnType<typeof recorder>['hooks']): SpanPipeline {
    const created = createSpanPipeline(options, hooks, silentLogger());
    if (created === undefined) throw new Error('expected a pipeline');
    cleanups.push(() => created.shutdown());
    return created;
  }

  it('returns undefined for the none exporter', () => {
    const none: TracingOptions = { ...tracingOptionsFromEnv({}), exporter: 'none' };
    expect(createSpanPipeline(none, recorder().hooks, silentLogger())).toBeUndefined();
    expect(
      createSpanPipeline(
        tracingOptionsFromEnv({ OTEL_TRACES_EXPORTER: 'none' }),
        recorder().hooks,
        silentLogger(),
      ),
    ).toBeUndefined();
  });

  it('exports gzip-compressed protobuf with the configured headers, and counts the spans', async () => {
    const otlp = await receiver();
    const counts = recorder();
    const p = pipeline(
      optionsFor(otlp, { compression: 'gzip', headers: { 'x-lab-token': 's3cret' } }),
      counts.hooks,
    );
    for (let seq = 1; seq <= 3; seq += 1) p.processor.onEnd(span(seq));
    await p.forceFlush();
    const spans = await otlp.waitForSpans(3);
    expect(spans.map((s) => s.spanId)).toEqual([1, 2, 3].map((seq) => spanIdFor(RUN_ID, seq)));
    expect(otlp.requestLog).toHaveLength(1);
    expect(otlp.requestLog[0]).toMatchObject({
      contentType: 'application/x-protobuf',
      contentEncoding: 'gzip',
      status: 200,
    });
    expect(otlp.requestLog[0]?.headers['x-lab-token']).toBe('s3cret');
    expect(counts.exported).toEqual([3]);
    expect(counts.dropped).toEqual({ export_failed: 0, queue_full: 0, shutdown: 0 });
  });

  it('counts a batch the receiver refuses with 503 as export_failed', async () => {
    const otlp = await receiver({ status: 503 });
    const counts = recorder();
    // A short timeout leaves no room for the exporter's retry backoff (>= 800 ms), so it gives up at once.
    const p = pipeline(optionsFor(otlp, { timeoutMs: 300 }), counts.hooks);
    for (let seq = 1; seq <= 4; seq += 1) p.processor.onEnd(span(seq));
    await p.forceFlush();
    expect(otlp.requests).toBeGreaterThanOrEqual(1);
    expect(otlp.spans).toHaveLength(0);
    expect(counts.dropped.export_failed).toBe(4);
    expect(counts.total()).toBe(0);

    otlp.setStatus(200);
    p.processor.onEnd(span(5));
    await p.forceFlush();
    expect(counts.exported).toEqual([1]);
  });

  it('counts spans refused by a full queue as queue_full', async () => {
    // The receiver holds each request, so the queue cannot drain while the spans arrive.
    const otlp = await receiver({ delayMs: 200 });
    const counts = recorder();
    const p = pipeline(
      optionsFor(otlp, {
        batch: {
          maxQueueSize: 4,
          maxExportBatchSize: 2,
          scheduledDelayMillis: 60_000,
          exportTimeoutMillis: 10_000,
        },
      }),
      counts.hooks,
    );
    // Span 2 fills a batch, which leaves the queue for the exporter at once; 3..6 fill the queue; 7..10 drop.
    for (let seq = 1; seq <= 10; seq += 1) p.processor.onEnd(span(seq));
    expect(counts.dropped.queue_full).toBe(4);
    await p.forceFlush();
    await otlp.waitForSpans(6);
    await vi.waitFor(() => expect(counts.total()).toBe(6));
    expect(otlp.spans.map((s) => s.spanId).sort()).toEqual(
      [1, 2, 3, 4, 5, 6].map((seq) => spanIdFor(RUN_ID, seq)).sort(),
    );
    expect(counts.dropped).toEqual({ export_failed: 0, queue_full: 4, shutdown: 0 });
  });

  it('flushes on shutdown and counts spans that arrive afterwards as shutdown', async () => {
    const otlp = await receiver();
    const counts = recorder();
    const p = pipeline(optionsFor(otlp), counts.hooks);
    p.processor.onEnd(span(1));
    await p.shutdown();
    expect(otlp.spans).toHaveLength(1);
    p.processor.onEnd(span(2));
    expect(counts.exported).toEqual([1]);
    expect(counts.dropped.shutdown).toBe(1);
  });

  it('reports its backlog, and whether the last export failed', async () => {
    const otlp = await receiver({ status: 503 });
    const counts = recorder();
    const p = pipeline(optionsFor(otlp, { timeoutMs: 300 }), counts.hooks);
    expect([p.backlog(), p.exportFailing()]).toEqual([0, false]);
    for (let seq = 1; seq <= 3; seq += 1) p.processor.onEnd(span(seq));
    expect(p.backlog()).toBe(3);
    await p.forceFlush();
    expect([p.backlog(), p.exportFailing()]).toEqual([0, true]);

    otlp.setStatus(200);
    p.processor.onEnd(span(4));
    expect(p.backlog()).toBe(1);
    await p.forceFlush();
    expect([p.backlog(), p.exportFailing()]).toEqual([0, false]);
    expect(counts.exported).toEqual([1]);
  });

  it('sends, for http/protobuf, exactly the bytes ProtobufTraceSerializer would, plain or gzipped', async () => {
    for (const compression of ['none', 'gzip'] as const) {
      const raw = await rawReceiver();
      const counts = recorder();
      const p = pipeline(optionsFor(raw, { compression }), counts.hooks);
      const spans = [1, 2, 3, 4].map(span);
      for (const s of spans) p.processor.onEnd(s);
      await p.forceFlush();
      expect(raw.requests).toHaveLength(1);
      const [request] = raw.requests;
      expect(request?.headers['content-type']).toBe('application/x-protobuf');
      expect(request?.headers['content-encoding']).toBe(compression === 'gzip' ? 'gzip' : undefined);
      expect(request?.headers['user-agent']).toMatch(/^OTel-OTLP-Exporter-JavaScript\//);
      const body = compression === 'gzip' ? gunzipSync(request?.body ?? Buffer.alloc(0)) : request?.body;
      const expected = Buffer.from(
        ProtobufTraceSerializer.serializeRequest(spans.map((_, i) => span(i + 1))) ?? [],
      );
      expect(body?.equals(expected)).toBe(true);
      expect(counts.exported).toEqual([4]);
    }
  });

  it("reads the receiver's response with the library's deserializer (partial success is logged)", async () => {
    // ExportTraceServiceResponse { partial_success: { rejected_spans: 2, error_message: "too old" } }
    const response = Buffer.from([0x0a, 0x0b, 0x08, 0x02, 0x12, 0x07, ...Buffer.from('too old')]);
    const raw = await rawReceiver(response);
    const warnings: string[] = [];
    const logger: DiagLogger = {
      error: () => {},
      warn: (message, ...args) => warnings.push([message, ...args.map(String)].join(' ')),
      info: () => {},
      debug: () => {},
      verbose: () => {},
    };
    diag.setLogger(logger, { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true });
    cleanups.push(() => Promise.resolve(diag.disable()));
    const counts = recorder();
    const p = pipeline(optionsFor(raw), counts.hooks);
    p.processor.onEnd(span(1));
    await p.forceFlush();
    expect(counts.exported).toEqual([1]);
    expect(warnings.some((w) => w.includes('Partial Success') && w.includes('too old'))).toBe(true);
  });

  it('sends OTLP/JSON for http/json', async () => {
    const otlp = await receiver();
    const counts = recorder();
    const p = pipeline(optionsFor(otlp, { protocol: 'http/json' }), counts.hooks);
    p.processor.onEnd(span(1));
    await p.forceFlush();
    const [received] = await otlp.waitForSpans(1);
    expect(otlp.requestLog[0]?.contentType).toBe('application/json');
    expect(received).toMatchObject({
      traceId: TRACE_ID,
      spanId: spanIdFor(RUN_ID, 1),
      name: 'Testcase tc_1',
    });
    expect(counts.exported).toEqual([1]);
  });

  it('exports over gRPC to a real TraceService, with headers as metadata', async () => {
    const grpc = await startOtlpGrpcReceiver();
    cleanups.push(() => grpc.close());
    const counts = recorder();
    const p = pipeline(
      optionsFor(grpc, { protocol: 'grpc', endpoint: grpc.url, headers: { 'x-lab-token': 's3cret' } }),
      counts.hooks,
    );
    p.processor.onEnd(span(1));
    p.processor.onEnd(span(2));
    await p.forceFlush();
    const spans = await grpc.waitForSpans(2);
    expect(spans.map((s) => s.name)).toEqual(['Testcase tc_1', 'Testcase tc_2']);
    expect(spans[0]?.traceId).toBe(TRACE_ID);
    expect(grpc.lastMetadata['x-lab-token']).toBe('s3cret');
    expect(counts.exported).toEqual([2]);
  });

  it('console exporter writes the spans to stdout', async () => {
    // A child process, so the exporter writes to a real stdout; it runs the build the global setup made.
    const script = `
      import { createSpanPipeline, tracingOptionsFromEnv, baseResource } from './dist/telemetry/tracing.js';
      import { sectionToSpan } from './dist/telemetry/spans.js';
      import { silentLogger } from './dist/log.js';
      const options = tracingOptionsFromEnv(process.env);
      const hooks = {
        spansExported: (n) => process.stderr.write('exported ' + n + '\\n'),
        spansDropped: (n, reason) => process.stderr.write('dropped ' + n + ' ' + reason + '\\n'),
      };
      const pipeline = createSpanPipeline(options, hooks, silentLogger());
      const section = JSON.parse(process.argv[1]);
      pipeline.processor.onEnd(sectionToSpan(section, baseResource(options), { name: 'pyats-exporter' }, 100));
      await pipeline.shutdown();
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, JSON.stringify(section(7))], {
      cwd: ROOT,
      env: { PATH: process.env['PATH'], OTEL_TRACES_EXPORTER: 'console', OTEL_SERVICE_NAME: 'console-test' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(stderr).toBe('exported 1\n');
    expect(code).toBe(0);
    expect(stdout).toContain(`traceId: '${TRACE_ID}'`);
    expect(stdout).toContain(`id: '${spanIdFor(RUN_ID, 7)}'`);
    expect(stdout).toContain("name: 'Testcase tc_7'");
    expect(stdout).toContain("'service.name': 'console-test'");
  });
});
