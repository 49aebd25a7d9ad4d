// Tests of the Python reporter stand-in itself, read with plain Node sockets and decoded by CPython, independent of
// the project's own reader; and the proof that on the happy path it is real pyATS 23.2, byte for byte: its
// stream, tree replies and error replies against recordings of a real reporter (test/fixtures/real-pyats).
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { lstat, mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { RESULT_VALUES } from '../../src/events/types.js';
import { encodeRequest } from '../../src/reporter/protocol.js';
import {
  collect,
  collectChunks,
  decodeWithPython,
  isPickledNone,
  splitFrames,
  splitMessages,
  splitSubscription,
  startStandin,
  subscribeRequest,
  type DecodedEvent,
  type Standin,
  type StandinFrame,
  type StandinOptions,
} from './standin.js';

const START_EPOCH = 1_700_000_000.25;
// Log file paths name the runinfo directory (by default the socket's, a new temp dir each time).
const RUNINFO = '/tmp/runinfo/demo_job.2023Nov14_22:13:20.250000';
const REAL = fileURLToPath(new URL('../fixtures/real-pyats/', import.meta.url));
const CONVERTER = join(REAL, 'standin-capture-to-job.py');
const running: Standin[] = [];
const tempDirs: string[] = [];

afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.kill()));
  await Promise.all(tempDirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function standin(opts: StandinOptions): Promise<Standin> {
  const s = await startStandin({ startEpoch: START_EPOCH, linger: 0.05, runinfo: RUNINFO, ...opts });
  running.push(s);
  return s;
}

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'standin-test-'));
  tempDirs.push(dir);
  return dir;
}

function expectWellFormed(payloads: Buffer[], protocol: number): void {
  for (const p of payloads) {
    expect(p[0]).toBe(0x80);
    expect(p[1]).toBe(protocol);
    expect(p[p.length - 1]).toBe(0x2e);
  }
}

