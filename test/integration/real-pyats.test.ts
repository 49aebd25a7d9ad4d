// The exporter against REAL pyATS 23.2 jobs (../shared/real-pyats): the built CLI attached to a real job's
// reporter.sock with no flag beyond the socket, an OTLP receiver decoding the bytes it sends, /metrics
// scraped. Checked against the job's own results.json, against the same job through the Python bridge and
// through `replay` of its archive, and when attaching after the job's first testcases have finished.
// These tests fail (never skip) where the bundle or its CPython 3.10 is missing: see helpers/real-pyats.ts.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { unzipSync } from 'fflate';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  parseMetrics,
  runCli,
  runExporter,
  sumOf,
  type ExporterProcess,
} from '../helpers/exporter-process.js';
import { startOtlpReceiver, type DecodedSpan, type OtlpReceiver } from '../helpers/otlp-receiver.js';
import {
  FIXTURES,
  REAL_PYATS_DIR,
  reporterComplaints,
  requireRealPyats,
  sectionsOf,
  startRealJob,
  type RealJob,
  type ResultsJson,
  type ResultsSection,
} from '../helpers/real-pyats.js';
import { worstResult } from '../../src/events/results.js';
import type { ResultValue } from '../../src/events/types.js';

const BRIDGE_DIR = fileURLToPath(new URL('../../bridge', import.meta.url));
const ERROR_RESULTS = new Set(['failed', 'errored', 'aborted']);

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

beforeAll(() => {
  requireRealPyats();
}, 180_000);

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'pyx-realit-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function exporterWithReceiver(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ exporter: ExporterProcess; receiver: OtlpReceiver }> {
  const receiver = await startOtlpReceiver();
  cleanups.push(() => receiver.close());
  const exporter = await runExporter(['--listen', '127.0.0.1:0', ...args], {
    OTEL_TRACES_EXPORTER: 'otlp',
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_BSP_SCHEDULE_DELAY: '100',
    OTEL_BLRP_SCHEDULE_DELAY: '100',
    ...env,
  });
  cleanups.push(() => exporter.stop());
  return { exporter, receiver };
}

function job(path: string, env: NodeJS.ProcessEnv = {}, args: string[] = []): RealJob {
  const real = startRealJob(path, env, args);
  cleanups.push(() => real.cleanup());
  return real;
}

/** Microseconds since the epoch of a results.json time (`2026-12-02 16:20:14.959792+00:00`). */
function micros(time: string): bigint {
  const m = /^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?([+-]\d\d:\d\d|Z)$/.exec(time);
  if (!m) throw new Error(`unexpected time ${time}`);
  const seconds = BigInt(Date.parse(`${m[1]}T${m[2]}${m[4]}`) / 1000);
  return seconds * 1_000_000n + BigInt((m[3] ?? '').padEnd(6, '0'));
}

/** What must be equal between two exports of one job: ids, links, names, times, status, result. */
function spanKey(s: DecodedSpan): string {
  return JSON.stringify([
    s.traceId,
    s.spanId,
    s.parentSpanId,
    s.name,
    String(s.startTimeUnixNano),
    String(s.endTimeUnixNano),
    s.status.code,
    s.attributes['pyats.section.result'],
    s.attributes['pyats.section.fullid'],
  ]);
}

/** The sections' result counts by type, as /metrics has them and as results.json has them. */
function metricTotals(text: string): Record<string, number> {
  const totals: Record<string, number> = {};
  for (const s of parseMetrics(text).filter((s) => s.name === 'pyats_section_results_total')) {
    const key = `${s.labels['job']}/${s.labels['type']}/${s.labels['result']}`;
    totals[key] = (totals[key] ?? 0) + s.value;
  }
  return totals;
}

function resultTotals(results: ResultsJson): Record<string, number> {
  const totals: Record<string, number> = {};
  const expected = expectedResults(results.report);
  for (const { section } of sectionsOf(results.report)) {
    const key = `${results.report.name}/${section.type}/${expected.get(section.fullid ?? section.id)}`;
    totals[key] = (totals[key] ?? 0) + 1;
  }
  return totals;
}

/**
 * The result of every section by fullid: its own in results.json, or for the TestSuite and Tasks (which
 * results.json 3.3 leaves at None, as their live stop events do) the roll-up of their children.
 */
