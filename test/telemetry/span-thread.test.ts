// The span thread against a real OTLP receiver: the same spans as the in-process sink, the counters, the
// drain at shutdown, and read backpressure while the backend stalls. The worker module loads from dist/
// (built by the global setup).
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config.js';
import { buildTelemetry } from '../../src/daemon.js';
import { spanIdFor, traceIdFor } from '../../src/events/ids.js';
import type { FinishedSection, JobInfo, JobSummary } from '../../src/events/types.js';
import { silentLogger } from '../../src/log.js';
import { RECORD_SLOTS, readSectionBatch, SectionBatchWriter } from '../../src/telemetry/span-records.js';
import { SpanThread } from '../../src/telemetry/span-thread.js';
import { SpanSink } from '../../src/telemetry/spans.js';
import {
  baseResource,
  createSpanPipeline,
  tracingOptionsFromEnv,
  type SpanDropReason,
  type TracingOptions,
} from '../../src/telemetry/tracing.js';
import {
  startOtlpGrpcReceiver,
  startOtlpReceiver,
  type DecodedSpan,
  type OtlpReceiver,
} from '../helpers/otlp-receiver.js';

const WORKER_URL = new URL('../../dist/telemetry/span-worker.js', import.meta.url);
const VERSION = 'test';

function job(name: string, run: number, ci = false): JobInfo {
  const jobId = `${name}.2026Dec02_10:00:0${run}.000000`;
  const runId = `${jobId}@${run}`;
  const info: JobInfo = { jobId, jobName: name, runId, traceId: traceIdFor(runId) };
  if (ci) {
    info.ci = {
      parent: { traceId: 'ab'.repeat(16), spanId: 'cd'.repeat(8), sampled: true },
      pipelineName: 'nightly',
      runId: '42',
      taskRunUrl: 'https://ci.example/run/42',
      system: 'jenkins',
    };
  }
  return info;
}

/** A run's sections: the suite, a task, testcases (one failed, one with an xref), each with a step. */
function runSections(info: JobInfo, testcases: number): FinishedSection[] {
  const t0 = Date.UTC(2026, 11, 2, 10) + 0.123;
  const at = (seqNum: number, parentSeqNum: number | undefined, rest: Partial<FinishedSection>) => {
    const section: FinishedSection = {
      job: info,
      seqNum,
      spanId: spanIdFor(info.runId, seqNum),
      type: 'Step',
      task: 'task-1',
      startTime: t0 + seqNum,
      stopTime: t0 + seqNum + 0.5,
      runtime: 0.0005,
      result: { value: 'passed' },
      incomplete: false,
      orphan: false,
      started: true,
      ...rest,
    };
    if (parentSeqNum !== undefined) {
      section.parentSeqNum = parentSeqNum;
      section.parentSpanId = spanIdFor(info.runId, parentSeqNum);
    }
    return section;
  };
  const sections: FinishedSection[] = [];
  let seq = 3;
  for (let i = 0; i < testcases; i++) {
    const tc = seq++;
    const failed = i % 3 === 1;
    sections.push(
      at(seq++, tc, {
        name: `step ${i}`,
        id: `STEP ${i}`,
        fullid: `task-1.tc_${i}.STEP ${i}`,
        testcase: `tc_${i}`,
      }),
      at(tc, 2, {
        type: 'Testcase',
        id: `tc_${i}`,
        name: `tc_${i}`,
        testcase: `tc_${i}`,
        result: failed ? { value: 'failed', reason: `boom ${i}` } : { value: 'passed' },
        ...(i % 2 === 0 ? { xref: { file: '/lab/tests.py', line: 10 + i } } : { xref: { line: 3 } }),
        logfile: 'TaskLog.task-1',
        incomplete: i === testcases - 1,
        orphan: i === 0,
      }),
    );
  }
  sections.push(
    at(2, 1, { type: 'Task', id: 'task-1', result: { value: 'failed' } }),
    at(1, undefined, { type: 'TestSuite', id: info.jobId, name: info.jobName, task: 'none', runtime: 12 }),
  );
  return sections;
}

function summary(info: JobInfo): JobSummary {
  const counts = { passed: 0, failed: 0, aborted: 0, blocked: 0, skipped: 0, errored: 0, passx: 0 };
  return { job: info, result: 'failed', stopTime: 0, counts, incomplete: false };
}

/** Two jobs, the first run twice (so its second suite links to the first), one of them in CI. */
function workload(): { sections: FinishedSection[]; summaries: JobSummary[] } {
  const runs = [job('bgp', 1, true), job('ospf', 1), job('bgp', 2)];
  return { sections: runs.flatMap((r) => runSections(r, 7)), summaries: runs.map(summary) };
}

function tracing(receiver: { url: string }, env: Record<string, string> = {}): TracingOptions {
  return tracingOptionsFromEnv({
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_BSP_SCHEDULE_DELAY: '10',
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '8',
    OTEL_SERVICE_NAME: 'span-thread-test',
    ...env,
  });
}

