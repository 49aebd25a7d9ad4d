// The demo: the simulated job's shape and ordering, and the built-in reporter server streaming it over a real Unix
// socket in frames that CPython unpickles back.
import { lstat, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { retimeJob, simulatedJob, startDemoReporter, type DemoReporter } from '../../src/demo/index.js';
import { RESULT_VALUES, type ResultValue } from '../../src/events/types.js';
import { silentLogger } from '../../src/log.js';
import { PyDateTime, PyObject, type PyDict } from '../../src/python/pyvalues.js';
import { collect, decodeWithPython, splitFrames } from '../helpers/standin.js';

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
    expect(all.size).toBeGreaterThanOrEqual(40);
    expect(all.size).toBeLessThanOrEqual(60);
    expect(new Set([...all.values()].map((s) => s.result))).toEqual(new Set(RESULT_VALUES));
    const types = new Set([...all.values()].map((s) => s.type));
    for (const t of [
      'TestSuite',
      'Task',
      'Plugin',
      'CommonSetup',
      'Testcase',
      'TestSection',
      'Step',
      'CommonCleanup',
    ]) {
      expect(types).toContain(t);
    }
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

  it('runs the pre-task plugin after init_task and before start_task (same for the pre-job plugin)', () => {
    const events = simulatedJob({ seed: 5 });
    const all = [...sections(events).values()];
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
  });

  it('nests start/stop times, keeps runtimes consistent and rolls results up', () => {
    const all = sections(simulatedJob({ seed: 11, startMs: 1_700_000_000_000 }));
    for (const s of all.values()) {
      expect(s.stop!).toBeGreaterThan(s.start!);
      expect(s.runtime!).toBeCloseTo((s.stop! - s.start!) / 1000, 6);
      if (s.parent === undefined) continue;
      const parent = all.get(s.parent)!;
      const preParent = indexOf(s, 'start') < indexOf(parent, 'start');
      if (preParent) {
        expect(s.stop!).toBeLessThanOrEqual(parent.start!);
      } else {
        expect(s.start!).toBeGreaterThanOrEqual(parent.start!);
        expect(s.stop!).toBeLessThanOrEqual(parent.stop!);
      }
    }
    for (const s of all.values()) {
      const counted = [...all.values()].filter((c) => c.parent === s.seq && c.type !== 'Plugin');
      if (counted.length === 0) continue;
      const worst = counted.map((c) => c.result!).sort((a, b) => ROLLUP.indexOf(b) - ROLLUP.indexOf(a))[0];
      expect(s.result).toBe(worst);
    }
  });

  it('takes the job id, testcase count and start time, with UTC datetimes and pyATS result objects', () => {
    const events = simulatedJob({ seed: 2, jobId: 'nightly', testcases: 2, startMs: 1_700_000_000_123 });
    const all = [...sections(events).values()];
    expect(events[0]).toMatchObject({ event: 'init_testsuite', id: 'nightly', type: 'TestSuite' });
    expect(all.filter((s) => s.type === 'Testcase')).toHaveLength(2);
    expect(Math.min(...all.map((s) => s.start!))).toBe(1_700_000_000_123);
    const stop = events.find((e) => e['event'] === 'stop_section')!;
    expect((stop['starttime'] as PyDateTime).tz).toMatchObject({ offsetSeconds: 0 });
    const result = stop['result'] as PyObject;
    expect(result).toBeInstanceOf(PyObject);
    expect(result.module).toBe('pyats.results');
    expect(result.args).toEqual([]);
    expect(Object.keys(result.state as PyDict)).toEqual(['value', 'code', 'reason', 'data']);
  });

  it('retimeJob moves every datetime so the job starts at the given time', () => {
    const events = simulatedJob({ seed: 4, startMs: 1_700_000_000_000 });
    const moved = retimeJob(events, 1_800_000_000_000);
    const before = [...sections(events).values()];
    const after = [...sections(moved).values()];
    expect(Math.min(...after.map((s) => s.start!))).toBe(1_800_000_000_000);
    after.forEach((s, i) => {
      expect(s.start! - before[i]!.start!).toBe(100_000_000_000);
      expect(s.stop! - before[i]!.stop!).toBe(100_000_000_000);
    });
  });
});

