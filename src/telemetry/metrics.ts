// The Prometheus sink: turns finished sections and job summaries into prom-client metrics, with label
// cardinality bounded (cardinality.ts) and trace exemplars on section durations.
// Metric names and labels are a public contract (DESIGN §3); alerts and dashboards depend on them.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { ConfigError } from '../errors.js';
import {
  CardinalityGuard,
  type GuardedChildren,
  type LabelLimits,
  type LabelStats,
  type LabelValueLimiter,
} from './cardinality.js';
import {
  RESULT_VALUES,
  type FinishedSection,
  type JobSummary,
  type ResultValue,
  type SectionSink,
  type StartedSection,
} from '../events/types.js';

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
  /** Cached label children per metric: one per series (seven series for a `*_last_result` child). */
  children: Record<string, number>;
  /** `job` values with in-progress series now. */
  inProgressJobs: number;
  /** Job runs with sections started and the run not finished. */
  openRuns: number;
}

interface CounterChild {
  inc(value?: number): void;
}
interface GaugeChild {
  set(value: number): void;
}
interface HistogramChild {
  observe(value: number): void;
}
/** `trace_id` and `span_id`: the exemplar label names Prometheus and Grafana link to traces by. */
type TraceExemplar = { trace_id: string; span_id: string };
interface DurationChild {
  observe(value: number, exemplar: TraceExemplar): void;
}

/** The seven `*_last_result` series of one testcase or job: exactly one of them is 1. */
type LastResultChildren = Record<ResultValue, GaugeChild>;

function setLastResult(children: LastResultChildren, result: ResultValue): void {
  for (const value of RESULT_VALUES) children[value].set(value === result ? 1 : 0);
}

interface InProgressJob {
  /** Open runs shown under this `job` value: two runs of one job can overlap, and `__other__` holds many jobs. */
  runs: Set<string>;
  byType: Map<string, { child: GaugeChild; count: number }>;
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
  private readonly sectionResults: GuardedChildren<CounterChild>;
  private readonly sectionDuration: GuardedChildren<DurationChild>;
  private readonly testcaseResults: GuardedChildren<CounterChild>;
  private readonly testcaseLastResult: GuardedChildren<LastResultChildren>;
  private readonly sectionsAbandoned: GuardedChildren<CounterChild>;
  private readonly jobRuns: GuardedChildren<CounterChild>;
  private readonly jobDuration: GuardedChildren<HistogramChild>;
  private readonly jobSuccessRatio: GuardedChildren<GaugeChild>;
  private readonly jobLastCompletion: GuardedChildren<GaugeChild>;
  private readonly jobLastResult: GuardedChildren<LastResultChildren>;
  private readonly inProgressGauge: Gauge;
  private readonly inProgressJobs: LabelValueLimiter;
  private readonly inProgressTypes: LabelValueLimiter;
  /** Keyed by the guarded `job` value: jobs past the cap share the `__other__` entry. */
  private readonly inProgress = new Map<string, InProgressJob>();
  /** The guarded `job` value each open run's in-progress series use, fixed at its first start. */
  private readonly inProgressLabelOfRun = new Map<string, string>();