function counts() {
  const dropped: Record<SpanDropReason, number> = { export_failed: 0, queue_full: 0, shutdown: 0 };
  const c = { exported: 0, dropped };
  return {
    c,
    hooks: {
      spansExported: (n: number) => (c.exported += n),
      spansDropped: (n: number, reason: SpanDropReason) => (c.dropped[reason] += n),
    },
  };
}

function spanThread(options: TracingOptions, hooks: ReturnType<typeof counts>['hooks']): SpanThread {
  return new SpanThread({
    worker: { tracing: options, maxAttributeLength: 4096, version: VERSION, logLevel: 'silent' },
    hooks,
    logger: silentLogger(),
    workerUrl: WORKER_URL,
  });
}

const bySpanId = (spans: DecodedSpan[]) => [...spans].sort((a, b) => a.spanId.localeCompare(b.spanId));

const receivers: OtlpReceiver[] = [];
afterEach(async () => {
  await Promise.all(receivers.splice(0).map((r) => r.close()));
});

async function receiver(options: Parameters<typeof startOtlpReceiver>[0] = {}): Promise<OtlpReceiver> {
  const r = await startOtlpReceiver(options);
  receivers.push(r);
  return r;
}

describe('section records', () => {
  it('carry every field of a FinishedSection, job and CI context included', () => {
    const { sections, summaries } = workload();
    const writer = new SectionBatchWriter(4);
    for (const s of sections) writer.section(s);
    writer.jobFinished(summaries[0]!.job);
    const batch = writer.take()!;
    const read: FinishedSection[] = [];
    const finished: JobInfo[] = [];
    readSectionBatch(batch, { sectionFinished: (s) => read.push(s), jobFinished: (j) => finished.push(j) });
    expect(read).toEqual(sections);
    expect(finished.map((j) => j.runId)).toEqual([summaries[0]!.job.runId]);
    // One string table entry per distinct string: a job's ids cross once per batch.
    expect(new Set(batch.strings).size).toBe(batch.strings.length);
    expect(writer.take()).toBeUndefined();
  });

  it('keep each batch intact when the writer goes on, with jobs interleaved', () => {
    const { sections } = workload();
    // Records of two runs alternating, so a run's job fields are written again after the other's.
    const bgp = sections.filter((s) => s.job.runId === sections[0]!.job.runId);
    const ospf = sections.filter((s) => s.job.jobName === 'ospf');
    const mixed = bgp.flatMap((s, i) => (ospf[i] ? [s, ospf[i]] : [s]));
    const half = Math.floor(mixed.length / 2);
    const firstPart = mixed.slice(0, half);
    // The second batch starts with the job the first ended with: its ids are written to the new table again.
    const lastJob = firstPart.at(-1)!.job;
    const secondPart = [
      ...mixed.slice(half).filter((s) => s.job === lastJob),
      ...mixed.slice(half).filter((s) => s.job !== lastJob),
    ];
    const writer = new SectionBatchWriter(2);
    for (const s of firstPart) writer.section(s);
    const first = writer.take()!;
    for (const s of secondPart) writer.section(s);
    const second = writer.take()!;
    const read: FinishedSection[] = [];
    const visitor = { sectionFinished: (s: FinishedSection) => read.push(s), jobFinished: () => {} };
    readSectionBatch(first, visitor);
    readSectionBatch(second, visitor);
    expect(read).toEqual([...firstPart, ...secondPart]);
    // Each batch's buffer holds its own records only, so posting it transfers no more than that.
    for (const batch of [first, second]) expect(batch.nums.buffer.byteLength).toBe(batch.nums.byteLength);
    expect(first.nums.length).toBe(firstPart.length * RECORD_SLOTS);
    expect(second.nums.length).toBe(secondPart.length * RECORD_SLOTS);
    // The second batch has a table of its own: the jobs' ids cross again, once.
    expect(second.strings.filter((s) => s === sections[0]!.job.runId)).toHaveLength(1);
  });
});

