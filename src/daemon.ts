// Wires one running exporter from a validated config: sources → pipeline → tracker → sinks, and the
// HTTP server. Owns the lifecycle: start() and an orderly stop() (abandon open sections, flush spans).
// buildTelemetry is shared with the replay command.
import { dirname } from 'node:path';
import { Registry } from 'prom-client';
import { SinkFanout, resolveZone, SectionTracker, type SectionSink } from './events/index.js';
import type { ExporterConfig, ListenAddress } from './config.js';
import { createApp, listen } from './http/index.js';
import { IdleCollector } from './idle-gc.js';
import type { Logger } from './log.js';
import { CaptureWriter, CapturingTracker, createHttpIngest, IngestSocketServer } from './ingest/index.js';
import { Pipeline } from './pipeline.js';
import { unpickle } from './python/index.js';
import {
  DecodeThread,
  SocketDiscovery,
  type DiscoveredSubscriber,
  type SocketActivity,
  ReporterSubscriber,
  type ConnectionInfo,
  type DisconnectReason,
  type ReporterSocketOptions,
  readRunContext,
} from './reporter/index.js';
import {
  ExporterHealth,
  JobLogSink,
  LogRecordSink,
  SectionLogSink,
  createLogRecordPipeline,
  registerProcessMetrics,
  MetricsSink,
  PushgatewayPublisher,
  SpanSink,
  SpanThread,
  baseResource,
  createSpanPipeline,
  type SpanDropReason,
} from './telemetry/index.js';
import { VERSION } from './version.js';

/**
 * Looks for a job's env.txt (for its CI run) this many times, 250 ms apart, from the connection on: easypy
 * writes it a few seconds after the socket appears (3 s seen on a loaded 2-core machine), before any section.
 */
const RUN_CONTEXT_ATTEMPTS = 60;

/** Fetching what ran before the exporter attached: per-request timeout, and the most sections fetched. */
const ATTACH = { timeoutMs: 10_000, maxSections: 100_000 };

export interface RunningDaemon {
  /** Where the HTTP server listens (port resolved when 0 was asked for). */
  address: ListenAddress;
  registry: Registry;
  /** Stop sources, end open sections as abandoned, flush spans, close the HTTP server. */
  stop(): Promise<void>;
}

/** The sinks every command feeds (metrics, optional Pushgateway, optional spans) and their registry. */
export interface Telemetry {
  registry: Registry;
  health: ExporterHealth;
  fanout: SinkFanout;
  /**
   * Read backpressure for stream sources: true while spans queue faster than a working backend takes them.
   * While export is failing it stays false, so ingest (and metrics) go on and the spans are dropped, counted.
   */
  sinksBehind(): boolean;
  /** Flush and shut down every sink and the span exporter. */
  shutdown(): Promise<void>;
}

export interface TelemetryOptions {
  /** OTLP export on the span thread or in-process; default `--span-thread`. */
  spanThread?: boolean;
  /** The span thread's module (tests of src/ point at dist/). */
  spanWorkerUrl?: URL;
}

export function buildTelemetry(
  config: ExporterConfig,
  logger: Logger,
  options: TelemetryOptions = {},
): Telemetry {
  const registry = new Registry();
  registerProcessMetrics(registry);
  const health = new ExporterHealth({ registry, version: VERSION });
  const sinks: SectionSink[] = [new MetricsSink({ registry, labelLimits: config.labelLimits })];
  if (config.pushgateway) {
    sinks.push(
      new PushgatewayPublisher({
        url: config.pushgateway.url,
        instance: config.pushgateway.instance,
        registry,
        logger: logger.child({ component: 'pushgateway' }),
        labelLimits: config.labelLimits,
      }),
    );
  }
  const spanHooks = {
    spansExported: (n: number) => health.spansExported(n),
    spansDropped: (n: number, reason: SpanDropReason) => health.spansDropped(n, reason),
  };
  // With --span-thread, OTLP export runs on a thread of its own (building, encoding and sending spans was ~half
  // the main thread's time). Opt-in: on 2 cores it gave no more events/s and cost more CPU per event
  // (docs/performance.md). Console stays in-process, and `none` needs neither.
  const onThread = config.tracing.exporter === 'otlp' && (options.spanThread ?? config.spanThread);
  const spanThread = onThread
    ? new SpanThread({
        worker: {
          tracing: config.tracing,
          maxAttributeLength: config.maxAttributeLength,
          version: VERSION,
          logLevel: config.logLevel,
        },
        hooks: spanHooks,
        logger: logger.child({ component: 'span-thread' }),
        ...(options.spanWorkerUrl ? { workerUrl: options.spanWorkerUrl } : {}),
      })
    : undefined;
  const spanPipeline = onThread ? undefined : createSpanPipeline(config.tracing, spanHooks, logger);
  const logPipeline = createLogRecordPipeline(
    config.logs,
    baseResource(config.tracing, VERSION),
    VERSION,
    {
      exported: (n) => health.logRecordsExported(n),
      dropped: (n, reason) => health.logRecordsDropped(n, reason),
    },
    logger.child({ component: 'log-records' }),
  );
  // Spans and log records both take the sections' log excerpts, read once for both.
  const excerptSinks: SectionSink[] = [];
  if (spanThread) {
    spanThread.start();
    excerptSinks.push(spanThread);
  }
  if (spanPipeline) {
    excerptSinks.push(
      new SpanSink({
        processor: spanPipeline.processor,
        resource: baseResource(config.tracing, VERSION),
        maxAttributeLength: config.maxAttributeLength,
        scopeVersion: VERSION,
      }),
    );
  }
  if (logPipeline) excerptSinks.push(new LogRecordSink(logPipeline, config.maxAttributeLength));
  if (excerptSinks.length > 0) {
    sinks.push(
      new SectionLogSink({
        inner:
          excerptSinks.length === 1 ? (excerptSinks[0] as SectionSink) : new SinkFanout(excerptSinks, logger),
        mode: config.sectionLogs.mode,
        maxBytes: config.sectionLogs.maxBytes,
        onOutcome: (outcome) => health.sectionLog(outcome),
        logger: logger.child({ component: 'section-logs' }),
      }),
    );
  }
  const spans = spanThread ?? spanPipeline;
  sinks.push(new JobLogSink(logger));
  const fanout = new SinkFanout(sinks, logger);
  // Four export batches, and never more than half the queue, so a slow backend never fills it.
  const { maxExportBatchSize, maxQueueSize } = config.tracing.batch;
  const holdAt = Math.max(1, Math.min(4 * maxExportBatchSize, Math.floor(maxQueueSize / 2)));
  return {
    registry,
    health,
    fanout,
    sinksBehind: () => spans !== undefined && spans.backlog() >= holdAt && !spans.exportFailing(),
    shutdown: async () => {
      await fanout.forceFlush();
      await fanout.shutdown();
      if (spanPipeline) await spanPipeline.shutdown();
    },
  };
}

