// PushgatewayPublisher against Debian's real prometheus-pushgateway (grouping, replacement, odd job names)
// and against small HTTP stand-ins for the failure modes (down, 4xx, 5xx, hanging, auth and path prefix).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { RESULT_VALUES, type JobInfo, type ResultValue } from '../../src/events/types.js';
import type { Logger } from '../../src/log.js';
import { silentLogger } from '../../src/log.js';
import {
  groupingSegment,
  PUSH_RESULTS,
  PushgatewayPublisher,
  type PushgatewayPublisherOptions,
} from '../../src/telemetry/pushgateway.js';
import { parseMetrics, runExporter, sumOf } from '../helpers/exporter-process.js';
import { startStandin } from '../helpers/standin.js';

const PUSHGATEWAY = '/usr/bin/prometheus-pushgateway';
const itPushgateway = existsSync(PUSHGATEWAY) || process.env['CI'] ? it : it.skip;

/** A run of job `jobName` with an id unique per run, as easypy makes it: groups and labels use the name. */
function jobInfo(jobName: string, run = 1): JobInfo {
  const jobId = `${jobName}.2023Nov14_22:13:2${run}.000000`;
  return { jobId, jobName, runId: `${jobId}@${run}`, traceId: 'cd'.repeat(16) };
}

const NIGHTLY = jobInfo('nightly');

/** One small run: a passed and a failed testcase under one task, then the job's summary. */
function feedRun(
  sink: PushgatewayPublisher,
  info: JobInfo,
  testcases: Array<[string, ResultValue]> = [
    ['tc_ping', 'passed'],
    ['tc_bgp', 'failed'],
  ],
): void {
  sink.sectionStarted({ job: info, seqNum: 1, type: 'TestSuite', task: 'none' });
  testcases.forEach(([id, result], i) => {
    sink.sectionStarted({ job: info, seqNum: 10 + i, type: 'Testcase', task: 'task-1' });
    sink.sectionFinished({
      job: info,
      seqNum: 10 + i,
      spanId: (10 + i).toString(16).padStart(16, '0'),
      type: 'Testcase',
      id,
      task: 'task-1',
      startTime: 1_700_000_000_000,
      stopTime: 1_700_000_002_000,
      runtime: 2,
      result: { value: result },
      incomplete: false,
      orphan: false,
      started: true,
    });
  });
  const counts = Object.fromEntries(RESULT_VALUES.map((r) => [r, 0])) as Record<ResultValue, number>;
  for (const [, result] of testcases) counts[result] += 1;
  const worst = testcases.some(([, r]) => r === 'failed') ? 'failed' : 'passed';
  sink.jobFinished({
    job: info,
    result: worst,
    startTime: 1_700_000_000_000,
    stopTime: 1_700_000_060_000,
    runtime: 60,
    counts,
    incomplete: false,
  });
}

interface Captured {
  logger: Logger;
  lines: Array<{ level: number; msg: string; [key: string]: unknown }>;
}

function captureLogs(): Captured {
  const lines: Captured['lines'] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const text of chunk.toString().split('\n')) if (text !== '') lines.push(JSON.parse(text));
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

