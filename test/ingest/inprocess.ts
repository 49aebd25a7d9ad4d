// The exporter's core built in-process the way src/daemon.ts builds it (pipeline → tracker → metrics and span
// sinks), with spans collected from the span sink, so ingest tests can compare what different sources produce.
import type { ReadableSpan, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { Registry } from 'prom-client';
import { SinkFanout } from '../../src/events/fanout.js';
import { resolveZone } from '../../src/events/timezone.js';
import { SectionTracker } from '../../src/events/tracker.js';
import type { NormalizeOptions } from '../../src/events/normalize.js';
import { CapturingTracker, parseCaptureLine, type CaptureWriter } from '../../src/ingest/capture.js';
import { silentLogger } from '../../src/log.js';
import { Pipeline } from '../../src/pipeline.js';
import { MetricsSink } from '../../src/telemetry/metrics.js';
import { SpanSink } from '../../src/telemetry/spans.js';

export interface SpanSummary {
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
  name: string;
  start: [number, number];
  end: [number, number];
  status: number;
  seqNum: number;
  result: string;
  type: string;
}

export interface Core {
  pipeline: Pipeline;
  tracker: SectionTracker;
  registry: Registry;
  normalize: NormalizeOptions;
  spans: ReadableSpan[];
  /** Events counted by source, and rejections by reason, as the health metrics would. */
  received: Map<string, number>;
  rejected: Map<string, number>;
  summaries(): SpanSummary[];
  /** Every `pyats_*` series of the metrics sink as `name{labels} value` lines, sorted. */
  metricLines(): Promise<string[]>;
}

export function createCore(
  options: { zone?: string; capture?: CaptureWriter; now?: () => number; maxOpenSections?: number } = {},
): Core {
  const logger = silentLogger();
  const registry = new Registry();
  const spans: ReadableSpan[] = [];
  const processor: SpanProcessor = {
    onStart: () => {},
    onEnd: (span) => spans.push(span),
    forceFlush: () => Promise.resolve(),
    shutdown: () => Promise.resolve(),
  };
  const sink = new SinkFanout(
    [
      new MetricsSink({ registry }),
      new SpanSink({
        processor,
        resource: resourceFromAttributes({ 'service.name': 'ingest-test' }),
        maxAttributeLength: 4096,
        scopeVersion: 'test',
      }),
    ],
    logger,
  );
  const trackerOptions = {
    sink,
    logger,
    ...(options.now ? { now: options.now } : {}),
    ...(options.maxOpenSections !== undefined ? { maxOpenSections: options.maxOpenSections } : {}),
  };
  const tracker = options.capture
    ? new CapturingTracker({ ...trackerOptions, capture: options.capture })
    : new SectionTracker(trackerOptions);
  const received = new Map<string, number>();
  const rejected = new Map<string, number>();
  const normalize: NormalizeOptions = { zone: resolveZone(options.zone ?? 'UTC'), maxStringLength: 4096 };
  const pipeline = new Pipeline({
    normalize,
    tracker,
    health: {
      eventReceived: (source) => received.set(source, (received.get(source) ?? 0) + 1),
      eventRejected: (reason) => rejected.set(reason, (rejected.get(reason) ?? 0) + 1),
      fieldDropped: (reason) => rejected.set(`field:${reason}`, (rejected.get(`field:${reason}`) ?? 0) + 1),
    },
    logger,
  });
  return {
    pipeline,
    tracker,
    registry,
    normalize,
    spans,
    received,
    rejected,
    summaries: () =>
      spans
        .map((span) => ({
          traceId: span.spanContext().traceId,
          spanId: span.spanContext().spanId,
          parentSpanId: span.parentSpanContext?.spanId,
          name: span.name,
          start: [...span.startTime] as [number, number],
          end: [...span.endTime] as [number, number],
          status: span.status.code,
          seqNum: Number(span.attributes['pyats.section.seq_num']),
          result: String(span.attributes['pyats.section.result']),
          type: String(span.attributes['pyats.section.type']),
        }))
        .sort((a, b) => a.seqNum - b.seqNum || a.spanId.localeCompare(b.spanId)),
    metricLines: async () => {
      const lines: string[] = [];
      for (const family of await registry.getMetricsAsJSON()) {
        for (const value of family.values) {
          const labels = Object.entries(value.labels)
            .sort(([a], [b]) => a.localeCompare(b))
            .map(([k, v]) => `${k}="${String(v)}"`)
            .join(',');
          const name = (value as { metricName?: string }).metricName ?? family.name;
          lines.push(`${name}{${labels}} ${value.value}`);
        }
      }
      return lines.sort();
    },
  };
}

/** Resolves when `probe` returns a value other than undefined; polls every 25 ms. */
export async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** A settable wall clock for trackers. */
export class TestClock {
  constructor(public ms: number) {}
  readonly now = (): number => this.ms;
}

/**
 * Replays a capture file into `core` the way docs/ingest.md tells replay to: events and ends in file order,
 * the tracker clock set from each line's `at`, every stream ended at a `capture` line and at the end.
 */
export function replayCapture(text: string, core: Core, clock: TestClock): void {
  for (const line of text.split('\n')) {
    const record = parseCaptureLine(line);
    if (record === undefined) continue;
    clock.ms = record.at;
    if (record.kind === 'event') core.pipeline.ingest(record.stream, 'replay', record.data);
    else if (record.kind === 'end') core.pipeline.endStream(record.stream);
    else core.tracker.endAll();
  }
  core.tracker.endAll();
}