describe('demo reporter server', () => {
  const reporters: DemoReporter[] = [];
  const dirs: string[] = [];

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

  it('streams every event as a frame that CPython unpickles back to the same event', async () => {
    const path = await socketPath();
    const events = simulatedJob({ seed: 9, startMs: 1_700_000_000_000 });
    const reporter = await startDemoReporter({
      path,
      events,
      header: { width: 4, endian: 'little' },
      protocol: 2,
      eventDelayMs: 0,
      retime: false,
      lingerMs: 20,
      logger: silentLogger(),
    });
    reporters.push(reporter);
    const bytes = await collect(path, Buffer.from('subscribe'));
    await reporter.finished;

    const { payloads, rest } = splitFrames(bytes, '4le');
    expect(rest).toBe(0);
    expect(payloads).toHaveLength(events.length);
    for (const p of payloads) {
      expect([p[0], p[1], p[p.length - 1]]).toEqual([0x80, 2, 0x2e]);
    }
    const decoded = await decodeWithPython(payloads);
    expect(decoded.map((e) => [e['event'], e['seq_num'], e['parent_seq_num']])).toEqual(
      events.map((e) => [e['event'], e['seq_num'], e['parent_seq_num']]),
    );
    const index = events.findIndex((e) => e['event'] === 'stop_task');
    const sent = events[index]!;
    const start = sent['starttime'] as PyDateTime;
    const result = (sent['result'] as PyObject).state as PyDict;
    expect(decoded[index]).toMatchObject({
      type: 'Task',
      id: 'Task-1',
      runtime: sent['runtime'],
      starttime: {
        datetime: isoformat(start),
        offset: 0,
      },
      result: { class: `pyats.results.${(sent['result'] as PyObject).name}`, state: { ...result } },
      logs: sent['logs'],
    });
    await expect(lstat(path)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('serves several subscribers and, looping, starts a new run with a new start time on the same path', async () => {
    const path = await socketPath();
    const events = simulatedJob({ seed: 1, testcases: 1, startMs: 1_600_000_000_000 });
    const reporter = await startDemoReporter({
      path,
      events,
      header: { width: 8, endian: 'big' },
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
    const [firstRun, other] = [splitFrames(a, '8be').payloads, splitFrames(b, '8be').payloads].sort(
      (x, y) => y.length - x.length,
    );
    expect(firstRun!).toHaveLength(events.length);
    expect(other!.length).toBeGreaterThan(0);
    const secondRun = splitFrames(second, '8be').payloads;
    expect(secondRun).toHaveLength(events.length);

    const [first1] = await decodeWithPython(firstRun!.slice(1, 2));
    const [first2] = await decodeWithPython(secondRun.slice(1, 2));
    const startOf = (e: Record<string, unknown> | undefined): number =>
      Date.parse(`${(e!['starttime'] as { datetime: string }).datetime.slice(0, 23)}Z`);
    // Re-timed to when each run streamed, not the job's 2020 start time.
    expect(startOf(first1)).toBeGreaterThanOrEqual(before - 1);
    expect(startOf(first2)).toBeGreaterThan(startOf(first1));

    await reporter.close();
    await reporter.finished;
    await expect(lstat(path)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('closes promptly while waiting for a subscriber', async () => {
    const path = await socketPath();
    const reporter = await startDemoReporter({
      path,
      events: simulatedJob({}),
      header: { width: 8, endian: 'little' },
      eventDelayMs: 0,
      logger: silentLogger(),
    });
    expect((await lstat(path)).isSocket()).toBe(true);
    await reporter.close();
    await reporter.finished;
    await expect(lstat(path)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