function expectedResults(report: ResultsSection): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (s: ResultsSection): ResultValue | undefined => {
    const children = [...(s.tasks ?? []), ...(s.sections ?? [])].map(visit);
    const own =
      (s.result?.value as ResultValue | undefined) ?? worstResult(children.filter((r) => r !== undefined));
    if (own !== undefined) out.set(s.fullid ?? s.id, own);
    return own;
  };
  visit(report);
  return out;
}

/** Checks the spans of a job against its results.json: one span per section, parents, times, results. */
function expectSpansMatch(spans: DecodedSpan[], results: ResultsJson): void {
  const sections = sectionsOf(results.report);
  const expected = expectedResults(results.report);
  expect(spans).toHaveLength(sections.length);
  const byFullid = new Map(spans.map((s) => [String(s.attributes['pyats.section.fullid']), s]));
  expect(byFullid.size).toBe(sections.length);
  const traceIds = new Set(spans.map((s) => s.traceId));
  expect(traceIds.size).toBe(1);
  for (const { section, parent } of sections) {
    const fullid = section.fullid ?? section.id;
    const span = byFullid.get(fullid);
    expect(span, fullid).toBeDefined();
    if (span === undefined) continue;
    expect(span.attributes['pyats.section.type'], fullid).toBe(section.type);
    expect(span.parentSpanId, fullid).toBe(parent === undefined ? '' : byFullid.get(parent)?.spanId);
    expect(span.startTimeUnixNano / 1000n, fullid).toBe(micros(section.starttime!));
    expect(span.endTimeUnixNano / 1000n, fullid).toBe(micros(section.stoptime!));
    const result = expected.get(fullid);
    expect(result, fullid).toBeDefined();
    expect(span.attributes['pyats.section.result'], fullid).toBe(result);
    expect(span.status.code === 2, fullid).toBe(ERROR_RESULTS.has(result ?? ''));
  }
}

/** The span keys `pyats-exporter replay` exports for a job's archive. */
/**
 * Every failed, errored or aborted section's span carries its log lines, byte-exact against the job's own
 * TaskLog (from the archive, at results.json's `logs`): the whole slice when it is within the default bound
 * (4096 bytes), else its tail from a line start. Returns the excerpts by fullid.
 */
function expectLogExcerpts(spans: DecodedSpan[], real: RealJob): Map<string, string> {
  const files = unzipSync(readFileSync(real.archive()), { filter: (f) => /(^|\/)TaskLog\./.test(f.name) });
  const taskLog = (name: string): Buffer => {
    const entry = Object.entries(files).find(([path]) => path === name || path.endsWith(`/${name}`));
    if (entry === undefined) throw new Error(`no ${name} in the archive`);
    return Buffer.from(entry[1]);
  };
  const excerpts = new Map<string, string>();
  for (const { section } of sectionsOf(real.results().report)) {
    if (!ERROR_RESULTS.has(section.result?.value ?? '') || section.logs === undefined) continue;
    const span = spans.find((s) => s.attributes['pyats.section.fullid'] === section.fullid);
    const events = span?.events.filter((e) => e.name === 'exception') ?? [];
    expect(events, section.fullid).toHaveLength(1);
    const event = events[0]!;
    expect(event.attributes['exception.type']).toBe(`pyats.${section.result?.value}`);
    const excerpt = Buffer.from(String(event.attributes['pyats.section.log']));
    const { file, begin, size } = section.logs;
    const slice = taskLog(file).subarray(begin, begin + size);
    if (slice.length <= 4096) {
      expect(excerpt.equals(slice), `${section.fullid}: ${excerpt.toString()}`).toBe(true);
    } else {
      expect(excerpt.length).toBeLessThanOrEqual(4096);
      expect(slice.subarray(slice.length - excerpt.length).equals(excerpt), section.fullid).toBe(true);
      expect(slice[slice.length - excerpt.length - 1], section.fullid).toBe(0x0a);
    }
    excerpts.set(section.fullid ?? section.id, excerpt.toString());
  }
  return excerpts;
}

async function replayedSpanKeys(real: RealJob): Promise<string[]> {
  const receiver = await startOtlpReceiver();
  cleanups.push(() => receiver.close());
  const replay = await runCli(['replay', real.archive()], {
    OTEL_TRACES_EXPORTER: 'otlp',
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
  });
  expect(replay.code, replay.stderr).toBe(0);
  // It prints the job's trace id, as a CI log would show it.
  const root = receiver.spans.find((s) => s.attributes['pyats.section.type'] === 'TestSuite');
  expect(root).toBeDefined();
  expect(replay.stdout).toMatch(new RegExp(`^job \\S+ \\(\\S+\\): [a-z]+, trace ${root?.traceId}$`, 'm'));
  return receiver.spans.map(spanKey).sort();
}

