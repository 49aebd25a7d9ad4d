// Replay through the real pipeline, tracker, span ids and metrics sink: results.json as pyATS documents it
// (plain, YAML, zipped, in a runinfo directory), NDJSON event dicts and exporter captures, corrupt files, the
// progress display, real pyATS 23.2 jobs (recorded live, test/fixtures/real-pyats) against their results.json,
// and a CPython stand-in job exported live and then replayed from its results.json.
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { strToU8, zipSync } from 'fflate';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { SinkFanout } from '../../src/events/fanout.js';
import { runIdFor, spanIdFor, traceIdFor } from '../../src/events/ids.js';
import { resolveZone } from '../../src/events/timezone.js';
import { SectionTracker } from '../../src/events/tracker.js';
import type { FinishedSection, JobSummary, SectionSink, StartedSection } from '../../src/events/types.js';
import {
  ReplayClock,
  createProgressReporter,
  replayFiles,
  summaryLine,
  type ReplayOptions,
  type ReplayProgress,
} from '../../src/ingest/replay.js';
import { CaptureWriter, CapturingTracker } from '../../src/ingest/capture.js';
import { silentLogger } from '../../src/log.js';
import { normalize } from '../../src/events/normalize.js';
import { readRunContext } from '../../src/reporter/runinfo.js';
import { Pipeline } from '../../src/pipeline.js';
import { ReporterSubscriber } from '../../src/reporter/subscriber.js';
import { unpickle } from '../../src/python/unpickle.js';
import { ExporterHealth } from '../../src/telemetry/health.js';
import { MetricsSink } from '../../src/telemetry/metrics.js';
import { parseMetrics, runCli, runExporter, sumOf, type Sample } from '../helpers/exporter-process.js';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';
import { startStandin, type JobManifest, type StandinJobNode } from '../helpers/standin.js';
import { liveEvents, realFile, type Recording } from './real-pyats.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/results/', import.meta.url));
const fixture = (name: string): string => join(FIXTURES, name);

interface ExpectedSection {
  seq_num: number;
  parent_seq_num: number | null;
  type: string;
  id: string;
  name: string;
  result: string;
  reason: string | null;
  start_ms: number;
  stop_ms: number;
  runtime: number;
  xref?: { file: string; line: number };
}

interface Expected {
  job_id: string;
  time_zone: string;
  job_result: string;
  counts: Record<string, number>;
  sections: ExpectedSection[];
}

async function readJson<T>(name: string): Promise<T> {
  return JSON.parse(await readFile(fixture(name), 'utf8')) as T;
}

class RecordingSink implements SectionSink {
  started: StartedSection[] = [];
  finished: FinishedSection[] = [];
  jobs: JobSummary[] = [];
  sectionStarted(section: StartedSection): void {
    this.started.push(section);
  }
  sectionFinished(section: FinishedSection): void {
    this.finished.push(section);
  }
  jobFinished(summary: JobSummary): void {
    this.jobs.push(summary);
  }
  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
  ofJob(jobId: string): FinishedSection[] {
    return this.finished.filter((s) => s.job.jobId === jobId).sort((a, b) => a.seqNum - b.seqNum);
  }
}

/** A pipeline as the replay command builds one: tracker (on a replay clock), metrics, recording sink, health. */
function harness(zone = 'UTC') {
  const registry = new Registry();
  const health = new ExporterHealth({ registry });
  const sink = new RecordingSink();
  const metrics = new MetricsSink({ registry });
  const logger = silentLogger();
  const fanout = new SinkFanout([sink, metrics], logger);
  const clock = new ReplayClock();
  const tracker = new SectionTracker({ sink: fanout, logger, now: clock.now });
  const pipeline = new Pipeline({
    normalize: { zone: resolveZone(zone), maxStringLength: 4096 },
    tracker,
    health,
    logger,
  });
  let flushes = 0;
  const replay = (files: string[], options: ReplayOptions = {}) =>
    replayFiles(files, pipeline, {
      clock,
      zone: resolveZone(zone),
      flush: async () => {
        flushes += 1;
        await fanout.forceFlush();
      },
      ...options,
    });
  return { registry, sink, tracker, pipeline, replay, flushes: () => flushes };
}

/** Job-level and section metrics (the exporter's own health metrics name their source, so they differ). */
async function jobMetrics(registry: Registry): Promise<Sample[]> {
  return parseMetrics(await registry.metrics()).filter(
    (s) => s.name.startsWith('pyats_') && !s.name.startsWith('pyats_exporter_'),
  );
}

function expectSameMetrics(a: Sample[], b: Sample[]): void {
  const key = (s: Sample): string => `${s.name}${JSON.stringify(Object.entries(s.labels).sort())}`;
  const byKey = new Map(b.map((s) => [key(s), s.value]));
  expect(a.map(key).sort()).toEqual(b.map(key).sort());
  for (const sample of a) expect(sample.value, key(sample)).toBeCloseTo(byKey.get(key(sample)) as number, 6);
}