  constructor(options: MetricsSinkOptions) {
    const registry = options.registry;
    const registers = [registry];
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
    // prom-client's typings leave out a metric's `name`, so it is passed alongside.
    const cache = <C>(
      name: string,
      metric: { remove(labels: Record<string, string>): void },
      labelNames: string[],
      create: (labels: Record<string, string>) => C,
    ): GuardedChildren<C> => guard.children(name, labelNames, create, (labels) => metric.remove(labels));

    const sectionResults = new Counter({
      name: 'pyats_section_results_total',
      help: 'Finished pyATS sections by type and result.',
      labelNames: sectionLabels,
      registers,
    });
    this.sectionResults = cache('pyats_section_results_total', sectionResults, sectionLabels, (labels) =>
      sectionResults.labels(labels),
    );

    const exemplars = options.exemplars ?? true;
    const sectionDuration = new Histogram({
      name: 'pyats_section_duration_seconds',
      help: 'Runtime of finished pyATS sections, as pyATS reports it.',
      labelNames: sectionLabels,
      buckets: durationBuckets,
      enableExemplars: exemplars,
      // prom-client refuses an exemplar metric on a registry whose content type is Prometheus text, but
      // the format is chosen per scrape (renderMetrics): registered by hand, the exemplars show in
      // OpenMetrics scrapes and are left out of Prometheus text, which has no syntax for them.
      registers: exemplars ? [] : registers,
    });
    if (exemplars) registry.registerMetric(sectionDuration);
    this.sectionDuration = cache(
      'pyats_section_duration_seconds',
      sectionDuration,
      sectionLabels,
      (labels) =>
        exemplars
          ? {
              observe: (value, exemplar) =>
                sectionDuration.observe({ labels, value, exemplarLabels: exemplar }),
            }
          : sectionDuration.labels(labels),
    );

    const testcaseResults = new Counter({
      name: 'pyats_testcase_results_total',
      help: 'Finished testcases (Testcase, CommonSetup, CommonCleanup) by result.',
      labelNames: testcaseLabels,
      registers,
    });
    this.testcaseResults = cache('pyats_testcase_results_total', testcaseResults, testcaseLabels, (labels) =>
      testcaseResults.labels(labels),
    );

    const testcaseLastResult = new Gauge({
      name: 'pyats_testcase_last_result',
      help: "1 for the testcase's latest result, 0 for the other result values.",
      labelNames: testcaseLabels,
      registers,
    });
    this.testcaseLastResult = guard.children(
      'pyats_testcase_last_result',
      ['job', 'task', 'testcase'],
      (labels) => lastResultChildren(testcaseLastResult, labels),
      (labels) => removeLastResult(testcaseLastResult, labels),
    );

    this.inProgressGauge = new Gauge({
      name: IN_PROGRESS,
      help: 'pyATS sections started and not yet finished.',
      labelNames: ['job', 'type'],
      registers,
    });
    this.inProgressJobs = guard.limiter(IN_PROGRESS, 'job');
    this.inProgressTypes = guard.limiter(IN_PROGRESS, 'type');

    const sectionsAbandoned = new Counter({
      name: 'pyats_sections_abandoned_total',
      help: 'Sections still open when their job ended (disconnect, shutdown), reported unfinished.',
      labelNames: ['job', 'type'],
      registers,
    });
    this.sectionsAbandoned = cache(
      'pyats_sections_abandoned_total',
      sectionsAbandoned,
      ['job', 'type'],
      (labels) => sectionsAbandoned.labels(labels),
    );

    const jobRuns = new Counter({
      name: 'pyats_job_runs_total',
      help: 'Finished pyATS job runs by result.',
      labelNames: ['job', 'result'],
      registers,
    });
    this.jobRuns = cache('pyats_job_runs_total', jobRuns, ['job', 'result'], (labels) =>
      jobRuns.labels(labels),
    );

    const jobDuration = new Histogram({
      name: 'pyats_job_duration_seconds',
      help: 'Runtime of finished pyATS job runs.',
      labelNames: ['job'],
      buckets: [...JOB_DURATION_BUCKETS],
      registers,
    });
    this.jobDuration = cache('pyats_job_duration_seconds', jobDuration, ['job'], (labels) =>
      jobDuration.labels(labels),
    );

    const jobSuccessRatio = new Gauge({
      name: 'pyats_job_success_ratio',
      help: "Easypy's success rate of the job's last run: (passed + passx + skipped) / total testcases.",
      labelNames: ['job'],
      registers,
    });
    this.jobSuccessRatio = cache('pyats_job_success_ratio', jobSuccessRatio, ['job'], (labels) =>
      jobSuccessRatio.labels(labels),
    );

    const jobLastCompletion = new Gauge({
      name: 'pyats_job_last_completion_timestamp_seconds',
      help: "Unix time at which the job's last run stopped.",
      labelNames: ['job'],
      registers,
    });
    this.jobLastCompletion = cache(
      'pyats_job_last_completion_timestamp_seconds',
      jobLastCompletion,
      ['job'],
      (labels) => jobLastCompletion.labels(labels),
    );

    const jobLastResult = new Gauge({
      name: 'pyats_job_last_result',
      help: "1 for the result of the job's last run, 0 for the other result values.",
      labelNames: ['job', 'result'],
      registers,
    });
    this.jobLastResult = guard.children(
      'pyats_job_last_result',
      ['job'],
      (labels) => lastResultChildren(jobLastResult, labels),
      (labels) => removeLastResult(jobLastResult, labels),
    );
  }

