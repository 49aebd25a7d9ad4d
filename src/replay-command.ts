// `pyats-exporter replay FILE...`: feeds finished jobs (results.json, archive .zip, NDJSON capture) through
// the same pipeline as a live run, so spans carry the same ids; metrics are pushed (--pushgateway) and/or
// served on /metrics until SIGTERM (--hold).
import type { ExporterConfig } from './config.js';
import { buildTelemetry, trackerLimits } from './daemon.js';
import {
  resolveZone,
  SectionTracker,
  SinkFanout,
  type FinishedSection,
  type JobSummary,
  type SectionSink,
  type StartedSection,
} from './events/index.js';
import { createApp, listen } from './http/index.js';
import { ReplayClock, createProgressReporter, replayFiles } from './ingest/index.js';
import type { Logger } from './log.js';
import { Pipeline } from './pipeline.js';

/** Prints each replayed job's trace id on stdout, so a CI log line of the replay leads to the trace. */
class TraceIdPrinter implements SectionSink {
  sectionStarted(_section: StartedSection): void {}
  sectionFinished(_section: FinishedSection): void {}
  jobFinished({ job, result }: JobSummary): void {
    process.stdout.write(`job ${job.jobName} (${job.jobId}): ${result}, trace ${job.traceId}\n`);
  }
  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

/** Resolves with the process exit code: 1 when a file could not be replayed, else 0. */
export async function runReplay(
  config: ExporterConfig,
  logger: Logger,
  stopped: Promise<unknown>,
): Promise<number> {
  const telemetry = buildTelemetry(config, logger);
  const zone = resolveZone(config.timezone);
  const clock = new ReplayClock();
  const tracker = new SectionTracker({
    sink: new SinkFanout([telemetry.fanout, new TraceIdPrinter()], logger),
    logger,
    now: clock.now,
    ...trackerLimits(config),
  });
  const pipeline = new Pipeline({
    normalize: { zone, maxStringLength: config.maxAttributeLength },
    tracker,
    health: telemetry.health,
    logger,
  });
  const progress = createProgressReporter(process.stderr);
  const summary = await replayFiles(config.replay.files, pipeline, {
    clock,
    zone,
    onProgress: progress.onProgress,
    flush: () => telemetry.fanout.forceFlush(),
  });
  tracker.endAll();
  await telemetry.fanout.forceFlush();
  progress.finish(summary);

  if (config.replay.hold) {
    const web = config.web;
    const app = createApp({
      registry: telemetry.registry,
      logger,
      ready: () => ({ ready: true }),
      ...(web?.auth ? { auth: web.auth } : {}),
    });
    const server = await listen(app, { ...config.listen, logger, ...(web?.tls ? { tls: web.tls } : {}) });
    // At warn: replay logs only warnings by default, and where /metrics is served must be seen.
    logger.warn(
      { url: `${server.protocol}://${server.address.host}:${server.address.port}`, replay: 'finished' },
      'http server listening',
    );
    await stopped;
    await server.close();
  }
  await telemetry.shutdown();
  return summary.failed > 0 ? 1 : 0;
}
