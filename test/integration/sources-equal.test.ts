// Done-when of the ingest issue: one pyATS job streamed (a) through the Python bridge, (b) through HTTP ingest,
// (c) through the native reporter socket, and (d) replayed from its captured NDJSON gives the same spans (ids,
// parents, times, status) and the same metric totals. The first suite builds the exporter's core in-process
// as src/daemon.ts does; the second runs the real binary with the flags the ingest modules propose.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { listen } from '../../src/http/server.js';
import { CaptureWriter } from '../../src/ingest/capture.js';
import { createHttpIngest } from '../../src/ingest/http.js';
import { IngestSocketServer } from '../../src/ingest/socket.js';
import { silentLogger } from '../../src/log.js';
import { ReporterSubscriber } from '../../src/reporter/subscriber.js';
import { unpickle } from '../../src/python/unpickle.js';
import { documentedPluginConfig, runBridgeScript, runEasypyJob } from '../bridge/run.js';
import { parseMetrics, runCli, runExporter, type Sample } from '../helpers/exporter-process.js';
import { startOtlpReceiver, type DecodedSpan } from '../helpers/otlp-receiver.js';
import { startStandin, type JobManifest, type StandinOptions } from '../helpers/standin.js';
import { TestClock, createCore, replayCapture, until, type Core } from '../ingest/inprocess.js';

const JOB_ZONE = 'Asia/Kolkata';
const JOB: StandinOptions = {
  tz: JOB_ZONE,
  jobId: 'equal_job',
  seed: 11,
  // As pyATS 23.2 pickles them: TestResult objects (the bridge's stub pyats loads those, as real pyATS does).
  results: 'testresult',
  times: 'datetime',
  startEpoch: 1_716_000_000.250125,
};

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sources-equal-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function openCapture(path: string): Promise<CaptureWriter> {
  const capture = new CaptureWriter({ path, version: 'test', logger: silentLogger() });
  await capture.open();
  return capture;
}

/** (c) The native source, wired as src/daemon.ts wires it. */
async function viaReporterSocket(core: Core, dir: string): Promise<JobManifest> {
  const socket = join(dir, 'native', 'reporter.sock');
  mkdirSync(join(dir, 'native'));
  const disconnected: string[] = [];
  const subscriber = new ReporterSubscriber({
    path: socket,
    frameFormat: 'chunked',
    maxFrameBytes: 64 << 20,
    attach: { timeoutMs: 5000, maxSections: 100_000 },
    pollIntervalMs: 50,
    backoff: { initialMs: 50, maxMs: 500 },
    decode: (frame) => unpickle(frame),
    logger: silentLogger(),
    handlers: {
      connected: () => {},
      event: (conn, value) => core.pipeline.ingest(`reporter:${conn.id}`, 'reporter_socket', value),
      frameRejected: (conn, code, detail) =>
        core.pipeline.reject(`reporter:${conn.id}`, 'reporter_socket', code, detail),
      disconnected: (conn) => {
        core.pipeline.endStream(`reporter:${conn.id}`);
        disconnected.push(conn.id);
      },
    },
  });
  subscriber.start();
  cleanups.push(() => subscriber.stop());
  const standin = await startStandin({ ...JOB, socket });
  cleanups.push(() => standin.kill());
  const manifest = await standin.manifest();
  await until('the reporter connection to end', () => (disconnected.length > 0 ? true : undefined));
  await subscriber.stop();
  return manifest;
}

/** (a) The bridge as the documented easypy plugin, into the ingest socket. */
async function viaBridgePlugin(core: Core, dir: string): Promise<JobManifest> {
  const runinfo = join(dir, 'plugin-runinfo');
  mkdirSync(runinfo);
  const ingest = new IngestSocketServer({
    path: join(dir, 'ingest.sock'),
    target: core.pipeline,
    maxLineBytes: 1 << 20,
    idleTimeoutMs: 0,
    logger: silentLogger(),
  });
  await ingest.listen();
  cleanups.push(() => ingest.close());
  const standin = await startStandin({ ...JOB, socket: join(runinfo, 'reporter.sock') });
  cleanups.push(() => standin.kill());
  const job = runEasypyJob({
    dir,
    runinfo,
    tz: JOB_ZONE,
    config: documentedPluginConfig({ target: `unix:${ingest.path}` }),
  });
  cleanups.push(() => job.kill());
  await job.waitFor(/PRE_JOB_DONE/);
  const manifest = await standin.manifest();
  job.postJob();
  expect(await job.exited).toBe(0);
  await until('the bridge stream to end', () =>
    ingest.openStreams === 0 && core.tracker.stats().streams === 0 ? true : undefined,
  );
  await ingest.close();
  return manifest;
}

