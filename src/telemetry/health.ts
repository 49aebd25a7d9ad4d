// The exporter's own health metrics (events in and rejected, reporter connections, spans out) and the
// opt-in Node.js process metrics. Sources and the span sink call these methods; they never throw.
import { collectDefaultMetrics, Counter, Gauge, type Registry } from 'prom-client';
import { REJECT_REASONS } from '../events/index.js';
import { LOG_RECORD_DROP_REASONS } from './log-records.js';
import { SECTION_LOG_OUTCOMES, type SectionLogOutcome } from './section-logs.js';

/** Why spans were lost; each is pre-created at 0 so `rate()` alerts work from the first scrape. */
export const SPAN_DROP_REASONS = ['export_failed', 'queue_full', 'shutdown'] as const;

export interface ExporterHealthOptions {
  /** Where the metrics are registered; never prom-client's global registry. */
  registry: Registry;
  /** The `version` label of `pyats_exporter_build_info`. Default: `unknown`. */
  version?: string;
}

export class ExporterHealth {
  private readonly eventsReceived: Counter<'source'>;
  private readonly eventsRejected: Counter<'reason'>;
  private readonly fieldsDropped: Counter<'reason'>;
  private readonly connectionsOpen: Gauge;
  private readonly connectionsTotal: Counter;
  private readonly disconnects: Counter<'reason'>;
  private readonly reporterUp: Gauge<'socket'>;
  private readonly spansExportedTotal: Counter;
  private readonly spansDroppedTotal: Counter<'reason'>;
  private readonly sectionLogsTotal: Counter<'outcome'>;
  private readonly logRecordsExportedTotal: Counter;
  private readonly logRecordsDroppedTotal: Counter<'reason'>;
  /** Open connections per socket path, so `reporter_up` stays 1 until the last of them closes. */
  private readonly openBySocket = new Map<string, number>();
  /**
   * Per-event counts since the counters were last read, by label value. prom-client hashes and validates
   * the labels of every `inc`; these are called once per event, so they count here and each counter's
   * `collect()` hands the sums over when it is read (scrape, push, `get()`).
   */
  private readonly receivedBySource = new Map<string, number>();
  private readonly rejectedByReason = new Map<string, number>();
  private readonly droppedByReason = new Map<string, number>();
  private receivedSoFar = 0;

