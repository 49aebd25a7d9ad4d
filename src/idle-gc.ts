// A full garbage collection once the exporter goes quiet after a big burst of events (a job's end).
// V8 collects its old generation rarely under ingest (3 major GCs over 1,000,000 sections) and its memory
// reducer did not shrink the heap in 30 s of idling, so a daemon that has just taken a large job kept ~30 MB
// of dead objects resident until the next job. One or two full collections while nothing arrives return them
// (175 → 142–150 MB after 1,000,000 sections; docs/performance.md). Each takes ~30 ms of the main thread,
// so they run only when idle and at most `collections` times per `minEvents` events.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Logger } from './log.js';

export interface IdleCollectorOptions {
  /** Events received since start; read once per check (never per event). */
  events: () => number;
  /** Runs one full collection; default from `exposeGc()`. */
  gc?: () => void;
  /** How often to look; a check with no new events since the last one counts as quiet. Default 1,000 ms. */
  intervalMs?: number;
  /** Events that must have arrived since the last collections before another. Default 100,000. */
  minEvents?: number;
  /** Full collections per quiet spell, on consecutive quiet checks. Default 2 (the second freed ~8 MB more). */
  collections?: number;
  logger?: Logger;
}

export class IdleCollector {
  private readonly gc: () => void;
  private readonly intervalMs: number;
  private readonly minEvents: number;
  private readonly collections: number;
  private timer: NodeJS.Timeout | undefined;
  private lastSeen = 0;
  /** The event count when the last quiet spell's collections were done. */
  private collectedAt = 0;
  private doneThisSpell = 0;

  constructor(private readonly options: IdleCollectorOptions) {
    this.gc = options.gc ?? exposeGc();
    this.intervalMs = options.intervalMs ?? 1000;
    this.minEvents = options.minEvents ?? 100_000;
    this.collections = options.collections ?? 2;
  }

  start(): void {
    this.lastSeen = this.options.events();
    this.collectedAt = this.lastSeen;
    // Unref'd: it never keeps the process alive on its own.
    this.timer ??= setInterval(() => this.check(), this.intervalMs).unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One look (the timer's tick); true when it collected. */
  check(): boolean {
    const seen = this.options.events();
    if (seen !== this.lastSeen) {
      this.lastSeen = seen;
      this.doneThisSpell = 0;
      return false;
    }
    if (seen - this.collectedAt < this.minEvents) return false;
    const before = process.memoryUsage.rss();
    const start = performance.now();
    this.gc();
    this.doneThisSpell += 1;
    if (this.doneThisSpell >= this.collections) {
      this.collectedAt = seen;
      this.doneThisSpell = 0;
    }
    this.options.logger?.debug(
      {
        ms: Math.round(performance.now() - start),
        rss_before_mb: Math.round(before / 2 ** 20),
        rss_after_mb: Math.round(process.memoryUsage.rss() / 2 ** 20),
      },
      'idle: full garbage collection',
    );
    return true;
  }
}

/**
 * V8's `gc()` without asking users to start Node with `--expose-gc`: the flag set at run time exposes it to
 * contexts created afterwards, so a fresh vm context hands it over (as jest's leak detector does). It
 * collects the whole isolate, not just that context.
 */
export function exposeGc(): () => void {
  const existing = (globalThis as { gc?: () => void }).gc;
  if (typeof existing === 'function') return existing;
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}
