// MetricsSink and ExporterHealth fed hand-built pipeline records; the exposition is checked against a golden
// file and by promtool. Regenerate the golden file: UPDATE_GOLDEN=1 npx vitest run test/telemetry/metrics.test.ts
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import {
  REJECT_REASONS,
  RESULT_VALUES,
  type FinishedSection,
  type JobInfo,
  type JobSummary,
  type ResultValue,
  type StartedSection,
} from '../../src/events/types.js';
import { ExporterHealth, registerProcessMetrics, SPAN_DROP_REASONS } from '../../src/telemetry/health.js';
import { MetricsSink } from '../../src/telemetry/metrics.js';
import { itPromtool, PROMTOOL_SKIP_NOTE, promtoolCheck } from '../helpers/promtool.js';

const GOLDEN = fileURLToPath(new URL('../golden/metrics.prom', import.meta.url));

const NIGHTLY: JobInfo = {
  jobId: 'nightly',
  runId: 'nightly@1700000000000',
  traceId: '0123456789abcdef0123456789abcdef',
};
const WEEKLY: JobInfo = {
  jobId: 'weekly',
  runId: 'weekly@1700003600000',
  traceId: 'fedcba9876543210fedcba9876543210',
};

const SMOKE: JobInfo = {
  jobId: 'smoke',
  runId: 'smoke@1700007200000',
  traceId: '00112233445566778899aabbccddeeff',
};

const T0 = 1_700_000_000_000;

function finished(
  fields: Partial<FinishedSection> & { seqNum: number; type: string; result?: FinishedSection['result'] },
): FinishedSection {
  const runtime = fields.runtime ?? 1;
  return {
    job: NIGHTLY,
    spanId: fields.seqNum.toString(16).padStart(16, '0'),
    task: 'task-1',
    startTime: T0,
    stopTime: T0 + runtime * 1000,
    runtime,
    result: { value: 'passed' },
    incomplete: false,
    orphan: false,
    started: true,
    ...fields,
  };
}

function started(seqNum: number, type: string, job: JobInfo = NIGHTLY): StartedSection {
  return { job, seqNum, type, task: 'task-1' };
}

function counts(partial: Partial<Record<ResultValue, number>>): Record<ResultValue, number> {
  const all = Object.fromEntries(RESULT_VALUES.map((r) => [r, 0])) as Record<ResultValue, number>;
  return { ...all, ...partial };
}

function summary(fields: Partial<JobSummary> = {}): JobSummary {
  return {
    job: NIGHTLY,
    result: 'passed',
    startTime: T0,
    stopTime: T0 + 3_600_000,
    runtime: 3600,
    counts: counts({ passed: 1 }),
    incomplete: false,
    ...fields,
  };
}

function setup(durationBuckets?: number[]): { registry: Registry; sink: MetricsSink } {
  const registry = new Registry();
  return { registry, sink: new MetricsSink({ registry, durationBuckets }) };
}

type Labels = Record<string, string | number>;
/** A sample as `getMetricsAsJSON` gives it; prom-client's typings leave out a histogram's `metricName`. */
interface Sample {
  value: number;
  labels: Labels;
  metricName?: string;
}

/** The sample values of `metric` (optionally a histogram's `_bucket`/`_sum`/`_count`) matching `labels`. */
async function samples(
  registry: Registry,
  metric: string,
  labels: Labels = {},
  sampleName = metric,
): Promise<Sample[]> {
  const family = (await registry.getMetricsAsJSON()).find((m) => m.name === metric);
  if (family === undefined) throw new Error(`metric ${metric} not registered`);
  return (family.values as Sample[]).filter(
    (v) =>
      (v.metricName ?? metric) === sampleName &&
      Object.entries(labels).every(([k, want]) => v.labels[k] === want),
  );
}

async function value(
  registry: Registry,
  metric: string,
  labels: Labels,
  sampleName = metric,
): Promise<number | undefined> {
  const found = await samples(registry, metric, labels, sampleName);
  if (found.length > 1)
    throw new Error(`${found.length} samples of ${sampleName} match ${JSON.stringify(labels)}`);
  return found[0]?.value;
}