/** (b) HTTP ingest, fed by the bridge script. */
async function viaHttpIngest(core: Core): Promise<JobManifest> {
  const ingest = createHttpIngest({
    target: core.pipeline,
    token: 'equal-token',
    maxBodyBytes: 1 << 24,
    idleTimeoutMs: 0,
    logger: silentLogger(),
  });
  const app = express();
  app.use(ingest.router);
  const server = await listen(app, { host: '127.0.0.1', port: 0 });
  cleanups.push(() => server.close());
  const standin = await startStandin(JOB);
  cleanups.push(() => standin.kill());
  const bridge = runBridgeScript(
    [
      '--reporter-socket',
      standin.path,
      '--target',
      `http://127.0.0.1:${server.address.port}/api/v1/events`,
      '--batch-size',
      '7',
    ],
    JOB_ZONE,
    { PYATS_EXPORTER_TOKEN: 'equal-token' },
  );
  cleanups.push(() => bridge.kill());
  const manifest = await standin.manifest();
  expect(await bridge.exited).toBe(0);
  expect(ingest.openStreams()).toBe(0);
  ingest.close();
  return manifest;
}

describe('one job, every way in: same spans, same metrics (in-process core)', () => {
  it('bridge → socket, bridge → HTTP, native socket, and both captures replayed agree exactly', async () => {
    const dir = tempDir();
    const nativeCapturePath = join(dir, 'native.ndjson');
    const bridgeCapturePath = join(dir, 'bridge.ndjson');

    const nativeCapture = await openCapture(nativeCapturePath);
    const native = createCore({ zone: JOB_ZONE, capture: nativeCapture });
    const manifest = await viaReporterSocket(native, dir);
    native.tracker.endAll();
    await nativeCapture.close();

    const bridgeCapture = await openCapture(bridgeCapturePath);
    const bridge = createCore({ zone: JOB_ZONE, capture: bridgeCapture });
    const bridgeManifest = await viaBridgePlugin(bridge, dir);
    bridge.tracker.endAll();
    await bridgeCapture.close();

    const http = createCore({ zone: JOB_ZONE });
    const httpManifest = await viaHttpIngest(http);
    http.tracker.endAll();

    const replays = [nativeCapturePath, bridgeCapturePath].map((path) => {
      const clock = new TestClock(0);
      // Another zone on purpose: captured times are absolute.
      const replay = createCore({ zone: 'America/Chicago', now: clock.now });
      replayCapture(readFileSync(path, 'utf8'), replay, clock);
      return replay;
    });

    // The stand-in streamed the same job each time.
    expect(bridgeManifest.sections).toEqual(manifest.sections);
    expect(httpManifest.sections).toEqual(manifest.sections);

    const expected = native.summaries();
    expect(expected).toHaveLength(manifest.sections.length);
    expect(new Set(expected.map((s) => s.result))).toEqual(new Set(manifest.sections.map((s) => s.result)));
    for (const [name, core] of [
      ['bridge → ingest socket', bridge],
      ['bridge → HTTP ingest', http],
      ['replay of the native capture', replays[0]!],
      ['replay of the bridge capture', replays[1]!],
    ] as const) {
      expect(core.summaries(), name).toEqual(expected);
      expect(await core.metricLines(), name).toEqual(await native.metricLines());
      expect(core.rejected.size, name).toBe(0);
    }
  });
});