describe('SpanThread', () => {
  it('exports the same spans as the in-process sink, with counts reported back', async () => {
    const { sections, summaries } = workload();
    const inProcess = await receiver();
    const direct = counts();
    const pipeline = createSpanPipeline(tracing(inProcess), direct.hooks, silentLogger())!;
    const sink = new SpanSink({
      processor: pipeline.processor,
      resource: baseResource(tracing(inProcess), VERSION),
      maxAttributeLength: 4096,
      scopeVersion: VERSION,
    });
    const onThread = await receiver();
    const threaded = counts();
    const thread = spanThread(tracing(onThread), threaded.hooks);
    let i = 0;
    for (const s of sections) {
      sink.sectionFinished(s);
      thread.sectionFinished(s);
      // The end of a run comes after its suite, as the tracker emits it.
      if (s.type === 'TestSuite') {
        sink.jobFinished(summaries[i]!);
        thread.jobFinished(summaries[i++]!);
      }
    }
    await Promise.all([sink.shutdown(), thread.shutdown()]);
    expect(onThread.spans).toHaveLength(sections.length);
    expect(bySpanId(onThread.spans)).toEqual(bySpanId(inProcess.spans));
    const linked = onThread.spans.filter((s) => s.links.length > 0);
    expect(linked).toHaveLength(1);
    expect(threaded.c).toEqual(direct.c);
    expect(threaded.c.exported).toBe(sections.length);
    expect(thread.backlog()).toBe(0);
  });

  it('counts failed exports and spans finished after shutdown as the in-process pipeline does', async () => {
    const { sections } = workload();
    const failing = await receiver({ status: 500 });
    const direct = counts();
    const pipeline = createSpanPipeline(tracing(failing), direct.hooks, silentLogger())!;
    const sink = new SpanSink({
      processor: pipeline.processor,
      resource: baseResource(tracing(failing), VERSION),
      maxAttributeLength: 4096,
      scopeVersion: VERSION,
    });
    const threaded = counts();
    const thread = spanThread(tracing(failing), threaded.hooks);
    for (const s of sections) {
      sink.sectionFinished(s);
      thread.sectionFinished(s);
    }
    await Promise.all([sink.forceFlush(), thread.forceFlush()]);
    expect(thread.exportFailing()).toBe(pipeline.exportFailing());
    expect(thread.exportFailing()).toBe(true);
    await Promise.all([sink.shutdown(), thread.shutdown()]);
    sink.sectionFinished(sections[0]!);
    thread.sectionFinished(sections[0]!);
    expect(threaded.c).toEqual(direct.c);
    expect(threaded.c).toEqual({
      exported: 0,
      dropped: { export_failed: sections.length, queue_full: 0, shutdown: 1 },
    });
  });

  it.each(['http/json', 'grpc'] as const)('exports over %s too', async (protocol) => {
    const { sections } = workload();
    const r = protocol === 'grpc' ? await startOtlpGrpcReceiver() : await receiver();
    try {
      const { c, hooks } = counts();
      const thread = spanThread(tracing(r, { OTEL_EXPORTER_OTLP_PROTOCOL: protocol }), hooks);
      for (const s of sections) thread.sectionFinished(s);
      await thread.shutdown();
      expect(bySpanId(r.spans).map((s) => [s.spanId, s.parentSpanId, s.name])).toEqual(
        [...sections]
          .sort((a, b) => a.spanId.localeCompare(b.spanId))
          .map((s) => [s.spanId, s.parentSpanId ?? '', expect.any(String)]),
      );
      expect(c.exported).toBe(sections.length);
    } finally {
      if (protocol === 'grpc') await r.close();
    }
  });

  it('drains every span at shutdown, however long the batch delay', async () => {
    const { sections } = workload();
    const r = await receiver();
    const { c, hooks } = counts();
    const thread = spanThread(
      tracing(r, { OTEL_BSP_SCHEDULE_DELAY: '600000', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '512' }),
      hooks,
    );
    for (const s of sections) thread.sectionFinished(s);
    await thread.shutdown();
    expect(r.spans).toHaveLength(sections.length);
    expect(c.exported).toBe(sections.length);
  });
});

describe('buildTelemetry with the span thread', () => {
  it('holds reading while a stalled backend has export batches waiting, and lets go once it answers', async () => {
    const stalled = await receiver({ delayMs: 1000 });
    const outcome = parseConfig(['--reporter-socket', '/tmp/none.sock'], {
      OTEL_EXPORTER_OTLP_ENDPOINT: stalled.url,
      OTEL_BSP_SCHEDULE_DELAY: '10',
      OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '8',
      OTEL_BSP_MAX_QUEUE_SIZE: '1000',
    });
    if (outcome.kind !== 'config') throw new Error('expected a run configuration');
    const telemetry = buildTelemetry(outcome.config, silentLogger(), {
      spanThread: true,
      spanWorkerUrl: WORKER_URL,
    });
    try {
      const { sections } = workload();
      for (const s of sections) telemetry.fanout.sectionFinished(s);
      // Four batches of 8 wait: held before the worker has even answered (the records are in flight).
      expect(telemetry.sinksBehind()).toBe(true);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(telemetry.sinksBehind()).toBe(true);
      await stalled.waitForSpans(sections.length, 20_000);
      await expect.poll(() => telemetry.sinksBehind(), { timeout: 5000 }).toBe(false);
    } finally {
      await telemetry.shutdown();
    }
    const exported = await telemetry.registry.getSingleMetric('pyats_exporter_spans_exported_total')!.get();
    expect(exported.values[0]?.value).toBe(workload().sections.length);
  }, 30_000);
});
