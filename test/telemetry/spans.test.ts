import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import * as incubating from '@opentelemetry/semantic-conventions/incubating';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import {
  RESULT_VALUES,
  type FinishedSection,
  type JobInfo,
  type JobSummary,
  type ResultValue,
} from '../../src/events/types.js';
import { silentLogger } from '../../src/log.js';
import { runIdFor, spanIdFor, traceIdFor } from '../../src/events/ids.js';
import {
  ABANDONED_STATUS_MESSAGE,
  ATTR_CICD_PIPELINE_NAME,
  ATTR_CICD_PIPELINE_RUN_ID,
  ATTR_CICD_PIPELINE_TASK_RUN_URL_FULL,
  ATTR_TEST_CASE_NAME,
  ATTR_TEST_CASE_RESULT_STATUS,
  ATTR_TEST_SUITE_NAME,
  ATTR_TEST_SUITE_RUN_STATUS,
  epochMsToHrTime,
  sectionAttributes,
  sectionToSpan,
  SectionSpan,
  spanName,
  spanStatus,
  SpanSink,
  truncateAttribute,
} from '../../src/telemetry/spans.js';
import { encodeTraceRequest } from '../../src/telemetry/otlp-encoder.js';
import {
  baseResource,
  createSpanPipeline,
  tracingOptionsFromEnv,
  type OtlpProtocol,
  type SpanPipeline,
} from '../../src/telemetry/tracing.js';
import {
  decodeExportTraceServiceRequest,
  startOtlpReceiver,
  type DecodedSpan,
  type OtlpReceiver,
} from '../helpers/otlp-receiver.js';
import { runExporter } from '../helpers/exporter-process.js';
import { easypyRunId, postRun, type JobRun } from '../helpers/job-runs.js';
import { plainSpanCopy } from '../helpers/spans.js';

const SUITE_START = Date.UTC(2024, 4, 1, 12, 0, 0) + 0.25;

function job(jobId: string, start: number, jobName = jobId): JobInfo {
  const runId = runIdFor(jobId, start, 'unused');
  return { jobId, jobName, runId, traceId: traceIdFor(runId) };
}

const BGP = job('bgp_job', SUITE_START);
/** A run as real pyATS 23.2 names it: the TestSuite id is unique per run, its name is the job's. */
const REAL = job('job.2026Dec02_16:18:03.912790', Date.UTC(2026, 11, 2, 16, 18, 6, 864) + 0.023, 'job');

interface Spec {
  seq: number;
  parent?: number;
  type: string;
  id?: string;
  name?: string;
  fullid?: string;
  result: ResultValue;
  reason?: string;
  task?: string;
  incomplete?: boolean;
  orphan?: boolean;
  xref?: { file?: string; line?: number };
  logfile?: string;
}

/** A FinishedSection as the tracker would emit it; times carry microseconds (pyATS resolution). */
function record(info: JobInfo, spec: Spec): FinishedSection {
  const startTime = SUITE_START + spec.seq * 1000 + 0.123; // ...123 µs past the ms
  const section: FinishedSection = {
    job: info,
    seqNum: spec.seq,
    spanId: spanIdFor(info.runId, spec.seq),
    type: spec.type,
    task: spec.task ?? 'Task-1',
    startTime,
    stopTime: startTime + 2500.5,
    runtime: 2.5005,
    result: spec.reason === undefined ? { value: spec.result } : { value: spec.result, reason: spec.reason },
    incomplete: spec.incomplete ?? false,
    orphan: spec.orphan ?? false,
    started: true,
  };
  if (spec.parent !== undefined) {
    section.parentSeqNum = spec.parent;
    if (!spec.orphan) section.parentSpanId = spanIdFor(info.runId, spec.parent);
  }
  if (spec.id !== undefined) section.id = spec.id;
  if (spec.fullid !== undefined) section.fullid = spec.fullid;
  if (spec.name !== undefined) section.name = spec.name;
  if (spec.xref !== undefined) section.xref = spec.xref;
  if (spec.logfile !== undefined) section.logfile = spec.logfile;
  return section;
}

// A job tree with every result value, an abandoned testcase and task, and an orphan step.
const TREE: Spec[] = [
  { seq: 1, type: 'TestSuite', id: 'bgp_job', name: 'bgp_job', result: 'failed', task: 'none' },
  { seq: 2, parent: 1, type: 'Task', id: 'Task-1', name: 'bgp_checks', result: 'failed' },
  { seq: 3, parent: 2, type: 'CommonSetup', id: 'common_setup', result: 'passed' },
  {
    seq: 4,
    parent: 3,
    type: 'Subsection',
    id: 'connect',
    result: 'passed',
    xref: { file: '/lab/bgp_checks.py', line: 42 },
    logfile: 'TaskLog.Task-1',
  },
  {
    seq: 5,
    parent: 2,
    type: 'Testcase',
    id: 'test_bgp',
    fullid: 'Task-1.test_bgp',
    name: 'test_bgp',
    result: 'failed',
    reason: 'neighbor 10.0.0.2 down',
  },
  { seq: 6, parent: 5, type: 'TestSection', id: 'check_neighbors', result: 'failed' },
  { seq: 7, parent: 6, type: 'Step', name: '1.1: check peer 10.0.0.2', result: 'failed' },
  { seq: 8, parent: 2, type: 'Testcase', id: 'test_passx', result: 'passx' },
  { seq: 9, parent: 2, type: 'Testcase', id: 'test_skipped', result: 'skipped' },
  { seq: 10, parent: 2, type: 'Testcase', id: 'test_blocked', result: 'blocked' },
  { seq: 11, parent: 2, type: 'Testcase', id: 'test_errored', result: 'errored', reason: 'Traceback ...' },
  { seq: 12, parent: 2, type: 'Testcase', id: 'test_aborted', result: 'aborted' },
  { seq: 13, parent: 2, type: 'Testcase', id: 'test_cut_off', result: 'passed', incomplete: true },
  { seq: 14, parent: 2, type: 'CommonCleanup', id: 'common_cleanup', result: 'passed' },
  { seq: 15, parent: 1, type: 'Task', id: 'Task-2', result: 'passed', task: 'Task-2', incomplete: true },
  { seq: 16, parent: 1, type: 'Task', id: 'Task-3', result: 'skipped', task: 'Task-3' },
  { seq: 20, parent: 99, type: 'Step', id: 'lost_step', result: 'passed', orphan: true },
];