/** The records behind the golden file: one small job with every kind of record, and a second job. */
function feedFixture(sink: MetricsSink): void {
  sink.sectionStarted(started(1, 'TestSuite'));
  sink.sectionStarted(started(2, 'Task'));
  sink.sectionStarted(started(3, 'CommonSetup'));
  sink.sectionStarted(started(4, 'Subsection'));
  sink.sectionFinished(finished({ seqNum: 4, type: 'Subsection', id: 'connect', runtime: 12.5 }));
  sink.sectionFinished(finished({ seqNum: 3, type: 'CommonSetup', id: 'common_setup', runtime: 13 }));
  sink.sectionStarted(started(5, 'Testcase'));
  sink.sectionStarted(started(6, 'TestSection'));
  sink.sectionStarted(started(7, 'Step'));
  sink.sectionFinished(finished({ seqNum: 7, type: 'Step', name: 'ping', runtime: 0.03 }));
  sink.sectionFinished(finished({ seqNum: 6, type: 'TestSection', id: 'test', runtime: 0.2 }));
  sink.sectionFinished(finished({ seqNum: 5, type: 'Testcase', id: 'tc_ping', runtime: 0.4 }));
  sink.sectionStarted(started(8, 'Testcase'));
  sink.sectionStarted(started(9, 'TestSection'));
  sink.sectionFinished(
    finished({ seqNum: 9, type: 'TestSection', id: 'test', runtime: 75, result: { value: 'failed' } }),
  );
  // A testcase id with a quote and a backslash, to pin label escaping in the golden file.
  sink.sectionFinished(
    finished({ seqNum: 8, type: 'Testcase', id: 'tc_"bgp"\\v4', runtime: 80, result: { value: 'failed' } }),
  );
  sink.sectionStarted(started(10, 'CommonCleanup'));
  sink.sectionFinished(
    finished({
      seqNum: 10,
      type: 'CommonCleanup',
      id: 'common_cleanup',
      runtime: 4000,
      result: { value: 'errored' },
      incomplete: true,
    }),
  );
  sink.sectionFinished(
    finished({ seqNum: 2, type: 'Task', id: 'task-1', runtime: 4200, result: { value: 'errored' } }),
  );
  sink.sectionFinished(
    finished({
      seqNum: 1,
      type: 'TestSuite',
      id: 'nightly',
      task: 'none',
      runtime: 4300,
      result: { value: 'errored' },
    }),
  );
  sink.jobFinished(
    summary({
      result: 'errored',
      runtime: 4300,
      stopTime: T0 + 4_300_000,
      counts: counts({ passed: 2, failed: 1, errored: 1 }),
    }),
  );

  sink.sectionStarted(started(1, 'TestSuite', WEEKLY));
  sink.sectionFinished(
    finished({ job: WEEKLY, seqNum: 3, type: 'Testcase', name: 'tc_unnamed', runtime: 1.5, started: false }),
  );
  sink.sectionFinished(finished({ job: WEEKLY, seqNum: 1, type: 'TestSuite', task: 'none', runtime: 2 }));
  sink.jobFinished(summary({ job: WEEKLY, runtime: undefined, startTime: T0, stopTime: T0 + 120_000 }));

  // Still running when scraped: only in-progress series.
  sink.sectionStarted(started(1, 'TestSuite', SMOKE));
  sink.sectionStarted(started(2, 'Task', SMOKE));
  sink.sectionStarted(started(3, 'Testcase', SMOKE));
  sink.sectionStarted(started(4, 'TestSection', SMOKE));
  sink.sectionStarted(started(5, 'TestSection', SMOKE));
  sink.sectionFinished(finished({ job: SMOKE, seqNum: 4, type: 'TestSection', id: 'first', runtime: 0.7 }));
}

