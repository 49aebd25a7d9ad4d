// End to end with real parts: CPython reporter stand-in → Unix socket → the built exporter binary →
// OTLP/HTTP protobuf → an in-test receiver decoding the bytes, plus /metrics checked by value and by
// the real promtool.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RESULT_VALUES } from '../../src/events/types.js';
import { parseMetrics, runCli, runExporter, sumOf } from '../helpers/exporter-process.js';
import { promtoolFindings } from '../helpers/promtool.js';
import { startOtlpReceiver, type DecodedSpan, type OtlpReceiver } from '../helpers/otlp-receiver.js';
import {
  startStandin,
  type JobManifest,
  type StandinFrame,
  type StandinResults,
  type StandinTimes,
} from '../helpers/standin.js';

const ERROR_RESULTS = new Set(['failed', 'errored', 'aborted']);
const JOB_ZONE = 'Asia/Kolkata';

let receiver: OtlpReceiver;
const dirs: string[] = [];

beforeAll(async () => {
  receiver = await startOtlpReceiver();
});
afterAll(async () => {
  await receiver.close();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'pyats-it-'));
  dirs.push(dir);
  return dir;
}

function otlpEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    OTEL_TRACES_EXPORTER: 'otlp',
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_BSP_SCHEDULE_DELAY: '100',
    OTEL_SERVICE_NAME: 'pyats-it',
    ...extra,
  };
}

async function until<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function spansOfJob(jobId: string): DecodedSpan[] {
  return receiver.spans.filter((s) => s.attributes['pyats.job.id'] === jobId);
}

/** Asserts the done-when conditions of the core issue for one job's spans. */
function checkSpans(job: JobManifest, spans: DecodedSpan[]): void {
  const expected = job.sections.filter((s) => s.completed);
  expect(spans).toHaveLength(expected.length);
  const traceIds = new Set(spans.map((s) => s.traceId));
  expect(traceIds.size).toBe(1);
  const bySeq = new Map(spans.map((s) => [Number(s.attributes['pyats.section.seq_num']), s]));
  expect(bySeq.size).toBe(spans.length);
  for (const section of expected) {
    const span = bySeq.get(section.seq_num);
    expect(span, `span of seq_num ${section.seq_num}`).toBeDefined();
    if (!span) continue;
    expect(span.attributes['pyats.section.type']).toBe(section.type);
    expect(span.attributes['pyats.section.result']).toBe(section.result);
    if (section.parent_seq_num === null) {
      expect(span.parentSpanId).toBe('');
    } else {
      expect(span.parentSpanId).toBe(bySeq.get(section.parent_seq_num)?.spanId);
    }
    const startMs = Number(span.startTimeUnixNano) / 1e6;
    const stopMs = Number(span.endTimeUnixNano) / 1e6;
    expect(Math.abs(startMs - section.start_ms)).toBeLessThan(1);
    expect(Math.abs(stopMs - section.stop_ms)).toBeLessThan(1);
    expect(span.status.code === 2).toBe(ERROR_RESULTS.has(section.result));
  }
}

function checkMetrics(job: JobManifest, text: string): void {
  const samples = parseMetrics(text);
  const completed = job.sections.filter((s) => s.completed);
  const types = [...new Set(completed.map((s) => s.type))];
  for (const type of types) {
    for (const result of RESULT_VALUES) {
      const want = completed.filter((s) => s.type === type && s.result === result).length;
      expect(
        sumOf(samples, 'pyats_section_results_total', { job: job.job_id, type, result }),
        `${type}/${result}`,
      ).toBe(want);
    }
    const want = completed.filter((s) => s.type === type).length;
    expect(sumOf(samples, 'pyats_section_duration_seconds_count', { job: job.job_id, type })).toBe(want);
  }
  expect(sumOf(samples, 'pyats_job_runs_total', { job: job.job_id, result: job.job_result })).toBe(1);
}

