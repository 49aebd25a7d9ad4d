// The Prometheus sink: turns finished sections and job summaries into metric series (series.ts), with label
// cardinality bounded (cardinality.ts) and trace exemplars on section durations.
// Metric names and labels are a public contract (DESIGN §3); alerts and dashboards depend on them.
// The `job` label is the job's name (JobInfo.jobName), never its id: easypy makes the id unique per run.
// Per testcase it also keeps what PromQL needs to see history between runs of a job: the previous result,
// the pass/fail flips and the latest duration (deploy/prometheus/rules alert on new failures, flaky testcases
// and slowdowns from them).
import type { Registry } from 'prom-client';
import { ConfigError } from '../errors.js';
import {
  CardinalityGuard,
  OTHER_LABEL_VALUE,
  type GuardedChildren,
  type LabelLimits,
  type LabelStats,
  type LabelValueLimiter,
} from './cardinality.js';
import { HistogramFamily, ScalarFamily, type HistogramSeries, type ScalarSeries } from './series.js';
import {
  RESULT_VALUES,
  verdictOf,
  type FinishedSection,
  type JobSummary,
  type ResultValue,
  type SectionSink,
  type StartedSection,
} from '../events/index.js';

/** Fits pyATS sections from a 10 ms step to a multi-hour testcase. */
export const DEFAULT_SECTION_DURATION_BUCKETS: readonly number[] = [
  0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400,
];

/** Whole jobs: from a minute to three days. */
export const JOB_DURATION_BUCKETS: readonly number[] = [
  60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 259200,
];

const IN_PROGRESS = 'pyats_sections_in_progress';

/** Section types that make up a testscript's result table (and Easypy's success rate). */
const TESTCASE_TYPES: ReadonlySet<string> = new Set(['Testcase', 'CommonSetup', 'CommonCleanup']);

export interface MetricsSinkOptions {
  /** Where the metrics are registered; never prom-client's global registry. */
  registry: Registry;
  /** Upper bounds of `pyats_section_duration_seconds`, strictly increasing. Default: DEFAULT_SECTION_DURATION_BUCKETS. */
  durationBuckets?: number[];
  /** Caps on distinct `job` / `task` / `testcase` / `type` values per metric. Default: 1000 each, kept for life. */
  labelLimits?: LabelLimits;
  /** Attach `trace_id` / `span_id` exemplars to `pyats_section_duration_seconds` (OpenMetrics scrapes only). Default: true. */
  exemplars?: boolean;
  /** Create the `pyats_exporter_label_overflow_total` series at 0 up front. Default: true. */
  precreateOverflowSeries?: boolean;
  /** Clock for `labelLimits.idleTtlMs`, epoch ms. Default: Date.now. */
  now?: () => number;
}

/** What `MetricsSink.cardinality()` reports. */
export interface CardinalityReport {
  /** Admitted values per guarded (metric, label). */
  labels: LabelStats[];
  /**
   * Cached label children per metric: one per series, except `pyats_testcase_last_result` (one per testcase:
   * its seven last-result series and its history series) and `pyats_job_last_result` (seven series).
   */
  children: Record<string, number>;
  /** `job` values with in-progress series now. */
  inProgressJobs: number;
  /** Job runs with sections started and the run not finished. */
  openRuns: number;
}

/** The seven `*_last_result` series of one testcase or job: exactly one of them is 1. */
type LastResultChildren = Record<ResultValue, ScalarSeries>;

function setLastResult(children: LastResultChildren, result: ResultValue): void {
  for (const value of RESULT_VALUES) children[value].value = value === result ? 1 : 0;
}

/** A run's verdict, as OpenTelemetry's `test.case.result.status` has it; skipped and blocked have none. */
type Verdict = 'pass' | 'fail';

/**
 * The verdict a flip is counted on. An abandoned section's result is the exporter's (the job or the exporter
 * stopped), not pyATS's verdict, so it has none — unlike on spans, where it is shown as a failure.
 */
function runVerdict(section: FinishedSection): Verdict | undefined {
  return section.incomplete ? undefined : verdictOf(section.result.value);
}

