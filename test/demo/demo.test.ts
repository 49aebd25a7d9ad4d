// The demo: the simulated job (the events, key order and value types of a real pyATS 23.2 job, against a
// recording of one) and the built-in reporter server speaking pyATS 23.2's protocol over a real Unix socket:
// messages CPython unpickles back, pyATS's replies (byte for byte where they are plain values), and a section
// tree the exporter's own snapshot client reads mid-run.
import { readFileSync } from 'node:fs';
import { lstat, mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { retimeJob, simulatedJob, startDemoReporter, type DemoReporter } from '../../src/demo/index.js';
import { RESULT_VALUES, type ResultValue } from '../../src/events/types.js';
import { silentLogger } from '../../src/log.js';
import { PyDateTime, PyObject, isPyDict, type PyDict, type PyValue } from '../../src/python/pyvalues.js';
import { unpickle } from '../../src/python/unpickle.js';
import { encodeRequest } from '../../src/reporter/protocol.js';
import { fetchSnapshot } from '../../src/reporter/snapshot.js';
import {
  collect,
  decodeWithPython,
  isPickledNone,
  splitFrames,
  splitMessages,
  splitSubscription,
  subscribeRequest,
} from '../helpers/standin.js';

// pyATS roll-up order, lowest first (results/rollup.html).
const ROLLUP: ResultValue[] = ['skipped', 'passed', 'passx', 'blocked', 'failed', 'errored', 'aborted'];

interface SectionView {
  seq: number;
  parent?: number;
  type: string;
  events: { phase: string; index: number }[];
  start?: number;
  stop?: number;
  runtime?: number;
  result?: ResultValue;
}

function epochMs(dt: PyDateTime): number {
  return dt.wallClockAsUtcMs() - (dt.tz?.offsetSeconds ?? 0) * 1000;
}

/** One record per seq_num, from the event list. */
function sections(events: PyDict[]): Map<number, SectionView> {
  const out = new Map<number, SectionView>();
  events.forEach((e, index) => {
    const seq = e['seq_num'] as number;
    let s = out.get(seq);
    if (!s) {
      s = { seq, parent: e['parent_seq_num'] as number | undefined, type: e['type'] as string, events: [] };
      out.set(seq, s);
    }
    s.events.push({ phase: (e['event'] as string).split('_')[0]!, index });
    if (e['starttime'] instanceof PyDateTime) s.start = epochMs(e['starttime']);
    if (e['stoptime'] instanceof PyDateTime) s.stop = epochMs(e['stoptime']);
    if (typeof e['runtime'] === 'number') s.runtime = e['runtime'];
    const result = e['result'];
    if (result instanceof PyObject) s.result = (result.state as PyDict)['value'] as ResultValue;
  });
  return out;
}

/** Python's `datetime.isoformat()` of the naive wall clock (no fraction when microsecond is 0). */
function isoformat(dt: PyDateTime): string {
  const base = new Date(dt.wallClockAsUtcMs()).toISOString().slice(0, 19);
  return dt.microsecond === 0 ? base : `${base}.${String(dt.microsecond).padStart(6, '0')}`;
}

/** The events of a real pyATS 23.2 job, as recorded from its reporter (test/fixtures/real-pyats). */
function realEvents(): PyDict[] {
  const bytes = readFileSync(new URL('../fixtures/real-pyats/subscribe.s2c.bin', import.meta.url));
  return splitSubscription(bytes, 'chunked').events.map((payload) => unpickle(payload) as PyDict);
}

/** An event's name and the kind of section it is about (the TestSuite, a Task, a Step or another section). */
function eventKind(e: PyDict): string {
  const type = String(e['type']);
  return `${String(e['event'])}/${['TestSuite', 'Task', 'Step'].includes(type) ? type : 'section'}`;
}

/** Python's type names of a value: what a subscriber sees of it, not its content. */
function valueShape(v: PyValue | undefined): unknown {
  if (v === null || v === undefined) return 'None';
  if (v instanceof PyDateTime) return `datetime[utcoffset=${String(v.tz?.offsetSeconds)}]`;
  if (v instanceof PyObject) {
    const state = v.state as PyDict;
    return { class: `${v.module}.${v.name}`, args: v.args.length, state: Object.keys(state) };
  }
  if (Array.isArray(v)) return [...new Set(v.map(valueShape))];
  if (isPyDict(v)) return Object.entries(v).map(([k, x]) => [k, valueShape(x)]);
  return typeof v;
}

/**
 * An event's keys in order, with the shape of each value. `outsideGit`: as the job would send it from files
 * outside a git repository (an xref's `git` dropped, and an xref that was only that).
 */
function eventShape(e: PyDict, outsideGit: boolean): unknown[] {
  const out: unknown[] = [];
  for (const [key, value] of Object.entries(e)) {
    let v: PyValue = value;
    if (key === 'xref' && outsideGit && isPyDict(value)) {
      v = Object.fromEntries(Object.entries(value).filter(([k]) => k !== 'git'));
      if (Object.keys(v).length === 0) continue;
    }
    out.push([key, valueShape(v)]);
  }
  return out;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** Epoch ms (whole) of an easypy run id's time, read as UTC. */
function runIdMs(runId: string): number {
  const m = /\.(\d{4})([A-Z][a-z]{2})(\d{2})_(\d{2}):(\d{2}):(\d{2})\.(\d{6})$/.exec(runId)!;
  const [year, , day, hour, minute, second, micro] = m.slice(1).map(Number);
  return Date.UTC(year!, MONTHS.indexOf(m[2]!), day, hour, minute, second) + Math.floor(micro! / 1000);
}

const firstIndex = (s: SectionView): number => s.events[0]!.index;
const indexOf = (s: SectionView, phase: string): number =>
  s.events.find((e) => e.phase === phase)?.index ?? -1;

describe('simulatedJob', () => {
  it('is deterministic for its options', () => {
    expect(simulatedJob({ seed: 7, startMs: 1_700_000_000_000 })).toEqual(
      simulatedJob({ seed: 7, startMs: 1_700_000_000_000 }),
    );
    expect(simulatedJob({ seed: 7 })).not.toEqual(simulatedJob({ seed: 8 }));
  });

  it.each([1, 2, 3, 42, 1000])('seed %i: a realistic job with every result value', (seed) => {
    const events = simulatedJob({ seed });
    const all = sections(events);
    expect(all.size).toBeGreaterThanOrEqual(35);
    expect(all.size).toBeLessThanOrEqual(60);
    expect(new Set([...all.values()].map((s) => s.result).filter(Boolean))).toEqual(new Set(RESULT_VALUES));
    const types = new Set([...all.values()].map((s) => s.type));
    for (const t of [
      'TestSuite',
      'Task',
      'CommonSetup',
      'Testcase',
      'TestSection',
      'Step',
      'CommonCleanup',
    ]) {
      expect(types).toContain(t);
    }
    // Real pyATS 23.2's easypy plugins report nothing.
    expect(types).not.toContain('Plugin');
    // Each section stops exactly once, after it starts.
    for (const s of all.values()) {
      expect(s.events.filter((e) => e.phase === 'stop')).toHaveLength(1);
      expect(indexOf(s, 'start')).toBeLessThan(indexOf(s, 'stop'));
    }
  });

  it("never sends a section before its parent's first (init or start) event", () => {
    const all = sections(simulatedJob({ seed: 3 }));
    const roots = [...all.values()].filter((s) => s.parent === undefined);
    expect(roots.map((s) => s.type)).toEqual(['TestSuite']);
    for (const s of all.values()) {
      if (s.parent === undefined) continue;
      const parent = all.get(s.parent)!;
      expect(firstIndex(parent)).toBeLessThan(firstIndex(s));
      expect(indexOf(s, 'stop')).toBeLessThan(indexOf(parent, 'stop'));
    }
  });

  it('sends the events real pyATS 23.2 sends, in its order', () => {
    const names = simulatedJob({ seed: 5 }).map((e) => e['event']);
    expect(names.slice(0, 4)).toEqual(['init_testsuite', 'start_testsuite', 'init_task', 'start_task']);
    expect(names.slice(-2)).toEqual(['stop_task', 'stop_testsuite']);
    expect(new Set(names.slice(4, -2))).toEqual(new Set(['start_section', 'stop_section']));
  });

  it('has the keys, key order and value types of the events of a real pyATS 23.2 job', () => {
    const real = realEvents();
    const shapesOf = (events: PyDict[], outsideGit: boolean): Map<string, Set<string>> => {
      const out = new Map<string, Set<string>>();
      for (const e of events) {
        const shape = JSON.stringify(eventShape(e, outsideGit));
        const key = eventKind(e);
        out.set(key, (out.get(key) ?? new Set()).add(shape));
      }
      return out;
    };
    // The recorded job's files are in a git repository, the demo's are not: git-only xrefs are left out.
    const expected = shapesOf(real, true);
    for (const seed of [1, 2, 3]) {
      const demo = shapesOf(simulatedJob({ seed }), false);
      expect([...demo.keys()].sort()).toEqual([...expected.keys()].sort());
      for (const [kind, shapes] of demo) expect([...shapes], kind).toEqual([...expected.get(kind)!]);
    }
  });

  it('names the run as easypy does: the TestSuite id is the run id, its start names the job', () => {
    const startMs = 1_700_000_000_123;
    const events = simulatedJob({ seed: 2, jobName: 'nightly', testcases: 2, startMs });
    const [init, start, initTask, startTask] = events;
    const runId = init!['id'] as string;
    expect(runId).toMatch(/^nightly\.\d{4}[A-Z][a-z]{2}\d{2}_\d{2}:\d{2}:\d{2}\.\d{6}$/);
    expect(init).toMatchObject({ event: 'init_testsuite', name: runId, fullid: runId, idlist: [runId] });
    expect(start).toMatchObject({ event: 'start_testsuite', id: runId, name: 'nightly' });
    // easypy named the run as it started, seconds before the TestSuite started.
    const named = runIdMs(runId);
    expect(startMs - named).toBeGreaterThanOrEqual(1500);
    expect(startMs - named).toBeLessThanOrEqual(4000);
    expect(initTask).toMatchObject({ event: 'init_task', id: 'Task-1', name: 'Task-1' });
    expect(startTask).toMatchObject({ event: 'start_task', id: 'Task-1', name: 'health_checks' });
    expect(startTask!['logfile']).toBe(`/home/pyats/.pyats/runinfo/${runId}/TaskLog.Task-1`);
    const stopTask = events.find((e) => e['event'] === 'stop_task')!;
    expect(stopTask['logfile']).toBe('TaskLog.Task-1');
    for (const e of events) {
      if (e['type'] === 'TestSuite' || e['type'] === 'Task') continue;
      expect(e['logfile']).toBe(startTask!['logfile']);
      expect(e['logs']).toMatchObject({ file: 'TaskLog.Task-1' });
      expect(e['fullid']).toBe((e['idlist'] as string[]).join('.'));
      expect((e['idlist'] as string[])[0]).toBe('Task-1');
    }
    // Another start, another run id; the deprecated jobId is the job's name.
    const later = simulatedJob({ seed: 2, jobName: 'nightly', testcases: 2, startMs: startMs + 60_000 });
    expect(later[0]!['id']).not.toBe(runId);
    expect(simulatedJob({ seed: 2, jobId: 'nightly', testcases: 2, startMs })).toEqual(events);
  });

  it('takes the testcase count and start time, with UTC datetimes and TestResult objects', () => {
    const events = simulatedJob({ seed: 2, testcases: 2, startMs: 1_700_000_000_123 });
    const all = [...sections(events).values()];
    expect(all.filter((s) => s.type === 'Testcase')).toHaveLength(2);
    expect(Math.min(...all.map((s) => s.start!))).toBe(1_700_000_000_123);
    const stop = events.find((e) => e['event'] === 'stop_section')!;
    expect((stop['starttime'] as PyDateTime).tz).toMatchObject({ offsetSeconds: 0, name: 'UTC' });
    // The codes of pyats.results in 23.2, with the TIMS value each carries.
    const codes = { failed: 0, passed: 1, aborted: 2, blocked: 3, skipped: 4, errored: 5, passx: 8 };
    const tims = { aborted: 'blocked', errored: 'blocked', skipped: 'dropped' } as Record<string, string>;
    for (const e of simulatedJob({ seed: 2 })) {
      const result = e['result'];
      if (result === undefined) continue;
      expect(result).toBeInstanceOf(PyObject);
      const { module, name, args, state } = result as PyObject;
      expect([module, name]).toEqual(['pyats.results.result', 'TestResult']);
      const { code, value, reason, data } = state as PyDict;
      expect(code).toBe(codes[value as ResultValue]);
      expect((state as PyDict)['tims']).toBe(tims[value as string] ?? value);
      expect(args).toEqual([code, reason, data]);
      if (value === 'errored' && reason !== null) {
        expect(reason).toBe(`Caught an exception while executing section ${String(e['id'])}`);
        expect((data as PyDict)['traceback']).toMatch(/^Traceback \(most recent call last\):\n/);
      }
    }
  });

  it('nests start/stop times, keeps runtimes consistent and rolls results up (but not onto the Task or TestSuite)', () => {
    const all = sections(simulatedJob({ seed: 11, startMs: 1_700_000_000_000 }));
    for (const s of all.values()) {
      expect(s.stop!).toBeGreaterThan(s.start!);
      expect(s.runtime!).toBeCloseTo((s.stop! - s.start!) / 1000, 6);
      if (s.parent === undefined) continue;
      const parent = all.get(s.parent)!;
      expect(s.start!).toBeGreaterThanOrEqual(parent.start!);
      expect(s.stop!).toBeLessThanOrEqual(parent.stop!);
    }
    for (const s of all.values()) {
      if (s.type === 'TestSuite' || s.type === 'Task') {
        expect(s.result).toBeUndefined();
        continue;
      }
      const counted = [...all.values()].filter((c) => c.parent === s.seq);
      if (counted.length === 0) continue;
      const worst = counted.map((c) => c.result!).sort((a, b) => ROLLUP.indexOf(b) - ROLLUP.indexOf(a))[0];
      expect(s.result).toBe(worst);
    }
  });

  it('with plugins: runs the pre-task plugin after init_task and before start_task (same for the pre-job plugin)', () => {
    const events = simulatedJob({ seed: 5, plugins: true });
    const all = [...sections(events).values()];
    expect(all.filter((s) => s.type === 'Plugin')).toHaveLength(3);
    for (const ownerType of ['Task', 'TestSuite']) {
      const owner = all.find((s) => s.type === ownerType)!;
      const plugin = all.find(
        (s) => s.parent === owner.seq && indexOf(s, 'start') < indexOf(owner, 'start'),
      )!;
      expect(plugin.type).toBe('Plugin');
      expect(indexOf(owner, 'init')).toBe(firstIndex(owner));
      expect(indexOf(owner, 'init')).toBeLessThan(indexOf(plugin, 'start'));
      expect(indexOf(plugin, 'stop')).toBeLessThan(indexOf(owner, 'start'));
      expect(plugin.stop!).toBeLessThanOrEqual(owner.start!);
    }
    expect(events[0]!['event']).toBe('init_testsuite');
    expect(events.at(-1)!['event']).toBe('stop_testsuite');
    expect(new Set(events.filter((e) => e['type'] === 'Plugin').map((e) => e['event']))).toEqual(
      new Set(['start_plugin', 'stop_plugin']),
    );
  });

  it('retimeJob moves every datetime, and the run id, so the job starts at the given time', () => {
    const events = simulatedJob({ seed: 4, startMs: 1_700_000_000_000 });
    const moved = retimeJob(events, 1_800_000_000_000);
    const before = [...sections(events).values()];
    const after = [...sections(moved).values()];
    expect(Math.min(...after.map((s) => s.start!))).toBe(1_800_000_000_000);
    after.forEach((s, i) => {
      expect(s.start! - before[i]!.start!).toBe(100_000_000_000);
      expect(s.stop! - before[i]!.stop!).toBe(100_000_000_000);
    });
    const [oldId, newId] = [events, moved].map((e) => e[0]!['id'] as string);
    expect(newId).toMatch(/^demo_job\./);
    expect(runIdMs(newId!) - runIdMs(oldId!)).toBe(100_000_000_000);
    expect(newId!.slice(-6)).toBe(oldId!.slice(-6));
    // Everywhere the run id was: the TestSuite's ids and every log file path.
    const text = (e: PyDict[]): string =>
      JSON.stringify(e.map((x) => [x['id'], x['idlist'], x['name'], x['logfile']]));
    expect(text(moved)).toBe(text(events).split(oldId!).join(newId!));
    expect(text(moved)).not.toContain(oldId!);
  });
});

describe('demo reporter server', () => {
  const reporters: DemoReporter[] = [];
  const dirs: string[] = [];
  const REPLIES = JSON.parse(
    readFileSync(new URL('../fixtures/real-pyats/standin-replies.json', import.meta.url), 'utf8'),
  ) as { connections: { request: string; sent: string; reply: string }[][] };
  /** The real pyATS 23.2 reply bytes to a request (from the recording), by its Python repr. */
  const realReply = (request: string): string =>
    REPLIES.connections.flat().find((e) => e.request === request)!.reply;

  afterEach(async () => {
    await Promise.all(reporters.splice(0).map((r) => r.close()));
    await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });

  async function socketPath(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'demo-reporter-'));
    dirs.push(dir);
    return join(dir, 'reporter.sock');
  }

  /** Subscribes as soon as the socket is back (it goes away between looped runs, like a pyATS job's). */
  async function collectWhenUp(path: string): Promise<Buffer> {
    for (;;) {
      try {
        return await collect(path);
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  /** One request on a connection of its own, read back as the reply's raw bytes (chunked). */
  async function ask(path: string, ...requests: Uint8Array[]): Promise<Buffer[]> {
    const socket = connect(path);
    const replies: Buffer[] = [];
    let buffered = Buffer.alloc(0);
    let wake: (() => void) | undefined;
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      wake?.();
    });
    for (const request of requests) {
      socket.write(request);
      for (;;) {
        const { messages } = splitMessages(buffered, 'chunked');
        if (messages.length > 0) {
          const size = messages[0]!.payload.length + 3 * messages[0]!.chunks;
          replies.push(buffered.subarray(0, size));
          buffered = buffered.subarray(size);
          break;
        }
        await new Promise<void>((resolve) => (wake = resolve));
      }
    }
    socket.destroy();
    return replies;
  }

  it('answers subscribe_client with None, then streams every event as a message CPython unpickles back', async () => {
    const path = await socketPath();
    const events = simulatedJob({ seed: 9, startMs: 1_700_000_000_000 });
    const reporter = await startDemoReporter({
      path,
      events,
      protocol: 2,
      eventDelayMs: 0,
      retime: false,
      lingerMs: 20,
      logger: silentLogger(),
    });
    reporters.push(reporter);
    const bytes = await collect(path);
    await reporter.finished;

    const { reply, events: payloads, rest } = splitSubscription(bytes, 'chunked');
    expect(rest).toBe(0);
    expect(isPickledNone(reply)).toBe(true);
    expect(payloads).toHaveLength(events.length);
    for (const p of payloads) {
      expect([p[0], p[1], p[p.length - 1]]).toEqual([0x80, 2, 0x2e]);
    }
    const decoded = await decodeWithPython(payloads);
    expect(decoded.map((e) => [e['event'], e['seq_num'], e['parent_seq_num']])).toEqual(
      events.map((e) => [e['event'], e['seq_num'], e['parent_seq_num']]),
    );
    // stop_task: no result and no logs, its log file without its directory (as 23.2 sends it).
    const index = events.findIndex((e) => e['event'] === 'stop_task');
    const sent = events[index]!;
    const start = sent['starttime'] as PyDateTime;
    expect(decoded[index]).toEqual({
      type: 'Task',
      seq_num: 2,
      id: 'Task-1',
      fullid: 'Task-1',
      idlist: ['Task-1'],
      name: 'health_checks',
      starttime: { datetime: isoformat(start), offset: 0 },
      stoptime: { datetime: isoformat(sent['stoptime'] as PyDateTime), offset: 0 },
      runtime: sent['runtime'],
      logfile: 'TaskLog.Task-1',
      event: 'stop_task',
      parent_seq_num: 1,
    });
    expect(Object.keys(decoded[index]!)).toEqual(Object.keys(sent));
    // A section's result: a pyats.results.result.TestResult, built from (code, reason, data) plus its state.
    const stopIndex = events.findIndex((e) => e['event'] === 'stop_section');
    const result = events[stopIndex]!['result'] as PyObject;
    expect(decoded[stopIndex]!['result']).toEqual({
      class: 'pyats.results.result.TestResult',
      args: result.args,
      state: { ...(result.state as PyDict) },
    });
    expect(decoded[stopIndex]!['logs']).toEqual(events[stopIndex]!['logs']);
    await expect(lstat(path)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('frames as pyATS 20.2 did (a 4-byte size) when told to', async () => {
    const path = await socketPath();
    const events = simulatedJob({ seed: 3, testcases: 1 });
    const reporter = await startDemoReporter({
      path,
      events,
      frameFormat: '4be',
      eventDelayMs: 0,
      lingerMs: 20,
      logger: silentLogger(),
    });
    reporters.push(reporter);
    const {
      reply,
      events: payloads,
      rest,
    } = splitSubscription(await collect(path, subscribeRequest('4be')), '4be');
    expect(rest).toBe(0);
    expect(isPickledNone(reply)).toBe(true);
    expect(payloads).toHaveLength(events.length);
  });

  it('answers ping, register_client and get_* as pyATS 23.2 does, with its bytes where they are plain', async () => {
    const path = await socketPath();
    const reporter = await startDemoReporter({
      path,
      events: simulatedJob({ seed: 2, testcases: 1 }),
      eventDelayMs: 0,
      logger: silentLogger(),
    });
    reporters.push(reporter);
    const request = (r: Parameters<typeof encodeRequest>[0]): Uint8Array => encodeRequest(r, 'chunked');
    const [unregistered, pong, registered, early, again] = await ask(
      path,
      request({ name: 'get_testsuite' }),
      request({ name: 'ping' }),
      request({ name: 'register_client', pid: 4242, ppid: 1 }),
      request({ name: 'get_testsuite' }),
      request({ name: 'register_client', pid: 4242, ppid: 1 }),
    );
    expect(pong!.toString('hex')).toBe(realReply("{'name': 'ping', 'data': {}}"));
    expect(registered!.toString('hex')).toBe(
      realReply("{'name': 'register_client', 'data': {'pid': '4242', 'ppid': '1'}}"),
    );
    // Nothing ran yet (no subscriber): get_testsuite is None, as before a job's TestSuite starts.
    expect(isPickledNone(splitFrames(early!, 'chunked').payloads[0])).toBe(true);
    const [refusal, existing] = await decodeWithPython(
      [unregistered!, again!].map((b) => splitFrames(b, 'chunked').payloads[0]!),
    );
    expect(refusal).toEqual({
      exception: {
        class: 'pyats.reporter.exceptions.UnregisteredClientError',
        args: ['Unkown client. Must register with server before calling other functions'],
        state: {},
      },
    });
    expect(existing).toMatchObject({
      exception: {
        class: 'pyats.reporter.exceptions.ExistingClientError',
        args: ['This socket already registered as client Client (pid: 4242, num_ctx: 0)'],
      },
    });
  });

  it.each([false, true])(
    "gives the exporter's snapshot client the tree of what ran so far, mid-run (plugins: %s)",
    async (plugins) => {
      const path = await socketPath();
      const events = simulatedJob({ seed: 6, testcases: 3, startMs: 1_700_000_000_000, plugins });
      const reporter = await startDemoReporter({
        path,
        events,
        eventDelayMs: 10,
        retime: false,
        logger: silentLogger(),
      });
      reporters.push(reporter);
      const stream = collect(path);
      // About half the job in.
      await new Promise((r) => setTimeout(r, events.length * 5));
      const snapshot = await fetchSnapshot({
        path,
        format: 'chunked',
        maxFrameBytes: 1 << 20,
        decode: (frame) => unpickle(frame),
        timeoutMs: 2000,
        maxSections: 1000,
      });
      const { events: live } = splitSubscription(await stream, 'chunked');
      expect(live).toHaveLength(events.length);
      expect(snapshot.truncated).toBe(false);
      const started = new Set(snapshot.events.filter((e) => e.phase === 'start').map((e) => e.seqNum));
      const stopped = new Set(snapshot.events.filter((e) => e.phase === 'stop').map((e) => e.seqNum));
      expect(started.size).toBeGreaterThan(3);
      expect(stopped.size).toBeGreaterThan(0);
      expect(stopped.size).toBeLessThan(started.size);
      // Each snapshot section is one the job had started, parented as the job's events say.
      const bySeq = new Map(events.map((e) => [e['seq_num'] as number, e]));
      for (const { seqNum, phase, event } of snapshot.events) {
        const real = bySeq.get(seqNum)!;
        expect(event['id']).toBe(real['id']);
        expect(event['type']).toBe(real['type']);
        if (real['parent_seq_num'] !== undefined)
          expect(event['parent_seq_num']).toBe(real['parent_seq_num']);
        if (phase === 'stop') {
          const stop = events.find((e) => e['seq_num'] === seqNum && String(e['event']).startsWith('stop_'))!;
          expect(event['runtime']).toBe(stop['runtime']);
        }
      }
      // The TestSuite lists its Tasks only: its plugins are not in the tree, as in pyATS.
      const inTree = [...started].filter((seq) => bySeq.get(seq)!['type'] === 'Plugin');
      if (plugins) expect(inTree.length).toBeGreaterThan(0);
      for (const seq of inTree)
        expect(bySeq.get(bySeq.get(seq)!['parent_seq_num'] as number)!['type']).toBe('Task');
    },
  );

  it('serves several subscribers and, looping, starts a new run with a new start time on the same path', async () => {
    const path = await socketPath();
    const events = simulatedJob({ seed: 1, testcases: 1, startMs: 1_600_000_000_000 });
    const reporter = await startDemoReporter({
      path,
      events,
      eventDelayMs: 1,
      loop: true,
      lingerMs: 20,
      runGapMs: 50,
      logger: silentLogger(),
    });
    reporters.push(reporter);
    const before = Date.now();
    const [a, b] = await Promise.all([collect(path), collect(path)]);
    const second = await collectWhenUp(path);
    // The run starts with the first subscriber; the other may join a moment later and miss the first events.
    const [firstRun, other] = [
      splitSubscription(a, 'chunked').events,
      splitSubscription(b, 'chunked').events,
    ].sort((x, y) => y.length - x.length);
    expect(firstRun!).toHaveLength(events.length);
    expect(other!.length).toBeGreaterThan(0);
    const secondRun = splitSubscription(second, 'chunked').events;
    expect(secondRun).toHaveLength(events.length);

    const [first1] = await decodeWithPython(firstRun!.slice(1, 2));
    const [first2] = await decodeWithPython(secondRun.slice(1, 2));
    const startOf = (e: Record<string, unknown> | undefined): number =>
      Date.parse(`${(e!['starttime'] as { datetime: string }).datetime.slice(0, 23)}Z`);
    // Re-timed to when each run streamed, not the job's 2020 start time.
    expect(startOf(first1)).toBeGreaterThanOrEqual(before - 1);
    expect(startOf(first2)).toBeGreaterThan(startOf(first1));
    // Each run is a new easypy run of the same job: a new TestSuite id, the same name.
    expect(first1).toMatchObject({ event: 'start_testsuite', name: 'demo_job' });
    expect(first2).toMatchObject({ event: 'start_testsuite', name: 'demo_job' });
    expect(first1!['id']).toMatch(/^demo_job\.\d{4}[A-Z][a-z]{2}\d{2}_/);
    expect(first2!['id']).not.toBe(first1!['id']);

    await reporter.close();
    await reporter.finished;
    await expect(lstat(path)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('closes promptly while waiting for a subscriber', async () => {
    const path = await socketPath();
    const reporter = await startDemoReporter({
      path,
      events: simulatedJob({}),
      eventDelayMs: 0,
      logger: silentLogger(),
    });
    expect((await lstat(path)).isSocket()).toBe(true);
    // A connection that does not subscribe does not start the run.
    await ask(path, encodeRequest({ name: 'ping' }, 'chunked'));
    await reporter.close();
    await reporter.finished;
    await expect(lstat(path)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
