// Reporter lifecycle faults end to end, with the CPython reporter stand-in and the real binary: a job killed
// mid-run, the next job on the same socket path, the exporter attaching mid-job (what already ran fetched with
// get_testsuite / get_section as pyATS's Explorer does; and, when the reporter refuses that, followed live
// only), with and without the job then being killed, and several jobs one after another on one path.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseMetrics, runExporter, sumOf, type ExporterProcess } from '../helpers/exporter-process.js';
import { startOtlpReceiver, type DecodedSpan, type OtlpReceiver } from '../helpers/otlp-receiver.js';
import { startStandin, type JobManifest, type StandinOptions } from '../helpers/standin.js';
import { TempDirs, byTrace, seqOf, until } from './support.js';

const ERROR = 2;
const ERROR_RESULTS = new Set(['failed', 'errored', 'aborted']);

let receiver: OtlpReceiver;
const dirs = new TempDirs();

beforeAll(async () => {
  receiver = await startOtlpReceiver();
});
afterAll(async () => {
  await receiver.close();
  dirs.removeAll();
});

async function startExporter(service: string): Promise<{ exporter: ExporterProcess; socket: string }> {
  const socket = join(dirs.make(), 'reporter.sock');
  const exporter = await runExporter(['--reporter-socket', socket, '--listen', '127.0.0.1:0'], {
    OTEL_TRACES_EXPORTER: 'otlp',
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_BSP_SCHEDULE_DELAY: '100',
    OTEL_SERVICE_NAME: service,
  });
  return { exporter, socket };
}

function spansOf(service: string): DecodedSpan[] {
  return receiver.spans.filter((s) => s.resource['service.name'] === service);
}

async function runStandin(opts: StandinOptions): Promise<JobManifest & { jobs: JobManifest[] }> {
  const standin = await startStandin(opts);
  try {
    return await standin.manifest();
  } finally {
    await standin.kill();
  }
}

async function waitForRuns(exporter: ExporterProcess, runs: number): Promise<string> {
  let last = '';
  const what = (): string =>
    `${runs} job runs on /metrics; exporter logs:\n${exporter.logs.map((l) => JSON.stringify(l)).join('\n')}\n${last
      .split('\n')
      .filter((l) => l.startsWith('pyats_'))
      .join('\n')}`;
  return until(what, async () => {
    last = await exporter.scrape();
    return sumOf(parseMetrics(last), 'pyats_job_runs_total') >= runs ? last : undefined;
  });
}

async function waitForSpans(service: string, count: number): Promise<DecodedSpan[]> {
  const what = (): string => `${count} spans of ${service} (have ${spansOf(service).map(seqOf).join(',')})`;
  const spans = await until(what, () => {
    const found = spansOf(service);
    return found.length >= count ? found : undefined;
  });
  // A late extra span (a duplicate) would show up within a few export intervals.
  await new Promise((r) => setTimeout(r, 400));
  expect(spansOf(service)).toHaveLength(spans.length);
  return spans;
}

type Section = JobManifest['sections'][number];

/**
 * What the exporter can know of each section: what it was sent live and, with `snapshot`, what the reporter
 * already had when it attached (get_testsuite / get_section).
 */
function known(job: JobManifest, snapshot: boolean): JobManifest {
  const sections = job.sections.map((s): Section => {
    const before = snapshot ? s.attach_state : null;
    return {
      ...s,
      seen: s.seen || (before !== null && before !== 'init'),
      completed: s.completed || before === 'stopped',
    };
  });
  return { ...job, sections };
}

