// The trace backend down, answering errors, or slow, with the real binary. Down or failing: spans queue up
// to OTEL_BSP_MAX_QUEUE_SIZE, the rest are dropped and counted by reason, every span is either exported or
// counted as dropped, and export resumes when the backend is back. Slow but working: the reporter is read
// only as fast as spans leave, so none is dropped. /metrics answers as fast as before throughout.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseMetrics, runExporter, sumOf, type ExporterProcess } from '../helpers/exporter-process.js';
import { startOtlpReceiver, type OtlpReceiver } from '../helpers/otlp-receiver.js';
import { startStandin, type Manifest } from '../helpers/standin.js';
import { TempDirs, percentile, startSwitchableProxy, until, type SwitchableProxy } from './support.js';

const QUEUE = 64;
const SCRAPES = 50;
// Generous: loopback scrapes take a few ms; this catches an event loop blocked by exporting, not jitter.
const MAX_P99_MS = 200;
const dirs = new TempDirs();
afterAll(() => dirs.removeAll());

function exporterEnv(endpoint: string, service: string, timeoutMs = 1000): NodeJS.ProcessEnv {
  return {
    OTEL_TRACES_EXPORTER: 'otlp',
    OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
    OTEL_SERVICE_NAME: service,
    OTEL_BSP_SCHEDULE_DELAY: '100',
    OTEL_BSP_MAX_QUEUE_SIZE: String(QUEUE),
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '16',
    OTEL_EXPORTER_OTLP_TIMEOUT: String(timeoutMs),
  };
}

interface SpanAccount {
  produced: number;
  exported: number;
  queueFull: number;
  exportFailed: number;
  shutdown: number;
}

async function account(exporter: ExporterProcess): Promise<SpanAccount> {
  const samples = parseMetrics(await exporter.scrape());
  return {
    // One span per finished section, and every finished section is counted in the results counter.
    produced: sumOf(samples, 'pyats_section_results_total'),
    exported: sumOf(samples, 'pyats_exporter_spans_exported_total'),
    queueFull: sumOf(samples, 'pyats_exporter_spans_dropped_total', { reason: 'queue_full' }),
    exportFailed: sumOf(samples, 'pyats_exporter_spans_dropped_total', { reason: 'export_failed' }),
    shutdown: sumOf(samples, 'pyats_exporter_spans_dropped_total', { reason: 'shutdown' }),
  };
}

/** Waits until `produced` spans exist and each one was exported or counted as dropped. */
async function settled(
  exporter: ExporterProcess,
  produced: number,
  timeoutMs = 30_000,
): Promise<SpanAccount> {
  let last: SpanAccount | undefined;
  return until(
    () => `every span accounted for (last: ${JSON.stringify(last)}, want ${produced})`,
    async () => {
      last = await account(exporter);
      const done =
        last.produced === produced && last.exported + last.queueFull + last.exportFailed === produced;
      return done ? last : undefined;
    },
    timeoutMs,
  );
}

/** Times `count` sequential GET /metrics, in ms. */
async function scrapeTimes(exporter: ExporterProcess, count: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    await exporter.scrape();
    times.push(performance.now() - started);
  }
  return times;
}

async function runJobs(
  socket: string,
  jobId: string,
  repeatJobs: number,
  startEpoch: number,
): Promise<Manifest> {
  const standin = await startStandin({
    socket,
    jobId,
    repeatJobs,
    jobGap: 0.05,
    linger: 0.1,
    chunking: 'packed',
    startEpoch,
  });
  try {
    return await standin.manifest();
  } finally {
    await standin.kill();
  }
}

function sectionsOf(manifest: Manifest): number {
  return manifest.jobs.reduce((n, job) => n + job.sections.length, 0);
}

