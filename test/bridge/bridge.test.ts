// The Python bridge end to end: the CPython reporter stand-in → the stub pyats ReportClient (real pickles over
// the real socket) → the bridge (as the documented easypy plugin, or as the script) → the exporter's NDJSON
// ingest (Unix socket or HTTP) → pipeline → spans and metrics, checked against the stand-in's manifest.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { ciContext } from '../../src/events/ci.js';
import { listen } from '../../src/http/server.js';
import { createHttpIngest } from '../../src/ingest/http.js';
import { IngestSocketServer } from '../../src/ingest/socket.js';
import { silentLogger } from '../../src/log.js';
import { startStandin, type JobManifest } from '../helpers/standin.js';
import { createCore, until, type Core } from '../ingest/inprocess.js';
import { BRIDGE_DIR, STUBS_DIR, documentedPluginConfig, runBridgeScript, runEasypyJob } from './run.js';

const JOB_ZONE = 'Asia/Kolkata';
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'bridge-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function ingestSocket(core: Core, dir: string): Promise<IngestSocketServer> {
  const server = new IngestSocketServer({
    path: join(dir, 'ingest.sock'),
    target: core.pipeline,
    maxLineBytes: 1 << 20,
    idleTimeoutMs: 60_000,
    logger: silentLogger(),
  });
  await server.listen();
  cleanups.push(() => server.close());
  return server;
}

async function httpIngest(
  core: Core,
  token?: string,
  port = 0,
): Promise<{ url: string; close(): Promise<void> }> {
  const ingest = createHttpIngest({
    target: core.pipeline,
    ...(token !== undefined ? { token } : {}),
    maxBodyBytes: 1 << 24,
    idleTimeoutMs: 60_000,
    logger: silentLogger(),
  });
  const app = express();
  app.use(ingest.router);
  const server = await listen(app, { host: '127.0.0.1', port });
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    ingest.close();
    await server.close();
  };
  cleanups.push(close);
  return { url: `http://127.0.0.1:${server.address.port}`, close };
}

/** The spans of `core` are exactly the completed sections of the manifest (ids linked, times, results). */
function checkJob(core: Core, job: JobManifest): void {
  const spans = core.summaries();
  const completed = job.sections.filter((s) => s.completed);
  expect(spans).toHaveLength(completed.length);
  expect(new Set(spans.map((s) => s.traceId)).size).toBe(1);
  const bySeq = new Map(spans.map((s) => [s.seqNum, s]));
  for (const section of completed) {
    const span = bySeq.get(section.seq_num);
    expect(span, `seq_num ${section.seq_num}`).toBeDefined();
    if (!span) continue;
    expect(span.type).toBe(section.type);
    expect(span.result).toBe(section.result);
    expect(span.parentSpanId).toBe(
      section.parent_seq_num === null ? undefined : bySeq.get(section.parent_seq_num)?.spanId,
    );
    // Microsecond times survive pickle → datetime → ISO with offset → JSON → normalizer exactly.
    expect(span.start[0] * 1e6 + Math.round(span.start[1] / 1e3)).toBe(section.start_us);
    expect(span.end[0] * 1e6 + Math.round(span.end[1] / 1e3)).toBe(section.stop_us);
    expect(span.status === 2).toBe(['failed', 'errored', 'aborted'].includes(section.result));
  }
  expect(core.rejected.size).toBe(0);
}

describe('bridge unit tests (python3 -m unittest)', () => {
  it('pass', async () => {
    const { stdout, stderr } = await promisify(execFile)(
      'python3',
      ['-W', 'error::ResourceWarning', '-m', 'unittest', 'discover', '-s', 'test/bridge', '-p', 'test_*.py'],
      {
        env: {
          PATH: process.env['PATH'],
          PYTHONPATH: `${BRIDGE_DIR}:${STUBS_DIR}`,
          PYTHONDONTWRITEBYTECODE: '1',
          TZ: JOB_ZONE,
        },
        timeout: 120_000,
      },
    );
    expect(`${stdout}${stderr}`).toMatch(/\nOK\n?$/);
  }, 150_000);
});