/** One trace holding exactly the job's sections that were seen, each once, timed and linked as sent. */
function checkTrace(job: JobManifest, spans: DecodedSpan[]): Map<number, DecodedSpan> {
  const seen = job.sections.filter((s) => s.seen);
  expect(spans.map(seqOf).sort((a, b) => a - b)).toEqual(seen.map((s) => s.seq_num));
  expect(byTrace(spans).size).toBe(1);
  const bySeq = new Map(spans.map((s) => [seqOf(s), s]));
  const seenSeqs = new Set(seen.map((s) => s.seq_num));
  for (const section of seen) {
    const span = bySeq.get(section.seq_num) as DecodedSpan;
    expect(span.attributes['pyats.section.type']).toBe(section.type);
    if (section.completed) {
      expect(span.attributes['pyats.section.incomplete']).toBeUndefined();
      expect(span.attributes['pyats.section.result']).toBe(section.result);
      expect(span.status.code === ERROR).toBe(ERROR_RESULTS.has(section.result));
      // A stop without its start still carries the section's own times.
      expect(Math.abs(Number(span.startTimeUnixNano) / 1e6 - section.start_ms)).toBeLessThan(1);
      expect(Math.abs(Number(span.endTimeUnixNano) / 1e6 - section.stop_ms)).toBeLessThan(1);
    } else {
      expect(span.attributes['pyats.section.incomplete']).toBe(true);
      expect(span.attributes['pyats.section.result']).toBe('aborted');
      expect(span.status.code).toBe(ERROR);
    }
    if (section.parent_seq_num === null) {
      expect(span.parentSpanId).toBe('');
    } else if (seenSeqs.has(section.parent_seq_num)) {
      expect(span.parentSpanId).toBe(bySeq.get(section.parent_seq_num)?.spanId);
      expect(span.attributes['pyats.section.orphan']).toBeUndefined();
    } else {
      // Its parent never showed up: flagged, and linked to the root when the root was seen, else to nothing.
      expect(span.attributes['pyats.section.orphan']).toBe(true);
      const root = job.sections.find((s) => s.parent_seq_num === null);
      const rootSpan = root === undefined ? undefined : bySeq.get(root.seq_num);
      expect(span.parentSpanId).toBe(rootSpan?.spanId ?? '');
    }
  }
  return bySeq;
}