// chunked: pyATS 23.x; 4be: pyATS 20.2; the others for a reporter that differs (--frame-format).
const HEADERS: StandinFrame[] = ['chunked', '4be', '4le', '8be', '8le'];
const RESULTS: StandinResults[] = ['object', 'dict', 'string', 'mixed'];
const TIMES: StandinTimes[] = ['datetime', 'datetime-tz', 'iso', 'epoch'];

describe('reporter socket → spans and metrics', () => {
  // Each framing once in-process, and once more with the sockets read on the decode thread (--decode-thread).
  const variants = [
    ...HEADERS.map((header, i) => ({ header, i, decodeThread: false })),
    { header: 'chunked' as StandinFrame, i: HEADERS.length, decodeThread: true },
  ];
  describe.each(variants)('framing $header, decode thread: $decodeThread', ({ header, i, decodeThread }) => {
    it('exports every job of pickle protocols 2–5 exactly', async () => {
      const dir = tempDir();
      mkdirSync(join(dir, 'runinfo'));
      const socket = join(dir, 'runinfo', 'reporter.sock');
      const exporter = await runExporter(
        [
          '--reporter-socket',
          socket,
          '--listen',
          '127.0.0.1:0',
          '--timezone',
          JOB_ZONE,
          '--log-level',
          'info',
          ...(decodeThread ? ['--decode-thread'] : []),
          ...(header === 'chunked' ? [] : ['--frame-format', header]),
        ],
        otlpEnv(),
      );
      try {
        for (const protocol of [2, 3, 4, 5] as const) {
          const k = (i + protocol) % 4;
          const jobId = `job_${header}${decodeThread ? '_thread' : ''}_p${protocol}`;
          const standin = await startStandin({
            socket,
            frame: header,
            protocol,
            results: RESULTS[k],
            times: TIMES[(k + 1) % 4],
            tz: JOB_ZONE,
            jobId,
            seed: protocol,
            startEpoch: 1_700_000_000 + i * 10_000 + protocol * 1000 + 0.123456,
            chunking: protocol === 3 ? 'bytewise' : protocol === 4 ? 'packed' : 'whole',
          });
          try {
            const manifest = await standin.manifest();
            const text = await until(`job ${jobId} on /metrics`, async () => {
              const t = await exporter.scrape();
              return sumOf(parseMetrics(t), 'pyats_job_runs_total', { job: jobId }) > 0 ? t : undefined;
            });
            checkMetrics(manifest, text);
            const expectedSpans = manifest.sections.filter((s) => s.completed).length;
            const spans = await until(`spans of ${jobId}`, () => {
              const found = spansOfJob(jobId);
              return found.length >= expectedSpans ? found : undefined;
            });
            checkSpans(manifest, spans);
            // Every result value occurs in the scripted job.
            expect(new Set(manifest.sections.map((s) => s.result))).toEqual(new Set(RESULT_VALUES));
          } finally {
            await standin.kill();
          }
        }
        const text = await exporter.scrape();
        expect(await promtoolFindings(text)).toEqual([]);
        expect(sumOf(parseMetrics(text), 'pyats_exporter_events_rejected_total')).toBe(0);
      } finally {
        const { code } = await exporter.stop();
        expect(code).toBe(0);
      }
    });
  });

  it('spreads reporter sockets over --decode-threads 2 and exports both jobs at once exactly', async () => {
    const dir = tempDir();
    const sockets = [join(dir, 'a', 'reporter.sock'), join(dir, 'b', 'reporter.sock')];
    for (const socket of sockets) mkdirSync(join(socket, '..'));
    const exporter = await runExporter(
      [
        ...sockets.flatMap((socket) => ['--reporter-socket', socket]),
        '--listen',
        '127.0.0.1:0',
        '--timezone',
        JOB_ZONE,
        '--decode-threads',
        '2',
      ],
      otlpEnv(),
    );
    const standins = await Promise.all(
      sockets.map((socket, k) =>
        startStandin({
          socket,
          results: RESULTS[k],
          times: TIMES[k],
          tz: JOB_ZONE,
          jobId: `job_threads_${k}`,
          seed: 40 + k,
          startEpoch: 1_720_000_000 + k * 1000,
        }),
      ),
    );
    try {
      for (const [k, standin] of standins.entries()) {
        const jobId = `job_threads_${k}`;
        const manifest = await standin.manifest();
        const text = await until(`job ${jobId} on /metrics`, async () => {
          const t = await exporter.scrape();
          return sumOf(parseMetrics(t), 'pyats_job_runs_total', { job: jobId }) > 0 ? t : undefined;
        });
        checkMetrics(manifest, text);
        const expectedSpans = manifest.sections.filter((s) => s.completed).length;
        const spans = await until(`spans of ${jobId}`, () => {
          const found = spansOfJob(jobId);
          return found.length >= expectedSpans ? found : undefined;
        });
        checkSpans(manifest, spans);
      }
      // Neither thread logged an error.
      expect(exporter.logs.filter((l) => l.level >= 50)).toEqual([]);
    } finally {
      await Promise.all(standins.map((standin) => standin.kill()));
      const { code } = await exporter.stop();
      expect(code).toBe(0);
    }
  });

  it.each([false, true])(
    'on SIGTERM mid-job ends open sections as abandoned, exports every span and exits 0 within 10 s (decode thread: %s)',
    async (decodeThread) => {
      const dir = tempDir();
      const socket = join(dir, 'reporter.sock');
      // A long schedule delay: only the shutdown flush can deliver the spans.
      const exporter = await runExporter(
        [
          '--reporter-socket',
          socket,
          '--listen',
          '127.0.0.1:0',
          ...(decodeThread ? ['--decode-thread'] : []),
        ],
        otlpEnv({ OTEL_BSP_SCHEDULE_DELAY: '60000' }),
      );
      const jobId = `job_sigterm_${decodeThread}`;
      const standin = await startStandin({
        socket,
        jobId,
        eventDelayMs: 20,
        linger: 30,
        startEpoch: 1_710_000_000,
      });
      try {
        await until('some sections finished', async () => {
          const t = await exporter.scrape();
          return sumOf(parseMetrics(t), 'pyats_section_results_total', { job: jobId }) >= 5
            ? true
            : undefined;
        });
        const { code, ms } = await exporter.stop('SIGTERM');
        expect(code).toBe(0);
        expect(ms).toBeLessThan(10_000);
        const spans = spansOfJob(jobId);
        const incomplete = spans.filter((s) => s.attributes['pyats.section.incomplete'] === true);
        expect(incomplete.length).toBeGreaterThan(0);
        for (const span of incomplete) {
          expect(span.status.code).toBe(2);
          expect(span.attributes['pyats.section.result']).toBe('aborted');
        }
        // One span per section seen, complete or abandoned, all in one trace, the root included.
        const seqs = spans.map((s) => Number(s.attributes['pyats.section.seq_num']));
        expect(new Set(seqs).size).toBe(seqs.length);
        expect(new Set(spans.map((s) => s.traceId)).size).toBe(1);
        expect(spans.filter((s) => s.parentSpanId === '')).toHaveLength(1);
      } finally {
        await standin.kill();
      }
    },
  );
});

describe('command line', () => {
  it('exits 2 with one line naming the problem', async () => {
    const bad = await runCli(['--listen', 'nowhere', '--reporter-socket', '/tmp/x.sock']);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/--listen: "nowhere" is not HOST:PORT/);
    const unknown = await runCli(['--colour', 'blue']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/colour/);
    const help = await runCli(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--reporter-socket PATH/);
  });

  it('exits 2 when the listen port is taken', async () => {
    const first = await runExporter([
      '--reporter-socket',
      '/nonexistent/reporter.sock',
      '--listen',
      '127.0.0.1:0',
    ]);
    try {
      const port = new URL(first.url).port;
      const second = await runCli([
        '--reporter-socket',
        '/nonexistent/reporter.sock',
        '--listen',
        `127.0.0.1:${port}`,
      ]);
      expect(second.code).toBe(2);
      expect(second.stderr).toMatch(/EADDRINUSE|in use/);
    } finally {
      await first.stop();
    }
  });
});