/**
 * Everything kept for one testcase (job, task, testcase), in one guarded child so the per-stop path makes one
 * lookup: its last-result series and its history between runs. A testcase past the label cap (`__other__`)
 * shares its child with every other such testcase, so it keeps no history: a change between two different
 * testcases' runs says nothing. History series are made on first use, so a testcase run once adds none.
 */
class TestcaseSeries {
  /** Result of the latest run: becomes `previous` at the next run. */
  result: ResultValue | undefined = undefined;
  /** Verdict of the latest run that had one: skipped, blocked and abandoned runs leave it as it was. */
  verdict: Verdict | undefined = undefined;
  /** `pyats_testcase_previous_result`, from the second run. */
  previous: LastResultChildren | undefined = undefined;
  /** `pyats_testcase_result_flips_total`, from the first flip (already at 1, as other labelled counters). */
  flips: ScalarSeries | undefined = undefined;
  /** `pyats_testcase_last_duration_seconds`, from the first run with a verdict. */
  duration: ScalarSeries | undefined = undefined;

  constructor(
    /** The admitted `job`, `task`, `testcase` values. */
    readonly labelValues: readonly string[],
    readonly last: LastResultChildren,
    /** False for `__other__`. */
    readonly keepsHistory: boolean,
  ) {}
}

interface InProgressJob {
  /** Open runs shown under this `job` value: two runs of one job can overlap, and `__other__` holds many jobs. */
  runs: Set<string>;
  /** The series' value is the count of this job's sections of that type in progress. */
  byType: Map<string, ScalarSeries>;
}

/** Refuses duration buckets prom-client would misreport (start-up only). */
export function validateDurationBuckets(buckets: readonly number[]): void {
  const ok =
    buckets.length > 0 &&
    buckets.every((b, i) => Number.isFinite(b) && b > 0 && (i === 0 || b > (buckets[i - 1] ?? 0)));
  if (!ok) {
    throw new ConfigError(
      'INVALID_BUCKETS',
      `duration buckets must be positive, finite and strictly increasing: [${buckets.join(', ')}]`,
    );
  }
}

export class MetricsSink implements SectionSink {
  private readonly guard: CardinalityGuard;
  private readonly sectionResults: GuardedChildren<ScalarSeries>;
  private readonly sectionDuration: GuardedChildren<HistogramSeries>;
  private readonly exemplars: boolean;
  private readonly testcaseResults: GuardedChildren<ScalarSeries>;
  private readonly testcases: GuardedChildren<TestcaseSeries>;
  private readonly testcasePreviousResult: ScalarFamily;
  private readonly testcaseFlips: ScalarFamily;
  private readonly testcaseLastDuration: ScalarFamily;
  private readonly sectionsAbandoned: GuardedChildren<ScalarSeries>;
  private readonly jobRuns: GuardedChildren<ScalarSeries>;
  private readonly jobDuration: GuardedChildren<HistogramSeries>;
  private readonly jobSuccessRatio: GuardedChildren<ScalarSeries>;
  private readonly jobLastCompletion: GuardedChildren<ScalarSeries>;
  private readonly jobLastResult: GuardedChildren<LastResultChildren>;
  private readonly inProgressFamily: ScalarFamily;
  private readonly inProgressJobs: LabelValueLimiter;
  private readonly inProgressTypes: LabelValueLimiter;
  /** Keyed by the guarded `job` value: jobs past the cap share the `__other__` entry. */
  private readonly inProgress = new Map<string, InProgressJob>();
  /** The guarded `job` value each open run's in-progress series use, fixed at its first start. */
  private readonly inProgressLabelOfRun = new Map<string, string>();