describe('OTLP backend faults', () => {
  let receiver: OtlpReceiver;
  let proxy: SwitchableProxy;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    proxy = await startSwitchableProxy(Number(new URL(receiver.url).port));
  });
  afterAll(async () => {
    await proxy.close();
    await receiver.close();
  });

  it('drops and counts what does not fit while the backend is down, resumes when it is back, keeps /metrics fast', async () => {
    const socket = join(dirs.make(), 'reporter.sock');
    const service = 'otlp-down';
    await proxy.down();
    const exporter = await runExporter(
      ['--reporter-socket', socket, '--listen', '127.0.0.1:0'],
      exporterEnv(proxy.url, service),
    );
    try {
      await scrapeTimes(exporter, 5);
      const baseline = await scrapeTimes(exporter, SCRAPES);

      // Four jobs, far more spans than the queue holds, sent while nothing listens on the backend's port;
      // /metrics is timed meanwhile and right after, while the exporter retries and fails.
      const jobs = runJobs(socket, 'outage_job', 4, 1_730_000_000);
      const during = await scrapeTimes(exporter, SCRAPES);
      const manifest = await jobs;
      const total = sectionsOf(manifest);
      expect(total).toBeGreaterThan(QUEUE * 2);
      during.push(...(await scrapeTimes(exporter, SCRAPES)));
      const outage = await settled(exporter, total);
      expect(outage.exported).toBe(0);
      expect(outage.exportFailed).toBeGreaterThan(0);
      expect(receiver.spans.filter((s) => s.resource['service.name'] === service)).toHaveLength(0);
      // Reading goes on while export fails (no backpressure during an outage); whether the queue also
      // overflows depends on how fast the failed batches leave it, and is logged when it does.
      expect(exporter.logs.some((l) => l.msg === 'span queue full, dropping spans')).toBe(
        outage.queueFull > 0,
      );
      // One warning for the outage, not one per failed batch.
      expect(exporter.logs.filter((l) => l.msg === 'span export failed' && l.level === 40)).toHaveLength(1);

      const p99Base = percentile(baseline, 99);
      const p99Down = percentile(during, 99);
      expect(p99Down, `p99 ${p99Down.toFixed(1)} ms down vs ${p99Base.toFixed(1)} ms before`).toBeLessThan(
        MAX_P99_MS,
      );
      expect(p99Down).toBeLessThan(Math.max(5 * p99Base, p99Base + 50));

      // The backend comes back on the same port: the next job's spans all arrive.
      await proxy.up();
      const after = await runJobs(socket, 'after_outage', 1, 1_730_100_000);
      const recovered = await settled(exporter, total + sectionsOf(after));
      expect(recovered.exported).toBe(sectionsOf(after));
      expect(recovered.queueFull).toBe(outage.queueFull);
      expect(recovered.exportFailed).toBe(outage.exportFailed);
      const arrived = await until('the spans of the job after the outage', () => {
        const spans = receiver.spans.filter((s) => s.attributes['pyats.job.id'] === 'after_outage');
        return spans.length >= sectionsOf(after) ? spans : undefined;
      });
      expect(arrived).toHaveLength(sectionsOf(after));
      const recoveredLine = await exporter.waitForLog((l) => l.msg === 'span export recovered');
      expect(recoveredLine['droppedSpans']).toBe(outage.exportFailed);
    } finally {
      await proxy.up();
      expect((await exporter.stop()).code).toBe(0);
    }
  });

  it('counts spans refused with 5xx (after retries) and 4xx as export failures, and resumes on 2xx', async () => {
    const socket = join(dirs.make(), 'reporter.sock');
    const service = 'otlp-status';
    const exporter = await runExporter(
      ['--reporter-socket', socket, '--listen', '127.0.0.1:0'],
      exporterEnv(receiver.url, service, 2500),
    );
    const requestsOf = (status: number): number =>
      receiver.requestLog.filter((r) => r.status === status && r.headers['user-agent'] !== undefined).length;
    try {
      let produced = 0;
      let failed = 0;
      for (const [status, jobId] of [
        [503, 'unavailable_job'],
        [400, 'bad_request_job'],
      ] as const) {
        receiver.setStatus(status);
        const before = requestsOf(status);
        const manifest = await runJobs(socket, jobId, 1, 1_731_000_000 + status);
        produced += sectionsOf(manifest);
        const now = await settled(exporter, produced);
        expect(now.exported).toBe(0);
        expect(now.exportFailed + now.queueFull - failed).toBe(sectionsOf(manifest));
        failed = now.exportFailed + now.queueFull;
        expect(requestsOf(status)).toBeGreaterThan(before);
      }
      // 503 is retryable: the same batch was sent more than once before it was given up.
      const unavailable = receiver.requestLog.filter((r) => r.status === 503).length;
      const refused = receiver.requestLog.filter((r) => r.status === 400).length;
      expect(unavailable).toBeGreaterThan(refused);

      receiver.setStatus(200);
      const ok = await runJobs(socket, 'recovered_job', 1, 1_731_002_000);
      produced += sectionsOf(ok);
      const now = await settled(exporter, produced);
      expect(now.exported).toBe(sectionsOf(ok));
      const spans = receiver.spans.filter((s) => s.resource['service.name'] === service);
      expect(spans).toHaveLength(sectionsOf(ok));
      expect(spans.every((s) => s.attributes['pyats.job.id'] === 'recovered_job')).toBe(true);
      expect(exporter.logs.filter((l) => l.msg === 'span export failed' && l.level === 40)).toHaveLength(1);
      const recovered = await exporter.waitForLog((l) => l.msg === 'span export recovered');
      expect(recovered['droppedSpans']).toBe(now.exportFailed);
    } finally {
      receiver.setStatus(200);
      expect((await exporter.stop()).code).toBe(0);
    }
  });

  it('holds the reporter back behind a slow but working backend: every span exported, none dropped', async () => {
    const slow = await startOtlpReceiver({ delayMs: 800 });
    const socket = join(dirs.make(), 'reporter.sock');
    const service = 'otlp-slow';
    const exporter = await runExporter(
      ['--reporter-socket', socket, '--listen', '127.0.0.1:0'],
      exporterEnv(slow.url, service, 10_000),
    );
    try {
      const baseline = await scrapeTimes(exporter, SCRAPES);
      const jobs = runJobs(socket, 'slow_backend_job', 3, 1_732_000_000);
      const during = await scrapeTimes(exporter, SCRAPES);
      const total = sectionsOf(await jobs);
      const done = await settled(exporter, total, 60_000);
      // Far more spans than the queue holds (QUEUE): without read backpressure most would be dropped.
      expect(total).toBeGreaterThan(2 * QUEUE);
      expect(done.exportFailed).toBe(0);
      expect(done.queueFull).toBe(0);
      expect(done.exported).toBe(total);
      expect(slow.spans.filter((s) => s.resource['service.name'] === service)).toHaveLength(done.exported);
      expect(percentile(during, 99)).toBeLessThan(MAX_P99_MS);
      expect(percentile(during, 99)).toBeLessThan(
        Math.max(5 * percentile(baseline, 99), percentile(baseline, 99) + 50),
      );
    } finally {
      expect((await exporter.stop()).code).toBe(0);
      await slow.close();
    }
  });
});