/** The replayed sections of one job match the generator's independent expectation, ids included. */
function expectTree(sections: FinishedSection[], want: Expected): void {
  expect(sections.map((s) => s.seqNum)).toEqual(want.sections.map((s) => s.seq_num));
  const suite = want.sections.find((s) => s.parent_seq_num === null) as ExpectedSection;
  const runId = runIdFor(want.job_id, suite.start_ms, 'unused');
  const bySeq = new Map(sections.map((s) => [s.seqNum, s]));
  for (const w of want.sections) {
    const got = bySeq.get(w.seq_num) as FinishedSection;
    expect(got.job.jobId).toBe(want.job_id);
    expect(got.job.traceId).toBe(traceIdFor(runId));
    expect(got.spanId).toBe(spanIdFor(runId, w.seq_num));
    expect(got.type).toBe(w.type);
    expect(got.id).toBe(w.id);
    expect(got.name).toBe(w.name);
    expect(got.result.value).toBe(w.result);
    expect(got.result.reason ?? null).toBe(w.reason);
    expect(got.startTime).toBeCloseTo(w.start_ms, 6);
    expect(got.stopTime).toBeCloseTo(w.stop_ms, 6);
    expect(got.runtime).toBeCloseTo(w.runtime, 9);
    expect(got.incomplete).toBe(false);
    expect(got.orphan).toBe(false);
    if (w.xref) expect(got.xref).toEqual(w.xref);
    if (w.parent_seq_num === null) {
      expect(got.parentSpanId).toBeUndefined();
    } else {
      expect(got.parentSeqNum).toBe(w.parent_seq_num);
      expect(got.parentSpanId).toBe(bySeq.get(w.parent_seq_num)?.spanId);
    }
  }
}

function expectJobSummary(jobs: JobSummary[], want: Expected): void {
  const summary = jobs.find((j) => j.job.jobId === want.job_id);
  expect(summary?.result).toBe(want.job_result);
  expect(summary?.incomplete).toBe(false);
  expect(summary?.counts).toEqual(want.counts);
}

/** Comparable span identity and content, for replay-vs-replay and live-vs-replay equality. */
function spanView(s: FinishedSection): Record<string, unknown> {
  return {
    trace: s.job.traceId,
    span: s.spanId,
    parent: s.parentSpanId,
    type: s.type,
    id: s.id,
    name: s.name,
    task: s.task,
    testcase: s.testcase,
    result: s.result,
    start: Math.round(s.startTime * 1000),
    stop: Math.round(s.stopTime * 1000),
    incomplete: s.incomplete,
  };
}

