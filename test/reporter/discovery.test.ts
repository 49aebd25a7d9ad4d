// SocketDiscovery against real directory trees and CPython reporter stand-ins: jobs appear and disappear, every
// event reaches a real pipeline, subscribers are released, leftover sockets are ignored, and an old tree stays cheap.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { SectionTracker } from '../../src/events/tracker.js';
import { resolveZone } from '../../src/events/timezone.js';
import type { FinishedSection, JobSummary, SectionSink, StartedSection } from '../../src/events/types.js';
import { silentLogger } from '../../src/log.js';
import { Pipeline } from '../../src/pipeline.js';
import { SocketDiscovery, type SocketDiscoveryOptions } from '../../src/reporter/discovery.js';
import { ReporterSubscriber } from '../../src/reporter/subscriber.js';
import { unpickle } from '../../src/python/unpickle.js';
import { ExporterHealth } from '../../src/telemetry/health.js';
import { parseMetrics, runExporter, sumOf } from '../helpers/exporter-process.js';
import { startStandin, type JobManifest, type Standin } from '../helpers/standin.js';

class RecordingSink implements SectionSink {
  finished: FinishedSection[] = [];
  jobs: JobSummary[] = [];
  sectionStarted(_section: StartedSection): void {}
  sectionFinished(section: FinishedSection): void {
    this.finished.push(section);
  }
  jobFinished(summary: JobSummary): void {
    this.jobs.push(summary);
  }
  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

/** Discovery wired the way daemon.ts wires it: real subscribers feeding a real pipeline, health and tracker. */
function harness(roots: string[], options: Partial<SocketDiscoveryOptions> = {}) {
  const registry = new Registry();
  const health = new ExporterHealth({ registry });
  const sink = new RecordingSink();
  const logger = silentLogger();
  const tracker = new SectionTracker({ sink, logger });
  const pipeline = new Pipeline({
    normalize: { zone: resolveZone('UTC'), maxStringLength: 4096 },
    tracker,
    health,
    logger,
  });
  const created: string[] = [];
  const stopped: string[] = [];
  const subscribers: ReporterSubscriber[] = [];
  const discovery = new SocketDiscovery({
    roots,
    logger,
    health,
    scanIntervalMs: 100,
    fullScanIntervalMs: 1_000,
    staleAfterMs: 10_000,
    detachGraceMs: 5_000,
    ...options,
    createSubscriber: (path, activity) => {
      created.push(path);
      const subscriber = new ReporterSubscriber({
        path,
        frameFormat: 'chunked',
        maxFrameBytes: 1 << 20,
        attach: { timeoutMs: 5000, maxSections: 10_000 },
        pollIntervalMs: 50,
        backoff: { initialMs: 50, maxMs: 200 },
        decode: (frame) => unpickle(frame),
        logger,
        handlers: {
          connected: (conn) => {
            activity.connected();
            health.connectionOpened(conn.path);
          },
          event: (conn, value) => pipeline.ingest(`reporter:${conn.id}`, 'reporter_socket', value),
          frameRejected: (conn, code, detail) =>
            pipeline.reject(`reporter:${conn.id}`, 'reporter_socket', code, detail),
          disconnected: (conn, reason) => {
            activity.disconnected();
            health.connectionClosed(conn.path, reason);
            pipeline.endStream(`reporter:${conn.id}`);
          },
        },
      });
      subscribers.push(subscriber);
      return {
        start: () => subscriber.start(),
        stop: async () => {
          stopped.push(path);
          await subscriber.stop();
        },
      };
    },
  });
  const reporterUpSeries = async (): Promise<string[]> => {
    const metric = await registry.getSingleMetric('pyats_exporter_reporter_up')?.get();
    return (metric?.values ?? []).map((v) => String(v.labels['socket']));
  };
  return { discovery, sink, tracker, created, stopped, subscribers, reporterUpSeries };
}

async function until<T>(what: string, probe: () => T | undefined | false, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The finished sections of one job match what the stand-in sent: every section, parents, results, times. */
function expectJob(sink: RecordingSink, job: JobManifest): void {
  // Repeated runs share a job id; the suite's start time tells their traces apart.
  const suite = job.sections.find((s) => s.parent_seq_num === null);
  const root = sink.finished.find(
    (s) =>
      s.job.jobId === job.job_id &&
      s.type === 'TestSuite' &&
      Math.abs(s.startTime - (suite?.start_ms ?? 0)) < 1,
  );
  expect(root, `TestSuite span of ${job.job_id} #${job.run_index}`).toBeDefined();
  const traceId = root?.job.traceId;
  const sections = sink.finished.filter((s) => s.job.traceId === traceId);
  const completed = job.sections.filter((s) => s.completed);
  expect(completed.length).toBe(job.sections.length);
  expect(sections.map((s) => s.seqNum).sort((a, b) => a - b)).toEqual(completed.map((s) => s.seq_num));
  const bySeq = new Map(sections.map((s) => [s.seqNum, s]));
  for (const want of completed) {
    const got = bySeq.get(want.seq_num) as FinishedSection;
    expect(got.type).toBe(want.type);
    expect(got.result.value).toBe(want.result);
    expect(got.incomplete).toBe(false);
    expect(got.orphan).toBe(false);
    expect(got.parentSeqNum ?? null).toBe(want.parent_seq_num);
    expect(Math.abs(got.startTime - want.start_ms)).toBeLessThan(1);
    expect(Math.abs(got.stopTime - want.stop_ms)).toBeLessThan(1);
  }
  const summaries = sink.jobs.filter((j) => j.job.traceId === traceId);
  expect(summaries).toHaveLength(1);
  expect(summaries[0]?.result).toBe(job.job_result);
  expect(summaries[0]?.incomplete).toBe(false);
}

const OLD = new Date(Date.UTC(2023, 0, 1));

/** A pyATS-like history: `count` finished runinfo directories and archive zips, all with old mtimes. */
function oldHistory(root: string, count: number): void {
  const runinfo = join(root, 'runinfo');
  const archive = join(root, 'archive', '23-01');
  mkdirSync(runinfo, { recursive: true });
  mkdirSync(archive, { recursive: true });
  for (let i = 0; i < count; i++) {
    const dir = join(runinfo, `old_job_${i}.2023Jan01_00:00:${String(i).padStart(5, '0')}`);
    mkdirSync(join(dir, 'plugins'), { recursive: true });
    writeFileSync(join(dir, 'results.json'), '{}');
    writeFileSync(join(dir, 'TaskLog.Task-1'), 'log');
    utimesSync(join(dir, 'plugins'), OLD, OLD);
    utimesSync(dir, OLD, OLD);
    if (i % 10 === 0) writeFileSync(join(archive, `old_job_${i}.zip`), 'PK');
  }
  utimesSync(archive, OLD, OLD);
  utimesSync(join(root, 'archive'), OLD, OLD);
  utimesSync(runinfo, OLD, OLD);
}

/** A socket file whose server is gone, as a crashed job leaves behind (CPython does not unlink on close). */
function leftoverSocket(path: string): void {
  const script = 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.close()';
  const out = spawnSync('python3', ['-c', script, path], { encoding: 'utf8' });
  expect(out.status, out.stderr).toBe(0);
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function tempRoot(): string {
  const root = mkdtempSync(join(tmpdir(), 'discovery-'));
  cleanups.push(() => rmSync(root, { recursive: true, force: true }));
  return root;
}

function track(standin: Standin): Standin {
  cleanups.push(() => standin.kill());
  return standin;
}

describe('SocketDiscovery', () => {
  it('follows concurrent stand-in jobs started and stopped in a runinfo tree, then releases them', async () => {
    const root = tempRoot();
    oldHistory(root, 50);
    const h = harness([root]);
    cleanups.push(() => h.discovery.stop());
    h.discovery.start();

    // A socket below maxDepth and a socket behind a symlinked directory must never be picked up.
    const tooDeep = join(root, 'a', 'b', 'c', 'd', 'e', 'reporter.sock');
    mkdirSync(join(root, 'a', 'b', 'c', 'd', 'e'), { recursive: true });
    const deepServer = net.createServer().listen(tooDeep);
    cleanups.push(() => new Promise<void>((resolve) => deepServer.close(() => resolve())));
    const elsewhere = tempRoot();
    const hidden = net.createServer().listen(join(elsewhere, 'reporter.sock'));
    cleanups.push(() => new Promise<void>((resolve) => hidden.close(() => resolve())));
    symlinkSync(elsewhere, join(root, 'runinfo', 'linked_dir'));

    const start = (i: number, extra: Parameters<typeof startStandin>[0] = {}): Promise<Standin> => {
      const dir = join(root, 'runinfo', `job_${i}.2024May01_12:00:${String(i).padStart(2, '0')}.000000`);
      mkdirSync(dir, { recursive: true });
      const socket = join(dir, 'reporter.sock');
      // Odd jobs get the long-path treatment: the real socket in a temp dir, symlinked into runinfo.
      const where = i % 2 === 1 ? { symlinkFrom: socket } : { socket };
      return startStandin({
        ...where,
        jobId: `job_${i}`,
        seed: i + 1,
        startEpoch: 1_714_564_800 + i * 3600,
        eventDelayMs: 3,
        linger: 0.3,
        ...extra,
      }).then(track);
    };

    // Jobs start while discovery runs, in two waves, one of them under a nested user tree at the depth limit.
    const first = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => start(i)));
    await until('first wave attached', () => h.discovery.sockets().length >= 1);
    const nestedDir = join(root, 'users', 'alice', 'runinfo', 'nested_job');
    mkdirSync(nestedDir, { recursive: true });
    const nested = await startStandin({
      socket: join(nestedDir, 'reporter.sock'),
      jobId: 'nested_job',
      seed: 9,
      startEpoch: 1_714_600_000,
      eventDelayMs: 3,
    }).then(track);
    const second = await Promise.all([6, 7, 8, 9, 10, 11].map((i) => start(i)));
    // Two jobs one after the other on the same path: the second socket is a new file (a new inode).
    const repeated = await start(12, { repeatJobs: 2, jobGap: 0.3 });
    const standins = [...first, nested, ...second, repeated];

    const manifests = await Promise.all(standins.map((s) => s.manifest()));
    const jobs = manifests.flatMap((m) => m.jobs);
    expect(jobs).toHaveLength(15);
    await until('every job finished', () =>
      jobs.every((j) => h.sink.jobs.some((s) => s.job.jobId === j.job_id)),
    );
    for (const job of jobs) expectJob(h.sink, job);

    // Every socket is gone: every subscriber is stopped and forgotten, and no reporter_up series is left.
    await until('all detached', () => h.discovery.sockets().length === 0);
    expect(h.created.length).toBeGreaterThanOrEqual(14);
    expect([...h.stopped].sort()).toEqual([...h.created].sort());
    expect(h.subscribers.every((s) => s.state === 'stopped')).toBe(true);
    expect(h.created).not.toContain(tooDeep);
    expect(h.created.some((p) => p.includes('linked_dir'))).toBe(false);
    expect(await h.reporterUpSeries()).toEqual([]);
    expect(h.tracker.stats().streams).toBe(0);
    expect(h.discovery.stats().sockets).toBe(0);
  });

  it('detaches from a leftover socket that refuses connections and ignores it until it is replaced', async () => {
    const root = tempRoot();
    const dir = join(root, 'runinfo', 'crashed_job');
    mkdirSync(dir, { recursive: true });
    const socket = join(dir, 'reporter.sock');
    leftoverSocket(socket);
    const h = harness([root], { staleAfterMs: 300 });
    cleanups.push(() => h.discovery.stop());
    h.discovery.start();

    await until('leftover attached', () => h.created.length === 1);
    await until(
      'leftover detached as stale',
      () => h.stopped.length === 1 && h.discovery.stats().staleSockets === 1,
    );
    expect(h.discovery.sockets()).toEqual([]);
    // Several polls and a full scan later it is still ignored.
    await h.discovery.scanNow(true);
    await h.discovery.scanNow();
    expect(h.created).toHaveLength(1);
    expect(await h.reporterUpSeries()).toEqual([]);

    // A new job at the same path is a new socket file: discovery attaches again and gets the whole job.
    rmSync(socket);
    const standin = track(await startStandin({ socket, jobId: 'rerun_job', seed: 4, eventDelayMs: 1 }));
    const manifest = await standin.manifest();
    await until('rerun finished', () => h.sink.jobs.some((j) => j.job.jobId === 'rerun_job'));
    expectJob(h.sink, manifest);
    expect(h.created).toEqual([socket, socket]);
    await until('rerun detached', () => h.discovery.sockets().length === 0);
    expect(h.discovery.stats().staleSockets).toBe(0);
  });

  it('keeps a tree of a thousand and more old runinfo directories cheap: no watcher per directory', async () => {
    const root = tempRoot();
    oldHistory(root, 1500);
    const h = harness([root]);
    cleanups.push(() => h.discovery.stop());
    h.discovery.start();
    await until(
      'first full scan',
      () => h.discovery.stats().fullScans >= 1 && h.discovery.stats().scans >= 2,
    );
    const settled = h.discovery.stats();
    expect(settled.directories).toBeGreaterThan(3000);
    // The root, runinfo (a container of job directories) and the archive month directory at most.
    expect(settled.watchers).toBeLessThanOrEqual(4);

    const dir = join(root, 'runinfo', 'fresh_job.2024May01_12:00:00.000000');
    mkdirSync(dir);
    const standin = track(
      await startStandin({ symlinkFrom: join(dir, 'reporter.sock'), jobId: 'fresh_job', eventDelayMs: 1 }),
    );
    const manifest = await standin.manifest();
    await until('fresh job finished', () => h.sink.jobs.some((j) => j.job.jobId === 'fresh_job'));
    expectJob(h.sink, manifest);
    await until('fresh job detached', () => h.discovery.sockets().length === 0);
    expect(h.discovery.stats().watchers).toBeLessThanOrEqual(5);
  });

  it('waits for a root that does not exist yet', async () => {
    const parent = tempRoot();
    const root = join(parent, 'later');
    const h = harness([root]);
    cleanups.push(() => h.discovery.stop());
    h.discovery.start();
    await until('a few scans', () => h.discovery.stats().scans >= 3);
    mkdirSync(join(root, 'job'), { recursive: true });
    const standin = track(
      await startStandin({ socket: join(root, 'job', 'reporter.sock'), jobId: 'late_root' }),
    );
    const manifest = await standin.manifest();
    await until('job finished', () => h.sink.jobs.some((j) => j.job.jobId === 'late_root'));
    expectJob(h.sink, manifest);
  });
});

// Enable when wired: `--watch` (and `--watch-interval`) in config.ts / daemon.ts, as proposed in docs/replay.md.
describe('pyats-exporter --watch', () => {
  it.each([false, true])(
    'exports concurrent jobs as they start under a runinfo tree and forgets them when they end (decode thread: %s)',
    async (decodeThread) => {
      const root = tempRoot();
      oldHistory(root, 20);
      const exporter = await runExporter([
        '--watch',
        root,
        '--watch-interval',
        '100',
        '--listen',
        '127.0.0.1:0',
        '--timezone',
        'UTC',
        ...(decodeThread ? ['--decode-thread'] : []),
      ]);
      cleanups.push(async () => void (await exporter.stop()));
      const standins = await Promise.all(
        [0, 1, 2].map((i) => {
          const dir = join(root, 'runinfo', `cli_job_${i}`);
          mkdirSync(dir, { recursive: true });
          const socket = join(dir, 'reporter.sock');
          return startStandin({
            ...(i === 1 ? { symlinkFrom: socket } : { socket }),
            jobId: `cli_job_${i}`,
            seed: i + 1,
            eventDelayMs: 2,
          }).then(track);
        }),
      );
      const manifests = await Promise.all(standins.map((s) => s.manifest()));
      const done = async (): Promise<boolean> => {
        const samples = parseMetrics(await exporter.scrape());
        return manifests.every(
          (m) => sumOf(samples, 'pyats_job_runs_total', { job: m.job_id, result: m.job_result }) === 1,
        );
      };
      const deadline = Date.now() + 20_000;
      while (!(await done()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(await done()).toBe(true);
      for (;;) {
        const up = parseMetrics(await exporter.scrape()).filter(
          (s) => s.name === 'pyats_exporter_reporter_up',
        );
        if (up.length === 0) break;
        if (Date.now() > deadline + 10_000) throw new Error('reporter_up series left behind');
        await new Promise((r) => setTimeout(r, 100));
      }
      expect((await exporter.stop()).code).toBe(0);
    },
  );
});