  constructor(options: MetricsSinkOptions) {
    const registry = options.registry;
    const durationBuckets = options.durationBuckets ?? [...DEFAULT_SECTION_DURATION_BUCKETS];
    validateDurationBuckets(durationBuckets);
    const guard = new CardinalityGuard({
      registry,
      limits: options.labelLimits,
      precreateOverflowSeries: options.precreateOverflowSeries,
      now: options.now,
    });
    this.guard = guard;
    const sectionLabels = ['job', 'task', 'type', 'result'];
    const testcaseLabels = ['job', 'task', 'testcase', 'result'];
    // Registered in this order, which is the order of the exposition (and of the golden file).
    const counter = (name: string, help: string, labelNames: string[]): GuardedChildren<ScalarSeries> => {
      const family = new ScalarFamily({ name, help, labelNames, type: 'counter' }).register(registry);
      return guarded(guard, family, labelNames);
    };
    const gauge = (name: string, help: string, labelNames: string[]): GuardedChildren<ScalarSeries> => {
      const family = new ScalarFamily({ name, help, labelNames, type: 'gauge' }).register(registry);
      return guarded(guard, family, labelNames);
    };

    this.sectionResults = counter(
      'pyats_section_results_total',
      'Finished pyATS sections by type and result.',
      sectionLabels,
    );

    // Exemplars show in OpenMetrics scrapes only (renderMetrics picks the format per scrape); Prometheus text
    // has no syntax for them.
    this.exemplars = options.exemplars ?? true;
    const sectionDuration = new HistogramFamily({
      name: 'pyats_section_duration_seconds',
      help: 'Runtime of finished pyATS sections, as pyATS reports it.',
      labelNames: sectionLabels,
      buckets: durationBuckets,
      exemplars: this.exemplars,
    }).register(registry);
    this.sectionDuration = guarded(guard, sectionDuration, sectionLabels);

    this.testcaseResults = counter(
      'pyats_testcase_results_total',
      'Finished testcases (Testcase, CommonSetup, CommonCleanup) by result.',
      testcaseLabels,
    );

    const testcaseLastResult = new ScalarFamily({
      name: 'pyats_testcase_last_result',
      help: "1 for the testcase's latest result, 0 for the other result values.",
      labelNames: testcaseLabels,
      type: 'gauge',
    }).register(registry);
    this.testcasePreviousResult = new ScalarFamily({
      name: 'pyats_testcase_previous_result',
      help: "1 for the result of the testcase's run before its latest, 0 for the other result values.",
      labelNames: testcaseLabels,
      type: 'gauge',
    }).register(registry);
    const testcaseKey = ['job', 'task', 'testcase'];
    this.testcaseFlips = new ScalarFamily({
      name: 'pyats_testcase_result_flips_total',
      help:
        "Changes of a testcase's verdict between pass (passed, passx) and fail (failed, errored, aborted) from " +
        'one run of its job to the next; skipped, blocked and abandoned runs have no verdict and do not count.',
      labelNames: testcaseKey,
      type: 'counter',
    }).register(registry);
    this.testcaseLastDuration = new ScalarFamily({
      name: 'pyats_testcase_last_duration_seconds',
      help: "Runtime of the testcase's latest run that passed or failed, as pyATS reports it.",
      labelNames: testcaseKey,
      type: 'gauge',
    }).register(registry);
    // One guarded child per testcase for all its per-testcase gauges and history, admitted (and overflowing,
    // and expiring) together under the last-result metric's limits, so none of them can disagree on which
    // testcases are `__other__`.
    this.testcases = guard.children(
      'pyats_testcase_last_result',
      testcaseKey,
      (values) =>
        new TestcaseSeries(
          values,
          lastResultChildren(testcaseLastResult, values),
          !values.includes(OTHER_LABEL_VALUE),
        ),
      (values) => {
        removeLastResult(testcaseLastResult, values);
        removeLastResult(this.testcasePreviousResult, values);
        this.testcaseFlips.remove(values);
        this.testcaseLastDuration.remove(values);
      },
    );

    this.inProgressFamily = new ScalarFamily({
      name: IN_PROGRESS,
      help: 'pyATS sections started and not yet finished.',
      labelNames: ['job', 'type'],
      type: 'gauge',
    }).register(registry);
    this.inProgressJobs = guard.limiter(IN_PROGRESS, 'job');
    this.inProgressTypes = guard.limiter(IN_PROGRESS, 'type');

    this.sectionsAbandoned = counter(
      'pyats_sections_abandoned_total',
      'Sections still open when their job ended (disconnect, shutdown), reported unfinished.',
      ['job', 'type'],
    );

    this.jobRuns = counter('pyats_job_runs_total', 'Finished pyATS job runs by result.', ['job', 'result']);

    const jobDuration = new HistogramFamily({
      name: 'pyats_job_duration_seconds',
      help: 'Runtime of finished pyATS job runs.',
      labelNames: ['job'],
      buckets: JOB_DURATION_BUCKETS,
    }).register(registry);
    this.jobDuration = guarded(guard, jobDuration, ['job']);

    this.jobSuccessRatio = gauge(
      'pyats_job_success_ratio',
      "Easypy's success rate of the job's last run: (passed + passx + skipped) / total testcases.",
      ['job'],
    );

    this.jobLastCompletion = gauge(
      'pyats_job_last_completion_timestamp_seconds',
      "Unix time at which the job's last run stopped.",
      ['job'],
    );

    const jobLastResult = new ScalarFamily({
      name: 'pyats_job_last_result',
      help: "1 for the result of the job's last run, 0 for the other result values.",
      labelNames: ['job', 'result'],
      type: 'gauge',
    }).register(registry);
    this.jobLastResult = guard.children(
      'pyats_job_last_result',
      ['job'],
      (values) => lastResultChildren(jobLastResult, values),
      (values) => removeLastResult(jobLastResult, values),
    );
  }

