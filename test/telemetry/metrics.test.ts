// MetricsSink and ExporterHealth fed hand-built pipeline records; the exposition is checked against a golden
// file and by promtool; trace exemplars are checked in both formats, over HTTP, and as stored by a real
// Prometheus. Regenerate the golden file: UPDATE_GOLDEN=1 npx vitest run test/telemetry/metrics.test.ts
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Gauge, Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
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
import { createApp, listen, renderMetrics, type ListeningServer } from '../../src/http/server.js';
import { silentLogger } from '../../src/log.js';
import { MetricsSink } from '../../src/telemetry/metrics.js';
import { itPromtool, PROMTOOL_SKIP_NOTE, promtoolCheck } from '../helpers/promtool.js';

const GOLDEN = fileURLToPath(new URL('../golden/metrics.prom', import.meta.url));

// Ids as easypy makes them, unique per run: every `job` label (and so the golden file) must carry the name.
const NIGHTLY: JobInfo = {
  jobId: 'nightly.2023Nov14_22:13:20.000000',
  jobName: 'nightly',
  runId: 'nightly.2023Nov14_22:13:20.000000@1700000000000',
  traceId: '0123456789abcdef0123456789abcdef',
};
const WEEKLY: JobInfo = {
  jobId: 'weekly.2023Nov14_23:13:20.000000',
  jobName: 'weekly',
  runId: 'weekly.2023Nov14_23:13:20.000000@1700003600000',
  traceId: 'fedcba9876543210fedcba9876543210',
};

const SMOKE: JobInfo = {
  jobId: 'smoke.2023Nov15_00:13:20.000000',
  jobName: 'smoke',
  runId: 'smoke.2023Nov15_00:13:20.000000@1700007200000',
  traceId: '00112233445566778899aabbccddeeff',
};

