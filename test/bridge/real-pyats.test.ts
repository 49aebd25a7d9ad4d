// The bridge against a REAL pyATS 23.2 job (../shared/real-pyats): easypy runs example/job.py, the bridge script
// subscribes with pyATS's own ReportClient (CPython 3.10, the bundle's site-packages, no stubs) before the
// testscript starts (PYATS_WAIT_FOR), and forwards to the exporter's NDJSON ingest. A byte-transparent proxy in
// front of the real reporter.sock tells the test when the reporter has answered the subscription and keeps
// what the reporter sent, so every event it pushed can be checked to have arrived, in order, as spans.
// Fails (does not skip) when the runtime or its CPython 3.10 is missing.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RESULT_VALUES, type ResultValue } from '../../src/events/types.js';
import { IngestSocketServer } from '../../src/ingest/socket.js';
import { silentLogger } from '../../src/log.js';
import { isPyDict, PyObject, type PyDict } from '../../src/python/pyvalues.js';
import { unpickle } from '../../src/python/unpickle.js';
import { FrameReader } from '../../src/reporter/framing.js';
import { until as poll } from '../faults/support.js';
import { createCore, until } from '../ingest/inprocess.js';
import { realPyats, spawnRealPython } from '../helpers/real-pyats.js';
import { BRIDGE_DIR } from './run.js';

// pyATS roll-up order, lowest first (results/rollup.html).
const ROLLUP: ResultValue[] = ['skipped', 'passed', 'passx', 'blocked', 'failed', 'errored', 'aborted'];
// `python -m pyats_exporter_bridge ARGS`, inside python.sh (which runs `-c CODE` with exec).
const RUN_BRIDGE =
  "import runpy, sys; sys.argv = ['pyats_exporter_bridge'] + sys.argv[2:]; " +
  "runpy.run_module('pyats_exporter_bridge', run_name='__main__', alter_sys=True)";

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Proxy {
  path: string;
  /** Bytes the real reporter sent, per connection (a subscription the bridge retried is a new one). */
  s2c: Buffer[][];
  /** Resolves when the reporter has answered the subscription. */
  answered: Promise<void>;
  close(): void;
}

/** A Unix socket forwarding to the job's reporter.sock (once it exists), keeping what comes back. */
function startProxy(path: string, runinfoRoot: string): Promise<Proxy> {
  const s2c: Buffer[][] = [];
  const sockets = new Set<net.Socket>();
  let answer!: () => void;
  const answered = new Promise<void>((resolve) => (answer = resolve));
  const server = net.createServer((client) => {
    const received: Buffer[] = [];
    s2c.push(received);
    sockets.add(client);
    client.pause();
    void (async () => {
      const target = await poll(
        'the job to make its reporter.sock',
        async () => {
          for (const job of await readdir(runinfoRoot).catch(() => [] as string[])) {
            const sock = join(runinfoRoot, job, 'reporter.sock');
            try {
              // reporter.sock may be a symlink to a socket in a temp dir (long runinfo paths).
              return realpathSync(sock);
            } catch {
              // not there yet
            }
          }
          return undefined;
        },
        60_000,
      );
      const upstream = net.createConnection(target as string);
      sockets.add(upstream);
      upstream.on('data', (chunk: Buffer) => {
        received.push(chunk);
        answer();
      });
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    })();
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () =>
      resolve({
        path,
        s2c,
        answered,
        close: () => {
          for (const socket of sockets) socket.destroy();
          server.close();
        },
      }),
    );
  });
}

function exited(proc: ChildProcess, output: { text: string }): Promise<number | null> {
  proc.stdout?.setEncoding('utf8').on('data', (t: string) => (output.text += t));
  proc.stderr?.setEncoding('utf8').on('data', (t: string) => (output.text += t));
  return new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
}

/** The events a reporter stream carries: chunked messages, unpickled, the first (the reply None) apart. */
function eventsOf(chunks: Buffer[]): { reply: unknown; events: PyDict[] } {
  const reader = new FrameReader({ format: 'chunked', maxFrameBytes: 64 << 20 });
  const values = chunks.flatMap((chunk) => reader.push(chunk)).map((m) => unpickle(m));
  expect(reader.bufferedBytes).toBe(0);
  const [reply, ...events] = values;
  return { reply, events: events.filter(isPyDict) };
}

