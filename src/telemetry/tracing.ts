// Tracing setup: the standard OTEL_* environment variables parsed once into typed options, and the span
// pipeline built from them (exporter → counting decorator → BatchSpanProcessor → queue guard). For
// http/protobuf: the OTLP exporter's own transport, with our one-pass encoder (otlp-encoder.ts) as serializer.
import { createRequire } from 'node:module';
import { TraceFlags } from '@opentelemetry/api';
import { ExportResultCode, SDK_INFO, type ExportResult } from '@opentelemetry/core';
import { OTLPTraceExporter as OtlpGrpcTraceExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { OTLPTraceExporter as OtlpJsonTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import {
  CompressionAlgorithm,
  OTLPExporterBase,
  type OTLPExporterNodeConfigBase,
} from '@opentelemetry/otlp-exporter-base';
import {
  convertLegacyHttpOptions,
  createOtlpHttpExportDelegate,
} from '@opentelemetry/otlp-exporter-base/node-http';
import {
  ProtobufTraceSerializer,
  TraceExporterMetricsHelper,
  type IExportTraceServiceResponse,
  type ISerializer,
} from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import {
  BatchSpanProcessor,
  ConsoleSpanExporter,
  type ReadableSpan,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import {
  ATTR_SERVICE_NAME,
  ATTR_SERVICE_VERSION,
  ATTR_TELEMETRY_SDK_LANGUAGE,
  ATTR_TELEMETRY_SDK_NAME,
  ATTR_TELEMETRY_SDK_VERSION,
} from '@opentelemetry/semantic-conventions';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';
import { encodeTraceRequest } from './otlp-encoder.js';

export const TRACES_EXPORTERS = ['otlp', 'console', 'none'] as const;
export type TracesExporter = (typeof TRACES_EXPORTERS)[number];

export const OTLP_PROTOCOLS = ['http/protobuf', 'http/json', 'grpc'] as const;
export type OtlpProtocol = (typeof OTLP_PROTOCOLS)[number];

export const OTLP_COMPRESSIONS = ['gzip', 'none'] as const;
export type OtlpCompression = (typeof OTLP_COMPRESSIONS)[number];

export const DEFAULT_SERVICE_NAME = 'pyats-exporter';
export const DEFAULT_HTTP_TRACES_ENDPOINT = 'http://localhost:4318/v1/traces';
export const DEFAULT_GRPC_ENDPOINT = 'http://localhost:4317';

export interface BatchOptions {
  /** OTEL_BSP_MAX_QUEUE_SIZE, default 2048. Spans finished while the queue is full are dropped (counted). */
  maxQueueSize: number;
  /** OTEL_BSP_MAX_EXPORT_BATCH_SIZE, default 512; never more than maxQueueSize. */
  maxExportBatchSize: number;
  /** OTEL_BSP_SCHEDULE_DELAY, default 5000 ms. */
  scheduledDelayMillis: number;
  /** OTEL_BSP_EXPORT_TIMEOUT, default 30000 ms. */
  exportTimeoutMillis: number;
}

export interface TracingOptions {
  /** OTEL_TRACES_EXPORTER (first entry of the comma list), default `otlp`. */
  exporter: TracesExporter;
  /** OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL, default `http/protobuf`. */
  protocol: OtlpProtocol;
  /**
   * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT used as-is; else OTEL_EXPORTER_OTLP_ENDPOINT plus `/v1/traces` for
   * http (as-is for grpc); else `http://localhost:4318/v1/traces` (http) or `http://localhost:4317` (grpc).
   */
  endpoint?: string;
  /** OTEL_EXPORTER_OTLP_HEADERS merged with (and overridden by) OTEL_EXPORTER_OTLP_TRACES_HEADERS. */
  headers: Record<string, string>;
  /** OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT, default 10000 ms. */
  timeoutMs: number;
  /** OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION, default `none`. */
  compression: OtlpCompression;
  batch: BatchOptions;
  /** OTEL_SERVICE_NAME, else `service.name` from OTEL_RESOURCE_ATTRIBUTES, default `pyats-exporter`. */
  serviceName: string;
  /** OTEL_RESOURCE_ATTRIBUTES, percent-decoded; its `service.name` always equals `serviceName`. */
  resourceAttributes: Record<string, string>;
}

/** A tracing environment variable with a value we cannot use (code `bad_env`); thrown at start-up only. */
export class TracingConfigError extends ConfigError {
  constructor(
    readonly variable: string,
    readonly value: string,
    reason: string,
  ) {
    super('bad_env', `${variable}=${JSON.stringify(value)}: ${reason}`);
  }
}

interface EnvValue {
  variable: string;
  value: string;
}

/** The first of `variables` that is set to a non-blank value (the SDK treats blank as unset too). */
function readEnv(env: NodeJS.ProcessEnv, ...variables: string[]): EnvValue | undefined {
  for (const variable of variables) {
    const value = env[variable]?.trim();
    if (value) return { variable, value };
  }
  return undefined;
}

function oneOf<T extends string>(entry: EnvValue, allowed: readonly T[], value = entry.value): T {
  const found = allowed.find((candidate) => candidate === value);
  if (found === undefined) {
    throw new TracingConfigError(entry.variable, entry.value, `expected one of ${allowed.join(', ')}`);
  }
  return found;
}

function integerFromEnv(
  env: NodeJS.ProcessEnv,
  fallback: number,
  min: number,
  ...variables: string[]
): number {
  const entry = readEnv(env, ...variables);
  if (entry === undefined) return fallback;
  const parsed = /^\d+$/.test(entry.value) ? Number(entry.value) : NaN;
  if (!Number.isSafeInteger(parsed) || parsed < min) {
    throw new TracingConfigError(entry.variable, entry.value, `expected an integer >= ${min}`);
  }
  return parsed;
}

function percentDecode(entry: EnvValue, text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new TracingConfigError(
      entry.variable,
      entry.value,
      `bad percent-encoding in ${JSON.stringify(text)}`,
    );
  }
}

/** `k=v,k2=v2` (W3C baggage style, no properties), keys and values percent-decoded. */
function keyValueList(
  entry: EnvValue | undefined,
  into: Record<string, string> = {},
): Record<string, string> {
  if (entry === undefined) return into;
  for (const item of entry.value.split(',')) {
    if (item.trim() === '') continue;
    const eq = item.indexOf('=');
    const key = eq < 0 ? '' : item.slice(0, eq).trim();
    if (key === '') {
      throw new TracingConfigError(
        entry.variable,
        entry.value,
        `entry ${JSON.stringify(item)} is not key=value`,
      );
    }
    into[percentDecode(entry, key)] = percentDecode(entry, item.slice(eq + 1).trim());
  }
  return into;
}

function checkUrl(entry: EnvValue, url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TracingConfigError(entry.variable, entry.value, 'not a URL');
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new TracingConfigError(entry.variable, entry.value, 'expected an http:// or https:// URL');
  }
  return url;
}

function endpointFromEnv(env: NodeJS.ProcessEnv, protocol: OtlpProtocol): string {
  const traces = readEnv(env, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT');
  if (traces !== undefined) return checkUrl(traces, traces.value);
  const base = readEnv(env, 'OTEL_EXPORTER_OTLP_ENDPOINT');
  if (protocol === 'grpc') return base === undefined ? DEFAULT_GRPC_ENDPOINT : checkUrl(base, base.value);
  if (base === undefined) return DEFAULT_HTTP_TRACES_ENDPOINT;
  // The spec appends the signal path to the base endpoint for http, whether or not it ends in a slash.
  return checkUrl(base, base.value.endsWith('/') ? `${base.value}v1/traces` : `${base.value}/v1/traces`);
}

/** Parses the standard OpenTelemetry tracing variables; throws TracingConfigError on any unusable value. */
export function tracingOptionsFromEnv(env: NodeJS.ProcessEnv): TracingOptions {
  let exporter: TracesExporter = 'otlp';
  const exporters = readEnv(env, 'OTEL_TRACES_EXPORTER');
  if (exporters !== undefined) {
    const names = exporters.value
      .split(',')
      .map((name) => name.trim().toLowerCase())
      .filter((name) => name !== '');
    // Every entry must be known; only the first is used (one exporter per process).
    const known = names.map((name) => oneOf(exporters, TRACES_EXPORTERS, name));
    exporter = known[0] ?? 'otlp';
  }

  const protocolEntry = readEnv(env, 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', 'OTEL_EXPORTER_OTLP_PROTOCOL');
  const protocol: OtlpProtocol =
    protocolEntry === undefined ? 'http/protobuf' : oneOf(protocolEntry, OTLP_PROTOCOLS);

  const compressionEntry = readEnv(
    env,
    'OTEL_EXPORTER_OTLP_TRACES_COMPRESSION',
    'OTEL_EXPORTER_OTLP_COMPRESSION',
  );
  const compression: OtlpCompression =
    compressionEntry === undefined
      ? 'none'
      : oneOf(compressionEntry, OTLP_COMPRESSIONS, compressionEntry.value.toLowerCase());

  const headers = keyValueList(readEnv(env, 'OTEL_EXPORTER_OTLP_HEADERS'));
  keyValueList(readEnv(env, 'OTEL_EXPORTER_OTLP_TRACES_HEADERS'), headers);

  const resourceAttributes = keyValueList(readEnv(env, 'OTEL_RESOURCE_ATTRIBUTES'));
  const serviceName =
    readEnv(env, 'OTEL_SERVICE_NAME')?.value ?? resourceAttributes[ATTR_SERVICE_NAME] ?? DEFAULT_SERVICE_NAME;
  resourceAttributes[ATTR_SERVICE_NAME] = serviceName;

  const maxQueueSize = integerFromEnv(env, 2048, 1, 'OTEL_BSP_MAX_QUEUE_SIZE');
  // The SDK clamps a batch larger than the queue the same way (with a warning).
  const maxExportBatchSize = Math.min(
    integerFromEnv(env, 512, 1, 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE'),
    maxQueueSize,
  );

  return {
    exporter,
    protocol,
    endpoint: endpointFromEnv(env, protocol),
    headers,
    timeoutMs: integerFromEnv(
      env,
      10_000,
      1,
      'OTEL_EXPORTER_OTLP_TRACES_TIMEOUT',
      'OTEL_EXPORTER_OTLP_TIMEOUT',
    ),
    compression,
    batch: {
      maxQueueSize,
      maxExportBatchSize,
      scheduledDelayMillis: integerFromEnv(env, 5000, 0, 'OTEL_BSP_SCHEDULE_DELAY'),
      exportTimeoutMillis: integerFromEnv(env, 30_000, 1, 'OTEL_BSP_EXPORT_TIMEOUT'),
    },
    serviceName,
    resourceAttributes,
  };
}

/**
 * The base resource every span carries: telemetry.sdk.*, `service.version` (when given), then
 * OTEL_RESOURCE_ATTRIBUTES (which may override both), then `service.name`.
 */
export function baseResource(
  options: Pick<TracingOptions, 'serviceName' | 'resourceAttributes'>,
  serviceVersion?: string,
): Resource {
  return resourceFromAttributes({
    [ATTR_TELEMETRY_SDK_NAME]: SDK_INFO[ATTR_TELEMETRY_SDK_NAME],
    [ATTR_TELEMETRY_SDK_LANGUAGE]: SDK_INFO[ATTR_TELEMETRY_SDK_LANGUAGE],
    [ATTR_TELEMETRY_SDK_VERSION]: SDK_INFO[ATTR_TELEMETRY_SDK_VERSION],
    ...(serviceVersion === undefined ? {} : { [ATTR_SERVICE_VERSION]: serviceVersion }),
    ...options.resourceAttributes,
    [ATTR_SERVICE_NAME]: options.serviceName,
  });
}

export type SpanDropReason = 'export_failed' | 'queue_full' | 'shutdown';

/** Where the pipeline reports what happened to each span (the metrics sink turns these into counters). */
export interface SpanPipelineHooks {
  spansExported(n: number): void;
  spansDropped(n: number, reason: SpanDropReason): void;
}

export interface SpanPipeline {
  /** Hand finished spans to `processor.onEnd`. Its forceFlush/shutdown never reject (failures are counted). */
  processor: SpanProcessor;
  /** Spans accepted by the processor and not yet handed to the exporter (at most maxQueueSize). */
  backlog(): number;
  /** True while the last export attempt failed (an outage); false before any export and once one succeeds. */
  exportFailing(): boolean;
  forceFlush(): Promise<void>;
  shutdown(): Promise<void>;
}

type GrpcExporterConfig = NonNullable<ConstructorParameters<typeof OtlpGrpcTraceExporter>[0]>;
type GrpcMetadata = NonNullable<GrpcExporterConfig['metadata']>;

function grpcMetadata(headers: Record<string, string>): GrpcMetadata {
  // Loaded only when grpc is chosen: @grpc/grpc-js is large, and the http paths never need it.
  const grpc = createRequire(import.meta.url)('@grpc/grpc-js') as typeof import('@grpc/grpc-js');
  const metadata = new grpc.Metadata();
  for (const [key, value] of Object.entries(headers)) metadata.set(key.toLowerCase(), value);
  return metadata;
}

/** ProtobufTraceSerializer with our encoder for requests: the same bytes, in one pass (otlp-encoder.ts). */
const PROTOBUF_TRACE_SERIALIZER: ISerializer<ReadableSpan[], IExportTraceServiceResponse> = {
  serializeRequest: encodeTraceRequest,
  deserializeResponse: (data) => ProtobufTraceSerializer.deserializeResponse(data),
};

/** The component type exporter-trace-otlp-proto reports in the SDK's self-observability metrics. */
const OTLP_HTTP_SPAN_EXPORTER = 'otlp_http_span_exporter';

/**
 * What exporter-trace-otlp-proto's OTLPTraceExporter builds — the library's http transport, retries,
 * timeout, compression and partial-success handling — with PROTOBUF_TRACE_SERIALIZER as its serializer.
 */
function createProtobufSpanExporter(config: OTLPExporterNodeConfigBase): SpanExporter {
  const delegate = createOtlpHttpExportDelegate(
    convertLegacyHttpOptions(config, 'TRACES', 'v1/traces', { 'Content-Type': 'application/x-protobuf' }),
    PROTOBUF_TRACE_SERIALIZER,
    OTLP_HTTP_SPAN_EXPORTER,
    TraceExporterMetricsHelper,
    undefined,
  );
  return new OTLPExporterBase(delegate);
}

/** The exporter for `options`, with url, headers, timeout and compression passed explicitly. */
export function createSpanExporter(options: TracingOptions): SpanExporter | undefined {
  if (options.exporter === 'none') return undefined;
  // ConsoleSpanExporter writes with console.dir, i.e. to stdout; our logs go to stderr (src/log.ts).
  if (options.exporter === 'console') return new ConsoleSpanExporter();
  const compression = options.compression === 'gzip' ? CompressionAlgorithm.GZIP : CompressionAlgorithm.NONE;
  if (options.protocol === 'grpc') {
    return new OtlpGrpcTraceExporter({
      url: options.endpoint ?? DEFAULT_GRPC_ENDPOINT,
      metadata: grpcMetadata(options.headers),
      timeoutMillis: options.timeoutMs,
      compression,
    });
  }
  const config: OTLPExporterNodeConfigBase = {
    url: options.endpoint ?? DEFAULT_HTTP_TRACES_ENDPOINT,
    headers: { ...options.headers },
    timeoutMillis: options.timeoutMs,
    compression,
  };
  return options.protocol === 'http/json'
    ? new OtlpJsonTraceExporter(config)
    : createProtobufSpanExporter(config);
}

/** Spans accepted by the queue guard and not yet handed to the exporter (= BatchSpanProcessor's queue). */
class QueueCount {
  size = 0;
}

/**
 * Reports each batch's ExportResult to the hooks, and tells the queue guard the batch left the queue. While the
 * backend is down every batch fails; the counter has the numbers, so the log gets one warning when an outage
 * starts and one line when export recovers, not one per batch for hours.
 */
class CountingSpanExporter implements SpanExporter {
  private outage = { batches: 0, spans: 0 };
  /** The last export's outcome was a failure. */
  failing = false;

  constructor(
    private readonly inner: SpanExporter,
    private readonly queue: QueueCount,
    private readonly hooks: SpanPipelineHooks,
    private readonly logger: Logger,
  ) {}

  export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    const count = spans.length;
    this.queue.size -= count;
    const done = (result: ExportResult): void => {
      this.failing = result.code !== ExportResultCode.SUCCESS;
      if (result.code === ExportResultCode.SUCCESS) {
        this.hooks.spansExported(count);
        if (this.outage.batches > 0) {
          this.logger.info(
            { failedBatches: this.outage.batches, droppedSpans: this.outage.spans },
            'span export recovered',
          );
          this.outage = { batches: 0, spans: 0 };
        }
      } else {
        this.hooks.spansDropped(count, 'export_failed');
        const log = this.outage.batches === 0 ? this.logger.warn : this.logger.debug;
        log.call(this.logger, { err: result.error, spans: count }, 'span export failed');
        this.outage.batches += 1;
        this.outage.spans += count;
      }
      resultCallback(result);
    };
    try {
      this.inner.export(spans, done);
    } catch (error) {
      done({
        code: ExportResultCode.FAILED,
        error: error instanceof Error ? error : new Error(String(error)),
      });
    }
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve();
  }
}

/**
 * Counts the spans BatchSpanProcessor would drop silently.
 *
 * sdk-trace 2.x's BatchSpanProcessorBase.onEnd returns without a trace (only a diag message and a
 * self-observability meter, which needs a MeterProvider we do not run) when it is shut down, and drops a
 * span when `_finishedSpans.length >= maxQueueSize`. Its queue shrinks only when a batch is spliced off
 * and handed to `exporter.export` — which, for resources without async attributes (ours), happens in the
 * same tick, so CountingSpanExporter sees every dequeue. This guard keeps the same count (accepted minus
 * exported) and refuses — and counts — a span itself when that count has reached maxQueueSize, so the
 * inner processor never hits its own limit and no span disappears uncounted. Were a resource ever to have
 * async attributes, the export (hence the dequeue) would come later and the guard would drop early: still
 * counted, never silent.
 */
class QueueGuardProcessor implements SpanProcessor {
  private shutDown = false;
  private dropping = false;

  constructor(
    private readonly inner: SpanProcessor,
    private readonly queue: QueueCount,
    private readonly maxQueueSize: number,
    private readonly hooks: SpanPipelineHooks,
    private readonly logger: Logger,
  ) {}

  onStart(): void {}

  onEnd(span: ReadableSpan): void {
    if (this.shutDown) {
      this.hooks.spansDropped(1, 'shutdown');
      return;
    }
    // BatchSpanProcessor ignores unsampled spans; they are neither queued nor lost.
    if ((span.spanContext().traceFlags & TraceFlags.SAMPLED) === 0) return;
    if (this.queue.size >= this.maxQueueSize) {
      this.hooks.spansDropped(1, 'queue_full');
      if (!this.dropping) {
        this.dropping = true;
        this.logger.warn({ maxQueueSize: this.maxQueueSize }, 'span queue full, dropping spans');
      }
      return;
    }
    this.dropping = false;
    this.queue.size += 1;
    this.inner.onEnd(span);
  }

  async forceFlush(): Promise<void> {
    try {
      await this.inner.forceFlush();
    } catch (error) {
      // The failed batch was already counted and logged by CountingSpanExporter.
      this.logger.debug({ err: error }, 'span flush failed');
    }
  }

  async shutdown(): Promise<void> {
    this.shutDown = true;
    try {
      await this.inner.shutdown();
    } catch (error) {
      this.logger.warn({ err: error }, 'span pipeline shutdown failed');
    }
  }
}

/** The span pipeline for `options`, or undefined when the exporter is `none`. Starts no I/O until spans come. */
export function createSpanPipeline(
  options: TracingOptions,
  hooks: SpanPipelineHooks,
  logger: Logger,
): SpanPipeline | undefined {
  const exporter = createSpanExporter(options);
  if (exporter === undefined) return undefined;
  const queue = new QueueCount();
  const counting = new CountingSpanExporter(exporter, queue, hooks, logger);
  const batch = new BatchSpanProcessor(counting, {
    maxQueueSize: options.batch.maxQueueSize,
    maxExportBatchSize: Math.min(options.batch.maxExportBatchSize, options.batch.maxQueueSize),
    scheduledDelayMillis: options.batch.scheduledDelayMillis,
    exportTimeoutMillis: options.batch.exportTimeoutMillis,
  });
  const processor = new QueueGuardProcessor(batch, queue, options.batch.maxQueueSize, hooks, logger);
  return {
    processor,
    backlog: () => queue.size,
    exportFailing: () => counting.failing,
    forceFlush: () => processor.forceFlush(),
    shutdown: () => processor.shutdown(),
  };
}
