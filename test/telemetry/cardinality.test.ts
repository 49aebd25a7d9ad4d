// The cardinality guard: per-metric caps on job/task/testcase/type values, `__other__`, the overflow counter,
// bounded label-children caches under a flood of distinct values, and the idle-release policy.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import {
  RESULT_VALUES,
  type FinishedSection,
  type JobInfo,
  type JobSummary,
  type ResultValue,
} from '../../src/events/types.js';
import {
  CardinalityGuard,
  LabelValueLimiter,
  OTHER_LABEL_VALUE,
  validateLabelLimits,
  type LabelLimits,
} from '../../src/telemetry/cardinality.js';
import { MetricsSink } from '../../src/telemetry/metrics.js';
import { parseMetrics, runExporter, sumOf } from '../helpers/exporter-process.js';
import { itPromtool, PROMTOOL_SKIP_NOTE, promtoolCheck } from '../helpers/promtool.js';
import { startStandin } from '../helpers/standin.js';

function job(jobId: string, run = 1): JobInfo {
  return { jobId, jobName: jobId, runId: `${jobId}@${run}`, traceId: 'ab'.repeat(16) };
}

const NIGHTLY = job('nightly');

function testcase(id: string, fields: Partial<FinishedSection> = {}): FinishedSection {
  return {
    job: NIGHTLY,
    seqNum: 1,
    spanId: '00000000000000aa',
    type: 'Testcase',
    id,
    task: 'task-1',
    startTime: 0,
    stopTime: 1000,
    runtime: 1,
    result: { value: 'passed' },
    incomplete: false,
    orphan: false,
    started: false,
    ...fields,
  };
}

function summary(info: JobInfo, result: ResultValue = 'passed'): JobSummary {
  const counts = Object.fromEntries(RESULT_VALUES.map((r) => [r, 0])) as Record<ResultValue, number>;
  counts.passed = 1;
  return { job: info, result, startTime: 0, stopTime: 60_000, runtime: 60, counts, incomplete: false };
}

