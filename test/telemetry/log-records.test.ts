// Sections' log lines as OTLP log records: settings from OTEL_*, one record per line under the innermost
// section, and every record the batch processor would drop counted, against a real OTLP/HTTP receiver.
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { LogRecord } from '@opentelemetry/api-logs';
import { afterEach, describe, expect, it } from 'vitest';
import { runIdFor, spanIdFor, traceIdFor } from '../../src/events/ids.js';
import type { FinishedSection, JobInfo, JobSummary } from '../../src/events/types.js';
import { silentLogger } from '../../src/log.js';
import {
  createLogRecordPipeline,
  lineSeverity,
  LogRecordSink,
  logsOptionsFromEnv,
  type LogRecordPipeline,
} from '../../src/telemetry/log-records.js';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';

const START = Date.UTC(2026, 11, 2, 16, 18, 6);
const runId = runIdFor('job.2026Dec02_16:18:03.912790', START, 'x');
const JOB: JobInfo = {
  jobId: 'job.2026Dec02_16:18:03.912790',
  jobName: 'job',
  runId,
  traceId: traceIdFor(runId),
};

const STEP_LINE = '61: vm: 2026-12-02T21:00:56: %SCRIPT-3-ERROR: %[pid=1][pname=T]: Gi0/1 is down\n';
const CASE_LINE = '58: vm: 2026-12-02T21:00:56: %AETEST-6-INFO: Starting testcase TcFail\n';

function section(seqNum: number, type: string, begin: number, excerpt: string): FinishedSection {
  return {
    job: JOB,
    seqNum,
    spanId: spanIdFor(runId, seqNum),
    type,
    fullid: `T.${type}`,
    task: 'T',
    startTime: START,
    stopTime: START + 1,
    runtime: 0.001,
    result: { value: 'failed' },
    logRange: { file: 'TaskLog.T', begin, size: Buffer.byteLength(excerpt) },
    logExcerpt: excerpt,
    incomplete: false,
    orphan: false,
    started: true,
  };
}

function recordingPipeline(): { pipeline: LogRecordPipeline; emitted: LogRecord[] } {
  const emitted: LogRecord[] = [];
  const pipeline: LogRecordPipeline = {
    logger: { emit: (record) => emitted.push(record), enabled: () => true },
    forceFlush: async () => {},
    shutdown: async () => {},
  };
  return { pipeline, emitted };
}

afterEach(() => {
  delete process.env['OTEL_EXPORTER_OTLP_LOGS_ENDPOINT'];
});

describe('logsOptionsFromEnv', () => {
  it('is off unless OTEL_LOGS_EXPORTER asks, and refuses what it cannot do', () => {
    expect(logsOptionsFromEnv({}).exporter).toBe('none');
    expect(logsOptionsFromEnv({ OTEL_LOGS_EXPORTER: 'otlp' })).toMatchObject({
      exporter: 'otlp',
      protocol: 'http/protobuf',
      batch: { maxQueueSize: 2048, maxExportBatchSize: 512 },
    });
    expect(() => logsOptionsFromEnv({ OTEL_LOGS_EXPORTER: 'loki' })).toThrow(/OTEL_LOGS_EXPORTER/);
    expect(() =>
      logsOptionsFromEnv({ OTEL_LOGS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: 'grpc' }),
    ).toThrow(/http\/protobuf or http\/json/);
    expect(() => logsOptionsFromEnv({ OTEL_LOGS_EXPORTER: 'otlp', OTEL_BLRP_MAX_QUEUE_SIZE: '0' })).toThrow(
      /OTEL_BLRP_MAX_QUEUE_SIZE/,
    );
  });
});

describe('LogRecordSink', () => {
  it('sends each line once, under the innermost section, with its span ids and severity', () => {
    const { pipeline, emitted } = recordingPipeline();
    const sink = new LogRecordSink(pipeline, 4096);
    // The step stops first; the testcase's slice holds its own line and then the step's.
    sink.sectionFinished(section(5, 'Step', CASE_LINE.length, STEP_LINE));
    sink.sectionFinished(section(3, 'Testcase', 0, CASE_LINE + STEP_LINE));
    expect(emitted.map((r) => [r.body, r.severityText, r.context === undefined])).toEqual([
      [STEP_LINE.trimEnd(), 'ERROR', false],
      [CASE_LINE.trimEnd(), 'INFO', false],
    ]);
    // A new run of the job starts afresh.
    sink.jobFinished({ job: JOB } as unknown as JobSummary);
    sink.sectionFinished(section(5, 'Step', CASE_LINE.length, STEP_LINE));
    expect(emitted).toHaveLength(3);
  });

  it("reads the severity from pyATS's %FACILITY-N-LEVEL tag", () => {
    expect(lineSeverity('x: %AETEST-4-WARNING: y')).toEqual({ number: 13, text: 'WARNING' });
    expect(lineSeverity('x: %EASYPY-7-DEBUG: y')).toEqual({ number: 5, text: 'DEBUG' });
    expect(lineSeverity('a plain line')).toBeUndefined();
  });
});

describe('the log record pipeline', () => {
  it('exports records with the span ids over OTLP/HTTP, and counts those a full queue refuses', async () => {
    const receiver = await startOtlpReceiver();
    try {
      process.env['OTEL_EXPORTER_OTLP_LOGS_ENDPOINT'] = `${receiver.url}/v1/logs`;
      const counts = { exported: 0, queue_full: 0, export_failed: 0 };
      const options = logsOptionsFromEnv({
        OTEL_LOGS_EXPORTER: 'otlp',
        OTEL_BLRP_MAX_QUEUE_SIZE: '2',
        OTEL_BLRP_SCHEDULE_DELAY: '60000',
      });
      const pipeline = createLogRecordPipeline(
        options,
        resourceFromAttributes({ 'service.name': 'pyats-exporter' }),
        '0.0.0',
        { exported: (n) => (counts.exported += n), dropped: (n, reason) => (counts[reason] += n) },
        silentLogger(),
      );
      if (pipeline === undefined) throw new Error('no pipeline');
      const sink = new LogRecordSink(pipeline, 4096);
      const lines = Array.from({ length: 5 }, (_, i) => `${i}: %AETEST-6-INFO: line ${i}\n`);
      sink.sectionFinished(section(5, 'Step', 0, lines.join('')));
      expect(counts.queue_full).toBe(3);
      await sink.forceFlush();
      const records = await receiver.waitForLogs(2);
      expect(records.map((r) => r.body)).toEqual([lines[0]!.trimEnd(), lines[1]!.trimEnd()]);
      expect(records[0]).toMatchObject({
        traceId: JOB.traceId,
        spanId: spanIdFor(runId, 5),
        severityNumber: 9,
        attributes: { 'pyats.job.name': 'job', 'log.file.name': 'TaskLog.T' },
        resource: { 'service.name': 'pyats-exporter' },
      });
      expect(counts.exported).toBe(2);
      await sink.shutdown();
    } finally {
      await receiver.close();
    }
  });
});
