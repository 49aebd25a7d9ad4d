// The Prometheus sink: turns finished sections and job summaries into prom-client metrics.
// Metric names and labels are a public contract (DESIGN §3); alerts and dashboards depend on them.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { ConfigError } from '../errors.js';
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

/** Section types that make up a testscript's result table (and Easypy's success rate). */
const TESTCASE_TYPES: ReadonlySet<string> = new Set(['Testcase', 'CommonSetup', 'CommonCleanup']);

export interface MetricsSinkOptions {
  /** Where the metrics are registered; never prom-client's global registry. */
  registry: Registry;
  /** Upper bounds of `pyats_section_duration_seconds`, strictly increasing. Default: DEFAULT_SECTION_DURATION_BUCKETS. */
  durationBuckets?: number[];
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

/** One string per label tuple; length prefixes make it injective whatever the values contain. */
function tupleKey(a: string, b: string, c = '', d = ''): string {
  return `${a.length}:${a}${b.length}:${b}${c.length}:${c}${d.length}:${d}`;
}

/** Label children cached by value tuple, so the per-event path neither builds label objects nor re-validates them. */
class ChildCache<C> {
  private readonly children = new Map<string, C>();
  constructor(
    private readonly labelNames: readonly string[],
    private readonly create: (labels: Record<string, string>) => C,
  ) {}