  sectionStarted(section: StartedSection): void {
    const runId = section.job.runId;
    let jobLabel = this.inProgressLabelOfRun.get(runId);
    if (jobLabel === undefined) {
      jobLabel = this.inProgressJobs.admit(section.job.jobName, 0);
      this.inProgressLabelOfRun.set(runId, jobLabel);
    }
    let job = this.inProgress.get(jobLabel);
    if (job === undefined) {
      job = { runs: new Set(), byType: new Map() };
      this.inProgress.set(jobLabel, job);
    }
    job.runs.add(runId);
    const type = this.inProgressTypes.admit(section.type, 0);
    let series = job.byType.get(type);
    if (series === undefined) {
      series = this.inProgressFamily.child([jobLabel, type]);
      job.byType.set(type, series);
    }
    series.value += 1;
  }

  sectionFinished(section: FinishedSection): void {
    const job = section.job.jobName;
    const { task, type } = section;
    const result = section.result.value;

    this.sectionResults.get(job, task, type, result).value += 1;
    // A runtime the tracker could not make sense of is skipped rather than thrown on: sinks must not throw.
    const runtime = section.runtime;
    if (Number.isFinite(runtime) && runtime >= 0) {
      this.sectionDuration
        .get(job, task, type, result)
        .observe(
          runtime,
          this.exemplars ? { trace_id: section.job.traceId, span_id: section.spanId } : undefined,
        );
    }

    if (TESTCASE_TYPES.has(type)) {
      const testcase = section.id ?? section.name ?? 'unknown';
      this.testcaseResults.get(job, task, testcase, result).value += 1;
      const series = this.testcases.get(job, task, testcase);
      const previous = series.result;
      setLastResult(series.last, result);
      series.result = result;
      if (series.keepsHistory) this.noteRun(series, section, previous);
    }

    if (section.incomplete) this.sectionsAbandoned.get(job, type).value += 1;

    if (section.started) {
      const jobLabel = this.inProgressLabelOfRun.get(section.job.runId);
      const series =
        jobLabel === undefined
          ? undefined
          : this.inProgress.get(jobLabel)?.byType.get(this.inProgressTypes.lookup(type));
      // Never below zero: a stray finish after the job's series were removed must not create a -1 series.
      if (series !== undefined && series.value > 0) series.value -= 1;
    }
    this.guard.sweep();
  }

