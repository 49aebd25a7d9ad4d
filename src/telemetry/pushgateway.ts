// Pushgateway mode: keeps each open job run's metrics in a private registry and, when the run ends, PUTs them
// to a Prometheus Pushgateway grouped by `job` (the pyATS job's name) and `instance`. Retries are bounded; a push
// that fails is logged and counted, never thrown into the pipeline.
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import { Counter, Registry } from 'prom-client';
import { ConfigError } from '../errors.js';
import type { FinishedSection, JobSummary, SectionSink, StartedSection } from '../events/index.js';
import type { Logger } from '../log.js';
import { validateLabelLimits, type LabelLimits } from './cardinality.js';
import { MetricsSink, validateDurationBuckets } from './metrics.js';

/** Outcomes of one finished job's push; each is pre-created at 0. */
export const PUSH_RESULTS = ['success', 'failure', 'dropped'] as const;
export type PushResult = (typeof PUSH_RESULTS)[number];

export interface PushgatewayPublisherOptions {
  /** The Pushgateway's base URL, e.g. `http://pushgateway:9091`; a path prefix and `user:password@` are kept. */
  url: string;
  /** The `instance` grouping label. Default: the host name. */
  instance?: string;
  /** Where `pyats_exporter_pushgateway_pushes_total` is registered (the exporter's own registry). */
  registry: Registry;
  logger: Logger;
  /** Caps for the pushed series, as for the scraped ones. */
  labelLimits?: LabelLimits;
  /** Buckets of the pushed `pyats_section_duration_seconds`. Default: DEFAULT_SECTION_DURATION_BUCKETS. */
  durationBuckets?: number[];
  /** Attempts per push, the first included. Default: 3. */
  maxAttempts?: number;
  /** Wait before the first retry; doubles each retry up to `maxBackoffMs`. Default: 500. */
  initialBackoffMs?: number;
  /** Default: 5000. */
  maxBackoffMs?: number;
  /** Per attempt, connect to response. Default: 5000. */
  timeoutMs?: number;
  /** Pushes waiting or in flight; a job finishing beyond that is dropped and counted. Default: 32. */
  maxPendingPushes?: number;
  /** Extra request headers, e.g. `Authorization`. */
  headers?: Record<string, string>;
}

interface OpenRun {
  registry: Registry;
  sink: MetricsSink;
}

interface Group {
  job: string;
  instance: string;
  /** `/metrics/job/…/instance/…` under the base path. */
  path: string;
}

/** The Pushgateway's error text is short; more than this is not worth keeping in a log line. */
const MAX_ERROR_BODY = 1024;

function positiveInteger(name: string, value: number | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < min) {
    throw new ConfigError('INVALID_PUSHGATEWAY_OPTION', `${name} must be a whole number >= ${min}: ${value}`);
  }
  return value;
}

/**
 * One grouping-key path segment pair. Values that are not plain URL-safe words go base64url-encoded
 * (`name@base64/…`, the Pushgateway's own escape): a `/` in a job name, even percent-encoded, would be
 * split by its router, and an empty value has no plain spelling (`=` is the documented one).
 */
export function groupingSegment(name: string, value: string): string {
  if (/^[A-Za-z0-9_.~-]+$/.test(value) && !/^\.+$/.test(value)) return `${name}/${value}`;
  return `${name}@base64/${value === '' ? '=' : Buffer.from(value, 'utf8').toString('base64url')}`;
}

/** Sends each finished job run's series to a Pushgateway. A SectionSink: add it to the fan-out. */
export class PushgatewayPublisher implements SectionSink {
  private readonly target: URL;
  private readonly basePath: string;
  private readonly headers: Record<string, string>;
  private readonly instance: string;
  private readonly logger: Logger;
  private readonly labelLimits: LabelLimits | undefined;
  private readonly durationBuckets: number[] | undefined;
  private readonly maxAttempts: number;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly timeoutMs: number;
  private readonly maxPending: number;
  private readonly pushes: Counter<'result'>;
  /** Keyed by run id: each run's series are its own, so overlapping runs do not mix. */
  private readonly runs = new Map<string, OpenRun>();
  private readonly pending = new Set<Promise<void>>();
  /** The last push queued per group: pushes of one group go out in order, so the newest run wins. */
  private readonly groupTails = new Map<string, Promise<void>>();
  private readonly sleepers = new Set<() => void>();
  private closing = false;