/** OTLP StatusCode expected for each section: ERROR exactly for failed/errored/aborted and abandoned. */
const EXPECTED_STATUS: Record<number, { code: number; message: string }> = {
  1: { code: 2, message: '' },
  2: { code: 2, message: '' },
  3: { code: 0, message: '' },
  4: { code: 0, message: '' },
  5: { code: 2, message: 'neighbor 10.0.0.2 down' },
  6: { code: 2, message: '' },
  7: { code: 2, message: '' },
  8: { code: 0, message: '' },
  9: { code: 0, message: '' },
  10: { code: 0, message: '' },
  11: { code: 2, message: 'Traceback ...' },
  12: { code: 2, message: '' },
  13: { code: 2, message: ABANDONED_STATUS_MESSAGE },
  14: { code: 0, message: '' },
  15: { code: 2, message: ABANDONED_STATUS_MESSAGE },
  16: { code: 0, message: '' },
  20: { code: 0, message: '' },
};

/** Nanoseconds since the epoch of a µs-resolution epoch-ms value, computed independently of the sink. */
function nanos(ms: number): bigint {
  return BigInt(Math.round(ms * 1000)) * 1000n;
}

function within1us(actual: bigint, expected: bigint): boolean {
  const diff = actual > expected ? actual - expected : expected - actual;
  return diff <= 1000n;
}

describe('semantic convention names', () => {
  it('match the installed @opentelemetry/semantic-conventions incubating entry', () => {
    expect(ATTR_TEST_CASE_NAME).toBe(incubating.ATTR_TEST_CASE_NAME);
    expect(ATTR_TEST_CASE_RESULT_STATUS).toBe(incubating.ATTR_TEST_CASE_RESULT_STATUS);
    expect(ATTR_TEST_SUITE_NAME).toBe(incubating.ATTR_TEST_SUITE_NAME);
    expect(ATTR_TEST_SUITE_RUN_STATUS).toBe(incubating.ATTR_TEST_SUITE_RUN_STATUS);
    expect(ATTR_CICD_PIPELINE_NAME).toBe(incubating.ATTR_CICD_PIPELINE_NAME);
    expect(ATTR_CICD_PIPELINE_RUN_ID).toBe(incubating.ATTR_CICD_PIPELINE_RUN_ID);
    expect(ATTR_CICD_PIPELINE_TASK_RUN_URL_FULL).toBe(incubating.ATTR_CICD_PIPELINE_TASK_RUN_URL_FULL);
    expect(incubating.TEST_CASE_RESULT_STATUS_VALUE_PASS).toBe('pass');
    expect(incubating.TEST_CASE_RESULT_STATUS_VALUE_FAIL).toBe('fail');
    expect([
      incubating.TEST_SUITE_RUN_STATUS_VALUE_SUCCESS,
      incubating.TEST_SUITE_RUN_STATUS_VALUE_FAILURE,
      incubating.TEST_SUITE_RUN_STATUS_VALUE_ABORTED,
      incubating.TEST_SUITE_RUN_STATUS_VALUE_SKIPPED,
    ]).toEqual(['success', 'failure', 'aborted', 'skipped']);
    expect(incubating.ATTR_CODE_FILE_PATH).toBe('code.file.path');
    expect(incubating.ATTR_CODE_LINE_NUMBER).toBe('code.line.number');
  });
});

