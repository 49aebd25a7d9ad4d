// Tests of the Python reporter stand-in itself, read with plain Node sockets and decoded by CPython, independent of
// the project's own reader.
import { lstat, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RESULT_VALUES } from '../../src/events/types.js';
import {
  collect,
  collectChunks,
  decodeWithPython,
  splitFrames,
  startStandin,
  type Standin,
  type StandinHeader,
  type StandinOptions,
} from './standin.js';

const START_EPOCH = 1_700_000_000.25;
const running: Standin[] = [];
const tempDirs: string[] = [];

afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.kill()));
  await Promise.all(tempDirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function standin(opts: StandinOptions): Promise<Standin> {
  const s = await startStandin({ startEpoch: START_EPOCH, linger: 0.05, ...opts });
  running.push(s);
  return s;
}

function expectWellFormed(payloads: Buffer[], protocol: number): void {
  for (const p of payloads) {
    expect(p[0]).toBe(0x80);
    expect(p[1]).toBe(protocol);
    expect(p[p.length - 1]).toBe(0x2e);
  }
}

describe('reporter stand-in framing', () => {
  const cases: [StandinHeader, 2 | 3 | 4 | 5][] = [
    ['4be', 2],
    ['4le', 3],
    ['8be', 4],
    ['8le', 5],
  ];
  it.each(cases)(
    'frames every event with a %s size prefix (pickle protocol %i)',
    async (header, protocol) => {
      const s = await standin({ header, protocol });
      const bytes = await collect(s.path);
      const sent = await s.done;
      const manifest = await s.manifest();
      const { payloads, rest } = splitFrames(bytes, header);
      expect(rest).toBe(0);
      expect(payloads).toHaveLength(sent);
      expect(manifest.events_sent).toBe(sent);
      expect(manifest.events_total).toBe(sent);
      expectWellFormed(payloads, protocol);

      const decoded = await decodeWithPython(payloads);
      expect(decoded.map((e) => [e['event'], e['seq_num']])).toEqual(
        manifest.events.map((e) => [e.event, e.seq_num]),
      );
    },
  );

  it('writes the same bytes whether frames go whole, in tiny pieces or packed together', async () => {
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
    // Tiny writes with pauses reach the reader cut inside frames: more reads than frames.
    const frames = splitFrames(streams[0]!, '8be').payloads.length;
    expect(chunkCounts[1]).toBeGreaterThan(frames);
  });

  it('ignores a subscribe request and sends the same stream to every subscriber', async () => {
    const s = await standin({ subscribers: 2 });
    const request = Buffer.from('\x00\x00\x00\x05hello', 'latin1');
    const [a, b] = await Promise.all([collect(s.path, request), collect(s.path)]);
    const sent = await s.done;
    expect(a.equals(b)).toBe(true);
    expect(splitFrames(a, '8be').payloads).toHaveLength(sent);
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

  it('decodes in CPython to result objects, naive local datetimes and the documented keys', async () => {
    const s = await standin({ protocol: 2, tz: 'Europe/Berlin' });
    const { payloads } = splitFrames(await collect(s.path), '8be');
    const m = await s.manifest();
    const events = await decodeWithPython(payloads);
    const stop = events.find((e) => e['event'] === 'stop_testsuite')!;
    const suite = m.sections.find((x) => x.type === 'TestSuite')!;
    expect(stop['result']).toEqual({
      class: `pyats.results.${suite.result[0]!.toUpperCase()}${suite.result.slice(1)}`,
      state: { value: suite.result, code: expect.any(Number), reason: null, data: null },
    });
    // 2023-11-14T22:13:20.25Z is 23:13:20.25 in Berlin (CET, +01:00).
    const pluginStart = events[1]!;
    expect(pluginStart['event']).toBe('start_plugin');
    expect(pluginStart['starttime']).toMatchObject({ offset: null });
    expect(Object.keys(stop).sort()).toEqual(
      [
        'event',
        'type',
        'seq_num',
        'id',
        'name',
        'starttime',
        'stoptime',
        'runtime',
        'result',
        'logfile',
        'logs',
      ].sort(),
    );
    const init = events[0]!;
    expect(Object.keys(init).sort()).toEqual(['event', 'id', 'name', 'seq_num', 'type']);
    const naive = (stop['starttime'] as { datetime: string }).datetime;
    expect(Math.abs(Date.parse(`${naive}+01:00`) - suite.start_ms)).toBeLessThan(1);
  });

  it.each([
    ['datetime-tz', 'object'],
    ['iso', 'dict'],
    ['epoch', 'string'],
    ['datetime', 'mixed'],
  ] as const)('sends %s times and %s results', async (times, results) => {
    const s = await standin({ times, results });
    const { payloads } = splitFrames(await collect(s.path), '8be');
    const m = await s.manifest();
    const events = await decodeWithPython(payloads);
    const stops = events.filter((e) => String(e['event']).startsWith('stop_'));
    const bySeq = new Map(m.sections.map((x) => [x.seq_num, x]));
    for (const e of stops) {
      const section = bySeq.get(e['seq_num'] as number)!;
      const start = e['starttime'];
      if (times === 'datetime-tz') expect(start).toMatchObject({ offset: 7200 });
      if (times === 'iso') expect(Math.abs(Date.parse(start as string) - section.start_ms)).toBeLessThan(1);
      if (times === 'iso') expect(start as string).toMatch(/\+02:00$/);
      if (times === 'epoch') expect((start as number) * 1000).toBeCloseTo(section.start_ms, 2);
      const result = e['result'];
      if (results === 'string') expect(result).toBe(section.result);
      if (results === 'dict') expect(result).toMatchObject({ value: section.result });
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

describe('reporter stand-in interruptions', () => {
  it('drops the connection after N events, leaving sections open', async () => {
    const s = await standin({ dropAfter: 17, header: '4le' });
    const { payloads, rest } = splitFrames(await collect(s.path), '4le');
    expect(rest).toBe(0);
    expect(payloads).toHaveLength(17);
    expect(await s.done).toBe(17);
    const m = await s.manifest();
    expect(m.dropped).toBe(true);
    expect(m.events).toHaveLength(17);
    expect(m.sections.some((x) => x.seen && !x.completed)).toBe(true);
    expect(m.sections.find((x) => x.type === 'TestSuite')!.completed).toBe(false);
  });

  it('skips the first N events, as seen by an exporter attached mid-job', async () => {
    const s = await standin({ skipFirst: 10 });
    const { payloads } = splitFrames(await collect(s.path), '8be');
    const m = await s.manifest();
    expect(payloads).toHaveLength(m.events_total - 10);
    expect(m.events_sent).toBe(m.events_total - 10);
    const decoded = await decodeWithPython(payloads.slice(0, 1));
    expect(decoded[0]!['seq_num']).toBe(m.events[0]!.seq_num);
    expect(m.sections.find((x) => x.type === 'TestSuite')!.completed).toBe(true);
  });
});

describe('reporter stand-in socket placement', () => {
  it('symlinks the real socket from a temp dir, and removes both when done', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'runinfo-'));
    tempDirs.push(dir);
    const link = join(dir, 'reporter.sock');
    const s = await standin({ symlinkFrom: link });
    expect(s.path).toBe(link);
    expect((await lstat(link)).isSymbolicLink()).toBe(true);
    const { payloads } = splitFrames(await collect(link), '8be');
    expect(payloads).toHaveLength(await s.done);
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
    const first = splitFrames(await collect(s.path), '8be').payloads;
    await s.ready(2);
    const second = splitFrames(await collect(s.path), '8be').payloads;
    const total = await s.done;
    const m = await s.manifest();
    expect(m.jobs).toHaveLength(2);
    expect(first).toHaveLength(m.jobs[0]!.events_sent);
    expect(second).toHaveLength(m.jobs[1]!.events_sent);
    expect(total).toBe(first.length + second.length);
    expect(m.jobs[1]!.start_ms).toBeGreaterThan(m.jobs[0]!.sections[0]!.stop_ms);
  });
});
