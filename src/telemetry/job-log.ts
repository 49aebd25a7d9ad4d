// One log line per finished job run, with its trace id: what leads from a CI log (or the exporter's own)
// to the job's trace in Jaeger.
import type { FinishedSection, JobSummary, SectionSink, StartedSection } from '../events/index.js';
import type { Logger } from '../log.js';

export class JobLogSink implements SectionSink {
  constructor(private readonly logger: Logger) {}

  sectionStarted(_section: StartedSection): void {}

  sectionFinished(_section: FinishedSection): void {}

  jobFinished(summary: JobSummary): void {
    const { job } = summary;
    this.logger.info(
      {
        job: job.jobName,
        job_id: job.jobId,
        trace_id: job.traceId,
        result: summary.result,
        incomplete: summary.incomplete,
        ...(job.ci?.parent !== undefined ? { ci_parent_span_id: job.ci.parent.spanId } : {}),
        ...(job.ci?.taskRunUrl !== undefined ? { ci_run_url: job.ci.taskRunUrl } : {}),
      },
      'job finished',
    );
  }

  async forceFlush(): Promise<void> {}

  async shutdown(): Promise<void> {}
}