describe('the test receiver decodes protobuf by field number', () => {
  const lengthDelimited = (field: number, body: number[]): number[] => [
    (field << 3) | 2,
    body.length,
    ...body,
  ];
  const request = (span: number[]): Uint8Array =>
    Uint8Array.from(lengthDelimited(1, lengthDelimited(2, lengthDelimited(2, span))));
  const traceId = Array.from({ length: 16 }, (_, i) => i + 1);
  const spanId = [0xa, 0xb, 0xc, 0xd, 0xe, 0xf, 0x10, 0x11];

  it('reads hand-encoded bytes', () => {
    // Span: 1 trace_id, 2 span_id, 5 name, 7 start_time_unix_nano (fixed64, wire type 1).
    const span = [
      ...lengthDelimited(1, traceId),
      ...lengthDelimited(2, spanId),
      ...lengthDelimited(5, [0x78]),
      (7 << 3) | 1,
      ...[0x05, 0x01, 0, 0, 0, 0, 0, 0x80],
    ];
    const [decoded] = decodeExportTraceServiceRequest(request(span));
    expect(decoded).toMatchObject({
      traceId: '0102030405060708090a0b0c0d0e0f10',
      spanId: '0a0b0c0d0e0f1011',
      parentSpanId: '',
      name: 'x',
      startTimeUnixNano: 0x8000000000000105n,
    });
  });

  it('rejects a known field with the wrong wire type', () => {
    expect(() => decodeExportTraceServiceRequest(request([(7 << 3) | 0, 5]))).toThrow(/Span\.7: wire type 0/);
  });
});

describe('epochMsToHrTime', () => {
  it('keeps the microseconds of an epoch-ms double', () => {
    expect(epochMsToHrTime(Date.UTC(2024, 4, 1) + 123.456)).toEqual([
      Date.UTC(2024, 4, 1) / 1000,
      123_456_000,
    ]);
    expect(epochMsToHrTime(1_714_564_800_000.001)).toEqual([1_714_564_800, 1000]);
  });

  it('carries a microsecond that rounds up into the next second', () => {
    expect(epochMsToHrTime(1999.9996)).toEqual([2, 0]);
  });
});

describe('truncateAttribute', () => {
  it('cuts to the limit without splitting a surrogate pair', () => {
    expect(truncateAttribute('abcdef', 4)).toBe('abcd');
    expect(truncateAttribute('abc', 4)).toBe('abc');
    expect(truncateAttribute('ab😀cd', 3)).toBe('ab');
    expect(truncateAttribute('anything', Infinity)).toBe('anything');
  });

  it('applies to every string attribute and the status message', () => {
    const long = 'x'.repeat(50);
    const section = record(BGP, {
      seq: 5,
      parent: 2,
      type: 'Testcase',
      id: long,
      name: long,
      result: 'failed',
      reason: long,
      logfile: long,
      fullid: long,
      xref: { file: long, line: 1 },
    });
    const attributes = sectionAttributes(section, 10);
    for (const [key, value] of Object.entries(attributes)) {
      if (typeof value === 'string') expect(value.length, key).toBeLessThanOrEqual(10);
    }
    expect(attributes['pyats.section.id']).toBe('x'.repeat(10));
    expect(attributes['pyats.section.fullid']).toBe('x'.repeat(10));
    expect(attributes[ATTR_TEST_CASE_NAME]).toBe('x'.repeat(10));
    expect(
      sectionAttributes(record(REAL, { seq: 1, type: 'TestSuite', result: 'aborted' }), 10),
    ).toMatchObject({
      'pyats.job.id': 'job.2026De',
      'pyats.job.name': 'job',
    });
  });

  it('describes the CI run on the TestSuite span only', () => {
    const ci = { pipelineName: 'nightly-bgp', runId: '311', taskRunUrl: 'https://ci/job/bgp/311/' };
    const info: JobInfo = { ...REAL, ci };
    expect(
      sectionAttributes(record(info, { seq: 1, type: 'TestSuite', result: 'passed' }), 4096),
    ).toMatchObject({
      [ATTR_CICD_PIPELINE_NAME]: 'nightly-bgp',
      [ATTR_CICD_PIPELINE_RUN_ID]: '311',
      [ATTR_CICD_PIPELINE_TASK_RUN_URL_FULL]: 'https://ci/job/bgp/311/',
    });
    const task = sectionAttributes(record(info, { seq: 2, parent: 1, type: 'Task', result: 'passed' }), 4096);
    expect(task[ATTR_CICD_PIPELINE_NAME]).toBeUndefined();
    expect(
      sectionAttributes(record(REAL, { seq: 1, type: 'TestSuite', result: 'passed' }), 4096),
    ).not.toHaveProperty(ATTR_CICD_PIPELINE_NAME);
  });
});

const RESOURCE = resourceFromAttributes({ 'service.name': 'pyats-exporter', 'pyats.job.id': 'bgp_job' });
const SCOPE = { name: 'pyats-exporter', version: '0.1.0' };

