// The core of the data flow: a raw event from any source is counted, normalized (or rejected with a
// reason), and handed to the tracker. Sources call `ingest` and `endStream`; they never see telemetry.
import {
  normalize,
  type NormalizeOptions,
  type SectionEvent,
  type SectionTracker,
  type StreamContext,
} from './events/index.js';
import type { IngestRefusal } from './ingest/index.js';
import type { Logger } from './log.js';

export interface IngestHealth {
  eventReceived(source: string): void;
  eventRejected(reason: string): void;
  fieldDropped(reason: string): void;
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

  /** Counts, normalizes and tracks one raw event; returns why it was refused, if it was. */
  ingest(streamId: string, source: string, raw: unknown): IngestRefusal | undefined {
    this.options.health.eventReceived(source);
    // A bad descriptive field (name, times, xref, ...) costs that field, not the whole section.
    const outcome = normalize(raw, this.options.normalize, (reason, detail) =>
      this.fieldDropped(streamId, source, reason, detail),
    );
    if (outcome.ok) return this.track(streamId, source, outcome.event);
    this.reject(streamId, source, outcome.reason, outcome.detail);
    return outcome;
  }

  /** An event normalized elsewhere (the decode thread): counted and tracked as `ingest` would. */
  ingestNormalized(streamId: string, source: string, event: SectionEvent): void {
    this.options.health.eventReceived(source);
    this.track(streamId, source, event);
  }

  /** An event the normalizer refused elsewhere (the decode thread): counted as received, then rejected. */
  rejectNormalized(streamId: string, source: string, reason: string, detail: string): void {
    this.options.health.eventReceived(source);
    this.reject(streamId, source, reason, detail);
  }

  private track(streamId: string, source: string, event: SectionEvent): IngestRefusal | undefined {
    const reason = this.options.tracker.onEvent(streamId, event);
    if (reason === undefined) return undefined;
    const detail = `seq_num ${event.seqNum}: too many sections open on this stream`;
    this.reject(streamId, source, reason, detail);
    return { reason, detail };
  }

  /** A frame or line that never became an event (undecodable pickle, oversize frame, bad JSON). */
  reject(streamId: string, source: string, reason: string, detail: string): void {
    this.options.health.eventRejected(reason);
    if (this.logSampled(reason)) {
      this.options.logger.warn({ stream: streamId, source, reason, detail }, 'event rejected');
    }
  }

  /** True for the first occurrence of a key and every LOG_EVERY-th after it. */
  private logSampled(key: string): boolean {
    const seen = (this.rejectionsByReason.get(key) ?? 0) + 1;
    this.rejectionsByReason.set(key, seen);
    return seen === 1 || seen % LOG_EVERY === 0;
  }

  /** One field of an event was unusable and left out (the rest of the event went on). */
  fieldDropped(streamId: string, source: string, reason: string, detail: string): void {
    this.options.health.fieldDropped(reason);
    if (this.logSampled(`field:${reason}`)) {
      this.options.logger.warn({ stream: streamId, source, reason, detail }, 'event field dropped');
    }
  }

  /** What the source knows of the stream beyond its events; applies to jobs whose identity is not fixed yet. */
  setStreamContext(streamId: string, context: StreamContext): void {
    this.options.tracker.setStreamContext(streamId, context);
  }

  endStream(streamId: string): void {
    this.options.tracker.endStream(streamId);
  }
}