/** A job summary with times to the µs: live datetimes and report strings may differ in the last float bit. */
function jobView(j: JobSummary): Record<string, unknown> {
  return {
    ...j,
    startTime: j.startTime === undefined ? undefined : Math.round(j.startTime * 1000),
    stopTime: Math.round(j.stopTime * 1000),
    runtime: j.runtime === undefined ? undefined : Math.round(j.runtime * 1e6),
  };
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'replay-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

describe('replayFiles: results.json', () => {
  it('replays the documented results.json to the right tree, with the ids a live export would have', async () => {
    const want = await readJson<Expected>('example_job.expected.json');
    const h = harness(want.time_zone);
    const summary = await h.replay([fixture('example_job.results.json')]);
    expect(summary).toMatchObject({ failed: 0, jobs: 1, badLines: 0 });
    expect(summary.files[0]).toMatchObject({
      kind: 'results',
      jobs: 1,
      events: want.sections.length * 2 + 3,
    });
    expectTree(h.sink.ofJob(want.job_id), want);
    expectJobSummary(h.sink.jobs, want);
    // Everything ended: no stream, section or gauge left open.
    expect(h.tracker.stats()).toMatchObject({ streams: 0, openSections: 0 });
    const samples = await jobMetrics(h.registry);
    expect(samples.filter((s) => s.name === 'pyats_sections_in_progress' && s.value !== 0)).toEqual([]);
    expect(h.flushes()).toBeGreaterThan(0);

    // A second replay, into a fresh exporter, yields the very same spans and metrics.
    const again = harness(want.time_zone);
    await again.replay([fixture('example_job.results.json')]);
    expect(again.sink.finished.map(spanView)).toEqual(h.sink.finished.map(spanView));
    expectSameMetrics(await jobMetrics(again.registry), samples);
  });

  it('finds the report in a pyATS archive (under the runinfo folder or at the top), YAML, or a runinfo directory', async () => {
    const want = await readJson<Expected>('example_job.expected.json');
    const reference = harness(want.time_zone);
    await reference.replay([fixture('example_job.results.json')]);

    const dir = join(tempDir(), 'example_job.2024May01_17:29:59.000000');
    mkdirSync(dir);
    copyFileSync(fixture('example_job.results.json'), join(dir, 'results.json'));
    for (const [file, kind, member] of [
      [fixture('example_job.zip'), 'archive', 'example_job.2024May01_17:29:59.000000/results.json'],
      [fixture('example_job.results.yaml'), 'results', undefined],
      [dir, 'results', 'results.json'],
    ] as const) {
      const h = harness(want.time_zone);
      const summary = await h.replay([file]);
      expect(summary.failed, file).toBe(0);
      expect(summary.files[0]?.kind).toBe(kind);
      expect(summary.files[0]?.member).toBe(member);
      expect(h.sink.finished.map(spanView)).toEqual(reference.sink.finished.map(spanView));
    }

    const variant = await readJson<Expected>('variant_job.expected.json');
    const h = harness('UTC');
    const summary = await h.replay([fixture('variant_toplevel.zip')]);
    expect(summary.files[0]).toMatchObject({ kind: 'archive', member: 'results.json' });
    expectTree(h.sink.ofJob('variant_job'), variant);
  });

  it("puts a job into the CI trace its runinfo's env.txt names, beside the report in a directory or a zip", async () => {
    const traceId = '0af7651916cd43dd8448eb211c80319c';
    const spanId = 'b7ad6b7169203331';
    const envTxt =
      'Environment Variables\n=====================\n' +
      `TRACEPARENT    : 00-${traceId}-${spanId}-01\nJENKINS_URL    : https://jenkins.lab/\n` +
      'BUILD_URL      : https://jenkins.lab/job/nightly/12/\nJOB_NAME       : nightly\nBUILD_NUMBER   : 12\n\n';
    const results = await readFile(fixture('example_job.results.json'));
    const dir = join(tempDir(), 'example_job.2024May01_17:29:59.000000');
    mkdirSync(dir);
    writeFileSync(join(dir, 'results.json'), results);
    writeFileSync(join(dir, 'env.txt'), envTxt);
    const zip = join(tempDir(), 'example_job.zip');
    // An env.txt elsewhere in the archive is another job's: only the one beside the report counts.
    writeFileSync(
      zip,
      zipSync({
        'results.json': results,
        'env.txt': strToU8(envTxt),
        'other/env.txt': strToU8(
          'Environment Variables\n===\nTRACEPARENT : 00-' + '1'.repeat(32) + '-' + '2'.repeat(16) + '-01\n',
        ),
      }),
    );
    for (const file of [dir, zip]) {
      const h = harness();
      expect((await h.replay([file])).failed, file).toBe(0);
      expect(new Set(h.sink.finished.map((s) => s.job.traceId)), file).toEqual(new Set([traceId]));
      const root = h.sink.finished.find((s) => s.type === 'TestSuite');
      expect(root?.parentSpanId, file).toBe(spanId);
      expect(root?.job.ci, file).toMatchObject({ system: 'jenkins', pipelineName: 'nightly', runId: '12' });
    }
  });

  it('replays a variant: bare TestSuite, plugins listed, ISO times with offsets, string results', async () => {
    const want = await readJson<Expected>('variant_job.expected.json');
    // The times carry their offset: the configured zone does not matter.
    const h = harness('America/New_York');
    await h.replay([fixture('variant_job.results.json')]);
    expectTree(h.sink.ofJob('variant_job'), want);
    expectJobSummary(h.sink.jobs, want);
    const plugin = h.sink.finished.find((s) => s.id === 'GenieTelemetryPlugin');
    expect(plugin?.task).toBe('Task-1');
  });
});

describe('replayFiles: NDJSON', () => {
  it('replays plain NDJSON event dicts (as the bridge sends them) to the same spans as the results.json', async () => {
    const want = await readJson<Expected>('example_job.expected.json');
    const fromResults = harness(want.time_zone);
    await fromResults.replay([fixture('example_job.results.json')]);
    const h = harness('UTC');
    const summary = await h.replay([fixture('example_job.events.ndjson')]);
    expect(summary.files[0]).toMatchObject({ kind: 'ndjson', badLines: 0, jobs: 1 });
    expectTree(h.sink.ofJob(want.job_id), want);
    expect(h.sink.finished.map(spanView)).toEqual(fromResults.sink.finished.map(spanView));
    expectSameMetrics(await jobMetrics(h.registry), await jobMetrics(fromResults.registry));
  });

  it('replays a capture of a job that joined its CI trace from env.txt into that trace, as live', async () => {
    const traceId = '0af7651916cd43dd8448eb211c80319c';
    const spanId = 'b7ad6b7169203331';
    const runinfo = tempDir();
    const path = join(tempDir(), 'capture.ndjson');
    const capture = new CaptureWriter({ path, version: 'test', logger: silentLogger() });
    await capture.open();
    const live = new RecordingSink();
    const tracker = new CapturingTracker({ sink: live, logger: silentLogger(), capture, readRunContext });
    const send = (stream: string, raw: Record<string, unknown>) => {
      const normalized = normalize(raw, { zone: resolveZone('UTC'), maxStringLength: 4096 });
      if (!normalized.ok) throw new Error(`bad test event ${JSON.stringify(raw)}`);
      tracker.onEvent(stream, normalized.event);
    };
    const suite = { type: 'TestSuite', id: 'ci_job', seq_num: 1, starttime: 1_714_579_200_000 };
    const testcase = { type: 'Testcase', id: 'tc', seq_num: 2, parent_seq_num: 1 };
    // As on the native socket: the runinfo directory at connect, env.txt written after the suite started.
    tracker.setStreamContext('native', { runinfoDir: runinfo });
    send('native', { event: 'start_testsuite', ...suite });
    writeFileSync(
      join(runinfo, 'env.txt'),
      `Environment Variables\n=====================\nTRACEPARENT : 00-${traceId}-${spanId}-01\n` +
        'GITHUB_ACTIONS : true\nGITHUB_WORKFLOW : nightly\nGITHUB_RUN_ID : 77\n\n',
    );
    send('native', { event: 'start_testcase', ...testcase, starttime: 1_714_579_201_000 });
    send('native', { event: 'stop_testcase', ...testcase, stoptime: 1_714_579_202_000, result: 'passed' });
    send('native', { event: 'stop_testsuite', ...suite, stoptime: 1_714_579_203_000 });
    // A stream with the same CI context said twice (a bridge reconnecting): one record.
    const ci = { parent: { traceId, spanId, sampled: true }, pipelineName: 'nightly' };
    tracker.setStreamContext('bridge', { ci });
    tracker.setStreamContext('bridge', { ci });
    tracker.endStream('native');
    tracker.endStream('bridge');
    await capture.close();
    expect(new Set(live.finished.map((s) => s.job.traceId))).toEqual(new Set([traceId]));

    const records = (await readFile(path, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { kind: string; stream?: string; data?: { event: string } });
    expect(records.map((r) => `${r.kind} ${r.data?.event ?? r.stream ?? ''}`)).toEqual([
      'capture ',
      'event start_testsuite',
      'event start_testcase',
      // Read just before the testcase's record went out: written before its event, where replay needs it.
      'context native',
      'event stop_testcase',
      'event stop_testsuite',
      'context bridge',
      'end native',
      'end bridge',
    ]);

    const h = harness();
    expect((await h.replay([path])).failed).toBe(0);
    const key = (s: FinishedSection) => `${s.seqNum} ${s.job.traceId} ${s.spanId} ${s.parentSpanId ?? ''}`;
    expect(h.sink.finished.map(key)).toEqual(live.finished.map(key));
    const root = h.sink.finished.find((s) => s.type === 'TestSuite');
    expect(root?.parentSpanId).toBe(spanId);
    expect(root?.job.ci).toMatchObject({ system: 'github_actions', pipelineName: 'nightly', runId: '77' });
  });

  it('replays an exporter capture: interleaved streams, and open sections abandoned at the restart', async () => {
    const example = await readJson<Expected>('example_job.expected.json');
    const cut = await readJson<{
      restart_ms: number;
      variant: Expected;
      unfinished: Expected;
      unfinished_events: number;
    }>('capture.expected.json');
    const variant = cut.variant;
    const h = harness('Pacific/Auckland');
    const summary = await h.replay([fixture('capture.ndjson')]);
    expect(summary.files[0]).toMatchObject({ kind: 'capture', badLines: 0, jobs: 3 });
    expectTree(h.sink.ofJob(example.job_id), example);
    expectTree(h.sink.ofJob('variant_job'), variant);
    expectJobSummary(h.sink.jobs, example);
    expectJobSummary(h.sink.jobs, variant);

    // The unfinished job: what stopped is complete; the rest ends, aborted, when the exporter restarted.
    const unfinished = h.sink.ofJob('unfinished_job');
    const events = (await readJson<{ events: [string, number][] }>('variant_job.expected.json')).events.slice(
      0,
      cut.unfinished_events,
    );
    const stopped = new Set(events.filter(([e]) => e.startsWith('stop_')).map(([, seq]) => seq));
    const seen = new Set(events.map(([, seq]) => seq));
    expect(unfinished.map((s) => s.seqNum)).toEqual([...seen].sort((a, b) => a - b));
    for (const section of unfinished) {
      const want = cut.unfinished.sections.find((s) => s.seq_num === section.seqNum) as ExpectedSection;
      if (stopped.has(section.seqNum)) {
        expect(section.incomplete).toBe(false);
        expect(section.stopTime).toBeCloseTo(want.stop_ms, 6);
      } else {
        expect(section.incomplete).toBe(true);
        expect(section.result.value).toBe('aborted');
        expect(section.stopTime).toBe(cut.restart_ms);
      }
    }
    const job = h.sink.jobs.find((j) => j.job.jobId === 'unfinished_job');
    expect(job).toMatchObject({ incomplete: true, result: 'aborted' });
  });
});

describe('replayFiles: unfinished jobs', () => {
  it('ends what an NDJSON file leaves open at its latest event time, not at the time of the replay', async () => {
    const { readFile } = await import('node:fs/promises');
    const lines = (await readFile(fixture('example_job.events.ndjson'), 'utf8')).split('\n');
    const file = join(tempDir(), 'cut.ndjson');
    writeFileSync(file, lines.slice(0, 30).join('\n'));
    const h = harness('UTC');
    await h.replay([file]);
    const events = lines
      .slice(0, 30)
      .filter((l) => l.startsWith('{"event"'))
      .map((l) => JSON.parse(l) as Record<string, string>);
    const latest = Math.max(
      ...events
        .flatMap((e) => [e['starttime'], e['stoptime']])
        .filter(Boolean)
        .map((t) => Date.parse(t as string)),
    );
    const abandoned = h.sink.finished.filter((s) => s.incomplete);
    expect(abandoned.length).toBeGreaterThanOrEqual(2);
    // Date.parse keeps milliseconds only.
    for (const s of abandoned) expect(Math.abs(s.stopTime - Math.max(latest, s.startTime))).toBeLessThan(1);
    expect(h.sink.jobs[0]).toMatchObject({ incomplete: true, result: 'aborted' });
  });

  it('ends a section a report lists without stoptime at the last time in the report', async () => {
    const file = join(tempDir(), 'crashed.results.json');
    writeFileSync(
      file,
      JSON.stringify({
        version: '2',
        report: {
          type: 'TestSuite',
          id: 'crashed',
          starttime: '2024-05-01T10:00:00Z',
          stoptime: '2024-05-01T10:05:00Z',
          tasks: [
            {
              id: 'Task-1',
              starttime: '2024-05-01T10:00:01Z',
              sections: [{ type: 'Testcase', id: 'tc', starttime: '2024-05-01T10:00:02Z' }],
            },
          ],
        },
      }),
    );
    const h = harness('UTC');
    await h.replay([file]);
    const tc = h.sink.finished.find((s) => s.id === 'tc');
    expect(tc?.stopTime).toBe(Date.parse('2024-05-01T10:05:00Z'));
    expect(tc?.result).toEqual({ value: 'errored', reason: 'stop event carried no result' });
    expect(h.sink.finished.find((s) => s.id === 'Task-1')?.result.value).toBe('errored');
  });
});

describe('replayFiles: bad input', () => {
  it('names the file and line of a corrupt file and still replays the others', async () => {
    const { line } = await readJson<{ line: number }>('corrupt.expected.json');
    const want = await readJson<Expected>('example_job.expected.json');
    const missing = join(tempDir(), 'missing.results.json');
    const h = harness(want.time_zone);
    const files = [
      fixture('corrupt.results.json'),
      fixture('not_a_report.json'),
      missing,
      fixture('corrupt.events.ndjson'),
      fixture('example_job.results.json'),
    ];
    const summary = await h.replay(files);
    expect(summary.failed).toBe(3);
    const [corrupt, notReport, gone, brokenLines, good] = summary.files;
    expect(corrupt?.error).toMatchObject({ code: 'bad_json', file: files[0], line });
    expect(corrupt?.error?.message).toMatch(
      new RegExp(`^${escape(files[0] as string)}:${line}:\\d+: not valid JSON`),
    );
    expect(notReport?.error).toMatchObject({ code: 'bad_results' });
    expect(notReport?.error?.message).toContain('not_a_report.json: top level: not a pyATS results report');
    expect(gone?.error).toMatchObject({ code: 'unreadable', file: missing });
    expect(gone?.error?.message).toContain('ENOENT');

    // The NDJSON file loses its broken line 4 only; its job is still complete.
    expect(brokenLines?.error).toBeUndefined();
    expect(brokenLines).toMatchObject({ badLines: 1, jobs: 1 });
    expect(brokenLines?.lineProblems).toEqual([{ line: 4, message: expect.any(String) as string }]);
    expect(good).toMatchObject({ kind: 'results', jobs: 1 });
    // Both good files are the same job run: the tracker's per-stream tables keep them apart, spans repeat.
    expect(h.sink.jobs.filter((j) => j.job.jobId === want.job_id)).toHaveLength(2);
    expectTree(
      h.sink.ofJob(want.job_id).filter((_, i) => i % 2 === 0),
      want,
    );
    const rejected = parseMetrics(await h.registry.metrics()).filter(
      (s) => s.name === 'pyats_exporter_events_rejected_total' && s.value > 0,
    );
    expect(rejected.map((s) => s.labels['reason'])).toEqual(['bad_json']);
  });

  it('refuses an empty file and a file of something else', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'empty.json'), '\n\n');
    writeFileSync(join(dir, 'numbers.json'), '42\n');
    writeFileSync(join(dir, 'empty.ndjson'), '');
    const h = harness();
    const summary = await h.replay([
      join(dir, 'empty.json'),
      join(dir, 'numbers.json'),
      join(dir, 'empty.ndjson'),
    ]);
    expect(summary.files.map((f) => f.error?.code)).toEqual(['unknown_format', 'bad_results', undefined]);
    expect(summary.files[0]?.error?.message).toBe(`${join(dir, 'empty.json')}: empty file`);
  });
});

