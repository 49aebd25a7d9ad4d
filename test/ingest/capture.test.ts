import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { normalize } from '../../src/events/normalize.js';
import { resolveZone } from '../../src/events/timezone.js';
import { RESULT_VALUES, type SectionEvent } from '../../src/events/types.js';
import {
  CAPTURE_FORMAT_VERSION,
  CaptureWriter,
  CapturingTracker,
  isCaptureHeader,
  parseCaptureLine,
  toCaptureData,
} from '../../src/ingest/capture.js';
import { parseJson } from '../../src/ingest/ndjson.js';
import { silentLogger } from '../../src/log.js';
import { TestClock, createCore, replayCapture } from './inprocess.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function capturePath(): string {
  const dir = mkdtempSync(join(tmpdir(), 'capture-'));
  dirs.push(dir);
  return join(dir, 'events.ndjson');
}

function writer(path: string, extra: Partial<ConstructorParameters<typeof CaptureWriter>[0]> = {}) {
  return new CaptureWriter({ path, version: '9.9.9', logger: silentLogger(), ...extra });
}

function lines(path: string): Record<string, unknown>[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

const MIN_MS = Date.UTC(1990, 0, 1);
const MAX_MS = Date.UTC(2199, 11, 31);

const text = fc.string({ maxLength: 30, unit: 'binary' });
const sectionEvent: fc.Arbitrary<SectionEvent> = fc
  .record(
    {
      phase: fc.constantFrom('init', 'start', 'stop') as fc.Arbitrary<SectionEvent['phase']>,
      suffix: fc.stringMatching(/^[A-Za-z0-9_]{1,12}$/),
      type: text,
      seqNum: fc.nat({ max: 2 ** 45 }),
      parentSeqNum: fc.nat({ max: 2 ** 45 }),
      id: text,
      fullid: text,
      name: text,
      times: fc.tuple(
        fc.double({ min: MIN_MS, max: MAX_MS, noNaN: true }),
        fc.double({ min: 0, max: 1e9, noNaN: true }),
      ),
      hasStart: fc.boolean(),
      hasStop: fc.boolean(),
      runtime: fc.double({ min: 0, max: 366 * 86_400, noNaN: true }),
      result: fc.record(
        { value: fc.constantFrom(...RESULT_VALUES), reason: fc.string({ minLength: 1, maxLength: 40 }) },
        { requiredKeys: ['value'] },
      ),
      logfile: text,
      xref: fc.record({ file: text, line: fc.nat({ max: 100_000 }) }, { requiredKeys: [] }),
    },
    { requiredKeys: ['phase', 'suffix', 'type', 'seqNum', 'times', 'hasStart', 'hasStop'] },
  )
  .map((r) => {
    const event: SectionEvent = {
      phase: r.phase,
      event: `${r.phase}_${r.suffix}`,
      type: r.type,
      seqNum: r.seqNum,
    };
    if (r.parentSeqNum !== undefined) event.parentSeqNum = r.parentSeqNum;
    if (r.id !== undefined) event.id = r.id;
    if (r.fullid !== undefined) event.fullid = r.fullid;
    if (r.name !== undefined) event.name = r.name;
    const [start, span] = r.times;
    if (r.hasStart) event.startTime = start;
    if (r.hasStop) event.stopTime = Math.min(MAX_MS, start + span);
    if (r.runtime !== undefined) event.runtime = r.runtime;
    if (r.result !== undefined) event.result = { ...r.result };
    if (r.logfile !== undefined) event.logfile = r.logfile;
    if (r.xref !== undefined && (r.xref.file !== undefined || r.xref.line !== undefined))
      event.xref = { ...r.xref };
    return event;
  });

describe('capture format', () => {
  it('gives back the identical SectionEvent through JSON and the normalizer, in any zone', () => {
    const zones = ['UTC', 'Asia/Kolkata', 'America/Los_Angeles'].map((z) => resolveZone(z));
    fc.assert(
      fc.property(sectionEvent, fc.constantFrom(...zones), (event, zone) => {
        const line = JSON.stringify({
          v: 1,
          kind: 'event',
          at: new Date(0).toISOString(),
          stream: 's',
          data: toCaptureData(event),
        });
        const record = parseCaptureLine(line);
        expect(record?.kind).toBe('event');
        if (record?.kind !== 'event') return;
        const outcome = normalize(record.data, { zone, maxStringLength: 4096 });
        if (!outcome.ok) throw new Error(`${outcome.reason}: ${outcome.detail}`);
        expect(outcome.event).toStrictEqual(event);
      }),
      { numRuns: 500 },
    );
  });

  it('parses each record kind and refuses what it cannot trust', () => {
    const at = '2024-05-01T10:00:00.123Z';
    expect(parseCaptureLine(`{"v":1,"kind":"capture","at":"${at}","exporter":"1.0.0"}`)).toEqual({
      kind: 'capture',
      at: Date.parse(at),
      exporter: '1.0.0',
    });
    expect(parseCaptureLine(`{"v":1,"kind":"end","at":"${at}","stream":"s1"}`)).toEqual({
      kind: 'end',
      at: Date.parse(at),
      stream: 's1',
    });
    const tp = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    expect(
      parseCaptureLine(
        `{"v":1,"kind":"context","at":"${at}","stream":"s1","ci":{"traceparent":"${tp}","run_id":"77"}}`,
      ),
    ).toEqual({
      kind: 'context',
      at: Date.parse(at),
      stream: 's1',
      ci: { parent: { traceId: tp.slice(3, 35), spanId: tp.slice(36, 52), sampled: true }, runId: '77' },
    });
    expect(parseCaptureLine('   ')).toBeUndefined();
    expect(parseCaptureLine(`{"v":1,"kind":"note","at":"${at}"}`)).toBeUndefined();
    for (const bad of [
      '{',
      '[]',
      `{"kind":"end","at":"${at}","stream":"s"}`,
      `{"v":${CAPTURE_FORMAT_VERSION + 1},"kind":"end","at":"${at}","stream":"s"}`,
      '{"v":1,"kind":"end","at":"yesterday","stream":"s"}',
      `{"v":1,"kind":"end","at":"${at}"}`,
      `{"v":1,"kind":"event","at":"${at}","stream":"s","data":3}`,
      `{"v":1,"kind":"context","at":"${at}","stream":"s"}`,
      `{"v":1,"kind":"context","at":"${at}","stream":"s","ci":{"traceparent":"00-${'0'.repeat(32)}-${'1'.repeat(16)}-01"}}`,
      `{"v":1,"kind":"context","at":"${at}","stream":"s","ci":{"run_id":7}}`,
      `{"v":1,"kind":"context","at":"${at}","stream":"s","ci":{"system":"${'x'.repeat(4097)}"}}`,
    ]) {
      expect(() => parseCaptureLine(bad), bad).toThrow(expect.objectContaining({ code: 'bad_capture_line' }));
    }
    expect(isCaptureHeader(`{"v":1,"kind":"capture","at":"${at}"}`)).toBe(true);
    expect(isCaptureHeader('{"event":"start_task","seq_num":1}')).toBe(false);
  });
});

describe('CaptureWriter', () => {
  const event: SectionEvent = {
    phase: 'start',
    event: 'start_task',
    type: 'Task',
    seqNum: 2,
    parentSeqNum: 1,
  };

  it('writes a header on open, buffers records until flushed, and appends on the next open', async () => {
    const path = capturePath();
    const first = writer(path, { now: () => Date.UTC(2024, 4, 1, 10), flushIntervalMs: 60_000 });
    await first.open();
    first.event('s1', event, Date.UTC(2024, 4, 1, 10, 0, 1));
    expect(lines(path)).toHaveLength(1);
    first.streamEnded('s1', Date.UTC(2024, 4, 1, 10, 0, 2));
    await first.close();
    first.event('s1', event, 0);
    const second = writer(path);
    await second.open();
    await second.close();
    const written = lines(path);
    expect(written).toEqual([
      { v: 1, kind: 'capture', at: '2024-05-01T10:00:00.000Z', exporter: '9.9.9' },
      {
        v: 1,
        kind: 'event',
        at: '2024-05-01T10:00:01.000Z',
        stream: 's1',
        data: { event: 'start_task', type: 'Task', seq_num: 2, parent_seq_num: 1 },
      },
      { v: 1, kind: 'end', at: '2024-05-01T10:00:02.000Z', stream: 's1' },
      expect.objectContaining({ kind: 'capture' }),
    ]);
    expect(first.stats()).toEqual({ written: 3, dropped: 0, failedWrites: 0 });
  });

  it('writes on its own once enough is buffered or the interval passes', async () => {
    const path = capturePath();
    const capture = writer(path, { highWaterBytes: 1000, flushIntervalMs: 50 });
    await capture.open();
    for (let i = 0; i < 20; i++) capture.event('s', { ...event, seqNum: i }, Date.now());
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(lines(path).length).toBeGreaterThan(1);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(lines(path)).toHaveLength(21);
    await capture.close();
  });

  it('drops what does not fit in the buffer, and counts it', async () => {
    const path = capturePath();
    const capture = writer(path, { highWaterBytes: 1 << 20, maxBufferBytes: 1000, flushIntervalMs: 60_000 });
    await capture.open();
    for (let i = 0; i < 50; i++) capture.event('s', { ...event, seqNum: i }, Date.now());
    await capture.close();
    const { written, dropped } = capture.stats();
    expect(dropped).toBeGreaterThan(0);
    expect(written + dropped).toBe(51);
    expect(lines(path)).toHaveLength(written);
  });

  it('fails to open with a typed error, and counts write failures without throwing', async () => {
    await expect(writer('/nonexistent-dir/x/events.ndjson').open()).rejects.toMatchObject({
      code: 'capture_open_failed',
    });
    const full = writer('/dev/full');
    await full.open();
    full.event('s', event, Date.now());
    await full.close();
    expect(full.stats().failedWrites).toBe(2);
    expect(full.stats().written).toBe(0);
  });
});

describe('CapturingTracker', () => {
  function feedJob(core: ReturnType<typeof createCore>, clock: TestClock): void {
    const iso = (s: number) => new Date(Date.UTC(2024, 4, 1, 10) + s * 1000).toISOString();
    const send = (stream: string, raw: Record<string, unknown>) => {
      clock.ms += 7;
      core.pipeline.ingest(stream, 'test', parseJson(JSON.stringify(raw)));
    };
    const suite = { type: 'TestSuite', id: 'cap_job', seq_num: 1, starttime: iso(0) };
    send('a', { event: 'init_testsuite', ...suite });
    send('a', { event: 'start_testsuite', ...suite });
    send('a', {
      event: 'start_testcase',
      type: 'Testcase',
      id: 'tc1',
      seq_num: 2,
      parent_seq_num: 1,
      starttime: iso(1),
    });
    // A stop without stoptime or runtime: the tracker takes its clock.
    send('a', {
      event: 'stop_section',
      type: 'TestSection',
      id: 's',
      seq_num: 3,
      parent_seq_num: 2,
      result: 'passed',
    });
    send('b', {
      event: 'start_testsuite',
      type: 'TestSuite',
      id: 'other_job',
      seq_num: 1,
      starttime: iso(5),
    });
    clock.ms += 1000;
    // Stream a ends with the testcase and the suite still open: both abandoned at the clock.
    core.pipeline.endStream('a');
    core.pipeline.endStream('never-seen');
    clock.ms += 500;
  }

  it("keeps the tracker's limits (open sections, held orphans) while it captures", async () => {
    const capture = writer(capturePath());
    await capture.open();
    const finished: number[] = [];
    const tracker = new CapturingTracker({
      sink: {
        sectionStarted: () => {},
        sectionFinished: (s) => finished.push(s.seqNum),
        jobFinished: () => {},
        forceFlush: () => Promise.resolve(),
        shutdown: () => Promise.resolve(),
      },
      logger: silentLogger(),
      capture,
      maxOpenSections: 2,
    });
    const start = (seqNum: number): SectionEvent => ({
      phase: 'start',
      event: 'start_section',
      type: 'TestSection',
      seqNum,
      startTime: Date.UTC(2024, 4, 1),
    });
    expect(tracker.onEvent('s', start(1))).toBeUndefined();
    expect(tracker.onEvent('s', start(2))).toBeUndefined();
    expect(tracker.onEvent('s', start(3))).toBe('too_many_open_sections');
    tracker.endAll();
    expect(finished.sort()).toEqual([1, 2]);
    await capture.close();
  });

  it('records events and ends so that a replay gives identical spans and metrics', async () => {
    const path = capturePath();
    const clock = new TestClock(Date.UTC(2024, 4, 1, 11));
    const capture = writer(path, { now: clock.now });
    await capture.open();
    const live = createCore({ capture, now: clock.now });
    feedJob(live, clock);
    live.tracker.endAll();
    await capture.close();

    const records = lines(path);
    expect(records.map((r) => `${String(r['kind'])} ${String(r['stream'] ?? '')}`)).toEqual([
      'capture ',
      'event a',
      'event a',
      'event a',
      'event a',
      'event b',
      'end a',
      'end b',
    ]);

    const replayClock = new TestClock(0);
    const replayed = createCore({ now: replayClock.now });
    replayCapture(readFileSync(path, 'utf8'), replayed, replayClock);
    expect(live.summaries()).toHaveLength(4);
    expect(replayed.summaries()).toEqual(live.summaries());
    expect(await replayed.metricLines()).toEqual(await live.metricLines());
  });
});