const text = fc.oneof(
  { weight: 4, arbitrary: fc.string() },
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme' }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary' }) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.constantFrom('a', 'ü', '😀', '\ud83d'), fc.integer({ min: 30, max: 5000 }))
      .map(([unit, n]) => unit.repeat(n)),
  },
);
const optional = <T>(arbitrary: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> =>
  fc.option(arbitrary, { nil: undefined });

/** Any FinishedSection the tracker could emit, with Unicode and long strings in every text field. */
const finishedSection: fc.Arbitrary<FinishedSection> = fc
  .record({
    jobId: text,
    jobName: text,
    seqNum: fc.nat(),
    parentSeqNum: optional(fc.nat()),
    linked: fc.boolean(),
    type: fc.oneof(
      fc.constantFrom('TestSuite', 'Task', 'Testcase', 'CommonSetup', 'CommonCleanup', 'TestSection', 'Step'),
      text,
    ),
    id: optional(text),
    fullid: optional(text),
    name: optional(text),
    task: text,
    startTime: fc.double({ min: 0, max: 4e12, noNaN: true }),
    length: fc.double({ min: 0, max: 1e7, noNaN: true }),
    runtime: fc.oneof(fc.double({ min: 0, max: 1e6, noNaN: true }), fc.nat()),
    result: fc.constantFrom(...RESULT_VALUES),
    reason: optional(text),
    logfile: optional(text),
    xref: optional(fc.record({ file: text, line: fc.nat() }, { requiredKeys: [] })),
    incomplete: fc.boolean(),
    orphan: fc.boolean(),
  })
  .map((g) => {
    const info = job(g.jobId, SUITE_START, g.jobName);
    return {
      job: info,
      seqNum: g.seqNum,
      parentSeqNum: g.parentSeqNum,
      spanId: spanIdFor(info.runId, g.seqNum),
      parentSpanId:
        g.parentSeqNum !== undefined && g.linked ? spanIdFor(info.runId, g.parentSeqNum) : undefined,
      type: g.type,
      id: g.id,
      fullid: g.fullid,
      name: g.name,
      task: g.task,
      startTime: g.startTime,
      stopTime: g.startTime + g.length,
      runtime: g.runtime,
      result: g.reason === undefined ? { value: g.result } : { value: g.result, reason: g.reason },
      logfile: g.logfile,
      xref: g.xref,
      incomplete: g.incomplete,
      orphan: g.orphan,
      started: true,
    };
  });

describe('SectionSpan', () => {
  it('builds each ReadableSpan field from the record on first read, and keeps it', () => {
    for (const spec of TREE) {
      const section = record(BGP, spec);
      const span = sectionToSpan(section, RESOURCE, SCOPE, 4096);
      expect(span).toBeInstanceOf(SectionSpan);
      expect(span.attributes).toEqual(sectionAttributes(section, 4096));
      expect(span.attributes).toBe(span.attributes);
      expect(span.spanContext()).toEqual({
        traceId: BGP.traceId,
        spanId: section.spanId,
        traceFlags: 1,
        isRemote: false,
      });
      expect(span.spanContext()).toBe(span.spanContext());
      expect(span.parentSpanContext).toEqual(
        section.parentSpanId === undefined
          ? undefined
          : { traceId: BGP.traceId, spanId: section.parentSpanId, traceFlags: 1, isRemote: false },
      );
      expect(span.name).toBe(spanName(section));
      expect(span.startTime).toEqual(epochMsToHrTime(section.startTime));
      expect(span.endTime).toEqual(epochMsToHrTime(section.stopTime));
      expect(span.duration).toEqual([2, 500_500_000]);
      expect(span.status).toEqual(spanStatus(section, 4096));
      expect(span.status).toBe(span.status);
      expect([span.resource, span.instrumentationScope]).toEqual([RESOURCE, SCOPE]);
    }
  });

  it('is encoded from the record: the attributes object is never built on that path', () => {
    for (const spec of TREE) {
      const span = sectionToSpan(record(BGP, spec), RESOURCE, SCOPE, 4096);
      Object.defineProperty(span, 'attributes', {
        get: () => {
          throw new Error('attributes built');
        },
      });
      const bytes = Buffer.from(encodeTraceRequest([span]));
      const generic = sectionToSpan(record(BGP, spec), RESOURCE, SCOPE, 4096);
      expect(bytes.equals(Buffer.from(ProtobufTraceSerializer.serializeRequest([generic]) ?? []))).toBe(true);
    }
  });

  it('encodes to the same bytes on the fast path as through its attributes (generated sections)', () => {
    fc.assert(
      fc.property(
        fc.array(finishedSection, { minLength: 1, maxLength: 6 }),
        fc.constantFrom(3, 64, 4096),
        (sections, maxLength) => {
          const spans = sections.map((s) => sectionToSpan(s, RESOURCE, SCOPE, maxLength));
          const fast = Buffer.from(encodeTraceRequest(spans));
          const generic = Buffer.from(encodeTraceRequest(spans.map(plainSpanCopy)));
          const library = Buffer.from(
            ProtobufTraceSerializer.serializeRequest(
              sections.map((s) => sectionToSpan(s, RESOURCE, SCOPE, maxLength)),
            ) ?? [],
          );
          expect(fast.equals(generic)).toBe(true);
          expect(fast.equals(library)).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });
});

/** Records what the sink hands over, to check object identity (resource sharing) without a network. */
class CapturingProcessor implements SpanProcessor {
  readonly ended: ReadableSpan[] = [];
  flushed = 0;
  shutDown = 0;
  onStart(): void {}
  onEnd(span: ReadableSpan): void {
    this.ended.push(span);
  }
  forceFlush(): Promise<void> {
    this.flushed += 1;
    return Promise.resolve();
  }
  shutdown(): Promise<void> {
    this.shutDown += 1;
    return Promise.resolve();
  }
}

function summary(info: JobInfo): JobSummary {
  const counts = { passed: 0, failed: 0, aborted: 0, blocked: 0, skipped: 0, errored: 0, passx: 0 };
  return { job: info, result: 'passed', stopTime: SUITE_START + 60_000, counts, incomplete: false };
}

describe('SpanSink (in memory)', () => {
  it('shares one resource per run, and builds a new one after jobFinished', async () => {
    const processor = new CapturingProcessor();
    const sink = new SpanSink({
      processor,
      resource: baseResource(tracingOptionsFromEnv({})),
      maxAttributeLength: 100,
      scopeVersion: '9.9.9',
    });
    const other = job('ospf_job', SUITE_START);
    sink.sectionStarted({ job: BGP, seqNum: 1, type: 'TestSuite', task: 'none' });
    expect(processor.ended).toHaveLength(0);
    sink.sectionFinished(record(BGP, { seq: 3, type: 'CommonSetup', result: 'passed' }));
    sink.sectionFinished(record(BGP, { seq: 4, type: 'Subsection', result: 'passed' }));
    sink.sectionFinished(record(other, { seq: 3, type: 'CommonSetup', result: 'passed' }));
    sink.jobFinished(summary(BGP));
    sink.sectionFinished(record(BGP, { seq: 5, type: 'Testcase', result: 'passed' }));
    const [a, b, c, d] = processor.ended;
    expect(a?.resource).toBe(b?.resource);
    expect(a?.resource).not.toBe(c?.resource);
    expect(d?.resource).not.toBe(a?.resource);
    expect(d?.resource.attributes['pyats.job.run_id']).toBe(BGP.runId);
    expect(a?.instrumentationScope).toEqual({ name: 'pyats-exporter', version: '9.9.9' });
    await sink.forceFlush();
    await sink.shutdown();
    expect([processor.flushed, processor.shutDown]).toEqual([1, 1]);
  });

  it('names a real pyATS job by its name and keeps its per-run id, on the spans and the resource', () => {
    const processor = new CapturingProcessor();
    const sink = new SpanSink({
      processor,
      resource: baseResource(tracingOptionsFromEnv({})),
      maxAttributeLength: 4096,
      scopeVersion: '0.1.0',
    });
    // Shapes of the real 23.2 example job: a Step (its xref into multiprocessing was dropped by the
    // normalizer), the Task (start_task's name is `script`) and the TestSuite.
    const step = record(REAL, {
      seq: 8,
      parent: 7,
      type: 'Step',
      id: 'STEP 1',
      fullid: 'ExampleTask.TcPass.test_steps.STEP 1',
      name: 'step one',
      result: 'passed',
      task: 'ExampleTask',
    });
    const task = record(REAL, {
      seq: 2,
      parent: 1,
      type: 'Task',
      id: 'ExampleTask',
      name: 'script',
      fullid: 'ExampleTask',
      result: 'aborted',
      task: 'ExampleTask',
    });
    const suite = record(REAL, {
      seq: 1,
      type: 'TestSuite',
      id: 'job.2026Dec02_16:18:03.912790',
      fullid: 'job.2026Dec02_16:18:03.912790',
      name: 'job',
      result: 'aborted',
      task: 'none',
    });
    for (const section of [step, task, suite]) sink.sectionFinished(section);
    const [stepSpan, taskSpan, suiteSpan] = processor.ended;
    expect(stepSpan?.attributes).toMatchObject({
      'pyats.section.fullid': 'ExampleTask.TcPass.test_steps.STEP 1',
      'pyats.job.id': 'job.2026Dec02_16:18:03.912790',
      'pyats.job.name': 'job',
    });
    expect(stepSpan?.attributes).not.toHaveProperty('code.file.path');
    expect(taskSpan?.attributes).toMatchObject({
      'test.suite.name': 'ExampleTask',
      'test.suite.run.status': 'aborted',
    });
    expect(suiteSpan?.attributes).toMatchObject({
      'pyats.job.id': 'job.2026Dec02_16:18:03.912790',
      'pyats.job.name': 'job',
      'pyats.job.run_id': REAL.runId,
      'test.suite.name': 'job',
      'test.suite.run.status': 'aborted',
    });
    expect(suiteSpan?.status).toEqual({ code: 2 });
    expect(suiteSpan?.resource.attributes).toMatchObject({
      'pyats.job.id': 'job.2026Dec02_16:18:03.912790',
      'pyats.job.name': 'job',
      'pyats.job.run_id': REAL.runId,
    });
  });
});

/** Two real-shaped runs of the job `job` (easypy ids differ, the name is the same), and their suites. */
const RUN_1 = job('job.2026Dec02_16:18:03.912790', Date.UTC(2026, 11, 2, 16, 18, 6, 864), 'job');
const RUN_2 = job('job.2026Dec02_17:00:41.005512', Date.UTC(2026, 11, 2, 17, 0, 43, 120), 'job');

function suiteOf(info: JobInfo, result: ResultValue = 'passed'): FinishedSection {
  return record(info, {
    seq: 1,
    type: 'TestSuite',
    id: info.jobId,
    name: info.jobName,
    result,
    task: 'none',
  });
}

/** What SpanSink should link a run's TestSuite span to: the suite span of `previous`. */
function expectedLink(previous: JobInfo): unknown {
  return {
    context: {
      traceId: previous.traceId,
      spanId: spanIdFor(previous.runId, 1),
      traceFlags: 1,
      isRemote: false,
    },
    attributes: {
      'pyats.link.kind': 'previous_run',
      'pyats.job.id': previous.jobId,
      'pyats.job.run_id': previous.runId,
    },
  };
}

function linkSink(maxLinkedJobs?: number): { sink: SpanSink; processor: CapturingProcessor } {
  const processor = new CapturingProcessor();
  const sink = new SpanSink({
    processor,
    resource: baseResource(tracingOptionsFromEnv({})),
    maxAttributeLength: 4096,
    scopeVersion: '0.1.0',
    ...(maxLinkedJobs === undefined ? {} : { maxLinkedJobs }),
  });
  return { sink, processor };
}

describe('SpanSink links a run to the previous run of its job', () => {
  it("links the TestSuite span, and only it, to the previous run's TestSuite span", () => {
    const { sink, processor } = linkSink();
    for (const info of [RUN_1, RUN_2]) {
      sink.sectionFinished(
        record(info, { seq: 3, parent: 2, type: 'Testcase', id: 'TcPass', result: 'passed' }),
      );
      sink.sectionFinished(
        record(info, { seq: 2, parent: 1, type: 'Task', id: 'ExampleTask', result: 'passed' }),
      );
      sink.sectionFinished(suiteOf(info));
      sink.jobFinished(summary(info));
    }
    const spans = processor.ended;
    expect(spans.map((s) => s.links.length)).toEqual([0, 0, 0, 0, 0, 1]);
    expect(spans[5]?.links).toEqual([expectedLink(RUN_1)]);
    // A different trace: the link is the only tie between the two runs.
    expect(spans[5]?.spanContext().traceId).not.toBe(RUN_1.traceId);
  });

  it('links each run to the one before it, keeps jobs apart, and never links a run to itself', () => {
    const { sink, processor } = linkSink();
    const other = job('ospf.2026Dec02_16:30:00.000000', Date.UTC(2026, 11, 2, 16, 30), 'ospf');
    const run3 = job('job.2026Dec02_18:00:00.000000', Date.UTC(2026, 11, 2, 18), 'job');
    for (const info of [RUN_1, other, RUN_2, RUN_2, run3]) sink.sectionFinished(suiteOf(info));
    expect(processor.ended.map((s) => s.links)).toEqual([
      [],
      [],
      [expectedLink(RUN_1)],
      [], // the same run's suite again (e.g. replayed): no link to itself
      [expectedLink(RUN_2)],
    ]);
  });

  it('links nothing for runs of an unknown job (attached after the suite started), nor orphans', () => {
    const { sink, processor } = linkSink();
    const unknownA = job('unknown', Date.UTC(2026, 11, 2, 16), 'unknown');
    const unknownB = job('unknown', Date.UTC(2026, 11, 2, 17), 'unknown');
    sink.sectionFinished(suiteOf(unknownA));
    sink.sectionFinished(suiteOf(unknownB));
    sink.sectionFinished(suiteOf(RUN_1));
    // A TestSuite-typed section with a parent is not a run's root.
    sink.sectionFinished(
      record(RUN_2, { seq: 9, parent: 1, type: 'TestSuite', id: 'nested', result: 'passed' }),
    );
    expect(processor.ended.map((s) => s.links.length)).toEqual([0, 0, 0, 0]);
  });

  it('remembers at most maxLinkedJobs job names, forgetting the least recently finished', () => {
    const { sink, processor } = linkSink(2);
    const runs = (name: string, hour: number): JobInfo =>
      job(`${name}.2026Dec02_${hour}:00:00.000000`, Date.UTC(2026, 11, 2, hour), name);
    for (const info of [runs('a', 1), runs('b', 2), runs('a', 3), runs('c', 4), runs('b', 5), runs('a', 6)])
      sink.sectionFinished(suiteOf(info));
    // a@3 links to a@1 (and a becomes the newest); c@4 evicts b, so b@5 finds nothing and evicts a, and a@6
    // finds nothing either.
    expect(processor.ended.map((s) => s.links.length)).toEqual([0, 0, 1, 0, 0, 0]);
    expect(processor.ended[2]?.links).toEqual([expectedLink(runs('a', 1))]);
  });
});

describe.each<OtlpProtocol>(['http/protobuf', 'http/json'])(
  'SpanSink → BatchSpanProcessor → OTLP %s',
  (protocol) => {
    let receiver: OtlpReceiver | undefined;
    let pipeline: SpanPipeline | undefined;
    afterEach(async () => {
      await pipeline?.shutdown();
      await receiver?.close();
    });

    async function exportTree(): Promise<Map<number, DecodedSpan>> {
      receiver = await startOtlpReceiver();
      const options = {
        ...tracingOptionsFromEnv({ OTEL_SERVICE_NAME: 'lab-exporter', OTEL_RESOURCE_ATTRIBUTES: 'team=net' }),
        protocol,
        endpoint: `${receiver.url}/v1/traces`,
      };
      const hooks = { spansExported: () => {}, spansDropped: () => {} };
      pipeline = createSpanPipeline(options, hooks, silentLogger());
      if (pipeline === undefined) throw new Error('expected a pipeline');
      const sink = new SpanSink({
        processor: pipeline.processor,
        resource: baseResource(options, '0.1.0'),
        maxAttributeLength: 4096,
        scopeVersion: '0.1.0',
      });
      // Children stop before their parents, as in a real run.
      for (const spec of [...TREE].reverse()) sink.sectionFinished(record(BGP, spec));
      await sink.forceFlush();
      const spans = await receiver.waitForSpans(TREE.length);
      expect(spans).toHaveLength(TREE.length);
      const bySeq = new Map<number, DecodedSpan>();
      for (const span of spans) bySeq.set(Number(span.attributes['pyats.section.seq_num']), span);
      return bySeq;
    }

    it('delivers every section with its exact ids, parent, name, times, kind and status', async () => {
      const bySeq = await exportTree();
      for (const spec of TREE) {
        const span = bySeq.get(spec.seq);
        const section = record(BGP, spec);
        expect(span, `seq ${spec.seq}`).toBeDefined();
        if (span === undefined) continue;
        expect(span.traceId).toBe(BGP.traceId);
        expect(span.spanId).toBe(spanIdFor(BGP.runId, spec.seq));
        expect(span.parentSpanId).toBe(
          spec.parent === undefined || spec.orphan ? '' : spanIdFor(BGP.runId, spec.parent),
        );
        expect(span.name).toBe(`${spec.type} ${spec.name ?? spec.id ?? spec.seq}`);
        expect(span.kind).toBe(1); // SPAN_KIND_INTERNAL
        expect(within1us(span.startTimeUnixNano, nanos(section.startTime)), `start of ${spec.seq}`).toBe(
          true,
        );
        expect(within1us(span.endTimeUnixNano, nanos(section.stopTime)), `end of ${spec.seq}`).toBe(true);
        expect(span.status, `status of ${spec.seq}`).toEqual(EXPECTED_STATUS[spec.seq]);
        expect(span.scope).toBe('pyats-exporter');
        expect(span.scopeVersion).toBe('0.1.0');
        expect(span.resource).toMatchObject({
          'service.name': 'lab-exporter',
          'service.version': '0.1.0',
          team: 'net',
          'telemetry.sdk.language': 'nodejs',
          'pyats.job.id': 'bgp_job',
          'pyats.job.name': 'bgp_job',
          'pyats.job.run_id': 'bgp_job@2024-05-01T12:00:00.000Z',
        });
      }
      expect(bySeq.get(1)?.startTimeUnixNano).toBe(1_714_564_801_000_373_000n);
    });

    it('carries the DESIGN §3 attributes', async () => {
      const bySeq = await exportTree();
      const common = {
        'pyats.job.id': 'bgp_job',
        'pyats.job.name': 'bgp_job',
        'pyats.job.run_id': BGP.runId,
        'pyats.section.runtime': 2.5005,
      };
      expect(bySeq.get(1)?.attributes).toEqual({
        ...common,
        'pyats.section.type': 'TestSuite',
        'pyats.section.id': 'bgp_job',
        'pyats.section.name': 'bgp_job',
        'pyats.section.seq_num': 1,
        'pyats.section.result': 'failed',
        'pyats.section.task': 'none',
        'test.suite.name': 'bgp_job',
        'test.suite.run.status': 'failure',
      });
      expect(bySeq.get(2)?.attributes).toEqual({
        ...common,
        'pyats.section.type': 'Task',
        'pyats.section.id': 'Task-1',
        'pyats.section.name': 'bgp_checks',
        'pyats.section.seq_num': 2,
        'pyats.section.parent_seq_num': 1,
        'pyats.section.result': 'failed',
        'pyats.section.task': 'Task-1',
        'test.suite.name': 'Task-1',
        'test.suite.run.status': 'failure',
      });
      expect(bySeq.get(4)?.attributes).toEqual({
        ...common,
        'pyats.section.type': 'Subsection',
        'pyats.section.id': 'connect',
        'pyats.section.seq_num': 4,
        'pyats.section.parent_seq_num': 3,
        'pyats.section.result': 'passed',
        'pyats.section.task': 'Task-1',
        'pyats.section.logfile': 'TaskLog.Task-1',
        'code.file.path': '/lab/bgp_checks.py',
        'code.line.number': 42,
      });
      expect(bySeq.get(5)?.attributes).toEqual({
        ...common,
        'pyats.section.type': 'Testcase',
        'pyats.section.id': 'test_bgp',
        'pyats.section.fullid': 'Task-1.test_bgp',
        'pyats.section.name': 'test_bgp',
        'pyats.section.seq_num': 5,
        'pyats.section.parent_seq_num': 2,
        'pyats.section.result': 'failed',
        'pyats.section.result.reason': 'neighbor 10.0.0.2 down',
        'pyats.section.task': 'Task-1',
        'test.case.name': 'test_bgp',
        'test.case.result.status': 'fail',
      });
      expect(bySeq.get(13)?.attributes).toMatchObject({
        'pyats.section.incomplete': true,
        'test.case.result.status': 'fail',
      });
      expect(bySeq.get(15)?.attributes).toMatchObject({
        'pyats.section.incomplete': true,
        'test.suite.run.status': 'aborted',
      });
      expect(bySeq.get(20)?.attributes).toMatchObject({
        'pyats.section.orphan': true,
        'pyats.section.parent_seq_num': 99,
      });
      for (const [seq, span] of bySeq) {
        if (seq !== 13 && seq !== 15) expect(span.attributes).not.toHaveProperty('pyats.section.incomplete');
        if (seq !== 20) expect(span.attributes).not.toHaveProperty('pyats.section.orphan');
      }
    });

    it('maps results to test.case.result.status and test.suite.run.status', async () => {
      const bySeq = await exportTree();
      const caseStatus = (seq: number) => bySeq.get(seq)?.attributes['test.case.result.status'];
      const suiteStatus = (seq: number) => bySeq.get(seq)?.attributes['test.suite.run.status'];
      expect([3, 5, 8, 9, 10, 11, 12, 13, 14].map(caseStatus)).toEqual([
        'pass', // CommonSetup passed
        'fail', // failed
        'pass', // passx
        undefined, // skipped: not covered by the convention
        undefined, // blocked
        'fail', // errored
        'fail', // aborted
        'fail', // abandoned
        'pass', // CommonCleanup passed
      ]);
      expect(caseStatus(6)).toBeUndefined(); // only Testcase-like sections carry test.case.*
      expect([1, 2, 15, 16].map(suiteStatus)).toEqual(['failure', 'failure', 'aborted', 'skipped']);
      expect(suiteStatus(5)).toBeUndefined();
    });
    it('carries the link from a run to the previous run of its job, with its attributes', async () => {
      receiver = await startOtlpReceiver();
      const options = { ...tracingOptionsFromEnv({}), protocol, endpoint: `${receiver.url}/v1/traces` };
      pipeline = createSpanPipeline(
        options,
        { spansExported: () => {}, spansDropped: () => {} },
        silentLogger(),
      );
      if (pipeline === undefined) throw new Error('expected a pipeline');
      const sink = new SpanSink({
        processor: pipeline.processor,
        resource: baseResource(options, '0.1.0'),
        maxAttributeLength: 4096,
        scopeVersion: '0.1.0',
      });
      for (const info of [RUN_1, RUN_2]) {
        sink.sectionFinished(suiteOf(info, info === RUN_1 ? 'failed' : 'passed'));
        sink.jobFinished(summary(info));
      }
      await sink.forceFlush();
      const spans = await receiver.waitForSpans(2);
      const second = spans.find((s) => s.traceId === RUN_2.traceId);
      expect(spans.find((s) => s.traceId === RUN_1.traceId)?.links).toEqual([]);
      expect(second?.links).toEqual([
        {
          traceId: RUN_1.traceId,
          spanId: spanIdFor(RUN_1.runId, 1),
          traceState: '',
          // Sampled, and "is_remote" known to be false.
          flags: 0x101,
          attributes: {
            'pyats.link.kind': 'previous_run',
            'pyats.job.id': RUN_1.jobId,
            'pyats.job.run_id': RUN_1.runId,
          },
        },
      ]);
    });
  },
);

describe('pyats-exporter (the built CLI) links reruns of a job over OTLP', () => {
  let receiver: OtlpReceiver | undefined;
  afterEach(async () => {
    await receiver?.close();
  });

  it("links each run's TestSuite span to the previous run of the same job, not to other jobs", async () => {
    receiver = await startOtlpReceiver();
    const exporter = await runExporter(['--listen', '127.0.0.1:0', '--ingest-http'], {
      OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_BSP_SCHEDULE_DELAY: '100',
    });
    try {
      const hour = 3_600_000;
      const base = Date.UTC(2026, 11, 2, 16, 18, 3, 912);
      const runs: JobRun[] = [
        { name: 'job', start: new Date(base), testcases: [{ id: 'TcPass', result: 'passed', runtime: 1 }] },
        {
          name: 'other',
          start: new Date(base + hour),
          testcases: [{ id: 'TcA', result: 'passed', runtime: 1 }],
        },
        // `pyats run job` again (or `rerun`): a new TestSuite id, the same job name.
        {
          name: 'job',
          start: new Date(base + 2 * hour),
          testcases: [{ id: 'TcPass', result: 'failed', runtime: 1, reason: 'peer down' }],
        },
      ];
      // One request per run: each is its own stream, ended when the request has been read.
      for (const run of runs) await postRun(exporter.url, run);
      // TestSuite, Task, CommonSetup and one Testcase per run.
      const spans = await receiver.waitForSpans(12);
      const suites = spans.filter((s) => s.attributes['pyats.section.type'] === 'TestSuite');
      const suiteOf = (run: JobRun): DecodedSpan | undefined =>
        suites.find((s) => s.attributes['pyats.job.id'] === easypyRunId(run.name, run.start));
      const [first, other, rerun] = runs.map(suiteOf);
      expect(first?.links).toEqual([]);
      expect(other?.links).toEqual([]);
      expect(rerun?.traceId).not.toBe(first?.traceId);
      expect(rerun?.links).toEqual([
        {
          traceId: first?.traceId,
          spanId: first?.spanId,
          traceState: '',
          flags: 0x101,
          attributes: {
            'pyats.link.kind': 'previous_run',
            'pyats.job.id': easypyRunId('job', new Date(base)),
            'pyats.job.run_id': first?.attributes['pyats.job.run_id'],
          },
        },
      ]);
      expect(rerun?.attributes['pyats.job.name']).toBe('job');
      for (const span of spans.filter((s) => s.attributes['pyats.section.type'] !== 'TestSuite'))
        expect(span.links, span.name).toEqual([]);
    } finally {
      expect((await exporter.stop()).code).toBe(0);
    }
  });
});
