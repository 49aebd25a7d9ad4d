// The sinks and their plumbing: Prometheus metrics (with the cardinality guard and the exporter's own
// health), the Pushgateway publisher, and spans exported over OTLP.
export { MetricsSink } from './metrics.js';
export { GUARDED_LABELS, type GuardedLabel, type LabelLimits } from './cardinality.js';
export { ExporterHealth, registerProcessMetrics } from './health.js';
export { isSelfRendering } from './series.js';
export { PushgatewayPublisher } from './pushgateway.js';
export { SpanSink } from './spans.js';
export { SpanThread } from './span-thread.js';
export { JobLogSink } from './job-log.js';
export {
  TracingConfigError,
  baseResource,
  createSpanPipeline,
  type SpanDropReason,
  tracingOptionsFromEnv,
  type TracingOptions,
} from './tracing.js';