describe('MetricsSink', () => {
  it('counts finished sections by job, task, type and result', async () => {
    const { registry, sink } = setup();
    sink.sectionFinished(finished({ seqNum: 1, type: 'TestSection' }));
    sink.sectionFinished(finished({ seqNum: 2, type: 'TestSection' }));
    sink.sectionFinished(finished({ seqNum: 3, type: 'TestSection', result: { value: 'failed' } }));
    sink.sectionFinished(finished({ seqNum: 4, type: 'Step', task: 'task-2' }));

    const total = 'pyats_section_results_total';
    expect(await value(registry, total, { type: 'TestSection', result: 'passed' })).toBe(2);
    expect(await value(registry, total, { type: 'TestSection', result: 'failed' })).toBe(1);
    expect(
      await value(registry, total, { job: 'nightly', task: 'task-2', type: 'Step', result: 'passed' }),
    ).toBe(1);
    expect(await samples(registry, total)).toHaveLength(3);
  });

  it('observes runtimes in the duration histogram, per type and result', async () => {
    const { registry, sink } = setup();
    sink.sectionFinished(finished({ seqNum: 1, type: 'Step', runtime: 0.03 }));
    sink.sectionFinished(finished({ seqNum: 2, type: 'Step', runtime: 0.2 }));
    sink.sectionFinished(finished({ seqNum: 3, type: 'Testcase', runtime: 5400 }));

    const h = 'pyats_section_duration_seconds';
    const step = { type: 'Step', result: 'passed' };
    expect(await value(registry, h, step, `${h}_count`)).toBe(2);
    expect(await value(registry, h, step, `${h}_sum`)).toBeCloseTo(0.23);
    expect(await value(registry, h, { ...step, le: 0.01 }, `${h}_bucket`)).toBe(0);
    expect(await value(registry, h, { ...step, le: 0.05 }, `${h}_bucket`)).toBe(1);
    expect(await value(registry, h, { ...step, le: 0.25 }, `${h}_bucket`)).toBe(2);
    const testcase = { type: 'Testcase', result: 'passed' };
    expect(await value(registry, h, { ...testcase, le: 3600 }, `${h}_bucket`)).toBe(0);
    expect(await value(registry, h, { ...testcase, le: 7200 }, `${h}_bucket`)).toBe(1);
    expect(await value(registry, h, { ...testcase, le: '+Inf' }, `${h}_bucket`)).toBe(1);
  });

  it('uses the configured duration buckets and refuses unusable ones', async () => {
    const { registry, sink } = setup([1, 10]);
    sink.sectionFinished(finished({ seqNum: 1, type: 'Step', runtime: 3 }));
    const buckets = await samples(
      registry,
      'pyats_section_duration_seconds',
      {},
      'pyats_section_duration_seconds_bucket',
    );
    expect(buckets.map((b) => [b.labels.le, b.value])).toEqual([
      [1, 0],
      [10, 1],
      ['+Inf', 1],
    ]);

    for (const bad of [[], [1, 1], [5, 2], [0, 1], [1, Infinity]]) {
      let thrown: unknown;
      try {
        new MetricsSink({ registry: new Registry(), durationBuckets: bad });
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(ConfigError);
      expect((thrown as ConfigError).code).toBe('INVALID_BUCKETS');
    }
  });

  it('keeps a per-testcase series for Testcase, CommonSetup and CommonCleanup only', async () => {
    const { registry, sink } = setup();
    sink.sectionFinished(finished({ seqNum: 1, type: 'CommonSetup', id: 'common_setup' }));
    sink.sectionFinished(finished({ seqNum: 2, type: 'Testcase', id: 'tc_a' }));
    sink.sectionFinished(
      finished({ seqNum: 3, type: 'Testcase', name: 'tc_named_only', result: { value: 'skipped' } }),
    );
    sink.sectionFinished(finished({ seqNum: 4, type: 'CommonCleanup', id: 'common_cleanup' }));
    sink.sectionFinished(finished({ seqNum: 5, type: 'TestSection', id: 'test' }));
    sink.sectionFinished(finished({ seqNum: 6, type: 'Step', id: 'step' }));

    const total = 'pyats_testcase_results_total';
    const series = (await samples(registry, total)).map((s) => [s.labels.testcase, s.labels.result]);
    expect(series).toEqual([
      ['common_setup', 'passed'],
      ['tc_a', 'passed'],
      ['tc_named_only', 'skipped'],
      ['common_cleanup', 'passed'],
    ]);
    expect(
      await value(registry, total, { job: 'nightly', task: 'task-1', testcase: 'tc_a', result: 'passed' }),
    ).toBe(1);
  });

  it('flips the last-result gauge of a testcase, with all seven series present', async () => {
    const { registry, sink } = setup();
    const last = 'pyats_testcase_last_result';
    sink.sectionFinished(finished({ seqNum: 2, type: 'Testcase', id: 'tc_a' }));
    const afterPass = await samples(registry, last, { testcase: 'tc_a' });
    expect(afterPass.map((s) => s.labels.result).sort()).toEqual([...RESULT_VALUES].sort());
    expect(afterPass.filter((s) => s.value === 1).map((s) => s.labels.result)).toEqual(['passed']);

    sink.sectionFinished(finished({ seqNum: 9, type: 'Testcase', id: 'tc_a', result: { value: 'failed' } }));
    const afterFail = await samples(registry, last, { testcase: 'tc_a' });
    expect(afterFail).toHaveLength(7);
    expect(afterFail.filter((s) => s.value === 1).map((s) => s.labels.result)).toEqual(['failed']);
    expect(await value(registry, last, { testcase: 'tc_a', result: 'passed' })).toBe(0);
    expect(
      await value(registry, 'pyats_testcase_results_total', { testcase: 'tc_a', result: 'passed' }),
    ).toBe(1);
    expect(
      await value(registry, 'pyats_testcase_results_total', { testcase: 'tc_a', result: 'failed' }),
    ).toBe(1);
  });

  it('tracks sections in progress and drops the job series when the job finishes', async () => {
    const { registry, sink } = setup();
    const gauge = 'pyats_sections_in_progress';
    sink.sectionStarted(started(1, 'Testcase'));
    sink.sectionStarted(started(2, 'TestSection'));
    sink.sectionStarted(started(3, 'TestSection'));
    expect(await value(registry, gauge, { job: 'nightly', type: 'TestSection' })).toBe(2);
    expect(await value(registry, gauge, { job: 'nightly', type: 'Testcase' })).toBe(1);

    sink.sectionFinished(finished({ seqNum: 2, type: 'TestSection' }));
    expect(await value(registry, gauge, { type: 'TestSection' })).toBe(1);
    // Never announced as started (e.g. seen only at stop): must not decrement.
    sink.sectionFinished(finished({ seqNum: 7, type: 'TestSection', started: false }));
    expect(await value(registry, gauge, { type: 'TestSection' })).toBe(1);
    sink.sectionFinished(finished({ seqNum: 3, type: 'TestSection' }));
    sink.sectionFinished(finished({ seqNum: 1, type: 'Testcase' }));
    expect(await value(registry, gauge, { type: 'TestSection' })).toBe(0);
    expect(await value(registry, gauge, { type: 'Testcase' })).toBe(0);

    sink.jobFinished(summary());
    expect(await samples(registry, gauge)).toEqual([]);
    // A stray finish after removal must not resurrect the series at -1.
    sink.sectionFinished(finished({ seqNum: 4, type: 'TestSection' }));
    expect(await samples(registry, gauge)).toEqual([]);
  });

  it('keeps in-progress series while another run of the same job is still open', async () => {
    const { registry, sink } = setup();
    const gauge = 'pyats_sections_in_progress';
    const secondRun: JobInfo = { ...NIGHTLY, runId: 'nightly@1700000100000' };
    sink.sectionStarted(started(1, 'TestSuite'));
    sink.sectionStarted(started(1, 'TestSuite', secondRun));
    expect(await value(registry, gauge, { type: 'TestSuite' })).toBe(2);
    sink.sectionFinished(finished({ seqNum: 1, type: 'TestSuite' }));
    sink.jobFinished(summary());
    expect(await value(registry, gauge, { type: 'TestSuite' })).toBe(1);
    sink.sectionFinished(finished({ job: secondRun, seqNum: 1, type: 'TestSuite' }));
    sink.jobFinished(summary({ job: secondRun }));
    expect(await samples(registry, gauge)).toEqual([]);
  });

  it('counts abandoned sections', async () => {
    const { registry, sink } = setup();
    sink.sectionFinished(
      finished({ seqNum: 1, type: 'Testcase', incomplete: true, result: { value: 'errored' } }),
    );
    sink.sectionFinished(
      finished({ seqNum: 2, type: 'Testcase', incomplete: true, result: { value: 'errored' } }),
    );
    sink.sectionFinished(finished({ seqNum: 3, type: 'Testcase' }));
    expect(
      await value(registry, 'pyats_sections_abandoned_total', { job: 'nightly', type: 'Testcase' }),
    ).toBe(2);
    expect(await samples(registry, 'pyats_sections_abandoned_total')).toHaveLength(1);
  });

  it('records job runs, duration, completion time and last result', async () => {
    const { registry, sink } = setup();
    sink.jobFinished(summary({ result: 'passed', runtime: 90, stopTime: 1_700_000_090_500 }));
    sink.jobFinished(
      summary({ result: 'failed', runtime: undefined, startTime: T0, stopTime: T0 + 7_200_000 }),
    );

    expect(await value(registry, 'pyats_job_runs_total', { job: 'nightly', result: 'passed' })).toBe(1);
    expect(await value(registry, 'pyats_job_runs_total', { job: 'nightly', result: 'failed' })).toBe(1);
    const h = 'pyats_job_duration_seconds';
    expect(await value(registry, h, { job: 'nightly' }, `${h}_count`)).toBe(2);
    expect(await value(registry, h, { job: 'nightly' }, `${h}_sum`)).toBe(7290);
    expect(await value(registry, h, { le: 120 }, `${h}_bucket`)).toBe(1);
    expect(await value(registry, 'pyats_job_last_completion_timestamp_seconds', { job: 'nightly' })).toBe(
      (T0 + 7_200_000) / 1000,
    );
    const last = await samples(registry, 'pyats_job_last_result', { job: 'nightly' });
    expect(last).toHaveLength(7);
    expect(last.filter((s) => s.value === 1).map((s) => s.labels.result)).toEqual(['failed']);
  });

  it("computes Easypy's success ratio and leaves it unset when there are no testcases", async () => {
    const { registry, sink } = setup();
    sink.jobFinished(summary({ counts: counts({ passed: 3, passx: 1, skipped: 1, failed: 2, errored: 1 }) }));
    expect(await value(registry, 'pyats_job_success_ratio', { job: 'nightly' })).toBe(5 / 8);

    sink.jobFinished(summary({ job: WEEKLY, counts: counts({}) }));
    expect(await samples(registry, 'pyats_job_success_ratio', { job: 'weekly' })).toEqual([]);
    // ...and a later empty run of a known job keeps the last real ratio.
    sink.jobFinished(summary({ counts: counts({}) }));
    expect(await value(registry, 'pyats_job_success_ratio', { job: 'nightly' })).toBe(5 / 8);
  });

  it('does not throw on a runtime it cannot observe', async () => {
    const { registry, sink } = setup();
    expect(() =>
      sink.sectionFinished(finished({ seqNum: 1, type: 'Step', runtime: Number.NaN })),
    ).not.toThrow();
    expect(() => sink.sectionFinished(finished({ seqNum: 2, type: 'Step', runtime: -1 }))).not.toThrow();
    expect(await value(registry, 'pyats_section_results_total', { type: 'Step' })).toBe(2);
    expect(await samples(registry, 'pyats_section_duration_seconds')).toEqual([]);
  });

  it('flushes and shuts down at once', async () => {
    const { sink } = setup();
    await expect(sink.forceFlush()).resolves.toBeUndefined();
    await expect(sink.shutdown()).resolves.toBeUndefined();
  });

  it('produces the golden exposition', async () => {
    const { registry, sink } = setup();
    feedFixture(sink);
    const exposition = await registry.metrics();
    if (process.env.UPDATE_GOLDEN) await writeFile(GOLDEN, exposition);
    expect(exposition).toBe(await readFile(GOLDEN, 'utf8'));
  });

  itPromtool(`passes promtool check metrics with no lint findings${PROMTOOL_SKIP_NOTE}`, async () => {
    const registry = new Registry();
    feedFixture(new MetricsSink({ registry }));
    const health = new ExporterHealth({ registry, version: '0.1.0' });
    health.setReporterWatched('/tmp/runinfo/reporter.sock');
    health.eventReceived('reporter_socket');
    const { code, output } = await promtoolCheck(await registry.metrics());
    expect(output).toBe('');
    expect(code).toBe(0);
  });
});

describe('ExporterHealth', () => {
  function healthSetup(): { registry: Registry; health: ExporterHealth } {
    const registry = new Registry();
    return { registry, health: new ExporterHealth({ registry, version: '1.2.3' }) };
  }

  it('counts received and rejected events, with every normalizer reason present from the start', async () => {
    const { registry, health } = healthSetup();
    const rejected = await samples(registry, 'pyats_exporter_events_rejected_total');
    expect(rejected.map((s) => s.labels.reason)).toEqual([...REJECT_REASONS]);
    expect(rejected.every((s) => s.value === 0)).toBe(true);

    health.eventReceived('reporter_socket');
    health.eventReceived('reporter_socket');
    health.eventReceived('ndjson');
    health.eventRejected('bad_seq_num');
    health.eventRejected('decode_error');
    expect(await value(registry, 'pyats_exporter_events_received_total', { source: 'reporter_socket' })).toBe(
      2,
    );
    expect(await value(registry, 'pyats_exporter_events_received_total', { source: 'ndjson' })).toBe(1);
    expect(await value(registry, 'pyats_exporter_events_rejected_total', { reason: 'bad_seq_num' })).toBe(1);
    expect(await value(registry, 'pyats_exporter_events_rejected_total', { reason: 'decode_error' })).toBe(1);
  });

  it('tracks reporter connections and per-socket up', async () => {
    const { registry, health } = healthSetup();
    const a = '/run/a/reporter.sock';
    const b = '/run/b/reporter.sock';
    health.setReporterWatched(a);
    health.setReporterWatched(b);
    expect(await value(registry, 'pyats_exporter_reporter_up', { socket: a })).toBe(0);

    health.connectionOpened(a);
    health.connectionOpened(b);
    expect(await value(registry, 'pyats_exporter_reporter_up', { socket: a })).toBe(1);
    expect(await value(registry, 'pyats_exporter_reporter_connections_open', {})).toBe(2);
    health.setReporterWatched(a);
    expect(await value(registry, 'pyats_exporter_reporter_up', { socket: a })).toBe(1);

    health.connectionClosed(a, 'eof');
    expect(await value(registry, 'pyats_exporter_reporter_up', { socket: a })).toBe(0);
    expect(await value(registry, 'pyats_exporter_reporter_up', { socket: b })).toBe(1);
    expect(await value(registry, 'pyats_exporter_reporter_connections_open', {})).toBe(1);
    expect(await value(registry, 'pyats_exporter_reporter_connections_total', {})).toBe(2);
    expect(await value(registry, 'pyats_exporter_reporter_disconnects_total', { reason: 'eof' })).toBe(1);

    // An unmatched close is counted as a disconnect but cannot drive the open gauge below zero.
    health.connectionClosed(a, 'error');
    expect(await value(registry, 'pyats_exporter_reporter_connections_open', {})).toBe(1);

    health.setReporterUnwatched(a);
    expect(await samples(registry, 'pyats_exporter_reporter_up', { socket: a })).toEqual([]);
  });

  it('counts exported and dropped spans, with drop reasons present from the start', async () => {
    const { registry, health } = healthSetup();
    const dropped = await samples(registry, 'pyats_exporter_spans_dropped_total');
    expect(dropped.map((s) => [s.labels.reason, s.value])).toEqual(SPAN_DROP_REASONS.map((r) => [r, 0]));
    health.spansExported(10);
    health.spansExported(5);
    health.spansDropped(3, 'queue_full');
    health.spansDropped(0, 'shutdown');
    expect(await value(registry, 'pyats_exporter_spans_exported_total', {})).toBe(15);
    expect(await value(registry, 'pyats_exporter_spans_dropped_total', { reason: 'queue_full' })).toBe(3);
    expect(await value(registry, 'pyats_exporter_spans_dropped_total', { reason: 'shutdown' })).toBe(0);
  });

  it('exposes build info', async () => {
    const { registry } = healthSetup();
    expect(
      await value(registry, 'pyats_exporter_build_info', {
        version: '1.2.3',
        nodejs_version: process.versions.node,
      }),
    ).toBe(1);
  });

  it('adds process metrics only when asked', async () => {
    const { registry } = healthSetup();
    expect((await registry.getMetricsAsJSON()).some((m) => m.name.startsWith('process_'))).toBe(false);
    registerProcessMetrics(registry);
    expect(registry.getSingleMetric('process_cpu_seconds_total')).toBeDefined();
  });
});
