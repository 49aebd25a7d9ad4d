// OTLP logs (opt-in, OTEL_LOGS_EXPORTER=otlp): each line of a section's log excerpt (section-logs.ts) as an
// OpenTelemetry log record carrying the section span's trace and span ids, so a logs backend (Loki, Elastic)
// shows a span's lines with one click. The OTel JS logs SDK and its OTLP exporters do the work; like the span
// pipeline, a guard in front of the batch processor counts every record it would drop silently.
import { ROOT_CONTEXT, trace, TraceFlags } from '@opentelemetry/api';
import { SeverityNumber, type Logger as OtelLogger } from '@opentelemetry/api-logs';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { OTLPLogExporter as OtlpJsonLogExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { OTLPLogExporter as OtlpProtobufLogExporter } from '@opentelemetry/exporter-logs-otlp-proto';
import type { Resource } from '@opentelemetry/resources';
import {
  BatchLogRecordProcessor,
  ConsoleLogRecordExporter,
  LoggerProvider,
  type LogRecordExporter,
  type LogRecordProcessor,
  type ReadableLogRecord,
  type SdkLogRecord,
} from '@opentelemetry/sdk-logs';
import type { FinishedSection, JobSummary, SectionSink, StartedSection } from '../events/index.js';
import type { Logger } from '../log.js';
import { INSTRUMENTATION_SCOPE_NAME } from './spans.js';
import { TracingConfigError } from './tracing.js';

export const LOGS_EXPORTERS = ['otlp', 'console', 'none'] as const;
export type LogsExporter = (typeof LOGS_EXPORTERS)[number];
export const LOGS_PROTOCOLS = ['http/protobuf', 'http/json'] as const;
export type LogsProtocol = (typeof LOGS_PROTOCOLS)[number];

/**
 * Why log records were lost; each is pre-created at 0 (as for spans). Nothing is emitted after shutdown: the
 * sinks are shut down after the last section has gone through them.
 */
export const LOG_RECORD_DROP_REASONS = ['export_failed', 'queue_full'] as const;

export interface LogsOptions {
  /** OTEL_LOGS_EXPORTER (first of the list), default `none`: log records are opt-in. */
  exporter: LogsExporter;
  /** OTEL_EXPORTER_OTLP_LOGS_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL, default `http/protobuf`. */
  protocol: LogsProtocol;
  /** OTEL_BLRP_MAX_QUEUE_SIZE (2048), OTEL_BLRP_MAX_EXPORT_BATCH_SIZE (512), OTEL_BLRP_SCHEDULE_DELAY (1000 ms), OTEL_BLRP_EXPORT_TIMEOUT (30000 ms). */
  batch: {
    maxQueueSize: number;
    maxExportBatchSize: number;
    scheduledDelayMillis: number;
    exportTimeoutMillis: number;
  };
}

function envValue(env: NodeJS.ProcessEnv, ...names: string[]): { name: string; value: string } | undefined {
  for (const name of names) {
    const value = env[name]?.trim();
    if (value) return { name, value };
  }
  return undefined;
}

function envInteger(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number): number {
  const entry = envValue(env, name);
  if (entry === undefined) return fallback;
  const n = /^\d+$/.test(entry.value) ? Number(entry.value) : NaN;
  if (!Number.isSafeInteger(n) || n < min) {
    throw new TracingConfigError(name, entry.value, `expected an integer >= ${min}`);
  }
  return n;
}

/**
 * The logs settings of the standard OTEL_* variables. Endpoint, headers, timeout and compression
 * (OTEL_EXPORTER_OTLP_(LOGS_)*) are read by the OTLP log exporter itself.
 */
export function logsOptionsFromEnv(env: NodeJS.ProcessEnv): LogsOptions {
  const exporterEntry = envValue(env, 'OTEL_LOGS_EXPORTER');
  const first = exporterEntry?.value.split(',')[0]?.trim() ?? 'none';
  const exporter = LOGS_EXPORTERS.find((e) => e === first);
  if (exporter === undefined) {
    throw new TracingConfigError(
      'OTEL_LOGS_EXPORTER',
      exporterEntry?.value ?? '',
      `expected one of ${LOGS_EXPORTERS.join(', ')}`,
    );
  }
  const protocolEntry = envValue(env, 'OTEL_EXPORTER_OTLP_LOGS_PROTOCOL', 'OTEL_EXPORTER_OTLP_PROTOCOL');
  let protocol: LogsProtocol = 'http/protobuf';
  if (protocolEntry !== undefined && exporter === 'otlp') {
    const found = LOGS_PROTOCOLS.find((p) => p === protocolEntry.value);
    if (found === undefined) {
      const why =
        protocolEntry.value === 'grpc'
          ? 'log records go over http/protobuf or http/json (set OTEL_EXPORTER_OTLP_LOGS_PROTOCOL)'
          : `expected one of ${LOGS_PROTOCOLS.join(', ')}`;
      throw new TracingConfigError(protocolEntry.name, protocolEntry.value, why);
    }
    protocol = found;
  }
  const maxQueueSize = envInteger(env, 'OTEL_BLRP_MAX_QUEUE_SIZE', 2048, 1);
  return {
    exporter,
    protocol,
    batch: {
      maxQueueSize,
      maxExportBatchSize: Math.min(maxQueueSize, envInteger(env, 'OTEL_BLRP_MAX_EXPORT_BATCH_SIZE', 512, 1)),
      scheduledDelayMillis: envInteger(env, 'OTEL_BLRP_SCHEDULE_DELAY', 1000, 0),
      exportTimeoutMillis: envInteger(env, 'OTEL_BLRP_EXPORT_TIMEOUT', 30_000, 1),
    },
  };
}

export interface LogRecordHooks {
  exported(count: number): void;
  dropped(count: number, reason: (typeof LOG_RECORD_DROP_REASONS)[number]): void;
}

/** Records accepted by the guard and not yet handed to the exporter (= the batch processor's queue). */
class QueueCount {
  size = 0;
}

/** Counts each batch's outcome; one warning when export starts failing, one line when it recovers. */
class CountingLogExporter implements LogRecordExporter {
  private failing = false;

  constructor(
    private readonly inner: LogRecordExporter,
    private readonly queue: QueueCount,
    private readonly hooks: LogRecordHooks,
    private readonly logger: Logger,
  ) {}

  export(logs: ReadableLogRecord[], resultCallback: (result: ExportResult) => void): void {
    const count = logs.length;
    this.queue.size -= count;
    const done = (result: ExportResult): void => {
      if (result.code === ExportResultCode.SUCCESS) {
        this.hooks.exported(count);
        if (this.failing) this.logger.info('log record export recovered');
        this.failing = false;
      } else {
        this.hooks.dropped(count, 'export_failed');
        if (!this.failing)
          this.logger.warn({ err: result.error, records: count }, 'log record export failed');
        this.failing = true;
      }
      resultCallback(result);
    };
    try {
      this.inner.export(logs, done);
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
    return this.inner.forceFlush();
  }
}

/**
 * BatchLogRecordProcessor drops a record without a trace when its queue is full (sdk-logs 0.223: only a
 * self-observability meter we do not run); its queue shrinks when a batch goes to the
 * exporter, which CountingLogExporter sees. This guard keeps that count and refuses, counted, the record
 * that would overflow it (the same reasoning as tracing.ts's QueueGuardProcessor).
 */
class QueueGuardLogProcessor implements LogRecordProcessor {
  private dropping = false;

  constructor(
    private readonly inner: LogRecordProcessor,
    private readonly queue: QueueCount,
    private readonly maxQueueSize: number,
    private readonly hooks: LogRecordHooks,
    private readonly logger: Logger,
  ) {}

  onEmit(record: SdkLogRecord): void {
    if (this.queue.size >= this.maxQueueSize) {
      this.hooks.dropped(1, 'queue_full');
      if (!this.dropping)
        this.logger.warn({ maxQueueSize: this.maxQueueSize }, 'log record queue full, dropping');
      this.dropping = true;
      return;
    }
    this.dropping = false;
    this.queue.size += 1;
    this.inner.onEmit(record);
  }

  async forceFlush(): Promise<void> {
    await this.inner
      .forceFlush()
      .catch((error: unknown) => this.logger.debug({ err: error }, 'log flush failed'));
  }

  async shutdown(): Promise<void> {
    await this.inner
      .shutdown()
      .catch((error: unknown) => this.logger.warn({ err: error }, 'log shutdown failed'));
  }
}

export interface LogRecordPipeline {
  logger: OtelLogger;
  forceFlush(): Promise<void>;
  shutdown(): Promise<void>;
}

/** The log record pipeline for `options`, or undefined when the exporter is `none`. */
export function createLogRecordPipeline(
  options: LogsOptions,
  resource: Resource,
  scopeVersion: string,
  hooks: LogRecordHooks,
  logger: Logger,
): LogRecordPipeline | undefined {
  if (options.exporter === 'none') return undefined;
  const exporter: LogRecordExporter =
    options.exporter === 'console'
      ? new ConsoleLogRecordExporter()
      : options.protocol === 'http/json'
        ? new OtlpJsonLogExporter()
        : new OtlpProtobufLogExporter();
  const queue = new QueueCount();
  const batch = new BatchLogRecordProcessor({
    exporter: new CountingLogExporter(exporter, queue, hooks, logger),
    ...options.batch,
  });
  const processor = new QueueGuardLogProcessor(batch, queue, options.batch.maxQueueSize, hooks, logger);
  const provider = new LoggerProvider({ resource, processors: [processor] });
  return {
    logger: provider.getLogger(INSTRUMENTATION_SCOPE_NAME, scopeVersion),
    forceFlush: () => provider.forceFlush(),
    shutdown: () => provider.shutdown(),
  };
}

/** pyATS's log line tag, `%AETEST-6-INFO:` / `%SCRIPT-3-ERROR:`: facility, syslog severity digit, level. */
const PYATS_LEVEL = /%[A-Z0-9_]+-([0-7])-([A-Z]+):/;
const SYSLOG_SEVERITY: readonly SeverityNumber[] = [
  SeverityNumber.FATAL4, // 0 emergency
  SeverityNumber.FATAL3, // 1 alert
  SeverityNumber.FATAL, // 2 critical
  SeverityNumber.ERROR, // 3 error
  SeverityNumber.WARN, // 4 warning
  SeverityNumber.INFO2, // 5 notice
  SeverityNumber.INFO, // 6 informational
  SeverityNumber.DEBUG, // 7 debug
];

/** The severity of a pyATS log line from its `%FACILITY-N-LEVEL:` tag, when it has one. */
export function lineSeverity(line: string): { number: SeverityNumber; text: string } | undefined {
  const match = PYATS_LEVEL.exec(line.length > 512 ? line.slice(0, 512) : line);
  if (match === null) return undefined;
  return { number: SYSLOG_SEVERITY[Number(match[1])] as SeverityNumber, text: match[2] as string };
}

/** Byte ranges of one log file already sent for a run, so a line goes out once, under its innermost section. */
class SentRanges {
  private ranges: [number, number][] = [];

  /** The parts of [start, end) not sent yet, now marked sent. */
  take(start: number, end: number): [number, number][] {
    const parts: [number, number][] = [];
    let at = start;
    for (const [s, e] of this.ranges) {
      if (e <= at || s >= end) continue;
      if (s > at) parts.push([at, s]);
      at = Math.max(at, e);
    }
    if (at < end) parts.push([at, end]);
    this.ranges.push([start, end]);
    this.ranges.sort((a, b) => a[0] - b[0]);
    // Adjacent ranges (a step, then the next) merge, so a run's list stays short.
    const merged: [number, number][] = [];
    for (const range of this.ranges) {
      const last = merged[merged.length - 1];
      if (last !== undefined && range[0] <= last[1]) last[1] = Math.max(last[1], range[1]);
      else merged.push([range[0], range[1]]);
    }
    this.ranges = merged;
    return parts;
  }
}

/**
 * Emits each line of a section's log excerpt as a log record of the section's span. Sections reach it
 * children first (SectionLogSink keeps their order), so a line is sent once, with the innermost section that
 * has it: a failed testcase's record set holds its own lines, its failed step's are the step's.
 */
export class LogRecordSink implements SectionSink {
  /** runId → log file → byte ranges sent. */
  private readonly sent = new Map<string, Map<string, SentRanges>>();

  constructor(
    private readonly pipeline: LogRecordPipeline,
    private readonly maxAttributeLength: number,
  ) {}

  sectionStarted(_section: StartedSection): void {}

  sectionFinished(section: FinishedSection): void {
    const excerpt = section.logExcerpt;
    if (excerpt === undefined || excerpt === '') return;
    const bytes = Buffer.from(excerpt, 'utf8');
    const range = section.logRange;
    let parts: [number, number][] = [[0, bytes.length]];
    if (range !== undefined) {
      // The excerpt is the slice's tail: it ends where the slice does.
      const end = range.begin + range.size;
      const start = end - bytes.length;
      let files = this.sent.get(section.job.runId);
      if (files === undefined) this.sent.set(section.job.runId, (files = new Map()));
      let sent = files.get(range.file);
      if (sent === undefined) files.set(range.file, (sent = new SentRanges()));
      parts = sent.take(start, end).map(([s, e]) => [s - start, e - start]);
    }
    const context = trace.setSpanContext(ROOT_CONTEXT, {
      traceId: section.job.traceId,
      spanId: section.spanId,
      traceFlags: TraceFlags.SAMPLED,
    });
    const attributes = {
      'pyats.job.name': section.job.jobName,
      'pyats.job.run_id': section.job.runId,
      'pyats.section.type': section.type,
      ...(section.fullid === undefined
        ? {}
        : { 'pyats.section.fullid': section.fullid.slice(0, this.maxAttributeLength) }),
      ...(range === undefined ? {} : { 'log.file.name': range.file }),
    };
    for (const [from, to] of parts) {
      for (const line of bytes.toString('utf8', from, to).split('\n')) {
        if (line === '') continue;
        const severity = lineSeverity(line);
        this.pipeline.logger.emit({
          timestamp: section.stopTime,
          body: line,
          attributes,
          context,
          ...(severity === undefined ? {} : { severityNumber: severity.number, severityText: severity.text }),
        });
      }
    }
  }

  jobFinished(summary: JobSummary): void {
    this.sent.delete(summary.job.runId);
  }

  forceFlush(): Promise<void> {
    return this.pipeline.forceFlush();
  }

  shutdown(): Promise<void> {
    this.sent.clear();
    return this.pipeline.shutdown();
  }
}