describe('one job, every way in: same spans, same metrics (the built exporter)', () => {
  const spanKey = (s: DecodedSpan) =>
    [s.traceId, s.spanId, s.parentSpanId, s.name, s.startTimeUnixNano, s.endTimeUnixNano, s.status.code].join(
      ' ',
    );

  function totals(samples: Sample[]): string[] {
    return samples
      .filter((s) => s.name.startsWith('pyats_') && !s.name.startsWith('pyats_exporter_'))
      .filter((s) => !s.name.endsWith('_timestamp_seconds'))
      .map((s) => `${s.name}${JSON.stringify(Object.entries(s.labels).sort())} ${s.value}`)
      .sort();
  }

  async function exporterRun(
    args: string[],
    feed: (dir: string) => Promise<JobManifest>,
    dir: string,
  ): Promise<{ spans: string[]; metrics: string[]; manifest: JobManifest }> {
    const receiver = await startOtlpReceiver();
    cleanups.push(() => receiver.close());
    const exporter = await runExporter(['--listen', '127.0.0.1:0', '--timezone', JOB_ZONE, ...args], {
      OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_BSP_SCHEDULE_DELAY: '100',
    });
    cleanups.push(() => exporter.stop());
    const manifest = await feed(dir);
    const expectedSpans = manifest.sections.filter((s) => s.completed).length;
    await receiver.waitForSpans(expectedSpans);
    const metrics = totals(parseMetrics(await exporter.scrape()));
    expect((await exporter.stop()).code).toBe(0);
    return { spans: receiver.spans.map(spanKey).sort(), metrics, manifest };
  }

  it('bridge, HTTP ingest, native socket and replay of the capture agree', async () => {
    const dir = tempDir();
    const capture = join(dir, 'capture.ndjson');
    const ingestSocket = join(dir, 'ingest.sock');
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, 'equal-token\n');
    const runinfo = join(dir, 'runinfo');
    mkdirSync(runinfo);
    const reporterSocket = join(runinfo, 'reporter.sock');

    const native = await exporterRun(
      ['--reporter-socket', reporterSocket, '--capture', capture],
      async () => {
        const standin = await startStandin({ ...JOB, socket: reporterSocket });
        cleanups.push(() => standin.kill());
        return standin.manifest();
      },
      dir,
    );

    const viaPlugin = await exporterRun(
      ['--ingest-socket', ingestSocket],
      async () => {
        const standin = await startStandin({ ...JOB, socket: reporterSocket });
        cleanups.push(() => standin.kill());
        const job = runEasypyJob({
          dir,
          runinfo,
          tz: JOB_ZONE,
          config: documentedPluginConfig({ target: `unix:${ingestSocket}` }),
        });
        cleanups.push(() => job.kill());
        await job.waitFor(/PRE_JOB_DONE/);
        const manifest = await standin.manifest();
        job.postJob();
        expect(await job.exited).toBe(0);
        return manifest;
      },
      dir,
    );

    let httpUrl = '';
    const viaHttp = await (async () => {
      const receiver = await startOtlpReceiver();
      cleanups.push(() => receiver.close());
      const exporter = await runExporter(
        [
          '--listen',
          '127.0.0.1:0',
          '--timezone',
          JOB_ZONE,
          '--ingest-http',
          '--ingest-token-file',
          tokenFile,
        ],
        {
          OTEL_TRACES_EXPORTER: 'otlp',
          OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
          OTEL_BSP_SCHEDULE_DELAY: '100',
        },
      );
      cleanups.push(() => exporter.stop());
      httpUrl = exporter.url;
      const standin = await startStandin(JOB);
      cleanups.push(() => standin.kill());
      const bridge = runBridgeScript(
        ['--reporter-socket', standin.path, '--target', httpUrl, '--token-file', tokenFile],
        JOB_ZONE,
      );
      cleanups.push(() => bridge.kill());
      const manifest = await standin.manifest();
      expect(await bridge.exited).toBe(0);
      await receiver.waitForSpans(manifest.sections.length);
      const metrics = totals(parseMetrics(await exporter.scrape()));
      expect((await exporter.stop()).code).toBe(0);
      return { spans: receiver.spans.map(spanKey).sort(), metrics };
    })();

    const replayReceiver = await startOtlpReceiver();
    cleanups.push(() => replayReceiver.close());
    const replay = await runCli(['replay', capture], {
      OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_ENDPOINT: replayReceiver.url,
    });
    expect(replay.code).toBe(0);
    const replayed = replayReceiver.spans.map(spanKey).sort();

    expect(native.spans).toHaveLength(native.manifest.sections.length);
    expect(viaPlugin.spans).toEqual(native.spans);
    expect(viaHttp.spans).toEqual(native.spans);
    expect(replayed).toEqual(native.spans);
    expect(viaPlugin.metrics).toEqual(native.metrics);
    expect(viaHttp.metrics).toEqual(native.metrics);
  });
});