  constructor(options: ExporterHealthOptions) {
    const registers = [options.registry];

    const received = this.receivedBySource;
    this.eventsReceived = new Counter({
      name: 'pyats_exporter_events_received_total',
      help: 'Raw reporter events received, by source.',
      labelNames: ['source'],
      registers,
      collect() {
        for (const [source, count] of received) this.inc({ source }, count);
        received.clear();
      },
    });
    const rejected = this.rejectedByReason;
    this.eventsRejected = new Counter({
      name: 'pyats_exporter_events_rejected_total',
      help: 'Events or frames refused (bad frame, bad field, ...), by reason.',
      labelNames: ['reason'],
      registers,
      collect() {
        for (const [reason, count] of rejected) this.inc({ reason }, count);
        rejected.clear();
      },
    });
    for (const reason of REJECT_REASONS) this.eventsRejected.inc({ reason }, 0);
    const dropped = this.droppedByReason;
    this.fieldsDropped = new Counter({
      name: 'pyats_exporter_event_fields_dropped_total',
      help: 'Unusable descriptive fields dropped from events that were kept, by reason.',
      labelNames: ['reason'],
      registers,
      collect() {
        for (const [reason, count] of dropped) this.inc({ reason }, count);
        dropped.clear();
      },
    });

    // `_open` rather than the bare name: in OpenMetrics the counter below is the family
    // `pyats_exporter_reporter_connections`, and a gauge of that name would clash with it.
    this.connectionsOpen = new Gauge({
      name: 'pyats_exporter_reporter_connections_open',
      help: 'Reporter socket connections open now.',
      registers,
    });
    this.connectionsTotal = new Counter({
      name: 'pyats_exporter_reporter_connections_total',
      help: 'Reporter socket connections opened.',
      registers,
    });
    this.disconnects = new Counter({
      name: 'pyats_exporter_reporter_disconnects_total',
      help: 'Reporter socket connections closed, by reason.',
      labelNames: ['reason'],
      registers,
    });
    this.reporterUp = new Gauge({
      name: 'pyats_exporter_reporter_up',
      help: '1 while the exporter is connected to this reporter socket, 0 while it waits for it.',
      labelNames: ['socket'],
      registers,
    });

    this.spansExportedTotal = new Counter({
      name: 'pyats_exporter_spans_exported_total',
      help: 'Spans handed to the trace exporter successfully.',
      registers,
    });
    this.spansDroppedTotal = new Counter({
      name: 'pyats_exporter_spans_dropped_total',
      help: 'Spans lost before reaching the trace backend, by reason.',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of SPAN_DROP_REASONS) this.spansDroppedTotal.inc({ reason }, 0);
    this.sectionLogsTotal = new Counter({
      name: 'pyats_exporter_section_logs_total',
      help: "Sections' log excerpts for their spans, by outcome: attached, forwarded (sent by the bridge), or why not.",
      labelNames: ['outcome'],
      registers,
    });
    for (const outcome of SECTION_LOG_OUTCOMES) this.sectionLogsTotal.inc({ outcome }, 0);
    this.logRecordsExportedTotal = new Counter({
      name: 'pyats_exporter_log_records_exported_total',
      help: "Log records (sections' log lines, OTEL_LOGS_EXPORTER) handed to the log exporter successfully.",
      registers,
    });
    this.logRecordsDroppedTotal = new Counter({
      name: 'pyats_exporter_log_records_dropped_total',
      help: 'Log records lost before reaching the logs backend, by reason.',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of LOG_RECORD_DROP_REASONS) this.logRecordsDroppedTotal.inc({ reason }, 0);

    const buildInfo = new Gauge({
      name: 'pyats_exporter_build_info',
      help: 'Always 1; labels give the exporter version and the Node.js version running it.',
      labelNames: ['version', 'nodejs_version'],
      registers,
    });
    buildInfo.set({ version: options.version ?? 'unknown', nodejs_version: process.versions.node }, 1);
  }

  /** One raw event arrived from `source` (e.g. `reporter_socket`, `ndjson`). */
  eventReceived(source: string): void {
    addOne(this.receivedBySource, source);
    this.receivedSoFar += 1;
  }

  /** Raw events received since start, from every source (what the idle collector watches). */
  eventsReceivedSoFar(): number {
    return this.receivedSoFar;
  }

  /** An event or frame was refused: a normalizer `RejectReason` or a frame-level one (`decode_error`, ...). */
  eventRejected(reason: string): void {
    addOne(this.rejectedByReason, reason);
  }

  /** A field of an event was unusable and dropped; the event itself was kept. */
  fieldDropped(reason: string): void {
    addOne(this.droppedByReason, reason);
  }

  /** A configured socket path: its `reporter_up` series exists (at 0) before the first connection. */
  setReporterWatched(path: string): void {
    if (!this.openBySocket.has(path)) {
      this.openBySocket.set(path, 0);
      this.reporterUp.set({ socket: path }, 0);
    }
  }

  /**
   * A socket path no longer watched (its job ended and discovery forgot it): drop its `reporter_up` series,
   * or discovery would leave one series per past job forever.
   */
  setReporterUnwatched(path: string): void {
    this.openBySocket.delete(path);
    this.reporterUp.remove({ socket: path });
  }

  connectionOpened(path: string): void {
    this.openBySocket.set(path, (this.openBySocket.get(path) ?? 0) + 1);
    this.connectionsOpen.inc();
    this.connectionsTotal.inc();
    this.reporterUp.set({ socket: path }, 1);
  }

  /** `reason` is a short stable word (`eof`, `error`, `shutdown`, ...): it is a label value. */
  connectionClosed(path: string, reason: string): void {
    const open = this.openBySocket.get(path) ?? 0;
    // Only count a close that matches an open, so the gauge cannot go negative.
    if (open > 0) {
      this.openBySocket.set(path, open - 1);
      this.connectionsOpen.dec();
      if (open === 1) this.reporterUp.set({ socket: path }, 0);
    }
    this.disconnects.inc({ reason });
  }

  spansExported(count: number): void {
    if (Number.isFinite(count) && count > 0) this.spansExportedTotal.inc(count);
  }

  logRecordsExported(count: number): void {
    if (Number.isFinite(count) && count > 0) this.logRecordsExportedTotal.inc(count);
  }

  logRecordsDropped(count: number, reason: string): void {
    if (Number.isFinite(count) && count > 0) this.logRecordsDroppedTotal.inc({ reason }, count);
  }

  /** A section's log excerpt was attached to its span, or could not be (why). */
  sectionLog(outcome: SectionLogOutcome): void {
    this.sectionLogsTotal.inc({ outcome });
  }

  spansDropped(count: number, reason: string): void {
    if (Number.isFinite(count) && count > 0) this.spansDroppedTotal.inc({ reason }, count);
  }
}

function addOne(counts: Map<string, number>, key: string): void {
  counts.set(key, (counts.get(key) ?? 0) + 1);
}

/**
 * Adds prom-client's Node.js process metrics (CPU, memory, event-loop lag, GC, handles) to `registry`.
 * Kept out of `ExporterHealth` because it starts an event-loop monitor and a GC observer — the CLI calls it
 * once; tests and golden files leave it out so their expositions do not vary from run to run.
 */
export function registerProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
}