  /** The child for these label values, in `labelNames` order. */
  get(a: string, b = '', c = '', d = ''): C {
    const key = tupleKey(a, b, c, d);
    let child = this.children.get(key);
    if (child === undefined) {
      const values = [a, b, c, d];
      const labels: Record<string, string> = {};
      this.labelNames.forEach((name, i) => (labels[name] = values[i] ?? ''));
      child = this.create(labels);
      this.children.set(key, child);
    }
    return child;
  }
}

/** The seven `*_last_result` series of one testcase or job: exactly one of them is 1. */
type LastResultChildren = Record<ResultValue, GaugeChild>;

function setLastResult(children: LastResultChildren, result: ResultValue): void {
  for (const value of RESULT_VALUES) children[value].set(value === result ? 1 : 0);
}

interface InProgressJob {
  /** Runs of this job id with sections in progress: two runs of the same job can overlap. */
  runs: Set<string>;
  byType: Map<string, { child: GaugeChild; count: number }>;
}

function validateBuckets(buckets: readonly number[]): void {
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
  private readonly sectionResults: ChildCache<CounterChild>;
  private readonly sectionDuration: ChildCache<HistogramChild>;
  private readonly testcaseResults: ChildCache<CounterChild>;
  private readonly testcaseLastResult: ChildCache<LastResultChildren>;
  private readonly sectionsAbandoned: ChildCache<CounterChild>;
  private readonly jobRuns: ChildCache<CounterChild>;
  private readonly jobDuration: ChildCache<HistogramChild>;
  private readonly jobSuccessRatio: ChildCache<GaugeChild>;
  private readonly jobLastCompletion: ChildCache<GaugeChild>;
  private readonly jobLastResult: ChildCache<LastResultChildren>;
  private readonly inProgressGauge: Gauge;
  private readonly inProgress = new Map<string, InProgressJob>();

  constructor(options: MetricsSinkOptions) {
    const registers = [options.registry];
    const durationBuckets = options.durationBuckets ?? [...DEFAULT_SECTION_DURATION_BUCKETS];
    validateBuckets(durationBuckets);
    const sectionLabels = ['job', 'task', 'type', 'result'];
    const testcaseLabels = ['job', 'task', 'testcase', 'result'];

    const sectionResults = new Counter({
      name: 'pyats_section_results_total',
      help: 'Finished pyATS sections by type and result.',
      labelNames: sectionLabels,
      registers,
    });
    this.sectionResults = new ChildCache(sectionLabels, (labels) => sectionResults.labels(labels));

    const sectionDuration = new Histogram({
      name: 'pyats_section_duration_seconds',
      help: 'Runtime of finished pyATS sections, as pyATS reports it.',
      labelNames: sectionLabels,
      buckets: durationBuckets,
      registers,
    });
    this.sectionDuration = new ChildCache(sectionLabels, (labels) => sectionDuration.labels(labels));

    const testcaseResults = new Counter({
      name: 'pyats_testcase_results_total',
      help: 'Finished testcases (Testcase, CommonSetup, CommonCleanup) by result.',
      labelNames: testcaseLabels,
      registers,
    });
    this.testcaseResults = new ChildCache(testcaseLabels, (labels) => testcaseResults.labels(labels));

    const testcaseLastResult = new Gauge({
      name: 'pyats_testcase_last_result',
      help: "1 for the testcase's latest result, 0 for the other result values.",
      labelNames: testcaseLabels,
      registers,
    });
    this.testcaseLastResult = new ChildCache(['job', 'task', 'testcase'], (labels) =>
      lastResultChildren(testcaseLastResult, labels),
    );

    this.inProgressGauge = new Gauge({
      name: 'pyats_sections_in_progress',
      help: 'pyATS sections started and not yet finished.',
      labelNames: ['job', 'type'],
      registers,
    });

    const sectionsAbandoned = new Counter({
      name: 'pyats_sections_abandoned_total',
      help: 'Sections still open when their job ended (disconnect, shutdown), reported unfinished.',
      labelNames: ['job', 'type'],
      registers,
    });
    this.sectionsAbandoned = new ChildCache(['job', 'type'], (labels) => sectionsAbandoned.labels(labels));

    const jobRuns = new Counter({
      name: 'pyats_job_runs_total',
      help: 'Finished pyATS job runs by result.',
      labelNames: ['job', 'result'],
      registers,
    });
    this.jobRuns = new ChildCache(['job', 'result'], (labels) => jobRuns.labels(labels));

    const jobDuration = new Histogram({
      name: 'pyats_job_duration_seconds',
      help: 'Runtime of finished pyATS job runs.',
      labelNames: ['job'],
      buckets: [...JOB_DURATION_BUCKETS],
      registers,
    });
    this.jobDuration = new ChildCache(['job'], (labels) => jobDuration.labels(labels));

    const jobSuccessRatio = new Gauge({
      name: 'pyats_job_success_ratio',
      help: "Easypy's success rate of the job's last run: (passed + passx + skipped) / total testcases.",
      labelNames: ['job'],
      registers,
    });
    this.jobSuccessRatio = new ChildCache(['job'], (labels) => jobSuccessRatio.labels(labels));

    const jobLastCompletion = new Gauge({
      name: 'pyats_job_last_completion_timestamp_seconds',
      help: "Unix time at which the job's last run stopped.",
      labelNames: ['job'],
      registers,
    });
    this.jobLastCompletion = new ChildCache(['job'], (labels) => jobLastCompletion.labels(labels));

    const jobLastResult = new Gauge({
      name: 'pyats_job_last_result',
      help: "1 for the result of the job's last run, 0 for the other result values.",
      labelNames: ['job', 'result'],
      registers,
    });
    this.jobLastResult = new ChildCache(['job'], (labels) => lastResultChildren(jobLastResult, labels));
  }

  sectionStarted(section: StartedSection): void {
    const jobId = section.job.jobId;
    let job = this.inProgress.get(jobId);
    if (job === undefined) {
      job = { runs: new Set(), byType: new Map() };
      this.inProgress.set(jobId, job);
    }
    job.runs.add(section.job.runId);
    let entry = job.byType.get(section.type);
    if (entry === undefined) {
      entry = { child: this.inProgressGauge.labels(jobId, section.type), count: 0 };
      job.byType.set(section.type, entry);
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
      this.sectionDuration.get(jobId, task, type, result).observe(section.runtime);
    }

    if (TESTCASE_TYPES.has(type)) {
      const testcase = section.id ?? section.name ?? 'unknown';
      this.testcaseResults.get(jobId, task, testcase, result).inc();
      setLastResult(this.testcaseLastResult.get(jobId, task, testcase), result);
    }

    if (section.incomplete) this.sectionsAbandoned.get(jobId, type).inc();

    if (section.started) {
      const entry = this.inProgress.get(jobId)?.byType.get(type);
      // Never below zero: a stray finish after the job's series were removed must not create a -1 series.
      if (entry !== undefined && entry.count > 0) {
        entry.count -= 1;
        entry.child.set(entry.count);
      }
    }
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
  }

  /** Drop the job's in-progress series once no run of it is still open, so finished jobs leave no zeros. */
  private releaseInProgress(summary: JobSummary): void {
    const jobId = summary.job.jobId;
    const job = this.inProgress.get(jobId);
    if (job === undefined) return;
    job.runs.delete(summary.job.runId);
    if (job.runs.size > 0) return;
    for (const type of job.byType.keys()) this.inProgressGauge.remove(jobId, type);
    this.inProgress.delete(jobId);
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