  jobFinished(summary: JobSummary): void {
    const job = summary.job.jobName;

    this.jobRuns.get(job, summary.result).value += 1;
    setLastResult(this.jobLastResult.get(job), summary.result);
    this.jobLastCompletion.get(job).value = summary.stopTime / 1000;

    const runtime =
      summary.runtime ??
      (summary.startTime !== undefined ? (summary.stopTime - summary.startTime) / 1000 : undefined);
    if (runtime !== undefined && Number.isFinite(runtime) && runtime >= 0) {
      this.jobDuration.get(job).observe(runtime);
    }

    const c = summary.counts;
    const total = RESULT_VALUES.reduce((sum, value) => sum + c[value], 0);
    // A run without testcases (e.g. it died in a pre-job plugin) has no success rate: 0/0 is neither 0% nor
    // 100%, so the gauge keeps its previous value (or stays absent) instead of raising or silencing alerts.
    if (total > 0) {
      this.jobSuccessRatio.get(job).value = (c.passed + c.passx + c.skipped) / total;
    }

    this.releaseInProgress(summary);
    this.guard.sweep();
  }

  /**
   * A testcase's history between runs: the run before this one's result, a flip when this run's verdict is
   * not the last verdict seen, and the runtime of runs that have a verdict (a skipped or blocked testcase
   * takes no time, which would drag its usual duration down).
   */
  private noteRun(series: TestcaseSeries, section: FinishedSection, previous: ResultValue | undefined): void {
    if (previous !== undefined) {
      series.previous ??= lastResultChildren(this.testcasePreviousResult, series.labelValues);
      setLastResult(series.previous, previous);
    }
    const verdict = runVerdict(section);
    if (verdict === undefined) return;
    if (series.verdict !== undefined && series.verdict !== verdict) {
      series.flips ??= this.testcaseFlips.child(series.labelValues);
      series.flips.value += 1;
    }
    series.verdict = verdict;
    const runtime = section.runtime;
    if (Number.isFinite(runtime) && runtime >= 0) {
      series.duration ??= this.testcaseLastDuration.child(series.labelValues);
      series.duration.value = runtime;
    }
  }

  /**
   * Drop the job's in-progress series once no run of it is still open, so finished jobs leave no zeros,
   * and free its `job` slot: the in-progress cap counts jobs running now, not every job ever seen.
   */
  private releaseInProgress(summary: JobSummary): void {
    const runId = summary.job.runId;
    const jobLabel = this.inProgressLabelOfRun.get(runId);
    if (jobLabel === undefined) return;
    this.inProgressLabelOfRun.delete(runId);
    const job = this.inProgress.get(jobLabel);
    if (job === undefined) return;
    job.runs.delete(runId);
    if (job.runs.size > 0) return;
    for (const type of job.byType.keys()) this.inProgressFamily.remove([jobLabel, type]);
    this.inProgress.delete(jobLabel);
    this.inProgressJobs.release(jobLabel);
  }

  /** How many label values and label children the sink holds now (bounded by `labelLimits`). */
  cardinality(): CardinalityReport {
    return {
      labels: this.guard.stats(),
      children: this.guard.childCounts(),
      inProgressJobs: this.inProgress.size,
      openRuns: this.inProgressLabelOfRun.size,
    };
  }

  forceFlush(): Promise<void> {
    return Promise.resolve();
  }

  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

/** A guarded cache of `family`'s series: an idle value's release removes its series from the family. */
function guarded<S>(
  guard: CardinalityGuard,
  family: {
    readonly name: string;
    child(values: readonly string[]): S;
    remove(values: readonly string[]): void;
  },
  labelNames: readonly string[],
): GuardedChildren<S> {
  return guard.children(
    family.name,
    labelNames,
    (values) => family.child(values),
    (values) => family.remove(values),
  );
}

function lastResultChildren(family: ScalarFamily, values: readonly string[]): LastResultChildren {
  const children = {} as LastResultChildren;
  for (const result of RESULT_VALUES) children[result] = family.child([...values, result]);
  return children;
}

function removeLastResult(family: ScalarFamily, values: readonly string[]): void {
  for (const result of RESULT_VALUES) family.remove([...values, result]);
}
