// The core of the data flow: a raw event from any source is counted, normalized (or rejected with a
// reason), and handed to the tracker. Sources call `ingest` and `endStream`; they never see telemetry.
import { normalize, type NormalizeOptions } from './events/normalize.js';
import type { SectionTracker } from './events/tracker.js';
import type { Logger } from './log.js';

export interface IngestHealth {
  eventReceived(source: string): void;
  eventRejected(reason: string): void;
}

export interface PipelineOptions {
  normalize: NormalizeOptions;
  tracker: SectionTracker;
  health: IngestHealth;
  logger: Logger;
}

/** Log the first rejection of each reason, then one in LOG_EVERY, so a bad script cannot flood the log. */
const LOG_EVERY = 1000;

export class Pipeline {
  private readonly rejectionsByReason = new Map<string, number>();

  constructor(private readonly options: PipelineOptions) {}

  ingest(streamId: string, source: string, raw: unknown): void {
    const { health, tracker } = this.options;
    health.eventReceived(source);
    const outcome = normalize(raw, this.options.normalize);
    if (!outcome.ok) {
      this.reject(streamId, source, outcome.reason, outcome.detail);
      return;
    }
    tracker.onEvent(streamId, outcome.event);
  }

  /** A frame or line that never became an event (undecodable pickle, oversize frame, bad JSON). */
  reject(streamId: string, source: string, reason: string, detail: string): void {
    this.options.health.eventRejected(reason);
    const seen = (this.rejectionsByReason.get(reason) ?? 0) + 1;
    this.rejectionsByReason.set(reason, seen);
    if (seen === 1 || seen % LOG_EVERY === 0) {
      this.options.logger.warn({ stream: streamId, source, reason, detail, count: seen }, 'event rejected');
    }
  }

  endStream(streamId: string): void {
    this.options.tracker.endStream(streamId);
  }
}
