// The sinks and their plumbing: Prometheus metrics (with the cardinality guard and the exporter's own
// health), the Pushgateway publisher, and spans exported over OTLP with their sections' log excerpts.
export { MetricsSink } from './metrics.js';
export { GUARDED_LABELS, type GuardedLabel, type LabelLimits } from './cardinality.js';
export { ExporterHealth, registerProcessMetrics } from './health.js';
export { ExpositionPiece, isSelfRendering } from './series.js';
export { PushgatewayPublisher } from './pushgateway.js';
export { SpanSink } from './spans.js';
export { SpanThread } from './span-thread.js';
export { JobLogSink } from './job-log.js';
export {
  DEFAULT_SECTION_LOG_MAX_BYTES,
  SECTION_LOG_MODES,
  SECTION_LOG_OUTCOMES,
  SectionLogSink,
  type SectionLogMode,
  type SectionLogOutcome,
} from './section-logs.js';
export {
  LOG_RECORD_DROP_REASONS,
  LogRecordSink,
  createLogRecordPipeline,
  logsOptionsFromEnv,
  type LogsOptions,
} from './log-records.js';
export {
  TracingConfigError,
  baseResource,
  createSpanPipeline,
  type SpanDropReason,
  tracingOptionsFromEnv,
  type TracingOptions,
} from './tracing.js';