/** A client connection that sends framed requests and reads the reply messages' raw bytes. */
class Client {
  private buffered = Buffer.alloc(0);
  private waiting: (() => void) | undefined;
  private ended = false;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.waiting?.();
    });
    socket.on('close', () => {
      this.ended = true;
      this.waiting?.();
    });
  }

  static open(path: string): Promise<Client> {
    return new Promise((resolve, reject) => {
      const socket = connect(path, () => resolve(new Client(socket)));
      socket.once('error', reject);
    });
  }

  /** Sends `request` and returns the next reply's bytes, chunk headers included. */
  async ask(request: Uint8Array): Promise<Buffer> {
    this.socket.write(request);
    for (;;) {
      const { messages } = splitMessages(this.buffered, 'chunked');
      if (messages.length > 0) {
        const first = messages[0]!;
        const length = first.payload.length + 3 * first.chunks;
        const reply = this.buffered.subarray(0, length);
        this.buffered = this.buffered.subarray(length);
        return reply;
      }
      if (this.ended) throw new Error('the stand-in closed the connection');
      await new Promise<void>((resolve) => (this.waiting = resolve));
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The message bytes (headers included) of a chunked capture, one Buffer per message. */
function rawMessages(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (const { payload, chunks } of splitMessages(buf, 'chunked').messages) {
    const length = payload.length + 3 * chunks;
    out.push(buf.subarray(at, at + length));
    at += length;
  }
  return out;
}

async function convert(...args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)('python3', [CONVERTER, ...args], { maxBuffer: 64 << 20 });
  return stdout;
}

describe('reporter stand-in framing', () => {
  const cases: [StandinFrame, 2 | 3 | 4 | 5][] = [
    ['chunked', 4],
    ['chunked', 2],
    ['4be', 2],
    ['4le', 3],
    ['8be', 4],
    ['8le', 5],
  ];
  it.each(cases)(
    'answers subscribe_client with None, then frames every event (%s, pickle protocol %i)',
    async (frame, protocol) => {
      const s = await standin({ frame, protocol });
      const bytes = await collect(s.path, subscribeRequest(frame));
      const sent = await s.done;
      const manifest = await s.manifest();
      const { reply, events, rest } = splitSubscription(bytes, frame);
      expect(rest).toBe(0);
      expect(isPickledNone(reply)).toBe(true);
      expect(events).toHaveLength(sent);
      expect(manifest.events_sent).toBe(sent);
      expect(manifest.events_total).toBe(sent);
      expectWellFormed(events, protocol);
      expect(manifest.requests).toEqual([{ connection: 1, name: 'subscribe_client', problem: null }]);

      const decoded = await decodeWithPython(events);
      expect(decoded.map((e) => [e['event'], e['seq_num']])).toEqual(
        manifest.events.map((e) => [e.event, e.seq_num]),
      );
    },
  );

  it('writes the same bytes whether messages go whole, in tiny pieces or packed together', async () => {
    const streams: Buffer[] = [];
    const chunkCounts: number[] = [];
    for (const chunking of ['whole', 'bytewise', 'packed'] as const) {
      const s = await standin({ chunking, seed: 3 });
      const chunks = await collectChunks(s.path);
      streams.push(Buffer.concat(chunks));
      chunkCounts.push(chunks.length);
      await s.done;
    }
    expect(streams[1]!.equals(streams[0]!)).toBe(true);
    expect(streams[2]!.equals(streams[0]!)).toBe(true);
    // Tiny writes with pauses reach the reader cut inside messages: more reads than messages.
    const messages = splitFrames(streams[0]!, 'chunked').payloads.length;
    expect(chunkCounts[1]).toBeGreaterThan(messages);
  });

  it('splits every message into chunks of --chunk-size bytes, the same payloads', async () => {
    const whole = await standin({ seed: 2 });
    const reference = splitMessages(await collect(whole.path), 'chunked').messages;
    const small = await standin({ seed: 2, chunkSize: 100 });
    const { messages, rest } = splitMessages(await collect(small.path), 'chunked');
    expect(rest).toBe(0);
    expect(messages.map((m) => m.payload)).toEqual(reference.map((m) => m.payload));
    expect(reference.every((m) => m.chunks === 1)).toBe(true);
    for (const m of messages) expect(m.chunks).toBe(Math.max(1, Math.ceil(m.payload.length / 100)));
  });

  it('streams only to connections that subscribed; the others get what they ask for', async () => {
    const s = await standin({ subscribers: 2 });
    const idle = await Client.open(s.path);
    const [a, b] = await Promise.all([collect(s.path), collect(s.path)]);
    const sent = await s.done;
    expect(a.equals(b)).toBe(true);
    expect(splitSubscription(a, 'chunked').events).toHaveLength(sent);
    expect(isPickledNone(splitSubscription(a, 'chunked').reply)).toBe(true);
    idle.close();
  });
});

describe('reporter stand-in job', () => {
  it('streams a realistic builtin job, deterministic for a seed', async () => {
    const first = await standin({ seed: 5 });
    await collect(first.path);
    const m1 = await first.manifest();
    const second = await standin({ seed: 5 });
    await collect(second.path);
    const m2 = await second.manifest();
    expect(m2.sections).toEqual(m1.sections);

    expect(m1.job_id).toBe('demo_job');
    expect(m1.sections.length).toBeGreaterThanOrEqual(40);
    expect(m1.sections.length).toBeLessThanOrEqual(60);
    expect(new Set(m1.sections.map((s) => s.result))).toEqual(new Set(RESULT_VALUES));
    const types = new Set(m1.sections.map((s) => s.type));
    for (const t of ['TestSuite', 'Task', 'Plugin', 'CommonSetup', 'Testcase', 'TestSection', 'Step']) {
      expect(types).toContain(t);
    }
    for (const s of m1.sections) {
      expect(s.completed).toBe(true);
      expect(s.stop_us).toBeGreaterThan(s.start_us);
      expect(s.runtime).toBeCloseTo((s.stop_us - s.start_us) / 1e6, 9);
    }
    // As in pyATS 23.2, Steps are start_section / stop_section.
    const steps = new Set(m1.sections.filter((s) => s.type === 'Step').map((s) => s.seq_num));
    const stepEvents = m1.events.filter((e) => steps.has(e.seq_num)).map((e) => e.event);
    expect(new Set(stepEvents)).toEqual(new Set(['start_section', 'stop_section']));
  });

  it('inits a Task, runs its pre-task plugin, then starts the Task', async () => {
    const s = await standin({});
    await collect(s.path);
    const m = await s.manifest();
    const task = m.sections.find((x) => x.type === 'Task')!;
    const plugin = m.sections.find((x) => x.parent_seq_num === task.seq_num && x.plugin_before)!;
    const at = (event: string, seq: number): number =>
      m.events.findIndex((e) => e.event === event && e.seq_num === seq);
    expect(at('init_task', task.seq_num)).toBeLessThan(at('start_plugin', plugin.seq_num));
    expect(at('stop_plugin', plugin.seq_num)).toBeLessThan(at('start_task', task.seq_num));
    expect(plugin.stop_us).toBeLessThan(task.start_us);

    const suite = m.sections.find((x) => x.type === 'TestSuite')!;
    const preJob = m.sections.find((x) => x.parent_seq_num === suite.seq_num && x.plugin_before)!;
    expect(at('init_testsuite', suite.seq_num)).toBe(0);
    expect(at('start_plugin', preJob.seq_num)).toBeLessThan(at('start_testsuite', suite.seq_num));
  });

  it("decodes in CPython to pyATS 23.2's events: keys in its order, TestResults, aware UTC times", async () => {
    const s = await standin({ tz: 'Europe/Berlin' });
    const { events: payloads } = splitSubscription(await collect(s.path), 'chunked');
    const m = await s.manifest();
    const events = await decodeWithPython(payloads);
    const byEvent = (name: string): DecodedEvent => events.find((e) => e['event'] === name)!;
    expect(Object.keys(events[0]!)).toEqual(['type', 'seq_num', 'id', 'fullid', 'idlist', 'name', 'event']);
    expect(Object.keys(byEvent('init_task'))).toEqual([
      'type',
      'seq_num',
      'id',
      'fullid',
      'idlist',
      'name',
      'event',
      'parent_seq_num',
    ]);
    const stop = events.find((e) => e['event'] === 'stop_section' && e['type'] === 'TestSection')!;
    expect(Object.keys(stop)).toEqual([
      'type',
      'seq_num',
      'id',
      'fullid',
      'idlist',
      'name',
      'starttime',
      'stoptime',
      'runtime',
      'result',
      'logfile',
      'xref',
      'event',
      'parent_seq_num',
      'logs',
    ]);
    const section = m.sections.find((x) => x.seq_num === stop['seq_num'])!;
    const codes: Record<string, number> = { failed: 0, passed: 1, aborted: 2, blocked: 3, skipped: 4 };
    expect(stop['result']).toMatchObject({
      class: 'pyats.results.result.TestResult',
      state: { value: section.result, reason: section.reason, data: null },
    });
    if (section.result in codes) {
      expect((stop['result'] as { state: { code: number } }).state.code).toBe(codes[section.result]);
    }
    expect(stop['starttime']).toMatchObject({ offset: 0 });
    expect(Date.parse(`${(stop['starttime'] as { datetime: string }).datetime}Z`)).toBeCloseTo(
      section.start_ms,
      0,
    );
    expect(stop['fullid']).toBe((stop['idlist'] as string[]).join('.'));
    expect((stop['logs'] as { file: string }).file).toBe(`TaskLog.Task-1`);
    // stop_task and stop_testsuite carry no result: the subscriber rolls it up.
    expect(byEvent('stop_task')).not.toHaveProperty('result');
    expect(byEvent('stop_testsuite')).not.toHaveProperty('result');
    expect(byEvent('stop_testsuite')).not.toHaveProperty('logfile');
    // A quirk of 23.2: start_task names the Task's log file with its directory, stop_task without.
    expect(byEvent('start_task')['logfile']).toMatch(/^\/.+\/TaskLog\.Task-1$/);
    expect(byEvent('stop_task')['logfile']).toBe('TaskLog.Task-1');
  });

  it.each([
    ['datetime-tz', 'object'],
    ['iso', 'dict'],
    ['epoch', 'string'],
    ['datetime', 'mixed'],
  ] as const)('sends %s times and %s results', async (times, results) => {
    const s = await standin({ times, results, tz: 'Europe/Berlin' });
    const { events: payloads } = splitSubscription(await collect(s.path), 'chunked');
    const m = await s.manifest();
    const events = await decodeWithPython(payloads);
    const stops = events.filter((e) => String(e['event']).startsWith('stop_') && 'result' in e);
    const bySeq = new Map(m.sections.map((x) => [x.seq_num, x]));
    for (const e of stops) {
      const section = bySeq.get(e['seq_num'] as number)!;
      const start = e['starttime'];
      if (times === 'datetime-tz') expect(start).toMatchObject({ offset: 7200 });
      if (times === 'datetime') {
        expect(start).toMatchObject({ offset: null });
        // 2023-11-14 is CET (+01:00) in Berlin.
        const naive = (start as { datetime: string }).datetime;
        expect(Math.abs(Date.parse(`${naive}+01:00`) - section.start_ms)).toBeLessThan(1);
      }
      if (times === 'iso') expect(Math.abs(Date.parse(start as string) - section.start_ms)).toBeLessThan(1);
      if (times === 'iso') expect(start as string).toMatch(/\+02:00$/);
      if (times === 'epoch') expect((start as number) * 1000).toBeCloseTo(section.start_ms, 2);
      const result = e['result'];
      if (results === 'string') expect(result).toBe(section.result);
      if (results === 'dict') expect(result).toMatchObject({ value: section.result });
      if (results === 'object') {
        expect(result).toMatchObject({
          class: `pyats.results.${section.result[0]!.toUpperCase()}${section.result.slice(1)}`,
        });
      }
    }
    if (results === 'mixed') {
      const kinds = stops.map((e) => {
        const r = e['result'];
        return typeof r === 'string' ? 'string' : 'class' in (r as object) ? 'object' : 'dict';
      });
      expect(kinds.slice(0, 3)).toEqual(['object', 'dict', 'string']);
    }
  });

  it('runs a custom JSON job tree with roll-up', async () => {
    const s = await standin({
      jobTree: {
        type: 'TestSuite',
        id: 'custom',
        children: [
          {
            type: 'Task',
            id: 'Task-1',
            children: [
              { type: 'Plugin', id: 'Pre', plugin_before: true, duration_s: 0.1 },
              {
                type: 'Testcase',
                id: 'tc',
                children: [
                  { type: 'TestSection', id: 'a', result: 'passx', duration_s: 0.2 },
                  { type: 'TestSection', id: 'b', result: 'blocked', duration_s: 0.3 },
                ],
              },
            ],
          },
        ],
      },
    });
    await collect(s.path);
    const m = await s.manifest();
    expect(m.job_id).toBe('custom');
    expect(m.job_result).toBe('blocked');
    expect(m.events.map((e) => e.event)).toEqual([
      'init_testsuite',
      'start_testsuite',
      'init_task',
      'start_plugin',
      'stop_plugin',
      'start_task',
      'start_section',
      'start_section',
      'stop_section',
      'start_section',
      'stop_section',
      'stop_section',
      'stop_task',
      'stop_testsuite',
    ]);
    const a = m.sections.find((x) => x.id === 'a')!;
    expect(a.runtime).toBeCloseTo(0.2, 6);
  });
});

describe('reporter stand-in requests', () => {
  const ask = (name: 'ping' | 'get_testsuite' | 'subscribe_client'): Uint8Array =>
    encodeRequest({ name }, 'chunked');
  const decodeReply = async (reply: Buffer): Promise<unknown> =>
    (await decodeWithPython(splitFrames(reply, 'chunked').payloads))[0];

  it('returns the section tree so far from get_testsuite / get_section, once registered', async () => {
    const s = await standin({ skipFirst: 14, seed: 4 });
    const client = await Client.open(s.path);
    expect(await decodeReply(await client.ask(ask('get_testsuite')))).toMatchObject({
      exception: { class: 'pyats.reporter.exceptions.UnregisteredClientError' },
    });
    expect(await decodeReply(await client.ask(ask('ping')))).toBe('pong');
    const registered = await client.ask(
      encodeRequest({ name: 'register_client', pid: 1, ppid: 2 }, 'chunked'),
    );
    expect(isPickledNone(splitFrames(registered, 'chunked').payloads[0])).toBe(true);
    const suite = (await decodeReply(await client.ask(ask('get_testsuite')))) as DecodedEvent;
    const tasks = suite['tasks'] as string[];
    expect(tasks).toHaveLength(1);
    const taskView = (await decodeReply(
      await client.ask(encodeRequest({ name: 'get_section', idList: tasks }, 'chunked')),
    )) as DecodedEvent;
    client.close();
    // The job runs once subscribed; its manifest says what had happened before: the first 14 events.
    await collect(s.path);
    const m = await s.manifest();
    const root = m.sections.find((x) => x.parent_seq_num === null)!;
    expect(suite).toMatchObject({ type: 'TestSuite', id: root.id, seq_num: root.seq_num, stoptime: null });
    const task = m.sections.find((x) => x.type === 'Task')!;
    expect(tasks).toEqual([task.id]);
    expect(taskView).toMatchObject({ type: 'Task', id: task.id, seq_num: task.seq_num, stoptime: null });
    const known = m.sections.filter((x) => x.parent_seq_num === task.seq_num && x.attach_state !== null);
    expect(taskView['sections']).toEqual(known.map((x) => x.id));
    expect(known.length).toBeGreaterThan(0);
    expect(m.sections.filter((x) => x.attach_state === 'stopped').length).toBeGreaterThan(0);
  });

  it('dies, as the real 23.2 server does, of a request without a name', async () => {
    const s = await standin({});
    const client = await Client.open(s.path);
    // {'data': {}} framed: pyATS raises KeyError('name') and the job fails.
    const nameless = Buffer.from('0000188004950d000000000000007d948c0464617461947d94732e', 'hex');
    await expect(client.ask(nameless)).rejects.toThrow(/closed/);
    await expect(s.done).rejects.toThrow(/has no name: the real pyATS 23.2 server dies here/);
  });
});

describe('reporter stand-in interruptions', () => {
  it('drops the connection after N events, leaving sections open', async () => {
    const s = await standin({ dropAfter: 17, frame: '4le' });
    const { reply, events, rest } = splitSubscription(await collect(s.path, subscribeRequest('4le')), '4le');
    expect(rest).toBe(0);
    expect(isPickledNone(reply)).toBe(true);
    expect(events).toHaveLength(17);
    expect(await s.done).toBe(17);
    const m = await s.manifest();
    expect(m.dropped).toBe(true);
    expect(m.events).toHaveLength(17);
    expect(m.sections.some((x) => x.seen && !x.completed)).toBe(true);
    expect(m.sections.find((x) => x.type === 'TestSuite')!.completed).toBe(false);
  });

  it('skips the first N events, as seen by an exporter attached mid-job', async () => {
    const s = await standin({ skipFirst: 10 });
    const { events } = splitSubscription(await collect(s.path), 'chunked');
    const m = await s.manifest();
    expect(events).toHaveLength(m.events_total - 10);
    expect(m.events_sent).toBe(m.events_total - 10);
    const decoded = await decodeWithPython(events.slice(0, 1));
    expect(decoded[0]!['seq_num']).toBe(m.events[0]!.seq_num);
    expect(m.sections.find((x) => x.type === 'TestSuite')!.completed).toBe(true);
    expect(m.sections.find((x) => x.type === 'TestSuite')!.attach_state).toBe('started');
  });
});

describe('reporter stand-in socket placement', () => {
  it('symlinks the real socket from a temp dir, and removes both when done', async () => {
    const dir = await tempDir();
    const link = join(dir, 'reporter.sock');
    const s = await standin({ symlinkFrom: link });
    expect(s.path).toBe(link);
    expect((await lstat(link)).isSymbolicLink()).toBe(true);
    const { events } = splitSubscription(await collect(link), 'chunked');
    expect(events).toHaveLength(await s.done);
    await expect(lstat(link)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('kill() stops a stand-in still waiting for subscribers and removes its files', async () => {
    const s = await startStandin({});
    expect((await lstat(s.path)).isSocket()).toBe(true);
    await s.kill();
    expect(s.proc.exitCode !== null || s.proc.signalCode !== null).toBe(true);
    await expect(lstat(s.dir)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(s.done).rejects.toMatchObject({ code: 'STANDIN_FAILED' });
  });

  it('runs repeated jobs on the same path', async () => {
    const s = await standin({ repeatJobs: 2, jobGap: 0.05 });
    const first = splitSubscription(await collect(s.path), 'chunked').events;
    await s.ready(2);
    const second = splitSubscription(await collect(s.path), 'chunked').events;
    const total = await s.done;
    const m = await s.manifest();
    expect(m.jobs).toHaveLength(2);
    expect(first).toHaveLength(m.jobs[0]!.events_sent);
    expect(second).toHaveLength(m.jobs[1]!.events_sent);
    expect(total).toBe(first.length + second.length);
    expect(m.jobs[1]!.start_ms).toBeGreaterThan(m.jobs[0]!.sections[0]!.stop_ms);
  });
});

describe('reporter stand-in against real pyATS 23.2 recordings', () => {
  // Every recorded subscription in the fixtures: the real ReportClient.subscribe() request and what the real
  // reporter sent back (standin-record.py's, and those record.py makes for the exporter's own tests).
  const subscriptions = readdirSync(REAL)
    .filter((f) => f.endsWith('.c2s.bin'))
    .filter((f) => Buffer.from(subscribeRequest()).equals(readFileSync(join(REAL, f))))
    .map((f) => f.replace(/\.c2s\.bin$/, ''));

  it('has the recordings it is compared with', () => {
    expect(subscriptions).toContain('standin-subscribe');
  });

  it.each(subscriptions)('streams %s byte for byte, from the same job', async (name) => {
    const real = readFileSync(join(REAL, `${name}.s2c.bin`));
    const dir = await tempDir();
    const job = join(dir, 'job.json');
    writeFileSync(job, await convert(join(REAL, `${name}.s2c.bin`)));
    const s = await standin({ job, linger: 0.03 });
    const mine = await collect(s.path, readFileSync(join(REAL, `${name}.c2s.bin`)));
    await s.done;
    const realMessages = rawMessages(real);
    const myMessages = rawMessages(mine);
    expect(myMessages.length).toBe(realMessages.length);
    myMessages.forEach((message, i) =>
      expect(message.toString('hex'), `message ${i}`).toBe(realMessages[i]!.toString('hex')),
    );
    expect(mine.equals(real)).toBe(true);
  });

  it('keeps standin-example-job.json in step with its recording', async () => {
    expect(await convert(join(REAL, 'standin-subscribe.s2c.bin'))).toBe(
      readFileSync(join(REAL, 'standin-example-job.json'), 'utf8'),
    );
  });

  it('answers an Explorer walk (ping, register_client, get_testsuite, get_section) byte for byte', async () => {
    const dir = await tempDir();
    const job = join(dir, 'job.json');
    const tree = await convert(
      '--explorer',
      join(REAL, 'standin-explorer.c2s.bin'),
      join(REAL, 'standin-explorer.s2c.bin'),
    );
    writeFileSync(job, tree);
    const before = (JSON.parse(tree) as { events_before_attach: number }).events_before_attach;
    const s = await standin({ job, skipFirst: before });
    const requests = rawMessages(readFileSync(join(REAL, 'standin-explorer.c2s.bin')));
    const replies = rawMessages(readFileSync(join(REAL, 'standin-explorer.s2c.bin')));
    expect(requests.length).toBeGreaterThan(5);
    const client = await Client.open(s.path);
    for (const [i, request] of requests.entries()) {
      expect((await client.ask(request)).toString('hex'), `reply ${i}`).toBe(replies[i]!.toString('hex'));
    }
    client.close();
  });

  it('refuses what real pyATS refuses, with the same reply bytes', async () => {
    const recorded = JSON.parse(readFileSync(join(REAL, 'standin-replies.json'), 'utf8')) as {
      connections: { request: string; sent: string; reply: string }[][];
    };
    const dir = await tempDir();
    const job = join(dir, 'job.json');
    // The same run as the Explorer walk: its TestSuite and Task ids are in the replies.
    const tree = await convert(
      '--explorer',
      join(REAL, 'standin-explorer.c2s.bin'),
      join(REAL, 'standin-explorer.s2c.bin'),
    );
    writeFileSync(job, tree);
    const s = await standin({
      job,
      skipFirst: (JSON.parse(tree) as { events_before_attach: number }).events_before_attach,
    });
    for (const exchanges of recorded.connections) {
      const client = await Client.open(s.path);
      for (const { request, sent, reply } of exchanges) {
        expect((await client.ask(Buffer.from(sent, 'hex'))).toString('hex'), request).toBe(reply);
      }
      client.close();
    }
  });
});