describe('progress', () => {
  it('reports progress per file and draws a bar only on a terminal', async () => {
    const seen: ReplayProgress[] = [];
    const h = harness('Asia/Kolkata');
    const files = [
      fixture('example_job.results.json'),
      fixture('corrupt.results.json'),
      fixture('capture.ndjson'),
    ];
    const summary = await h.replay(files, { onProgress: (p) => seen.push({ ...p }), flushEvery: 10 });
    expect(seen.map((p) => p.fileIndex)).toEqual([...seen.map((p) => p.fileIndex)].sort());
    expect(new Set(seen.map((p) => p.files))).toEqual(new Set([3]));
    const last = seen.at(-1) as ReplayProgress;
    expect(last).toMatchObject({ fileIndex: 2, failed: 1, events: summary.events });
    expect(last.bytesRead).toBe(last.bytesTotal);
    expect(seen.map((p) => p.events)).toEqual([...seen.map((p) => p.events)].sort((a, b) => a - b));

    const tty = { isTTY: true, columns: 60, text: '', write: (s: string) => (tty.text += s) };
    let t = 0;
    const bar = createProgressReporter(tty, { now: () => (t += 1000) });
    for (const p of seen) bar.onProgress(p);
    bar.finish(summary);
    expect(tty.text).toContain('\r\x1b[K[');
    expect(tty.text).toMatch(/3\/3 files/);
    // Every bar fits the terminal; the last segment is the cleared line followed by the final lines.
    const bars = tty.text.split('\r\x1b[K').slice(1, -1);
    expect(bars.length).toBeGreaterThan(3);
    expect(bars.every((b) => b.length <= 59 && !b.includes('\n'))).toBe(true);
    expect(tty.text.endsWith(`${summaryLine(summary)}\n`)).toBe(true);

    const plain = { text: '', write: (s: string) => (plain.text += s) };
    const quiet = createProgressReporter(plain);
    for (const p of seen) quiet.onProgress(p);
    quiet.finish(summary);
    const out = plain.text.trimEnd().split('\n');
    expect(out).toEqual([`replay: ${summary.files[1]?.error?.message ?? ''}`, summaryLine(summary)]);
    expect(summaryLine(summary)).toMatch(/^replay: 3 files \(1 failed\), 4 jobs, [\d,]+ events, \d+\.\d s$/);
  });
});