describe("the bridge's CI variables", () => {
  // The bridge sends only the variables it lists (never the whole environment): the exporter must make the
  // same CI context of them as of the whole environment, for each CI it knows.
  it('are all the exporter reads, for GitHub Actions, GitLab CI and Jenkins', async () => {
    const common = {
      TRACEPARENT: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      CI: 'true',
      HOME: '/home/ci',
      PATH: '/usr/bin',
    };
    const environments = [
      {
        GITHUB_ACTIONS: 'true',
        GITHUB_SERVER_URL: 'https://github.example.com',
        GITHUB_REPOSITORY: 'lab/t',
        GITHUB_RUN_ID: '42',
        GITHUB_RUN_ATTEMPT: '2',
        GITHUB_WORKFLOW: 'nightly',
        GITHUB_JOB: 'pyats',
        GITHUB_RUN_NUMBER: '7',
        GITHUB_SHA: 'abc',
        GITHUB_REF: 'refs/heads/main',
        GITHUB_TOKEN: 'secret',
      },
      {
        GITLAB_CI: 'true',
        CI_PIPELINE_NAME: 'nightly',
        CI_PROJECT_PATH: 'lab/t',
        CI_PIPELINE_ID: '77',
        CI_JOB_URL: 'https://gitlab.example.com/lab/t/-/jobs/9',
        CI_JOB_ID: '9',
        CI_JOB_NAME: 'pyats',
        CI_PIPELINE_URL: 'https://gitlab.example.com/lab/t/-/pipelines/77',
        CI_PROJECT_URL: 'https://x',
        CI_COMMIT_SHA: 'abc',
        CI_JOB_TOKEN: 'secret',
      },
      {
        JENKINS_URL: 'https://jenkins.lab/',
        BUILD_URL: 'https://jenkins.lab/job/n/12/',
        JOB_NAME: 'n',
        BUILD_NUMBER: '12',
        BUILD_ID: '12',
        BUILD_TAG: 'jenkins-n-12',
        JOB_URL: 'https://jenkins.lab/job/n/',
        NODE_NAME: 'lab1',
        EXECUTOR_NUMBER: '0',
        WORKSPACE: '/w',
      },
    ].map((env) => ({ ...common, ...env }));
    const code =
      'import json, sys; from pyats_exporter_bridge.context import ci_variables; ' +
      'print(json.dumps([ci_variables(e) for e in json.load(sys.stdin)]))';
    const run = promisify(execFile)('python3', ['-c', code], {
      env: { PATH: process.env['PATH'], PYTHONPATH: BRIDGE_DIR, PYTHONDONTWRITEBYTECODE: '1' },
    });
    run.child.stdin?.end(JSON.stringify(environments));
    const sent = JSON.parse((await run).stdout) as Record<string, string>[];
    for (const [i, env] of environments.entries()) {
      const whole = ciContext(new Map(Object.entries(env)));
      expect(whole?.system).toBeDefined();
      expect(ciContext(new Map(Object.entries(sent[i]!)))).toEqual(whole);
      for (const secret of ['GITHUB_TOKEN', 'CI_JOB_TOKEN', 'HOME', 'PATH'])
        expect(sent[i]).not.toHaveProperty(secret);
    }
  });
});