/** Two runs of one job (easypy gives each its own id), for the history series. */
const HOURLY_1: JobInfo = {
  jobId: 'hourly.2023Nov15_01:13:20.000000',
  jobName: 'hourly',
  runId: 'hourly.2023Nov15_01:13:20.000000@1700010800000',
  traceId: '0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f',
};
const HOURLY_2: JobInfo = {
  jobId: 'hourly.2023Nov15_02:13:20.000000',
  jobName: 'hourly',
  runId: 'hourly.2023Nov15_02:13:20.000000@1700014400000',
  traceId: 'f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0',
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

  // Two runs of one job: tc_flap passes then fails (a previous result, one flip, the latest duration);
  // tc_skip is skipped twice (a previous result, no flip, no duration).
  for (const [job, flap, runtime] of [
    [HOURLY_1, 'passed', 2],
    [HOURLY_2, 'failed', 3.25],
  ] as const) {
    sink.sectionFinished(
      finished({ job, seqNum: 2, type: 'Testcase', id: 'tc_flap', runtime, result: { value: flap } }),
    );
    sink.sectionFinished(
      finished({ job, seqNum: 3, type: 'Testcase', id: 'tc_skip', runtime: 0, result: { value: 'skipped' } }),
    );
    sink.jobFinished(summary({ job, result: flap, runtime: 10, counts: counts({ [flap]: 1, skipped: 1 }) }));
  }
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

  describe('testcase history between runs', () => {
    /** One run of `job`: each testcase with its result (and runtime, default 1 s). */
    function run(
      sink: MetricsSink,
      results: Record<string, ResultValue | { value: ResultValue; runtime?: number; incomplete?: boolean }>,
    ): void {
      let seqNum = 1;
      for (const [id, spec] of Object.entries(results)) {
        const { value, runtime = 1, incomplete = false } = typeof spec === 'string' ? { value: spec } : spec;
        sink.sectionFinished(
          finished({ seqNum: ++seqNum, type: 'Testcase', id, runtime, incomplete, result: { value } }),
        );
      }
    }

    const flips = 'pyats_testcase_result_flips_total';
    const previous = 'pyats_testcase_previous_result';
    const duration = 'pyats_testcase_last_duration_seconds';

    it('shows the previous result from the second run on, exactly one of its seven series at 1', async () => {
      const { registry, sink } = setup();
      run(sink, { tc_a: 'passed' });
      expect(await samples(registry, previous)).toEqual([]);
      run(sink, { tc_a: 'failed' });
      const second = await samples(registry, previous, { testcase: 'tc_a' });
      expect(second.map((s) => s.labels.result).sort()).toEqual([...RESULT_VALUES].sort());
      expect(second.filter((s) => s.value === 1).map((s) => s.labels.result)).toEqual(['passed']);
      run(sink, { tc_a: 'blocked' });
      const third = await samples(registry, previous, { testcase: 'tc_a', job: 'nightly', task: 'task-1' });
      expect(third.filter((s) => s.value === 1).map((s) => s.labels.result)).toEqual(['failed']);
      expect(
        await value(registry, 'pyats_testcase_last_result', { testcase: 'tc_a', result: 'blocked' }),
      ).toBe(1);
    });

    it('counts pass/fail flips: pass, fail, pass, fail is three', async () => {
      const { registry, sink } = setup();
      run(sink, { tc_a: 'passed' });
      expect(await samples(registry, flips)).toEqual([]);
      run(sink, { tc_a: 'failed' });
      // Created at its first flip, already at 1, like every labelled counter of the exporter.
      expect(await value(registry, flips, { job: 'nightly', task: 'task-1', testcase: 'tc_a' })).toBe(1);
      run(sink, { tc_a: 'passed' });
      run(sink, { tc_a: 'failed' });
      expect(await value(registry, flips, { testcase: 'tc_a' })).toBe(3);
    });

    it('flips on the verdict: passx passes, errored and aborted fail, skipped, blocked and abandoned runs have none', async () => {
      const { registry, sink } = setup();
      const sequence: (ResultValue | { value: ResultValue; incomplete: boolean })[] = [
        'passed',
        'passx', // pass → pass
        'skipped', // no verdict
        'blocked', // no verdict
        'passed', // still pass: blocked and skipped runs between two passes are no flip
        'errored', // pass → fail: 1
        'failed', // fail → fail
        'aborted', // fail → fail
        { value: 'aborted', incomplete: true }, // abandoned: the exporter's result, not pyATS's
        'blocked',
        'passx', // fail → pass across the runs without a verdict: 2
        { value: 'aborted', incomplete: true },
        'passed', // pass → pass
      ];
      for (const result of sequence) run(sink, { tc_a: result });
      expect(await value(registry, flips, { testcase: 'tc_a' })).toBe(2);
      // Never a flip: no series at all.
      const steady = setup();
      for (const result of ['passed', 'skipped', 'passx', 'blocked', 'passed'] as const)
        run(steady.sink, { tc_b: result });
      expect(await samples(steady.registry, flips)).toEqual([]);
    });

    it('keeps the runtime of the latest run that passed or failed', async () => {
      const { registry, sink } = setup();
      run(sink, { tc_a: { value: 'skipped', runtime: 0 } });
      expect(await samples(registry, duration)).toEqual([]);
      run(sink, { tc_a: { value: 'passed', runtime: 12.5 } });
      expect(await value(registry, duration, { job: 'nightly', task: 'task-1', testcase: 'tc_a' })).toBe(
        12.5,
      );
      run(sink, { tc_a: { value: 'failed', runtime: 300 } });
      expect(await value(registry, duration, { testcase: 'tc_a' })).toBe(300);
      // Skipped, blocked and abandoned runs (and unusable runtimes) leave it as it was.
      run(sink, { tc_a: { value: 'blocked', runtime: 0 } });
      run(sink, { tc_a: { value: 'aborted', runtime: 5, incomplete: true } });
      run(sink, { tc_a: { value: 'passed', runtime: Number.NaN } });
      expect(await value(registry, duration, { testcase: 'tc_a' })).toBe(300);
    });

    it('keeps testcases apart by job and task', async () => {
      const { registry, sink } = setup();
      sink.sectionFinished(finished({ seqNum: 2, type: 'Testcase', id: 'tc', task: 'A' }));
      sink.sectionFinished(
        finished({ seqNum: 3, type: 'Testcase', id: 'tc', task: 'B', result: { value: 'failed' } }),
      );
      sink.sectionFinished(
        finished({
          job: WEEKLY,
          seqNum: 2,
          type: 'Testcase',
          id: 'tc',
          task: 'A',
          result: { value: 'failed' },
        }),
      );
      expect(await samples(registry, flips)).toEqual([]);
      expect(await samples(registry, previous)).toEqual([]);
    });

    it('keeps no history for testcases past the label cap (__other__)', async () => {
      const registry = new Registry();
      const sink = new MetricsSink({ registry, labelLimits: { maxValues: 1 } });
      for (const result of ['passed', 'failed', 'passed'] as const)
        run(sink, { tc_a: result, tc_b: result, tc_c: result });
      expect((await samples(registry, flips)).map((s) => [s.labels.testcase, s.value])).toEqual([
        ['tc_a', 2],
      ]);
      expect(new Set((await samples(registry, previous)).map((s) => s.labels.testcase))).toEqual(
        new Set(['tc_a']),
      );
      expect((await samples(registry, duration)).map((s) => s.labels.testcase)).toEqual(['tc_a']);
      // The shared last-result series are still reported, as before.
      expect(
        await value(registry, 'pyats_testcase_last_result', { testcase: '__other__', result: 'passed' }),
      ).toBe(1);
    });

    it('drops a testcase’s history series with its last result when it idles out', async () => {
      let now = 0;
      const registry = new Registry();
      const sink = new MetricsSink({ registry, labelLimits: { idleTtlMs: 60_000 }, now: () => now });
      run(sink, { tc_old: 'passed' });
      run(sink, { tc_old: 'failed' });
      expect(await samples(registry, flips, { testcase: 'tc_old' })).toHaveLength(1);
      now = 120_000;
      run(sink, { tc_new: 'passed' });
      for (const metric of [flips, previous, duration, 'pyats_testcase_last_result'])
        expect(await samples(registry, metric, { testcase: 'tc_old' }), metric).toEqual([]);
      // Back after its release: a new history, no previous result, no flip.
      run(sink, { tc_old: 'failed' });
      expect(await samples(registry, previous, { testcase: 'tc_old' })).toEqual([]);
      expect(await samples(registry, flips, { testcase: 'tc_old' })).toEqual([]);
      expect(sink.cardinality().children['pyats_testcase_last_result']).toBe(2);
    });
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

  it('labels by the job name, so the runs of a real pyATS job (a new id each) share their series', async () => {
    const { registry, sink } = setup();
    // The TestSuite ids of two runs of the same job, as a real pyATS 23.2 reports them.
    const runs: JobInfo[] = ['job.2026Dec02_16:18:03.912790', 'job.2026Dec02_17:00:41.005512'].map(
      (jobId, i) => ({ jobId, jobName: 'job', runId: `${jobId}@${i}`, traceId: 'ab'.repeat(16) }),
    );
    for (const job of runs) {
      sink.sectionStarted(started(1, 'TestSuite', job));
      sink.sectionFinished(
        finished({ job, seqNum: 5, type: 'Testcase', id: 'TcPass', result: { value: 'failed' } }),
      );
      sink.sectionFinished(
        finished({ job, seqNum: 1, type: 'TestSuite', task: 'none', result: { value: 'aborted' } }),
      );
      sink.jobFinished(summary({ job, result: 'aborted', counts: counts({ failed: 1 }) }));
    }
    expect(await value(registry, 'pyats_job_runs_total', { job: 'job', result: 'aborted' })).toBe(2);
    expect(
      await value(registry, 'pyats_testcase_results_total', {
        job: 'job',
        testcase: 'TcPass',
        result: 'failed',
      }),
    ).toBe(2);
    const families = await registry.getMetricsAsJSON();
    const jobLabels = new Set(
      families.flatMap((f) => (f.values as Sample[]).map((v) => v.labels.job).filter((j) => j !== undefined)),
    );
    expect([...jobLabels]).toEqual(['job']);
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

const PROMETHEUS = '/usr/bin/prometheus';
/** Debian's python3-prometheus-client: its OpenMetrics parser is strict, unlike promtool's text parser. */
const SYSTEM_PYTHON = '/usr/bin/python3';
const HAVE_OM_PARSER = existsSync('/usr/lib/python3/dist-packages/prometheus_client/openmetrics/parser.py');
const itOmParser = HAVE_OM_PARSER || process.env['CI'] ? it : it.skip;
const itPrometheus = existsSync(PROMETHEUS) || process.env['CI'] ? it : it.skip;
const PROMETHEUS_242_ACCEPT =
  'application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,' +
  'text/plain;version=0.0.4;q=0.5,*/*;q=0.1';

interface ParsedExemplar {
  sample: string;
  labels: Record<string, string>;
  exemplar: Record<string, string>;
  value: number;
}

/** Parses an OpenMetrics exposition with python's strict parser; throws with its message if it refuses. */
function parseOpenMetrics(exposition: string): Promise<ParsedExemplar[]> {
  const script = [
    'import json, sys',
    'from prometheus_client.openmetrics.parser import text_string_to_metric_families',
    'out = []',
    'for family in text_string_to_metric_families(sys.stdin.read()):',
    '    for s in family.samples:',
    '        if s.exemplar is not None:',
    '            out.append({"sample": s.name, "labels": s.labels, "exemplar": s.exemplar.labels, "value": s.exemplar.value})',
    'print(json.dumps(out))',
  ].join('\n');
  return new Promise((resolve, reject) => {
    const child = spawn(SYSTEM_PYTHON, ['-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(JSON.parse(stdout) as ParsedExemplar[]) : reject(new Error(stderr)),
    );
    child.stdin.end(exposition);
  });
}

/** The OpenMetrics exemplar suffix prom-client writes: ` # {labels} value timestamp`. */
const EXEMPLAR_LINE =
  /^(pyats_section_duration_seconds_bucket\{[^}]*\}) \d+ # \{trace_id="([0-9a-f]{32})",span_id="([0-9a-f]{16})"\} ([0-9.e+-]+) (\d+(?:\.\d+)?)$/;

function exemplarLines(exposition: string): RegExpMatchArray[] {
  return exposition
    .split('\n')
    .map((line) => EXEMPLAR_LINE.exec(line))
    .filter((m): m is RegExpExecArray => m !== null);
}

describe('trace exemplars on pyats_section_duration_seconds', () => {
  function exemplarSetup(): { registry: Registry; sink: MetricsSink } {
    const registry = new Registry();
    const sink = new MetricsSink({ registry });
    sink.sectionFinished(finished({ seqNum: 6, type: 'TestSection', id: 'test', runtime: 0.2 }));
    sink.sectionFinished(finished({ seqNum: 7, type: 'TestSection', id: 'slow', runtime: 20_000 }));
    sink.sectionFinished(finished({ job: WEEKLY, seqNum: 3, type: 'Testcase', id: 'tc', runtime: 3 }));
    return { registry, sink };
  }

  it('puts trace_id and span_id on the bucket the runtime fell in, in OpenMetrics only', async () => {
    const before = Date.now() / 1000;
    const { registry } = exemplarSetup();
    const om = await renderMetrics(registry, 'openmetrics');
    const lines = exemplarLines(om).map(([, series, traceId, spanId, value]) => ({
      series,
      traceId,
      spanId,
      value,
    }));
    expect(lines).toEqual([
      {
        series:
          'pyats_section_duration_seconds_bucket{le="0.25",job="nightly",task="task-1",type="TestSection",result="passed"}',
        traceId: NIGHTLY.traceId,
        spanId: '0000000000000006',
        value: '0.2',
      },
      {
        series:
          'pyats_section_duration_seconds_bucket{le="+Inf",job="nightly",task="task-1",type="TestSection",result="passed"}',
        traceId: NIGHTLY.traceId,
        spanId: '0000000000000007',
        value: '20000',
      },
      {
        series:
          'pyats_section_duration_seconds_bucket{le="5",job="weekly",task="task-1",type="Testcase",result="passed"}',
        traceId: WEEKLY.traceId,
        spanId: '0000000000000003',
        value: '3',
      },
    ]);
    // The exemplar timestamp is the observation time, in seconds.
    const stamp = Number(exemplarLines(om)[0]?.[5]);
    expect(stamp).toBeGreaterThanOrEqual(Math.floor(before));
    expect(stamp).toBeLessThanOrEqual(Date.now() / 1000 + 1);
    // Only bucket lines carry them.
    expect(om.split('\n').filter((l) => l.includes(' # {'))).toHaveLength(3);

    const text = await renderMetrics(registry, 'prometheus');
    expect(text).not.toContain('trace_id');
    expect(text).not.toContain(' # ');
    expect(text).toBe(await registry.metrics());
  });

  it('keeps only the latest exemplar of each bucket, and none when exemplars are off', async () => {
    const { registry, sink } = exemplarSetup();
    sink.sectionFinished(finished({ seqNum: 9, type: 'TestSection', id: 'again', runtime: 0.21 }));
    const lines = exemplarLines(await renderMetrics(registry, 'openmetrics'));
    const bucket = lines.filter((m) => m[1]?.includes('le="0.25"'));
    expect(bucket.map((m) => [m[3], m[4]])).toEqual([['0000000000000009', '0.21']]);

    const plain = new Registry();
    new MetricsSink({ registry: plain, exemplars: false }).sectionFinished(
      finished({ seqNum: 1, type: 'Step', runtime: 1 }),
    );
    const om = await renderMetrics(plain, 'openmetrics');
    expect(om).toContain('pyats_section_duration_seconds_bucket{le="1",job="nightly"');
    expect(om).not.toContain(' # {');
  });

  itOmParser('renders OpenMetrics that a strict parser accepts, exemplars included', async () => {
    const { registry, sink } = exemplarSetup();
    feedFixture(sink);
    new ExporterHealth({ registry, version: '0.1.0' }).eventReceived('reporter_socket');
    const parsed = await parseOpenMetrics(await renderMetrics(registry, 'openmetrics'));
    expect(parsed.length).toBeGreaterThanOrEqual(3);
    for (const p of parsed) {
      expect(p.sample).toBe('pyats_section_duration_seconds_bucket');
      expect(Object.keys(p.exemplar).sort()).toEqual(['span_id', 'trace_id']);
    }
    expect(parsed).toContainEqual(
      expect.objectContaining({
        exemplar: { trace_id: WEEKLY.traceId, span_id: '0000000000000003' },
        value: 3,
      }),
    );
  });

  itPromtool(
    `keeps the Prometheus text exposition valid with exemplars on${PROMTOOL_SKIP_NOTE}`,
    async () => {
      const { registry, sink } = exemplarSetup();
      feedFixture(sink);
      const { code, output } = await promtoolCheck(await renderMetrics(registry, 'prometheus'));
      expect(output).toBe('');
      expect(code).toBe(0);
    },
  );

  describe('over HTTP', () => {
    const servers: ListeningServer[] = [];
    afterEach(async () => {
      await Promise.all(servers.splice(0).map((s) => s.close()));
    });

    function get(port: number, accept: string): Promise<{ type: string; body: string }> {
      return new Promise((resolve, reject) => {
        const req = http.get(
          { host: '127.0.0.1', port, path: '/metrics', headers: { accept }, agent: false },
          (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => (body += chunk));
            res.on('end', () => resolve({ type: String(res.headers['content-type']), body }));
            res.on('error', reject);
          },
        );
        req.on('error', reject);
      });
    }

    itPromtool(
      `answers concurrent mixed scrapes each in its own format, exemplars only in OpenMetrics${PROMTOOL_SKIP_NOTE}`,
      async () => {
        const { registry, sink } = exemplarSetup();
        // A slow collect interleaves the scrapes with each other and with new observations.
        new Gauge({
          name: 'test_slow_collect',
          help: 'Takes a moment to collect.',
          registers: [registry],
          async collect() {
            await new Promise((resolve) => setTimeout(resolve, 5));
            this.set(1);
          },
        });
        const server = await listen(
          createApp({ registry, ready: () => ({ ready: true }), logger: silentLogger() }),
          {
            host: '127.0.0.1',
            port: 0,
          },
        );
        servers.push(server);
        const formats = Array.from({ length: 24 }, (_, i) => (i % 2 === 0 ? 'openmetrics' : 'prometheus'));
        let seq = 100;
        const feeding = setInterval(() => {
          seq += 1;
          sink.sectionFinished(finished({ seqNum: seq, type: 'TestSection', id: `t${seq}`, runtime: 0.2 }));
        }, 1);
        let replies: { type: string; body: string }[];
        try {
          replies = await Promise.all(
            formats.map((f) =>
              get(
                server.address.port,
                f === 'openmetrics' ? PROMETHEUS_242_ACCEPT : 'text/plain;version=0.0.4',
              ),
            ),
          );
        } finally {
          clearInterval(feeding);
        }
        for (const [i, reply] of replies.entries()) {
          if (formats[i] === 'openmetrics') {
            expect(reply.type).toMatch(/^application\/openmetrics-text; version=1\.0\.0/);
            expect(reply.body.endsWith('\n# EOF\n')).toBe(true);
            expect(exemplarLines(reply.body).length).toBe(3);
            if (HAVE_OM_PARSER) await parseOpenMetrics(reply.body);
          } else {
            expect(reply.type).toMatch(/^text\/plain; version=0\.0\.4/);
            expect(reply.body).not.toContain('trace_id');
            expect(reply.body).toContain('# TYPE pyats_section_results_total counter\n');
            const { code, output } = await promtoolCheck(reply.body);
            expect(output).toBe('');
            expect(code).toBe(0);
          }
        }
      },
    );
  });

  describe('stored by a real Prometheus', () => {
    let prometheus: ChildProcess | undefined;
    let tmp: string | undefined;
    const servers: ListeningServer[] = [];
    afterEach(async () => {
      if (prometheus && prometheus.exitCode === null) {
        const exited = new Promise((resolve) => prometheus?.once('exit', resolve));
        prometheus.kill('SIGTERM');
        await exited;
      }
      prometheus = undefined;
      await Promise.all(servers.splice(0).map((s) => s.close()));
      if (tmp) await rm(tmp, { recursive: true, force: true });
      tmp = undefined;
    });

    itPrometheus(
      'keeps the trace id of a scraped exemplar (Prometheus 2.42, --enable-feature=exemplar-storage)',
      async () => {
        const { registry } = exemplarSetup();
        const exporter = await listen(
          createApp({ registry, ready: () => ({ ready: true }), logger: silentLogger() }),
          { host: '127.0.0.1', port: 0 },
        );
        servers.push(exporter);

        tmp = await mkdtemp(path.join(os.tmpdir(), 'pyats-exemplars-'));
        const config = path.join(tmp, 'prometheus.yml');
        await writeFile(
          config,
          [
            'global:',
            '  scrape_interval: 1s',
            'scrape_configs:',
            '  - job_name: pyats-exporter',
            '    scrape_interval: 1s',
            // As deploy/prometheus ships it: keep the exporter's `job` label, the pyATS job name.
            '    honor_labels: true',
            '    static_configs:',
            `      - targets: ['127.0.0.1:${exporter.address.port}']`,
            '',
          ].join('\n'),
        );
        const port = await freePort();
        let log = '';
        prometheus = spawn(
          PROMETHEUS,
          [
            `--config.file=${config}`,
            `--storage.tsdb.path=${path.join(tmp, 'data')}`,
            `--web.listen-address=127.0.0.1:${port}`,
            '--enable-feature=exemplar-storage',
          ],
          { cwd: tmp, stdio: ['ignore', 'ignore', 'pipe'] },
        );
        prometheus.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString()));

        const api = `http://127.0.0.1:${port}`;
        const found = await poll(60_000, async () => {
          const now = Date.now() / 1000;
          const query = new URLSearchParams({
            query: 'pyats_section_duration_seconds_bucket',
            start: String(now - 600),
            end: String(now + 60),
          });
          const reply = await fetchJson(`${api}/api/v1/query_exemplars?${query}`);
          const series = (reply?.data ?? []) as {
            seriesLabels: Record<string, string>;
            exemplars: { labels: Record<string, string>; value: string }[];
          }[];
          const hit = series.find((s) => s.exemplars.some((e) => e.labels['trace_id'] === WEEKLY.traceId));
          return hit;
        }).catch((err: unknown) => {
          throw new Error(`${String(err)}\nprometheus log:\n${log}`);
        });
        expect(found.seriesLabels).toMatchObject({
          __name__: 'pyats_section_duration_seconds_bucket',
          job: 'weekly',
          le: '5',
          type: 'Testcase',
        });
        expect(found.exemplars).toContainEqual(
          expect.objectContaining({
            labels: { trace_id: WEEKLY.traceId, span_id: '0000000000000003' },
            value: '3',
          }),
        );
      },
      90_000,
    );
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

interface ApiReply {
  status: string;
  data?: unknown[];
}

/** GET and parse JSON; undefined while the server is not up yet. */
async function fetchJson(url: string): Promise<ApiReply | undefined> {
  try {
    const res = await fetch(url);
    if (!res.ok) return undefined;
    return (await res.json()) as ApiReply;
  } catch {
    return undefined;
  }
}

/** Calls `probe` every 250 ms until it returns something, or rejects after `timeoutMs`. */
async function poll<T>(timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`nothing after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