describe('reporter lifecycle', () => {
  it('abandons the sections of a killed job, then exports the next job on the same path as a new trace', async () => {
    const service = 'lifecycle-killed';
    const { exporter, socket } = await startExporter(service);
    try {
      const killed = await runStandin({
        socket,
        jobId: 'rerun_job',
        dropAfter: 30,
        startEpoch: 1_720_000_000,
      });
      expect(killed.dropped).toBe(true);
      const abandoned = killed.sections.filter((s) => s.seen && !s.completed);
      expect(abandoned.length).toBeGreaterThan(1);
      const text = await waitForRuns(exporter, 1);
      const samples = parseMetrics(text);
      expect(sumOf(samples, 'pyats_job_runs_total', { job: 'rerun_job', result: 'aborted' })).toBe(1);
      expect(sumOf(samples, 'pyats_sections_abandoned_total', { job: 'rerun_job' })).toBe(abandoned.length);
      for (const type of new Set(abandoned.map((s) => s.type))) {
        expect(sumOf(samples, 'pyats_sections_abandoned_total', { job: 'rerun_job', type })).toBe(
          abandoned.filter((s) => s.type === type).length,
        );
      }
      expect(sumOf(samples, 'pyats_sections_in_progress', { job: 'rerun_job' })).toBe(0);
      const first = await waitForSpans(service, killed.sections.filter((s) => s.seen).length);
      checkTrace(killed, first);

      // The same job runs again and its reporter listens at the same path.
      const rerun = await runStandin({ socket, jobId: 'rerun_job', seed: 2, startEpoch: 1_720_003_600 });
      await waitForRuns(exporter, 2);
      const all = await waitForSpans(service, first.length + rerun.sections.length);
      const traces = byTrace(all);
      expect(traces.size).toBe(2);
      const firstTrace = first[0]?.traceId as string;
      expect(traces.get(firstTrace)).toHaveLength(first.length);
      const second = [...traces.entries()].find(([id]) => id !== firstTrace)?.[1] ?? [];
      checkTrace(rerun, second);
      const after = parseMetrics(await exporter.scrape());
      expect(sumOf(after, 'pyats_job_runs_total', { job: 'rerun_job', result: rerun.job_result })).toBe(
        rerun.job_result === 'aborted' ? 2 : 1,
      );
      // Nothing of the second run was abandoned or mixed into the first.
      expect(sumOf(after, 'pyats_sections_abandoned_total', { job: 'rerun_job' })).toBe(abandoned.length);
      expect(sumOf(after, 'pyats_exporter_reporter_connections_total')).toBe(2);
    } finally {
      expect((await exporter.stop()).code).toBe(0);
    }
  });

  it('keeps jobs that follow one another on the same socket path in separate traces', async () => {
    const service = 'lifecycle-repeat';
    const { exporter, socket } = await startExporter(service);
    try {
      const manifest = await runStandin({
        socket,
        jobId: 'nightly',
        repeatJobs: 3,
        jobGap: 0.1,
        linger: 0.2,
        startEpoch: 1_720_100_000,
        chunking: 'packed',
      });
      expect(manifest.jobs).toHaveLength(3);
      await waitForRuns(exporter, 3);
      const total = manifest.jobs.reduce((n, j) => n + j.sections.length, 0);
      const traces = byTrace(await waitForSpans(service, total));
      expect(traces.size).toBe(3);
      // Match each trace to its job by its root span's start time.
      for (const job of manifest.jobs) {
        const root = job.sections.find((s) => s.parent_seq_num === null);
        const trace = [...traces.values()].find((spans) =>
          spans.some(
            (s) =>
              s.parentSpanId === '' &&
              Math.abs(Number(s.startTimeUnixNano) / 1e6 - (root?.start_ms ?? NaN)) < 1,
          ),
        );
        expect(trace, `trace of run ${job.run_index}`).toBeDefined();
        checkTrace(job, trace ?? []);
      }
      const samples = parseMetrics(await exporter.scrape());
      expect(sumOf(samples, 'pyats_exporter_reporter_connections_total')).toBe(3);
      expect(sumOf(samples, 'pyats_sections_abandoned_total')).toBe(0);
    } finally {
      expect((await exporter.stop()).code).toBe(0);
    }
  });

  it('exports a job it attached to mid-run whole, fetching what already ran from the reporter', async () => {
    const service = 'lifecycle-late';
    const { exporter, socket } = await startExporter(service);
    try {
      const sent = await runStandin({
        socket,
        jobId: 'late_job',
        skipFirst: 14,
        startEpoch: 1_720_200_000,
      });
      // Some sections ran, some only started, before the exporter attached: the snapshot has both.
      expect(sent.sections.filter((s) => s.attach_state === 'stopped').length).toBeGreaterThan(0);
      expect(sent.sections.filter((s) => s.attach_state === 'started').length).toBeGreaterThan(0);
      const manifest = known(sent, true);
      // All of it but the pre-job plugin, which had finished and which the tree does not list.
      const missing = manifest.sections.filter((s) => !s.seen);
      expect(missing.map((s) => s.type)).toEqual(['Plugin']);
      const reported = manifest.sections.filter((s) => s.seen);
      expect(reported.every((s) => s.completed)).toBe(true);
      await waitForRuns(exporter, 1);
      const spans = await waitForSpans(service, reported.length);
      const bySeq = checkTrace(manifest, spans);
      expect(spans.filter((s) => s.attributes['pyats.section.orphan'] === true)).toHaveLength(0);
      expect(spans.filter((s) => s.parentSpanId === '')).toHaveLength(1);
      const root = manifest.sections.find((s) => s.parent_seq_num === null);
      expect(bySeq.get(root?.seq_num ?? -1)?.parentSpanId).toBe('');
      const samples = parseMetrics(await exporter.scrape());
      expect(sumOf(samples, 'pyats_sections_abandoned_total')).toBe(0);
      expect(sumOf(samples, 'pyats_section_results_total')).toBe(reported.length);
      expect(sumOf(samples, 'pyats_exporter_events_rejected_total')).toBe(0);
    } finally {
      expect((await exporter.stop()).code).toBe(0);
    }
  });

  it('follows a job it attached to mid-run live when the reporter will not say what already ran', async () => {
    const service = 'lifecycle-late-refused';
    const { exporter, socket } = await startExporter(service);
    try {
      const manifest = await runStandin({
        socket,
        jobId: 'late_live_job',
        skipFirst: 14,
        snapshot: 'refuse',
        startEpoch: 1_720_250_000,
      });
      // Some sections were only seen by their stop, some not at all.
      const seen = manifest.sections.filter((s) => s.seen);
      expect(seen.length).toBeLessThan(manifest.sections.length);
      expect(seen.every((s) => s.completed)).toBe(true);
      await waitForRuns(exporter, 1);
      const spans = await waitForSpans(service, seen.length);
      const bySeq = checkTrace(manifest, spans);
      // Every parent of a seen section was seen too (its stop came later): no orphans, one root.
      expect(spans.filter((s) => s.attributes['pyats.section.orphan'] === true)).toHaveLength(0);
      expect(spans.filter((s) => s.parentSpanId === '')).toHaveLength(1);
      const root = manifest.sections.find((s) => s.parent_seq_num === null);
      expect(bySeq.get(root?.seq_num ?? -1)?.parentSpanId).toBe('');
      const samples = parseMetrics(await exporter.scrape());
      expect(sumOf(samples, 'pyats_sections_abandoned_total')).toBe(0);
      expect(sumOf(samples, 'pyats_section_results_total')).toBe(seen.length);
      expect(sumOf(samples, 'pyats_exporter_events_rejected_total', { reason: 'attach_failed' })).toBe(1);
    } finally {
      expect((await exporter.stop()).code).toBe(0);
    }
  });

  it('exports sections whose parents it never saw when it attached late to a job that was then killed', async () => {
    const service = 'lifecycle-late-killed';
    const { exporter, socket } = await startExporter(service);
    try {
      const manifest = await runStandin({
        socket,
        jobId: 'late_killed',
        skipFirst: 14,
        dropAfter: 22,
        snapshot: 'refuse',
        startEpoch: 1_720_300_000,
      });
      const seen = manifest.sections.filter((s) => s.seen);
      const seenSeqs = new Set(seen.map((s) => s.seq_num));
      const orphans = seen.filter((s) => s.parent_seq_num !== null && !seenSeqs.has(s.parent_seq_num));
      expect(orphans.length).toBeGreaterThan(0);
      expect(seen.some((s) => !s.completed)).toBe(true);
      await until('the stream to end', async () => {
        const samples = parseMetrics(await exporter.scrape());
        return sumOf(samples, 'pyats_exporter_reporter_disconnects_total') >= 1 ? true : undefined;
      });
      const spans = await waitForSpans(service, seen.length);
      checkTrace(manifest, spans);
      expect(spans.filter((s) => s.attributes['pyats.section.orphan'] === true)).toHaveLength(orphans.length);
      const samples = parseMetrics(await exporter.scrape());
      expect(sumOf(samples, 'pyats_sections_abandoned_total')).toBe(seen.filter((s) => !s.completed).length);
    } finally {
      expect((await exporter.stop()).code).toBe(0);
    }
  });

  it('abandons what had started when a job it attached to late is killed, parents fetched from the reporter', async () => {
    const service = 'lifecycle-late-killed-snapshot';
    const { exporter, socket } = await startExporter(service);
    try {
      const sent = await runStandin({
        socket,
        jobId: 'late_killed_snapshot',
        skipFirst: 14,
        dropAfter: 22,
        // Time for the exporter to fetch the tree before the reporter dies (it would fail with it).
        eventDelayMs: 25,
        startEpoch: 1_720_350_000,
      });
      const manifest = known(sent, true);
      const reported = manifest.sections.filter((s) => s.seen);
      expect(reported.some((s) => !s.completed)).toBe(true);
      await until('the stream to end', async () => {
        const samples = parseMetrics(await exporter.scrape());
        return sumOf(samples, 'pyats_exporter_reporter_disconnects_total') >= 1 ? true : undefined;
      });
      const spans = await waitForSpans(service, reported.length);
      checkTrace(manifest, spans);
      expect(spans.filter((s) => s.attributes['pyats.section.orphan'] === true)).toHaveLength(0);
      const samples = parseMetrics(await exporter.scrape());
      expect(sumOf(samples, 'pyats_sections_abandoned_total')).toBe(
        reported.filter((s) => !s.completed).length,
      );
    } finally {
      expect((await exporter.stop()).code).toBe(0);
    }
  });
});