describe('real pyATS 23.2 jobs: the live export and the replay of their results.json', () => {
  /** The recorded live events through the pipeline, as the reporter subscriber feeds them. */
  function exportedLive(recording: Recording) {
    const h = harness('UTC');
    const stream = `reporter:${recording}`;
    for (const event of liveEvents(recording)) h.pipeline.ingest(stream, 'reporter_socket', event);
    h.pipeline.endStream(stream);
    return h;
  }

  async function expectSameExport(
    live: ReturnType<typeof harness>,
    replayed: ReturnType<typeof harness>,
    sections: number,
  ): Promise<void> {
    expect(live.sink.finished).toHaveLength(sections);
    expect(replayed.sink.finished.map(spanView).sort(bySpan)).toEqual(
      live.sink.finished.map(spanView).sort(bySpan),
    );
    for (const s of replayed.sink.finished) {
      const twin = live.sink.finished.find((l) => l.spanId === s.spanId) as FinishedSection;
      expect(s.fullid).toBe(twin.fullid);
      expect(s.xref).toEqual(twin.xref);
      expect(s.runtime).toBe(twin.runtime);
      expect(s.parentSeqNum).toBe(twin.parentSeqNum);
      // Live events name the log with its runinfo directory, the report without (docs/replay.md).
      if (s.type !== 'TestSuite') expect(s.logfile).toBe(basename(twin.logfile ?? ''));
    }
    expect(replayed.sink.jobs.map(jobView)).toEqual(live.sink.jobs.map(jobView));
    expectSameMetrics(await jobMetrics(replayed.registry), await jobMetrics(live.registry));
  }

  it('gives the spans, ids, roll-ups and metrics of the live export, from the 3.3 report and the 3.4 variant', async () => {
    const live = exportedLive('subscribe');
    // The Task and the job: no result on the wire, rolled up from the children to TcAborted's, which is
    // also what pyATS itself reports for them (the 3.4 variant's own results).
    const rolled = live.sink.finished.filter((s) => s.type === 'Task' || s.type === 'TestSuite');
    expect(rolled.map((s) => s.result)).toEqual([{ value: 'aborted' }, { value: 'aborted' }]);
    expect(live.sink.jobs[0]).toMatchObject({ result: 'aborted', incomplete: false });
    for (const file of ['results.json', 'results.v34.json']) {
      const replayed = harness('UTC');
      const summary = await replayed.replay([realFile(file)]);
      expect(summary, file).toMatchObject({ failed: 0, jobs: 1, events: 58 });
      await expectSameExport(live, replayed, 28);
    }
    // The reason of the over-64-KiB event made it through.
    const long = live.sink.finished.find((s) => s.fullid === 'RealTask.TcLong.t');
    expect(long?.result.value).toBe('failed');
    expect(long?.result.reason?.startsWith('long reason 0123456789abcdef')).toBe(true);
  });

  it('gives the live span ids for tasks that ran in parallel', async () => {
    const live = exportedLive('parallel');
    const replayed = harness('UTC');
    await replayed.replay([realFile('parallel.results.json')]);
    await expectSameExport(live, replayed, 23);
  });
});