export async function startDaemon(config: ExporterConfig, logger: Logger): Promise<RunningDaemon> {
  const { registry, health, fanout, sinksBehind, shutdown } = buildTelemetry(config, logger);
  const capture = config.capture
    ? new CaptureWriter({
        path: config.capture,
        version: VERSION,
        logger: logger.child({ component: 'capture' }),
      })
    : undefined;
  if (capture) await capture.open();
  const tracker = capture
    ? new CapturingTracker({ sink: fanout, logger, capture, readRunContext, ...trackerLimits(config) })
    : new SectionTracker({ sink: fanout, logger, readRunContext, ...trackerLimits(config) });
  const normalize = { zone: resolveZone(config.timezone), maxStringLength: config.maxAttributeLength };
  const pipeline = new Pipeline({ normalize, tracker, health, logger });

  const { ingest } = config;
  const ingestSocket = ingest.socket
    ? new IngestSocketServer({
        path: ingest.socket,
        target: pipeline,
        maxLineBytes: ingest.maxLineBytes,
        idleTimeoutMs: ingest.idleTimeoutMs,
        ...(ingest.socketMode !== undefined ? { mode: ingest.socketMode } : {}),
        logger: logger.child({ component: 'ingest-socket' }),
        holdWhile: sinksBehind,
      })
    : undefined;
  const httpIngest = ingest.http
    ? createHttpIngest({
        target: pipeline,
        ...(ingest.token !== undefined ? { token: ingest.token } : {}),
        maxBodyBytes: ingest.maxBodyBytes,
        idleTimeoutMs: ingest.idleTimeoutMs,
        logger: logger.child({ component: 'ingest-http' }),
      })
    : undefined;

  const streamOf = (conn: ConnectionInfo): string => `reporter:${conn.id}`;
  const openConnections = new Set<string>();
  // The job's CI run, from its runinfo env.txt: easypy may write it just after the socket appears, so it is
  // looked for again a few times before the job's identity (and trace) is fixed by the suite's start.
  const noteRunContext = (conn: ConnectionInfo, attempt: number): void => {
    const context = readRunContext(dirname(conn.path));
    if (context === undefined) {
      if (attempt < RUN_CONTEXT_ATTEMPTS) {
        setTimeout(() => {
          if (openConnections.has(conn.id)) noteRunContext(conn, attempt + 1);
        }, 250).unref();
      }
      return;
    }
    if (context.ci === undefined) return;
    pipeline.setStreamContext(streamOf(conn), context);
    logger.info(
      { socket: conn.path, ci: context.ci.system, trace_id: context.ci.parent?.traceId },
      'job runs in CI',
    );
  };
  const connected = (conn: ConnectionInfo): void => {
    health.connectionOpened(conn.path);
    logger.info({ socket: conn.path, connection: conn.id }, 'subscribed to reporter');
    openConnections.add(conn.id);
    // The job's log files (`logs.file`) are relative to its runinfo directory: where reporter.sock is.
    pipeline.setStreamContext(streamOf(conn), { runinfoDir: dirname(conn.path) });
    noteRunContext(conn, 1);
  };
  const disconnected = (conn: ConnectionInfo, reason: DisconnectReason): void => {
    openConnections.delete(conn.id);
    health.connectionClosed(conn.path, reason);
    pipeline.endStream(streamOf(conn));
    logger.info({ socket: conn.path, connection: conn.id, reason }, 'reporter connection closed');
  };
  const frameRejected = (conn: ConnectionInfo, code: string, detail: string): void =>
    pipeline.reject(streamOf(conn), 'reporter_socket', code, detail);
  const socketOptions: ReporterSocketOptions = {
    frameFormat: config.frameFormat,
    maxFrameBytes: config.maxFrameBytes,
    attach: ATTACH,
    pollIntervalMs: config.pollIntervalMs,
    backoff: config.reconnect,
  };
  // Each socket is followed by one of the decode threads, in turn (a job's stream stays on one thread).
  const decodeThreads = Array.from(
    { length: config.decodeThreads },
    (): DecodeThread =>
      new DecodeThread({
        worker: {
          ...socketOptions,
          timezone: config.timezone,
          maxStringLength: config.maxAttributeLength,
          logLevel: config.logLevel,
        },
        handlers: {
          connected,
          event: (conn, event) => pipeline.ingestNormalized(streamOf(conn), 'reporter_socket', event),
          rejected: (conn, reason, detail) =>
            pipeline.rejectNormalized(streamOf(conn), 'reporter_socket', reason, detail),
          fieldDropped: (conn, reason, detail) =>
            pipeline.fieldDropped(streamOf(conn), 'reporter_socket', reason, detail),
          frameRejected,
          disconnected,
        },
        sinksBehind,
        logger: logger.child({ component: 'decode-thread' }),
      }),
  );
  let nextThread = 0;
  /** One subscriber per socket path; `activity` tells discovery when a discovered job is live. */
  const makeSubscriber = (path: string, activity?: SocketActivity): DiscoveredSubscriber =>
    decodeThreads[nextThread++ % Math.max(1, decodeThreads.length)]?.createSubscriber(path, activity) ??
    new ReporterSubscriber({
      path,
      ...socketOptions,
      decode: (frame) => unpickle(frame),
      holdWhile: sinksBehind,
      logger: logger.child({ socket: path }),
      handlers: {
        connected: (conn) => {
          activity?.connected();
          connected(conn);
        },
        event: (conn, value) => pipeline.ingest(streamOf(conn), 'reporter_socket', value),
        frameRejected,
        disconnected: (conn, reason) => {
          activity?.disconnected();
          disconnected(conn, reason);
        },
      },
    });
  const subscribers = config.reporterSockets.map((path) => {
    health.setReporterWatched(path);
    return makeSubscriber(path);
  });
  // Discovery reports watched/unwatched sockets to health itself.
  const discovery =
    config.watch.dirs.length > 0
      ? new SocketDiscovery({
          roots: config.watch.dirs,
          maxDepth: config.watch.maxDepth,
          scanIntervalMs: config.watch.intervalMs,
          health,
          logger: logger.child({ component: 'discovery' }),
          createSubscriber: makeSubscriber,
        })
      : undefined;

  const web = config.web;
  const app = createApp({
    registry,
    logger,
    ready: () => ({ ready: true }),
    ...(web?.auth ? { auth: web.auth } : {}),
    ...(web ? { responseHeaders: web.responseHeaders } : {}),
    routers: httpIngest ? [httpIngest.router] : [],
  });
  const server = await listen(app, { ...config.listen, logger, ...(web?.tls ? { tls: web.tls } : {}) });
  if (web?.auth && !web.tls) {
    logger.warn('authentication is configured without TLS: credentials travel in clear text');
  }
  logger.info(
    { url: `${server.protocol}://${formatHost(server.address.host)}:${server.address.port}` },
    'http server listening',
  );
  if (ingestSocket) await ingestSocket.listen();
  for (const subscriber of subscribers) subscriber.start();
  discovery?.start();
  const idleCollector = new IdleCollector({
    events: () => health.eventsReceivedSoFar(),
    logger: logger.child({ component: 'idle-gc' }),
  });
  idleCollector.start();

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      idleCollector.stop();
      // Sources first, so nothing arrives after the open sections are ended.
      await Promise.allSettled([
        ...subscribers.map((s) => s.stop()),
        discovery?.stop(),
        ingestSocket?.close(),
      ]);
      await Promise.all(decodeThreads.map((thread) => thread.close()));
      httpIngest?.close();
      await server.close();
      tracker.endAll();
      await capture?.close();
      await shutdown();
    })();
    return stopping;
  };
  return { address: server.address, registry, stop };
}

/** The tracker's bounds from the configuration (the daemon and replay share them). */
export function trackerLimits(config: ExporterConfig): { maxHeldOrphans: number; maxOpenSections: number } {
  return { maxHeldOrphans: config.orphanHoldMax, maxOpenSections: config.maxOpenSections };
}

function formatHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}