interface Sample {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

async function samples(registry: Registry, metric: string, sampleName = metric): Promise<Sample[]> {
  const family = (await registry.getMetricsAsJSON()).find((m) => m.name === metric);
  if (family === undefined) throw new Error(`metric ${metric} not registered`);
  return (family.values as Sample[]).filter((v) => (v.metricName ?? metric) === sampleName);
}

async function overflow(registry: Registry, metric: string, label: string): Promise<number | undefined> {
  const all = await samples(registry, 'pyats_exporter_label_overflow_total');
  return all.find((s) => s.labels.metric === metric && s.labels.label === label)?.value;
}

function sink(labelLimits?: LabelLimits, now?: () => number): { registry: Registry; sink: MetricsSink } {
  const registry = new Registry();
  return { registry, sink: new MetricsSink({ registry, labelLimits, now }) };
}

describe('LabelValueLimiter', () => {
  it('admits up to its cap, then answers __other__ and reports each overflow', () => {
    let overflows = 0;
    const limiter = new LabelValueLimiter('m', 'testcase', 2, () => overflows++);
    expect(limiter.admit('a', 0)).toBe('a');
    expect(limiter.admit('b', 0)).toBe('b');
    expect(limiter.admit('a', 0)).toBe('a');
    expect(limiter.admit('c', 0)).toBe(OTHER_LABEL_VALUE);
    expect(limiter.admit('c', 0)).toBe(OTHER_LABEL_VALUE);
    expect(limiter.admit('d', 0)).toBe(OTHER_LABEL_VALUE);
    expect(overflows).toBe(3);
    expect(limiter.size).toBe(2);
    expect(limiter.lookup('b')).toBe('b');
    expect(limiter.lookup('c')).toBe(OTHER_LABEL_VALUE);
    expect(overflows).toBe(3);
  });

  it('lets a released slot be taken by a new value', () => {
    const limiter = new LabelValueLimiter('m', 'job', 1, () => {});
    expect(limiter.admit('a', 0)).toBe('a');
    expect(limiter.admit('b', 0)).toBe(OTHER_LABEL_VALUE);
    limiter.release('a');
    expect(limiter.admit('b', 0)).toBe('b');
    expect(limiter.admit('a', 0)).toBe(OTHER_LABEL_VALUE);
  });

  it('does not spend a slot on a value that is literally __other__', () => {
    const limiter = new LabelValueLimiter('m', 'task', 1, () => {});
    expect(limiter.admit(OTHER_LABEL_VALUE, 0)).toBe(OTHER_LABEL_VALUE);
    expect(limiter.admit('real', 0)).toBe('real');
  });

  it('gives back the values idle since before a cutoff', () => {
    const limiter = new LabelValueLimiter('m', 'testcase', 10, () => {});
    limiter.admit('old', 100);
    limiter.admit('fresh', 100);
    limiter.admit('fresh', 500);
    expect([...limiter.takeIdle(300)]).toEqual(['old']);
    expect(limiter.size).toBe(1);
    expect(limiter.lookup('old')).toBe(OTHER_LABEL_VALUE);
  });
});

describe('label limits', () => {
  it('refuses limits that cannot work, with the bad value in the message', () => {
    const bad: LabelLimits[] = [
      { maxValues: 0 },
      { maxValues: 1.5 },
      { maxValues: Number.NaN },
      { perLabel: { testcase: -1 } },
      { perLabel: { result: 3 } as unknown as LabelLimits['perLabel'] },
      { idleTtlMs: -5 },
      { idleTtlMs: Infinity },
    ];
    for (const limits of bad) {
      let thrown: unknown;
      try {
        validateLabelLimits(limits);
      } catch (err) {
        thrown = err;
      }
      expect(thrown, JSON.stringify(limits)).toBeInstanceOf(ConfigError);
      expect((thrown as ConfigError).code).toBe('INVALID_LABEL_LIMIT');
    }
    expect(() => new MetricsSink({ registry: new Registry(), labelLimits: { maxValues: 0 } })).toThrow(
      ConfigError,
    );
    expect(() => validateLabelLimits({ maxValues: 1, perLabel: { job: 5 }, idleTtlMs: 0 })).not.toThrow();
  });

  it('applies the default cap and the per-label overrides', () => {
    const guard = new CardinalityGuard({ registry: new Registry(), limits: { perLabel: { testcase: 5 } } });
    expect(guard.limiter('m', 'testcase').max).toBe(5);
    expect(guard.limiter('m', 'job').max).toBe(1000);
    const tight = new CardinalityGuard({ registry: new Registry(), limits: { maxValues: 7 } });
    expect(tight.limiter('m', 'task').max).toBe(7);
  });
});

describe('MetricsSink under a flood of label values', () => {
  it('keeps 100k distinct testcase ids to the cap, with __other__ carrying the rest', async () => {
    const { registry, sink: metrics } = sink();
    const flood = 100_000;
    for (let i = 0; i < flood; i++) {
      metrics.sectionFinished(testcase(`tc_param_${i}`, { seqNum: i + 1 }));
    }

    const results = await samples(registry, 'pyats_testcase_results_total');
    expect(results).toHaveLength(1000 + 1);
    const other = results.filter((s) => s.labels.testcase === OTHER_LABEL_VALUE);
    expect(other).toHaveLength(1);
    expect(other[0]?.value).toBe(flood - 1000);
    expect(results.reduce((sum, s) => sum + s.value, 0)).toBe(flood);
    expect(results.find((s) => s.labels.testcase === 'tc_param_999')?.value).toBe(1);
    expect(results.some((s) => s.labels.testcase === 'tc_param_1000')).toBe(false);

    // Seven last-result series per admitted value, and one set for __other__.
    expect(await samples(registry, 'pyats_testcase_last_result')).toHaveLength(7 * 1001);
    expect(await overflow(registry, 'pyats_testcase_results_total', 'testcase')).toBe(flood - 1000);
    expect(await overflow(registry, 'pyats_testcase_last_result', 'testcase')).toBe(flood - 1000);
    expect(await overflow(registry, 'pyats_testcase_results_total', 'job')).toBe(0);

    // The memory that could grow with the flood: label-value maps and label-children caches.
    const report = metrics.cardinality();
    for (const stat of report.labels) expect(stat.values).toBeLessThanOrEqual(stat.max);
    expect(
      report.labels.find((l) => l.metric === 'pyats_testcase_results_total' && l.label === 'testcase'),
    ).toMatchObject({ values: 1000, max: 1000 });
    expect(report.children['pyats_testcase_results_total']).toBe(1001);
    expect(report.children['pyats_testcase_last_result']).toBe(1001);
    // Section metrics do not carry the testcase: one series whatever the flood.
    expect(report.children['pyats_section_results_total']).toBe(1);
    expect(report.children['pyats_section_duration_seconds']).toBe(1);

    // More of the same flood changes counts, not sizes.
    for (let i = flood; i < flood + 10_000; i++) metrics.sectionFinished(testcase(`tc_param_${i}`));
    expect(metrics.cardinality().children).toEqual(report.children);
    expect(await samples(registry, 'pyats_testcase_results_total')).toHaveLength(1001);
  });

  it('caps each guarded label of each metric on its own, with per-label overrides', async () => {
    const { registry, sink: metrics } = sink({ maxValues: 3, perLabel: { task: 2 } });
    for (let j = 0; j < 5; j++) {
      for (let t = 0; t < 4; t++) {
        metrics.sectionFinished(
          testcase(`tc_${t}`, { job: job(`job_${j}`), task: `task_${t}`, type: 'Testcase' }),
        );
      }
    }
    const sections = await samples(registry, 'pyats_section_results_total');
    expect(new Set(sections.map((s) => s.labels.job))).toEqual(
      new Set(['job_0', 'job_1', 'job_2', OTHER_LABEL_VALUE]),
    );
    expect(new Set(sections.map((s) => s.labels.task))).toEqual(
      new Set(['task_0', 'task_1', OTHER_LABEL_VALUE]),
    );
    expect(sections.reduce((sum, s) => sum + s.value, 0)).toBe(20);
    // Two of five jobs overflowed, each for its four sections.
    expect(await overflow(registry, 'pyats_section_results_total', 'job')).toBe(8);
    expect(await overflow(registry, 'pyats_section_results_total', 'task')).toBe(10);
    const testcases = await samples(registry, 'pyats_testcase_results_total');
    expect(new Set(testcases.map((s) => s.labels.testcase))).toEqual(
      new Set(['tc_0', 'tc_1', 'tc_2', OTHER_LABEL_VALUE]),
    );
  });

  it('guards the section type, which comes from the wire', async () => {
    const { registry, sink: metrics } = sink({ perLabel: { type: 2 } });
    for (const type of ['TestSection', 'Step', 'Weird1', 'Weird2']) {
      metrics.sectionFinished(testcase('x', { type }));
    }
    const types = (await samples(registry, 'pyats_section_results_total')).map((s) => s.labels.type);
    expect(types).toEqual(['TestSection', 'Step', OTHER_LABEL_VALUE]);
    expect(await overflow(registry, 'pyats_section_results_total', 'type')).toBe(2);
  });

  it('caps job series across many short jobs, while in-progress slots are freed as jobs end', async () => {
    const { registry, sink: metrics } = sink({ maxValues: 10 });
    for (let j = 0; j < 500; j++) {
      const info = job(`job_${j}`);
      metrics.sectionStarted({ job: info, seqNum: 1, type: 'TestSuite', task: 'none' });
      metrics.sectionFinished(testcase('tc', { job: info, type: 'TestSuite', task: 'none', started: true }));
      metrics.jobFinished(summary(info));
    }
    const runs = await samples(registry, 'pyats_job_runs_total');
    expect(runs).toHaveLength(11);
    expect(runs.find((s) => s.labels.job === OTHER_LABEL_VALUE)?.value).toBe(490);
    // Only running jobs hold an in-progress slot: none ever overflowed, and nothing is left behind.
    expect(await overflow(registry, 'pyats_sections_in_progress', 'job')).toBe(0);
    expect(await samples(registry, 'pyats_sections_in_progress')).toEqual([]);
    const report = metrics.cardinality();
    expect(report.inProgressJobs).toBe(0);
    expect(report.openRuns).toBe(0);
    expect(
      report.labels.find((l) => l.metric === 'pyats_sections_in_progress' && l.label === 'job')?.values,
    ).toBe(0);
  });

  it('sums overflowed running jobs into one __other__ in-progress series and removes it when they end', async () => {
    const { registry, sink: metrics } = sink({ perLabel: { job: 1 } });
    const jobs = [job('a'), job('b'), job('c')];
    for (const info of jobs) metrics.sectionStarted({ job: info, seqNum: 1, type: 'Testcase', task: 't' });
    const gauge = async (): Promise<Array<[string | number | undefined, number]>> =>
      (await samples(registry, 'pyats_sections_in_progress')).map((s) => [s.labels.job, s.value]);
    expect(await gauge()).toEqual([
      ['a', 1],
      [OTHER_LABEL_VALUE, 2],
    ]);

    metrics.sectionFinished(testcase('tc', { job: jobs[1] as JobInfo, started: true }));
    expect(await gauge()).toEqual([
      ['a', 1],
      [OTHER_LABEL_VALUE, 1],
    ]);
    metrics.jobFinished(summary(jobs[1] as JobInfo));
    expect(await gauge()).toEqual([
      ['a', 1],
      [OTHER_LABEL_VALUE, 1],
    ]);
    metrics.jobFinished(summary(jobs[2] as JobInfo));
    expect(await gauge()).toEqual([['a', 1]]);
    metrics.jobFinished(summary(jobs[0] as JobInfo));
    expect(await gauge()).toEqual([]);
    // `a`'s slot is free again: the next running job gets its own series.
    metrics.sectionStarted({ job: job('d'), seqNum: 1, type: 'Testcase', task: 't' });
    expect(await gauge()).toEqual([['d', 1]]);
  });

  it('keeps values for life by default, and with idleTtlMs releases idle ones together with their series', async () => {
    let now = 1_000_000;
    const { registry, sink: metrics } = sink({ maxValues: 2, idleTtlMs: 60_000 }, () => now);
    metrics.sectionFinished(testcase('tc_old'));
    now += 30_000;
    metrics.sectionFinished(testcase('tc_kept'));
    metrics.sectionFinished(testcase('tc_new'));
    const names = async (): Promise<Array<string | number | undefined>> =>
      (await samples(registry, 'pyats_testcase_results_total')).map((s) => s.labels.testcase);
    expect(await names()).toEqual(['tc_old', 'tc_kept', OTHER_LABEL_VALUE]);

    now += 40_000; // tc_old idle 70 s, tc_kept 40 s
    metrics.sectionFinished(testcase('tc_kept'));
    expect(await names()).toEqual(['tc_kept', OTHER_LABEL_VALUE]);
    expect(
      (await samples(registry, 'pyats_testcase_last_result')).map((s) => s.labels.testcase),
    ).not.toContain('tc_old');
    metrics.sectionFinished(testcase('tc_new'));
    expect(await names()).toEqual(['tc_kept', OTHER_LABEL_VALUE, 'tc_new']);
    expect(metrics.cardinality().children['pyats_testcase_last_result']).toBe(3);

    // Without a TTL nothing is ever released, however long it sits.
    let later = 0;
    const forever = sink({ maxValues: 1 }, () => later);
    forever.sink.sectionFinished(testcase('tc_a'));
    later = 365 * 86_400_000;
    forever.sink.sectionFinished(testcase('tc_b'));
    forever.sink.jobFinished(summary(NIGHTLY));
    expect(
      (await samples(forever.registry, 'pyats_testcase_results_total')).map((s) => s.labels.testcase),
    ).toEqual(['tc_a', OTHER_LABEL_VALUE]);
  });

  it('keeps a value that stays in use under idleTtlMs, however long it lives', async () => {
    let now = 0;
    const { registry, sink: metrics } = sink({ maxValues: 1, idleTtlMs: 60_000 }, () => now);
    for (let i = 0; i < 10; i++) {
      metrics.sectionFinished(testcase('tc_busy'));
      now += 20_000;
    }
    // Used every 20 s for 200 s: never idle for a whole TTL, so one series holds all ten records...
    const results = async (): Promise<Array<[string | number | undefined, number]>> =>
      (await samples(registry, 'pyats_testcase_results_total')).map((s) => [s.labels.testcase, s.value]);
    expect(await results()).toEqual([['tc_busy', 10]]);
    // ...and keeps its slot.
    metrics.sectionFinished(testcase('tc_new'));
    expect(await results()).toEqual([
      ['tc_busy', 10],
      [OTHER_LABEL_VALUE, 1],
    ]);
  });

  it('creates overflow series at their first overflow, in that order, when not pre-created', async () => {
    const registry = new Registry();
    const metrics = new MetricsSink({
      registry,
      labelLimits: { maxValues: 1 },
      precreateOverflowSeries: false,
    });
    expect(await samples(registry, 'pyats_exporter_label_overflow_total')).toEqual([]);
    metrics.sectionFinished(testcase('a'));
    metrics.sectionFinished(testcase('b'));
    metrics.sectionFinished(testcase('b', { job: job('other') }));
    const series = (await samples(registry, 'pyats_exporter_label_overflow_total')).map((s) => [
      s.labels.metric,
      s.labels.label,
      s.value,
    ]);
    expect(series).toEqual([
      ['pyats_testcase_results_total', 'testcase', 2],
      ['pyats_testcase_last_result', 'testcase', 2],
      ['pyats_section_results_total', 'job', 1],
      ['pyats_section_duration_seconds', 'job', 1],
      ['pyats_testcase_results_total', 'job', 1],
      ['pyats_testcase_last_result', 'job', 1],
    ]);
  });

  itPromtool(
    `serves __other__ and the overflow counter in an exposition promtool accepts${PROMTOOL_SKIP_NOTE}`,
    async () => {
      const { registry, sink: metrics } = sink({ maxValues: 2 });
      for (let i = 0; i < 10; i++) metrics.sectionFinished(testcase(`tc_${i}`, { job: job(`job_${i % 4}`) }));
      metrics.jobFinished(summary(job('job_9')));
      const { code, output } = await promtoolCheck(await registry.metrics());
      expect(output).toBe('');
      expect(code).toBe(0);
    },
  );
});

// Enable when wired: needs `--max-label-values-for LABEL=N` in src/config.ts, passed to MetricsSink's
// `labelLimits` by src/daemon.ts.
describe('pyats-exporter --max-label-values-for', () => {
  it('reports testcases past the cap as __other__ on /metrics', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'pyats-cardinality-e2e-'));
    const socket = path.join(dir, 'reporter.sock');
    const exporter = await runExporter([
      '--reporter-socket',
      socket,
      '--listen',
      '127.0.0.1:0',
      '--max-label-values-for',
      'testcase=5',
    ]);
    try {
      const standin = await startStandin({
        socket,
        jobTree: {
          type: 'TestSuite',
          id: 'param_loop',
          children: [
            {
              type: 'Task',
              id: 'task-1',
              children: Array.from({ length: 12 }, (_, i) => ({
                type: 'Testcase',
                id: `tc_param_${i}`,
                result: 'passed' as const,
                duration_s: 0.01,
              })),
            },
          ],
        },
      });
      try {
        await standin.manifest();
        let text = '';
        const deadline = Date.now() + 15_000;
        while (sumOf(parseMetrics(text), 'pyats_job_runs_total', { job: 'param_loop' }) === 0) {
          if (Date.now() > deadline) throw new Error('the job never finished on /metrics');
          await new Promise((resolve) => setTimeout(resolve, 100));
          text = await exporter.scrape();
        }
        const samples = parseMetrics(text).filter((s) => s.name === 'pyats_testcase_results_total');
        expect(samples).toHaveLength(6);
        expect(sumOf(samples, 'pyats_testcase_results_total', { testcase: OTHER_LABEL_VALUE })).toBe(7);
        expect(
          sumOf(parseMetrics(text), 'pyats_exporter_label_overflow_total', {
            metric: 'pyats_testcase_results_total',
            label: 'testcase',
          }),
        ).toBe(7);
      } finally {
        await standin.kill();
      }
    } finally {
      await exporter.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