async function waitForFile(path: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (Date.now() > deadline) throw new Error(`${path} did not appear`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const CI_TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const CI_SPAN_ID = '00f067aa0ba902b7';
/** A GitHub Actions run with a traced parent, as the job's environment. */
const CI_ENV = {
  TRACEPARENT: `00-${CI_TRACE_ID}-${CI_SPAN_ID}-01`,
  GITHUB_ACTIONS: 'true',
  GITHUB_WORKFLOW: 'nightly-lab',
  GITHUB_RUN_ID: '4242',
  GITHUB_REPOSITORY: 'lab/tests',
  GITHUB_SERVER_URL: 'https://github.example.com',
};

/** The environment without any CI variable (the test itself may run in CI). */
function withoutCi(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(env).filter(
      ([name]) => !/^(TRACEPARENT|GITHUB_|GITLAB_|CI_|JENKINS_|BUILD_|JOB_NAME)/.test(name),
    ),
  );
}

/** The job's spans are results.json's, all in the CI's trace, the root a child of the CI's span. */
function expectCiTrace(spans: DecodedSpan[], results: ResultsJson): void {
  expectSpansMatch(
    spans.map((s) => ({ ...s, parentSpanId: s.parentSpanId === CI_SPAN_ID ? '' : s.parentSpanId })),
    results,
  );
  expect(new Set(spans.map((s) => s.traceId))).toEqual(new Set([CI_TRACE_ID]));
  const root = spans.find((s) => s.attributes['pyats.section.type'] === 'TestSuite');
  expect(root?.parentSpanId).toBe(CI_SPAN_ID);
  expect(root?.attributes).toMatchObject({
    'cicd.pipeline.name': 'nightly-lab',
    'cicd.pipeline.run.id': '4242',
    'cicd.pipeline.task.run.url.full': 'https://github.example.com/lab/tests/actions/runs/4242',
  });
}

describe(`real pyATS 23.2 (${REAL_PYATS_DIR})`, () => {
  // The bundle's example job (every result value, nested steps, a raise): pyATS 23.2's own ReportClient, which
  // the bridge uses, cannot read a message over one 64 KiB chunk, so the bridge is compared on this job.
  it('native socket, bridge and replay of the archive give the job results.json has, identically', async () => {
    const dir = tempDir();
    const go = join(dir, 'go');
    const real = job(join(REAL_PYATS_DIR, 'example', 'job.py'), { PYATS_WAIT_FOR: go });
    const socket = await real.socket();

    const native = await exporterWithReceiver(['--reporter-socket', socket]);
    await native.exporter.waitForLog((l) => l.msg === 'subscribed to reporter', 30_000);

    // The same job through the Python bridge (pyATS's own ReportClient) into a second exporter.
    const ingest = join(dir, 'ingest.sock');
    const viaBridge = await exporterWithReceiver(['--ingest-socket', ingest]);
    await waitForFile(ingest);
    const bridge = spawn(
      join(REAL_PYATS_DIR, 'python.sh'),
      [
        '-c',
        `import sys; sys.path.insert(0, ${JSON.stringify(BRIDGE_DIR)}); ` +
          `from pyats_exporter_bridge.__main__ import main; ` +
          `sys.exit(main(['--reporter-socket', ${JSON.stringify(socket)}, '--target', ${JSON.stringify(`unix:${ingest}`)}]))`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    cleanups.push(() => bridge.kill('SIGKILL'));
    let bridgeOutput = '';
    bridge.stderr.setEncoding('utf8').on('data', (c: string) => (bridgeOutput += c));
    const bridgeExited = new Promise<number | null>((resolve) => bridge.once('exit', resolve));
    // ReportClient.subscribe() gives no sign of having subscribed; it does within well under a second.
    await new Promise((r) => setTimeout(r, 1500));
    writeFileSync(go, '');

    expect(await real.exited, real.output()).toBe(1); // the job has failures on purpose
    expect(await bridgeExited, bridgeOutput).toBe(0);
    expect(reporterComplaints(real.output())).toEqual([]);
    const results = real.results();
    expect(results.version).toBe('3.3');
    const sectionCount = sectionsOf(results.report).length;

    await native.receiver.waitForSpans(sectionCount, 30_000).catch((err: Error) => {
      const seen = new Set(native.receiver.spans.map((s) => String(s.attributes['pyats.section.fullid'])));
      const missing = sectionsOf(results.report)
        .map(({ section }) => section.fullid ?? section.id)
        .filter((f) => !seen.has(f));
      throw new Error(
        `${err.message}; missing ${missing.join(', ')}; exporter logs ${JSON.stringify(native.exporter.logs)}`,
      );
    });
    await viaBridge.receiver.waitForSpans(sectionCount, 30_000).catch((err: Error) => {
      const seen = new Set(viaBridge.receiver.spans.map((s) => String(s.attributes['pyats.section.fullid'])));
      const missing = sectionsOf(results.report)
        .map(({ section }) => section.fullid ?? section.id)
        .filter((f) => !seen.has(f));
      throw new Error(
        `${err.message}; missing ${missing.join(', ')}; exporter logs ${JSON.stringify(viaBridge.exporter.logs)} bridge ${bridgeOutput}`,
      );
    });
    expectSpansMatch(native.receiver.spans, results);
    expect(metricTotals(await native.exporter.scrape())).toEqual(resultTotals(results));
    expect(sumOf(parseMetrics(await native.exporter.scrape()), 'pyats_job_runs_total', { job: 'job' })).toBe(
      1,
    );

    const nativeKeys = native.receiver.spans.map(spanKey).sort();
    expect(viaBridge.receiver.spans.map(spanKey).sort()).toEqual(nativeKeys);
    // Failed sections carry their log lines both ways: read by the exporter, and sent by the bridge.
    const nativeExcerpts = expectLogExcerpts(native.receiver.spans, real);
    expect(nativeExcerpts.size).toBeGreaterThan(0);
    expect(expectLogExcerpts(viaBridge.receiver.spans, real)).toEqual(nativeExcerpts);
    expect(metricTotals(await viaBridge.exporter.scrape())).toEqual(resultTotals(results));

    expect(await replayedSpanKeys(real)).toEqual(nativeKeys);

    for (const { exporter } of [native, viaBridge]) {
      const errors = exporter.logs.filter((l) => l.level >= 40);
      expect(errors, JSON.stringify(errors)).toEqual([]);
    }
  }, 180_000);

  for (const decodeThread of [false, true]) {
    it(`native socket and replay agree on a job with an event over 64 KiB (several chunks)${decodeThread ? ', --decode-thread --span-thread' : ''}`, async () => {
      const dir = tempDir();
      const go = join(dir, 'go');
      const real = job(join(FIXTURES, 'job.py'), { PYATS_WAIT_FOR: go });
      const { exporter, receiver } = await exporterWithReceiver(
        [
          '--reporter-socket',
          await real.socket(),
          ...(decodeThread ? ['--decode-thread', '--span-thread'] : []),
        ],
        { OTEL_LOGS_EXPORTER: 'otlp' },
      );
      await exporter.waitForLog((l) => l.msg === 'subscribed to reporter', 30_000);
      writeFileSync(go, '');
      expect(await real.exited, real.output()).toBe(1);
      expect(reporterComplaints(real.output())).toEqual([]);
      const results = real.results();
      await receiver.waitForSpans(sectionsOf(results.report).length, 30_000);
      expectSpansMatch(receiver.spans, results);
      // The long reason arrived whole (then cut to --max-attribute-length for the span).
      const long = receiver.spans.find((s) => s.attributes['pyats.section.fullid'] === 'RealTask.TcLong.t');
      expect(String(long?.attributes['pyats.section.result.reason'])).toMatch(
        /^long reason 0123456789abcdef/,
      );
      expect(metricTotals(await exporter.scrape())).toEqual(resultTotals(results));
      // The failed step's span shows the line the step logged before it failed.
      const excerpts = expectLogExcerpts(receiver.spans, real);
      expect(excerpts.get('RealTask.TcFail.test_steps.STEP 1.STEP 1.1')).toMatch(
        /%SCRIPT-3-ERROR: .*: interface Gi0\/1 is down, expected up\n/,
      );
      expect(
        sumOf(parseMetrics(await exporter.scrape()), 'pyats_exporter_section_logs_total', {
          outcome: 'attached',
        }),
      ).toBe(excerpts.size);

      // OTLP logs: every excerpt line once, as a record of the innermost failed section that has it.
      const lines = new Set([...excerpts.values()].flatMap((e) => e.split('\n').filter((l) => l !== '')));
      const records = await receiver.waitForLogs(lines.size, 30_000);
      expect(records.map((r) => r.body).sort()).toEqual([...lines].sort());
      const spanById = new Map(receiver.spans.map((s) => [s.spanId, s]));
      for (const record of records) {
        const span = spanById.get(record.spanId);
        expect(span?.traceId, String(record.body)).toBe(record.traceId);
        expect(String(span?.events[0]?.attributes['pyats.section.log'])).toContain(String(record.body));
      }
      const down = records.find((r) => String(r.body).includes('interface Gi0/1 is down'));
      expect(spanById.get(down?.spanId ?? '')?.attributes['pyats.section.fullid']).toBe(
        'RealTask.TcFail.test_steps.STEP 1.STEP 1.1',
      );
      expect(down).toMatchObject({ severityText: 'ERROR', severityNumber: 17 });
      expect(sumOf(parseMetrics(await exporter.scrape()), 'pyats_exporter_log_records_exported_total')).toBe(
        records.length,
      );

      expect(await replayedSpanKeys(real)).toEqual(receiver.spans.map(spanKey).sort());
      expect(exporter.logs.filter((l) => l.level >= 40)).toEqual([]);
    }, 180_000);
  }

  it('--watch finds a real job under its runinfo root and exports all of it, without waiting for it', async () => {
    const real = job(join(REAL_PYATS_DIR, 'example', 'job.py'));
    const root = join(real.runDir, '.pyats', 'runinfo');
    const { exporter, receiver } = await exporterWithReceiver(['--watch', root, '--watch-interval', '200']);
    expect(await real.exited, real.output()).toBe(1);
    expect(reporterComplaints(real.output())).toEqual([]);
    const results = real.results();
    await receiver.waitForSpans(sectionsOf(results.report).length, 30_000);
    expectSpansMatch(receiver.spans, results);
    expect(metricTotals(await exporter.scrape())).toEqual(resultTotals(results));
    expect(exporter.logs.filter((l) => l.level >= 50)).toEqual([]);
  }, 180_000);

  // Easypy writes env.txt (its EnvironmentDebugPlugin) a moment before the first task starts: the exporter,
  // attached at once and not holding the job, must still put the first span that goes out into the CI trace.
  it('a job run by a traced CI joins the CI trace: its root is a child of the CI span, with cicd.* attributes', async () => {
    const real = job(join(REAL_PYATS_DIR, 'example', 'job.py'), { ...CI_ENV });
    const { exporter, receiver } = await exporterWithReceiver(['--reporter-socket', await real.socket()]);
    expect(await real.exited, real.output()).toBe(1);
    const results = real.results();
    await receiver.waitForSpans(sectionsOf(results.report).length, 30_000);
    expectCiTrace(receiver.spans, results);
    await exporter.waitForLog((l) => l.msg === 'job runs in CI');
    const finished = await exporter.waitForLog((l) => l.msg === 'job finished');
    expect(finished).toMatchObject({ job: 'job', trace_id: CI_TRACE_ID, result: 'aborted' });
    // Replayed from its archive (which holds env.txt), the job lands in the same CI trace, span for span.
    expect(await replayedSpanKeys(real)).toEqual(receiver.spans.map(spanKey).sort());
  }, 180_000);

  it('the bridge joins the CI trace too: as the easypy plugin (the job environment) and as a script (env.txt)', async () => {
    const dir = tempDir();
    const go = join(dir, 'go');
    const pluginIngest = join(dir, 'plugin.sock');
    const scriptIngest = join(dir, 'script.sock');
    const viaPlugin = await exporterWithReceiver(['--ingest-socket', pluginIngest]);
    const viaScript = await exporterWithReceiver(['--ingest-socket', scriptIngest]);
    await waitForFile(pluginIngest);
    await waitForFile(scriptIngest);
    const configuration = join(dir, 'bridge.yaml');
    writeFileSync(
      configuration,
      [
        'plugins:',
        '  ExporterBridgePlugin:',
        '    enabled: True',
        '    module: pyats_exporter_bridge.plugin',
        '    order: 1.0',
        `    target: unix:${pluginIngest}`,
        '',
      ].join('\n'),
    );
    const real = job(
      join(REAL_PYATS_DIR, 'example', 'job.py'),
      { ...CI_ENV, PYATS_WAIT_FOR: go, PYTHONPATH: BRIDGE_DIR },
      ['-configuration', configuration],
    );
    const socket = await real.socket();
    // The script runs outside the job's environment: its CI variables come from the job's env.txt.
    const script = spawn(
      join(REAL_PYATS_DIR, 'python.sh'),
      [
        '-c',
        `import sys; sys.path.insert(0, ${JSON.stringify(BRIDGE_DIR)}); ` +
          `from pyats_exporter_bridge.__main__ import main; ` +
          `sys.exit(main(['--reporter-socket', ${JSON.stringify(socket)}, '--target', ${JSON.stringify(`unix:${scriptIngest}`)}]))`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], env: withoutCi(process.env) },
    );
    cleanups.push(() => script.kill('SIGKILL'));
    let scriptOutput = '';
    script.stderr.setEncoding('utf8').on('data', (c: string) => (scriptOutput += c));
    const scriptExited = new Promise<number | null>((resolve) => script.once('exit', resolve));
    // ReportClient.subscribe() gives no sign of having subscribed; it does within well under a second.
    await new Promise((r) => setTimeout(r, 1500));
    writeFileSync(go, '');

    expect(await real.exited, real.output()).toBe(1);
    expect(await scriptExited, scriptOutput).toBe(0);
    expect(reporterComplaints(real.output())).toEqual([]);
    expect(real.output()).toMatch(/pyats-exporter bridge: the job runs in CI \(GITHUB_ACTIONS, /);
    expect(scriptOutput).toMatch(/pyats-exporter bridge: the job runs in CI \(GITHUB_ACTIONS, /);
    const results = real.results();
    const count = sectionsOf(results.report).length;
    await viaPlugin.receiver.waitForSpans(count, 30_000);
    await viaScript.receiver.waitForSpans(count, 30_000);
    expectCiTrace(viaPlugin.receiver.spans, results);
    expectCiTrace(viaScript.receiver.spans, results);
    expect(viaScript.receiver.spans.map(spanKey).sort()).toEqual(
      viaPlugin.receiver.spans.map(spanKey).sort(),
    );
    expect(await replayedSpanKeys(real)).toEqual(viaPlugin.receiver.spans.map(spanKey).sort());
    for (const { exporter } of [viaPlugin, viaScript]) {
      expect(exporter.logs.filter((l) => l.level >= 40)).toEqual([]);
      expect(await exporter.waitForLog((l) => l.msg === 'job finished')).toMatchObject({
        trace_id: CI_TRACE_ID,
      });
    }
  }, 180_000);

  it('attached after the first testcases finished, still exports every section, ids as a live export', async () => {
    const dir = tempDir();
    const holding = join(dir, 'holding');
    const hold = join(dir, 'hold');
    const real = job(join(FIXTURES, 'attach_job.py'), { PYATS_HOLDING: holding, PYATS_HOLD: hold });
    const socket = await real.socket();
    await waitForFile(holding);

    const { exporter, receiver } = await exporterWithReceiver(['--reporter-socket', socket]);
    const attached = await exporter.waitForLog(
      (l) => l.msg === 'attached mid-job: replaying what already ran',
      30_000,
    );
    // Started and stopped: CommonSetup, connect, TcFirst, t and its 2 steps; started only: TestSuite, Task,
    // TcHold and wait (still running).
    expect(attached['events']).toBe(2 * 6 + 4);
    writeFileSync(hold, '');

    expect(await real.exited, real.output()).toBe(1);
    expect(reporterComplaints(real.output())).toEqual([]);
    const results = real.results();
    const sectionCount = sectionsOf(results.report).length;
    await receiver.waitForSpans(sectionCount, 30_000);
    expectSpansMatch(receiver.spans, results);
    expect(metricTotals(await exporter.scrape())).toEqual(resultTotals(results));

    // The same job replayed from its archive gets the same ids: attaching late loses nothing.
    expect(await replayedSpanKeys(real)).toEqual(receiver.spans.map(spanKey).sort());
    expect(exporter.logs.filter((l) => l.level >= 50)).toEqual([]);
  }, 180_000);
});