async function pushCounts(registry: Registry): Promise<Record<string, number>> {
  const family = (await registry.getMetricsAsJSON()).find(
    (m) => m.name === 'pyats_exporter_pushgateway_pushes_total',
  );
  return Object.fromEntries((family?.values ?? []).map((v) => [String(v.labels.result), v.value]));
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface RealPushgateway {
  url: string;
  metricsText(): Promise<string>;
  groups(): Promise<Array<{ labels: Record<string, string>; last_push_successful: boolean }>>;
}

/** The real Pushgateway on a free loopback port, no persistence, in a temp dir; stopped after the test. */
async function startPushgateway(): Promise<RealPushgateway> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pyats-pushgateway-'));
  const port = await freePort();
  let log = '';
  const proc: ChildProcess = spawn(
    PUSHGATEWAY,
    [`--web.listen-address=127.0.0.1:${port}`, '--persistence.file='],
    { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  proc.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString()));
  cleanups.push(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    const ok = await fetch(`${url}/-/ready`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline || proc.exitCode !== null)
      throw new Error(`pushgateway did not start:\n${log}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    url,
    metricsText: async () => (await fetch(`${url}/metrics`)).text(),
    groups: async () => {
      const reply = (await (await fetch(`${url}/api/v1/metrics`)).json()) as {
        data: Array<{ labels: Record<string, string>; last_push_successful: boolean }>;
      };
      return reply.data;
    },
  };
}

interface StubRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** An HTTP stand-in answering each request with `status(n)` (n counts from 1), or never when it returns 0. */
async function startStub(status: (n: number) => number): Promise<{ url: string; requests: StubRequest[] }> {
  const requests: StubRequest[] = [];
  const held: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      const code = status(requests.length);
      if (code === 0) held.push(res);
      else res.writeHead(code, { 'Content-Type': 'text/plain' }).end(`status ${code}\n`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(async () => {
    for (const res of held) res.destroy();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, requests };
}

function publisher(options: Partial<PushgatewayPublisherOptions> & { url: string }): {
  registry: Registry;
  sink: PushgatewayPublisher;
} {
  const registry = new Registry();
  const sink = new PushgatewayPublisher({
    registry,
    logger: silentLogger(),
    instance: 'ci-runner-1',
    initialBackoffMs: 10,
    maxBackoffMs: 40,
    timeoutMs: 2000,
    ...options,
  });
  cleanups.push(() => sink.shutdown());
  return { registry, sink };
}

describe('groupingSegment', () => {
  it('keeps plain words readable and base64url-encodes the rest', () => {
    expect(groupingSegment('job', 'nightly_v2.1-x~')).toBe('job/nightly_v2.1-x~');
    expect(groupingSegment('job', 'lab/bgp suite')).toBe(
      `job@base64/${Buffer.from('lab/bgp suite').toString('base64url')}`,
    );
    expect(groupingSegment('instance', '')).toBe('instance@base64/=');
    expect(groupingSegment('job', '..')).toBe(`job@base64/${Buffer.from('..').toString('base64url')}`);
    expect(groupingSegment('job', 'ünï')).toBe(`job@base64/${Buffer.from('ünï').toString('base64url')}`);
  });
});

describe('PushgatewayPublisher configuration', () => {
  it('refuses unusable URLs and options at start-up', () => {
    const cases: Array<[Partial<PushgatewayPublisherOptions>, string]> = [
      [{ url: 'not a url' }, 'INVALID_PUSHGATEWAY_URL'],
      [{ url: 'ftp://pushgateway:9091' }, 'INVALID_PUSHGATEWAY_URL'],
      [{ url: 'http://pushgateway:9091/?x=1' }, 'INVALID_PUSHGATEWAY_URL'],
      [{ url: 'http://pushgateway:9091', maxAttempts: 0 }, 'INVALID_PUSHGATEWAY_OPTION'],
      [{ url: 'http://pushgateway:9091', timeoutMs: 1.5 }, 'INVALID_PUSHGATEWAY_OPTION'],
      [{ url: 'http://pushgateway:9091', labelLimits: { maxValues: 0 } }, 'INVALID_LABEL_LIMIT'],
      [{ url: 'http://pushgateway:9091', durationBuckets: [2, 1] }, 'INVALID_BUCKETS'],
    ];
    for (const [options, code] of cases) {
      let thrown: unknown;
      try {
        new PushgatewayPublisher({ registry: new Registry(), logger: silentLogger(), url: '', ...options });
      } catch (err) {
        thrown = err;
      }
      expect(thrown, JSON.stringify(options)).toBeInstanceOf(ConfigError);
      expect((thrown as ConfigError).code).toBe(code);
    }
  });

  it('counts pushes by result from zero', async () => {
    const { registry } = publisher({ url: 'http://127.0.0.1:9' });
    expect(await pushCounts(registry)).toEqual(Object.fromEntries(PUSH_RESULTS.map((r) => [r, 0])));
  });
});

describe('PushgatewayPublisher and a real Pushgateway', () => {
  itPushgateway("pushes a finished job's series grouped by job and instance", async () => {
    const gateway = await startPushgateway();
    const { registry, sink } = publisher({ url: gateway.url });
    // Another job still running: nothing of it is pushed before it ends.
    sink.sectionStarted({ job: jobInfo('smoke'), seqNum: 1, type: 'TestSuite', task: 'none' });
    feedRun(sink, NIGHTLY);
    await sink.forceFlush();

    const groups = await gateway.groups();
    expect(groups.map((g) => g.labels)).toEqual([{ job: 'nightly', instance: 'ci-runner-1' }]);
    expect(groups[0]?.last_push_successful).toBe(true);

    const samples = parseMetrics(await gateway.metricsText());
    const group = { job: 'nightly', instance: 'ci-runner-1' };
    expect(
      sumOf(samples, 'pyats_testcase_results_total', { ...group, testcase: 'tc_bgp', result: 'failed' }),
    ).toBe(1);
    expect(
      sumOf(samples, 'pyats_testcase_last_result', { ...group, testcase: 'tc_ping', result: 'passed' }),
    ).toBe(1);
    expect(sumOf(samples, 'pyats_job_runs_total', { ...group, result: 'failed' })).toBe(1);
    expect(sumOf(samples, 'pyats_job_success_ratio', group)).toBe(0.5);
    expect(sumOf(samples, 'pyats_job_last_completion_timestamp_seconds', group)).toBe(1_700_000_060);
    expect(sumOf(samples, 'pyats_section_duration_seconds_count', { ...group, type: 'Testcase' })).toBe(2);
    expect(samples.some((s) => s.name.startsWith('pyats_') && s.labels['job'] !== 'nightly')).toBe(false);
    // A finished job has no sections in progress, and the pushed text carried no exemplars.
    expect(samples.some((s) => s.name === 'pyats_sections_in_progress')).toBe(false);
    expect(samples.some((s) => s.name === 'push_time_seconds' && s.labels['job'] === 'nightly')).toBe(true);

    expect(await pushCounts(registry)).toEqual({ success: 1, failure: 0, dropped: 0 });
    // The exporter's own registry holds the push counter, not the job's series.
    expect((await registry.getMetricsAsJSON()).map((m) => m.name)).toEqual([
      'pyats_exporter_pushgateway_pushes_total',
    ]);
  });

  itPushgateway(
    'keeps job names with a slash or spaces, and the default instance is the host name',
    async () => {
      const gateway = await startPushgateway();
      const registry = new Registry();
      const sink = new PushgatewayPublisher({ registry, logger: silentLogger(), url: `${gateway.url}/` });
      cleanups.push(() => sink.shutdown());
      feedRun(sink, jobInfo('lab/bgp suite'));
      feedRun(sink, jobInfo('weekly'));
      await sink.forceFlush();
      const groups = (await gateway.groups()).map((g) => g.labels);
      expect(groups).toContainEqual({ job: 'lab/bgp suite', instance: os.hostname() });
      expect(groups).toContainEqual({ job: 'weekly', instance: os.hostname() });
      const samples = parseMetrics(await gateway.metricsText());
      expect(sumOf(samples, 'pyats_job_runs_total', { job: 'lab/bgp suite', result: 'failed' })).toBe(1);
      expect(await pushCounts(registry)).toEqual({ success: 2, failure: 0, dropped: 0 });
    },
  );

  itPushgateway("replaces the group with each run's series, in the order the runs ended", async () => {
    const gateway = await startPushgateway();
    const { sink } = publisher({ url: gateway.url });
    feedRun(sink, jobInfo('nightly', 1), [['tc_old', 'failed']]);
    feedRun(sink, jobInfo('nightly', 2), [['tc_new', 'passed']]);
    await sink.forceFlush();
    const samples = parseMetrics(await gateway.metricsText());
    expect(samples.some((s) => s.labels['testcase'] === 'tc_old')).toBe(false);
    expect(sumOf(samples, 'pyats_testcase_results_total', { testcase: 'tc_new', result: 'passed' })).toBe(1);
    expect(sumOf(samples, 'pyats_job_last_result', { job: 'nightly', result: 'passed' })).toBe(1);
    expect(sumOf(samples, 'pyats_job_runs_total', { job: 'nightly' })).toBe(1);
  });
});

describe('PushgatewayPublisher when the push fails', () => {
  it('counts a failure after bounded retries when nothing listens, and never throws', async () => {
    const port = await freePort();
    const logs = captureLogs();
    const { registry, sink } = publisher({
      url: `http://127.0.0.1:${port}`,
      maxAttempts: 3,
      logger: logs.logger,
    });
    expect(() => feedRun(sink, NIGHTLY)).not.toThrow();
    await expect(sink.forceFlush()).resolves.toBeUndefined();
    expect(await pushCounts(registry)).toEqual({ success: 0, failure: 1, dropped: 0 });
    const retries = logs.lines.filter((l) => l.msg === 'Pushgateway push failed; retrying');
    expect(retries.map((l) => l['attempt'])).toEqual([1, 2]);
    const final = logs.lines.filter(
      (l) => l.msg === 'Pushgateway push failed; the job series were not pushed',
    );
    expect(final).toHaveLength(1);
    expect(final[0]).toMatchObject({ level: 50, job: 'nightly', instance: 'ci-runner-1', attempt: 3 });
    expect(String(final[0]?.['detail'])).toMatch(/ECONNREFUSED/);
  });

  it('retries 5xx and 429, then succeeds; does not retry other 4xx', async () => {
    const flaky = await startStub((n) => (n === 1 ? 503 : n === 2 ? 429 : 202));
    const first = publisher({ url: flaky.url, maxAttempts: 4 });
    feedRun(first.sink, NIGHTLY);
    await first.sink.forceFlush();
    expect(flaky.requests).toHaveLength(3);
    expect(await pushCounts(first.registry)).toEqual({ success: 1, failure: 0, dropped: 0 });

    const refusing = await startStub(() => 400);
    const second = publisher({ url: refusing.url, maxAttempts: 4 });
    feedRun(second.sink, NIGHTLY);
    await second.sink.forceFlush();
    expect(refusing.requests).toHaveLength(1);
    expect(await pushCounts(second.registry)).toEqual({ success: 0, failure: 1, dropped: 0 });

    const down = await startStub(() => 500);
    const third = publisher({ url: down.url, maxAttempts: 2 });
    feedRun(third.sink, NIGHTLY);
    await third.sink.forceFlush();
    expect(down.requests).toHaveLength(2);
    expect(await pushCounts(third.registry)).toEqual({ success: 0, failure: 1, dropped: 0 });
  });

  it('PUTs Prometheus text under the URL path prefix, with basic auth from the URL', async () => {
    const stub = await startStub(() => 200);
    const { sink } = publisher({ url: stub.url.replace('http://', 'http://ci:s%3Acret@') + '/gateway/' });
    feedRun(sink, jobInfo('lab/x'));
    await sink.forceFlush();
    const [req] = stub.requests;
    expect(req?.method).toBe('PUT');
    expect(req?.url).toBe(
      `/gateway/metrics/job@base64/${Buffer.from('lab/x').toString('base64url')}/instance/ci-runner-1`,
    );
    expect(req?.headers['authorization']).toBe(`Basic ${Buffer.from('ci:s:cret').toString('base64')}`);
    expect(req?.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(req?.body).toContain('pyats_job_runs_total{job="lab/x",result="failed"} 1\n');
  });

  it('gives up on an attempt that gets no answer within the timeout', async () => {
    const silent = await startStub(() => 0);
    const { registry, sink } = publisher({ url: silent.url, maxAttempts: 2, timeoutMs: 200 });
    feedRun(sink, NIGHTLY);
    await sink.forceFlush();
    expect(silent.requests).toHaveLength(2);
    expect(await pushCounts(registry)).toEqual({ success: 0, failure: 1, dropped: 0 });
  });

  it('drops and counts a push beyond the pending bound', async () => {
    const silent = await startStub(() => 0);
    const { registry, sink } = publisher({
      url: silent.url,
      maxAttempts: 1,
      timeoutMs: 1000,
      maxPendingPushes: 1,
    });
    feedRun(sink, jobInfo('a'));
    feedRun(sink, jobInfo('b'));
    await sink.forceFlush();
    expect(await pushCounts(registry)).toEqual({ success: 0, failure: 1, dropped: 1 });
  });

  it('makes no further attempt once shutting down, so retries cannot outlast the exit guard', async () => {
    const silent = await startStub(() => 0);
    const { registry, sink } = publisher({ url: silent.url, maxAttempts: 3, timeoutMs: 300 });
    feedRun(sink, NIGHTLY);
    for (let i = 0; i < 200 && silent.requests.length === 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await sink.shutdown();
    expect(silent.requests).toHaveLength(1);
    expect(await pushCounts(registry)).toEqual({ success: 0, failure: 1, dropped: 0 });
  });

  it('stops waiting out backoff on shutdown, so a down Pushgateway cannot hold the exit', async () => {
    const port = await freePort();
    const logs = captureLogs();
    const { registry, sink } = publisher({
      url: `http://127.0.0.1:${port}`,
      maxAttempts: 3,
      initialBackoffMs: 600_000,
      maxBackoffMs: 600_000,
      logger: logs.logger,
    });
    feedRun(sink, NIGHTLY);
    for (let i = 0; i < 200 && !logs.lines.some((l) => l.msg === 'Pushgateway push failed; retrying'); i++) {
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    await sink.shutdown();
    expect(await pushCounts(registry)).toEqual({ success: 0, failure: 1, dropped: 0 });
  });
});

// Enable when wired: needs `--pushgateway` and `--pushgateway-instance` in src/config.ts and the publisher
// in src/daemon.ts's fan-out.
describe('pyats-exporter --pushgateway', () => {
  itPushgateway(
    'pushes each job when it ends, under the pyATS job name and the given instance',
    async () => {
      const gateway = await startPushgateway();
      const dir = await mkdtemp(path.join(os.tmpdir(), 'pyats-push-e2e-'));
      cleanups.push(() => rm(dir, { recursive: true, force: true }));
      const socket = path.join(dir, 'reporter.sock');
      const exporter = await runExporter([
        '--reporter-socket',
        socket,
        '--listen',
        '127.0.0.1:0',
        '--pushgateway',
        gateway.url,
        '--pushgateway-instance',
        'ci-e2e',
      ]);
      cleanups.push(async () => {
        await exporter.stop();
      });
      const standin = await startStandin({ socket, jobId: 'e2e_push' });
      cleanups.push(() => standin.kill());
      const manifest = await standin.manifest();

      const deadline = Date.now() + 20_000;
      while (!(await gateway.groups()).some((g) => g.labels['job'] === 'e2e_push')) {
        if (Date.now() > deadline) throw new Error('the job was never pushed');
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect((await gateway.groups()).map((g) => g.labels)).toEqual([
        { job: 'e2e_push', instance: 'ci-e2e' },
      ]);
      const pushed = parseMetrics(await gateway.metricsText());
      expect(
        sumOf(pushed, 'pyats_job_runs_total', {
          job: 'e2e_push',
          instance: 'ci-e2e',
          result: manifest.job_result,
        }),
      ).toBe(1);
      const own = parseMetrics(await exporter.scrape());
      expect(sumOf(own, 'pyats_exporter_pushgateway_pushes_total', { result: 'success' })).toBe(1);
    },
    60_000,
  );
});