describe('bridge as the documented easypy plugin', () => {
  it('forwards a whole job over the ingest socket, exactly', async () => {
    const dir = tempDir();
    const runinfo = join(dir, 'runinfo');
    mkdirSync(runinfo);
    const core = createCore({ zone: 'UTC' });
    const ingest = await ingestSocket(core, dir);
    const standin = await startStandin({
      socket: join(runinfo, 'reporter.sock'),
      tz: JOB_ZONE,
      jobId: 'plugin_job',
      seed: 3,
      results: 'mixed',
      startEpoch: 1_715_000_000.654321,
    });
    cleanups.push(() => standin.kill());
    const job = runEasypyJob({
      dir,
      runinfo,
      tz: JOB_ZONE,
      jobUid: 'plugin_job.2024',
      config: documentedPluginConfig({ target: `unix:${ingest.path}` }),
    });
    cleanups.push(() => job.kill());
    await job.waitFor(/PRE_JOB_DONE/);
    const manifest = await standin.manifest();
    job.postJob();
    expect(await job.exited).toBe(0);
    expect(job.output()).not.toMatch(/PLUGIN_ERROR|Traceback/);
    await until('the stream to end', () =>
      ingest.openStreams === 0 && core.tracker.stats().streams === 0 ? true : undefined,
    );
    checkJob(core, manifest);
    expect(core.received.get('ndjson_socket')).toBe(manifest.events_sent);
  });

  it('keeps forwarding after post_job until the reporter closes, so the suite still stops', async () => {
    const dir = tempDir();
    const runinfo = join(dir, 'runinfo');
    mkdirSync(runinfo);
    const core = createCore();
    const ingest = await ingestSocket(core, dir);
    const standin = await startStandin({
      socket: join(runinfo, 'reporter.sock'),
      tz: JOB_ZONE,
      jobId: 'late_stop_job',
      eventDelayMs: 25,
      startEpoch: 1_715_100_000,
    });
    cleanups.push(() => standin.kill());
    const job = runEasypyJob({
      dir,
      runinfo,
      tz: JOB_ZONE,
      config: documentedPluginConfig({ target: ingest.path, linger: 60 }),
    });
    cleanups.push(() => job.kill());
    await job.waitFor(/PRE_JOB_DONE/);
    await until('some events', () => ((core.received.get('ndjson_socket') ?? 0) >= 5 ? true : undefined));
    // post_job comes while the job's events (its suite's stop among them) are still to come.
    job.postJob();
    await job.waitFor(/POST_JOB_DONE/);
    const manifest = await standin.manifest();
    expect(await job.exited).toBe(0);
    await until('the stream to end', () => (ingest.openStreams === 0 ? true : undefined));
    checkJob(core, manifest);
    expect(core.summaries().find((s) => s.type === 'TestSuite')?.result).toBe(manifest.job_result);
  });

  it('never fails the job when the exporter is not there', async () => {
    const dir = tempDir();
    const runinfo = join(dir, 'runinfo');
    mkdirSync(runinfo);
    const standin = await startStandin({ socket: join(runinfo, 'reporter.sock'), jobId: 'lonely_job' });
    cleanups.push(() => standin.kill());
    const job = runEasypyJob({
      dir,
      runinfo,
      tz: 'UTC',
      config: documentedPluginConfig({
        target: `unix:${join(dir, 'nobody.sock')}`,
        drain_timeout: 1,
        linger: 5,
      }),
    });
    cleanups.push(() => job.kill());
    await job.waitFor(/PRE_JOB_DONE/);
    await standin.manifest();
    job.postJob();
    expect(await job.exited).toBe(0);
    expect(job.output()).not.toMatch(/PLUGIN_ERROR|Traceback/);
    expect(job.output()).toMatch(/pyats-exporter unreachable/);
    expect(job.output()).toMatch(/events not delivered/);
  });
});

describe('bridge as a script', () => {
  it('posts a job to HTTP ingest with a token, buffering until the exporter comes up', async () => {
    const dir = tempDir();
    const core = createCore({ zone: 'America/New_York' });
    // Find a free port, then leave it closed while the job starts.
    const probe = await httpIngest(core);
    const port = Number(new URL(probe.url).port);
    await probe.close();
    const standin = await startStandin({
      tz: JOB_ZONE,
      jobId: 'script_job',
      seed: 5,
      startEpoch: 1_715_200_000,
    });
    cleanups.push(() => standin.kill());
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, 's3cret\n');
    const bridge = runBridgeScript(
      [
        '--reporter-socket',
        standin.path,
        '--target',
        `http://127.0.0.1:${port}`,
        '--token-file',
        tokenFile,
        '--stream',
        'lab:script_job',
      ],
      JOB_ZONE,
    );
    cleanups.push(() => bridge.kill());
    const manifest = await standin.manifest();
    await bridge.waitFor(/pyats-exporter unreachable/);
    await httpIngest(core, 's3cret', port);
    expect(await bridge.exited).toBe(0);
    expect(bridge.output()).toMatch(/\d+ events seen, \d+ sent, 0 dropped, 0 refused/);
    checkJob(core, manifest);
    expect(core.received.get('ndjson_http')).toBe(manifest.events_sent);
  });

  it('reports a wrong token as refused and still exits 0', async () => {
    const dir = tempDir();
    const core = createCore();
    const http = await httpIngest(core, 'right');
    const standin = await startStandin({ jobId: 'bad_token_job' });
    cleanups.push(() => standin.kill());
    writeFileSync(join(dir, 'token'), 'wrong');
    const bridge = runBridgeScript(
      ['--reporter-socket', standin.path, '--target', http.url, '--token-file', join(dir, 'token')],
      'UTC',
    );
    cleanups.push(() => bridge.kill());
    expect(await bridge.exited).toBe(0);
    expect(bridge.output()).toMatch(/refused \d+ events: .*HTTP 401/);
    expect(core.spans).toHaveLength(0);
  });
});
