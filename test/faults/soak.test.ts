// A small version of bench/soak.ts (20 jobs of ~1,000 sections, each job a new reporter connection, over two
// socket paths) through the real socket path into a pipeline wired as src/daemon.ts wires it: afterwards
// nothing of any job, section or connection may still be held.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, describe, expect, it } from 'vitest';
import { startGeneratorReporter, soakJob, type SoakJob } from '../../bench/soak-reporter.js';
import { SinkFanout } from '../../src/events/fanout.js';
import { resolveZone } from '../../src/events/timezone.js';
import { SectionTracker } from '../../src/events/tracker.js';
import { silentLogger } from '../../src/log.js';
import { Pipeline } from '../../src/pipeline.js';
import { ReporterSubscriber, type ConnectionInfo } from '../../src/reporter/subscriber.js';
import { unpickle } from '../../src/python/unpickle.js';
import { ExporterHealth } from '../../src/telemetry/health.js';
import { MetricsSink } from '../../src/telemetry/metrics.js';
import { SpanSink } from '../../src/telemetry/spans.js';
import { TempDirs, until } from './support.js';

const JOBS = 20;
const SECTIONS = 1000;
const dirs = new TempDirs();
afterAll(() => dirs.removeAll());

class CountingProcessor implements SpanProcessor {
  ended = 0;
  traces = new Set<string>();
  onStart(): void {}
  onEnd(span: ReadableSpan): void {
    this.ended += 1;
    this.traces.add(span.spanContext().traceId);
  }
  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

async function value(registry: Registry, name: string): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (metric === undefined) return 0;
  return (await metric.get()).values.reduce((total, v) => total + v.value, 0);
}

describe('soak (small)', () => {
  it('releases every section, job and connection after 20 jobs of 1,000 sections', async () => {
    const logger = silentLogger();
    const registry = new Registry();
    const health = new ExporterHealth({ registry });
    const metrics = new MetricsSink({ registry });
    const processor = new CountingProcessor();
    const spans = new SpanSink({
      processor,
      resource: resourceFromAttributes({ 'service.name': 'soak-test' }),
      maxAttributeLength: 4096,
      scopeVersion: 'test',
    });
    const tracker = new SectionTracker({ sink: new SinkFanout([metrics, spans], logger), logger });
    const pipeline = new Pipeline({
      normalize: { zone: resolveZone('UTC'), maxStringLength: 4096 },
      tracker,
      health,
      logger,
    });
    const streamOf = (conn: ConnectionInfo): string => `reporter:${conn.id}`;
    const paths = [0, 1].map((i) => {
      const dir = join(dirs.make('pyats-soak-'), `job${i}`);
      mkdirSync(dir);
      return join(dir, 'reporter.sock');
    });
    const subscribers = paths.map((path) => {
      health.setReporterWatched(path);
      return new ReporterSubscriber({
        path,
        frameFormat: 'chunked',
        maxFrameBytes: 64 * 1024 * 1024,
        attach: { timeoutMs: 5000, maxSections: 10_000 },
        pollIntervalMs: 20,
        backoff: { initialMs: 10, maxMs: 100 },
        decode: (frame) => unpickle(frame),
        logger,
        handlers: {
          connected: (conn) => health.connectionOpened(conn.path),
          event: (conn, raw) => pipeline.ingest(streamOf(conn), 'reporter_socket', raw),
          frameRejected: (conn, code, detail) =>
            pipeline.reject(streamOf(conn), 'reporter_socket', code, detail),
          disconnected: (conn, reason) => {
            health.connectionClosed(conn.path, reason);
            pipeline.endStream(streamOf(conn));
          },
        },
      });
    });
    for (const subscriber of subscribers) subscriber.start();

    let next = 0;
    const sent: SoakJob[] = [];
    const reporters = paths.map((path) =>
      startGeneratorReporter(
        path,
        () => (next < JOBS ? soakJob(next++, SECTIONS, 'chunked') : undefined),
        (job) => sent.push({ ...job, bytes: Buffer.alloc(0) }),
      ),
    );
    try {
      await Promise.all(reporters.map((r) => r.done));
      await until('every job run counted', async () =>
        (await value(registry, 'pyats_job_runs_total')) === JOBS ? true : undefined,
      );
      await until('every connection closed', async () =>
        (await value(registry, 'pyats_exporter_reporter_connections_open')) === 0 ? true : undefined,
      );
      const sections = sent.reduce((n, job) => n + job.sections, 0);
      expect(sent).toHaveLength(JOBS);
      expect(sections).toBeGreaterThan(JOBS * SECTIONS * 0.9);
      expect(tracker.stats()).toEqual({
        streams: 0,
        openSections: 0,
        heldOrphans: 0,
        pendingRecords: 0,
        finishedSeqNums: 0,
      });
      expect(processor.ended).toBe(sections);
      expect(processor.traces.size).toBe(JOBS);
      expect(await value(registry, 'pyats_section_results_total')).toBe(sections);
      expect(await value(registry, 'pyats_exporter_events_rejected_total')).toBe(0);
      expect(await value(registry, 'pyats_sections_abandoned_total')).toBe(0);
      expect(await value(registry, 'pyats_exporter_reporter_connections_total')).toBe(JOBS);
      // The in-progress gauge drops the series of finished jobs instead of keeping zeros.
      const inProgress = registry.getSingleMetric('pyats_sections_in_progress');
      expect(inProgress && (await inProgress.get()).values).toEqual([]);
    } finally {
      await Promise.all(reporters.map((r) => r.close()));
      await Promise.all(subscribers.map((s) => s.stop()));
    }
  }, 120_000);
});