describe('bridge against a real pyATS 23.2 job', () => {
  it('forwards every event the real reporter pushed, in order, into whole spans', async () => {
    const pyats = realPyats();
    const dir = mkdtempSync(join(tmpdir(), 'bridge-real-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const run = join(dir, 'run');
    const flag = join(dir, 'subscribed');
    const core = createCore({ zone: 'UTC' });
    const ingest = new IngestSocketServer({
      path: join(dir, 'ingest.sock'),
      target: core.pipeline,
      maxLineBytes: 1 << 20,
      idleTimeoutMs: 60_000,
      logger: silentLogger(),
    });
    await ingest.listen();
    cleanups.push(() => ingest.close());
    const proxy = await startProxy(join(dir, 'reporter.sock'), join(run, '.pyats', 'runinfo'));
    cleanups.push(() => proxy.close());

    // The job holds its testscript until the flag exists (example/job.py polls PYATS_WAIT_FOR for 10 s).
    const jobOutput = { text: '' };
    const job = spawn(pyats.runJob, [pyats.exampleJob], {
      env: { ...process.env, PYATS_RUN_DIR: run, PYATS_WAIT_FOR: flag, PYTHONDONTWRITEBYTECODE: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const jobExit = exited(job, jobOutput);
    cleanups.push(() => job.exitCode === null && job.kill('SIGKILL'));
    const bridgeOutput = { text: '' };
    const bridge = spawnRealPython(
      pyats,
      RUN_BRIDGE,
      ['--reporter-socket', proxy.path, '--target', `unix:${ingest.path}`, '--stream', 'real:example_job'],
      {
        PATH: process.env['PATH'],
        HOME: process.env['HOME'],
        PYTHONPATH: BRIDGE_DIR,
        PYTHONUNBUFFERED: '1',
        PYTHONDONTWRITEBYTECODE: '1',
      },
    );
    const bridgeExit = exited(bridge, bridgeOutput);
    cleanups.push(() => bridge.exitCode === null && bridge.kill('SIGKILL'));

    await Promise.race([
      proxy.answered,
      jobExit.then(() => {
        throw new Error(
          `the job ended before the bridge subscribed:\n${jobOutput.text}\n${bridgeOutput.text}`,
        );
      }),
    ]);
    writeFileSync(flag, '');
    // easypy exits 1: the job has failures on purpose.
    expect(await jobExit, jobOutput.text).toBe(1);
    expect(await bridgeExit, bridgeOutput.text).toBe(0);
    await until('the stream to end', () =>
      ingest.openStreams === 0 && core.tracker.stats().streams === 0 ? true : undefined,
    );

    // The subscription: the connection the reporter streamed to.
    const streamed = proxy.s2c.filter((chunks) => chunks.length > 0);
    expect(streamed).toHaveLength(1);
    const { reply, events } = eventsOf(streamed[0]!);
    expect(reply).toBeNull();
    // The example job: 48 events, every result value, nested steps.
    expect(events.length).toBe(48);
    expect(bridgeOutput.text).toMatch(/48 events seen, 48 sent, 0 dropped, 0 refused/);
    expect(core.received.get('ndjson_socket')).toBe(events.length);
    expect(core.rejected.size).toBe(0);

    const stops = new Map(
      events.filter((e) => String(e['event']).startsWith('stop_')).map((e) => [e['seq_num'] as number, e]),
    );
    const spans = core.summaries();
    expect(spans).toHaveLength(new Set(events.map((e) => e['seq_num'])).size);
    expect(spans).toHaveLength(stops.size);
    expect(new Set(spans.map((s) => s.traceId)).size).toBe(1);
    const bySeq = new Map(spans.map((s) => [s.seqNum, s]));
    const resultOf = (seq: number): ResultValue => {
      const result = stops.get(seq)!['result'];
      if (result instanceof PyObject) return (result.state as PyDict)['value'] as ResultValue;
      // stop_task / stop_testsuite carry no result: the worst of the children's.
      const children = [...stops.values()].filter((e) => e['parent_seq_num'] === seq);
      return children
        .map((c) => resultOf(c['seq_num'] as number))
        .sort((a, b) => ROLLUP.indexOf(b) - ROLLUP.indexOf(a))[0]!;
    };
    for (const [seq, stop] of stops) {
      const span = bySeq.get(seq);
      expect(span, `seq_num ${seq}`).toBeDefined();
      expect(span!.type).toBe(stop['type']);
      expect(span!.result, `seq_num ${seq} (${String(stop['type'])})`).toBe(resultOf(seq));
      const parent = stop['parent_seq_num'];
      expect(span!.parentSpanId).toBe(typeof parent === 'number' ? bySeq.get(parent)?.spanId : undefined);
    }
    expect(new Set(spans.map((s) => s.result))).toEqual(new Set(RESULT_VALUES));
  }, 180_000);
});
