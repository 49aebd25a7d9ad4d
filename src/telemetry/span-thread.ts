// The main thread's side of the span thread: a SectionSink that packs finished sections into batches
// (span-records.ts) for span-worker.ts, which builds, encodes and exports the spans. The worker's counts go
// to the hooks (the main registry's counters); its queue depth plus the sections still on their way to it
// are the backlog that holds reading, as the in-process pipeline's queue does.
import { Worker } from 'node:worker_threads';
import type { FinishedSection, JobSummary, SectionSink, StartedSection } from '../events/index.js';
import type { Logger } from '../log.js';
import { SectionBatchWriter } from './span-records.js';
import type { SpanWorkerCommand, SpanWorkerData, SpanWorkerMessage } from './span-worker.js';
import type { SpanDropReason, SpanPipelineHooks } from './tracing.js';

export interface SpanThreadOptions {
  worker: SpanWorkerData;
  hooks: SpanPipelineHooks;
  logger: Logger;
  /** The worker module; default: span-worker.js beside this file (tests of src/ point at dist/). */
  workerUrl?: URL;
  /** Sections per batch before it is posted without waiting for the batch delay. Default 512. */
  maxBatchSections?: number;
  /** Milliseconds a batch collects sections before it is posted. Default POST_DELAY_MS. */
  postDelayMs?: number;
}

/**
 * A batch waits this long for more sections. Posting once per event-loop turn sent ~25 sections a time (the
 * subscriber hands over 48 frames per turn), and each post, its clone and the worker's reply cost more on the
 * main thread than the spans' packing; spans wait seconds in the BatchSpanProcessor anyway.
 */
export const POST_DELAY_MS = 10;

export class SpanThread implements SectionSink {
  private worker: Worker | undefined;
  private readonly writer = new SectionBatchWriter();
  private readonly maxBatchSections: number;
  private readonly postDelayMs: number;
  private postTimer: NodeJS.Timeout | undefined;
  /** Sections posted to the current worker, and how many of them it has taken into its pipeline. */
  private posted = 0;
  private handled = 0;
  private workerBacklog = 0;
  private failing = false;
  private nextId = 0;
  private readonly pending = new Map<number, () => void>();
  private stopped = false;

  constructor(private readonly options: SpanThreadOptions) {
    this.maxBatchSections = options.maxBatchSections ?? 512;
    this.postDelayMs = options.postDelayMs ?? POST_DELAY_MS;
  }

  /**
   * Starts the thread now rather than with the first batch: loading the OpenTelemetry modules in a fresh
   * isolate takes a while, better spent before the first job than during it.
   */
  start(): void {
    if (!this.stopped) this.worker ??= this.spawn();
  }

  sectionStarted(_section: StartedSection): void {}

  sectionFinished(section: FinishedSection): void {
    if (this.stopped) {
      this.options.hooks.spansDropped(1, 'shutdown');
      return;
    }
    this.writer.section(section);
    if (this.writer.sections >= this.maxBatchSections) this.post();
    else this.schedulePost();
  }

  jobFinished(summary: JobSummary): void {
    if (this.stopped) return;
    this.writer.jobFinished(summary.job);
    this.schedulePost();
  }

  /** Spans not yet handed to the exporter: queued in the worker's pipeline, on their way there, or unposted. */
  backlog(): number {
    return this.workerBacklog + (this.posted - this.handled) + this.writer.sections;
  }

  /** True while the worker's last export attempt failed. */
  exportFailing(): boolean {
    return this.failing;
  }

  /** Everything finished so far is exported (or counted as dropped) when this resolves. */
  forceFlush(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.post();
    if (this.worker === undefined) return Promise.resolve();
    return this.request('flush');
  }

  /** Drains through the worker, shuts its pipeline down and ends the thread. */
  async shutdown(): Promise<void> {
    if (this.stopped) return;
    this.post();
    this.stopped = true;
    if (this.worker === undefined) return;
    await this.request('shutdown');
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
  }

  private request(cmd: 'flush' | 'shutdown'): Promise<void> {
    const id = this.nextId++;
    return new Promise<void>((resolve) => {
      this.pending.set(id, resolve);
      this.send({ cmd, id });
    });
  }

  private schedulePost(): void {
    this.postTimer ??= setTimeout(() => this.post(), this.postDelayMs);
  }

  private post(): void {
    clearTimeout(this.postTimer);
    this.postTimer = undefined;
    const sections = this.writer.sections;
    const batch = this.writer.take();
    if (batch === undefined) return;
    this.posted += sections;
    this.send({ cmd: 'batch', batch }, [batch.nums.buffer as ArrayBuffer]);
  }

  private send(command: SpanWorkerCommand, transfer: ArrayBuffer[] = []): void {
    (this.worker ??= this.spawn()).postMessage(command, transfer);
  }

  private spawn(): Worker {
    const url = this.options.workerUrl ?? new URL('./span-worker.js', import.meta.url);
    const worker = new Worker(url, { workerData: this.options.worker });
    worker.on('message', (message: SpanWorkerMessage) => this.onMessage(message));
    worker.on('error', (err) => this.options.logger.error({ err }, 'span thread failed'));
    worker.on('exit', (code) => this.onExit(worker, code));
    return worker;
  }

  private onMessage(message: SpanWorkerMessage): void {
    if (message.kind === 'done') {
      const resolve = this.pending.get(message.id);
      this.pending.delete(message.id);
      resolve?.();
      return;
    }
    const { hooks } = this.options;
    if (message.exported > 0) hooks.spansExported(message.exported);
    for (const [reason, n] of Object.entries(message.dropped) as [SpanDropReason, number][]) {
      if (n > 0) hooks.spansDropped(n, reason);
    }
    this.handled = message.handled;
    this.workerBacklog = message.backlog;
    this.failing = message.exportFailing;
  }

  /**
   * The thread died (a bug, or out of memory): the spans it held are lost and counted as export failures,
   * waiting flushes resolve, and the next batch starts a new thread (previous-run links start over).
   */
  private onExit(worker: Worker, code: number): void {
    if (this.worker !== worker) return;
    this.worker = undefined;
    const lost = this.workerBacklog + (this.posted - this.handled);
    this.posted = 0;
    this.handled = 0;
    this.workerBacklog = 0;
    this.failing = false;
    if (lost > 0) this.options.hooks.spansDropped(lost, 'export_failed');
    for (const resolve of this.pending.values()) resolve();
    this.pending.clear();
    if (!this.stopped) this.options.logger.error({ code, lostSpans: lost }, 'span thread exited');
  }
}
