// The span thread: builds spans from the section records the main thread sends (span-records.ts), and exports
// them through the same pipeline as in-process (tracing.ts: exporter → counting → BatchSpanProcessor → queue
// guard). What the pipeline counts, and its queue depth, go back to the main thread, whose registry has the
// counters and whose sources are held while the queue is behind. See span-thread.ts for the main side.
import { parentPort, workerData } from 'node:worker_threads';
import { createLogger, type LogLevel } from '../log.js';
import { readSectionBatch, type SectionBatch } from './span-records.js';
import { SpanSink } from './spans.js';
import { baseResource, createSpanPipeline, type SpanDropReason, type TracingOptions } from './tracing.js';

/** What the main thread passes as `workerData`. */
export interface SpanWorkerData {
  tracing: TracingOptions;
  maxAttributeLength: number;
  /** The exporter's version: the instrumentation scope's and the resource's service.version. */
  version: string;
  logLevel: LogLevel;
}

export type SpanWorkerCommand =
  { cmd: 'batch'; batch: SectionBatch } | { cmd: 'flush'; id: number } | { cmd: 'shutdown'; id: number };

/** Counts since the previous report, and the state now. */
export interface SpanWorkerReport {
  kind: 'report';
  exported: number;
  dropped: Record<SpanDropReason, number>;
  /** Sections taken from batches since the thread started (each became a span or a counted drop). */
  handled: number;
  /** Spans queued in the pipeline, not yet handed to the exporter. */
  backlog: number;
  exportFailing: boolean;
}

export type SpanWorkerMessage = SpanWorkerReport | { kind: 'done'; id: number };

const port = parentPort;
if (port === null) throw new Error('span-worker.ts runs as a worker thread only');
const data = workerData as SpanWorkerData;
const logger = createLogger(data.logLevel).child({ thread: 'spans' });

let exported = 0;
let dropped: Record<SpanDropReason, number> = { export_failed: 0, queue_full: 0, shutdown: 0 };
let handled = 0;
let reportScheduled = false;

function report(): void {
  reportScheduled = false;
  port!.postMessage({
    kind: 'report',
    exported,
    dropped,
    handled,
    backlog: pipeline.backlog(),
    exportFailing: pipeline.exportFailing(),
  } satisfies SpanWorkerMessage);
  exported = 0;
  dropped = { export_failed: 0, queue_full: 0, shutdown: 0 };
}

/** Export results come from the exporter's callbacks; one report per turn of the event loop carries them. */
function scheduleReport(): void {
  if (reportScheduled) return;
  reportScheduled = true;
  setImmediate(report);
}

const created = createSpanPipeline(
  data.tracing,
  {
    spansExported: (n) => {
      exported += n;
      scheduleReport();
    },
    spansDropped: (n, reason) => {
      dropped[reason] += n;
      scheduleReport();
    },
  },
  logger,
);
if (created === undefined) throw new Error('the span thread needs an exporter (OTEL_TRACES_EXPORTER=none)');
const pipeline = created;
const sink = new SpanSink({
  processor: pipeline.processor,
  resource: baseResource(data.tracing, data.version),
  maxAttributeLength: data.maxAttributeLength,
  scopeVersion: data.version,
});

const visitor = {
  sectionFinished: (section: Parameters<SpanSink['sectionFinished']>[0]): void => {
    handled += 1;
    sink.sectionFinished(section);
  },
  jobFinished: (job: Parameters<SpanSink['jobFinished']>[0]['job']): void => sink.forgetRun(job.runId),
};

async function finish(command: { cmd: 'flush' | 'shutdown'; id: number }): Promise<void> {
  await sink.forceFlush();
  if (command.cmd === 'shutdown') {
    await sink.shutdown();
    await pipeline.shutdown();
  }
  // The counts of the flush go before the answer, on the same ordered port.
  report();
  port!.postMessage({ kind: 'done', id: command.id } satisfies SpanWorkerMessage);
}

port.on('message', (command: SpanWorkerCommand) => {
  if (command.cmd === 'batch') {
    readSectionBatch(command.batch, visitor);
    report();
  } else void finish(command);
});