  constructor(options: PushgatewayPublisherOptions) {
    let target: URL;
    try {
      target = new URL(options.url);
    } catch {
      throw new ConfigError('INVALID_PUSHGATEWAY_URL', `not a URL: ${options.url}`);
    }
    if (target.protocol !== 'http:' && target.protocol !== 'https:') {
      throw new ConfigError('INVALID_PUSHGATEWAY_URL', `the Pushgateway URL must be http(s): ${options.url}`);
    }
    if (target.search !== '' || target.hash !== '') {
      throw new ConfigError(
        'INVALID_PUSHGATEWAY_URL',
        `the Pushgateway URL takes no query or fragment: ${options.url}`,
      );
    }
    this.headers = { ...options.headers };
    if (target.username !== '' || target.password !== '') {
      const user = decodeURIComponent(target.username);
      const password = decodeURIComponent(target.password);
      this.headers['Authorization'] ??= `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
      target.username = '';
      target.password = '';
    }
    this.target = target;
    this.basePath = target.pathname.replace(/\/+$/, '');
    this.instance = options.instance ?? os.hostname();
    this.logger = options.logger;
    if (options.labelLimits) validateLabelLimits(options.labelLimits);
    this.labelLimits = options.labelLimits;
    if (options.durationBuckets) validateDurationBuckets(options.durationBuckets);
    this.durationBuckets = options.durationBuckets;
    this.maxAttempts = positiveInteger('maxAttempts', options.maxAttempts, 3);
    this.initialBackoffMs = positiveInteger('initialBackoffMs', options.initialBackoffMs, 500, 0);
    this.maxBackoffMs = positiveInteger('maxBackoffMs', options.maxBackoffMs, 5000, 0);
    this.timeoutMs = positiveInteger('timeoutMs', options.timeoutMs, 5000);
    this.maxPending = positiveInteger('maxPendingPushes', options.maxPendingPushes, 32);

    this.pushes = new Counter({
      name: 'pyats_exporter_pushgateway_pushes_total',
      help: "Finished jobs' pushes to the Pushgateway, by result (failure: retries exhausted; dropped: too many pending).",
      labelNames: ['result'],
      registers: [options.registry],
    });
    for (const result of PUSH_RESULTS) this.pushes.inc({ result }, 0);
  }

  sectionStarted(section: StartedSection): void {
    this.run(section.job.runId).sink.sectionStarted(section);
  }

  sectionFinished(section: FinishedSection): void {
    this.run(section.job.runId).sink.sectionFinished(section);
  }

  jobFinished(summary: JobSummary): void {
    const run = this.run(summary.job.runId);
    this.runs.delete(summary.job.runId);
    run.sink.jobFinished(summary);

    // By name: grouped by the per-run id, every run would leave a group behind on the Pushgateway.
    const group = this.group(summary.job.jobName);
    if (this.pending.size >= this.maxPending) {
      this.pushes.inc({ result: 'dropped' });
      this.logger.error(
        { job: group.job, instance: group.instance, pending: this.pending.size },
        'Pushgateway push dropped: too many pushes pending',
      );
      return;
    }
    const previous = this.groupTails.get(group.path) ?? Promise.resolve();
    const push = previous.then(() => this.push(run.registry, group));
    this.groupTails.set(group.path, push);
    this.pending.add(push);
    void push.then(() => {
      this.pending.delete(push);
      if (this.groupTails.get(group.path) === push) this.groupTails.delete(group.path);
    });
  }

  /** Resolves when every push queued so far has succeeded or given up. */
  async forceFlush(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  /**
   * Finishes the pending pushes without waiting out backoff delays or retrying further (at most one attempt
   * more each, bounded by timeoutMs), then forgets runs that never ended.
   */
  async shutdown(): Promise<void> {
    this.closing = true;
    for (const wake of this.sleepers) wake();
    await this.forceFlush();
    this.runs.clear();
  }

  private run(runId: string): OpenRun {
    let run = this.runs.get(runId);
    if (run === undefined) {
      const registry = new Registry();
      const sink = new MetricsSink({
        registry,
        durationBuckets: this.durationBuckets,
        labelLimits: this.labelLimits,
        // The Pushgateway keeps no exemplars, and zeros of a counter that starts at 0 each run say nothing.
        exemplars: false,
        precreateOverflowSeries: false,
      });
      run = { registry, sink };
      this.runs.set(runId, run);
    }
    return run;
  }

  private group(job: string): Group {
    const path = `${this.basePath}/metrics/${groupingSegment('job', job)}/${groupingSegment('instance', this.instance)}`;
    return { job, instance: this.instance, path };
  }

  /** Never rejects: the outcome is a counter and a log line. */
  private async push(registry: Registry, group: Group): Promise<void> {
    const where = { pushgateway: this.target.origin, job: group.job, instance: group.instance };
    let body: string;
    try {
      body = await registry.metrics();
    } catch (err) {
      this.pushes.inc({ result: 'failure' });
      this.logger.error({ ...where, err }, 'Pushgateway push failed: collecting the job series failed');
      return;
    }
    let backoff = this.initialBackoffMs;
    for (let attempt = 1; ; attempt++) {
      let outcome: { status?: number; detail: string; retry: boolean };
      try {
        const reply = await this.send(group.path, body);
        if (reply.status >= 200 && reply.status < 300) {
          this.pushes.inc({ result: 'success' });
          this.logger.debug({ ...where, attempt }, 'pushed job series to the Pushgateway');
          return;
        }
        // 4xx means the request itself is refused (bad or inconsistent metrics, auth): resending cannot
        // help, except for the two codes that mean "not now".
        const retry = reply.status >= 500 || reply.status === 408 || reply.status === 429;
        outcome = { status: reply.status, detail: reply.body, retry };
      } catch (err) {
        outcome = { detail: err instanceof Error ? err.message : String(err), retry: true };
      }
      // Once shutting down, a failed attempt is the last: every retry could cost another timeoutMs, and the
      // process has a few seconds to exit (the CLI's shutdown guard).
      if (!outcome.retry || attempt >= this.maxAttempts || this.closing) {
        this.pushes.inc({ result: 'failure' });
        this.logger.error(
          { ...where, attempt, status: outcome.status, detail: outcome.detail },
          'Pushgateway push failed; the job series were not pushed',
        );
        return;
      }
      this.logger.warn(
        { ...where, attempt, status: outcome.status, detail: outcome.detail },
        'Pushgateway push failed; retrying',
      );
      await this.sleep(backoff);
      backoff = Math.min(backoff * 2, this.maxBackoffMs);
    }
  }

  /** One PUT: replaces the whole group, so series of an earlier run that this one lacks do not linger. */
  private send(path: string, body: string): Promise<{ status: number; body: string }> {
    const client = this.target.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const req = client.request(
        {
          protocol: this.target.protocol,
          hostname: this.target.hostname.replace(/^\[(.*)\]$/, '$1'),
          port: this.target.port === '' ? undefined : Number(this.target.port),
          path,
          method: 'PUT',
          agent: false,
          headers: {
            ...this.headers,
            'Content-Type': Registry.PROMETHEUS_CONTENT_TYPE,
            'Content-Length': Buffer.byteLength(body),
          },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            if (text.length < MAX_ERROR_BODY) text += chunk;
          });
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, body: text.slice(0, MAX_ERROR_BODY).trim() }),
          );
          res.on('error', reject);
        },
      );
      // One deadline for the whole exchange (connect, send, answer), not just socket idleness.
      const deadline = setTimeout(
        () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
      req.on('close', () => clearTimeout(deadline));
      req.on('error', reject);
      req.end(body);
    });
  }

  /** A backoff wait that shutdown() cuts short. */
  private sleep(ms: number): Promise<void> {
    if (this.closing || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleepers.add(wake);
    });
  }
}