  sectionStarted(section: StartedSection): void {
    const runId = section.job.runId;
    let jobLabel = this.inProgressLabelOfRun.get(runId);
    if (jobLabel === undefined) {
      jobLabel = this.inProgressJobs.admit(section.job.jobId, 0);
      this.inProgressLabelOfRun.set(runId, jobLabel);
    }
    let job = this.inProgress.get(jobLabel);
    if (job === undefined) {
      job = { runs: new Set(), byType: new Map() };
      this.inProgress.set(jobLabel, job);
    }
    job.runs.add(runId);
    const type = this.inProgressTypes.admit(section.type, 0);
    let entry = job.byType.get(type);
    if (entry === undefined) {
      entry = { child: this.inProgressGauge.labels(jobLabel, type), count: 0 };
      job.byType.set(type, entry);
    }
    entry.count += 1;
    entry.child.set(entry.count);
  }

  sectionFinished(section: FinishedSection): void {
    const jobId = section.job.jobId;
    const { task, type } = section;
    const result = section.result.value;

    this.sectionResults.get(jobId, task, type, result).inc();
    // A runtime the tracker could not make sense of is skipped rather than thrown on: sinks must not throw.
    if (Number.isFinite(section.runtime) && section.runtime >= 0) {
      this.sectionDuration
        .get(jobId, task, type, result)
        .observe(section.runtime, { trace_id: section.job.traceId, span_id: section.spanId });
    }

    if (TESTCASE_TYPES.has(type)) {
      const testcase = section.id ?? section.name ?? 'unknown';
      this.testcaseResults.get(jobId, task, testcase, result).inc();
      setLastResult(this.testcaseLastResult.get(jobId, task, testcase), result);
    }

    if (section.incomplete) this.sectionsAbandoned.get(jobId, type).inc();

    if (section.started) {
      const jobLabel = this.inProgressLabelOfRun.get(section.job.runId);
      const inProgressType = this.inProgressTypes.lookup(type);
      const entry =
        jobLabel === undefined ? undefined : this.inProgress.get(jobLabel)?.byType.get(inProgressType);
      // Never below zero: a stray finish after the job's series were removed must not create a -1 series.
      if (entry !== undefined && entry.count > 0) {
        entry.count -= 1;
        entry.child.set(entry.count);
      }
    }
    this.guard.sweep();
  }

  jobFinished(summary: JobSummary): void {
    const jobId = summary.job.jobId;

    this.jobRuns.get(jobId, summary.result).inc();
    setLastResult(this.jobLastResult.get(jobId), summary.result);
    this.jobLastCompletion.get(jobId).set(summary.stopTime / 1000);

    const runtime =
      summary.runtime ??
      (summary.startTime !== undefined ? (summary.stopTime - summary.startTime) / 1000 : undefined);
    if (runtime !== undefined && Number.isFinite(runtime) && runtime >= 0) {
      this.jobDuration.get(jobId).observe(runtime);
    }

    const c = summary.counts;
    const total = RESULT_VALUES.reduce((sum, value) => sum + c[value], 0);
    // A run without testcases (e.g. it died in a pre-job plugin) has no success rate: 0/0 is neither 0% nor
    // 100%, so the gauge keeps its previous value (or stays absent) instead of raising or silencing alerts.
    if (total > 0) {
      this.jobSuccessRatio.get(jobId).set((c.passed + c.passx + c.skipped) / total);
    }

    this.releaseInProgress(summary);
    this.guard.sweep();
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
    for (const type of job.byType.keys()) this.inProgressGauge.remove(jobLabel, type);
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

function lastResultChildren(gauge: Gauge, labels: Record<string, string>): LastResultChildren {
  const children = {} as LastResultChildren;
  for (const result of RESULT_VALUES) children[result] = gauge.labels({ ...labels, result });
  return children;
}

function removeLastResult(gauge: Gauge, labels: Record<string, string>): void {
  for (const result of RESULT_VALUES) gauge.remove({ ...labels, result });
}