describe('live export and replay of the same job', () => {
  const ZONE = 'Asia/Kolkata';
  const OFFSET_MS = 330 * 60_000;

  /** pyATS's naive local time string for an epoch-µs instant in the job's zone (no DST in Kolkata). */
  function naive(us: number): string {
    const ms = Math.floor(us / 1000);
    const iso = new Date(ms + OFFSET_MS).toISOString();
    return `${iso.slice(0, 10)} ${iso.slice(11, 19)}.${String(us % 1_000_000).padStart(6, '0')}`;
  }

  /**
   * The job's results.json as pyATS lays it out, built from the stand-in's manifest. With `plugins`, the
   * plugins the stand-in ran are listed among the sections (a variant); without, they are left out as in the
   * documented format (the job must then have none for the ids to match).
   */
  function reportOf(job: JobManifest, tree: StandinJobNode | undefined): unknown {
    const children = new Map<number | null, JobManifest['sections']>();
    for (const s of job.sections) {
      const list = children.get(s.parent_seq_num) ?? [];
      list.push(s);
      children.set(s.parent_seq_num, list);
    }
    const xrefs = new Map<string, { file: string; line: number }>();
    const collect = (node: StandinJobNode | undefined): void => {
      if (!node) return;
      if (node.xref) xrefs.set(node.id, node.xref);
      node.children?.forEach(collect);
    };
    collect(tree);
    const section = (s: JobManifest['sections'][number], logfile: string): Record<string, unknown> => {
      const log = s.type === 'Task' ? `TaskLog.${s.id}` : logfile;
      const out: Record<string, unknown> = {
        type: s.type,
        id: s.id,
        name: s.name,
        starttime: naive(s.start_us),
        stoptime: naive(s.stop_us),
        runtime: Math.round(s.runtime * 100) / 100,
      };
      if (s.type === 'Task') out['logfile'] = log;
      else out['logs'] = { file: log, begin: 0, size: 10 };
      const xref = xrefs.get(s.id);
      if (xref) out['xref'] = { ...xref, source_hash: 'abc' };
      if (s.type !== 'Task')
        out['result'] = s.reason ? { value: s.result, reason: s.reason } : { value: s.result };
      const kids = (children.get(s.seq_num) ?? []).map((c) => section(c, log));
      if (kids.length > 0) out['sections'] = kids;
      return out;
    };
    const suite = job.sections.find((s) => s.parent_seq_num === null) as JobManifest['sections'][number];
    const top = children.get(suite.seq_num) ?? [];
    const joblog = `JobLog.${suite.id}`;
    return {
      version: '2',
      report: {
        type: 'TestSuite',
        id: suite.id,
        name: suite.name,
        starttime: naive(suite.start_us),
        stoptime: naive(suite.stop_us),
        runtime: Math.round(suite.runtime * 100) / 100,
        tasks: top.filter((s) => s.type === 'Task').map((s) => section(s, joblog)),
        sections: top.filter((s) => s.type !== 'Task').map((s) => section(s, joblog)),
      },
    };
  }

  async function liveAndReplayed(options: { jobTree?: StandinJobNode; jobId?: string; seed?: number }) {
    const dir = tempDir();
    const live = harness(ZONE);
    const socket = join(dir, 'reporter.sock');
    const subscriber = new ReporterSubscriber({
      path: socket,
      frameFormat: 'chunked',
      maxFrameBytes: 1 << 20,
      attach: { timeoutMs: 2000, maxSections: 10_000 },
      pollIntervalMs: 20,
      backoff: { initialMs: 50, maxMs: 200 },
      decode: (frame) => unpickle(frame),
      logger: silentLogger(),
      handlers: {
        connected: () => undefined,
        event: (conn, value) => live.pipeline.ingest(`reporter:${conn.id}`, 'reporter_socket', value),
        frameRejected: () => undefined,
        disconnected: (conn) => live.pipeline.endStream(`reporter:${conn.id}`),
      },
    });
    subscriber.start();
    cleanups.push(() => subscriber.stop());
    const standin = await startStandin({
      socket,
      tz: ZONE,
      times: 'datetime',
      startEpoch: 1_714_564_800.654321,
      linger: 0.1,
      ...options,
    });
    cleanups.push(() => standin.kill());
    const manifest = await standin.manifest();
    const deadline = Date.now() + 15_000;
    while (live.sink.jobs.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(live.sink.jobs).toHaveLength(1);

    const file = join(dir, 'results.json');
    writeFileSync(file, JSON.stringify(reportOf(manifest, options.jobTree), null, 2));
    const replayed = harness(ZONE);
    const summary = await replayed.replay([file]);
    expect(summary.failed).toBe(0);
    return { live, replayed, manifest };
  }

  it('gives the same spans and metrics for a job without plugins (the documented results.json)', async () => {
    const step = (id: string, result?: StandinJobNode['result'], line?: number): StandinJobNode => ({
      type: 'Step',
      id,
      name: `STEP ${id}`,
      ...(result ? { result } : {}),
      ...(line ? { xref: { file: '/opt/t.py', line } } : {}),
    });
    const jobTree: StandinJobNode = {
      type: 'TestSuite',
      id: 'live_vs_replay',
      children: [
        {
          type: 'Task',
          id: 'Task-1',
          name: 'checks',
          children: [
            {
              type: 'CommonSetup',
              id: 'common_setup',
              xref: { file: '/opt/t.py', line: 10 },
              children: [{ type: 'Subsection', id: 'connect', result: 'passed' }],
            },
            {
              type: 'Testcase',
              id: 'tc_one',
              xref: { file: '/opt/t.py', line: 30 },
              children: [
                { type: 'SetupSection', id: 'setup', result: 'passed' },
                {
                  type: 'TestSection',
                  id: 'test',
                  children: [
                    {
                      ...step('1', undefined, 40),
                      children: [step('1.1', 'passed', 41), step('1.2', 'passx', 42)],
                    },
                    step('2', 'failed', 50),
                  ],
                },
              ],
            },
            {
              type: 'Testcase',
              id: 'tc_two',
              children: [{ type: 'TestSection', id: 't', result: 'skipped' }],
            },
            {
              type: 'CommonCleanup',
              id: 'common_cleanup',
              children: [{ type: 'Subsection', id: 'disconnect', result: 'errored', reason: 'boom' }],
            },
          ],
        },
        { type: 'Task', id: 'Task-2', children: [{ type: 'Testcase', id: 'tc', result: 'blocked' }] },
      ],
    };
    const { live, replayed } = await liveAndReplayed({ jobTree });
    expect(replayed.sink.finished.map(spanView).sort(bySpan)).toEqual(
      live.sink.finished.map(spanView).sort(bySpan),
    );
    for (const s of replayed.sink.finished) {
      const twin = live.sink.finished.find((l) => l.spanId === s.spanId) as FinishedSection;
      expect(s.xref).toEqual(twin.xref);
      // The report has no log file for the TestSuite itself, and names the others without the runinfo
      // directory live events give (as real pyATS 23.2 does).
      if (s.type !== 'TestSuite') expect(s.logfile).toBe(basename(twin.logfile ?? ''));
      expect(s.runtime).toBeCloseTo(twin.runtime, 9);
    }
    expect(replayed.sink.jobs.map(jobView)).toEqual(live.sink.jobs.map(jobView));
    expectSameMetrics(await jobMetrics(replayed.registry), await jobMetrics(live.registry));
  });

  it('gives the same span ids for a job with pre-job, pre-task and post-job plugins when they are listed', async () => {
    const { live, replayed, manifest } = await liveAndReplayed({ jobId: 'builtin_job', seed: 3 });
    expect(manifest.sections.some((s) => s.type === 'Plugin' && s.plugin_before)).toBe(true);
    expect(replayed.sink.finished.map(spanView).sort(bySpan)).toEqual(
      live.sink.finished.map(spanView).sort(bySpan),
    );
    expect(replayed.sink.jobs.map(jobView)).toEqual(live.sink.jobs.map(jobView));
    expectSameMetrics(await jobMetrics(replayed.registry), await jobMetrics(live.registry));
  });
});

function bySpan(a: Record<string, unknown>, b: Record<string, unknown>): number {
  return String(a['span']).localeCompare(String(b['span']));
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// Enable when wired: the `replay` command in config.ts / cli.ts (flags as proposed in docs/replay.md).
describe('pyats-exporter replay', () => {
  it('replays every file it can, names the bad one, prints one summary line, and exits 1', async () => {
    const { line } = await readJson<{ line: number }>('corrupt.expected.json');
    const run = await runCli([
      'replay',
      '--timezone',
      'Asia/Kolkata',
      fixture('example_job.zip'),
      fixture('corrupt.results.json'),
      fixture('capture.ndjson'),
    ]);
    expect(run.code).toBe(1);
    const lines = run.stderr.trimEnd().split('\n');
    expect(lines).toContainEqual(expect.stringContaining(`corrupt.results.json:${line}:`));
    expect(lines.at(-1)).toMatch(/^replay: 3 files \(1 failed\), 4 jobs, [\d,]+ events, \d+\.\d s$/);
  });

  it('exports the spans with the ids of a live export, and with --hold serves the metrics until SIGTERM', async () => {
    const want = await readJson<Expected>('example_job.expected.json');
    const receiver = await startOtlpReceiver();
    cleanups.push(() => receiver.close());
    const exporter = await runExporter(
      [
        'replay',
        '--hold',
        '--listen',
        '127.0.0.1:0',
        '--timezone',
        want.time_zone,
        fixture('example_job.zip'),
      ],
      {
        OTEL_TRACES_EXPORTER: 'otlp',
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_BSP_SCHEDULE_DELAY: '100',
      },
    );
    cleanups.push(async () => void (await exporter.stop()));
    const suite = want.sections.find((s) => s.parent_seq_num === null) as ExpectedSection;
    const traceId = traceIdFor(runIdFor(want.job_id, suite.start_ms, 'unused'));
    const deadline = Date.now() + 15_000;
    while (receiver.spans.length < want.sections.length && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(receiver.spans).toHaveLength(want.sections.length);
    expect(new Set(receiver.spans.map((s) => s.traceId))).toEqual(new Set([traceId]));
    const samples = parseMetrics(await exporter.scrape());
    // The `job` label is the job's name (the TestSuite's), not its per-run id.
    expect(sumOf(samples, 'pyats_job_runs_total', { job: suite.name, result: want.job_result })).toBe(1);
    expect((await exporter.stop()).code).toBe(0);
  });
});
