// Delivers each tracker record to every sink; a sink that throws is logged and counted, never fatal,
// and never keeps the other sinks from their record.
import type { Logger } from '../log.js';
import type { FinishedSection, JobSummary, SectionSink, StartedSection } from './types.js';

export class SinkFanout implements SectionSink {
  constructor(
    private readonly sinks: readonly SectionSink[],
    private readonly logger: Logger,
    private readonly onSinkError: (sink: string) => void = () => {},
  ) {}

  sectionStarted(section: StartedSection): void {
    for (const sink of this.sinks) this.guard(sink, () => sink.sectionStarted(section));
  }

  sectionFinished(section: FinishedSection): void {
    for (const sink of this.sinks) this.guard(sink, () => sink.sectionFinished(section));
  }

  jobFinished(summary: JobSummary): void {
    for (const sink of this.sinks) this.guard(sink, () => sink.jobFinished(summary));
  }

  async forceFlush(): Promise<void> {
    await Promise.allSettled(this.sinks.map((sink) => sink.forceFlush()));
  }

  async shutdown(): Promise<void> {
    await Promise.allSettled(this.sinks.map((sink) => sink.shutdown()));
  }

  private guard(sink: SectionSink, call: () => void): void {
    try {
      call();
    } catch (error) {
      const name = sink.constructor.name;
      this.onSinkError(name);
      this.logger.error({ err: error, sink: name }, 'sink failed on a record');
    }
  }
}
